/* fw_common_opts.h - the options every Flywheel daemon and tool reads.
 *
 * A program adds this table first and its own after it (fw_config.h):
 *
 *     fw_config_add(cfg, fw_common_opts);
 *     fw_config_add(cfg, agent_opts);
 *
 * Keys: log.level, log.file, etcd.endpoints, etcd.timeout, etcd.user,
 * etcd.password_file, etcd.prefix. Their reference is in
 * docs/configuration.md (generated from this table). */
#ifndef FW_COMMON_OPTS_H
#define FW_COMMON_OPTS_H

#include "fw_config.h"

extern const fw_opt fw_common_opts[];

/* Apply log.level and log.file to the logger (fw_log_set_level, fw_log_open)
 * and then log the config's warnings. 0, or FW_EIO when the log file cannot
 * be opened (detail names it). */
int fw_common_opts_apply_logging(const fw_config *cfg);

/* The start of every daemon's main(): make sure descriptors 0-2 exist (so
 * no socket or task pipe lands on them), then build a config of the common
 * options plus `opts`, load it from flags, the environment and the file, and
 * refuse positional arguments. Returns the config, or NULL with *exit_code
 * set: 0 when --help was given (help printed on stdout), 2 on an error
 * (printed on stderr as "<prog>: <detail>"). */
fw_config *fw_daemon_config(const char *prog, const char *summary, const fw_opt *opts, int argc,
                            char **argv, int *exit_code);

#endif
