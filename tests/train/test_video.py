"""Video prediction: windows that keep earlier frames in context, per-frame bits, prompted continuation."""

import json

import numpy as np
import pytest
import torch

from tests.test_cli import vistok
from vistok.media.preprocess import Preprocess
from vistok.nn.gpt import GPT, GPTConfig, window_start
from vistok.pipelines.job import run_job
from vistok.shards.reader import Dataset
from vistok.shards.render import write_mp4
from vistok.tokenize import BSQCodec, H264Codec, JpegCodec, WaveletCodec
from vistok.tokenize.base import first_frames, frames_of
from vistok.tokenize.stream import StreamSpec
from vistok.train.compress import Coder
from vistok.train.container import payload_bits
from vistok.train.data import DataConfig, RowFiller, record_docs, record_rng, windows
from vistok.train.evaluate import evaluate, record_bits
from vistok.train.sample import BatchGrammar, clip_run, sample_plans
from vistok.train.trainer import TrainConfig, train


def _videos(folder, n, seed=0, repeats=4, side=8, distinct=3):
    """n real mp4 files: `distinct` random blocky images per video, each shown `repeats` frames in a row."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for v in range(n):
        frames = []
        for _ in range(distinct):
            img = np.kron(rng.integers(0, 256, (side // 4, side // 4, 3)), np.ones((4, 4, 1))).astype(np.uint8)
            frames += [img] * repeats
        write_mp4(np.stack(frames), folder / f"v{v:03d}.mp4")
    return folder


def _random_model(codec, block_size):
    """A small untrained GPT over every axis of `codec` (places rotate on all but time), seeded."""
    torch.manual_seed(0)
    A = len(codec.axes)
    return GPT(GPTConfig(vocab_size=codec.vocab.size, axis_sizes=[130] * A, block_size=block_size,
                         next_axes=list(range(A)), rope_axes=list(range(1, A)), n_layer=2, n_head=2, n_embd=32)).eval()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Clips of 4 repeated frames (8x8 gray, JPEG dense q50: 64 tokens a frame, 259 a clip)."""
    root = tmp_path_factory.mktemp("video")
    res = run_job([str(_videos(root / "v", 12))], root / "ds", JpegCodec(quality=50, layout="dense"),
                  Preprocess(clip_len=4, gray=True), shard_size=64, executor="local", quiet=True)
    return res.folder


@pytest.fixture(scope="module")
def clip_run_dir(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("vrun") / "run"
    data = DataConfig(datasets=[str(clips)], block_size=128, stride=32, batch_size=4, num_workers=0, heldout=0.3,
                      shuffle_block=8)
    train(data, TrainConfig(out=str(out), max_steps=6, warmup=2, eval_every=0, ckpt_every=6, log_every=3), quiet=True)
    return out


# --- windows --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T,S", [(8, 8), (8, 3), (8, 1), (16, 5)])
def test_windows_score_every_target_once_with_the_most_context(T, S):
    for n in [1, 5, 8, 9, 23, 64]:
        ws = windows(n, T, S)
        scored = [i for _, new, stop in ws for i in range(new, stop)]
        assert scored == list(range(n))
        for a, new, stop in ws:
            assert stop - a <= T and a % S == 0
            for i in range(new, stop):
                assert window_start(i, T, S) == a
                assert i - a >= min(i, T - S)  # at least T - S earlier positions once past the first window
    assert windows(20, 8, 8) == [(0, 0, 8), (8, 8, 16), (16, 16, 20)]  # stride = context: independent pieces


def test_clip_windows_are_views_with_loss_on_new_targets(clips):
    ds = Dataset(clips)
    codec, rec = ds.codec, next(iter(ds))
    n = len(rec.tokens) + 1
    rd = record_docs(codec, rec, StreamSpec.parse("canonical", block_size=128, stride=32), record_rng(0, rec.key))
    whole = record_docs(codec, rec, StreamSpec.parse("canonical", block_size=4096), record_rng(0, rec.key)).docs[0]
    assert len(rd.docs) > 3 and np.shares_memory(rd.docs[0]["idx"], rd.docs[1]["idx"])  # views, not copies
    for (a, new, stop), d in zip(windows(n, 128, 32), rd.docs, strict=True):
        assert np.array_equal(d["targets"], whole["targets"][a:stop])
        assert np.array_equal(np.flatnonzero(d["loss_mask"]) + a, np.arange(new, stop))
    assert sum(int(d["loss_mask"].sum()) for d in rd.docs) == n


def test_a_window_never_sees_another_document_or_its_own_future(clips):
    """Logits at a position do not move when any later position of its row, or another document packed in
    the same row, changes."""
    ds = Dataset(clips)
    codec = ds.codec
    model = _random_model(codec, 128)
    recs = list(ds)[:2]
    filler = RowFiller(128, len(codec.axes))
    rows = []
    for rec in recs:  # the last (short) window of each record, packed side by side in one row
        d = record_docs(codec, rec, StreamSpec.parse("canonical", block_size=128, stride=32), record_rng(0, rec.key)).docs[-1]
        rows += list(filler.add({k: v[-60:] for k, v in d.items()}))
    row = rows[0] if rows else filler.flush()
    b = {k: torch.from_numpy(v)[None] for k, v in row.items()}
    base, _ = model(b["idx"], b["coords"], b["next_coords"], doc_ids=b["doc_ids"])
    for cut in (10, 59, 100):
        idx = b["idx"].clone()
        idx[0, cut:] = (idx[0, cut:] + 7) % codec.vocab.size
        got, _ = model(idx, b["coords"], b["next_coords"], doc_ids=b["doc_ids"])
        assert torch.allclose(got[0, :cut], base[0, :cut], atol=1e-5)  # the past never sees the future
    idx = b["idx"].clone()
    idx[0, 60:] = (idx[0, 60:] + 7) % codec.vocab.size  # only the second document changes
    got, _ = model(idx, b["coords"], b["next_coords"], doc_ids=b["doc_ids"])
    assert torch.allclose(got[0, :60], base[0, :60], atol=1e-5)


def test_eval_with_stride_equal_to_the_context_is_independent_pieces(clips, clip_run_dir):
    """Stride = context scores each piece of the context's length on its own, as before windows existed; a
    smaller stride scores the same targets with more context."""
    from vistok.tokenize.stream import stream_masks
    from vistok.train.checkpoint import load_model
    from vistok.train.data import doc_row

    model, state = load_model(clip_run_dir)
    data = DataConfig(**state["data"])
    ds = Dataset(clips)
    codec, recs = ds.codec, list(ds)[:3]
    got = record_bits(model, codec, recs, data, "cpu", stride=128)
    for rec, rb in zip(recs, got):  # reference: every piece alone in a row of its own
        rd = record_docs(codec, rec, StreamSpec.parse(data.order, block_size=4096), record_rng(data.seed, rec.key))
        whole = rd.docs[0]
        masks = stream_masks(codec, rec.meta, rd.stream.plan, rec.tokens[rd.stream.perm])
        bits = 0.0
        for a in range(0, len(whole["idx"]), 128):
            row = doc_row({k: v[a : a + 128] for k, v in whole.items()}, 128)
            t = {k: torch.from_numpy(v)[None] for k, v in row.items()}
            logits, _ = model(t["idx"], t["coords"], t["next_coords"], doc_ids=t["doc_ids"])
            m = len(whole["idx"][a : a + 128])
            lg = logits[0, :m].double().masked_fill(~torch.from_numpy(masks[a : a + m]), float("-inf"))
            bits += -torch.log_softmax(lg, -1)[torch.arange(m), t["targets"][0, :m]].sum().item() / np.log(2)
        assert rb.bits == pytest.approx(bits, rel=1e-4)
    slid = record_bits(model, codec, recs, data, "cpu", stride=32)
    assert [r.positions for r in slid] == [r.positions for r in got]
    assert [r.bits for r in slid] != [r.bits for r in got]


def test_per_frame_bits_add_up_and_frame_one_costs_the_same_alone(clip_run_dir, clips):
    ev = evaluate(clip_run_dir, split="all", per_frame=True, limit=6)
    rows = ev["per_frame_bits"]
    assert [r["frame"] for r in rows] == [1, 2, 3, 4] and all(r["clips"] == 6 for r in rows)
    assert rows[0]["conditional_bits"] == pytest.approx(rows[0]["independent_bits"], rel=1e-4)
    assert sum(r["conditional_bits"] for r in rows) == pytest.approx(ev["bits_per_image"], rel=1e-6)
    assert ev["stride"] == 32 and ev["min_context"] == 96 and ev["context"] == 128
    cond = sum(r["conditional_bits"] for r in rows[1:])
    alone = sum(r["independent_bits"] for r in rows[1:])
    assert ev["conditional_to_independent_ratio"] == pytest.approx(cond / alone)


def test_frames_that_repeat_cost_far_less_given_the_frame_before(bsq_tok, tmp_path):
    """The point of windows: after a short training, a repeated frame costs a fraction of a new one. 16x16
    frames of a learned codec (4 codes each), clips of 4 repeats, windows of 16 every 4 positions."""
    res = run_job([str(_videos(tmp_path / "v", 150, seed=1, side=16))], tmp_path / "ds",
                  BSQCodec(tokenizer=str(bsq_tok)), Preprocess(clip_len=4), shard_size=128, executor="local",
                  quiet=True)
    data = DataConfig(datasets=[str(res.folder)], block_size=16, stride=4, batch_size=16, num_workers=0,
                      heldout=0.1, seed=0)
    train(data, TrainConfig(out=str(tmp_path / "run"), max_steps=300, lr=3e-3, warmup=10, eval_every=0,
                            ckpt_every=300, log_every=50), quiet=True)
    ev = evaluate(tmp_path / "run", per_frame=True)
    rows = ev["per_frame_bits"]
    assert ev["min_context"] == 12 and rows[0]["conditional_bits"] > 10, rows  # a new frame costs bits
    assert ev["conditional_to_independent_ratio"] < 0.5, rows  # measured: 0.32
    assert max(r["conditional_bits"] for r in rows[1:]) < 0.5 * rows[0]["conditional_bits"], rows


# --- sampling -------------------------------------------------------------------------------------------
def test_windowed_generation_is_the_same_with_and_without_the_cache(clips):
    ds = Dataset(clips)
    codec = ds.codec
    model = _random_model(codec, 64)
    meta = {**next(iter(ds)).meta, "frames": 3}
    out = []
    for cache in (True, False):
        g = BatchGrammar(codec, meta, sample_plans(codec, meta, 2, "canonical", 0))
        toks = model.generate(g, codec.layout(meta).max_tokens, generator=torch.Generator().manual_seed(1),
                              use_cache=cache, stride=16)
        out.append(toks)
        assert all(gr.done for gr in g.gs) and toks.size(1) > 64 * 2  # well past the context
    assert torch.equal(out[0], out[1])


def test_sample_continues_a_prompt_whose_frames_come_back_exactly(clips, clip_run_dir, tmp_path):
    ds = Dataset(clips)
    rec = next(iter(ds))
    res = clip_run(clip_run_dir, tmp_path / "c.mp4", frames=3, prompt=rec.key, prompt_frames=2, seed=0)
    clip = res["record"]
    assert clip.meta["frames"] == 5
    assert np.array_equal(first_frames(clip, 2).tokens, first_frames(rec, 2).tokens)
    assert res["decoded_generated_frames"] == 3
    import av

    with av.open(str(tmp_path / "c.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5
    from PIL import Image

    strip = Image.open(tmp_path / "c.png")
    assert strip.width > 5 * strip.height  # one row: prompt | generated
    # a video file as the prompt: tokenized with the run's codec and preprocessing
    vid = _videos(tmp_path / "p", 1, seed=9)
    res = clip_run(clip_run_dir, tmp_path / "v.mp4", frames=2, prompt=str(vid / "v000.mp4"), prompt_frames=3)
    assert res["record"].meta["frames"] == 5 and res["prompt_frames"] == 3


@pytest.mark.parametrize("kind", ["wavelet", "bsq"])
def test_prompted_clips_for_wavelet_and_learned_codecs(kind, bsq_tok, tmp_path):
    codec = WaveletCodec(levels=2) if kind == "wavelet" else BSQCodec(tokenizer=str(bsq_tok))
    res = run_job([str(_videos(tmp_path / "v", 3, side=16))], tmp_path / "ds", codec,
                  Preprocess(clip_len=3, gray=kind == "wavelet"),
                  shard_size=64, executor="local", quiet=True)
    data = DataConfig(datasets=[str(res.folder)], block_size=64, stride=16, batch_size=2, num_workers=0, heldout=0.0)
    train(data, TrainConfig(out=str(tmp_path / "run"), max_steps=2, warmup=1, eval_every=0, ckpt_every=2,
                            log_every=1), quiet=True)
    ds = Dataset(res.folder)
    rec = next(iter(ds))
    out = clip_run(tmp_path / "run", tmp_path / "c.mp4", frames=2, prompt=rec.key, prompt_frames=2, seed=0)
    assert out["decoded_generated_frames"] == 2  # a complete grammar: every generated frame decodes
    assert np.array_equal(first_frames(out["record"], 2).tokens, first_frames(rec, 2).tokens)


def test_h264_continuation_reports_the_frames_that_decoded(tmp_path):
    vids = _videos(tmp_path / "v", 4, side=16, repeats=2)
    res = run_job([str(vids)], tmp_path / "ds", H264Codec(crf=30), Preprocess(clip_len=3), shard_size=64,
                  executor="local", quiet=True)
    data = DataConfig(datasets=[str(res.folder)], block_size=256, stride=128, batch_size=2, num_workers=0,
                      heldout=0.0)
    train(data, TrainConfig(out=str(tmp_path / "run"), max_steps=2, warmup=1, eval_every=0, ckpt_every=2,
                            log_every=1), quiet=True)
    ds = Dataset(res.folder)
    rec = next(iter(ds))
    out = clip_run(tmp_path / "run", tmp_path / "h.mp4", frames=2, prompt=rec.key, prompt_frames=2, seed=0)
    assert out["prompt_frames"] == 2 and 0 <= out["decoded_generated_frames"] <= 2
    assert np.array_equal(first_frames(out["record"], 2).tokens, first_frames(rec, 2).tokens)
    import av

    with av.open(str(tmp_path / "h.mp4")) as c:  # the mp4 holds the frames that decoded, no black stand-ins
        assert sum(1 for _ in c.decode(video=0)) == 2 + out["decoded_generated_frames"]


# --- coding ---------------------------------------------------------------------------------------------
def test_compress_reads_a_long_clip_in_the_same_windows_as_eval(clips, clip_run_dir, decodes_to):
    coder = Coder.load(clip_run_dir)
    recs = list(Dataset(clips))[:3]
    assert all(len(r.tokens) > 2 * coder.model.cfg.block_size for r in recs)
    blobs = [b for _, b in coder.compress(recs)]
    decodes_to(list(coder.decompress(blobs)), recs)
    for blob, rb in zip(blobs, record_bits(coder.model, coder.codec, recs, coder.data, "cpu")):
        assert abs(payload_bits(blob) - rb.bits) <= 0.01 * rb.bits + 64, (payload_bits(blob), rb.bits)


# --- command line -----------------------------------------------------------------------------------------
def test_cli_eval_per_frame_and_sample_a_clip(clips, clip_run_dir, tmp_path):
    out = vistok("eval", clip_run_dir, "--per-frame", "--split", "all", "--limit", "3").stdout
    assert "given earlier" in out and "conditional / independent" in out
    ev = json.loads(vistok("eval", clip_run_dir, "--per-frame", "--json", "--stride", "128", "--limit", "2",
                           "--split", "all").stdout)
    assert ev["stride"] == 128 and len(ev["per_frame_bits"]) == 4
    key = next(iter(Dataset(clips))).key
    out = vistok("sample", clip_run_dir, "--prompt", key, "--prompt-frames", "1", "--frames", "2",
                 "--out", tmp_path / "s.mp4").stdout
    assert (tmp_path / "s.mp4").exists() and (tmp_path / "s.png").exists()
    assert "2 of 2 generated frames decoded" in out
    for bad in (["--prompt", "no-such-key", "--frames", "2", "--out", tmp_path / "x.mp4"],
                ["--prompt", key, "--prompt-frames", "9", "--frames", "2", "--out", tmp_path / "x.mp4"]):
        proc = vistok("sample", clip_run_dir, *bad, check=False)
        assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
    proc = vistok("eval", clip_run_dir, "--stride", "500", check=False)
    assert proc.returncode == 2 and "--stride" in proc.stderr


def test_delta_clips_shard_inspect_train_score_and_continue(tmp_path):
    """`--temporal delta` end to end: the CLI shards it, inspect reports tokens per frame and the SKIP share,
    a run trains on it, scores it per frame (JPEG's own bits from the frames' real coefficients) and
    continues a prompt into frames that decode."""
    vids = _videos(tmp_path / "v", 4, side=16, repeats=4, distinct=1)  # a still camera: every frame the same
    vistok("shard", vids, "--codec", "jpeg", "--temporal", "delta", "--clip-len", "4", "--out", tmp_path / "ds")
    info = json.loads(vistok("inspect", tmp_path / "ds", "--json").stdout)
    assert info["codec"]["temporal"] == "delta" and info["skip_share_of_blocks"] > 0.5
    per = info["tokens_per_frame"]
    assert len(per) == 4 and all(p < 0.5 * per[0] for p in per[1:])
    assert "SKIP blocks" in vistok("inspect", tmp_path / "ds").stdout
    data = DataConfig(datasets=[str(tmp_path / "ds")], block_size=256, batch_size=2, num_workers=0, heldout=0.0)
    train(data, TrainConfig(out=str(tmp_path / "run"), max_steps=2, warmup=1, eval_every=0, ckpt_every=2), quiet=True)
    ev = evaluate(tmp_path / "run", per_frame=True, split="all")
    assert len(ev["per_frame_bits"]) == 4
    rec = next(iter(Dataset(tmp_path / "ds")))
    assert rec.meta["temporal"] == "delta" and Dataset(tmp_path / "ds").codec.decode(rec).shape[0] == 4
    # JPEG's own bits: a file per frame of its real coefficients, the same as the plain clips' files
    vistok("shard", vids, "--codec", "jpeg", "--clip-len", "4", "--out", tmp_path / "plain")
    plain = Dataset(tmp_path / "plain")
    want = np.mean([sum(8 * _scan_bytes(plain.codec, f) for f in frames_of(r)) for r in plain])
    assert abs(ev["jpeg_bits_per_image"] - want) < 1e-6
    out = clip_run(tmp_path / "run", tmp_path / "c.mp4", frames=2, prompt=rec.key, prompt_frames=2, seed=0)
    assert out["decoded_generated_frames"] == 2


def test_wavelet_delta_clips_shard_inspect_and_decode_to_the_plain_clip(tmp_path):
    """`vistok shard --codec wavelet --temporal delta` (the CLI's shared option), inspect's tokens per frame,
    and `vistok decode` writing the clip whose frames are the plain codec's."""
    import av

    vids = _videos(tmp_path / "v", 2, side=16, repeats=4, distinct=1)
    for name, extra in (("delta", ["--temporal", "delta"]), ("plain", [])):
        vistok("shard", vids, "--codec", "wavelet", "--levels", "2", *extra, "--clip-len", "4", "--out", tmp_path / name)
    info = json.loads(vistok("inspect", tmp_path / "delta", "--json").stdout)
    plain = json.loads(vistok("inspect", tmp_path / "plain", "--json").stdout)
    assert info["codec"]["temporal"] == "delta" and info["tokens_per_frame"][0] == plain["tokens_per_frame"][0]
    assert all(t < 0.5 * p for t, p in zip(info["tokens_per_frame"][1:], plain["tokens_per_frame"][1:]))
    key = next(iter(Dataset(tmp_path / "delta"))).key
    for name in ("delta", "plain"):
        vistok("decode", tmp_path / name, "--key", key, "--out", tmp_path / f"{name}.mp4")
    frames = {}
    for name in ("delta", "plain"):
        with av.open(str(tmp_path / f"{name}.mp4")) as c:
            frames[name] = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert frames["delta"].shape[0] == 4 and np.array_equal(frames["delta"], frames["plain"])


def _scan_bytes(codec, rec) -> int:
    from vistok.train.evaluate import jpeg_scan_bytes

    return jpeg_scan_bytes(codec.to_jpeg(rec, optimize=True))


# --- coarse to fine within each frame, a group per (frame, scale) -------------------------------------------
def _scale_clips(root, name, multiscale_tok):
    """4-frame clips of the embedded GIF as dense gray wavelets (16x16, 2 levels: scales of 16, 48, 192
    tokens) or as 3-scale BSQ codes (32x32: 1, 4, 16 codes), with the run's order."""
    if name == "wavelet":
        codec, pre, order = WaveletCodec(levels=2, layout="dense", step=12), Preprocess(size=16, clip_len=4, gray=True), "coarse-to-fine"
    else:
        codec, pre, order = BSQCodec(str(multiscale_tok)), Preprocess(size=32, clip_len=4), "next-scale"
    res = run_job(["sample-video"], root / name, codec, pre, shard_size=8, executor="local", quiet=True)
    return res.folder, codec, order


@pytest.mark.parametrize("name", ["wavelet", "bsq"])
def test_scale_parallel_clips_train_score_per_scale_continue_and_compress(name, multiscale_tok, tmp_path, decodes_to):
    """`--parallel scales` on clips: one model step per (frame, scale), each frame's scales after the earlier
    frames (windows with context); eval splits every frame into its scales, given the earlier frames and
    alone; a prompt is continued a (frame, scale) per step with its frames kept token for token; the clips
    compress to files that decode, in the bits eval counts."""
    ds, codec, order = _scale_clips(tmp_path, name, multiscale_tok)
    data = DataConfig(datasets=[str(ds)], block_size=512, stride=400, batch_size=2, num_workers=0, heldout=0.0,
                      shuffle_block=4, order=order, parallel="scales")
    train(data, TrainConfig(out=str(tmp_path / "run"), max_steps=3, warmup=1, eval_every=0, ckpt_every=3), quiet=True)
    recs = list(Dataset(ds))
    ev = evaluate(tmp_path / "run", split="all", per_frame=True, limit=3)
    assert ev["steps_per_image"] == 4 * 3 and ev["min_context"] == 111  # 4 frames x 3 scales
    scale_rows = ev["per_scale_bits"]
    assert [(r["frame"], r["scale"]) for r in scale_rows] == [(t, s) for t in range(1, 5) for s in range(3)]
    for f in ev["per_frame_bits"]:
        parts = [r for r in scale_rows if r["frame"] == f["frame"]]
        assert sum(r["conditional_bits"] for r in parts) == pytest.approx(f["conditional_bits"])
        assert sum(r["independent_bits"] for r in parts) == pytest.approx(f["independent_bits"])
    assert sum(f["conditional_bits"] for f in ev["per_frame_bits"]) == pytest.approx(ev["bits_per_image"])
    rec = recs[0]
    out = clip_run(tmp_path / "run", tmp_path / "c.mp4", frames=2, prompt=rec.key, prompt_frames=2, seed=0)
    assert out["steps"] == 2 * 3 and out["decoded_generated_frames"] == 2
    assert np.array_equal(first_frames(out["record"], 2).tokens, first_frames(rec, 2).tokens)
    coder = Coder.load(tmp_path / "run")
    blobs = [b for _, b in coder.compress(recs[:2])]
    decodes_to(list(coder.decompress(blobs)), recs[:2])
    for blob, rb in zip(blobs, record_bits(coder.model, coder.codec, recs[:2], coder.data, "cpu")):
        assert abs(payload_bits(blob) - rb.bits) <= 0.01 * rb.bits + 64, (payload_bits(blob), rb.bits)


def test_a_scale_group_never_sees_its_own_or_a_later_group_and_sees_earlier_frames(tmp_path, multiscale_tok):
    """Through every layer of a model, in a window with context: changing a token of group g moves no query
    logit of groups <= g, and moves those of later groups; the context is earlier frames' groups only; and
    generating with the KV cache gives what feeding every window again gives."""
    from vistok.nn.gpt import generate_groups
    from vistok.tokenize.stream import StreamGrammar, group_windows, plan

    ds, codec, order = _scale_clips(tmp_path, "wavelet", multiscale_tok)
    rec = next(iter(Dataset(ds)))
    rd = record_docs(codec, rec, StreamSpec.parse(order, "scales", block_size=512, stride=400), record_rng(0, rec.key))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=codec.vocab.size, axis_sizes=[40] * len(codec.axes), block_size=512, n_layer=2,
                          n_head=2, n_embd=32, query_slots=True)).eval()
    doc = next(d for d in rd.docs if d["groups"][1] < d["groups"][d["query"].argmax()])  # a window with context
    b = {k: torch.from_numpy(v)[None] for k, v in doc.items()}
    kw = dict(groups=b["groups"], query=b["query"], doc_ids=torch.zeros_like(b["groups"]))
    base, _ = model(b["idx"], b["coords"], b["next_coords"], **kw)
    grp, q = doc["groups"], np.flatnonzero(doc["query"])
    assert grp[1 : q[0]].max() >= grp[q].min() - 1 >= grp[1]  # context: the groups just before, never the new ones
    for j in (1, int(q[0]) - 1, int(q[0]), int(q[0]) + 7):
        idx = b["idx"].clone()
        idx[0, j] = (idx[0, j] + 5) % codec.vocab.size
        out, _ = model(idx, b["coords"], b["next_coords"], **kw)
        same = [torch.allclose(out[0, i], base[0, i], atol=1e-6) for i in q]
        assert same == [grp[i] <= grp[j] for i in q], j
    meta = {k: v for k, v in rec.meta.items() if k != "source"}
    runs = []
    for cache in (True, False):
        p = plan(codec, meta, StreamSpec.parse(order, "scales", block_size=401), np.random.default_rng(0))
        g = StreamGrammar(codec, meta, p)
        toks, steps = generate_groups(model, g, generator=torch.Generator().manual_seed(1), use_cache=cache,
                                      windows=lambda p=p: group_windows(p.groups, 512, 400))
        assert steps == 12
        runs.append(toks)
    assert runs[0] == runs[1]
