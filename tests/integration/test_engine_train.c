/* test_engine_train.c - the engine learns: a small model trained through
 * the real binary for 300 steps on Moby-Dick beats the unigram baseline on
 * held-out chapters by a wide margin.
 *
 * Setup: chapters 1-120 train, 131-135 held out (never seen by the
 * tokenizer or the model). tokenizer-train learns a 512-token BPE on the
 * training chapters; init makes a 2-layer, 4-head, 128-wide model with a
 * 64-token context from a FILE.json config; train runs 300 steps of 8 x 64
 * tokens on one thread and scores the held-out file at the end.
 *
 * Baseline: the cross-entropy of the held-out targets (every token of a
 * record but the first, as the eval scores them, <|endoftext|> included)
 * under the training set's unigram frequencies with add-one smoothing --
 * what a model that ignores context can at best do. The trained model must
 * be at least 0.5 nats below it (it lands near 0.7 below; a model that
 * learned nothing sits at ln 512 = 6.24, above the baseline of ~5.24). */
#include "test_engine_util.h"

#include "data.h"
#include "fw_test.h"
#include "tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Unigram cross-entropy of held's targets under train's counts. */
static double s_unigram_baseline(const char *tok_dir, const char *train, const char *held,
                                 size_t *ntargets) {
    fw_tokenizer *tok = fw_tokenizer_load(tok_dir);
    if (!tok) return NAN;
    int V = fw_tokenizer_vocab_size(tok);
    double *count = calloc((size_t)V, sizeof *count);
    double total = 0, nll = 0;
    *ntargets = 0;
    const char *files[2] = {train, held};
    for (int pass = 0; pass < 2; pass++) {
        FILE *f = fopen(files[pass], "rb");
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while (f && (n = getline(&line, &cap, f)) > 0) {
            while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
            if (!n) continue;
            int32_t *ids;
            uint8_t *mask;
            size_t nt;
            if (fw_data_tokenize_record(line, (size_t)n, tok, &ids, &mask, &nt) != 0) continue;
            for (size_t i = 0; i < nt; i++) {
                if (pass == 0) {
                    count[ids[i]] += 1, total += 1;
                } else if (i > 0) {
                    nll -= log((count[ids[i]] + 1.0) / (total + V));
                    (*ntargets)++;
                }
            }
            free(ids), free(mask);
        }
        free(line);
        if (f) fclose(f);
    }
    free(count);
    fw_tokenizer_destroy(&tok);
    return *ntargets ? nll / (double)*ntargets : NAN;
}

static void test_moby(void) {
    const char *corpus = fw_test_shared("corpora/moby-dick.jsonl");
    char *train = strdup(te_path("train.jsonl")), *held = strdup(te_path("held.jsonl"));
    REQUIRE(te_split_jsonl(corpus, 120, train, te_path("rest.jsonl")) == 0);
    REQUIRE(te_split_jsonl(te_path("rest.jsonl"), 10, te_path("unused.jsonl"), held) == 0);

    te_result r = te_runv(NULL, "tokenizer-train", "--vocab-size", "512", "--data", train, "--out",
                          te_path("tok"), NULL);
    REQUIRE(r.code == 0);
    te_result_free(&r);
    te_write(te_path("config.json"),
             "{\"n_layer\": 2, \"n_head\": 4, \"n_embd\": 128, \"n_positions\": 64}");
    r = te_runv(NULL, "init", "--config", te_path("config.json"), "--tokenizer", te_path("tok"),
                "--out", te_path("init"), "--seed", "1", NULL);
    REQUIRE(r.code == 0);
    te_result_free(&r);

    te_result t = te_runv(NULL, "train", "--model", te_path("init"), "--data", train,
                          "--eval-data", held, "--out", te_path("trained"), "--steps", "300",
                          "--batch", "8", "--seq", "64", "--lr", "3e-3", "--warmup", "20",
                          "--threads", "1", NULL);
    CHECKF(t.code == 0, "train: %s", t.err);
    json_t *lines = te_json_lines(t.out);
    REQUIRE(lines);
    json_t *first = json_array_get(lines, 0), *ev = te_last_with(lines, "eval_loss");
    json_t *done = te_last_with(lines, "done");
    REQUIRE(first && ev && done);
    double l0 = json_number_value(json_object_get(first, "loss"));
    double eval = json_number_value(json_object_get(ev, "eval_loss"));
    size_t nt = 0;
    double base = s_unigram_baseline(te_path("tok"), train, held, &nt);
    fprintf(stderr, "first loss %.4f (ln 512 = %.4f), held-out loss %.4f, unigram baseline %.4f "
                    "over %zu tokens, %.1f s\n",
            l0, log(512.0), eval, base, nt, json_number_value(json_object_get(done, "seconds")));
    CHECK_NEAR(l0, log(512.0), 0.3);
    CHECK_EQ_INT(json_integer_value(json_object_get(ev, "eval_tokens")), nt);
    CHECKF(eval < base - 0.5, "held-out loss %.4f is not well below the unigram baseline %.4f", eval,
           base);
    /* every step line has the documented fields, and steps count 1..300 */
    size_t nsteps = 0;
    size_t i;
    json_t *o;
    json_array_foreach(lines, i, o) {
        if (!json_object_get(o, "loss")) continue;
        nsteps++;
        CHECK(json_integer_value(json_object_get(o, "step")) == (json_int_t)nsteps);
        CHECK(json_is_number(json_object_get(o, "lr")) && json_is_number(json_object_get(o, "grad_norm")) &&
              json_number_value(json_object_get(o, "tokens_per_s")) > 0);
    }
    CHECK_EQ_INT(nsteps, 300);
    json_decref(lines);
    te_result_free(&t);
    free(train), free(held);
}

int main(int argc, char **argv) {
    te_init(argc, argv, "engine-train");
    RUN(test_moby);
    te_cleanup();
    return fw_test_summary();
}
