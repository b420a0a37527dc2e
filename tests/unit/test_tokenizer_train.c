/* BPE training: the textbook example merges in the expected order with the
 * documented tie-break; the incremental trainer learns exactly what a naive
 * recount-everything trainer learns; a 1024-token vocabulary learned from Moby-Dick
 * round-trips both corpora, compresses them below half a token per byte,
 * is deterministic, and saves and loads back unchanged; bad arguments fail
 * cleanly. */
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fw_err.h"
#include "fw_file.h"
#include "fw_test.h"
#include "fw_time.h"
#include "tokenizer.h"
#include "unicode_pretok.h"

typedef struct {
    char **text;
    size_t *len;
    size_t n, bytes;
} s_corpus;

static void s_corpus_free(s_corpus *c) {
    for (size_t i = 0; i < c->n; i++) free(c->text[i]);
    free(c->text);
    free(c->len);
    memset(c, 0, sizeof *c);
}

static int s_corpus_read(const char *path, s_corpus *c) {
    char *buf = NULL;
    size_t len = 0;
    memset(c, 0, sizeof *c);
    if (fw_file_read(path, 64u << 20, &buf, &len) < 0) return -1;
    size_t cap = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr), *t = json_object_get(o, "text");
        if (json_is_string(t)) {
            if (c->n == cap) {
                cap = cap ? cap * 2 : 64;
                c->text = realloc(c->text, cap * sizeof *c->text);
                c->len = realloc(c->len, cap * sizeof *c->len);
            }
            c->len[c->n] = json_string_length(t);
            c->text[c->n] = malloc(c->len[c->n] + 1);
            memcpy(c->text[c->n], json_string_value(t), c->len[c->n] + 1);
            c->bytes += c->len[c->n++];
        }
        json_decref(o);
    }
    free(buf);
    return 0;
}

static bool s_token_is(const fw_tokenizer *t, int32_t id, const char *s) {
    const char *b;
    size_t n;
    return fw_tokenizer_token_bytes(t, id, &b, &n) == 0 && n == strlen(s) && memcmp(b, s, n) == 0;
}

static void test_textbook(void) {
    /* "aaabdaaabac" (one pre-token): (a,a) counts 4, then (a,b) and (Z,a) tie
     * at 2 and the lower first id wins: 'a' (97) < the new "aa" (256). Then
     * "aa"+"ab" is the only pair left with 2. */
    const char *texts[] = {"aaabdaaabac"};
    size_t lens[] = {11};
    fw_tokenizer *t = NULL;
    REQUIRE(fw_tokenizer_train(texts, lens, 1, 260, &t) == 0);
    CHECK_EQ_INT(fw_tokenizer_vocab_size(t), 260);
    CHECK(s_token_is(t, 256, "aa"));
    CHECK(s_token_is(t, 257, "ab"));
    CHECK(s_token_is(t, 258, "aaab"));
    CHECK(s_token_is(t, 259, "<|endoftext|>"));
    CHECK_EQ_INT(fw_tokenizer_eot(t), 259);
    /* Bytes take GPT-2's ids: '!' is 0, 'a' is 64, byte 0x00 is 188. */
    CHECK(s_token_is(t, 0, "!"));
    CHECK(s_token_is(t, 64, "a"));
    const char *b;
    size_t n;
    CHECK(fw_tokenizer_token_bytes(t, 188, &b, &n) == 0 && n == 1 && b[0] == 0);
    int32_t *ids = NULL;
    size_t nid = 0;
    REQUIRE(fw_tokenizer_encode(t, texts[0], lens[0], &ids, &nid) == 0);
    /* aaab d aaab a c */
    int32_t want[] = {258, 67, 258, 64, 66};
    CHECK(nid == 5 && memcmp(ids, want, sizeof want) == 0);
    free(ids);
    fw_tokenizer_destroy(&t);

    /* Texts too small for the size asked: training stops when no pair is left. */
    const char *tiny[] = {"ab ab"};
    size_t tinylen[] = {5};
    REQUIRE(fw_tokenizer_train(tiny, tinylen, 1, 1000, &t) == 0);
    /* Words "ab" and " ab": merge "ab" (count 2), then " ab" (1); then none. */
    CHECK_EQ_INT(fw_tokenizer_vocab_size(t), 259);
    CHECK(s_token_is(t, 256, "ab"));
    CHECK(s_token_is(t, 257, " ab"));
    CHECK(s_token_is(t, fw_tokenizer_vocab_size(t) - 1, "<|endoftext|>"));
    fw_tokenizer_destroy(&t);
}

static void test_bad_arguments(void) {
    fw_tokenizer *t = (fw_tokenizer *)1;
    const char *texts[] = {"fine", "bad \xC3("};
    size_t lens[] = {4, 6};
    CHECK_EQ_INT(fw_tokenizer_train(texts, lens, 2, 256, &t), FW_EINVAL);
    CHECK(t == NULL);
    CHECK(strstr(fw_err_detail(), "vocab_size 256") != NULL);
    CHECK_EQ_INT(fw_tokenizer_train(texts, lens, 2, 300, &t), FW_EINVAL);
    CHECK(t == NULL);
    CHECKF(strstr(fw_err_detail(), "texts[1]") && strstr(fw_err_detail(), "byte offset 4"),
           "detail: %s", fw_err_detail());
    /* No text at all: just the bytes and EOT. */
    CHECK_EQ_INT(fw_tokenizer_train(NULL, NULL, 0, 300, &t), 0);
    CHECK_EQ_INT(fw_tokenizer_vocab_size(t), 257);
    fw_tokenizer_destroy(&t);
}

/* Every record round-trips; returns total tokens. */
static size_t s_roundtrip(const fw_tokenizer *t, const s_corpus *c, const char *name) {
    size_t tokens = 0, ok = 0;
    for (size_t i = 0; i < c->n; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        char *back = NULL;
        size_t blen = 0;
        if (fw_tokenizer_encode(t, c->text[i], c->len[i], &ids, &n) == 0 &&
            fw_tokenizer_decode(t, ids, n, &back, &blen) == 0 && blen == c->len[i] &&
            memcmp(back, c->text[i], blen) == 0)
            ok++;
        tokens += n;
        free(ids);
        free(back);
    }
    CHECKF(ok == c->n, "%s: %zu of %zu records round-trip", name, ok, c->n);
    return tokens;
}

static bool s_same_encodings(const fw_tokenizer *a, const fw_tokenizer *b, const s_corpus *c) {
    bool same = true;
    for (size_t i = 0; i < c->n && same; i += 7) {
        int32_t *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        same = fw_tokenizer_encode(a, c->text[i], c->len[i], &x, &nx) == 0 &&
               fw_tokenizer_encode(b, c->text[i], c->len[i], &y, &ny) == 0 && nx == ny &&
               memcmp(x, y, nx * sizeof *x) == 0;
        free(x);
        free(y);
    }
    return same;
}

static void test_moby_dick(void) {
    s_corpus md, sotu;
    REQUIRE(s_corpus_read(fw_test_shared("corpora/moby-dick.jsonl"), &md) == 0);
    REQUIRE(s_corpus_read(fw_test_shared("corpora/sotu.jsonl"), &sotu) == 0);
    REQUIRE(md.n == 135 && sotu.n == 233);

    fw_tokenizer *t = NULL, *again = NULL, *loaded = NULL;
    int64_t t0 = fw_mono_ms();
    REQUIRE(fw_tokenizer_train((const char *const *)md.text, md.len, md.n, 1024, &t) == 0);
    fprintf(stderr, "trained 1024 tokens on %zu bytes in %lld ms\n", md.bytes,
            (long long)(fw_mono_ms() - t0));
    CHECK_EQ_INT(fw_tokenizer_vocab_size(t), 1024);
    CHECK_EQ_INT(fw_tokenizer_eot(t), 1023);
    CHECK(s_token_is(t, 1023, "<|endoftext|>"));
    /* The most frequent pair of English text with GPT-2 pre-tokens. */
    CHECK(s_token_is(t, 256, " t") || s_token_is(t, 256, "he") || s_token_is(t, 256, "th"));

    size_t md_tokens = s_roundtrip(t, &md, "moby-dick");
    size_t sotu_tokens = s_roundtrip(t, &sotu, "sotu");
    fprintf(stderr, "moby-dick %zu bytes -> %zu tokens, sotu %zu bytes -> %zu tokens\n", md.bytes,
            md_tokens, sotu.bytes, sotu_tokens);
    CHECK(md_tokens < md.bytes / 2);
    CHECK(sotu_tokens < sotu.bytes / 2);

    /* Deterministic: a second run learns the same merges (same saved files). */
    REQUIRE(fw_tokenizer_train((const char *const *)md.text, md.len, md.n, 1024, &again) == 0);
    char *tmp = fw_test_tmpdir("tok-train");
    REQUIRE(tmp != NULL);
    char d1[1024], d2[1024], p1[1100], p2[1100];
    snprintf(d1, sizeof d1, "%s/one", tmp);
    snprintf(d2, sizeof d2, "%s/two", tmp);
    REQUIRE(fw_tokenizer_save(t, d1) == 0);
    REQUIRE(fw_tokenizer_save(again, d2) == 0);
    static const char *const files[] = {"vocab.json", "merges.txt"};
    for (int f = 0; f < 2; f++) {
        char *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        snprintf(p1, sizeof p1, "%s/%s", d1, files[f]);
        snprintf(p2, sizeof p2, "%s/%s", d2, files[f]);
        CHECK(fw_file_read(p1, 1u << 24, &x, &nx) == 0 &&
              fw_file_read(p2, 1u << 24, &y, &ny) == 0 && nx == ny && memcmp(x, y, nx) == 0);
        if (f == 1) CHECK(x && strncmp(x, "#version: 0.2\n", 14) == 0);
        free(x);
        free(y);
    }
    /* What was saved loads back as the same tokenizer. */
    loaded = fw_tokenizer_load(d1);
    CHECKF(loaded != NULL, "%s", fw_err_detail());
    if (loaded) {
        CHECK_EQ_INT(fw_tokenizer_vocab_size(loaded), 1024);
        CHECK_EQ_INT(fw_tokenizer_eot(loaded), 1023);
        CHECK(s_same_encodings(t, loaded, &md));
        CHECK(s_same_encodings(t, loaded, &sotu));
    }
    fw_tokenizer_destroy(&loaded);
    fw_tokenizer_destroy(&again);
    fw_tokenizer_destroy(&t);
    fw_test_rmtree(tmp);
    free(tmp);
    s_corpus_free(&md);
    s_corpus_free(&sotu);
}

/* ------------------------------------------------ against a naive trainer */

/* The obvious BPE trainer: recount every pair of every word before each
 * merge. Same tie-break (count, then lower first id, then lower second id),
 * same internal ids (bytes 0..255, then tokens in the order made). */
typedef struct {
    int32_t a, b;
    int64_t n;
} s_pc;

static int s_pc_cmp(const void *x, const void *y) {
    const s_pc *p = x, *q = y;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    if (p->b != q->b) return p->b < q->b ? -1 : 1;
    return 0;
}

static void test_against_naive(void) {
    s_corpus md;
    REQUIRE(s_corpus_read(fw_test_shared("corpora/moby-dick.jsonl"), &md) == 0);
    /* Three chapters: small enough to recount everything for every merge. */
    const size_t nt = 3;
    const int vocab = 600;
    /* Words, each repeated as often as it occurs (frequency 1 each). */
    size_t cap = 1 << 16, nw = 0, symcap = 1 << 18, nsym = 0;
    size_t *woff = malloc(cap * sizeof *woff), *wlen = malloc(cap * sizeof *wlen);
    int32_t *sym = malloc(symcap * sizeof *sym);
    for (size_t i = 0; i < nt; i++)
        for (size_t pos = 0; pos < md.len[i];) {
            size_t end = fw_pretok_next(md.text[i], md.len[i], pos);
            REQUIRE(nw < cap && nsym + (end - pos) <= symcap);
            woff[nw] = nsym;
            wlen[nw++] = end - pos;
            for (size_t k = pos; k < end; k++) sym[nsym++] = (uint8_t)md.text[i][k];
            pos = end;
        }
    char **tok = calloc((size_t)vocab, sizeof *tok);
    size_t *tlen = calloc((size_t)vocab, sizeof *tlen);
    for (int b = 0; b < 256; b++) {
        tok[b] = malloc(1);
        tok[b][0] = (char)b;
        tlen[b] = 1;
    }
    int ntok = 256;
    s_pc *pc = malloc(nsym * sizeof *pc);
    while (ntok + 1 < vocab) {
        size_t np = 0;
        for (size_t w = 0; w < nw; w++)
            for (size_t k = 0; k + 1 < wlen[w]; k++)
                pc[np++] = (s_pc){sym[woff[w] + k], sym[woff[w] + k + 1], 1};
        if (np == 0) break;
        qsort(pc, np, sizeof *pc, s_pc_cmp);
        s_pc best = {0, 0, 0};
        for (size_t i = 0; i < np;) {
            size_t j = i;
            while (j < np && s_pc_cmp(&pc[i], &pc[j]) == 0) j++;
            if ((int64_t)(j - i) > best.n) best = (s_pc){pc[i].a, pc[i].b, (int64_t)(j - i)};
            i = j;
        }
        /* Join, reusing an existing token with the same bytes. */
        size_t l = tlen[best.a] + tlen[best.b];
        char *joined = malloc(l);
        memcpy(joined, tok[best.a], tlen[best.a]);
        memcpy(joined + tlen[best.a], tok[best.b], tlen[best.b]);
        int32_t x = -1;
        for (int i = 0; i < ntok && x < 0; i++)
            if (tlen[i] == l && memcmp(tok[i], joined, l) == 0) x = i;
        if (x < 0) {
            x = ntok++;
            tok[x] = joined;
            tlen[x] = l;
        } else {
            free(joined);
        }
        for (size_t w = 0; w < nw; w++) {
            int32_t *s = sym + woff[w];
            size_t k = 0;
            for (size_t j = 0; j < wlen[w];) {
                if (j + 1 < wlen[w] && s[j] == best.a && s[j + 1] == best.b) {
                    s[k++] = x;
                    j += 2;
                } else {
                    s[k++] = s[j++];
                }
            }
            wlen[w] = k;
        }
    }
    fw_tokenizer *t = NULL;
    REQUIRE(fw_tokenizer_train((const char *const *)md.text, md.len, nt, vocab, &t) == 0);
    CHECK_EQ_INT(fw_tokenizer_vocab_size(t), ntok + 1);
    int differ = 0;
    for (int i = 256; i < ntok; i++) {
        const char *b;
        size_t n;
        if (fw_tokenizer_token_bytes(t, i, &b, &n) < 0 || n != tlen[i] || memcmp(b, tok[i], n))
            differ++;
    }
    CHECKF(differ == 0, "%d of %d learned tokens differ from the naive trainer's", differ,
           ntok - 256);
    fw_tokenizer_destroy(&t);
    for (int i = 0; i < ntok; i++) free(tok[i]);
    free(tok);
    free(tlen);
    free(pc);
    free(sym);
    free(woff);
    free(wlen);
    s_corpus_free(&md);
}

int main(void) {
    RUN(test_textbook);
    RUN(test_bad_arguments);
    RUN(test_against_naive);
    RUN(test_moby_dick);
    return fw_test_summary();
}
