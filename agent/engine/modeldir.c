/* modeldir.c - Hugging Face compatible model directories.
 *
 * A model directory holds config.json (GPT2Config keys) and model.safetensors
 * with GPT-2's tensor names, so a directory written here loads in
 * transformers (GPT2LMHeadModel.from_pretrained) and a GPT-2 checkpoint from
 * the Hub loads here as is.
 *
 * Mapping (per layer i; C = n_embd; "T" = transposed on the way in and out,
 * because HF's Conv1D stores [in, out] and the engine [out, in]):
 *
 *   wte.weight                [V, C]     wte rows 0..V-1 (rows V..Vp-1 are 0)
 *   wpe.weight                [n_ctx, C] wpe
 *   h.i.ln_1.weight / .bias   [C]        ln1w / ln1b, layer i
 *   h.i.attn.c_attn.weight    [C, 3C]  T qkvw    h.i.attn.c_attn.bias [3C] qkvb
 *   h.i.attn.c_proj.weight    [C, C]   T attprojw h.i.attn.c_proj.bias [C] attprojb
 *   h.i.ln_2.weight / .bias   [C]        ln2w / ln2b
 *   h.i.mlp.c_fc.weight       [C, 4C]  T fcw     h.i.mlp.c_fc.bias [4C] fcb
 *   h.i.mlp.c_proj.weight     [4C, C]  T fcprojw h.i.mlp.c_proj.bias [C] fcprojb
 *   ln_f.weight / .bias       [C]        lnfw / lnfb
 *
 * On load a "transformer." prefix is stripped; h.i.attn.bias and
 * h.i.attn.masked_bias (causal-mask buffers of older transformers, F32 or
 * BOOL) are ignored; weights may be F32, F16, BF16 or F64 (converted to
 * F32); lm_head.weight is accepted only when it equals wte.weight (the
 * engine ties them). Any other name, a missing tensor, a shape that does
 * not follow config.json, a weight in another dtype or a NaN / infinite
 * value is an error naming the tensor. */
#include "engine.h"
#include "safetensors.h"

#include "fw_err.h"
#include "fw_file.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX (1u << 20) /* config.json larger than 1 MB is not a config */

/* One HF tensor: where it lives in the engine's buffer. */
typedef struct {
    char name[64];
    size_t offset; /* floats into the parameter buffer */
    int ndim;
    int64_t shape[2]; /* shape in the file */
    int transpose;    /* file [in, out] -> engine [out, in] */
    int seen;
} s_map;

/* Fill the name table for cfg; returns the count (4 + 12 * n_layer + 2). */
static size_t s_build_map(const fw_model_config *cfg, s_map *mp) {
    fw_param_tensor t[FW_NUM_PARAM_TENSORS];
    fw_model_param_layout(cfg, t);
    int64_t C = cfg->n_embd;
    size_t k = 0;
#define ADD(nm_fmt, layer, idx, off, nd, s0, s1, tr)                                  \
    do {                                                                             \
        snprintf(mp[k].name, sizeof mp[k].name, nm_fmt, layer);                      \
        mp[k].offset = t[idx].offset + (size_t)(off);                                \
        mp[k].ndim = nd;                                                             \
        mp[k].shape[0] = s0;                                                         \
        mp[k].shape[1] = s1;                                                         \
        mp[k].transpose = tr;                                                        \
        mp[k].seen = 0;                                                              \
        k++;                                                                         \
    } while (0)
    ADD("wte.weight%.0d", 0, FW_P_WTE, 0, 2, cfg->vocab_size, C, 0);
    ADD("wpe.weight%.0d", 0, FW_P_WPE, 0, 2, cfg->n_ctx, C, 0);
    for (int l = 0; l < cfg->n_layer; l++) {
        size_t lc = (size_t)l * (size_t)C;
        ADD("h.%d.ln_1.weight", l, FW_P_LN1W, lc, 1, C, 0, 0);
        ADD("h.%d.ln_1.bias", l, FW_P_LN1B, lc, 1, C, 0, 0);
        ADD("h.%d.attn.c_attn.weight", l, FW_P_QKVW, lc * 3 * C, 2, C, 3 * C, 1);
        ADD("h.%d.attn.c_attn.bias", l, FW_P_QKVB, lc * 3, 1, 3 * C, 0, 0);
        ADD("h.%d.attn.c_proj.weight", l, FW_P_ATTPROJW, lc * C, 2, C, C, 1);
        ADD("h.%d.attn.c_proj.bias", l, FW_P_ATTPROJB, lc, 1, C, 0, 0);
        ADD("h.%d.ln_2.weight", l, FW_P_LN2W, lc, 1, C, 0, 0);
        ADD("h.%d.ln_2.bias", l, FW_P_LN2B, lc, 1, C, 0, 0);
        ADD("h.%d.mlp.c_fc.weight", l, FW_P_FCW, lc * 4 * C, 2, C, 4 * C, 1);
        ADD("h.%d.mlp.c_fc.bias", l, FW_P_FCB, lc * 4, 1, 4 * C, 0, 0);
        ADD("h.%d.mlp.c_proj.weight", l, FW_P_FCPROJW, lc * 4 * C, 2, 4 * C, C, 1);
        ADD("h.%d.mlp.c_proj.bias", l, FW_P_FCPROJB, lc, 1, C, 0, 0);
    }
    ADD("ln_f.weight%.0d", 0, FW_P_LNFW, 0, 1, C, 0, 0);
    ADD("ln_f.bias%.0d", 0, FW_P_LNFB, 0, 1, C, 0, 0);
#undef ADD
    return k;
}

static void s_shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && at < n; d++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

/* True for the causal-mask buffers older transformers saved: h.N.attn.bias
 * and h.N.attn.masked_bias. */
static int s_is_mask_buffer(const char *name) {
    if (strncmp(name, "h.", 2) != 0) return 0;
    const char *p = name + 2;
    if (*p < '0' || *p > '9') return 0;
    while (*p >= '0' && *p <= '9') p++;
    return strcmp(p, ".attn.bias") == 0 || strcmp(p, ".attn.masked_bias") == 0;
}

/* ------------------------------------------------------------------------ */
/* config.json                                                               */
/* ------------------------------------------------------------------------ */

static int s_get_int(json_t *root, const char *path, const char *key, int required, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return fw_err_set(FW_EINVAL, "%s: field \"%s\" missing", path, key);
        return 1;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (1 << 30))
        return fw_err_set(FW_EINVAL, "%s: field \"%s\" must be a positive integer", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int s_read_config(const char *dir, fw_model_config *cfg) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = NULL;
    size_t len = 0;
    int rc = fw_file_read(path, CONFIG_MAX, &text, &len);
    if (rc < 0) return rc;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return fw_err_set(FW_EINVAL, "%s: line %d: %s", path, jerr.line, jerr.text);
    memset(cfg, 0, sizeof *cfg);
    if (!json_is_object(root)) {
        rc = fw_err_set(FW_EINVAL, "%s: not a JSON object", path);
        goto out;
    }
    json_t *mt = json_object_get(root, "model_type");
    if (mt && (!json_is_string(mt) || strcmp(json_string_value(mt), "gpt2") != 0)) {
        rc = fw_err_set(FW_EUNSUPPORTED, "%s: field \"model_type\" must be \"gpt2\"", path);
        goto out;
    }
    if ((rc = s_get_int(root, path, "n_layer", 1, &cfg->n_layer)) < 0) goto out;
    if ((rc = s_get_int(root, path, "n_head", 1, &cfg->n_head)) < 0) goto out;
    if ((rc = s_get_int(root, path, "n_embd", 1, &cfg->n_embd)) < 0) goto out;
    if ((rc = s_get_int(root, path, "vocab_size", 1, &cfg->vocab_size)) < 0) goto out;
    /* n_positions is the block size; very old configs only have n_ctx. */
    rc = s_get_int(root, path, "n_positions", 0, &cfg->n_ctx);
    if (rc == 1) rc = s_get_int(root, path, "n_ctx", 0, &cfg->n_ctx);
    if (rc == 1) rc = fw_err_set(FW_EINVAL, "%s: field \"n_positions\" missing", path);
    if (rc < 0) goto out;
    json_t *eps = json_object_get(root, "layer_norm_epsilon");
    if (!eps) {
        cfg->layer_norm_eps = 1e-5f; /* GPT2Config's default */
    } else if (!json_is_number(eps) || !(json_number_value(eps) > 0) ||
               json_number_value(eps) > 1) {
        rc = fw_err_set(FW_EINVAL, "%s: field \"layer_norm_epsilon\" must be a number in (0, 1]",
                        path);
        goto out;
    } else {
        cfg->layer_norm_eps = (float)json_number_value(eps);
    }
    /* Options that change the network: accept only GPT-2's own values. */
    json_t *act = json_object_get(root, "activation_function");
    if (act && (!json_is_string(act) || (strcmp(json_string_value(act), "gelu_new") != 0 &&
                                         strcmp(json_string_value(act), "gelu_pytorch_tanh") != 0))) {
        rc = fw_err_set(FW_EUNSUPPORTED, "%s: field \"activation_function\" must be \"gelu_new\" "
                        "(the tanh GELU)", path);
        goto out;
    }
    json_t *inner = json_object_get(root, "n_inner");
    if (inner && !json_is_null(inner) &&
        (!json_is_integer(inner) || json_integer_value(inner) != 4 * (json_int_t)cfg->n_embd)) {
        rc = fw_err_set(FW_EUNSUPPORTED, "%s: field \"n_inner\" must be null or 4 * n_embd", path);
        goto out;
    }
    static const struct {
        const char *key;
        int want;
    } flags[] = {{"scale_attn_weights", 1},
                 {"scale_attn_by_inverse_layer_idx", 0},
                 {"reorder_and_upcast_attn", 0},
                 {"tie_word_embeddings", 1},
                 {"add_cross_attention", 0}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        json_t *f = json_object_get(root, flags[i].key);
        if (f && (!json_is_boolean(f) || json_is_true(f) != flags[i].want)) {
            rc = fw_err_set(FW_EUNSUPPORTED, "%s: field \"%s\" must be %s", path, flags[i].key,
                            flags[i].want ? "true" : "false");
            goto out;
        }
    }
    if (fw_model_config_check(cfg) < 0) {
        char d[512];
        snprintf(d, sizeof d, "%s", fw_err_detail());
        rc = fw_err_set(FW_EINVAL, "%s: %s", path, d);
    }
out:
    json_decref(root);
    return rc;
}

static int s_write_config(const char *dir, const fw_model_config *cfg) {
    char path[4096], eps[32];
    snprintf(path, sizeof path, "%s/config.json", dir);
    /* The shortest decimal that reads back as the same float, so 1e-5f is
     * written as 1e-05 (as HF writes it), not 9.99999974737875e-06. */
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(eps, sizeof eps, "%.*g", prec, (double)cfg->layer_norm_eps);
        if ((float)strtod(eps, NULL) == cfg->layer_norm_eps) break;
    }
    json_t *root = json_pack(
        "{s:s, s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:n, s:f, s:b, s:s}",
        "model_type", "gpt2", "architectures", "GPT2LMHeadModel", "activation_function",
        "gelu_new", "n_layer", cfg->n_layer, "n_head", cfg->n_head, "n_embd", cfg->n_embd,
        "n_positions", cfg->n_ctx, "n_ctx", cfg->n_ctx, "vocab_size", cfg->vocab_size,
        "layer_norm_epsilon", strtod(eps, NULL), "n_inner", "initializer_range", 0.02,
        "tie_word_embeddings", 1, "torch_dtype", "float32");
    if (!root) return fw_err_set(FW_ENOMEM, "%s: building JSON", path);
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    json_decref(root);
    if (!s) return fw_err_set(FW_ENOMEM, "%s: building JSON", path);
    size_t n = strlen(s);
    s[n] = '\n'; /* replaces the NUL: written by length below */
    int rc = fw_file_write_atomic(path, s, n + 1, 0644);
    free(s);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Load                                                                      */
/* ------------------------------------------------------------------------ */

/* A NaN or infinite weight is never a trained value: it is a damaged or
 * mis-converted file, and it would only surface later as a NaN loss. */
static int s_check_finite(const char *path, const fw_st_tensor *t, const float *x) {
    for (size_t i = 0; i < t->numel; i++)
        if (!isfinite(x[i]))
            return fw_err_set(FW_ECORRUPT, "%s: tensor %s: element %zu of %zu is %s (damaged "
                              "file?)", path, t->name, i, t->numel,
                              isnan(x[i]) ? "NaN" : "infinite");
    return 0;
}

/* Read every tensor of f into params (host, engine layout). */
static int s_load_tensors(const fw_st_file *f, const char *path, const fw_model_config *cfg,
                          float *params) {
    size_t nmap_cap = 4 + 12 * (size_t)cfg->n_layer;
    s_map *mp = calloc(nmap_cap, sizeof *mp);
    if (!mp) return fw_err_set(FW_ENOMEM, "load: name table");
    size_t nmap = s_build_map(cfg, mp);
    size_t C = (size_t)cfg->n_embd, V = (size_t)cfg->vocab_size;
    float *tmp = NULL, *lm_head = NULL;
    size_t tmp_cap = 0;
    int rc = 0;
    for (size_t i = 0; i < fw_st_count(f) && rc == 0; i++) {
        const fw_st_tensor *t = fw_st_at(f, i);
        const char *name = t->name;
        if (strncmp(name, "transformer.", 12) == 0) name += 12;
        if (s_is_mask_buffer(name)) continue;
        char want[64], got[160];
        if (strcmp(name, "lm_head.weight") == 0) {
            int64_t shp[2] = {(int64_t)V, (int64_t)C};
            if (t->ndim != 2 || t->shape[0] != shp[0] || t->shape[1] != shp[1]) {
                s_shape_str(want, sizeof want, 2, shp);
                s_shape_str(got, sizeof got, t->ndim, t->shape);
                rc = fw_err_set(FW_EINVAL, "%s: tensor %s: shape %s, config gives %s", path,
                                t->name, got, want);
                break;
            }
            free(lm_head);
            if (!(lm_head = malloc(t->numel * sizeof(float)))) {
                rc = fw_err_set(FW_ENOMEM, "load: %s", t->name);
                break;
            }
            if ((rc = fw_st_read_f32(f, t, lm_head)) < 0) break;
            if ((rc = s_check_finite(path, t, lm_head)) < 0) break;
            continue;
        }
        s_map *m = NULL;
        for (size_t k = 0; k < nmap; k++)
            if (strcmp(mp[k].name, name) == 0) m = &mp[k];
        if (!m) {
            rc = fw_err_set(FW_EINVAL, "%s: tensor %s: not a GPT-2 tensor for this config "
                            "(n_layer %d)", path, t->name, cfg->n_layer);
            break;
        }
        if (m->seen) {
            rc = fw_err_set(FW_EINVAL, "%s: tensor %s: given twice (with and without the "
                            "\"transformer.\" prefix)", path, t->name);
            break;
        }
        m->seen = 1;
        if (t->ndim != m->ndim || t->shape[0] != m->shape[0] ||
            (m->ndim == 2 && t->shape[1] != m->shape[1])) {
            s_shape_str(want, sizeof want, m->ndim, m->shape);
            s_shape_str(got, sizeof got, t->ndim, t->shape);
            rc = fw_err_set(FW_EINVAL, "%s: tensor %s: shape %s, config.json gives %s", path,
                            t->name, got, want);
            break;
        }
        if (!m->transpose) {
            if ((rc = fw_st_read_f32(f, t, params + m->offset)) < 0) break;
            if ((rc = s_check_finite(path, t, params + m->offset)) < 0) break;
            continue;
        }
        if (tmp_cap < t->numel) {
            free(tmp);
            tmp_cap = t->numel;
            if (!(tmp = malloc(tmp_cap * sizeof(float)))) {
                rc = fw_err_set(FW_ENOMEM, "load: %s", t->name);
                break;
            }
        }
        if ((rc = fw_st_read_f32(f, t, tmp)) < 0) break;
        if ((rc = s_check_finite(path, t, tmp)) < 0) break;
        size_t in = (size_t)m->shape[0], out = (size_t)m->shape[1];
        float *dst = params + m->offset;
        for (size_t o = 0; o < out; o++)
            for (size_t c = 0; c < in; c++) dst[o * in + c] = tmp[c * out + o];
    }
    for (size_t k = 0; k < nmap && rc == 0; k++)
        if (!mp[k].seen) rc = fw_err_set(FW_EINVAL, "%s: tensor %s missing", path, mp[k].name);
    if (rc == 0 && lm_head && memcmp(lm_head, params, V * C * sizeof(float)) != 0)
        rc = fw_err_set(FW_EUNSUPPORTED, "%s: tensor lm_head.weight differs from wte.weight: "
                        "untied output heads are not supported", path);
    free(tmp);
    free(lm_head);
    free(mp);
    return rc;
}

fw_model *fw_model_load_dir(const char *dir, const char *device) {
    fw_model_config cfg;
    if (!dir) {
        fw_err_set(FW_EINVAL, "load: NULL directory");
        return NULL;
    }
    if (s_read_config(dir, &cfg) < 0) return NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    fw_st_file *f = fw_st_open(path);
    if (!f) return NULL;
    fw_model *m = NULL;
    size_t np = fw_model_param_layout(&cfg, NULL);
    float *params = calloc(np, sizeof(float)); /* padded wte rows stay 0 */
    if (!params) {
        fw_err_set(FW_ENOMEM, "load %s: %zu parameters", path, np);
        goto out;
    }
    if (s_load_tensors(f, path, &cfg, params) < 0) goto out;
    m = fw_model_new(&cfg, device);
    if (m && fw_model_write_params(m, params) < 0) fw_model_destroy(&m);
out:
    free(params);
    fw_st_close(&f);
    return m;
}

/* ------------------------------------------------------------------------ */
/* Save                                                                      */
/* ------------------------------------------------------------------------ */

static int s_copy_tokenizer(const char *from, const char *to) {
    static const char *const files[] = {"vocab.json",     "merges.txt",
                                        "encoder.json",   "vocab.bpe",
                                        "tokenizer.json", "tokenizer_config.json",
                                        "special_tokens_map.json"};
    int copied = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", from, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", to, files[i]);
        char *data = NULL;
        size_t len = 0;
        int rc = fw_file_read(src, 256u << 20, &data, &len);
        if (rc == FW_ENOTFOUND) continue;
        if (rc == 0) rc = fw_file_write_atomic(dst, data, len, 0644);
        free(data);
        if (rc < 0) return rc;
        copied++;
    }
    if (!copied)
        return fw_err_set(FW_ENOTFOUND, "%s: no tokenizer files (vocab.json + merges.txt, "
                          "encoder.json + vocab.bpe or tokenizer.json)", from);
    return 0;
}

int fw_model_save_dir(const fw_model *m, const char *dir, const char *tokenizer_dir) {
    if (!m || !dir) return fw_err_set(FW_EINVAL, "save: NULL argument");
    const fw_model_config *cfg = fw_model_config_get(m);
    int rc = fw_file_mkdirs(dir, 0755);
    if (rc < 0) return rc;
    size_t np = fw_model_num_params(m);
    size_t nmap_cap = 4 + 12 * (size_t)cfg->n_layer;
    float *params = malloc(np * sizeof(float));
    float *conv = malloc(np * sizeof(float)); /* transposed copies of the Conv1D weights */
    s_map *mp = calloc(nmap_cap, sizeof *mp);
    fw_st_entry *e = calloc(nmap_cap, sizeof *e);
    if (!params || !conv || !mp || !e) {
        rc = fw_err_set(FW_ENOMEM, "save %s: %zu parameters", dir, np);
        goto out;
    }
    if ((rc = fw_model_read_params(m, params)) < 0) goto out;
    size_t nmap = s_build_map(cfg, mp);
    for (size_t k = 0; k < nmap; k++) {
        e[k].name = mp[k].name;
        e[k].dtype = FW_ST_F32;
        e[k].ndim = mp[k].ndim;
        e[k].shape[0] = mp[k].shape[0];
        e[k].shape[1] = mp[k].shape[1];
        e[k].data = params + mp[k].offset;
        if (mp[k].transpose) {
            size_t in = (size_t)mp[k].shape[0], out = (size_t)mp[k].shape[1];
            const float *src = params + mp[k].offset;
            float *dst = conv + mp[k].offset;
            for (size_t c = 0; c < in; c++)
                for (size_t o = 0; o < out; o++) dst[c * out + o] = src[o * in + c];
            e[k].data = dst;
        }
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    static const char *const meta[] = {"format", "pt", "producer", "flywheel", NULL};
    if ((rc = fw_st_write(path, e, nmap, meta)) < 0) goto out;
    if ((rc = s_write_config(dir, cfg)) < 0) goto out;
    if (tokenizer_dir) rc = s_copy_tokenizer(tokenizer_dir, dir);
out:
    free(params);
    free(conv);
    free(mp);
    free(e);
    return rc;
}
