/* fw_err.h - one list of Flywheel error codes.
 *
 * Functions return 0 on success and a negative fw_err on failure. The
 * X-macro below is the only place codes are defined: it gives both the enum
 * and fw_strerror(). Codes are never renumbered (they travel in error replies).
 *
 * A thread-local "detail" string carries the specifics of the last error
 * (which key, which line, which tensor), set with fw_err_set() by the code
 * that detects the problem and read with fw_err_detail() by the code that
 * reports it. */
#ifndef FW_ERR_H
#define FW_ERR_H

#define FW_ERRORS(X)                                                        \
    X(FW_OK, 0, "success")                                                  \
    X(FW_ENOMEM, -1, "out of memory")                                       \
    X(FW_EINVAL, -2, "invalid argument")                                    \
    X(FW_EIO, -3, "input/output error")                                     \
    X(FW_ETIMEDOUT, -4, "timed out")                                        \
    X(FW_ENOTFOUND, -5, "not found")                                        \
    X(FW_EEXIST, -6, "already exists")                                      \
    X(FW_ECONFLICT, -7, "conflict: a compare failed")                       \
    X(FW_EPROTO, -8, "malformed message")                                   \
    X(FW_ETOOBIG, -9, "too large")                                          \
    X(FW_EUNAVAIL, -10, "service unavailable")                              \
    X(FW_EAUTH, -11, "authentication failed")                               \
    X(FW_EPERM, -12, "permission denied")                                   \
    X(FW_ECOMPACTED, -13, "revision compacted")                             \
    X(FW_ELEASE, -14, "lease expired or not found")                         \
    X(FW_ECORRUPT, -15, "data corrupt (digest or format mismatch)")         \
    X(FW_ENOTLEADER, -16, "not the leader")                                 \
    X(FW_EFENCED, -17, "fenced: epoch is stale")                            \
    X(FW_EVERSION, -18, "unsupported version")                              \
    X(FW_ECONFIG, -19, "configuration error")                               \
    X(FW_ECANCELED, -20, "cancelled")                                       \
    X(FW_ECLOSED, -21, "connection closed")                                 \
    X(FW_ERESOURCE, -22, "insufficient resources")                          \
    X(FW_ESTATE, -23, "invalid state for this operation")                   \
    X(FW_EUNSUPPORTED, -24, "not supported")                                \
    X(FW_EDEVICE, -25, "device error")

typedef enum {
#define FW_ERR_ENUM_(name, code, msg) name = code,
    FW_ERRORS(FW_ERR_ENUM_)
#undef FW_ERR_ENUM_
} fw_err;

/* Static message for an error code ("unknown error" for codes not listed). */
const char *fw_strerror(int err);

/* Symbolic name ("FW_EPROTO") for an error code. */
const char *fw_errname(int err);

/* Record a printf-style detail for the current thread and return err, so
 * that `return fw_err_set(FW_EINVAL, "key %s: out of range", k);` works. */
int fw_err_set(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The current thread's last detail ("" when none). Valid until the next
 * fw_err_set() on this thread. */
const char *fw_err_detail(void);
/* The fw_err closest to an errno value (ENOENT -> FW_ENOTFOUND, ENOSPC ->
 * FW_ERESOURCE, ...; FW_EIO for the rest). */
int fw_err_from_errno(int e);

/* Forget the current thread's detail. */
void fw_err_clear(void);

#endif
