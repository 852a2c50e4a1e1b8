/* The image N3 aggregation (paper Sec. 4, Eqs. 4 and 8-11) fused into one pass, for inference on the CPU; and, at the
 * end of the file, for training: the continuous selection (Eqs. 8-10) of independent rows with its backward, and the
 * block path's spread matrix (Eq. 11 per block), output assembly and distance norm, forward and backward.
 *
 * Plain C99 without any library headers beyond libc (and OpenMP's, where the compiler offers it: see
 * n3_parallel_rows; and the compiler's intrinsics for the bf16 narrow convolution), compiled at first use by
 * n3cli/nn/native/__init__.py and called through ctypes. The arithmetic is that of
 * N3Aggregation2d._forward_blocks (the Python reference):
 * 10 x 10 patches with stride 5 (any patch that is a multiple of the stride), each query patch against the
 * patches of its window of wh x ww patch positions (clamped to the grid, itself excluded); distances
 * between embedding patches, the distance norm with running statistics, the continuous k-nearest-neighbour
 * selection, and the k neighbour volumes folded back to pixels by averaging the overlapping patches.
 *
 * Layout: images channels-last (rows, cols, channels), one image per call, already zero-padded so that the
 * patch grid covers them exactly. Work is split by bands of destination blocks (stride x stride pixels), so
 * several threads can run bands of one image at once; each band computes the query weights it needs into
 * its own ring of nb rows of queries (memory independent of the image height).
 *
 * Destination block (R, C) lies in the query patches (R - u, C - v), 0 <= u, v < nb; candidate patch (a, b)
 * of such a query contributes its sub-block (u, v), i.e. source block (a + u, b + v). The weights of the
 * (up to nb^2) queries are summed per source block first, then Eq. 11 and the fold are one weighted sum of
 * source blocks per neighbour.
 */
#include <math.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    P_HP, P_WP, P_C, P_E, P_PATCH, P_STRIDE, P_NH, P_NW, P_WH, P_WW, P_WINDOW, P_K, P_HAS_NORM, P_UPDATE_ALPHA,
    P_H, P_W, P_TOP, P_LEFT, P_COUNT
};

typedef struct {
    int hp, wp, c, e, patch, s, nb, nh, nw, wh, ww, window, k, has_norm, update_alpha, h, w, top, left;
    float norm_scale, norm_shift;
} params;

/* exp(x) for x <= 0 (x = -inf gives 0): Cody-Waite reduction and a degree-7 polynomial, relative error
 * about 1e-7; 0 below -87 (where float32's exp leaves the normal range). Written so that loops over it
 * vectorise. */
static inline float exp_nonpositive(float x) {
    const float xc = x < -87.0f ? -87.0f : x;
    const float n = floorf(xc * 1.44269504088896341f + 0.5f);
    const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float poly = 1.0f / 5040.0f;
    poly = poly * r + 1.0f / 720.0f;
    poly = poly * r + 1.0f / 120.0f;
    poly = poly * r + 1.0f / 24.0f;
    poly = poly * r + 1.0f / 6.0f;
    poly = poly * r + 0.5f;
    poly = poly * r + 1.0f;
    poly = poly * r + 1.0f;
    union { uint32_t i; float f; } scale;
    scale.i = (uint32_t)((int32_t)n + 127) << 23;
    const float y = poly * scale.f;
    return x < -87.0f ? 0.0f : y;
}

/* log(1 - w) for 0 <= w <= 1/2: -2 atanh(z) with z = w / (2 - w) <= 1/3, series to z^15 (relative error
 * below 1e-8), accurate for small w like log1p. */
static inline float log_one_minus(float w) {
    const float z = w / (2.0f - w);
    const float z2 = z * z;
    float series = 1.0f / 15.0f;
    series = series * z2 + 1.0f / 13.0f;
    series = series * z2 + 1.0f / 11.0f;
    series = series * z2 + 1.0f / 9.0f;
    series = series * z2 + 1.0f / 7.0f;
    series = series * z2 + 1.0f / 5.0f;
    series = series * z2 + 1.0f / 3.0f;
    series = series * z2 + 1.0f;
    return -2.0f * z * series;
}

#if defined(__GNUC__) || defined(__clang__)
/* Eight floats, loaded and stored without alignment requirement (GCC / clang vector extension). */
typedef float v8 __attribute__((vector_size(32), aligned(4)));
#define HAVE_V8 1
/* Keeps values in vector registers from here on: GCC would otherwise fold each use into the instruction as a memory
 * operand, reloading a vector once per use (in the gather, 20 loads where 5 do). */
#if defined(__x86_64__) && defined(__AVX__)
#define KEEP_IN_REGISTERS(a, b, c, d, e) __asm__("" : "+v"(a), "+v"(b), "+v"(c), "+v"(d), "+v"(e))
#define KEEP_IN_REGISTER(a) __asm__("" : "+v"(a))
#else
#define KEEP_IN_REGISTERS(a, b, c, d, e) ((void)0)
#define KEEP_IN_REGISTER(a) ((void)0)
#endif
#endif

static inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* dst[0 .. n) += src[0 .. n): with AVX-512 in vectors of 16 and one masked vector for the rest (rows of a 15-wide
 * window would otherwise end in seven scalar adds). */
static inline void add_row(float *restrict dst, const float *restrict src, int n) {
#if defined(__AVX512F__)
    int b = 0;
    for (; b + 16 <= n; b += 16) _mm512_storeu_ps(dst + b, _mm512_add_ps(_mm512_loadu_ps(dst + b), _mm512_loadu_ps(src + b)));
    if (b < n) {
        const __mmask16 m = (__mmask16)((1u << (n - b)) - 1u);
        _mm512_mask_storeu_ps(dst + b, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst + b), _mm512_maskz_loadu_ps(m, src + b)));
    }
#else
    for (int b = 0; b < n; b++) dst[b] += src[b];
#endif
}

/* First patch row (col) of the window of query row (col) i: centred on it, clamped to the grid. */
static inline int window_start(int i, int window, int extent, int grid) {
    return clamp_int(i - window / 2, 0, grid - extent);
}

/* Row offsets of the candidate blocks a block row r needs: the covering query rows i = r - u (0 <= u < nb) have
 * candidates at rows window_start(i) .. + wh - 1, whose sub-block u lies at offset window_start(i) - i + a from
 * block row r. Returns the smallest offset; the span is at most wh + nb - 1. Same for columns. */
static inline int block_offset_lo(int r, int nb, int window, int extent, int grid) {
    int lo = 1 << 30;
    for (int u = 0; u < nb; u++) {
        const int i = r - u;
        if (i < 0 || i >= grid) continue;
        const int off = window_start(i, window, extent, grid) - i;
        if (off < lo) lo = off;
    }
    return lo;
}

/* Squared distances between block (r, J) and the blocks at offsets (lo_r + dr, lo_c(J) + dc), 0 <= dr < lr,
 * 0 <= dc < lc, for every block column J: out (bw, lr, lc). The distance between two patches is then the sum
 * of the distances of their nb x nb blocks taken at the same offset, so each block pair is computed once
 * instead of once per patch that contains it (nb^2 times). Offsets outside the image get 0 (never used). */
static void block_row_distances(const params *P, const float *restrict ep, int r, float *restrict out) {
    const int s = P->s, nb = P->nb, bh = P->hp / s, bw = P->wp / s, lr = P->wh + nb - 1, lc = P->ww + nb - 1;
    const int row_len = s * P->e;
    const size_t pitch = (size_t)P->wp * P->e;
    const int lo_r = block_offset_lo(r, nb, P->window, P->wh, P->nh);
    /* candidate block rows outermost: consecutive queries J share all but one of their candidate blocks, which then
     * come from the L1 cache instead of L2 (with J outermost, a query's 16 candidate rows evicted them) */
    for (int dr = 0; dr < lr; dr++) {
        const int cr = r + lo_r + dr;
        for (int J = 0; J < bw; J++) {
            const int lo_c = block_offset_lo(J, nb, P->window, P->ww, P->nw);
            const float *restrict q = ep + (size_t)r * s * pitch + (size_t)J * row_len;
            float *restrict d = out + ((size_t)J * lr + dr) * lc;
            for (int dc = 0; dc < lc; dc++) d[dc] = 0.0f;
            if (cr < 0 || cr >= bh) continue;
            const int c0 = J + lo_c < 0 ? -(J + lo_c) : 0;
            const int c1 = J + lo_c + lc > bw ? bw - (J + lo_c) : lc;
#if defined(__AVX512F__) && defined(__FMA__)
            if (s == 5 && row_len == 40) { /* rows of 40 floats as 16 + 16 + 8: the query block in 15 registers and 30 vector
                                  * operations per pair, where eight-float vectors take 50 (docs/speed.md) */
                __m512 qa[5], qb[5];
                __m256 qc[5];
                for (int dy = 0; dy < 5; dy++) {
                    qa[dy] = _mm512_loadu_ps(q + (size_t)dy * pitch);
                    qb[dy] = _mm512_loadu_ps(q + (size_t)dy * pitch + 16);
                    qc[dy] = _mm256_loadu_ps(q + (size_t)dy * pitch + 32);
                }
                const float *restrict cbase = ep + (size_t)cr * s * pitch + (size_t)(J + lo_c) * 40;
                for (int dc = c0; dc < c1; dc++) {
                    __m512 sa = _mm512_setzero_ps(), sb = _mm512_setzero_ps();
                    __m256 sc = _mm256_setzero_ps();
                    for (int dy = 0; dy < 5; dy++) {
                        const float *c = cbase + (size_t)dy * pitch + (size_t)dc * 40;
                        const __m512 da = _mm512_sub_ps(qa[dy], _mm512_loadu_ps(c));
                        const __m512 db = _mm512_sub_ps(qb[dy], _mm512_loadu_ps(c + 16));
                        const __m256 dd = _mm256_sub_ps(qc[dy], _mm256_loadu_ps(c + 32));
                        sa = _mm512_fmadd_ps(da, da, sa);
                        sb = _mm512_fmadd_ps(db, db, sb);
                        sc = _mm256_fmadd_ps(dd, dd, sc);
                    }
                    const __m512 sab = _mm512_add_ps(sa, sb);
                    __m256 t = _mm256_add_ps(_mm512_castps512_ps256(sab), /* upper half without AVX512DQ */
                                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sab), 1)));
                    t = _mm256_add_ps(t, sc);
                    __m128 u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
                    u = _mm_add_ps(u, _mm_movehl_ps(u, u));
                    u = _mm_add_ss(u, _mm_movehdup_ps(u));
                    d[dc] = _mm_cvtss_f32(u);
                }
                continue;
            }
#endif
#ifdef HAVE_V8
            if (row_len == 40 && lc <= 64) { /* s * E = 40: rows of five vectors, lane sums reduced once per pair */
                v8 part[64];
                for (int dc = c0; dc < c1; dc++) part[dc] = (v8){0};
                for (int dy = 0; dy < s; dy++) {
                    const v8 *qv = (const v8 *)(q + (size_t)dy * pitch);
                    const v8 q0 = qv[0], q1 = qv[1], q2 = qv[2], q3 = qv[3], q4 = qv[4];
                    const float *restrict cr_row = ep + ((size_t)cr * s + dy) * pitch + (size_t)(J + lo_c) * 40;
                    for (int dc = c0; dc < c1; dc++) {
                        const v8 *cv = (const v8 *)(cr_row + (size_t)dc * 40);
                        const v8 d0 = q0 - cv[0], d1 = q1 - cv[1], d2 = q2 - cv[2], d3 = q3 - cv[3], d4 = q4 - cv[4];
                        part[dc] += d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3 + d4 * d4;
                    }
                }
                for (int dc = c0; dc < c1; dc++) {
                    const v8 p8 = part[dc];
                    d[dc] = ((p8[0] + p8[1]) + (p8[2] + p8[3])) + ((p8[4] + p8[5]) + (p8[6] + p8[7]));
                }
                continue;
            }
#endif
            for (int dy = 0; dy < s; dy++) {
                const float *restrict qr = q + (size_t)dy * pitch;
                const float *restrict cr_row = ep + ((size_t)cr * s + dy) * pitch + (size_t)(J + lo_c) * row_len;
                for (int dc = c0; dc < c1; dc++) {
                    const float *restrict c = cr_row + (size_t)dc * row_len;
                    float sum = 0.0f;
                    for (int n = 0; n < row_len; n++) {
                        const float diff = qr[n] - c[n];
                        sum += diff * diff;
                    }
                    d[dc] += sum;
                }
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * The continuous k-nearest-neighbour selection (Eqs. 8-10) of one row of logits: the fused aggregation's
 * (query_weights) and, with its backward (at the end of the file), that of training (knn.continuous_knn on float32 CPU
 * tensors), where the aggregation around it stays in PyTorch. Row r: alpha (m) with -inf for excluded candidates, temperature t > 0. z = alpha / t;
 * step j: w = softmax(z) computed around the top candidate (as knn._softmax_and_log1m), then Eq. 9:
 * z += log(1 - w) / t ("alpha" update) or z += log(1 - w) ("logits" update). Per step the forward keeps the top
 * index and three floats (KNN_AUX): the others' sum of exp, log(1 - w_top), and the kind of step (KNN_NORMAL; KNN_EXACT:
 * the others' sum underflowed and log(1 - w_top) came from their log-sum-exp; KNN_ALONE: no other candidate left).
 * ------------------------------------------------------------------------------------------------------------- */
enum { KNN_AUX = 3, KNN_NORMAL = 0, KNN_EXACT = 1, KNN_ALONE = 2 };

/* The first index of the largest of z[0 .. m) and that value (NaN never counts); -1 when every entry is -inf (or NaN).
 * The same as the scalar scan "if (z[n] > best) best = z[n], top = n", in vectors where AVX-512 is there (the scalar
 * scan is one long dependency chain). */
static inline int argmax_first(const float *restrict z, int m, float *best) {
#if defined(__AVX512F__)
    const __m512 lowest = _mm512_set1_ps(-INFINITY);
    __m512 mx = lowest;
    int n = 0;
    for (; n + 16 <= m; n += 16) mx = _mm512_max_ps(_mm512_loadu_ps(z + n), mx); /* a NaN gives the second operand */
    if (n < m) mx = _mm512_max_ps(_mm512_mask_loadu_ps(lowest, (__mmask16)((1u << (m - n)) - 1u), z + n), mx);
    const float v = _mm512_reduce_max_ps(mx);
    *best = v;
    if (v == -INFINITY) return -1;
    const __m512 vv = _mm512_set1_ps(v);
    for (n = 0; n + 16 <= m; n += 16) {
        const __mmask16 eq = _mm512_cmp_ps_mask(_mm512_loadu_ps(z + n), vv, _CMP_EQ_OQ);
        if (eq) return n + __builtin_ctz((unsigned)eq);
    }
    for (; n < m; n++)
        if (z[n] == v) return n;
    return -1; /* not reached */
#else
    int top = -1;
    float tv = -INFINITY;
    for (int n = 0; n < m; n++)
        if (z[n] > tv) tv = z[n], top = n;
    *best = tv;
    return top;
#endif
}

/* One row forward: w (k, m) and top (k) (-1 where no candidate is left) and aux (k, KNN_AUX); z (m) scratch, or with
 * zs != NULL the logits of every step are kept there (k, m) for the backward of a KNN_EXACT step. */
static void knn_row_forward(const float *restrict alpha, float t, float *restrict w, int32_t *restrict top_out,
                            float *restrict aux, float *restrict z, float *restrict zs, int m, int k, int update_alpha) {
    const float tiny = 4.5308161e-31f; /* float32 tiny^0.8 (as knn.py): below it the others' sum lost precision */
    for (int n = 0; n < m; n++) /* excluded stay excluded at any t (-inf / inf is NaN), as knn._divide */
        z[n] = alpha[n] == -INFINITY ? -INFINITY : alpha[n] / t;
    memset(w, 0, sizeof(float) * (size_t)k * m);
    memset(aux, 0, sizeof(float) * (size_t)k * KNN_AUX);
    for (int j = 0; j < k; j++) top_out[j] = -1;
    for (int j = 0; j < k; j++) {
        if (zs) memcpy(zs + (size_t)j * m, z, sizeof(float) * m);
        float *restrict wj = w + (size_t)j * m;
        float tv;
        const int top = argmax_first(z, m, &tv);
        if (top < 0) return; /* no candidate left: the remaining neighbours weigh nothing */
        float others = 0.0f;
        for (int n = 0; n < m; n++) {
            const float p = n == top ? 0.0f : exp_nonpositive(z[n] - tv); /* Eq. 8 / 10 */
            wj[n] = p;
            others += p;
        }
        const float total = others + 1.0f;
        for (int n = 0; n < m; n++) wj[n] = wj[n] / total;
        top_out[j] = top;
        float *a = aux + (size_t)j * KNN_AUX;
        a[0] = others;
        if (j + 1 < k) {
            float log_others;
            if (others >= tiny) {
                log_others = logf(others);
            } else { /* the others' weights underflow: their log-sum-exp, or none left */
                float rest_max = -INFINITY;
                for (int n = 0; n < m; n++)
                    if (n != top && z[n] > rest_max) rest_max = z[n];
                if (rest_max == -INFINITY) {
                    for (int n = 0; n < m; n++) z[n] = -INFINITY;
                    a[2] = KNN_ALONE;
                    wj[top] = 1.0f / total;
                    continue;
                }
                double sum = 0.0;
                for (int n = 0; n < m; n++)
                    if (n != top && z[n] != -INFINITY) sum += exp((double)z[n] - rest_max);
                log_others = (rest_max - tv) + (float)log(sum);
                a[2] = KNN_EXACT;
            }
            const float lrt = log_others - logf(total);
            a[1] = lrt;
            const float c = update_alpha ? t : 1.0f; /* Eq. 9 */
            for (int n = 0; n < m; n++) z[n] += log_one_minus(wj[n]) / c;
            z[top] = tv + lrt / c;
        }
        wj[top] = 1.0f / total;
    }
}

/* The k weight vectors (k, wh * ww) of query patch (i, j) over its window (Eqs. 4, 8-10). bd[u] holds the block
 * distances of block row i + u (block_row_distances); alpha, z (wh * ww) and aux (k, KNN_AUX) are scratch. */
static void query_weights(const params *P, float *const *bd, const float *tg, int i, int j, float *w,
                          float *alpha, float *z, float *aux) {
    const int wh = P->wh, ww = P->ww, m_count = wh * ww, k = P->k, nb = P->nb;
    const int lr = wh + nb - 1, lc = ww + nb - 1;
    const int wr = window_start(i, P->window, wh, P->nh), wc = window_start(j, P->window, ww, P->nw);
    const int self = (i - wr) * ww + (j - wc);
    const float t = tg[(size_t)i * P->nw + j];
    for (int m = 0; m < m_count; m++) alpha[m] = 0.0f;
    for (int u = 0; u < nb; u++) {
        const int row_off = wr - i - block_offset_lo(i + u, nb, P->window, wh, P->nh);
        for (int v = 0; v < nb; v++) {
            const int col_off = wc - j - block_offset_lo(j + v, nb, P->window, ww, P->nw);
            const float *d = bd[u] + (size_t)(j + v) * lr * lc;
            for (int a = 0; a < wh; a++) {
                add_row(alpha + (size_t)a * ww, d + (size_t)(row_off + a) * lc + col_off, ww);
            }
        }
    }
    for (int m = 0; m < m_count; m++) { /* Eq. 4, normed */
        const float d = alpha[m];
        alpha[m] = P->has_norm ? P->norm_shift - d * P->norm_scale : -d;
    }
    alpha[self] = -INFINITY;
    if (m_count == 1) { /* no candidate at all: the query keeps itself as every neighbour */
        memset(w, 0, sizeof(float) * (size_t)k * m_count);
        for (int n = 0; n < k; n++) w[(size_t)n * m_count] = 1.0f;
        return;
    }
    int32_t top[64];
    knn_row_forward(alpha, t, w, top, aux, z, NULL, m_count, k, P->update_alpha);
}

/* Eq. 11 and the fold for one destination block: acc (s, k, s * C) (pixel row, neighbour, pixel cols x channels)
 * += weight x source block, over the source blocks. A source block's weight is the same for all its pixels, so
 * each pixel row is one axpy of s * C contiguous floats per neighbour. */
static void gather_block(const params *P, const float *restrict xp,
                                                               const float *restrict spread, int lr, int lc,
                                                               int base_r, int base_c, float *restrict acc,
                                                               const int s, const int C) {
    const int k = P->k, bh = P->hp / s, bw = P->wp / s, row = s * C;
    const size_t plane = (size_t)lr * lc;
    float wv[64];
    for (int sr = 0; sr < lr; sr++) {
        const int br = base_r + sr;
        if (br >= bh) break;
        for (int sc = 0; sc < lc; sc++) {
            const int bc = base_c + sc;
            if (bc >= bw) break;
            int any = 0;
            for (int n = 0; n < k; n++) {
                wv[n] = spread[n * plane + (size_t)sr * lc + sc];
                any |= wv[n] != 0.0f;
            }
            if (!any) continue;
            for (int dy = 0; dy < s; dy++) {
                const float *restrict src = xp + ((size_t)(br * s + dy) * P->wp + (size_t)bc * s) * C;
                float *restrict a = acc + (size_t)dy * k * row;
                for (int n = 0; n < k; n++) {
                    float *restrict an = a + (size_t)n * row;
                    const float wn = wv[n];
                    for (int i = 0; i < row; i++) an[i] += wn * src[i];
                }
            }
        }
    }
}

#if defined(__GNUC__) || defined(__clang__)

/* 32 vector registers (AVX-512, or 32 x 128-bit on Arm) rather than 16: how many neighbours' sums the gathers keep. */
#if defined(__AVX512F__) || defined(__aarch64__)
#define HAVE_32_VECTOR_REGISTERS 1
#endif

/* gather_group_5x8 for C = 11 (n3net-color): rows of 55 floats as seven vectors, the last at 47 overlapping the one
 * before on float 47 (both then hold the same sum there). Named accumulators, NG <= 3 neighbours at a time (with
 * arrays of vectors GCC kept the sums in memory, a load and a store around every FMA). */
#define ACC7(g) v8 a##g##0 = {0}, a##g##1 = {0}, a##g##2 = {0}, a##g##3 = {0}, a##g##4 = {0}, a##g##5 = {0}, a##g##6 = {0}
#define FMA7(g, w)                                                                                                  \
    a##g##0 += (w) * s0, a##g##1 += (w) * s1, a##g##2 += (w) * s2, a##g##3 += (w) * s3, a##g##4 += (w) * s4,       \
        a##g##5 += (w) * s5, a##g##6 += (w) * s6
#define STORE7(g, out)                                                                                              \
    (out)[0] = a##g##0, (out)[1] = a##g##1, (out)[2] = a##g##2, (out)[3] = a##g##3, (out)[4] = a##g##4,             \
    (out)[5] = a##g##5, *(v8 *)((float *)(out) + 47) = a##g##6
static inline __attribute__((always_inline)) void gather_group_5x11(const params *P, const float *restrict xp,
                                                                    const float *restrict spread, int lr, int lc,
                                                                    int base_r, int base_c, int rows, int cols,
                                                                    int n0, float *restrict acc, const int NG) {
    const int k = P->k;
    const size_t plane = (size_t)lr * lc, pitch = (size_t)P->wp * 11;
    for (int dy = 0; dy < 5; dy++) {
        ACC7(0);
        ACC7(1);
        ACC7(2);
        for (int sr = 0; sr < rows; sr++) {
            const float *restrict w0 = spread + n0 * plane + (size_t)sr * lc;
            const float *restrict srow = xp + (size_t)((base_r + sr) * 5 + dy) * pitch + (size_t)base_c * 55;
            for (int sc = 0; sc < cols; sc++) {
                const float *src = srow + (size_t)sc * 55;
                v8 s0 = *(const v8 *)src, s1 = *(const v8 *)(src + 8), s2 = *(const v8 *)(src + 16),
                   s3 = *(const v8 *)(src + 24), s4 = *(const v8 *)(src + 32), s5 = *(const v8 *)(src + 40),
                   s6 = *(const v8 *)(src + 47);
                KEEP_IN_REGISTERS(s0, s1, s2, s3, s4);
                KEEP_IN_REGISTER(s5);
                KEEP_IN_REGISTER(s6);
                FMA7(0, w0[sc]);
                if (NG > 1) FMA7(1, w0[plane + sc]);
                if (NG > 2) FMA7(2, w0[2 * plane + sc]);
            }
        }
        float *out = acc + ((size_t)dy * k + n0) * 55;
        STORE7(0, (v8 *)out);
        if (NG > 1) STORE7(1, (v8 *)(out + 55));
        if (NG > 2) STORE7(2, (v8 *)(out + 110));
    }
}
#undef ACC7
#undef FMA7
#undef STORE7

static void gather_block_5x11(const params *P, const float *restrict xp, const float *restrict spread, int lr,
                              int lc, int base_r, int base_c, float *restrict acc) {
    const int k = P->k, bh = P->hp / 5, bw = P->wp / 5;
    const int rows = lr < bh - base_r ? lr : bh - base_r, cols = lc < bw - base_c ? lc : bw - base_c;
    int n0 = 0;
#ifdef HAVE_32_VECTOR_REGISTERS /* 3 x 7 sums and the 7-vector row fit */
    for (; n0 + 3 <= k; n0 += 3) gather_group_5x11(P, xp, spread, lr, lc, base_r, base_c, rows, cols, n0, acc, 3);
#endif
    for (; n0 < k; n0++) gather_group_5x11(P, xp, spread, lr, lc, base_r, base_c, rows, cols, n0, acc, 1);
}

/* The gather for s = 5, C = 8 (the published N3 blocks), with named accumulators (measured faster than arrays of
 * vectors: 0.22 against 0.35 s for one aggregation at 512², one thread), for NG neighbours n0 .. n0 + NG - 1 at a time: for each
 * pixel row, the NG x 40 sums stay in vector registers over all source blocks and each source row is loaded once
 * for the NG neighbours. NG is a constant at each call (the loops over it unroll). */
static inline __attribute__((always_inline)) void gather_group_5x8(const params *P, const float *restrict xp,
                                                                   const float *restrict spread, int lr, int lc,
                                                                   int base_r, int base_c, int rows, int cols,
                                                                   int n0, float *restrict acc, const int NG) {
    const int k = P->k;
    const size_t plane = (size_t)lr * lc, pitch = (size_t)P->wp * 8;
    for (int dy = 0; dy < 5; dy++) {
        /* named accumulators (arrays of vectors may stay in memory): neighbour g, vector q -> a<g><q> */
        v8 a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0}, a04 = {0}, a10 = {0}, a11 = {0}, a12 = {0}, a13 = {0},
           a14 = {0}, a20 = {0}, a21 = {0}, a22 = {0}, a23 = {0}, a24 = {0}, a30 = {0}, a31 = {0}, a32 = {0},
           a33 = {0}, a34 = {0};
        for (int sr = 0; sr < rows; sr++) {
            const float *restrict w0 = spread + n0 * plane + (size_t)sr * lc;
            const float *restrict srow = xp + (size_t)((base_r + sr) * 5 + dy) * pitch + (size_t)base_c * 40;
            for (int sc = 0; sc < cols; sc++) {
                const v8 *src = (const v8 *)(srow + (size_t)sc * 40);
                v8 s0 = src[0], s1 = src[1], s2 = src[2], s3 = src[3], s4 = src[4];
                KEEP_IN_REGISTERS(s0, s1, s2, s3, s4);
                const float w = w0[sc];
                a00 += w * s0, a01 += w * s1, a02 += w * s2, a03 += w * s3, a04 += w * s4;
                if (NG > 1) {
                    const float v = w0[plane + sc];
                    a10 += v * s0, a11 += v * s1, a12 += v * s2, a13 += v * s3, a14 += v * s4;
                }
                if (NG > 2) {
                    const float v = w0[2 * plane + sc];
                    a20 += v * s0, a21 += v * s1, a22 += v * s2, a23 += v * s3, a24 += v * s4;
                }
                if (NG > 3) {
                    const float v = w0[3 * plane + sc];
                    a30 += v * s0, a31 += v * s1, a32 += v * s2, a33 += v * s3, a34 += v * s4;
                }
            }
        }
        v8 *out = (v8 *)(acc + ((size_t)dy * k + n0) * 40);
        out[0] = a00, out[1] = a01, out[2] = a02, out[3] = a03, out[4] = a04;
        if (NG > 1) out[5] = a10, out[6] = a11, out[7] = a12, out[8] = a13, out[9] = a14;
        if (NG > 2) out[10] = a20, out[11] = a21, out[12] = a22, out[13] = a23, out[14] = a24;
        if (NG > 3) out[15] = a30, out[16] = a31, out[17] = a32, out[18] = a33, out[19] = a34;
    }
}

/* With 32 vector registers four neighbours' sums fit at once, else two. */
#ifndef GATHER_GROUP /* neighbours per call of gather_group_5x8 */
#ifdef HAVE_32_VECTOR_REGISTERS
#define GATHER_GROUP 4
#else
#define GATHER_GROUP 2
#endif
#endif

static void gather_block_5x8(const params *P, const float *restrict xp, const float *restrict spread, int lr,
                             int lc, int base_r, int base_c, float *restrict acc) {
    const int k = P->k, bh = P->hp / 5, bw = P->wp / 5;
    const int rows = lr < bh - base_r ? lr : bh - base_r, cols = lc < bw - base_c ? lc : bw - base_c;
    int n0 = 0;
    if (GATHER_GROUP >= 4)
        for (; n0 + 4 <= k; n0 += 4) gather_group_5x8(P, xp, spread, lr, lc, base_r, base_c, rows, cols, n0, acc, 4);
    if (GATHER_GROUP >= 3)
        for (; n0 + 3 <= k; n0 += 3) gather_group_5x8(P, xp, spread, lr, lc, base_r, base_c, rows, cols, n0, acc, 3);
    if (GATHER_GROUP >= 2)
        for (; n0 + 2 <= k; n0 += 2) gather_group_5x8(P, xp, spread, lr, lc, base_r, base_c, rows, cols, n0, acc, 2);
    for (; n0 < k; n0++) gather_group_5x8(P, xp, spread, lr, lc, base_r, base_c, rows, cols, n0, acc, 1);
}
#define HAVE_GATHER_5X8 1
#endif

static void unpack(const int64_t *ip, const float *fp, params *P) {
    P->hp = (int)ip[P_HP];
    P->wp = (int)ip[P_WP];
    P->c = (int)ip[P_C];
    P->e = (int)ip[P_E];
    P->patch = (int)ip[P_PATCH];
    P->s = (int)ip[P_STRIDE];
    P->nb = P->s > 0 ? P->patch / P->s : 0;
    P->nh = (int)ip[P_NH];
    P->nw = (int)ip[P_NW];
    P->wh = (int)ip[P_WH];
    P->ww = (int)ip[P_WW];
    P->window = (int)ip[P_WINDOW];
    P->k = (int)ip[P_K];
    P->has_norm = (int)ip[P_HAS_NORM];
    P->update_alpha = (int)ip[P_UPDATE_ALPHA];
    P->h = (int)ip[P_H];
    P->w = (int)ip[P_W];
    P->top = (int)ip[P_TOP];
    P->left = (int)ip[P_LEFT];
    P->norm_scale = fp[0];
    P->norm_shift = fp[1];
}

/* Destination block rows [r0, r1) of one image. xp (hp, wp, C) and ep (hp, wp, E) padded, tg (nh, nw) the
 * temperatures, out (h, w, (k + 1) C): concat(x, N_1 - x, ..., N_k - x) for the unpadded pixels of the band.
 * Returns 0, or -1 when scratch memory could not be allocated, -2 for parameters it does not handle. */
#ifdef _WIN32
#define N3_EXPORT __declspec(dllexport)
#else
#define N3_EXPORT
#endif

N3_EXPORT int n3_aggregate_band(const float *xp, const float *ep, const float *tg, float *out, const int64_t *ip,
                      const float *fp, int r0, int r1) {
    params P;
    unpack(ip, fp, &P);
    if (P.s < 1 || P.patch < P.s || P.patch % P.s != 0 || P.k < 1 || P.k > 64 || P.c < 1 || P.e < 1 || P.wh < 1 ||
        P.ww < 1 || P.window < 1)
        return -2;
    const int nb = P.nb, s = P.s, k = P.k, C = P.c, m_count = P.wh * P.ww;
    const int lr = P.wh + nb - 1, lc = P.ww + nb - 1;
    const size_t row_weights = (size_t)P.nw * k * m_count;
    float *ring = malloc(sizeof(float) * row_weights * nb);
    float *alpha = malloc(sizeof(float) * m_count), *z = malloc(sizeof(float) * m_count);
    float *aux = malloc(sizeof(float) * (size_t)k * KNN_AUX);
    float *spread = malloc(sizeof(float) * (size_t)k * lr * lc);
    float *acc = malloc(sizeof(float) * (size_t)s * s * k * C);
    int *ring_row = malloc(sizeof(int) * nb);
    const size_t bd_row = (size_t)(P.wp / s) * lr * lc;
    float *bd_ring = malloc(sizeof(float) * bd_row * nb);
    int *bd_row_of = malloc(sizeof(int) * nb);
    float **bd = malloc(sizeof(float *) * nb);
    if (!ring || !alpha || !z || !aux || !spread || !acc || !ring_row || !bd_ring || !bd_row_of || !bd) {
        free(ring), free(alpha), free(z), free(aux), free(spread), free(acc), free(ring_row), free(bd_ring), free(bd_row_of), free(bd);
        return -1;
    }
    for (int n = 0; n < nb; n++) ring_row[n] = bd_row_of[n] = -1;
    const int bw = P.wp / s, out_ch = (k + 1) * C;
    for (int R = r0; R < r1; R++) {
        /* the query rows covering this block row: R - nb + 1 .. R (within the grid) */
        for (int i = R - nb + 1; i <= R; i++) {
            if (i < 0 || i >= P.nh || ring_row[i % nb] == i) continue;
            for (int u = 0; u < nb; u++) { /* block rows i .. i + nb - 1 */
                const int r = i + u;
                bd[u] = bd_ring + (size_t)(r % nb) * bd_row;
                if (bd_row_of[r % nb] != r) {
                    block_row_distances(&P, ep, r, bd[u]);
                    bd_row_of[r % nb] = r;
                }
            }
            float *row = ring + (size_t)(i % nb) * row_weights;
            for (int j = 0; j < P.nw; j++) query_weights(&P, bd, tg, i, j, row + (size_t)j * k * m_count, alpha, z, aux);
            ring_row[i % nb] = i;
        }
        const int u0 = R - P.nh + 1 > 0 ? R - P.nh + 1 : 0, u1 = R < nb - 1 ? R : nb - 1;
        int base_r = 1 << 30;
        for (int u = u0; u <= u1; u++) {
            const int v = window_start(R - u, P.window, P.wh, P.nh) + u;
            if (v < base_r) base_r = v;
        }
        for (int Cb = 0; Cb < bw; Cb++) {
            const int v0 = Cb - P.nw + 1 > 0 ? Cb - P.nw + 1 : 0, v1 = Cb < nb - 1 ? Cb : nb - 1;
            int base_c = 1 << 30;
            for (int v = v0; v <= v1; v++) {
                const int st = window_start(Cb - v, P.window, P.ww, P.nw) + v;
                if (st < base_c) base_c = st;
            }
            /* spread the covering queries' weights to source blocks: (k, lr, lc) */
            memset(spread, 0, sizeof(float) * (size_t)k * lr * lc);
            for (int u = u0; u <= u1; u++) {
                const int i = R - u, or0 = window_start(i, P.window, P.wh, P.nh) + u - base_r;
                const float *row = ring + (size_t)(i % nb) * row_weights;
                for (int v = v0; v <= v1; v++) {
                    const int j = Cb - v, oc0 = window_start(j, P.window, P.ww, P.nw) + v - base_c;
                    const float *wq = row + (size_t)j * k * m_count;
                    for (int n = 0; n < k; n++) {
                        for (int a = 0; a < P.wh; a++) {
                            add_row(spread + ((size_t)n * lr + or0 + a) * lc + oc0,
                                    wq + (size_t)n * m_count + (size_t)a * P.ww, P.ww);
                        }
                    }
                }
            }
#ifdef HAVE_GATHER_5X8
            if (s == 5 && C == 8) {
                gather_block_5x8(&P, xp, spread, lr, lc, base_r, base_c, acc);
            } else if (s == 5 && C == 11) {
                gather_block_5x11(&P, xp, spread, lr, lc, base_r, base_c, acc);
            } else
#endif
            {
                memset(acc, 0, sizeof(float) * (size_t)s * s * k * C);
                gather_block(&P, xp, spread, lr, lc, base_r, base_c, acc, s, C);
            }
            /* average over the covering patches, crop the padding, write concat(x, N_j - x) */
            const float inv_count = 1.0f / (float)((u1 - u0 + 1) * (v1 - v0 + 1));
            for (int dy = 0; dy < s; dy++) {
                const int y = R * s + dy - P.top;
                if (y < 0 || y >= P.h) continue;
                for (int dx = 0; dx < s; dx++) {
                    const int x = Cb * s + dx - P.left;
                    if (x < 0 || x >= P.w) continue;
                    const float *xv = xp + ((size_t)(R * s + dy) * P.wp + (size_t)Cb * s + dx) * C;
                    float *o = out + ((size_t)y * P.w + x) * out_ch;
                    const float *a = acc + (size_t)dy * k * s * C + (size_t)dx * C;
#ifdef HAVE_V8
                    if (C == 8) { /* one vector per neighbour */
                        const v8 xv8 = *(const v8 *)xv;
                        *(v8 *)o = xv8;
                        for (int n = 0; n < k; n++) *(v8 *)(o + 8 + 8 * n) = *(const v8 *)(a + (size_t)n * s * 8) * inv_count - xv8;
                        continue;
                    }
#endif
                    for (int ch = 0; ch < C; ch++) o[ch] = xv[ch];
                    for (int n = 0; n < k; n++)
                        for (int ch = 0; ch < C; ch++)
                            o[C + n * C + ch] = a[(size_t)n * s * C + ch] * inv_count - xv[ch];
                }
            }
        }
    }
    free(ring), free(alpha), free(z), free(aux), free(spread), free(acc), free(ring_row), free(bd_ring), free(bd_row_of),
        free(bd);
    return 0;
}

/* sum_n g_n v_n where sum_n g_n = 0 holds in exact arithmetic (g the gradient of a row's logits: the selection does not
 * change when they are shifted alike), taken as sum_n g_n (v_n - c) about the |g|-weighted mean c of v: the rounding
 * error of each g_n is then multiplied by v_n - c, not by v_n (a dominant candidate's logit can be 1e5 from the
 * others). Entries with g_n = 0 (v_n may be -inf there) are left out. */
static float centred_dot(const float *restrict g, const float *restrict v, int m) {
    float mass = 0.0f, first = 0.0f;
    for (int n = 0; n < m; n++) {
        if (g[n] == 0.0f) continue;
        mass += fabsf(g[n]);
        first += fabsf(g[n]) * v[n];
    }
    if (mass == 0.0f) return 0.0f;
    const float centre = first / mass;
    float dot = 0.0f;
    for (int n = 0; n < m; n++)
        if (g[n] != 0.0f) dot += g[n] * (v[n] - centre);
    return dot;
}

/* One row backward: from gw (k, m), the gradient of the weights, to galpha (m) and the temperature's gradient. g (m)
 * scratch; zs (k, m) scratch for rows with a KNN_EXACT step; scratch (k m + k KNN_AUX + m >= 3 m for k > 1) floats.
 * Reverse steps j: with g the gradient of z^{j+1} and h = g / t ("alpha") or g ("logits") that of log(1 - w^j),
 * r_n = w_n / (1 - w_n), S = sum_{n != top} h_n r_n, q_n = w_n / (1 - w_top) (the others' own softmax),
 * D = sum_n G_n w_n:
 *   non-top n: g_n += -h_n r_n + w_n (S + G_n - D) + h_top w_top q_n;  top: g_top += -h_top w_top + w_top (S + G_top - D)
 * (d log(1 - w_m) / dz_n = -r_m (delta_mn - w_n), dw_m / dz_n = w_m (delta_mn - w_n)); z^1 = alpha / t at the end. */
static float knn_row_backward(const float *restrict gw, const float *restrict w, const int32_t *restrict top,
                              const float *restrict aux, const float *restrict alpha, float t, float *restrict galpha,
                              float *restrict g, float *restrict zs, float *restrict scratch, int m, int k,
                              int update_alpha) {
    int exact = 0;
    for (int j = 0; j < k; j++) exact |= aux[(size_t)j * KNN_AUX + 2] == KNN_EXACT;
    if (exact) { /* the logits of every step again (the same arithmetic as the forward) */
        int32_t top2[64];
        float *w2 = scratch, *aux2 = scratch + (size_t)k * m, *z2 = aux2 + (size_t)k * KNN_AUX;
        knn_row_forward(alpha, t, w2, top2, aux2, z2, zs, m, k, update_alpha);
    }
    memset(g, 0, sizeof(float) * m);
    /* a step's weights with the top's zeroed, their odds w / (1 - w), log(1 - w) */
    float *restrict wz = scratch, *restrict rr = scratch + m, *restrict ll = scratch + 2 * (size_t)m;
    float dt = 0.0f;
    for (int j = k - 1; j >= 0; j--) {
        const int tp = top[j];
        if (tp < 0) continue;
        const float *restrict wj = w + (size_t)j * m, *restrict gj = gw + (size_t)j * m, *a = aux + (size_t)j * KNN_AUX;
        const float wt = wj[tp];
        memcpy(wz, wj, sizeof(float) * m);
        wz[tp] = 0.0f;
        const int kind = (int)a[2];
        if (j + 1 == k || kind == KNN_ALONE) { /* no update after this step (or nothing left to update) */
            float d = gj[tp] * wt;
            for (int n = 0; n < m; n++) d += gj[n] * wz[n];
            for (int n = 0; n < m; n++) g[n] += wz[n] * (gj[n] - d);
            g[tp] += wt * (gj[tp] - d);
            continue;
        }
        const float c = update_alpha ? 1.0f / t : 1.0f, g_top = g[tp], ht = g_top * c;
        float d = gj[tp] * wt, s = 0.0f;
        for (int n = 0; n < m; n++) { /* the top contributes 0 through wz (its terms are added separately) */
            const float r = wz[n] / (1.0f - wz[n]);
            rr[n] = r;
            d += gj[n] * wz[n];
            s += g[n] * r;
        }
        s *= c;
        if (update_alpha) { /* z^{j+1} = z^j + log(1 - w^j) / t: -sum_n g_n log(1 - w_n) / t^2, about a centre */
            for (int n = 0; n < m; n++) ll[n] = log_one_minus(wz[n]);
            ll[tp] = a[1];
            dt -= centred_dot(g, ll, m) / (t * t);
        }
        if (kind == KNN_EXACT) { /* q_n = exp(z_n - z_top - log(others)) */
            const float *zj = zs + (size_t)j * m;
            const float shift = zj[tp] + a[1] + logf(1.0f + a[0]);
            for (int n = 0; n < m; n++) {
                const float q = n == tp ? 0.0f : exp_nonpositive(zj[n] - shift); /* (the top's is replaced below) */
                g[n] += -g[n] * c * rr[n] + wz[n] * (s + gj[n] - d) + ht * wt * q;
            }
        } else {
            const float inv_rest = (1.0f + a[0]) / a[0], hw = ht * wt; /* 1 / (1 - w_top); w_n / (1 - w_top) <= 1 */
            for (int n = 0; n < m; n++) g[n] += -g[n] * c * rr[n] + wz[n] * (s + gj[n] - d) + hw * (wz[n] * inv_rest);
        }
        g[tp] = g_top - ht * wt + wt * (s + gj[tp] - d); /* the top candidate: the loop's value replaced */
    }
    for (int n = 0; n < m; n++) galpha[n] = g[n] / t;
    return dt - centred_dot(g, alpha, m) / (t * t); /* z^1 = alpha / t */
}
/* Rows [r0, r1) of alpha (rows, m) with temperatures temp (rows): weights w (rows, k, m), top (rows, k) and aux
 * (rows, k, KNN_AUX) for the backward. Returns 0, -1 without scratch memory, -2 for parameters it does not handle. */
N3_EXPORT int n3_knn_forward(const float *alpha, const float *temp, float *w, int32_t *top, float *aux, int64_t r0,
                             int64_t r1, int64_t m, int k, int update_alpha) {
    if (k < 1 || k > 64 || m < 1) return -2;
    float *z = malloc(sizeof(float) * (size_t)m);
    if (!z) return -1;
    for (int64_t r = r0; r < r1; r++)
        knn_row_forward(alpha + r * m, temp[r], w + r * k * m, top + r * k, aux + r * k * KNN_AUX, z, NULL, (int)m, k,
                        update_alpha);
    free(z);
    return 0;
}

/* The backward of n3_knn_forward for rows [r0, r1): from gw (rows, k, m) to galpha (rows, m) and gt (rows). */
N3_EXPORT int n3_knn_backward(const float *gw, const float *w, const int32_t *top, const float *aux,
                              const float *alpha, const float *temp, float *galpha, float *gt, int64_t r0, int64_t r1,
                              int64_t m, int k, int update_alpha) {
    if (k < 1 || k > 64 || m < 1) return -2;
    float *g = malloc(sizeof(float) * (size_t)m);
    float *zs = malloc(sizeof(float) * (size_t)k * m);
    float *scratch = malloc(sizeof(float) * ((size_t)k * m + (size_t)k * KNN_AUX + (size_t)m));
    if (!g || !zs || !scratch) {
        free(g), free(zs), free(scratch);
        return -1;
    }
    for (int64_t r = r0; r < r1; r++)
        gt[r] = knn_row_backward(gw + r * k * m, w + r * k * m, top + r * k, aux + r * k * KNN_AUX, alpha + r * m,
                                 temp[r], galpha + r * m, g, zs, scratch, (int)m, k, update_alpha);
    free(g), free(zs), free(scratch);
    return 0;
}

/* The block spread matrix of training tiles whose every window is the whole region (n3._SpreadWhole), rows
 * [r0, r1) of (B, DH): from the weights w (B, tr, tc, k, wh, ww), spread (B, DH, DW, k, SH, SW) with DH = tr + nb - 1,
 * DW = tc + nb - 1, SH = wh + nb - 1, SW = ww + nb - 1 and
 *   spread[b, di, dj, n, sa, sb] = sum over sub-blocks (u, v) of w[b, di - u, dj - v, n, sa - u, sb - v]
 * (the terms whose indices lie in w), added in the order (u, v) = (0, 0), (0, 1), ..., as the PyTorch path adds its
 * strided views: the same floats. One pass writing the matrix instead of a zero fill and nb^2 passes over it. */
N3_EXPORT int n3_spread_whole_forward(const float *w, float *spread, int64_t r0, int64_t r1, int tr, int tc, int k,
                                      int wh, int ww, int nb) {
    if (tr < 1 || tc < 1 || k < 1 || wh < 1 || ww < 1 || nb < 1) return -2;
    const int dh = tr + nb - 1, dw = tc + nb - 1, sh = wh + nb - 1, sw = ww + nb - 1;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t b = r / dh;
        const int di = (int)(r % dh);
        for (int dj = 0; dj < dw; dj++)
            for (int n = 0; n < k; n++)
                for (int sa = 0; sa < sh; sa++) {
                    float *restrict o = spread + ((((b * dh + di) * dw + dj) * k + n) * sh + sa) * sw;
                    memset(o, 0, sizeof(float) * (size_t)sw);
                    for (int u = 0; u < nb; u++) {
                        const int i = di - u, a = sa - u;
                        if (i < 0 || i >= tr || a < 0 || a >= wh) continue;
                        for (int v = 0; v < nb; v++) {
                            const int c = dj - v;
                            if (c < 0 || c >= tc) continue;
                            const float *restrict src = w + ((((b * tr + i) * tc + c) * k + n) * wh + a) * ww;
                            float *restrict dst = o + v;
                            for (int t = 0; t < ww; t++) dst[t] += src[t];
                        }
                    }
                }
    }
    return 0;
}

/* Its backward, rows [r0, r1) of (B, tr): gw[b, i, c, n, a, t] = sum over (u, v) of g[b, i + u, c + v, n, a + u, t + v]
 * for the gradient g (B, DH, DW, k, SH, SW) of the spread matrix, in the same order as the PyTorch path's sum of
 * views (the first copied, the others added). */
N3_EXPORT int n3_spread_whole_backward(const float *g, float *gw, int64_t r0, int64_t r1, int tr, int tc, int k,
                                       int wh, int ww, int nb) {
    if (tr < 1 || tc < 1 || k < 1 || wh < 1 || ww < 1 || nb < 1) return -2;
    const int dh = tr + nb - 1, dw = tc + nb - 1, sh = wh + nb - 1, sw = ww + nb - 1;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t b = r / tr;
        const int i = (int)(r % tr);
        for (int c = 0; c < tc; c++)
            for (int n = 0; n < k; n++)
                for (int a = 0; a < wh; a++) {
                    float *restrict o = gw + ((((b * tr + i) * tc + c) * k + n) * wh + a) * ww;
                    for (int u = 0; u < nb; u++)
                        for (int v = 0; v < nb; v++) {
                            const float *restrict src =
                                g + ((((b * dh + i + u) * dw + c + v) * k + n) * sh + a + u) * sw + v;
                            if (u == 0 && v == 0)
                                memcpy(o, src, sizeof(float) * (size_t)ww);
                            else
                                for (int t = 0; t < ww; t++) o[t] += src[t];
                        }
                }
    }
    return 0;
}

/* n3._BlocksToPixels in one pass each way. q: B, C, H, W, k, s, bh, bw, top, left and the four element strides of x
 * (forward) or of the gradient (backward), in the order (B, C, H, W).
 * Forward, rows [r0, r1) of (B, H): out (B, H, W, (k + 1) C), channels-last, from acc (B, bh, bw, k, C, s, s), x and
 * inv (bh, bw): out[.., :C] = x, out[.., C + n C + c] = acc[b, Y / s, X / s, n, c, Y % s, X % s] inv[Y / s, X / s] - x[c]
 * with (Y, X) = (y + top, x + left). */
N3_EXPORT int n3_blocks_to_pixels_forward(const float *acc, const float *x, const float *inv, float *out,
                                          const int64_t *q, int64_t r0, int64_t r1) {
    const int64_t C = q[1], H = q[2], W = q[3], k = q[4], s = q[5], bh = q[6], bw = q[7], top = q[8], left = q[9];
    const int64_t xs0 = q[10], xs1 = q[11], xs2 = q[12], xs3 = q[13], ss = s * s, oc = (k + 1) * C;
    if (C < 1 || k < 1 || s < 1 || top < 0 || left < 0 || (H + top) > bh * s || (W + left) > bw * s) return -2;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t b = r / H, y = r % H, Y = y + top, by = Y / s, sy = Y % s;
        for (int64_t xx = 0; xx < W; xx++) {
            const int64_t X = xx + left, bx = X / s, sx = X % s;
            const float *restrict xv = x + b * xs0 + y * xs2 + xx * xs3;
            const float *restrict a = acc + ((b * bh + by) * bw + bx) * k * C * ss + sy * s + sx;
            const float ic = inv[by * bw + bx];
            float *restrict o = out + ((b * H + y) * W + xx) * oc;
            for (int64_t c = 0; c < C; c++) o[c] = xv[c * xs1];
            for (int64_t n = 0; n < k; n++)
                for (int64_t c = 0; c < C; c++) o[C + n * C + c] = a[(n * C + c) * ss] * ic - o[c];
        }
    }
    return 0;
}

/* Backward, rows [r0, r1) of (B, bh): from the gradient g of out, gacc (B, bh, bw, k, C, s, s) = g's difference channels
 * times inv, 0 on the padding, and gx (B, H, W, C), channels-last: g[.., :C] - sum_n g[.., C + n C + c] (on the rows
 * of blocks the range holds). */
N3_EXPORT int n3_blocks_to_pixels_backward(const float *g, const float *inv, float *gacc, float *gx, const int64_t *q,
                                           int64_t r0, int64_t r1) {
    const int64_t C = q[1], H = q[2], W = q[3], k = q[4], s = q[5], bh = q[6], bw = q[7], top = q[8], left = q[9];
    const int64_t gs0 = q[10], gs1 = q[11], gs2 = q[12], gs3 = q[13], ss = s * s;
    if (C < 1 || k < 1 || s < 1 || top < 0 || left < 0 || (H + top) > bh * s || (W + left) > bw * s) return -2;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t b = r / bh, by = r % bh;
        for (int64_t sy = 0; sy < s; sy++) {
            const int64_t y = by * s + sy - top;
            for (int64_t X = 0; X < bw * s; X++) {
                const int64_t bx = X / s, sx = X % s, xx = X - left;
                float *restrict a = gacc + ((b * bh + by) * bw + bx) * k * C * ss + sy * s + sx;
                if (y < 0 || y >= H || xx < 0 || xx >= W) { /* the padding got no gradient */
                    for (int64_t nc = 0; nc < k * C; nc++) a[nc * ss] = 0.0f;
                    continue;
                }
                const float *restrict gv = g + b * gs0 + y * gs2 + xx * gs3;
                const float ic = inv[by * bw + bx];
                float *restrict gxo = gx + ((b * H + y) * W + xx) * C;
                for (int64_t c = 0; c < C; c++) {
                    float sum = 0.0f;
                    for (int64_t n = 0; n < k; n++) {
                        const float v = gv[(C + n * C + c) * gs1];
                        a[(n * C + c) * ss] = v * ic;
                        sum += v;
                    }
                    gxo[c] = gv[c * gs1] - sum;
                }
            }
        }
    }
    return 0;
}

/* The distance norm in training (n3.DistanceNorm with batch statistics): alpha (rows, m) of which the entries where
 * valid (vrows, m) is set count (alpha's row r reads valid's row r % vrows), in double. Forward: stats = (mean,
 * biased variance, count) of the valid entries; out = (alpha - mean) / sqrt(var + eps) w + b there, alpha elsewhere.
 * Two passes for the statistics (as torch.var), one for the output. Returns -2 without a valid entry. */
N3_EXPORT int n3_distance_norm_forward(const float *alpha, const uint8_t *valid, float *out, double *stats,
                                       int64_t rows, int64_t vrows, int64_t m, double eps, double w, double b) {
    double sum = 0.0, sq = 0.0;
    int64_t count = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *a = alpha + r * m;
        const uint8_t *v = valid + (r % vrows) * m;
        for (int64_t i = 0; i < m; i++)
            if (v[i]) sum += a[i], count++;
    }
    if (count == 0) return -2;
    const double mean = sum / (double)count;
    for (int64_t r = 0; r < rows; r++) {
        const float *a = alpha + r * m;
        const uint8_t *v = valid + (r % vrows) * m;
        for (int64_t i = 0; i < m; i++)
            if (v[i]) sq += ((double)a[i] - mean) * ((double)a[i] - mean);
    }
    const double var = sq / (double)count, scale = 1.0 / sqrt(var + eps);
    for (int64_t r = 0; r < rows; r++) {
        const float *a = alpha + r * m;
        const uint8_t *v = valid + (r % vrows) * m;
        float *o = out + r * m;
        for (int64_t i = 0; i < m; i++) o[i] = v[i] ? (float)(((double)a[i] - mean) * scale * w + b) : a[i];
    }
    stats[0] = mean, stats[1] = var, stats[2] = (double)count;
    return 0;
}

/* Its backward from the gradient g of out: with x^ = (alpha - mean) / sqrt(var + eps) and n valid entries,
 * galpha = w / sqrt(var + eps) (g - sum(g) / n - x^ sum(g x^) / n) at valid entries, g elsewhere; sums[0..1] = sum(g),
 * sum(g x^) over the valid entries (the gradients of b and w). */
N3_EXPORT int n3_distance_norm_backward(const float *g, const float *alpha, const uint8_t *valid, float *galpha,
                                        double *sums, int64_t rows, int64_t vrows, int64_t m, double mean, double var,
                                        double eps, double w) {
    const double scale = 1.0 / sqrt(var + eps);
    double sg = 0.0, sgx = 0.0;
    int64_t count = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *a = alpha + r * m, *gr = g + r * m;
        const uint8_t *v = valid + (r % vrows) * m;
        for (int64_t i = 0; i < m; i++)
            if (v[i]) {
                sg += gr[i];
                sgx += (double)gr[i] * (((double)a[i] - mean) * scale);
                count++;
            }
    }
    if (count == 0) return -2;
    const double mg = sg / (double)count, mgx = sgx / (double)count;
    for (int64_t r = 0; r < rows; r++) {
        const float *a = alpha + r * m, *gr = g + r * m;
        const uint8_t *v = valid + (r % vrows) * m;
        float *o = galpha + r * m;
        for (int64_t i = 0; i < m; i++)
            o[i] = v[i] ? (float)(w * scale * ((double)gr[i] - mg - ((double)a[i] - mean) * scale * mgx)) : gr[i];
    }
    sums[0] = sg, sums[1] = sgx;
    return 0;
}

/* The weights' gradient over rows [r0, r1) of a batch taken as one column of b·h rows (row r: image r / h, row
 * r % h): every tap of every row through TAP, for input and gradient of element type T (float32, or bf16 stored as
 * uint16): one row walk for both. */
#define WGRAD_ROWS(NAME, T, TAP)                                                                                      \
    static inline __attribute__((always_inline)) void NAME(const T *in, const T *g, int h, int w, int cin,         \
                                                           const int cout, const int nv, float *dw, int64_t r0,    \
                                                           int64_t r1) {                                           \
        for (int64_t r = r0; r < r1; r++) {                                                                       \
            const int64_t img = r / h;                                                                             \
            const int y = (int)(r % h);                                                                            \
            const T *gr = g + ((size_t)img * h + y) * w * cout;                                                    \
            for (int dy = -1; dy <= 1; dy++) {                                                                     \
                const int yy = y + dy;                                                                             \
                if (yy < 0 || yy >= h) continue;                                                                   \
                const T *xr = in + ((size_t)img * h + yy) * w * cin;                                               \
                for (int dx = -1; dx <= 1; dx++)                                                                   \
                    TAP(xr, gr, w, cin, cout, nv, dx, dw + (size_t)((dy + 1) * 3 + dx + 1) * cin);                 \
            }                                                                                                      \
        }                                                                                                          \
    }

/* ---- Narrow 3×3 convolutions (inference) ----
 * out (h, w, cout) = bias + the 3×3 convolution, zero padding 1, of in (h, w, cin), channels-last float32, weights
 * wt (cout, 3, 3, cin), rows [r0, r1). For the convolutions with few output channels (N3Net's 64 → 8 and 64 → 1),
 * which oneDNN runs far below its rate for wide ones: each pixel's cin × 9 inputs are read once for all cout outputs
 * (in vectors of channels, one horizontal sum per output at the end), two pixels at a time in the image's interior
 * so that each weight vector loaded serves both. cin a multiple of the vector width VC (16 with AVX-512, else 8),
 * at most 128; cout 1 .. 8. */
#if defined(HAVE_V8)
#if defined(__AVX512F__)
typedef float vc __attribute__((vector_size(64), aligned(4)));
#define VC 16
#else
typedef v8 vc;
#define VC 8
#endif
static inline vc load_vc(const float *p) { return *(const vc *)p; }
static inline float hsum_vc(vc a) {
    float s = 0.0f;
    for (int i = 0; i < VC; i++) s += a[i];
    return s;
}

static inline __attribute__((always_inline)) void conv_one(const float *restrict in, int h, int w, int cin,
                                                           const float *restrict wt, const float *restrict bias,
                                                           const int cout, float *restrict out, int ostride, int y,
                                                           int x) {
    vc acc[8];
    for (int o = 0; o < cout; o++) acc[o] = (vc){0};
    for (int dy = -1; dy <= 1; dy++) {
        const int yy = y + dy;
        if (yy < 0 || yy >= h) continue;
        for (int dx = -1; dx <= 1; dx++) {
            const int xx = x + dx;
            if (xx < 0 || xx >= w) continue;
            const float *p = in + ((size_t)yy * w + xx) * cin, *wq = wt + (size_t)((dy + 1) * 3 + dx + 1) * cin;
            for (int c = 0; c < cin; c += VC) {
                const vc v = load_vc(p + c);
                for (int o = 0; o < cout; o++) acc[o] += v * load_vc(wq + (size_t)o * 9 * cin + c);
            }
        }
    }
    float *q = out + ((size_t)y * w + x) * ostride;
    for (int o = 0; o < cout; o++) q[o] = hsum_vc(acc[o]) + bias[o];
}

/* pixels x and x + 1 of row y, both at least one pixel from the left and right borders */
static inline __attribute__((always_inline)) void conv_pair(const float *restrict in, int h, int w, int cin,
                                                            const float *restrict wt, const float *restrict bias,
                                                            const int cout, float *restrict out, int ostride, int y,
                                                            int x) {
    vc a0[8], a1[8];
    for (int o = 0; o < cout; o++) a0[o] = a1[o] = (vc){0};
    for (int dy = -1; dy <= 1; dy++) {
        const int yy = y + dy;
        if (yy < 0 || yy >= h) continue;
        for (int dx = -1; dx <= 1; dx++) {
            const float *p = in + ((size_t)yy * w + x + dx) * cin, *wq = wt + (size_t)((dy + 1) * 3 + dx + 1) * cin;
            for (int c = 0; c < cin; c += VC) {
                const vc v0 = load_vc(p + c), v1 = load_vc(p + cin + c);
                for (int o = 0; o < cout; o++) {
                    const vc k = load_vc(wq + (size_t)o * 9 * cin + c);
                    a0[o] += v0 * k, a1[o] += v1 * k;
                }
            }
        }
    }
    float *q = out + ((size_t)y * w + x) * ostride;
    for (int o = 0; o < cout; o++) q[o] = hsum_vc(a0[o]) + bias[o], q[ostride + o] = hsum_vc(a1[o]) + bias[o];
}

/* Outputs [0, cout) of row y, written with stride ostride (the output's channel count). */
static inline __attribute__((always_inline)) void conv_row(const float *in, int h, int w, int cin, const float *wt,
                                                           const float *bias, const int cout, float *out, int ostride,
                                                           int y) {
    int x = 0;
    conv_one(in, h, w, cin, wt, bias, cout, out, ostride, y, x++);
    for (; x + 2 < w; x += 2) conv_pair(in, h, w, cin, wt, bias, cout, out, ostride, y, x);
    for (; x < w; x++) conv_one(in, h, w, cin, wt, bias, cout, out, ostride, y, x);
}

/* Two pixels of up to 8 outputs hold 16 accumulators: all of AVX2's 16 vector registers, so with 8-float vectors
 * more than 4 outputs go in two groups, each over the row (still in the caches). */
#define CONV_GROUP (VC == 16 ? 8 : 4)

static inline __attribute__((always_inline)) void conv_rows(const float *in, int h, int w, int cin, const float *wt,
                                                            const float *bias, const int cout, float *out, int r0,
                                                            int r1) {
    for (int y = r0; y < r1; y++) {
        if (cout <= CONV_GROUP) {
            conv_row(in, h, w, cin, wt, bias, cout, out, cout, y);
        } else {
            conv_row(in, h, w, cin, wt, bias, CONV_GROUP, out, cout, y);
            conv_row(in, h, w, cin, wt + (size_t)CONV_GROUP * 9 * cin, bias + CONV_GROUP, cout - CONV_GROUP,
                     out + CONV_GROUP, cout, y);
        }
    }
}

/* ---- Narrow 3×3 convolutions: the weights' gradient (training) ----
 * dw (cout, 3, 3, cin) += Σ over pixels of g (.., cout) × the input pixel under each tap (zero padding 1): the
 * adjoint of n3_conv3x3_narrow with respect to its weights, which oneDNN runs far below its rate too. Per tap and
 * per group of nv channel vectors, cout × nv accumulators over one row of pixels (each input vector loaded once for
 * all outputs, each gradient value broadcast once for the group), added to dw at the row's end. */
static inline __attribute__((always_inline)) void wgrad_tap(const float *restrict xr, const float *restrict gr, int w,
                                                            int cin, const int cout, const int nv, int dx,
                                                            float *restrict dwt) {
    const int xlo = dx < 0 ? 1 : 0, xhi = dx > 0 ? w - 1 : w;
    for (int c0 = 0; c0 < cin; c0 += nv * VC) {
        vc acc[4][8];
        for (int j = 0; j < nv; j++)
            for (int o = 0; o < cout; o++) acc[j][o] = (vc){0};
        for (int x = xlo; x < xhi; x++) {
            const float *p = xr + (size_t)(x + dx) * cin + c0, *q = gr + (size_t)x * cout;
            vc v[4];
            for (int j = 0; j < nv; j++) v[j] = load_vc(p + j * VC);
            for (int o = 0; o < cout; o++) {
                const float s = q[o];
                for (int j = 0; j < nv; j++) acc[j][o] += v[j] * s;
            }
        }
        for (int o = 0; o < cout; o++)
            for (int j = 0; j < nv; j++) {
                vc *d = (vc *)(dwt + (size_t)o * 9 * cin + c0 + j * VC);
                *d += acc[j][o];
            }
    }
}

WGRAD_ROWS(wgrad_rows, float, wgrad_tap)
#endif

N3_EXPORT int n3_conv3x3_narrow(const float *in, int64_t h, int64_t w, int64_t cin, const float *wt,
                                const float *bias, int64_t cout, float *out, int64_t r0, int64_t r1) {
    if (h < 1 || w < 1 || cin < 1 || cin > 128 || cin % 8 || cout < 1 || cout > 8 || r0 < 0 || r1 > h || r0 > r1)
        return -2;
#if defined(HAVE_V8)
    if (cin % VC) return -2;
    const int H = (int)h, W = (int)w, Ci = (int)cin;
    if (cout == 8) conv_rows(in, H, W, Ci, wt, bias, 8, out, (int)r0, (int)r1); /* constant cout: unrolled */
    else if (cout == 1) conv_rows(in, H, W, Ci, wt, bias, 1, out, (int)r0, (int)r1);
    else conv_rows(in, H, W, Ci, wt, bias, (int)cout, out, (int)r0, (int)r1);
#else
    for (int64_t y = r0; y < r1; y++)
        for (int64_t x = 0; x < w; x++)
            for (int64_t o = 0; o < cout; o++) {
                float s = bias[o];
                for (int64_t dy = -1; dy <= 1; dy++)
                    for (int64_t dx = -1; dx <= 1; dx++) {
                        if (y + dy < 0 || y + dy >= h || x + dx < 0 || x + dx >= w) continue;
                        const float *p = in + ((y + dy) * w + x + dx) * cin, *k = wt + (o * 9 + (dy + 1) * 3 + dx + 1) * cin;
                        for (int64_t c = 0; c < cin; c++) s += p[c] * k[c];
                    }
                out[(y * w + x) * cout + o] = s;
            }
#endif
    return 0;
}

/* dw (cout, 3, 3, cin) += the weights' gradient of n3_conv3x3_narrow over rows [r0, r1) of a batch of b images
 * (in (b, h, w, cin), g (b, h, w, cout), channels-last float32), the rows numbered through the batch (0 .. b·h). */
N3_EXPORT int n3_conv3x3_narrow_wgrad(const float *in, const float *g, int64_t b, int64_t h, int64_t w, int64_t cin,
                                      int64_t cout, float *dw, int64_t r0, int64_t r1) {
    if (b < 0 || h < 1 || w < 1 || cin < 1 || cin > 128 || cin % 8 || cout < 1 || cout > 8 || r0 < 0 || r1 > b * h
        || r0 > r1)
        return -2;
#if defined(HAVE_V8)
    if (cin % VC) return -2;
    const int H = (int)h, W = (int)w, Ci = (int)cin;
    const int wide = VC == 16 ? 2 : 1; /* vectors per group for 8 outputs: 16 (AVX-512) or 8 accumulators */
    if (cout == 8 && Ci % (wide * VC) == 0) wgrad_rows(in, g, H, W, Ci, 8, wide, dw, r0, r1);
    else if (cout == 1 && Ci % (4 * VC) == 0) wgrad_rows(in, g, H, W, Ci, 1, 4, dw, r0, r1);
    else wgrad_rows(in, g, H, W, Ci, (int)cout, 1, dw, r0, r1);
#else
    for (int64_t r = r0; r < r1; r++) {
        const int64_t img = r / h, y = r % h;
        for (int64_t x = 0; x < w; x++)
            for (int64_t o = 0; o < cout; o++) {
                const float s = g[((img * h + y) * w + x) * cout + o];
                for (int64_t dy = -1; dy <= 1; dy++)
                    for (int64_t dx = -1; dx <= 1; dx++) {
                        if (y + dy < 0 || y + dy >= h || x + dx < 0 || x + dx >= w) continue;
                        const float *p = in + ((img * h + y + dy) * w + x + dx) * cin;
                        float *d = dw + (o * 9 + (dy + 1) * 3 + dx + 1) * cin;
                        for (int64_t c = 0; c < cin; c++) d[c] += s * p[c];
                    }
            }
    }
#endif
    return 0;
}

/* ---- Narrow 3×3 convolutions in bfloat16 (inference under bf16 autocast, CPUs with AVX512-BF16) ----
 * The same convolution on bf16 input and weights (stored as uint16), each pair of channels multiplied and summed
 * into float32 by one vdpbf16ps lane (as oneDNN's bf16 convolutions do), plus a float32 bias; the result rounded
 * to bf16 (nearest even). cin a multiple of 32. */
#if defined(__AVX512BF16__) && defined(__AVX512F__)
#define HAVE_BF16_CONV 1

static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline __m512bh load_bh(const uint16_t *p) { return (__m512bh)_mm512_loadu_si512((const void *)p); }

/* n pixels (1 or 2) from (y, x) on; two only where both have their left and right neighbours */
static inline __attribute__((always_inline)) void conv_bf16_px(const uint16_t *restrict in, int h, int w, int cin,
                                                               const uint16_t *restrict wt, const float *restrict bias,
                                                               const int cout, uint16_t *restrict out, int y, int x,
                                                               const int n) {
    __m512 a0[8], a1[8];
    for (int o = 0; o < cout; o++) a0[o] = a1[o] = _mm512_setzero_ps();
    for (int dy = -1; dy <= 1; dy++) {
        const int yy = y + dy;
        if (yy < 0 || yy >= h) continue;
        for (int dx = -1; dx <= 1; dx++) {
            const int xx = x + dx;
            if (n == 1 && (xx < 0 || xx >= w)) continue;
            const uint16_t *p = in + ((size_t)yy * w + xx) * cin, *wq = wt + (size_t)((dy + 1) * 3 + dx + 1) * cin;
            for (int c = 0; c < cin; c += 32) {
                const __m512bh v0 = load_bh(p + c);
                const __m512bh v1 = n == 2 ? load_bh(p + cin + c) : v0;
                for (int o = 0; o < cout; o++) {
                    const __m512bh k = load_bh(wq + (size_t)o * 9 * cin + c);
                    a0[o] = _mm512_dpbf16_ps(a0[o], v0, k);
                    if (n == 2) a1[o] = _mm512_dpbf16_ps(a1[o], v1, k);
                }
            }
        }
    }
    uint16_t *q = out + ((size_t)y * w + x) * cout;
    for (int o = 0; o < cout; o++) {
        q[o] = to_bf16(_mm512_reduce_add_ps(a0[o]) + bias[o]);
        if (n == 2) q[cout + o] = to_bf16(_mm512_reduce_add_ps(a1[o]) + bias[o]);
    }
}

static inline __attribute__((always_inline)) void conv_bf16_rows(const uint16_t *in, int h, int w, int cin,
                                                                 const uint16_t *wt, const float *bias, const int cout,
                                                                 uint16_t *out, int r0, int r1) {
    for (int y = r0; y < r1; y++) {
        int x = 0;
        conv_bf16_px(in, h, w, cin, wt, bias, cout, out, y, x++, 1);
        for (; x + 2 < w; x += 2) conv_bf16_px(in, h, w, cin, wt, bias, cout, out, y, x, 2);
        for (; x < w; x++) conv_bf16_px(in, h, w, cin, wt, bias, cout, out, y, x, 1);
    }
}
#endif

#if defined(HAVE_BF16_CONV)
static inline __m512 bf16x16_to_ps(const uint16_t *p) { /* 16 bf16 → 16 floats (exact) */
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const void *)p)), 16));
}

static inline float bf16_to_float(uint16_t v) {
    const uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* n3_conv3x3_narrow_wgrad's tap on bf16 input and gradient (widened exactly to float32, summed in float32) */
static inline __attribute__((always_inline)) void wgrad_bf16_tap(const uint16_t *restrict xr,
                                                                 const uint16_t *restrict gr, int w, int cin,
                                                                 const int cout, const int nv, int dx,
                                                                 float *restrict dwt) {
    const int xlo = dx < 0 ? 1 : 0, xhi = dx > 0 ? w - 1 : w;
    for (int c0 = 0; c0 < cin; c0 += nv * 16) {
        __m512 acc[4][8];
        for (int j = 0; j < nv; j++)
            for (int o = 0; o < cout; o++) acc[j][o] = _mm512_setzero_ps();
        for (int x = xlo; x < xhi; x++) {
            const uint16_t *p = xr + (size_t)(x + dx) * cin + c0, *q = gr + (size_t)x * cout;
            __m512 v[4];
            for (int j = 0; j < nv; j++) v[j] = bf16x16_to_ps(p + j * 16);
            for (int o = 0; o < cout; o++) {
                const __m512 s = _mm512_set1_ps(bf16_to_float(q[o]));
                for (int j = 0; j < nv; j++) acc[j][o] = _mm512_fmadd_ps(v[j], s, acc[j][o]);
            }
        }
        for (int o = 0; o < cout; o++)
            for (int j = 0; j < nv; j++) {
                float *d = dwt + (size_t)o * 9 * cin + c0 + j * 16;
                _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), acc[j][o]));
            }
    }
}

WGRAD_ROWS(wgrad_bf16_rows, uint16_t, wgrad_bf16_tap)
#endif

/* dw (cout, 3, 3, cin) float32 += the weights' gradient of n3_conv3x3_narrow_bf16 over rows [r0, r1) of a batch
 * (in (b, h, w, cin), g (b, h, w, cout) bf16 as uint16). -2 where not built or not served. */
N3_EXPORT int n3_conv3x3_narrow_wgrad_bf16(const uint16_t *in, const uint16_t *g, int64_t b, int64_t h, int64_t w,
                                           int64_t cin, int64_t cout, float *dw, int64_t r0, int64_t r1) {
    if (b < 0 || h < 1 || w < 1 || cin < 32 || cin > 128 || cin % 32 || cout < 1 || cout > 8 || r0 < 0
        || r1 > b * h || r0 > r1)
        return -2;
#if defined(HAVE_BF16_CONV)
    const int H = (int)h, W = (int)w, Ci = (int)cin;
    if (cout == 8) wgrad_bf16_rows(in, g, H, W, Ci, 8, 2, dw, r0, r1);
    else if (cout == 1 && Ci % 64 == 0) wgrad_bf16_rows(in, g, H, W, Ci, 1, 4, dw, r0, r1);
    else wgrad_bf16_rows(in, g, H, W, Ci, (int)cout, 1, dw, r0, r1);
    return 0;
#else
    (void)in, (void)g, (void)dw;
    return -2;
#endif
}

/* 1 when n3_conv3x3_narrow_bf16 is built (AVX512-BF16 at compile time). */
N3_EXPORT int n3_has_bf16_conv(void) {
#if defined(HAVE_BF16_CONV)
    return 1;
#else
    return 0;
#endif
}

/* The bf16 narrow convolution of a batch (in (b, h, w, cin), wt (cout, 3, 3, cin), out (b, h, w, cout), all bf16
 * as uint16; bias float32), rows [r0, r1) numbered through the batch. -2 where not built or not served. */
N3_EXPORT int n3_conv3x3_narrow_bf16(const uint16_t *in, int64_t b, int64_t h, int64_t w, int64_t cin,
                                     const uint16_t *wt, const float *bias, int64_t cout, uint16_t *out, int64_t r0,
                                     int64_t r1) {
    if (b < 0 || h < 1 || w < 1 || cin < 32 || cin > 128 || cin % 32 || cout < 1 || cout > 8 || r0 < 0
        || r1 > b * h || r0 > r1)
        return -2;
#if defined(HAVE_BF16_CONV)
    for (int64_t img = r0 / h; img * h < r1; img++) {
        const int a = (int)(r0 > img * h ? r0 - img * h : 0), z = (int)(r1 < (img + 1) * h ? r1 - img * h : h);
        const uint16_t *src = in + (size_t)img * h * w * cin;
        uint16_t *dst = out + (size_t)img * h * w * cout;
        if (cout == 8) conv_bf16_rows(src, (int)h, (int)w, (int)cin, wt, bias, 8, dst, a, z);
        else if (cout == 1) conv_bf16_rows(src, (int)h, (int)w, (int)cin, wt, bias, 1, dst, a, z);
        else conv_bf16_rows(src, (int)h, (int)w, (int)cin, wt, bias, (int)cout, dst, a, z);
    }
    return 0;
#else
    (void)in, (void)wt, (void)bias, (void)out;
    return -2;
#endif
}

/* The narrow convolution of a batch: rows [r0, r1) numbered through the batch of b images (in (b, h, w, cin),
 * out (b, h, w, cout)). */
N3_EXPORT int n3_conv3x3_narrow_batch(const float *in, int64_t b, int64_t h, int64_t w, int64_t cin, const float *wt,
                                      const float *bias, int64_t cout, float *out, int64_t r0, int64_t r1) {
    if (b < 0 || h < 1 || r0 < 0 || r1 > b * h || r0 > r1) return -2;
    for (int64_t img = r0 / h; img * h < r1; img++) {
        const int64_t a = r0 > img * h ? r0 - img * h : 0, z = r1 < (img + 1) * h ? r1 - img * h : h;
        const int r = n3_conv3x3_narrow(in + (size_t)img * h * w * cin, h, w, cin, wt, bias, cout,
                                        out + (size_t)img * h * w * cout, a, z);
        if (r) return r;
    }
    return 0;
}

/* ---- Row-split kernels, by number, for the thread split below ----
 * args: the kernel's arguments but its row range, as 64-bit words (pointers, integers). ``chunk``: the index of the
 * range (the weights' gradient sums each range into its own buffer, args[8] floats apart). */
enum { K_KNN_F = 1, K_KNN_B, K_SPREAD_F, K_SPREAD_B, K_B2P_F, K_B2P_B, K_CONV_F, K_CONV_WGRAD, K_CONV_BF16,
       K_CONV_WGRAD_BF16 };

N3_EXPORT int n3_run_range(int id, const int64_t *a, int64_t r0, int64_t r1, int64_t chunk) {
#define A(i) ((void *)(intptr_t)a[i])
    switch (id) {
    case K_KNN_F:
        return n3_knn_forward(A(0), A(1), A(2), A(3), A(4), r0, r1, a[5], (int)a[6], (int)a[7]);
    case K_KNN_B:
        return n3_knn_backward(A(0), A(1), A(2), A(3), A(4), A(5), A(6), A(7), r0, r1, a[8], (int)a[9], (int)a[10]);
    case K_SPREAD_F:
        return n3_spread_whole_forward(A(0), A(1), r0, r1, (int)a[2], (int)a[3], (int)a[4], (int)a[5], (int)a[6],
                                       (int)a[7]);
    case K_SPREAD_B:
        return n3_spread_whole_backward(A(0), A(1), r0, r1, (int)a[2], (int)a[3], (int)a[4], (int)a[5], (int)a[6],
                                        (int)a[7]);
    case K_B2P_F:
        return n3_blocks_to_pixels_forward(A(0), A(1), A(2), A(3), A(4), r0, r1);
    case K_B2P_B:
        return n3_blocks_to_pixels_backward(A(0), A(1), A(2), A(3), A(4), r0, r1);
    case K_CONV_F:
        return n3_conv3x3_narrow_batch(A(0), a[1], a[2], a[3], a[4], A(5), A(6), a[7], A(8), r0, r1);
    case K_CONV_WGRAD:
        return n3_conv3x3_narrow_wgrad(A(0), A(1), a[2], a[3], a[4], a[5], a[6], (float *)A(7) + chunk * a[8], r0, r1);
    case K_CONV_BF16:
        return n3_conv3x3_narrow_bf16(A(0), a[1], a[2], a[3], a[4], A(5), A(6), a[7], A(8), r0, r1);
    case K_CONV_WGRAD_BF16:
        return n3_conv3x3_narrow_wgrad_bf16(A(0), A(1), a[2], a[3], a[4], a[5], a[6], (float *)A(7) + chunk * a[8], r0,
                                            r1);
    }
#undef A
    return -2;
}

/* 1 when built with OpenMP (n3_parallel_rows then splits the work among threads itself). */
N3_EXPORT int n3_openmp(void) {
#if defined(_OPENMP)
    return 1;
#else
    return 0;
#endif
}

/* Rows [0, rows) in ``chunks`` ranges (range i: rows·i/chunks .. rows·(i+1)/chunks), one per thread of the caller's
 * OpenMP team: where this library shares torch's OpenMP runtime, the threads that run torch's operators, which
 * after each one wait spinning for the next, so the kernels neither compete with them for the cores (as a second
 * pool of threads does while they spin) nor wait for a pool to wake up. Without OpenMP the ranges run one after
 * another. Returns 0, -1 when a range ran out of memory, else -2. */
N3_EXPORT int n3_parallel_rows(int id, const int64_t *args, int64_t rows, int64_t chunks) {
    int oom = 0, bad = 0;
    if (chunks < 1) return -2;
#if defined(_OPENMP)
#pragma omp parallel for num_threads((int)chunks) schedule(static, 1) reduction(| : oom, bad)
#endif
    for (int64_t i = 0; i < chunks; i++) {
        const int r = n3_run_range(id, args, rows * i / chunks, rows * (i + 1) / chunks, i);
        oom |= r == -1;
        bad |= r != 0 && r != -1;
    }
    return oom ? -1 : bad ? -2 : 0;
}

/* For the loader: the parameter layout this library was built with (2000 +: it has the selection's functions;
 * 3000 +: and the spread matrix's, blocks-to-pixels' and the distance norm's; 4000 +: and n3_conv3x3_narrow;
 * 5000 +: and n3_conv3x3_narrow_wgrad; 6000 +: and n3_conv3x3_narrow_batch, n3_run_range, n3_parallel_rows, n3_openmp;
 * 7000 +: and n3_conv3x3_narrow_bf16, n3_has_bf16_conv; 8000 +: and n3_conv3x3_narrow_wgrad_bf16). */
N3_EXPORT int n3_abi_version(void) { return 8000 + P_COUNT; }
