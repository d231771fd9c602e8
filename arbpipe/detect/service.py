"""The detector process's body: ``DetectorService`` (feed rings in, ``opportunities`` out,
stats segment, hop histograms), its numba loop ``pump`` and its idle wait.

Loop: ``pump`` polls every input ring round robin in batches, applies the updates
(``arbpipe.detect.kernel.apply_updates``) and publishes into the broadcast ring, returning to
Python when all inputs are empty or after ``detector.max_records_per_call`` records.
Housekeeping (staleness sweep, heartbeat) runs every ``detector.sweep_ms`` (every
``QUIET_SWEEPS`` of those while nothing arrives and nothing is open: each wake-up of an idle
process costs far more CPU than its work). Idle: the idle
strategy of the ``[cpu] profile`` (``arbpipe.transport.idle``). Default: spin
``SPIN_ROUNDS`` rounds over all inputs in numba, yield ``IDLE_YIELDS`` times, then sleep on
one ``SharedBell`` that the producer of every input ring posts (no helper threads: one
wake-up per record burst) until a record arrives or the next sweep is due: ~0% CPU when
idle. Low-latency: busy-spin (a core of its own) or yield (a hot core shared with the
strategy).
"""
from __future__ import annotations

import time

import numpy as np
from numba import njit
from numba.typed import List

from arbpipe.clock import realtime_ns
from arbpipe.config import Config, cpu_profile
from arbpipe.detect.detector import Detector, opp_id_base_now, wake_producer, wake_readers
from arbpipe.detect.hops import hist_at, hist_record, io_hist_addr
from arbpipe.books.segment import BooksSegment
from arbpipe.detect.kernel import R_SHUTDOWN, apply_updates, close_all, flush, sweep
from arbpipe.detect.state import (IO_HIST_DETECT, IO_HIST_FEED, IO_PWAKE, IO_READ_NS, IO_RWAKE,
                                   S_CTR)
from arbpipe.detect.stats import DetectorStats
from arbpipe.transport import histogram as H
from arbpipe.transport import kernels as K
from arbpipe.transport import idle as IDLE
from arbpipe.transport.rings import BroadcastRing, SpscRing
from arbpipe.transport.rings.doorbell import SharedBell
from arbpipe.transport.segments import SegmentExists, SegmentNotFound, default_instance
from shm_layouts import words as W
from shm_layouts.detector_stats import C_CALLS, C_HEARTBEAT, C_IDLE, C_OPEN_NOW, \
    MAX_LEGS_IN_STATS, STATS_NAME

_KW = dict(cache=True, nogil=True, boundscheck=False)

FEED_RING = "feed.{venue}"
OPP_RING = "opportunities"
HIST_HOPS = ("feed_to_detector", "detect")   # hist.<hop> segments of the service
SPIN_ROUNDS = 64     # idle: rounds over every input ring in numba (~10 us) before yielding
IDLE_YIELDS = 4      # then sched_yield this many times, re-checking
QUIET_SWEEPS = 4     # no records and nothing open: sweep (and beat) every 4 sweep periods


@njit(**_KW)
def pump(S, rings, sts, slots, buf, batch, max_records, out, ow, io):
    """Poll every feed ring (round robin, ``batch`` records each), apply and publish, until
    all are empty or ``max_records`` were taken. Returns records taken. io[IO_PWAKE] gets
    bit r set when ring r's blocked producer must be woken, io[IO_RWAKE] = 1 when readers
    of ``ow`` must be woken."""
    ctr = S[S_CTR]
    hfa = io_hist_addr(io, IO_HIST_FEED)
    ctr[C_CALLS] += 1
    total = 0
    nr = len(rings)
    while total < max_records:
        got = 0
        for r in range(nr):
            res = K.spsc_pop(rings[r], buf, batch, sts[r], slots[r])
            k = res & K.COUNT_MASK
            if (res >> K.WAKE_SHIFT) != 0:
                io[IO_PWAKE] |= 1 << r
            if k > 0:
                got += k
                now = realtime_ns()
                io[IO_READ_NS] = now
                if hfa != 0:
                    hf = hist_at(hfa)
                    for j in range(k):
                        hist_record(hf, now - buf[j * W.MU_WORDS + W.MU_RECV_TS])
                apply_updates(S, buf, k, out, ow, io)
                flush(out, ow, io, ctr)
        total += got
        if got == 0:
            break
    return total


@njit(**_KW)
def any_readable(rings, spins):
    """Spin up to ``spins`` rounds over every ring; True as soon as one has a record."""
    nr = len(rings)
    for _ in range(spins + 1):
        for r in range(nr):
            if K.spsc_readable(rings[r], 0):
                return True
    return False


class DetectorService:
    """The detector process's body: feed rings in, ``opportunities`` out, stats segment,
    hop histograms ``hist.feed_to_detector`` and ``hist.detect`` (created here, unlinked at
    close).

    Loop: ``pump`` (numba) polls every input ring round robin in batches, applies the
    updates and publishes into the broadcast ring, returning to Python when all inputs
    are empty or after ``detector.max_records_per_call`` records. Housekeeping (staleness
    sweep, heartbeat) runs every ``detector.sweep_ms``. Idle: see the module docstring
    (``self.idle``, an ``arbpipe.transport.idle`` strategy; ``self.bell``, the one
    doorbell of every input ring).
    """

    def __init__(self, cfg: Config, instance: str | None = None, log=print):
        self.cfg = cfg
        self.instance = instance or default_instance()
        self.log = log
        self.venues = list(cfg.enabled_venues())
        self.inputs: list = []
        self.opp = None
        self.created_opp = False
        self.bell = None
        self.idle = IDLE.for_role("detector", cpu_profile(cfg))
        if isinstance(self.idle, IDLE.SleepingIdle):
            self.idle.spins, self.idle.yields = SPIN_ROUNDS, IDLE_YIELDS
        self._loop_state = None
        self.stats_seg = DetectorStats.create(self.instance)
        self.hists = []
        try:
            for hop in HIST_HOPS:
                self.hists.append(H.Histogram.create(self.instance, hop))
        except Exception:
            self._close_hists()
            self.stats_seg.close(unlink=True)
            raise
        legs = cfg.legs()
        if len(legs) > MAX_LEGS_IN_STATS:
            raise ValueError(f"{len(legs)} legs: the stats segment holds {MAX_LEGS_IN_STATS}")
        # the L2 books' top N, for every reader (arbpipe.books.segment)
        self.books = BooksSegment.create(self.instance, len(cfg.instruments) + 1, len(legs),
                                         cfg.book_depth())
        try:
            self.det = Detector(cfg, counters=self.stats_seg.counters,
                                leg_status=self.stats_seg.legs_view(len(legs)),
                                opp_id_base=opp_id_base_now(), hist_feed=self.hists[0].h,
                                hist_detect=self.hists[1].h, levels=self.books.blocks)
        except Exception:
            self.books.close(unlink=True)
            self._close_hists()
            self.stats_seg.close(unlink=True)
            raise
        self._closed = False

    # -- rings ----------------------------------------------------------------------
    def attach_inputs(self, stop=lambda: False, retry_s: float = 0.1) -> bool:
        """Attach ``feed.<venue>`` of every enabled venue, retrying until they all exist
        (False if ``stop()`` turned true first)."""
        pending = {v: None for v in self.venues}
        last_note = 0.0
        while True:
            for v in list(pending):
                try:
                    r = SpscRing.attach(FEED_RING.format(venue=v), self.instance,
                                        record="MarketUpdate")
                except SegmentNotFound:
                    continue
                r.join("detector")
                r.spin, r.yields = 0, 0     # the service spins over all rings itself
                del pending[v]
                self.inputs.append((v, r))
            if not pending:
                order = {v: k for k, v in enumerate(self.venues)}
                self.inputs.sort(key=lambda x: order[x[0]])
                return True
            if stop():
                return False
            now = time.monotonic()
            if now - last_note > 5.0:
                self.log(f"detector: waiting for rings {', '.join(FEED_RING.format(venue=v) for v in pending)}")
                last_note = now
            time.sleep(retry_s)

    def open_output(self) -> None:
        """Attach the ``opportunities`` broadcast ring, creating it if nobody did."""
        spec = self.cfg.rings.opportunities
        for _ in range(50):
            try:
                self.opp = BroadcastRing.attach(OPP_RING, self.instance, record="Opportunity")
                break
            except SegmentNotFound:
                pass
            try:
                self.opp = BroadcastRing.create(OPP_RING, spec.capacity, "Opportunity",
                                                instance=self.instance)
                self.created_opp = True
                break
            except SegmentExists:
                continue
        if self.opp is None:
            raise RuntimeError("cannot attach or create the opportunities ring")
        self.det.attach_output(self.opp)

    # -- loop -------------------------------------------------------------------------
    def _prepare(self):
        if self._loop_state is None:
            rings = List()
            for _, r in self.inputs:
                rings.append(r.w)
            nr = len(self.inputs)
            sts = np.zeros((max(nr, 1), 4), np.int64)
            slots = np.array([r.slot_w for _, r in self.inputs] or [0], np.int64)
            buf = np.zeros(self.cfg.detector.batch * W.MU_WORDS, np.int64)
            self._loop_state = (rings, sts, slots, buf)
        return self._loop_state

    def _pump(self) -> int:
        rings, sts, slots, buf = self._prepare()
        if len(rings) == 0:
            return 0
        det, d = self.det, self.cfg.detector
        n = pump(det.S, rings, sts, slots, buf, d.batch, d.max_records_per_call, det.out,
                 det.ow, det.io)
        if det.io[IO_RWAKE] or det.io[IO_PWAKE]:
            self._wakes(det.io)
        return n

    def warm_up(self) -> None:
        """Load every kernel the loop uses (numba cache) before declaring ready."""
        rings = self._prepare()[0]
        self._pump()
        if len(rings):
            any_readable(rings, 0)
        det = self.det
        sweep(det.S, det.out, det.ow, det.io, time.time_ns())
        if det.counters[C_OPEN_NOW] == 0:
            close_all(det.S, det.out, det.ow, det.io, R_SHUTDOWN, 0)

    def run(self, stop=lambda: False) -> None:
        det = self.det
        rings = self._prepare()[0]
        nr = len(rings)
        S, out, io, ctr = det.S, det.out, det.io, det.counters
        sweep_s = self.cfg.detector.sweep_ms / 1e3
        quiet_s = sweep_s * QUIET_SWEEPS
        max_block_s = self.cfg.detector.idle_poll_ms / 1e3
        next_sweep = time.monotonic() + sweep_s
        since_sweep = 0
        if nr:
            self.bell = SharedBell([r for _, r in self.inputs], STATS_NAME, self.instance)
        idle, bell = self.idle, self.bell

        def ready(spins):
            return any_readable(rings, spins)

        def sleep(timeout):
            ctr[C_IDLE] += 1
            return bell.sleep(lambda: any_readable(rings, 0), timeout)
        ctr[C_HEARTBEAT] = time.time_ns()
        while not stop():
            n = self._pump()
            now = time.monotonic()
            if n:
                since_sweep += n
                next_sweep = min(next_sweep, now + sweep_s)
            if now >= next_sweep:
                sweep(S, out, det.ow, io, time.time_ns())
                if io[IO_RWAKE]:
                    self._wakes(io)
                ctr[C_HEARTBEAT] = time.time_ns()
                # nothing read since the last sweep and nothing open: nothing can go stale
                quiet = since_sweep == 0 and ctr[C_OPEN_NOW] == 0
                next_sweep = now + (quiet_s if quiet else sweep_s)
                since_sweep = 0
            if n:
                continue
            if nr == 0:
                time.sleep(max(next_sweep - now, 1e-3))
                continue
            idle.wait(ready, sleep, max(min(next_sweep - now, max_block_s), 1e-4))

    def _wakes(self, io) -> None:
        if io[IO_RWAKE]:
            io[IO_RWAKE] = 0
            wake_readers(self.opp)
        m = int(io[IO_PWAKE])
        if m:
            io[IO_PWAKE] = 0
            for r in range(len(self.inputs)):
                if m >> r & 1:
                    wake_producer(self.inputs[r][1])

    def drain(self, timeout_s: float = 2.0) -> int:
        """Apply what is left in the input rings (bounded by ``timeout_s``)."""
        if self.opp is None:
            return 0
        total = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = self._pump()
            total += n
            if n == 0:
                break
        return total

    def close(self) -> None:
        """Drain, close every open opportunity (SHUTDOWN), detach; unlink what we created."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.bell is not None:
                self.bell.close()
                self.bell = None
            if self.opp is not None:
                self.drain()
                close_all(self.det.S, self.det.out, self.det.ow, self.det.io, R_SHUTDOWN,
                          time.time_ns())
                self._wakes(self.det.io)
        finally:
            self._loop_state = None
            for _, r in self.inputs:
                r.close()
            self.inputs = []
            if self.opp is not None:
                self.det.ow = np.zeros(0, np.int64)
                self.det.ring = None
                self.opp.close()
                if self.created_opp:
                    self.opp.unlink()
                self.opp = None
            self.det.S = self.det.state = self.det.counters = self.det.leg_status = None
            self.det.io[IO_HIST_FEED] = self.det.io[IO_HIST_DETECT] = 0
            self.det.hist_feed = self.det.hist_detect = None
            self.stats_seg.close(unlink=True)
            self.books.close(unlink=True)
            self._close_hists()

    def _close_hists(self) -> None:
        for h in self.hists:
            h.close(unlink=True)
        self.hists = []
