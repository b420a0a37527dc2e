/* model.c - model lifecycle, configuration, parameter layout and backend dispatch.
 *
 * Theory of operation
 * -------------------
 * fw_model is a thin shell: the configuration, the device string, a pointer
 * to a backend's vtable (fw_backend, engine.h) and that backend's state. Every
 * public function validates its arguments here (ids in range, B*T within the
 * context, the state the call needs) and then calls the backend, so a backend
 * may assume well-formed input and the CPU and CUDA backends reject exactly
 * the same things with the same messages.
 *
 * State the shell tracks (the guarantee each gives):
 *   last_B, last_T     > 0 once a forward succeeded; the get_* readers need it
 *   last_has_targets   losses / argmax against targets are meaningful
 *   last_train         the forward kept every layer's activations
 *   backward_done      the logits were overwritten by backward (get_logits refuses)
 *
 * The KV cache keeps its per-row lengths here; the backend only stores keys
 * and values and is told the position of every token it processes. */
#include "engine.h"

#include "fw_err.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS's thread control, declared here so model.c does not need the
 * OpenBLAS include path (it is linked privately into fw_engine). */
void openblas_set_num_threads(int num_threads);

struct fw_model {
    fw_model_config cfg;
    char device[32];
    const fw_backend *be_ops;
    void *be;
    size_t nparams;
    int train;
    int last_B, last_T;
    int last_has_targets;
    int last_train;
    int backward_done;
    int opt_sharded; /* fw_model_shard_optimizer gave a proper part of the buffer */
    int live_caches; /* caches not yet destroyed: destroying the model first is a bug */
};

struct fw_kv_cache {
    fw_model *m;
    void *kv;
    int batch, max_len;
    int *len; /* [batch] positions filled */
};

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */
/* ------------------------------------------------------------------------ */

int fw_model_config_preset(const char *name, int vocab_size, fw_model_config *cfg) {
    if (!name || !cfg) return fw_err_set(FW_EINVAL, "model preset: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    if (strcmp(name, "tiny") == 0) {
        *cfg = (fw_model_config){.n_layer = 2, .n_head = 2, .n_embd = 64, .n_ctx = 64};
    } else if (strcmp(name, "small") == 0) {
        *cfg = (fw_model_config){.n_layer = 4, .n_head = 4, .n_embd = 256, .n_ctx = 256};
    } else if (strcmp(name, "gpt2-124m") == 0 || strcmp(name, "gpt2") == 0) {
        *cfg = (fw_model_config){.n_layer = 12, .n_head = 12, .n_embd = 768, .n_ctx = 1024};
    } else {
        return fw_err_set(FW_EINVAL, "model preset \"%s\" unknown (tiny, small, gpt2-124m)", name);
    }
    cfg->vocab_size = vocab_size > 0 ? vocab_size : 50257;
    cfg->layer_norm_eps = 1e-5f;
    return fw_model_config_check(cfg);
}

int fw_model_config_check(fw_model_config *cfg) {
    if (!cfg) return fw_err_set(FW_EINVAL, "model config: NULL");
    /* Bounds keep every size computation inside size_t and every index
     * inside int, with room to spare (gpt2-xl is 48/25/1600/1024). */
    if (cfg->n_layer < 1 || cfg->n_layer > 256)
        return fw_err_set(FW_EINVAL, "model config: n_layer %d out of range 1..256", cfg->n_layer);
    if (cfg->n_head < 1 || cfg->n_head > 256)
        return fw_err_set(FW_EINVAL, "model config: n_head %d out of range 1..256", cfg->n_head);
    if (cfg->n_embd < 1 || cfg->n_embd > 16384)
        return fw_err_set(FW_EINVAL, "model config: n_embd %d out of range 1..16384", cfg->n_embd);
    if (cfg->n_embd % cfg->n_head != 0)
        return fw_err_set(FW_EINVAL, "model config: n_embd %d not a multiple of n_head %d",
                          cfg->n_embd, cfg->n_head);
    if (cfg->n_ctx < 1 || cfg->n_ctx > 65536)
        return fw_err_set(FW_EINVAL, "model config: n_ctx %d out of range 1..65536", cfg->n_ctx);
    if (cfg->vocab_size < 1 || cfg->vocab_size > 4194304)
        return fw_err_set(FW_EINVAL, "model config: vocab_size %d out of range 1..4194304",
                          cfg->vocab_size);
    if (cfg->padded_vocab_size == 0) cfg->padded_vocab_size = (cfg->vocab_size + 127) / 128 * 128;
    if (cfg->padded_vocab_size < cfg->vocab_size || cfg->padded_vocab_size > 4194304 + 128)
        return fw_err_set(FW_EINVAL, "model config: padded_vocab_size %d below vocab_size %d",
                          cfg->padded_vocab_size, cfg->vocab_size);
    if (!(cfg->layer_norm_eps > 0.0f) || cfg->layer_norm_eps > 1.0f)
        return fw_err_set(FW_EINVAL, "model config: layer_norm_eps %g out of range (0, 1]",
                          (double)cfg->layer_norm_eps);
    return 0;
}

size_t fw_model_param_layout(const fw_model_config *cfg, fw_param_tensor out[FW_NUM_PARAM_TENSORS]) {
    size_t L = (size_t)cfg->n_layer, C = (size_t)cfg->n_embd;
    size_t Vp = (size_t)cfg->padded_vocab_size, maxT = (size_t)cfg->n_ctx;
    static const char *const names[FW_NUM_PARAM_TENSORS] = {
        "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
        "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"};
    /* {ndim, d0, d1, d2, decay} */
    size_t dims[FW_NUM_PARAM_TENSORS][5] = {
        {2, Vp, C, 0, 1},     {2, maxT, C, 0, 1},   {2, L, C, 0, 0},    {2, L, C, 0, 0},
        {3, L, 3 * C, C, 1},  {2, L, 3 * C, 0, 0},  {3, L, C, C, 1},    {2, L, C, 0, 0},
        {2, L, C, 0, 0},      {2, L, C, 0, 0},      {3, L, 4 * C, C, 1}, {2, L, 4 * C, 0, 0},
        {3, L, C, 4 * C, 1},  {2, L, C, 0, 0},      {1, C, 0, 0, 0},    {1, C, 0, 0, 0}};
    size_t off = 0;
    for (int i = 0; i < FW_NUM_PARAM_TENSORS; i++) {
        fw_param_tensor t = {.name = names[i], .offset = off, .ndim = (int)dims[i][0]};
        size_t n = 1;
        for (int d = 0; d < t.ndim; d++) {
            t.shape[d] = (int)dims[i][1 + d];
            n *= dims[i][1 + d];
        }
        t.numel = n;
        t.decay = (int)dims[i][4];
        if (out) out[i] = t;
        off += n;
    }
    return off;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */
/* ------------------------------------------------------------------------ */

static const fw_backend *s_backend_for(const char *device, int *dev) {
    *dev = 0;
    if (strcmp(device, "cpu") == 0) return &fw_backend_cpu;
    if (strncmp(device, "cuda", 4) == 0) {
        const char *p = device + 4;
        if (*p == ':') {
            char *end = NULL;
            long v = strtol(p + 1, &end, 10);
            if (end == p + 1 || *end || v < 0 || v > 1023) {
                fw_err_set(FW_EINVAL, "device \"%s\": expected cuda:N", device);
                return NULL;
            }
            *dev = (int)v;
        } else if (*p) {
            fw_err_set(FW_EINVAL, "device \"%s\" unknown (cpu, cuda, cuda:N)", device);
            return NULL;
        }
#ifdef FW_WITH_CUDA
        return &fw_backend_cuda;
#else
        fw_err_set(FW_EUNSUPPORTED, "device \"%s\": this build has no CUDA backend", device);
        return NULL;
#endif
    }
    fw_err_set(FW_EINVAL, "device \"%s\" unknown (cpu, cuda, cuda:N)", device);
    return NULL;
}

fw_model *fw_model_new(const fw_model_config *cfg, const char *device) {
    if (!cfg) {
        fw_err_set(FW_EINVAL, "fw_model_new: NULL config");
        return NULL;
    }
    fw_model_config c = *cfg;
    if (fw_model_config_check(&c) < 0) return NULL;
    if (!device) device = "cpu";
    if (strlen(device) >= sizeof ((fw_model *)0)->device) {
        fw_err_set(FW_EINVAL, "device name too long");
        return NULL;
    }
    int dev;
    const fw_backend *ops = s_backend_for(device, &dev);
    if (!ops) return NULL;
    fw_model *m = calloc(1, sizeof *m);
    if (!m) {
        fw_err_set(FW_ENOMEM, "fw_model_new: out of memory");
        return NULL;
    }
    m->cfg = c;
    snprintf(m->device, sizeof m->device, "%s", device);
    m->be_ops = ops;
    m->nparams = fw_model_param_layout(&c, NULL);
    m->train = 1;
    m->be = ops->create(&m->cfg, dev);
    if (!m->be) {
        free(m);
        return NULL;
    }
    return m;
}

void fw_model_destroy(fw_model **pm) {
    if (!pm || !*pm) return;
    fw_model *m = *pm;
    m->be_ops->destroy(m->be);
    free(m);
    *pm = NULL;
}

const fw_model_config *fw_model_config_get(const fw_model *m) { return &m->cfg; }
const char *fw_model_device(const fw_model *m) { return m->device; }
size_t fw_model_num_params(const fw_model *m) { return m->nparams; }

static void s_forget_forward(fw_model *m) {
    m->last_B = m->last_T = 0;
    m->last_has_targets = 0;
    m->backward_done = 0;
}

int fw_model_init_random(fw_model *m, uint64_t seed) {
    /* Drawn on the host in buffer order with one generator, so that every
     * backend starts from the same floats for the same seed. */
    fw_param_tensor t[FW_NUM_PARAM_TENSORS];
    fw_model_param_layout(&m->cfg, t);
    float *p = malloc(m->nparams * sizeof *p);
    if (!p) return fw_err_set(FW_ENOMEM, "init: %zu parameters", m->nparams);
    fw_rng rng;
    fw_rng_seed(&rng, seed);
    double resid_std = 0.02 / sqrt(2.0 * m->cfg.n_layer);
    size_t C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size;
    for (int i = 0; i < FW_NUM_PARAM_TENSORS; i++) {
        float *x = p + t[i].offset;
        size_t n = t[i].numel;
        if (i == FW_P_LN1W || i == FW_P_LN2W || i == FW_P_LNFW) {
            for (size_t j = 0; j < n; j++) x[j] = 1.0f;
        } else if (!t[i].decay) {
            memset(x, 0, n * sizeof *x); /* biases */
        } else {
            double std = (i == FW_P_ATTPROJW || i == FW_P_FCPROJW) ? resid_std : 0.02;
            if (i == FW_P_WTE) n = V * C; /* padded rows stay 0: no token ever uses them */
            for (size_t j = 0; j < n; j++) x[j] = (float)(std * fw_rng_normal(&rng));
            if (i == FW_P_WTE) memset(x + n, 0, (t[i].numel - n) * sizeof *x);
        }
    }
    int rc = m->be_ops->write_params(m->be, p);
    free(p);
    if (rc < 0) return rc;
    rc = m->be_ops->clear_opt(m->be);
    if (rc < 0) return rc;
    if (m->be_ops->grads(m->be)) {
        rc = m->be_ops->zero_grad(m->be);
        if (rc < 0) return rc;
    }
    s_forget_forward(m);
    return 0;
}

int fw_model_read_params(const fw_model *m, float *dst) {
    return m->be_ops->read_params(m->be, dst);
}

int fw_model_write_params(fw_model *m, const float *src) {
    s_forget_forward(m);
    return m->be_ops->write_params(m->be, src);
}

int fw_model_read_opt_state(const fw_model *m, float *mom1, float *mom2) {
    return m->be_ops->read_opt(m->be, mom1, mom2);
}

int fw_model_write_opt_state(fw_model *m, const float *mom1, const float *mom2) {
    return m->be_ops->write_opt(m->be, mom1, mom2);
}

void fw_engine_set_threads(int n) {
    /* OpenBLAS stays single-threaded: the kernels call it from OpenMP
     * threads on tiles of their own (cpu_kernels.c, MM_ROWS). */
    openblas_set_num_threads(1);
    if (n > 0) omp_set_num_threads(n);
}

/* ------------------------------------------------------------------------ */
/* Training                                                                  */
/* ------------------------------------------------------------------------ */

int fw_model_set_train(fw_model *m, int train) {
    m->train = train ? 1 : 0;
    return 0;
}

size_t fw_count_targets(const int32_t *targets, size_t n) {
    size_t c = 0;
    if (!targets) return 0;
    for (size_t i = 0; i < n; i++) c += targets[i] != -1;
    return c;
}

static int s_check_ids(const fw_model *m, const int32_t *ids, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return fw_err_set(FW_EINVAL, "%s[%zu] = %d out of range 0..%d", what, i, (int)ids[i],
                              m->cfg.vocab_size - 1);
    return 0;
}

static int s_check_bt(const fw_model *m, int B, int T) {
    if (B < 1 || T < 1) return fw_err_set(FW_EINVAL, "batch %d x %d: both must be >= 1", B, T);
    if (T > m->cfg.n_ctx)
        return fw_err_set(FW_EINVAL, "sequence length %d exceeds the model's n_ctx %d", T,
                          m->cfg.n_ctx);
    /* Activation rows are indexed with int inside kernels. */
    if ((int64_t)B * T > (1 << 24))
        return fw_err_set(FW_ETOOBIG, "batch %d x %d exceeds 16M positions", B, T);
    return 0;
}

int fw_model_forward(fw_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                     float *loss) {
    int rc = s_check_bt(m, B, T);
    if (rc < 0) return rc;
    if (!inputs) return fw_err_set(FW_EINVAL, "forward: NULL inputs");
    size_t n = (size_t)B * T;
    if ((rc = s_check_ids(m, inputs, n, "inputs")) < 0) return rc;
    if (targets) {
        for (size_t i = 0; i < n; i++)
            if (targets[i] < -1 || targets[i] >= m->cfg.vocab_size)
                return fw_err_set(FW_EINVAL, "targets[%zu] = %d out of range -1..%d", i,
                                  (int)targets[i], m->cfg.vocab_size - 1);
    }
    s_forget_forward(m);
    float l = 0.0f;
    rc = m->be_ops->forward(m->be, inputs, targets, B, T, m->train, &l);
    if (rc < 0) return rc;
    m->last_B = B;
    m->last_T = T;
    m->last_has_targets = targets != NULL;
    m->last_train = m->train;
    if (loss) *loss = l;
    return 0;
}

int fw_model_backward(fw_model *m, float grad_scale) {
    return fw_model_backward_sync(m, grad_scale, NULL);
}

int fw_model_backward_sync(fw_model *m, float grad_scale, const fw_grad_sync *sync) {
    if (!m->last_B || !m->last_has_targets || !m->last_train || m->backward_done)
        return fw_err_set(FW_ESTATE, "backward needs a fresh train-mode forward with targets");
    if (!isfinite(grad_scale))
        return fw_err_set(FW_EINVAL, "backward: grad_scale %g not finite", (double)grad_scale);
    if (sync && (!sync->ready || !sync->finish))
        return fw_err_set(FW_EINVAL, "backward: gradient sync without ready/finish callbacks");
    int rc = m->be_ops->backward(m->be, grad_scale, sync);
    if (rc < 0) return rc;
    m->backward_done = 1;
    return 0;
}

int fw_model_zero_grad(fw_model *m) {
    if (!m->be_ops->grads(m->be)) return FW_ENOMEM;
    return m->be_ops->zero_grad(m->be);
}

float *fw_model_grads(fw_model *m, size_t *n) {
    if (n) *n = m->nparams;
    return m->be_ops->grads(m->be);
}

float *fw_model_params(fw_model *m, size_t *n) {
    if (n) *n = m->nparams;
    return m->be_ops->params(m->be);
}

int fw_model_grad_sumsq(fw_model *m, size_t off, size_t len, double *sumsq) {
    if (!sumsq || off > m->nparams || len > m->nparams - off)
        return fw_err_set(FW_EINVAL, "grad_sumsq: range [%zu, +%zu) outside %zu parameters", off,
                          len, m->nparams);
    if (!m->be_ops->grads(m->be)) return FW_ENOMEM;
    return m->be_ops->grad_sumsq(m->be, off, len, sumsq);
}

int fw_model_grad_norm(fw_model *m, float *norm) {
    double s = 0;
    int rc = fw_model_grad_sumsq(m, 0, m->nparams, &s);
    if (rc == 0) *norm = (float)sqrt(s);
    return rc;
}

int fw_param_range_part(const fw_param_tensor *t, size_t off, size_t len, size_t *lo,
                        size_t *hi) {
    *lo = t->offset > off ? t->offset : off;
    *hi = t->offset + t->numel < off + len ? t->offset + t->numel : off + len;
    return *lo < *hi;
}

int fw_model_grad_buckets(const fw_model_config *cfg) {
    return cfg->n_layer + 1;
}

int fw_model_grad_bucket(const fw_model_config *cfg, int b, size_t *offs, size_t *lens) {
    if (b < 0 || b > cfg->n_layer)
        return fw_err_set(FW_EINVAL, "gradient bucket %d of %d", b, cfg->n_layer + 1);
    fw_param_tensor t[FW_NUM_PARAM_TENSORS];
    fw_model_param_layout(cfg, t);
    int n = 0, L = cfg->n_layer;
    for (int i = 0; i < FW_NUM_PARAM_TENSORS; i++) {
        int stacked = i >= FW_P_LN1W && i <= FW_P_FCPROJB; /* [L, ...] */
        if (b < L && stacked) {
            size_t per = t[i].numel / (size_t)L;
            offs[n] = t[i].offset + (size_t)(L - 1 - b) * per, lens[n++] = per;
        } else if (b == L && !stacked) {
            offs[n] = t[i].offset, lens[n++] = t[i].numel;
        }
    }
    return n;
}

int fw_grad_sync_bucket(const fw_grad_sync *sync, const fw_model_config *cfg, int b,
                        void *stream) {
    size_t offs[FW_BUCKET_MAX_RANGES], lens[FW_BUCKET_MAX_RANGES];
    int n = fw_model_grad_bucket(cfg, b, offs, lens);
    return n < 0 ? n : sync->ready(sync->ctx, offs, lens, n, stream);
}

int fw_model_shard_optimizer(fw_model *m, size_t off, size_t len) {
    if (off > m->nparams || len > m->nparams - off || len == 0)
        return fw_err_set(FW_EINVAL, "shard_optimizer: range [%zu, +%zu) outside %zu parameters",
                          off, len, m->nparams);
    /* The state held for the new range carries over through full-size host
     * arrays (once, at the start of a run); none held, nothing to carry. */
    float *m1 = malloc(m->nparams * sizeof(float)), *m2 = malloc(m->nparams * sizeof(float));
    int rc = m1 && m2 ? m->be_ops->read_opt(m->be, m1, m2)
                      : fw_err_set(FW_ENOMEM, "shard_optimizer: %zu MiB of host memory",
                                   2 * m->nparams * sizeof(float) >> 20);
    int held = 0;
    for (size_t i = 0; rc == 0 && i < m->nparams && !held; i++) held = m1[i] != 0 || m2[i] != 0;
    if (rc == 0) rc = m->be_ops->shard_opt(m->be, off, len);
    if (rc == 0) m->opt_sharded = !(off == 0 && len == m->nparams);
    if (rc == 0 && held) rc = m->be_ops->write_opt(m->be, m1, m2);
    free(m1);
    free(m2);
    return rc;
}

fw_adamw fw_adamw_defaults(void) {
    return (fw_adamw){.lr = 3e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                      .weight_decay = 0.1f, .grad_clip = 1.0f};
}

int fw_model_step_adamw(fw_model *m, const fw_adamw *opt, int64_t step, float *grad_norm) {
    if (m->opt_sharded)
        return fw_err_set(FW_ESTATE, "adamw: the optimizer is sharded; the caller computes the "
                                     "global gradient norm (fw_model_step_adamw_norm)");
    float norm = 0;
    int rc = fw_model_grad_norm(m, &norm);
    if (rc < 0) return rc;
    if (grad_norm) *grad_norm = norm;
    return fw_model_step_adamw_norm(m, opt, step, norm);
}

int fw_model_step_adamw_norm(fw_model *m, const fw_adamw *opt, int64_t step, float norm) {
    if (!opt) return fw_err_set(FW_EINVAL, "adamw: NULL options");
    if (norm < 0) return fw_err_set(FW_EINVAL, "adamw: gradient norm %g < 0", (double)norm);
    if (step < 1) return fw_err_set(FW_EINVAL, "adamw: step %lld must be >= 1", (long long)step);
    if (!isfinite(opt->lr) || opt->lr < 0 || !(opt->beta1 >= 0 && opt->beta1 < 1) ||
        !(opt->beta2 >= 0 && opt->beta2 < 1) || !(opt->eps > 0) || !isfinite(opt->eps) ||
        !(opt->weight_decay >= 0) || !isfinite(opt->weight_decay) || isnan(opt->grad_clip))
        return fw_err_set(FW_EINVAL, "adamw: hyperparameters out of range (lr %g beta1 %g beta2 %g "
                          "eps %g weight_decay %g)", (double)opt->lr, (double)opt->beta1,
                          (double)opt->beta2, (double)opt->eps, (double)opt->weight_decay);
    if (!m->be_ops->grads(m->be)) return FW_ENOMEM;
    return m->be_ops->step_adamw(m->be, opt, step, norm);
}

float fw_lr_at(int64_t step, float base_lr, int64_t warmup, int64_t total, float min_lr_frac) {
    double min_lr = (double)base_lr * min_lr_frac;
    if (step < 0) step = 0;
    if (warmup > 0 && step < warmup) return (float)((double)base_lr * (double)(step + 1) / warmup);
    if (step >= total) return (float)min_lr;
    double span = (double)(total - warmup);
    double ratio = span > 0 ? (double)(step - warmup) / span : 1.0;
    double coeff = 0.5 * (1.0 + cos(M_PI * ratio));
    return (float)(min_lr + coeff * ((double)base_lr - min_lr));
}

/* ------------------------------------------------------------------------ */
/* Inference readers                                                         */
/* ------------------------------------------------------------------------ */

static int s_need_targets(const fw_model *m, const char *what) {
    if (!m->last_B) return fw_err_set(FW_ESTATE, "%s: no forward yet", what);
    if (!m->last_has_targets) return fw_err_set(FW_ESTATE, "%s: last forward had no targets", what);
    return 0;
}

int fw_model_get_losses(const fw_model *m, float *out) {
    int rc = s_need_targets(m, "get_losses");
    return rc < 0 ? rc : m->be_ops->get_losses(m->be, out);
}

int fw_model_get_seq_logprob(const fw_model *m, double *out) {
    int rc = s_need_targets(m, "get_seq_logprob");
    if (rc < 0) return rc;
    size_t n = (size_t)m->last_B * m->last_T;
    float *l = malloc(n * sizeof *l);
    if (!l) return fw_err_set(FW_ENOMEM, "get_seq_logprob");
    rc = m->be_ops->get_losses(m->be, l);
    if (rc == 0) {
        for (int b = 0; b < m->last_B; b++) {
            double s = 0;
            for (int t = 0; t < m->last_T; t++) s -= l[(size_t)b * m->last_T + t];
            out[b] = s;
        }
    }
    free(l);
    return rc;
}

int fw_model_get_argmax(const fw_model *m, int32_t *out) {
    if (!m->last_B) return fw_err_set(FW_ESTATE, "get_argmax: no forward yet");
    if (m->backward_done) return fw_err_set(FW_ESTATE, "get_argmax: logits overwritten by backward");
    return m->be_ops->get_argmax(m->be, out);
}

int fw_model_get_logits(const fw_model *m, size_t row0, size_t nrows, float *out) {
    if (!m->last_B) return fw_err_set(FW_ESTATE, "get_logits: no forward yet");
    if (m->backward_done) return fw_err_set(FW_ESTATE, "get_logits: logits overwritten by backward");
    size_t n = (size_t)m->last_B * m->last_T;
    if (row0 > n || nrows > n - row0)
        return fw_err_set(FW_EINVAL, "get_logits: rows %zu+%zu beyond %zu", row0, nrows, n);
    return m->be_ops->get_logits(m->be, row0, nrows, out);
}

int fw_model_embed(fw_model *m, const int32_t *ids, const int32_t *lens, int B, int T,
                   float *out) {
    int rc = s_check_bt(m, B, T);
    if (rc < 0) return rc;
    if (!ids || !lens || !out) return fw_err_set(FW_EINVAL, "embed: NULL argument");
    for (int b = 0; b < B; b++) {
        if (lens[b] < 1 || lens[b] > T)
            return fw_err_set(FW_EINVAL, "embed: lens[%d] = %d out of range 1..%d", b,
                              (int)lens[b], T);
        for (int t = 0; t < lens[b]; t++) {
            int32_t id = ids[(size_t)b * T + t];
            if (id < 0 || id >= m->cfg.vocab_size)
                return fw_err_set(FW_EINVAL, "embed: ids[%d][%d] = %d out of range 0..%d", b, t,
                                  (int)id, m->cfg.vocab_size - 1);
        }
    }
    s_forget_forward(m); /* the backend's forward buffers are reused */
    return m->be_ops->embed(m->be, ids, lens, B, T, out);
}

/* ------------------------------------------------------------------------ */
/* Generation                                                                */
/* ------------------------------------------------------------------------ */

fw_kv_cache *fw_kv_cache_new(fw_model *m, int batch, int max_len) {
    if (batch < 1 || batch > 65536 || max_len < 1 || max_len > m->cfg.n_ctx) {
        fw_err_set(FW_EINVAL, "kv cache: batch %d (1..65536), max_len %d (1..n_ctx %d)", batch,
                   max_len, m->cfg.n_ctx);
        return NULL;
    }
    fw_kv_cache *c = calloc(1, sizeof *c);
    int *len = calloc((size_t)batch, sizeof *len);
    if (!c || !len) {
        free(c);
        free(len);
        fw_err_set(FW_ENOMEM, "kv cache");
        return NULL;
    }
    c->kv = m->be_ops->kv_new(m->be, batch, max_len);
    if (!c->kv) {
        free(c);
        free(len);
        return NULL;
    }
    c->m = m;
    c->batch = batch;
    c->max_len = max_len;
    c->len = len;
    m->live_caches++;
    return c;
}

void fw_kv_cache_destroy(fw_kv_cache **pc) {
    if (!pc || !*pc) return;
    fw_kv_cache *c = *pc;
    c->m->be_ops->kv_destroy(c->kv);
    c->m->live_caches--;
    free(c->len);
    free(c);
    *pc = NULL;
}

void fw_kv_cache_reset(fw_kv_cache *c, int row) {
    if (row < 0) {
        memset(c->len, 0, (size_t)c->batch * sizeof *c->len);
    } else if (row < c->batch) {
        c->len[row] = 0;
    }
}

int fw_kv_cache_len(const fw_kv_cache *c, int row) {
    return row >= 0 && row < c->batch ? c->len[row] : -1;
}

int fw_model_prefill(fw_model *m, fw_kv_cache *c, int row, const int32_t *ids, int n,
                     float *logits) {
    if (!c || c->m != m) return fw_err_set(FW_EINVAL, "prefill: cache belongs to another model");
    if (row < 0 || row >= c->batch)
        return fw_err_set(FW_EINVAL, "prefill: row %d out of range 0..%d", row, c->batch - 1);
    if (n < 1 || !ids) return fw_err_set(FW_EINVAL, "prefill: no tokens");
    if (n > c->max_len - c->len[row])
        return fw_err_set(FW_ERESOURCE, "prefill: row %d holds %d of %d positions, %d more do not fit",
                          row, c->len[row], c->max_len, n);
    int rc = s_check_ids(m, ids, (size_t)n, "prefill ids");
    if (rc < 0) return rc;
    /* n tokens of one row at positions len .. len+n-1; logits of the last. */
    int *rows = malloc((size_t)n * 2 * sizeof(int));
    uint8_t *want = calloc((size_t)n, 1);
    if (!rows || !want) {
        rc = fw_err_set(FW_ENOMEM, "prefill: %d tokens", n);
    } else {
        int *pos = rows + n;
        for (int i = 0; i < n; i++) {
            rows[i] = row;
            pos[i] = c->len[row] + i;
        }
        want[n - 1] = 1;
        rc = m->be_ops->kv_forward(m->be, c->kv, n, ids, rows, pos, want, logits);
    }
    free(rows);
    free(want);
    if (rc < 0) return rc;
    c->len[row] += n;
    return 0;
}

int fw_model_decode(fw_model *m, fw_kv_cache *c, const int32_t *ids, const uint8_t *active,
                    float *logits) {
    if (!c || c->m != m) return fw_err_set(FW_EINVAL, "decode: cache belongs to another model");
    if (!ids || !logits) return fw_err_set(FW_EINVAL, "decode: NULL argument");
    int any = 0;
    for (int r = 0; r < c->batch; r++) {
        if (active && !active[r]) continue;
        any = 1;
        if (c->len[r] == 0)
            return fw_err_set(FW_ESTATE, "decode: row %d is empty (prefill it first)", r);
        if (c->len[r] >= c->max_len)
            return fw_err_set(FW_ERESOURCE, "decode: row %d is full (%d positions)", r, c->max_len);
        if (ids[r] < 0 || ids[r] >= m->cfg.vocab_size)
            return fw_err_set(FW_EINVAL, "decode: ids[%d] = %d out of range 0..%d", r, (int)ids[r],
                              m->cfg.vocab_size - 1);
    }
    if (!any) return 0;
    /* One token for each active row r at position len[r]. When every row is
     * active, the k-th token is row k and its logits land in place. */
    int B = c->batch, n = 0, rc = 0;
    size_t V = (size_t)m->cfg.vocab_size;
    /* calloc: gcc cannot see that only the n filled entries are read. */
    int *rows = calloc((size_t)B * 2, sizeof(int));
    int32_t *tok = calloc((size_t)B, sizeof(int32_t));
    uint8_t *want = calloc((size_t)B, 1);
    float *lg = NULL;
    if (!rows || !tok || !want) rc = fw_err_set(FW_ENOMEM, "decode: batch %d", B);
    int *pos = rows ? rows + B : NULL;
    for (int r = 0; rc == 0 && r < B; r++) {
        if (active && !active[r]) continue;
        rows[n] = r;
        pos[n] = c->len[r];
        tok[n] = ids[r];
        want[n] = 1;
        n++;
    }
    if (rc == 0 && n < B && !(lg = malloc((size_t)n * V * sizeof(float))))
        rc = fw_err_set(FW_ENOMEM, "decode: logits of %d rows", n);
    if (rc == 0)
        rc = m->be_ops->kv_forward(m->be, c->kv, n, tok, rows, pos, want, lg ? lg : logits);
    if (rc == 0 && lg)
        for (int i = 0; i < n; i++)
            memcpy(logits + (size_t)rows[i] * V, lg + (size_t)i * V, V * sizeof(float));
    free(rows);
    free(tok);
    free(want);
    free(lg);
    if (rc < 0) return rc;
    for (int r = 0; r < c->batch; r++)
        if (!active || active[r]) c->len[r]++;
    return 0;
}
