/* ctl_dataset.c - `flywheelctl dataset add|list|show|download|split`.
 *
 * Theory of operation
 * -------------------
 * Ingestion runs here, on the client: `dataset add` calls
 * fw_dataset_ingest() on the user's file into a private temporary
 * directory, prints the report (accepted, rejected with line numbers and
 * reasons, duplicates, tokens), and only then talks to the cluster:
 *
 *   BLOB_UPLOAD_BEGIN(size, digest)  -> upload id (or "complete": the store
 *                                       has these bytes already)
 *   BLOB_UPLOAD_CHUNK(id, offset, 1 MiB of bytes) ... in order
 *   BLOB_UPLOAD_COMMIT(id, digest)   -> the leader verified and stored it
 *   DATASET_REGISTER(name, digest, report[, parents, lineage]) -> version
 *
 * so the coordinator never parses user data and the bytes are checked
 * against the digest on both sides. Chunks are 1 MiB: the protocol
 * compresses BIN fields over 64 KiB with lz4 on its own.
 *
 * `dataset download` reads the blob with BLOB_READ ranges into
 * "<FILE>.part", hashing as it goes, and renames it to FILE only when the
 * digest equals the version's: a corrupt store copy gives an error naming
 * both digests and leaves no FILE. `dataset split` is download +
 * fw_dataset_split() + two adds, named <N>-train and <N>-eval, whose
 * parents are the source version and whose lineage holds the split
 * parameters; the split rule is a seeded hash of each record, so the same
 * seed gives the same digests (and the same versions: registration is
 * idempotent by digest). */
#include "ctl.h"

#include "fw_dataset.h"
#include "fw_digest.h"
#include "fw_err.h"
#include "fw_log.h"
#include "tokenizer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


/* Print the error, evaluate to -1. */
#define S_FAIL(...) (ctl_errorf(__VA_ARGS__), -1)

/* ------------------------------------------------------------ helpers */

/* "NAME" or "NAME@VERSION" into name (size bytes) and *ver (0: latest). */
static int s_parse_ref(ctl_t *c, const char *ref, char *name, size_t size, uint64_t *ver) {
    const char *at = strrchr(ref, '@');
    *ver = 0;
    size_t n = at ? (size_t)(at - ref) : strlen(ref);
    if (n == 0 || n >= size) return S_FAIL(c, "dataset '%s': expected NAME or NAME@VERSION", ref);
    memcpy(name, ref, n);
    name[n] = '\0';
    if (at) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(at + 1, &end, 10);
        if (!at[1] || *end || errno || v == 0 || at[1] == '-')
            return S_FAIL(c, "dataset '%s': the version after '@' must be a number >= 1", ref);
        *ver = v;
    }
    return 0;
}

/* The version record of name[@ver]; NULL after printing the error. */
static json_t *s_get(ctl_t *c, const char *name, uint64_t ver) {
    fw_msg_t *req = ctl_request(c, FW_MSG_DATASET_GET);
    if (!req) return NULL;
    if (fw_msg_set_str(req, "name", name) < 0) {
        ctl_errorf(c, "dataset name '%s': %s", name, fw_err_detail());
        fw_msg_destroy(&req);
        return NULL;
    }
    if (ver) fw_msg_set_uint(req, "version", ver);
    return ctl_call_doc(c, &req, NULL);
}

static int s_file_read(void *arg, uint64_t off, void *buf, size_t max, size_t *n) {
    FILE *f = arg;
    (void)off; /* chunks are asked for in order */
    *n = fread(buf, 1, max, f);
    if (*n == 0 && ferror(f)) return fw_err_set(FW_EIO, "%s", strerror(errno));
    return 0;
}

/* Upload the file at path (size bytes, digest known) into the leader's
 * store. 0, or -1 after printing the error. */
static int s_upload(ctl_t *c, const char *path, const char *digest, uint64_t size) {
    FILE *f = fopen(path, "rb");
    if (!f) return S_FAIL(c, "%s: %s", path, strerror(errno));
    int rc = ctl_blob_upload(c, path, digest, size, s_file_read, f);
    fclose(f);
    return rc;
}

/* Register digest as the next version of name; prints nothing. The record,
 * *existing set; NULL after printing the error. */
static json_t *s_register(ctl_t *c, const char *name, const char *digest, const char *report,
                          const char *parent, const char *lineage, bool *existing) {
    fw_msg_t *req = ctl_request(c, FW_MSG_DATASET_REGISTER);
    if (!req) return NULL;
    int rc = fw_msg_set_str(req, "name", name);
    if (rc == 0) rc = fw_msg_set_str(req, "digest", digest);
    if (rc == 0) rc = fw_msg_set_str(req, "report", report);
    if (rc == 0 && lineage) rc = fw_msg_set_str(req, "lineage", lineage);
    if (rc == 0 && parent) {
        json_t *arr = json_pack("[s]", parent);
        char *txt = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
        rc = txt ? fw_msg_set_str(req, "parents", txt) : FW_ENOMEM;
        free(txt);
        json_decref(arr);
    }
    if (rc < 0) {
        ctl_errorf(c, "dataset %s: %s", name, fw_err_detail());
        fw_msg_destroy(&req);
        return NULL;
    }
    return ctl_call_doc(c, &req, existing);
}

/* Upload + register one ingested file. */
static json_t *s_store(ctl_t *c, const char *name, const char *file, const char *digest,
                       const char *report, const char *parent, const char *lineage,
                       bool *existing) {
    struct stat st;
    if (stat(file, &st) != 0) {
        ctl_errorf(c, "%s: %s", file, strerror(errno));
        return NULL;
    }
    if (s_upload(c, file, digest, (uint64_t)st.st_size) < 0) return NULL;
    return s_register(c, name, digest, report, parent, lineage, existing);
}

/* A private temporary directory; "" on failure (printed). */
static int s_tmpdir(ctl_t *c, char *buf, size_t size) {
    const char *t = getenv("TMPDIR");
    snprintf(buf, size, "%s/flywheelctl-XXXXXX", t && t[0] ? t : "/tmp");
    if (!mkdtemp(buf)) return S_FAIL(c, "mkdtemp %s: %s", buf, strerror(errno));
    return 0;
}

static void s_rmdir(const char *dir, const char *const *files) {
    char p[4200];
    for (; *files; files++) {
        snprintf(p, sizeof p, "%s/%s", dir, *files);
        unlink(p);
        snprintf(p, sizeof p, "%s/%s.part", dir, *files);
        unlink(p);
    }
    rmdir(dir);
}

static size_t s_count_tokens(void *arg, const char *text, size_t len) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (fw_tokenizer_encode(arg, text, len, &ids, &n) < 0) n = 0;
    free(ids);
    return n;
}

/* ----------------------------------------------------------- commands */

/* The library's INFO lines (event=dataset-ingested) repeat the report we
 * print; keep them unless the user asked for a level. */
static void s_quiet_log(void) {
    if (!getenv("FW_LOG_LEVEL")) fw_log_set_level(FW_LOG_WARN);
}

static int s_cmd_add(ctl_t *c) {
    s_quiet_log();
    const char *path = c->argv[0];
    const char *name = ctl_flag(c, "name");
    if (!name || !name[0]) return ctl_errorf(c, "dataset add: --name is required");
    fw_dataset_opts o;
    fw_dataset_opts_init(&o);
    const char *fmt = ctl_flag(c, "format");
    if (fmt) {
        if (strcmp(fmt, "jsonl") == 0)
            o.format = FW_DATASET_JSONL;
        else if (strcmp(fmt, "text") == 0)
            o.format = FW_DATASET_TEXT;
        else if (strcmp(fmt, "auto") == 0)
            o.format = FW_DATASET_AUTO;
        else
            return ctl_errorf(c, "--format '%s': expected jsonl, text or auto", fmt);
    }
    const char *mb = ctl_flag(c, "max-bad");
    if (mb) {
        char *end;
        o.max_bad_fraction = strtod(mb, &end);
        if (*end || end == mb || !(o.max_bad_fraction >= 0 && o.max_bad_fraction <= 1))
            return ctl_errorf(c, "--max-bad '%s': expected a fraction between 0 and 1", mb);
    }
    fw_tokenizer *tok = NULL;
    const char *tdir = ctl_flag(c, "tokenizer");
    if (tdir) {
        tok = fw_tokenizer_load(tdir);
        if (!tok) return ctl_errorf(c, "--tokenizer %s: %s", tdir, fw_err_detail());
        o.count = s_count_tokens;
        o.count_arg = tok;
    }
    /* Connect first: a wrong token or endpoint is found before a long ingest. */
    if (ctl_connect(c) < 0) {
        fw_tokenizer_destroy(&tok);
        return CTL_EXIT_ERROR;
    }
    char dir[4096], out[4200];
    if (s_tmpdir(c, dir, sizeof dir) < 0) {
        fw_tokenizer_destroy(&tok);
        return CTL_EXIT_ERROR;
    }
    snprintf(out, sizeof out, "%s/data.jsonl", dir);
    fw_dataset_report rep = {0};
    int rc = fw_dataset_ingest(path, &o, out, &rep);
    fw_tokenizer_destroy(&tok);
    char *rtext = fw_dataset_report_text(&rep);
    char *rjson = fw_dataset_report_json(&rep);
    int ret = CTL_EXIT_ERROR;
    json_t *rec = NULL;
    bool existing = false;
    if (c->output == CTL_OUT_TABLE && rtext) fputs(rtext, stdout);
    if (rc < 0) {
        ctl_errorf(c, "dataset add %s: %s (%s)", path, fw_err_detail(), fw_errname(rc));
        if (c->output == CTL_OUT_JSON && rjson) printf("{\"report\": %s}\n", rjson);
        goto done;
    }
    if (!rjson) {
        ctl_errorf(c, "out of memory");
        goto done;
    }
    rec = s_store(c, name, out, rep.digest, rjson, NULL, NULL, &existing);
    if (!rec) goto done;
    if (c->output == CTL_OUT_JSON) {
        json_t *o2 = json_pack("{s:O,s:O,s:b}", "report", json_object_get(rec, "report"), "dataset",
                               rec, "existing", existing);
        ctl_print_json(o2);
        json_decref(o2);
    } else {
        printf("dataset %s@%" JSON_INTEGER_FORMAT " %s (%s)\n", ctl_str(rec, "name"),
               json_integer_value(json_object_get(rec, "version")),
               existing ? "already registered with identical content" : "registered",
               ctl_str(rec, "digest"));
    }
    ret = CTL_EXIT_OK;
done:
    json_decref(rec);
    free(rtext);
    free(rjson);
    fw_dataset_report_free(&rep);
    s_rmdir(dir, (const char *const[]){"data.jsonl", NULL});
    return ret;
}

static void s_fill_name(fw_msg_t *req, void *arg) {
    if (arg) fw_msg_set_str(req, "name", arg);
}

/* One row of the list table. */
static void s_list_row(ctl_table_t *t, json_t *r) {
    char v[32], recs[32], toks[32], bytes[32], par[256], age[32], dg[24];
    snprintf(dg, sizeof dg, "%.19s", ctl_str(r, "digest"));
    const char *row[] = {ctl_str(r, "name"),
                         ctl_cell(ctl_get(r, "version"), v, sizeof v),
                         ctl_cell(ctl_get(r, "records"), recs, sizeof recs),
                         ctl_cell(ctl_get(r, "tokens"), toks, sizeof toks),
                         ctl_cell(ctl_get(r, "size"), bytes, sizeof bytes),
                         json_array_size(ctl_get(r, "parents"))
                             ? ctl_cell(ctl_get(r, "parents"), par, sizeof par)
                             : "-",
                         ctl_str(r, "created_by"),
                         ctl_age(ctl_get(r, "created_at"), age, sizeof age),
                         dg};
    ctl_table_add(t, row);
}

static int s_cmd_list(ctl_t *c) {
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    const char *name = c->argc > 0 ? c->argv[0] : NULL;
    fw_msg_t *req = ctl_request(c, FW_MSG_DATASET_LIST);
    if (!req) return CTL_EXIT_ERROR;
    s_fill_name(req, (void *)name);
    json_t *arr = ctl_call_doc(c, &req, NULL);
    if (!arr) return CTL_EXIT_ERROR;
    static const char *const hdr[] = {"NAME",    "VERSION", "RECORDS", "TOKENS", "BYTES",
                                      "PARENTS", "BY",      "AGE",     "DIGEST"};
    return ctl_print_list(c, arr, 9, hdr, s_list_row);
}

static int s_cmd_show(ctl_t *c) {
    char name[200];
    uint64_t ver;
    if (s_parse_ref(c, c->argv[0], name, sizeof name, &ver) < 0) return CTL_EXIT_USAGE;
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    json_t *rec = s_get(c, name, ver);
    if (!rec) return CTL_EXIT_ERROR;
    if (c->output == CTL_OUT_JSON)
        ctl_print_json(rec);
    else
        ctl_print_object(rec, "");
    json_decref(rec);
    return CTL_EXIT_OK;
}

static int s_cmd_download(ctl_t *c) {
    char name[200];
    uint64_t ver;
    if (s_parse_ref(c, c->argv[0], name, sizeof name, &ver) < 0) return CTL_EXIT_USAGE;
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    json_t *rec = s_get(c, name, ver);
    if (!rec) return CTL_EXIT_ERROR;
    char what[256];
    snprintf(what, sizeof what, "dataset %s@%" JSON_INTEGER_FORMAT, name,
             json_integer_value(json_object_get(rec, "version")));
    int rc = ctl_blob_get_file(c, what, ctl_str(rec, "digest"), c->argv[1]);
    if (rc == 0 && c->output == CTL_OUT_JSON)
        ctl_print_json(rec);
    else if (rc == 0)
        printf("%s -> %s (%s, verified)\n", what, c->argv[1], ctl_str(rec, "digest"));
    json_decref(rec);
    return rc < 0 ? CTL_EXIT_ERROR : CTL_EXIT_OK;
}

static int s_cmd_split(ctl_t *c) {
    char name[200];
    uint64_t ver;
    if (s_parse_ref(c, c->argv[0], name, sizeof name, &ver) < 0) return CTL_EXIT_USAGE;
    s_quiet_log();
    const char *hs = ctl_flag(c, "holdout"), *ss = ctl_flag(c, "seed");
    double holdout = 0.1;
    uint64_t seed = 0;
    char *end;
    if (hs) {
        holdout = strtod(hs, &end);
        if (*end || end == hs || !(holdout >= 0 && holdout <= 1))
            return (ctl_errorf(c, "--holdout '%s': expected a fraction between 0 and 1", hs),
                    CTL_EXIT_USAGE);
    }
    if (ss) {
        errno = 0;
        seed = strtoull(ss, &end, 10);
        if (*end || end == ss || errno || ss[0] == '-')
            return (ctl_errorf(c, "--seed '%s': expected a non-negative integer", ss),
                    CTL_EXIT_USAGE);
    }
    if (strlen(name) > 122) return ctl_errorf(c, "dataset name '%s': too long to split", name);
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    json_t *src = s_get(c, name, ver);
    if (!src) return CTL_EXIT_ERROR;
    json_int_t sver = json_integer_value(json_object_get(src, "version"));
    char dir[4096], in[4200], tr[4200], ev[4200], what[256], parent[256];
    snprintf(what, sizeof what, "dataset %s@%" JSON_INTEGER_FORMAT, name, sver);
    snprintf(parent, sizeof parent, "%s@%" JSON_INTEGER_FORMAT, name, sver);
    int ret = CTL_EXIT_ERROR;
    json_t *out = json_object();
    if (s_tmpdir(c, dir, sizeof dir) < 0) {
        json_decref(src);
        json_decref(out);
        return CTL_EXIT_ERROR;
    }
    snprintf(in, sizeof in, "%s/src.jsonl", dir);
    snprintf(tr, sizeof tr, "%s/train.jsonl", dir);
    snprintf(ev, sizeof ev, "%s/eval.jsonl", dir);
    fw_dataset_split_counts k;
    if (ctl_blob_get_file(c, what, ctl_str(src, "digest"), in) < 0) goto done;
    int rc = fw_dataset_split(in, holdout, seed, tr, ev, &k);
    if (rc < 0) {
        ctl_errorf(c, "split %s: %s (%s)", what, fw_err_detail(), fw_errname(rc));
        goto done;
    }
    for (int side = 0; side < 2; side++) {
        const char *sname = side ? "eval" : "train";
        char dname[200];
        snprintf(dname, sizeof dname, "%s-%s", name, sname);
        /* The report of a side: its counts and the source's report for context. */
        json_t *rep =
            json_pack("{s:s,s:I,s:I,s:s}", "source", parent, "records_out",
                      (json_int_t)(side ? k.eval : k.train), "source_records",
                      (json_int_t)k.records, "digest", side ? k.eval_digest : k.train_digest);
        json_t *lin =
            json_pack("{s:{s:s,s:s,s:f,s:I,s:s}}", "split", "source", parent, "side", sname,
                      "holdout", holdout, "seed", (json_int_t)seed, "rule",
                      "sha256(seed_be64 || record digest) >> 11 < holdout * 2^53 -> eval");
        char *rtxt = rep ? json_dumps(rep, JSON_COMPACT) : NULL;
        char *ltxt = lin ? json_dumps(lin, JSON_COMPACT) : NULL;
        json_decref(rep);
        json_decref(lin);
        bool existing = false;
        json_t *rec = rtxt && ltxt
                          ? s_store(c, dname, side ? ev : tr, side ? k.eval_digest : k.train_digest,
                                    rtxt, parent, ltxt, &existing)
                          : NULL;
        free(rtxt);
        free(ltxt);
        if (!rec) goto done;
        if (c->output == CTL_OUT_TABLE)
            printf("%s: %zu records -> %s@%" JSON_INTEGER_FORMAT " %s(%s)\n", sname,
                   side ? k.eval : k.train, dname,
                   json_integer_value(json_object_get(rec, "version")),
                   existing ? "already registered " : "", ctl_str(rec, "digest"));
        json_object_set_new(rec, "existing", json_boolean(existing));
        json_object_set_new(out, sname, rec);
    }
    if (c->output == CTL_OUT_JSON) ctl_print_json(out);
    ret = CTL_EXIT_OK;
done:
    json_decref(src);
    json_decref(out);
    s_rmdir(dir, (const char *const[]){"src.jsonl", "train.jsonl", "eval.jsonl", NULL});
    return ret;
}

static const ctl_flag_def s_add_flags[] = {
    {"name", 0, "N", "Dataset name (required), 1-128 of [A-Za-z0-9._-]."},
    {"format", 0, "F", "jsonl, text or auto (default: auto, JSONL when the file starts with '{')."},
    {"tokenizer", 0, "DIR",
     "Count tokens with this GPT-2 tokenizer directory (encoder.json + "
     "vocab.bpe, or vocab.json + merges.txt)."},
    {"max-bad", 0, "F", "Fail when more than this fraction of records is rejected (default 0.01)."},
    {NULL, 0, NULL, NULL}};

static const ctl_flag_def s_split_flags[] = {
    {"holdout", 0, "F", "Fraction of records for the eval side (default 0.1)."},
    {"seed", 0, "S", "Split seed (default 0); the same seed gives the same split."},
    {NULL, 0, NULL, NULL}};

const ctl_cmd_def ctl_dataset_cmds[] = {
    {"dataset", "add", "PATH", 1, 1, "Ingest a JSONL or text file and store it as a new version.",
     "Validates, cleans (NFC, whitespace), drops empty records and exact duplicates locally "
     "(docs/datasets.md), prints the report with each rejected line, uploads the canonical "
     "JSONL to the leader's artifact store and registers it as NAME@<next version>. Adding "
     "identical content again returns the existing version.",
     s_add_flags, s_cmd_add},
    {"dataset", "list", "[NAME]", 0, 1,
     "Datasets (latest version of each), or every version of NAME.", NULL, NULL, s_cmd_list},
    {"dataset", "show", "NAME[@VERSION]", 1, 1,
     "One dataset version (default: the latest) with its report and lineage.", NULL, NULL,
     s_cmd_show},
    {"dataset", "download", "NAME[@VERSION] FILE", 2, 2,
     "Download a version's canonical JSONL, verified against its digest.",
     "FILE appears only when the bytes match the digest; a corrupt store copy is an error.", NULL,
     s_cmd_download},
    {"dataset", "split", "NAME[@VERSION]", 1, 1,
     "Split a version into NAME-train and NAME-eval (reproducible by seed).",
     "A record goes to eval when a seeded hash of its content falls below the holdout "
     "fraction (docs/datasets.md), so the split does not depend on record order. Both sides "
     "record NAME@VERSION as their parent and the split parameters as their lineage.",
     s_split_flags, s_cmd_split},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL}};
