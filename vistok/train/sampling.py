"""One global sample order, the same for any number of loader workers and ranks, with a position to resume at.

For a seed, the training records form one endless sequence, a function of the datasets alone:

- **A dataset's order** (`FolderOrder`, `StoreOrder`), epoch after epoch. A dataset folder's shards are shuffled
  per epoch and cut into blocks of consecutive shards holding at least `shuffle_block` training records; the
  records of each block are shuffled together. Reads stay within one block at a time (a few shards), and a
  record can land anywhere in its block. Records are read by position through the shards' indexes
  (`vistok.shards.index`). A packed store is shuffled uniformly per epoch.
- **A mixture** (`Mix`) of several datasets interleaves them by their weights: a seeded pattern of `MIX_CYCLE`
  slots, with each dataset's share of slots, repeated. Position p's dataset and that dataset's own position
  follow from p in O(1).
- **Lanes** (`lane_rows`): the global batch has `lanes` rows (`--batch-size` x ranks). Lane l packs records at
  positions l, l + lanes, l + 2 lanes, ... into rows. Loader step s is row s of every lane, and rank r
  trains on lanes [r B, (r + 1) B). A rank's loader workers split its lanes between them, so neither workers
  nor ranks change what a lane holds.

A lane's state after a row is where the next row starts: (k, j), doc j of the lane's k-th record. Every row
starts empty, so resuming reads one record per lane and no rows are replayed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from functools import lru_cache

import numpy as np

from vistok.errors import DatasetError, UsageError
from vistok.record import TokenRecord
from vistok.shards.index import SPLIT, IndexedShards, shard_index
from vistok.shards.store import PackedStore
from vistok.storage import Cache

MIX_CYCLE = 1024  # slots of the seeded pattern that interleaves datasets by their weights
PREFETCH = 16  # records a lane reads ahead in one go (one ranged read per shard they fall in)


def training_rows(index: np.ndarray, heldout: float) -> np.ndarray:
    """Rows of a shard's index on the training side of the split (`is_heldout` from the stored hashes)."""
    return np.flatnonzero(index[:, SPLIT].astype(np.float64) / 2**64 >= heldout)


class FolderOrder:
    """One dataset folder's training records in the block-shuffled order. `at(i)` -> (epoch, (shard, row)).
    `rows`: each shard's training rows (`training_rows`); `reader` reads them (`folder_order` makes both)."""

    def __init__(self, rows: list[np.ndarray], reader: IndexedShards | None, seed: int, block: int, salt: int = 0):
        self.rows, self.reader = rows, reader
        self.n = sum(r.size for r in rows)
        self.seed, self.block, self.salt = seed, block, salt
        self._epoch = lru_cache(maxsize=2)(self._epoch_blocks)
        self._block = lru_cache(maxsize=8)(self._block_records)

    def _epoch_blocks(self, epoch: int) -> tuple[list[list[int]], np.ndarray]:
        """This epoch's blocks (lists of shard numbers) and the first training position of each, plus the end."""
        perm = np.random.default_rng([self.seed, self.salt, epoch]).permutation(len(self.rows))
        blocks, starts, cur, count, total = [], [0], [], 0, 0
        for s in perm.tolist():
            cur.append(s)
            count += self.rows[s].size
            if count >= self.block:
                blocks.append(cur)
                total += count
                starts.append(total)
                cur, count = [], 0
        if cur:
            blocks.append(cur)
            starts.append(total + count)
        return blocks, np.asarray(starts, dtype=np.int64)

    def _block_records(self, epoch: int, b: int) -> np.ndarray:
        """(shard, row) of each training record of block b, shuffled: shape (records, 2)."""
        shards = self._epoch(epoch)[0][b]
        recs = np.concatenate([np.stack([np.full(self.rows[s].size, s), self.rows[s]], axis=1) for s in shards])
        return recs[np.random.default_rng([self.seed, self.salt, epoch, b, 1]).permutation(len(recs))]

    def at(self, i: int) -> tuple[int, tuple[int, int]]:
        epoch, q = divmod(i, self.n)
        starts = self._epoch(epoch)[1]
        b = int(np.searchsorted(starts, q, side="right")) - 1
        shard, row = self._block(epoch, b)[q - starts[b]]
        return epoch, (int(shard), int(row))

    def fetch(self, where: list[tuple[int, int]]) -> list[TokenRecord | None]:
        """The records at (shard, row) places, in the order given: one read per shard they fall in."""
        out: list[TokenRecord | None] = [None] * len(where)
        by_shard: dict[int, list[int]] = {}
        for k, (s, _) in enumerate(where):
            by_shard.setdefault(s, []).append(k)
        for s, ks in by_shard.items():
            for k, rec in zip(ks, self.reader.read(s, [where[k][1] for k in ks])):  # type: ignore[union-attr]
                out[k] = rec
        return out


def folder_order(ds, heldout: float, seed: int, block: int, cache: Cache | None = None, salt: int = 0) -> FolderOrder:
    """A dataset folder's order: its shards indexed (`vistok.shards.index.shard_index`, cached), then read by it."""
    indexes = [shard_index(loc, ds.expect, cache) for loc in ds.shards]
    reader = IndexedShards(ds.shards, indexes, ds.expect, cache)
    return FolderOrder([training_rows(ix, heldout) for ix in indexes], reader, seed, block, salt)


class StoreOrder:
    """A packed store's training records, a uniform shuffle per epoch. `at(i)` -> (epoch, index in the store)."""

    def __init__(self, store: PackedStore, heldout: float, seed: int, salt: int = 0):
        from vistok.record import heldout_hash

        self.store = store
        self.train = np.array([i for i, k in enumerate(store.keys()) if heldout_hash(k) >= heldout], dtype=np.int64)
        self.n, self.seed, self.salt = self.train.size, seed, salt
        self._perm = lru_cache(maxsize=2)(lambda e: self.train[np.random.default_rng([seed, salt, e]).permutation(self.n)])

    def at(self, i: int) -> tuple[int, int]:
        epoch, q = divmod(i, self.n)
        return epoch, int(self._perm(epoch)[q])

    def fetch(self, where: list[int]) -> list[TokenRecord | None]:
        return [self.store[i] for i in where]


class Mix:
    """Global position -> (dataset, that dataset's own position), interleaving datasets by weight."""

    def __init__(self, weights: list[float], seed: int):
        w = np.asarray(weights, dtype=np.float64)
        quota = np.where(w > 0, np.maximum(1, np.round(w / w.sum() * MIX_CYCLE)), 0).astype(np.int64)
        pattern = np.repeat(np.arange(w.size), quota)
        self.pattern = pattern[np.random.default_rng([seed, 5]).permutation(pattern.size)]
        self.quota = quota
        # before[j, d]: slots of dataset d among the pattern's first j
        self.before = np.zeros((self.pattern.size + 1, w.size), dtype=np.int64)
        self.before[1:] = np.cumsum(np.eye(w.size, dtype=np.int64)[self.pattern], axis=0)

    def at(self, p: int) -> tuple[int, int]:
        cycle, j = divmod(p, self.pattern.size)
        d = int(self.pattern[j])
        return d, int(cycle * self.quota[d] + self.before[j, d])


class GlobalOrder:
    """The datasets' training records as one endless sequence: position p -> (epoch, record), read ahead."""

    def __init__(self, orders: list, weights: list[float] | None, seed: int):
        self.orders = orders
        self.mix = Mix(weights or [1.0] * len(orders), seed) if len(orders) > 1 else None

    def locate(self, p: int) -> tuple[int, int, object]:
        """(dataset, epoch, place in the dataset) of global position p."""
        d, i = self.mix.at(p) if self.mix is not None else (0, p)
        epoch, where = self.orders[d].at(i)
        return d, epoch, where

    def fetch(self, positions: list[int]) -> list[tuple[int, TokenRecord | None]]:
        """(epoch, record) at each position (None: a damaged record, skipped)."""
        located = [self.locate(p) for p in positions]
        out: list[tuple[int, TokenRecord | None]] = [(e, None) for _, e, _ in located]
        for d, order in enumerate(self.orders):
            ks = [k for k, loc in enumerate(located) if loc[0] == d]
            if ks:
                for k, rec in zip(ks, order.fetch([located[k][2] for k in ks])):
                    out[k] = (located[k][1], rec)
        return out


def open_order(sets: list, heldout: float, seed: int, block: int, weights: list[float] | None,
               cache: Cache | None = None) -> GlobalOrder:
    """The global order over opened datasets (folders and/or packed stores); refuses a dataset with no training
    record before any is read."""
    orders = []
    for d, ds in enumerate(sets):
        order = (StoreOrder(ds, heldout, seed, d) if isinstance(ds, PackedStore)
                 else folder_order(ds, heldout, seed, block, cache, d))
        if not order.n:
            raise DatasetError(f"every record of {ds.folder if hasattr(ds, 'folder') else ds.path} is held out "
                               f"(--heldout {heldout}): nothing to train on; lower --heldout")
        orders.append(order)
    return GlobalOrder(orders, weights, seed)


def record_seed(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The generator of a training record's order in an epoch (its random order, its parallel groups)."""
    return np.random.default_rng([seed, epoch, int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(),
                                                              "little")])


Docs = Callable[[int, TokenRecord], list[dict[str, np.ndarray]]]  # (epoch, record) -> its documents


def lane_rows(order: GlobalOrder, docs_of: Docs, filler, lane: int, lanes: int,
              start: tuple[int, int] = (0, 0)) -> Iterator[tuple[dict[str, np.ndarray], tuple[int, int]]]:
    """Lane `lane`'s rows from `start` = (k, j): doc j of the lane's k-th record (global position
    lane + k * lanes). Yields (row, where the next row starts); `filler` is an empty `RowFiller`."""
    k, j = start
    ahead: OrderedDict[int, tuple[int, TokenRecord | None]] = OrderedDict()
    while True:
        if k not in ahead:
            ks = list(range(k, k + PREFETCH))
            ahead = OrderedDict(zip(ks, order.fetch([lane + x * lanes for x in ks])))
        epoch, rec = ahead.pop(k)
        docs = docs_of(epoch, rec) if rec is not None else []
        for jj in range(j, len(docs)):
            before, n = filler.fill, docs[jj]["idx"].size
            rows = list(filler.add(docs[jj]))
            for m, row in enumerate(rows):  # a row flushed before this doc: the next one starts with it
                flushed_before = m == 0 and before and before + n > filler.T
                yield row, ((k, jj) if flushed_before else (k, jj + 1))
        k, j = k + 1, 0


def lanes_of(rank: int, world: int, lanes: int) -> range:
    if lanes % world:
        raise UsageError(f"{world} ranks cannot split a global batch of {lanes} rows")
    b = lanes // world
    return range(rank * b, (rank + 1) * b)
