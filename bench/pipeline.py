"""``arbpipe bench pipeline``: end-to-end latency of feed ring -> detector -> strategy read.

Two setups, one run, one workload:

* **tree** (arbpipe only): the real process tree pieces. One SPSC ``feed.<venue>`` ring per
  venue fed by ``arbpipe.replay.replayer.Replayer`` at a fixed rate (one process, each ring still
  has one producer), the real ``python -m procs.detector --config F --instance I``, the
  ``opportunities`` broadcast ring and a reader: the real strategy (``procs.strategy``, in
  "observe" mode with the kill switch on) when the supervisor's plan has one and it comes
  up, else a bench reader recording the same two histograms. Hops are read from the
  shared-memory histograms ``hist.feed_to_detector`` / ``hist.detect`` (the detector's)
  and ``hist.publish_to_strategy`` / ``hist.total`` (the reader's).
* **harness** (every transport): generator -> detector (the same ``Detector`` kernel,
  collect mode, batches) -> reader, three processes, with only the channel swapped:
  arbpipe rings (SPSC in, broadcast out), ``multiprocessing.Queue``, ``faster-fifo``,
  ``pyzmq`` PUSH/PULL over ``ipc://``. Every channel holds 65536 records and refuses
  (counts a drop) when full. Same hop histograms, same clock. Ratios compare transports.

Workload: a deterministic synthetic stream on the default config (8 venues, 9 legs, 10
instruments), 0.2 % of quotes dislocated by 20-60 bp so that a known share of updates
opens, updates or closes opportunities (``workload.opportunity_share``); it is written as
a recording and replayed in a loop, records stamped at send time.

The generator (and the tree's replay) sleeps at least ``tick_us`` (200 us) between sends:
on a 2-core host it shares a core with the reader, and one timer wake-up per record gap
would cost that core ~60 % at 100K/s; records due meanwhile go out together, each stamped
when sent, so the figures measure the pipeline, not the pacing.

Per (setup, transport, rate): ``warmup`` s at the rate, then ``duration`` s measured
(histograms are the difference of two snapshots, so warm-up values are left out; the
tail of what was sent in the window is waited for), achieved rate (updates the detector
read per second of the window), drops (refused by a full input channel + by the
detector's output channel + lost by the reader), CPU % of each process over the window.
Pinning: with >= 4 cores each process gets a core of its own (said in the output); with
fewer the detector gets one and the generator, the reader and this process share the
other (a note says so).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from arbpipe.transport import histogram as H
from arbpipe.transport import segments
from bench import pipeline_workers as W

CTX = mp.get_context("spawn")
TRANSPORTS = ("arbpipe", "mp-queue", "faster-fifo", "pyzmq")
HOPS = ("feed_to_detector", "detect", "publish_to_strategy")
CAP = 65536                 # records every channel holds
TICK_US = 200.0             # the generator's shortest sleep between sends
BATCH = 256                 # records the detector / reader take at most per read
WORKLOAD_UPDATES = 262_144
DEFAULT_RATES = "10k,100k,1m"
TARGETS = {"p50_ns_at_100k": 10_000, "p99_ns_at_100k": 50_000, "p99_vs_mp_queue": 20.0,
           "p99_vs_pyzmq": 5.0, "zero_drop_rate": 1_000_000}
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class BenchError(RuntimeError):
    pass


# ------------------------------------------------------------------ inputs ----

def parse_rates(text: str) -> list[int]:
    """'10k,100k,1m' -> [10000, 100000, 1000000]."""
    out = []
    for part in str(text).split(","):
        t = part.strip().lower().replace("_", "")
        if not t:
            continue
        mult = 1
        if t[-1] in "km":
            mult = 1000 if t[-1] == "k" else 1_000_000
            t = t[:-1]
        try:
            v = int(round(float(t) * mult))
        except ValueError:
            raise ValueError(f"rate {part!r}: use e.g. 10k, 100k, 1m or 50000") from None
        if v <= 0:
            raise ValueError(f"rate {part!r} must be > 0")
        out.append(v)
    if not out:
        raise ValueError("no rates given")
    return out


def core_plan() -> tuple[dict, str]:
    """Cores per role (gen, det, reader, parent) and a sentence saying how they are used."""
    try:
        import psutil
        avail = sorted(psutil.Process().cpu_affinity())
    except (ImportError, AttributeError):
        avail = list(range(os.cpu_count() or 1))
    if len(avail) >= 4:
        plan = {"det": [avail[-1]], "reader": [avail[-2]], "gen": [avail[-3]],
                "parent": [avail[0]]}
        note = (f"{len(avail)} cores: each process pinned to its own core (detector {avail[-1]}, "
                f"reader/strategy {avail[-2]}, generator/replay {avail[-3]}, bench driver "
                f"{avail[0]})")
    elif len(avail) >= 2:
        plan = {"det": [avail[-1]], "reader": [avail[0]], "gen": [avail[0]],
                "parent": [avail[0]]}
        note = (f"{len(avail)} cores: pinning is shared: detector on core {avail[-1]}; the "
                f"generator/replay, the reader/strategy and the bench driver share core "
                f"{avail[0]}")
    else:
        plan = {r: list(avail) for r in ("det", "reader", "gen", "parent")}
        note = "1 core: every process shares it"
    return plan, note


def bench_config_text(strategy_observe: bool = True) -> str:
    """The default config, with the strategy only reading (observe, kill switch on)."""
    from arbpipe.config import DEFAULT_PATH
    text = open(DEFAULT_PATH).read()
    if strategy_observe:
        text = re.sub(r'(?m)^mode = "trade"', 'mode = "observe"', text, count=1)
        text = re.sub(r"(?m)^kill_switch = false", "kill_switch = true", text, count=1)
    return text


def make_workload(path: str, cfg, n: int = WORKLOAD_UPDATES, seed: int = 20261123,
                  dislocation_p: float = 0.002) -> dict:
    """Write the synthetic workload recording; return its description (opportunity share
    measured by running the detector kernel over it once)."""
    from arbpipe.replay import file as RF
    from bench.detect import make_stream
    from bench.recorded import detect_recording
    recs = make_stream(cfg, n, seed=seed, dislocation_p=dislocation_p)
    RF.write_recording(path, recs, RF.names_from_config(cfg, source="bench pipeline workload"))
    opps = detect_recording(path, cfg)
    st = np.asarray(opps["state"]) if len(opps) else np.zeros(0, np.uint8)
    actionable = int(((st == 1) | (st == 2)).sum())
    return {"updates": n, "seed": seed, "dislocation_p": dislocation_p,
            "venues": len(cfg.enabled_venues()), "legs": len(cfg.legs()),
            "instruments": len(cfg.instruments), "opportunity_records": int(len(opps)),
            "open_update_records": actionable,
            "opportunity_share": actionable / n}


# ------------------------------------------------------------------ progress --

class Progress:
    """A rich progress bar over the planned seconds (stderr), or nothing."""

    def __init__(self, total_s: float, enabled: bool = True):
        self.p = None
        self.task = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, Progress as RP, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self.p = RP(TextColumn("{task.description:<44}"), BarColumn(),
                        TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=Console(stderr=True), transient=False)
            self.p.start()
            self.task = self.p.add_task("starting", total=total_s)

    def label(self, text: str) -> None:
        if self.p:
            self.p.update(self.task, description=text)

    def sleep(self, seconds: float, check=None) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            step = min(0.1, left)
            time.sleep(step)
            if self.p:
                self.p.advance(self.task, step)
            if check:
                check()

    def note(self, text: str) -> None:
        if self.p:
            self.p.console.print(text)

    def close(self) -> None:
        if self.p:
            self.p.stop()


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
    import psutil
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

    def __init__(self, instance: str | None = None, nice: int = 0, tick_ns: int = 0):
        self.instance = instance or f"bench-{os.getpid()}"
        self.nice = nice
        self.tick_ns = tick_ns
        segments.check_name(self.instance, "instance name")
        self.tmp = tempfile.mkdtemp(prefix="arbpipe-bench-pipeline-")
        self.config = os.path.join(self.tmp, "arbpipe.toml")
        with open(self.config, "w") as f:
            f.write(bench_config_text())
        from arbpipe.config import load_config
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
    import signal
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pr.start()
    finally:
        signal.signal(signal.SIGINT, old)


def _stop_setup(env, ctl, c, procs, rings) -> None:
    """End a setup: tell the workers to stop, join them, stop whatever is left, close our
    ring handles and remove the instance's segments."""
    ctl.put(("stop",))
    c[W.STOP] = 1
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
        from arbpipe.transport.rings import BroadcastRing, SpscRing
        a = SpscRing.create("bench.in", CAP, "MarketUpdate", policy="drop",
                            instance=env.instance)
        b = BroadcastRing.create("bench.out", CAP, "Opportunity", instance=env.instance)
        return ({"kind": "spsc", "name": "bench.in"},
                {"kind": "broadcast", "name": "bench.out", "reader": "bench-reader"}, [a, b])
    if transport == "mp-queue":
        return {"q": CTX.Queue(maxsize=CAP)}, {"q": CTX.Queue(maxsize=CAP)}, []
    if transport == "faster-fifo":
        import faster_fifo
        return ({"q": faster_fifo.Queue(max_size_bytes=CAP * 160, maxsize=CAP)},
                {"q": faster_fifo.Queue(max_size_bytes=CAP * 224, maxsize=CAP)}, [])
    if transport == "pyzmq":
        import zmq  # noqa: F401
        return ({"addr": f"ipc://{env.tmp}/in.ipc", "hwm": CAP},
                {"addr": f"ipc://{env.tmp}/out.ipc", "hwm": CAP}, [])
    raise ValueError(f"unknown transport {transport!r}; known: {', '.join(TRANSPORTS)}")


class Probe:
    """What ``_phase`` reads from a setup: updates the detector has read (cumulative),
    backlogs now (records sent but not yet read by the detector; opportunities published
    but not yet read by the reader) and drops outside the shared counters (cumulative)."""

    def __init__(self, det_updates, backlog, extra_drops=lambda: 0):
        self.det_updates, self.backlog, self.extra_drops = det_updates, backlog, extra_drops


BACKLOG_OK = CAP // 10      # a stage that ends the window further behind is not keeping up


def _phase(env, setup, transport, rate, duration, warmup, c, ctl, res, pids, prog,
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
    d_out = int(k2[W.DET_OUT_DROPPED] - k0[W.DET_OUT_DROPPED])
    lost = int(k2[W.RD_LOST] - k0[W.RD_LOST])
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
           "opportunities_read": int(k2[W.RD_RECORDED] - k0[W.RD_RECORDED]),
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
    c_raw = CTX.RawArray("q", W.N_SLOTS)
    c = W.counters(c_raw)
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
            pr = CTX.Process(target=W.main, args=(role, transport, p, c_raw, ctl, res),
                             daemon=True, name=f"bench-{role}")
            _start(pr)
            procs.append(pr)
            env.procs.append(pr)
            pids[role] = pr.pid
            _collect(res, {role}, 180, procs)

        probe = Probe(lambda: int(c[W.DET_RECV]),
                      lambda: (max(int(c[W.GEN_SENT] - c[W.DET_RECV]), 0),
                               max(int(c[W.DET_OUT] - c[W.RD_RECV]), 0)))
        for rate in rates:
            runs.append(_phase(env, "harness", transport, rate, duration, warmup, c, ctl, res,
                               pids, prog, probe))
    finally:
        _stop_setup(env, ctl, c, procs, keep)
    return runs


def _strategy_argv(env: Env) -> list[str] | None:
    """argv of the real strategy process from the supervisor's plan, if the tree has one."""
    try:
        from arbpipe.ops.supervisor import plan
        specs, _ = plan(env.cfg, env.config, env.instance, live=True)
    except Exception:
        return None
    for s in specs:
        if s.role == "strategy":
            return list(s.argv)
    return None


def _tree_rings(env: Env) -> list:
    """Create the tree's rings as the supervisor would (feed rings, opportunities, ...)."""
    from arbpipe.ops.supervisor import plan
    _, rings = plan(env.cfg, env.config, env.instance, live=True)
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
    import psutil
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
    import psutil

    from arbpipe.transport.rings import attach_any
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
    from arbpipe.detect.detector import read_stats
    from arbpipe.transport.rings import attach_any
    c_raw = CTX.RawArray("q", W.N_SLOTS)
    c = W.counters(c_raw)
    ctl, res = CTX.Queue(), CTX.Queue()
    child_env = dict(os.environ, ARBPIPE_INSTANCE=env.instance, PYTHONUNBUFFERED="1",
                     ARBPIPE_RUN_DIR=os.path.join(env.tmp, "run"))
    rings = _tree_rings(env)
    runs, search, reader_desc = [], [], "bench reader"
    procs = []
    opp_ring = None
    try:
        det, _ = _start_detector(env, plan, child_env)
        pids = {"det": det.pid}
        strat = None
        if reader in ("auto", "strategy"):
            argv = _strategy_argv(env)
            if argv is None:
                reader_desc = "bench reader (the tree has no strategy process yet)"
            else:
                prog.label("starting procs.strategy")
                strat, why = _start_strategy(env, argv, plan, child_env)
                reader_desc = why if strat else f"bench reader ({why})"
                if strat is None and reader == "strategy":
                    raise BenchError(why)
        p = {"workload": env.workload, "config": env.config, "instance": env.instance,
             "batch": BATCH, "cores": plan, "nice": env.nice, "tick_ns": env.tick_ns,
             "out": {"kind": "broadcast", "name": "opportunities", "reader": "bench-reader"}}
        roles = ["replay"] if strat else ["tree_reader", "replay"]
        for role in roles:
            pr = CTX.Process(target=W.main, args=(role, "arbpipe", p, c_raw, ctl, res),
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
            run = _phase(env, "tree", "arbpipe", rate, duration, warmup, c, ctl, res, pids,
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
            r = _phase(env, "tree", "arbpipe", mid, duration, warmup, c, ctl, res, pids,
                       prog, probe)
            r.pop("total_buckets", None)
            search.append(r)
            lo, hi = (mid, hi) if r["sustained"] else (lo, mid)
    finally:
        _stop_setup(env, ctl, c, procs, ([opp_ring] if opp_ring is not None else []) + rings)
    return runs, reader_desc, search


# ------------------------------------------------------------------ driver ----

def run(rates=None, duration: float = 3.0, warmup: float = 0.5, transports=TRANSPORTS,
        tree: bool = True, reader: str = "auto", progress: bool = True,
        instance: str | None = None, search_steps: int = 3, nice: int = 0,
        tick_us: float = TICK_US) -> dict:
    """Run the benchmark; returns the result document (see ``save`` / ``render``).
    ``nice`` < 0 (root): the measured processes get that CPU priority, so that on a host
    shared with other work they wait less for a core (every setup and transport alike).
    ``tick_us``: the generator / replay sleeps at least this long between sends (records
    then go out in bursts of rate x tick, stamped when sent); 0: one wake-up per record gap,
    which on a 2-core host costs the core the reader shares (~60 % CPU at 100K/s)."""
    rates = parse_rates(rates or DEFAULT_RATES) if not isinstance(rates, list) else rates
    for t in transports:
        if t not in TRANSPORTS:
            raise ValueError(f"unknown transport {t!r}; known: {', '.join(TRANSPORTS)}")
    import signal
    if not -20 <= int(nice) <= 19:
        raise ValueError(f"nice {nice}: use -20..19")
    if nice < 0 and os.geteuid() != 0:
        raise ValueError(f"nice {nice} needs root (or CAP_SYS_NICE)")
    plan, note = core_plan()
    load0 = os.getloadavg()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    old_term = signal.signal(signal.SIGTERM, on_term)   # SIGTERM cleans up like Ctrl-C
    try:
        import psutil
        affinity = psutil.Process().cpu_affinity()
    except (ImportError, AttributeError, OSError):
        affinity = None
    W.pin(plan["parent"])
    if tick_us < 0:
        raise ValueError(f"tick {tick_us} us must be >= 0")
    env = Env(instance, int(nice), int(tick_us * 1000))
    per_phase = warmup + duration + 0.5
    total_s = per_phase * (len(rates) * (len(transports) + (1 if tree else 0))
                           + (search_steps if tree else 0))
    prog = Progress(total_s, progress)
    runs, search = [], []
    notes = [note]
    try:
        prog.label("writing the workload")
        workload = make_workload(env.workload, env.cfg)
        reader_desc = None
        if tree:
            tr, reader_desc, search = run_tree(env, rates, duration, warmup, plan, prog,
                                               reader, search_steps)
            runs += tr
        for t in transports:
            try:
                runs += run_harness(env, t, rates, duration, warmup, plan, prog)
            except (ImportError, BenchError) as e:
                notes.append(f"{t}: skipped ({str(e).splitlines()[0]})")
                prog.note(f"{t}: skipped ({e})")
    finally:
        prog.close()
        env.close()
        signal.signal(signal.SIGTERM, old_term)
        W.pin(affinity)
    host = _host()
    host["loadavg_1m"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    if max(host["loadavg_1m"]) > 0.75 * (os.cpu_count() or 1):
        notes.append(f"the host was busy with other work (1-minute load average "
                     f"{host['loadavg_1m'][0]} at the start, {host['loadavg_1m'][1]} at the end, "
                     f"{os.cpu_count()} cores): latencies include waiting for a core")
    result = {"host": host, "pinning": {"cores": plan, "note": note}, "nice": int(nice),
              "generator_tick_us": tick_us,
              "duration_s": duration, "warmup_s": warmup, "rates": rates,
              "workload": workload, "channel_capacity": CAP, "batch": BATCH,
              "reader": reader_desc, "runs": runs, "search": search, "notes": notes}
    result.update(_verdicts(result))
    return result


def _host() -> dict:
    from bench.detect import _cpu_name
    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def _find(runs, setup, transport, rate):
    for r in runs:
        if r["setup"] == setup and r["transport"] == transport and r["rate"] == rate:
            return r
    return None


def _verdicts(res: dict) -> dict:
    runs = res["runs"]
    by = {}
    for r in runs + res.get("search", []):
        key = r["transport"] if r["setup"] == "harness" else "arbpipe-tree"
        if r["sustained"]:
            by[key] = max(by.get(key, 0), r["rate"])
        else:
            by.setdefault(key, 0)
    mz = by.get("arbpipe-tree", by.get("arbpipe", 0))
    det_ok = [r["rate"] for r in runs + res.get("search", [])
              if r["setup"] == "tree" and r["detector_sustained"]]
    out = {"max_zero_drop_rate": float(mz), "max_zero_drop_rate_by": by,
           "max_zero_drop_rate_detector": float(max(det_ok) if det_ok else 0)}
    ratios = []
    for rate in res["rates"]:
        ref = _find(runs, "harness", "arbpipe", rate)
        if not ref:
            continue
        for t in TRANSPORTS[1:]:
            o = _find(runs, "harness", t, rate)
            if not o:
                continue
            row = {"rate": rate, "transport": t}
            for q in ("p50_ns", "p99_ns", "p999_ns"):
                a, b = ref["total"][q], o["total"][q]
                row[q.replace("_ns", "_ratio")] = (b / a) if a and b else None
            ratios.append(row)
    out["ratios"] = ratios
    tgt = []
    for setup in ("tree", "harness"):
        t100 = _find(runs, setup, "arbpipe", 100_000)
        if not t100:
            continue
        p50, p99 = t100["total"]["p50_ns"], t100["total"]["p99_ns"]
        tgt.append({"target": "total p50 <= 10 us at 100K updates/s", "value_ns": p50,
                    "met": bool(p50 is not None and p50 <= TARGETS["p50_ns_at_100k"]),
                    "setup": setup})
        tgt.append({"target": "total p99 <= 50 us at 100K updates/s", "value_ns": p99,
                    "met": bool(p99 is not None and p99 <= TARGETS["p99_ns_at_100k"]),
                    "setup": setup})
    for t, key in (("mp-queue", "p99_vs_mp_queue"), ("pyzmq", "p99_vs_pyzmq")):
        r = next((x for x in ratios if x["transport"] == t and x["rate"] == 100_000), None)
        if r:
            tgt.append({"target": f"p99 >= {TARGETS[key]:.0f}x lower than {t} at 100K/s",
                        "value": r["p99_ratio"],
                        "met": bool(r["p99_ratio"] and r["p99_ratio"] >= TARGETS[key])})
    r1m = _find(runs, "tree", "arbpipe", 1_000_000)
    if r1m:
        tgt.append({"target": "zero drops at 1M updates/s replayed into the detector",
                    "value": {"input_drops": r1m["drops_detail"]["input_full"],
                              "achieved_rate": round(r1m["achieved_rate"]),
                              "detector_backlog_at_end": r1m["backlog_at_end"]["detector"]},
                    "met": bool(r1m["detector_sustained"])})
    out["targets"] = tgt
    return out


# ------------------------------------------------------------------ output ----

def _us(v) -> str:
    if v is None or v != v:
        return "-"
    return f"{v / 1000:.1f} µs" if v < 100_000 else f"{v / 1e6:.2f} ms"


def _rate(v) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k" if v >= 1e3 else f"{v:.0f}"


def render(res: dict) -> str:
    h = res["host"]
    w = res["workload"]
    L = [f"# arbpipe bench pipeline ({h['time']})", "",
         f"Host: {h['cpu']}, {h['cores']} cores, Python {h['python']}. {res['pinning']['note']}.",
         f"Workload: {w['updates']:,} synthetic updates ({w['venues']} venues, {w['legs']} legs, "
         f"{w['instruments']} instruments), replayed in a loop; {w['opportunity_share']:.2%} of "
         f"updates produce an OPEN/UPDATE opportunity. {res['warmup_s']} s warm-up + "
         f"{res['duration_s']} s measured per rate; the generator sends what is due at least "
         f"every {res['generator_tick_us']:g} µs (stamped when sent)"
         + (f"; measured processes at nice {res['nice']}" if res.get("nice") else "")
         + f". Channels hold {res['channel_capacity']:,} records; a full channel drops "
         f"(counted).", ""]
    tree = [r for r in res["runs"] if r["setup"] == "tree"]
    if tree:
        L += ["## Real tree: replay -> feed rings -> procs.detector -> opportunities -> "
              f"{res.get('reader') or 'reader'}", "",
              "| rate | achieved/s | drops | total p50 | p99 | p99.9 | max | feed->det p50/p99 "
              "| detect p50/p99 | publish->read p50/p99 | CPU % replay/det/reader |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in tree:
            hp = r["hops"]
            L.append(f"| {_rate(r['rate'])} | {_rate(r['achieved_rate'])} | {r['drops']:,} | "
                     f"{_us(r['total']['p50_ns'])} | {_us(r['total']['p99_ns'])} | "
                     f"{_us(r['total']['p999_ns'])} | {_us(r['total']['max_ns'])} | "
                     + " | ".join(f"{_us(hp[x]['p50_ns'])} / {_us(hp[x]['p99_ns'])}" for x in HOPS)
                     + f" | {_cpus(r)} |")
        L.append("")
    harness = [r for r in res["runs"] if r["setup"] == "harness"]
    if harness:
        L += ["## Same pipeline, transport swapped (generator -> detector kernel -> reader)", "",
              "| rate | transport | achieved/s | drops | total p50 | p99 | p99.9 | max | "
              "p50 / arbpipe | p99 / arbpipe | CPU % gen/det/reader |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for rate in res["rates"]:
            ref = _find(res["runs"], "harness", "arbpipe", rate)
            for t in TRANSPORTS:
                r = _find(res["runs"], "harness", t, rate)
                if not r:
                    continue

                def ratio(q):
                    if not ref or not ref["total"][q] or not r["total"][q]:
                        return "-"
                    return f"{r['total'][q] / ref['total'][q]:,.1f}x"
                L.append(f"| {_rate(rate)} | {t} | {_rate(r['achieved_rate'])} | "
                         f"{r['drops']:,} | {_us(r['total']['p50_ns'])} | "
                         f"{_us(r['total']['p99_ns'])} | {_us(r['total']['p999_ns'])} | "
                         f"{_us(r['total']['max_ns'])} | {ratio('p50_ns')} | {ratio('p99_ns')} | "
                         f"{_cpus(r)} |")
        L += ["", "Per hop (p50 / p99):", "",
              "| rate | transport | feed -> detector | detect | publish -> reader |",
              "|---:|---|---:|---:|---:|"]
        for r in harness:
            L.append(f"| {_rate(r['rate'])} | {r['transport']} | "
                     + " | ".join(f"{_us(r['hops'][x]['p50_ns'])} / {_us(r['hops'][x]['p99_ns'])}"
                                  for x in HOPS) + " |")
        L.append("")
    L += ["## Summary", ""]
    by = res["max_zero_drop_rate_by"]
    L.append("- highest rate sustained end to end (zero drops, >= 95% of it achieved, no stage "
             f"ending the window more than {BACKLOG_OK:,} records behind; of the rates run"
             + (", plus the search below" if res.get("search") else "") + "): "
             + ", ".join(f"{k} {_rate(v) if v else 'none'}" for k, v in by.items()))
    if tree:
        v = res["max_zero_drop_rate_detector"]
        L.append(f"- real tree, detector alone (replay -> feed rings -> detector: no input "
                 f"drops, keeping up): {_rate(v) if v else 'none'}")
    if res.get("search"):
        L.append("- search (real tree): " + ", ".join(
            f"{_rate(r['rate'])} {'sustained' if r['sustained'] else 'not'}"
            f" ({_rate(r['achieved_rate'])}/s, {r['drops']:,} drops)" for r in res["search"]))
    for r in res["runs"]:
        if r["sustained"]:
            continue
        d = r["drops_detail"]
        why = [f"achieved {_rate(r['achieved_rate'])}/s"]
        if r["generator_behind"]:
            why.append(f"the generator fell {r['generator_behind']:,} records behind")
        if d["input_full"]:
            why.append(f"{d['input_full']:,} refused by a full input channel (the detector "
                       f"could not keep up)")
        if d["output_full"]:
            why.append(f"{d['output_full']:,} refused by a full output channel")
        if d["reader_lost"]:
            why.append(f"the reader lost {d['reader_lost']:,} (lapped)")
        bl = r["backlog_at_end"]
        if bl["detector"] > BACKLOG_OK:
            why.append(f"the detector ended the window {bl['detector']:,} updates behind")
        if bl["reader"] > BACKLOG_OK:
            why.append(f"the reader ended the window {bl['reader']:,} opportunities behind")
        L.append(f"- {r['setup']} {r['transport']} at {_rate(r['rate'])}/s not sustained: "
                 + "; ".join(why))
    for t in res["targets"]:
        v = t.get("value_ns")
        val = _us(v) if v is not None else (f"{t['value']:.1f}x" if isinstance(
            t.get("value"), float) else json.dumps(t.get("value")))
        L.append(f"- {'MET' if t['met'] else 'NOT MET'}: {t['target']} "
                 f"(measured {val}{', ' + t['setup'] if t.get('setup') else ''})")
    for n in res["notes"][1:]:
        L.append(f"- {n}")
    return "\n".join(L)


def _cpus(r) -> str:
    c = r["cpu_pct"]
    return " / ".join("-" if c.get(k) is None else f"{c[k]:.0f}" for k in ("gen", "det", "reader"))


COLORS = {"arbpipe": "tab:blue", "mp-queue": "tab:red", "faster-fifo": "tab:orange",
          "pyzmq": "tab:green"}


def plot(res: dict, path: str) -> bool:
    """Latency percentile spectrum of the total hop, per transport, one panel per rate."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rates = res["rates"]
    fig, axes = plt.subplots(1, len(rates), figsize=(5.5 * len(rates), 4.5), squeeze=False)
    for ax, rate in zip(axes[0], rates):
        for r in res["runs"]:
            if r["rate"] != rate or not r["total_buckets"]:
                continue
            b = np.array(r["total_buckets"], dtype=np.float64)
            low, cnt = b[:, 0], b[:, 1]
            cum = np.cumsum(cnt) / cnt.sum()
            q = np.clip(cum, 0, 1 - 1e-6)
            x = 1.0 / (1.0 - q)
            tree = r["setup"] == "tree"
            label = "arbpipe (real tree)" if tree else r["transport"]
            ax.step(x, np.maximum(low, 1) / 1e3, where="post", label=label,
                    linestyle="--" if tree else "-",
                    color="black" if tree else COLORS.get(r["transport"]))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [2, 10, 100, 1000, 10000]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["50%", "90%", "99%", "99.9%", "99.99%"])
        ax.set_xlim(1, 2e4)
        ax.set_title(f"{_rate(rate)} updates/s")
        ax.set_xlabel("percentile")
        ax.set_ylabel("feed ring -> reader latency (µs)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("arbpipe bench pipeline: total latency by transport")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def save(res: dict, out_dir: str = RESULTS_DIR) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "pipeline.json"),
             "md": os.path.join(out_dir, "pipeline.md"),
             "png": os.path.join(out_dir, "pipeline.png")}
    with open(paths["json"], "w") as f:
        json.dump(res, f, indent=1)
    with open(paths["md"], "w") as f:
        f.write(render(res) + "\n")
    if not plot(res, paths["png"]):
        paths.pop("png")
    return paths


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="bench.pipeline")
    ap.add_argument("--rates", default=DEFAULT_RATES)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--transports", default=",".join(TRANSPORTS))
    ap.add_argument("--no-tree", action="store_true")
    ap.add_argument("--reader", default="auto", choices=("auto", "strategy", "bench"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out-dir", default=RESULTS_DIR)
    a = ap.parse_args(argv)
    res = run(a.rates, a.duration, a.warmup, [t for t in a.transports.split(",") if t],
              tree=not a.no_tree, reader=a.reader, progress=True)
    paths = save(res, a.out_dir)
    print(json.dumps(res, indent=1) if a.json else render(res) + "\n\n" + "written: "
          + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
