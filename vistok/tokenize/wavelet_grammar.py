"""The wavelet token grammar (see `wavelet.py`): LL value tokens first, then per detail band run/level
tokens whose runs fit in what is left of the band, ZRL while 16 zeros still fit, and EOB; after the last
band only EOS. Same interface as `JpegGrammar`: `allowed`, `step`, `next_known`, `done`."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from vistok.tokenize.base import EOS, token_mask
from vistok.tokenize.wavelet import LEVEL, RUNS, Geometry, WaveletCodec


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
    return {"value": mask(val, (esc, esc + 1)), "raw": mask(raw), "eos": mask((EOS, EOS + 1)), "band": band}


class WaveletGrammar:
    def __init__(self, codec: WaveletCodec, g: Geometry):
        self.codec, self.g = codec, g
        v = codec.vocab
        r, raw = v.range("value"), v.range("raw")
        self.m = _masks(v.size, (r.start, r.stop), codec._esc, codec._eob, codec._zrl, codec._rl, codec._resc,
                        (raw.start, raw.stop))
        self.n_dense = g.total if codec.layout == "dense" else g.n_ll
        self.k = 0  # dense values written
        self.band = g.ncomp  # current detail band (index into g.bands)
        self.pos = 0
        self.phase = "value" if self.n_dense else "band"
        self.after_raw = ""
        self.done = False
        self._starts = np.array([b.start for b in g.bands])

    def _band_of(self, flat_index: int):
        return self.g.bands[int(np.searchsorted(self._starts, flat_index, side="right")) - 1]

    def _coords(self, band, pos: int) -> np.ndarray:
        y, x = divmod(pos, band.w)
        return np.array([0, band.comp, band.level, band.band, y, x], dtype=np.int64)

    def allowed(self) -> np.ndarray:
        if self.phase in ("raw1", "raw2"):
            return self.m["raw"]
        if self.phase in ("end", "done"):
            return self.m["eos"]
        if self.phase == "value":
            return self.m["value"]
        left = self.g.bands[self.band].size - self.pos
        return self.m["band"][min(left, RUNS + 1)]

    def next_known(self) -> np.ndarray | None:
        if self.phase in ("end", "done"):
            return None
        if self.phase == "value" or (self.phase in ("raw1", "raw2") and self.after_raw == "value"):
            b = self._band_of(self.k if self.phase == "value" else self.k - 1)
        else:
            b = self.g.bands[self.band]
        return np.array([0, b.comp, b.level, b.band, -1, -1], dtype=np.int64)

    def _to_bands(self) -> None:
        if self.k >= self.n_dense:
            self.phase = "band" if self.codec.layout == "rle" and self.band < len(self.g.bands) else "end"

    def step(self, tok: int) -> np.ndarray | None:
        c = self.codec
        if self.phase in ("end", "done"):
            self.phase, self.done = "done", True
            return None
        if self.phase in ("raw1", "raw2"):
            coords = self._last
            if self.phase == "raw1":
                self.phase = "raw2"
            else:
                self.phase = self.after_raw
                if self.phase == "value":
                    self._to_bands()
            return coords
        if self.phase == "value":
            b = self._band_of(self.k)
            coords = self._coords(b, self.k - b.start)
            self.k += 1
            if tok == c._esc:
                self.phase, self.after_raw, self._last = "raw1", "value", coords
            else:
                self._to_bands()
            return coords
        band = self.g.bands[self.band]
        if tok == c._eob:
            coords = np.array([0, band.comp, band.level, band.band, band.h, 0], dtype=np.int64)
            self.band += 1
            self.pos = 0
            if self.band >= len(self.g.bands):
                self.phase = "end"
            return coords
        if tok == c._zrl:
            self.pos += RUNS
            return self._coords(band, self.pos - 1)
        run = tok - c._resc if tok >= c._resc else (tok - c._rl) // (2 * LEVEL)
        self.pos += run + 1
        coords = self._coords(band, self.pos - 1)
        if tok >= c._resc:
            self.phase, self.after_raw, self._last = "raw1", "band", coords
        return coords
