"""The persister process loop: rings in, Redis Streams and a top-of-book hash out.

Keys (``P = <redis.stream_prefix>:<instance>``, e.g. ``arbpipe:default``):

  ``P:opportunities``  stream, one entry per Opportunity record (open / update / closed):
                       top of book, the depth-walked size, VWAPs, gross / net at that size,
                       expected profit in quote currency and USD, levels used
                       (``fields.OPP_KEYS``)
  ``P:trades``         stream, one entry per JournalEntry (orders, fills, rejects, ...)
  ``P:events``         stream: breaker trips and resets, kill switch, venue legs up / stale /
                       down (from the detector's leg status), the persister's own drops
  ``P:tob``            hash, field ``<instrument>@<leg>`` -> JSON top of book, refreshed
                       every ``redis.snapshot_interval_ms`` (fields ``_snapshot_ns``, ``_legs``)

The package, one concern per module:

  ``fields``    records -> stream entries (flat field maps whose names carry their unit)
  ``writer``    bounded buffers and the Redis writer thread: batching, ids, backoff, drops
  ``tob``       the top-of-book snapshot peeked off the feed rings
  ``stats``     the ``persister.state`` blob's name and views (``arbpipe stat persister``)
  ``persister`` this loop

Never slows the hot path. The reading side (``Persister.pump``) only moves records from the
rings into bounded in-process buffers (``writer.RecordBuffer``, ``redis.buffer_records``
records per stream): the ``opportunities`` broadcast ring (reader ``persister``; a lap is
counted as ``lost``) and the strategy's ``journal`` SPSC ring (the persister is its only
consumer, so the strategy's pushes never find it full because Redis is slow). The writing
side (``writer.RedisWriter``, its own thread) does the Redis round trips; what happens when
Redis is down or slow is described in ``arbpipe.persist.writer``.

Venue leg transitions come from the detector's stats segment (``arbpipe.detect``'s
``read_stats``): the one place this package reads another feature package's state.
State: the ``persister.state`` blob (``arbpipe.persist.stats``; ``arbpipe stat persister``).
"""
from __future__ import annotations

import time

import numpy as np
import posix_ipc

from arbpipe.detect.stats import read_stats
from arbpipe.persist.fields import (EVENT_JOURNAL_KINDS, JOURNAL_KEYS, OPP_KEYS, Names, event,
                                    journal_event, journal_values, opportunity_values)
from arbpipe.persist.stats import BLOB_NAME, STREAMS
from arbpipe.persist.tob import TopOfBook
from arbpipe.persist.writer import RecordBuffer, RedisWriter
from arbpipe.redact import redact_url
from arbpipe.redis_conn import key_prefix
from arbpipe.transport.rings import BroadcastRing, SpscRing
from arbpipe.transport.segments import SegmentError
from arbpipe.transport.stateblob import StateBlob
from shm_layouts import JOURNAL, OPPORTUNITY

OPP_RING, JOURNAL_RING, READER = "opportunities", "journal", "persister"
POLL_S = 0.25                 # idle: the journal ring is checked this often
STATUS_POLL_S = 0.5           # detector leg status and state blob refresh
POP_BATCH = 1024
LEG_EVENTS = {"UP": "venue_up", "STALE": "venue_stale", "DISCONNECTED": "venue_down"}


class Persister:
    """Rings -> buffers -> Redis. ``run(stop)`` until ``stop()``; ``close()`` flushes."""

    def __init__(self, cfg, instance: str, url: str, log=print, blob: bool = True):
        rc = cfg.redis
        self.cfg = cfg
        self.instance = instance
        self.log = log
        self.url = url
        self.safe_url = redact_url(url)
        self.prefix = key_prefix(cfg, instance)
        self.names = Names(cfg)
        self.buffers = {"opportunities": RecordBuffer(OPPORTUNITY, rc.buffer_records),
                        "trades": RecordBuffer(JOURNAL, rc.buffer_records),
                        "events": RecordBuffer(None, rc.buffer_records)}
        names = self.names
        self.writer = RedisWriter(url, self.prefix, self.buffers, {
            "opportunities": (OPP_KEYS, lambda r: opportunity_values(r, names)),
            "trades": (JOURNAL_KEYS, lambda r: journal_values(r, names)),
            "events": (None, list)}, batch=rc.batch, maxlen=rc.stream_maxlen, log=log)
        self.tob = TopOfBook(cfg, instance, self.names)
        self.opp = self.journal = None
        self.read = {s: 0 for s in STREAMS}
        self.lost = 0
        self._lost_seen = 0
        self._reported_drops = {s: 0 for s in STREAMS}
        self.legs: dict[str, str] | None = None
        self.state = "starting"
        self._opp_buf = np.zeros(POP_BATCH, OPPORTUNITY)
        self._jr_buf = np.zeros(POP_BATCH, JOURNAL)
        self._next_status = 0.0
        self._next_tob = 0.0
        self._missing_noted = 0.0
        self.blob = StateBlob.create(instance, BLOB_NAME) if blob else None

    # -- rings --------------------------------------------------------------------
    def attach(self) -> bool:
        """Attach the rings that exist (retried by ``pump``); True when both are attached."""
        if self.opp is None:
            try:
                r = BroadcastRing.attach(OPP_RING, self.instance, record="Opportunity")
                r.join(READER)
                r.spin, r.yields = 0, 0        # cold path: sleep on the doorbell at once
                self._lost_seen = r.reader_stats()["lost"]
                self.opp = r
            except SegmentError:
                pass
        if self.journal is None:
            try:
                r = SpscRing.attach(JOURNAL_RING, self.instance, record="JournalEntry")
                r.join(READER)
                r.spin, r.yields = 0, 0
                self.journal = r
            except SegmentError:
                pass
        ok = self.opp is not None and self.journal is not None
        if not ok and time.monotonic() - self._missing_noted > 30:
            self._missing_noted = time.monotonic()
            missing = [n for n, r in ((OPP_RING, self.opp), (JOURNAL_RING, self.journal))
                       if r is None]
            self.log(f"persister: waiting for ring(s) {', '.join(missing)}")
        return ok

    def pump(self) -> int:
        """Move everything readable from the rings into the buffers; returns records moved."""
        moved = 0
        if self.opp is None or self.journal is None:
            self.attach()
        if self.opp is not None:
            while True:
                n = self.opp.pop_batch(self._opp_buf, timeout=0)
                if n == 0:
                    break
                self.read["opportunities"] += n
                self.buffers["opportunities"].put(self._opp_buf[:n])
                moved += n
                if n < POP_BATCH:
                    break
            lost = self.opp.reader_stats()["lost"]
            if lost != self._lost_seen:
                d = lost - self._lost_seen
                self._lost_seen = lost
                self.lost += d
                self._event(event("persister_lost", "persister", stream="opportunities",
                                  records=d, note="lapped on the broadcast ring"))
        if self.journal is not None:
            while True:
                n = self.journal.pop_batch(self._jr_buf, timeout=0)
                if n == 0:
                    break
                recs = self._jr_buf[:n]
                self.read["trades"] += n
                self.buffers["trades"].put(recs)
                for i in np.flatnonzero(np.isin(recs["kind"], EVENT_JOURNAL_KINDS)):
                    self._event(journal_event(recs[i]))
                moved += n
                if n < POP_BATCH:
                    break
        if moved:
            self.writer.wake()
        return moved

    def _event(self, ev: dict) -> None:
        self.read["events"] += 1
        self.buffers["events"].put([ev])
        self.writer.wake()

    # -- periodic -------------------------------------------------------------------
    def poll_legs(self) -> None:
        """Venue legs up / stale / down: transitions of the detector's leg status."""
        try:
            d = read_stats(self.instance, self.names.legs.names)
        except Exception:  # noqa: BLE001 - a detector restarting; try again later
            return
        if not d or not d.get("alive"):
            return
        legs = {k: str(v) for k, v in (d.get("legs") or {}).items()}
        if self.legs is not None:
            for leg, st in legs.items():
                prev = self.legs.get(leg)
                if prev is not None and prev != st:
                    typ = LEG_EVENTS.get(st, "venue_status")
                    venue = leg[:-5] if leg.endswith("-perp") else leg
                    self._event(event(typ, "detector", leg=leg, venue=venue, status=st.lower(),
                                      previous=prev.lower()))
        self.legs = legs

    def _report_drops(self) -> None:
        for s, b in self.buffers.items():
            d = b.dropped - self._reported_drops[s]
            if d <= 0:
                continue
            self._reported_drops[s] = b.dropped
            self.log(f"persister: {s} buffer full ({b.capacity} records): dropped {d} "
                     f"(total {b.dropped})")
            if s != "events":
                self._event(event("persister_dropped", "persister", stream=s, records=d,
                                  total=b.dropped))

    def housekeeping(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now >= self._next_status:
            self._next_status = now + STATUS_POLL_S
            self.poll_legs()
            self._report_drops()
            self.publish()
        if now >= self._next_tob:
            self._next_tob = now + self.cfg.redis.snapshot_interval_ms / 1e3
            try:
                self.tob.poll()
            except Exception as e:  # noqa: BLE001 - a feed ring being recreated
                self.log(f"persister: top-of-book peek failed: {e}")
            if self.tob.changed and self.writer.connected:
                self.tob.changed = False
                self.writer.tob = self.tob.mapping()
                self.writer.wake()

    def stats(self) -> dict:
        w = self.writer
        return {"state": self.state, "connected": w.connected, "url": self.safe_url,
                "prefix": self.prefix,
                "backlog": w.backlog(), "backlog_by_stream": {s: len(b) for s, b in
                                                              self.buffers.items()},
                "buffer_records": self.cfg.redis.buffer_records,
                "read": dict(self.read), "written": dict(w.written),
                "dropped": {s: b.dropped for s, b in self.buffers.items()},
                "dropped_total": sum(b.dropped for b in self.buffers.values()),
                "lost": self.lost, "already_written": w.already_written,
                "rejected": w.rejected, "reconnects": w.reconnects, "outages": w.outages,
                "batches": w.batches, "tob_snapshots": w.tob_written,
                "tob_entries": len(self.tob.last), "last_write_ns": w.last_write_ns,
                "last_error": w.last_error, "legs": self.legs,
                "rings": {"opportunities": self.opp is not None,
                          "journal": self.journal is not None}}

    def publish(self) -> None:
        if self.blob is not None:
            self.blob.publish(self.stats())

    # -- loop -----------------------------------------------------------------------
    def run(self, stop=lambda: False) -> None:
        self.attach()
        self.writer.start()
        self.state = "running"
        self.publish()
        while not stop():
            n = self.pump()
            self.housekeeping()
            if n:
                continue
            try:
                if self.opp is not None:
                    self.opp.wait(POLL_S)      # sleeps on the doorbell; the journal is
                else:                          # checked at least every POLL_S
                    time.sleep(POLL_S)
            except posix_ipc.SignalError:      # SIGTERM while asleep: stop() says so
                pass

    def close(self, flush_s: float = 3.0) -> dict:
        """Read what is left in the rings, write the backlog (up to ``flush_s``), detach.
        Returns the final stats (``unwritten``: records left in the buffers)."""
        self.state = "flushing"
        try:
            self.pump()
            self._report_drops()
            self.publish()
        except Exception as e:  # noqa: BLE001
            self.log(f"persister: final read failed: {e}")
        self.writer.stop(flush_s)
        self.state = "stopped"
        st = self.stats()
        st["unwritten"] = st["backlog"]
        for r in (self.opp, self.journal):
            if r is not None:
                r.close()
        self.opp = self.journal = None
        self.tob.close()
        if self.blob is not None:
            self.blob.close(unlink=True)
            self.blob = None
        return st
