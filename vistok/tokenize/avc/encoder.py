"""vistok's H.264 encoder: pixels -> macroblock syntax (`syntax.Picture`), with the reconstruction a decoder
will make.

Decisions (the encoder side is not normative; these are ours):
- Intra_4x4: each block's 9-way mode by SATD of the residual + lambda * the mode's bits (1 when it equals
  the predicted mode, else 4), block by block on the reconstructed neighbours; Intra_16x16's 4 modes and
  the chroma's 4 by SATD.
- P macroblocks: P_L0_16x16 with an integer motion vector from a full search of +-`search` samples
  (SAD + lambda * the vector difference's bits), and P_Skip.
- Between the candidates of a macroblock (I16, I4, and P16, P_Skip in P pictures): rate-distortion, the
  exact CAVLC bits of the candidate's syntax and the squared error of its reconstruction, J = SSD +
  lambda_mode * bits, lambda_mode = 0.85 * 2^((QP - 12) / 3) (the H.264 reference software's).
- Quantization: deadzone 1/3 of a step for intra blocks, 1/6 for inter.
"""

from __future__ import annotations

import math
import os

import numpy as np

from vistok.tokenize.avc import predict, transform
from vistok.tokenize.avc.bits import BitWriter, se_bits
from vistok.tokenize.avc.syntax import (
    I4,
    I16,
    P16,
    SKIP,
    FrameState,
    Macroblock,
    Picture,
    clear_mb,
    i4_neighbours,
    mb_neighbours,
    mv_prediction,
    predicted_i4_mode,
    recon_i4_block,
    reconstruct_mb,
    write_mb,
)
from vistok.tokenize.avc.tables import (
    BLK_X,
    BLK_Y,
    CBP_TO_CODE_INTER,
    CBP_TO_CODE_INTRA,
    CHROMA_QP,
    COEFF_TOKEN,
    COEFF_TOKEN_CHROMA_DC,
    DEQUANT4,
    QUANT4,
    RUN_BEFORE,
    TOTAL_ZEROS,
    TOTAL_ZEROS_CHROMA_DC,
    ZIGZAG_FLAT,
)

try:  # the C kernel (vistok/_avcc.c), built at install time when a compiler is there
    from vistok import _avcc as _native
except ImportError:  # pragma: no cover - a machine without a C compiler
    _native = None
# pictures decided in C, exactly as `Encoder` decides them in Python, unless absent or VISTOK_NATIVE=0
NATIVE = _native is not None and os.environ.get("VISTOK_NATIVE", "1") != "0"


def _lengths(rows, shape) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    for i, row in enumerate(rows):
        for j, code in enumerate(row):
            out[i, j] = len(code)
    return out


def _init_native() -> None:
    """Hand the C kernel its tables, once, from `tables` and `predict` (they are written only there)."""
    coeff = np.zeros((4, 17, 4), np.uint8)
    for t, table in enumerate((*COEFF_TOKEN, COEFF_TOKEN_CHROMA_DC)):
        coeff[t, : len(table)] = _lengths(table, (len(table), 4))
    _native.init(predict.I4_WEIGHTS.astype(np.int32).tobytes(), coeff.tobytes(), _lengths(TOTAL_ZEROS, (15, 16)).tobytes(),
                 _lengths(TOTAL_ZEROS_CHROMA_DC, (3, 4)).tobytes(), _lengths(RUN_BEFORE, (7, 15)).tobytes(),
                 np.array([CBP_TO_CODE_INTRA[c] for c in range(48)], np.uint8).tobytes(),
                 ZIGZAG_FLAT.astype(np.int32).tobytes(), DEQUANT4.reshape(6, 16).astype(np.int32).tobytes(),
                 QUANT4.reshape(6, 16).astype(np.int32).tobytes(),
                 np.array([CBP_TO_CODE_INTER[c] for c in range(48)], np.uint8).tobytes())


if _native is not None:
    _init_native()


# the C kernel's picture syntax, a row per macroblock: type (0 I16, 1 I4, 2 P16, 3 skip), I16 mode, chroma mode,
# I4 modes, I16 DC levels, luma levels per block, chroma DC and AC levels (zigzag), P16's vector
PICTURE_ARRAYS = {"kinds": (), "modes": (), "cmodes": (), "i4": (16,), "dc": (16,), "luma": (16, 16), "cdc": (2, 4),
                  "cac": (2, 4, 16), "mvs": (2,)}


def to_blocks(x: np.ndarray) -> np.ndarray:
    """(4k, 4m) samples -> (k, m, 4, 4) blocks."""
    k, m = x.shape[0] // 4, x.shape[1] // 4
    return x.reshape(k, 4, m, 4).transpose(0, 2, 1, 3)


_I4_OK = {(t, lf, c): np.array([predict.i4_available(m, t, lf, c) for m in range(9)])
          for t in (False, True) for lf in (False, True) for c in (False, True)}  # (top, left, corner) -> modes


class Encoder:
    """`native`: pictures through the C kernel when it is built (the same decisions, tested); False: Python."""

    def __init__(self, qp: int = 28, search: int = 16, native: bool = True):
        self.qp, self.search, self.native = qp, search, native and NATIVE
        self.lam = 0.85 * 2 ** ((qp - 12) / 3)
        self.lam_sad = math.sqrt(self.lam)
        self.scales = transform.block_scales(qp)
        self._i4_ok = _I4_OK

    def encode(self, frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]], gop: int = 1) -> tuple[list[Picture], list[FrameState]]:
        """YCbCr 4:2:0 planes, sides multiples of 16 (luma) -> each picture's syntax and decoded state. Every
        `gop`-th picture is an I picture, the others P pictures predicted from the previous one."""
        pictures, states = [], []
        for i, planes in enumerate(frames):
            ref = states[-1] if i % gop else None
            pic, st = self.encode_picture(planes, ref)
            pictures.append(pic)
            states.append(st)
        return pictures, states

    def encode_picture(self, planes, ref: FrameState | None) -> tuple[Picture, FrameState]:
        if self.native:
            return self._native_picture(planes, ref)
        y = planes[0]
        mb_h, mb_w = y.shape[0] // 16, y.shape[1] // 16
        st = FrameState(mb_w, mb_h, self.qp, ref)
        src = [p.astype(np.int64) for p in planes]
        mbs = []
        for mby in range(mb_h):
            for mbx in range(mb_w):
                mbs.append(self.decide(st, src, mbx, mby))
        return Picture("P" if ref is not None else "I", mbs), st

    def picture_arrays(self, planes, ref: FrameState | None) -> tuple[dict[str, np.ndarray], FrameState]:
        """A picture decided by the C kernel (I, or P predicted from `ref`): its syntax as arrays
        (`PICTURE_ARRAYS`, a row per macroblock, int32), and the state the Python encoder would leave."""
        mb_h, mb_w = planes[0].shape[0] // 16, planes[0].shape[1] // 16
        st, n = FrameState(mb_w, mb_h, self.qp, ref), mb_w * mb_h
        ctx = {"tcl": np.zeros(st.tc_luma.shape, np.int32), "tcc": np.zeros(st.tc_chroma.shape, np.int32),
               "i4m": np.full(st.i4_mode.shape, predict.DC, np.int32), "refidx": np.full(n, -1, np.int32),
               "mv": np.zeros((n, 2), np.int32)}
        a = {name: np.zeros((n, *shape), np.int32) for name, shape in PICTURE_ARRAYS.items()}
        src = [np.ascontiguousarray(p, dtype=np.uint8) for p in planes]
        _native.encode(*src, *st.planes, *(ref.planes if ref is not None else st.planes), *ctx.values(), *a.values(),
                       mb_w, mb_h, self.qp, self.lam, self.lam_sad, int(ref is not None), self.search)
        st.tc_luma[:], st.tc_chroma[:], st.i4_mode[:] = ctx["tcl"], ctx["tcc"], ctx["i4m"]
        st.ref_idx[:], st.mv[:] = ctx["refidx"].reshape(mb_h, mb_w), ctx["mv"].reshape(mb_h, mb_w, 2)
        return a, st

    def _native_picture(self, planes, ref: FrameState | None) -> tuple[Picture, FrameState]:
        a, st = self.picture_arrays(planes, ref)
        kinds = (I16, I4, P16, SKIP)
        mbs = [Macroblock(kinds[a["kinds"][i]], mode=int(a["modes"][i]), chroma_mode=int(a["cmodes"][i]),
                          i4_modes=tuple(a["i4"][i].tolist()) if a["kinds"][i] == 1 else (),
                          mv=tuple(a["mvs"][i].tolist()) if a["kinds"][i] == 2 else (0, 0),
                          luma_dc=a["dc"][i].astype(np.int64), luma=a["luma"][i].astype(np.int64),
                          chroma_dc=a["cdc"][i].astype(np.int64), chroma_ac=a["cac"][i].astype(np.int64))
               for i in range(len(a["kinds"]))]
        return Picture("P" if ref is not None else "I", mbs), st

    # --- one macroblock -------------------------------------------------------------------------------------
    def decide(self, st: FrameState, src: list[np.ndarray], mbx: int, mby: int) -> Macroblock:
        """The macroblock's candidates, each tried (written for its bits, reconstructed for its error); the state
        is left as the cheapest one's."""
        chroma = self._intra_chroma(st, src, mbx, mby)
        before, trials = _save(st, mbx, mby), []

        def trial(mb: Macroblock, luma_done: bool = False) -> None:
            bits = self._commit(st, mbx, mby, mb, luma_done)
            ssd = sum(float(((p[_region(c, mbx, mby)].astype(np.int64) - s[_region(c, mbx, mby)]) ** 2).sum())
                      for c, (p, s) in enumerate(zip(st.planes, src)))
            trials.append((ssd + self.lam * bits, mb, _save(st, mbx, mby)))
            _restore(st, mbx, mby, before)

        trial(self._i16(st, src, mbx, mby, chroma))
        trial(self._i4(st, src, mbx, mby, chroma), luma_done=True)  # built on its own reconstruction
        if st.ref is not None:
            trial(Macroblock(SKIP))
            trial(self._p16(st, src, mbx, mby))
        _, mb, after = min(trials, key=lambda t: t[0])
        _restore(st, mbx, mby, after)
        return mb

    def _commit(self, st, mbx, mby, mb: Macroblock, luma_done: bool = False) -> int:
        """Write (for the contexts and the bit count) and reconstruct a macroblock into the state; `luma_done`:
        its luma is reconstructed already (Intra_4x4, block by block as it was chosen)."""
        if mb.kind == SKIP:
            clear_mb(st, mbx, mby)
            reconstruct_mb(st, mbx, mby, mb)
            return 1
        w = BitWriter()
        write_mb(w, st, mbx, mby, mb, st.ref is not None)
        reconstruct_mb(st, mbx, mby, mb, luma=not luma_done)
        return w.n + (1 if st.ref is not None else 0)

    def _intra_chroma(self, st, src, mbx, mby) -> tuple[int, np.ndarray, np.ndarray]:
        """The chroma mode with the least SATD over Cb and Cr, and its levels."""
        best = None
        for mode in range(4):
            nbs = [mb_neighbours(st.planes[1 + c], 8 * mbx, 8 * mby, 8) for c in range(2)]
            if not _has(predict.CHROMA_NEEDS[mode], nbs[0]):
                continue
            preds = [predict.chroma_predict(*nbs[c], mode) for c in range(2)]
            cost = sum(int(transform.satd4(to_blocks(src[1 + c][_region(1, mbx, mby)] - preds[c])).sum()) for c in range(2))
            if best is None or cost < best[0]:
                best = (cost, mode, preds)
        _, mode, preds = best
        dc, ac = self._chroma_levels(src, mbx, mby, preds, intra=True)
        return mode, dc, ac

    def _chroma_levels(self, src, mbx, mby, preds, intra: bool) -> tuple[np.ndarray, np.ndarray]:
        dc_levels, ac_levels = np.zeros((2, 4), np.int64), np.zeros((2, 4, 16), np.int64)
        qp_c = CHROMA_QP[self.qp]
        for c in range(2):
            w = transform.forward4(to_blocks(src[1 + c][_region(1, mbx, mby)] - preds[c]))  # (2, 2, 4, 4)
            dc = transform.fit(transform.chroma_dc_forward(w[:, :, 0, 0], qp_c, intra), 1,
                               transform.chroma_dc_budget(qp_c))
            dc_levels[c] = dc.reshape(4)
            scaled_dc = np.abs(transform.chroma_dc_inverse(dc, qp_c)).reshape(4)
            ac = transform.zigzag(transform.quant4(w, qp_c, intra)).reshape(4, 16)
            ac[:, 0] = 0
            ac_levels[c] = [transform.fit(ac[b], transform.block_scales(qp_c), transform.BUDGET - int(scaled_dc[b]))
                            for b in range(4)]
        return dc_levels, ac_levels

    def _i16(self, st, src, mbx, mby, chroma) -> Macroblock:
        nbs = mb_neighbours(st.planes[0], 16 * mbx, 16 * mby, 16)
        s = src[0][_region(0, mbx, mby)]
        best = None
        for mode in range(4):
            if not _has(predict.I16_NEEDS[mode], nbs):
                continue
            pred = predict.i16_predict(*nbs, mode)
            cost = int(transform.satd4(to_blocks(s - pred)).sum())
            if best is None or cost < best[0]:
                best = (cost, mode, pred)
        _, mode, pred = best
        w = transform.forward4(to_blocks(s - pred))  # (4, 4, 4, 4): block row, block column
        dc = transform.fit(transform.luma_dc_forward(w[:, :, 0, 0], self.qp), 1, transform.luma_dc_budget(self.qp))
        scaled_dc = np.abs(transform.luma_dc_inverse(dc, self.qp))[BLK_Y, BLK_X]
        dc = transform.zigzag(dc)
        ac = transform.zigzag(transform.quant4(w, self.qp, True))[BLK_Y, BLK_X]  # (16, 16) in blkIdx order
        ac[:, 0] = 0
        ac = np.stack([transform.fit(ac[b], self.scales, transform.BUDGET - int(scaled_dc[b])) for b in range(16)])
        return Macroblock(I16, mode=mode, chroma_mode=chroma[0], luma_dc=dc, luma=ac, chroma_dc=chroma[1],
                          chroma_ac=chroma[2])

    def _i4(self, st, src, mbx, mby, chroma) -> Macroblock:
        """Intra_4x4, block by block on the reconstruction so far (the state is changed: save it first)."""
        modes, levels = [], np.zeros((16, 16), np.int64)
        for blk in range(16):
            e, top, left, corner = i4_neighbours(st, mbx, mby, blk)
            gx, gy = 4 * mbx + int(BLK_X[blk]), 4 * mby + int(BLK_Y[blk])
            x, y = 4 * gx, 4 * gy
            s = src[0][y : y + 4, x : x + 4]
            pm = predicted_i4_mode(st, gx, gy)
            preds = predict.i4_predict_all(e, top, left)
            cost = transform.satd4(s - preds) + self.lam_sad * np.where(np.arange(9) == pm, 1, 4)
            cost[~self._i4_ok[(top, left, corner)]] = np.inf
            mode = int(np.argmin(cost))
            pred = preds[mode]
            levels[blk] = transform.fit(transform.zigzag(transform.quant4(transform.forward4(s - pred), self.qp, True)),
                                        self.scales, transform.BUDGET)
            st.i4_mode[gy, gx] = mode
            recon_i4_block(st, mbx, mby, blk, mode, levels[blk])
            modes.append(mode)
        return Macroblock(I4, i4_modes=tuple(modes), chroma_mode=chroma[0], luma=levels, chroma_dc=chroma[1],
                          chroma_ac=chroma[2])

    def _p16(self, st, src, mbx, mby) -> Macroblock:
        """P_L0_16x16: full search of integer vectors within +-search samples, SAD + lambda * vector bits."""
        r, x0, y0 = self.search, 16 * mbx, 16 * mby
        pad = np.pad(st.ref.planes[0].astype(np.int64), r, mode="edge")  # the decoder clamps: edges repeat
        win = np.lib.stride_tricks.sliding_window_view(pad[y0 : y0 + 16 + 2 * r, x0 : x0 + 16 + 2 * r], (16, 16))
        sad = np.abs(win - src[0][_region(0, mbx, mby)]).sum(axis=(-2, -1))  # (2r+1, 2r+1): dy, dx
        mvp = mv_prediction(st, mbx, mby)
        d = 4 * np.arange(-r, r + 1)
        bits = np.array([[se_bits(int(dx) - mvp[0]) + se_bits(int(dy) - mvp[1]) for dx in d] for dy in d])
        dy, dx = np.unravel_index(int(np.argmin(sad + self.lam_sad * bits)), sad.shape)
        mv = (4 * (int(dx) - r), 4 * (int(dy) - r))
        pred = predict.luma_mc(st.ref.planes[0], x0, y0, mv)
        w = transform.forward4(to_blocks(src[0][_region(0, mbx, mby)] - pred))
        luma = transform.zigzag(transform.quant4(w, self.qp, False))[BLK_Y, BLK_X]
        luma = np.stack([transform.fit(b, self.scales, transform.BUDGET) for b in luma])
        preds = [predict.chroma_mc(st.ref.planes[1 + c], 8 * mbx, 8 * mby, mv) for c in range(2)]
        dc, ac = self._chroma_levels(src, mbx, mby, preds, intra=False)
        return Macroblock(P16, mv=mv, luma=luma, chroma_dc=dc, chroma_ac=ac)


def _has(needs: str, nbs: tuple) -> bool:
    top, left, corner = nbs
    have = {"t": top is not None, "l": left is not None, "c": corner is not None}
    return all(have[k] for k in needs)


def _region(component: int, mbx: int, mby: int) -> tuple[slice, slice]:
    n = 16 if component == 0 else 8
    return slice(n * mby, n * mby + n), slice(n * mbx, n * mbx + n)


def _save(st: FrameState, mbx: int, mby: int) -> tuple:
    lum, chrom = (slice(4 * mby, 4 * mby + 4), slice(4 * mbx, 4 * mbx + 4)), \
        (slice(None), slice(2 * mby, 2 * mby + 2), slice(2 * mbx, 2 * mbx + 2))
    return ([p[_region(c, mbx, mby)].copy() for c, p in enumerate(st.planes)], st.tc_luma[lum].copy(),
            st.tc_chroma[chrom].copy(), st.i4_mode[lum].copy(), st.mv[mby, mbx].copy(), int(st.ref_idx[mby, mbx]))


def _restore(st: FrameState, mbx: int, mby: int, saved: tuple) -> None:
    planes, tcl, tcc, modes, mv, ref = saved
    for c, p in enumerate(planes):
        st.planes[c][_region(c, mbx, mby)] = p
    lum = (slice(4 * mby, 4 * mby + 4), slice(4 * mbx, 4 * mbx + 4))
    st.tc_luma[lum], st.i4_mode[lum] = tcl, modes
    st.tc_chroma[:, 2 * mby : 2 * mby + 2, 2 * mbx : 2 * mbx + 2] = tcc
    st.mv[mby, mbx], st.ref_idx[mby, mbx] = mv, ref
