/* fw_test.c - support for fw_test.h. */
#include "fw_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int fw_test_passed;
int fw_test_failed;

int fw_test_summary(void) {
    printf("%d passed, %d failed\n", fw_test_passed, fw_test_failed);
    fflush(stdout);
    return fw_test_failed == 0 ? 0 : 1;
}

char *fw_test_tmpdir(const char *tag) {
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/fw-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    if (!mkdtemp(tmpl)) return NULL;
    return strdup(tmpl);
}

void fw_test_rmtree(const char *path) {
    if (!path || !*path || strcmp(path, "/") == 0) return;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

int fw_test_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

const char *fw_test_shared(const char *rel) {
    static _Thread_local char buf[1024];
    const char *d = getenv("FW_SHARED_DIR");
    snprintf(buf, sizeof buf, "%s/data/%s", d && *d ? d : "../shared", rel);
    return buf;
}

const char *fw_test_bin(const char *rel) {
    static _Thread_local char buf[1024];
    const char *d = getenv("FW_BINARY_DIR");
    snprintf(buf, sizeof buf, "%s/%s", d && *d ? d : ".", rel);
    return buf;
}

uint64_t fw_test_rand(uint64_t *state) {
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}
