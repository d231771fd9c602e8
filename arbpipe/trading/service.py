"""The strategy process's body: ``StrategyService`` (``procs.strategy`` runs it).

In: the ``opportunities`` broadcast ring (reader "strategy"), and the ``feed.<venue>``
rings peeked for the live book. Out: the ``journal`` ring (when it exists) and
``<run dir>/journal.jsonl``, the state blob ``strategy.state`` (``arbpipe.trading.view``),
histograms ``hist.publish_to_strategy`` and ``hist.total``. The ``strategy.control``
segment is attached, or created when the strategy runs alone.

Start: a journal file of this run is replayed (``arbpipe.trading.restore``); a new run
comes back halted when the last run's journal (kept by the supervisor as
``journal-<time>.jsonl``) ended halted, or when the breaker mirrored in Redis says so.

Idle: waits with the idle strategy of the ``[cpu] profile`` (``arbpipe.transport.idle``;
default: a short spin, then the opportunities doorbell; low-latency: busy-spin or yield)
until the next fill is due or the next housekeeping tick (HOUSEKEEPING_S: risk changes
from Redis, breaker, state blob). Housekeeping does its work only when something it
depends on moved (feed heads, opportunities read, the control words, pending risk changes,
a fill due) or ``IDLE_PUBLISH_S`` passed; once nothing has moved for ``IDLE_PUBLISH_S`` it
ticks every ``QUIET_HOUSEKEEPING_S`` instead (an opportunity or a move brings the short tick
back), so an idle strategy costs two cheap wake-ups a second.
"""
from __future__ import annotations

import glob
import json
import os
import time

import numpy as np

from arbpipe.config import Config, cpu_profile
from arbpipe.paths import run_dir
from arbpipe.trading.book import LiveBook
from arbpipe.trading.control import Control
from arbpipe.trading.journal import Journal, describe_entry, read_journal
from arbpipe.trading.strategy import Strategy
from arbpipe.trading.view import STATE_NAME
from arbpipe.transport import histogram as H
from arbpipe.transport import idle as IDLE
from arbpipe.transport import kernels as K
from arbpipe.transport.rings import BroadcastRing, SpscRing
from arbpipe.transport.segments import SegmentNotFound, default_instance
from arbpipe.transport.stateblob import StateBlob
from shm_layouts.journal import BreakerReason, JournalKind
from shm_layouts.records import OPPORTUNITY, OppState

READER_NAME = "strategy"
OPP_RING = "opportunities"
JOURNAL_RING = "journal"
FEED_RING = "feed.{venue}"
JOURNAL_FILE = "journal.jsonl"
LAST_RUN_JOURNALS = "journal-*.jsonl"     # earlier runs' journals, kept by the supervisor
HOUSEKEEPING_S = 0.1               # control word, marks, breaker, state blob
IDLE_PUBLISH_S = 1.0               # ... and when nothing moved, the state blob this often
QUIET_HOUSEKEEPING_S = 0.5         # nothing moved for IDLE_PUBLISH_S: housekeeping this often
BATCH = 256                        # opportunities read per pass

_CLOSED = int(OppState.CLOSED)


class StrategyService:
    """See the module docstring. ``open``, then ``run`` (or ``step`` / ``housekeeping``
    from tests), then ``close``."""

    def __init__(self, cfg: Config, instance: str | None = None, log=print,
                 journal_path: str | None = None, risk_source=None):
        self.cfg = cfg
        self.instance = instance or default_instance()
        self.log = log
        self.journal_path = journal_path
        self.risk_source = risk_source
        self.opps = None
        self.jring = None
        self.control = None
        self.blob = None
        self.hists = []
        self.feeds = []
        self.strategy = None
        self._mirrored = None
        self.buf = np.zeros(BATCH, OPPORTUNITY)
        self.idle = IDLE.for_role("strategy", cpu_profile(cfg))
        self._moved = None             # what housekeeping depends on, at its last full run
        self._full_at = 0.0            # monotonic time of the last full housekeeping
        self.moved_at = 0.0            # monotonic time something housekeeping reads last moved
        self.housekeeping_skipped = 0

    def _jlog(self, d: dict) -> None:
        self.log(json.dumps({"ts": time.time(), **d}))

    def open(self, stop=lambda: False, retry_s: float = 0.1) -> bool:
        """Attach (waiting for) the opportunities ring and the feed rings; open the
        journal ring when it exists; create state blob, control (if missing), histograms."""
        while self.opps is None:
            try:
                self.opps = BroadcastRing.attach(OPP_RING, instance=self.instance)
            except SegmentNotFound:
                if stop():
                    return False
                time.sleep(retry_s)
        self.opps.join(READER_NAME)
        self.opps.spin = self.opps.yields = 0     # the idle strategy spins, if anything
        try:
            self.jring = SpscRing.attach(JOURNAL_RING, instance=self.instance)
        except SegmentNotFound:
            self._jlog({"event": "no_journal_ring",
                        "note": "journal entries go to the file only"})
        legs = self.cfg.legs()
        book = LiveBook(legs, len(self.cfg.instruments), self.cfg.book_depth())
        for v in self.cfg.enabled_venues():
            try:
                r = SpscRing.attach(FEED_RING.format(venue=v), instance=self.instance)
            except SegmentNotFound:
                continue
            self.feeds.append(r)
            book.follow(r)
        self.control = Control.open(self.instance, self.cfg.strategy.kill_switch)
        jpath = self.journal_path
        if jpath is None:
            jpath = os.path.join(run_dir(self.instance), JOURNAL_FILE)
        previous = read_journal(jpath)
        journal = Journal(jpath, self.jring, describe=describe_entry(self.cfg))
        self.strategy = Strategy(self.cfg, book, journal, self.control, log=self._jlog)
        now = time.time_ns()
        if previous:
            info = self.strategy.restore(previous, now)
            self._jlog({"event": "restored", **info})
        else:
            # a new tree: come back halted if the last run's journal ended halted
            # (its file was kept as journal-<time>.jsonl by the supervisor) ...
            self._breaker_from_last_run(os.path.dirname(jpath), now)
        if not previous and self.risk_source is not None:
            # ... or if the breaker mirrored in Redis says so
            self._breaker_from_redis(now)
        self.blob = StateBlob.create(self.instance, STATE_NAME)
        self.h_pub = H.Histogram.create(self.instance, "publish_to_strategy")
        self.h_total = H.Histogram.create(self.instance, "total")
        self.hists = [self.h_pub, self.h_total]
        # compile (or load) the histogram kernel before "ready", not on the first record
        H.record(H.empty(), 1)
        book.refresh()
        self.strategy.check_breaker(now)
        self.publish(now)
        return True

    def _halt(self, reason: BreakerReason, value: float, limit: float, now: int) -> None:
        if reason == BreakerReason.KILL_SWITCH:
            self.control.set_kill(True)   # check_breaker trips it
        else:
            self.strategy.trip(reason, value, limit, now)

    def _breaker_from_last_run(self, directory: str, now: int) -> None:
        olds = sorted(glob.glob(os.path.join(directory, LAST_RUN_JOURNALS)))
        if not olds:
            return
        last = None
        for e in read_journal(olds[-1]):
            if int(e["kind"]) in (JournalKind.BREAKER, JournalKind.RESET):
                last = e
        if last is not None and int(last["kind"]) == JournalKind.BREAKER:
            reason = BreakerReason(int(last["reason"]))
            self._halt(reason, float(last["value"]), float(last["limit"]), now)
            self._jlog({"event": "breaker_restored_from_last_run",
                        "reason": reason.name.lower(), "journal": os.path.basename(olds[-1])})

    def _breaker_from_redis(self, now: int) -> None:
        b = self.risk_source.load_breaker()
        if b and b.get("tripped") and str(b.get("reason", "")).upper() in \
                BreakerReason.__members__:
            reason = BreakerReason[str(b["reason"]).upper()]
            self._halt(reason, float(b.get("value", 0.0)), float(b.get("limit", 0.0)), now)
            self._jlog({"event": "breaker_restored_from_redis",
                        "reason": reason.name.lower()})

    def publish(self, now: int) -> None:
        rs = self.opps.reader_stats()
        s = self.strategy
        extra = {"ring": {"received": rs["received"], "lost": rs["lost"], "laps": rs["laps"]},
                 "book": {"applied": s.book.applied, "skipped": s.book.skipped}}
        doc = s.state(now, extra)
        doc["counters"]["lost"] = rs["lost"]
        self.blob.publish(doc)

    def step(self) -> int:
        """One pass: read opportunities, decide, fill what is due. Returns records read."""
        s = self.strategy
        n = self.opps.pop_batch(self.buf)
        now = time.time_ns()
        if n:
            s.book.refresh()
            hp, ht = self.h_pub.h, self.h_total.h
            for k in range(n):
                rec = self.buf[k]
                if int(rec["state"]) != _CLOSED:
                    H.record(hp, now - int(rec["detect_ns"]))
                    H.record(ht, now - int(rec["trigger_recv_ns"]))
                s.on_opportunity(rec, now)
        due = s.next_due()
        if due is not None and due <= now:
            s.book.refresh()
            s.poll(now)
        return n

    def _inputs_moved(self):
        """A cheap fingerprint of what housekeeping reads: feed heads (marks), the
        opportunities read, the control words, pending risk changes."""
        rs = self.risk_source
        return (tuple(int(K.head_of(r.w)) for r in self.feeds),
                int(self.opps.w[self.opps.slot_w]) if self.opps is not None else 0,
                self.control.w.tobytes() if self.control is not None else b"",
                bool(rs is not None and rs._pending))

    def housekeeping(self, now: int, force: bool = True) -> bool:
        """Refresh marks, apply risk changes, check the breaker, fill what is due, publish
        the state blob. Unless ``force``: only when something moved since the last run (or
        ``IDLE_PUBLISH_S`` passed). Returns True if it did the work."""
        s = self.strategy
        t = time.monotonic()
        moved = self._inputs_moved()
        if moved != self._moved:
            self.moved_at = t
        if not force and moved == self._moved and t - self._full_at < IDLE_PUBLISH_S:
            due = s.next_due()
            if due is None or due > now:
                self.housekeeping_skipped += 1
                return False
        self._moved, self._full_at = moved, t
        s.book.refresh()
        if self.risk_source is not None:
            try:
                changes = self.risk_source.take()
            except Exception as e:  # never let the cold path stop trading decisions
                changes = None
                self._jlog({"event": "risk_source_error", "error": str(e)})
            if changes:
                for k, old, new in s.limits.apply(changes):
                    self._jlog({"event": "risk_change", "key": k, "old": old, "new": new})
                # what is decided from here on is decided under the new limits: stamp it
                # after their log line, not at this pass's start
                now = max(now, time.time_ns())
        s.check_breaker(now)
        s.poll(now)
        if self.risk_source is not None and s.breaker != self._mirrored:
            self._mirrored = dict(s.breaker)
            try:
                self.risk_source.mirror_breaker(dict(s.breaker))
            except Exception as e:  # the cold path never stops the strategy
                self._jlog({"event": "breaker_mirror_failed", "error": str(e)})
        self.publish(now)
        return True

    def run(self, stop=lambda: False) -> None:
        s = self.strategy
        last = 0.0
        opps, idle = self.opps, self.idle
        w, sw = opps.w, opps.slot_w

        def ready(spins):
            return K.bcast_readable(w, sw, spins)
        while not stop():
            n = self.step()
            t = time.monotonic()
            if n:
                self.moved_at = t
            # a wake-up of an idle process costs far more CPU than its work: while nothing
            # moves (no market data, no opportunity, no control or risk change), fewer
            period = HOUSEKEEPING_S if t - self.moved_at < IDLE_PUBLISH_S else \
                QUIET_HOUSEKEEPING_S
            if t - last >= period:
                self.housekeeping(time.time_ns(), force=False)
                last = t
            if n == 0:
                due = s.next_due()
                wait = period - (time.monotonic() - last)
                if due is not None:
                    wait = min(wait, (due - time.time_ns()) / 1e9)
                if wait > 0:
                    idle.wait(ready, opps.wait, wait)
        self.housekeeping(time.time_ns())

    def close(self) -> None:
        if self.strategy is not None:
            if self.cfg.strategy.flatten_on_stop:
                try:        # exit every open perp pair before going (flatten_on_stop)
                    self.strategy.book.refresh()
                    left = self.strategy.stop(time.time_ns(), clock=time.time_ns,
                                              sleep=time.sleep)
                    self._jlog({"event": "flatten_on_stop", "open_trades_left": left})
                except Exception as e:  # closing must finish
                    self._jlog({"event": "flatten_on_stop_failed", "error": str(e)})
            self.strategy.journal.close()
        for h in self.hists:
            h.close()
        self.hists = []
        if self.blob is not None:
            self.blob.close()
            self.blob = None
        if self.opps is not None:
            self.opps.leave()
            self.opps.close()
            self.opps = None
        for r in self.feeds + ([self.jring] if self.jring is not None else []):
            r.close()
        self.feeds = []
        if self.control is not None:
            self.control.close(unlink=True)
            self.control = None
