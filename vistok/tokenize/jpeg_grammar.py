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

from functools import lru_cache

import numpy as np

from vistok.tokenize import dct
from vistok.tokenize.base import EOS, token_mask
from vistok.tokenize.jpeg import AC_LEVEL, EOB_FREQ, RUNS, JpegCodec


@lru_cache(maxsize=8)
def _masks(codec_key: tuple, layout: str) -> dict:
    codec = JpegCodec(**dict(codec_key))
    v = codec.vocab

    def mask(*ranges):
        return token_mask(v.size, *ranges)

    raw = v.range("raw")
    esc = codec._esc
    out = {"raw": mask((raw.start, raw.stop)), "eos": mask((EOS, EOS + 1))}
    if layout == "rle":
        dc = v.range("dc")
        out["dc"] = mask((dc.start, dc.stop), (esc, esc + 1))
        ac = []
        for pos in range(64):  # pos = zigzag index of the last coefficient written (0 = DC)
            max_run = 62 - pos  # a run r lands at pos + r + 1 <= 63
            ranges = [(codec._eob, codec._eob + 1)]
            if max_run >= 0:
                ranges += [(codec._ac, codec._ac + (max_run + 1) * 2 * AC_LEVEL), (codec._acesc, codec._acesc + max_run + 1)]
            ac.append(mask(*ranges))
        out["ac"] = ac
    else:
        val = v.range("value")
        out["val"] = mask((val.start, val.stop), (esc, esc + 1))
    return out


class JpegGrammar:
    def __init__(self, codec: JpegCodec, layout: dct.Layout):
        self.codec, self.layout = codec, layout
        cfg = codec.get_config()
        cfg.pop("id")
        self.m = _masks(tuple(sorted(cfg.items())), codec.layout)
        self.b = 0  # current block (canonical index)
        self.pos = 0  # last zigzag position written in the block
        self.phase = "dc" if codec.layout == "rle" else "val"
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
        L, b = self.layout, self.b
        return np.array([0, L.comp[b], L.by[b], L.bx[b], freq], dtype=np.int64)

    def next_known(self) -> np.ndarray | None:
        if self.phase in ("end", "done"):
            return None
        return self._block_coords(-1)  # freq unknown

    # --- transition -----------------------------------------------------------------------------
    def step(self, tok: int) -> np.ndarray | None:
        """Consume `tok` (must be allowed); return its coordinates (None for EOS)."""
        c = self.codec
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
            if tok == c._esc:
                self.phase, self.after_raw, self.esc_freq = "raw1", "val", freq
            else:
                self._maybe_next_block()
            return coords
        if ph == "dc":
            self.pos = 0
            coords = self._block_coords(0)
            if tok == c._esc:
                self.phase, self.after_raw, self.esc_freq = "raw1", "ac", 0
            else:
                self.phase = "ac"
            return coords
        # ac phase
        if tok == c._eob:
            coords = self._block_coords(EOB_FREQ)
            self.b += 1
            self.phase = "dc" if self.b < self.layout.n_blocks else "end"
            return coords
        if tok >= c._acesc:
            run = tok - c._acesc
            self.pos += run + 1
            self.phase, self.after_raw, self.esc_freq = "raw1", "ac", self.pos
            return self._block_coords(self.pos)
        run = (tok - c._ac) // (2 * AC_LEVEL)
        self.pos += run + 1
        return self._block_coords(self.pos)

    def _maybe_next_block(self) -> None:
        if self.codec.layout == "dense" and self.pos == 64 and self.phase == "val":
            self.b += 1
            self.pos = 0
            if self.b >= self.layout.n_blocks:
                self.phase = "end"


assert RUNS == 63
