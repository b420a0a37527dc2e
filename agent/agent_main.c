/* flywheel-agent - the node daemon: registers this node's resources, follows
 * the leader, runs tasks in child processes and reports their results.
 *
 * Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 for a configuration
 * or start-up error (printed on stderr). Runtime errors never end it. */
#include "agent_config.h"
#include "agent_daemon.h"
#include "fw_common_opts.h"
#include "fw_config.h"
#include "fw_err.h"
#include "fw_log.h"

#include <stdio.h>

int main(int argc, char **argv) {
    int code;
    fw_config *cfg = fw_daemon_config(
        "flywheel-agent",
        "The Flywheel node agent: registers this node's CPUs, memory and GPUs, follows the "
        "leader coordinator and runs its tasks.",
        agent_opts, argc, argv, &code);
    if (!cfg) return code;
    agent_config_t ac;
    if (agent_config_resolve(cfg, &ac) < 0) {
        fprintf(stderr, "flywheel-agent: %s\n", fw_err_detail());
        fw_config_destroy(&cfg);
        return 2;
    }
    fw_log_set_name(ac.id);
    if (fw_common_opts_apply_logging(cfg) < 0) {
        fprintf(stderr, "flywheel-agent: %s\n", fw_err_detail());
        fw_config_destroy(&cfg);
        return 2;
    }
    agent_daemon_t *d = agent_daemon_new(&ac, cfg);
    if (!d) {
        fprintf(stderr, "flywheel-agent: %s\n", fw_err_detail());
        fw_error("event=start-failed detail=\"%s\"", fw_err_detail());
        fw_config_destroy(&cfg);
        return 2;
    }
    int rc = agent_daemon_run(d);
    agent_daemon_destroy(&d);
    fw_config_destroy(&cfg);
    return rc < 0 ? 1 : 0;
}
