"""``arbpipe bench live``: hop latency of the tree `make up` runs, at the rate it runs.

`arbpipe bench pipeline` replays a synthetic stream at chosen rates; this one measures what
a user gets: the default config (config/arbpipe.toml: 8 venues on the local simulator at its
default rate, books on, the paper strategy trading, dashboard and persister running) started
with `arbpipe up --detach` under a private instance and run dir, with only ``[cpu]`` changed
per variant:

* ``default``: ``profile = "default"``, the automatic CPU plan (nothing spins);
* ``low-latency``: ``profile = "low-latency"`` (the hot roles spin, or yield on a shared core);
* ``realtime``: the default profile with ``realtime_priority = 10`` (the detector and the
  strategy under SCHED_FIFO);
* ``feeds-hot``: the default profile with the feed handlers on the hot core too (every hop
  a same-core wake-up), the plan the host's wake-up costs suggest and the one measured here
  to lose: the simulator's ticks wake all eight feeds at once on the detector's core.

Beside them, in the same run, the host's floor (``wake_floor``): the one-way latency of
waking a process blocked on a bare POSIX semaphore, other core and same core, after
``FLOOR_GAP_S`` idle (about the gap between two ticks of the default simulator): what no
sleeping consumer on this host can beat.

Per run: once every role has run ``settle_s`` seconds, the hop histograms (``hist.<hop>``,
written by the detector and the strategy), the detector's update counter and the CPU time of
every process of the tree are read, again ``duration_s`` later; the figures are of that
window only (difference of the two snapshots). Variants are interleaved run by run
(``repeat`` rounds) so that the host's load falls on all of them alike; the report gives the
median of the runs and their min-max. Figures only: nothing here fails on a figure.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import platform
import re
import tempfile
import time
import uuid
from multiprocessing import shared_memory

import numpy as np
import posix_ipc
import psutil

from arbpipe.config import DEFAULT_PATH
from arbpipe.detect.stats import read_stats
from arbpipe.transport import histogram as H
from arbpipe.transport import segments
from bench.harness import Tree, cpu_name, cpu_seconds, save_result, spread, tree_processes

HOPS = ("feed_to_detector", "detect", "publish_to_strategy", "total")
VARIANTS = {      # name -> ([cpu] settings, per-role cores: "hot" = the last core)
    "default": ({}, {}),
    "low-latency": ({"profile": '"low-latency"'}, {}),
    "realtime": ({"realtime_priority": "10"}, {}),
    "feeds-hot": ({}, {"feed": "hot"}),
}
FLOOR_GAP_S = 0.005
FLOOR_SAMPLES = 300


def _config(path: str, variant: str) -> str:
    """config/arbpipe.toml with metrics on a free port and the variant's ``[cpu]``."""
    settings, cores = VARIANTS[variant]
    text = open(DEFAULT_PATH).read()
    text = re.sub(r"(?m)^metrics_port = .*$", "metrics_port = 0", text, count=1)
    for key, value in settings.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)
        assert n == 1, key
    avail = sorted(psutil.Process().cpu_affinity())
    for role, where in cores.items():
        text = re.sub(rf'(?m)^{role} = "auto"$', f"{role} = {avail[-1:]}", text, count=1)
    with open(path, "w") as f:
        f.write(text)
    return path


def _snap(instance: str, procs) -> dict:
    s = read_stats(instance)
    return {"t": time.monotonic(), "cpu_s": sum(cpu_seconds(procs).values()),
            "updates": int(s["updates"]) if s else 0,
            "hists": {h: H.read_histogram(instance, h) for h in HOPS}}


def _hop(new, old) -> dict:
    """p50/p99/p99.9/count of a hop over the window (µs)."""
    if new is None:
        return {"count": 0}
    s = H.summary(H.diff(new, old))
    return {"count": s["count"], **{k.replace("_ns", "_us"): round(s[k] / 1e3, 1)
                                    for k in ("p50_ns", "p99_ns", "p999_ns")}}


def _floor_child(sem_name: str, shm_name: str, n: int, cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    sem = posix_ipc.Semaphore(sem_name)
    shm = shared_memory.SharedMemory(shm_name)
    a = np.ndarray((n + 1,), np.int64, shm.buf)
    for i in range(n):
        sem.acquire()
        a[i] = time.time_ns() - a[n]
    del a
    shm.close()


def wake_floor(waker: int, sleeper: int, gap_s: float = FLOOR_GAP_S,
               n: int = FLOOR_SAMPLES) -> dict:
    """One-way µs (p50/p99) from a ``sem_post`` on core ``waker`` to the return of
    ``sem_wait`` in a process on core ``sleeper`` that was idle ``gap_s`` before each post
    (bare posix_ipc: no ring, no numba; hand-written because it is the floor itself)."""
    tag = uuid.uuid4().hex[:12]
    sem = posix_ipc.Semaphore(f"/arbpipe-floor-{tag}", posix_ipc.O_CREX, 0o600, 0)
    shm = shared_memory.SharedMemory(f"arbpipe-floor-{tag}", create=True, size=8 * (n + 1))
    a = np.ndarray((n + 1,), np.int64, shm.buf)
    p = mp.get_context("fork").Process(target=_floor_child, args=(sem.name, shm.name, n,
                                                                  sleeper))
    before = os.sched_getaffinity(0)
    try:
        p.start()
        os.sched_setaffinity(0, {waker})
        time.sleep(0.2)
        for _ in range(n):
            time.sleep(gap_s)
            a[n] = time.time_ns()
            sem.release()
        p.join(30)
        lat = np.sort(a[:n].astype(float) / 1e3)
    finally:
        os.sched_setaffinity(0, before)
        if p.is_alive():
            p.kill()
        del a
        shm.close()
        shm.unlink()
        sem.unlink()
    return {"p50_us": round(float(np.percentile(lat, 50)), 1),
            "p99_us": round(float(np.percentile(lat, 99)), 1), "samples": n}


def floors(gap_s: float = FLOOR_GAP_S) -> dict:
    cores = sorted(os.sched_getaffinity(0))
    hot = cores[-1]
    out = {"gap_s": gap_s, "same_core": wake_floor(hot, hot, gap_s)}
    if len(cores) > 1:
        out["other_core"] = wake_floor(cores[0], hot, gap_s)
    return out


def run_once(variant: str, settle_s: float, duration_s: float, timeout_s: float = 300.0) -> dict:
    inst = "lv" + uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="arbpipe-live-") as work:
        tree = Tree(inst, work, _config(os.path.join(work, "arbpipe.toml"), variant))
        try:
            tree.up()
            try:
                st = tree.wait_running(settle_s, timeout_s)
            except RuntimeError as e:
                raise RuntimeError(f"{variant}: {e}") from None
            procs = list(tree_processes(st))
            a = _snap(inst, procs)
            time.sleep(duration_s)
            b = _snap(inst, procs)
        finally:
            tree.down()
        left = len(segments.list_segments(inst))
    wall = b["t"] - a["t"]
    return {"variant": variant, "window_s": round(wall, 2),
            "updates_per_s": round((b["updates"] - a["updates"]) / wall, 1),
            "tree_cpu_pct": round(100 * (b["cpu_s"] - a["cpu_s"]) / wall, 1),
            "hops": {h: _hop(b["hists"][h], a["hists"][h]) for h in HOPS},
            "segments_left": left}


def _med(runs: list[dict], f) -> dict:
    return spread(f(r) for r in runs)


def combine(runs: list[dict]) -> dict:
    out = {"runs": len(runs),
           "updates_per_s": _med(runs, lambda r: r["updates_per_s"]),
           "tree_cpu_pct": _med(runs, lambda r: r["tree_cpu_pct"]), "hops": {}}
    for h in HOPS:
        out["hops"][h] = {q: _med(runs, lambda r, q=q: r["hops"][h].get(q))
                          for q in ("p50_us", "p99_us", "p999_us")}
    return out


def run(variants=tuple(VARIANTS), repeat: int = 3,
        settle_s: float = 20.0, duration_s: float = 60.0, progress=print) -> dict:
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"variant {v!r}: use one of {', '.join(VARIANTS)}")
    runs, floor = [], []
    for k in range(repeat):
        floor.append(floors())
        for v in variants:
            if progress:
                progress(f"live: round {k + 1}/{repeat}, {v} ...")
            runs.append(run_once(v, settle_s, duration_s))
            if progress:
                r = runs[-1]
                progress(f"live: {v}: {r['updates_per_s']:.0f} updates/s, total p50 "
                         f"{r['hops']['total'].get('p50_us')} µs p99 "
                         f"{r['hops']['total'].get('p99_us')} µs")
    return {"measured": time.strftime("%Y-%m-%d %H:%M:%S"),
            "host": {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
                     "python": platform.python_version(),
                     "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
            "command": f"arbpipe bench live --repeat {repeat} --settle {settle_s:g} "
                       f"--duration {duration_s:g} --variants {','.join(variants)}",
            "settle_s": settle_s, "duration_s": duration_s, "variants": list(variants),
            "runs": runs, "summary": {v: combine([r for r in runs if r["variant"] == v])
                                      for v in variants},
            "floor_runs": floor,
            "floor": {k: {q: _med(floor, lambda f, k=k, q=q: f.get(k, {}).get(q))
                          for q in ("p50_us", "p99_us")}
                      for k in ("same_core", "other_core")}}


def save(res: dict) -> str:
    return save_result(res, "live.json")
