/* tokenizer.c - GPT-2 byte-level BPE: load, encode, decode, save.
 *
 * Theory of operation
 * -------------------
 * A vocabulary is a list of byte strings (token id = index) plus a ranked
 * list of merges, each joining two tokens into a third. The files store
 * tokens as text through GPT-2's byte-to-unicode table (byte 0x20 is 'Ġ',
 * printable bytes stand for themselves); everything here works on raw bytes,
 * so that table is only used when reading and writing files.
 *
 * Encoding follows encoder.py step by step:
 *
 *   text --validate UTF-8--> pre-tokens (unicode_pretok.c: GPT-2's regex)
 *        --per pre-token--> single-byte tokens --BPE by merge rank--> ids
 *
 * encoder.py's BPE loop is: find the adjacent pair with the lowest merge
 * rank, merge *every* occurrence of that pair, scanning left to right
 * without overlap, and repeat until no adjacent pair has a rank. s_bpe()
 * does the same in O(n log n) instead of O(n^2): a min-heap holds one entry
 * per adjacent pair keyed by (rank, position); one "round" pops every entry
 * of the lowest rank in position order (= encoder.py's left-to-right scan)
 * and only then pushes the pairs the round created. Deferring those pushes
 * to the end of the round is what keeps it exact even for merge lists where
 * a newly formed pair has a lower rank than the one just applied. Entries
 * go stale as their neighbours merge; each is checked against the current
 * symbols when popped.
 *
 * Invariants (checked where the tokenizer is built, relied on by encode):
 *   1. ids are 0..n_vocab-1 and no two tokens have the same bytes;
 *   2. every single byte is a token (byte_id[b] is valid), so any text
 *      encodes;
 *   3. every merge joins two valid ids and its result is a token;
 *   4. no pair appears twice in the merge list.
 *
 * The word cache maps a pre-token's bytes to its ids. Text repeats words so
 * much that most pre-tokens skip BPE entirely. It is per thread (so encode
 * may be called on one tokenizer from many threads without locks), four-way
 * set-associative and fixed in size (FW_TOK_CACHE_SLOTS slots of 64 bytes,
 * 4 MiB per thread that encodes), and tagged with the tokenizer's serial
 * number, so a thread that switches tokenizers simply misses. */
#include "tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fw_err.h"
#include "fw_file.h"
#include "unicode_pretok.h"

#define FW_TOK_EOT_TEXT "<|endoftext|>"
/* Vocabulary files larger than this are refused rather than read: the
 * largest public BPE vocabularies' tokenizer.json are around 20 MB. */
#define FW_TOK_MAX_FILE (512u << 20)
/* More ids than this is a corrupt file, not a vocabulary. */
#define FW_TOK_MAX_VOCAB (1 << 24)
/* 65536 slots of 64 bytes, 4 MiB per encoding thread (calloc'ed, so pages
 * cost memory only once touched). The 10.8 MB State of the Union corpus has
 * 32k distinct pre-tokens in 2M; measured over five passes, 16k slots missed
 * 3% of lookups, 64k slots 0.5% (about the distinct words themselves). */
#define FW_TOK_CACHE_SLOTS 65536
/* Four-way set associative: direct-mapped caches of the same sizes missed
 * two to four times as often (frequent words evicting each other). */
#define FW_TOK_CACHE_WAYS 4
#define FW_TOK_CACHE_WORD 26
#define FW_TOK_CACHE_IDS  8
/* Words up to this many bytes run BPE in stack buffers. */
#define FW_TOK_STACK_SYMS 128

struct fw_tokenizer {
    int n_vocab;
    int eot;
    uint32_t serial;      /* tags this tokenizer's entries in the word cache */
    char *blob;           /* every token's bytes, back to back */
    uint32_t *off;        /* token i is blob[off[i] .. off[i+1]) */
    int32_t byte_id[256]; /* the token of each single byte */
    /* bytes -> id: open addressing, linear probing, -1 = empty */
    int32_t *vslot;
    uint32_t vmask;
    /* merges in rank order: rank r joins merge_ab[2r], merge_ab[2r+1] into merge_out[r] */
    int32_t *merge_ab;
    int32_t *merge_out;
    int n_merges, cap_merges;
    /* (a, b) -> rank: open addressing on 64-bit keys, rank -1 = empty */
    uint64_t *pkey;
    int32_t *prank;
    uint32_t pmask;
};

/* ------------------------------------------------------ byte <-> unicode */

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves,
 * the other 68 bytes to U+0100.. in byte order, so every byte becomes a
 * visible character and BPE files never hold spaces or control codes. */
static uint16_t s_b2u[256];
static int16_t s_u2b[256 + 68];
static pthread_once_t s_b2u_once = PTHREAD_ONCE_INIT;

static void s_b2u_init(void) {
    int n = 0;
    for (int i = 0; i < (int)(sizeof s_u2b / sizeof s_u2b[0]); i++) s_u2b[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        s_b2u[b] = (uint16_t)(printable ? b : 256 + n++);
        s_u2b[s_b2u[b]] = (int16_t)b;
    }
}

/* Decode a vocabulary string (UTF-8 of byte-level characters) into bytes;
 * out must hold strlen(s) bytes. Returns the byte count, or -1 with *bad_cp
 * set to the first character outside the byte alphabet. */
static long s_unbyte(const char *s, size_t slen, char *out, uint32_t *bad_cp) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    long n = 0;
    while (i < slen) {
        /* Valid UTF-8: jansson checks every JSON string, and merges files are
         * validated before their lines reach here. */
        uint32_t cp = p[i];
        int extra = cp < 0x80 ? 0 : cp < 0xE0 ? 1 : cp < 0xF0 ? 2 : 3;
        if (extra) cp &= 0x3F >> extra;
        for (int k = 1; k <= extra && i + k < slen; k++) cp = cp << 6 | (p[i + k] & 0x3F);
        i += 1 + (size_t)extra;
        if (cp >= sizeof s_u2b / sizeof s_u2b[0] || s_u2b[cp] < 0) {
            if (bad_cp) *bad_cp = cp;
            return -1;
        }
        out[n++] = (char)s_u2b[cp];
    }
    return n;
}

/* Append the byte-level text of bytes[0..len) to out (needs 2*len + 1 bytes). */
static size_t s_enbyte(const char *bytes, size_t len, char *out) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        uint16_t cp = s_b2u[(uint8_t)bytes[i]];
        if (cp < 0x80) {
            out[n++] = (char)cp;
        } else {
            out[n++] = (char)(0xC0 | (cp >> 6));
            out[n++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[n] = '\0';
    return n;
}

/* ------------------------------------------------------------- hashing */

static inline uint64_t s_mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static inline uint64_t s_hash_bytes(const char *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0x100000001B3ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0x94d049bb133111ebull;
    return s_mix(h);
}

static inline const char *s_tok_ptr(const fw_tokenizer *t, int32_t id) {
    return t->blob + t->off[id];
}
static inline size_t s_tok_len(const fw_tokenizer *t, int32_t id) {
    return t->off[id + 1] - t->off[id];
}

/* Id of the token with these bytes, or -1. */
static int32_t s_lookup(const fw_tokenizer *t, const char *p, size_t n) {
    for (uint32_t i = (uint32_t)s_hash_bytes(p, n) & t->vmask;; i = (i + 1) & t->vmask) {
        int32_t id = t->vslot[i];
        if (id < 0) return -1;
        if (s_tok_len(t, id) == n && memcmp(s_tok_ptr(t, id), p, n) == 0) return id;
    }
}

static inline uint64_t s_pair_key(int32_t a, int32_t b) {
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

/* Merge rank of the adjacent pair (a, b), or -1 when they never merge. */
static inline int32_t s_rank(const fw_tokenizer *t, int32_t a, int32_t b) {
    uint64_t k = s_pair_key(a, b);
    for (uint32_t i = (uint32_t)s_mix(k) & t->pmask;; i = (i + 1) & t->pmask) {
        int32_t r = t->prank[i];
        if (r < 0 || t->pkey[i] == k) return r;
    }
}

/* ------------------------------------------------------------ building */

/* A tokenizer holding the vocabulary and no merges yet. `src` names where
 * the tokens came from, for error messages. Checks invariants 1 and 2. */
static fw_tokenizer *s_build_vocab(const char *const *tokens, const size_t *lens, int n,
                                   const char *src) {
    static atomic_uint s_serial = 1;
    if (n <= 0 || n > FW_TOK_MAX_VOCAB) {
        fw_err_set(FW_EINVAL, "%s: %d tokens (must be 1..%d)", src, n, FW_TOK_MAX_VOCAB);
        return NULL;
    }
    fw_tokenizer *t = calloc(1, sizeof *t);
    if (!t) goto nomem;
    t->n_vocab = n;
    /* Serial 0 marks empty cache slots. A stale cache entry could only be
     * mistaken for this tokenizer's after 2^32 more tokenizers were built
     * in one process, which nothing here comes near. */
    t->serial = atomic_fetch_add(&s_serial, 1);
    if (t->serial == 0) t->serial = atomic_fetch_add(&s_serial, 1);
    t->off = malloc(((size_t)n + 1) * sizeof *t->off);
    if (!t->off) goto nomem;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        total += lens[i];
        if (lens[i] == 0 || total > UINT32_MAX) {
            fw_err_set(FW_EINVAL, "%s: token %d is %s", src, i,
                       lens[i] == 0 ? "empty" : "past 4 GiB of token text");
            goto fail;
        }
    }
    t->blob = malloc(total ? total : 1);
    if (!t->blob) goto nomem;
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        t->off[i] = (uint32_t)at;
        memcpy(t->blob + at, tokens[i], lens[i]);
        at += lens[i];
    }
    t->off[n] = (uint32_t)at;

    uint32_t cap = 16;
    while (cap < (uint32_t)n * 2) cap <<= 1;
    t->vmask = cap - 1;
    t->vslot = malloc(cap * sizeof *t->vslot);
    if (!t->vslot) goto nomem;
    memset(t->vslot, 0xFF, cap * sizeof *t->vslot);
    for (int32_t id = 0; id < n; id++) {
        const char *p = s_tok_ptr(t, id);
        size_t len = s_tok_len(t, id);
        uint32_t i = (uint32_t)s_hash_bytes(p, len) & t->vmask;
        for (; t->vslot[i] >= 0; i = (i + 1) & t->vmask) {
            int32_t other = t->vslot[i];
            if (s_tok_len(t, other) == len && memcmp(s_tok_ptr(t, other), p, len) == 0) {
                fw_err_set(FW_EINVAL, "%s: tokens %d and %d have the same bytes", src, other, id);
                goto fail;
            }
        }
        t->vslot[i] = id;
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = s_lookup(t, &c, 1);
        if (t->byte_id[b] < 0) {
            fw_err_set(FW_EINVAL,
                       "%s: no token for byte 0x%02X (a byte-level vocabulary needs all 256)", src,
                       b);
            goto fail;
        }
    }
    t->eot = s_lookup(t, FW_TOK_EOT_TEXT, strlen(FW_TOK_EOT_TEXT));

    t->pmask = 15;
    t->pkey = malloc((t->pmask + 1) * sizeof *t->pkey);
    t->prank = malloc((t->pmask + 1) * sizeof *t->prank);
    if (!t->pkey || !t->prank) goto nomem;
    memset(t->prank, 0xFF, (t->pmask + 1) * sizeof *t->prank);
    return t;
nomem:
    fw_err_set(FW_ENOMEM, "%s: out of memory building the vocabulary", src);
fail:
    fw_tokenizer_destroy(&t);
    return NULL;
}

static int s_pair_grow(fw_tokenizer *t) {
    uint32_t cap = (t->pmask + 1) * 2;
    uint64_t *key = malloc(cap * sizeof *key);
    int32_t *rank = malloc(cap * sizeof *rank);
    if (!key || !rank) {
        free(key);
        free(rank);
        return FW_ENOMEM;
    }
    memset(rank, 0xFF, cap * sizeof *rank);
    for (uint32_t j = 0; j <= t->pmask; j++) {
        if (t->prank[j] < 0) continue;
        uint32_t i = (uint32_t)s_mix(t->pkey[j]) & (cap - 1);
        while (rank[i] >= 0) i = (i + 1) & (cap - 1);
        key[i] = t->pkey[j];
        rank[i] = t->prank[j];
    }
    free(t->pkey);
    free(t->prank);
    t->pkey = key;
    t->prank = rank;
    t->pmask = cap - 1;
    return 0;
}

/* Why a merge was refused, for the caller to word with its own context. */
enum { S_MERGE_OK = 0, S_MERGE_NOMEM, S_MERGE_BADID, S_MERGE_NORESULT, S_MERGE_DUP };

/* Append merge (a, b) as the next rank (invariants 3 and 4). On S_MERGE_DUP
 * *dup_rank is the earlier rank of the same pair. */
static int s_add_merge(fw_tokenizer *t, int32_t a, int32_t b, int *dup_rank) {
    if (a < 0 || a >= t->n_vocab || b < 0 || b >= t->n_vocab) return S_MERGE_BADID;
    int32_t r = s_rank(t, a, b);
    if (r >= 0) {
        *dup_rank = r;
        return S_MERGE_DUP;
    }
    size_t la = s_tok_len(t, a), lb = s_tok_len(t, b);
    char stackbuf[256];
    char *joined = la + lb <= sizeof stackbuf ? stackbuf : malloc(la + lb);
    if (!joined) return S_MERGE_NOMEM;
    memcpy(joined, s_tok_ptr(t, a), la);
    memcpy(joined + la, s_tok_ptr(t, b), lb);
    int32_t out = s_lookup(t, joined, la + lb);
    if (joined != stackbuf) free(joined);
    if (out < 0) return S_MERGE_NORESULT;

    if (t->n_merges == t->cap_merges) {
        int cap = t->cap_merges ? t->cap_merges * 2 : 1024;
        int32_t *ab = realloc(t->merge_ab, (size_t)cap * 2 * sizeof *ab);
        if (!ab) return S_MERGE_NOMEM;
        t->merge_ab = ab;
        int32_t *o = realloc(t->merge_out, (size_t)cap * sizeof *o);
        if (!o) return S_MERGE_NOMEM;
        t->merge_out = o;
        t->cap_merges = cap;
    }
    /* Keep the pair table at most half full so probes stay short. */
    if ((uint32_t)(t->n_merges + 1) * 2 > t->pmask + 1 && s_pair_grow(t) < 0) return S_MERGE_NOMEM;
    int rank = t->n_merges++;
    t->merge_ab[2 * rank] = a;
    t->merge_ab[2 * rank + 1] = b;
    t->merge_out[rank] = out;
    uint64_t k = s_pair_key(a, b);
    uint32_t i = (uint32_t)s_mix(k) & t->pmask;
    while (t->prank[i] >= 0) i = (i + 1) & t->pmask;
    t->pkey[i] = k;
    t->prank[i] = rank;
    return S_MERGE_OK;
}

fw_tokenizer *fw_tokenizer_from_parts(const char *const *tokens, const size_t *lens, int ntokens,
                                      const int32_t *merges, int nmerges) {
    pthread_once(&s_b2u_once, s_b2u_init);
    if (!tokens || !lens || nmerges < 0 || (nmerges > 0 && !merges)) {
        fw_err_set(FW_EINVAL, "fw_tokenizer_from_parts: bad arguments");
        return NULL;
    }
    fw_tokenizer *t = s_build_vocab(tokens, lens, ntokens, "vocabulary");
    if (!t) return NULL;
    for (int r = 0; r < nmerges; r++) {
        int dup = -1;
        int rc = s_add_merge(t, merges[2 * r], merges[2 * r + 1], &dup);
        if (rc == S_MERGE_OK) continue;
        if (rc == S_MERGE_NOMEM) fw_err_set(FW_ENOMEM, "merge %d: out of memory", r);
        if (rc == S_MERGE_BADID)
            fw_err_set(FW_EINVAL, "merge %d: ids %d %d out of range (vocabulary of %d)", r,
                       merges[2 * r], merges[2 * r + 1], ntokens);
        if (rc == S_MERGE_NORESULT)
            fw_err_set(FW_EINVAL, "merge %d (%d + %d): the joined bytes are not a token", r,
                       merges[2 * r], merges[2 * r + 1]);
        if (rc == S_MERGE_DUP) fw_err_set(FW_EINVAL, "merge %d repeats merge %d", r, dup);
        fw_tokenizer_destroy(&t);
        return NULL;
    }
    return t;
}

void fw_tokenizer_destroy(fw_tokenizer **tp) {
    if (!tp || !*tp) return;
    fw_tokenizer *t = *tp;
    free(t->blob);
    free(t->off);
    free(t->vslot);
    free(t->merge_ab);
    free(t->merge_out);
    free(t->pkey);
    free(t->prank);
    free(t);
    *tp = NULL;
}

int fw_tokenizer_vocab_size(const fw_tokenizer *tok) {
    return tok ? tok->n_vocab : 0;
}
int fw_tokenizer_eot(const fw_tokenizer *tok) {
    return tok ? tok->eot : -1;
}

/* ------------------------------------------------------------- loading */

/* One vocabulary being read from files. */
typedef struct {
    char path[1200]; /* the file being read, for messages */
    char **tok;      /* by id, raw bytes */
    size_t *len;
    int n;
} s_vocab;

static void s_vocab_free(s_vocab *v) {
    if (v->tok)
        for (int i = 0; i < v->n; i++) free(v->tok[i]);
    free(v->tok);
    free(v->len);
    v->tok = NULL;
    v->len = NULL;
    v->n = 0;
}

/* Read and parse a JSON file; NULL + detail naming the file on failure. */
static json_t *s_load_json(const char *path) {
    char *buf = NULL;
    size_t len = 0;
    int rc = fw_file_read(path, FW_TOK_MAX_FILE, &buf, &len);
    if (rc < 0) {
        if (rc == FW_ENOTFOUND) fw_err_set(rc, "%s: missing", path);
        /* otherwise fw_file_read's detail already names the path and the call */
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    free(buf);
    if (!root)
        fw_err_set(FW_EINVAL, "%s: bad JSON at line %d column %d: %s", path, jerr.line, jerr.column,
                   jerr.text);
    return root;
}

/* Fill v from a JSON object {"token": id, ...} (vocab.json, encoder.json or
 * tokenizer.json's model.vocab). */
static int s_vocab_from_json(s_vocab *v, json_t *obj, const char *what) {
    if (!json_is_object(obj))
        return fw_err_set(FW_EINVAL, "%s: %s is not a JSON object of token -> id", v->path, what);
    size_t n = json_object_size(obj);
    if (n == 0 || n > FW_TOK_MAX_VOCAB)
        return fw_err_set(FW_EINVAL, "%s: %s has %zu tokens (must be 1..%d)", v->path, what, n,
                          FW_TOK_MAX_VOCAB);
    v->n = (int)n;
    v->tok = calloc(n, sizeof *v->tok);
    v->len = calloc(n, sizeof *v->len);
    if (!v->tok || !v->len) return fw_err_set(FW_ENOMEM, "%s: out of memory", v->path);
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        if (!json_is_integer(val))
            return fw_err_set(FW_EINVAL, "%s: token \"%.60s\": id is not an integer", v->path, key);
        json_int_t id = json_integer_value(val);
        if (id < 0 || id >= (json_int_t)n)
            return fw_err_set(FW_EINVAL,
                              "%s: token \"%.60s\": id %lld out of range (%zu tokens need ids "
                              "0..%zu, one each)",
                              v->path, key, (long long)id, n, n - 1);
        if (v->tok[id]) {
            char prev[128];
            s_enbyte(v->tok[id], v->len[id] < 60 ? v->len[id] : 60, prev);
            return fw_err_set(FW_EINVAL, "%s: duplicate id %lld (tokens \"%s\" and \"%.60s\")",
                              v->path, (long long)id, prev, key);
        }
        size_t klen = strlen(key);
        v->tok[id] = malloc(klen ? klen : 1);
        if (!v->tok[id]) return fw_err_set(FW_ENOMEM, "%s: out of memory", v->path);
        uint32_t bad = 0;
        long blen = s_unbyte(key, klen, v->tok[id], &bad);
        if (blen < 0)
            return fw_err_set(FW_EINVAL,
                              "%s: token \"%.60s\": character U+%04X is not in GPT-2's byte "
                              "alphabet",
                              v->path, key, bad);
        if (blen == 0)
            return fw_err_set(FW_EINVAL, "%s: empty token (id %lld)", v->path, (long long)id);
        v->len[id] = (size_t)blen;
    }
    return 0;
}

/* Resolve one merge given as two byte-level strings and append it. `where`
 * is "path line N" or "path: model.merges[N]". */
static int s_merge_strings(fw_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                           const char *where) {
    char abuf[512], bbuf[512];
    char *ab = alen <= sizeof abuf ? abuf : malloc(alen);
    char *bb = blen <= sizeof bbuf ? bbuf : malloc(blen);
    int rc = 0;
    if (!ab || !bb) {
        rc = fw_err_set(FW_ENOMEM, "%s: out of memory", where);
        goto out;
    }
    long na = s_unbyte(a, alen, ab, NULL), nb = s_unbyte(b, blen, bb, NULL);
    int32_t ia = na > 0 ? s_lookup(t, ab, (size_t)na) : -1;
    int32_t ib = nb > 0 ? s_lookup(t, bb, (size_t)nb) : -1;
    if (ia < 0 || ib < 0) {
        rc = fw_err_set(FW_EINVAL, "%s: merge refers to unknown token \"%.*s\"", where,
                        ia < 0 ? (int)(alen < 60 ? alen : 60) : (int)(blen < 60 ? blen : 60),
                        ia < 0 ? a : b);
        goto out;
    }
    int dup = -1;
    switch (s_add_merge(t, ia, ib, &dup)) {
    case S_MERGE_OK:
        break;
    case S_MERGE_NORESULT:
        rc = fw_err_set(FW_EINVAL,
                        "%s: merge \"%.*s %.*s\": the joined token is not in the "
                        "vocabulary",
                        where, (int)(alen < 60 ? alen : 60), a, (int)(blen < 60 ? blen : 60), b);
        break;
    case S_MERGE_DUP:
        rc = fw_err_set(FW_EINVAL, "%s: merge \"%.*s %.*s\" repeats merge %d", where,
                        (int)(alen < 60 ? alen : 60), a, (int)(blen < 60 ? blen : 60), b, dup);
        break;
    default:
        rc = fw_err_set(FW_ENOMEM, "%s: out of memory", where);
        break;
    }
out:
    if (ab != abuf) free(ab);
    if (bb != bbuf) free(bb);
    return rc;
}

/* Read merges.txt / vocab.bpe: an optional "#version" line, then one merge
 * per line, two tokens separated by white space, in rank order. */
static int s_load_merges_txt(fw_tokenizer *t, const char *path) {
    char *buf = NULL;
    size_t len = 0;
    int rc = fw_file_read(path, FW_TOK_MAX_FILE, &buf, &len);
    if (rc < 0) {
        if (rc == FW_ENOTFOUND) fw_err_set(rc, "%s: missing", path);
        return rc;
    }
    size_t bad = 0;
    if (fw_utf8_validate(buf, len, &bad) < 0) {
        free(buf);
        return fw_err_set(FW_EINVAL, "%s: invalid UTF-8 at byte offset %zu", path, bad);
    }
    char where[1300];
    size_t pos = 0;
    long line = 0;
    while (pos < len && rc == 0) {
        line++;
        size_t end = pos;
        while (end < len && buf[end] != '\n') end++;
        size_t next = end + 1;
        if (end > pos && buf[end - 1] == '\r') end--;
        const char *s = buf + pos;
        size_t n = end - pos;
        pos = next;
        if (n == 0) continue;
        if (n >= 8 && memcmp(s, "#version", 8) == 0) continue;
        /* Split into fields on spaces and tabs (encoder.py's str.split()). */
        const char *f[3];
        size_t fl[3];
        int nf = 0;
        size_t i = 0;
        while (i < n && nf < 3) {
            while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
            if (i == n) break;
            size_t st = i;
            while (i < n && s[i] != ' ' && s[i] != '\t') i++;
            f[nf] = s + st;
            fl[nf++] = i - st;
        }
        snprintf(where, sizeof where, "%s line %ld", path, line);
        if (nf != 2) {
            rc = fw_err_set(FW_EINVAL, "%s: expected two tokens separated by a space, got \"%.*s\"",
                            where, (int)(n < 60 ? n : 60), s);
            break;
        }
        rc = s_merge_strings(t, f[0], fl[0], f[1], fl[1], where);
    }
    free(buf);
    return rc;
}

/* vocab.json + merges.txt, or encoder.json + vocab.bpe. */
static fw_tokenizer *s_load_pair(const char *vocab_path, const char *merges_path) {
    s_vocab v = {0};
    fw_tokenizer *t = NULL;
    snprintf(v.path, sizeof v.path, "%s", vocab_path);
    json_t *root = s_load_json(vocab_path);
    if (!root) return NULL;
    int rc = s_vocab_from_json(&v, root, "the file");
    json_decref(root);
    if (rc == 0) t = s_build_vocab((const char *const *)v.tok, v.len, v.n, vocab_path);
    s_vocab_free(&v);
    if (t && s_load_merges_txt(t, merges_path) < 0) fw_tokenizer_destroy(&t);
    return t;
}

/* Add tokenizer.json's added_tokens (special tokens such as <|endoftext|>)
 * that model.vocab lacks: each must take the next free id. */
static int s_vocab_add_special(s_vocab *v, json_t *added) {
    if (!added || json_is_null(added)) return 0;
    if (!json_is_array(added))
        return fw_err_set(FW_EINVAL, "%s: added_tokens is not an array", v->path);
    size_t i;
    json_t *e;
    json_array_foreach(added, i, e) {
        json_t *jid = json_object_get(e, "id"), *jc = json_object_get(e, "content");
        if (!json_is_integer(jid) || !json_is_string(jc))
            return fw_err_set(FW_EINVAL,
                              "%s: added_tokens[%zu] needs an integer id and a string "
                              "content",
                              v->path, i);
        json_int_t id = json_integer_value(jid);
        const char *c = json_string_value(jc);
        size_t clen = json_string_length(jc);
        if (id >= 0 && id < v->n) {
            if (v->len[id] == clen && memcmp(v->tok[id], c, clen) == 0) continue;
            return fw_err_set(FW_EINVAL,
                              "%s: added_tokens[%zu] \"%.60s\" has id %lld, which "
                              "model.vocab gives another token",
                              v->path, i, c, (long long)id);
        }
        if (id != v->n || v->n >= FW_TOK_MAX_VOCAB || clen == 0)
            return fw_err_set(FW_EINVAL,
                              "%s: added_tokens[%zu] \"%.60s\": id %lld is not the "
                              "next free id %d",
                              v->path, i, c, (long long)id, v->n);
        char **tok = realloc(v->tok, ((size_t)v->n + 1) * sizeof *tok);
        if (!tok) return fw_err_set(FW_ENOMEM, "%s: out of memory", v->path);
        v->tok = tok;
        size_t *len = realloc(v->len, ((size_t)v->n + 1) * sizeof *len);
        if (!len) return fw_err_set(FW_ENOMEM, "%s: out of memory", v->path);
        v->len = len;
        /* Special tokens are stored as their literal text, not byte-level. */
        v->tok[v->n] = malloc(clen);
        if (!v->tok[v->n]) return fw_err_set(FW_ENOMEM, "%s: out of memory", v->path);
        memcpy(v->tok[v->n], c, clen);
        v->len[v->n++] = clen;
    }
    return 0;
}

/* tokenizer.json (Hugging Face tokenizers): model.vocab and model.merges,
 * merges as "a b" strings (older files) or ["a", "b"] pairs (newer). */
static fw_tokenizer *s_load_tokenizer_json(const char *path) {
    s_vocab v = {0};
    fw_tokenizer *t = NULL;
    snprintf(v.path, sizeof v.path, "%s", path);
    json_t *root = s_load_json(path);
    if (!root) return NULL;
    json_t *model = json_object_get(root, "model");
    json_t *type = json_object_get(model, "type");
    json_t *merges = json_object_get(model, "merges");
    int rc = 0;
    if (!json_is_object(model)) {
        rc = fw_err_set(FW_EINVAL, "%s: no \"model\" object", path);
    } else if (type && !(json_is_string(type) && strcmp(json_string_value(type), "BPE") == 0)) {
        rc = fw_err_set(FW_EINVAL, "%s: model.type is %s, not \"BPE\"", path,
                        json_is_string(type) ? json_string_value(type) : "not a string");
    } else if (!json_is_array(merges)) {
        rc = fw_err_set(FW_EINVAL, "%s: model.merges missing or not an array", path);
    } else {
        rc = s_vocab_from_json(&v, json_object_get(model, "vocab"), "model.vocab");
    }
    if (rc == 0) rc = s_vocab_add_special(&v, json_object_get(root, "added_tokens"));
    if (rc == 0) t = s_build_vocab((const char *const *)v.tok, v.len, v.n, path);
    s_vocab_free(&v);
    size_t i;
    json_t *m;
    char where[1300];
    if (t) json_array_foreach(merges, i, m) {
            snprintf(where, sizeof where, "%s: model.merges[%zu]", path, i);
            const char *a = NULL, *b = NULL;
            size_t alen = 0, blen = 0;
            if (json_is_string(m)) {
                const char *s = json_string_value(m), *sp = strchr(s, ' ');
                if (sp && sp > s && sp[1] && !strchr(sp + 1, ' ')) {
                    a = s;
                    alen = (size_t)(sp - s);
                    b = sp + 1;
                    blen = strlen(b);
                }
            } else if (json_is_array(m) && json_array_size(m) == 2 &&
                       json_is_string(json_array_get(m, 0)) &&
                       json_is_string(json_array_get(m, 1))) {
                a = json_string_value(json_array_get(m, 0));
                alen = json_string_length(json_array_get(m, 0));
                b = json_string_value(json_array_get(m, 1));
                blen = json_string_length(json_array_get(m, 1));
            }
            if (!a || !alen || !blen) {
                fw_err_set(FW_EINVAL, "%s: expected \"a b\" or [\"a\", \"b\"]", where);
                fw_tokenizer_destroy(&t);
                break;
            }
            if (s_merge_strings(t, a, alen, b, blen, where) < 0) {
                fw_tokenizer_destroy(&t);
                break;
            }
        }
    json_decref(root);
    return t;
}

static bool s_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return errno != ENOENT;
    fclose(f);
    return true;
}

fw_tokenizer *fw_tokenizer_load(const char *dir) {
    pthread_once(&s_b2u_once, s_b2u_init);
    if (!dir || !*dir) {
        fw_err_set(FW_EINVAL, "tokenizer: no directory given");
        return NULL;
    }
    /* Same preference as Hugging Face: the two-file layout first. When only
     * one file of a pair is there, loading it names the missing partner. */
    static const char *const pairs[2][2] = {{"vocab.json", "merges.txt"},
                                            {"encoder.json", "vocab.bpe"}};
    char a[1100], b[1100];
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/%s", dir, pairs[i][0]);
        snprintf(b, sizeof b, "%s/%s", dir, pairs[i][1]);
        if (s_exists(a) || s_exists(b)) {
            if (!s_exists(a)) {
                fw_err_set(FW_ENOTFOUND, "%s: missing (%s needs it)", a, pairs[i][1]);
                return NULL;
            }
            if (!s_exists(b)) {
                fw_err_set(FW_ENOTFOUND, "%s: missing (%s needs it)", b, pairs[i][0]);
                return NULL;
            }
            return s_load_pair(a, b);
        }
    }
    snprintf(a, sizeof a, "%s/tokenizer.json", dir);
    if (s_exists(a)) return s_load_tokenizer_json(a);
    fw_err_set(FW_ENOTFOUND,
               "tokenizer %s: no vocabulary there (looked for vocab.json + merges.txt, "
               "encoder.json + vocab.bpe, tokenizer.json)",
               dir);
    return NULL;
}

/* ------------------------------------------------------------- saving */

int fw_tokenizer_save(const fw_tokenizer *t, const char *dir) {
    pthread_once(&s_b2u_once, s_b2u_init);
    if (!t || !dir || !*dir) return fw_err_set(FW_EINVAL, "fw_tokenizer_save: bad arguments");
    int rc = fw_file_mkdirs(dir, 0755);
    if (rc < 0) return rc;
    size_t maxlen = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if (s_tok_len(t, i) > maxlen) maxlen = s_tok_len(t, i);
    char *text = malloc(2 * maxlen + 1);
    json_t *obj = json_object();
    char *json = NULL, *merges = NULL;
    char path[1100];
    if (!text || !obj) goto nomem;
    for (int i = 0; i < t->n_vocab; i++) {
        /* The EOT marker and any other special token are plain ASCII, which
         * the byte alphabet maps to itself, so one encoding fits all. */
        s_enbyte(s_tok_ptr(t, i), s_tok_len(t, i), text);
        if (json_object_set_new(obj, text, json_integer(i)) < 0) goto nomem;
    }
    json = json_dumps(obj, JSON_COMPACT);
    if (!json) goto nomem;
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    rc = fw_file_write_atomic(path, json, strlen(json), 0644);
    if (rc < 0) goto out;

    size_t cap = 16, used = 0;
    for (int r = 0; r < t->n_merges; r++)
        cap += 2 * (s_tok_len(t, t->merge_ab[2 * r]) + s_tok_len(t, t->merge_ab[2 * r + 1])) + 2;
    merges = malloc(cap);
    if (!merges) goto nomem;
    used = (size_t)sprintf(merges, "#version: 0.2\n");
    for (int r = 0; r < t->n_merges; r++) {
        int32_t a = t->merge_ab[2 * r], b = t->merge_ab[2 * r + 1];
        used += s_enbyte(s_tok_ptr(t, a), s_tok_len(t, a), merges + used);
        merges[used++] = ' ';
        used += s_enbyte(s_tok_ptr(t, b), s_tok_len(t, b), merges + used);
        merges[used++] = '\n';
    }
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    rc = fw_file_write_atomic(path, merges, used, 0644);
    goto out;
nomem:
    rc = fw_err_set(FW_ENOMEM, "saving tokenizer to %s: out of memory", dir);
out:
    free(text);
    free(json);
    free(merges);
    json_decref(obj);
    return rc;
}

/* ------------------------------------------------------------ encoding */

typedef struct {
    uint32_t serial; /* owner tokenizer; 0 = empty */
    uint8_t wlen, nids;
    char word[FW_TOK_CACHE_WORD];
    int32_t ids[FW_TOK_CACHE_IDS];
} s_cache_slot;
_Static_assert(sizeof(s_cache_slot) == 64, "a cache slot is one cache line");

typedef struct {
    s_cache_slot slot[FW_TOK_CACHE_SLOTS];
    uint32_t victim;
} s_cache;

static pthread_key_t s_cache_key;
static pthread_once_t s_cache_once = PTHREAD_ONCE_INIT;
static _Thread_local s_cache *s_tl_cache;

static void s_cache_key_init(void) {
    /* The key exists only so that each thread's cache is freed when it exits. */
    (void)pthread_key_create(&s_cache_key, free);
}

/* This thread's cache, or NULL when it cannot be had (encode then runs
 * without one: slower, same result). */
static s_cache *s_cache_get(void) {
    if (!s_tl_cache) {
        pthread_once(&s_cache_once, s_cache_key_init);
        s_tl_cache = calloc(1, sizeof *s_tl_cache);
        if (s_tl_cache) (void)pthread_setspecific(s_cache_key, s_tl_cache);
    }
    return s_tl_cache;
}

/* Output id buffer. */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} s_out;

static int s_out_reserve(s_out *o, size_t more) {
    if (o->n + more <= o->cap) return 0;
    size_t cap = o->cap ? o->cap : 64;
    while (cap < o->n + more) cap *= 2;
    int32_t *p = realloc(o->ids, cap * sizeof *p);
    if (!p) return fw_err_set(FW_ENOMEM, "encode: out of memory for %zu ids", cap);
    o->ids = p;
    o->cap = cap;
    return 0;
}

typedef struct {
    int32_t rank, pos, a, b;
} s_cand;

typedef struct {
    int32_t id, prev, next; /* id -1: merged into its left neighbour */
} s_sym;

static inline bool s_cand_less(const s_cand *x, const s_cand *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void s_heap_push(s_cand *h, int *n, s_cand c) {
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!s_cand_less(&c, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static s_cand s_heap_pop(s_cand *h, int *n) {
    s_cand top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && s_cand_less(&h[c + 1], &h[c])) c++;
        if (!s_cand_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

/* BPE of one pre-token (n >= 2 bytes), appending its ids to o. */
static int s_bpe(const fw_tokenizer *t, const uint8_t *w, size_t n, s_out *o) {
    s_sym sym_stack[FW_TOK_STACK_SYMS];
    s_cand heap_stack[3 * FW_TOK_STACK_SYMS], pend_stack[2 * FW_TOK_STACK_SYMS];
    s_sym *sym = sym_stack;
    s_cand *heap = heap_stack, *pend = pend_stack;
    if (n > FW_TOK_STACK_SYMS) {
        if (n > INT32_MAX / 4) return fw_err_set(FW_ETOOBIG, "encode: pre-token of %zu bytes", n);
        sym = malloc(n * sizeof *sym);
        /* Heap: n-1 initial pairs plus at most 2 per merge (n-1 merges). */
        heap = malloc(3 * n * sizeof *heap);
        pend = malloc(2 * n * sizeof *pend);
        if (!sym || !heap || !pend) {
            free(sym);
            free(heap);
            free(pend);
            return fw_err_set(FW_ENOMEM, "encode: out of memory for a %zu-byte pre-token", n);
        }
    }
    int nheap = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i].id = t->byte_id[w[i]];
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t r = s_rank(t, sym[i].id, sym[i + 1].id);
        if (r >= 0) s_heap_push(heap, &nheap, (s_cand){r, (int32_t)i, sym[i].id, sym[i + 1].id});
    }
    while (nheap > 0) {
        int32_t rank = heap[0].rank;
        int npend = 0;
        while (nheap > 0 && heap[0].rank == rank) {
            s_cand c = s_heap_pop(heap, &nheap);
            s_sym *l = &sym[c.pos];
            if (l->id != c.a || l->next < 0 || sym[l->next].id != c.b) continue; /* stale */
            s_sym *r = &sym[l->next];
            int32_t merged = t->merge_out[rank];
            l->id = merged;
            l->next = r->next;
            if (r->next >= 0) sym[r->next].prev = c.pos;
            r->id = -1;
            if (l->prev >= 0) {
                int32_t rk = s_rank(t, sym[l->prev].id, merged);
                if (rk >= 0) pend[npend++] = (s_cand){rk, l->prev, sym[l->prev].id, merged};
            }
            if (l->next >= 0) {
                int32_t rk = s_rank(t, merged, sym[l->next].id);
                if (rk >= 0) pend[npend++] = (s_cand){rk, c.pos, merged, sym[l->next].id};
            }
        }
        for (int i = 0; i < npend; i++) s_heap_push(heap, &nheap, pend[i]);
    }
    int rc = s_out_reserve(o, n);
    if (rc == 0)
        for (int32_t i = 0; i >= 0; i = sym[i].next) o->ids[o->n++] = sym[i].id;
    if (sym != sym_stack) {
        free(sym);
        free(heap);
        free(pend);
    }
    return rc;
}

/* The cache set a pre-token maps to, NULL when it bypasses the cache
 * (single bytes, words longer than a slot holds, no cache). */
static inline s_cache_slot *s_cache_set(s_cache *cache, const char *w, size_t n, uint64_t *h) {
    if (!cache || n < 2 || n > FW_TOK_CACHE_WORD) return NULL;
    *h = s_hash_bytes(w, n);
    return &cache->slot[(*h & (FW_TOK_CACHE_SLOTS / FW_TOK_CACHE_WAYS - 1)) * FW_TOK_CACHE_WAYS];
}

/* Encode one pre-token, through its cache set when it has one. */
static int s_encode_word(const fw_tokenizer *t, s_cache *cache, s_cache_slot *set, uint64_t h,
                         const char *w, size_t n, s_out *o) {
    if (n == 1) {
        if (s_out_reserve(o, 1) < 0) return FW_ENOMEM;
        o->ids[o->n++] = t->byte_id[(uint8_t)w[0]];
        return 0;
    }
    s_cache_slot *slot = NULL;
    if (set) {
        for (int k = 0; k < FW_TOK_CACHE_WAYS; k++) {
            s_cache_slot *e = &set[k];
            if (e->serial == t->serial && e->wlen == n && memcmp(e->word, w, n) == 0) {
                if (s_out_reserve(o, e->nids) < 0) return FW_ENOMEM;
                memcpy(o->ids + o->n, e->ids, e->nids * sizeof(int32_t));
                o->n += e->nids;
                return 0;
            }
            if (!slot && e->serial != t->serial) slot = e; /* free for this tokenizer */
        }
        /* Set full: evict a pseudo-random way (cheap, and no LRU bits to keep). */
        if (!slot) slot = &set[(cache->victim++ ^ (h >> 32)) & (FW_TOK_CACHE_WAYS - 1)];
    }
    size_t start = o->n;
    int rc = s_bpe(t, (const uint8_t *)w, n, o);
    if (rc < 0) return rc;
    size_t got = o->n - start;
    if (slot && got <= FW_TOK_CACHE_IDS) {
        slot->serial = t->serial;
        slot->wlen = (uint8_t)n;
        slot->nids = (uint8_t)got;
        memcpy(slot->word, w, n);
        memcpy(slot->ids, o->ids + start, got * sizeof(int32_t));
    }
    return 0;
}

int fw_tokenizer_encode(const fw_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                        size_t *n) {
    if (ids) *ids = NULL;
    if (n) *n = 0;
    if (!tok || !ids || !n || (!text && len))
        return fw_err_set(FW_EINVAL, "fw_tokenizer_encode: bad arguments");
    int rc = fw_utf8_validate(text, len, NULL);
    if (rc < 0) return rc;
    s_out o = {0};
    /* English runs near 4.5 bytes a token; start there and grow. */
    rc = s_out_reserve(&o, len / 4 + 16);
    s_cache *cache = s_cache_get();
    /* A cache set is one DRAM access away (4 MiB does not fit in L2), so the
     * loop runs one pre-token ahead: it finds and hashes the next pre-token
     * and prefetches its set while encoding the current one. */
    size_t pos = 0, end = len ? fw_pretok_next(text, len, 0) : 0;
    uint64_t h = 0;
    s_cache_slot *set = s_cache_set(cache, text, end, &h);
    while (rc == 0 && pos < len) {
        size_t next_end = end < len ? fw_pretok_next(text, len, end) : end;
        uint64_t next_h = 0;
        s_cache_slot *next_set = s_cache_set(cache, text + end, next_end - end, &next_h);
        if (next_set)
            for (int k = 0; k < FW_TOK_CACHE_WAYS; k++) __builtin_prefetch(&next_set[k]);
        rc = s_encode_word(tok, cache, set, h, text + pos, end - pos, &o);
        pos = end;
        end = next_end;
        set = next_set;
        h = next_h;
    }
    if (rc < 0) {
        free(o.ids);
        return rc;
    }
    *ids = o.ids;
    *n = o.n;
    return 0;
}

/* ------------------------------------------------------------ decoding */

int fw_tokenizer_decode(const fw_tokenizer *tok, const int32_t *ids, size_t n, char **text,
                        size_t *len) {
    if (text) *text = NULL;
    if (len) *len = 0;
    if (!tok || !text || !len || (!ids && n))
        return fw_err_set(FW_EINVAL, "fw_tokenizer_decode: bad arguments");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n_vocab)
            return fw_err_set(FW_EINVAL,
                              "decode: id %d at position %zu is not in the vocabulary "
                              "(0..%d)",
                              ids[i], i, tok->n_vocab - 1);
        total += s_tok_len(tok, ids[i]);
    }
    char *out = malloc(total + 1);
    if (!out) return fw_err_set(FW_ENOMEM, "decode: out of memory for %zu bytes", total);
    char *p = out;
    for (size_t i = 0; i < n; i++) {
        size_t l = s_tok_len(tok, ids[i]);
        memcpy(p, s_tok_ptr(tok, ids[i]), l);
        p += l;
    }
    *p = '\0';
    *text = out;
    *len = total;
    return 0;
}

int fw_tokenizer_token_bytes(const fw_tokenizer *tok, int32_t id, const char **bytes, size_t *len) {
    if (!tok || !bytes || !len)
        return fw_err_set(FW_EINVAL, "fw_tokenizer_token_bytes: bad arguments");
    if (id < 0 || id >= tok->n_vocab) {
        *bytes = NULL;
        *len = 0;
        return fw_err_set(FW_EINVAL, "token id %d is not in the vocabulary (0..%d)", id,
                          tok->n_vocab - 1);
    }
    *bytes = s_tok_ptr(tok, id);
    *len = s_tok_len(tok, id);
    return 0;
}
