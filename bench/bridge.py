"""``arbpipe bench bridge``: the bridge on this host -- records/s through out -> Redis -> in,
and the latency the hop adds at fixed rates, against the same hop over a local ring, in one
run.

Set-up: a private ``redis-server`` (unix socket, no persistence; ``--url`` for another
server), two private instances A and B, and the real bridge processes: ``procs.bridge
--side out`` tapping A's ``feed.okx`` ring and ``--side in`` publishing into B's ``feed.okx``
ring (the default config, ``[bridge]`` set for it). This process generates MarketUpdates
into A's ring (``recv_ts_ns`` = the push time) and drains that ring as a detector would (a
thread popping it: the out side only peeks); one spawned reader pops B's ring and stamps
each record. The peer, in the same run: the generator pushes into a local SPSC ring that
the same kind of spawned reader pops.

1. throughput: ``records`` quotes pushed into A's ring as fast as it takes them; records/s =
   records / (the reader's last pop - the first push).
2. latency at each rate (10K and 100K updates/s by default), ``duration`` s each: reader pop
   time - ``recv_ts_ns`` per record (p50 / p99 / p99.9 / max), for the bridge and for the
   local ring; added = bridge - local, per percentile. Wall clock, one host.

Figures only: nothing here fails on a figure.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import numpy as np

from arbpipe.config import DEFAULT_PATH, VENUE_IDS
from arbpipe.persist.redis_embed import EmbeddedRedis, redis_server_path
from arbpipe.transport import segments
from arbpipe.transport.rings import SpscRing
from arbpipe.transport.stateblob import read_blob
from bench.harness import cpu_name
from shm_layouts import MARKET_UPDATE, Kind

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CTX = mp.get_context("spawn")
RING_CAP = 1 << 18
READY_TIMEOUT_S = 300.0          # a first start compiles the numba kernels
OKX = VENUE_IDS["okx"]
TICK_S = 200e-6                  # the generator's pause when nothing is due


def _reader(instance: str, ring: str, count: int, out_path: str, timeout_s: float,
            ready) -> None:
    """Spawned: pop ``count`` quotes from ``ring`` (STATUS records skipped), stamp each pop,
    save [recv_ts, pop_ns] pairs to ``out_path`` (.npy)."""
    r = SpscRing.attach(ring, instance, record="MarketUpdate")
    r.join("bench")
    buf = np.zeros(4096, MARKET_UPDATE)
    got = np.zeros((count, 2), np.int64)
    n = 0
    ready.set()
    deadline = time.monotonic() + timeout_s
    try:
        while n < count and time.monotonic() < deadline:
            k = r.pop_batch(buf, timeout=0.2)
            if not k:
                continue
            t = time.time_ns()
            recs = buf[:k]
            q = recs[recs["kind"] == int(Kind.QUOTE)]
            m = min(len(q), count - n)
            got[n:n + m, 0] = q["recv_ts_ns"][:m]
            got[n:n + m, 1] = t
            n += m
    finally:
        r.close()
        np.save(out_path, got[:n])


def _quotes(n: int) -> np.ndarray:
    r = np.zeros(n, MARKET_UPDATE)
    r["instrument_id"], r["venue_id"], r["kind"] = 1, OKX, int(Kind.QUOTE)
    r["bid"], r["ask"], r["bid_qty"], r["ask_qty"] = 100.0, 100.5, 1.0, 1.0
    return r


class Generator:
    """Pushes quotes into a ring at a fixed rate (or as fast as it takes them)."""

    def __init__(self, ring):
        self.ring = ring
        self.buf = _quotes(4096)
        self.seq = 0

    def run(self, total: int, rate: float | None) -> tuple[int, int, float]:
        """(records pushed, refused, seconds)."""
        sent = refused = 0
        t0 = time.perf_counter()
        while sent < total:
            due = total - sent if rate is None else \
                min(int((time.perf_counter() - t0) * rate) + 1, total) - sent
            if due <= 0:
                time.sleep(TICK_S)         # records due meanwhile go out together
                continue
            n = min(due, len(self.buf))
            b = self.buf[:n]
            b["recv_ts_ns"] = time.time_ns()
            b["seq"] = self.seq + 1 + np.arange(n, dtype=np.uint64)
            self.seq += n
            k = self.ring.push_batch(b)
            sent += n
            refused += n - k
            if rate is None and k < n:
                time.sleep(100e-6)
        return sent, refused, time.perf_counter() - t0


class Drain(threading.Thread):
    """Pops a ring (the part a detector plays on A's feed ring)."""

    def __init__(self, ring):
        super().__init__(daemon=True)
        self.ring, self.stop = ring, threading.Event()
        self.popped = 0

    def run(self):
        self.ring.join("detector")
        buf = np.zeros(8192, MARKET_UPDATE)
        while not self.stop.is_set():
            self.popped += self.ring.pop_batch(buf, timeout=0.05)


def _stats(pairs: np.ndarray) -> dict:
    if not len(pairs):
        return {"n": 0}
    lat = (pairs[:, 1] - pairs[:, 0]) / 1e3          # us
    return {"n": int(len(lat)), "p50_us": float(np.percentile(lat, 50)),
            "p99_us": float(np.percentile(lat, 99)),
            "p999_us": float(np.percentile(lat, 99.9)), "max_us": float(lat.max())}


def _config(path: str, bridge: dict) -> str:
    text = open(DEFAULT_PATH).read()
    head, sep, rest = text.partition("\n[bridge]")
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in bridge.items())
    with open(path, "w") as f:
        f.write(head + sep + "\n" + body)
    return path


def _measure(gen_ring, reader_instance, reader_ring, total, rate, work, timeout_s):
    out = os.path.join(work, f"lat-{uuid.uuid4().hex[:6]}.npy")
    ready = CTX.Event()
    p = CTX.Process(target=_reader, args=(reader_instance, reader_ring, total, out,
                                          timeout_s, ready))
    p.start()
    ready.wait(60)
    sent, refused, secs = Generator(gen_ring).run(total, rate)
    p.join(timeout_s + 30)
    pairs = np.load(out) if os.path.exists(out) else np.zeros((0, 2), np.int64)
    return pairs, sent, refused, secs


def run(rates=(10_000, 100_000), duration: float = 3.0, records: int = 200_000,
        url: str | None = None, progress: bool = True) -> dict:
    def say(msg):
        if progress:
            print(f"[bench bridge] {msg}", file=sys.stderr, flush=True)
    work = tempfile.mkdtemp(prefix="arbpipe-bb-", dir="/tmp")
    a, b = "ba" + uuid.uuid4().hex[:8], "bb" + uuid.uuid4().hex[:8]
    srv = None
    procs: list[subprocess.Popen] = []
    rings = []
    drain = None
    try:
        if url is None:
            if redis_server_path() is None:
                raise RuntimeError("redis-server is not installed (scripts/install-redis), "
                                   "or give --url")
            srv = EmbeddedRedis(os.path.join(work, "redis"))
            os.makedirs(srv.directory, exist_ok=True)
            srv.start()
            url = srv.url
        src = SpscRing.create("feed.okx", RING_CAP, "MarketUpdate", policy="drop", instance=a)
        dst = SpscRing.create("feed.okx", RING_CAP, "MarketUpdate", policy="drop", instance=b)
        local = SpscRing.create("bench.local", RING_CAP, "MarketUpdate", policy="drop",
                                instance=b)
        rings = [src, dst, local]
        cfg_a = _config(os.path.join(work, "a.toml"),
                        {"enabled": True, "out_rings": ["feed.okx"]})
        cfg_b = _config(os.path.join(work, "b.toml"),
                        {"enabled": True, "remote_instance": a, "remote_venues": ["okx"],
                         "start": "newest"})
        env = dict(os.environ, ARBPIPE_BRIDGE_URL=url, ARBPIPE_RUN_DIR=os.path.join(work, "run"),
                   PYTHONUNBUFFERED="1")
        for side, cfg, inst in (("out", cfg_a, a), ("in", cfg_b, b)):
            log = open(os.path.join(work, f"bridge-{side}.log"), "w")
            procs.append(subprocess.Popen([sys.executable, "-m", "procs.bridge", "--side", side,
                                           "--config", cfg, "--instance", inst], cwd=ROOT,
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
        drain = Drain(src)
        drain.start()
        say("waiting for the bridge (a first start compiles numba kernels)")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (read_blob(b, "bridge.in.state") or {}).get("link") != "UP":
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the bridge did not come up; logs in {work}")
            time.sleep(0.1)
        _measure(src, b, "feed.okx", 2000, 20_000, work, 60)           # warm-up
        say(f"throughput: {records:,} records as fast as they go")
        pairs, sent, refused, secs = _measure(src, b, "feed.okx", records, None, work, 120)
        thr = {"records": int(sent), "refused_at_source": int(refused),
               "received": int(len(pairs))}
        if len(pairs):
            span = (pairs[-1, 1] - pairs[0, 0]) / 1e9
            thr.update(seconds=span, records_per_s=len(pairs) / span if span > 0 else None)
        res = {"throughput": thr, "rates": [],
               "host": {"cpu": cpu_name(), "cores": os.cpu_count(),
                        "python": sys.version.split()[0]},
               "redis": "private redis-server, unix socket" if srv else "given --url",
               "batch": 512, "duration_s": duration}
        for rate in rates:
            n = int(rate * duration)
            say(f"{rate:,}/s for {duration:g} s: bridge")
            pb, sb, rb, tb = _measure(src, b, "feed.okx", n, rate, work, duration + 60)
            say(f"{rate:,}/s for {duration:g} s: local ring")
            pl, sl, rl, tl = _measure(local, b, "bench.local", n, rate, work, duration + 60)
            row = {"rate": rate, "bridge": _stats(pb), "local": _stats(pl),
                   "bridge_achieved": sb / tb, "local_achieved": sl / tl,
                   "bridge_received": int(len(pb)), "local_received": int(len(pl)),
                   "sent": n, "refused": int(rb + rl)}
            if row["bridge"]["n"] and row["local"]["n"]:
                row["added"] = {k: row["bridge"][k] - row["local"][k]
                                for k in ("p50_us", "p99_us", "p999_us")}
            res["rates"].append(row)
        st_in = read_blob(b, "bridge.in.state") or {}
        st_out = read_blob(a, "bridge.out.state") or {}
        s = (st_in.get("streams") or {}).get("feed.okx") or {}
        res["bridge_counters"] = {
            "out_sent": ((st_out.get("rings") or {}).get("feed.okx") or {}).get("sent"),
            "out_missed": ((st_out.get("rings") or {}).get("feed.okx") or {}).get("missed"),
            "in_published": s.get("published"), "in_gaps": s.get("gaps"),
            "in_duplicates": s.get("duplicates"), "in_ring_dropped": s.get("ring_dropped")}
        return res
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if drain is not None:
            drain.stop.set()
            drain.join(5)
        for r in rings:
            r.close()
            r.unlink()
        for inst in (a, b):
            segments.clean(inst, everything=True)
        if srv is not None:
            srv.stop(remove_data=True)
        shutil.rmtree(work, ignore_errors=True)


def _us(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def render(res: dict) -> str:
    t = res["throughput"]
    lines = [f"arbpipe bench bridge: out -> Redis ({res['redis']}) -> in, one host "
             f"({res['host']['cpu']}, {res['host']['cores']} cores, Python "
             f"{res['host']['python']}); [bridge] batch {res['batch']}",
             f"throughput: {t.get('received', 0):,} of {t['records']:,} records in "
             f"{t.get('seconds', float('nan')):.2f} s: "
             f"{_us(t.get('records_per_s'))} records/s (source refused {t['refused_at_source']})",
             "latency, push -> reader pop (us): p50 / p99 / p99.9 / max",
             f"  {'rate':>8} {'achieved':>9}  {'local ring':>30}  {'bridge':>30}  "
             f"{'added p50 / p99 / p99.9':>26}  received (bridge/local)"]
    for r in res["rates"]:
        def q(s):
            return " / ".join(_us(s.get(k)) for k in ("p50_us", "p99_us", "p999_us",
                                                         "max_us")) if s["n"] else "-"
        add = r.get("added") or {}
        lines.append(f"  {r['rate']:>8,} {r['bridge_achieved']:>9,.0f}  {q(r['local']):>30}  "
                     f"{q(r['bridge']):>30}  "
                     f"{' / '.join(_us(add.get(k)) for k in ('p50_us', 'p99_us', 'p999_us')):>26}"
                     f"  {r['bridge_received']:,}/{r['local_received']:,} of {r['sent']:,}")
    c = res.get("bridge_counters") or {}
    lines.append("bridge counters: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    return "\n".join(lines)
