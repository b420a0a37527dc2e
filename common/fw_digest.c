/* fw_digest.c - SHA-256 through OpenSSL EVP (see fw_digest.h).
 *
 * EVP rather than the SHA256_* calls because those are deprecated in
 * OpenSSL 3 and EVP picks the fastest implementation (SHA-NI, AVX2) the CPU
 * has. The text form is parsed strictly, by hand, because it is a fixed
 * 71-character shape and a lenient parser would let two spellings of one
 * digest into etcd. */
#include "fw_digest.h"

#include "fw_err.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fw_digest_ctx {
    EVP_MD_CTX *md;
};

/* 256 KiB: large enough that the read syscalls cost little next to hashing,
 * small enough to live on the heap of any thread. */
#define S_FILE_CHUNK (256 * 1024)

fw_digest_ctx *fw_digest_ctx_new(void) {
    fw_digest_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx) ctx->md = EVP_MD_CTX_new();
    if (!ctx || !ctx->md) {
        free(ctx);
        fw_err_set(FW_ENOMEM, "sha256: out of memory");
        return NULL;
    }
    if (EVP_DigestInit_ex(ctx->md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx->md);
        free(ctx);
        fw_err_set(FW_EIO, "sha256: EVP_DigestInit_ex failed");
        return NULL;
    }
    return ctx;
}

int fw_digest_ctx_update(fw_digest_ctx *ctx, const void *data, size_t len) {
    if (len == 0) return 0;
    if (EVP_DigestUpdate(ctx->md, data, len) != 1)
        return fw_err_set(FW_EIO, "sha256: EVP_DigestUpdate failed");
    return 0;
}

int fw_digest_ctx_final(fw_digest_ctx *ctx, fw_digest *out) {
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx->md, out->bytes, &n) != 1 || n != FW_DIGEST_SIZE)
        return fw_err_set(FW_EIO, "sha256: EVP_DigestFinal_ex failed");
    if (EVP_DigestInit_ex(ctx->md, EVP_sha256(), NULL) != 1)
        return fw_err_set(FW_EIO, "sha256: EVP_DigestInit_ex failed");
    return 0;
}

void fw_digest_ctx_destroy(fw_digest_ctx **ctxp) {
    if (!ctxp || !*ctxp) return;
    EVP_MD_CTX_free((*ctxp)->md);
    free(*ctxp);
    *ctxp = NULL;
}

int fw_digest_buffer(const void *data, size_t len, fw_digest *out) {
    unsigned int n = 0;
    /* EVP_Digest is the one-shot form: no context to allocate on our side. */
    if (EVP_Digest(len ? data : "", len, out->bytes, &n, EVP_sha256(), NULL) != 1 ||
        n != FW_DIGEST_SIZE)
        return fw_err_set(FW_EIO, "sha256: EVP_Digest failed");
    return 0;
}

int fw_digest_file(const char *path, fw_digest *out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        int code = e == ENOENT ? FW_ENOTFOUND : (e == EACCES || e == EPERM) ? FW_EPERM : FW_EIO;
        return fw_err_set(code, "sha256 %s: open: %s", path, strerror(e));
    }
    int rc = 0;
    char *buf = malloc(S_FILE_CHUNK);
    fw_digest_ctx *ctx = buf ? fw_digest_ctx_new() : NULL;
    if (!buf || !ctx) {
        rc = fw_err_set(FW_ENOMEM, "sha256 %s: out of memory", path);
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf, S_FILE_CHUNK);
        if (n < 0) {
            if (errno == EINTR) continue;
            rc = fw_err_set(FW_EIO, "sha256 %s: read: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0) break;
        if ((rc = fw_digest_ctx_update(ctx, buf, (size_t)n)) < 0) goto out;
    }
    rc = fw_digest_ctx_final(ctx, out);
out:
    fw_digest_ctx_destroy(&ctx);
    free(buf);
    close(fd);
    return rc;
}

char *fw_digest_format(const fw_digest *d, char *buf) {
    static const char hex[] = "0123456789abcdef";
    memcpy(buf, FW_DIGEST_PREFIX, 7);
    for (int i = 0; i < FW_DIGEST_SIZE; i++) {
        buf[7 + 2 * i] = hex[d->bytes[i] >> 4];
        buf[7 + 2 * i + 1] = hex[d->bytes[i] & 15];
    }
    buf[FW_DIGEST_STR_LEN] = '\0';
    return buf;
}

static int s_hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int fw_digest_parse(const char *s, fw_digest *out) {
    if (!s) return fw_err_set(FW_EINVAL, "digest: missing");
    if (strncmp(s, FW_DIGEST_PREFIX, 7) != 0)
        return fw_err_set(FW_EINVAL, "digest '%.80s': does not start with 'sha256:'", s);
    const char *h = s + 7;
    fw_digest d;
    for (int i = 0; i < 2 * FW_DIGEST_SIZE; i++) {
        int v = h[i] ? s_hexval(h[i]) : -1;
        if (v < 0) {
            if (!h[i])
                return fw_err_set(FW_EINVAL, "digest '%.80s': %d hex digits, expected 64", s, i);
            return fw_err_set(FW_EINVAL,
                              "digest '%.80s': character %d is not a lower-case hex "
                              "digit",
                              s, 7 + i + 1);
        }
        if (i % 2 == 0)
            d.bytes[i / 2] = (uint8_t)(v << 4);
        else
            d.bytes[i / 2] |= (uint8_t)v;
    }
    if (h[2 * FW_DIGEST_SIZE] != '\0')
        return fw_err_set(FW_EINVAL, "digest '%.80s': longer than 64 hex digits", s);
    if (out) *out = d;
    return 0;
}

bool fw_digest_valid(const char *s) {
    if (!s || strncmp(s, FW_DIGEST_PREFIX, 7) != 0 || strlen(s) != FW_DIGEST_STR_LEN) return false;
    for (int i = 7; i < FW_DIGEST_STR_LEN; i++)
        if (s_hexval(s[i]) < 0) return false;
    return true;
}

bool fw_digest_equal(const fw_digest *a, const fw_digest *b) {
    return memcmp(a->bytes, b->bytes, FW_DIGEST_SIZE) == 0;
}
