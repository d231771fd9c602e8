"""Replaying a recording into the feed rings (``arbpipe replay``, ``arbpipe up --replay``).

``Replayer`` publishes the records into ``feed.<venue name>`` (names from the file's
header) as the venues' feed handlers would: each record keeps every byte except
``recv_ts_ns`` (its publish time, one clock read per step), ``exchange_ts_ns`` (shifted by
the same amount; 0 stays 0) and ``flags`` (| REPLAYED); the kernels are in
``arbpipe.replay.kernels``. Pacing, from one absolute schedule (no drift): ``speed`` (1.0 =
the recorded gaps between recv timestamps, 10.0 = ten times faster, inf = as fast as the
rings take them) or ``rate`` (records/s, evenly spaced). Records are replayed in recv_ts
order (stable, so equal stamps keep file order). A full ring drops the records and counts
them (``on_full="drop"``, what a live feed does) or waits for space (``"wait"``, the
default at speed max). An SPSC ring has one producer: replay into rings whose feed
handlers are stopped (or that replay creates, ``create=True``). ``seq="continue"``
renumbers each ring's records 1, 2, 3, ... continuing from what the ring already holds
(``kernels.ring_seq_start``), so a restarted sole producer never starts a ring over at
seq 1; the default keeps the recorded seq numbers.

In the tree (``arbpipe up --replay FILE [--rate R | --speed S] [--loop]``) one replay
process (``procs.replay``) is the producer of every ``feed.<venue>`` ring in place of the
simulator and the feed handlers; ``arbpipe.replay.source.check_against_config`` refuses a
file whose venues or instrument ids the config does not have, and ``tree_source_args``
checks the options (without numba: the supervisor runs them).

Replayed into a running detector, a file gives the same opportunities up to the
interleaving of the rings, which depends on timing: with one feed ring (or through
``bench.recorded.detect_recording``, which runs the kernel in this replay order) it gives
exactly the same; tests/system/test_replay_tree.py records a live tree and checks it.
"""
from __future__ import annotations

import ctypes
import time

import numpy as np
from numba.typed import List

from arbpipe.replay.file import Recording, RecordingError
from arbpipe.replay.kernels import (IO_DROPPED, IO_FULL, IO_PUSHED, IO_SKIPPED, IO_WAKE,
                                    MODE_MAX, MODE_RATE, MODE_SPEED, replay_step,
                                    ring_seq_start)
from arbpipe.transport import segments
from arbpipe.transport.rings import SpscRing
from shm_layouts import words as W

PR_SET_TIMERSLACK = 29        # prctl option (linux/prctl.h)
MAX_RINGS = 62                # rings wanting a wake-up are bits of one io word


class Replayer:
    """Publishes a recording into the ``feed.<venue>`` rings of ``instance``.

    speed: 1.0 real time, 10.0 ten times faster, inf as fast as possible; or ``rate``
    (records/s, overrides speed). ``loop``: start over at the end (timestamps keep
    moving forward). ``on_full``: "drop" (count, like a live feed) or "wait"; default
    "wait" at speed max, else "drop". ``create``: create missing rings (capacity,
    drop policy) and unlink them at ``close``. ``tick_s``: sleep at least this long between
    steps (fewer wake-ups; records due meanwhile go out together, stamped when sent).
    ``seq``: "keep" the recorded seq numbers, or "continue" each ring's own numbering
    (``ring_seq_start``: what a restarted sole producer of the ring needs).
    """

    def __init__(self, recording: Recording | str, instance: str | None = None,
                 speed: float = 1.0, rate: float | None = None, loop: bool = False,
                 on_full: str | None = None, create: bool = False, capacity: int = 65536,
                 batch: int = 256, max_step: int = 65536, tick_s: float = 0.0,
                 seq: str = "keep"):
        self.rec = recording if isinstance(recording, Recording) else Recording(recording)
        if len(self.rec) == 0:
            raise RecordingError(f"{self.rec.path}: no records")
        self.instance = instance or segments.default_instance()
        self.speed, self.rate, self.loop = float(speed), rate, loop
        if on_full is None:
            on_full = "wait" if (rate is None and speed == float("inf")) else "drop"
        if on_full not in ("drop", "wait"):
            raise ValueError(f"on_full {on_full!r}: use 'drop' or 'wait'")
        self.drop = on_full == "drop"
        if seq not in ("keep", "continue"):
            raise ValueError(f"seq {seq!r}: use 'keep' or 'continue'")
        self.reseq = seq == "continue"
        recs = self.rec.records
        self.words = self.rec.words()
        vids = np.asarray(recs["venue_id"]).astype(np.int64)
        uniq = [int(v) for v in np.unique(vids)]
        self.rings, self.ring_names, self.created = [], [], []
        ring_index = {}
        try:
            for v in uniq:
                vname = self.rec.venue_name(v)
                if vname is None:
                    continue
                name = f"feed.{vname}"
                live = segments.probe(self.instance, name + ".stats")
                if live is not None and not live.stale:
                    raise segments.SegmentError(
                        f"ring {name!r} has a live feed handler (pid {live.creator_pid}); an "
                        f"SPSC ring has one producer: stop the feed first")
                try:
                    r = SpscRing.attach(name, self.instance, record="MarketUpdate")
                except segments.SegmentNotFound:
                    if not create:
                        raise segments.SegmentNotFound(
                            f"ring {name!r} not found in instance {self.instance!r} (start the "
                            f"pipeline with its feeds stopped, or replay --create)") from None
                    r = SpscRing.create(name, capacity, "MarketUpdate", policy="drop",
                                        instance=self.instance)
                    self.created.append(name)
                ring_index[v] = len(self.rings)
                self.rings.append(r)
                self.ring_names.append(name)
        except Exception:
            self._close_rings()
            raise
        if len(self.rings) > MAX_RINGS:
            raise ValueError(f"at most {MAX_RINGS} rings")
        lut = np.full(max(uniq) + 1, -1, np.int64)
        for v, i in ring_index.items():
            lut[v] = i
        self.ring_of = lut[vids]
        recv = np.asarray(recs["recv_ts_ns"]).astype(np.int64)
        self.order = np.argsort(recv, kind="stable").astype(np.int64)
        r0 = int(recv.min())
        self.rel = (recv - r0).astype(np.float64)
        self.span = float(recv.max() - r0) + 1.0   # one loop's length, ns of recorded time
        if self.span < 2.0 and len(recv) > 1:
            self.span = float(len(recv))
        self.lst = List()
        for r in self.rings:
            self.lst.append(r.w)
        nr = max(len(self.rings), 1)
        self.sts = np.zeros((nr, 4), np.int64)
        self.stage = np.zeros((nr, batch * W.MU_WORDS), np.int64)
        self.cnt = np.zeros(nr, np.int64)
        self.io = np.zeros(8, np.int64)
        self.seqs = np.zeros(nr, np.int64)     # last seq used per ring (seq="continue")
        if self.reseq:
            for i, r in enumerate(self.rings):
                self.seqs[i] = ring_seq_start(r.w)
        self.max_step = max_step
        self.tick_ns = int(tick_s * 1e9)
        self.pos = 0

    def _close_rings(self):
        for r in self.rings:
            r.close()
        for name in self.created:
            segments.unlink(self.instance, name)
        self.rings, self.created = [], []

    def warm_up(self) -> None:
        """Load the kernel (numba cache) without publishing anything."""
        io = np.zeros(8, np.int64)
        replay_step(self.lst, self.sts, self.stage, self.cnt, self.words, self.order,
                    self.ring_of, self.rel, self.span, 0, 0, MODE_MAX, 0, 1, 1.0, 0, 0,
                    self.drop, io, self.seqs, self.reseq)

    def run(self, stop=lambda: False, duration: float | None = None, progress=None,
            start: int = 0, progress_s: float = 0.2) -> dict:
        """Replay until the end (or forever with ``loop``), ``duration`` s, or ``stop()``.
        ``start``: the global position to begin at (record ``order[start % n]`` of loop
        ``start // n``; the pacing schedule is shifted so that it is due now).
        ``progress(position, published)`` is called every ``progress_s`` s.
        Returns {"published", "dropped", "skipped", "seconds", "rate", "loops",
        "position"}."""
        try:  # 1 us timer slack: the pacing sleeps wake close to their deadline
            ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        n = len(self.order)
        total = (1 << 62) if self.loop else n
        if self.rate:
            mode, period = MODE_RATE, max(int(round(1e9 / self.rate)), 1)
        elif self.speed == float("inf"):
            mode, period = MODE_MAX, 1
        else:
            mode, period = MODE_SPEED, 1
        io = self.io
        io[:] = 0
        t_start = time.time_ns()
        t0 = t_start + 1000
        pos = max(int(start), 0)
        if pos and mode == MODE_RATE:
            t0 -= pos * period
        elif pos and mode == MODE_SPEED:
            lp = pos // n
            t0 -= int((lp * self.span + self.rel[self.order[pos - lp * n]]) / self.speed)
        deadline = None if duration is None else time.monotonic() + duration
        last_progress = 0.0
        lst, sts, stage, cnt, words = self.lst, self.sts, self.stage, self.cnt, self.words
        order, ring_of, rel, span, speed = self.order, self.ring_of, self.rel, self.span, self.speed
        while not stop():
            now = time.time_ns()
            if deadline is not None and time.monotonic() >= deadline:
                break
            pos = replay_step(lst, sts, stage, cnt, words, order, ring_of, rel, span, pos,
                              total, mode, t0, period, speed, now, self.max_step, self.drop, io,
                              self.seqs, self.reseq)
            if io[IO_WAKE]:
                m = int(io[IO_WAKE])
                io[IO_WAKE] = 0
                for r in range(len(self.rings)):
                    if m >> r & 1:
                        self.rings[r].wake_consumer()
            if progress is not None and time.monotonic() - last_progress > progress_s:
                last_progress = time.monotonic()
                progress(pos, int(io[IO_PUSHED]))
            if io[IO_FULL]:
                io[IO_FULL] = 0
                for r in self.rings:
                    r.wake_consumer()
                time.sleep(20e-6)
                continue
            if pos >= total and not cnt.any():
                break
            if mode == MODE_MAX:
                continue
            if mode == MODE_RATE:
                nxt = t0 + pos * period
            else:
                loop = pos // n
                nxt = t0 + int((loop * span + rel[order[pos - loop * n]]) / speed)
            wait = nxt - time.time_ns()
            if wait > 0:
                time.sleep(max(wait, self.tick_ns) / 1e9)
        self.pos = pos
        secs = (time.time_ns() - t_start) / 1e9
        pub = int(io[IO_PUSHED])
        return {"published": pub, "dropped": int(io[IO_DROPPED]), "skipped": int(io[IO_SKIPPED]),
                "seconds": secs, "rate": pub / secs if secs > 0 else 0.0,
                "loops": pos // n if n else 0, "position": pos, "rings": list(self.ring_names)}

    def close(self) -> None:
        self._close_rings()
