/* cpu_model.c - the CPU backend: buffers and the order of kernels for
 * forward, backward, AdamW, embedding and KV-cache generation.
 *
 * Theory of operation
 * -------------------
 * Parameters, gradients and AdamW moments are each one contiguous float
 * buffer in fw_model_param_layout order. Gradients and moments are allocated
 * on first use, so an inference-only model costs one copy of the weights.
 *
 * Activations live in one buffer sized for the N = B*T rows of the call
 * (grown, never shrunk). In train mode every layer keeps its own
 * activations for backward; in inference mode the per-layer stride is 0 and
 * all layers share one slot (the residual stream still alternates between
 * the res2 and res3 buffers, so nothing is read after being overwritten).
 * Attention keeps only the log-sum-exp of every query's scores; backward
 * recomputes the weights from q, k and it (memory O(T), not O(T^2)).
 *
 * Forward, one layer (res = encoded for layer 0, else res3 of layer l-1):
 *     ln1  = LN(res)                 qkv  = ln1 @ Wqkv^T + b
 *     atty = attention(qkv)          res2 = atty @ Wproj^T + b + res
 *     ln2  = LN(res2)                fch  = ln2 @ Wfc^T + b
 *     fchg = gelu(fch)               res3 = fchg @ Wfcproj^T + b + res2
 * then lnf = LN(res3[L-1]), logits = lnf @ wte^T (tied head), cross-entropy.
 * Backward walks the same list in reverse with one gradient of the residual
 * stream (dresid) and three scratch buffers (dbuf [N,C], d4c [N,4C],
 * dqkv [N,3C]) reused by every layer.
 *
 * The KV cache stores keys and values [L][batch][max_len][C]; its forward
 * runs the same kernels on just the new tokens, attending through
 * cpu_attend_one like the full forward, so both give the same numbers up to
 * the blocking of sgemm. */
#include "acts.h"
#include "cpu_kernels.h"
#include "engine.h"

#include "fw_err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    fw_model_config cfg;
    fw_param_tensor t[FW_NUM_PARAM_TENSORS];
    size_t np;
    float *params, *grads;
    float *mom1, *mom2; /* AdamW state of parameters [opt_off, opt_off + opt_len) */
    size_t opt_off, opt_len;

    float *acts_buf;
    size_t acts_cap; /* floats */
    fw_acts a;
    float *logits; /* [N, Vp] */
    size_t logits_cap;
    int32_t *inputs, *targets;
    size_t io_cap;
    float *bw_buf; /* backward scratch: dresid, dbuf, d4c, dqkv */
    size_t bw_cap;

    int B, T;
    size_t n_valid; /* non-ignored targets of the last forward */
} cpu_be;

typedef struct {
    cpu_be *be;
    int batch, max_len;
    float *k, *v;   /* [L][batch][max_len][C] */
    float *scratch; /* per-call rows: x, ln, qkv, atty, x2, fch */
    size_t scratch_rows;
    float *logits; /* [batch or 1, Vp] */
} cpu_kv;

/* ------------------------------------------------------------------------ */
/* Buffers                                                                   */
/* ------------------------------------------------------------------------ */

static float *s_param(cpu_be *be, int i) {
    return be->params + be->t[i].offset;
}
static float *s_grad(cpu_be *be, int i) {
    return be->grads + be->t[i].offset;
}

/* Grow *buf to at least n elements of `size` bytes (contents not kept). */
static int s_reserve(void **buf, size_t *cap, size_t n, size_t size, const char *what) {
    if (*cap >= n && *buf) return 0;
    free(*buf);
    *cap = 0;
    *buf = malloc(n * size);
    if (!*buf) return fw_err_set(FW_ENOMEM, "cpu: %s: %zu MB", what, n * size >> 20);
    *cap = n;
    return 0;
}

static int s_prepare_acts(cpu_be *be, size_t N, int full) {
    size_t need = fw_acts_layout(&be->cfg, N, full, 1, NULL, NULL);
    int rc = s_reserve((void **)&be->acts_buf, &be->acts_cap, need, sizeof(float), "activations");
    if (rc < 0) return rc;
    fw_acts_layout(&be->cfg, N, full, 1, be->acts_buf, &be->a);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle and plain buffers                                               */
/* ------------------------------------------------------------------------ */

static void *cpu_create(const fw_model_config *cfg, int dev) {
    fw_engine_set_threads(0); /* OpenBLAS single-threaded: see cpu_kernels.c */
    if (dev != 0) {
        fw_err_set(FW_EINVAL, "cpu device takes no index");
        return NULL;
    }
    cpu_be *be = calloc(1, sizeof *be);
    if (!be) {
        fw_err_set(FW_ENOMEM, "cpu backend");
        return NULL;
    }
    be->cfg = *cfg;
    be->np = fw_model_param_layout(cfg, be->t);
    be->opt_len = be->np;
    be->params = calloc(be->np, sizeof(float));
    if (!be->params) {
        fw_err_set(FW_ENOMEM, "cpu: parameters: %zu MB", be->np * sizeof(float) >> 20);
        free(be);
        return NULL;
    }
    return be;
}

static void cpu_destroy(void *p) {
    cpu_be *be = p;
    if (!be) return;
    free(be->params);
    free(be->grads);
    free(be->mom1);
    free(be->mom2);
    free(be->acts_buf);
    free(be->logits);
    free(be->inputs);
    free(be->targets);
    free(be->bw_buf);
    free(be);
}

static float *cpu_params(void *p) {
    return ((cpu_be *)p)->params;
}

static float *cpu_grads(void *p) {
    cpu_be *be = p;
    if (!be->grads) {
        be->grads = calloc(be->np, sizeof(float));
        if (!be->grads) fw_err_set(FW_ENOMEM, "cpu: gradients: %zu MB", be->np * 4 >> 20);
    }
    return be->grads;
}

static int cpu_read_params(void *p, float *dst) {
    cpu_be *be = p;
    memcpy(dst, be->params, be->np * sizeof(float));
    return 0;
}

static int cpu_write_params(void *p, const float *src) {
    cpu_be *be = p;
    memcpy(be->params, src, be->np * sizeof(float));
    return 0;
}

static int s_alloc_opt(cpu_be *be) {
    if (be->mom1) return 0;
    be->mom1 = calloc(be->opt_len, sizeof(float));
    be->mom2 = calloc(be->opt_len, sizeof(float));
    if (!be->mom1 || !be->mom2) {
        free(be->mom1);
        free(be->mom2);
        be->mom1 = be->mom2 = NULL;
        return fw_err_set(FW_ENOMEM, "cpu: AdamW state: %zu MB", 2 * be->opt_len * 4 >> 20);
    }
    return 0;
}

static int cpu_read_opt(void *p, float *m1, float *m2) {
    cpu_be *be = p;
    memset(m1, 0, be->np * sizeof(float));
    memset(m2, 0, be->np * sizeof(float));
    if (!be->mom1) return 0;
    memcpy(m1 + be->opt_off, be->mom1, be->opt_len * sizeof(float));
    memcpy(m2 + be->opt_off, be->mom2, be->opt_len * sizeof(float));
    return 0;
}

static int cpu_write_opt(void *p, const float *m1, const float *m2) {
    cpu_be *be = p;
    int rc = s_alloc_opt(be);
    if (rc < 0) return rc;
    memcpy(be->mom1, m1 + be->opt_off, be->opt_len * sizeof(float));
    memcpy(be->mom2, m2 + be->opt_off, be->opt_len * sizeof(float));
    return 0;
}

static int cpu_clear_opt(void *p) {
    cpu_be *be = p;
    free(be->mom1);
    free(be->mom2);
    be->mom1 = be->mom2 = NULL;
    return 0;
}

static int cpu_shard_opt(void *p, size_t off, size_t len) {
    cpu_be *be = p;
    cpu_clear_opt(be);
    be->opt_off = off, be->opt_len = len;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Forward                                                                   */
/* ------------------------------------------------------------------------ */

/* Embedding through ln_f for be->inputs (B x T) into be->a; acts prepared. */
static int s_forward_body(cpu_be *be, int B, int T) {
    const fw_model_config *cfg = &be->cfg;
    int L = cfg->n_layer, C = cfg->n_embd, NH = cfg->n_head, N = B * T;
    size_t n = (size_t)N;
    fw_acts *a = &be->a;
    cpu_encoder_forward(a->encoded, be->inputs, s_param(be, FW_P_WTE), s_param(be, FW_P_WPE), B, T,
                        C);
    for (int l = 0; l < L; l++) {
        fw_acts_l v = fw_acts_at(a, n, C, NH, l);
        size_t lc = (size_t)l * C;
        cpu_layernorm_forward(v.ln1, v.ln1m, v.ln1r, v.res, s_param(be, FW_P_LN1W) + lc,
                              s_param(be, FW_P_LN1B) + lc, N, C, cfg->layer_norm_eps);
        cpu_matmul_forward(v.qkv, v.ln1, s_param(be, FW_P_QKVW) + lc * 3 * C,
                           s_param(be, FW_P_QKVB) + 3 * lc, N, C, 3 * C);
        int rc = cpu_attention_forward(v.atty, v.lse, v.qkv, B, T, C, NH);
        if (rc < 0) return rc;
        cpu_matmul_forward(v.res2, v.atty, s_param(be, FW_P_ATTPROJW) + lc * C,
                           s_param(be, FW_P_ATTPROJB) + lc, N, C, C);
        cpu_residual_add(v.res2, v.res, n * C);
        cpu_layernorm_forward(v.ln2, v.ln2m, v.ln2r, v.res2, s_param(be, FW_P_LN2W) + lc,
                              s_param(be, FW_P_LN2B) + lc, N, C, cfg->layer_norm_eps);
        cpu_matmul_forward(v.fch, v.ln2, s_param(be, FW_P_FCW) + lc * 4 * C,
                           s_param(be, FW_P_FCB) + 4 * lc, N, C, 4 * C);
        cpu_gelu_forward(v.fchg, v.fch, n * 4 * C);
        cpu_matmul_forward(v.res3, v.fchg, s_param(be, FW_P_FCPROJW) + lc * 4 * C,
                           s_param(be, FW_P_FCPROJB) + lc, N, 4 * C, C);
        cpu_residual_add(v.res3, v.res2, n * C);
    }
    cpu_layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, fw_acts_layer(a, a->res3, n, C, L - 1),
                          s_param(be, FW_P_LNFW), s_param(be, FW_P_LNFB), N, C,
                          cfg->layer_norm_eps);
    return 0;
}

static int s_prepare_io(cpu_be *be, size_t n) {
    if (be->io_cap >= n) return 0;
    free(be->inputs);
    free(be->targets);
    be->io_cap = 0;
    be->inputs = malloc(n * sizeof(int32_t));
    be->targets = malloc(n * sizeof(int32_t));
    if (!be->inputs || !be->targets) return fw_err_set(FW_ENOMEM, "cpu: %zu token ids", n);
    be->io_cap = n;
    return 0;
}

static int cpu_forward(void *p, const int32_t *inputs, const int32_t *targets, int B, int T,
                       int train, float *loss) {
    cpu_be *be = p;
    const fw_model_config *cfg = &be->cfg;
    size_t N = (size_t)B * T, Vp = (size_t)cfg->padded_vocab_size;
    be->B = be->T = 0;
    int rc = s_prepare_acts(be, N, train);
    if (rc == 0) rc = s_prepare_io(be, N);
    if (rc == 0)
        rc = s_reserve((void **)&be->logits, &be->logits_cap, N * Vp, sizeof(float), "logits");
    if (rc < 0) return rc;
    memcpy(be->inputs, inputs, N * sizeof(int32_t));
    if (targets) memcpy(be->targets, targets, N * sizeof(int32_t));
    if ((rc = s_forward_body(be, B, T)) < 0) return rc;
    cpu_matmul_forward(be->logits, be->a.lnf, s_param(be, FW_P_WTE), NULL, (int)N, cfg->n_embd,
                       (int)Vp);
    be->n_valid = 0;
    *loss = 0.0f;
    if (targets) {
        cpu_crossentropy_forward(be->a.losses, be->a.ce_lse, be->logits, be->targets, (int)N,
                                 cfg->vocab_size, (int)Vp);
        double s = 0.0;
        for (size_t i = 0; i < N; i++) {
            if (be->targets[i] < 0) continue;
            s += be->a.losses[i];
            be->n_valid++;
        }
        *loss = be->n_valid ? (float)(s / (double)be->n_valid) : 0.0f;
    }
    be->B = B;
    be->T = T;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Backward                                                                  */
/* ------------------------------------------------------------------------ */

static int cpu_backward(void *p, float grad_scale, const fw_grad_sync *sync) {
    cpu_be *be = p;
    const fw_model_config *cfg = &be->cfg;
    int B = be->B, T = be->T, N = B * T, L = cfg->n_layer, C = cfg->n_embd, NH = cfg->n_head;
    int V = cfg->vocab_size, Vp = cfg->padded_vocab_size;
    size_t n = (size_t)N;
    if (!cpu_grads(be)) return FW_ENOMEM;
    int rc =
        s_reserve((void **)&be->bw_buf, &be->bw_cap, n * 9 * C, sizeof(float), "backward scratch");
    if (rc < 0) return rc;
    float *dresid = be->bw_buf, *dbuf = dresid + n * C, *d4c = dbuf + n * C,
          *dqkv = d4c + n * 4 * C;
    fw_acts *a = &be->a;
    float scale = grad_scale > 0 ? grad_scale : (be->n_valid ? 1.0f / (float)be->n_valid : 0.0f);

    /* LM head (tied to wte) and ln_f. */
    cpu_crossentropy_backward(be->logits, a->ce_lse, be->targets, scale, N, V, Vp);
    cpu_matmul_backward(dbuf, s_grad(be, FW_P_WTE), NULL, be->logits, a->lnf, s_param(be, FW_P_WTE),
                        N, C, Vp);
    memset(dresid, 0, n * C * sizeof(float));
    cpu_layernorm_backward(dresid, s_grad(be, FW_P_LNFW), s_grad(be, FW_P_LNFB), dbuf,
                           fw_acts_layer(a, a->res3, n, C, L - 1), s_param(be, FW_P_LNFW),
                           a->lnf_mean, a->lnf_rstd, N, C);

    for (int l = L - 1; l >= 0; l--) {
        fw_acts_l v = fw_acts_at(a, n, C, NH, l);
        size_t lc = (size_t)l * C;

        /* res3 = res2 + fcproj(gelu(fc(ln2(res2)))): dresid is d(res3). */
        cpu_matmul_backward(d4c, s_grad(be, FW_P_FCPROJW) + lc * 4 * C,
                            s_grad(be, FW_P_FCPROJB) + lc, dresid, v.fchg,
                            s_param(be, FW_P_FCPROJW) + lc * 4 * C, N, 4 * C, C);
        cpu_gelu_backward(d4c, v.fch, d4c, n * 4 * C);
        cpu_matmul_backward(dbuf, s_grad(be, FW_P_FCW) + lc * 4 * C, s_grad(be, FW_P_FCB) + 4 * lc,
                            d4c, v.ln2, s_param(be, FW_P_FCW) + lc * 4 * C, N, C, 4 * C);
        cpu_layernorm_backward(dresid, s_grad(be, FW_P_LN2W) + lc, s_grad(be, FW_P_LN2B) + lc, dbuf,
                               v.res2, s_param(be, FW_P_LN2W) + lc, v.ln2m, v.ln2r, N, C);
        /* res2 = res + attproj(attention(qkv(ln1(res)))): dresid is now d(res2). */
        cpu_matmul_backward(dbuf, s_grad(be, FW_P_ATTPROJW) + lc * C,
                            s_grad(be, FW_P_ATTPROJB) + lc, dresid, v.atty,
                            s_param(be, FW_P_ATTPROJW) + lc * C, N, C, C);
        if ((rc = cpu_attention_backward(dqkv, dbuf, v.qkv, v.lse, B, T, C, NH)) < 0) return rc;
        cpu_matmul_backward(dbuf, s_grad(be, FW_P_QKVW) + lc * 3 * C,
                            s_grad(be, FW_P_QKVB) + 3 * lc, dqkv, v.ln1,
                            s_param(be, FW_P_QKVW) + lc * 3 * C, N, C, 3 * C);
        cpu_layernorm_backward(dresid, s_grad(be, FW_P_LN1W) + lc, s_grad(be, FW_P_LN1B) + lc, dbuf,
                               v.res, s_param(be, FW_P_LN1W) + lc, v.ln1m, v.ln1r, N, C);
        if (sync && (rc = fw_grad_sync_bucket(sync, cfg, L - 1 - l, NULL)) < 0) return rc;
    }
    cpu_encoder_backward(s_grad(be, FW_P_WTE), s_grad(be, FW_P_WPE), dresid, be->inputs, B, T, C);
    if (sync && ((rc = fw_grad_sync_bucket(sync, cfg, L, NULL)) < 0 ||
                 (rc = sync->finish(sync->ctx, NULL)) < 0))
        return rc;
    return 0;
}

static int cpu_zero_grad(void *p) {
    cpu_be *be = p;
    if (!cpu_grads(be)) return FW_ENOMEM;
    memset(be->grads, 0, be->np * sizeof(float));
    return 0;
}

static int cpu_grad_sumsq(void *p, size_t off, size_t len, double *sumsq) {
    cpu_be *be = p;
    return cpu_sumsq(be->grads + off, len, sumsq);
}

static int cpu_step_adamw(void *p, const fw_adamw *opt, int64_t step, float norm) {
    cpu_be *be = p;
    int rc = s_alloc_opt(be);
    if (rc < 0) return rc;
    float gscale = 1.0f;
    if (opt->grad_clip > 0 && norm > opt->grad_clip) gscale = opt->grad_clip / norm;
    float bc1 = (float)(1.0 - pow(opt->beta1, (double)step));
    float bc2 = (float)(1.0 - pow(opt->beta2, (double)step));
    for (int i = 0; i < FW_NUM_PARAM_TENSORS; i++) {
        size_t lo, hi, s = be->opt_off;
        if (!fw_param_range_part(&be->t[i], be->opt_off, be->opt_len, &lo, &hi)) continue;
        cpu_adamw(be->params + lo, be->grads + lo, be->mom1 + (lo - s), be->mom2 + (lo - s),
                  hi - lo, gscale, opt->lr, opt->beta1, opt->beta2, bc1, bc2, opt->eps,
                  be->t[i].decay ? opt->weight_decay : 0.0f);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Readers and embedding                                                     */
/* ------------------------------------------------------------------------ */

static int cpu_get_losses(void *p, float *out) {
    cpu_be *be = p;
    memcpy(out, be->a.losses, (size_t)be->B * be->T * sizeof(float));
    return 0;
}

static int cpu_get_argmax(void *p, int32_t *out) {
    cpu_be *be = p;
    cpu_argmax(out, be->logits, be->B * be->T, be->cfg.vocab_size, be->cfg.padded_vocab_size);
    return 0;
}

static int cpu_get_logits(void *p, size_t row0, size_t nrows, float *out) {
    cpu_be *be = p;
    size_t V = (size_t)be->cfg.vocab_size, Vp = (size_t)be->cfg.padded_vocab_size;
    for (size_t r = 0; r < nrows; r++)
        memcpy(out + r * V, be->logits + (row0 + r) * Vp, V * sizeof(float));
    return 0;
}

static int cpu_embed(void *p, const int32_t *ids, const int32_t *lens, int B, int T, float *out) {
    cpu_be *be = p;
    int C = be->cfg.n_embd, Tm = 0;
    for (int b = 0; b < B; b++)
        if (lens[b] > Tm) Tm = lens[b];
    size_t N = (size_t)B * Tm;
    be->B = be->T = 0;
    int rc = s_prepare_acts(be, N, 0);
    if (rc == 0) rc = s_prepare_io(be, N);
    if (rc < 0) return rc;
    /* Only columns < max(lens) are run; padding ids are replaced by 0 so
     * they are never read (attention is causal: they could not matter). */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < Tm; t++)
            be->inputs[(size_t)b * Tm + t] = t < lens[b] ? ids[(size_t)b * T + t] : 0;
    if ((rc = s_forward_body(be, B, Tm)) < 0) return rc;
    for (int b = 0; b < B; b++) {
        float *o = out + (size_t)b * C;
        double norm = 0.0;
        for (int c = 0; c < C; c++) {
            double s = 0.0;
            for (int t = 0; t < lens[b]; t++) s += be->a.lnf[((size_t)b * Tm + t) * C + c];
            o[c] = (float)(s / lens[b]);
            norm += (double)o[c] * o[c];
        }
        norm = sqrt(norm);
        float inv = norm > 0 ? (float)(1.0 / norm) : 0.0f;
        for (int c = 0; c < C; c++) o[c] *= inv;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* KV cache                                                                  */
/* ------------------------------------------------------------------------ */

static void *cpu_kv_new(void *p, int batch, int max_len) {
    cpu_be *be = p;
    cpu_kv *kv = calloc(1, sizeof *kv);
    size_t n = (size_t)be->cfg.n_layer * batch * max_len * be->cfg.n_embd;
    size_t rows = (size_t)(batch > max_len ? batch : max_len);
    size_t lrows = (size_t)(batch > 1 ? batch : 1);
    if (kv) {
        kv->k = malloc(n * sizeof(float));
        kv->v = malloc(n * sizeof(float));
        kv->scratch = malloc(rows * 11 * (size_t)be->cfg.n_embd * sizeof(float));
        kv->logits = malloc(lrows * (size_t)be->cfg.padded_vocab_size * sizeof(float));
    }
    if (!kv || !kv->k || !kv->v || !kv->scratch || !kv->logits) {
        if (kv) {
            free(kv->k);
            free(kv->v);
            free(kv->scratch);
            free(kv->logits);
            free(kv);
        }
        fw_err_set(FW_ENOMEM, "cpu: kv cache %d x %d: %zu MB", batch, max_len, 2 * n * 4 >> 20);
        return NULL;
    }
    kv->be = be;
    kv->batch = batch;
    kv->max_len = max_len;
    kv->scratch_rows = rows;
    return kv;
}

static void cpu_kv_destroy(void *p) {
    cpu_kv *kv = p;
    if (!kv) return;
    free(kv->k);
    free(kv->v);
    free(kv->scratch);
    free(kv->logits);
    free(kv);
}

/* Run n tokens: token i is ids[i] of cache row rows[i] at position pos[i];
 * tokens of one row must come in position order. Logits (V wide) for the
 * tokens with want[i] go to logits_out[k*V] for the k-th such token. */
static int s_kv_forward(cpu_kv *kv, int n, const int32_t *ids, const int *rows, const int *pos,
                        const uint8_t *want, float *logits_out) {
    cpu_be *be = kv->be;
    const fw_model_config *cfg = &be->cfg;
    int L = cfg->n_layer, C = cfg->n_embd, NH = cfg->n_head, hs = C / NH;
    size_t nc = (size_t)n * C;
    float *x = kv->scratch, *ln = x + nc, *qkv = ln + nc, *atty = qkv + 3 * nc, *x2 = atty + nc,
          *fch = x2 + nc;
    const float *wte = s_param(be, FW_P_WTE), *wpe = s_param(be, FW_P_WPE);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++)
            x[(size_t)i * C + c] = wte[(size_t)ids[i] * C + c] + wpe[(size_t)pos[i] * C + c];
    for (int l = 0; l < L; l++) {
        size_t lc = (size_t)l * C;
        size_t layer_off = (size_t)l * kv->batch * kv->max_len * C;
        cpu_layernorm_forward(ln, NULL, NULL, x, s_param(be, FW_P_LN1W) + lc,
                              s_param(be, FW_P_LN1B) + lc, n, C, cfg->layer_norm_eps);
        cpu_matmul_forward(qkv, ln, s_param(be, FW_P_QKVW) + lc * 3 * C,
                           s_param(be, FW_P_QKVB) + 3 * lc, n, C, 3 * C);
        for (int i = 0; i < n; i++) {
            size_t slot = layer_off + ((size_t)rows[i] * kv->max_len + pos[i]) * C;
            memcpy(kv->k + slot, qkv + (size_t)i * 3 * C + C, (size_t)C * sizeof(float));
            memcpy(kv->v + slot, qkv + (size_t)i * 3 * C + 2 * C, (size_t)C * sizeof(float));
        }
        int failed = 0;
#pragma omp parallel
        {
            float *scratch = malloc((size_t)kv->max_len * sizeof *scratch);
            if (!scratch) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(static)
            for (int ih = 0; ih < n * NH; ih++) {
                if (!scratch) continue;
                int i = ih / NH, h = ih % NH;
                size_t rowbase = layer_off + (size_t)rows[i] * kv->max_len * C + (size_t)h * hs;
                float lse;
                cpu_attend_one(atty + (size_t)i * C + (size_t)h * hs, &lse,
                               qkv + (size_t)i * 3 * C + (size_t)h * hs, kv->k + rowbase,
                               kv->v + rowbase, (size_t)C, pos[i] + 1, hs, scratch);
            }
            free(scratch);
        }
        if (failed) return fw_err_set(FW_ENOMEM, "kv attention scratch");
        cpu_matmul_forward(x2, atty, s_param(be, FW_P_ATTPROJW) + lc * C,
                           s_param(be, FW_P_ATTPROJB) + lc, n, C, C);
        cpu_residual_add(x2, x, nc);
        cpu_layernorm_forward(ln, NULL, NULL, x2, s_param(be, FW_P_LN2W) + lc,
                              s_param(be, FW_P_LN2B) + lc, n, C, cfg->layer_norm_eps);
        cpu_matmul_forward(fch, ln, s_param(be, FW_P_FCW) + lc * 4 * C,
                           s_param(be, FW_P_FCB) + 4 * lc, n, C, 4 * C);
        cpu_gelu_forward(fch, fch, nc * 4);
        cpu_matmul_forward(x, fch, s_param(be, FW_P_FCPROJW) + lc * 4 * C,
                           s_param(be, FW_P_FCPROJB) + lc, n, 4 * C, C);
        cpu_residual_add(x, x2, nc);
    }
    /* Gather the rows that want logits, then ln_f and the tied head on them only. */
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!want[i]) continue;
        if (k != i) memcpy(x + (size_t)k * C, x + (size_t)i * C, (size_t)C * sizeof(float));
        k++;
    }
    if (k == 0 || !logits_out) return 0;
    size_t V = (size_t)cfg->vocab_size, Vp = (size_t)cfg->padded_vocab_size;
    cpu_layernorm_forward(ln, NULL, NULL, x, s_param(be, FW_P_LNFW), s_param(be, FW_P_LNFB), k, C,
                          cfg->layer_norm_eps);
    cpu_matmul_forward(kv->logits, ln, wte, NULL, k, C, (int)Vp);
    for (int j = 0; j < k; j++)
        memcpy(logits_out + (size_t)j * V, kv->logits + (size_t)j * Vp, V * sizeof(float));
    return 0;
}

static int cpu_kv_forward(void *p, void *kvp, int n, const int32_t *ids, const int *rows,
                          const int *pos, const uint8_t *want, float *logits) {
    (void)p;
    return s_kv_forward(kvp, n, ids, rows, pos, want, logits);
}

const fw_backend fw_backend_cpu = {
    .name = "cpu",
    .create = cpu_create,
    .destroy = cpu_destroy,
    .params = cpu_params,
    .grads = cpu_grads,
    .read_params = cpu_read_params,
    .write_params = cpu_write_params,
    .read_opt = cpu_read_opt,
    .write_opt = cpu_write_opt,
    .clear_opt = cpu_clear_opt,
    .forward = cpu_forward,
    .backward = cpu_backward,
    .zero_grad = cpu_zero_grad,
    .grad_sumsq = cpu_grad_sumsq,
    .shard_opt = cpu_shard_opt,
    .step_adamw = cpu_step_adamw,
    .get_losses = cpu_get_losses,
    .get_argmax = cpu_get_argmax,
    .get_logits = cpu_get_logits,
    .embed = cpu_embed,
    .kv_new = cpu_kv_new,
    .kv_destroy = cpu_kv_destroy,
    .kv_forward = cpu_kv_forward,
};
