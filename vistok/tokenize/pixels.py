"""`--codec pixels`: pixel values as tokens, the simplest tokenization (iGPT's, and RandSAC's Table 1 baseline).

A token is one channel value of one pixel (gray images: one per pixel, `--gray` at sharding; colour: R, G, B
one after another), quantized to `--bits` (8: exact; fewer: its top bits, decoded to the middle of the bin).
Units are single pixels, or P x P patches with `--unit P` (RandSAC's units of 4 x 4 pixels on 32 x 32 images),
so every spatial, segment and any-order mode of vistok applies; a unit's tokens are consecutive, its pixels in
raster order. An image whose sides are not multiples of P is padded by edge replication (the padding is
tokenized, and cropped away when decoding).

With a palette (`--palette K`: K colours fitted by k-means on the sources' training images, as iGPT's 512;
`vistok.train.tokenizer.fit_palette`), a pixel is one token instead: the index of its nearest colour (squared
RGB distance), decoded to that colour. The colours are part of the codec's config, so a dataset names the
palette that made it (`--palette DATASET` reuses another dataset's).

Axes: frame, y, x (the pixel), c (the channel); every one is known in advance (the layout is fixed).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from vistok.errors import CodecError, InputError
from vistok.media.sources import DEFAULT_MAX_PIXELS
from vistok.record import TokenRecord
from vistok.tokenize.base import (
    CliOption,
    Codec,
    FrameLayout,
    Vocabulary,
    as_pixels,
    register_codec,
)
from vistok.tokenize.learned import CodeCells


@register_codec
class PixelCodec(Codec):
    codec_id = "pixels"
    summary = "channel values or palette indices"
    axes = ("frame", "y", "x", "c")
    known_axes = ("frame", "y", "x", "c")
    geometry_keys = ("height", "width", "components")
    single_token_cells = True

    cli_options = (
        CliOption("bits", int, "pixels: bits kept of each channel value, 1..8 (8: exact).", bounds=(1, 8)),
        CliOption("unit", int, "pixels: a unit is a P x P patch of pixels (1: one pixel).", bounds=(1, 64)),
        CliOption("palette", str, "pixels: one token per pixel, the nearest of K colours fitted by k-means on the "
                  "sources' training images (iGPT: 512), or DATASET: the palette of that pixels dataset."),
    )

    def __init__(self, bits: int = 8, unit: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS,
                 palette: list[list[int]] | None = None):
        if not 1 <= int(bits) <= 8:
            raise CodecError(f"pixels: --bits must be 1..8, got {bits}")
        if not 1 <= int(unit) <= 64:
            raise CodecError(f"pixels: --unit must be 1..64 pixels, got {unit}")
        self.bits, self.unit, self.max_pixels = int(bits), int(unit), int(max_pixels)
        self.palette = None if palette is None else np.asarray(palette, dtype=np.int64)
        if self.palette is not None:
            if self.palette.ndim != 2 or self.palette.shape[1] != 3 or not 2 <= len(self.palette) <= 65536 or (
                    self.palette.min() < 0 or self.palette.max() > 255):
                raise CodecError("pixels: a palette is 2..65536 RGB colours of 0..255 (fit one with --palette K)")
            self._vocab = Vocabulary.build((), [("value", len(self.palette), "a palette colour")])
        else:
            self._vocab = Vocabulary.build((), [("value", 1 << self.bits, f"a channel value's top {self.bits} bits")])
        self._value0 = self._vocab.range("value").start

    def get_config(self) -> dict[str, Any]:
        cfg = {"id": self.codec_id, "bits": self.bits, "unit": self.unit, "max_pixels": self.max_pixels}
        return cfg if self.palette is None else {**cfg, "palette": self.palette.tolist()}

    @property
    def vocab(self) -> Vocabulary:
        return self._vocab

    def _padded(self, meta: dict) -> tuple[int, int, int]:
        """(units down, units across, channels) of a frame."""
        P = self.unit
        channels = 1 if self.palette is not None else int(meta.get("components", 3))  # tokens per pixel
        return -(-int(meta["height"]) // P), -(-int(meta["width"]) // P), channels

    def encode(self, media: np.ndarray, key: str = "sample", meta: dict | None = None) -> TokenRecord:
        img = as_pixels(media)
        h, w = img.shape[:2]
        if h * w > self.max_pixels:
            raise InputError(f"image of {w}x{h} pixels exceeds the limit of {self.max_pixels}")
        img = img[..., None] if img.ndim == 2 else img
        if self.palette is not None:
            img = nearest_colour(np.broadcast_to(img, (h, w, 3)), self.palette)[..., None]
        meta = {**(meta or {}), "height": h, "width": w, "components": 3 if self.palette is not None else img.shape[2]}
        gh, gw, C = self._padded(meta)
        P = self.unit
        img = np.pad(img, ((0, gh * P - h), (0, gw * P - w), (0, 0)), mode="edge")
        values = img.reshape(gh, P, gw, P, C).transpose(0, 2, 1, 3, 4).reshape(-1)  # unit by unit, raster inside
        if self.palette is None:
            values = values >> (8 - self.bits)
        tokens = values.astype(np.int64) + self._value0  # (uint8 + offset would wrap)
        return TokenRecord(key, tokens.astype(self._vocab.dtype), meta)

    def decode_frame(self, record: TokenRecord) -> np.ndarray:
        gh, gw, C = self._padded(record.meta)
        P = self.unit
        t = np.asarray(record.tokens).astype(np.int64) - self._value0
        if t.size != gh * gw * P * P * C or (t.size and (t.min() < 0 or t.max() >= self._vocab.range("value").stop -
                                                        self._value0)):
            raise CodecError(f"record {record.key}: expected {gh * gw * P * P * C} pixel tokens")
        if self.palette is not None:
            img = t.reshape(gh, gw, P, P).transpose(0, 2, 1, 3).reshape(gh * P, gw * P)
            return self.palette[img[: int(record.meta["height"]), : int(record.meta["width"])]].astype(np.uint8)
        half = (1 << (7 - self.bits)) if self.bits < 8 else 0  # the middle of a value's bin
        values = ((t << (8 - self.bits)) + half).astype(np.uint8)
        img = values.reshape(gh, gw, P, P, C).transpose(0, 2, 1, 3, 4).reshape(gh * P, gw * P, C)
        img = img[: int(record.meta["height"]), : int(record.meta["width"])]
        return img[..., 0] if C == 1 else img

    def frame_tokens(self, record: TokenRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        units, coords = _places(self.unit, *self._padded(record.meta))
        return units, coords, np.arange(units.size, dtype=np.int64)

    def frame_layout(self, meta: dict) -> FrameLayout:
        """One cell per channel value, its place known in advance."""
        gh, gw, C = self._padded(meta)
        units, coords = _places(self.unit, gh, gw, C)
        return FrameLayout((gh, gw), (self.unit, self.unit), units, coords, units.size,
                           lambda: CodeCells(self._vocab.size, self._value0, coords))


def nearest_colour(img: np.ndarray, palette: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """(H, W) index of each pixel's nearest palette colour (squared RGB distance; the lower index on a tie)."""
    flat = img.reshape(-1, 3).astype(np.int64)
    sq = (palette**2).sum(axis=1)
    out = np.empty(len(flat), dtype=np.int64)
    for a in range(0, len(flat), chunk):
        part = flat[a : a + chunk]
        out[a : a + chunk] = np.argmin(sq[None, :] - 2 * part @ palette.T, axis=1)  # |p - c|^2 less |p|^2
    return out.reshape(img.shape[:2])


@lru_cache(maxsize=16)
def _places(P: int, gh: int, gw: int, C: int) -> tuple[np.ndarray, np.ndarray]:
    """Each token's unit and coordinates (frame 0, y, x, c), in the codec's order: unit by unit, raster inside."""
    y, x, c = np.indices((gh * P, gw * P, C))

    def order(a: np.ndarray) -> np.ndarray:
        return a.reshape(gh, P, gw, P, C).transpose(0, 2, 1, 3, 4).reshape(-1)

    y, x, c = order(y), order(x), order(c)
    units = (y // P) * gw + x // P
    coords = np.stack([np.zeros_like(y), y, x, c], axis=1).astype(np.int32)
    units.setflags(write=False)
    coords.setflags(write=False)
    return units, coords
