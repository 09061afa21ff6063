"""vistok's own H.264 writer (`--codec avc`) against libx264, measured in the same run.

- compression: the picture bytes (slice NAL units; parameter sets and x264's SEI left out) of vistok's
  stream against x264's at the same luma PSNR (x264's log-bytes interpolated at vistok's PSNR over a sweep of
  its QPs): baseline profile, intra only (keyint 1; x264 with and without its deblocking filter, vistok has
  none) on the embedded photos at 256 x 256, and with P pictures (keyint 8) on pans cut from them (128 x 128
  windows moving 3 samples right and 2 down a frame). Both encoders get the same YCbCr 4:2:0 planes.
- speed: frames per second, one core, on 128 x 128 and 256 x 256 intra frames at QP 28: vistok's `encode`
  (pixels -> tokens; the decisions in C, vistok/_avcc.c) and its stream writing (Python) apart, against x264
  (preset veryfast, baseline, threads 1) in one context, planes to bytes.

`python benchmarks/bench_avc.py` prints the figures; `make bench` runs `run()`.
"""

from __future__ import annotations

import io
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import photos_256, smoke  # noqa: E402
from vistok.tokenize.avc import syntax  # noqa: E402
from vistok.tokenize.avc.codec import to_ycbcr  # noqa: E402
from vistok.tokenize.avc.encoder import Encoder  # noqa: E402
from vistok.tokenize.h264 import split_nals  # noqa: E402

PICTURE_NALS = (1, 5)


def picture_bytes(stream: bytes) -> int:
    return sum(len(b) for t, b in split_nals(stream) if t in PICTURE_NALS)


def y_psnr(decoded: list[np.ndarray], source: list[np.ndarray]) -> float:
    mse = np.mean([np.mean((d.astype(np.float64) - s) ** 2) for d, s in zip(decoded, source)])
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def x264(frames: list[list[np.ndarray]], qp: int, keyint: int, deblock: bool = True, preset: str = "medium") -> tuple[bytes, list[np.ndarray]]:
    """libx264 (baseline, one thread, one slice, a fixed QP) on YCbCr planes -> its stream and decoded Y planes."""
    import av

    h, w = frames[0][0].shape
    cc = av.CodecContext.create("libx264", "w")
    cc.width, cc.height, cc.pix_fmt, cc.time_base = w, h, "yuv420p", Fraction(1, 25)
    cc.thread_count = 1
    cc.options = {"preset": preset, "profile": "baseline", "x264-params": (
        f"qp={qp}:keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0:threads=1:sliced-threads=0:slices=1"
        + ("" if deblock else ":no-deblock=1"))}
    out = b""
    for i, (y, cb, cr) in enumerate(frames):
        fr = av.VideoFrame.from_ndarray(np.concatenate([y, cb.reshape(-1, w), cr.reshape(-1, w)]), format="yuv420p")
        fr.pts = i
        out += b"".join(bytes(p) for p in cc.encode(fr))
    out += b"".join(bytes(p) for p in cc.encode(None))
    with av.open(io.BytesIO(out), format="h264") as f:
        ys = [np.frombuffer(fr.planes[0], np.uint8).reshape(fr.planes[0].height, -1)[:, :w] for fr in f.decode(video=0)]
    return out, ys


def vistok(frames: list[list[np.ndarray]], qp: int, gop: int) -> tuple[bytes, list[np.ndarray]]:
    h, w = frames[0][0].shape
    pics, states = Encoder(qp, search=8).encode(frames, gop)
    return syntax.stream(pics, w // 16, h // 16, w, h, qp), [s.planes[0] for s in states]


def matched_ratio(clips: list[list[list[np.ndarray]]], qps: list[int], keyint: int, deblock: bool) -> dict:
    """vistok's picture bytes over x264's at vistok's PSNR, per vistok QP (mean over the clips)."""
    ratios, points = [], []
    for qp in qps:
        mine = [vistok(c, qp, keyint) for c in clips]
        p = y_psnr([y for _, ys in mine for y in ys], [f[0] for c in clips for f in c])
        sweep = []
        for q in range(max(0, qp - 12), min(51, qp + 12) + 1, 2):
            theirs = [x264(c, q, keyint, deblock) for c in clips]
            sweep.append((y_psnr([y for _, ys in theirs for y in ys], [f[0] for c in clips for f in c]),
                          np.log(sum(picture_bytes(s) for s, _ in theirs))))
        sweep.sort()
        x_bytes = float(np.exp(np.interp(p, [a for a, _ in sweep], [b for _, b in sweep])))
        ratios.append(sum(picture_bytes(s) for s, _ in mine) / x_bytes)
        points.append({"qp": qp, "psnr": round(p, 2), "ratio": round(ratios[-1], 3)})
    return {"ratio": round(float(np.mean(ratios)), 3), "points": points}


def pans(photos: list[np.ndarray], n: int, side: int = 128) -> list[list[list[np.ndarray]]]:
    out = []
    for img in photos:
        frames = [img[2 * i : 2 * i + side, 3 * i : 3 * i + side] for i in range(n)]
        out.append([to_ycbcr(np.ascontiguousarray(f)) for f in frames])
    return out


def speed(side: int, reps: int) -> dict:
    """Frames per second on one core: vistok's `encode` (pixels -> tokens, what `vistok shard` runs; an I
    picture's decisions in C) and, apart, writing the tokens as an H.264 stream (`to_h264`, Python); libx264
    (veryfast, baseline, the same QP) from planes to bytes in one context. The same frame over and over."""
    import av

    from vistok.tokenize import AvcCodec

    img = np.ascontiguousarray(photos_256(1)[0][:side, :side])
    codec = AvcCodec(qp=28)
    rec = codec.encode(img)
    t0 = time.perf_counter()
    for _ in range(reps):
        codec.encode(img)
    mine = reps / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(max(1, reps // 10)):
        codec.to_h264(rec)
    stream = max(1, reps // 10) / (time.perf_counter() - t0)
    y, cb, cr = to_ycbcr(img)
    cc = av.CodecContext.create("libx264", "w")
    cc.width, cc.height, cc.pix_fmt, cc.time_base, cc.thread_count = side, side, "yuv420p", Fraction(1, 25), 1
    cc.options = {"preset": "veryfast", "profile": "baseline", "x264-params": (
        "qp=28:keyint=1:min-keyint=1:scenecut=0:bframes=0:threads=1:sliced-threads=0:slices=1")}
    frame = np.concatenate([y, cb.reshape(-1, side), cr.reshape(-1, side)])
    n = reps * 10
    t0 = time.perf_counter()
    for i in range(n):
        fr = av.VideoFrame.from_ndarray(frame, format="yuv420p")
        fr.pts = i
        cc.encode(fr)
    cc.encode(None)
    theirs = n / (time.perf_counter() - t0)
    return {f"fps_{side}": round(mine, 1), f"stream_fps_{side}": round(stream, 1), f"x264_fps_{side}": round(theirs, 1),
            f"speed_ratio_{side}": round(mine / theirs, 4)}


def run() -> dict:
    few = smoke()
    photos = photos_256(2 if few else None)
    stills = [[to_ycbcr(p)] for p in photos]
    qps = [28] if few else [24, 30, 36]
    out = {"intra_vs_x264": matched_ratio(stills, qps, 1, True)["ratio"],
           "intra_vs_x264_no_deblock": matched_ratio(stills, qps, 1, False)["ratio"],
           "p_vs_x264": matched_ratio(pans(photos, 2 if few else 8), qps, 8, True)["ratio"]}
    for side in (128,) if few else (128, 256):
        out.update(speed(side, 2 if few else 100))
    return out


if __name__ == "__main__":
    full = {}
    photos = photos_256()
    stills = [[to_ycbcr(p)] for p in photos]
    for name, clips, keyint, deblock in (("intra", stills, 1, True), ("intra_no_deblock", stills, 1, False),
                                         ("p_frames", pans(photos, 8), 8, True)):
        full[name] = matched_ratio(clips, [22, 26, 30, 34, 38], keyint, deblock)
        print(json.dumps({name: full[name]}), flush=True)
    for side in (128, 256):
        print(json.dumps(speed(side, 100)), flush=True)
