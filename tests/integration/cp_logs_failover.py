"""`job logs` and `job logs -f` across a coordinator failover (issue 3: logs live on the
agents, so they are served after the leader changes).

Each shard of a command job prints numbered lines over a few seconds. While they run,
`flywheelctl job logs -f` and the Python client's job.logs(follow=True) follow the job;
the leader is SIGKILLed in the middle. Both followers must go on through the failover and
end by themselves when the job ends, having seen every line exactly once; a fresh
`flywheelctl job logs` (no -f) on the new leader shows every line too."""

import re
import signal
import subprocess
import threading
import time

import pytest

from cp_harness import CTL, cluster_fixture, wait_for

NSHARDS = 2
NLINES = 14
LINE = re.compile(r"\bs(\d+) l(\d+)\b")


@pytest.fixture
def cl(request):
    return cluster_fixture(request, coordinators=2, agents=2)


def _lines_of(text):
    return [(int(a), int(b)) for a, b in LINE.findall(text)]


def _check_every_line_once(pairs, what):
    want = [(s, i) for s in range(NSHARDS) for i in range(1, NLINES + 1)]
    missing = sorted(set(want) - set(pairs))
    assert not missing, "%s: lines missing %r (got %d lines)" % (what, missing, len(pairs))
    dups = sorted({p for p in pairs if pairs.count(p) > 1})
    assert not dups, "%s: lines repeated %r" % (what, dups)
    # Per shard, the lines come in the order they were printed.
    for s in range(NSHARDS):
        seq = [i for (x, i) in pairs if x == s]
        assert seq == sorted(seq), "%s: shard %d out of order: %r" % (what, s, seq)


def test_logs_follow_survive_leader_kill(cl):
    old = cl.leader()
    jid = cl.submit({"kind": "command", "shards": NSHARDS, "max_retries": 0,
                     "resources": {"cpus": 1, "memory_mb": 16},
                     "command": ["sh", "-c", "for i in $(seq 1 %d); do "
                                 "echo \"s$FLYWHEEL_SHARD_INDEX l$i\"; sleep 0.4; done"
                                 % NLINES]})
    env = dict(__import__("os").environ, **cl.env)
    follower = subprocess.Popen([CTL, "job", "logs", jid, "-f"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
    # The Python client follows too, on its own connection.
    from flywheel import Client
    py_lines, py_err = [], []

    def py_follow():
        try:
            c = Client(cl.endpoints, token_file=cl.token_file, timeout=1.0)
            for line in c.job(jid).logs(follow=True):
                py_lines.append(line)
            c.close()
        except Exception as e:  # reported by the main thread
            py_err.append(repr(e))
    th = threading.Thread(target=py_follow, daemon=True)
    th.start()
    try:
        # Kill the leader once some lines have been printed, well before the end.
        wait_for(lambda: len(_lines_of("\n".join(py_lines))) >= 4, 30,
                 "the first lines through the Python follower")
        cl.kill(old, signal.SIGKILL)
        t_kill = time.monotonic()
        new = cl.wait_leader(15, not_name=old)
        print("leader %s killed, %s leads after %.1fs" % (old, new, time.monotonic() - t_kill))
        final = cl.wait_job(jid, 60)
        assert final["state"] == "SUCCEEDED", final
        out, err = follower.communicate(timeout=40)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, "job logs -f: rc=%d stderr=%s" % (follower.returncode, err)
    th.join(40)
    assert not th.is_alive(), "the Python follower did not end after the job ended"
    assert not py_err, py_err
    # The failover happened while the tasks were printing: the killed leader cannot
    # have relayed the lines printed after it died.
    _check_every_line_once(_lines_of(out), "flywheelctl job logs -f")
    _check_every_line_once(_lines_of("\n".join(py_lines)), "python job.logs(follow=True)")

    # A fresh read after the failover, from the new leader.
    p = cl.ctl("job", "logs", jid, timeout=30)
    assert p.returncode == 0, p.stderr
    _check_every_line_once(_lines_of(p.stdout), "flywheelctl job logs (after failover)")
    # One task alone, without prefixes.
    p = cl.ctl("job", "logs", "%s.1" % jid, timeout=30)
    assert p.returncode == 0, p.stderr
    assert [i for (s, i) in _lines_of(p.stdout)] == list(range(1, NLINES + 1)), p.stdout
    assert all(s == 1 for (s, i) in _lines_of(p.stdout)), p.stdout
