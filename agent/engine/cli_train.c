/* cli_train.c - the train verb: steps over a dataset, checkpoints, resume,
 * data-parallel ranks.
 *
 * Theory of operation
 * -------------------
 * One optimizer step, on every rank r of W (W = 1 without --world-size):
 *
 *     load K micro-batches of B rows x T tokens (the loader gives rank r
 *       rows [r*B, (r+1)*B) of each global batch of W*B rows)
 *     n = all-reduce-sum(targets != -1 over the K micro-batches)
 *     zero grads; for each micro-batch: forward, backward(scale 1/n)
 *     all-reduce-sum(grads)            (now the gradient of the global mean)
 *     lr = fw_lr_at(step, ...); AdamW step (clip by global norm first)
 *     loss = all-reduce-sum(sum of micro-batch loss * tokens) / n
 *
 * Every rank then holds the same gradient and takes the same step, so W
 * ranks with B rows each follow the same trajectory as 1 rank with W*B rows
 * (to float rounding: the sum is taken in another order). Counts travel as
 * floats, exact below 2^24 tokens per step (checked up front).
 *
 * State diagram of a run:
 *
 *     start --(--resume CKPT | auto finds one)--> load checkpoint --+
 *       |                                                           v
 *       +--(fresh)--> step 0 ------------------------------> step loop
 *                                                                   |
 *     every --checkpoint-every steps and at the end: rank 0 writes  |
 *     <dir>/ckpt-<step>.fwckpt atomically, all ranks barrier        |
 *                                                                   v
 *                                    rank 0 writes the final model to --out
 *
 * A checkpoint holds parameters, AdamW moments, the step count, the loader
 * position and the hyperparameters; resuming from the one written after
 * step k continues with step k+1 exactly as the uninterrupted run did (same
 * data, same schedule, same floats on the same thread count), so the losses
 * match bit for bit. --resume auto takes the highest-step checkpoint in
 * --checkpoint-dir, or starts fresh when there is none (so a restarted task
 * can always pass it).
 *
 * --data is a shard (FWSHARD magic) or a JSONL file, which is tokenised with
 * the model's tokenizer into a private temporary shard first (each rank does
 * this itself; it is deterministic). --eval-data (JSONL) is scored on rank 0
 * every --eval-every steps and at the end. */
#include "checkpoint.h"
#include "cli.h"
#include "collective.h"
#include "data.h"

#include "fw_err.h"
#include "fw_file.h"
#include "fw_time.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const fw_cli_opt s_train_opts[] = {
    {"model", FW_OPT_STR, 1, NULL, 0, 0, "DIR", "model directory to start from"},
    {"data", FW_OPT_STR, 1, NULL, 0, 0, "FILE.jsonl|SHARD", "training data"},
    {"eval-data", FW_OPT_STR, 0, NULL, 0, 0, "FILE.jsonl", "held-out data scored on rank 0"},
    {"eval-every", FW_OPT_INT, 0, "0", 0, 1e12, "N", "score --eval-data every N steps (0: at the end)"},
    {"out", FW_OPT_STR, 1, NULL, 0, 0, "DIR", "final model directory (written by rank 0)"},
    {"steps", FW_OPT_INT, 1, NULL, 1, 1e12, "N", "optimizer steps in the whole run"},
    {"batch", FW_OPT_INT, 1, NULL, 1, 65536, "B", "rows per micro-batch on this rank"},
    {"seq", FW_OPT_INT, 1, NULL, 1, 1 << 20, "T", "tokens per row (<= the model's context)"},
    {"grad-accum", FW_OPT_INT, 0, "1", 1, 65536, "K", "micro-batches per optimizer step"},
    {"lr", FW_OPT_FLOAT, 0, "3e-4", 0, 10, "F", "peak learning rate"},
    {"warmup", FW_OPT_INT, 0, "0", 0, 1e12, "N", "linear warmup steps"},
    {"min-lr-frac", FW_OPT_FLOAT, 0, "0.1", 0, 1, "F", "cosine decays to lr * this at the last step"},
    {"weight-decay", FW_OPT_FLOAT, 0, "0.1", 0, 10, "F", "AdamW decoupled weight decay (matrices)"},
    {"grad-clip", FW_OPT_FLOAT, 0, "1.0", 0, 1e9, "F", "clip the global gradient norm (0: off)"},
    {"seed", FW_OPT_INT, 0, "1337", 0, 9.2e18, "N", "data shuffle seed"},
    {"checkpoint-dir", FW_OPT_STR, 0, NULL, 0, 0, "D", "where checkpoints go (rank 0 writes)"},
    {"checkpoint-every", FW_OPT_INT, 0, "0", 0, 1e12, "K",
     "checkpoint every K steps (0: only at the end); needs --checkpoint-dir"},
    {"resume", FW_OPT_STR, 0, NULL, 0, 0, "CKPT|auto",
     "continue from a checkpoint file, or the latest in --checkpoint-dir"},
    {"max-bad-fraction", FW_OPT_FLOAT, 0, "0.01", 0, 1, "F", "JSONL --data: tolerated bad lines"},
    {"threads", FW_OPT_INT, 0, "0", 0, 1024, "N", "CPU threads (0: OpenMP's default)"},
    {"device", FW_OPT_STR, 0, "cpu", 0, 0, "DEV", "cpu (or cuda[:N] when built in)"},
    {"rank", FW_OPT_INT, 0, "0", 0, 65535, "R", "this process's rank"},
    {"world-size", FW_OPT_INT, 0, "1", 1, 65536, "N", "data-parallel ranks"},
    {"rendezvous", FW_OPT_STR, 0, NULL, 0, 0, "tcp://H:P", "where rank 0 listens (world > 1)"},
    {"collective", FW_OPT_STR, 0, NULL, 0, 0, "ring|single|nccl",
     "all-reduce backend (default: single for 1 rank, ring otherwise)"},
    {"rendezvous-timeout", FW_OPT_INT, 0, "60000", 1, 3600000, "MS", "wait this long for peers"},
    {"grad-sync", FW_OPT_STR, 0, "auto", 0, 0, "auto|layers|whole",
     "all-reduce gradients layer by layer during backward (overlaps it on nccl) or once after it; "
     "auto: layers on nccl, whole on ring"},
    {"zero", FW_OPT_INT, 0, "0", 0, 1, "0|1",
     "1: ZeRO-1, each rank keeps AdamW state for 1/world of the parameters (reduce-scatter, "
     "step, all-gather)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, NULL}};

/* Everything one run holds; freed in one place. */
typedef struct {
    fw_model *m;
    fw_tokenizer *tok;
    fw_coll *coll;
    fw_shard *shard;
    fw_loader *loader;
    char tmpdir[4096]; /* private dir of a tokenised JSONL, "" when none */
    int32_t *in, *tg;  /* [K][B*T] */
    float *mb_loss;    /* [K] */
    size_t *mb_n;      /* [K] */
} s_run;

static void s_run_free(s_run *r) {
    fw_loader_destroy(&r->loader);
    fw_shard_close(&r->shard);
    if (r->tmpdir[0]) fw_file_remove_tree(r->tmpdir);
    fw_coll_destroy(&r->coll);
    fw_tokenizer_destroy(&r->tok);
    fw_model_destroy(&r->m);
    free(r->in), free(r->tg), free(r->mb_loss), free(r->mb_n);
}

static int s_is_shard(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[8];
    int yes = fread(magic, 1, 8, f) == 8 && memcmp(magic, "FWSHARD\0", 8) == 0;
    fclose(f);
    return yes;
}

/* Open --data as a shard, tokenising a JSONL file first. */
static int s_open_data(s_run *r, const char *data, double max_bad, int rank) {
    const char *shard_path = data;
    char tmp_shard[4200];
    if (access(data, R_OK) != 0)
        return fw_cli_fail("--data %s: cannot read: %s", data, strerror(errno));
    if (!s_is_shard(data)) {
        const char *base = getenv("TMPDIR");
        snprintf(r->tmpdir, sizeof r->tmpdir, "%s/fw-train-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(r->tmpdir)) {
            int e = errno;
            r->tmpdir[0] = '\0';
            return fw_cli_fail("making a temporary directory: %s", strerror(e));
        }
        snprintf(tmp_shard, sizeof tmp_shard, "%s/train.shard", r->tmpdir);
        fw_data_opts opts = {.max_bad_fraction = max_bad, .max_report = 20};
        fw_data_report rep;
        fw_err_clear();
        if (fw_data_tokenize(data, r->tok, tmp_shard, &opts, &rep) != 0) {
            fw_cli_fail("--data: %s", fw_err_detail());
            for (size_t i = 1; i < rep.nbad_kept; i++)
                fprintf(stderr, "  %s line %zu: %s\n", data, rep.bad_line[i], rep.bad_reason[i]);
            return FW_CLI_EXIT_ERROR;
        }
        if (rank == 0)
            fw_cli_note("tokenised %s: %zu records, %zu rejected, %zu tokens", data, rep.accepted,
                        rep.rejected, rep.tokens);
        shard_path = tmp_shard;
    }
    fw_err_clear();
    r->shard = fw_shard_open(shard_path);
    if (!r->shard) return fw_cli_fail("--data %s: %s", data, fw_err_detail());
    /* A shard made with another tokenizer can hold ids the model has no
     * embedding for; say so here rather than at the first forward. */
    int V = fw_model_config_get(r->m)->vocab_size;
    for (size_t d = 0; d < fw_shard_ndocs(r->shard); d++) {
        const int32_t *ids;
        const uint8_t *mask;
        size_t n;
        fw_shard_doc(r->shard, d, &ids, &mask, &n);
        for (size_t i = 0; i < n; i++)
            if (ids[i] >= V)
                return fw_cli_fail("--data %s: document %zu holds token id %d, but the model's "
                                   "vocabulary has %d tokens (tokenised with another tokenizer?)",
                                   data, d, ids[i], V);
    }
    return 0;
}

/* The checkpoint file for a step inside dir. */
static void s_ckpt_path(char *buf, size_t size, const char *dir, int64_t step) {
    snprintf(buf, size, "%s/ckpt-%010lld.fwckpt", dir, (long long)step);
}

/* Highest-step "ckpt-N.fwckpt" in dir into buf; 0 found, 1 none, -1 error. */
static int s_latest_ckpt(const char *dir, char *buf, size_t size) {
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 1;
        fw_cli_fail("--checkpoint-dir %s: %s", dir, strerror(errno));
        return -1;
    }
    long long best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long step;
        char tail[16];
        if (sscanf(e->d_name, "ckpt-%lld.%15s", &step, tail) == 2 && strcmp(tail, "fwckpt") == 0 &&
            step > best)
            best = step;
    }
    closedir(d);
    if (best < 0) return 1;
    s_ckpt_path(buf, size, dir, best);
    return 0;
}

static int s_allreduce(s_run *r, float *buf, size_t n, const char *what) {
    if (!r->coll || fw_coll_world(r->coll) == 1) return 0;
    fw_err_clear();
    if (fw_coll_allreduce_sum(r->coll, buf, n) != 0)
        return fw_cli_fail("all-reduce of the %s: %s", what, fw_err_detail());
    return 0;
}

/* fw_grad_sync callbacks (--grad-sync layers): each bucket of gradients
 * goes to the collective as backward finishes it. */
static int s_bucket_ready(void *ctx, const size_t *offs, const size_t *lens, int n, void *stream) {
    s_run *r = ctx;
    size_t ng;
    float *grads = fw_model_grads(r->m, &ng);
    return grads ? fw_coll_allreduce_ranges(r->coll, grads, offs, lens, n, stream) : FW_ENOMEM;
}

static int s_bucket_finish(void *ctx, void *stream) {
    return fw_coll_sync_wait(((s_run *)ctx)->coll, stream);
}

/* ZeRO-1 step: reduce-scatter the gradients, clip by the global norm (the
 * ranks' sums of squares all-reduced), AdamW on this rank's part, all-gather
 * the parameters. n_global == 0 skips the update but not the collectives'
 * order, which every rank must keep. */
static int s_zero_step(s_run *r, const fw_adamw *opt, int64_t step, int update, float *norm) {
    size_t ng, off, len;
    float *grads = fw_model_grads(r->m, &ng);
    if (!grads) return fw_cli_fail("gradients: %s", fw_err_detail());
    fw_coll_shard(r->coll, ng, &off, &len);
    double ss = 0;
    fw_err_clear();
    if (fw_coll_reduce_scatter_sum(r->coll, grads, ng) != 0)
        return fw_cli_fail("reduce-scatter of the gradients: %s", fw_err_detail());
    if (fw_model_grad_sumsq(r->m, off, len, &ss) != 0)
        return fw_cli_fail("gradient norm: %s", fw_err_detail());
    float ssf = (float)ss;
    if (s_allreduce(r, &ssf, 1, "gradient norm") != 0) return -1;
    *norm = sqrtf(ssf);
    if (update && fw_model_step_adamw_norm(r->m, opt, step, *norm) != 0)
        return fw_cli_fail("optimizer step %lld: %s", (long long)step, fw_err_detail());
    float *params = fw_model_params(r->m, &ng);
    if (fw_coll_allgather(r->coll, params, ng) != 0)
        return fw_cli_fail("all-gather of the parameters: %s", fw_err_detail());
    return 0;
}

/* A checkpoint of a sharded optimizer: every rank contributes its part of
 * the AdamW state (zeros elsewhere) and the sum is the whole state, which
 * rank 0 writes: the file is the same as an unsharded run's. */
static int s_save_sharded(s_run *r, const char *path, const fw_train_state *st) {
    size_t np = fw_model_num_params(r->m);
    float *m1 = malloc(np * sizeof(float)), *m2 = malloc(np * sizeof(float));
    int rc = -1;
    fw_err_clear();
    if (!m1 || !m2)
        fw_cli_fail("checkpoint: out of memory for %zu parameters of AdamW state", np);
    else if (fw_model_read_opt_state(r->m, m1, m2) != 0)
        fw_cli_fail("checkpoint: AdamW state: %s", fw_err_detail());
    else if (s_allreduce(r, m1, np, "AdamW state") == 0 &&
             s_allreduce(r, m2, np, "AdamW state") == 0)
        rc = fw_coll_rank(r->coll) == 0 && fw_checkpoint_save_opt(path, r->m, st, m1, m2) != 0
                 ? fw_cli_fail("checkpoint %s: %s", path, fw_err_detail())
                 : 0;
    free(m1);
    free(m2);
    return rc;
}

static int s_eval(s_run *r, const char *path, int B, int T, int64_t step) {
    fw_cli_text_eval ev;
    int64_t t0 = fw_mono_ns();
    if (fw_cli_eval_text_file(r->m, r->tok, path, B, T, NULL, &ev) != 0) return -1;
    fw_model_set_train(r->m, 1);
    double loss = ev.loss_sum / (double)ev.tokens;
    fw_cli_emit(json_pack("{s:I, s:f, s:f, s:I, s:f}", "step", (json_int_t)step, "eval_loss", loss,
                          "eval_perplexity", exp(loss), "eval_tokens", (json_int_t)ev.tokens,
                          "eval_seconds", (double)(fw_mono_ns() - t0) / 1e9));
    return 0;
}

static int s_train_run(const fw_cli_args *a) {
    s_run r = {0};
    int rc = FW_CLI_EXIT_ERROR;
    const char *mdir = fw_cli_str(a, "model"), *out = fw_cli_str(a, "out");
    const char *ckdir = fw_cli_str(a, "checkpoint-dir"), *resume = fw_cli_str(a, "resume");
    const char *eval_data = fw_cli_str(a, "eval-data");
    int64_t steps = fw_cli_int(a, "steps"), ck_every = fw_cli_int(a, "checkpoint-every");
    int64_t eval_every = fw_cli_int(a, "eval-every");
    int B = (int)fw_cli_int(a, "batch"), T = (int)fw_cli_int(a, "seq");
    int K = (int)fw_cli_int(a, "grad-accum");
    int rank = (int)fw_cli_int(a, "rank"), world = (int)fw_cli_int(a, "world-size");
    const char *backend = fw_cli_str(a, "collective");
    if (!backend) backend = world == 1 ? "single" : "ring";
    const char *gsync = fw_cli_str(a, "grad-sync");
    int zero = (int)fw_cli_int(a, "zero") && world > 1;

    /* ---- usage checks that need more than one option ---- */
    if (rank >= world) {
        fw_cli_fail("--rank %d must be below --world-size %d", rank, world);
        return FW_CLI_EXIT_USAGE;
    }
    if (world > 1 && strncmp(fw_cli_str(a, "device"), "cuda", 4) == 0 &&
        strcmp(backend, "nccl") != 0) {
        /* A CUDA model's gradients live on the device: only NCCL reduces them. */
        fw_cli_fail("--device %s with --world-size %d needs --collective nccl",
                    fw_cli_str(a, "device"), world);
        return FW_CLI_EXIT_USAGE;
    }
    if (world > 1 && !fw_cli_str(a, "rendezvous")) {
        fw_cli_fail("--world-size %d needs --rendezvous tcp://HOST:PORT", world);
        return FW_CLI_EXIT_USAGE;
    }
    if (strcmp(gsync, "auto") != 0 && strcmp(gsync, "layers") != 0 &&
        strcmp(gsync, "whole") != 0) {
        fw_cli_fail("--grad-sync %s: expected auto, layers or whole", gsync);
        return FW_CLI_EXIT_USAGE;
    }
    /* ZeRO reduce-scatters once after backward; per-layer all-reduce would
     * be the other half of the same traffic. */
    int layers = world > 1 && !zero &&
                 (strcmp(gsync, "layers") == 0 ||
                  (strcmp(gsync, "auto") == 0 && strcmp(backend, "nccl") == 0));
    if (ck_every > 0 && !ckdir) {
        fw_cli_fail("--checkpoint-every needs --checkpoint-dir");
        return FW_CLI_EXIT_USAGE;
    }
    if (resume && strcmp(resume, "auto") == 0 && !ckdir) {
        fw_cli_fail("--resume auto needs --checkpoint-dir");
        return FW_CLI_EXIT_USAGE;
    }
    if ((double)B * T * K * world > 16777216.0)
        return fw_cli_fail("batch * seq * grad-accum * world-size = %.0f tokens per step; at most "
                           "16777216 (token counts are all-reduced as floats)",
                           (double)B * T * K * world);

    if (fw_cli_int(a, "threads") > 0) fw_engine_set_threads((int)fw_cli_int(a, "threads"));
    if (fw_cli_load_model(mdir, fw_cli_str(a, "device"), &r.m, &r.tok) != 0) goto done;
    const fw_model_config *cfg = fw_model_config_get(r.m);
    if (T > cfg->n_ctx) {
        fw_cli_fail("--seq %d is longer than the model's context %d (n_positions in %s/config.json)",
                    T, cfg->n_ctx, mdir);
        goto done;
    }
    if (s_open_data(&r, fw_cli_str(a, "data"), fw_cli_float(a, "max-bad-fraction"), rank) != 0)
        goto done;

    /* ---- training state: fresh or from a checkpoint ---- */
    fw_train_state st;
    memset(&st, 0, sizeof st);
    st.opt = fw_adamw_defaults();
    st.opt.lr = (float)fw_cli_float(a, "lr");
    st.opt.weight_decay = (float)fw_cli_float(a, "weight-decay");
    st.opt.grad_clip = (float)fw_cli_float(a, "grad-clip");
    st.min_lr_frac = (float)fw_cli_float(a, "min-lr-frac");
    st.warmup_steps = fw_cli_int(a, "warmup");
    st.total_steps = steps;
    st.batch_size = B, st.seq_len = T, st.grad_accum = K, st.world_size = world;
    st.seed = (uint64_t)fw_cli_int(a, "seed");
    fw_rng_seed(&st.rng, st.seed);
    fw_err_clear();
    r.loader = fw_loader_new(r.shard, B, T, st.seed, rank, world);
    if (!r.loader) {
        fw_cli_fail("--data: %s", fw_err_detail());
        goto done;
    }
    st.loader = fw_loader_get_state(r.loader);

    char ckpath[4200];
    const char *from = NULL;
    if (resume && strcmp(resume, "auto") == 0) {
        int lr = s_latest_ckpt(ckdir, ckpath, sizeof ckpath);
        if (lr < 0) goto done;
        if (lr == 0) from = ckpath;
        else if (rank == 0) fw_cli_note("--resume auto: no checkpoint in %s, starting fresh", ckdir);
    } else if (resume) {
        from = resume;
    }
    if (from) {
        fw_train_state saved;
        fw_err_clear();
        if (fw_checkpoint_load(from, r.m, &saved) != 0) {
            fw_cli_fail("--resume %s: %s", from, fw_err_detail());
            goto done;
        }
        if (saved.seq_len != T) {
            fw_cli_fail("--resume %s: the checkpoint was written with --seq %d, this run has %d; "
                        "the data position would not carry over",
                        from, saved.seq_len, T);
            goto done;
        }
        if (saved.batch_size * saved.world_size != B * world || saved.grad_accum != K)
            fw_cli_note("resuming with a different global batch (%d x %d ranks x %d, was %d x %d x "
                        "%d): the run continues but is not the run that was checkpointed",
                        B, world, K, saved.batch_size, saved.world_size, saved.grad_accum);
        if (saved.step >= steps) {
            fw_cli_fail("--resume %s: the checkpoint is at step %lld, not below --steps %lld", from,
                        (long long)saved.step, (long long)steps);
            goto done;
        }
        /* The command line's hyperparameters win (a resumed run may lower
         * the lr); the data position, RNG and step come from the file. */
        st.step = saved.step;
        st.rng = saved.rng;
        st.loader = saved.loader;
        if (fw_loader_set_state(r.loader, &st.loader) != 0) {
            fw_cli_fail("--resume %s: loader state: %s", from, fw_err_detail());
            goto done;
        }
        if (rank == 0) fw_cli_note("resumed from %s at step %lld", from, (long long)st.step);
    }

    /* ---- collective ---- */
    fw_err_clear();
    r.coll = fw_coll_new(backend, rank, world, fw_cli_str(a, "rendezvous"),
                         (int)fw_cli_int(a, "rendezvous-timeout"));
    if (!r.coll) {
        fw_cli_fail("--collective %s (rank %d of %d): %s", backend, rank, world, fw_err_detail());
        goto done;
    }
    if (zero) {
        size_t off, len;
        fw_coll_shard(r.coll, fw_model_num_params(r.m), &off, &len);
        fw_err_clear();
        if (fw_model_shard_optimizer(r.m, off, len) != 0) {
            fw_cli_fail("--zero 1: %s", fw_err_detail());
            goto done;
        }
        fw_cli_note("ZeRO-1: rank %d keeps AdamW state for parameters [%zu, %zu) of %zu", rank,
                    off, off + len, fw_model_num_params(r.m));
    }
    fw_grad_sync sync = {.ready = s_bucket_ready, .finish = s_bucket_finish, .ctx = &r};

    size_t bt = (size_t)B * (size_t)T;
    r.in = malloc((size_t)K * bt * sizeof *r.in);
    r.tg = malloc((size_t)K * bt * sizeof *r.tg);
    r.mb_loss = malloc((size_t)K * sizeof *r.mb_loss);
    r.mb_n = malloc((size_t)K * sizeof *r.mb_n);
    if (!r.in || !r.tg || !r.mb_loss || !r.mb_n) {
        fw_cli_fail("out of memory for %d micro-batches of %d x %d", K, B, T);
        goto done;
    }
    fw_model_set_train(r.m, 1);
    if (rank == 0)
        fw_cli_note("training %s from step %lld to %lld: %d rank(s) x %d micro-batch(es) x %d x %d "
                    "tokens per step, %zu windows per epoch",
                    mdir, (long long)st.step, (long long)steps, world, K, B, T,
                    fw_loader_windows(r.loader));

    int64_t t_start = fw_mono_ns();
    double last_loss = 0;
    uint64_t total_tokens = 0;
    for (int64_t step = st.step; step < steps; step++) {
        int64_t t0 = fw_mono_ns();
        size_t n_local = 0;
        fw_err_clear();
        for (int k = 0; k < K; k++) {
            if (fw_loader_next(r.loader, r.in + (size_t)k * bt, r.tg + (size_t)k * bt) != 0) {
                fw_cli_fail("reading data at step %lld: %s", (long long)step + 1, fw_err_detail());
                goto done;
            }
            r.mb_n[k] = fw_count_targets(r.tg + (size_t)k * bt, bt);
            n_local += r.mb_n[k];
        }
        float n_global = (float)n_local;
        if (s_allreduce(&r, &n_global, 1, "token count") != 0) goto done;
        if (fw_model_zero_grad(r.m) != 0) {
            fw_cli_fail("zeroing gradients: %s", fw_err_detail());
            goto done;
        }
        double loss_local = 0;
        if (n_global > 0) {
            for (int k = 0; k < K; k++) {
                /* The last micro-batch's backward syncs bucket by bucket
                 * (--grad-sync layers), even when it has no targets: every
                 * rank must make the same collective calls. */
                const fw_grad_sync *gs = layers && k == K - 1 ? &sync : NULL;
                if (fw_model_forward(r.m, r.in + (size_t)k * bt, r.tg + (size_t)k * bt, B, T,
                                     &r.mb_loss[k]) != 0 ||
                    ((r.mb_n[k] > 0 || gs) &&
                     fw_model_backward_sync(r.m, r.mb_n[k] > 0 ? 1.0f / n_global : 0.0f, gs) !=
                         0)) {
                    fw_cli_fail("step %lld: %s", (long long)step + 1, fw_err_detail());
                    goto done;
                }
                loss_local += (double)r.mb_loss[k] * (double)r.mb_n[k];
            }
        }
        size_t ng;
        float *grads = fw_model_grads(r.m, &ng);
        if (!grads) {
            fw_cli_fail("gradients: %s", fw_err_detail());
            goto done;
        }
        if (!zero && !(layers && n_global > 0) && s_allreduce(&r, grads, ng, "gradients") != 0)
            goto done;
        float loss_sum = (float)loss_local;
        if (s_allreduce(&r, &loss_sum, 1, "loss") != 0) goto done;
        fw_adamw opt = st.opt;
        opt.lr = fw_lr_at(step, st.opt.lr, st.warmup_steps, steps, st.min_lr_frac);
        float norm = 0;
        if (zero) {
            if (s_zero_step(&r, &opt, step + 1, n_global > 0, &norm) != 0) goto done;
        } else if (n_global > 0 && fw_model_step_adamw(r.m, &opt, step + 1, &norm) != 0) {
            fw_cli_fail("optimizer step %lld: %s", (long long)step + 1, fw_err_detail());
            goto done;
        }
        double secs = (double)(fw_mono_ns() - t0) / 1e9;
        double loss = n_global > 0 ? (double)loss_sum / (double)n_global : 0.0;
        last_loss = loss;
        uint64_t step_tokens = (uint64_t)bt * (uint64_t)K * (uint64_t)world;
        total_tokens += step_tokens;
        if (!isfinite(loss) || !isfinite(norm)) {
            fw_cli_fail("step %lld: the loss or gradient norm is not finite (loss %g, norm %g); "
                        "lower --lr or check the data",
                        (long long)step + 1, loss, (double)norm);
            goto done;
        }
        json_t *line = json_pack("{s:I, s:f, s:f, s:f, s:f, s:I, s:f}", "step",
                                 (json_int_t)(step + 1), "loss", loss, "lr", (double)opt.lr,
                                 "grad_norm", (double)norm, "tokens_per_s",
                                 secs > 0 ? (double)step_tokens / secs : 0.0, "tokens",
                                 (json_int_t)(uint64_t)n_global, "ms", secs * 1e3);
        if (n_global <= 0) json_object_set_new(line, "skipped", json_true());
        fw_cli_emit(line);

        st.step = step + 1;
        st.loader = fw_loader_get_state(r.loader);
        int last = st.step == steps;
        if (ckdir && ((ck_every > 0 && st.step % ck_every == 0) || last)) {
            s_ckpt_path(ckpath, sizeof ckpath, ckdir, st.step);
            if (rank == 0 && fw_file_mkdirs(ckdir, 0755) != 0) {
                fw_cli_fail("--checkpoint-dir %s: %s", ckdir, fw_err_detail());
                goto done;
            }
            fw_err_clear();
            if (zero) {
                if (s_save_sharded(&r, ckpath, &st) != 0) goto done;
            } else if (rank == 0 && fw_checkpoint_save(ckpath, r.m, &st) != 0) {
                fw_cli_fail("checkpoint %s: %s", ckpath, fw_err_detail());
                goto done;
            }
            if (rank == 0)
                fw_cli_emit(json_pack("{s:I, s:s}", "step", (json_int_t)st.step, "checkpoint",
                                      ckpath));
            /* Nobody runs ahead of a checkpoint that is not on disk yet: a
             * rank that fails right after can still resume from it. */
            if (world > 1 && fw_coll_barrier(r.coll) != 0) {
                fw_cli_fail("barrier after the checkpoint: %s", fw_err_detail());
                goto done;
            }
        }
        if (eval_data && rank == 0 && ((eval_every > 0 && st.step % eval_every == 0) || last) &&
            s_eval(&r, eval_data, B, T, st.step) != 0)
            goto done;
    }

    if (rank == 0) {
        fw_err_clear();
        if (fw_model_save_dir(r.m, out, mdir) != 0) {
            fw_cli_fail("writing the model to %s: %s", out, fw_err_detail());
            goto done;
        }
    }
    if (world > 1 && fw_coll_barrier(r.coll) != 0) {
        fw_cli_fail("final barrier: %s", fw_err_detail());
        goto done;
    }
    double secs = (double)(fw_mono_ns() - t_start) / 1e9;
    fw_cli_emit(json_pack("{s:b, s:I, s:f, s:I, s:f, s:s, s:i}", "done", 1, "steps",
                          (json_int_t)steps, "final_loss", last_loss, "tokens",
                          (json_int_t)total_tokens, "seconds", secs, "out", out, "rank", rank));
    rc = FW_CLI_EXIT_OK;
done:
    s_run_free(&r);
    return rc;
}

const fw_cli_verb fw_cli_verb_train = {
    "train",
    "train a model: JSON line per step, checkpoints, resume, data-parallel ranks",
    "Each step prints {\"step\", \"loss\", \"lr\", \"grad_norm\", \"tokens_per_s\", \"tokens\",\n"
    "\"ms\"} (loss: mean over the step's target tokens on all ranks); checkpoints print\n"
    "{\"step\", \"checkpoint\"}, evaluations {\"step\", \"eval_loss\", ...}, the end {\"done\": true,\n"
    "...}. --batch is per rank: W ranks with --batch B train like 1 rank with --batch W*B.\n"
    "Checkpoints are <checkpoint-dir>/ckpt-<step>.fwckpt; --resume auto picks the latest.",
    "flywheel-engine train --model model/ --data train.jsonl --out trained/ --steps 200 "
    "--batch 8 --seq 64 --lr 1e-3 --checkpoint-dir ckpt/ --checkpoint-every 50",
    s_train_opts,
    s_train_run};
