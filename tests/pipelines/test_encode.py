import io
import json

import av
import numpy as np

from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.shards.reader import Dataset
from vistok.tokenize import JpegCodec, WaveletCodec


def test_broken_videos_are_recorded_and_the_job_completes(tmp_path, make_video):
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


def test_embedded_gif_shards_and_trains(tmp_path, logged_losses):
    from vistok.train.data import DataConfig
    from vistok.train.trainer import TrainConfig, train

    res = run_job(["sample-video"], tmp_path / "gif", WaveletCodec(), Preprocess(size=16, clip_len=4, fps=10),
                  shard_size=2, executor="local", quiet=True)
    assert res.samples >= 4 and res.errors == 0
    rec = next(iter(Dataset(res.folder)))
    assert rec.meta["frames"] == 4 and Dataset(res.folder).codec.decode(rec).shape == (4, 16, 16, 3)


    data = DataConfig(datasets=[str(res.folder)], block_size=256, batch_size=2, num_workers=0, heldout=0.0)
    train(data, TrainConfig(out=str(tmp_path / "r"), max_steps=30, warmup=2, eval_every=0, log_every=1), quiet=True)
    loss = logged_losses(tmp_path / "r")
    first, last = np.mean([loss[s] for s in (1, 2, 3)]), np.mean([loss[s] for s in range(26, 31)])
    assert last < first - 3  # from ~11 bits (uniform over the vocabulary) down: the clips are learnable


def test_stored_orders_on_video_clips(tmp_path):
    res = run_job(["sample-video"], tmp_path / "v", JpegCodec(), Preprocess(size=16, clip_len=4, fps=10),
                  shard_size=4, executor="local", quiet=True, store_orders=("gradwalk:max",))
    assert res.errors == 0 and res.samples >= 4
    ds = Dataset(res.folder)
    for rec in ds:
        walk = rec.orders["gradwalk-max"]
        assert rec.meta["frames"] == 4 and sorted(walk.tolist()) == list(range(walk.size))


class _OutOfMemoryCodec(JpegCodec):
    """A real codec that runs out of memory encoding (as a huge image would)."""

    def encode(self, media, key="sample", meta=None):
        raise MemoryError


class _OutOfMemoryCrops(Preprocess):
    def apply(self, img, key):
        raise MemoryError


def test_an_error_row_names_the_stage_that_ran_out_of_memory(tmp_path):
    from PIL import Image

    from vistok.media.sources import expand_sources
    from vistok.pipelines.encode import encode_input

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    (input_id,) = expand_sources([str(tmp_path / "a.png")])
    for codec, pre, stage in ((_OutOfMemoryCodec(), Preprocess(), "encode"), (JpegCodec(), _OutOfMemoryCrops(), "preprocess")):
        try:
            list(encode_input(input_id, codec, pre))
        except Exception as exc:  # noqa: BLE001 - the type and stage are what is checked
            assert type(exc).__name__ == "InputError" and exc.stage == stage and "out of memory" in str(exc)
        else:
            raise AssertionError("no error")
