"""Integer reversible transforms of JPEG 2000: the CDF 5/3 lifting wavelet and the colour transform (RCT).

Both map integers to integers and invert exactly. Lengths must be even at every level (the wavelet
codec pads images to a multiple of 2**levels first). Boundaries use whole-sample symmetric extension,
as JPEG 2000 does: x[-1] = x[1] and x[n] = x[n-2].
"""

from __future__ import annotations

import numpy as np


def _fwd_1d(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.moveaxis(x, axis, -1)
    even, odd = x[..., 0::2], x[..., 1::2]
    even_next = np.concatenate([even[..., 1:], even[..., -1:]], axis=-1)  # x[2i+2], mirrored at the end
    d = odd - ((even + even_next) >> 1)  # predict: high-pass
    d_prev = np.concatenate([d[..., :1], d[..., :-1]], axis=-1)  # d[i-1], mirrored at the start
    s = even + ((d_prev + d + 2) >> 2)  # update: low-pass
    return np.moveaxis(s, -1, axis), np.moveaxis(d, -1, axis)


def _inv_1d(s: np.ndarray, d: np.ndarray, axis: int) -> np.ndarray:
    s, d = np.moveaxis(s, axis, -1), np.moveaxis(d, axis, -1)
    d_prev = np.concatenate([d[..., :1], d[..., :-1]], axis=-1)
    even = s - ((d_prev + d + 2) >> 2)
    even_next = np.concatenate([even[..., 1:], even[..., -1:]], axis=-1)
    odd = d + ((even + even_next) >> 1)
    x = np.empty(s.shape[:-1] + (2 * s.shape[-1],), dtype=s.dtype)
    x[..., 0::2], x[..., 1::2] = even, odd
    return np.moveaxis(x, -1, axis)


def dwt53(plane: np.ndarray, levels: int) -> list:
    """(H, W) int -> pywt's layout [LL_L, (H_L, V_L, D_L), ..., (H_1, V_1, D_1)], int64.

    H (horizontal detail) is high-pass vertically, V high-pass horizontally, D both — as in `pywt.wavedec2`.
    """
    ll = plane.astype(np.int64)
    details = []
    for _ in range(levels):
        lo, hi = _fwd_1d(ll, axis=1)  # along rows: horizontal low / high
        ll, h = _fwd_1d(lo, axis=0)  # vertical split of the low half: LL, horizontal detail
        v, d = _fwd_1d(hi, axis=0)  # vertical split of the high half: vertical detail, diagonal
        details.append((h, v, d))
    return [ll] + details[::-1]


def idwt53(coeffs: list) -> np.ndarray:
    ll = coeffs[0]
    for h, v, d in coeffs[1:]:
        lo = _inv_1d(ll, h, axis=0)
        hi = _inv_1d(v, d, axis=0)
        ll = _inv_1d(lo, hi, axis=1)
    return ll


def rct_forward(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) int64: Y = floor((R + 2G + B) / 4), Cb = B - G, Cr = R - G."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return np.stack([(r + 2 * g + b) >> 2, b - g, r - g], axis=-1)


def rct_inverse(ycc: np.ndarray) -> np.ndarray:
    y, cb, cr = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    g = y - ((cb + cr) >> 2)
    return np.stack([cr + g, g, cb + g], axis=-1)
