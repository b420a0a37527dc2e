/* test_engine_generate.c - generation, exact match, multiple choice and
 * embeddings through the real binary, on a tiny model overfit on six facts
 * ("The captain of the ship is" -> " Ahab.") so every expected answer is
 * known by construction:
 *
 *   eval (completion)  exact match 6/6 on the facts; a record whose
 *                      reference is wrong scores 0 and is named in the
 *                      per-example file
 *   eval (choice)      accuracy and accuracy_norm 1 with the right answers;
 *                      a wrong answer label costs exactly that record
 *   generate           greedy gives the fact and stops at <|endoftext|>;
 *                      greedy and seeded sampling are deterministic; --stop
 *                      cuts before the stop string; --max-tokens bounds;
 *                      --stream's deltas concatenate to the final text;
 *                      --prompts gives one result per line
 *   embed              FWEMBED header, row ids = line numbers, unit norms,
 *                      batched == one at a time, equal texts -> equal rows */
#include "test_engine_util.h"

#include "fw_test.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_model;

static const char *const s_facts[6][2] = {
    {"The capital of France is", " Paris."},
    {"The whale in the book is", " white."},
    {"The captain of the ship is", " Ahab."},
    {"The sea in the story is", " deep."},
    {"The name of the narrator is", " Ishmael."},
    {"The harpooner from the island is", " Queequeg."},
};

static json_t *s_one(const te_result *r, const char *key) {
    json_t *lines = te_json_lines(r->out);
    json_t *o = lines ? te_last_with(lines, key) : NULL;
    if (o) json_incref(o);
    json_decref(lines);
    return o;
}

static te_result s_gen(const char *prompt, const char *const *extra) {
    const char *args[40] = {"generate", "--model", s_model, "--prompt", prompt, "--threads", "1",
                            NULL};
    size_t n = 7;
    for (size_t i = 0; extra && extra[i]; i++) args[n++] = extra[i];
    args[n] = NULL;
    return te_run(NULL, args);
}

static void test_eval_completion(void) {
    FILE *f = fopen(te_path("facts.jsonl"), "w");
    for (int i = 0; i < 6; i++) {
        json_t *o = json_pack("{s:s, s:s}", "prompt", s_facts[i][0], "completion", s_facts[i][1]);
        json_dumpf(o, f, JSON_COMPACT);
        fputc('\n', f);
        json_decref(o);
    }
    /* line 7: a reference the model was never taught */
    fprintf(f, "{\"prompt\": \"The capital of France is\", \"completion\": \" Rome.\"}\n");
    fclose(f);
    te_result r = te_runv(NULL, "eval", "--model", s_model, "--data", te_path("facts.jsonl"),
                          "--per-example", te_path("pe.jsonl"), "--threads", "1", NULL);
    CHECKF(r.code == 0, "eval: %s", r.err);
    json_t *res = s_one(&r, "exact_match");
    REQUIRE(res);
    CHECK_EQ_STR(json_string_value(json_object_get(res, "kind")), "completion");
    CHECK_EQ_INT(json_integer_value(json_object_get(res, "records")), 7);
    CHECK_EQ_INT(json_integer_value(json_object_get(res, "exact_matches")), 6);
    CHECK_NEAR(json_number_value(json_object_get(res, "exact_match")), 6.0 / 7.0, 1e-9);
    char *pe = te_read(te_path("pe.jsonl"), NULL);
    json_t *pl = pe ? te_json_lines(pe) : NULL;
    REQUIRE(pl && json_array_size(pl) == 7);
    for (size_t i = 0; i < 7; i++) {
        json_t *o = json_array_get(pl, i);
        CHECK_EQ_INT(json_integer_value(json_object_get(o, "index")), i);
        CHECK_EQ_INT(json_integer_value(json_object_get(o, "line")), i + 1);
        CHECK_EQ_INT(json_integer_value(json_object_get(o, "exact_match")), i < 6);
    }
    /* the wrong reference has a much higher loss than the taught ones */
    CHECK(json_number_value(json_object_get(json_array_get(pl, 6), "loss")) >
          5 * json_number_value(json_object_get(json_array_get(pl, 0), "loss")));
    json_decref(pl);
    free(pe);
    json_decref(res);
    te_result_free(&r);
}

static void test_eval_choice(void) {
    FILE *f = fopen(te_path("mc.jsonl"), "w");
    const char *choices[] = {" Paris.", " white.", " Ahab.", " deep.", " Ishmael.", " Queequeg."};
    for (int i = 0; i < 6; i++) {
        /* the right choice at position i % 3 among 3 */
        const char *c[3] = {choices[(i + 1) % 6], choices[(i + 2) % 6], choices[(i + 3) % 6]};
        c[i % 3] = choices[i];
        /* record 5 states its answer as text, the others as an index */
        json_t *ans = i == 5 ? json_string(choices[i]) : json_integer(i % 3);
        json_t *o = json_pack("{s:s, s:[s,s,s], s:o}", "prompt", s_facts[i][0], "choices", c[0],
                              c[1], c[2], "answer", ans);
        json_dumpf(o, f, JSON_COMPACT);
        fputc('\n', f);
        json_decref(o);
    }
    /* a mislabelled record: the model's pick (index 0) is not the "answer" */
    fprintf(f, "{\"prompt\": \"The captain of the ship is\", \"choices\": [\" Ahab.\", \" Paris.\"],"
               " \"answer\": 1}\n");
    fclose(f);
    te_result r = te_runv(NULL, "eval", "--model", s_model, "--data", te_path("mc.jsonl"),
                          "--per-example", te_path("mc_pe.jsonl"), "--threads", "1", NULL);
    CHECKF(r.code == 0, "eval: %s", r.err);
    json_t *res = s_one(&r, "accuracy");
    REQUIRE(res);
    CHECK_EQ_STR(json_string_value(json_object_get(res, "kind")), "choice");
    CHECK_EQ_INT(json_integer_value(json_object_get(res, "correct")), 6);
    CHECK_EQ_INT(json_integer_value(json_object_get(res, "correct_norm")), 6);
    CHECK_NEAR(json_number_value(json_object_get(res, "accuracy")), 6.0 / 7.0, 1e-9);
    char *pe = te_read(te_path("mc_pe.jsonl"), NULL);
    json_t *pl = pe ? te_json_lines(pe) : NULL;
    REQUIRE(pl && json_array_size(pl) == 7);
    for (size_t i = 0; i < 6; i++)
        CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(pl, i), "pred")), i % 3);
    json_t *last = json_array_get(pl, 6);
    CHECK_EQ_INT(json_integer_value(json_object_get(last, "pred")), 0);
    CHECK_EQ_INT(json_integer_value(json_object_get(last, "correct")), 0);
    CHECK_EQ_INT(json_array_size(json_object_get(last, "logprobs")), 2);
    json_decref(pl);
    free(pe);
    json_decref(res);
    te_result_free(&r);
}

static void test_generate(void) {
    const char *greedy[] = {"--temperature", "0", "--max-tokens", "20", NULL};
    te_result a = s_gen(s_facts[2][0], greedy), b = s_gen(s_facts[2][0], greedy);
    CHECKF(a.code == 0, "generate: %s", a.err);
    json_t *ra = s_one(&a, "finish_reason"), *rb = s_one(&b, "finish_reason");
    REQUIRE(ra && rb);
    CHECK_EQ_STR(json_string_value(json_object_get(ra, "text")), " Ahab.");
    CHECK_EQ_STR(json_string_value(json_object_get(ra, "finish_reason")), "stop");
    CHECK(json_equal(json_object_get(ra, "ids"), json_object_get(rb, "ids")));
    size_t ntok = json_array_size(json_object_get(ra, "ids"));
    CHECK_EQ_INT(json_integer_value(json_object_get(ra, "tokens")), ntok);

    /* --stop: cut before the stop string, which is not part of the text */
    const char *stop[] = {"--temperature", "0", "--stop", "b.", "--stop", "zzz", NULL};
    te_result s = s_gen(s_facts[2][0], stop);
    json_t *rs = s_one(&s, "finish_reason");
    REQUIRE(rs);
    CHECK_EQ_STR(json_string_value(json_object_get(rs, "text")), " Aha");
    CHECK_EQ_STR(json_string_value(json_object_get(rs, "finish_reason")), "stop");

    /* --max-tokens bounds the output */
    const char *two[] = {"--temperature", "0", "--max-tokens", "2", NULL};
    te_result m = s_gen(s_facts[4][0], two);
    json_t *rm = s_one(&m, "finish_reason");
    REQUIRE(rm);
    CHECK_EQ_INT(json_integer_value(json_object_get(rm, "tokens")), 2);
    CHECK_EQ_STR(json_string_value(json_object_get(rm, "finish_reason")), "length");
    CHECK(strncmp(" Ishmael.", json_string_value(json_object_get(rm, "text")),
                  strlen(json_string_value(json_object_get(rm, "text")))) == 0);

    /* --stream: one line per token, deltas concatenate to the final text,
     * and the held-back stop string never reaches the stream */
    const char *st[] = {"--temperature", "0", "--stream", "--stop", "l.", NULL};
    te_result t = s_gen(s_facts[4][0], st);
    json_t *lines = te_json_lines(t.out);
    REQUIRE(lines && json_array_size(lines) >= 2);
    json_t *fin = json_array_get(lines, json_array_size(lines) - 1);
    char cat[256] = "";
    size_t ntoklines = json_array_size(lines) - 1;
    for (size_t i = 0; i < ntoklines; i++) {
        json_t *o = json_array_get(lines, i);
        CHECK(json_is_integer(json_object_get(o, "token")));
        strncat(cat, json_string_value(json_object_get(o, "text")), sizeof cat - strlen(cat) - 1);
    }
    CHECK_EQ_STR(cat, json_string_value(json_object_get(fin, "text")));
    CHECK_EQ_STR(cat, " Ishmae");
    CHECK_EQ_INT(json_integer_value(json_object_get(fin, "tokens")), ntoklines);

    /* seeded sampling is deterministic */
    const char *samp[] = {"--temperature", "1.5", "--top-k", "50", "--top-p", "0.95", "--seed",
                          "9", "--max-tokens", "12", NULL};
    te_result x = s_gen("The", samp), y = s_gen("The", samp);
    json_t *rx = s_one(&x, "ids"), *ry = s_one(&y, "ids");
    CHECK(rx && ry && json_equal(json_object_get(rx, "ids"), json_object_get(ry, "ids")));

    /* --prompts: one result per record, in order, each its fact */
    FILE *f = fopen(te_path("prompts.jsonl"), "w");
    for (int i = 0; i < 3; i++) fprintf(f, "{\"prompt\": \"%s\"}\n", s_facts[i][0]);
    fclose(f);
    te_result p = te_runv(NULL, "generate", "--model", s_model, "--prompts",
                          te_path("prompts.jsonl"), "--temperature", "0", "--threads", "1", NULL);
    json_t *pl = te_json_lines(p.out);
    REQUIRE(pl && json_array_size(pl) == 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *o = json_array_get(pl, i);
        CHECK_EQ_INT(json_integer_value(json_object_get(o, "index")), i);
        CHECK_EQ_STR(json_string_value(json_object_get(o, "text")), s_facts[i][1]);
    }

    json_decref(ra), json_decref(rb), json_decref(rs), json_decref(rm), json_decref(lines);
    json_decref(rx), json_decref(ry), json_decref(pl);
    te_result_free(&a), te_result_free(&b), te_result_free(&s), te_result_free(&m);
    te_result_free(&t), te_result_free(&x), te_result_free(&y), te_result_free(&p);
}

static uint64_t s_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int s_embed(const char *data, const char *out, const char *batch, size_t *len,
                   unsigned char **buf) {
    te_result r = te_runv(NULL, "embed", "--model", s_model, "--data", data, "--out", out,
                          "--batch", batch, "--threads", "1", NULL);
    int code = r.code;
    if (code) fprintf(stderr, "embed: %s\n", r.err);
    te_result_free(&r);
    *buf = (unsigned char *)te_read(out, len);
    return code;
}

static void test_embed(void) {
    te_write(te_path("emb.jsonl"), "{\"text\": \"The captain of the ship is Ahab.\"}\n\n"
                                   "{\"text\": \"Call me Ishmael.\", \"id\": \"x\"}\n"
                                   "{\"text\": \"A\"}\n"
                                   "{\"text\": \"The captain of the ship is Ahab.\"}\n");
    size_t len, len1;
    unsigned char *m, *m1;
    REQUIRE(s_embed(te_path("emb.jsonl"), te_path("e4.fwembed"), "4", &len, &m) == 0 && m);
    REQUIRE(s_embed(te_path("emb.jsonl"), te_path("e1.fwembed"), "1", &len1, &m1) == 0 && m1);
    REQUIRE(len >= 32);
    CHECK(memcmp(m, "FWEMBED\0", 8) == 0);
    uint32_t version, dim;
    memcpy(&version, m + 8, 4);
    memcpy(&dim, m + 12, 4);
    uint64_t rows = s_u64(m + 16), data_off = s_u64(m + 24);
    CHECK_EQ_INT(version, 1);
    CHECK_EQ_INT(dim, 64);
    CHECK_EQ_INT(rows, 4);
    CHECK_EQ_INT(data_off, 32 + 8 * 4);
    REQUIRE(len == data_off + rows * dim * 4 && len1 == len);
    const uint64_t want_ids[4] = {1, 3, 4, 5}; /* line numbers; line 2 is blank */
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(s_u64(m + 32 + 8 * i), want_ids[i]);
    const float *v = (const float *)(m + data_off), *v1 = (const float *)(m1 + data_off);
    double maxd = 0;
    for (uint64_t r = 0; r < rows; r++) {
        double n2 = 0;
        for (uint32_t k = 0; k < dim; k++) {
            n2 += (double)v[r * dim + k] * v[r * dim + k];
            double d = fabs((double)v[r * dim + k] - v1[r * dim + k]);
            if (d > maxd) maxd = d;
        }
        CHECK_NEAR(sqrt(n2), 1.0, 1e-5);
    }
    CHECKF(maxd < 1e-5, "batched vs alone differ by %g", maxd);
    double same = 0, other = 0;
    for (uint32_t k = 0; k < dim; k++) {
        same = fmax(same, fabs((double)v[k] - v[3 * dim + k]));
        other = fmax(other, fabs((double)v[k] - v[dim + k]));
    }
    CHECK(same < 1e-6);
    CHECK(other > 1e-3);
    free(m), free(m1);
}

int main(int argc, char **argv) {
    te_init(argc, argv, "engine-generate");
    s_model = strdup(te_path("model"));
    /* Each fact 40 times, in shuffled order, so every fact appears at many
     * offsets of the training windows (some windows cut a fact in two). */
    FILE *f = fopen(te_path("train.jsonl"), "w");
    uint64_t rs = 12345;
    for (int rep = 0; rep < 40; rep++) {
        int order[6] = {0, 1, 2, 3, 4, 5};
        for (int i = 5; i > 0; i--) {
            int j = (int)(fw_test_rand(&rs) % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j], order[j] = t;
        }
        for (int i = 0; i < 6; i++)
            fprintf(f, "{\"prompt\": \"%s\", \"completion\": \"%s\"}\n", s_facts[order[i]][0],
                    s_facts[order[i]][1]);
    }
    fclose(f);
    te_split_jsonl(fw_test_shared("corpora/moby-dick.jsonl"), 10, te_path("corpus.jsonl"),
                   NULL);
    te_result t = te_runv(NULL, "tokenizer-train", "--vocab-size", "512", "--data",
                          te_path("corpus.jsonl"), "--out", te_path("tok"), NULL);
    te_result i = te_runv(NULL, "init", "--config", "tiny", "--tokenizer", te_path("tok"), "--out",
                          te_path("init"), "--seed", "3", NULL);
    te_result tr = te_runv(NULL, "train", "--model", te_path("init"), "--data",
                           te_path("train.jsonl"), "--out", s_model, "--steps", "150", "--batch",
                           "8", "--seq", "32", "--lr", "3e-3", "--warmup", "10", "--threads", "1",
                           NULL);
    if (t.code || i.code || tr.code) {
        fprintf(stderr, "setup failed: %s%s%s\n", t.err, i.err, tr.err);
        return 1;
    }
    te_result_free(&t), te_result_free(&i), te_result_free(&tr);
    RUN(test_eval_completion);
    RUN(test_eval_choice);
    RUN(test_generate);
    RUN(test_embed);
    te_cleanup();
    return fw_test_summary();
}
