/* fw_config.h - configuration as a table of typed options.
 *
 * Every daemon and tool describes its options as a table of rows (name, type,
 * default, bounds, help). One parser reads them from four sources; a value
 * from a higher source wins whatever the order the sources are loaded in:
 *
 *     defaults  <  config file  <  environment  <  command line  (< fw_config_set)
 *
 * A table is a static array ending with FW_OPT_END. Defaults and bounds are
 * written as text in the same syntax a user would type, so --help and the
 * reference in docs/configuration.md show them exactly as in the table:
 *
 *     static const fw_opt coord_opts[] = {
 *         {.name = "coord.tick", .type = FW_OPT_DURATION, .def = "100ms",
 *          .min = "1ms", .max = "10s", .help = "Period of the coordinator's cron."},
 *         FW_OPT_END
 *     };
 *
 * A daemon concatenates the shared table (fw_common_opts.h) with its own:
 *
 *     fw_config *cfg = fw_config_new("flywheel-coordinator", "The coordinator.");
 *     if (fw_config_add(cfg, fw_common_opts) < 0 || fw_config_add(cfg, coord_opts) < 0) ...
 *     int rc = fw_config_load(cfg, argc, argv, NULL);
 *     if (rc == FW_CONFIG_HELP) { fw_config_write_help(cfg, stdout); return 0; }
 *     if (rc < 0) { fprintf(stderr, "flywheel-coordinator: %s\n", fw_err_detail()); return 2; }
 *     int64_t tick_ms = fw_config_get_duration(cfg, "coord.tick");
 *
 * Types and the text they accept (from a file, the environment or a flag):
 *   string    any text; a missing default means ""
 *   int       64-bit signed decimal ("-3", "+7", "8080")
 *   double    a finite decimal or exponent number ("0.5", "1e-4")
 *   bool      true/false, yes/no, on/off, 1/0 (any case); a bare --flag is true
 *   duration  milliseconds: a plain number is ms, or number+unit pieces with
 *             units ms, s, m, h, d ("250ms", "5s", "1.5s", "2m", "1h30m")
 *   size      bytes: a plain number is bytes, or number+unit with B, KiB, MiB,
 *             GiB, TiB (powers of 1024) or kB, MB, GB, TB (powers of 1000)
 *   list      strings: comma-separated text ("a, b,c"; blanks around items are
 *             dropped, empty items skipped) or a YAML sequence in a file
 *   enum      one of the words in .choices ("debug|info|warn|error"), any case
 *
 * Sources:
 *   file         YAML, named by --config FILE (or FLYWHEEL_CONFIG, or the
 *                default set with fw_config_set_default_file). Nested maps
 *                flatten to dotted keys: `etcd: {timeout: 5s}` is
 *                `etcd.timeout: 5s`, and both spellings can be mixed.
 *   environment  FLYWHEEL_ + the name upper-cased with '.' and '-' as '_'
 *                (etcd.endpoints -> FLYWHEEL_ETCD_ENDPOINTS), or the row's .env.
 *   flags        --name=VALUE or --name VALUE (bools: --name or --name=false);
 *                --config FILE; -h/--help; "--" ends the flags. Arguments that
 *                are not flags are kept, in order, as positional arguments.
 *
 * Errors are FW_ECONFIG with fw_err_detail() naming the source, the line
 * and the key, e.g.
 *   config.yaml:12: unknown key 'etcd.endpoint' (did you mean 'etcd.endpoints'?)
 *   config.yaml:3: key 'etcd.timeout': invalid duration 'fast' (expected e.g. 250ms, 5s, 2m)
 *   config.yaml:4:7: malformed YAML: mapping values are not allowed in this context
 *   environment FLYWHEEL_ETCD_TIMEOUT: key 'etcd.timeout': 0ms is below the minimum 100ms
 *   command line argument 2 '--etcd.timeot=1s': unknown flag (did you mean '--etcd.timeout'?)
 * An unknown FLYWHEEL_* environment variable is only a warning (a shared
 * environment file may carry another daemon's options), kept for the caller
 * to log after logging is set up; fw_config_set_strict_env() makes it an
 * error. On error the fw_config holds a partial load: report and destroy it.
 *
 * A loaded fw_config is read-only, so any number of threads may call the
 * getters. Getters name an option that must exist with the getter's type;
 * anything else is a programmer error (assert; in NDEBUG builds an error is
 * logged and 0 / "" returned). */
#ifndef FW_CONFIG_H
#define FW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    FW_OPT_STRING = 1, /* 0 is left out so that a zeroed row is visibly wrong */
    FW_OPT_INT,
    FW_OPT_DOUBLE,
    FW_OPT_BOOL,
    FW_OPT_DURATION,
    FW_OPT_SIZE,
    FW_OPT_LIST,
    FW_OPT_ENUM,
} fw_opt_type;

/* One row of an option table. All strings are static text. */
typedef struct {
    const char *name; /* lower-case dotted key: "etcd.endpoints"; [a-z0-9_.-] */
    fw_opt_type type;
    const char *def;     /* default as text; NULL = "" / empty list (string, list
                          * only: every other type needs a default) */
    const char *min;     /* inclusive bounds as text (int, double, duration, size); */
    const char *max;     /*   NULL = unbounded on that side */
    const char *choices; /* enum only: "debug|info|warn|error" */
    const char *help;    /* one or more sentences for --help and the docs */
    const char *env;     /* environment variable instead of FLYWHEEL_<NAME>; NULL = derived */
    /* Optional extra check beyond type and bounds: NULL when `text` is fine,
     * else a static reason ("must start with '/'"). Called with the value of
     * a string, with each item of a list, and with the raw text otherwise. */
    const char *(*validate)(const char *text);
} fw_opt;

/* The row that ends every table. */
#define FW_OPT_END                                                                                 \
    { .name = NULL }

/* Returned by fw_config_load when -h or --help was given (nothing else was
 * loaded then, so a broken config file cannot hide the help). */
#define FW_CONFIG_HELP 1

/* Where a value came from, lowest precedence first. */
typedef enum {
    FW_CONFIG_SRC_DEFAULT = 0,
    FW_CONFIG_SRC_FILE,
    FW_CONFIG_SRC_ENV,
    FW_CONFIG_SRC_FLAG,
    FW_CONFIG_SRC_SET, /* fw_config_set */
} fw_config_src;

typedef struct fw_config fw_config;

/* ---- building ----------------------------------------------------------- */

/* An empty configuration for program `prog` (shown in --help, with the
 * one-line summary). Strings are copied. NULL on out of memory. */
fw_config *fw_config_new(const char *prog, const char *summary);
void fw_config_destroy(fw_config **cfgp);

/* Add every row of `opts` (which must outlive cfg: it is not copied) and set
 * each to its default. Fails with FW_EINVAL and a detail naming the row when
 * the table is malformed (see fw_config_check_table) or a name or
 * environment variable is already taken by an earlier table. */
int fw_config_add(fw_config *cfg, const fw_opt *opts);

/* Check a table on its own: names well formed and unique, no name that is a
 * section of another ("etcd" beside "etcd.timeout"), type known, default and
 * bounds parse with the type, min <= default <= max, enum choices given and
 * the default among them, help present. 0 or FW_EINVAL with the detail. */
int fw_config_check_table(const fw_opt *opts);

/* Text after the program name in the usage line of --help
 * (default "[options]"); e.g. "[options] <command> [args...]". Copied. */
void fw_config_set_usage(fw_config *cfg, const char *usage);

/* A config file read when neither --config nor FLYWHEEL_CONFIG names one,
 * and silently skipped when it does not exist (a named file must exist). */
void fw_config_set_default_file(fw_config *cfg, const char *path);

/* Stop reading flags at the first positional argument: everything from it
 * on is positional, for CLIs whose subcommands parse their own flags
 * ("flywheelctl --etcd.endpoints=X job submit --wait"). Default: off, flags
 * and positional arguments may be mixed. */
void fw_config_set_stop_at_positional(fw_config *cfg, bool stop);

/* Treat an unknown FLYWHEEL_* environment variable as an error instead of a
 * warning. */
void fw_config_set_strict_env(fw_config *cfg, bool strict);

/* ---- loading ------------------------------------------------------------ */

/* Everything a daemon needs in one call: parse argv (argv[0] is the program
 * and skipped), then read the config file, the environment (envp in the
 * form of `environ`; NULL means environ) and apply the flags. Returns 0,
 * FW_CONFIG_HELP, or FW_ECONFIG (FW_ENOMEM) with the detail. */
int fw_config_load(fw_config *cfg, int argc, char **argv, char **envp);

/* The sources one by one (fw_config_load calls these; tests and tools can
 * too). Precedence does not depend on the order of the calls. */
int fw_config_load_file(fw_config *cfg, const char *path);
/* YAML text already in memory; `source` names it in errors. */
int fw_config_load_yaml(fw_config *cfg, const char *text, size_t len, const char *source);
int fw_config_load_env(fw_config *cfg, char **envp);
/* argv without the --config lookup of fw_config_load: --config is accepted
 * and remembered (fw_config_file), -h/--help gives FW_CONFIG_HELP. */
int fw_config_load_args(fw_config *cfg, int argc, char **argv);

/* Set one option from text, above every source (for tools and tests). */
int fw_config_set(fw_config *cfg, const char *name, const char *value);

/* ---- reading ------------------------------------------------------------ */

/* string and enum options ("" when empty); the pointer lives as long as cfg. */
const char *fw_config_get_str(const fw_config *cfg, const char *name);
int64_t fw_config_get_int(const fw_config *cfg, const char *name);
double fw_config_get_double(const fw_config *cfg, const char *name);
bool fw_config_get_bool(const fw_config *cfg, const char *name);
/* duration in milliseconds */
int64_t fw_config_get_duration(const fw_config *cfg, const char *name);
/* size in bytes */
int64_t fw_config_get_size(const fw_config *cfg, const char *name);
/* enum: index of the value in the row's choices (0-based) */
int fw_config_get_enum(const fw_config *cfg, const char *name);
/* list: NULL-terminated array of *count strings, owned by cfg. */
const char *const *fw_config_get_list(const fw_config *cfg, const char *name, size_t *count);

/* Whether `name` is an option of cfg (any type). */
bool fw_config_has(const fw_config *cfg, const char *name);

/* Where the value of `name` came from, and a human origin string
 * ("default", "config.yaml:12", "env FLYWHEEL_ETCD_TIMEOUT",
 * "flag --etcd.timeout", "set"). */
fw_config_src fw_config_source(const fw_config *cfg, const char *name);
const char *fw_config_origin(const fw_config *cfg, const char *name);

/* Positional arguments in order (argv minus flags, flag values and argv[0]). */
int fw_config_argc(const fw_config *cfg);
const char *fw_config_arg(const fw_config *cfg, int i); /* NULL when out of range */

/* The config file that was read (NULL when none). */
const char *fw_config_file(const fw_config *cfg);

/* Warnings of the load (unknown FLYWHEEL_* variables), for the caller to
 * log once logging is configured. fw_config_log_warnings() fw_warn()s each
 * as event=config-warning. */
size_t fw_config_warning_count(const fw_config *cfg);
const char *fw_config_warning(const fw_config *cfg, size_t i);
void fw_config_log_warnings(const fw_config *cfg);

/* ---- writing ------------------------------------------------------------ */

/* --help text generated from the tables: usage, summary, --config, --help,
 * then every option with its type, default, bounds, environment variable
 * and help. */
int fw_config_write_help(const fw_config *cfg, FILE *out);

/* The effective configuration as YAML, one flattened key a line with its
 * origin as a comment; the output loads back to the same values. */
int fw_config_write_yaml(const fw_config *cfg, FILE *out);

/* The reference for one table in Markdown: a "## title" heading, the intro
 * paragraph (may be NULL) and a table of key, type, default, allowed values,
 * environment variable and description. docs/configuration.md is made of
 * these (tools/fw_config_doc). */
int fw_config_write_markdown(const fw_opt *opts, const char *title, const char *intro, FILE *out);

/* ---- parsing helpers (also used by code that reads these types elsewhere) */

/* "250ms", "5s", "1h30m", "1500" -> milliseconds. 0 or FW_EINVAL. */
int fw_config_parse_duration(const char *s, int64_t *ms);
/* "64KiB", "1MB", "512" -> bytes. 0 or FW_EINVAL. */
int fw_config_parse_size(const char *s, int64_t *bytes);
/* Format ms / bytes in the shortest exact form ("5s", "1m30s", "250ms";
 * "64KiB", "1GiB", "1000"). */
void fw_config_format_duration(int64_t ms, char *buf, size_t size);
void fw_config_format_size(int64_t bytes, char *buf, size_t size);

#endif
