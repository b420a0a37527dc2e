/* ctl.h - flywheelctl's internals: the command table, the connection to the
 * coordinators, output helpers and the spec loader.
 *
 * flywheelctl is kubectl-like: `flywheelctl [global flags] NOUN VERB [args]
 * [flags]`. Every command is a row of one table (ctl_main.c) naming its noun,
 * verb, positional arguments, flags and the function that runs it; the same
 * rows print `--help` at every level and docs/cli.md describes them.
 *
 * Exit codes (docs/cli.md): 0 success, 1 error (the coordinator refused, was
 * unreachable, bad input), 64 usage error. `job wait` and `job submit --wait`
 * say how the job ended: 0 succeeded, 1 failed, 2 cancelled, 3 timed out,
 * 4 the state could not be read. */
#ifndef CTL_H
#define CTL_H

#include "fw_proto.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CTL_EXIT_OK        0
#define CTL_EXIT_ERROR     1
#define CTL_EXIT_USAGE     64 /* sysexits.h EX_USAGE */
#define CTL_EXIT_FAILED    1  /* job wait: the job failed */
#define CTL_EXIT_CANCELLED 2  /* job wait: the job was cancelled */
#define CTL_EXIT_TIMEOUT   3  /* job wait: --timeout passed first */
#define CTL_EXIT_UNKNOWN   4  /* job wait: the job's state could not be read */

#define CTL_DEFAULT_TIMEOUT_MS 5000 /* per request and endpoint */

typedef enum { CTL_OUT_TABLE = 0, CTL_OUT_JSON } ctl_output;

/* ------------------------------------------------------------ connection */

typedef struct ctl_conn ctl_conn_t;

/* A client of the coordinators at `endpoints` (comma-separated tcp://host:port
 * list; copied). timeout_ms bounds the wait for each reply from each endpoint.
 * curve_server_key: a zcert public certificate file to turn CURVE on, or NULL.
 * NULL with fw_err_detail() set when the list is empty or malformed. */
ctl_conn_t *ctl_conn_new(const char *endpoints, int64_t timeout_ms, const char *curve_server_key);
void ctl_conn_destroy(ctl_conn_t **p);

/* Send req (its token must be set) and wait for the reply: tries the
 * endpoint that answered last, then every other one; follows REDIRECT to the
 * leader; waits out ERROR replies that carry retry_after_ms (an election in
 * progress) while the overall budget lasts. Returns 0 with *reply (caller
 * destroys; never an ERROR), or a negative fw_err: an ERROR reply's code with
 * its message as the detail, FW_ETIMEDOUT / FW_EUNAVAIL "no coordinator
 * answered at ...". req's request_id is set by the call. */
int ctl_conn_call(ctl_conn_t *c, fw_msg_t *req, fw_msg_t **reply);

/* The next reply of a stream (LOG_CHUNK) to request `request_id`, from the
 * endpoint that answered the call. 0 / FW_ETIMEDOUT / an ERROR's code. */
int ctl_conn_next(ctl_conn_t *c, uint64_t request_id, int64_t timeout_ms, fw_msg_t **reply);

/* The endpoint that answered last ("" before any answer). */
const char *ctl_conn_endpoint(const ctl_conn_t *c);

/* "5 s", "1.5 s", "250 ms": durations as error messages show them. */
void ctl_format_duration(int64_t ms, char *buf, size_t size);
/* "5s", "500ms", "2m", "1h30m", or a bare number of seconds ("7", "0.5").
 * 0 / FW_EINVAL. */
int ctl_parse_duration(const char *s, int64_t *ms);

/* --------------------------------------------------------- the invocation */

#define CTL_MAX_FLAGS 16

typedef struct {
    const char *name;  /* long name, "state" for --state */
    char short_name;   /* 'f' for -f, or 0 */
    const char *arg;   /* metavar ("S") of a flag taking a value; NULL for a switch */
    const char *help;
} ctl_flag_def;

typedef struct ctl ctl_t;

typedef struct {
    const char *noun;
    const char *verb;
    const char *args; /* positional arguments for the usage line, "ID" */
    int min_args, max_args;
    const char *summary; /* one line */
    const char *help;    /* paragraphs after the usage line; may be NULL */
    const ctl_flag_def *flags; /* ends with {NULL}; may be NULL */
    int (*run)(ctl_t *c);
} ctl_cmd_def;

struct ctl {
    const char *prog;
    ctl_output output;
    int64_t timeout_ms;
    const char *endpoints;     /* --coordinator or FLYWHEEL_COORDINATOR */
    const char *token_file;    /* --token-file or FLYWHEEL_TOKEN_FILE */
    const char *curve_key;     /* --curve-server-key or FLYWHEEL_CURVE_SERVER_KEY */
    char *token;               /* loaded lazily by ctl_connect() */
    ctl_conn_t *conn;
    const ctl_cmd_def *cmd;
    int argc;                  /* positional arguments after NOUN VERB */
    const char **argv;
    int nflags;
    const char *flag_name[CTL_MAX_FLAGS]; /* flags given to the command */
    const char *flag_val[CTL_MAX_FLAGS];  /* "true" for switches */
};

/* The value of a command flag, or NULL when not given. */
const char *ctl_flag(const ctl_t *c, const char *name);
bool ctl_flag_on(const ctl_t *c, const char *name);

/* Load the token and open the connection (once). 0, or -1 after printing the
 * error. */
int ctl_connect(ctl_t *c);

/* A request of message `id` with the token set; NULL on ENOMEM (printed). */
fw_msg_t *ctl_request(ctl_t *c, int id);

/* ctl_conn_call with the error printed on stderr ("flywheelctl: ...").
 * 0 or the negative fw_err. */
int ctl_call(ctl_t *c, fw_msg_t *req, fw_msg_t **reply);

/* Parse the JSON `doc` field of a reply; NULL after printing an error. */
json_t *ctl_reply_doc(ctl_t *c, const fw_msg_t *reply);

/* ctl_call, then ctl_reply_doc: the reply's doc, or NULL after printing the
 * error. Destroys *req. existing (may be NULL) receives the reply's
 * "existing" flag. */
json_t *ctl_call_doc(ctl_t *c, fw_msg_t **req, bool *existing);

/* Blob transfer with the leader's artifact store (ctl_blob.c). The reader
 * fills buf with up to max bytes from offset off (*n; 0 or a negative fw_err
 * with a detail); the writer takes n bytes at off of a blob of `size` bytes
 * (also called once with n == 0 for an empty blob). Both print their errors
 * ("flywheelctl: <what>: ...") and return 0 or -1. */
typedef int(ctl_blob_read_fn)(void *arg, uint64_t off, void *buf, size_t max, size_t *n);
typedef int(ctl_blob_write_fn)(void *arg, uint64_t size, uint64_t off, const void *data,
                               size_t n);
int ctl_blob_upload(ctl_t *c, const char *what, const char *digest, uint64_t size,
                    ctl_blob_read_fn *rd, void *arg);
/* *total gets the bytes received. The caller checks the digest. */
int ctl_blob_download(ctl_t *c, const char *what, const char *digest, ctl_blob_write_fn *wr,
                      void *arg, uint64_t *total);

/* Download blob `digest` into path: "<path>.part", hashed as it arrives,
 * renamed to path only when the bytes match the digest (a corrupt store copy
 * is FW_ECORRUPT, no file). 0 or -1 printed. */
int ctl_blob_get_file(ctl_t *c, const char *what, const char *digest, const char *path);
/* The same into memory (at most max bytes; NUL-terminated, *len without it).
 * Caller frees *out. 0 or -1 printed. */
int ctl_blob_get_buffer(ctl_t *c, const char *what, const char *digest, size_t max, char **out,
                        size_t *len);

/* The version record of a model reference (NAME, NAME:VERSION, NAME@ALIAS)
 * from MODEL_GET; NULL after printing the error (ctl_model.c). */
json_t *ctl_model_get(ctl_t *c, const char *ref);

/* Print "flywheelctl: <message>\n" on stderr; returns CTL_EXIT_ERROR. */
int ctl_errorf(const ctl_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Every row of a paged list (JOB_LIST, TASK_LIST, AGENT_LIST): sends the
 * request (fields already set) page after page with `cursor`, appending each
 * page's doc array. A new JSON array, or NULL after printing the error
 * (*err gets the fw_err code). */
json_t *ctl_list_all(ctl_t *c, int msg_id, void (*fill)(fw_msg_t *req, void *arg), void *arg,
                     int *err);

/* ---------------------------------------------------------------- output */

/* JSON to stdout, indented, with a newline. */
void ctl_print_json(const json_t *v);

typedef struct ctl_table ctl_table_t;
ctl_table_t *ctl_table_new(int ncols, const char *const *headers);
/* Append a row of ncols cells (copied; NULL prints "-"). */
void ctl_table_add(ctl_table_t *t, const char *const *cells);
void ctl_table_print(const ctl_table_t *t, FILE *out);
void ctl_table_destroy(ctl_table_t **p);
/* A list reply: -o json prints the array as it is, the table output has
 * `ncols` columns under hdr and one row per element, added by add_row.
 * Takes the reference to arr. Returns CTL_EXIT_OK. */
int ctl_print_list(const ctl_t *c, json_t *arr, int ncols, const char *const *hdr,
                   void (*add_row)(ctl_table_t *t, json_t *rec));
/* A metric as a table cell: %.6g, "-" when absent or not a number. */
const char *ctl_num(const json_t *v, char *buf, size_t size);

/* The value at a dotted path ("resources.cpus") of an object, or NULL. */
json_t *ctl_get(const json_t *obj, const char *path);
/* The first of several paths that exists (NULL-terminated list). */
json_t *ctl_get_any(const json_t *obj, ...) __attribute__((sentinel));
/* A value as table text into buf: strings as they are, numbers, true/false,
 * "-" for null or missing, compact JSON for arrays and objects. */
const char *ctl_cell(const json_t *v, char *buf, size_t size);
/* A timestamp (ms since the Unix epoch, or an RFC 3339 string) as an age
 * ("12s", "5m", "3h", "2d"), "-" when missing. */
const char *ctl_age(const json_t *v, char *buf, size_t size);
/* An object as "key: value" lines on stdout, nested keys dotted (prefix ""). */
void ctl_print_object(const json_t *obj, const char *prefix);
/* A string field or "" (never NULL). */
const char *ctl_str(const json_t *obj, const char *path);

/* ------------------------------------------------------------------ specs */

/* Read a job spec from a file ("-" for stdin) in JSON or YAML (chosen by the
 * extension .json / .yaml / .yml, else by content) and return it as a JSON
 * object. Errors name the file, line and column and, for YAML, the key path
 * ("spec.yaml:4:9: resources.cpus: integer out of range"). NULL with the
 * detail in fw_err_detail(). */
json_t *ctl_spec_load(const char *path);
/* The same from text in memory; `origin` names it in errors. */
json_t *ctl_spec_parse(const char *text, size_t len, const char *origin, bool yaml);

/* ---------------------------------------------------------------- nouns */

extern const ctl_cmd_def ctl_cluster_cmds[];
extern const ctl_cmd_def ctl_agent_cmds[];
extern const ctl_cmd_def ctl_job_cmds[];
extern const ctl_cmd_def ctl_task_cmds[];
extern const ctl_cmd_def ctl_dataset_cmds[];
extern const ctl_cmd_def ctl_model_cmds[];
extern const ctl_cmd_def ctl_eval_cmds[];
extern const ctl_cmd_def ctl_lineage_cmds[];
extern const ctl_cmd_def ctl_artifact_cmds[];

/* Every task of a job (state: a filter or NULL); NULL after printing the
 * error (*err: the fw_err). */
json_t *ctl_tasks_of(ctl_t *c, const char *job_id, const char *state, int *err);
/* A task record's id ("j-000042.17"), built from {job, index} when the
 * record has no id field. */
const char *ctl_task_id(const json_t *t, char *buf, size_t size);

/* job wait's loop, shared with job submit --wait: polls the job until it is
 * terminal or timeout_ms (<0: forever) passes, then prints it and returns
 * one of the job-wait exit codes. */
int ctl_job_wait_loop(ctl_t *c, const char *job_id, int64_t timeout_ms, bool quiet);

#endif
