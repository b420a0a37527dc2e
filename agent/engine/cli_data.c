/* cli_data.c - the verbs that make models and data: init, tokenize,
 * tokenizer-train, prepare.
 *
 * Theory of operation
 * -------------------
 * These verbs are thin: each reads its inputs, calls one library function
 * (fw_model_init_random + fw_model_save_dir, fw_tokenizer_encode,
 * fw_tokenizer_train + fw_tokenizer_save, fw_data_tokenize) and prints what
 * happened as one JSON line. Their job is the edges: every way the input can
 * be wrong is reported with the file, line and field, and nothing is left
 * half-written (the library writes files atomically).
 *
 * init's vocabulary rule: the model's vocab_size is --vocab-size when given,
 * else the vocab_size written in a FILE.json config, else the preset's
 * (GPT-2's 50257) shrunk to the tokenizer's size when the tokenizer is
 * smaller, so a model for a 512-token BPE has 512 embedding rows, not 50257.
 * A tokenizer larger than the model's vocabulary is an error: its high ids
 * would index past the embedding. */
#include "cli.h"
#include "data.h"

#include "fw_err.h"

#include <stdlib.h>
#include <string.h>

/* ---- init ------------------------------------------------------------ */

static const fw_cli_opt s_init_opts[] = {
    {"config", FW_OPT_STR, 1, NULL, 0, 0, "NAME|FILE.json",
     "preset (tiny, small, gpt2-124m) or a GPT2Config-style JSON file"},
    {"tokenizer", FW_OPT_STR, 1, NULL, 0, 0, "DIR",
     "tokenizer directory (vocab.json+merges.txt, encoder.json+vocab.bpe or tokenizer.json)"},
    {"out", FW_OPT_STR, 1, NULL, 0, 0, "DIR", "model directory to write"},
    {"seed", FW_OPT_INT, 1, NULL, 0, 9.2e18, "N", "initialisation seed"},
    {"vocab-size", FW_OPT_INT, 0, NULL, 1, 1 << 24, "V",
     "vocabulary size (default: the tokenizer's when smaller than the config's)"},
    {"device", FW_OPT_STR, 0, "cpu", 0, 0, "DEV", "device to initialise on"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL}};

/* Real parameters: the padded rows of wte are not parameters anyone trains. */
static size_t s_real_params(const fw_model *m) {
    const fw_model_config *c = fw_model_config_get(m);
    return fw_model_num_params(m) -
           (size_t)(c->padded_vocab_size - c->vocab_size) * (size_t)c->n_embd;
}

static int s_init_run(const fw_cli_args *a) {
    const char *spec = fw_cli_str(a, "config"), *tdir = fw_cli_str(a, "tokenizer");
    const char *out = fw_cli_str(a, "out");
    fw_err_clear();
    fw_tokenizer *tok = fw_tokenizer_load(tdir);
    if (!tok) return fw_cli_fail("tokenizer %s: %s", tdir, fw_err_detail());
    int tv = fw_tokenizer_vocab_size(tok);
    fw_tokenizer_destroy(&tok);

    fw_model_config cfg;
    int file_vocab = 0;
    if (fw_cli_config_from(spec, &cfg, &file_vocab) != 0) return FW_CLI_EXIT_ERROR;
    if (fw_cli_given(a, "vocab-size"))
        cfg.vocab_size = (int)fw_cli_int(a, "vocab-size");
    else if (!file_vocab && tv < cfg.vocab_size)
        cfg.vocab_size = tv;
    if (tv > cfg.vocab_size)
        return fw_cli_fail("the tokenizer in %s has %d tokens, more than the model's vocab_size "
                           "%d: ids >= %d would be out of range",
                           tdir, tv, cfg.vocab_size, cfg.vocab_size);
    cfg.padded_vocab_size = 0; /* recomputed from the new vocab_size */
    fw_err_clear();
    if (fw_model_config_check(&cfg) != 0) return fw_cli_fail("config %s: %s", spec, fw_err_detail());

    fw_model *m = fw_model_new(&cfg, fw_cli_str(a, "device"));
    if (!m) return fw_cli_fail("creating the model: %s", fw_err_detail());
    int rc = FW_CLI_EXIT_ERROR;
    uint64_t seed = (uint64_t)fw_cli_int(a, "seed");
    fw_err_clear();
    if (fw_model_init_random(m, seed) != 0) {
        fw_cli_fail("initialising: %s", fw_err_detail());
        goto done;
    }
    if (fw_model_save_dir(m, out, tdir) != 0) {
        fw_cli_fail("writing %s: %s", out, fw_err_detail());
        goto done;
    }
    fw_cli_note("wrote %s (%d layers, %d heads, %d wide, context %d, vocabulary %d)", out,
                cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.n_ctx, cfg.vocab_size);
    fw_cli_emit(json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:I, s:I}", "out", out, "n_layer",
                          cfg.n_layer, "n_head", cfg.n_head, "n_embd", cfg.n_embd, "n_ctx",
                          cfg.n_ctx, "vocab_size", cfg.vocab_size, "params",
                          (json_int_t)s_real_params(m), "seed", (json_int_t)seed));
    rc = FW_CLI_EXIT_OK;
done:
    fw_model_destroy(&m);
    return rc;
}

const fw_cli_verb fw_cli_verb_init = {
    "init",
    "write a randomly initialised model directory (config.json, model.safetensors, tokenizer)",
    "Weights follow GPT-2's initialisation (N(0, 0.02), residual projections scaled by\n"
    "1/sqrt(2*n_layer)), deterministic in --seed. The vocabulary is --vocab-size, else the\n"
    "config file's vocab_size, else the preset's shrunk to the tokenizer's size.",
    "flywheel-engine init --config small --tokenizer tok/ --out model/ --seed 1",
    s_init_opts,
    s_init_run};

/* ---- tokenize -------------------------------------------------------- */

static const fw_cli_opt s_tokenize_opts[] = {
    {"tokenizer", FW_OPT_STR, 1, NULL, 0, 0, "DIR", "tokenizer or model directory"},
    {"data", FW_OPT_STR, 0, "-", 0, 0, "FILE.jsonl", "input records {\"text\": ...} (- = stdin)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL}};

static int s_tokenize_run(const fw_cli_args *a) {
    const char *tdir = fw_cli_str(a, "tokenizer");
    fw_err_clear();
    fw_tokenizer *tok = fw_tokenizer_load(tdir);
    if (!tok) return fw_cli_fail("tokenizer %s: %s", tdir, fw_err_detail());
    fw_cli_jsonl r;
    if (fw_cli_jsonl_open(&r, fw_cli_str(a, "data")) != 0) {
        fw_tokenizer_destroy(&tok);
        return FW_CLI_EXIT_ERROR;
    }
    int rc = FW_CLI_EXIT_ERROR, got;
    json_t *obj;
    size_t nrec = 0, ntok = 0;
    while ((got = fw_cli_jsonl_next(&r, &obj)) == 1) {
        const char *text;
        size_t len;
        int32_t *ids = NULL;
        size_t n = 0;
        if (fw_cli_json_str(&r, obj, "text", 1, &text, &len) < 0) {
            json_decref(obj);
            goto done;
        }
        fw_err_clear();
        if (fw_tokenizer_encode(tok, text, len, &ids, &n) != 0) {
            fw_cli_fail("%s line %zu: field \"text\": %s", r.path, r.lineno, fw_err_detail());
            json_decref(obj);
            goto done;
        }
        json_decref(obj);
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
        free(ids);
        if (!arr || fw_cli_emit(json_pack("{s:o}", "ids", arr)) != 0) {
            fw_cli_fail("writing the output failed");
            goto done;
        }
        nrec++;
        ntok += n;
    }
    if (got < 0) goto done;
    fw_cli_note("%zu records, %zu tokens", nrec, ntok);
    rc = FW_CLI_EXIT_OK;
done:
    fw_cli_jsonl_close(&r);
    fw_tokenizer_destroy(&tok);
    return rc;
}

const fw_cli_verb fw_cli_verb_tokenize = {
    "tokenize",
    "encode JSONL records {\"text\": ...} into {\"ids\": [...]} lines",
    "One output line per non-blank input line, in order. No <|endoftext|> is added. The first\n"
    "bad line (invalid UTF-8 or JSON, no \"text\" string) stops the run with its line number.",
    "echo '{\"text\": \"Call me Ishmael.\"}' | flywheel-engine tokenize --tokenizer tok/",
    s_tokenize_opts,
    s_tokenize_run};

/* ---- tokenizer-train ------------------------------------------------- */

static const fw_cli_opt s_tktrain_opts[] = {
    {"vocab-size", FW_OPT_INT, 1, NULL, 257, 1 << 20, "N",
     "tokens in the vocabulary: 256 bytes + merges + <|endoftext|>"},
    {"data", FW_OPT_STR, 1, NULL, 0, 0, "FILE.jsonl", "records with a \"text\" field"},
    {"out", FW_OPT_STR, 1, NULL, 0, 0, "DIR", "directory for vocab.json + merges.txt"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL}};

static int s_tktrain_run(const fw_cli_args *a) {
    fw_cli_jsonl r;
    if (fw_cli_jsonl_open(&r, fw_cli_str(a, "data")) != 0) return FW_CLI_EXIT_ERROR;
    int rc = FW_CLI_EXIT_ERROR, got;
    char **texts = NULL;
    size_t *lens = NULL, n = 0, cap = 0, bytes = 0;
    fw_tokenizer *tok = NULL;
    json_t *obj;
    while ((got = fw_cli_jsonl_next(&r, &obj)) == 1) {
        const char *s;
        size_t len;
        if (fw_cli_json_str(&r, obj, "text", 1, &s, &len) < 0) {
            json_decref(obj);
            goto done;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **t2 = realloc(texts, cap * sizeof *t2);
            size_t *l2 = t2 ? realloc(lens, cap * sizeof *l2) : NULL;
            if (t2) texts = t2;
            if (l2) lens = l2;
            if (!t2 || !l2) {
                json_decref(obj);
                fw_cli_fail("out of memory");
                goto done;
            }
        }
        texts[n] = malloc(len + 1);
        if (!texts[n]) {
            json_decref(obj);
            fw_cli_fail("out of memory");
            goto done;
        }
        memcpy(texts[n], s, len + 1);
        lens[n++] = len;
        bytes += len;
        json_decref(obj);
    }
    if (got < 0) goto done;
    if (n == 0) {
        fw_cli_fail("%s: no records to learn from", r.path);
        goto done;
    }
    int want = (int)fw_cli_int(a, "vocab-size");
    fw_cli_note("learning %d tokens from %zu texts (%zu bytes)", want, n, bytes);
    fw_err_clear();
    if (fw_tokenizer_train((const char *const *)texts, lens, n, want, &tok) != 0) {
        fw_cli_fail("training on %s: %s", r.path, fw_err_detail());
        goto done;
    }
    const char *out = fw_cli_str(a, "out");
    if (fw_tokenizer_save(tok, out) != 0) {
        fw_cli_fail("writing %s: %s", out, fw_err_detail());
        goto done;
    }
    int got_v = fw_tokenizer_vocab_size(tok);
    if (got_v < want)
        fw_cli_note("the texts ran out of pairs to merge: %d tokens instead of %d", got_v, want);
    fw_cli_emit(json_pack("{s:s, s:i, s:i, s:I, s:I}", "out", out, "vocab_size", got_v,
                          "requested", want, "texts", (json_int_t)n, "bytes", (json_int_t)bytes));
    rc = FW_CLI_EXIT_OK;
done:
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    free(lens);
    fw_tokenizer_destroy(&tok);
    fw_cli_jsonl_close(&r);
    return rc;
}

const fw_cli_verb fw_cli_verb_tokenizer_train = {
    "tokenizer-train",
    "learn a byte-level BPE vocabulary from the \"text\" fields of a JSONL file",
    "GPT-2's pre-tokenisation and byte-to-unicode mapping, so the result loads like GPT-2's own\n"
    "files. When the texts run out of pairs to merge, the vocabulary is smaller than asked\n"
    "(the JSON result says how large it is).",
    "flywheel-engine tokenizer-train --vocab-size 512 --data corpus.jsonl --out tok/",
    s_tktrain_opts,
    s_tktrain_run};

/* ---- prepare --------------------------------------------------------- */

static const fw_cli_opt s_prepare_opts[] = {
    {"tokenizer", FW_OPT_STR, 1, NULL, 0, 0, "DIR", "tokenizer or model directory"},
    {"data", FW_OPT_STR, 1, NULL, 0, 0, "FILE.jsonl",
     "records: {\"text\"}, {\"prompt\",\"completion\"} or {\"messages\"}"},
    {"out", FW_OPT_STR, 1, NULL, 0, 0, "SHARD", "shard file to write (FWSHARD format)"},
    {"max-bad-fraction", FW_OPT_FLOAT, 0, "0.01", 0, 1, "F",
     "fail when more than this fraction of the lines is bad"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL}};

static json_t *s_report_json(const fw_data_report *rep) {
    json_t *bad = json_array();
    for (size_t i = 0; bad && i < rep->nbad_kept; i++)
        json_array_append_new(bad, json_pack("{s:I, s:s}", "line", (json_int_t)rep->bad_line[i],
                                             "reason", rep->bad_reason[i]));
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:o}", "lines", (json_int_t)rep->lines,
                     "accepted", (json_int_t)rep->accepted, "rejected", (json_int_t)rep->rejected,
                     "tokens", (json_int_t)rep->tokens, "loss_tokens",
                     (json_int_t)rep->loss_tokens, "bad", bad);
}

static int s_prepare_run(const fw_cli_args *a) {
    const char *tdir = fw_cli_str(a, "tokenizer"), *data = fw_cli_str(a, "data");
    const char *out = fw_cli_str(a, "out");
    fw_err_clear();
    fw_tokenizer *tok = fw_tokenizer_load(tdir);
    if (!tok) return fw_cli_fail("tokenizer %s: %s", tdir, fw_err_detail());
    fw_data_opts opts = {.max_bad_fraction = fw_cli_float(a, "max-bad-fraction"), .max_report = 20};
    fw_data_report rep;
    fw_err_clear();
    int rc = fw_data_tokenize(data, tok, out, &opts, &rep);
    fw_tokenizer_destroy(&tok);
    if (rc != 0) {
        /* The detail names the first bad line; list the others kept too. */
        fw_cli_fail("%s", fw_err_detail());
        for (size_t i = 1; i < rep.nbad_kept; i++)
            fprintf(stderr, "  %s line %zu: %s\n", data, rep.bad_line[i], rep.bad_reason[i]);
        return FW_CLI_EXIT_ERROR;
    }
    for (size_t i = 0; i < rep.nbad_kept; i++)
        fw_cli_note("skipped %s line %zu: %s", data, rep.bad_line[i], rep.bad_reason[i]);
    json_t *o = s_report_json(&rep);
    if (o) {
        json_object_set_new(o, "data", json_string(data));
        json_object_set_new(o, "out", json_string(out));
    }
    fw_cli_emit(o);
    return FW_CLI_EXIT_OK;
}

const fw_cli_verb fw_cli_verb_prepare = {
    "prepare",
    "tokenise a JSONL dataset into a shard and report accepted and rejected lines",
    "Each record becomes its tokens and <|endoftext|> with a loss mask (docs/file-formats.md).\n"
    "Bad lines are skipped and reported with their line numbers; more than --max-bad-fraction\n"
    "of them, or no good line at all, fails the run and writes no shard.",
    "flywheel-engine prepare --tokenizer model/ --data train.jsonl --out train.shard",
    s_prepare_opts,
    s_prepare_run};
