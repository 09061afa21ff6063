"""`TokenRecord`: one sample's tokens plus what is needed to decode and reorder them.

On disk a record is a handful of WebDataset members sharing one key, always in this order:

    KEY.tokens.npy        1-D token array, the vocabulary's smallest unsigned dtype
    KEY.json              metadata: source, size, codec side information (UTF-8 JSON, sorted keys)
    KEY.order.NAME.npy    optional stored permutations (e.g. a content-aware order computed at shard time)
    KEY.side.NAME.npy     optional side arrays (e.g. H.264 motion vectors)

Coordinates and units are *derived* from the tokens and the manifest by the codec (`codec.coords`,
`codec.units`) instead of stored: a stored (T, 5) int16 coordinate array would cost 10 bytes per token
against 2 for the tokens themselves, while deriving them is a few vectorized numpy passes
(see `benchmarks/bench_codec.py`, which measures both).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vistok.errors import DatasetError

KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def npy_load(data: bytes | np.ndarray) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data
    return np.load(io.BytesIO(data), allow_pickle=False)


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
        """Accepts raw bytes (plain webdataset) or already-decoded values."""
        try:
            tokens = npy_load(sample["tokens.npy"])
            meta = sample.get("json", b"{}")
            if isinstance(meta, (bytes, bytearray)):
                meta = json.loads(meta)
        except KeyError as exc:
            raise DatasetError(f"sample {sample.get('__key__')!r} has no {exc} member") from None
        except ValueError as exc:
            raise DatasetError(f"sample {sample.get('__key__')!r} is corrupt: {exc}") from None
        orders = {k[len("order.") : -len(".npy")]: npy_load(v) for k, v in sample.items() if k.startswith("order.")}
        side = {k[len("side.") : -len(".npy")]: npy_load(v) for k, v in sample.items() if k.startswith("side.")}
        return cls(str(sample["__key__"]), tokens, meta, orders, side)

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
