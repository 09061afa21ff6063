"""The JPEG token grammar: which tokens may come next, so that sampled streams always decode.

A `JpegGrammar` follows one stream in canonical order for a known image geometry. `allowed()` is a
boolean mask over the vocabulary (cached per state); `step(token)` consumes a token and returns its
coordinates (codec axes); `next_known()` gives the coordinates of the next token on the axes that are
fixed before it is chosen (frame, component, block_y, block_x), or None at the end.

rle: block = DC | ESC raw raw, then (AC(run, level) | AC_ESC(run) raw raw)* with runs that fit inside
the 63 AC positions, then EOB; after the last block's EOB only EOS.
dense: block = 64 x (value | ESC raw raw); after the last block only EOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vistok.tokenize import dct
from vistok.tokenize.base import EOS, ESCAPE_OFFSET, Vocabulary, token_mask

DC_MAX = 255  # direct DC tokens cover [-DC_MAX, DC_MAX]
AC_LEVEL = 15  # direct AC tokens cover levels in [-AC_LEVEL, -1] and [1, AC_LEVEL]
RUNS = 63  # zero runs 0..62 before a nonzero AC coefficient
DENSE_MAX = 2047  # dense value tokens cover [-DENSE_MAX, DENSE_MAX] (all of baseline JPEG's range)
EOB_FREQ = 64


def _vocabulary(layout: str) -> Vocabulary:
    raw = ("raw", 256, f"escape payload byte: value + {ESCAPE_OFFSET} as two big-endian bytes after ESC or AC_ESC")
    if layout == "rle":
        return Vocabulary.build(
            ("EOB", "ESC"),
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


@lru_cache(maxsize=2)
def jpeg_tokens(layout: str) -> JpegTokens:
    v = _vocabulary(layout)
    base = dict(layout=layout, vocab=v, eob=v.specials["EOB"], esc=v.specials["ESC"], raw=v.range("raw").start)
    if layout == "rle":
        return JpegTokens(**base, dc0=v.range("dc").start + DC_MAX, ac=v.range("ac").start,
                          acesc=v.range("ac_esc").start)
    return JpegTokens(**base, val0=v.range("value").start + DENSE_MAX)


@lru_cache(maxsize=2)
def _masks(layout: str) -> dict:
    t = jpeg_tokens(layout)
    v = t.vocab

    def mask(*ranges):
        return token_mask(v.size, *ranges)

    raw = v.range("raw")
    esc = t.esc
    out = {"raw": mask((raw.start, raw.stop)), "eos": mask((EOS, EOS + 1))}
    if layout == "rle":
        dc = v.range("dc")
        out["dc"] = mask((dc.start, dc.stop), (esc, esc + 1))
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


class JpegGrammar:
    def __init__(self, tokens: JpegTokens, grid: dct.BlockGrid):
        self.tok, self.grid = tokens, grid
        self.m = _masks(tokens.layout)
        self.b = 0  # current block (canonical index)
        self.pos = 0  # last zigzag position written in the block
        self.phase = "dc" if tokens.layout == "rle" else "val"
        self.after_raw = ""  # phase to return to after an escape's two raw tokens
        self.esc_freq = 0
        self.done = False

    # --- queries --------------------------------------------------------------------------------
    def allowed(self) -> np.ndarray:
        ph = self.phase
        if ph == "ac":
            return self.m["ac"][self.pos]
        if ph in ("raw1", "raw2"):
            return self.m["raw"]
        if ph in ("end", "done"):
            return self.m["eos"]
        return self.m[ph]

    def _block_coords(self, freq: int) -> np.ndarray:
        L, b = self.grid, self.b
        return np.array([0, L.comp[b], L.by[b], L.bx[b], freq], dtype=np.int64)

    def next_known(self) -> np.ndarray | None:
        if self.phase in ("end", "done"):
            return None
        return self._block_coords(-1)  # freq unknown

    # --- transition -----------------------------------------------------------------------------
    def step(self, tok: int) -> np.ndarray | None:
        """Consume `tok` (must be allowed); return its coordinates (None for EOS)."""
        c = self.tok
        ph = self.phase
        if ph in ("end", "done"):
            self.phase, self.done = "done", True
            return None
        if ph in ("raw1", "raw2"):
            coords = self._block_coords(self.esc_freq)
            if ph == "raw1":
                self.phase = "raw2"
            else:
                self.phase = self.after_raw
                self._maybe_next_block()
            return coords
        if ph == "val":  # dense
            freq = self.pos
            coords = self._block_coords(freq)
            self.pos += 1
            if tok == c.esc:
                self.phase, self.after_raw, self.esc_freq = "raw1", "val", freq
            else:
                self._maybe_next_block()
            return coords
        if ph == "dc":
            self.pos = 0
            coords = self._block_coords(0)
            if tok == c.esc:
                self.phase, self.after_raw, self.esc_freq = "raw1", "ac", 0
            else:
                self.phase = "ac"
            return coords
        # ac phase
        if tok == c.eob:
            coords = self._block_coords(EOB_FREQ)
            self.b += 1
            self.phase = "dc" if self.b < self.grid.n_blocks else "end"
            return coords
        if tok >= c.acesc:
            run = tok - c.acesc
            self.pos += run + 1
            self.phase, self.after_raw, self.esc_freq = "raw1", "ac", self.pos
            return self._block_coords(self.pos)
        run = (tok - c.ac) // (2 * AC_LEVEL)
        self.pos += run + 1
        return self._block_coords(self.pos)

    def _maybe_next_block(self) -> None:
        if self.tok.layout == "dense" and self.pos == 64 and self.phase == "val":
            self.b += 1
            self.pos = 0
            if self.b >= self.grid.n_blocks:
                self.phase = "end"

