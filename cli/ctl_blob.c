/* ctl_blob.c - moving blobs between flywheelctl and the leader's artifact
 * store through the submission socket (BLOB_UPLOAD_* and BLOB_READ), in
 * 1 MiB chunks. Where the bytes come from or go to is the caller's: a
 * plain file for datasets, a private local store for model trees. */
#include "ctl.h"

#include "fw_err.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

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
