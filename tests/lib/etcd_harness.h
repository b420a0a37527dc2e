/* etcd_harness.h - real etcd members for tests and benchmarks.
 *
 * Starts /usr/bin/etcd (or $FW_ETCD_BIN) as a single member or a static
 * cluster (--initial-cluster) on free loopback ports, each member with its
 * data in a temporary directory and in its own process group. Members are
 * tuned for fast tests: heartbeat 50 ms, election timeout 500 ms, zap logger
 * at error level (the log goes to <dir>/<name>.log, printed when a start
 * fails).
 *
 * Teardown is guaranteed three ways: fw_etcd_harness_destroy(); an atexit
 * handler for harnesses still alive when the test exits (a failed REQUIRE
 * that returns early from main); and PR_SET_PDEATHSIG, so members die with
 * the test process even when it crashes or ctest kills it on timeout.
 *
 * Not thread-safe: drive a harness from the thread that created it (which
 * must outlive the members, because of PDEATHSIG). */
#ifndef FW_ETCD_HARNESS_H
#define FW_ETCD_HARNESS_H

#include <stdbool.h>
#include <stddef.h>

#include "fw_etcd.h"

typedef struct fw_etcd_harness fw_etcd_harness;

#define FW_ETCD_HARNESS_MAX 5

/* Start `members` (1..5) members and wait until every one reports healthy
 * (a leader is elected). NULL on failure, with the reason on stderr. */
fw_etcd_harness *fw_etcd_harness_new(int members);

/* Kill every member (SIGKILL to its process group) and remove the data. */
void fw_etcd_harness_destroy(fw_etcd_harness **h);

int fw_etcd_harness_members(const fw_etcd_harness *h);

/* "http://127.0.0.1:p1,http://127.0.0.1:p2,..." for fw_etcd_opts.endpoints. */
const char *fw_etcd_harness_endpoints(const fw_etcd_harness *h);
/* Client URL of member i. */
const char *fw_etcd_harness_endpoint(const fw_etcd_harness *h, int i);

/* SIGKILL member i (its data stays, so it can be restarted). 0 / -1. */
int fw_etcd_harness_kill(fw_etcd_harness *h, int i);
/* SIGTERM member i and wait up to 5 s for it to exit (then SIGKILL). 0 / -1. */
int fw_etcd_harness_stop(fw_etcd_harness *h, int i);
/* Start a stopped or killed member again on the same ports and data and
 * wait until it is healthy. 0 / -1. */
int fw_etcd_harness_restart(fw_etcd_harness *h, int i);
bool fw_etcd_harness_running(fw_etcd_harness *h, int i);

/* Poll member i's /health until it answers "true" or timeout_ms pass. 0 / -1. */
int fw_etcd_harness_wait_healthy(fw_etcd_harness *h, int i, int timeout_ms);

/* Index of the member that is the raft leader now, asked through
 * /v3/maintenance/status of the running members; -1 if none answers. */
int fw_etcd_harness_leader(fw_etcd_harness *h);

/* POST a raw JSON body to member i's gateway (path like "/v3/auth/enable"),
 * with "Authorization: token" when token is non-NULL. The answer goes to
 * out (truncated to size). Returns the HTTP status, or -1 on a transport
 * failure. For admin calls the client does not offer (users, roles). */
int fw_etcd_harness_post(fw_etcd_harness *h, int i, const char *path, const char *json,
                         const char *token, char *out, size_t size);

/* Turn on authentication through the JSON API: user root with
 * root_password, role root, granted, auth enabled. 0 / -1. */
int fw_etcd_harness_enable_auth(fw_etcd_harness *h, const char *root_password);

/* A client on every member's endpoint with the given request timeout
 * (0 = 5000 ms); caller destroys it. */
fw_etcd *fw_etcd_harness_client(const fw_etcd_harness *h, int timeout_ms);

#endif
