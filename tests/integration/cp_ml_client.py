"""The LLMOps client side (issue 6) against a live local cluster: the Python client's datasets,
finetune, eval, embed and models APIs, and the flywheelctl verbs built on the same records
(eval compare by model refs, model promote, job show, artifact get).

Cluster: 1 coordinator, 2 agents sharing the artifact store (agent.store_dir). Models are
tiny (2 layers, n_embd 64, vocab 512, n_ctx 64: `flywheel-engine init --config tiny` on a
512-token BPE trained here); data are ~90 short sentences of Moby-Dick. The tests run in
file order and build on each other: ingest -> register demo:1 (random init, champion) ->
fine-tune demo:2 -> promote (eval job run on demand; demo:2 promoted) -> promote demo:1 back
(refused, reusing the evals) -> compare by refs -> embed.

What each test proves is in its docstring."""

import json
import math
import os
import re
import subprocess

import pytest

from cp_harness import BUILD, MOBY, Cluster, ctl, etcd_range, execute_notebook

from flywheel import FlywheelError

ENGINE = os.path.join(BUILD, "agent", "engine", "flywheel-engine")


@pytest.fixture(scope="module")
def cl(request):
    c = Cluster(coordinators=1, agents=2,
                agent_opts={"agent.cpus": "2", "agent.memory_mb": "4096"})
    # The agents read the coordinators' store directly (the shared_fs backend).
    c.agent_opts["agent.store_dir"] = os.path.join(c.dir, "store")
    request.addfinalizer(c.down)
    try:
        c.up()
    except BaseException:
        c.dump_logs()
        raise
    return c


def _sentences(n, skip=0):
    """n distinct short sentences (40-200 chars) of Moby-Dick, after `skip` of them."""
    out, seen = [], set()
    with open(MOBY, encoding="utf-8") as f:
        for line in f:
            for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]):
                s = s.strip()
                if 40 <= len(s) <= 200 and s not in seen:
                    seen.add(s)
                    out.append(s)
                    if len(out) >= n + skip:
                        return out[skip:]
    return out[skip:]


@pytest.fixture(scope="module")
def state():
    """What the tests hand on to the next ones (they run in file order)."""
    return {}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A random-init tiny model directory with a 512-token BPE of its own."""
    d = tmp_path_factory.mktemp("base")
    corpus = d / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": s}) + "\n" for s in _sentences(300)))
    for argv in ([ENGINE, "tokenizer-train", "--vocab-size", "512", "--data", str(corpus),
                  "--out", str(d / "tok")],
                 [ENGINE, "init", "--config", "tiny", "--tokenizer", str(d / "tok"),
                  "--out", str(d / "m"), "--seed", "1"]):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
    return d / "m"


# ------------------------------------------------------------------ datasets


def test_datasets_add_reports_bad_lines_exactly(cl):
    """datasets.add uploads RAW bytes and the leader ingests them with fw_dataset: the report
    carries the exact accepted/rejected counts and the line numbers of the bad lines (blank
    lines count), duplicates are dropped, and the record is the canonical JSONL's."""
    c = cl.client()
    good = _sentences(200)
    lines = [json.dumps({"text": s}) for s in good]
    lines.insert(49, "{not json")              # line 50
    lines.insert(119, "")                      # line 120: blank, skipped, counted
    lines.insert(150, json.dumps({"txt": 1}))  # line 151: no shape
    lines.append(json.dumps({"text": good[0]}))  # a duplicate of line 1
    raw = ("\n".join(lines) + "\n").encode()
    rec = c.datasets.add(raw, name="mixed")
    rep = rec["report"]
    assert rec["name"] == "mixed" and rec["version"] == 1 and not rec["existing"]
    assert rep["records_in"] == 203 and rep["accepted"] == 201 and rep["rejected"] == 2, rep
    assert [r["line"] for r in rep["rejects"]] == [50, 151], rep["rejects"]
    assert "JSON" in rep["rejects"][0]["reason"]
    assert rep["duplicates"] == 1 and rep["records_out"] == 200 and rec["records"] == 200
    assert rec["lineage"]["ingest"]["raw"].startswith("sha256:")
    # The stored blob is the canonical JSONL: 200 lines, one record each, verified download.
    body = c.datasets.download("mixed@1").decode()
    assert body.count("\n") == 200 and json.loads(body.splitlines()[0]) == {"text": good[0]}
    assert c.datasets.get("mixed")["digest"] == rec["digest"] != rec["lineage"]["ingest"]["raw"]
    # The same content again (here as records) is the same version.
    again = c.datasets.add([{"text": s} for s in good], name="mixed")
    assert again["existing"] and again["version"] == 1


def test_datasets_add_refuses_too_many_bad_lines_and_registers_nothing(cl):
    """Over the 1% threshold (flywheelctl's default), or bad UTF-8: FW_EINVAL naming the
    lines, and no version is registered."""
    c = cl.client()
    raw = "".join(json.dumps({"text": s}) + "\n" if i % 10 != 5 else "oops\n"
                  for i, s in enumerate(_sentences(40))).encode()
    with pytest.raises(FlywheelError) as ei:
        c.datasets.add(raw, name="toobad")
    assert ei.value.name == "FW_EINVAL", ei.value
    assert "4 of 40" in ei.value.message, ei.value.message
    assert re.search(r"line 6: .*; line 16: .*; line 26: .*; line 36: ", ei.value.message)
    assert "nothing registered" in ei.value.message
    with pytest.raises(FlywheelError) as ei:
        c.datasets.add(b'{"text": "caf\xe9"}\n' * 3, name="toobad")
    assert ei.value.name == "FW_EINVAL" and "UTF-8" in ei.value.message, ei.value
    with pytest.raises(FlywheelError) as ei:
        c.datasets.get("toobad")
    assert ei.value.name == "FW_ENOTFOUND"
    assert "toobad" not in [d["name"] for d in c.datasets.list()]


def test_datasets_add_plain_text_file(cl, tmp_path):
    """A plain-text file is ingested as text (one record per paragraph), as flywheelctl does."""
    p = tmp_path / "notes.txt"
    p.write_text("First paragraph,\nstill the first.\n\n\nSecond   one.\n\nThird.\n")
    rec = cl.client().datasets.add(str(p), name="notes")
    assert rec["report"]["format"] == "text" and rec["records"] == 3, rec["report"]
    body = cl.client().datasets.download("notes").decode().splitlines()
    assert [json.loads(x)["text"] for x in body] == [
        "First paragraph,\nstill the first.", "Second one.", "Third."]


# ---------------------------------------------------------- fine-tune, job show


def test_finetune_and_job_show(cl, base_dir, state):
    """finetune() returns the final job record with the new version in result; `job show`
    prints the result, checkpoint and a short loss-curve table (first step ... last step),
    and -o json has the whole curve."""
    c = cl.client()
    sents = _sentences(90)
    c.datasets.add([{"text": s} for s in sents[:60]], name="train")
    c.datasets.add([{"text": s} for s in sents[60:]], name="holdout")
    p = cl.ctl("model", "register", str(base_dir), "--name", "demo")
    assert p.returncode == 0, p.stderr
    c.models.alias_set("demo@champion", 1)
    steps = 30
    job = c.finetune(base="demo@champion", dataset="train", world_size=1, timeout=120,
                     hparams={"steps": steps, "batch": 4, "seq": 64, "lr": 3e-3,
                              "warmup": 2}, checkpoint_every=10)
    res = job["result"]
    assert job["state"] == "SUCCEEDED" and res["model"] == "demo:2", job
    assert res["steps"] == steps and math.isfinite(res["final_loss"])
    state["finetune_job"] = job["id"]
    v2 = c.models.get("demo:2")
    assert v2["parent"] == "demo:1" and v2["job"] == job["id"]
    full = cl.ctl_json("job", "show", job["id"])
    curve = full["curve"]
    # Every step is on the curve: the agent batches the points its limiter holds back.
    assert [pt[0] for pt in curve] == list(range(1, steps + 1)), curve
    assert full["checkpoint"]["step"] in (20, 30) and full["checkpoint"]["digest"]
    p = cl.ctl("job", "show", job["id"])
    assert p.returncode == 0, p.stderr
    out = p.stdout
    print(out)  # shown with pytest -s, and on failure
    assert re.search(r"^result\.model\s+demo:2$", out, re.M), out
    assert re.search(r"^checkpoint: step \d+ sha256:", out, re.M), out
    m = re.search(r"^curve \((\d+) points\):\nSTEP\s+LOSS\n((?:.+\n)+)", out, re.M)
    assert m and int(m.group(1)) == len(curve), out
    rows = [r.split() for r in m.group(2).strip().splitlines()]
    assert 3 <= len(rows) <= 11, rows
    assert int(rows[0][0]) == curve[0][0] and int(rows[-1][0]) == steps
    assert [int(r[0]) for r in rows] == sorted({int(r[0]) for r in rows})
    assert "[[" not in out  # the raw curve is not dumped in table mode


def test_lineage_of_the_finetuned_model(cl, state):
    """client.lineage(ref) returns the graph dict: demo:2 comes from the fine-tune job, which
    read demo:1 (base) and train@1 (input)."""
    g = cl.client().lineage("demo:2", depth=2)
    job = "job:" + state["finetune_job"]
    assert g["root"] == "model:demo:2"
    ids = {n["id"] for n in g["nodes"]}
    assert {"model:demo:1", "dataset:train@1", job} <= ids, ids
    edges = {(e["from"], e["to"], e["rel"]) for e in g["edges"]}
    assert (job, "model:demo:2", "output") in edges, edges
    assert ("model:demo:1", job, "base") in edges and ("dataset:train@1", job, "input") in edges


# ------------------------------------------------------------------- promote


def test_promote_runs_missing_eval_then_promotes_the_better_model(cl, state):
    """`model promote` on a challenger without evals: the leader says an eval is missing, the
    CLI runs an eval job of champion + challenger on --dataset, asks again, and the trained
    demo:2 (much lower loss) becomes champion. The decision is recorded."""
    p = cl.ctl("model", "promote", "demo", "--challenger", "demo:2", "--metric", "loss",
               "--min-delta", "0.05", "--dataset", "holdout", "--timeout", "120s",
               timeout=180)
    print(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "evaluating demo@champion and demo:2 on holdout: job j-" in p.stdout, p.stdout
    assert re.search(r"^promoted: demo@champion -> demo:2", p.stdout, re.M), p.stdout
    assert "significant" in p.stdout
    champ = cl.client().models.get("demo@champion")
    assert champ["version"] == 2
    evals = {e["dataset"]: e for e in champ["evals"]}
    assert list(evals) == ["holdout@1"] and evals["holdout@1"]["records"] == 30
    p = cl.ctl("model", "show", "demo:2")
    print(p.stdout)
    assert re.search(r"^evals \(1\):\nDATASET\s+RECORDS\s+LOSS", p.stdout, re.M), p.stdout
    assert re.search(r"^holdout@1\s+30\s+\d", p.stdout, re.M), p.stdout


def test_promote_refuses_a_worse_challenger(cl):
    """demo:1 (random init) against champion demo:2: the evals exist already (no job), the
    loss is significantly WORSE, so nothing moves; the refusal is recorded with its numbers
    and the Python client returns the same kind of record."""
    jobs_before = len(cl.client().jobs())
    d = cl.ctl_json("model", "promote", "demo", "--challenger", "demo:1", "--metric", "loss",
                    "--dataset", "holdout")
    assert len(cl.client().jobs()) == jobs_before  # reused the evals
    assert d["promoted"] is False and d["champion"] == "demo:2" and d["challenger"] == "demo:1"
    assert d["challenger_value"] > d["champion_value"] and d["delta"] > 0, d
    assert d["ci"][0] > 0 and d["significant"] is True, d  # significantly worse
    assert cl.client().models.get("demo@champion")["version"] == 2
    r = cl.client().models.promote("demo", "demo:1", metric="loss", dataset="holdout")
    assert r["promoted"] is False and r["reason"] and r["champion"] == "demo:2"
    # Both decisions are recorded in the registry, in order.
    recs = etcd_range(cl, "/flywheel/models/demo/promotions/")
    got = [(v["challenger"], v["promoted"]) for _, v in sorted(recs.items())]
    assert got == [("demo:2", True), ("demo:1", False), ("demo:1", False)], got


# ------------------------------------------------------------ compare by refs


def test_eval_compare_by_refs_equals_compare_of_the_files(cl, tmp_path):
    """`eval compare demo:1 demo@champion` downloads both merged score blobs and compares
    them exactly as the same two files compared locally (artifact get fetches them)."""
    d = cl.ctl_json("eval", "compare", "demo:1", "demo@champion", "--seed", "3")
    assert d["dataset"] == "holdout@1" and d["examples"] == 30
    loss = [m for m in d["metrics"] if m["metric"] == "loss"][0]
    assert loss["better"] == "B" and loss["significant"] and loss["diff"] < 0
    files = []
    for ref in ("demo:1", "demo:2"):
        ev = cl.client().models.get(ref)["evals"][0]
        f = tmp_path / (ref.replace(":", "-") + ".jsonl")
        p = cl.ctl("artifact", "get", ev["scores"], str(f))
        assert p.returncode == 0 and "verified" in p.stdout, p.stderr
        files.append(str(f))
    local = cl.ctl_json("eval", "compare", files[0], files[1], "--seed", "3")
    assert local["metrics"] == d["metrics"]
    one = cl.ctl_json("eval", "compare", "demo:1", "demo:2", "--metric", "perplexity")
    assert [m["metric"] for m in one["metrics"]] == ["perplexity"]
    p = cl.ctl("eval", "compare", "demo:1", "demo:2", "--dataset", "train")
    assert p.returncode == 1 and "no eval on dataset train in common" in p.stderr, p.stderr
    assert '"kind":"eval"' in p.stderr
    # The Python comparison: same point values, a numpy interval that agrees in sign.
    py = cl.client().eval_compare("demo:1", "demo:2", metric="loss")
    assert py["dataset"] == "holdout@1"
    assert py["metrics"][0]["diff"] == pytest.approx(loss["diff"], rel=1e-9)
    assert py["metrics"][0]["better"] == "B"


def test_eval_rows_are_pandas_friendly(cl):
    """client.eval returns one flat dict per model with every metric and the scores digest."""
    rows = cl.client().eval(["demo:1", "demo@champion"], dataset="holdout", shards=2,
                            timeout=120)
    assert [r["model"] for r in rows] == ["demo:1", "demo:2"]
    for r in rows:
        assert r["dataset"] == "holdout@1" and r["records"] == 30
        assert r["perplexity"] == pytest.approx(math.exp(r["loss"]), rel=1e-9)
        assert r["scores"].startswith("sha256:")
    assert rows[1]["loss"] < rows[0]["loss"]


# -------------------------------------------------------------------- embed


def test_embed_returns_matrix_with_global_row_ids(cl):
    """embed() over 2 shards: one float32 matrix with a row per record, in dataset order, whose
    ids are the GLOBAL 1-based line numbers (1..30), rows of unit norm."""
    import numpy as np
    c = cl.client()
    ids, m = c.embed(model="demo@champion", dataset="holdout", shards=2, timeout=120)
    assert m.dtype == np.float32 and m.shape == (30, 64)
    assert ids.tolist() == list(range(1, 31))
    assert np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-4)
    job = c.last_job
    assert job["result"]["rows"] == 30 and job["result"]["dim"] == 64
    assert job["result"]["sentences_per_s"] > 0
    # The same matrix through flywheelctl artifact get.
    out = os.path.join(cl.tmp, "m.fwembed")
    p = cl.ctl("artifact", "get", job["result"]["matrix"], out)
    assert p.returncode == 0, p.stderr
    from flywheel import parse_fwembed
    ids2, m2 = parse_fwembed(open(out, "rb").read())
    assert ids2.tolist() == ids.tolist() and np.array_equal(m, m2)


def test_artifact_get_errors(cl, tmp_path):
    """artifact get: a malformed digest is a usage error; an unknown one FW_ENOTFOUND and no
    file left behind."""
    p = ctl("artifact", "get", "nope", str(tmp_path / "x"), env=cl.env)
    assert p.returncode == 64 and "not a digest" in p.stderr
    p = cl.ctl("artifact", "get", "sha256:" + "0" * 64, str(tmp_path / "x"))
    assert p.returncode == 1 and "FW_ENOTFOUND" in p.stderr, p.stderr
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "x.part")


# ------------------------------------------------------------------ notebook


def test_llmops_notebook_executes(cl, tmp_path):
    """python/examples/llmops.ipynb (data -> fine-tune -> eval -> paired compare -> promote)
    runs top to bottom with `jupyter nbconvert --execute` against this cluster, from the
    champion the tests above left (demo:2), and prints each stage's outcome."""
    doc = execute_notebook(cl, "llmops", tmp_path, cell_timeout=240, timeout=300)
    text = ""
    for cell in doc["cells"]:
        for o in cell.get("outputs", []):
            assert o.get("output_type") != "error", o
            text += "".join(o.get("text", ""))
    assert "base: demo@champion = demo:2" in text, text
    assert re.search(r"nb-train@1: 40 accepted, 0 rejected", text), text
    m = re.search(r"-> (demo:\d+)", text)
    assert m and m.group(1) != "demo:2", text
    assert re.search(r"^demo:2\s+loss \d", text, re.M) and "perplexity" in text, text
    assert re.search(r"^loss\s+A [\d.]+\s+B [\d.]+\s+B-A [+-]", text, re.M), text
    assert re.search(r"^(promoted|not promoted) - ", text, re.M), text
    assert "champion now: demo:" in text
