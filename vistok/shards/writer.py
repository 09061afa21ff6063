"""Deterministic, atomic WebDataset tar shards.

The same records always give the same bytes: members in the record's fixed order, ``mtime=0``,
uid/gid 0, empty owner names, mode 0644, POSIX ustar headers, and (for ``.tar.gz``) a gzip header
with no file name and mtime 0. A shard is written through `vistok.atomic.AtomicPath` (a hidden temporary
name in the same folder, fsynced, renamed), so a reader or a killed job never sees a truncated tar.

A shard of a dataset starts with a small `__vistok__` member (`vistok.shards.integrity.HEADER`: the dataset's
config hash and the shard's name), which webdataset's readers skip as metadata. The writer hashes the bytes
as they go to disk, so the manifest gets each shard's sha256 without reading the shard again.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import IO

from vistok.atomic import AtomicPath
from vistok.record import TokenRecord
from vistok.shards.integrity import HEADER


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, 0, 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


class _Hashing:
    """A file opened for writing that hashes (sha256) and counts what goes through it."""

    def __init__(self, file: IO[bytes]):
        self.file, self.hash, self.bytes = file, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.bytes += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def tell(self) -> int:  # tarfile asks where it starts (the file is new: at 0)
        return self.bytes


class ShardWriter:
    """Context manager writing one shard: ``with ShardWriter(path) as w: w.write(record)``.

    On a clean exit the shard appears at `path`; on an exception, or if no record was written,
    nothing appears there. `header`: the bytes of a first `__vistok__` member (none when empty). After a
    clean exit, `sha256` and `bytes` describe the file as written.
    """

    def __init__(self, path: str | os.PathLike, compress: bool | None = None, header: bytes = b""):
        self.path = Path(path)
        self.compress = self.path.name.endswith(".gz") if compress is None else compress
        self.header = header
        self.count = 0
        self.sha256, self.bytes = "", 0

    def __enter__(self) -> ShardWriter:
        self._out = AtomicPath(self.path)
        self._file = open(self._out.tmp, "wb")
        self._hashing = _Hashing(self._file)
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._hashing, mtime=0, compresslevel=3) if self.compress else None
        self._tar = tarfile.open(fileobj=self._gz or self._hashing, mode="w", format=tarfile.USTAR_FORMAT)
        if self.header:
            self._tar.addfile(_tarinfo(HEADER, len(self.header)), io.BytesIO(self.header))
        return self

    def write(self, record: TokenRecord) -> None:
        sample = record.to_sample()
        key = sample.pop("__key__")
        for suffix, data in sample.items():
            self._tar.addfile(_tarinfo(f"{key}.{suffix}", len(data)), io.BytesIO(data))
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._tar.close()
            if self._gz is not None:
                self._gz.close()
        finally:
            self._file.close()
        self.sha256, self.bytes = self._hashing.hash.hexdigest(), self._hashing.bytes
        if exc_type is None and self.count:
            self._out.commit()
        else:
            self._out.abort()
