"""`dc-first[:INNER]`: the DC image first, then orders a decoder computes from it (no side information)."""

import numpy as np
import pytest

from vistok.errors import UsageError
from vistok.record import TokenRecord
from vistok.tokenize import JpegCodec, WaveletCodec
from vistok.tokenize.orders import frontier_rings, slic_units
from vistok.tokenize.stream import StreamGrammar, StreamSpec, mask_rows, order_record, plan, record_thumbnail

CONTENT = ["dc-first:slic:4", "dc-first:slic:9", "dc-first:gradwalk:max", "dc-first:gradwalk:min"]


def _rec(codec, photo, y=100, x=150, size=64):
    return codec.encode(np.ascontiguousarray(photo[y : y + size, x : x + size]), "r")


def _with_coefficients(codec, rec, coefs):
    grid = codec.record_blocks(rec)
    return TokenRecord("x", codec.tokenize(grid, coefs), dict(rec.meta))


def _plan_of(codec, rec, order, parallel=""):
    o = order_record(codec, rec, StreamSpec.parse(order, parallel, block_size=601), np.random.default_rng(1))
    return o.plan.cells, o.plan.groups, o.plan.segments  # per cell: token counts differ with the AC tokens


@pytest.mark.parametrize("layout", ["rle", "dense"])
def test_the_plan_is_a_function_of_the_dc_tokens_alone(layout, photo):
    codec = JpegCodec(quality=30, layout=layout, subsampling="444")  # an 8x8 grid of units
    rec = _rec(codec, photo)
    grid, coefs = codec.coefficients(rec)
    rng = np.random.default_rng(0)
    ac_changed = coefs.copy()
    ac_changed[:, 1:] = rng.integers(-20, 21, size=ac_changed[:, 1:].shape) * (rng.random(ac_changed[:, 1:].shape) < 0.3)
    other = _with_coefficients(codec, rec, ac_changed)
    assert not np.array_equal(other.tokens, rec.tokens)
    elsewhere = codec.coefficients(_rec(codec, photo, 300, 40))[1]  # the DC image of another part of the photo
    dc_changed = _with_coefficients(codec, rec, np.concatenate([elsewhere[:, :1], coefs[:, 1:]], axis=1))
    parallel = "segments" if layout == "dense" else ""
    for order in CONTENT + ["dc-first", "dc-first:frontier", "dc-first:random"]:
        mode = parallel if order.partition(":")[2].partition(":")[0] in ("slic", "frontier") else ""
        a, b = _plan_of(codec, rec, order, mode), _plan_of(codec, other, order, mode)
        for x, y in zip(a, b):  # cells, groups, segments: not one position moves when only AC tokens change
            assert (x is None and y is None) or np.array_equal(x, y), order
        assert plan(codec, rec.meta, order, np.random.default_rng(1)).order_bits == 0
    # ...and the content orders do follow the DC image
    moved = [o for o in CONTENT if not np.array_equal(_plan_of(codec, rec, o)[0], _plan_of(codec, dc_changed, o)[0])]
    assert moved == CONTENT


@pytest.mark.parametrize("layout", ["rle", "dense"])
def test_every_dc_comes_first_in_canonical_order_and_the_grammar_rebuilds_the_record(layout, photo):
    codec = JpegCodec(quality=30, layout=layout)
    rec = _rec(codec, photo, 60, 200)
    n_blocks = codec.record_blocks(rec).n_blocks
    freq = codec.layout(rec.meta).positions(rec).coords[:, 4]
    for order in CONTENT + ["dc-first:frontier", "dc-first:hilbert"]:
        o = order_record(codec, rec, order, np.random.default_rng(2))
        stream = rec.tokens[o.perm]
        first = freq[o.perm][: n_blocks] if layout == "dense" else None
        if first is not None:
            assert (first == 0).all()
        # the decoder's grammar starts with a pending plan and completes it from the decoded DC image
        p = plan(codec, rec.meta, order, np.random.default_rng(2))
        assert (p.complete_from is not None) == (order in CONTENT)
        g = StreamGrammar(codec, rec.meta, p)
        for t in stream.tolist():
            assert g.allowed()[t]
            g.step(t)
        np.testing.assert_array_equal(g.canonical(), rec.tokens)
        np.testing.assert_array_equal(g.plan.cells, o.plan.cells)


def test_segment_parallel_groups_are_rows_of_dc_then_the_inner_segments(photo):
    codec = JpegCodec(quality=30, layout="dense")
    rec = _rec(codec, photo)
    rows, cols = codec.layout(rec.meta).grid
    o = order_record(codec, rec, StreamSpec.parse("dc-first:slic:6", "segments"), np.random.default_rng(0))
    n_dc = codec.record_blocks(rec).n_blocks
    assert o.plan.n_groups == rows + int(o.segments.max()) + 1
    assert len(np.unique(o.groups[:n_dc])) == rows  # the DC image a row of units at a time
    # the grammar, group by group, asks for exactly the groups training used (completed after the DC rows)
    g = StreamGrammar(codec, rec.meta, plan(codec, rec.meta, StreamSpec.parse("dc-first:slic:6", "segments"), np.random.default_rng(0)))
    n = sum(1 for _ in mask_rows(codec, rec.meta, g.plan, rec.tokens[o.perm]))
    assert n == rec.tokens.size
    f = order_record(codec, rec, StreamSpec.parse("dc-first:frontier", "segments"), np.random.default_rng(0))
    assert f.plan.n_groups == rows + int(frontier_rings(rows, cols).max()) + 1


def test_slic_frontier_and_the_thumbnail():
    ring = frontier_rings(5, 6).reshape(5, 6)
    assert ring[2, 2] == 0 and ring[0, 0] == 2 and ring[4, 5] == 3 and (ring <= 3).all()
    thumb = np.zeros((8, 8, 1))
    yy, xx = np.mgrid[:8, :8]
    disc = (yy - 2) ** 2 + (xx - 5) ** 2 < 6
    thumb[disc] = 600  # a bright disc on a flat ground: one segment, which spills over by a unit at most
    seg = slic_units(thumb, 8).reshape(8, 8)
    assert seg[0, 0] == 0 and len(np.unique(seg)) >= 4 and len(np.unique(seg[disc])) == 1
    assert (seg[~disc] == seg[disc][0]).sum() <= 1
    codec = JpegCodec(quality=50, subsampling="444")
    img = np.zeros((16, 24, 3), np.uint8)
    img[:, 8:] = 200
    rec = codec.encode(img)
    t = record_thumbnail(codec, rec)
    assert t.shape == (2, 3, 3) and t[0, 0, 0] < t[0, 1, 0] == pytest.approx(t[1, 2, 0])


def test_refused_pairs_say_why(photo):
    dense = JpegCodec(quality=30, layout="dense")
    rec = _rec(dense, photo, size=32)
    for codec in (WaveletCodec(levels=2, layout="dense"), JpegCodec(temporal="delta")):
        r = _rec(codec, photo, size=32)
        with pytest.raises(UsageError, match="no DC cells"):
            order_record(codec, r, "dc-first:slic:4", np.random.default_rng(0))
    for bad in ("dc-first:slic:x", "dc-first:frontier:3", "dc-first:nope"):
        with pytest.raises(UsageError):
            plan(dense, rec.meta, bad, np.random.default_rng(0))
    with pytest.raises(UsageError, match="segments"):
        plan(dense, rec.meta, StreamSpec.parse("dc-first:gradwalk:max", "segments"), np.random.default_rng(0))
    with pytest.raises(UsageError, match="scales"):
        plan(dense, rec.meta, StreamSpec.parse("dc-first", "scales"), np.random.default_rng(0))
    with pytest.raises(UsageError, match="variable-length"):
        plan(JpegCodec(quality=30), rec.meta, StreamSpec.parse("dc-first:slic:4", "segments"), np.random.default_rng(0))
    clip = dense.encode_clip([photo[:16, :16], photo[16:32, :16]], "c")
    with pytest.raises(UsageError, match="clips"):
        order_record(dense, clip, "dc-first", np.random.default_rng(0))


def test_show_order_draws_what_follows_the_dc_image(photo):
    from vistok.shards.render import draw_order

    codec = JpegCodec(quality=30, subsampling="444")
    rec = _rec(codec, photo, size=48)
    for order in ("dc-first:frontier", "dc-first:slic:6", "dc-first:gradwalk:max"):
        img = np.asarray(draw_order(codec, rec, order))
        assert img.shape[0] >= 48
    rings = np.asarray(draw_order(codec, rec, "dc-first:frontier"))
    plain = np.asarray(draw_order(codec, rec, "dc-first:gradwalk:max"))  # no segments: no borders
    assert (rings == 255).all(axis=2).sum() > (plain == 255).all(axis=2).sum()


def test_the_study_takes_dc_first_rows():
    from vistok.study import StudyConfig, grid, split_orders

    orders = split_orders("canonical,dc-first:slic:8,dc-first:randsac:11,5,dc-first:gradwalk:max,dc-first:frontier")
    assert orders[2] == "dc-first:randsac:11,5"
    rows = {(o, p) for _, o, p in grid(StudyConfig(orders=orders, parallel=["", "segments", "any"]))}
    assert ("dc-first:slic:8", "segments") in rows and ("dc-first:frontier", "segments") in rows
    assert ("dc-first:gradwalk:max", "segments") not in rows and ("dc-first:gradwalk:max", "any") in rows
    assert ("canonical", "segments") not in rows
