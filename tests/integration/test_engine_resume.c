/* test_engine_resume.c - checkpoints through the real binary.
 *
 *   1. Resume equals an uninterrupted run: train 8 steps with a checkpoint
 *      after step 4; a second process resumes from it; its steps 5..8 print
 *      the same loss, lr and grad norm bit for bit (same thread count), and
 *      both final model directories hold the same parameters bit for bit.
 *   2. --resume auto picks the latest checkpoint of --checkpoint-dir, and
 *      starts fresh when there is none.
 *   3. Save -> load: the eval loss the training process computes on its
 *      in-memory model at the end equals the eval verb's loss on the saved
 *      and reloaded model directory, exactly.
 *   4. A checkpoint of another model shape is refused with a clear error. */
#include "test_engine_util.h"

#include "fw_test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *s_tok, *s_model, *s_data, *s_held;

/* The train verb with the common options plus extra ones. */
static te_result s_train(const char *out, const char *const *extra) {
    const char *args[48] = {"train",   "--model", s_model, "--data",      s_data, "--out",
                            out,       "--steps", "8",     "--batch",     "4",    "--seq",
                            "32",      "--lr",    "2e-3",  "--warmup",    "2",    "--threads",
                            "1",       NULL};
    size_t n = 0;
    while (args[n]) n++;
    for (size_t i = 0; extra && extra[i]; i++) args[n++] = extra[i];
    args[n] = NULL;
    return te_run(NULL, args);
}

/* The step lines of a run, as an array indexed by step (1-based); NULL holes. */
static json_t *s_steps(json_t *lines) {
    json_t *by = json_array();
    for (int i = 0; i <= 8; i++) json_array_append_new(by, json_null());
    size_t i;
    json_t *o;
    json_array_foreach(lines, i, o) {
        if (!json_object_get(o, "loss")) continue;
        json_int_t s = json_integer_value(json_object_get(o, "step"));
        if (s >= 1 && s <= 8) json_array_set(by, (size_t)s, o);
    }
    return by;
}

static int s_same_step(json_t *a, json_t *b) {
    const char *keys[] = {"loss", "lr", "grad_norm", "tokens"};
    for (int k = 0; k < 4; k++) {
        json_t *x = json_object_get(a, keys[k]), *y = json_object_get(b, keys[k]);
        if (!x || !y || json_number_value(x) != json_number_value(y)) {
            fprintf(stderr, "  %s: %.9g vs %.9g\n", keys[k], json_number_value(x),
                    json_number_value(y));
            return 0;
        }
    }
    return 1;
}

static void test_resume(void) {
    const char *extra_a[] = {"--checkpoint-dir", te_path("ckA"), "--checkpoint-every", "4",
                             "--eval-data",      s_held,        NULL};
    te_result a = s_train(te_path("outA"), extra_a);
    REQUIRE(a.code == 0);
    json_t *la = te_json_lines(a.out);
    REQUIRE(la);
    json_t *sa = s_steps(la);
    for (int s = 1; s <= 8; s++) CHECKF(json_is_object(json_array_get(sa, (size_t)s)), "step %d", s);
    /* the loss at initialisation is close to ln(V) (V = 512: 6.24) */
    double l1 = json_number_value(json_object_get(json_array_get(sa, 1), "loss"));
    CHECKF(l1 > 5.9 && l1 < 6.6, "first loss %g", l1);
    CHECK(access(te_path("ckA/ckpt-0000000004.fwckpt"), R_OK) == 0);
    CHECK(access(te_path("ckA/ckpt-0000000008.fwckpt"), R_OK) == 0);

    /* 1. resume from step 4 in a fresh process */
    const char *extra_b[] = {"--resume", te_path("ckA/ckpt-0000000004.fwckpt"), NULL};
    te_result b = s_train(te_path("outB"), extra_b);
    CHECKF(b.code == 0, "resume: %s", b.err);
    json_t *lb = te_json_lines(b.out);
    json_t *sb = lb ? s_steps(lb) : NULL;
    REQUIRE(sb);
    for (int s = 1; s <= 4; s++) CHECKF(json_is_null(json_array_get(sb, (size_t)s)), "step %d rerun", s);
    for (int s = 5; s <= 8; s++)
        CHECKF(s_same_step(json_array_get(sa, (size_t)s), json_array_get(sb, (size_t)s)),
               "step %d differs after resume", s);
    CHECK(te_param_maxdiff(te_path("outA"), te_path("outB")) == 0.0);

    /* 2. --resume auto: only the step-4 checkpoint in a fresh dir */
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s' '%s/'", te_path("ckC"),
             te_path("ckA/ckpt-0000000004.fwckpt"), te_path("ckC"));
    REQUIRE(system(cmd) == 0);
    const char *extra_c[] = {"--checkpoint-dir", te_path("ckC"), "--resume", "auto", NULL};
    te_result c = s_train(te_path("outC"), extra_c);
    CHECKF(c.code == 0, "resume auto: %s", c.err);
    json_t *lc = te_json_lines(c.out);
    json_t *sc = lc ? s_steps(lc) : NULL;
    REQUIRE(sc);
    CHECK(json_is_null(json_array_get(sc, 4)));
    CHECK(s_same_step(json_array_get(sa, 8), json_array_get(sc, 8)));
    CHECK(access(te_path("ckC/ckpt-0000000008.fwckpt"), R_OK) == 0);
    CHECK(te_param_maxdiff(te_path("outA"), te_path("outC")) == 0.0);
    /* auto with nothing to resume: a fresh run from step 1 */
    const char *extra_d[] = {"--checkpoint-dir", te_path("ckD"), "--resume", "auto", NULL};
    te_result d = s_train(te_path("outD"), extra_d);
    CHECKF(d.code == 0 && strstr(d.err, "starting fresh"), "auto fresh: %s", d.err);
    json_t *ld = te_json_lines(d.out);
    json_t *sd = ld ? s_steps(ld) : NULL;
    CHECK(sd && s_same_step(json_array_get(sa, 1), json_array_get(sd, 1)));
    CHECK(te_param_maxdiff(te_path("outA"), te_path("outD")) == 0.0);

    /* 3. save -> load: eval of the reloaded model == train's in-memory eval */
    json_t *ev = te_last_with(la, "eval_loss");
    REQUIRE(ev);
    te_result e = te_runv(NULL, "eval", "--model", te_path("outA"), "--data", s_held, "--batch",
                          "4", "--seq", "32", "--threads", "1", NULL);
    CHECKF(e.code == 0, "eval: %s", e.err);
    json_t *le = te_json_lines(e.out);
    json_t *res = le ? te_last_with(le, "loss") : NULL;
    REQUIRE(res);
    CHECKF(json_number_value(json_object_get(res, "loss")) ==
               json_number_value(json_object_get(ev, "eval_loss")),
           "reloaded %.9g, in memory %.9g", json_number_value(json_object_get(res, "loss")),
           json_number_value(json_object_get(ev, "eval_loss")));
    CHECK_EQ_INT(json_integer_value(json_object_get(res, "tokens")),
                 json_integer_value(json_object_get(ev, "eval_tokens")));

    /* 4. a checkpoint of another shape */
    te_write(te_path("cfg.json"), "{\"n_layer\": 1, \"n_head\": 2, \"n_embd\": 32, "
                                  "\"n_positions\": 32}");
    te_result ir = te_runv(NULL, "init", "--config", te_path("cfg.json"), "--tokenizer", s_tok,
                          "--out", te_path("other"), "--seed", "1", NULL);
    CHECK(ir.code == 0);
    te_result f = te_runv(NULL, "train", "--model", te_path("other"), "--data", s_data, "--out",
                          te_path("outF"), "--steps", "8", "--batch", "4", "--seq", "32",
                          "--resume", te_path("ckA/ckpt-0000000004.fwckpt"), NULL);
    CHECKF(f.code == 1 && strstr(f.err, "--resume") && f.out[0] == '\0', "mismatch: %d %s",
           f.code, f.err);
    /* resuming at or past --steps */
    te_result g = te_runv(NULL, "train", "--model", s_model, "--data", s_data, "--out",
                          te_path("outG"), "--steps", "4", "--batch", "4", "--seq", "32",
                          "--resume", te_path("ckA/ckpt-0000000004.fwckpt"), NULL);
    CHECKF(g.code == 1 && strstr(g.err, "not below --steps"), "past the end: %s", g.err);

    json_decref(la), json_decref(sa), json_decref(lb), json_decref(sb), json_decref(lc);
    json_decref(sc), json_decref(ld), json_decref(sd), json_decref(le);
    te_result_free(&a), te_result_free(&b), te_result_free(&c), te_result_free(&d);
    te_result_free(&e), te_result_free(&f), te_result_free(&g), te_result_free(&ir);
}

int main(int argc, char **argv) {
    te_init(argc, argv, "engine-resume");
    s_tok = strdup(te_path("tok"));
    s_model = strdup(te_path("model"));
    s_data = strdup(te_path("train.jsonl"));
    s_held = strdup(te_path("held.jsonl"));
    /* chapters 1-20 to train on, 134-135 held out */
    if (te_split_jsonl(fw_test_shared("corpora/moby-dick.jsonl"), 20, s_data, NULL) != 0 ||
        te_split_jsonl(fw_test_shared("corpora/moby-dick.jsonl"), 133, te_path("skip"),
                       s_held) != 0) {
        fprintf(stderr, "cannot read the Moby-Dick corpus\n");
        return 1;
    }
    te_result r = te_runv(NULL, "tokenizer-train", "--vocab-size", "512", "--data", s_data,
                          "--out", s_tok, NULL);
    te_result m = te_runv(NULL, "init", "--config", "tiny", "--tokenizer", s_tok, "--out",
                          s_model, "--seed", "7", NULL);
    if (r.code != 0 || m.code != 0) {
        fprintf(stderr, "setup failed: %s%s\n", r.err, m.err);
        return 1;
    }
    te_result_free(&r), te_result_free(&m);
    RUN(test_resume);
    te_cleanup();
    return fw_test_summary();
}
