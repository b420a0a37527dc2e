/* fuzz_seeds.c - write the fuzz seed corpus: one frame per message of the
 * table with every field set and one with only the required fields, plus a
 * frame with an lz4-compressed field and one with deep nesting. Generated
 * from the schema, so new messages get seeds without anyone adding files.
 *
 *   proto_fuzz_seeds DIR     (DIR is created; prints the count and bytes) */
#include "fw_proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static long s_bytes;

static int s_write(const char *dir, const char *name, const fw_msg_t *m) {
    uint8_t *buf;
    size_t len;
    if (!m || fw_msg_encode(m, &buf, &len) < 0) return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int rc = f && fwrite(buf, 1, len, f) == len ? 0 : -1;
    if (f && fclose(f) != 0) rc = -1;
    free(buf);
    s_bytes += (long)len;
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: proto_fuzz_seeds DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    /* mkdir -p: the build tree may not have the parent yet. */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        perror(dir);
        return 1;
    }
    int n = 0, bad = 0;
    char name[128];
    for (int i = 0; i < fw_proto_msg_count(); i++) {
        const fw_msg_info *mi = fw_proto_msg_at(i);
        for (int all = 0; all <= 1; all++) {
            fw_msg_t *m = fw_proto_example(mi->id, all, (uint64_t)(i + 1));
            snprintf(name, sizeof name, "%03d-%s-%s", mi->id, mi->name, all ? "all" : "required");
            bad += s_write(dir, name, m) < 0;
            fw_msg_destroy(&m);
            n++;
        }
    }
    /* lz4: 96 KiB of log text compresses to a few hundred bytes. */
    fw_msg_t *m = fw_proto_example(FW_MSG_TASK_LOG, false, 1);
    size_t big = 96u << 10;
    char *text = malloc(big);
    for (size_t j = 0; j < big; j++) text[j] = "step 12 loss 2.31 lr 3e-4\n"[j % 26];
    bad += fw_msg_set_bin(m, "data", text, big) < 0 || s_write(dir, "lz4-TASK_LOG", m) < 0;
    free(text);
    fw_msg_destroy(&m);
    n++;
    /* Nesting at the depth limit. */
    m = fw_proto_example(FW_MSG_TASK_PROGRESS, false, 1);
    fw_val_t *v = fw_val_new_array();
    fw_val_array_push_uint(v, 1);
    for (int d = 1; d < 8; d++) {
        fw_val_t *outer = fw_val_new_map();
        fw_val_map_set(outer, "x", &v);
        v = outer;
    }
    bad += fw_msg_set_map(m, "metrics", &v) < 0 || s_write(dir, "deep-TASK_PROGRESS", m) < 0;
    fw_msg_destroy(&m);
    n++;
    printf("proto_fuzz_seeds: %d seeds, %ld bytes in %s\n%d passed, %d failed\n", n, s_bytes, dir,
           n - bad, bad);
    return bad ? 1 : 0;
}
