/* C kernel of vistok's H.264 encoder (vistok/tokenize/avc/encoder.py): the decisions of an I picture.
 *
 * One call encodes a whole intra picture, macroblock by macroblock, exactly as the Python encoder decides it:
 * Intra_4x4 modes by SATD + lambda * mode bits on the reconstruction so far, Intra_16x16 and chroma modes by
 * SATD, then rate-distortion between I16 and I4 with the exact CAVLC bits of each candidate. The Python
 * encoder stays the reference: tests check that both give the same syntax, token for token.
 *
 * Tables come from vistok.tokenize.avc.tables through init(), so they are written once, in Python.
 * Arrays are raster 4x4 blocks ([row * 4 + column]); levels are in zigzag order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define BUDGET (32767 - 32)
#define MAX_LEVEL 2063

static int32_t I4W[9][16][13];   /* Intra_4x4 weights: pred = (W e + 2) >> 2 */
static uint8_t CT_LEN[4][17][4]; /* coeff_token lengths: nC tables 0..2, chroma DC (3) */
static uint8_t TZ_LEN[15][16];   /* total_zeros lengths, 4x4 blocks */
static uint8_t TZC_LEN[3][4];    /* total_zeros lengths, chroma DC */
static uint8_t RB_LEN[7][15];    /* run_before lengths */
static uint8_t CBP_CODE[48];     /* cbp -> codeNum, intra */
static uint8_t CBP_CODE_P[48];   /* cbp -> codeNum, inter */
static int32_t ZZ[16];           /* zigzag index -> raster index */
static int32_t DEQ[6][16];       /* dequantization scale v, raster */
static int32_t QMF[6][16];       /* quantizer multiplier, raster */
static const int BLKX[16] = {0, 1, 0, 1, 2, 3, 2, 3, 0, 1, 0, 1, 2, 3, 2, 3};
static const int BLKY[16] = {0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3};
static int BLKAT[4][4];
static int TAP_IDX[9][16][3], TAP_W[9][16][3]; /* I4W's nonzero taps (at most 3 a sample) */
static const int CHROMA_QP[52] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                  23, 24, 25, 26, 27, 28, 29, 29, 30, 31, 32, 32, 33, 34, 34, 35, 35, 36, 36, 37, 37,
                                  37, 38, 38, 38, 39, 39, 39, 39};
static int ready = 0;

typedef struct {
    int mbw, mbh, W, qp, qpc;
    double lam, lam_sad;
    const uint8_t *sy, *scb, *scr; /* source planes */
    uint8_t *ry, *rcb, *rcr;       /* reconstruction */
    int32_t *tcl, *tcc, *i4m;      /* coefficient counts (luma, chroma x2), Intra_4x4 modes */
    int p, search;                 /* a P picture: its reference, motion search range (whole samples) */
    const uint8_t *fy, *fcb, *fcr; /* the reference picture */
    int32_t *refidx, *mv;          /* per macroblock: 0 inter, -1 intra; its vector (quarter samples) */
} Ctx;

typedef struct { /* one macroblock's syntax */
    int kind; /* 0: I16, 1: I4, 2: P16, 3: skip */
    int mode, cmode, i4[16], mv[2];
    int32_t dc[16], luma[16][16], cdc[2][4], cac[2][4][16];
} MB;

/* --- small helpers ------------------------------------------------------------------------------------- */
static inline int iabs(int v) { return v < 0 ? -v : v; }
static inline int isign(int v) { return (v > 0) - (v < 0); }
static inline uint8_t clip255(int v) { return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v; }
static inline int ue_bits(int v) {
    int n = 0;
    for (unsigned x = (unsigned)v + 1; x > 1; x >>= 1) n++;
    return 2 * n + 1;
}

static void fwd4(const int *x, int *w) { /* Cf X Cf^T */
    int t[16];
    for (int i = 0; i < 4; i++) {
        const int *r = x + 4 * i;
        int s03 = r[0] + r[3], d03 = r[0] - r[3], s12 = r[1] + r[2], d12 = r[1] - r[2];
        t[4 * i + 0] = s03 + s12;
        t[4 * i + 1] = 2 * d03 + d12;
        t[4 * i + 2] = s03 - s12;
        t[4 * i + 3] = d03 - 2 * d12;
    }
    for (int j = 0; j < 4; j++) {
        int a = t[j], b = t[4 + j], c = t[8 + j], d = t[12 + j];
        int s03 = a + d, d03 = a - d, s12 = b + c, d12 = b - c;
        w[j] = s03 + s12;
        w[4 + j] = 2 * d03 + d12;
        w[8 + j] = s03 - s12;
        w[12 + j] = d03 - 2 * d12;
    }
}

static void inv4(const int *d, int *r) { /* rows, then columns, then (x + 32) >> 6 (8.5.12.2) */
    int t[16];
    for (int i = 0; i < 4; i++) {
        const int *q = d + 4 * i;
        int e0 = q[0] + q[2], e1 = q[0] - q[2], e2 = (q[1] >> 1) - q[3], e3 = q[1] + (q[3] >> 1);
        t[4 * i + 0] = e0 + e3;
        t[4 * i + 1] = e1 + e2;
        t[4 * i + 2] = e1 - e2;
        t[4 * i + 3] = e0 - e3;
    }
    for (int j = 0; j < 4; j++) {
        int a = t[j], b = t[4 + j], c = t[8 + j], e = t[12 + j];
        int e0 = a + c, e1 = a - c, e2 = (b >> 1) - e, e3 = b + (e >> 1);
        r[j] = (e0 + e3 + 32) >> 6;
        r[4 + j] = (e1 + e2 + 32) >> 6;
        r[8 + j] = (e1 - e2 + 32) >> 6;
        r[12 + j] = (e0 - e3 + 32) >> 6;
    }
}

static int satd4(const int *x) { /* sum |H X H| / 2, H the 4x4 Hadamard (rows, then columns, by butterflies) */
    int t[16], s = 0;
    for (int j = 0; j < 4; j++) { /* H X: combine rows, column by column */
        int a = x[j] + x[4 + j], b = x[j] - x[4 + j], c = x[8 + j] + x[12 + j], d = x[8 + j] - x[12 + j];
        t[j] = a + c, t[4 + j] = a - c, t[8 + j] = b - d, t[12 + j] = b + d;
    }
    for (int i = 0; i < 4; i++) { /* (H X) H: combine columns, row by row */
        const int *r = t + 4 * i;
        int a = r[0] + r[1], b = r[0] - r[1], c = r[2] + r[3], d = r[2] - r[3];
        s += iabs(a + c) + iabs(a - c) + iabs(b - d) + iabs(b + d);
    }
    return s / 2;
}

static inline int quant(int w, int64_t mf, int qbits, int64_t f) {
    int64_t q = ((int64_t)iabs(w) * mf + f) >> qbits;
    if (q > MAX_LEVEL) q = MAX_LEVEL;
    return isign(w) * (int)q;
}

/* levels (zigzag) fitted to a budget of sum |level| * scale (transform.fit) */
static void fit(int32_t *lv, int n, const int *scale, int budget) {
    int64_t total = 0;
    for (int k = 0; k < n; k++) total += (int64_t)iabs(lv[k]) * (scale ? scale[k] : 1);
    if (total <= budget) return;
    for (int k = 0; k < n; k++) lv[k] = isign(lv[k]) * (int)((int64_t)iabs(lv[k]) * budget / total);
}

static void block_scales(int qp, int *s) {
    for (int k = 0; k < 16; k++) s[k] = DEQ[qp % 6][ZZ[k]] << (qp / 6);
}

/* zigzag levels -> residual (raster); dc >= INT32_MIN + 1: an already scaled DC replaces position 0 */
static void residual(const int32_t *lv, int qp, int has_dc, int dc, int *res) {
    int d[16];
    for (int k = 0; k < 16; k++) d[ZZ[k]] = (lv[k] * DEQ[qp % 6][ZZ[k]]) << (qp / 6);
    if (has_dc) d[0] = dc;
    inv4(d, res);
}

static void luma_dc_inverse(const int32_t *zz, int qp, int *out /* raster 4x4 */) {
    int c[16], t[16];
    static const int H[4][4] = {{1, 1, 1, 1}, {1, 1, -1, -1}, {1, -1, -1, 1}, {1, -1, 1, -1}};
    for (int k = 0; k < 16; k++) c[ZZ[k]] = zz[k];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            int v = 0;
            for (int k = 0; k < 4; k++) v += H[i][k] * c[4 * k + j];
            t[4 * i + j] = v;
        }
    int scale = 16 * DEQ[qp % 6][0];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            int f = 0;
            for (int k = 0; k < 4; k++) f += t[4 * i + k] * H[k][j];
            out[4 * i + j] = qp >= 36 ? (f * scale) << (qp / 6 - 6) : (f * scale + (1 << (5 - qp / 6))) >> (6 - qp / 6);
        }
}

static void chroma_dc_inverse(const int32_t *c, int qpc, int *out) {
    int f[4] = {c[0] + c[1] + c[2] + c[3], c[0] - c[1] + c[2] - c[3], c[0] + c[1] - c[2] - c[3],
                c[0] - c[1] - c[2] + c[3]};
    int scale = 16 * DEQ[qpc % 6][0];
    for (int k = 0; k < 4; k++) out[k] = ((f[k] * scale) << (qpc / 6)) >> 5;
}

static int luma_dc_budget(int qp) {
    int v = (BUDGET - 1) * 64 / ((16 * DEQ[qp % 6][0]) << (qp / 6));
    return v < BUDGET ? v : BUDGET;
}

static int chroma_dc_budget(int qpc) {
    int v = BUDGET * 32 / ((16 * DEQ[qpc % 6][0]) << (qpc / 6));
    return v < BUDGET ? v : BUDGET;
}

/* --- CAVLC bits ------------------------------------------------------------------------------------------ */
static int level_code_bits(int code, int sl) {
    if (sl == 0) return code < 14 ? code + 1 : code < 30 ? 19 : 28;
    return code < (15 << sl) ? (code >> sl) + 1 + sl : 28;
}

static int block_bits(const int32_t *lv, int n, int nc, int *total_out) {
    int pos[16], total = 0;
    for (int k = 0; k < n; k++)
        if (lv[k]) pos[total++] = k;
    *total_out = total;
    int trailing = 0;
    while (trailing < total && trailing < 3 && iabs(lv[pos[total - 1 - trailing]]) == 1) trailing++;
    int bits = nc == -1 ? CT_LEN[3][total][trailing] : nc >= 8 ? 6 : CT_LEN[nc < 2 ? 0 : nc < 4 ? 1 : 2][total][trailing];
    if (!total) return bits;
    bits += trailing;
    int sl = total > 10 && trailing < 3 ? 1 : 0;
    for (int i = trailing; i < total; i++) {
        int v = lv[pos[total - 1 - i]];
        int code = v > 0 ? 2 * v - 2 : -2 * v - 1;
        if (i == trailing && trailing < 3) code -= 2;
        bits += level_code_bits(code, sl);
        if (sl == 0) sl = 1;
        if (iabs(v) > (3 << (sl - 1)) && sl < 6) sl++;
    }
    int zeros = pos[total - 1] + 1 - total;
    if (total < n) bits += n == 4 ? TZC_LEN[total - 1][zeros] : TZ_LEN[total - 1][zeros];
    for (int k = total - 1; k > 0 && zeros > 0; k--) {
        int run = pos[k] - pos[k - 1] - 1;
        bits += RB_LEN[(zeros < 7 ? zeros : 7) - 1][run];
        zeros -= run;
    }
    return bits;
}

static int n_c(const int32_t *tc, int stride, int gx, int gy) {
    int a = gx > 0, b = gy > 0;
    if (a && b) return (tc[gy * stride + gx - 1] + tc[(gy - 1) * stride + gx] + 1) >> 1;
    return a ? tc[gy * stride + gx - 1] : b ? tc[(gy - 1) * stride + gx] : 0;
}

static int cbp_luma(const MB *m) {
    int c = 0;
    if (m->kind == 0) {
        for (int b = 0; b < 16; b++)
            for (int k = 1; k < 16; k++)
                if (m->luma[b][k]) return 15;
        return 0;
    }
    for (int b8 = 0; b8 < 4; b8++)
        for (int b = 4 * b8; b < 4 * b8 + 4; b++)
            for (int k = 0; k < 16; k++)
                if (m->luma[b][k]) { c |= 1 << b8; b = 4 * b8 + 4; break; }
    return c;
}

static int cbp_chroma(const MB *m) {
    for (int c = 0; c < 2; c++)
        for (int b = 0; b < 4; b++)
            for (int k = 1; k < 16; k++)
                if (m->cac[c][b][k]) return 2;
    for (int c = 0; c < 2; c++)
        for (int b = 0; b < 4; b++)
            if (m->cdc[c][b]) return 1;
    return 0;
}

static int pred_mode(const Ctx *x, int gx, int gy) {
    if (gx == 0 || gy == 0) return 2;
    int W4 = 4 * x->mbw, a = x->i4m[gy * W4 + gx - 1], b = x->i4m[(gy - 1) * W4 + gx];
    return a < b ? a : b;
}

static inline int se_bits(int v) { return ue_bits(v > 0 ? 2 * v - 1 : -2 * v); }

static int available(const Ctx *x, int mbx, int mby, int cx, int cy) {
    return mbx >= 0 && mbx < x->mbw && mby >= 0 && mby < x->mbh && (mby < cy || (mby == cy && mbx < cx));
}

static int median3(int a, int b, int c) {
    int lo = a < b ? a : b, hi = a < b ? b : a;
    return c < lo ? lo : c > hi ? hi : c;
}

/* the 16x16 partition's vector prediction (syntax.mv_prediction, 8.4.1.3) */
static void mv_pred(const Ctx *x, int mbx, int mby, int *out) {
    int nx[3] = {mbx - 1, mbx, mbx + 1}, ny[3] = {mby, mby - 1, mby - 1}, av[3], ref[3], mv[3][2];
    for (int k = 0; k < 3; k++) {
        if (k == 2 && !available(x, nx[2], ny[2], mbx, mby)) nx[2] = mbx - 1, ny[2] = mby - 1;
        av[k] = available(x, nx[k], ny[k], mbx, mby);
        int n = ny[k] * x->mbw + nx[k];
        ref[k] = av[k] ? x->refidx[n] : -1;
        mv[k][0] = av[k] ? x->mv[2 * n] : 0, mv[k][1] = av[k] ? x->mv[2 * n + 1] : 0;
    }
    if (!av[1] && !av[2] && av[0])
        for (int k = 1; k < 3; k++) ref[k] = ref[0], mv[k][0] = mv[0][0], mv[k][1] = mv[0][1];
    int matches = (ref[0] == 0) + (ref[1] == 0) + (ref[2] == 0);
    if (matches == 1) {
        int k = ref[0] == 0 ? 0 : ref[1] == 0 ? 1 : 2;
        out[0] = mv[k][0], out[1] = mv[k][1];
        return;
    }
    out[0] = median3(mv[0][0], mv[1][0], mv[2][0]), out[1] = median3(mv[0][1], mv[1][1], mv[2][1]);
}

static void skip_mv(const Ctx *x, int mbx, int mby, int *out) { /* P_Skip's vector (8.4.1.1) */
    int nx[2] = {mbx - 1, mbx}, ny[2] = {mby, mby - 1};
    for (int k = 0; k < 2; k++) {
        if (!available(x, nx[k], ny[k], mbx, mby)) { out[0] = out[1] = 0; return; }
        int n = ny[k] * x->mbw + nx[k];
        if (x->refidx[n] == 0 && !x->mv[2 * n] && !x->mv[2 * n + 1]) { out[0] = out[1] = 0; return; }
    }
    mv_pred(x, mbx, mby, out);
}

static void commit_motion(Ctx *x, int mbx, int mby, const MB *m) {
    int n = mby * x->mbw + mbx, v[2] = {0, 0};
    if (m->kind == 3) skip_mv(x, mbx, mby, v);
    else if (m->kind == 2) v[0] = m->mv[0], v[1] = m->mv[1];
    x->refidx[n] = m->kind >= 2 ? 0 : -1;
    x->mv[2 * n] = v[0], x->mv[2 * n + 1] = v[1];
}

/* write_mb's bits for a coded macroblock; updates the counts, modes and motion (syntax.write_mb) */
static int mb_bits(Ctx *x, int mbx, int mby, const MB *m) {
    int W4 = 4 * x->mbw, W2 = 2 * x->mbw, gx0 = 4 * mbx, gy0 = 4 * mby, bits = 0, t;
    int cl = cbp_luma(m), cc = cbp_chroma(m);
    bits += ue_bits(m->kind == 2 ? 0 : (x->p ? 5 : 0) + (m->kind == 1 ? 0 : 1 + m->mode + 4 * cc + 12 * (cl == 15)));
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) x->i4m[(gy0 + i) * W4 + gx0 + j] = 2;
    if (m->kind == 1) {
        for (int b = 0; b < 16; b++) x->i4m[(gy0 + BLKY[b]) * W4 + gx0 + BLKX[b]] = m->i4[b];
        for (int b = 0; b < 16; b++) bits += m->i4[b] == pred_mode(x, gx0 + BLKX[b], gy0 + BLKY[b]) ? 1 : 4;
    }
    if (m->kind <= 1) bits += ue_bits(m->cmode);
    else {
        int p[2];
        mv_pred(x, mbx, mby, p);
        bits += se_bits(m->mv[0] - p[0]) + se_bits(m->mv[1] - p[1]);
    }
    commit_motion(x, mbx, mby, m);
    if (m->kind != 0) bits += ue_bits((m->kind == 1 ? CBP_CODE : CBP_CODE_P)[cl | cc << 4]);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) x->tcl[(gy0 + i) * W4 + gx0 + j] = 0;
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) x->tcc[c * 2 * x->mbh * W2 + (2 * mby + i) * W2 + 2 * mbx + j] = 0;
    if (!(cl || cc || m->kind == 0)) return bits;
    bits += 1; /* mb_qp_delta 0 */
    if (m->kind == 0) bits += block_bits(m->dc, 16, n_c(x->tcl, W4, gx0, gy0), &t);
    for (int b = 0; b < 16; b++)
        if (cl >> (b / 4) & 1) {
            int gx = gx0 + BLKX[b], gy = gy0 + BLKY[b];
            bits += m->kind == 0 ? block_bits(m->luma[b] + 1, 15, n_c(x->tcl, W4, gx, gy), &t)
                                 : block_bits(m->luma[b], 16, n_c(x->tcl, W4, gx, gy), &t);
            x->tcl[gy * W4 + gx] = t;
        }
    if (cc)
        for (int c = 0; c < 2; c++) bits += block_bits(m->cdc[c], 4, -1, &t);
    if (cc == 2)
        for (int c = 0; c < 2; c++) {
            int32_t *tc = x->tcc + c * 2 * x->mbh * W2;
            for (int b = 0; b < 4; b++) {
                int gx = 2 * mbx + b % 2, gy = 2 * mby + b / 2;
                bits += block_bits(m->cac[c][b] + 1, 15, n_c(tc, W2, gx, gy), &t);
                tc[gy * W2 + gx] = t;
            }
        }
    return bits;
}

/* --- prediction ----------------------------------------------------------------------------------------- */
/* top / left / corner of an n x n block at (x0, y0) of a plane of width w; availability as flags */
static void neighbours(const uint8_t *p, int w, int x0, int y0, int n, int *top, int *left, int *corner,
                       int *has_t, int *has_l, int *has_c) {
    *has_t = y0 > 0, *has_l = x0 > 0, *has_c = x0 > 0 && y0 > 0;
    for (int i = 0; i < n; i++) {
        top[i] = *has_t ? p[(y0 - 1) * w + x0 + i] : 0;
        left[i] = *has_l ? p[(y0 + i) * w + x0 - 1] : 0;
    }
    *corner = *has_c ? p[(y0 - 1) * w + x0 - 1] : 0;
}

static void plane_pred(const int *top, const int *left, int corner, int n, int *out) {
    int half = n / 2, hh = 0, vv = 0;
    for (int k = 1; k <= half; k++) {
        int tp = half - 1 + k, tm = half - 1 - k, lp = tp, lm = tm;
        hh += k * (top[tp] - (tm < 0 ? corner : top[tm]));
        vv += k * (left[lp] - (lm < 0 ? corner : left[lm]));
    }
    int a = 16 * (left[n - 1] + top[n - 1]);
    int b = n == 16 ? (5 * hh + 32) >> 6 : (34 * hh + 32) >> 6;
    int c = n == 16 ? (5 * vv + 32) >> 6 : (34 * vv + 32) >> 6;
    for (int y = 0; y < n; y++)
        for (int xx = 0; xx < n; xx++) {
            int v = (a + b * (xx - (half - 1)) + c * (y - (half - 1)) + 16) >> 5;
            out[y * n + xx] = v < 0 ? 0 : v > 255 ? 255 : v;
        }
}

static void i16_pred(const int *top, const int *left, int corner, int ht, int hl, int mode, int *out) {
    if (mode == 0) { for (int i = 0; i < 256; i++) out[i] = top[i % 16]; return; }
    if (mode == 1) { for (int i = 0; i < 256; i++) out[i] = left[i / 16]; return; }
    if (mode == 3) { plane_pred(top, left, corner, 16, out); return; }
    int st = 0, sl = 0, v;
    for (int i = 0; i < 16; i++) st += top[i], sl += left[i];
    v = ht && hl ? (st + sl + 16) >> 5 : hl ? (sl + 8) >> 4 : ht ? (st + 8) >> 4 : 128;
    for (int i = 0; i < 256; i++) out[i] = v;
}

static void chroma_pred(const int *top, const int *left, int corner, int ht, int hl, int mode, int *out) {
    if (mode == 2) { for (int i = 0; i < 64; i++) out[i] = top[i % 8]; return; }
    if (mode == 1) { for (int i = 0; i < 64; i++) out[i] = left[i / 8]; return; }
    if (mode == 3) { plane_pred(top, left, corner, 8, out); return; }
    for (int by = 0; by < 2; by++)
        for (int bx = 0; bx < 2; bx++) {
            int st = 0, sl = 0, v;
            for (int i = 0; i < 4; i++) st += top[4 * bx + i], sl += left[4 * by + i];
            int a_t = ht, a_l = hl; /* which neighbours this block prefers (8.3.4.1-3) */
            if (bx == by) v = a_t && a_l ? (st + sl + 4) >> 3 : a_l ? (sl + 2) >> 2 : a_t ? (st + 2) >> 2 : 128;
            else if (bx == 1) v = a_t ? (st + 2) >> 2 : a_l ? (sl + 2) >> 2 : 128;
            else v = a_l ? (sl + 2) >> 2 : a_t ? (st + 2) >> 2 : 128;
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) out[(4 * by + i) * 8 + 4 * bx + j] = v;
        }
}

/* the 13 neighbours of a 4x4 luma block (syntax.i4_neighbours) */
static void i4_nb(const Ctx *x, int mbx, int mby, int blk, int *e, int *ht, int *hl, int *hc) {
    int bx = BLKX[blk], by = BLKY[blk], X = 16 * mbx + 4 * bx, Y = 16 * mby + 4 * by, W = x->W;
    int left = bx > 0 || mbx > 0, top = by > 0 || mby > 0, corner = left && top, tr;
    if (by == 0) tr = mby > 0 && (bx < 3 || mbx + 1 < x->mbw);
    else tr = bx < 3 && BLKAT[by - 1][bx + 1] < blk;
    for (int i = 0; i < 13; i++) e[i] = 128;
    if (left)
        for (int i = 0; i < 4; i++) e[3 - i] = x->ry[(Y + i) * W + X - 1];
    if (corner) e[4] = x->ry[(Y - 1) * W + X - 1];
    if (top) {
        for (int i = 0; i < 4; i++) e[5 + i] = x->ry[(Y - 1) * W + X + i];
        for (int i = 0; i < 4; i++) e[9 + i] = tr ? x->ry[(Y - 1) * W + X + 4 + i] : x->ry[(Y - 1) * W + X + 3];
    }
    *ht = top, *hl = left, *hc = corner;
}

static const char *I4_NEEDS[9] = {"t", "l", "", "t", "tlc", "tlc", "tlc", "t", "l"};

static int needs_ok(const char *need, int t, int l, int c) {
    for (; *need; need++)
        if ((*need == 't' && !t) || (*need == 'l' && !l) || (*need == 'c' && !c)) return 0;
    return 1;
}

static void i4_pred(const int *e, int mode, int ht, int hl, int *out) {
    if (mode == 2) {
        int st = e[5] + e[6] + e[7] + e[8], sl = e[0] + e[1] + e[2] + e[3];
        int v = ht && hl ? (st + sl + 4) >> 3 : hl ? (sl + 2) >> 2 : ht ? (st + 2) >> 2 : 128;
        for (int i = 0; i < 16; i++) out[i] = v;
        return;
    }
    for (int i = 0; i < 16; i++) {
        const int *t = TAP_IDX[mode][i], *w = TAP_W[mode][i];
        out[i] = (w[0] * e[t[0]] + w[1] * e[t[1]] + w[2] * e[t[2]] + 2) >> 2;
    }
}

/* --- candidates --------------------------------------------------------------------------------------- */
static void chroma_mc(const uint8_t *ref, int cw, int chh, int x0, int y0, const int *mv, int *out);

/* 4x4 chroma block b (raster in the 8x8) of a macroblock: source less prediction */
static void chroma_residual(const uint8_t *src, int cw, int mbx, int mby, const int *pred, int b, int *r) {
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            int yy = 4 * (b / 2) + i, xx = 4 * (b % 2) + j;
            r[4 * i + j] = src[(8 * mby + yy) * cw + 8 * mbx + xx] - pred[yy * 8 + xx];
        }
}

/* the chroma levels of a prediction: intra (mode) or inter (the vector m->mv) */
static void chroma_levels(Ctx *x, int mbx, int mby, int mode, MB *m, int intra) {
    int cw = x->W / 2, scales[16];
    block_scales(x->qpc, scales);
    int qbits = 15 + x->qpc / 6, div = intra ? 3 : 6;
    int64_t f = ((int64_t)1 << qbits) / div, fdc = ((int64_t)1 << (qbits + 1)) / div;
    for (int c = 0; c < 2; c++) {
        const uint8_t *src = c ? x->scr : x->scb;
        const uint8_t *rec = c ? x->rcr : x->rcb;
        int top[8], left[8], corner, ht, hl, hc, pred[64], w[4][16];
        if (intra) {
            neighbours(rec, cw, 8 * mbx, 8 * mby, 8, top, left, &corner, &ht, &hl, &hc);
            chroma_pred(top, left, corner, ht, hl, mode, pred);
        } else
            chroma_mc(c ? x->fcr : x->fcb, cw, 8 * x->mbh, 8 * mbx, 8 * mby, m->mv, pred);
        for (int b = 0; b < 4; b++) {
            int r[16];
            chroma_residual(src, cw, mbx, mby, pred, b, r);
            fwd4(r, w[b]);
        }
        int dcw[4] = {w[0][0], w[1][0], w[2][0], w[3][0]};
        int y4[4] = {dcw[0] + dcw[1] + dcw[2] + dcw[3], dcw[0] - dcw[1] + dcw[2] - dcw[3],
                     dcw[0] + dcw[1] - dcw[2] - dcw[3], dcw[0] - dcw[1] - dcw[2] + dcw[3]};
        for (int k = 0; k < 4; k++) m->cdc[c][k] = quant(y4[k], QMF[x->qpc % 6][0], qbits + 1, fdc);
        fit(m->cdc[c], 4, NULL, chroma_dc_budget(x->qpc));
        int sdc[4];
        chroma_dc_inverse(m->cdc[c], x->qpc, sdc);
        for (int b = 0; b < 4; b++) {
            m->cac[c][b][0] = 0;
            for (int k = 1; k < 16; k++) m->cac[c][b][k] = quant(w[b][ZZ[k]], QMF[x->qpc % 6][ZZ[k]], qbits, f);
            fit(m->cac[c][b], 16, scales, BUDGET - iabs(sdc[b]));
        }
    }
}

static int chroma_mode(Ctx *x, int mbx, int mby) {
    int cw = x->W / 2, best = -1, best_cost = 0;
    for (int mode = 0; mode < 4; mode++) {
        int cost = 0, ok = 1;
        for (int c = 0; c < 2 && ok; c++) {
            const uint8_t *src = c ? x->scr : x->scb;
            const uint8_t *rec = c ? x->rcr : x->rcb;
            int top[8], left[8], corner, ht, hl, hc, pred[64];
            neighbours(rec, cw, 8 * mbx, 8 * mby, 8, top, left, &corner, &ht, &hl, &hc);
            const char *need = mode == 1 ? "l" : mode == 2 ? "t" : mode == 3 ? "tlc" : "";
            if (!needs_ok(need, ht, hl, hc)) { ok = 0; break; }
            chroma_pred(top, left, corner, ht, hl, mode, pred);
            for (int b = 0; b < 4; b++) {
                int r[16];
                chroma_residual(src, cw, mbx, mby, pred, b, r);
                cost += satd4(r);
            }
        }
        if (ok && (best < 0 || cost < best_cost)) best = mode, best_cost = cost;
    }
    return best;
}

/* luma motion compensation: integer vectors, coordinates clamped (the picture's edges repeat) */
static void luma_mc(const Ctx *x, int mbx, int mby, const int *mv, int *out) {
    int W = x->W, H = 16 * x->mbh;
    for (int i = 0; i < 16; i++) {
        int yy = 16 * mby + i + (mv[1] >> 2);
        yy = yy < 0 ? 0 : yy > H - 1 ? H - 1 : yy;
        for (int j = 0; j < 16; j++) {
            int xx = 16 * mbx + j + (mv[0] >> 2);
            xx = xx < 0 ? 0 : xx > W - 1 ? W - 1 : xx;
            out[16 * i + j] = x->fy[yy * W + xx];
        }
    }
}

static inline int cclamp(int v, int hi) { return v < 0 ? 0 : v > hi ? hi : v; }

/* 4:2:0 chroma: the luma vector in eighths of a chroma sample, bilinear (8.4.2.2.2) */
static void chroma_mc(const uint8_t *ref, int cw, int chh, int x0, int y0, const int *mv, int *out) {
    int xf = mv[0] & 7, yf = mv[1] & 7;
    for (int i = 0; i < 8; i++) {
        int y = y0 + i + (mv[1] >> 3), ya = cclamp(y, chh - 1), yb = cclamp(y + 1, chh - 1);
        for (int j = 0; j < 8; j++) {
            int xx = x0 + j + (mv[0] >> 3), xa = cclamp(xx, cw - 1), xb = cclamp(xx + 1, cw - 1);
            out[8 * i + j] = ((8 - xf) * (8 - yf) * ref[ya * cw + xa] + xf * (8 - yf) * ref[ya * cw + xb] +
                              (8 - xf) * yf * ref[yb * cw + xa] + xf * yf * ref[yb * cw + xb] + 32) >> 6;
        }
    }
}

static void recon_chroma(Ctx *x, int mbx, int mby, const MB *m) {
    int cw = x->W / 2;
    int v[2] = {m->mv[0], m->mv[1]};
    if (m->kind == 3) skip_mv(x, mbx, mby, v);
    for (int c = 0; c < 2; c++) {
        uint8_t *rec = c ? x->rcr : x->rcb;
        int top[8], left[8], corner, ht, hl, hc, pred[64], sdc[4];
        if (m->kind <= 1) {
            neighbours(rec, cw, 8 * mbx, 8 * mby, 8, top, left, &corner, &ht, &hl, &hc);
            chroma_pred(top, left, corner, ht, hl, m->cmode, pred);
        } else
            chroma_mc(c ? x->fcr : x->fcb, cw, 8 * x->mbh, 8 * mbx, 8 * mby, v, pred);
        chroma_dc_inverse(m->cdc[c], x->qpc, sdc);
        for (int b = 0; b < 4; b++) {
            int res[16];
            if (m->kind == 3) memset(res, 0, sizeof res);
            else residual(m->cac[c][b], x->qpc, 1, sdc[b], res);
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) {
                    int yy = 4 * (b / 2) + i, xx = 4 * (b % 2) + j;
                    rec[(8 * mby + yy) * cw + 8 * mbx + xx] = clip255(pred[yy * 8 + xx] + res[4 * i + j]);
                }
        }
    }
}

static void i16_candidate(Ctx *x, int mbx, int mby, MB *m) {
    int top[16], left[16], corner, ht, hl, hc, pred[256], best = -1, best_cost = 0, W = x->W;
    neighbours(x->ry, W, 16 * mbx, 16 * mby, 16, top, left, &corner, &ht, &hl, &hc);
    static const char *NEEDS[4] = {"t", "l", "", "tlc"};
    int bestpred[256];
    for (int mode = 0; mode < 4; mode++) {
        if (!needs_ok(NEEDS[mode], ht, hl, hc)) continue;
        i16_pred(top, left, corner, ht, hl, mode, pred);
        int cost = 0;
        for (int b = 0; b < 16; b++) {
            int r[16];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) {
                    int yy = 4 * (b / 4) + i, xx = 4 * (b % 4) + j;
                    r[4 * i + j] = x->sy[(16 * mby + yy) * W + 16 * mbx + xx] - pred[yy * 16 + xx];
                }
            cost += satd4(r);
        }
        if (best < 0 || cost < best_cost) best = mode, best_cost = cost, memcpy(bestpred, pred, sizeof pred);
    }
    m->kind = 0, m->mode = best;
    int w[16][16]; /* raster block order: row * 4 + column */
    for (int b = 0; b < 16; b++) {
        int r[16];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                int yy = 4 * (b / 4) + i, xx = 4 * (b % 4) + j;
                r[4 * i + j] = x->sy[(16 * mby + yy) * W + 16 * mbx + xx] - bestpred[yy * 16 + xx];
            }
        fwd4(r, w[b]);
    }
    static const int H[4][4] = {{1, 1, 1, 1}, {1, 1, -1, -1}, {1, -1, -1, 1}, {1, -1, 1, -1}};
    int t[16], dc[16];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            int v = 0;
            for (int k = 0; k < 4; k++) v += H[i][k] * w[4 * k + j][0];
            t[4 * i + j] = v;
        }
    int qbits = 15 + x->qp / 6;
    int64_t f = ((int64_t)1 << qbits) / 3, fdc = ((int64_t)1 << (qbits + 1)) / 3;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            int v = 0;
            for (int k = 0; k < 4; k++) v += t[4 * i + k] * H[k][j];
            dc[4 * i + j] = quant(v >> 1, QMF[x->qp % 6][0], qbits + 1, fdc);
        }
    int32_t dcfit[16];
    for (int k = 0; k < 16; k++) dcfit[k] = dc[k]; /* raster, fitted as a whole */
    fit(dcfit, 16, NULL, luma_dc_budget(x->qp));
    for (int k = 0; k < 16; k++) m->dc[k] = dcfit[ZZ[k]];
    int sdc[16], scales[16];
    luma_dc_inverse(m->dc, x->qp, sdc);
    block_scales(x->qp, scales);
    for (int b = 0; b < 16; b++) {
        int rb = BLKY[b] * 4 + BLKX[b];
        m->luma[b][0] = 0;
        for (int k = 1; k < 16; k++) m->luma[b][k] = quant(w[rb][ZZ[k]], QMF[x->qp % 6][ZZ[k]], qbits, f);
        fit(m->luma[b], 16, scales, BUDGET - iabs(sdc[rb]));
    }
}

static void recon_i16(Ctx *x, int mbx, int mby, const MB *m) {
    int top[16], left[16], corner, ht, hl, hc, pred[256], sdc[16], W = x->W;
    neighbours(x->ry, W, 16 * mbx, 16 * mby, 16, top, left, &corner, &ht, &hl, &hc);
    i16_pred(top, left, corner, ht, hl, m->mode, pred);
    luma_dc_inverse(m->dc, x->qp, sdc);
    for (int b = 0; b < 16; b++) {
        int res[16], bx = BLKX[b], by = BLKY[b];
        int32_t lv[16];
        memcpy(lv, m->luma[b], sizeof lv);
        lv[0] = 0;
        residual(lv, x->qp, 1, sdc[by * 4 + bx], res);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                int yy = 4 * by + i, xx = 4 * bx + j;
                x->ry[(16 * mby + yy) * W + 16 * mbx + xx] = clip255(pred[yy * 16 + xx] + res[4 * i + j]);
            }
    }
}

static void i4_candidate(Ctx *x, int mbx, int mby, MB *m) {
    int W = x->W, W4 = 4 * x->mbw, scales[16], qbits = 15 + x->qp / 6;
    int64_t f = ((int64_t)1 << qbits) / 3;
    block_scales(x->qp, scales);
    m->kind = 1;
    for (int blk = 0; blk < 16; blk++) {
        int e[13], ht, hl, hc, gx = 4 * mbx + BLKX[blk], gy = 4 * mby + BLKY[blk], X = 4 * gx, Y = 4 * gy;
        i4_nb(x, mbx, mby, blk, e, &ht, &hl, &hc);
        int pm = pred_mode(x, gx, gy), best = -1, s[16];
        double best_cost = 0;
        int preds[9][16];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) s[4 * i + j] = x->sy[(Y + i) * W + X + j];
        for (int mode = 0; mode < 9; mode++) {
            if (!needs_ok(I4_NEEDS[mode], ht, hl, hc)) continue;
            int r[16];
            i4_pred(e, mode, ht, hl, preds[mode]);
            for (int i = 0; i < 16; i++) r[i] = s[i] - preds[mode][i];
            double cost = (double)satd4(r) + x->lam_sad * (mode == pm ? 1 : 4);
            if (best < 0 || cost < best_cost) best = mode, best_cost = cost;
        }
        int r[16], w[16], res[16];
        for (int i = 0; i < 16; i++) r[i] = s[i] - preds[best][i];
        fwd4(r, w);
        for (int k = 0; k < 16; k++) m->luma[blk][k] = quant(w[ZZ[k]], QMF[x->qp % 6][ZZ[k]], qbits, f);
        fit(m->luma[blk], 16, scales, BUDGET);
        m->i4[blk] = best;
        x->i4m[gy * W4 + gx] = best;
        residual(m->luma[blk], x->qp, 0, 0, res);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) x->ry[(Y + i) * W + X + j] = clip255(preds[best][4 * i + j] + res[4 * i + j]);
    }
}

/* P_L0_16x16: a full search of whole-sample vectors within +-search, SAD + lambda * the vector's bits */
static void p16_candidate(Ctx *x, int mbx, int mby, MB *m) {
    int r = x->search, W = x->W, H = 16 * x->mbh, p[2], best_dx = 0, best_dy = 0;
    double best = 0;
    mv_pred(x, mbx, mby, p);
    for (int dy = -r; dy <= r; dy++)
        for (int dx = -r; dx <= r; dx++) {
            int sad = 0;
            for (int i = 0; i < 16; i++) {
                int yy = cclamp(16 * mby + i + dy, H - 1);
                const uint8_t *src = x->sy + (16 * mby + i) * W + 16 * mbx, *ref = x->fy + yy * W;
                for (int j = 0; j < 16; j++) sad += iabs(src[j] - ref[cclamp(16 * mbx + j + dx, W - 1)]);
            }
            double cost = sad + x->lam_sad * (se_bits(4 * dx - p[0]) + se_bits(4 * dy - p[1]));
            if ((dy == -r && dx == -r) || cost < best) best = cost, best_dx = dx, best_dy = dy;
        }
    m->kind = 2, m->mv[0] = 4 * best_dx, m->mv[1] = 4 * best_dy;
    int pred[256], scales[16], qbits = 15 + x->qp / 6;
    int64_t f = ((int64_t)1 << qbits) / 6;
    luma_mc(x, mbx, mby, m->mv, pred);
    block_scales(x->qp, scales);
    for (int b = 0; b < 16; b++) {
        int res[16], w[16], bx = BLKX[b], by = BLKY[b];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                res[4 * i + j] = x->sy[(16 * mby + 4 * by + i) * W + 16 * mbx + 4 * bx + j] - pred[(4 * by + i) * 16 + 4 * bx + j];
        fwd4(res, w);
        for (int k = 0; k < 16; k++) m->luma[b][k] = quant(w[ZZ[k]], QMF[x->qp % 6][ZZ[k]], qbits, f);
        fit(m->luma[b], 16, scales, BUDGET);
    }
    chroma_levels(x, mbx, mby, 0, m, 0);
}

static void recon_inter_luma(Ctx *x, int mbx, int mby, const MB *m) {
    int v[2] = {m->mv[0], m->mv[1]}, pred[256], W = x->W;
    if (m->kind == 3) skip_mv(x, mbx, mby, v);
    luma_mc(x, mbx, mby, v, pred);
    for (int b = 0; b < 16; b++) {
        int res[16], bx = BLKX[b], by = BLKY[b];
        if (m->kind == 3) memset(res, 0, sizeof res);
        else residual(m->luma[b], x->qp, 0, 0, res);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                x->ry[(16 * mby + 4 * by + i) * W + 16 * mbx + 4 * bx + j] = clip255(pred[(4 * by + i) * 16 + 4 * bx + j] + res[4 * i + j]);
    }
}

/* --- a macroblock's state, saved and restored around the trials ---------------------------------------- */
typedef struct {
    uint8_t y[256], cb[64], cr[64];
    int32_t tcl[16], tcc[8], i4m[16], refidx, mv[2];
} Saved;

static void save(const Ctx *x, int mbx, int mby, Saved *s) {
    int W = x->W, cw = W / 2, W4 = 4 * x->mbw, W2 = 2 * x->mbw, plane = 2 * x->mbh * W2;
    for (int i = 0; i < 16; i++) memcpy(s->y + 16 * i, x->ry + (16 * mby + i) * W + 16 * mbx, 16);
    for (int i = 0; i < 8; i++) {
        memcpy(s->cb + 8 * i, x->rcb + (8 * mby + i) * cw + 8 * mbx, 8);
        memcpy(s->cr + 8 * i, x->rcr + (8 * mby + i) * cw + 8 * mbx, 8);
    }
    for (int i = 0; i < 4; i++) {
        memcpy(s->tcl + 4 * i, x->tcl + (4 * mby + i) * W4 + 4 * mbx, 16);
        memcpy(s->i4m + 4 * i, x->i4m + (4 * mby + i) * W4 + 4 * mbx, 16);
    }
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 2; i++) memcpy(s->tcc + 4 * c + 2 * i, x->tcc + c * plane + (2 * mby + i) * W2 + 2 * mbx, 8);
    int n = mby * x->mbw + mbx;
    s->refidx = x->refidx[n], s->mv[0] = x->mv[2 * n], s->mv[1] = x->mv[2 * n + 1];
}

static void restore(Ctx *x, int mbx, int mby, const Saved *s) {
    int W = x->W, cw = W / 2, W4 = 4 * x->mbw, W2 = 2 * x->mbw, plane = 2 * x->mbh * W2;
    for (int i = 0; i < 16; i++) memcpy(x->ry + (16 * mby + i) * W + 16 * mbx, s->y + 16 * i, 16);
    for (int i = 0; i < 8; i++) {
        memcpy(x->rcb + (8 * mby + i) * cw + 8 * mbx, s->cb + 8 * i, 8);
        memcpy(x->rcr + (8 * mby + i) * cw + 8 * mbx, s->cr + 8 * i, 8);
    }
    for (int i = 0; i < 4; i++) {
        memcpy(x->tcl + (4 * mby + i) * W4 + 4 * mbx, s->tcl + 4 * i, 16);
        memcpy(x->i4m + (4 * mby + i) * W4 + 4 * mbx, s->i4m + 4 * i, 16);
    }
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 2; i++) memcpy(x->tcc + c * plane + (2 * mby + i) * W2 + 2 * mbx, s->tcc + 4 * c + 2 * i, 8);
    int n = mby * x->mbw + mbx;
    x->refidx[n] = s->refidx, x->mv[2 * n] = s->mv[0], x->mv[2 * n + 1] = s->mv[1];
}

static double ssd(const Ctx *x, int mbx, int mby) {
    int W = x->W, cw = W / 2;
    double s = 0;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            int d = x->ry[(16 * mby + i) * W + 16 * mbx + j] - x->sy[(16 * mby + i) * W + 16 * mbx + j];
            s += d * d;
        }
    for (int c = 0; c < 2; c++) {
        double p = 0; /* a plane's sum first, as the reference adds plane sums */
        const uint8_t *r = c ? x->rcr : x->rcb, *q = c ? x->scr : x->scb;
        for (int i = 0; i < 8; i++)
            for (int j = 0; j < 8; j++) {
                int d = r[(8 * mby + i) * cw + 8 * mbx + j] - q[(8 * mby + i) * cw + 8 * mbx + j];
                p += d * d;
            }
        s += p;
    }
    return s;
}

/* a skipped macroblock's contexts (syntax.clear_mb): no coefficients, DC for mode prediction, its motion */
static void clear_mb(Ctx *x, int mbx, int mby, const MB *m) {
    int W4 = 4 * x->mbw, W2 = 2 * x->mbw, plane = 2 * x->mbh * W2;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) x->tcl[(4 * mby + i) * W4 + 4 * mbx + j] = 0, x->i4m[(4 * mby + i) * W4 + 4 * mbx + j] = 2;
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) x->tcc[c * plane + (2 * mby + i) * W2 + 2 * mbx + j] = 0;
    commit_motion(x, mbx, mby, m);
}

static void decide(Ctx *x, int mbx, int mby, MB *out) {
    Saved before, after[4];
    MB cand[4];
    double cost[4];
    int n = x->p ? 4 : 2;
    save(x, mbx, mby, &before);
    int cmode = chroma_mode(x, mbx, mby);
    MB chroma;
    chroma.cmode = cmode;
    chroma_levels(x, mbx, mby, cmode, &chroma, 1);
    for (int k = 0; k < n; k++) {
        MB *m = &cand[k];
        memset(m, 0, sizeof *m);
        int bits;
        if (k <= 1) {
            m->cmode = cmode;
            memcpy(m->cdc, chroma.cdc, sizeof chroma.cdc);
            memcpy(m->cac, chroma.cac, sizeof chroma.cac);
            if (k == 0) i16_candidate(x, mbx, mby, m);
            else i4_candidate(x, mbx, mby, m); /* reconstructs its luma as it goes */
            bits = mb_bits(x, mbx, mby, m) + x->p;
            if (k == 0) recon_i16(x, mbx, mby, m);
        } else if (k == 2) {
            m->kind = 3;
            clear_mb(x, mbx, mby, m);
            recon_inter_luma(x, mbx, mby, m);
            bits = 1;
        } else {
            p16_candidate(x, mbx, mby, m);
            bits = mb_bits(x, mbx, mby, m) + 1;
            recon_inter_luma(x, mbx, mby, m);
        }
        recon_chroma(x, mbx, mby, m);
        commit_motion(x, mbx, mby, m);
        cost[k] = ssd(x, mbx, mby) + x->lam * bits;
        save(x, mbx, mby, &after[k]);
        restore(x, mbx, mby, &before);
    }
    int k = 0;
    for (int j = 1; j < n; j++)
        if (cost[j] < cost[k]) k = j;
    restore(x, mbx, mby, &after[k]);
    *out = cand[k];
}

/* encode(sy, scb, scr, ry, rcb, rcr, fy, fcb, fcr, tcl, tcc, i4m, refidx, mv, kinds, modes, cmodes, i4, dc, luma,
 *        cdc, cac, mvs, mbw, mbh, qp, lam, lam_sad, p, search): one picture, I (p = 0; the reference planes
 *        unused) or P (predicted from fy, fcb, fcr) */
static PyObject *encode(PyObject *self, PyObject *args) {
    Py_buffer b[23];
    int mbw, mbh, qp, p, search;
    double lam, lam_sad;
    if (!ready) {
        PyErr_SetString(PyExc_RuntimeError, "_avcc.init was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*y*y*w*w*w*y*y*y*w*w*w*w*w*w*w*w*w*w*w*w*w*w*iiiddii", &b[0], &b[1], &b[2], &b[3],
                          &b[4], &b[5], &b[6], &b[7], &b[8], &b[9], &b[10], &b[11], &b[12], &b[13], &b[14], &b[15],
                          &b[16], &b[17], &b[18], &b[19], &b[20], &b[21], &b[22], &mbw, &mbh, &qp, &lam, &lam_sad, &p,
                          &search))
        return NULL;
    Ctx x = {mbw, mbh, 16 * mbw, qp, CHROMA_QP[qp], lam, lam_sad, b[0].buf, b[1].buf, b[2].buf, b[3].buf, b[4].buf,
             b[5].buf, b[9].buf, b[10].buf, b[11].buf, p, search, b[6].buf, b[7].buf, b[8].buf, b[12].buf, b[13].buf};
    int32_t *kinds = b[14].buf, *modes = b[15].buf, *cmodes = b[16].buf, *i4 = b[17].buf, *dc = b[18].buf,
            *luma = b[19].buf, *cdc = b[20].buf, *cac = b[21].buf, *mvs = b[22].buf;
    Py_BEGIN_ALLOW_THREADS
    MB m;
    for (int mby = 0; mby < mbh; mby++)
        for (int mbx = 0; mbx < mbw; mbx++) {
            int n = mby * mbw + mbx;
            decide(&x, mbx, mby, &m);
            kinds[n] = m.kind, modes[n] = m.mode, cmodes[n] = m.cmode, mvs[2 * n] = m.mv[0], mvs[2 * n + 1] = m.mv[1];
            memcpy(i4 + 16 * n, m.i4, sizeof m.i4);
            memcpy(dc + 16 * n, m.dc, sizeof m.dc);
            memcpy(luma + 256 * n, m.luma, sizeof m.luma);
            memcpy(cdc + 8 * n, m.cdc, sizeof m.cdc);
            memcpy(cac + 128 * n, m.cac, sizeof m.cac);
        }
    Py_END_ALLOW_THREADS
    for (int i = 0; i < 23; i++) PyBuffer_Release(&b[i]);
    Py_RETURN_NONE;
}

/* --- syntax -> tokens (codec._Tokens.of, for I pictures) --------------------------------------------------- */
static int32_t *block_tokens(int32_t *o, const int32_t *lv, int n, int start, const int32_t *off) {
    int last = start - 1;
    for (int k = start; k < n; k++)
        if (lv[k]) {
            *o++ = off[6] + k - last - 1;
            *o++ = off[7] + (lv[k] < 0 ? lv[k] + MAX_LEVEL : lv[k] + MAX_LEVEL - 1);
            last = k;
        }
    *o++ = off[8];
    return o;
}

/* tokens(kinds, modes, cmodes, i4, dc, luma, cdc, cac, mvs, offsets, out) -> the number of tokens written;
 * offsets: the first id of mb_type, i16_mode, i4_mode, chroma_mode, mv, cbp, run, level, eob; the search range */
static PyObject *tokens(PyObject *self, PyObject *args) {
    Py_buffer b[11];
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*y*w*", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6], &b[7],
                          &b[8], &b[9], &b[10]))
        return NULL;
    const int32_t *kinds = b[0].buf, *modes = b[1].buf, *cmodes = b[2].buf, *i4 = b[3].buf, *dc = b[4].buf,
                  *luma = b[5].buf, *cdc = b[6].buf, *cac = b[7].buf, *mvs = b[8].buf, *off = b[9].buf;
    int32_t *o = b[10].buf, *start = o;
    Py_ssize_t n = b[0].len / (Py_ssize_t)sizeof(int32_t), cap = b[10].len / (Py_ssize_t)sizeof(int32_t);
    int too_small = cap < n * (19 + 33 + 16 * 33 + 2 * 9 + 8 * 31);
    if (!too_small)
        for (Py_ssize_t i = 0; i < n; i++) {
            MB m;
            m.kind = kinds[i];
            memcpy(m.luma, luma + 256 * i, sizeof m.luma);
            memcpy(m.cdc, cdc + 8 * i, sizeof m.cdc);
            memcpy(m.cac, cac + 128 * i, sizeof m.cac);
            int cl = cbp_luma(&m), cc = cbp_chroma(&m);
            *o++ = off[0] + m.kind;
            if (m.kind == 3) continue;
            if (m.kind == 0) *o++ = off[1] + modes[i];
            else if (m.kind == 1)
                for (int k = 0; k < 16; k++) *o++ = off[2] + i4[16 * i + k];
            if (m.kind <= 1) *o++ = off[3] + cmodes[i];
            else {
                *o++ = off[4] + mvs[2 * i] / 4 + off[9];
                *o++ = off[4] + mvs[2 * i + 1] / 4 + off[9];
            }
            *o++ = off[5] + (cl | cc << 4);
            if (m.kind == 0) o = block_tokens(o, dc + 16 * i, 16, 0, off);
            for (int blk = 0; blk < 16; blk++)
                if (cl >> (blk / 4) & 1) o = block_tokens(o, m.luma[blk], 16, m.kind == 0 ? 1 : 0, off);
            if (cc)
                for (int c = 0; c < 2; c++) o = block_tokens(o, m.cdc[c], 4, 0, off);
            if (cc == 2)
                for (int c = 0; c < 2; c++)
                    for (int k = 0; k < 4; k++) o = block_tokens(o, m.cac[c][k], 16, 1, off);
        }
    for (int i = 0; i < 11; i++) PyBuffer_Release(&b[i]);
    if (too_small) {
        PyErr_SetString(PyExc_ValueError, "_avcc.tokens: the output array is too small");
        return NULL;
    }
    return PyLong_FromSsize_t(o - start);
}

/* ycbcr(rgb, y, cb, cr, h, w): codec.to_ycbcr in C (BT.601 full range in 16-bit fixed point, chroma the
 * rounded mean of each 2 x 2); h and w even */
static PyObject *ycbcr(PyObject *self, PyObject *args) {
    Py_buffer b[4];
    int h, w;
    if (!PyArg_ParseTuple(args, "y*w*w*w*ii", &b[0], &b[1], &b[2], &b[3], &h, &w)) return NULL;
    const uint8_t *px = b[0].buf;
    uint8_t *y = b[1].buf, *cb = b[2].buf, *cr = b[3].buf;
    int ok = b[0].len >= (Py_ssize_t)3 * h * w && b[1].len >= (Py_ssize_t)h * w && b[2].len >= (Py_ssize_t)h * w / 4 &&
             b[3].len >= (Py_ssize_t)h * w / 4;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        for (int i = 0; i < h; i += 2)
            for (int j = 0; j < w; j += 2) {
                int sb = 0, sr = 0;
                for (int di = 0; di < 2; di++)
                    for (int dj = 0; dj < 2; dj++) {
                        const uint8_t *p = px + 3 * ((i + di) * w + j + dj);
                        int r = p[0], g = p[1], bl = p[2];
                        int yy = (19595 * r + 38470 * g + 7471 * bl + (1 << 15)) >> 16;
                        y[(i + di) * w + j + dj] = clip255(yy);
                        sb += clip255((-11059 * r - 21709 * g + 32768 * bl + (128 << 16) + (1 << 15) - 1) >> 16);
                        sr += clip255((32768 * r - 27439 * g - 5329 * bl + (128 << 16) + (1 << 15) - 1) >> 16);
                    }
                cb[(i / 2) * (w / 2) + j / 2] = (uint8_t)((sb + 2) >> 2);
                cr[(i / 2) * (w / 2) + j / 2] = (uint8_t)((sr + 2) >> 2);
            }
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < 4; i++) PyBuffer_Release(&b[i]);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "_avcc.ycbcr: buffers smaller than the picture");
        return NULL;
    }
    Py_RETURN_NONE;
}

static int copy_table(Py_buffer *src, void *dst, size_t size, const char *name) {
    if ((size_t)src->len != size) {
        PyErr_Format(PyExc_ValueError, "_avcc.init: table %s has %zd bytes, expected %zu", name, src->len, size);
        return 0;
    }
    memcpy(dst, src->buf, size);
    return 1;
}

static PyObject *init(PyObject *self, PyObject *args) {
    Py_buffer t[10];
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*y*", &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], &t[8],
                          &t[9]))
        return NULL;
    int ok = copy_table(&t[0], I4W, sizeof I4W, "i4w") && copy_table(&t[1], CT_LEN, sizeof CT_LEN, "coeff_token") &&
             copy_table(&t[2], TZ_LEN, sizeof TZ_LEN, "total_zeros") &&
             copy_table(&t[3], TZC_LEN, sizeof TZC_LEN, "total_zeros_chroma") &&
             copy_table(&t[4], RB_LEN, sizeof RB_LEN, "run_before") && copy_table(&t[5], CBP_CODE, sizeof CBP_CODE, "cbp") &&
             copy_table(&t[6], ZZ, sizeof ZZ, "zigzag") && copy_table(&t[7], DEQ, sizeof DEQ, "dequant") &&
             copy_table(&t[8], QMF, sizeof QMF, "quant") && copy_table(&t[9], CBP_CODE_P, sizeof CBP_CODE_P, "cbp_inter");
    for (int i = 0; i < 10; i++) PyBuffer_Release(&t[i]);
    if (!ok) return NULL;
    for (int b = 0; b < 16; b++) BLKAT[BLKY[b]][BLKX[b]] = b;
    for (int m = 0; m < 9; m++)
        for (int i = 0; i < 16; i++) {
            int n = 0;
            for (int k = 0; k < 3; k++) TAP_IDX[m][i][k] = 0, TAP_W[m][i][k] = 0;
            for (int k = 0; k < 13; k++)
                if (I4W[m][i][k]) {
                    if (n == 3) {
                        PyErr_SetString(PyExc_ValueError, "_avcc.init: an Intra_4x4 sample with more than 3 taps");
                        return NULL;
                    }
                    TAP_IDX[m][i][n] = k, TAP_W[m][i][n++] = I4W[m][i][k];
                }
        }
    ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS, "the encoder's tables, from vistok.tokenize.avc.tables"},
    {"encode", encode, METH_VARARGS, "a picture's macroblock decisions and reconstruction"},
    {"tokens", tokens, METH_VARARGS, "macroblocks' syntax -> tokens"},
    {"ycbcr", ycbcr, METH_VARARGS, "RGB -> YCbCr 4:2:0 planes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_avcc", "C kernel of vistok's H.264 encoder", -1, methods};

PyMODINIT_FUNC PyInit__avcc(void) { return PyModule_Create(&module); }
