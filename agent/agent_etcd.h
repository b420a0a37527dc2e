/* agent_etcd.h - the agent's etcd side, in its own thread.
 *
 * An actor (czmq zactor) that
 *   - grants the agent's lease (agent.lease_ttl), puts P/agents/<id> bound
 *     to it and keeps it alive every TTL/3; a lost lease (the agent was cut
 *     off longer than the TTL) is granted and the key put again;
 *   - finds the leader under P/election/ (the key with the lowest create
 *     revision; its create revision is the epoch, its JSON value names the
 *     "agent" endpoint) and watches the prefix to follow it;
 *   - retries everything with exponential backoff while etcd is down, and
 *     never gives up.
 * etcd calls block for up to the client's timeout, which is why they are
 * here and not in the event loop: a slow or dead etcd must never delay a
 * heartbeat, a task exit or a result.
 *
 * Messages the actor sends to its owner (zsock_recv picture "ssss"):
 *   "LEADER", "<epoch>", "<agent endpoint>", "<leader name>"
 *   "NO-LEADER", "", "", ""
 * both only when the answer changes. The owner sends nothing; destroying the
 * actor revokes the lease (the leader sees the agent leave at once). */
#ifndef AGENT_ETCD_H
#define AGENT_ETCD_H

#include <stddef.h>
#include <stdint.h>

typedef struct _zactor_t zactor_t;
typedef struct fw_etcd fw_etcd;

typedef struct {
    fw_etcd *etcd;          /* the actor takes ownership */
    const char *prefix;     /* etcd.prefix, e.g. "/flywheel" */
    const char *agent_id;
    const char *agent_json; /* value of P/agents/<id> */
    int64_t lease_ttl_ms;
    int64_t retry_max_ms;
} agent_etcd_args;

/* Start the actor; the strings are copied. NULL on failure (and the etcd
 * client is destroyed). */
zactor_t *agent_etcd_start(const agent_etcd_args *args);

/* Parse a P/election/ value: copies the "agent" endpoint and the "name"
 * ("" if absent). FW_EINVAL with a detail when it is not a JSON object with
 * schema 1 and a non-empty string "agent". */
int agent_leader_parse(const char *value, char *endpoint, size_t esize, char *name,
                       size_t nsize);

/* Exponential backoff: the wait after `failures` consecutive failures
 * (1 -> ~100 ms, doubling, capped at max_ms), with +-25 % jitter drawn from
 * *seed so that agents restarted together do not retry in lockstep. */
int64_t agent_backoff_ms(int failures, int64_t max_ms, uint64_t *seed);

#endif
