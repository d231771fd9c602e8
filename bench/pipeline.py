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

Modules: this one drives a run (inputs, workload, progress, verdicts, command line);
bench/pipeline_runs.py holds the two setups and the measuring of a phase,
bench/pipeline_workers.py the spawned processes, bench/pipeline_report.py the markdown,
figure and files.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time

import numpy as np
import psutil
from rich.console import Console
from rich.progress import (BarColumn, Progress as RP, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from bench import pipeline_workers as PW
from bench.harness import cpu_name
from bench.pipeline_repeat import combine
from bench.pipeline_report import RESULTS_DIR, find_run, render, save
from bench.pipeline_runs import (BATCH, CAP, TICK_US, TRANSPORTS, BenchError, Env, run_harness,
                                 run_tree, tree_idle)
from arbpipe.transport.idle import PROFILES
from bench.recorded import detect_recording
from bench.workload import write_workload
from shm_layouts import OppState

WORKLOAD_UPDATES = 262_144
DEFAULT_RATES = "10k,100k,1m"
TARGETS = {"p50_ns_at_100k": 10_000, "p99_ns_at_100k": 50_000, "p99_vs_mp_queue": 20.0,
           "p99_vs_pyzmq": 5.0, "zero_drop_rate": 1_000_000}


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


def core_plan(profile: str = "default") -> tuple[dict, str]:
    """Cores per role (gen, det, reader, parent) and a sentence saying how they are used.
    With 2-3 cores it is the tree's plan (``arbpipe.ops.supervisor.cpu_plan``): the hot
    path (detector, reader/strategy) together on the last core (one core each with 3 in
    the low-latency profile), the generator/replay and this driver on the others."""
    try:
        avail = sorted(psutil.Process().cpu_affinity())
    except AttributeError:
        avail = list(range(os.cpu_count() or 1))
    if len(avail) == 3 and profile == "low-latency":
        plan = {"det": [avail[-1]], "reader": [avail[-2]], "gen": [avail[0]],
                "parent": [avail[0]]}
        note = (f"3 cores: detector on core {avail[-1]}, reader/strategy on core {avail[-2]}, "
                f"the generator/replay and the bench driver share core {avail[0]}")
    elif len(avail) >= 4:
        plan = {"det": [avail[-1]], "reader": [avail[-2]], "gen": [avail[-3]],
                "parent": [avail[0]]}
        note = (f"{len(avail)} cores: each process pinned to its own core (detector {avail[-1]}, "
                f"reader/strategy {avail[-2]}, generator/replay {avail[-3]}, bench driver "
                f"{avail[0]})")
    elif len(avail) >= 2:
        rest = avail[:-1]
        plan = {"det": [avail[-1]], "reader": [avail[-1]], "gen": rest, "parent": rest}
        note = (f"{len(avail)} cores: pinning is shared, as the tree's CPU plan: the detector "
                f"and the reader/strategy on core {avail[-1]}; the generator/replay and the "
                f"bench driver on {', '.join(map(str, rest))}")
    else:
        plan = {r: list(avail) for r in ("det", "reader", "gen", "parent")}
        note = "1 core: every process shares it"
    return plan, note


def make_workload(path: str, cfg, n: int = WORKLOAD_UPDATES, seed: int = 20261123,
                  dislocation_p: float = 0.002, books: bool = False) -> dict:
    """Write the synthetic workload recording; return its description (opportunity share
    measured by running the detector kernel over it once). ``books``: every quote comes
    with the two LEVEL records of its depth message (3 records per quote: the detector
    keeps L2 books and sizes on them)."""
    recs = write_workload(path, cfg, n, seed, dislocation_p, source="bench pipeline workload",
                          books=books)
    n = len(recs)
    opps = detect_recording(path, cfg)
    st = np.asarray(opps["state"]) if len(opps) else np.zeros(0, np.uint8)
    actionable = int(((st == OppState.OPEN) | (st == OppState.UPDATE)).sum())
    return {"updates": n, "seed": seed, "dislocation_p": dislocation_p,
            "venues": len(cfg.enabled_venues()), "legs": len(cfg.legs()),
            "instruments": len(cfg.instruments), "opportunity_records": int(len(opps)),
            "open_update_records": actionable,
            "opportunity_share": actionable / n, "books": books}


# ------------------------------------------------------------------ progress --

class Progress:
    """A rich progress bar over the planned seconds (stderr), or nothing."""

    def __init__(self, total_s: float, enabled: bool = True):
        self.p = None
        self.task = None
        if enabled:
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


# ------------------------------------------------------------------ driver ----

def run(rates=None, duration: float = 3.0, warmup: float = 0.5, transports=TRANSPORTS,
        tree: bool = True, reader: str = "auto", progress: bool = True,
        instance: str | None = None, search_steps: int = 3, nice: int = 0,
        tick_us: float = TICK_US, repeat: int = 1, profile: str = "default",
        books: bool = False) -> dict:
    """Run the benchmark; returns the result document (see ``save`` / ``render``).
    ``nice`` < 0 (root): the measured processes get that CPU priority, so that on a host
    shared with other work they wait less for a core (every setup and transport alike).
    ``tick_us``: the generator / replay sleeps at least this long between sends (records
    then go out in bursts of rate x tick, stamped when sent); 0: one wake-up per record gap,
    which on a 2-core host costs the core the reader shares (~60 % CPU at 100K/s).
    ``repeat``: run every setup that many times, interleaved; ``runs`` then holds the
    medians with their min-max ``spread`` (bench/pipeline_repeat.py), ``runs_each`` every
    repeat's own runs; the rate search runs once, after the last repeat. ``profile``: the
    ``[cpu] profile`` of the tree's detector and strategy ("default": they sleep when idle;
    "low-latency": they busy-spin on cores of their own or yield on a shared one).
    ``books``: the workload carries L2 LEVEL records besides the quotes (``make_workload``)."""
    rates = parse_rates(rates or DEFAULT_RATES) if not isinstance(rates, list) else rates
    for t in transports:
        if t not in TRANSPORTS:
            raise ValueError(f"unknown transport {t!r}; known: {', '.join(TRANSPORTS)}")
    if int(repeat) < 1:
        raise ValueError(f"repeat {repeat}: use 1 or more")
    if not -20 <= int(nice) <= 19:
        raise ValueError(f"nice {nice}: use -20..19")
    if nice < 0 and os.geteuid() != 0:
        raise ValueError(f"nice {nice} needs root (or CAP_SYS_NICE)")
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r}: use one of {', '.join(PROFILES)}")
    plan, note = core_plan(profile)
    note += f"; {profile} profile: detector {tree_idle(profile, plan)['det']}, reader/" \
            f"strategy {tree_idle(profile, plan)['reader']} when idle"
    load0 = os.getloadavg()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    old_term = signal.signal(signal.SIGTERM, on_term)   # SIGTERM cleans up like Ctrl-C
    try:
        affinity = psutil.Process().cpu_affinity()
    except (AttributeError, OSError):
        affinity = None
    PW.pin(plan["parent"])
    if tick_us < 0:
        raise ValueError(f"tick {tick_us} us must be >= 0")
    env = Env(instance, int(nice), int(tick_us * 1000), profile)
    per_phase = warmup + duration + 0.5
    total_s = per_phase * (repeat * len(rates) * (len(transports) + (1 if tree else 0))
                           + (search_steps if tree else 0))
    prog = Progress(total_s, progress)
    each, search = [], []
    notes = [note]
    skipped = set()
    try:
        prog.label("writing the workload")
        workload = make_workload(env.workload, env.cfg, books=books)
        reader_desc = None
        for i in range(repeat):
            runs = []
            if tree:
                last = i == repeat - 1
                tr, reader_desc, found = run_tree(env, rates, duration, warmup, plan, prog,
                                                  reader, search_steps if last else 0)
                runs += tr
                search += found
            for t in transports:
                if t in skipped:
                    continue
                try:
                    runs += run_harness(env, t, rates, duration, warmup, plan, prog)
                except (ImportError, BenchError) as e:
                    skipped.add(t)
                    notes.append(f"{t}: skipped ({str(e).splitlines()[0]})")
                    prog.note(f"{t}: skipped ({e})")
            for r in runs:
                r["repeat"] = i
            each.append(runs)
    finally:
        prog.close()
        env.close()
        signal.signal(signal.SIGTERM, old_term)
        PW.pin(affinity)
    host = _host()
    host["loadavg_1m"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    if max(host["loadavg_1m"]) > 0.75 * (os.cpu_count() or 1):
        notes.append(f"the host was busy with other work (1-minute load average "
                     f"{host['loadavg_1m'][0]} at the start, {host['loadavg_1m'][1]} at the end, "
                     f"{os.cpu_count()} cores): latencies include waiting for a core")
    runs = each[0] if repeat == 1 else combine(each)
    for r in (x for runs_i in each for x in runs_i) if repeat > 1 else ():
        r.pop("total_buckets", None)          # the median rows keep one spectrum each
    result = {"host": host, "pinning": {"cores": plan, "note": note}, "nice": int(nice),
              "profile": profile,
              "repeat": int(repeat), "runs_each": each if repeat > 1 else None,
              "generator_tick_us": tick_us,
              "duration_s": duration, "warmup_s": warmup, "rates": rates,
              "workload": workload, "channel_capacity": CAP, "batch": BATCH,
              "reader": reader_desc, "runs": runs, "search": search, "notes": notes}
    result.update(_verdicts(result))
    return result


def _host() -> dict:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


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
        ref = find_run(runs, "harness", "arbpipe", rate)
        if not ref:
            continue
        for t in TRANSPORTS[1:]:
            o = find_run(runs, "harness", t, rate)
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
        t100 = find_run(runs, setup, "arbpipe", 100_000)
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
    r1m = find_run(runs, "tree", "arbpipe", 1_000_000)
    if r1m:
        tgt.append({"target": "zero drops at 1M updates/s replayed into the detector",
                    "value": {"input_drops": r1m["drops_detail"]["input_full"],
                              "achieved_rate": round(r1m["achieved_rate"]),
                              "detector_backlog_at_end": r1m["backlog_at_end"]["detector"]},
                    "met": bool(r1m["detector_sustained"])})
    out["targets"] = tgt
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.pipeline")
    ap.add_argument("--rates", default=DEFAULT_RATES)
    ap.add_argument("--profile", default="default", choices=PROFILES)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--transports", default=",".join(TRANSPORTS))
    ap.add_argument("--no-tree", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--books", action="store_true")
    ap.add_argument("--reader", default="auto", choices=("auto", "strategy", "bench"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out-dir", default=RESULTS_DIR)
    a = ap.parse_args(argv)
    res = run(a.rates, a.duration, a.warmup, [t for t in a.transports.split(",") if t],
              tree=not a.no_tree, reader=a.reader, progress=True, repeat=a.repeat,
              profile=a.profile, books=a.books)
    paths = save(res, a.out_dir)
    print(json.dumps(res, indent=1) if a.json else render(res) + "\n\n" + "written: "
          + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
