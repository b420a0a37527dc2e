/* flash_attention.cuh - fused causal self-attention in FP32, forward and
 * backward, reading q, k, v straight out of the [B, T, 3C] qkv tensor and
 * never storing a T x T score matrix.
 *
 * Theory of operation
 * -------------------
 * Every kernel runs 128 threads (4 warps) per block and works on one
 * (batch row b, head h) and one tile of rows. Two kinds of tile:
 *   - a "row tile" of R rows, R/4 rows per warp, each row handled by its
 *     whole warp (the rows are queries, or keys in the dK/dV kernel);
 *   - a "lane tile" of 32 columns, one per lane (keys, or queries in the
 *     dK/dV kernel), streamed through shared memory.
 * A lane computes the full hs-long dot product of its column with the
 * warp's row (row read as a shared-memory broadcast, column rows padded to
 * hs_max + 1 floats so the 32 lanes hit 32 different banks), and the
 * weighted sums over the tile (P V, dS K, P^T dO, dS^T Q) run with the lanes
 * over the head dimension, the weight of column j broadcast by __shfl_sync.
 *
 * Causality is handled by tiles: a query tile only visits key tiles that
 * start at or before its last query, and inside a tile a row only loops
 * over the columns on its side of the diagonal (key <= query). The masked
 * entries are never computed, so they contribute exactly 0.
 *
 * Forward (flash_fwd_kernel, one block per (b, h, FR queries)): for each key
 * tile, the online softmax of Milakov & Gimelshein / FlashAttention:
 *     s_j  = scale * q . k_j               (lane j)
 *     m'   = max(m, max_j s_j),  p_j = exp(s_j - m'),  c = exp(m - m')
 *     l    = l * c + sum_j p_j,  acc = acc * c + sum_j p_j v_j
 * and at the end out = acc / l, lse = m + log(l): the natural-log
 * log-sum-exp of scale * scores over keys 0..t, the value the CPU
 * reference (cpu_attend_one) writes, up to float rounding.
 *
 * Backward, three kernels, none of which adds into memory another block
 * writes (no atomics, so the same inputs give the same floats):
 *   1. flash_bwd_query_kernel<.., false>, per (b, h, BR queries):
 *      D[t] = sum_j P[t,j] * (dO[t] . v_j)  ( = rowsum(dO * O) ), with
 *      P[t,j] = exp(scale * q_t . k_j - lse[t]); D goes to the scratch.
 *   2. flash_bwd_query_kernel<.., true>, per (b, h, BR queries):
 *      dS[t,j] = P[t,j] * (dO[t] . v_j - D[t]) * scale,
 *      dq_t = sum_j dS[t,j] k_j, keys in order.
 *   3. flash_bwd_kv_kernel, per (b, h, BR keys), queries from the diagonal
 *      down: dv_j = sum_t P[t,j] dO[t],  dk_j = sum_t dS[t,j] q_t.
 * Each thread owns its output elements and sums its terms in a fixed order
 * (warp_sum's shuffle tree, then tiles in order), so the result does not
 * depend on scheduling. Kernels 2 and 3 both recompute P and dP: the price
 * of no atomics, one extra pass of O(T^2 hs) work.
 *
 * Sizes (hs_max = 32, 64 or 128, the smallest that holds hs; compile-time):
 *   FR (forward queries per block)      32, 32, 16
 *   BR (backward rows per block)        32, 32, 8
 * so that every kernel's static shared memory stays under the 48 KiB a
 * block gets without opting in (the byte counts are in docs/gpu.md and
 * are checked at compile time below). */
#ifndef FW_CUDA_FLASH_ATTENTION_CUH
#define FW_CUDA_FLASH_ATTENTION_CUH

#include "common.cuh"

#define FA_THREADS 128 /* 4 warps: small blocks, several resident per SM */
#define FA_WARPS   4
#define FA_LANES   32 /* the lane tile: one column per lane */
#define FA_MAX_HS  128

template <int MAXD> struct fa_tiles {
    static constexpr int DPL = MAXD / 32;           /* head dims per lane */
    static constexpr int FR = MAXD <= 64 ? 32 : 16; /* forward: queries per block */
    static constexpr int BR = MAXD <= 64 ? 32 : 8;  /* backward: rows per block */
    static constexpr int KP = MAXD + 1;             /* padded stride of lane-indexed rows */
    static constexpr size_t FWD_SMEM =
        sizeof(float) * ((size_t)FR * MAXD + FA_LANES * KP + (size_t)FA_LANES * MAXD);
    static constexpr size_t BWD_SMEM =
        sizeof(float) * (2 * (size_t)BR * MAXD + 2 * FA_LANES * KP + 2 * FA_LANES);
    static_assert(MAXD % 32 == 0 && MAXD <= FA_MAX_HS, "hs_max: a multiple of 32, at most 128");
    static_assert(FR % FA_WARPS == 0 && BR % FA_WARPS == 0, "rows split evenly over warps");
    /* R dividing 32 keeps every visited tile non-empty for every row (see
     * the "t < k0" guards): a tile boundary never falls inside a row tile. */
    static_assert(FA_LANES % FR == 0 && FA_LANES % BR == 0, "row tiles divide the lane tile");
    static_assert(FWD_SMEM <= 48 * 1024 && BWD_SMEM <= 48 * 1024, "static shared memory");
};

/* Helpers shared by the kernels, each the one place its loop is written.
 * All are inlined, so the compiler sees the same code as if written out. */

/* Rows row0 .. row0+n-1 of a [T, lda] array (src points at row 0 of this
 * head) into the shared tile a, d < hs; rows at or past T read as 0. b, when
 * not null, gets the same rows of src_b in the same pass (one i / hs for
 * both). All FA_THREADS threads take part; the caller syncs. */
template <int SA, int SB>
__device__ __forceinline__ void fa_load_rows(float (*a)[SA], const float *src, size_t lda,
                                             float (*b)[SB], const float *src_b, size_t ldb,
                                             int n, int row0, int T, int hs) {
    for (int i = threadIdx.x; i < n * hs; i += FA_THREADS) {
        const int r = i / hs, d = i % hs, t = row0 + r;
        a[r][d] = t < T ? src[(size_t)t * lda + d] : 0.0f;
        if (b) b[r][d] = t < T ? src_b[(size_t)t * ldb + d] : 0.0f;
    }
}

/* s = x . y and dp = u . v over d < hs, in d order (one lane, two chains). */
__device__ __forceinline__ void fa_dot2(const float *x, const float *y, const float *u,
                                        const float *v, int hs, float &s, float &dp) {
    s = dp = 0.0f;
    for (int d = 0; d < hs; d++) {
        s += x[d] * y[d];
        dp += u[d] * v[d];
    }
}

/* acc += w_j * row for this lane's head dims d = lane + 32k < hs, where w_j
 * is lane j's w (a shuffle: the whole warp must call it with the same j). */
template <int DPL>
__device__ __forceinline__ void fa_accum_col(float (&acc)[DPL], float w, int j, const float *row,
                                             int hs, int lane) {
    const float wj = __shfl_sync(0xffffffffu, w, j);
#pragma unroll
    for (int k = 0; k < DPL; k++) {
        const int d = lane + 32 * k;
        if (d < hs) acc[k] += wj * row[d];
    }
}

/* dst[d] = v[k] for this lane's head dims d = lane + 32k < hs. */
template <int DPL>
__device__ __forceinline__ void fa_store_row(float *dst, const float (&v)[DPL], int hs, int lane) {
#pragma unroll
    for (int k = 0; k < DPL; k++) {
        const int d = lane + 32 * k;
        if (d < hs) dst[d] = v[k];
    }
}

/* One block per (b*NH + h = blockIdx.x, query tile); heaviest tiles (the
 * last queries see the most keys) are scheduled first. */
template <int MAXD>
__global__ static void __launch_bounds__(FA_THREADS)
    flash_fwd_kernel(float *out, float *lse, const float *qkv, int T, int C, int NH, float scale) {
    typedef fa_tiles<MAXD> F;
    constexpr int R = F::FR, RPW = R / FA_WARPS, DPL = F::DPL;
    __shared__ float qs[R][MAXD];
    __shared__ float ks[FA_LANES][F::KP];
    __shared__ float vs[FA_LANES][MAXD];
    const int hs = C / NH, bh = blockIdx.x, b = bh / NH, h = bh % NH;
    const int q0 = (int)(gridDim.y - 1 - blockIdx.y) * R;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t C3 = 3 * (size_t)C;
    /* q of position t at base[t*C3 + d], k at +C, v at +2C */
    const float *base = qkv + (size_t)b * T * C3 + (size_t)h * hs;

    fa_load_rows<MAXD, MAXD>(qs, base, C3, nullptr, nullptr, 0, R, q0, T, hs);
    float acc[RPW][DPL], m[RPW], l[RPW];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int k = 0; k < DPL; k++) acc[r][k] = 0.0f;
    }
    const int qlast = min(q0 + R, T) - 1; /* q0 < T: the grid has ceil(T/R) tiles */
    for (int k0 = 0; k0 <= qlast; k0 += FA_LANES) {
        __syncthreads(); /* qs is written; the previous tile's readers are done */
        fa_load_rows(ks, base + C, C3, vs, base + 2 * (size_t)C, C3, FA_LANES, k0, T, hs);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            const int row = warp * RPW + r, t = q0 + row;
            /* Warp-uniform, so the shuffles below see all 32 lanes. t < k0
             * cannot happen (fa_tiles), but the guard keeps nk >= 1, so m'
             * is finite and no exp(-inf - -inf) can appear. */
            if (t >= T || t < k0) continue;
            const int nk = min(FA_LANES, t - k0 + 1); /* keys k0..t of this tile */
            float s = -INFINITY;
            if (lane < nk) {
                float dot = 0.0f;
                for (int d = 0; d < hs; d++) dot += qs[row][d] * ks[lane][d];
                s = dot * scale;
            }
            const float mn = fmaxf(m[r], warp_max(s)); /* finite: lane 0 holds a key */
            const float p = lane < nk ? expf(s - mn) : 0.0f;
            const float corr = expf(m[r] - mn); /* first tile: exp(-inf) = 0 */
            l[r] = l[r] * corr + warp_sum(p);
            m[r] = mn;
#pragma unroll
            for (int k = 0; k < DPL; k++) acc[r][k] *= corr;
            for (int j = 0; j < nk; j++) fa_accum_col<DPL>(acc[r], p, j, vs[j], hs, lane);
        }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        const int t = q0 + warp * RPW + r;
        if (t >= T) continue;
        const float inv = 1.0f / l[r];
#pragma unroll
        for (int k = 0; k < DPL; k++) acc[r][k] *= inv;
        fa_store_row<DPL>(out + ((size_t)b * T + t) * C + (size_t)h * hs, acc[r], hs, lane);
        if (lane == 0) lse[(size_t)bh * T + t] = m[r] + logf(l[r]);
    }
}

/* Backward kernels 1 (DQ false: D[t] into Dbuf) and 2 (DQ true: dq into
 * dqkv, reading D). One block per (b*NH + h, BR queries), heaviest first;
 * lanes over keys. */
template <int MAXD, bool DQ>
__global__ static void __launch_bounds__(FA_THREADS)
    flash_bwd_query_kernel(float *dqkv, float *Dbuf, const float *dout, const float *qkv,
                           const float *lse, int T, int C, int NH, float scale) {
    typedef fa_tiles<MAXD> F;
    constexpr int R = F::BR, RPW = R / FA_WARPS, DPL = F::DPL;
    __shared__ float qs[R][MAXD];
    __shared__ float dos[R][MAXD];
    __shared__ float ks[FA_LANES][F::KP];
    __shared__ float vs[FA_LANES][F::KP];
    const int hs = C / NH, bh = blockIdx.x, b = bh / NH, h = bh % NH;
    const int q0 = (int)(gridDim.y - 1 - blockIdx.y) * R;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t C3 = 3 * (size_t)C;
    const float *base = qkv + (size_t)b * T * C3 + (size_t)h * hs;
    const float *dbase = dout + (size_t)b * T * C + (size_t)h * hs;

    fa_load_rows(qs, base, C3, dos, dbase, (size_t)C, R, q0, T, hs);
    float lrow[RPW], drow[RPW], acc[RPW][DPL];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        const int t = q0 + warp * RPW + r;
        lrow[r] = t < T ? lse[(size_t)bh * T + t] : 0.0f;
        drow[r] = DQ && t < T ? Dbuf[(size_t)bh * T + t] : 0.0f;
#pragma unroll
        for (int k = 0; k < DPL; k++) acc[r][k] = 0.0f;
    }
    const int qlast = min(q0 + R, T) - 1;
    for (int k0 = 0; k0 <= qlast; k0 += FA_LANES) {
        __syncthreads();
        fa_load_rows(ks, base + C, C3, vs, base + 2 * (size_t)C, C3, FA_LANES, k0, T, hs);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            const int row = warp * RPW + r, t = q0 + row;
            if (t >= T || t < k0) continue; /* warp-uniform */
            const int nk = min(FA_LANES, t - k0 + 1);
            float p = 0.0f, dp = 0.0f;
            if (lane < nk) {
                float s;
                fa_dot2(qs[row], ks[lane], dos[row], vs[lane], hs, s, dp);
                p = expf(s * scale - lrow[r]);
            }
            if (!DQ) {
                drow[r] += warp_sum(p * dp); /* lanes >= nk add 0 */
            } else {
                const float ds = p * (dp - drow[r]) * scale;
                for (int j = 0; j < nk; j++) fa_accum_col<DPL>(acc[r], ds, j, ks[j], hs, lane);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        const int t = q0 + warp * RPW + r;
        if (t >= T) continue;
        if (DQ) {
            fa_store_row<DPL>(dqkv + ((size_t)b * T + t) * C3 + (size_t)h * hs, acc[r], hs, lane);
        } else if (lane == 0) {
            Dbuf[(size_t)bh * T + t] = drow[r];
        }
    }
}

/* Backward kernel 3: dk and dv. One block per (b*NH + h, BR keys); lanes
 * over queries, from the tile holding the block's first key down to T.
 * Low key tiles see the most queries and come first in blockIdx.y order. */
template <int MAXD>
__global__ static void __launch_bounds__(FA_THREADS)
    flash_bwd_kv_kernel(float *dqkv, const float *Dbuf, const float *dout, const float *qkv,
                        const float *lse, int T, int C, int NH, float scale) {
    typedef fa_tiles<MAXD> F;
    constexpr int R = F::BR, RPW = R / FA_WARPS, DPL = F::DPL;
    __shared__ float ks[R][MAXD];
    __shared__ float vs[R][MAXD];
    __shared__ float qs[FA_LANES][F::KP];
    __shared__ float dos[FA_LANES][F::KP];
    __shared__ float ls[FA_LANES];
    __shared__ float Ds[FA_LANES];
    const int hs = C / NH, bh = blockIdx.x, b = bh / NH, h = bh % NH;
    const int j0 = (int)blockIdx.y * R;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t C3 = 3 * (size_t)C;
    const float *base = qkv + (size_t)b * T * C3 + (size_t)h * hs;
    const float *dbase = dout + (size_t)b * T * C + (size_t)h * hs;

    fa_load_rows(ks, base + C, C3, vs, base + 2 * (size_t)C, C3, R, j0, T, hs);
    float dk[RPW][DPL], dv[RPW][DPL];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
#pragma unroll
        for (int k = 0; k < DPL; k++) dk[r][k] = dv[r][k] = 0.0f;
    }
    /* Queries before the tile holding j0 see none of this block's keys. */
    for (int i0 = j0 / FA_LANES * FA_LANES; i0 < T; i0 += FA_LANES) {
        __syncthreads();
        fa_load_rows(qs, base, C3, dos, dbase, (size_t)C, FA_LANES, i0, T, hs);
        if (threadIdx.x < FA_LANES) {
            const int t = i0 + (int)threadIdx.x;
            ls[threadIdx.x] = t < T ? lse[(size_t)bh * T + t] : 0.0f;
            Ds[threadIdx.x] = t < T ? Dbuf[(size_t)bh * T + t] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            const int row = warp * RPW + r, j = j0 + row;
            if (j >= T) continue; /* warp-uniform */
            /* Lanes [ifirst, iend) hold queries t with j <= t < T. */
            const int ifirst = max(j - i0, 0), iend = min(FA_LANES, T - i0);
            if (ifirst >= iend) continue; /* cannot happen (fa_tiles); keeps the loops honest */
            float p = 0.0f, ds = 0.0f;
            if (lane >= ifirst && lane < iend) {
                float s, dp;
                fa_dot2(qs[lane], ks[row], dos[lane], vs[row], hs, s, dp);
                p = expf(s * scale - ls[lane]);
                ds = p * (dp - Ds[lane]) * scale;
            }
            for (int ii = ifirst; ii < iend; ii++) { /* both sums in one pass over the tile */
                fa_accum_col<DPL>(dv[r], p, ii, dos[ii], hs, lane);
                fa_accum_col<DPL>(dk[r], ds, ii, qs[ii], hs, lane);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        const int j = j0 + warp * RPW + r;
        if (j >= T) continue;
        float *dkp = dqkv + ((size_t)b * T + j) * C3 + C + (size_t)h * hs;
        fa_store_row<DPL>(dkp, dk[r], hs, lane);
        fa_store_row<DPL>(dkp + C, dv[r], hs, lane);
    }
}

/* ------------------------------------------------------------------------ */
/* Host side                                                                 */
/* ------------------------------------------------------------------------ */

/* 1 when the flash kernels handle this shape's head size. */
static inline int flash_attention_supported(int C, int NH) {
    return NH > 0 && C > 0 && C % NH == 0 && C / NH <= FA_MAX_HS;
}

/* Shape checks shared by forward and backward (R: rows per block, so the
 * grid's y extent is ceil(T / R)). */
static int s_flash_check(const char *what, int B, int T, int C, int NH, int R) {
    if (!flash_attention_supported(C, NH))
        return fw_err_set(FW_EINVAL,
                          "flash attention %s: head size hs=%d (C=%d, NH=%d) not supported: "
                          "C must be a multiple of NH and hs at most %d (FW_CUDA_ATTENTION=gemm "
                          "has no limit)",
                          what, NH > 0 ? C / NH : 0, C, NH, FA_MAX_HS);
    if (B < 0 || T < 0 || (T + R - 1) / R > 65535 || (long long)B * NH > 0x7fffffff)
        return fw_err_set(FW_EINVAL, "flash attention %s: B=%d T=%d NH=%d outside the grid limits",
                          what, B, T, NH);
    return 0;
}

template <int MAXD>
static int s_flash_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH) {
    typedef fa_tiles<MAXD> F;
    CU_TRY(s_flash_check("forward", B, T, C, NH, F::FR));
    if ((size_t)B * T == 0) return 0;
    dim3 grid((unsigned)(B * NH), (unsigned)((T + F::FR - 1) / F::FR));
    float scale = 1.0f / sqrtf((float)(C / NH));
    flash_fwd_kernel<MAXD><<<grid, FA_THREADS>>>(out, lse, qkv, T, C, NH, scale);
    return cudaCheckLaunch();
}

template <int MAXD>
static int s_flash_backward(float *dqkv, const float *dout, const float *qkv, const float *lse,
                            int B, int T, int C, int NH, float *Dbuf) {
    typedef fa_tiles<MAXD> F;
    CU_TRY(s_flash_check("backward", B, T, C, NH, F::BR));
    if ((size_t)B * T == 0) return 0;
    dim3 grid((unsigned)(B * NH), (unsigned)((T + F::BR - 1) / F::BR));
    float scale = 1.0f / sqrtf((float)(C / NH));
    /* Same stream, so kernels 2 and 3 start after kernel 1 has written D. */
    flash_bwd_query_kernel<MAXD, false>
        <<<grid, FA_THREADS>>>(dqkv, Dbuf, dout, qkv, lse, T, C, NH, scale);
    CU_TRY(cudaCheckLaunch());
    flash_bwd_query_kernel<MAXD, true>
        <<<grid, FA_THREADS>>>(dqkv, Dbuf, dout, qkv, lse, T, C, NH, scale);
    CU_TRY(cudaCheckLaunch());
    flash_bwd_kv_kernel<MAXD><<<grid, FA_THREADS>>>(dqkv, Dbuf, dout, qkv, lse, T, C, NH, scale);
    return cudaCheckLaunch();
}

/* out [B, T, C] and lse [B, NH, T] from qkv [B, T, 3C]; every element of
 * both written. FW_EINVAL (naming hs) when flash_attention_supported is
 * false: the caller then takes the GEMM path. */
static int flash_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C,
                                   int NH) {
    int hs = NH > 0 ? C / NH : 0;
    if (hs >= 1 && hs <= 32) return s_flash_forward<32>(out, lse, qkv, B, T, C, NH);
    if (hs >= 1 && hs <= 64) return s_flash_forward<64>(out, lse, qkv, B, T, C, NH);
    return s_flash_forward<128>(out, lse, qkv, B, T, C, NH); /* checks hs <= 128 */
}

/* dqkv [B, T, 3C] overwritten (every element) from dout [B, T, C], qkv and
 * the forward's lse. Dbuf: B*NH*T floats of scratch. */
static int flash_attention_backward(float *dqkv, const float *dout, const float *qkv,
                                    const float *lse, int B, int T, int C, int NH, float *Dbuf) {
    int hs = NH > 0 ? C / NH : 0;
    if (hs >= 1 && hs <= 32) return s_flash_backward<32>(dqkv, dout, qkv, lse, B, T, C, NH, Dbuf);
    if (hs >= 1 && hs <= 64) return s_flash_backward<64>(dqkv, dout, qkv, lse, B, T, C, NH, Dbuf);
    return s_flash_backward<128>(dqkv, dout, qkv, lse, B, T, C, NH, Dbuf);
}

#endif
