"""Where each record sits in its shard: a per-shard index, so a loader can read records in any order.

The trainer's sample order (`vistok.train.sampling`) is a function of the datasets and the seed alone, so it
reads records by position instead of streaming each shard front to back. A shard's index has a row per record,
in shard order, of four unsigned 64-bit columns:

    start, end   the record's members in the (uncompressed) tar stream: bytes [start, end)
    crc          CRC-32 of the members' names and bytes, checked whenever the record is read through the index
    split        the record's held-out hash (`vistok.record.heldout_hash`) times 2**64: a loader knows which
                 records it trains on before it reads one

An index is built once per shard by one sequential read of it (its sha256 is checked against the manifest on the
way, so an index is never built from a changed shard) and cached on local disk (`index_folder`), named by the
dataset's config hash, the shard's name and its sha256 (datasets older than sha256s: its size and change
marker). Every dataset is indexed this way, older ones included: `vistok shard` writes no index of its own. A
cached index that does not parse, or does not fit its shard's record count, is rebuilt, saying so in one line;
a record whose bytes do not match its index row is damage (`DamagedShard`), never a record read from the wrong
place.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tarfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from vistok.atomic import AtomicPath
from vistok.errors import DamagedShard, DatasetError, one_line
from vistok.record import MEMBER, TokenRecord, heldout_hash, npy_bytes, npy_load
from vistok.shards.integrity import HEADER, MEMBER_DAMAGE, Expect, HashingStream, check_tokens
from vistok.storage import Cache, Loc, cached_copy

START, END, CRC, SPLIT = range(4)
BLOCK = 512  # tar's block: members start on multiples of it


def index_folder() -> Path:
    """Where indexes are kept: $VISTOK_INDEX_DIR, else ~/.cache/vistok/index (XDG_CACHE_HOME respected)."""
    if os.environ.get("VISTOK_INDEX_DIR"):
        return Path(os.environ["VISTOK_INDEX_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vistok" / "index"


def _index_name(expect: Expect, loc: Loc) -> str:
    entry = expect.entries.get(loc.name, {})
    ident = entry.get("sha256") or hashlib.sha256(repr(loc.stamp()).encode()).hexdigest()
    return f"{expect.config_hash[:16]}-{loc.name}-{ident[:16]}.npy"


def build_index(loc: Loc, expect: Expect, cache: Cache | None = None) -> np.ndarray:
    """One sequential read of the shard -> its index (see the module docstring). The shard's sha256 and record
    count are checked against the manifest; a shard that does not read raises `DamagedShard`. A remote shard read
    with a `cache` is kept there on the way."""
    entry = expect.entries.get(loc.name, {})
    rows: list[list[int]] = []
    key, crc = None, 0
    with loc.open(cache) as raw:
        stream = HashingStream(raw, str(loc))
        try:
            with tarfile.open(fileobj=stream, mode="r|gz" if loc.name.endswith(".gz") else "r|") as tar:
                for ti in tar:
                    if ti.name == HEADER or not ti.isfile():
                        continue
                    k, _, suffix = ti.name.partition(".")
                    if not MEMBER.match(suffix):
                        raise expect.damage(loc.name, f"member {ti.name} is not a vistok record member (a record has "
                                                      "tokens.npy, json, order.NAME.npy, side.NAME.npy)")
                    data = tar.extractfile(ti).read()  # type: ignore[union-attr]
                    if k != key:
                        key, crc = k, 0
                        rows.append([ti.offset, 0, 0, int(heldout_hash(k) * 2**64) if _plain(k) else 0])
                    crc = zlib.crc32(data, zlib.crc32(ti.name.encode(), crc))
                    rows[-1][END] = ti.offset_data + -(-ti.size // BLOCK) * BLOCK
                    rows[-1][CRC] = crc
            stream.drain()
        except MEMBER_DAMAGE as exc:
            raise expect.damage(loc.name, f"is not a complete tar ({one_line(exc)}): truncated or corrupted") from None
    if entry.get("sha256") and stream.hash.hexdigest() != entry["sha256"]:
        raise expect.damage(loc.name, "does not match its sha256 in the manifest: its bytes changed since it was "
                                      "written")
    if "samples" in entry and len(rows) != int(entry["samples"]):
        raise expect.damage(loc.name, f"holds {len(rows)} samples, the manifest lists {entry['samples']}")
    return np.asarray(rows, dtype=np.uint64).reshape(-1, 4)


def _plain(key: str) -> bool:
    try:
        heldout_hash(key)
    except DatasetError:
        return False
    return True


def check_index(index: np.ndarray, samples: int | None) -> str:
    """What is wrong with an index array, or ''."""
    if index.dtype != np.uint64 or index.ndim != 2 or index.shape[1] != 4:
        return f"has shape {index.shape} of {index.dtype}, not (records, 4) of uint64"
    if samples is not None and index.shape[0] != samples:
        return f"has {index.shape[0]} rows for a shard of {samples} records"
    s, e = index[:, START], index[:, END]
    if (e <= s).any() or (s[1:] < e[:-1]).any() or ((s % BLOCK) != 0).any():
        return "has record ranges that overlap, run backwards or are not on tar blocks"
    return ""


def shard_index(loc: Loc, expect: Expect, cache: Cache | None = None) -> np.ndarray:
    """The shard's index: the cached one, or built and cached (a damaged cache file is rebuilt, saying so)."""
    path = index_folder() / _index_name(expect, loc)
    entry = expect.entries.get(loc.name, {})
    samples = int(entry["samples"]) if "samples" in entry else None
    if path.exists():
        try:
            index = npy_load(path.read_bytes())
            wrong = check_index(index, samples)
        except (ValueError, OSError) as exc:
            wrong = f"does not read ({one_line(exc)})"
        if not wrong:
            return index
        print(f"warning: the cached index {path} {wrong}: rebuilt from {loc}", file=sys.stderr)
    index = build_index(loc, expect, cache)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = AtomicPath(path)
        out.tmp.write_bytes(npy_bytes(index))
        out.commit()
    except OSError as exc:  # a read-only home: the index lives in memory for this run
        print(f"note: cannot cache the index of {loc} in {path.parent} ({one_line(exc)})", file=sys.stderr)
    return index


def parse_record(data: bytes, expect: Expect, shard: str, row: int, crc: int) -> TokenRecord:
    """A record from its members' bytes (as an index row locates them), checked against the row's CRC-32."""
    sample: dict[str, bytes | str] = {}
    at, c = 0, 0
    try:
        while at + BLOCK <= len(data):
            ti = tarfile.TarInfo.frombuf(data[at : at + BLOCK], "utf-8", "surrogateescape")
            body = data[at + BLOCK : at + BLOCK + ti.size]
            key, _, suffix = ti.name.partition(".")
            if sample.setdefault("__key__", key) != key or len(body) != ti.size:
                raise ValueError(f"member {ti.name} is not part of record {sample['__key__']}")
            c = zlib.crc32(body, zlib.crc32(ti.name.encode(), c))
            sample[suffix] = body
            at += BLOCK + -(-ti.size // BLOCK) * BLOCK
    except (tarfile.TarError, ValueError) as exc:
        raise expect.damage(shard, f"record {row} does not parse where the index puts it ({one_line(exc)})") from None
    if c != crc or at != len(data):
        raise expect.damage(shard, f"record {row}'s bytes do not match the shard's index: the shard changed since "
                                   f"it was indexed, or its cached index in {index_folder()} is damaged (deleting "
                                   "that rebuilds it)")
    try:
        rec = TokenRecord.from_sample(sample)
        check_tokens(rec, expect.vocab_size)
    except DatasetError as exc:
        raise expect.damage(shard, one_line(exc), str(sample.get("__key__", ""))) from None
    return rec


class IndexedShards:
    """Reads records of one dataset's shards by (shard, row): ranged reads of a local plain tar (one open file), or
    of a remote one's copy in a `cache` (downloaded whole once). A gzipped shard, and a remote shard read with no
    cache, is read whole into memory; those are kept up to `INFLATED_BYTES` per reader (a loader worker), so a
    block's shards are read about once per pass over the block."""

    INFLATED_BYTES = 256 << 20

    def __init__(self, shards: list[Loc], indexes: list[np.ndarray], expect: Expect, cache: Cache | None = None):
        self.shards, self.indexes, self.expect = shards, indexes, expect
        self.cache = cache if cache is not None and cache.folder else None
        self._inflated: OrderedDict[int, bytes] = OrderedDict()

    def read(self, shard: int, rows: list[int]) -> list[TokenRecord | None]:
        """The records at `rows` of shard `shard`, in the order asked; a damaged record raises `DamagedShard`, or
        (when the dataset skips damage) is None, said and logged."""
        loc, ix = self.shards[shard], self.indexes[shard]
        ranges = [(int(ix[r, START]), int(ix[r, END])) for r in rows]
        try:
            if loc.name.endswith(".gz") or (loc.local_path is None and self.cache is None):
                whole = self._whole(shard, int(ix[:, END].max()))
                blobs = [whole[a:b] for a, b in ranges]
            else:
                blobs = self._read_ranges(loc, ranges)
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            return self._damaged(self.expect.damage(loc.name, f"cannot be read where its index says ({one_line(exc)})"),
                                 len(rows))
        out: list[TokenRecord | None] = []
        for r, blob in zip(rows, blobs):
            try:
                out.append(parse_record(blob, self.expect, loc.name, r, int(ix[r, CRC])))
            except DamagedShard as damage:
                out.extend(self._damaged(damage, 1))
        return out

    def _read_ranges(self, loc: Loc, ranges: list[tuple[int, int]]) -> list[bytes]:
        try:
            return cached_copy(loc, self.cache).read_ranges(ranges)
        except FileNotFoundError:  # evicted from the cache just now
            return loc.read_ranges(ranges)

    def _damaged(self, damage: DamagedShard, n: int) -> list[None]:
        self.expect.on_damage.handle(damage)  # raises unless damage is skipped
        return [None] * n

    def _whole(self, shard: int, size: int) -> bytes:
        """A shard's (inflated) tar bytes, kept in memory: a gzipped shard, or a remote one with no cache (one GET
        per shard and pass over its block, rather than one per few records)."""
        if shard not in self._inflated:
            loc = self.shards[shard]
            try:
                raw = cached_copy(loc, self.cache).read_bytes()
            except FileNotFoundError:  # evicted from the cache just now
                raw = loc.read_bytes()
            gz = loc.name.endswith(".gz")
            data = zlib.decompressobj(wbits=31).decompress(raw, size) if gz else raw  # never past the index's extent
            self._inflated[shard] = data
            while len(self._inflated) > 1 and sum(map(len, self._inflated.values())) > self.INFLATED_BYTES:
                self._inflated.popitem(last=False)
        self._inflated.move_to_end(shard)
        return self._inflated[shard]
