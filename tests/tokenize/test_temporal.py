"""`--temporal delta` (JPEG, wavelet): frame t > 1 as coefficient differences to frame t-1, unchanged JPEG
blocks as SKIP (rle) or 64 zeros (dense), unchanged wavelet bands as one EOB (rle) or zeros (dense); exact
both ways, and every stream the grammar allows decodes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vistok.errors import CodecError
from vistok.tokenize import JpegCodec, WaveletCodec, dct
from vistok.tokenize.base import frames_of
from vistok.tokenize.stream import StreamGrammar, order_record, plan

DELTA = JpegCodec(quality=20, temporal="delta")
PLAIN = JpegCodec(quality=20)
DENSE_DELTA = JpegCodec(quality=20, layout="dense", temporal="delta")
DENSE = JpegCodec(quality=20, layout="dense")
WAVELETS = {  # (delta, plain) pairs
    "wavelet-rle": (WaveletCodec(temporal="delta"), WaveletCodec()),
    "wavelet-dense": (WaveletCodec(levels=2, layout="dense", temporal="delta"), WaveletCodec(levels=2, layout="dense")),
    "wavelet-lossless": (WaveletCodec(levels=3, lossless=True, temporal="delta"), WaveletCodec(levels=3, lossless=True)),
}


def _clip(photo, n=4, moving=True):
    """A static camera on a real photo: frames equal but for a small square that moves (or not)."""
    base = photo[100:164, 140:204].copy()
    frames = []
    for t in range(n):
        f = base.copy()
        if moving:
            f[8 + 4 * t : 20 + 4 * t, 10:22] = 250
        frames.append(f)
    return frames


@pytest.mark.parametrize("codec", [DELTA, DENSE_DELTA], ids=["rle", "dense"])
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), frames=st.integers(1, 4), still=st.floats(0, 1), big=st.booleans())
def test_coefficients_tokens_coefficients_is_exact(codec, seed, frames, still, big):
    """Any int16 coefficient clip -> delta tokens -> the same coefficients, frame by frame (escapes, SKIPs
    and zero blocks of frame 1 included)."""
    rng = np.random.default_rng(seed)
    grid = dct.block_grid(24, 40, 3, "420")
    lim = 30000 if big else 40
    coefs = [np.where(rng.random((grid.n_blocks, 64)) < 0.2, rng.integers(-lim, lim, (grid.n_blocks, 64)), 0)]
    coefs[0][rng.random(grid.n_blocks) < 0.2] = 0
    for _ in range(frames - 1):
        nxt = coefs[-1].copy()
        moved = rng.random(grid.n_blocks) > still  # blocks that change
        nxt[moved] += np.where(rng.random((int(moved.sum()), 64)) < 0.3, rng.integers(-lim, lim, (int(moved.sum()), 64)), 0)
        coefs.append(np.clip(nxt, -32768, 32767))
    rec = codec.clip_from_coefficients(grid, coefs, "k")
    got = [codec.coefficients(f)[1] for f in codec.frame_records(rec)]
    assert len(got) == frames
    for a, b in zip(got, coefs):
        np.testing.assert_array_equal(a, b)
    assert (rec.meta.get("temporal") == "delta") == (frames > 1)


def test_keyframes_restart_the_deltas(photo):
    frames = _clip(photo, 5)
    key = JpegCodec(quality=20, temporal="delta", keyframe=2)
    rec, plain = key.encode_clip(frames, "k"), PLAIN.encode_clip(frames, "k")
    assert rec.meta["frame_types"] == ["I", "P", "I", "P", "I"] and key.get_config()["keyframe"] == 2
    np.testing.assert_array_equal(key.decode(rec), PLAIN.decode(plain))
    n_blocks = key.record_blocks(rec).n_blocks
    per = [f.tokens.size for f in frames_of(rec)]
    assert all(per[t] > 2 * n_blocks for t in (0, 2, 4)) and all(per[t] < 2 * n_blocks for t in (1, 3))
    with pytest.raises(CodecError, match="--temporal delta"):
        JpegCodec(keyframe=4)
    from vistok.tokenize.base import first_frames

    assert first_frames(rec, 3).meta["frame_types"] == ["I", "P", "I"]


def test_a_real_clip_round_trips_and_unchanged_blocks_cost_one_token(photo):
    frames = _clip(photo)
    rec, plain = DELTA.encode_clip(frames, "c"), PLAIN.encode_clip(frames, "c")
    np.testing.assert_array_equal(DELTA.decode(rec), PLAIN.decode(plain))  # the same pixels, exactly
    for a, b in zip(DELTA.frame_records(rec), frames_of(plain)):
        np.testing.assert_array_equal(DELTA.coefficients(a)[1], PLAIN.coefficients(b)[1])
    per = [f.tokens.size for f in frames_of(rec)]
    plain_per = [f.tokens.size for f in frames_of(plain)]
    n_blocks = DELTA.record_blocks(rec).n_blocks
    assert per[0] <= plain_per[0] and all(p < 0.5 * q for p, q in zip(per[1:], plain_per[1:]))
    still = DELTA.encode_clip(_clip(photo, 3, moving=False), "s")
    assert [f.tokens.size for f in frames_of(still)][1:] == [n_blocks, n_blocks]  # one SKIP per block
    assert DELTA.get_config()["temporal"] == "delta" and "temporal" not in PLAIN.get_config()
    assert DELTA.vocab.size == PLAIN.vocab.size + 1


def test_dense_deltas_keep_a_token_per_coefficient_and_round_trip_a_real_clip(photo):
    """Dense deltas keep 64 tokens a block (a token's place stays its coefficient's; no SKIP, dense's own
    vocabulary): an unchanged block is 64 zero values, so frames cost the same tokens and fewer distinct ones."""
    frames = _clip(photo)
    rec, plain = DENSE_DELTA.encode_clip(frames, "c"), DENSE.encode_clip(frames, "c")
    np.testing.assert_array_equal(DENSE_DELTA.decode(rec), DENSE.decode(plain))
    assert [f.tokens.size for f in frames_of(rec)] == [f.tokens.size for f in frames_of(plain)]
    zero = DENSE_DELTA.tokenize(DENSE_DELTA.record_blocks(rec), np.zeros((1, 64), np.int64))[0]
    share = [float(np.mean(f.tokens == zero)) for f in frames_of(rec)]
    assert all(s > 0.95 for s in share[1:]) and share[0] < 0.95  # the moving square is all that changes
    assert DENSE_DELTA.vocab.size == DENSE.vocab.size and "SKIP" not in DENSE_DELTA.vocab.specials
    assert rec.meta["temporal"] == "delta" and DENSE_DELTA.get_config()["temporal"] == "delta"


def test_delta_needs_absolute_dc():
    for layout in ("rle", "dense"):
        with pytest.raises(CodecError, match="--dc abs"):
            JpegCodec(temporal="delta", layout=layout, dc="dpcm")
    with pytest.raises(CodecError, match="none or delta"):
        JpegCodec(temporal="motion")


@pytest.mark.parametrize("name", sorted(WAVELETS))
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), frames=st.integers(1, 4), still=st.floats(0, 1), big=st.booleans())
def test_wavelet_coefficients_tokens_coefficients_is_exact(name, seed, frames, still, big):
    """Any pyramid clip whose differences are int16 -> wavelet delta tokens -> the same pyramids (escapes,
    long zero runs, empty bands of frame 1 and unchanged bands of later frames included)."""
    codec = WAVELETS[name][0]
    rng = np.random.default_rng(seed)
    g = codec.frame_coefficients_of(np.zeros((24, 40, 3), np.uint8))[0]
    lim = 16000 if big else 40
    coefs = [np.where(rng.random(g.total) < 0.2, rng.integers(-lim, lim, g.total), 0)]
    for _ in range(frames - 1):
        moved = rng.random(g.total) < (1 - still) * 0.3  # coefficients that change
        coefs.append(np.clip(coefs[-1] + np.where(moved, rng.integers(-lim, lim, g.total), 0), -lim, lim))
    rec = codec.clip_from_coefficients(g, coefs, "k")
    got = [codec.coefficients(f)[1] for f in codec.frame_records(rec)]
    assert len(got) == frames
    for a, b in zip(got, coefs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(WAVELETS))
def test_a_real_clip_round_trips_through_wavelet_deltas(photo, name):
    """A static camera on a real photo: the delta clip decodes to the plain codec's pixels exactly; a still
    frame costs one zero value per LL coefficient and one EOB per detail band (rle)."""
    delta, plain = WAVELETS[name]
    frames = _clip(photo)
    rec, ref = delta.encode_clip(frames, "c"), plain.encode_clip(frames, "c")
    np.testing.assert_array_equal(delta.decode(rec), plain.decode(ref))
    for a, b in zip(delta.frame_records(rec), frames_of(ref)):
        np.testing.assert_array_equal(a.tokens, b.tokens)
    assert rec.meta["temporal"] == "delta" and rec.meta["frame_types"] == ["I", "P", "P", "P"]
    assert delta.get_config()["temporal"] == "delta" and "temporal" not in plain.get_config()
    per, plain_per = [f.tokens.size for f in frames_of(rec)], [f.tokens.size for f in frames_of(ref)]
    still = frames_of(delta.encode_clip(_clip(photo, 2, moving=False), "s"))[1]
    g = delta.record_geometry(still)
    if delta.token_layout == "rle":
        assert all(p < 0.5 * q for p, q in zip(per[1:], plain_per[1:]))
        assert still.tokens.size == g.n_ll + len(g.bands) - g.ncomp
    else:
        assert per == plain_per and still.tokens.size == g.total
    assert (delta.coefficients(still)[1] == 0).all()


def test_wavelet_keyframes_restart_the_deltas(photo):
    key = WaveletCodec(temporal="delta", keyframe=2)
    frames = _clip(photo, 5)
    rec = key.encode_clip(frames, "k")
    assert rec.meta["frame_types"] == ["I", "P", "I", "P", "I"] and key.get_config()["keyframe"] == 2
    np.testing.assert_array_equal(key.decode(rec), WAVELETS["wavelet-rle"][1].decode(
        WAVELETS["wavelet-rle"][1].encode_clip(frames, "k")))
    with pytest.raises(CodecError, match="--temporal delta"):
        WaveletCodec(keyframe=3)
    with pytest.raises(CodecError, match="none or delta"):
        WaveletCodec(temporal="motion")


GRAMMAR_CASES = [(f"jpeg-{layout}", order) for layout in ("rle", "dense")
                 for order in ("canonical", "hilbert", "random", "randsac:5")] + [
    ("wavelet-rle", "canonical"), ("wavelet-dense", "hilbert"), ("wavelet-dense", "coarse-to-fine"),
    ("wavelet-lossless", "canonical")]


@pytest.mark.parametrize("name,order", GRAMMAR_CASES)
def test_the_grammar_follows_delta_clips_and_every_drawn_stream_decodes(photo, name, order):
    codec = {"jpeg-rle": DELTA, "jpeg-dense": DENSE_DELTA}.get(name) or WAVELETS.get(name, (None,))[0]
    rec = codec.encode_clip(_clip(photo, 3), "c")
    o = order_record(codec, rec, order, np.random.default_rng(1))
    g = StreamGrammar(codec, rec.meta, o.plan)
    for t in rec.tokens[o.perm]:
        assert g.allowed()[t]
        g.step(int(t))
    np.testing.assert_array_equal(g.canonical(), rec.tokens)
    # a random walk through the grammar (what an untrained model may sample), leaning to the tokens that say
    # "no change": SKIP (jpeg rle), a band's EOB and the value 0 (wavelet)
    v = codec.vocab
    still = [v.specials["SKIP"]] if "SKIP" in v.specials else []
    if name.startswith("wavelet"):
        still = [v.specials["EOB"], v.range("value").start + 1023]
    rng = np.random.default_rng(5)
    g = StreamGrammar(codec, rec.meta, plan(codec, rec.meta, order, np.random.default_rng(1)))
    while g.phase == "cells":
        ids = np.flatnonzero(g.allowed())
        pick = [t for t in still if t in ids]
        g.step(int(pick[0] if pick and rng.random() < 0.6 else rng.choice(ids)))
    out = codec.decode(type(rec)("drawn", g.canonical().astype(codec.vocab.dtype), dict(rec.meta)))
    assert out.shape == (3, 64, 64, 3)
