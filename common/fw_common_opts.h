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

#endif
