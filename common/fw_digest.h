/* fw_digest.h - SHA-256 digests and their "sha256:<64 hex>" text form.
 *
 * Artifacts, checkpoints, shards and registry entries are named and checked
 * by content digest. The text form is exactly "sha256:" followed by 64
 * lower-case hex digits (71 characters); it is the only form stored in etcd
 * and manifests, so two digests can be compared as strings. The hashing is
 * OpenSSL's EVP SHA-256.
 *
 *     fw_digest d;
 *     char hex[FW_DIGEST_STR_SIZE];
 *     if (fw_digest_file(path, &d) == 0) printf("%s\n", fw_digest_format(&d, hex));
 */
#ifndef FW_DIGEST_H
#define FW_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FW_DIGEST_SIZE     32 /* bytes of a SHA-256 */
#define FW_DIGEST_PREFIX   "sha256:"
#define FW_DIGEST_STR_LEN  (7 + 2 * FW_DIGEST_SIZE) /* 71 characters */
#define FW_DIGEST_STR_SIZE (FW_DIGEST_STR_LEN + 1)  /* with the NUL */

typedef struct {
    uint8_t bytes[FW_DIGEST_SIZE];
} fw_digest;

/* SHA-256 of len bytes at data. 0, or FW_ENOMEM / FW_EIO (OpenSSL failed). */
int fw_digest_buffer(const void *data, size_t len, fw_digest *out);

/* SHA-256 of a whole file, read in 256 KiB chunks (constant memory for any
 * size). FW_ENOTFOUND / FW_EPERM / FW_EIO with the path in the detail. */
int fw_digest_file(const char *path, fw_digest *out);

/* Incremental hashing: new, update any number of times, final. final resets
 * the context, so it can hash the next message. */
typedef struct fw_digest_ctx fw_digest_ctx;

/* NULL + detail on failure. */
fw_digest_ctx *fw_digest_ctx_new(void);
int fw_digest_ctx_update(fw_digest_ctx *ctx, const void *data, size_t len);
int fw_digest_ctx_final(fw_digest_ctx *ctx, fw_digest *out);
/* Idempotent; NULLs *ctxp. */
void fw_digest_ctx_destroy(fw_digest_ctx **ctxp);

/* Write the text form of d into buf (at least FW_DIGEST_STR_SIZE bytes) and
 * return buf. */
char *fw_digest_format(const fw_digest *d, char *buf);

/* Parse the text form. Anything but "sha256:" + exactly 64 lower-case hex
 * digits is FW_EINVAL with a detail saying what is wrong. out may be NULL to
 * validate only. */
int fw_digest_parse(const char *s, fw_digest *out);

/* Whether s is a valid text form (fw_digest_parse without the detail). */
bool fw_digest_valid(const char *s);

bool fw_digest_equal(const fw_digest *a, const fw_digest *b);

#endif
