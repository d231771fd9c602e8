"""Processes of ``arbpipe bench pipeline`` (spawned by ``bench.pipeline``).

Harness (same shape for every transport, only the channel differs):

    gen --(MarketUpdate, 64 B)--> det (arbpipe.detect.detector.Detector, collect mode)
        --(Opportunity, 128 B)--> reader

* ``gen``: paced by absolute deadlines (record p of a phase is due at t0 + p / rate);
  every step sends what is due, each record stamped ``recv_ts_ns`` = send time (one clock
  read per step), then sleeps until the next record is due, at least ``tick_ns``. arbpipe: one ``push_words`` per step (SPSC ring, drop when full); peers:
  one message per record, non-blocking, dropped and counted when the channel is full
  (every channel holds ``cap`` records, like the ring).
* ``det``: waits for input, takes what is there (up to ``batch``), reads the clock once,
  records ``hist.feed_to_detector`` (now - recv_ts per update), runs the detector kernel
  (``hist.detect``: detect_ns - read time per OPEN/UPDATE), sends every Opportunity
  (arbpipe: a BroadcastRing; peers: one message each, dropped and counted when full).
* ``reader``: waits, takes what is there, reads the clock once, records
  ``hist.publish_to_strategy`` (now - detect_ns) and ``hist.total`` (now -
  trigger_recv_ns) per OPEN/UPDATE record.

Tree: ``replay`` (``arbpipe.replay.replayer.Replayer`` at a fixed rate into the feed rings) and
``tree_reader`` (the reader above on the real detector's ``opportunities`` ring).

Counters live in a shared int64 array (one writer per slot); commands and results go
through multiprocessing queues. Clock: CLOCK_REALTIME ns everywhere (``time.time_ns``,
``arbpipe.clock.realtime_ns``): one system-wide clock, so cross-process differences hold.
"""
from __future__ import annotations

import ctypes
import os
import queue as _queue
import signal
import time
import traceback

import numpy as np
import psutil
from numba import njit

from arbpipe.config import load_config
from arbpipe.detect.detector import Detector
from arbpipe.detect.hops import hist_record
from arbpipe.replay.file import Recording
from arbpipe.replay.kernels import restamp
from arbpipe.replay.replayer import Replayer
from arbpipe.transport import histogram as H
from arbpipe.transport.rings import BroadcastRing, SpscRing
from shm_layouts import Flag, OppState
from shm_layouts import words as W
from shm_layouts.ring import R_LOST

_KW = dict(cache=True, nogil=True, boundscheck=False)
RW, OW = W.MU_WORDS, W.OP_WORDS     # int64 words per MarketUpdate / Opportunity
ROLES = ("gen", "det", "reader")

# shared counter slots
STOP = 0
GEN_SENT, GEN_DROPPED = 1, 2
DET_RECV, DET_OUT, DET_OUT_DROPPED, DET_BATCHES = 3, 4, 5, 6
RD_RECV, RD_LOST, RD_BATCHES, RD_RECORDED = 7, 8, 9, 10
N_SLOTS = 16
PR_SET_TIMERSLACK = 29              # prctl option (linux/prctl.h)

_SYNTH_BITS = int(Flag.SYNTHETIC) << W.MU_FLAGS_SHIFT
_OPEN, _UPDATE = int(OppState.OPEN), int(OppState.UPDATE)


# ------------------------------------------------------------------ kernels ---

@njit(**_KW)
def stamp(stage, pool, n_pool, cursor, k, now):
    """Copy k pool records from ``cursor`` (wrapping) into ``stage`` with recv_ts = now,
    exchange_ts shifted alike and the SYNTHETIC flag."""
    for i in range(k):
        d = i * RW
        restamp(stage, d, pool, ((cursor + i) % n_pool) * RW, now, _SYNTH_BITS)
        stage[d + W.MU_SEQ] = cursor + i + 1


@njit(**_KW)
def record_updates(h, words, k, now):
    """feed_to_detector: now - recv_ts of each of k MarketUpdates."""
    for i in range(k):
        hist_record(h, now - words[i * RW + W.MU_RECV_TS])


@njit(**_KW)
def record_opps(hp, ht, words, k, now):
    """publish_to_strategy (now - detect_ns) and total (now - trigger_recv_ns) of each
    OPEN / UPDATE record among k Opportunities; returns how many were recorded."""
    m = 0
    for i in range(k):
        o = i * OW
        state = words[o + W.OP_STATE_WORD] & W.OP_STATE_MASK
        if state == _OPEN or state == _UPDATE:
            hist_record(hp, now - words[o + W.OP_DETECT_NS])
            hist_record(ht, now - words[o + W.OP_TRIGGER_RECV])
            m += 1
    return m


def warm_kernels():
    h = H.empty()
    pool = np.zeros(16, np.int64)
    st = np.zeros(16, np.int64)
    stamp(st, pool, 2, 0, 2, 1)
    record_updates(h, st, 2, 1)
    record_opps(h, h, np.zeros(32, np.int64), 2, 1)


# ------------------------------------------------------------------ helpers ---

def pin(cores):
    if cores:
        try:
            psutil.Process().cpu_affinity(list(cores))
        except (AttributeError, OSError, ValueError):
            pass


def low_timer_slack():
    """1 us timer slack (default 50 us) so pacing sleeps wake close to their deadline."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def counters(raw) -> np.ndarray:
    return np.frombuffer(raw, np.int64)


class Channel:
    """One direction of one transport, with the sending or the receiving end open.

    send_words(words, k) -> records refused (full); recv_words(out, max_records,
    timeout) -> records received (waits up to ``timeout`` s for the first)."""

    def __init__(self, transport, spec, end, rec_words, instance=None):
        self.t, self.end, self.rw = transport, end, rec_words
        self.lost = 0
        if transport == "arbpipe":
            cls = BroadcastRing if spec["kind"] == "broadcast" else SpscRing
            self.ring = cls.attach(spec["name"], instance=instance)
            if end == "recv":
                self.ring.join(spec.get("reader", "bench"))
                self._sw = self.ring.slot_w
        elif transport in ("mp-queue", "faster-fifo"):
            self.q = spec["q"]
        elif transport == "pyzmq":
            import zmq  # lazy: optional (bench extra); only the pyzmq transport needs it
            self.ctx = zmq.Context()
            if end == "send":
                s = self.ctx.socket(zmq.PUSH)
                s.setsockopt(zmq.SNDHWM, spec["hwm"])
                s.setsockopt(zmq.LINGER, 0)
                s.connect(spec["addr"])
            else:
                s = self.ctx.socket(zmq.PULL)
                s.setsockopt(zmq.RCVHWM, spec["hwm"])
                s.setsockopt(zmq.LINGER, 0)
                s.bind(spec["addr"])
            self.sock = s
            self.zmq = zmq
        else:
            raise ValueError(f"unknown transport {transport!r}")

    # -- sending -----------------------------------------------------------------
    def send_words(self, words, k) -> int:
        if k <= 0:
            return 0
        t = self.t
        if t == "arbpipe":
            return k - self.ring.push_words(words, k)
        blob = words[:k * self.rw].tobytes()
        step = self.rw * 8
        refused = 0
        if t == "pyzmq":
            send, flag, again = self.sock.send, self.zmq.NOBLOCK, self.zmq.Again
            for i in range(k):
                try:
                    send(blob[i * step:(i + 1) * step], flag)
                except again:
                    refused += 1
            return refused
        put = self.q.put_nowait
        full = _queue.Full
        if t == "faster-fifo":
            import faster_fifo  # lazy: optional (bench extra), as in __init__
            full = faster_fifo.Full
        for i in range(k):
            try:
                put(blob[i * step:(i + 1) * step])
            except full:
                refused += 1
        return refused

    # -- receiving ------------------------------------------------------------------
    def recv_words(self, out, max_records, timeout) -> int:
        t = self.t
        if t == "arbpipe":
            r = self.ring
            k = r.pop_words(out, max_records)
            if k == 0 and r.wait(timeout):
                k = r.pop_words(out, max_records)
            return k
        msgs = []
        if t == "mp-queue":
            try:
                msgs.append(self.q.get(timeout=timeout))
            except _queue.Empty:
                return 0
            get = self.q.get_nowait
            while len(msgs) < max_records:
                try:
                    msgs.append(get())
                except _queue.Empty:
                    break
        elif t == "faster-fifo":
            import faster_fifo  # lazy: optional (bench extra), as in __init__
            try:
                msgs = self.q.get_many(timeout=timeout, max_messages_to_get=max_records)
            except faster_fifo.Empty:
                return 0
        else:
            if not self.sock.poll(int(timeout * 1000)):
                return 0
            recv, flag, again = self.sock.recv, self.zmq.NOBLOCK, self.zmq.Again
            while len(msgs) < max_records:
                try:
                    msgs.append(recv(flag))
                except again:
                    break
        k = len(msgs)
        if k:
            out[:k * self.rw] = np.frombuffer(b"".join(msgs), np.int64)
        return k

    def lost_count(self) -> int:
        if self.t == "arbpipe" and self.end == "recv" and hasattr(self, "_sw"):
            return int(self.ring.w[self._sw + R_LOST])
        return 0

    def close(self):
        if self.t == "arbpipe":
            self.ring.close()
        elif self.t == "pyzmq":
            self.sock.close(0)
            self.ctx.term()


# -------------------------------------------------------------------- roles ---

def main(role, transport, p, raw, ctl, res):
    """Entry point of every spawned bench process (``p``: the run's parameters)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent stops us (Ctrl-C is its)
    pin(p["cores"].get(role))
    if p.get("nice"):
        os.setpriority(os.PRIO_PROCESS, 0, int(p["nice"]))
    try:
        fn = {"gen": _gen, "det": _det, "reader": _reader, "replay": _replay,
              "tree_reader": _reader}[role]
        fn(transport, p, counters(raw), ctl, res)
    except Exception as e:  # reported to the parent, which aborts the run
        res.put(("error", role, f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}"))


def _gen(transport, p, c, ctl, res):
    low_timer_slack()
    pool = Recording(p["workload"]).words()
    n_pool = len(pool) // RW
    chan = Channel(transport, p["in"], "send", RW, p.get("instance"))
    maxk = 4096
    stage = np.zeros(maxk * RW, np.int64)
    warm_kernels()
    stamp(stage, pool, n_pool, 0, 1, time.time_ns())   # the pool's own (read-only) type
    res.put(("ready", "gen", os.getpid()))
    cursor = 0
    try:
        while True:
            cmd = ctl.get()
            if cmd[0] == "stop":
                break
            _, rate, seconds = cmd
            period = 1e9 / rate
            t0 = time.time_ns() + 1000
            t_end = t0 + int(seconds * 1e9)
            sent = dropped = 0
            while True:
                now = time.time_ns()
                if now >= t_end or c[STOP]:
                    break
                due = int((now - t0) / period) + 1 - sent
                if due > 0:
                    k = min(due, maxk)
                    stamp(stage, pool, n_pool, cursor, k, now)
                    cursor += k
                    refused = chan.send_words(stage, k)
                    sent += k
                    dropped += refused
                    c[GEN_SENT] += k - refused
                    c[GEN_DROPPED] += refused
                    continue
                wait = t0 + int(sent * period) - time.time_ns()
                if wait > 0:
                    time.sleep(max(wait, p.get("tick_ns", 0)) / 1e9)
            due_total = int((min(time.time_ns(), t_end) - t0) / period) + 1
            res.put(("done", "gen", {"sent": sent, "dropped": dropped,
                                     "behind": max(due_total - sent, 0)}))
    finally:
        chan.close()


def _det(transport, p, c, ctl, res):
    inst = p["instance"]
    cfg = load_config(p["config"])
    hf = H.Histogram.create(inst, "feed_to_detector")
    hd = H.Histogram.create(inst, "detect")
    try:
        det = Detector(cfg, hist_feed=hf.h, hist_detect=hd.h)
        src = Channel(transport, p["in"], "recv", RW, inst)
        dst = Channel(transport, p["out"], "send", OW, inst)
        batch = p["batch"]
        buf = np.zeros(batch * RW, np.int64)
        warm_kernels()
        det.process(np.zeros(RW, np.int64))     # loads the kernel (an unknown id: ignored)
        res.put(("ready", "det", os.getpid()))
        while not c[STOP]:
            k = src.recv_words(buf, batch, 0.05)
            if k == 0:
                continue
            now = time.time_ns()
            record_updates(hf.h, buf, k, now)
            c[DET_RECV] += k
            c[DET_BATCHES] += 1
            opps = det.process(buf[:k * RW])
            m = len(opps)
            if m:
                refused = dst.send_words(opps.reshape(-1).view(np.int64), m)
                c[DET_OUT] += m - refused
                c[DET_OUT_DROPPED] += refused
        det.S = None
        src.close()
        dst.close()
    finally:
        hf.close(unlink=False)   # the parent reads them last and cleans the instance
        hd.close(unlink=False)


def _reader(transport, p, c, ctl, res):
    inst = p["instance"]
    hp = H.Histogram.create(inst, "publish_to_strategy")
    ht = H.Histogram.create(inst, "total")
    try:
        src = Channel(transport, p["out"], "recv", OW, inst)
        batch = p["batch"]
        buf = np.zeros(batch * OW, np.int64)
        warm_kernels()
        res.put(("ready", "reader", os.getpid()))
        while not c[STOP]:
            k = src.recv_words(buf, batch, 0.05)
            if k == 0:
                c[RD_LOST] = src.lost_count()
                continue
            now = time.time_ns()
            c[RD_RECORDED] += record_opps(hp.h, ht.h, buf, k, now)
            c[RD_RECV] += k
            c[RD_BATCHES] += 1
        c[RD_LOST] = src.lost_count()
        src.close()
    finally:
        hp.close(unlink=False)
        ht.close(unlink=False)


def _replay(transport, p, c, ctl, res):
    low_timer_slack()
    rp = Replayer(p["workload"], p["instance"], rate=1.0, loop=True, on_full="drop",
                  tick_s=p.get("tick_ns", 0) / 1e9)
    try:
        rp.warm_up()
        res.put(("ready", "replay", os.getpid()))
        while True:
            cmd = ctl.get()
            if cmd[0] == "stop":
                break
            _, rate, seconds = cmd
            rp.rate = rate
            r = rp.run(stop=lambda: bool(c[STOP]), duration=seconds)
            c[GEN_SENT] += r["published"]
            c[GEN_DROPPED] += r["dropped"]
            due = int(r["seconds"] * rate)
            res.put(("done", "gen", {"sent": r["published"] + r["dropped"],
                                     "dropped": r["dropped"],
                                     "behind": max(due - r["published"] - r["dropped"], 0)}))
    finally:
        rp.close()
