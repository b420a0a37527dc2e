/* ctl_blob.c - moving blobs between flywheelctl and the leader's artifact
 * store through the submission socket (BLOB_UPLOAD_* and BLOB_READ), in
 * 1 MiB chunks, and `flywheelctl artifact get DIGEST FILE`. Where the bytes
 * come from or go to is the caller's: a plain file for datasets and
 * artifacts, memory for eval scores, a private local store for model
 * trees. Reads are verified here, not trusted: the file and buffer readers
 * hash every byte and fail with FW_ECORRUPT when the digest differs, so a
 * corrupt store copy never reaches the user as data. */
#include "ctl.h"

#include "fw_digest.h"
#include "fw_err.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_CHUNK (1u << 20)

int ctl_blob_upload(ctl_t *c, const char *what, const char *digest, uint64_t size,
                    ctl_blob_read_fn *rd, void *arg) {
    fw_msg_t *req = ctl_request(c, FW_MSG_BLOB_UPLOAD_BEGIN), *reply = NULL;
    if (!req) return -1;
    fw_msg_set_uint(req, "size", size);
    fw_msg_set_str(req, "digest", digest);
    int rc = ctl_call(c, req, &reply);
    fw_msg_destroy(&req);
    if (rc < 0) return -1;
    if (fw_msg_get_bool(reply, "complete")) {
        fw_msg_destroy(&reply);
        return 0; /* the leader's store already holds these bytes */
    }
    char id[80];
    snprintf(id, sizeof id, "%s", fw_msg_get_str(reply, "upload_id"));
    fw_msg_destroy(&reply);
    char *buf = malloc(S_CHUNK);
    if (!buf) {
        ctl_errorf(c, "out of memory");
        return -1;
    }
    uint64_t off = 0;
    int ret = 0;
    while (off < size) {
        size_t n = 0;
        fw_err_clear();
        if (rd(arg, off, buf, S_CHUNK, &n) < 0 || n == 0) {
            ctl_errorf(c, "reading %s at %" PRIu64 ": %s", what, off,
                       fw_err_detail()[0] ? fw_err_detail() : "it ended early (changed meanwhile?)");
            ret = -1;
            break;
        }
        req = ctl_request(c, FW_MSG_BLOB_UPLOAD_CHUNK);
        if (!req) {
            ret = -1;
            break;
        }
        fw_msg_set_str(req, "upload_id", id);
        fw_msg_set_uint(req, "offset", off);
        fw_msg_set_bin(req, "data", buf, n);
        rc = ctl_call(c, req, &reply);
        fw_msg_destroy(&req);
        if (rc < 0) {
            ret = -1;
            break;
        }
        off += n;
        uint64_t got = fw_msg_get_uint(reply, "received");
        fw_msg_destroy(&reply);
        if (got != off) {
            ctl_errorf(c, "upload %s: the coordinator has %" PRIu64 " bytes, we sent %" PRIu64, id,
                       got, off);
            ret = -1;
            break;
        }
    }
    free(buf);
    if (ret < 0) return -1;
    req = ctl_request(c, FW_MSG_BLOB_UPLOAD_COMMIT);
    if (!req) return -1;
    fw_msg_set_str(req, "upload_id", id);
    fw_msg_set_str(req, "digest", digest);
    rc = ctl_call(c, req, &reply);
    fw_msg_destroy(&req);
    fw_msg_destroy(&reply);
    return rc < 0 ? -1 : 0;
}

int ctl_blob_download(ctl_t *c, const char *what, const char *digest, ctl_blob_write_fn *wr,
                      void *arg, uint64_t *total) {
    uint64_t off = 0, size = UINT64_MAX;
    int ret = 0;
    while (ret == 0 && off < size) {
        fw_msg_t *req = ctl_request(c, FW_MSG_BLOB_READ), *reply = NULL;
        if (!req) return -1;
        fw_msg_set_str(req, "digest", digest);
        fw_msg_set_uint(req, "offset", off);
        fw_msg_set_uint(req, "max_bytes", S_CHUNK);
        int rc = ctl_call(c, req, &reply);
        fw_msg_destroy(&req);
        if (rc < 0) return -1;
        size_t n = 0;
        const void *data = fw_msg_get_bin(reply, "data", &n);
        size = fw_msg_get_uint(reply, "size");
        if (fw_msg_get_uint(reply, "offset") != off || (n == 0 && off < size)) {
            ctl_errorf(c,
                       "%s: the coordinator answered offset %" PRIu64 " with %zu bytes "
                       "(asked %" PRIu64 ")",
                       what, fw_msg_get_uint(reply, "offset"), n, off);
            ret = -1;
        } else {
            fw_err_clear();
            if (wr(arg, size, off, data, n) < 0) {
                ctl_errorf(c, "%s: %s", what, fw_err_detail());
                ret = -1;
            }
        }
        off += n;
        fw_msg_destroy(&reply);
    }
    if (ret == 0 && off == 0) { /* an empty blob: the writer still learns its size */
        fw_err_clear();
        if (wr(arg, 0, 0, NULL, 0) < 0) {
            ctl_errorf(c, "%s: %s", what, fw_err_detail());
            ret = -1;
        }
    }
    if (total) *total = off;
    return ret;
}

/* ------------------------------------------------- verified downloads */

typedef struct {
    FILE *f;           /* file sink, or NULL */
    char *buf;         /* buffer sink */
    size_t len, max;
    fw_digest_ctx *h;
} s_sink;

static int s_sink_write(void *arg, uint64_t size, uint64_t off, const void *data, size_t n) {
    s_sink *k = arg;
    (void)off;
    if (!k->f) {
        if (size > k->max)
            return fw_err_set(FW_ETOOBIG, "the blob has %" PRIu64 " bytes, more than the %zu "
                                          "this command reads into memory", size, k->max);
        if (!k->buf && !(k->buf = malloc((size_t)size + 1)))
            return fw_err_set(FW_ENOMEM, "out of memory for %" PRIu64 " bytes", size);
        if (k->len + n > size) return fw_err_set(FW_EPROTO, "more bytes than the blob's size");
        memcpy(k->buf + k->len, data, n);
        k->len += n;
    } else if (n && fwrite(data, 1, n, k->f) != n) {
        return fw_err_set(FW_EIO, "writing: %s", strerror(errno));
    }
    if (n && fw_digest_ctx_update(k->h, data, n) < 0) return fw_err_set(FW_EIO, "hashing failed");
    return 0;
}

/* Download into the sink and compare the digest. 0 or -1 printed. */
static int s_get(ctl_t *c, const char *what, const char *digest, s_sink *k) {
    if (!fw_digest_valid(digest))
        return ctl_errorf(c, "%s: '%s' is not a digest (sha256:<64 hex>)", what, digest), -1;
    if (!(k->h = fw_digest_ctx_new())) return ctl_errorf(c, "out of memory"), -1;
    uint64_t off = 0;
    int ret = ctl_blob_download(c, what, digest, s_sink_write, k, &off);
    if (ret == 0) {
        fw_digest d;
        char got[FW_DIGEST_STR_SIZE];
        fw_digest_ctx_final(k->h, &d);
        fw_digest_format(&d, got);
        if (strcmp(got, digest) != 0) {
            ctl_errorf(c,
                       "%s: digest mismatch: the %" PRIu64 " bytes received hash to %s, "
                       "expected %s: the store's copy is corrupt (%s)",
                       what, off, got, digest, fw_errname(FW_ECORRUPT));
            ret = -1;
        }
    }
    fw_digest_ctx_destroy(&k->h);
    return ret;
}

int ctl_blob_get_file(ctl_t *c, const char *what, const char *digest, const char *path) {
    char part[4096];
    if (snprintf(part, sizeof part, "%s.part", path) >= (int)sizeof part)
        return ctl_errorf(c, "%s: path too long", path), -1;
    s_sink k = {.f = fopen(part, "wb")};
    if (!k.f) return ctl_errorf(c, "%s: %s", part, strerror(errno)), -1;
    int ret = s_get(c, what, digest, &k);
    if (fflush(k.f) != 0 || fsync(fileno(k.f)) != 0) {
        if (ret == 0) ctl_errorf(c, "%s: %s", part, strerror(errno));
        ret = -1;
    }
    fclose(k.f);
    if (ret == 0 && rename(part, path) != 0) {
        ctl_errorf(c, "rename %s -> %s: %s", part, path, strerror(errno));
        ret = -1;
    }
    if (ret < 0) unlink(part);
    return ret;
}

int ctl_blob_get_buffer(ctl_t *c, const char *what, const char *digest, size_t max, char **out,
                        size_t *len) {
    s_sink k = {.max = max};
    *out = NULL;
    *len = 0;
    int ret = s_get(c, what, digest, &k);
    if (ret == 0 && !k.buf && !(k.buf = malloc(1))) ret = (ctl_errorf(c, "out of memory"), -1);
    if (ret < 0) {
        free(k.buf);
        return -1;
    }
    k.buf[k.len] = '\0';
    *out = k.buf;
    *len = k.len;
    return 0;
}

/* ------------------------------------------------------ artifact get */

static int s_cmd_get(ctl_t *c) {
    const char *digest = c->argv[0], *path = c->argv[1];
    if (!fw_digest_valid(digest))
        return (ctl_errorf(c, "artifact get: '%s' is not a digest: expected sha256:<64 hex> (a "
                              "job's result.matrix, an eval's scores, a dataset's digest)",
                           digest),
                CTL_EXIT_USAGE);
    if (access(path, F_OK) == 0 && !ctl_flag_on(c, "force"))
        return ctl_errorf(c, "%s: already exists (--force replaces it)", path);
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    char what[128];
    snprintf(what, sizeof what, "artifact %.19s", digest);
    if (ctl_blob_get_file(c, what, digest, path) < 0) return CTL_EXIT_ERROR;
    struct stat sb;
    long long size = stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
    if (c->output == CTL_OUT_JSON) {
        json_t *o = json_pack("{s:s,s:s,s:I,s:b}", "digest", digest, "path", path, "size",
                              (json_int_t)size, "verified", 1);
        ctl_print_json(o);
        json_decref(o);
    } else {
        printf("%s -> %s (%lld bytes, verified)\n", digest, path, size);
    }
    return CTL_EXIT_OK;
}

static const ctl_flag_def s_get_flags[] = {
    {"force", 0, NULL, "Replace FILE when it exists."}, {NULL, 0, NULL, NULL}};

const ctl_cmd_def ctl_artifact_cmds[] = {
    {"artifact", "get", "DIGEST FILE", 2, 2,
     "Download any blob of the artifact store by digest, verified.",
     "DIGEST is sha256:<hex>: a job's result (an embedding matrix, merged eval scores, a "
     "checkpoint), a dataset version's or a model file's digest. The bytes are hashed as they "
     "arrive; FILE appears (renamed from FILE.part) only when they match, otherwise the store's "
     "copy is corrupt (FW_ECORRUPT) and nothing is written. A model version is a tree: use "
     "`model download` for the directory.",
     s_get_flags, s_cmd_get},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL}};
