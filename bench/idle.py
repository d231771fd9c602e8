"""``arbpipe bench idle``: the detector process between bursts. What it costs while nothing
arrives, and how soon a record that ends an idle period is detected, against a bare SPSC
doorbell consumer measured in the same run.

The detector: ``python -m procs.detector`` with the default config, in a private instance,
reading the 8 feed rings this process creates and publishing into ``opportunities``, which
this process reads. The peer: one spawned process blocked in ``SpscRing.wait`` on one ring
(re-armed every 0.25 s, the detector's ``idle_poll_ms``), that pops a record and stamps it:
the doorbell alone, without the detector's shared bell over 8 rings and its numba loop.

1. idle: both processes idle in the same ``repeats`` windows of ``idle_s`` seconds; CPU %
   of one core = (user + system CPU time) / wall time of the window, per process (psutil),
   median of the windows; the detector's loop passes per second (``kernel_calls``) and idle
   waits per second (``idle_waits``), read from its stats segment.
2. a record after an idle period: ``samples`` times, ``gap_s`` seconds after the previous
   record (the detector has gone back to sleep on its bell; ``armed`` counts the
   samples where the trigger ring's doorbell had a sleeper at the push), one quote pushed
   on a spot venue's ring (rotating over the spot venues) that opens, then closes, an
   opportunity against a resting Binance quote (refreshed before each gap). Latency =
   the opportunity's ``detect_ns`` - the quote's ``recv_ts_ns`` (the push time): wall
   clock, one host. The peer's samples are interleaved with the detector's (same gaps);
   its latency = its pop time - the record's ``recv_ts_ns``.

Figures only: nothing here fails on a figure.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np
import psutil

from arbpipe.config import DEFAULT_PATH, load_config
from arbpipe.detect.stats import read_stats
from arbpipe.transport import segments
from arbpipe.transport.rings import BroadcastRing, SpscRing
from shm_layouts import MARKET_UPDATE, OPPORTUNITY, Kind, OppState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CTX = mp.get_context("spawn")
SPOT_TRIGGERS = ("gate", "kraken", "coinbase", "bybit-spot", "okx")
PEER_POLL_S = 0.25
READY_TIMEOUT_S = 300.0     # a first start compiles the numba kernels


def quote(venue_id: int, iid: int, bid: float, ask: float, t: int) -> np.ndarray:
    r = np.zeros(1, MARKET_UPDATE)
    r[0] = (iid, venue_id, int(Kind.QUOTE), 0, bid, ask, 50.0, 50.0, 0, t, 1)
    return r


def _peer(instance: str, q, samples: int) -> None:
    """The bare doorbell consumer: ``samples`` records, each stamped at its pop."""
    ring = SpscRing.attach("peer", instance=instance)
    buf = np.zeros(4, MARKET_UPDATE)
    q.put(("ready", os.getpid()))
    try:
        for _ in range(samples):
            while not ring.wait(PEER_POLL_S):
                pass
            ring.pop_batch(buf)
            q.put(("lat", time.time_ns() - int(buf[0]["recv_ts_ns"])))
    finally:
        ring.close()


def _pct(xs: list, q: float) -> float:
    return float(np.percentile(np.asarray(xs, np.float64), q)) if xs else 0.0


def _summary(lat_ns: list) -> dict:
    return {"samples": len(lat_ns), "p50_us": _pct(lat_ns, 50) / 1e3,
            "p90_us": _pct(lat_ns, 90) / 1e3, "max_us": max(lat_ns, default=0) / 1e3}


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _wait_sleeper(ring, deadline_s: float = 1.0) -> bool:
    """True once someone sleeps on ``ring``'s consumer doorbell (False after the deadline)."""
    end = time.monotonic() + deadline_s
    while ring.stats()["sleepers"] == 0:
        if time.monotonic() >= end:
            return False
        time.sleep(0.001)
    return True


def _ready_line(proc: subprocess.Popen, errlog, timeout: float) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        r, _, _ = select.select([proc.stdout], [], [], 0.5)
        if r:
            line = proc.stdout.readline()
            if line.startswith("{"):
                return json.loads(line)
    errlog.seek(0)
    raise RuntimeError(f"the detector did not start (exit {proc.poll()}): "
                       f"{errlog.read()[-2000:]}")


def run(idle_s: float = 2.0, repeats: int = 5, samples: int = 20, gap_s: float = 0.3,
        instance: str | None = None, progress: bool = False) -> dict:
    """Every figure of this module (see the module docstring)."""
    def say(msg):
        if progress:
            print(msg, file=sys.stderr, flush=True)
    inst = instance or "bi" + uuid.uuid4().hex[:8]
    cfg = load_config(DEFAULT_PATH)
    venues = list(cfg.enabled_venues())
    triggers = [v for v in SPOT_TRIGGERS if v in venues]
    iid = cfg.instrument_ids()["BTC/USDT"]
    bin_id = cfg.venue_id("binance")
    feeds, proc, opp, peer_ring, peer, errlog = {}, None, None, None, None, None
    try:
        feeds = {v: SpscRing.create(f"feed.{v}", 1024, "MarketUpdate", policy="drop",
                                    instance=inst) for v in venues}
        peer_ring = SpscRing.create("peer", 1024, "MarketUpdate", policy="drop", instance=inst)
        errlog = tempfile.TemporaryFile("w+")
        say("starting the detector and the bare doorbell consumer ...")
        proc = subprocess.Popen([sys.executable, "-m", "procs.detector", "--config",
                                 DEFAULT_PATH, "--instance", inst], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=errlog, text=True)
        q = CTX.Queue()
        peer = CTX.Process(target=_peer, args=(inst, q, samples), daemon=True)
        peer.start()
        _ready_line(proc, errlog, READY_TIMEOUT_S)
        _, peer_pid = q.get(timeout=120)
        opp = BroadcastRing.attach("opportunities", inst, record="Opportunity")
        opp.join("bench-idle")
        buf = np.zeros(64, OPPORTUNITY)
        procs = {"detector": psutil.Process(proc.pid), "peer": psutil.Process(peer_pid)}

        # 1. idle windows, both processes at once
        say(f"idle: {repeats} x {idle_s:g} s ...")
        feeds["binance"].push_batch(quote(bin_id, iid, 100.00, 100.01, time.time_ns()))
        time.sleep(max(gap_s, 0.5))           # the detector takes it and goes back to sleep
        cpu = {k: [] for k in procs}
        calls, waits = [], []
        for _ in range(repeats):
            c0 = {k: _cpu(p) for k, p in procs.items()}
            s0 = read_stats(inst)
            t0 = time.monotonic()
            time.sleep(idle_s)
            dt = time.monotonic() - t0
            s1 = read_stats(inst)
            for k, p in procs.items():
                cpu[k].append(100.0 * (_cpu(p) - c0[k]) / dt)
            calls.append((s1["kernel_calls"] - s0["kernel_calls"]) / dt)
            waits.append((s1["idle_waits"] - s0["idle_waits"]) / dt)

        # 2. a record after an idle period, detector and peer interleaved
        say(f"a record after {gap_s:g} s idle: {samples} samples each ...")
        det_lat, peer_lat, armed, missed = [], [], 0, 0
        for k in range(samples):
            venue = triggers[(k // 2) % len(triggers)]
            ring = feeds[venue]
            bid = 102.00 if k % 2 == 0 else 100.00        # opens, then closes
            feeds["binance"].push_batch(quote(bin_id, iid, 100.00, 100.01, time.time_ns()))
            time.sleep(gap_s)
            armed += _wait_sleeper(ring)
            t = time.time_ns()
            ring.push_batch(quote(cfg.venue_id(venue), iid, bid, bid + 0.01, t))
            end = time.monotonic() + 10.0
            got = None
            while got is None and time.monotonic() < end:
                n = opp.pop_batch(buf, timeout=0.2)
                hit = np.nonzero(buf[:n]["trigger_recv_ns"] == t)[0]
                if len(hit):
                    got = buf[hit[0]].copy()
            if got is None:
                missed += 1
            else:
                det_lat.append(int(got["detect_ns"]) - t)
            time.sleep(gap_s)
            _wait_sleeper(peer_ring)
            peer_ring.push_batch(quote(bin_id, iid, 100.00, 100.01, time.time_ns()))
            _, lat = q.get(timeout=30)
            peer_lat.append(lat)
        peer.join(30)
        stats = read_stats(inst)
        res = {"host": {"cpu": platform.processor() or platform.machine(),
                        "cores": os.cpu_count(), "python": platform.python_version()},
               "instance": inst, "idle_s": idle_s, "repeats": repeats, "gap_s": gap_s,
               "cpu_pct_resolution": 100.0 / (os.sysconf("SC_CLK_TCK") * idle_s),
               "detector": {"idle_cpu_pct": statistics.median(cpu["detector"]),
                            "idle_cpu_pct_runs": cpu["detector"],
                            "kernel_calls_per_s": statistics.median(calls),
                            "idle_waits_per_s": statistics.median(waits),
                            "sweep_ms": cfg.detector.sweep_ms,
                            "idle_poll_ms": cfg.detector.idle_poll_ms,
                            "wake": {**_summary(det_lat), "armed": armed, "missed": missed},
                            "opened": stats["opened"], "closed": stats["closed"]},
               "peer": {"idle_cpu_pct": statistics.median(cpu["peer"]),
                        "idle_cpu_pct_runs": cpu["peer"], "poll_ms": PEER_POLL_S * 1e3,
                        "wake": _summary(peer_lat)}}
        pw = res["peer"]["wake"]["p50_us"]
        res["wake_p50_ratio_detector_vs_peer"] = (res["detector"]["wake"]["p50_us"] / pw
                                                  if pw else None)
        return res
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            proc.stdout.close()
        if peer is not None and peer.is_alive():
            peer.kill()
            peer.join(10)
        if errlog is not None:
            errlog.close()
        if opp is not None:
            opp.close()
        for r in list(feeds.values()) + ([peer_ring] if peer_ring is not None else []):
            r.close()
        segments.clean(inst, everything=True)


def render(res: dict) -> str:
    h, d, p = res["host"], res["detector"], res["peer"]
    dw, pw = d["wake"], p["wake"]
    ratio = res["wake_p50_ratio_detector_vs_peer"]
    return "\n".join([
        f"host: {h['cpu']}, {h['cores']} cores, Python {h['python']}",
        "",
        f"idle and the first record after {res['gap_s']:g} s idle: procs.detector (8 feed "
        "rings, default config) vs a bare SPSC doorbell consumer (own process), same run:",
        f"| process | idle CPU, % of a core (median of {res['repeats']} x {res['idle_s']:g} s) "
        "| record -> detected/popped p50 | p90 | max | samples |",
        "|---|---:|---:|---:|---:|---:|",
        f"| detector | {d['idle_cpu_pct']:.2f}% | {dw['p50_us']:.0f} us | {dw['p90_us']:.0f} us | "
        f"{dw['max_us']:.0f} us | {dw['samples']} |",
        f"| bare doorbell consumer | {p['idle_cpu_pct']:.2f}% | {pw['p50_us']:.0f} us | "
        f"{pw['p90_us']:.0f} us | {pw['max_us']:.0f} us | {pw['samples']} |",
        f"(CPU time is counted in clock ticks: {res['cpu_pct_resolution']:.2f}% of a window is "
        "one tick)",
        "ratio (detector / bare doorbell, p50 after idle): " + (f"{ratio:.2f}x" if ratio else "-"),
        f"detector idle: {d['kernel_calls_per_s']:.1f} loop passes/s, {d['idle_waits_per_s']:.1f} "
        f"idle waits/s (sweep every {d['sweep_ms']:g} ms, its bell sleeps at most "
        f"{d['idle_poll_ms']:g} ms); the trigger ring's doorbell armed at {dw['armed']} of "
        f"{dw['samples'] + dw['missed']} pushes; {dw['missed']} not detected within 10 s",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.idle")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--idle-seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--gap", type=float, default=0.3)
    a = ap.parse_args(argv)
    res = run(a.idle_seconds, a.repeats, a.samples, a.gap, progress=not a.json)
    print(json.dumps(res, indent=1) if a.json else render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
