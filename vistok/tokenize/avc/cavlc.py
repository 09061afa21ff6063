"""residual_block_cavlc (7.3.5.3.2, 9.2): one block's levels in scan order -> bits.

The block is described by its levels only; the context nC (the neighbours' coefficient counts, or -1 for
chroma DC) picks the coeff_token table. Levels are limited to what baseline CAVLC can code (|level| <=
MAX_LEVEL: level_prefix at most 15, the suffix 12 bits).
"""

from __future__ import annotations

import numpy as np

from vistok.tokenize.avc.bits import BitWriter
from vistok.tokenize.avc.tables import (
    COEFF_TOKEN,
    COEFF_TOKEN_CHROMA_DC,
    RUN_BEFORE,
    TOTAL_ZEROS,
    TOTAL_ZEROS_CHROMA_DC,
    coeff_token_flc,
)
from vistok.tokenize.avc.transform import MAX_LEVEL


def coeff_token(n_c: int, total: int, trailing: int) -> str:
    if n_c == -1:
        return COEFF_TOKEN_CHROMA_DC[total][trailing]
    if n_c >= 8:
        return coeff_token_flc(total, trailing)
    return COEFF_TOKEN[0 if n_c < 2 else 1 if n_c < 4 else 2][total][trailing]


def level_code_bits(level_code: int, suffix_length: int) -> str:
    """level_prefix (leading zeros then a one) and level_suffix of a levelCode (9.2.2.1, inverted)."""
    if suffix_length == 0:
        if level_code < 14:
            return "0" * level_code + "1"
        if level_code < 30:
            return "0" * 14 + "1" + format(level_code - 14, "04b")
        return "0" * 15 + "1" + format(level_code - 30, "012b")
    if level_code < 15 << suffix_length:
        return "0" * (level_code >> suffix_length) + "1" + format(level_code & ((1 << suffix_length) - 1),
                                                                    f"0{suffix_length}b")
    return "0" * 15 + "1" + format(level_code - (15 << suffix_length), "012b")


def write_block(w: BitWriter, levels: np.ndarray | list[int], n_c: int) -> int:
    """Write one residual block (`levels`: its maxNumCoeff levels in scan order); returns TotalCoeff."""
    levels = [int(v) for v in levels]
    max_coeff = len(levels)
    nz = [i for i, v in enumerate(levels) if v]
    total = len(nz)
    vals = [levels[i] for i in reversed(nz)]  # highest frequency first
    trailing = 0
    while trailing < min(3, total) and abs(vals[trailing]) == 1:
        trailing += 1
    w.bits(coeff_token(n_c, total, trailing))
    if total == 0:
        return 0
    for v in vals[:trailing]:
        w.flag(v < 0)
    suffix_length = 1 if total > 10 and trailing < 3 else 0
    for i, v in enumerate(vals[trailing:], start=trailing):
        if abs(v) > MAX_LEVEL:
            raise ValueError(f"level {v} is beyond what baseline CAVLC codes (|level| <= {MAX_LEVEL})")
        code = 2 * v - 2 if v > 0 else -2 * v - 1
        if i == trailing and trailing < 3:
            code -= 2
        w.bits(level_code_bits(code, suffix_length))
        if suffix_length == 0:
            suffix_length = 1
        if abs(v) > (3 << (suffix_length - 1)) and suffix_length < 6:
            suffix_length += 1
    zeros_left = nz[-1] + 1 - total
    if total < max_coeff:
        table = TOTAL_ZEROS_CHROMA_DC if max_coeff == 4 else TOTAL_ZEROS
        w.bits(table[total - 1][zeros_left])
    positions = list(reversed(nz))
    for k in range(total - 1):
        if zeros_left == 0:
            break
        run = positions[k] - positions[k + 1] - 1
        w.bits(RUN_BEFORE[min(zeros_left, 7) - 1][run])
        zeros_left -= run
    return total
