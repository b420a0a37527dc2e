/* coord_ml.c - the leader's side of finetune, embed and eval jobs.
 *
 * Theory of operation
 * -------------------
 * These kinds are ordinary jobs to the scheduler (a finetune is a gang of
 * world_size ranks, embed and eval are sharded); this file adds what makes
 * them more than processes:
 *
 *   submit     coord_ml_prepare resolves every reference once, when the job
 *              is accepted: model refs to a version and its tree digest,
 *              dataset refs to a version, its blob digest and record count.
 *              The results go into the spec as "resolved", so every attempt
 *              of every task (and a later leader) uses the same inputs even
 *              if an alias moves meanwhile. Unknown refs, empty datasets and
 *              gangs larger than the cluster are refused here, before any
 *              record is written: nothing is left half made.
 *   progress   rank 0's TASK_PROGRESS feeds the job's loss curve (memory;
 *              written with the job record) and, when it names a checkpoint
 *              blob the agent has made durable in the store, the job's
 *              "checkpoint" {step, digest}, written to etcd at once: that
 *              record is the completion marker of the checkpoint.
 *   assign     a finetune gang that is (re)placed while the job holds a
 *              checkpoint gets FLYWHEEL_RESUME_CHECKPOINT / _STEP in every
 *              rank's environment, and the job records {attempt, step} in
 *              "resumed".
 *   finalize   when the last task succeeded (coord_state's finalize hook,
 *              before the job turns SUCCEEDED): finetune registers rank 0's
 *              output tree as the next version of the output model, with its
 *              lineage (parent, dataset, job, hparams, code version); embed
 *              concatenates the shard matrices (row ids are already global)
 *              into one FWEMBED blob; eval merges each model's shard scores
 *              exactly (fw_evalstats), stores the merged per-example file and
 *              writes the model version's eval record. A failure here fails
 *              the job with the reason. The outputs go into the job's
 *              "result".
 *
 * Finalize and prepare do synchronous etcd and store I/O on the leader's
 * loop, like dataset and model registration: bounded by etcd.timeout and by
 * the size of what is merged (an embed of millions of rows would want this
 * on a worker thread; docs/architecture.md lists it). */
#include "coord.h"
#include "coord_records.h"

#include "fw_digest.h"
#include "fw_embedfile.h"
#include "fw_err.h"
#include "fw_evalstats.h"
#include "fw_log.h"
#include "fw_store.h"
#include "fw_time.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FW_CODE_VERSION
#define FW_CODE_VERSION "flywheel"
#endif

#define S_CURVE_MAX   1000 /* points kept; halved by dropping every other one */

static bool s_is_ml(const char *kind) {
    return strcmp(kind, "finetune") == 0 || strcmp(kind, "embed") == 0 ||
           strcmp(kind, "eval") == 0;
}

/* ------------------------------------------------------------- submit */

static json_t *s_ref_obj(const char *canon, json_t *rec, bool records) {
    json_t *o = json_pack("{s:s,s:O}", "ref", canon, "digest", json_object_get(rec, "digest"));
    if (o && records) json_object_set(o, "records", json_object_get(rec, "records"));
    return o;
}

static int s_model(coord_t *c, const char *field, const char *ref, json_t **out) {
    json_t *rec = NULL;
    char canon[512];
    int rc = coord_models_resolve(c, ref, &rec, canon, sizeof canon);
    if (rc < 0) return fw_err_set(rc, "spec.%s: %s", field, fw_err_detail());
    *out = s_ref_obj(canon, rec, false);
    json_decref(rec);
    return *out ? 0 : fw_err_set(FW_ENOMEM, "out of memory");
}

static int s_dataset(coord_t *c, const char *field, const char *ref, json_t **out) {
    json_t *rec = NULL;
    char canon[512];
    int rc = coord_datasets_resolve(c, ref, &rec, canon, sizeof canon);
    if (rc < 0) return fw_err_set(rc, "spec.%s: %s", field, fw_err_detail());
    json_int_t n = json_integer_value(json_object_get(rec, "records"));
    if (n <= 0) {
        json_decref(rec);
        return fw_err_set(FW_EINVAL, "spec.%s: dataset %s has no records", field, canon);
    }
    *out = s_ref_obj(canon, rec, true);
    json_decref(rec);
    return *out ? 0 : fw_err_set(FW_ENOMEM, "out of memory");
}

/* How many tasks of sp the cluster could hold at once if it were idle: the
 * bound a gang must fit in (ranks of one gang run together). */
static uint64_t s_capacity(coord_t *c, const coord_spec_t *sp) {
    uint64_t total = 0;
    for (size_t i = 0; i < c->st->nagents; i++) {
        const coord_agent_t *a = c->st->agentv[i];
        if (!a->alive || a->drain || !coord_agent_eligible(a, sp)) continue;
        uint64_t n = UINT64_MAX;
        if (sp->cpus) n = a->cpus / sp->cpus;
        if (sp->memory_mb && a->memory_mb / sp->memory_mb < n) n = a->memory_mb / sp->memory_mb;
        if (sp->gpus && (uint64_t)a->ngpus / sp->gpus < n) n = (uint64_t)a->ngpus / sp->gpus;
        if (n == UINT64_MAX) n = 1u << 20; /* asks for nothing: fits anywhere */
        total += n;
    }
    return total;
}

int coord_ml_prepare(coord_t *c, coord_spec_t *sp) {
    if (!s_is_ml(sp->kind)) return 0;
    json_t *root = json_loads(sp->json, 0, NULL), *res = json_object(), *x = NULL;
    int rc = 0;
    if (!root || !res) {
        rc = fw_err_set(FW_ENOMEM, "out of memory");
        goto out;
    }
    if (json_object_get(root, "resolved")) {
        rc = fw_err_set(FW_EINVAL, "spec.resolved: written by the coordinator; leave it out");
        goto out;
    }
    if (!c->o.store_dir || !c->o.store_dir[0]) {
        rc = fw_err_set(FW_EUNSUPPORTED, "spec.kind: %s jobs need the artifact store "
                        "(coordinator.store_dir is not set)", sp->kind);
        goto out;
    }
    const char *ds = json_string_value(json_object_get(root, "dataset"));
    if ((rc = s_dataset(c, "dataset", ds, &x)) < 0) goto out;
    json_object_set_new(res, "dataset", x);
    if (strcmp(sp->kind, "finetune") == 0) {
        if ((rc = s_model(c, "base", json_string_value(json_object_get(root, "base")), &x)) < 0)
            goto out;
        json_object_set_new(res, "base", x);
        const char *ev = json_string_value(json_object_get(root, "eval_dataset"));
        if (ev) {
            if ((rc = s_dataset(c, "eval_dataset", ev, &x)) < 0) goto out;
            json_object_set_new(res, "eval_dataset", x);
        }
        const char *outname = json_string_value(json_object_get(root, "output"));
        char base_name[256];
        const char *bref = json_string_value(json_object_get(json_object_get(res, "base"), "ref"));
        snprintf(base_name, sizeof base_name, "%.*s", (int)strcspn(bref, ":"), bref);
        if (!outname) outname = base_name;
        if (strspn(outname, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
                strlen(outname) || outname[0] == '.') {
            rc = fw_err_set(FW_EINVAL, "spec.output: model name '%.128s': 1-128 of "
                            "[A-Za-z0-9._-], not starting with '.'", outname);
            goto out;
        }
        json_object_set_new(res, "output", json_string(outname));
        if (!json_object_get(root, "checkpoint_every")) {
            json_int_t steps = json_integer_value(
                json_object_get(json_object_get(root, "hparams"), "steps"));
            json_object_set_new(root, "checkpoint_every",
                                json_integer(steps / 10 > 1 ? steps / 10 : 1));
        }
        uint64_t cap = s_capacity(c, sp);
        if (cap < sp->ntasks) {
            rc = fw_err_set(FW_EINVAL, "spec.world_size: %u ranks, but the cluster's agents "
                            "can run at most %" PRIu64 " such ranks at once (each needs %" PRIu64
                            " cpus, %" PRIu64 " MiB, %" PRIu64 " gpus)", sp->ntasks, cap,
                            sp->cpus, sp->memory_mb, sp->gpus);
            goto out;
        }
    } else if (strcmp(sp->kind, "embed") == 0) {
        if ((rc = s_model(c, "model", json_string_value(json_object_get(root, "model")), &x)) < 0)
            goto out;
        json_object_set_new(res, "model", x);
    } else {
        json_t *arr = json_array();
        json_object_set_new(res, "models", arr);
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(root, "models"), i, m) {
            char field[32];
            snprintf(field, sizeof field, "models[%zu]", i);
            if ((rc = s_model(c, field, json_string_value(m), &x)) < 0) goto out;
            json_array_append_new(arr, x);
        }
    }
    json_object_set(root, "resolved", res);
    char *txt = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    if (!txt) {
        rc = fw_err_set(FW_ENOMEM, "out of memory");
        goto out;
    }
    free(sp->json);
    sp->json = txt;
out:
    json_decref(res);
    json_decref(root);
    return rc;
}

/* ----------------------------------------------------------- progress */

static json_t *s_ml(coord_job_t *j) {
    if (!j->ml) j->ml = json_object();
    return j->ml;
}

/* Append (step, loss) to the curve; past S_CURVE_MAX points keep every
 * other one, so the curve covers the whole run at a coarser grain. */
static void s_curve_add(coord_job_t *j, uint64_t step, double loss) {
    json_t *curve = json_object_get(s_ml(j), "curve");
    if (!curve) {
        curve = json_array();
        json_object_set_new(j->ml, "curve", curve);
    }
    size_t n = json_array_size(curve);
    if (n && (uint64_t)json_integer_value(json_array_get(json_array_get(curve, n - 1), 0)) >= step)
        return; /* a resumed gang repeats steps it had already reported */
    json_array_append_new(curve, json_pack("[I,f]", (json_int_t)step, loss));
    if (json_array_size(curve) > S_CURVE_MAX) {
        json_t *half = json_array();
        for (size_t i = 0; i < json_array_size(curve); i += 2)
            json_array_append(half, json_array_get(curve, i));
        json_object_set_new(j->ml, "curve", half);
    }
}

void coord_ml_progress(coord_t *c, coord_task_t *t, const fw_msg_t *m) {
    coord_job_t *j = t->job;
    if (strcmp(j->spec.kind, "finetune") != 0 || t->index != 0) return;
    uint64_t step = fw_msg_get_uint_f(m, FW_F_TASK_PROGRESS_step);
    const char *ck = fw_msg_get_str_f(m, FW_F_TASK_PROGRESS_checkpoint);
    if (ck) {
        if (!fw_digest_valid(ck)) {
            coord_warn_limited(c, "event=checkpoint-bad job=%s digest=\"%.80s\"", j->id, ck);
            return;
        }
        json_t *prev = json_object_get(s_ml(j), "checkpoint");
        if (prev && (uint64_t)json_integer_value(json_object_get(prev, "step")) >= step) return;
        json_object_set_new(j->ml, "checkpoint", json_pack("{s:I,s:s,s:I,s:i}", "step",
                                                           (json_int_t)step, "digest", ck, "at",
                                                           (json_int_t)fw_wall_ms(), "attempt",
                                                           (int)t->attempt));
        fw_info("event=checkpoint job=%s step=%" PRIu64 " digest=%s", j->id, step, ck);
        /* The record is the completion marker: write it now. */
        coord_store_touch(c->store, COORD_OBJ_JOB, j, j->state, j->state, NULL);
        return;
    }
    const fw_val_t *metrics = fw_msg_get_map_f(m, FW_F_TASK_PROGRESS_metrics);
    const fw_val_t *curve = metrics ? fw_val_map_get(metrics, "curve") : NULL;
    if (curve && fw_val_kind_of(curve) == FW_VAL_ARRAY) {
        /* Every step since the last report (the agent batches them). */
        for (size_t i = 0; i < fw_val_size(curve); i++) {
            const fw_val_t *pt = fw_val_at(curve, i);
            if (fw_val_size(pt) == 2)
                s_curve_add(j, fw_val_uint(fw_val_at(pt, 0)),
                            fw_val_double(fw_val_at(pt, 1)));
        }
        return;
    }
    const fw_val_t *loss = metrics ? fw_val_map_get(metrics, "loss") : NULL;
    if (loss && step) s_curve_add(j, step, fw_val_double(loss));
}

/* ------------------------------------------------------------- assign */

void coord_ml_assign_env(coord_t *c, coord_task_t *t, fw_val_t *env) {
    (void)c;
    coord_job_t *j = t->job;
    if (strcmp(j->spec.kind, "finetune") != 0 || !j->ml) return;
    json_t *ck = json_object_get(j->ml, "checkpoint");
    if (!ck) return;
    char step[32];
    snprintf(step, sizeof step, "%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(ck, "step")));
    fw_val_map_set_str(env, "FLYWHEEL_RESUME_CHECKPOINT",
                       json_string_value(json_object_get(ck, "digest")));
    fw_val_map_set_str(env, "FLYWHEEL_RESUME_STEP", step);
    json_t *resumed = json_object_get(j->ml, "resumed");
    if (!resumed) {
        resumed = json_array();
        json_object_set_new(j->ml, "resumed", resumed);
    }
    size_t n = json_array_size(resumed);
    json_t *last = n ? json_array_get(resumed, n - 1) : NULL;
    if (last && (uint32_t)json_integer_value(json_object_get(last, "attempt")) == t->attempt)
        return; /* another rank of the same gang attempt */
    json_array_append_new(resumed, json_pack("{s:i,s:O,s:I}", "attempt", (int)t->attempt, "step",
                                             json_object_get(ck, "step"), "at",
                                             (json_int_t)fw_wall_ms()));
    fw_info("event=gang-resume job=%s attempt=%u step=%s", j->id, t->attempt, step);
}

/* ----------------------------------------------------------- finalize */

/* Task i's result as JSON (new reference), or NULL with detail. */
static json_t *s_result(coord_job_t *j, uint32_t i) {
    coord_task_t *t = &j->tasks[i];
    json_t *o = t->result ? json_loads(t->result, 0, NULL) : NULL;
    if (!json_is_object(o)) {
        json_decref(o);
        fw_err_set(FW_EPROTO, "task %s.%u: no result object (was it truncated? raise "
                   "coordinator.result_max_bytes)", j->id, i);
        return NULL;
    }
    return o;
}

static int s_fin_finetune(coord_t *c, coord_job_t *j, json_t *spec) {
    json_t *res = spec ? json_object_get(spec, "resolved") : NULL;
    json_t *r0 = s_result(j, 0);
    if (!r0) return FW_EPROTO;
    const char *digest = json_string_value(json_object_get(r0, "model"));
    int rc;
    if (!fw_digest_valid(digest)) {
        rc = fw_err_set(FW_EPROTO, "rank 0's result has no model digest");
        json_decref(r0);
        return rc;
    }
    json_t *hp = json_deep_copy(json_object_get(spec, "hparams"));
    json_object_set_new(hp, "world_size", json_integer(j->ntasks));
    json_object_set(hp, "checkpoint_every", json_object_get(spec, "checkpoint_every"));
    json_t *ds = json_pack("[O]", json_object_get(json_object_get(res, "dataset"), "ref"));
    json_t *metrics = json_object();
    static const char *const keep[] = {"final_loss", "steps", "tokens", "tokens_per_s",
                                       "train_seconds", "eval_loss"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (json_object_get(r0, keep[i])) json_object_set(metrics, keep[i], json_object_get(r0, keep[i]));
    coord_model_reg_t reg = {
        .name = json_string_value(json_object_get(res, "output")),
        .digest = digest,
        .parent = json_string_value(json_object_get(json_object_get(res, "base"), "ref")),
        .datasets = ds,
        .job = j->id,
        .hparams = hp,
        .metrics = metrics,
        .code_version = FW_CODE_VERSION,
        .by = j->owner ? j->owner : "unknown",
    };
    json_t *rec = NULL;
    bool existing = false;
    rc = coord_models_register(c, &reg, &rec, &existing);
    if (rc == 0) {
        char ref[300];
        snprintf(ref, sizeof ref, "%s:%" JSON_INTEGER_FORMAT, reg.name,
                 json_integer_value(json_object_get(rec, "version")));
        json_t *out = json_pack("{s:s,s:s}", "model", ref, "digest", digest);
        json_object_update(out, metrics);
        json_object_set(out, "resumed_from_step", json_object_get(r0, "resumed_from_step"));
        json_object_set_new(s_ml(j), "result", out);
    }
    json_decref(rec);
    json_decref(hp);
    json_decref(ds);
    json_decref(metrics);
    json_decref(r0);
    return rc;
}

static int s_fin_embed(coord_t *c, coord_job_t *j, fw_store *st) {
    (void)c;
    uint64_t rows = 0, dim = 0;
    int rc = 0;
    char **bufs = calloc(j->ntasks, sizeof *bufs);
    size_t *lens = calloc(j->ntasks, sizeof *lens);
    uint64_t *srows = calloc(j->ntasks, sizeof *srows);
    if (!bufs || !lens || !srows) {
        free(bufs);
        free(lens);
        free(srows);
        return fw_err_set(FW_ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < j->ntasks && rc == 0; i++) {
        json_t *r = s_result(j, i);
        if (!r) {
            rc = FW_EPROTO;
            break;
        }
        const char *d = json_string_value(json_object_get(r, "matrix"));
        rc = fw_store_get_buffer(st, d ? d : "", (size_t)1 << 34, &bufs[i], &lens[i]);
        if (rc < 0) fw_err_set(rc, "shard %u's matrix %s: %s", i, d ? d : "?", fw_err_detail());
        json_decref(r);
        if (rc < 0) break;
        char what[48];
        snprintf(what, sizeof what, "shard %u's matrix", i);
        fw_embed_hdr eh;
        if (lens[i] < FW_EMBED_HDR) {
            rc = fw_err_set(FW_ECORRUPT, "%s: shorter than the FWEMBED header", what);
            break;
        }
        if ((rc = fw_embed_hdr_read((const unsigned char *)bufs[i], lens[i], what, &eh)) < 0)
            break;
        if (dim && eh.dim != dim) {
            rc = fw_err_set(FW_ECORRUPT, "%s: %u wide, the other shards %" PRIu64, what, eh.dim,
                            dim);
            break;
        }
        srows[i] = eh.rows;
        dim = eh.dim;
        rows += eh.rows;
    }
    fw_store_writer *w = rc == 0 ? fw_store_writer_new(st) : NULL;
    if (rc == 0 && !w) rc = fw_err_set(FW_EIO, "artifact store: %s", fw_err_detail());
    if (rc == 0) {
        unsigned char hdr[FW_EMBED_HDR];
        fw_embed_hdr_write(hdr, (uint32_t)dim, rows);
        rc = fw_store_writer_write(w, hdr, sizeof hdr);
        /* Row ids of every shard (in shard order = dataset order), then the vectors. */
        for (uint32_t i = 0; i < j->ntasks && rc == 0; i++)
            rc = fw_store_writer_write(w, bufs[i] + FW_EMBED_HDR, srows[i] * 8);
        for (uint32_t i = 0; i < j->ntasks && rc == 0; i++)
            rc = fw_store_writer_write(w, bufs[i] + FW_EMBED_HDR + srows[i] * 8,
                                       srows[i] * dim * 4);
        char digest[FW_DIGEST_STR_SIZE];
        if (rc == 0) rc = fw_store_writer_commit(&w, NULL, digest);
        else fw_store_writer_abort(&w);
        if (rc == 0) {
            double secs = (double)(fw_wall_ms() - j->started_at) / 1e3;
            json_object_set_new(s_ml(j), "result",
                                json_pack("{s:s,s:I,s:I,s:f,s:f}", "matrix", digest, "rows",
                                          (json_int_t)rows, "dim", (json_int_t)dim, "seconds",
                                          secs, "sentences_per_s",
                                          secs > 0 ? (double)rows / secs : 0.0));
        } else {
            fw_err_set(rc, "writing the merged matrix: %s", fw_err_detail());
        }
    }
    for (uint32_t i = 0; i < j->ntasks; i++) free(bufs[i]);
    free(bufs);
    free(lens);
    free(srows);
    return rc;
}

/* Merge model m's shards: exact summary, merged per-example blob, eval record. */
static int s_fin_eval_model(coord_t *c, coord_job_t *j, fw_store *st, json_t *spec, size_t m,
                            uint32_t shards, json_t *results) {
    json_t *res = json_object_get(spec, "resolved");
    const char *model = json_string_value(json_object_get(
        json_array_get(json_object_get(res, "models"), m), "ref"));
    json_t *dsr = json_object_get(res, "dataset");
    const char *dataset = json_string_value(json_object_get(dsr, "ref"));
    uint64_t records = (uint64_t)json_integer_value(json_object_get(dsr, "records"));
    fw_evalset *set = fw_evalset_new();
    int rc = set ? 0 : fw_err_set(FW_ENOMEM, "out of memory");
    for (uint32_t s = 0; s < shards && rc == 0; s++) {
        json_t *r = s_result(j, (uint32_t)m * shards + s);
        if (!r) {
            rc = FW_EPROTO;
            break;
        }
        const char *d = json_string_value(json_object_get(r, "scores"));
        uint64_t first = (uint64_t)json_integer_value(json_object_get(r, "first_record"));
        char *buf = NULL;
        size_t len = 0;
        char origin[64];
        snprintf(origin, sizeof origin, "shard %u of %s", s, model);
        rc = fw_store_get_buffer(st, d ? d : "", (size_t)1 << 31, &buf, &len);
        if (rc < 0) fw_err_set(rc, "%s: scores %s: %s", origin, d ? d : "?", fw_err_detail());
        else rc = fw_evalset_add_jsonl(set, buf, len, origin, first, first);
        free(buf);
        json_decref(r);
    }
    fw_evalsum sum;
    fw_evalmetrics mt;
    if (rc == 0) rc = fw_evalset_finish(set, records);
    if (rc == 0) rc = fw_evalset_summary(set, &sum);
    if (rc == 0) rc = fw_evalsum_metrics(&sum, &mt);
    char path[COORD_KEY_MAX + 64], digest[FW_DIGEST_STR_SIZE];
    snprintf(path, sizeof path, "%s/tmp/eval-%s-%zu-%d.jsonl", c->o.store_dir, j->id, m,
             (int)getpid());
    if (rc == 0) rc = fw_evalset_write(set, path);
    if (rc == 0) rc = fw_store_put_file(st, path, digest);
    unlink(path);
    fw_evalset_destroy(&set);
    if (rc < 0) return fw_err_set(rc, "merging the eval of %s: %s", model, fw_err_detail());
    json_t *summary = fw_evalsum_to_json(&sum);
    json_t *metrics = json_object();
    const struct { const char *k; double v; } ms[] = {
        {"loss", mt.loss}, {"perplexity", mt.perplexity}, {"exact_match", mt.exact_match},
        {"accuracy", mt.accuracy}, {"accuracy_norm", mt.accuracy_norm}};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        if (!isnan(ms[i].v) && isfinite(ms[i].v))
            json_object_set_new(metrics, ms[i].k, json_real(ms[i].v));
    json_t *rec = json_pack("{s:i,s:s,s:s,s:s,s:O,s:O,s:s,s:I,s:s,s:I}", "schema", COORD_SCHEMA,
                            "model", model, "dataset", dataset, "kind",
                            fw_eval_kind_name(sum.kind), "metrics", metrics, "summary", summary,
                            "scores", digest, "records", (json_int_t)records, "job", j->id,
                            "created_at", (json_int_t)fw_wall_ms());
    rc = rec ? coord_models_put_eval(c, rec, j->owner ? j->owner : "unknown") : FW_ENOMEM;
    if (rc == 0)
        json_array_append_new(results, json_pack("{s:s,s:O,s:s,s:I}", "model", model, "metrics",
                                                 metrics, "scores", digest, "records",
                                                 (json_int_t)records));
    json_decref(rec);
    json_decref(summary);
    json_decref(metrics);
    return rc;
}

static int s_fin_eval(coord_t *c, coord_job_t *j, fw_store *st, json_t *spec) {
    size_t nm = json_array_size(json_object_get(json_object_get(spec, "resolved"), "models"));
    json_int_t sh = json_integer_value(json_object_get(spec, "shards"));
    uint32_t shards = sh > 0 ? (uint32_t)sh : 1;
    if (nm == 0 || nm * shards != j->ntasks)
        return fw_err_set(FW_EPROTO, "eval job %s: %zu models x %u shards != %u tasks", j->id,
                          nm, shards, j->ntasks);
    json_t *results = json_array();
    int rc = 0;
    for (size_t m = 0; m < nm && rc == 0; m++)
        rc = s_fin_eval_model(c, j, st, spec, m, shards, results);
    if (rc == 0)
        json_object_set_new(s_ml(j), "result",
                            json_pack("{s:O,s:O}", "dataset",
                                      json_object_get(json_object_get(json_object_get(spec,
                                      "resolved"), "dataset"), "ref"), "results", results));
    json_decref(results);
    return rc;
}

int coord_ml_finalize(void *arg, coord_job_t *j) {
    coord_t *c = arg;
    if (!s_is_ml(j->spec.kind) || !j->tasks) return 0;
    int64_t t0 = fw_mono_ms();
    json_t *spec = json_loads(j->spec.json, 0, NULL);
    fw_store *st = c->o.store_dir && c->o.store_dir[0] ? fw_store_open_dir(c->o.store_dir, NULL)
                                                       : NULL;
    int rc;
    if (!spec || !json_object_get(spec, "resolved"))
        rc = fw_err_set(FW_EPROTO, "job %s: spec without \"resolved\"", j->id);
    else if (!st)
        rc = fw_err_set(FW_EIO, "artifact store %s: %s", c->o.store_dir ? c->o.store_dir : "-",
                        fw_err_detail());
    else if (strcmp(j->spec.kind, "finetune") == 0)
        rc = s_fin_finetune(c, j, spec);
    else if (strcmp(j->spec.kind, "embed") == 0)
        rc = s_fin_embed(c, j, st);
    else
        rc = s_fin_eval(c, j, st, spec);
    fw_store_destroy(&st);
    json_decref(spec);
    if (rc < 0) {
        char why[1200];
        snprintf(why, sizeof why, "finalize: %s", fw_err_detail());
        free(j->error);
        j->error = strdup(why);
        fw_warn("event=job-finalize-failed job=%s kind=%s err=%s detail=\"%s\"", j->id,
                j->spec.kind, fw_errname(rc), why);
        return -1;
    }
    fw_info("event=job-finalized job=%s kind=%s ms=%" PRId64, j->id, j->spec.kind,
            fw_mono_ms() - t0);
    return 0;
}
