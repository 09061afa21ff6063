"""The wavelet token language (see `wavelet.py`): band geometry, vocabulary, and the grammar inside one cell."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vistok.tokenize.base import ESCAPE_OFFSET, CellGrammar, Vocabulary, token_mask

VMAX = 1023
RUNS = 16
LEVEL = 15


@dataclass(frozen=True)
class Band:
    comp: int
    level: int
    band: int  # 0 LL, 1 H, 2 V, 3 D
    h: int
    w: int
    start: int  # offset in the flat canonical coefficient vector
    scale: int  # 2 for subsampled chroma (maps its positions to luma's), else 1

    @property
    def size(self) -> int:
        return self.h * self.w


@dataclass(frozen=True)
class Geometry:
    height: int
    width: int
    ncomp: int
    levels: int
    chroma: str
    padded: tuple[int, int]
    bands: tuple[Band, ...]
    n_ll: int  # number of LL coefficients (all components): the dense head of the stream

    @property
    def total(self) -> int:
        return self.bands[-1].start + self.bands[-1].size

    @property
    def grid(self) -> tuple[int, int]:
        return self.padded[0] >> self.levels, self.padded[1] >> self.levels


@lru_cache(maxsize=256)
def geometry(height: int, width: int, ncomp: int, levels: int, chroma: str) -> Geometry:
    sub = 2 if (ncomp == 3 and chroma == "420") else 1
    m = 1 << (levels + (sub == 2))
    ph, pw = -(-height // m) * m, -(-width // m) * m
    dims = [(ph, pw, 1)] + [(ph // sub, pw // sub, sub)] * (ncomp - 1)
    bands, start = [], 0
    for c, (h, w, s) in enumerate(dims):
        bands.append(Band(c, levels, 0, h >> levels, w >> levels, 0, s))
    for lev in range(levels, 0, -1):
        for b in (1, 2, 3):
            for c, (h, w, s) in enumerate(dims):
                bands.append(Band(c, lev, b, h >> lev, w >> lev, 0, s))
    out = []
    for band in bands:
        out.append(Band(band.comp, band.level, band.band, band.h, band.w, start, band.scale))
        start += band.size
    n_ll = sum(b.size for b in out[:ncomp])
    return Geometry(height, width, ncomp, levels, chroma, (ph, pw), tuple(out), n_ll)

@dataclass(frozen=True)
class WaveletTokens:
    """Where each kind of token lies in the wavelet vocabulary (ids of the value 0 and of run 0)."""

    vocab: Vocabulary
    eob: int
    zrl: int
    esc: int
    val0: int  # value 0
    rl: int  # (run 0, level -LEVEL)
    resc: int  # run escape, run 0
    raw: int


@lru_cache(maxsize=1)
def wavelet_tokens() -> WaveletTokens:
    v = Vocabulary.build(("EOB", "ZRL", "ESC"), [
        ("value", 2 * VMAX + 1, f"coefficient value in [-{VMAX}, {VMAX}] (LL bands; every band when dense)"),
        ("runlevel", RUNS * 2 * LEVEL, f"detail coefficient: (zero run 0..{RUNS - 1}, level +-1..+-{LEVEL})"),
        ("run_esc", RUNS, "detail escape: zero run r, then two raw tokens with the level"),
        ("raw", 256, f"escape payload byte: value + {ESCAPE_OFFSET} as two big-endian bytes"),
    ])
    return WaveletTokens(v, v.specials["EOB"], v.specials["ZRL"], v.specials["ESC"], v.range("value").start + VMAX,
                         v.range("runlevel").start, v.range("run_esc").start, v.range("raw").start)




@lru_cache(maxsize=8)
def _masks(size: int, val: tuple[int, int], esc: int, eob: int, zrl: int, rl: int, resc: int, raw: tuple[int, int]):
    def mask(*ranges):
        return token_mask(size, *ranges)

    band = []
    for left in range(RUNS + 2):  # coefficients left in the band (RUNS + 1 stands for "plenty")
        ranges = [(eob, eob + 1)]
        max_run = min(RUNS - 1, left - 1)
        if max_run >= 0:
            ranges += [(rl, rl + (max_run + 1) * 2 * LEVEL), (resc, resc + max_run + 1)]
        if left >= RUNS + 1:
            ranges.append((zrl, zrl + 1))
        band.append(mask(*ranges))
    return {"value": mask(val, (esc, esc + 1)), "raw": mask(raw), "band": band}


class WaveletCells(CellGrammar):
    """The wavelet grammar inside one cell: one coefficient (LL, or any band when dense: value | ESC raw
    raw), or a whole detail band (rle: run/level tokens whose runs fit in what is left, ZRL while 16
    zeros still fit, then EOB). Cells are numbered as in `WaveletCodec.frame_cells`."""

    def __init__(self, layout: str, g: Geometry):
        t = self.tok = wavelet_tokens()
        self.layout, self.g = layout, g
        v = t.vocab
        r, raw = v.range("value"), v.range("raw")
        self.m = _masks(v.size, (r.start, r.stop), t.esc, t.eob, t.zrl, t.rl, t.resc, (raw.start, raw.stop))
        self.escape = token_mask(v.size, (t.esc, t.esc + 1), (t.resc, t.resc + RUNS))
        self.n_dense = g.total if layout == "dense" else g.n_ll
        self._starts = np.array([b.start for b in g.bands])
        self.band, self.pos, self.phase, self.after_raw = g.bands[0], 0, "", ""
        self._last = np.zeros(6, dtype=np.int64)

    def begin(self, cell: int) -> None:
        if cell < self.n_dense:  # one coefficient: flat index `cell`
            self.band = self.g.bands[int(np.searchsorted(self._starts, cell, side="right")) - 1]
            self.pos, self.phase = cell - self.band.start, "value"
        else:  # a whole detail band
            self.band, self.pos, self.phase = self.g.bands[self.g.ncomp + cell - self.n_dense], 0, "band"
        self.open = True

    def _coords(self, pos: int) -> np.ndarray:
        b = self.band
        y, x = divmod(pos, b.w)
        return np.array([0, b.comp, b.level, b.band, y, x], dtype=np.int64)

    def allowed(self) -> np.ndarray:
        if self.phase in ("raw1", "raw2"):
            return self.m["raw"]
        if self.phase == "value":
            return self.m["value"]
        return self.m["band"][min(self.band.size - self.pos, RUNS + 1)]

    def _escape(self, coords: np.ndarray, then: str) -> np.ndarray:
        self.phase, self.after_raw, self._last = "raw1", then, coords
        return coords

    def step(self, tok: int) -> np.ndarray:
        c, ph = self.tok, self.phase
        if ph in ("raw1", "raw2"):
            self.phase = "raw2" if ph == "raw1" else self.after_raw
            self.open = self.phase != "closed"
            return self._last
        if ph == "value":
            coords = self._coords(self.pos)
            if tok == c.esc:
                return self._escape(coords, "closed")
            self.open = False
            return coords
        band = self.band
        if tok == c.eob:  # EOB sits one row past the band's last coefficient
            self.open = False
            return np.array([0, band.comp, band.level, band.band, band.h, 0], dtype=np.int64)
        if tok == c.zrl:
            self.pos += RUNS
            return self._coords(self.pos - 1)
        run = tok - c.resc if tok >= c.resc else (tok - c.rl) // (2 * LEVEL)
        self.pos += run + 1
        coords = self._coords(self.pos - 1)
        return self._escape(coords, "band") if tok >= c.resc else coords
