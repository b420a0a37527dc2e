/* test_engine_math.c - the engine's training math on the CPU backend:
 * finite-difference gradients of every parameter tensor, loss at init,
 * overfitting one batch, gradient accumulation, AdamW details, determinism,
 * the lr schedule and argument checks. */
#include "engine.h"
#include "fw_err.h"
#include "fw_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const fw_model_config k_grad_cfg = {.n_layer = 2, .n_head = 2, .n_embd = 16, .n_ctx = 8,
                                           .vocab_size = 32, .layer_norm_eps = 1e-5f};

/* Fill ids with values in [0, V) from seed. */
static void s_rand_ids(int32_t *ids, size_t n, int V, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(fw_test_rand(&s) % (uint64_t)V);
}

/* Replace the GPT-2 init by larger random values so that every gradient is
 * well above float noise (at N(0, 0.02) some are ~1e-6). */
static void s_scramble(fw_model *m, uint64_t seed) {
    fw_param_tensor t[FW_NUM_PARAM_TENSORS];
    fw_model_param_layout(fw_model_config_get(m), t);
    size_t np = fw_model_num_params(m);
    float *p = malloc(np * sizeof *p);
    fw_rng r;
    fw_rng_seed(&r, seed);
    fw_model_read_params(m, p);
    for (int i = 0; i < FW_NUM_PARAM_TENSORS; i++) {
        float *x = p + t[i].offset;
        int is_lnw = i == FW_P_LN1W || i == FW_P_LN2W || i == FW_P_LNFW;
        for (size_t j = 0; j < t[i].numel; j++) {
            double z = fw_rng_normal(&r);
            if (is_lnw) x[j] = (float)(1.0 + 0.2 * z);
            else if (t[i].decay) x[j] = (float)(0.3 * z);
            else x[j] = (float)(0.1 * z);
        }
    }
    /* padded wte rows stay 0 as the engine keeps them */
    const fw_model_config *c = fw_model_config_get(m);
    memset(p + (size_t)c->vocab_size * c->n_embd, 0,
           (size_t)(c->padded_vocab_size - c->vocab_size) * c->n_embd * sizeof *p);
    fw_model_write_params(m, p);
    free(p);
}

static double s_loss(fw_model *m, const int32_t *in, const int32_t *tg, int B, int T) {
    float l = 0;
    int rc = fw_model_forward(m, in, tg, B, T, &l);
    CHECK_EQ_INT(rc, 0);
    return l;
}

/* Central differences on a sample of elements of every tensor. Tolerance:
 * |analytic - numeric| <= 2e-2 * |numeric| + 2e-3 * (largest |grad| in the
 * tensor) + 1e-5. The loss is a double mean of float token losses, so with
 * h = 1e-2 float noise contributes ~1e-5 to a numeric gradient. */
static void test_gradcheck_every_tensor(void) {
    fw_model_config cfg = k_grad_cfg;
    fw_model *m = fw_model_new(&cfg, "cpu");
    REQUIRE(m);
    cfg = *fw_model_config_get(m);
    REQUIRE(fw_model_init_random(m, 1) == 0);
    s_scramble(m, 7);
    enum { B = 2, T = 8 };
    int32_t in[B * T], tg[B * T];
    s_rand_ids(in, B * T, cfg.vocab_size, 11);
    s_rand_ids(tg, B * T, cfg.vocab_size, 12);
    tg[3] = -1; /* ignored targets: no loss, no gradient */
    tg[9] = -1;
    tg[15] = -1;
    size_t np;
    REQUIRE(fw_model_zero_grad(m) == 0);
    float loss;
    REQUIRE(fw_model_forward(m, in, tg, B, T, &loss) == 0);
    REQUIRE(fw_model_backward(m, 0.0f) == 0);
    float *g = malloc(fw_model_num_params(m) * sizeof *g);
    const float *g0 = fw_model_grads(m, &np);
    memcpy(g, g0, np * sizeof *g);
    float *p = fw_model_params(m, NULL); /* CPU: host memory */

    fw_param_tensor t[FW_NUM_PARAM_TENSORS];
    fw_model_param_layout(&cfg, t);
    uint64_t rs = 99;
    int checked = 0, bad = 0;
    double worst = 0; /* largest |ana - num| / (|num| + 1e-3 gmax) */
    for (int i = 0; i < FW_NUM_PARAM_TENSORS; i++) {
        float gmax = 0;
        for (size_t j = 0; j < t[i].numel; j++)
            if (fabsf(g[t[i].offset + j]) > gmax) gmax = fabsf(g[t[i].offset + j]);
        CHECKF(gmax > 1e-4f, "tensor %s has a zero gradient", t[i].name);
        size_t limit = i == FW_P_WTE ? (size_t)cfg.vocab_size * cfg.n_embd : t[i].numel;
        for (int k = 0; k < 10; k++) {
            size_t j = (size_t)(fw_test_rand(&rs) % limit);
            if (i == FW_P_WTE && k < 5) { /* make half of the wte samples rows in use */
                j = (size_t)in[k] * cfg.n_embd + (size_t)(fw_test_rand(&rs) % cfg.n_embd);
            }
            float *x = p + t[i].offset + j, x0 = *x;
            const float h = 1e-2f;
            *x = x0 + h;
            double lp = s_loss(m, in, tg, B, T);
            *x = x0 - h;
            double lm = s_loss(m, in, tg, B, T);
            *x = x0;
            double num = (lp - lm) / (2.0 * h);
            double ana = g[t[i].offset + j];
            double tol = 2e-2 * fabs(num) + 2e-3 * gmax + 1e-5;
            checked++;
            double rel = fabs(ana - num) / (fabs(num) + 1e-3 * gmax + 1e-6);
            if (rel > worst) worst = rel;
            if (fabs(ana - num) > tol) {
                bad++;
                fprintf(stderr, "  %s[%zu]: analytic %.6g numeric %.6g\n", t[i].name, j, ana, num);
            }
        }
    }
    fprintf(stderr, "  %d gradients checked, worst relative error %.2e\n", checked, worst);
    CHECKF(bad == 0, "%d of %d sampled gradients off", bad, checked);

    /* Directional derivative of each whole tensor along a direction d made of
     * the analytic gradient plus as much random noise (so that a gradient
     * wrong in any direction shows):
     * (L(p + h d) - L(p - h d)) / 2h against g . d summed in double. The
     * signal adds up over the tensor while the float noise does not, so this
     * can be checked to 1e-3 and catches a bug in a single element's share. */
    fw_rng dr;
    fw_rng_seed(&dr, 5);
    double worst_dir = 0;
    for (int i = 0; i < FW_NUM_PARAM_TENSORS; i++) {
        size_t n = i == FW_P_WTE ? (size_t)cfg.vocab_size * cfg.n_embd : t[i].numel;
        float *x = p + t[i].offset;
        float *x0 = malloc(n * sizeof *x0), *d = malloc(n * sizeof *d);
        memcpy(x0, x, n * sizeof *x0);
        double gd = 0, dn = 0, gn = 0;
        for (size_t j = 0; j < n; j++) gn += (double)g[t[i].offset + j] * g[t[i].offset + j];
        double grms = sqrt(gn / n);
        for (size_t j = 0; j < n; j++) {
            d[j] = (float)(g[t[i].offset + j] + grms * fw_rng_normal(&dr));
            dn += (double)d[j] * d[j];
        }
        for (size_t j = 0; j < n; j++) {
            d[j] = (float)(d[j] / sqrt(dn)); /* unit direction */
            gd += (double)g[t[i].offset + j] * d[j];
        }
        const float h = 1e-2f;
        for (size_t j = 0; j < n; j++) x[j] = x0[j] + h * d[j];
        double lp = s_loss(m, in, tg, B, T);
        for (size_t j = 0; j < n; j++) x[j] = x0[j] - h * d[j];
        double lm = s_loss(m, in, tg, B, T);
        memcpy(x, x0, n * sizeof *x0);
        double num = (lp - lm) / (2.0 * h);
        double err = fabs(num - gd) / (fabs(gd) + 1e-4);
        if (err > worst_dir) worst_dir = err;
        CHECKF(err < 2e-3, "tensor %s: directional derivative %.8g, g.d %.8g", t[i].name, num, gd);
        free(x0);
        free(d);
    }
    fprintf(stderr, "  directional derivatives of %d tensors, worst relative error %.2e\n",
            FW_NUM_PARAM_TENSORS, worst_dir);
    /* padded wte rows never get a gradient */
    int pad_nonzero = 0;
    for (size_t j = (size_t)cfg.vocab_size * cfg.n_embd; j < t[FW_P_WTE].numel; j++)
        pad_nonzero += g[j] != 0.0f;
    CHECK_EQ_INT(pad_nonzero, 0);
    free(g);
    fw_model_destroy(&m);
    CHECK(m == NULL);
}

/* Changing a token whose position and all later ones are ignored... must not
 * change the loss; and a row of all -1 gives loss 0 and zero gradient. */
static void test_ignored_targets(void) {
    fw_model_config cfg = k_grad_cfg;
    fw_model *m = fw_model_new(&cfg, "cpu");
    REQUIRE(m && fw_model_init_random(m, 3) == 0);
    int32_t in[8], tg[8];
    s_rand_ids(in, 8, 32, 5);
    for (int i = 0; i < 8; i++) tg[i] = -1;
    float loss = 1;
    REQUIRE(fw_model_forward(m, in, tg, 1, 8, &loss) == 0);
    CHECK(loss == 0.0f);
    REQUIRE(fw_model_zero_grad(m) == 0);
    REQUIRE(fw_model_backward(m, 0.0f) == 0);
    float norm = -1;
    REQUIRE(fw_model_grad_norm(m, &norm) == 0);
    CHECK(norm == 0.0f);
    /* only the last target counts: changing earlier targets changes nothing */
    s_rand_ids(tg, 8, 32, 6);
    for (int i = 0; i < 7; i++) tg[i] = -1;
    float l1, l2;
    REQUIRE(fw_model_forward(m, in, tg, 1, 8, &l1) == 0);
    float per[8];
    REQUIRE(fw_model_get_losses(m, per) == 0);
    CHECK(per[0] == 0.0f && per[6] == 0.0f);
    CHECK_NEAR(per[7], l1, 1e-6);
    tg[2] = 5;
    REQUIRE(fw_model_forward(m, in, tg, 1, 8, &l2) == 0);
    CHECK(l2 != l1); /* now the mean covers two tokens */
    fw_model_destroy(&m);
}

static void test_init_loss(void) {
    const char *presets[] = {"tiny", "small"};
    int vocab[] = {1000, 0};
    for (int k = 0; k < 2; k++) {
        fw_model_config cfg;
        REQUIRE(fw_model_config_preset(presets[k], vocab[k], &cfg) == 0);
        fw_model *m = fw_model_new(&cfg, "cpu");
        REQUIRE(m && fw_model_init_random(m, 42) == 0);
        enum { T = 32 };
        int32_t in[2 * T], tg[2 * T];
        s_rand_ids(in, 2 * T, cfg.vocab_size, 1);
        s_rand_ids(tg, 2 * T, cfg.vocab_size, 2);
        float loss;
        REQUIRE(fw_model_forward(m, in, tg, 2, T, &loss) == 0);
        CHECKF(fabs(loss - log((double)cfg.vocab_size)) < 0.1, "%s: loss %g vs ln V %g",
               presets[k], loss, log((double)cfg.vocab_size));
        fw_model_destroy(&m);
    }
}

static void test_overfit_one_batch(void) {
    fw_model_config cfg = {.n_layer = 2, .n_head = 2, .n_embd = 32, .n_ctx = 16,
                           .vocab_size = 64, .layer_norm_eps = 1e-5f};
    fw_model *m = fw_model_new(&cfg, "cpu");
    REQUIRE(m && fw_model_init_random(m, 1) == 0);
    enum { B = 4, T = 16 };
    int32_t in[B * T], tg[B * T];
    s_rand_ids(in, B * T, 64, 21);
    for (int i = 0; i < B * T; i++) tg[i] = i % T == T - 1 ? -1 : in[i + 1];
    fw_adamw opt = fw_adamw_defaults();
    opt.weight_decay = 0.0f;
    float loss = 0, first = 0;
    int step;
    for (step = 1; step <= 400; step++) {
        REQUIRE(fw_model_zero_grad(m) == 0);
        REQUIRE(fw_model_forward(m, in, tg, B, T, &loss) == 0);
        if (step == 1) first = loss;
        REQUIRE(fw_model_backward(m, 0.0f) == 0);
        opt.lr = fw_lr_at(step - 1, 1e-2f, 10, 400, 0.1f);
        REQUIRE(fw_model_step_adamw(m, &opt, step, NULL) == 0);
        if (loss < 0.05f) break;
    }
    fprintf(stderr, "  overfit: loss %.3f -> %.4f in %d steps\n", first, loss, step);
    CHECK(loss < 0.05f);
    /* the memorised batch is predicted exactly */
    int32_t am[B * T];
    REQUIRE(fw_model_forward(m, in, tg, B, T, &loss) == 0);
    REQUIRE(fw_model_get_argmax(m, am) == 0);
    int wrong = 0;
    for (int i = 0; i < B * T; i++) wrong += tg[i] >= 0 && am[i] != tg[i];
    CHECK_EQ_INT(wrong, 0);
    fw_model_destroy(&m);
}

/* Two micro-batches of B/2 with grad_scale 1/n_total give the same gradient
 * (and AdamW step) as one batch of B with the mean. The halves have different
 * numbers of ignored targets, so a per-micro-batch mean would differ. */
static void test_grad_accumulation(void) {
    fw_model_config cfg = k_grad_cfg;
    fw_model *a = fw_model_new(&cfg, "cpu"), *b = fw_model_new(&cfg, "cpu");
    REQUIRE(a && b && fw_model_init_random(a, 5) == 0 && fw_model_init_random(b, 5) == 0);
    enum { B = 4, T = 8 };
    int32_t in[B * T], tg[B * T];
    s_rand_ids(in, B * T, 32, 31);
    s_rand_ids(tg, B * T, 32, 32);
    for (int i = 0; i < 5; i++) tg[i] = -1; /* first half: 11 targets, second: 16 */
    fw_adamw opt = fw_adamw_defaults();
    opt.lr = 1e-3f;
    REQUIRE(fw_model_zero_grad(a) == 0);
    float la;
    REQUIRE(fw_model_forward(a, in, tg, B, T, &la) == 0);
    REQUIRE(fw_model_backward(a, 0.0f) == 0);

    size_t n = fw_count_targets(tg, B * T);
    CHECK_EQ_INT(n, 27);
    REQUIRE(fw_model_zero_grad(b) == 0);
    double lsum = 0;
    for (int k = 0; k < 2; k++) {
        const int32_t *i2 = in + k * (B / 2) * T, *t2 = tg + k * (B / 2) * T;
        float l;
        REQUIRE(fw_model_forward(b, i2, t2, B / 2, T, &l) == 0);
        lsum += (double)l * fw_count_targets(t2, (B / 2) * T);
        REQUIRE(fw_model_backward(b, 1.0f / (float)n) == 0);
    }
    CHECK_NEAR(lsum / n, la, 1e-5);
    size_t np;
    float *ga = fw_model_grads(a, &np), *gb = fw_model_grads(b, NULL);
    double maxd = 0, maxg = 0;
    for (size_t i = 0; i < np; i++) {
        if (fabs(ga[i] - gb[i]) > maxd) maxd = fabs(ga[i] - gb[i]);
        if (fabs(ga[i]) > maxg) maxg = fabs(ga[i]);
    }
    CHECKF(maxd <= 1e-6 * maxg + 1e-9, "max grad diff %g (max grad %g)", maxd, maxg);
    REQUIRE(fw_model_step_adamw(a, &opt, 1, NULL) == 0);
    REQUIRE(fw_model_step_adamw(b, &opt, 1, NULL) == 0);
    float *pa = fw_model_params(a, NULL), *pb = fw_model_params(b, NULL);
    double maxp = 0;
    for (size_t i = 0; i < np; i++)
        if (fabs(pa[i] - pb[i]) > maxp) maxp = fabs(pa[i] - pb[i]);
    /* AdamW's first step moves each weight by ~lr * sign(g): elements whose
     * gradient is ~0 can flip, so allow a small fraction of lr. */
    CHECKF(maxp < 2e-5, "max param diff after the step %g", maxp);
    fw_model_destroy(&a);
    fw_model_destroy(&b);
}

/* AdamW by hand on one element: clipping, bias correction, decoupled decay
 * only on matrices. */
static void test_adamw_math(void) {
    fw_model_config cfg = k_grad_cfg;
    fw_model *m = fw_model_new(&cfg, "cpu");
    REQUIRE(m && fw_model_init_random(m, 9) == 0);
    fw_param_tensor t[FW_NUM_PARAM_TENSORS];
    fw_model_param_layout(fw_model_config_get(m), t);
    size_t np;
    float *g = fw_model_grads(m, &np), *p = fw_model_params(m, NULL);
    REQUIRE(g);
    memset(g, 0, np * sizeof *g);
    size_t iw = t[FW_P_QKVW].offset + 3, ib = t[FW_P_QKVB].offset + 1;
    g[iw] = 3.0f;
    g[ib] = 4.0f; /* global norm 5 */
    float pw0 = p[iw], pb0 = p[ib], norm;
    fw_adamw o = {.lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.5f,
                  .grad_clip = 1.0f};
    REQUIRE(fw_model_step_adamw(m, &o, 1, &norm) == 0);
    CHECK_NEAR(norm, 5.0, 1e-6);
    /* step 1: mhat = g', vhat = g'^2 -> update = sign(g') whatever the clip */
    CHECK_NEAR(p[iw], pw0 - 0.1f * (1.0f + 0.5f * pw0), 1e-6);
    CHECK_NEAR(p[ib], pb0 - 0.1f * 1.0f, 1e-6); /* biases: no decay */
    float m1[1], m2[1];
    float *mm = malloc(np * sizeof *mm), *vv = malloc(np * sizeof *vv);
    REQUIRE(fw_model_read_opt_state(m, mm, vv) == 0);
    m1[0] = mm[iw];
    m2[0] = vv[iw];
    CHECK_NEAR(m1[0], 0.1 * 0.6, 1e-7);         /* clipped grad 3 * (1/5) */
    CHECK_NEAR(m2[0], 0.05 * 0.36, 1e-7);
    free(mm);
    free(vv);

    /* Weight decay on matrices only, tensor by tensor: with zero gradients
     * (and zero moments) the update is the decay alone, so exactly the
     * embeddings and the four linear weights shrink by (1 - lr * wd), and
     * biases and LayerNorm parameters (stored [L, C], 2-D too) stay put. */
    const int want_decay[FW_NUM_PARAM_TENSORS] = {[FW_P_WTE] = 1, [FW_P_WPE] = 1, [FW_P_QKVW] = 1,
                                                  [FW_P_ATTPROJW] = 1, [FW_P_FCW] = 1,
                                                  [FW_P_FCPROJW] = 1};
    fw_model *d = fw_model_new(&cfg, "cpu");
    REQUIRE(d && fw_model_init_random(d, 10) == 0);
    s_scramble(d, 11); /* no zero biases: a wrongly decayed bias must show */
    float *pd = fw_model_params(d, &np), *p0 = malloc(np * sizeof *p0);
    memcpy(p0, pd, np * sizeof *p0);
    REQUIRE(fw_model_zero_grad(d) == 0);
    fw_adamw od = {.lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.5f,
                   .grad_clip = 1.0f};
    REQUIRE(fw_model_step_adamw(d, &od, 1, &norm) == 0);
    CHECK(norm == 0.0f);
    for (int i = 0; i < FW_NUM_PARAM_TENSORS; i++) {
        CHECKF(t[i].decay == want_decay[i], "tensor %s: decay flag %d", t[i].name, t[i].decay);
        int bad = 0, moved = 0;
        for (size_t j = t[i].offset; j < t[i].offset + t[i].numel; j++) {
            float want = want_decay[i] ? p0[j] - 0.1f * 0.5f * p0[j] : p0[j];
            bad += fabsf(pd[j] - want) > 1e-6f * fabsf(p0[j]) + 1e-12f;
            moved += pd[j] != p0[j];
        }
        CHECKF(bad == 0, "tensor %s: %d elements off the decay rule", t[i].name, bad);
        if (!want_decay[i]) CHECKF(moved == 0, "tensor %s decayed", t[i].name);
    }
    free(p0);
    fw_model_destroy(&d);
    fw_model_destroy(&m);
}

static void s_train_steps(fw_model *m, int steps, float *losses) {
    enum { B = 2, T = 8 };
    fw_adamw opt = fw_adamw_defaults();
    for (int s = 0; s < steps; s++) {
        int32_t in[B * T], tg[B * T];
        s_rand_ids(in, B * T, 32, 100 + (uint64_t)s);
        s_rand_ids(tg, B * T, 32, 200 + (uint64_t)s);
        fw_model_zero_grad(m);
        fw_model_forward(m, in, tg, B, T, &losses[s]);
        fw_model_backward(m, 0.0f);
        opt.lr = fw_lr_at(s, 1e-3f, 2, steps, 0.1f);
        fw_model_step_adamw(m, &opt, s + 1, NULL);
    }
}

static void test_determinism(void) {
    fw_model_config cfg = k_grad_cfg;
    fw_model *a = fw_model_new(&cfg, "cpu"), *b = fw_model_new(&cfg, "cpu");
    REQUIRE(a && b);
    fw_model_init_random(a, 77);
    fw_model_init_random(b, 77);
    float la[5], lb[5];
    s_train_steps(a, 5, la);
    s_train_steps(b, 5, lb);
    size_t np = fw_model_num_params(a);
    CHECK(memcmp(la, lb, sizeof la) == 0);
    CHECK(memcmp(fw_model_params(a, NULL), fw_model_params(b, NULL), np * sizeof(float)) == 0);
    /* a different seed gives different weights */
    fw_model_init_random(b, 78);
    CHECK(memcmp(fw_model_params(a, NULL), fw_model_params(b, NULL), np * sizeof(float)) != 0);
    fw_model_destroy(&a);
    fw_model_destroy(&b);
}

/* The floats do not depend on the thread count (engine.h, docs/engine.md
 * "Determinism"): matmul tiles are fixed and every parallel loop splits
 * outputs, never a sum. Big enough for 2 row tiles, several column strips and
 * (batch, head) tasks, so 1 and 2 threads really split the work differently. */
static void test_thread_count_independence(void) {
    fw_model_config cfg = {.n_layer = 2, .n_head = 4, .n_embd = 96, .n_ctx = 64,
                           .vocab_size = 900, .layer_norm_eps = 1e-5f};
    enum { B = 4, T = 64, STEPS = 3 };
    float *params[2] = {NULL, NULL}, losses[2][STEPS];
    size_t np = 0;
    int32_t *in = malloc(B * T * sizeof *in), *tg = malloc(B * T * sizeof *tg);
    for (int run = 0; run < 2; run++) {
        fw_engine_set_threads(run == 0 ? 1 : 2);
        fw_model *m = fw_model_new(&cfg, "cpu");
        REQUIRE(m && fw_model_init_random(m, 5) == 0);
        fw_adamw opt = fw_adamw_defaults();
        for (int s = 0; s < STEPS; s++) {
            s_rand_ids(in, B * T, cfg.vocab_size, 40 + (uint64_t)s);
            s_rand_ids(tg, B * T, cfg.vocab_size, 50 + (uint64_t)s);
            REQUIRE(fw_model_zero_grad(m) == 0);
            REQUIRE(fw_model_forward(m, in, tg, B, T, &losses[run][s]) == 0);
            REQUIRE(fw_model_backward(m, 0.0f) == 0);
            REQUIRE(fw_model_step_adamw(m, &opt, s + 1, NULL) == 0);
        }
        params[run] = malloc(fw_model_num_params(m) * sizeof(float));
        np = fw_model_num_params(m);
        REQUIRE(fw_model_read_params(m, params[run]) == 0);
        fw_model_destroy(&m);
    }
    fw_engine_set_threads(2);
    CHECK(memcmp(losses[0], losses[1], sizeof losses[0]) == 0);
    CHECK(memcmp(params[0], params[1], np * sizeof(float)) == 0);
    free(params[0]);
    free(params[1]);
    free(in);
    free(tg);
}

static void test_lr_schedule(void) {
    CHECK_NEAR(fw_lr_at(0, 1.0f, 10, 100, 0.1f), 0.1, 1e-7);
    CHECK_NEAR(fw_lr_at(9, 1.0f, 10, 100, 0.1f), 1.0, 1e-7);
    CHECK_NEAR(fw_lr_at(10, 1.0f, 10, 100, 0.1f), 1.0, 1e-7);
    CHECK_NEAR(fw_lr_at(55, 1.0f, 10, 100, 0.1f), 0.55, 1e-6); /* cosine midpoint */
    CHECK_NEAR(fw_lr_at(100, 1.0f, 10, 100, 0.1f), 0.1, 1e-7);
    CHECK_NEAR(fw_lr_at(1000, 1.0f, 10, 100, 0.1f), 0.1, 1e-7);
    CHECK(fw_lr_at(30, 1.0f, 10, 100, 0.1f) > fw_lr_at(31, 1.0f, 10, 100, 0.1f));
    CHECK_NEAR(fw_lr_at(0, 2.0f, 0, 0, 1.0f), 2.0, 1e-7); /* constant */
}

static void test_config_and_args(void) {
    fw_model_config cfg;
    CHECK(fw_model_config_preset("gpt2-124m", 0, &cfg) == 0);
    CHECK(cfg.n_layer == 12 && cfg.n_embd == 768 && cfg.n_ctx == 1024 && cfg.vocab_size == 50257);
    CHECK_EQ_INT(cfg.padded_vocab_size, 50304);
    CHECK_EQ_INT(fw_model_param_layout(&cfg, NULL), 124475904); /* llm.c's count with Vp */
    CHECK(fw_model_config_preset("small", 300, &cfg) == 0 && cfg.vocab_size == 300 &&
          cfg.padded_vocab_size == 384);
    CHECK(fw_model_config_preset("huge", 0, &cfg) == FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "huge") != NULL);
    fw_model_config bad = k_grad_cfg;
    bad.n_embd = 15;
    CHECK(fw_model_new(&bad, "cpu") == NULL);
    CHECK(strstr(fw_err_detail(), "n_head") != NULL);
    bad = k_grad_cfg;
    CHECK(fw_model_new(&bad, "tpu") == NULL);
#ifndef FW_WITH_CUDA
    CHECK(fw_model_new(&bad, "cuda:0") == NULL);
    CHECK(strstr(fw_err_detail(), "CUDA") != NULL);
#endif
    fw_model *m = fw_model_new(&bad, "cpu");
    REQUIRE(m && fw_model_init_random(m, 1) == 0);
    int32_t in[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8}, tg[9] = {0};
    CHECK(fw_model_backward(m, 0.0f) == FW_ESTATE);          /* no forward */
    CHECK(fw_model_forward(m, in, tg, 1, 9, NULL) == FW_EINVAL); /* T > n_ctx */
    in[2] = 32;
    CHECK(fw_model_forward(m, in, tg, 1, 8, NULL) == FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "inputs[2]") != NULL);
    in[2] = 2;
    tg[4] = -2;
    CHECK(fw_model_forward(m, in, tg, 1, 8, NULL) == FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "targets[4]") != NULL);
    CHECK(fw_model_forward(m, in, NULL, 1, 8, NULL) == 0);
    CHECK(fw_model_backward(m, 0.0f) == FW_ESTATE); /* no targets */
    float lo[8];
    CHECK(fw_model_get_losses(m, lo) == FW_ESTATE);
    tg[4] = 0;
    fw_model_set_train(m, 0);
    CHECK(fw_model_forward(m, in, tg, 1, 8, NULL) == 0);
    CHECK(fw_model_backward(m, 0.0f) == FW_ESTATE); /* inference mode */
    fw_model_set_train(m, 1);
    CHECK(fw_model_forward(m, in, tg, 1, 8, NULL) == 0);
    CHECK(fw_model_backward(m, 0.0f) == 0);
    CHECK(fw_model_backward(m, 0.0f) == FW_ESTATE); /* twice */
    fw_adamw o = fw_adamw_defaults();
    CHECK(fw_model_step_adamw(m, &o, 0, NULL) == FW_EINVAL);
    o.beta1 = 1.0f;
    CHECK(fw_model_step_adamw(m, &o, 1, NULL) == FW_EINVAL);
    fw_model_destroy(&m);
    fw_model_destroy(&m); /* idempotent */
}

/* Train mode and inference mode compute the same floats. */
static void test_train_vs_inference_forward(void) {
    fw_model_config cfg = k_grad_cfg;
    fw_model *m = fw_model_new(&cfg, "cpu");
    REQUIRE(m && fw_model_init_random(m, 4) == 0);
    int32_t in[16], tg[16];
    s_rand_ids(in, 16, 32, 8);
    s_rand_ids(tg, 16, 32, 9);
    float l1, l2, lg1[16 * 32], lg2[16 * 32];
    REQUIRE(fw_model_forward(m, in, tg, 2, 8, &l1) == 0);
    REQUIRE(fw_model_get_logits(m, 0, 16, lg1) == 0);
    fw_model_set_train(m, 0);
    REQUIRE(fw_model_forward(m, in, tg, 2, 8, &l2) == 0);
    REQUIRE(fw_model_get_logits(m, 0, 16, lg2) == 0);
    CHECK(l1 == l2);
    CHECK(memcmp(lg1, lg2, sizeof lg1) == 0);
    double lp[2];
    float per[16];
    REQUIRE(fw_model_get_seq_logprob(m, lp) == 0);
    REQUIRE(fw_model_get_losses(m, per) == 0);
    double s = 0;
    for (int i = 8; i < 16; i++) s -= per[i];
    CHECK_NEAR(lp[1], s, 1e-9);
    CHECK(fw_model_get_logits(m, 10, 7, lg2) == FW_EINVAL);
    fw_model_destroy(&m);
}

int main(void) {
    fw_engine_set_threads(2);
    RUN(test_gradcheck_every_tensor);
    RUN(test_ignored_targets);
    RUN(test_init_loss);
    RUN(test_overfit_one_batch);
    RUN(test_grad_accumulation);
    RUN(test_adamw_math);
    RUN(test_determinism);
    RUN(test_thread_count_independence);
    RUN(test_lr_schedule);
    RUN(test_config_and_args);
    RUN(test_train_vs_inference_forward);
    return fw_test_summary();
}
