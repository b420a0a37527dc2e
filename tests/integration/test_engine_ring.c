/* test_engine_ring.c - data-parallel training through the real binary.
 *
 * Two processes, each `train --batch 2 --rank R --world-size 2
 * --collective ring` with a rendezvous on a free loopback port, must follow
 * the same trajectory as one process with --batch 4: the same per-step
 * losses and gradient norms and the same final parameters, to float
 * tolerance (the gradient sum is taken in another order). One process with
 * --batch 2 --grad-accum 2 must match too (the same windows, accumulated
 * instead of all-reduced). A control run with a different seed must NOT
 * match, so the comparison has teeth.
 *
 * Tolerances. Losses and gradient norms agree to ~1e-6. Parameters agree to
 * ~1e-7 in root mean square, but AdamW divides each gradient by its own
 * running magnitude, so a gradient component that is nearly zero through
 * cancellation (rounding-sized, e.g. 1e-9) still moves its parameter by up
 * to lr per step, in a direction the summation order decides. A handful of
 * the 128k parameters therefore differ by up to ~5% of lr after 6 steps.
 * The checks are: RMS difference below 1e-4 of the distance the parameters
 * travelled from init, and max difference below lr / 10; the control run
 * differs by more than the distance travelled on both counts. */
#include "test_engine_util.h"

#include "fw_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_model, *s_data;

#define S_LR     3e-3
#define S_LR_STR "3e-3"

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

/* dir's parameters against the 1-rank run "one" (see the header). */
static void s_check_params(const char *dir, const char *what) {
    double mx, rms, travel_max, travel;
    CHECK(te_param_compare(te_path("one"), te_path("model"), &travel_max, &travel) == 0);
    CHECK(te_param_compare(te_path("one"), dir, &mx, &rms) == 0);
    CHECKF(rms < 1e-4 * travel, "%s: parameters differ by %g rms (travelled %g)", what, rms,
           travel);
    CHECKF(mx < S_LR / 10, "%s: parameters differ by up to %g", what, mx);
}

static double s_maxdiff(json_t *a, json_t *b) {
    if (json_array_size(a) != json_array_size(b) || json_array_size(a) == 0) return INFINITY;
    double d = 0;
    for (size_t i = 0; i < json_array_size(a); i++) {
        double x = fabs(json_number_value(json_array_get(a, i)) -
                        json_number_value(json_array_get(b, i)));
        if (x > d) d = x;
    }
    return d;
}

static te_result s_train1(const char *out, const char *batch, const char *accum, const char *seed) {
    return te_runv(NULL, "train", "--model", s_model, "--data", s_data, "--out", out, "--steps",
                   "6", "--batch", batch, "--grad-accum", accum, "--seq", "32", "--lr", S_LR_STR,
                   "--threads", "1", "--seed", seed, NULL);
}

static void test_ring_equals_one(void) {
    te_result one = s_train1(te_path("one"), "4", "1", "11");
    REQUIRE(one.code == 0);
    json_t *l1 = s_losses(one.out);
    CHECK_EQ_INT(json_array_size(l1), 6);

    char rdv[64];
    snprintf(rdv, sizeof rdv, "tcp://127.0.0.1:%d", fw_test_free_port());
    int pids[2];
    for (int r = 0; r < 2; r++) {
        char rank[8], out[32], err[32];
        snprintf(rank, sizeof rank, "%d", r);
        snprintf(out, sizeof out, "rank%d.out", r);
        snprintf(err, sizeof err, "rank%d.err", r);
        const char *args[] = {"train", "--model", s_model, "--data", s_data, "--out",
                              te_path(r == 0 ? "two" : "two-rank1"), "--steps", "6", "--batch",
                              "2", "--seq", "32", "--lr", S_LR_STR, "--threads", "1", "--seed", "11",
                              "--rank", rank, "--world-size", "2", "--rendezvous", rdv,
                              "--collective", "ring", NULL};
        char outp[4200], errp[4200];
        snprintf(outp, sizeof outp, "%s", te_path(out));
        snprintf(errp, sizeof errp, "%s", te_path(err));
        pids[r] = te_spawn(args, outp, errp);
        REQUIRE(pids[r] > 0);
    }
    int c0 = te_wait(pids[0]), c1 = te_wait(pids[1]);
    char *o0 = te_read(te_path("rank0.out"), NULL), *o1 = te_read(te_path("rank1.out"), NULL);
    char *e0 = te_read(te_path("rank0.err"), NULL), *e1 = te_read(te_path("rank1.err"), NULL);
    CHECKF(c0 == 0 && c1 == 0, "ranks exited %d / %d\n%s\n%s", c0, c1, e0, e1);
    REQUIRE(o0 && o1);
    json_t *l2a = s_losses(o0), *l2b = s_losses(o1);
    /* both ranks report the same (all-reduced) loss at every step */
    CHECK(s_maxdiff(l2a, l2b) == 0.0);
    CHECKF(s_maxdiff(l1, l2a) < 1e-5, "losses differ by %g", s_maxdiff(l1, l2a));
    json_t *g1 = s_field(one.out, "grad_norm"), *g2 = s_field(o0, "grad_norm");
    CHECKF(s_maxdiff(g1, g2) < 1e-4, "gradient norms differ by %g", s_maxdiff(g1, g2));
    json_decref(g1), json_decref(g2);
    s_check_params(te_path("two"), "ring");
    /* only rank 0 writes the model */
    CHECK(te_param_maxdiff(te_path("two-rank1"), te_path("one")) < 0);

    /* gradient accumulation: 2 micro-batches of 2 == 1 batch of 4 */
    te_result acc = s_train1(te_path("accum"), "2", "2", "11");
    CHECK(acc.code == 0);
    json_t *l3 = s_losses(acc.out);
    CHECKF(s_maxdiff(l1, l3) < 1e-5, "accumulated losses differ by %g", s_maxdiff(l1, l3));
    s_check_params(te_path("accum"), "grad-accum");
    /* control: another data seed gives other batches and other parameters */
    te_result ctl = s_train1(te_path("ctl"), "4", "1", "12");
    CHECK(ctl.code == 0);
    json_t *l4 = s_losses(ctl.out);
    CHECK(s_maxdiff(l1, l4) > 1e-3);
    double mx, rms, travel_max, travel;
    CHECK(te_param_compare(te_path("one"), te_path("model"), &travel_max, &travel) == 0);
    CHECK(te_param_compare(te_path("one"), te_path("ctl"), &mx, &rms) == 0);
    CHECKF(rms > 0.3 * travel && mx > S_LR / 10, "control: rms %g max %g, travelled %g", rms, mx, travel);

    json_decref(l1), json_decref(l2a), json_decref(l2b), json_decref(l3), json_decref(l4);
    free(o0), free(o1), free(e0), free(e1);
    te_result_free(&one), te_result_free(&acc), te_result_free(&ctl);
}

/* A rank whose peer never comes gives up after --rendezvous-timeout with a
 * clear error instead of hanging. */
static void test_ring_peer_missing(void) {
    char rdv[64];
    snprintf(rdv, sizeof rdv, "tcp://127.0.0.1:%d", fw_test_free_port());
    te_result r = te_runv(NULL, "train", "--model", s_model, "--data", s_data, "--out",
                          te_path("lonely"), "--steps", "2", "--batch", "2", "--seq", "32",
                          "--threads", "1", "--rank", "0", "--world-size", "2", "--rendezvous",
                          rdv, "--rendezvous-timeout", "1500", NULL);
    CHECKF(r.code == 1 && strstr(r.err, "ring") && r.out[0] == '\0', "lonely rank: %d %s",
           r.code, r.err);
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
    te_result t = te_runv(NULL, "tokenizer-train", "--vocab-size", "384", "--data", s_data,
                          "--out", te_path("tok"), NULL);
    te_result m = te_runv(NULL, "init", "--config", "tiny", "--tokenizer", te_path("tok"), "--out",
                          s_model, "--seed", "3", NULL);
    te_result p = te_runv(NULL, "prepare", "--tokenizer", te_path("tok"), "--data", s_data,
                          "--out", te_path("train.shard"), NULL);
    if (t.code || m.code || p.code) {
        fprintf(stderr, "setup failed: %s%s%s\n", t.err, m.err, p.err);
        return 1;
    }
    /* train from the shard: also covers --data SHARD */
    s_data = strdup(te_path("train.shard"));
    te_result_free(&t), te_result_free(&m), te_result_free(&p);
    RUN(test_ring_equals_one);
    RUN(test_ring_peer_missing);
    te_cleanup();
    return fw_test_summary();
}
