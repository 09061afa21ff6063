"""`--codec avc`: H.264 syntax elements as tokens, from vistok's own encoder, written back as a stream FFmpeg
decodes to exactly vistok's reconstruction.

Where `--codec h264` tokenizes libx264's bytes, this codec's tokens are the choices a decoder reads, each
with its place, in the standard's macroblock order. Per macroblock (a cell, and a unit: any spatial order
moves macroblocks whole, and a decoder collects them and reconstructs in raster order):

  mb_type       I16, I4, P16 (P_L0_16x16) or skip (P_Skip: nothing else follows)
  i16_mode      I16: one of the 4 Intra_16x16 modes
  i4_mode x16   I4: each 4x4 block's *actual* 9-way mode (the writer derives prev_intra4x4_pred_mode_flag
                and rem_intra4x4_pred_mode from it and the neighbours)
  chroma_mode   intra: one of the 4 chroma modes
  mv x2         P16: the motion vector's x then y, in whole samples within +-search (vectors, not
                differences: the median prediction is the bitstream's business, derived when writing)
  cbp           coded_block_pattern (luma 8x8 bits | chroma << 4): which blocks follow
  residual      each coded 4x4 block in the standard's order (Intra_16x16 DC, then luma blocks, chroma DC Cb,
                Cr, chroma AC Cb, Cr), its levels in zigzag order as run (zeros skipped) then level,
                closed by eob, like JPEG's rle layout

No token is spent on mb_qp_delta: the QP is fixed (`--qp`), so it is always 0.

Axes: frame, mb_y, mb_x (known: the cell's), element (which syntax element, `ELEMENTS`), block (the 4x4
block, or the vector component), freq (the zigzag position a level lands on; 16 for eob).

The grammar keeps every sampled stream a conforming one: modes that read a missing neighbour are not
offered at the picture's borders, P types only in P pictures, vectors within the search range, a block's
runs within its coefficients, and levels within what the transforms may hold (`transform.BUDGET`), so
`to_h264` always writes a stream FFmpeg decodes to `decode`'s pixels.

Pictures: with `--gop G` a clip's frames are one stream: an IDR picture every G frames, P pictures predicted
from the previous decoded frame in between; an image is one I picture. Colour is YCbCr 4:2:0 (BT.601 full
range, as JPEG's); a gray image codes flat chroma and decodes gray. Sides are padded to multiples of 16 by
repeating the edge; the stream's cropping and the record's size give the true picture back.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from vistok.errors import CodecError, InputError
from vistok.media.sources import DEFAULT_MAX_PIXELS
from vistok.record import TokenRecord
from vistok.tokenize.avc import predict, syntax, transform
from vistok.tokenize.avc.encoder import NATIVE, Encoder, _native
from vistok.tokenize.avc.syntax import I4, I16, P16, SKIP, Macroblock, Picture
from vistok.tokenize.avc.tables import BLK_X, BLK_Y, CHROMA_QP
from vistok.tokenize.base import (
    FRAME,
    H264_FILE,
    CellGrammar,
    CliOption,
    Codec,
    FrameLayout,
    Vocabulary,
    as_pixels,
    frames_of,
    register_codec,
)

TYPES = (I16, I4, P16, SKIP)
ELEMENTS = ("mb_type", "i16_mode", "i4_mode", "chroma_mode", "mv", "cbp", "luma_dc", "luma", "cb_dc", "cr_dc",
            "cb_ac", "cr_ac")
EL = {name: i for i, name in enumerate(ELEMENTS)}
EOB_FREQ = 16
MAX_LEVEL = transform.MAX_LEVEL


@register_codec
class AvcCodec(Codec):
    codec_id = "avc"
    summary = "H.264 syntax elements from vistok's own encoder"
    axes = ("frame", "mb_y", "mb_x", "element", "block", "freq")
    known_axes = ("frame", "mb_y", "mb_x")
    # frame_index: a clip's later frame as a record of its own (`frames_of`; what `eval --per-frame` scores as
    # a frame alone): a P picture there has no reference, so it is scored, never decoded
    geometry_keys = ("height", "width", "frame_index")
    elements = ELEMENTS  # the values of the element axis (`eval --parts` reports each one's bits)
    cli_options = (
        CliOption("qp", int, "avc: the quantizer, 0..51 (fixed for every macroblock).", bounds=(0, 51)),
        CliOption("gop", int, "avc: an I picture every G frames of a clip, P pictures between (1: intra only).",
                  bounds=(1, None)),
        CliOption("search", int, "avc: motion search range in whole samples, 1..64 (the vector tokens' range).",
                  bounds=(1, 64)),
    )

    def __init__(self, qp: int = 28, gop: int = 1, search: int = 16, max_pixels: int = DEFAULT_MAX_PIXELS):
        if not 0 <= int(qp) <= 51:
            raise CodecError(f"avc: --qp must be 0..51, got {qp}")
        if int(gop) < 1:
            raise CodecError(f"avc: --gop must be 1 or more, got {gop}")
        if not 1 <= int(search) <= 64:
            raise CodecError(f"avc: --search must be 1..64 samples, got {search}")
        self.qp, self.gop, self.search, self.max_pixels = int(qp), int(gop), int(search), int(max_pixels)
        self._vocab = Vocabulary.build((), [
            ("mb_type", 4, "macroblock type: I16, I4, P16, skip"),
            ("i16_mode", 4, "Intra_16x16 mode: vertical, horizontal, DC, plane"),
            ("i4_mode", 9, "Intra_4x4 mode (Table 8-2)"),
            ("chroma_mode", 4, "chroma mode: DC, horizontal, vertical, plane"),
            ("mv", 2 * self.search + 1, "a motion vector component in whole samples, -search..search"),
            ("cbp", 48, "coded_block_pattern: luma 8x8 bits | chroma (0, DC, DC+AC) << 4"),
            ("run", 16, "zeros before the next level of a block"),
            ("level", 2 * MAX_LEVEL, "a nonzero level, -2063..-1, 1..2063"),
            ("eob", 1, "end of a block"),
        ])
        self.tokens = _Tokens(self._vocab)

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({H264_FILE})

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "qp": self.qp, "gop": self.gop, "search": self.search,
                "max_pixels": self.max_pixels}

    @property
    def vocab(self) -> Vocabulary:
        return self._vocab

    # --- media <-> syntax ----------------------------------------------------------------------------------
    def _planes(self, media: np.ndarray) -> tuple[list[np.ndarray], dict]:
        img = as_pixels(media)
        if img.dtype != np.uint8:
            raise InputError(f"avc takes uint8 pixels, got {img.dtype}")
        h, w = img.shape[:2]
        if h * w > self.max_pixels:
            raise InputError(f"image of {w}x{h} pixels exceeds the limit of {self.max_pixels}")
        mb_h, mb_w = -(-h // 16), -(-w // 16)
        img = np.pad(img, ((0, 16 * mb_h - h), (0, 16 * mb_w - w)) + ((0, 0),) * (img.ndim - 2), mode="edge")
        return to_ycbcr(img), {"height": h, "width": w, "components": 3 if img.ndim == 3 else 1}

    def syntax(self, frames: list[np.ndarray]) -> tuple[list[Picture], dict]:
        """Frames -> the encoder's pictures and the record's metadata."""
        planes = [self._planes(f) for f in frames]
        if len({p[0][0].shape for p in planes}) != 1:
            raise InputError("avc: every frame of a clip must have one size")
        pictures, _ = Encoder(self.qp, self.search).encode([p for p, _ in planes], self.gop)
        return pictures, planes[0][1]

    def encode(self, media: np.ndarray, key: str = "sample", meta: dict | None = None) -> TokenRecord:
        return self.encode_clip([media], key, meta)

    def encode_clip(self, frames: list[np.ndarray], key: str = "sample", meta: dict | None = None) -> TokenRecord:
        frames = list(frames)
        if NATIVE:  # decisions and tokens in C (the Python path is the reference, `syntax`)
            return self._encode_native(frames, key, meta)
        pictures, m = self.syntax(frames)
        toks: list[int] = []
        for i, pic in enumerate(pictures):
            if i:
                toks.append(FRAME)
            for mb in pic.mbs:
                toks += self.tokens.of(mb)
        out = {**(meta or {}), **m}
        if len(pictures) > 1:
            out["frames"] = len(pictures)
        return TokenRecord(key, np.array(toks, dtype=self._vocab.dtype), out)

    def _encode_native(self, frames: list[np.ndarray], key: str, meta: dict | None) -> TokenRecord:
        parts, sizes, m, st = [], set(), {}, None
        enc = Encoder(self.qp, self.search)
        for i, f in enumerate(frames):
            planes, m = self._planes(f)
            sizes.add(planes[0].shape)
            if len(sizes) > 1:
                raise InputError("avc: every frame of a clip must have one size")
            a, st = enc.picture_arrays(planes, st if i % self.gop else None)
            out = np.empty(len(a["kinds"]) * MAX_MB_TOKENS, np.int32)
            n = _native.tokens(*a.values(), self.tokens.offsets, out)
            parts += ([np.array([FRAME], np.int32)] if i else []) + [out[:n]]
        out_meta = {**(meta or {}), **m, **({"frames": len(frames)} if len(frames) > 1 else {})}
        return TokenRecord(key, np.concatenate(parts).astype(self._vocab.dtype), out_meta)

    def pictures(self, record: TokenRecord) -> list[Picture]:
        """A record -> its pictures' syntax (what the tokens say, checked by the grammar)."""
        mb_w, mb_h = _mb_grid(record.meta)
        out = []
        for f, fr in enumerate(frames_of(record)):
            g = MacroblockCells(self, mb_w, mb_h, int(record.meta.get("frame_index", 0)))
            g.frame = f
            t, i = np.asarray(fr.tokens).astype(np.int64), 0
            for cell in range(mb_w * mb_h):
                g.begin(cell)
                while g.open:
                    if i >= t.size or not g.allowed()[t[i]]:
                        raise CodecError(f"record {record.key}: frame {f} macroblock {cell}: a token the syntax "
                                         f"does not allow at {i}")
                    g.step(int(t[i]))
                    i += 1
            if i != t.size:
                raise CodecError(f"record {record.key}: frame {f} has {t.size - i} tokens after its last macroblock")
            out.append(Picture(self._kind(f, record.meta), g.mbs))
        if out[0].kind == "P":
            raise CodecError(f"record {record.key} starts with a P picture (a frame scored alone): it has no reference")
        return out

    def _kind(self, frame: int, meta: dict) -> str:
        return "P" if (int(meta.get("frame_index", 0)) + frame) % self.gop else "I"

    def to_h264(self, record: TokenRecord) -> bytes:
        """The record as an Annex-B H.264 stream (baseline, CAVLC): FFmpeg decodes it to `decode`'s pixels."""
        mb_w, mb_h = _mb_grid(record.meta)
        h, w = int(record.meta["height"]), int(record.meta["width"])
        return syntax.stream(self.pictures(record), mb_w, mb_h, w + w % 2, h + h % 2, self.qp)

    def decoded_planes(self, record: TokenRecord) -> list[list[np.ndarray]]:
        """Each frame's decoded Y, Cb, Cr planes (whole macroblocks: the padding included)."""
        mb_w, mb_h = _mb_grid(record.meta)
        return [st.planes for st in syntax.reconstruct(self.pictures(record), mb_w, mb_h, self.qp)]

    def decode(self, record: TokenRecord) -> np.ndarray:
        h, w = int(record.meta["height"]), int(record.meta["width"])
        gray = int(record.meta.get("components", 3)) == 1
        frames = [from_ycbcr(p, gray)[:h, :w] for p in self.decoded_planes(record)]
        return frames[0] if len(frames) == 1 else np.stack(frames)

    def decode_frame(self, record: TokenRecord) -> np.ndarray:
        return self.decode(record)

    # --- layout ----------------------------------------------------------------------------------------------
    def frame_tokens(self, record: TokenRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mb_w, mb_h = _mb_grid(record.meta)
        g = MacroblockCells(self, mb_w, mb_h)
        t = np.asarray(record.tokens).astype(np.int64)
        coords, cells, i = np.zeros((t.size, len(self.axes)), np.int32), np.zeros(t.size, np.int64), 0
        for cell in range(mb_w * mb_h):
            g.begin(cell)
            while g.open:
                if i >= t.size:
                    raise CodecError(f"record {record.key}: the tokens end inside macroblock {cell}")
                coords[i], cells[i] = g.step(int(t[i])), cell
                i += 1
        return cells, coords, cells.copy()

    def frame_layout(self, meta: dict) -> FrameLayout:
        """One cell per macroblock, in raster order: its unit, and its row and column."""
        mb_w, mb_h = _mb_grid(meta)
        n = mb_w * mb_h
        units = np.arange(n, dtype=np.int64)
        coords = np.stack([np.zeros(n, np.int64), units // mb_w, units % mb_w], axis=1)
        first = int(meta.get("frame_index", 0))
        return FrameLayout((mb_h, mb_w), (16, 16), units, coords, n * MAX_MB_TOKENS,
                           lambda: MacroblockCells(self, mb_w, mb_h, first))


# The most tokens one macroblock can take: type, 16 modes, chroma mode, cbp, then every block full (a run
# and a level per coefficient, and eob): the DC and 16 luma blocks, 2 chroma DC and 8 chroma AC blocks.
MAX_MB_TOKENS = 19 + 33 + 16 * 33 + 2 * 9 + 8 * 31


def _mb_grid(meta: dict) -> tuple[int, int]:
    return -(-int(meta["width"]) // 16), -(-int(meta["height"]) // 16)


def to_ycbcr(img: np.ndarray, native: bool = True) -> list[np.ndarray]:
    """(H, W[, 3]) uint8, sides even -> Y (H, W) and 4:2:0 Cb, Cr (H/2, W/2): BT.601 full range in 16-bit fixed
    point (JPEG's constants, exact integers on every machine), chroma the rounded mean of each 2 x 2 (flat 128
    for a gray image)."""
    half = (img.shape[0] // 2, img.shape[1] // 2)
    if img.ndim == 2:
        return [img.copy(), np.full(half, 128, np.uint8), np.full(half, 128, np.uint8)]
    if NATIVE and native:  # the same integers in C
        out = [np.empty(img.shape[:2], np.uint8), np.empty(half, np.uint8), np.empty(half, np.uint8)]
        _native.ycbcr(np.ascontiguousarray(img, dtype=np.uint8), *out, *img.shape[:2])
        return out
    r, g, b = (img[..., i].astype(np.int32) for i in range(3))
    half, offset = 1 << 15, 128 << 16
    y = (19595 * r + 38470 * g + 7471 * b + half) >> 16
    cb = (-11059 * r - 21709 * g + 32768 * b + offset + half - 1) >> 16
    cr = (32768 * r - 27439 * g - 5329 * b + offset + half - 1) >> 16

    def sub(c):
        return (c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).sum(axis=(1, 3)) + 2) >> 2

    return [np.clip(p, 0, 255).astype(np.uint8) for p in (y, sub(cb), sub(cr))]


def from_ycbcr(planes: list[np.ndarray], gray: bool = False) -> np.ndarray:
    """Decoded Y, Cb, Cr (4:2:0) -> (H, W, 3) RGB uint8, or the Y plane itself for a gray image."""
    y = planes[0].astype(np.float64)
    if gray:
        return planes[0].copy()
    cb, cr = (np.repeat(np.repeat(p.astype(np.float64) - 128, 2, 0), 2, 1) for p in planes[1:])
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


class _Tokens:
    """Token ids of the codec's vocabulary, and a macroblock's syntax as tokens."""

    def __init__(self, vocab: Vocabulary):
        for name in ("mb_type", "i16_mode", "i4_mode", "chroma_mode", "mv", "cbp", "run", "level"):
            setattr(self, name, vocab.range(name).start)
        self.eob = vocab.range("eob").start
        self.search = (len(vocab.range("mv")) - 1) // 2
        self.offsets = np.array([vocab.range(r).start for r in ("mb_type", "i16_mode", "i4_mode", "chroma_mode", "mv",
                                                                 "cbp", "run", "level", "eob")] + [self.search], np.int32)

    def level_token(self, v: int) -> int:
        return self.level + (v + MAX_LEVEL if v < 0 else v + MAX_LEVEL - 1)

    def level_value(self, tok: int) -> int:
        i = tok - self.level
        return i - MAX_LEVEL if i < MAX_LEVEL else i - MAX_LEVEL + 1

    def block(self, levels: np.ndarray, start: int) -> list[int]:
        out, last = [], start - 1
        for k in np.flatnonzero(levels[start:]) + start:
            out += [self.run + int(k) - last - 1, self.level_token(int(levels[k]))]
            last = int(k)
        return out + [self.eob]

    def of(self, mb: Macroblock) -> list[int]:
        out = [self.mb_type + TYPES.index(mb.kind)]
        if mb.kind == SKIP:
            return out
        if mb.kind == I16:
            out += [self.i16_mode + mb.mode]
        elif mb.kind == I4:
            out += [self.i4_mode + int(m) for m in mb.i4_modes]
        if mb.intra:
            out.append(self.chroma_mode + mb.chroma_mode)
        else:
            out += [self.mv + mb.mv[0] // 4 + self.search, self.mv + mb.mv[1] // 4 + self.search]
        cbp_l, cbp_c = mb.cbp_luma, mb.cbp_chroma
        out.append(self.cbp + (cbp_l | cbp_c << 4))
        if mb.kind == I16:
            out += self.block(mb.luma_dc, 0)
        for blk in range(16):
            if cbp_l >> (blk // 4) & 1:
                out += self.block(mb.luma[blk], 1 if mb.kind == I16 else 0)
        if cbp_c:
            for c in range(2):
                out += self.block(mb.chroma_dc[c], 0)
        if cbp_c == 2:
            for c in range(2):
                for b in range(4):
                    out += self.block(mb.chroma_ac[c, b], 1)
        return out


@lru_cache(maxsize=16)
def _masks(codec: AvcCodec) -> dict[str, Any]:
    """Allowed-token masks, built once per codec."""
    t, size = codec.tokens, codec.vocab.size

    def mask(ids) -> np.ndarray:
        m = np.zeros(size, bool)
        m[list(ids)] = True
        m.setflags(write=False)
        return m

    have = [(top, left, corner) for top in (False, True) for left in (False, True) for corner in (False, True)]
    needs = lambda table, nb: [m for m, need in table.items() if all(nb["tlc".index(k)] for k in need)]  # noqa: E731
    return {
        "type_i": mask([t.mb_type, t.mb_type + 1]),
        "type_p": mask(range(t.mb_type, t.mb_type + 4)),
        "i16": {nb: mask(t.i16_mode + m for m in needs(predict.I16_NEEDS, nb)) for nb in have},
        "i4": {nb: mask(t.i4_mode + m for m in needs(predict.I4_NEEDS, nb)) for nb in have},
        "chroma": {nb: mask(t.chroma_mode + m for m in needs(predict.CHROMA_NEEDS, nb)) for nb in have},
        "mv": mask(range(t.mv, t.mv + 2 * t.search + 1)),
        "cbp_i16": mask(t.cbp + (lum | c << 4) for lum in (0, 15) for c in range(3)),
        "cbp": mask(range(t.cbp, t.cbp + 48)),
        "eob": mask([t.eob]),
    }


class MacroblockCells(CellGrammar):
    """The grammar inside one macroblock (a cell), building its `Macroblock` as the tokens come.

    A cell's syntax is a queue of elements: the type decides what follows, the cbp which blocks. `frame`
    (the frame of the cell about to begin, set by the stream) decides whether P types may come: frame % gop
    == 0 is an I picture, counted from `first` (a clip's later frame as a record of its own: `frame_index`);
    None (parsing a record) allows both."""

    def __init__(self, codec: AvcCodec, mb_w: int, mb_h: int, first: int = 0):
        self.codec, self.t, self.m, self.first = codec, codec.tokens, _masks(codec), first
        self.mb_w, self.mb_h = mb_w, mb_h
        self.qp, self.qp_c = codec.qp, CHROMA_QP[codec.qp]
        self.scales, self.scales_c = transform.block_scales(self.qp), transform.block_scales(self.qp_c)
        self.mbs: list[Macroblock] = [Macroblock(SKIP) for _ in range(mb_w * mb_h)]
        self.level_masks: dict[int, np.ndarray] = {}

    # --- the queue ---------------------------------------------------------------------------------------------
    def begin(self, cell: int) -> None:
        self.cell, self.open = cell, True
        self.mby, self.mbx = divmod(cell, self.mb_w)
        self.mb = Macroblock(SKIP)
        self.queue: list[tuple] = [("mb_type", 0)]
        self.block_state = None

    def _neighbours(self, blk: int | None = None) -> tuple[bool, bool, bool]:
        if blk is None:
            top, left = self.mby > 0, self.mbx > 0
        else:
            top, left = BLK_Y[blk] > 0 or self.mby > 0, BLK_X[blk] > 0 or self.mbx > 0
        return bool(top), bool(left), bool(top and left)

    def allowed(self) -> np.ndarray:
        kind, arg = self.queue[0][:2]
        if kind == "mb_type":
            p = self.frame is None or (self.first + self.frame) % self.codec.gop != 0
            return self.m["type_p" if p else "type_i"]
        if kind in ("i16_mode", "chroma_mode"):
            return self.m["i16" if kind == "i16_mode" else "chroma"][self._neighbours()]
        if kind == "i4_mode":
            return self.m["i4"][self._neighbours(arg)]
        if kind == "mv":
            return self.m["mv"]
        if kind == "cbp":
            return self.m["cbp_i16" if self.mb.kind == I16 else "cbp"]
        return self._block_allowed()

    def step(self, tok: int) -> np.ndarray:
        kind, arg = self.queue[0][:2]
        coords = np.array([0, self.mby, self.mbx, 0, 0, 0], np.int64)
        if kind not in ("block",):
            self.queue.pop(0)
            coords[3] = EL[kind]
            coords[4] = arg
            self._element(kind, arg, tok)
        else:
            coords[3:] = self._block_step(tok)
        if not self.queue:
            self.open = False
            self.mbs[self.cell] = self.mb
        return coords

    def _element(self, kind: str, arg: int, tok: int) -> None:
        t, mb = self.t, self.mb
        if kind == "mb_type":
            mb.kind = TYPES[tok - t.mb_type]
            if mb.kind == I16:
                self.queue += [("i16_mode", 0), ("chroma_mode", 0), ("cbp", 0)]
            elif mb.kind == I4:
                self.queue += [("i4_mode", b) for b in range(16)] + [("chroma_mode", 0), ("cbp", 0)]
                self.modes = [0] * 16
            elif mb.kind == P16:
                self.queue += [("mv", 0), ("mv", 1), ("cbp", 0)]
                self.mv = [0, 0]
        elif kind == "i16_mode":
            mb.mode = tok - t.i16_mode
        elif kind == "i4_mode":
            self.modes[arg] = tok - t.i4_mode
            mb.i4_modes = tuple(self.modes)
        elif kind == "chroma_mode":
            mb.chroma_mode = tok - t.chroma_mode
        elif kind == "mv":
            self.mv[arg] = 4 * (tok - t.mv - t.search)
            mb.mv = tuple(self.mv)
        elif kind == "cbp":
            mb.cbp = tok - t.cbp
            self._queue_blocks(mb.cbp & 15, mb.cbp >> 4)

    def _queue_blocks(self, cbp_l: int, cbp_c: int) -> None:
        """The residual blocks the cbp says follow: (block, element, index, first position, scales)."""
        i16 = self.mb.kind == I16
        if i16:
            self.queue.append(("block", EL["luma_dc"], 0, 0, None))
        for blk in range(16):
            if cbp_l >> (blk // 4) & 1:
                self.queue.append(("block", EL["luma"], blk, 1 if i16 else 0, self.scales))
        if cbp_c:
            self.queue += [("block", EL["cb_dc"], 0, 0, None), ("block", EL["cr_dc"], 0, 0, None)]
        if cbp_c == 2:
            self.queue += [("block", EL["cb_ac" if c == 0 else "cr_ac"], b, 1, self.scales_c)
                           for c in range(2) for b in range(4)]

    # --- residual blocks: run, level, ..., eob ----------------------------------------------------------------
    def _start_block(self) -> None:
        _, el, idx, first, scales = self.queue[0]
        n = 16 if el in (EL["luma_dc"], EL["luma"]) else 4 if el in (EL["cb_dc"], EL["cr_dc"]) else 16
        if scales is None:  # a DC block: its budget is a sum of |levels|
            budget = transform.luma_dc_budget(self.qp) if el == EL["luma_dc"] else transform.chroma_dc_budget(self.qp_c)
            scales = np.ones(n, np.int64)
        else:
            budget = transform.BUDGET - self._scaled_dc(el, idx)
        self.block_state = {"pos": first, "n": n, "budget": budget, "scales": scales, "level_at": None}

    def _scaled_dc(self, el: int, idx: int) -> int:
        """|the scaled DC| an AC block of Intra_16x16 or chroma starts from (its DC block came before)."""
        mb = self.mb
        if el == EL["luma"] and mb.kind == I16:
            dc = transform.luma_dc_inverse(transform.unzigzag(mb.luma_dc), self.qp)
            return abs(int(dc[BLK_Y[idx], BLK_X[idx]]))
        if el in (EL["cb_ac"], EL["cr_ac"]):
            c = 0 if el == EL["cb_ac"] else 1
            return abs(int(transform.chroma_dc_inverse(mb.chroma_dc[c].reshape(2, 2), self.qp_c)[idx // 2, idx % 2]))
        return 0

    def _block_allowed(self) -> np.ndarray:
        if self.block_state is None:
            self._start_block()
        s = self.block_state
        if s["level_at"] is not None:  # a level: within the block's budget at its position
            bound = min(MAX_LEVEL, s["budget"] // int(s["scales"][s["level_at"]]))
            return self._level_mask(bound)
        ok = [r for r in range(s["n"] - s["pos"]) if s["scales"][s["pos"] + r] <= s["budget"]]
        return self._run_mask(tuple(ok))

    def _level_mask(self, bound: int) -> np.ndarray:
        if bound not in self.level_masks:
            m = np.zeros(self.codec.vocab.size, bool)
            lo = self.t.level_token(-bound)
            m[lo : lo + bound] = True
            hi = self.t.level_token(1)
            m[hi : hi + bound] = True
            self.level_masks[bound] = m
        return self.level_masks[bound]

    def _run_mask(self, runs: tuple[int, ...]) -> np.ndarray:
        key = ("runs",) + runs
        if key not in self.level_masks:
            m = self.m["eob"].copy()
            m[[self.t.run + r for r in runs]] = True
            self.level_masks[key] = m
        return self.level_masks[key]

    def _block_step(self, tok: int) -> np.ndarray:
        if self.block_state is None:
            self._start_block()
        s, (_, el, idx, _, _) = self.block_state, self.queue[0]
        if tok == self.t.eob:
            self.queue.pop(0)
            self.block_state = None
            return np.array([el, idx, EOB_FREQ])
        if s["level_at"] is None:  # a run
            s["level_at"] = s["pos"] + tok - self.t.run
            return np.array([el, idx, s["level_at"]])
        k, v = s["level_at"], self.t.level_value(tok)
        s["budget"] -= abs(v) * int(s["scales"][k])
        s["pos"], s["level_at"] = k + 1, None
        self._levels(el, idx)[k] = v
        return np.array([el, idx, k])

    def _levels(self, el: int, idx: int) -> np.ndarray:
        mb = self.mb
        if el == EL["luma_dc"]:
            return mb.luma_dc
        if el == EL["luma"]:
            return mb.luma[idx]
        if el in (EL["cb_dc"], EL["cr_dc"]):
            return mb.chroma_dc[0 if el == EL["cb_dc"] else 1]
        return mb.chroma_ac[0 if el == EL["cb_ac"] else 1, idx]
