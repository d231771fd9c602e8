"""Update sinks: where venue adapters put normalised updates.

``CollectingSink`` keeps every update as a dict (adapter tests); the running feed
packs records straight into its SPSC ring (``arbpipe.feeds.sinks.RingSink``, and
``PrintSink`` for ``arbpipe feed --print``). All count rejections by reason.
"""
from __future__ import annotations

import collections
import time

from arbpipe.feeds.books import BookKeeping
from shm_layouts import Kind
from shm_layouts.records import StatusReason, VenueStatus


class CollectingSink(BookKeeping):
    """Keeps parsed updates as dicts, in order. Reject counts by reason in ``rejects``.
    ``depth`` > 0 keeps L2 books as the running feed does (``arbpipe.feeds.books``): a depth
    message that changed the top N adds ``{"kind": "book", "instrument_id", "snapshot",
    "bids", "asks", "update_id"}`` (top N, best first), then a QUOTE dict when the top
    moved; a broken rule adds a STATUS dict with ``instrument_id`` and ``fault``."""

    def __init__(self, venue_id: int = 0, recv_ns: int | None = None, depth: int = 0):
        self.init_books(depth)
        self.venue_id = venue_id
        self.updates: list[dict] = []
        self.rejects: collections.Counter = collections.Counter()
        self.recv_ns = recv_ns

    def _now(self) -> int:
        return self.recv_ns if self.recv_ns is not None else time.time_ns()

    def quote(self, instrument_id, bid, ask, bid_qty, ask_qty, exchange_ts_ns, flags=0):
        self.updates.append(dict(kind=int(Kind.QUOTE), instrument_id=instrument_id,
                                 venue_id=self.venue_id, bid=bid, ask=ask, bid_qty=bid_qty,
                                 ask_qty=ask_qty, exchange_ts_ns=exchange_ts_ns,
                                 recv_ts_ns=self._now(), flags=flags))

    def funding(self, instrument_id, rate, next_funding_ns, interval_s, mark_price, exchange_ts_ns):
        self.updates.append(dict(kind=int(Kind.FUNDING), instrument_id=instrument_id,
                                 venue_id=self.venue_id, funding_rate=rate,
                                 next_funding_ns=next_funding_ns, funding_interval_s=interval_s,
                                 mark_price=mark_price, exchange_ts_ns=exchange_ts_ns,
                                 recv_ts_ns=self._now()))

    def status(self, status, reason=0):
        self.updates.append(dict(kind=int(Kind.STATUS), venue_id=self.venue_id,
                                 status=status, status_reason=reason, recv_ts_ns=self._now()))

    def reject(self, reason, n=1):
        self.rejects[reason] += n

    def book(self, instrument_id, bids, asks, snapshot, exchange_ts_ns, update_id=0):
        got = self._apply(instrument_id, bids, asks, snapshot, update_id)
        if got is None:
            return None
        fb, changes, moved = got
        m = len(changes[0]) + len(changes[1])
        self.book_levels += m
        if m or snapshot:
            b, a = fb.top()
            self.updates.append(dict(kind="book", instrument_id=instrument_id,
                                     snapshot=bool(snapshot), bids=b.tolist(), asks=a.tolist(),
                                     update_id=update_id, exchange_ts_ns=exchange_ts_ns))
        if moved:
            b, a = fb.top(1)
            if len(b) and len(a):
                self.quote(instrument_id, b[0, 0], a[0, 0], b[0, 1], a[0, 1], exchange_ts_ns)
        return fb

    def book_broken(self, instrument_id, fault, socket_index=0):
        if self._broken(instrument_id, fault):
            self.updates.append(dict(kind=int(Kind.STATUS), venue_id=self.venue_id,
                                     instrument_id=instrument_id, status=int(VenueStatus.STALE),
                                     status_reason=int(StatusReason.BOOK_RESYNC),
                                     fault=int(fault), recv_ts_ns=self._now()))

    def clear(self):
        self.updates.clear()
        self.rejects.clear()
