import io
import json
from fractions import Fraction

import av
import numpy as np
import pytest

from tests.conftest import Quiet
from vistok.errors import InputError
from vistok.pipelines.job import run_job
from vistok.pipelines.preprocess import Preprocess
from vistok.pipelines.video import VideoConfig, decode_clips
from vistok.shards.reader import Dataset
from vistok.tokenize import JpegCodec, WaveletCodec
from vistok.tokenize.orders import get_order, inverse


def make_video(fmt: str, codec: str, n: int = 30, rate: int = 25, size=(32, 48), pix_fmt="yuv420p") -> bytes:
    """A real encode: frame i is a flat grey of level 5 * i (so a decoded frame tells its index)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        st = out.add_stream(codec, rate=Fraction(rate))
        st.height, st.width = size
        st.pix_fmt = pix_fmt
        if codec == "libx264":
            st.options = {"crf": "10", "threads": "1"}
        for i in range(n):
            img = np.full((*size, 3), min(255, 5 * i), np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return buf.getvalue()


def _index(frame: np.ndarray) -> int:
    return int(round(float(frame.mean()) / 5))


@pytest.mark.parametrize("fmt,codec", [("mp4", "libx264"), ("matroska", "libx264"), ("mov", "libx264"),
                                       ("webm", "libvpx"), ("avi", "mpeg4"), ("gif", "gif")])
def test_every_container_decodes(fmt, codec):
    data = make_video(fmt, codec, n=12, pix_fmt="rgb8" if codec == "gif" else "yuv420p")
    clips = list(decode_clips(data, VideoConfig()))
    assert len(clips) == 12 and clips[0][0].shape == (32, 48, 3)


def test_fps_resamples_by_timestamps():
    data = make_video("mp4", "libx264", n=50, rate=25)  # 2 s
    frames = [c[0] for c in decode_clips(data, VideoConfig(fps=5))]
    assert [_index(f) for f in frames] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
    doubled = [c[0] for c in decode_clips(data, VideoConfig(fps=50))]
    assert 98 <= len(doubled) <= 100 and _index(doubled[1]) == 0 and _index(doubled[2]) == 1  # frames held


def test_clip_length_stride_and_limit():
    data = make_video("mp4", "libx264", n=20)
    clips = list(decode_clips(data, VideoConfig(clip_len=4, clip_stride=6, max_clips=3)))
    assert [[_index(f) for f in c] for c in clips] == [[0, 1, 2, 3], [6, 7, 8, 9], [12, 13, 14, 15]]
    with pytest.raises(InputError, match="fewer than"):
        list(decode_clips(make_video("mp4", "libx264", n=3), VideoConfig(clip_len=8)))


def test_broken_videos_are_recorded_and_the_job_completes(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    good = make_video("mp4", "libx264", n=10)
    (src / "ok.mp4").write_bytes(good)
    (src / "zero.mp4").write_bytes(b"")
    (src / "text.mp4").write_bytes(b"this is not a video\n" * 10)
    (src / "truncated.mp4").write_bytes(good[: len(good) // 2])
    audio = io.BytesIO()
    with av.open(audio, mode="w", format="wav") as out:
        st = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for pkt in st.encode(frame):
            out.mux(pkt)
    (src / "audio_only.mkv").write_bytes(audio.getvalue())
    res = run_job([str(src)], tmp_path / "out", JpegCodec(), Preprocess(size=16, clip_len=2), shard_size=4,
                  executor="local", quiet=True)
    rows = [json.loads(line) for line in (res.folder / "errors.jsonl").read_text().splitlines()]
    failed = {r["source"].rsplit("/", 1)[-1] for r in rows}
    assert {"zero.mp4", "text.mp4", "audio_only.mkv"} <= failed
    assert all("\n" not in r["reason"] for r in rows)
    keys = [r.key for r in Dataset(res.folder)]
    assert sum(k.startswith("ok-") for k in keys) == 5  # 10 frames -> 5 clips of 2


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
    units, coords = codec.layout_arrays(rec)
    assert (np.diff(coords[:, 0]) >= 0).all() and coords[-1, 0] == 2
    g = codec.grammar(rec.meta)
    for i, t in enumerate(rec.tokens):
        assert g.allowed()[t], i
        assert (g.next_known()[:2] == coords[i, :2]).all() or rec.tokens[i] == 3
        assert (g.step(int(t)) == coords[i]).all()
    assert g.phase == "end"
    inp = codec.order_input(rec)
    for name in ("hilbert", "random", "randsac:4", "spiral"):
        perm = get_order(name)(inp, np.random.default_rng(1)).perm
        assert (np.diff(coords[perm, 0]) >= 0).all(), name  # time-major
        np.testing.assert_array_equal(rec.tokens[perm][inverse(perm)], rec.tokens)


def test_embedded_gif_shards_and_trains(tmp_path):
    from vistok.train.data import DataConfig
    from vistok.train.trainer import TrainConfig, train

    res = run_job(["sample-video"], tmp_path / "gif", WaveletCodec(), Preprocess(size=16, clip_len=4, fps=10),
                  shard_size=2, executor="local", quiet=True)
    assert res.samples >= 4 and res.errors == 0
    rec = next(iter(Dataset(res.folder)))
    assert rec.meta["frames"] == 4 and Dataset(res.folder).codec.decode(rec).shape == (4, 16, 16, 3)


    data = DataConfig(datasets=[str(res.folder)], block_size=256, batch_size=2, num_workers=0, heldout=0.0)
    out = train(data, TrainConfig(out=str(tmp_path / "r"), max_steps=2, warmup=1, eval_every=0), progress=Quiet())
    assert out["step"] == 2


def test_inspect_psnr_against_sources(tmp_path):
    from vistok.shards.inspect import psnr_sample

    lossless = run_job(["sample"], tmp_path / "w", WaveletCodec(lossless=True), Preprocess(size=24, crops=2),
                       shard_size=8, executor="local", quiet=True)
    p = psnr_sample(lossless.folder, 6)
    assert p["records"] == 6 and p["exact"] == 6
    clips = run_job(["sample-video"], tmp_path / "j", JpegCodec(quality=50), Preprocess(size=16, clip_len=3),
                    shard_size=8, executor="local", quiet=True)
    q = psnr_sample(clips.folder, 3)
    assert q["records"] == 3 and 20 < q["mean_db"] < 60


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
