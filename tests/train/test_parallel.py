"""Group-parallel prediction (`--parallel segments|scales`) against token by token, on the same datasets."""

import numpy as np
import pytest

from vistok.errors import UsageError
from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.record import TokenRecord
from vistok.shards.reader import Dataset
from vistok.tokenize import JpegCodec
from vistok.tokenize.stream import StreamSpec
from vistok.train.checkpoint import latest_checkpoint, load_model
from vistok.train.data import DataConfig
from vistok.train.evaluate import evaluate
from vistok.train.sample import sample_images, sample_run
from vistok.train.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def dense_dataset(tmp_path_factory):
    """16x16 crops of the embedded photos as dense JPEG coefficients (4:4:4: a 2x2 grid of MCUs)."""
    out = tmp_path_factory.mktemp("dense") / "ds"
    run_job(["sample"], out, JpegCodec(quality=30, layout="dense", subsampling="444"), Preprocess(size=16, crops=2),
            shard_size=16, executor="local", quiet=True)
    return out


def _cfgs(ds, out, order, parallel="", **kw):
    data = DataConfig(datasets=[str(ds)], block_size=kw.pop("block_size", 1600), batch_size=2, num_workers=0, heldout=0.2, shuffle_block=8,
                      order=order, parallel=parallel)
    cfg = TrainConfig(**{"out": str(out), "max_steps": 6, "warmup": 2, "eval_every": 0, "ckpt_every": 3,
                         "log_every": 1, **kw})
    return data, cfg


@pytest.mark.parametrize("parallel", ["", "segments"])
def test_parallel_and_token_by_token_train_resume_evaluate_and_sample(dense_dataset, tmp_path, parallel,
                                                                       logged_losses):
    data, cfg = _cfgs(dense_dataset, tmp_path / "full", "randsac:4", parallel)
    train(data, cfg, quiet=True)
    data, cfg = _cfgs(dense_dataset, tmp_path / "resumed", "randsac:4", parallel, halt_at=4)
    train(data, cfg, quiet=True)
    data, cfg = _cfgs(dense_dataset, tmp_path / "resumed", "randsac:4", parallel)
    train(data, cfg, resume=True, quiet=True)
    assert logged_losses(tmp_path / "full") == logged_losses(tmp_path / "resumed")  # exactly
    ev = evaluate(tmp_path / "full")
    assert ev["parallel"] == (parallel or "none") and ev["bits_per_image"] > 0
    tokens = 12 * 64  # 12 blocks of 64 coefficients
    if parallel:  # one step per segment: at most 4 blobs, split into connected pieces
        assert 1 <= ev["steps_per_image"] <= 8 and ev["tokens_per_image"] == tokens
    else:
        assert ev["steps_per_image"] == tokens + 1
    model, state = load_model(tmp_path / "full")
    codec = Dataset(dense_dataset).codec
    meta = {"height": 16, "width": 16, "components": 3, "subsampling": "444"}
    images, streams, steps = sample_images(model, codec, meta, 2, seed=1, spec=StreamSpec.parse("randsac:4", parallel))
    assert all(im.shape == (16, 16, 3) for im in images)
    for toks, im in zip(streams, images):
        np.testing.assert_array_equal(codec.decode(TokenRecord("s", toks, meta)), im)
    assert steps <= 8 if parallel else steps == tokens + 1
    assert sample_run(tmp_path / "full", 2, tmp_path / "s.png").exists()  # in the run's order and mode


def test_parallel_refusals_name_the_way_out(dense_dataset, small_dataset, tmp_path):
    with pytest.raises(UsageError, match="variable-length"):
        train(*_cfgs(small_dataset, tmp_path / "a", "randsac:4", "segments"), quiet=True)
    with pytest.raises(UsageError, match="--order randsac"):
        train(*_cfgs(dense_dataset, tmp_path / "b", "hilbert", "segments"), quiet=True)
    with pytest.raises(UsageError, match="next-scale"):
        train(*_cfgs(dense_dataset, tmp_path / "c", "randsac:4", "scales"), quiet=True)


def test_sampling_larger_than_the_tables_is_refused(dense_dataset, tmp_path):
    data, cfg = _cfgs(dense_dataset, tmp_path / "r", "canonical", max_steps=1)
    train(data, cfg, quiet=True)
    model, _ = load_model(tmp_path / "r")
    codec = Dataset(dense_dataset).codec
    big = {"height": 512, "width": 512, "components": 3, "subsampling": "444"}
    with pytest.raises(UsageError, match="beyond the model's table"):
        sample_images(model, codec, big, 1)


def test_next_scale_bsq_samples_a_scale_per_step(small_tokenizer, tmp_path, logged_losses):
    from vistok.tokenize.learned import BSQCodec

    small_tokenizer(tmp_path, "s4", bits=8, scales=4)
    codec = BSQCodec(str(tmp_path / "s4"))
    res = run_job(["sample"], tmp_path / "ds", codec, Preprocess(size=64, crops=1), shard_size=8, executor="local",
                  quiet=True)
    data, cfg = _cfgs(res.folder, tmp_path / "r", "next-scale", "scales", max_steps=2)
    train(data, cfg, quiet=True)
    assert latest_checkpoint(tmp_path / "r").name == "step-000002"
    ev = evaluate(tmp_path / "r", split="all")
    assert ev["steps_per_image"] == 4 and ev["split"] == "all" and ev["images"] == res.samples
    model, _ = load_model(tmp_path / "r")
    images, _, steps = sample_images(model, codec, {"height": 64, "width": 64}, 2, spec=StreamSpec.parse("next-scale", "scales"))
    assert steps == 4 and images[0].shape == (64, 64, 3)
    ev = evaluate(tmp_path / "r", split="heldout", limit=4)
    assert ev["split"] == "heldout"


def test_a_group_larger_than_the_context_is_cut_into_pieces_that_fit(dense_dataset, tmp_path):
    """randsac:1 makes one segment of the whole image (768 tokens); a 129-position row holds 64 with their
    queries, so training, eval, sampling and compress all cut it into 12 groups of 64, in stream order."""
    from vistok.train.compress import Coder
    from vistok.train.data import heldout_records

    data, cfg = _cfgs(dense_dataset, tmp_path / "r", "randsac:1", "segments", block_size=129, max_steps=2)
    train(data, cfg, quiet=True)
    ev = evaluate(tmp_path / "r")
    assert ev["steps_per_image"] == 12 and ev["tokens_per_image"] == 768
    model, _ = load_model(tmp_path / "r")
    codec = Dataset(dense_dataset).codec
    meta = {"height": 16, "width": 16, "components": 3, "subsampling": "444"}
    images, _, steps = sample_images(model, codec, meta, 1, spec=StreamSpec.parse("randsac:1", "segments"))
    assert steps == 12 and images[0].shape == (16, 16, 3)
    coder = Coder.load(tmp_path / "r")
    recs = list(heldout_records([Dataset(dense_dataset)], 0.2, 2))
    back = list(coder.decompress(b for _, b in coder.compress(recs)))
    assert [r.tokens.tolist() for r in back] == [r.tokens.tolist() for r in recs]


@pytest.mark.slow
def test_any_step_runs_score_sample_and_compress_in_any_number_of_steps(dense_dataset, tmp_path):
    """One `--parallel any` model, N chosen after training: eval's curve takes N steps per image, sampling
    exactly N model calls (cached = uncached), and a file codes its N and decodes with it."""
    from vistok.tokenize.schedule import ALL
    from vistok.train.compress import Coder
    from vistok.train.data import heldout_records

    run = tmp_path / "r"
    train(*_cfgs(dense_dataset, run, "random", "any", max_steps=3), quiet=True)
    ev = evaluate(run, steps=[1, 12, ALL], limit=3)
    assert ev["parallel"] == "any" and ev["steps"] == "1" and ev["steps_per_image"] == 1
    assert [p["steps"] for p in ev["steps_curve"]] == ["1", "12", "all"]
    assert [p["steps_per_image"] for p in ev["steps_curve"]] == [1, 12, 768]
    assert ev["steps_curve"][0]["bits_per_image"] == ev["bits_per_image"]
    with pytest.raises(UsageError, match="--order random"):
        train(*_cfgs(dense_dataset, tmp_path / "h", "hilbert", "any", max_steps=1), quiet=True)

    model, _ = load_model(run)
    assert model.cfg.co_attend  # any: queries see their group by default
    codec = Dataset(dense_dataset).codec
    meta = {"height": 16, "width": 16, "components": 3, "subsampling": "444"}
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    for n in (1, 5, 40):
        calls.clear()
        images, streams, steps = sample_images(model, codec, meta, 1, seed=2, spec=StreamSpec.parse("random", "any", steps=n))
        assert steps == n and len(calls) == n and images[0].shape == (16, 16, 3)
        _, again, _ = sample_images(model, codec, meta, 1, seed=2, use_cache=False, spec=StreamSpec.parse("random", "any", steps=n))
        np.testing.assert_array_equal(again[0], streams[0])
    hook.remove()

    recs = list(heldout_records([Dataset(dense_dataset)], 0.2, 3))
    plain = Coder.load(run)  # one token per step, unless a file says otherwise
    for n in (3, ALL):
        blobs = [b for _, b in Coder.load(run, n).compress(recs)]  # side by side, in lanes
        back = list(plain.decompress(blobs))  # the steps come from the files
        assert [r.tokens.tolist() for r in back] == [r.tokens.tolist() for r in recs]
        alone = next(plain.decompress(blobs[-1:]))  # a file coded among others decodes alone
        assert alone.tokens.tolist() == recs[-1].tokens.tolist()
    mixed = list(plain.decompress([blobs[0], *(b for _, b in Coder.load(run, 5).compress(recs[:1]))]))
    assert [r.tokens.tolist() for r in mixed] == [recs[0].tokens.tolist()] * 2  # files of other step counts


def test_steps_are_refused_for_runs_that_predict_a_fixed_partition(dense_dataset, tmp_path):
    from vistok.train.compress import Coder

    train(*_cfgs(dense_dataset, tmp_path / "s", "randsac:4", "segments", max_steps=1), quiet=True)
    assert not load_model(tmp_path / "s")[0].cfg.co_attend  # segments: today's mask by default (measured better)
    for call in (lambda: evaluate(tmp_path / "s", steps=[4]), lambda: Coder.load(tmp_path / "s", 4),
                 lambda: sample_run(tmp_path / "s", 1, tmp_path / "x.png", steps=4)):
        with pytest.raises(UsageError, match="--parallel any"):
            call()
