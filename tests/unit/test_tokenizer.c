/* GPT-2 tokenizer: the reference encodings, decoding and streaming bytes,
 * "<|endoftext|>" as text, invalid UTF-8, bad ids, broken vocabulary files,
 * and the three file formats (HF, OpenAI, tokenizer.json with both merge
 * encodings) giving one and the same tokenizer. */
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fw_err.h"
#include "fw_file.h"
#include "fw_test.h"
#include "tokenizer.h"
#include "unicode_pretok.h"

static fw_tokenizer *s_gpt2;

/* The texts (and, when ids is given, id arrays) of a JSONL file's lines. */
typedef struct {
    char **text;
    size_t *len;
    json_t **ids;
    size_t n;
} s_lines;

static void s_lines_free(s_lines *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->text[i]);
        json_decref(l->ids[i]);
    }
    free(l->text);
    free(l->len);
    free(l->ids);
    memset(l, 0, sizeof *l);
}

static int s_lines_read(const char *path, s_lines *l) {
    char *buf = NULL;
    size_t len = 0;
    memset(l, 0, sizeof *l);
    if (fw_file_read(path, 64u << 20, &buf, &len) < 0) {
        fprintf(stderr, "cannot read %s: %s\n", path, fw_err_detail());
        return -1;
    }
    size_t cap = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        if (!o) continue;
        if (l->n == cap) {
            cap = cap ? cap * 2 : 64;
            l->text = realloc(l->text, cap * sizeof *l->text);
            l->len = realloc(l->len, cap * sizeof *l->len);
            l->ids = realloc(l->ids, cap * sizeof *l->ids);
        }
        json_t *t = json_object_get(o, "text");
        l->len[l->n] = json_string_length(t);
        l->text[l->n] = malloc(l->len[l->n] + 1);
        memcpy(l->text[l->n], json_string_value(t), l->len[l->n] + 1);
        l->ids[l->n] = json_incref(json_object_get(o, "ids"));
        l->n++;
        json_decref(o);
    }
    free(buf);
    return 0;
}

/* ------------------------------------------------------------ reference */

static void test_reference(void) {
    REQUIRE(s_gpt2 != NULL);
    CHECK_EQ_INT(fw_tokenizer_vocab_size(s_gpt2), 50257);
    CHECK_EQ_INT(fw_tokenizer_eot(s_gpt2), 50256);
    s_lines l;
    REQUIRE(s_lines_read(fw_test_shared("gpt2-tokenizer/reference.jsonl"), &l) == 0);
    CHECK(l.n >= 40);
    int exact = 0;
    for (size_t i = 0; i < l.n; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_EQ_INT(fw_tokenizer_encode(s_gpt2, l.text[i], l.len[i], &ids, &n), 0);
        bool same = n == json_array_size(l.ids[i]);
        for (size_t k = 0; same && k < n; k++)
            same = ids[k] == json_integer_value(json_array_get(l.ids[i], k));
        CHECKF(same, "line %zu \"%.40s\": %zu ids, reference %zu", i + 1, l.text[i], n,
               json_array_size(l.ids[i]));
        exact += same;
        /* Decoding the reference ids gives the text back, byte for byte. */
        size_t nref = json_array_size(l.ids[i]);
        int32_t *ref = malloc((nref + 1) * sizeof *ref);
        for (size_t k = 0; k < nref; k++)
            ref[k] = (int32_t)json_integer_value(json_array_get(l.ids[i], k));
        char *text = NULL;
        size_t tlen = 0;
        CHECK_EQ_INT(fw_tokenizer_decode(s_gpt2, ref, nref, &text, &tlen), 0);
        CHECKF(text && tlen == l.len[i] && memcmp(text, l.text[i], tlen) == 0 && text[tlen] == 0,
               "decode of line %zu", i + 1);
        free(text);
        free(ref);
        free(ids);
    }
    CHECK_EQ_INT(exact, (long long)l.n);
    s_lines_free(&l);
}

static void test_token_bytes(void) {
    REQUIRE(s_gpt2 != NULL);
    const char *b = NULL;
    size_t n = 0;
    CHECK(fw_tokenizer_token_bytes(s_gpt2, 220, &b, &n) == 0 && n == 1 && b[0] == ' ');
    CHECK(fw_tokenizer_token_bytes(s_gpt2, 198, &b, &n) == 0 && n == 1 && b[0] == '\n');
    CHECK(fw_tokenizer_token_bytes(s_gpt2, 15496, &b, &n) == 0 && n == 5 && !memcmp(b, "Hello", 5));
    CHECK(fw_tokenizer_token_bytes(s_gpt2, 50256, &b, &n) == 0 && n == 13 &&
          !memcmp(b, "<|endoftext|>", 13));
    CHECK_EQ_INT(fw_tokenizer_token_bytes(s_gpt2, 50257, &b, &n), FW_EINVAL);
    CHECK_EQ_INT(fw_tokenizer_token_bytes(s_gpt2, -1, &b, &n), FW_EINVAL);

    /* Streaming: token bytes concatenate to the text even where a token ends
     * inside a UTF-8 sequence (the emoji split into byte-level pieces). */
    const char *text = "emoji 😀🎉👍🏽 done, 日本語";
    int32_t *ids = NULL;
    size_t nid = 0;
    REQUIRE(fw_tokenizer_encode(s_gpt2, text, strlen(text), &ids, &nid) == 0);
    char buf[256];
    size_t at = 0;
    int partial = 0;
    for (size_t i = 0; i < nid; i++) {
        REQUIRE(fw_tokenizer_token_bytes(s_gpt2, ids[i], &b, &n) == 0);
        REQUIRE(at + n < sizeof buf);
        memcpy(buf + at, b, n);
        at += n;
        /* A token that ends on a UTF-8 lead or continuation byte with the
         * sequence incomplete. */
        if (at < strlen(text) && ((unsigned char)text[at] & 0xC0) == 0x80) partial++;
    }
    CHECK(at == strlen(text) && memcmp(buf, text, at) == 0);
    CHECK(partial > 0);
    free(ids);
}

static void test_endoftext_is_text(void) {
    REQUIRE(s_gpt2 != NULL);
    /* encoder.py (and so the reference encoder) has no special-token handling:
     * "<|endoftext|>" is split like any text: '<', '|', 'endoftext', '|>'. */
    static const int32_t want[] = {27, 91, 437, 1659, 5239, 91, 29};
    int32_t *ids = NULL;
    size_t n = 0;
    REQUIRE(fw_tokenizer_encode(s_gpt2, "<|endoftext|>", 13, &ids, &n) == 0);
    CHECK_EQ_INT(n, 7);
    CHECK(n == 7 && memcmp(ids, want, sizeof want) == 0);
    for (size_t i = 0; i < n; i++) CHECK(ids[i] != fw_tokenizer_eot(s_gpt2));
    free(ids);
    static const int32_t want2[] = {64, 1279, 91, 437, 1659, 5239, 91, 29, 275};
    REQUIRE(fw_tokenizer_encode(s_gpt2, "a <|endoftext|> b", 17, &ids, &n) == 0);
    CHECK(n == 9 && memcmp(ids, want2, sizeof want2) == 0);
    free(ids);
}

static void test_empty_and_edges(void) {
    REQUIRE(s_gpt2 != NULL);
    int32_t *ids = (int32_t *)1;
    size_t n = 99;
    CHECK_EQ_INT(fw_tokenizer_encode(s_gpt2, "", 0, &ids, &n), 0);
    CHECK_EQ_INT(n, 0);
    free(ids);
    /* A NUL byte is ordinary text (byte 0 is token 188 in GPT-2). */
    CHECK_EQ_INT(fw_tokenizer_encode(s_gpt2, "a\0b", 3, &ids, &n), 0);
    CHECK(n == 3 && ids[1] == 188);
    free(ids);
    /* Long pre-tokens (3000 spaces, a 2000-character run of CJK) must give
     * encoder.py's ids and round-trip. */
    size_t len = 3000 + 4 + 3 * 2000;
    char *big = malloc(len + 1);
    memset(big, ' ', 3000);
    memcpy(big + 3000, "word", 4);
    for (size_t i = 0; i < 2000; i++) memcpy(big + 3004 + 3 * i, "語", 3);
    REQUIRE(fw_tokenizer_encode(s_gpt2, big, len, &ids, &n) == 0);
    char *back = NULL;
    size_t blen = 0;
    CHECK(fw_tokenizer_decode(s_gpt2, ids, n, &back, &blen) == 0 && blen == len &&
          memcmp(back, big, len) == 0);
    /* encoder.py: GPT-2 has no multi-space tokens, so 2999 x ' ', ' word',
     * then each 語 as two byte-level tokens. */
    CHECK_EQ_INT(n, 7000);
    CHECK(n == 7000 && ids[0] == 220 && ids[2998] == 220 && ids[2999] == 1573 &&
          ids[3000] == 45739 && ids[6999] == 252);
    free(back);
    free(ids);
    free(big);
    /* Decoding nothing gives an empty, NUL-terminated string. */
    char *t = NULL;
    CHECK(fw_tokenizer_decode(s_gpt2, NULL, 0, &t, &blen) == 0 && t && t[0] == 0 && blen == 0);
    free(t);
}

/* ------------------------------------------------------- invalid UTF-8 */

static void s_expect_bad(const char *s, size_t len, size_t off, const char *why) {
    int32_t *ids = (int32_t *)1;
    size_t n = 7;
    int rc = fw_tokenizer_encode(s_gpt2, s, len, &ids, &n);
    CHECKF(rc == FW_EINVAL, "%s: rc %d", why, rc);
    CHECK(ids == NULL && n == 0);
    char want[64];
    snprintf(want, sizeof want, "byte offset %zu:", off);
    CHECKF(strstr(fw_err_detail(), want) != NULL, "%s: detail \"%s\", want \"%s\"", why,
           fw_err_detail(), want);
}

static void s_expect_good(const char *s, size_t len) {
    int32_t *ids = NULL;
    size_t n = 0;
    CHECKF(fw_tokenizer_encode(s_gpt2, s, len, &ids, &n) == 0, "valid %zu bytes: %s", len,
           fw_err_detail());
    free(ids);
}

static void test_invalid_utf8(void) {
    REQUIRE(s_gpt2 != NULL);
    s_expect_bad("ab\x80", 3, 2, "lone continuation");
    s_expect_bad("0123456789abcdefghij\xBF tail", 26, 20, "continuation past the ASCII fast path");
    s_expect_bad("a\xC0\xAF", 3, 1, "overlong 2-byte '/'");
    s_expect_bad("a\xC1\xBF", 3, 1, "overlong C1");
    s_expect_bad("\xE0\x80\xAF", 3, 0, "overlong 3-byte");
    s_expect_bad("xyz\xF0\x8F\xBF\xBF", 7, 3, "overlong 4-byte");
    s_expect_bad("xy\xE2\x82", 4, 2, "truncated at end");
    s_expect_bad("\xE2\x28\xA1", 3, 0, "truncated: next byte not a continuation");
    s_expect_bad("ok \xF0\x9F\x98", 6, 3, "truncated emoji");
    s_expect_bad("\xED\xA0\x80", 3, 0, "high surrogate U+D800");
    s_expect_bad("a\xED\xBF\xBF", 4, 1, "low surrogate U+DFFF");
    s_expect_bad("\xF4\x90\x80\x80", 4, 0, "above U+10FFFF");
    s_expect_bad("\xF5\x80\x80\x80", 4, 0, "lead F5");
    s_expect_bad("abc\xFF", 4, 3, "byte FF");
    /* The edges of the valid ranges are accepted. */
    s_expect_good("\xC2\x80", 2);         /* U+0080 */
    s_expect_good("\xDF\xBF", 2);         /* U+07FF */
    s_expect_good("\xE0\xA0\x80", 3);     /* U+0800 */
    s_expect_good("\xED\x9F\xBF", 3);     /* U+D7FF */
    s_expect_good("\xEE\x80\x80", 3);     /* U+E000 */
    s_expect_good("\xEF\xBF\xBF", 3);     /* U+FFFF */
    s_expect_good("\xF0\x90\x80\x80", 4); /* U+10000 */
    s_expect_good("\xF4\x8F\xBF\xBF", 4); /* U+10FFFF */
}

static void test_decode_errors(void) {
    REQUIRE(s_gpt2 != NULL);
    int32_t ids[] = {15496, 50257};
    char *t = (char *)1;
    size_t len = 5;
    CHECK_EQ_INT(fw_tokenizer_decode(s_gpt2, ids, 2, &t, &len), FW_EINVAL);
    CHECK(t == NULL && len == 0);
    CHECK(strstr(fw_err_detail(), "id 50257 at position 1") != NULL);
    ids[1] = -3;
    CHECK_EQ_INT(fw_tokenizer_decode(s_gpt2, ids, 2, &t, &len), FW_EINVAL);
    CHECK_EQ_INT(fw_tokenizer_encode(NULL, "a", 1, (int32_t **)&t, &len), FW_EINVAL);
}

/* ----------------------------------------------------- vocabulary files */

/* GPT-2's byte-to-unicode table, written out independently of the library. */
static void s_byte_text(unsigned b, char *out) {
    static int map[256];
    if (!map['!']) {
        int n = 0;
        for (int c = 0; c < 256; c++) {
            int printable = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174;
            map[c] = printable ? c : 256 + n++;
        }
    }
    int cp = map[b];
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

static void s_write(const char *dir, const char *name, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* vocab.json for the 256 bytes plus extra tokens ("Ġ" + "t" etc. given as
 * byte-level text), with ids in order. */
static char *s_small_vocab(const char *const *extra, int nextra) {
    json_t *o = json_object();
    char t[4];
    for (unsigned b = 0; b < 256; b++) {
        s_byte_text(b, t);
        json_object_set_new(o, t, json_integer(b));
    }
    for (int i = 0; i < nextra; i++) json_object_set_new(o, extra[i], json_integer(256 + i));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Load dir and expect failure with all the fragments in the detail. */
static void s_expect_load_error(const char *dir, const char *frag1, const char *frag2) {
    fw_tokenizer *t = fw_tokenizer_load(dir);
    CHECKF(t == NULL, "loading %s should fail (%s)", dir, frag1);
    const char *d = fw_err_detail();
    CHECKF(strstr(d, frag1) != NULL, "detail \"%s\" lacks \"%s\"", d, frag1);
    if (frag2) CHECKF(strstr(d, frag2) != NULL, "detail \"%s\" lacks \"%s\"", d, frag2);
    fw_tokenizer_destroy(&t);
}

static void test_load_errors(void) {
    char *tmp = fw_test_tmpdir("tok-err");
    REQUIRE(tmp != NULL);
    char dir[1024];
    static const char *const extra[] = {"Ġt", "he", "Ġthe"};
    char *vocab = s_small_vocab(extra, 3);

    /* A good small vocabulary first, so each case below breaks one thing. */
    snprintf(dir, sizeof dir, "%s/good", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.json", vocab);
    s_write(dir, "merges.txt", "#version: 0.2\nĠ t\nh e\nĠt he\n");
    fw_tokenizer *t = fw_tokenizer_load(dir);
    CHECKF(t != NULL, "good: %s", fw_err_detail());
    if (t) {
        CHECK_EQ_INT(fw_tokenizer_vocab_size(t), 259);
        CHECK_EQ_INT(fw_tokenizer_eot(t), -1);
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(fw_tokenizer_encode(t, " the", 4, &ids, &n) == 0 && n == 1 && ids[0] == 258);
        free(ids);
    }
    fw_tokenizer_destroy(&t);
    fw_tokenizer_destroy(&t); /* idempotent */

    s_expect_load_error("/nonexistent/tokenizer", "/nonexistent/tokenizer", "no vocabulary");

    snprintf(dir, sizeof dir, "%s/nomerges", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.json", vocab);
    s_expect_load_error(dir, "merges.txt: missing", NULL);

    snprintf(dir, sizeof dir, "%s/noencoder", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.bpe", "#version: 0.2\n");
    s_expect_load_error(dir, "encoder.json: missing", NULL);

    snprintf(dir, sizeof dir, "%s/badjson", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.json", "{\"a\": 1, \"b\": ");
    s_write(dir, "merges.txt", "#version: 0.2\n");
    s_expect_load_error(dir, "vocab.json: bad JSON at line 1", NULL);

    snprintf(dir, sizeof dir, "%s/notobject", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.json", "[1, 2]");
    s_write(dir, "merges.txt", "");
    s_expect_load_error(dir, "vocab.json", "not a JSON object");

    snprintf(dir, sizeof dir, "%s/unknown", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.json", vocab);
    s_write(dir, "merges.txt", "#version: 0.2\nĠ t\nq zz\n");
    s_expect_load_error(dir, "merges.txt line 3", "unknown token \"zz\"");

    snprintf(dir, sizeof dir, "%s/noresult", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.json", vocab);
    s_write(dir, "merges.txt", "#version: 0.2\nĠ t\nx y\n");
    s_expect_load_error(dir, "merges.txt line 3", "not in the vocabulary");

    snprintf(dir, sizeof dir, "%s/dupmerge", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.json", vocab);
    s_write(dir, "merges.txt", "#version: 0.2\nĠ t\nh e\nĠ t\n");
    s_expect_load_error(dir, "merges.txt line 4", "repeats merge 0");

    snprintf(dir, sizeof dir, "%s/threefields", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.json", vocab);
    s_write(dir, "merges.txt", "#version: 0.2\nĠ t x\n");
    s_expect_load_error(dir, "merges.txt line 2", "expected two tokens");

    snprintf(dir, sizeof dir, "%s/badutf8", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.json", vocab);
    s_write(dir, "merges.txt", "#version: 0.2\n\xC1\xA1 b\n");
    s_expect_load_error(dir, "merges.txt: invalid UTF-8 at byte offset 14", NULL);

    /* Duplicate id: replace the last extra token's id with an earlier one. */
    char *dupid = strdup(vocab);
    char *p = strstr(dupid, "\"Ġthe\":258");
    REQUIRE(p != NULL);
    memcpy(p + strlen("\"Ġthe\":"), "257", 3);
    snprintf(dir, sizeof dir, "%s/dupid", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.json", dupid);
    s_write(dir, "merges.txt", "#version: 0.2\n");
    s_expect_load_error(dir, "duplicate id 257", "vocab.json");
    /* An id past the end (ids must be dense). */
    memcpy(p + strlen("\"Ġthe\":"), "900", 3);
    s_write(dir, "vocab.json", dupid);
    s_expect_load_error(dir, "id 900 out of range", NULL);
    free(dupid);

    /* A byte with no token: drop "Ā" (byte 0) by renaming it to a merge-less token. */
    char *nobyte = strdup(vocab);
    p = strstr(nobyte, "\"Ā\":0");
    REQUIRE(p != NULL);
    memcpy(p + 1, "zz", 2); /* "Ā" is two bytes of UTF-8, "zz" too */
    snprintf(dir, sizeof dir, "%s/nobyte", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.json", nobyte);
    s_write(dir, "merges.txt", "#version: 0.2\n");
    s_expect_load_error(dir, "no token for byte 0x00", NULL);
    free(nobyte);

    /* A character outside the byte alphabet (a literal space). */
    static const char *const spacey[] = {"a b"};
    char *v2 = s_small_vocab(spacey, 1);
    snprintf(dir, sizeof dir, "%s/alphabet", tmp);
    mkdir(dir, 0755);
    s_write(dir, "vocab.json", v2);
    s_write(dir, "merges.txt", "#version: 0.2\n");
    s_expect_load_error(dir, "U+0020", "byte alphabet");
    free(v2);

    /* tokenizer.json: a bad merge entry, a wrong model type. */
    snprintf(dir, sizeof dir, "%s/tj", tmp);
    mkdir(dir, 0755);
    char *tj = malloc(strlen(vocab) + 256);
    sprintf(tj, "{\"model\": {\"type\": \"BPE\", \"vocab\": %s, \"merges\": [\"Ġ t\", [\"h\"]]}}",
            vocab);
    s_write(dir, "tokenizer.json", tj);
    s_expect_load_error(dir, "model.merges[1]", "expected");
    sprintf(tj, "{\"model\": {\"type\": \"WordPiece\", \"vocab\": %s, \"merges\": []}}", vocab);
    s_write(dir, "tokenizer.json", tj);
    s_expect_load_error(dir, "tokenizer.json", "not \"BPE\"");
    sprintf(tj,
            "{\"model\": {\"type\": \"BPE\", \"vocab\": %s, \"merges\": [[\"Ġ\", \"t\"]]}, "
            "\"added_tokens\": [{\"id\": 259, \"content\": \"<|endoftext|>\"}]}",
            vocab);
    s_write(dir, "tokenizer.json", tj);
    t = fw_tokenizer_load(dir);
    CHECKF(t && fw_tokenizer_vocab_size(t) == 260 && fw_tokenizer_eot(t) == 259, "added token: %s",
           fw_err_detail());
    fw_tokenizer_destroy(&t);
    free(tj);

    /* from_parts refuses a merge whose result is not a token. */
    const char *toks[256];
    size_t lens[256];
    char bytes[256];
    for (int b = 0; b < 256; b++) {
        bytes[b] = (char)b;
        toks[b] = &bytes[b];
        lens[b] = 1;
    }
    int32_t m[2] = {'a', 'b'};
    t = fw_tokenizer_from_parts(toks, lens, 256, m, 1);
    CHECK(t == NULL && strstr(fw_err_detail(), "not a token"));
    t = fw_tokenizer_from_parts(toks, lens, 256, NULL, 0);
    CHECK(t != NULL && fw_tokenizer_vocab_size(t) == 256);
    fw_tokenizer_destroy(&t);

    free(vocab);
    fw_test_rmtree(tmp);
    free(tmp);
}

/* -------------------------------------------------------------- formats */

/* Build tokenizer.json from a saved vocab.json + merges.txt, merges as "a b"
 * strings or ["a", "b"] pairs. */
static int s_write_tokenizer_json(const char *from, const char *to, bool pairs) {
    char path[1024];
    snprintf(path, sizeof path, "%s/vocab.json", from);
    json_error_t jerr;
    json_t *vocab = json_load_file(path, 0, &jerr);
    snprintf(path, sizeof path, "%s/merges.txt", from);
    char *text = NULL;
    size_t len = 0;
    if (!vocab || fw_file_read(path, 64u << 20, &text, &len) < 0) return -1;
    json_t *merges = json_array();
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "#version", 8) == 0) continue; /* merges may start with "#" */
        if (!pairs) {
            json_array_append_new(merges, json_string(line));
            continue;
        }
        char *sp = strchr(line, ' ');
        *sp = 0;
        json_array_append_new(merges, json_pack("[ss]", line, sp + 1));
    }
    free(text);
    json_t *root = json_pack("{s:s, s:[{s:i, s:s, s:b}], s:{s:s, s:o, s:o}}", "version", "1.0",
                             "added_tokens", "id", 50256, "content", "<|endoftext|>", "special", 1,
                             "model", "type", "BPE", "vocab", vocab, "merges", merges);
    mkdir(to, 0755);
    snprintf(path, sizeof path, "%s/tokenizer.json", to);
    int rc = json_dump_file(root, path, JSON_INDENT(1));
    json_decref(root);
    return rc;
}

static bool s_same_encoding(const fw_tokenizer *a, const fw_tokenizer *b, const char *s,
                            size_t len) {
    int32_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    bool same = fw_tokenizer_encode(a, s, len, &x, &nx) == 0 &&
                fw_tokenizer_encode(b, s, len, &y, &ny) == 0 && nx == ny &&
                memcmp(x, y, nx * sizeof *x) == 0;
    free(x);
    free(y);
    return same;
}

static bool s_same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    bool same = fw_file_read(a, 64u << 20, &x, &nx) == 0 &&
                fw_file_read(b, 64u << 20, &y, &ny) == 0 && nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

static void test_formats(void) {
    REQUIRE(s_gpt2 != NULL);
    char *tmp = fw_test_tmpdir("tok-fmt");
    REQUIRE(tmp != NULL);
    char hf[1024], tjs[1024], tjp[1024], hf2[1024], a[1100], b[1100];
    snprintf(hf, sizeof hf, "%s/hf", tmp);
    snprintf(tjs, sizeof tjs, "%s/tj-strings", tmp);
    snprintf(tjp, sizeof tjp, "%s/tj-pairs", tmp);
    snprintf(hf2, sizeof hf2, "%s/hf-again", tmp);
    REQUIRE(fw_tokenizer_save(s_gpt2, hf) == 0);

    /* merges.txt starts with the version line HF expects, then 50000 merges. */
    snprintf(a, sizeof a, "%s/merges.txt", hf);
    char *m = NULL;
    size_t mlen = 0;
    REQUIRE(fw_file_read(a, 64u << 20, &m, &mlen) == 0);
    CHECK(strncmp(m, "#version: 0.2\nĠ t\nĠ a\n", strlen("#version: 0.2\nĠ t\nĠ a\n")) == 0);
    size_t lines = 0;
    for (size_t i = 0; i < mlen; i++) lines += m[i] == '\n';
    CHECK_EQ_INT(lines, 50001);
    free(m);
    /* The saved merges are the published vocab.bpe apart from its header
     * ("#version: 0.2" too) -- compare everything after the first line. */
    char *orig = NULL;
    size_t olen = 0;
    REQUIRE(fw_file_read(fw_test_shared("gpt2-tokenizer/vocab.bpe"), 64u << 20, &orig, &olen) == 0);
    REQUIRE(fw_file_read(a, 64u << 20, &m, &mlen) == 0);
    const char *o1 = strchr(orig, '\n'), *m1 = strchr(m, '\n');
    CHECK(o1 && m1 && strcmp(o1, m1) == 0);
    free(orig);
    free(m);

    REQUIRE(s_write_tokenizer_json(hf, tjs, false) == 0);
    REQUIRE(s_write_tokenizer_json(hf, tjp, true) == 0);
    fw_tokenizer *t[3] = {fw_tokenizer_load(hf), fw_tokenizer_load(tjs), fw_tokenizer_load(tjp)};
    static const char *const names[3] = {"vocab.json+merges.txt", "tokenizer.json strings",
                                         "tokenizer.json pairs"};
    for (int k = 0; k < 3; k++) {
        CHECKF(t[k] != NULL, "%s: %s", names[k], fw_err_detail());
        if (!t[k]) continue;
        CHECK_EQ_INT(fw_tokenizer_vocab_size(t[k]), 50257);
        CHECK_EQ_INT(fw_tokenizer_eot(t[k]), 50256);
        int diff = 0;
        for (int32_t id = 0; id < 50257; id++) {
            const char *x, *y;
            size_t nx, ny;
            fw_tokenizer_token_bytes(s_gpt2, id, &x, &nx);
            fw_tokenizer_token_bytes(t[k], id, &y, &ny);
            diff += nx != ny || memcmp(x, y, nx) != 0;
        }
        CHECKF(diff == 0, "%s: %d tokens differ", names[k], diff);
    }
    /* The same encodings from all four on the reference texts and a slice of
     * Moby-Dick (the merge ranks, not just the tokens, must agree). */
    s_lines l, md;
    REQUIRE(s_lines_read(fw_test_shared("gpt2-tokenizer/reference.jsonl"), &l) == 0);
    REQUIRE(s_lines_read(fw_test_shared("corpora/moby-dick.jsonl"), &md) == 0);
    for (int k = 0; k < 3; k++) {
        if (!t[k]) continue;
        int bad = 0;
        for (size_t i = 0; i < l.n; i++) bad += !s_same_encoding(s_gpt2, t[k], l.text[i], l.len[i]);
        for (size_t i = 0; i < md.n && i < 12; i++)
            bad += !s_same_encoding(s_gpt2, t[k], md.text[i], md.len[i]);
        CHECKF(bad == 0, "%s: %d texts encode differently", names[k], bad);
    }
    s_lines_free(&l);
    s_lines_free(&md);

    /* Saving what tokenizer.json gave reproduces the first save exactly. */
    if (t[2]) {
        REQUIRE(fw_tokenizer_save(t[2], hf2) == 0);
        snprintf(a, sizeof a, "%s/vocab.json", hf);
        snprintf(b, sizeof b, "%s/vocab.json", hf2);
        CHECK(s_same_file(a, b));
        snprintf(a, sizeof a, "%s/merges.txt", hf);
        snprintf(b, sizeof b, "%s/merges.txt", hf2);
        CHECK(s_same_file(a, b));
    }
    for (int k = 0; k < 3; k++) fw_tokenizer_destroy(&t[k]);
    fw_test_rmtree(tmp);
    free(tmp);
}

/* --------------------------------------------------- threads and caches */

typedef struct {
    s_lines *lines;
    int32_t **want;
    size_t *nwant;
    int bad;
} s_thread_arg;

static void *s_thread_main(void *p) {
    s_thread_arg *a = p;
    for (int rep = 0; rep < 20; rep++)
        for (size_t i = 0; i < a->lines->n; i++) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (fw_tokenizer_encode(s_gpt2, a->lines->text[i], a->lines->len[i], &ids, &n) < 0 ||
                n != a->nwant[i] || memcmp(ids, a->want[i], n * sizeof *ids) != 0)
                a->bad++;
            free(ids);
        }
    return NULL;
}

static void test_threads(void) {
    REQUIRE(s_gpt2 != NULL);
    s_lines l;
    REQUIRE(s_lines_read(fw_test_shared("gpt2-tokenizer/reference.jsonl"), &l) == 0);
    int32_t **want = calloc(l.n, sizeof *want);
    size_t *nwant = calloc(l.n, sizeof *nwant);
    for (size_t i = 0; i < l.n; i++)
        REQUIRE(fw_tokenizer_encode(s_gpt2, l.text[i], l.len[i], &want[i], &nwant[i]) == 0);
    /* Four threads share one tokenizer, each with its own word cache. */
    pthread_t th[4];
    s_thread_arg arg[4];
    for (int k = 0; k < 4; k++) {
        arg[k] = (s_thread_arg){&l, want, nwant, 0};
        REQUIRE(pthread_create(&th[k], NULL, s_thread_main, &arg[k]) == 0);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        CHECK_EQ_INT(arg[k].bad, 0);
    }
    for (size_t i = 0; i < l.n; i++) free(want[i]);
    free(want);
    free(nwant);
    s_lines_free(&l);
}

static void test_cache_per_tokenizer(void) {
    REQUIRE(s_gpt2 != NULL);
    /* A bytes-only tokenizer (token i = byte i, no merges) shares no ids'
     * meaning with GPT-2: a word cached by one must not answer for the other. */
    const char *toks[256];
    size_t lens[256];
    char bytes[256];
    for (int b = 0; b < 256; b++) {
        bytes[b] = (char)b;
        toks[b] = &bytes[b];
        lens[b] = 1;
    }
    fw_tokenizer *raw = fw_tokenizer_from_parts(toks, lens, 256, NULL, 0);
    REQUIRE(raw != NULL);
    for (int rep = 0; rep < 2; rep++) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(fw_tokenizer_encode(s_gpt2, " the", 4, &ids, &n) == 0 && n == 1 && ids[0] == 262);
        free(ids);
        CHECK(fw_tokenizer_encode(raw, " the", 4, &ids, &n) == 0 && n == 4 && ids[0] == ' ' &&
              ids[1] == 't' && ids[3] == 'e');
        free(ids);
    }
    fw_tokenizer_destroy(&raw);
}

/* Random bytes, mostly valid UTF-8 pieces with some garbage: encode either
 * refuses with FW_EINVAL (and the validator agrees) or round-trips. */
static void test_random_bytes(void) {
    REQUIRE(s_gpt2 != NULL);
    static const char *const pieces[] = {" ", "  ",   "\n", "'s",     "'",        "a", "The", "9",
                                         "é", "日本", "😀",  "\u3000", "\xC2\x85", "!", "\t"};
    uint64_t seed = 7;
    char buf[256];
    int refused = 0, ok = 0, wrong = 0;
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = 0;
        while (len < 200 && fw_test_rand(&seed) % 40) {
            uint64_t r = fw_test_rand(&seed);
            if (r % 16 == 0) {
                buf[len++] = (char)(r >> 8); /* any byte at all */
            } else {
                const char *p = pieces[(r >> 8) % (sizeof pieces / sizeof pieces[0])];
                memcpy(buf + len, p, strlen(p));
                len += strlen(p);
            }
        }
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = fw_tokenizer_encode(s_gpt2, buf, len, &ids, &n);
        if (rc == FW_EINVAL) {
            refused++;
            wrong += fw_utf8_validate(buf, len, NULL) == 0;
            continue;
        }
        char *back = NULL;
        size_t blen = 0;
        if (rc == 0 && fw_tokenizer_decode(s_gpt2, ids, n, &back, &blen) == 0 && blen == len &&
            memcmp(back, buf, len) == 0)
            ok++;
        else
            wrong++;
        free(ids);
        free(back);
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK(refused > 100 && ok > 100);
}

int main(void) {
    s_gpt2 = fw_tokenizer_load(fw_test_shared("gpt2-tokenizer"));
    if (!s_gpt2) fprintf(stderr, "loading GPT-2: %s\n", fw_err_detail());
    RUN(test_reference);
    RUN(test_token_bytes);
    RUN(test_endoftext_is_text);
    RUN(test_empty_and_edges);
    RUN(test_invalid_utf8);
    RUN(test_random_bytes);
    RUN(test_decode_errors);
    RUN(test_load_errors);
    RUN(test_formats);
    RUN(test_threads);
    RUN(test_cache_per_tokenizer);
    fw_tokenizer_destroy(&s_gpt2);
    return fw_test_summary();
}
