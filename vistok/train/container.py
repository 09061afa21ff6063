"""The `.vtkz` container of `vistok compress`: a few bytes around the range coder's payload.

File format (version 2; integers little-endian, varints LEB128):

    b"VZ"  u8 version  u8 flags  4-byte run checksum  u32 order seed  [parts the flags name]  u32 CRC-32  payload

- run checksum: the first 4 bytes of `run_checksum` (weights, codec config, order, parallel mode, seed,
  context, stride): a file made with another run is refused;
- order seed: the CRC-32 of the record's key, which is all a random order is drawn from
  (`vistok.train.data.order_rng`), so a file codes its record in the order `vistok eval` scored it in;
- CRC-32 of the record's canonical tokens (in the codec's dtype): a decoded stream must match it, so a
  corrupt file, or a machine that computes the model differently, is an error and never a wrong image;
- payload: the range coder's 32-bit words.

Flags, and the parts they add in this order:

    KEEP_META 1  varint n, n bytes of deflated JSON {key, meta, side}: the record exactly (`--keep-meta`)
    SIZE      2  varint height, varint width: the record's size is not the run's (`reference`)
    FRAMES    4  varint frames: a clip
    EXTRA     8  varint n, n bytes of deflated JSON {meta, side}: metadata decoding needs besides the size
                 (an H.264 stream header, a JPEG file's own tables) or side arrays
    STEPS    16  varint steps: the model steps a `--parallel any` run coded the record in (0: one token per
                 step), which decoding must take too

Without KEEP_META a record loses its key (it decodes as `k` + the order seed in hex) and its descriptive
metadata (source path, label); its geometry comes from
the run when it is the run's, so a 64x64 record of a 64x64 run costs 16 bytes of container.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vistok.errors import CodecError
from vistok.record import npy_bytes, npy_load

MAGIC, VERSION = b"VZ", 2
OLD_MAGIC = b"VTKZ"  # format 1: a deflated JSON header with the key and metadata
KEEP_META, SIZE, FRAMES, EXTRA, STEPS = 1, 2, 4, 8, 16
DESCRIPTIVE = ("source", "label", "source_json")  # what a record says about where it came from, not how to decode it
MAX_JSON = 1 << 20  # bytes of an inflated JSON part: more is a corrupt file (or a bomb)


@dataclass
class Header:
    """What a file says besides its payload."""

    order_seed: int
    crc: int
    key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    side: dict[str, np.ndarray] = field(default_factory=dict)
    steps: int | None = None  # `--parallel any` runs: model steps (0 = one token per step)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 127, n >> 7
        out.append(b | (128 if n else 0))
        if not n:
            return bytes(out)


class _Reader:
    def __init__(self, blob: bytes, at: int):
        self.blob, self.at = blob, at

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.blob):
            raise CodecError("the file is truncated")
        out = self.blob[self.at : self.at + n]
        self.at += n
        return out

    def varint(self) -> int:
        n = shift = 0
        while True:
            (b,) = self.take(1)
            n |= (b & 127) << shift
            if b < 128:
                return n
            shift += 7
            if shift > 63:
                raise CodecError("the file's header is corrupt")

    def json(self) -> dict[str, Any]:
        raw = self.take(self.varint())
        try:
            inflate = zlib.decompressobj()
            text = inflate.decompress(raw, MAX_JSON)
            if inflate.unconsumed_tail or not inflate.eof:
                raise ValueError("too large or cut")
            out = json.loads(text)
            if not isinstance(out, dict):
                raise ValueError("not an object")
            return out
        except (ValueError, zlib.error):
            raise CodecError("the file's header is corrupt") from None


def _json(obj: dict[str, Any]) -> bytes:
    raw = zlib.compress(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(), 9)
    return _varint(len(raw)) + raw


def _side_json(side: dict[str, np.ndarray]) -> dict[str, str]:
    return {k: base64.b64encode(npy_bytes(v)).decode() for k, v in sorted(side.items())}


def _side_load(side: Any) -> dict[str, np.ndarray]:
    try:
        return {str(k): npy_load(base64.b64decode(v)) for k, v in dict(side).items()}
    except (ValueError, TypeError):
        raise CodecError("the file's header is corrupt") from None


def _split(meta: dict[str, Any]) -> tuple[tuple[int, int], int, dict[str, Any]]:
    """(size, frames, the rest that decoding needs) of a record's metadata."""
    rest = {k: v for k, v in meta.items() if k not in DESCRIPTIVE and k not in ("height", "width", "frames")}
    return (int(meta["height"]), int(meta["width"])), int(meta.get("frames", 1)), rest


def pack(checksum: bytes, head: Header, reference: dict[str, Any], keep_meta: bool) -> bytes:
    """The bytes before the payload. `reference`: the run's geometry (`Coder.reference`), left out when equal."""
    flags, parts = 0, []
    if keep_meta:
        flags |= KEEP_META
        parts.append(_json({"key": head.key, "meta": head.meta, "side": _side_json(head.side)}))
    else:
        (h, w), frames, rest = _split(head.meta)
        ref_size, _, ref_rest = _split({"height": 0, "width": 0, **reference})
        if (h, w) != ref_size:
            flags |= SIZE
            parts.append(_varint(h) + _varint(w))
        if frames > 1:
            flags |= FRAMES
            parts.append(_varint(frames))
        if rest != ref_rest or head.side:
            flags |= EXTRA
            parts.append(_json({"meta": rest, "side": _side_json(head.side)}))
    if head.steps is not None:
        flags |= STEPS
        parts.append(_varint(head.steps))
    return (MAGIC + bytes([VERSION, flags]) + checksum[:4] + struct.pack("<I", head.order_seed) + b"".join(parts)
            + struct.pack("<I", head.crc))


def unpack(blob: bytes, checksum: bytes, reference: dict[str, Any]) -> tuple[Header, bytes]:
    """(header, payload) of a file, checked: magic, version, the run's checksum, a readable header."""
    if blob[:4] == OLD_MAGIC:
        raise CodecError("the file is in format 1, written by an older vistok; this vistok reads format 2: compress "
                         "the record again with `vistok compress`")
    if len(blob) < 12 or blob[:2] != MAGIC:
        raise CodecError("not a vistok compressed file (bad magic)")
    if blob[2] != VERSION:
        raise CodecError(f"file format version {blob[2]}, this vistok reads version {VERSION}")
    flags = blob[3]
    if flags & ~(KEEP_META | SIZE | FRAMES | EXTRA | STEPS):
        raise CodecError("the file's header is corrupt (unknown flags)")
    if blob[4:8] != checksum[:4]:
        raise CodecError("the file was made with another run (weights, codec or order differ): decompress it "
                         "with the run that compressed it, and the --order it was compressed in")
    r = _Reader(blob, 8)
    (seed,) = struct.unpack("<I", r.take(4))
    head = Header(seed, 0, f"k{seed:08x}")  # a file without its key: a stand-in made of the key's CRC
    if flags & KEEP_META:
        j = r.json()
        if not isinstance(j.get("meta"), dict):
            raise CodecError("the file's header is corrupt")
        head.key, head.meta, head.side = str(j.get("key", head.key)), j["meta"], _side_load(j.get("side", {}))
    else:
        ref_size, _, ref_rest = _split({"height": 0, "width": 0, **reference})
        size = (r.varint(), r.varint()) if flags & SIZE else ref_size
        frames = r.varint() if flags & FRAMES else 1
        rest = ref_rest
        if flags & EXTRA:
            j = r.json()
            rest, head.side = j.get("meta"), _side_load(j.get("side", {}))
            if not isinstance(rest, dict):
                raise CodecError("the file's header is corrupt")
        head.meta = {**rest, "height": size[0], "width": size[1], **({"frames": frames} if frames > 1 else {})}
    if flags & STEPS:
        head.steps = r.varint()
    (head.crc,) = struct.unpack("<I", r.take(4))
    payload = blob[r.at :]
    if len(payload) % 4:
        raise CodecError("the file is truncated")
    return head, payload


def payload_bits(blob: bytes) -> int:
    """Bits of a file's coded payload (the container excluded)."""
    return 8 * (len(blob) - container_bytes(blob))


def container_bytes(blob: bytes) -> int:
    """Bytes of a file's container: everything before the payload."""
    flags, r = blob[3], _Reader(blob, 12)
    if flags & KEEP_META:
        r.take(r.varint())
    if flags & SIZE:
        r.varint(), r.varint()
    if flags & FRAMES:
        r.varint()
    if flags & EXTRA:
        r.take(r.varint())
    if flags & STEPS:
        r.varint()
    return r.at + 4
