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

from vistok.errors import DamagedShard, DatasetError
from vistok.record import TokenRecord
from vistok.shards.integrity import Expect, OnDamage, check_shards, read_shard
from vistok.shards.manifest import ERRORS, Manifest, dataset_codec, load_manifest
from vistok.storage import Cache, Loc
from vistok.tokenize.base import Codec


def iter_shards(paths: list[Path] | list[str] | list[Loc], cache: Cache | None = None,
                expect: Expect | None = None) -> Iterator[TokenRecord]:
    """Records of the given shards, in order, through webdataset's tar reader (raw bytes, decoded by us). With
    `expect` (a dataset's: `Dataset.expect`), every shard is checked as it is read
    (`vistok.shards.integrity.read_shard`); a damaged one stops the read naming it, or is skipped when
    `expect.on_damage` says so."""
    for p in paths:
        loc = Loc(p)
        try:
            yield from read_shard(loc, cache, expect)
        except DamagedShard as damage:
            if expect is None:
                raise
            expect.on_damage.handle(damage)  # raises unless damaged shards are skipped

class Dataset:
    """A finished dataset folder. Its shards are checked before they are handed out (`shards`: each present, of
    its listed size, headed for this dataset) and while they are read (`expect`); `on_damage` says whether a
    damaged shard stops the reader (the default) or is skipped and recorded."""

    def __init__(self, folder: str | Path | Loc, on_damage: OnDamage | None = None):
        self.folder = Loc(folder)
        self.manifest: Manifest = load_manifest(self.folder)
        self.on_damage = on_damage or OnDamage()

    @cached_property
    def codec(self) -> Codec:
        return dataset_codec(self.manifest)

    @cached_property
    def expect(self) -> Expect:
        m = self.manifest
        return Expect(str(self.folder), m.config_hash, int(m.vocabulary["size"]), {s["name"]: s for s in m.shards},
                      self.on_damage, bool(m.shard_header))

    @cached_property
    def shards(self) -> list[Loc]:
        """The shards to read, checked before any of them is read (one listing, a small read each): damage
        raises `DamagedShard` naming the first damaged shard, or with `on_damage.skip` leaves them out."""
        ok, damages = check_shards(self.folder, [s["name"] for s in self.manifest.shards], self.expect)
        if damages and not self.on_damage.skip:
            more = f" (and {len(damages) - 1} more damaged shards: `vistok verify {self.folder}` lists them)" if len(
                damages) > 1 else ""
            first = damages[0]
            raise DamagedShard(first.dataset, first.shard, first.detail + more)
        for damage in damages:
            self.on_damage.handle(damage)
        return ok

    def __len__(self) -> int:
        return int(self.manifest.counts["samples"])

    def __iter__(self) -> Iterator[TokenRecord]:
        return iter_shards(self.shards, expect=self.expect)

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
