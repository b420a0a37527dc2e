/* cli_args.c - option tables, messages, JSON lines and JSONL input for
 * flywheel-engine.
 *
 * Theory of operation
 * -------------------
 * One parser reads every verb's argv against that verb's option table
 * (cli.h). Parsing is strict because the engine runs unattended inside
 * task processes: an option the table does not know, a missing value, a
 * number that does not parse or lies outside the row's bounds, a repeated
 * single-valued option, a stray positional argument or a missing required
 * option is a usage error (exit 2) naming the option, before any work is
 * done. Defaults are stored as text in the table and parsed by the same
 * code as given values, so the help shows exactly what the run uses.
 *
 * JSONL input is read with getline (lines may be long: a Moby-Dick chapter
 * is tens of kilobytes) and validated as UTF-8 before jansson sees it, so an
 * invalid record is reported with its line and byte offset rather than
 * jansson's less specific message. */
#include "cli.h"

#include "fw_err.h"
#include "fw_utf8.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct fw_cli_args {
    const fw_cli_verb *verb;
    size_t nopts;
    const char **value;   /* [nopts] last value given (or the default), NULL: none */
    int *given;           /* [nopts] */
    const char ***multi;  /* [nopts] every value of a MULTI option */
    size_t *nmulti;
};

static const char *s_verb = "";
static int s_quiet = 0;

/* ---- messages -------------------------------------------------------- */

void fw_cli_set_verb(const char *name) { s_verb = name ? name : ""; }
void fw_cli_set_quiet(int quiet) { s_quiet = quiet; }

int fw_cli_fail(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "flywheel-engine%s%s: ", *s_verb ? " " : "", s_verb);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    return FW_CLI_EXIT_ERROR;
}

void fw_cli_note(const char *fmt, ...) {
    if (s_quiet) return;
    va_list ap;
    fprintf(stderr, "flywheel-engine%s%s: ", *s_verb ? " " : "", s_verb);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

int fw_cli_emit(json_t *obj) {
    if (!obj) return -1;
    /* 9 significant digits: every float prints as a decimal that parses back
     * to the same float, which the resume and save/load tests rely on. */
    char *s = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(obj);
    if (!s) return -1;
    int rc = (fputs(s, stdout) < 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0) ? -1 : 0;
    free(s);
    return rc;
}

/* ---- option parsing -------------------------------------------------- */

static size_t s_index(const fw_cli_args *a, const char *name) {
    for (size_t i = 0; i < a->nopts; i++)
        if (strcmp(a->verb->opts[i].name, name) == 0) return i;
    /* A verb asking for an option its own table lacks is a programmer error. */
    fprintf(stderr, "flywheel-engine: internal error: verb %s has no option --%s\n",
            a->verb->name, name);
    abort();
}

static int s_parse_int(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

static int s_parse_float(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* Check one value against its row; prints the usage error. */
static int s_check_value(const fw_cli_verb *v, const fw_cli_opt *o, const char *val) {
    if (o->type == FW_OPT_INT) {
        long long x;
        if (s_parse_int(val, &x) != 0) {
            fw_cli_fail("option --%s: \"%s\" is not an integer (see flywheel-engine %s --help)",
                        o->name, val, v->name);
            return -1;
        }
        if ((double)x < o->min || (double)x > o->max) {
            fw_cli_fail("option --%s: %lld is out of range %.17g..%.17g", o->name, x, o->min,
                        o->max);
            return -1;
        }
    } else if (o->type == FW_OPT_FLOAT) {
        double x;
        if (s_parse_float(val, &x) != 0) {
            fw_cli_fail("option --%s: \"%s\" is not a number (see flywheel-engine %s --help)",
                        o->name, val, v->name);
            return -1;
        }
        if (x < o->min || x > o->max) {
            fw_cli_fail("option --%s: %g is out of range %g..%g", o->name, x, o->min, o->max);
            return -1;
        }
    }
    return 0;
}

void fw_cli_args_destroy(fw_cli_args **pa) {
    if (!pa || !*pa) return;
    fw_cli_args *a = *pa;
    for (size_t i = 0; i < a->nopts; i++) free(a->multi[i]);
    free(a->multi);
    free(a->nmulti);
    free(a->value);
    free(a->given);
    free(a);
    *pa = NULL;
}

fw_cli_args *fw_cli_parse(const fw_cli_verb *v, int argc, char **argv, int *exit_code) {
    *exit_code = FW_CLI_EXIT_USAGE;
    fw_cli_args *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->verb = v;
    while (v->opts[a->nopts].name) a->nopts++;
    size_t n = a->nopts ? a->nopts : 1;
    a->value = calloc(n, sizeof *a->value);
    a->given = calloc(n, sizeof *a->given);
    a->multi = calloc(n, sizeof *a->multi);
    a->nmulti = calloc(n, sizeof *a->nmulti);
    if (!a->value || !a->given || !a->multi || !a->nmulti) {
        fw_cli_fail("out of memory");
        goto fail;
    }
    for (size_t i = 0; i < a->nopts; i++) a->value[i] = v->opts[i].def;

    for (int k = 1; k < argc; k++) {
        const char *arg = argv[k];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fw_cli_print_verb_help(stdout, v);
            *exit_code = FW_CLI_EXIT_OK;
            goto fail;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            fw_cli_fail("unexpected argument \"%s\" (options start with --; see flywheel-engine "
                        "%s --help)",
                        arg, v->name);
            goto fail;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        size_t i;
        for (i = 0; i < a->nopts; i++)
            if (strlen(v->opts[i].name) == nlen && strncmp(v->opts[i].name, name, nlen) == 0)
                break;
        if (i == a->nopts) {
            fw_cli_fail("unknown option --%.*s (see flywheel-engine %s --help)", (int)nlen, name,
                        v->name);
            goto fail;
        }
        const fw_cli_opt *o = &v->opts[i];
        const char *val;
        if (o->type == FW_OPT_FLAG) {
            if (eq) {
                fw_cli_fail("option --%s takes no value", o->name);
                goto fail;
            }
            val = "1";
        } else if (eq) {
            val = eq + 1;
        } else {
            if (k + 1 >= argc) {
                fw_cli_fail("option --%s needs a value (%s)", o->name, o->meta ? o->meta : "VALUE");
                goto fail;
            }
            val = argv[++k];
        }
        if (a->given[i] && o->type != FW_OPT_MULTI && o->type != FW_OPT_FLAG) {
            fw_cli_fail("option --%s given twice", o->name);
            goto fail;
        }
        if (s_check_value(v, o, val) != 0) goto fail;
        a->given[i] = 1;
        a->value[i] = val;
        if (o->type == FW_OPT_MULTI) {
            const char **m = realloc(a->multi[i], (a->nmulti[i] + 1) * sizeof *m);
            if (!m) {
                fw_cli_fail("out of memory");
                goto fail;
            }
            m[a->nmulti[i]++] = val;
            a->multi[i] = m;
        }
    }
    for (size_t i = 0; i < a->nopts; i++) {
        if (v->opts[i].required && !a->given[i]) {
            fw_cli_fail("missing required option --%s %s (see flywheel-engine %s --help)",
                        v->opts[i].name, v->opts[i].meta ? v->opts[i].meta : "", v->name);
            goto fail;
        }
        /* Defaults go through the same checks: a bad default is caught by
         * the first run of the verb, not by a user much later. */
        if (!a->given[i] && a->value[i] && s_check_value(v, &v->opts[i], a->value[i]) != 0)
            goto fail;
    }
    *exit_code = FW_CLI_EXIT_OK;
    return a;
fail:
    fw_cli_args_destroy(&a);
    return NULL;
}

int fw_cli_given(const fw_cli_args *a, const char *name) { return a->given[s_index(a, name)]; }

const char *fw_cli_str(const fw_cli_args *a, const char *name) {
    return a->value[s_index(a, name)];
}

long long fw_cli_int(const fw_cli_args *a, const char *name) {
    const char *s = a->value[s_index(a, name)];
    long long v = 0;
    if (s) s_parse_int(s, &v);
    return v;
}

double fw_cli_float(const fw_cli_args *a, const char *name) {
    const char *s = a->value[s_index(a, name)];
    double v = 0;
    if (s) s_parse_float(s, &v);
    return v;
}

int fw_cli_flag(const fw_cli_args *a, const char *name) {
    size_t i = s_index(a, name);
    return a->given[i] || (a->value[i] && strcmp(a->value[i], "1") == 0);
}

size_t fw_cli_multi(const fw_cli_args *a, const char *name, const char *const **values) {
    size_t i = s_index(a, name);
    *values = a->multi[i];
    return a->nmulti[i];
}

/* ---- help ------------------------------------------------------------ */

static void s_opt_left(const fw_cli_opt *o, char *buf, size_t size) {
    if (o->type == FW_OPT_FLAG)
        snprintf(buf, size, "--%s", o->name);
    else
        snprintf(buf, size, "--%s %s", o->name, o->meta ? o->meta : "VALUE");
}

void fw_cli_print_verb_help(FILE *f, const fw_cli_verb *v) {
    char left[64];
    fprintf(f, "usage: flywheel-engine %s", v->name);
    for (const fw_cli_opt *o = v->opts; o->name; o++) {
        if (!o->required) continue;
        s_opt_left(o, left, sizeof left);
        fprintf(f, " %s", left);
    }
    fprintf(f, " [options]\n\n%s\n", v->summary);
    if (v->details) fprintf(f, "\n%s\n", v->details);
    fprintf(f, "\noptions:\n");
    for (const fw_cli_opt *o = v->opts; o->name; o++) {
        s_opt_left(o, left, sizeof left);
        fprintf(f, "  %-26s %s", left, o->help);
        if (o->required) fprintf(f, " (required)");
        if (o->def && o->type != FW_OPT_FLAG) fprintf(f, " [default %s]", o->def);
        if (o->type == FW_OPT_MULTI) fprintf(f, " (repeatable)");
        fputc('\n', f);
    }
    fprintf(f, "  %-26s %s\n", "--help", "print this help");
    if (v->example) fprintf(f, "\nexample:\n  %s\n", v->example);
    fprintf(f, "\nJSON results on stdout (one object a line), progress and errors on stderr;\n"
               "exit 0 ok, 1 error, 2 usage error.\n");
}

/* Text for a markdown table cell: a bare '|' would end the cell (even inside
 * a code span), so it is written "\|" ("NAME|FILE.json", "<|endoftext|>"). */
static void s_md_cell(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '|') fputc('\\', f);
        fputc(*s, f);
    }
}

void fw_cli_print_markdown(FILE *f, const fw_cli_verb *const *verbs, size_t n) {
    char left[64];
    for (size_t k = 0; k < n; k++) {
        const fw_cli_verb *v = verbs[k];
        fprintf(f, "### `%s`\n\n%s\n\n", v->name, v->summary);
        if (v->details) fprintf(f, "%s\n\n", v->details);
        fprintf(f, "| option | meaning | default |\n|---|---|---|\n");
        for (const fw_cli_opt *o = v->opts; o->name; o++) {
            s_opt_left(o, left, sizeof left);
            fputs("| `", f);
            s_md_cell(f, left);
            fputs("` | ", f);
            s_md_cell(f, o->help);
            fprintf(f, "%s%s | ", o->required ? " **(required)**" : "",
                    o->type == FW_OPT_MULTI ? " (repeatable)" : "");
            s_md_cell(f, (o->def && o->type != FW_OPT_FLAG) ? o->def : "");
            fputs(" |\n", f);
        }
        if (v->example) fprintf(f, "\nExample:\n\n```\n%s\n```\n", v->example);
        fputc('\n', f);
    }
}

/* ---- UTF-8 ----------------------------------------------------------- */

size_t fw_cli_utf8_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) n++;
    return n;
}

/* ---- JSONL ----------------------------------------------------------- */

int fw_cli_jsonl_open(fw_cli_jsonl *r, const char *path) {
    memset(r, 0, sizeof *r);
    r->path = path;
    if (strcmp(path, "-") == 0) {
        r->f = stdin;
        r->path = "<stdin>";
        return 0;
    }
    r->f = fopen(path, "rb");
    if (!r->f) {
        fw_cli_fail("%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    r->owned = 1;
    return 0;
}

void fw_cli_jsonl_close(fw_cli_jsonl *r) {
    if (r->owned && r->f) fclose(r->f);
    free(r->buf);
    memset(r, 0, sizeof *r);
}

int fw_cli_jsonl_next(fw_cli_jsonl *r, json_t **obj) {
    *obj = NULL;
    for (;;) {
        errno = 0;
        ssize_t n = getline(&r->buf, &r->cap, r->f);
        if (n < 0) {
            if (ferror(r->f)) {
                fw_cli_fail("%s: read error after line %zu: %s", r->path, r->lineno,
                            strerror(errno ? errno : EIO));
                return -1;
            }
            return 0;
        }
        r->lineno++;
        size_t len = (size_t)n;
        while (len && (r->buf[len - 1] == '\n' || r->buf[len - 1] == '\r')) len--;
        const unsigned char *p = (const unsigned char *)r->buf;
        size_t start = 0;
        /* A UTF-8 byte-order mark on the first line is not part of the record. */
        if (r->lineno == 1 && len >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF) start = 3;
        size_t k = start;
        while (k < len && isspace(p[k])) k++;
        if (k == len) continue; /* blank line: skipped, still counted */
        size_t ok = fw_utf8_valid_prefix(p + start, len - start);
        if (ok != len - start) {
            fw_cli_fail("%s line %zu: invalid UTF-8 at byte %zu", r->path, r->lineno,
                        ok + start + 1);
            return -1;
        }
        json_error_t jerr;
        json_t *root = json_loadb(r->buf + start, len - start, JSON_REJECT_DUPLICATES, &jerr);
        if (!root) {
            fw_cli_fail("%s line %zu: invalid JSON at column %d: %s", r->path, r->lineno,
                        jerr.column, jerr.text);
            return -1;
        }
        if (!json_is_object(root)) {
            json_decref(root);
            fw_cli_fail("%s line %zu: a record must be a JSON object", r->path, r->lineno);
            return -1;
        }
        r->rec = r->buf + start;
        r->rec_len = len - start;
        *obj = root;
        return 1;
    }
}

int fw_cli_json_str(fw_cli_jsonl *r, json_t *obj, const char *key, int required, const char **s,
                    size_t *len) {
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (!required) return 0;
        fw_cli_fail("%s line %zu: field \"%s\" is missing", r->path, r->lineno, key);
        return -1;
    }
    if (!json_is_string(v)) {
        fw_cli_fail("%s line %zu: field \"%s\" must be a string", r->path, r->lineno, key);
        return -1;
    }
    *s = json_string_value(v);
    if (len) *len = json_string_length(v);
    return 1;
}

/* ---- models ---------------------------------------------------------- */

int fw_cli_load_model(const char *dir, const char *device, fw_model **m, fw_tokenizer **tok) {
    *m = NULL;
    if (tok) *tok = NULL;
    fw_err_clear();
    *m = fw_model_load_dir(dir, device ? device : "cpu");
    if (!*m) {
        fw_cli_fail("model %s: %s", dir, fw_err_detail());
        return -1;
    }
    if (!tok) return 0;
    *tok = fw_tokenizer_load(dir);
    if (!*tok) {
        fw_cli_fail("model %s: tokenizer: %s", dir, fw_err_detail());
        fw_model_destroy(m);
        return -1;
    }
    int tv = fw_tokenizer_vocab_size(*tok);
    int mv = fw_model_config_get(*m)->vocab_size;
    if (tv > mv) {
        fw_cli_fail("model %s: the tokenizer has %d tokens but the model only %d (vocab_size in "
                    "config.json): ids >= %d would be out of range",
                    dir, tv, mv, mv);
        fw_tokenizer_destroy(tok);
        fw_model_destroy(m);
        return -1;
    }
    return 0;
}

/* Keys of Hugging Face's GPT2Config that do not change the architecture
 * fw_model_config describes (or that only repeat it): accepted, ignored. */
static const char *const s_hf_ignored[] = {
    "architectures", "model_type", "activation_function", "resid_pdrop", "embd_pdrop",
    "attn_pdrop", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id",
    "summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels",
    "summary_first_dropout", "scale_attn_weights", "use_cache", "task_specific_params",
    "torch_dtype", "transformers_version", "scale_attn_by_inverse_layer_idx",
    "reorder_and_upcast_attn", "n_inner", "tie_word_embeddings", "_name_or_path",
    "add_cross_attention", "output_past", "n_special", "predict_special_tokens", "gradient_checkpointing",
    NULL};

static int s_json_int(json_t *root, const char *path, const char *key, int *out, int required) {
    json_t *v = json_object_get(root, key);
    if (!v) {
        if (!required) return 0;
        fw_cli_fail("%s: field \"%s\" is missing", path, key);
        return -1;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1 << 24) {
        fw_cli_fail("%s: field \"%s\" must be an integer in 1..16777216", path, key);
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 1;
}

int fw_cli_config_from(const char *spec, fw_model_config *cfg, int *file_vocab) {
    memset(cfg, 0, sizeof *cfg);
    *file_vocab = 0;
    size_t sl = strlen(spec);
    if (sl < 5 || strcmp(spec + sl - 5, ".json") != 0) {
        fw_err_clear();
        if (fw_model_config_preset(spec, 0, cfg) != 0) {
            fw_cli_fail("--config %s: %s (or give a FILE.json)", spec, fw_err_detail());
            return -1;
        }
        return 0;
    }
    json_error_t jerr;
    json_t *root = json_load_file(spec, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        fw_cli_fail("%s line %d column %d: %s", spec, jerr.line, jerr.column, jerr.text);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(root)) {
        fw_cli_fail("%s: the configuration must be a JSON object", spec);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        static const char *const known[] = {"n_layer",    "n_head",     "n_embd",
                                            "n_positions", "n_ctx",     "vocab_size",
                                            "layer_norm_epsilon", NULL};
        int ok = 0;
        for (int i = 0; known[i] && !ok; i++) ok = strcmp(key, known[i]) == 0;
        for (int i = 0; s_hf_ignored[i] && !ok; i++) ok = strcmp(key, s_hf_ignored[i]) == 0;
        if (!ok) {
            fw_cli_fail("%s: unknown field \"%s\" (known: n_layer, n_head, n_embd, n_positions, "
                        "vocab_size, layer_norm_epsilon)",
                        spec, key);
            goto done;
        }
    }
    if (s_json_int(root, spec, "n_layer", &cfg->n_layer, 1) < 0 ||
        s_json_int(root, spec, "n_head", &cfg->n_head, 1) < 0 ||
        s_json_int(root, spec, "n_embd", &cfg->n_embd, 1) < 0)
        goto done;
    int pos = 0, ctx = 0;
    int hp = s_json_int(root, spec, "n_positions", &pos, 0);
    int hc = s_json_int(root, spec, "n_ctx", &ctx, 0);
    if (hp < 0 || hc < 0) goto done;
    if (!hp && !hc) {
        fw_cli_fail("%s: field \"n_positions\" (or \"n_ctx\") is missing", spec);
        goto done;
    }
    if (hp && hc && pos != ctx) {
        fw_cli_fail("%s: n_positions %d and n_ctx %d differ", spec, pos, ctx);
        goto done;
    }
    cfg->n_ctx = hp ? pos : ctx;
    cfg->vocab_size = 50257;
    int hv = s_json_int(root, spec, "vocab_size", &cfg->vocab_size, 0);
    if (hv < 0) goto done;
    *file_vocab = hv;
    cfg->layer_norm_eps = 1e-5f;
    json_t *eps = json_object_get(root, "layer_norm_epsilon");
    if (eps) {
        if (!json_is_number(eps) || json_number_value(eps) <= 0 || json_number_value(eps) > 1) {
            fw_cli_fail("%s: field \"layer_norm_epsilon\" must be a number in (0, 1]", spec);
            goto done;
        }
        cfg->layer_norm_eps = (float)json_number_value(eps);
    }
    fw_err_clear();
    if (fw_model_config_check(cfg) != 0) {
        fw_cli_fail("%s: %s", spec, fw_err_detail());
        goto done;
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}
