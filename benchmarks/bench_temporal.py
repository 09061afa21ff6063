"""Video frames that cost what changes: what frames 2..N cost against frame 1, per tokenization, on
static-camera clips and on pans, against x264's P/I size ratio at a matched PSNR (all measured in one run).

Clips (8 frames, made from the embedded photographs by `vistok.pretrain_video`): static-camera clips
(`still_frames`: a still 64x64 view, a small object crossing it) and `make pretrain-video`'s pans (a 32x32
window moving 2 pixels a frame). The three test photographs' clips are held out of training (and out of
the BSQ tokenizer's training); every row trains one model for the same optimizer steps on the same
training clips (both kinds together) and is scored on the same held-out clips.

Rows: avc (vistok's H.264 syntax tokens, an I picture then P pictures with integer motion, at the QP whose
PSNR matches JPEG q20's); JPEG q20; JPEG q20 --temporal delta; wavelet at the step that matches JPEG q20's PSNR on the
held-out clips, with and without delta; and multi-scale BSQ codes predicted a (frame, scale) per step
(`next-scale --parallel scales`). Columns per clip kind: tokens of a frame 2..N against frame 1's; model
bits of a frame 2..N given the earlier frames against frame 1's (`eval --per-frame`: later_to_first_ratio)
and against itself alone (conditional_to_independent_ratio); and x264's mean P-frame bytes over its I-frame
bytes, one I-frame per clip (gop = clip length, baseline profile, the crf whose PSNR over the clip is the
nearest at or above JPEG q20's).

`make bench` runs it short (`summary`); `python benchmarks/bench_temporal.py --steps 300 --out DIR` made the
README table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import smoke  # noqa: E402
from vistok.media.preprocess import Preprocess  # noqa: E402
from vistok.media.sources import sample_files  # noqa: E402
from vistok.media.video import decode_clips  # noqa: E402
from vistok.pipelines.job import run_job  # noqa: E402
from vistok.pretrain_video import TEST_PHOTOS, make_pans, make_stills  # noqa: E402
from vistok.shards.reader import Dataset  # noqa: E402
from vistok.tokenize import AvcCodec, BSQCodec, H264Codec, JpegCodec, WaveletCodec  # noqa: E402
from vistok.tokenize.base import frames_of  # noqa: E402
from vistok.train.data import DataConfig  # noqa: E402
from vistok.train.evaluate import evaluate  # noqa: E402
from vistok.train.trainer import TrainConfig, train  # noqa: E402

CLIP = 8  # frames per clip
KINDS = ("still", "pan")


def videos(root: Path, small: bool = False) -> dict[str, list[str]]:
    """The clips' videos: training (stills and pans of the training photographs) and each held-out kind;
    `small`: one still and one pan per training photograph, two of each held-out kind per test photograph."""
    v = root / "videos"
    stills, pans = make_stills(v / "train", False, 1 if small else 4, CLIP), make_pans(v / "train", False)
    test_stills, test_pans = make_stills(v / "test", True, 2 if small else 6, CLIP), make_pans(v / "test", True)
    if small:
        pans, test_pans = pans[::4], test_pans[::2]
    if smoke():  # `make bench-quick`: a clip or two of each
        stills, pans, test_stills, test_pans = stills[:2], pans[:1], test_stills[:1], test_pans[:1]
    return {"train": [str(p) for p in stills + pans], "still": [str(p) for p in test_stills],
            "pan": [str(p) for p in test_pans]}


def clip_frames(paths: list[str]) -> list[list[np.ndarray]]:
    """The frames of each clip, as `vistok shard --clip-len 8` cuts them."""
    pre = Preprocess(clip_len=CLIP, clip_stride=CLIP)
    return [[pre.frame(f, "k") for f in clip] for p in paths for clip in decode_clips(Path(p).read_bytes(), pre.video())]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def clip_psnr(codec, frames: list[np.ndarray]) -> float:
    return float(np.mean([psnr(a, b) for a, b in zip(frames, codec.decode(codec.encode_clip(frames, "k")))]))


def x264_p_over_i(clips: list[list[np.ndarray]], target: list[float]) -> dict:
    """Per clip, x264 at the highest crf whose PSNR is at least the clip's JPEG q20 PSNR: mean P-frame bytes
    over the I-frame's; the mean over clips, and the PSNR and crf reached."""
    ratios, psnrs, crfs = [], [], []
    for frames, want in zip(clips, target):
        best = None
        for crf in range(10, 52):
            codec = H264Codec(crf=crf, gop=CLIP, frames="all")
            rec = codec.encode_clip(frames, "k")
            p = clip_psnr(codec, frames)
            if p < want and best is not None:
                break
            sizes = [(f["type"], f["size"]) for f in rec.meta["frame_info"]]
            best = (crf, p, np.mean([s for t, s in sizes if t == "P"]) / next(s for t, s in sizes if t == "I"))
        crfs.append(best[0])
        psnrs.append(best[1])
        ratios.append(best[2])
    return {"x264_p_over_i": round(float(np.mean(ratios)), 3), "x264_psnr": round(float(np.mean(psnrs)), 2),
            "x264_crf": round(float(np.mean(crfs)), 1)}


def matched_wavelet_step(clips: list[list[np.ndarray]], target: float) -> float:
    """The wavelet step whose mean PSNR over the clips' frames is JPEG q20's (bisection on a log scale)."""
    frames = [f for c in clips for f in c[::4]]
    lo, hi = 1.0, 128.0
    for _ in range(9):
        mid = (lo * hi) ** 0.5
        c = WaveletCodec(step=mid, chroma="420")
        if np.mean([psnr(f, c.decode(c.encode(f))) for f in frames]) > target:
            lo = mid
        else:
            hi = mid
    return round(lo, 2)


def matched_avc_qp(clips: list[list[np.ndarray]], target: float) -> int:
    """The largest QP whose mean PSNR over the clips (one I picture per clip, P pictures after it) is at least
    JPEG q20's (bisection: PSNR falls as QP rises)."""
    clips = clips[::3]
    lo, hi = 10, 51
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.mean([clip_psnr(AvcCodec(qp=mid, gop=CLIP, search=8), c) for c in clips]) >= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


def tokenizer(root: Path, steps: int) -> Path:
    """A 3-scale BSQ tokenizer (patch 8, 12 bits) trained on the training photographs only."""
    from vistok.nn.autoencoder import AEConfig
    from vistok.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    out = root / "tokenizer"
    if not (out / "model.safetensors").exists():
        photos = [str(p) for p in sample_files() if p.name not in TEST_PHOTOS]
        train_tokenizer(AEConfig(kind="bsq", patch=8, bits=12, scales=3), TokenizerTrainConfig(
            sources=photos, out=str(out), crop=64, batch=16, max_steps=steps, ckpt_every=0, heldout=0.1), quiet=True)
    return out


def rows(step: float, tok: Path | None, qp: int) -> list[tuple[str, str, object, str, str]]:
    """(id, label, codec, order, parallel) of each row."""
    out = [("avc", f"avc qp {qp}, an I picture then P pictures", AvcCodec(qp=qp, gop=CLIP, search=8), "canonical", ""),
           ("jpeg", "jpeg q20", JpegCodec(quality=20), "canonical", ""),
           ("jpeg_delta", "jpeg q20 delta", JpegCodec(quality=20, temporal="delta"), "canonical", ""),
           ("wavelet", f"wavelet step {step}", WaveletCodec(step=step, chroma="420"), "canonical", ""),
           ("wavelet_delta", f"wavelet step {step} delta", WaveletCodec(step=step, chroma="420", temporal="delta"),
            "canonical", "")]
    if tok is not None:
        out.append(("bsq_scales", "bsq 3 scales, a (frame, scale) per step", BSQCodec(str(tok)), "next-scale", "scales"))
    return out


def token_ratio(folder: Path) -> float:
    """Tokens of a frame 2..N over frame 1's (FRAME separators left out), mean over the clips."""
    per = np.array([[f.tokens.size for f in frames_of(r)] for r in Dataset(folder)], dtype=np.float64)
    return float(np.mean(per[:, 1:].mean(axis=1) / per[:, 0]))


def measure_row(root: Path, slug: str, name: str, codec, order: str, parallel: str, vids: dict, steps: int,
                batch: int) -> dict:
    """Shard, train `steps` optimizer steps, score per frame on each held-out kind."""
    pre = Preprocess(clip_len=CLIP, clip_stride=CLIP)
    sets = {k: run_job(v, root / slug / k, codec, pre, shard_size=64, executor="local", quiet=True).folder
            for k, v in vids.items()}
    data = DataConfig(datasets=[str(sets["train"])], block_size=1024, stride=512, batch_size=batch, heldout=0.0,
                      num_workers=1, seed=0, order=order, parallel=parallel)
    t0 = time.monotonic()
    train(data, TrainConfig(out=str(root / slug / "run"), preset="tiny-video", max_steps=steps, lr=2e-3,
                            warmup=max(1, min(30, steps // 5)), eval_every=0, ckpt_every=steps, log_every=max(1, steps // 10)),
          quiet=True)
    out = {"id": slug, "row": name, "steps": steps, "train_s": round(time.monotonic() - t0, 1)}
    for kind in KINDS:
        ev = evaluate(root / slug / "run", [str(sets[kind])], split="all", per_frame=True)
        out[kind] = {"clips": ev["images"], "tokens_later_to_first": round(token_ratio(sets[kind]), 3),
                     "frame1_bits": round(ev["per_frame_bits"][0]["conditional_bits"], 1),
                     "bits_later_to_first": round(ev["later_to_first_ratio"], 3),
                     "conditional_to_independent": round(ev["conditional_to_independent_ratio"], 3),
                     "bits_per_clip": round(ev["bits_per_image"], 1)}
    return out


def references(vids: dict) -> tuple[dict, float, int]:
    """JPEG q20's PSNR and x264's P/I at it, per held-out kind; the wavelet step and the avc QP matched to JPEG
    q20."""
    jpeg, out, all_clips, all_psnr = JpegCodec(quality=20), {}, [], []
    for kind in KINDS:
        clips = clip_frames(vids[kind])
        target = [clip_psnr(jpeg, c) for c in clips]
        out[kind] = {"jpeg_q20_psnr": round(float(np.mean(target)), 2), **x264_p_over_i(clips, target)}
        all_clips += clips
        all_psnr += target
    target = float(np.mean(all_psnr))
    return out, matched_wavelet_step(all_clips, target), matched_avc_qp(all_clips, target)


def run(root: Path, steps: int, tok_steps: int, batch: int = 4, small: bool = False, only: tuple[str, ...] = ()) -> list[dict]:
    """`only`: the ids of the rows to run (default: every row)."""
    vids = videos(root, small)
    refs, step, qp = references(vids)
    print(json.dumps({"bench": "temporal_references", "wavelet_step": step, "avc_qp": qp, **refs}), flush=True)
    out = [{"references": refs, "wavelet_step": step, "avc_qp": qp}]
    tok = tokenizer(root, tok_steps) if tok_steps else None
    for slug, name, codec, order, parallel in rows(step, tok, qp):
        if only and slug not in only:
            continue
        res = measure_row(root, slug, name, codec, order, parallel, vids, steps, batch)
        print(json.dumps({"bench": "temporal", **res}), flush=True)
        out.append(res)
    return out


def summary(steps: int = 20) -> dict:
    """`make bench`: every row at a few steps on fewer clips (the BSQ tokenizer at 100 steps), its headline
    ratios (the README's table is the full run's)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        res = run(Path(d), steps, 5 if smoke() else 100, batch=2, small=True)
    refs, out = res[0]["references"], {}
    for kind in KINDS:
        out[f"{kind}_x264_p_over_i"] = refs[kind]["x264_p_over_i"]
    for r in res[1:]:
        for kind in KINDS:
            out[f"{r['id']}.{kind}_bits_later_to_first"] = r[kind]["bits_later_to_first"]
            out[f"{r['id']}.{kind}_tokens_later_to_first"] = r[kind]["tokens_later_to_first"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out/temporal")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps of every row's model")
    ap.add_argument("--tokenizer-steps", type=int, default=1500, help="the BSQ tokenizer's steps (0: no BSQ row)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rows", default="", help="comma-separated row ids to run (default: all)")
    args = ap.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    res = run(root, args.steps, args.tokenizer_steps, args.batch, only=tuple(filter(None, args.rows.split(","))))
    (root / "results.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
