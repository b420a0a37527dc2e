/* cli_generate.c - the generate verb: KV-cache sampling with stop strings
 * and streaming.
 *
 * Theory of operation
 * -------------------
 * Per prompt: encode it (an empty prompt becomes <|endoftext|>, the usual
 * "start of a document"), prefill the KV cache, then repeat
 *
 *     sample a token from the last logits (fw_sample: greedy, temperature,
 *       top-k, top-p; the RNG is seeded with --seed + prompt index, so each
 *       prompt's output does not depend on the others)
 *     <|endoftext|>            -> finish "stop"
 *     append its bytes; a stop string now in the text -> cut there, "stop"
 *     --max-tokens reached, or the context is full   -> finish "length"
 *     decode the token (one KV-cache step) for the next logits
 *
 * Text handling. A token may end inside a UTF-8 character, and a random
 * model may emit byte sequences that are not UTF-8 at all, while JSON needs
 * valid UTF-8. Bytes therefore pass through a small decoder: complete
 * characters move into `text`; a byte that cannot start or continue a
 * character becomes U+FFFD; an incomplete tail waits for the next token.
 * Stop strings are matched against `text`.
 *
 * Streaming (--stream) prints {"token": id, "text": delta} per generated
 * token, then the final object. The deltas are exactly the final text cut
 * into pieces: a token's delta holds the characters it completed, minus a
 * tail that could still turn into a stop string (held back until it cannot,
 * then released), so no stop string ever reaches the stream. The final
 * <|endoftext|> gets a line too (delta "" or the released tail).
 *
 * A prompt longer than the context is an error naming it; a prompt that
 * fills the context exactly may still produce one token. */
#include "cli.h"

#include "fw_err.h"
#include "fw_utf8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const fw_cli_opt s_gen_opts[] = {
    {"model", FW_OPT_STR, 1, NULL, 0, 0, "DIR", "model directory"},
    {"prompt", FW_OPT_STR, 0, NULL, 0, 0, "TEXT", "one prompt"},
    {"prompts", FW_OPT_STR, 0, NULL, 0, 0, "FILE.jsonl",
     "records {\"prompt\": ...}, one result line each"},
    {"max-tokens", FW_OPT_INT, 0, "64", 1, 1 << 24, "N", "most tokens to generate per prompt"},
    {"temperature", FW_OPT_FLOAT, 0, "1.0", 0, 100, "F", "sampling temperature; 0 = greedy"},
    {"top-k", FW_OPT_INT, 0, "0", 0, 1 << 24, "K", "sample among the K most likely (0: all)"},
    {"top-p", FW_OPT_FLOAT, 0, "1.0", 0, 1, "P", "nucleus sampling mass (1: all)"},
    {"seed", FW_OPT_INT, 0, "1337", 0, 9.2e18, "N", "sampling seed (prompt i uses seed + i)"},
    {"stop", FW_OPT_MULTI, 0, NULL, 0, 0, "STR", "stop before this text"},
    {"stream", FW_OPT_FLAG, 0, NULL, 0, 0, NULL,
     "print {\"token\", \"text\"} lines as tokens come"},
    {"threads", FW_OPT_INT, 0, "0", 0, 1024, "N", "CPU threads (0: OpenMP's default)"},
    {"device", FW_OPT_STR, 0, "cpu", 0, 0, "DEV", "cpu (or cuda[:N] when built in)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL}};

/* ---- growing byte buffer ----------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
} s_buf;

static int s_buf_add(s_buf *b, const void *data, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

/* Could s[0..len) still become one valid UTF-8 character with more bytes?
 * (The lead byte and the continuation bytes seen so far are all in range.) */
static int s_utf8_incomplete(const unsigned char *s, size_t len) {
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    size_t k;
    if (c >= 0xC2 && c <= 0xDF) k = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (len > k) return 0;
    if (len >= 2 && (s[1] < lo || s[1] > hi)) return 0;
    for (size_t j = 2; j < len; j++)
        if ((s[j] & 0xC0) != 0x80) return 0;
    return 1;
}

/* Move what can be decided of pending bytes into text (see the header). */
static int s_drain(s_buf *pending, s_buf *text, int final) {
    const unsigned char *p = (const unsigned char *)pending->p;
    size_t i = 0;
    while (i < pending->n) {
        size_t ok = fw_utf8_valid_prefix(p + i, pending->n - i);
        if (ok && s_buf_add(text, p + i, ok) != 0) return -1;
        i += ok;
        if (i == pending->n) break;
        if (!final && s_utf8_incomplete(p + i, pending->n - i)) break;
        if (s_buf_add(text, "\xEF\xBF\xBD", 3) != 0) return -1; /* U+FFFD */
        i++;
    }
    memmove(pending->p, pending->p + i, pending->n - i);
    pending->n -= i;
    return 0;
}

/* Bytes at the end of text[0..n) that are a proper prefix of some stop
 * string, backed up to a character boundary: they must wait. */
static size_t s_holdback(const char *text, size_t n, const char *const *stops, size_t nstops) {
    size_t hold = 0;
    for (size_t s = 0; s < nstops; s++) {
        size_t sl = strlen(stops[s]);
        for (size_t k = sl > 0 ? sl - 1 : 0; k > hold; k--)
            if (k <= n && memcmp(text + n - k, stops[s], k) == 0) {
                hold = k;
                break;
            }
    }
    while (hold < n && ((unsigned char)text[n - hold] & 0xC0) == 0x80) hold++;
    return hold;
}

typedef struct {
    fw_model *m;
    const fw_tokenizer *tok;
    fw_sampler sampler;
    int max_tokens, stream, V, tok_v, eot, n_ctx;
    uint64_t seed;
    const char *const *stops;
    size_t nstops;
    float *logits;
} s_gen;

static int s_emit_token(int32_t id, const char *delta, size_t n) {
    json_t *o = json_pack("{s:i, s:s%}", "token", (int)id, "text", delta, n);
    if (!o) return fw_cli_fail("cannot encode token %d as JSON", (int)id);
    return fw_cli_emit(o) == 0 ? 0 : fw_cli_fail("writing the output failed");
}

static int s_generate_one(s_gen *g, const char *prompt, size_t plen, size_t index,
                          const char *where) {
    int32_t *pids = NULL, *out_ids = NULL;
    size_t np = 0;
    int rc = -1, nout = 0;
    fw_kv_cache *kv = NULL;
    s_buf pending = {0}, text = {0};
    const char *finish = "length";
    if (s_buf_add(&text, "", 0) != 0 || s_buf_add(&pending, "", 0) != 0) {
        fw_cli_fail("out of memory");
        goto done;
    }
    fw_err_clear();
    if (fw_tokenizer_encode(g->tok, prompt, plen, &pids, &np) != 0) {
        fw_cli_fail("%s: %s", where, fw_err_detail());
        goto done;
    }
    if (np == 0) {
        free(pids);
        pids = malloc(sizeof *pids);
        if (!pids || g->eot < 0) {
            fw_cli_fail("%s: empty prompt and no <|endoftext|> token to start from", where);
            goto done;
        }
        pids[0] = g->eot, np = 1;
    }
    if (np > (size_t)g->n_ctx) {
        fw_cli_fail("%s: the prompt is %zu tokens, longer than the model's context of %d tokens",
                    where, np, g->n_ctx);
        goto done;
    }
    size_t max_len = np + (size_t)g->max_tokens;
    if (max_len > (size_t)g->n_ctx) max_len = (size_t)g->n_ctx;
    out_ids = malloc((size_t)g->max_tokens * sizeof *out_ids);
    kv = fw_kv_cache_new(g->m, 1, (int)max_len);
    if (!out_ids || !kv) {
        fw_cli_fail("%s: %s", where, kv ? "out of memory" : fw_err_detail());
        goto done;
    }
    fw_err_clear();
    if (fw_model_prefill(g->m, kv, 0, pids, (int)np, g->logits) != 0) {
        fw_cli_fail("%s: prefill: %s", where, fw_err_detail());
        goto done;
    }
    fw_rng rng;
    fw_rng_seed(&rng, g->seed + index);
    size_t emitted = 0, scan_from = 0;
    for (;;) {
        /* Ids the tokenizer cannot decode (a model vocabulary padded beyond
         * the tokenizer's) are never sampled. */
        for (int v = g->tok_v; v < g->V; v++) g->logits[v] = -INFINITY;
        int id = fw_sample(g->logits, g->V, &g->sampler, &rng);
        if (id < 0) {
            fw_cli_fail("%s: sampling: %s", where, fw_err_detail());
            goto done;
        }
        out_ids[nout++] = id;
        int done_now = 0;
        if (id == g->eot) {
            finish = "stop";
            done_now = 1;
        } else {
            const char *bytes;
            size_t blen;
            if (fw_tokenizer_token_bytes(g->tok, id, &bytes, &blen) != 0 ||
                s_buf_add(&pending, bytes, blen) != 0 || s_drain(&pending, &text, 0) != 0) {
                fw_cli_fail("%s: token %d: %s", where, id, fw_err_detail());
                goto done;
            }
            /* The earliest match of any stop string wins; only the text
             * this token added (and the stop's length before it) is new. */
            const char *cut = NULL;
            for (size_t s = 0; s < g->nstops; s++) {
                size_t sl = strlen(g->stops[s]);
                size_t from = scan_from >= sl ? scan_from - sl + 1 : 0;
                const char *hit = memmem(text.p + from, text.n - from, g->stops[s], sl);
                if (hit && (!cut || hit < cut)) cut = hit;
            }
            if (cut) {
                text.n = (size_t)(cut - text.p);
                text.p[text.n] = '\0';
                pending.n = 0;
                finish = "stop";
                done_now = 1;
            }
            scan_from = text.n;
            if (!done_now && (nout == g->max_tokens || (size_t)fw_kv_cache_len(kv, 0) >= max_len))
                done_now = 1; /* finish stays "length" */
        }
        if (done_now && s_drain(&pending, &text, 1) != 0) {
            fw_cli_fail("out of memory");
            goto done;
        }
        if (g->stream) {
            size_t upto = done_now ? text.n : text.n - s_holdback(text.p, text.n, g->stops,
                                                                   g->nstops);
            if (upto < emitted) upto = emitted;
            if (s_emit_token(id, text.p ? text.p + emitted : "", upto - emitted) != 0) goto done;
            emitted = upto;
        }
        if (done_now) break;
        fw_err_clear();
        if (fw_model_decode(g->m, kv, &id, NULL, g->logits) != 0) {
            fw_cli_fail("%s: decode: %s", where, fw_err_detail());
            goto done;
        }
    }
    json_t *ids = json_array();
    for (int i = 0; ids && i < nout; i++) json_array_append_new(ids, json_integer(out_ids[i]));
    json_t *res = json_pack("{s:I, s:s%, s:i, s:I, s:s, s:o}", "index", (json_int_t)index, "text",
                            text.p ? text.p : "", text.n, "tokens", nout, "prompt_tokens",
                            (json_int_t)np, "finish_reason", finish, "ids", ids);
    if (!res || fw_cli_emit(res) != 0) {
        fw_cli_fail("writing the output failed");
        goto done;
    }
    rc = 0;
done:
    fw_kv_cache_destroy(&kv);
    free(pids), free(out_ids), free(pending.p), free(text.p);
    return rc;
}

static int s_gen_run(const fw_cli_args *a) {
    int has1 = fw_cli_given(a, "prompt"), hasn = fw_cli_given(a, "prompts");
    if (has1 == hasn) {
        fw_cli_fail("give exactly one of --prompt TEXT and --prompts FILE.jsonl");
        return FW_CLI_EXIT_USAGE;
    }
    const char *const *stops;
    size_t nstops = fw_cli_multi(a, "stop", &stops);
    for (size_t s = 0; s < nstops; s++)
        if (!*stops[s]) {
            fw_cli_fail("--stop: an empty stop string would stop before the first token");
            return FW_CLI_EXIT_USAGE;
        }
    if (fw_cli_int(a, "threads") > 0) fw_engine_set_threads((int)fw_cli_int(a, "threads"));
    fw_model *m;
    fw_tokenizer *tok;
    if (fw_cli_load_model(fw_cli_str(a, "model"), fw_cli_str(a, "device"), &m, &tok) != 0)
        return FW_CLI_EXIT_ERROR;
    const fw_model_config *cfg = fw_model_config_get(m);
    s_gen g = {.m = m,
               .tok = tok,
               .sampler = {(float)fw_cli_float(a, "temperature"), (int)fw_cli_int(a, "top-k"),
                           (float)fw_cli_float(a, "top-p")},
               .max_tokens = (int)fw_cli_int(a, "max-tokens"),
               .stream = fw_cli_flag(a, "stream"),
               .V = cfg->vocab_size,
               .tok_v = fw_tokenizer_vocab_size(tok),
               .eot = fw_tokenizer_eot(tok),
               .n_ctx = cfg->n_ctx,
               .seed = (uint64_t)fw_cli_int(a, "seed"),
               .stops = stops,
               .nstops = nstops};
    int rc = FW_CLI_EXIT_ERROR;
    fw_cli_jsonl r;
    int open = 0;
    g.logits = malloc((size_t)g.V * sizeof *g.logits);
    if (!g.logits) {
        fw_cli_fail("out of memory");
        goto done;
    }
    fw_model_set_train(m, 0);
    if (has1) {
        const char *p = fw_cli_str(a, "prompt");
        size_t len = strlen(p);
        if (fw_utf8_valid_prefix((const unsigned char *)p, len) != len) {
            fw_cli_fail("--prompt: invalid UTF-8 at byte %zu",
                        fw_utf8_valid_prefix((const unsigned char *)p, len) + 1);
            goto done;
        }
        if (s_generate_one(&g, p, len, 0, "--prompt") != 0) goto done;
    } else {
        if (fw_cli_jsonl_open(&r, fw_cli_str(a, "prompts")) != 0) goto done;
        open = 1;
        json_t *obj;
        int got;
        size_t index = 0;
        while ((got = fw_cli_jsonl_next(&r, &obj)) == 1) {
            const char *p;
            size_t len;
            char where[600];
            int frc = fw_cli_json_str(&r, obj, "prompt", 1, &p, &len);
            snprintf(where, sizeof where, "%s line %zu", r.path, r.lineno);
            if (frc == 1) frc = s_generate_one(&g, p, len, index++, where) == 0 ? 1 : -1;
            json_decref(obj);
            if (frc != 1) goto done;
        }
        if (got < 0) goto done;
        if (index == 0) {
            fw_cli_fail("%s: no prompts (the file is empty)", r.path);
            goto done;
        }
    }
    rc = FW_CLI_EXIT_OK;
done:
    if (open) fw_cli_jsonl_close(&r);
    free(g.logits);
    fw_tokenizer_destroy(&tok);
    fw_model_destroy(&m);
    return rc;
}

const fw_cli_verb fw_cli_verb_generate = {
    "generate",
    "generate text with a KV cache: greedy or sampled, stop strings, streaming",
    "One result line per prompt: {\"index\", \"text\", \"tokens\", \"prompt_tokens\",\n"
    "\"finish_reason\": \"stop\" (<|endoftext|> or a stop string) | \"length\" (--max-tokens or\n"
    "the context is full), \"ids\"}. The stop string itself is not part of the text. With\n"
    "--stream, a {\"token\": id, \"text\": delta} line comes first for every generated token; the\n"
    "deltas concatenate to the final text (text that might begin a stop string is held back).\n"
    "--temperature 0 is greedy decoding (deterministic).",
    "flywheel-engine generate --model model/ --prompt \"Call me\" --max-tokens 20 --temperature 0",
    s_gen_opts,
    s_gen_run};
