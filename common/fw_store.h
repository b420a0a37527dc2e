/* fw_store.h - the artifact store: content-addressed blobs, trees, a local
 * cache and chunked transfers.
 *
 * A blob is named by the SHA-256 of its bytes, in the text form of
 * fw_digest.h ("sha256:<64 hex>"). Whatever writes a blob hashes the bytes as
 * they stream through, and the blob only becomes visible under its digest
 * once it is complete and durable; whatever reads a blob hashes it again and
 * fails with FW_ECORRUPT (the detail names the digest and where the bytes
 * were) when the content no longer matches its name. Datasets, token shards,
 * checkpoints, embedding matrices and eval reports are single blobs; a model
 * directory is a "tree": a JSON manifest (a blob itself) listing each file's
 * digest, so the directory's digest is the manifest's. docs/artifacts.md
 * describes the layout, the manifest format and the guarantees.
 *
 * The bytes live behind a backend (fw_store_backend, a table of functions);
 * the directory backend (fw_store_open_dir) keeps them in a directory that
 * coordinators and agents share (a local path, or NFS across machines). An
 * S3-compatible backend fills in the same table. Everything above the table
 * (hashing, verification, limits, trees, uploads, the cache) is shared.
 *
 *     fw_store *s = fw_store_open_dir("/srv/flywheel/store", NULL);
 *     char d[FW_DIGEST_STR_SIZE];
 *     if (fw_store_put_file(s, "model.safetensors", d) == 0)
 *         fw_store_get_file(s, d, "/tmp/copy.safetensors");   // verified
 *     fw_store_destroy(&s);
 *
 * Functions return 0 or a negative fw_err with fw_err_detail() saying what
 * failed and where. Digest arguments are validated first: anything but the
 * canonical text form is FW_EINVAL. A store handle may be used by one thread
 * at a time; any number of processes may share one directory. */
#ifndef FW_STORE_H
#define FW_STORE_H

#include "fw_digest.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Default largest blob: 64 GiB, above any checkpoint or shard Flywheel writes
 * today, low enough that a runaway writer cannot fill a shared file system. */
#define FW_STORE_DEFAULT_MAX_BLOB (64ull << 30)

/* Largest tree manifest we read (16 MiB: ~100k entries), and entry limits. */
#define FW_STORE_TREE_MAX_MANIFEST (16u << 20)
#define FW_STORE_TREE_MAX_ENTRIES  100000
#define FW_STORE_TREE_MAX_DEPTH    32

typedef struct fw_store fw_store;

typedef struct {
    uint64_t size;    /* bytes */
    int64_t mtime_ns; /* last modification (cache: last use), ns since the epoch */
} fw_store_stat;

/* Called once per blob by list; return non-zero to stop (list returns 0). */
typedef int (*fw_store_list_fn)(const char *digest, const fw_store_stat *st, void *ctx);

/* ---- Backends ---------------------------------------------------------
 * A backend stores and returns opaque bytes under a digest; it never hashes.
 * The digest strings it receives have been validated. Every function returns
 * 0 or a negative fw_err with a detail. `impl` is the backend's own state. */
typedef struct fw_store_backend {
    const char *name; /* "dir", "s3", ... */
    /* Start a staging area for one new blob: nothing is visible until commit. */
    int (*stage_open)(void *impl, void **stagep);
    int (*stage_write)(void *stage, const void *data, size_t len);
    /* Publish the staged bytes (size bytes, already hashed to `digest`) under
     * digest. When a blob of that size already exists, keep it and discard
     * the stage (idempotent put). Consumes the stage whatever the outcome. */
    int (*stage_commit)(void *impl, void *stage, const char *digest, uint64_t size);
    /* Discard a stage. */
    void (*stage_abort)(void *impl, void *stage);
    /* Open a blob for positional reads; FW_ENOTFOUND when absent. */
    int (*open_read)(void *impl, const char *digest, void **readerp, uint64_t *size);
    /* Read up to len bytes at offset; *got 0 means end of blob. */
    int (*read_at)(void *reader, uint64_t offset, void *buf, size_t len, size_t *got);
    void (*close_read)(void *reader);
    int (*stat)(void *impl, const char *digest, fw_store_stat *st);
    int (*list)(void *impl, fw_store_list_fn fn, void *ctx);
    int (*remove)(void *impl, const char *digest);
    /* Optional (NULL: FW_EUNSUPPORTED): move a blob aside for inspection. */
    int (*quarantine)(void *impl, const char *digest);
    /* Where the blob lives, for error messages ("/srv/.../ab/abcd..", "s3://..."). */
    void (*describe)(void *impl, const char *digest, char *buf, size_t size);
    /* Optional (NULL: FW_EUNSUPPORTED): a local file path the caller may open. */
    int (*local_path)(void *impl, const char *digest, char *buf, size_t size);
    /* Optional: touch the blob's use time (the cache's LRU clock). */
    int (*touch)(void *impl, const char *digest);
    void (*destroy)(void *impl);
} fw_store_backend;

typedef struct {
    uint64_t max_blob_bytes; /* 0: FW_STORE_DEFAULT_MAX_BLOB */
} fw_store_opts;

/* A store over any backend; takes ownership of impl (destroyed with the
 * store, or at once when this fails). opts may be NULL. NULL + detail. */
fw_store *fw_store_new(const fw_store_backend *be, void *impl, const fw_store_opts *opts);

/* The directory backend rooted at `root`, created (with blobs/ and tmp/) if
 * missing. Layout: <root>/blobs/sha256/<2 hex>/<64 hex>, staging files in
 * <root>/tmp, quarantined blobs in <root>/quarantine. NULL + detail. */
fw_store *fw_store_open_dir(const char *root, const fw_store_opts *opts);

/* Remove leftover staging files in a directory store's tmp/ older than
 * max_age_s seconds (debris of writers that crashed); *removed may be NULL. */
int fw_store_dir_sweep_tmp(const char *root, int max_age_s, int *removed);

/* Idempotent; NULLs *sp. */
void fw_store_destroy(fw_store **sp);

const char *fw_store_backend_name(const fw_store *s);
uint64_t fw_store_max_blob(const fw_store *s);

/* ---- Blobs --------------------------------------------------------------
 * out_digest (FW_DIGEST_STR_SIZE bytes) receives the blob's digest. A put of
 * content already stored rewrites nothing and returns the same digest. */
int fw_store_put_buffer(fw_store *s, const void *data, size_t len, char *out_digest);
int fw_store_put_file(fw_store *s, const char *path, char *out_digest);

/* Streaming put: write any number of times, then commit. When `expected` is
 * not NULL, commit refuses (FW_ECORRUPT, nothing stored) content whose digest
 * differs. A write past the store's size limit fails with FW_ETOOBIG and
 * leaves only abort. commit and abort free *wp and NULL it. */
typedef struct fw_store_writer fw_store_writer;
fw_store_writer *fw_store_writer_new(fw_store *s);
int fw_store_writer_write(fw_store_writer *w, const void *data, size_t len);
uint64_t fw_store_writer_size(const fw_store_writer *w);
int fw_store_writer_commit(fw_store_writer **wp, const char *expected, char *out_digest);
void fw_store_writer_abort(fw_store_writer **wp);

/* Verified streaming read. fw_store_reader_read returns bytes read (0 at the
 * end) or a negative fw_err; when the end is reached it checks the digest
 * and returns FW_ECORRUPT instead of 0 if the bytes do not match, so a
 * caller that reads to the end has verified everything it consumed. Bytes
 * handed out before that point are unverified: consumers that act on a
 * prefix must stage it until the end (get_file does). */
typedef struct fw_store_reader fw_store_reader;
fw_store_reader *fw_store_reader_open(fw_store *s, const char *digest);
long long fw_store_reader_read(fw_store_reader *r, void *buf, size_t len);
uint64_t fw_store_reader_size(const fw_store_reader *r);
void fw_store_reader_close(fw_store_reader **rp);

/* Copy a blob to `path` atomically (fw_file: ".new" + fsync + rename), after
 * verifying it; on FW_ECORRUPT `path` is left untouched. mode 0644. */
int fw_store_get_file(fw_store *s, const char *digest, const char *path);

/* Read a whole blob (at most max bytes, FW_ETOOBIG otherwise) into a malloc'd
 * buffer with a NUL after the last byte, verified; caller frees *out. */
int fw_store_get_buffer(fw_store *s, const char *digest, size_t max, char **out, size_t *len);

/* Read the whole blob and check its digest (and size): 0, FW_ECORRUPT,
 * FW_ENOTFOUND. */
int fw_store_verify(fw_store *s, const char *digest);

int fw_store_stat_blob(fw_store *s, const char *digest, fw_store_stat *st);
/* true when present (false also for an invalid digest). */
bool fw_store_exists(fw_store *s, const char *digest);
/* Every blob, in no particular order; entries that are not blobs are skipped. */
int fw_store_list(fw_store *s, fw_store_list_fn fn, void *ctx);
/* FW_ENOTFOUND when absent. */
int fw_store_remove(fw_store *s, const char *digest);
/* Move a (corrupt) blob out of the store for inspection; FW_EUNSUPPORTED
 * when the backend cannot, in which case callers remove it instead. */
int fw_store_quarantine(fw_store *s, const char *digest);
/* A path the caller may open (directory backend); FW_EUNSUPPORTED otherwise. */
int fw_store_local_path(fw_store *s, const char *digest, char *buf, size_t size);

/* Copy a blob from src into dst (streamed, verified; idempotent). */
int fw_store_copy(fw_store *dst, fw_store *src, const char *digest);

/* ---- Chunked transfers (the submission socket) --------------------------
 * Upload: chunks must arrive in order, each at exactly the offset of bytes
 * received so far; a gap, an overlap or a chunk past the declared size is
 * FW_EPROTO and poisons the upload (only abort remains). commit requires the
 * client's digest: a mismatch is FW_ECORRUPT and nothing is stored; fewer
 * bytes than declared is FW_EPROTO. total_size 0 means "not declared". */
typedef struct fw_store_upload fw_store_upload;
fw_store_upload *fw_store_upload_begin(fw_store *s, uint64_t total_size);
int fw_store_upload_chunk(fw_store_upload *u, uint64_t offset, const void *data, size_t len);
uint64_t fw_store_upload_received(const fw_store_upload *u);
int fw_store_upload_commit(fw_store_upload **up, const char *expected_digest);
void fw_store_upload_abort(fw_store_upload **up);

/* Download: up to max bytes of a blob at offset into buf; *got 0 at the end.
 * Unverified (the client hashes what it received and compares with the
 * digest it asked for); offset past the end is FW_EINVAL. *size, when not
 * NULL, receives the blob's size. */
int fw_store_read_chunk(fw_store *s, const char *digest, uint64_t offset, void *buf, size_t max,
                        size_t *got, uint64_t *size);

/* ---- Trees (directory artifacts) ------------------------------------------
 * put_tree stores every regular file below dir and then the manifest; the
 * manifest's digest (written to out_digest) names the directory. Identical
 * file names, contents and executable bits give the identical digest,
 * whatever the creation order, timestamps or umask. Symbolic links and
 * special files are refused (FW_EUNSUPPORTED); empty directories are not
 * recorded. */
int fw_store_put_tree(fw_store *s, const char *dir, char *out_digest);

/* Materialise a tree at dest (which must not exist: FW_EEXIST): every file
 * is fetched and verified into "<dest>.tmp-<pid>-<n>", which is renamed to
 * dest only when complete, so dest appears whole or not at all. */
int fw_store_materialise_tree(fw_store *s, const char *tree_digest, const char *dest);

/* Each manifest entry in name order (names are relative, '/'-separated;
 * mode is 0644 or 0755). Return non-zero from fn to stop. FW_ECORRUPT when
 * the blob is not a valid manifest. */
typedef int (*fw_store_tree_fn)(const char *name, const char *digest, uint64_t size, unsigned mode,
                                void *ctx);
int fw_store_tree_foreach(fw_store *s, const char *tree_digest, fw_store_tree_fn fn, void *ctx);

/* ---- Local cache -----------------------------------------------------------
 * An agent's cache of remote blobs: a directory store of its own, bounded in
 * bytes, evicting the least recently used blobs (by mtime, which every hit
 * refreshes; atime is unreliable under noatime/relatime mounts). */
typedef struct fw_store_cache fw_store_cache;

/* max_bytes 0: unbounded. verify_hits: re-hash a cached blob on every hit
 * (catches local disk corruption at the price of one read). NULL + detail. */
fw_store_cache *fw_store_cache_new(const char *dir, uint64_t max_bytes, bool verify_hits);
void fw_store_cache_destroy(fw_store_cache **cp);

/* A local path holding the blob `digest`: from the cache when present (and,
 * with verify_hits, intact), otherwise fetched from `remote`, verified and
 * cached. A corrupt cached copy is removed and fetched again. A blob larger
 * than the whole cache is FW_ETOOBIG. Caller frees *local_path. The file may
 * be evicted by a later get: open it before fetching much else. */
int fw_store_cache_get(fw_store_cache *c, fw_store *remote, const char *digest, char **local_path);

/* Evict least recently used blobs until the cache holds at most max_bytes,
 * sparing `keep` (may be NULL). *evicted may be NULL. */
int fw_store_cache_trim(fw_store_cache *c, const char *keep, int *evicted);

/* Bytes held now (a scan of the directory). */
int fw_store_cache_usage(fw_store_cache *c, uint64_t *bytes, int *blobs);

/* The cache's own directory store (for materialising trees from it). */
fw_store *fw_store_cache_store(fw_store_cache *c);

#endif
