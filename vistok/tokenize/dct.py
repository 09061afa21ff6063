"""JPEG's transform in numpy: colour conversion, chroma subsampling, block DCT and quantization.

Everything is vectorized over whole images: the 8x8 DCT of every block, the zigzag reordering and the
division by the quantization table are folded into one (64, 64) matrix, so a component costs one
``(n_blocks, 64) @ (64, 64)`` product.

Block geometry follows libjpeg: component ``c`` with sampling factors ``(h_c, v_c)`` has
``ceil(W * h_c / (8 * h_max))`` blocks per row (no padding to whole MCUs), which is what jpeglib
reads and writes. Pixels are padded to whole MCUs by edge replication before subsampling, as libjpeg does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

try:  # the C kernels (vistok/_jpegc.c), built at install time when a compiler is there
    from vistok import _jpegc as _native
except ImportError:  # pragma: no cover - depends on the build
    _native = None

# Which path runs: the C kernels unless absent or VISTOK_NATIVE=0 (the numpy code below is the reference).
NATIVE = _native is not None and os.environ.get("VISTOK_NATIVE", "1") != "0"

# ZIGZAG[k] = natural (row-major) index of the k-th coefficient in zigzag order.
ZIGZAG = np.array(
    [i * 8 + j for i, j in sorted(((i, j) for i in range(8) for j in range(8)),
                                  key=lambda p: (p[0] + p[1], p[0] if (p[0] + p[1]) % 2 else p[1]))],
    dtype=np.int64,
)
UNZIGZAG = np.argsort(ZIGZAG)

# ITU-T T.81 Annex K tables, natural order.
STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)
STD_CHROMA = np.full(64, 99, dtype=np.int64)
STD_CHROMA[[0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 24, 25]] = [17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 47, 66]

# Luma sampling factors (h, v) for each subsampling mode; chroma is always (1, 1).
SUBSAMPLING = {"444": (1, 1), "422": (2, 1), "420": (2, 2)}


def quality_tables(quality: int, baseline: bool = True) -> np.ndarray:
    """IJG scaling of the Annex K tables: (2, 64) uint16, natural order (luma, chroma)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    tables = (np.stack([STD_LUMA, STD_CHROMA]) * scale + 50) // 100
    return np.clip(tables, 1, 255 if baseline else 32767).astype(np.uint16)


def _dct_matrix() -> np.ndarray:
    x = np.arange(8)
    d = np.cos((2 * x[None, :] + 1) * x[:, None] * np.pi / 16) * np.sqrt(2 / 8)
    d[0] /= np.sqrt(2)
    return d  # orthonormal DCT-II: JPEG's F(u, v) = (D X D^T)[u, v]


# Row k maps a flattened 8x8 pixel block to the k-th zigzag coefficient.
_KZ = np.kron(_dct_matrix(), _dct_matrix())[ZIGZAG]


def _key(table: np.ndarray) -> bytes:
    return np.ascontiguousarray(table, dtype=np.uint16).tobytes()


@lru_cache(maxsize=64)
def forward_matrix(qtable: bytes) -> np.ndarray:
    """(64, 64) float32: flat pixel block (minus 128) @ M = zigzag coefficients / quantizer."""
    qz = np.frombuffer(qtable, dtype=np.uint16).astype(np.float64)[ZIGZAG]
    return np.ascontiguousarray((_KZ / qz[:, None]).T).astype(np.float32)


@lru_cache(maxsize=64)
def inverse_matrix(qtable: bytes) -> np.ndarray:
    """(64, 64) float32: quantized zigzag coefficients @ M = flat pixel block (minus 128)."""
    qz = np.frombuffer(qtable, dtype=np.uint16).astype(np.float64)[ZIGZAG]
    return np.ascontiguousarray(_KZ * qz[:, None]).astype(np.float32)


@dataclass(frozen=True)
class BlockGrid:
    """Block geometry of one image and the canonical (MCU-interleaved) block order.

    Canonical order walks MCUs in raster order; inside an MCU, component by component, blocks in
    raster order (as in an interleaved baseline scan, without libjpeg's dummy edge blocks).
    Arrays are indexed by canonical block index.
    """

    height: int
    width: int
    ncomp: int
    subsampling: str
    comp_blocks: tuple[tuple[int, int], ...]  # (rows, cols) of blocks per component
    mcu_grid: tuple[int, int]  # (rows, cols) of MCUs
    order: np.ndarray  # canonical index -> index into component-major raster concatenation
    comp: np.ndarray
    by: np.ndarray
    bx: np.ndarray
    unit: np.ndarray  # MCU index (raster) of every block

    @property
    def n_blocks(self) -> int:
        return int(self.order.shape[0])


def factors(ncomp: int, subsampling: str) -> list[tuple[int, int]]:
    if ncomp == 1:
        return [(1, 1)]
    return [SUBSAMPLING[subsampling], (1, 1), (1, 1)]


@lru_cache(maxsize=256)
def block_grid(height: int, width: int, ncomp: int, subsampling: str) -> BlockGrid:
    fac = factors(ncomp, subsampling)
    hmax, vmax = fac[0]
    mcu_rows, mcu_cols = -(-height // (8 * vmax)), -(-width // (8 * hmax))
    comps, bys, bxs, units, dims = [], [], [], [], []
    for c, (h, v) in enumerate(fac):
        rows, cols = -(-height * v // (8 * vmax)), -(-width * h // (8 * hmax))
        dims.append((rows, cols))
        yy, xx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        comps.append(np.full(rows * cols, c))
        bys.append(yy.ravel())
        bxs.append(xx.ravel())
        units.append((yy.ravel() // v) * mcu_cols + xx.ravel() // h)
    comp, by, bx, unit = (np.concatenate(a) for a in (comps, bys, bxs, units))
    order = np.lexsort((bx, by, comp, unit))  # last key is primary
    arrays = [a[order].astype(np.int32) for a in (comp, by, bx, unit)]
    for a in arrays:
        a.setflags(write=False)
    order.setflags(write=False)
    return BlockGrid(height, width, ncomp, subsampling, tuple(dims), (mcu_rows, mcu_cols), order, *arrays)


_RGB2YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32)
_YCC2RGB = np.linalg.inv(_RGB2YCC.astype(np.float64)).astype(np.float32)


def _blocks(plane: np.ndarray) -> np.ndarray:
    """(H, W) with H, W multiples of 8 -> (H/8 * W/8, 64) in raster block order."""
    h, w = plane.shape
    return plane.reshape(h // 8, 8, w // 8, 8).swapaxes(1, 2).reshape(-1, 64)


def _unblocks(blocks: np.ndarray, rows: int, cols: int) -> np.ndarray:
    return blocks.reshape(rows, cols, 8, 8).swapaxes(1, 2).reshape(rows * 8, cols * 8)


def _component_tables(grid: BlockGrid, qtables: np.ndarray) -> np.ndarray:
    """(ncomp, 64) float32 natural-order tables, one per component (luma table, then chroma)."""
    qt = np.asarray(qtables, dtype=np.float32).reshape(-1, 64)
    return np.ascontiguousarray(qt[[min(c, len(qt) - 1) for c in range(grid.ncomp)]])


def forward(pixels: np.ndarray, qtables: np.ndarray, subsampling: str) -> tuple[BlockGrid, np.ndarray]:
    """uint8 (H, W) or (H, W, 3) -> (grid, (n_blocks, 64) int32 quantized zigzag coefficients, canonical order)."""
    gray = pixels.ndim == 2
    h, w = pixels.shape[:2]
    grid = block_grid(h, w, 1 if gray else 3, subsampling)
    fac = factors(grid.ncomp, subsampling)
    hmax, vmax = fac[0]
    if NATIVE:
        out = np.empty((grid.n_blocks, 64), dtype=np.int32)
        dims = np.asarray(grid.comp_blocks, dtype=np.int32).ravel()
        _native.forward(np.ascontiguousarray(pixels), h, w, 1 if gray else 3, hmax, vmax, dims,
                        _component_tables(grid, qtables), out)
        return grid, out[grid.order]
    ph, pw = grid.mcu_grid[0] * 8 * vmax, grid.mcu_grid[1] * 8 * hmax
    if gray:
        planes = [pixels.astype(np.float32)]
    else:
        # (H*W, 3) @ (3, 3): one product for the colour transform; +128 on chroma folded into the level shift.
        ycc = pixels.reshape(-1, 3).astype(np.float32) @ _RGB2YCC.T
        ycc = ycc.reshape(h, w, 3)
        planes = [ycc[..., 0] + 0.0, ycc[..., 1] + 128.0, ycc[..., 2] + 128.0]
    out = []
    for c, (hc, vc) in enumerate(fac):
        plane = planes[c]
        if (ph, pw) != (h, w):
            plane = np.pad(plane, ((0, ph - h), (0, pw - w)), mode="edge")
        sy, sx = vmax // vc, hmax // hc
        if sy > 1 or sx > 1:  # box-filter chroma subsampling (strided sums: 10x faster than .mean over axes)
            acc = sum(plane[i::sy, j::sx] for i in range(sy) for j in range(sx))
            plane = acc * np.float32(1.0 / (sy * sx))
        rows, cols = grid.comp_blocks[c]
        plane = plane[: rows * 8, : cols * 8]
        coef = (_blocks(plane) - np.float32(128.0)) @ forward_matrix(_key(qtables[min(c, len(qtables) - 1)]))
        out.append(coef)
    coefs = np.rint(np.concatenate(out)).astype(np.int32)
    return grid, coefs[grid.order]


def inverse(grid: BlockGrid, coefs: np.ndarray, qtables: np.ndarray) -> np.ndarray:
    """Canonical-order quantized zigzag coefficients -> uint8 pixels (nearest-neighbour chroma upsampling)."""
    fac = factors(grid.ncomp, grid.subsampling)
    hmax, vmax = fac[0]
    if NATIVE:
        raster = np.empty(coefs.shape, dtype=np.int32)
        raster[grid.order] = coefs
        shape = (grid.height, grid.width) + ((3,) if grid.ncomp == 3 else ())
        out = np.empty(shape, dtype=np.uint8)
        dims = np.asarray(grid.comp_blocks, dtype=np.int32).ravel()
        _native.inverse(raster, grid.height, grid.width, grid.ncomp, hmax, vmax, dims,
                        _component_tables(grid, qtables), out)
        return out
    raster = np.empty(coefs.shape, dtype=np.float32)
    raster[grid.order] = coefs
    h, w = grid.height, grid.width
    out = np.empty((h, w, grid.ncomp), dtype=np.float32)
    start = 0
    for c, (hc, vc) in enumerate(fac):
        rows, cols = grid.comp_blocks[c]
        n = rows * cols
        pix = raster[start : start + n] @ inverse_matrix(_key(qtables[min(c, len(qtables) - 1)]))
        start += n
        plane = _unblocks(pix, rows, cols)
        sy, sx = vmax // vc, hmax // hc
        if sy > 1 or sx > 1:  # nearest-neighbour upsampling through a broadcast view, one copy
            plane = np.broadcast_to(plane[:, None, :, None], (rows * 8, sy, cols * 8, sx)).reshape(rows * 8 * sy, -1)
        out[..., c] = plane[:h, :w]
    if grid.ncomp == 3:
        out = out.reshape(-1, 3) @ _YCC2RGB.T
    out += np.float32(128.5)  # level shift (chroma's +128 cancels its -128), +0.5 so truncation rounds
    np.clip(out, 0, 255, out=out)
    img = out.astype(np.uint8).reshape(h, w, grid.ncomp)
    return img[..., 0] if grid.ncomp == 1 else img


def to_components(grid: BlockGrid, coefs: np.ndarray) -> list[np.ndarray]:
    """Canonical-order zigzag coefficients -> per-component (rows, cols, 8, 8) natural-order arrays (jpeglib's)."""
    raster = np.empty_like(coefs)
    raster[grid.order] = coefs
    out, start = [], 0
    for rows, cols in grid.comp_blocks:
        n = rows * cols
        out.append(raster[start : start + n][:, UNZIGZAG].reshape(rows, cols, 8, 8))
        start += n
    return out


def from_components(grid: BlockGrid, comps: list[np.ndarray]) -> np.ndarray:
    """Inverse of `to_components`."""
    raster = np.concatenate([c.reshape(-1, 64)[:, ZIGZAG] for c in comps])
    return raster[grid.order]
