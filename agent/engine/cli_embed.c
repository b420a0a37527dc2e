/* cli_embed.c - the embed verb: one L2-normalised vector per record into a
 * float32 matrix file.
 *
 * Theory of operation
 * -------------------
 * Each record's "text" is encoded (no <|endoftext|> added) and run through
 * the model; fw_model_embed averages the final hidden states after ln_f over
 * the record's own tokens and L2-normalises them. Records are packed B at a
 * time, each batch as wide as its longest record; shorter rows are padded
 * and their lengths passed along, so padding never changes a vector (the
 * attention is causal, and the mean covers only the real tokens). A batched
 * vector therefore equals the vector of the same text embedded alone.
 *
 * A text longer than the row width T (--seq, default the model's context)
 * is an error naming the line, unless --truncate keeps its first T tokens
 * (the result then says how many records were cut).
 *
 * Output (docs/file-formats.md, "Embedding matrix"), written atomically:
 *
 *     0   magic "FWEMBED\0"
 *     8   u32 version = 1
 *     12  u32 dim
 *     16  u64 rows
 *     24  u64 data_off = 32 + 8 * rows
 *     32  u64 row id [rows]: the 1-based line number of each record
 *     data_off  float32 [rows][dim], row-major
 *
 * The matrix is kept in memory until the end, so a failure half way leaves
 * no file behind rather than a short one. */
#include "cli.h"

#include "fw_embedfile.h"
#include "fw_err.h"
#include "fw_file.h"

#include <stdlib.h>
#include <string.h>


static const fw_cli_opt s_embed_opts[] = {
    {"model", FW_OPT_STR, 1, NULL, 0, 0, "DIR", "model directory"},
    {"data", FW_OPT_STR, 1, NULL, 0, 0, "FILE.jsonl", "records with a \"text\" field"},
    {"out", FW_OPT_STR, 1, NULL, 0, 0, "FILE", "embedding matrix to write (FWEMBED format)"},
    {"batch", FW_OPT_INT, 0, "8", 1, 4096, "B", "records per forward pass"},
    {"seq", FW_OPT_INT, 0, "0", 0, 1 << 20, "T", "most tokens per record (0: the context)"},
    {"truncate", FW_OPT_FLAG, 0, NULL, 0, 0, NULL,
     "keep the first T tokens of longer texts instead of failing"},
    {"threads", FW_OPT_INT, 0, "0", 0, 1024, "N", "CPU threads (0: OpenMP's default)"},
    {"device", FW_OPT_STR, 0, "cpu", 0, 0, "DEV", "cpu (or cuda[:N] when built in)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL}};

static int s_write_matrix(const char *path, const uint64_t *ids, const float *data, size_t rows,
                          int dim) {
    unsigned char hdr[FW_EMBED_HDR];
    fw_embed_hdr_write(hdr, (uint32_t)dim, rows);
    fw_err_clear();
    fw_file_atomic *w = fw_file_atomic_open(path, 0644);
    if (!w) return fw_cli_fail("--out %s: %s", path, fw_err_detail());
    /* The host is little-endian (shards assume it too), so ids and floats
     * are written as they lie in memory. */
    if (fw_file_atomic_write(w, hdr, sizeof hdr) != 0 ||
        fw_file_atomic_write(w, ids, rows * sizeof *ids) != 0 ||
        fw_file_atomic_write(w, data, rows * (size_t)dim * sizeof *data) != 0) {
        fw_file_atomic_abort(&w);
        return fw_cli_fail("--out %s: %s", path, fw_err_detail());
    }
    if (fw_file_atomic_commit(&w) != 0) return fw_cli_fail("--out %s: %s", path, fw_err_detail());
    return 0;
}

typedef struct {
    int32_t *ids; /* [n] */
    int n;
    uint64_t line;
} s_item;

static int s_embed_run(const fw_cli_args *a) {
    if (fw_cli_int(a, "threads") > 0) fw_engine_set_threads((int)fw_cli_int(a, "threads"));
    fw_model *m;
    fw_tokenizer *tok;
    const char *mdir = fw_cli_str(a, "model");
    if (fw_cli_load_model(mdir, fw_cli_str(a, "device"), &m, &tok) != 0) return FW_CLI_EXIT_ERROR;
    const fw_model_config *cfg = fw_model_config_get(m);
    int C = cfg->n_embd, B = (int)fw_cli_int(a, "batch"), T = (int)fw_cli_int(a, "seq");
    int truncate = fw_cli_flag(a, "truncate");
    int rc = FW_CLI_EXIT_ERROR, got;
    s_item *items = NULL;
    size_t nitems = 0, cap = 0, ntok = 0, ncut = 0;
    int32_t *batch_ids = NULL, *lens = NULL;
    uint64_t *rowids = NULL;
    float *mat = NULL;
    fw_cli_jsonl r;
    int open = 0;
    json_t *obj;
    if (T == 0) T = cfg->n_ctx;
    if (T > cfg->n_ctx) {
        fw_cli_fail("--seq %d is longer than the model's context %d", T, cfg->n_ctx);
        goto done;
    }
    if (fw_cli_jsonl_open(&r, fw_cli_str(a, "data")) != 0) goto done;
    open = 1;
    while ((got = fw_cli_jsonl_next(&r, &obj)) == 1) {
        const char *text;
        size_t len, n = 0;
        int32_t *ids = NULL;
        int frc = fw_cli_json_str(&r, obj, "text", 1, &text, &len);
        if (frc == 1 && len == 0) {
            fw_cli_fail("%s line %zu: field \"text\" is empty (nothing to embed)", r.path,
                        r.lineno);
            frc = -1;
        }
        if (frc == 1) {
            fw_err_clear();
            if (fw_tokenizer_encode(tok, text, len, &ids, &n) != 0) {
                fw_cli_fail("%s line %zu: field \"text\": %s", r.path, r.lineno, fw_err_detail());
                frc = -1;
            }
        }
        json_decref(obj);
        if (frc != 1) goto done;
        if (n > (size_t)T) {
            if (!truncate) {
                free(ids);
                fw_cli_fail("%s line %zu: the text is %zu tokens, longer than %d (--seq / the "
                            "model's context); pass --truncate to embed its first %d tokens",
                            r.path, r.lineno, n, T, T);
                goto done;
            }
            n = (size_t)T;
            ncut++;
        }
        if (nitems == cap) {
            cap = cap ? 2 * cap : 256;
            s_item *it = realloc(items, cap * sizeof *it);
            if (!it) {
                free(ids);
                fw_cli_fail("out of memory");
                goto done;
            }
            items = it;
        }
        items[nitems++] = (s_item){ids, (int)n, r.lineno};
        ntok += n;
    }
    if (got < 0) goto done;
    if (nitems == 0) {
        fw_cli_fail("%s: no records (the dataset is empty)", r.path);
        goto done;
    }
    batch_ids = malloc((size_t)B * (size_t)T * sizeof *batch_ids);
    lens = malloc((size_t)B * sizeof *lens);
    rowids = malloc(nitems * sizeof *rowids);
    mat = malloc(nitems * (size_t)C * sizeof *mat);
    if (!batch_ids || !lens || !rowids || !mat) {
        fw_cli_fail("out of memory for %zu x %d floats", nitems, C);
        goto done;
    }
    fw_model_set_train(m, 0);
    for (size_t i0 = 0; i0 < nitems; i0 += (size_t)B) {
        int nb = (int)(nitems - i0 < (size_t)B ? nitems - i0 : (size_t)B), Tb = 0;
        for (int b = 0; b < nb; b++)
            if (items[i0 + b].n > Tb) Tb = items[i0 + b].n;
        for (int b = 0; b < nb; b++) {
            const s_item *it = &items[i0 + b];
            int32_t *row = batch_ids + (size_t)b * (size_t)Tb;
            memcpy(row, it->ids, (size_t)it->n * sizeof *row);
            for (int t = it->n; t < Tb; t++) row[t] = 0;
            lens[b] = it->n;
            rowids[i0 + b] = it->line;
        }
        fw_err_clear();
        if (fw_model_embed(m, batch_ids, lens, nb, Tb, mat + i0 * (size_t)C) != 0) {
            fw_cli_fail("embedding %s line %llu: %s", r.path,
                        (unsigned long long)items[i0].line, fw_err_detail());
            goto done;
        }
    }
    const char *out = fw_cli_str(a, "out");
    if (s_write_matrix(out, rowids, mat, nitems, C) != 0) goto done;
    fw_cli_note("wrote %zu vectors of %d floats to %s", nitems, C, out);
    fw_cli_emit(json_pack("{s:s, s:I, s:i, s:I, s:I}", "out", out, "rows", (json_int_t)nitems,
                          "dim", C, "tokens", (json_int_t)ntok, "truncated", (json_int_t)ncut));
    rc = FW_CLI_EXIT_OK;
done:
    if (open) fw_cli_jsonl_close(&r);
    for (size_t i = 0; i < nitems; i++) free(items[i].ids);
    free(items), free(batch_ids), free(lens), free(rowids), free(mat);
    fw_tokenizer_destroy(&tok);
    fw_model_destroy(&m);
    return rc;
}

const fw_cli_verb fw_cli_verb_embed = {
    "embed",
    "one L2-normalised vector per record (mean of the final hidden states) into a matrix file",
    "The vector is the mean over the record's tokens of the hidden states after the final\n"
    "LayerNorm, L2-normalised. The output file (FWEMBED, docs/file-formats.md) holds a header,\n"
    "the 1-based line number of each record as its row id, then rows x dim float32.",
    "flywheel-engine embed --model model/ --data sentences.jsonl --out vectors.fwembed",
    s_embed_opts,
    s_embed_run};
