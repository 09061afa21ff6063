import numpy as np
import pytest
from scipy import ndimage

from vistok.errors import UsageError
from vistok.tokenize.base import Positions
from vistok.tokenize.orders import (
    gradwalk_units,
    grid_order,
    inverse,
    parse_order,
    randsac_segments,
    units_to_tokens,
)

GRIDS = [(1, 1), (1, 9), (9, 1), (2, 2), (3, 5), (5, 3), (7, 7), (8, 8), (6, 10), (13, 7), (16, 16)]
UNIT_ORDERS = ["canonical", "raster", "column", "snake", "zorder", "hilbert", "spiral", "random", "randsac:11",
               "randsac:11,5", "randsac:3", "squares:2", "squares:3"]
TOKEN_ORDERS = ["zigzag", "freq-major", "coarse-to-fine"]


def _input(rows, cols, seed=0, frames=1):
    rng = np.random.default_rng(seed)
    n = rows * cols * frames
    units = np.repeat(np.arange(n), rng.integers(1, 7, n))
    coords = np.stack([units // (rows * cols), np.zeros_like(units), units % cols, units % rows,
                       rng.integers(0, 65, units.size), rng.integers(0, 4, units.size)], axis=1)
    return Positions(units=units, grid=(rows, cols), coords=coords,
                      axes=("frame", "component", "block_x", "block_y", "freq", "level"))


@pytest.mark.parametrize("name", UNIT_ORDERS + TOKEN_ORDERS)
@pytest.mark.parametrize("grid", GRIDS)
def test_every_order_is_a_permutation_with_an_inverse(name, grid):
    inp = _input(*grid)
    res = parse_order(name)(inp, np.random.default_rng(1))
    perm = res.perm
    assert np.array_equal(np.sort(perm), np.arange(inp.units.size))
    tokens = np.random.default_rng(2).integers(0, 1000, inp.units.size)
    np.testing.assert_array_equal(tokens[perm][inverse(perm)], tokens)
    if name in UNIT_ORDERS:  # unit orders keep each unit's tokens together, in canonical order
        u = inp.units[perm]
        assert (np.diff(u) != 0).sum() == inp.n_units - 1
        within = np.diff(perm)[np.diff(u) == 0]
        assert (within == 1).all()


@pytest.mark.parametrize("grid", GRIDS)
def test_spatial_orders_and_their_shapes(grid):
    rows, cols = grid
    for name in ("raster", "column", "snake", "zorder", "hilbert", "spiral"):
        o = grid_order(name, rows, cols)
        assert sorted(o) == list(range(rows * cols))
    y, x = np.divmod(grid_order("hilbert", rows, cols), cols)
    steps = np.abs(np.diff(y)) + np.abs(np.diff(x))
    # 4-neighbour steps everywhere, but one diagonal step allowed on odd x odd grids
    assert (steps == 1).all() or (rows % 2 and cols % 2 and (steps != 1).sum() <= 1 and steps.max() <= 2)
    sy, sx = np.divmod(grid_order("snake", rows, cols), cols)
    assert (np.abs(np.diff(sy)) + np.abs(np.diff(sx)) == 1).all()
    c = grid_order("spiral", rows, cols)[0]  # the spiral starts at the centre
    cy, cx = divmod(int(c), cols)
    assert abs(cy - (rows - 1) / 2) <= 0.5 and abs(cx - (cols - 1) / 2) <= 0.5


def test_zorder_on_a_power_of_two_grid_is_morton():
    o = grid_order("zorder", 4, 4)
    assert list(o[:8]) == [0, 1, 4, 5, 2, 3, 6, 7]


def test_freq_major_puts_every_dc_first():
    inp = _input(4, 4)
    perm = parse_order("freq-major")(inp, np.random.default_rng(0)).perm
    f = inp.coords[perm, 4]
    assert (np.diff(f) >= 0).all()


def test_multi_frame_records_stay_time_major():
    inp = _input(3, 4, frames=3)
    for name in ("hilbert", "random", "randsac:5", "freq-major"):
        perm = parse_order(name)(inp, np.random.default_rng(0)).perm
        frame = inp.coords[perm, 0]
        assert (np.diff(frame) >= 0).all(), name


def test_randsac_segments_are_connected_and_exposed():
    rng = np.random.default_rng(0)
    for rows, cols in [(8, 8), (16, 16), (32, 32), (5, 9), (1, 7)]:
        for _ in range(20):
            seg = randsac_segments(rows, cols, 11, rng).reshape(rows, cols)
            for s in range(seg.max() + 1):
                assert ndimage.label(seg == s)[1] == 1
    inp = _input(16, 16)
    res = parse_order("randsac:11,5")(inp, np.random.default_rng(3))
    segs = res.segments
    assert segs.shape == inp.units.shape
    assert (np.diff(segs) >= 0).all()  # segments come one after the other, ids = visiting rank


@pytest.mark.parametrize("grid", [(8, 8), (5, 7), (1, 3)])
def test_squares_are_whole_tiles_in_random_order(grid):
    rows, cols = grid
    inp = _input(rows, cols)
    draws = [parse_order("squares:2")(inp, np.random.default_rng(s)) for s in range(6)]
    for res in draws:
        seg = res.segments
        assert (np.diff(seg) >= 0).all() and seg.max() + 1 == -(-rows // 2) * -(-cols // 2)
        units = inp.units[res.perm]
        y, x = np.divmod(units, cols)
        for s in range(seg.max() + 1):  # one segment: the units of one 2x2 tile (cut at the edges), raster inside
            uy, ux = y[seg == s], x[seg == s]
            assert len(set(uy // 2)) == 1 and len(set(ux // 2)) == 1
            u = np.unique(units[seg == s])
            assert list(u) == list(dict.fromkeys(units[seg == s]))
            assert u.size == min(2, rows - 2 * (uy[0] // 2)) * min(2, cols - 2 * (ux[0] // 2))
    if rows * cols > 4:  # the tiles' order is drawn per sample
        assert len({tuple(r.perm) for r in draws}) > 1
    with pytest.raises(UsageError, match="tile side"):
        parse_order("squares:0")


def test_randsac_is_seeded():
    inp = _input(8, 8)
    a = parse_order("randsac:11")(inp, np.random.default_rng(9)).perm
    b = parse_order("randsac:11")(inp, np.random.default_rng(9)).perm
    c = parse_order("randsac:11")(inp, np.random.default_rng(10)).perm
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("grid", [(1, 1), (1, 6), (5, 5), (7, 4), (16, 16)])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_gradwalk_visits_every_unit_once_greedily(grid, mode):
    e = np.random.default_rng(4).random(grid)
    walk = gradwalk_units(e, mode)
    assert sorted(walk) == list(range(e.size))
    flat = e.ravel() if mode == "max" else -e.ravel()
    assert walk[0] == int(np.argmax(flat))
    rows, cols = grid
    seen = {int(walk[0])}
    for a, b in zip(walk[:-1], walk[1:]):
        ay, ax = divmod(int(a), cols)
        nbrs = [ny * cols + nx for ny, nx in ((ay - 1, ax), (ay + 1, ax), (ay, ax - 1), (ay, ax + 1))
                if 0 <= ny < rows and 0 <= nx < cols and ny * cols + nx not in seen]
        if nbrs:  # moved to the best free neighbour
            assert flat[b] == max(flat[n] for n in nbrs)
        else:  # stuck: jumped to the best unvisited unit
            assert flat[b] == max(flat[i] for i in range(e.size) if i not in seen)
        seen.add(int(b))


def test_unit_mapping_matches_a_stable_sort():
    rng = np.random.default_rng(0)
    units = np.repeat(np.arange(50), rng.integers(0, 5, 50))
    order = rng.permutation(50)
    rank = np.empty(50, int)
    rank[order] = np.arange(50)
    np.testing.assert_array_equal(units_to_tokens(units, order), np.argsort(rank[units], kind="stable"))


def test_bad_names():
    for bad in ("nope", "randsac:5,11", "randsac:x", "gradwalk:sideways"):
        with pytest.raises(UsageError):
            parse_order(bad)
    with pytest.raises(UsageError, match="--store-order"):
        parse_order("gradwalk:max")(_input(2, 2), np.random.default_rng(0))


def test_randsac_c_and_numpy_paths_draw_the_same_segments(monkeypatch):
    import vistok.tokenize.orders as orders

    if orders._native is None:
        pytest.skip("the C helpers were not built")
    for s in range(40):
        rows, cols = np.random.default_rng(s).integers(1, 40, 2)
        fast = randsac_segments(rows, cols, 11, np.random.default_rng(s))
        monkeypatch.setattr(orders, "_native", None)
        slow = randsac_segments(rows, cols, 11, np.random.default_rng(s))
        monkeypatch.undo()
        np.testing.assert_array_equal(fast, slow)


def test_stored_gradwalk_walks_each_frame_of_a_clip_in_time_order():
    from vistok.tokenize import JpegCodec
    from vistok.tokenize.orders import compute_stored

    codec = JpegCodec(quality=50)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 48, 3)).astype(np.uint8) for _ in range(3)]
    frames[1][:16, :16] = 0  # a flat corner: the walk of frame 1 starts elsewhere than frame 0's
    rec = codec.encode_clip(frames, "clip")
    pos = codec.layout(rec.meta).positions(rec)
    per = pos.grid[0] * pos.grid[1]
    stored = compute_stored(codec, rec, np.stack(frames), ("gradwalk:max", "gradwalk:min"))
    for walk in stored.values():
        assert sorted(walk.tolist()) == list(range(3 * per))  # every unit of every frame once
        assert (np.diff(walk // per) >= 0).all()  # time-major
    # each frame is walked by its own content: the per-frame walks are those of the frames alone
    alone = [compute_stored(codec, codec.encode(f), f, ("gradwalk:max",))["gradwalk-max"] for f in frames]
    np.testing.assert_array_equal(stored["gradwalk-max"], np.concatenate([a + f * per for f, a in enumerate(alone)]))
    rec.orders.update(stored)
    perm = parse_order("gradwalk:max")(codec.layout(rec.meta).positions(rec), rng).perm
    np.testing.assert_array_equal(np.sort(perm), np.arange(len(rec)))
    # without pixels the decoded clip is walked (what a dataset without sources can recompute)
    assert compute_stored(codec, rec, None, ("gradwalk:max",))["gradwalk-max"].shape == (3 * per,)


def test_an_order_without_parameters_refuses_one():
    from vistok.errors import UsageError
    from vistok.tokenize.orders import parse_order

    for name in ("random:3", "raster:2", "hilbert:x"):
        with pytest.raises(UsageError, match="takes no parameter"):
            parse_order(name)


def test_gradwalk_energies_are_the_same_bits_under_other_blas_kernels_and_simd_levels(photo):
    """A stored walk is shard bytes, and a walk from the DC image is what a decoder must recompute: their
    energies may not depend on the CPU. A float32 matmul did (OpenBLAS picks a kernel per CPU), and the walks
    of a 4-bit pixel image, full of ties, came out otherwise on another machine."""
    import hashlib
    import os
    import subprocess
    import sys

    from vistok.tokenize.orders import unit_energy

    img = (photo[100:164, 150:214] >> 4 << 4).copy()
    code = ("import hashlib, numpy as np, sys; from vistok.tokenize.orders import unit_energy; "
            "img = np.frombuffer(sys.stdin.buffer.read(), np.uint8).reshape(64, 64, 3); "
            "print(hashlib.sha256(unit_energy(img, (1, 1), (64, 64)).tobytes() "
            "+ unit_energy(img, (8, 8), (8, 8)).tobytes()).hexdigest())")
    here = hashlib.sha256(unit_energy(img, (1, 1), (64, 64)).tobytes() + unit_energy(img, (8, 8), (8, 8)).tobytes())
    for env in ({"OPENBLAS_CORETYPE": "Haswell"}, {"OPENBLAS_CORETYPE": "Prescott"},
                {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}):
        out = subprocess.run([sys.executable, "-c", code], input=img.tobytes(), capture_output=True, check=True,
                             env={**os.environ, **env})
        assert out.stdout.decode().strip() == here.hexdigest(), env
