"""Packed zarr store against the tar shards it was packed from, same data, same run: random-access
samples/s, sequential tokens/s, and bytes on disk."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.pipelines.pack import pack
from vistok.shards.reader import Dataset
from vistok.shards.store import PackedStore
from vistok.tokenize import JpegCodec


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(crops: int = 100) -> dict:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        run_job(["sample"], d / "ds", JpegCodec(), Preprocess(size=64, crops=crops), shard_size=300, compress=True,
                executor="local", quiet=True)
        t0 = time.perf_counter()
        pack(d / "ds", d / "s.zarr")
        pack_s = time.perf_counter() - t0
        ds, st = Dataset(d / "ds"), PackedStore(d / "s.zarr")
        keys = st.keys()
        rng = np.random.default_rng(0)

        t0 = time.perf_counter()
        n_tok = sum(len(r) for r in ds)
        shard_seq = n_tok / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        n_tok2 = sum(len(st[i]) for i in range(len(st)))
        store_seq = n_tok2 / (time.perf_counter() - t0)
        assert n_tok == n_tok2

        idx = rng.integers(0, len(st), 2000)
        t0 = time.perf_counter()
        for i in idx:
            st[int(i)]
        store_rand = idx.size / (time.perf_counter() - t0)
        # tar shards have no index: a random record costs a scan of its shard (measured on a few)
        few = [keys[int(i)] for i in idx[:20]]
        t0 = time.perf_counter()
        for k in few:
            ds.get(k)
        shard_rand = len(few) / (time.perf_counter() - t0)
        return {
            "samples": len(st),
            "pack_s": round(pack_s, 2),
            "store_random_samples_s": round(store_rand),
            "shards_random_samples_s": round(shard_rand, 1),
            "random_access_speedup": round(store_rand / shard_rand, 1),
            "store_sequential_tokens_s": round(store_seq),
            "shards_sequential_tokens_s": round(shard_seq),
            "sequential_store_vs_shards": round(store_seq / shard_seq, 2),
            "store_bytes": _size(d / "s.zarr"),
            "shards_bytes": sum(p.stat().st_size for p in (d / "ds").glob("shard-*")),
            "store_vs_shards_size": round(_size(d / "s.zarr") / sum(p.stat().st_size for p in (d / "ds").glob("shard-*")), 3),
        }


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
