/* vistok._jpegc: the JPEG codec's hot loops in C (the numpy code in dct.py / jpeg.py is the reference).
 *
 * forward:  RGB or grey uint8 pixels -> quantized DCT coefficients, zigzag order, component-major raster
 *           block order (the caller gathers canonical order). Colour conversion, edge replication
 *           (coordinates clamped), box-filter chroma subsampling, separable float DCT, quantization.
 * inverse:  the reverse, nearest-neighbour chroma upsampling, YCbCr -> RGB, clamping.
 * rle_tokens / rle_parse: the rle token layout (see jpeg.py) in one pass each.
 *
 * Only the buffer protocol is used (no numpy headers). All arithmetic is float32 like the numpy path;
 * results can differ from it in the last bit of a product, so a coefficient can land one step apart
 * at an exact rounding tie (measured: under 0.01% of coefficients, never in the token format).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static float A[8]; /* AAN scale factors, see fdct */

/* Per-thread scratch memory, kept between calls: a fresh malloc of the planes on every image costs
 * more in page faults than the transform itself. */
static __thread float *scratch_buf = NULL;
static __thread size_t scratch_cap = 0;

static float *scratch(size_t n) {
    if (n > scratch_cap) {
        float *p = realloc(scratch_buf, n * sizeof(float));
        if (!p) return NULL;
        scratch_buf = p;
        scratch_cap = n;
    }
    return scratch_buf;
}

static const int ZZ[64] = { /* natural index of the k-th zigzag coefficient */
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61,
    54, 47, 55, 62, 63};

/* Round half to even, like numpy.rint, without a libm call: adding and subtracting 1.5 * 2^23 leaves the
 * float rounded to an integer in the default rounding mode (|v| < 2^22; larger quotients are clamped, and
 * are far outside any coefficient's range). */
static inline int32_t round_even(float v) {
    if (v > 4194303.f) v = 4194303.f;
    if (v < -4194303.f) v = -4194303.f;
    float t = v + 12582912.f; /* without -ffast-math the compiler may not fold this pair away */
    return (int32_t)(t - 12582912.f);
}

static void init_dct(void) {
    A[0] = 1.f;
    for (int k = 1; k < 8; k++) A[k] = (float)(cos(k * M_PI / 16.0) * sqrt(2.0));
}

/* The AAN (Arai-Agui-Nakajima) factorization of the 8-point DCT: 5 multiplications per pass; the scale
 * factors it leaves are folded into the quantizer (forward) and dequantizer (inverse): output (u, v) of
 * the 2-D forward pass is F(u, v) * 8 * A[u] * A[v], with A[0] = 1, A[k] = sqrt(2) cos(k pi / 16).
 * Each butterfly runs on 8 lanes at once (8 rows or 8 columns), so the loops vectorize. */

static inline void aan_fwd8(float (*io)[8]) { /* io[k][lane]: input sample k of each lane -> output k */
    for (int l = 0; l < 8; l++) {
        float d0 = io[0][l], d1 = io[1][l], d2 = io[2][l], d3 = io[3][l], d4 = io[4][l], d5 = io[5][l], d6 = io[6][l], d7 = io[7][l];
        float t0 = d0 + d7, t7 = d0 - d7, t1 = d1 + d6, t6 = d1 - d6, t2 = d2 + d5, t5 = d2 - d5, t3 = d3 + d4, t4 = d3 - d4;
        float t10 = t0 + t3, t13 = t0 - t3, t11 = t1 + t2, t12 = t1 - t2;
        io[0][l] = t10 + t11;
        io[4][l] = t10 - t11;
        float z1 = (t12 + t13) * 0.707106781f;
        io[2][l] = t13 + z1;
        io[6][l] = t13 - z1;
        t10 = t4 + t5; t11 = t5 + t6; t12 = t6 + t7;
        float z5 = (t10 - t12) * 0.382683433f, z2 = 0.541196100f * t10 + z5, z4 = 1.306562965f * t12 + z5;
        float z3 = t11 * 0.707106781f, z11 = t7 + z3, z13 = t7 - z3;
        io[5][l] = z13 + z2;
        io[3][l] = z13 - z2;
        io[1][l] = z11 + z4;
        io[7][l] = z11 - z4;
    }
}

static inline void aan_inv8(float (*io)[8]) {
    for (int l = 0; l < 8; l++) {
        float i0 = io[0][l], i1 = io[1][l], i2 = io[2][l], i3 = io[3][l], i4 = io[4][l], i5 = io[5][l], i6 = io[6][l], i7 = io[7][l];
        float t10 = i0 + i4, t11 = i0 - i4, t13 = i2 + i6, t12 = (i2 - i6) * 1.414213562f - t13;
        float t0 = t10 + t13, t3 = t10 - t13, t1 = t11 + t12, t2 = t11 - t12;
        float z13 = i5 + i3, z10 = i5 - i3, z11 = i1 + i7, z12 = i1 - i7;
        float t7 = z11 + z13, t11b = (z11 - z13) * 1.414213562f;
        float z5 = (z10 + z12) * 1.847759065f, t10b = z5 - z12 * 1.082392200f, t12b = z5 - z10 * 2.613125930f;
        float t6 = t12b - t7, t5 = t11b - t6, t4 = t10b - t5;
        io[0][l] = t0 + t7; io[7][l] = t0 - t7;
        io[1][l] = t1 + t6; io[6][l] = t1 - t6;
        io[2][l] = t2 + t5; io[5][l] = t2 - t5;
        io[3][l] = t3 + t4; io[4][l] = t3 - t4;
    }
}

/* b: 8x8 samples row-major [y][x] -> out row-major [u][v], AAN-scaled */
static void fdct(const float *b, float out[64]) {
    float m[8][8];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) m[x][y] = b[y * 8 + x]; /* lanes = rows */
    aan_fwd8(m);                                          /* m[v][y] */
    float n[8][8];
    for (int v = 0; v < 8; v++)
        for (int y = 0; y < 8; y++) n[y][v] = m[v][y];    /* lanes = columns */
    aan_fwd8(n);                                          /* n[u][v] */
    memcpy(out, n, sizeof n);
}

/* in row-major [u][v], AAN-scaled -> out row-major [y][x] */
static void idct(const float *in, float out[64]) {
    float m[8][8];
    memcpy(m, in, sizeof m);                              /* m[u][lane v] */
    aan_inv8(m);                                          /* m[y][v] */
    float n[8][8];
    for (int y = 0; y < 8; y++)
        for (int v = 0; v < 8; v++) n[v][y] = m[y][v];    /* n[v][lane y] */
    aan_inv8(n);                                          /* n[x][y] */
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) out[y * 8 + x] = n[x][y];
}

/* forward(pixels, h, w, ch, hmax, vmax, dims(int32: rows0, cols0, rows1, cols1, ...), qtables(float32, one 64-entry
 * natural-order table per component), out(int32)) */
static PyObject *forward(PyObject *self, PyObject *args) {
    Py_buffer px, dims, qt, out;
    int h, w, ch, hmax, vmax;
    if (!PyArg_ParseTuple(args, "y*iiiiiy*y*w*", &px, &h, &w, &ch, &hmax, &vmax, &dims, &qt, &out)) return NULL;
    const uint8_t *p = px.buf;
    const int32_t *dm = dims.buf;
    const float *q = qt.buf;
    int32_t *o = out.buf;
    int ncomp = ch == 1 ? 1 : 3, ok = 1;
    /* luma-resolution planes padded to whole MCUs by edge replication, as libjpeg does */
    int ph = ((h + 8 * vmax - 1) / (8 * vmax)) * 8 * vmax, pw = ((w + 8 * hmax - 1) / (8 * hmax)) * 8 * hmax;
    Py_BEGIN_ALLOW_THREADS
    float *pl[3] = {NULL, NULL, NULL};
    float *mem = scratch((size_t)ph * pw * ncomp);
    if (!mem) ok = 0;
    else
        for (int c = 0; c < ncomp; c++) pl[c] = mem + (size_t)c * ph * pw;
    if (ok) {
        for (int y = 0; y < h; y++) {
            const uint8_t *row = p + (size_t)y * w * ch;
            float *Y = pl[0] + (size_t)y * pw;
            if (ch == 1) {
                for (int x = 0; x < w; x++) Y[x] = (float)row[x];
            } else {
                float *Cb = pl[1] + (size_t)y * pw, *Cr = pl[2] + (size_t)y * pw;
                for (int x = 0; x < w; x++) {
                    float r = row[3 * x], g = row[3 * x + 1], b = row[3 * x + 2];
                    Y[x] = 0.299f * r + 0.587f * g + 0.114f * b;
                    Cb[x] = -0.168736f * r - 0.331264f * g + 0.5f * b + 128.f;
                    Cr[x] = 0.5f * r - 0.418688f * g - 0.081312f * b + 128.f;
                }
            }
            for (int c = 0; c < ncomp; c++) {
                float *r = pl[c] + (size_t)y * pw;
                for (int x = w; x < pw; x++) r[x] = r[w - 1];
            }
        }
        for (int c = 0; c < ncomp; c++)
            for (int y = h; y < ph; y++) memcpy(pl[c] + (size_t)y * pw, pl[c] + (size_t)(h - 1) * pw, sizeof(float) * pw);
        /* box-filter chroma subsampling in place (the subsampled plane has row stride pw / hmax) */
        if (ncomp == 3 && (hmax > 1 || vmax > 1)) {
            int cw = pw / hmax, chh = ph / vmax;
            float inv = 1.f / (float)(hmax * vmax);
            for (int c = 1; c < 3; c++)
                for (int y = 0; y < chh; y++)
                    for (int x = 0; x < cw; x++) {
                        float acc = 0.f;
                        for (int i = 0; i < vmax; i++)
                            for (int j = 0; j < hmax; j++) acc += pl[c][(size_t)(y * vmax + i) * pw + x * hmax + j];
                        pl[c][(size_t)y * cw + x] = acc * inv;
                    }
        }
        size_t k = 0;
        float b[64], f[64], fz[64], rq[64];
        for (int c = 0; c < ncomp; c++) {
            int rows = dm[2 * c], cols = dm[2 * c + 1];
            int stride = c == 0 ? pw : pw / hmax;
            const float *qc = q + 64 * c;
            for (int z = 0; z < 64; z++) rq[z] = 1.f / (qc[ZZ[z]] * 8.f * A[ZZ[z] / 8] * A[ZZ[z] % 8]);
            for (int by = 0; by < rows; by++)
                for (int bx = 0; bx < cols; bx++, k++) {
                    const float *src = pl[c] + (size_t)by * 8 * stride + bx * 8;
                    for (int y = 0; y < 8; y++)
                        for (int x = 0; x < 8; x++) b[y * 8 + x] = src[(size_t)y * stride + x] - 128.f;
                    fdct(b, f);
                    for (int z = 0; z < 64; z++) fz[z] = f[ZZ[z]];
                    int32_t *dst = o + k * 64;
                    for (int z = 0; z < 64; z++) dst[z] = round_even(fz[z] * rq[z]);
                }
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&px); PyBuffer_Release(&dims); PyBuffer_Release(&qt); PyBuffer_Release(&out);
    if (!ok) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* inverse(coefs(int32, component-major raster, zigzag), h, w, ncomp, hmax, vmax, dims, qtables, out(uint8 h*w*ch)) */
static PyObject *inverse(PyObject *self, PyObject *args) {
    Py_buffer cf, dims, qt, out;
    int h, w, ncomp, hmax, vmax;
    if (!PyArg_ParseTuple(args, "y*iiiiiy*y*w*", &cf, &h, &w, &ncomp, &hmax, &vmax, &dims, &qt, &out)) return NULL;
    const int32_t *co = cf.buf;
    const int32_t *dm = dims.buf;
    const float *q = qt.buf;
    uint8_t *o = out.buf;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    /* planes at component resolution */
    float *planes[3] = {NULL, NULL, NULL};
    size_t k = 0, total = 0;
    for (int c = 0; c < ncomp; c++) total += (size_t)dm[2 * c] * 8 * dm[2 * c + 1] * 8;
    float *mem = scratch(total);
    if (!mem) ok = 0;
    for (int c = 0; c < ncomp && ok; c++) {
        int rows = dm[2 * c], cols = dm[2 * c + 1];
        planes[c] = mem;
        mem += (size_t)rows * 8 * cols * 8;
        const float *qc = q + 64 * c;
        float b[64], r[64], dq[64];
        for (int z = 0; z < 64; z++) dq[z] = qc[ZZ[z]] * A[ZZ[z] / 8] * A[ZZ[z] % 8] / 8.f;
        for (int by = 0; by < rows; by++)
            for (int bx = 0; bx < cols; bx++, k++) {
                const int32_t *src = co + k * 64;
                for (int z = 0; z < 64; z++) b[ZZ[z]] = (float)src[z] * dq[z];
                idct(b, r);
                float *dst = planes[c] + (size_t)by * 8 * cols * 8 + bx * 8;
                for (int y = 0; y < 8; y++) memcpy(dst + (size_t)y * cols * 8, r + y * 8, 8 * sizeof(float));
            }
    }
    if (ok) {
        int stride0 = dm[1] * 8, stride1 = ncomp == 3 ? dm[3] * 8 : 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float Y = planes[0][(size_t)y * stride0 + x] + 128.f;
                if (ncomp == 1) {
                    float v = Y + 0.5f;
                    o[(size_t)y * w + x] = (uint8_t)(v < 0.f ? 0.f : (v > 255.f ? 255.f : v));
                    continue;
                }
                size_t ci = (size_t)(y / vmax) * stride1 + x / hmax;
                float cb = planes[1][ci], cr = planes[2][ci];
                float rgb[3] = {Y + 1.402f * cr, Y - 0.344136f * cb - 0.714136f * cr, Y + 1.772f * cb};
                uint8_t *d = o + ((size_t)y * w + x) * 3;
                for (int i = 0; i < 3; i++) {
                    float v = rgb[i] + 0.5f;
                    d[i] = (uint8_t)(v < 0.f ? 0.f : (v > 255.f ? 255.f : v));
                }
            }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&cf); PyBuffer_Release(&dims); PyBuffer_Release(&qt); PyBuffer_Release(&out);
    if (!ok) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* rle_tokens(coefs int32 (N,64) canonical zigzag, comp int32 (N,), ncomp, dpcm, consts int32[8], out uint16) -> n
 * consts: eob, esc, raw0, dc0 (id of DC value 0), dc_max, ac0, acesc0, ac_level */
static PyObject *rle_tokens(PyObject *self, PyObject *args) {
    Py_buffer cf, cm, cs, out;
    int ncomp, dpcm;
    if (!PyArg_ParseTuple(args, "y*y*iiy*w*", &cf, &cm, &ncomp, &dpcm, &cs, &out)) return NULL;
    const int32_t *co = cf.buf, *comp = cm.buf, *k = cs.buf;
    uint16_t *o = out.buf;
    Py_ssize_t n = cf.len / (64 * sizeof(int32_t)), cap = out.len / sizeof(uint16_t), t = 0;
    int eob = k[0], esc = k[1], raw0 = k[2], dc0 = k[3], dcmax = k[4], ac0 = k[5], acesc0 = k[6], L = k[7];
    int32_t prev[3] = {0, 0, 0};
    int overflow = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < n && !overflow; b++) {
        const int32_t *c = co + b * 64;
        if (t + 3 + 63 * 3 + 1 > cap) { overflow = 1; break; }
        int32_t dc = c[0];
        if (dpcm) { int cc = comp[b]; int32_t d = dc - prev[cc]; prev[cc] = dc; dc = d; }
        if (dc >= -dcmax && dc <= dcmax) o[t++] = (uint16_t)(dc0 + dc);
        else {
            int32_t u = dc + 32768;
            if (u < 0 || u > 65535) { overflow = 2; break; }
            o[t++] = (uint16_t)esc; o[t++] = (uint16_t)(raw0 + (u >> 8)); o[t++] = (uint16_t)(raw0 + (u & 255));
        }
        int last = 0;
        for (int z = 1; z < 64; z++) {
            int32_t v = c[z];
            if (!v) continue;
            int run = z - last - 1;
            last = z;
            if (v >= -L && v <= L && v != 0) {
                int li = v < 0 ? v + L : v + L - 1;
                o[t++] = (uint16_t)(ac0 + run * 2 * L + li);
            } else {
                int32_t u = v + 32768;
                if (u < 0 || u > 65535) { overflow = 2; break; }
                o[t++] = (uint16_t)(acesc0 + run); o[t++] = (uint16_t)(raw0 + (u >> 8)); o[t++] = (uint16_t)(raw0 + (u & 255));
            }
        }
        o[t++] = (uint16_t)eob;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&cf); PyBuffer_Release(&cm); PyBuffer_Release(&cs); PyBuffer_Release(&out);
    if (overflow == 2) { PyErr_SetString(PyExc_ValueError, "coefficient outside the int16 range"); return NULL; }
    if (overflow) { PyErr_SetString(PyExc_ValueError, "output buffer too small"); return NULL; }
    return PyLong_FromSsize_t(t);
}

/* rle_parse(tokens uint16, n_blocks, comp int32 (N,), dpcm, consts int32[8], out int32 (N,64)) -> 0 or error */
static PyObject *rle_parse(PyObject *self, PyObject *args) {
    Py_buffer tk, cm, cs, out;
    Py_ssize_t nblocks;
    int dpcm;
    if (!PyArg_ParseTuple(args, "y*ny*iy*w*", &tk, &nblocks, &cm, &dpcm, &cs, &out)) return NULL;
    const uint16_t *t = tk.buf;
    const int32_t *comp = cm.buf, *k = cs.buf;
    int32_t *o = out.buf;
    Py_ssize_t n = tk.len / sizeof(uint16_t), i = 0, b = 0;
    int eob = k[0], esc = k[1], raw0 = k[2], dc0 = k[3], dcmax = k[4], ac0 = k[5], acesc0 = k[6], L = k[7];
    const char *err = NULL;
    int32_t prev[3] = {0, 0, 0};
    memset(o, 0, (size_t)nblocks * 64 * sizeof(int32_t));
    Py_BEGIN_ALLOW_THREADS
    while (b < nblocks) {
        int32_t *c = o + b * 64;
        if (i >= n) { err = "stream ends inside a block"; break; }
        int32_t dc;
        int tok = t[i++];
        if (tok == esc) {
            if (i + 2 > n || t[i] < raw0 || t[i + 1] < raw0) { err = "malformed escape"; break; }
            dc = ((t[i] - raw0) << 8) + (t[i + 1] - raw0) - 32768; i += 2;
        } else if (tok >= dc0 - dcmax && tok <= dc0 + dcmax) dc = tok - dc0;
        else { err = "a block must start with a DC token"; break; }
        if (dpcm) { int cc = comp[b]; dc += prev[cc]; prev[cc] = dc; }
        c[0] = dc;
        int pos = 0;
        for (;;) {
            if (i >= n) { err = "stream ends inside a block"; break; }
            tok = t[i++];
            if (tok == eob) break;
            int run; int32_t v;
            if (tok >= acesc0 && tok < acesc0 + 63) {
                run = tok - acesc0;
                if (i + 2 > n || t[i] < raw0 || t[i + 1] < raw0) { err = "malformed escape"; break; }
                v = ((t[i] - raw0) << 8) + (t[i + 1] - raw0) - 32768; i += 2;
            } else if (tok >= ac0 && tok < ac0 + 63 * 2 * L) {
                int a = tok - ac0, li = a % (2 * L);
                run = a / (2 * L);
                v = li < L ? li - L : li - L + 1;
            } else { err = "unexpected token inside a block"; break; }
            pos += run + 1;
            if (pos > 63) { err = "zero runs overflow a block"; break; }
            c[pos] = v;
        }
        if (err) break;
        b++;
    }
    if (!err && i != n) err = "tokens left after the last block";
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&tk); PyBuffer_Release(&cm); PyBuffer_Release(&cs); PyBuffer_Release(&out);
    if (err) { PyErr_SetString(PyExc_ValueError, err); return NULL; }
    Py_RETURN_NONE;
}

/* label_pieces(seg int64 (rows*cols,), rows, cols, out int64) -> number of pieces.
 * 4-connected components of equal labels, numbered by their first cell in raster order (union-find). */
static Py_ssize_t find(Py_ssize_t *parent, Py_ssize_t i) {
    while (parent[i] != i) { parent[i] = parent[parent[i]]; i = parent[i]; }
    return i;
}

static PyObject *label_pieces(PyObject *self, PyObject *args) {
    Py_buffer sg, out;
    int rows, cols;
    if (!PyArg_ParseTuple(args, "y*iiw*", &sg, &rows, &cols, &out)) return NULL;
    const int64_t *seg = sg.buf;
    int64_t *o = out.buf;
    Py_ssize_t n = (Py_ssize_t)rows * cols, pieces = 0;
    Py_ssize_t *parent = PyMem_Malloc(sizeof(Py_ssize_t) * (n ? n : 1));
    if (!parent) { PyBuffer_Release(&sg); PyBuffer_Release(&out); return PyErr_NoMemory(); }
    for (Py_ssize_t i = 0; i < n; i++) parent[i] = i;
    for (int y = 0; y < rows; y++)
        for (int x = 0; x < cols; x++) {
            Py_ssize_t i = (Py_ssize_t)y * cols + x;
            if (x + 1 < cols && seg[i] == seg[i + 1]) {
                Py_ssize_t a = find(parent, i), b = find(parent, i + 1);
                if (a != b) parent[a > b ? a : b] = a < b ? a : b; /* the root is the lowest raster index */
            }
            if (y + 1 < rows && seg[i] == seg[i + cols]) {
                Py_ssize_t a = find(parent, i), b = find(parent, i + cols);
                if (a != b) parent[a > b ? a : b] = a < b ? a : b;
            }
        }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t r = find(parent, i);
        if (r == i) o[i] = pieces++;
        else o[i] = o[r]; /* r < i: already numbered */
    }
    PyMem_Free(parent);
    PyBuffer_Release(&sg); PyBuffer_Release(&out);
    return PyLong_FromSsize_t(pieces);
}

/* blob_segments(mu float64 (K, 2), sd float64 (K,), rows, cols, out int64 (rows*cols,)): for every cell of a
 * [-2, 2]^2 grid, the blob with the highest Gaussian log-density (first maximum). The log-densities are
 * separable, a_k(y) + b_k(x), computed in double and summed in float exactly as the numpy path does. */
static PyObject *blob_segments(PyObject *self, PyObject *args) {
    Py_buffer mb, sb, out;
    int rows, cols;
    if (!PyArg_ParseTuple(args, "y*y*iiw*", &mb, &sb, &rows, &cols, &out)) return NULL;
    const double *mu = mb.buf, *sd = sb.buf;
    int k = (int)(sb.len / sizeof(double));
    int64_t *o = out.buf;
    float *a = PyMem_Malloc(sizeof(float) * ((size_t)rows + cols) * (k ? k : 1));
    if (!a) { PyBuffer_Release(&mb); PyBuffer_Release(&sb); PyBuffer_Release(&out); return PyErr_NoMemory(); }
    float *b = a + (size_t)rows * k;
    for (int j = 0; j < k; j++) {
        double inv = 0.5 / (sd[j] * sd[j]), lg = 2.0 * log(sd[j]);
        for (int y = 0; y < rows; y++) {
            double g = rows > 1 ? -2.0 + 4.0 * y / (rows - 1) : 0.0, d = g - mu[2 * j];
            a[(size_t)y * k + j] = (float)(-(d * d) * inv - lg);
        }
        for (int x = 0; x < cols; x++) {
            double g = cols > 1 ? -2.0 + 4.0 * x / (cols - 1) : 0.0, d = g - mu[2 * j + 1];
            b[(size_t)x * k + j] = (float)(-(d * d) * inv);
        }
    }
    for (int y = 0; y < rows; y++)
        for (int x = 0; x < cols; x++) {
            const float *ay = a + (size_t)y * k, *bx = b + (size_t)x * k;
            float best = ay[0] + bx[0];
            int arg = 0;
            for (int j = 1; j < k; j++) {
                float v = ay[j] + bx[j];
                if (v > best) { best = v; arg = j; }
            }
            o[(size_t)y * cols + x] = arg;
        }
    PyMem_Free(a);
    PyBuffer_Release(&mb); PyBuffer_Release(&sb); PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"blob_segments", blob_segments, METH_VARARGS, "randsac's blob argmax over a [-2, 2] grid"},
    {"label_pieces", label_pieces, METH_VARARGS, "4-connected pieces of equal labels on a grid"},
    {"forward", forward, METH_VARARGS, "pixels -> quantized zigzag DCT coefficients (component-major raster)"},
    {"inverse", inverse, METH_VARARGS, "coefficients -> pixels"},
    {"rle_tokens", rle_tokens, METH_VARARGS, "canonical coefficients -> rle tokens; returns the count"},
    {"rle_parse", rle_parse, METH_VARARGS, "rle tokens -> canonical coefficients"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpegc", "JPEG codec kernels", -1, methods};

PyMODINIT_FUNC PyInit__jpegc(void) {
    init_dct();
    return PyModule_Create(&module);
}
