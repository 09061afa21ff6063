"""Macroblock syntax -> reconstruction and -> bitstream, both pure functions of the syntax.

A `Picture` is the list of its macroblocks in raster order, each a `Macroblock` holding the choices a
decoder reads: the type, the prediction modes (the actual Intra_4x4 modes, not their coded form), the
motion vector, and the residual levels of every block in zigzag order. Everything the bitstream codes
implicitly is derived here: coded_block_pattern from the levels, the predicted Intra_4x4 modes, motion
vector predictions and P_Skip's vector, CAVLC's nC contexts, mb_skip_run. So a stream of tokens that holds
a picture's syntax writes the same bytes and reconstructs the same samples every time, and FFmpeg's
decoder (or any conforming one) reproduces `reconstruct`'s planes exactly.

The stream: baseline profile, CAVLC, 4:2:0, one slice per picture, a fixed QP, one reference frame, the
deblocking filter off (disable_deblocking_filter_idc = 1: a decoder then has nothing to smooth, and the
reconstruction is the sum of prediction and residual; what it costs is blocking artefacts at high QP).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vistok.tokenize.avc import cavlc, predict, transform
from vistok.tokenize.avc.bits import BitWriter, nal_unit
from vistok.tokenize.avc.tables import BLK_AT, BLK_X, BLK_Y, CBP_TO_CODE_INTER, CBP_TO_CODE_INTRA, CHROMA_QP

I16, I4, P16, SKIP = "I16", "I4", "P16", "skip"
LOG2_MAX_FRAME_NUM = 4


@dataclass
class Macroblock:
    kind: str  # I16, I4, P16 or skip
    mode: int = 0  # I16: the Intra_16x16 mode
    i4_modes: tuple[int, ...] = ()  # I4: the 16 blocks' Intra_4x4 modes, in luma4x4BlkIdx order
    chroma_mode: int = 0  # intra: the chroma mode
    mv: tuple[int, int] = (0, 0)  # P16: the motion vector (x, y) in quarter samples (multiples of 4)
    luma_dc: np.ndarray = field(default_factory=lambda: np.zeros(16, np.int64))  # I16: DC levels, zigzag
    luma: np.ndarray = field(default_factory=lambda: np.zeros((16, 16), np.int64))  # per block, zigzag
    chroma_dc: np.ndarray = field(default_factory=lambda: np.zeros((2, 4), np.int64))  # Cb, Cr
    chroma_ac: np.ndarray = field(default_factory=lambda: np.zeros((2, 4, 16), np.int64))  # [0] unused
    # coded_block_pattern (luma bits | chroma << 4); None: the least the levels need. A given pattern may
    # mark blocks that are all zero (legal, and what a sampled token stream can say); never fewer.
    cbp: int | None = None

    @property
    def intra(self) -> bool:
        return self.kind in (I16, I4)

    @property
    def cbp_luma(self) -> int:
        if self.cbp is not None:
            return self.cbp & 15
        if self.kind == I16:
            return 15 if self.luma[:, 1:].any() else 0
        return sum(1 << b8 for b8 in range(4) if self.luma[4 * b8 : 4 * b8 + 4].any())

    @property
    def cbp_chroma(self) -> int:
        if self.cbp is not None:
            return self.cbp >> 4
        return 2 if self.chroma_ac[..., 1:].any() else 1 if self.chroma_dc.any() else 0


@dataclass
class Picture:
    kind: str  # "I" or "P"
    mbs: list[Macroblock]


class FrameState:
    """A picture being decoded (or encoded): its samples so far, and what later macroblocks read of earlier
    ones (coefficient counts, Intra_4x4 modes, motion)."""

    def __init__(self, mb_w: int, mb_h: int, qp: int, ref: FrameState | None = None):
        self.mb_w, self.mb_h, self.qp, self.ref = mb_w, mb_h, qp, ref
        self.qp_c = CHROMA_QP[qp]
        self.planes = [np.zeros((16 * mb_h, 16 * mb_w), np.uint8)]  # Y, then Cb and Cr
        self.planes += [np.zeros((8 * mb_h, 8 * mb_w), np.uint8) for _ in range(2)]
        self.tc_luma = np.zeros((4 * mb_h, 4 * mb_w), np.int64)
        self.tc_chroma = np.zeros((2, 2 * mb_h, 2 * mb_w), np.int64)
        self.i4_mode = np.full((4 * mb_h, 4 * mb_w), predict.DC, np.int64)
        self.ref_idx = np.full((mb_h, mb_w), -1, np.int64)  # 0: inter (one reference), -1: intra
        self.mv = np.zeros((mb_h, mb_w, 2), np.int64)

    def available(self, mbx: int, mby: int, cur: tuple[int, int]) -> bool:
        """Macroblock (mbx, mby) exists and precedes the current one (raster order, one slice)."""
        return 0 <= mbx < self.mb_w and 0 <= mby < self.mb_h and (mby, mbx) < (cur[1], cur[0])


# --- prediction and reconstruction ----------------------------------------------------------------------------
def i4_neighbours(st: FrameState, mbx: int, mby: int, blk: int) -> tuple[np.ndarray, bool, bool, bool]:
    """The 13 neighbour samples of a 4x4 luma block (see `predict`) and whether top, left, corner exist."""
    bx, by = int(BLK_X[blk]), int(BLK_Y[blk])
    x, y = 16 * mbx + 4 * bx, 16 * mby + 4 * by
    left, top = bx > 0 or mbx > 0, by > 0 or mby > 0
    corner = left and top
    if by == 0:
        top_right = mby > 0 and (bx < 3 or mbx + 1 < st.mb_w)
    else:
        top_right = bx < 3 and BLK_AT[by - 1, bx + 1] < blk
    yp = st.planes[0].astype(np.int64)
    e = np.full(13, 128, np.int64)
    if left:
        e[0:4] = yp[y : y + 4, x - 1][::-1]
    if corner:
        e[4] = yp[y - 1, x - 1]
    if top:
        e[5:9] = yp[y - 1, x : x + 4]
        e[9:13] = yp[y - 1, x + 4 : x + 8] if top_right else yp[y - 1, x + 3]
    return e, top, left, corner


def mb_neighbours(plane: np.ndarray, x0: int, y0: int, n: int) -> tuple:
    """(top row, left column, corner) of an n x n block at (x0, y0), None where outside the picture."""
    p = plane.astype(np.int64)
    top = p[y0 - 1, x0 : x0 + n] if y0 > 0 else None
    left = p[y0 : y0 + n, x0 - 1] if x0 > 0 else None
    corner = int(p[y0 - 1, x0 - 1]) if x0 > 0 and y0 > 0 else None
    return top, left, corner


def residual4(levels: np.ndarray, qp: int) -> np.ndarray:
    """A 4x4 block's zigzag levels -> residual samples."""
    return transform.inverse4(transform.dequant4(transform.unzigzag(np.asarray(levels, np.int64)), qp))


def recon_i4_block(st: FrameState, mbx: int, mby: int, blk: int, mode: int, levels: np.ndarray) -> np.ndarray:
    e, top, left, _ = i4_neighbours(st, mbx, mby, blk)
    pred = predict.i4_predict(e, mode, top, left)
    x, y = 16 * mbx + 4 * int(BLK_X[blk]), 16 * mby + 4 * int(BLK_Y[blk])
    out = np.clip(pred + residual4(levels, st.qp), 0, 255).astype(np.uint8)
    st.planes[0][y : y + 4, x : x + 4] = out
    return out


def mv_prediction(st: FrameState, mbx: int, mby: int) -> tuple[int, int]:
    """The 16x16 partition's motion vector prediction (8.4.1.3): the median of left, above and above-right
    (above-left when above-right is missing), with the standard's special cases."""
    cur = (mbx, mby)

    def nb(x, y):
        if not st.available(x, y, cur):
            return False, -1, (0, 0)
        return True, int(st.ref_idx[y, x]), tuple(int(v) for v in st.mv[y, x])

    a, b, c = nb(mbx - 1, mby), nb(mbx, mby - 1), nb(mbx + 1, mby - 1)
    if not c[0]:
        c = nb(mbx - 1, mby - 1)
    if not b[0] and not c[0] and a[0]:
        b = c = a
    matches = [n for n in (a, b, c) if n[1] == 0]
    if len(matches) == 1:
        return matches[0][2]
    return tuple(int(np.median([a[2][i], b[2][i], c[2][i]])) for i in range(2))


def skip_mv(st: FrameState, mbx: int, mby: int) -> tuple[int, int]:
    """P_Skip's motion vector (8.4.1.1)."""
    cur = (mbx, mby)
    for x, y in ((mbx - 1, mby), (mbx, mby - 1)):
        if not st.available(x, y, cur):
            return (0, 0)
        if st.ref_idx[y, x] == 0 and not st.mv[y, x].any():
            return (0, 0)
    return mv_prediction(st, mbx, mby)


def motion_of(st: FrameState, mbx: int, mby: int, mb: Macroblock) -> tuple[int, int]:
    return skip_mv(st, mbx, mby) if mb.kind == SKIP else mb.mv


def reconstruct_mb(st: FrameState, mbx: int, mby: int, mb: Macroblock, luma: bool = True) -> None:
    """Decode one macroblock's samples into the state (its neighbours already decoded), then record what
    later macroblocks read of it; `luma=False`: its luma is there already (the encoder's Intra_4x4)."""
    if luma:
        reconstruct_luma(st, mbx, mby, mb)
    reconstruct_chroma(st, mbx, mby, mb)
    commit_motion(st, mbx, mby, mb)


def reconstruct_luma(st: FrameState, mbx: int, mby: int, mb: Macroblock) -> None:
    x0, y0 = 16 * mbx, 16 * mby
    if mb.kind == I4:
        for blk in range(16):
            recon_i4_block(st, mbx, mby, blk, mb.i4_modes[blk], mb.luma[blk])
    else:
        if mb.kind == I16:
            pred = predict.i16_predict(*mb_neighbours(st.planes[0], x0, y0, 16), mb.mode)
            dc = transform.luma_dc_inverse(transform.unzigzag(mb.luma_dc), st.qp)
        else:
            pred = predict.luma_mc(st.ref.planes[0], x0, y0, motion_of(st, mbx, mby, mb))
        if mb.kind != SKIP:
            c = transform.unzigzag(np.asarray(mb.luma, np.int64)[BLK_AT])  # (4, 4, 4, 4): block row, column
            d = transform.dequant4(c, st.qp)
            if mb.kind == I16:
                d[..., 0, 0] = dc
            pred = pred + _unblocks(transform.inverse4(d))
        st.planes[0][y0 : y0 + 16, x0 : x0 + 16] = np.clip(pred, 0, 255)


def reconstruct_chroma(st: FrameState, mbx: int, mby: int, mb: Macroblock) -> None:
    for c in range(2):
        plane = st.planes[1 + c]
        if mb.intra:
            pred = predict.chroma_predict(*mb_neighbours(plane, 8 * mbx, 8 * mby, 8), mb.chroma_mode)
        else:
            pred = predict.chroma_mc(st.ref.planes[1 + c], 8 * mbx, 8 * mby, motion_of(st, mbx, mby, mb))
        if mb.kind != SKIP:
            d = transform.dequant4(transform.unzigzag(np.asarray(mb.chroma_ac[c], np.int64).reshape(2, 2, 16)), st.qp_c)
            d[..., 0, 0] = transform.chroma_dc_inverse(mb.chroma_dc[c].reshape(2, 2), st.qp_c)
            pred = pred + _unblocks(transform.inverse4(d))
        plane[8 * mby : 8 * mby + 8, 8 * mbx : 8 * mbx + 8] = np.clip(pred, 0, 255)


def _unblocks(blocks: np.ndarray) -> np.ndarray:
    """(k, m, 4, 4) blocks -> (4k, 4m) samples."""
    k, m = blocks.shape[:2]
    return blocks.transpose(0, 2, 1, 3).reshape(4 * k, 4 * m)


def commit_motion(st: FrameState, mbx: int, mby: int, mb: Macroblock) -> None:
    """Record the macroblock's reference and motion for its neighbours' predictions."""
    if mb.intra:
        st.ref_idx[mby, mbx], st.mv[mby, mbx] = -1, (0, 0)
    else:
        st.mv[mby, mbx] = motion_of(st, mbx, mby, mb)
        st.ref_idx[mby, mbx] = 0


def reconstruct(pictures: list[Picture], mb_w: int, mb_h: int, qp: int) -> list[FrameState]:
    """A clip's syntax -> each picture's decoded state (its planes: Y, Cb, Cr)."""
    out: list[FrameState] = []
    for pic in pictures:
        st = FrameState(mb_w, mb_h, qp, out[-1] if out and pic.kind == "P" else None)
        for i, mb in enumerate(pic.mbs):
            reconstruct_mb(st, i % mb_w, i // mb_w, mb)
        out.append(st)
    return out


# --- bitstream --------------------------------------------------------------------------------------------
def _n_c(tc: np.ndarray, gx: int, gy: int) -> int:
    """CAVLC's nC from the left and above blocks' coefficient counts (9.2.1); one slice, so a block inside
    the picture is available."""
    a, b = gx > 0, gy > 0
    if a and b:
        return (int(tc[gy, gx - 1]) + int(tc[gy - 1, gx]) + 1) >> 1
    return int(tc[gy, gx - 1]) if a else int(tc[gy - 1, gx]) if b else 0


def predicted_i4_mode(st: FrameState, gx: int, gy: int) -> int:
    if gx == 0 or gy == 0:
        return predict.DC  # a neighbour outside the picture: dcPredModePredictedFlag
    return int(min(st.i4_mode[gy, gx - 1], st.i4_mode[gy - 1, gx]))


def mb_type_code(mb: Macroblock, p_slice: bool) -> int:
    if mb.kind == P16:
        return 0
    base = 5 if p_slice else 0
    if mb.kind == I4:
        return base
    return base + 1 + mb.mode + 4 * mb.cbp_chroma + 12 * (mb.cbp_luma == 15)


def write_mb(w: BitWriter, st: FrameState, mbx: int, mby: int, mb: Macroblock, p_slice: bool) -> None:
    """macroblock_layer() of a coded (not skipped) macroblock; updates the state's contexts."""
    gx0, gy0 = 4 * mbx, 4 * mby
    w.ue(mb_type_code(mb, p_slice))
    st.i4_mode[gy0 : gy0 + 4, gx0 : gx0 + 4] = predict.DC
    if mb.kind == I4:
        st.i4_mode[gy0 + BLK_Y, gx0 + BLK_X] = mb.i4_modes
        for blk in range(16):
            pred = predicted_i4_mode(st, gx0 + int(BLK_X[blk]), gy0 + int(BLK_Y[blk]))
            mode = int(mb.i4_modes[blk])
            w.flag(mode == pred)
            if mode != pred:
                w.u(3, mode if mode < pred else mode - 1)
    if mb.intra:
        w.ue(mb.chroma_mode)
    else:
        mvp = mv_prediction(st, mbx, mby)
        w.se(mb.mv[0] - mvp[0])
        w.se(mb.mv[1] - mvp[1])
    cbp_l, cbp_c = mb.cbp_luma, mb.cbp_chroma
    if mb.kind != I16:
        w.ue((CBP_TO_CODE_INTRA if mb.intra else CBP_TO_CODE_INTER)[cbp_l | cbp_c << 4])
    if cbp_l or cbp_c or mb.kind == I16:
        w.se(0)  # mb_qp_delta: one QP for the picture
        write_residual(w, st, mbx, mby, mb)
    commit_motion(st, mbx, mby, mb)


def write_residual(w: BitWriter, st: FrameState, mbx: int, mby: int, mb: Macroblock) -> None:
    gx0, gy0 = 4 * mbx, 4 * mby
    tc = st.tc_luma
    tc[gy0 : gy0 + 4, gx0 : gx0 + 4] = 0
    cbp_l, cbp_c = mb.cbp_luma, mb.cbp_chroma
    if mb.kind == I16:
        cavlc.write_block(w, mb.luma_dc, _n_c(tc, gx0, gy0))
    for blk in range(16):
        if cbp_l >> (blk // 4) & 1:
            gx, gy = gx0 + int(BLK_X[blk]), gy0 + int(BLK_Y[blk])
            levels = mb.luma[blk, 1:] if mb.kind == I16 else mb.luma[blk]
            tc[gy, gx] = cavlc.write_block(w, levels, _n_c(tc, gx, gy))
    for c in range(2):
        st.tc_chroma[c, 2 * mby : 2 * mby + 2, 2 * mbx : 2 * mbx + 2] = 0
    if cbp_c:
        for c in range(2):
            cavlc.write_block(w, mb.chroma_dc[c], -1)
    if cbp_c == 2:
        for c in range(2):
            for b in range(4):
                gx, gy = 2 * mbx + b % 2, 2 * mby + b // 2
                st.tc_chroma[c, gy, gx] = cavlc.write_block(w, mb.chroma_ac[c, b, 1:], _n_c(st.tc_chroma[c], gx, gy))


def clear_mb(st: FrameState, mbx: int, mby: int) -> None:
    """A skipped macroblock's contexts: no coefficients, DC for Intra_4x4 mode prediction, its motion."""
    st.tc_luma[4 * mby : 4 * mby + 4, 4 * mbx : 4 * mbx + 4] = 0
    st.tc_chroma[:, 2 * mby : 2 * mby + 2, 2 * mbx : 2 * mbx + 2] = 0
    st.i4_mode[4 * mby : 4 * mby + 4, 4 * mbx : 4 * mbx + 4] = predict.DC
    commit_motion(st, mbx, mby, Macroblock(SKIP))


def sps(mb_w: int, mb_h: int, width: int, height: int) -> bytes:
    """The sequence parameter set: baseline profile, 4:2:0, frame_num in 4 bits, POC type 2 (output order is
    decoding order), one reference frame, cropping to an even width x height."""
    w = BitWriter()
    w.u(8, 66)  # profile_idc: baseline
    w.u(8, 0b11000000)  # constraint_set0 and 1 (constrained baseline), reserved zeros
    w.u(8, 40)  # level_idc
    w.ue(0)  # seq_parameter_set_id
    w.ue(LOG2_MAX_FRAME_NUM - 4)
    w.ue(2)  # pic_order_cnt_type
    w.ue(1)  # max_num_ref_frames
    w.flag(0)  # gaps_in_frame_num_value_allowed_flag
    w.ue(mb_w - 1)
    w.ue(mb_h - 1)
    w.flag(1)  # frame_mbs_only_flag
    w.flag(1)  # direct_8x8_inference_flag
    crop = (16 * mb_w - width) // 2, (16 * mb_h - height) // 2
    w.flag(any(crop))
    if any(crop):
        for v in (0, crop[0], 0, crop[1]):  # left, right, top, bottom in 2-sample units
            w.ue(v)
    w.flag(0)  # vui_parameters_present_flag
    return nal_unit(7, w.rbsp())


def pps(qp: int) -> bytes:
    w = BitWriter()
    w.ue(0)  # pic_parameter_set_id
    w.ue(0)  # seq_parameter_set_id
    w.flag(0)  # entropy_coding_mode_flag: CAVLC
    w.flag(0)  # bottom_field_pic_order_in_frame_present_flag
    w.ue(0)  # num_slice_groups_minus1
    w.ue(0)  # num_ref_idx_l0_default_active_minus1
    w.ue(0)  # num_ref_idx_l1_default_active_minus1
    w.flag(0)  # weighted_pred_flag
    w.u(2, 0)  # weighted_bipred_idc
    w.se(qp - 26)  # pic_init_qp_minus26
    w.se(0)  # pic_init_qs_minus26
    w.se(0)  # chroma_qp_index_offset
    w.flag(1)  # deblocking_filter_control_present_flag
    w.flag(0)  # constrained_intra_pred_flag
    w.flag(0)  # redundant_pic_cnt_present_flag
    return nal_unit(8, w.rbsp())


def slice_nal(pic: Picture, mb_w: int, mb_h: int, qp: int, frame_num: int, idr_id: int) -> bytes:
    """One picture as one slice: an IDR slice for an I picture, a P slice referring to the previous picture."""
    w, p = BitWriter(), pic.kind == "P"
    w.ue(0)  # first_mb_in_slice
    w.ue(5 if p else 7)  # slice_type (every slice of the picture has this type)
    w.ue(0)  # pic_parameter_set_id
    w.u(LOG2_MAX_FRAME_NUM, frame_num % (1 << LOG2_MAX_FRAME_NUM))
    if not p:
        w.ue(idr_id)
    else:
        w.flag(0)  # num_ref_idx_active_override_flag
        w.flag(0)  # ref_pic_list_modification_flag_l0
    if p:
        w.flag(0)  # adaptive_ref_pic_marking_mode_flag
    else:
        w.flag(0)  # no_output_of_prior_pics_flag
        w.flag(0)  # long_term_reference_flag
    w.se(0)  # slice_qp_delta
    w.ue(1)  # disable_deblocking_filter_idc: off
    st = FrameState(mb_w, mb_h, qp)
    skipped = 0
    for i, mb in enumerate(pic.mbs):
        mbx, mby = i % mb_w, i // mb_w
        if mb.kind == SKIP:
            if not p:
                raise ValueError("a skipped macroblock in an I picture")
            skipped += 1
            clear_mb(st, mbx, mby)
            continue
        if p:
            w.ue(skipped)
            skipped = 0
        write_mb(w, st, mbx, mby, mb, p)
    if p and skipped:
        w.ue(skipped)
    return nal_unit(1 if p else 5, w.rbsp())


def stream(pictures: list[Picture], mb_w: int, mb_h: int, width: int, height: int, qp: int) -> bytes:
    """A clip's syntax -> its Annex-B H.264 stream (SPS, PPS, one slice per picture)."""
    out = [sps(mb_w, mb_h, width, height), pps(qp)]
    frame_num = idr = 0
    for pic in pictures:
        if pic.kind == "I":
            frame_num, idr = 0, idr + 1
        out.append(slice_nal(pic, mb_w, mb_h, qp, frame_num, (idr - 1) % 2))
        frame_num += 1
    return b"".join(out)
