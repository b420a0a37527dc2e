/* test_cuda_ops - every CUDA kernel against its CPU reference (cpu_kernels.h)
 * on the same random inputs.
 *
 * Error measure: normwise relative error max|gpu - cpu| / max|cpu| over the
 * whole output (NaN counts as infinite). Tolerances:
 *   FP32 kernels (elementwise, LayerNorm, softmax, cross-entropy, AdamW,
 *   FP32 GEMMs, attention in FP32 on both paths, flash and GEMM): 2e-5 -
 *   float rounding in a different summation order, nothing more;
 *   BF16 GEMMs (8-bit mantissa operands, FP32 accumulation) and attention
 *   in TF32: 1e-2.
 * Outputs the kernels overwrite are NaN-poisoned on the device (cuda_ops.h),
 * so an element a kernel forgets to write fails the comparison. Shapes are
 * deliberately odd (T = 37, widths not multiples of 32 or 128) to catch
 * edge handling. Needs a GPU: without one every check fails. */
#include "cpu_kernels.h"
#include "cuda/cuda_ops.h"
#include "fw_err.h"
#include "fw_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL32 2e-5
#define TOL16 1e-2

static uint64_t s_seed = 0x5eed1234abcdull;

static float *s_rand(size_t n, float scale) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = scale * ((float)(fw_test_rand(&s_seed) % 2000001) / 1000000.0f - 1.0f);
    return x;
}

static float *s_copy(const float *x, size_t n) {
    float *y = malloc(n * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

static double s_relerr(const float *got, const float *want, size_t n) {
    double maxd = 0, maxr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(d)) return INFINITY;
        if (d > maxd) maxd = d;
        if (fabs(want[i]) > maxr) maxr = fabs(want[i]);
    }
    return maxd / (maxr > 1e-30 ? maxr : 1e-30);
}

#define CHECK_CLOSE(got, want, n, tol)                                                             \
    do {                                                                                           \
        double e_ = s_relerr((got), (want), (n));                                                  \
        CHECKF(e_ <= (tol), "%s vs %s: relative error %.3g > %.3g", #got, #want, e_,               \
               (double)(tol));                                                                     \
    } while (0)

#define OK(call)                                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        CHECKF(rc_ == 0, "%s = %d (%s)", #call, rc_, fw_err_detail());                             \
    } while (0)

enum { B = 2, T = 37, C = 96, NH = 4, V = 300, VP = 384, N = B * T };

static void test_device(void) {
    int rc = fw_cuda_ops_check_device();
    CHECKF(rc == 0, "no usable CUDA device: %s (gpu tests need one)", fw_err_detail());
}

static void test_encoder(void) {
    int32_t inp[N];
    for (int i = 0; i < N; i++) inp[i] = (int32_t)(fw_test_rand(&s_seed) % 20); /* repeats */
    float *wte = s_rand((size_t)V * C, 1), *wpe = s_rand((size_t)T * C, 1);
    float *ref = malloc(sizeof(float) * N * C), *got = malloc(sizeof(float) * N * C);
    cpu_encoder_forward(ref, inp, wte, wpe, B, T, C);
    OK(fw_cuda_op_encoder_forward(got, inp, wte, wpe, B, T, C, V));
    CHECK_CLOSE(got, ref, (size_t)N * C, TOL32);
    float *dout = s_rand((size_t)N * C, 1);
    float *dwte_r = s_rand((size_t)V * C, 1), *dwpe_r = s_rand((size_t)T * C, 1);
    float *dwte_g = s_copy(dwte_r, (size_t)V * C), *dwpe_g = s_copy(dwpe_r, (size_t)T * C);
    cpu_encoder_backward(dwte_r, dwpe_r, dout, inp, B, T, C);
    OK(fw_cuda_op_encoder_backward(dwte_g, dwpe_g, dout, inp, B, T, C, V));
    CHECK_CLOSE(dwte_g, dwte_r, (size_t)V * C, TOL32);
    CHECK_CLOSE(dwpe_g, dwpe_r, (size_t)T * C, TOL32);
    free(wte), free(wpe), free(ref), free(got), free(dout);
    free(dwte_r), free(dwpe_r), free(dwte_g), free(dwpe_g);
}

static void test_layernorm(void) {
    size_t n = (size_t)N * C;
    float *x = s_rand(n, 3), *w = s_rand(C, 1), *b = s_rand(C, 1);
    for (size_t i = 0; i < n; i++) x[i] += 5.0f; /* a large mean: the two-pass variance matters */
    float *o_r = malloc(n * 4), *o_g = malloc(n * 4), m_r[N], m_g[N], r_r[N], r_g[N];
    cpu_layernorm_forward(o_r, m_r, r_r, x, w, b, N, C, 1e-5f);
    OK(fw_cuda_op_layernorm_forward(o_g, m_g, r_g, x, w, b, N, C, 1e-5f));
    CHECK_CLOSE(o_g, o_r, n, TOL32);
    CHECK_CLOSE(m_g, m_r, N, TOL32);
    CHECK_CLOSE(r_g, r_r, N, TOL32);
    float *dout = s_rand(n, 1), *di_r = s_rand(n, 1), *dw_r = s_rand(C, 1), *db_r = s_rand(C, 1);
    float *di_g = s_copy(di_r, n), *dw_g = s_copy(dw_r, C), *db_g = s_copy(db_r, C);
    cpu_layernorm_backward(di_r, dw_r, db_r, dout, x, w, m_r, r_r, N, C);
    OK(fw_cuda_op_layernorm_backward(di_g, dw_g, db_g, dout, x, w, m_r, r_r, N, C));
    CHECK_CLOSE(di_g, di_r, n, TOL32);
    CHECK_CLOSE(dw_g, dw_r, C, TOL32);
    CHECK_CLOSE(db_g, db_r, C, TOL32);
    free(x), free(w), free(b), free(o_r), free(o_g), free(dout), free(di_r), free(dw_r);
    free(db_r), free(di_g), free(dw_g), free(db_g);
}

static void s_matmul(int bf16, int with_bias) {
    enum { OC = 200 };
    double tol = bf16 ? TOL16 : TOL32;
    float *inp = s_rand((size_t)N * C, 1), *w = s_rand((size_t)OC * C, 0.1f);
    float *bias = with_bias ? s_rand(OC, 1) : NULL;
    float *o_r = malloc(sizeof(float) * N * OC), *o_g = malloc(sizeof(float) * N * OC);
    cpu_matmul_forward(o_r, inp, w, bias, N, C, OC);
    OK(fw_cuda_op_matmul_forward(bf16, o_g, inp, w, bias, N, C, OC));
    CHECK_CLOSE(o_g, o_r, (size_t)N * OC, tol);
    float *dout = s_rand((size_t)N * OC, 1), *di_r = malloc(sizeof(float) * N * C);
    float *di_g = malloc(sizeof(float) * N * C), *dw_r = s_rand((size_t)OC * C, 1);
    float *dw_g = s_copy(dw_r, (size_t)OC * C), *db_r = s_rand(OC, 1), *db_g = s_copy(db_r, OC);
    cpu_matmul_backward(di_r, dw_r, with_bias ? db_r : NULL, dout, inp, w, N, C, OC);
    OK(fw_cuda_op_matmul_backward(bf16, di_g, dw_g, with_bias ? db_g : NULL, dout, inp, w, N, C,
                                  OC));
    CHECK_CLOSE(di_g, di_r, (size_t)N * C, tol);
    CHECK_CLOSE(dw_g, dw_r, (size_t)OC * C, tol);
    CHECK_CLOSE(db_g, db_r, OC, TOL32); /* bias gradient: FP32 column sums either way */
    free(inp), free(w), free(bias), free(o_r), free(o_g), free(dout), free(di_r), free(di_g);
    free(dw_r), free(dw_g), free(db_r), free(db_g);
}

static void test_matmul_fp32(void) {
    s_matmul(0, 1);
    s_matmul(0, 0);
}
static void test_matmul_bf16(void) {
    s_matmul(1, 1);
    s_matmul(1, 0);
}

/* Attention shapes: partial tiles and the causal diagonal for both paths.
 * Flash tiles (flash_attention.cuh) are 32 keys wide and 32 queries tall
 * (hs <= 64) or 16/8 (hs <= 128), so T = 1, 31, 33, 37, 45, 70, 77, 130
 * cover a lone row, one short tile, a one-row spill, and several tiles with
 * a ragged end; hs 24, 48 (not a multiple of 32), 32, 64 and 128 cover
 * every compiled hs_max; B*NH > 1 everywhere but the T = 1 case. */
typedef struct {
    int b, t, c, nh;
} att_shape;

static const att_shape s_att_shapes[] = {
    {B, T, C, NH}, /* hs 24 */
    {1, 1, 64, 1},    {2, 31, 128, 2}, {3, 77, 128, 4}, {2, 70, 256, 2},
    {1, 130, 128, 2}, {2, 45, 144, 3}, {2, 33, 256, 2},
};

/* One path (mode, cuda_ops.h) against the CPU reference: out and lse of
 * the forward, dqkv of the backward (from the CPU's lse, so a forward error
 * does not leak into the backward comparison). */
static void s_attention(att_shape sh, int mode, int bf16) {
    double tol = bf16 ? TOL16 : TOL32;
    int failed_before = fw_test_failed;
    size_t n = (size_t)sh.b * sh.t, n3 = n * 3 * sh.c, nc = n * sh.c;
    size_t nl = (size_t)sh.b * sh.nh * sh.t;
    float *qkv = s_rand(n3, 1.5f);
    float *o_r = malloc(nc * 4), *o_g = malloc(nc * 4), *l_r = malloc(nl * 4),
          *l_g = malloc(nl * 4);
    OK(cpu_attention_forward(o_r, l_r, qkv, sh.b, sh.t, sh.c, sh.nh));
    OK(fw_cuda_op_attention_forward(bf16, mode, o_g, l_g, qkv, sh.b, sh.t, sh.c, sh.nh));
    CHECK_CLOSE(o_g, o_r, nc, tol);
    CHECK_CLOSE(l_g, l_r, nl, tol);
    float *dout = s_rand(nc, 1), *d_r = malloc(n3 * 4), *d_g = malloc(n3 * 4);
    OK(cpu_attention_backward(d_r, dout, qkv, l_r, sh.b, sh.t, sh.c, sh.nh));
    OK(fw_cuda_op_attention_backward(bf16, mode, d_g, dout, qkv, l_r, sh.b, sh.t, sh.c, sh.nh));
    CHECK_CLOSE(d_g, d_r, n3, tol);
    if (fw_test_failed > failed_before)
        fprintf(stderr, "  (attention mode %d bf16 %d B=%d T=%d C=%d NH=%d)\n", mode, bf16, sh.b,
                sh.t, sh.c, sh.nh);
    free(qkv), free(o_r), free(o_g), free(l_r), free(l_g), free(dout), free(d_r), free(d_g);
}

/* FP32, both paths, every shape: 2e-5 normwise relative (TOL32). */
static void test_attention_fp32(void) {
    for (size_t i = 0; i < sizeof s_att_shapes / sizeof s_att_shapes[0]; i++) {
        s_attention(s_att_shapes[i], FW_CUDA_ATT_FLASH, 0);
        s_attention(s_att_shapes[i], FW_CUDA_ATT_GEMM, 0);
    }
}

/* TF32 GEMMs (the GEMM path under bf16 precision): 1e-2 (TOL16). */
static void test_attention_tf32(void) {
    s_attention(s_att_shapes[0], FW_CUDA_ATT_GEMM, 1);
}

/* hs = 160: the flash kernels refuse it by name, the default path falls
 * back to the GEMMs and still matches the CPU. */
static void test_attention_flash_refuses(void) {
    att_shape sh = {1, 5, 160, 1};
    float *qkv = s_rand((size_t)sh.t * 3 * sh.c, 1), out[5 * 160], lse[5], dq[5 * 480],
          dout[5 * 160] = {0};
    int rc =
        fw_cuda_op_attention_forward(0, FW_CUDA_ATT_FLASH, out, lse, qkv, sh.b, sh.t, sh.c, sh.nh);
    CHECK_EQ_INT(rc, FW_EINVAL);
    CHECKF(strstr(fw_err_detail(), "hs=160") != NULL, "detail: %s", fw_err_detail());
    rc = fw_cuda_op_attention_backward(0, FW_CUDA_ATT_FLASH, dq, dout, qkv, lse, sh.b, sh.t, sh.c,
                                       sh.nh);
    CHECK_EQ_INT(rc, FW_EINVAL);
    CHECKF(strstr(fw_err_detail(), "hs=160") != NULL, "detail: %s", fw_err_detail());
    free(qkv);
    s_attention(sh, FW_CUDA_ATT_DEFAULT, 0); /* flash unless FW_CUDA_ATTENTION=gemm: GEMMs */
}

/* The flash path gives the same bits run to run (no atomics, fixed
 * summation order): forward twice, backward twice, memcmp. */
static void test_attention_flash_deterministic(void) {
    att_shape sh = {2, 200, 128, 2};
    size_t n = (size_t)sh.b * sh.t, n3 = n * 3 * sh.c, nc = n * sh.c;
    size_t nl = (size_t)sh.b * sh.nh * sh.t;
    float *qkv = s_rand(n3, 1.5f), *dout = s_rand(nc, 1);
    float *o1 = malloc(nc * 4), *o2 = malloc(nc * 4), *l1 = malloc(nl * 4), *l2 = malloc(nl * 4);
    float *d1 = malloc(n3 * 4), *d2 = malloc(n3 * 4);
    OK(fw_cuda_op_attention_forward(0, FW_CUDA_ATT_FLASH, o1, l1, qkv, sh.b, sh.t, sh.c, sh.nh));
    OK(fw_cuda_op_attention_forward(0, FW_CUDA_ATT_FLASH, o2, l2, qkv, sh.b, sh.t, sh.c, sh.nh));
    CHECK(memcmp(o1, o2, nc * 4) == 0);
    CHECK(memcmp(l1, l2, nl * 4) == 0);
    OK(fw_cuda_op_attention_backward(0, FW_CUDA_ATT_FLASH, d1, dout, qkv, l1, sh.b, sh.t, sh.c,
                                     sh.nh));
    OK(fw_cuda_op_attention_backward(0, FW_CUDA_ATT_FLASH, d2, dout, qkv, l1, sh.b, sh.t, sh.c,
                                     sh.nh));
    CHECK(memcmp(d1, d2, n3 * 4) == 0);
    free(qkv), free(dout), free(o1), free(o2), free(l1), free(l2), free(d1), free(d2);
}

/* FW_CUDA_ATTENTION's values (no device needed). */
static void test_attention_mode(void) {
    int m = -1;
    CHECK_EQ_INT(fw_cuda_attention_mode_parse(NULL, &m), 0);
    CHECK_EQ_INT(m, FW_CUDA_ATT_FLASH);
    m = -1;
    CHECK_EQ_INT(fw_cuda_attention_mode_parse("", &m), 0);
    CHECK_EQ_INT(m, FW_CUDA_ATT_FLASH);
    CHECK_EQ_INT(fw_cuda_attention_mode_parse("gemm", &m), 0);
    CHECK_EQ_INT(m, FW_CUDA_ATT_GEMM);
    CHECK_EQ_INT(fw_cuda_attention_mode_parse("flash", &m), 0);
    CHECK_EQ_INT(m, FW_CUDA_ATT_FLASH);
    CHECK_EQ_INT(fw_cuda_attention_mode_parse("Flash2", &m), FW_EINVAL);
    const char *d = fw_err_detail();
    CHECKF(strstr(d, "FW_CUDA_ATTENTION") && strstr(d, "Flash2") && strstr(d, "flash or gemm"),
           "detail: %s", d);
}

static void test_gelu(void) {
    size_t n = 10007;
    float *x = s_rand(n, 6), *o_r = malloc(n * 4), *o_g = malloc(n * 4);
    x[0] = 30.0f, x[1] = -30.0f; /* saturated tanh: no inf/NaN from the derivative */
    cpu_gelu_forward(o_r, x, n);
    OK(fw_cuda_op_gelu_forward(o_g, x, n));
    CHECK_CLOSE(o_g, o_r, n, TOL32);
    float *d = s_rand(n, 1);
    cpu_gelu_backward(o_r, x, d, n);
    OK(fw_cuda_op_gelu_backward(o_g, x, d, n));
    CHECK_CLOSE(o_g, o_r, n, TOL32);
    free(x), free(o_r), free(o_g), free(d);
}

static void test_crossentropy(void) {
    size_t n = (size_t)N * VP;
    float *logits = s_rand(n, 8);
    int32_t tg[N];
    for (int i = 0; i < N; i++) tg[i] = i % 5 == 0 ? -1 : (int32_t)(fw_test_rand(&s_seed) % V);
    float l_r[N], l_g[N], s_r[N], s_g[N];
    cpu_crossentropy_forward(l_r, s_r, logits, tg, N, V, VP);
    OK(fw_cuda_op_crossentropy_forward(l_g, s_g, logits, tg, N, V, VP));
    CHECK_CLOSE(l_g, l_r, N, TOL32);
    CHECK_CLOSE(s_g, s_r, N, TOL32);
    float *g_r = s_copy(logits, n), *g_g = s_copy(logits, n);
    cpu_crossentropy_backward(g_r, s_r, tg, 0.125f, N, V, VP);
    OK(fw_cuda_op_crossentropy_backward(g_g, s_r, tg, 0.125f, N, V, VP));
    CHECK_CLOSE(g_g, g_r, n, TOL32);
    /* argmax, with a planted tie in row 3: the lowest index must win */
    logits[3 * VP + 10] = 100.0f, logits[3 * VP + 20] = 100.0f;
    logits[4 * VP + V] = 1000.0f; /* a padding column never wins */
    int32_t a_r[N], a_g[N];
    cpu_argmax(a_r, logits, N, V, VP);
    OK(fw_cuda_op_argmax(a_g, logits, N, V, VP));
    int same = 1;
    for (int i = 0; i < N; i++) same &= a_r[i] == a_g[i];
    CHECK(same);
    CHECK_EQ_INT(a_g[3], 10);
    free(logits), free(g_r), free(g_g);
}

static void test_sumsq_adamw(void) {
    size_t n = 300007; /* several grid strides and a ragged end */
    float *g = s_rand(n, 1);
    double s_r, s_g = -1;
    OK(cpu_sumsq(g, n, &s_r));
    OK(fw_cuda_op_sumsq(g, n, &s_g));
    CHECK_NEAR(s_g / s_r, 1.0, 1e-12);
    float *p_r = s_rand(n, 1), *m_r = s_rand(n, 0.01f), *v_r = s_rand(n, 0.01f);
    for (size_t i = 0; i < n; i++) v_r[i] = fabsf(v_r[i]);
    float *p_g = s_copy(p_r, n), *m_g = s_copy(m_r, n), *v_g = s_copy(v_r, n);
    cpu_adamw(p_r, g, m_r, v_r, n, 0.5f, 1e-3f, 0.9f, 0.95f, 0.19f, 0.0975f, 1e-8f, 0.1f);
    OK(fw_cuda_op_adamw(p_g, g, m_g, v_g, n, 0.5f, 1e-3f, 0.9f, 0.95f, 0.19f, 0.0975f, 1e-8f,
                        0.1f));
    CHECK_CLOSE(p_g, p_r, n, TOL32);
    CHECK_CLOSE(m_g, m_r, n, TOL32);
    CHECK_CLOSE(v_g, v_r, n, TOL32);
    free(g), free(p_r), free(m_r), free(v_r), free(p_g), free(m_g), free(v_g);
}

int main(void) {
    RUN(test_attention_mode); /* before the device check: it needs none */
    RUN(test_device);
    if (fw_test_failed) return fw_test_summary(); /* test_attention_mode passes without one */
    RUN(test_encoder);
    RUN(test_layernorm);
    RUN(test_matmul_fp32);
    RUN(test_matmul_bf16);
    RUN(test_attention_fp32);
    RUN(test_attention_tf32);
    RUN(test_attention_flash_refuses);
    RUN(test_attention_flash_deterministic);
    RUN(test_gelu);
    RUN(test_crossentropy);
    RUN(test_sumsq_adamw);
    return fw_test_summary();
}
