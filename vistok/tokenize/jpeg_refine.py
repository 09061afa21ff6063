"""`--codec jpeg-refine --refine 10,20,40,80`: JPEG quality as a coarse-to-fine ladder of tokens.

The brainstorm's progressive refinement (start at quality 10, add 20, 40, 80, learn the deltas): for every
8 x 8 block, the coarsest quality's quantized zigzag coefficients, then for each finer quality k each
coefficient's *refinement*: its value quantized at q_k less the value a decoder predicts from level k-1,
the coarse reconstruction requantized at step k, round(v_{k-1} Q_{k-1} / Q_k). Decoding adds the
predictions back level by level, so the last level is exactly the coefficients `--codec jpeg --quality
q_last` gives for the same image (`vistok decode --out x.jpg` writes that JPEG).

Every coefficient has a fixed place (a dense layout: one token per cell, no escapes), and every level a
bounded range per frequency, which the grammar enforces: a first-level value is within 2048 / Q (an 8 x 8
DCT of 8-bit samples is at most 2048 in magnitude), a refinement within Q_{k-1} / (2 Q_k) + 1 (both values
round within half a step). The vocabulary is one value range, [-M, M], M the largest bound.

Axes: frame, level (0 = coarsest), component, block_y, block_x, freq; all known in advance. Unit: the MCU.
Canonical order: block by block (MCU-interleaved), each block's levels coarse to fine, zigzag inside;
`--order quality-major` sends every block's first level, then every refinement of level 1, ... (the
curriculum), and `--parallel scales` predicts a level at a time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from vistok.errors import CodecError, InputError
from vistok.media.sources import DEFAULT_MAX_PIXELS
from vistok.record import TokenRecord
from vistok.tokenize import dct, jpegfile
from vistok.tokenize.base import (
    FILE_BYTES,
    JPEG_FILE,
    CellGrammar,
    CliOption,
    Codec,
    FrameLayout,
    Vocabulary,
    as_pixels,
    register_codec,
)
from vistok.tokenize.jpeg import blocks_of
from vistok.tokenize.orders import Order, OrderResult, _by_axis, register_order


def _qualities(text: str | list) -> list[int]:
    try:
        return [int(q) for q in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise CodecError(f"--refine takes comma-separated qualities (10,20,40,80), got {text!r}") from None


@register_codec
class JpegRefineCodec(Codec):
    codec_id = "jpeg-refine"
    axes = ("frame", "level", "component", "block_y", "block_x", "freq")
    known_axes = axes
    single_token_cells = True
    cli_options = (
        CliOption("refine", str, "jpeg-refine: qualities coarse to fine (10,20,40,80): the first level's "
                  "coefficients, then each finer quality's refinement of them.", parse=_qualities),
        CliOption("subsampling", str, "jpeg: chroma subsampling.", tuple(dct.SUBSAMPLING)),
    )

    def __init__(self, refine: list[int] | tuple[int, ...] = (10, 20, 40, 80), subsampling: str = "420",
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        q = _qualities(list(refine))
        if not 1 <= len(q) <= 8 or any(not 1 <= v <= 100 for v in q) or any(b <= a for a, b in zip(q, q[1:])):
            raise CodecError(f"--refine takes 1 to 8 increasing qualities in 1..100, got {','.join(map(str, q))}")
        if subsampling not in dct.SUBSAMPLING:
            raise CodecError(f"jpeg subsampling must be one of 444, 422, 420, got {subsampling!r}")
        self.qualities, self.subsampling, self.max_pixels = q, subsampling, int(max_pixels)
        self.tables = np.stack([dct.quality_tables(v) for v in q])  # (levels, 2, 64) natural order
        zz = self.tables[:, :, dct.ZIGZAG].astype(np.int64)  # (levels, 2, 64) zigzag order
        self.bounds = np.empty_like(zz)  # each level's largest magnitude, per table and frequency
        self.bounds[0] = -(-2048 // zz[0])
        self.bounds[1:] = zz[:-1] // (2 * zz[1:]) + 1
        self.zz, self.M = zz, int(self.bounds.max())
        self._vocab = Vocabulary.build((), [("value", 2 * self.M + 1, "a level's coefficient or refinement")])
        self._zero = self._vocab.range("value").start + self.M  # the token of value 0

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({FILE_BYTES, JPEG_FILE})

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "refine": list(self.qualities), "subsampling": self.subsampling,
                "max_pixels": self.max_pixels}

    @property
    def vocab(self) -> Vocabulary:
        return self._vocab

    @property
    def levels(self) -> int:
        return len(self.qualities)

    # --- pixels <-> the levels' coefficients ------------------------------------------------------
    def level_coefficients(self, media: np.ndarray) -> tuple[dct.BlockGrid, np.ndarray]:
        """Pixels -> (grid, (levels, n_blocks, 64) zigzag coefficients quantized at each quality)."""
        img = as_pixels(media)
        if img.dtype != np.uint8:
            raise InputError(f"jpeg-refine takes uint8 pixels, got {img.dtype}")
        if img.shape[0] * img.shape[1] > self.max_pixels:
            raise InputError(f"image of {img.shape[1]}x{img.shape[0]} pixels exceeds the limit of {self.max_pixels}")
        sub = self.subsampling if img.ndim == 3 else "444"
        out = [dct.forward(img, t, sub) for t in self.tables]
        return out[0][0], np.stack([c for _, c in out]).astype(np.int64)

    def _steps(self, grid: dct.BlockGrid) -> np.ndarray:
        """(levels, n_blocks, 64) each coefficient's quantizer step at each level (its component's table)."""
        return self.zz[:, np.minimum(grid.comp, 1)]

    def refinements(self, grid: dct.BlockGrid, values: np.ndarray) -> np.ndarray:
        """(levels, n_blocks, 64) quantized values -> the first level and each finer level's refinement."""
        q = self._steps(grid)
        out = values.copy()
        out[1:] = values[1:] - _predict(values[:-1], q[:-1], q[1:])
        return out

    def values(self, grid: dct.BlockGrid, refined: np.ndarray) -> np.ndarray:
        """The inverse of `refinements`: each level's quantized values, level by level."""
        q, out = self._steps(grid), refined.copy()
        for k in range(1, len(out)):
            out[k] = refined[k] + _predict(out[k - 1], q[k - 1], q[k])
        return out

    # --- records ------------------------------------------------------------------------------------
    def encode(self, media: np.ndarray, key: str = "sample", meta: dict | None = None) -> TokenRecord:
        grid, values = self.level_coefficients(media)
        refined = self.refinements(grid, values)
        if (np.abs(refined) > self._bounds(grid)).any():
            raise CodecError("a refinement outside its level's range (a quantizer the bounds do not cover)")
        m = {**(meta or {}), **_geometry(grid)}
        tokens = refined.transpose(1, 0, 2).reshape(-1) + self._zero  # block-major, levels, zigzag
        return TokenRecord(key, tokens.astype(self._vocab.dtype), m)

    def _bounds(self, grid: dct.BlockGrid) -> np.ndarray:
        return self.bounds[:, np.minimum(grid.comp, 1)]

    def refined_of(self, record: TokenRecord) -> tuple[dct.BlockGrid, np.ndarray]:
        """A record -> (grid, (levels, n_blocks, 64) first level and refinements), checked against the ranges."""
        grid = blocks_of(record.meta, f"record {record.key}")
        t = np.asarray(record.tokens).astype(np.int64)
        if t.size != grid.n_blocks * self.levels * 64:
            raise CodecError(f"record {record.key}: expected {grid.n_blocks * self.levels * 64} tokens, got {t.size}")
        refined = (t - self._zero).reshape(grid.n_blocks, self.levels, 64).transpose(1, 0, 2)
        if (np.abs(refined) > self._bounds(grid)).any():
            raise CodecError(f"record {record.key}: a value outside its level's range")
        return grid, refined

    def level_values(self, record: TokenRecord, level: int = -1) -> tuple[dct.BlockGrid, np.ndarray]:
        """A record -> (grid, (n_blocks, 64) quantized zigzag coefficients at one level; default the finest)."""
        grid, refined = self.refined_of(record)
        return grid, self.values(grid, refined)[level]

    def decode_frame(self, record: TokenRecord, level: int = -1) -> np.ndarray:
        grid, coefs = self.level_values(record, level)
        return dct.inverse(grid, coefs.astype(np.int32), self.tables[level])

    def to_jpeg(self, record: TokenRecord, optimize: bool = True) -> bytes:
        """The finest level as a standard JPEG file: exactly `--codec jpeg --quality q_last`'s coefficients."""
        grid, coefs = self.level_values(record)
        return jpegfile.write_jpeg(grid, coefs.astype(np.int32), self.tables[-1], None, optimize=optimize)

    # --- layout ---------------------------------------------------------------------------------------
    def frame_tokens(self, record: TokenRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A token per cell, in cell order (the places are the geometry's: cached, not rebuilt per record)."""
        g = blocks_of(record.meta, f"record {record.key}")
        units, coords = _cell_places(g.height, g.width, g.ncomp, g.subsampling, self.levels)
        return units, coords, np.arange(units.size, dtype=np.int64)

    def frame_layout(self, meta: dict) -> FrameLayout:
        """One cell per coefficient of every level: block-major, each block's levels in order, zigzag inside."""
        g = blocks_of(meta, "record")
        h, v = dct.factors(int(meta["components"]), str(meta["subsampling"]))[0]
        units, coords = _cell_places(g.height, g.width, g.ncomp, g.subsampling, self.levels)
        bound = self._bounds(g).transpose(1, 0, 2).reshape(-1)  # each cell's range, in cell order
        return FrameLayout(g.mcu_grid, (8 * v, 8 * h), units, coords, units.size,
                           lambda: RangeCells(self._vocab.size, self._zero, bound, coords))


@register_order("quality-major")
class QualityMajor(Order):
    summary = "jpeg-refine: every block's coarsest level, then each finer level's refinements (the curriculum)"
    axis, scales = "level", True

    def __call__(self, inp, rng) -> OrderResult:
        return _by_axis(inp, "level")


@lru_cache(maxsize=64)
def _cell_places(height: int, width: int, ncomp: int, subsampling: str, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """(units, coordinates) of every cell of a geometry, read-only: block-major, levels, zigzag inside."""
    g = dct.block_grid(height, width, ncomp, subsampling)
    n = g.n_blocks * levels * 64
    b = np.repeat(np.arange(g.n_blocks), levels * 64)
    level = np.tile(np.repeat(np.arange(levels), 64), g.n_blocks)
    freq = np.tile(np.arange(64), g.n_blocks * levels)
    coords = np.stack([np.zeros(n, np.int64), level, g.comp[b], g.by[b], g.bx[b], freq], axis=1).astype(np.int32)
    units = g.unit[b].astype(np.int64)
    for a in (units, coords):
        a.setflags(write=False)
    return units, coords


def _predict(coarse: np.ndarray, q_coarse: np.ndarray, q_fine: np.ndarray) -> np.ndarray:
    """A finer level's prediction from the coarser one: the coarse reconstruction requantized, rounded half away
    from zero in integers (the same on every machine)."""
    num = coarse * q_coarse
    return np.sign(num) * ((2 * np.abs(num) + q_fine) // (2 * q_fine))


def _geometry(grid: dct.BlockGrid) -> dict[str, Any]:
    return {"height": grid.height, "width": grid.width, "components": grid.ncomp, "subsampling": grid.subsampling}


class RangeCells(CellGrammar):
    """One token per cell, its value within the cell's bound: |value| <= bound[cell]."""

    def __init__(self, vocab_size: int, zero: int, bound: np.ndarray, coords: np.ndarray):
        self.coords, self.bound = coords, bound
        self.masks = {}  # bound -> its mask: a ladder has a few distinct bounds, asked once per token
        for b in np.unique(bound).tolist():
            self.masks[b] = np.zeros(vocab_size, bool)
            self.masks[b][zero - b : zero + b + 1] = True
        self.cell = 0

    def begin(self, cell: int) -> None:
        self.cell, self.open = cell, True

    def allowed(self) -> np.ndarray:
        return self.masks[int(self.bound[self.cell])]

    def step(self, tok: int) -> np.ndarray:
        self.open = False
        return self.coords[self.cell]
