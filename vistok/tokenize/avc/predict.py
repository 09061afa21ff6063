"""Intra and inter prediction as the decoder computes it (8.3.1.2, 8.3.3, 8.3.4, 8.4.2.2).

Intra_4x4 works on a block's 13 neighbours in one vector e = [p[-1,3], p[-1,2], p[-1,1], p[-1,0], p[-1,-1],
p[0,-1] .. p[7,-1]]: every directional mode is then a fixed (16, 13) weight matrix, pred = (W e + 2) >> 2
(a two-tap average (a + b + 1) >> 1 is (2a + 2b + 2) >> 2, a copy (4a + 2) >> 2), built once from the
standard's formulas.
"""

from __future__ import annotations

import numpy as np

V, H, DC, DDL, DDR, VR, HD, VL, HU = range(9)  # Intra_4x4 modes (Table 8-2)
I16_V, I16_H, I16_DC, I16_PLANE = range(4)  # Intra_16x16 modes (Table 8-4)
C_DC, C_H, C_V, C_PLANE = range(4)  # chroma modes (Table 8-5)
I4_NEEDS = {V: "t", H: "l", DC: "", DDL: "t", DDR: "tlc", VR: "tlc", HD: "tlc", VL: "t", HU: "l"}
I16_NEEDS = {I16_V: "t", I16_H: "l", I16_DC: "", I16_PLANE: "tlc"}
CHROMA_NEEDS = {C_DC: "", C_H: "l", C_V: "t", C_PLANE: "tlc"}


def _l(y: int) -> int:  # index of p[-1, y] in e (y = -1 is the corner)
    return 4 if y < 0 else 3 - y


def _t(x: int) -> int:  # index of p[x, -1]
    return 4 if x < 0 else 5 + x


def _i4_weights() -> np.ndarray:
    w = np.zeros((9, 4, 4, 13), np.int64)

    def put(mode, y, x, *taps):  # taps: (index, weight), weights summing to 4
        for i, k in taps:
            w[mode, y, x, i] += k

    for y in range(4):
        for x in range(4):
            put(V, y, x, (_t(x), 4))
            put(H, y, x, (_l(y), 4))
            if x == 3 and y == 3:
                put(DDL, y, x, (_t(6), 1), (_t(7), 3))
            else:
                put(DDL, y, x, (_t(x + y), 1), (_t(x + y + 1), 2), (_t(x + y + 2), 1))
            if x > y:
                put(DDR, y, x, (_t(x - y - 2), 1), (_t(x - y - 1), 2), (_t(x - y), 1))
            elif x < y:
                put(DDR, y, x, (_l(y - x - 2), 1), (_l(y - x - 1), 2), (_l(y - x), 1))
            else:
                put(DDR, y, x, (_t(0), 1), (_t(-1), 2), (_l(0), 1))
            z = 2 * x - y
            if z >= 0 and z % 2 == 0:
                put(VR, y, x, (_t(x - (y >> 1) - 1), 2), (_t(x - (y >> 1)), 2))
            elif z >= 0:
                put(VR, y, x, (_t(x - (y >> 1) - 2), 1), (_t(x - (y >> 1) - 1), 2), (_t(x - (y >> 1)), 1))
            elif z == -1:
                put(VR, y, x, (_l(0), 1), (_l(-1), 2), (_t(0), 1))
            else:
                put(VR, y, x, (_l(y - 1), 1), (_l(y - 2), 2), (_l(y - 3), 1))
            z = 2 * y - x
            if z >= 0 and z % 2 == 0:
                put(HD, y, x, (_l(y - (x >> 1) - 1), 2), (_l(y - (x >> 1)), 2))
            elif z >= 0:
                put(HD, y, x, (_l(y - (x >> 1) - 2), 1), (_l(y - (x >> 1) - 1), 2), (_l(y - (x >> 1)), 1))
            elif z == -1:
                put(HD, y, x, (_l(0), 1), (_l(-1), 2), (_t(0), 1))
            else:
                put(HD, y, x, (_t(x - 1), 1), (_t(x - 2), 2), (_t(x - 3), 1))
            i = x + (y >> 1)
            if y % 2 == 0:
                put(VL, y, x, (_t(i), 2), (_t(i + 1), 2))
            else:
                put(VL, y, x, (_t(i), 1), (_t(i + 1), 2), (_t(i + 2), 1))
            z, j = x + 2 * y, y + (x >> 1)
            if z > 5:
                put(HU, y, x, (_l(3), 4))
            elif z == 5:
                put(HU, y, x, (_l(2), 1), (_l(3), 3))
            elif z % 2 == 0:
                put(HU, y, x, (_l(j), 2), (_l(j + 1), 2))
            else:
                put(HU, y, x, (_l(j), 1), (_l(j + 1), 2), (_l(j + 2), 1))
    return w


I4_WEIGHTS = _i4_weights()  # (9, 4, 4, 13); DC's row is unused


def i4_available(mode: int, top: bool, left: bool, corner: bool) -> bool:
    have = {"t": top, "l": left, "c": corner}
    return all(have[k] for k in I4_NEEDS[mode])


def i4_predict_all(e: np.ndarray, top: bool, left: bool) -> np.ndarray:
    """(9, 4, 4) every Intra_4x4 mode's prediction (an unavailable mode's is meaningless: check it first)."""
    out = (I4_WEIGHTS @ e + 2) >> 2
    out[DC] = i4_predict(e, DC, top, left)
    return out


def i4_predict(e: np.ndarray, mode: int, top: bool, left: bool) -> np.ndarray:
    """One Intra_4x4 prediction (4, 4) from the neighbour vector e (unavailable entries: any value)."""
    if mode == DC:
        if top and left:
            return np.full((4, 4), (e[5:9].sum() + e[0:4].sum() + 4) >> 3, np.int64)
        if left:
            return np.full((4, 4), (e[0:4].sum() + 2) >> 2, np.int64)
        if top:
            return np.full((4, 4), (e[5:9].sum() + 2) >> 2, np.int64)
        return np.full((4, 4), 128, np.int64)
    return (I4_WEIGHTS[mode] @ e + 2) >> 2


def i16_predict(top: np.ndarray | None, left: np.ndarray | None, corner: int | None, mode: int) -> np.ndarray:
    """Intra_16x16 prediction (16, 16); top/left: the 16 neighbours (None when unavailable)."""
    if mode == I16_V:
        return np.broadcast_to(top, (16, 16)).astype(np.int64)
    if mode == I16_H:
        return np.broadcast_to(left[:, None], (16, 16)).astype(np.int64)
    if mode == I16_DC:
        if top is not None and left is not None:
            v = (top.sum() + left.sum() + 16) >> 5
        elif left is not None:
            v = (left.sum() + 8) >> 4
        elif top is not None:
            v = (top.sum() + 8) >> 4
        else:
            v = 128
        return np.full((16, 16), v, np.int64)
    return _plane(top, left, corner, 16)


def chroma_predict(top: np.ndarray | None, left: np.ndarray | None, corner: int | None, mode: int) -> np.ndarray:
    """4:2:0 chroma prediction (8, 8) of one component."""
    if mode == C_V:
        return np.broadcast_to(top, (8, 8)).astype(np.int64)
    if mode == C_H:
        return np.broadcast_to(left[:, None], (8, 8)).astype(np.int64)
    if mode == C_PLANE:
        return _plane(top, left, corner, 8)
    out = np.empty((8, 8), np.int64)
    for by in (0, 1):
        for bx in (0, 1):
            t = None if top is None else top[4 * bx : 4 * bx + 4]
            lf = None if left is None else left[4 * by : 4 * by + 4]
            if bx == by:  # the corner blocks use both neighbours when they can
                first = (t, lf)
            elif bx == 1:  # top-right block: prefers its top
                first = (t, None)
            else:  # bottom-left block: prefers its left
                first = (None, lf)
            a, b = first
            if a is not None and b is not None:
                v = (a.sum() + b.sum() + 4) >> 3
            elif a is not None or b is not None:
                v = ((a if a is not None else b).sum() + 2) >> 2
            elif t is not None or lf is not None:
                v = ((t if t is not None else lf).sum() + 2) >> 2
            else:
                v = 128
            out[4 * by : 4 * by + 4, 4 * bx : 4 * bx + 4] = v
    return out


def _plane(top: np.ndarray, left: np.ndarray, corner: int, n: int) -> np.ndarray:
    """The plane mode of a 16 x 16 luma or 8 x 8 (4:2:0) chroma block."""
    half = n // 2
    tp = np.concatenate([[corner], top]).astype(np.int64)  # tp[i + 1] = p[i, -1]
    lp = np.concatenate([[corner], left]).astype(np.int64)
    k = np.arange(1, half + 1)
    hh = (k * (tp[half + k] - tp[half - k])).sum()
    vv = (k * (lp[half + k] - lp[half - k])).sum()
    a = 16 * (int(lp[n]) + int(tp[n]))
    if n == 16:
        b, c = (5 * hh + 32) >> 6, (5 * vv + 32) >> 6
    else:
        b, c = (34 * hh + 32) >> 6, (34 * vv + 32) >> 6
    y, x = np.mgrid[0:n, 0:n]
    return np.clip((a + b * (x - (half - 1)) + c * (y - (half - 1)) + 16) >> 5, 0, 255)


def luma_mc(ref: np.ndarray, x0: int, y0: int, mv: tuple[int, int], n: int = 16) -> np.ndarray:
    """Integer-sample luma motion compensation (mv in quarter samples, multiples of 4): the reference block,
    coordinates clamped to the picture (its edges repeat)."""
    h, w = ref.shape
    ys = np.clip(np.arange(n) + y0 + (mv[1] >> 2), 0, h - 1)
    xs = np.clip(np.arange(n) + x0 + (mv[0] >> 2), 0, w - 1)
    return ref[np.ix_(ys, xs)].astype(np.int64)


def chroma_mc(ref: np.ndarray, x0: int, y0: int, mv: tuple[int, int], n: int = 8) -> np.ndarray:
    """4:2:0 chroma motion compensation: the luma vector in eighths of a chroma sample, bilinear (8.4.2.2.2)."""
    h, w = ref.shape
    xf, yf = mv[0] & 7, mv[1] & 7
    ys = np.arange(n) + y0 + (mv[1] >> 3)
    xs = np.arange(n) + x0 + (mv[0] >> 3)
    r = ref.astype(np.int64)

    def at(dy, dx):
        return r[np.ix_(np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1))]

    return ((8 - xf) * (8 - yf) * at(0, 0) + xf * (8 - yf) * at(0, 1) + (8 - xf) * yf * at(1, 0)
            + xf * yf * at(1, 1) + 32) >> 6
