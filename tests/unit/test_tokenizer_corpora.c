/* GPT-2 tokenizer on whole corpora: every record of Moby-Dick (1.2 MB) and
 * of the State of the Union addresses (10.8 MB) round-trips through
 * encode/decode, and the ids are exactly those of GPT-2's encoder.py.
 *
 * The expected token counts and digests were computed by running
 * encoder.py itself (Python, the `regex` module, the same encoder.json and
 * vocab.bpe) over the `text` field of every line, in file order, digesting
 * each id as 4 little-endian bytes with 64-bit FNV-1a. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fw_err.h"
#include "fw_file.h"
#include "fw_test.h"
#include "fw_time.h"
#include "tokenizer.h"

static uint64_t s_fnv(uint64_t h, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        for (int k = 0; k < 4; k++) {
            h ^= (v >> (8 * k)) & 0xFF;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

static void s_corpus(const fw_tokenizer *tok, const char *rel, size_t want_records,
                     size_t want_bytes, size_t want_tokens, uint64_t want_fnv) {
    char *buf = NULL;
    size_t len = 0;
    REQUIRE(fw_file_read(fw_test_shared(rel), 64u << 20, &buf, &len) == 0);
    size_t records = 0, bytes = 0, tokens = 0, roundtrip = 0;
    uint64_t h = 0xcbf29ce484222325ull;
    double enc_s = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        json_t *t = json_object_get(o, "text");
        CHECKF(json_is_string(t), "%s record %zu has no text", rel, records + 1);
        if (!json_is_string(t)) {
            json_decref(o);
            continue;
        }
        const char *text = json_string_value(t);
        size_t tlen = json_string_length(t);
        int32_t *ids = NULL;
        size_t n = 0;
        int64_t t0 = fw_mono_ns();
        int rc = fw_tokenizer_encode(tok, text, tlen, &ids, &n);
        enc_s += (double)(fw_mono_ns() - t0) / 1e9;
        CHECKF(rc == 0, "%s record %zu: %s", rel, records + 1, fw_err_detail());
        char *back = NULL;
        size_t blen = 0;
        if (rc == 0 && fw_tokenizer_decode(tok, ids, n, &back, &blen) == 0 && blen == tlen &&
            memcmp(back, text, tlen) == 0)
            roundtrip++;
        h = s_fnv(h, ids, n);
        tokens += n;
        bytes += tlen;
        records++;
        free(back);
        free(ids);
        json_decref(o);
    }
    free(buf);
    fprintf(stderr, "%s: %zu records, %zu bytes, %zu tokens, encode %.1f MB/s\n", rel, records,
            bytes, tokens, bytes / 1e6 / (enc_s > 0 ? enc_s : 1e-9));
    CHECK_EQ_INT(records, want_records);
    CHECK_EQ_INT(roundtrip, want_records);
    CHECK_EQ_INT(bytes, want_bytes);
    CHECK_EQ_INT(tokens, want_tokens);
    CHECKF(h == want_fnv, "%s: id digest %016llx, encoder.py %016llx", rel, (unsigned long long)h,
           (unsigned long long)want_fnv);
}

static fw_tokenizer *s_tok;

static void test_moby_dick(void) {
    REQUIRE(s_tok != NULL);
    s_corpus(s_tok, "corpora/moby-dick.jsonl", 135, 1188342, 285659, 0xe2fe0fde99737b06ull);
}

static void test_sotu(void) {
    REQUIRE(s_tok != NULL);
    s_corpus(s_tok, "corpora/sotu.jsonl", 233, 10761202, 2074068, 0xa65e7e929482c259ull);
}

int main(void) {
    s_tok = fw_tokenizer_load(fw_test_shared("gpt2-tokenizer"));
    if (!s_tok) fprintf(stderr, "loading GPT-2: %s\n", fw_err_detail());
    RUN(test_moby_dick);
    RUN(test_sotu);
    fw_tokenizer_destroy(&s_tok);
    return fw_test_summary();
}
