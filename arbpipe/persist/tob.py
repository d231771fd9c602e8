"""The top-of-book snapshot: the last quote of every (venue, instrument), peeked off the
``feed.<venue>`` rings and written by the persister as the hash ``<prefix>:tob``, field
``<instrument>@<leg>`` -> JSON with unit-named keys (plus ``_snapshot_ns`` and ``_legs``).
"""
from __future__ import annotations

import json
import time

import numpy as np

from arbpipe.persist.fields import Names
from arbpipe.transport import kernels as K
from arbpipe.transport.rings import SpscRing
from arbpipe.transport.segments import SegmentError
from shm_layouts import MARKET_UPDATE, Kind
from shm_layouts import words as W

PEEK_BATCH = 4096             # records per peek
# the MarketUpdate fields kept per leg, in the order ``mapping`` unpacks them
QUOTE_FIELDS = ["venue_id", "instrument_id", "bid", "ask", "bid_qty", "ask_qty",
                "exchange_ts_ns", "recv_ts_ns", "seq"]


class TopOfBook:
    """Last quote per (venue, instrument) seen in the ``feed.<venue>`` rings, by peeking
    (read-only: nothing is consumed, the feeds and the detector are not disturbed)."""

    def __init__(self, cfg, instance: str, names: Names):
        self.cfg = cfg
        self.instance = instance
        self.names = names
        self.rings: dict[str, object] = {}
        self.pos: dict[str, int] = {}
        self.last: dict[tuple[int, int], tuple] = {}    # (venue, instrument) -> QUOTE_FIELDS
        self.changed = False
        self._buf = np.zeros(PEEK_BATCH * W.MU_WORDS, np.int64)
        self._out = np.zeros(3, np.int64)

    def _attach(self):
        for v in self.cfg.enabled_venues():
            name = f"feed.{v}"
            if name in self.rings:
                continue
            try:
                self.rings[name] = SpscRing.attach(name, self.instance, record="MarketUpdate")
                self.pos[name] = 0
            except SegmentError:
                pass

    def poll(self, limit: int = 1 << 17) -> int:
        """Peek what the feed rings published since the last poll; returns records seen."""
        self._attach()
        seen = 0
        for name, ring in self.rings.items():
            pos = self.pos[name]
            while seen < limit:
                K.peek(ring.w, int(ring.KIND), pos, self._buf, PEEK_BATCH, self._out)
                k = int(self._out[1])
                if k == 0:
                    pos = max(pos, int(self._out[0]))
                    break
                recs = self._buf[:k * W.MU_WORDS].view(MARKET_UPDATE)
                q = recs[recs["kind"] == Kind.QUOTE]
                if len(q):
                    # one key per (venue, instrument), packed as word 0 packs the pair
                    key = ((q["venue_id"].astype(np.int64) << W.MU_VENUE_SHIFT)
                           | q["instrument_id"].astype(np.int64))
                    _, first = np.unique(key[::-1], return_index=True)
                    for r in q[::-1][first][QUOTE_FIELDS].tolist():
                        self.last[(r[0], r[1])] = r
                    self.changed = True
                seen += k
                pos = int(self._out[2])
            self.pos[name] = pos
        return seen

    def mapping(self) -> dict[str, str]:
        """The hash fields: ``<instrument>@<leg>`` -> JSON (unit-named keys)."""
        out = {}
        n = self.names
        for (vid, iid), r in self.last.items():
            _, _, bid, ask, bq, aq, xts, rts, seq = r
            mid = (bid + ask) / 2
            out[f"{n.instrument(iid)}@{n.leg(vid, iid)}"] = json.dumps({
                "bid_quote": bid, "ask_quote": ask, "bid_qty_base": bq, "ask_qty_base": aq,
                "mid_quote": mid, "spread_bps": (ask - bid) / mid * 1e4 if mid > 0 else None,
                "exchange_ts_ns": xts, "recv_ts_ns": rts, "seq": seq})
        out["_snapshot_ns"] = str(time.time_ns())
        out["_legs"] = str(len(self.last))
        return out

    def close(self) -> None:
        for r in self.rings.values():
            r.close()
        self.rings.clear()
