"""The avc codec through the commands: shard, inspect, train, eval (each syntax element's bits), compress, sample
(streams that FFmpeg decodes, kept as .264 files)."""

import av
import numpy as np
import pytest

from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.shards.summary import summarize
from vistok.tokenize import AvcCodec
from vistok.tokenize.avc.codec import ELEMENTS
from vistok.train.data import DataConfig
from vistok.train.evaluate import evaluate
from vistok.train.sample import sample_run
from vistok.train.trainer import TrainConfig, train


@pytest.mark.slow
def test_shard_train_eval_compress_sample_and_keep_decodable_streams(tmp_path):
    codec = AvcCodec(qp=32)
    ds = run_job(["sample"], tmp_path / "ds", codec, Preprocess(size=16, crops=2, seed=0), shard_size=8,
                 executor="local", quiet=True).folder
    kinds = summarize(ds)["tokens_by_kind"]
    assert {"mb_type", "cbp", "run", "level", "eob"} <= set(kinds) and abs(sum(kinds.values()) - 1) < 1e-3
    data = DataConfig(datasets=[str(ds)], block_size=256, batch_size=4, num_workers=0, heldout=0.25)
    train(data, TrainConfig(out=str(tmp_path / "run"), max_steps=3, warmup=1, eval_every=0, ckpt_every=3), quiet=True)
    ev = evaluate(tmp_path / "run", [str(ds)], parts=True, limit=4)
    parts = sum(ev[f"{e}_bits_per_image"] for e in ELEMENTS)
    assert abs(parts - ev["bits_per_image"]) < 1e-3 * ev["bits_per_image"]
    from vistok.shards.reader import Dataset
    from vistok.train.compress import Coder

    coder = Coder.load(tmp_path / "run")  # compress: range-coded files that give the records back
    recs = [r for _, r in zip(range(3), Dataset(ds))]
    assert [r.tokens.tolist() for r in coder.decompress(b for _, b in coder.compress(recs))] == [r.tokens.tolist() for r in recs]
    sample_run(tmp_path / "run", 2, tmp_path / "s.png", seed=1, keep=tmp_path / "keep", quiet=True)
    for i in range(2):
        with av.open(str(tmp_path / "keep" / f"sample-{i}.264"), format="h264") as f:
            frames = list(f.decode(video=0))
        assert len(frames) == 1 and frames[0].width == 16 and frames[0].height == 16
        y = np.frombuffer(frames[0].planes[0], np.uint8).reshape(16, -1)[:, :16]
        assert y.std() > 0  # a picture, not an empty stream
