/* test_engine_cli.c - flywheel-engine's edges through the real binary: help,
 * usage errors, every bad input the issue lists (empty dataset, too many bad
 * lines, invalid UTF-8, truncated safetensors, config not matching the
 * weights, prompt longer than the context), and the small verbs (init,
 * tokenizer-train, tokenize, prepare) against the library.
 *
 * Each bad input must exit non-zero WITHOUT a signal, print nothing on
 * stdout, and name the problem (file, line, field) on stderr. */
#include "test_engine_util.h"

#include "data.h"
#include "engine.h"
#include "fw_test.h"
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *s_corpus; /* 20 Moby-Dick chapters */

/* A failing run: exit `code`, empty stdout, every needle in stderr. */
#define CHECK_FAILS(res, want_code, ...)                                                         \
    do {                                                                                       \
        const char *needles_[] = {__VA_ARGS__, NULL};                                          \
        CHECKF((res).code == (want_code), "exit %d, want %d; stderr: %s", (res).code,          \
               (want_code), (res).err);                                                        \
        CHECKF((res).out[0] == '\0', "stdout not empty: %s", (res).out);                       \
        for (int i_ = 0; needles_[i_]; i_++)                                                   \
            CHECKF(strstr((res).err, needles_[i_]) != NULL, "stderr lacks \"%s\": %s",         \
                   needles_[i_], (res).err);                                                   \
    } while (0)

static void test_help(void) {
    te_result r = te_runv(NULL, "--help", NULL);
    CHECK_EQ_INT(r.code, 0);
    const char *verbs[] = {"init", "tokenizer-train", "tokenize", "prepare", "train",
                           "eval", "embed", "generate"};
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        CHECKF(strstr(r.out, verbs[i]) != NULL, "top-level help lacks %s", verbs[i]);
        te_result v = te_runv(NULL, verbs[i], "--help", NULL);
        CHECK_EQ_INT(v.code, 0);
        CHECKF(strstr(v.out, "usage: flywheel-engine") && strstr(v.out, verbs[i]) &&
                   strstr(v.out, "example:"),
               "%s --help: %s", verbs[i], v.out);
        te_result_free(&v);
    }
    te_result_free(&r);
    r = te_runv(NULL, "--help-markdown", NULL);
    CHECK(r.code == 0 && strstr(r.out, "### `train`") && strstr(r.out, "`--resume CKPT\\|auto`"));
    te_result_free(&r);
}

static void test_usage_errors(void) {
    te_result r = te_runv(NULL, "train", "--model", "m", "--frobnicate", "1", NULL);
    CHECK_FAILS(r, 2, "unknown option --frobnicate");
    te_result_free(&r);
    r = te_runv(NULL, "train", "--model", "m", "--data", "d", "--steps", "3", "--batch", "1",
                "--seq", "8", NULL);
    CHECK_FAILS(r, 2, "missing required option --out");
    te_result_free(&r);
    r = te_runv(NULL, "eval", "--model", "m", "--data", "d", "--batch", "many", NULL);
    CHECK_FAILS(r, 2, "--batch", "not an integer");
    te_result_free(&r);
    r = te_runv(NULL, "eval", "--model", "m", "--data", "d", "--batch", "0", NULL);
    CHECK_FAILS(r, 2, "--batch", "out of range");
    te_result_free(&r);
    r = te_runv(NULL, "eval", "--model", NULL);
    CHECK_FAILS(r, 2, "--model needs a value");
    te_result_free(&r);
    r = te_runv(NULL, "eval", "stray", NULL);
    CHECK_FAILS(r, 2, "unexpected argument \"stray\"");
    te_result_free(&r);
    r = te_runv(NULL, "fly", NULL);
    CHECK_FAILS(r, 2, "unknown verb \"fly\"");
    te_result_free(&r);
    r = te_runv(NULL, "generate", "--model", "m", NULL);
    CHECK_FAILS(r, 2, "--prompt", "--prompts");
    te_result_free(&r);
    r = te_runv(NULL, "train", "--model", "m", "--data", "d", "--out", "o", "--steps", "3",
                "--batch", "1", "--seq", "8", "--world-size", "2", NULL);
    CHECK_FAILS(r, 2, "--rendezvous");
    te_result_free(&r);
}

/* tokenizer-train -> tokenize -> the same ids as the library; prepare's
 * report against fw_data_tokenize's. */
static void test_small_verbs(void) {
    te_result r = te_runv(NULL, "tokenizer-train", "--vocab-size", "400", "--data", s_corpus,
                          "--out", te_path("tok"), NULL);
    REQUIRE(r.code == 0);
    json_t *lines = te_json_lines(r.out);
    REQUIRE(lines && json_array_size(lines) == 1);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(lines, 0), "vocab_size")), 400);
    json_decref(lines);
    te_result_free(&r);

    fw_tokenizer *tok = fw_tokenizer_load(te_path("tok"));
    REQUIRE(tok);
    CHECK_EQ_INT(fw_tokenizer_vocab_size(tok), 400);
    const char *texts[] = {"Call me Ishmael.", "naïve café — “quoted” 🐋", "  spaces\tand\nlines "};
    char in[4096] = "";
    for (int i = 0; i < 3; i++) {
        json_t *o = json_pack("{s:s}", "text", texts[i]);
        char *s = json_dumps(o, JSON_COMPACT);
        strcat(in, s);
        strcat(in, i == 1 ? "\n\n" : "\n"); /* a blank line is skipped */
        free(s);
        json_decref(o);
    }
    REQUIRE(te_write(te_path("in.jsonl"), in) == 0);
    r = te_runv(te_path("in.jsonl"), "tokenize", "--tokenizer", te_path("tok"), NULL);
    CHECK_EQ_INT(r.code, 0);
    lines = te_json_lines(r.out);
    REQUIRE(lines && json_array_size(lines) == 3);
    for (int i = 0; i < 3; i++) {
        int32_t *ids;
        size_t n;
        REQUIRE(fw_tokenizer_encode(tok, texts[i], strlen(texts[i]), &ids, &n) == 0);
        json_t *got = json_object_get(json_array_get(lines, (size_t)i), "ids");
        CHECK_EQ_INT(json_array_size(got), n);
        int same = json_array_size(got) == n;
        for (size_t k = 0; same && k < n; k++)
            same = json_integer_value(json_array_get(got, k)) == ids[k];
        CHECKF(same, "tokenize line %d differs from fw_tokenizer_encode", i);
        free(ids);
    }
    json_decref(lines);
    te_result_free(&r);

    /* prepare: 1 bad line of 40 is within --max-bad-fraction 0.05 */
    char *body = te_read(s_corpus, NULL);
    REQUIRE(body);
    FILE *f = fopen(te_path("mixed.jsonl"), "w");
    for (int i = 0; i < 39; i++) fprintf(f, "{\"text\": \"line %d of the data\"}\n", i);
    fprintf(f, "{\"text\": 7}\n");
    fclose(f);
    free(body);
    r = te_runv(NULL, "prepare", "--tokenizer", te_path("tok"), "--data", te_path("mixed.jsonl"),
                "--out", te_path("mixed.shard"), "--max-bad-fraction", "0.05", NULL);
    CHECKF(r.code == 0, "prepare: %s", r.err);
    lines = te_json_lines(r.out);
    json_t *rep = lines ? json_array_get(lines, 0) : NULL;
    CHECK(rep && json_integer_value(json_object_get(rep, "accepted")) == 39);
    CHECK(rep && json_integer_value(json_object_get(rep, "rejected")) == 1);
    json_t *bad = rep ? json_array_get(json_object_get(rep, "bad"), 0) : NULL;
    CHECK(bad && json_integer_value(json_object_get(bad, "line")) == 40);
    fw_shard *sh = fw_shard_open(te_path("mixed.shard"));
    CHECK(sh && rep && fw_shard_ntokens(sh) == (size_t)json_integer_value(json_object_get(rep, "tokens")));
    fw_shard_close(&sh);
    json_decref(lines);
    te_result_free(&r);

    /* init: vocabulary from the tokenizer, and from a FILE.json config */
    r = te_runv(NULL, "init", "--config", "tiny", "--tokenizer", te_path("tok"), "--out",
                te_path("tiny"), "--seed", "5", NULL);
    CHECKF(r.code == 0, "init: %s", r.err);
    te_result_free(&r);
    fw_model *m = fw_model_load_dir(te_path("tiny"), "cpu");
    REQUIRE(m);
    CHECK_EQ_INT(fw_model_config_get(m)->vocab_size, 400);
    CHECK_EQ_INT(fw_model_config_get(m)->n_layer, 2);
    fw_model_destroy(&m);
    CHECK(access(te_path("tiny/vocab.json"), R_OK) == 0 && access(te_path("tiny/merges.txt"), R_OK) == 0);
    /* same seed, same weights; another seed, others */
    r = te_runv(NULL, "init", "--config", "tiny", "--tokenizer", te_path("tok"), "--out",
                te_path("tiny2"), "--seed", "5", NULL);
    te_result_free(&r);
    r = te_runv(NULL, "init", "--config", "tiny", "--tokenizer", te_path("tok"), "--out",
                te_path("tiny3"), "--seed", "6", NULL);
    te_result_free(&r);
    CHECK(te_param_maxdiff(te_path("tiny"), te_path("tiny2")) == 0.0);
    CHECK(te_param_maxdiff(te_path("tiny"), te_path("tiny3")) > 0.0);

    te_write(te_path("cfg.json"), "{\"n_layer\": 1, \"n_head\": 2, \"n_embd\": 32, "
                                  "\"n_positions\": 16, \"vocab_size\": 450}");
    r = te_runv(NULL, "init", "--config", te_path("cfg.json"), "--tokenizer", te_path("tok"),
                "--out", te_path("custom"), "--seed", "1", NULL);
    CHECKF(r.code == 0, "init FILE.json: %s", r.err);
    te_result_free(&r);
    m = fw_model_load_dir(te_path("custom"), "cpu");
    CHECK(m && fw_model_config_get(m)->vocab_size == 450 && fw_model_config_get(m)->n_ctx == 16);
    fw_model_destroy(&m);
    te_write(te_path("cfg_bad.json"), "{\"n_layer\": 1, \"n_heads\": 2, \"n_embd\": 32, "
                                      "\"n_positions\": 16}");
    r = te_runv(NULL, "init", "--config", te_path("cfg_bad.json"), "--tokenizer", te_path("tok"),
                "--out", te_path("x"), "--seed", "1", NULL);
    CHECK_FAILS(r, 1, "cfg_bad.json", "unknown field \"n_heads\"");
    te_result_free(&r);
    r = te_runv(NULL, "init", "--config", "huge", "--tokenizer", te_path("tok"), "--out",
                te_path("x"), "--seed", "1", NULL);
    CHECK_FAILS(r, 1, "huge");
    te_result_free(&r);
    r = te_runv(NULL, "init", "--config", "tiny", "--tokenizer", te_path("tok"), "--out",
                te_path("x"), "--seed", "1", "--vocab-size", "300", NULL);
    CHECK_FAILS(r, 1, "400 tokens", "300");
    te_result_free(&r);
    fw_tokenizer_destroy(&tok);
}

static void test_bad_inputs(void) {
    char *tok = strdup(te_path("tok")), *model = strdup(te_path("tiny"));
    /* empty dataset: prepare, train, eval, embed */
    te_write(te_path("empty.jsonl"), "\n  \n");
    te_result r = te_runv(NULL, "prepare", "--tokenizer", tok, "--data", te_path("empty.jsonl"),
                          "--out", te_path("e.shard"), NULL);
    CHECK_FAILS(r, 1, "empty.jsonl", "no usable record");
    CHECK(access(te_path("e.shard"), F_OK) != 0);
    te_result_free(&r);
    r = te_runv(NULL, "train", "--model", model, "--data", te_path("empty.jsonl"), "--out",
                te_path("o"), "--steps", "1", "--batch", "1", "--seq", "8", "--threads", "1", NULL);
    CHECK_FAILS(r, 1, "empty.jsonl", "no usable record");
    te_result_free(&r);
    r = te_runv(NULL, "eval", "--model", model, "--data", te_path("empty.jsonl"), NULL);
    CHECK_FAILS(r, 1, "empty.jsonl", "no records");
    te_result_free(&r);
    r = te_runv(NULL, "embed", "--model", model, "--data", te_path("empty.jsonl"), "--out",
                te_path("e.emb"), NULL);
    CHECK_FAILS(r, 1, "no records");
    te_result_free(&r);

    /* too many bad lines: every bad line number reported */
    te_write(te_path("bad.jsonl"), "{\"text\": \"fine\"}\n{\"text\": \"fine too\"}\nnot json\n"
                                   "{\"text\": \"\"}\n{\"txt\": \"typo\"}\n{\"text\": \"ok\"}\n");
    r = te_runv(NULL, "prepare", "--tokenizer", tok, "--data", te_path("bad.jsonl"), "--out",
                te_path("b.shard"), NULL);
    CHECK_FAILS(r, 1, "3 of 6 lines rejected", "line 3", "line 4", "line 5", "empty text");
    te_result_free(&r);

    /* invalid UTF-8 in a record: line and byte */
    te_write(te_path("utf.jsonl"), "{\"text\": \"ok\"}\n{\"text\": \"bad \xC3\x28 byte\"}\n");
    r = te_runv(NULL, "eval", "--model", model, "--data", te_path("utf.jsonl"), NULL);
    CHECK_FAILS(r, 1, "utf.jsonl line 2", "invalid UTF-8 at byte 15");
    te_result_free(&r);
    r = te_runv(te_path("utf.jsonl"), "tokenize", "--tokenizer", tok, NULL);
    CHECK(r.code == 1 && strstr(r.err, "line 2: invalid UTF-8"));
    CHECKF(strstr(r.out, "\"ids\"") != NULL, "line 1 should have been tokenised: %s", r.out);
    te_result_free(&r);
    r = te_runv(NULL, "embed", "--model", model, "--data", te_path("utf.jsonl"), "--out",
                te_path("u.emb"), NULL);
    CHECK_FAILS(r, 1, "line 2", "invalid UTF-8");
    CHECK(access(te_path("u.emb"), F_OK) != 0);
    te_result_free(&r);

    /* truncated model.safetensors */
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && truncate -s -1000 '%s/model.safetensors'", model,
             te_path("trunc"), te_path("trunc"));
    REQUIRE(system(cmd) == 0);
    te_write(te_path("one.jsonl"), "{\"text\": \"Call me Ishmael.\"}\n");
    r = te_runv(NULL, "eval", "--model", te_path("trunc"), "--data", te_path("one.jsonl"), NULL);
    CHECK_FAILS(r, 1, "model.safetensors");
    te_result_free(&r);
    r = te_runv(NULL, "generate", "--model", te_path("trunc"), "--prompt", "x", NULL);
    CHECK_FAILS(r, 1, "model.safetensors");
    te_result_free(&r);

    /* config.json not matching the weights (n_embd halved) */
    snprintf(cmd, sizeof cmd,
             "cp -r '%s' '%s' && sed -i 's/\"n_embd\": *64/\"n_embd\": 32/' '%s/config.json'",
             model, te_path("lying"), te_path("lying"));
    REQUIRE(system(cmd) == 0);
    r = te_runv(NULL, "eval", "--model", te_path("lying"), "--data", te_path("one.jsonl"), NULL);
    CHECK_FAILS(r, 1, "lying", "shape");
    te_result_free(&r);
    /* no model at all */
    r = te_runv(NULL, "eval", "--model", te_path("nowhere"), "--data", te_path("one.jsonl"), NULL);
    CHECK_FAILS(r, 1, "nowhere");
    te_result_free(&r);

    /* prompt longer than the context (tiny: 64 positions) */
    char prompt[4096] = "";
    for (int i = 0; i < 80; i++) strcat(prompt, "whale ");
    r = te_runv(NULL, "generate", "--model", model, "--prompt", prompt, "--max-tokens", "2", NULL);
    CHECK_FAILS(r, 1, "longer than the model's context of 64");
    te_result_free(&r);
    json_t *o = json_pack("{s:s, s:s}", "prompt", prompt, "completion", " sea");
    char *line = json_dumps(o, JSON_COMPACT);
    char file[8192];
    snprintf(file, sizeof file, "{\"prompt\": \"short\", \"completion\": \" one\"}\n%s\n", line);
    te_write(te_path("long.jsonl"), file);
    free(line);
    json_decref(o);
    r = te_runv(NULL, "eval", "--model", model, "--data", te_path("long.jsonl"), NULL);
    CHECK_FAILS(r, 1, "long.jsonl line 2", "more than fit in a context of 64");
    te_result_free(&r);
    r = te_runv(NULL, "embed", "--model", model, "--data", te_path("long.jsonl"), "--out",
                te_path("l.emb"), NULL);
    CHECK_FAILS(r, 1, "line 1", "field \"text\" is missing");
    te_result_free(&r);
    /* a --seq longer than the context */
    r = te_runv(NULL, "train", "--model", model, "--data", te_path("one.jsonl"), "--out",
                te_path("o"), "--steps", "1", "--batch", "1", "--seq", "65", NULL);
    CHECK_FAILS(r, 1, "--seq 65", "context 64");
    te_result_free(&r);
    /* a mixed-kind eval set */
    te_write(te_path("mixed_kind.jsonl"),
             "{\"text\": \"a\"}\n{\"prompt\": \"b\", \"choices\": [\" c\", \" d\"], \"answer\": 0}\n");
    r = te_runv(NULL, "eval", "--model", model, "--data", te_path("mixed_kind.jsonl"), NULL);
    CHECK_FAILS(r, 1, "line 2", "choice record in a text dataset");
    te_result_free(&r);
    te_write(te_path("mc_bad.jsonl"),
             "{\"prompt\": \"b\", \"choices\": [\" c\", \" d\"], \"answer\": 2}\n");
    r = te_runv(NULL, "eval", "--model", model, "--data", te_path("mc_bad.jsonl"), NULL);
    CHECK_FAILS(r, 1, "line 1", "\"answer\"");
    te_result_free(&r);
    /* a resume file that is not a checkpoint */
    r = te_runv(NULL, "train", "--model", model, "--data", te_path("one.jsonl"), "--out",
                te_path("o"), "--steps", "1", "--batch", "1", "--seq", "4", "--resume",
                te_path("one.jsonl"), NULL);
    CHECK_FAILS(r, 1, "--resume");
    te_result_free(&r);
    free(tok), free(model);
}

int main(int argc, char **argv) {
    te_init(argc, argv, "engine-cli");
    s_corpus = te_path("corpus.jsonl");
    if (te_split_jsonl(fw_test_shared("corpora/moby-dick.jsonl"), 20, s_corpus, NULL) != 0) {
        fprintf(stderr, "cannot read the Moby-Dick corpus\n");
        return 1;
    }
    RUN(test_help);
    RUN(test_usage_errors);
    RUN(test_small_verbs);
    RUN(test_bad_inputs);
    te_cleanup();
    return fw_test_summary();
}
