/* fw_store_dir.c - the directory backend of the artifact store (fw_store.h).
 *
 * Theory of operation. The store is a directory that every coordinator and
 * agent can reach (a local path on one machine, NFS or another shared file
 * system across machines):
 *
 *   <root>/blobs/sha256/<first 2 hex>/<64 hex>   one file per blob, mode 0444
 *   <root>/tmp/put-XXXXXX                        blobs being written
 *   <root>/quarantine/<64 hex>.<time>.<pid>      corrupt blobs moved aside
 *
 * The 256-way fan-out keeps directories small enough for NFS listings even
 * with hundreds of thousands of blobs.
 *
 * A put streams into a private mkstemp file under tmp/ (unique per writer, so
 * any number of processes may put at once, unlike fw_file's fixed ".new"
 * name), fsyncs it, renames it to its final name and fsyncs the fan-out
 * directory. tmp/ sits inside the root so the rename never crosses a file
 * system. Invariants:
 *   1. A file under blobs/ is complete and durable when its name appears:
 *      names are only created by rename(2) after fsync.
 *   2. Two writers of the same content race harmlessly: both renames install
 *      identical bytes, and a writer that finds the blob already present
 *      (same size) drops its copy instead of rewriting it.
 *   3. Nothing here hashes: the layer above computes and checks digests; a
 *      blob damaged on disk after the fact is caught by that check on read.
 * Removals are not followed by a directory fsync: a removed blob coming back
 * after a crash is still a correct blob. Leftover tmp/ files are debris of
 * crashed writers; fw_store_dir_sweep_tmp removes old ones. */
#include "fw_store.h"

#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    char *root;
    char *blobs; /* <root>/blobs/sha256 */
    char *tmp;   /* <root>/tmp */
    char *quarantine;
} s_dir;

typedef struct {
    int fd;
    char *path;
} s_stage;

typedef struct {
    int fd;
} s_reader;

static int s_fail(const char *call, const char *path, int e) {
    return fw_err_set(fw_err_from_errno(e), "store: %s %s: %s", call, path, strerror(e));
}

/* "<blobs>/<2 hex>/<64 hex>" of a validated "sha256:<hex>" digest. */
static void s_blob_path(const s_dir *d, const char *digest, char *buf, size_t size) {
    const char *hex = digest + strlen(FW_DIGEST_PREFIX);
    snprintf(buf, size, "%s/%.2s/%s", d->blobs, hex, hex);
}

static int s_stage_open(void *impl, void **stagep) {
    s_dir *d = impl;
    s_stage *st = calloc(1, sizeof *st);
    if (!st) return fw_err_set(FW_ENOMEM, "store: staging a blob: out of memory");
    if (asprintf(&st->path, "%s/put-XXXXXX", d->tmp) < 0) {
        free(st);
        return fw_err_set(FW_ENOMEM, "store: staging a blob: out of memory");
    }
    st->fd = mkstemp(st->path);
    if (st->fd < 0) {
        int rc = s_fail("mkstemp", st->path, errno);
        free(st->path);
        free(st);
        return rc;
    }
    *stagep = st;
    return 0;
}

static int s_stage_write(void *stage, const void *data, size_t len) {
    s_stage *st = stage;
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(st->fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return s_fail("write", st->path, errno);
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void s_stage_free(s_stage *st, bool unlink_it) {
    if (st->fd >= 0) close(st->fd);
    if (unlink_it) unlink(st->path);
    free(st->path);
    free(st);
}

static void s_stage_abort(void *impl, void *stage) {
    (void)impl;
    if (stage) s_stage_free(stage, true);
}

static int s_stage_commit(void *impl, void *stage, const char *digest, uint64_t size) {
    s_dir *d = impl;
    s_stage *st = stage;
    char final[4096], fan[4096];
    s_blob_path(d, digest, final, sizeof final);
    snprintf(fan, sizeof fan, "%s/%.2s", d->blobs, digest + strlen(FW_DIGEST_PREFIX));

    /* Idempotent put: a blob of the right size is already there. A blob of the
     * wrong size is certainly damaged, so the fresh copy replaces it. */
    struct stat sb;
    if (stat(final, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size == size) {
        s_stage_free(st, true);
        return 0;
    }
    int rc;
    /* Blobs are read-only so that a stray writer cannot change one in place. */
    if (fchmod(st->fd, 0444) != 0) {
        rc = s_fail("fchmod", st->path, errno);
        goto fail;
    }
    if (fsync(st->fd) != 0) {
        rc = s_fail("fsync", st->path, errno);
        goto fail;
    }
    if (close(st->fd) != 0) {
        st->fd = -1;
        rc = s_fail("close", st->path, errno);
        goto fail;
    }
    st->fd = -1;
    if (mkdir(fan, 0755) == 0) {
        /* A new fan-out directory must itself survive a crash. */
        if ((rc = fw_file_fsync_dir(d->blobs)) != 0) goto fail;
    } else if (errno != EEXIST) {
        rc = s_fail("mkdir", fan, errno);
        goto fail;
    }
    if (rename(st->path, final) != 0) {
        rc = s_fail("rename", final, errno);
        goto fail;
    }
    s_stage_free(st, false);
    return fw_file_fsync_dir(fan);
fail:
    s_stage_free(st, true);
    return rc;
}

static int s_open_read(void *impl, const char *digest, void **readerp, uint64_t *size) {
    s_dir *d = impl;
    char path[4096];
    s_blob_path(d, digest, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return fw_err_set(FW_ENOTFOUND, "store: blob %s not found in %s", digest, d->root);
        return s_fail("open", path, errno);
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int rc = s_fail("fstat", path, errno);
        close(fd);
        return rc;
    }
    s_reader *r = malloc(sizeof *r);
    if (!r) {
        close(fd);
        return fw_err_set(FW_ENOMEM, "store: opening %s: out of memory", path);
    }
    r->fd = fd;
    *readerp = r;
    *size = (uint64_t)sb.st_size;
    return 0;
}

static int s_read_at(void *reader, uint64_t offset, void *buf, size_t len, size_t *got) {
    s_reader *r = reader;
    for (;;) {
        ssize_t n = pread(r->fd, buf, len, (off_t)offset);
        if (n >= 0) {
            *got = (size_t)n;
            return 0;
        }
        if (errno != EINTR)
            return fw_err_set(fw_err_from_errno(errno), "store: read at offset %llu: %s",
                              (unsigned long long)offset, strerror(errno));
    }
}

static void s_close_read(void *reader) {
    s_reader *r = reader;
    if (!r) return;
    close(r->fd);
    free(r);
}

static int s_stat(void *impl, const char *digest, fw_store_stat *out) {
    s_dir *d = impl;
    char path[4096];
    s_blob_path(d, digest, path, sizeof path);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT)
            return fw_err_set(FW_ENOTFOUND, "store: blob %s not found in %s", digest, d->root);
        return s_fail("stat", path, errno);
    }
    out->size = (uint64_t)sb.st_size;
    out->mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    return 0;
}

static bool s_is_hex(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return s[n] == '\0';
}

static int s_list(void *impl, fw_store_list_fn fn, void *ctx) {
    s_dir *d = impl;
    DIR *top = opendir(d->blobs);
    if (!top) return s_fail("opendir", d->blobs, errno);
    int rc = 0;
    bool stop = false;
    struct dirent *fe;
    while (!stop && rc == 0 && (fe = readdir(top)) != NULL) {
        if (!s_is_hex(fe->d_name, 2)) continue;
        char fan[4096];
        snprintf(fan, sizeof fan, "%s/%s", d->blobs, fe->d_name);
        DIR *sub = opendir(fan);
        if (!sub) {
            if (errno == ENOENT || errno == ENOTDIR) continue;
            rc = s_fail("opendir", fan, errno);
            break;
        }
        struct dirent *be;
        while ((be = readdir(sub)) != NULL) {
            /* Only well-formed names in the right fan-out directory are blobs. */
            if (!s_is_hex(be->d_name, 2 * FW_DIGEST_SIZE)) continue;
            if (strncmp(be->d_name, fe->d_name, 2) != 0) continue;
            char digest[FW_DIGEST_STR_SIZE];
            memcpy(digest, FW_DIGEST_PREFIX, strlen(FW_DIGEST_PREFIX));
            memcpy(digest + strlen(FW_DIGEST_PREFIX), be->d_name, 2 * FW_DIGEST_SIZE + 1);
            fw_store_stat st;
            if (s_stat(d, digest, &st) != 0) continue; /* removed meanwhile */
            if (fn(digest, &st, ctx) != 0) {
                stop = true;
                break;
            }
        }
        closedir(sub);
    }
    closedir(top);
    return rc;
}

static int s_remove(void *impl, const char *digest) {
    s_dir *d = impl;
    char path[4096];
    s_blob_path(d, digest, path, sizeof path);
    if (unlink(path) != 0) {
        if (errno == ENOENT)
            return fw_err_set(FW_ENOTFOUND, "store: blob %s not found in %s", digest, d->root);
        return s_fail("unlink", path, errno);
    }
    return 0;
}

static int s_quarantine(void *impl, const char *digest) {
    s_dir *d = impl;
    char path[4096], dest[4096];
    s_blob_path(d, digest, path, sizeof path);
    if (mkdir(d->quarantine, 0755) != 0 && errno != EEXIST)
        return s_fail("mkdir", d->quarantine, errno);
    snprintf(dest, sizeof dest, "%s/%s.%lld.%d", d->quarantine, digest + strlen(FW_DIGEST_PREFIX),
             (long long)time(NULL), (int)getpid());
    if (rename(path, dest) != 0) {
        if (errno == ENOENT)
            return fw_err_set(FW_ENOTFOUND, "store: blob %s not found in %s", digest, d->root);
        return s_fail("rename", dest, errno);
    }
    fw_warn("event=store-quarantine digest=%s path=%s", digest, dest);
    return 0;
}

static void s_describe(void *impl, const char *digest, char *buf, size_t size) {
    s_blob_path(impl, digest, buf, size);
}

static int s_local_path(void *impl, const char *digest, char *buf, size_t size) {
    s_blob_path(impl, digest, buf, size);
    return 0;
}

static int s_touch(void *impl, const char *digest) {
    char path[4096];
    s_blob_path(impl, digest, path, sizeof path);
    if (utimensat(AT_FDCWD, path, NULL, 0) != 0) return s_fail("utimensat", path, errno);
    return 0;
}

static void s_destroy(void *impl) {
    s_dir *d = impl;
    if (!d) return;
    free(d->root);
    free(d->blobs);
    free(d->tmp);
    free(d->quarantine);
    free(d);
}

static const fw_store_backend s_dir_backend = {
    .name = "dir",
    .stage_open = s_stage_open,
    .stage_write = s_stage_write,
    .stage_commit = s_stage_commit,
    .stage_abort = s_stage_abort,
    .open_read = s_open_read,
    .read_at = s_read_at,
    .close_read = s_close_read,
    .stat = s_stat,
    .list = s_list,
    .remove = s_remove,
    .quarantine = s_quarantine,
    .describe = s_describe,
    .local_path = s_local_path,
    .touch = s_touch,
    .destroy = s_destroy,
};

fw_store *fw_store_open_dir(const char *root, const fw_store_opts *opts) {
    if (!root || !*root) {
        fw_err_set(FW_EINVAL, "store: empty root directory");
        return NULL;
    }
    if (strlen(root) > 3000) {
        fw_err_set(FW_EINVAL, "store: root directory path too long (%zu bytes)", strlen(root));
        return NULL;
    }
    s_dir *d = calloc(1, sizeof *d);
    if (!d || !(d->root = strdup(root)) || asprintf(&d->blobs, "%s/blobs/sha256", root) < 0 ||
        asprintf(&d->tmp, "%s/tmp", root) < 0 ||
        asprintf(&d->quarantine, "%s/quarantine", root) < 0) {
        if (d) {
            free(d->root);
            free(d);
        }
        fw_err_set(FW_ENOMEM, "store: opening %s: out of memory", root);
        return NULL;
    }
    if (fw_file_mkdirs(d->blobs, 0755) != 0 || fw_file_mkdirs(d->tmp, 0755) != 0) {
        s_destroy(d);
        return NULL; /* detail from fw_file */
    }
    return fw_store_new(&s_dir_backend, d, opts);
}

int fw_store_dir_sweep_tmp(const char *root, int max_age_s, int *removed) {
    if (removed) *removed = 0;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/tmp", root);
    DIR *dir = opendir(tmp);
    if (!dir) return s_fail("opendir", tmp, errno);
    time_t cutoff = time(NULL) - max_age_s;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, "put-", 4) != 0) continue;
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", tmp, e->d_name);
        struct stat sb;
        if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_mtime > cutoff) continue;
        if (unlink(path) == 0) {
            if (removed) (*removed)++;
            fw_info("event=store-sweep-tmp path=%s", path);
        }
    }
    closedir(dir);
    return 0;
}
