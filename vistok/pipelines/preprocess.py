"""Resizing and seeded random crops, applied to decoded RGB images before a codec sees them."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from vistok.errors import UsageError
from vistok.pipelines.sources import BACKGROUND, DEFAULT_MAX_PIXELS

RESIZE_MODES = ("center-crop", "pad", "short-side", "none")


@dataclass(frozen=True)
class Preprocess:
    """`size`: target side S (0 = keep). `resize`: how an image becomes S-sized:
    center-crop (short side to S, centre S×S), pad (long side to S, padded to S×S with `BACKGROUND`),
    short-side (short side to S, aspect kept), none (untouched).
    `crops` > 0: instead, that many seeded random S×S crops at native resolution (images whose short side
    is below S are first upscaled to S). Same seed and key -> same crops.
    """

    size: int = 0
    resize: str = "center-crop"
    crops: int = 0
    seed: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise UsageError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.size < 0 or self.crops < 0:
            raise UsageError("--size and --crops must be >= 0")
        if self.crops and not self.size:
            raise UsageError("--crops needs --size (the side of each square crop)")

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def samples_per_input(self) -> int:
        return max(self.crops, 1)

    def identity(self) -> bool:
        return self.size == 0 or (self.resize == "none" and not self.crops)

    def apply(self, img: np.ndarray, key: str) -> list[tuple[str, np.ndarray]]:
        """-> [(key suffix, pixels)]: one entry, or one per crop (suffix ``_c000``...)."""
        if self.crops:
            img = _scale_short_side(img, self.size, only_up=True)
            rng = np.random.default_rng(_seed(self.seed, key))
            h, w = img.shape[:2]
            ys = rng.integers(0, h - self.size + 1, size=self.crops)
            xs = rng.integers(0, w - self.size + 1, size=self.crops)
            s = self.size
            return [(f"_c{i:03d}", np.ascontiguousarray(img[y : y + s, x : x + s])) for i, (y, x) in enumerate(zip(ys, xs))]
        if self.identity():
            return [("", img)]
        s = self.size
        if self.resize == "short-side":
            return [("", _scale_short_side(img, s))]
        if self.resize == "center-crop":
            img = _scale_short_side(img, s)
            h, w = img.shape[:2]
            y, x = (h - s) // 2, (w - s) // 2
            return [("", np.ascontiguousarray(img[y : y + s, x : x + s]))]
        # pad: long side to s, centred on the background colour
        h, w = img.shape[:2]
        scale = s / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        small = _resize(img, nh, nw)
        out = np.empty((s, s, 3), dtype=np.uint8)
        out[:] = BACKGROUND
        y, x = (s - nh) // 2, (s - nw) // 2
        out[y : y + nh, x : x + nw] = small
        return [("", out)]


def _seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "little")


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    if img.shape[:2] == (h, w):
        return img
    # reducing_gap: libjpeg-style box pre-reduction, then a bicubic pass (fast and alias-free when shrinking)
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC, reducing_gap=3.0))


def _scale_short_side(img: np.ndarray, s: int, only_up: bool = False) -> np.ndarray:
    h, w = img.shape[:2]
    short = min(h, w)
    if short == s or (only_up and short >= s):
        return img
    scale = s / short
    return _resize(img, max(s, round(h * scale)), max(s, round(w * scale)))
