"""flywheelctl eval compare A B: two tiny models (same tokenizer, different init seeds) scored
by `flywheel-engine eval --per-example` on the same text file and the same prompt/completion
file, then compared. No cluster: the command is local.

What it proves: a model against itself gives diff 0 and no significant difference; A against
B gives both models' values as the engine's own summary reports them and diff == B - A, the
same bytes for the same --seed; different datasets, bad files and bad flags are refused with
exit 1 (naming the file and line or the mismatch) or 64."""

import json
import math
import os
import subprocess

import pytest

BUILD = os.environ.get("FW_BINARY_DIR", os.path.join(os.path.dirname(__file__), "..", "..",
                                                     "build"))
ENGINE = os.path.join(BUILD, "agent", "engine", "flywheel-engine")
CTL = os.path.join(BUILD, "cli", "flywheelctl")
SHARED = os.environ.get("FW_SHARED_DIR", os.path.join(os.path.dirname(__file__), "..", "..",
                                                      "..", "shared"))
CORPUS = os.path.join(SHARED, "data", "corpora", "moby-dick.jsonl")


def _run(*args, check=True):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError("%s: rc=%d\n%s\n%s" % (" ".join(map(str, args)), p.returncode,
                                                     p.stdout, p.stderr))
    return p


def ctl(*args):
    return _run(CTL, *args, check=False)


def _close(x, y, rel=1e-9):
    return math.isclose(x, y, rel_tol=rel, abs_tol=1e-12)


@pytest.fixture(scope="module")
def ev(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalcmp")
    with open(CORPUS) as f:
        texts = [json.loads(next(f))["text"] for _ in range(3)]
    (d / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    _run(ENGINE, "tokenizer-train", "--vocab-size", "300", "--data", d / "corpus.jsonl",
         "--out", d / "tok")
    for name, seed in (("A", 1), ("B", 2)):
        _run(ENGINE, "init", "--config", "tiny", "--tokenizer", d / "tok", "--out", d / name,
             "--seed", seed)
    sents = [s.strip() for s in texts[0].split(".") if len(s.strip()) > 20][:30]
    assert len(sents) == 30
    (d / "text.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in sents))
    (d / "comp.jsonl").write_text("".join(
        json.dumps({"prompt": " ".join(s.split()[:5]),
                    "completion": " " + " ".join(s.split()[5:8])}) + "\n" for s in sents[:20]))
    # Another dataset of the text kind: fewer records.
    (d / "short.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in sents[:25]))
    out = {"dir": d, "summary": {}}
    for name in ("A", "B"):
        for data in ("text", "comp", "short"):
            p = _run(ENGINE, "eval", "--model", d / name, "--data", d / ("%s.jsonl" % data),
                     "--per-example", d / ("%s-%s.jsonl" % (name, data)))
            out["summary"][(name, data)] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def _f(ev, name, data):
    return str(ev["dir"] / ("%s-%s.jsonl" % (name, data)))


def _json(p):
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_same_model_no_difference(ev):
    for data, metrics in (("text", {"loss", "perplexity", "loss_per_example"}),
                          ("comp", {"loss", "perplexity", "loss_per_example", "exact_match"})):
        a = _f(ev, "A", data)
        r = _json(ctl("-o", "json", "eval", "compare", a, a, "--resamples", "500"))
        assert r["examples"] == (30 if data == "text" else 20)
        assert r["method"] == "paired-bootstrap" and r["resamples"] == 500
        assert {m["metric"] for m in r["metrics"]} == metrics
        for m in r["metrics"]:
            assert m["diff"] == 0 and m["a"] == m["b"], m
            assert m["ci_lo"] == 0 and m["ci_hi"] == 0, m
            assert m["significant"] is False and m["better"] == "none", m


def test_a_vs_b_matches_engine_summaries(ev):
    for data, kind in (("text", "text"), ("comp", "completion")):
        sa, sb = ev["summary"][("A", data)], ev["summary"][("B", data)]
        r = _json(ctl("eval", "compare", _f(ev, "A", data), _f(ev, "B", data), "-o", "json",
                      "--resamples", "1000", "--seed", "7", "--confidence", "0.9"))
        assert r["kind"] == kind and r["seed"] == 7 and r["confidence"] == pytest.approx(0.9)
        assert r["a"] == _f(ev, "A", data) and r["b"] == _f(ev, "B", data)
        ms = {m["metric"]: m for m in r["metrics"]}
        names = ["loss", "perplexity"] + (["exact_match"] if kind == "completion" else [])
        for name in names:
            m = ms[name]
            # The engine prints 9 significant digits: equal to that precision.
            tol = 2e-8 * max(abs(sa[name]), abs(sb[name]), 1.0)
            assert _close(m["a"], sa[name], 1e-8) and _close(m["b"], sb[name], 1e-8), (m, sa, sb)
            assert _close(m["diff"], m["b"] - m["a"]), m
            assert abs(m["diff"] - (sb[name] - sa[name])) <= tol, (m, sa, sb)
            assert m["ci_lo"] <= m["ci_hi"]
            assert m["significant"] == (m["ci_lo"] > 0 or m["ci_hi"] < 0), m
        # The two inits differ: the losses are not the same.
        assert ms["loss"]["diff"] != 0


def test_deterministic_seed_and_table(ev):
    a, b = _f(ev, "A", "text"), _f(ev, "B", "text")
    args = ("eval", "compare", a, b, "--resamples", "2000", "--seed", "11")
    p1, p2 = ctl(*args), ctl(*args)
    assert p1.returncode == 0 and p1.stdout == p2.stdout, p1.stderr
    assert "B = " + b in p1.stdout and "seed 11" in p1.stdout
    for name in ("loss", "perplexity", "loss_per_example"):
        assert "\n" + name + " " in p1.stdout
    j1, j2 = ctl("-o", "json", *args), ctl("-o", "json", *args)
    assert j1.returncode == 0 and j1.stdout == j2.stdout
    # Another seed draws other resamples: some interval bound moves.
    j3 = _json(ctl("-o", "json", "eval", "compare", a, b, "--resamples", "2000", "--seed", "12"))
    bounds = lambda r: [(m["ci_lo"], m["ci_hi"]) for m in r["metrics"]]
    assert bounds(j3) != bounds(json.loads(j1.stdout))


def test_different_datasets_refused(ev):
    p = ctl("eval", "compare", _f(ev, "A", "text"), _f(ev, "B", "comp"))
    assert p.returncode == 1 and p.stdout == ""
    assert "not the same dataset" in p.stderr and "text" in p.stderr, p.stderr
    p = ctl("-o", "json", "eval", "compare", _f(ev, "A", "text"), _f(ev, "B", "short"))
    assert p.returncode == 1 and p.stdout == ""
    assert "30" in p.stderr and "25" in p.stderr and _f(ev, "B", "short") in p.stderr, p.stderr


def test_bad_files_refused(ev, tmp_path):
    lines = open(_f(ev, "B", "text")).read().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n{not json\n")
    p = ctl("eval", "compare", _f(ev, "A", "text"), bad)
    assert p.returncode == 1 and p.stdout == ""
    assert str(bad) + " line 2" in p.stderr, p.stderr
    gap = tmp_path / "gap.jsonl"
    gap.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    p = ctl("eval", "compare", gap, _f(ev, "B", "text"))
    assert p.returncode == 1 and str(gap) in p.stderr and "3" in p.stderr, p.stderr
    p = ctl("eval", "compare", tmp_path / "missing.jsonl", _f(ev, "B", "text"))
    assert p.returncode == 1 and "missing.jsonl" in p.stderr, p.stderr


def test_usage_errors(ev):
    a, b = _f(ev, "A", "text"), _f(ev, "B", "text")
    for flags, word in ((["--resamples", "0"], "--resamples"),
                        (["--resamples", "50"], "--resamples"),
                        (["--resamples", "x"], "--resamples"),
                        (["--confidence", "1"], "--confidence"),
                        (["--confidence", "0"], "--confidence"),
                        (["--seed", "-1"], "--seed")):
        p = ctl("eval", "compare", a, b, *flags)
        assert p.returncode == 64 and word in p.stderr and p.stdout == "", (flags, p)
    p = ctl("eval", "compare", a)
    assert p.returncode == 64 and "A B" in p.stderr
    p = ctl("eval", "compare", "--help")
    assert p.returncode == 0 and "usage: flywheelctl eval compare A B" in p.stdout
    assert "--resamples" in p.stdout and "--confidence" in p.stdout
