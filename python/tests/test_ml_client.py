"""The LLMOps parts of flywheel.Client that need no cluster: FWEMBED parsing, model refs,
eval rows, the eval-in-common choice and the promote fallback (an eval job when the leader
says an eval is missing). The live behaviour is tests/integration/cp_ml_client.py."""

import json
import struct

import numpy as np
import pytest

from flywheel import Client, FlywheelError, parse_fwembed
from flywheel import client as fc


def _fwembed(ids, m):
    m = np.asarray(m, dtype="<f4")
    rows, dim = m.shape
    head = b"FWEMBED\0" + struct.pack("<IIQQ", 1, dim, rows, 32 + 8 * rows)
    return head + np.asarray(ids, dtype="<u8").tobytes() + m.tobytes()


def test_parse_fwembed_round_trip_and_rejections():
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    ids, got = parse_fwembed(_fwembed([4, 9, 11], m))
    assert ids.dtype == np.uint64 and ids.tolist() == [4, 9, 11]
    assert got.dtype == np.float32 and got.shape == (3, 4) and np.array_equal(got, m)
    good = _fwembed([1], np.ones((1, 2)))
    with pytest.raises(ValueError, match="bad magic"):
        parse_fwembed(b"X" + good[1:])
    with pytest.raises(ValueError, match="version 2"):
        parse_fwembed(good[:8] + struct.pack("<I", 2) + good[12:])
    with pytest.raises(ValueError, match="do not hold"):
        parse_fwembed(good[:-1])
    ids, got = parse_fwembed(_fwembed([], np.zeros((0, 8))))
    assert ids.size == 0 and got.shape == (0, 8)


def test_model_refs():
    assert fc._model_fields("demo") == {"name": "demo"}
    assert fc._model_fields("demo:3") == {"name": "demo", "version": 3}
    assert fc._model_fields("demo@champion") == {"name": "demo", "alias": "champion"}
    with pytest.raises(ValueError, match="number >= 1"):
        fc._model_fields("demo:x")
    with pytest.raises(ValueError, match="number >= 1"):
        fc._model_fields("demo:0")


def _client():
    return Client("tcp://127.0.0.1:1", token="t", timeout=0.1)


def test_eval_rows_are_flat_per_model():
    job = {"id": "j-000003", "state": "SUCCEEDED",
           "result": {"dataset": "hold@1", "results": [
               {"model": "demo:1", "metrics": {"loss": 2.0, "perplexity": 7.39},
                "scores": "sha256:aa", "records": 30},
               {"model": "demo:2", "metrics": {"loss": 1.5, "perplexity": 4.48},
                "scores": "sha256:bb", "records": 30}]}}
    c = _client()
    rows = c.eval_results(job)
    assert rows == [
        {"model": "demo:1", "dataset": "hold@1", "loss": 2.0, "perplexity": 7.39,
         "records": 30, "scores": "sha256:aa"},
        {"model": "demo:2", "dataset": "hold@1", "loss": 1.5, "perplexity": 4.48,
         "records": 30, "scores": "sha256:bb"}]
    assert c.last_job is job


def test_common_eval_picks_and_explains():
    ea = [{"dataset": "a@1"}, {"dataset": "b@2"}]
    eb = [{"dataset": "b@2"}, {"dataset": "a@1"}, {"dataset": "c@1"}]
    assert fc._common_eval(ea, eb, None, "x:1", "x:2") == "b@2"
    assert fc._common_eval(ea, eb, "a", "x:1", "x:2") == "a@1"
    with pytest.raises(FlywheelError) as ei:
        fc._common_eval(ea, eb, "c", "x:1", "x:2")
    assert ei.value.name == "FW_ENOTFOUND" and "client.eval" in ei.value.message


def test_promote_runs_an_eval_job_when_the_leader_lacks_one(monkeypatch):
    c = _client()
    calls, evals = [], []
    answers = [FlywheelError(-5, "no eval of demo:2 on hold@1"),
               {"promoted": True, "champion": "demo:1", "challenger": "demo:2"}]

    def doc(name, /, **fields):
        calls.append((name, fields))
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    monkeypatch.setattr(c, "_doc", doc)
    monkeypatch.setattr(c, "eval", lambda models, dataset, **kw: evals.append(
        (models, dataset, kw)) or [])
    r = c.models.promote("demo", "demo:2", metric="loss", min_delta=0.1, dataset="hold",
                         shards=2)
    assert r["promoted"] is True
    assert evals == [(["demo@champion", "demo:2"], "hold", {"shards": 2, "timeout": None})]
    assert [n for n, _ in calls] == ["MODEL_PROMOTE", "MODEL_PROMOTE"]
    assert calls[0][1] == {"name": "demo", "challenger": "demo:2", "metric": "loss",
                           "min_delta": 0.1, "dataset": "hold"}
    # Without a dataset the missing eval is an error that says what to pass.
    answers[:] = [FlywheelError(-5, "no eval of demo:2 on hold@1")]
    with pytest.raises(FlywheelError, match="pass dataset="):
        c.models.promote("demo", "demo:2")
    # Other refusals pass through untouched, with no eval job.
    answers[:] = [FlywheelError(-2, "metric 'bleu': unknown")]
    evals.clear()
    with pytest.raises(FlywheelError, match="bleu"):
        c.models.promote("demo", "demo:2", metric="bleu", dataset="hold")
    assert evals == []


def test_records_are_serialised_as_jsonl(monkeypatch):
    c = _client()
    sent = {}
    monkeypatch.setattr(c, "upload", lambda data: sent.setdefault("raw", data) and "sha256:x")
    class Reply(dict):
        pass

    def call(msg, /, **f):
        sent["call"] = (msg, f)
        return Reply(doc='{"name":"d"}')

    monkeypatch.setattr(c, "call", call)
    rec = c.datasets.add([{"text": "héllo"}, "plain"], name="d")
    assert sent["raw"] == '{"text":"héllo"}\n{"text":"plain"}\n'.encode()
    assert sent["call"] == ("DATASET_REGISTER", {"name": "d", "digest": "sha256:x",
                                                 "report": "{}", "ingest": True})
    assert rec == {"name": "d", "existing": False}
    assert json.loads(sent["raw"].splitlines()[0]) == {"text": "héllo"}
