/* fw_dataset.c - dataset ingestion and splitting (see fw_dataset.h and
 * docs/datasets.md).
 *
 * Theory of operation
 * -------------------
 * Ingestion is one pass over the input, one record at a time, so memory is
 * bounded by the longest record plus 66-132 bytes per distinct record (the
 * dedupe set), whatever the file size:
 *
 *   line reader --> record (a JSONL line, or a paragraph / line of text)
 *     --> validate: UTF-8, JSON, shape and field types  --bad--> reject list
 *     --> clean every content string: NFC, then whitespace
 *     --> empty after cleaning?                          --yes--> dropped (empty)
 *     --> content digest = SHA-256(canonical JSON of the shape's keys)
 *     --> seen before?                                   --yes--> dropped (duplicate)
 *     --> canonical line (sorted keys, compact) --> "<out>.new" + running SHA-256
 *   end: too many rejects or nothing left?  --yes--> abort: <out> untouched
 *                                            --no---> commit: rename over <out>
 *
 * Invariants:
 *   1. records_in = accepted + rejected; accepted = empty + duplicates +
 *      records_out. Every candidate record lands in exactly one bucket.
 *   2. Cleaning is idempotent: cleaning a cleaned string changes nothing, so
 *      an ingested file ingests to itself (same bytes, same digest), and
 *      fw_dataset_record_digest() of an output line equals the digest that
 *      deduplicated it.
 *   3. The output depends only on the input bytes and the options: keys are
 *      sorted, numbers and strings are re-serialised by one jansson call, no
 *      clock, locale or hash-table order enters a line.
 *
 * fw_dataset_check_record() is the one validator of record shapes: the
 * engine's fw_data_tokenize_record() (agent/engine/data.c) calls it in TRAIN
 * mode, ingestion in INGEST mode, so a line the engine would refuse is refused
 * here first, with the same words. The choice shape follows the engine's eval
 * rules (agent/engine/cli_eval.c). INGEST differs from TRAIN deliberately: it
 * accepts choice records, and an empty "text" or "completion" is a valid
 * record with nothing in it (counted as empty and dropped), not a bad line.
 *
 * The split decides each record's side from SHA-256(seed || content digest)
 * alone. A record therefore stays on its side when other records are added,
 * removed or reordered, and when only its non-content keys change: a later
 * version of a dataset never moves an eval record into train. */
#include "fw_dataset.h"

#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"
#include "fw_utf8.h"

#include <errno.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define S_DEFAULT_MAX_REJECTS 100
#define S_DEFAULT_MAX_RECORD  ((size_t)16 << 20) /* 16 MiB: far above any sane record */
#define S_MAX_CHOICES         1000               /* the engine's eval bound */
#define S_JSON_FLAGS          (JSON_COMPACT | JSON_SORT_KEYS)

/* ------------------------------------------------------------------ */
/* Line reader: 64 KiB blocks, lines of any length but only the first
 * `max` bytes kept (the rest is skipped and the line flagged), embedded NUL
 * bytes preserved (fgets would cut them). */

typedef struct {
    FILE *f;
    char blk[65536];
    size_t pos, end;
    int eof;
    char *line;
    size_t cap;
    size_t bytes; /* read so far */
} s_reader;

static int s_reader_fill(s_reader *r) {
    if (r->eof) return 0;
    r->pos = 0;
    r->end = fread(r->blk, 1, sizeof r->blk, r->f);
    r->bytes += r->end;
    if (r->end == 0) {
        r->eof = 1;
        if (ferror(r->f)) return FW_EIO;
    }
    return 0;
}

/* 1 with the line (no "\n", trailing "\r"s removed), 0 at the end, or a
 * negative fw_err. */
static int s_reader_next(s_reader *r, size_t max, char **line, size_t *len, int *too_long) {
    size_t n = 0;
    int got = 0;
    *too_long = 0;
    for (;;) {
        if (r->pos == r->end) {
            int rc = s_reader_fill(r);
            if (rc) return rc;
            if (r->eof) {
                if (!got) return 0;
                break;
            }
        }
        got = 1;
        char *nl = memchr(r->blk + r->pos, '\n', r->end - r->pos);
        size_t chunk = (nl ? (size_t)(nl - r->blk) : r->end) - r->pos;
        size_t take = chunk;
        if (n + take > max) {
            take = max - n;
            *too_long = 1;
        }
        if (n + take + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < n + take + 1) cap *= 2;
            char *p = realloc(r->line, cap);
            if (!p) return FW_ENOMEM;
            r->line = p, r->cap = cap;
        }
        memcpy(r->line + n, r->blk + r->pos, take);
        n += take;
        r->pos += chunk;
        if (nl) {
            r->pos++; /* the '\n' */
            break;
        }
    }
    while (n && r->line[n - 1] == '\r') n--;
    r->line[n] = '\0';
    *line = r->line;
    *len = n;
    return 1;
}

static int s_hspace(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\v' || c == '\f';
}

static int s_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!s_hspace((unsigned char)s[i]) && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}

static size_t s_codepoints(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* ------------------------------------------------------------------ */
/* Cleaning. Fields whose edges carry meaning for tokenisation (a prompt's
 * trailing space, a choice's leading space: docs/engine.md says choices are
 * scored as written) keep one whitespace character at each edge; text and
 * message contents are trimmed. */

typedef enum { S_TRIM, S_EDGES } s_edge;

/* Emit the whitespace run that stood between two pieces: a paragraph break
 * stays one blank line, a line break stays, spaces and tabs become one. */
static void s_emit_gap(char *o, size_t *k, size_t nl, int space) {
    if (nl) {
        for (size_t i = 0; i < (nl > 2 ? 2 : nl); i++) o[(*k)++] = '\n';
    } else if (space) {
        o[(*k)++] = ' ';
    }
}

/* Whitespace rules on src (NFC already); dst has room for n + 1 bytes (the
 * result is never longer). Returns the length. */
static size_t s_whitespace(const char *src, size_t n, s_edge edge, fw_dataset_ws ws, char *dst) {
    size_t k = 0;
    if (ws == FW_DATASET_WS_KEEP) {
        for (size_t i = 0; i < n; i++) {
            if (src[i] == '\r') {
                dst[k++] = '\n';
                if (i + 1 < n && src[i + 1] == '\n') i++;
            } else {
                dst[k++] = src[i];
            }
        }
        dst[k] = '\0';
        return k;
    }
    size_t nl = 0;
    int space = 0, start = 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '\r') {
            if (i + 1 < n && src[i + 1] == '\n') continue; /* the '\n' counts it */
            c = '\n';
        }
        if (s_hspace(c)) {
            space = 1;
        } else if (c == '\n') {
            nl++;
            space = 0; /* spaces next to a line break are dropped */
        } else {
            if (!start || edge == S_EDGES) s_emit_gap(dst, &k, nl, space);
            dst[k++] = (char)c;
            start = 0, nl = 0, space = 0;
        }
    }
    if (edge == S_EDGES) s_emit_gap(dst, &k, nl, space);
    dst[k] = '\0';
    return k;
}

typedef struct {
    const fw_dataset_opts *o;
    int changed;
    size_t content_bytes, chars, tokens;
} s_stats;

/* Clean the JSON string `in` into a new JSON string in *out, counting the
 * result into st. 0 or FW_ENOMEM. */
static int s_clean(s_stats *st, json_t *in, s_edge edge, json_t **out) {
    const char *s = json_string_value(in);
    size_t n = json_string_length(in);
    utf8proc_uint8_t *nfc = NULL;
    int ascii = 1;
    for (size_t i = 0; i < n && ascii; i++) ascii = (unsigned char)s[i] < 0x80;
    const char *src = s;
    size_t srcn = n;
    if (!ascii) { /* ASCII is already NFC: skip the library on most text */
        utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &nfc,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m < 0) /* the string was validated: only memory can fail */
            return fw_err_set(FW_ENOMEM, "NFC: %s", utf8proc_errmsg(m));
        src = (const char *)nfc, srcn = (size_t)m;
    }
    char *buf = malloc(srcn + 1);
    if (!buf) {
        free(nfc);
        return fw_err_set(FW_ENOMEM, "dataset: out of memory");
    }
    size_t k = s_whitespace(src, srcn, edge, st->o->whitespace, buf);
    free(nfc);
    if (k != n || memcmp(buf, s, n) != 0) st->changed = 1;
    *out = json_stringn_nocheck(buf, k);
    free(buf);
    if (!*out) return fw_err_set(FW_ENOMEM, "dataset: out of memory");
    st->content_bytes += k;
    st->chars += s_codepoints(json_string_value(*out), k);
    if (st->o->count) st->tokens += st->o->count(st->o->count_arg, json_string_value(*out), k);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Shapes: fw_dataset_check_record(), the one validator (the engine's
 * fw_data_tokenize_record() calls it too), the canonical content object, and
 * the cleaned record. */

static int s_role_ok(const char *r, size_t len) {
    if (len == 0 || len > FW_DATASET_ROLE_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = r[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int s_check_messages(json_t *msgs) {
    if (!json_is_array(msgs)) return fw_err_set(FW_EINVAL, "\"messages\" is not an array");
    size_t nm = json_array_size(msgs);
    if (nm == 0) return fw_err_set(FW_EINVAL, "\"messages\" is empty");
    int assistant = 0;
    for (size_t i = 0; i < nm; i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m)) return fw_err_set(FW_EINVAL, "messages[%zu] is not an object", i);
        json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        if (!json_is_string(role))
            return fw_err_set(FW_EINVAL, "messages[%zu].role is %s", i,
                              role ? "not a string" : "missing");
        if (!json_is_string(content))
            return fw_err_set(FW_EINVAL, "messages[%zu].content is %s", i,
                              content ? "not a string" : "missing");
        if (!s_role_ok(json_string_value(role), json_string_length(role)))
            return fw_err_set(FW_EINVAL, "messages[%zu].role must be 1-%d of [A-Za-z0-9_-]", i,
                              FW_DATASET_ROLE_MAX);
        assistant |= strcmp(json_string_value(role), "assistant") == 0;
    }
    if (!assistant)
        return fw_err_set(FW_EINVAL, "\"messages\" has no assistant turn (nothing to learn)");
    return 0;
}

static int s_check_choice(json_t *root) {
    json_t *prompt = json_object_get(root, "prompt"), *choices = json_object_get(root, "choices");
    json_t *ans = json_object_get(root, "answer");
    if (!prompt) return fw_err_set(FW_EINVAL, "\"choices\" without \"prompt\"");
    if (!json_is_string(prompt)) return fw_err_set(FW_EINVAL, "\"prompt\" is not a string");
    if (!json_is_array(choices) || json_array_size(choices) < 2)
        return fw_err_set(FW_EINVAL, "\"choices\" must be an array of at least 2 strings");
    size_t nch = json_array_size(choices);
    if (nch > S_MAX_CHOICES)
        return fw_err_set(FW_EINVAL, "%zu choices, at most %d", nch, S_MAX_CHOICES);
    int found = 0;
    for (size_t c = 0; c < nch; c++) {
        json_t *ch = json_array_get(choices, c);
        if (!json_is_string(ch) || json_string_length(ch) == 0)
            return fw_err_set(FW_EINVAL, "choice %zu must be a non-empty string", c);
        found |= json_is_string(ans) && json_equal(ans, ch);
    }
    if (json_is_integer(ans) && json_integer_value(ans) >= 0 &&
        json_integer_value(ans) < (json_int_t)nch)
        found = 1;
    if (!found)
        return fw_err_set(FW_EINVAL,
                          "\"answer\" must be a choice index 0..%zu or the text of one of the "
                          "choices",
                          nch - 1);
    return 0;
}

int fw_dataset_check_record(json_t *root, fw_dataset_check mode, fw_dataset_shape *shape) {
    if (!shape) return fw_err_set(FW_EINVAL, "check record: NULL argument");
    if (!json_is_object(root)) return fw_err_set(FW_EINVAL, "not a JSON object");
    /* For training "choices" is just another key: the engine does not score. */
    const int train = mode == FW_DATASET_CHECK_TRAIN;
    json_t *text = json_object_get(root, "text"), *msgs = json_object_get(root, "messages");
    json_t *prompt = json_object_get(root, "prompt"), *comp = json_object_get(root, "completion");
    json_t *choices = train ? NULL : json_object_get(root, "choices");
    int shapes = (text != NULL) + (msgs != NULL) + (prompt || comp || choices);
    if (shapes == 0)
        return fw_err_set(FW_EINVAL, "no \"text\", \"prompt\"+\"completion\"%s or \"messages\" key",
                          train ? "" : ", \"prompt\"+\"choices\"+\"answer\"");
    if (shapes > 1 || (comp && choices))
        return fw_err_set(FW_EINVAL,
                          "ambiguous record: more than one of \"text\", "
                          "\"prompt\"/\"completion\", %s\"messages\"",
                          train ? "" : "\"choices\", ");
    if (text) {
        if (!json_is_string(text)) return fw_err_set(FW_EINVAL, "\"text\" is not a string");
        if (train && json_string_length(text) == 0) return fw_err_set(FW_EINVAL, "empty text");
        *shape = FW_DATASET_SHAPE_TEXT;
        return 0;
    }
    if (msgs) {
        *shape = FW_DATASET_SHAPE_CHAT;
        return s_check_messages(msgs);
    }
    if (choices) {
        *shape = FW_DATASET_SHAPE_CHOICE;
        return s_check_choice(root);
    }
    if (!prompt || !comp)
        return fw_err_set(FW_EINVAL, "\"%s\" without \"%s\"", prompt ? "prompt" : "completion",
                          prompt ? "completion" : "prompt");
    if (!json_is_string(prompt) || !json_is_string(comp))
        return fw_err_set(FW_EINVAL, "\"%s\" is not a string",
                          json_is_string(prompt) ? "completion" : "prompt");
    if (train && json_string_length(comp) == 0) return fw_err_set(FW_EINVAL, "empty completion");
    *shape = FW_DATASET_SHAPE_COMPLETION;
    return 0;
}

static int s_is_shape_key(fw_dataset_shape shape, const char *k) {
    switch (shape) {
    case FW_DATASET_SHAPE_TEXT:
        return strcmp(k, "text") == 0;
    case FW_DATASET_SHAPE_COMPLETION:
        return strcmp(k, "prompt") == 0 || strcmp(k, "completion") == 0;
    case FW_DATASET_SHAPE_CHAT:
        return strcmp(k, "messages") == 0;
    case FW_DATASET_SHAPE_CHOICE:
        return strcmp(k, "prompt") == 0 || strcmp(k, "choices") == 0 || strcmp(k, "answer") == 0;
    }
    return 0;
}

/* A new object holding only the shape's keys (messages reduced to role and
 * content): what the content digest hashes. NULL on out of memory. */
static json_t *s_content(json_t *rec, fw_dataset_shape shape) {
    json_t *c = json_object();
    if (!c) return NULL;
    const char *k;
    json_t *v;
    json_object_foreach(rec, k, v) {
        if (!s_is_shape_key(shape, k)) continue;
        if (shape == FW_DATASET_SHAPE_CHAT) {
            json_t *arr = json_array();
            if (!arr || json_object_set_new(c, k, arr)) goto fail;
            size_t i;
            json_t *m;
            json_array_foreach(v, i, m) {
                json_t *e = json_pack("{sOsO}", "role", json_object_get(m, "role"), "content",
                                      json_object_get(m, "content"));
                if (!e || json_array_append_new(arr, e)) goto fail;
            }
        } else if (json_object_set(c, k, v)) {
            goto fail;
        }
    }
    return c;
fail:
    json_decref(c);
    return NULL;
}

static int s_digest_of(json_t *rec, fw_dataset_shape shape, fw_digest *d) {
    json_t *c = s_content(rec, shape);
    char *s = c ? json_dumps(c, S_JSON_FLAGS) : NULL;
    json_decref(c);
    if (!s) return fw_err_set(FW_ENOMEM, "dataset: out of memory");
    int rc = fw_digest_buffer(s, strlen(s), d);
    free(s);
    return rc;
}

/* Set key to the cleaned copy of string v. */
static int s_set_clean(s_stats *st, json_t *obj, const char *key, json_t *v, s_edge edge) {
    json_t *c = NULL;
    int rc = s_clean(st, v, edge, &c);
    if (rc) return rc;
    if (json_object_set_new(obj, key, c)) return fw_err_set(FW_ENOMEM, "dataset: out of memory");
    return 0;
}

/* The cleaned record of a valid root; *empty when its content is blank. */
static int s_build(s_stats *st, json_t *root, fw_dataset_shape shape, json_t **out, int *empty) {
    json_t *rec = json_object();
    if (!rec) return fw_err_set(FW_ENOMEM, "dataset: out of memory");
    int rc = 0;
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        if (s_is_shape_key(shape, k)) continue;
        if (!st->o->drop_extra_keys && json_object_set(rec, k, v)) goto nomem;
    }
    *empty = 0;
    if (shape == FW_DATASET_SHAPE_TEXT) {
        rc = s_set_clean(st, rec, "text", json_object_get(root, "text"), S_TRIM);
        json_t *t = json_object_get(rec, "text");
        *empty = !rc && s_blank(json_string_value(t), json_string_length(t));
    } else if (shape == FW_DATASET_SHAPE_COMPLETION) {
        rc = s_set_clean(st, rec, "prompt", json_object_get(root, "prompt"), S_EDGES);
        if (!rc)
            rc = s_set_clean(st, rec, "completion", json_object_get(root, "completion"), S_EDGES);
        json_t *c = json_object_get(rec, "completion");
        *empty = !rc && s_blank(json_string_value(c), json_string_length(c));
    } else if (shape == FW_DATASET_SHAPE_CHAT) {
        json_t *msgs = json_object_get(root, "messages"), *arr = json_array(), *m;
        if (!arr || json_object_set_new(rec, "messages", arr)) goto nomem;
        size_t i;
        *empty = 1;
        json_array_foreach(msgs, i, m) {
            json_t *e = json_object();
            if (!e || json_array_append_new(arr, e)) goto nomem;
            if (json_object_set(e, "role", json_object_get(m, "role"))) goto nomem;
            rc = s_set_clean(st, e, "content", json_object_get(m, "content"), S_TRIM);
            if (rc) break;
            json_t *c = json_object_get(e, "content");
            *empty &= s_blank(json_string_value(c), json_string_length(c));
        }
    } else { /* FW_DATASET_SHAPE_CHOICE: a record to score, never empty (choices are non-empty) */
        rc = s_set_clean(st, rec, "prompt", json_object_get(root, "prompt"), S_EDGES);
        json_t *arr = json_array(), *ch;
        if (!arr || json_object_set_new(rec, "choices", arr)) goto nomem;
        size_t i;
        json_array_foreach(json_object_get(root, "choices"), i, ch) {
            json_t *c = NULL;
            if (rc || (rc = s_clean(st, ch, S_EDGES, &c))) break;
            if (json_array_append_new(arr, c)) goto nomem;
        }
        json_t *ans = json_object_get(root, "answer");
        if (!rc && json_is_string(ans)) {
            /* Cleaned like the choice it names, so it still names it. Not a
             * content string: do not count it twice. */
            s_stats quiet = {.o = st->o};
            json_t *c = NULL;
            rc = s_clean(&quiet, ans, S_EDGES, &c);
            if (!rc && json_object_set_new(rec, "answer", c)) goto nomem;
            st->changed |= quiet.changed;
        } else if (!rc && json_object_set(rec, "answer", ans)) {
            goto nomem;
        }
    }
    if (rc) {
        json_decref(rec);
        return rc;
    }
    *out = rec;
    return 0;
nomem:
    json_decref(rec);
    return fw_err_set(FW_ENOMEM, "dataset: out of memory");
}

/* ------------------------------------------------------------------ */
/* The set of content digests seen (open addressing, load <= 1/2). */

typedef struct {
    fw_digest *slot;
    unsigned char *used;
    size_t cap, n;
} s_set;

static size_t s_set_home(const fw_digest *d, size_t cap) {
    uint64_t h;
    memcpy(&h, d->bytes, sizeof h); /* SHA-256 bytes are uniform already */
    return (size_t)(h & (cap - 1));
}

/* 1 when d was added, 0 when it was there, FW_ENOMEM. */
static int s_set_add(s_set *s, const fw_digest *d) {
    if (2 * (s->n + 1) > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        fw_digest *slot = malloc(cap * sizeof *slot);
        unsigned char *used = calloc(cap, 1);
        if (!slot || !used) {
            free(slot), free(used);
            return fw_err_set(FW_ENOMEM, "dataset: out of memory for %zu digests", cap);
        }
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->used[i]) continue;
            size_t j = s_set_home(&s->slot[i], cap);
            while (used[j]) j = (j + 1) & (cap - 1);
            slot[j] = s->slot[i], used[j] = 1;
        }
        free(s->slot), free(s->used);
        s->slot = slot, s->used = used, s->cap = cap;
    }
    size_t j = s_set_home(d, s->cap);
    while (s->used[j]) {
        if (fw_digest_equal(&s->slot[j], d)) return 0;
        j = (j + 1) & (s->cap - 1);
    }
    s->slot[j] = *d, s->used[j] = 1, s->n++;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Ingestion. */

typedef struct {
    fw_dataset_opts o;
    fw_dataset_report *rep;
    fw_file_atomic *w;
    fw_digest_ctx *dctx;
    s_set seen;
} s_ingest;

static int s_reject(s_ingest *g, size_t line, const char *reason) {
    fw_dataset_report *rep = g->rep;
    rep->rejected++;
    if (rep->nrejects >= g->o.max_rejects) return 0;
    fw_dataset_reject *p = realloc(rep->rejects, (rep->nrejects + 1) * sizeof *p);
    if (!p) return fw_err_set(FW_ENOMEM, "dataset: out of memory");
    rep->rejects = p;
    p[rep->nrejects].line = line;
    snprintf(p[rep->nrejects].reason, sizeof p->reason, "%s", reason);
    rep->nrejects++;
    return 0;
}

static int s_write(s_ingest *g, const void *data, size_t len) {
    int rc = fw_file_atomic_write(g->w, data, len);
    if (!rc) rc = fw_digest_ctx_update(g->dctx, data, len);
    if (!rc) g->rep->bytes_out += len;
    return rc;
}

/* One valid parsed record: clean, drop if empty or seen, else write. */
static int s_accept(s_ingest *g, json_t *root, fw_dataset_shape shape) {
    fw_dataset_report *rep = g->rep;
    s_stats st = {.o = &g->o};
    json_t *rec = NULL;
    int empty = 0;
    int rc = s_build(&st, root, shape, &rec, &empty);
    if (rc) return rc;
    rep->accepted++;
    if (empty) {
        rep->empty++;
        json_decref(rec);
        return 0;
    }
    fw_digest d;
    rc = s_digest_of(rec, shape, &d);
    if (!rc && !g->o.keep_duplicates) {
        rc = s_set_add(&g->seen, &d);
        if (rc == 0) {
            rep->duplicates++;
            json_decref(rec);
            return 0;
        }
        rc = rc < 0 ? rc : 0;
    }
    char *line = rc ? NULL : json_dumps(rec, S_JSON_FLAGS);
    json_decref(rec);
    if (rc) return rc;
    if (!line) return fw_err_set(FW_ENOMEM, "dataset: out of memory");
    rc = s_write(g, line, strlen(line));
    if (!rc) rc = s_write(g, "\n", 1);
    free(line);
    if (rc) return rc;
    rep->records_out++;
    rep->cleaned += (size_t)st.changed;
    rep->content_bytes += st.content_bytes;
    rep->chars += st.chars;
    rep->tokens += st.tokens;
    size_t *by_shape[] = {&rep->text_records, &rep->completion_records, &rep->chat_records,
                          &rep->choice_records};
    (*by_shape[shape])++;
    return 0;
}

/* Check the bytes of a candidate record; a reason in `why` when bad. */
static int s_bytes_ok(const char *s, size_t len, int too_long, size_t max, int allow_nul, char *why,
                      size_t whysz) {
    if (too_long) {
        snprintf(why, whysz, "record longer than %zu bytes", max);
        return 0;
    }
    size_t ok = fw_utf8_valid_prefix(s, len);
    if (ok != len) {
        snprintf(why, whysz, "invalid UTF-8 at byte %zu", ok + 1);
        return 0;
    }
    const char *z = allow_nul ? NULL : memchr(s, '\0', len);
    if (z) {
        snprintf(why, whysz, "NUL byte at byte %zu", (size_t)(z - s) + 1);
        return 0;
    }
    return 1;
}

static int s_jsonl_line(s_ingest *g, const char *line, size_t len, int too_long, size_t lineno) {
    char why[256]; /* jansson's text is up to 160 bytes; the report keeps 159 */
    g->rep->records_in++;
    /* NUL inside a JSON line is caught by the parser (jansson refuses it). */
    if (!s_bytes_ok(line, len, too_long, g->o.max_record_bytes, 1, why, sizeof why))
        return s_reject(g, lineno, why);
    json_error_t jerr;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(why, sizeof why, "invalid JSON at column %d: %s", jerr.column, jerr.text);
        return s_reject(g, lineno, why);
    }
    fw_dataset_shape shape;
    fw_err_clear();
    int rc = fw_dataset_check_record(root, FW_DATASET_CHECK_INGEST, &shape);
    if (rc == FW_EINVAL)
        rc = s_reject(g, lineno, fw_err_detail());
    else if (!rc)
        rc = s_accept(g, root, shape);
    json_decref(root);
    return rc;
}

/* A paragraph (or line) of plain text being gathered. */
typedef struct {
    char *buf;
    size_t len, cap;
    size_t first_line; /* where it starts */
    size_t bad_line;   /* first bad line in it (0: none) */
    char why[160];
    int open;
} s_para;

static int s_para_add(s_para *p, const char *s, size_t n, size_t max) {
    size_t need = p->len + (p->len ? 1 : 0) + n;
    if (need > max) return 1; /* caller rejects */
    if (need + 1 > p->cap) {
        size_t cap = p->cap ? p->cap : 4096;
        while (cap < need + 1) cap *= 2;
        char *b = realloc(p->buf, cap);
        if (!b) return fw_err_set(FW_ENOMEM, "dataset: out of memory");
        p->buf = b, p->cap = cap;
    }
    if (p->len) p->buf[p->len++] = '\n';
    memcpy(p->buf + p->len, s, n);
    p->len += n;
    p->buf[p->len] = '\0';
    return 0;
}

static int s_para_flush(s_ingest *g, s_para *p) {
    if (!p->open) return 0;
    p->open = 0;
    g->rep->records_in++;
    if (p->bad_line) return s_reject(g, p->bad_line, p->why);
    json_t *root = json_pack("{ss#}", "text", p->buf ? p->buf : "", p->len);
    if (!root) return fw_err_set(FW_ENOMEM, "dataset: out of memory");
    int rc = s_accept(g, root, FW_DATASET_SHAPE_TEXT);
    json_decref(root);
    return rc;
}

static int s_text_line(s_ingest *g, s_para *p, const char *line, size_t len, int too_long,
                       size_t lineno) {
    int blank = !too_long && s_blank(line, len);
    if (blank || g->o.text_unit == FW_DATASET_LINES) {
        int rc = s_para_flush(g, p);
        if (rc || blank) return rc;
    }
    if (!p->open) {
        p->open = 1, p->len = 0, p->first_line = lineno, p->bad_line = 0;
    }
    if (p->bad_line) return 0; /* already rejected: skip to its end */
    if (!s_bytes_ok(line, len, too_long, g->o.max_record_bytes, 0, p->why, sizeof p->why)) {
        p->bad_line = lineno;
        return 0;
    }
    int rc = s_para_add(p, line, len, g->o.max_record_bytes);
    if (rc == 1) {
        snprintf(p->why, sizeof p->why, "record longer than %zu bytes", g->o.max_record_bytes);
        p->bad_line = p->first_line;
        rc = 0;
    }
    return rc;
}

static const char *s_format_name(fw_dataset_format f) {
    return f == FW_DATASET_JSONL ? "jsonl" : f == FW_DATASET_TEXT ? "text" : "auto";
}

void fw_dataset_opts_init(fw_dataset_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_bad_fraction = 0.01;
    o->max_rejects = S_DEFAULT_MAX_REJECTS;
    o->max_record_bytes = S_DEFAULT_MAX_RECORD;
}

void fw_dataset_report_free(fw_dataset_report *rep) {
    if (!rep) return;
    free(rep->rejects);
    memset(rep, 0, sizeof *rep);
}

static int s_open_in(const char *what, const char *path, FILE **f) {
    *f = fopen(path, "rb");
    if (*f) return 0;
    int e = errno;
    return fw_err_set(e == ENOENT   ? FW_ENOTFOUND
                      : e == EACCES ? FW_EPERM
                                    : FW_EIO,
                      "%s: open %s: %s", what, path, strerror(e));
}

int fw_dataset_ingest(const char *in, const fw_dataset_opts *opts, const char *out,
                      fw_dataset_report *rep) {
    fw_dataset_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    if (!in || !out) return fw_err_set(FW_EINVAL, "dataset ingest: NULL path");
    s_ingest g = {.rep = rep};
    if (opts)
        g.o = *opts;
    else
        fw_dataset_opts_init(&g.o);
    if (!g.o.max_rejects) g.o.max_rejects = S_DEFAULT_MAX_REJECTS;
    if (!g.o.max_record_bytes) g.o.max_record_bytes = S_DEFAULT_MAX_RECORD;
    if (!(g.o.max_bad_fraction >= 0.0 && g.o.max_bad_fraction <= 1.0))
        return fw_err_set(FW_EINVAL, "dataset ingest: max_bad_fraction %g is not in [0, 1]",
                          g.o.max_bad_fraction);
    if ((unsigned)g.o.format > FW_DATASET_TEXT || (unsigned)g.o.text_unit > FW_DATASET_LINES ||
        (unsigned)g.o.whitespace > FW_DATASET_WS_KEEP)
        return fw_err_set(FW_EINVAL, "dataset ingest: unknown format, text unit or whitespace");

    s_reader *r = calloc(1, sizeof *r);
    s_para para = {0};
    if (!r) return fw_err_set(FW_ENOMEM, "dataset: out of memory");
    int rc = 0;
    if ((rc = s_open_in("dataset ingest", in, &r->f)) != 0) goto done;
    if ((rc = s_reader_fill(r)) != 0) {
        fw_err_set(rc, "dataset ingest: reading %s: %s", in, strerror(errno));
        goto done;
    }
    /* Skip a UTF-8 byte-order mark (some editors write one), then sniff. */
    if (r->end >= 3 && memcmp(r->blk, "\xEF\xBB\xBF", 3) == 0) r->pos = 3;
    rep->format = g.o.format;
    if (rep->format == FW_DATASET_AUTO) {
        size_t i = r->pos;
        while (i < r->end && s_blank(r->blk + i, 1)) i++;
        rep->format = i < r->end && r->blk[i] == '{' ? FW_DATASET_JSONL : FW_DATASET_TEXT;
    }
    g.dctx = fw_digest_ctx_new();
    g.w = g.dctx ? fw_file_atomic_open(out, 0644) : NULL;
    if (!g.w) {
        rc = g.dctx ? FW_EIO : FW_ENOMEM;
        goto done;
    }
    char *line;
    size_t len, lineno = 0;
    int too_long, got;
    while ((got = s_reader_next(r, g.o.max_record_bytes, &line, &len, &too_long)) == 1) {
        rep->lines = ++lineno;
        if (rep->format == FW_DATASET_JSONL)
            rc =
                !too_long && s_blank(line, len) ? 0 : s_jsonl_line(&g, line, len, too_long, lineno);
        else
            rc = s_text_line(&g, &para, line, len, too_long, lineno);
        if (rc) goto done;
    }
    if (got < 0) {
        rc = fw_err_set(got, "dataset ingest: reading %s: %s", in,
                        got == FW_EIO ? strerror(errno) : "out of memory");
        goto done;
    }
    if ((rc = s_para_flush(&g, &para)) != 0) goto done;
    rep->bytes_in = r->bytes;
    rep->tokens_counted = g.o.count != NULL;

    char first[200] = "";
    if (rep->nrejects)
        snprintf(first, sizeof first, "; first: line %zu: %s", rep->rejects[0].line,
                 rep->rejects[0].reason);
    if ((double)rep->rejected > g.o.max_bad_fraction * (double)rep->records_in) {
        rc = fw_err_set(FW_EINVAL,
                        "dataset %s: %zu of %zu records rejected, more than the allowed "
                        "fraction %g%s",
                        in, rep->rejected, rep->records_in, g.o.max_bad_fraction, first);
        goto done;
    }
    if (rep->records_out == 0) {
        rc = fw_err_set(FW_EINVAL,
                        "dataset %s: no record left (%zu read, %zu rejected, %zu empty, %zu "
                        "duplicates)%s",
                        in, rep->records_in, rep->rejected, rep->empty, rep->duplicates, first);
        goto done;
    }
    fw_digest d;
    if ((rc = fw_digest_ctx_final(g.dctx, &d)) != 0) goto done;
    fw_digest_format(&d, rep->digest);
    if ((rc = fw_file_atomic_commit(&g.w)) != 0) goto done;
    fw_info("event=dataset-ingested src=%s out=%s format=%s records_in=%zu records_out=%zu "
            "rejected=%zu empty=%zu duplicates=%zu digest=%s",
            in, out, s_format_name(rep->format), rep->records_in, rep->records_out, rep->rejected,
            rep->empty, rep->duplicates, rep->digest);
done:
    if (rc) rep->digest[0] = '\0';
    fw_file_atomic_abort(&g.w);
    fw_digest_ctx_destroy(&g.dctx);
    if (r->f) fclose(r->f);
    free(r->line);
    free(r);
    free(para.buf);
    free(g.seen.slot);
    free(g.seen.used);
    if (rep == &local) fw_dataset_report_free(&local);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Reports. */

/* A growing string; on out of memory it stays failed and yields NULL. */
typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} s_buf;

__attribute__((format(printf, 2, 3))) static void s_printf(s_buf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap <= b->len + (size_t)n) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->s = p, b->cap = cap;
    }
}

static char *s_buf_take(s_buf *b) {
    if (b->failed) {
        free(b->s);
        return NULL;
    }
    return b->s;
}

char *fw_dataset_report_text(const fw_dataset_report *rep) {
    if (!rep) return NULL;
    s_buf b = {0};
    s_printf(&b,
             "format: %s\nlines: %zu\nrecords in: %zu\naccepted: %zu\nrejected: %zu\n"
             "empty: %zu\nduplicates: %zu\nrecords out: %zu\ncleaned: %zu\n"
             "shapes: text %zu, completion %zu, chat %zu, choice %zu\n"
             "bytes in: %zu\nbytes out: %zu\ncontent bytes: %zu\ncharacters: %zu\n",
             s_format_name(rep->format), rep->lines, rep->records_in, rep->accepted, rep->rejected,
             rep->empty, rep->duplicates, rep->records_out, rep->cleaned, rep->text_records,
             rep->completion_records, rep->chat_records, rep->choice_records, rep->bytes_in,
             rep->bytes_out, rep->content_bytes, rep->chars);
    if (rep->tokens_counted)
        s_printf(&b, "tokens: %zu\n", rep->tokens);
    else
        s_printf(&b, "tokens: not counted\n");
    s_printf(&b, "digest: %s\n", rep->digest[0] ? rep->digest : "none");
    if (rep->rejected) s_printf(&b, "rejected lines:\n");
    for (size_t i = 0; i < rep->nrejects; i++)
        s_printf(&b, "  line %zu: %s\n", rep->rejects[i].line, rep->rejects[i].reason);
    if (rep->rejected > rep->nrejects)
        s_printf(&b, "  ... and %zu more\n", rep->rejected - rep->nrejects);
    return s_buf_take(&b);
}

char *fw_dataset_report_json(const fw_dataset_report *rep) {
    if (!rep) return NULL;
    json_t *rej = json_array();
    for (size_t i = 0; rej && i < rep->nrejects; i++) {
        json_t *e = json_pack("{sIss}", "line", (json_int_t)rep->rejects[i].line, "reason",
                              rep->rejects[i].reason);
        if (!e || json_array_append_new(rej, e)) {
            json_decref(rej);
            rej = NULL;
        }
    }
    if (!rej) return NULL;
    json_t *o = json_pack(
        "{ss sI sI sI sI sI sI sI sI s{sIsIsIsI} sI sI sI sI so ss? so sI}", "format",
        s_format_name(rep->format), "lines", (json_int_t)rep->lines, "records_in",
        (json_int_t)rep->records_in, "accepted", (json_int_t)rep->accepted, "rejected",
        (json_int_t)rep->rejected, "empty", (json_int_t)rep->empty, "duplicates",
        (json_int_t)rep->duplicates, "records_out", (json_int_t)rep->records_out, "cleaned",
        (json_int_t)rep->cleaned, "shapes", "text", (json_int_t)rep->text_records, "completion",
        (json_int_t)rep->completion_records, "chat", (json_int_t)rep->chat_records, "choice",
        (json_int_t)rep->choice_records, "bytes_in", (json_int_t)rep->bytes_in, "bytes_out",
        (json_int_t)rep->bytes_out, "content_bytes", (json_int_t)rep->content_bytes, "chars",
        (json_int_t)rep->chars, "tokens",
        rep->tokens_counted ? json_integer((json_int_t)rep->tokens) : json_null(), "digest",
        rep->digest[0] ? rep->digest : NULL, "rejects", rej, "rejects_more",
        (json_int_t)(rep->rejected - rep->nrejects));
    char *s = o ? json_dumps(o, S_JSON_FLAGS) : NULL;
    json_decref(o);
    return s;
}

/* ------------------------------------------------------------------ */
/* Record digest and split. */

int fw_dataset_record_digest(const char *json, size_t len, fw_digest *out) {
    if (!json || !out) return fw_err_set(FW_EINVAL, "record digest: NULL argument");
    size_t ok = fw_utf8_valid_prefix(json, len);
    if (ok != len) return fw_err_set(FW_EINVAL, "invalid UTF-8 at byte %zu", ok + 1);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fw_err_set(FW_EINVAL, "invalid JSON at column %d: %s", jerr.column, jerr.text);
    fw_dataset_shape shape;
    int rc = fw_dataset_check_record(root, FW_DATASET_CHECK_INGEST, &shape);
    if (!rc) rc = s_digest_of(root, shape, out);
    json_decref(root);
    return rc;
}

/* Whether a record with content digest d goes to eval (the rule in fw_dataset.h). */
static int s_to_eval(const fw_digest *d, uint64_t seed, double holdout, int *eval) {
    unsigned char buf[8 + FW_DIGEST_SIZE];
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(seed >> (56 - 8 * i));
    memcpy(buf + 8, d->bytes, FW_DIGEST_SIZE);
    fw_digest h;
    int rc = fw_digest_buffer(buf, sizeof buf, &h);
    if (rc) return rc;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x = x << 8 | h.bytes[i];
    /* holdout * 2^53 is exact in a double (a power-of-two scaling) and the
     * conversion truncates, so every machine draws the same line. */
    *eval = (x >> 11) < (uint64_t)(holdout * 9007199254740992.0);
    return 0;
}

int fw_dataset_split(const char *in, double holdout, uint64_t seed, const char *train_out,
                     const char *eval_out, fw_dataset_split_counts *counts) {
    fw_dataset_split_counts local;
    if (!counts) counts = &local;
    memset(counts, 0, sizeof *counts);
    if (!in || !train_out || !eval_out) return fw_err_set(FW_EINVAL, "dataset split: NULL path");
    if (!(holdout >= 0.0 && holdout <= 1.0))
        return fw_err_set(FW_EINVAL, "dataset split: holdout %g is not in [0, 1]", holdout);
    if (strcmp(train_out, eval_out) == 0)
        return fw_err_set(FW_EINVAL, "dataset split: train and eval are both %s", train_out);
    s_reader *r = calloc(1, sizeof *r);
    if (!r) return fw_err_set(FW_ENOMEM, "dataset: out of memory");
    fw_file_atomic *w[2] = {NULL, NULL};
    fw_digest_ctx *dc[2] = {NULL, NULL};
    size_t *n[2] = {&counts->train, &counts->eval};
    int rc = 0;
    if ((rc = s_open_in("dataset split", in, &r->f)) != 0) goto done;
    for (int s = 0; s < 2; s++) {
        dc[s] = fw_digest_ctx_new();
        if (!dc[s]) {
            rc = FW_ENOMEM;
            goto done;
        }
        w[s] = fw_file_atomic_open(s ? eval_out : train_out, 0644);
        if (!w[s]) {
            rc = FW_EIO;
            goto done;
        }
    }
    char *line;
    size_t len, lineno = 0;
    int too_long, got;
    while ((got = s_reader_next(r, S_DEFAULT_MAX_RECORD, &line, &len, &too_long)) == 1) {
        lineno++;
        if (lineno == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) line += 3, len -= 3;
        if (!too_long && s_blank(line, len)) continue;
        fw_digest d;
        int eval = 0;
        fw_err_clear();
        rc = too_long ? fw_err_set(FW_EINVAL, "record longer than %zu bytes", S_DEFAULT_MAX_RECORD)
                      : fw_dataset_record_digest(line, len, &d);
        if (rc) {
            rc = fw_err_set(rc, "dataset split %s: line %zu: %s", in, lineno, fw_err_detail());
            goto done;
        }
        if ((rc = s_to_eval(&d, seed, holdout, &eval)) != 0) goto done;
        line[len] = '\n';
        rc = fw_file_atomic_write(w[eval], line, len + 1);
        if (!rc) rc = fw_digest_ctx_update(dc[eval], line, len + 1);
        if (rc) goto done;
        (*n[eval])++;
        counts->records++;
    }
    if (got < 0) {
        rc = fw_err_set(got, "dataset split: reading %s", in);
        goto done;
    }
    for (int s = 0; s < 2; s++) {
        fw_digest d;
        if ((rc = fw_digest_ctx_final(dc[s], &d)) != 0) goto done;
        fw_digest_format(&d, s ? counts->eval_digest : counts->train_digest);
    }
    if ((rc = fw_file_atomic_commit(&w[0])) != 0 || (rc = fw_file_atomic_commit(&w[1])) != 0)
        goto done;
    fw_info("event=dataset-split src=%s records=%zu train=%zu eval=%zu holdout=%g seed=%llu", in,
            counts->records, counts->train, counts->eval, holdout, (unsigned long long)seed);
done:
    for (int s = 0; s < 2; s++) {
        fw_file_atomic_abort(&w[s]);
        fw_digest_ctx_destroy(&dc[s]);
    }
    if (r->f) fclose(r->f);
    free(r->line);
    free(r);
    return rc;
}
