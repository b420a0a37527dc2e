/* bench_proto - wire protocol throughput.
 *
 *   1. A typical TASK_ASSIGN (~300 bytes on the wire): encode + decode per
 *      second, and MB/s of frames.
 *   2. An ARTIFACT_PUT_CHUNK carrying 1 MiB of real JSONL text (the State of
 *      the Union corpus), which the encoder lz4-compresses: encode + decode
 *      per second, MB/s of payload, and the compression ratio of the text.
 *
 * Prints one JSON line per figure. The corpus is found through FW_SHARED_DIR
 * (scripts/bench sets it) or ../shared beside the source tree. */
#include "fw_err.h"
#include "fw_proto.h"
#include "fw_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FW_SOURCE_DIR
#define FW_SOURCE_DIR "."
#endif

static void s_emit(const char *metric, double value, const char *unit) {
    printf("{\"bench\": \"proto\", \"metric\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"}\n",
           metric, value, unit);
    fflush(stdout);
}

static fw_msg_t *s_task_assign(void) {
    fw_msg_t *m = fw_msg_new(FW_MSG_TASK_ASSIGN);
    fw_msg_set_request_id(m, 123456789);
    fw_msg_set_epoch(m, 42);
    fw_msg_set_sender(m, "coord-1");
    fw_msg_set_str(m, "job_id", "job-20261123-0042");
    fw_msg_set_str(m, "task_id", "job-20261123-0042.train.3");
    fw_msg_set_uint(m, "attempt", 1);
    fw_msg_set_str(m, "kind", "train");
    fw_msg_set_str(m, "spec",
                   "{\"model\":\"gpt2-124m\",\"dataset\":\"sotu@v3\",\"steps\":2000,"
                   "\"batch\":8,\"seq_len\":1024,\"lr\":0.0003,\"checkpoint_every\":200}");
    fw_val_t *env = fw_val_new_map();
    fw_val_map_set_str(env, "OMP_NUM_THREADS", "8");
    fw_val_map_set_str(env, "NCCL_DEBUG", "WARN");
    fw_msg_set_map(m, "env", &env);
    fw_msg_set_uint(m, "rank", 3);
    fw_msg_set_uint(m, "world_size", 4);
    fw_msg_set_str(m, "rendezvous", "10.0.0.11:29500");
    fw_val_t *gpus = fw_val_new_array();
    fw_val_array_push_uint(gpus, 0);
    fw_val_array_push_uint(gpus, 1);
    fw_msg_set_array(m, "gpus", &gpus);
    fw_msg_set_uint(m, "timeout_ms", 86400000);
    return m;
}

/* Encode + decode m repeatedly for about `seconds`; returns round trips/s
 * and sets *frame_len. -1 on an error. */
static double s_roundtrips(const fw_msg_t *m, double seconds, size_t *frame_len,
                           double *enc_share) {
    int64_t t0 = fw_mono_ns(), enc_ns = 0;
    long n = 0;
    for (;;) {
        for (int k = 0; k < 16; k++) {
            uint8_t *buf;
            size_t len;
            int64_t a = fw_mono_ns();
            if (fw_msg_encode(m, &buf, &len) < 0) return -1;
            enc_ns += fw_mono_ns() - a;
            fw_msg_t *d = NULL;
            if (fw_msg_decode(buf, len, &d) < 0) {
                free(buf);
                return -1;
            }
            *frame_len = len;
            free(buf);
            fw_msg_destroy(&d);
            n++;
        }
        if ((double)(fw_mono_ns() - t0) > seconds * 1e9) break;
    }
    double elapsed = (double)(fw_mono_ns() - t0) / 1e9;
    *enc_share = (double)enc_ns / 1e9 / elapsed;
    return (double)n / elapsed;
}

/* The first `want` bytes of the corpus, cut at a line end; caller frees. */
static char *s_corpus(size_t want, size_t *got) {
    const char *shared = getenv("FW_SHARED_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/data/corpora/sotu.jsonl",
             shared && *shared ? shared : FW_SOURCE_DIR "/../shared");
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr,
                "bench_proto: cannot open %s\nHINT: set FW_SHARED_DIR to the shared/ folder\n",
                path);
        return NULL;
    }
    char *buf = malloc(want + 1);
    size_t n = buf ? fread(buf, 1, want, f) : 0;
    fclose(f);
    if (n < want) {
        fprintf(stderr, "bench_proto: %s is shorter than %zu bytes\n", path, want);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *got = n;
    return buf;
}

int main(void) {
    fw_msg_t *m = s_task_assign();
    size_t len = 0;
    double enc_share = 0;
    double rate = s_roundtrips(m, 2.0, &len, &enc_share);
    if (rate < 0) {
        fprintf(stderr, "bench_proto: TASK_ASSIGN failed: %s\n", fw_err_detail());
        return 1;
    }
    s_emit("task_assign_frame_bytes", (double)len, "bytes");
    s_emit("task_assign_encode_decode", rate, "msg/s");
    s_emit("task_assign_encode_decode_mb", rate * (double)len / 1e6, "MB/s");
    s_emit("task_assign_encode_only", rate / enc_share, "msg/s");
    fw_msg_destroy(&m);

    size_t n = 0;
    char *text = s_corpus(1u << 20, &n);
    if (!text) return 1;
    m = fw_msg_new(FW_MSG_ARTIFACT_PUT_CHUNK);
    fw_msg_set_str(m, "name", "datasets/sotu/v3/part-0000.jsonl");
    fw_msg_set_uint(m, "offset", 0);
    fw_msg_set_str(m, "digest",
                   "sha256:0000000000000000000000000000000000000000000000000000000000000000");
    if (fw_msg_set_bin(m, "data", text, n) < 0) {
        fprintf(stderr, "bench_proto: %s\n", fw_err_detail());
        return 1;
    }
    rate = s_roundtrips(m, 3.0, &len, &enc_share);
    if (rate < 0) {
        fprintf(stderr, "bench_proto: 1 MiB chunk failed: %s\n", fw_err_detail());
        return 1;
    }
    s_emit("chunk_1mib_lz4_frame_bytes", (double)len, "bytes");
    s_emit("chunk_1mib_lz4_compression_ratio", (double)n / (double)len, "x");
    s_emit("chunk_1mib_lz4_encode_decode", rate, "msg/s");
    s_emit("chunk_1mib_lz4_encode_decode_mb", rate * (double)n / 1e6, "MB/s");
    s_emit("chunk_1mib_lz4_encode_only_mb", rate / enc_share * (double)n / 1e6, "MB/s");
    s_emit("chunk_1mib_lz4_decode_only_mb", rate / (1 - enc_share) * (double)n / 1e6, "MB/s");
    fw_msg_destroy(&m);
    free(text);
    return 0;
}
