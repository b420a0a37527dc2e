/* fw_common_opts.c - the shared option table (see fw_common_opts.h).
 *
 * Only options that mean the same thing in every process belong here; a
 * daemon's own knobs go in its own table under its own prefix (coord.*,
 * agent.*), so that one config file can serve a whole node without keys
 * colliding. */
#include "fw_common_opts.h"

#include "fw_err.h"
#include "fw_log.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *s_check_endpoint(const char *text) {
    if (strncmp(text, "http://", 7) != 0 && strncmp(text, "https://", 8) != 0)
        return "must start with http:// or https://";
    return NULL;
}

static const char *s_check_prefix(const char *text) {
    size_t n = strlen(text);
    if (n < 2 || text[0] != '/') return "must start with '/' and name a directory";
    if (text[n - 1] == '/') return "must not end with '/'";
    return NULL;
}

const fw_opt fw_common_opts[] = {
    {.name = "log.level",
     .type = FW_OPT_ENUM,
     .def = "info",
     .choices = "debug|info|warn|error",
     .help = "Lowest level of log lines written. debug also logs per-request detail."},
    {.name = "log.file",
     .type = FW_OPT_STRING,
     .help = "Append log lines to this file instead of standard error (empty: standard error)."},
    {.name = "etcd.endpoints",
     .type = FW_OPT_LIST,
     .def = "http://127.0.0.1:2379",
     .validate = s_check_endpoint,
     .help = "etcd v3 endpoints (http:// or https:// URLs) tried in turn; the client moves to "
             "the next one when an endpoint fails."},
    /* 10ms lets tests shrink it; beyond 5m a stuck etcd would hide behind the timeout. */
    {.name = "etcd.timeout",
     .type = FW_OPT_DURATION,
     .def = "5s",
     .min = "10ms",
     .max = "5m",
     .help = "Deadline of each etcd request, including retries on other endpoints."},
    {.name = "etcd.user",
     .type = FW_OPT_STRING,
     .help = "etcd user name for authentication (empty: no authentication)."},
    {.name = "etcd.password_file",
     .type = FW_OPT_STRING,
     .help = "File holding the etcd password on its first line; kept out of the config file and "
             "the environment so that it does not leak into process listings or logs."},
    {.name = "etcd.prefix",
     .type = FW_OPT_STRING,
     .def = "/flywheel",
     .validate = s_check_prefix,
     .help = "Key prefix under which this cluster keeps all of its etcd state, so that several "
             "clusters can share one etcd."},
    FW_OPT_END,
};

int fw_common_opts_apply_logging(const fw_config *cfg) {
    int level = fw_log_parse_level(fw_config_get_str(cfg, "log.level"));
    fw_log_set_level(level < 0 ? FW_LOG_INFO : (fw_log_level)level);
    const char *file = fw_config_get_str(cfg, "log.file");
    if (*file && fw_log_open(file) < 0)
        return fw_err_set(FW_EIO, "log.file %s: cannot open for appending", file);
    fw_config_log_warnings(cfg);
    return 0;
}

fw_config *fw_daemon_config(const char *prog, const char *summary, const fw_opt *opts, int argc,
                            char **argv, int *exit_code) {
    for (int fd = open("/dev/null", O_RDWR); fd >= 0 && fd <= 2; fd = open("/dev/null", O_RDWR)) {
    }
    *exit_code = 2;
    fw_config *cfg = fw_config_new(prog, summary);
    int rc = !cfg ? -1 : fw_config_add(cfg, fw_common_opts);
    if (rc >= 0) rc = fw_config_add(cfg, opts);
    if (rc >= 0) rc = fw_config_load(cfg, argc, argv, NULL);
    if (rc == FW_CONFIG_HELP) {
        fw_config_write_help(cfg, stdout);
        *exit_code = 0;
    } else if (rc < 0) {
        fprintf(stderr, "%s: %s\n", prog, fw_err_detail());
    } else if (fw_config_argc(cfg) > 0) {
        fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog, fw_config_arg(cfg, 0));
    } else {
        return cfg;
    }
    fw_config_destroy(&cfg);
    return NULL;
}
