"""Deterministic, atomic WebDataset tar shards.

The same records always give the same bytes: members in the record's fixed order, ``mtime=0``,
uid/gid 0, empty owner names, mode 0644, POSIX ustar headers, and (for ``.tar.gz``) a gzip header
with no file name and mtime 0. A shard is written through `vistok.atomic.AtomicPath` (a hidden temporary
name in the same folder, fsynced, renamed), so a reader or a killed job never sees a truncated tar.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

from vistok.atomic import AtomicPath
from vistok.record import TokenRecord


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, 0, 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


class ShardWriter:
    """Context manager writing one shard: ``with ShardWriter(path) as w: w.write(record)``.

    On a clean exit the shard appears at `path`; on an exception, or if no record was written,
    nothing appears there.
    """

    def __init__(self, path: str | os.PathLike, compress: bool | None = None):
        self.path = Path(path)
        self.compress = self.path.name.endswith(".gz") if compress is None else compress
        self.count = 0

    def __enter__(self) -> ShardWriter:
        self._out = AtomicPath(self.path)
        self._file = open(self._out.tmp, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._file, mtime=0, compresslevel=3) if self.compress else None
        self._tar = tarfile.open(fileobj=self._gz or self._file, mode="w", format=tarfile.USTAR_FORMAT)
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
        if exc_type is None and self.count:
            self._out.commit()
        else:
            self._out.abort()
