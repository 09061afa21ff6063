"""Where data lives: a local path or an fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``memory://...``).

`Loc` names one file or folder either way, behind one interface with a class per backend: a `LocalLoc` uses
plain os calls (atomic renames and fsyncs), an `FsspecLoc` goes through fsspec, so any filesystem fsspec
knows works once its package is installed (``pip install vistok[s3]`` / ``[gcs]``). ``file://`` URLs are
local paths.

Credentials and endpoints come from the filesystem's own configuration (environment, profiles); the
options given with a location (``Loc(url, options)``, from ``--storage-options JSON``) are passed on to its
filesystem and inherited by every location derived from it. Nothing is configured process-wide: the job,
its tasks and the loaders pass the options on explicitly, and they never appear in a message (a `Loc`
prints as its URL) or a file.

Writes to object storage are whole-object PUTs (or multipart uploads, which appear only when complete), so
an object is either there in full or not at all, the same guarantee a local rename gives. A write that
fails is retried with backoff a bounded number of times, then raises `StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from vistok.atomic import AtomicPath, publish
from vistok.errors import StorageError, UsageError, one_line

RETRIES = 4  # tries of a remote write before it counts as failed
BACKOFF_S = 0.5  # first wait between tries; doubles each time
READ_BLOCK = 8 << 20  # remote reads fetch ahead in blocks of this many bytes
DRAIN_BYTES = 1 << 20  # a cached stream closed this close to its end is read to the end and kept

T = TypeVar("T")


@dataclass(frozen=True)
class Cache:
    """A bounded local cache of remote files read to their end (`vistok train --shard-cache DIR`): at most
    `max_bytes` in `folder`, the least recently used out first. Passed where files are opened, never global."""

    folder: str | None = None
    max_bytes: int = 0


def parse_options(text: str) -> dict[str, Any]:
    """``--storage-options`` text -> a dict (a JSON object), or a clear `UsageError`."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--storage-options must be a JSON object ({exc.__class__.__name__} at char {getattr(exc, 'pos', '?')})") from None
    if not isinstance(value, dict):
        raise UsageError("--storage-options must be a JSON object, e.g. '{\"endpoint_url\": \"http://127.0.0.1:9000\"}'")
    return value


def is_remote(where: str | os.PathLike | Loc) -> bool:
    if isinstance(where, Loc):
        return where.local_path is None
    s = os.fspath(where)
    return "://" in s and not s.startswith("file://")


def _translate(exc: BaseException, what: str) -> StorageError:
    """One line naming what failed and why, without options or credentials."""
    kind = {FileNotFoundError: "not found (is the bucket there?)",
            PermissionError: "access denied (check the credentials)"}.get(type(exc))
    detail = kind or f"{exc.__class__.__name__}: {one_line(exc)}"
    return StorageError(f"{what}: {detail}")


def _transient(exc: BaseException) -> bool:
    """Worth another try: the network, a timeout, throttling or a server error (fsspec raises these as OSError,
    the S3 client as its connection errors). A missing object or bucket and refused access are final, and so
    is anything else, programming errors included: those propagate with their traceback."""
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    if isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError):
        return True
    return any(c.__module__.split(".")[0] in ("botocore", "aiohttp", "urllib3") and
               any(w in c.__name__ for w in ("Connection", "Timeout", "Endpoint", "Throttl", "ServerDisconnected"))
               for c in type(exc).__mro__)


def retry(fn: Callable[[], T], what: str, tries: int = RETRIES, backoff: float = BACKOFF_S) -> T:
    """`fn()`, tried again after a transient failure (`_transient`) up to `tries` times in all, waiting
    `backoff` seconds, then twice that, ... (tenacity). A transient failure that persists, a missing bucket
    or refused access ends as a `StorageError` naming `what`; any other error propagates as it is."""
    import tenacity

    try:
        for attempt in tenacity.Retrying(stop=tenacity.stop_after_attempt(tries), reraise=True,
                                         wait=tenacity.wait_exponential(multiplier=backoff, min=backoff),
                                         retry=tenacity.retry_if_exception(_transient)):
            with attempt:
                return fn()
    except (FileNotFoundError, PermissionError) as exc:
        raise _translate(exc, what) from None
    except Exception as exc:
        if not _transient(exc):
            raise
        raise _translate(exc, f"{what} (failed {tries} times)") from None
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=16)
def _filesystem(protocol: str, options_json: str, pid: int) -> Any:
    """One filesystem per protocol, options and process (building one costs milliseconds; a job makes many
    locations)."""
    import fsspec

    return fsspec.filesystem(protocol, **json.loads(options_json))


def _info_stamp(info: dict[str, Any]) -> tuple[int, str]:
    """(size, change marker) of an object from its fsspec info (a listing's entry or a HEAD)."""
    mark = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or ""
    return int(info.get("size") or 0), str(mark)


class Loc:
    """A file or folder: `Loc(where, options)` is a `LocalLoc` for a path (or ``file://`` URL) and an
    `FsspecLoc` for any other URL, whose filesystem is built with `options` (``--storage-options``) and
    handed on to every location derived from it (`/`, `parent`, `glob`). A `Loc` given a `Loc` returns it.

    Both offer: `url`, `name`, `parent`, `/`; `exists`, `is_file`, `is_dir`, `size`, `stamp`; `read_bytes`
    (ranged), `read_ranges`, `read_text`, `open` (streamed, optionally through a `Cache`); `names`, `glob`,
    `walk`, `url_of`; `mkdir`, `write_bytes` and `upload` (whole or nothing), `unlink`, `check_writable`;
    `options` (what a worker needs to open it again). `local_path` is the `Path` of one on this machine, else None.
    """

    __slots__ = ()
    url: str
    local_path: Path | None

    def __new__(cls, where: str | os.PathLike | Loc, options: dict[str, Any] | None = None):
        if isinstance(where, Loc):
            return where
        s = os.fspath(where)
        s = s[len("file://"):] if s.startswith("file://") else s
        return FsspecLoc.at(s, options or {}) if "://" in s else LocalLoc.at(Path(s))

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Loc({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Loc) and self.url == other.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other: Loc) -> bool:
        return self.url < other.url

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def walk(self, maxdepth: int | None = None) -> Iterator[tuple[str, str, tuple[int, str]]]:
        """Every file below this folder, as (path relative to it, where it is, `stamp()`), in no particular order
        and one folder at a time: memory holds the folder being listed and those waiting, never the whole tree.
        Where it is: a local path (folder as given, then the relative path; a link to a file gives its
        target) or the remote filesystem's path (`url_of` makes it a URL). Links to folders are not followed;
        `maxdepth` 1 lists this folder only. An unreadable folder raises rather than dropping its files."""
        stack: list[tuple[str, str, int]] = [("", self._root(), 1)]
        while stack:
            rel, where, depth = stack.pop()
            deeper = maxdepth is None or depth < maxdepth
            for name, is_dir, found, stamp in self._scan(where):
                sub = f"{rel}/{name}" if rel else name
                if not is_dir:
                    yield sub, found, stamp
                elif deeper:
                    stack.append((sub, found, depth + 1))


class LocalLoc(Loc):
    """A local file or folder: plain os calls, writes through `vistok.atomic` (temporary name, fsync, rename)."""

    __slots__ = ("local_path", "url", "path")

    @classmethod
    def at(cls, path: Path) -> LocalLoc:
        loc = object.__new__(cls)
        loc.local_path, loc.url, loc.path = path, str(path), str(path)
        return loc

    @property
    def options(self) -> dict[str, Any]:
        return {}

    def __truediv__(self, name: str) -> LocalLoc:
        return LocalLoc.at(self.local_path / name)

    def __fspath__(self) -> str:
        return str(self.local_path)

    @property
    def name(self) -> str:
        return self.local_path.name

    @property
    def parent(self) -> LocalLoc:
        return LocalLoc.at(self.local_path.parent)

    def exists(self) -> bool:
        return self.local_path.exists()

    def is_file(self) -> bool:
        return self.local_path.is_file()

    def is_dir(self) -> bool:
        return self.local_path.is_dir()

    def size(self) -> int:
        return self.local_path.stat().st_size

    def stamp(self) -> tuple[int, str]:
        """(size, a change marker): the file's mtime."""
        st = self.local_path.stat()
        return st.st_size, str(st.st_mtime_ns)

    def read_bytes(self, start: int | None = None, end: int | None = None) -> bytes:
        """The file's bytes, or bytes [start, end) of it."""
        if start is None:
            return self.local_path.read_bytes()
        with open(self.local_path, "rb") as f:
            f.seek(start)
            return f.read((end or 0) - start) if end is not None else f.read()

    def read_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Bytes [start, end) for each range, from one open file."""
        out = []
        with open(self.local_path, "rb") as f:
            for start, end in ranges:
                f.seek(start)
                out.append(f.read(end - start))
        return out

    def open(self, cache: Cache | None = None) -> IO[bytes]:
        return open(self.local_path, "rb")

    def names(self) -> set[str]:
        """Names of the files and folders directly below this folder; empty when it does not exist."""
        return set(os.listdir(self.local_path)) if self.local_path.is_dir() else set()

    def glob(self, pattern: str) -> list[LocalLoc]:
        """Files matching `pattern` below this folder, sorted."""
        return [LocalLoc.at(p) for p in sorted(self.local_path.glob(pattern))]

    def url_of(self, path: str) -> str:
        return path

    def _root(self) -> str:
        return str(self.local_path)

    @staticmethod
    def _scan(folder: str) -> list[tuple[str, bool, str, tuple[int, str]]]:
        out = []
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        out.append((e.name, True, e.path, (0, "")))
                    elif e.is_file():  # a link to a file counts as the file it points to
                        st = e.stat()
                        found = os.path.realpath(e.path) if e.is_symlink() else e.path
                        out.append((e.name, False, found, (st.st_size, str(st.st_mtime_ns))))
        except OSError as exc:
            raise UsageError(f"cannot list folder {folder}: {exc.strerror or exc}") from None
        return out

    def mkdir(self) -> None:
        self.local_path.mkdir(parents=True, exist_ok=True)

    def write_bytes(self, data: bytes) -> None:
        """All of `data` or nothing: a renamed, fsynced temporary file."""
        atomic_write_bytes(self.local_path, data)

    def upload(self, tmp: Path) -> None:
        """Move the finished local file `tmp` here, durably."""
        publish(tmp, self.local_path)

    def unlink(self) -> None:
        self.local_path.unlink(missing_ok=True)

    def check_writable(self) -> set[str]:
        """`names()`: a local folder that cannot be written fails at its first write, with the OS's message."""
        return self.names()


class FsspecLoc(Loc):
    """A file or folder at an fsspec URL (s3://, gs://, memory://): reads are ranged GETs or read-ahead
    streams, writes whole-object PUTs or uploads, retried when the failure is transient (`retry`)."""

    __slots__ = ("url", "_fs", "_pid", "path")
    local_path = None

    @classmethod
    def at(cls, url: str, options: dict[str, Any]) -> FsspecLoc:
        try:
            fs = _filesystem(url.split("://", 1)[0], json.dumps(options, sort_keys=True), os.getpid())
            return cls._on(fs, fs._strip_protocol(url.rstrip("/")))
        except ImportError as exc:
            raise UsageError(f"{url}: {one_line(exc)} (pip install 'vistok[s3]' or 'vistok[gcs]')") from None
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{url}: {one_line(exc)}") from None

    @classmethod
    def _on(cls, fs: Any, path: str) -> FsspecLoc:
        loc = object.__new__(cls)
        loc._fs, loc._pid, loc.path, loc.url = fs, os.getpid(), path, fs.unstrip_protocol(path)
        return loc

    @property
    def fs(self) -> Any:
        """The fsspec filesystem; a new one in a forked child (a DataLoader worker), since async filesystems
        such as s3fs cannot be used across a fork."""
        if self._pid != os.getpid():
            self._fs, self._pid = type(self._fs)(**self._fs.storage_options), os.getpid()
        return self._fs

    @property
    def options(self) -> dict[str, Any]:
        """The filesystem's options (for a worker to open this location again; never printed or written)."""
        return dict(self._fs.storage_options)

    def __truediv__(self, name: str) -> FsspecLoc:
        return FsspecLoc._on(self.fs, f"{self.path}/{name}")

    def __fspath__(self) -> str:
        raise TypeError(f"{self.url} is not a local path")

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> FsspecLoc:
        return FsspecLoc._on(self.fs, self.path.rstrip("/").rsplit("/", 1)[0])

    def _fresh(self) -> None:
        """Forget cached listings of this path: other processes (Ray workers) write to the same bucket."""
        self.fs.invalidate_cache(self.path)

    def _ask(self, question: str) -> bool:
        """The filesystem's answer to `question` (exists, isfile, isdir) for this path, listings fresh."""
        self._fresh()
        try:
            return bool(getattr(self.fs, question)(self.path))
        except Exception as exc:
            raise _translate(exc, f"cannot reach {self.url}") from None

    def exists(self) -> bool:
        return self._ask("exists")

    def is_file(self) -> bool:
        return self._ask("isfile")

    def is_dir(self) -> bool:
        """A prefix with at least one object below it."""
        return self._ask("isdir")

    def size(self) -> int:
        return int(self.fs.size(self.path))

    def stamp(self) -> tuple[int, str]:
        """(size, a change marker): the object's ETag or modification time."""
        return _info_stamp(self.fs.info(self.path))

    def read_bytes(self, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes, or bytes [start, end) of it: a ranged GET even for the whole object (one
        request, no HEAD for its size first)."""
        try:
            return self.fs.cat_file(self.path, start=start or 0, end=end)
        except FileNotFoundError:
            raise  # as a local read would: callers say what is missing
        except OSError as exc:
            if start is None and end is None and exc.errno == errno.EINVAL:  # an empty object has no byte 0
                return self.fs.cat_file(self.path)
            raise _translate(exc, f"cannot read {self.url}") from None
        except Exception as exc:
            raise _translate(exc, f"cannot read {self.url}") from None

    def read_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Bytes [start, end) for each range: concurrent ranged GETs."""
        try:
            return self.fs.cat_ranges([self.path] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges])
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise _translate(exc, f"cannot read {self.url}") from None

    def _stream(self) -> IO[bytes]:
        return self.fs.open(self.path, "rb", block_size=READ_BLOCK, cache_type="readahead")

    def open(self, cache: Cache | None = None) -> IO[bytes]:
        """A stream of the object's bytes, read ahead in large blocks, never downloaded first; with a `cache`,
        a copy kept there once read to its end (and read from there next time)."""
        if cache is not None and cache.folder:
            return _cached_open(self, Path(cache.folder), cache.max_bytes)
        try:
            return self._stream()
        except Exception as exc:
            raise _translate(exc, f"cannot open {self.url}") from None

    def names(self) -> set[str]:
        """Names of the objects and prefixes directly below this prefix; empty when there are none."""
        try:
            return {p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path, detail=False, refresh=True)}
        except FileNotFoundError:
            return set()
        except Exception as exc:
            raise _translate(exc, f"cannot list {self.url}") from None

    def glob(self, pattern: str) -> list[FsspecLoc]:
        """Objects matching `pattern` below this prefix, sorted."""
        self._fresh()
        try:
            return [FsspecLoc._on(self.fs, p) for p in sorted(self.fs.glob(f"{self.path}/{pattern}"))]
        except FileNotFoundError:
            return []

    def url_of(self, path: str) -> str:
        """The URL of a path on this location's filesystem (a path `walk` gave)."""
        return self.fs.unstrip_protocol(path)

    def _root(self) -> str:
        return self.path

    def _scan(self, path: str) -> list[tuple[str, bool, str, tuple[int, str]]]:
        """One folder level (one listing request per page), dropped from the listings cache again."""
        fs = self.fs
        fs.invalidate_cache(path)
        try:
            infos = retry(lambda: fs.ls(path, detail=True), f"cannot list {fs.unstrip_protocol(path)}")
        finally:
            fs.invalidate_cache(path)
        out = []
        for info in infos:
            found = info["name"].rstrip("/")
            if found == path.rstrip("/"):
                continue  # a folder's placeholder object
            out.append((found.rsplit("/", 1)[-1], info.get("type") == "directory", found, _info_stamp(info)))
        return out

    def mkdir(self) -> None:
        """Nothing: prefixes need no creating."""

    def write_bytes(self, data: bytes) -> None:
        """All of `data` or nothing: one PUT (retried)."""
        retry(lambda: self.fs.pipe_file(self.path, data), f"cannot write {self.url}")

    def upload(self, tmp: Path) -> None:
        """The finished local file `tmp`, uploaded here (retried): the object appears whole."""
        retry(lambda: self.fs.put_file(str(tmp), self.path), f"cannot upload {self.url}")

    def unlink(self) -> None:
        """Remove the object if it is there."""

        def rm() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path)

        retry(rm, f"cannot delete {self.url}")

    def check_writable(self) -> set[str]:
        """Fail now, with one line, when this prefix cannot be written: a missing bucket, refused credentials,
        an endpoint that does not answer. Writes one small probe object, lists the prefix (the probe keeps
        the listing to one request even for a new prefix) and deletes the probe. Returns `names()`."""
        probe = self / f".vistok-probe-{os.getpid()}"
        try:
            self.fs.pipe_file(probe.path, b"")
        except Exception as exc:
            raise _translate(exc, f"cannot write to {self.url}") from None
        try:
            return self.names() - {probe.name}
        finally:
            retry(lambda: self.fs.rm_file(probe.path), f"cannot delete {probe.url}")


def _fetch_all(fs: Any, paths: list[str], end: int | None = None) -> list[bytes]:
    """Whole small objects (or their first `end` bytes), requested all at once (one ranged GET each) on an async
    filesystem such as s3fs."""
    if not getattr(fs, "async_impl", False):
        return [fs.cat_file(p, start=0, end=end) for p in paths]
    from fsspec.asyn import sync

    async def fetch() -> list[bytes]:
        return await asyncio.gather(*(fs._cat_file(p, start=0, end=end) for p in paths))

    return sync(fs.loop, fetch)


def read_each(locs: list[Loc], batch: int = 256, end: int | None = None) -> Iterator[bytes]:
    """The bytes of each file (or its first `end` bytes), in order; remote ones fetched `batch` at a time with
    concurrent requests (finalizing a job reads thousands of small stats objects, a reader thousands of shard
    headers: one round trip each would take minutes)."""
    for i in range(0, len(locs), batch):
        chunk = locs[i : i + batch]
        remote = [loc for loc in chunk if loc.local_path is None]
        fetched: dict[str, bytes] = {}
        if remote:
            paths = [loc.path for loc in remote]
            try:
                fetched = dict(zip(paths, _fetch_all(remote[0].fs, paths, end)))
            except FileNotFoundError:
                raise
            except Exception as exc:
                raise _translate(exc, f"cannot read {remote[0].parent}") from None
        for loc in chunk:
            if loc.local_path is not None:
                yield loc.read_bytes(0, end) if end is not None else loc.read_bytes()
            else:
                yield fetched[loc.path]


def read_heads(locs: list[Loc], nbytes: int) -> list[bytes]:
    """The first `nbytes` of each file (fewer for a shorter one), in order, remote ones concurrently."""
    return list(read_each(locs, end=nbytes))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with AtomicPath(path) as tmp:
        tmp.write_bytes(data)


# --- an optional bounded cache of remote files ---------------------------------------------------------
def _cache_name(loc: Loc) -> str:
    import hashlib

    return hashlib.sha256(loc.url.encode()).hexdigest()[:24] + "-" + loc.name


def _cached_open(loc: Loc, folder: Path, limit: int) -> IO[bytes]:
    """A cached copy when there is one; otherwise the remote stream, copied into the cache as it is read
    (kept only when read to its end, then the oldest files go until the cache fits in `limit` bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _cache_name(loc)
    if path.is_file():
        os.utime(path)  # most recently used
        return open(path, "rb")
    return _Tee(loc._stream(), path, folder, limit)


def cached_copy(loc: Loc, cache: Cache | None) -> Loc:
    """A remote file's copy in `cache` (the one there, or the file downloaded whole now), or the file itself
    when it is local, no cache is given or the cache cannot keep it."""
    if loc.local_path is not None or cache is None or not cache.folder:
        return loc
    with _cached_open(loc, Path(cache.folder), cache.max_bytes) as f:
        while isinstance(f, _Tee) and f.read(READ_BLOCK):
            pass
    path = Path(cache.folder) / _cache_name(loc)
    return LocalLoc.at(path) if path.is_file() else loc


class _Tee:
    """Reads from `stream`, writing what it reads to a temporary file renamed to `path` at the end."""

    def __init__(self, stream: IO[bytes], path: Path, folder: Path, limit: int):
        self.stream, self.path, self.folder, self.limit = stream, path, folder, limit
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-")
        self.tmp, self.copy, self.done = Path(tmp), os.fdopen(fd, "wb"), False

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.copy.write(data)
        if not data or n < 0:
            self.done = True
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self.copy.closed:
            return
        tail = 0
        while not self.done and tail < DRAIN_BYTES:  # a tar reader stops at its end marker, before the padding
            tail += len(self.read(1 << 16))
        self.stream.close()
        self.copy.close()
        if self.done:
            os.replace(self.tmp, self.path)
            _evict(self.folder, self.limit)
        else:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> _Tee:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _evict(folder: Path, limit: int) -> None:
    """Remove the least recently used cached files until the rest fit in `limit` bytes."""
    files = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime_ns)
    total = sum(p.stat().st_size for p in files)
    for p in files:
        if total <= limit:
            break
        total -= p.stat().st_size
        p.unlink(missing_ok=True)

