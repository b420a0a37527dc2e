/* agent_log.c - rotated per-attempt task logs with logical offsets.
 *
 * Theory of operation
 * -------------------
 * Writer (one per running attempt, in the agent's event loop): appends with
 * write(2), no user-space buffering, so a reader in the same loop (LOG_FETCH)
 * always sees every byte the task has written so far. Before a write would
 * take A.log past max_bytes the files shift: A.log.(keep-1) is deleted,
 * A.log.i becomes A.log.(i+1), A.log becomes A.log.1, and A.log.base records
 * the logical offset where the fresh A.log starts.
 *
 * Reader: the segments are contiguous, newest last, so their logical ranges
 * follow from A.log.base and the file sizes:
 *   A.log    [base, base + size(A.log))
 *   A.log.1  [base - size(A.log.1), base)
 *   A.log.2  [that start - size(A.log.2), that start) ...
 *
 * A crash between the renames and the base write leaves a stale base, so
 * offsets after such a crash may be off by one file; logs are for humans and
 * we accept that rather than fsync on every rotation twice. */
#include "agent_log.h"

#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_MAX_SEGMENTS 1000 /* bound on the reader's walk over rotated files */

struct agent_log_t {
    char *dir;
    uint64_t attempt;
    uint64_t max_bytes;
    int keep;
    int fd;
    uint64_t base;     /* logical offset of A.log's first byte */
    uint64_t cur_size; /* bytes in A.log */
};

static void s_name(char *buf, size_t size, const char *dir, uint64_t attempt, const char *suffix) {
    snprintf(buf, size, "%s/%" PRIu64 ".log%s", dir, attempt, suffix);
}

static void s_seg_name(char *buf, size_t size, const char *dir, uint64_t attempt, int i) {
    if (i == 0) {
        s_name(buf, size, dir, attempt, "");
    } else {
        char suf[16];
        snprintf(suf, sizeof suf, ".%d", i);
        s_name(buf, size, dir, attempt, suf);
    }
}

static uint64_t s_read_base(const char *dir, uint64_t attempt) {
    char path[4096], *text = NULL;
    s_name(path, sizeof path, dir, attempt, ".base");
    if (fw_file_read(path, 64, &text, NULL) < 0) return 0;
    uint64_t v = strtoull(text, NULL, 10);
    free(text);
    return v;
}

agent_log_t *agent_log_open(const char *dir, uint64_t attempt, uint64_t max_bytes, int keep) {
    if (max_bytes < 1024 || keep < 1) {
        fw_err_set(FW_EINVAL, "log: max_bytes >= 1024 and keep >= 1 required");
        return NULL;
    }
    if (fw_file_mkdirs(dir, 0755) < 0) return NULL;
    agent_log_t *l = calloc(1, sizeof *l);
    if (!l || !(l->dir = strdup(dir))) {
        free(l);
        fw_err_set(FW_ENOMEM, "log: out of memory");
        return NULL;
    }
    l->attempt = attempt;
    l->max_bytes = max_bytes;
    l->keep = keep;
    char path[4096];
    s_name(path, sizeof path, dir, attempt, "");
    l->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (l->fd < 0) {
        fw_err_set(FW_EIO, "open %s: %s", path, strerror(errno));
        free(l->dir);
        free(l);
        return NULL;
    }
    struct stat st;
    l->cur_size = fstat(l->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    l->base = s_read_base(dir, attempt);
    return l;
}

void agent_log_destroy(agent_log_t **p) {
    if (!p || !*p) return;
    if ((*p)->fd >= 0) close((*p)->fd);
    free((*p)->dir);
    free(*p);
    *p = NULL;
}

uint64_t agent_log_size(const agent_log_t *l) { return l->base + l->cur_size; }

static int s_rotate(agent_log_t *l) {
    char from[4096], to[4096];
    close(l->fd);
    l->fd = -1;
    if (l->keep == 1) {
        s_seg_name(from, sizeof from, l->dir, l->attempt, 0);
        unlink(from);
    } else {
        s_seg_name(from, sizeof from, l->dir, l->attempt, l->keep - 1);
        unlink(from);
        for (int i = l->keep - 2; i >= 0; i--) {
            s_seg_name(from, sizeof from, l->dir, l->attempt, i);
            s_seg_name(to, sizeof to, l->dir, l->attempt, i + 1);
            if (rename(from, to) < 0 && errno != ENOENT)
                fw_warn("event=log-rotate-failed from=%s err=\"%s\"", from, strerror(errno));
        }
    }
    l->base += l->cur_size;
    l->cur_size = 0;
    char base[32], path[4096];
    int n = snprintf(base, sizeof base, "%" PRIu64 "\n", l->base);
    s_name(path, sizeof path, l->dir, l->attempt, ".base");
    int rc = fw_file_write_atomic(path, base, (size_t)n, 0644);
    if (rc < 0) fw_warn("event=log-rotate-failed file=%s detail=\"%s\"", path, fw_err_detail());
    s_seg_name(path, sizeof path, l->dir, l->attempt, 0);
    l->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (l->fd < 0) return fw_err_set(FW_EIO, "open %s: %s", path, strerror(errno));
    return 0;
}

static int s_write_all(agent_log_t *l, const uint8_t *p, size_t len) {
    while (len > 0) {
        ssize_t w = write(l->fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return fw_err_set(FW_EIO, "write %s/%" PRIu64 ".log: %s", l->dir, l->attempt,
                              strerror(errno));
        }
        p += w;
        len -= (size_t)w;
        l->cur_size += (uint64_t)w;
    }
    return 0;
}

int agent_log_write(agent_log_t *l, const void *data, size_t len) {
    const uint8_t *p = data;
    while (len > 0) {
        if (l->fd < 0) {
            /* An earlier rotation could not reopen the file; try again. */
            int rc = s_rotate(l);
            if (rc < 0) return rc;
        }
        if (l->cur_size >= l->max_bytes) {
            int rc = s_rotate(l);
            if (rc < 0) return rc;
        }
        size_t room = (size_t)(l->max_bytes - l->cur_size);
        size_t n = len < room ? len : room;
        int rc = s_write_all(l, p, n);
        if (rc < 0) return rc;
        p += n;
        len -= n;
    }
    return 0;
}

int agent_log_read(const char *dir, uint64_t attempt, uint64_t offset, size_t max, uint8_t **data,
                   size_t *len, uint64_t *data_offset, uint64_t *end_offset) {
    *data = NULL;
    *len = 0;
    char path[4096];
    struct stat st;
    s_seg_name(path, sizeof path, dir, attempt, 0);
    if (stat(path, &st) < 0)
        return fw_err_set(FW_ENOTFOUND, "no log for attempt %" PRIu64 " in %s", attempt, dir);
    uint64_t base = s_read_base(dir, attempt);
    uint64_t end = base + (uint64_t)st.st_size;
    *end_offset = end;
    if (offset >= end) {
        *data_offset = end < offset ? end : offset;
        *data = malloc(1);
        return *data ? 0 : fw_err_set(FW_ENOMEM, "log read: out of memory");
    }
    /* Walk back from the newest segment to the one holding `offset`. */
    uint64_t seg_start = base, seg_size = (uint64_t)st.st_size;
    int seg = 0;
    while (offset < seg_start && seg < S_MAX_SEGMENTS) {
        char older[4096];
        s_seg_name(older, sizeof older, dir, attempt, seg + 1);
        if (stat(older, &st) < 0 || (uint64_t)st.st_size > seg_start) {
            offset = seg_start; /* rotated away: resume at the oldest byte still kept */
            break;
        }
        seg++;
        seg_size = (uint64_t)st.st_size;
        seg_start -= seg_size;
        memcpy(path, older, sizeof path);
    }
    if (offset < seg_start) offset = seg_start;
    uint64_t avail = seg_start + seg_size - offset;
    size_t want = avail < max ? (size_t)avail : max;
    uint8_t *buf = malloc(want ? want : 1);
    if (!buf) return fw_err_set(FW_ENOMEM, "log read: out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        free(buf);
        return fw_err_set(FW_EIO, "open %s: %s", path, strerror(errno));
    }
    size_t got = 0;
    while (got < want) {
        ssize_t r = pread(fd, buf + got, want - got, (off_t)(offset - seg_start + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* a concurrent rotation shortened it: return what we have */
        got += (size_t)r;
    }
    close(fd);
    *data = buf;
    *len = got;
    *data_offset = offset;
    return 0;
}
