"""The fork server (``[supervisor] fork_server = true``; arbpipe.ops.forkserver, issue 18), on a
real tree: every Python role is a child of the one preloaded server (itself the
supervisor's child), shows its own command line, runs on the cores its CPU plan printed
(every thread); a killed role is forked again and pinned again; a killed server is
replaced while the roles it forked keep running, and a role it forked that dies later is
restarted (its exit status unknown: ``EXIT_UNKNOWN``) from the new server; a source file
changed on disk retires the server that loaded the old code. The tree runs with ``[cpu]
realtime_priority = 3``: the detector and the strategy (they sleep when idle) run under
SCHED_FIFO at 3, again after a restart, and no other process does (or, where the user lacks
the right, the supervisor said so in a ``realtime_refused`` event). No timing and
no memory figure is asserted (``arbpipe bench footprint`` measures the memory).
"""
import json
import os
import signal

import psutil
import pytest

import arbpipe.redact
from arbpipe.ops.forkserver import EXIT_UNKNOWN
from tests.helpers import cli, wait_for
from tests.system.test_supervisor_promises import affinities, all_running, check_stopped_in_order, \
    detached_tree, events, printed_plan, status


@pytest.fixture
def fs_tree(instance, tmp_path):
    with detached_tree(instance, tmp_path, (r"(?m)^fork_server = .*$", "fork_server = true"),
                       (r"(?m)^realtime_priority = .*$", "realtime_priority = 3")) as t:
        yield t


def fork_servers(run):
    """The supervisor's fork server children (their psutil Processes)."""
    with open(run / "status.json") as f:
        sup = psutil.Process(json.load(f)["supervisor_pid"])
    out = []
    for c in sup.children():
        try:                  # a killed server stays a zombie until the supervisor reaps it
            if "arbpipe.ops.forkserver" in " ".join(c.cmdline()):
                out.append(c)
        except psutil.Error:
            pass
    return out


def check_forked(rows, plan, server_pid):
    for name, p in rows.items():
        proc = psutil.Process(p["pid"])
        assert proc.ppid() == server_pid, (name, proc.ppid(), server_pid)
        cmd = [a for a in proc.cmdline() if a]
        assert cmd[1:3] == ["-m", f"procs.{p['role']}"], (name, cmd)
        wrong = {k: v for k, v in affinities(p["pid"]).items() if v != sorted(plan[name])}
        assert not wrong, f"{name} (plan {plan[name]}) runs elsewhere: {wrong}"


def check_realtime(run, rows):
    """The hot roles under SCHED_FIFO 3 (unless refused, and said), every other one not."""
    refused = events(run, "realtime_refused")
    for name, p in rows.items():
        policy = os.sched_getscheduler(p["pid"])
        if p["role"] in ("detector", "strategy") and not refused:
            assert policy == os.SCHED_FIFO, (name, policy)
            assert os.sched_getparam(p["pid"]).sched_priority == 3, name
        else:
            assert policy == os.SCHED_OTHER, (name, policy)


def restarted(run, name, old_pid):
    return wait_for(lambda: (lambda r: r if r and r["pid"] != old_pid and r["state"] == "running"
                             and r["uptime_s"] >= 2.0 else None)(status(run).get(name)),
                    timeout=120, what=f"{name} restarted and running for 2 s")


def test_roles_are_forked_pinned_and_restarted_by_the_fork_server(fs_tree):
    env, cfg, run = fs_tree
    plan = printed_plan((run / "supervisor.out").read_text())
    rows = wait_for(lambda: all_running(run, 3.0), timeout=120,
                    what="every role running for 3 s")
    assert set(plan) == set(rows)
    [server] = fork_servers(run)
    ups = events(run, "fork_server")
    assert [e["state"] for e in ups] == ["up"] and ups[0]["pid"] == server.pid, ups
    check_forked(rows, plan, server.pid)
    assert "strategy" in rows
    check_realtime(run, rows)
    lines = [json.loads(x)["line"] for x in (run / "detector.jsonl").read_text().splitlines()]
    assert any('"event": "ready"' in x for x in lines), "no detector output captured"

    # a killed role is forked again, pinned again; its exit status is the real one
    old = rows["detector"]["pid"]
    os.kill(old, signal.SIGKILL)
    det = restarted(run, "detector", old)
    check_forked({"detector": det}, plan, server.pid)
    check_realtime(run, {"detector": det})
    [ex] = events(run, "exit", "detector")
    assert ex["code"] == -signal.SIGKILL, ex

    # the server killed: the roles keep running, a new server comes up
    before = {n: r["pid"] for n, r in status(run).items()}
    server.kill()
    new = wait_for(lambda: [s for s in fork_servers(run) if s.pid != server.pid], timeout=120,
                   what="a new fork server")[0]
    wait_for(lambda: [e for e in events(run, "fork_server") if e["state"] == "up"
                      and e["pid"] == new.pid], timeout=120, what="the new fork server ready")
    assert [e["state"] for e in events(run, "fork_server")] == ["up", "exited", "up"]
    assert {n: r["pid"] for n, r in status(run).items()} == before, "a role went with its server"
    # one the old server forked dies: restarted from the new one (exit status unknown)
    old = before["dashboard"]
    os.kill(old, signal.SIGKILL)
    dash = restarted(run, "dashboard", old)
    check_forked({"dashboard": dash}, plan, new.pid)
    [ex] = events(run, "exit", "dashboard")
    assert ex["code"] == EXIT_UNKNOWN, ex
    others = {n: r["restarts"] for n, r in status(run).items()
              if n not in ("detector", "dashboard")}
    assert not any(others.values()), f"other roles restarted: {others}"

    out = cli("down", env=env, timeout=120)
    assert "stopped" in out.stdout, out.stdout
    check_stopped_in_order(run, set(rows))
    assert not psutil.pid_exists(new.pid) or new.status() == psutil.STATUS_ZOMBIE


def test_a_source_file_changed_on_disk_gets_a_new_fork_server(fs_tree):
    """A role restarted after an edit runs the code on disk, as an exec'd one would: the
    server that preloaded the old code refuses (``stale``), the role is exec'd, a new server
    loads the code; the old one still reports the exits of the roles it forked."""
    env, cfg, run = fs_tree
    plan = printed_plan((run / "supervisor.out").read_text())
    rows = wait_for(lambda: all_running(run, 3.0), timeout=120,
                    what="every role running for 3 s")
    [server] = fork_servers(run)
    touched = arbpipe.redact.__file__      # loaded by the server (arbpipe.config imports it)
    st = os.stat(touched)
    try:
        os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))   # "edited"
        old = rows["dashboard"]["pid"]
        os.kill(old, signal.SIGKILL)
        dash = restarted(run, "dashboard", old)
        stale = [e for e in events(run, "fork_server") if e["state"] == "stale"]
        assert stale and stale[0]["pid"] == server.pid, stale
        assert stale[0]["changed"] == "arbpipe/redact.py", stale
        with open(run / "status.json") as f:
            sup = json.load(f)["supervisor_pid"]
        assert psutil.Process(dash["pid"]).ppid() == sup   # exec'd: no server had the new code
        new = wait_for(lambda: [e for e in events(run, "fork_server") if e["state"] == "up"
                                and e["pid"] != server.pid], timeout=120,
                       what="a new fork server ready")[0]
        # a role the old server forked: its exit status still comes from the old server;
        # it is forked again by the new one
        old = rows["detector"]["pid"]
        os.kill(old, signal.SIGKILL)
        det = restarted(run, "detector", old)
        [ex] = events(run, "exit", "detector")
        assert ex["code"] == -signal.SIGKILL, ex
        check_forked({"detector": det}, plan, new["pid"])
    finally:
        os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns))
