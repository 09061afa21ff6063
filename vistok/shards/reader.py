"""Reading dataset folders through the `webdataset` library itself.

`Dataset` opens a folder (manifest, codec, shard list) and iterates its `TokenRecord`s in shard order.
The shards are plain WebDataset tars: `webdataset.WebDataset(paths)` reads them with no vistok code.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import webdataset as wds

from vistok.errors import DatasetError
from vistok.shards.manifest import ERRORS, load_manifest, shard_paths
from vistok.shards.record import TokenRecord
from vistok.tokenize.base import Codec, get_codec


def iter_shards(paths: list[Path] | list[str]) -> Iterator[TokenRecord]:
    """Records of the given shards, in order, through webdataset's tar reader (raw bytes, decoded by us)."""
    if not paths:
        return
    ds = wds.WebDataset([str(p) for p in paths], shardshuffle=False, nodesplitter=None, workersplitter=None,
                        empty_check=False)
    for sample in ds:
        yield TokenRecord.from_sample(sample)


class Dataset:
    """A finished dataset folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest: dict[str, Any] = load_manifest(self.folder)

    @cached_property
    def codec(self) -> Codec:
        return get_codec(self.manifest["codec"])

    @property
    def shards(self) -> list[Path]:
        return shard_paths(self.folder, self.manifest)

    def __len__(self) -> int:
        return int(self.manifest["counts"]["samples"])

    def __iter__(self) -> Iterator[TokenRecord]:
        return iter_shards(self.shards)

    def get(self, key: str) -> TokenRecord:
        """Find one record by key (a scan; use a packed store for random access)."""
        for rec in self:
            if rec.key == key:
                return rec
        raise DatasetError(f"no record with key {key!r} in {self.folder}")

    def errors(self) -> Iterator[dict]:
        import json

        path = self.folder / ERRORS
        if path.exists():
            with open(path) as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line)
