/* agent_config.c - flywheel-agent's options.
 *
 * Every period and timeout is a key here so tests can shrink them (a test
 * cluster runs with lease_ttl 2s, heartbeat 200ms, kill_grace 500ms). */
#include "agent_config.h"

#include "agent_resources.h"
#include "fw_err.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

const fw_opt agent_opts[] = {
    {.name = "agent.id", .type = FW_OPT_STRING,
     .help = "Stable id of this agent in the cluster ([A-Za-z0-9._-], at most 64 characters); "
             "empty means the host name."},
    {.name = "agent.advertise_host", .type = FW_OPT_STRING,
     .help = "Host name or address other nodes use to reach this one (gang rendezvous); empty "
             "means the host name."},
    {.name = "agent.labels", .type = FW_OPT_LIST,
     .help = "Scheduling labels as key=value items (zone=a, gpu=h100); jobs select agents with "
             "spec.labels."},
    {.name = "agent.allow_command", .type = FW_OPT_BOOL, .def = "false",
     .help = "Run `command` tasks (arbitrary argv). Off by default: a task of kind command then "
             "fails with an error saying so. The local dev cluster turns it on."},
    {.name = "agent.lease_ttl", .type = FW_OPT_DURATION, .def = "10s", .min = "1s", .max = "1h",
     .help = "TTL of the agent's etcd lease: the leader declares the agent lost (and retries its "
             "tasks elsewhere) this long after the agent stops renewing. Kept alive every "
             "TTL/3. etcd rounds TTLs below its minimum (about 2s) up."},
    {.name = "agent.heartbeat_interval", .type = FW_OPT_DURATION, .def = "2s", .min = "10ms",
     .max = "15m",
     .help = "Period of HEARTBEAT messages to the leader. At most a quarter of agent.lease_ttl, "
             "so that three lost beats still leave slack before expiry. The leader's "
             "AGENT_REGISTERED may ask for another period."},
    {.name = "agent.work_dir", .type = FW_OPT_STRING, .def = "/var/lib/flywheel/agent",
     .help = "Directory for the epoch file, the results journal, task logs and task scratch "
             "directories. Created if missing."},
    {.name = "agent.cpus", .type = FW_OPT_INT, .def = "0", .min = "0", .max = "65536",
     .help = "CPUs offered to the scheduler; 0 discovers them (the CPUs this process may run on)."},
    {.name = "agent.memory_mb", .type = FW_OPT_INT, .def = "0", .min = "0",
     .max = "1099511627776",
     .help = "Memory offered to the scheduler in MiB; 0 discovers it (MemTotal)."},
    {.name = "agent.gpu_discovery", .type = FW_OPT_BOOL, .def = "true",
     .help = "Look for GPUs through NVML, then the CUDA runtime (both loaded at run time); false "
             "offers none."},
    {.name = "agent.log_max_bytes", .type = FW_OPT_SIZE, .def = "16MiB", .min = "1KiB",
     .max = "1TiB", .help = "Size at which a task attempt's log file is rotated."},
    {.name = "agent.log_keep", .type = FW_OPT_INT, .def = "3", .min = "1", .max = "1000",
     .help = "Log files kept per task attempt, the current one included; older bytes are "
             "deleted at rotation."},
    {.name = "agent.log_fetch_max", .type = FW_OPT_SIZE, .def = "1MiB", .min = "1KiB",
     .max = "4MiB",
     .help = "Most log bytes in one LOG_FETCH_REPLY when the request does not say (the protocol "
             "caps it at 4MiB)."},
    {.name = "agent.kill_grace", .type = FW_OPT_DURATION, .def = "10s", .min = "0ms", .max = "1h",
     .help = "Time between SIGTERM and SIGKILL when a task is cancelled, times out or the agent "
             "stops. A TASK_CANCEL may give its own."},
    {.name = "agent.retry_max", .type = FW_OPT_DURATION, .def = "5s", .min = "10ms", .max = "10m",
     .help = "Longest wait between retries of etcd and of registration with the leader "
             "(exponential backoff from a tenth of a second, with jitter)."},
    {.name = "agent.store_dir", .type = FW_OPT_STRING,
     .help = "The shared artifact store: the same directory as coordinator.store_dir (a local "
             "path, or a shared file system across machines). finetune, embed and eval tasks "
             "read models and datasets from it and write checkpoints and results to it; empty "
             "makes them fail with an error saying so."},
    {.name = "agent.cache_dir", .type = FW_OPT_STRING,
     .help = "Local cache of store blobs (datasets, checkpoints) and of materialised model "
             "directories (in its trees/ folder); empty means the cache/ folder of "
             "agent.work_dir."},
    {.name = "agent.cache_max_mb", .type = FW_OPT_INT, .def = "10240", .min = "0",
     .max = "1099511627776",
     .help = "Bound of the blob cache in MiB, least recently used blobs evicted first; 0 is "
             "unbounded. Materialised model directories are not counted."},
    {.name = "agent.engine", .type = FW_OPT_STRING,
     .help = "Path of flywheel-engine for ML tasks; empty looks beside the agent binary, then "
             "in the engine/ folder beside it (the build tree), then on PATH."},
    {.name = "curve.enabled", .type = FW_OPT_BOOL, .def = "false",
     .help = "Encrypt the connection to the coordinator with CURVE (needs "
             "curve.server_public_key_file)."},
    {.name = "curve.server_public_key_file", .type = FW_OPT_STRING,
     .help = "The coordinators' public certificate (zcert format) when curve.enabled."},
    {.name = "curve.secret_key_file", .type = FW_OPT_STRING,
     .help = "This agent's certificate (zcert secret file) when curve.enabled; empty generates "
             "a throwaway key pair at start."},
    FW_OPT_END};

static void s_hostname(char *buf, size_t size) {
    if (gethostname(buf, size) < 0 || !*buf) snprintf(buf, size, "localhost");
    buf[size - 1] = '\0';
}

static bool s_id_ok(const char *id) {
    size_t n = strlen(id);
    if (n == 0 || n > 64 || id[0] == '.') return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return false;
    return true;
}

int agent_config_resolve(const fw_config *cfg, agent_config_t *c) {
    memset(c, 0, sizeof *c);
    const char *id = fw_config_get_str(cfg, "agent.id");
    if (*id)
        snprintf(c->id, sizeof c->id, "%s", id);
    else
        s_hostname(c->id, sizeof c->id);
    if (!s_id_ok(c->id))
        return fw_err_set(FW_ECONFIG,
                          "key 'agent.id' (%s): '%s' is not 1-64 characters of [A-Za-z0-9._-]",
                          *id ? fw_config_origin(cfg, "agent.id") : "host name", c->id);
    const char *host = fw_config_get_str(cfg, "agent.advertise_host");
    if (*host)
        snprintf(c->host, sizeof c->host, "%s", host);
    else
        s_hostname(c->host, sizeof c->host);
    c->labels = fw_config_get_list(cfg, "agent.labels", &c->nlabels);
    if (c->nlabels > 64)
        return fw_err_set(FW_ECONFIG, "key 'agent.labels' (%s): %zu labels, at most 64",
                          fw_config_origin(cfg, "agent.labels"), c->nlabels);
    for (size_t i = 0; i < c->nlabels; i++) {
        size_t klen;
        if (agent_label_check(c->labels[i], &klen) < 0)
            return fw_err_set(FW_ECONFIG, "key 'agent.labels' (%s): %s",
                              fw_config_origin(cfg, "agent.labels"), fw_err_detail());
        for (size_t j = 0; j < i; j++)
            if (strncmp(c->labels[j], c->labels[i], klen + 1) == 0)
                return fw_err_set(FW_ECONFIG, "key 'agent.labels' (%s): label key '%.*s' twice",
                                  fw_config_origin(cfg, "agent.labels"), (int)klen,
                                  c->labels[i]);
    }
    c->allow_command = fw_config_get_bool(cfg, "agent.allow_command");
    c->lease_ttl_ms = fw_config_get_duration(cfg, "agent.lease_ttl");
    c->heartbeat_ms = fw_config_get_duration(cfg, "agent.heartbeat_interval");
    /* Heartbeat at most TTL/4: three lost beats still leave slack before the
     * leader (which also watches the lease) would give the agent up. */
    if (c->heartbeat_ms * 4 > c->lease_ttl_ms)
        return fw_err_set(FW_ECONFIG,
                          "key 'agent.heartbeat_interval' (%s): %lldms is more than a quarter of "
                          "agent.lease_ttl (%lldms)",
                          fw_config_origin(cfg, "agent.heartbeat_interval"),
                          (long long)c->heartbeat_ms, (long long)c->lease_ttl_ms);
    const char *wd = fw_config_get_str(cfg, "agent.work_dir");
    if (!*wd || strlen(wd) >= sizeof c->work_dir - 128)
        return fw_err_set(FW_ECONFIG, "key 'agent.work_dir' (%s): empty or too long",
                          fw_config_origin(cfg, "agent.work_dir"));
    snprintf(c->work_dir, sizeof c->work_dir, "%s", wd);
    c->cpus = (unsigned)fw_config_get_int(cfg, "agent.cpus");
    c->memory_mb = (uint64_t)fw_config_get_int(cfg, "agent.memory_mb");
    c->gpu_discovery = fw_config_get_bool(cfg, "agent.gpu_discovery");
    c->log_max_bytes = (uint64_t)fw_config_get_size(cfg, "agent.log_max_bytes");
    c->log_keep = (int)fw_config_get_int(cfg, "agent.log_keep");
    c->log_fetch_max = (size_t)fw_config_get_size(cfg, "agent.log_fetch_max");
    c->kill_grace_ms = fw_config_get_duration(cfg, "agent.kill_grace");
    c->retry_max_ms = fw_config_get_duration(cfg, "agent.retry_max");
    const char *store = fw_config_get_str(cfg, "agent.store_dir");
    const char *cache = fw_config_get_str(cfg, "agent.cache_dir");
    const char *engine = fw_config_get_str(cfg, "agent.engine");
    if (strlen(store) >= sizeof c->store_dir - 256 || strlen(cache) >= sizeof c->cache_dir - 256 ||
        strlen(engine) >= sizeof c->engine)
        return fw_err_set(FW_ECONFIG, "key 'agent.store_dir', 'agent.cache_dir' or "
                                      "'agent.engine': too long");
    snprintf(c->store_dir, sizeof c->store_dir, "%s", store);
    if (*cache)
        snprintf(c->cache_dir, sizeof c->cache_dir, "%s", cache);
    else
        snprintf(c->cache_dir, sizeof c->cache_dir, "%s/cache", c->work_dir);
    c->cache_max_mb = (uint64_t)fw_config_get_int(cfg, "agent.cache_max_mb");
    snprintf(c->engine, sizeof c->engine, "%s", engine);
    snprintf(c->etcd_prefix, sizeof c->etcd_prefix, "%s",
             fw_config_has(cfg, "etcd.prefix") ? fw_config_get_str(cfg, "etcd.prefix")
                                               : "/flywheel");
    c->curve = fw_config_get_bool(cfg, "curve.enabled");
    snprintf(c->curve_server_public_key_file, sizeof c->curve_server_public_key_file, "%s",
             fw_config_get_str(cfg, "curve.server_public_key_file"));
    snprintf(c->curve_secret_key_file, sizeof c->curve_secret_key_file, "%s",
             fw_config_get_str(cfg, "curve.secret_key_file"));
    if (c->curve && !c->curve_server_public_key_file[0])
        return fw_err_set(FW_ECONFIG, "key 'curve.enabled' (%s): true needs "
                          "curve.server_public_key_file",
                          fw_config_origin(cfg, "curve.enabled"));
    return 0;
}
