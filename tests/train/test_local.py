"""`--attention local:R`: places a decoder knows, used alike by train, eval, sample and compress."""

import numpy as np
import pytest

from vistok.errors import UsageError
from vistok.record import TokenRecord
from vistok.shards.reader import Dataset
from vistok.tokenize import JpegCodec, WaveletCodec
from vistok.tokenize.stream import StreamGrammar, StreamSpec, cell_places, check_local
from vistok.train.checkpoint import load_model
from vistok.train.compress import Coder
from vistok.train.data import DataConfig, heldout_records, record_docs
from vistok.train.evaluate import evaluate
from vistok.train.sample import sample_images
from vistok.train.trainer import TrainConfig, train

from .test_parallel import dense_dataset  # noqa: F401  (a module fixture)


def _cfgs(ds, out, order="canonical", parallel="", attention="local:0", **kw):
    data = DataConfig(datasets=[str(ds)], block_size=kw.pop("block_size", 512), batch_size=2, num_workers=0,
                      heldout=0.2, shuffle_block=8, order=order, parallel=parallel)
    cfg = TrainConfig(**{"out": str(out), "max_steps": 4, "warmup": 1, "eval_every": 0, "ckpt_every": 2,
                         "log_every": 1, "attention": attention, **kw})
    return data, cfg


@pytest.mark.parametrize("order", ["raster", "random"])
def test_a_records_places_are_what_the_grammar_derives_from_the_prefix(small_dataset, order):
    """The places training sees (query: the token predicted; key: the token held) equal what a decoder's
    grammar knows while it follows the stream: the mask is a function of the prefix."""
    codec = Dataset(small_dataset).codec
    for rec in list(Dataset(small_dataset))[:4]:
        doc = record_docs(codec, rec, StreamSpec.parse(order, block_size=4096), np.random.default_rng(3), places=True).docs[0]
        o = record_docs(codec, rec, StreamSpec.parse(order, block_size=4096), np.random.default_rng(3)).stream
        g = StreamGrammar(codec, rec.meta, o.plan)
        want = [np.concatenate([g.next_place(), [-1, -1]])]  # BOS
        for t in rec.tokens[o.perm]:
            g.step(int(t))
            want.append(np.concatenate([g.next_place(), g.last_place]))
        np.testing.assert_array_equal(doc["places"], np.stack(want))  # inputs: BOS and every token
        assert (doc["places"][1:, 3] >= 0).all() and doc["places"][:, 3].max() == 1  # a 2x2 grid of MCUs


def test_places_of_clips_and_refusals():
    codec = JpegCodec(quality=20)
    meta = {"height": 32, "width": 32, "components": 3, "subsampling": "420", "frames": 2}
    cells = codec.layout(meta).cells
    pl = cell_places(codec.layout(meta))
    assert set(pl[cells.frame == 1, 0].tolist()) <= {1, -1} and (pl[cells.in_frame < 0] == -1).all()
    assert set(pl[cells.in_frame >= 0, 1].tolist()) == {0, 1}
    with pytest.raises(UsageError, match="spans every unit"):
        check_local(WaveletCodec(levels=2), {"height": 16, "width": 16, "components": 1})


def test_local_runs_train_resume_score_sample_and_compress_with_one_mask(small_dataset, tmp_path, logged_losses,
                                                                        decodes_to):
    run = tmp_path / "local"
    train(*_cfgs(small_dataset, run), quiet=True)
    train(*_cfgs(small_dataset, tmp_path / "half", halt_at=2), quiet=True)
    train(*_cfgs(small_dataset, tmp_path / "half"), resume=True, quiet=True)
    assert logged_losses(run) == logged_losses(tmp_path / "half")
    with pytest.raises(UsageError, match="--attention full differs"):
        train(*_cfgs(small_dataset, run, attention="full", max_steps=6), resume=True, quiet=True)
    with pytest.raises(UsageError, match="local:R"):
        train(*_cfgs(small_dataset, tmp_path / "bad", attention="near:2"), quiet=True)
    model, _ = load_model(run)
    assert model.cfg.neighbourhood == [0, 1]
    ev = evaluate(run, limit=4)
    assert ev["bits_per_image"] > 0
    codec = Dataset(small_dataset).codec
    meta = {"height": 32, "width": 32, "components": 3, "subsampling": "420"}
    images, streams, _ = sample_images(model, codec, meta, 2, seed=1)
    _, again, _ = sample_images(model, codec, meta, 2, seed=1, use_cache=False)
    for a, b, im in zip(streams, again, images):
        np.testing.assert_array_equal(a, b)  # the cache keeps each key's place
        np.testing.assert_array_equal(codec.decode(TokenRecord("s", a, meta)), im)
    recs = list(heldout_records([Dataset(small_dataset)], 0.2, 3))
    coder = Coder.load(run)
    blobs = [b for _, b in coder.compress(recs)]
    decodes_to(list(coder.decompress(blobs)), recs)
    # the files cost about what eval counts (headers and the coder's rounding aside)
    evr = evaluate(run, limit=3)
    assert abs(sum(len(b) for b in blobs) * 8 - evr["bits_per_image"] * 3) < 0.1 * evr["bits_per_image"] * 3 + 64 * 8


def test_local_group_parallel_runs_sample_and_compress(dense_dataset, tmp_path):  # noqa: F811
    run = tmp_path / "seg"
    train(*_cfgs(dense_dataset, run, "randsac:4", "segments", block_size=1600), quiet=True)
    model, _ = load_model(run)
    codec = Dataset(dense_dataset).codec
    meta = {"height": 16, "width": 16, "components": 3, "subsampling": "444"}
    _, a, _ = sample_images(model, codec, meta, 1, seed=2, spec=StreamSpec.parse("randsac:4", "segments"))
    _, b, _ = sample_images(model, codec, meta, 1, seed=2, use_cache=False, spec=StreamSpec.parse("randsac:4", "segments"))
    np.testing.assert_array_equal(a[0], b[0])
    recs = list(heldout_records([Dataset(dense_dataset)], 0.2, 2))
    coder = Coder.load(run)
    back = list(coder.decompress([b for _, b in coder.compress(recs)]))
    assert [r.tokens.tolist() for r in back] == [r.tokens.tolist() for r in recs]
    assert evaluate(run, limit=2)["bits_per_image"] > 0


def test_an_8k_preset_trains_on_whole_256px_images_on_the_cpu(tmp_path):
    """`small-8k` on real 256x256 JPEG q20 images (~7,800 tokens, one per row): attention by tiles, local
    attention and activation checkpointing together, then scored in the same context."""
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job

    ds = run_job(["sample"], tmp_path / "ds", JpegCodec(quality=20), Preprocess(size=256, crops=0), shard_size=8,
                 executor="local", quiet=True).folder
    run = tmp_path / "r"
    data = DataConfig(datasets=[str(ds)], block_size=8192, batch_size=1, num_workers=0, heldout=0.1, shuffle_block=2)
    train(data, TrainConfig(out=str(run), preset="small-8k", max_steps=1, warmup=1, eval_every=0, ckpt_every=1,
                            attention="local:2", checkpoint_activations=True), quiet=True)
    model, _ = load_model(run)
    assert model.cfg.block_size == 8192 and model.cfg.neighbourhood == [2, 1]
    ev = evaluate(run, limit=1)
    assert ev["tokens_per_image"] > 2000 and ev["bits_per_image"] > 0
