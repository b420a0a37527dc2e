"""Fine-tune, embed and eval jobs end to end on a live cluster (issue 6).

One cluster for the module (1 coordinator, 3 agents of 1 CPU each; scripts/cluster gives
agents agent.store_dir = the coordinators' D/store), a tiny GPT-2 (2 layers, n_embd 64,
4 heads, vocab 512, n_ctx 64) made by flywheel-engine from a BPE trained on short lines of
Moby-Dick and registered as tiny:1, and three datasets of those lines ("lines" to train on,
"holdout" to score and embed, "fresh" for the corruption test). The tests run in file order
and build on each other (the eval and promote tests use the model the fine-tune made):

  finetune        2 ranks: the job's result names tiny:2, registered with its lineage
                  (parent, dataset, job, hparams); the curve's steps increase and its loss
                  falls; `job logs` has the engine's step lines.
  resume          (ZeRO-1, hparams.zero: the checkpoint is assembled from both ranks'
                  optimizer shards) SIGKILL of the agent running rank 1 after a checkpoint: the gang is
                  placed again, resumes at the checkpoint's step (job "resumed", result
                  resumed_from_step) and its step lines continue at step+1 with the loss
                  of the curve's trend, not the untrained loss.
  eval            2 models x 2 shards: merged metrics equal one local `flywheel-engine eval`
                  of the same dataset blob; eval records in `model show`; `eval compare`.
  embed           2 shards: the merged FWEMBED has row ids 1..N and the vectors of one
                  local `flywheel-engine embed` of the whole dataset.
  promote         the decision is recorded under P/models/tiny/promotions/ and moves
                  champion iff it says promoted; a huge --min-delta is recorded, no move.
  bad inputs      unknown base, unknown/empty dataset, world_size over the cluster: refused
                  at submit naming the field, and no job record appears in etcd.
  corrupt blob    a flipped byte in a dataset blob no agent has cached: the eval's task
                  fails with an error naming the digest."""

import json
import math
import os
import re
import signal
import time

import pytest

from flywheel.client import FlywheelError

from cp_harness import cluster_fixture, wait_for
import ml_fixtures as mf

STEP_RE = re.compile(r'^(?:\[[^\]]*\] )?(\{"step":\s*(\d+),\s*"loss".*\})\s*$')


@pytest.fixture(scope="module")
def cl(request):
    return cluster_fixture(request, coordinators=1, agents=3,
                           agent_opts={"agent.cpus": "1", "agent.memory_mb": "2048"})


@pytest.fixture(scope="module")
def world(cl, tmp_path_factory):
    """Tokenizer, tiny:1, and the datasets, registered; a dict the tests share."""
    d = tmp_path_factory.mktemp("ml")
    texts = mf.moby_lines(700)
    assert len(texts) == 700
    train, hold, fresh = texts[:400], texts[400:600], texts[600:]
    w = {"dir": d}
    w["train_file"] = mf.write_jsonl(d / "lines.jsonl", train)
    w["hold_file"] = mf.write_jsonl(d / "holdout.jsonl", hold)
    w["fresh_file"] = mf.write_jsonl(d / "fresh.jsonl", fresh)
    tok = mf.make_tokenizer(str(d / "tok"), w["train_file"])
    w["m1"] = str(d / "m1")
    mf.make_model(w["m1"], tok, seed=1)
    rec = mf.register(cl, w["m1"], "tiny")
    assert rec["version"] == 1
    w["lines"] = mf.add_dataset(cl, w["train_file"], "lines")
    w["holdout"] = mf.add_dataset(cl, w["hold_file"], "holdout")
    w["fresh"] = mf.add_dataset(cl, w["fresh_file"], "fresh")
    assert w["lines"]["records"] == 400 and w["holdout"]["records"] == 200
    cl.wait_agents(3)
    return w


def _submit(cl, spec):
    return cl.submit(spec)


def _show(cl, jid):
    return cl.ctl_json("job", "show", jid)


def _wait(cl, jid, timeout):
    doc = cl.wait_job(jid, timeout)
    if doc["state"] != "SUCCEEDED":
        cl.dump_logs(tail=30)
        raise AssertionError("job %s %s: %s\ntasks: %s" % (
            jid, doc["state"], json.dumps(doc)[:2000], json.dumps(cl.tasks(jid))[:2000]))
    return _show(cl, jid)


def _step_lines(text):
    """[(step, loss)] of the engine's step lines in `job logs` output, in order."""
    out = []
    for line in text.splitlines():
        m = STEP_RE.match(line.strip())
        if m:
            obj = json.loads(m.group(1))
            out.append((int(obj["step"]), float(obj["loss"])))
    return out


# ------------------------------------------------------------------ 1. finetune


def test_finetune_two_ranks(cl, world):
    hp = {"steps": 40, "batch": 4, "seq": 64, "lr": 3e-3, "warmup": 2, "seed": 7}
    jid = _submit(cl, {"kind": "finetune", "world_size": 2, "base": "tiny:1",
                       "dataset": "lines", "hparams": hp, "checkpoint_every": 10,
                       "threads": 1, "resources": {"cpus": 1}, "max_retries": 0})
    doc = _wait(cl, jid, 90)
    res = doc["result"]
    assert res["model"] == "tiny:2", res
    assert res["digest"].startswith("sha256:") and res["steps"] == 40, res
    assert res.get("resumed_from_step", 0) == 0, res
    tasks = cl.tasks(jid)
    assert len(tasks) == 2 and len({t["agent"] for t in tasks}) == 2, tasks

    # The new version and its lineage.
    v = cl.ctl_json("model", "show", "tiny:2")
    assert v["version"] == 2 and v["parent"] == "tiny:1", v
    assert v["datasets"] == ["lines@1"] and v["job"] == jid, v
    assert v["digest"] == res["digest"]
    for k, val in hp.items():
        assert v["hparams"].get(k) == val, (k, v["hparams"])

    # The curve: rank 0's steps, increasing, loss falling.
    curve = doc["curve"]
    steps = [s for s, _ in curve]
    assert len(curve) >= 2 and steps == sorted(set(steps)), curve
    assert steps[0] >= 1 and steps[-1] <= 40, curve
    assert curve[-1][1] < curve[0][1] - 0.2, "loss did not fall: %r" % curve
    assert abs(res["final_loss"] - curve[-1][1]) < 0.5 or steps[-1] < 40

    # job logs: the engine's step lines of both ranks, every step, same global loss.
    p = cl.ctl("job", "logs", jid, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = _step_lines(p.stdout)
    by_step = {}
    for s, loss in lines:
        by_step.setdefault(s, []).append(loss)
    assert sorted(by_step) == list(range(1, 41)), sorted(by_step)
    assert all(len(v) == 2 and abs(v[0] - v[1]) < 1e-6 for v in by_step.values()), by_step
    world["ft_job"] = jid
    world["m2_digest"] = res["digest"]


# ------------------------------------------------------------------ 2. resume


def test_resume_after_agent_sigkill(cl, world):
    steps = 1200
    jid = _submit(cl, {"kind": "finetune", "world_size": 2, "base": "tiny:1",
                       "dataset": "lines", "output": "resumed",
                       "hparams": {"steps": steps, "batch": 4, "seq": 64, "lr": 3e-3,
                                   "seed": 3, "zero": True},
                       "checkpoint_every": 40, "threads": 1, "resources": {"cpus": 1},
                       "max_retries": 2})

    def ck():
        rec = mf.job_record(cl, jid)
        c = (rec or {}).get("checkpoint")
        if rec and rec.get("state") in ("FAILED", "CANCELLED", "SUCCEEDED"):
            raise AssertionError("job ended before a checkpoint: %r" % rec)
        return c if c and c["step"] >= 120 else None
    ckpt = wait_for(ck, 60, "a checkpoint at step >= 120", interval=0.2)
    rank1 = [t for t in cl.tasks(jid) if int(t.get("rank", t["index"])) == 1][0]
    victim = rank1["agent"]
    before = mf.job_record(cl, jid)
    pre_curve = before.get("curve") or []
    cl.kill(victim, signal.SIGKILL)
    t_kill = time.monotonic()
    try:
        doc = _wait(cl, jid, 120)
    finally:
        if not cl.alive(victim):
            cl.start(victim)
    took = time.monotonic() - t_kill
    rec = mf.job_record(cl, jid)
    # The last checkpoint before the kill may be newer than the one we saw.
    resumed = doc.get("resumed") or rec.get("resumed")
    assert resumed and len(resumed) == 1, (resumed, doc)
    k = resumed[0]["step"]
    assert resumed[0]["attempt"] == 2 and k >= ckpt["step"], resumed
    assert k % 40 == 0 and k < steps
    res = doc["result"]
    assert res["resumed_from_step"] == k and res["steps"] == steps, res
    assert res["model"] == "resumed:1", res
    tasks = cl.tasks(jid)
    assert all(int(t["attempt"]) == 2 for t in tasks), tasks
    assert victim not in {t["agent"] for t in tasks}, (victim, tasks)

    # The second attempt's step lines (rank 0's log restarts with the new attempt)
    # begin at k+1, not 1, and run to the end.
    p = cl.ctl("job", "logs", "%s.0" % jid, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = _step_lines(p.stdout)
    assert "ZeRO-1: rank 0 keeps AdamW state" in p.stdout + p.stderr, p.stdout[-2000:]
    second = [s for s, _ in lines]
    assert second and second[0] == k + 1, (k, second[:5])
    assert second == list(range(k + 1, steps + 1)), (second[:3], second[-3:])
    first_loss = lines[0][1]
    # The loss continues the pre-kill trend: near the curve's loss around step k, far
    # below the untrained loss (the curve's first point).
    near = [l for s, l in pre_curve if k - 40 <= s <= k + 40]
    assert pre_curve and near, (k, pre_curve[-5:])
    initial = pre_curve[0][1]
    trend = sum(near) / len(near)
    assert abs(first_loss - trend) < 0.35 * (initial - trend), (first_loss, trend, initial)
    # The curve kept in the job never goes back.
    csteps = [s for s, _ in doc["curve"]]
    assert csteps == sorted(set(csteps)) and csteps[-1] <= steps
    print("resume: killed %s at checkpoint >= %d; resumed %r; first step %d loss %.4f "
          "(pre-kill trend %.4f, untrained %.4f); %.1f s from kill to SUCCEEDED"
          % (victim, ckpt["step"], resumed, second[0], first_loss, trend, initial, took))


# ------------------------------------------------------------------ 3. eval


def test_eval_two_models_two_shards(cl, world, tmp_path):
    if "ft_job" not in world:
        pytest.skip("needs tiny:2 from test_finetune_two_ranks")
    jid = _submit(cl, {"kind": "eval", "models": ["tiny:1", "tiny:2"], "dataset": "holdout",
                       "shards": 2, "threads": 1, "resources": {"cpus": 1},
                       "max_retries": 0})
    doc = _wait(cl, jid, 90)
    res = doc["result"]
    assert res["dataset"] == "holdout@1", res
    got = {r["model"]: r for r in res["results"]}
    assert sorted(got) == ["tiny:1", "tiny:2"], res
    assert len(cl.tasks(jid)) == 4

    # Local reference: the same dataset blob, the same model directories.
    data = tmp_path / "holdout.canonical.jsonl"
    data.write_bytes(mf.read_blob(cl, world["holdout"]["digest"]))
    m2 = tmp_path / "m2"
    p = cl.ctl("model", "download", "tiny:2", str(m2))
    assert p.returncode == 0, p.stderr
    lines = data.read_bytes().splitlines(keepends=True)
    assert len(lines) == 200
    for ref, mdir in (("tiny:1", world["m1"]), ("tiny:2", str(m2))):
        # One local run on each shard's records ([floor(s*N/S), floor((s+1)*N/S)), the
        # contract's split): the engine's per-record float32 scores depend on which
        # records share a batch, so this is the run the merge must reproduce exactly.
        rows = []
        for s in range(2):
            part = tmp_path / ("shard%d.jsonl" % s)
            part.write_bytes(b"".join(lines[s * 200 // 2:(s + 1) * 200 // 2]))
            pe = tmp_path / ("%s.%d.scores.jsonl" % (ref.replace(":", "-"), s))
            mf.engine("eval", "--model", mdir, "--data", part, "--threads", 1,
                      "--per-example", pe)
            rows += [json.loads(x) for x in pe.read_text().splitlines() if x.strip()]
        m = got[ref]["metrics"]
        assert got[ref]["records"] == 200, got[ref]
        # The merged per-example file: one line per record, in dataset order, with the
        # shard runs' scores exactly.
        merged = [json.loads(x) for x in
                  mf.read_blob(cl, got[ref]["scores"]).decode().splitlines() if x.strip()]
        assert [r["tokens"] for r in merged] == [r["tokens"] for r in rows]
        assert [r["logprob"] for r in merged] == [r["logprob"] for r in rows], ref
        # Metrics: the exact token-weighted merge of those scores (sum of logprobs).
        loss = -math.fsum(r["logprob"] for r in rows) / sum(r["tokens"] for r in rows)
        assert m["loss"] == pytest.approx(loss, rel=1e-12, abs=0), (ref, m, loss)
        assert m["perplexity"] == pytest.approx(math.exp(loss), rel=1e-12, abs=0)
        # And one unsharded `flywheel-engine eval` of the whole file agrees to float32
        # batch-composition noise (per record ~1e-8 relative; see the report).
        _, objs = mf.engine("eval", "--model", mdir, "--data", data, "--threads", 1)
        local = objs[-1]
        assert local["records"] == 200
        for key in ("loss", "perplexity"):
            assert m[key] == pytest.approx(local[key], rel=1e-7, abs=0), (ref, key, m, local)
    assert got["tiny:2"]["metrics"]["loss"] < got["tiny:1"]["metrics"]["loss"]

    # The eval records, under the model versions.
    for ref, ver in (("tiny:1", 1), ("tiny:2", 2)):
        shown = cl.ctl_json("model", "show", ref)
        evs = [e for e in shown.get("evals", []) if e["dataset"] == "holdout@1"]
        assert len(evs) == 1 and evs[0]["job"] == jid, shown.get("evals")
        assert evs[0]["metrics"]["loss"] == got[ref]["metrics"]["loss"]
        key = "%s/models/tiny/evals/%08d/holdout@1" % (mf.PREFIX, ver)
        assert key in mf.etcd_range(cl, "%s/models/tiny/evals/" % mf.PREFIX)

    # eval compare by refs: paired comparison of the two recorded evals.
    p = cl.ctl("-o", "json", "eval", "compare", "tiny:1", "tiny:2", "--dataset", "holdout",
               timeout=60)
    assert p.returncode == 0, p.stderr
    cmp_doc = json.loads(p.stdout)
    text = json.dumps(cmp_doc)
    assert "loss" in text and "ci" in text, cmp_doc
    world["eval_job"] = jid
    world["eval"] = got


# ------------------------------------------------------------------ 4. embed


def test_embed_two_shards_matches_local(cl, world, tmp_path):
    jid = _submit(cl, {"kind": "embed", "model": "tiny:1", "dataset": "holdout", "shards": 2,
                       "threads": 1, "resources": {"cpus": 1}, "max_retries": 0})
    doc = _wait(cl, jid, 90)
    res = doc["result"]
    assert res["rows"] == 200 and res["dim"] == 64, res
    assert res.get("sentences_per_s", 0) > 0, res
    # Download through the submission socket, and compare with the store's copy.
    out = tmp_path / "matrix.fwembed"
    p = cl.ctl("artifact", "get", res["matrix"], str(out), timeout=60)
    assert p.returncode == 0, p.stderr
    buf = out.read_bytes()
    assert buf == mf.read_blob(cl, res["matrix"])
    ids, rows = mf.parse_fwembed(buf)
    assert ids == list(range(1, 201)), ids[:5] + ids[-5:]

    data = tmp_path / "holdout.canonical.jsonl"
    data.write_bytes(mf.read_blob(cl, world["holdout"]["digest"]))
    local = tmp_path / "local.fwembed"
    mf.engine("embed", "--model", world["m1"], "--data", data, "--out", local, "--threads", 1,
              "--truncate")
    lids, lrows = mf.parse_fwembed(local.read_bytes())
    assert lids == ids
    assert mf.max_abs_diff(rows, lrows) < 1e-5


# ------------------------------------------------------------------ 5. promote


def _promotions(cl):
    return mf.etcd_range(cl, "%s/models/tiny/promotions/" % mf.PREFIX)


def test_promote_records_decision(cl, world):
    if "eval" not in world:
        pytest.skip("needs the eval of tiny:1 and tiny:2 (test_eval_two_models_two_shards)")
    assert cl.ctl("model", "alias", "set", "tiny@champion", "1").returncode == 0
    p = cl.ctl("-o", "json", "model", "promote", "tiny", "--challenger", "tiny:2",
               "--metric", "loss", "--min-delta", "0.0", "--dataset", "holdout", timeout=120)
    assert p.returncode in (0, 1), p.stderr
    dec = json.loads(p.stdout)
    dec = dec.get("promotion", dec)
    proms = _promotions(cl)
    assert len(proms) == 1, proms
    (key, rec), = proms.items()
    assert key.endswith("/00000001"), key
    assert rec["challenger"] == "tiny:2" and rec["champion"] == "tiny:1", rec
    assert rec["metric"] == "loss" and rec["dataset"] == "holdout@1", rec
    assert rec["promoted"] == dec["promoted"]
    assert rec["challenger_value"] == pytest.approx(world["eval"]["tiny:2"]["metrics"]["loss"])
    assert rec["champion_value"] == pytest.approx(world["eval"]["tiny:1"]["metrics"]["loss"])
    lo, hi = rec["ci"]
    assert lo <= hi
    champ = cl.ctl_json("model", "show", "tiny@champion")["version"]
    assert champ == (2 if rec["promoted"] else 1), (rec, champ)
    # 40 steps at lr 3e-3 lower the holdout loss by far more than the noise.
    assert rec["promoted"] is True and rec["significant"] is True, rec

    # The same better challenger against tiny:1 again, but asking for an improvement of
    # 1000 nats: significant, yet not promoted; recorded; champion stays.
    assert cl.ctl("model", "alias", "set", "tiny@champion", "1").returncode == 0
    p = cl.ctl("-o", "json", "model", "promote", "tiny", "--challenger", "tiny:2",
               "--metric", "loss", "--min-delta", "1000", "--dataset", "holdout", timeout=120)
    assert p.returncode in (0, 1), p.stderr
    proms = _promotions(cl)
    assert len(proms) == 2, proms
    rec2 = proms["%s/models/tiny/promotions/00000002" % mf.PREFIX]
    assert rec2["promoted"] is False and rec2["min_delta"] == 1000, rec2
    assert rec2["significant"] is True and rec2["champion"] == "tiny:1", rec2
    assert "min_delta" in rec2["reason"], rec2
    assert cl.ctl_json("model", "show", "tiny@champion")["version"] == 1


# ------------------------------------------------------------------ 6. bad inputs


def test_bad_inputs_refused_nothing_created(cl, world, tmp_path):
    before = mf.job_keys(cl)
    hp = {"steps": 5, "batch": 2, "seq": 32}
    cases = [
        ({"kind": "finetune", "base": "nosuch:1", "dataset": "lines", "hparams": hp},
         "spec.base"),
        ({"kind": "finetune", "base": "tiny@nosuchalias", "dataset": "lines", "hparams": hp},
         "spec.base"),
        ({"kind": "finetune", "base": "tiny:1", "dataset": "nosuchdata", "hparams": hp},
         "spec.dataset"),
        ({"kind": "finetune", "base": "tiny:1", "dataset": "lines@9", "hparams": hp},
         "spec.dataset"),
        ({"kind": "finetune", "base": "tiny:1", "dataset": "lines", "hparams": hp,
          "world_size": 4, "resources": {"cpus": 1}}, "spec.world_size"),
        ({"kind": "eval", "models": ["tiny:1", "nosuch"], "dataset": "holdout"},
         "spec.models[1]"),
        ({"kind": "embed", "model": "tiny:1", "dataset": "nosuchdata"}, "spec.dataset"),
    ]
    for spec, field in cases:
        f = tmp_path / "spec.json"
        f.write_text(json.dumps(spec))
        p = cl.ctl("job", "submit", str(f))
        assert p.returncode != 0, (spec, p.stdout)
        assert field in p.stderr, (spec, field, p.stderr)
    # An empty dataset: `dataset add` refuses to register one at all...
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    p = cl.ctl("dataset", "add", str(empty), "--name", "empty")
    assert p.returncode != 0 and "no record left" in p.stderr, (p.stdout, p.stderr)
    assert cl.ctl("dataset", "show", "empty").returncode != 0
    # ...and neither does the leader for a raw DATASET_REGISTER: it counts the blob's
    # records itself, so an empty blob, or a report that miscounts, registers nothing.
    c = cl.client()
    digest = c.upload(b"")
    with pytest.raises(FlywheelError) as e:
        c.call("DATASET_REGISTER", name="empty0", digest=digest,
               report=json.dumps({"records_in": 0, "accepted": 0, "rejected": 0,
                                  "records_out": 0}))
    assert "holds no records; nothing registered" in str(e.value)
    two = c.upload(b'{"text": "a"}\n{"text": "b"}\n')
    with pytest.raises(FlywheelError) as e:
        c.call("DATASET_REGISTER", name="empty0", digest=two,
               report=json.dumps({"records_out": 3}))
    assert "records_out 3 but the blob holds 2 records" in str(e.value)
    assert cl.ctl("dataset", "show", "empty0").returncode != 0
    # So a job on it fails as an unknown dataset, at submit.
    for spec in ({"kind": "finetune", "base": "tiny:1", "dataset": "empty0", "hparams": hp},
                 {"kind": "embed", "model": "tiny:1", "dataset": "empty0"},
                 {"kind": "eval", "models": ["tiny:1"], "dataset": "empty0"}):
        f = tmp_path / "spec.json"
        f.write_text(json.dumps(spec))
        p = cl.ctl("job", "submit", str(f))
        assert p.returncode != 0 and "spec.dataset: dataset empty0" in p.stderr, (spec,
                                                                                 p.stderr)
    assert mf.job_keys(cl) == before, "a refused submit left a job record"


# ------------------------------------------------------------------ 7. corrupt blob


def test_corrupt_dataset_blob_fails_naming_digest(cl, world):
    digest = world["fresh"]["digest"]
    path = mf.blob_path(cl, digest)
    with open(path, "rb") as f:
        orig = f.read()
    flipped = bytearray(orig)
    flipped[len(flipped) // 2] ^= 0x01
    mode = os.stat(path).st_mode
    os.chmod(path, mode | 0o200)
    try:
        with open(path, "wb") as f:
            f.write(bytes(flipped))
        jid = _submit(cl, {"kind": "eval", "models": ["tiny:1"], "dataset": "fresh",
                           "shards": 1, "threads": 1, "resources": {"cpus": 1},
                           "max_retries": 0})
        doc = cl.wait_job(jid, 60)
        assert doc["state"] == "FAILED", doc
        # The agent reads the shared store itself and verifies the digest: the task
        # fails at once (no retry of bad bytes), naming the digest, the file and why.
        task = cl.tasks(jid)[0]
        err = task.get("error") or ""
        assert err.startswith("spec.resolved.dataset %s: FW_ECORRUPT" % digest), task
        assert "is corrupt" in err and mf.blob_path(cl, digest) in err, err
    finally:
        with open(path, "wb") as f:
            f.write(orig)
        os.chmod(path, mode)
