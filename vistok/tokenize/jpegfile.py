"""Reading and writing JPEG files at the coefficient level (jpeglib), with a validating pre-parse.

jpeglib (libjpeg underneath) can spend seconds and gigabytes on a malformed header that claims a huge
frame, so `probe` walks the marker segments first in pure Python — bounded work, no allocation beyond
the file — and refuses anything outside what we transcode: 8-bit baseline/extended/progressive Huffman
JPEGs with 1 or 3 components, sampling 4:4:4, 4:2:2 or 4:2:0, within the pixel limit, with scan data.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass

import numpy as np

from vistok.errors import InputError
from vistok.tokenize import dct

_SOF_SUPPORTED = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}
_SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class JpegInfo:
    height: int
    width: int
    ncomp: int
    subsampling: str
    process: str


def _frame_info(seg: bytes, process: str, max_pixels: int) -> JpegInfo:
    """A SOF segment -> the frame's geometry, refusing what vistok does not decode."""
    if len(seg) < 6:
        raise InputError("corrupt JPEG: short SOF segment")
    precision, height, width, ncomp = struct.unpack(">BHHB", seg[:6])
    if precision != 8:
        raise InputError(f"unsupported JPEG sample precision {precision} bits")
    if height == 0 or width == 0:
        raise InputError("JPEG with a zero or DNL-defined dimension")
    if height * width > max_pixels:
        raise InputError(f"image of {width}x{height} pixels exceeds the limit of {max_pixels} (--max-pixels)")
    if ncomp not in (1, 3) or len(seg) < 6 + 3 * ncomp:
        raise InputError(f"unsupported JPEG with {ncomp} components (only grayscale and YCbCr)")
    samp = [(seg[6 + 3 * i + 1] >> 4, seg[6 + 3 * i + 1] & 15) for i in range(ncomp)]
    sub = "444"
    if ncomp == 3:
        if samp[1] != (1, 1) or samp[2] != (1, 1):
            raise InputError(f"unsupported chroma sampling factors {samp}")
        sub = {v: k for k, v in dct.SUBSAMPLING.items()}.get(samp[0], "")
        if not sub:
            raise InputError(f"unsupported luma sampling factors {samp[0]}")
    return JpegInfo(height, width, ncomp, sub, process)


def _skip_scan(data: bytes, pos: int) -> int:
    """The position of the first real marker after entropy-coded data starting at `pos`."""
    n = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= n:
            raise InputError("truncated JPEG: scan data runs to the end of the file (no EOI)")
        nxt = data[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
            pos += 1 if nxt == 0xFF else 2
            continue
        return pos


def probe(data: bytes, max_pixels: int) -> JpegInfo:
    """Validate the marker structure of a JPEG file; raise InputError with a one-line reason."""
    n = len(data)
    if n < 4 or data[:2] != b"\xff\xd8":
        raise InputError("not a JPEG file (no SOI marker)")
    pos, info, seen_sos = 2, None, False
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise InputError(f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xD9:
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > n:
            raise InputError("truncated JPEG: a marker segment runs past the end of the file")
        seg = data[pos + 4 : pos + 2 + length]
        if marker in _SOF_OTHER:
            raise InputError("unsupported JPEG process (lossless, hierarchical or arithmetic coding)")
        if marker in _SOF_SUPPORTED:
            info = _frame_info(seg, _SOF_SUPPORTED[marker], max_pixels)
        if marker == 0xDA:
            if info is None:
                raise InputError("corrupt JPEG: scan before frame header")
            seen_sos = True
            pos = _skip_scan(data, pos + 2 + length)
            continue
        pos += 2 + length
    if info is None:
        raise InputError("corrupt JPEG: no frame header")
    if not seen_sos:
        raise InputError("truncated JPEG: no scan data")
    return info


def _tmpdir() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def read_coefficients(data: bytes, max_pixels: int) -> tuple[JpegInfo, list[np.ndarray], np.ndarray, list[int]]:
    """Validated read of a JPEG's quantized coefficients: (info, components, qtables (k, 64), table index per component)."""
    import jpeglib

    info = probe(data, max_pixels)
    with tempfile.NamedTemporaryFile(suffix=".jpg", dir=_tmpdir()) as f:
        f.write(data)
        f.flush()
        try:
            jpg = jpeglib.read_dct(f.name)
            comps = [jpg.Y] if info.ncomp == 1 else [jpg.Y, jpg.Cb, jpg.Cr]
            comps = [np.asarray(c) for c in comps]
            qt = np.asarray(jpg.qt).reshape(-1, 64).astype(np.uint16)
            tbl = [int(t) for t in np.asarray(jpg.quant_tbl_no)[: info.ncomp]]
        except Exception as exc:  # libjpeg reports corrupt data through Python exceptions of several types
            raise InputError(f"libjpeg could not read the coefficients: {exc}") from None
    return info, comps, qt, tbl


def write_jpeg(
    grid: dct.BlockGrid, coefs: np.ndarray, qtables: np.ndarray, table_index: list[int] | None = None,
    optimize: bool = False,
) -> bytes:
    """Canonical-order zigzag coefficients -> baseline JPEG file bytes (lossless at the coefficient level)."""
    import jpeglib

    comps = [np.ascontiguousarray(c, dtype=np.int16) for c in dct.to_components(grid, coefs)]
    qt = np.asarray(qtables, dtype=np.uint16).reshape(-1, 8, 8)
    if table_index is None:
        table_index = [0, 1, 1][: grid.ncomp]
    im = jpeglib.from_dct(*comps, qt=qt, quant_tbl_no=list(table_index))
    im.height, im.width = grid.height, grid.width
    # jpeglib orders sampling factors (vertical, horizontal)
    im.samp_factor = np.array([(v, h) for h, v in dct.factors(grid.ncomp, grid.subsampling)], dtype=np.int16)
    with tempfile.NamedTemporaryFile(suffix=".jpg", dir=_tmpdir()) as f:
        im.write_dct(f.name, flags=["+OPTIMIZE_CODING"] if optimize else [])
        with open(f.name, "rb") as g:
            return g.read()
