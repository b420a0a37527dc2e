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

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    /* Task pipes must never land on 0-2, or a child's dup2 would clobber
     * them: make sure the standard descriptors exist. */
    for (int fd = open("/dev/null", O_RDWR); fd >= 0 && fd <= 2; fd = open("/dev/null", O_RDWR)) {
    }
    fw_config *cfg = fw_config_new("flywheel-agent",
                                   "The Flywheel node agent: registers this node's CPUs, memory "
                                   "and GPUs, follows the leader coordinator and runs its tasks.");
    if (!cfg || fw_config_add(cfg, fw_common_opts) < 0 || fw_config_add(cfg, agent_opts) < 0) {
        fprintf(stderr, "flywheel-agent: %s\n", fw_err_detail());
        fw_config_destroy(&cfg);
        return 2;
    }
    int rc = fw_config_load(cfg, argc, argv, NULL);
    if (rc == FW_CONFIG_HELP) {
        fw_config_write_help(cfg, stdout);
        fw_config_destroy(&cfg);
        return 0;
    }
    agent_config_t ac;
    if (rc < 0 || agent_config_resolve(cfg, &ac) < 0) {
        fprintf(stderr, "flywheel-agent: %s\n", fw_err_detail());
        fw_config_destroy(&cfg);
        return 2;
    }
    if (fw_config_argc(cfg) > 0) {
        fprintf(stderr, "flywheel-agent: unexpected argument '%s' (see --help)\n",
                fw_config_arg(cfg, 0));
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
    rc = agent_daemon_run(d);
    agent_daemon_destroy(&d);
    fw_config_destroy(&cfg);
    return rc < 0 ? 1 : 0;
}
