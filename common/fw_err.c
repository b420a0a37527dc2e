/* fw_err.c - error codes and per-thread error details. */
#include "fw_err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char s_detail[512];

const char *fw_strerror(int err) {
    switch (err) {
#define FW_ERR_MSG_(name, code, msg) \
    case code: return msg;
        FW_ERRORS(FW_ERR_MSG_)
#undef FW_ERR_MSG_
    }
    return "unknown error";
}

const char *fw_errname(int err) {
    switch (err) {
#define FW_ERR_NAME_(name, code, msg) \
    case code: return #name;
        FW_ERRORS(FW_ERR_NAME_)
#undef FW_ERR_NAME_
    }
    return "FW_EUNKNOWN";
}

int fw_err_set(int err, const char *fmt, ...) {
    /* Format into a scratch buffer first: callers may pass fw_err_detail()
     * itself as an argument ("loading %s: %s", path, fw_err_detail()). */
    char tmp[sizeof s_detail];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(s_detail, tmp, sizeof s_detail);
    return err;
}

const char *fw_err_detail(void) { return s_detail; }

void fw_err_clear(void) { s_detail[0] = '\0'; }

int fw_err_from_errno(int e) {
    switch (e) {
    case ENOENT:
        return FW_ENOTFOUND;
    case EACCES:
    case EPERM:
    case EROFS:
        return FW_EPERM;
    case EEXIST:
        return FW_EEXIST;
    case ENOMEM:
        return FW_ENOMEM;
    case ENOSPC:
    case EDQUOT:
        return FW_ERESOURCE;
    default:
        return FW_EIO;
    }
}
