"""The codec contract: a small base class, the layout of a geometry, a vocabulary description, and a registry.

A codec turns media (an ``(H, W, 3)`` or ``(H, W)`` uint8 array, or a list of frames) into a `TokenRecord`
and back. Its configuration is plain JSON (`get_config`), stored verbatim in a dataset's manifest, so that
`get_codec(manifest.codec)` rebuilds the exact codec that wrote the dataset (a dataset hands out its
codec ready to decode, side information loaded: `vistok.shards.manifest.dataset_codec`). Everything that
depends on a record's geometry alone (cells, grammar, unit grid, bounds) is its `layout(meta)`.

Optional capabilities are declared in `capabilities`, never discovered with `hasattr`:
  FILE_BYTES   `encode_bytes(data, key, meta)` tokenizes an encoded file without decoding its pixels
  VIDEO_BYTES  `encode_video_bytes(data, key, meta, clip_len, max_clips)` keeps a video file's own bitstream
  JPEG_FILE    `to_jpeg(record)` writes the record's coefficients as a JPEG file, exactly
  H264_FILE    `to_h264(record)` writes the record as an H.264 stream (Annex B), exactly, and
               `decoded_planes(record)` gives each frame's decoded Y, Cb, Cr planes (4:2:0)
  BATCH        `encode_many(images, keys, metas)` encodes several images at once (a model's batch)
  SIDE_INFO    `side_info()` (constant, e.g. JPEG tables), `collected_side_info()` (gathered while encoding,
               e.g. H.264 stream headers) and `load_side_info(side)` (from a manifest) carry information every
               record shares
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
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

FILE_BYTES, VIDEO_BYTES, JPEG_FILE, BATCH, SIDE_INFO = "file_bytes", "video_bytes", "jpeg_file", "batch", "side_info"
H264_FILE = "h264_file"


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
    in_frame: np.ndarray  # (n,) index within its frame's cells; -1 for a FRAME separator
    per_frame: int  # cells per frame (FRAME separators excluded)

    def __len__(self) -> int:
        return int(self.frame.size)


class CellGrammar:
    """Which tokens may come next inside one cell of one frame, and where each token sits.

    `begin(cell)` starts a cell (its index within the frame); `allowed()` is a boolean mask over the
    vocabulary; `step(tok)` consumes an allowed token and returns its (len(axes),) coordinates (frame 0);
    `open` stays true until the cell is complete; `frame` is the frame of the cell about to begin (set by the
    stream before `begin`: a codec whose frames differ, like AVC's I and P pictures, reads it). A cell that only a following FRAME or EOS can end (H.264
    bytes) sets `open_ended` and `can_end`. `escape` marks the tokens that open an escape (a cell of more
    than one token): group-parallel prediction, one token per cell, leaves them out.
    """

    open: bool = False
    open_ended: bool = False
    can_end: bool = False
    escape: np.ndarray | None = None
    frame: int | None = None

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


@dataclass(frozen=True)
class CliOption:
    """One `vistok shard` option of a codec: `--NAME` (dashes for underscores) sets `config[name]`, left out
    when not given so the codec's own default applies. `choices` are checked by the command line; `parse`
    turns the typed value into the config's (a comma list into numbers, a path made absolute). A number's
    `bounds` (min, max; None: open) are checked by the command line too, naming the option."""

    name: str
    type: type
    help: str
    choices: tuple[str, ...] = ()
    flag: bool = False  # a --name switch (bool)
    parse: Callable[[Any], Any] | None = None
    bounds: tuple[float | None, float | None] = (0, None)  # of an int or float option


@dataclass(frozen=True, eq=False)
class FrameLayout:
    """What a codec says about one frame of one geometry (its `frame_layout` hook); metadata alone fixes it."""

    grid: tuple[int, int]  # (rows, cols) of the unit grid; units are numbered raster order
    unit_pixels: tuple[int, int]  # (height, width) in pixels one unit covers (content-aware orders, drawings)
    cell_units: np.ndarray  # (n,) each cell's unit, -1 for a cell spanning every unit; cells in canonical order
    cell_coords: np.ndarray  # (n, len(known_axes)) each cell's coordinates on the known axes
    max_tokens: int  # an upper bound on one frame's stream length
    grammar: Callable[[], CellGrammar]  # a fresh grammar for the cells of one frame
    # a codec whose frames have a DC image (a value per block, a thumbnail): which cells hold it, and the
    # thumbnail from their tokens (in canonical cell order) as (rows, cols, components) per unit (`dc-first`)
    dc_cells: np.ndarray | None = None  # (n,) bool
    thumbnail: Callable[[np.ndarray], np.ndarray] | None = None


class Layout:
    """One geometry of one codec, as `codec.layout(meta)` gives it (cached; equal and hashable by codec and
    geometry): the unit grid and unit pixels, the cells across frames (`Cells`), the cell grammar, the bound
    on a stream's length; and, given a record of this geometry, its `positions` and each token's cell.

    Multi-frame records (video clips) are the frames' streams joined by FRAME tokens, time-major, with
    `meta["frames"]`; the frame axis numbers frames and units continue frame after frame. A FRAME separator is
    a cell of its own at the start of its frame, placed on the frame's first unit.
    """

    def __init__(self, codec: Codec, key: tuple):
        self.codec, self.key = codec, key
        self.frames = int(key[0])
        self.meta = {k: v for k, v in key[1:] if v is not None}  # the geometry of one frame
        fl = codec.frame_layout(self.meta)
        self.grid, self.unit_pixels, self._grammar = fl.grid, fl.unit_pixels, fl.grammar
        self.frame_max_tokens = fl.max_tokens
        self.dc_cells, self.thumbnail = fl.dc_cells, fl.thumbnail
        self.max_tokens = self.frames * fl.max_tokens + self.frames  # FRAME separators and the end included
        self.cells = self._cells(fl)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and (self.codec, self.key) == (other.codec, other.key)

    def __hash__(self) -> int:
        return hash((self.codec, self.key))

    def grammar(self) -> CellGrammar:
        """A fresh grammar for the cells of one frame (a stream's grammar keeps its state in it)."""
        return self._grammar()

    def _cells(self, fl: FrameLayout) -> Cells:
        units, coords, known = fl.cell_units, fl.cell_coords.astype(np.int64), self.codec.known_axes
        per, n = self.grid[0] * self.grid[1], units.size
        frame_col = known.index("frame") if "frame" in known else None
        us, cs, fs, ls = [], [], [], []
        for f in range(self.frames):
            if f:  # the FRAME separator opening frame f
                sep = np.zeros((1, coords.shape[1]), dtype=np.int64)
                if frame_col is not None:
                    sep[0, frame_col] = f
                us, cs, fs, ls = us + [np.array([f * per])], cs + [sep], fs + [np.array([f])], ls + [np.array([-1])]
            c = coords.copy() if frame_col is not None and f else coords
            if c is not coords:
                c[:, frame_col] = f
            us.append(np.where(units >= 0, units + f * per, -1))
            cs.append(c)
            fs.append(np.full(n, f))
            ls.append(np.arange(n))
        pos = Positions(np.concatenate(us).astype(np.int64), self.grid, np.concatenate(cs).astype(np.int64),
                        tuple(known), {}, self.unit_pixels)
        out = Cells(pos, np.concatenate(fs).astype(np.int64), np.concatenate(ls).astype(np.int64), n)
        for a in (out.frame, out.in_frame):
            a.setflags(write=False)
        return out

    def positions(self, record: TokenRecord) -> Positions:
        """Units, coordinates and unit geometry of a record of this geometry, across frames for clips.

        A FRAME token opens its frame: frame axis = that frame, other axes 0, unit = the frame's first unit."""
        per, us, cs = self.grid[0] * self.grid[1], [], []
        for f, fr in enumerate(frames_of(record)):
            u, c, _ = self.codec.frame_tokens(fr)
            if f:
                c = c.copy()
                c[:, 0] = f
                sep = np.zeros((1, c.shape[1]), dtype=c.dtype)
                sep[0, 0] = f
                us, cs = us + [np.array([f * per], dtype=u.dtype)], cs + [sep]
            us.append(u + f * per)
            cs.append(c)
        units, coords = (us[0], cs[0]) if len(us) == 1 else (np.concatenate(us), np.concatenate(cs))
        return Positions(units.astype(np.int64), self.grid, coords, self.codec.axes, record.orders, self.unit_pixels)

    def token_cells(self, record: TokenRecord) -> np.ndarray:
        """(T,) the cell of every token of a record (numbered as in `cells`)."""
        per, out = self.cells.per_frame, []
        for f, fr in enumerate(frames_of(record)):
            if f:
                out.append(np.array([f * (per + 1) - 1]))  # the FRAME cell just before frame f's cells
            out.append(self.codec.frame_tokens(fr)[2].astype(np.int64) + f * (per + 1))
        return out[0] if len(out) == 1 else np.concatenate(out)


@lru_cache(maxsize=256)
def _layout(codec: Codec, key: tuple) -> Layout:
    return Layout(codec, key)


PER_FRAME_META = ("frame_info", "frame_types")  # metadata lists with one entry per frame (cut with the frames)


def frames_of(record: TokenRecord) -> list[TokenRecord]:
    """A record -> its single-frame records (a clip's streams split at its FRAME tokens)."""
    n = int(record.meta.get("frames", 1))
    if n == 1:
        return [record]
    cuts = np.flatnonzero(record.tokens == FRAME)
    if cuts.size != n - 1:
        raise CodecError(f"record {record.key}: {cuts.size + 1} frames in the tokens, {n} in the metadata")
    meta = {k: v for k, v in record.meta.items() if k != "frames"}
    parts = np.split(record.tokens, cuts)
    # a later frame says which it was (`frame_index`): a codec whose frames differ by place in the clip reads it
    return [TokenRecord(record.key, p[1:] if i else p, {**meta, "frame_index": i} if i else meta)
            for i, p in enumerate(parts)]


def first_frames(record: TokenRecord, k: int) -> TokenRecord:
    """The record of a clip's first k frames (a prompt): its tokens up to the k-th FRAME separator."""
    n = int(record.meta.get("frames", 1))
    if not 1 <= k <= n:
        raise CodecError(f"record {record.key} has {n} frames, not {k}")
    if k == n:
        return record
    meta = {key: v for key, v in record.meta.items() if key != "frames"}
    for key in PER_FRAME_META:
        if isinstance(meta.get(key), list):
            meta[key] = meta[key][:k]
    if k > 1:
        meta["frames"] = k
    cut = int(np.flatnonzero(record.tokens == FRAME)[k - 1])
    return TokenRecord(record.key, record.tokens[:cut].copy(), meta)


class Codec:
    """Base class: media <-> records, a configuration, a vocabulary, and the layout of each geometry.

    Subclasses set `codec_id`, `axes` and `known_axes` and implement `get_config`, `vocab`, `encode` and the
    three hooks below. `axes` names the columns of `layout(meta).positions(record).coords` (one integer
    coordinate per token per axis, enough for a trainer to embed positions without decoding pixels);
    `layout(meta).cells` lists the pieces any order moves whole and `layout(meta).grammar()` the grammar
    inside one: with them a stream in any accepted order can be followed token by token
    (`vistok.tokenize.stream`). Codecs are equal (and hash alike) when their configurations are.

    Hooks for codec authors:
      decode_frame(record)  a single-frame record -> its image
      frame_layout(meta)    the `FrameLayout` of one frame of this geometry (metadata only, no tokens)
      frame_tokens(record)  a single-frame record -> ((T,) units, (T, len(axes)) int32 coordinates with frame 0,
                            (T,) the cell of each token, non-decreasing)
    """

    codec_id: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # what its tokens are, for `vistok shard --help`
    axes: ClassVar[tuple[str, ...]] = ()
    # Axes whose value for a token is fixed before the token is read: the coordinates of its cell (see
    # `Cells`), which a trainer shows the model as "where the next token goes" without leaking the token.
    known_axes: ClassVar[tuple[str, ...]] = ()
    # GPUs a shard task of this codec asks Ray for when the cluster has any (learned codecs run their
    # encoder there); 0: CPU only.
    gpus_per_task: ClassVar[float] = 0.0
    # Every cell is exactly one token unless an escape is used (dense layouts, learned codes): the
    # condition for group-parallel prediction.
    single_token_cells: bool = False
    # Meta keys that fix a frame's geometry (and so its layout); every other key may differ between records.
    geometry_keys: ClassVar[tuple[str, ...]] = ("height", "width", "components", "subsampling")
    # Hint for an order this layout cannot decode (appended to the refusal).
    layout_hint: ClassVar[str] = ""
    # The options `vistok shard --codec ID` takes for this codec (the command line is built from them).
    cli_options: ClassVar[tuple[CliOption, ...]] = ()

    @property
    def capabilities(self) -> frozenset[str]:
        """The optional capabilities this codec, as configured, offers (see the module docstring)."""
        return frozenset()

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Codec:
        return cls(**{k: v for k, v in config.items() if k != "id"})

    @property
    def vocab(self) -> Vocabulary:
        raise NotImplementedError

    def encode(self, media: np.ndarray, key: str = "sample", meta: dict | None = None) -> TokenRecord:
        """One image -> a record."""
        raise NotImplementedError

    def encode_clip(self, frames: list[np.ndarray], key: str = "sample", meta: dict | None = None) -> TokenRecord:
        """Frames -> one record: the frames' streams joined by FRAME tokens (a codec with its own notion of a
        clip, such as H.264's inter frames, overrides it)."""
        recs = [self.encode(f, key, meta) for f in frames]
        if len(recs) == 1:
            return recs[0]
        sep = np.array([FRAME], dtype=recs[0].tokens.dtype)
        tokens = np.concatenate([t for i, r in enumerate(recs) for t in ((sep, r.tokens) if i else (r.tokens,))])
        return TokenRecord(key, tokens, {**recs[0].meta, "frames": len(recs)})

    def decode(self, record: TokenRecord) -> np.ndarray:
        """A record -> (H, W[, 3]) pixels, or (T, H, W[, 3]) for a multi-frame record."""
        frames = frames_of(record)
        if len(frames) == 1:
            return self.decode_frame(record)
        return np.stack([self.decode_frame(f) for f in frames])

    def layout(self, meta: dict) -> Layout:
        """The layout of records with this metadata's geometry (cached per codec and geometry)."""
        key = (int(meta.get("frames", 1)),) + tuple((k, meta.get(k)) for k in self.geometry_keys)
        return _layout(self, key)

    # --- hooks (see the class docstring) -----------------------------------------------------------------
    def decode_frame(self, record: TokenRecord) -> np.ndarray:
        raise NotImplementedError

    def frame_layout(self, meta: dict) -> FrameLayout:
        raise NotImplementedError

    def frame_tokens(self, record: TokenRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self._config_key == other._config_key

    def __hash__(self) -> int:
        return hash(self._config_key)

    @cached_property
    def _config_key(self) -> str:
        return json.dumps(self.get_config(), sort_keys=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


def as_pixels(media: Any) -> np.ndarray:
    """What a codec's `encode` takes: an (H, W) or (H, W, 3) uint8 array, as given or from a PIL image (gray
    images stay one channel, any other mode becomes RGB); anything else is a clear `CodecError`."""
    if hasattr(media, "convert") and hasattr(media, "mode"):  # a PIL image
        media = np.asarray(media if media.mode in ("L", "RGB") else media.convert("RGB"))
    if not isinstance(media, np.ndarray) or not (media.ndim == 2 or (media.ndim == 3 and media.shape[2] == 3)):
        what = f"{media.dtype} array of shape {media.shape}" if isinstance(media, np.ndarray) else type(media).__name__
        raise CodecError(f"encode takes an (H, W) or (H, W, 3) uint8 array or a PIL image, got a {what}")
    return media


def geometry_of(codec: Codec, meta: dict) -> dict[str, Any]:
    """The part of a record's metadata that fixes its layout: the codec's geometry keys, and frames for clips."""
    return {k: meta[k] for k in (*codec.geometry_keys, "frames") if k in meta}


_REGISTRY: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    if not cls.codec_id:
        raise CodecError(f"{cls.__name__} has no codec_id")
    _REGISTRY[cls.codec_id] = cls
    return cls


def codec_ids() -> list[str]:
    return sorted(_REGISTRY)


def codec_classes() -> list[type[Codec]]:
    """The registered codecs, by id."""
    return [_REGISTRY[k] for k in codec_ids()]


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
