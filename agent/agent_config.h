/* agent_config.h - the agent's option table and its resolved values.
 *
 * agent_opts is the table (flywheel-agent --help and docs/configuration.md
 * are generated from it); agent_config_resolve() reads a loaded fw_config
 * into plain fields and checks the rules that span options (heartbeat at most
 * a quarter of the lease TTL, labels well formed). */
#ifndef AGENT_CONFIG_H
#define AGENT_CONFIG_H

#include "fw_config.h"

#include <stdbool.h>
#include <stdint.h>

extern const fw_opt agent_opts[];

typedef struct {
    char id[65];        /* agent.id, or the host name */
    char host[256];     /* agent.advertise_host, or the host name */
    const char *const *labels; /* "k=v", NULL-terminated (owned by the fw_config) */
    size_t nlabels;
    bool allow_command;
    int64_t lease_ttl_ms;
    int64_t heartbeat_ms;
    char work_dir[1024];
    unsigned cpus;      /* 0 = discover */
    uint64_t memory_mb; /* 0 = discover */
    uint64_t log_max_bytes;
    int log_keep;
    int64_t kill_grace_ms;
    int64_t retry_max_ms; /* cap of the etcd/leader retry backoff */
    bool gpu_discovery;
    size_t log_fetch_max; /* bytes per LOG_FETCH_REPLY when the request gives none */
    char store_dir[1024]; /* "" = ML kinds fail */
    char cache_dir[1152]; /* resolved: agent.cache_dir or <work_dir>/cache */
    uint64_t cache_max_mb; /* 0 = unbounded */
    char engine[1024];    /* "" = look beside the agent (agent_ml_engine_path) */
    /* shared keys */
    char etcd_prefix[256];
    bool curve;
    char curve_server_public_key_file[1024];
    char curve_secret_key_file[1024];
} agent_config_t;

/* Fill c from cfg (loaded with agent_opts and the common table). FW_ECONFIG
 * with a detail naming the key when a rule spanning keys is broken. */
int agent_config_resolve(const fw_config *cfg, agent_config_t *c);

#endif
