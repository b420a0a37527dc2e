/* bench_tokenizer: single-thread GPT-2 tokenizer throughput on the State of
 * the Union corpus (10.8 MB of English, the `text` field of every line of
 * sotu.jsonl), plus vocabulary load time and BPE training time.
 *
 *   load_gpt2       ms to load encoder.json + vocab.bpe (50,257 tokens)
 *   encode_sotu     MB/s, first pass: the word cache starts empty
 *   encode_sotu_warm MB/s, best of two more passes with the cache filled
 *   decode_sotu     MB/s of text produced
 *   tokens_sotu     ids produced for the whole corpus
 *   train_moby_4096 ms to learn a 4096-token vocabulary from Moby-Dick
 *
 * The fixtures are found under FW_SHARED_DIR, else $FW_SOURCE_DIR/../shared,
 * else ../shared beside the sources this was built from. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"
#include "fw_time.h"
#include "tokenizer.h"

#ifndef FW_SOURCE_DIR
#define FW_SOURCE_DIR "."
#endif

static void s_emit(const char *metric, double value, const char *unit) {
    printf("{\"bench\": \"tokenizer\", \"metric\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"}\n",
           metric, value, unit);
    fflush(stdout);
}

static const char *s_shared(const char *rel) {
    static char path[4096];
    const char *shared = getenv("FW_SHARED_DIR"), *src = getenv("FW_SOURCE_DIR");
    if (shared && *shared)
        snprintf(path, sizeof path, "%s/data/%s", shared, rel);
    else
        snprintf(path, sizeof path, "%s/../shared/data/%s", src && *src ? src : FW_SOURCE_DIR, rel);
    return path;
}

typedef struct {
    char **text;
    size_t *len;
    size_t n, bytes;
} s_corpus;

static int s_corpus_read(const char *path, s_corpus *c) {
    char *buf = NULL;
    size_t len = 0;
    memset(c, 0, sizeof *c);
    if (fw_file_read(path, 64u << 20, &buf, &len) < 0) {
        fprintf(stderr, "bench_tokenizer: %s\nHINT: set FW_SHARED_DIR to the shared/ folder\n",
                fw_err_detail());
        return -1;
    }
    size_t cap = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr), *t = json_object_get(o, "text");
        if (json_is_string(t)) {
            if (c->n == cap) {
                cap = cap ? cap * 2 : 256;
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
    return c->n ? 0 : -1;
}

static void s_corpus_free(s_corpus *c) {
    for (size_t i = 0; i < c->n; i++) free(c->text[i]);
    free(c->text);
    free(c->len);
}

/* Encode every text; seconds spent, ids kept in ids[i]/nids[i] when given. */
static double s_encode_all(const fw_tokenizer *tok, const s_corpus *c, int32_t **ids, size_t *nids,
                           size_t *tokens) {
    *tokens = 0;
    int64_t t0 = fw_mono_ns();
    for (size_t i = 0; i < c->n; i++) {
        int32_t *out = NULL;
        size_t n = 0;
        if (fw_tokenizer_encode(tok, c->text[i], c->len[i], &out, &n) < 0) {
            fprintf(stderr, "bench_tokenizer: encode: %s\n", fw_err_detail());
            exit(1);
        }
        *tokens += n;
        if (ids) {
            ids[i] = out;
            nids[i] = n;
        } else {
            free(out);
        }
    }
    return (double)(fw_mono_ns() - t0) / 1e9;
}

int main(void) {
    fw_log_set_level(FW_LOG_WARN);
    int64_t t0 = fw_mono_ns();
    fw_tokenizer *tok = fw_tokenizer_load(s_shared("gpt2-tokenizer"));
    if (!tok) {
        fprintf(stderr, "bench_tokenizer: %s\nHINT: set FW_SHARED_DIR to the shared/ folder\n",
                fw_err_detail());
        return 1;
    }
    s_emit("load_gpt2", (double)(fw_mono_ns() - t0) / 1e6, "ms");

    s_corpus c;
    if (s_corpus_read(s_shared("corpora/sotu.jsonl"), &c) < 0) return 1;
    double mb = (double)c.bytes / 1e6;
    int32_t **ids = calloc(c.n, sizeof *ids);
    size_t *nids = calloc(c.n, sizeof *nids), tokens = 0;
    double cold = s_encode_all(tok, &c, ids, nids, &tokens);
    s_emit("encode_sotu", mb / cold, "MB/s");
    double warm = 1e30;
    for (int rep = 0; rep < 2; rep++) {
        size_t t = 0;
        double s = s_encode_all(tok, &c, NULL, NULL, &t);
        if (s < warm) warm = s;
    }
    s_emit("encode_sotu_warm", mb / warm, "MB/s");
    s_emit("tokens_sotu", (double)tokens, "tokens");

    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        int64_t d0 = fw_mono_ns();
        for (size_t i = 0; i < c.n; i++) {
            char *text = NULL;
            size_t len = 0;
            if (fw_tokenizer_decode(tok, ids[i], nids[i], &text, &len) < 0 || len != c.len[i]) {
                fprintf(stderr, "bench_tokenizer: decode mismatch on record %zu\n", i);
                return 1;
            }
            free(text);
        }
        double s = (double)(fw_mono_ns() - d0) / 1e9;
        if (s < best) best = s;
    }
    s_emit("decode_sotu", mb / best, "MB/s");
    for (size_t i = 0; i < c.n; i++) free(ids[i]);
    free(ids);
    free(nids);
    s_corpus_free(&c);

    s_corpus md;
    if (s_corpus_read(s_shared("corpora/moby-dick.jsonl"), &md) < 0) return 1;
    fw_tokenizer *trained = NULL;
    t0 = fw_mono_ns();
    if (fw_tokenizer_train((const char *const *)md.text, md.len, md.n, 4096, &trained) < 0) {
        fprintf(stderr, "bench_tokenizer: train: %s\n", fw_err_detail());
        return 1;
    }
    s_emit("train_moby_4096", (double)(fw_mono_ns() - t0) / 1e6, "ms");
    fw_tokenizer_destroy(&trained);
    s_corpus_free(&md);
    fw_tokenizer_destroy(&tok);
    return 0;
}
