"""`--codec jpeg`: quantized JPEG DCT coefficients as tokens.

Blocks are walked in canonical MCU-interleaved order (see `dct.BlockGrid`); each block's 64 coefficients
in zigzag order. Two token layouts, both lossless at the coefficient level:

``rle`` (default) — per block: one DC token, one token per nonzero AC coefficient carrying
(zero-run before it, level), then EOB. Values outside the direct ranges go through an escape:
``ESC`` (DC) or ``AC_ESC(run)`` followed by two RAW byte tokens holding the value as 16-bit offset
binary (value + 32768), so every int16 coefficient is exact with a bounded vocabulary.

``dense`` — per block: 64 value tokens (zigzag order), same escape for out-of-range values.

DC is coded as the absolute value (default) or as the difference to the previous block of the same
component in canonical order (``dc="dpcm"``, as JPEG's entropy coder does).

``temporal="delta"`` (absolute DC; `temporal.py`) codes a clip's frame t > 1 as the integer difference of
its quantized coefficients from frame t-1's, block by block (``keyframe=K``: restarting every K frames).
rle codes a block whose coded coefficients are all zero as the one token SKIP (in frame 1, a block that is
zero itself); dense keeps 64 tokens a block, so a token's place stays its coefficient's and an unchanged
block is 64 zeros (the vocabulary is dense's own).

Coordinate axes: frame, component, block_y, block_x (within the component's block grid), freq
(zigzag index 0..63; 64 for EOB). Escape RAW tokens carry the coordinates of their coefficient.
Unit: the MCU (raster index over the MCU grid).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vistok.errors import CodecError, InputError
from vistok.media.sources import DEFAULT_MAX_PIXELS
from vistok.record import TokenRecord
from vistok.tokenize import dct, jpegfile
from vistok.tokenize.base import (
    ESCAPE_OFFSET,
    FILE_BYTES,
    JPEG_FILE,
    N_SPECIALS,
    SIDE_INFO,
    CliOption,
    Codec,
    FrameLayout,
    Vocabulary,
    as_pixels,
    assemble_events,
    register_codec,
)
from vistok.tokenize.jpeg_grammar import AC_LEVEL, DC_MAX, DENSE_MAX, EOB_FREQ, RUNS, JpegCells, jpeg_tokens
from vistok.tokenize.temporal import CLI_OPTIONS as TEMPORAL_OPTIONS
from vistok.tokenize.temporal import TemporalDelta


@register_codec
class JpegCodec(TemporalDelta, Codec):
    codec_id = "jpeg"
    summary = "DCT coefficients"
    axes = ("frame", "component", "block_y", "block_x", "freq")
    known_axes = ("frame", "component", "block_y", "block_x")  # rle; dense: every axis (see __init__)
    layout_hint = "--layout dense gives every coefficient a fixed place"
    cli_options = (
        CliOption("quality", int, "jpeg: quality (IJG table scaling), 1..100.", bounds=(1, 100)),
        CliOption("subsampling", str, "jpeg: chroma subsampling.", tuple(dct.SUBSAMPLING)),
        CliOption("layout", str, "jpeg, wavelet: token layout, rle (sparse runs) or dense (a token per coefficient).", ("rle", "dense")),
        CliOption("dc", str, "jpeg: DC coded as an absolute value or as the difference to the previous block.", ("abs", "dpcm")),
        CliOption("transcode", str, "jpeg: JPEG inputs always re-quantized from pixels, never (keep the file's coefficients), or auto.", ("always", "never", "auto")),
        *TEMPORAL_OPTIONS,
    )

    def __init__(self, quality: int = 20, subsampling: str = "420", layout: str = "rle", dc: str = "abs",
                 transcode: str = "always", baseline: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
                 temporal: str = "none", keyframe: int = 0):
        if layout not in ("rle", "dense"):
            raise CodecError(f"jpeg layout must be 'rle' or 'dense', got {layout!r}")
        if dc not in ("abs", "dpcm"):
            raise CodecError(f"jpeg dc must be 'abs' or 'dpcm', got {dc!r}")
        if subsampling not in dct.SUBSAMPLING:
            raise CodecError(f"jpeg subsampling must be one of 444, 422, 420, got {subsampling!r}")
        if transcode not in ("always", "never", "auto"):
            raise CodecError(f"transcode must be always, never or auto, got {transcode!r}")
        if not 1 <= int(quality) <= 100:
            raise CodecError(f"jpeg quality must be in 1..100, got {quality}")
        self._temporal_init(temporal, keyframe)
        if temporal == "delta" and dc != "abs":
            raise CodecError("--temporal delta codes differences of absolute DC values: use --dc abs")
        self._split = layout == "rle" and temporal != "delta"  # rle blocks as a DC cell and an AC cell
        self.quality, self.subsampling, self.token_layout, self.dc = int(quality), subsampling, layout, dc
        self.transcode, self.baseline, self.max_pixels = transcode, bool(baseline), int(max_pixels)
        self.qtables = dct.quality_tables(self.quality, self.baseline)
        if layout == "dense":  # a cell per coefficient: its frequency is known before its token
            self.known_axes, self.single_token_cells = self.axes, True
        t = self._tokens = jpeg_tokens(layout, temporal == "delta" and layout == "rle")  # dense deltas: no SKIP
        self._skip = t.skip
        self._vocab = t.vocab
        self._eob, self._esc, self._raw = t.eob, t.esc, t.raw
        self._dc0, self._ac, self._acesc, self._val0 = t.dc0, t.ac, t.acesc, t.val0

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({FILE_BYTES, JPEG_FILE, SIDE_INFO})

    def get_config(self) -> dict[str, Any]:
        out = {"id": self.codec_id, "quality": self.quality, "subsampling": self.subsampling, "layout": self.token_layout,
               "dc": self.dc, "transcode": self.transcode, "baseline": self.baseline, "max_pixels": self.max_pixels}
        return {**out, **self._temporal_config()}

    @property
    def vocab(self) -> Vocabulary:
        return self._vocab

    def side_info(self) -> dict[str, Any]:
        """SIDE_INFO: quantization tables (natural order; luma, chroma) of records that carry no `qt` of their own."""
        return {"qtables": self.qtables.astype(int).tolist(), "table_index": [0, 1, 1]}

    def collected_side_info(self) -> dict[str, Any]:
        return {}

    def load_side_info(self, side: dict[str, Any]) -> None:
        """The tables are the configuration's: nothing to take back."""

    # --- geometry and tables of one record ------------------------------------------------------
    def record_blocks(self, record: TokenRecord) -> dct.BlockGrid:
        return blocks_of(record.meta, f"record {record.key}")

    def record_qtables(self, record: TokenRecord) -> np.ndarray:
        qt = record.meta.get("qt")
        return self.qtables if qt is None else np.asarray(qt, dtype=np.uint16).reshape(-1, 64)

    def record_table_index(self, record: TokenRecord) -> list[int] | None:
        return record.meta.get("qt_index")

    # --- media <-> coefficients -----------------------------------------------------------------
    def encode(self, media: np.ndarray, key: str = "sample", meta: dict | None = None) -> TokenRecord:
        return self.from_coefficients(*self.frame_coefficients_of(as_pixels(media)), key, meta)

    def frame_coefficients_of(self, media: np.ndarray) -> tuple[dct.BlockGrid, np.ndarray]:
        """Pixels -> (block grid, (n_blocks, 64) quantized zigzag coefficients) at the configured tables."""
        if media.dtype != np.uint8 or media.ndim not in (2, 3) or (media.ndim == 3 and media.shape[2] != 3):
            raise InputError(f"jpeg codec takes uint8 (H, W) or (H, W, 3) pixels, got {media.dtype} {media.shape}")
        h, w = media.shape[:2]
        if h * w > self.max_pixels:
            raise InputError(f"image of {w}x{h} pixels exceeds the limit of {self.max_pixels}")
        return dct.forward(media, self.qtables, self.subsampling if media.ndim == 3 else "444")

    @staticmethod
    def geometry_meta(grid: dct.BlockGrid) -> dict[str, Any]:
        return {"height": grid.height, "width": grid.width, "components": grid.ncomp, "subsampling": grid.subsampling}

    def from_coefficients(self, grid: dct.BlockGrid, coefs: np.ndarray, key: str, meta: dict | None = None,
                          qtables: np.ndarray | None = None, table_index: list[int] | None = None) -> TokenRecord:
        m = {**(meta or {}), **self.geometry_meta(grid)}
        if qtables is not None and not np.array_equal(qtables[:2], self.qtables[: len(qtables)]):
            m["qt"] = np.asarray(qtables).astype(int).tolist()
            m["qt_index"] = list(table_index or [0, 1, 1][: grid.ncomp])
        tokens = self.tokenize(grid, coefs)
        return TokenRecord(key, tokens, m)

    def encode_bytes(self, data: bytes, key: str, meta: dict | None = None) -> TokenRecord | None:
        if self.transcode == "always":
            return None
        is_jpeg = data[:3] == b"\xff\xd8\xff"
        if not is_jpeg:
            if self.transcode == "never":
                raise InputError("not a JPEG file, and --transcode never forbids re-encoding pixels")
            return None
        info, comps, qt, tbl = jpegfile.read_coefficients(data, self.max_pixels)
        grid = dct.block_grid(info.height, info.width, info.ncomp, info.subsampling)
        if [c.shape[:2] for c in comps] != list(grid.comp_blocks):
            raise InputError(f"unexpected coefficient array shapes {[c.shape for c in comps]} for {info}")
        coefs = dct.from_components(grid, comps).astype(np.int32)
        if self.baseline and qt.max() > 255:
            raise InputError("quantization table entries above 255 (not baseline); use --no-baseline to keep them")
        return self.from_coefficients(grid, coefs, key, meta, qtables=qt, table_index=tbl)

    def coefficients(self, record: TokenRecord) -> tuple[dct.BlockGrid, np.ndarray]:
        grid = self.record_blocks(record)
        return grid, self.coefficients_only(grid, record.tokens)

    def decode_frame(self, record: TokenRecord) -> np.ndarray:
        return self.frame_pixels(record, *self.coefficients(record))

    def frame_pixels(self, record: TokenRecord, grid: dct.BlockGrid, coefs: np.ndarray) -> np.ndarray:
        qt = self.record_qtables(record)
        idx = self.record_table_index(record)
        if idx is not None:
            qt = qt[idx]
        return dct.inverse(grid, coefs, qt)

    def to_jpeg(self, record: TokenRecord, optimize: bool = True) -> bytes:
        """The record as a standard JPEG file (coefficients written exactly)."""
        grid, coefs = self.coefficients(record)
        return jpegfile.write_jpeg(grid, coefs, self.record_qtables(record), self.record_table_index(record),
                                   optimize=optimize)

    # --- coefficients <-> tokens ----------------------------------------------------------------
    def _dc_values(self, grid: dct.BlockGrid, dc: np.ndarray, forward: bool) -> np.ndarray:
        if self.dc == "abs":
            return dc
        out = dc.copy()
        for c in range(grid.ncomp):
            sel = grid.comp == c
            out[sel] = np.diff(dc[sel], prepend=0) if forward else np.cumsum(dc[sel])
        return out

    def _native_consts(self) -> np.ndarray:
        return np.array([self._eob, self._esc, self._raw, self._dc0, DC_MAX, self._ac, self._acesc, AC_LEVEL],
                        dtype=np.int32)

    def tokenize(self, grid: dct.BlockGrid, coefs: np.ndarray) -> np.ndarray:
        """(n_blocks, 64) canonical zigzag coefficients -> 1-D tokens (all-zero blocks as SKIP with deltas)."""
        tokens = self._tokenize(grid, coefs)
        if self._skip < 0:
            return tokens
        zero = ~np.asarray(coefs).any(axis=1)  # such a block is exactly DC(0) EOB
        if not zero.any():
            return tokens
        ends = np.flatnonzero(tokens == self._eob)[zero]
        out = tokens.copy()
        out[ends] = self._skip
        return np.delete(out, ends - 1)

    def _expand(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SKIP -> DC(0) EOB; returns the stream and where each original token went."""
        t = np.asarray(tokens)
        sk = np.flatnonzero(t == self._skip) if self._skip >= 0 else np.zeros(0, np.int64)
        if not sk.size:
            return t, np.arange(t.size)
        out = np.insert(t, sk + 1, self._eob)
        at = np.arange(t.size) + np.searchsorted(sk, np.arange(t.size), side="left")  # shifted by earlier SKIPs
        out[at[sk]] = self._dc0
        return out, at

    def _tokenize(self, grid: dct.BlockGrid, coefs: np.ndarray) -> np.ndarray:
        if dct.NATIVE and self.token_layout == "rle":
            c32 = np.ascontiguousarray(coefs, dtype=np.int32)
            out = np.empty(grid.n_blocks * (4 + 63 * 3), dtype=np.uint16)
            try:
                n = dct._native.rle_tokens(c32, np.ascontiguousarray(grid.comp), grid.ncomp, self.dc == "dpcm",
                                           self._native_consts(), out)
            except ValueError as exc:
                raise CodecError(str(exc)) from None
            return out[:n].copy()
        coefs = np.asarray(coefs, dtype=np.int64)
        n = coefs.shape[0]
        dc = self._dc_values(grid, coefs[:, 0], forward=True)
        if self.token_layout == "dense":
            vals = coefs.copy()
            vals[:, 0] = dc
            vals = vals.ravel()
            esc = np.abs(vals) > DENSE_MAX
            prim = np.where(esc, self._esc, vals + self._val0)
            return self._assemble(prim, esc, vals)
        # Events per block: column 0 = DC, 1..63 = nonzero AC, 64 = EOB; np.nonzero keeps them in stream order.
        ev = np.empty((n, 65), dtype=bool)
        ev[:, 0] = True
        ev[:, 1:64] = coefs[:, 1:] != 0
        ev[:, 64] = True
        b, c = np.nonzero(ev)
        prev = np.empty_like(c)
        prev[0] = 0
        prev[1:] = c[:-1]
        run = c - prev - 1
        vals = coefs[b, np.minimum(c, 63)]
        is_dc, is_eob = c == 0, c == 64
        vals[is_dc] = dc
        big = np.where(is_dc, np.abs(vals) > DC_MAX, np.abs(vals) > AC_LEVEL) & ~is_eob
        lvl_idx = np.where(vals < 0, vals + AC_LEVEL, vals + AC_LEVEL - 1)
        prim = np.where(is_dc, np.where(big, self._esc, self._dc0 + vals),
                        np.where(is_eob, self._eob,
                                 np.where(big, self._acesc + run, self._ac + run * (2 * AC_LEVEL) + lvl_idx)))
        return self._assemble(prim, big, vals)

    def _assemble(self, prim: np.ndarray, esc: np.ndarray, vals: np.ndarray) -> np.ndarray:
        return assemble_events(prim, esc, vals, self._raw, self._vocab.dtype)

    def _parse(self, grid: dct.BlockGrid, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Vectorized parse of a token stream: per primary token its block, zigzag position and value."""
        t = np.asarray(tokens).astype(np.int64)
        if t.size == 0:
            raise CodecError("empty token stream")
        if t.min() < N_SPECIALS or t.max() >= self._vocab.size:
            bad = t[(t < N_SPECIALS) | (t >= self._vocab.size)][0]
            raise CodecError(f"token {bad} is a special or outside the vocabulary of {self._vocab.size}")
        is_raw = t >= self._raw
        prim_idx = np.flatnonzero(~is_raw)
        p = t[prim_idx]
        if self.token_layout == "rle":
            esc = (p == self._esc) | ((p >= self._acesc) & (p < self._acesc + RUNS))
        else:
            esc = p == self._esc
        esc_pos = prim_idx[esc]
        expect = np.concatenate([esc_pos + 1, esc_pos + 2])
        if np.count_nonzero(is_raw) != expect.size or (esc_pos.size and (
                esc_pos.max() + 2 >= t.size or not is_raw[expect].all())):
            raise CodecError("malformed escape: every escape must be followed by exactly two raw tokens")
        escval = np.zeros(p.size, dtype=np.int64)
        if esc_pos.size:
            escval[esc] = ((t[esc_pos + 1] - self._raw) << 8) + (t[esc_pos + 2] - self._raw) - ESCAPE_OFFSET
        owner = np.cumsum(~is_raw) - 1  # primary index owning each token
        n = grid.n_blocks
        if self.token_layout == "dense":
            if p.size != n * 64:
                raise CodecError(f"dense stream has {p.size} coefficients, expected {n * 64} ({n} blocks)")
            vals = np.where(esc, escval, p - self._val0)
            pos = np.tile(np.arange(64), n)
            block = np.repeat(np.arange(n), 64)
            return dict(block=block, pos=pos, vals=vals, owner=owner, is_coef=np.ones(p.size, bool))
        is_eob = p == self._eob
        is_dc = (p == self._esc) | ((p >= self._dc0 - DC_MAX) & (p <= self._dc0 + DC_MAX))
        if not (is_dc[0] and is_eob[-1] and np.array_equal(is_dc[1:], is_eob[:-1])):
            raise CodecError("malformed block structure: each block must be DC, AC..., EOB")
        is_ac = ~(is_dc | is_eob)
        a = p - self._ac
        is_acesc = is_ac & (p >= self._acesc)
        run = np.where(is_acesc, p - self._acesc, a // (2 * AC_LEVEL))
        li = a % (2 * AC_LEVEL)
        level = np.where(li < AC_LEVEL, li - AC_LEVEL, li - AC_LEVEL + 1)
        vals = np.where(is_dc, np.where(esc, escval, p - self._dc0), np.where(is_acesc, escval, level))
        block = np.cumsum(is_dc) - 1
        if block[-1] + 1 != n:
            raise CodecError(f"stream has {block[-1] + 1} blocks, expected {n}")
        inc = np.where(is_ac, run + 1, 0)
        cum = np.cumsum(inc)
        pos = cum - cum[np.flatnonzero(is_dc)][block]
        if is_ac.any() and pos[is_ac].max() > 63:
            raise CodecError("zero runs overflow a block (more than 63 AC coefficients)")
        pos = np.where(is_eob, EOB_FREQ, pos)
        return dict(block=block, pos=pos, vals=vals, owner=owner, is_coef=~is_eob)

    def coefficients_only(self, grid: dct.BlockGrid, tokens: np.ndarray) -> np.ndarray:
        """1-D tokens -> (n_blocks, 64) int32 canonical zigzag coefficients (the decode hot path)."""
        if dct.NATIVE and self.token_layout == "rle":
            t = self._expand(tokens)[0]
            if t.size and (int(t.max()) >= self._vocab.size or int(t.min()) < N_SPECIALS):
                raise CodecError("a special or out-of-vocabulary token inside the stream")
            out = np.empty((grid.n_blocks, 64), dtype=np.int32)
            try:
                dct._native.rle_parse(np.ascontiguousarray(t, dtype=np.uint16), grid.n_blocks,
                                      np.ascontiguousarray(grid.comp), self.dc == "dpcm", self._native_consts(), out)
            except ValueError as exc:
                raise CodecError(f"malformed token stream: {exc}") from None
            return out
        return self.detokenize(grid, tokens)[0]

    def detokenize(self, grid: dct.BlockGrid, tokens: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """1-D tokens -> ((n_blocks, 64) int32 canonical zigzag coefficients, parse arrays)."""
        parsed = self._parse(grid, self._expand(tokens)[0])
        coefs = np.zeros((grid.n_blocks, 64), dtype=np.int64)
        sel = parsed["is_coef"]
        coefs[parsed["block"][sel], parsed["pos"][sel]] = parsed["vals"][sel]
        coefs[:, 0] = self._dc_values(grid, coefs[:, 0], forward=False)
        return coefs.astype(np.int32), parsed

    # --- layout -------------------------------------------------------------------------------
    def frame_tokens(self, record: TokenRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        grid = self.record_blocks(record)
        expanded, at = self._expand(record.tokens)
        parsed = self._parse(grid, expanded)
        b = parsed["block"][parsed["owner"]][at]  # a SKIP sits where its block's DC would
        freq = parsed["pos"][parsed["owner"]][at]
        coords = np.empty((b.size, len(self.axes)), dtype=np.int32)
        coords[:, 0] = 0
        coords[:, 1] = grid.comp[b]
        coords[:, 2] = grid.by[b]
        coords[:, 3] = grid.bx[b]
        coords[:, 4] = freq
        b64 = b.astype(np.int64)
        if self.token_layout == "dense":
            cells = b64 * 64 + freq
        else:
            cells = b64 * 2 + (freq > 0) if self._split else b64
        return grid.unit[b], coords, cells

    def frame_layout(self, meta: dict) -> FrameLayout:
        """rle: two cells per block, its DC (DC or ESC raw raw) and its AC run ending in EOB (with temporal
        deltas one, since SKIP codes both); dense: one per coefficient (block-major, zigzag inside)."""
        g = blocks_of(meta, "record")
        h, v = dct.factors(int(meta["components"]), str(meta["subsampling"]))[0]
        blocks = np.stack([np.zeros(g.n_blocks, np.int64), g.comp, g.by, g.bx], axis=1)
        per = 64 if self.token_layout == "dense" else 2 if self._split else 1
        units, coords = np.repeat(g.unit, per).astype(np.int64), np.repeat(blocks, per, axis=0)
        if self.token_layout == "dense":
            coords = np.concatenate([coords, np.tile(np.arange(64), g.n_blocks)[:, None]], axis=1)
        tokens = self._tokens
        dc = (np.arange(units.size) % per == 0) if per > 1 else None
        return FrameLayout(g.mcu_grid, (8 * v, 8 * h), units, coords, g.n_blocks * 64 * 3 + 2,
                           lambda: JpegCells(tokens, g, self._split), dc,
                           (lambda toks: self._thumbnail(g, toks)) if per > 1 else None)

    def _thumbnail(self, grid: dct.BlockGrid, tokens: np.ndarray) -> np.ndarray:
        """The DC cells' tokens (canonical order) -> the DC image per unit: (rows, cols, components), each
        component's dequantized DC averaged over the unit's blocks of that component (the configuration's
        tables, so the thumbnail is a function of the tokens and the codec alone)."""
        t = np.asarray(tokens, dtype=np.int64)
        prim = np.flatnonzero(t < self._raw)
        if prim.size != grid.n_blocks:
            raise CodecError(f"{prim.size} DC values for {grid.n_blocks} blocks")
        base = self._val0 if self.token_layout == "dense" else self._dc0
        vals = t[prim] - base
        esc = np.flatnonzero(t[prim] == self._esc)
        if esc.size:
            at = prim[esc]
            vals[esc] = ((t[at + 1] - self._raw) << 8) + (t[at + 2] - self._raw) - ESCAPE_OFFSET
        dc = self._dc_values(grid, vals, forward=False) * self.qtables[np.minimum(grid.comp, 1), 0]
        rows, cols = grid.mcu_grid
        key = grid.unit.astype(np.int64) * grid.ncomp + grid.comp
        total = np.bincount(key, weights=dc, minlength=rows * cols * grid.ncomp)
        count = np.bincount(key, minlength=rows * cols * grid.ncomp)
        return (total / np.maximum(count, 1)).reshape(rows, cols, grid.ncomp)


def blocks_of(meta: dict, what: str) -> dct.BlockGrid:
    """The block grid of a geometry (`what` names the record in errors)."""
    try:
        return dct.block_grid(int(meta["height"]), int(meta["width"]), int(meta["components"]), str(meta["subsampling"]))
    except KeyError as exc:
        raise CodecError(f"{what}: metadata lacks {exc}") from None
