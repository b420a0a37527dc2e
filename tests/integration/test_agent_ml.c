/* test_agent_ml.c - the finetune, embed and eval executors end to end, with
 * the real flywheel-engine (argv[1]) and a real directory store, driving
 * agent_runner directly (no coordinator):
 *   finetune   result.model is a tree in the store with the base's config;
 *              progress and checkpoint events in step order, each checkpoint
 *              in the store; a second task resumed from the step-10
 *              checkpoint starts at step 11, says resumed_from_step 10 and
 *              ends with the same model digest as the uninterrupted run; a
 *              2-rank ring gang: rank 0 stores the model, rank 1 its loss
 *   eval       2 models x 2 shards == 2 models x 1 shard, record by record;
 *              task index -> (model, shard) as the contract says
 *   embed      2 shards: global row ids, vectors == one unsharded run;
 *              more shards than records: an empty matrix, no engine
 *   faults     a corrupted dataset blob, no agent.store_dir, bad specs. */
#include "agent_task.h"
#include "fw_err.h"
#include "fw_store.h"
#include "fw_test.h"
#include "fw_time.h"
#include "test_engine_util.h"

#include <czmq.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/* ------------------------------------------------------------ harness */

#define MAXR 32
#define MAXP 512

typedef struct {
    int results;
    char task[MAXR][130];
    char status[MAXR][33];
    char error[MAXR][4100];
    char result[MAXR][8192];
    int progress;
    char ptask[MAXP][130];
    int64_t pstep[MAXP];
    char pckpt[MAXP][80];
    double ploss[MAXP];
} s_events;

static void s_on_started(void *arg, const agent_task_t *t) {
    (void)arg;
    (void)t;
}

static void s_on_result(void *arg, agent_task_t *t) {
    s_events *e = arg;
    int i = e->results % MAXR;
    e->results++;
    snprintf(e->task[i], sizeof e->task[i], "%s", t->result.task_id);
    snprintf(e->status[i], sizeof e->status[i], "%s", t->result.status);
    snprintf(e->error[i], sizeof e->error[i], "%s", t->result.error ? t->result.error : "");
    snprintf(e->result[i], sizeof e->result[i], "%s", t->result.result ? t->result.result : "");
    t->result_sent_at = fw_mono_ms();
}

static void s_on_progress(void *arg, const agent_task_t *t, json_t *o) {
    s_events *e = arg;
    if (e->progress >= MAXP) return;
    int i = e->progress++;
    snprintf(e->ptask[i], sizeof e->ptask[i], "%s", t->task_id);
    json_t *step = json_object_get(o, "step");
    e->pstep[i] = json_is_integer(step) ? json_integer_value(step) : -1;
    json_t *ck = json_object_get(o, "checkpoint");
    snprintf(e->pckpt[i], sizeof e->pckpt[i], "%s",
             json_is_string(ck) ? json_string_value(ck) : "");
    json_t *loss = json_object_get(json_object_get(o, "metrics"), "loss");
    e->ploss[i] = json_is_number(loss) ? json_number_value(loss) : NAN;
}

static zloop_t *s_loop;
static char *s_engine, *s_store_dir, *s_work;
static fw_store *s_store;
static char s_base[FW_DIGEST_STR_SIZE], s_data[FW_DIGEST_STR_SIZE];
static int s_records; /* of s_data */

static agent_runner_t *s_runner(s_events *e, const char *work, const char *store_dir) {
    memset(e, 0, sizeof *e);
    agent_runner_cfg cfg = {.work_dir = work,
                            .log_max_bytes = 1 << 20,
                            .log_keep = 2,
                            .kill_grace_ms = 500,
                            .agent_id = "test-agent",
                            .base_env = environ,
                            .store_dir = store_dir,
                            .cache_max_bytes = 64 << 20,
                            .engine = s_engine};
    agent_runner_events ev = {s_on_started, s_on_result, s_on_progress};
    agent_runner_t *r = agent_runner_new(&cfg, &ev, e);
    if (r) agent_runner_set_loop(r, s_loop);
    return r;
}

typedef struct {
    agent_runner_t *r;
    s_events *e;
    int want;
    int64_t deadline;
} s_drive;

static int s_tick(zloop_t *loop, int id, void *arg) {
    (void)loop;
    (void)id;
    s_drive *d = arg;
    agent_runner_reap(d->r);
    agent_runner_tick(d->r, 0);
    return d->e->results >= d->want || fw_mono_ms() > d->deadline ? -1 : 0;
}

static bool s_wait(agent_runner_t *r, s_events *e, int results, int64_t timeout_ms) {
    s_drive d = {r, e, results, fw_mono_ms() + timeout_ms};
    if (e->results >= results) return true;
    int id = zloop_timer(s_loop, 10, 0, s_tick, &d);
    zloop_start(s_loop);
    zloop_timer_end(s_loop, id);
    return e->results >= results;
}

static int s_assign(agent_runner_t *r, const char *job, const char *task, const char *kind,
                    const char *spec, const char *const *env, bool gang) {
    agent_assign_t a;
    memset(&a, 0, sizeof a);
    a.job_id = job;
    a.task_id = task;
    a.attempt = 1;
    a.kind = kind;
    a.spec = spec;
    a.env = env;
    a.has_rank = gang;
    a.rank = 0;
    a.world_size = 1;
    return agent_runner_assign(r, &a);
}

/* The result of `task` (index into e), or -1. */
static int s_find(const s_events *e, const char *task) {
    for (int i = 0; i < e->results && i < MAXR; i++)
        if (strcmp(e->task[i], task) == 0) return i;
    return -1;
}

static json_t *s_result(const s_events *e, const char *task) {
    int i = s_find(e, task);
    if (i < 0) return NULL;
    if (strcmp(e->status[i], "succeeded") != 0)
        fprintf(stderr, "task %s: %s: %s\n", task, e->status[i], e->error[i]);
    return json_loads(e->result[i], 0, NULL);
}

static const char *s_str(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : "";
}

static int64_t s_int(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

/* ------------------------------------------------------------- specs */

static char *s_finetune_spec(int steps) {
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:{s:i, s:i, s:i, s:f}, s:i, s:i, s:{s:{s:s, s:s},"
                  " s:{s:s, s:s, s:i}, s:s}}",
                  "kind", "finetune", "base", "demo@champion", "dataset", "moby", "hparams",
                  "steps", steps, "batch", 2, "seq", 32, "lr", 1e-3, "checkpoint_every", 5,
                  "threads", 1, "resolved", "base", "ref", "demo:1", "digest", s_base, "dataset",
                  "ref", "moby@1", "digest", s_data, "records", s_records, "output", "demo");
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* eval over `models` digests (n of them) or embed of models[0]. */
static char *s_sharded_spec(const char *kind, const char *const *models, int n, int shards,
                            const char *data, int records) {
    json_t *res = json_pack("{s:{s:s, s:s, s:i}}", "dataset", "ref", "moby@1", "digest", data,
                            "records", records);
    if (strcmp(kind, "eval") == 0) {
        json_t *arr = json_array();
        for (int i = 0; i < n; i++) {
            char ref[32];
            snprintf(ref, sizeof ref, "demo:%d", i + 1);
            json_array_append_new(arr, json_pack("{s:s, s:s}", "ref", ref, "digest", models[i]));
        }
        json_object_set_new(res, "models", arr);
    } else {
        json_object_set_new(res, "model",
                            json_pack("{s:s, s:s}", "ref", "demo:1", "digest", models[0]));
    }
    json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:o}", "kind", kind, "shards", shards, "batch", 4,
                          "threads", 1, "resolved", res);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* ------------------------------------------------------------- tests */

static char s_trained[FW_DIGEST_STR_SIZE];

static void test_finetune_resume(void) {
    s_events e;
    char work[4096];
    snprintf(work, sizeof work, "%s/agent-ft", s_work);
    agent_runner_t *r = s_runner(&e, work, s_store_dir);
    REQUIRE(r != NULL);
    char *spec = s_finetune_spec(20);
    CHECK_EQ_INT(s_assign(r, "j-000001", "j-000001.0", "finetune", spec, NULL, true),
                 AGENT_ASSIGN_ACCEPTED);
    REQUIRE(s_wait(r, &e, 1, 60000));
    CHECK_EQ_STR(e.status[0], "succeeded");
    json_t *res = s_result(&e, "j-000001.0");
    REQUIRE(res != NULL);
    fprintf(stderr, "finetune result: %s\n", e.result[0]);
    snprintf(s_trained, sizeof s_trained, "%s", s_str(res, "model"));
    CHECK(fw_digest_valid(s_trained));
    CHECK_EQ_INT(s_int(res, "steps"), 20);
    CHECK_EQ_INT(s_int(res, "resumed_from_step"), 0);
    CHECK_EQ_INT(s_int(res, "tokens"), 20 * 2 * 32);
    double final_loss = json_number_value(json_object_get(res, "final_loss"));
    CHECK(final_loss > 0 && final_loss < 10);
    CHECK(json_number_value(json_object_get(res, "tokens_per_s")) > 0);

    /* The model is a tree in the store; its config.json is the base's. */
    char dir[4200], cfg_a[4300], cfg_b[4300];
    snprintf(dir, sizeof dir, "%s/trained", s_work);
    REQUIRE(fw_store_materialise_tree(s_store, s_trained, dir) == 0);
    snprintf(cfg_a, sizeof cfg_a, "%s/config.json", dir);
    snprintf(cfg_b, sizeof cfg_b, "%s/m0/config.json", s_work);
    json_t *ca = json_load_file(cfg_a, 0, NULL), *cb = json_load_file(cfg_b, 0, NULL);
    CHECK(ca && cb && json_equal(ca, cb));
    json_decref(ca), json_decref(cb);

    /* Progress: steps increase; checkpoints at 5, 10, 15, 20, stored first. */
    int64_t last = 0, ck_steps[8];
    char ck10[80] = "";
    int nck = 0;
    bool increasing = true, have_loss = false;
    for (int i = 0; i < e.progress; i++) {
        if (strcmp(e.ptask[i], "j-000001.0") != 0) continue;
        if (e.pckpt[i][0]) {
            CHECK(fw_store_exists(s_store, e.pckpt[i]));
            if (nck < 8) ck_steps[nck++] = e.pstep[i];
            if (e.pstep[i] == 10) snprintf(ck10, sizeof ck10, "%s", e.pckpt[i]);
            if (e.pstep[i] < last) increasing = false;
            last = e.pstep[i];
        } else {
            if (e.pstep[i] <= last && last) increasing = e.pstep[i] == last && increasing;
            last = e.pstep[i];
            have_loss = have_loss || isfinite(e.ploss[i]);
        }
    }
    CHECK(increasing);
    CHECK(have_loss);
    int64_t last_step = -1; /* the last step is never rate-limited away */
    for (int i = 0; i < e.progress; i++)
        if (strcmp(e.ptask[i], "j-000001.0") == 0 && !e.pckpt[i][0]) last_step = e.pstep[i];
    CHECK_EQ_INT(last_step, 20);
    CHECK_EQ_INT(nck, 4);
    for (int i = 0; i < nck && i < 4; i++) CHECK_EQ_INT(ck_steps[i], 5 * (i + 1));
    REQUIRE(ck10[0]);

    /* Resume from step 10: the first step is 11, and bitwise the same run. */
    int before = e.progress;
    char env1[200], env2[64];
    snprintf(env1, sizeof env1, "FLYWHEEL_RESUME_CHECKPOINT=%s", ck10);
    snprintf(env2, sizeof env2, "FLYWHEEL_RESUME_STEP=10");
    const char *env[] = {env1, env2, NULL};
    CHECK_EQ_INT(s_assign(r, "j-000002", "j-000002.0", "finetune", spec, env, true),
                 AGENT_ASSIGN_ACCEPTED);
    REQUIRE(s_wait(r, &e, 2, 60000));
    json_t *res2 = s_result(&e, "j-000002.0");
    REQUIRE(res2 != NULL);
    fprintf(stderr, "resumed result: %s\n", e.result[1]);
    CHECK_EQ_STR(e.status[1], "succeeded");
    CHECK_EQ_INT(s_int(res2, "resumed_from_step"), 10);
    int64_t first = -1;
    for (int i = before; i < e.progress && first < 0; i++)
        if (strcmp(e.ptask[i], "j-000002.0") == 0 && !e.pckpt[i][0]) first = e.pstep[i];
    CHECK_EQ_INT(first, 11);
    CHECK_NEAR(json_number_value(json_object_get(res2, "final_loss")), final_loss, 1e-6);
    /* The engine resumes bit for bit: the very same model directory. */
    CHECK_EQ_STR(s_str(res2, "model"), s_trained);
    json_decref(res), json_decref(res2);
    free(spec);
    agent_runner_destroy(&r);
}

/* A 2-rank gang on the ring: rank 0 stores the model, rank 1 reports its
 * loss, which is the same global loss. */
static void test_finetune_gang(void) {
    s_events e;
    char work[4096], rdv[64];
    snprintf(work, sizeof work, "%s/agent-gang", s_work);
    snprintf(rdv, sizeof rdv, "tcp://127.0.0.1:%d", fw_test_free_port());
    agent_runner_t *r = s_runner(&e, work, s_store_dir);
    REQUIRE(r != NULL);
    char *spec = s_finetune_spec(6);
    for (uint64_t rank = 0; rank < 2; rank++) {
        char task[32];
        snprintf(task, sizeof task, "j-000009.%d", (int)rank);
        agent_assign_t a;
        memset(&a, 0, sizeof a);
        a.job_id = "j-000009";
        a.task_id = task;
        a.attempt = 1;
        a.kind = "finetune";
        a.spec = spec;
        a.has_rank = true;
        a.rank = rank;
        a.world_size = 2;
        a.rendezvous = rdv;
        CHECK_EQ_INT(agent_runner_assign(r, &a), AGENT_ASSIGN_ACCEPTED);
    }
    REQUIRE(s_wait(r, &e, 2, 60000));
    json_t *r0 = s_result(&e, "j-000009.0"), *r1 = s_result(&e, "j-000009.1");
    REQUIRE(r0 && r1);
    fprintf(stderr, "gang rank 1 result: %s\n", e.result[s_find(&e, "j-000009.1")]);
    CHECK(fw_digest_valid(s_str(r0, "model")));
    CHECK(fw_store_exists(s_store, s_str(r0, "model")));
    CHECK_EQ_INT(s_int(r1, "rank"), 1);
    CHECK(json_object_get(r1, "model") == NULL);
    CHECK_NEAR(json_number_value(json_object_get(r1, "final_loss")),
               json_number_value(json_object_get(r0, "final_loss")), 1e-9);
    /* Only rank 0 reports checkpoints. */
    int ck1 = 0;
    for (int i = 0; i < e.progress; i++)
        if (strcmp(e.ptask[i], "j-000009.1") == 0 && e.pckpt[i][0]) ck1++;
    CHECK_EQ_INT(ck1, 0);
    json_decref(r0), json_decref(r1);
    free(spec);
    agent_runner_destroy(&r);
}

/* The per-example lines of a scores blob as an array (caller decrefs). */
static json_t *s_scores(const char *digest) {
    char *buf = NULL;
    size_t len = 0;
    if (fw_store_get_buffer(s_store, digest, 64 << 20, &buf, &len) != 0) return NULL;
    json_t *arr = te_json_lines(buf);
    free(buf);
    return arr;
}

static void test_eval_shards(void) {
    REQUIRE(s_trained[0]);
    s_events e;
    char work[4096];
    snprintf(work, sizeof work, "%s/agent-eval", s_work);
    agent_runner_t *r = s_runner(&e, work, s_store_dir);
    REQUIRE(r != NULL);
    const char *models[] = {s_base, s_trained};
    char *sharded = s_sharded_spec("eval", models, 2, 2, s_data, s_records);
    char *whole = s_sharded_spec("eval", models, 2, 1, s_data, s_records);
    /* job 3: 2 models x 2 shards (tasks .0-.3); job 4: 2 models x 1 shard */
    const char *tasks3[] = {"j-000003.0", "j-000003.1", "j-000003.2", "j-000003.3"};
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(s_assign(r, "j-000003", tasks3[i], "eval", sharded, NULL, false), 0);
    CHECK_EQ_INT(s_assign(r, "j-000004", "j-000004.0", "eval", whole, NULL, false), 0);
    CHECK_EQ_INT(s_assign(r, "j-000004", "j-000004.1", "eval", whole, NULL, false), 0);
    REQUIRE(s_wait(r, &e, 6, 60000));
    for (int m = 0; m < 2; m++) {
        json_t *a = s_result(&e, tasks3[2 * m]), *b = s_result(&e, tasks3[2 * m + 1]);
        json_t *w = s_result(&e, m ? "j-000004.1" : "j-000004.0");
        REQUIRE(a && b && w);
        if (m == 1) fprintf(stderr, "eval shard result: %s\n", e.result[s_find(&e, tasks3[3])]);
        CHECK_EQ_INT(s_int(a, "model_index"), m);
        CHECK_EQ_INT(s_int(b, "model_index"), m);
        CHECK_EQ_INT(s_int(a, "shard"), 0);
        CHECK_EQ_INT(s_int(b, "shard"), 1);
        CHECK_EQ_STR(s_str(a, "model"), m ? "demo:2" : "demo:1");
        CHECK_EQ_INT(s_int(a, "first_record"), 0);
        CHECK_EQ_INT(s_int(b, "first_record"), s_records / 2);
        CHECK_EQ_INT(s_int(a, "records") + s_int(b, "records"), s_records);
        CHECK_EQ_INT(s_int(json_object_get(b, "summary"), "records"), s_int(b, "records"));
        json_t *sa = s_scores(s_str(a, "scores")), *sb = s_scores(s_str(b, "scores"));
        json_t *sw = s_scores(s_str(w, "scores"));
        REQUIRE(sa && sb && sw);
        CHECK_EQ_INT(json_array_size(sa) + json_array_size(sb), s_records);
        CHECK_EQ_INT(json_array_size(sw), s_records);
        double maxd = 0;
        for (size_t i = 0; i < json_array_size(sw); i++) {
            json_t *x = i < json_array_size(sa) ? json_array_get(sa, i)
                                                : json_array_get(sb, i - json_array_size(sa));
            json_t *y = json_array_get(sw, i);
            double d = fabs(json_number_value(json_object_get(x, "logprob")) -
                            json_number_value(json_object_get(y, "logprob")));
            if (d > maxd) maxd = d;
            CHECK_EQ_INT(s_int(x, "tokens"), s_int(y, "tokens"));
        }
        fprintf(stderr, "eval model %d: max |logprob diff| sharded vs whole = %g\n", m, maxd);
        CHECK(maxd < 1e-3);
        /* The token-weighted merge of the shards is the whole run's loss. */
        json_t *suma = json_object_get(a, "summary"), *sumb = json_object_get(b, "summary"),
               *sumw = json_object_get(w, "summary");
        double ta = (double)s_int(suma, "tokens"), tb = (double)s_int(sumb, "tokens");
        double merged = (json_number_value(json_object_get(suma, "loss")) * ta +
                         json_number_value(json_object_get(sumb, "loss")) * tb) /
                        (ta + tb);
        CHECK_NEAR(merged, json_number_value(json_object_get(sumw, "loss")), 1e-5);
        json_decref(sa), json_decref(sb), json_decref(sw);
        json_decref(a), json_decref(b), json_decref(w);
    }
    /* The agent's cached copy of the dataset rots: it is dropped and fetched
     * again from the store (the cache re-hashes every hit), and the task
     * succeeds with the same scores. */
    char cached[4300];
    snprintf(cached, sizeof cached, "%s/cache/blobs/sha256/%.2s/%s", work, s_data + 7, s_data + 7);
    FILE *f = fopen(cached, "r+b");
    REQUIRE(f != NULL);
    fseek(f, 3, SEEK_SET);
    fputc('#', f);
    fclose(f);
    CHECK_EQ_INT(s_assign(r, "j-000008", "j-000008.0", "eval", whole, NULL, false), 0);
    REQUIRE(s_wait(r, &e, 7, 60000));
    json_t *again = s_result(&e, "j-000008.0"), *w0 = s_result(&e, "j-000004.0");
    REQUIRE(again && w0);
    CHECK_EQ_STR(e.status[s_find(&e, "j-000008.0")], "succeeded");
    CHECK_EQ_STR(s_str(again, "scores"), s_str(w0, "scores"));
    CHECK(json_object_get(json_object_get(again, "summary"), "data") == NULL);
    json_decref(again), json_decref(w0);
    fw_digest dg, want;
    CHECK(fw_digest_file(cached, &dg) == 0 && fw_digest_parse(s_data, &want) == 0 &&
          fw_digest_equal(&dg, &want));
    free(sharded), free(whole);
    agent_runner_destroy(&r);
}

/* An FWEMBED blob: rows, dim, ids and vectors (caller frees *buf). */
static int s_matrix(const char *digest, char **buf, uint64_t *rows, uint32_t *dim,
                    const uint64_t **ids, const float **vec) {
    size_t len = 0;
    if (fw_store_get_buffer(s_store, digest, 64 << 20, buf, &len) != 0 || len < 32) return -1;
    memcpy(dim, *buf + 12, 4);
    memcpy(rows, *buf + 16, 8);
    if (memcmp(*buf, "FWEMBED", 8) != 0 || len != 32 + 8 * *rows + 4 * *rows * *dim) return -1;
    *ids = (const uint64_t *)(*buf + 32);
    *vec = (const float *)(*buf + 32 + 8 * *rows);
    return 0;
}

static void test_embed_shards(void) {
    s_events e;
    char work[4096];
    snprintf(work, sizeof work, "%s/agent-embed", s_work);
    agent_runner_t *r = s_runner(&e, work, s_store_dir);
    REQUIRE(r != NULL);
    const char *models[] = {s_base};
    char *sharded = s_sharded_spec("embed", models, 1, 2, s_data, s_records);
    char *whole = s_sharded_spec("embed", models, 1, 1, s_data, s_records);
    CHECK_EQ_INT(s_assign(r, "j-000005", "j-000005.0", "embed", sharded, NULL, false), 0);
    CHECK_EQ_INT(s_assign(r, "j-000005", "j-000005.1", "embed", sharded, NULL, false), 0);
    CHECK_EQ_INT(s_assign(r, "j-000006", "j-000006.0", "embed", whole, NULL, false), 0);
    REQUIRE(s_wait(r, &e, 3, 60000));
    json_t *a = s_result(&e, "j-000005.0"), *b = s_result(&e, "j-000005.1"),
           *w = s_result(&e, "j-000006.0");
    REQUIRE(a && b && w);
    fprintf(stderr, "embed shard result: %s\n", e.result[s_find(&e, "j-000005.1")]);
    CHECK_EQ_INT(s_int(b, "first_record"), s_records / 2);
    CHECK_EQ_INT(s_int(a, "rows") + s_int(b, "rows"), s_records);
    CHECK_EQ_INT(s_int(a, "dim"), 64);
    char *ba = NULL, *bb = NULL, *bw = NULL;
    uint64_t ra, rb, rw;
    uint32_t da, db, dw;
    const uint64_t *ia, *ib, *iw;
    const float *va, *vb, *vw;
    REQUIRE(s_matrix(s_str(a, "matrix"), &ba, &ra, &da, &ia, &va) == 0);
    REQUIRE(s_matrix(s_str(b, "matrix"), &bb, &rb, &db, &ib, &vb) == 0);
    REQUIRE(s_matrix(s_str(w, "matrix"), &bw, &rw, &dw, &iw, &vw) == 0);
    CHECK_EQ_INT(ra + rb, rw);
    CHECK(da == dw && db == dw);
    /* Row ids are global line numbers: shard 1 starts at first_record + 1. */
    bool ids_ok = true;
    for (uint64_t i = 0; i < rw; i++) {
        uint64_t got = i < ra ? ia[i] : ib[i - ra];
        if (got != i + 1 || iw[i] != i + 1) ids_ok = false;
    }
    CHECK(ids_ok);
    double maxd = 0;
    for (uint64_t i = 0; i < rw; i++)
        for (uint32_t k = 0; k < dw; k++) {
            float x = i < ra ? va[i * dw + k] : vb[(i - ra) * dw + k];
            double d = fabs((double)x - (double)vw[i * dw + k]);
            if (d > maxd) maxd = d;
        }
    fprintf(stderr, "embed: max |vector diff| sharded vs whole = %g\n", maxd);
    CHECK(maxd < 1e-4);
    free(ba), free(bb), free(bw);
    json_decref(a), json_decref(b), json_decref(w);

    /* More shards than records: shard 2 of 3 over 2 records is empty. */
    char tiny[FW_DIGEST_STR_SIZE];
    const char *two = "{\"text\":\"Call me Ishmael.\"}\n{\"text\":\"Some years ago.\"}\n";
    REQUIRE(fw_store_put_buffer(s_store, two, strlen(two), tiny) == 0);
    char *three = s_sharded_spec("embed", models, 1, 3, tiny, 2);
    CHECK_EQ_INT(s_assign(r, "j-000007", "j-000007.0", "embed", three, NULL, false), 0);
    REQUIRE(s_wait(r, &e, 4, 30000));
    json_t *z = s_result(&e, "j-000007.0");
    REQUIRE(z != NULL);
    CHECK_EQ_STR(e.status[3], "succeeded");
    CHECK_EQ_INT(s_int(z, "rows"), 0);
    CHECK_EQ_INT(s_int(z, "dim"), 64);
    CHECK(fw_store_exists(s_store, s_str(z, "matrix")));
    json_decref(z);
    free(three);
    free(sharded), free(whole);
    agent_runner_destroy(&r);
}

static void test_faults(void) {
    s_events e;
    char work[4096];
    snprintf(work, sizeof work, "%s/agent-fault", s_work);
    agent_runner_t *r = s_runner(&e, work, s_store_dir);
    REQUIRE(r != NULL);
    const char *models[] = {s_base};

    /* A dataset blob whose bytes rotted in the store: the digest is named. */
    char bad[FW_DIGEST_STR_SIZE], path[4096];
    const char *text = "{\"text\":\"The whale.\"}\n{\"text\":\"The sea.\"}\n";
    REQUIRE(fw_store_put_buffer(s_store, text, strlen(text), bad) == 0);
    REQUIRE(fw_store_local_path(s_store, bad, path, sizeof path) == 0);
    FILE *f = fopen(path, "r+b");
    REQUIRE(f != NULL);
    fseek(f, 5, SEEK_SET);
    fputc('X', f);
    fclose(f);
    char *spec = s_sharded_spec("eval", models, 1, 1, bad, 2);
    CHECK_EQ_INT(s_assign(r, "j-000010", "j-000010.0", "eval", spec, NULL, false), 0);
    REQUIRE(s_wait(r, &e, 1, 10000));
    CHECK_EQ_STR(e.status[0], "failed");
    CHECK(strstr(e.error[0], bad) != NULL);
    CHECK(strstr(e.error[0], "ECORRUPT") != NULL);
    fprintf(stderr, "corrupt: %s\n", e.error[0]);
    free(spec);

    /* The engine refuses (seq above the model's context of 64): failed, with
     * its own error line in the task's error. */
    char *base_spec = s_finetune_spec(20);
    json_t *o = json_loads(base_spec, 0, NULL);
    free(base_spec);
    REQUIRE(o != NULL);
    json_object_set_new(json_object_get(o, "hparams"), "seq", json_integer(128));
    char *long_seq = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    CHECK_EQ_INT(s_assign(r, "j-000013", "j-000013.0", "finetune", long_seq, NULL, true), 0);
    REQUIRE(s_wait(r, &e, 2, 30000));
    int k13 = s_find(&e, "j-000013.0");
    REQUIRE(k13 >= 0);
    CHECK_EQ_STR(e.status[k13], "failed");
    CHECK(strstr(e.error[k13], "longer than the model's context") != NULL);
    fprintf(stderr, "engine failure: %s\n", e.error[k13]);
    free(long_seq);

    /* Bad specs fail at once, naming the field. */
    static const struct {
        const char *kind, *spec, *want;
    } bads[] = {
        {"finetune", "{\"hparams\":{\"steps\":5}}", "spec.resolved: missing"},
        {"finetune",
         "{\"hparams\":{\"steps\":5},\"resolved\":{\"base\":{\"ref\":\"a:1\",\"digest\":\"nope\"}}"
         "}",
         "spec.resolved.base.digest"},
        {"eval", "{\"resolved\":{\"models\":[]}}", "spec.resolved.models"},
        {"embed", "not json", "spec: not a JSON object"},
        {"finetune", NULL, "spec.hparams.steps"},
        {"embed", NULL, "spec.shards"},
    };
    char *ft = s_finetune_spec(20), *em = s_sharded_spec("embed", models, 1, 1, s_data, s_records);
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        char task[32];
        snprintf(task, sizeof task, "j-000011.%zu", i);
        const char *sp = bads[i].spec;
        char *edited = NULL;
        if (!sp) { /* a good spec with one field broken */
            json_t *spec_o = json_loads(i == 4 ? ft : em, 0, NULL);
            if (i == 4)
                json_object_set_new(json_object_get(spec_o, "hparams"), "steps", json_string("x"));
            else
                json_object_set_new(spec_o, "shards", json_integer(0));
            sp = edited = json_dumps(spec_o, JSON_COMPACT);
            json_decref(spec_o);
        }
        int before = e.results;
        CHECK_EQ_INT(s_assign(r, "j-000011", task, bads[i].kind, sp, NULL, false), 0);
        CHECK_EQ_INT(e.results, before + 1); /* at once: no process */
        int k = s_find(&e, task);
        REQUIRE(k >= 0);
        CHECK_EQ_STR(e.status[k], "failed");
        CHECKF(strstr(e.error[k], bads[i].want) != NULL, "%s: got \"%s\"", bads[i].want,
               e.error[k]);
        free(edited);
    }
    free(ft), free(em);
    agent_runner_destroy(&r);

    /* No agent.store_dir: a clear failure, for every ML kind. */
    snprintf(work, sizeof work, "%s/agent-nostore", s_work);
    r = s_runner(&e, work, NULL);
    REQUIRE(r != NULL);
    spec = s_sharded_spec("embed", models, 1, 1, s_data, s_records);
    CHECK_EQ_INT(s_assign(r, "j-000012", "j-000012.0", "embed", spec, NULL, false), 0);
    REQUIRE(e.results == 1);
    CHECK_EQ_STR(e.status[0], "failed");
    CHECK(strstr(e.error[0], "agent.store_dir is not set") != NULL);
    free(spec);
    agent_runner_destroy(&r);
}

/* ------------------------------------------------------------ fixture */

/* Short records from the first chapters of Moby-Dick: one sentence-ish
 * piece (at most ~200 bytes) a line, canonical JSONL. */
static int s_make_dataset(const char *src, const char *dest, int want) {
    FILE *in = fopen(src, "r"), *out = fopen(dest, "w");
    if (!in || !out) return -1;
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (n < want && getline(&line, &cap, in) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        const char *text = json_string_value(json_object_get(o, "text"));
        for (const char *p = text; p && *p && n < want;) {
            size_t len = strcspn(p, ".;?!");
            if (len > 200) len = 200;
            if (p[len]) len++;
            while (*p == ' ') p++, len--;
            if (len > 20) {
                char *piece = strndup(p, len);
                json_t *rec = json_pack("{s:s}", "text", piece);
                char *s = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
                if (s) fprintf(out, "%s\n", s), n++;
                free(s), free(piece);
                json_decref(rec);
            }
            p += len;
        }
        json_decref(o);
    }
    free(line);
    fclose(in);
    fclose(out);
    return n;
}

int main(int argc, char **argv) {
    te_init(argc, argv, "agent-ml");
    zsys_handler_set(NULL);
    s_loop = zloop_new();
    s_engine = strdup(argc > 1 ? argv[1] : fw_test_bin("agent/engine/flywheel-engine"));
    s_work = strdup(te_dir());
    s_store_dir = strdup(te_path("store"));
    const char *moby = fw_test_shared("corpora/moby-dick.jsonl");
    char *tokdata = strdup(te_path("tok.jsonl")), *ds = strdup(te_path("data.jsonl"));
    char *tok = strdup(te_path("tok")), *m0 = strdup(te_path("m0"));
    if (te_split_jsonl(moby, 3, tokdata, NULL) != 0 ||
        (s_records = s_make_dataset(moby, ds, 40)) != 40) {
        fprintf(stderr, "cannot read the Moby-Dick corpus\n");
        return 1;
    }
    te_result tr = te_runv(NULL, "tokenizer-train", "--vocab-size", "512", "--data", tokdata,
                           "--out", tok, NULL);
    te_result ir = te_runv(NULL, "init", "--config", "tiny", "--tokenizer", tok, "--out", m0,
                           "--seed", "3", NULL);
    if (tr.code != 0 || ir.code != 0) {
        fprintf(stderr, "fixture failed: %s%s\n", tr.err, ir.err);
        return 1;
    }
    te_result_free(&tr), te_result_free(&ir);
    s_store = fw_store_open_dir(s_store_dir, NULL);
    if (!s_store || fw_store_put_tree(s_store, m0, s_base) != 0 ||
        fw_store_put_file(s_store, ds, s_data) != 0) {
        fprintf(stderr, "store fixture failed: %s\n", fw_err_detail());
        return 1;
    }
    RUN(test_faults);
    RUN(test_finetune_resume);
    RUN(test_finetune_gang);
    RUN(test_eval_shards);
    RUN(test_embed_shards);
    fw_store_destroy(&s_store);
    zloop_destroy(&s_loop);
    free(tokdata), free(ds), free(tok), free(m0);
    free(s_engine), free(s_work), free(s_store_dir);
    te_cleanup();
    return fw_test_summary();
}
