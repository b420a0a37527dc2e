/* fw_embedfile.h - the header of an embedding matrix file (FWEMBED v1,
 * docs/file-formats.md "Embedding matrix"), in one place for its writer (the
 * engine's embed verb) and its readers (the agent rebasing a shard's row ids,
 * the leader merging shards).
 *
 *     0   magic "FWEMBED\0"
 *     8   u32 version = 1
 *     12  u32 dim
 *     16  u64 rows
 *     24  u64 data_off = 32 + 8 * rows
 *     32  u64 row id [rows], then float32 [rows][dim] at data_off
 *
 * Integers are little-endian; the ids and floats that follow are written as
 * they lie in memory (Flywheel's hosts are little-endian). */
#ifndef FW_EMBEDFILE_H
#define FW_EMBEDFILE_H

#include <stddef.h>
#include <stdint.h>

#define FW_EMBED_HDR      32
#define FW_EMBED_MAX_ROWS (1ull << 40)

typedef struct {
    uint32_t dim;
    uint64_t rows;
} fw_embed_hdr;

/* The header of a matrix of rows x dim. */
void fw_embed_hdr_write(unsigned char out[FW_EMBED_HDR], uint32_t dim, uint64_t rows);

/* Parse and check a header (magic, version 1, data_off, rows bound). When
 * file_size is not 0 it must be the whole file's size for these rows and
 * dim. 0, or FW_ECORRUPT with a detail starting with `what`. */
int fw_embed_hdr_read(const unsigned char in[FW_EMBED_HDR], uint64_t file_size, const char *what,
                      fw_embed_hdr *out);

#endif
