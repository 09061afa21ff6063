"""What trusting shards costs: readers' checks and `vistok verify`, against reading the same shards plainly.

One dataset of JPEG q20 crops (gzipped shards, as `vistok shard` writes), read three ways in the same run:
- plain: the records through webdataset's tar stages, nothing checked (vistok's reader before the checks);
- checked: `Dataset` iteration as every reader now does it (sizes and headers before the first record, each
  member parsed strictly, tokens against the vocabulary, sha256 of each shard as it streams by);
- verify: `vistok verify` in-process (the checked read plus each record's metadata read by its codec), and
  `--deep` (the codec also parses every token).
Each figure is the best of three; the ratios are against the plain read.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path


def _best(fn, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(crops: int = 40, size: int = 64) -> dict[str, float]:
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.integrity import verify
    from vistok.pipelines.job import run_job
    from vistok.shards.integrity import read_shard
    from vistok.shards.reader import Dataset
    from vistok.tokenize.jpeg import JpegCodec

    with tempfile.TemporaryDirectory() as d:
        ds = Path(d) / "ds"
        run_job(["sample"], ds, JpegCodec(quality=20), Preprocess(size=size, crops=crops), shard_size=200,
                compress=True, executor="local", quiet=True)
        dataset = Dataset(ds)
        shards = dataset.shards
        n = sum(1 for _ in dataset)  # warm: imports, page cache
        plain = _best(lambda: sum(1 for p in shards for _ in read_shard(p)))
        checked = _best(lambda: sum(1 for _ in Dataset(ds)))
        hashing = _best(lambda: [hashlib.sha256(p.local_path.read_bytes()).digest() for p in shards])
        verified = _best(lambda: verify([str(ds)], executor="local", quiet=True), rounds=2)
        deep = _best(lambda: verify([str(ds)], executor="local", quiet=True, deep=True), rounds=2)
        nbytes = sum(p.local_path.stat().st_size for p in shards)
    return {"records": n, "shards": len(shards), "mb": round(nbytes / 1e6, 2),
            "plain_records_per_s": round(n / plain), "checked_to_plain": round(checked / plain, 3),
            "sha256_share_of_read": round(hashing / plain, 4), "verify_to_plain": round(verified / plain, 3), "verify_deep_to_plain": round(deep / plain, 3)}


if __name__ == "__main__":
    import json

    print(json.dumps({"bench": "verify", **run()}))
