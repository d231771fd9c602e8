"""Records -> Redis stream entries: the flat field maps of the ``opportunities``, ``trades``
and ``events`` streams.

Field names carry their unit (``_ns``, ``_bps``, ``_quote`` = quote currency, ``_base`` =
base-asset units, ``_pct``); values are decimal strings (floats in shortest round-trip
form). Records are read by field name (``shm_layouts.records.OPPORTUNITY``,
``shm_layouts.journal.JOURNAL``); ids become the names of the config (``Names``).
"""
from __future__ import annotations

import math
import time

import numpy as np

from arbpipe.config import CANONICAL_MASK, PERP_ID_BIT, VENUE_NAMES
from shm_layouts import (BreakerReason, CloseReason, JournalFlag, JournalKind, OppState,
                         RejectReason, Side)
from shm_layouts.journal import ExitReason, TransferAsset
from shm_layouts.records import OPP_BUY_PERP, OPP_SELL_PERP, OPP_TOP_OF_BOOK

EVENT_JOURNAL_KINDS = (int(JournalKind.BREAKER), int(JournalKind.RESET),
                       int(JournalKind.KILL_SWITCH))


def _num(x) -> str:
    if isinstance(x, float):
        return repr(x) if math.isfinite(x) else ("nan" if x != x else ("inf" if x > 0 else "-inf"))
    return str(x)


def _enum_name(enum, v) -> str:
    try:
        return enum(v).name.lower()
    except ValueError:
        return str(v)


_REASON_UNIT = {
    RejectReason.STALE_QUOTE: "ms", RejectReason.COOLDOWN: "ms",
    RejectReason.BELOW_THRESHOLD: "bps", RejectReason.FAT_FINGER: "bps",
    RejectReason.LOW_CONFIDENCE: "pct",
    RejectReason.RATE_LIMIT_SECOND: "orders", RejectReason.RATE_LIMIT_MINUTE: "orders",
    RejectReason.MAX_ORDER_NOTIONAL: "quote", RejectReason.MAX_POSITION_INSTRUMENT: "quote",
    RejectReason.MAX_POSITION_VENUE: "quote", RejectReason.DAILY_LOSS: "quote",
    RejectReason.DRAWDOWN: "quote", RejectReason.BALANCE: "quote",
}
for _n, _u in (("MAX_GROSS", "quote"), ("MAX_OPEN_ORDERS", "orders")):
    if hasattr(RejectReason, _n):
        _REASON_UNIT[RejectReason[_n]] = _u


class Names:
    """Instrument, venue and leg names of the config (ids as numbers when unknown)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.perp_bit = PERP_ID_BIT
        self.mask = CANONICAL_MASK
        self.venues = dict(VENUE_NAMES)
        self.legs = cfg.legs()
        self._inst: dict[int, str] = {}
        self.perp_venues = {n for n, v in cfg.venues.items() if v.market == "perp"}

    def instrument(self, iid: int) -> str:
        s = self._inst.get(iid)
        if s is None:
            s = self._inst[iid] = self.cfg.instrument_name(iid) or str(iid & self.mask)
        return s

    def venue(self, vid: int) -> str:
        return self.venues.get(vid, str(vid))

    def market(self, vid: int, perp_flag: bool) -> str:
        return "perp" if perp_flag or self.venue(vid) in self.perp_venues else "spot"

    def leg(self, vid: int, iid: int) -> str:
        k = self.legs.leg_of(vid, iid)
        return self.legs.names[k] if k >= 0 else f"{self.venue(vid)}{'-perp' if iid & self.perp_bit else ''}"


# ------------------------------------------------------------------ opportunities -

# depth-walked sizing (Opportunity layout 2): exec_qty_base is the size, notional_quote =
# exec_qty x vwap_buy, gross/net at that size, profit_quote / profit_usd ("nan": no USD
# rate) the expected profit, top_gross_bps the top-of-book gross, buy_levels / sell_levels
# the levels consumed, top_of_book "1" when a leg had no L2 book (sized on its top level)
OPP_KEYS = ("seq", "opp_id", "state", "close_reason", "instrument", "instrument_id",
            "buy_venue", "buy_market", "sell_venue", "sell_market", "buy_ask_quote",
            "sell_bid_quote", "exec_qty_base", "notional_quote", "gross_bps", "net_bps",
            "funding_delta_bps", "confidence_pct", "trigger_recv_ns", "detect_ns", "opened_ns",
            "detect_latency_ns", "vwap_buy_quote", "vwap_sell_quote", "profit_quote",
            "profit_usd", "top_gross_bps", "carry_bps", "buy_levels", "sell_levels",
            "top_of_book")
# the Opportunity fields read, in the order opportunity_values unpacks them
OPP_FIELDS = ["instrument_id", "buy_venue", "sell_venue", "state", "close_reason", "flags",
              "confidence", "buy_ask", "sell_bid", "exec_qty", "gross_bps", "net_bps",
              "funding_delta_bps", "trigger_recv_ns", "detect_ns", "opp_id", "seq", "opened_ns",
              "vwap_buy", "vwap_sell", "profit", "profit_usd", "top_gross_bps", "carry_bps",
              "buy_levels", "sell_levels"]


def opportunity_values(recs: np.ndarray, names: Names) -> list[tuple]:
    """Field values (``OPP_KEYS`` order, decimal strings) of Opportunity records."""
    out = []
    st, cr = {}, {}
    for (iid, bv, sv, state, reason, flags, conf, ask, bid, qty, gross, net, fund, trig, det,
         opp_id, seq, opened, vwb, vws, profit, usd, top_gross, carry, blev,
         slev) in recs[OPP_FIELDS].tolist():
        s_ = st.get(state) or st.setdefault(state, _enum_name(OppState, state))
        r_ = cr.get(reason) or cr.setdefault(reason, _enum_name(CloseReason, reason))
        out.append((
            str(seq), str(opp_id), s_, r_, names.instrument(iid), str(iid),
            names.venue(bv), names.market(bv, flags & OPP_BUY_PERP),
            names.venue(sv), names.market(sv, flags & OPP_SELL_PERP),
            _num(ask), _num(bid), _num(qty), _num((vwb or ask) * qty), _num(gross), _num(net),
            _num(fund), _num(float(conf)), str(trig), str(det), str(opened),
            str(det - trig if trig else 0), _num(vwb), _num(vws), _num(profit), _num(usd),
            _num(top_gross), _num(carry), str(blev), str(slev),
            "1" if flags & OPP_TOP_OF_BOOK else "0"))
    return out


def opportunity_fields(recs: np.ndarray, names: Names) -> list[dict]:
    """Stream entries (flat field maps) of Opportunity records: prices in quote currency
    (``_quote``), sizes in base units (``_base``), spreads ``_bps``, times ``_ns``, the
    expected profit in quote currency (``profit_quote``) and USD (``profit_usd``, "nan"
    without a rate)."""
    return [dict(zip(OPP_KEYS, v)) for v in opportunity_values(recs, names)]


# ------------------------------------------------------------------ journal -------

def _flag_names(flags: int) -> str:
    return "|".join(f.name.lower() for f in JournalFlag if f and flags & f)


def _reason(kind: int, reason: int) -> str:
    if kind == JournalKind.REJECT:
        return _enum_name(RejectReason, reason)
    if kind == JournalKind.BREAKER:
        return _enum_name(BreakerReason, reason)
    if kind == JournalKind.EXIT:
        return _enum_name(ExitReason, reason)
    if kind in (JournalKind.TRANSFER, JournalKind.TRANSFER_DONE):
        return _enum_name(TransferAsset, reason)
    return _enum_name(RejectReason, reason) if reason else "none"


def _unit(kind: int, reason: int) -> str:
    if kind == JournalKind.FILL:
        return "bps"           # value = slippage of the fill
    if kind == JournalKind.REJECT:
        try:
            return _REASON_UNIT.get(RejectReason(reason), "")
        except ValueError:
            return ""
    if kind == JournalKind.BREAKER:
        return "quote"         # daily loss / drawdown, quote currency
    return ""


JOURNAL_KEYS = ("seq", "ts_ns", "kind", "side", "reason", "flags", "flag_names", "venue",
                "venue_id", "market", "instrument", "instrument_id", "order_id", "opp_id",
                "price_quote", "qty_base", "notional_quote", "fee_quote", "realized_pnl_quote",
                "limit", "value", "value_unit", "trigger_recv_ns", "detect_ns", "read_ns")
# the JournalEntry fields read, in the order journal_values unpacks them
JOURNAL_FIELDS = ["seq", "ts_ns", "kind", "side", "reason", "flags", "venue_id",
                  "instrument_id", "order_id", "opp_id", "price", "qty", "notional", "fee",
                  "realized_pnl", "limit", "value", "trigger_recv_ns", "detect_ns", "read_ns"]


def journal_values(recs: np.ndarray, names: Names) -> list[tuple]:
    """Field values (``JOURNAL_KEYS`` order) of JournalEntry records."""
    out = []
    for (seq, ts, kind, side, reason, flags, vid, iid, order_id, opp_id, price, qty, notional,
         fee, pnl, limit, value, trig, det, read) in recs[JOURNAL_FIELDS].tolist():
        perp = bool(iid & names.perp_bit) or bool(flags & JournalFlag.PERP)
        out.append((
            str(seq), str(ts), _enum_name(JournalKind, kind), _enum_name(Side, side),
            _reason(kind, reason), str(flags), _flag_names(flags),
            names.venue(vid) if vid else "", str(vid),
            ("perp" if perp else "spot") if vid else "",
            names.instrument(iid) if iid else "", str(iid), str(order_id), str(opp_id),
            _num(price), _num(qty), _num(notional), _num(fee), _num(pnl), _num(limit),
            _num(value), _unit(kind, reason), str(trig), str(det), str(read)))
    return out


def journal_fields(recs: np.ndarray, names: Names) -> list[dict]:
    """Stream entries of JournalEntry records (``limit`` / ``value`` in ``value_unit``)."""
    return [dict(zip(JOURNAL_KEYS, v)) for v in journal_values(recs, names)]


# ------------------------------------------------------------------ events --------

def journal_event(rec) -> dict | None:
    """The events-stream entry of a breaker / reset / kill-switch journal record, else None."""
    kind = int(rec["kind"])
    if kind not in EVENT_JOURNAL_KINDS:
        return None
    flags = int(rec["flags"])
    if kind == JournalKind.BREAKER:
        typ = "breaker_tripped"
    elif kind == JournalKind.RESET:
        typ = "breaker_reset"
    else:
        typ = "kill_switch_on" if flags & JournalFlag.KILL_ON else "kill_switch_off"
    return {"type": typ, "source": "strategy", "ts_ns": _num(int(rec["ts_ns"])),
            "reason": _reason(kind, int(rec["reason"])),
            "limit": _num(float(rec["limit"])), "value": _num(float(rec["value"])),
            "value_unit": _unit(kind, int(rec["reason"])), "journal_seq": _num(int(rec["seq"]))}


def event(typ: str, source: str, **fields) -> dict:
    """An events-stream entry stamped now (``ts_ns``); numbers become decimal strings."""
    d = {"type": typ, "source": source, "ts_ns": _num(time.time_ns())}
    d.update({k: _num(v) if not isinstance(v, str) else v for k, v in fields.items()})
    return d
