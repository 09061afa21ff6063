"""Every accepted codec x layout x order is a stream a decoder can follow; the others are refused, saying why."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vistok.errors import UsageError
from vistok.record import TokenRecord
from vistok.tokenize import JpegCodec, PixelCodec, WaveletCodec
from vistok.tokenize.base import EOS, get_codec
from vistok.tokenize.orders import compute_stored, walk_bits
from vistok.tokenize.stream import StreamGrammar, StreamSpec, known_columns, order_record, plan

ORDERS = ["canonical", "raster", "column", "snake", "zorder", "hilbert", "spiral", "freq-major", "coarse-to-fine",
          "next-scale", "random", "randsac:11", "randsac:11,5", "squares:2", "gradwalk:max", "dc-first", "dc-first:hilbert",
          "dc-first:slic:3", "dc-first:gradwalk:max", "dc-first:frontier"]


def _codecs(bsq=None, multiscale=None):
    out = {
        "jpeg-rle": JpegCodec(quality=50), "jpeg-dense": JpegCodec(quality=50, layout="dense"),
        "jpeg-gray-dense": JpegCodec(quality=90, layout="dense", subsampling="444"),
        "jpeg-delta-rle": JpegCodec(quality=50, temporal="delta"),  # SKIP blocks (zero blocks of an image)
        "wavelet-rle": WaveletCodec(levels=2), "wavelet-dense": WaveletCodec(levels=2, layout="dense"),
        "pixels": PixelCodec(), "pixels-unit4": PixelCodec(bits=5, unit=4),
    }
    if bsq is not None:
        out["bsq"] = get_codec({"id": "bsq", "tokenizer": str(bsq)})
    if multiscale is not None:
        out["bsq-scales"] = get_codec({"id": "bsq", "tokenizer": str(multiscale)})
    return out


AXIS = {"freq-major": "freq", "coarse-to-fine": "level", "next-scale": "scale"}
AXES = {"jpeg": ("freq",), "wavelet": ("level",), "bsq-scales": ("scale",), "bsq": (), "pixels": ()}
UNIT_ORDERS = ("raster", "column", "snake", "zorder", "hilbert", "spiral", "random", "randsac", "squares", "gradwalk")


def refusal(name, order):
    """What the refusal of `order` on codec `name` must say, or None when the pair is accepted."""
    axis = AXIS.get(order)
    family = name if name.startswith("bsq") else name.split("-")[0]
    if axis is not None and axis not in AXES[family]:
        return f"needs a '{axis}' axis"
    if name == "jpeg-rle" and order == "freq-major":
        return "known only once a token is read"
    if order.startswith("dc-first") and name in ("jpeg-delta-rle", "wavelet-rle", "wavelet-dense", "bsq", "bsq-scales",
                                                 "pixels", "pixels-unit4"):
        return "no DC cells"
    if name == "wavelet-rle" and order.partition(":")[0] in UNIT_ORDERS:
        return "a cell of this layout spans every unit"
    return None


def _record(codec, photo, key="r", size=(40, 48), gray=False):
    img = photo[100 : 100 + size[0], 150 : 150 + size[1]]
    if gray:
        img = img.mean(axis=2).astype(np.uint8)
    rec = codec.encode(img, key)
    rec.orders.update(compute_stored(codec, rec, None, ("gradwalk:max",)))
    return rec


def _follow(codec, rec, order, seed):
    """Put the record's tokens in `order`, then rebuild it with the grammar from the tokens and the seed alone."""
    ordered = order_record(codec, rec, order, np.random.default_rng(seed))
    stream = rec.tokens[ordered.perm]
    coords = codec.layout(rec.meta).positions(rec).coords[ordered.perm]  # what training shows the model
    g = StreamGrammar(codec, rec.meta, plan(codec, rec.meta, order, np.random.default_rng(seed), stored=rec.orders))
    known = known_columns(codec)
    for t, c in zip(stream.tolist(), coords):
        np.testing.assert_array_equal(g.next_known()[known], c[known])  # the place of the next token
        assert g.allowed()[t]
        np.testing.assert_array_equal(g.step(t), c)  # the token's own coordinates
    assert g.phase == "end" and g.allowed()[EOS] and g.allowed().sum() == 1
    g.step(EOS)
    assert g.done
    return g.canonical()


def _draw(codec, meta, order, seed, limit=200_000):
    """A stream drawn at random under the grammar in `order` (the grammar alone decides what may come)."""
    rng = np.random.default_rng(seed)
    g = StreamGrammar(codec, meta, plan(codec, meta, order, np.random.default_rng(seed)))
    for _ in range(limit):
        allowed = np.flatnonzero(g.allowed())
        t = int(rng.choice(allowed))
        g.step(t)
        if g.done:
            return g.canonical()
    raise AssertionError("stream did not end")


@pytest.mark.parametrize("name", ["jpeg-rle", "jpeg-dense", "jpeg-gray-dense", "wavelet-rle", "wavelet-dense", "pixels",
                                  "pixels-unit4"])
def test_every_accepted_order_rebuilds_the_record_and_every_other_is_refused(name, photo):
    codec = _codecs()[name]
    rec = _record(codec, photo, gray="gray" in name)
    accepted = 0
    for order in ORDERS:
        why = refusal(name, order)
        if why is not None:
            with pytest.raises(UsageError, match=why):
                order_record(codec, rec, order, np.random.default_rng(0))
            continue
        for seed in (0, 1):
            rebuilt = _follow(codec, rec, order, seed)
            np.testing.assert_array_equal(rebuilt, rec.tokens, err_msg=f"{name} {order}")
        accepted += 1
    assert accepted == {"wavelet-rle": 2, "wavelet-dense": 13, "jpeg-rle": 17, "jpeg-delta-rle": 12, "pixels": 12,
                        "pixels-unit4": 12}.get(name, 18)
    if name.endswith("rle"):
        with pytest.raises(UsageError, match="--layout dense"):
            order_record(codec, rec, "hilbert" if name == "wavelet-rle" else "freq-major", np.random.default_rng(0))


@pytest.mark.parametrize("name", ["jpeg-rle", "jpeg-dense", "wavelet-rle", "wavelet-dense", "pixels-unit4"])
def test_a_stream_drawn_in_any_accepted_order_decodes(name, photo):
    codec = _codecs()[name]
    rec = _record(codec, photo, size=(16, 24))
    shape = codec.decode(rec).shape
    for order in ["canonical", "hilbert", "random", "randsac:5,2", "freq-major", "coarse-to-fine", "dc-first:slic:3",
                  "dc-first:gradwalk:min"]:
        try:
            plan(codec, rec.meta, order, np.random.default_rng(0))
        except UsageError:
            continue
        toks = _draw(codec, rec.meta, order, seed=3).astype(codec.vocab.dtype)
        assert codec.decode(type(rec)("drawn", toks, dict(rec.meta))).shape == shape


def test_learned_codes_in_every_order(bsq_tok, multiscale_tok, photo):
    for name, codec in _codecs(bsq_tok, multiscale_tok).items():
        if not name.startswith("bsq"):
            continue
        rec = _record(codec, photo, size=(32, 32))
        for order in ORDERS:
            why = refusal(name, order)
            if why is not None:
                with pytest.raises(UsageError, match=why):
                    order_record(codec, rec, order, np.random.default_rng(0))
                continue
            np.testing.assert_array_equal(_follow(codec, rec, order, 5), rec.tokens, err_msg=f"{name} {order}")
        toks = _draw(codec, rec.meta, "randsac:5", 1).astype(codec.vocab.dtype)
        assert codec.decode(type(rec)("drawn", toks, dict(rec.meta))).shape == (32, 32, 3)


def test_clips_keep_each_frame_separator_first(photo):
    codec = JpegCodec(quality=50, layout="dense")
    frames = [photo[i * 8 : i * 8 + 16, :24] for i in range(3)]
    rec = codec.encode_clip(frames, "clip")
    rec.orders.update(compute_stored(codec, rec, np.stack(frames), ("gradwalk:max",)))
    for order in ["canonical", "hilbert", "random", "randsac:5", "freq-major", "gradwalk:max"]:
        np.testing.assert_array_equal(_follow(codec, rec, order, 2), rec.tokens, err_msg=order)
        o = order_record(codec, rec, order, np.random.default_rng(2))
        frame = codec.layout(rec.meta).positions(rec).coords[o.perm, 0]
        assert (np.diff(frame) >= 0).all()
        firsts = np.flatnonzero(np.diff(frame)) + 1
        assert (rec.tokens[o.perm][firsts] == 3).all()  # FRAME opens frames 1 and 2


def test_gradwalk_costs_its_side_information(photo):
    codec = JpegCodec(quality=50)
    rec = _record(codec, photo, size=(64, 64))
    p = plan(codec, rec.meta, "gradwalk:max", np.random.default_rng(0), stored=rec.orders)
    grid = codec.layout(rec.meta).cells.positions.grid
    assert p.order_bits == pytest.approx(walk_bits(rec.orders["gradwalk-max"], grid)) and p.order_bits > 0
    assert walk_bits(np.arange(8), (1, 8)) == pytest.approx(3)  # the start; then one way on at every step
    # start (2 bits), two ways on (1), stuck: a jump to one of two (1), one way on (0)
    assert walk_bits(np.array([1, 0, 2, 3]), (1, 4)) == pytest.approx(4)
    assert plan(codec, rec.meta, "hilbert", np.random.default_rng(0)).order_bits == 0


def test_parallel_modes_are_refused_where_they_cannot_work(photo):
    rle, dense = JpegCodec(quality=50), JpegCodec(quality=50, layout="dense")
    rec = _record(dense, photo)
    with pytest.raises(UsageError, match="variable-length"):
        plan(rle, rec.meta, StreamSpec.parse("randsac:5", "segments"), np.random.default_rng(0))
    with pytest.raises(UsageError, match="randsac"):
        plan(dense, rec.meta, StreamSpec.parse("hilbert", "segments"), np.random.default_rng(0))
    with pytest.raises(UsageError, match="next-scale"):
        plan(dense, rec.meta, StreamSpec.parse("randsac:5", "scales"), np.random.default_rng(0))
    p = plan(dense, rec.meta, StreamSpec.parse("randsac:5", "segments"), np.random.default_rng(0))
    assert (np.diff(p.groups) >= 0).all() and p.n_groups >= 5
    p = plan(dense, rec.meta, StreamSpec.parse("squares:2", "segments"), np.random.default_rng(0))
    rows, cols = dense.layout(rec.meta).cells.positions.grid
    assert p.n_groups == -(-rows // 2) * -(-cols // 2) and (np.diff(p.groups) >= 0).all()
    w = WaveletCodec(levels=2, layout="dense")
    wrec = _record(w, photo)
    p = plan(w, wrec.meta, StreamSpec.parse("coarse-to-fine", "scales"), np.random.default_rng(0))
    assert p.n_groups == 3  # LL and level 2, then level 1


def test_any_step_plans_follow_the_seed_and_the_steps_never_the_tokens(photo):
    """`--parallel any`: a random order cut into N consecutive groups; the same seed and geometry give the same
    places at every step whatever the tokens, and training draws N per document."""
    dense = JpegCodec(quality=50, layout="dense")
    rec = _record(dense, photo)
    n = rec.tokens.size
    with pytest.raises(UsageError, match="--order random"):
        plan(dense, rec.meta, StreamSpec.parse("hilbert", "any"), np.random.default_rng(0))
    with pytest.raises(UsageError, match="variable-length"):
        plan(JpegCodec(quality=50), rec.meta, StreamSpec.parse("random", "any"), np.random.default_rng(0))
    order = plan(dense, rec.meta, "random", np.random.default_rng(5)).cells
    for steps, want in ((1, 1), (7, 7), (n // 16, n // 16), (0, n), (10 * n, n)):
        p = plan(dense, rec.meta, StreamSpec.parse("random", "any", steps=steps), np.random.default_rng(5))
        assert p.n_groups == want and (np.diff(p.groups) >= 0).all()
        np.testing.assert_array_equal(p.cells, order)  # the order is --order random's, then cut
    # tokens play no part: a record with other tokens (same geometry) gets the same plan
    other = TokenRecord("x", rec.tokens[::-1].copy(), rec.meta)
    a = order_record(dense, rec, StreamSpec.parse("random", "any", steps=9), np.random.default_rng(3))
    b = order_record(dense, other, StreamSpec.parse("random", "any", steps=9), np.random.default_rng(3))
    np.testing.assert_array_equal(a.cells, b.cells)
    np.testing.assert_array_equal(a.groups, b.groups)
    drawn = {plan(dense, rec.meta, StreamSpec.parse("random", "any"), np.random.default_rng(s)).n_groups for s in range(40)}
    assert len(drawn) > 20 and min(drawn) >= 1 and max(drawn) <= n  # steps drawn per document


@pytest.mark.parametrize("name", ["wavelet-dense", "bsq-scales"])
def test_clips_are_predicted_a_group_per_frame_and_scale(photo, multiscale_tok, name):
    """`--parallel scales` on a clip: every group is one scale of one frame, in time order and coarse to fine
    inside a frame, the FRAME separator in its frame's coarsest group (a decoder knows it: only FRAME is
    allowed there); following the plan group by group rebuilds the clip. Other parallel modes stay refused."""
    from vistok.tokenize.base import FRAME
    from vistok.tokenize.stream import cell_scales

    codec = _codecs(multiscale=multiscale_tok)[name]
    order = "next-scale" if name == "bsq-scales" else "coarse-to-fine"
    frames = [photo[100 + 4 * t : 132 + 4 * t, 150:182] for t in range(3)]
    rec = codec.encode_clip(frames, "clip")
    o = order_record(codec, rec, StreamSpec.parse(order, "scales"), np.random.default_rng(0))
    layout = codec.layout(rec.meta)
    scale, cells = cell_scales(layout, order), layout.cells
    n_scales = int(scale.max()) + 1
    assert o.plan.n_groups == 3 * n_scales == 9  # bsq: 3 scales; wavelet: LL, level 2, level 1
    g_frame, g_scale = cells.frame[o.cells], scale[o.cells]
    for g in range(o.plan.n_groups):
        at = o.groups == g
        assert len(set(g_frame[at])) == 1 and len(set(g_scale[at])) == 1
        assert (g_frame[at][0], g_scale[at][0]) == divmod(g, n_scales)
    seps = np.flatnonzero(rec.tokens[o.perm] == FRAME)
    assert seps.size == 2 and all(g_scale[s] == 0 and o.groups[s] == g_frame[s] * n_scales for s in seps)
    g = StreamGrammar(codec, rec.meta, o.plan)
    toks, i = rec.tokens[o.perm], 0
    while g.phase == "cells":
        _, masks = g.group()
        for j, t in enumerate(toks[i : i + len(masks)]):
            assert masks[j][t] and (masks[j].sum() == 1) == (t == FRAME)
            g.step(int(t))
        i += len(masks)
    np.testing.assert_array_equal(g.canonical(), rec.tokens)
    for mode, order_ in (("any", "random"), ("segments", "randsac:3")):
        with pytest.raises(UsageError, match="clips take --parallel scales"):
            plan(codec, rec.meta, StreamSpec.parse(order_, mode), np.random.default_rng(0))


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=30), T=st.integers(26, 80), S=st.integers(0, 90))
def test_group_windows_predict_every_group_once_after_the_context_the_row_holds(sizes, T, S):
    """Windows of a group-parallel stream: their new parts are whole groups, in order, each once; a window holds
    BOS, its tokens and its queries in a row; it starts C = T - 1 - min(S, T - 1) tokens before its new part
    (0 with stride = context: independent pieces); a group too large for a window is refused."""
    from vistok.tokenize.stream import group_limit, group_windows

    groups = np.repeat(np.arange(len(sizes)), sizes)
    n_new = min(S or T, T - 1)
    if 2 * max(sizes) > n_new:
        with pytest.raises(UsageError, match="positions with its queries"):
            group_windows(groups, T, S)
        assert max(sizes) > group_limit(T, S)
        return
    ws = group_windows(groups, T, S)
    assert [i for _, new, stop in ws for i in range(new, stop)] == list(range(groups.size))
    context = T - 1 - n_new
    for start, new, stop in ws:
        assert (new == 0 or groups[new] != groups[new - 1]) and (stop == groups.size or groups[stop] != groups[stop - 1])
        assert 1 + (stop - start) + (stop - new) <= T and start == max(0, new - context)
        if S == 0 or S >= T - 1:  # a window's new part may fill the row: no context
            assert start == new
