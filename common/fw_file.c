/* fw_file.c - atomic writes, bounded reads, mkdir -p, rm -rf (see fw_file.h).
 *
 * Theory of operation. An atomic write moves through four steps, each of
 * which can fail; the table says what <path> holds if it does:
 *
 *   open "<path>.new" --> write* --> fsync + close --> rename --> fsync dir
 *        |                  |             |              |            |
 *        +------------------+-------------+--------------+            |
 *                 old content, ".new" removed                 new content,
 *                                                             error returned
 *
 * Invariants:
 *   1. <path> is only ever changed by rename(2), which POSIX makes atomic, so
 *      a reader sees the whole old file or the whole new one.
 *   2. The data is fsync'ed before the rename: otherwise a crash right after
 *      the rename could leave a zero-length file under the new name (the
 *      rename can reach the journal before the data blocks do).
 *   3. The directory is fsync'ed after the rename, so the new name itself
 *      survives a crash; until then the file may come back as the old one.
 *   4. Every failure before the rename removes "<path>.new", so failed
 *      writes leave no debris for the next writer or a directory scan.
 *
 * The ".new" name is fixed (Slurm does the same), which gives crash recovery
 * a simple rule (a leftover "<x>.new" is garbage) at the price of one writer
 * per path at a time; callers already serialise writes to a path. */
#include "fw_file.h"

#include "fw_err.h"
#include "fw_fault.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fw_file_atomic {
    char *path;
    char *tmp; /* path + ".new" */
    int fd;
    int failed; /* a write failed: only abort is possible */
};

/* Record "<call> <path>: <strerror>" and return the matching fw_err. */
static int s_fail(const char *call, const char *path, int e) {
    return fw_err_set(fw_err_from_errno(e), "%s %s: %s", call, path, strerror(e));
}

/* The directory part of path ("." when there is none); caller frees. */
static char *s_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* fw_file_atomic_open with the error code kept for fw_file_write_atomic. */
static fw_file_atomic *s_atomic_open(const char *path, mode_t mode, int *rc) {
    if (!path || !*path) {
        *rc = fw_err_set(FW_EINVAL, "atomic write: empty path");
        return NULL;
    }
    fw_file_atomic *w = calloc(1, sizeof *w);
    size_t n = strlen(path);
    if (w) w->path = strdup(path);
    if (w) w->tmp = malloc(n + sizeof ".new");
    if (!w || !w->path || !w->tmp) {
        if (w) free(w->path);
        free(w);
        *rc = fw_err_set(FW_ENOMEM, "atomic write %s: out of memory", path);
        return NULL;
    }
    memcpy(w->tmp, path, n);
    memcpy(w->tmp + n, ".new", sizeof ".new");
    if (fw_fault_hit("file.open")) {
        errno = EIO;
        w->fd = -1;
    } else {
        w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    }
    if (w->fd < 0) {
        *rc = s_fail("open", w->tmp, errno);
        free(w->tmp);
        free(w->path);
        free(w);
        return NULL;
    }
    *rc = 0;
    return w;
}

fw_file_atomic *fw_file_atomic_open(const char *path, mode_t mode) {
    int rc;
    return s_atomic_open(path, mode, &rc);
}

int fw_file_atomic_write(fw_file_atomic *w, const void *data, size_t len) {
    if (w->failed) return fw_err_set(FW_EIO, "write %s: an earlier write failed", w->tmp);
    const char *p = data;
    while (len > 0) {
        ssize_t n;
        if (fw_fault_hit("file.write")) {
            errno = EIO;
            n = -1;
        } else {
            n = write(w->fd, p, len);
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            w->failed = 1;
            return s_fail("write", w->tmp, errno);
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int fw_file_atomic_fd(const fw_file_atomic *w) {
    return w->fd;
}

void fw_file_atomic_abort(fw_file_atomic **wp) {
    if (!wp || !*wp) return;
    fw_file_atomic *w = *wp;
    if (w->fd >= 0) close(w->fd);
    unlink(w->tmp);
    free(w->tmp);
    free(w->path);
    free(w);
    *wp = NULL;
}

int fw_file_atomic_commit(fw_file_atomic **wp) {
    fw_file_atomic *w = *wp;
    int rc = 0, r;
    char *dir;
    if (w->failed) {
        rc = fw_err_set(FW_EIO, "commit %s: an earlier write failed", w->path);
        goto abort;
    }
    r = fw_fault_hit("file.fsync") ? (errno = EIO, -1) : fsync(w->fd);
    if (r < 0) {
        rc = s_fail("fsync", w->tmp, errno);
        goto abort;
    }
    /* close can report a deferred write error (NFS); the fd is gone either way. */
    r = close(w->fd);
    w->fd = -1;
    if (r < 0) {
        rc = s_fail("close", w->tmp, errno);
        goto abort;
    }
    r = fw_fault_hit("file.rename") ? (errno = EIO, -1) : rename(w->tmp, w->path);
    if (r < 0) {
        rc = fw_err_set(fw_err_from_errno(errno), "rename %s -> %s: %s", w->tmp, w->path,
                        strerror(errno));
        goto abort;
    }
    /* Past the rename the new content is in place; only its durability is at stake. */
    dir = s_dirname(w->path);
    rc = dir ? fw_file_fsync_dir(dir) : fw_err_set(FW_ENOMEM, "commit %s: out of memory", w->path);
    free(dir);
    free(w->tmp);
    free(w->path);
    free(w);
    *wp = NULL;
    return rc;
abort:
    fw_file_atomic_abort(wp);
    return rc;
}

int fw_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode) {
    int rc;
    fw_file_atomic *w = s_atomic_open(path, mode, &rc);
    if (!w) return rc;
    rc = fw_file_atomic_write(w, data, len);
    if (rc < 0) {
        fw_file_atomic_abort(&w);
        return rc;
    }
    return fw_file_atomic_commit(&w);
}

int fw_file_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return s_fail("open", dir, errno);
    int r = fw_fault_hit("file.dirfsync") ? (errno = EIO, -1) : fsync(fd);
    int e = errno;
    close(fd);
    /* Some file systems cannot fsync a directory and say EINVAL; there is
     * nothing more we could do for durability there, so it is not an error. */
    if (r < 0 && e != EINVAL) return s_fail("fsync", dir, e);
    return 0;
}

int fw_file_read(const char *path, size_t max, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    if (max > SIZE_MAX / 4) max = SIZE_MAX / 4; /* "no limit" must not overflow max + 2 */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return s_fail("open", path, errno);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int rc = s_fail("stat", path, errno);
        close(fd);
        return rc;
    }
    /* st_size is only a hint (it is 0 for /proc files and may change while we
     * read), so the loop below checks the limit against what it really reads. */
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > (uint64_t)max) {
        close(fd);
        return fw_err_set(FW_ETOOBIG, "read %s: %lld bytes is over the limit of %zu", path,
                          (long long)st.st_size, max);
    }
    size_t cap = S_ISREG(st.st_mode) && st.st_size > 0 ? (size_t)st.st_size + 1 : 4096;
    if (cap > max + 1) cap = max + 1;
    char *buf = malloc(cap);
    size_t n = 0;
    int rc = 0;
    if (!buf) {
        rc = fw_err_set(FW_ENOMEM, "read %s: out of memory", path);
        goto out;
    }
    for (;;) {
        if (n + 1 == cap) {
            if (n > max) break;
            size_t ncap = cap * 2 > max + 2 ? max + 2 : cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                rc = fw_err_set(FW_ENOMEM, "read %s: out of memory", path);
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r;
        if (fw_fault_hit("file.read")) {
            errno = EIO;
            r = -1;
        } else {
            r = read(fd, buf + n, cap - 1 - n);
        }
        if (r < 0) {
            if (errno == EINTR) continue;
            rc = s_fail("read", path, errno);
            goto out;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    if (n > max) {
        rc = fw_err_set(FW_ETOOBIG, "read %s: more than the limit of %zu bytes", path, max);
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
    if (len) *len = n;
out:
    free(buf);
    close(fd);
    return rc;
}

int fw_file_mkdirs(const char *path, mode_t mode) {
    if (!path || !*path) return fw_err_set(FW_EINVAL, "mkdir: empty path");
    char *buf = strdup(path);
    if (!buf) return fw_err_set(FW_ENOMEM, "mkdir %s: out of memory", path);
    int rc = 0;
    /* Walk the components left to right, creating each; the loop runs once
     * more at the terminating NUL for the last component. */
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(buf, mode) < 0) {
            int e = errno;
            struct stat st;
            if (e != EEXIST) {
                rc = s_fail("mkdir", buf, e);
                break;
            }
            if (stat(buf, &st) < 0 || !S_ISDIR(st.st_mode)) {
                rc = fw_err_set(FW_EEXIST, "mkdir %s: exists and is not a directory", buf);
                break;
            }
        }
        *p = saved;
        if (saved == '\0') break;
        while (p[1] == '/') p++; /* "a//b" */
        if (p[1] == '\0') break; /* trailing slash */
    }
    free(buf);
    return rc;
}

/* nftw gives its callback no user pointer; the first error of the walk on
 * this thread goes here. */
static _Thread_local int s_rm_rc;

static int s_rm_one(const char *fpath, const struct stat *sb, int typeflag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    int r;
    if (typeflag == FTW_DP) {
        r = rmdir(fpath);
    } else if (typeflag == FTW_DNR || typeflag == FTW_NS) {
        s_rm_rc = fw_err_set(FW_EPERM, "remove %s: cannot read or stat it", fpath);
        return 1;
    } else {
        r = unlink(fpath);
    }
    if (r < 0 && errno != ENOENT) {
        s_rm_rc = s_fail(typeflag == FTW_DP ? "rmdir" : "unlink", fpath, errno);
        return 1; /* stop the walk: the caller learns what could not go */
    }
    return 0;
}

int fw_file_remove_tree(const char *path) {
    if (!path) return fw_err_set(FW_EINVAL, "remove tree: no path");
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *last = path + n;
    while (last > path && last[-1] != '/') last--;
    size_t lastlen = (size_t)(path + n - last);
    if (n == 0 || (n == 1 && path[0] == '/') || (lastlen == 1 && last[0] == '.') ||
        (lastlen == 2 && last[0] == '.' && last[1] == '.'))
        return fw_err_set(FW_EINVAL, "remove tree: refusing to remove '%s'", path);
    struct stat st;
    if (lstat(path, &st) < 0) return errno == ENOENT ? 0 : s_fail("stat", path, errno);
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) < 0 && errno != ENOENT) return s_fail("unlink", path, errno);
        return 0;
    }
    s_rm_rc = 0;
    /* FTW_DEPTH: children before their directory; FTW_PHYS: never follow a
     * link; FTW_MOUNT: stay on this file system (a bind mount inside the
     * tree is left alone and its parent's rmdir reports ENOTEMPTY). */
    int r = nftw(path, s_rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    if (r < 0 && s_rm_rc == 0) return s_fail("walk", path, errno);
    return s_rm_rc;
}
