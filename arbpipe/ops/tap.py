"""``arbpipe tap RING``: records as they flow through any ring, read-only.

The tap never consumes and never slows the producer: it copies committed records
with ``kernels.peek`` (a seqlock-style check discards any record the producer
might have been overwriting) and polls at a relaxed pace when nothing is new.
Records are decoded by the ring's dtype; ids are shown with names where the
symbol map knows them. If the ring moves faster than the tap prints, the tap
skips ahead and says how many records it did not show.

``--json`` prints one JSON object per record: every field of the record by its
``shm_layouts`` name, plus names (``instrument``, ``venue``, ``buy``, ``sell``, the state);
an Opportunity also gets ``notional`` (exec_qty x vwap_buy, quote currency) and
``top_of_book`` (flag OPP_TOP_OF_BOOK). A float that is not finite (``profit_usd`` without a
USD rate is NaN) is written as ``null``: every line is strict JSON.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np

from arbpipe.symbols import instrument_name, leg_name, venue_name
from arbpipe.transport.rings import attach_any
from shm_layouts import CloseReason, Kind, OppState
from shm_layouts.kinds import RecordType
from shm_layouts.records import (MARKET_UPDATE_FUNDING, MARKET_UPDATE_STATUS, OPP_BUY_PERP,
                                 OPP_SELL_PERP, OPP_TOP_OF_BOOK)


# the records the tap decodes by name; any other ring's records print as raw fields
DECODED = {RecordType.MARKET_UPDATE: "MarketUpdate", RecordType.OPPORTUNITY: "Opportunity"}


def decode(rec: np.void, record: str) -> dict:
    d = {k: (v.item() if hasattr(v, "item") else v) for k, v in zip(rec.dtype.names, rec)}
    if record == "MarketUpdate":
        kind = d["kind"]
        if kind == Kind.FUNDING:
            f = np.frombuffer(rec.tobytes(), MARKET_UPDATE_FUNDING)[0]
            d = {k: (v.item() if hasattr(v, "item") else v) for k, v in zip(f.dtype.names, f)}
        elif kind == Kind.STATUS:
            f = np.frombuffer(rec.tobytes(), MARKET_UPDATE_STATUS)[0]
            d = {k: (v.item() if hasattr(v, "item") else v) for k, v in zip(f.dtype.names, f)}
        d["kind"] = Kind(kind).name.lower() if kind in Kind._value2member_map_ else kind
        d["venue"] = venue_name(d["venue_id"])
        d["instrument"] = instrument_name(d["instrument_id"])
    elif record == "Opportunity":
        d["state"] = OppState(d["state"]).name.lower() if d["state"] in \
            OppState._value2member_map_ else d["state"]
        d["close_reason"] = CloseReason(d["close_reason"]).name.lower() if d["close_reason"] in \
            CloseReason._value2member_map_ else d["close_reason"]
        d["instrument"] = instrument_name(d["instrument_id"])
        d["buy"] = leg_name(d["buy_venue"], bool(d["flags"] & OPP_BUY_PERP))
        d["sell"] = leg_name(d["sell_venue"], bool(d["flags"] & OPP_SELL_PERP))
        d["notional"] = d["exec_qty"] * d["vwap_buy"]
        d["top_of_book"] = bool(d["flags"] & OPP_TOP_OF_BOOK)
    return d


def to_json(d: dict) -> str:
    """One strict JSON line: floats that are not finite (NaN, inf) become null."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v
                       for k, v in d.items()}, allow_nan=False)


def _money(x: float) -> str:
    return f"{x:,.2f}" if math.isfinite(x) else "-"


def fmt(d: dict, record: str) -> str:
    if record == "MarketUpdate":
        if d["kind"] == "quote":
            return (f"{d['venue']:<13} {d['instrument']:<10} bid {d['bid']:<14.8g} x {d['bid_qty']:<10.6g}"
                    f" ask {d['ask']:<14.8g} x {d['ask_qty']:<10.6g} seq {d['seq']}")
        if d["kind"] == "funding":
            return (f"{d['venue']:<13} {d['instrument']:<10} funding {d['funding_rate']:.6%} "
                    f"every {d['funding_interval_s'] // 3600} h")
        return f"{d['venue']:<13} status {d.get('status')}"
    if record == "Opportunity":
        return (f"{d['state']:<7} {d['instrument']:<10} buy {d['buy']}@{d['buy_ask']:.8g} sell "
                f"{d['sell']}@{d['sell_bid']:.8g} net {d['net_bps']:.2f} bps gross "
                f"{d['gross_bps']:.2f} qty {d['exec_qty']:.6g} ({d['notional']:,.0f}) levels "
                f"{d['buy_levels']}/{d['sell_levels']}{' top-of-book' if d['top_of_book'] else ''} "
                f"profit {_money(d['profit'])} usd {_money(d['profit_usd'])} conf "
                f"{d['confidence']:.0f}"
                + (f" ({d['close_reason']})" if d["state"] == "closed" else ""))
    return " ".join(f"{k}={v}" for k, v in d.items())


def tap(name: str, instance: str | None = None, count: int | None = None, as_json=False,
        emit=print, idle_timeout: float | None = None, from_start: bool = False) -> dict:
    # lazy: numba, 150 ms and 37 MiB, only for the tap itself (decode, fmt: the supervisor)
    from arbpipe.transport import kernels as K
    ring = attach_any(name, instance=instance)
    record = DECODED.get(ring.record_type, "raw")
    batch = 256
    buf = np.zeros(batch * ring.rw, np.int64)
    out = np.zeros(3, np.int64)
    pos = 0 if from_start else int(K.head_of(ring.w))
    shown = missed = 0
    last_new = time.monotonic()
    try:
        while count is None or shown < count:
            K.peek(ring.w, int(ring.KIND), pos, buf, batch, out)
            start, k, nxt = int(out[0]), int(out[1]), int(out[2])
            if start > pos:
                missed += start - pos
            if k == 0:
                if idle_timeout is not None and time.monotonic() - last_new > idle_timeout:
                    break
                time.sleep(0.002)
                pos = max(pos, start)
                continue
            last_new = time.monotonic()
            recs = buf[:k * ring.rw].view(ring.dtype)
            for rec in recs[: (count - shown) if count is not None else k]:
                d = decode(rec, record)
                emit(to_json(d) if as_json else fmt(d, record))
                shown += 1
            pos = nxt
    finally:
        ring.close()
    return {"shown": shown, "missed": missed}
