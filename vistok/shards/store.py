"""`vistok pack`: a dataset folder -> one zarr v3 group for random access, exact shuffling and resume.

    STORE.zarr/
      tokens    (total,)   concatenated tokens, the vocabulary's dtype, zstd chunks of 64k tokens
      offsets   (n + 1,)   int64: sample i is tokens[offsets[i]:offsets[i + 1]]
      lengths   (n,)       int32
      keys      (n,)       variable-length strings (record keys, in dataset order)
      meta      (n,)       the records' JSON metadata (canonical JSON strings)
      orders    (n,)       stored orders and side arrays as JSON, only when the dataset has some
      attrs: kind "vistok-store", format, counts, the dataset's manifest verbatim, and "complete": true,
             written last

Coordinates are derived from tokens + metadata by the codec, as for shards. Packing is planned from the
per-shard stats alone (sample counts and lengths), so every array's layout is known before any shard is
read; the work is cut into tasks that each own whole chunks (a sample range, and the token chunks that
start inside it), which run in-process or on Ray and write disjoint chunk files. Memory is bounded by one
task's samples. The store is built under a temporary name and renamed when complete; the same dataset
always packs to the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import vistok
from vistok.errors import DatasetError
from vistok.shards.manifest import STATS_DIR, load_manifest, read_json
from vistok.shards.record import TokenRecord, json_bytes

KIND = "vistok-store"
FORMAT = 1
TOKEN_CHUNK = 1 << 16
SAMPLE_CHUNK = 1 << 12


def is_store(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "zarr.json").exists()


@dataclass(frozen=True)
class PackTask:
    out: str
    shards: tuple[tuple[str, int, int], ...]  # (path, first sample index, samples) of the shards to read
    samples: tuple[int, int]  # sample range whose per-sample arrays this task writes
    tokens: tuple[int, int]  # token range (whole chunks) this task writes
    need: tuple[int, int]  # sample range to read to cover both
    token_base: int  # global token offset of sample need[0]
    has_orders: bool


def _open_arrays(path: str):
    import zarr

    return zarr.open_group(path, mode="r+", zarr_format=3)


def pack_task(task: PackTask) -> dict[str, Any]:
    from vistok.shards.reader import iter_shards

    g = _open_arrays(task.out)
    a0, a1 = task.need
    keys, metas, orders, toks = [], [], [], []
    for path, first, count in task.shards:
        if first + count <= a0 or first >= a1:
            continue
        for j, rec in enumerate(iter_shards([path])):
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


def pack(dataset: str | Path, out: str | Path, executor: str = "local", workers: int | None = None,
         address: str | None = None, samples_per_task: int = 4 * SAMPLE_CHUNK) -> Path:
    import zarr

    from vistok.pipelines.job import run_local, run_ray
    from vistok.shards.manifest import shard_paths

    folder, out = Path(dataset), Path(out)
    manifest = load_manifest(folder)
    paths = shard_paths(folder, manifest)
    lengths, shards, first = [], [], 0
    names = {s["name"] for s in manifest["shards"]}
    for st_path in sorted((folder / STATS_DIR).glob("shard-*.json")):
        st = read_json(st_path)
        if st["name"] in names:
            lengths.extend(st["lengths"])
    by_name = {p.name: p for p in paths}
    for s in manifest["shards"]:
        shards.append((str(by_name[s["name"]]), first, int(s["samples"])))
        first += int(s["samples"])
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size != first:
        raise DatasetError(f"{folder}: stats list {lengths.size} samples but the manifest {first}")
    n = int(lengths.size)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    has_orders = bool(manifest.get("stored_orders")) or bool(manifest["codec"].get("motion_vectors"))
    vocab_dtype = manifest["vocabulary"]["dtype"]

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    cfg = {"write_empty_chunks": True}
    g.create_array("tokens", shape=(total,), dtype=vocab_dtype, chunks=(TOKEN_CHUNK,), config=cfg)
    g.create_array("offsets", shape=(n + 1,), dtype="int64", chunks=(SAMPLE_CHUNK,), config=cfg)
    g.create_array("lengths", shape=(n,), dtype="int32", chunks=(SAMPLE_CHUNK,), config=cfg)
    for name in ("keys", "meta") + (("orders",) if has_orders else ()):
        g.create_array(name, shape=(n,), dtype=str, chunks=(SAMPLE_CHUNK,), config=cfg)
    g["offsets"][:] = offsets
    g["lengths"][:] = lengths.astype(np.int32)

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
                              int(offsets[need0]), has_orders))
    failures = []

    def on_failure(task, exc):
        failures.append(f"{task.samples}: {exc}")
        return {}

    if executor == "ray":
        run_ray(iter(tasks), lambda s: None, workers, address, fn=pack_task, on_failure=on_failure)
    else:
        run_local(iter(tasks), lambda s: None, fn=pack_task, on_failure=on_failure)
    if failures:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(f"packing {folder} failed: {failures[0]}")
    g.attrs.update({"kind": KIND, "format": FORMAT, "vistok_version": vistok.__version__,
                    "counts": {"samples": n, "tokens": total}, "manifest": manifest,
                    "chunks": {"tokens": TOKEN_CHUNK, "samples": SAMPLE_CHUNK}})
    g.attrs["complete"] = True  # last: a store without it is refused
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


class PackedStore:
    """Map-style reader: `len(store)`, `store[i]`, `store.by_key(key)` -> `TokenRecord`.

    Keeps a small LRU of decompressed token chunks, so sequential reads touch each chunk once.
    """

    def __init__(self, path: str | Path, cache_chunks: int = 16):
        import zarr

        self.path = Path(path)
        if not is_store(self.path):
            raise DatasetError(f"{self.path} is not a zarr store (no zarr.json); pack one with `vistok pack`")
        try:
            g = zarr.open_group(str(self.path), mode="r", zarr_format=3)
            attrs = dict(g.attrs)
        except Exception as exc:  # zarr raises several types for malformed metadata
            raise DatasetError(f"{self.path} is not a readable zarr v3 group ({exc})") from None
        if attrs.get("kind") != KIND:
            raise DatasetError(f"{self.path} is a zarr group but not a vistok store (written by something else)")
        if int(attrs.get("format", 0)) > FORMAT:
            raise DatasetError(f"{self.path} was written by a newer vistok; upgrade to read it")
        if not attrs.get("complete"):
            raise DatasetError(f"{self.path} is incomplete (packing did not finish); run `vistok pack` again")
        self.g = g
        self.manifest: dict[str, Any] = attrs["manifest"]
        self.n = int(attrs["counts"]["samples"])
        self.total = int(attrs["counts"]["tokens"])
        self.offsets = np.asarray(g["offsets"][:], dtype=np.int64)
        self._check(attrs)
        self.chunk = int(attrs["chunks"]["tokens"])
        self.sample_chunk = int(attrs["chunks"]["samples"])
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_chunks
        self._keys: dict[str, int] | None = None
        self.has_orders = "orders" in g

    def _check(self, attrs: dict) -> None:
        tok = self.g["tokens"]
        if tok.shape != (self.total,) or self.offsets.shape != (self.n + 1,) or int(self.offsets[-1]) != self.total:
            raise DatasetError(f"{self.path} is inconsistent: array sizes disagree with its counts")
        chunk = int(attrs["chunks"]["tokens"])
        want = -(-self.total // chunk)
        chunk_dir = self.path / "tokens" / "c"
        if chunk_dir.is_dir():  # local store: every chunk file must be there (a missing one would read as zeros)
            have = sum(1 for _ in chunk_dir.iterdir())
            if have != want:
                raise DatasetError(f"{self.path} is truncated: {have} of {want} token chunks present")

    def __len__(self) -> int:
        return self.n

    @property
    def folder(self) -> Path:
        return self.path

    def _cached(self, name: str, c: int, size: int, length: int) -> np.ndarray:
        """Chunk `c` of array `name` (chunks of `size`, array of `length`), decompressed once (LRU).

        A zarr element read costs a whole chunk's decompression plus call overhead, so every per-sample
        read goes through this cache: sequential passes touch each chunk once.
        """
        k = (name, c)
        arr = self._cache.get(k)
        if arr is None:
            arr = np.asarray(self.g[name][c * size : min((c + 1) * size, length)])
            self._cache[k] = arr
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(k)
        return arr

    def _chunk(self, c: int) -> np.ndarray:
        return self._cached("tokens", c, self.chunk, self.total)

    def _item(self, name: str, i: int) -> str:
        c, j = divmod(i, self.sample_chunk)
        return str(self._cached(name, c, self.sample_chunk, self.n)[j])

    def tokens(self, i: int) -> np.ndarray:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        c0, c1 = a // self.chunk, (b - 1) // self.chunk if b > a else a // self.chunk
        if b - a > 4 * self.chunk:  # very long sample: read it directly
            return np.asarray(self.g["tokens"][a:b])
        parts = [self._chunk(c) for c in range(c0, c1 + 1)]
        flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return flat[a - c0 * self.chunk : b - c0 * self.chunk].copy()

    def __getitem__(self, i: int) -> TokenRecord:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i %= self.n
        key = self._item("keys", i)
        meta = json.loads(self._item("meta", i))
        orders, side = {}, {}
        if self.has_orders:
            extra = json.loads(self._item("orders", i))
            orders = {k: np.asarray(v, dtype=np.int32) for k, v in extra["orders"].items()}
            side = {k: np.asarray(v[2], dtype=v[0]).reshape(v[1]) for k, v in extra["side"].items()}
        return TokenRecord(key, self.tokens(i), meta, orders, side)

    def keys(self) -> list[str]:
        return [str(k) for k in self.g["keys"][:]]

    def index_of(self, key: str) -> int:
        if self._keys is None:
            self._keys = {k: i for i, k in enumerate(self.keys())}
        if key not in self._keys:
            raise DatasetError(f"no record with key {key!r} in {self.path}")
        return self._keys[key]

    def by_key(self, key: str) -> TokenRecord:
        return self[self.index_of(key)]

    def get(self, key: str) -> TokenRecord:
        return self.by_key(key)

    def __iter__(self):
        for i in range(self.n):
            yield self[i]

    @property
    def codec(self):
        from vistok.tokenize.base import get_codec

        codec = get_codec(self.manifest["codec"])
        codec.load_side_info(self.manifest.get("side_info", {}))
        return codec

    def token_counts(self) -> np.ndarray:
        counts = np.zeros(self.manifest["vocabulary"]["size"], dtype=np.int64)
        for c in range(-(-self.total // self.chunk)):
            counts += np.bincount(np.asarray(self._chunk(c), dtype=np.int64), minlength=counts.size)
        return counts


def open_any(path: str | Path):
    """A dataset folder (`Dataset`) or a packed store (`PackedStore`)."""
    from vistok.shards.reader import Dataset

    return PackedStore(path) if is_store(path) else Dataset(path)
