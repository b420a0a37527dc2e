/* coord_config.h - the coordinator's option table and its parsed values.
 *
 * The table (coord_opts[]) prints `flywheel-coordinator --help` and the
 * coordinator section of docs/configuration.md; coord_opts_read() turns a
 * loaded fw_config into plain fields so the hot path never looks options up
 * by name. Every period and timeout is here so tests can shrink them. */
#ifndef COORD_CONFIG_H
#define COORD_CONFIG_H

#include "fw_config.h"

#include <stdbool.h>
#include <stdint.h>

extern const fw_opt coord_opts[];

typedef struct {
    char name[65];
    const char *client_bind, *agent_bind, *http_bind, *advertise_host;
    const char *tokens_file;
    const char *etcd_endpoints, *etcd_prefix, *etcd_user, *etcd_password_file;
    int64_t etcd_timeout_ms;
    int64_t election_ttl_ms;
    int64_t reconcile_window_ms;
    int64_t agent_heartbeat_ms;
    int64_t assign_timeout_ms;
    int64_t retry_backoff_ms, retry_backoff_max_ms;
    int64_t batch_delay_ms;
    int batch_max_ops;
    int txn_inflight;
    int64_t max_tasks_per_job;
    int sched_budget;
    int rendezvous_port_min, rendezvous_port_max;
    int64_t result_max_bytes;
    int retain_jobs;
    int64_t cron_ms;
    int64_t log_follow_ms;
    int64_t kill_grace_ms;
    int64_t compact_every_ms;
    int64_t compact_keep_revisions;
    const char *store_dir; /* "" = no artifact store */
    int64_t upload_timeout_ms;
    int64_t upload_max_bytes;
    int max_uploads;
    bool curve_enabled;
    const char *curve_secret_key_file, *curve_public_key_file, *curve_clients_dir;
} coord_opts_t;

/* Fill o from cfg (strings point into cfg). Checks what the table cannot
 * (port range order, ttl a whole number of seconds); FW_ECONFIG on error. */
int coord_opts_read(const fw_config *cfg, coord_opts_t *o);

#endif
