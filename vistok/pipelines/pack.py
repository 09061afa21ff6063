"""`vistok pack`: a dataset folder -> one zarr v3 store (its arrays: `vistok.shards.store`).

Packing is planned from the per-shard stats alone (sample counts and lengths), so every array's size and chunking is
known before any shard is read; the work is cut into tasks that each own whole chunks (a sample range, and
the token chunks that start inside it), which run on any executor and write disjoint chunk files. Memory
is bounded by one task's samples. The store is built under a temporary name and renamed when complete;
the same dataset always packs to the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import vistok
from vistok.errors import DatasetError, one_line
from vistok.executors import ExecutorConfig, run_tasks
from vistok.progress import Progress
from vistok.record import json_bytes
from vistok.shards.integrity import Expect
from vistok.shards.manifest import done_shards
from vistok.shards.reader import Dataset, iter_shards
from vistok.shards.store import FORMAT, KIND, SAMPLE_CHUNK, TOKEN_CHUNK
from vistok.storage import Loc


@dataclass(frozen=True)
class PackTask:
    out: str
    shards: tuple[tuple[str, int, int], ...]  # (path, first sample index, samples) of the shards to read
    samples: tuple[int, int]  # sample range whose per-sample arrays this task writes
    tokens: tuple[int, int]  # token range (whole chunks) this task writes
    need: tuple[int, int]  # sample range to read to cover both
    token_base: int  # global token offset of sample need[0]
    has_orders: bool
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)  # for shards in object storage
    expect: Expect | None = None  # what the manifest says of the shards: each read is checked against it


def pack_task(task: PackTask) -> dict[str, Any]:
    g = zarr.open_group(task.out, mode="r+", zarr_format=3)
    a0, a1 = task.need
    keys, metas, orders, toks = [], [], [], []
    for path, first, count in task.shards:
        if first + count <= a0 or first >= a1:
            continue
        for j, rec in enumerate(iter_shards([Loc(path, task.storage_options)], expect=task.expect)):
            i = first + j
            if i < a0:
                continue
            if i >= a1:
                break
            if task.samples[0] <= i < task.samples[1]:
                keys.append(rec.key)
                metas.append(json_bytes(rec.meta).decode())
                if task.has_orders:
                    orders.append(json.dumps({"orders": {k: v.tolist() for k, v in sorted(rec.orders.items())},
                                              "side": {k: [str(v.dtype), list(v.shape), v.ravel().tolist()]
                                                       for k, v in sorted(rec.side.items())}}))
            toks.append(rec.tokens)
    s0, s1 = task.samples
    if s1 > s0:
        if len(keys) != s1 - s0:
            raise DatasetError(f"shards hold fewer samples than their stats say (range {s0}-{s1})")
        g["keys"][s0:s1] = np.array(keys, dtype=object).astype(str)
        g["meta"][s0:s1] = np.array(metas, dtype=object).astype(str)
        if task.has_orders:
            g["orders"][s0:s1] = np.array(orders, dtype=object).astype(str)
    t0, t1 = task.tokens
    if t1 > t0:
        flat = np.concatenate(toks) if toks else np.zeros(0, dtype=g["tokens"].dtype)
        lo = t0 - task.token_base
        if lo < 0 or lo + (t1 - t0) > flat.size:
            raise DatasetError("shards hold fewer tokens than their stats say")
        g["tokens"][t0:t1] = flat[lo : lo + (t1 - t0)]
    return {"samples": s1 - s0, "tokens": t1 - t0}


def _plan(ds: Dataset) -> tuple[list[tuple[str, int, int]], np.ndarray]:
    """From the stats alone: (path, first sample, samples) of every shard, and the (n + 1,) sample offsets. The
    shards are checked first (`Dataset.shards`): a damaged one is refused, named, before any work."""
    folder, manifest = ds.folder, ds.manifest
    paths = {p.name: p for p in ds.shards}
    names = set(paths)
    lengths = [n for st in done_shards(folder) if st.name in names for n in st.lengths]
    shards, first = [], 0
    for s in manifest.shards:
        shards.append((str(paths[s["name"]]), first, int(s["samples"])))
        first += int(s["samples"])
    if len(lengths) != first:
        raise DatasetError(f"{folder}: stats list {len(lengths)} samples but the manifest {first}")
    offsets = np.zeros(first + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=offsets[1:])
    return shards, offsets


def _create_arrays(tmp: Path, offsets: np.ndarray, vocab_dtype: str, has_orders: bool):
    n, total = offsets.size - 1, int(offsets[-1])
    g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    cfg = {"write_empty_chunks": True}
    g.create_array("tokens", shape=(total,), dtype=vocab_dtype, chunks=(TOKEN_CHUNK,), config=cfg)
    g.create_array("offsets", shape=(n + 1,), dtype="int64", chunks=(SAMPLE_CHUNK,), config=cfg)
    g.create_array("lengths", shape=(n,), dtype="int32", chunks=(SAMPLE_CHUNK,), config=cfg)
    for name in ("keys", "meta") + (("orders",) if has_orders else ()):
        g.create_array(name, shape=(n,), dtype=str, chunks=(SAMPLE_CHUNK,), config=cfg)
    g["offsets"][:] = offsets
    g["lengths"][:] = np.diff(offsets).astype(np.int32)
    return g


def _tasks(tmp: Path, shards: list[tuple[str, int, int]], offsets: np.ndarray, samples_per_task: int,
           has_orders: bool, options: dict[str, Any], expect: Expect | None = None) -> list[PackTask]:
    """Cut the store into tasks that own whole chunks, so concurrent tasks never write one chunk file."""
    n, total = offsets.size - 1, int(offsets[-1])
    tasks = []
    step = max(SAMPLE_CHUNK, samples_per_task // SAMPLE_CHUNK * SAMPLE_CHUNK)
    for s0 in range(0, max(n, 1), step):
        s1 = min(n, s0 + step)
        # token chunks owned: those whose first token lies in [offsets[s0], offsets[s1])
        t0 = min(total, -(-int(offsets[s0]) // TOKEN_CHUNK) * TOKEN_CHUNK)
        t1 = total if s1 == n else min(total, -(-int(offsets[s1]) // TOKEN_CHUNK) * TOKEN_CHUNK)
        need0, need1 = s0, s1
        if t1 > t0:  # also read the samples that the owned token chunks span
            need0 = min(s0, int(np.searchsorted(offsets, t0, side="right")) - 1)
            need1 = max(s1, int(np.searchsorted(offsets, t1, side="left")))
        touching = tuple(sh for sh in shards if sh[1] < need1 and sh[1] + sh[2] > need0)
        tasks.append(PackTask(str(tmp), touching, (s0, s1), (t0, t1) if t1 > t0 else (0, 0), (need0, need1),
                              int(offsets[need0]), has_orders, options, expect))
    return tasks


def pack(dataset: str | Path, out: str | Path, executor: ExecutorConfig = ExecutorConfig("local"),
         samples_per_task: int = 4 * SAMPLE_CHUNK, quiet: bool = True) -> Path:
    """Pack the dataset folder `dataset` (local, or a `Loc` of an fsspec URL with its storage options) into the
    local zarr store `out` (replaced atomically when complete)."""
    folder, out = Loc(dataset), Path(out)
    ds = Dataset(folder)
    manifest = ds.manifest
    shards, offsets = _plan(ds)
    n, total = offsets.size - 1, int(offsets[-1])
    has_orders = bool(manifest.stored_orders) or bool(manifest.codec.get("motion_vectors"))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    g = _create_arrays(tmp, offsets, manifest.vocabulary["dtype"], has_orders)
    failures = []

    def on_failure(task: PackTask, exc: BaseException) -> dict[str, Any]:
        cause = getattr(exc, "cause", None) or exc  # Ray wraps the task's exception
        failures.append(one_line(cause) if isinstance(cause, DatasetError) else f"samples {task.samples}: {one_line(cause)}")
        return {}

    with Progress("pack", n, "samples", quiet=quiet) as prog:
        run_tasks(pack_task, _tasks(tmp, shards, offsets, samples_per_task, has_orders, folder.options, ds.expect),
                  lambda status: prog.advance(status.get("samples", 0)), on_failure, executor)
    if failures:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(f"packing {folder} failed: {failures[0]}")
    g.attrs.update({"kind": KIND, "format": FORMAT, "vistok_version": vistok.__version__,
                    "counts": {"samples": n, "tokens": total}, "manifest": manifest.to_json(),
                    "chunks": {"tokens": TOKEN_CHUNK, "samples": SAMPLE_CHUNK}})
    g.attrs["complete"] = True  # last: a store without it is refused
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
