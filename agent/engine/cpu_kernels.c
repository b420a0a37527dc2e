/* cpu_kernels.c - CPU reference kernels (see cpu_kernels.h for conventions).
 *
 * Determinism: a parallel loop here always splits independent outputs (rows,
 * or strips of columns) and each output is summed by one thread in a fixed
 * order. Gradients that sum over rows (biases, LayerNorm parameters,
 * embeddings) are therefore split into column strips, each strip summing the
 * rows in order, instead of per-thread partial sums whose partition would
 * change with the thread count. Matmuls go to cblas_sgemm on fixed tiles
 * (see MM_ROWS), so the floats do not depend on the number of threads.
 *
 * Speed (bench/bench_engine_train.c): the sgemms are most of a training step;
 * what is left is memory-bound loops, written so the compiler vectorises
 * them (s_expf instead of libm's scalar expf, "omp simd" reductions, sqrtf
 * inlined thanks to -fno-math-errno). */
#include "cpu_kernels.h"

#include "fw_err.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Column strip for reductions over rows: 32 floats = two cache lines, wide
 * enough to vectorise, narrow enough to give every thread work at C = 64. */
#define STRIP 32

/* ------------------------------------------------------------------------ */
/* exp and tanh that vectorise                                               */
/* ------------------------------------------------------------------------ */

/* exp(x) in float, within ~2 ulp of expf. Why not expf: glibc's expf is a
 * scalar call (its vector variants are only declared under -ffast-math), and
 * the softmax of the LM head (B*T x 50257 exponentials, twice a step), the
 * attention weights and GELU's tanh spent more time in it than the sgemms of
 * some layers. This is straight-line code the compiler turns into 8-wide AVX:
 * x = k ln2 + r with |r| <= ln2/2 (ln2 split in two so k ln2 is exact), e^r
 * by Cephes' degree-6 polynomial, 2^k put into the exponent bits. Inputs
 * below -87.3 (e^x near FLT_MIN) give 0, above 88.3 are clamped to it (no
 * inf), so 2^k is always a normal float. */
static inline float s_expf(float x) {
    float xc = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
    float k = floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - k * 0.693359375f; /* ln2 high part: exact in k * it */
    r = r - k * -2.12194440e-4f;     /* ln2 - 0.693359375 */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23; /* k in [-126, 127] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = p * scale; /* computed before the select, so the loop stays branch-free */
    return x < -87.3f ? 0.0f : y;
}

/* tanh(x) = 1 - 2 / (e^2x + 1): exact limits +-1, absolute error ~1e-7. */
static inline float s_tanhf(float x) {
    return 1.0f - 2.0f / (s_expf(2.0f * x) + 1.0f);
}

/* ------------------------------------------------------------------------ */
/* Encoder                                                                   */
/* ------------------------------------------------------------------------ */

void cpu_encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe, int B,
                         int T, int C) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < B * T; r++) {
        int t = r % T;
        float *o = out + (size_t)r * C;
        const float *e = wte + (size_t)inp[r] * C, *p = wpe + (size_t)t * C;
        for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
    }
}

void cpu_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B,
                          int T, int C) {
    int nstrips = (C + STRIP - 1) / STRIP;
#pragma omp parallel for schedule(static)
    for (int s = 0; s < nstrips; s++) {
        int c0 = s * STRIP, c1 = c0 + STRIP < C ? c0 + STRIP : C;
        for (int r = 0; r < B * T; r++) {
            const float *d = dout + (size_t)r * C;
            float *we = dwte + (size_t)inp[r] * C, *wp = dwpe + (size_t)(r % T) * C;
            for (int c = c0; c < c1; c++) {
                we[c] += d[c];
                wp[c] += d[c];
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* LayerNorm                                                                 */
/* ------------------------------------------------------------------------ */

void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *x = inp + (size_t)r * C;
        double s = 0.0;
        for (int c = 0; c < C; c++) s += x[c];
        float m = (float)(s / C);
        double v = 0.0;
        for (int c = 0; c < C; c++) {
            float d = x[c] - m;
            v += (double)d * d;
        }
        float rs = (float)(1.0 / sqrt(v / C + eps));
        float *o = out + (size_t)r * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * rs * w[c] + b[c];
        if (mean) mean[r] = m;
        if (rstd) rstd[r] = rs;
    }
}

void cpu_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *mean, const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *x = inp + (size_t)r * C, *d = dout + (size_t)r * C;
        float m = mean[r], rs = rstd[r];
        double a = 0.0, bsum = 0.0;
        for (int c = 0; c < C; c++) {
            float n = (x[c] - m) * rs;
            float dn = w[c] * d[c];
            a += dn;
            bsum += (double)dn * n;
        }
        float dnorm_mean = (float)(a / C), dnorm_norm_mean = (float)(bsum / C);
        float *di = dinp + (size_t)r * C;
        for (int c = 0; c < C; c++) {
            float n = (x[c] - m) * rs;
            di[c] += (w[c] * d[c] - dnorm_mean - n * dnorm_norm_mean) * rs;
        }
    }
    int nstrips = (C + STRIP - 1) / STRIP;
#pragma omp parallel for schedule(static)
    for (int s = 0; s < nstrips; s++) {
        int c0 = s * STRIP, c1 = c0 + STRIP < C ? c0 + STRIP : C;
        for (int r = 0; r < N; r++) {
            const float *x = inp + (size_t)r * C, *d = dout + (size_t)r * C;
            float m = mean[r], rs = rstd[r];
            for (int c = c0; c < c1; c++) {
                dw[c] += (x[c] - m) * rs * d[c];
                db[c] += d[c];
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Matmul                                                                    */
/* ------------------------------------------------------------------------ */

/* Matmuls are cut into fixed tiles and the tiles shared among OpenMP
 * threads, each tile one single-threaded sgemm. Why not let OpenBLAS thread:
 * its pthreads and OpenMP's spin-waiting threads fight over the same cores
 * (a third of the time went to sched_yield on 2 cores), and fixed tiles make
 * the floats independent of the thread count.
 *
 * Tile sizes (measured on the gpt2-124m shapes at B*T = 256, one core):
 *   - forward: MM_ROWS x MM_COLS. sgemm packs the weight panel once per call,
 *     so 128 rows amortise it twice as well as 64 (qkv 43 -> 59 GFLOP/s);
 *     768 columns keep C-wide layers in one or a few tiles and cut the
 *     50K-column LM head into 66 tiles.
 *   - forward with at most MM_ROWS rows (prefill, embedding one sentence):
 *     MM_COLS_FEW columns. Narrower weight panels stay in cache (one
 *     32-token sentence through gpt2-124m: 174 -> 102 ms on one core) and
 *     give every thread tiles even in the C-wide layers. The tile shapes
 *     depend on N only, never on the thread count.
 *   - forward with fewer than MM_GEMV_ROWS rows (KV-cache decode): sgemv per
 *     row on the same column tiles. sgemm at M = 1 ran at 5-8 GB/s of weights
 *     against sgemv's 37, and decoding is nothing but reading the weights.
 *   - backward: MM_BLOCK rows (dinp) or output channels (dW); 128 beat 64
 *     by ~5% on every shape and still gives 2 blocks at B*T = 256. */
#define MM_ROWS      128
#define MM_COLS      768
#define MM_COLS_FEW  256
#define MM_GEMV_ROWS 4
#define MM_BLOCK     128

void cpu_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N,
                        int C, int OC) {
    int nrow = N < MM_GEMV_ROWS ? N : (N + MM_ROWS - 1) / MM_ROWS;
    int cols = N <= MM_ROWS ? MM_COLS_FEW : MM_COLS;
    int ncol = (OC + cols - 1) / cols;
#pragma omp parallel for schedule(static)
    for (int k = 0; k < nrow * ncol; k++) {
        int rb = k / ncol, cb = k % ncol;
        int c0 = cb * cols, cn = OC - c0 < cols ? OC - c0 : cols;
        float beta = bias ? 1.0f : 0.0f;
        if (N < MM_GEMV_ROWS) { /* one row: out[rb, c0:c0+cn] = W[c0:c0+cn, :] @ inp[rb, :] */
            float *o = out + (size_t)rb * OC + c0;
            if (bias) memcpy(o, bias + c0, (size_t)cn * sizeof *o);
            cblas_sgemv(CblasRowMajor, CblasNoTrans, cn, C, 1.0f, w + (size_t)c0 * C, C,
                        inp + (size_t)rb * C, 1, beta, o, 1);
            continue;
        }
        int r0 = rb * MM_ROWS, rn = N - r0 < MM_ROWS ? N - r0 : MM_ROWS;
        float *o = out + (size_t)r0 * OC + c0;
        if (bias)
            for (int r = 0; r < rn; r++)
                memcpy(o + (size_t)r * OC, bias + c0, (size_t)cn * sizeof *o);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rn, cn, C, 1.0f, inp + (size_t)r0 * C,
                    C, w + (size_t)c0 * C, C, beta, o, OC);
    }
}

void cpu_matmul_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const float *w, int N, int C, int OC) {
    int nrow_blocks = (N + MM_BLOCK - 1) / MM_BLOCK, noc_blocks = (OC + MM_BLOCK - 1) / MM_BLOCK;
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int k = 0; k < nrow_blocks; k++) {
            int r0 = k * MM_BLOCK, rn = N - r0 < MM_BLOCK ? N - r0 : MM_BLOCK;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rn, C, OC, 1.0f,
                        dout + (size_t)r0 * OC, OC, w, C, 0.0f, dinp + (size_t)r0 * C, C);
        }
    }
    /* dW[o0:o0+n, :] += dout[:, o0:o0+n]^T @ inp, and the bias gradient of
     * the same channels, summed over rows in order. */
#pragma omp parallel for schedule(static)
    for (int k = 0; k < noc_blocks; k++) {
        int o0 = k * MM_BLOCK, on = OC - o0 < MM_BLOCK ? OC - o0 : MM_BLOCK;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, on, C, N, 1.0f, dout + o0, OC, inp,
                    C, 1.0f, dw + (size_t)o0 * C, C);
        if (db) {
            for (int r = 0; r < N; r++) {
                const float *d = dout + (size_t)r * OC + o0;
                for (int o = 0; o < on; o++) db[o0 + o] += d[o];
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* GELU and residual                                                         */
/* ------------------------------------------------------------------------ */

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

/* "parallel for simd": GCC does not if-convert s_expf's clamps in a plain
 * parallel loop, and scalar code here cost as much as the MLP's sgemms. */
void cpu_gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float cube = 0.044715f * x * x * x;
        out[i] = 0.5f * x * (1.0f + s_tanhf(GELU_SCALE * (x + cube)));
    }
}

void cpu_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float cube = 0.044715f * x * x * x;
        float th = s_tanhf(GELU_SCALE * (x + cube));
        /* sech^2 = 1 - tanh^2: no cosh, which overflows for large |x|. */
        float sech2 = 1.0f - th * th;
        float local = 0.5f * (1.0f + th) +
                      x * 0.5f * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = local * dout[i];
    }
}

void cpu_residual_add(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] += inp[i];
}

/* ------------------------------------------------------------------------ */
/* Attention                                                                 */
/* ------------------------------------------------------------------------ */

/* omp simd lets the compiler split the sum into vector lanes; the order is
 * fixed by the compiled code, so results stay reproducible. */
static inline float s_dot(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void cpu_attend_one(float *out, float *lse, const float *q, const float *k, const float *v,
                    size_t stride, int n_keys, int hs, float *scratch) {
    float scale = 1.0f / sqrtf((float)hs);
    float maxv = -INFINITY;
    for (int j = 0; j < n_keys; j++) {
        float s = s_dot(q, k + j * stride, hs) * scale;
        scratch[j] = s;
        if (s > maxv) maxv = s;
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n_keys; j++) {
        float e = s_expf(scratch[j] - maxv);
        scratch[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < hs; i++) out[i] = 0.0f;
    for (int j = 0; j < n_keys; j++) {
        float a = scratch[j] * inv;
        const float *vj = v + j * stride;
#pragma omp simd
        for (int i = 0; i < hs; i++) out[i] += a * vj[i];
    }
    *lse = maxv + logf(sum);
}

int cpu_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH) {
    int hs = C / NH;
    size_t C3 = 3 * (size_t)C;
    int failed = 0;
#pragma omp parallel
    {
        float *scratch = malloc((size_t)T * sizeof *scratch);
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int i = 0; i < B * NH * T; i++) {
            if (!scratch) continue;
            int t = i % T, h = (i / T) % NH, b = i / (T * NH);
            const float *base = qkv + (size_t)b * T * C3;
            const float *q = base + (size_t)t * C3 + (size_t)h * hs;
            cpu_attend_one(out + ((size_t)b * T + t) * C + (size_t)h * hs,
                           lse + ((size_t)b * NH + h) * T + t, q, base + C + (size_t)h * hs,
                           base + 2 * (size_t)C + (size_t)h * hs, C3, t + 1, hs, scratch);
        }
        free(scratch);
    }
    return failed ? fw_err_set(FW_ENOMEM, "attention forward: scratch of %d floats", T) : 0;
}

int cpu_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *lse,
                           int B, int T, int C, int NH) {
    int hs = C / NH;
    size_t C3 = 3 * (size_t)C;
    float scale = 1.0f / sqrtf((float)hs);
    int failed = 0;
    memset(dqkv, 0, (size_t)B * T * C3 * sizeof *dqkv);
    /* One task per (batch, head): it alone writes that head's slice of dqkv,
     * so keys and values can accumulate over queries without races. */
#pragma omp parallel
    {
        float *att = malloc(2 * (size_t)T * sizeof *att);
        if (!att) {
#pragma omp atomic write
            failed = 1;
        }
        float *datt = att ? att + T : NULL;
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * NH; bh++) {
            if (!att) continue;
            int b = bh / NH, h = bh % NH;
            const float *base = qkv + (size_t)b * T * C3;
            float *dbase = dqkv + (size_t)b * T * C3;
            for (int t = 0; t < T; t++) {
                const float *q = base + (size_t)t * C3 + (size_t)h * hs;
                const float *dq_out = dout + ((size_t)b * T + t) * C + (size_t)h * hs;
                float l = lse[((size_t)b * NH + h) * T + t];
                float dsum = 0.0f;
                for (int j = 0; j <= t; j++) {
                    const float *kj = base + (size_t)j * C3 + C + (size_t)h * hs;
                    const float *vj = kj + C;
                    float a = s_expf(s_dot(q, kj, hs) * scale - l);
                    float da = s_dot(dq_out, vj, hs);
                    att[j] = a;
                    datt[j] = da;
                    dsum += a * da;
                }
                float *dq = dbase + (size_t)t * C3 + (size_t)h * hs;
                for (int j = 0; j <= t; j++) {
                    const float *kj = base + (size_t)j * C3 + C + (size_t)h * hs;
                    float *dk = dbase + (size_t)j * C3 + C + (size_t)h * hs;
                    float *dv = dk + C;
                    float dpre = att[j] * (datt[j] - dsum) * scale, aj = att[j];
                    /* dq, dk, dv are disjoint slices; simd says so to the compiler */
#pragma omp simd
                    for (int i = 0; i < hs; i++) {
                        dq[i] += dpre * kj[i];
                        dk[i] += dpre * q[i];
                        dv[i] += aj * dq_out[i];
                    }
                }
            }
        }
        free(att);
    }
    return failed ? fw_err_set(FW_ENOMEM, "attention backward: scratch of %d floats", 2 * T) : 0;
}

/* ------------------------------------------------------------------------ */
/* Cross-entropy                                                             */
/* ------------------------------------------------------------------------ */

void cpu_crossentropy_forward(float *losses, float *lse, const float *logits,
                              const int32_t *targets, int N, int V, int Vp) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *x = logits + (size_t)r * Vp;
        float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
        for (int i = 0; i < V; i++) maxv = x[i] > maxv ? x[i] : maxv;
        /* The terms are <= 1 and summed in double: the sum of 50K of them
         * keeps float precision in the log. */
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int i = 0; i < V; i++) s += (double)s_expf(x[i] - maxv);
        float l = maxv + (float)log(s);
        lse[r] = l;
        losses[r] = targets[r] < 0 ? 0.0f : l - x[targets[r]];
    }
}

void cpu_crossentropy_backward(float *logits, const float *lse, const int32_t *targets,
                               float scale, int N, int V, int Vp) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        float *x = logits + (size_t)r * Vp;
        int tg = targets[r];
        if (tg < 0) {
            memset(x, 0, (size_t)Vp * sizeof *x);
            continue;
        }
        float l = lse[r];
#pragma omp simd
        for (int i = 0; i < V; i++) x[i] = scale * s_expf(x[i] - l);
        x[tg] -= scale;
        for (int i = V; i < Vp; i++) x[i] = 0.0f;
    }
}

void cpu_argmax(int32_t *out, const float *logits, int N, int V, int Vp) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *x = logits + (size_t)r * Vp;
        int best = 0;
        for (int i = 1; i < V; i++)
            if (x[i] > x[best]) best = i;
        out[r] = best;
    }
}

/* ------------------------------------------------------------------------ */
/* Optimiser                                                                 */
/* ------------------------------------------------------------------------ */

#define SUMSQ_CHUNK 65536

int cpu_sumsq(const float *x, size_t n, double *out) {
    size_t nchunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    *out = 0.0;
    if (nchunks == 0) return 0;
    double *part = malloc(nchunks * sizeof *part);
    if (!part) return fw_err_set(FW_ENOMEM, "grad norm: %zu partial sums", nchunks);
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < nchunks; k++) {
        size_t i0 = k * SUMSQ_CHUNK, i1 = i0 + SUMSQ_CHUNK < n ? i0 + SUMSQ_CHUNK : n;
        double s = 0.0;
        /* simd: a fixed split into vector lanes, so still the same sum every run */
#pragma omp simd reduction(+ : s)
        for (size_t i = i0; i < i1; i++) s += (double)x[i] * x[i];
        part[k] = s;
    }
    double s = 0.0;
    for (size_t k = 0; k < nchunks; k++) s += part[k];
    free(part);
    *out = s;
    return 0;
}

void cpu_adamw(float *p, const float *g, float *m, float *v, size_t n, float gscale, float lr,
               float beta1, float beta2, float bc1, float bc2, float eps, float wd) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi / bc1, vhat = vi / bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p[i]);
    }
}
