"""Codecs at one quality: each codec's decoded held-out PSNR, and the setting that brings it within ±1 dB of a
target where the codec has one to turn.

A study compares tokenizations on the same images; comparing them at different fidelities would compare
fidelities. `match` tunes the knob each codec has (JPEG quality, wavelet step, pixel bits) on the study's
held-out images, as the trainer's split holds them out (`heldout_hash` of the record key), and says which
codecs cannot reach the target: a trained tokenizer's PSNR is what it is, a palette's too.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from vistok.errors import InputError
from vistok.media.preprocess import Preprocess
from vistok.media.sources import expand_sources, load_image, read_input
from vistok.record import heldout_hash, parse_input_id
from vistok.tokenize.base import get_codec

TOLERANCE = 1.0  # dB either side of the target


def heldout_images(sources: list[str], pre: Preprocess, heldout: float, limit: int = 256) -> list[np.ndarray]:
    """The first `limit` held-out images of the sources (by input order), preprocessed as the study's datasets
    are: the trainer's test images, read without sharding them."""
    out: list[np.ndarray] = []
    for iid in expand_sources(sources):
        try:
            img = load_image(read_input(iid)[0])
        except InputError as exc:
            print(f"skipping {iid}: {exc}", file=sys.stderr)
            continue
        out += [a for k, a in pre.apply(img, parse_input_id(iid).key) if heldout_hash(k) < heldout]
        if len(out) >= limit:
            return out[:limit]
    return out


def measure(config: dict[str, Any], images: list[np.ndarray]) -> dict[str, Any]:
    """Decoded PSNR (of the images' pooled squared error), mean tokens per image and vocabulary of a codec."""
    codec = get_codec(config)
    err, n, tokens = 0.0, 0, 0
    for i, img in enumerate(images):
        rec = codec.encode(img, f"psnr-{i}", {})
        out = _like(np.asarray(codec.decode(rec)), img).astype(np.float64)
        err += float(((out - img.astype(np.float64)) ** 2).sum())
        n += img.size
        tokens += len(rec.tokens)
    mse = err / max(n, 1)
    return {"psnr": round(10 * math.log10(255**2 / max(mse, 1e-12)), 2), "tokens_per_image": round(tokens / len(images), 1),
            "vocabulary": codec.vocab.size}


def _like(out: np.ndarray, img: np.ndarray) -> np.ndarray:
    """A decoded image in the input's channels: a codec that decodes gray input to RGB (a learned tokenizer)
    is read as gray the way `Preprocess(gray=True)` makes gray (PIL's luma)."""
    if out.ndim == 3 and img.ndim == 2:
        from PIL import Image

        return np.asarray(Image.fromarray(out.astype(np.uint8)).convert("L"))
    return out.reshape(img.shape)


# codec -> (knob, the values to search, ascending in fidelity); a continuous knob is searched by bisection
KNOBS: dict[str, tuple[str, list[Any]]] = {
    "avc": ("qp", list(range(51, -1, -1))),
    "jpeg": ("quality", list(range(1, 101))),
    "pixels": ("bits", list(range(1, 9))),
    "wavelet": ("step", [round(2 ** (e / 4), 3) for e in range(40, -9, -1)]),  # 1024 .. 0.21, finer last
}


def match(config: dict[str, Any], images: list[np.ndarray], target: float) -> dict[str, Any]:
    """`config` with its knob set so that the held-out PSNR is the nearest to `target` the knob reaches, and
    what that gives: {config, psnr, tokens_per_image, vocabulary, matched (within TOLERANCE), note}."""
    knob = KNOBS.get(config["id"])
    if knob is None or (config["id"] == "pixels" and config.get("palette")):
        got = {"config": config, **measure(config, images)}
        why = "its PSNR is fixed by its tokenizer" if knob is None else "a palette's PSNR is fixed by its colours"
        return _verdict(got, target, why)
    name, values = knob
    at: dict[int, dict[str, Any]] = {}

    def psnr_at(i: int) -> float:
        if i not in at:
            cfg = {**config, name: values[i]}
            at[i] = {"config": cfg, **measure(cfg, images)}
        return at[i]["psnr"]

    i = _first_reaching(psnr_at, len(values), target)
    near = [j for j in (i - 1, i) if 0 <= j < len(values)]
    best = min(near, key=lambda j: abs(psnr_at(j) - target))
    return _verdict(at[best], target, f"its {name} reaches {at[min(at)]['psnr']}..{at[max(at)]['psnr']} dB here")


def _first_reaching(psnr_at: Callable[[int], float], n: int, target: float) -> int:
    """The first index whose PSNR reaches `target` (the last when none does), by bisection: PSNR rises with the
    index."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if psnr_at(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return min(lo, n - 1)


def _verdict(got: dict[str, Any], target: float, why: str) -> dict[str, Any]:
    got["matched"] = abs(got["psnr"] - target) <= TOLERANCE
    if not got["matched"]:
        got["note"] = f"{got['config']['id']} cannot reach {target:g} ± {TOLERANCE:g} dB: {why} (got {got['psnr']} dB)"
    return got
