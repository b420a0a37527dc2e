"""Shared fixtures of the ML-job tests and benchmarks (issue 6): tiny models and datasets
made with the real engine, etcd reads, store paths and FWEMBED parsing.

    texts = moby_lines(300, max_chars=90)          # short lines of Moby-Dick
    write_jsonl(path, texts)
    make_model(dir, tok_dir, n_layer=2, n_embd=64, n_head=4, n_ctx=64, vocab=512, seed=1)
    register(cl, dir, "tiny")                      # flywheelctl model register -> record
    add_dataset(cl, path, "lines")                 # flywheelctl dataset add   -> record

Only the Python standard library (numpy is optional in parse_fwembed)."""

import json
import os
import re
import struct
import subprocess

import cp_harness
from cp_harness import BUILD, ROOT

SHARED = os.environ.get("FW_SHARED_DIR") or os.path.join(ROOT, "..", "shared")
MOBY = os.path.join(SHARED, "data", "corpora", "moby-dick.jsonl")
ENGINE = os.path.join(BUILD, "agent", "engine", "flywheel-engine")
PREFIX = "/flywheel"


def engine(*args, timeout=300, check=True):
    """Run flywheel-engine; returns (CompletedProcess, [JSON objects of stdout lines])."""
    p = subprocess.run([ENGINE] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ, FW_LOG_LEVEL="warn"))
    if check and p.returncode != 0:
        raise AssertionError("flywheel-engine %s: rc=%d\n%s" % (
            " ".join(map(str, args)), p.returncode, p.stderr[-2000:]))
    objs = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                objs.append(json.loads(line))
            except ValueError:
                pass
    return p, objs


def moby_lines(n, max_chars=90, min_chars=20):
    """The first n sentence-ish pieces of Moby-Dick between min_chars and max_chars long
    (short enough that a 64-token context holds any of them with a 512-token BPE)."""
    out = []
    with open(MOBY, encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            for piece in re.split(r"(?<=[.;:!?])\s+", text):
                piece = " ".join(piece.split())
                while len(piece) > max_chars:  # cut long sentences at a space
                    cut = piece.rfind(" ", 0, max_chars)
                    if cut < min_chars:
                        cut = max_chars
                    head, piece = piece[:cut].strip(), piece[cut:].strip()
                    if len(head) >= min_chars:
                        out.append(head)
                if len(piece) >= min_chars:
                    out.append(piece)
                if len(out) >= n:
                    return dedupe(out)[:n]
    return dedupe(out)[:n]


def dedupe(texts):
    seen, out = set(), []
    for t in texts:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    return str(path)


def make_tokenizer(out_dir, corpus, vocab=512):
    engine("tokenizer-train", "--vocab-size", vocab, "--data", corpus, "--out", out_dir)
    return str(out_dir)


def make_model(out_dir, tok_dir, n_layer=2, n_embd=64, n_head=4, n_ctx=64, vocab=512, seed=1):
    """A randomly initialised GPT-2 directory of the given shape."""
    cfg = os.path.join(os.path.dirname(str(out_dir)), "config-%s.json" %
                       os.path.basename(str(out_dir)))
    with open(cfg, "w") as f:
        json.dump({"model_type": "gpt2", "n_layer": n_layer, "n_head": n_head,
                   "n_embd": n_embd, "n_ctx": n_ctx, "n_positions": n_ctx,
                   "vocab_size": vocab}, f)
    _, objs = engine("init", "--config", cfg, "--tokenizer", tok_dir, "--out", out_dir,
                     "--seed", seed, "--vocab-size", vocab)
    return objs[-1]


def register(cl, model_dir, name, *extra):
    """flywheelctl model register; the version record."""
    return cl.ctl_json("model", "register", str(model_dir), "--name", name, *extra,
                       timeout=120)["model"]


def add_dataset(cl, path, name):
    """flywheelctl dataset add; the dataset record."""
    r = cl.ctl_json("dataset", "add", str(path), "--name", name, timeout=120)
    return r["dataset"]


def etcd_range(cl, prefix):
    """Every key under prefix as {key: decoded JSON value, or raw bytes where the value
    is not JSON}, straight from etcd."""
    return cp_harness.etcd_range(cl, prefix, raw_fallback=True)


def job_record(cl, jid):
    """The job record as the leader wrote it to etcd (P/jobs/<id>), or None."""
    return etcd_range(cl, "%s/jobs/%s" % (PREFIX, jid)).get("%s/jobs/%s" % (PREFIX, jid))


def job_keys(cl):
    return sorted(k for k in etcd_range(cl, PREFIX + "/jobs/")
                  if k.count("/") == PREFIX.count("/") + 2)


def blob_path(cl, digest):
    hexd = digest.split(":", 1)[1]
    return os.path.join(cl.dir, "store", "blobs", "sha256", hexd[:2], hexd)


def read_blob(cl, digest):
    with open(blob_path(cl, digest), "rb") as f:
        return f.read()


def parse_fwembed(buf):
    """(row ids, rows as lists of floats) of an FWEMBED v1 file (docs/file-formats.md)."""
    assert buf[:8] == b"FWEMBED\0", "not an FWEMBED file: %r" % buf[:8]
    version, dim, rows, off = struct.unpack_from("<IIQQ", buf, 8)
    assert version == 1 and off == 32 + 8 * rows, (version, rows, off)
    assert len(buf) == off + 4 * rows * dim, (len(buf), off, rows, dim)
    ids = list(struct.unpack_from("<%dQ" % rows, buf, 32))
    flat = struct.unpack_from("<%df" % (rows * dim), buf, off)
    return ids, [flat[i * dim:(i + 1) * dim] for i in range(rows)]


def max_abs_diff(a, b):
    return max((abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)), default=0.0)


def result_of(doc):
    """The "result" of a job doc (JOB_GET's job object; some clients nest it)."""
    return doc.get("result") or (doc.get("job") or {}).get("result")
