import io

import av
import numpy as np
import pytest

from vistok.errors import CodecError
from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.shards.reader import Dataset
from vistok.tokenize import H264Codec, get_codec
from vistok.tokenize.base import FRAME


def _clip(photo, n=6):
    return [np.ascontiguousarray(photo[i * 6 : i * 6 + 48, i * 3 : i * 3 + 64]) for i in range(n)]


def test_encoding_is_deterministic_and_decodes(photo, psnr):
    img = np.ascontiguousarray(photo[:63, :65])  # odd sides: padded for 4:2:0, cropped back
    a, b = H264Codec().encode(img, "k"), H264Codec().encode(img, "k")
    assert a == b
    codec = H264Codec()
    rec = codec.encode(img, "k")
    out = codec.decode(rec)
    assert out.shape == img.shape and psnr(img, out) > 30
    assert np.array_equal(out, codec.decode(rec))  # the decoder is deterministic
    assert rec.meta["frame_info"][0]["type"] == "I" and rec.tokens.max() < codec.vocab.size
    assert len(codec.header_of(rec)) > 300  # SPS + PPS + x264's SEI, kept out of the tokens


def test_gop_frames_all_and_intra(photo, psnr):
    frames = _clip(photo)
    every = H264Codec(gop=3, frames="all")
    rec = every.encode_clip(frames, "c")
    assert [f["type"] for f in rec.meta["frame_info"]] == ["I", "P", "P", "I", "P", "P"]
    assert (rec.tokens == FRAME).sum() == 5
    out = every.decode(rec)
    assert out.shape == (6, 48, 64, 3) and min(psnr(f, o) for f, o in zip(frames, out)) > 28
    ionly = H264Codec(gop=3)
    intra = ionly.encode_clip(frames, "c")
    assert [f["pts"] for f in intra.meta["frame_info"]] == [0, 120]
    assert ionly.decode(intra).shape == (2, 48, 64, 3)


def test_headers_travel_through_the_manifest(tmp_path):
    res = run_job(["sample"], tmp_path / "d", H264Codec(crf=28), Preprocess(size=32), shard_size=8,
                  executor="local", quiet=True)
    heads = res.manifest.side_info["h264_headers"]
    assert len(heads) == 1  # one configuration, one size: one header stored once
    ds = Dataset(res.folder)
    rec = next(iter(ds))
    assert ds.codec.decode(rec).shape == (32, 32, 3)
    with pytest.raises(CodecError, match="has not seen"):
        get_codec(ds.manifest.codec).decode(rec)  # a bare codec does not know the header


def test_video_clips_and_transcode_never(tmp_path, make_video):
    src = tmp_path / "v"
    src.mkdir()
    (src / "a.mp4").write_bytes(make_video("mp4", "libx264", n=12))
    res = run_job([str(src)], tmp_path / "re", H264Codec(gop=4, frames="all"), Preprocess(size=16, clip_len=4),
                  shard_size=4, executor="local", quiet=True)
    assert res.samples == 3 and res.errors == 0
    ds = Dataset(res.folder)
    assert ds.codec.decode(next(iter(ds))).shape == (4, 16, 16, 3)
    keep = run_job([str(src)], tmp_path / "keep", H264Codec(transcode="never", frames="all"),
                   Preprocess(clip_len=6), shard_size=4, executor="local", quiet=True)
    ds2 = Dataset(keep.folder)
    recs = list(ds2)
    assert len(recs) == 2 and recs[0].meta["frames"] == 6
    frames = ds2.codec.decode(recs[0])
    with av.open(io.BytesIO((src / "a.mp4").read_bytes())) as c:
        direct = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][:6]
    np.testing.assert_array_equal(frames, np.stack(direct))  # the source's own packets, decoded identically


def test_h264_dataset_trains(tmp_path, logged_losses):
    from vistok.train.data import DataConfig
    from vistok.train.evaluate import evaluate
    from vistok.train.trainer import TrainConfig, train

    res = run_job(["sample"], tmp_path / "d", H264Codec(crf=35), Preprocess(size=16), shard_size=8,
                  executor="local", quiet=True)


    data = DataConfig(datasets=[str(res.folder)], block_size=256, batch_size=2, num_workers=0, heldout=0.2)
    train(data, TrainConfig(out=str(tmp_path / "r"), max_steps=30, warmup=2, eval_every=0, log_every=1), quiet=True)
    loss = logged_losses(tmp_path / "r")
    first, last = np.mean([loss[s] for s in (1, 2, 3)]), np.mean([loss[s] for s in range(26, 31)])
    assert first > 7.5 and last < first - 1.5  # from ~8 bits (uniform bytes) down: it learns the picture bytes
    ev = evaluate(tmp_path / "r")
    assert ev["images"] > 0 and ev["bits_per_token"] < 7.5


def test_motion_vectors_side_array(photo, tmp_path):
    codec = H264Codec(gop=8, frames="all", motion_vectors=True)
    rec = codec.encode_clip(_clip(photo, 4), "c")
    mv = rec.side["mv"]
    assert mv.ndim == 2 and mv.shape[1] == len(rec.meta["mv_columns"]) and mv.shape[0] > 0
    assert set(np.unique(mv[:, 0])) <= {1, 2, 3}  # P-frames only
    res = run_job(["sample-video"], tmp_path / "d", codec, Preprocess(size=16, clip_len=4), shard_size=4,
                  executor="local", quiet=True)
    ds = Dataset(res.folder)
    first = next(iter(ds))
    assert "mv" in first.side
    from vistok.pipelines.pack import pack
    from vistok.shards.store import PackedStore

    st = PackedStore(pack(res.folder, tmp_path / "s.zarr"))
    assert st[0] == first


def test_unknown_preset_is_refused():
    with pytest.raises(CodecError, match="preset must be one of"):
        H264Codec(preset="warp")
