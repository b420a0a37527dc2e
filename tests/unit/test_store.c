/* test_store.c - the artifact store (common/fw_store.h): round trips, idempotent
 * puts, corruption and truncation caught by digest, limits, bad digests,
 * chunked uploads and downloads, trees, the local cache (refetch, LRU
 * eviction) and two processes putting the same content at once. */
#include "fw_digest.h"
#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"
#include "fw_store.h"
#include "fw_test.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char *g_tmp;

static char *s_path(const char *rel) {
    static char buf[4][4096];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", g_tmp, rel);
    return buf[i];
}

static void s_write(const char *path, const void *data, size_t len, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0) {
        perror(path);
        abort();
    }
    if (len && write(fd, data, len) != (ssize_t)len) abort();
    fchmod(fd, mode);
    close(fd);
}

static char *s_random(size_t len, uint64_t seed) {
    char *p = malloc(len ? len : 1);
    uint64_t st = seed;
    for (size_t i = 0; i < len; i++) p[i] = (char)(fw_test_rand(&st) >> 24);
    return p;
}

/* Flip one byte of a stored (read-only) blob file. */
static void s_flip(const char *path, off_t off) {
    chmod(path, 0644);
    int fd = open(path, O_RDWR);
    if (fd < 0) abort();
    unsigned char c;
    if (pread(fd, &c, 1, off) != 1) abort();
    c ^= 0x5a;
    if (pwrite(fd, &c, 1, off) != 1) abort();
    close(fd);
}

static int s_count_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static bool s_file_equals(const char *path, const void *data, size_t len) {
    char *got;
    size_t n;
    if (fw_file_read(path, len + 1, &got, &n) != 0) return false;
    bool eq = n == len && memcmp(got, data, len) == 0;
    free(got);
    return eq;
}

static void test_roundtrip(void) {
    fw_store *s = fw_store_open_dir(s_path("rt"), NULL);
    REQUIRE(s != NULL);
    CHECK_EQ_STR(fw_store_backend_name(s), "dir");

    /* Buffer: the name is the SHA-256 of the bytes, at the documented path. */
    char d[FW_DIGEST_STR_SIZE], want[FW_DIGEST_STR_SIZE];
    fw_digest dg;
    fw_digest_buffer("hello\n", 6, &dg);
    fw_digest_format(&dg, want);
    REQUIRE(fw_store_put_buffer(s, "hello\n", 6, d) == 0);
    CHECK_EQ_STR(d, want);
    char lp[4096], expect_path[4096];
    CHECK(fw_store_local_path(s, d, lp, sizeof lp) == 0);
    snprintf(expect_path, sizeof expect_path, "%s/blobs/sha256/%.2s/%s", s_path("rt"), d + 7,
             d + 7);
    CHECK_EQ_STR(lp, expect_path);
    struct stat sb;
    CHECK(stat(expect_path, &sb) == 0 && (sb.st_mode & 0777) == 0444);
    CHECK(fw_store_exists(s, d));
    fw_store_stat st;
    CHECK(fw_store_stat_blob(s, d, &st) == 0 && st.size == 6);
    char *buf;
    size_t len;
    CHECK(fw_store_get_buffer(s, d, 100, &buf, &len) == 0 && len == 6 && !strcmp(buf, "hello\n"));
    free(buf);
    CHECK_EQ_INT(fw_store_get_buffer(s, d, 5, &buf, &len), FW_ETOOBIG);

    /* Zero bytes: the well-known empty digest, an empty file back. */
    REQUIRE(fw_store_put_buffer(s, "", 0, d) == 0);
    CHECK_EQ_STR(d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(fw_store_get_file(s, d, s_path("empty.out")) == 0);
    CHECK(stat(s_path("empty.out"), &sb) == 0 && sb.st_size == 0);
    CHECK(fw_store_verify(s, d) == 0);

    /* Several MiB from a file, streamed both ways. */
    size_t big = (5u << 20) + 123;
    char *data = s_random(big, 7);
    s_write(s_path("big.in"), data, big, 0644);
    REQUIRE(fw_store_put_file(s, s_path("big.in"), d) == 0);
    fw_digest_file(s_path("big.in"), &dg);
    CHECK_EQ_STR(d, fw_digest_format(&dg, want));
    CHECK(fw_store_get_file(s, d, s_path("big.out")) == 0);
    CHECK(s_file_equals(s_path("big.out"), data, big));
    /* Streaming reader hands out every byte, then 0 once verified. */
    fw_store_reader *r = fw_store_reader_open(s, d);
    REQUIRE(r != NULL);
    CHECK(fw_store_reader_size(r) == big);
    char chunk[65536];
    size_t total = 0;
    long long n;
    bool same = true;
    while ((n = fw_store_reader_read(r, chunk, sizeof chunk)) > 0) {
        same = same && memcmp(chunk, data + total, (size_t)n) == 0;
        total += (size_t)n;
    }
    CHECK(n == 0 && total == big && same);
    fw_store_reader_close(&r);
    fw_store_reader_close(&r); /* idempotent */
    CHECK(r == NULL);
    free(data);

    /* A missing blob and a missing source file are clear errors. */
    CHECK_EQ_INT(fw_store_get_file(
                     s, "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                     s_path("x")),
                 FW_ENOTFOUND);
    CHECK(strstr(fw_err_detail(), "not found") != NULL);
    CHECK_EQ_INT(fw_store_put_file(s, s_path("no-such-file"), d), FW_ENOTFOUND);
    CHECK_EQ_INT(s_count_dir(s_path("rt/tmp")), 0);
    fw_store_destroy(&s);
    fw_store_destroy(&s);
    CHECK(s == NULL);
}

static void test_idempotent(void) {
    fw_store *s = fw_store_open_dir(s_path("idem"), NULL);
    REQUIRE(s != NULL);
    char d1[FW_DIGEST_STR_SIZE], d2[FW_DIGEST_STR_SIZE], lp[4096];
    REQUIRE(fw_store_put_buffer(s, "same bytes", 10, d1) == 0);
    fw_store_local_path(s, d1, lp, sizeof lp);
    struct stat a, b;
    REQUIRE(stat(lp, &a) == 0);
    s_write(s_path("same.txt"), "same bytes", 10, 0644);
    REQUIRE(fw_store_put_file(s, s_path("same.txt"), d2) == 0);
    CHECK_EQ_STR(d1, d2);
    REQUIRE(stat(lp, &b) == 0);
    /* Not rewritten: the same inode is still there. */
    CHECK(a.st_ino == b.st_ino);
    CHECK_EQ_INT(s_count_dir(s_path("idem/tmp")), 0);
    CHECK_EQ_INT(s_count_dir(s_path("idem/blobs/sha256")), 1);
    fw_store_destroy(&s);
}

static void test_bad_digests(void) {
    fw_store *s = fw_store_open_dir(s_path("bad"), NULL);
    REQUIRE(s != NULL);
    const char *bad[] = {
        "",
        "sha256:",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",   /* 63 */
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555", /* 65 */
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:../../../../../../etc/passwd/../../../../../../../../../../../../..",
    };
    char buf[16];
    size_t got;
    char *lp;
    fw_store_stat st;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECKF(fw_store_get_file(s, bad[i], s_path("bad.out")) == FW_EINVAL, "%s", bad[i]);
        CHECK(strstr(fw_err_detail(), "bad digest") != NULL);
        CHECK_EQ_INT(fw_store_stat_blob(s, bad[i], &st), FW_EINVAL);
        CHECK_EQ_INT(fw_store_verify(s, bad[i]), FW_EINVAL);
        CHECK_EQ_INT(fw_store_remove(s, bad[i]), FW_EINVAL);
        CHECK_EQ_INT(fw_store_read_chunk(s, bad[i], 0, buf, sizeof buf, &got, NULL), FW_EINVAL);
        CHECK(!fw_store_exists(s, bad[i]));
        CHECK(fw_store_reader_open(s, bad[i]) == NULL);
    }
    CHECK_EQ_INT(fw_store_verify(s, NULL), FW_EINVAL);
    fw_store_cache *c = fw_store_cache_new(s_path("bad-cache"), 0, true);
    REQUIRE(c != NULL);
    CHECK_EQ_INT(fw_store_cache_get(c, s, bad[7], &lp), FW_EINVAL);
    CHECK(lp == NULL);
    fw_store_cache_destroy(&c);
    CHECK(access(s_path("bad.out"), F_OK) != 0);
    fw_store_destroy(&s);
}

static void test_corruption(void) {
    fw_store *s = fw_store_open_dir(s_path("corrupt"), NULL);
    REQUIRE(s != NULL);
    size_t len = 1u << 20;
    char *data = s_random(len, 11);
    char d[FW_DIGEST_STR_SIZE], lp[4096];
    REQUIRE(fw_store_put_buffer(s, data, len, d) == 0);
    fw_store_local_path(s, d, lp, sizeof lp);
    CHECK(fw_store_verify(s, d) == 0);

    s_flip(lp, 12345);
    CHECK_EQ_INT(fw_store_verify(s, d), FW_ECORRUPT);
    /* The detail names the digest and where the bytes are. */
    CHECK(strstr(fw_err_detail(), d) != NULL);
    CHECK(strstr(fw_err_detail(), lp) != NULL);
    CHECK_EQ_INT(fw_store_get_file(s, d, s_path("corrupt.out")), FW_ECORRUPT);
    CHECK(access(s_path("corrupt.out"), F_OK) != 0);
    CHECK(access(s_path("corrupt.out.new"), F_OK) != 0);
    char *buf;
    size_t n;
    CHECK_EQ_INT(fw_store_get_buffer(s, d, len, &buf, &n), FW_ECORRUPT);
    CHECK(buf == NULL);
    /* A streaming reader returns the error instead of the final 0. */
    fw_store_reader *r = fw_store_reader_open(s, d);
    REQUIRE(r != NULL);
    char chunk[65536];
    long long got;
    while ((got = fw_store_reader_read(r, chunk, sizeof chunk)) > 0) {
    }
    CHECK_EQ_INT(got, FW_ECORRUPT);
    fw_store_reader_close(&r);

    /* The caller quarantines it; a fresh put brings it back intact. */
    CHECK(fw_store_quarantine(s, d) == 0);
    CHECK(!fw_store_exists(s, d));
    CHECK_EQ_INT(s_count_dir(s_path("corrupt/quarantine")), 1);
    CHECK(fw_store_put_buffer(s, data, len, d) == 0);
    CHECK(fw_store_verify(s, d) == 0);

    /* Truncated: caught by the digest (and the size). */
    chmod(lp, 0644);
    CHECK(truncate(lp, (off_t)len / 2) == 0);
    CHECK_EQ_INT(fw_store_verify(s, d), FW_ECORRUPT);
    CHECK(strstr(fw_err_detail(), "524288 bytes") != NULL);
    /* A put of the same content replaces a blob whose size is wrong. */
    CHECK(fw_store_put_buffer(s, data, len, d) == 0);
    CHECK(fw_store_verify(s, d) == 0);
    free(data);
    fw_store_destroy(&s);
}

static void test_limits_and_writer(void) {
    fw_store_opts o = {.max_blob_bytes = 1000};
    fw_store *s = fw_store_open_dir(s_path("limit"), &o);
    REQUIRE(s != NULL);
    CHECK(fw_store_max_blob(s) == 1000);
    char *data = s_random(1001, 3);
    char d[FW_DIGEST_STR_SIZE];
    CHECK_EQ_INT(fw_store_put_buffer(s, data, 1001, d), FW_ETOOBIG);
    CHECK(strstr(fw_err_detail(), "1000") != NULL);
    CHECK(fw_store_put_buffer(s, data, 1000, d) == 0);
    s_write(s_path("toobig"), data, 1001, 0644);
    CHECK_EQ_INT(fw_store_put_file(s, s_path("toobig"), d), FW_ETOOBIG);
    CHECK(strstr(fw_err_detail(), "toobig") != NULL);
    CHECK(fw_store_upload_begin(s, 1001) == NULL);
    CHECK_EQ_INT(s_count_dir(s_path("limit/tmp")), 0);

    /* Streaming writer: write after a failure, expected digest mismatch. */
    fw_store_writer *w = fw_store_writer_new(s);
    REQUIRE(w != NULL);
    CHECK(fw_store_writer_write(w, data, 600) == 0);
    CHECK_EQ_INT(fw_store_writer_write(w, data, 600), FW_ETOOBIG);
    CHECK_EQ_INT(fw_store_writer_write(w, data, 1), FW_ESTATE);
    fw_store_writer_abort(&w);
    CHECK(w == NULL);

    char good[FW_DIGEST_STR_SIZE];
    fw_digest dg;
    fw_digest_buffer(data, 10, &dg);
    fw_digest_format(&dg, good);
    w = fw_store_writer_new(s);
    fw_store_writer_write(w, data, 10);
    CHECK_EQ_INT(fw_store_writer_commit(&w, d, NULL), FW_ECORRUPT);
    CHECK(w == NULL);
    CHECK(!fw_store_exists(s, good));
    w = fw_store_writer_new(s);
    fw_store_writer_write(w, data, 10);
    CHECK(fw_store_writer_commit(&w, good, d) == 0);
    CHECK_EQ_STR(d, good);
    CHECK_EQ_INT(s_count_dir(s_path("limit/tmp")), 0);
    free(data);
    fw_store_destroy(&s);
}

typedef struct {
    int n;
    bool saw[3];
    const char (*want)[FW_DIGEST_STR_SIZE];
} list_ctx;

static int s_list_cb(const char *digest, const fw_store_stat *st, void *ctx) {
    list_ctx *l = ctx;
    l->n++;
    for (int i = 0; l->want && i < 3; i++)
        if (strcmp(digest, l->want[i]) == 0 && st->size == 5) l->saw[i] = true;
    return 0;
}

static void test_list_remove_sweep(void) {
    fw_store *s = fw_store_open_dir(s_path("list"), NULL);
    REQUIRE(s != NULL);
    char d[3][FW_DIGEST_STR_SIZE];
    CHECK(fw_store_put_buffer(s, "aaaaa", 5, d[0]) == 0);
    CHECK(fw_store_put_buffer(s, "bbbbb", 5, d[1]) == 0);
    CHECK(fw_store_put_buffer(s, "ccccc", 5, d[2]) == 0);
    /* Debris that is not a blob is skipped by list. */
    char stray[4096];
    snprintf(stray, sizeof stray, "%s/blobs/sha256/%.2s/notablob", s_path("list"), d[0] + 7);
    s_write(stray, "x", 1, 0644);
    list_ctx l = {.want = d};
    CHECK(fw_store_list(s, s_list_cb, &l) == 0);
    CHECK_EQ_INT(l.n, 3);
    CHECK(l.saw[0] && l.saw[1] && l.saw[2]);
    CHECK(fw_store_remove(s, d[1]) == 0);
    CHECK_EQ_INT(fw_store_remove(s, d[1]), FW_ENOTFOUND);
    l = (list_ctx){.want = d};
    fw_store_list(s, s_list_cb, &l);
    CHECK(l.n == 2 && !l.saw[1]);

    /* Leftovers of crashed writers: old ones swept, fresh ones kept. */
    s_write(s_path("list/tmp/put-old"), "x", 1, 0600);
    s_write(s_path("list/tmp/put-new"), "x", 1, 0600);
    struct timespec ts[2] = {{.tv_sec = time(NULL) - 7200}, {.tv_sec = time(NULL) - 7200}};
    utimensat(AT_FDCWD, s_path("list/tmp/put-old"), ts, 0);
    int removed = 0;
    CHECK(fw_store_dir_sweep_tmp(s_path("list"), 3600, &removed) == 0);
    CHECK_EQ_INT(removed, 1);
    CHECK(access(s_path("list/tmp/put-new"), F_OK) == 0);
    fw_store_destroy(&s);
}

static void test_upload_download(void) {
    fw_store *s = fw_store_open_dir(s_path("up"), NULL);
    REQUIRE(s != NULL);
    size_t len = 300000;
    char *data = s_random(len, 5);
    char want[FW_DIGEST_STR_SIZE];
    fw_digest dg;
    fw_digest_buffer(data, len, &dg);
    fw_digest_format(&dg, want);

    /* In order, declared size: stored under the client's digest. */
    fw_store_upload *u = fw_store_upload_begin(s, len);
    REQUIRE(u != NULL);
    for (size_t off = 0; off < len; off += 65536) {
        size_t n = len - off < 65536 ? len - off : 65536;
        CHECK(fw_store_upload_chunk(u, off, data + off, n) == 0);
    }
    CHECK(fw_store_upload_received(u) == len);
    CHECK(fw_store_upload_commit(&u, want) == 0);
    CHECK(u == NULL);
    CHECK(fw_store_verify(s, want) == 0);

    /* Download in chunks and check the digest as a client would. */
    char *back = malloc(len);
    size_t off = 0, got;
    uint64_t size = 0;
    do {
        REQUIRE(fw_store_read_chunk(s, want, off, back + off, 100000, &got, &size) == 0);
        off += got;
    } while (got > 0);
    CHECK(off == len && size == len && memcmp(back, data, len) == 0);
    CHECK(fw_store_read_chunk(s, want, len, back, 10, &got, NULL) == 0 && got == 0);
    CHECK_EQ_INT(fw_store_read_chunk(s, want, len + 1, back, 10, &got, NULL), FW_EINVAL);
    free(back);

    /* A gap poisons the upload. */
    u = fw_store_upload_begin(s, 0);
    CHECK(fw_store_upload_chunk(u, 0, data, 1000) == 0);
    CHECK_EQ_INT(fw_store_upload_chunk(u, 2000, data + 2000, 1000), FW_EPROTO);
    CHECK(strstr(fw_err_detail(), "gap") != NULL);
    CHECK_EQ_INT(fw_store_upload_chunk(u, 1000, data + 1000, 1000), FW_ESTATE);
    CHECK_EQ_INT(fw_store_upload_commit(&u, want), FW_ESTATE);
    CHECK(u == NULL);

    /* Out of order (a chunk re-sent / overlapping). */
    u = fw_store_upload_begin(s, 0);
    CHECK(fw_store_upload_chunk(u, 0, data, 1000) == 0);
    CHECK(fw_store_upload_chunk(u, 1000, data + 1000, 1000) == 0);
    CHECK_EQ_INT(fw_store_upload_chunk(u, 500, data + 500, 1000), FW_EPROTO);
    CHECK(strstr(fw_err_detail(), "overlap") != NULL);
    fw_store_upload_abort(&u);
    CHECK(u == NULL);

    /* Digest mismatch: nothing stored under either name. */
    char other[FW_DIGEST_STR_SIZE], actual[FW_DIGEST_STR_SIZE];
    fw_digest_buffer(data, 999, &dg);
    fw_digest_format(&dg, other);
    fw_digest_buffer(data, 1000, &dg);
    fw_digest_format(&dg, actual);
    u = fw_store_upload_begin(s, 1000);
    CHECK(fw_store_upload_chunk(u, 0, data, 1000) == 0);
    CHECK_EQ_INT(fw_store_upload_commit(&u, other), FW_ECORRUPT);
    CHECK(!fw_store_exists(s, other) && !fw_store_exists(s, actual));

    /* Short of, or past, the declared size; a commit without a digest. */
    u = fw_store_upload_begin(s, 1000);
    CHECK(fw_store_upload_chunk(u, 0, data, 999) == 0);
    CHECK_EQ_INT(fw_store_upload_commit(&u, other), FW_EPROTO);
    u = fw_store_upload_begin(s, 1000);
    CHECK_EQ_INT(fw_store_upload_chunk(u, 0, data, 1001), FW_EPROTO);
    fw_store_upload_abort(&u);
    u = fw_store_upload_begin(s, 0);
    CHECK(fw_store_upload_chunk(u, 0, data, 1000) == 0);
    CHECK_EQ_INT(fw_store_upload_commit(&u, NULL), FW_EINVAL);
    CHECK(!fw_store_exists(s, actual));
    CHECK_EQ_INT(s_count_dir(s_path("up/tmp")), 0);
    free(data);
    fw_store_destroy(&s);
}

/* A small "model directory"; `reverse` creates the same files in the other
 * order, with other permission bits (same executable bit) and a nested dir. */
static void s_make_model(const char *dir, bool reverse) {
    char p[4096];
    const char *files[][2] = {
        {"config.json", "{\"n_layer\": 2}"},
        {"model.safetensors", "\x08\0\0\0\0\0\0\0{}      tensorbytes"},
        {"tokenizer/vocab.json", "{\"a\": 0}"},
        {"tokenizer/extra/merges.txt", "#version: 0.2\na b\n"},
        {"run.sh", "#!/bin/sh\n"},
    };
    size_t n = sizeof files / sizeof files[0];
    snprintf(p, sizeof p, "%s/tokenizer/extra", dir);
    fw_file_mkdirs(p, 0755);
    for (size_t k = 0; k < n; k++) {
        size_t i = reverse ? n - 1 - k : k;
        snprintf(p, sizeof p, "%s/%s", dir, files[i][0]);
        size_t len = i == 1 ? 27 : strlen(files[i][1]); /* NULs inside */
        mode_t mode = i == 4 ? (reverse ? 0700 : 0755) : (reverse ? 0600 : 0644);
        s_write(p, files[i][1], len, mode);
    }
    if (reverse) { /* an empty directory is not part of the tree */
        snprintf(p, sizeof p, "%s/empty", dir);
        mkdir(p, 0755);
    }
}

typedef struct {
    int n;
    char names[8][64];
    unsigned modes[8];
} tree_ctx;

static int s_tree_cb(const char *name, const char *digest, uint64_t size, unsigned mode,
                     void *ctx) {
    tree_ctx *t = ctx;
    (void)digest;
    (void)size;
    if (t->n < 8) {
        snprintf(t->names[t->n], 64, "%s", name);
        t->modes[t->n] = mode;
    }
    t->n++;
    return 0;
}

static void test_tree(void) {
    fw_store *s = fw_store_open_dir(s_path("tree"), NULL);
    REQUIRE(s != NULL);
    s_make_model(s_path("modelA"), false);
    s_make_model(s_path("modelB"), true);
    char da[FW_DIGEST_STR_SIZE], db[FW_DIGEST_STR_SIZE], dc[FW_DIGEST_STR_SIZE];
    REQUIRE(fw_store_put_tree(s, s_path("modelA"), da) == 0);
    REQUIRE(fw_store_put_tree(s, s_path("modelB"), db) == 0);
    CHECK_EQ_STR(da, db);
    /* One changed byte changes the tree's digest. */
    s_write(s_path("modelB/tokenizer/vocab.json"), "{\"a\": 1}", 8, 0644);
    REQUIRE(fw_store_put_tree(s, s_path("modelB"), dc) == 0);
    CHECK(strcmp(da, dc) != 0);

    tree_ctx t = {0};
    CHECK(fw_store_tree_foreach(s, da, s_tree_cb, &t) == 0);
    CHECK_EQ_INT(t.n, 5);
    CHECK_EQ_STR(t.names[0], "config.json");
    CHECK_EQ_STR(t.names[2], "run.sh");
    CHECK_EQ_STR(t.names[3], "tokenizer/extra/merges.txt");
    CHECK(t.modes[2] == 0755 && t.modes[0] == 0644);

    /* Materialise: same bytes and modes; the tree's digest round-trips. */
    REQUIRE(fw_store_materialise_tree(s, da, s_path("outA")) == 0);
    CHECK(s_file_equals(s_path("outA/tokenizer/extra/merges.txt"), "#version: 0.2\na b\n", 18));
    CHECK(s_file_equals(s_path("outA/config.json"), "{\"n_layer\": 2}", 14));
    struct stat sb;
    CHECK(stat(s_path("outA/run.sh"), &sb) == 0 && (sb.st_mode & 0777) == 0755);
    CHECK(stat(s_path("outA/config.json"), &sb) == 0 && (sb.st_mode & 0777) == 0644);
    char again[FW_DIGEST_STR_SIZE];
    CHECK(fw_store_put_tree(s, s_path("outA"), again) == 0);
    CHECK_EQ_STR(again, da);
    CHECK_EQ_INT(fw_store_materialise_tree(s, da, s_path("outA")), FW_EEXIST);

    /* A corrupt member: error, no destination, no temporary left behind. */
    fw_digest dg;
    char member[FW_DIGEST_STR_SIZE], lp[4096];
    fw_digest_buffer("{\"a\": 0}", 8, &dg);
    fw_digest_format(&dg, member);
    fw_store_local_path(s, member, lp, sizeof lp);
    s_flip(lp, 3);
    int before = s_count_dir(g_tmp);
    CHECK_EQ_INT(fw_store_materialise_tree(s, da, s_path("outBad")), FW_ECORRUPT);
    CHECK(strstr(fw_err_detail(), member) != NULL);
    CHECK(access(s_path("outBad"), F_OK) != 0);
    CHECK_EQ_INT(s_count_dir(g_tmp), before);

    /* Unsafe or malformed manifests are refused before any file is made. */
    char bad[FW_DIGEST_STR_SIZE];
    char text[512];
    snprintf(text, sizeof text,
             "{\"entries\":{\"../escape\":{\"digest\":\"%s\",\"mode\":420,\"size\":8}},"
             "\"format\":\"flywheel-tree\",\"version\":1}",
             member);
    fw_store_put_buffer(s, text, strlen(text), bad);
    CHECK_EQ_INT(fw_store_materialise_tree(s, bad, s_path("outEsc")), FW_ECORRUPT);
    CHECK(access(s_path("escape"), F_OK) != 0 && access(s_path("outEsc"), F_OK) != 0);
    fw_store_put_buffer(s, "not json", 8, bad);
    CHECK_EQ_INT(fw_store_materialise_tree(s, bad, s_path("outJunk")), FW_ECORRUPT);
    CHECK(strstr(fw_err_detail(), "not a tree manifest") != NULL);
    fw_store_put_buffer(s, "{\"entries\":{},\"format\":\"flywheel-tree\",\"version\":9}", 51, bad);
    CHECK_EQ_INT(fw_store_tree_foreach(s, bad, s_tree_cb, &t), FW_EVERSION);

    /* Symbolic links are refused when putting a tree. */
    CHECK(symlink("config.json", s_path("modelA/link")) == 0);
    CHECK_EQ_INT(fw_store_put_tree(s, s_path("modelA"), dc), FW_EUNSUPPORTED);
    CHECK(strstr(fw_err_detail(), "link") != NULL);
    CHECK_EQ_INT(fw_store_put_tree(s, s_path("no-such-dir"), dc), FW_ENOTFOUND);
    fw_store_destroy(&s);
}

static void s_set_mtime(fw_store *s, const char *d, time_t t) {
    char lp[4096];
    fw_store_local_path(s, d, lp, sizeof lp);
    struct timespec ts[2] = {{.tv_sec = t}, {.tv_sec = t}};
    utimensat(AT_FDCWD, lp, ts, 0);
}

static void test_cache(void) {
    fw_store *remote = fw_store_open_dir(s_path("remote"), NULL);
    fw_store_cache *c = fw_store_cache_new(s_path("cache"), 3000, true);
    REQUIRE(remote != NULL && c != NULL);
    fw_store *local = fw_store_cache_store(c);
    char d[5][FW_DIGEST_STR_SIZE];
    char *data[5];
    for (int i = 0; i < 5; i++) {
        data[i] = s_random(1000, 100 + (uint64_t)i);
        REQUIRE(fw_store_put_buffer(remote, data[i], 1000, d[i]) == 0);
    }
    char *p = NULL, *p2 = NULL;
    REQUIRE(fw_store_cache_get(c, remote, d[0], &p) == 0);
    CHECK(s_file_equals(p, data[0], 1000));
    CHECK(strncmp(p, s_path("cache"), strlen(s_path("cache"))) == 0);
    /* A hit returns the same path without touching the remote. */
    fw_store_remove(remote, d[0]);
    CHECK(fw_store_cache_get(c, remote, d[0], &p2) == 0 && p2 && strcmp(p, p2) == 0);
    free(p2);
    fw_store_put_buffer(remote, data[0], 1000, d[0]);

    /* A corrupt cached copy is dropped and fetched again. */
    s_flip(p, 500);
    CHECK(!s_file_equals(p, data[0], 1000));
    CHECK(fw_store_cache_get(c, remote, d[0], &p2) == 0);
    CHECK(s_file_equals(p2, data[0], 1000));
    free(p2);
    free(p);

    /* A corrupt remote blob is not cached. */
    char rlp[4096];
    fw_store_local_path(remote, d[4], rlp, sizeof rlp);
    s_flip(rlp, 1);
    CHECK_EQ_INT(fw_store_cache_get(c, remote, d[4], &p), FW_ECORRUPT);
    CHECK(p == NULL && !fw_store_exists(local, d[4]));
    CHECK_EQ_INT(s_count_dir(s_path("cache/tmp")), 0);

    /* LRU: the least recently used blob goes when a new one overflows 3000. */
    CHECK(fw_store_cache_get(c, remote, d[1], &p) == 0);
    free(p);
    CHECK(fw_store_cache_get(c, remote, d[2], &p) == 0);
    free(p);
    time_t now = time(NULL);
    s_set_mtime(local, d[0], now - 300);
    s_set_mtime(local, d[1], now - 200);
    s_set_mtime(local, d[2], now - 100);
    /* Using d[0] makes it the most recent, so d[1] is the victim. */
    CHECK(fw_store_cache_get(c, remote, d[0], &p) == 0);
    free(p);
    CHECK(fw_store_cache_get(c, remote, d[3], &p) == 0);
    free(p);
    CHECK(fw_store_exists(local, d[0]));
    CHECK(!fw_store_exists(local, d[1]));
    CHECK(fw_store_exists(local, d[2]) && fw_store_exists(local, d[3]));
    uint64_t bytes;
    int blobs;
    CHECK(fw_store_cache_usage(c, &bytes, &blobs) == 0 && bytes == 3000 && blobs == 3);

    /* A blob bigger than the whole cache is refused up front. */
    char *huge = s_random(4000, 9);
    char dh[FW_DIGEST_STR_SIZE];
    fw_store_put_buffer(remote, huge, 4000, dh);
    CHECK_EQ_INT(fw_store_cache_get(c, remote, dh, &p), FW_ETOOBIG);
    CHECK(!fw_store_exists(local, dh));
    free(huge);
    for (int i = 0; i < 5; i++) free(data[i]);
    fw_store_cache_destroy(&c);
    fw_store_cache_destroy(&c);
    fw_store_destroy(&remote);
}

/* Two processes put the same content at the same moment: both succeed and
 * the store holds one intact blob and no debris. */
static void test_concurrent_puts(void) {
    const char *root = s_path("conc");
    fw_store *s = fw_store_open_dir(root, NULL);
    REQUIRE(s != NULL);
    size_t len = 2u << 20;
    char *data = s_random(len, 42);
    char want[FW_DIGEST_STR_SIZE];
    fw_digest dg;
    fw_digest_buffer(data, len, &dg);
    fw_digest_format(&dg, want);
    int gate[2];
    REQUIRE(pipe(gate) == 0);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        REQUIRE(kids[k] >= 0);
        if (kids[k] == 0) {
            close(gate[1]);
            char c;
            (void)!read(gate[0], &c, 1); /* returns 0 when the parent opens the gate */
            fw_store *cs = fw_store_open_dir(root, NULL);
            int rc = 0;
            for (int i = 0; i < 5 && rc == 0; i++) {
                char d[FW_DIGEST_STR_SIZE];
                rc = cs ? fw_store_put_buffer(cs, data, len, d) : -1;
                if (rc == 0 && strcmp(d, want) != 0) rc = -1;
            }
            fw_store_destroy(&cs);
            _exit(rc == 0 ? 0 : 1);
        }
    }
    close(gate[0]);
    close(gate[1]);
    for (int k = 0; k < 2; k++) {
        int status = 0;
        waitpid(kids[k], &status, 0);
        CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d status %d", k, status);
    }
    list_ctx l = {.want = NULL};
    fw_store_list(s, s_list_cb, &l);
    CHECK_EQ_INT(l.n, 1);
    CHECK(fw_store_verify(s, want) == 0);
    CHECK_EQ_INT(s_count_dir(s_path("conc/tmp")), 0);
    free(data);
    fw_store_destroy(&s);
}

int main(void) {
    fw_log_set_level(FW_LOG_WARN);
    g_tmp = fw_test_tmpdir("store");
    RUN(test_roundtrip);
    RUN(test_idempotent);
    RUN(test_bad_digests);
    RUN(test_corruption);
    RUN(test_limits_and_writer);
    RUN(test_list_remove_sweep);
    RUN(test_upload_download);
    RUN(test_tree);
    RUN(test_cache);
    RUN(test_concurrent_puts);
    fw_test_rmtree(g_tmp);
    free(g_tmp);
    return fw_test_summary();
}
