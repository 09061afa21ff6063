import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vistok.errors import CodecError
from vistok.media.sources import decode_image, sample_files
from vistok.tokenize import WaveletCodec, get_codec
from vistok.tokenize.lifting import dwt53, idwt53, rct_forward, rct_inverse
from vistok.tokenize.orders import inverse, parse_order
from vistok.tokenize.stream import grammar
from vistok.tokenize.wavelet_grammar import geometry


@st.composite
def coefficient_case(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    ncomp = draw(st.sampled_from([1, 3]))
    levels = draw(st.integers(1, 3))
    chroma = draw(st.sampled_from(["444", "420"]))
    g = geometry(h, w, ncomp, levels, chroma)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["sparse", "runs", "extreme"]))
    if kind == "sparse":
        flat = rng.integers(-40, 41, g.total) * (rng.random(g.total) < 0.2)
    elif kind == "runs":  # long zero runs (ZRL) and band-final nonzeros
        flat = np.zeros(g.total, dtype=np.int64)
        flat[rng.integers(0, g.total, max(1, g.total // 50))] = rng.integers(-3, 4, max(1, g.total // 50))
        for b in g.bands:
            flat[b.start + b.size - 1] = 5
    else:
        flat = rng.integers(-32768, 32768, g.total) * (rng.random(g.total) < 0.5)
    return g, chroma, levels, flat.astype(np.int64)


@pytest.mark.parametrize("layout", ["rle", "dense"])
@settings(max_examples=40, deadline=None)
@given(case=coefficient_case())
def test_tokens_to_coefficients_is_exact(layout, case):
    g, chroma, levels, flat = case
    codec = WaveletCodec(levels=levels, chroma=chroma, layout=layout)
    tokens = codec.tokenize(g, flat)
    assert tokens.max() < codec.vocab.size and tokens.dtype == np.uint16
    back, _ = codec.detokenize(g, tokens)
    np.testing.assert_array_equal(back, flat)


def test_lifting_and_rct_are_exact():
    rng = np.random.default_rng(0)
    for shape, levels in [((8, 8), 3), ((2, 2), 1), ((64, 32), 4), ((16, 48), 2)]:
        x = rng.integers(-512, 512, shape)
        np.testing.assert_array_equal(idwt53(dwt53(x, levels)), x)
    img = rng.integers(0, 256, (9, 7, 3)).astype(np.uint8)
    np.testing.assert_array_equal(rct_inverse(rct_forward(img)), img)


@pytest.mark.parametrize("layout", ["rle", "dense"])
def test_lossless_is_pixel_exact_on_real_photos_of_odd_sizes(layout):
    codec = WaveletCodec(lossless=True, layout=layout, levels=3)
    for i, path in enumerate(sample_files()[:6]):
        img = decode_image(path.read_bytes())
        h, w = [(61, 77), (33, 100), (64, 64), (1, 1), (17, 9), (128, 95)][i]
        crop = np.ascontiguousarray(img[:h, :w])
        rec = codec.encode(crop)
        np.testing.assert_array_equal(codec.decode(rec), crop)
    gray = np.ascontiguousarray(decode_image(sample_files()[0].read_bytes())[:50, :70, 0])
    np.testing.assert_array_equal(codec.decode(codec.encode(gray)), gray)


def test_lossy_quality_follows_the_step(photo, psnr):
    img = photo[:128, :128]
    scores, lengths = [], []
    for step in (2.0, 8.0, 32.0):
        codec = WaveletCodec(step=step)
        rec = codec.encode(img)
        scores.append(psnr(img, codec.decode(rec)))
        lengths.append(len(rec))
    assert scores[0] > scores[1] > scores[2] > 22 and lengths[0] > lengths[1] > lengths[2]
    c420 = WaveletCodec(step=8.0, chroma="420", wavelet="db2", levels=2, level_weights=[2.0, 1.0], hh_weight=1.5)
    assert psnr(img, c420.decode(c420.encode(img))) > 25


def test_config_registry_and_validation():
    c = WaveletCodec(wavelet="db4", levels=2, step=3.5, level_weights=[1.5, 1.0], chroma="420")
    assert get_codec(c.get_config()) == c
    for bad in (dict(wavelet="mexh"), dict(wavelet="nope"), dict(levels=0), dict(lossless=True, chroma="420"),
                dict(layout="zigzag")):
        with pytest.raises(CodecError):
            WaveletCodec(**bad)


@pytest.mark.parametrize("kw", [dict(), dict(layout="dense"), dict(lossless=True), dict(chroma="420")])
def test_grammar_accepts_real_streams_and_coords_agree(photo, kw):
    codec = WaveletCodec(**kw)
    rec = codec.encode(photo[40:88, 60:100])
    coords = codec.layout(rec.meta).positions(rec).coords
    g = grammar(codec, rec.meta)
    for i, t in enumerate(rec.tokens):
        assert g.allowed()[t]
        assert (g.next_known()[:4] == coords[i, :4]).all()
        assert (g.step(int(t)) == coords[i]).all()
    assert g.phase == "end" and g.allowed().sum() == 1


def test_orders_over_pyramid_units(photo):
    codec = WaveletCodec(levels=3)
    rec = codec.encode(photo[:64, :64])
    inp = codec.layout(rec.meta).positions(rec)
    assert inp.grid == (8, 8) and set(np.unique(inp.units)) == set(range(64))
    for name in ("hilbert", "random", "randsac:6,2", "coarse-to-fine", "spiral"):
        perm = parse_order(name)(inp, np.random.default_rng(0)).perm
        np.testing.assert_array_equal(rec.tokens[perm][inverse(perm)], rec.tokens)
    ctf = parse_order("coarse-to-fine")(inp, np.random.default_rng(0)).perm
    np.testing.assert_array_equal(ctf, np.arange(len(rec)))  # canonical order is already coarse to fine
