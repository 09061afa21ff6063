"""Token orderings, named and parameterized by a string: ``hilbert``, ``randsac:11,5``, ``gradwalk:max``...

An ordering maps positions (`Positions`: units and coordinates per entry, the unit grid, stored orders)
to a permutation `perm` of the entries, and `inverse(perm)` undoes it. Training and sampling order a
record's *cells* (`vistok.tokenize.stream`: the entries are cells, placed by the geometry alone, so an
order never sees the tokens); the functions work on any entries. Orders over *units* keep each unit's
entries together, in canonical order; orders over frequencies or scales sort by that coordinate.
Multi-frame records are always time-major: a spatial order applies inside each frame, frames in time order.

Spatial, over the unit grid (cached per grid shape):
  raster, column, snake (boustrophedon), zorder (Morton), hilbert (generalized to any rectangle),
  spiral (centre out: rings of growing Chebyshev radius, each walked by angle)
Frequency / scale:
  zigzag (JPEG's in-block order: the canonical order), freq-major (every DC, then each zigzag frequency
  across blocks: progressive spectral selection), coarse-to-fine (wavelet levels, coarsest first)
Random (seeded per sample and epoch by the caller's generator):
  random (a permutation of units), randsac:K[,K2,...] (K Gaussian-blob segments, optionally grouped
  K -> K2 -> ...; see `randsac`), squares:S (S x S tiles of units in random order: RandSAC's square
  segments)
Content-aware (computed at shard time from pixels, stored in the record as ``order.gradwalk-max``):
  gradwalk:max, gradwalk:min
From the DC image (`dc-first:INNER`, see `vistok.tokenize.stream`: every DC first, then the rest of every
block in INNER; these functions of the decoded thumbnail alone need no side information):
  slic:N (SLIC superpixels of the thumbnail), gradwalk:max|min (its gradients), frontier (rings around the
  centre unit; geometry only)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from vistok.errors import UsageError
from vistok.tokenize.base import Positions

try:
    from vistok import _jpegc as _native  # optional C helpers (connected pieces)
except ImportError:  # pragma: no cover - depends on the build
    _native = None


@dataclass
class OrderResult:
    perm: np.ndarray  # (T,) token permutation
    segments: np.ndarray | None = None  # (T,) segment id per token, in the reordered stream (randsac)


def inverse(perm: np.ndarray) -> np.ndarray:
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size, dtype=perm.dtype)
    return inv


def units_to_tokens(units: np.ndarray, unit_order: np.ndarray) -> np.ndarray:
    """Token permutation visiting units in `unit_order`, each unit's tokens in canonical order.

    When `units` is non-decreasing each unit's tokens are one contiguous run: the permutation is those runs
    concatenated in the new order, built with two `np.repeat`s (no sort). Otherwise a stable argsort
    gathers each unit's tokens, keeping their canonical relative order.
    """
    if units.size == 0:
        return np.zeros(0, dtype=np.int64)
    if (np.diff(units) < 0).any():  # units interleaved in canonical order (wavelet pyramids): gather by sorting
        rank = np.empty(max(int(units.max()) + 1, unit_order.size), dtype=np.int64)
        rank[unit_order] = np.arange(unit_order.size)
        return np.argsort(rank[units], kind="stable")
    counts = np.bincount(units, minlength=unit_order.size)
    starts = np.cumsum(counts) - counts
    lengths = counts[unit_order]
    out_start = np.cumsum(lengths) - lengths
    return np.arange(units.size) + np.repeat(starts[unit_order] - out_start, lengths)


# --- spatial orders over one frame's grid --------------------------------------------------------------
def _sgn(v: int) -> int:
    return (v > 0) - (v < 0)


def _hilbert_cells(rows: int, cols: int) -> list[tuple[int, int]]:
    """A Hilbert-like curve over any rows x cols rectangle (the "generalized Hilbert" construction).

    The region is described by an origin and two axis vectors: `a` along the long side (the curve
    leaves through its far end) and `b` across. A region much longer than wide is cut in two along `a`;
    otherwise it is cut in three (the Hilbert "U": up half of `b`, along `a`, back down), each piece
    recursing with suitably rotated axes. Halves are nudged to even lengths so the pieces join; all
    steps are between 4-neighbours except, on some odd x odd grids, one diagonal step.
    """
    out: list[tuple[int, int]] = []

    def walk(x: int, y: int, ax: int, ay: int, bx: int, by: int) -> None:
        w, h = abs(ax + ay), abs(bx + by)
        dax, day, dbx, dby = _sgn(ax), _sgn(ay), _sgn(bx), _sgn(by)
        if h == 1:
            out.extend((y + day * i, x + dax * i) for i in range(w))
            return
        if w == 1:
            out.extend((y + dby * i, x + dbx * i) for i in range(h))
            return
        ax2, ay2, bx2, by2 = ax // 2, ay // 2, bx // 2, by // 2
        w2, h2 = abs(ax2 + ay2), abs(bx2 + by2)
        if 2 * w > 3 * h:  # long and thin: two halves along a
            if w2 % 2 and w > 2:
                ax2, ay2 = ax2 + dax, ay2 + day
            walk(x, y, ax2, ay2, bx, by)
            walk(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
        else:  # the U: up, across, down
            if h2 % 2 and h > 2:
                bx2, by2 = bx2 + dbx, by2 + dby
            walk(x, y, bx2, by2, ax2, ay2)
            walk(x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
            walk(x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby), -bx2, -by2, -(ax - ax2), -(ay - ay2))

    if cols >= rows:
        walk(0, 0, cols, 0, 0, rows)
    else:
        walk(0, 0, 0, rows, cols, 0)
    return out


def _morton(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.uint64) & np.uint64(0xFFFF)
    for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


@lru_cache(maxsize=512)
def grid_order(name: str, rows: int, cols: int) -> np.ndarray:
    """Raster indices of a rows x cols grid in the named spatial order (read-only, cached)."""
    y, x = np.divmod(np.arange(rows * cols), cols)
    if name == "raster":
        out = np.arange(rows * cols)
    elif name == "column":
        out = np.lexsort((y, x))
    elif name == "snake":
        xs = np.where(y % 2 == 1, cols - 1 - x, x)
        out = np.lexsort((xs, y))
    elif name == "zorder":
        out = np.argsort(_morton(y) << np.uint64(1) | _morton(x), kind="stable")
    elif name == "hilbert":
        cells = _hilbert_cells(rows, cols)
        out = np.array([r * cols + c for r, c in cells], dtype=np.int64)
    elif name == "spiral":
        dy, dx = y - (rows - 1) / 2, x - (cols - 1) / 2
        ring = np.floor(np.maximum(np.abs(dy), np.abs(dx)) + 0.5)  # Chebyshev ring around the centre
        ang = np.mod(np.arctan2(dy, dx), 2 * np.pi)
        out = np.lexsort((ang, ring))
    else:
        raise UsageError(f"unknown spatial order {name!r}")
    out = out.astype(np.int64)
    out.setflags(write=False)
    return out


def _per_frame(inp: Positions, frame_order: Callable[[int], np.ndarray]) -> np.ndarray:
    """Unit order: frames in time order, `frame_order(f)` (raster indices within a frame) inside each."""
    per = inp.grid[0] * inp.grid[1]
    frames = max(1, -(-inp.n_units // per))
    if frames == 1:
        return frame_order(0)
    return np.concatenate([f * per + frame_order(f) for f in range(frames)])


def spatial(name: str) -> Callable:
    def order(inp: Positions, rng: np.random.Generator) -> OrderResult:
        g = grid_order(name, *inp.grid)
        return OrderResult(units_to_tokens(inp.units, _per_frame(inp, lambda f: g)))

    return order


# --- frequency / scale ---------------------------------------------------------------------------------
def _axis(inp: Positions, name: str) -> np.ndarray:
    if inp.coords is None or name not in inp.axes:
        raise UsageError(f"this order needs the {name!r} coordinate axis, which the codec does not have")
    return inp.coords[:, inp.axes.index(name)]


def canonical(inp: Positions, rng: np.random.Generator) -> OrderResult:
    return OrderResult(np.arange(inp.units.size))


def _by_axis(inp: Positions, name: str, descending: bool = False) -> OrderResult:
    """Tokens sorted by one coordinate axis, canonical order among equals, frames kept in time order."""
    key = _axis(inp, name)
    keys = [np.arange(inp.units.size), -key if descending else key]
    if "frame" in inp.axes:
        keys.append(_axis(inp, "frame"))
    return OrderResult(np.lexsort(keys))


def freq_major(inp: Positions, rng: np.random.Generator) -> OrderResult:
    """All DC coefficients first, then each zigzag frequency across blocks (frames stay in time order)."""
    return _by_axis(inp, "freq")


def coarse_to_fine(inp: Positions, rng: np.random.Generator) -> OrderResult:
    """Wavelet levels coarsest first (the highest level index is the coarsest); stable otherwise."""
    return _by_axis(inp, "level", descending=True)


def next_scale(inp: Positions, rng: np.random.Generator) -> OrderResult:
    """Multi-scale codes coarsest scale first (VAR's next-scale prediction), raster within a scale."""
    return _by_axis(inp, "scale")


# --- random ---------------------------------------------------------------------------------------------
def random_units(inp: Positions, rng: np.random.Generator) -> OrderResult:
    """A seeded random permutation of the units of each frame."""
    per = inp.grid[0] * inp.grid[1]
    return OrderResult(units_to_tokens(inp.units, _per_frame(inp, lambda f: rng.permutation(per))))


@lru_cache(maxsize=1)
def _ndimage():
    import scipy.ndimage  # imported once: `from scipy import ndimage` in a hot path costs ~100 us per call

    return scipy.ndimage


_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


@lru_cache(maxsize=64)
def _unit_grid(n: int) -> np.ndarray:
    return np.linspace(-2, 2, n) if n > 1 else np.zeros(1)


def randsac_segments(rows: int, cols: int, k: int, rng: np.random.Generator, connected: bool = True) -> np.ndarray:
    """(rows*cols,) segment id per cell: the argmax over K random Gaussian blobs on a [-2, 2]^2 grid.

    RandSAC's sampling: means ~ U(-1.75, 1.75)^2, standard deviations ~ U(0.5, 1). A blob's region (the
    cells where its density is highest) is one connected piece about 93% of the time; a wide blob's region
    can be cut by a narrow one, and then each 4-connected piece becomes a segment of its own, so every
    segment is connected (there may be a few more than K). Ids are renumbered 0..K'-1.
    """
    mu = rng.uniform(-1.75, 1.75, size=(k, 2))
    sd = rng.uniform(0.5, 1.0, size=k)
    if _native is not None:
        seg = np.empty(rows * cols, dtype=np.int64)
        _native.blob_segments(mu, sd, rows, cols, seg)
    else:
        ys, xs = _unit_grid(rows), _unit_grid(cols)
        inv = (0.5 / sd**2)[:, None]
        # log density is separable: a_k(y) + b_k(x), so one (rows, cols, K) sum feeds the argmax
        a = (-(ys[None, :] - mu[:, :1]) ** 2 * inv - 2 * np.log(sd)[:, None]).astype(np.float32).T  # (rows, K)
        b = (-(xs[None, :] - mu[:, 1:]) ** 2 * inv).astype(np.float32).T  # (cols, K)
        seg = (a[:, None, :] + b[None, :, :]).reshape(-1, k).argmax(axis=1)  # contiguous reduction over K
    return _connected_pieces(seg, rows, cols) if connected else seg


def _connected_pieces(seg: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Relabel so that every label is one 4-connected piece (numbered by first cell in raster order).

    One `ndimage.label` call on a (2 rows - 1, 2 cols - 1) picture whose odd pixels join two cells only
    when they share a segment: its 4-connected components are exactly the pieces.
    """
    if _native is not None:  # union-find in C (vistok/_jpegc.c), same numbering
        out = np.empty(rows * cols, dtype=np.int64)
        _native.label_pieces(np.ascontiguousarray(seg, dtype=np.int64), rows, cols, out)
        return out
    s2 = seg.reshape(rows, cols)
    big = np.zeros((2 * rows - 1, 2 * cols - 1), dtype=bool)
    big[::2, ::2] = True
    big[::2, 1::2] = s2[:, 1:] == s2[:, :-1]
    big[1::2, ::2] = s2[1:, :] == s2[:-1, :]
    labels, _ = _ndimage().label(big, structure=_CROSS)
    return labels[::2, ::2].ravel() - 1


def randsac(levels: tuple[int, ...]) -> Callable:
    """K segments in random order, units inside a segment in raster order; with K -> K2 -> ..., segments are
    grouped by a coarser blob draw (each segment joins the group holding most of its cells), and groups are
    visited in random order, each group's segments in random order. `segments` gives each token's
    finest segment id (a trainer can predict a whole segment in parallel)."""

    def order(inp: Positions, rng: np.random.Generator) -> OrderResult:
        rows, cols = inp.grid
        fine = randsac_segments(rows, cols, levels[0], rng)  # cell -> fine segment
        n_fine = int(fine.max()) + 1
        fine_to_group = np.arange(n_fine)  # fine segment -> its group at the current level
        keys = [rng.permutation(n_fine)]  # random rank of each fine segment inside its group
        member = fine  # cell -> group at the current level
        for k in levels[1:]:
            coarse = randsac_segments(rows, cols, k, rng, connected=False)  # groups only vote: any shape will do
            n_cur, n_coarse = int(member.max()) + 1, int(coarse.max()) + 1
            votes = np.bincount(member * n_coarse + coarse, minlength=n_cur * n_coarse).reshape(n_cur, n_coarse)
            up = votes.argmax(axis=1)  # current group -> the coarse blob holding most of its cells
            fine_to_group, member = up[fine_to_group], up[member]
            keys.append(rng.permutation(int(up.max()) + 1)[fine_to_group])
        if len(keys) == 1:  # one level: the random permutation is the rank
            rank_of = keys[0]
        else:
            rank_of = np.empty(n_fine, dtype=np.int64)
            rank_of[np.lexsort(keys)] = np.arange(n_fine)  # coarsest level is the primary key
        return _by_segment(inp, rank_of[fine])

    return order


def _by_segment(inp: Positions, rank: np.ndarray) -> OrderResult:
    """Units visited segment by segment (`rank`: a frame's unit -> its segment's visit rank), raster inside a
    segment, every frame alike; `segments` gives each token its segment's rank."""
    unit_order = np.argsort(rank, kind="stable")
    perm = units_to_tokens(inp.units, _per_frame(inp, lambda f: unit_order))
    frames = -(-inp.n_units // len(rank))
    seg_of_unit = rank if frames == 1 else np.tile(rank, frames)
    return OrderResult(perm, seg_of_unit[inp.units[perm]])


def squares(side: int) -> Callable:
    """Tiles of side x side units (smaller at the right and bottom edges when side does not divide the grid)
    visited in random order, units inside a tile in raster order; `segments` gives each token's tile (its
    visit rank), so a trainer can predict a whole tile in parallel (RandSAC's square segments, Table 4)."""

    def order(inp: Positions, rng: np.random.Generator) -> OrderResult:
        rows, cols = inp.grid
        y, x = np.divmod(np.arange(rows * cols), cols)
        tiles_x = -(-cols // side)
        tile = (y // side) * tiles_x + x // side  # unit -> tile, raster over tiles
        return _by_segment(inp, rng.permutation(int(tile.max()) + 1)[tile])  # a unit's tile's visit rank

    return order


# --- content-aware --------------------------------------------------------------------------------------
def gradwalk_units(energy: np.ndarray, mode: str = "max") -> np.ndarray:
    """Walk over a (rows, cols) grid of unit energies: start at the best unit, step to the unvisited
    4-neighbour with the largest (mode=max) or smallest (min) energy, and when stuck jump to the best
    unvisited unit. Ties go to the lowest raster index. Returns raster indices, each exactly once."""
    rows, cols = energy.shape
    e = energy.ravel().astype(np.float64)
    score = e if mode == "max" else -e
    visited = np.zeros(e.size, dtype=bool)
    by_score = np.argsort(-score, kind="stable")  # best first, ties by index
    nxt_best = 0
    out = np.empty(e.size, dtype=np.int64)
    cur = int(by_score[0])
    for i in range(e.size):
        out[i] = cur
        visited[cur] = True
        if i == e.size - 1:
            break
        y, x = divmod(cur, cols)
        best, best_s = -1, -np.inf
        for ny, nx in ((y - 1, x), (y, x - 1), (y, x + 1), (y + 1, x)):
            if 0 <= ny < rows and 0 <= nx < cols:
                j = ny * cols + nx
                if not visited[j] and (score[j] > best_s or (score[j] == best_s and j < best)):
                    best, best_s = j, score[j]
        if best < 0:
            while visited[by_score[nxt_best]]:
                nxt_best += 1
            best = int(by_score[nxt_best])
        cur = best
    return out


def walk_bits(walk: np.ndarray, grid: tuple[int, int]) -> float:
    """Bits of a simple code for a walk of the kind `gradwalk_units` makes (side information a decoder needs).

    The first unit costs log2(N); each later step goes to an unvisited 4-neighbour when there is one (log2 of
    how many there are) and otherwise jumps to any unvisited unit (log2 of how many are left).
    """
    rows, cols = grid
    n = rows * cols
    visited = np.zeros(n, dtype=bool)
    bits = math.log2(n) if n > 1 else 0.0
    for i in range(n - 1):
        cur = int(walk[i])
        visited[cur] = True
        y, x = divmod(cur, cols)
        k = sum(1 for ny, nx in ((y - 1, x), (y, x - 1), (y, x + 1), (y + 1, x))
                if 0 <= ny < rows and 0 <= nx < cols and not visited[ny * cols + nx])
        bits += math.log2(k if k else n - 1 - i)
    return bits


def stored(name: str) -> Callable:
    def order(inp: Positions, rng: np.random.Generator) -> OrderResult:
        if name not in inp.stored:
            raise UsageError(f"order {name.replace('-', ':')!r} is computed at shard time: reshard with "
                             f"--store-order {name.replace('-', ':')}")
        return OrderResult(units_to_tokens(inp.units, np.asarray(inp.stored[name], dtype=np.int64)))

    return order


def unit_energy(pixels: np.ndarray, unit_px: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """Mean gradient magnitude of the luma inside each unit: (rows, cols).

    The same bits on every machine, so a walk (whose ties go to the lowest index) is too: float64 elementwise
    operations only, each correctly rounded, and sums in a fixed order. A float32 matmul for the luma gave
    other last bits under another BLAS kernel (OpenBLAS picks one per CPU), and with them other walks."""
    img = pixels.astype(np.float64)
    luma = img if img.ndim == 2 else 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
    gy, gx = np.gradient(luma)
    mag = np.sqrt(gy * gy + gx * gx)
    rows, cols = grid
    uh, uw = unit_px
    pad = np.pad(mag, ((0, rows * uh - mag.shape[0]), (0, cols * uw - mag.shape[1])), mode="edge")
    blocks = pad.reshape(rows, uh, cols, uw)
    total = np.zeros((rows, cols))
    for dy in range(uh):  # one (rows, cols) add per pixel of a unit, in raster order: no reduction tree
        for dx in range(uw):
            total += blocks[:, dy, :, dx]
    return total / (uh * uw)


def compute_stored(codec, record, pixels: np.ndarray | None, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Shard-time orders (`--store-order`): unit orders computed from the pixels, keyed for the record.

    `pixels`: the image, or a clip's (T, H, W[, 3]) frames (None: the record's decoded pixels). A clip is
    walked frame by frame, each frame by its own content, frames in time order (clip orders are time-major).
    """
    out = {}
    frames = int(record.meta.get("frames", 1))
    for name in names:
        base, _, mode = name.partition(":")
        if base != "gradwalk" or mode not in ("max", "min"):
            raise UsageError(f"--store-order takes {' or '.join(STORED_ORDERS)}, got {name!r}")
        if pixels is None:
            pixels = codec.decode(record)
        pos = codec.layout(record.meta).positions(record)
        if frames > 1:
            per = pos.grid[0] * pos.grid[1]
            walks = [gradwalk_units(unit_energy(pixels[f], pos.unit_pixels, pos.grid), mode) + f * per
                     for f in range(frames)]
            out[stored_key(name)] = np.concatenate(walks).astype(np.int32)
            continue
        energy = unit_energy(pixels, pos.unit_pixels, pos.grid)
        out[stored_key(name)] = gradwalk_units(energy, mode).astype(np.int32)
    return out


# --- from the DC image (dc-first) -----------------------------------------------------------------------
DC_ORDERS = ("slic:N", "gradwalk:max", "gradwalk:min", "frontier")
SLIC_COMPACTNESS = 0.1  # part of what `slic:N` means; slic rescales the image to [0, 1], so 0.1 (not its
# default 10, meant for CIELAB's 0..100) lets colour weigh against distance on a thumbnail of a few units


def _luma(thumb: np.ndarray) -> np.ndarray:
    return thumb[..., 0].astype(np.float64)  # JPEG's first component is luma (gray: the only one)


def slic_units(thumb: np.ndarray, n: int) -> np.ndarray:
    """(rows*cols,) a segment id per unit: `skimage.segmentation.slic` with about `n` segments on the DC
    image (rows, cols, components), each component scaled to [0, 1] over the image, connectivity enforced,
    `start_label` 0. SLIC is deterministic (its seeds lie on a regular grid), so the ids are a function of the
    thumbnail alone. Segments are renumbered by their first unit in raster order."""
    from skimage.segmentation import slic

    t = thumb.astype(np.float64)
    rows, cols, c = t.shape
    if rows * cols == 1:
        return np.zeros(1, dtype=np.int64)
    seg = slic(t if c > 1 else t[..., 0], n_segments=n, compactness=SLIC_COMPACTNESS, start_label=0,
               channel_axis=-1 if c > 1 else None, convert2lab=False, enforce_connectivity=True).ravel()
    _, first, inv = np.unique(seg, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inv.ravel()]


def frontier_rings(rows: int, cols: int) -> np.ndarray:
    """(rows*cols,) each unit's ring: its Chebyshev distance to the centre unit ((rows-1)//2, (cols-1)//2),
    so ring r + 1 is every unit touching (8-neighbours) the region of rings 0..r."""
    y, x = np.divmod(np.arange(rows * cols), cols)
    return np.maximum(np.abs(y - (rows - 1) // 2), np.abs(x - (cols - 1) // 2)).astype(np.int64)


def dc_unit_order(name: str, thumb: np.ndarray | None, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """(unit order as raster indices, the segment (visit rank) of each unit or None) of a `dc-first` inner
    order computed from the DC image `thumb` (rows, cols, components); see `DC_ORDERS`."""
    rows, cols = grid
    base, _, arg = name.partition(":")
    if base == "frontier" and not arg:
        ring = frontier_rings(rows, cols)
        y, x = np.divmod(np.arange(rows * cols), cols)
        ang = np.mod(np.arctan2(y - (rows - 1) // 2, x - (cols - 1) // 2), 2 * np.pi)
        return np.lexsort((ang, ring)).astype(np.int64), ring  # ring by ring, each walked by angle
    if thumb is None:
        raise UsageError(f"order {name!r} is computed from the DC image, which is not decoded yet")
    if base == "gradwalk" and arg in ("max", "min"):
        gy, gx = np.gradient(_luma(thumb)) if min(rows, cols) > 1 else (np.zeros((rows, cols)),) * 2
        return gradwalk_units(np.sqrt(gy * gy + gx * gx), arg), None  # correctly rounded ops: one walk everywhere
    seg = slic_units(thumb, int(arg))
    return np.argsort(seg, kind="stable").astype(np.int64), seg  # segment by segment, raster inside


# --- the registry ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Order:
    """An ordering as `--order` names it: `name` (``randsac``) and its parameters as written (`arg`: ``11,5``).

    The traits are declared once per order, and everything that refuses or allows a request reads them (the
    stream plan, `vistok.tokenize.parallel`'s modes, the CLI's help, the study's grid). Calling an order on
    `Positions` and a generator gives its permutation (`OrderResult`). A new order is a subclass registered
    with `register_order` in its own module; `parse_order` finds it by name.
    """

    name: str
    arg: str = ""

    params: ClassVar[str] = ""  # the parameters `--order` takes after the name, as help shows them (":S")
    example: ClassVar[str] = ""  # parameters of one valid instance (":2"), for help and the test matrices
    summary: ClassVar[str] = ""  # one line for the help
    over_units: ClassVar[bool] = False  # moves whole units (a cell that spans every unit cannot move)
    axis: ClassVar[str | None] = None  # sorts cells by this coordinate axis, which must be known before a token
    scales: ClassVar[bool] = False  # its axis is a scale: `--parallel scales` predicts each scale
    descending: ClassVar[bool] = False  # sorts by its axis from the highest value (a wavelet's coarsest level)
    segmented: ClassVar[bool] = False  # gives segments (`--parallel segments` predicts each one)
    random: ClassVar[bool] = False  # draws from the generator (a new order per document)
    uniform: ClassVar[bool] = False  # every order of the units equally likely (`--parallel any` and `masked:R`)
    stored: ClassVar[bool] = False  # computed from the pixels at shard time (`--store-order`), sent as side information
    after_dc: ClassVar[bool] = False  # a geometry order that may follow the DC image (`dc-first:NAME`)
    dc_first: ClassVar[bool] = False  # sends a codec's DC cells first (planned over cells by `stream.plan`)
    thumbnail: ClassVar[bool] = False  # computed from the decoded DC image (the plan is pending until it is decoded)
    adaptive: ClassVar[bool] = False  # chosen by the model while decoding, a group at a time (`choose`)

    @classmethod
    def parse(cls, name: str, arg: str) -> Order:
        """The order named `name` with parameters `arg`, checked (a `UsageError` says what it takes)."""
        if arg:
            raise UsageError(f"order {name} takes no parameter (got {name}:{arg!r})")
        return cls(name)

    def __str__(self) -> str:
        return f"{self.name}:{self.arg}" if self.arg else self.name

    def __call__(self, inp: Positions, rng: np.random.Generator) -> OrderResult:
        raise NotImplementedError

    def choose(self, logp: np.ndarray, k: int) -> np.ndarray:
        """An adaptive order's rule: (k,) ascending indices of the candidate places (rows of `logp`, (R, V)
        log-probabilities of the model's distribution at each) that make the next group."""
        raise NotImplementedError


_ORDERS: dict[str, type[Order]] = {}


def register_order(*names: str) -> Callable[[type[Order]], type[Order]]:
    """Register an `Order` class under one or more names (a class decorator)."""

    def add(cls: type[Order]) -> type[Order]:
        for name in names:
            if name in _ORDERS:
                raise ValueError(f"order {name!r} is registered twice")
            _ORDERS[name] = cls
        return cls

    return add


def order_names() -> list[str]:
    """Every registered order's name, in registration order."""
    return list(_ORDERS)


def order_examples() -> list[str]:
    """One valid instance of every registered order (``squares:2``): the test matrices' orders."""
    return [name + cls.example for name, cls in _ORDERS.items()]


def order_help() -> str:
    """Every order as `--order` takes it with its summary, one entry per class (its names together)."""
    by_class: dict[type[Order], list[str]] = {}
    for name, cls in _ORDERS.items():
        by_class.setdefault(cls, []).append(name)
    return "; ".join(f"{', '.join(names)}{cls.params} — {cls.summary}" for cls, names in by_class.items())


def adaptive_orders() -> list[str]:
    """The orders a model chooses while decoding (`Order.adaptive`: `confident`)."""
    return [name for name, cls in _ORDERS.items() if cls.adaptive]


def order_class(name: str) -> type[Order]:
    """The class registered under `name` (its declared traits), without parsing parameters."""
    return _ORDERS[name]


def order_usages() -> list[str]:
    """Every order as `--order` takes it (``randsac:K[,K2...]``), for help and messages."""
    return [name + cls.params for name, cls in _ORDERS.items()]


@lru_cache(maxsize=256)
def parse_order(text: str) -> Order:
    """`--order` text (``hilbert``, ``randsac:11,5``, ``dc-first:slic:4``) -> its registered `Order`, checked."""
    name, _, arg = str(text).partition(":")
    cls = _ORDERS.get(name)
    if cls is None:
        raise UsageError(f"unknown order {text!r}; available: {', '.join(order_usages())}")
    return cls.parse(name, arg)


def as_order(order: str | Order) -> Order:
    return order if isinstance(order, Order) else parse_order(order)


@register_order("canonical", "zigzag", "time-major")
class Canonical(Order):
    summary = "the codec's own order (zigzag: JPEG's in-block order; time-major: frames in time)"
    after_dc = True

    def __call__(self, inp, rng):
        return canonical(inp, rng)


@register_order("raster", "column", "snake", "zorder", "hilbert", "spiral")
class Spatial(Order):
    summary = "units over the grid: rows, columns, boustrophedon, Morton, generalized Hilbert, centre-out spiral"
    over_units = after_dc = True

    def __call__(self, inp, rng):
        g = grid_order(self.name, *inp.grid)
        return OrderResult(units_to_tokens(inp.units, _per_frame(inp, lambda f: g)))


@register_order("freq-major")
class FreqMajor(Order):
    summary = "every DC, then each zigzag frequency across blocks (progressive spectral selection)"
    axis = "freq"

    def __call__(self, inp, rng):
        return freq_major(inp, rng)


@register_order("coarse-to-fine")
class CoarseToFine(Order):
    summary = "wavelet levels, coarsest first"
    axis, scales, descending = "level", True, True

    def __call__(self, inp, rng):
        return coarse_to_fine(inp, rng)


@register_order("next-scale")
class NextScale(Order):
    summary = "a multi-scale code's scales, coarsest first (VAR)"
    axis, scales = "scale", True

    def __call__(self, inp, rng):
        return next_scale(inp, rng)


@register_order("random")
class Random(Order):
    summary = "a seeded random permutation of the units"
    over_units = random = uniform = after_dc = True

    def __call__(self, inp, rng):
        return random_units(inp, rng)


@register_order("randsac")
class RandSAC(Order):
    params, example = ":K[,K2...]", ":4,2"
    summary = "K Gaussian-blob segments in random order, grouped K -> K2 -> ... (RandSAC)"
    over_units = random = segmented = after_dc = True

    @classmethod
    def parse(cls, name, arg):
        try:
            levels = tuple(int(v) for v in arg.split(",")) if arg else (11,)
        except ValueError:
            levels = ()
        if not levels or any(k < 1 for k in levels) or list(levels) != sorted(levels, reverse=True):
            raise UsageError(f"randsac takes decreasing segment counts, e.g. randsac:11,5 (got {name}:{arg!r})")
        return cls(name, arg)

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.arg.split(",")) if self.arg else (11,)

    def __call__(self, inp, rng):
        return randsac(self.levels)(inp, rng)


@register_order("squares")
class Squares(Order):
    params, example = ":S", ":2"
    summary = "S x S tiles of units in random order (RandSAC's square segments)"
    over_units = random = segmented = after_dc = True

    @classmethod
    def parse(cls, name, arg):
        if not arg.isdigit() or int(arg) < 1:
            raise UsageError(f"squares takes a tile side in units, e.g. squares:2 (got {name}:{arg})")
        return cls(name, arg)

    def __call__(self, inp, rng):
        return squares(int(self.arg))(inp, rng)


@register_order("gradwalk")
class GradWalk(Order):
    params, example = ":max|min", ":max"
    summary = "a walk by gradient energy, computed at shard time (--store-order) and sent as side information"
    over_units = stored = True

    @classmethod
    def parse(cls, name, arg):
        if arg not in ("max", "min"):
            raise UsageError(f"unknown order {name}:{arg}; gradwalk takes max or min")
        return cls(name, arg)

    @property
    def key(self) -> str:
        """The record's key of the stored walk (``gradwalk-max``)."""
        return stored_key(str(self))

    def __call__(self, inp, rng):
        return stored(self.key)(inp, rng)


def stored_names() -> list[str]:
    """The orders `--store-order` computes at shard time (``gradwalk:max``...)."""
    return [f"{n}:{v}" for n, cls in _ORDERS.items() if cls.stored for v in cls.params[1:].split("|")]


STORED_ORDERS = tuple(stored_names())


def stored_key(name: str) -> str:
    return name.replace(":", "-")


# --- dc-first and the orders it computes from the DC image ---------------------------------------------------
@dataclass(frozen=True)
class DcImageOrder:
    """A unit order that `dc-first` computes from the decoded DC image (`dc_unit_order`): slic:N,
    gradwalk:max|min, or frontier (geometry, whose rings are its segments)."""

    name: str
    arg: str = ""

    @property
    def segmented(self) -> bool:
        return self.name in ("slic", "frontier")

    @property
    def thumbnail(self) -> bool:
        return self.name != "frontier"

    def __str__(self) -> str:
        return f"{self.name}:{self.arg}" if self.arg else self.name


DC_IMAGE_ORDERS = ("slic", "gradwalk", "frontier")


def check_dc_order(name: str) -> DcImageOrder:
    base, _, arg = name.partition(":")
    ok = (base == "frontier" and not arg) or (base == "gradwalk" and arg in ("max", "min")) or (
        base == "slic" and arg.isdigit() and int(arg) >= 1)
    if not ok:
        raise UsageError(f"dc-first takes an inner order of {', '.join(DC_ORDERS)} or any unit order, got {name!r}")
    return DcImageOrder(base, arg)


@register_order("dc-first")
class DcFirst(Order):
    params, example = "[:INNER]", ":randsac:3"
    summary = (f"every DC first, then the rest of every block in INNER: {', '.join(DC_ORDERS)} (from the DC image), "
               "or a geometry order")
    dc_first = True

    @classmethod
    def parse(cls, name, arg):
        inner = arg or "canonical"
        if inner.partition(":")[0] in DC_IMAGE_ORDERS:
            check_dc_order(inner)
        else:
            parse_order(inner)
        return cls(name, arg)

    @property
    def inner(self) -> Order | DcImageOrder:
        """The order of the cells after the DC image: a geometry order, or one computed from the DC image."""
        inner = self.arg or "canonical"
        if inner.partition(":")[0] in DC_IMAGE_ORDERS:
            return check_dc_order(inner)
        return parse_order(inner)

    @property
    def segmented(self) -> bool:  # type: ignore[override]
        return self.inner.segmented

    @property
    def thumbnail(self) -> bool:  # type: ignore[override]
        return isinstance(self.inner, DcImageOrder) and self.inner.thumbnail

    @property
    def random(self) -> bool:  # type: ignore[override]
        return getattr(self.inner, "random", False)

    def __call__(self, inp, rng):
        raise UsageError(f"order {self} sends a codec's DC cells first: plan it with vistok.tokenize.stream.plan")
