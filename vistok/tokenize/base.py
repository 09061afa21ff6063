"""The codec contract: a small base class, a vocabulary description, and a registry.

A codec turns media (an ``(H, W, 3)`` or ``(H, W)`` uint8 array) into a `TokenRecord` and back.
Its configuration is plain JSON (`get_config`), stored verbatim in a dataset's manifest, so that
`get_codec(manifest.codec)` rebuilds the exact codec that wrote the dataset (a dataset hands out its
codec ready to decode, side information loaded: `vistok.shards.manifest.dataset_codec`).

Optional capabilities are declared in `capabilities`, never discovered with `hasattr`:
  FILE_BYTES   `encode_bytes(data, key, meta)` tokenizes an encoded file without decoding its pixels
  VIDEO_BYTES  `encode_video_bytes(data, key, meta, clip_len, max_clips)` keeps a video file's own bitstream
  JPEG_FILE    `to_jpeg(record)` writes the record's coefficients as a JPEG file, exactly
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from vistok.errors import CodecError
from vistok.record import TokenRecord

# Special tokens shared by every codec, always at the same ids so that mixed datasets agree.
SPECIALS = ("PAD", "BOS", "EOS", "FRAME")
PAD, BOS, EOS, FRAME = range(len(SPECIALS))
N_SPECIALS = len(SPECIALS)

# Escapes carry an int16 value as two byte tokens of value + ESCAPE_OFFSET (16-bit offset binary).
ESCAPE_OFFSET = 1 << 15

FILE_BYTES, VIDEO_BYTES, JPEG_FILE = "file_bytes", "video_bytes", "jpeg_file"


def split16(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Escape payload: int16 values -> (high byte, low byte) of value + ESCAPE_OFFSET (big-endian)."""
    u = np.asarray(v, dtype=np.int64) + ESCAPE_OFFSET
    if u.size and (u.min() < 0 or u.max() > 65535):
        raise CodecError("a value outside the int16 range cannot be escaped")
    return u >> 8, u & 255


def assemble_events(prim: np.ndarray, esc: np.ndarray, vals: np.ndarray, raw0: int, dtype: np.dtype,
                    zrl: np.ndarray | None = None, zrl_token: int = 0) -> np.ndarray:
    """Token events -> a token stream: each event is `zrl` run tokens (`zrl_token`), its primary token, and,
    when escaped, two raw byte tokens (`raw0` + byte) holding its value (see `split16`)."""
    runs = np.zeros(prim.size, dtype=np.int64) if zrl is None else zrl
    lengths = runs + 1 + 2 * esc.astype(np.int64)
    at = np.cumsum(lengths) - lengths + runs
    out = np.full(int(lengths.sum()), zrl_token, dtype=dtype)
    out[at] = prim
    if esc.any():
        hi, lo = split16(vals[esc])
        out[at[esc] + 1] = raw0 + hi
        out[at[esc] + 2] = raw0 + lo
    return out


def token_mask(size: int, *ranges: tuple[int, int]) -> np.ndarray:
    """A read-only boolean mask over a vocabulary of `size`, true on the [start, stop) ranges (grammars)."""
    m = np.zeros(size, dtype=bool)
    for a, b in ranges:
        m[a:b] = True
    m.setflags(write=False)
    return m


@dataclass(frozen=True)
class Positions:
    """Where the tokens of one record sit: what orders, trainers and drawings need, without its pixels.

    `units[i]` is token i's reordering unit (a unit's tokens stay together under any order), numbered in
    raster order over `grid` (rows, cols) frame after frame; `coords[i]` its integer coordinate on each of
    `axes`; `unit_pixels` the (height, width) one unit covers; `stored` the record's stored unit orders.
    """

    units: np.ndarray  # (T,) int64
    grid: tuple[int, int]
    coords: np.ndarray | None = None  # (T, len(axes))
    axes: tuple[str, ...] = ()
    stored: dict[str, np.ndarray] = field(default_factory=dict)
    unit_pixels: tuple[int, int] = (1, 1)

    @property
    def n_units(self) -> int:
        return int(self.units.max()) + 1 if self.units.size else 0


@dataclass(frozen=True)
class TokenRange:
    name: str
    start: int
    stop: int  # exclusive
    meaning: str

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass
class Vocabulary:
    """Token ids ``0..size-1``: named specials first, then contiguous named ranges."""

    specials: dict[str, int]
    ranges: list[TokenRange] = field(default_factory=list)

    @classmethod
    def build(cls, extra_specials: tuple[str, ...], ranges: list[tuple[str, int, str]]) -> Vocabulary:
        names = SPECIALS + tuple(extra_specials)
        specials = {name: i for i, name in enumerate(names)}
        out, start = [], len(names)
        for name, n, meaning in ranges:
            out.append(TokenRange(name, start, start + n, meaning))
            start += n
        return cls(specials, out)

    @property
    def size(self) -> int:
        return self.ranges[-1].stop if self.ranges else len(self.specials)

    @property
    def dtype(self) -> np.dtype:
        for dt in (np.uint8, np.uint16, np.uint32):
            if self.size - 1 <= np.iinfo(dt).max:
                return np.dtype(dt)
        raise CodecError(f"vocabulary of {self.size} tokens does not fit in uint32")

    def range(self, name: str) -> TokenRange:
        for r in self.ranges:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "dtype": self.dtype.name,
            "specials": dict(self.specials),
            "ranges": [{"name": r.name, "start": r.start, "stop": r.stop, "meaning": r.meaning} for r in self.ranges],
        }


class Codec:
    """Base class. Subclasses set `codec_id` and `axes` and implement the abstract methods.

    `axes` names the columns of `coords(record)`: one integer coordinate per token per axis, enough for a
    trainer to embed positions and to reorder tokens without decoding pixels. `units(record)` gives each
    token's reordering unit (tokens of one unit must stay together under any reordering); `unit_grid`
    gives the units' (frame, y, x) positions.
    """

    codec_id: ClassVar[str] = ""
    axes: ClassVar[tuple[str, ...]] = ()
    # Axes whose value for the next token is fixed before that token is chosen (its unit's position):
    # a trainer may show them to the model as "where the next token goes" without leaking the token.
    known_axes: ClassVar[tuple[str, ...]] = ()
    # GPUs a shard task of this codec asks Ray for when the cluster has any (learned codecs run their
    # encoder there); 0: CPU only.
    gpus_per_task: float = 0.0

    @property
    def capabilities(self) -> frozenset[str]:
        """The optional capabilities this codec, as configured, offers (see the module docstring)."""
        return frozenset()

    # --- configuration -------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Codec:
        config = dict(config)
        config.pop("id", None)
        return cls(**config)

    @property
    def vocab(self) -> Vocabulary:
        raise NotImplementedError

    # --- media <-> tokens ----------------------------------------------------------------------
    def encode(self, media: np.ndarray, key: str = "sample", meta: dict | None = None) -> TokenRecord:
        """One image -> a record."""
        raise NotImplementedError

    def encode_many(self, images: list[np.ndarray], keys: list[str], metas: list[dict | None]) -> list[TokenRecord]:
        """Several images at once (all crops of one input); codecs with a model override it to batch."""
        return [self.encode(im, k, m) for im, k, m in zip(images, keys, metas)]

    def decode_frame(self, record: TokenRecord) -> np.ndarray:
        """A single-frame record -> its image."""
        raise NotImplementedError

    # Multi-frame records (video clips) are the frames' streams joined by FRAME tokens, time-major, with
    # `meta["frames"]`; the frame axis numbers frames and units continue frame after frame.
    def encode_clip(self, frames: list[np.ndarray], key: str = "sample", meta: dict | None = None) -> TokenRecord:
        recs = [self.encode(f, key, meta) for f in frames]
        if len(recs) == 1:
            return recs[0]
        parts = []
        for i, r in enumerate(recs):
            if i:
                parts.append(np.array([FRAME], dtype=r.tokens.dtype))
            parts.append(r.tokens)
        m = dict(recs[0].meta)
        m["frames"] = len(recs)
        return TokenRecord(key, np.concatenate(parts), m)

    def frames_of(self, record: TokenRecord) -> list[TokenRecord]:
        """A record -> its single-frame records."""
        n = int(record.meta.get("frames", 1))
        if n == 1:
            return [record]
        cuts = np.flatnonzero(record.tokens == FRAME)
        if cuts.size != n - 1:
            raise CodecError(f"record {record.key}: {cuts.size + 1} frames in the tokens, {n} in the metadata")
        meta = {k: v for k, v in record.meta.items() if k != "frames"}
        parts = np.split(record.tokens, cuts)
        return [TokenRecord(record.key, p[1:] if i else p, meta) for i, p in enumerate(parts)]

    def decode(self, record: TokenRecord) -> np.ndarray:
        """A record -> (H, W[, 3]) pixels, or (T, H, W[, 3]) for a multi-frame record."""
        frames = self.frames_of(record)
        if len(frames) == 1:
            return self.decode_frame(record)
        return np.stack([self.decode_frame(f) for f in frames])

    def encode_bytes(self, data: bytes, key: str, meta: dict | None = None) -> TokenRecord | None:
        """FILE_BYTES: tokenize an encoded file directly (no pixel decode), or None to use the pixel path."""
        raise CodecError(f"codec {self.codec_id} cannot tokenize encoded files directly")

    def encode_video_bytes(self, data: bytes, key: str, meta: dict, clip_len: int, max_clips: int = 0):
        """VIDEO_BYTES: a video file's own bitstream cut into clip records."""
        raise CodecError(f"codec {self.codec_id} cannot keep a video file's own bitstream")

    def to_jpeg(self, record: TokenRecord, optimize: bool = True) -> bytes:
        """JPEG_FILE: the record's coefficients as a JPEG file."""
        raise CodecError(f"codec {self.codec_id} cannot write JPEG files")

    # --- positions: where each token sits (codec authors implement the three hooks below) --------------
    def positions(self, record: TokenRecord) -> Positions:
        """Units, coordinates and unit geometry of a record, across frames for clips.

        A FRAME token opens its frame: frame axis = that frame, other axes 0, unit = the frame's first unit.
        """
        frames = self.frames_of(record)
        if len(frames) == 1:
            units, coords = self.frame_unit_coords(record)
        else:
            per = int(np.prod(self.unit_grid(frames[0])))
            us, cs = [], []
            for f, fr in enumerate(frames):
                u, c = self.frame_unit_coords(fr)
                c = c.copy()
                c[:, 0] = f
                if f:
                    sep = np.zeros((1, c.shape[1]), dtype=c.dtype)
                    sep[0, 0] = f
                    us.append(np.array([f * per], dtype=u.dtype))
                    cs.append(sep)
                us.append(u + f * per)
                cs.append(c)
            units, coords = np.concatenate(us), np.concatenate(cs)
        return Positions(units.astype(np.int64), self.unit_grid(record), coords, self.axes, record.orders,
                         self.unit_pixels(record))

    def frame_unit_coords(self, record: TokenRecord) -> tuple[np.ndarray, np.ndarray]:
        """Hook: ((T,) units, (T, len(axes)) int32 coordinates) of a single-frame record (frame axis 0)."""
        raise NotImplementedError

    def unit_grid(self, record: TokenRecord) -> tuple[int, int]:
        """Hook: (rows, cols) of the unit grid of one frame; units are numbered raster order, frame after frame."""
        raise NotImplementedError

    def unit_pixels(self, record: TokenRecord) -> tuple[int, int]:
        """Hook: (height, width) in pixels that one unit covers (for content-aware orders and drawings)."""
        raise NotImplementedError

    def side_info(self) -> dict[str, Any]:
        """Constant side information every record shares (e.g. JPEG quantization tables), for the manifest."""
        return {}

    def collected_side_info(self) -> dict[str, Any]:
        """Side information gathered while encoding (e.g. H.264 stream headers), merged into the manifest."""
        return {}

    def load_side_info(self, side: dict[str, Any]) -> None:
        """Take back what `side_info`/`collected_side_info` put in a manifest (called when a dataset opens)."""

    def frame_max_tokens(self, meta: dict) -> int:
        """An upper bound on one frame's stream length for this geometry."""
        raise NotImplementedError

    def max_tokens(self, meta: dict) -> int:
        """An upper bound on a stream's length (for sampling budgets), FRAME separators included."""
        n = int(meta.get("frames", 1))
        return n * self.frame_max_tokens({k: v for k, v in meta.items() if k != "frames"}) + n

    def frame_grammar(self, meta: dict):
        """A fresh grammar for one frame's stream with this metadata: `allowed`, `step`, `next_known`."""
        raise NotImplementedError(f"codec {self.codec_id} exposes no token grammar")

    def grammar(self, meta: dict):
        """A grammar for a whole stream: one frame, or `meta["frames"]` frames joined by FRAME tokens."""
        n = int(meta.get("frames", 1))
        inner = {k: v for k, v in meta.items() if k != "frames"}
        return self.frame_grammar(inner) if n == 1 else ClipGrammar(self, inner, n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


_REGISTRY: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    if not cls.codec_id:
        raise CodecError(f"{cls.__name__} has no codec_id")
    _REGISTRY[cls.codec_id] = cls
    return cls


def codec_ids() -> list[str]:
    return sorted(_REGISTRY)


def get_codec(config: dict[str, Any] | str) -> Codec:
    """Build a codec from a manifest's `codec` entry (or just an id, for the defaults)."""
    if isinstance(config, str):
        config = {"id": config}
    codec_id = config.get("id")
    if codec_id not in _REGISTRY:
        raise CodecError(f"unknown codec {codec_id!r}; known codecs: {', '.join(codec_ids())}")
    try:
        return _REGISTRY[codec_id].from_config(config)
    except TypeError as exc:
        raise CodecError(f"bad configuration for codec {codec_id!r}: {exc}") from None


class ClipGrammar:
    """Frame grammars in sequence: after a frame's last token only FRAME (or EOS after the last frame)."""

    def __init__(self, codec: Codec, meta: dict, frames: int):
        self.codec, self.meta, self.frames = codec, meta, frames
        self.f = 0
        self.g = codec.frame_grammar(meta)
        self.done = False
        self._frame_only = np.zeros(codec.vocab.size, dtype=bool)
        self._frame_only[FRAME] = True

    @property
    def phase(self) -> str:
        return "done" if self.done else ("end" if self.g.phase == "end" and self.f == self.frames - 1 else "frame")

    def allowed(self) -> np.ndarray:
        if self.g.phase == "end" and self.f < self.frames - 1:
            return self._frame_only
        return self.g.allowed()

    def next_known(self) -> np.ndarray | None:
        if self.g.phase == "end" and self.f < self.frames - 1:
            out = np.zeros(len(self.codec.axes), dtype=np.int64)
            out[0] = self.f + 1
            return out
        nk = self.g.next_known()
        if nk is not None:
            nk = nk.copy()
            nk[0] = self.f
        return nk

    def step(self, tok: int) -> np.ndarray | None:
        if self.g.phase == "end" and self.f < self.frames - 1:
            self.f += 1
            self.g = self.codec.frame_grammar(self.meta)
            out = np.zeros(len(self.codec.axes), dtype=np.int64)
            out[0] = self.f
            return out
        c = self.g.step(tok)
        self.done = self.g.done
        if c is not None:
            c = c.copy()
            c[0] = self.f
        return c
