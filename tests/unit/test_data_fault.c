/* fw_data_tokenize under injected I/O faults (SQLite style): fail the N-th
 * file operation (open of .new, each write, the header patch, fsync,
 * rename, directory fsync) for N = 1, 2, ... until a run completes without
 * the fault firing. Every failed run must return an error, leave the
 * previous shard byte for byte as it was (or, for a failed directory fsync
 * after the rename, the complete new shard) and no "<shard>.new" behind.
 * Built with data.c, fw_file.c and fw_fault.c compiled in, with
 * FW_FAULT_INJECTION=1 (tests/data.cmake). */
#include "data.h"
#include "fw_err.h"
#include "fw_fault.h"
#include "fw_log.h"
#include "fw_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *s_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = malloc(1 << 20);
    *len = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

static void test_faults(void) {
    fw_tokenizer *tok = fw_tokenizer_load(fw_test_shared("gpt2-tokenizer"));
    REQUIRE(tok);
    char *dir = fw_test_tmpdir("data-fault");
    REQUIRE(dir);
    char src[600], dst[600], tmp[620];
    snprintf(src, sizeof src, "%s/in.jsonl", dir);
    snprintf(dst, sizeof dst, "%s/out.shard", dir);
    snprintf(tmp, sizeof tmp, "%s.new", dst);
    /* Enough records that the token stream needs several buffered writes. */
    FILE *f = fopen(src, "wb");
    REQUIRE(f);
    for (int i = 0; i < 4000; i++)
        fprintf(f, "{\"text\": \"record %d says hello to the world of shards\"}\n", i);
    fclose(f);
    f = fopen(dst, "wb");
    REQUIRE(f);
    fputs("old shard", f);
    fclose(f);

    int n, failures = 0;
    for (n = 1; n < 200; n++) {
        fw_fault_reset();
        fw_fault_arm(FW_FAULT_ANY, n);
        int rc = fw_data_tokenize(src, tok, dst, NULL, NULL);
        int fired = fw_fault_fired();
        fw_fault_reset();
        struct stat st;
        CHECKF(stat(tmp, &st) != 0, "n=%d: %s left behind", n, tmp);
        size_t len = 0;
        char *b = s_slurp(dst, &len);
        fw_shard *s = fw_shard_open(dst);
        if (!fired) {
            CHECKF(rc == 0, "n=%d: %s", n, fw_err_detail());
            CHECK(s != NULL);
            fw_shard_close(&s);
            free(b);
            break;
        }
        failures++;
        CHECKF(rc < 0, "n=%d: fault fired but rc 0", n);
        /* Old content, or (directory fsync failed after the rename) the new. */
        int old = b && len == 9 && memcmp(b, "old shard", 9) == 0;
        CHECKF(old || s != NULL, "n=%d: shard is neither old nor complete new", n);
        fw_shard_close(&s);
        free(b);
        if (!old) { /* restore the old file for the next round */
            f = fopen(dst, "wb");
            if (f) fputs("old shard", f), fclose(f);
        }
    }
    CHECKF(failures >= 5, "only %d fault points met", failures);
    CHECK(n < 200);
    fw_test_rmtree(dir);
    free(dir);
    fw_tokenizer_destroy(&tok);
}

int main(void) {
    fw_log_set_level(FW_LOG_ERROR); /* one event=fault-injected line per round otherwise */
    RUN(test_faults);
    return fw_test_summary();
}
