import io
from fractions import Fraction

import av
import numpy as np
import pytest

from vistok.errors import InputError
from vistok.media.video import VideoConfig, decode_clips


def _index(frame: np.ndarray) -> int:
    return int(round(float(frame.mean()) / 5))


@pytest.mark.parametrize("fmt,codec", [("mp4", "libx264"), ("matroska", "libx264"), ("mov", "libx264"),
                                       ("webm", "libvpx"), ("avi", "mpeg4"), ("gif", "gif")])
def test_every_container_decodes(fmt, codec, make_video):
    data = make_video(fmt, codec, n=12, pix_fmt="rgb8" if codec == "gif" else "yuv420p")
    clips = list(decode_clips(data, VideoConfig()))
    assert len(clips) == 12 and clips[0][0].shape == (32, 48, 3)


def test_fps_resamples_by_timestamps(make_video):
    data = make_video("mp4", "libx264", n=50, rate=25)  # 2 s
    frames = [c[0] for c in decode_clips(data, VideoConfig(fps=5))]
    assert [_index(f) for f in frames] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
    doubled = [c[0] for c in decode_clips(data, VideoConfig(fps=50))]
    assert 98 <= len(doubled) <= 100 and _index(doubled[1]) == 0 and _index(doubled[2]) == 1  # frames held


def test_clip_length_stride_and_limit(make_video):
    data = make_video("mp4", "libx264", n=20)
    clips = list(decode_clips(data, VideoConfig(clip_len=4, clip_stride=6, max_clips=3)))
    assert [[_index(f) for f in c] for c in clips] == [[0, 1, 2, 3], [6, 7, 8, 9], [12, 13, 14, 15]]
    with pytest.raises(InputError, match="fewer than"):
        list(decode_clips(make_video("mp4", "libx264", n=3), VideoConfig(clip_len=8)))










def test_rotation_metadata_is_applied():
    """An mp4 whose track header carries a 90-degree display matrix (as phones write it)."""
    import struct

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        st = out.add_stream("libx264", rate=Fraction(25))
        st.width, st.height, st.pix_fmt = 48, 32, "yuv420p"
        for _ in range(3):
            img = np.zeros((32, 48, 3), np.uint8)
            img[:, :8] = 255  # a white band on the left edge
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    data = bytearray(buf.getvalue())
    i = data.find(b"tkhd")
    assert data[i + 4] == 0  # version 0 layout: the matrix sits 40 bytes after the flags
    matrix = [0, 0x00010000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000]  # rotate by 90 degrees for display
    data[i + 44 : i + 80] = struct.pack(">9I", *matrix)
    frame = next(iter(decode_clips(bytes(data), VideoConfig())))[0]
    assert frame.shape == (48, 32, 3)  # portrait after rotation
    assert frame[:6].mean() > 240 and frame[-6:].mean() < 15  # the left band is now on top (clockwise)


def _photo_video(fmt: str, codec: str, pix_fmt: str) -> bytes:
    from skimage import data as skdata

    img, buf = skdata.astronaut(), io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        st = out.add_stream(codec, rate=Fraction(25))
        st.height, st.width, st.pix_fmt = 96, 128, pix_fmt
        for i in range(6):
            crop = np.ascontiguousarray(img[i * 7 : i * 7 + 96, i * 5 : i * 5 + 128])
            for pkt in st.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,codec,pix_fmt", [("mp4", "libx264", "yuv420p"), ("avi", "mjpeg", "yuvj420p"),
                                                ("matroska", "libx264", "yuv444p")])
def test_reused_converter_gives_the_pixels_of_to_ndarray(fmt, codec, pix_fmt):
    """vistok reuses one swscale converter per thread, across files and directions (RGB -> YUV for the
    encoder too); the pixels must be those of PyAV's fresh-converter `to_ndarray`."""
    from vistok.tokenize import H264Codec

    data = _photo_video(fmt, codec, pix_fmt)
    with av.open(io.BytesIO(data)) as c:
        want = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    H264Codec().encode(np.zeros((10, 12, 3), np.uint8))  # the converter's other direction, another size
    got = [f for clip in decode_clips(data, VideoConfig()) for f in clip]
    assert len(got) == len(want) == 6
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
