/* fw_dataset.h - dataset ingestion: validate, clean, deduplicate and split.
 *
 * `flywheelctl dataset add` brings a user's file into the cluster through
 * fw_dataset_ingest(): JSONL in the shapes the engine reads, or plain text,
 * goes in; canonical JSONL, one record a line, comes out, with a report of
 * what was accepted, rejected (line number and reason), dropped as empty or
 * as an exact duplicate, and statistics (bytes, characters, tokens) plus the
 * SHA-256 of the output, which names the dataset version in the artifact
 * store. fw_dataset_split() cuts an ingested file into train and eval files
 * by a seeded hash of each record, so a record's side never depends on the
 * order of the file or on the other records. docs/datasets.md is the
 * reference (shapes, cleaning rules, report, split rule).
 *
 * Record shapes (one JSON object a line; other top-level keys are kept):
 *   {"text": S}                                        text
 *   {"prompt": S, "completion": S}                     completion
 *   {"messages": [{"role": R, "content": S}, ...]}     chat
 *   {"prompt": S, "choices": [S, S, ...], "answer": I | S}   choice (eval only)
 *
 * The token count is computed through a callback so that common/ does not
 * depend on the engine's tokenizer; the wiring passes one that calls
 * fw_tokenizer_encode().
 *
 * Errors: functions return 0 or a negative fw_err with fw_err_detail() saying
 * what and where ("dataset in.jsonl: 7 of 20 records rejected, ..."). A bad
 * line is not an error of the call: it is counted and reported; only too
 * many of them (max_bad_fraction) fail the call, with FW_EINVAL. */
#ifndef FW_DATASET_H
#define FW_DATASET_H

#include "fw_digest.h"

#include <jansson.h> /* fw_dataset_check_record(): callers link jansson themselves */
#include <stddef.h>
#include <stdint.h>

/* Tokens in len bytes of UTF-8 text (not NUL-terminated). */
typedef size_t (*fw_dataset_count_fn)(void *arg, const char *text, size_t len);

typedef enum {
    FW_DATASET_AUTO = 0, /* JSONL when the first non-blank byte is '{', else text */
    FW_DATASET_JSONL,
    FW_DATASET_TEXT,
} fw_dataset_format;

typedef enum {
    FW_DATASET_PARAGRAPHS = 0, /* text: one record per run of non-blank lines */
    FW_DATASET_LINES,          /* text: one record per non-blank line */
} fw_dataset_text_unit;

typedef enum {
    FW_DATASET_WS_NORMALIZE = 0, /* trim, collapse spaces/tabs, at most one blank line */
    FW_DATASET_WS_KEEP,          /* only line endings (\r\n, \r -> \n); for code */
} fw_dataset_ws;

#define FW_DATASET_ROLE_MAX 32 /* longest chat role (the engine sizes "<|role|>" by it) */

typedef enum {
    FW_DATASET_SHAPE_TEXT = 0,
    FW_DATASET_SHAPE_COMPLETION,
    FW_DATASET_SHAPE_CHAT,
    FW_DATASET_SHAPE_CHOICE,
} fw_dataset_shape;

typedef enum {
    FW_DATASET_CHECK_INGEST = 0, /* the four shapes; an empty "text" / "completion" is valid */
    FW_DATASET_CHECK_TRAIN,      /* what the engine trains on: no choice shape ("choices" is an
                                  * extra key), an empty "text" / "completion" is refused */
} fw_dataset_check;

/* The one validator of record shapes: ingestion runs it in INGEST mode and
 * the engine (fw_data_tokenize_record) in TRAIN mode before tokenising, so
 * both refuse a record with the same words. root is the parsed line (UTF-8
 * and JSON syntax are the caller's). 0 with *shape set, or FW_EINVAL with the
 * reason as detail ("\"text\" is not a string", "messages[2].role is
 * missing", ...; docs/datasets.md lists them). Everything the shape's keys
 * promise is checked: their types, chat roles and an assistant turn, choices
 * and answer, so a caller may then read them without checking again. */
int fw_dataset_check_record(json_t *root, fw_dataset_check mode, fw_dataset_shape *shape);

typedef struct {
    fw_dataset_format format;
    fw_dataset_text_unit text_unit;
    fw_dataset_ws whitespace;
    int keep_duplicates;       /* 1: do not remove exact duplicates */
    int drop_extra_keys;       /* 1: write only the shape's keys */
    double max_bad_fraction;   /* fail when rejected > this * records_in (default 0.01) */
    size_t max_rejects;        /* rejected lines listed in the report (0: default 100) */
    size_t max_record_bytes;   /* longer lines / paragraphs are rejected (0: default 16 MiB) */
    fw_dataset_count_fn count; /* NULL: tokens are not counted */
    void *count_arg;
} fw_dataset_opts;

/* Fill *o with the defaults: zero everywhere but max_bad_fraction 0.01,
 * max_rejects 100 and max_record_bytes 16 MiB. */
void fw_dataset_opts_init(fw_dataset_opts *o);

typedef struct {
    size_t line;      /* 1-based line number in the input (blank lines count) */
    char reason[160]; /* "invalid JSON at column 5: ...", without the line number */
} fw_dataset_reject;

typedef struct {
    fw_dataset_format format; /* what the input was read as (never AUTO) */
    size_t lines;             /* lines in the input, blank ones included */
    size_t records_in;        /* candidate records: non-blank JSONL lines, paragraphs or lines */
    size_t accepted;          /* records that passed validation */
    size_t rejected;          /* records that did not (listed below, up to max_rejects) */
    size_t empty;             /* accepted but nothing left after cleaning: dropped */
    size_t duplicates;        /* accepted but an exact duplicate of an earlier record: dropped */
    size_t records_out;       /* = accepted - empty - duplicates */
    size_t cleaned;           /* records written that cleaning changed */
    size_t text_records, completion_records, chat_records, choice_records; /* of records_out */
    size_t bytes_in;                                                       /* bytes read */
    size_t bytes_out;                                                      /* bytes written */
    size_t content_bytes;            /* UTF-8 bytes of the content strings written */
    size_t chars;                    /* code points of the content strings written */
    size_t tokens;                   /* count() summed over the content strings written */
    int tokens_counted;              /* 1 when opts->count was given */
    char digest[FW_DIGEST_STR_SIZE]; /* "sha256:..." of the output file */
    fw_dataset_reject *rejects;      /* the first nrejects rejected records, in input order */
    size_t nrejects;
} fw_dataset_report;

/* Free the report's reject list and zero it. Idempotent. */
void fw_dataset_report_free(fw_dataset_report *rep);

/* Ingest `in` into canonical JSONL at `out` (written atomically; on failure
 * `out` is untouched). opts NULL = defaults. rep may be NULL; when given it is
 * filled even when the call fails on the threshold, so the caller can show
 * the rejected lines; free it with fw_dataset_report_free() (the call
 * overwrites *rep: free an earlier report first). Fails with
 * FW_EINVAL when too many records are rejected or no record is left,
 * FW_ENOTFOUND / FW_EIO for the files. */
int fw_dataset_ingest(const char *in, const fw_dataset_opts *opts, const char *out,
                      fw_dataset_report *rep);

/* The report as text for a person, one fact a line, then "line N: reason"
 * for each listed reject and "... and K more" when the list was capped.
 * Caller frees. NULL on out of memory. */
char *fw_dataset_report_text(const fw_dataset_report *rep);

/* The report as one compact JSON object (keys in docs/datasets.md), for etcd
 * metadata and `-o json`. Caller frees. NULL on out of memory. */
char *fw_dataset_report_json(const fw_dataset_report *rep);

/* Content digest of one record: SHA-256 of the canonical JSON (sorted keys,
 * no spaces) of the record restricted to its shape's keys. Dedupe and split
 * both use it. `json` is one line of an ingested file (len bytes, no
 * newline). FW_EINVAL with the reason when the line is not a valid record. */
int fw_dataset_record_digest(const char *json, size_t len, fw_digest *out);

typedef struct {
    size_t records; /* records in the input */
    size_t train;   /* records written to the train file */
    size_t eval;    /* records written to the eval file */
    char train_digest[FW_DIGEST_STR_SIZE];
    char eval_digest[FW_DIGEST_STR_SIZE];
} fw_dataset_split_counts;

/* Split an ingested file: a record goes to eval when the first 8 bytes of
 * SHA-256(seed as 8 bytes big-endian || record digest), read as a big-endian
 * integer and shifted right by 11, is below holdout * 2^53; else to train.
 * Lines are copied byte for byte and keep their order. holdout in [0, 1].
 * Both files are written atomically. counts may be NULL. FW_EINVAL with the
 * line number when a line is not a valid record. */
int fw_dataset_split(const char *in, double holdout, uint64_t seed, const char *train_out,
                     const char *eval_out, fw_dataset_split_counts *counts);

#endif
