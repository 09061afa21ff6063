"""`--temporal delta` (JPEG): frame t > 1 as coefficient differences to frame t-1, unchanged blocks as SKIP
(rle) or 64 zeros (dense); exact both ways, and every stream the grammar allows decodes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vistok.errors import CodecError
from vistok.tokenize import JpegCodec, dct
from vistok.tokenize.base import frames_of
from vistok.tokenize.stream import StreamGrammar, order_record, plan

DELTA = JpegCodec(quality=20, temporal="delta")
PLAIN = JpegCodec(quality=20)
DENSE_DELTA = JpegCodec(quality=20, layout="dense", temporal="delta")
DENSE = JpegCodec(quality=20, layout="dense")


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


@pytest.mark.parametrize("codec", [DELTA, DENSE_DELTA], ids=["rle", "dense"])
@pytest.mark.parametrize("order", ["canonical", "hilbert", "random", "randsac:5"])
def test_the_grammar_follows_delta_clips_and_every_drawn_stream_decodes(photo, order, codec):
    rec = codec.encode_clip(_clip(photo, 3), "c")
    o = order_record(codec, rec, order, np.random.default_rng(1))
    g = StreamGrammar(codec, rec.meta, o.plan)
    for t in rec.tokens[o.perm]:
        assert g.allowed()[t]
        g.step(int(t))
    np.testing.assert_array_equal(g.canonical(), rec.tokens)
    rng = np.random.default_rng(4)  # a random walk through the grammar: what an untrained model may sample
    g = StreamGrammar(codec, rec.meta, plan(codec, rec.meta, order, np.random.default_rng(1)))
    while g.phase == "cells":
        ids = np.flatnonzero(g.allowed())
        skip = codec.vocab.specials.get("SKIP")
        g.step(int(skip if skip in ids and rng.random() < 0.5 else rng.choice(ids)))
    out = codec.decode(type(rec)("drawn", g.canonical().astype(codec.vocab.dtype), dict(rec.meta)))
    assert out.shape == (3, 64, 64, 3)


def test_delta_needs_absolute_dc():
    for layout in ("rle", "dense"):
        with pytest.raises(CodecError, match="--dc abs"):
            JpegCodec(temporal="delta", layout=layout, dc="dpcm")
    with pytest.raises(CodecError, match="none or delta"):
        JpegCodec(temporal="motion")
