"""Orderings per second on 32x32 and 64x64 unit grids (the permutation over units, as the loader computes
it per sample), and the wavelet codec against JPEG quality 20 at a matched PSNR on the same photos."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import photos_256
from vistok.tokenize import JpegCodec, WaveletCodec
from vistok.tokenize.base import Positions
from vistok.tokenize.orders import parse_order

ORDERS = ["raster", "snake", "zorder", "hilbert", "spiral", "random", "randsac:11", "randsac:11,5", "freq-major"]


def orders_per_second(min_time: float = 0.3) -> dict:
    out = {}
    rng = np.random.default_rng(0)
    for side in (32, 64):
        n = side * side
        inp = Positions(units=np.arange(n), grid=(side, side), coords=np.zeros((n, 5), np.int64),
                         axes=("frame", "component", "block_y", "block_x", "freq"))
        for name in ORDERS:
            f = parse_order(name)
            f(inp, rng)
            k, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < min_time:
                f(inp, rng)
                k += 1
            out[f"{name}@{side}x{side}"] = round(k / (time.perf_counter() - t0))
    return out


def _psnr(a, b) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _entropy_bits(streams: list[np.ndarray], vocab: int) -> float:
    """Mean bits per image under the set's own unigram distribution (a zeroth-order entropy coder)."""
    counts = np.bincount(np.concatenate(streams).astype(np.int64), minlength=vocab).astype(np.float64)
    p = counts / counts.sum()
    logp = np.where(p > 0, np.log2(np.where(p > 0, p, 1)), 0)
    return float(-np.mean([logp[s.astype(np.int64)].sum() for s in streams]))


def wavelet_vs_jpeg() -> dict:
    from vistok.train.evaluate import jpeg_scan_bytes

    imgs = photos_256()
    jpeg = JpegCodec(quality=20)
    jrecs = [jpeg.encode(im) for im in imgs]
    jpsnr = float(np.mean([_psnr(im, jpeg.decode(r)) for im, r in zip(imgs, jrecs)]))

    def wave(step):
        c = WaveletCodec(step=step, chroma="420", levels=4)
        recs = [c.encode(im) for im in imgs]
        return c, recs, float(np.mean([_psnr(im, c.decode(r)) for im, r in zip(imgs, recs)]))

    lo, hi = 1.0, 128.0  # bisection on the step (PSNR falls as the step grows)
    for _ in range(12):
        mid = (lo * hi) ** 0.5
        if wave(mid)[2] > jpsnr:
            lo = mid
        else:
            hi = mid
    c, wrecs, wpsnr = wave(lo)
    return {
        "jpeg_q20_psnr": round(jpsnr, 2),
        "jpeg_tokens_per_image": round(float(np.mean([len(r) for r in jrecs])), 1),
        "jpeg_huffman_bits_per_image": round(float(np.mean([8 * jpeg_scan_bytes(jpeg.to_jpeg(r)) for r in jrecs])), 1),
        "jpeg_unigram_bits_per_image": round(_entropy_bits([r.tokens for r in jrecs], jpeg.vocab.size), 1),
        "wavelet_step": round(lo, 2),
        "wavelet_psnr": round(wpsnr, 2),
        "wavelet_tokens_per_image": round(float(np.mean([len(r) for r in wrecs])), 1),
        "wavelet_unigram_bits_per_image": round(_entropy_bits([r.tokens for r in wrecs], c.vocab.size), 1),
    }


def run() -> dict:
    return {**orders_per_second(), **wavelet_vs_jpeg()}


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
