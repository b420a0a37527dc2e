/* cli.h - the pieces shared by the verbs of flywheel-engine.
 *
 * Theory of operation
 * -------------------
 * flywheel-engine is one binary with verbs (init, tokenize, train, eval, ...).
 * Each verb is a row in engine_main.c's table: a name, a one-line summary,
 * a table of options and a run function. The option table is the only place
 * an option is described: the one parser below reads argv against it
 * (unknown option, missing value, bad number, out of bounds, missing
 * required option: a usage error naming the option), and the same table
 * prints `VERB --help` and the Markdown reference (`--help-markdown`).
 *
 * Output contract, for every verb:
 *   stdout  JSON results, one compact object a line (fw_cli_emit)
 *   stderr  human progress, and on failure one clear message naming the
 *           file / line / field ("flywheel-engine train: data.jsonl line 7: ...")
 *   exit    0 success, 1 runtime error (bad data, bad model, I/O), 2 usage error
 *
 * The verbs live in cli_*.c (compiled into fw_engine, so they can also be
 * called from tests); engine_main.c holds main() and the verb table. */
#ifndef FW_CLI_H
#define FW_CLI_H

#include "engine.h"
#include "tokenizer.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FW_CLI_EXIT_OK    0
#define FW_CLI_EXIT_ERROR 1
#define FW_CLI_EXIT_USAGE 2

/* ---- option tables ------------------------------------------------------ */

typedef enum {
    FW_OPT_STR,   /* --name VALUE */
    FW_OPT_INT,   /* --name N (checked against min..max) */
    FW_OPT_FLOAT, /* --name F (checked against min..max) */
    FW_OPT_FLAG,  /* --name (no value) */
    FW_OPT_MULTI  /* --name VALUE, may be repeated; every value kept */
} fw_opt_type;

typedef struct {
    const char *name; /* without the leading "--"; NULL ends a table */
    fw_opt_type type;
    int required;
    const char *def;  /* default as text (NULL: none), parsed like a given value */
    double min, max;  /* bounds for INT / FLOAT */
    const char *meta; /* placeholder in the help: "DIR", "N" */
    const char *help;
} fw_cli_opt;

typedef struct fw_cli_args fw_cli_args;

typedef struct {
    const char *name;     /* "train" */
    const char *summary;  /* one line for the top-level help */
    const char *details;  /* paragraph(s) for VERB --help; may be NULL */
    const char *example;  /* one command line; may be NULL */
    const fw_cli_opt *opts;
    int (*run)(const fw_cli_args *a); /* returns an FW_CLI_EXIT_* code */
} fw_cli_verb;

/* Parse argv (argv[0] is the verb name) against v->opts. Returns the
 * arguments, or NULL with *exit_code set: FW_CLI_EXIT_OK after printing the
 * help (--help / -h), FW_CLI_EXIT_USAGE after printing a usage error. */
fw_cli_args *fw_cli_parse(const fw_cli_verb *v, int argc, char **argv, int *exit_code);
void fw_cli_args_destroy(fw_cli_args **a);

/* Accessors by option name (a name missing from the table is a programmer
 * error and aborts). Values not given fall back to the default. */
int fw_cli_given(const fw_cli_args *a, const char *name);
const char *fw_cli_str(const fw_cli_args *a, const char *name); /* NULL: none */
long long fw_cli_int(const fw_cli_args *a, const char *name);
double fw_cli_float(const fw_cli_args *a, const char *name);
int fw_cli_flag(const fw_cli_args *a, const char *name);
/* Every value of a FW_OPT_MULTI option, in command-line order. */
size_t fw_cli_multi(const fw_cli_args *a, const char *name, const char *const **values);

/* Help texts. */
void fw_cli_print_verb_help(FILE *f, const fw_cli_verb *v);
void fw_cli_print_markdown(FILE *f, const fw_cli_verb *const *verbs, size_t n);

/* ---- output ----------------------------------------------------------- */

/* The running verb's name, for messages ("train"). */
void fw_cli_set_verb(const char *name);

/* Print "flywheel-engine VERB: <message>\n" to stderr; returns
 * FW_CLI_EXIT_ERROR so that `return fw_cli_fail("...")` works. */
int fw_cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Human progress on stderr ("flywheel-engine VERB: ..."), unless --quiet. */
void fw_cli_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fw_cli_set_quiet(int quiet);

/* Write obj to stdout as one compact JSON line and flush; takes the
 * reference (decrefs obj). Reals keep 9 significant digits, enough to
 * round-trip every float exactly. Returns 0, or -1 when stdout failed. */
int fw_cli_emit(json_t *obj);

/* ---- input ------------------------------------------------------------ */

/* A JSONL file read line by line ("-" = stdin). Blank lines (whitespace
 * only) are skipped but counted, so line numbers match an editor's. */
typedef struct {
    FILE *f;
    const char *path;
    int owned;     /* f was opened here */
    char *buf;
    size_t cap;
    size_t lineno; /* 1-based number of the line last returned */
    const char *rec; /* that line's record bytes (no newline, no BOM), inside buf */
    size_t rec_len;
} fw_cli_jsonl;

int fw_cli_jsonl_open(fw_cli_jsonl *r, const char *path); /* 0, or fail message + -1 */
/* Next record: 1 and *obj (caller decrefs), 0 at the end, -1 after printing
 * an error naming path:line (invalid UTF-8 with its byte offset, invalid
 * JSON with its column, not an object, an I/O error). */
int fw_cli_jsonl_next(fw_cli_jsonl *r, json_t **obj);
void fw_cli_jsonl_close(fw_cli_jsonl *r);

/* obj[key] as a string. Returns 1 found, 0 absent (and not required), -1
 * after printing an error (wrong type, or absent when required). */
int fw_cli_json_str(fw_cli_jsonl *r, json_t *obj, const char *key, int required,
                    const char **s, size_t *len);

/* Number of code points in valid UTF-8 text (len bytes). */
size_t fw_cli_utf8_chars(const char *s, size_t len);

/* ---- models ----------------------------------------------------------- */

/* Load a model directory and its tokenizer; prints the error and returns -1
 * (both outputs NULL) on failure. tok may be NULL when not wanted. */
int fw_cli_load_model(const char *dir, const char *device, fw_model **m, fw_tokenizer **tok);

/* Fill *cfg from a preset name or a JSON file (Hugging Face GPT2Config keys:
 * n_layer, n_head, n_embd, n_positions or n_ctx, vocab_size,
 * layer_norm_epsilon; bookkeeping keys of GPT2Config are accepted and
 * ignored, any other key is an error naming it). vocab_size is 50257 unless
 * the file gives one (*file_vocab = 1 then). 0, or -1 after printing. */
int fw_cli_config_from(const char *spec, fw_model_config *cfg, int *file_vocab);

/* ---- the verbs -------------------------------------------------------- */

extern const fw_cli_verb fw_cli_verb_init;
extern const fw_cli_verb fw_cli_verb_tokenize;
extern const fw_cli_verb fw_cli_verb_tokenizer_train;
extern const fw_cli_verb fw_cli_verb_prepare;
extern const fw_cli_verb fw_cli_verb_train;
extern const fw_cli_verb fw_cli_verb_eval;
extern const fw_cli_verb fw_cli_verb_embed;
extern const fw_cli_verb fw_cli_verb_generate;

/* ---- eval, shared with train's --eval-data ----------------------------- */

typedef struct {
    double loss_sum;   /* sum of token losses (nats) */
    size_t tokens;     /* tokens scored */
    size_t records;
} fw_cli_text_eval;

/* Token-weighted loss of a JSONL file of training-shaped records (text,
 * prompt/completion, chat: the tokens whose loss mask is 1), in windows of
 * at most T tokens (records longer than T are cut into consecutive windows,
 * each scored without the previous window as context). per_example may be
 * NULL. Puts m in eval mode and leaves it there. 0, or -1 after printing. */
int fw_cli_eval_text_file(fw_model *m, const fw_tokenizer *tok, const char *path, int B, int T,
                          FILE *per_example, fw_cli_text_eval *out);

#endif
