"""Resizing and seeded random crops, applied to decoded RGB images before a codec sees them."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from vistok.errors import UsageError
from vistok.media.sources import BACKGROUND, DEFAULT_MAX_PIXELS
from vistok.media.video import VideoConfig
from vistok.record import crop_key

RESIZE_MODES = ("center-crop", "pad", "short-side", "border", "none")


@dataclass(frozen=True)
class Preprocess:
    """`size`: target side S (0 = keep). `resize`: how an image becomes S-sized:
    center-crop (short side to S, centre S×S), pad (long side to S, padded to S×S with `BACKGROUND`),
    short-side (short side to S, aspect kept), border (no resampling: the image centred on S×S, sides
    shorter than S padded by repeating the edge pixels, longer ones centre-cropped; 28×28 Fashion-MNIST at
    S = 32 keeps its pixels and black surround), none (untouched).
    `crops` > 0: instead, that many seeded random S×S crops at native resolution (images whose short side
    is below S are first upscaled to S). Same seed and key -> same crops.
    """

    size: int = 0
    resize: str = "center-crop"
    crops: int = 0
    seed: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    # videos (see `vistok.media.video`): frame rate, frames per record, clip spacing, clips per video
    fps: float = 0.0
    clip_len: int = 1
    clip_stride: int = 0
    max_clips: int = 0
    video_timeout: float = 120.0
    gray: bool = False  # hand the codec one luma channel ((H, W) pixels) instead of RGB

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise UsageError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.size < 0 or self.crops < 0:
            raise UsageError("--size and --crops must be >= 0")
        if self.crops and not self.size:
            raise UsageError("--crops needs --size (the side of each square crop)")
        self.video()  # validates the video options

    def to_json(self) -> dict:
        out = asdict(self)
        if not self.gray:  # datasets made before the option keep their configuration (and hash)
            del out["gray"]
        return out

    def video(self) -> VideoConfig:
        return VideoConfig(fps=self.fps, clip_len=self.clip_len, clip_stride=self.clip_stride,
                           max_clips=self.max_clips, timeout=self.video_timeout)

    def frame(self, img, key: str) -> np.ndarray:
        """One video frame -> resized pixels (crops do not apply to video: frames are centre-cropped)."""
        if isinstance(img, np.ndarray) and self.identity() and not self.crops and not self.gray:
            return img
        if self.crops:
            return Preprocess(size=self.size, resize="center-crop", gray=self.gray).apply(img, key)[0][1]
        return self.apply(img, key)[0][1]

    @property
    def samples_per_input(self) -> int:
        return max(self.crops, 1)

    def identity(self) -> bool:
        return self.size == 0 or (self.resize == "none" and not self.crops)

    @property
    def draft(self) -> int:
        """The size a JPEG decoder may shrink to while decoding (0: decode at full size)."""
        return self.size if self.size and not self.crops and self.resize in ("center-crop", "short-side") else 0

    def apply(self, img, key: str) -> list[tuple[str, np.ndarray]]:
        """PIL image (or RGB array) of the input `key` -> [(record key, pixels)]: one entry keyed `key`, or
        one per crop (`vistok.record.crop_key`), the crops seeded by `seed` and `key`; (H, W) luma with `gray`."""
        items = self._shape(img, key)
        if not self.gray:
            return items
        from PIL import Image

        return [(k, np.asarray(Image.fromarray(a).convert("L")) if a.ndim == 3 else a) for k, a in items]

    def _shape(self, img, key: str) -> list[tuple[str, np.ndarray]]:
        from PIL import Image

        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        w, h = img.size
        s = self.size
        if self.crops:
            if min(w, h) < s:
                img = _resize(img, *_short_side_dims(w, h, s))
            arr = np.asarray(img)
            rng = np.random.default_rng(_seed(self.seed, key))
            hh, ww = arr.shape[:2]
            ys = rng.integers(0, hh - s + 1, size=self.crops)
            xs = rng.integers(0, ww - s + 1, size=self.crops)
            return [(crop_key(key, i), np.ascontiguousarray(arr[y : y + s, x : x + s])) for i, (y, x) in enumerate(zip(ys, xs))]
        if self.identity():
            return [(key, np.asarray(img))]
        if self.resize == "short-side":
            return [(key, np.asarray(_resize(img, *_short_side_dims(w, h, s))))]
        if self.resize == "center-crop":  # one resampling pass straight from the centre box
            side = min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            return [(key, np.asarray(_resize(img, s, s, box)))]
        if self.resize == "border":
            arr = np.asarray(img)
            y0, x0 = max(0, (h - s) // 2), max(0, (w - s) // 2)
            arr = arr[y0 : y0 + s, x0 : x0 + s]
            py, px = s - arr.shape[0], s - arr.shape[1]
            pad = ((py // 2, py - py // 2), (px // 2, px - px // 2)) + ((0, 0),) * (arr.ndim - 2)
            return [(key, np.ascontiguousarray(np.pad(arr, pad, mode="edge")))]
        scale = s / max(w, h)  # pad: long side to s, centred on the background colour
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        out = Image.new("RGB", (s, s), BACKGROUND)
        out.paste(_resize(img, nw, nh), ((s - nw) // 2, (s - nh) // 2))
        return [(key, np.asarray(out))]


def _seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "little")


def _short_side_dims(w: int, h: int, s: int) -> tuple[int, int]:
    scale = s / min(w, h)
    return max(s, round(w * scale)), max(s, round(h * scale))


def _resize(img, w: int, h: int, box=None):
    from PIL import Image

    if img.size == (w, h) and box is None:
        return img
    # reducing_gap: a box pre-reduction, then bicubic (fast, and alias-free when shrinking)
    return img.resize((w, h), Image.BICUBIC, box=box, reducing_gap=3.0)
