"""`--codec jpeg-refine`: quality levels as refinement tokens, exact to the finest quality's JPEG."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data

from vistok.errors import CodecError
from vistok.record import TokenRecord
from vistok.tokenize import JpegCodec, JpegRefineCodec, jpegfile
from vistok.tokenize.dct import from_components
from vistok.tokenize.stream import StreamGrammar, StreamSpec, plan


def _photos():
    return [data.astronaut()[100:196, 140:220].copy(), data.camera()[::4, ::4].copy(), data.coffee()[:50, :70].copy()]


@pytest.mark.parametrize("sub", ["420", "444"])
def test_the_finest_level_is_the_plain_codecs_coefficients_and_its_jpeg(sub):
    codec = JpegRefineCodec([10, 20, 40, 80], subsampling=sub)
    for img in _photos():
        rec = codec.encode(img)
        grid, finest = codec.level_values(rec)
        plain = JpegCodec(quality=80, subsampling=sub)
        assert np.array_equal(finest, plain.coefficients(plain.encode(img))[1])
        info, comps, _, _ = jpegfile.read_coefficients(codec.to_jpeg(rec), 10**8)
        assert np.array_equal(from_components(grid, comps), finest)  # decode --out x.jpg writes those
        assert np.array_equal(codec.decode(rec), plain.decode(plain.encode(img)))
        _, coarse = codec.level_values(rec, 0)
        q10 = JpegCodec(quality=10, subsampling=sub)
        assert np.array_equal(coarse, q10.coefficients(q10.encode(img))[1])


def test_worst_case_images_stay_in_every_levels_range():
    """The bounds (2048 / Q for the first level, Q_prev / 2Q + 1 for a refinement) hold on extreme content:
    noise, checkerboards, flat black and white (encode raises if a value falls outside)."""
    rng = np.random.default_rng(0)
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    for q in ([1, 2, 3, 100], [10, 20, 40, 80], [5, 95]):
        codec = JpegRefineCodec(q, subsampling="444")
        for img in (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), board, np.zeros((16, 16), np.uint8),
                    np.full((16, 16, 3), 255, np.uint8)):
            codec.decode(codec.encode(img))


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_any_stream_the_grammar_allows_decodes_and_its_levels_invert(draw):
    """Random grammar-valid records (every value anywhere in its cell's range): refinements of their values give
    the tokens back, and they decode to an image."""
    q = draw.draw(st.sampled_from([[10, 20, 40, 80], [30, 60], [50]]))
    codec = JpegRefineCodec(q, subsampling="420", layout=draw.draw(st.sampled_from(["dense", "rle"])))
    meta = {"height": 16, "width": 24, "components": 3, "subsampling": "420"}
    lay = codec.layout(meta)
    g = StreamGrammar(codec, meta, plan(codec, meta, "random", np.random.default_rng(draw.draw(st.integers(0, 99)))))
    seed = draw.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    while not g.done:
        allowed = np.flatnonzero(g.allowed())
        g.step(int(rng.choice(allowed)))
    rec = TokenRecord("r", g.canonical().astype(codec.vocab.dtype), meta)
    grid, refined = codec.refined_of(rec)
    assert np.array_equal(codec.refinements(grid, codec.values(grid, refined)), refined)
    assert codec.decode(rec).shape == (16, 24, 3)
    assert len(lay.cells) == (rec.tokens.size if codec.layout_name == "dense" else grid.n_blocks * len(q))
    assert np.array_equal(codec.encode_refined(grid, refined), rec.tokens)  # the tokens of those values


def test_quality_major_sends_each_level_whole_and_scales_predict_a_level_at_a_time():
    codec = JpegRefineCodec([10, 20, 40, 80], subsampling="444")
    rec = codec.encode(data.camera()[:32, :32].copy())
    pos = codec.layout(rec.meta).cells.positions
    level = pos.coords[:, pos.axes.index("level")]
    p = plan(codec, rec.meta, StreamSpec.parse("quality-major", "scales"), np.random.default_rng(0))
    assert (np.diff(level[p.cells]) >= 0).all() and p.n_groups == 4
    assert (np.bincount(p.groups) == 16 * 64).all()
    p = plan(codec, rec.meta, "random", np.random.default_rng(0))  # units move with all their levels
    g = StreamGrammar(codec, rec.meta, p)
    tokens = rec.tokens.astype(np.int64)[p.cells]
    for t in tokens:
        assert g.allowed()[t]
        g.step(int(t))
    assert np.array_equal(g.canonical(), rec.tokens)


def test_bad_ladders_are_refused():
    for q in ([20, 10], [10, 10], [0, 50], list(range(10, 100, 10))):
        with pytest.raises(CodecError, match="--refine"):
            JpegRefineCodec(q)
    with pytest.raises(CodecError, match="--refine"):
        JpegRefineCodec("10,x")


def test_eval_parts_are_the_levels():
    """`vistok eval --parts` on jpeg-refine: a predicted position's part is its cell's level (EOS with the last)."""
    from vistok.tokenize.stream import order_record
    from vistok.train.evaluate import part_names, target_parts

    codec = JpegRefineCodec([20, 40, 80], subsampling="444")
    rec = codec.encode(data.camera()[:16, :16].copy())
    assert part_names(codec, rec.meta) == ("level0", "level1", "level2")
    o = order_record(codec, rec, "quality-major", np.random.default_rng(0))
    parts = target_parts(codec, rec, o, "")
    assert np.array_equal(np.bincount(parts), [4 * 64, 4 * 64, 4 * 64 + 1]) and (np.diff(parts) >= 0).all()


@pytest.mark.parametrize("order", ["canonical", "random", "quality-major"])
def test_rle_is_the_dense_ladder_in_runs_and_follows_every_order(order):
    """rle: a cell per level of a block (runs to its nonzero values, EOB): the same coefficients and JPEG as
    dense, a fraction of the tokens, and each token's place as the grammar reads it along any order."""
    rle, dense = JpegRefineCodec([10, 20, 40, 80], layout="rle"), JpegRefineCodec([10, 20, 40, 80])
    img = data.astronaut()[100:148, 140:204].copy()
    a, b = rle.encode(img), dense.encode(img)
    assert rle.to_jpeg(a) == dense.to_jpeg(b) and np.array_equal(rle.decode(a), dense.decode(b))
    assert a.tokens.size < 0.2 * b.tokens.size and dense.get_config().keys() == {"id", "refine", "subsampling", "max_pixels"}
    lay = rle.layout(a.meta)
    p = plan(rle, a.meta, order, np.random.default_rng(0))
    rank = np.empty(len(p.cells), np.int64)
    rank[p.cells] = np.arange(len(p.cells))
    tc = lay.token_cells(a)
    perm = np.argsort(rank[tc], kind="stable")
    g = StreamGrammar(rle, a.meta, p)
    coords = []
    for t in a.tokens.astype(np.int64)[perm]:
        assert g.allowed()[t]
        coords.append(g.step(int(t)))
    assert np.array_equal(g.canonical(), a.tokens)
    assert np.array_equal(np.array(coords), lay.positions(a).coords[perm])
    if order == "quality-major":
        level = np.array(coords)[:, rle.axes.index("level")]
        assert (np.diff(level) >= 0).all()
