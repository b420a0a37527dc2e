/* cli_eval.c - the eval verb: loss and perplexity, exact match of greedy
 * completions, multiple-choice accuracy.
 *
 * Theory of operation
 * -------------------
 * The dataset's first record decides its kind, and every record must be of
 * that kind (a mixed file is an error naming the line):
 *
 *   text        {"text"} or {"messages"}: tokenised exactly as for training
 *               (fw_data_tokenize_record: tokens, EOT, loss mask); the loss
 *               is the token-weighted mean over mask-1 tokens.
 *   completion  {"prompt", "completion"}: context enc(prompt) (just EOT when
 *               the prompt is empty), continuation enc(completion) EOT.
 *               Loss over the continuation; exact match when, at every
 *               completion token, the model's argmax given the prompt and
 *               the reference tokens before it IS that token. That is the
 *               same as "greedy decoding from the prompt reproduces the
 *               reference tokens" (each greedy step sees exactly that
 *               prefix), computed in one teacher-forced forward. The final
 *               EOT counts for the loss, not for the match.
 *   choice      {"prompt", "choices": [..], "answer": i | "text"}: for each
 *               choice, log p(enc(choice) | enc(prompt)) summed over its
 *               tokens, as lm-evaluation-harness does; the prediction is the
 *               argmax (acc) and the argmax of logprob / (characters of the
 *               choice) (acc_norm); ties go to the lowest index. Choices are
 *               scored as written: put the leading space in them
 *               (" Paris") when the prompt does not end with one.
 *
 * Every scored sequence is a row; rows are packed B at a time into one
 * forward pass of width max(len) (short rows padded with id 0 and target -1,
 * which the loss ignores; attention is causal so padding never leaks back).
 * Text records longer than T are cut into consecutive windows of T inputs,
 * each scored without the previous window as context (documented: a
 * context-free restart every T tokens, which raises the loss slightly above
 * a sliding-window evaluation). A completion or choice whose prompt and
 * continuation do not fit in T inputs is an error naming the line: silently
 * cutting the prompt would score a different question.
 *
 * Per-example results (--per-example) are one JSON line per record in input
 * order, for paired comparisons of two models on the same file. */
#include "cli.h"
#include "data.h"

#include "fw_dataset.h"
#include "fw_err.h"
#include "fw_file.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum { S_KIND_NONE, S_KIND_TEXT, S_KIND_COMPLETION, S_KIND_CHOICE } s_kind;

static const char *s_kind_name(s_kind k) {
    switch (k) {
    case S_KIND_TEXT: return "text";
    case S_KIND_COMPLETION: return "completion";
    case S_KIND_CHOICE: return "choice";
    default: return "none";
    }
}

/* One scored sequence's totals (a text record, a completion, one choice). */
typedef struct {
    double logprob; /* sum of log p over scored targets (<= 0) */
    size_t tokens;  /* scored targets */
    int em_ok;      /* every exact-match position was the argmax */
} s_unit;

/* A record: its line and the units it owns [unit0, unit0 + nunits). */
typedef struct {
    size_t line;
    size_t unit0;
    int nunits;
    int answer;      /* choice: the right index */
    size_t *chars;   /* choice: characters of each choice (acc_norm), owned */
} s_record;

typedef struct {
    fw_model *m;
    int B, T, eot;
    int need_argmax;
    /* the batch being filled: row r occupies [r*T, r*T + row_len[r]) */
    int32_t *in, *tg;
    int *row_len;
    size_t *row_unit;
    uint8_t *row_skip_last; /* the last target (EOT) counts for loss, not match */
    int nrows;
    float *losses;
    int32_t *argmax;
    s_unit *units;
    size_t nunits, cap_units;
    s_record *recs;
    size_t nrecs, cap_recs;
} s_scorer;

static void s_scorer_free(s_scorer *sc) {
    free(sc->in), free(sc->tg), free(sc->row_len), free(sc->row_unit), free(sc->row_skip_last);
    free(sc->losses), free(sc->argmax), free(sc->units);
    for (size_t i = 0; i < sc->nrecs; i++) free(sc->recs[i].chars);
    free(sc->recs);
    memset(sc, 0, sizeof *sc);
}

static int s_scorer_init(s_scorer *sc, fw_model *m, int B, int T, int eot, int need_argmax) {
    memset(sc, 0, sizeof *sc);
    sc->m = m, sc->B = B, sc->T = T, sc->eot = eot, sc->need_argmax = need_argmax;
    size_t bt = (size_t)B * (size_t)T;
    sc->in = malloc(bt * sizeof *sc->in);
    sc->tg = malloc(bt * sizeof *sc->tg);
    sc->row_len = calloc((size_t)B, sizeof *sc->row_len);
    sc->row_unit = calloc((size_t)B, sizeof *sc->row_unit);
    sc->row_skip_last = calloc((size_t)B, 1);
    sc->losses = malloc(bt * sizeof *sc->losses);
    sc->argmax = malloc(bt * sizeof *sc->argmax);
    if (!sc->in || !sc->tg || !sc->row_len || !sc->row_unit || !sc->row_skip_last ||
        !sc->losses || !sc->argmax) {
        s_scorer_free(sc);
        return fw_cli_fail("out of memory for a batch of %d x %d", B, T);
    }
    return 0;
}

static int s_new_unit(s_scorer *sc, size_t *idx) {
    if (sc->nunits == sc->cap_units) {
        size_t cap = sc->cap_units ? 2 * sc->cap_units : 256;
        s_unit *u = realloc(sc->units, cap * sizeof *u);
        if (!u) return fw_cli_fail("out of memory");
        sc->units = u, sc->cap_units = cap;
    }
    sc->units[sc->nunits] = (s_unit){0.0, 0, 1};
    *idx = sc->nunits++;
    return 0;
}

static s_record *s_new_record(s_scorer *sc, size_t line) {
    if (sc->nrecs == sc->cap_recs) {
        size_t cap = sc->cap_recs ? 2 * sc->cap_recs : 256;
        s_record *r = realloc(sc->recs, cap * sizeof *r);
        if (!r) {
            fw_cli_fail("out of memory");
            return NULL;
        }
        sc->recs = r, sc->cap_recs = cap;
    }
    s_record *r = &sc->recs[sc->nrecs++];
    memset(r, 0, sizeof *r);
    r->line = line;
    r->unit0 = sc->nunits;
    return r;
}

/* Run the rows collected so far through the model and add their scores. */
static int s_flush(s_scorer *sc) {
    if (sc->nrows == 0) return 0;
    int nb = sc->nrows, Tb = 0;
    for (int r = 0; r < nb; r++)
        if (sc->row_len[r] > Tb) Tb = sc->row_len[r];
    /* Compact the rows from stride T to stride Tb (Tb <= T, so moving row r
     * down to r*Tb never overwrites a row not yet moved) and pad. */
    for (int r = 0; r < nb; r++) {
        size_t src = (size_t)r * (size_t)sc->T, dst = (size_t)r * (size_t)Tb;
        memmove(sc->in + dst, sc->in + src, (size_t)sc->row_len[r] * sizeof *sc->in);
        memmove(sc->tg + dst, sc->tg + src, (size_t)sc->row_len[r] * sizeof *sc->tg);
        for (int t = sc->row_len[r]; t < Tb; t++) sc->in[dst + t] = 0, sc->tg[dst + t] = -1;
    }
    fw_err_clear();
    float mean;
    if (fw_model_forward(sc->m, sc->in, sc->tg, nb, Tb, &mean) != 0 ||
        fw_model_get_losses(sc->m, sc->losses) != 0 ||
        (sc->need_argmax && fw_model_get_argmax(sc->m, sc->argmax) != 0))
        return fw_cli_fail("forward pass: %s", fw_err_detail());
    for (int r = 0; r < nb; r++) {
        s_unit *u = &sc->units[sc->row_unit[r]];
        size_t base = (size_t)r * (size_t)Tb;
        for (int t = 0; t < sc->row_len[r]; t++) {
            if (sc->tg[base + t] < 0) continue;
            u->logprob -= (double)sc->losses[base + t];
            u->tokens++;
            int last = t == sc->row_len[r] - 1;
            if (sc->need_argmax && !(last && sc->row_skip_last[r]) &&
                sc->argmax[base + t] != sc->tg[base + t])
                u->em_ok = 0;
        }
    }
    sc->nrows = 0;
    return 0;
}

/* Add one row of len inputs; tg[i] is the target after in[i] or -1. */
static int s_add_row(s_scorer *sc, size_t unit, const int32_t *in, const int32_t *tg, int len,
                     int skip_last) {
    if (sc->nrows == sc->B && s_flush(sc) != 0) return -1;
    int r = sc->nrows++;
    memcpy(sc->in + (size_t)r * (size_t)sc->T, in, (size_t)len * sizeof *in);
    memcpy(sc->tg + (size_t)r * (size_t)sc->T, tg, (size_t)len * sizeof *tg);
    sc->row_len[r] = len;
    sc->row_unit[r] = unit;
    sc->row_skip_last[r] = (uint8_t)skip_last;
    return 0;
}

/* A training-shaped record (ids with loss mask) as windows of T inputs. */
static int s_add_masked(s_scorer *sc, size_t unit, const int32_t *ids, const uint8_t *mask,
                        size_t n, int32_t *tgbuf) {
    for (size_t start = 0; start + 1 < n; start += (size_t)sc->T) {
        size_t len = n - 1 - start;
        if (len > (size_t)sc->T) len = (size_t)sc->T;
        int any = 0;
        for (size_t i = 0; i < len; i++) {
            tgbuf[i] = mask[start + i + 1] ? ids[start + i + 1] : -1;
            any |= tgbuf[i] >= 0;
        }
        if (any && s_add_row(sc, unit, ids + start, tgbuf, (int)len, 0) != 0) return -1;
    }
    return 0;
}

/* context ++ continuation as one row scoring the continuation. */
static int s_add_cont(s_scorer *sc, size_t unit, const int32_t *ctx, size_t nctx,
                      const int32_t *cont, size_t ncont, int skip_last, int32_t *inbuf,
                      int32_t *tgbuf, const char *path, size_t line) {
    size_t n = nctx + ncont;
    if (n - 1 > (size_t)sc->T)
        return fw_cli_fail("%s line %zu: prompt and continuation are %zu tokens, more than fit "
                           "in a context of %d positions (--seq / n_ctx); shorten the prompt",
                           path, line, n, sc->T);
    for (size_t i = 0; i + 1 < n; i++) {
        inbuf[i] = i < nctx ? ctx[i] : cont[i - nctx];
        int32_t next = i + 1 < nctx ? ctx[i + 1] : cont[i + 1 - nctx];
        tgbuf[i] = i + 1 >= nctx ? next : -1;
    }
    return s_add_row(sc, unit, inbuf, tgbuf, (int)(n - 1), skip_last);
}

static int s_encode(const fw_tokenizer *tok, const char *s, size_t len, int32_t **ids, size_t *n,
                    const char *path, size_t line, const char *field) {
    fw_err_clear();
    if (fw_tokenizer_encode(tok, s, len, ids, n) != 0)
        return fw_cli_fail("%s line %zu: field \"%s\": %s", path, line, field, fw_err_detail());
    return 0;
}

static s_kind s_kind_of(json_t *obj) {
    if (json_object_get(obj, "choices")) return S_KIND_CHOICE;
    if (json_object_get(obj, "completion") || json_object_get(obj, "prompt"))
        return S_KIND_COMPLETION;
    return S_KIND_TEXT;
}

/* Read one record of kind `kind` and queue its rows. */
static int s_add_record(s_scorer *sc, const fw_tokenizer *tok, fw_cli_jsonl *r, json_t *obj,
                        s_kind kind, int32_t *inbuf, int32_t *tgbuf) {
    s_record *rec = s_new_record(sc, r->lineno);
    if (!rec) return -1;
    if (kind == S_KIND_TEXT) {
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        size_t n = 0, u = 0;
        fw_err_clear();
        if (fw_data_tokenize_record(r->rec, r->rec_len, tok, &ids, &mask, &n) != 0)
            return fw_cli_fail("%s line %zu: %s", r->path, r->lineno, fw_err_detail());
        int rc = s_new_unit(sc, &u);
        if (!rc) rc = s_add_masked(sc, u, ids, mask, n, tgbuf);
        free(ids), free(mask);
        rec->nunits = 1;
        return rc;
    }
    const char *prompt;
    size_t plen;
    if (fw_cli_json_str(r, obj, "prompt", 1, &prompt, &plen) < 0) return -1;
    int32_t *ctx = NULL;
    size_t nctx = 0;
    if (s_encode(tok, prompt, plen, &ctx, &nctx, r->path, r->lineno, "prompt") != 0) return -1;
    if (nctx == 0) {
        /* An empty prompt still needs a position to predict the first
         * continuation token from: <|endoftext|>, as lm-evaluation-harness. */
        free(ctx);
        if (sc->eot < 0)
            return fw_cli_fail("%s line %zu: empty prompt and the tokenizer has no "
                               "<|endoftext|> to stand in for it",
                               r->path, r->lineno);
        ctx = malloc(sizeof *ctx);
        if (!ctx) return fw_cli_fail("out of memory");
        ctx[0] = sc->eot;
        nctx = 1;
    }
    int rc = -1;
    int32_t *cont = NULL;
    size_t ncont = 0, u = 0;
    if (kind == S_KIND_COMPLETION) {
        const char *comp;
        size_t clen;
        if (fw_cli_json_str(r, obj, "completion", 1, &comp, &clen) < 0) goto done;
        if (clen == 0) {
            fw_cli_fail("%s line %zu: field \"completion\" is empty", r->path, r->lineno);
            goto done;
        }
        if (s_encode(tok, comp, clen, &cont, &ncont, r->path, r->lineno, "completion") != 0)
            goto done;
        int with_eot = sc->eot >= 0;
        if (with_eot) {
            int32_t *c2 = realloc(cont, (ncont + 1) * sizeof *c2);
            if (!c2) {
                fw_cli_fail("out of memory");
                goto done;
            }
            cont = c2;
            cont[ncont++] = sc->eot;
        }
        if (s_new_unit(sc, &u) != 0) goto done;
        rec->nunits = 1;
        rc = s_add_cont(sc, u, ctx, nctx, cont, ncont, with_eot, inbuf, tgbuf, r->path,
                        r->lineno);
        goto done;
    }
    /* choice */
    json_t *choices = json_object_get(obj, "choices"), *ans = json_object_get(obj, "answer");
    fw_dataset_shape shape;
    fw_err_clear();
    if (fw_dataset_check_record(obj, FW_DATASET_CHECK_INGEST, &shape) != 0 ||
        shape != FW_DATASET_SHAPE_CHOICE) {
        fw_cli_fail("%s line %zu: %s", r->path, r->lineno,
                    fw_err_detail()[0] ? fw_err_detail() : "not a prompt+choices+answer record");
        goto done;
    }
    size_t nch = json_array_size(choices);
    rec->chars = calloc(nch, sizeof *rec->chars);
    if (!rec->chars) {
        fw_cli_fail("out of memory");
        goto done;
    }
    /* The answer, valid by the check above: an index, or the first choice equal to it. */
    rec->answer = json_is_integer(ans) ? (int)json_integer_value(ans) : -1;
    for (size_t c = 0; c < nch && rec->answer < 0; c++)
        if (json_equal(ans, json_array_get(choices, c))) rec->answer = (int)c;
    for (size_t c = 0; c < nch; c++) {
        json_t *ch = json_array_get(choices, c);
        free(cont);
        cont = NULL;
        if (s_encode(tok, json_string_value(ch), json_string_length(ch), &cont, &ncont, r->path,
                     r->lineno, "choices") != 0)
            goto done;
        rec->chars[c] = fw_cli_utf8_chars(json_string_value(ch), json_string_length(ch));
        if (s_new_unit(sc, &u) != 0) goto done;
        rec->nunits++;
        if (s_add_cont(sc, u, ctx, nctx, cont, ncont, 0, inbuf, tgbuf, r->path, r->lineno) != 0)
            goto done;
    }
    rc = 0;
done:
    free(ctx);
    free(cont);
    return rc;
}

/* Score a whole file; *kind_io fixes the kind (S_KIND_NONE: from the first
 * record). */
static int s_score_file(s_scorer *sc, const fw_tokenizer *tok, const char *path, s_kind *kind_io) {
    fw_cli_jsonl r;
    if (fw_cli_jsonl_open(&r, path) != 0) return -1;
    int32_t *inbuf = malloc((size_t)sc->T * sizeof *inbuf);
    int32_t *tgbuf = malloc((size_t)sc->T * sizeof *tgbuf);
    int rc = -1, got;
    json_t *obj;
    if (!inbuf || !tgbuf) {
        fw_cli_fail("out of memory");
        goto done;
    }
    while ((got = fw_cli_jsonl_next(&r, &obj)) == 1) {
        s_kind k = s_kind_of(obj);
        if (*kind_io == S_KIND_NONE) *kind_io = k;
        if (k != *kind_io) {
            fw_cli_fail("%s line %zu: a %s record in a %s dataset (the first record decides "
                        "the kind; do not mix them)",
                        r.path, r.lineno, s_kind_name(k), s_kind_name(*kind_io));
            json_decref(obj);
            goto done;
        }
        int arc = s_add_record(sc, tok, &r, obj, k, inbuf, tgbuf);
        json_decref(obj);
        if (arc != 0) goto done;
    }
    if (got < 0 || s_flush(sc) != 0) goto done;
    if (sc->nrecs == 0) {
        fw_cli_fail("%s: no records (the dataset is empty)", r.path);
        goto done;
    }
    rc = 0;
done:
    free(inbuf), free(tgbuf);
    fw_cli_jsonl_close(&r);
    return rc;
}

int fw_cli_eval_text_file(fw_model *m, const fw_tokenizer *tok, const char *path, int B, int T,
                          FILE *per_example, fw_cli_text_eval *out) {
    memset(out, 0, sizeof *out);
    fw_model_set_train(m, 0);
    s_scorer sc;
    if (s_scorer_init(&sc, m, B, T, fw_tokenizer_eot(tok), 0) != 0) return -1;
    s_kind kind = S_KIND_TEXT;
    int rc = s_score_file(&sc, tok, path, &kind);
    if (rc == 0) {
        for (size_t i = 0; i < sc.nrecs; i++) {
            s_unit *u = &sc.units[sc.recs[i].unit0];
            out->loss_sum -= u->logprob;
            out->tokens += u->tokens;
            if (per_example)
                fprintf(per_example,
                        "{\"index\":%zu,\"line\":%zu,\"loss\":%.9g,\"tokens\":%zu,\"logprob\":%."
                        "17g}\n",
                        i, sc.recs[i].line, u->tokens ? -u->logprob / (double)u->tokens : 0.0,
                        u->tokens, u->logprob);
        }
        out->records = sc.nrecs;
        if (out->tokens == 0) rc = fw_cli_fail("%s: no token to score", path);
    }
    s_scorer_free(&sc);
    return rc;
}

/* ---- the verb ---------------------------------------------------------- */

static const fw_cli_opt s_eval_opts[] = {
    {"model", FW_OPT_STR, 1, NULL, 0, 0, "DIR", "model directory"},
    {"data", FW_OPT_STR, 1, NULL, 0, 0, "FILE.jsonl",
     "text / messages, prompt+completion, or prompt+choices+answer records"},
    {"seq", FW_OPT_INT, 0, "0", 0, 1 << 20, "T", "tokens per row (0: the model's context)"},
    {"batch", FW_OPT_INT, 0, "8", 1, 4096, "B", "rows per forward pass"},
    {"per-example", FW_OPT_STR, 0, NULL, 0, 0, "FILE", "write one JSON line of scores per record"},
    {"threads", FW_OPT_INT, 0, "0", 0, 1024, "N", "CPU threads (0: OpenMP's default)"},
    {"device", FW_OPT_STR, 0, "cpu", 0, 0, "DEV", "cpu (or cuda[:N] when built in)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL}};

static int s_write_per_example(const char *path, const s_scorer *sc, s_kind kind) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return fw_cli_fail("out of memory");
    for (size_t i = 0; i < sc->nrecs; i++) {
        const s_record *rec = &sc->recs[i];
        const s_unit *u = &sc->units[rec->unit0];
        fprintf(f, "{\"index\":%zu,\"line\":%zu", i, rec->line);
        if (kind == S_KIND_CHOICE) {
            int best = 0, best_n = 0;
            for (int c = 1; c < rec->nunits; c++) {
                if (u[c].logprob > u[best].logprob) best = c;
                if (u[c].logprob / (double)rec->chars[c] >
                    u[best_n].logprob / (double)rec->chars[best_n])
                    best_n = c;
            }
            fprintf(f, ",\"answer\":%d,\"pred\":%d,\"pred_norm\":%d,\"correct\":%d,"
                       "\"correct_norm\":%d,\"logprobs\":[",
                    rec->answer, best, best_n, best == rec->answer, best_n == rec->answer);
            for (int c = 0; c < rec->nunits; c++)
                fprintf(f, "%s%.17g", c ? "," : "", u[c].logprob);
            fprintf(f, "],\"chars\":[");
            for (int c = 0; c < rec->nunits; c++) fprintf(f, "%s%zu", c ? "," : "", rec->chars[c]);
            fprintf(f, "]}\n");
        } else {
            if (kind == S_KIND_COMPLETION) fprintf(f, ",\"exact_match\":%d", u->em_ok);
            fprintf(f, ",\"loss\":%.9g,\"tokens\":%zu,\"logprob\":%.17g}\n",
                    u->tokens ? -u->logprob / (double)u->tokens : 0.0, u->tokens, u->logprob);
        }
    }
    if (fclose(f) != 0) {
        free(buf);
        return fw_cli_fail("out of memory");
    }
    fw_err_clear();
    int rc = fw_file_write_atomic(path, buf, len, 0644);
    free(buf);
    if (rc != 0) return fw_cli_fail("--per-example %s: %s", path, fw_err_detail());
    return 0;
}

static int s_eval_run(const fw_cli_args *a) {
    if (fw_cli_int(a, "threads") > 0) fw_engine_set_threads((int)fw_cli_int(a, "threads"));
    fw_model *m;
    fw_tokenizer *tok;
    const char *mdir = fw_cli_str(a, "model"), *data = fw_cli_str(a, "data");
    if (fw_cli_load_model(mdir, fw_cli_str(a, "device"), &m, &tok) != 0) return FW_CLI_EXIT_ERROR;
    int n_ctx = fw_model_config_get(m)->n_ctx;
    int T = (int)fw_cli_int(a, "seq");
    int rc = FW_CLI_EXIT_ERROR;
    s_scorer sc = {0};
    if (T == 0) T = n_ctx;
    if (T > n_ctx) {
        fw_cli_fail("--seq %d is longer than the model's context %d", T, n_ctx);
        goto done;
    }
    fw_model_set_train(m, 0);
    /* Argmax is needed for exact match only, but the kind is known only
     * after the first record; one pass over the logits is cheap next to the
     * forward, so it is always computed. */
    if (s_scorer_init(&sc, m, (int)fw_cli_int(a, "batch"), T, fw_tokenizer_eot(tok), 1) != 0)
        goto done;
    s_kind kind = S_KIND_NONE;
    if (s_score_file(&sc, tok, data, &kind) != 0) goto done;

    json_t *res = json_pack("{s:s, s:s, s:s, s:I}", "model", mdir, "data", data, "kind",
                            s_kind_name(kind), "records", (json_int_t)sc.nrecs);
    if (kind == S_KIND_CHOICE) {
        size_t ok = 0, ok_n = 0;
        for (size_t i = 0; i < sc.nrecs; i++) {
            const s_record *rec = &sc.recs[i];
            const s_unit *u = &sc.units[rec->unit0];
            int best = 0, best_n = 0;
            for (int c = 1; c < rec->nunits; c++) {
                if (u[c].logprob > u[best].logprob) best = c;
                if (u[c].logprob / (double)rec->chars[c] >
                    u[best_n].logprob / (double)rec->chars[best_n])
                    best_n = c;
            }
            ok += best == rec->answer;
            ok_n += best_n == rec->answer;
        }
        json_object_set_new(res, "accuracy", json_real((double)ok / (double)sc.nrecs));
        json_object_set_new(res, "accuracy_norm", json_real((double)ok_n / (double)sc.nrecs));
        json_object_set_new(res, "correct", json_integer((json_int_t)ok));
        json_object_set_new(res, "correct_norm", json_integer((json_int_t)ok_n));
    } else {
        double lsum = 0;
        size_t ntok = 0, em = 0;
        for (size_t i = 0; i < sc.nunits; i++) {
            lsum -= sc.units[i].logprob;
            ntok += sc.units[i].tokens;
            em += sc.units[i].em_ok;
        }
        if (ntok == 0) {
            json_decref(res);
            fw_cli_fail("%s: no token to score", data);
            goto done;
        }
        double loss = lsum / (double)ntok;
        json_object_set_new(res, "tokens", json_integer((json_int_t)ntok));
        json_object_set_new(res, "loss", json_real(loss));
        json_object_set_new(res, "perplexity", json_real(exp(loss)));
        if (kind == S_KIND_COMPLETION) {
            json_object_set_new(res, "exact_match", json_real((double)em / (double)sc.nunits));
            json_object_set_new(res, "exact_matches", json_integer((json_int_t)em));
        }
    }
    if (fw_cli_given(a, "per-example") &&
        s_write_per_example(fw_cli_str(a, "per-example"), &sc, kind) != 0) {
        json_decref(res);
        goto done;
    }
    fw_cli_emit(res);
    rc = FW_CLI_EXIT_OK;
done:
    s_scorer_free(&sc);
    fw_tokenizer_destroy(&tok);
    fw_model_destroy(&m);
    return rc;
}

const fw_cli_verb fw_cli_verb_eval = {
    "eval",
    "loss / perplexity, exact match of greedy completions, or multiple-choice accuracy",
    "The first record decides the kind: {\"text\"} or {\"messages\"} -> token-weighted loss and\n"
    "perplexity; {\"prompt\",\"completion\"} -> loss on the completion and exact match (greedy\n"
    "decoding reproduces the completion's tokens); {\"prompt\",\"choices\",\"answer\"} ->\n"
    "accuracy by the log-likelihood of each choice, and accuracy_norm by log-likelihood per\n"
    "character. A prompt that does not fit in the context is an error (no truncation).",
    "flywheel-engine eval --model model/ --data heldout.jsonl --per-example scores.jsonl",
    s_eval_opts,
    s_eval_run};
