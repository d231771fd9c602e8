"""``arbpipe bench feeds``: the feed handler's hot path and the frame rate one feed sustains.

1. hot path, frame -> record in the ring: ``Feed.on_frame`` (the method the socket
   workers call: lock, ``adapter.parse``, ``struct.pack_into`` into the sink's buffer,
   one ``push_words`` into a real SPSC ring in /dev/shm) on a Binance ``bookTicker``
   frame (~110 bytes), timed per call with ``perf_counter_ns`` (the timer's own cost is
   measured and reported, not subtracted). The baseline runs the *same* method with the
   adapter's msgspec decoding replaced by ``json.loads`` + dict access (same checks,
   same dedupe, same sink, same ring), interleaved frame by frame in the same run.
2. end to end from sockets: ``python -m procs.feed binance`` as its own process,
   (a) fed by the simulator at max rate (``--rate 0``: the simulator's asyncio server
   formats every frame in Python, so it may be the slower side: the CPU use of both
   processes is reported so the reader can tell), and (b) fed by a raw-socket blaster
   that writes pre-encoded websocket frames (the feed's ceiling). Frames/s are read
   from the feed's shared-memory counters; the bench process drains the ring.
3. every venue, frame -> record in the ring: ``Feed.on_frame`` as in 1, on that venue's
   valid frames (``bench.fuzz.VenueFrames``: the documented shapes, the config's
   instruments, increasing sequence ids, some wrapped / funding frames where the venue
   has them; Coinbase: ``coinbase_frames``, a 50-level book per product whose top moves),
   each repeat after a reconnect (``on_connect``); us/frame = wall time of the
   pass / frames, median (and best) of the repeats. The peer, timed in the same repeats:
   ``json.loads`` of the same frames alone (decoding only: no checks, no record).
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid

import msgspec
import numpy as np
import psutil

from arbpipe.config import load_config
from arbpipe.feeds.connection import Conn
from arbpipe.feeds.feed import Feed
from arbpipe.feeds.runtime import build_adapter
from arbpipe.feeds.sinks import RingSink
from arbpipe.feeds.stats import read_feed_stats
from arbpipe.feeds.venues.binance import BinanceSpot
from arbpipe.sim.server import SimulatorProcess
from arbpipe.symbols import SymbolMap
from arbpipe.transport import segments
from arbpipe.transport.rings import SpscRing
from bench.fuzz import VENUES, VenueFrames
from shm_layouts import Flag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INF = math.inf
_NO_TS = int(Flag.NO_EXCHANGE_TS)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT",
           "LINKUSDT", "LTCUSDT", "DOTUSDT")


def book_ticker(u: int, sym: str = "BTCUSDT") -> bytes:
    """A Binance spot bookTicker frame as the venue (and the simulator) sends it."""
    return (f'{{"u":{u},"s":"{sym}","b":"64998.{u % 100:02d}000000","B":"0.57945000",'
            f'"a":"65001.34000000","A":"0.61234000"}}').encode()


class JsonLoadsBinance(BinanceSpot):
    """The baseline: Binance bookTicker parsing with ``json.loads`` + dict access, with
    the adapter's checks (shape, prices, crossed, dedupe by ``u``) and the same sink calls."""

    def quote_fastpath(self):
        return None                    # every frame through this ``parse``, not the fast path

    def parse(self, frame, recv_ns, sink, socket_index=0):
        try:
            m = json.loads(frame)
        except ValueError:
            sink.reject("not_json")
            return None
        if not isinstance(m, dict) or "u" not in m:
            sink.reject("bad_shape")
            return None
        try:
            s = m["s"]
            bid, bid_qty = float(m["b"]), float(m["B"])
            ask, ask_qty = float(m["a"]), float(m["A"])
            u = int(m["u"])
        except (KeyError, TypeError, ValueError):
            sink.reject("bad_shape")
            return None
        iid = self._ids.get(s)
        if iid is None:
            sink.reject("unknown_symbol")
            return None
        if not (0.0 < bid < _INF and 0.0 < ask < _INF and 0.0 <= bid_qty < _INF
                and 0.0 <= ask_qty < _INF):
            sink.reject("bad_price")
            return None
        if bid > ask:
            sink.reject("crossed")
            return None
        last = self._last_u.get(s)
        if last is not None and u <= last:
            sink.reject("duplicate" if u == last else "out_of_order")
            return None
        self._last_u[s] = u
        sink.quote(iid, bid, ask, bid_qty, ask_qty, 0, _NO_TS)
        return None


def _pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q))


def hot_path(n: int = 50_000, warmup: int = 5_000) -> dict:
    """Median/p99 ns of frame -> record in the ring, msgspec adapter vs json.loads baseline."""
    instance = "bf" + uuid.uuid4().hex[:8]
    adapter, _ = build_adapter("binance")
    base = JsonLoadsBinance(adapter.instruments, adapter.venue_id)
    rings, feeds = [], []
    try:
        for tag, ad in (("msgspec", adapter), ("json", base)):
            ring = SpscRing.create(f"hot.{tag}", 1 << 16, "MarketUpdate", policy="drop",
                                   instance=instance)
            rings.append(ring)
            feeds.append(Feed(ad, "ws://unused:1", RingSink(ring, ad.venue_id)))
        conns = []
        for f in feeds:
            w = f.workers[0]
            w.flowing = w.has_quotes = True       # steady state: no status record
            conns.append((f, w, Conn(None, None)))
        frames = [book_ticker(40_000_000_000 + k) for k in range(n + warmup)]
        out = np.zeros((1 << 16) * 8, np.int64)
        lat = np.zeros((2, n), np.int64)
        pc = time.perf_counter_ns
        tn = time.time_ns
        (fa, wa, ca), (fb, wb, cb) = conns
        on_a, on_b = fa.on_frame, fb.on_frame
        for k in range(n + warmup):
            fr = frames[k]
            t0 = pc()
            on_a(wa, ca, fr, tn())
            t1 = pc()
            on_b(wb, cb, fr, tn())
            t2 = pc()
            if k >= warmup:
                lat[0, k - warmup] = t1 - t0
                lat[1, k - warmup] = t2 - t1
            if k & 1023 == 1023:
                for r in rings:
                    while r.pop_words(out):
                        pass
        for r in rings:
            while r.pop_words(out):
                pass
        pushed = [f.sink.seq for f in feeds]
        dropped = [f.sink.dropped for f in feeds]
        t_over = np.array([pc() - pc() for _ in range(10_000)])
        # context: the ring push of one record alone, and parse alone into a counting sink
        one = np.zeros(8, np.int64)
        push = np.zeros(20_000, np.int64)
        for k in range(20_000):
            t0 = pc()
            rings[0].push_words(one, 1, 0)
            push[k] = pc() - t0
            if k & 1023 == 1023:
                while rings[0].pop_words(out):
                    pass
    finally:
        for r in rings:
            r.unlink()
            r.close()
    a, b = lat
    res = {
        "frame_bytes": len(frames[0]), "frames": n,
        "msgspec_p50_ns": _pct(a, 50), "msgspec_p99_ns": _pct(a, 99),
        "json_loads_p50_ns": _pct(b, 50), "json_loads_p99_ns": _pct(b, 99),
        "records_pushed": pushed, "records_dropped": dropped,
        "timer_overhead_p50_ns": _pct(np.abs(t_over), 50),
        "ring_push_one_p50_ns": _pct(push, 50),
    }
    res["speedup_p50"] = res["json_loads_p50_ns"] / res["msgspec_p50_ns"]
    return res


def coinbase_frames(natives: list, n: int, rng: random.Random, depth: int = 50) -> list:
    """Coinbase ``l2_data`` as a venue sends it to one connection: a snapshot of ``depth``
    levels a side per product, then ``n`` updates, each changing the size at the top of one
    side of one product (so each is one quote; ``VenueFrames``' random levels, made to fuzz,
    mostly cross the book). (frame object, socket index) pairs like ``VenueFrames.valid``."""
    t = "2026-07-26T09:33:07.419487Z"

    def lv(side, px, qty):
        return {"side": side, "event_time": t, "price_level": f"{px:.2f}", "new_quantity": qty}

    def env(seq, ev):
        return {"channel": "l2_data", "client_id": "", "timestamp": t, "sequence_num": seq,
                "events": [ev]}
    out = []
    for sym in natives:
        ups = [lv("bid", 99.99 - 0.01 * k, "1.5") for k in range(depth)]
        ups += [lv("offer", 100.01 + 0.01 * k, "1.5") for k in range(depth)]
        out.append((env(len(out) + 1, {"type": "snapshot", "product_id": sym, "updates": ups}), 0))
    for k in range(n - len(out)):
        side, px = ("bid", 99.99) if k & 1 else ("offer", 100.01)
        ev = {"type": "update", "product_id": natives[(k >> 1) % len(natives)],
              "updates": [lv(side, px, f"{rng.uniform(0.1, 50):.3f}")]}
        out.append((env(len(out) + 1, ev), 0))
    return out


def venue_parse(frames: int = 20_000, repeats: int = 5, venues=VENUES, seed: int = 1) -> list:
    """Per venue: us per frame of ``Feed.on_frame`` (parse, records into a real SPSC ring)
    over ``frames`` valid frames, median and best of ``repeats`` passes, and of
    ``json.loads`` alone over the same frames (the peer), interleaved pass by pass."""
    instance = "bf" + uuid.uuid4().hex[:8]
    smap = SymbolMap.from_config(load_config())
    loads = json.loads
    tn = time.time_ns
    pc = time.perf_counter_ns
    rows = []
    try:
        for venue in venues:
            adapter, _ = build_adapter(venue, None, smap)
            natives = [i.native for i in adapter.instruments]
            rng = random.Random(seed)
            if venue == "coinbase":
                objs = coinbase_frames(natives, frames, rng)
            else:
                gen = VenueFrames(venue, natives, rng)
                objs = [gen.valid() for _ in range(frames)]
            enc = [(msgspec.json.encode(obj), si) for obj, si in objs]
            ring = SpscRing.create(f"parse.{venue}", 1 << max(10, (4 * frames).bit_length()),
                                   "MarketUpdate", policy="drop", instance=instance)
            try:
                feed = Feed(adapter, "ws://unused:1", RingSink(ring, adapter.venue_id))
                for w in feed.workers:
                    w.flowing = w.has_quotes = True       # steady state: no status record
                conns = [Conn(None, None) for _ in feed.workers]
                calls = [(feed.workers[si], conns[si], fr) for fr, si in enc]
                on = feed.on_frame
                out = np.zeros(ring.capacity * 8, np.int64)
                ours, peer, recs, rejs = [], [], [], []
                for rep in range(repeats + 1):             # the first pass warms up, untimed
                    for k in range(len(feed.workers)):
                        adapter.on_connect(k)
                    seq0, rej0 = feed.sink.seq, sum(feed.sink.rejects.values())
                    t0 = pc()
                    for w, c, fr in calls:
                        on(w, c, fr, tn())
                    t1 = pc()
                    for fr, _ in enc:
                        loads(fr)
                    t2 = pc()
                    while ring.pop_words(out):
                        pass
                    if rep:
                        ours.append((t1 - t0) / frames)
                        peer.append((t2 - t1) / frames)
                        recs.append(feed.sink.seq - seq0)
                        rejs.append(sum(feed.sink.rejects.values()) - rej0)
                row = {"venue": venue, "frames": frames, "repeats": repeats,
                       "frame_bytes_mean": sum(len(f) for f, _ in enc) / frames,
                       "records_per_frame": statistics.median(recs) / frames,
                       "rejects_per_pass": statistics.median(rejs),
                       "ring_dropped": feed.sink.dropped,
                       "us_per_frame_median": statistics.median(ours) / 1e3,
                       "us_per_frame_best": min(ours) / 1e3,
                       "json_loads_us_per_frame_median": statistics.median(peer) / 1e3}
                row["ratio_vs_json_loads"] = (row["us_per_frame_median"]
                                              / row["json_loads_us_per_frame_median"])
                rows.append(row)
            finally:
                ring.unlink()
                ring.close()
    finally:
        segments.clean(instance, everything=True)
    return rows


# -- end to end ---------------------------------------------------------------------------------------
def _ws_accept(key: str) -> str:
    guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    return base64.b64encode(hashlib.sha1((key + guid).encode()).digest()).decode()


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload


def _blaster(port_q, seconds: float) -> None:
    """Raw-socket websocket server: one client, handshake, ack, then bookTicker frames as
    fast as the socket takes them (pre-encoded in chunks), for ``seconds``."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port_q.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        chunk = conn.recv(4096)
        if not chunk:
            return
        req += chunk
    key = next(line.split(b":", 1)[1].strip().decode() for line in req.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + _ws_accept(key).encode()
                 + b"\r\n\r\n")
    conn.sendall(_frame(b'{"result":null,"id":1}'))
    u = 40_000_000_000
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            parts = []
            for k in range(4096):
                u += 1
                parts.append(_frame(book_ticker(u, SYMBOLS[k % 10])))
            conn.sendall(b"".join(parts))
    except OSError:
        pass
    finally:
        conn.close()
        srv.close()


def _measure_feed(url: str, seconds: float, others=()) -> dict:
    """Run ``procs.feed binance --url url`` in its own process for ``seconds`` after it
    started delivering; frames/s from its counters, CPU of it and of ``others``."""
    instance = "bf" + uuid.uuid4().hex[:8]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "procs.feed", "binance", "--url", url,
                          "--instance", instance], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ring = None
    out = np.zeros((1 << 16) * 8, np.int64)
    try:
        deadline = time.monotonic() + 60
        rows = []
        while time.monotonic() < deadline and p.poll() is None:
            rows = read_feed_stats(instance, "feed.binance.stats")
            if rows and rows[0]["updates"] > 1000:
                break
            time.sleep(0.05)
        if not rows or rows[0]["updates"] <= 1000:
            raise RuntimeError(f"feed did not start: {p.stderr.read().decode()[-2000:] if p.poll() is not None else ''}")
        ring = SpscRing.attach("feed.binance", instance=instance)
        procs = [psutil.Process(p.pid)] + [psutil.Process(x) for x in others]
        cpu0 = [sum(x.cpu_times()[:2]) for x in procs]
        s0 = read_feed_stats(instance, "feed.binance.stats")[0]
        t0 = time.monotonic()
        consumed = 0
        while time.monotonic() - t0 < seconds:
            n = ring.pop_words(out)
            consumed += n
            if n < 1024:
                time.sleep(0.002)
        dt = time.monotonic() - t0
        s1 = read_feed_stats(instance, "feed.binance.stats")[0]
        cpu1 = [sum(x.cpu_times()[:2]) for x in procs]
        # the counters are published every 0.25 s: use their own timestamps
        span = (s1["updated_ns"] - s0["updated_ns"]) / 1e9 or dt
        res = {"frames_per_s": (s1["frames"] - s0["frames"]) / span,
               "records_per_s": (s1["updates"] - s0["updates"]) / span,
               "ring_dropped": s1["ring_dropped"] - s0["ring_dropped"],
               "rejects": s1["rejects_total"] - s0["rejects_total"],
               "feed_cpu_pct": 100 * (cpu1[0] - cpu0[0]) / dt,
               "other_cpu_pct": [100 * (b - a) / dt for a, b in zip(cpu0[1:], cpu1[1:])],
               "seconds": span}
        return res
    finally:
        if ring is not None:
            ring.close()
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        p.stderr.close()
        segments.clean(instance, everything=True)


def from_simulator(seconds: float = 5.0) -> dict:
    with SimulatorProcess(["--venues", "binance", "--rate", "0"], cwd=ROOT) as sim:
        res = _measure_feed(sim.urls["binance"], seconds, others=[sim.proc.pid])
    res["simulator_cpu_pct"] = res.pop("other_cpu_pct")[0]
    return res


def from_blaster(seconds: float = 5.0) -> dict:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_blaster, args=(q, seconds + 30), daemon=True)
    proc.start()
    try:
        port = q.get(timeout=10)
        res = _measure_feed(f"ws://127.0.0.1:{port}", seconds, others=[proc.pid])
        res["blaster_cpu_pct"] = res.pop("other_cpu_pct")[0]
        return res
    finally:
        proc.terminate()
        proc.join(5)


PARTS = ("hot", "venues", "sim", "blaster")


def run(as_json: bool = False, seconds: float = 5.0, frames: int = 50_000,
        venue_frames: int = 20_000, repeats: int = 5, parts=PARTS) -> dict:
    """The measurements of this module named in ``parts`` (default: all); ``as_json``: no
    progress lines on stderr."""
    def say(msg):
        if not as_json:
            print(msg, file=sys.stderr, flush=True)
    res = {"host": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "python": platform.python_version()}}
    if "hot" in parts:
        say("hot path: frame -> record in the ring ...")
        res["hot_path"] = hot_path(frames)
    if "venues" in parts:
        say(f"every venue: frame -> record in the ring, {venue_frames:,} frames x {repeats} ...")
        res["venues"] = venue_parse(venue_frames, repeats)
    if "sim" in parts:
        say("end to end: simulator at max rate -> procs.feed ...")
        res["simulator"] = from_simulator(seconds)
    if "blaster" in parts:
        say("end to end: raw-socket blaster -> procs.feed (the feed's ceiling) ...")
        res["blaster"] = from_blaster(seconds)
    return res


def render(res: dict) -> str:
    lines = [f"host: {res['host']['cpu']}, {res['host']['cores']} cores, "
             f"Python {res['host']['python']}"]
    h = res.get("hot_path")
    if h:
        lines += [
            "", f"frame -> record in the ring (Binance bookTicker, {h['frame_bytes']} bytes, "
            f"{h['frames']:,} frames, interleaved):",
            "| path | p50 | p99 |", "|---|---:|---:|",
            f"| msgspec adapter (arbpipe) | {h['msgspec_p50_ns'] / 1e3:.2f} us | "
            f"{h['msgspec_p99_ns'] / 1e3:.2f} us |",
            f"| json.loads + dict access | {h['json_loads_p50_ns'] / 1e3:.2f} us | "
            f"{h['json_loads_p99_ns'] / 1e3:.2f} us |",
            f"ratio (json.loads / msgspec, p50): {h['speedup_p50']:.2f}x   "
            f"(timer overhead {h['timer_overhead_p50_ns']:.0f} ns included; ring push of one "
            f"record alone {h['ring_push_one_p50_ns']:.0f} ns)"]
    vs = res.get("venues")
    if vs:
        lines += [
            "", f"every venue, frame -> record in the ring (Feed.on_frame, {vs[0]['frames']:,} "
            f"valid frames, median of {vs[0]['repeats']} passes; peer: json.loads alone of the "
            "same frames, same passes):",
            "| venue | bytes/frame | records/frame | us/frame | best | json.loads us/frame | "
            "on_frame / json.loads | rejects/pass |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for v in vs:
            lines.append(
                f"| {v['venue']} | {v['frame_bytes_mean']:.0f} | {v['records_per_frame']:.2f} | "
                f"{v['us_per_frame_median']:.2f} | {v['us_per_frame_best']:.2f} | "
                f"{v['json_loads_us_per_frame_median']:.2f} | "
                f"{v['ratio_vs_json_loads']:.2f}x | {v['rejects_per_pass']:.0f} |")
    s, b = res.get("simulator"), res.get("blaster")
    if s or b:
        lines += ["", "one feed process (procs.feed binance) from sockets:",
                  "| source | frames/s | records/s | feed CPU | source CPU | dropped | rejects |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, r, src in (("simulator --rate 0", s, "simulator_cpu_pct"),
                             ("raw-socket blaster", b, "blaster_cpu_pct")):
            if r:
                lines.append(f"| {name} | {r['frames_per_s']:,.0f} | {r['records_per_s']:,.0f} | "
                             f"{r['feed_cpu_pct']:.0f}% | {r[src]:.0f}% | {r['ring_dropped']} | "
                             f"{r['rejects']} |")
        lines.append("(a source at ~100% CPU is the bottleneck of its row; the blaster row is "
                     "the feed's own ceiling)")
    return "\n".join(lines)


if __name__ == "__main__":
    as_json = "--json" in sys.argv
    r = run(as_json)
    print(json.dumps(r, indent=1) if as_json else render(r))
