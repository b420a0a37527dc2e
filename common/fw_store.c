/* fw_store.c - the artifact store above its backends (see fw_store.h).
 *
 * Theory of operation. A backend moves opaque bytes; this file owns every
 * guarantee about them:
 *
 *   put:    bytes --> hash + stage --> [expected digest?] --> commit under digest
 *                         |                  |
 *                  size limit: ETOOBIG   mismatch: ECORRUPT, stage discarded
 *
 *   read:   open --> read + hash ... --> end: digest and size match? --> 0
 *                                                 no: ECORRUPT (digest + where)
 *
 * Invariants:
 *   1. A digest names exactly the bytes that hash to it: puts hash what they
 *      stage, and nothing is committed under a digest other than the one the
 *      bytes produced.
 *   2. Every consumer that reads to the end has verified what it read: the
 *      last read of a mismatching blob returns FW_ECORRUPT instead of 0.
 *      get_file and materialise write into private names first, so a corrupt
 *      blob never leaves a file at the destination.
 *   3. Corruption is reported, never repaired silently in the store: the
 *      caller decides to quarantine or remove (the cache, which owns its
 *      copies, removes and re-fetches).
 *
 * Trees. A directory artifact is stored as its files' blobs plus a manifest:
 *
 *   {"entries":{"config.json":{"digest":"sha256:..","mode":420,"size":811},
 *               "tok/vocab.json":{...}},"format":"flywheel-tree","version":1}
 *
 * serialised by jansson with sorted keys and no whitespace, so the same files
 * always give the same bytes and therefore the same digest. Modes are reduced
 * to 0644/0755 (what git keeps) so that umask does not change a digest. A
 * manifest read back is untrusted input: names are checked before any path
 * is built from them (no "..", no absolute paths, bounded depth).
 *
 * Uploads. A chunked upload is a writer that also checks offsets: the socket
 * layer passes each chunk with the offset the client claims, so a lost or
 * reordered chunk is refused at once instead of producing a blob that only
 * fails the final digest check. */
#include "fw_store.h"

#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Streaming buffer: 256 KiB, as fw_digest_file, big enough that syscalls
 * and hashing calls are not the cost, small enough for any stack-free use. */
#define S_BUF (256u << 10)

#define S_TREE_FORMAT  "flywheel-tree"
#define S_TREE_VERSION 1

struct fw_store {
    const fw_store_backend *be;
    void *impl;
    uint64_t max_blob;
};

struct fw_store_writer {
    fw_store *s;
    void *stage;
    fw_digest_ctx *ctx;
    uint64_t size;
    bool failed;
};

struct fw_store_reader {
    fw_store *s;
    void *rd;
    fw_digest_ctx *ctx;
    uint64_t size; /* what the backend reported at open */
    uint64_t off;
    bool done;
    char digest[FW_DIGEST_STR_SIZE];
};

struct fw_store_upload {
    fw_store_writer *w;
    uint64_t total;
    bool poisoned;
};

struct fw_store_cache {
    fw_store *local;
    char *dir;
    uint64_t max_bytes;
    bool verify_hits;
};

/* ---- Store ---------------------------------------------------------------- */

fw_store *fw_store_new(const fw_store_backend *be, void *impl, const fw_store_opts *opts) {
    fw_store *s = calloc(1, sizeof *s);
    if (!s) {
        if (be && be->destroy) be->destroy(impl);
        fw_err_set(FW_ENOMEM, "store: out of memory");
        return NULL;
    }
    s->be = be;
    s->impl = impl;
    s->max_blob = opts && opts->max_blob_bytes ? opts->max_blob_bytes : FW_STORE_DEFAULT_MAX_BLOB;
    return s;
}

void fw_store_destroy(fw_store **sp) {
    if (!sp || !*sp) return;
    fw_store *s = *sp;
    if (s->be->destroy) s->be->destroy(s->impl);
    free(s);
    *sp = NULL;
}

const char *fw_store_backend_name(const fw_store *s) {
    return s->be->name;
}

uint64_t fw_store_max_blob(const fw_store *s) {
    return s->max_blob;
}

/* Validate a digest argument; the detail says which call got it. */
static int s_check_digest(const char *what, const char *digest) {
    if (!digest) return fw_err_set(FW_EINVAL, "store: %s: no digest", what);
    if (fw_digest_parse(digest, NULL) != 0) {
        char detail[256];
        snprintf(detail, sizeof detail, "%s", fw_err_detail());
        return fw_err_set(FW_EINVAL, "store: %s: bad digest \"%.80s\": %s", what, digest, detail);
    }
    return 0;
}

/* ---- Writer --------------------------------------------------------------- */

/* The constructors return the error code too, so internal callers can pass
 * it on (the public ones return NULL + detail, czmq style). */
static int s_writer_new(fw_store *s, fw_store_writer **out) {
    *out = NULL;
    fw_store_writer *w = calloc(1, sizeof *w);
    if (!w) return fw_err_set(FW_ENOMEM, "store: out of memory");
    w->s = s;
    if (!(w->ctx = fw_digest_ctx_new())) {
        free(w);
        return FW_ENOMEM;
    }
    int rc = s->be->stage_open(s->impl, &w->stage);
    if (rc != 0) {
        fw_digest_ctx_destroy(&w->ctx);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

fw_store_writer *fw_store_writer_new(fw_store *s) {
    fw_store_writer *w;
    s_writer_new(s, &w);
    return w;
}

int fw_store_writer_write(fw_store_writer *w, const void *data, size_t len) {
    if (w->failed) return fw_err_set(FW_ESTATE, "store: write after a failed write");
    if (len > w->s->max_blob - w->size) {
        w->failed = true;
        return fw_err_set(FW_ETOOBIG, "store: blob exceeds the store's limit of %llu bytes",
                          (unsigned long long)w->s->max_blob);
    }
    int rc = fw_digest_ctx_update(w->ctx, data, len);
    if (rc == 0) rc = w->s->be->stage_write(w->stage, data, len);
    if (rc != 0) {
        w->failed = true;
        return rc;
    }
    w->size += len;
    return 0;
}

uint64_t fw_store_writer_size(const fw_store_writer *w) {
    return w->size;
}

void fw_store_writer_abort(fw_store_writer **wp) {
    if (!wp || !*wp) return;
    fw_store_writer *w = *wp;
    if (w->stage) w->s->be->stage_abort(w->s->impl, w->stage);
    fw_digest_ctx_destroy(&w->ctx);
    free(w);
    *wp = NULL;
}

int fw_store_writer_commit(fw_store_writer **wp, const char *expected, char *out_digest) {
    fw_store_writer *w = *wp;
    int rc;
    if (expected && (rc = s_check_digest("commit", expected)) != 0) goto fail;
    if (w->failed) {
        rc = fw_err_set(FW_ESTATE, "store: commit after a failed write");
        goto fail;
    }
    fw_digest d;
    char hex[FW_DIGEST_STR_SIZE];
    if ((rc = fw_digest_ctx_final(w->ctx, &d)) != 0) goto fail;
    fw_digest_format(&d, hex);
    if (expected && strcmp(expected, hex) != 0) {
        rc = fw_err_set(FW_ECORRUPT,
                        "store: content hashes to %s, not the expected %s (%llu bytes); "
                        "nothing stored",
                        hex, expected, (unsigned long long)w->size);
        goto fail;
    }
    void *stage = w->stage;
    w->stage = NULL; /* commit consumes it whatever the outcome */
    rc = w->s->be->stage_commit(w->s->impl, stage, hex, w->size);
    if (rc == 0 && out_digest) memcpy(out_digest, hex, FW_DIGEST_STR_SIZE);
    if (rc == 0) fw_debug("event=store-put digest=%s size=%llu", hex, (unsigned long long)w->size);
fail:
    fw_store_writer_abort(wp);
    return rc;
}

int fw_store_put_buffer(fw_store *s, const void *data, size_t len, char *out_digest) {
    fw_store_writer *w;
    int rc = s_writer_new(s, &w);
    if (rc != 0) return rc;
    rc = fw_store_writer_write(w, data, len);
    if (rc != 0) {
        fw_store_writer_abort(&w);
        return rc;
    }
    return fw_store_writer_commit(&w, NULL, out_digest);
}

int fw_store_put_file(fw_store *s, const char *path, char *out_digest) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return fw_err_set(e == ENOENT   ? FW_ENOTFOUND
                          : e == EACCES ? FW_EPERM
                                        : FW_EIO,
                          "store: open %s: %s", path, strerror(e));
    }
    char *buf = malloc(S_BUF);
    fw_store_writer *w = NULL;
    int rc =
        buf ? s_writer_new(s, &w) : fw_err_set(FW_ENOMEM, "store: put %s: out of memory", path);
    while (rc == 0) {
        ssize_t n = read(fd, buf, S_BUF);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = fw_err_set(FW_EIO, "store: read %s: %s", path, strerror(errno));
            break;
        }
        if (n == 0) break;
        rc = fw_store_writer_write(w, buf, (size_t)n);
        if (rc == FW_ETOOBIG)
            rc = fw_err_set(FW_ETOOBIG,
                            "store: put %s: larger than the store's limit of %llu "
                            "bytes",
                            path, (unsigned long long)s->max_blob);
    }
    close(fd);
    free(buf);
    if (rc != 0) {
        fw_store_writer_abort(&w);
        return rc;
    }
    return fw_store_writer_commit(&w, NULL, out_digest);
}

/* ---- Reader --------------------------------------------------------------- */

static int s_reader_open(fw_store *s, const char *digest, fw_store_reader **out) {
    *out = NULL;
    int rc = s_check_digest("read", digest);
    if (rc != 0) return rc;
    fw_store_reader *r = calloc(1, sizeof *r);
    if (!r) return fw_err_set(FW_ENOMEM, "store: out of memory");
    r->s = s;
    memcpy(r->digest, digest, FW_DIGEST_STR_SIZE);
    if (!(r->ctx = fw_digest_ctx_new()))
        rc = FW_ENOMEM;
    else
        rc = s->be->open_read(s->impl, digest, &r->rd, &r->size);
    if (rc != 0) {
        fw_digest_ctx_destroy(&r->ctx);
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

fw_store_reader *fw_store_reader_open(fw_store *s, const char *digest) {
    fw_store_reader *r;
    s_reader_open(s, digest, &r);
    return r;
}

/* The end of the blob: compare what was read with its name. */
static int s_reader_finish(fw_store_reader *r) {
    fw_digest d;
    char hex[FW_DIGEST_STR_SIZE];
    int rc = fw_digest_ctx_final(r->ctx, &d);
    if (rc != 0) return rc;
    fw_digest_format(&d, hex);
    if (strcmp(hex, r->digest) == 0 && r->off == r->size) return 0;
    char where[4096];
    r->s->be->describe(r->s->impl, r->digest, where, sizeof where);
    fw_warn("event=store-corrupt digest=%s path=%s actual=%s bytes=%llu", r->digest, where, hex,
            (unsigned long long)r->off);
    return fw_err_set(FW_ECORRUPT,
                      "store: blob %s at %s is corrupt: its %llu bytes (%llu when opened) hash "
                      "to %s; quarantine or remove it and fetch it again",
                      r->digest, where, (unsigned long long)r->off, (unsigned long long)r->size,
                      hex);
}

long long fw_store_reader_read(fw_store_reader *r, void *buf, size_t len) {
    if (r->done) return 0;
    if (len == 0) return 0;
    size_t got = 0;
    int rc = r->s->be->read_at(r->rd, r->off, buf, len, &got);
    if (rc != 0) return rc;
    if (got == 0) {
        r->done = true;
        return s_reader_finish(r);
    }
    if ((rc = fw_digest_ctx_update(r->ctx, buf, got)) != 0) return rc;
    r->off += got;
    return (long long)got;
}

uint64_t fw_store_reader_size(const fw_store_reader *r) {
    return r->size;
}

void fw_store_reader_close(fw_store_reader **rp) {
    if (!rp || !*rp) return;
    fw_store_reader *r = *rp;
    if (r->rd) r->s->be->close_read(r->rd);
    fw_digest_ctx_destroy(&r->ctx);
    free(r);
    *rp = NULL;
}

/* Stream a verified blob into fd (or nowhere when fd < 0). */
static int s_stream_to_fd(fw_store *s, const char *digest, int fd, const char *path) {
    fw_store_reader *r;
    int rc = s_reader_open(s, digest, &r);
    if (rc != 0) return rc;
    char *buf = malloc(S_BUF);
    if (!buf) rc = fw_err_set(FW_ENOMEM, "store: out of memory");
    while (rc == 0) {
        long long n = fw_store_reader_read(r, buf, S_BUF);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (n == 0) break;
        for (const char *p = buf; fd >= 0 && n > 0;) {
            ssize_t w = write(fd, p, (size_t)n);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                rc = fw_err_set(FW_EIO, "store: write %s: %s", path, strerror(errno));
                break;
            }
            p += w;
            n -= w;
        }
    }
    free(buf);
    fw_store_reader_close(&r);
    return rc;
}

int fw_store_get_file(fw_store *s, const char *digest, const char *path) {
    int rc = s_check_digest("get", digest);
    if (rc != 0) return rc;
    fw_file_atomic *w = fw_file_atomic_open(path, 0644);
    if (!w) return FW_EIO;
    rc = s_stream_to_fd(s, digest, fw_file_atomic_fd(w), path);
    if (rc != 0) {
        fw_file_atomic_abort(&w);
        return rc;
    }
    return fw_file_atomic_commit(&w);
}

int fw_store_verify(fw_store *s, const char *digest) {
    int rc = s_check_digest("verify", digest);
    return rc ? rc : s_stream_to_fd(s, digest, -1, NULL);
}

int fw_store_get_buffer(fw_store *s, const char *digest, size_t max, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    fw_store_reader *r;
    int rc = s_reader_open(s, digest, &r);
    if (rc != 0) return rc;
    if (r->size > max) {
        uint64_t size = r->size;
        fw_store_reader_close(&r);
        return fw_err_set(FW_ETOOBIG, "store: blob %s is %llu bytes, more than %zu", digest,
                          (unsigned long long)size, max);
    }
    /* The buffer holds the size the backend reported plus the NUL. A blob
     * that grew since it was opened cannot match its digest: reading one
     * byte past the size into a scratch byte lets the reader say so. */
    size_t cap = (size_t)r->size, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) rc = fw_err_set(FW_ENOMEM, "store: out of memory");
    while (rc == 0) {
        char extra;
        long long got = n < cap ? fw_store_reader_read(r, buf + n, cap - n)
                                : fw_store_reader_read(r, &extra, 1);
        if (got < 0)
            rc = (int)got;
        else if (got == 0)
            break;
        else if (n < cap)
            n += (size_t)got;
    }
    fw_store_reader_close(&r);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return 0;
}

/* ---- Metadata --------------------------------------------------------------- */

int fw_store_stat_blob(fw_store *s, const char *digest, fw_store_stat *st) {
    int rc = s_check_digest("stat", digest);
    return rc ? rc : s->be->stat(s->impl, digest, st);
}

bool fw_store_exists(fw_store *s, const char *digest) {
    fw_store_stat st;
    return fw_digest_valid(digest) && s->be->stat(s->impl, digest, &st) == 0;
}

int fw_store_list(fw_store *s, fw_store_list_fn fn, void *ctx) {
    return s->be->list(s->impl, fn, ctx);
}

int fw_store_remove(fw_store *s, const char *digest) {
    int rc = s_check_digest("remove", digest);
    if (rc == 0 && (rc = s->be->remove(s->impl, digest)) == 0)
        fw_info("event=store-remove digest=%s", digest);
    return rc;
}

int fw_store_quarantine(fw_store *s, const char *digest) {
    int rc = s_check_digest("quarantine", digest);
    if (rc != 0) return rc;
    if (!s->be->quarantine)
        return fw_err_set(FW_EUNSUPPORTED, "store: backend %s cannot quarantine", s->be->name);
    return s->be->quarantine(s->impl, digest);
}

int fw_store_local_path(fw_store *s, const char *digest, char *buf, size_t size) {
    int rc = s_check_digest("local path", digest);
    if (rc != 0) return rc;
    if (!s->be->local_path)
        return fw_err_set(FW_EUNSUPPORTED, "store: backend %s has no local paths", s->be->name);
    return s->be->local_path(s->impl, digest, buf, size);
}

int fw_store_copy(fw_store *dst, fw_store *src, const char *digest) {
    int rc = s_check_digest("copy", digest);
    if (rc != 0) return rc;
    if (fw_store_exists(dst, digest)) return 0;
    fw_store_reader *r;
    if ((rc = s_reader_open(src, digest, &r)) != 0) return rc;
    fw_store_writer *w = NULL;
    char *buf = malloc(S_BUF);
    if (!buf)
        rc = fw_err_set(FW_ENOMEM, "store: out of memory");
    else
        rc = s_writer_new(dst, &w);
    while (rc == 0) {
        long long n = fw_store_reader_read(r, buf, S_BUF);
        if (n < 0)
            rc = (int)n;
        else if (n == 0)
            break;
        else
            rc = fw_store_writer_write(w, buf, (size_t)n);
    }
    free(buf);
    fw_store_reader_close(&r);
    if (rc != 0) {
        fw_store_writer_abort(&w);
        return rc;
    }
    return fw_store_writer_commit(&w, digest, NULL);
}

/* ---- Chunked transfers ------------------------------------------------------ */

fw_store_upload *fw_store_upload_begin(fw_store *s, uint64_t total_size) {
    if (total_size > s->max_blob) {
        fw_err_set(FW_ETOOBIG, "store: upload of %llu bytes exceeds the store's limit of %llu",
                   (unsigned long long)total_size, (unsigned long long)s->max_blob);
        return NULL;
    }
    fw_store_upload *u = calloc(1, sizeof *u);
    if (!u) {
        fw_err_set(FW_ENOMEM, "store: out of memory");
        return NULL;
    }
    if (s_writer_new(s, &u->w) != 0) {
        free(u);
        return NULL;
    }
    u->total = total_size;
    return u;
}

int fw_store_upload_chunk(fw_store_upload *u, uint64_t offset, const void *data, size_t len) {
    if (u->poisoned) return fw_err_set(FW_ESTATE, "store: upload already failed; abort it");
    uint64_t have = u->w->size;
    if (offset != have) {
        u->poisoned = true;
        return fw_err_set(FW_EPROTO,
                          "store: upload chunk at offset %llu but %llu bytes received "
                          "so far (%s)",
                          (unsigned long long)offset, (unsigned long long)have,
                          offset > have ? "gap" : "overlap");
    }
    if (u->total && len > u->total - have) {
        u->poisoned = true;
        return fw_err_set(FW_EPROTO,
                          "store: upload chunk of %zu bytes at %llu runs past the "
                          "declared size %llu",
                          len, (unsigned long long)offset, (unsigned long long)u->total);
    }
    int rc = fw_store_writer_write(u->w, data, len);
    if (rc != 0) u->poisoned = true;
    return rc;
}

uint64_t fw_store_upload_received(const fw_store_upload *u) {
    return u->w->size;
}

void fw_store_upload_abort(fw_store_upload **up) {
    if (!up || !*up) return;
    fw_store_writer_abort(&(*up)->w);
    free(*up);
    *up = NULL;
}

int fw_store_upload_commit(fw_store_upload **up, const char *expected_digest) {
    fw_store_upload *u = *up;
    int rc = expected_digest
                 ? s_check_digest("upload commit", expected_digest)
                 : fw_err_set(FW_EINVAL, "store: upload commit needs the client's digest");
    if (rc == 0 && u->poisoned)
        rc = fw_err_set(FW_ESTATE, "store: upload already failed; abort it");
    if (rc == 0 && u->total && u->w->size != u->total)
        rc = fw_err_set(FW_EPROTO, "store: upload ended at %llu bytes of a declared %llu",
                        (unsigned long long)u->w->size, (unsigned long long)u->total);
    if (rc == 0) {
        rc = fw_store_writer_commit(&u->w, expected_digest, NULL);
        if (rc == 0) fw_info("event=store-upload digest=%s", expected_digest);
    }
    fw_store_upload_abort(up);
    return rc;
}

int fw_store_read_chunk(fw_store *s, const char *digest, uint64_t offset, void *buf, size_t max,
                        size_t *got, uint64_t *size) {
    *got = 0;
    int rc = s_check_digest("read chunk", digest);
    if (rc != 0) return rc;
    void *rd;
    uint64_t sz;
    if ((rc = s->be->open_read(s->impl, digest, &rd, &sz)) != 0) return rc;
    if (size) *size = sz;
    if (offset > sz) {
        s->be->close_read(rd);
        return fw_err_set(FW_EINVAL, "store: read chunk of %s at offset %llu past its end (%llu)",
                          digest, (unsigned long long)offset, (unsigned long long)sz);
    }
    size_t n = 0;
    while (n < max) {
        size_t g = 0;
        if ((rc = s->be->read_at(rd, offset + n, (char *)buf + n, max - n, &g)) != 0) break;
        if (g == 0) break;
        n += g;
    }
    s->be->close_read(rd);
    if (rc == 0) *got = n;
    return rc;
}

/* ---- Trees -------------------------------------------------------------------- */

/* A name from a manifest is safe to join under a directory: relative, no
 * empty, "." or ".." component, bounded depth. */
static bool s_name_safe(const char *name) {
    size_t len = strlen(name);
    if (len == 0 || len > 4000 || name[0] == '/' || name[len - 1] == '/') return false;
    int depth = 0;
    for (const char *p = name; *p;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (n > 255 || ++depth > FW_STORE_TREE_MAX_DEPTH) return false;
        p += n + (slash ? 1 : 0);
    }
    return true;
}

static int s_walk(fw_store *s, const char *top, const char *rel, int depth, json_t *entries) {
    char path[8192];
    snprintf(path, sizeof path, "%s%s%s", top, *rel ? "/" : "", rel);
    if (depth > FW_STORE_TREE_MAX_DEPTH)
        return fw_err_set(FW_ETOOBIG, "store: tree %s: deeper than %d levels at %s", top,
                          FW_STORE_TREE_MAX_DEPTH, rel);
    DIR *dir = opendir(path);
    if (!dir)
        return fw_err_set(errno == ENOENT ? FW_ENOTFOUND : FW_EIO, "store: opendir %s: %s", path,
                          strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(dir)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char crel[4096], cpath[8192];
        if (snprintf(crel, sizeof crel, "%s%s%s", rel, *rel ? "/" : "", e->d_name) >=
            (int)sizeof crel) {
            rc = fw_err_set(FW_ETOOBIG, "store: tree %s: name too long under %s", top, rel);
            break;
        }
        snprintf(cpath, sizeof cpath, "%s/%s", top, crel);
        struct stat sb;
        if (lstat(cpath, &sb) != 0) {
            rc = fw_err_set(FW_EIO, "store: lstat %s: %s", cpath, strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            rc = s_walk(s, top, crel, depth + 1, entries);
        } else if (!S_ISREG(sb.st_mode)) {
            rc = fw_err_set(FW_EUNSUPPORTED, "store: tree %s: %s is %s, not a regular file", top,
                            crel, S_ISLNK(sb.st_mode) ? "a symbolic link" : "a special file");
        } else if (json_object_size(entries) >= FW_STORE_TREE_MAX_ENTRIES) {
            rc = fw_err_set(FW_ETOOBIG, "store: tree %s: more than %d files", top,
                            FW_STORE_TREE_MAX_ENTRIES);
        } else {
            char d[FW_DIGEST_STR_SIZE];
            if ((rc = fw_store_put_file(s, cpath, d)) != 0) break;
            /* The size of what was stored, not of the lstat above: a file
             * rewritten meanwhile must not give a manifest that contradicts
             * its own blob. */
            fw_store_stat bst;
            if ((rc = fw_store_stat_blob(s, d, &bst)) != 0) break;
            unsigned mode = (sb.st_mode & 0111) ? 0755 : 0644;
            json_t *ent = json_pack("{s:s, s:I, s:i}", "digest", d, "size", (json_int_t)bst.size,
                                    "mode", (int)mode);
            if (!ent || json_object_set_new(entries, crel, ent) != 0)
                rc = fw_err_set(FW_EINVAL, "store: tree %s: cannot record %s (name not UTF-8?)",
                                top, crel);
        }
    }
    closedir(dir);
    return rc;
}

int fw_store_put_tree(fw_store *s, const char *dir, char *out_digest) {
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return fw_err_set(FW_ENOTFOUND, "store: put tree: %s is not a directory", dir);
    json_t *entries = json_object();
    if (!entries) return fw_err_set(FW_ENOMEM, "store: out of memory");
    int rc = s_walk(s, dir, "", 0, entries);
    if (rc != 0) {
        json_decref(entries);
        return rc;
    }
    size_t nfiles = json_object_size(entries);
    json_t *root = json_pack("{s:o, s:s, s:i}", "entries", entries, "format", S_TREE_FORMAT,
                             "version", S_TREE_VERSION);
    char *text = root ? json_dumps(root, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    json_decref(root);
    if (!text) return fw_err_set(FW_ENOMEM, "store: put tree %s: cannot serialise manifest", dir);
    rc = fw_store_put_buffer(s, text, strlen(text), out_digest);
    free(text);
    if (rc == 0)
        fw_info("event=store-put-tree dir=%s files=%zu digest=%s", dir, nfiles, out_digest);
    return rc;
}

typedef struct {
    char *name;
    char digest[FW_DIGEST_STR_SIZE];
    uint64_t size;
    unsigned mode;
} s_entry;

static int s_entry_cmp(const void *a, const void *b) {
    return strcmp(((const s_entry *)a)->name, ((const s_entry *)b)->name);
}

static void s_entries_free(s_entry *v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i].name);
    free(v);
}

/* Load and check a manifest; *out sorted by name. */
static int s_tree_load(fw_store *s, const char *digest, s_entry **out, size_t *count) {
    *out = NULL;
    *count = 0;
    char *text;
    size_t len;
    int rc = fw_store_get_buffer(s, digest, FW_STORE_TREE_MAX_MANIFEST, &text, &len);
    if (rc != 0) return rc;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return fw_err_set(FW_ECORRUPT, "store: %s is not a tree manifest: %s", digest, jerr.text);
    const char *format = json_string_value(json_object_get(root, "format"));
    json_t *ver = json_object_get(root, "version");
    json_t *entries = json_object_get(root, "entries");
    if (!format || strcmp(format, S_TREE_FORMAT) != 0 || !json_is_object(entries)) {
        json_decref(root);
        return fw_err_set(FW_ECORRUPT, "store: %s is not a tree manifest (format \"%s\")", digest,
                          format ? format : "");
    }
    if (json_integer_value(ver) != S_TREE_VERSION) {
        json_decref(root);
        return fw_err_set(FW_EVERSION,
                          "store: tree manifest %s has version %lld, this build "
                          "reads %d",
                          digest, (long long)json_integer_value(ver), S_TREE_VERSION);
    }
    size_t n = json_object_size(entries);
    if (n > FW_STORE_TREE_MAX_ENTRIES) {
        json_decref(root);
        return fw_err_set(FW_ETOOBIG, "store: tree manifest %s lists %zu files", digest, n);
    }
    s_entry *v = calloc(n ? n : 1, sizeof *v);
    if (!v) {
        json_decref(root);
        return fw_err_set(FW_ENOMEM, "store: out of memory");
    }
    size_t i = 0;
    const char *key;
    json_t *ent;
    json_object_foreach(entries, key, ent) {
        const char *d = json_string_value(json_object_get(ent, "digest"));
        json_t *size = json_object_get(ent, "size"), *mode = json_object_get(ent, "mode");
        json_int_t m = json_integer_value(mode);
        if (!s_name_safe(key) || !d || !fw_digest_valid(d) || !json_is_integer(size) ||
            json_integer_value(size) < 0 || !json_is_integer(mode) || (m != 0644 && m != 0755)) {
            rc = fw_err_set(FW_ECORRUPT, "store: tree manifest %s: bad entry \"%.200s\"", digest,
                            key);
            break;
        }
        if (!(v[i].name = strdup(key))) {
            rc = fw_err_set(FW_ENOMEM, "store: out of memory");
            break;
        }
        memcpy(v[i].digest, d, FW_DIGEST_STR_SIZE);
        v[i].size = (uint64_t)json_integer_value(size);
        v[i].mode = (unsigned)m;
        i++;
    }
    json_decref(root);
    if (rc != 0) {
        s_entries_free(v, i);
        return rc;
    }
    qsort(v, i, sizeof *v, s_entry_cmp);
    *out = v;
    *count = i;
    return 0;
}

int fw_store_tree_foreach(fw_store *s, const char *tree_digest, fw_store_tree_fn fn, void *ctx) {
    int rc = s_check_digest("tree", tree_digest);
    if (rc != 0) return rc;
    s_entry *v;
    size_t n;
    if ((rc = s_tree_load(s, tree_digest, &v, &n)) != 0) return rc;
    for (size_t i = 0; i < n; i++)
        if (fn(v[i].name, v[i].digest, v[i].size, v[i].mode, ctx) != 0) break;
    s_entries_free(v, n);
    return 0;
}

/* fsync every directory below (and including) path, children first, so the
 * whole materialised tree is durable before its rename publishes it. */
static int s_fsync_dirs(const char *path, int depth) {
    if (depth > FW_STORE_TREE_MAX_DEPTH + 1) return 0;
    DIR *dir = opendir(path);
    if (!dir) return fw_err_set(FW_EIO, "store: opendir %s: %s", path, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(dir)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char child[8192];
        snprintf(child, sizeof child, "%s/%s", path, e->d_name);
        struct stat sb;
        if (lstat(child, &sb) == 0 && S_ISDIR(sb.st_mode)) rc = s_fsync_dirs(child, depth + 1);
    }
    closedir(dir);
    return rc ? rc : fw_file_fsync_dir(path);
}

/* Write one verified entry at path (inside the private temporary tree). */
static int s_materialise_file(fw_store *s, const s_entry *e, const char *path) {
    char *slash = strrchr(path, '/');
    if (slash) {
        *slash = '\0';
        int rc = fw_file_mkdirs(path, 0755);
        *slash = '/';
        if (rc != 0) return rc;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return fw_err_set(FW_EIO, "store: create %s: %s", path, strerror(errno));
    int rc = s_stream_to_fd(s, e->digest, fd, path);
    struct stat sb;
    if (rc == 0 && (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != e->size))
        rc = fw_err_set(FW_ECORRUPT,
                        "store: tree entry %s: blob %s is not the %llu bytes the "
                        "manifest says",
                        e->name, e->digest, (unsigned long long)e->size);
    /* fchmod ignores the umask, so the mode is exactly the manifest's. */
    if (rc == 0 && fchmod(fd, e->mode) != 0)
        rc = fw_err_set(FW_EIO, "store: chmod %s: %s", path, strerror(errno));
    if (rc == 0 && fsync(fd) != 0)
        rc = fw_err_set(FW_EIO, "store: fsync %s: %s", path, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = fw_err_set(FW_EIO, "store: close %s: %s", path, strerror(errno));
    return rc;
}

int fw_store_materialise_tree(fw_store *s, const char *tree_digest, const char *dest) {
    static unsigned counter; /* distinguishes temporaries of one process's threads */
    int rc = s_check_digest("materialise", tree_digest);
    if (rc != 0) return rc;
    struct stat sb;
    if (lstat(dest, &sb) == 0)
        return fw_err_set(FW_EEXIST, "store: materialise %s: %s already exists", tree_digest, dest);
    s_entry *v;
    size_t n;
    if ((rc = s_tree_load(s, tree_digest, &v, &n)) != 0) return rc;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%d-%u", dest, (int)getpid(),
                 __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED)) >= (int)sizeof tmp) {
        s_entries_free(v, n);
        return fw_err_set(FW_EINVAL, "store: materialise: destination path too long");
    }
    if (mkdir(tmp, 0755) != 0) {
        s_entries_free(v, n);
        return fw_err_set(FW_EIO, "store: mkdir %s: %s", tmp, strerror(errno));
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", tmp, v[i].name);
        rc = s_materialise_file(s, &v[i], path);
    }
    if (rc == 0) rc = s_fsync_dirs(tmp, 0);
    if (rc == 0 && rename(tmp, dest) != 0)
        rc = fw_err_set(errno == EEXIST || errno == ENOTEMPTY ? FW_EEXIST : FW_EIO,
                        "store: rename %s to %s: %s", tmp, dest, strerror(errno));
    if (rc == 0) {
        char *parent = strdup(dest), *slash = parent ? strrchr(parent, '/') : NULL;
        if (slash) *slash = '\0';
        rc = parent ? fw_file_fsync_dir(slash ? (*parent ? parent : "/") : ".")
                    : fw_err_set(FW_ENOMEM, "store: out of memory");
        free(parent);
        if (rc == 0)
            fw_info("event=store-materialise digest=%s dest=%s files=%zu", tree_digest, dest, n);
    } else {
        /* Keep the first error's detail: the cleanup may set its own. */
        char detail[1024];
        snprintf(detail, sizeof detail, "%s", fw_err_detail());
        fw_file_remove_tree(tmp);
        fw_err_set(rc, "%s", detail);
    }
    s_entries_free(v, n);
    return rc;
}

/* ---- Cache ---------------------------------------------------------------------- */

fw_store_cache *fw_store_cache_new(const char *dir, uint64_t max_bytes, bool verify_hits) {
    fw_store_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(dir))) {
        free(c);
        fw_err_set(FW_ENOMEM, "store: out of memory");
        return NULL;
    }
    if (!(c->local = fw_store_open_dir(dir, NULL))) {
        free(c->dir);
        free(c);
        return NULL;
    }
    c->max_bytes = max_bytes;
    c->verify_hits = verify_hits;
    return c;
}

void fw_store_cache_destroy(fw_store_cache **cp) {
    if (!cp || !*cp) return;
    fw_store_destroy(&(*cp)->local);
    free((*cp)->dir);
    free(*cp);
    *cp = NULL;
}

fw_store *fw_store_cache_store(fw_store_cache *c) {
    return c->local;
}

typedef struct {
    char digest[FW_DIGEST_STR_SIZE];
    uint64_t size;
    int64_t mtime_ns;
} s_cached;

typedef struct {
    s_cached *v;
    size_t n, cap;
    uint64_t total;
} s_cached_list;

static int s_collect(const char *digest, const fw_store_stat *st, void *ctx) {
    s_cached_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        s_cached *v = realloc(l->v, cap * sizeof *v);
        if (!v) return 1;
        l->v = v;
        l->cap = cap;
    }
    memcpy(l->v[l->n].digest, digest, FW_DIGEST_STR_SIZE);
    l->v[l->n].size = st->size;
    l->v[l->n].mtime_ns = st->mtime_ns;
    l->n++;
    l->total += st->size;
    return 0;
}

static int s_cached_cmp(const void *a, const void *b) {
    const s_cached *x = a, *y = b;
    if (x->mtime_ns != y->mtime_ns) return x->mtime_ns < y->mtime_ns ? -1 : 1;
    return strcmp(x->digest, y->digest);
}

int fw_store_cache_usage(fw_store_cache *c, uint64_t *bytes, int *blobs) {
    s_cached_list l = {0};
    int rc = fw_store_list(c->local, s_collect, &l);
    free(l.v);
    if (bytes) *bytes = l.total;
    if (blobs) *blobs = (int)l.n;
    return rc;
}

int fw_store_cache_trim(fw_store_cache *c, const char *keep, int *evicted) {
    if (evicted) *evicted = 0;
    if (c->max_bytes == 0) return 0;
    s_cached_list l = {0};
    int rc = fw_store_list(c->local, s_collect, &l);
    if (rc == 0 && l.total > c->max_bytes) {
        qsort(l.v, l.n, sizeof *l.v, s_cached_cmp);
        for (size_t i = 0; i < l.n && l.total > c->max_bytes; i++) {
            if (keep && strcmp(keep, l.v[i].digest) == 0) continue;
            if (c->local->be->remove(c->local->impl, l.v[i].digest) != 0) continue;
            l.total -= l.v[i].size;
            if (evicted) (*evicted)++;
            fw_info("event=store-cache-evict digest=%s size=%llu dir=%s", l.v[i].digest,
                    (unsigned long long)l.v[i].size, c->dir);
        }
    }
    free(l.v);
    return rc;
}

int fw_store_cache_get(fw_store_cache *c, fw_store *remote, const char *digest, char **local_path) {
    *local_path = NULL;
    int rc = s_check_digest("cache get", digest);
    if (rc != 0) return rc;
    char path[4096];
    if ((rc = fw_store_local_path(c->local, digest, path, sizeof path)) != 0) return rc;
    bool hit = fw_store_exists(c->local, digest);
    if (hit && c->verify_hits) {
        rc = fw_store_verify(c->local, digest);
        if (rc == FW_ECORRUPT) {
            /* Our own copy: drop it and fetch a good one. */
            fw_warn("event=store-cache-refetch digest=%s path=%s", digest, path);
            if ((rc = fw_store_remove(c->local, digest)) != 0 && rc != FW_ENOTFOUND) return rc;
            hit = false;
        } else if (rc != 0) {
            return rc;
        }
    }
    if (!hit) {
        fw_store_stat st;
        if ((rc = fw_store_stat_blob(remote, digest, &st)) != 0) return rc;
        if (c->max_bytes && st.size > c->max_bytes)
            return fw_err_set(FW_ETOOBIG,
                              "store: blob %s (%llu bytes) is larger than the whole "
                              "cache %s (%llu bytes)",
                              digest, (unsigned long long)st.size, c->dir,
                              (unsigned long long)c->max_bytes);
        if ((rc = fw_store_copy(c->local, remote, digest)) != 0) return rc;
        fw_info("event=store-cache-fetch digest=%s size=%llu", digest, (unsigned long long)st.size);
    }
    if (c->local->be->touch) c->local->be->touch(c->local->impl, digest);
    if (!hit && (rc = fw_store_cache_trim(c, digest, NULL)) != 0) return rc;
    if (!(*local_path = strdup(path))) return fw_err_set(FW_ENOMEM, "store: out of memory");
    return 0;
}
