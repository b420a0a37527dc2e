/* test_engine_ckpt.c - checkpoints: save -> load -> continue equals an
 * uninterrupted run bit for bit (parameters and AdamW state), every header
 * field round-trips, and damaged or mismatched files are refused without
 * touching the model. */
#include "checkpoint.h"
#include "engine.h"
#include "fw_err.h"
#include "fw_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const fw_model_config k_cfg = {.n_layer = 2, .n_head = 2, .n_embd = 32, .n_ctx = 16,
                                      .vocab_size = 50, .layer_norm_eps = 1e-5f};
static char *g_dir;

static const char *s_path(const char *rel) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, rel);
    return buf[k];
}

/* One optimizer step on batch `step` (deterministic data per step index),
 * two micro-batches accumulated. */
static void s_step(fw_model *m, const fw_train_state *st, int64_t step) {
    enum { B = 2, T = 16 };
    int32_t in[2][B * T], tg[2][B * T];
    uint64_t s = 1000 + (uint64_t)step;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < B * T; i++) {
            in[k][i] = (int32_t)(fw_test_rand(&s) % 50);
            tg[k][i] = i % 5 == 0 ? -1 : (int32_t)(fw_test_rand(&s) % 50);
        }
    size_t n = fw_count_targets(tg[0], B * T) + fw_count_targets(tg[1], B * T);
    fw_model_zero_grad(m);
    for (int k = 0; k < 2; k++) {
        fw_model_forward(m, in[k], tg[k], B, T, NULL);
        fw_model_backward(m, 1.0f / (float)n);
    }
    fw_adamw opt = st->opt;
    opt.lr = fw_lr_at(step, st->opt.lr, st->warmup_steps, st->total_steps, st->min_lr_frac);
    fw_model_step_adamw(m, &opt, step + 1, NULL);
}

static fw_train_state s_state(void) {
    fw_train_state st = {0};
    st.opt = fw_adamw_defaults();
    st.opt.lr = 3e-3f;
    st.min_lr_frac = 0.1f;
    st.warmup_steps = 2;
    st.total_steps = 8;
    st.batch_size = 2;
    st.seq_len = 16;
    st.grad_accum = 2;
    st.world_size = 1;
    st.seed = 1234;
    st.loader = (fw_loader_state){.seed = 1234, .epoch = 3, .cursor = 17};
    fw_rng_seed(&st.rng, 99);
    fw_rng_u64(&st.rng);
    return st;
}

static void test_resume_equals_uninterrupted(void) {
    fw_train_state st = s_state();
    fw_model *a = fw_model_new(&k_cfg, "cpu");
    REQUIRE(a && fw_model_init_random(a, 5) == 0);
    for (int64_t s = 0; s < 4; s++) s_step(a, &st, s);
    st.step = 4;
    char ck[1024];
    snprintf(ck, sizeof ck, "%s", s_path("run.ckpt"));
    REQUIRE(fw_checkpoint_save(ck, a, &st) == 0);
    struct stat sb;
    CHECK(stat(s_path("run.ckpt.new"), &sb) != 0);
    for (int64_t s = 4; s < 8; s++) s_step(a, &st, s);

    fw_model_config cfg;
    fw_train_state got;
    REQUIRE(fw_checkpoint_peek(ck, &cfg, NULL) == 0);
    fw_model *b = fw_model_new(&cfg, "cpu");
    REQUIRE(b);
    REQUIRE(fw_checkpoint_load(ck, b, &got) == 0);
    CHECK_EQ_INT(got.step, 4);
    CHECK(memcmp(&got.opt, &st.opt, sizeof st.opt) == 0);
    CHECK(got.min_lr_frac == st.min_lr_frac && got.warmup_steps == 2 && got.total_steps == 8);
    CHECK(got.batch_size == 2 && got.seq_len == 16 && got.grad_accum == 2 && got.world_size == 1);
    CHECK(got.seed == 1234);
    CHECK(got.loader.seed == 1234 && got.loader.epoch == 3 && got.loader.cursor == 17);
    CHECK(memcmp(&got.rng, &st.rng, sizeof st.rng) == 0);
    for (int64_t s = got.step; s < 8; s++) s_step(b, &got, s);

    size_t np = fw_model_num_params(a);
    CHECK(memcmp(fw_model_params(a, NULL), fw_model_params(b, NULL), np * 4) == 0);
    float *ma = malloc(np * 4), *va = malloc(np * 4), *mb = malloc(np * 4), *vb = malloc(np * 4);
    fw_model_read_opt_state(a, ma, va);
    fw_model_read_opt_state(b, mb, vb);
    CHECK(memcmp(ma, mb, np * 4) == 0 && memcmp(va, vb, np * 4) == 0);
    /* and resuming without the AdamW state would not have matched */
    fw_model *c = fw_model_new(&cfg, "cpu");
    REQUIRE(fw_checkpoint_load(ck, c, &got) == 0);
    memset(ma, 0, np * 4);
    fw_model_write_opt_state(c, ma, ma);
    for (int64_t s = 4; s < 8; s++) s_step(c, &got, s);
    CHECK(memcmp(fw_model_params(a, NULL), fw_model_params(c, NULL), np * 4) != 0);
    free(ma);
    free(va);
    free(mb);
    free(vb);
    fw_model_destroy(&a);
    fw_model_destroy(&b);
    fw_model_destroy(&c);
}

static char *s_slurp(const char *p, size_t *len) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*len);
    if (fread(b, 1, *len, f) != *len) *len = 0;
    fclose(f);
    return b;
}

static void s_spit(const char *p, const char *b, size_t len) {
    FILE *f = fopen(p, "wb");
    fwrite(b, 1, len, f);
    fclose(f);
}

/* Load `bytes` as a checkpoint into m: must fail with err and a detail
 * containing want, and leave m's parameters as they were. */
static void s_expect_refused(fw_model *m, const char *bytes, size_t len, int err, const char *want) {
    const char *p = s_path("bad.ckpt");
    s_spit(p, bytes, len);
    size_t np = fw_model_num_params(m);
    float *before = malloc(np * 4);
    memcpy(before, fw_model_params(m, NULL), np * 4);
    fw_train_state st;
    int rc = fw_checkpoint_load(p, m, &st);
    CHECKF(rc == err && strstr(fw_err_detail(), want), "rc %d (%s), wanted %d \"%s\"", rc,
           fw_err_detail(), err, want);
    CHECK(memcmp(before, fw_model_params(m, NULL), np * 4) == 0);
    free(before);
}

static void test_bad_checkpoints(void) {
    fw_train_state st = s_state();
    fw_model *a = fw_model_new(&k_cfg, "cpu");
    REQUIRE(a && fw_model_init_random(a, 6) == 0);
    s_step(a, &st, 0);
    st.step = 1;
    char ck[1024];
    snprintf(ck, sizeof ck, "%s", s_path("good.ckpt")); /* s_path's buffers rotate */
    REQUIRE(fw_checkpoint_save(ck, a, &st) == 0);
    size_t len;
    char *good = s_slurp(ck, &len);
    REQUIRE(good);
    CHECK(memcmp(good, "FWCKPT\0\0", 8) == 0);
    CHECK_EQ_INT(len, 256 + 3 * fw_model_num_params(a) * 4 + 8);
    fw_model *m = fw_model_new(&k_cfg, "cpu");
    REQUIRE(m && fw_model_init_random(m, 7) == 0);
    char *b = malloc(len);

    memcpy(b, good, len);
    b[300] ^= 0x10; /* one bit in the parameters */
    s_expect_refused(m, b, len, FW_ECORRUPT, "checksum");
    memcpy(b, good, len);
    b[len - 1] ^= 1; /* the checksum itself */
    s_expect_refused(m, b, len, FW_ECORRUPT, "checksum");
    for (size_t cut = 0; cut < len; cut += cut < 300 ? 13 : 4099)
        s_expect_refused(m, good, cut, FW_ECORRUPT, "bad.ckpt");
    s_expect_refused(m, good, len - 1, FW_ECORRUPT, "truncated");
    memcpy(b, good, len);
    b[0] = 'X';
    s_expect_refused(m, b, len, FW_ECORRUPT, "magic");
    memcpy(b, good, len);
    b[8] = 2; /* version */
    s_expect_refused(m, b, len, FW_EVERSION, "version 2");
    memcpy(b, good, len);
    b[16] = 7; /* n_layer 7: num_params no longer matches */
    s_expect_refused(m, b, len, FW_ECORRUPT, "num_params");
    memcpy(b, good, len);
    b[44] = 6; /* unknown flags */
    s_expect_refused(m, b, len, FW_ECORRUPT, "flags");
    free(b);
    free(good);

    /* a checkpoint of another shape is refused by name */
    fw_model_config other = k_cfg;
    other.n_layer = 3;
    fw_model *o = fw_model_new(&other, "cpu");
    fw_train_state got;
    int rc = fw_checkpoint_load(ck, o, &got);
    CHECKF(rc == FW_EINVAL, "rc %d %s", rc, fw_err_detail());
    CHECK(strstr(fw_err_detail(), "n_layer is 2, the model has 3") != NULL);
    other = k_cfg;
    other.layer_norm_eps = 1e-6f;
    fw_model *o2 = fw_model_new(&other, "cpu");
    CHECK(fw_checkpoint_load(ck, o2, &got) == FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "layer_norm_eps") != NULL);
    CHECK(fw_checkpoint_load(s_path("none.ckpt"), m, &got) == FW_ENOTFOUND);
    CHECK(fw_checkpoint_save(s_path("no/such/dir/x.ckpt"), a, &st) < 0);
    fw_model_destroy(&o);
    fw_model_destroy(&o2);
    fw_model_destroy(&a);
    fw_model_destroy(&m);
}

int main(void) {
    fw_engine_set_threads(2);
    g_dir = fw_test_tmpdir("engine-ckpt");
    if (!g_dir) return 1;
    RUN(test_resume_equals_uninterrupted);
    RUN(test_bad_checkpoints);
    fw_test_rmtree(g_dir);
    free(g_dir);
    return fw_test_summary();
}
