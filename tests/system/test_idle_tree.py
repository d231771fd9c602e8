"""The default CPU profile spins nowhere (issue 18): with the venues silent (the simulator
stopped with SIGSTOP) every process of the tree sleeps, so its CPU time barely moves.

Asserted on CPU-time deltas of each process over a few seconds, with bounds far above
what a sleeping process uses (a few wake-ups a second) and far below what a spinning or
yielding one does (most of a core, or half of one shared with another spinner); no
wall-clock latency is asserted.
"""
import json
import os
import signal
import time

import psutil

from tests.helpers import wait_for
from tests.system.test_supervisor_promises import all_running, status, tree  # noqa: F401

WINDOW_S = 5.0
PER_PROCESS = 0.10      # of one core: a sleeper is far below, a spinner far above
WHOLE_TREE = 0.40


def _cpu_s(pids):
    out = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            pass
    return out


def test_default_profile_idle_tree_sleeps_everywhere(tree):  # noqa: F811
    env, cfg, run = tree
    out = (run / "supervisor.out").read_text()
    idle_line = next(x for x in out.splitlines() if x.startswith("[arbpipe] idle ("))
    assert "default profile" in idle_line and "busy-spin" not in idle_line \
        and "yield" not in idle_line, idle_line
    rows = wait_for(lambda: all_running(run, 5.0), timeout=120,
                    what="every role running for 5 s")
    sim = rows["simulator"]["pid"]
    os.kill(sim, signal.SIGSTOP)
    try:
        time.sleep(3.0)        # the detector's and strategy's last work, feeds noticing
        pids = {n: r["pid"] for n, r in status(run).items() if n != "simulator"}
        with open(run / "status.json") as f:
            pids["supervisor"] = json.load(f)["supervisor_pid"]
        a = _cpu_s(pids)
        time.sleep(WINDOW_S)
        b = _cpu_s(pids)
        use = {n: (b[n] - a[n]) / WINDOW_S for n in a if n in b}
        assert set(use) >= {"detector", "strategy", "dashboard"}, use
        busy = {n: round(u, 3) for n, u in use.items() if u > PER_PROCESS}
        assert not busy, f"processes that did not sleep while idle (share of a core): {busy}"
        assert sum(use.values()) < WHOLE_TREE, use
    finally:
        os.kill(sim, signal.SIGCONT)
