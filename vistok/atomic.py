"""Writes that appear whole or not at all: a temporary name beside the target, fsync, rename, fsync of the folder.

    with AtomicPath(path) as tmp:            # a file: write tmp
        tmp.write_bytes(data)
    with AtomicPath(run / "step-000200", folder=True) as tmp:   # a folder: fill tmp/
        torch.save(weights, tmp / "model.pt")

On a clean exit what was written is fsynced (every file of a folder, and the folder), renamed over `path` and
the parent folder fsynced, so a reader, a crash or a `kill -9` sees the old target or the new one, never a
part. On an exception (or `abort()`) the temporary is removed and `path` is left as it was. The shard
writer, checkpoints and local storage all write through it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename into it) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:  # fsync on any descriptor flushes the file's data
        os.fsync(f.fileno())


def publish(tmp: Path, path: Path) -> None:
    """Move the finished file `tmp` to `path` durably: fsync it, rename it over `path`, fsync the folder."""
    _fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


class AtomicPath:
    """A temporary file (or, with `folder`, an empty folder) beside `path`, published there on `commit`."""

    def __init__(self, path: str | os.PathLike, folder: bool = False):
        self.path, self.folder = Path(path), folder
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._remove_tmp()  # a stale one from a killed run with this pid
        if folder:
            self.tmp.mkdir(parents=True)

    def _remove_tmp(self) -> None:
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)

    def commit(self) -> None:
        if not self.folder:
            publish(self.tmp, self.path)
            return
        for f in self.tmp.iterdir():
            _fsync_file(f)
        fsync_dir(self.tmp)
        if self.path.is_dir():  # a folder cannot be renamed over a full one
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        self._remove_tmp()

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
