/* coord_config.c - the coordinator's options (see coord_config.h). */
#include "coord_config.h"

#include "fw_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *s_check_zmq(const char *text) {
    if (strncmp(text, "tcp://", 6) != 0 && strncmp(text, "ipc://", 6) != 0 &&
        strncmp(text, "inproc://", 9) != 0)
        return "must be a ZeroMQ endpoint (tcp://host:port, ipc://path)";
    return NULL;
}

static const char *s_check_hostport(const char *text) {
    if (!*text) return NULL; /* empty: HTTP off */
    const char *colon = strrchr(text, ':');
    if (!colon || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return "must be host:port (e.g. 127.0.0.1:7102), or empty to turn HTTP off";
    return NULL;
}

const fw_opt coord_opts[] = {
    {.name = "coordinator.name", .type = FW_OPT_STRING,
     .help = "Name of this coordinator in the election, logs and `cluster status` (empty: "
             "<hostname>-<pid>)."},
    {.name = "coordinator.client_bind", .type = FW_OPT_STRING, .def = "tcp://127.0.0.1:7100",
     .validate = s_check_zmq,
     .help = "ZeroMQ endpoint for clients (flywheelctl, notebooks): the job submission socket."},
    {.name = "coordinator.agent_bind", .type = FW_OPT_STRING, .def = "tcp://127.0.0.1:7101",
     .validate = s_check_zmq, .help = "ZeroMQ endpoint agents connect to."},
    {.name = "coordinator.http_bind", .type = FW_OPT_STRING, .def = "127.0.0.1:7102",
     .validate = s_check_hostport,
     .help = "host:port of the HTTP server for /healthz, /readyz and /metrics (empty: off)."},
    {.name = "coordinator.advertise_host", .type = FW_OPT_STRING,
     .help = "Host put into etcd for agents and clients to reach this coordinator (empty: the "
             "host of each bind address, or the hostname when that is a wildcard)."},
    {.name = "coordinator.tokens_file", .type = FW_OPT_STRING,
     .help = "Bearer tokens of clients, one `<token> <name> <admin|user>` per line. Without "
             "it every client request is refused (FW_EAUTH)."},
    /* etcd leases are granted in whole seconds. 1s is for tests; a TTL much
     * beyond a minute makes failover as slow. */
    {.name = "election.ttl", .type = FW_OPT_DURATION, .def = "5s", .min = "1s", .max = "120s",
     .help = "TTL of the coordinator's etcd lease. The leader renews it every TTL/3 and steps "
             "down when a renewal is late past the TTL; a standby takes over within about a "
             "TTL of the leader's death. Whole seconds."},
    {.name = "coordinator.reconcile_window", .type = FW_OPT_DURATION, .def = "10s", .min = "0",
     .max = "10m",
     .help = "After a takeover, how long to wait for an agent that holds tasks to re-register "
             "before its tasks are retried elsewhere. Match agent.lease_ttl."},
    {.name = "coordinator.agent_heartbeat", .type = FW_OPT_DURATION, .def = "2s",
     .min = "100ms", .max = "1h",
     .help = "Heartbeat period asked of agents in AGENT_REGISTERED."},
    {.name = "coordinator.assign_timeout", .type = FW_OPT_DURATION, .def = "30s", .min = "1s",
     .max = "1h",
     .help = "A task assigned this long ago that its agent neither started nor lists in its "
             "heartbeats is taken as lost (the TASK_ASSIGN went astray) and retried."},
    {.name = "coordinator.retry_backoff", .type = FW_OPT_DURATION, .def = "1s", .min = "0",
     .max = "1h", .help = "Backoff before a task's first retry; doubles with each further "
             "retry."},
    {.name = "coordinator.retry_backoff_max", .type = FW_OPT_DURATION, .def = "60s", .min = "0",
     .max = "24h", .help = "Upper bound of the retry backoff."},
    {.name = "coordinator.batch_delay", .type = FW_OPT_DURATION, .def = "1ms", .min = "0",
     .max = "1s",
     .help = "While a txn is in flight, how long state changes may wait to fill the next one. "
             "With no txn in flight changes go out at once."},
    {.name = "coordinator.batch_max_ops", .type = FW_OPT_INT, .def = "128", .min = "2",
     .max = "10000",
     .help = "Operations per etcd txn (etcd's --max-txn-ops, 128 by default). One is the "
             "audit entry."},
    {.name = "coordinator.txn_inflight", .type = FW_OPT_INT, .def = "3", .min = "1", .max = "16",
     .help = "etcd txns in flight at once (each on its own thread)."},
    {.name = "coordinator.max_tasks_per_job", .type = FW_OPT_INT, .def = "1000000", .min = "1",
     .max = "100000000", .help = "Largest shard count (or world size) a job may ask for."},
    {.name = "coordinator.sched_budget", .type = FW_OPT_INT, .def = "2048", .min = "1",
     .max = "1000000",
     .help = "Placements per scheduling pass; the rest follows in the next loop turn, so one "
             "huge job cannot stall the event loop."},
    {.name = "coordinator.rendezvous_port_min", .type = FW_OPT_INT, .def = "29500", .min = "1",
     .max = "65535", .help = "First port of the range handed to gangs for their rendezvous."},
    {.name = "coordinator.rendezvous_port_max", .type = FW_OPT_INT, .def = "29999", .min = "1",
     .max = "65535", .help = "Last port of the rendezvous range."},
    {.name = "coordinator.result_max_bytes", .type = FW_OPT_SIZE, .def = "64KiB", .min = "64",
     .max = "1MiB",
     .help = "Largest task result kept in etcd; bigger ones are recorded as "
             "{\"truncated\":true}."},
    {.name = "coordinator.retain_jobs", .type = FW_OPT_INT, .def = "200", .min = "0",
     .max = "1000000",
     .help = "Finished jobs whose tasks stay in memory; older ones are read from etcd when "
             "asked for."},
    {.name = "coordinator.cron_interval", .type = FW_OPT_DURATION, .def = "10ms", .min = "1ms",
     .max = "1s",
     .help = "Period of the coordinator's cron (leases, retries, timeouts, metrics)."},
    {.name = "coordinator.log_follow_interval", .type = FW_OPT_DURATION, .def = "500ms",
     .min = "10ms", .max = "1m",
     .help = "How often `job logs -f` polls the agent when no new output came."},
    {.name = "coordinator.kill_grace", .type = FW_OPT_DURATION, .def = "10s", .min = "0",
     .max = "1h", .help = "Grace between SIGTERM and SIGKILL asked in TASK_CANCEL."},
    {.name = "coordinator.compact_interval", .type = FW_OPT_DURATION, .def = "5m", .min = "0",
     .max = "24h",
     .help = "How often the leader compacts etcd's history (0: never; leave it to etcd's "
             "--auto-compaction)."},
    {.name = "coordinator.compact_keep", .type = FW_OPT_INT, .def = "100000", .min = "1000",
     .max = "1000000000", .help = "Revisions of history kept by each compaction."},
    {.name = "coordinator.store_dir", .type = FW_OPT_STRING,
     .help = "Root of the artifact store (directory backend, docs/artifacts.md) that holds "
             "dataset and other blobs; every coordinator must see the same directory (a "
             "shared file system across machines). Empty: no store, and blob and dataset "
             "requests are refused."},
    {.name = "coordinator.upload_timeout", .type = FW_OPT_DURATION, .def = "60s", .min = "1s",
     .max = "1h", .help = "An upload with no chunk for this long is dropped (checked whenever a "
             "blob request arrives)."},
    {.name = "coordinator.upload_max_bytes", .type = FW_OPT_SIZE, .def = "16GiB",
     .min = "1KiB", .max = "64GiB", .help = "Largest blob a client may upload."},
    {.name = "coordinator.max_uploads", .type = FW_OPT_INT, .def = "64", .min = "1",
     .max = "100000", .help = "Uploads in progress at once, over all clients."},
    {.name = "curve.enabled", .type = FW_OPT_BOOL, .def = "false",
     .help = "Encrypt and authenticate both ZeroMQ endpoints with CURVE (czmq zcert/zauth). "
             "Agents and clients then need the server's public key."},
    {.name = "curve.secret_key_file", .type = FW_OPT_STRING,
     .help = "The server certificate with its secret key (zcert format, the *_secret file)."},
    {.name = "curve.public_key_file", .type = FW_OPT_STRING,
     .help = "The server's public certificate, handed to agents and clients."},
    {.name = "curve.clients_dir", .type = FW_OPT_STRING,
     .help = "Directory of client public certificates allowed to connect (empty: any client "
             "that knows the server key)."},
    FW_OPT_END,
};

int coord_opts_read(const fw_config *cfg, coord_opts_t *o) {
    memset(o, 0, sizeof *o);
    const char *name = fw_config_get_str(cfg, "coordinator.name");
    if (name[0]) {
        if (strlen(name) > 64 || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                              "0123456789._-") != strlen(name))
            return fw_err_set(FW_ECONFIG, "coordinator.name '%.80s': 1-64 of [A-Za-z0-9._-]", name);
        snprintf(o->name, sizeof o->name, "%s", name);
    } else {
        char host[64] = "coordinator";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        char *dot = strchr(host, '.');
        if (dot) *dot = '\0';
        snprintf(o->name, sizeof o->name, "%.40s-%d", host, (int)getpid());
    }
    o->client_bind = fw_config_get_str(cfg, "coordinator.client_bind");
    o->agent_bind = fw_config_get_str(cfg, "coordinator.agent_bind");
    o->http_bind = fw_config_get_str(cfg, "coordinator.http_bind");
    o->advertise_host = fw_config_get_str(cfg, "coordinator.advertise_host");
    o->tokens_file = fw_config_get_str(cfg, "coordinator.tokens_file");
    o->etcd_prefix = fw_config_get_str(cfg, "etcd.prefix");
    o->etcd_user = fw_config_get_str(cfg, "etcd.user");
    o->etcd_password_file = fw_config_get_str(cfg, "etcd.password_file");
    o->etcd_timeout_ms = fw_config_get_duration(cfg, "etcd.timeout");
    o->election_ttl_ms = fw_config_get_duration(cfg, "election.ttl");
    if (o->election_ttl_ms % 1000)
        return fw_err_set(FW_ECONFIG, "election.ttl: etcd leases are whole seconds");
    o->reconcile_window_ms = fw_config_get_duration(cfg, "coordinator.reconcile_window");
    o->agent_heartbeat_ms = fw_config_get_duration(cfg, "coordinator.agent_heartbeat");
    o->assign_timeout_ms = fw_config_get_duration(cfg, "coordinator.assign_timeout");
    o->retry_backoff_ms = fw_config_get_duration(cfg, "coordinator.retry_backoff");
    o->retry_backoff_max_ms = fw_config_get_duration(cfg, "coordinator.retry_backoff_max");
    o->batch_delay_ms = fw_config_get_duration(cfg, "coordinator.batch_delay");
    o->batch_max_ops = (int)fw_config_get_int(cfg, "coordinator.batch_max_ops");
    o->txn_inflight = (int)fw_config_get_int(cfg, "coordinator.txn_inflight");
    o->max_tasks_per_job = fw_config_get_int(cfg, "coordinator.max_tasks_per_job");
    o->sched_budget = (int)fw_config_get_int(cfg, "coordinator.sched_budget");
    o->rendezvous_port_min = (int)fw_config_get_int(cfg, "coordinator.rendezvous_port_min");
    o->rendezvous_port_max = (int)fw_config_get_int(cfg, "coordinator.rendezvous_port_max");
    if (o->rendezvous_port_max < o->rendezvous_port_min)
        return fw_err_set(FW_ECONFIG, "coordinator.rendezvous_port_max %d is below "
                          "coordinator.rendezvous_port_min %d", o->rendezvous_port_max,
                          o->rendezvous_port_min);
    o->result_max_bytes = fw_config_get_size(cfg, "coordinator.result_max_bytes");
    o->retain_jobs = (int)fw_config_get_int(cfg, "coordinator.retain_jobs");
    o->cron_ms = fw_config_get_duration(cfg, "coordinator.cron_interval");
    o->log_follow_ms = fw_config_get_duration(cfg, "coordinator.log_follow_interval");
    o->kill_grace_ms = fw_config_get_duration(cfg, "coordinator.kill_grace");
    o->compact_every_ms = fw_config_get_duration(cfg, "coordinator.compact_interval");
    o->compact_keep_revisions = fw_config_get_int(cfg, "coordinator.compact_keep");
    o->store_dir = fw_config_get_str(cfg, "coordinator.store_dir");
    o->upload_timeout_ms = fw_config_get_duration(cfg, "coordinator.upload_timeout");
    o->upload_max_bytes = fw_config_get_size(cfg, "coordinator.upload_max_bytes");
    o->max_uploads = (int)fw_config_get_int(cfg, "coordinator.max_uploads");
    o->curve_enabled = fw_config_get_bool(cfg, "curve.enabled");
    o->curve_secret_key_file = fw_config_get_str(cfg, "curve.secret_key_file");
    o->curve_public_key_file = fw_config_get_str(cfg, "curve.public_key_file");
    o->curve_clients_dir = fw_config_get_str(cfg, "curve.clients_dir");
    if (o->curve_enabled && !o->curve_secret_key_file[0])
        return fw_err_set(FW_ECONFIG, "curve.enabled needs curve.secret_key_file");
    return 0;
}
