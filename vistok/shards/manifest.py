"""A dataset folder and its `manifest.json`.

    DATASET/
      manifest.json          what the folder holds (written last, atomically, when the job finishes)
      shard-000000.tar[.gz]  WebDataset shards
      stats/shard-000000.json  per-shard stats; its presence marks the shard done
      errors.jsonl           one line per input that could not be tokenized

The manifest stores the codec's `get_config()` verbatim, so `get_codec(manifest.codec)` rebuilds
the codec that wrote the data; `config_hash` covers everything that determines the shards' bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from vistok.errors import DatasetError
from vistok.record import FORMAT_VERSION
from vistok.storage import Loc, read_each
from vistok.tokenize.base import SIDE_INFO, Codec, get_codec

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
STATS_DIR = "stats"
ERRORS_DIR = "errors"  # per-shard error rows, merged into errors.jsonl when the job finishes


def shard_name(index: int, compress: bool, part: int = 0) -> str:
    """Shard `index`'s file; a task that expands a large input tar writes further parts -0001, -0002..."""
    return f"shard-{index:06d}" + (f"-{part:04d}" if part else "") + ".tar" + (".gz" if compress else "")


def stats_path(folder: str | Path | Loc, index: int) -> Loc:
    return Loc(folder) / STATS_DIR / f"shard-{index:06d}.json"


def shard_errors_path(folder: str | Path | Loc, index: int) -> Loc:
    return Loc(folder) / ERRORS_DIR / f"shard-{index:06d}.jsonl"


@dataclass
class ShardStats:
    """`stats/shard-N.json`, written last by the shard's task: its presence marks the shard done.

    The sharding job writes it; `finalize`, `pack` and `inspect` read it (lengths and token counts let
    them plan and summarize without opening a shard)."""

    index: int
    name: str | None  # None: the shard holds no sample (every input failed)
    inputs: int
    errors: int
    samples: int
    bytes: int
    lengths: list[int] = field(default_factory=list)  # tokens of each sample, in shard order
    token_counts: dict[str, list[int]] = field(default_factory=lambda: {"ids": [], "counts": []})
    side_info: dict[str, Any] = field(default_factory=dict)  # gathered while encoding (H.264 headers)
    labels: list[str] = field(default_factory=list)  # the distinct class names of its samples, sorted
    parts: list[dict[str, Any]] = field(default_factory=list)  # name, samples, bytes of each file, when several
    geometries: list[dict[str, Any]] = field(default_factory=list)  # its samples' distinct geometries, two at most
    sha256: str = ""  # of its one file, hashed as it was written (several files: each part's own, in `parts`)
    stamps: dict[str, str] = field(default_factory=dict)  # input name -> "SIZE:MARKER" when the shard was made

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("side_info", "labels", "parts", "geometries", "sha256", "stamps"):
            if not out[k]:
                del out[k]
        return out

    @classmethod
    def read_if_done(cls, folder: str | Path | Loc, index: int) -> ShardStats | None:
        """The stats of shard `index`, or None when it is not done."""
        try:
            raw = stats_path(folder, index).read_bytes()
        except FileNotFoundError:
            return None
        return cls(**json.loads(raw))

    def write(self, folder: str | Path | Loc) -> None:
        write_json(stats_path(folder, self.index), self.to_json())

    def files(self) -> list[dict[str, Any]]:
        """The manifest entries (name, samples, bytes) of the shard files this task wrote, in order."""
        if self.parts:
            return [dict(p) for p in self.parts]
        if not self.name:
            return []
        entry = {"name": self.name, "samples": self.samples, "bytes": self.bytes}
        return [{**entry, "sha256": self.sha256} if self.sha256 else entry]

    def counts_array(self, vocab_size: int) -> np.ndarray:
        counts = np.zeros(vocab_size, dtype=np.int64)
        np.add.at(counts, np.asarray(self.token_counts["ids"], dtype=np.int64),
                  np.asarray(self.token_counts["counts"], dtype=np.int64))
        return counts


def done_shards(folder: str | Path | Loc) -> list[ShardStats]:
    """Stats of every finished shard of a folder, by index."""
    paths = (Loc(folder) / STATS_DIR).glob("shard-*.json")
    return [ShardStats(**json.loads(raw)) for raw in read_each(paths)]


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def config_hash(config: dict[str, Any]) -> str:
    """12 hex digits over the canonical JSON of everything that determines the shards' bytes."""
    return hashlib.sha256(canonical_json({"format": FORMAT_VERSION, **config})).hexdigest()[:12]


def write_json(path: str | Path | Loc, obj: Any) -> None:
    Loc(path).write_bytes(json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n")


def read_json(path: str | Path | Loc) -> Any:
    try:
        return json.loads(Loc(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc})") from None


DATASET_KIND = "vistok-dataset"


@dataclass
class Manifest:
    """`manifest.json`: what a finished dataset folder holds, written last by the job (sorted keys).

    The sharding job writes it; readers, the store (which keeps it verbatim), `inspect` and the trainer
    read it through this one definition."""

    config_hash: str  # over everything that determines the shards' bytes (`config_hash`)
    codec: dict[str, Any]  # the codec's get_config(), verbatim: `get_codec(codec)` rebuilds it
    vocabulary: dict[str, Any]  # Vocabulary.to_json()
    axes: list[str]  # the codec's coordinate axes
    preprocess: dict[str, Any]  # Preprocess.to_json()
    sources: dict[str, Any]  # inputs, fingerprint
    shard_size: int
    counts: dict[str, int]  # inputs, samples, errors, shards
    shards: list[dict[str, Any]]  # name, samples, bytes, sha256 (datasets written before: none), in order
    tokens: dict[str, Any]  # total, and mean, p50, p95, max, min of the samples' lengths
    vistok_version: str
    side_info: dict[str, Any] = field(default_factory=dict)  # constant and collected (e.g. H.264 headers)
    stored_orders: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # class names in the records' `label`, sorted (--label-from)
    skipped: dict[str, int] = field(default_factory=dict)  # files folder walks did not take, by extension
    geometry: dict[str, Any] | None = None  # the geometry every record shares (`geometry_of`), if they share one
    shard_header: str = ""  # the first member of every shard naming its dataset (`integrity.HEADER`); "": none (older)
    format: int = FORMAT_VERSION
    kind: str = DATASET_KIND

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("labels", "skipped", "geometry", "shard_header"):  # absent when empty: such datasets keep the manifest they always had
            if not out[k]:
                del out[k]
        return out

    @classmethod
    def from_json(cls, m: Any, where: str | Path = "manifest") -> Manifest:
        if not isinstance(m, dict) or m.get("kind") != DATASET_KIND:
            raise DatasetError(f"{where} is not a vistok dataset manifest")
        if int(m.get("format", 0)) > FORMAT_VERSION:
            raise DatasetError(f"{where} was written by a newer vistok (format {m['format']}); upgrade vistok to read it")
        try:
            out = cls(**{f.name: m[f.name] for f in fields(cls) if f.name in m})
        except TypeError as exc:
            raise DatasetError(f"{where} is an incomplete manifest ({exc})") from None
        out._check(where)
        return out

    def _check(self, where: str | Path) -> None:
        """The fields readers index into have the types they expect: a damaged manifest is one clear line."""
        entries_ok = isinstance(self.shards, list) and all(
            isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("samples", 0), int)
            and isinstance(s.get("bytes", 0), int) and isinstance(s.get("sha256", ""), str) for s in self.shards)
        vocab_ok = isinstance(self.vocabulary, dict) and isinstance(self.vocabulary.get("size"), int)
        if not (entries_ok and vocab_ok and isinstance(self.codec, dict) and isinstance(self.counts, dict)
                and isinstance(self.config_hash, str)):
            raise DatasetError(f"{where} is a damaged manifest (its shards, vocabulary, codec or counts are not "
                               "what vistok writes)")

    def write(self, folder: str | Path | Loc) -> None:
        write_json(Loc(folder) / MANIFEST, self.to_json())


def load_manifest(folder: str | Path | Loc) -> Manifest:
    folder = Loc(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a dataset folder (no such directory)")
    path = folder / MANIFEST
    if not path.exists():
        hint = " (a job is unfinished here: rerun the same `vistok shard` command to complete it)" if (
            folder / STATS_DIR).is_dir() else ""
        raise DatasetError(f"{folder} has no {MANIFEST}{hint}")
    return Manifest.from_json(read_json(path), path)


def dataset_codec(manifest: Manifest) -> Codec:
    """The one codec of a dataset, ready to decode its records: built from the manifest's config, with the
    side information the job collected (e.g. H.264 stream headers) loaded. Every reader gets it here."""
    codec = get_codec(manifest.codec)
    if SIDE_INFO in codec.capabilities:
        codec.load_side_info(manifest.side_info)
    return codec
