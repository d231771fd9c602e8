"""The setups of ``arbpipe bench pipeline`` (bench/pipeline.py drives them).

* ``run_tree``: the real tree pieces -- the feed rings and ``opportunities`` made as the
  supervisor's plan makes them, ``arbpipe.replay.replayer.Replayer`` feeding every feed
  ring (one process, each ring still has one producer), the real ``procs.detector`` and,
  as reader, the real ``procs.strategy`` (observe mode, kill switch on) when the plan has
  one and it comes up, else the bench reader.
* ``run_harness``: generator -> detector kernel -> reader, three processes of
  ``bench.pipeline_workers``, with only the channel swapped (``TRANSPORTS``).

Per rate, ``phase`` runs ``warmup`` s, then measures ``duration`` s: hop histograms as the
difference of two snapshots, the rate the detector read, drops on every channel, CPU % of
each process; then waits (bounded) for the tail of what was sent in the window.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import psutil

from arbpipe.config import DEFAULT_PATH, load_config
from arbpipe.detect.stats import read_stats
from arbpipe.ops.tree import plan as tree_plan
from arbpipe.transport import histogram as H
from arbpipe.transport import idle as IDLE
from arbpipe.transport import segments
from arbpipe.transport.rings import BroadcastRing, SpscRing, attach_any
from bench import pipeline_workers as PW

CTX = mp.get_context("spawn")
TRANSPORTS = ("arbpipe", "mp-queue", "faster-fifo", "pyzmq")
HOPS = ("feed_to_detector", "detect", "publish_to_strategy")
CAP = 65536                 # records every channel holds
TICK_US = 200.0             # the generator's shortest sleep between sends
BATCH = 256                 # records the detector / reader take at most per read
BACKLOG_OK = CAP // 10      # a stage that ends the window further behind is not keeping up


class BenchError(RuntimeError):
    pass


def bench_config_text(strategy_observe: bool = True) -> str:
    """The default config, with the strategy only reading (observe, kill switch on)."""
    text = open(DEFAULT_PATH).read()
    if strategy_observe:
        text = re.sub(r'(?m)^mode = "trade"', 'mode = "observe"', text, count=1)
        text = re.sub(r"(?m)^kill_switch = false", "kill_switch = true", text, count=1)
    return text


# ------------------------------------------------------------------ measuring --

def window_summary(new: np.ndarray | None, old: np.ndarray | None) -> dict:
    """Percentiles of the values recorded between two snapshots; max_ns is the top of the
    highest non-empty bucket in the window (capped at the histogram's max)."""
    if new is None:
        return H.summary(None)
    d = H.diff(new, old)
    s = H.summary(d)
    counts = d[H.W_DATA:H.W_DATA + H.NB]
    nz = np.flatnonzero(counts)
    if len(nz):
        b = int(nz[-1])
        hi = H.bucket_low(b + 1) - 1 if b + 1 < H.NB else int(new[H.W_MAX])
        s["max_ns"] = float(min(hi, int(new[H.W_MAX]))) if b >= 64 else float(b)
    return s


def sparse_buckets(new: np.ndarray | None, old: np.ndarray | None) -> list:
    """[[bucket low ns, count], ...] of the non-empty buckets of a window."""
    if new is None:
        return []
    d = H.diff(new, old)[H.W_DATA:H.W_DATA + H.NB]
    return [[int(H.bucket_low(b)), int(d[b])] for b in np.flatnonzero(d)]


def _snap(instance: str) -> dict:
    return {h: H.read_histogram(instance, h) for h in HOPS + ("total",)}


def _cpu(pids: dict) -> dict:
    out = {}
    for role, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[role] = t.user + t.system
        except (psutil.Error, OSError):
            out[role] = None
    return out


def _four(s: dict) -> dict:
    return {k: (None if s[k] != s[k] else float(s[k])) for k in
            ("p50_ns", "p99_ns", "p999_ns", "max_ns")} | {"count": int(s["count"])}


# ------------------------------------------------------------------ the runs --

class Env:
    """Instance, temp dir, config and workload of one bench invocation; cleans up."""

    def __init__(self, instance: str | None = None, nice: int = 0, tick_ns: int = 0,
                 profile: str = "default"):
        self.instance = instance or f"bench-{os.getpid()}"
        self.nice = nice
        self.tick_ns = tick_ns
        self.profile = profile      # [cpu] profile of the tree's detector and strategy
        segments.check_name(self.instance, "instance name")
        self.tmp = tempfile.mkdtemp(prefix="arbpipe-bench-pipeline-")
        self.config = os.path.join(self.tmp, "arbpipe.toml")
        with open(self.config, "w") as f:
            f.write(bench_config_text())
        self.cfg = load_config(self.config)
        self.workload = os.path.join(self.tmp, "workload.arbrec")
        self.procs: list = []       # mp.Process and subprocess.Popen we started

    def kill_all(self) -> None:
        for p in self.procs:
            try:
                if isinstance(p, subprocess.Popen):
                    if p.poll() is None:
                        p.terminate()
                        try:
                            p.wait(10)
                        except subprocess.TimeoutExpired:
                            p.kill()
                            p.wait(5)
                else:
                    p.join(3)
                    if p.is_alive():
                        p.terminate()
                        p.join(3)
                    if p.is_alive():
                        p.kill()
                        p.join(3)
            except Exception:
                pass
        self.procs = []

    def close(self) -> None:
        self.kill_all()
        segments.clean(self.instance, everything=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _start(pr) -> None:
    """Start a bench child with SIGINT ignored (inherited through exec): Ctrl-C is the
    driver's, which then stops every child itself and cleans up."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pr.start()
    finally:
        signal.signal(signal.SIGINT, old)


def _stop_setup(env, ctl, c, procs, rings) -> None:
    """End a setup: tell the workers to stop, join them, stop whatever is left, close our
    ring handles and remove the instance's segments."""
    ctl.put(("stop",))
    c[PW.STOP] = 1
    for pr in procs:
        pr.join(10)
    env.kill_all()
    for r in rings:
        r.close()
    segments.clean(env.instance, everything=True)


def _collect(res, want: set, timeout: float, procs=()) -> dict:
    """Wait for ("ready", role, pid) from every role in ``want``; raise on ("error", ...)."""
    got = {}
    deadline = time.monotonic() + timeout
    while want - set(got):
        try:
            msg = res.get(timeout=0.5)
        except queue.Empty:
            for p in procs:
                if isinstance(p, subprocess.Popen) and p.poll() is not None:
                    raise BenchError(f"a bench process exited with {p.returncode}")
                if not isinstance(p, subprocess.Popen) and not p.is_alive() and p.exitcode:
                    raise BenchError(f"a bench process exited with {p.exitcode}")
            if time.monotonic() > deadline:
                raise BenchError(f"bench processes not ready after {timeout:.0f} s: "
                                 f"missing {sorted(want - set(got))}")
            continue
        if msg[0] == "error":
            raise BenchError(f"{msg[1]} failed: {msg[2]}")
        if msg[0] == "ready":
            got[msg[1]] = msg[2]
    return got


def _wait_done(res, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = res.get(timeout=0.5)
        except queue.Empty:
            continue
        if msg[0] == "error":
            raise BenchError(f"{msg[1]} failed: {msg[2]}")
        if msg[0] == "done":
            return msg[2]
    raise BenchError("the generator did not finish its phase")


def _channels(env: Env, transport: str) -> tuple[dict, dict, list]:
    """(in spec, out spec, objects to keep alive) of a harness transport."""
    if transport == "arbpipe":
        a = SpscRing.create("bench.in", CAP, "MarketUpdate", policy="drop",
                            instance=env.instance)
        b = BroadcastRing.create("bench.out", CAP, "Opportunity", instance=env.instance)
        return ({"kind": "spsc", "name": "bench.in"},
                {"kind": "broadcast", "name": "bench.out", "reader": "bench-reader"}, [a, b])
    if transport == "mp-queue":
        return {"q": CTX.Queue(maxsize=CAP)}, {"q": CTX.Queue(maxsize=CAP)}, []
    if transport == "faster-fifo":
        import faster_fifo  # lazy: optional (bench extra); ImportError -> transport skipped
        return ({"q": faster_fifo.Queue(max_size_bytes=CAP * 160, maxsize=CAP)},
                {"q": faster_fifo.Queue(max_size_bytes=CAP * 224, maxsize=CAP)}, [])
    if transport == "pyzmq":
        import zmq  # noqa: F401  # lazy: optional (bench extra); ImportError -> skipped
        return ({"addr": f"ipc://{env.tmp}/in.ipc", "hwm": CAP},
                {"addr": f"ipc://{env.tmp}/out.ipc", "hwm": CAP}, [])
    raise ValueError(f"unknown transport {transport!r}; known: {', '.join(TRANSPORTS)}")


class Probe:
    """What ``phase`` reads from a setup: updates the detector has read (cumulative),
    backlogs now (records sent but not yet read by the detector; opportunities published
    but not yet read by the reader) and drops outside the shared counters (cumulative)."""

    def __init__(self, det_updates, backlog, extra_drops=lambda: 0):
        self.det_updates, self.backlog, self.extra_drops = det_updates, backlog, extra_drops


def phase(env, setup, transport, rate, duration, warmup, c, ctl, res, pids, prog,
           probe: Probe) -> dict:
    """Run one rate; returns the run's figures."""
    prog.label(f"{setup:<7} {transport:<11} {rate:>9,}/s")
    k0 = c.copy()
    x0 = probe.extra_drops()
    ctl.put(("run", rate, warmup + duration))
    prog.sleep(warmup)
    s0 = _snap(env.instance)
    cpu0 = _cpu(pids)
    u0 = probe.det_updates()
    t0 = time.monotonic()
    prog.sleep(duration)
    t1 = time.monotonic()
    u1 = probe.det_updates()
    cpu1 = _cpu(pids)
    end_backlog = probe.backlog()
    done = _wait_done(res, 30 + duration)
    # the tail: wait (bounded) until the detector and the reader have read everything
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and probe.backlog() != (0, 0):
        time.sleep(0.05)
    time.sleep(0.05)
    s2 = _snap(env.instance)
    k2 = c.copy()
    span = t1 - t0
    hops = {h: _four(window_summary(s2[h], s0[h])) for h in HOPS}
    total = _four(window_summary(s2["total"], s0["total"]))
    d_out = int(k2[PW.DET_OUT_DROPPED] - k0[PW.DET_OUT_DROPPED])
    lost = int(k2[PW.RD_LOST] - k0[PW.RD_LOST])
    x = probe.extra_drops() - x0
    drops = int(done["dropped"]) + d_out + lost + x
    cpu = {r: (None if cpu0.get(r) is None or cpu1.get(r) is None
               else round(100.0 * (cpu1[r] - cpu0[r]) / span, 1)) for r in pids}
    achieved = (u1 - u0) / span if span > 0 else 0.0
    run = {"transport": transport, "setup": setup, "rate": rate,
           "achieved_rate": achieved, "sent": int(done["sent"]), "drops": drops,
           "drops_detail": {"input_full": int(done["dropped"]), "output_full": d_out,
                            "reader_lost": lost, "other": x},
           "generator_behind": int(done["behind"]),
           "backlog_at_end": {"detector": int(end_backlog[0]), "reader": int(end_backlog[1])},
           "opportunities_read": int(k2[PW.RD_RECORDED] - k0[PW.RD_RECORDED]),
           "total": total, "hops": hops, "cpu_pct": cpu,
           "total_buckets": sparse_buckets(s2["total"], s0["total"]),
           "window_s": round(span, 3)}
    rate_ok = achieved >= 0.95 * rate
    run["detector_sustained"] = bool(rate_ok and done["dropped"] == 0
                                     and end_backlog[0] <= BACKLOG_OK)
    run["sustained"] = bool(run["detector_sustained"] and drops == 0
                            and end_backlog[1] <= BACKLOG_OK)
    return run


def run_harness(env: Env, transport: str, rates, duration, warmup, plan, prog) -> list[dict]:
    c_raw = CTX.RawArray("q", PW.N_SLOTS)
    c = PW.counters(c_raw)
    ctl, res = CTX.Queue(), CTX.Queue()
    spec_in, spec_out, keep = _channels(env, transport)
    p = {"workload": env.workload, "config": env.config, "instance": env.instance,
         "batch": BATCH, "cores": plan, "in": spec_in, "out": spec_out, "nice": env.nice,
         "tick_ns": env.tick_ns}
    procs = []
    runs = []
    try:
        pids = {}
        for role in ("reader", "det", "gen"):       # receivers first (pyzmq: they bind)
            pr = CTX.Process(target=PW.main, args=(role, transport, p, c_raw, ctl, res),
                             daemon=True, name=f"bench-{role}")
            _start(pr)
            procs.append(pr)
            env.procs.append(pr)
            pids[role] = pr.pid
            _collect(res, {role}, 180, procs)

        probe = Probe(lambda: int(c[PW.DET_RECV]),
                      lambda: (max(int(c[PW.GEN_SENT] - c[PW.DET_RECV]), 0),
                               max(int(c[PW.DET_OUT] - c[PW.RD_RECV]), 0)))
        for rate in rates:
            runs.append(phase(env, "harness", transport, rate, duration, warmup, c, ctl, res,
                               pids, prog, probe))
    finally:
        _stop_setup(env, ctl, c, procs, keep)
    return runs


def tree_idle(profile: str, plan: dict) -> dict:
    """The idle strategy of the tree's detector ("det") and strategy ("reader") under
    ``profile`` and the bench's core plan, as the supervisor would choose them."""
    roles = {"det": "detector", "reader": "strategy", "gen": "replay", "parent": "bench"}
    chosen, problems = IDLE.plan_idle(profile, {k: plan[k] for k in roles}, roles)
    bad = {p.split(" ", 1)[0] for p in problems}
    return {k: IDLE.SleepingIdle.NAME if k in bad else v for k, v in chosen.items()}


def _strategy_argv(env: Env) -> list[str] | None:
    """argv of the real strategy process from the supervisor's plan, if the tree has one."""
    try:
        specs, _ = tree_plan(env.cfg, env.config, env.instance, live=True)
    except Exception:
        return None
    for s in specs:
        if s.role == "strategy":
            return list(s.argv)
    return None


def _tree_rings(env: Env) -> list:
    """Create the tree's rings as the supervisor would (feed rings, opportunities, ...)."""
    _, rings = tree_plan(env.cfg, env.config, env.instance, live=True)
    made = []
    try:
        for cls, name, cap, record, policy in rings:
            made.append(cls.create(name, cap, record, policy=policy, instance=env.instance))
    except Exception:
        for r in made:
            r.close()
        raise
    return made


def _niced(env: Env, argv: list[str]) -> list[str]:
    """argv run at the bench's CPU priority (coreutils ``nice`` execs it: same pid, and
    every thread it starts inherits the priority)."""
    return ["nice", "-n", str(env.nice), *argv] if env.nice else argv


def _start_detector(env: Env, plan, child_env) -> tuple[subprocess.Popen, list]:
    argv = _niced(env, [sys.executable, "-m", "procs.detector", "--config", env.config,
                        "--instance", env.instance])
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=child_env, start_new_session=True,
                         text=True)
    env.procs.append(p)
    try:
        psutil.Process(p.pid).cpu_affinity(plan["det"])
    except (psutil.Error, OSError, AttributeError):
        pass
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for line in p.stdout:
            lines.append(line.rstrip())
            if '"event": "ready"' in line or '"event":"ready"' in line:
                ready.set()
    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 120
    while not ready.wait(0.2):
        if p.poll() is not None or time.monotonic() > deadline:
            raise BenchError("procs.detector did not come up: " + " | ".join(lines[-10:]))
    return p, lines


def _start_strategy(env: Env, argv, plan, child_env, timeout=60.0):
    """Start the real strategy; None (and a reason) if it does not come up as a reader."""
    p = subprocess.Popen(_niced(env, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=child_env, start_new_session=True)
    env.procs.append(p)
    try:
        psutil.Process(p.pid).cpu_affinity(plan["reader"])
    except (psutil.Error, OSError, AttributeError):
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            err = p.stderr.read().decode(errors="replace")[-400:] if p.stderr else ""
            return None, f"procs.strategy exited with {p.returncode}: {err.strip()}"
        have = set(H.list_histograms(env.instance))
        if {"publish_to_strategy", "total"} <= have:
            try:
                r = attach_any("opportunities", instance=env.instance)
                joined = any(x["pid"] == p.pid for x in r.stats()["readers"])
                r.close()
            except segments.SegmentError:
                joined = False
            if joined:
                return p, "procs.strategy (observe mode, kill switch on)"
        time.sleep(0.2)
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
    return None, "procs.strategy did not create hist.total / join the opportunities ring in time"


def run_tree(env: Env, rates, duration, warmup, plan, prog, reader: str = "auto",
             search_steps: int = 0) -> tuple:
    """The real tree: replay -> feed rings -> procs.detector -> opportunities -> reader.
    ``search_steps``: after the fixed rates, bisect (geometrically) between the highest
    rate sustained with zero drops and the lowest one that was not. Returns (runs,
    reader description, search runs)."""
    c_raw = CTX.RawArray("q", PW.N_SLOTS)
    c = PW.counters(c_raw)
    ctl, res = CTX.Queue(), CTX.Queue()
    child_env = dict(os.environ, ARBPIPE_INSTANCE=env.instance, PYTHONUNBUFFERED="1",
                     ARBPIPE_RUN_DIR=os.path.join(env.tmp, "run"))
    idle = tree_idle(env.profile, plan)
    rings = _tree_rings(env)
    runs, search, reader_desc = [], [], "bench reader"
    procs = []
    opp_ring = None
    try:
        det, _ = _start_detector(env, plan, dict(child_env, **{IDLE.IDLE_ENV: idle["det"]}))
        pids = {"det": det.pid}
        strat = None
        if reader in ("auto", "strategy"):
            argv = _strategy_argv(env)
            if argv is None:
                reader_desc = "bench reader (the tree has no strategy process yet)"
            else:
                prog.label("starting procs.strategy")
                strat, why = _start_strategy(env, argv, plan,
                                             dict(child_env, **{IDLE.IDLE_ENV: idle["reader"]}))
                reader_desc = why if strat else f"bench reader ({why})"
                if strat is None and reader == "strategy":
                    raise BenchError(why)
        p = {"workload": env.workload, "config": env.config, "instance": env.instance,
             "batch": BATCH, "cores": plan, "nice": env.nice, "tick_ns": env.tick_ns,
             "out": {"kind": "broadcast", "name": "opportunities", "reader": "bench-reader"}}
        roles = ["replay"] if strat else ["tree_reader", "replay"]
        for role in roles:
            pr = CTX.Process(target=PW.main, args=(role, "arbpipe", p, c_raw, ctl, res),
                             daemon=True, name=f"bench-{role}")
            _start(pr)
            procs.append(pr)
            env.procs.append(pr)
        got = _collect(res, {"reader", "replay"} if not strat else {"replay"}, 180, procs)
        pids["gen"] = got["replay"]
        pids["reader"] = strat.pid if strat else got["reader"]

        def det_updates():
            d = read_stats(env.instance)
            return int(d["updates"]) if d else 0

        opp_ring = attach_any("opportunities", instance=env.instance)
        feeds = [r for r in rings if r.name.startswith("feed.")]

        def reader_row():
            return next((x for x in opp_ring.stats()["readers"] if x["pid"] == pids["reader"]),
                        {"lost": 0, "lag": 0})

        def backlog():
            return sum(int(r.stats()["fill"]) for r in feeds), int(reader_row()["lag"])

        def extra():
            d = read_stats(env.instance) or {}
            return int(d.get("dropped_out", 0)) + (int(reader_row()["lost"]) if strat else 0)
        probe = Probe(det_updates, backlog, extra)

        for rate in rates:
            run = phase(env, "tree", "arbpipe", rate, duration, warmup, c, ctl, res, pids,
                         prog, probe)
            run["reader"] = reader_desc
            run["detector_stats"] = {k: v for k, v in (read_stats(env.instance) or {}).items()
                                     if k in ("updates", "opened", "updated", "closed",
                                              "published", "dropped_out", "idle_waits")}
            if strat:
                run["opportunities_read"] = None
            runs.append(run)
        ok = [r["rate"] for r in runs if r["sustained"]]
        lo = max(ok) if ok else 0
        above = [r["rate"] for r in runs if not r["sustained"] and r["rate"] > lo]
        hi = min(above) if above else 0
        for _ in range(search_steps if lo and hi else 0):
            mid = int(round((lo * hi) ** 0.5, -3))
            if not lo < mid < hi:
                break
            r = phase(env, "tree", "arbpipe", mid, duration, warmup, c, ctl, res, pids,
                       prog, probe)
            r.pop("total_buckets", None)
            search.append(r)
            lo, hi = (mid, hi) if r["sustained"] else (lo, mid)
    finally:
        _stop_setup(env, ctl, c, procs, ([opp_ring] if opp_ring is not None else []) + rings)
    return runs, reader_desc, search
