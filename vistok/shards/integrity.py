"""Shards that say what they are, and the checks every reader makes of them.

Each shard `vistok shard` writes starts with a small member named `__vistok__` (webdataset's readers skip
members named ``__...__`` as metadata, so plain `webdataset.WebDataset` sees only the records):

    {"config_hash": "<the dataset's>", "kind": "vistok-shard", "name": "shard-000003.tar.gz"}

and the manifest lists each shard's bytes, samples and sha256 (hashed as the shard was written). Readers use
them in two places:

- before any work (`check_shards`): every listed shard is there with its listed size, and its header names
  this dataset and this shard. One listing and one small read of each shard's first bytes: no hashing.
- while reading (`read_shard`): each member must parse as a vistok record, tokens must be integers inside
  the vocabulary, and at each shard's end its sample count and sha256 (computed on the bytes as they stream
  by: measured at well under 1% of read time, so it is always on) must match the manifest.

Damage ends the read with one `DamagedShard` line naming the dataset, the shard and (inside a shard) the member.
With `OnDamage(skip=True)` a damaged shard is instead left out, said on stderr and logged (one JSON line
each), and the read goes on. Datasets written before shards carried headers and hashes are read as before:
what their manifest does not list is not checked (`vistok verify --write` adds the hashes).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from vistok.errors import DamagedShard, DatasetError, StorageError, one_line
from vistok.record import TokenRecord, json_bytes
from vistok.storage import Cache, Loc, read_heads

HEADER = "__vistok__"  # the first member of a shard: what dataset it belongs to
SHARD_KIND = "vistok-shard"
HEAD_BYTES = 4096  # what `check_shards` reads of each shard: a tar header block, the header member, gzip's slack


def header_bytes(config_hash: str, name: str) -> bytes:
    return json_bytes({"config_hash": config_hash, "kind": SHARD_KIND, "name": name})


@dataclass(frozen=True)
class OnDamage:
    """What a reader does with a damaged shard: stop (the default) naming it, or `skip` it, saying so on stderr
    and appending a JSON line to `log` (a local file, e.g. a run's `damaged.jsonl`) when one is given."""

    skip: bool = False
    log: str = ""
    skipped: list[str] = field(default_factory=list, compare=False)  # "dataset: shard" of each, in this process

    def handle(self, damage: DamagedShard) -> None:
        """Raise `damage`, or record it and return (the caller goes on with the next shard)."""
        if not self.skip:
            raise damage
        self.skipped.append(f"{damage.dataset}: {damage.shard}")
        print(f"warning: skipped {damage}", file=sys.stderr)
        if self.log:
            with open(self.log, "ab") as f:  # one short append per shard: whole lines even from several workers
                f.write(json_bytes({"dataset": damage.dataset, "shard": damage.shard, "damage": damage.detail}) + b"\n")


@dataclass(frozen=True)
class Expect:
    """What a dataset's manifest says of its shards: the config hash their headers carry, the vocabulary their
    tokens live in, and per shard name its manifest entry (bytes, samples and, for newer datasets, sha256)."""

    dataset: str
    config_hash: str
    vocab_size: int
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_damage: OnDamage = OnDamage()
    headers: bool = True  # its shards start with a `__vistok__` header (datasets written before: not)

    def damage(self, shard: str, detail: str, member: str = "") -> DamagedShard:
        return DamagedShard(self.dataset, shard, detail, member)


# --- before any work ---------------------------------------------------------------------------------------
def parse_head(data: bytes, compressed: bool) -> dict[str, Any] | None:
    """The `__vistok__` header at the start of a shard's bytes, or None when its first member is another one.
    Raises ValueError with the reason when the bytes are not the start of a (gzipped) tar."""
    if compressed:
        try:
            data = zlib.decompressobj(wbits=31).decompress(data, 2048)
        except zlib.error as exc:
            raise ValueError(f"not gzip data ({exc})") from None
    if len(data) < 512:
        raise ValueError("shorter than one tar block")
    try:
        info = tarfile.TarInfo.frombuf(data[:512], "utf-8", "surrogateescape")
    except tarfile.TarError as exc:
        raise ValueError(f"not a tar file ({one_line(exc)})") from None
    if info.name != HEADER:
        return None
    try:
        head = json.loads(data[512 : 512 + info.size])
    except ValueError:
        raise ValueError(f"its {HEADER} member is not JSON") from None
    if not isinstance(head, dict) or head.get("kind") != SHARD_KIND:
        raise ValueError(f"its {HEADER} member is not a vistok shard header")
    return head


def _head_damage(expect: Expect, name: str, data: bytes) -> str:
    """What is wrong with a shard's first bytes, or ''."""
    try:
        head = parse_head(data, name.endswith(".gz"))
    except ValueError as exc:
        return f"is not a readable shard: {exc}"
    if head is None:  # shards of datasets written before headers have none
        return "has no vistok header: it was not written for this dataset" if expect.headers else ""
    if head.get("config_hash") != expect.config_hash:
        return (f"belongs to another dataset (config hash {head.get('config_hash')}, this dataset's is "
                f"{expect.config_hash}): a shard copied in from elsewhere")
    if head.get("name") != name:
        return f"holds {head.get('name')}'s records (a renamed or swapped file)"
    return ""


def check_shards(folder: Loc, names: list[str], expect: Expect,
                 sizes: dict[str, int] | None = None) -> tuple[list[Loc], list[DamagedShard]]:
    """The listed shards (`names`, in order) that are present, the size the manifest lists and headed for this
    dataset, and the damage found in the others. One listing of the folder (or the `sizes` given), one small
    read per shard."""
    for name in names:
        if "/" in name or "\\" in name or name.startswith("."):  # never follow a path out of the folder
            raise DatasetError(f"manifest of {folder} names an unsafe shard path {name!r}")
    if sizes is None:
        sizes = {rel: stamp[0] for rel, _, stamp in folder.walk(maxdepth=1) if rel.startswith("shard-")}
    present = [n for n in names if n in sizes]
    heads = dict(zip(present, read_heads([folder / n for n in present], HEAD_BYTES), strict=True))
    damages: list[DamagedShard] = []
    for name in names:
        detail = _shard_damage(expect, name, sizes.get(name), heads.get(name, b""))
        if detail:
            damages.append(expect.damage(name, detail))
    bad = {d.shard for d in damages}
    return [folder / n for n in names if n not in bad], damages


def _shard_damage(expect: Expect, name: str, size: int | None, head: bytes) -> str:
    """What is wrong with a shard from its size and first bytes, or '': what its header says first (another
    dataset's shard, another shard, no header), then a copy cut short, then a size that differs."""
    want = expect.entries.get(name, {}).get("bytes")
    if size is None:
        return "is missing (listed in the manifest, not in the folder)"
    detail = _head_damage(expect, name, head)
    if want is not None and size < int(want) and (not detail or detail.startswith("is not a readable")):
        return f"is truncated: {size:,} of {int(want):,} bytes (an interrupted copy?)"
    if not detail and want is not None and size != int(want):
        detail = f"is {size:,} bytes, the manifest lists {int(want):,}"
    return detail


# --- while reading ------------------------------------------------------------------------------------------
class HashingStream:
    """A shard's byte stream that hashes (sha256) and counts what is read through it."""

    def __init__(self, stream: IO[bytes], url: str):
        self.stream, self.url, self.hash, self.bytes = stream, url, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.hash.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        """Read to the end (a tar reader stops before the archive's zero padding)."""
        while self.read(1 << 20):
            pass

    def __repr__(self) -> str:  # webdataset appends the stream to an error's message
        return self.url


MEMBER_DAMAGE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, KeyError)


def read_shard(loc: Loc, cache: Cache | None = None, expect: Expect | None = None,
               seen: dict[str, Any] | None = None) -> Iterator[TokenRecord]:
    """The records of one shard, in order, through webdataset's tar stages; with `expect`, each checked (see the
    module docstring) and the shard's count and sha256 compared at its end. Damage raises `DamagedShard`.
    `seen`, when given, gets the shard's samples, bytes and sha256 as read, once it has been read whole."""
    from webdataset.tariterators import group_by_keys, tar_file_expander  # pulls in torch: readers only

    where = {"member": ""}

    def members(stream: HashingStream) -> Iterator[dict[str, Any]]:
        for m in tar_file_expander([{"url": str(loc), "stream": stream}]):
            where["member"] = m.get("fname", where["member"])
            yield m

    name = loc.name
    entry = expect.entries.get(name, {}) if expect else {}
    with loc.open(cache) as raw:
        stream = HashingStream(raw, str(loc))
        n = 0
        try:
            for sample in group_by_keys(members(stream)):
                try:
                    rec = TokenRecord.from_sample(sample)
                    if expect is not None:
                        check_tokens(rec, expect.vocab_size)
                except DatasetError as exc:
                    raise _damage(expect, loc, one_line(exc), str(sample.get("__key__", ""))) from None
                n += 1
                yield rec
            stream.drain()
        except (StorageError, DamagedShard):
            raise
        except (DatasetError, *MEMBER_DAMAGE) as exc:
            what = one_line(exc.args[0] if exc.args and isinstance(exc.args[0], str) else exc).split(" @ ")[0]
            after = f" after member {where['member']}" if where["member"] else ""
            if isinstance(exc, tarfile.TarError | EOFError | zlib.error | gzip.BadGzipFile):
                what = f"is not a complete tar{after} ({what}): truncated or corrupted"
            else:
                what = f"is malformed{after}: {what}"
            raise _damage(expect, loc, what, "") from None
    if seen is not None:
        seen.update(samples=n, bytes=stream.bytes, sha256=stream.hash.hexdigest())
    if expect is None:
        return
    short = f"holds {n} samples, the manifest lists {entry['samples']}" if "samples" in entry and n != int(
        entry["samples"]) else ""
    if entry.get("sha256") and stream.hash.hexdigest() != entry["sha256"]:
        raise expect.damage(name, "does not match its sha256 in the manifest: its bytes changed since it was "
                                  "written" + (f" ({short})" if short else ""))
    if short:
        raise expect.damage(name, short)


def _damage(expect: Expect | None, loc: Loc, what: str, member: str) -> DamagedShard:
    if expect is not None:
        return expect.damage(loc.name, what, member)
    return DamagedShard(str(loc.parent), loc.name, what, member)


def check_tokens(rec: TokenRecord, vocab_size: int) -> None:
    t = rec.tokens
    if t.size and int(t.max()) >= vocab_size:
        at = int(t.argmax())
        raise DatasetError(f"token {int(t[at])} at position {at} is outside the vocabulary (size {vocab_size})")
