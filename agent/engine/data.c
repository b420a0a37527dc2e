/* data.c - JSONL records -> token shards -> shuffled training batches.
 *
 * Theory of operation
 * -------------------
 * 1. Records. fw_data_tokenize_record() turns one JSON object into tokens
 *    and a loss mask (docs/file-formats.md, "Training records", is the
 *    normative description; the summary):
 *      {"text": T}                       tokens(T) EOT             mask all 1
 *      {"prompt": P, "completion": C}    tokens(P) tokens(C) EOT   mask 0.. 1.. 1
 *      {"messages": [{role, content}..]} per turn "<|role|>\n" + content + "\n",
 *                                        then EOT; mask 1 on assistant content
 *                                        and its closing "\n", and on the EOT
 *                                        when the last turn is the assistant's
 *    Every piece is encoded separately, so the mask boundary is a token
 *    boundary and a prompt is encoded exactly as it will be at inference.
 *    Extra keys are ignored; a record that matches two shapes is ambiguous
 *    and rejected, as are wrong types, empty text, invalid UTF-8. The shape
 *    checks are fw_dataset_check_record() (common/fw_dataset.c), the same
 *    ones dataset ingestion runs, so this file only tokenises what passed.
 *
 * 2. Shards. fw_data_tokenize() streams a JSONL file line by line into a
 *    shard, written through fw_file_atomic (.new + fsync + rename + fsync
 *    dir). Tokens are streamed to disk as they are made; only the mask (one
 *    byte a token) and the document offsets stay in memory until the end,
 *    when the header is patched in place. Bad lines are counted and the
 *    first few kept with their 1-based line numbers; too many, or no good
 *    line at all, fails the whole run and leaves no shard behind.
 *
 *    Layout (little-endian, v1; all sections at their canonical places):
 *
 *      0   header (96 bytes): magic "FWSHARD\0", version, header size,
 *          ndocs, ntokens, vocab size, EOT id, section offsets, file size,
 *          loss-token count, checksum
 *      96  tokens   int32 x ntokens
 *          mask     uint8 x ntokens, then zero padding to a multiple of 8
 *          offsets  uint64 x (ndocs + 1): document d is [off[d], off[d+1])
 *
 *    fw_shard_open() maps the file and checks every promise the header
 *    makes before anyone reads a token: sizes against the file length,
 *    offsets monotonic, ids below the vocabulary, mask bytes 0/1, the
 *    loss-token count, then the checksum. A truncated or damaged file is an
 *    error with a reason, never a crash. (A file truncated by someone else
 *    *after* it was mapped can still SIGBUS; shards are written once and
 *    replaced by rename, so a mapped inode never changes.)
 *
 * 3. Loader. The shard's token stream is cut into nwin = (ntokens-1)/T
 *    windows of T+1 tokens at stride T (window k starts at token k*T). Each
 *    epoch visits all windows in a Fisher-Yates permutation drawn from
 *    splitmix64 seeded by (seed, epoch). The global stream of windows is
 *    epoch 0's permutation, then epoch 1's, ...; a global batch is the next
 *    world*B of them and rank r takes rows [r*B, (r+1)*B). The state
 *    (seed, epoch, cursor) is therefore the same on every rank, and a batch
 *    may run across an epoch boundary. targets[i] is the next token, or -1
 *    where that token's mask is 0. */
#include "data.h"

#include "fw_dataset.h"
#include "fw_err.h"
#include "fw_utf8.h"
#include "fw_fault.h"
#include "fw_file.h"
#include "fw_log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shards are little-endian and mapped in place: this host is not"
#endif

#define FW_SHARD_MAGIC   "FWSHARD\0"
#define FW_SHARD_VERSION 1u
#define FW_SHARD_HDR     96

/* ---- checksum -------------------------------------------------------- */

/* A streaming 64-bit hash over the file's bytes: one multiply-xorshift per
 * 8-byte word (several GB/s, so opening a shard costs little more than
 * reading it) and the murmur3 finaliser over the length. It detects damage,
 * it is not a defence against an adversary. */
typedef struct {
    uint64_t h;
    uint64_t len;
    uint64_t pend; /* the next word's first npend bytes, little-endian */
    unsigned npend;
} s_hash;

static void s_hash_init(s_hash *s) {
    memset(s, 0, sizeof *s), s->h = 0x46575348415244ull;
}

static inline uint64_t s_hash_word(uint64_t h, uint64_t w) {
    h ^= w;
    h *= 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

static void s_hash_byte(s_hash *s, unsigned char c) {
    s->pend |= (uint64_t)c << (8 * s->npend);
    if (++s->npend == 8) s->h = s_hash_word(s->h, s->pend), s->pend = 0, s->npend = 0;
}

static void s_hash_update(s_hash *s, const void *data, size_t n) {
    const unsigned char *p = data;
    s->len += n;
    while (s->npend && n) s_hash_byte(s, *p++), n--;
    uint64_t h = s->h;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = s_hash_word(h, w);
    }
    s->h = h;
    while (n) s_hash_byte(s, *p++), n--;
}

static uint64_t s_hash_final(s_hash *s) {
    uint64_t h = s->h;
    if (s->npend) h = s_hash_word(h, s->pend);
    h ^= s->len;
    h ^= h >> 33, h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33, h *= 0xC4CEB9FE1A85EC53ull;
    return h ^ (h >> 33);
}

/* ---- header ---------------------------------------------------------- */

typedef struct {
    uint32_t version;
    uint32_t header_bytes;
    uint64_t ndocs, ntokens;
    uint32_t vocab_size;
    int32_t eot_id;
    uint64_t tokens_off, mask_off, offsets_off, file_bytes;
    uint64_t loss_tokens;
    uint64_t checksum;
} s_shard_hdr;

static void s_put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void s_put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t s_get32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t s_get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void s_hdr_pack(const s_shard_hdr *h, unsigned char *b) {
    memset(b, 0, FW_SHARD_HDR);
    memcpy(b, FW_SHARD_MAGIC, 8);
    s_put32(b + 8, h->version);
    s_put32(b + 12, h->header_bytes);
    s_put64(b + 16, h->ndocs);
    s_put64(b + 24, h->ntokens);
    s_put32(b + 32, h->vocab_size);
    s_put32(b + 36, (uint32_t)h->eot_id);
    s_put64(b + 40, h->tokens_off);
    s_put64(b + 48, h->mask_off);
    s_put64(b + 56, h->offsets_off);
    s_put64(b + 64, h->file_bytes);
    s_put64(b + 72, h->loss_tokens);
    s_put64(b + 80, h->checksum);
    /* 88..95 reserved, zero */
}

static void s_hdr_unpack(const unsigned char *b, s_shard_hdr *h) {
    h->version = s_get32(b + 8);
    h->header_bytes = s_get32(b + 12);
    h->ndocs = s_get64(b + 16);
    h->ntokens = s_get64(b + 24);
    h->vocab_size = s_get32(b + 32);
    h->eot_id = (int32_t)s_get32(b + 36);
    h->tokens_off = s_get64(b + 40);
    h->mask_off = s_get64(b + 48);
    h->offsets_off = s_get64(b + 56);
    h->file_bytes = s_get64(b + 64);
    h->loss_tokens = s_get64(b + 72);
    h->checksum = s_get64(b + 80);
}

/* The canonical layout for ndocs/ntokens, or -1 when it would overflow. */
static int s_layout(uint64_t ndocs, uint64_t ntokens, s_shard_hdr *h) {
    const uint64_t lim = (uint64_t)1 << 58; /* far beyond any disk, far below overflow */
    if (ndocs >= lim || ntokens >= lim) return -1;
    h->header_bytes = FW_SHARD_HDR;
    h->tokens_off = FW_SHARD_HDR;
    h->mask_off = h->tokens_off + 4 * ntokens;
    h->offsets_off = (h->mask_off + ntokens + 7) & ~(uint64_t)7;
    h->file_bytes = h->offsets_off + 8 * (ndocs + 1);
    return 0;
}

/* The checksum covers the payload (bytes 96..end) and then the header's
 * first 80 bytes (everything before the checksum field). */
static uint64_t s_checksum(s_hash *payload, const unsigned char *hdr) {
    s_hash_update(payload, hdr, 80);
    return s_hash_final(payload);
}

/* ---- records --------------------------------------------------------- */

/* Growable ids + mask of one record. */
typedef struct {
    int32_t *ids;
    uint8_t *mask;
    size_t n, cap;
} s_toks;

static int s_toks_push(s_toks *t, const int32_t *ids, size_t n, uint8_t m) {
    if (t->n + n > t->cap) {
        size_t cap = t->cap ? t->cap : 64;
        while (cap < t->n + n) cap *= 2;
        int32_t *ni = realloc(t->ids, cap * sizeof *ni);
        if (ni) t->ids = ni;
        uint8_t *nm = realloc(t->mask, cap);
        if (nm) t->mask = nm;
        if (!ni || !nm) return fw_err_set(FW_ENOMEM, "record: out of memory");
        t->cap = cap;
    }
    memcpy(t->ids + t->n, ids, n * sizeof *ids);
    memset(t->mask + t->n, m, n);
    t->n += n;
    return 0;
}

static int s_encode_push(s_toks *t, const fw_tokenizer *tok, const char *s, size_t len, uint8_t m,
                         const char *what) {
    if (len == 0) return 0;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = fw_tokenizer_encode(tok, s, len, &ids, &n);
    if (rc) {
        char d[100];
        snprintf(d, sizeof d, "%s", fw_err_detail());
        free(ids);
        return fw_err_set(rc, "%s: %s", what, d);
    }
    rc = s_toks_push(t, ids, n, m);
    free(ids);
    return rc;
}

/* A chat record's turns, already checked by fw_dataset_check_record(). */
static int s_record_messages(json_t *msgs, const fw_tokenizer *tok, s_toks *t, int *last_asst) {
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *r = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");
        int asst = strcmp(r, "assistant") == 0;
        char head[FW_DATASET_ROLE_MAX + 8];
        int hl = snprintf(head, sizeof head, "<|%s|>\n", r);
        char what[48];
        snprintf(what, sizeof what, "messages[%zu]", i);
        int rc = s_encode_push(t, tok, head, (size_t)hl, 0, what);
        if (!rc)
            rc = s_encode_push(t, tok, json_string_value(content), json_string_length(content),
                               (uint8_t)asst, what);
        if (!rc) rc = s_encode_push(t, tok, "\n", 1, (uint8_t)asst, what);
        if (rc) return rc;
        *last_asst = asst;
    }
    return 0;
}

int fw_data_tokenize_record(const char *json, size_t len, const fw_tokenizer *tok, int32_t **ids,
                            uint8_t **mask, size_t *n) {
    if (ids) *ids = NULL;
    if (mask) *mask = NULL;
    if (n) *n = 0;
    if (!json || !tok || !ids || !mask || !n)
        return fw_err_set(FW_EINVAL, "tokenize_record: NULL argument");
    int eot = fw_tokenizer_eot(tok);
    if (eot < 0) return fw_err_set(FW_EINVAL, "tokenizer has no <|endoftext|> token");
    size_t ok = fw_utf8_valid_prefix((const unsigned char *)json, len);
    if (ok != len) return fw_err_set(FW_EINVAL, "invalid UTF-8 at byte %zu", ok + 1);

    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fw_err_set(FW_EINVAL, "invalid JSON at column %d: %s", jerr.column, jerr.text);
    s_toks t = {0};
    uint8_t eot_mask = 1;
    fw_dataset_shape shape;
    int rc = fw_dataset_check_record(root, FW_DATASET_CHECK_TRAIN, &shape);
    if (!rc) {
        json_t *text = json_object_get(root, "text"), *prompt = json_object_get(root, "prompt");
        json_t *comp = json_object_get(root, "completion");
        int last_asst = 0;
        switch (shape) {
        case FW_DATASET_SHAPE_TEXT:
            rc = s_encode_push(&t, tok, json_string_value(text), json_string_length(text), 1,
                               "text");
            break;
        case FW_DATASET_SHAPE_COMPLETION:
            rc = s_encode_push(&t, tok, json_string_value(prompt), json_string_length(prompt), 0,
                               "prompt");
            if (!rc)
                rc = s_encode_push(&t, tok, json_string_value(comp), json_string_length(comp), 1,
                                   "completion");
            break;
        case FW_DATASET_SHAPE_CHAT:
            rc = s_record_messages(json_object_get(root, "messages"), tok, &t, &last_asst);
            eot_mask = (uint8_t)last_asst;
            break;
        case FW_DATASET_SHAPE_CHOICE: /* TRAIN mode never returns it; keep -Wswitch whole */
            rc = fw_err_set(FW_EINVAL, "a choice record is not a training record");
            break;
        }
    }
    json_decref(root);
    int32_t e = eot;
    if (!rc) rc = s_toks_push(&t, &e, 1, eot_mask);
    if (rc) {
        free(t.ids), free(t.mask);
        return rc;
    }
    *ids = t.ids, *mask = t.mask, *n = t.n;
    return 0;
}

/* ---- JSONL -> shard ---------------------------------------------------- */

/* The shard being written: tokens go straight to the file (through a small
 * buffer), the mask and offsets wait in memory for the end. */
typedef struct {
    fw_file_atomic *w;
    s_hash hash;
    int32_t buf[16384];
    size_t nbuf;
    uint8_t *mask;
    size_t ntok, mask_cap;
    uint64_t *offs;
    size_t ndocs, offs_cap;
    uint64_t loss;
} s_writer;

static int s_writer_flush(s_writer *sw) {
    if (!sw->nbuf) return 0;
    size_t bytes = sw->nbuf * sizeof *sw->buf;
    s_hash_update(&sw->hash, sw->buf, bytes);
    sw->nbuf = 0;
    return fw_file_atomic_write(sw->w, sw->buf, bytes);
}

static int s_writer_doc(s_writer *sw, const int32_t *ids, const uint8_t *mask, size_t n) {
    if (sw->ntok + n > sw->mask_cap) {
        size_t cap = sw->mask_cap ? sw->mask_cap : 1 << 16;
        while (cap < sw->ntok + n) cap *= 2;
        uint8_t *m = realloc(sw->mask, cap);
        if (!m) return fw_err_set(FW_ENOMEM, "shard: out of memory for %zu tokens", cap);
        sw->mask = m, sw->mask_cap = cap;
    }
    if (sw->ndocs + 2 > sw->offs_cap) {
        size_t cap = sw->offs_cap ? sw->offs_cap * 2 : 1024;
        uint64_t *o = realloc(sw->offs, cap * sizeof *o);
        if (!o) return fw_err_set(FW_ENOMEM, "shard: out of memory for %zu documents", cap);
        sw->offs = o, sw->offs_cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        sw->buf[sw->nbuf++] = ids[i];
        if (sw->nbuf == sizeof sw->buf / sizeof sw->buf[0]) {
            int rc = s_writer_flush(sw);
            if (rc) return rc;
        }
        sw->loss += mask[i];
    }
    memcpy(sw->mask + sw->ntok, mask, n);
    if (sw->ndocs == 0) sw->offs[0] = 0;
    sw->ntok += n;
    sw->offs[++sw->ndocs] = sw->ntok;
    return 0;
}

/* Write mask, padding, offsets and the real header, then commit. */
static int s_writer_finish(s_writer *sw, const fw_tokenizer *tok) {
    int rc = s_writer_flush(sw);
    if (rc) return rc;
    s_shard_hdr h = {.version = FW_SHARD_VERSION,
                     .ndocs = sw->ndocs,
                     .ntokens = sw->ntok,
                     .vocab_size = (uint32_t)fw_tokenizer_vocab_size(tok),
                     .eot_id = fw_tokenizer_eot(tok),
                     .loss_tokens = sw->loss};
    if (s_layout(h.ndocs, h.ntokens, &h)) return fw_err_set(FW_ETOOBIG, "shard: too large");
    static const unsigned char zero[8];
    size_t pad = (size_t)(h.offsets_off - h.mask_off - sw->ntok);
    s_hash_update(&sw->hash, sw->mask, sw->ntok);
    s_hash_update(&sw->hash, zero, pad);
    s_hash_update(&sw->hash, sw->offs, (sw->ndocs + 1) * sizeof *sw->offs);
    rc = fw_file_atomic_write(sw->w, sw->mask, sw->ntok);
    if (!rc) rc = fw_file_atomic_write(sw->w, zero, pad);
    if (!rc) rc = fw_file_atomic_write(sw->w, sw->offs, (sw->ndocs + 1) * sizeof *sw->offs);
    if (rc) return rc;
    unsigned char hb[FW_SHARD_HDR];
    s_hdr_pack(&h, hb);
    h.checksum = s_checksum(&sw->hash, hb);
    s_hdr_pack(&h, hb);
    /* The header was a placeholder at offset 0; patch it in place. */
    ssize_t wr;
    if (fw_fault_hit("shard.header")) /* fault point: the header patch fails */
        errno = EIO, wr = -1;
    else
        while ((wr = pwrite(fw_file_atomic_fd(sw->w), hb, sizeof hb, 0)) < 0 && errno == EINTR) {
        }
    if (wr != (ssize_t)sizeof hb)
        return fw_err_set(FW_EIO, "shard: writing header: %s", wr < 0 ? strerror(errno) : "short");
    return fw_file_atomic_commit(&sw->w);
}

static int s_only_space(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}

int fw_data_tokenize(const char *jsonl_path, const fw_tokenizer *tok, const char *shard_path,
                     const fw_data_opts *opts, fw_data_report *rep) {
    fw_data_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    if (!jsonl_path || !tok || !shard_path) return fw_err_set(FW_EINVAL, "tokenize: NULL argument");
    double max_bad = opts ? opts->max_bad_fraction : 0.01;
    /* max_report 0 means "the default" so that a zeroed opts struct with only
     * max_bad_fraction set still reports lines. */
    size_t max_report = opts && opts->max_report ? opts->max_report : 20;
    if (max_report > 20) max_report = 20;
    if (!(max_bad >= 0.0 && max_bad <= 1.0))
        return fw_err_set(FW_EINVAL, "tokenize: max_bad_fraction %g is not in [0, 1]", max_bad);
    if (fw_tokenizer_eot(tok) < 0)
        return fw_err_set(FW_EINVAL, "tokenize: the tokenizer has no <|endoftext|> token");

    FILE *f = fopen(jsonl_path, "rb");
    if (!f)
        return fw_err_set(errno == ENOENT ? FW_ENOTFOUND : FW_EIO, "tokenize: open %s: %s",
                          jsonl_path, strerror(errno));
    s_writer *sw = calloc(1, sizeof *sw);
    if (!sw) {
        fclose(f);
        return fw_err_set(FW_ENOMEM, "tokenize: out of memory");
    }
    s_hash_init(&sw->hash);
    int rc = 0;
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    sw->w = fw_file_atomic_open(shard_path, 0644);
    if (!sw->w) {
        rc = FW_EIO; /* detail set by fw_file */
        goto done;
    }
    unsigned char placeholder[FW_SHARD_HDR] = {0};
    rc = fw_file_atomic_write(sw->w, placeholder, sizeof placeholder);
    ssize_t got;
    while (!rc && (got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        char *rec = line;
        if (lineno == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
            rec += 3, len -= 3; /* a UTF-8 byte-order mark some editors write */
        if (s_only_space(rec, len)) continue;
        rep->lines++;
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        size_t n = 0;
        int r = fw_data_tokenize_record(rec, len, tok, &ids, &mask, &n);
        if (r == FW_EINVAL) {
            if (rep->rejected++ < max_report) {
                rep->bad_line[rep->nbad_kept] = lineno;
                snprintf(rep->bad_reason[rep->nbad_kept], sizeof rep->bad_reason[0], "%s",
                         fw_err_detail());
                rep->nbad_kept++;
            }
        } else if (r) {
            rc = r; /* out of memory and the like: not the line's fault */
        } else {
            rep->accepted++;
            rep->tokens += n;
            for (size_t i = 0; i < n; i++) rep->loss_tokens += mask[i];
            rc = s_writer_doc(sw, ids, mask, n);
        }
        free(ids), free(mask);
    }
    if (!rc && ferror(f))
        rc = fw_err_set(FW_EIO, "tokenize: reading %s: %s", jsonl_path, strerror(errno));
    if (rc) goto done;

    char first[200] = "";
    if (rep->nbad_kept)
        snprintf(first, sizeof first, "; first bad line %zu: %s", rep->bad_line[0],
                 rep->bad_reason[0]);
    if (rep->accepted == 0) {
        rc = fw_err_set(FW_EINVAL, "tokenize %s: no usable record (%zu lines, %zu rejected)%s",
                        jsonl_path, rep->lines, rep->rejected, first);
    } else if ((double)rep->rejected > max_bad * (double)rep->lines) {
        rc = fw_err_set(FW_EINVAL,
                        "tokenize %s: %zu of %zu lines rejected, more than the allowed "
                        "fraction %g%s",
                        jsonl_path, rep->rejected, rep->lines, max_bad, first);
    } else {
        rc = s_writer_finish(sw, tok);
    }
    if (!rc) {
        fw_info("event=data-tokenized src=%s shard=%s lines=%zu accepted=%zu rejected=%zu "
                "tokens=%zu loss_tokens=%zu",
                jsonl_path, shard_path, rep->lines, rep->accepted, rep->rejected, rep->tokens,
                rep->loss_tokens);
        if (rep->rejected)
            fw_warn("event=data-bad-lines src=%s rejected=%zu first_line=%zu", jsonl_path,
                    rep->rejected, rep->bad_line[0]);
    }
done:
    fw_file_atomic_abort(&sw->w); /* no-op after a commit */
    free(line);
    free(sw->mask), free(sw->offs), free(sw);
    fclose(f);
    return rc;
}

/* ---- shard reader ---------------------------------------------------- */

struct fw_shard {
    unsigned char *base; /* whole file */
    size_t bytes;
    int mapped; /* munmap vs free */
    s_shard_hdr h;
    const int32_t *tokens;
    const uint8_t *mask;
    const uint64_t *offs;
};

void fw_shard_close(fw_shard **sp) {
    if (!sp || !*sp) return;
    fw_shard *s = *sp;
    if (s->mapped)
        munmap(s->base, s->bytes);
    else
        free(s->base);
    free(s);
    *sp = NULL;
}

/* Every check the header's promises allow, in the order that gives the most
 * specific message first. */
static int s_shard_validate(fw_shard *s, const char *path) {
    const unsigned char *b = s->base;
    if (s->bytes < FW_SHARD_HDR)
        return fw_err_set(FW_ECORRUPT, "shard %s: %zu bytes, shorter than the %d-byte header", path,
                          s->bytes, FW_SHARD_HDR);
    if (memcmp(b, FW_SHARD_MAGIC, 8) != 0)
        return fw_err_set(FW_ECORRUPT, "shard %s: bad magic (not a Flywheel shard)", path);
    s_shard_hdr *h = &s->h;
    s_hdr_unpack(b, h);
    if (h->version != FW_SHARD_VERSION)
        return fw_err_set(FW_EVERSION, "shard %s: version %u, this build reads %u", path,
                          h->version, FW_SHARD_VERSION);
    s_shard_hdr want = *h;
    if (h->header_bytes != FW_SHARD_HDR || s_layout(h->ndocs, h->ntokens, &want) != 0 ||
        want.tokens_off != h->tokens_off || want.mask_off != h->mask_off ||
        want.offsets_off != h->offsets_off || want.file_bytes != h->file_bytes)
        return fw_err_set(FW_ECORRUPT,
                          "shard %s: header sections do not match %llu docs / %llu tokens", path,
                          (unsigned long long)h->ndocs, (unsigned long long)h->ntokens);
    if (h->file_bytes != s->bytes)
        return fw_err_set(FW_ECORRUPT, "shard %s: file is %zu bytes, header says %llu (%s)", path,
                          s->bytes, (unsigned long long)h->file_bytes,
                          s->bytes < h->file_bytes ? "truncated" : "trailing bytes");
    if (h->vocab_size == 0 || h->vocab_size > (uint32_t)INT32_MAX || h->eot_id < -1 ||
        h->eot_id >= (int64_t)h->vocab_size)
        return fw_err_set(FW_ECORRUPT, "shard %s: vocab size %u / EOT id %d invalid", path,
                          h->vocab_size, h->eot_id);
    for (size_t i = 0; i < FW_SHARD_HDR - 88; i++)
        if (b[88 + i]) return fw_err_set(FW_ECORRUPT, "shard %s: reserved header bytes set", path);
    s->tokens = (const int32_t *)(b + h->tokens_off);
    s->mask = b + h->mask_off;
    s->offs = (const uint64_t *)(b + h->offsets_off);

    if (s->offs[0] != 0 || s->offs[h->ndocs] != h->ntokens)
        return fw_err_set(FW_ECORRUPT, "shard %s: document offsets must run from 0 to %llu", path,
                          (unsigned long long)h->ntokens);
    for (uint64_t d = 0; d < h->ndocs; d++)
        if (s->offs[d + 1] < s->offs[d])
            return fw_err_set(FW_ECORRUPT, "shard %s: offset of document %llu goes backwards", path,
                              (unsigned long long)d + 1);
    uint64_t loss = 0, bad = 0;
    uint32_t V = h->vocab_size;
    for (uint64_t i = 0; i < h->ntokens; i++) {
        bad |= (uint64_t)((uint32_t)s->tokens[i] >= V) | (uint64_t)(s->mask[i] > 1);
        loss += s->mask[i];
    }
    if (bad) {
        for (uint64_t i = 0; i < h->ntokens; i++) {
            if ((uint32_t)s->tokens[i] >= V)
                return fw_err_set(FW_ECORRUPT, "shard %s: token %llu has id %d, vocabulary is %u",
                                  path, (unsigned long long)i, s->tokens[i], V);
            if (s->mask[i] > 1)
                return fw_err_set(FW_ECORRUPT, "shard %s: mask of token %llu is %u, not 0/1", path,
                                  (unsigned long long)i, s->mask[i]);
        }
    }
    if (loss != h->loss_tokens)
        return fw_err_set(FW_ECORRUPT, "shard %s: %llu loss tokens, header says %llu", path,
                          (unsigned long long)loss, (unsigned long long)h->loss_tokens);
    s_hash hs;
    s_hash_init(&hs);
    s_hash_update(&hs, b + FW_SHARD_HDR, s->bytes - FW_SHARD_HDR);
    if (s_checksum(&hs, b) != h->checksum)
        return fw_err_set(FW_ECORRUPT, "shard %s: checksum mismatch (file damaged)", path);
    return 0;
}

fw_shard *fw_shard_open(const char *path) {
    if (!path) {
        fw_err_set(FW_EINVAL, "shard: NULL path");
        return NULL;
    }
    fw_shard *s = calloc(1, sizeof *s);
    if (!s) {
        fw_err_set(FW_ENOMEM, "shard: out of memory");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fw_err_set(errno == ENOENT ? FW_ENOTFOUND : FW_EIO, "shard %s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        fw_err_set(FW_EINVAL, "shard %s: not a regular file", path);
        goto fail;
    }
    s->bytes = (size_t)st.st_size;
    if (s->bytes >= FW_SHARD_HDR) {
        void *m = mmap(NULL, s->bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m != MAP_FAILED) {
            s->base = m, s->mapped = 1;
        }
    }
    if (!s->base) {
        /* Too small to map meaningfully, or a file system without mmap:
         * read it (validation then reports what is wrong). */
        char *data = NULL;
        size_t len = 0;
        int rc = fw_file_read(path, SIZE_MAX, &data, &len);
        if (rc) goto fail;
        s->base = (unsigned char *)data, s->bytes = len;
    }
    close(fd);
    fd = -1;
    if (s_shard_validate(s, path) != 0) goto fail;
    return s;
fail:
    if (fd >= 0) close(fd);
    fw_shard_close(&s);
    return NULL;
}

size_t fw_shard_ntokens(const fw_shard *s) {
    return s ? (size_t)s->h.ntokens : 0;
}
size_t fw_shard_ndocs(const fw_shard *s) {
    return s ? (size_t)s->h.ndocs : 0;
}

int fw_shard_doc(const fw_shard *s, size_t d, const int32_t **ids, const uint8_t **mask,
                 size_t *n) {
    if (!s || !ids || !mask || !n) return fw_err_set(FW_EINVAL, "shard_doc: NULL argument");
    if (d >= s->h.ndocs)
        return fw_err_set(FW_EINVAL, "shard_doc: document %zu of %llu", d,
                          (unsigned long long)s->h.ndocs);
    *ids = s->tokens + s->offs[d];
    *mask = s->mask + s->offs[d];
    *n = (size_t)(s->offs[d + 1] - s->offs[d]);
    return 0;
}

/* ---- loader ---------------------------------------------------------- */

struct fw_loader {
    const int32_t *tokens;
    const uint8_t *mask;
    int B, T, rank, world;
    uint64_t nwin;
    fw_loader_state st;
    uint64_t *perm; /* permutation of epoch perm_epoch */
    uint64_t perm_epoch;
    int perm_valid;
};

static uint64_t s_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* splitmix64: the state walks by the golden gamma, each output is mixed. */
static uint64_t s_splitmix(uint64_t *state) {
    *state += 0x9E3779B97F4A7C15ull;
    return s_mix64(*state);
}

/* Fisher-Yates over nwin windows for one epoch. The generator is seeded by
 * mix(seed ^ mix(epoch + c)) so neighbouring seeds and epochs give unrelated
 * orders; j is drawn by multiply-shift (bias < nwin / 2^64, irrelevant). */
static void s_permute(fw_loader *l, uint64_t epoch) {
    uint64_t rng = s_mix64(l->st.seed ^ s_mix64(epoch + 0x632BE59BD9B4E019ull));
    for (uint64_t i = 0; i < l->nwin; i++) l->perm[i] = i;
    for (uint64_t i = l->nwin - 1; i > 0; i--) {
        uint64_t j = (uint64_t)(((unsigned __int128)s_splitmix(&rng) * (i + 1)) >> 64);
        uint64_t t = l->perm[i];
        l->perm[i] = l->perm[j], l->perm[j] = t;
    }
    l->perm_epoch = epoch, l->perm_valid = 1;
}

fw_loader *fw_loader_new(const fw_shard *s, int B, int T, uint64_t seed, int rank, int world) {
    if (!s || B < 1 || T < 1 || world < 1 || rank < 0 || rank >= world ||
        (size_t)B * (size_t)T > (size_t)INT32_MAX) {
        fw_err_set(FW_EINVAL, "loader: bad arguments (B %d, T %d, rank %d, world %d)", B, T, rank,
                   world);
        return NULL;
    }
    uint64_t ntok = s->h.ntokens;
    if (ntok < (uint64_t)T + 1) {
        fw_err_set(FW_EINVAL,
                   "loader: the shard has %llu tokens, fewer than one window of T+1 = %d; "
                   "use more data or a smaller T",
                   (unsigned long long)ntok, T + 1);
        return NULL;
    }
    fw_loader *l = calloc(1, sizeof *l);
    if (!l) goto oom;
    l->tokens = s->tokens, l->mask = s->mask;
    l->B = B, l->T = T, l->rank = rank, l->world = world;
    l->nwin = (ntok - 1) / (uint64_t)T;
    l->st.seed = seed;
    if (l->nwin > SIZE_MAX / sizeof *l->perm) goto oom;
    l->perm = malloc((size_t)l->nwin * sizeof *l->perm);
    if (!l->perm) goto oom;
    return l;
oom:
    if (l) free(l->perm);
    free(l);
    fw_err_set(FW_ENOMEM, "loader: out of memory");
    return NULL;
}

void fw_loader_destroy(fw_loader **lp) {
    if (!lp || !*lp) return;
    free((*lp)->perm);
    free(*lp);
    *lp = NULL;
}

int fw_loader_next(fw_loader *l, int32_t *inputs, int32_t *targets) {
    if (!l || !inputs || !targets) return fw_err_set(FW_EINVAL, "loader_next: NULL argument");
    const int T = l->T;
    uint64_t first = l->st.cursor + (uint64_t)l->rank * (uint64_t)l->B;
    for (int b = 0; b < l->B; b++) {
        uint64_t g = first + (uint64_t)b; /* window number counted from this epoch's start */
        uint64_t epoch = l->st.epoch + g / l->nwin;
        if (!l->perm_valid || l->perm_epoch != epoch) s_permute(l, epoch);
        uint64_t start = l->perm[g % l->nwin] * (uint64_t)T;
        const int32_t *tk = l->tokens + start;
        const uint8_t *mk = l->mask + start;
        int32_t *in = inputs + (size_t)b * (size_t)T, *tg = targets + (size_t)b * (size_t)T;
        for (int t = 0; t < T; t++) {
            in[t] = tk[t];
            tg[t] = mk[t + 1] ? tk[t + 1] : -1;
        }
    }
    uint64_t next = l->st.cursor + (uint64_t)l->world * (uint64_t)l->B;
    l->st.epoch += next / l->nwin;
    l->st.cursor = next % l->nwin;
    return 0;
}

fw_loader_state fw_loader_get_state(const fw_loader *l) {
    fw_loader_state z = {0};
    return l ? l->st : z;
}

int fw_loader_set_state(fw_loader *l, const fw_loader_state *st) {
    if (!l || !st) return fw_err_set(FW_EINVAL, "loader_set_state: NULL argument");
    if (st->cursor >= l->nwin)
        return fw_err_set(FW_EINVAL,
                          "loader_set_state: cursor %llu is past this shard's %llu windows "
                          "(a different shard or T?)",
                          (unsigned long long)st->cursor, (unsigned long long)l->nwin);
    if (st->seed != l->st.seed) l->perm_valid = 0;
    l->st = *st;
    return 0;
}

size_t fw_loader_windows(const fw_loader *l) {
    return l ? (size_t)l->nwin : 0;
}
