"""`--codec wavelet`: quantized wavelet pyramids, coarse to fine.

Transform. Lossy: JPEG's YCbCr (optionally 4:2:0 chroma), then a 2-D DWT with PyWavelets (`wavelet`,
any discrete one, default bior4.4; `levels`; mode "periodization", so subbands tile exactly), then a
dead-zone scalar quantizer: q = sign(c) floor(|c| / D), D = step x level weight (x `hh_weight` for
diagonal bands), reconstructed at (|q| + 1/2) D. Lossless (`lossless=True`): JPEG 2000's reversible
colour transform and integer CDF 5/3 lifting (`lifting.py`): decoding is pixel-exact.

Padding rule: the image is padded by edge replication to a multiple of 2**levels (2**(levels+1) with
4:2:0 chroma) so that every level halves exactly; the true size is in the record and decoding crops.

Canonical order (coarse to fine): the LL band of the coarsest level for each component, then level by
level from coarse to fine the three detail bands (horizontal, vertical, diagonal), components
interleaved per band; each band in raster order.

Tokens. The LL bands (dense, large values) are value tokens in [-1023, 1023]. Detail bands: `rle`
(default) codes each band as (zero run 0..15, level +-1..+-15) tokens, ZRL for 16 zeros, and EOB
(rest of the band zero); `dense` codes every coefficient as a value token. Values outside the direct
ranges go through ESC / RUN_ESC(run) plus two raw bytes (value + 32768), so any int16 is exact.

Clips (`temporal.py`): with ``temporal="delta"`` frame t > 1 is the integer difference of its quantized
coefficients from frame t-1's (``keyframe=K``: restarting every K frames), coded with the same tokens and
grammar: an unchanged LL coefficient is the value 0, an unchanged rle detail band its one EOB token, a
dense band zeros. Exact: decoding adds the differences up.

Axes: frame, component, level (1 = finest; LL has the coarsest), band (0 LL, 1 H, 2 V, 3 D), y, x.
Units: cells of the coarsest grid (2**levels pixels square); a coefficient belongs to the cell its
spatial footprint starts in, so a unit is one spatial tree of the pyramid. Canonical order visits units
level by level, so units are not contiguous in it: unit orders gather each tree's tokens together.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

import numpy as np

from vistok.errors import CodecError, InputError, UsageError
from vistok.media.sources import DEFAULT_MAX_PIXELS
from vistok.record import TokenRecord
from vistok.tokenize import lifting
from vistok.tokenize.base import (
    ESCAPE_OFFSET,
    N_SPECIALS,
    CliOption,
    Codec,
    FrameLayout,
    Vocabulary,
    as_pixels,
    assemble_events,
    register_codec,
)
from vistok.tokenize.temporal import CLI_OPTIONS as TEMPORAL_OPTIONS
from vistok.tokenize.temporal import TemporalDelta
from vistok.tokenize.wavelet_grammar import (
    LEVEL,
    RUNS,
    VMAX,
    Band,
    Geometry,
    WaveletCells,
    geometry,
    wavelet_tokens,
)

_RGB2YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC2RGB = np.linalg.inv(_RGB2YCC)


def _weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")] if text else []
    except ValueError:
        raise UsageError(f"--level-weights takes comma-separated numbers, got {text!r}") from None


@register_codec
class WaveletCodec(TemporalDelta, Codec):
    codec_id = "wavelet"
    summary = "a wavelet pyramid, coarse to fine"
    axes = ("frame", "component", "level", "band", "y", "x")
    known_axes = ("frame", "component", "level", "band")  # rle; dense: every axis (see __init__)
    geometry_keys = ("height", "width", "components")
    layout_hint = "--layout dense gives every coefficient a fixed place"

    cli_options = (
        CliOption("wavelet", str, "wavelet: any discrete PyWavelets wavelet."),
        CliOption("levels", int, "wavelet: decomposition levels.", bounds=(1, 16)),
        CliOption("step", float, "wavelet: base quantizer step (dead zone)."),
        CliOption("level_weights", str, "wavelet: comma-separated step weights per level, finest first.", parse=_weights),
        CliOption("hh_weight", float, "wavelet: extra step weight for diagonal bands."),
        CliOption("chroma", str, "wavelet: chroma resolution.", ("444", "420")),
        CliOption("layout", str, "jpeg, wavelet: token layout, rle (sparse runs) or dense (a token per coefficient).", ("rle", "dense")),
        CliOption("lossless", bool, "wavelet: integer CDF 5/3 + reversible colour: pixel-exact.", flag=True),
        *TEMPORAL_OPTIONS,
    )

    def __init__(self, wavelet: str = "bior4.4", levels: int = 3, step: float = 8.0,
                 level_weights: list[float] | tuple[float, ...] = (), hh_weight: float = 1.0, chroma: str = "444",
                 layout: str = "rle", lossless: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                 temporal: str = "none", keyframe: int = 0):
        import pywt

        self._temporal_init(temporal, keyframe)
        if layout not in ("rle", "dense"):
            raise CodecError(f"wavelet layout must be rle or dense, got {layout!r}")
        if chroma not in ("444", "420"):
            raise CodecError(f"wavelet chroma must be 444 or 420, got {chroma!r}")
        if not 1 <= int(levels) <= 8:
            raise CodecError(f"wavelet levels must be in 1..8, got {levels}")
        if not lossless:
            try:
                w = pywt.Wavelet(wavelet)
            except ValueError:
                raise CodecError(f"{wavelet!r} is not a discrete wavelet PyWavelets knows (see pywt.wavelist(kind='discrete'))") from None
            if not w.orthogonal and not w.biorthogonal:
                raise CodecError(f"wavelet {wavelet!r} is not orthogonal or biorthogonal")
            if step <= 0:
                raise CodecError("--step must be > 0")
        self.wavelet, self.levels, self.step = wavelet, int(levels), float(step)
        self.level_weights = tuple(float(x) for x in level_weights)
        self.hh_weight, self.chroma, self.token_layout = float(hh_weight), chroma, layout
        self.lossless, self.max_pixels = bool(lossless), int(max_pixels)
        if self.lossless and chroma != "444":
            raise CodecError("lossless wavelet coding keeps full-resolution chroma: use --chroma 444")
        if layout == "dense":  # a cell per coefficient: its place is known before its token
            self.known_axes, self.single_token_cells = self.axes, True
        t = wavelet_tokens()
        self._vocab = t.vocab
        self._eob, self._zrl, self._esc, self._val0 = t.eob, t.zrl, t.esc, t.val0
        self._rl, self._resc, self._raw = t.rl, t.resc, t.raw

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "wavelet": self.wavelet, "levels": self.levels, "step": self.step,
                "level_weights": list(self.level_weights), "hh_weight": self.hh_weight, "chroma": self.chroma,
                "layout": self.token_layout, "lossless": self.lossless, "max_pixels": self.max_pixels,
                **self._temporal_config()}

    @property
    def vocab(self) -> Vocabulary:
        return self._vocab

    # --- geometry -------------------------------------------------------------------------------
    def record_geometry(self, record: TokenRecord) -> Geometry:
        return self._meta_geometry(record.meta, f"record {record.key}")

    def _meta_geometry(self, meta: dict, what: str = "record") -> Geometry:
        try:
            return geometry(int(meta["height"]), int(meta["width"]), int(meta["components"]), self.levels, self.chroma)
        except KeyError as exc:
            raise CodecError(f"{what}: metadata lacks {exc}") from None

    def band_step(self, band: Band) -> float:
        w = self.level_weights[band.level - 1] if band.level - 1 < len(self.level_weights) else 1.0
        return self.step * w * (self.hh_weight if band.band == 3 else 1.0)

    # --- pixels <-> coefficients ----------------------------------------------------------------
    def frame_coefficients_of(self, media: np.ndarray) -> tuple[Geometry, np.ndarray]:
        """Pixels -> (geometry, the flat canonical vector of quantized (or lossless integer) coefficients)."""
        if media.dtype != np.uint8 or media.ndim not in (2, 3) or (media.ndim == 3 and media.shape[2] != 3):
            raise InputError(f"wavelet codec takes uint8 (H, W) or (H, W, 3) pixels, got {media.dtype} {media.shape}")
        h, w = media.shape[:2]
        if h * w > self.max_pixels:
            raise InputError(f"image of {w}x{h} pixels exceeds the limit of {self.max_pixels}")
        ncomp = 1 if media.ndim == 2 else 3
        g = geometry(h, w, ncomp, self.levels, self.chroma)
        ph, pw = g.padded
        img = np.pad(media, ((0, ph - h), (0, pw - w)) + (((0, 0),) if ncomp == 3 else ()), mode="edge")
        flat = np.empty(g.total, dtype=np.int64)
        if self.lossless:
            planes = [img.astype(np.int64)] if ncomp == 1 else list(np.moveaxis(lifting.rct_forward(img), -1, 0))
            pyramids = [lifting.dwt53(p, self.levels) for p in planes]
        else:
            import pywt

            if ncomp == 1:
                planes = [img.astype(np.float64) - 128.0]
            else:
                ycc = img.reshape(-1, 3).astype(np.float64) @ _RGB2YCC.T
                ycc = ycc.reshape(ph, pw, 3)
                planes = [ycc[..., 0] - 128.0, ycc[..., 1], ycc[..., 2]]
                if self.chroma == "420":
                    planes[1:] = [p.reshape(ph // 2, 2, pw // 2, 2).mean(axis=(1, 3)) for p in planes[1:]]
            with warnings.catch_warnings():  # "level too high ... boundary effects": periodization wraps, by design
                warnings.simplefilter("ignore", UserWarning)
                pyramids = [pywt.wavedec2(p, self.wavelet, mode="periodization", level=self.levels) for p in planes]
        for band in g.bands:
            pyr = pyramids[band.comp]
            arr = pyr[0] if band.band == 0 else pyr[self.levels - band.level + 1][band.band - 1]
            if not self.lossless:
                d = self.band_step(band)
                arr = np.sign(arr) * np.floor(np.abs(arr) / d)
            flat[band.start : band.start + band.size] = arr.ravel()
        return g, flat

    def frame_pixels(self, record: TokenRecord, g: Geometry, flat: np.ndarray) -> np.ndarray:
        return self.pixels_of(g, flat)

    def pixels_of(self, g: Geometry, flat: np.ndarray) -> np.ndarray:
        pyramids = [[None] + [[None, None, None] for _ in range(self.levels)] for _ in range(g.ncomp)]
        for band in g.bands:
            arr = flat[band.start : band.start + band.size].reshape(band.h, band.w)
            if not self.lossless:
                d = self.band_step(band)
                arr = np.sign(arr) * (np.abs(arr) + 0.5) * d * (arr != 0)
            if band.band == 0:
                pyramids[band.comp][0] = arr
            else:
                pyramids[band.comp][self.levels - band.level + 1][band.band - 1] = arr
        ph, pw = g.padded
        if self.lossless:
            planes = [lifting.idwt53([p[0]] + [tuple(t) for t in p[1:]]) for p in pyramids]
            img = planes[0] if g.ncomp == 1 else lifting.rct_inverse(np.stack(planes, axis=-1))
            img = np.clip(img, 0, 255)
        else:
            import pywt

            planes = [pywt.waverec2([p[0]] + [tuple(t) for t in p[1:]], self.wavelet, mode="periodization")
                      for p in pyramids]
            if g.ncomp == 1:
                img = planes[0] + 128.0
            else:
                if self.chroma == "420":
                    planes[1:] = [p.repeat(2, axis=0).repeat(2, axis=1) for p in planes[1:]]
                ycc = np.stack([planes[0] + 128.0, planes[1], planes[2]], axis=-1)
                img = (ycc.reshape(-1, 3) @ _YCC2RGB.T).reshape(ph, pw, 3)
            img = np.clip(np.rint(img), 0, 255)
        return img.astype(np.uint8)[: g.height, : g.width]

    def encode(self, media: np.ndarray, key: str = "sample", meta: dict | None = None) -> TokenRecord:
        g, flat = self.frame_coefficients_of(as_pixels(media))
        return TokenRecord(key, self.tokenize(g, flat), {**(meta or {}), **self.geometry_meta(g)})

    @staticmethod
    def geometry_meta(g: Geometry) -> dict[str, Any]:
        return {"height": g.height, "width": g.width, "components": g.ncomp}

    def coefficients(self, record: TokenRecord) -> tuple[Geometry, np.ndarray]:
        """A one-frame record -> (geometry, its flat coefficient vector as coded)."""
        g = self.record_geometry(record)
        return g, self.detokenize(g, record.tokens)[0]

    def decode_frame(self, record: TokenRecord) -> np.ndarray:
        return self.pixels_of(*self.coefficients(record))

    # --- coefficients <-> tokens ----------------------------------------------------------------
    def _values(self, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        esc = np.abs(vals) > VMAX
        return np.where(esc, self._esc, vals + self._val0), esc

    def tokenize(self, g: Geometry, flat: np.ndarray) -> np.ndarray:
        flat = np.asarray(flat, dtype=np.int64)
        if self.token_layout == "dense":
            prim, esc = self._values(flat)
            return self._assemble(prim, esc, flat, np.zeros(flat.size, dtype=np.int64))
        head, tail = flat[: g.n_ll], flat[g.n_ll :]
        hp, he = self._values(head)
        detail = g.bands[g.ncomp :]
        lengths = np.array([b.size for b in detail], dtype=np.int64)
        seg_start = np.cumsum(lengths) - lengths
        nz = np.flatnonzero(tail)
        seg = np.searchsorted(seg_start, nz, side="right") - 1
        pos = nz - seg_start[seg]
        prev = np.empty_like(pos)
        prev[:1] = -1
        prev[1:] = np.where(seg[1:] == seg[:-1], pos[:-1], -1)
        gap = pos - prev - 1
        zrl, run = gap // RUNS, gap % RUNS
        vals = tail[nz]
        big = np.abs(vals) > LEVEL
        li = np.where(vals < 0, vals + LEVEL, vals + LEVEL - 1)
        rl = np.where(big, self._resc + run, self._rl + run * (2 * LEVEL) + li)
        # events: nonzeros (key: segment, position) and one EOB per band (key: segment, band length)
        n_seg = len(detail)
        ev_seg = np.concatenate([seg, np.arange(n_seg)])
        ev_pos = np.concatenate([pos, lengths])
        order = np.lexsort((ev_pos, ev_seg))
        prim = np.concatenate([rl, np.full(n_seg, self._eob)])[order]
        esc = np.concatenate([big, np.zeros(n_seg, bool)])[order]
        ev_val = np.concatenate([vals, np.zeros(n_seg, np.int64)])[order]
        ev_zrl = np.concatenate([zrl, np.zeros(n_seg, np.int64)])[order]
        head_tokens = self._assemble(hp, he, head, np.zeros(head.size, dtype=np.int64))
        return np.concatenate([head_tokens, self._assemble(prim, esc, ev_val, ev_zrl)])

    def _assemble(self, prim, esc, vals, zrl) -> np.ndarray:
        return assemble_events(prim, esc, vals, self._raw, self._vocab.dtype, zrl, self._zrl)

    def _primaries(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(primary tokens, which are escapes, their escaped values, each token's primary), escapes checked."""
        t = np.asarray(tokens).astype(np.int64)
        if t.size == 0 or t.min() < N_SPECIALS or t.max() >= self._vocab.size:
            raise CodecError("empty token stream, or a special / out-of-vocabulary token inside it")
        is_raw = t >= self._raw
        prim_idx = np.flatnonzero(~is_raw)
        p = t[prim_idx]
        esc = (p == self._esc) | ((p >= self._resc) & (p < self._resc + RUNS))
        esc_pos = prim_idx[esc]
        expect = np.concatenate([esc_pos + 1, esc_pos + 2])
        if np.count_nonzero(is_raw) != expect.size or (esc_pos.size and (esc_pos.max() + 2 >= t.size or not is_raw[expect].all())):
            raise CodecError("malformed escape: every escape must be followed by exactly two raw tokens")
        escval = np.zeros(p.size, dtype=np.int64)
        if esc_pos.size:
            escval[esc] = ((t[esc_pos + 1] - self._raw) << 8) + (t[esc_pos + 2] - self._raw) - ESCAPE_OFFSET
        return p, esc, escval, np.cumsum(~is_raw) - 1

    def _parse(self, g: Geometry, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Per primary token: its flat coefficient index (or -1), value; and per token its primary. One
        vectorized pass over the stream: each step's arrays feed the next."""
        p, esc, escval, owner = self._primaries(tokens)
        is_val = (p == self._esc) | ((p >= self._val0 - VMAX) & (p <= self._val0 + VMAX))
        n_dense = g.total if self.token_layout == "dense" else g.n_ll
        if p.size < n_dense or not is_val[:n_dense].all():
            raise CodecError(f"stream must start with {n_dense} value tokens")
        index = np.full(p.size, -1, dtype=np.int64)
        vals = np.zeros(p.size, dtype=np.int64)
        index[:n_dense] = np.arange(n_dense)
        vals[:n_dense] = np.where(esc[:n_dense], escval[:n_dense], p[:n_dense] - self._val0)
        end_pos = np.zeros(p.size, dtype=np.int64)  # flat index of the last coefficient a token spans
        end_pos[:n_dense] = index[:n_dense]
        if self.token_layout == "dense":
            if p.size != n_dense:
                raise CodecError(f"dense stream has {p.size} values, expected {n_dense}")
            return dict(index=index, vals=vals, owner=owner, end=end_pos, is_eob=np.zeros(p.size, bool))
        q = p[n_dense:]
        is_eob, is_zrl = q == self._eob, q == self._zrl
        is_resc = (q >= self._resc) & (q < self._resc + RUNS)
        is_rl = (q >= self._rl) & (q < self._rl + RUNS * 2 * LEVEL)
        if not (is_eob | is_zrl | is_resc | is_rl).all():
            raise CodecError("value token inside a detail band (rle layout)")
        detail = g.bands[g.ncomp :]
        if is_eob.sum() != len(detail) or (q.size and not is_eob[-1]):
            raise CodecError(f"stream has {int(is_eob.sum())} band ends, expected {len(detail)}")
        seg = np.cumsum(is_eob) - is_eob  # band of each token (EOB belongs to the band it closes)
        a = q - self._rl
        run = np.where(is_resc, q - self._resc, a // (2 * LEVEL))
        inc = np.where(is_zrl, RUNS, np.where(is_rl | is_resc, run + 1, 0))
        cum = np.cumsum(inc)
        seg_first = np.searchsorted(seg, np.arange(len(detail)))  # index of each band's first token
        base = np.where(seg_first > 0, cum[np.maximum(seg_first - 1, 0)], 0)
        pos_after = cum - base[seg]
        lengths = np.array([b.size for b in detail], dtype=np.int64)
        starts = np.array([b.start for b in detail], dtype=np.int64)
        if (pos_after > lengths[seg]).any():
            raise CodecError("zero runs overflow a band")
        li = a % (2 * LEVEL)
        level = np.where(li < LEVEL, li - LEVEL, li - LEVEL + 1)
        coef = is_rl | is_resc
        index[n_dense:] = np.where(coef, starts[seg] + pos_after - 1, -1)
        vals[n_dense:] = np.where(is_resc, escval[n_dense:], np.where(is_rl, level, 0))
        end_pos[n_dense:] = starts[seg] + np.maximum(pos_after - 1, 0)
        eob = np.zeros(p.size, bool)
        eob[n_dense:] = is_eob
        end_pos[n_dense:][is_eob] = (starts + lengths - 1)[seg[is_eob]]
        return dict(index=index, vals=vals, owner=owner, end=end_pos, is_eob=eob)

    def detokenize(self, g: Geometry, tokens: np.ndarray) -> tuple[np.ndarray, dict]:
        parsed = self._parse(g, tokens)
        flat = np.zeros(g.total, dtype=np.int64)
        sel = parsed["index"] >= 0
        flat[parsed["index"][sel]] = parsed["vals"][sel]
        return flat, parsed

    # --- positions ----------------------------------------------------------------------------
    @staticmethod
    @lru_cache(maxsize=64)
    def _flat_tables(g: Geometry) -> tuple[np.ndarray, ...]:
        """Per flat coefficient index: component, level, band, y, x, unit (cached per geometry)."""
        cols = [np.empty(g.total, dtype=np.int64) for _ in range(6)]
        gw = g.grid[1]
        for b in g.bands:
            sl = slice(b.start, b.start + b.size)
            yy, xx = np.divmod(np.arange(b.size), b.w)
            shift = g.levels - b.level
            cols[0][sl], cols[1][sl], cols[2][sl], cols[3][sl], cols[4][sl] = b.comp, b.level, b.band, yy, xx
            cols[5][sl] = ((yy * b.scale) >> shift) * gw + ((xx * b.scale) >> shift)
        for c in cols:
            c.setflags(write=False)
        return tuple(cols)

    def frame_tokens(self, record: TokenRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = self.record_geometry(record)
        parsed = self._parse(g, record.tokens)
        comp, level, band, yy, xx, unit = self._flat_tables(g)
        at = parsed["end"][parsed["owner"]]
        coords = np.stack([np.zeros(at.size, np.int64), comp[at], level[at], band[at], yy[at], xx[at]], axis=1)
        eob = parsed["is_eob"][parsed["owner"]]
        coords[eob, 4] += 1  # EOB sits one row past its band's last coefficient
        coords[eob, 5] = 0
        if self.token_layout == "dense":
            cells = at.astype(np.int64)
        else:
            starts = np.array([b.start for b in g.bands])
            bands = np.searchsorted(starts, at, side="right") - 1
            cells = np.where(at < g.n_ll, at, g.n_ll + bands - g.ncomp).astype(np.int64)
        return unit[at], coords.astype(np.int32), cells

    def frame_layout(self, meta: dict) -> FrameLayout:
        """dense: one cell per coefficient. rle: one per LL coefficient, then one per detail band (run-length
        coded across its whole area, so it spans every unit: unit -1)."""
        g = self._meta_geometry(meta)
        comp, level, band, yy, xx, unit = self._flat_tables(g)
        if self.token_layout == "dense":
            units, coords = unit.astype(np.int64), np.stack([np.zeros(g.total, np.int64), comp, level, band, yy, xx], axis=1)
        else:
            ll = np.stack([np.zeros(g.n_ll, np.int64), comp[: g.n_ll], level[: g.n_ll], band[: g.n_ll]], axis=1)
            det = np.array([[0, b.comp, b.level, b.band] for b in g.bands[g.ncomp :]], dtype=np.int64)
            units = np.concatenate([unit[: g.n_ll], np.full(len(det), -1)]).astype(np.int64)
            coords = np.concatenate([ll, det])
        side = 1 << self.levels
        return FrameLayout(g.grid, (side, side), units, coords, 3 * g.total + len(g.bands) + 2,
                           lambda: WaveletCells(self.token_layout, g))
