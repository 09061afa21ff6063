"""Object storage and planning at scale, against baselines measured in the same run.

- sharding throughput to ``s3://`` (moto's S3 server on 127.0.0.1) against the same job to local disk, with
  cheap samples (64x64 crops, 1000- and 64-sample shards: request latency shows) and 256x256 ones, in jobs
  of one or two shards (a job's 6 fixed requests show) and of eight;
- the trainer's loader, tokens/s streaming shards from ``s3://`` against reading them from local disk;
- planning 20 vs 2,000 small input tars: seconds per tar and the driver's peak RSS, planned per file (each tar
  one entry, expanded by its task) against planning per member (every tar's headers read by the driver, as
  vistok did before);
- planning a folder of 2,000 vs 200,000 files: microseconds per file and the driver's peak RSS, walked a level
  at a time into a spilled, sorted input list against the in-memory planner vistok had before (the whole
  `rglob` sorted, a map of every file).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

MEMBERS = 100  # members per small input tar


def _tars(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    payload = b"\xff\xd8" + b"\0" * 64  # planning never reads a member's data
    for t in range(n):
        with tarfile.open(folder / f"{t:05d}.tar", "w") as tar:
            for m in range(MEMBERS):
                for ext, data in (("jpg", payload), ("json", b"{}")):
                    ti = tarfile.TarInfo(f"{t:05d}{m:04d}.{ext}")
                    ti.size = len(data)
                    tar.addfile(ti, io.BytesIO(data))
    return folder


_PLAN = """
import json, resource, sys, time, tracemalloc
from vistok.media.sources import InputList
from vistok.pipelines.job import plan_shards

def plan():
    with InputList([sys.argv[1] + "/*.tar"], defer=sys.argv[2] == "files") as inputs:
        inputs.fingerprint
        return list(plan_shards(inputs, 1000))

t0 = time.perf_counter()
groups = plan()
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()  # a second plan, traced: the Python heap it needs at its peak
plan()
heap = tracemalloc.get_traced_memory()[1]
print(json.dumps({"seconds": dt, "rss_mb": peak / 1024, "heap_mb": heap / 2**20, "tasks": len(groups)}))
"""


_PLAN_FOLDER = """
import json, os, resource, sys, time
from pathlib import Path
from vistok.media.sources import InputList, media_extensions
from vistok.pipelines.job import plan_shards
from vistok.record import InputId

def in_memory(src):  # the planner before streaming: every path, a map of every file, one sort
    p = Path(src)
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in media_extensions())
    by_target = {}
    for f in files:
        by_target[(str(f.resolve()), None)] = f"{p.name}/{f.relative_to(p).as_posix()}"
    ids = sorted(str(InputId(name, path)) for (path, _), name in by_target.items())
    stamps = [(os.stat(i.split("\\0")[1]).st_size) for i in ids]
    return len(list(plan_shards(ids, 1000))), len(stamps)

def streamed(src):
    with InputList([src], defer=True) as inputs:
        inputs.fingerprint
        return sum(1 for _ in plan_shards(inputs, 1000)), inputs.count

t0 = time.perf_counter()
tasks, n = (streamed if sys.argv[2] == "streamed" else in_memory)(sys.argv[1])
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n": n}))
"""


def _folder(root: Path, n: int) -> Path:
    """`n` small files in folders of 1,000 (planning reads none of them)."""
    for i in range(n):
        d = root / f"{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        (d / f"{i:07d}.jpg").write_bytes(b"")
    return root


def _plan_folder(folder: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PLAN_FOLDER, str(folder), mode], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout)


def folder_planning(large_n: int = 200_000) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        small, large = _folder(Path(tmp) / "f2k", 2000), _folder(Path(tmp) / "f200k", large_n)
        s_small, s_large = _plan_folder(small, "streamed"), _plan_folder(large, "streamed")
        m_small, m_large = _plan_folder(small, "in_memory"), _plan_folder(large, "in_memory")
    assert s_large["n"] == m_large["n"] == large_n
    return {"plan_folder_us_per_file_200k": round(1e6 * s_large["seconds"] / large_n, 1),
            "plan_folder_baseline_us_per_file_200k": round(1e6 * m_large["seconds"] / large_n, 1),
            "plan_folder_rss_mb_2k": round(s_small["rss_mb"], 1), "plan_folder_rss_mb_200k": round(s_large["rss_mb"], 1),
            "plan_folder_rss_ratio_200k_vs_2k": round(s_large["rss_mb"] / s_small["rss_mb"], 3),
            "plan_folder_baseline_rss_mb_200k": round(m_large["rss_mb"], 1),
            "plan_folder_baseline_rss_ratio_200k_vs_2k": round(m_large["rss_mb"] / m_small["rss_mb"], 3)}


def _plan(folder: Path, mode: str) -> dict:
    """Planning in a fresh process (its peak RSS is the driver's): `mode` files (per tar) or members."""
    out = subprocess.run([sys.executable, "-c", _PLAN, str(folder), mode], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def planning(large_n: int = 2000) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        small, large = _tars(Path(tmp) / "20", 20), _tars(Path(tmp) / "2000", large_n)
        f20, f2000 = _plan(small, "files"), _plan(large, "files")
        m2000 = _plan(large, "members")
    return {"plan_ms_per_tar_2000": round(1000 * f2000["seconds"] / large_n, 4),
            "plan_rss_mb_20": round(f20["rss_mb"], 1), "plan_rss_mb_2000": round(f2000["rss_mb"], 1),
            "plan_rss_ratio_2000_vs_20": round(f2000["rss_mb"] / f20["rss_mb"], 3),
            "plan_members_baseline_ms_per_tar_2000": round(1000 * m2000["seconds"] / large_n, 4),
            "plan_speedup_vs_members": round(m2000["seconds"] / f2000["seconds"], 1),
            "plan_heap_mb_20": round(f20["heap_mb"], 2), "plan_heap_mb_2000": round(f2000["heap_mb"], 2),
            "plan_members_baseline_heap_mb_2000": round(m2000["heap_mb"], 1)}


def _shard(out: str, opts: dict | None, crops: int, shard_size: int = 1000, size: int = 64) -> tuple[float, int]:
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.tokenize import JpegCodec

    t0 = time.perf_counter()
    res = run_job(["sample"], out, JpegCodec(quality=20), Preprocess(size=size, crops=crops), shard_size=shard_size,
                  compress=True, executor="local", quiet=True, storage_options=opts)
    return res.samples / (time.perf_counter() - t0), res.samples


def _loader_tokens_per_s(dataset: str, batches: int, options: dict | None = None) -> float:
    """Best of 3 passes of `batches` batches through the trainer's loader (a fresh loader each pass)."""
    from vistok.train.data import DataConfig, Loader

    best = 0.0
    for _ in range(3):
        loader = Loader(DataConfig(datasets=[dataset], block_size=512, batch_size=8, num_workers=1, shuffle_block=64),
                        options=options)
        loader.next()  # the worker is up and the first shards are open
        t0 = time.perf_counter()
        for _ in range(batches):
            loader.next()
        best = max(best, batches * 8 * 512 / (time.perf_counter() - t0))
    return best


def object_storage(scale: float = 1.0) -> dict:
    import s3fs

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import start_moto

    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(k, v)
    proc, url = start_moto()
    n42 = max(1, round(42 * scale))
    try:
        opts = {"endpoint_url": url}
        s3fs.S3FileSystem(endpoint_url=url, skip_instance_cache=True).mkdir("bench")
        with tempfile.TemporaryDirectory() as tmp:
            _shard(str(Path(tmp) / "warm"), None, 1)  # imports (s3fs: 0.7 s) and codec tables, outside the timings
            _shard("s3://bench/warm", opts, 1)
            local, n = _shard(str(Path(tmp) / "ds"), None, n42)
            remote, _ = _shard("s3://bench/ds", opts, n42)
            small_local, _ = _shard(str(Path(tmp) / "small"), None, n42, 64)
            small_remote, _ = _shard("s3://bench/small", opts, n42, 64)
            big_local, big_n = _shard(str(Path(tmp) / "big"), None, max(1, round(8 * scale)), 1000, 256)
            big_remote, _ = _shard("s3://bench/big", opts, max(1, round(8 * scale)), 1000, 256)
            job_local, job_n = _shard(str(Path(tmp) / "job"), None, max(1, round(336 * scale)))  # 8 shards: the job's fixed requests amortized
            job_remote, _ = _shard("s3://bench/job", opts, max(1, round(336 * scale)))
            read_local = _loader_tokens_per_s(str(Path(tmp) / "ds"), max(2, round(60 * scale)))
            read_remote = _loader_tokens_per_s("s3://bench/ds", max(2, round(60 * scale)), opts)
    finally:
        proc.terminate()
    return {"samples": n, "shard_local_samples_per_s": round(local, 1), "shard_s3_samples_per_s": round(remote, 1),
            "shard_s3_vs_local": round(remote / local, 3),
            "shard_s3_vs_local_64_sample_shards": round(small_remote / small_local, 3),
            "shard_256px_samples": big_n, "shard_256px_local_samples_per_s": round(big_local, 1),
            "shard_256px_s3_samples_per_s": round(big_remote, 1), "shard_256px_s3_vs_local": round(big_remote / big_local, 3),
            "shard_8_shards_samples": job_n, "shard_8_shards_s3_vs_local": round(job_remote / job_local, 3),
            "loader_local_tokens_per_s": round(read_local),
            "loader_s3_tokens_per_s": round(read_remote), "loader_s3_vs_local": round(read_remote / read_local, 3)}


def run(smoke: bool = False) -> dict:
    """`smoke`: every part at a small size (`make bench-quick`: the code runs; the figures mean little)."""
    if smoke:
        return {**object_storage(0.05), **planning(100), **folder_planning(4000)}
    return {**object_storage(), **planning(), **folder_planning()}


if __name__ == "__main__":
    print(json.dumps(run()))
