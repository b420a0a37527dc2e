"""`flywheelctl lineage show` on a live cluster (issue 6, docs/lineage.md).

The leader rebuilds the lineage graph from the registry's records on each LINEAGE_GET and
returns the part within --depth hops of the root, upward (ancestors) and downward
(descendants). This module registers a small registry through the real commands:

    corp@1 --split--> corp-train@1, corp-eval@1        side@1 (unrelated dataset)
    m:1  (datasets corp-train@1, job = a real noop job)
    m:2  (parent m:1, datasets corp-train@1 + side@1)   <- m@champion
    m:3  (parent m@champion = m:2)
    x:1  (datasets corp-eval@1)

and checks exact node and edge sets: a model's ancestors (parent chain + datasets + the
split source) and only its own descendants; a dataset's descendants (split sides, the models
trained on them, transitively) without the siblings an up-then-down walk would add; depth
limiting; digests as refs (full, prefixed, artifact:); a job ref; unknown and malformed refs;
the text tree and the Graphviz output (every edge present; `dot -Tsvg` when installed).

Fine-tune / embed / eval jobs are not exercised here (their records come from the job
executors; inserting fake job records is not allowed): the end-to-end tests cover them."""

import os
import re
import shutil
import subprocess

import pytest

from cp_harness import TOKENIZER, cluster_fixture

BINDIR = os.environ.get("FW_BINARY_DIR", "build")
ENGINE = os.path.join(BINDIR, "agent", "engine", "flywheel-engine")


@pytest.fixture(scope="module")
def cl(request):
    return cluster_fixture(request, coordinators=1, agents=1)


@pytest.fixture(scope="module")
def reg(cl, tmp_path_factory):
    """The registry above; returns {"job": id, "digest": {node id: digest}}."""
    tmp = tmp_path_factory.mktemp("lineage")
    digest = {}
    corp = tmp / "corp.jsonl"
    corp.write_text("".join('{"text": "record number %d of the corpus"}\n' % i
                            for i in range(40)))
    side = tmp / "side.jsonl"
    side.write_text('{"text": "alpha"}\n{"text": "beta"}\n')
    for path, name in ((corp, "corp"), (side, "side")):
        d = cl.ctl_json("dataset", "add", str(path), "--name", name)["dataset"]
        digest["dataset:%s@1" % name] = d["digest"]
    sp = cl.ctl_json("dataset", "split", "corp", "--holdout", "0.25", "--seed", "1")
    for s in ("train", "eval"):
        assert sp[s]["parents"] == ["corp@1"] and sp[s]["version"] == 1
        digest["dataset:corp-%s@1" % s] = sp[s]["digest"]

    dirs = []
    for seed in (1, 2, 3, 4):
        d = tmp / ("m%d" % seed)
        p = subprocess.run([ENGINE, "init", "--config", "tiny", "--tokenizer", TOKENIZER,
                            "--out", str(d), "--seed", str(seed)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        dirs.append(d)

    # A real job for m:1 to name (a noop: no ML job kinds are needed for this link).
    jid = cl.submit({"kind": "noop", "shards": 1})
    cl.wait_job(jid, 30)

    def register(d, name, *flags):
        m = cl.ctl_json("model", "register", str(d), "--name", name, *flags)["model"]
        digest["model:%s:%d" % (name, m["version"])] = m["digest"]
        return m

    assert register(dirs[0], "m", "--dataset", "corp-train@1", "--job", jid)["version"] == 1
    assert register(dirs[1], "m", "--parent", "m:1", "--dataset", "corp-train@1",
                    "--dataset", "side@1")["version"] == 2
    assert cl.ctl("model", "alias", "set", "m@champion", "2").returncode == 0
    m3 = register(dirs[2], "m", "--parent", "m@champion")
    assert m3["version"] == 3 and m3["parent"] == "m:2"
    register(dirs[3], "x", "--dataset", "corp-eval@1")
    return {"job": jid, "digest": digest}


def art(reg, node):
    return "artifact:" + reg["digest"][node]


def graph(cl, ref, *flags):
    doc = cl.ctl_json("lineage", "show", ref, *flags)
    ids = [n["id"] for n in doc["nodes"]]
    assert len(ids) == len(set(ids)), ids
    assert ids[0] == doc["root"]
    for n in doc["nodes"]:
        assert n["type"] == n["id"].split(":", 1)[0] and n["label"] and "attrs" in n
    edges = {(e["from"], e["to"], e["rel"]) for e in doc["edges"]}
    assert len(edges) == len(doc["edges"])
    for f, t, _ in edges:  # every edge joins two returned nodes
        assert f in ids and t in ids, (f, t)
    return doc, set(ids), edges


def test_model_ancestors_parent_chain_and_datasets(cl, reg):
    doc, nodes, edges = graph(cl, "m:3")
    assert doc["root"] == "model:m:3" and doc["depth"] == 16
    assert nodes == {"model:m:3", "model:m:2", "model:m:1", "dataset:corp-train@1",
                     "dataset:side@1", "dataset:corp@1", "job:" + reg["job"],
                     art(reg, "model:m:3")}
    assert edges == {
        ("model:m:2", "model:m:3", "parent"),
        ("model:m:1", "model:m:2", "parent"),
        ("dataset:corp-train@1", "model:m:2", "input"),
        ("dataset:side@1", "model:m:2", "input"),
        ("dataset:corp-train@1", "model:m:1", "input"),
        ("job:" + reg["job"], "model:m:1", "output"),
        ("dataset:corp@1", "dataset:corp-train@1", "derived"),
        ("model:m:3", art(reg, "model:m:3"), "content"),
    }
    # Order: root, then ancestors by distance, then descendants.
    ids = [n["id"] for n in doc["nodes"]]
    assert ids[1] == "model:m:2" and ids[-1] == art(reg, "model:m:3")
    attrs = {n["id"]: n["attrs"] for n in doc["nodes"]}
    assert attrs["model:m:2"]["aliases"] == ["champion"]
    assert attrs["model:m:1"]["job"] == reg["job"]
    assert attrs["model:m:3"]["digest"] == reg["digest"]["model:m:3"]
    assert attrs["model:m:3"]["created_by"] == "admin" and attrs["model:m:3"]["created_at"] > 0
    assert attrs["dataset:corp-train@1"]["split"]["side"] == "train"
    assert attrs["dataset:corp@1"]["records"] == 40
    job = attrs["job:" + reg["job"]]
    assert (job["kind"], job["state"]) == ("noop", "SUCCEEDED") and "missing" not in job
    # Other spellings of the same root give the same graph.
    assert graph(cl, "model:m:3")[1:] == (nodes, edges)
    assert graph(cl, "m")[1:] == (nodes, edges)                  # latest
    assert graph(cl, "m@champion")[0]["root"] == "model:m:2"


def test_dataset_descendants_without_siblings(cl, reg):
    doc, nodes, edges = graph(cl, "dataset:corp")
    assert doc["root"] == "dataset:corp@1"
    want = {"dataset:corp@1", "dataset:corp-train@1", "dataset:corp-eval@1", "model:m:1",
            "model:m:2", "model:m:3", "model:x:1"}
    want |= {art(reg, n) for n in want}
    assert nodes == want
    # side@1 is a parent of m:2 and the job a parent of m:1: up-then-down, so not here.
    assert "dataset:side@1" not in nodes and "job:" + reg["job"] not in nodes
    assert edges == {
        ("dataset:corp@1", "dataset:corp-train@1", "derived"),
        ("dataset:corp@1", "dataset:corp-eval@1", "derived"),
        ("dataset:corp-train@1", "model:m:1", "input"),
        ("dataset:corp-train@1", "model:m:2", "input"),
        ("dataset:corp-eval@1", "model:x:1", "input"),
        ("model:m:1", "model:m:2", "parent"),
        ("model:m:2", "model:m:3", "parent"),
    } | {(n, art(reg, n), "content") for n in want if not n.startswith("artifact:")}
    assert graph(cl, "dataset:corp@1")[1:] == (nodes, edges)


def test_depth_limits_each_direction(cl, reg):
    _, nodes, edges = graph(cl, "dataset:corp@1", "--depth", "1")
    assert nodes == {"dataset:corp@1", "dataset:corp-train@1", "dataset:corp-eval@1",
                     art(reg, "dataset:corp@1")}
    assert len(edges) == 3
    _, nodes, _ = graph(cl, "dataset:corp@1", "--depth", "2")
    assert nodes == {"dataset:corp@1", "dataset:corp-train@1", "dataset:corp-eval@1",
                     "model:m:1", "model:m:2", "model:x:1", art(reg, "dataset:corp@1"),
                     art(reg, "dataset:corp-train@1"), art(reg, "dataset:corp-eval@1")}
    # m:3 is 3 hops down (corp -> corp-train -> m:2 -> m:3).
    assert "model:m:3" in graph(cl, "dataset:corp@1", "--depth", "3")[1]
    # Upward: m:3 at depth 1 sees m:2 only; depth 0 is the root alone.
    _, nodes, edges = graph(cl, "m:3", "--depth", "1")
    assert nodes == {"model:m:3", "model:m:2", art(reg, "model:m:3")}
    assert edges == {("model:m:2", "model:m:3", "parent"),
                     ("model:m:3", art(reg, "model:m:3"), "content")}
    _, nodes, edges = graph(cl, "m:2", "--depth", "0")
    assert nodes == {"model:m:2"} and edges == set()


def test_artifact_digest_as_ref(cl, reg):
    d = reg["digest"]["model:m:2"]
    doc, nodes, edges = graph(cl, d, "--depth", "2")
    assert doc["root"] == "artifact:" + d
    root = doc["nodes"][0]
    assert root["type"] == "artifact" and root["attrs"]["kind"] == "model"
    assert root["attrs"]["digest"] == d and root["label"] == d[:19]
    assert nodes == {"artifact:" + d, "model:m:2", "model:m:1", "dataset:corp-train@1",
                     "dataset:side@1"}
    assert ("model:m:2", "artifact:" + d, "content") in edges
    assert graph(cl, "artifact:" + d, "--depth", "2")[1:] == (nodes, edges)
    assert graph(cl, d[:7 + 12], "--depth", "2")[1:] == (nodes, edges)  # a unique prefix
    # A dataset blob: its dataset and that dataset's ancestry.
    dd = reg["digest"]["dataset:corp-eval@1"]
    _, nodes, _ = graph(cl, dd)
    assert nodes == {"artifact:" + dd, "dataset:corp-eval@1", "dataset:corp@1"}


def test_job_ref(cl, reg):
    jid = reg["job"]
    doc, nodes, edges = graph(cl, "job:" + jid)
    assert doc["root"] == "job:" + jid
    assert nodes == {"job:" + jid, "model:m:1", "model:m:2", "model:m:3",
                     art(reg, "model:m:1"), art(reg, "model:m:2"), art(reg, "model:m:3")}
    assert ("job:" + jid, "model:m:1", "output") in edges
    assert graph(cl, jid)[1:] == (nodes, edges)  # the bare j-NNNNNN form


@pytest.mark.parametrize("ref,code,text", [
    ("nope:1", "FW_ENOTFOUND", "nope"),
    ("m:9", "FW_ENOTFOUND", "m:9: not found"),
    ("m@nosuch", "FW_ENOTFOUND", "no alias 'nosuch'"),
    ("dataset:nope", "FW_ENOTFOUND", "dataset nope: not found"),
    ("dataset:corp@7", "FW_ENOTFOUND", "corp@7: not found"),
    ("job:j-999999", "FW_ENOTFOUND", "job j-999999: not found"),
    ("sha256:" + "0" * 64, "FW_ENOTFOUND", "no model, dataset"),
    ("sha256:xyz", "FW_EINVAL", "hex"),
    ("artifact:md5:00", "FW_EINVAL", "artifact:sha256:"),
    ("model:", "FW_EINVAL", "model reference"),
    ("m:0", "FW_EINVAL", "model reference"),
    ("job:a/b", "FW_EINVAL", "job id"),
])
def test_unknown_and_malformed_refs(cl, reg, ref, code, text):
    p = cl.ctl("lineage", "show", ref)
    assert p.returncode == 1 and code in p.stderr and text in p.stderr, p.stderr
    assert p.stdout == ""


def test_usage_errors(cl, reg):
    for flags in (["--depth", "65"], ["--depth", "-1"], ["--depth", "x"], ["-o", "svg"]):
        p = cl.ctl("lineage", "show", "m:1", *flags)
        assert p.returncode == 64, (flags, p.stderr)


def test_text_tree(cl, reg):
    p = cl.ctl("lineage", "show", "m:3")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert re.match(r"^model m:3  \(\d{4}-\d\d-\d\d \d\d:\d\d\)$", lines[0]), lines[0]
    assert lines[1] == "ancestors:"
    assert lines[2].startswith("  model m:2  [parent]  (@champion, ")
    up = lines[2:lines.index("descendants:")]
    # The tree grows upward: m:1 under m:2, its job and dataset under m:1, corp under
    # corp-train; corp-train's second appearance is not expanded again.
    assert "    model m:1  [parent]" in "\n".join(up)
    assert any(x.startswith("      job %s  [output]  (noop, SUCCEEDED" % reg["job"]) for x in up)
    assert sum("dataset corp-train@1" in x for x in up) == 2
    assert sum(x.endswith("(see above)") for x in up) == 1
    assert any(x.startswith("      dataset corp@1  [derived]  (40 records") for x in up)
    down = lines[lines.index("descendants:") + 1:]
    assert len(down) == 1 and down[0].startswith("  artifact sha256:")
    assert "[content]  (model" in down[0]
    p = cl.ctl("lineage", "show", "dataset:side", "--depth", "0")
    assert p.stdout.splitlines()[1:] == ["ancestors: none", "descendants: none"]


def test_dot_output(cl, reg, tmp_path):
    doc, nodes, edges = graph(cl, "dataset:corp")
    p = cl.ctl("lineage", "show", "dataset:corp", "-o", "dot")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("digraph lineage {\n") and out.rstrip().endswith("}")
    assert out.count("{") == out.count("}") == 1
    got = set(re.findall(r'^  "([^"]+)" -> "([^"]+)" \[label="([^"]+)"\];$', out, re.M))
    assert got == edges
    decl = dict(re.findall(r'^  "([^"]+)" \[label="[^"]*", shape=(\w+)', out, re.M))
    assert set(decl) == nodes
    assert decl["dataset:corp@1"] == "cylinder" and decl["model:m:1"] == "box"
    assert decl[art(reg, "model:m:1")] == "note"
    assert re.search(r'^  "dataset:corp@1" \[.*penwidth=2', out, re.M)  # the root
    dot = shutil.which("dot")
    if dot:
        r = subprocess.run([dot, "-Tsvg"], input=out, capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0 and "<svg" in r.stdout, r.stderr
