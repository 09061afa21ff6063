import numpy as np
import pytest

from vistok.tokenize import JpegCodec, WaveletCodec
from vistok.tokenize.orders import get_order, inverse
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
    inp = codec.positions(rec)
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
        perm = get_order(name)(inp, np.random.default_rng(1)).perm
        assert (np.diff(coords[perm, 0]) >= 0).all(), name  # time-major
        np.testing.assert_array_equal(rec.tokens[perm][inverse(perm)], rec.tokens)


def test_optional_capabilities_are_declared_not_discovered():
    from vistok.errors import CodecError
    from vistok.tokenize import H264Codec
    from vistok.tokenize.base import FILE_BYTES, JPEG_FILE, VIDEO_BYTES

    assert JpegCodec().capabilities == {FILE_BYTES, JPEG_FILE}
    assert H264Codec(transcode="never").capabilities == {VIDEO_BYTES} and not H264Codec().capabilities
    w = WaveletCodec()
    assert not w.capabilities
    rec = w.encode(np.zeros((8, 8, 3), np.uint8))
    for call in (lambda: w.to_jpeg(rec), lambda: w.encode_bytes(b"", "k"), lambda: w.encode_video_bytes(b"", "k", {}, 1)):
        with pytest.raises(CodecError, match="cannot"):
            call()
