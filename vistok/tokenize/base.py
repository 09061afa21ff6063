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
class Cells:
    """The cells of one geometry: the pieces every accepted order moves around whole.

    A cell is what a decoder places without looking at other cells: its tokens delimit themselves (a JPEG
    rle block ends with EOB; a dense coefficient is one value, or ESC and two raw bytes; an H.264 frame
    ends where FRAME or EOS comes), and where it goes (`positions.coords`, on the codec's known axes) is
    fixed by the geometry alone. An order is a permutation of cells computed without the tokens, so the
    place of every next token is a function of the stream's prefix, and the stream always decodes.
    """

    positions: Positions  # one entry per cell: its unit (-1: spans every unit) and coordinates on known axes
    frame: np.ndarray  # (n,) frame of each cell
    local: np.ndarray  # (n,) index within its frame's cells; -1 for a FRAME separator
    per_frame: int  # cells per frame (FRAME separators excluded)

    def __len__(self) -> int:
        return int(self.frame.size)


class CellGrammar:
    """Which tokens may come next inside one cell of one frame, and where each token sits.

    `begin(cell)` starts a cell (its index within the frame); `allowed()` is a boolean mask over the
    vocabulary; `step(tok)` consumes an allowed token and returns its (len(axes),) coordinates (frame 0);
    `open` stays true until the cell is complete. A cell that only a following FRAME or EOS can end (H.264
    bytes) sets `open_ended` and `can_end`. `escape` marks the tokens that open an escape (a cell of more
    than one token): group-parallel prediction, one token per cell, leaves them out.
    """

    open: bool = False
    open_ended: bool = False
    can_end: bool = False
    escape: np.ndarray | None = None

    def begin(self, cell: int) -> None:
        raise NotImplementedError

    def allowed(self) -> np.ndarray:
        raise NotImplementedError

    def step(self, tok: int) -> np.ndarray:
        raise NotImplementedError


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

    `axes` names the columns of `positions(record).coords`: one integer coordinate per token per axis,
    enough for a trainer to embed positions without decoding pixels; `positions(record).units` gives each
    token's unit (a cell of the unit grid that spatial orders move). `cells(meta)` lists the pieces any
    order moves whole and `cell_grammar(meta)` the grammar inside one: with them a stream in any accepted
    order can be followed token by token (`vistok.tokenize.stream`). Codec authors implement the hooks.
    """

    codec_id: ClassVar[str] = ""
    axes: ClassVar[tuple[str, ...]] = ()
    # Axes whose value for a token is fixed before the token is read: the coordinates of its cell (see
    # `Cells`), which a trainer shows the model as "where the next token goes" without leaking the token.
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

    def first_frames(self, record: TokenRecord, k: int) -> TokenRecord:
        """The record of a clip's first k frames (a prompt): its tokens up to the k-th FRAME separator."""
        n = int(record.meta.get("frames", 1))
        if not 1 <= k <= n:
            raise CodecError(f"record {record.key} has {n} frames, not {k}")
        if k == n:
            return record
        meta = {key: v for key, v in record.meta.items() if key != "frames"}
        if k > 1:
            meta["frames"] = k
        cut = int(np.flatnonzero(record.tokens == FRAME)[k - 1])
        return TokenRecord(record.key, record.tokens[:cut].copy(), meta)

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

    # --- cells: the self-delimiting pieces any order moves around (three hooks below) ----------------
    # Every cell is exactly one token unless an escape is used (dense layouts, learned codes): the
    # condition for group-parallel prediction.
    single_token_cells: bool = False
    # Meta keys that fix a frame's geometry (and so its cells); every other key may differ between records.
    geometry_keys: ClassVar[tuple[str, ...]] = ("height", "width", "components", "subsampling")
    # Hint for an order this layout cannot decode (appended to the refusal).
    layout_hint: ClassVar[str] = ""

    def cells(self, meta: dict) -> Cells:
        """The cells of a stream with this geometry, in canonical order, across frames (cached per geometry).

        A FRAME separator is a cell of its own, at the start of its frame, placed on the frame's first unit.
        """
        key = (int(meta.get("frames", 1)),) + tuple((k, meta.get(k)) for k in self.geometry_keys)
        cache = self.__dict__.setdefault("_cells_cache", {})
        if key not in cache:
            if len(cache) > 64:
                cache.clear()
            cache[key] = self._build_cells(meta)
        return cache[key]

    def _build_cells(self, meta: dict) -> Cells:
        frames = int(meta.get("frames", 1))
        inner = {k: v for k, v in meta.items() if k != "frames"}
        units, coords = self.frame_cells(inner)
        rec = TokenRecord("cells", np.zeros(0, dtype=np.uint8), inner)
        grid = self.unit_grid(rec)
        per = grid[0] * grid[1]
        n = units.size
        frame_col = self.known_axes.index("frame") if "frame" in self.known_axes else None
        us, cs, fs, ls = [], [], [], []
        for f in range(frames):
            if f:  # the FRAME separator opening frame f
                sep = np.zeros((1, coords.shape[1]), dtype=np.int64)
                if frame_col is not None:
                    sep[0, frame_col] = f
                us.append(np.array([f * per]))
                cs.append(sep)
                fs.append(np.array([f]))
                ls.append(np.array([-1]))
            c = coords.astype(np.int64)
            if frame_col is not None and f:
                c = c.copy()
                c[:, frame_col] = f
            us.append(np.where(units >= 0, units + f * per, -1))
            cs.append(c)
            fs.append(np.full(n, f))
            ls.append(np.arange(n))
        pos = Positions(np.concatenate(us).astype(np.int64), grid, np.concatenate(cs).astype(np.int64),
                        tuple(self.known_axes), {}, self.unit_pixels(rec))
        out = Cells(pos, np.concatenate(fs).astype(np.int64), np.concatenate(ls).astype(np.int64), n)
        for a in (out.frame, out.local):
            a.setflags(write=False)
        return out

    def token_cells(self, record: TokenRecord) -> np.ndarray:
        """(T,) the cell of every token of a record (numbered as in `cells(record.meta)`)."""
        frames = self.frames_of(record)
        if len(frames) == 1:
            return self.frame_token_cells(record).astype(np.int64)
        per = self.cells({k: v for k, v in record.meta.items() if k != "frames"}).per_frame
        out = []
        for f, fr in enumerate(frames):
            if f:
                out.append(np.array([f * (per + 1) - 1]))  # the FRAME cell just before frame f's cells
            out.append(self.frame_token_cells(fr).astype(np.int64) + f * (per + 1))
        return np.concatenate(out)

    def frame_cells(self, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        """Hook: ((n,) unit of each cell of one frame, -1 for a cell spanning every unit; (n, len(known_axes))
        its coordinates on the known axes), cells in canonical order. Both depend on the geometry only."""
        raise NotImplementedError

    def frame_token_cells(self, record: TokenRecord) -> np.ndarray:
        """Hook: (T,) the cell of every token of a single-frame record, non-decreasing."""
        raise NotImplementedError

    def cell_grammar(self, meta: dict):
        """Hook: a `CellGrammar` for one frame with this metadata."""
        raise NotImplementedError(f"codec {self.codec_id} exposes no token grammar")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


def geometry_of(codec: Codec, meta: dict) -> dict[str, Any]:
    """The part of a record's metadata that fixes its cells: the codec's geometry keys, and frames for clips."""
    return {k: meta[k] for k in (*codec.geometry_keys, "frames") if k in meta}


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
