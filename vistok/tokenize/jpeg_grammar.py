"""The JPEG token language (vocabulary per layout) and its grammar inside one cell (see `base.Cells`).

rle: a block = DC | ESC raw raw, then (AC(run, level) | AC_ESC(run) raw raw)* with runs that fit inside
the 63 AC positions, then EOB; its DC and its AC run are two cells (cell 2b and 2b + 1), so an order may
send every DC first (`dc-first`). With temporal deltas (`delta`), a block is one cell and may instead be the
one token SKIP: every coefficient of its difference to the previous frame is zero (dense deltas have no SKIP).
dense: a cell is one coefficient = value | ESC raw raw; its block and frequency are known in advance.
Masks are cached per state, so `allowed()` costs a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vistok.tokenize import dct
from vistok.tokenize.base import ESCAPE_OFFSET, CellGrammar, Vocabulary, token_mask

DC_MAX = 255  # direct DC tokens cover [-DC_MAX, DC_MAX]
AC_LEVEL = 15  # direct AC tokens cover levels in [-AC_LEVEL, -1] and [1, AC_LEVEL]
RUNS = 63  # zero runs 0..62 before a nonzero AC coefficient
DENSE_MAX = 2047  # dense value tokens cover [-DENSE_MAX, DENSE_MAX] (all of baseline JPEG's range)
EOB_FREQ = 64


def _vocabulary(layout: str, delta: bool = False) -> Vocabulary:
    raw = ("raw", 256, f"escape payload byte: value + {ESCAPE_OFFSET} as two big-endian bytes after ESC or AC_ESC")
    if layout == "rle":
        return Vocabulary.build(
            ("EOB", "ESC", "SKIP") if delta else ("EOB", "ESC"),
            [
                ("dc", 2 * DC_MAX + 1, f"DC value (or DPCM difference) in [-{DC_MAX}, {DC_MAX}]"),
                ("ac", RUNS * 2 * AC_LEVEL, f"AC (run 0..62, level ±1..±{AC_LEVEL}): id = run*{2 * AC_LEVEL} + level index"),
                ("ac_esc", RUNS, "AC escape: run r, then two raw tokens with the level"),
                raw,
            ],
        )
    return Vocabulary.build(
        ("EOB", "ESC"),
        [("value", 2 * DENSE_MAX + 1, f"coefficient value in [-{DENSE_MAX}, {DENSE_MAX}]"), raw],
    )


@dataclass(frozen=True)
class JpegTokens:
    """Where each kind of token lies in the vocabulary of one layout (ids of the value 0; 0 when absent)."""

    layout: str
    vocab: Vocabulary
    eob: int
    esc: int
    raw: int
    dc0: int = 0  # rle: DC value 0
    ac: int = 0  # rle: AC(run 0, level -AC_LEVEL)
    acesc: int = 0  # rle: AC_ESC(run 0)
    val0: int = 0  # dense: value 0
    skip: int = -1  # rle with temporal deltas: SKIP (a block equal to the previous frame's); -1 when absent


@lru_cache(maxsize=4)
def jpeg_tokens(layout: str, delta: bool = False) -> JpegTokens:
    v = _vocabulary(layout, delta)
    base = dict(layout=layout, vocab=v, eob=v.specials["EOB"], esc=v.specials["ESC"], raw=v.range("raw").start,
                skip=v.specials.get("SKIP", -1))
    if layout == "rle":
        return JpegTokens(**base, dc0=v.range("dc").start + DC_MAX, ac=v.range("ac").start,
                          acesc=v.range("ac_esc").start)
    return JpegTokens(**base, val0=v.range("value").start + DENSE_MAX)


@lru_cache(maxsize=4)
def _masks(layout: str, delta: bool = False) -> dict:
    t = jpeg_tokens(layout, delta)
    v = t.vocab

    def mask(*ranges):
        return token_mask(v.size, *ranges)

    raw = v.range("raw")
    esc = t.esc
    out = {"raw": mask((raw.start, raw.stop))}
    if layout == "rle":
        dc = v.range("dc")
        out["dc"] = mask((dc.start, dc.stop), (esc, esc + 1), *([(t.skip, t.skip + 1)] if delta else []))
        ac = []
        for pos in range(64):  # pos = zigzag index of the last coefficient written (0 = DC)
            max_run = 62 - pos  # a run r lands at pos + r + 1 <= 63
            ranges = [(t.eob, t.eob + 1)]
            if max_run >= 0:
                ranges += [(t.ac, t.ac + (max_run + 1) * 2 * AC_LEVEL), (t.acesc, t.acesc + max_run + 1)]
            ac.append(mask(*ranges))
        out["ac"] = ac
    else:
        val = v.range("value")
        out["val"] = mask((val.start, val.stop), (esc, esc + 1))
    return out


class JpegCells(CellGrammar):
    """The JPEG grammar inside one cell: a whole block (rle) or one coefficient (dense)."""

    def __init__(self, tokens: JpegTokens, grid: dct.BlockGrid, split: bool = False):
        self.tok, self.grid, self.split = tokens, grid, split
        self.m = _masks(tokens.layout, tokens.skip >= 0)
        self.escape = token_mask(tokens.vocab.size, (tokens.esc, tokens.esc + 1))
        self.b = 0  # the cell's block (canonical index)
        self.pos = 0  # zigzag index of the last coefficient written (rle), of the cell's coefficient (dense)
        self.phase = ""
        self.after_raw = ""  # phase to return to after an escape's two raw tokens
        self.esc_freq = 0

    def begin(self, cell: int) -> None:
        if self.tok.layout == "rle" and self.split:  # cell 2b: block b's DC; 2b + 1: its AC run and EOB
            (self.b, part), self.pos = divmod(cell, 2), 0
            self.phase = "ac" if part else "dc"
        elif self.tok.layout == "rle":
            self.b, self.pos, self.phase = cell, 0, "dc"
        else:
            (self.b, self.pos), self.phase = divmod(cell, 64), "val"
        self.open = True

    def allowed(self) -> np.ndarray:
        ph = self.phase
        if ph == "ac":
            return self.m["ac"][self.pos]
        if ph in ("raw1", "raw2"):
            return self.m["raw"]
        return self.m[ph]

    def _coords(self, freq: int) -> np.ndarray:
        L, b = self.grid, self.b
        return np.array([0, L.comp[b], L.by[b], L.bx[b], freq], dtype=np.int64)

    def _escape(self, freq: int, then: str) -> None:
        self.phase, self.after_raw, self.esc_freq = "raw1", then, freq

    def step(self, tok: int) -> np.ndarray:
        """Consume `tok` (must be allowed); return its coordinates."""
        c, ph = self.tok, self.phase
        if ph in ("raw1", "raw2"):
            self.phase = "raw2" if ph == "raw1" else self.after_raw
            self.open = self.phase != "closed"
            return self._coords(self.esc_freq)
        if ph == "val":  # dense: one coefficient
            if tok == c.esc:
                self._escape(self.pos, "closed")
            else:
                self.open = False
            return self._coords(self.pos)
        if ph == "dc":
            if tok == c.skip:  # the whole block: unchanged since the previous frame
                self.open = False
                return self._coords(0)
            after = "closed" if self.split else "ac"
            self.phase = after
            self.open = after != "closed"
            if tok == c.esc:
                self._escape(0, after)
                self.open = True
            return self._coords(0)
        if tok == c.eob:  # ac phase
            self.open = False
            return self._coords(EOB_FREQ)
        run = tok - c.acesc if tok >= c.acesc else (tok - c.ac) // (2 * AC_LEVEL)
        self.pos += run + 1
        if tok >= c.acesc:
            self._escape(self.pos, "ac")
        return self._coords(self.pos)
