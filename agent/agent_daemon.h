/* agent_daemon.h - flywheel-agent's core: the event loop and the leader link.
 *
 * One zloop runs everything: the DEALER socket to the leader, the etcd
 * actor's pipe (leader changes), the signalfd (SIGCHLD, SIGTERM, SIGINT),
 * the task output pipes (registered by the runner) and one cron timer. The
 * daemon never exits on a runtime error; only SIGTERM/SIGINT end it.
 *
 *   agent_daemon_t *d = agent_daemon_new(cfg, fw_cfg);   // config already resolved
 *   int rc = agent_daemon_run(d);                        // until SIGTERM
 *   agent_daemon_destroy(&d); */
#ifndef AGENT_DAEMON_H
#define AGENT_DAEMON_H

#include "agent_config.h"

typedef struct agent_daemon_t agent_daemon_t;

/* Everything that can fail at start (work_dir, epoch file, etcd endpoints,
 * CURVE keys, signals): NULL with fw_err_detail, before any task runs. */
agent_daemon_t *agent_daemon_new(const agent_config_t *cfg, const fw_config *fcfg);
void agent_daemon_destroy(agent_daemon_t **p);

/* Run until stopped by SIGTERM/SIGINT (tasks terminated with the grace
 * period first). 0 on a clean stop. */
int agent_daemon_run(agent_daemon_t *d);

#endif
