import numpy as np
import pytest

from vistok.tokenize import JpegCodec, WaveletCodec
from vistok.tokenize.orders import inverse, parse_order
from vistok.tokenize.stream import grammar


@pytest.mark.parametrize("codec", [JpegCodec(quality=50), WaveletCodec(lossless=True), WaveletCodec(layout="dense")])
def test_multi_frame_records_round_trip(codec):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (24, 40, 3)).astype(np.uint8) for _ in range(3)]
    rec = codec.encode_clip(frames, "clip")
    assert rec.meta["frames"] == 3 and (rec.tokens == 3).sum() == 2  # two FRAME separators
    out = codec.decode(rec)
    assert out.shape == (3, 24, 40, 3)
    for f, frame in enumerate(frames):
        np.testing.assert_array_equal(out[f], codec.decode(codec.encode(frame)))
    inp = codec.layout(rec.meta).positions(rec)
    coords = inp.coords
    assert (np.diff(coords[:, 0]) >= 0).all() and coords[-1, 0] == 2
    assert inp.n_units == 3 * inp.grid[0] * inp.grid[1]  # units continue frame after frame
    g = grammar(codec, rec.meta)
    for i, t in enumerate(rec.tokens):
        assert g.allowed()[t], i
        assert (g.next_known()[:2] == coords[i, :2]).all() or rec.tokens[i] == 3
        assert (g.step(int(t)) == coords[i]).all()
    assert g.phase == "end"
    for name in ("hilbert", "random", "randsac:4", "spiral"):
        perm = parse_order(name)(inp, np.random.default_rng(1)).perm
        assert (np.diff(coords[perm, 0]) >= 0).all(), name  # time-major
        np.testing.assert_array_equal(rec.tokens[perm][inverse(perm)], rec.tokens)


def test_optional_capabilities_are_declared_not_discovered():
    from vistok.tokenize import H264Codec
    from vistok.tokenize.base import BATCH, FILE_BYTES, JPEG_FILE, SIDE_INFO, VIDEO_BYTES

    assert JpegCodec().capabilities == {FILE_BYTES, JPEG_FILE, SIDE_INFO}
    assert H264Codec(transcode="never").capabilities == {VIDEO_BYTES, SIDE_INFO} and H264Codec().capabilities == {SIDE_INFO}
    w = WaveletCodec()
    assert not w.capabilities
    # the base carries no stand-ins for what a codec does not offer: callers ask `capabilities` first
    for name in ("to_jpeg", "encode_bytes", "encode_video_bytes", "encode_many", "side_info"):
        assert not hasattr(w, name), name
    assert BATCH not in JpegCodec().capabilities


def test_codecs_hash_by_config_and_layouts_are_cached_per_geometry():
    a, b = JpegCodec(quality=20), JpegCodec(quality=20)
    assert a == b and hash(a) == hash(b) and a != JpegCodec(quality=30) and len({a, b}) == 1
    meta = {"height": 32, "width": 48, "components": 3, "subsampling": "420", "source": "x"}
    lay = a.layout(meta)
    assert lay is b.layout({**meta, "source": "elsewhere", "label": "cat"})  # geometry alone picks the layout
    assert lay == a.layout(meta) and hash(lay) == hash(a.layout(meta))
    assert lay.grid == (2, 3) and lay.unit_pixels == (16, 16) and len(lay.cells) == 6 * 6 * 2 == lay.cells.per_frame  # DC and AC cells
    clip = a.layout({**meta, "frames": 3})
    assert clip != lay and len(clip.cells) == 3 * 72 + 2 and clip.max_tokens == 3 * lay.frame_max_tokens + 3
