/* encoder.cuh - token + position embedding, forward and backward.
 *
 * Forward: out[r, :] = wte[ids[r], :] + wpe[pos(r), :], pos(r) = r % T, or
 * pos[r] when a position array is given (KV-cache rows).
 *
 * Backward without atomics: the host sorts the rows of the batch by token
 * (a counting sort, O(N + V)) and uploads, for each distinct token, the list
 * of its rows; one block per distinct token sums its rows in row order and
 * adds the sum to that token's wte gradient row. No two blocks touch the
 * same row and the order is fixed, so the result is bitwise reproducible
 * (llm.c gets the same effect with buckets; atomicAdd would not). */
#ifndef FW_CUDA_ENCODER_CUH
#define FW_CUDA_ENCODER_CUH

#include "common.cuh"

__global__ static void encoder_forward_kernel(float *out, const int32_t *ids, const int *pos,
                                              const float *wte, const float *wpe, int T, int C,
                                              size_t total) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    size_t r = i / (size_t)C;
    int c = (int)(i % (size_t)C);
    int t = pos ? pos[r] : (int)(r % (size_t)T);
    out[i] = wte[(size_t)ids[r] * C + c] + wpe[(size_t)t * C + c];
}

/* dwpe[t, c] += sum over b (in order) of dout[b, t, c]. */
__global__ static void encoder_backward_wpe_kernel(float *dwpe, const float *dout, int B, int T,
                                                   int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * C) return;
    float s = 0.0f;
    for (int b = 0; b < B; b++) s += dout[(size_t)b * T * C + i];
    dwpe[i] += s;
}

/* One block per distinct token u: rows[off[u] .. off[u+1]) are its rows. */
__global__ static void encoder_backward_wte_kernel(float *dwte, const float *dout,
                                                   const int *tokens, const int *off,
                                                   const int *rows, int C) {
    int u = blockIdx.x;
    int r0 = off[u], r1 = off[u + 1];
    float *dst = dwte + (size_t)tokens[u] * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float s = 0.0f;
        for (int k = r0; k < r1; k++) s += dout[(size_t)rows[k] * C + c];
        dst[c] += s;
    }
}

/* Host side of the backward: fill `plan` (tokens[nu], off[nu+1], rows[N],
 * laid out one after another, at most 2N+1 ints) from the N ids, with
 * `count` a zeroed scratch of V ints. Returns nu. */
static inline int s_encoder_plan(int *plan, int *count, const int32_t *ids, int N, int V) {
    for (int r = 0; r < N; r++) count[ids[r]]++;
    int nu = 0;
    for (int v = 0; v < V; v++)
        if (count[v]) nu++;
    int *tokens = plan, *off = plan + nu, *rows = off + nu + 1;
    int u = 0, o = 0;
    for (int v = 0; v < V; v++) {
        if (!count[v]) continue;
        tokens[u] = v;
        off[u] = o;
        o += count[v];
        count[v] = off[u]; /* becomes the insertion cursor */
        u++;
    }
    off[nu] = o;
    for (int r = 0; r < N; r++) rows[count[ids[r]]++] = r;
    return nu;
}

#endif
