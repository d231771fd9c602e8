"""``arbpipe bench rings``: arbpipe's rings against what a Python user would otherwise pick.

Same workload for every transport: 64-byte records taken from one deterministic
pool, producer and consumer in separate spawned processes pinned to different
cores (when the host has two), a fixed record count per run, and the payload
checksum verified by the consumer. One-way latency: one record at a time at a
steady rate, stamped with CLOCK_MONOTONIC (system-wide) by the producer and read
by the consumer. The floor (bare numba ring, cache-line ping-pong) is measured in
the same run so arbpipe can be stated as a fraction/multiple of it.

One file on purpose (about 700 lines): every transport's producer and consumer sit side by
side, so that a reader can check that each peer runs the same workload as arbpipe.
"""
from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import platform
import shutil
import struct
import subprocess
import tempfile
import time
import traceback
import uuid

import numpy as np
import posix_ipc
import psutil
from numba import njit

from arbpipe.transport import kernels as K
from arbpipe.transport import segments
from arbpipe.transport.atomics import cpu_relax
from arbpipe.clock import monotonic_ns
from arbpipe.transport.rings import BroadcastRing, MpmcRing, SpscRing
from bench import floor as F
from shm_layouts import ring as L

CTX = mp.get_context("spawn")
RW = 8                 # words per 64-byte record
POOL = 64 * 1024       # records in the payload pool
BATCH = 1024           # records per batch in batched mode
RING_CLASSES = {"arbpipe-spsc": SpscRing, "arbpipe-mpmc": MpmcRing,
                "arbpipe-broadcast": BroadcastRing}
KIND_ID = {t: int(cls.KIND) for t, cls in RING_CLASSES.items()}   # for the numba kernels
PEERS = ["mp-queue", "mp-pipe", "faster-fifo", "pyzmq", "redis-streams"]
ALL = ["floor"] + list(RING_CLASSES) + PEERS


def pool_words() -> np.ndarray:
    rng = np.random.default_rng(20261123)
    return rng.integers(0, 1 << 20, size=POOL * RW, dtype=np.int64)


def expected_checksum(n: int) -> int:
    col = pool_words()[1::RW]
    full, rest = divmod(n, POOL)
    return int(col.sum()) * full + int(col[:rest].sum())


def pool_bytes() -> list[bytes]:
    p = pool_words()
    return [p[i * RW:(i + 1) * RW].tobytes() for i in range(POOL)]


def _pin(core):
    if core is not None:
        try:
            psutil.Process().cpu_affinity([core])
        except (AttributeError, OSError):
            pass


def cores():
    try:
        avail = sorted(psutil.Process().cpu_affinity())
    except AttributeError:
        avail = list(range(os.cpu_count() or 1))
    return (avail[0], avail[1]) if len(avail) > 1 else (avail[0], avail[0])


# ------------------------------------------------------------------ children --

def _child(role, transport, mode, p, core, start, q):
    _pin(core)
    try:
        fn = globals()[f"_{role}_{transport.replace('-', '_')}"]
        res = fn(mode, p, start, q)
    except Exception as e:  # reported, the run goes on with the next transport
        res = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-800:]}
        q.put(("ready", role))
    q.put((role, res))


@njit(cache=True, nogil=True)
def checksum(words, k):
    """Sum of word 1 of k records: the consumer-side check every transport pays."""
    s = 0
    for i in range(k):
        s += words[i * RW + 1]
    return s


def _ready(q, role):
    q.put(("ready", role))


# --- floor
def _prod_floor(mode, p, start, q):
    seg = _raw_attach(p["shm"])
    pool = pool_words()
    F.bare_produce(np.zeros(F.DATA + 2048 * RW, np.int64), pool, 1000, 256, 2048)  # compile
    _ready(q, "prod")
    start.wait()
    if mode == "pingpong":
        return {"ns": F.pingpong(seg, 0, p["rounds"])}
    t = time.monotonic_ns()
    F.bare_produce(seg, pool, p["n"], BATCH, p["cap"])
    return {"t0": t}


def _cons_floor(mode, p, start, q):
    seg = _raw_attach(p["shm"])
    warm = np.zeros(F.DATA + 64 * RW, np.int64)
    warm[F.HEAD] = 1
    F.bare_consume(warm, 1, 1, 64)  # compile
    F.pingpong(warm, 1, 0)
    _ready(q, "cons")
    start.wait()
    if mode == "pingpong":
        return {"ns": F.pingpong(seg, 1, p["rounds"])}
    csum, _ = F.bare_consume(seg, p["n"], BATCH, p["cap"])
    return {"t1": time.monotonic_ns(), "csum": int(csum), "count": p["n"]}


def _raw_attach(name):
    shm = posix_ipc.SharedMemory(name)
    mm = mmap.mmap(shm.fd, shm.size)
    shm.close_fd()
    return np.frombuffer(mm, np.int64)


# --- arbpipe rings
def _prod_arbpipe(transport, mode, p, start, q):
    ring = RING_CLASSES[transport].attach(p["ring"], instance=p["instance"])
    pool = pool_words()
    views = [pool[i * RW:(i + 1) * RW] for i in range(POOL)]
    bcast = transport == "arbpipe-broadcast"
    pos_w = L.W_READERS + L.R_POSITION  # the bench reader takes slot 0
    cap = ring.capacity
    w = ring.w
    if mode == "latency":  # compile/load before the clock starts
        _lat_prod_kernel(w, KIND_ID[transport], np.zeros(RW, np.int64), ring.cursors, 0, 1)
    _ready(q, "prod")
    start.wait()
    if mode == "latency":
        return _lat_prod(ring, p)
    n = p["n"]
    t = time.monotonic_ns()
    if mode == "batched":
        sent = 0
        while sent < n:
            b = min(BATCH, n - sent)
            off = (sent % POOL) * RW
            if bcast:  # bench-side flow control so the checksum stays comparable
                while K.head_of(w) + b - w[pos_w] > cap:
                    os.sched_yield()
            sent += ring.push_words(pool[off:off + b * RW], b)
    else:
        push = ring.push_words
        for i in range(n):
            if bcast and (i & 255) == 0:
                while K.head_of(w) + 256 - w[pos_w] > cap:
                    os.sched_yield()
            push(views[i % POOL], 1)
    return {"t0": t}


def _cons_arbpipe(transport, mode, p, start, q):
    ring = RING_CLASSES[transport].attach(p["ring"], instance=p["instance"])
    ring.join("bench")
    checksum(np.zeros(RW, np.int64), 1)
    if mode == "latency":
        _lat_cons_kernel(ring.w, KIND_ID[transport], np.zeros(RW, np.int64), ring.cursors,
                         ring.slot_w, np.zeros(0, np.int64))
    _ready(q, "cons")
    start.wait()
    if mode == "latency":
        return _lat_cons(ring, p)
    n = p["n"]
    m = BATCH if mode == "batched" else 1
    buf = np.zeros(BATCH * RW, np.int64)
    got = 0
    csum = 0
    pop = ring.pop_words
    while got < n:
        k = pop(buf, m)
        if k == 0:
            if not ring.wait(10.0):
                break
            continue
        csum += checksum(buf, k)
        got += k
    res = {"t1": time.monotonic_ns(), "csum": csum, "count": got}
    if transport == "arbpipe-broadcast":
        res["lost"] = ring.reader_stats()["lost"]
    return res


for _t in RING_CLASSES:
    _n = _t.replace("-", "_")
    globals()[f"_prod_{_n}"] = (lambda t: lambda *a: _prod_arbpipe(t, *a))(_t)
    globals()[f"_cons_{_n}"] = (lambda t: lambda *a: _cons_arbpipe(t, *a))(_t)


@njit(cache=True, nogil=True)
def _lat_prod_kernel(w, kind, rec, st, n, period_ns):
    nxt = monotonic_ns() + 2_000_000
    for i in range(n):
        while monotonic_ns() < nxt:
            cpu_relax()
        rec[1] = i
        rec[2] = monotonic_ns()
        while True:
            if kind == K.KIND_SPSC:
                r = K.spsc_push(w, rec, 1, st)
            elif kind == K.KIND_MPMC:
                r = K.mpmc_push(w, rec, 1)
            else:
                r = K.bcast_push(w, rec, 1)
            if r & K.COUNT_MASK:
                break
            cpu_relax()
        nxt += period_ns


@njit(cache=True, nogil=True)
def _lat_cons_kernel(w, kind, buf, st, slot_w, out):
    n = len(out)
    for i in range(n):
        while True:
            if kind == K.KIND_SPSC:
                r = K.spsc_pop(w, buf, 1, st, slot_w)
            elif kind == K.KIND_MPMC:
                r = K.mpmc_pop(w, buf, 1, slot_w)
            else:
                r = K.bcast_pop(w, buf, 1, slot_w)
            if r & K.COUNT_MASK:
                break
            cpu_relax()
        out[i] = monotonic_ns() - buf[2]


def _lat_prod(ring, p):
    n, period = p["samples"], int(1e9 / p["rate"])
    rec = np.zeros(RW, np.int64)
    if p["driver"] == "numba":
        _lat_prod_kernel(ring.w, KIND_ID[p["transport"]], rec, ring.cursors, n, period)
        return {}
    nxt = time.monotonic_ns() + 2_000_000
    for i in range(n):
        while time.monotonic_ns() < nxt:
            pass
        rec[1] = i
        rec[2] = time.monotonic_ns()
        ring.push_words(rec, 1)
        nxt += period
    return {}


def _lat_cons(ring, p):
    out = np.zeros(p["samples"], np.int64)
    buf = np.zeros(RW, np.int64)
    if p["driver"] == "numba":
        _lat_cons_kernel(ring.w, KIND_ID[p["transport"]], buf, ring.cursors, ring.slot_w, out)
        return {"lat": out}
    if p["consumer"] == "doorbell":
        ring.spin, ring.yields = 0, 0
    pop = ring.pop_words
    for i in range(len(out)):
        if p["consumer"] == "doorbell":
            while pop(buf, 1) == 0:
                ring.wait(10.0)
        else:
            while pop(buf, 1) == 0:
                pass
        out[i] = time.monotonic_ns() - buf[2]
    return {"lat": out}


# --- peers: one send/recv pair per transport, shared throughput/latency bodies
class _Peer:
    def __init__(self, transport, p, role):
        self.t = transport
        self.p = p
        if transport in ("mp-queue", "mp-pipe", "faster-fifo"):
            self.chan = p["chan"]
            if transport == "mp-pipe":
                self.send = self.chan[1].send_bytes if role == "prod" else None
                self.recv = self.chan[0].recv_bytes if role == "cons" else None
            elif transport == "faster-fifo":
                self.send = lambda b: self.chan.put(b, timeout=30)
                self.recv = lambda: self.chan.get(timeout=30)
            else:
                self.send = self.chan.put
                self.recv = self.chan.get
        elif transport == "pyzmq":
            import zmq  # lazy: optional (bench extra); ~27 ms, only the pyzmq peer
            self.ctx = zmq.Context()
            if role == "prod":
                s = self.ctx.socket(zmq.PUSH)
                s.setsockopt(zmq.SNDHWM, 100_000)
                s.connect(p["addr"])
                self.send = s.send
            else:
                s = self.ctx.socket(zmq.PULL)
                s.setsockopt(zmq.RCVHWM, 100_000)
                s.bind(p["addr"])
                self.recv = s.recv
            self.sock = s
        elif transport == "redis-streams":
            import redis  # lazy: ~110 ms, only the redis-streams peer
            self.r = redis.Redis(unix_socket_path=p["redis_sock"])
            self.last = b"0-0"
            self.buffered = []
            if role == "prod":
                self.send = lambda b: self.r.xadd("bench", {"d": b})
            else:
                self.recv = self._xread

    def _xread(self):
        if not self.buffered:
            res = self.r.xread({"bench": self.last}, count=BATCH, block=10_000)
            if not res:
                raise TimeoutError("redis XREAD timed out")
            entries = res[0][1]
            self.last = entries[-1][0]
            self.buffered = [e[1][b"d"] for e in reversed(entries)]
        return self.buffered.pop()

    def send_batch_redis(self, blobs):
        pipe = self.r.pipeline(transaction=False)
        for b in blobs:
            pipe.xadd("bench", {"d": b})
        pipe.execute()


def _prod_peer(transport, mode, p, start, q):
    peer = _Peer(transport, p, "prod")
    recs = pool_bytes()
    _ready(q, "prod")
    start.wait()
    if mode == "latency":
        n, period = p["samples"], int(1e9 / p["rate"])
        pad = bytes(48)
        nxt = time.monotonic_ns() + 2_000_000
        for i in range(n):
            while time.monotonic_ns() < nxt:
                pass
            peer.send(struct.pack("<qqq", 0, i, time.monotonic_ns()) + pad[:40])
            nxt += period
        return {}
    n = p["n"]
    t = time.monotonic_ns()
    if mode == "batched":
        blob = pool_words().tobytes()
        for sent in range(0, n, BATCH):
            off = (sent % POOL) * 64
            if transport == "redis-streams":
                peer.send_batch_redis([blob[off + 64 * i: off + 64 * (i + 1)]
                                       for i in range(BATCH)])
            else:
                peer.send(blob[off:off + BATCH * 64])
    else:
        send = peer.send
        for i in range(n):
            send(recs[i % POOL])
    return {"t0": t}


def _cons_peer(transport, mode, p, start, q):
    peer = _Peer(transport, p, "cons")
    checksum(np.zeros(RW, np.int64), 1)  # compile/load before the clock starts
    _ready(q, "cons")
    start.wait()
    recv = peer.recv
    if mode == "latency":
        out = np.zeros(p["samples"], np.int64)
        for i in range(len(out)):
            b = recv()
            out[i] = time.monotonic_ns() - struct.unpack_from("<q", b, 16)[0]
        return {"lat": out}
    n = p["n"]
    got = csum = 0
    if mode == "batched" and transport != "redis-streams":
        while got < n:
            b = recv()
            csum += checksum(np.frombuffer(b, np.int64), len(b) // 64)
            got += len(b) // 64
    else:
        frm = int.from_bytes
        while got < n:
            b = recv()
            csum += frm(b[8:16], "little")
            got += 1
    return {"t1": time.monotonic_ns(), "csum": csum, "count": got}


for _t in PEERS:
    _n = _t.replace("-", "_")
    globals()[f"_prod_{_n}"] = (lambda t: lambda *a: _prod_peer(t, *a))(_t)
    globals()[f"_cons_{_n}"] = (lambda t: lambda *a: _cons_peer(t, *a))(_t)


# ------------------------------------------------------------------- parent ---

class Env:
    """Per-transport set-up and tear-down in the parent."""

    def __init__(self):
        self.instance = "bench" + uuid.uuid4().hex[:8]
        self.tmp = tempfile.mkdtemp(prefix="arbpipe-bench-")
        self.redis = None
        self.redis_sock = None
        self.notes = []

    def redis_up(self):
        if self.redis_sock:
            return True
        exe = shutil.which("redis-server")
        if not exe:
            return False
        sock = os.path.join(self.tmp, "redis.sock")
        self.redis = subprocess.Popen([exe, "--port", "0", "--unixsocket", sock, "--save", "",
                                       "--appendonly", "no", "--dir", self.tmp],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(sock):
                self.redis_sock = sock
                return True
            time.sleep(0.025)
        return False

    def setup(self, transport, p):
        if transport == "floor":
            name = f"/arbpipe.{self.instance}.floor"
            posix_ipc.SharedMemory(name, posix_ipc.O_CREX, 0o600, size=F.DATA * 8 + p["cap"] * 64)
            p["shm"] = name
        elif transport in RING_CLASSES:
            p["instance"] = self.instance
            p["ring"] = transport.split("-")[1]
            RING_CLASSES[transport].create(p["ring"], p.get("cap", 1 << 16), 64, policy="block",
                                           instance=self.instance).close()
        elif transport == "mp-queue":
            p["chan"] = CTX.Queue()
        elif transport == "mp-pipe":
            p["chan"] = CTX.Pipe(duplex=False)
        elif transport == "faster-fifo":
            import faster_fifo  # lazy: optional (bench extra); ~19 ms, one peer
            p["chan"] = faster_fifo.Queue(max_size_bytes=64 * 1024 * 1024)
        elif transport == "pyzmq":
            import zmq  # noqa: F401  # lazy: optional (bench extra); fails early if absent
            p["addr"] = f"ipc://{self.tmp}/zmq-{uuid.uuid4().hex[:6]}.ipc"
        elif transport == "redis-streams":
            if not self.redis_up():
                raise RuntimeError("redis-server not installed (apt-get install redis-server)")
            import redis  # lazy: ~110 ms, only the redis-streams peer
            redis.Redis(unix_socket_path=self.redis_sock).delete("bench")
            p["redis_sock"] = self.redis_sock
        return p

    def teardown(self, transport, p):
        if transport == "floor":
            posix_ipc.unlink_shared_memory(p["shm"])
        elif transport in RING_CLASSES:
            segments.unlink(self.instance, p["ring"])
        p.pop("chan", None)

    def close(self):
        if self.redis:
            self.redis.terminate()
            self.redis.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)
        segments.clean(self.instance, everything=True)


def run_pair(env, transport, mode, p, timeout=300):
    p = env.setup(transport, dict(p, transport=transport))
    c_prod, c_cons = cores()
    q, start = CTX.Queue(), CTX.Event()
    procs = [CTX.Process(target=_child, args=(role, transport, mode, p, core, start, q),
                         daemon=True)
             for role, core in (("cons", c_cons), ("prod", c_prod))]
    for pr in procs:
        pr.start()
    out = {}
    try:
        ready = 0
        while ready < 2:
            role, val = q.get(timeout=timeout)
            if role == "ready":
                ready += 1
            else:
                out[role] = val
        start.set()
        while len(out) < 2:
            role, val = q.get(timeout=timeout)
            if role != "ready":
                out[role] = val
    finally:
        for pr in procs:
            pr.join(5)
            if pr.is_alive():
                pr.kill()
        env.teardown(transport, p)
    for role in ("prod", "cons"):
        if "error" in out.get(role, {}):
            raise RuntimeError(out[role]["error"])
    return out["prod"], out["cons"]


def pct(lat):
    lat = np.sort(np.asarray(lat, dtype=np.float64)[len(lat) // 20:])  # drop warm-up 5%
    return {"p50_ns": float(np.percentile(lat, 50)), "p99_ns": float(np.percentile(lat, 99)),
            "p999_ns": float(np.percentile(lat, 99.9)), "max_ns": float(lat.max())}


# counts per (transport, mode): slow peers get fewer records, the rate is what counts
def _count(transport, mode, records):
    if transport.startswith("arbpipe") or transport == "floor":
        return records if mode == "batched" else max(records // 8, 10_000)
    if transport == "redis-streams":
        return max(records // 40, 5_000) if mode == "batched" else max(records // 200, 2_000)
    return max(records // 4, 10_000) if mode == "batched" else max(records // 20, 10_000)


def _round(n):
    return max(BATCH, n // BATCH * BATCH)


def run_all(records=2_000_000, latency_samples=20_000, rate=20_000, only=None, progress=True):
    env = Env()
    results = []
    say = (lambda s: print(s, flush=True)) if progress else (lambda s: None)
    want = only or ALL
    host = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "pinned_cores": list(cores()),
            "python": platform.python_version()}
    floor = {"ring_records_per_s": None, "pingpong_one_way_ns": None}
    try:
        # the floor
        n = _round(records)
        pr, co = run_pair(env, "floor", "ring", {"n": n, "cap": 1 << 16})
        ok = co["csum"] == expected_checksum(n)
        floor["ring_records_per_s"] = n / ((co["t1"] - pr["t0"]) / 1e9)
        floor["ring_checksum_ok"] = ok
        rounds = 200_000
        pr, co = run_pair(env, "floor", "pingpong", {"n": 0, "cap": 1024, "rounds": rounds})
        floor["pingpong_one_way_ns"] = max(pr["ns"], co["ns"]) / rounds / 2
        say(f"floor: bare ring {floor['ring_records_per_s'] / 1e6:.1f} M rec/s, ping-pong one-way "
            f"{floor['pingpong_one_way_ns']:.0f} ns")
        for t in want:
            if t == "floor":
                continue
            for mode in ("batched", "single"):
                n = _round(_count(t, mode, records))
                try:
                    pr, co = run_pair(env, t, mode, {"n": n})
                except Exception as e:
                    say(f"{t} {mode}: skipped ({e})")
                    results.append({"transport": t, "mode": mode, "records_per_s": None,
                                    "skipped": str(e), "p50_ns": None, "p99_ns": None,
                                    "p999_ns": None})
                    continue
                rps = co["count"] / ((co["t1"] - pr["t0"]) / 1e9)
                lost = co.get("lost", 0)
                ok = co["csum"] == expected_checksum(n) and co["count"] == n
                row = {"transport": t, "mode": mode, "records": n, "records_per_s": rps,
                       "checksum_ok": ok, "lost": lost, "p50_ns": None, "p99_ns": None,
                       "p999_ns": None}
                if mode == "single":
                    lat = _latency(env, t, latency_samples, rate, "numba" if t.startswith(
                        "arbpipe") else "python", "spin")
                    row.update({k: lat[k] for k in ("p50_ns", "p99_ns", "p999_ns")})
                    row["latency_max_ns"] = lat["max_ns"]
                    row["latency_driver"] = lat["driver"]
                results.append(row)
                say(_line(row))
            if t == "arbpipe-spsc":
                for driver, consumer in (("python", "spin"), ("python", "doorbell")):
                    r = rate if consumer == "spin" else min(rate, 2000)
                    lat = _latency(env, t, latency_samples // (1 if consumer == "spin" else 4),
                                   r, driver, consumer)
                    row = {"transport": t, "mode": "single", "records_per_s": None,
                           "latency_driver": driver, "consumer": consumer, "rate": r,
                           **{k: lat[k] for k in ("p50_ns", "p99_ns", "p999_ns")}}
                    results.append(row)
                    say(_line(row))
        extra = _python_push_and_idle(env)
        say(f"python per-record push: {extra['python_push_ns']:.0f} ns; idle consumer CPU: "
            f"{extra['idle_consumer_cpu_pct']:.2f}% of a core")
    finally:
        env.close()
    return {"host": host, "floor": floor, "results": results, **extra,
            "batch": BATCH, "latency_rate": rate, "latency_samples": latency_samples}


def _latency(env, t, samples, rate, driver, consumer):
    p = {"samples": samples, "rate": rate, "driver": driver, "consumer": consumer,
         "cap": 1 << 12}
    _, co = run_pair(env, t, "latency", p)
    out = pct(co["lat"])
    out["driver"] = driver
    return out


def _idle_child(instance, q):
    ring = SpscRing.attach("idle", instance=instance)
    me = psutil.Process()
    c0 = me.cpu_times()
    t0 = time.monotonic()
    ring.wait(3.0)
    c1 = me.cpu_times()
    q.put(((c1.user + c1.system - c0.user - c0.system) / (time.monotonic() - t0)))


def _python_push_and_idle(env):
    ring = SpscRing.create("push", 1 << 20, 64, policy="drop", instance=env.instance)
    rec = pool_words()[:RW].copy()
    n = 300_000
    for _ in range(1000):
        ring.push_words(rec, 1)
    push = ring.push_words
    t = time.perf_counter_ns()
    for _ in range(n):
        push(rec, 1)
    push_ns = (time.perf_counter_ns() - t) / n
    ring.unlink()
    ring.close()
    idle = SpscRing.create("idle", 1024, 64, instance=env.instance)
    q = CTX.Queue()
    pr = CTX.Process(target=_idle_child, args=(env.instance, q))
    pr.start()
    frac = q.get(timeout=120)
    pr.join(10)
    idle.unlink()
    idle.close()
    return {"python_push_ns": push_ns, "idle_consumer_cpu_pct": max(0.0, 100.0 * frac)}


def _fmt_ns(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f} µs" if v >= 1000 else f"{v:.0f} ns"


def _line(r):
    rps = "-" if r.get("records_per_s") is None else f"{r['records_per_s'] / 1e6:8.3f} M/s"
    extra = f" [{r.get('latency_driver', '')}/{r.get('consumer', 'spin')}]" if r.get(
        "p50_ns") else ""
    ok = "" if r.get("checksum_ok", True) else "  CHECKSUM MISMATCH"
    return (f"{r['transport']:<18} {r['mode']:<8} {rps:>12}  p50 {_fmt_ns(r['p50_ns']):>9} "
            f"p99 {_fmt_ns(r['p99_ns']):>9} p99.9 {_fmt_ns(r['p999_ns']):>9}{extra}{ok}")


def render(res) -> str:
    f = res["floor"]
    rows = [r for r in res["results"] if r.get("records_per_s")]
    by = {(r["transport"], r["mode"]): r for r in rows}
    ref = by.get(("arbpipe-spsc", "batched"))
    out = ["", f"host: {res['host']['cpu']}, {res['host']['cores']} cores, pinned "
           f"{res['host']['pinned_cores']}",
           f"floor: bare numba ring {f['ring_records_per_s'] / 1e6:.1f} M records/s; ping-pong "
           f"one-way {f['pingpong_one_way_ns']:.0f} ns", "",
           "| transport | mode | records/s | arbpipe-spsc batched / this | p50 | p99 | p99.9 |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in res["results"]:
        rps = r.get("records_per_s")
        ratio = f"{ref['records_per_s'] / rps:,.1f}x" if ref and rps else "-"
        mode = r["mode"] + (f" ({r['latency_driver']}/{r.get('consumer', 'spin')} latency)"
                            if r.get("latency_driver") else "")
        out.append(f"| {r['transport']} | {mode} | "
                   f"{'-' if not rps else f'{rps:,.0f}'} | {ratio} | {_fmt_ns(r['p50_ns'])} | "
                   f"{_fmt_ns(r['p99_ns'])} | {_fmt_ns(r['p999_ns'])} |"
                   + (f" skipped: {r['skipped']}" if r.get("skipped") else ""))
    out.append("")
    if ref:
        out.append(f"arbpipe SPSC batched = {ref['records_per_s'] / f['ring_records_per_s']:.0%} "
                   f"of the bare-ring floor (target >= 75%)")
        for peer, target in (("mp-queue", 300), ("pyzmq", 40)):
            pr = by.get((peer, "single"))
            if pr:
                out.append(f"arbpipe SPSC batched / {peer} (per record) = "
                           f"{ref['records_per_s'] / pr['records_per_s']:,.0f}x (target >= "
                           f"{target}x)")
    sp = next((r for r in res["results"] if r["transport"] == "arbpipe-spsc"
               and r["mode"] == "single" and r.get("latency_driver") == "numba"), None)
    if sp and f["pingpong_one_way_ns"]:
        out.append(f"arbpipe SPSC one-way p50 = {sp['p50_ns'] / f['pingpong_one_way_ns']:.1f}x "
                   f"the ping-pong floor (target <= 4x); p99 {_fmt_ns(sp['p99_ns'])} "
                   f"(target < 1 µs)")
    db = next((r for r in res["results"] if r.get("consumer") == "doorbell"), None)
    if db:
        out.append(f"doorbell wake-up (sleeping consumer, Python both sides): p50 "
                   f"{_fmt_ns(db['p50_ns'])}, p99 {_fmt_ns(db['p99_ns'])}")
    out.append(f"per-record push from Python: {res['python_push_ns']:.0f} ns (target <= 1 µs); "
               f"idle consumer: {res['idle_consumer_cpu_pct']:.2f}% of a core (target < 1%)")
    return "\n".join(out)
