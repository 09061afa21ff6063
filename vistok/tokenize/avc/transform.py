"""H.264's integer transforms: the decoder's side exactly as the standard defines it (8.5.10 to 8.5.12), the
encoder's forward transforms and quantizers (not normative: any choice decodes; these are the usual ones).

Arrays are int64; blocks are (..., 4, 4) with [row, column]; `>>` on negative numbers is the arithmetic
shift the standard means.
"""

from __future__ import annotations

import numpy as np

from vistok.tokenize.avc.tables import DEQUANT4, DEQUANT_V, QUANT4, QUANT_MF, ZIGZAG_FLAT

CF = np.array([[1, 1, 1, 1], [2, 1, -1, -2], [1, -1, -1, 1], [1, -2, 2, -1]], np.int64)
HADAMARD4 = np.array([[1, 1, 1, 1], [1, 1, -1, -1], [1, -1, -1, 1], [1, -1, 1, -1]], np.int64)
HADAMARD2 = np.array([[1, 1], [1, -1]], np.int64)


# --- decoder (normative) ----------------------------------------------------------------------------------
def _inverse_rows(d: np.ndarray) -> np.ndarray:
    """The 1-D inverse transform along the last axis."""
    d0, d1, d2, d3 = d[..., 0], d[..., 1], d[..., 2], d[..., 3]
    e0, e1, e2, e3 = d0 + d2, d0 - d2, (d1 >> 1) - d3, d1 + (d3 >> 1)
    out = np.empty_like(d)
    out[..., 0], out[..., 1], out[..., 2], out[..., 3] = e0 + e3, e1 + e2, e1 - e2, e0 - e3
    return out


def inverse4(d: np.ndarray) -> np.ndarray:
    """Scaled coefficients (..., 4, 4) -> residual samples: rows, then columns, then (x + 32) >> 6 (8.5.12.2)."""
    cols = _inverse_rows(np.swapaxes(_inverse_rows(d), -1, -2))
    return (np.swapaxes(cols, -1, -2) + 32) >> 6


def dequant4(c: np.ndarray, qp: int, keep_dc: bool = False) -> np.ndarray:
    """Coefficient levels (..., 4, 4) -> scaled coefficients (8.5.12.1, flat scaling lists); `keep_dc`: the DC
    is already scaled (Intra_16x16 and chroma blocks take it from their DC transform)."""
    d = (c * DEQUANT4[qp % 6]) << (qp // 6)
    if keep_dc:
        d[..., 0, 0] = c[..., 0, 0]
    return d


def luma_dc_inverse(c: np.ndarray, qp: int) -> np.ndarray:
    """Intra_16x16 DC levels (4, 4) -> the 16 blocks' scaled DC coefficients (8.5.10)."""
    f = HADAMARD4 @ c @ HADAMARD4
    scale = 16 * int(DEQUANT_V[qp % 6, 0])
    if qp >= 36:
        return (f * scale) << (qp // 6 - 6)
    return (f * scale + (1 << (5 - qp // 6))) >> (6 - qp // 6)


def chroma_dc_inverse(c: np.ndarray, qp_c: int) -> np.ndarray:
    """4:2:0 chroma DC levels (2, 2) -> the four blocks' scaled DC coefficients (8.5.11)."""
    f = HADAMARD2 @ c @ HADAMARD2
    return ((f * (16 * int(DEQUANT_V[qp_c % 6, 0]))) << (qp_c // 6)) >> 5


def unzigzag(levels: np.ndarray) -> np.ndarray:
    """(..., 16) levels in zigzag scan order -> (..., 4, 4) blocks."""
    out = np.zeros(levels.shape[:-1] + (16,), np.int64)
    out[..., ZIGZAG_FLAT] = levels
    return out.reshape(levels.shape[:-1] + (4, 4))


def zigzag(blocks: np.ndarray) -> np.ndarray:
    """(..., 4, 4) -> (..., 16) in zigzag scan order."""
    return blocks.reshape(blocks.shape[:-2] + (16,))[..., ZIGZAG_FLAT]


# --- encoder (a choice) --------------------------------------------------------------------------------------
def forward4(x: np.ndarray) -> np.ndarray:
    """Residual samples (..., 4, 4) -> core transform coefficients Cf X Cf^T."""
    return CF @ x @ CF.T


MAX_LEVEL = 2063  # what baseline CAVLC codes (level_prefix <= 15); the quantizers clamp to it (low QPs only)


def _quant(w: np.ndarray, mf: np.ndarray | int, qbits: int, intra: bool) -> np.ndarray:
    f = (1 << qbits) // (3 if intra else 6)
    return np.sign(w) * np.minimum((np.abs(w) * mf + f) >> qbits, MAX_LEVEL)


def quant4(w: np.ndarray, qp: int, intra: bool) -> np.ndarray:
    return _quant(w, QUANT4[qp % 6], 15 + qp // 6, intra)


def luma_dc_forward(dc: np.ndarray, qp: int) -> np.ndarray:
    """The 16 blocks' core DC coefficients (4, 4) -> Intra_16x16 DC levels."""
    y = (HADAMARD4 @ dc @ HADAMARD4) // 2
    return _quant(y, int(QUANT_MF[qp % 6, 0]), 16 + qp // 6, True)


def chroma_dc_forward(dc: np.ndarray, qp_c: int, intra: bool) -> np.ndarray:
    """The four chroma blocks' core DC coefficients (2, 2) -> chroma DC levels."""
    return _quant(HADAMARD2 @ dc @ HADAMARD2, int(QUANT_MF[qp_c % 6, 0]), 16 + qp_c // 6, intra)


def satd4(x: np.ndarray) -> np.ndarray:
    """Sum of absolute Hadamard-transformed differences of (..., 4, 4) blocks (a cost, halved as is usual)."""
    return np.abs(HADAMARD4 @ x @ HADAMARD4).sum(axis=(-2, -1)) // 2


# --- what a conforming stream may hold (8.5.10 to 8.5.12: scaled coefficients and every intermediate value of
# the transforms within 16 bits). Kept with sums of magnitudes, which bound every intermediate: a grammar can
# check them token by token, and the encoder fits its levels to them (real residuals never come close). -----
BUDGET = 32767 - 32  # FFmpeg adds its rounding 32 to the DC before its 16-bit SIMD transform


def block_scales(qp: int) -> np.ndarray:
    """(16,) each zigzag position's dequantization scale: a level c there becomes c * scale."""
    return (DEQUANT4[qp % 6] << (qp // 6)).reshape(16)[ZIGZAG_FLAT]


def luma_dc_budget(qp: int) -> int:
    """The largest sum of |Intra_16x16 DC levels| whose every scaled DC stays within BUDGET."""
    return min(BUDGET, (BUDGET - 1) * 64 // (16 * int(DEQUANT_V[qp % 6, 0]) << (qp // 6)))


def chroma_dc_budget(qp_c: int) -> int:
    return min(BUDGET, BUDGET * 32 // (16 * int(DEQUANT_V[qp_c % 6, 0]) << (qp_c // 6)))


def fit(levels: np.ndarray, scales: np.ndarray | int, budget: int) -> np.ndarray:
    """Levels whose sum of |level| * scale is within budget: unchanged when they are, else shrunk toward zero
    (an encoder's last resort; it keeps the stream conforming)."""
    total = int((np.abs(levels) * scales).sum())
    if total <= budget:
        return levels
    return np.sign(levels) * (np.abs(levels) * budget // total)
