"""The packed store: one zarr v3 group for random access, exact shuffling and resume (written by
`vistok.pipelines.pack`; this module reads it).

    STORE.zarr/
      tokens    (total,)   concatenated tokens, the vocabulary's dtype, zstd chunks of 64k tokens
      offsets   (n + 1,)   int64: sample i is tokens[offsets[i]:offsets[i + 1]]
      lengths   (n,)       int32
      keys      (n,)       variable-length strings (record keys, in dataset order)
      meta      (n,)       the records' JSON metadata (canonical JSON strings)
      orders    (n,)       stored orders and side arrays as JSON, only when the dataset has some
      attrs: kind "vistok-store", format, counts, the dataset's manifest verbatim, and "complete": true,
             written last

Coordinates are derived from tokens + metadata by the codec, as for shards.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from functools import cached_property
from pathlib import Path

import numpy as np

from vistok.errors import DatasetError
from vistok.record import TokenRecord
from vistok.shards.integrity import OnDamage
from vistok.shards.manifest import Manifest, dataset_codec
from vistok.shards.reader import Dataset
from vistok.storage import Loc
from vistok.tokenize.base import Codec

KIND = "vistok-store"
FORMAT = 1
TOKEN_CHUNK = 1 << 16
SAMPLE_CHUNK = 1 << 12


def is_store(path: str | Path | Loc) -> bool:
    return (Loc(path) / "zarr.json").exists()


class PackedStore:
    """Map-style reader: `len(store)`, `store[i]`, `store.by_key(key)` -> `TokenRecord`.

    Keeps a small LRU of decompressed token chunks, so sequential reads touch each chunk once.
    """

    def __init__(self, path: str | Path | Loc, cache_chunks: int = 16):
        import zarr

        self.path = Loc(path)
        if not is_store(self.path):
            raise DatasetError(f"{self.path} is not a zarr store (no zarr.json); pack one with `vistok pack`")
        try:
            if self.path.local_path is not None:
                g = zarr.open_group(str(self.path.local_path), mode="r", zarr_format=3)
            else:  # zarr reads object storage through fsspec itself
                g = zarr.open_group(self.path.url, mode="r", zarr_format=3, storage_options=self.path.options)
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
        self.manifest = Manifest.from_json(attrs["manifest"], f"the manifest kept in {self.path}")
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
        chunk_dir = self.path.local_path / "tokens" / "c" if self.path.local_path is not None else None
        if chunk_dir is not None and chunk_dir.is_dir():  # local store: every chunk file must be there (a missing one would read as zeros)
            have = sum(1 for _ in chunk_dir.iterdir())
            if have != want:
                raise DatasetError(f"{self.path} is truncated: {have} of {want} token chunks present")

    def __len__(self) -> int:
        return self.n

    @property
    def folder(self) -> Loc:
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

    def label(self, i: int) -> str | None:
        """Record i's label (`--label-from`), or None; its tokens are not read."""
        label = json.loads(self._item("meta", i)).get("label")
        return None if label is None else str(label)

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

    @cached_property
    def codec(self) -> Codec:
        return dataset_codec(self.manifest)

    def token_counts(self) -> np.ndarray:
        counts = np.zeros(self.manifest.vocabulary["size"], dtype=np.int64)
        for c in range(-(-self.total // self.chunk)):
            counts += np.bincount(np.asarray(self._chunk(c), dtype=np.int64), minlength=counts.size)
        return counts


def open_any(path: str | Path | Loc, options: dict | None = None, on_damage: OnDamage | None = None):
    """A dataset folder (`Dataset`, its shards checked: `on_damage` says what a damaged one does) or a packed
    store (`PackedStore`), opened with the storage `options` when `path` is a URL (a `Loc` keeps its own)."""
    loc = Loc(path, options)
    return PackedStore(loc) if is_store(loc) else Dataset(loc, on_damage)
