"""Helpers shared by the benchmarks: timing and the embedded photos as 256x256 inputs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np


def smoke() -> bool:
    """`make bench-quick` (`run.py --smoke` sets VISTOK_BENCH_SMOKE=1): every benchmark at its smallest size, so
    that CI can run them all in a few minutes; its figures mean little."""
    return os.environ.get("VISTOK_BENCH_SMOKE") == "1"


def photos_256(n: int | None = None) -> list[np.ndarray]:
    from vistok.media.preprocess import Preprocess
    from vistok.media.sources import decode_image, sample_files

    pre = Preprocess(size=256, resize="center-crop")
    files = sample_files()[:n] if n else sample_files()
    return [pre.apply(decode_image(p.read_bytes()), "k")[0][1] for p in files]


def per_item_seconds(fn: Callable[[object], object], items: list, min_time: float = 1.0) -> float:
    """Best-of-3 mean seconds per item of `fn` over `items`, each round repeated until `min_time`."""
    best = float("inf")
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while True:
            for it in items:
                fn(it)
            n += len(items)
            dt = time.perf_counter() - t0
            if dt >= min_time / 3:
                break
        best = min(best, dt / n)
    return best
