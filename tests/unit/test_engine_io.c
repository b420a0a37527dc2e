/* test_engine_io.c - model directories and safetensors: round trips, F16 /
 * BF16 files, the Hugging Face Conv1D layout, and every kind of bad file
 * (truncated, lying header, overlapping or outside offsets, wrong dtype,
 * wrong shapes, config.json missing or contradicting fields). */
#include "engine.h"
#include "fw_err.h"
#include "fw_test.h"
#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const fw_model_config k_cfg = {.n_layer = 2, .n_head = 2, .n_embd = 16, .n_ctx = 8,
                                      .vocab_size = 40, .layer_norm_eps = 1e-5f};

static char *g_dir;

static const char *s_path(const char *rel) {
    static char buf[8][1024];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, rel);
    return buf[k];
}

static int s_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    fclose(f);
    return w == len ? 0 : -1;
}

static char *s_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

/* A raw safetensors file: 8-byte length (hlen_override when nonzero), the
 * header text, then data_len bytes of data. */
static void s_write_raw(const char *path, const char *header, uint64_t hlen_override,
                        const void *data, size_t data_len) {
    size_t hl = strlen(header);
    uint64_t h64 = hlen_override ? hlen_override : hl;
    char *buf = malloc(8 + hl + data_len + 1);
    memcpy(buf, &h64, 8);
    memcpy(buf + 8, header, hl);
    if (data_len) memcpy(buf + 8 + hl, data, data_len);
    s_write_file(path, buf, 8 + hl + data_len);
    free(buf);
}

static fw_model *s_model(uint64_t seed) {
    fw_model *m = fw_model_new(&k_cfg, "cpu");
    if (m) fw_model_init_random(m, seed);
    return m;
}

static void s_logits(fw_model *m, float *out) {
    int32_t in[16];
    for (int i = 0; i < 16; i++) in[i] = (i * 7 + 3) % k_cfg.vocab_size;
    fw_model_forward(m, in, NULL, 2, 8, NULL);
    fw_model_get_logits(m, 0, 16, out);
}

/* ------------------------------------------------------------------------ */

static void test_half_conversions(void) {
    CHECK_EQ_INT(fw_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(fw_f32_to_f16(-2.0f), 0xc000);
    CHECK_EQ_INT(fw_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(fw_f32_to_f16(65520.0f), 0x7c00); /* rounds to infinity */
    CHECK_EQ_INT(fw_f32_to_f16(0x1p-24f), 0x0001); /* smallest subnormal */
    CHECK_EQ_INT(fw_f32_to_f16(0x1p-25f), 0x0000); /* tie to even: 0 */
    CHECK_EQ_INT(fw_f32_to_f16(0.1f), 0x2e66);
    CHECK_EQ_INT(fw_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);             /* tie, even stays */
    CHECK_EQ_INT(fw_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);         /* tie, odd rounds up */
    CHECK(isnan(fw_f16_to_f32(fw_f32_to_f16(NAN))));
    CHECK_EQ_INT(fw_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(fw_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);             /* tie to even */
    CHECK_EQ_INT(fw_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    CHECK(isnan(fw_bf16_to_f32(fw_f32_to_bf16(NAN))));
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
        bad += fw_f32_to_f16(fw_f16_to_f32((uint16_t)h)) != h;
        bad += fw_f32_to_bf16(fw_bf16_to_f32((uint16_t)h)) != h && !isnan(fw_bf16_to_f32((uint16_t)h));
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_save_load_bitwise(void) {
    fw_model *m = s_model(1);
    REQUIRE(m);
    const char *dir = s_path("m1");
    REQUIRE(fw_model_save_dir(m, dir, fw_test_shared("gpt2-tokenizer")) == 0);
    struct stat st;
    CHECK(stat(s_path("m1/config.json"), &st) == 0);
    CHECK(stat(s_path("m1/encoder.json"), &st) == 0);
    CHECK(stat(s_path("m1/vocab.bpe"), &st) == 0);
    CHECK(stat(s_path("m1/model.safetensors.new"), &st) != 0); /* no leftovers */
    fw_model *l = fw_model_load_dir(dir, "cpu");
    REQUIRE(l);
    const fw_model_config *a = fw_model_config_get(m), *b = fw_model_config_get(l);
    CHECK(memcmp(a, b, sizeof *a) == 0);
    size_t np = fw_model_num_params(m);
    CHECK(memcmp(fw_model_params(m, NULL), fw_model_params(l, NULL), np * 4) == 0);
    float la[16 * 40], lb[16 * 40];
    s_logits(m, la);
    s_logits(l, lb);
    CHECK(memcmp(la, lb, sizeof la) == 0);
    /* the file has HF names, Conv1D shapes and format metadata */
    fw_st_file *f = fw_st_open(s_path("m1/model.safetensors"));
    REQUIRE(f);
    CHECK_EQ_INT(fw_st_count(f), 4 + 12 * 2);
    const fw_st_tensor *t = fw_st_find(f, "h.1.mlp.c_fc.weight");
    REQUIRE(t);
    CHECK(t->ndim == 2 && t->shape[0] == 16 && t->shape[1] == 64);
    t = fw_st_find(f, "wte.weight");
    REQUIRE(t);
    CHECK(t->shape[0] == 40); /* the real vocabulary, not the padded one */
    CHECK_EQ_STR(fw_st_metadata(f, "format"), "pt");
    fw_st_close(&f);
    CHECK(f == NULL);
    /* config.json is HF GPT2Config */
    size_t len;
    char *cj = s_read_file(s_path("m1/config.json"), &len);
    CHECK(strstr(cj, "\"model_type\": \"gpt2\"") != NULL);
    CHECK(strstr(cj, "\"GPT2LMHeadModel\"") != NULL);
    CHECK(strstr(cj, "\"n_positions\": 8") != NULL);
    CHECK(strstr(cj, "\"layer_norm_epsilon\": 1e-5") != NULL); /* not 9.99999975e-06 */
    free(cj);
    CHECK(fw_model_save_dir(m, s_path("m1b"), s_path("no-such-tokenizer")) == FW_ENOTFOUND);
    fw_model_destroy(&m);
    fw_model_destroy(&l);
}

/* Rewrite a saved model.safetensors with every tensor stored as dtype. */
static void s_rewrite_as(const char *src, const char *dst, fw_st_dtype dtype) {
    fw_st_file *f = fw_st_open(src);
    REQUIRE(f);
    size_t n = fw_st_count(f);
    fw_st_entry *e = calloc(n, sizeof *e);
    for (size_t i = 0; i < n; i++) {
        const fw_st_tensor *t = fw_st_at(f, i);
        float *d = malloc((t->numel ? t->numel : 1) * sizeof *d);
        fw_st_read_f32(f, t, d);
        e[i] = (fw_st_entry){.name = t->name, .dtype = dtype, .ndim = t->ndim, .data = d};
        memcpy(e[i].shape, t->shape, sizeof e[i].shape);
    }
    CHECK(fw_st_write(dst, e, n, NULL) == 0);
    for (size_t i = 0; i < n; i++) free((void *)e[i].data);
    free(e);
    fw_st_close(&f);
}

static void test_half_precision_files(void) {
    fw_model *m = s_model(2);
    REQUIRE(m);
    REQUIRE(fw_model_save_dir(m, s_path("h"), NULL) == 0);
    size_t np = fw_model_num_params(m);
    const float *p = fw_model_params(m, NULL);
    float ref[16 * 40], got[16 * 40];
    s_logits(m, ref);
    const struct {
        fw_st_dtype dt;
        const char *name;
        double rel, logit_tol;
    } cases[] = {{FW_ST_F16, "f16", 0x1p-11, 2e-3}, {FW_ST_BF16, "bf16", 0x1p-8, 2e-2}};
    for (int k = 0; k < 2; k++) {
        char dir[64];
        snprintf(dir, sizeof dir, "%s", cases[k].name);
        fw_test_rmtree(s_path(dir));
        mkdir(s_path(dir), 0755);
        char cfgp[96], stp[96];
        snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
        snprintf(stp, sizeof stp, "%s/model.safetensors", dir);
        size_t len;
        char *cj = s_read_file(s_path("h/config.json"), &len);
        s_write_file(s_path(cfgp), cj, len);
        free(cj);
        s_rewrite_as(s_path("h/model.safetensors"), s_path(stp), cases[k].dt);
        fw_model *l = fw_model_load_dir(s_path(dir), "cpu");
        REQUIRE(l);
        const float *q = fw_model_params(l, NULL);
        int bad = 0;
        for (size_t i = 0; i < np; i++)
            bad += fabs(q[i] - p[i]) > cases[k].rel * fabs(p[i]) + 1e-30 && fabsf(p[i]) > 6.2e-5f;
        CHECKF(bad == 0, "%s: %d parameters off by more than a half ulp", cases[k].name, bad);
        CHECK(memcmp(q, p, np * 4) != 0); /* really converted */
        s_logits(l, got);
        double maxd = 0;
        for (int i = 0; i < 16 * 40; i++)
            if (fabs(got[i] - ref[i]) > maxd) maxd = fabs(got[i] - ref[i]);
        CHECKF(maxd < cases[k].logit_tol, "%s: logits differ by %g", cases[k].name, maxd);
        fw_model_destroy(&l);
    }
    fw_model_destroy(&m);
}

/* Build a GPT-2 file by hand in Hugging Face's layout (Conv1D weights
 * [in, out], "transformer." prefix, attn.bias buffers, a tied lm_head, F16,
 * BF16 and F32 tensors) from a formula, and check the engine's parameters
 * hold exactly the formula, rounded to each tensor's dtype and transposed
 * where HF's Conv1D says so. */
static float s_val(int tensor, int layer, size_t r, size_t c) {
    return (float)(0.01 * ((tensor * 7 + layer * 13 + (int)r * 3 + (int)c * 5) % 23) - 0.11);
}

/* Hub checkpoints come in F32, F16 and BF16, and converted files can mix
 * them: store the Conv1D weights as F16, the biases and LayerNorm vectors as
 * BF16 and the embeddings as F32. */
static fw_st_dtype s_dtype_of(int tensor) {
    switch (tensor) {
    case FW_P_QKVW: case FW_P_ATTPROJW: case FW_P_FCW: case FW_P_FCPROJW: return FW_ST_F16;
    case FW_P_WTE: case FW_P_WPE: return FW_ST_F32;
    default: return tensor < FW_NUM_PARAM_TENSORS ? FW_ST_BF16 : FW_ST_F32;
    }
}

/* The float the engine must hold after loading v stored as tensor's dtype. */
static float s_stored(int tensor, float v) {
    switch (s_dtype_of(tensor)) {
    case FW_ST_F16: return fw_f16_to_f32(fw_f32_to_f16(v));
    case FW_ST_BF16: return fw_bf16_to_f32(fw_f32_to_bf16(v));
    default: return v;
    }
}

static void test_hf_layout(void) {
    int C = 16, L = 2, V = 40, P = 8;
    char dir[1024]; /* s_path() rotates 8 buffers: keep a copy */
    snprintf(dir, sizeof dir, "%s", s_path("hf"));
    mkdir(dir, 0755);
    const char *cfg = "{\"model_type\": \"gpt2\", \"n_layer\": 2, \"n_head\": 2, \"n_embd\": 16, "
                      "\"n_positions\": 8, \"n_ctx\": 8, \"vocab_size\": 40, "
                      "\"layer_norm_epsilon\": 1e-05, \"activation_function\": \"gelu_new\", "
                      "\"architectures\": [\"GPT2LMHeadModel\"], \"n_inner\": null, "
                      "\"attn_pdrop\": 0.1, \"scale_attn_weights\": true}";
    s_write_file(s_path("hf/config.json"), cfg, strlen(cfg));
    /* entries: name, tensor id, layer, rows, cols */
    fw_st_entry e[64];
    char names[64][64];
    float *bufs[64];
    size_t n = 0;
#define ENT(nm, tid, layer, rows, cols)                                               \
    do {                                                                             \
        snprintf(names[n], 64, nm, layer);                                           \
        size_t r_ = rows, c_ = (cols) != 0 ? (size_t)(cols) : 1;                                      \
        bufs[n] = malloc(r_ * c_ * sizeof(float));                                   \
        for (size_t i_ = 0; i_ < r_; i_++)                                            \
            for (size_t j_ = 0; j_ < c_; j_++) bufs[n][i_ * c_ + j_] = s_val(tid, layer, i_, j_); \
        e[n] = (fw_st_entry){.name = names[n], .dtype = s_dtype_of(tid),                \
                             .ndim = (cols) != 0 ? 2 : 1,                                    \
                             .data = bufs[n]};                                        \
        e[n].shape[0] = (int64_t)(rows);                                              \
        e[n].shape[1] = (int64_t)(cols);                                              \
        n++;                                                                          \
    } while (0)
    ENT("transformer.wte.weight%.0d", FW_P_WTE, 0, V, C);
    ENT("transformer.wpe.weight%.0d", FW_P_WPE, 0, P, C);
    for (int l = 0; l < L; l++) {
        ENT("transformer.h.%d.ln_1.weight", FW_P_LN1W, l, C, 0);
        ENT("transformer.h.%d.ln_1.bias", FW_P_LN1B, l, C, 0);
        ENT("transformer.h.%d.attn.c_attn.weight", FW_P_QKVW, l, C, 3 * C);
        ENT("transformer.h.%d.attn.c_attn.bias", FW_P_QKVB, l, 3 * C, 0);
        ENT("transformer.h.%d.attn.c_proj.weight", FW_P_ATTPROJW, l, C, C);
        ENT("transformer.h.%d.attn.c_proj.bias", FW_P_ATTPROJB, l, C, 0);
        ENT("transformer.h.%d.ln_2.weight", FW_P_LN2W, l, C, 0);
        ENT("transformer.h.%d.ln_2.bias", FW_P_LN2B, l, C, 0);
        ENT("transformer.h.%d.mlp.c_fc.weight", FW_P_FCW, l, C, 4 * C);
        ENT("transformer.h.%d.mlp.c_fc.bias", FW_P_FCB, l, 4 * C, 0);
        ENT("transformer.h.%d.mlp.c_proj.weight", FW_P_FCPROJW, l, 4 * C, C);
        ENT("transformer.h.%d.mlp.c_proj.bias", FW_P_FCPROJB, l, C, 0);
        ENT("transformer.h.%d.attn.bias", 99, l, P, P);         /* mask buffer: ignored */
        ENT("transformer.h.%d.attn.masked_bias", 98, l, 1, 0);  /* ignored */
    }
    ENT("transformer.ln_f.weight%.0d", FW_P_LNFW, 0, C, 0);
    ENT("transformer.ln_f.bias%.0d", FW_P_LNFB, 0, C, 0);
    ENT("lm_head.weight%.0d", FW_P_WTE, 0, V, C); /* tied: same values as wte */
#undef ENT
    REQUIRE(fw_st_write(s_path("hf/model.safetensors"), e, n, NULL) == 0);
    fw_st_file *sf = fw_st_open(s_path("hf/model.safetensors"));
    REQUIRE(sf);
    const fw_st_tensor *st = fw_st_find(sf, "transformer.h.1.mlp.c_fc.weight");
    CHECK(st && st->dtype == FW_ST_F16 && st->shape[0] == C && st->shape[1] == 4 * C);
    st = fw_st_find(sf, "transformer.h.0.ln_2.bias");
    CHECK(st && st->dtype == FW_ST_BF16);
    fw_st_close(&sf);
    fw_model *m = fw_model_load_dir(dir, "cpu");
    if (!m) fprintf(stderr, "  load: %s\n", fw_err_detail());
    REQUIRE(m);

    /* The same model built directly in the engine's layout from the formula. */
    fw_model *ref = fw_model_new(fw_model_config_get(m), "cpu");
    REQUIRE(ref);
    fw_param_tensor t[FW_NUM_PARAM_TENSORS];
    fw_model_param_layout(fw_model_config_get(m), t);
    float *p = fw_model_params(ref, NULL);
    for (int i = 0; i < FW_NUM_PARAM_TENSORS; i++) {
        float *x = p + t[i].offset;
        int layered = t[i].ndim >= 2 && i != FW_P_WTE && i != FW_P_WPE;
        int nl = layered ? L : 1;
        for (int l = 0; l < nl; l++) {
            size_t per = t[i].numel / (size_t)nl;
            float *y = x + (size_t)l * per;
            if (i == FW_P_WTE || i == FW_P_WPE) {
                size_t rows = i == FW_P_WTE ? (size_t)V : (size_t)P;
                for (size_t r = 0; r < rows; r++)
                    for (int c = 0; c < C; c++)
                        y[r * C + c] = s_stored(i, s_val(i, 0, r, (size_t)c));
            } else if (t[i].ndim == 3) { /* engine [out, in] = file [in, out] transposed */
                size_t out = (size_t)t[i].shape[1], in = (size_t)t[i].shape[2];
                for (size_t o = 0; o < out; o++)
                    for (size_t c = 0; c < in; c++) y[o * in + c] = s_stored(i, s_val(i, l, c, o));
            } else {
                for (size_t j = 0; j < per; j++) y[j] = s_stored(i, s_val(i, l, j, 0));
            }
        }
    }
    size_t np = fw_model_num_params(m);
    CHECK(memcmp(fw_model_params(m, NULL), p, np * 4) == 0);
    float la[16 * 40], lb[16 * 40];
    s_logits(m, la);
    s_logits(ref, lb);
    CHECK(memcmp(la, lb, sizeof la) == 0);

    /* transformers 4.2x saved the causal mask h.N.attn.bias as BOOL: such a
     * file loads the same (the buffers are skipped, whatever their dtype) */
    size_t flen;
    char *fb = s_read_file(s_path("hf/model.safetensors"), &flen);
    uint64_t hl;
    memcpy(&hl, fb, 8);
    char *hdr = malloc(hl * 2 + 1);
    const char *from = "\"dtype\":\"F32\",\"shape\":[8,8]";
    const char *to = "\"dtype\":\"BOOL\",\"shape\":[1,1,16,16]";
    size_t at = 0, nrep = 0;
    for (size_t i = 0; i < hl;) {
        if (i + strlen(from) <= hl && memcmp(fb + 8 + i, from, strlen(from)) == 0) {
            memcpy(hdr + at, to, strlen(to));
            at += strlen(to);
            i += strlen(from);
            nrep++;
        } else {
            hdr[at++] = fb[8 + i++];
        }
    }
    CHECK_EQ_INT(nrep, L);
    uint64_t nhl = at;
    char *nb = malloc(8 + at + (flen - 8 - hl));
    memcpy(nb, &nhl, 8);
    memcpy(nb + 8, hdr, at);
    memcpy(nb + 8 + at, fb + 8 + hl, flen - 8 - hl);
    s_write_file(s_path("hf/model.safetensors"), nb, 8 + at + (flen - 8 - hl));
    fw_st_file *bf = fw_st_open(s_path("hf/model.safetensors"));
    CHECK(bf && fw_st_find(bf, "transformer.h.1.attn.bias")->dtype == FW_ST_BOOL);
    fw_st_close(&bf);
    fw_model *mb = fw_model_load_dir(dir, "cpu");
    if (!mb) fprintf(stderr, "  load with BOOL masks: %s\n", fw_err_detail());
    CHECK(mb && memcmp(fw_model_params(mb, NULL), p, np * 4) == 0);
    fw_model_destroy(&mb);
    /* a weight in a dtype that is not a float is refused, naming it */
    const char *wfrom = "\"transformer.h.0.ln_1.weight\":{\"dtype\":\"BF16\",\"shape\":[16]";
    const char *wto = "\"transformer.h.0.ln_1.weight\":{\"dtype\":\"I16\",\"shape\":[16]\x20";
    char *w = memmem(nb + 8, at, wfrom, strlen(wfrom));
    CHECK(w != NULL && strlen(wfrom) == strlen(wto));
    if (w) {
        memcpy(w, wto, strlen(wfrom)); /* same length: I16 is 2 bytes like BF16 */
        s_write_file(s_path("hf/model.safetensors"), nb, 8 + at + (flen - 8 - hl));
        CHECK(fw_model_load_dir(dir, "cpu") == NULL);
        CHECK(strstr(fw_err_detail(), "transformer.h.0.ln_1.weight: dtype I16") != NULL);
    }
    free(fb);
    free(hdr);
    free(nb);

    /* a NaN or infinity in the data (a damaged file) is refused, naming the tensor */
    for (int k = 0; k < 2; k++) {
        float *x = bufs[4]; /* transformer.h.0.attn.c_attn.weight: F16, transposed on load */
        float keep = x[7];
        x[7] = k == 0 ? NAN : INFINITY;
        REQUIRE(fw_st_write(s_path("hf/model.safetensors"), e, n, NULL) == 0);
        CHECK(fw_model_load_dir(dir, "cpu") == NULL);
        CHECKF(strstr(fw_err_detail(), "tensor transformer.h.0.attn.c_attn.weight: element 7") &&
                   strstr(fw_err_detail(), k == 0 ? "NaN" : "infinite"),
               "detail: %s", fw_err_detail());
        x[7] = keep;
    }

    /* an untied lm_head is refused */
    bufs[n - 1][5] += 1.0f;
    REQUIRE(fw_st_write(s_path("hf/model.safetensors"), e, n, NULL) == 0);
    fw_model *u = fw_model_load_dir(dir, "cpu");
    CHECK(u == NULL);
    CHECKF(strstr(fw_err_detail(), "lm_head.weight") != NULL, "detail: %s", fw_err_detail());
    /* a name given twice (with and without the prefix) is refused */
    bufs[n - 1][5] -= 1.0f;
    snprintf(names[n - 1], 64, "wte.weight");
    REQUIRE(fw_st_write(s_path("hf/model.safetensors"), e, n, NULL) == 0);
    CHECK(fw_model_load_dir(dir, "cpu") == NULL);
    CHECK(strstr(fw_err_detail(), "twice") != NULL);
    for (size_t i = 0; i < n; i++) free(bufs[i]);
    fw_model_destroy(&m);
    fw_model_destroy(&ref);
}

/* ------------------------------------------------------------------------ */
/* Bad files                                                                 */
/* ------------------------------------------------------------------------ */

static void test_truncated_everywhere(void) {
    fw_model *m = s_model(3);
    REQUIRE(m && fw_model_save_dir(m, s_path("t"), NULL) == 0);
    size_t len;
    char *full = s_read_file(s_path("t/model.safetensors"), &len);
    REQUIRE(full && len > 1000);
    const char *cut = s_path("cut.safetensors");
    int opened = 0, tried = 0;
    /* every offset through the header and the first data bytes, then a
     * stride through the data, and the last bytes */
    for (size_t off = 0; off < len; off += off < 4096 ? 1 : 97) {
        s_write_file(cut, full, off);
        fw_st_file *f = fw_st_open(cut);
        tried++;
        if (f) {
            opened++;
            fprintf(stderr, "  truncation at %zu opened\n", off);
            fw_st_close(&f);
        } else {
            int ok = strstr(fw_err_detail(), "cut.safetensors") != NULL;
            if (!ok) fprintf(stderr, "  at %zu: %s\n", off, fw_err_detail());
            CHECK(ok);
        }
    }
    for (size_t off = len - 8; off < len; off++) {
        s_write_file(cut, full, off);
        fw_st_file *f = fw_st_open(cut);
        opened += f != NULL;
        fw_st_close(&f);
    }
    CHECKF(opened == 0, "%d of %d truncated files were accepted", opened, tried);
    /* through the model loader the detail names the tensor whose data is cut */
    s_write_file(s_path("t/model.safetensors"), full, len - 10);
    CHECK(fw_model_load_dir(s_path("t"), "cpu") == NULL);
    CHECK(strstr(fw_err_detail(), "ln_f.bias") != NULL);
    free(full);
    fw_model_destroy(&m);
}

static int s_open_fails(const char *header, uint64_t hlen, size_t data_len, int want_err,
                        const char *want_detail) {
    char data[256] = {0};
    const char *p = s_path("bad.safetensors");
    s_write_raw(p, header, hlen, data, data_len);
    fw_st_file *f = fw_st_open(p);
    int ok = f == NULL && strstr(fw_err_detail(), want_detail) != NULL;
    if (!ok)
        fprintf(stderr, "  header %s: opened=%d detail \"%s\" (wanted \"%s\")\n", header, f != NULL,
                fw_err_detail(), want_detail);
    (void)want_err;
    fw_st_close(&f);
    return ok;
}

static void test_bad_headers(void) {
    const char *good = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}";
    char data[16] = {0};
    s_write_raw(s_path("good.safetensors"), good, 0, data, 16);
    fw_st_file *f = fw_st_open(s_path("good.safetensors"));
    CHECK(f != NULL);
    fw_st_close(&f);
    /* header length lying */
    CHECK(s_open_fails(good, 1000, 16, FW_ECORRUPT, "exceeds the file"));
    CHECK(s_open_fails(good, 200ull << 20, 16, FW_ECORRUPT, "100 MB"));
    CHECK(s_open_fails(good, 20, 16, FW_ECORRUPT, "header JSON"));
    CHECK(s_open_fails(good, 0xffffffffffffffffull, 16, FW_ECORRUPT, "header length"));
    /* offsets overlapping, outside, gaps, sizes */
    CHECK(s_open_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                       0, 12, FW_ECORRUPT, "overlap"));
    CHECK(s_open_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                       0, 12, FW_ECORRUPT, "tensor b: data_offsets [8, 16] outside"));
    CHECK(s_open_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 12,
                       FW_ECORRUPT, "unused bytes"));
    CHECK(s_open_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 12,
                       FW_ECORRUPT, "cover 8"));
    CHECK(s_open_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8,
                       FW_ECORRUPT, "tensor a: 3 elements"));
    CHECK(s_open_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 0, 8,
                       FW_ECORRUPT, "invalid"));
    CHECK(s_open_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 0, 8,
                       FW_ECORRUPT, "invalid"));
    CHECK(s_open_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],"
                       "\"data_offsets\":[0,8]}}", 0, 8, FW_ECORRUPT, "tensor a"));
    /* types and fields */
    CHECK(s_open_fails("{\"w\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,8]}}", 0, 8,
                       FW_EINVAL, "tensor w: dtype Q4 unknown"));
    /* every dtype of the format opens and is size-checked ... */
    CHECK(s_open_fails("{\"w\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8,
                       FW_ECORRUPT, "tensor w: 2 elements of I64 need 16 bytes"));
    s_write_raw(s_path("ints.safetensors"),
                "{\"m\":{\"dtype\":\"BOOL\",\"shape\":[1,1,2,2],\"data_offsets\":[0,4]},"
                "\"i\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[4,12]},"
                "\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[12,20]}}", 0,
                "\1\0\1\1" "\0\0\0\0\0\0\0\0" "\0\0\0\0\0\0\x04\xc0", 20);
    f = fw_st_open(s_path("ints.safetensors"));
    REQUIRE(f);
    const fw_st_tensor *tm = fw_st_find(f, "m"), *ti = fw_st_find(f, "i"), *td = fw_st_find(f, "d");
    CHECK(tm && tm->dtype == FW_ST_BOOL && tm->numel == 4 && ti && ti->numel == 1 && td);
    /* ... but only floats convert */
    float fv[4];
    CHECK(fw_st_read_f32(f, tm, fv) == FW_EUNSUPPORTED);
    CHECK(strstr(fw_err_detail(), "tensor m: dtype BOOL cannot be read") != NULL);
    CHECK(td && fw_st_read_f32(f, td, fv) == 0 && fv[0] == -2.5f);
    CHECK_EQ_STR(fw_st_dtype_name(FW_ST_F8_E5M2), "F8_E5M2");
    fw_st_close(&f);
    CHECK(s_open_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],"
                       "\"extra\":1}}", 0, 4, FW_ECORRUPT, "unknown field"));
    CHECK(s_open_fails("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4, FW_ECORRUPT,
                       "tensor w: dtype missing"));
    CHECK(s_open_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, 4,
                       FW_ECORRUPT, "shape[0]"));
    CHECK(s_open_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":\"x\",\"data_offsets\":[0,4]}}", 0, 4,
                       FW_ECORRUPT, "tensor w: shape"));
    CHECK(s_open_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 0, 4,
                       FW_ECORRUPT, "data_offsets must be"));
    CHECK(s_open_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 0, 8,
                       FW_ECORRUPT, "duplicate"));
    CHECK(s_open_fails("[1,2]", 0, 0, FW_ECORRUPT, "not a JSON object"));
    CHECK(s_open_fails("{\"__metadata__\":{\"k\":1}}", 0, 0, FW_ECORRUPT, "__metadata__"));
    CHECK(s_open_fails("", 0, 0, FW_ECORRUPT, "header JSON"));
    /* __metadata__ with strings and no tensors is a valid (empty) file */
    s_write_raw(s_path("meta.safetensors"), "{\"__metadata__\":{\"format\":\"pt\"}}", 0, NULL, 0);
    f = fw_st_open(s_path("meta.safetensors"));
    CHECK(f && fw_st_count(f) == 0 && strcmp(fw_st_metadata(f, "format"), "pt") == 0);
    fw_st_close(&f);
    /* short files */
    s_write_file(s_path("short.safetensors"), "abc", 3);
    CHECK(fw_st_open(s_path("short.safetensors")) == NULL);
    CHECK(strstr(fw_err_detail(), "shorter than") != NULL);
    CHECK(fw_st_open(s_path("missing.safetensors")) == NULL);
}

/* Random damage: 3000 copies of a good file, each with 1 to 4 bytes changed
 * (mostly in the header, where the structure is) or cut short. Each must
 * open cleanly or fail with a detail naming the file; whatever opens must
 * read every tensor without touching memory outside the mapping (run under
 * ASan in the sanitizer build). */
static void test_random_damage(void) {
    fw_model *m = s_model(5);
    REQUIRE(m && fw_model_save_dir(m, s_path("rd"), NULL) == 0);
    fw_model_destroy(&m);
    size_t len;
    char *full = s_read_file(s_path("rd/model.safetensors"), &len);
    REQUIRE(full && len > 64);
    uint64_t hl;
    memcpy(&hl, full, 8);
    char *buf = malloc(len);
    float *tmp = malloc(len * sizeof *tmp); /* more than any tensor can hold */
    char cut[1024];
    snprintf(cut, sizeof cut, "%s", s_path("damaged.safetensors"));
    uint64_t x = 1234;
    int opened = 0, refused = 0, unnamed = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, full, len);
        size_t n = len;
        int nmut = 1 + (int)(fw_test_rand(&x) % 4);
        for (int k = 0; k < nmut; k++) {
            uint64_t r = fw_test_rand(&x);
            size_t at = r % 8 == 0 ? (size_t)(r >> 8) % len : (size_t)(r >> 8) % (8 + hl);
            static const char pick[] = "0123456789,:[]{}\"-e. ";
            buf[at] = r % 3 == 0 ? (char)(r >> 40) : pick[(r >> 40) % (sizeof pick - 1)];
        }
        if (fw_test_rand(&x) % 10 == 0) n = (size_t)(fw_test_rand(&x) % len);
        s_write_file(cut, buf, n);
        fw_st_file *f = fw_st_open(cut);
        if (!f) {
            refused++;
            unnamed += strstr(fw_err_detail(), "damaged.safetensors") == NULL;
            continue;
        }
        opened++;
        for (size_t i = 0; i < fw_st_count(f); i++) {
            const fw_st_tensor *t = fw_st_at(f, i);
            CHECK(t->end <= len && t->numel <= len);
            (void)fw_st_read_f32(f, t, tmp);
        }
        fw_st_close(&f);
    }
    fprintf(stderr, "  %d damaged files refused, %d opened (damage in data or whitespace)\n",
            refused, opened);
    CHECK(refused > 2000);
    CHECK_EQ_INT(unnamed, 0);
    free(buf);
    free(tmp);
    free(full);
}

/* A model directory whose config.json and weights disagree, or lack fields. */
static void test_bad_model_dirs(void) {
    fw_model *m = s_model(4);
    REQUIRE(m && fw_model_save_dir(m, s_path("d"), NULL) == 0);
    fw_model_destroy(&m);
    size_t len;
    char *orig = s_read_file(s_path("d/config.json"), &len);
    const struct {
        const char *from, *to, *want;
    } cases[] = {
        {"\"n_head\": 2", "\"n_hea\": 2", "\"n_head\" missing"},
        {"\"n_embd\": 16", "\"n_embd\": \"16\"", "\"n_embd\" must be a positive integer"},
        {"\"n_layer\": 2", "\"n_layer\": 3", "tensor h.2.ln_1.weight missing"},
        {"\"n_layer\": 2", "\"n_layer\": 1", "tensor h.1.ln_1.weight: not a GPT-2 tensor"},
        {"\"n_embd\": 16", "\"n_embd\": 32", "tensor wte.weight: shape [40, 16], config.json gives [40, 32]"},
        {"\"vocab_size\": 40", "\"vocab_size\": 41", "tensor wte.weight: shape [40, 16]"},
        {"\"n_positions\": 8", "\"n_positions\": 9", "tensor wpe.weight: shape [8, 16]"},
        {"\"n_head\": 2", "\"n_head\": 3", "n_embd 16 not a multiple of n_head 3"},
        {"\"model_type\": \"gpt2\"", "\"model_type\": \"llama\"", "\"model_type\""},
        {"\"activation_function\": \"gelu_new\"", "\"activation_function\": \"relu\"",
         "\"activation_function\""},
        {"\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false",
         "\"tie_word_embeddings\" must be true"},
        {"\"layer_norm_epsilon\": 1e-5", "\"layer_norm_epsilon\": -1", "\"layer_norm_epsilon\""},
        {"{", "[", "config.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = strstr(orig, cases[i].from);
        REQUIRE(p);
        char buf[4096];
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - orig), orig, cases[i].to,
                 p + strlen(cases[i].from));
        s_write_file(s_path("d/config.json"), buf, strlen(buf));
        fw_model *l = fw_model_load_dir(s_path("d"), "cpu");
        int ok = l == NULL && strstr(fw_err_detail(), cases[i].want) != NULL;
        CHECKF(ok, "case %zu: detail \"%s\", wanted \"%s\"", i, fw_err_detail(), cases[i].want);
        fw_model_destroy(&l);
    }
    /* n_positions absent but n_ctx present: old configs still load */
    char *p = strstr(orig, "\"n_positions\": 8,");
    REQUIRE(p);
    char buf[4096];
    snprintf(buf, sizeof buf, "%.*s%s", (int)(p - orig), orig, p + strlen("\"n_positions\": 8,"));
    s_write_file(s_path("d/config.json"), buf, strlen(buf));
    fw_model *l = fw_model_load_dir(s_path("d"), "cpu");
    CHECK(l != NULL);
    fw_model_destroy(&l);
    /* missing files */
    remove(s_path("d/config.json"));
    CHECK(fw_model_load_dir(s_path("d"), "cpu") == NULL);
    CHECK(strstr(fw_err_detail(), "config.json") != NULL);
    s_write_file(s_path("d/config.json"), orig, len);
    remove(s_path("d/model.safetensors"));
    CHECK(fw_model_load_dir(s_path("d"), "cpu") == NULL);
    CHECK(strstr(fw_err_detail(), "model.safetensors") != NULL);
    /* a weights file with an extra tensor, or missing one */
    float one[16] = {0};
    fw_st_entry e = {.name = "h.0.extra", .dtype = FW_ST_F32, .ndim = 1, .shape = {16}, .data = one};
    REQUIRE(fw_st_write(s_path("d/model.safetensors"), &e, 1, NULL) == 0);
    CHECK(fw_model_load_dir(s_path("d"), "cpu") == NULL);
    CHECK(strstr(fw_err_detail(), "h.0.extra") != NULL);
    e.name = "ln_f.bias";
    REQUIRE(fw_st_write(s_path("d/model.safetensors"), &e, 1, NULL) == 0);
    CHECK(fw_model_load_dir(s_path("d"), "cpu") == NULL);
    CHECK(strstr(fw_err_detail(), "tensor wte.weight missing") != NULL);
    free(orig);
}

int main(void) {
    fw_engine_set_threads(2);
    g_dir = fw_test_tmpdir("engine-io");
    if (!g_dir) return 1;
    RUN(test_half_conversions);
    RUN(test_save_load_bitwise);
    RUN(test_half_precision_files);
    RUN(test_hf_layout);
    RUN(test_truncated_everywhere);
    RUN(test_bad_headers);
    RUN(test_random_damage);
    RUN(test_bad_model_dirs);
    fw_test_rmtree(g_dir);
    free(g_dir);
    return fw_test_summary();
}
