/* test_coord_spec - job spec validation and the bearer token file.
 *
 * Specs come from users: every wrong field must be refused with its path in
 * the message, never crash, and a good spec must come out with its
 * defaults filled in. Token files are parsed at startup: a bad line is an
 * error naming the file and line. */
#include "coord_spec.h"
#include "coord_tokens.h"
#include "fw_err.h"
#include "fw_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parse text; expect failure with `needle` in the detail. */
static void s_bad(const char *text, const char *needle) {
    coord_spec_t sp;
    int rc = coord_spec_parse(text, 1000, &sp);
    CHECK_EQ_INT(rc, FW_EINVAL);
    const char *d = fw_err_detail();
    CHECKF(strstr(d, needle) != NULL, "spec %s: detail \"%s\" lacks \"%s\"", text, d, needle);
    if (rc == 0) coord_spec_clear(&sp);
}

static void test_spec_good(void) {
    coord_spec_t sp;
    const char *text =
        "{\"kind\": \"command\", \"shards\": 200, \"max_retries\": 2, \"priority\": 7,"
        " \"resources\": {\"cpus\": 2, \"gpus\": 1, \"memory_mb\": 512}, \"labels\": {\"zone\": "
        "\"a\"},"
        " \"command\": [\"sh\", \"-c\", \"echo $FLYWHEEL_SHARD_INDEX\"]}";
    REQUIRE(coord_spec_parse(text, 1000, &sp) == 0);
    CHECK_EQ_STR(sp.kind, "command");
    CHECK(sp.admin_only);
    CHECK(!sp.gang);
    CHECK_EQ_INT(sp.ntasks, 200);
    CHECK_EQ_INT(sp.max_retries, 2);
    CHECK_EQ_INT(sp.priority, 7);
    CHECK_EQ_INT(sp.cpus, 2);
    CHECK_EQ_INT(sp.gpus, 1);
    CHECK_EQ_INT(sp.memory_mb, 512);
    CHECK_EQ_INT(sp.nlabels, 1);
    CHECK_EQ_STR(sp.label_key[0], "zone");
    CHECK_EQ_STR(sp.label_val[0], "a");
    REQUIRE(sp.json != NULL);
    CHECK(strstr(sp.json, "\"command\"") != NULL);
    coord_spec_clear(&sp);

    /* Defaults, and a gang. */
    REQUIRE(coord_spec_parse("{\"kind\":\"noop\",\"world_size\":3}", 1000, &sp) == 0);
    CHECK(sp.gang);
    CHECK(!sp.admin_only);
    CHECK_EQ_INT(sp.ntasks, 3);
    CHECK_EQ_INT(sp.max_retries, COORD_SPEC_DEFAULT_RETRIES);
    CHECK_EQ_INT(sp.cpus, COORD_SPEC_DEFAULT_CPUS);
    CHECK_EQ_INT(sp.priority, 0);
    coord_spec_clear(&sp);
    coord_spec_clear(&sp); /* idempotent */
}

static void test_spec_bad(void) {
    s_bad("not json", "spec: not valid JSON");
    s_bad("[1,2]", "spec: expected a JSON object");
    s_bad("{\"shards\":1}", "spec.kind: required");
    s_bad("{\"kind\":7,\"shards\":1}", "spec.kind: expected a string");
    s_bad("{\"kind\":\"bake\",\"shards\":1}", "spec.kind: unknown kind");
    s_bad("{\"kind\":\"noop\",\"shards\":1,\"colour\":1}", "spec.colour: unknown field");
    s_bad("{\"kind\":\"noop\",\"shards\":1,\"world_size\":2}", "spec.world_size");
    s_bad("{\"kind\":\"noop\",\"shards\":0}", "spec.shards");
    s_bad("{\"kind\":\"noop\",\"shards\":1001}", "spec.shards"); /* over max_tasks */
    s_bad("{\"kind\":\"noop\",\"shards\":\"3\"}", "spec.shards");
    s_bad("{\"kind\":\"noop\",\"shards\":1,\"resources\":{\"cpus\":-1}}",
          "spec.resources.cpus: expected a non-negative integer");
    s_bad("{\"kind\":\"noop\",\"shards\":1,\"resources\":{\"cpus\":1.5}}", "spec.resources.cpus");
    s_bad("{\"kind\":\"noop\",\"shards\":1,\"resources\":{\"disk\":1}}",
          "spec.resources.disk: unknown field");
    s_bad("{\"kind\":\"noop\",\"shards\":1,\"resources\":[]}",
          "spec.resources: expected an object");
    s_bad("{\"kind\":\"noop\",\"shards\":1,\"labels\":{\"zone\":1}}", "spec.labels.zone");
    s_bad("{\"kind\":\"noop\",\"shards\":1,\"priority\":100000}", "spec.priority");
    s_bad("{\"kind\":\"noop\",\"shards\":1,\"max_retries\":-1}", "spec.max_retries");
    s_bad("{\"kind\":\"command\",\"shards\":1}", "spec.command: required");
    s_bad("{\"kind\":\"command\",\"shards\":1,\"command\":[]}", "spec.command");
    s_bad("{\"kind\":\"command\",\"shards\":1,\"command\":[\"ls\",3]}", "spec.command[1]");
    s_bad("{\"kind\":\"command\",\"shards\":1,\"command\":[\"\"]}", "spec.command[0]");
    s_bad("{\"kind\":\"command\",\"shards\":1,\"command\":[\"env\"],"
          "\"env\":{\"FLYWHEEL_RANK\":\"1\"}}",
          "spec.env.FLYWHEEL_RANK");
    coord_spec_t sp;
    CHECK(coord_spec_parse(NULL, 10, &sp) == FW_EINVAL);
}

/* finetune, embed, eval: their fields, gang default, models x shards. */
static void test_spec_ml(void) {
    coord_spec_t sp;
    REQUIRE(coord_spec_parse("{\"kind\":\"finetune\",\"base\":\"demo@champion\","
                             "\"dataset\":\"sotu-train\",\"hparams\":{\"steps\":20,"
                             "\"lr\":0.003,\"zero\":true,\"grad_sync\":\"layers\"}}", 1000,
                             &sp) == 0);
    CHECK(sp.gang); /* world_size 1 by default: a gang of one */
    CHECK_EQ_INT(sp.ntasks, 1);
    CHECK(!sp.admin_only);
    coord_spec_clear(&sp);
    REQUIRE(coord_spec_parse("{\"kind\":\"eval\",\"models\":[\"a:1\",\"a:2\",\"b\"],"
                             "\"dataset\":\"d\",\"shards\":4}", 1000, &sp) == 0);
    CHECK(!sp.gang);
    CHECK_EQ_INT(sp.ntasks, 12); /* 3 models x 4 shards */
    coord_spec_clear(&sp);
    REQUIRE(coord_spec_parse("{\"kind\":\"embed\",\"model\":\"m\",\"dataset\":\"d\","
                             "\"shards\":2,\"batch\":16}", 1000, &sp) == 0);
    CHECK_EQ_INT(sp.ntasks, 2);
    coord_spec_clear(&sp);

    s_bad("{\"kind\":\"finetune\",\"dataset\":\"d\",\"hparams\":{\"steps\":1}}",
          "spec.base: required");
    s_bad("{\"kind\":\"finetune\",\"base\":\"m\",\"dataset\":\"d\"}", "spec.hparams: required");
    s_bad("{\"kind\":\"finetune\",\"base\":\"m\",\"dataset\":\"d\",\"hparams\":{}}",
          "spec.hparams.steps: required");
    s_bad("{\"kind\":\"finetune\",\"base\":\"m\",\"dataset\":\"d\","
          "\"hparams\":{\"steps\":5,\"stpes\":5}}", "spec.hparams.stpes: unknown field");
    s_bad("{\"kind\":\"finetune\",\"base\":\"m\",\"dataset\":\"d\","
          "\"hparams\":{\"steps\":5,\"lr\":\"big\"}}", "spec.hparams.lr: expected a number");
    s_bad("{\"kind\":\"finetune\",\"base\":\"m\",\"dataset\":\"d\","
          "\"hparams\":{\"steps\":5,\"zero\":1}}", "spec.hparams.zero: expected true");
    s_bad("{\"kind\":\"finetune\",\"base\":\"m\",\"dataset\":\"d\","
          "\"hparams\":{\"steps\":5,\"grad_sync\":\"often\"}}",
          "spec.hparams.grad_sync: expected \"auto\"");
    s_bad("{\"kind\":\"finetune\",\"base\":\"m\",\"dataset\":\"d\",\"shards\":2,"
          "\"hparams\":{\"steps\":5}}", "spec.shards: a finetune job runs as a gang");
    s_bad("{\"kind\":\"finetune\",\"base\":\"m\",\"dataset\":\"d\",\"collective\":\"mpi\","
          "\"hparams\":{\"steps\":5}}", "spec.collective");
    s_bad("{\"kind\":\"embed\",\"dataset\":\"d\"}", "spec.model: required");
    s_bad("{\"kind\":\"embed\",\"model\":\"m\"}", "spec.dataset: required");
    s_bad("{\"kind\":\"embed\",\"model\":\"m\",\"dataset\":\"d\",\"threads\":0}",
          "spec.threads");
    s_bad("{\"kind\":\"eval\",\"models\":[],\"dataset\":\"d\"}", "spec.models");
    s_bad("{\"kind\":\"eval\",\"models\":[\"a\",7],\"dataset\":\"d\"}", "spec.models[1]");
    s_bad("{\"kind\":\"eval\",\"models\":[\"a\",\"b\"],\"dataset\":\"d\",\"shards\":600}",
          "2 models x 600 shards = 1200 tasks");
}

static void test_tokens(void) {
    coord_tokens_t *t = coord_tokens_new();
    REQUIRE(t);
    const char *good = "# tokens\n\n"
                       "s3cret-admin alice admin\n"
                       "  s3cret-user   bob   user  \n"
                       "# the end\n";
    REQUIRE(coord_tokens_parse(t, good, "tokens.txt") == 0);
    CHECK_EQ_INT(coord_tokens_count(t), 2);
    const coord_token_t *a = coord_tokens_find(t, "s3cret-admin");
    REQUIRE(a);
    CHECK_EQ_STR(a->name, "alice");
    CHECK_EQ_INT(a->role, COORD_ROLE_ADMIN);
    const coord_token_t *u = coord_tokens_find(t, "s3cret-user");
    REQUIRE(u);
    CHECK_EQ_INT(u->role, COORD_ROLE_USER);
    CHECK(coord_tokens_find(t, "s3cret-adm") == NULL); /* a prefix is not a token */
    CHECK(coord_tokens_find(t, "s3cret-admin2") == NULL);
    CHECK(coord_tokens_find(t, "") == NULL);
    CHECK(coord_tokens_find(t, NULL) == NULL);
    coord_tokens_destroy(&t);
    coord_tokens_destroy(&t);
    CHECK(t == NULL);

    struct {
        const char *text, *needle;
    } bad[] = {
        {"tok alice\n", "tokens.txt:1: expected"},
        {"# c\ntok alice admin extra\n", "tokens.txt:2: expected"},
        {"tok alice root\n", "tokens.txt:1: role \"root\""},
        {"tok al/ice user\n", "tokens.txt:1: name"},
        {"tok a admin\ntok b user\n", "tokens.txt:2: token of"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = coord_tokens_new();
        CHECK_EQ_INT(coord_tokens_parse(t, bad[i].text, "tokens.txt"), FW_ECONFIG);
        CHECKF(strstr(fw_err_detail(), bad[i].needle) != NULL, "detail \"%s\" lacks \"%s\"",
               fw_err_detail(), bad[i].needle);
        CHECK_EQ_INT(coord_tokens_count(t), 0); /* left empty on error */
        coord_tokens_destroy(&t);
    }
    /* From a file, and a missing file. */
    char *dir = fw_test_tmpdir("coord_tokens");
    char path[512];
    snprintf(path, sizeof path, "%s/tokens", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs("abc carol user\n", f);
    fclose(f);
    t = coord_tokens_new();
    CHECK(coord_tokens_load(t, path) == 0);
    CHECK(coord_tokens_find(t, "abc") != NULL);
    coord_tokens_destroy(&t);
    snprintf(path, sizeof path, "%s/missing", dir);
    t = coord_tokens_new();
    CHECK(coord_tokens_load(t, path) < 0);
    coord_tokens_destroy(&t);
    fw_test_rmtree(dir);
    free(dir);
}

int main(void) {
    RUN(test_spec_good);
    RUN(test_spec_bad);
    RUN(test_spec_ml);
    RUN(test_tokens);
    return fw_test_summary();
}
