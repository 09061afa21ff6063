"""Reading dataset folders through the `webdataset` library itself.

`Dataset` opens a folder (manifest, codec, shard list) and iterates its `TokenRecord`s in shard order.
The shards are plain WebDataset tars: `webdataset.WebDataset(paths)` reads them with no vistok code; vistok
reads them through webdataset's own tar stages, from a local folder or object storage (`vistok.storage`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np

from vistok.errors import DatasetError
from vistok.record import TokenRecord
from vistok.shards.manifest import ERRORS, Manifest, dataset_codec, load_manifest, shard_paths
from vistok.storage import Cache, Loc
from vistok.tokenize.base import Codec


def _opened(shards: list[Loc], cache: Cache | None = None) -> Iterator[dict]:
    """webdataset's stream stage, for local files and object storage alike: {url, stream} per shard, read as
    a stream (a remote shard is fetched in large read-ahead blocks, never downloaded first; kept in `cache`
    when one is given)."""
    for loc in shards:
        with loc.open(cache) as stream:
            yield {"url": str(loc), "stream": stream}


def iter_shards(paths: list[Path] | list[str] | list[Loc], cache: Cache | None = None) -> Iterator[TokenRecord]:
    """Records of the given shards, in order, through webdataset's tar reader (raw bytes, decoded by us)."""
    if not paths:
        return
    # imported here: webdataset pulls in torch (~1.5 s), which shard workers never need
    from webdataset.tariterators import group_by_keys, tar_file_expander

    for sample in group_by_keys(tar_file_expander(_opened([Loc(p) for p in paths], cache))):
        yield TokenRecord.from_sample(sample)


def check_split(n_shards: int, world: int, n_workers: int) -> None:
    """Every (rank, loader worker) needs a shard of its own: say so before any worker starts."""
    if n_shards < world * n_workers:
        raise DatasetError(
            f"{n_shards} shards cannot feed {world} ranks x {n_workers} loader workers (need at least "
            f"{world * n_workers}): reshard with a smaller --shard-size, or use fewer loader workers (--workers)")


def split_shards(paths: list, rank: int = 0, world: int = 1, worker: int = 0, n_workers: int = 1,
                 seed: int = 0, epoch: int = 0, shuffle: bool = True) -> list:
    """This (rank, worker)'s shards for one epoch: a seeded shard shuffle, then a strided split."""
    paths = list(paths)
    check_split(len(paths), world, n_workers)
    splits = world * n_workers
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(paths))
        paths = [paths[i] for i in order]
    return paths[rank * n_workers + worker :: splits]


def stream_records(paths: list, rank: int = 0, world: int = 1, worker: int = 0, n_workers: int = 1,
                   seed: int = 0, shuffle: bool = True, infinite: bool = False,
                   resampled: bool = False, cache: Cache | None = None) -> Iterator[tuple[int, TokenRecord]]:
    """Training-side reader: (epoch, record) pairs for one rank and loader worker.

    Shards are shuffled per epoch from `seed` before the split, so every epoch visits the data in a new
    order and every (rank, worker) gets a disjoint set. `infinite` loops over epochs; `resampled` instead
    draws shards with replacement forever (webdataset's resampled mode), for mixing very unequal sets.
    Remote shards read to their end are kept in `cache` when one is given.
    """
    if resampled:
        rng = np.random.default_rng([seed, rank, worker, 1])
        paths = list(paths)
        while True:
            yield from ((0, r) for r in iter_shards([paths[int(rng.integers(len(paths)))]], cache))
    epoch = 0
    while True:
        for rec in iter_shards(split_shards(paths, rank, world, worker, n_workers, seed, epoch, shuffle), cache):
            yield epoch, rec
        if not infinite:
            return
        epoch += 1


class Dataset:
    """A finished dataset folder."""

    def __init__(self, folder: str | Path | Loc):
        self.folder = Loc(folder)
        self.manifest: Manifest = load_manifest(self.folder)

    @cached_property
    def codec(self) -> Codec:
        return dataset_codec(self.manifest)

    @property
    def shards(self) -> list[Loc]:
        return shard_paths(self.folder, self.manifest)

    def __len__(self) -> int:
        return int(self.manifest.counts["samples"])

    def __iter__(self) -> Iterator[TokenRecord]:
        return iter_shards(self.shards)

    def get(self, key: str) -> TokenRecord:
        """Find one record by key (a scan; use a packed store for random access)."""
        for rec in self:
            if rec.key == key:
                return rec
        raise DatasetError(f"no record with key {key!r} in {self.folder}")

    def errors(self) -> Iterator[dict]:
        path = self.folder / ERRORS
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    yield json.loads(line)
