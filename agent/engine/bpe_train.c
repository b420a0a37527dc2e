/* bpe_train.c - learn a GPT-2-style byte-level BPE vocabulary from texts.
 *
 * Theory of operation
 * -------------------
 * 1. Pre-tokenise every text with GPT-2's pattern (unicode_pretok.c) and
 *    count each distinct pre-token ("word"). BPE never merges across
 *    pre-tokens, so from here on a corpus is just (word, frequency) pairs.
 * 2. Spell every word as bytes (ids 0..255 while training) and count every
 *    adjacent pair, weighted by word frequency. For each pair also keep the
 *    list of words it occurs in.
 * 3. Repeat until the vocabulary is full: take the most frequent pair (ties:
 *    lowest first id, then lowest second id, so training is deterministic),
 *    make it a new token, and rewrite only the words on that pair's list.
 *    While rewriting, every occurrence adjusts the counts of exactly the
 *    pairs it destroys and creates:
 *
 *        ... P a b N ...   ->   ... P X N ...
 *        (a,b) -= f   (P,a) -= f   (b,N) -= f   (P,X) += f   (X,N) += f
 *
 *    with P the symbol already written to the left (possibly an X just
 *    made), so runs like "a a a" and "a b a b" come out right. This is the
 *    "incremental pair-count update": one merge costs time in proportion to
 *    the words it touches, not to the corpus.
 * 4. The most frequent pair comes from a max-heap with lazy deletion: each
 *    time a pair's count changes a fresh entry is pushed, and a popped entry
 *    whose count no longer matches the pair's current count is discarded.
 * 5. Output ids: the 256 bytes first, in GPT-2's order (so ids 0..255 mean
 *    the same bytes as in GPT-2's own vocabulary), then the merges' tokens
 *    in the order learned, then "<|endoftext|>". Two different pairs can
 *    spell the same bytes ("ab"+"c", "a"+"bc"); the second merge then reuses
 *    the first one's token, as Hugging Face's trainer does.
 *
 * Words' pair lists may hold a word more than once, or words that no longer
 * contain the pair; rewriting such a word finds nothing to merge, so both
 * are harmless. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fw_err.h"
#include "fw_log.h"
#include "fw_time.h"
#include "tokenizer.h"
#include "unicode_pretok.h"

#define FW_TRAIN_MAX_VOCAB (1 << 20)

/* --------------------------------------------------------- small tools */

static inline uint64_t s_mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static uint64_t s_hash_bytes(const char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 0x100000001b3ull;
    return s_mix(h ^ n);
}

/* Grow *p (an array of *cap elements of size sz) to hold need elements. */
static int s_grow(void **p, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * sz);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* Byte strings in one arena, found by content: words in step 1, tokens in
 * step 3. Open addressing, linear probing. */
typedef struct {
    char *arena;
    size_t used, cap;
    uint64_t *off; /* entry i: arena[off[i] .. off[i] + len[i]) */
    uint32_t *len;
    size_t n, ncap;
    int32_t *slot; /* -1 = empty */
    size_t mask;
} s_strset;

static void s_strset_free(s_strset *s) {
    free(s->arena);
    free(s->off);
    free(s->len);
    free(s->slot);
    memset(s, 0, sizeof *s);
}

/* Index of p[0..n), added when absent (*added set). -1 on ENOMEM. */
static int32_t s_strset_get(s_strset *s, const char *p, size_t n, bool *added) {
    if ((s->n + 1) * 2 > s->mask + 1 || !s->slot) {
        size_t cap = s->slot ? (s->mask + 1) * 2 : 1024;
        int32_t *slot = malloc(cap * sizeof *slot);
        if (!slot) return -1;
        memset(slot, 0xFF, cap * sizeof *slot);
        for (size_t i = 0; i < s->n; i++) {
            size_t j = s_hash_bytes(s->arena + s->off[i], s->len[i]) & (cap - 1);
            while (slot[j] >= 0) j = (j + 1) & (cap - 1);
            slot[j] = (int32_t)i;
        }
        free(s->slot);
        s->slot = slot;
        s->mask = cap - 1;
    }
    size_t j = s_hash_bytes(p, n) & s->mask;
    for (; s->slot[j] >= 0; j = (j + 1) & s->mask) {
        int32_t i = s->slot[j];
        if (s->len[i] == n && memcmp(s->arena + s->off[i], p, n) == 0) {
            if (added) *added = false;
            return i;
        }
    }
    if (n > UINT32_MAX || s->n >= INT32_MAX ||
        s_grow((void **)&s->arena, &s->cap, s->used + n, 1) < 0 ||
        s_grow((void **)&s->off, &s->ncap, s->n + 1, sizeof *s->off) < 0)
        return -1;
    size_t ncap = s->ncap;
    void *len = realloc(s->len, ncap * sizeof *s->len);
    if (!len) return -1;
    s->len = len;
    memcpy(s->arena + s->used, p, n);
    s->off[s->n] = s->used;
    s->len[s->n] = (uint32_t)n;
    s->used += n;
    s->slot[j] = (int32_t)s->n;
    if (added) *added = true;
    return (int32_t)s->n++;
}

/* ----------------------------------------------------------- the state */

typedef struct {
    int64_t count;
    int32_t a, b;
    int32_t *where; /* words this pair occurs in (see the header comment) */
    uint32_t nwhere, capwhere;
    uint32_t stamp; /* last merge that changed count, to list it once */
    bool merged;    /* already in the merge list */
} s_pair;

typedef struct {
    int64_t count;
    int32_t a, b, pair;
} s_entry;

typedef struct {
    /* words: symbols sym[woff[w] .. woff[w] + wlen[w]), frequency wfreq[w] */
    int32_t *sym;
    size_t *woff;
    uint32_t *wlen;
    int64_t *wfreq;
    size_t nwords;
    /* pairs and their (a,b) -> index map */
    s_pair *pair;
    size_t npair, cappair;
    uint64_t *pkey;
    int32_t *pidx;
    size_t pmask;
    /* max-heap of pair entries */
    s_entry *heap;
    size_t nheap, capheap;
    /* pairs changed by the current merge */
    int32_t *touched;
    size_t ntouched, captouched;
    uint32_t stamp;
    /* tokens learned: bytes by internal id (0..255 are the bytes) */
    s_strset tok;
} s_train;

static int32_t s_pair_find(s_train *t, int32_t a, int32_t b, bool create) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    if (create && (t->npair + 1) * 2 > t->pmask + 1) {
        size_t cap = t->pkey ? (t->pmask + 1) * 2 : 4096;
        uint64_t *key = malloc(cap * sizeof *key);
        int32_t *idx = malloc(cap * sizeof *idx);
        if (!key || !idx) {
            free(key);
            free(idx);
            return -2;
        }
        memset(idx, 0xFF, cap * sizeof *idx);
        for (size_t i = 0; i < t->npair; i++) {
            uint64_t kk = (uint64_t)(uint32_t)t->pair[i].a << 32 | (uint32_t)t->pair[i].b;
            size_t j = s_mix(kk) & (cap - 1);
            while (idx[j] >= 0) j = (j + 1) & (cap - 1);
            key[j] = kk;
            idx[j] = (int32_t)i;
        }
        free(t->pkey);
        free(t->pidx);
        t->pkey = key;
        t->pidx = idx;
        t->pmask = cap - 1;
    }
    if (!t->pkey) return -1;
    size_t j = s_mix(k) & t->pmask;
    for (; t->pidx[j] >= 0; j = (j + 1) & t->pmask)
        if (t->pkey[j] == k) return t->pidx[j];
    if (!create) return -1;
    if (s_grow((void **)&t->pair, &t->cappair, t->npair + 1, sizeof *t->pair) < 0) return -2;
    s_pair *p = &t->pair[t->npair];
    memset(p, 0, sizeof *p);
    p->a = a;
    p->b = b;
    t->pkey[j] = k;
    t->pidx[j] = (int32_t)t->npair;
    return (int32_t)t->npair++;
}

static inline bool s_entry_above(const s_entry *x, const s_entry *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static int s_heap_push(s_train *t, int32_t pi) {
    if (s_grow((void **)&t->heap, &t->capheap, t->nheap + 1, sizeof *t->heap) < 0) return -1;
    s_entry e = {t->pair[pi].count, t->pair[pi].a, t->pair[pi].b, pi};
    size_t i = t->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!s_entry_above(&e, &t->heap[p])) break;
        t->heap[i] = t->heap[p];
        i = p;
    }
    t->heap[i] = e;
    return 0;
}

static s_entry s_heap_pop(s_train *t) {
    s_entry top = t->heap[0], last = t->heap[--t->nheap];
    size_t i = 0, n = t->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && s_entry_above(&t->heap[c + 1], &t->heap[c])) c++;
        if (!s_entry_above(&t->heap[c], &last)) break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (n) t->heap[i] = last;
    return top;
}

/* Add delta to pair (a,b)'s count; when it grows, note word w in its list. */
static int s_count(s_train *t, int32_t a, int32_t b, int64_t delta, int32_t w) {
    int32_t pi = s_pair_find(t, a, b, delta > 0);
    if (pi == -2) return -1;
    if (pi < 0) return 0; /* decrementing a pair never counted cannot happen; be safe */
    s_pair *p = &t->pair[pi];
    p->count += delta;
    if (delta > 0 && (p->nwhere == 0 || p->where[p->nwhere - 1] != w)) {
        if (p->nwhere == p->capwhere) {
            uint32_t cap = p->capwhere ? p->capwhere * 2 : 4;
            int32_t *wh = realloc(p->where, cap * sizeof *wh);
            if (!wh) return -1;
            p->where = wh;
            p->capwhere = cap;
        }
        p->where[p->nwhere++] = w;
    }
    if (p->stamp != t->stamp) {
        p->stamp = t->stamp;
        if (s_grow((void **)&t->touched, &t->captouched, t->ntouched + 1, sizeof *t->touched) < 0)
            return -1;
        t->touched[t->ntouched++] = pi;
    }
    return 0;
}

/* Rewrite word w, joining every (a,b) into x, left to right (see step 3). */
static int s_merge_word(s_train *t, int32_t w, int32_t a, int32_t b, int32_t x) {
    int32_t *s = t->sym + t->woff[w];
    uint32_t n = t->wlen[w], k = 0;
    int64_t f = t->wfreq[w];
    int rc = 0;
    for (uint32_t j = 0; j < n;) {
        if (j + 1 < n && s[j] == a && s[j + 1] == b) {
            rc |= s_count(t, a, b, -f, w);
            if (k > 0) {
                rc |= s_count(t, s[k - 1], a, -f, w);
                rc |= s_count(t, s[k - 1], x, f, w);
            }
            if (j + 2 < n) {
                rc |= s_count(t, b, s[j + 2], -f, w);
                rc |= s_count(t, x, s[j + 2], f, w);
            }
            s[k++] = x;
            j += 2;
        } else {
            s[k++] = s[j++];
        }
    }
    t->wlen[w] = k;
    return rc;
}

static void s_train_free(s_train *t) {
    free(t->sym);
    free(t->woff);
    free(t->wlen);
    free(t->wfreq);
    for (size_t i = 0; i < t->npair; i++) free(t->pair[i].where);
    free(t->pair);
    free(t->pkey);
    free(t->pidx);
    free(t->heap);
    free(t->touched);
    s_strset_free(&t->tok);
}

/* Steps 1 and 2: count words, spell them in bytes, count pairs. */
static int s_count_words(s_train *t, const char *const *texts, const size_t *lens, size_t ntexts) {
    s_strset words = {0};
    int64_t *freq = NULL;
    size_t capfreq = 0;
    int rc = 0;
    for (size_t i = 0; i < ntexts && rc == 0; i++) {
        size_t len = lens[i], bad = 0;
        if (!texts[i] && len) {
            rc = fw_err_set(FW_EINVAL, "texts[%zu] is NULL", i);
            break;
        }
        if (fw_utf8_validate(texts[i], len, &bad) < 0) {
            char why[200];
            snprintf(why, sizeof why, "%s", fw_err_detail());
            rc = fw_err_set(FW_EINVAL, "texts[%zu]: %s", i, why);
            break;
        }
        for (size_t pos = 0; pos < len;) {
            size_t end = fw_pretok_next(texts[i], len, pos);
            bool added = false;
            int32_t w = s_strset_get(&words, texts[i] + pos, end - pos, &added);
            if (w < 0 || s_grow((void **)&freq, &capfreq, (size_t)w + 1, sizeof *freq) < 0) {
                rc = fw_err_set(FW_ENOMEM, "training: out of memory counting words");
                break;
            }
            if (added) freq[w] = 0;
            freq[w]++;
            pos = end;
        }
    }
    if (rc == 0) {
        t->nwords = words.n;
        t->sym = malloc((words.used ? words.used : 1) * sizeof *t->sym);
        t->woff = malloc((words.n ? words.n : 1) * sizeof *t->woff);
        t->wlen = malloc((words.n ? words.n : 1) * sizeof *t->wlen);
        t->wfreq = malloc((words.n ? words.n : 1) * sizeof *t->wfreq);
        if (!t->sym || !t->woff || !t->wlen || !t->wfreq)
            rc = fw_err_set(FW_ENOMEM, "training: out of memory for %zu words", words.n);
    }
    t->stamp = 1; /* every pair counted here is new: s_count lists each once */
    for (size_t w = 0; rc == 0 && w < words.n; w++) {
        t->woff[w] = words.off[w];
        t->wlen[w] = words.len[w];
        t->wfreq[w] = freq[w];
        int32_t *s = t->sym + words.off[w];
        for (uint32_t k = 0; k < words.len[w]; k++) s[k] = (uint8_t)words.arena[words.off[w] + k];
        for (uint32_t k = 0; k + 1 < words.len[w] && rc == 0; k++)
            if (s_count(t, s[k], s[k + 1], freq[w], (int32_t)w) < 0)
                rc = fw_err_set(FW_ENOMEM, "training: out of memory counting pairs");
    }
    for (size_t i = 0; rc == 0 && i < t->npair; i++)
        if (s_heap_push(t, (int32_t)i) < 0) rc = fw_err_set(FW_ENOMEM, "training: out of memory");
    t->ntouched = 0;
    free(freq);
    s_strset_free(&words);
    return rc;
}

/* GPT-2's id for each byte: printable Latin-1 first, in byte order, then the rest. */
static void s_gpt2_byte_order(int32_t out_id[256]) {
    int32_t n = 0;
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) out_id[b] = n++;
    for (int b = 0; b < 256; b++)
        if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) out_id[b] = n++;
}

int fw_tokenizer_train(const char *const *texts, const size_t *lens, size_t ntexts, int vocab_size,
                       fw_tokenizer **out) {
    if (out) *out = NULL;
    if (!out || (ntexts && (!texts || !lens)))
        return fw_err_set(FW_EINVAL, "fw_tokenizer_train: bad arguments");
    if (vocab_size < 257 || vocab_size > FW_TRAIN_MAX_VOCAB)
        return fw_err_set(FW_EINVAL,
                          "fw_tokenizer_train: vocab_size %d (must be 257..%d: 256 "
                          "bytes and <|endoftext|> at least)",
                          vocab_size, FW_TRAIN_MAX_VOCAB);
    int64_t t0 = fw_mono_ms();
    s_train t = {0};
    int32_t *merges = NULL;
    size_t nmerges = 0, capmerges = 0;
    const char **toks = NULL;
    size_t *tlens = NULL;
    int rc = 0;

    /* Tokens 0..255 are the bytes themselves while training. */
    for (int b = 0; b < 256 && rc == 0; b++) {
        char c = (char)b;
        if (s_strset_get(&t.tok, &c, 1, NULL) != b)
            rc = fw_err_set(FW_ENOMEM, "training: out of memory");
    }
    if (rc == 0) rc = s_count_words(&t, texts, lens, ntexts);

    /* Step 3: merge until 256 + learned tokens + EOT fill vocab_size. */
    char *buf = NULL;
    size_t capbuf = 0;
    while (rc == 0 && t.tok.n + 1 < (size_t)vocab_size && t.nheap > 0) {
        s_entry e = s_heap_pop(&t);
        s_pair *p = &t.pair[e.pair];
        if (e.count != p->count) continue; /* stale: a fresher entry exists */
        if (e.count <= 0) break;
        size_t la = t.tok.len[e.a], lb = t.tok.len[e.b];
        if (s_grow((void **)&buf, &capbuf, la + lb, 1) < 0 ||
            s_grow((void **)&merges, &capmerges, 2 * nmerges + 2, sizeof *merges) < 0) {
            rc = fw_err_set(FW_ENOMEM, "training: out of memory");
            break;
        }
        memcpy(buf, t.tok.arena + t.tok.off[e.a], la);
        memcpy(buf + la, t.tok.arena + t.tok.off[e.b], lb);
        int32_t x = s_strset_get(&t.tok, buf, la + lb, NULL);
        if (x < 0) {
            rc = fw_err_set(FW_ENOMEM, "training: out of memory");
            break;
        }
        /* A pair merged before can come back when a later merge spells an
         * existing token again (x reused above). Rewriting the words again
         * is right -- the encoder would apply the earlier rank to them --
         * but the merge list must not repeat the pair. */
        if (!p->merged) {
            merges[2 * nmerges] = e.a;
            merges[2 * nmerges + 1] = e.b;
            nmerges++;
            p->merged = true;
        }

        t.stamp++;
        t.ntouched = 0;
        /* The list is not appended to while we walk it: new pairs all hold x. */
        int32_t *where = p->where;
        uint32_t nwhere = p->nwhere;
        int32_t a = e.a, b = e.b;
        for (uint32_t i = 0; i < nwhere && rc == 0; i++)
            if (s_merge_word(&t, where[i], a, b, x) < 0)
                rc = fw_err_set(FW_ENOMEM, "training: out of memory");
        p = &t.pair[e.pair]; /* s_count may have moved the pair array */
        free(p->where);
        p->where = NULL;
        p->nwhere = p->capwhere = 0;
        for (size_t i = 0; i < t.ntouched && rc == 0; i++)
            if (t.pair[t.touched[i]].count > 0 && s_heap_push(&t, t.touched[i]) < 0)
                rc = fw_err_set(FW_ENOMEM, "training: out of memory");
    }
    free(buf);

    /* Step 5: output ids, then build the tokenizer through the checked path. */
    size_t ntok = t.tok.n + 1;
    if (rc == 0) {
        toks = malloc(ntok * sizeof *toks);
        tlens = malloc(ntok * sizeof *tlens);
        if (!toks || !tlens) rc = fw_err_set(FW_ENOMEM, "training: out of memory");
    }
    if (rc == 0) {
        int32_t byte_out[256];
        s_gpt2_byte_order(byte_out);
        for (size_t i = 0; i < t.tok.n; i++) {
            size_t o = i < 256 ? (size_t)byte_out[i] : i;
            toks[o] = t.tok.arena + t.tok.off[i];
            tlens[o] = t.tok.len[i];
        }
        toks[ntok - 1] = "<|endoftext|>";
        tlens[ntok - 1] = strlen("<|endoftext|>");
        for (size_t i = 0; i < 2 * nmerges; i++)
            if (merges[i] < 256) merges[i] = byte_out[merges[i]];
        *out = fw_tokenizer_from_parts(toks, tlens, (int)ntok, merges, (int)nmerges);
        if (!*out) rc = FW_EINVAL; /* detail set by from_parts */
    }
    if (rc == 0)
        fw_info("event=tokenizer-trained vocab=%zu merges=%zu words=%zu ms=%lld", ntok, nmerges,
                t.nwords, (long long)(fw_mono_ms() - t0));
    free(toks);
    free(tlens);
    free(merges);
    s_train_free(&t);
    return rc;
}
