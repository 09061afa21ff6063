"""The record contract: `TokenRecord`, the format version, and the rules for keys and input ids.

A `TokenRecord` is one sample's tokens plus what is needed to decode and reorder them.

On disk a record is a handful of WebDataset members sharing one key, always in this order:

    KEY.tokens.npy        1-D token array, the vocabulary's smallest unsigned dtype
    KEY.json              metadata: source, size, codec side information (UTF-8 JSON, sorted keys)
    KEY.order.NAME.npy    optional stored permutations (e.g. a content-aware order computed at shard time)
    KEY.side.NAME.npy     optional side arrays (e.g. H.264 motion vectors)

Coordinates and units are *derived* from the tokens and the manifest by the codec (`codec.positions`)
instead of stored: a stored (T, 5) int16 coordinate array would cost 10 bytes per token
against 2 for the tokens themselves, while deriving them is a few vectorized numpy passes
(see `benchmarks/bench_codec.py`, which measures both).

Keys. An input has a *name* that does not depend on where the files live (`vistok.media.sources` gives
it: e.g. ``photos/cat.jpg`` for ``cat.jpg`` inside the source folder ``photos/``). Its key is
``<slug of the file stem>-<10 hex digits of blake2b(name)>``; a record made from it adds ``_cNNN`` (crop
N of an image) or ``_vNNNN`` (clip N of a video). Keys hold only letters, digits, ``_`` and ``-``.

Input ids. The planner hands workers one string per input: ``NAME\0PATH`` for a file, or
``NAME\0PATH\0OFFSET:SIZE:JSON_OFFSET:JSON_SIZE`` for a tar member (its data and sibling ``.json``,
JSON_OFFSET -1 when there is none), so a worker reads it with a seek. Ids sort by name, so the order of a
dataset is the same wherever its files are.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from vistok.errors import DatasetError, UsageError, one_line

# Bumped whenever the on-disk record or manifest format changes; readers refuse newer formats.
FORMAT_VERSION = 1

KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_SLUG = re.compile(r"[^A-Za-z0-9_\-]+")
_RECORD_KEY = re.compile(r"^(?P<input>.*-[0-9a-f]{10})(?:_c(?P<crop>[0-9]+)|_v(?P<clip>[0-9]+))?$")
KEY_DIGEST_BYTES = 5  # 10 hex digits
MEMBER = re.compile(r"^(tokens\.npy|json|(order|side)\.[A-Za-z0-9_:,\-]+\.npy)$")  # what a record's members are called


# --- keys -------------------------------------------------------------------------------------------------
def input_key(name: str) -> str:
    """An input's key from its stable name: a readable slug of the file stem plus a hash of the whole name."""
    base = name.rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base else base
    slug = _SLUG.sub("_", stem).strip("_")[:40] or "x"
    return f"{slug}-{hashlib.blake2b(name.encode(), digest_size=KEY_DIGEST_BYTES).hexdigest()}"


def crop_key(key: str, i: int) -> str:
    return f"{key}_c{i:03d}"


def clip_key(key: str, i: int) -> str:
    return f"{key}_v{i:04d}"


class RecordKey(NamedTuple):
    input: str  # the input's key: every crop and clip of one input shares it
    crop: int | None
    clip: int | None


def parse_key(record_key: str) -> RecordKey:
    """A record key -> its input key and crop or clip number (keys of other tools: the whole key, no parts)."""
    m = _RECORD_KEY.match(record_key)
    if m is None:
        return RecordKey(record_key, None, None)
    crop, clip = m.group("crop"), m.group("clip")
    return RecordKey(m.group("input"), None if crop is None else int(crop), None if clip is None else int(clip))


# --- input ids --------------------------------------------------------------------------------------------
def heldout_hash(record_key: str) -> float:
    """A record's input key hashed to [0, 1): crops and clips of one input fall on the same side of a split.
    Keys do not depend on where the files live, so neither does the split."""
    h = hashlib.blake2b(parse_key(record_key).input.encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


class Member(NamedTuple):
    """Where a tar member's bytes and its sibling .json and .cls lie in the tar (offset -1: none)."""

    offset: int
    size: int
    json_offset: int
    json_size: int
    cls_offset: int = -1
    cls_size: int = 0

    def fields(self) -> tuple[int, ...]:
        """What an input id stores: the .cls place only when there is one (ids of earlier datasets stay the same)."""
        return tuple(self) if self.cls_offset >= 0 else tuple(self)[:4]

    def __repr__(self) -> str:  # input fingerprints hash it: unchanged for members without a .cls
        return "Member(" + ", ".join(f"{k}={v}" for k, v in zip(self._fields, self.fields())) + ")"


class InputId(NamedTuple):
    name: str  # stable: does not depend on where the files live (a tar member's: TAR_NAME/MEMBER)
    path: str  # where to read the bytes here
    member: Member | None = None

    def __str__(self) -> str:
        return "\0".join([self.name, self.path] + ([":".join(map(str, self.member.fields()))] if self.member else []))

    @property
    def key(self) -> str:
        return input_key(self.name)

    @property
    def source(self) -> str:
        """Where the input was read from, for error rows and record metadata (``TAR:MEMBER`` for members)."""
        return f"{self.path}:{self.name.split('/', 1)[1]}" if self.member else self.path


def parse_input_id(input_id: str) -> InputId:
    parts = input_id.split("\0")
    if len(parts) == 2:
        return InputId(parts[0], parts[1])
    if len(parts) == 3:
        try:
            return InputId(parts[0], parts[1], Member(*(int(x) for x in parts[2].split(":"))))
        except (TypeError, ValueError):
            pass
    raise UsageError(f"malformed input id {input_id!r}")


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


NPY_MAGIC = b"\x93NUMPY"


def npy_load(data: bytes | np.ndarray) -> np.ndarray:
    """An .npy member's array. Never unpickles; checks the header against the bytes before allocating, so a
    header declaring billions of elements costs nothing. Raises ValueError saying what is wrong."""
    if isinstance(data, np.ndarray):
        return data
    from numpy.lib import format as npy

    if not isinstance(data, bytes | bytearray | memoryview) or not bytes(data[:6]) == NPY_MAGIC:
        raise ValueError("is not an .npy array (no NUMPY magic)")
    f = io.BytesIO(data)
    try:
        version = npy.read_magic(f)
        shape, fortran, dtype = (npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0)(f)
    except Exception as exc:  # numpy raises ValueError, SyntaxError or TypeError for a broken header
        raise ValueError(f"has a broken .npy header ({one_line(exc)})") from None
    if dtype.hasobject:
        raise ValueError("holds Python objects (pickled data), which vistok never loads")
    count = int(np.prod(shape, dtype=np.float64))
    if count * dtype.itemsize != len(data) - f.tell():
        raise ValueError(f"declares shape {tuple(shape)} of {dtype} ({count * dtype.itemsize:,} bytes) but holds "
                         f"{len(data) - f.tell():,} bytes")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=f.tell())  # the header parsed once, one copy below
    return (arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)).copy()


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class TokenRecord:
    key: str
    tokens: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    orders: dict[str, np.ndarray] = field(default_factory=dict)
    side: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not KEY_RE.match(self.key):
            raise DatasetError(f"record key {self.key!r} must be letters, digits, '_' or '-' (no dots)")
        if self.tokens.ndim != 1:
            raise DatasetError(f"record {self.key}: tokens must be 1-D, got shape {self.tokens.shape}")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def to_sample(self) -> dict[str, Any]:
        """WebDataset sample dict: `__key__` plus member suffix -> bytes, in the fixed member order."""
        sample: dict[str, Any] = {"__key__": self.key, "tokens.npy": npy_bytes(self.tokens), "json": json_bytes(self.meta)}
        for name in sorted(self.orders):
            sample[f"order.{name}.npy"] = npy_bytes(self.orders[name].astype(np.int32))
        for name in sorted(self.side):
            sample[f"side.{name}.npy"] = npy_bytes(self.side[name])
        return sample

    @classmethod
    def from_sample(cls, sample: dict[str, Any]) -> TokenRecord:
        """Accepts raw bytes (plain webdataset) or already-decoded values. A malformed sample raises
        `DatasetError` naming the member and what is wrong with it."""
        key = str(sample.get("__key__"))
        foreign = [k for k in sample if not k.startswith("__") and not MEMBER.match(k)]
        if foreign:
            raise DatasetError(f"member {key}.{foreign[0]} is not a vistok record member (a record has tokens.npy, "
                               "json, order.NAME.npy, side.NAME.npy)")
        if "tokens.npy" not in sample:
            raise DatasetError(f"sample {key!r} has no tokens.npy member")
        arrays = {}
        for k, v in sample.items():
            if k.endswith(".npy"):
                try:
                    arrays[k] = npy_load(v)
                except ValueError as exc:
                    raise DatasetError(f"member {key}.{k} {exc}") from None
        tokens = arrays["tokens.npy"]
        if tokens.dtype.kind not in "ui":
            raise DatasetError(f"member {key}.tokens.npy holds {tokens.dtype} values, not integer tokens")
        if tokens.dtype.kind == "i" and tokens.size and int(tokens.min()) < 0:
            raise DatasetError(f"member {key}.tokens.npy holds negative tokens ({int(tokens.min())})")
        meta = sample.get("json", b"{}")
        if isinstance(meta, bytes | bytearray):
            try:
                meta = json.loads(meta)
            except ValueError as exc:
                raise DatasetError(f"member {key}.json is not valid JSON ({one_line(exc)})") from None
        if not isinstance(meta, dict):
            raise DatasetError(f"member {key}.json is not a JSON object")
        orders = {k[len("order.") : -len(".npy")]: v for k, v in arrays.items() if k.startswith("order.")}
        side = {k[len("side.") : -len(".npy")]: v for k, v in arrays.items() if k.startswith("side.")}
        return cls(key, tokens, meta, orders, side)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TokenRecord)
            and self.key == other.key
            and self.tokens.dtype == other.tokens.dtype
            and np.array_equal(self.tokens, other.tokens)
            and self.meta == other.meta
            and self.orders.keys() == other.orders.keys()
            and all(np.array_equal(self.orders[k], other.orders[k]) for k in self.orders)
            and self.side.keys() == other.side.keys()
            and all(np.array_equal(self.side[k], other.side[k]) for k in self.side)
        )
