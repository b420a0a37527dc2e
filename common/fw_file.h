/* fw_file.h - durable file writes, bounded reads, directory helpers.
 *
 * Every file Flywheel keeps (checkpoints, the artifact cache, state files) is
 * written atomically: the bytes go to "<path>.new", which is fsync'ed, then
 * renamed over <path>, and the containing directory is fsync'ed so the
 * rename itself survives a crash. A reader therefore sees either the old
 * content or the new, never a mix, and after a successful commit the new
 * content is on disk.
 *
 * Functions return 0 or a negative fw_err with fw_err_detail() naming the
 * path and the failed call ("fsync /var/lib/x.new: Input/output error").
 *
 * Fault points (see fw_fault.h), in the order an atomic write meets them:
 *   file.open      opening "<path>.new"
 *   file.write     each write(2) into it
 *   file.fsync     fsync of the file
 *   file.rename    rename over <path>
 *   file.dirfsync  fsync of the directory (fw_file_fsync_dir)
 *   file.read      each read(2) in fw_file_read
 * A fault acts as if the call failed with EIO. */
#ifndef FW_FILE_H
#define FW_FILE_H

#include <stddef.h>
#include <sys/types.h>

/* One atomic write in progress. Writes may be many and large (a checkpoint
 * streams gigabytes through it); nothing is visible at <path> until commit. */
typedef struct fw_file_atomic fw_file_atomic;

/* Start writing <path> atomically: creates (truncates) "<path>.new" with
 * `mode` (e.g. 0644, or 0600 for secrets). NULL + fw_err_detail on failure. */
fw_file_atomic *fw_file_atomic_open(const char *path, mode_t mode);

/* Append len bytes (handles short writes and EINTR). 0 / negative fw_err; after
 * an error the writer only accepts abort (commit fails). */
int fw_file_atomic_write(fw_file_atomic *w, const void *data, size_t len);

/* The descriptor of "<path>.new", for callers that write through their own
 * code (sendfile, a compressor). Do not close it. */
int fw_file_atomic_fd(const fw_file_atomic *w);

/* fsync, close, rename over <path>, fsync the directory; frees *wp and sets it
 * to NULL whatever the outcome. On failure before the rename "<path>.new" is
 * removed and <path> keeps its old content; a failure of the final directory
 * fsync leaves the new content in place but still returns FW_EIO, because
 * its durability is not assured. */
int fw_file_atomic_commit(fw_file_atomic **wp);

/* Give up: close and remove "<path>.new", free *wp, NULL it. Idempotent. */
void fw_file_atomic_abort(fw_file_atomic **wp);

/* One-shot atomic write of a buffer (open + write + commit). */
int fw_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* Read all of `path` into a malloc'd buffer with a '\0' after the last byte
 * (so text can be used as a string); caller frees *out. Fails with
 * FW_ETOOBIG when the file is larger than max bytes, FW_ENOTFOUND when it
 * does not exist, FW_EPERM when it may not be read, FW_EIO otherwise. *out
 * is NULL and *len 0 on failure. len may be NULL. */
int fw_file_read(const char *path, size_t max, char **out, size_t *len);

/* mkdir -p: create path and any missing parents with `mode` (e.g. 0755).
 * Existing directories are fine; an existing non-directory is FW_EEXIST. */
int fw_file_mkdirs(const char *path, mode_t mode);

/* rm -rf without a shell: remove path and everything below it, depth first
 * with nftw, never following symbolic links (a link is removed, not its
 * target) and never crossing into another file system. A missing path is
 * success. Refuses "", "/", "." and ".." (FW_EINVAL). */
int fw_file_remove_tree(const char *path);

/* fsync the directory `dir` (after creating, renaming or removing entries). */
int fw_file_fsync_dir(const char *dir);

#endif
