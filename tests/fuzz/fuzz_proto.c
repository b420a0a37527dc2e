/* fuzz_proto.c - the libFuzzer target over the decoder.
 *
 * Properties checked on every input, beyond "no crash, no leak, no UB"
 * (which the sanitizers check):
 *   - a failed decode returns FW_EPROTO, FW_ETOOBIG or FW_EVERSION with a
 *     detail, and no message;
 *   - an accepted frame re-encodes, and decoding that gives an equal
 *     message (so the decoder accepts nothing the encoder cannot write).
 * Built by run_fuzz.sh with clang -fsanitize=fuzzer; fuzz_replay.c gives it a
 * plain main() so every build replays the seed corpus through it. */
#include "fw_err.h"
#include "fw_proto.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_die(const char *why, int rc) {
    fprintf(stderr, "fuzz_proto: %s (rc %s, detail \"%s\")\n", why, fw_errname(rc),
            fw_err_detail());
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fw_msg_t *m = NULL;
    fw_err_clear();
    int rc = fw_msg_decode(data, size, &m);
    if (rc < 0) {
        if (m) s_die("error with a message", rc);
        if (rc != FW_EPROTO && rc != FW_ETOOBIG && rc != FW_EVERSION)
            s_die("unexpected error code", rc);
        if (!*fw_err_detail()) s_die("error without a detail", rc);
        return 0;
    }
    if (!m) s_die("success without a message", rc);
    uint8_t *buf = NULL;
    size_t len = 0;
    if ((rc = fw_msg_encode(m, &buf, &len)) < 0) s_die("accepted frame does not re-encode", rc);
    fw_msg_t *m2 = NULL;
    if ((rc = fw_msg_decode(buf, len, &m2)) < 0) s_die("re-encoded frame does not decode", rc);
    if (!fw_msg_equal(m, m2)) s_die("round trip changed the message", 0);
    free(buf);
    fw_msg_destroy(&m2);
    fw_msg_destroy(&m);
    return 0;
}
