"""`--parallel wavefront`: the units of each anti-diagonal decoded side by side, a lane each, blind to each other.

What it must keep: every neighbour H.264 predicts a macroblock from is in an earlier wave; each token is a target
exactly once; a lane's predictions never depend on its wave's other lanes or on later waves, however rows are cut;
eval, the sampler (forced along the same stream) and training read the same rows; sampled streams decode."""

import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from vistok.errors import UsageError
from vistok.media.preprocess import Preprocess
from vistok.nn.attention import RowMask
from vistok.nn.gpt import GPT, GPTConfig, group_mask
from vistok.pipelines.job import run_job
from vistok.record import TokenRecord
from vistok.tokenize import AvcCodec
from vistok.tokenize.base import get_codec
from vistok.tokenize.stream import StreamSpec, lane_steps, order_record, plan
from vistok.train.config import DataConfig
from vistok.train.data import _lane_docs, doc_row, record_docs
from vistok.train.evaluate import evaluate, record_bits
from vistok.train.lanes import Forced, run_lanes
from vistok.train.sample import sample_images
from vistok.train.trainer import TrainConfig, train

WAVEFRONT = StreamSpec.parse("canonical", "wavefront", None, 1024, 512)


@pytest.fixture(scope="module")
def photo():
    return AvcCodec(qp=30).encode(skdata.astronaut()[100:164, 180:244], "astronaut")


def _model(codec, T, seed=0, local=()):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=codec.vocab.size, axis_sizes=[4, 8, 8, 16, 20, 20], next_axes=[0, 1, 2],
                    rope_axes=[1, 2], query_slots=True, n_layer=2, n_head=2, n_embd=32, block_size=T,
                    neighbourhood=list(local))
    return GPT(cfg).eval()


def test_waves_are_column_plus_twice_row_and_hold_every_neighbour_h264_reads_before():
    codec = AvcCodec()
    p = plan(codec, {"height": 256, "width": 256}, WAVEFRONT, np.random.default_rng(0))
    assert p.n_groups == 46  # 256 macroblocks in 46 waves
    wave = np.empty(256, np.int64)
    wave[p.cells] = p.groups
    assert np.array_equal(p.lanes, p.cells)  # a lane per macroblock
    assert (np.diff(p.groups) >= 0).all()
    for mb in range(256):
        y, x = divmod(mb, 16)
        assert wave[mb] == x + 2 * y
        for dy, dx in ((0, -1), (-1, -1), (-1, 0), (-1, 1)):  # left, top-left, top, top-right
            if 0 <= y + dy and 0 <= x + dx < 16:
                assert wave[(y + dy) * 16 + x + dx] < wave[mb]


@pytest.mark.parametrize("T,S", [(2048, 1024), (1024, 512), (512, 256), (512, 400)])
def test_every_token_is_a_target_once_in_stream_order_and_steps_are_each_waves_longest_lane(photo, T, S):
    codec = AvcCodec(qp=30)
    spec = StreamSpec.parse("canonical", "wavefront", None, T, S)
    rd = record_docs(codec, photo, spec, np.random.default_rng(0))
    o = order_record(codec, photo, spec, np.random.default_rng(0))
    targets = np.concatenate([d["targets"][d["loss_mask"] > 0] for d in rd.docs])
    assert np.array_equal(targets, photo.tokens[o.perm])
    assert all(d["idx"].size <= T for d in rd.docs)
    lengths = {}
    for w, lane in zip(o.groups, o.lanes):
        lengths[(w, lane)] = lengths.get((w, lane), 0) + 1
    longest = {}
    for (w, _), n in lengths.items():
        longest[w] = max(longest.get(w, 0), n)
    assert rd.steps == sum(longest.values()) == lane_steps(o.groups, o.lanes) < photo.tokens.size


def _lane_logits(model, docs):
    """{(lane, k): logits of the k-th prediction of that lane} over the rows of `docs`."""
    out = {}
    for d in docs:
        row = doc_row(d, model.cfg.block_size)
        b = {k: torch.from_numpy(v)[None] for k, v in row.items()}
        logits, _ = model(**b)
        for i in np.flatnonzero(row["loss_mask"]):
            lane = int(row["lane"][i])
            k = sum(1 for key in out if key[0] == lane)
            out[(lane, k)] = logits[0, i]
    return out


def _stream(rng, lengths):
    """A synthetic wavefront stream: lanes (wave, lane, length) -> tokens, coords, places, waves, lanes."""
    toks, waves, lanes = [], [], []
    for w, lane, n in lengths:
        toks += rng.integers(10, 60, n).tolist()
        waves += [w] * n
        lanes += [lane] * n
    t = np.array(toks)
    coords = np.zeros((t.size, 6), np.int64)
    coords[:, 1], coords[:, 2] = np.array(lanes) // 4 + 1, np.array(lanes) % 4 + 1
    place = coords.copy()
    return t, coords, place, np.array(waves), np.array(lanes)


@pytest.mark.parametrize("T,S", [(256, 128), (64, 32), (96, 40)])
def test_a_lane_sees_nothing_of_its_waves_other_lanes_nor_of_later_waves_however_rows_are_cut(T, S):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, axis_sizes=[4, 8, 8, 4, 4, 4], next_axes=[0, 1, 2], rope_axes=[1, 2],
                          query_slots=True, n_layer=2, n_head=2, n_embd=32, block_size=T)).eval()
    base = [(0, 0, 9), (1, 1, 7), (2, 2, 5), (2, 4, 11), (3, 3, 6), (3, 5, 8), (4, 6, 12)]
    other = [(0, 0, 9), (1, 1, 7), (2, 2, 23), (2, 4, 11), (3, 3, 2), (3, 5, 17), (4, 6, 3)]  # lane 2, wave 3+ differ
    a = _stream(np.random.default_rng(0), base)
    b2 = _stream(np.random.default_rng(1), other)
    # waves 0-1 and lane 4 keep their tokens; lane 2 (lane 4's wave) and the later waves are new, of new lengths
    b = tuple(np.concatenate([x[a[4] < 2], y[b2[4] == 2], x[a[4] == 4], y[b2[3] >= 3]]) for x, y in zip(a, b2))
    assert a[0].size != b[0].size
    with torch.no_grad():
        la, lb = (_lane_logits(model, _lane_docs(*s, block_size=T, stride=S)) for s in (a, b))
    for key in la:
        if key[0] == 4 or key[0] in (0, 1):
            torch.testing.assert_close(la[key], lb[key], atol=1e-5, rtol=1e-5)
    c = tuple(x.copy() for x in a)
    c[0][0] += 1  # an earlier wave's token: lane 4 must see it
    with torch.no_grad():
        lc = _lane_logits(model, _lane_docs(*c, block_size=T, stride=S))
    assert not torch.allclose(la[(4, 0)], lc[(4, 0)])


def test_the_lane_mask_is_the_same_dense_by_tiles_and_in_the_model():
    rng = np.random.default_rng(0)
    t, coords, place, waves, lanes = _stream(rng, [(w, 10 * w + j, int(rng.integers(1, 40))) for w in range(30)
                                                   for j in range(1 + w % 3)])
    (d,) = _lane_docs(t, coords, place, waves, lanes, block_size=4096, stride=2048)
    assert 1024 <= d["idx"].size <= 2048  # tiles (`SPARSE_FROM`)
    row = doc_row(d, 2048)
    b = {k: torch.from_numpy(v)[None] for k, v in row.items()}
    dense = RowMask(b["doc_ids"], b["groups"], b["query"], lane=b["lane"]).dense()[:, 0]
    assert torch.equal(dense, group_mask(b["doc_ids"], b["groups"], b["query"], lane=b["lane"]))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, axis_sizes=[4, 128, 8, 4, 4, 4], next_axes=[0, 1, 2], rope_axes=[1, 2],
                          query_slots=True, n_layer=1, n_head=2, n_embd=32, block_size=2048)).eval()
    with torch.no_grad():
        fast, _ = model(**b)
        model.fast = False
        ref, _ = model(**b)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("T,S,local", [(1024, 512, ()), (512, 256, ()), (1024, 512, (1, 1))])
def test_eval_bits_are_the_bits_of_the_sampler_forced_along_the_same_stream(photo, T, S, local):
    codec = AvcCodec(qp=30)
    model = _model(codec, T, local=local)
    data = DataConfig(datasets=["unused"], block_size=T, stride=S, parallel="wavefront", places=bool(local))
    (rb,) = record_bits(model, codec, [photo], data, "cpu")
    p = plan(codec, photo.meta, data.spec_for(T, S), np.random.default_rng(0))
    forced = Forced(codec, photo)
    toks, steps = run_lanes(model, codec, photo.meta, p, forced, stride=S)
    assert np.array_equal(toks, photo.tokens) and steps == rb.steps
    assert forced.bits == pytest.approx(rb.bits, rel=1e-5)


def test_what_wavefront_refuses_says_why():
    codec = AvcCodec()
    with pytest.raises(UsageError, match="sets the order itself"):
        StreamSpec.parse("random", "wavefront")
    with pytest.raises(UsageError, match="clips"):
        plan(codec, {"height": 32, "width": 32, "frames": 3}, WAVEFRONT, np.random.default_rng(0))
    with pytest.raises(UsageError, match="spans every unit"):
        plan(get_codec({"id": "wavelet", "layout": "rle"}), {"height": 32, "width": 32, "components": 3}, WAVEFRONT,
             np.random.default_rng(0))
    with pytest.raises(UsageError, match="lane of"):
        record_docs(AvcCodec(qp=10), AvcCodec(qp=10).encode(skdata.astronaut()[:48, :48], "a"),
                    StreamSpec.parse("canonical", "wavefront", None, 256, 128), np.random.default_rng(0))


@pytest.mark.slow
def test_train_eval_sample_and_compress_a_wavefront_run_whose_streams_ffmpeg_decodes(tmp_path):
    codec = AvcCodec(qp=32)
    ds = run_job(["sample"], tmp_path / "ds", codec, Preprocess(size=48, crops=1, seed=0), shard_size=8,
                 executor="local", quiet=True).folder
    data = DataConfig(datasets=[str(ds)], block_size=1024, batch_size=2, num_workers=0, heldout=0.25,
                      parallel="wavefront")
    train(data, TrainConfig(out=str(tmp_path / "run"), max_steps=3, warmup=1, eval_every=0, ckpt_every=3), quiet=True)
    ev = evaluate(tmp_path / "run", [str(ds)], limit=2)
    assert ev["parallel"] == "wavefront" and np.isfinite(ev["bits_per_image"])
    assert ev["steps_per_image"] < ev["tokens_per_image"]  # 3x3 macroblocks: 7 waves, lanes side by side
    from vistok.train.checkpoint import load_model

    model, _ = load_model(tmp_path / "run")
    meta = {"height": 48, "width": 48, "components": 3}
    images, streams, steps = sample_images(model, codec, meta, 1, seed=1, spec=data.spec_for(1024, 512))
    assert steps < streams[0].size
    for img, toks in zip(images, streams):
        rec = TokenRecord("s", toks, dict(meta))
        with av.open(__import__("io").BytesIO(codec.to_h264(rec)), format="h264") as f:
            (frame,) = list(f.decode(video=0))
        y = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.height, -1)[:48, :48]
        assert np.array_equal(y, codec.decoded_planes(rec)[0][0][:48, :48])  # FFmpeg's pixels are vistok's
        assert img is not None and img.shape == (48, 48, 3)
    from vistok.shards.reader import Dataset
    from vistok.train.compress import Coder

    coder = Coder.load(tmp_path / "run")  # compress: range-coded files that give the records back
    recs = [r for _, r in zip(range(2), Dataset(ds))]
    assert [r.tokens.tolist() for r in coder.decompress(b for _, b in coder.compress(recs))] == [r.tokens.tolist() for r in recs]


@pytest.mark.slow
def test_a_record_too_long_for_its_row_in_a_loader_worker_ends_the_run_with_one_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(src / "a_flat.png")  # planned before step 1: fits
    Image.fromarray(skdata.astronaut()[:64, :64]).save(src / "b_photo.png")  # met by a worker: too long
    run_job([str(src)], tmp_path / "ds", AvcCodec(qp=10), Preprocess(), shard_size=8, executor="local", quiet=True)
    proc = subprocess.run([sys.executable, "-m", "vistok.cli", "train", str(tmp_path / "ds"), "--out",
                           str(tmp_path / "run"), "--parallel", "wavefront", "--block-size", "256", "--stride", "128",
                           "--max-steps", "3", "--batch-size", "2", "--workers", "2", "--heldout", "0", "-q"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "a lane of" in proc.stderr
