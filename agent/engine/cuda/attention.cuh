/* attention.cuh - causal self-attention: the fused flash kernels of
 * flash_attention.cuh by default, strided-batched cuBLAS GEMMs with a fused
 * causal softmax as the fallback, plus the single-query kernel of the KV
 * cache.
 *
 * Path selection (attention_forward / attention_backward):
 *   FW_CUDA_ATTENTION unset, "" or "flash": the flash kernels when the head
 *       size is supported (hs <= 128, C a multiple of NH), else the GEMMs;
 *   FW_CUDA_ATTENTION=gemm: always the GEMMs;
 *   anything else: FW_EINVAL naming the variable and the allowed values.
 * The variable is read once per process. Both paths write the same lse
 * ([B, NH, T], natural-log log-sum-exp of scale * scores over keys 0..t,
 * as cpu_attention_forward), so either backward follows either forward.
 * The flash path is FP32 whatever FW_CUDA_PRECISION says (the GEMM path
 * runs TF32 under bf16), and of the scratch it uses only B*NH*T floats in
 * backward (the D row sums) and nothing in forward.
 *
 * GEMM path. Layout: qkv is [B, T, 3C] (q | k | v, heads hs-wide inside
 * each), as the QKV linear layer writes it. The GEMMs want one [T, hs]
 * matrix per (b, h), so q, k, v are first gathered into [B, NH, T, hs]
 * ("heads" layout) and the result scattered back into [B, T, C].
 *
 * Forward per group of batch rows (the score buffer holds at most att_cap
 * floats, so memory stays bounded for long sequences):
 *     S = Q K^T                   one [T, T] per (b, h)          (GEMM)
 *     P = causal_softmax(S*scale), lse = log-sum-exp per query     (kernel)
 *     Y = P V                                                      (GEMM)
 * Only lse [B, NH, T] is kept for backward, as in the CPU reference:
 * backward recomputes S and P = exp(S*scale - lse), then
 *     dP = dY V^T,  dS = P * (dP - rowsum(P * dP)) * scale,
 *     dQ = dS K,    dK = dS^T Q,    dV = P^T dY.
 * Masked entries (key after query) of P and dS are written as 0, so the
 * GEMMs may run over the full square. This is the "straightforward"
 * attention of llm.c's first CUDA version, O(T^2) scratch per head but no
 * O(T^2) state kept across the step. */
#ifndef FW_CUDA_ATTENTION_CUH
#define FW_CUDA_ATTENTION_CUH

#include "flash_attention.cuh"
#include "matmul.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Element i of a [B, NH, T, hs] "heads" buffer: its place in rows of
 * `stride` floats, [(b*T + t)*stride + off + h*hs + d]. */
__device__ static inline size_t heads_row_index(size_t i, int stride, int off, int T, int NH,
                                                int hs) {
    int d = (int)(i % hs);
    size_t r = i / hs;
    int t = (int)(r % T);
    r /= T;
    int h = (int)(r % NH);
    int b = (int)(r / NH);
    return ((size_t)b * T + t) * stride + off + (size_t)h * hs + d;
}

/* dst[b, h, t, d] = src[(b*T + t)*stride + off + h*hs + d] */
__global__ static void heads_gather_kernel(float *dst, const float *src, int stride, int off, int B,
                                           int T, int NH, int hs) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)B * NH * T * hs) dst[i] = src[heads_row_index(i, stride, off, T, NH, hs)];
}

/* The inverse: dst[(b*T + t)*stride + off + h*hs + d] = src[b, h, t, d] */
__global__ static void heads_scatter_kernel(float *dst, const float *src, int stride, int off,
                                            int B, int T, int NH, int hs) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)B * NH * T * hs) dst[heads_row_index(i, stride, off, T, NH, hs)] = src[i];
}

/* One warp per score row R (query t = R % T): in place, S -> P. */
__global__ static void causal_softmax_kernel(float *att, float *lse, int T, float scale,
                                             size_t nrows) {
    size_t R = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (R >= nrows) return;
    int t = (int)(R % T);
    float *s = att + R * T;
    float m = -INFINITY;
    for (int j = lane; j <= t; j += 32) m = fmaxf(m, s[j] * scale);
    m = warp_max(m);
    float sum = 0.0f;
    for (int j = lane; j <= t; j += 32) sum += expf(s[j] * scale - m);
    sum = warp_sum(sum);
    float inv = 1.0f / sum;
    for (int j = lane; j < T; j += 32) s[j] = j <= t ? expf(s[j] * scale - m) * inv : 0.0f;
    if (lane == 0) lse[R] = m + logf(sum);
}

/* Backward: S -> P from the saved log-sum-exp. */
__global__ static void causal_softmax_recompute_kernel(float *att, const float *lse, int T,
                                                       float scale, size_t nrows) {
    size_t R = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (R >= nrows) return;
    int t = (int)(R % T);
    float *s = att + R * T;
    float l = lse[R];
    for (int j = lane; j < T; j += 32) s[j] = j <= t ? expf(s[j] * scale - l) : 0.0f;
}

/* dP -> dS in place: dS = P * (dP - sum_j P*dP) * scale. */
__global__ static void causal_softmax_backward_kernel(float *datt, const float *att, int T,
                                                      float scale, size_t nrows) {
    size_t R = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (R >= nrows) return;
    int t = (int)(R % T);
    float *dp = datt + R * T;
    const float *p = att + R * T;
    float dsum = 0.0f;
    for (int j = lane; j <= t; j += 32) dsum += p[j] * dp[j];
    dsum = warp_sum(dsum);
    for (int j = lane; j < T; j += 32) dp[j] = j <= t ? p[j] * (dp[j] - dsum) * scale : 0.0f;
}

/* Score-buffer floats the attention of B rows needs (capped: groups of rows
 * are processed in turn). */
static inline size_t s_att_floats(int B, int T, int NH, size_t cap) {
    size_t per = (size_t)NH * T * T;
    size_t want = per * (size_t)B;
    if (want <= cap) return want;
    return per > cap ? per : cap / per * per;
}

static inline unsigned s_warp_blocks(size_t rows) {
    return (unsigned)((rows + 7) / 8);
}

/* GEMM path. scratch: 4*N*C floats (q, k, v, y) then att_floats floats of
 * scores. */
static int s_attention_forward_gemm(cuda_gemm *g, float *out, float *lse, const float *qkv, int B,
                                    int T, int C, int NH, float *scratch, size_t att_floats) {
    int hs = C / NH;
    size_t NC = (size_t)B * T * C, C3 = 3 * (size_t)C;
    float *q = scratch, *k = q + NC, *v = k + NC, *y = v + NC, *att = y + NC;
    float scale = 1.0f / sqrtf((float)hs);
    unsigned nb = s_blocks(NC, 256);
    heads_gather_kernel<<<nb, 256>>>(q, qkv, (int)C3, 0, B, T, NH, hs);
    heads_gather_kernel<<<nb, 256>>>(k, qkv, (int)C3, C, B, T, NH, hs);
    heads_gather_kernel<<<nb, 256>>>(v, qkv, (int)C3, 2 * C, B, T, NH, hs);
    CU_TRY(cudaCheckLaunch());
    size_t per = (size_t)NH * T * T;
    int bg = (int)(att_floats / per);
    if (bg < 1) return fw_err_set(FW_EINVAL, "attention: score buffer below one row");
    long long sth = (long long)T * hs, stt = (long long)T * T;
    for (int b0 = 0; b0 < B; b0 += bg) {
        int nbr = B - b0 < bg ? B - b0 : bg, batch = nbr * NH;
        size_t ho = (size_t)b0 * NH * T * hs;
        CU_TRY(s_gemm_sb(g, 1, 0, T, T, hs, k + ho, hs, sth, q + ho, hs, sth, att, T, stt, batch));
        size_t rows = (size_t)batch * T;
        causal_softmax_kernel<<<s_warp_blocks(rows), 256>>>(att, lse + (size_t)b0 * NH * T, T,
                                                            scale, rows);
        CU_TRY(cudaCheckLaunch());
        CU_TRY(s_gemm_sb(g, 0, 0, hs, T, T, v + ho, hs, sth, att, T, stt, y + ho, hs, sth, batch));
    }
    heads_scatter_kernel<<<nb, 256>>>(out, y, C, 0, B, T, NH, hs);
    return cudaCheckLaunch();
}

/* GEMM path. scratch: 7*N*C floats (q, k, v, dy, dq, dk, dv) then
 * 2*att_floats (P and dP/dS). dqkv is overwritten. */
static int s_attention_backward_gemm(cuda_gemm *g, float *dqkv, const float *dout, const float *qkv,
                                     const float *lse, int B, int T, int C, int NH, float *scratch,
                                     size_t att_floats) {
    int hs = C / NH;
    size_t NC = (size_t)B * T * C, C3 = 3 * (size_t)C;
    float *q = scratch, *k = q + NC, *v = k + NC, *dy = v + NC, *dq = dy + NC, *dk = dq + NC,
          *dv = dk + NC, *att = dv + NC, *datt = att + att_floats;
    float scale = 1.0f / sqrtf((float)hs);
    unsigned nb = s_blocks(NC, 256);
    heads_gather_kernel<<<nb, 256>>>(q, qkv, (int)C3, 0, B, T, NH, hs);
    heads_gather_kernel<<<nb, 256>>>(k, qkv, (int)C3, C, B, T, NH, hs);
    heads_gather_kernel<<<nb, 256>>>(v, qkv, (int)C3, 2 * C, B, T, NH, hs);
    heads_gather_kernel<<<nb, 256>>>(dy, dout, C, 0, B, T, NH, hs);
    CU_TRY(cudaCheckLaunch());
    size_t per = (size_t)NH * T * T;
    int bg = (int)(att_floats / per);
    if (bg < 1) return fw_err_set(FW_EINVAL, "attention: score buffer below one row");
    long long sth = (long long)T * hs, stt = (long long)T * T;
    for (int b0 = 0; b0 < B; b0 += bg) {
        int nbr = B - b0 < bg ? B - b0 : bg, batch = nbr * NH;
        size_t ho = (size_t)b0 * NH * T * hs, rows = (size_t)batch * T;
        CU_TRY(s_gemm_sb(g, 1, 0, T, T, hs, k + ho, hs, sth, q + ho, hs, sth, att, T, stt, batch));
        causal_softmax_recompute_kernel<<<s_warp_blocks(rows), 256>>>(
            att, lse + (size_t)b0 * NH * T, T, scale, rows);
        CU_TRY(cudaCheckLaunch());
        CU_TRY(
            s_gemm_sb(g, 1, 0, T, T, hs, v + ho, hs, sth, dy + ho, hs, sth, datt, T, stt, batch));
        causal_softmax_backward_kernel<<<s_warp_blocks(rows), 256>>>(datt, att, T, scale, rows);
        CU_TRY(cudaCheckLaunch());
        CU_TRY(
            s_gemm_sb(g, 0, 0, hs, T, T, k + ho, hs, sth, datt, T, stt, dq + ho, hs, sth, batch));
        CU_TRY(
            s_gemm_sb(g, 0, 1, hs, T, T, q + ho, hs, sth, datt, T, stt, dk + ho, hs, sth, batch));
        CU_TRY(
            s_gemm_sb(g, 0, 1, hs, T, T, dy + ho, hs, sth, att, T, stt, dv + ho, hs, sth, batch));
    }
    heads_scatter_kernel<<<nb, 256>>>(dqkv, dq, (int)C3, 0, B, T, NH, hs);
    heads_scatter_kernel<<<nb, 256>>>(dqkv, dk, (int)C3, C, B, T, NH, hs);
    heads_scatter_kernel<<<nb, 256>>>(dqkv, dv, (int)C3, 2 * C, B, T, NH, hs);
    return cudaCheckLaunch();
}

/* ------------------------------------------------------------------------ */
/* Path selection                                                            */
/* ------------------------------------------------------------------------ */

enum { S_ATT_FLASH = 0, S_ATT_GEMM = 1 };

/* value: FW_CUDA_ATTENTION's value (NULL: unset). */
static int s_attention_mode_parse(const char *value, int *mode) {
    if (!value || !*value || strcmp(value, "flash") == 0) {
        *mode = S_ATT_FLASH;
        return 0;
    }
    if (strcmp(value, "gemm") == 0) {
        *mode = S_ATT_GEMM;
        return 0;
    }
    return fw_err_set(FW_EINVAL, "FW_CUDA_ATTENTION=\"%s\": expected flash or gemm", value);
}

typedef struct {
    int rc, mode;
    char value[64]; /* enough of a bad value to name it in the error */
} s_att_env;

static s_att_env s_attention_env_read(void) {
    s_att_env e;
    memset(&e, 0, sizeof e);
    const char *v = getenv("FW_CUDA_ATTENTION");
    if (v) snprintf(e.value, sizeof e.value, "%s", v);
    e.rc = s_attention_mode_parse(v, &e.mode);
    return e;
}

/* The process-wide path, FW_CUDA_ATTENTION read on the first call (a C++
 * function-local static: initialised once, thread-safe). A bad value fails
 * every call, with the detail set on the calling thread. */
static int attention_mode(int *mode) {
    static const s_att_env env = s_attention_env_read();
    if (env.rc < 0) return s_attention_mode_parse(env.value, mode);
    *mode = env.mode;
    return 0;
}

/* The model's entry points: signatures and scratch sizes of the GEMM path
 * (the flash path needs less: B*NH*T floats in backward). */
static int attention_forward_mode(int mode, cuda_gemm *g, float *out, float *lse, const float *qkv,
                                  int B, int T, int C, int NH, float *scratch, size_t att_floats) {
    if (mode == S_ATT_FLASH && flash_attention_supported(C, NH))
        return flash_attention_forward(out, lse, qkv, B, T, C, NH);
    return s_attention_forward_gemm(g, out, lse, qkv, B, T, C, NH, scratch, att_floats);
}

static int attention_backward_mode(int mode, cuda_gemm *g, float *dqkv, const float *dout,
                                   const float *qkv, const float *lse, int B, int T, int C, int NH,
                                   float *scratch, size_t att_floats) {
    if (mode == S_ATT_FLASH && flash_attention_supported(C, NH))
        return flash_attention_backward(dqkv, dout, qkv, lse, B, T, C, NH, scratch);
    return s_attention_backward_gemm(g, dqkv, dout, qkv, lse, B, T, C, NH, scratch, att_floats);
}

static int attention_forward(cuda_gemm *g, float *out, float *lse, const float *qkv, int B, int T,
                             int C, int NH, float *scratch, size_t att_floats) {
    int mode;
    CU_TRY(attention_mode(&mode));
    return attention_forward_mode(mode, g, out, lse, qkv, B, T, C, NH, scratch, att_floats);
}

static int attention_backward(cuda_gemm *g, float *dqkv, const float *dout, const float *qkv,
                              const float *lse, int B, int T, int C, int NH, float *scratch,
                              size_t att_floats) {
    int mode;
    CU_TRY(attention_mode(&mode));
    return attention_backward_mode(mode, g, dqkv, dout, qkv, lse, B, T, C, NH, scratch, att_floats);
}

/* ------------------------------------------------------------------------ */
/* KV cache                                                                  */
/* ------------------------------------------------------------------------ */

/* Store the keys and values of n new tokens: token i goes to cache row
 * rows[i], position pos[i]. kc, vc point at this layer's [batch][max_len][C]. */
__global__ static void kv_store_kernel(float *kc, float *vc, const float *qkv, const int *rows,
                                       const int *pos, int n, int max_len, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * C) return;
    int tok = (int)(i / C), c = (int)(i % C);
    size_t slot = ((size_t)rows[tok] * max_len + pos[tok]) * C + c;
    const float *src = qkv + (size_t)tok * 3 * C;
    kc[slot] = src[C + c];
    vc[slot] = src[2 * C + c];
}

/* One block per (token i, head h): the query of token i attends to keys
 * 0..pos[i] of its row. The same arithmetic as cpu_attend_one: scores,
 * max, exponentials, then the weighted sum over keys in order. scores holds
 * n*NH*max_len floats. */
__global__ static void kv_attend_kernel(float *out, const float *qkv, const float *kc,
                                        const float *vc, const int *rows, const int *pos,
                                        int max_len, int C, int NH, float *scores) {
    extern __shared__ float q[]; /* hs floats */
    __shared__ float sh[32];
    int i = blockIdx.x / NH, h = blockIdx.x % NH, hs = C / NH;
    for (int d = threadIdx.x; d < hs; d += blockDim.x) q[d] = qkv[(size_t)i * 3 * C + h * hs + d];
    __syncthreads();
    int nk = pos[i] + 1;
    size_t base = (size_t)rows[i] * max_len * C + (size_t)h * hs;
    float *sc = scores + (size_t)blockIdx.x * max_len;
    float scale = 1.0f / sqrtf((float)hs);
    float m = -INFINITY;
    for (int j = threadIdx.x; j < nk; j += blockDim.x) {
        const float *kj = kc + base + (size_t)j * C;
        float s = 0.0f;
        for (int d = 0; d < hs; d++) s += q[d] * kj[d];
        s *= scale;
        sc[j] = s;
        m = fmaxf(m, s);
    }
    m = block_max(m, sh);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < nk; j += blockDim.x) {
        float e = expf(sc[j] - m);
        sc[j] = e;
        sum += e;
    }
    sum = block_sum(sum, sh); /* its __syncthreads also publishes sc[] to the block */
    float inv = 1.0f / sum;
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < nk; j++) acc += sc[j] * inv * vc[base + (size_t)j * C + d];
        out[(size_t)i * C + h * hs + d] = acc;
    }
}

#endif
