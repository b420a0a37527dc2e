/* Configuration: every type's syntax and bounds, precedence default < file <
 * env < flag whatever the load order, YAML nesting and lists, error messages
 * that name source, line and key, positional arguments, --help and the
 * Markdown reference, which must match the committed docs/configuration.md. */
#include "fw_common_opts.h"
#include "fw_config.h"
#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"
#include "fw_test.h"

#include <stdlib.h>

/* From common/tools/fw_config_doc.c, compiled into this test. */
int fw_config_doc_generate(FILE *out);
int fw_config_doc_check(const char *md_path);
int fw_config_doc_update(const char *md_path);

static char *s_dir;

static const char *s_no_dot(const char *text) {
    return strchr(text, '.') ? "must not contain '.'" : NULL;
}

static const fw_opt s_opts[] = {
    {.name = "t.str", .type = FW_OPT_STRING, .def = "hello", .help = "A string."},
    {.name = "t.int",
     .type = FW_OPT_INT,
     .def = "10",
     .min = "-5",
     .max = "100",
     .help = "An int."},
    {.name = "t.dbl",
     .type = FW_OPT_DOUBLE,
     .def = "0.5",
     .min = "0",
     .max = "1",
     .help = "A double."},
    {.name = "t.flag", .type = FW_OPT_BOOL, .def = "false", .help = "A bool."},
    {.name = "t.wait",
     .type = FW_OPT_DURATION,
     .def = "250ms",
     .min = "1ms",
     .max = "1h",
     .help = "A duration."},
    {.name = "t.buf",
     .type = FW_OPT_SIZE,
     .def = "64KiB",
     .min = "1KiB",
     .max = "1GiB",
     .help = "A size."},
    {.name = "t.hosts",
     .type = FW_OPT_LIST,
     .def = "a, b",
     .validate = s_no_dot,
     .help = "A list."},
    {.name = "t.mode",
     .type = FW_OPT_ENUM,
     .def = "fast",
     .choices = "fast|safe|off",
     .help = "An enum."},
    {.name = "t.deep.er.key", .type = FW_OPT_INT, .def = "1", .help = "Deep."},
    {.name = "t.big", .type = FW_OPT_INT, .def = "0", .help = "Unbounded | piped."},
    {.name = "t.name", .type = FW_OPT_STRING, .env = "T_NAME_OVERRIDE", .help = "Own env var."},
    FW_OPT_END,
};

static char *s_envp_empty[] = {NULL};

static fw_config *s_new(void) {
    fw_config *cfg = fw_config_new("fwtest", "A test program.");
    if (!cfg) return NULL;
    if (fw_config_add(cfg, fw_common_opts) < 0 || fw_config_add(cfg, s_opts) < 0) {
        fprintf(stderr, "add: %s\n", fw_err_detail());
        fw_config_destroy(&cfg);
    }
    return cfg;
}

static int s_yaml(fw_config *cfg, const char *text) {
    return fw_config_load_yaml(cfg, text, strlen(text), "config.yaml");
}

static const char *s_write(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    if (fw_file_write_atomic(path, text, strlen(text), 0644) < 0) return NULL;
    return path;
}

static void test_defaults(void) {
    CHECK_EQ_INT(fw_config_check_table(fw_common_opts), 0);
    CHECK_EQ_INT(fw_config_check_table(s_opts), 0);
    fw_config *cfg = s_new();
    REQUIRE(cfg);
    CHECK_EQ_STR(fw_config_get_str(cfg, "log.level"), "info");
    CHECK_EQ_INT(fw_config_get_enum(cfg, "log.level"), 1);
    CHECK_EQ_STR(fw_config_get_str(cfg, "log.file"), "");
    size_t n = 0;
    const char *const *eps = fw_config_get_list(cfg, "etcd.endpoints", &n);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(eps[0], "http://127.0.0.1:2379");
    CHECK(eps[1] == NULL);
    CHECK_EQ_INT(fw_config_get_duration(cfg, "etcd.timeout"), 5000);
    CHECK_EQ_STR(fw_config_get_str(cfg, "etcd.user"), "");
    CHECK_EQ_STR(fw_config_get_str(cfg, "etcd.password_file"), "");
    CHECK_EQ_STR(fw_config_get_str(cfg, "etcd.prefix"), "/flywheel");
    CHECK_EQ_STR(fw_config_get_str(cfg, "t.str"), "hello");
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.int"), 10);
    CHECK_NEAR(fw_config_get_double(cfg, "t.dbl"), 0.5, 0);
    CHECK(!fw_config_get_bool(cfg, "t.flag"));
    CHECK_EQ_INT(fw_config_get_duration(cfg, "t.wait"), 250);
    CHECK_EQ_INT(fw_config_get_size(cfg, "t.buf"), 65536);
    const char *const *hosts = fw_config_get_list(cfg, "t.hosts", &n);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_STR(hosts[0], "a");
    CHECK_EQ_STR(hosts[1], "b");
    CHECK_EQ_INT(fw_config_get_enum(cfg, "t.mode"), 0);
    CHECK_EQ_STR(fw_config_origin(cfg, "t.int"), "default");
    CHECK_EQ_INT(fw_config_source(cfg, "t.int"), FW_CONFIG_SRC_DEFAULT);
    CHECK(fw_config_has(cfg, "t.deep.er.key"));
    CHECK(!fw_config_has(cfg, "t.deep"));
    CHECK(fw_config_file(cfg) == NULL);
    fw_config_destroy(&cfg);
    CHECK(cfg == NULL);
    fw_config_destroy(&cfg);
}

static void test_duration_size(void) {
    static const struct {
        const char *s;
        int64_t ms;
    } d[] = {{"250", 250},    {"250ms", 250},        {"5s", 5000},   {"2m", 120000},
             {"1h", 3600000}, {"1d", 86400000},      {"1.5s", 1500}, {"1h30m", 5400000},
             {" 7s ", 7000},  {"1m30s500ms", 90500}, {"0", 0},       {"0s", 0}};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        int64_t ms = -1;
        CHECKF(fw_config_parse_duration(d[i].s, &ms) == 0 && ms == d[i].ms, "'%s' -> %lld", d[i].s,
               (long long)ms);
    }
    const char *bad_d[] = {"",
                           "s",
                           "5",
                           "-5s",
                           "5x",
                           "5 s",
                           "1.s",
                           "5S",
                           "99999999999999999999",
                           "9999999999999999d",
                           "5s junk"};
    for (size_t i = 0; i < sizeof bad_d / sizeof bad_d[0]; i++) {
        int64_t ms;
        if (strcmp(bad_d[i], "5") == 0) continue; /* plain number: valid, listed for symmetry */
        CHECKF(fw_config_parse_duration(bad_d[i], &ms) == FW_EINVAL, "'%s'", bad_d[i]);
        CHECK(strstr(fw_err_detail(), "invalid duration") != NULL);
    }
    static const struct {
        const char *s;
        int64_t b;
    } z[] = {{"512", 512},        {"64KiB", 65536}, {"1MiB", 1048576}, {"2GiB", 2147483648LL},
             {"1TiB", 1LL << 40}, {"1kB", 1000},    {"3MB", 3000000},  {"2GB", 2000000000LL},
             {"1.5KiB", 1536},    {"7B", 7},        {"64 KiB", 65536}, {"1gib", 1LL << 30}};
    for (size_t i = 0; i < sizeof z / sizeof z[0]; i++) {
        int64_t b = -1;
        CHECKF(fw_config_parse_size(z[i].s, &b) == 0 && b == z[i].b, "'%s' -> %lld", z[i].s,
               (long long)b);
    }
    const char *bad_z[] = {"", "KiB", "-1", "1XB", "1 K", "9999999TiB", "1.KiB", "0x10"};
    for (size_t i = 0; i < sizeof bad_z / sizeof bad_z[0]; i++) {
        int64_t b;
        CHECKF(fw_config_parse_size(bad_z[i], &b) == FW_EINVAL, "'%s'", bad_z[i]);
        CHECK(strstr(fw_err_detail(), "invalid size") != NULL);
    }
    char buf[64];
    fw_config_format_duration(5000, buf, sizeof buf);
    CHECK_EQ_STR(buf, "5s");
    fw_config_format_duration(90500, buf, sizeof buf);
    CHECK_EQ_STR(buf, "1m30s500ms");
    fw_config_format_duration(0, buf, sizeof buf);
    CHECK_EQ_STR(buf, "0ms");
    fw_config_format_size(65536, buf, sizeof buf);
    CHECK_EQ_STR(buf, "64KiB");
    fw_config_format_size(1000, buf, sizeof buf);
    CHECK_EQ_STR(buf, "1000");
    fw_config_format_size(3LL << 30, buf, sizeof buf);
    CHECK_EQ_STR(buf, "3GiB");
}

/* Set name to text through fw_config_set: 0, or the error with its detail. */
static int s_set(fw_config *cfg, const char *name, const char *text) {
    return fw_config_set(cfg, name, text);
}

static void test_types_and_bounds(void) {
    fw_config *cfg = s_new();
    REQUIRE(cfg);
    /* int */
    CHECK_EQ_INT(s_set(cfg, "t.int", "-5"), 0);
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.int"), -5);
    CHECK_EQ_INT(s_set(cfg, "t.int", "+100"), 0);
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.int"), 100);
    CHECK_EQ_INT(s_set(cfg, "t.int", "101"), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "set: key 't.int': 101 is above the maximum 100");
    CHECK_EQ_INT(s_set(cfg, "t.int", "-6"), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "set: key 't.int': -6 is below the minimum -5");
    CHECK_EQ_INT(s_set(cfg, "t.int", "12abc"), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "set: key 't.int': invalid integer '12abc'");
    CHECK_EQ_INT(s_set(cfg, "t.int", "1.5"), FW_ECONFIG);
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.int"), 100); /* failed sets change nothing */
    CHECK_EQ_INT(s_set(cfg, "t.big", "9223372036854775807"), 0);
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.big"), INT64_MAX);
    CHECK_EQ_INT(s_set(cfg, "t.big", "9223372036854775808"), FW_ECONFIG);
    /* double */
    CHECK_EQ_INT(s_set(cfg, "t.dbl", "1e-3"), 0);
    CHECK_NEAR(fw_config_get_double(cfg, "t.dbl"), 0.001, 1e-15);
    CHECK_EQ_INT(s_set(cfg, "t.dbl", "1.0001"), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "above the maximum 1") != NULL);
    CHECK_EQ_INT(s_set(cfg, "t.dbl", "nan"), FW_ECONFIG);
    CHECK_EQ_INT(s_set(cfg, "t.dbl", "inf"), FW_ECONFIG);
    CHECK_EQ_INT(s_set(cfg, "t.dbl", "half"), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "invalid number 'half'") != NULL);
    /* bool */
    const char *yes[] = {"true", "YES", "on", "1", "True"}, *no[] = {"false", "no", "OFF", "0"};
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(s_set(cfg, "t.flag", yes[i]), 0);
        CHECKF(fw_config_get_bool(cfg, "t.flag"), "%s", yes[i]);
    }
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(s_set(cfg, "t.flag", no[i]), 0);
        CHECKF(!fw_config_get_bool(cfg, "t.flag"), "%s", no[i]);
    }
    CHECK_EQ_INT(s_set(cfg, "t.flag", "maybe"), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "invalid boolean 'maybe'") != NULL);
    /* duration and size bounds are compared in ms / bytes, shown as written */
    CHECK_EQ_INT(s_set(cfg, "t.wait", "1h"), 0);
    CHECK_EQ_INT(fw_config_get_duration(cfg, "t.wait"), 3600000);
    CHECK_EQ_INT(s_set(cfg, "t.wait", "61m"), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "set: key 't.wait': 61m is above the maximum 1h");
    CHECK_EQ_INT(s_set(cfg, "t.wait", "0s"), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "set: key 't.wait': 0s is below the minimum 1ms");
    CHECK_EQ_INT(s_set(cfg, "t.buf", "1GiB"), 0);
    CHECK_EQ_INT(fw_config_get_size(cfg, "t.buf"), 1LL << 30);
    CHECK_EQ_INT(s_set(cfg, "t.buf", "1023"), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "set: key 't.buf': 1023 is below the minimum 1KiB");
    CHECK_EQ_INT(s_set(cfg, "t.buf", "2GB"), FW_ECONFIG); /* 2e9 > 2^30 */
    /* list: commas, blanks dropped, empty items skipped, validate per item */
    size_t n;
    CHECK_EQ_INT(s_set(cfg, "t.hosts", " x ,, y,z "), 0);
    const char *const *l = fw_config_get_list(cfg, "t.hosts", &n);
    CHECK_EQ_INT(n, 3);
    CHECK(n == 3 && strcmp(l[0], "x") == 0 && strcmp(l[1], "y") == 0 && strcmp(l[2], "z") == 0);
    CHECK_EQ_INT(s_set(cfg, "t.hosts", ""), 0);
    CHECK(fw_config_get_list(cfg, "t.hosts", &n)[0] == NULL && n == 0);
    CHECK_EQ_INT(s_set(cfg, "t.hosts", "ok,not.ok"), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "set: key 't.hosts': 'not.ok' must not contain '.'");
    /* enum: any case in, table spelling out */
    CHECK_EQ_INT(s_set(cfg, "t.mode", "SAFE"), 0);
    CHECK_EQ_STR(fw_config_get_str(cfg, "t.mode"), "safe");
    CHECK_EQ_INT(fw_config_get_enum(cfg, "t.mode"), 1);
    CHECK_EQ_INT(s_set(cfg, "t.mode", "fas"), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(),
                 "set: key 't.mode': invalid value 'fas' (expected one of fast, safe, off)");
    /* string: kept verbatim */
    CHECK_EQ_INT(s_set(cfg, "t.str", "  spaced  "), 0);
    CHECK_EQ_STR(fw_config_get_str(cfg, "t.str"), "  spaced  ");
    CHECK_EQ_INT(s_set(cfg, "no.such", "1"), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "unknown key 'no.such'") != NULL);
    /* the shared table's own checks */
    CHECK_EQ_INT(s_set(cfg, "etcd.endpoints", "http://a:1, localhost:2379"), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "set: key 'etcd.endpoints': 'localhost:2379' must start "
                                  "with http:// or https://");
    CHECK_EQ_INT(s_set(cfg, "etcd.prefix", "flywheel"), FW_ECONFIG);
    CHECK_EQ_INT(s_set(cfg, "etcd.prefix", "/fw/"), FW_ECONFIG);
    CHECK_EQ_INT(s_set(cfg, "etcd.prefix", "/fw/test"), 0);
    CHECK_EQ_INT(s_set(cfg, "etcd.timeout", "5ms"), FW_ECONFIG);
    CHECK_EQ_INT(s_set(cfg, "log.level", "loud"), FW_ECONFIG);
    fw_config_destroy(&cfg);
}

static void test_precedence(void) {
    const char *file = "t:\n  int: 1\n  str: from-file\n  wait: 1s\n  mode: safe\n";
    char *env[] = {"FLYWHEEL_T_STR=from-env", "FLYWHEEL_T_WAIT=2s", "FLYWHEEL_T_MODE=off",
                   "PATH=/bin", NULL};
    char *argv[] = {"fwtest", "--t.wait=3s", NULL};
    /* Each order of the three sources gives the same result. */
    for (int order = 0; order < 3; order++) {
        fw_config *cfg = s_new();
        REQUIRE(cfg);
        for (int k = 0; k < 3; k++) {
            int which = (k + order) % 3;
            if (which == 0) CHECK_EQ_INT(s_yaml(cfg, file), 0);
            if (which == 1) CHECK_EQ_INT(fw_config_load_env(cfg, env), 0);
            if (which == 2) CHECK_EQ_INT(fw_config_load_args(cfg, 2, argv), 0);
        }
        CHECK_EQ_INT(fw_config_get_int(cfg, "t.int"), 1);          /* file > default */
        CHECK_EQ_STR(fw_config_get_str(cfg, "t.str"), "from-env"); /* env > file */
        CHECK_EQ_INT(fw_config_get_duration(cfg, "t.wait"), 3000); /* flag > env */
        CHECK_EQ_STR(fw_config_get_str(cfg, "t.mode"), "off");
        CHECK_EQ_INT(fw_config_get_size(cfg, "t.buf"), 65536); /* untouched */
        CHECK_EQ_STR(fw_config_origin(cfg, "t.int"), "config.yaml:2");
        CHECK_EQ_STR(fw_config_origin(cfg, "t.str"), "env FLYWHEEL_T_STR");
        CHECK_EQ_STR(fw_config_origin(cfg, "t.wait"), "flag --t.wait");
        CHECK_EQ_INT(fw_config_source(cfg, "t.wait"), FW_CONFIG_SRC_FLAG);
        CHECK_EQ_INT(fw_config_source(cfg, "t.str"), FW_CONFIG_SRC_ENV);
        CHECK_EQ_INT(fw_config_source(cfg, "t.int"), FW_CONFIG_SRC_FILE);
        CHECK_EQ_INT(fw_config_warning_count(cfg), 0);
        /* fw_config_set is above every source. */
        CHECK_EQ_INT(fw_config_set(cfg, "t.wait", "4s"), 0);
        CHECK_EQ_INT(fw_config_get_duration(cfg, "t.wait"), 4000);
        fw_config_destroy(&cfg);
    }
    /* A bad value is reported even where a higher source overrides it. */
    fw_config *cfg = s_new();
    REQUIRE(cfg);
    CHECK_EQ_INT(fw_config_load_args(cfg, 2, argv), 0);
    CHECK_EQ_INT(s_yaml(cfg, "t.wait: soon\n"), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "config.yaml:1: key 't.wait': invalid duration 'soon'"));
    /* A row's own env name replaces the derived one. */
    char *env2[] = {"T_NAME_OVERRIDE=zed", NULL};
    CHECK_EQ_INT(fw_config_load_env(cfg, env2), 0);
    CHECK_EQ_STR(fw_config_get_str(cfg, "t.name"), "zed");
    char *env3[] = {"FLYWHEEL_T_NAME=no", NULL};
    CHECK_EQ_INT(fw_config_load_env(cfg, env3), 0);
    CHECK_EQ_INT(fw_config_warning_count(cfg), 1); /* the derived name is not the option's */
    fw_config_destroy(&cfg);
}

static void test_yaml(void) {
    fw_config *cfg = s_new();
    REQUIRE(cfg);
    const char *text = "# comment\n"
                       "etcd:\n"
                       "  endpoints:\n"
                       "    - http://e1:2379\n"
                       "    - \"https://e2:2379\"\n"
                       "  timeout: 250ms\n"
                       "log.level: debug\n"
                       "t:\n"
                       "  deep:\n"
                       "    er.key: 7\n"
                       "  hosts: [p, q]\n"
                       "  str: 'quoted: yes'\n"
                       "  name: ~\n"
                       "t.flag: yes\n"
                       "t.buf: 1MiB\n";
    CHECK_EQ_INT(s_yaml(cfg, text), 0);
    size_t n;
    const char *const *eps = fw_config_get_list(cfg, "etcd.endpoints", &n);
    CHECK_EQ_INT(n, 2);
    CHECK(n == 2 && strcmp(eps[0], "http://e1:2379") == 0 &&
          strcmp(eps[1], "https://e2:2379") == 0);
    CHECK_EQ_INT(fw_config_get_duration(cfg, "etcd.timeout"), 250);
    CHECK_EQ_STR(fw_config_get_str(cfg, "log.level"), "debug");
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.deep.er.key"), 7);
    CHECK_EQ_STR(fw_config_origin(cfg, "t.deep.er.key"), "config.yaml:10");
    const char *const *h = fw_config_get_list(cfg, "t.hosts", &n);
    CHECK(n == 2 && strcmp(h[0], "p") == 0 && strcmp(h[1], "q") == 0);
    CHECK_EQ_STR(fw_config_get_str(cfg, "t.str"), "quoted: yes");
    CHECK_EQ_STR(fw_config_get_str(cfg, "t.name"), "");
    CHECK(fw_config_get_bool(cfg, "t.flag"));
    CHECK_EQ_INT(fw_config_get_size(cfg, "t.buf"), 1 << 20);
    /* A list as comma text, and an empty sequence. */
    CHECK_EQ_INT(s_yaml(cfg, "etcd.endpoints: http://a:1, http://b:2\nt.hosts: []\n"), 0);
    fw_config_get_list(cfg, "etcd.endpoints", &n);
    CHECK_EQ_INT(n, 2);
    fw_config_get_list(cfg, "t.hosts", &n);
    CHECK_EQ_INT(n, 0);
    /* Empty documents are an empty configuration. */
    CHECK_EQ_INT(s_yaml(cfg, ""), 0);
    CHECK_EQ_INT(s_yaml(cfg, "# only a comment\n"), 0);
    CHECK_EQ_INT(s_yaml(cfg, "---\n...\n"), 0);
    /* Flow style nesting. */
    CHECK_EQ_INT(s_yaml(cfg, "{t: {int: 42}}"), 0);
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.int"), 42);
    fw_config_destroy(&cfg);
}

/* Load text as config.yaml into a fresh config; expect FW_ECONFIG and a
 * detail equal to (or, with prefix_only, starting with) want. */
static void s_yaml_error(const char *text, const char *want, bool prefix_only) {
    fw_config *cfg = s_new();
    if (!cfg) return;
    int rc = s_yaml(cfg, text);
    CHECKF(rc == FW_ECONFIG, "rc %d for %s", rc, text);
    const char *got = fw_err_detail();
    bool ok = prefix_only ? strncmp(got, want, strlen(want)) == 0 : strcmp(got, want) == 0;
    CHECKF(ok, "\n  got:  %s\n  want: %s", got, want);
    fw_config_destroy(&cfg);
}

static void test_file_errors(void) {
    s_yaml_error("t:\n  int: 5\n\n\n\n\n\n\n\n\n\netcd.endpoint: http://x:1\n",
                 "config.yaml:12: unknown key 'etcd.endpoint' (did you mean 'etcd.endpoints'?)",
                 false);
    /* A misspelt section is reported at its leaf, with the full key. */
    s_yaml_error("etdc:\n  timeout: 5s\n",
                 "config.yaml:2: unknown key 'etdc.timeout' (did you mean 'etcd.timeout'?)", false);
    s_yaml_error("zzz: 1\n", "config.yaml:1: unknown key 'zzz'", false);
    s_yaml_error("etcd: 5\n",
                 "config.yaml:1: unknown key 'etcd' (it is a section: give it a "
                 "mapping)",
                 false);
    s_yaml_error("t:\n  int: 500\n", "config.yaml:2: key 't.int': 500 is above the maximum 100",
                 false);
    s_yaml_error("t:\n  int: five\n", "config.yaml:2: key 't.int': invalid integer 'five'", false);
    s_yaml_error("t.int:\n  - 1\n", "config.yaml:2: key 't.int': expected a int, not a sequence",
                 false);
    s_yaml_error("t.str: {a: 1}\n",
                 "config.yaml:1: key 't.str': expected a string, not a "
                 "mapping",
                 false);
    s_yaml_error("t.hosts: [a, [b]]\n",
                 "config.yaml:1: key 't.hosts': list items must be "
                 "text, not a sequence",
                 false);
    s_yaml_error("t.hosts: [ok, bad.host]\n",
                 "config.yaml:1: key 't.hosts': 'bad.host' must "
                 "not contain '.'",
                 false);
    s_yaml_error("t.hosts:\n  - ok\n  - bad.host\n",
                 "config.yaml:3: key 't.hosts': 'bad.host' "
                 "must not contain '.'",
                 false);
    s_yaml_error("t.int:\n", "config.yaml:1: key 't.int': missing value (expected a int)", false);
    s_yaml_error("t.int: 1\nt:\n  int: 2\n",
                 "config.yaml:3: key 't.int' is set twice (first at line 1)", false);
    s_yaml_error("t.str: b: c\n",
                 "config.yaml:1:9: malformed YAML: mapping values are not "
                 "allowed in this context",
                 false);
    s_yaml_error("t:\n  int: 1\n str: x\n", "config.yaml:3:", true);
    s_yaml_error("t.hosts: [a, b\n", "config.yaml:2:1: malformed YAML:", true);
    s_yaml_error("- a\n- b\n",
                 "config.yaml:1: the top level must be a mapping of keys to "
                 "values, not a sequence",
                 false);
    s_yaml_error("just text\n", "config.yaml:1: the top level must be a mapping", true);
    s_yaml_error("t.int: 1\n---\nt.int: 2\n", "config.yaml:2: only one YAML document is allowed",
                 false);
    s_yaml_error("t.int: &a 1\nt.str: *a\n",
                 "config.yaml:2: key 't.str': aliases are not supported", false);
    s_yaml_error("? [a]\n: 1\n", "config.yaml:1: a key must be text, not a sequence", false);
    s_yaml_error("a:\n b:\n  c:\n   d:\n    e:\n     f:\n      g:\n       h:\n        i:\n"
                 "         j:\n          k:\n           l:\n            m:\n             n:\n"
                 "              o:\n               p:\n                q:\n                 r: 1\n",
                 "config.yaml:", true);
    CHECK(strstr(fw_err_detail(), "nesting deeper than 16 levels") != NULL);
    s_yaml_error("t.str: \"a\\0b\"\n", "config.yaml:1: key 't.str': value holds a NUL byte", false);
    /* A file that does not exist, or is too big, names the file. */
    fw_config *cfg = s_new();
    REQUIRE(cfg);
    char path[512];
    snprintf(path, sizeof path, "%s/none.yaml", s_dir);
    CHECK_EQ_INT(fw_config_load_file(cfg, path), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "none.yaml: does not exist") != NULL);
    char *big = malloc(2 << 20);
    REQUIRE(big);
    memset(big, '#', 2 << 20);
    big[(2 << 20) - 1] = '\0';
    const char *bp = s_write("big.yaml", big);
    free(big);
    REQUIRE(bp);
    CHECK_EQ_INT(fw_config_load_file(cfg, bp), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "over the limit") != NULL);
    const char *fp = s_write("good.yaml", "t:\n  int: 3\n");
    REQUIRE(fp);
    CHECK_EQ_INT(fw_config_load_file(cfg, fp), 0);
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.int"), 3);
    CHECK_EQ_STR(fw_config_file(cfg), fp);
    /* The same file loaded twice is not a duplicate-key error. */
    CHECK_EQ_INT(fw_config_load_file(cfg, fp), 0);
    fw_config_destroy(&cfg);
}

static void test_env(void) {
    fw_config *cfg = s_new();
    REQUIRE(cfg);
    char *env[] = {"FLYWHEEL_ETCD_ENDPOINT=http://x:1",
                   "FLYWHEEL_CONFIG=/nowhere",
                   "FLYWHEEL_ETCD_ENDPOINTS=http://a:1,https://b:2",
                   "HOME=/root",
                   "FLYWHEEL_T_DEEP_ER_KEY=9",
                   NULL};
    CHECK_EQ_INT(fw_config_load_env(cfg, env), 0);
    size_t n;
    fw_config_get_list(cfg, "etcd.endpoints", &n);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.deep.er.key"), 9);
    /* Unknown FLYWHEEL_* is a warning with a suggestion; FLYWHEEL_CONFIG is not unknown. */
    CHECK_EQ_INT(fw_config_warning_count(cfg), 1);
    CHECK_EQ_STR(fw_config_warning(cfg, 0),
                 "environment FLYWHEEL_ETCD_ENDPOINT: unknown "
                 "variable, ignored (did you mean 'FLYWHEEL_ETCD_ENDPOINTS'?)");
    CHECK(fw_config_warning(cfg, 1) == NULL);
    fw_config_set_strict_env(cfg, true);
    CHECK_EQ_INT(fw_config_load_env(cfg, env), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "environment FLYWHEEL_ETCD_ENDPOINT: unknown variable "
                                  "(did you mean 'FLYWHEEL_ETCD_ENDPOINTS'?)");
    char *bad[] = {"FLYWHEEL_ETCD_TIMEOUT=1ms", NULL};
    CHECK_EQ_INT(fw_config_load_env(cfg, bad), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "environment FLYWHEEL_ETCD_TIMEOUT: key 'etcd.timeout': "
                                  "1ms is below the minimum 10ms");
    fw_config_destroy(&cfg);
}

static void test_args(void) {
    fw_config *cfg = s_new();
    REQUIRE(cfg);
    char *argv[] = {"fwtest",      "run", "--t.int", "7",         "--t.flag", "job-1",
                    "--t.str=a=b", "-",   "--",      "--t.int=8", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 10, argv), 0);
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.int"), 7);
    CHECK(fw_config_get_bool(cfg, "t.flag"));
    CHECK_EQ_STR(fw_config_get_str(cfg, "t.str"), "a=b");
    CHECK_EQ_INT(fw_config_argc(cfg), 4);
    CHECK_EQ_STR(fw_config_arg(cfg, 0), "run");
    CHECK_EQ_STR(fw_config_arg(cfg, 1), "job-1");
    CHECK_EQ_STR(fw_config_arg(cfg, 2), "-");
    CHECK_EQ_STR(fw_config_arg(cfg, 3), "--t.int=8");
    CHECK(fw_config_arg(cfg, 4) == NULL && fw_config_arg(cfg, -1) == NULL);
    char *argv2[] = {"fwtest", "--t.flag=false", "--t.flag=no", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 3, argv2), 0);
    CHECK(!fw_config_get_bool(cfg, "t.flag"));
    CHECK_EQ_INT(fw_config_argc(cfg), 0); /* each call replaces the positional list */

    /* Errors name the argument. */
    char *e1[] = {"fwtest", "x", "--etcd.timeot=1s", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 3, e1), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "command line argument 2 '--etcd.timeot=1s': unknown flag "
                                  "(did you mean '--etcd.timeout'?)");
    char *e2[] = {"fwtest", "--t.int", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 2, e2), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "command line argument 1 '--t.int': flag --t.int needs a value");
    char *e3[] = {"fwtest", "--t.int=1000", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 2, e3), FW_ECONFIG);
    CHECK_EQ_STR(fw_err_detail(), "command line argument 1 '--t.int=1000': key 't.int': 1000 is "
                                  "above the maximum 100");
    char *e4[] = {"fwtest", "-x", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 2, e4), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "argument 1 '-x': unknown flag") != NULL);
    char *e5[] = {"fwtest", "--etcd", "x", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 3, e5), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "'--etcd': unknown flag") != NULL);

    /* Help wins over anything else on the line, but not after "--". */
    char *h1[] = {"fwtest", "--bogus", "--help", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 3, h1), FW_CONFIG_HELP);
    char *h2[] = {"fwtest", "-h", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 2, h2), FW_CONFIG_HELP);
    char *h3[] = {"fwtest", "--", "--help", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 3, h3), 0);
    CHECK_EQ_STR(fw_config_arg(cfg, 0), "--help");

    /* Subcommand style: flags stop at the first positional argument. */
    fw_config_set_stop_at_positional(cfg, true);
    char *s1[] = {"fwtest", "--t.int=5", "job", "submit", "--wait", "--t.int=6", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 6, s1), 0);
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.int"), 5);
    CHECK_EQ_INT(fw_config_argc(cfg), 4);
    CHECK_EQ_STR(fw_config_arg(cfg, 2), "--wait");
    char *s2[] = {"fwtest", "--t.str", "v", "--help", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 4, s2), FW_CONFIG_HELP);
    char *s3[] = {"fwtest", "cmd", "--help", NULL};
    CHECK_EQ_INT(fw_config_load_args(cfg, 3, s3), 0); /* the subcommand's --help */
    fw_config_destroy(&cfg);
}

static void test_load(void) {
    const char *p1 = s_write("one.yaml", "t:\n  int: 11\n  str: one\n");
    REQUIRE(p1);
    char f1[512];
    snprintf(f1, sizeof f1, "%s", p1);
    const char *p2 = s_write("two.yaml", "t.int: 22\n");
    REQUIRE(p2);
    char f2[512];
    snprintf(f2, sizeof f2, "%s", p2);
    char envconf[600];
    snprintf(envconf, sizeof envconf, "FLYWHEEL_CONFIG=%s", f2);

    /* --config FILE beats FLYWHEEL_CONFIG; env values beat the file. */
    fw_config *cfg = s_new();
    REQUIRE(cfg);
    char *env[] = {envconf, "FLYWHEEL_T_STR=env", NULL};
    char *argv[] = {"fwtest", "--config", f1, "pos", NULL};
    CHECK_EQ_INT(fw_config_load(cfg, 4, argv, env), 0);
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.int"), 11);
    CHECK_EQ_STR(fw_config_get_str(cfg, "t.str"), "env");
    CHECK_EQ_STR(fw_config_file(cfg), f1);
    CHECK_EQ_INT(fw_config_argc(cfg), 1);
    fw_config_destroy(&cfg);

    /* FLYWHEEL_CONFIG names the file when --config does not. */
    cfg = s_new();
    REQUIRE(cfg);
    char *argv2[] = {"fwtest", NULL};
    CHECK_EQ_INT(fw_config_load(cfg, 1, argv2, env), 0);
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.int"), 22);
    fw_config_destroy(&cfg);

    /* The default file: read when present, skipped when missing. */
    cfg = s_new();
    REQUIRE(cfg);
    fw_config_set_default_file(cfg, f1);
    CHECK_EQ_INT(fw_config_load(cfg, 1, argv2, s_envp_empty), 0);
    CHECK_EQ_INT(fw_config_get_int(cfg, "t.int"), 11);
    fw_config_destroy(&cfg);
    cfg = s_new();
    REQUIRE(cfg);
    fw_config_set_default_file(cfg, "/nonexistent/flywheel.yaml");
    CHECK_EQ_INT(fw_config_load(cfg, 1, argv2, s_envp_empty), 0);
    CHECK(fw_config_file(cfg) == NULL);
    /* ... but a named file must exist, and --help skips loading altogether. */
    char *argv3[] = {"fwtest", "--config=/nonexistent/x.yaml", NULL};
    CHECK_EQ_INT(fw_config_load(cfg, 2, argv3, s_envp_empty), FW_ECONFIG);
    CHECK(strstr(fw_err_detail(), "/nonexistent/x.yaml: does not exist") != NULL);
    char *argv4[] = {"fwtest", "--config=/nonexistent/x.yaml", "--help", NULL};
    CHECK_EQ_INT(fw_config_load(cfg, 3, argv4, s_envp_empty), FW_CONFIG_HELP);
    char *argv5[] = {"fwtest", "--config=", NULL};
    CHECK_EQ_INT(fw_config_load(cfg, 2, argv5, s_envp_empty), FW_ECONFIG);
    fw_config_destroy(&cfg);
}

static char *s_capture_help(const fw_config *cfg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    int rc = fw_config_write_help(cfg, f);
    fclose(f);
    if (rc < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void test_help(void) {
    fw_config *cfg = s_new();
    REQUIRE(cfg);
    fw_config_set_usage(cfg, "[options] <command>");
    char *help = s_capture_help(cfg);
    REQUIRE(help);
    CHECK(strncmp(help, "Usage: fwtest [options] <command>\n\nA test program.\n", 50) == 0);
    CHECK(strstr(help, "--config FILE") != NULL);
    CHECK(strstr(help, "-h, --help") != NULL);
    const fw_opt *tables[] = {fw_common_opts, s_opts};
    for (int t = 0; t < 2; t++) {
        for (const fw_opt *o = tables[t]; o->name; o++) {
            char flag[160];
            snprintf(flag, sizeof flag, "  --%s", o->name);
            const char *at = strstr(help, flag);
            CHECKF(at != NULL, "--help lacks %s", o->name);
            if (!at) continue;
            const char *eol = strchr(at, '\n');
            /* The help text follows on the next line, indented (and wrapped). */
            char head[40];
            snprintf(head, sizeof head, "\n      %.30s", o->help);
            CHECKF(eol && strncmp(eol, head, strlen(head)) == 0, "%s: help text", o->name);
            if (o->def && *o->def) {
                char def[160];
                snprintf(def, sizeof def, "default: %s", o->def);
                CHECKF(strstr(at, def) && strstr(at, def) < eol, "%s: default", o->name);
            }
        }
    }
    CHECK(strstr(help, "  --etcd.timeout DURATION  (default: 5s, range 10ms..5m)\n") != NULL);
    CHECK(strstr(help, "  --log.level debug|info|warn|error  (default: info)\n") != NULL);
    CHECK(strstr(help, "  --t.flag[=BOOL]  (default: false)\n") != NULL);
    CHECK(strstr(help, "  --t.buf SIZE  (default: 64KiB, range 1KiB..1GiB)\n") != NULL);
    CHECK(strstr(help, "  --t.str TEXT  (default: hello)\n") != NULL);
    CHECK(strstr(help, "  --t.hosts LIST  (default: a, b)\n") != NULL);
    CHECK(strstr(help, "  --log.file TEXT  (default: \"\")\n") != NULL);
    CHECK(strstr(help, "[FLYWHEEL_ETCD_ENDPOINTS]") != NULL);
    CHECK(strstr(help, "      A string. [FLYWHEEL_T_STR]\n") != NULL);
    CHECK(strstr(help, "[T_NAME_OVERRIDE]") != NULL);
    /* Wrapped to 78 columns. */
    for (const char *line = help; *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        CHECKF(len <= 78, "help line too long: %.*s", (int)len, line);
        line += len + (eol ? 1 : 0);
    }
    free(help);
    fw_config_destroy(&cfg);
}

static void test_markdown(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    REQUIRE(f);
    CHECK_EQ_INT(fw_config_write_markdown(s_opts, "Test options", "Intro.", f), 0);
    fclose(f);
    REQUIRE(buf);
    CHECK(strncmp(buf, "## Test options\n\nIntro.\n\n| Key | Type |", 36) == 0);
    CHECK(strstr(buf, "| `t.wait` | duration | `250ms` | 1ms..1h | `FLYWHEEL_T_WAIT` | "
                      "A duration. |\n") != NULL);
    CHECK(strstr(buf, "| `t.mode` | enum | `fast` | `fast`, `safe`, `off` | `FLYWHEEL_T_MODE` "
                      "| An enum. |\n") != NULL);
    CHECK(strstr(buf, "| `t.name` | string | (empty) |  | `T_NAME_OVERRIDE` |") != NULL);
    CHECK(strstr(buf, "Unbounded \\| piped.") != NULL); /* '|' escaped in cells */
    free(buf);

    /* The committed reference must be what the tables generate. */
    const char *src = getenv("FW_SOURCE_DIR"); /* set by ctest */
    if (!src) src = FW_CONFIG_SOURCE_DIR;      /* run by hand */
    char md[1024];
    snprintf(md, sizeof md, "%s/docs/configuration.md", src);
    int rc = fw_config_doc_check(md);
    CHECKF(rc == 0, "%s", fw_err_detail());
    /* ... and the check notices drift: edit a copy, check, update, check. */
    char *text = NULL;
    size_t tlen = 0;
    REQUIRE(fw_file_read(md, 1 << 22, &text, &tlen) == 0);
    char *at = strstr(text, "http://127.0.0.1:2379");
    REQUIRE(at);
    at[7] = '9';
    const char *copy = s_write("configuration.md", text);
    free(text);
    REQUIRE(copy);
    char cp[512];
    snprintf(cp, sizeof cp, "%s", copy);
    CHECK_EQ_INT(fw_config_doc_check(cp), FW_ECONFLICT);
    CHECK(strstr(fw_err_detail(), "out of date") != NULL);
    CHECK_EQ_INT(fw_config_doc_update(cp), 0);
    CHECK_EQ_INT(fw_config_doc_check(cp), 0);
    /* Prose outside the block survives an update. */
    char *after = NULL;
    REQUIRE(fw_file_read(cp, 1 << 22, &after, NULL) == 0);
    CHECK(strstr(after, "# Configuration") != NULL);
    free(after);
    const char *nomark = s_write("nomark.md", "# no markers\n");
    CHECK_EQ_INT(fw_config_doc_check(nomark), FW_ECORRUPT);
}

static void test_write_yaml_roundtrip(void) {
    fw_config *a = s_new();
    REQUIRE(a);
    CHECK_EQ_INT(s_set(a, "t.str", "tab\there \"quoted\" \\ back: #x"), 0);
    CHECK_EQ_INT(s_set(a, "t.int", "-3"), 0);
    CHECK_EQ_INT(s_set(a, "t.dbl", "0.1"), 0);
    CHECK_EQ_INT(s_set(a, "t.flag", "on"), 0);
    CHECK_EQ_INT(s_set(a, "t.wait", "1m30s"), 0);
    CHECK_EQ_INT(s_set(a, "t.buf", "3000"), 0);
    CHECK_EQ_INT(s_set(a, "t.hosts", "x y, z"), 0);
    CHECK_EQ_INT(s_set(a, "t.mode", "off"), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    REQUIRE(f);
    CHECK_EQ_INT(fw_config_write_yaml(a, f), 0);
    fclose(f);
    REQUIRE(buf);
    CHECK(strstr(buf, "t.wait: 1m30s  # set\n") != NULL);
    CHECK(strstr(buf, "etcd.timeout: 5s  # default\n") != NULL);
    fw_config *b = s_new();
    REQUIRE(b);
    int rc = fw_config_load_yaml(b, buf, len, "dump");
    CHECKF(rc == 0, "%s\n%s", fw_err_detail(), buf);
    CHECK_EQ_STR(fw_config_get_str(b, "t.str"), fw_config_get_str(a, "t.str"));
    CHECK_EQ_INT(fw_config_get_int(b, "t.int"), -3);
    CHECK(fw_config_get_double(b, "t.dbl") == fw_config_get_double(a, "t.dbl"));
    CHECK(fw_config_get_bool(b, "t.flag"));
    CHECK_EQ_INT(fw_config_get_duration(b, "t.wait"), 90000);
    CHECK_EQ_INT(fw_config_get_size(b, "t.buf"), 3000);
    size_t n;
    const char *const *l = fw_config_get_list(b, "t.hosts", &n);
    CHECK(n == 2 && strcmp(l[0], "x y") == 0 && strcmp(l[1], "z") == 0);
    CHECK_EQ_STR(fw_config_get_str(b, "t.mode"), "off");
    CHECK_EQ_STR(fw_config_get_str(b, "etcd.prefix"), "/flywheel");
    free(buf);
    fw_config_destroy(&a);
    fw_config_destroy(&b);
}

/* Malformed tables are refused with the row named. */
static void s_bad_table(const fw_opt *row, const char *want) {
    fw_opt t[2] = {*row, FW_OPT_END};
    int rc = fw_config_check_table(t);
    CHECKF(rc == FW_EINVAL, "%s accepted", row->name ? row->name : "(null)");
    CHECKF(strstr(fw_err_detail(), want) != NULL, "got '%s', want '%s'", fw_err_detail(), want);
}

static void test_table_errors(void) {
    s_bad_table(&(fw_opt){.name = "Bad.Name", .type = FW_OPT_STRING, .help = "h"}, "name must");
    s_bad_table(&(fw_opt){.name = "a..b", .type = FW_OPT_STRING, .help = "h"}, "name must");
    s_bad_table(&(fw_opt){.name = "a.", .type = FW_OPT_STRING, .help = "h"}, "name must");
    s_bad_table(&(fw_opt){.name = "a", .help = "h"}, "unknown type");
    s_bad_table(&(fw_opt){.name = "config", .type = FW_OPT_STRING, .help = "h"}, "reserved");
    s_bad_table(&(fw_opt){.name = "a", .type = FW_OPT_STRING}, "no help");
    s_bad_table(&(fw_opt){.name = "a", .type = FW_OPT_INT, .help = "h"}, "needs a default");
    s_bad_table(&(fw_opt){.name = "a", .type = FW_OPT_INT, .def = "x", .help = "h"},
                "option 'a': default: invalid integer 'x'");
    s_bad_table(&(fw_opt){.name = "a", .type = FW_OPT_INT, .def = "5", .min = "6", .help = "h"},
                "default: 5 is below the minimum 6");
    s_bad_table(
        &(fw_opt){.name = "a", .type = FW_OPT_INT, .def = "5", .min = "9", .max = "1", .help = "h"},
        "below the minimum");
    s_bad_table(&(fw_opt){.name = "a",
                          .type = FW_OPT_DURATION,
                          .def = "5s",
                          .min = "2s",
                          .max = "1s",
                          .help = "h"},
                "default: 5s is above the maximum 1s");
    s_bad_table(
        &(fw_opt){.name = "a", .type = FW_OPT_INT, .def = "1", .min = "2", .max = "1", .help = "h"},
        "below the minimum");
    s_bad_table(
        &(fw_opt){
            .name = "a", .type = FW_OPT_DOUBLE, .def = "1", .min = "0", .max = "x", .help = "h"},
        "max: invalid number");
    s_bad_table(&(fw_opt){.name = "a", .type = FW_OPT_STRING, .min = "1", .help = "h"},
                "bounds on a string");
    s_bad_table(&(fw_opt){.name = "a", .type = FW_OPT_ENUM, .def = "x", .help = "h"},
                "choices belong");
    s_bad_table(
        &(fw_opt){.name = "a", .type = FW_OPT_ENUM, .def = "x", .choices = "a|b", .help = "h"},
        "default: invalid value 'x'");
    s_bad_table(
        &(fw_opt){.name = "a", .type = FW_OPT_ENUM, .def = "a", .choices = "a||b", .help = "h"},
        "choices must");
    s_bad_table(&(fw_opt){.name = "a", .type = FW_OPT_STRING, .env = "lower", .help = "h"},
                "env must");
    s_bad_table(
        &(fw_opt){
            .name = "a", .type = FW_OPT_LIST, .def = "ok,n.o", .validate = s_no_dot, .help = "h"},
        "must not contain");
    /* Clashes inside one table and across tables. */
    const fw_opt dup[] = {{.name = "a.b", .type = FW_OPT_STRING, .help = "h"},
                          {.name = "a.b", .type = FW_OPT_STRING, .help = "h"},
                          FW_OPT_END};
    CHECK_EQ_INT(fw_config_check_table(dup), FW_EINVAL);
    const fw_opt sect[] = {{.name = "a", .type = FW_OPT_STRING, .help = "h"},
                           {.name = "a.b", .type = FW_OPT_STRING, .help = "h"},
                           FW_OPT_END};
    CHECK_EQ_INT(fw_config_check_table(sect), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "both a value and a section") != NULL);
    const fw_opt envs[] = {{.name = "a.b", .type = FW_OPT_STRING, .help = "h"},
                           {.name = "a-b", .type = FW_OPT_STRING, .help = "h"},
                           FW_OPT_END};
    CHECK_EQ_INT(fw_config_check_table(envs), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "FLYWHEEL_A_B") != NULL);
    fw_config *cfg = s_new();
    REQUIRE(cfg);
    const fw_opt again[] = {{.name = "etcd.timeout", .type = FW_OPT_STRING, .help = "h"},
                            FW_OPT_END};
    CHECK_EQ_INT(fw_config_add(cfg, again), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "earlier table") != NULL);
    const fw_opt env_taken[] = {
        {.name = "other", .type = FW_OPT_STRING, .env = "FLYWHEEL_ETCD_USER", .help = "h"},
        FW_OPT_END};
    CHECK_EQ_INT(fw_config_add(cfg, env_taken), FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "taken by 'etcd.user'") != NULL);
    /* A failed add leaves the config usable and unchanged. */
    CHECK(!fw_config_has(cfg, "other"));
    CHECK_EQ_INT(fw_config_get_duration(cfg, "etcd.timeout"), 5000);
    fw_config_destroy(&cfg);
}

static void test_apply_logging(void) {
    fw_config *cfg = s_new();
    REQUIRE(cfg);
    char logpath[512];
    snprintf(logpath, sizeof logpath, "%s/daemon.log", s_dir);
    CHECK_EQ_INT(s_set(cfg, "log.level", "warn"), 0);
    CHECK_EQ_INT(s_set(cfg, "log.file", logpath), 0);
    char *env[] = {"FLYWHEEL_NOT_AN_OPTION=1", NULL};
    CHECK_EQ_INT(fw_config_load_env(cfg, env), 0);
    CHECK_EQ_INT(fw_common_opts_apply_logging(cfg), 0);
    CHECK_EQ_INT(fw_log_get_level(), FW_LOG_WARN);
    fw_info("event=should-not-appear");
    fw_warn("event=should-appear");
    fw_log_open(NULL);
    fw_log_set_level(FW_LOG_INFO);
    char *text = NULL;
    REQUIRE(fw_file_read(logpath, 1 << 16, &text, NULL) == 0);
    CHECK(strstr(text, "event=should-appear") != NULL);
    CHECK(strstr(text, "should-not-appear") == NULL);
    CHECK(strstr(text, "event=config-warning") != NULL);
    CHECK(strstr(text, "FLYWHEEL_NOT_AN_OPTION") != NULL);
    free(text);
    CHECK_EQ_INT(s_set(cfg, "log.file", "/nonexistent/dir/x.log"), 0);
    CHECK_EQ_INT(fw_common_opts_apply_logging(cfg), FW_EIO);
    CHECK(strstr(fw_err_detail(), "/nonexistent/dir/x.log") != NULL);
    fw_log_set_level(FW_LOG_INFO);
    fw_config_destroy(&cfg);
}

int main(void) {
    s_dir = fw_test_tmpdir("config");
    if (!s_dir) return 1;
    RUN(test_defaults);
    RUN(test_duration_size);
    RUN(test_types_and_bounds);
    RUN(test_precedence);
    RUN(test_yaml);
    RUN(test_file_errors);
    RUN(test_env);
    RUN(test_args);
    RUN(test_load);
    RUN(test_help);
    RUN(test_markdown);
    RUN(test_write_yaml_roundtrip);
    RUN(test_table_errors);
    RUN(test_apply_logging);
    fw_file_remove_tree(s_dir);
    free(s_dir);
    return fw_test_summary();
}
