/* test_agent_resources.c - resource discovery parsing, the "no GPU" paths
 * of the dlopen code, labels and backoff. */
#include "agent_config.h"
#include "agent_etcd.h"
#include "agent_resources.h"
#include "fw_common_opts.h"
#include "fw_config.h"
#include "fw_err.h"
#include "fw_test.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

static void test_meminfo(void) {
    uint64_t total = 0, avail = 0;
    const char *ok = "MemTotal:       16384000 kB\nMemFree:         1000000 kB\n"
                     "MemAvailable:    8192000 kB\nBuffers: 12 kB\n";
    CHECK_EQ_INT(agent_meminfo_parse(ok, &total, &avail), 0);
    CHECK_EQ_INT(total, 16000);
    CHECK_EQ_INT(avail, 8000);
    /* Old kernels: no MemAvailable, MemFree stands in. */
    CHECK_EQ_INT(agent_meminfo_parse("MemTotal: 2048 kB\nMemFree: 1024 kB\n", &total, &avail), 0);
    CHECK_EQ_INT(total, 2);
    CHECK_EQ_INT(avail, 1);
    /* MemTotal must be present, numeric, in kB, non-zero. */
    CHECK_EQ_INT(agent_meminfo_parse("MemFree: 1024 kB\n", &total, &avail), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "MemTotal") != NULL);
    CHECK_EQ_INT(agent_meminfo_parse("MemTotal: lots kB\n", &total, NULL), FW_EINVAL);
    CHECK_EQ_INT(agent_meminfo_parse("MemTotal: 1024 MB\n", &total, NULL), FW_EINVAL);
    CHECK_EQ_INT(agent_meminfo_parse("MemTotal: 0 kB\n", &total, NULL), FW_EINVAL);
    CHECK_EQ_INT(agent_meminfo_parse("", &total, NULL), FW_EINVAL);
    /* A key that merely starts like MemTotal is not it. */
    CHECK_EQ_INT(agent_meminfo_parse("MemTotalX: 5 kB\n", &total, NULL), FW_EINVAL);
    /* The real file parses. */
    CHECK(agent_mem_used_mb() > 0);
}

static void test_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
    CHECK_EQ_INT(agent_cpu_count(), CPU_COUNT(&set));
    /* Restricting the affinity is what a cpuset does; discovery follows. */
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &set)) {
            CPU_SET(i, &one);
            break;
        }
    REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);
    CHECK_EQ_INT(agent_cpu_count(), 1);
    sched_setaffinity(0, sizeof set, &set);
}

static void test_no_gpu(void) {
    agent_gpu_t gpus[4];
    int n = 99;
    const char *src = NULL;
    /* Libraries that do not exist. */
    CHECK_EQ_INT(agent_gpu_discover("/nonexistent/libnvidia-ml.so.1", "/nonexistent/libcudart.so",
                                    gpus, 4, &n, &src),
                 0);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_STR(src, "none");
    /* Libraries that exist but are not a GPU driver: symbols missing. */
    n = 99;
    CHECK_EQ_INT(agent_gpu_discover("libm.so.6", "libz.so.1", gpus, 4, &n, &src), 0);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_STR(src, "none");
    /* Both sources skipped. */
    CHECK_EQ_INT(agent_gpu_discover("", "", gpus, 4, &n, &src), 0);
    CHECK_EQ_INT(n, 0);
    /* Whatever this machine has, the default probe must not fail or crash
     * and must report a known source. */
    CHECK_EQ_INT(agent_gpu_discover(NULL, NULL, gpus, 4, &n, &src), 0);
    CHECK(strcmp(src, "none") == 0 || strcmp(src, "nvml") == 0 || strcmp(src, "cudart") == 0);
    CHECK(n >= 0 && n <= 4);
    CHECK(strcmp(src, "none") != 0 || n == 0);
}

static void test_discover(void) {
    agent_resources_t r;
    CHECK_EQ_INT(agent_resources_discover(&r, 0, 0, "/tmp", "none"), 0);
    CHECK(r.cpus >= 1);
    CHECK(r.memory_mb > 0);
    CHECK(r.disk_mb > 0);
    CHECK_EQ_INT(r.ngpus, 0);
    CHECK_EQ_STR(r.gpu_source, "none");
    CHECK_EQ_INT(agent_resources_discover(&r, 7, 1234, NULL, "none"), 0);
    CHECK_EQ_INT(r.cpus, 7);
    CHECK_EQ_INT(r.memory_mb, 1234);
    CHECK_EQ_INT(r.disk_mb, 0);
}

static void test_labels(void) {
    size_t k = 0;
    CHECK_EQ_INT(agent_label_check("zone=a", &k), 0);
    CHECK_EQ_INT(k, 4);
    CHECK_EQ_INT(agent_label_check("topology.kubernetes.io/zone=eu-1b", &k), 0);
    CHECK_EQ_INT(agent_label_check("gpu=", &k), 0); /* empty value allowed */
    CHECK_EQ_INT(agent_label_check("zone", &k), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "key=value") != NULL);
    CHECK_EQ_INT(agent_label_check("=a", &k), FW_EINVAL);
    CHECK_EQ_INT(agent_label_check("zo ne=a", &k), FW_EINVAL);
    CHECK_EQ_INT(agent_label_check("zone=a\tb", &k), FW_EINVAL);
    char longkey[80];
    memset(longkey, 'k', 64);
    strcpy(longkey + 64, "=v");
    CHECK_EQ_INT(agent_label_check(longkey, &k), FW_EINVAL);
}

static int s_resolve(const char *yaml, agent_config_t *ac) {
    fw_config *cfg = fw_config_new("t", "t");
    int rc = fw_config_add(cfg, fw_common_opts);
    if (rc == 0) rc = fw_config_add(cfg, agent_opts);
    if (rc == 0) rc = fw_config_load_yaml(cfg, yaml, strlen(yaml), "test.yaml");
    if (rc == 0) rc = agent_config_resolve(cfg, ac);
    fw_config_destroy(&cfg);
    return rc;
}

static void test_config(void) {
    agent_config_t ac;
    CHECK_EQ_INT(fw_config_check_table(agent_opts), 0);
    CHECK_EQ_INT(s_resolve("agent: {id: n1, lease_ttl: 2s, heartbeat_interval: 500ms}\n", &ac), 0);
    CHECK_EQ_STR(ac.id, "n1");
    CHECK_EQ_INT(ac.heartbeat_ms, 500);
    /* More than TTL/4 is refused with the reason. */
    CHECK_EQ_INT(s_resolve("agent: {lease_ttl: 2s, heartbeat_interval: 600ms}\n", &ac), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "quarter") != NULL);
    CHECK_EQ_INT(s_resolve("agent: {id: \"a/b\"}\n", &ac), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "agent.id") != NULL);
    CHECK_EQ_INT(s_resolve("agent: {labels: [zone=a, zone=b]}\n", &ac), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "twice") != NULL);
    CHECK_EQ_INT(s_resolve("agent: {labels: [nolabel]}\n", &ac), FW_ECONFIG);
    CHECK_EQ_INT(s_resolve("curve: {enabled: true}\n", &ac), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "server_public_key_file") != NULL);
}

static void test_backoff(void) {
    uint64_t seed = 42;
    int64_t prev = 0;
    for (int i = 1; i <= 20; i++) {
        int64_t ms = agent_backoff_ms(i, 5000, &seed);
        CHECK(ms >= 1 && ms <= 5000 * 5 / 4);
        if (i == 1) CHECK(ms >= 75 && ms <= 125);
        if (i > 8) CHECK(ms >= 3750); /* capped near the max */
        prev = ms;
    }
    (void)prev;
}

static void test_leader_parse(void) {
    char ep[64], name[16];
    CHECK_EQ_INT(agent_leader_parse("{\"schema\":1,\"name\":\"coord-1\",\"client\":\"tcp://a:1\","
                                    "\"agent\":\"tcp://127.0.0.1:7101\",\"http\":\"x\"}",
                                    ep, sizeof ep, name, sizeof name),
                 0);
    CHECK_EQ_STR(ep, "tcp://127.0.0.1:7101");
    CHECK_EQ_STR(name, "coord-1");
    CHECK_EQ_INT(agent_leader_parse("{\"agent\":\"tcp://h:1\"}", ep, sizeof ep, name, sizeof name),
                 0);
    CHECK_EQ_STR(name, "");
    CHECK_EQ_INT(agent_leader_parse("{\"schema\":2,\"agent\":\"tcp://h:1\"}", ep, sizeof ep, name,
                                    sizeof name),
                 FW_EVERSION);
    CHECK_EQ_INT(agent_leader_parse("{\"name\":\"x\"}", ep, sizeof ep, name, sizeof name), FW_EINVAL);
    CHECK_EQ_INT(agent_leader_parse("{\"agent\":\"\"}", ep, sizeof ep, name, sizeof name), FW_EINVAL);
    CHECK_EQ_INT(agent_leader_parse("not json", ep, sizeof ep, name, sizeof name), FW_EINVAL);
    CHECK_EQ_INT(agent_leader_parse(NULL, ep, sizeof ep, name, sizeof name), FW_EINVAL);
    /* An endpoint that does not fit the buffer is refused, not cut. */
    CHECK_EQ_INT(agent_leader_parse("{\"agent\":\"tcp://a-very-long-host-name-indeed.example:7101\"}",
                                    ep, 16, name, sizeof name),
                 FW_EINVAL);
}

int main(void) {
    RUN(test_meminfo);
    RUN(test_cpus);
    RUN(test_no_gpu);
    RUN(test_discover);
    RUN(test_labels);
    RUN(test_config);
    RUN(test_backoff);
    RUN(test_leader_parse);
    return fw_test_summary();
}
