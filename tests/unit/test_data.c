/* JSONL records -> tokens + loss mask -> shards, with the real GPT-2
 * tokenizer from the shared fixtures.
 *
 * Proves: each record shape gives exactly the documented token sequence
 * (pieces encoded separately, EOT appended) and mask; extra keys are
 * ignored; every kind of bad record is rejected with its reason; a file
 * tokenises into a shard whose documents equal the per-record results, with
 * bad lines reported by 1-based line number (blank lines counted, not
 * judged); too many bad lines, an all-bad or empty file and a missing file
 * fail cleanly, leave no shard and no .new behind and never touch an
 * existing shard; a real corpus (Moby-Dick) round-trips through
 * tokenize -> shard -> loader -> decode. */
#include "data.h"
#include "fw_err.h"
#include "fw_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static fw_tokenizer *g_tok;
static char *g_dir;
static int g_eot;

/* Tokens and mask of one record, as a test builds them from the rules. */
typedef struct {
    int32_t ids[512];
    uint8_t mask[512];
    size_t n;
} expect;

static void s_add(expect *e, const char *text, uint8_t m) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (fw_tokenizer_encode(g_tok, text, strlen(text), &ids, &n) != 0) return;
    for (size_t i = 0; i < n && e->n < 512; i++) e->ids[e->n] = ids[i], e->mask[e->n++] = m;
    free(ids);
}

static void s_add_eot(expect *e, uint8_t m) {
    e->ids[e->n] = g_eot, e->mask[e->n++] = m;
}

static void s_check_record(const char *json, const expect *e, const char *what) {
    int32_t *ids = NULL;
    uint8_t *mask = NULL;
    size_t n = 0;
    int rc = fw_data_tokenize_record(json, strlen(json), g_tok, &ids, &mask, &n);
    CHECKF(rc == 0, "%s: %s", what, fw_err_detail());
    CHECKF(n == e->n, "%s: %zu tokens, expected %zu", what, n, e->n);
    if (n == e->n && n) {
        CHECKF(memcmp(ids, e->ids, n * sizeof *ids) == 0, "%s: ids differ", what);
        CHECKF(memcmp(mask, e->mask, n) == 0, "%s: mask differs", what);
    }
    free(ids), free(mask);
}

static void test_shapes(void) {
    expect e = {0};
    s_add(&e, "Call me Ishmael.", 1);
    s_add_eot(&e, 1);
    s_check_record("{\"chapter\": 1, \"title\": \"Loomings.\", \"text\": \"Call me Ishmael.\"}", &e,
                   "text");

    memset(&e, 0, sizeof e);
    s_add(&e, "Q: two plus two?\nA:", 0);
    s_add(&e, " four", 1);
    s_add_eot(&e, 1);
    s_check_record("{\"prompt\": \"Q: two plus two?\\nA:\", \"completion\": \" four\", \"id\": 7}",
                   &e, "prompt/completion");

    memset(&e, 0, sizeof e);
    s_add(&e, "done", 1);
    s_add_eot(&e, 1);
    s_check_record("{\"prompt\": \"\", \"completion\": \"done\"}", &e, "empty prompt");

    memset(&e, 0, sizeof e);
    s_add(&e, "<|system|>\n", 0);
    s_add(&e, "Be brief.", 0);
    s_add(&e, "\n", 0);
    s_add(&e, "<|user|>\n", 0);
    s_add(&e, "Hi", 0);
    s_add(&e, "\n", 0);
    s_add(&e, "<|assistant|>\n", 0);
    s_add(&e, "Hello!", 1);
    s_add(&e, "\n", 1);
    s_add_eot(&e, 1);
    s_check_record("{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
                   " {\"role\": \"user\", \"content\": \"Hi\", \"name\": \"x\"},"
                   " {\"role\": \"assistant\", \"content\": \"Hello!\"}]}",
                   &e, "messages");

    /* Last turn not the assistant's: EOT carries no loss. */
    memset(&e, 0, sizeof e);
    s_add(&e, "<|assistant|>\n", 0);
    s_add(&e, "Yes.", 1);
    s_add(&e, "\n", 1);
    s_add(&e, "<|user|>\n", 0);
    s_add(&e, "ok", 0);
    s_add(&e, "\n", 0);
    s_add_eot(&e, 0);
    s_check_record("{\"messages\": [{\"role\": \"assistant\", \"content\": \"Yes.\"},"
                   " {\"role\": \"user\", \"content\": \"ok\"}]}",
                   &e, "messages ending with user");

    /* The text "<|endoftext|>" is ordinary text: only one EOT id, at the end. */
    int32_t *ids = NULL;
    uint8_t *mask = NULL;
    size_t n = 0;
    const char *j = "{\"text\": \"a<|endoftext|>b\"}";
    REQUIRE(fw_data_tokenize_record(j, strlen(j), g_tok, &ids, &mask, &n) == 0);
    size_t eots = 0;
    for (size_t i = 0; i < n; i++) eots += ids[i] == g_eot;
    CHECK_EQ_INT(eots, 1);
    CHECK_EQ_INT(ids[n - 1], g_eot);
    free(ids), free(mask);
}

static void s_rejected(const char *json, size_t len, const char *needle) {
    int32_t *ids = (int32_t *)1;
    uint8_t *mask = (uint8_t *)1;
    size_t n = 99;
    fw_err_clear();
    int rc = fw_data_tokenize_record(json, len, g_tok, &ids, &mask, &n);
    CHECKF(rc == FW_EINVAL, "%.*s: rc %d", (int)len, json, rc);
    CHECK(ids == NULL && mask == NULL && n == 0);
    CHECKF(strstr(fw_err_detail(), needle) != NULL, "%.*s: detail \"%s\" lacks \"%s\"", (int)len,
           json, fw_err_detail(), needle);
}

#define REJ(lit, needle) s_rejected(lit, sizeof(lit) - 1, needle)

static void test_rejects(void) {
    REJ("{\"text\": \"abc\"", "invalid JSON");
    REJ("", "invalid JSON");
    REJ("[1, 2]", "not a JSON object");
    REJ("{\"title\": \"x\"}", "no \"text\"");
    REJ("{\"text\": 5}", "\"text\" is not a string");
    REJ("{\"text\": null}", "\"text\" is not a string");
    REJ("{\"text\": \"\"}", "empty text");
    REJ("{\"text\": \"a\", \"text\": \"b\"}", "duplicate");
    REJ("{\"prompt\": \"a\"}", "\"prompt\" without \"completion\"");
    REJ("{\"completion\": \"a\"}", "\"completion\" without \"prompt\"");
    REJ("{\"prompt\": 1, \"completion\": \"a\"}", "\"prompt\" is not a string");
    REJ("{\"prompt\": \"a\", \"completion\": \"\"}", "empty completion");
    REJ("{\"text\": \"a\", \"messages\": []}", "ambiguous");
    REJ("{\"text\": \"a\", \"prompt\": \"b\", \"completion\": \"c\"}", "ambiguous");
    REJ("{\"messages\": {}}", "not an array");
    REJ("{\"messages\": []}", "is empty");
    REJ("{\"messages\": [\"hi\"]}", "messages[0] is not an object");
    REJ("{\"messages\": [{\"content\": \"hi\"}]}", "messages[0].role is missing");
    REJ("{\"messages\": [{\"role\": \"user\"}]}", "messages[0].content is missing");
    REJ("{\"messages\": [{\"role\": \"user\", \"content\": 3}]}", "content is not a string");
    REJ("{\"messages\": [{\"role\": \"us er\", \"content\": \"x\"}]}", "role must be");
    REJ("{\"messages\": [{\"role\": \"\", \"content\": \"x\"}]}", "role must be");
    REJ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "no assistant turn");
    REJ("{\"text\": \"a\xff\"}", "invalid UTF-8 at byte 12");
    REJ("{\"text\": \"\xc0\xaf\"}", "invalid UTF-8");         /* overlong '/' */
    REJ("{\"text\": \"\xed\xa0\x80\"}", "invalid UTF-8");     /* surrogate */
    REJ("{\"text\": \"\xf4\x90\x80\x80\"}", "invalid UTF-8"); /* > U+10FFFF */
    REJ("{\"text\": \"\xe2\x82\"}", "invalid UTF-8");         /* truncated */
    REJ("{\"text\": \"a\\u0000b\"}", "invalid JSON");
    /* Valid multi-byte UTF-8 is fine. */
    const char *ok = "{\"text\": \"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x90\x8b\"}";
    int32_t *ids = NULL;
    uint8_t *mask = NULL;
    size_t n = 0;
    CHECKF(fw_data_tokenize_record(ok, strlen(ok), g_tok, &ids, &mask, &n) == 0, "%s",
           fw_err_detail());
    free(ids), free(mask);
}

static void s_write(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static int s_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_tokenize_file(void) {
    char src[600], dst[600];
    snprintf(src, sizeof src, "%s/a.jsonl", g_dir);
    snprintf(dst, sizeof dst, "%s/a.shard", g_dir);
    /* 150 good lines, blank lines, one bad line at (1-based) line 53. */
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    size_t lineno = 0, bad_at = 0;
    for (int i = 0; i < 150; i++) {
        if (i % 50 == 10) len += (size_t)snprintf(text + len, cap - len, "   \n"), lineno++;
        if (i == 50) {
            len += (size_t)snprintf(text + len, cap - len, "{\"text\": 3}\r\n");
            bad_at = ++lineno;
        }
        if (i % 3 == 0)
            len += (size_t)snprintf(text + len, cap - len, "{\"n\": %d, \"text\": \"line %d.\"}\n",
                                    i, i);
        else if (i % 3 == 1)
            len += (size_t)snprintf(text + len, cap - len,
                                    "{\"prompt\": \"p%d\", \"completion\": \" c%d\"}\n", i, i);
        else
            len += (size_t)snprintf(text + len, cap - len,
                                    "{\"messages\": [{\"role\": \"user\", \"content\": \"u%d\"}, "
                                    "{\"role\": \"assistant\", \"content\": \"a%d\"}]}\r\n",
                                    i, i);
        lineno++;
    }
    s_write(src, text);
    fw_data_report rep;
    fw_data_opts opts = {.max_bad_fraction = 0.01, .max_report = 20};
    int rc = fw_data_tokenize(src, g_tok, dst, &opts, &rep);
    REQUIRE(rc == 0);
    CHECK_EQ_INT(rep.lines, 151);
    CHECK_EQ_INT(rep.accepted, 150);
    CHECK_EQ_INT(rep.rejected, 1);
    CHECK_EQ_INT(rep.nbad_kept, 1);
    CHECK_EQ_INT(rep.bad_line[0], bad_at);
    CHECK(strstr(rep.bad_reason[0], "not a string") != NULL);
    CHECK(!s_exists(strcat(strcpy(text, dst), ".new")));

    fw_shard *s = fw_shard_open(dst);
    REQUIRE(s);
    CHECK_EQ_INT(fw_shard_ndocs(s), 150);
    CHECK_EQ_INT(fw_shard_ntokens(s), rep.tokens);
    /* Every document equals the record tokenised on its own. */
    FILE *f = fopen(src, "rb");
    char *line = NULL;
    size_t lcap = 0, d = 0, diff = 0, loss = 0;
    ssize_t got;
    while (f && (got = getline(&line, &lcap, f)) > 0) {
        if (strchr(line, '{') == NULL || strstr(line, "\"text\": 3")) continue;
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        size_t n = 0;
        const int32_t *sid;
        const uint8_t *smask;
        size_t sn = 0;
        if (fw_data_tokenize_record(line, (size_t)got, g_tok, &ids, &mask, &n) != 0 ||
            fw_shard_doc(s, d, &sid, &smask, &sn) != 0 || sn != n ||
            memcmp(ids, sid, n * sizeof *ids) != 0 || memcmp(mask, smask, n) != 0)
            diff++;
        for (size_t i = 0; i < n; i++) loss += mask[i];
        free(ids), free(mask);
        d++;
    }
    if (f) fclose(f);
    free(line);
    CHECK_EQ_INT(d, 150);
    CHECK_EQ_INT(diff, 0);
    CHECK_EQ_INT(rep.loss_tokens, loss);
    fw_shard_close(&s);
    free(text);
}

static void test_too_many_bad(void) {
    char src[600], dst[600], tmp[620];
    snprintf(src, sizeof src, "%s/b.jsonl", g_dir);
    snprintf(dst, sizeof dst, "%s/b.shard", g_dir);
    snprintf(tmp, sizeof tmp, "%s.new", dst);
    s_write(dst, "previous shard");
    /* 10 lines, 2 bad (lines 4 and 9): 20% > 10%. */
    s_write(src, "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \"c\"}\nnot json\n"
                 "{\"text\": \"d\"}\n{\"text\": \"e\"}\n{\"text\": \"f\"}\n{\"text\": \"g\"}\n"
                 "{\"text\": \"\"}\n{\"text\": \"h\"}\n");
    fw_data_opts opts = {.max_bad_fraction = 0.1};
    fw_data_report rep;
    CHECK_EQ_INT(fw_data_tokenize(src, g_tok, dst, &opts, &rep), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "2 of 10 lines rejected") != NULL);
    CHECK(strstr(fw_err_detail(), "first bad line 4") != NULL);
    CHECK_EQ_INT(rep.rejected, 2);
    CHECK_EQ_INT(rep.bad_line[1], 9);
    CHECK(strstr(rep.bad_reason[1], "empty text") != NULL);
    CHECK(!s_exists(tmp));
    char buf[64] = "";
    FILE *f = fopen(dst, "rb");
    if (f) {
        size_t r = fread(buf, 1, sizeof buf - 1, f);
        buf[r] = 0;
        fclose(f);
    }
    CHECK_EQ_STR(buf, "previous shard");
    /* 20% allowed: the same file passes. */
    opts.max_bad_fraction = 0.2;
    CHECK_EQ_INT(fw_data_tokenize(src, g_tok, dst, &opts, &rep), 0);
    CHECK_EQ_INT(rep.accepted, 8);
    /* max_report caps the kept lines, not the count. */
    opts.max_bad_fraction = 1.0;
    opts.max_report = 1;
    CHECK_EQ_INT(fw_data_tokenize(src, g_tok, dst, &opts, &rep), 0);
    CHECK_EQ_INT(rep.rejected, 2);
    CHECK_EQ_INT(rep.nbad_kept, 1);
    opts.max_bad_fraction = -0.5;
    CHECK_EQ_INT(fw_data_tokenize(src, g_tok, dst, &opts, &rep), FW_EINVAL);
}

static void test_empty_and_missing(void) {
    char src[600], dst[600];
    snprintf(src, sizeof src, "%s/c.jsonl", g_dir);
    snprintf(dst, sizeof dst, "%s/c.shard", g_dir);
    fw_data_report rep;
    s_write(src, "");
    CHECK_EQ_INT(fw_data_tokenize(src, g_tok, dst, NULL, &rep), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "no usable record (0 lines") != NULL);
    s_write(src, "\n  \n\n");
    CHECK_EQ_INT(fw_data_tokenize(src, g_tok, dst, NULL, &rep), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "no usable record") != NULL);
    s_write(src, "{\"x\": 1}\n[]\n");
    fw_data_opts all = {.max_bad_fraction = 1.0};
    CHECK_EQ_INT(fw_data_tokenize(src, g_tok, dst, &all, &rep), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "first bad line 1") != NULL);
    CHECK(!s_exists(dst));
    CHECK_EQ_INT(fw_data_tokenize("/nonexistent/x.jsonl", g_tok, dst, NULL, &rep), FW_ENOTFOUND);
    CHECK(strstr(fw_err_detail(), "/nonexistent/x.jsonl") != NULL);
    s_write(src, "\xEF\xBB\xBF{\"text\": \"fine\"}\n"); /* with a byte-order mark */
    CHECK(fw_data_tokenize(src, g_tok, "/nonexistent/dir/x.shard", NULL, &rep) < 0);
    CHECK(fw_data_tokenize(src, g_tok, dst, NULL, NULL) == 0); /* report optional */
    fw_shard *s = fw_shard_open(dst);
    CHECK(s && fw_shard_ndocs(s) == 1);
    fw_shard_close(&s);
}

/* A real corpus through the whole pipeline. */
static void test_moby_dick(void) {
    char dst[600];
    snprintf(dst, sizeof dst, "%s/moby.shard", g_dir);
    fw_data_report rep;
    int rc = fw_data_tokenize(fw_test_shared("corpora/moby-dick.jsonl"), g_tok, dst, NULL, &rep);
    REQUIRE(rc == 0);
    CHECK_EQ_INT(rep.lines, 135);
    CHECK_EQ_INT(rep.accepted, 135);
    CHECK_EQ_INT(rep.loss_tokens, rep.tokens);
    CHECK(rep.tokens > 200000 && rep.tokens < 400000);
    fw_shard *s = fw_shard_open(dst);
    REQUIRE(s);
    const int32_t *ids;
    const uint8_t *mask;
    size_t n;
    REQUIRE(fw_shard_doc(s, 0, &ids, &mask, &n) == 0);
    char *text = NULL;
    size_t tl = 0;
    REQUIRE(fw_tokenizer_decode(g_tok, ids, n - 1, &text, &tl) == 0);
    CHECK(strncmp(text, "Call me Ishmael.", 16) == 0);
    CHECK_EQ_INT(ids[n - 1], g_eot);
    free(text);
    fw_loader *l = fw_loader_new(s, 4, 64, 1, 0, 1);
    REQUIRE(l);
    int32_t in[256], tg[256];
    CHECK_EQ_INT(fw_loader_next(l, in, tg), 0);
    size_t shifted = 0;
    for (int b = 0; b < 4; b++)
        for (int t = 0; t + 1 < 64; t++) shifted += tg[b * 64 + t] == in[b * 64 + t + 1];
    CHECK_EQ_INT(shifted, 4 * 63);
    fw_loader_destroy(&l);
    fw_shard_close(&s);
}

int main(void) {
    g_tok = fw_tokenizer_load(fw_test_shared("gpt2-tokenizer"));
    if (!g_tok) {
        fprintf(stderr, "tokenizer: %s\n", fw_err_detail());
        return 1;
    }
    g_eot = fw_tokenizer_eot(g_tok);
    g_dir = fw_test_tmpdir("data");
    if (!g_dir) return 1;
    CHECK_EQ_INT(g_eot, 50256);
    RUN(test_shapes);
    RUN(test_rejects);
    RUN(test_tokenize_file);
    RUN(test_too_many_bad);
    RUN(test_empty_and_missing);
    RUN(test_moby_dick);
    fw_test_rmtree(g_dir);
    free(g_dir);
    fw_tokenizer_destroy(&g_tok);
    return fw_test_summary();
}
