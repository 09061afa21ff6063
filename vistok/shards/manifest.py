"""A dataset folder and its `manifest.json`.

    DATASET/
      manifest.json          what the folder holds (written last, atomically, when the job finishes)
      shard-000000.tar[.gz]  WebDataset shards
      stats/shard-000000.json  per-shard stats; its presence marks the shard done
      errors.jsonl           one line per input that could not be tokenized

The manifest stores the codec's `get_config()` verbatim, so `get_codec(manifest["codec"])` rebuilds
the codec that wrote the data; `config_hash` covers everything that determines the shards' bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import vistok
from vistok.errors import DatasetError
from vistok.shards.writer import atomic_write_bytes

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
STATS_DIR = "stats"


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def config_hash(config: dict[str, Any]) -> str:
    """12 hex digits over the canonical JSON of everything that determines the shards' bytes."""
    return hashlib.sha256(canonical_json({"format": vistok.FORMAT_VERSION, **config})).hexdigest()[:12]


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc})") from None


def load_manifest(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a dataset folder (no such directory)")
    path = folder / MANIFEST
    if not path.exists():
        hint = " (a job is unfinished here: rerun the same `vistok shard` command to complete it)" if (
            folder / STATS_DIR).is_dir() else ""
        raise DatasetError(f"{folder} has no {MANIFEST}{hint}")
    m = read_json(path)
    if not isinstance(m, dict) or m.get("kind") != "vistok-dataset":
        raise DatasetError(f"{path} is not a vistok dataset manifest")
    if int(m.get("format", 0)) > vistok.FORMAT_VERSION:
        raise DatasetError(f"{folder} was written by a newer vistok (format {m['format']}); upgrade vistok to read it")
    return m


def shard_paths(folder: str | Path, manifest: dict[str, Any]) -> list[Path]:
    folder = Path(folder)
    out = []
    for s in manifest["shards"]:
        name = s["name"]
        if "/" in name or "\\" in name or name.startswith("."):  # never follow a path out of the folder
            raise DatasetError(f"manifest of {folder} names an unsafe shard path {name!r}")
        p = folder / name
        if not p.exists():
            raise DatasetError(f"{folder} is incomplete: shard {name} listed in the manifest is missing")
        out.append(p)
    return out
