"""Update sinks: where venue adapters put normalised updates.

``CollectingSink`` keeps every update as a dict (adapter tests); the running feed
packs records straight into its SPSC ring (``arbpipe.feeds.sinks.RingSink``, and
``PrintSink`` for ``arbpipe feed --print``). All count rejections by reason.
"""
from __future__ import annotations

import collections
import time

from shm_layouts import Kind


class CollectingSink:
    """Keeps parsed updates as dicts, in order. Reject counts by reason in ``rejects``."""

    def __init__(self, venue_id: int = 0, recv_ns: int | None = None):
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

    def clear(self):
        self.updates.clear()
        self.rejects.clear()
