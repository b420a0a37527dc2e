/* fw_err.c - error codes and per-thread error details. */
#include "fw_err.h"

#include <stdarg.h>
#include <stdio.h>

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
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s_detail, sizeof s_detail, fmt, ap);
    va_end(ap);
    return err;
}

const char *fw_err_detail(void) { return s_detail; }

void fw_err_clear(void) { s_detail[0] = '\0'; }
