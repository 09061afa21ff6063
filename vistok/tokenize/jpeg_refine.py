"""`--codec jpeg-refine --refine 10,20,40,80`: JPEG quality as a coarse-to-fine ladder of tokens.

The brainstorm's progressive refinement (start at quality 10, add 20, 40, 80, learn the deltas): for every
8 x 8 block, the coarsest quality's quantized zigzag coefficients, then for each finer quality k each
coefficient's *refinement*: its value quantized at q_k less the value a decoder predicts from level k-1,
the coarse reconstruction requantized at step k, round(v_{k-1} Q_{k-1} / Q_k). Decoding adds the
predictions back level by level, so the last level is exactly the coefficients `--codec jpeg --quality
q_last` gives for the same image (`vistok decode --out x.jpg` writes that JPEG).

Every level has a bounded range per frequency, which the grammar enforces: a first-level value is within
2048 / Q (an 8 x 8 DCT of 8-bit samples is at most 2048 in magnitude), a refinement within Q_{k-1} / (2 Q_k)
+ 1 (both values round within half a step). Two layouts, as the plain codec has:
- dense (default): every coefficient of every level is one token of the value range [-M, M] (M the largest
  bound), a cell of its own; every axis is known in advance.
- rle: a cell is one level of one block, its nonzero values in zigzag order, each a run token (zeros
  skipped) then a value token, closed by EOB; the grammar offers a value only within its frequency's bound.
  The frequency of the next token is then not known in advance (like JPEG's rle).

Axes: frame, level (0 = coarsest), component, block_y, block_x, freq (64 for an EOB). Unit: the MCU.
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
    summary = "a JPEG quality ladder, each level refining the coarser"
    axes = ("frame", "level", "component", "block_y", "block_x", "freq")
    known_axes = axes
    single_token_cells = True
    cli_options = (
        CliOption("refine", str, "jpeg-refine: qualities coarse to fine (10,20,40,80): the first level's "
                  "coefficients, then each finer quality's refinement of them.", parse=_qualities),
        CliOption("subsampling", str, "jpeg: chroma subsampling.", tuple(dct.SUBSAMPLING)),
        CliOption("layout", str, "jpeg-refine: dense (default) or rle (a cell per level of a block: runs to its "
                  "nonzero values, then EOB).", ("rle", "dense")),
    )

    def __init__(self, refine: list[int] | tuple[int, ...] = (10, 20, 40, 80), subsampling: str = "420",
                 max_pixels: int = DEFAULT_MAX_PIXELS, layout: str = "dense"):
        q = _qualities(list(refine))
        if not 1 <= len(q) <= 8 or any(not 1 <= v <= 100 for v in q) or any(b <= a for a, b in zip(q, q[1:])):
            raise CodecError(f"--refine takes 1 to 8 increasing qualities in 1..100, got {','.join(map(str, q))}")
        if subsampling not in dct.SUBSAMPLING:
            raise CodecError(f"jpeg subsampling must be one of 444, 422, 420, got {subsampling!r}")
        if layout not in ("dense", "rle"):
            raise CodecError(f"jpeg-refine: --layout takes dense or rle, got {layout!r}")
        self.qualities, self.subsampling, self.max_pixels, self.layout_name = q, subsampling, int(max_pixels), layout
        if layout == "rle":  # the frequency of a cell's next token is what its runs make it
            self.known_axes, self.single_token_cells = self.axes[:-1], False
        self.tables = np.stack([dct.quality_tables(v) for v in q])  # (levels, 2, 64) natural order
        zz = self.tables[:, :, dct.ZIGZAG].astype(np.int64)  # (levels, 2, 64) zigzag order
        self.bounds = np.empty_like(zz)  # each level's largest magnitude, per table and frequency
        self.bounds[0] = -(-2048 // zz[0])
        self.bounds[1:] = zz[:-1] // (2 * zz[1:]) + 1
        self.zz, self.M = zz, int(self.bounds.max())
        ranges = [("value", 2 * self.M + 1, "a level's coefficient or refinement")]
        if layout == "rle":
            ranges += [("run", 64, "zeros before the next nonzero value of a level of a block"),
                       ("eob", 1, "the end of a level of a block")]
        self._vocab = Vocabulary.build((), ranges)
        self._zero = self._vocab.range("value").start + self.M  # the token of value 0

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({FILE_BYTES, JPEG_FILE})

    def get_config(self) -> dict[str, Any]:
        out = {"id": self.codec_id, "refine": list(self.qualities), "subsampling": self.subsampling,
               "max_pixels": self.max_pixels}
        return {**out, "layout": "rle"} if self.layout_name == "rle" else out  # dense configs as they were

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
        return TokenRecord(key, self.encode_refined(grid, refined), {**(meta or {}), **_geometry(grid)})

    def encode_refined(self, grid: dct.BlockGrid, refined: np.ndarray) -> np.ndarray:
        """(levels, n_blocks, 64) first level and refinements -> tokens: block-major, levels, zigzag inside."""
        cells = refined.transpose(1, 0, 2).reshape(-1, 64)
        if self.layout_name == "rle":
            tokens = np.array(self._rle(cells), dtype=np.int64)
        else:
            tokens = cells.reshape(-1) + self._zero
        return tokens.astype(self._vocab.dtype)

    def _rle(self, cells: np.ndarray) -> list[int]:
        run0, eob, out = self._vocab.range("run").start, self._vocab.range("eob").start, []
        for row in cells:
            last = -1
            for k in np.flatnonzero(row).tolist():
                out += [run0 + k - last - 1, self._zero + int(row[k])]
                last = k
            out.append(eob)
        return out

    def _bounds(self, grid: dct.BlockGrid) -> np.ndarray:
        return self.bounds[:, np.minimum(grid.comp, 1)]

    def refined_of(self, record: TokenRecord) -> tuple[dct.BlockGrid, np.ndarray]:
        """A record -> (grid, (levels, n_blocks, 64) first level and refinements), checked against the ranges."""
        grid = blocks_of(record.meta, f"record {record.key}")
        t = np.asarray(record.tokens).astype(np.int64)
        if self.layout_name == "rle":
            refined = self._unrle(t, grid.n_blocks * self.levels, record.key)
        elif t.size != grid.n_blocks * self.levels * 64:
            raise CodecError(f"record {record.key}: expected {grid.n_blocks * self.levels * 64} tokens, got {t.size}")
        else:
            refined = t - self._zero
        refined = refined.reshape(grid.n_blocks, self.levels, 64).transpose(1, 0, 2)
        if (np.abs(refined) > self._bounds(grid)).any():
            raise CodecError(f"record {record.key}: a value outside its level's range")
        return grid, refined

    def _unrle(self, t: np.ndarray, n_cells: int, key: str) -> np.ndarray:
        """rle tokens -> (n_cells, 64) values, every cell closed by its EOB."""
        run0, eob = self._vocab.range("run").start, self._vocab.range("eob").start
        out, cell, pos, i = np.zeros((n_cells, 64), np.int64), 0, 0, 0
        while i < t.size and cell < n_cells:
            if t[i] == eob:
                cell, pos, i = cell + 1, 0, i + 1
                continue
            if not (run0 <= t[i] < run0 + 64) or i + 1 >= t.size or pos + t[i] - run0 > 63:
                raise CodecError(f"record {key}: a malformed run at token {i}")
            pos += int(t[i] - run0)
            out[cell, pos], pos, i = t[i + 1] - self._zero, pos + 1, i + 2
        if cell != n_cells or i != t.size:
            raise CodecError(f"record {key}: expected {n_cells} levels of blocks, the tokens hold {cell}")
        return out

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
        """dense: a token per cell, in cell order (the places are the geometry's: cached, not rebuilt per record);
        rle: each token's cell (a level of a block) and its frequency, as the grammar reads them."""
        g = blocks_of(record.meta, f"record {record.key}")
        units, coords = _cell_places(g.height, g.width, g.ncomp, g.subsampling, self.levels)
        if self.layout_name == "dense":
            return units, coords, np.arange(units.size, dtype=np.int64)
        run0, eob = self._vocab.range("run").start, self._vocab.range("eob").start
        t = np.asarray(record.tokens).astype(np.int64)
        is_eob = t == eob
        cells = np.concatenate([[0], np.cumsum(is_eob)[:-1]])  # a token's cell: EOBs before it
        first = np.flatnonzero(np.concatenate([[True], is_eob[:-1]]))  # each cell's first token
        step = np.where((t >= run0) & (t < run0 + 64), t - run0, 0)  # a run moves the place; a value places
        value = ~is_eob & ((t < run0) | (t >= run0 + 64))
        adv = np.where(value, 1, step)
        pos = np.cumsum(adv) - adv  # places moved before each token, in the record
        base = np.repeat(pos[first], np.diff(np.append(first, t.size)))
        freq = np.where(is_eob, 64, pos - base + np.where(value, 0, step))
        rows = 64 * cells  # the cell's first coefficient place among the geometry's
        out = coords[np.minimum(rows, coords.shape[0] - 1)].copy()
        out[:, -1] = freq
        return units[np.minimum(rows, units.size - 1)], out, cells

    def frame_layout(self, meta: dict) -> FrameLayout:
        """One cell per coefficient of every level: block-major, each block's levels in order, zigzag inside."""
        g = blocks_of(meta, "record")
        h, v = dct.factors(int(meta["components"]), str(meta["subsampling"]))[0]
        units, coords = _cell_places(g.height, g.width, g.ncomp, g.subsampling, self.levels)
        bound = self._bounds(g).transpose(1, 0, 2).reshape(-1)  # each coefficient's range, in cell order
        if self.layout_name == "rle":  # a cell per level of a block: its first coefficient's place, less freq
            return FrameLayout(g.mcu_grid, (8 * v, 8 * h), units[::64], coords[::64, :-1], 2 * units.size,
                               lambda: RangeRunCells(self._vocab, self._zero, bound.reshape(-1, 64), coords[::64]))
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


class RangeRunCells(CellGrammar):
    """rle: one level of one block per cell, a run then a value (|value| within its frequency's bound, never 0)
    per nonzero coefficient, then EOB."""

    def __init__(self, vocab: Vocabulary, zero: int, bound: np.ndarray, coords: np.ndarray):
        self.coords, self.bound, self.zero = coords, bound, zero  # bound: (cells, 64)
        self.run0, self.eob = vocab.range("run").start, vocab.range("eob").start
        self.runs = [np.zeros(vocab.size, bool) for _ in range(65)]  # runs reaching at most 63 - pos, and EOB
        for n, m in enumerate(self.runs):
            m[self.run0 : self.run0 + n] = True
            m[self.eob] = True
        self.values: dict[int, np.ndarray] = {}
        for b in np.unique(bound).tolist():
            self.values[b] = np.zeros(vocab.size, bool)
            self.values[b][zero - b : zero + b + 1] = True
            self.values[b][zero] = False

    def begin(self, cell: int) -> None:
        self.cell, self.pos, self.at, self.open = cell, 0, -1, True

    def allowed(self) -> np.ndarray:
        if self.at >= 0:
            return self.values[int(self.bound[self.cell, self.at])]
        return self.runs[64 - self.pos]

    def step(self, tok: int) -> np.ndarray:
        out = self.coords[self.cell].copy()
        if self.at >= 0:  # a value
            out[-1], self.pos, self.at = self.at, self.at + 1, -1
        elif tok == self.eob:
            out[-1], self.open = 64, False
        else:
            self.at = self.pos + tok - self.run0
            out[-1] = self.at
        return out
