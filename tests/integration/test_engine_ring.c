/* test_engine_ring.c - data-parallel training through the real binary.
 *
 * Every run trains the same tiny model 6 steps (--seq 32, --threads 1,
 * --seed 11 unless said otherwise); ring ranks meet on a free loopback port.
 *
 * 1 rank == W ranks. Two processes, each `train --batch 2 --rank R
 * --world-size 2 --collective ring --grad-sync whole`, must follow the same
 * trajectory as one process with --batch 4: the same per-step losses and
 * gradient norms and the same final parameters, to float tolerance (the
 * gradient sum is taken in another order). One process with --batch 2
 * --grad-accum 2 must match too (the same windows, accumulated instead of
 * all-reduced). A control run with a different seed must NOT match, so the
 * comparison has teeth.
 *
 * --grad-sync layers (each layer's gradients all-reduced bucket by bucket
 * during backward) against --grad-sync whole (one all-reduce after it): with
 * 2 ranks every gradient element is the sum of the same two floats either
 * way, and a + b == b + a, so losses and gradient norms must be EQUAL and the
 * final parameters bitwise equal. Also with --batch 1 --grad-accum 2, where
 * only the last micro-batch's backward syncs.
 *
 * --zero 1 (ZeRO-1: reduce-scatter, AdamW on each rank's part, the norm from
 * the all-reduced per-part sums of squares, all-gather): 2 ranks against the
 * 1-rank run (losses within 1e-6, parameters by the criteria below), and 3
 * ranks --zero 1 against 3 ranks --zero 0 with the same batch (an uneven
 * split of the buffer; losses within 1e-5, the same parameter criteria
 * relative to the travel of that run).
 *
 * N ranks -> M ranks. Checkpoints hold the whole AdamW state however it was
 * sharded. The 2-rank --zero 1 run checkpoints at step 3; its state must
 * equal the 2-rank --zero 0 run's checkpoint at step 3 (parameters and both
 * moments). That checkpoint resumes (a) on 1 rank with --batch 4 and (b) on
 * 4 ranks with --batch 1 (--zero 0), and (c) the 1-rank run's step-3
 * checkpoint resumes on 2 ranks --zero 1. Each resumed run must print
 * "resumed from" on rank 0's stderr (and only there), match the
 * uninterrupted run's losses for steps 4..6 within 1e-5 and its final
 * parameters by the criteria below.
 *
 * Control for the optimizer state: the same step-3 checkpoint rewritten with
 * the library with its AdamW moments zeroed (parameters, step, data position
 * and RNG kept) and resumed on 1 rank. Its step-4 loss must equal the real
 * resume's exactly (the parameters and batch are the same, so the control
 * changes nothing but the moments), yet steps 5..6 and the final parameters
 * must miss the tolerances above by a wide margin. So a resume that dropped
 * or mis-assembled the moments (e.g. only rank 0's shard) fails the checks.
 *
 * Tolerances. Losses and gradient norms agree to ~1e-6. Parameters agree to
 * ~1e-7 in root mean square, but AdamW divides each gradient by its own
 * running magnitude, so a gradient component that is nearly zero through
 * cancellation (rounding-sized, e.g. 1e-9) still moves its parameter by up
 * to lr per step, in a direction the summation order decides. A handful of
 * the 128k parameters therefore differ by up to ~5% of lr after 6 steps.
 * The checks are: RMS difference below 1e-4 of the distance the parameters
 * travelled from init, and max difference below lr / 10; the control run
 * differs by more than the distance travelled on both counts.
 *
 * Bad input: --grad-sync sometimes and --zero 2 are usage errors (exit 2)
 * naming the allowed values. */
#include "test_engine_util.h"

#include "checkpoint.h"
#include "cli.h"
#include "engine.h"
#include "fw_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_model, *s_data;

#define S_LR     3e-3
#define S_LR_STR "3e-3"
#define S_MAXW   4 /* most ranks one scenario spawns */
#define S_MAXARG 64

/* stdout of the reference runs (test_ring_equals_one), for the later tests. */
static char *s_one_out, *s_two_out;

/* One field of every step line, in order. */
static json_t *s_field(const char *text, const char *key) {
    json_t *lines = te_json_lines(text), *out = json_array();
    size_t i;
    json_t *o;
    json_array_foreach(lines, i, o) if (json_object_get(o, "loss"))
        json_array_append(out, json_object_get(o, key));
    json_decref(lines);
    return out;
}
#define s_losses(text) s_field((text), "loss")

/* The last n elements of a (a new array). */
static json_t *s_tail(json_t *a, size_t n) {
    json_t *out = json_array();
    size_t sz = json_array_size(a);
    for (size_t i = sz > n ? sz - n : 0; i < sz; i++) json_array_append(out, json_array_get(a, i));
    return out;
}

/* dir's parameters against the reference model ref (see the header). */
static void s_check_params_vs(const char *ref, const char *dir, const char *what) {
    double mx, rms, travel_max, travel;
    char *r = strdup(ref), *d = strdup(dir);
    CHECK(te_param_compare(r, te_path("model"), &travel_max, &travel) == 0);
    CHECK(te_param_compare(r, d, &mx, &rms) == 0);
    CHECKF(rms < 1e-4 * travel, "%s: parameters differ by %g rms (travelled %g)", what, rms,
           travel);
    CHECKF(mx < S_LR / 10, "%s: parameters differ by up to %g", what, mx);
    free(r), free(d);
}
#define s_check_params(dir, what) s_check_params_vs(te_path("one"), (dir), (what))

static double s_maxdiff(json_t *a, json_t *b) {
    if (json_array_size(a) != json_array_size(b) || json_array_size(a) == 0) return INFINITY;
    double d = 0;
    for (size_t i = 0; i < json_array_size(a); i++) {
        double x =
            fabs(json_number_value(json_array_get(a, i)) - json_number_value(json_array_get(b, i)));
        if (x > d) d = x;
    }
    return d;
}

/* Same length and every element == (bitwise for the floats jansson parsed
 * from the same printed digits). */
static int s_equal(json_t *a, json_t *b) {
    return json_array_size(a) > 0 && s_maxdiff(a, b) == 0.0;
}

/* argv of `train` into v (NULL-terminated): the common options, then the
 * NULL-terminated extra (may be NULL). */
static void s_train_argv(const char **v, const char *out, const char *batch, const char *seed,
                         const char *const *extra) {
    const char *base[] = {"train",   "--model",   s_model,   "--data", s_data,  "--out", out,
                          "--steps", "6",         "--batch", batch,    "--seq", "32",    "--lr",
                          S_LR_STR,  "--threads", "1",       "--seed", seed,    NULL};
    int n = 0;
    for (int i = 0; base[i]; i++) v[n++] = base[i];
    for (int i = 0; extra && extra[i] && n < S_MAXARG - 1; i++) v[n++] = extra[i];
    v[n] = NULL;
}

/* One rank: out = te_path(tag). */
static te_result s_run1(const char *tag, const char *batch, const char *seed,
                        const char *const *extra) {
    const char *v[S_MAXARG];
    char *out = strdup(te_path(tag));
    s_train_argv(v, out, batch, seed, extra);
    te_result r = te_run(NULL, v);
    free(out);
    return r;
}

static te_result s_train1(const char *tag, const char *batch, const char *accum, const char *seed) {
    const char *extra[] = {"--grad-accum", accum, NULL};
    return s_run1(tag, batch, seed, extra);
}

/* What W ring ranks printed. */
typedef struct {
    int world;
    int code[S_MAXW];
    char *out[S_MAXW], *err[S_MAXW];
} s_ranks;

static void s_ranks_free(s_ranks *g) {
    for (int r = 0; r < g->world; r++) free(g->out[r]), free(g->err[r]);
    memset(g, 0, sizeof *g);
}

/* Spawn world ring ranks (seed 11) with --batch batch and the extra options,
 * wait for all of them and collect their exit codes and output. Rank 0
 * writes the model to te_path(tag), rank R to te_path("tag-rankR") (which
 * must stay empty). 0 when every rank exited 0 and printed something. */
static int s_ring(s_ranks *g, int world, const char *tag, const char *batch,
                  const char *const *extra) {
    memset(g, 0, sizeof *g);
    g->world = world;
    char rdv[64], ws[8];
    snprintf(rdv, sizeof rdv, "tcp://127.0.0.1:%d", fw_test_free_port());
    snprintf(ws, sizeof ws, "%d", world);
    int pids[S_MAXW];
    for (int r = 0; r < world; r++) {
        char rank[8], name[128], outp[4200], errp[4200], dir[4200];
        snprintf(rank, sizeof rank, "%d", r);
        snprintf(name, sizeof name, "%s-rank%d", tag, r);
        snprintf(dir, sizeof dir, "%s", te_path(r == 0 ? tag : name));
        snprintf(name, sizeof name, "%s.%d.out", tag, r);
        snprintf(outp, sizeof outp, "%s", te_path(name));
        snprintf(name, sizeof name, "%s.%d.err", tag, r);
        snprintf(errp, sizeof errp, "%s", te_path(name));
        const char *more[S_MAXARG];
        const char *ring[] = {"--rank", rank,           "--world-size", ws,  "--rendezvous",
                              rdv,      "--collective", "ring",         NULL};
        int n = 0;
        for (int i = 0; ring[i]; i++) more[n++] = ring[i];
        for (int i = 0; extra && extra[i] && n < S_MAXARG - 1; i++) more[n++] = extra[i];
        more[n] = NULL;
        const char *v[2 * S_MAXARG];
        s_train_argv(v, dir, batch, "11", more);
        pids[r] = te_spawn(v, outp, errp);
        if (pids[r] <= 0) {
            /* the started ranks give up after --rendezvous-timeout */
            for (int k = 0; k < r; k++) te_wait(pids[k]);
            g->world = 0;
            CHECKF(0, "%s: cannot start rank %d", tag, r);
            return -1;
        }
    }
    int rc = 0;
    for (int r = 0; r < world; r++) g->code[r] = te_wait(pids[r]);
    for (int r = 0; r < world; r++) {
        char name[128];
        snprintf(name, sizeof name, "%s.%d.out", tag, r);
        g->out[r] = te_read(te_path(name), NULL);
        snprintf(name, sizeof name, "%s.%d.err", tag, r);
        g->err[r] = te_read(te_path(name), NULL);
        if (g->code[r] != 0 || !g->out[r] || !g->err[r]) rc = -1;
    }
    for (int r = 0; r < world; r++)
        CHECKF(g->code[r] == 0, "%s: rank %d of %d exited %d\n%s", tag, r, world, g->code[r],
               g->err[r] ? g->err[r] : "(no stderr)");
    if (rc == 0) {
        /* every rank reports the same (all-reduced) loss at every step */
        json_t *l0 = s_losses(g->out[0]);
        CHECKF(json_array_size(l0) > 0, "%s: no step lines", tag);
        for (int r = 1; r < world; r++) {
            json_t *lr = s_losses(g->out[r]);
            CHECKF(s_equal(l0, lr), "%s: rank %d's losses differ from rank 0's", tag, r);
            json_decref(lr);
            char name[128];
            snprintf(name, sizeof name, "%s-rank%d", tag, r);
            CHECKF(te_param_maxdiff(te_path(name), te_path(tag)) < 0, "%s: rank %d wrote a model",
                   tag, r);
        }
        json_decref(l0);
    }
    return rc;
}

static void test_ring_equals_one(void) {
    /* the 1-rank reference also checkpoints at step 3 for test_ring_resume_n_to_m */
    char *ck1 = strdup(te_path("ck-one"));
    const char *one_extra[] = {"--checkpoint-dir", ck1, "--checkpoint-every", "3", NULL};
    te_result one = s_run1("one", "4", "11", one_extra);
    free(ck1);
    REQUIRE(one.code == 0);
    json_t *l1 = s_losses(one.out);
    CHECK_EQ_INT(json_array_size(l1), 6);
    s_one_out = strdup(one.out);

    /* the 2-rank reference: whole-buffer all-reduce, also checkpointing */
    s_ranks two;
    char *ck2 = strdup(te_path("ck-two"));
    const char *two_extra[] = {
        "--grad-sync", "whole", "--checkpoint-dir", ck2, "--checkpoint-every", "3", NULL};
    int rc = s_ring(&two, 2, "two", "2", two_extra);
    free(ck2);
    REQUIRE(rc == 0);
    s_two_out = strdup(two.out[0]);
    json_t *l2 = s_losses(two.out[0]);
    CHECKF(s_maxdiff(l1, l2) < 1e-5, "losses differ by %g", s_maxdiff(l1, l2));
    json_t *g1 = s_field(one.out, "grad_norm"), *g2 = s_field(two.out[0], "grad_norm");
    CHECKF(s_maxdiff(g1, g2) < 1e-4, "gradient norms differ by %g", s_maxdiff(g1, g2));
    json_decref(g1), json_decref(g2);
    s_check_params(te_path("two"), "ring");

    /* gradient accumulation: 2 micro-batches of 2 == 1 batch of 4 */
    te_result acc = s_train1("accum", "2", "2", "11");
    CHECK(acc.code == 0);
    json_t *l3 = s_losses(acc.out);
    CHECKF(s_maxdiff(l1, l3) < 1e-5, "accumulated losses differ by %g", s_maxdiff(l1, l3));
    s_check_params(te_path("accum"), "grad-accum");
    /* control: another data seed gives other batches and other parameters */
    te_result ctl = s_train1("ctl", "4", "1", "12");
    CHECK(ctl.code == 0);
    json_t *l4 = s_losses(ctl.out);
    CHECK(s_maxdiff(l1, l4) > 1e-3);
    double mx, rms, travel_max, travel;
    CHECK(te_param_compare(te_path("one"), te_path("model"), &travel_max, &travel) == 0);
    CHECK(te_param_compare(te_path("one"), te_path("ctl"), &mx, &rms) == 0);
    CHECKF(rms > 0.3 * travel && mx > S_LR / 10, "control: rms %g max %g, travelled %g", rms, mx,
           travel);

    json_decref(l1), json_decref(l2), json_decref(l3), json_decref(l4);
    s_ranks_free(&two);
    te_result_free(&one), te_result_free(&acc), te_result_free(&ctl);
}

/* Per-layer all-reduce during backward == one all-reduce after it, bit for
 * bit with 2 ranks (see the header). */
static void test_ring_grad_sync_layers(void) {
    REQUIRE(s_two_out);
    s_ranks lay;
    const char *layers[] = {"--grad-sync", "layers", NULL};
    REQUIRE(s_ring(&lay, 2, "layers", "2", layers) == 0);
    json_t *lw = s_losses(s_two_out), *ll = s_losses(lay.out[0]);
    json_t *gw = s_field(s_two_out, "grad_norm"), *gl = s_field(lay.out[0], "grad_norm");
    CHECK_EQ_INT(json_array_size(ll), 6);
    CHECKF(s_equal(lw, ll), "layers: losses differ from whole by %g", s_maxdiff(lw, ll));
    CHECKF(s_equal(gw, gl), "layers: grad norms differ from whole by %g", s_maxdiff(gw, gl));
    double d = te_param_maxdiff(te_path("two"), te_path("layers"));
    CHECKF(d == 0.0, "layers: parameters differ from whole by up to %g", d);
    json_decref(lw), json_decref(ll), json_decref(gw), json_decref(gl);
    s_ranks_free(&lay);

    /* with accumulation only the last micro-batch's backward syncs; the
     * first one's gradients ride along in its buckets */
    s_ranks aw, al;
    const char *acc_whole[] = {"--grad-accum", "2", "--grad-sync", "whole", NULL};
    const char *acc_layers[] = {"--grad-accum", "2", "--grad-sync", "layers", NULL};
    REQUIRE(s_ring(&aw, 2, "acc-whole", "1", acc_whole) == 0);
    if (s_ring(&al, 2, "acc-layers", "1", acc_layers) == 0) {
        json_t *a = s_losses(aw.out[0]), *b = s_losses(al.out[0]);
        json_t *ga = s_field(aw.out[0], "grad_norm"), *gb = s_field(al.out[0], "grad_norm");
        CHECKF(s_equal(a, b), "accum layers: losses differ from whole by %g", s_maxdiff(a, b));
        CHECKF(s_equal(ga, gb), "accum layers: grad norms differ by %g", s_maxdiff(ga, gb));
        d = te_param_maxdiff(te_path("acc-whole"), te_path("acc-layers"));
        CHECKF(d == 0.0, "accum layers: parameters differ from whole by up to %g", d);
        /* and it is the same training as 1 rank with --batch 4 */
        json_t *l1 = s_losses(s_one_out);
        CHECKF(s_maxdiff(l1, b) < 1e-5, "accum layers: losses differ from 1 rank by %g",
               s_maxdiff(l1, b));
        json_decref(l1);
        json_decref(a), json_decref(b), json_decref(ga), json_decref(gb);
    }
    s_ranks_free(&aw), s_ranks_free(&al);
}

/* ZeRO-1 trains like the unsharded optimizer. */
static void test_ring_zero(void) {
    REQUIRE(s_one_out);
    s_ranks z2;
    char *ck = strdup(te_path("ck-zero2"));
    const char *zero2[] = {"--zero", "1", "--checkpoint-dir", ck, "--checkpoint-every", "3", NULL};
    int rc = s_ring(&z2, 2, "zero2", "2", zero2);
    free(ck);
    REQUIRE(rc == 0);
    json_t *l1 = s_losses(s_one_out), *lz = s_losses(z2.out[0]);
    json_t *g1 = s_field(s_one_out, "grad_norm"), *gz = s_field(z2.out[0], "grad_norm");
    CHECK_EQ_INT(json_array_size(lz), 6);
    CHECKF(s_maxdiff(l1, lz) < 1e-6, "zero 2 ranks: losses differ by %g", s_maxdiff(l1, lz));
    CHECKF(s_maxdiff(g1, gz) < 1e-4, "zero 2 ranks: grad norms differ by %g", s_maxdiff(g1, gz));
    s_check_params(te_path("zero2"), "zero 2 ranks");
    json_decref(l1), json_decref(lz), json_decref(g1), json_decref(gz);
    s_ranks_free(&z2);

    /* 3 ranks split the buffer unevenly; the same 6-row batches either way */
    s_ranks a, b;
    const char *z0[] = {"--zero", "0", NULL}, *z1[] = {"--zero", "1", NULL};
    REQUIRE(s_ring(&a, 3, "three0", "2", z0) == 0);
    if (s_ring(&b, 3, "three1", "2", z1) == 0) {
        json_t *la = s_losses(a.out[0]), *lb = s_losses(b.out[0]);
        CHECK_EQ_INT(json_array_size(lb), 6);
        CHECKF(s_maxdiff(la, lb) < 1e-5, "zero 3 ranks: losses differ by %g", s_maxdiff(la, lb));
        s_check_params_vs(te_path("three0"), te_path("three1"), "zero 3 ranks");
        /* not the 4-row run: the comparison above is between like runs */
        json_t *l4 = s_losses(s_one_out);
        CHECK(s_maxdiff(l4, la) > 1e-4);
        json_decref(la), json_decref(lb), json_decref(l4);
    }
    s_ranks_free(&a), s_ranks_free(&b);
}

/* Max |a - b| over n floats, and max |a|. */
static double s_arr_maxdiff(const float *a, const float *b, size_t n, double *amax) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs((double)a[i] - (double)b[i]);
        if (isnan(x)) x = INFINITY;
        if (x > d) d = x;
        if (fabs((double)a[i]) > m) m = fabs((double)a[i]);
    }
    *amax = m;
    return d;
}

/* A checkpoint's parameters and AdamW moments (three arrays of *n floats,
 * caller frees); -1 when it cannot be read. */
static int s_ckpt_state(const char *path, float **p, float **m1, float **m2, size_t *n,
                        fw_train_state *st) {
    fw_model *m = fw_model_load_dir(s_model, "cpu");
    int rc = -1;
    *p = *m1 = *m2 = NULL;
    if (m && fw_checkpoint_load(path, m, st) == 0) {
        *n = fw_model_num_params(m);
        *p = malloc(*n * sizeof(float)), *m1 = malloc(*n * sizeof(float));
        *m2 = malloc(*n * sizeof(float));
        if (*p && *m1 && *m2 && fw_model_read_params(m, *p) == 0 &&
            fw_model_read_opt_state(m, *m1, *m2) == 0)
            rc = 0;
    }
    if (rc != 0) free(*p), free(*m1), free(*m2), *p = *m1 = *m2 = NULL;
    fw_model_destroy(&m);
    return rc;
}

/* The same checkpoint with both AdamW moments zeroed (the control). */
static int s_ckpt_zero_moments(const char *src, const char *dst) {
    fw_model *m = fw_model_load_dir(s_model, "cpu");
    fw_train_state st;
    int rc = -1;
    if (m && fw_checkpoint_load(src, m, &st) == 0) {
        float *z = calloc(fw_model_num_params(m), sizeof(float));
        rc = z ? fw_checkpoint_save_opt(dst, m, &st, z, z) : -1;
        free(z);
    }
    fw_model_destroy(&m);
    return rc;
}

/* A resumed run's checks against the uninterrupted one (ref_out, ref_dir):
 * losses of steps 4..6 and the final parameters. */
static void s_check_resumed(const char *what, const char *out, const char *err, const char *ref_out,
                            const char *ref_dir, const char *dir) {
    CHECKF(err && strstr(err, "resumed from"), "%s: no \"resumed from\" on stderr: %s", what,
           err ? err : "(none)");
    json_t *lr = s_losses(out), *all = s_losses(ref_out), *lu = s_tail(all, 3);
    json_t *steps = s_field(out, "step");
    CHECKF(json_array_size(lr) == 3 && json_integer_value(json_array_get(steps, 0)) == 4,
           "%s: %zu step lines, the first step %lld", what, json_array_size(lr),
           (long long)json_integer_value(json_array_get(steps, 0)));
    CHECKF(s_maxdiff(lu, lr) < 1e-5, "%s: losses of steps 4..6 differ by %g", what,
           s_maxdiff(lu, lr));
    s_check_params_vs(ref_dir, dir, what);
    json_decref(lr), json_decref(all), json_decref(lu), json_decref(steps);
}

/* Checkpoints move between world sizes and between sharded and unsharded
 * optimizers (see the header). Needs the checkpoints of test_ring_equals_one
 * and test_ring_zero. */
static void test_ring_resume_n_to_m(void) {
    REQUIRE(s_one_out);
    char *zout = te_read(te_path("zero2.0.out"), NULL);
    REQUIRE(zout);
    char *ckz = strdup(te_path("ck-zero2/ckpt-0000000003.fwckpt"));
    char *ckw = strdup(te_path("ck-two/ckpt-0000000003.fwckpt"));
    char *ck1 = strdup(te_path("ck-one/ckpt-0000000003.fwckpt"));

    /* the sharded checkpoint holds what the unsharded one does */
    float *pz, *m1z, *m2z, *pw, *m1w, *m2w;
    size_t nz = 0, nw = 0;
    fw_train_state stz, stw;
    int okz = s_ckpt_state(ckz, &pz, &m1z, &m2z, &nz, &stz) == 0;
    int okw = s_ckpt_state(ckw, &pw, &m1w, &m2w, &nw, &stw) == 0;
    CHECKF(okz && okw && nz == nw, "cannot read the step-3 checkpoints: %d %d", okz, okw);
    if (okz && okw && nz == nw) {
        double amax, dp = s_arr_maxdiff(pw, pz, nw, &amax);
        CHECKF(dp < S_LR / 10, "sharded checkpoint: parameters differ by up to %g", dp);
        double d1 = s_arr_maxdiff(m1w, m1z, nw, &amax);
        CHECKF(amax > 0 && d1 < 1e-3 * amax, "sharded checkpoint: mom1 differs by %g (max %g)", d1,
               amax);
        double d2 = s_arr_maxdiff(m2w, m2z, nw, &amax);
        CHECKF(amax > 0 && d2 < 1e-3 * amax, "sharded checkpoint: mom2 differs by %g (max %g)", d2,
               amax);
        /* both ranks' halves are there: no run of zeros in the second moment
         * as long as a rank's part */
        size_t zeros = 0;
        for (size_t i = nw / 2; i < nw; i++) zeros += m2z[i] == 0.0f;
        CHECKF(zeros < nw / 4, "sharded checkpoint: %zu zero second moments in rank 1's half",
               zeros);
        CHECK(stz.step == 3 && stw.step == 3 && stz.world_size == 2);
        CHECK(stz.loader.cursor == stw.loader.cursor && stz.loader.epoch == stw.loader.epoch);
    }
    if (okz) free(pz), free(m1z), free(m2z);
    if (okw) free(pw), free(m1w), free(m2w);

    /* (a) 2 ranks --zero 1 -> 1 rank --batch 4 */
    const char *from_z[] = {"--resume", ckz, NULL};
    te_result a = s_run1("res-a", "4", "11", from_z);
    CHECKF(a.code == 0, "resume on 1 rank: exit %d: %s", a.code, a.err);
    if (a.code == 0)
        s_check_resumed("2 ranks zero -> 1 rank", a.out, a.err, zout, te_path("zero2"),
                        te_path("res-a"));

    /* (b) the same checkpoint -> 4 ranks --batch 1, unsharded */
    s_ranks b;
    const char *from_z0[] = {"--resume", ckz, "--zero", "0", NULL};
    if (s_ring(&b, 4, "res-b", "1", from_z0) == 0) {
        s_check_resumed("2 ranks zero -> 4 ranks", b.out[0], b.err[0], zout, te_path("zero2"),
                        te_path("res-b"));
        for (int r = 1; r < 4; r++)
            CHECKF(!strstr(b.err[r], "resumed from"), "rank %d also says resumed: %s", r, b.err[r]);
    }
    s_ranks_free(&b);

    /* (c) 1 rank -> 2 ranks --zero 1 */
    s_ranks c;
    const char *from_1[] = {"--resume", ck1, "--zero", "1", NULL};
    if (s_ring(&c, 2, "res-c", "2", from_1) == 0) {
        s_check_resumed("1 rank -> 2 ranks zero", c.out[0], c.err[0], s_one_out, te_path("one"),
                        te_path("res-c"));
        CHECKF(!strstr(c.err[1], "resumed from"), "rank 1 also says resumed: %s", c.err[1]);
    }
    s_ranks_free(&c);

    /* control: the same checkpoint without its AdamW moments */
    char *ckc = strdup(te_path("ctl-moments.fwckpt"));
    REQUIRE(s_ckpt_zero_moments(ckz, ckc) == 0);
    const char *from_c[] = {"--resume", ckc, NULL};
    te_result ctl = s_run1("res-ctl", "4", "11", from_c);
    CHECKF(ctl.code == 0, "control resume: exit %d: %s", ctl.code, ctl.err);
    if (ctl.code == 0 && a.code == 0) {
        json_t *la = s_losses(a.out), *lc = s_losses(ctl.out);
        CHECK_EQ_INT(json_array_size(lc), 3);
        /* same parameters and batch at step 4: the same loss */
        CHECK(json_number_value(json_array_get(la, 0)) == json_number_value(json_array_get(lc, 0)));
        double dl = s_maxdiff(la, lc);
        CHECKF(dl > 1e-3, "control: losses differ by only %g without the moments", dl);
        double mx, rms, travel_max, travel;
        CHECK(te_param_compare(te_path("zero2"), te_path("model"), &travel_max, &travel) == 0);
        CHECK(te_param_compare(te_path("zero2"), te_path("res-ctl"), &mx, &rms) == 0);
        CHECKF(rms > 1e-2 * travel && mx > S_LR / 2, "control: rms %g max %g, travelled %g", rms,
               mx, travel);
        json_decref(la), json_decref(lc);
    }
    te_result_free(&a), te_result_free(&ctl);
    free(ckz), free(ckw), free(ck1), free(ckc), free(zout);
}

/* A bad --grad-sync / --zero is a usage error naming the allowed values. */
static void test_ring_bad_grad_sync(void) {
    te_result r =
        te_runv(NULL, "train", "--model", s_model, "--data", s_data, "--out", te_path("bad"),
                "--steps", "2", "--batch", "2", "--seq", "32", "--grad-sync", "sometimes", NULL);
    CHECKF(r.code == FW_CLI_EXIT_USAGE && strstr(r.err, "--grad-sync") &&
               strstr(r.err, "sometimes") && strstr(r.err, "auto") && strstr(r.err, "layers") &&
               strstr(r.err, "whole") && r.out[0] == '\0',
           "--grad-sync sometimes: exit %d: %s", r.code, r.err);
    te_result_free(&r);
    r = te_runv(NULL, "train", "--model", s_model, "--data", s_data, "--out", te_path("bad"),
                "--steps", "2", "--batch", "2", "--seq", "32", "--zero", "2", NULL);
    CHECKF(r.code == FW_CLI_EXIT_USAGE && strstr(r.err, "--zero") && r.out[0] == '\0',
           "--zero 2: exit %d: %s", r.code, r.err);
    te_result_free(&r);
    CHECK(te_param_maxdiff(te_path("bad"), te_path("model")) < 0);
}

/* A rank whose peer never comes gives up after --rendezvous-timeout with a
 * clear error instead of hanging. */
static void test_ring_peer_missing(void) {
    char rdv[64];
    snprintf(rdv, sizeof rdv, "tcp://127.0.0.1:%d", fw_test_free_port());
    te_result r =
        te_runv(NULL, "train", "--model", s_model, "--data", s_data, "--out", te_path("lonely"),
                "--steps", "2", "--batch", "2", "--seq", "32", "--threads", "1", "--rank", "0",
                "--world-size", "2", "--rendezvous", rdv, "--rendezvous-timeout", "1500", NULL);
    CHECKF(r.code == 1 && strstr(r.err, "ring") && r.out[0] == '\0', "lonely rank: %d %s", r.code,
           r.err);
    te_result_free(&r);
}

int main(int argc, char **argv) {
    te_init(argc, argv, "engine-ring");
    s_model = strdup(te_path("model"));
    s_data = strdup(te_path("train.jsonl"));
    if (te_split_jsonl(fw_test_shared("corpora/moby-dick.jsonl"), 10, s_data, NULL) != 0) {
        fprintf(stderr, "cannot read the Moby-Dick corpus\n");
        return 1;
    }
    te_result t = te_runv(NULL, "tokenizer-train", "--vocab-size", "384", "--data", s_data, "--out",
                          te_path("tok"), NULL);
    te_result m = te_runv(NULL, "init", "--config", "tiny", "--tokenizer", te_path("tok"), "--out",
                          s_model, "--seed", "3", NULL);
    te_result p = te_runv(NULL, "prepare", "--tokenizer", te_path("tok"), "--data", s_data, "--out",
                          te_path("train.shard"), NULL);
    if (t.code || m.code || p.code) {
        fprintf(stderr, "setup failed: %s%s%s\n", t.err, m.err, p.err);
        return 1;
    }
    /* train from the shard: also covers --data SHARD */
    s_data = strdup(te_path("train.shard"));
    te_result_free(&t), te_result_free(&m), te_result_free(&p);
    RUN(test_ring_equals_one);
    RUN(test_ring_grad_sync_layers);
    RUN(test_ring_zero);
    RUN(test_ring_resume_n_to_m);
    RUN(test_ring_bad_grad_sync);
    RUN(test_ring_peer_missing);
    free(s_one_out), free(s_two_out);
    te_cleanup();
    return fw_test_summary();
}
