"""The trainer's loader: the global sample order against the stream it replaced, resume cost, shuffle quality.

One dataset of 64x64 JPEG q20 crops of the embedded photos in plain tar shards (`vistok shard`'s default), rows
of 512, batch 16, in-process (`--workers 0`), measured in the same run:

- loader tokens/s: `Loader` (lanes over the global order, records read through the shards' indexes) against
  today's stream before it: shards shuffled per epoch and streamed front to back, a shuffle buffer of 512
  records, the same documents and row filling (`_buffered_rows`, kept here as the baseline);
- resume cost at loader steps 1k, 10k and 100k: seconds from `load_state_dict` to the first batch, as a ratio of
  the first pass to that step (the first pass's time is the measured seconds per batch times the steps; the
  stream before replayed the whole pass, 1.0x);
- shuffle quality over 100,000 records in 100 shards, on record positions alone (no data): the mean distance
  between consecutive records' places in the dataset's own order, as a fraction of its size (a uniform shuffle:
  1/3), for the block shuffle and for shard shuffling with the buffer of 512; and the share of consecutive
  records from the same shard;
- the loader reading the dataset from `s3://` (moto's server on 127.0.0.1), ranged reads and through a shard
  cache, against local disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCK, BATCH = 512, 16


def _buffered_rows(cfg, buffer: int = 512):
    """The stream vistok trained from before the global order: shards shuffled per epoch, records through a
    buffer of `buffer`, documents and rows as now."""
    from vistok.shards.reader import Dataset, iter_shards
    from vistok.tokenize.stream import StreamSpec
    from vistok.train.data import RowFiller, is_heldout, record_docs

    ds = Dataset(cfg.datasets[0])
    filler = RowFiller(cfg.block_size, len(ds.codec.axes))
    rng, buf, epoch = np.random.default_rng([cfg.seed, 0, 0, 3]), [], 0
    while True:
        shards = [ds.shards[i] for i in np.random.default_rng([cfg.seed, epoch]).permutation(len(ds.shards))]
        for rec in iter_shards(shards, expect=ds.expect):
            if is_heldout(rec.key, cfg.heldout):
                continue
            buf.append(rec)
            if len(buf) < buffer:
                continue
            rec = buf.pop(int(rng.integers(len(buf))))
            r = np.random.default_rng([cfg.seed, epoch, int.from_bytes(
                hashlib.blake2b(rec.key.encode(), digest_size=8).digest(), "little")])
            for doc in record_docs(ds.codec, rec, StreamSpec.parse(cfg.order, block_size=cfg.block_size), r).docs:
                yield from filler.add(doc)
        epoch += 1


def _tokens_per_s(next_batch, batches: int) -> float:
    next_batch()  # warm: the first records read
    t0 = time.perf_counter()
    for _ in range(batches):
        next_batch()
    return batches * BATCH * BLOCK / (time.perf_counter() - t0)


def loader(ds: str, batches: int, options: dict | None = None, cache=None) -> dict:
    from vistok.train.data import DataConfig, Loader

    cfg = DataConfig(datasets=[ds], block_size=BLOCK, batch_size=BATCH, num_workers=0, order="random")
    t0 = time.perf_counter()
    new = Loader(cfg, options=options, cache=cache)
    opened = time.perf_counter() - t0
    return {"tokens_per_s": _tokens_per_s(new.next, batches), "loader": new, "cfg": cfg, "open_s": opened}


def resume_cost(ds: str, loader_obj, seconds_per_batch: float, steps: tuple[int, ...]) -> dict:
    from vistok.train.data import Loader

    st = loader_obj.state_dict()
    per_row = max(1, int(np.mean([k for k, _ in st["starts"].values()])) / max(1, st["batches"]))  # records a row
    out = {}
    for step in steps:
        state = {**st, "batches": step, "starts": {lane: [int(step * per_row), 0] for lane in st["starts"]}}
        t0 = time.perf_counter()
        again = Loader(loader_obj.cfg)
        again.load_state_dict(state)
        again.next()
        dt = time.perf_counter() - t0
        out[f"resume_s_at_{step // 1000}k"] = round(dt, 3)
        out[f"resume_to_first_pass_at_{step // 1000}k"] = round(dt / (step * seconds_per_batch), 5)
    return out


def shuffle_quality(shards: int = 100, per_shard: int = 1000, buffer: int = 512, block: int = 4096) -> dict:
    """Consecutive records' distance in the dataset's order (fraction of it), and the share from one shard."""
    from vistok.train.sampling import FolderOrder

    n = shards * per_shard
    rows = [np.arange(per_shard) for _ in range(shards)]
    order = FolderOrder(rows, None, seed=0, block=block)
    new = np.array([s * per_shard + r for s, r in (order.at(i)[1] for i in range(n))])
    perm = np.random.default_rng([0, 0]).permutation(shards)  # the stream before: shards in turn, a buffer
    stream = (perm[:, None] * per_shard + np.arange(per_shard)).ravel()
    rng, buf, old = np.random.default_rng(3), [], []
    for x in stream:
        buf.append(x)
        if len(buf) >= buffer:
            old.append(buf.pop(int(rng.integers(len(buf)))))
    old = np.array(old)

    def jump(seq):
        return float(np.abs(np.diff(seq)).mean() / n)

    def same_shard(seq):
        return float((np.diff(seq // per_shard) == 0).mean())

    return {"shuffle_jump_block": round(jump(new), 4), "shuffle_jump_buffer_512": round(jump(old), 4),
            "shuffle_jump_uniform": round(1 / 3, 4), "same_shard_block": round(same_shard(new), 3),
            "same_shard_buffer_512": round(same_shard(old), 3), "shuffle_block_records": block}


def object_storage(local: str, batches: int) -> dict:
    import s3fs

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import start_moto
    from vistok.storage import Cache

    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(k, v)
    proc, url = start_moto()
    try:
        opts = {"endpoint_url": url}
        fs = s3fs.S3FileSystem(endpoint_url=url, skip_instance_cache=True)
        fs.mkdir("bench")
        fs.put(local, "bench/ds", recursive=True)
        remote = loader("s3://bench/ds", batches, opts)["tokens_per_s"]
        with tempfile.TemporaryDirectory() as c:
            cached = loader("s3://bench/ds", batches, opts, Cache(c, 1 << 30))["tokens_per_s"]
        here = loader(local, batches)["tokens_per_s"]
    finally:
        proc.terminate()
    return {"s3_tokens_per_s": round(remote), "s3_to_local": round(remote / here, 3),
            "s3_cached_tokens_per_s": round(cached), "s3_cached_to_local": round(cached / here, 3)}


def run(crops: int = 40, batches: int = 40, s3: bool = True) -> dict:
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.tokenize.jpeg import JpegCodec

    with tempfile.TemporaryDirectory() as d:
        os.environ.setdefault("VISTOK_INDEX_DIR", str(Path(d) / "index"))
        ds = str(Path(d) / "ds")
        res = run_job(["sample"], ds, JpegCodec(quality=20), Preprocess(size=64, crops=crops), shard_size=100,
                      executor="local", quiet=True)
        new = loader(ds, batches)  # the first open builds the shards' indexes
        again = loader(ds, 1)  # ... the next reads them from the cache
        rows = _buffered_rows(new["cfg"])
        old = _tokens_per_s(lambda: [next(rows) for _ in range(BATCH)], batches)
        spb = BATCH * BLOCK / new["tokens_per_s"]
        out = {"records": res.samples, "shards": res.shards, "loader_tokens_per_s": round(new["tokens_per_s"]),
               "buffered_stream_tokens_per_s": round(old), "loader_to_buffered_stream": round(new["tokens_per_s"] / old, 3),
               "open_and_index_s": round(new["open_s"], 3), "open_indexed_s": round(again["open_s"], 3),
               **resume_cost(ds, new["loader"], spb, (1000, 10000, 100000)), **shuffle_quality()}
        if s3:
            out.update(object_storage(ds, batches))
    return out


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--crops", type=int, default=40)
    p.add_argument("--batches", type=int, default=40)
    a = p.parse_args()
    print(json.dumps({"bench": "resume", **run(a.crops, a.batches)}))
