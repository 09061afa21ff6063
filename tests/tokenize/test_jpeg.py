import io
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vistok.errors import CodecError, InputError
from vistok.tokenize import JpegCodec, dct, get_codec, jpegfile

GOLDEN = Path(__file__).parent / "golden"


@st.composite
def coefficient_case(draw):
    h = draw(st.integers(1, 70))
    w = draw(st.integers(1, 70))
    ncomp = draw(st.sampled_from([1, 3]))
    sub = draw(st.sampled_from(["444", "422", "420"]))
    grid = dct.block_grid(h, w, ncomp, sub)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = grid.n_blocks
    kind = draw(st.sampled_from(["sparse", "dense", "extreme"]))
    if kind == "sparse":
        coefs = rng.integers(-20, 21, size=(n, 64)) * (rng.random((n, 64)) < 0.15)
    elif kind == "dense":
        coefs = rng.integers(-300, 301, size=(n, 64))
    else:  # the whole int16 range, with the extremes themselves
        coefs = rng.integers(-32768, 32768, size=(n, 64)) * (rng.random((n, 64)) < 0.5)
        coefs.flat[rng.integers(0, coefs.size, size=4)] = [-32768, 32767, -32768, 32767]
    return grid, coefs.astype(np.int32)


@pytest.mark.parametrize("tok_layout", ["rle", "dense"])
@pytest.mark.parametrize("dc", ["abs", "dpcm"])
@settings(max_examples=40, deadline=None)
@given(case=coefficient_case())
def test_tokens_to_coefficients_is_exact(tok_layout, dc, case):
    grid, coefs = case
    if dc == "dpcm":  # DPCM differences of int16 values must themselves fit int16
        coefs = np.clip(coefs, -16384, 16383)
    codec = JpegCodec(layout=tok_layout, dc=dc)
    tokens = codec.tokenize(grid, coefs)
    assert tokens.dtype == codec.vocab.dtype and tokens.max() < codec.vocab.size
    back, _ = codec.detokenize(grid, tokens)
    np.testing.assert_array_equal(back, coefs)


def test_vocabulary_is_bounded_and_described():
    for layout in ("rle", "dense"):
        v = JpegCodec(layout=layout).vocab
        assert v.dtype == np.uint16
        assert v.specials["PAD"] == 0 and v.specials["BOS"] == 1 and v.specials["EOS"] == 2
        assert [r.name for r in v.ranges][-1] == "raw"
        j = v.to_json()
        assert j["size"] == v.size and all(r["meaning"] for r in j["ranges"])


def test_config_round_trip_through_registry():
    c = JpegCodec(quality=35, subsampling="444", layout="dense", dc="dpcm")
    assert get_codec(c.get_config()) == c
    with pytest.raises(CodecError, match="unknown codec"):
        get_codec({"id": "nope"})
    with pytest.raises(CodecError):
        JpegCodec(subsampling="411")


def test_quality_tables_match_libjpeg():
    img = np.zeros((16, 16, 3), np.uint8)
    for q in (1, 20, 50, 75, 100):
        data = simplejpeg.encode_jpeg(img, quality=q, colorsubsampling="420")
        _, _, qt, _ = jpegfile.read_coefficients(data, 10**6)
        np.testing.assert_array_equal(qt[:2], dct.quality_tables(q))


@pytest.mark.parametrize("sub", ["444", "422", "420"])
def test_psnr_matches_libjpeg_turbo(photo, sub, psnr):
    img = photo[:256, :256]
    codec = JpegCodec(quality=20, subsampling=sub)
    rec = codec.encode(img)
    ours = np.asarray(Image.open(io.BytesIO(codec.to_jpeg(rec))).convert("RGB"))
    ref = simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(img, quality=20, colorsubsampling=sub))
    assert abs(psnr(img, ours) - psnr(img, ref)) < 0.1


def test_written_jpeg_reads_back_the_same_coefficients(photo):
    codec = JpegCodec(quality=20)
    rec = codec.encode(photo[:100, :75])
    grid, coefs = codec.coefficients(rec)
    data = codec.to_jpeg(rec)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (75, 100) and im.format == "JPEG"
    info, comps, qt, _ = jpegfile.read_coefficients(data, 10**6)
    np.testing.assert_array_equal(dct.from_components(grid, comps), coefs)
    np.testing.assert_array_equal(qt[:2], codec.qtables)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1), (7, 13, 3), (17, 23), (33, 1, 3), (40, 24, 3)])
def test_odd_sizes_grayscale_and_single_pixel(shape):
    rng = np.random.default_rng(1)
    img = (rng.random(shape) * 255).astype(np.uint8)
    codec = JpegCodec(quality=90)
    rec = codec.encode(img)
    out = codec.decode(rec)
    assert out.shape == img.shape
    assert rec.meta["components"] == (1 if img.ndim == 2 else 3)
    with Image.open(io.BytesIO(codec.to_jpeg(rec))) as im:
        assert im.size == (shape[1], shape[0])
    coords, units = codec.layout(rec.meta).positions(rec).coords, codec.layout(rec.meta).positions(rec).units
    assert coords.shape == (len(rec), 5) and units.shape == (len(rec),)
    assert np.all(np.diff(units) >= 0)


def test_coords_describe_blocks_and_frequencies(photo):
    codec = JpegCodec(quality=20)
    rec = codec.encode(photo[:32, :48])
    grid, coefs = codec.coefficients(rec)
    coords = codec.layout(rec.meta).positions(rec).coords
    freq = coords[:, 4]
    # every block contributes exactly one EOB (freq 64) and one DC (freq 0)
    assert (freq == 64).sum() == grid.n_blocks == (freq == 0).sum()
    # the nonzero AC coefficients sit at the coordinates the tokens claim
    ac = (freq > 0) & (freq < 64)
    for c in range(3):
        sel = ac & (coords[:, 1] == c)
        comp = dct.to_components(grid, coefs)[c].reshape(*grid.comp_blocks[c], 64)[..., dct.ZIGZAG]
        vals = comp[coords[sel, 2], coords[sel, 3], freq[sel]]
        assert np.all(vals != 0)
    assert set(np.unique(codec.layout(rec.meta).positions(rec).units)) == set(range(grid.mcu_grid[0] * grid.mcu_grid[1]))


def test_rle_token_count_for_a_64px_crop(photo):
    n = len(JpegCodec(quality=20).encode(photo[200:264, 200:264]))
    assert 150 < n < 900  # roughly 400-500 on busy crops; smooth ones are shorter


def test_golden_tokens_freeze_the_format(photo):
    """Tokens of one small real crop, committed. If this fails, the on-disk format changed: bump FORMAT_VERSION."""
    crop = photo[180:212, 200:240]
    got = {
        "rle": JpegCodec(quality=20).encode(crop).tokens,
        "dense_dpcm": JpegCodec(quality=50, layout="dense", dc="dpcm").encode(crop).tokens,
    }
    for name, tokens in got.items():
        path = GOLDEN / f"jpeg_{name}.npy"
        want = np.load(path, allow_pickle=False)
        assert tokens.dtype == want.dtype
        np.testing.assert_array_equal(tokens, want, err_msg=f"token format changed ({path.name})")


def test_transcode_never_keeps_the_files_coefficients(photo):
    data = simplejpeg.encode_jpeg(photo[:90, :70], quality=55, colorsubsampling="422")
    codec = JpegCodec(transcode="never")
    rec = codec.encode_bytes(data, "k")
    assert rec.meta["qt"] and rec.meta["subsampling"] == "422"
    info, comps, qt, _ = jpegfile.read_coefficients(data, 10**6)
    grid, coefs = codec.coefficients(rec)
    np.testing.assert_array_equal(coefs, dct.from_components(grid, comps))
    again = jpegfile.read_coefficients(codec.to_jpeg(rec), 10**6)
    for a, b in zip(again[1], comps):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="not a JPEG"):
        codec.encode_bytes(b"\x89PNG....", "k")
    assert JpegCodec(transcode="auto").encode_bytes(b"\x89PNG....", "k") is None


def test_malformed_jpegs_are_refused_fast(photo):
    good = simplejpeg.encode_jpeg(photo[:64, :64], quality=50)
    codec = JpegCodec(transcode="never", max_pixels=10_000)
    huge = bytearray(good)
    sof = huge.find(b"\xff\xc0")
    huge[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    cases = {
        "truncated": good[: len(good) // 2],
        "no frame": b"\xff\xd8\xff\xd9",
        "huge": bytes(huge),
        "garbage": b"\xff\xd8\xff" + b"\x00" * 50,
    }
    for name, data in cases.items():
        with pytest.raises(InputError):
            codec.encode_bytes(data, name)
    with pytest.raises(InputError, match="exceeds"):
        jpegfile.probe(bytes(huge), 10_000)


def test_bad_token_streams_raise_codec_errors(photo):
    codec = JpegCodec()
    rec = codec.encode(photo[:16, :16])
    grid = codec.record_blocks(rec)
    for bad in (rec.tokens[:-1], rec.tokens[1:], np.concatenate([rec.tokens, rec.tokens[:3]]),
                np.array([1, 2, 3], dtype=np.uint16)):
        with pytest.raises(CodecError):
            codec.detokenize(grid, bad)


def test_jpeglib_reads_what_jpeglib_wrote_for_random_coefficients():
    rng = np.random.default_rng(3)
    grid = dct.block_grid(40, 56, 3, "420")
    coefs = (rng.integers(-1023, 1024, size=(grid.n_blocks, 64)) * (rng.random((grid.n_blocks, 64)) < 0.3))
    data = jpegfile.write_jpeg(grid, coefs, dct.quality_tables(20))
    _, comps, _, _ = jpegfile.read_coefficients(data, 10**6)
    np.testing.assert_array_equal(dct.from_components(grid, comps), coefs)
    # an independent reader (Pillow's libjpeg) sees the frame and the tables that were written
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.size == (56, 40) and im.mode == "RGB"
        qt = dct.quality_tables(20)
        assert {k: list(v) for k, v in im.quantization.items()} == {0: qt[0].ravel().tolist(), 1: qt[1].ravel().tolist()}
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), simplejpeg.decode_jpeg(data))


@pytest.mark.parametrize("sub", ["444", "420"])
def test_written_jpeg_files_decode_elsewhere_to_our_pixels(photo, sub):
    codec = JpegCodec(subsampling=sub)
    rec = codec.encode(np.ascontiguousarray(photo[:40, :56]))
    with Image.open(io.BytesIO(codec.to_jpeg(rec))) as im:
        theirs = np.asarray(im.convert("RGB")).astype(int)
    diff = np.abs(theirs - codec.decode(rec).astype(int))  # libjpeg's integer IDCT and upsampling vs ours
    assert diff.mean() < 1.5 and diff.max() <= 24


@pytest.mark.skipif(not dct.NATIVE, reason="the C kernels were not built")
@pytest.mark.parametrize("sub", ["444", "422", "420"])
def test_c_kernels_agree_with_the_numpy_reference(photo, sub, monkeypatch):
    img = np.ascontiguousarray(photo[3:203, 5:186])
    for codec in (JpegCodec(subsampling=sub), JpegCodec(subsampling=sub, dc="dpcm")):
        grid, fast = dct.forward(img, codec.qtables, sub)
        tokens = codec.tokenize(grid, fast)
        pix = dct.inverse(grid, fast, codec.qtables)
        parsed = codec.coefficients_only(grid, tokens)
        monkeypatch.setattr(dct, "NATIVE", False)
        _, ref = dct.forward(img, codec.qtables, sub)
        assert (fast == ref).mean() > 0.9999 and np.abs(fast - ref).max() <= 1
        np.testing.assert_array_equal(codec.tokenize(grid, fast), tokens)
        np.testing.assert_array_equal(codec.coefficients_only(grid, tokens), parsed)
        np.testing.assert_array_equal(parsed, fast)
        assert np.abs(dct.inverse(grid, fast, codec.qtables).astype(int) - pix).max() <= 1
        monkeypatch.setattr(dct, "NATIVE", True)
    gray = np.ascontiguousarray(photo[:77, :50, 1])
    grid, fast = dct.forward(gray, JpegCodec().qtables, "444")
    monkeypatch.setattr(dct, "NATIVE", False)
    _, ref = dct.forward(gray, JpegCodec().qtables, "444")
    assert (fast == ref).mean() > 0.999


@pytest.mark.skipif(not dct.NATIVE, reason="the C kernels were not built")
def test_c_parser_rejects_what_the_numpy_parser_rejects(photo):
    codec = JpegCodec()
    rec = codec.encode(photo[:16, :16])
    grid = codec.record_blocks(rec)
    for bad in (rec.tokens[:-1], rec.tokens[1:], np.concatenate([rec.tokens, rec.tokens[:3]]),
                np.array([1, 2, 3], dtype=np.uint16), np.full(5, codec.vocab.size - 1, dtype=np.uint16)):
        with pytest.raises(CodecError):
            codec.coefficients_only(grid, bad)
