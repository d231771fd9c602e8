"""The dashboard's opportunity book: every opportunity still open (by ``opp_id``) and a
bounded list of recently closed ones with their close reason and lifetime, built from the
``opportunities`` ring's records in ring order (``OpportunityBook.apply``).

Invariants
- An opportunity is in ``open`` from its first OPEN/UPDATE record until its CLOSED record.
  Records of one opportunity share ``opp_id``; the record's ``opened_ns`` makes lifetimes
  exact even for opportunities opened before this reader joined (lifetime = CLOSED
  ``detect_ns`` - ``opened_ns``, ns).
- ``opp_id >> OPP_ID_RUN_SHIFT`` is the start second of the detector run that made it:
  when records of a newer run appear, the open opportunities of older runs (a detector
  killed without closing them) are closed with reason ``detector_restart``.
- When the reader is lapped (records lost), open opportunities not seen since before the
  loss are dropped with reason ``lost`` (``drop_unseen_since``); one still open comes back
  with its next UPDATE.
- ``to_state`` / ``restore``: the book as published in the dashboard's document, and taken
  over from it by a restarted dashboard.

Rows name instruments and venue legs from the config (``Names``). A row carries the
record's depth-walked sizing (Opportunity layout 2): ``qty`` (base units), ``notional``
(qty x ``vwap_buy``, quote currency), both VWAPs, ``profit`` (quote currency) and
``profit_usd`` (None when the detector had no USD rate), the levels each leg consumed and
``top_of_book`` (a leg had no L2 book: sized on its top level). Open rows are ordered by
expected profit (``profit_order``).
"""
from __future__ import annotations

import collections
import math

import numpy as np

from arbpipe import symbols
from arbpipe.config import CANONICAL_MASK, PERP_ID_BIT, VENUE_NAMES
from arbpipe.symbols import PERP_VENUES
from shm_layouts import OPPORTUNITY, CloseReason, OppState
from shm_layouts.records import OPP_BUY_PERP, OPP_ID_RUN_SHIFT, OPP_SELL_PERP, OPP_TOP_OF_BOOK

MAX_OPEN_ROWS = 2000            # open rows published (best profit first); the count is exact
MAX_OPEN = 50_000               # book bound: beyond it the stalest open entries are evicted

REASONS = {int(r): r.name.lower() for r in CloseReason}
REASONS.update({100: "detector_restart", 101: "lost"})
R_DETECTOR_RESTART, R_LOST = 100, 101
_OPEN, _UPDATE, _CLOSED = int(OppState.OPEN), int(OppState.UPDATE), int(OppState.CLOSED)
_FIELDS = OPPORTUNITY.names
_I = {n: i for i, n in enumerate(_FIELDS)}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def profit_order(r: dict) -> tuple:
    """Sort key of a row, best expected profit first: ``profit_usd``, rows without a USD
    value after every row with one (among them by ``profit`` in their quote currency)."""
    usd = r.get("profit_usd")
    if usd is not None:
        return (0, -usd, r["id"])
    p = r.get("profit")
    return (1, -(p if p is not None else -math.inf), r["id"])


class Names:
    """Instrument and venue-leg names from the config (fallback: the registered ids)."""

    def __init__(self, cfg=None):
        self.cfg = cfg
        self.legs = cfg.legs() if cfg is not None else None
        self._cache: dict = {}

    def instrument(self, iid: int) -> str:
        key = ("i", iid)
        n = self._cache.get(key)
        if n is None:
            n = (self.cfg.instrument_name(iid) if self.cfg is not None else None) or \
                symbols.instrument_name(int(iid) & CANONICAL_MASK)
            self._cache[key] = n
        return n

    def venue(self, vid: int, perp: bool) -> str:
        """Leg name: ``okx`` / ``okx-perp`` (a perp-only venue keeps its own name)."""
        key = ("v", vid, perp)
        n = self._cache.get(key)
        if n is None:
            leg = self.legs.leg_of(vid, PERP_ID_BIT if perp else 0) if self.legs else -1
            if leg >= 0:
                n = self.legs.names[leg]
            else:
                n = VENUE_NAMES.get(int(vid), f"venue{vid}")
                if perp and n not in PERP_VENUES:
                    n += "-perp"
            self._cache[key] = n
        return n


class OpportunityBook:
    """Open opportunities by ``opp_id`` plus the newest ``closed_keep`` closed ones."""

    def __init__(self, names: Names | None = None, closed_keep: int = 200,
                 max_open: int = MAX_OPEN):
        self.names = names or Names()
        self.open: dict[int, dict] = {}
        self.closed: collections.deque = collections.deque(maxlen=max(1, closed_keep))
        self.max_open = max_open
        self.max_run = 0                      # newest detector run (opp_id's run field) seen
        self.counters = {"records": 0, "opened": 0, "updated": 0, "closed": 0,
                         "orphan_updates": 0, "orphan_closes": 0, "evicted": 0,
                         "bad_records": 0}
        self.closed_by_reason: dict[str, int] = {}

    # -- records -------------------------------------------------------------------------
    def apply(self, recs: np.ndarray) -> int:
        """Apply Opportunity records (structured array) in ring order; returns how many."""
        n = len(recs)
        if n == 0:
            return 0
        rows = recs.tolist()
        for r in rows:
            self._apply_one(r)
        self.counters["records"] += n
        if len(self.open) > self.max_open:
            self._evict()
        return n

    def _row(self, r) -> dict:
        i = _I
        flags = int(r[i["flags"]])
        qty = float(r[i["exec_qty"]])
        vwap_buy = float(r[i["vwap_buy"]]) or float(r[i["buy_ask"]])
        return {"id": int(r[i["opp_id"]]),
                "instrument": self.names.instrument(int(r[i["instrument_id"]])),
                "buy": self.names.venue(int(r[i["buy_venue"]]), bool(flags & OPP_BUY_PERP)),
                "sell": self.names.venue(int(r[i["sell_venue"]]), bool(flags & OPP_SELL_PERP)),
                "buy_ask": float(r[i["buy_ask"]]), "sell_bid": float(r[i["sell_bid"]]),
                "qty": qty, "vwap_buy": vwap_buy, "vwap_sell": float(r[i["vwap_sell"]]),
                "notional": qty * vwap_buy,
                "profit": _finite(float(r[i["profit"]])),
                "profit_usd": _finite(float(r[i["profit_usd"]])),
                "buy_levels": int(r[i["buy_levels"]]), "sell_levels": int(r[i["sell_levels"]]),
                "top_of_book": bool(flags & OPP_TOP_OF_BOOK),
                "gross_bps": round(float(r[i["gross_bps"]]), 4),
                "top_gross_bps": round(float(r[i["top_gross_bps"]]), 4),
                "net_bps": round(float(r[i["net_bps"]]), 4),
                "carry_bps": round(float(r[i["carry_bps"]]), 4),
                "funding_bps": round(float(r[i["funding_delta_bps"]]), 4),
                "confidence": round(float(r[i["confidence"]]), 2),
                "opened_ns": int(r[i["opened_ns"]]) or int(r[i["detect_ns"]]),
                "updated_ns": int(r[i["detect_ns"]]),
                "trigger_ns": int(r[i["trigger_recv_ns"]]),
                "updates": 0}

    def _apply_one(self, r) -> None:
        i = _I
        state = int(r[i["state"]])
        oid = int(r[i["opp_id"]])
        run = oid >> OPP_ID_RUN_SHIFT
        if run > self.max_run:
            if self.max_run and self.open:
                self._close_run_before(run, int(r[i["detect_ns"]]))
            self.max_run = run
        c = self.counters
        if state == _OPEN or state == _UPDATE:
            row = self.open.get(oid)
            if row is None:
                row = self._row(r)
                row["peak_net_bps"] = row["net_bps"]
                self.open[oid] = row
                if state == _OPEN:
                    c["opened"] += 1
                else:
                    c["orphan_updates"] += 1
                    c["updated"] += 1
                return
            new = self._row(r)
            new["updates"] = row["updates"] + 1
            new["opened_ns"] = row["opened_ns"] if not int(r[i["opened_ns"]]) else new["opened_ns"]
            new["peak_net_bps"] = max(row["peak_net_bps"], new["net_bps"])
            self.open[oid] = new
            c["updated"] += 1
        elif state == _CLOSED:
            row = self.open.pop(oid, None)
            last = self._row(r)
            if row is None:
                c["orphan_closes"] += 1
                row = last
                row["peak_net_bps"] = last["net_bps"]
            elif int(r[i["opened_ns"]]):
                row["opened_ns"] = last["opened_ns"]
            self._closed(row, REASONS.get(int(r[i["close_reason"]]), "unknown"),
                         last["updated_ns"])
        else:
            c["bad_records"] += 1

    def _closed(self, row: dict, reason: str, closed_ns: int) -> None:
        row = dict(row)
        row["reason"] = reason
        row["closed_ns"] = closed_ns
        row["lifetime_ns"] = max(0, closed_ns - row["opened_ns"])
        self.closed.appendleft(row)
        self.counters["closed"] += 1
        self.closed_by_reason[reason] = self.closed_by_reason.get(reason, 0) + 1

    def _close_run_before(self, run: int, when_ns: int) -> None:
        for oid in [k for k in self.open if (k >> OPP_ID_RUN_SHIFT) < run]:
            self._closed(self.open.pop(oid), REASONS[R_DETECTOR_RESTART], when_ns)

    def drop_unseen_since(self, t_ns: int, now_ns: int) -> int:
        """After a lap: drop open entries whose newest record is older than ``t_ns``."""
        gone = [k for k, row in self.open.items() if row["updated_ns"] < t_ns]
        for oid in gone:
            self._closed(self.open.pop(oid), REASONS[R_LOST], now_ns)
        return len(gone)

    def _evict(self) -> None:
        extra = len(self.open) - self.max_open
        for oid in sorted(self.open, key=lambda k: self.open[k]["updated_ns"])[:extra]:
            del self.open[oid]
            self.counters["evicted"] += 1

    # -- views ------------------------------------------------------------------------------
    def open_rows(self, limit: int = MAX_OPEN_ROWS) -> list[dict]:
        rows = sorted(self.open.values(), key=profit_order)
        return rows[:limit]

    def to_state(self, limit: int = MAX_OPEN_ROWS) -> dict:
        return {"open": self.open_rows(limit), "open_count": len(self.open),
                "closed": list(self.closed), "counters": dict(self.counters),
                "closed_by_reason": dict(self.closed_by_reason), "max_run": self.max_run}

    def restore(self, doc: dict) -> None:
        """Take over the book of a previous dashboard's published state."""
        for row in doc.get("open", []):
            self.open[int(row["id"])] = dict(row)
        for row in reversed(doc.get("closed", [])):
            self.closed.appendleft(dict(row))
        for k, v in doc.get("counters", {}).items():
            if k in self.counters:
                self.counters[k] = int(v)
        self.closed_by_reason.update({k: int(v) for k, v in doc.get("closed_by_reason",
                                                                    {}).items()})
        self.max_run = int(doc.get("max_run", 0))
