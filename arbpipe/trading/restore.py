"""A restarted strategy rebuilt from its journal file.

``restore`` replays the entries (in order) through the same code paths the live strategy
uses: FILLs through ``Portfolio.apply_fill`` and ``Trades.on_fill`` (so positions,
balances, every PnL component, the open trades and the per-pair ledger are exactly those
before the restart), TRANSFER / TRANSFER_DONE through ``Inventory.start`` / ``land`` (the
transfers still in flight land at their due time), FUNDING through
``Funding.book_payment`` (no funding time is paid twice), BREAKER / RESET into the breaker
state, ORDERs into the rate window, the pair ids and the trades' legs. Orders that were in
flight when the process died never filled: each is journaled MISSED (flag RESTORED), a
pair left with one entry leg filled is unwound, and an unwind that was in flight is sent
again; a lost exit leg is only MISSED (its trade stays open and the exit rules fire again).
"""
from __future__ import annotations

import collections

from arbpipe.config import CANONICAL_MASK
from arbpipe.trading.breaker import tripped, untripped
from arbpipe.trading.fills import Order, opposite
from shm_layouts.journal import UNWIND_ID_OFFSET, JournalFlag, JournalKind, pair_of

_EXIT_LEG = int(JournalFlag.EXIT_LEG)


def _sent(e: dict) -> bool:
    """An ORDER or UNWIND entry of an order that was sent (not observe mode)."""
    return int(e["kind"]) in (JournalKind.ORDER, JournalKind.UNWIND) and not (
        int(e.get("flags", 0)) & JournalFlag.OBSERVE)


def restore(strategy, entries: list[dict], now: int) -> dict:
    """Rebuild ``strategy`` (an ``arbpipe.trading.strategy.Strategy``) from journal
    ``entries``; see the module docstring. Returns a summary for the log."""
    s = strategy
    ex, pf, m = s.exchange, s.portfolio, s.markets
    open_orders: dict[int, dict] = {}
    fills: collections.Counter = collections.Counter()
    last_seq = 0
    for e in entries:
        last_seq = max(last_seq, int(e["seq"]))
        k = int(e["kind"])
        if _sent(e):
            oid = int(e["order_id"])
            open_orders[oid] = e
            ex.next_pair = max(ex.next_pair, pair_of(oid) + 1)
            if k == JournalKind.ORDER:
                s.risk.sent.append(int(e["ts_ns"]))
                iid, vid = int(e["instrument_id"]), int(e["venue_id"])
                if oid < UNWIND_ID_OFFSET:
                    s.trades.note_order(oid, iid & CANONICAL_MASK, m.leg_of(vid, iid))
                elif int(e.get("flags", 0)) & _EXIT_LEG:
                    t = s.trades.trades.get(pair_of(oid))
                    if t is not None:
                        t.attempts = max(t.attempts, oid // UNWIND_ID_OFFSET - 1)
        elif k == JournalKind.FILL:
            iid, vid = int(e["instrument_id"]), int(e["venue_id"])
            leg = m.leg_of(vid, iid)
            oid, ts = int(e["order_id"]), int(e["ts_ns"])
            pnl = pf.apply_fill(iid & CANONICAL_MASK, leg, int(e["side"]), float(e["qty"]),
                                float(e["price"]), float(e["fee"]), ts)
            s.trades.on_fill(oid, int(e["side"]), float(e["qty"]), float(e["price"]),
                             float(e["fee"]), pnl, ts)
            fills[oid] += float(e["qty"])
            open_orders.pop(oid, None)
            s.counters["fills"] += 1
        elif k == JournalKind.TRANSFER:
            s.inventory.start(s.inventory.from_entry(e))
        elif k == JournalKind.TRANSFER_DONE:
            s.inventory.land(int(e["order_id"]))
        elif k == JournalKind.FUNDING:
            iid, vid = int(e["instrument_id"]), int(e["venue_id"])
            s.funding.book_payment(iid & CANONICAL_MASK, m.leg_of(vid, iid),
                                   float(e["realized_pnl"]), int(e["trigger_recv_ns"]))
        elif k == JournalKind.MISSED:
            open_orders.pop(int(e["order_id"]), None)
        elif k == JournalKind.BREAKER:
            s.circuit.state = tripped(int(e["reason"]), int(e["ts_ns"]), float(e["value"]),
                                      float(e["limit"]))
        elif k == JournalKind.RESET:
            s.circuit.state = untripped(int(e["ts_ns"]))
    s.journal.seq = max(s.journal.seq, last_seq)
    ex.next_pair += 1
    # orders in flight when the previous process died never filled
    pairs: dict[int, list] = collections.defaultdict(list)
    for oid, e in sorted(open_orders.items()):
        if int(e["kind"]) == JournalKind.UNWIND:  # an unwind never lost: send it again
            iid, vid = int(e["instrument_id"]), int(e["venue_id"])
            ex.unwinds.append(Order(oid, pair_of(oid), int(e["opp_id"]), iid & CANONICAL_MASK,
                                    m.leg_of(vid, iid), int(e["side"]), float(e["price"]),
                                    float(e["qty"]), now, unwind=True))
            continue
        s.journal.write(JournalKind.MISSED, ts_ns=now, side=int(e["side"]),
                        flags=int(e.get("flags", 0)) | int(JournalFlag.RESTORED),
                        venue_id=int(e["venue_id"]), instrument_id=int(e["instrument_id"]),
                        order_id=oid, opp_id=int(e["opp_id"]), price=float(e["price"]),
                        qty=float(e["qty"]))
        if int(e.get("flags", 0)) & _EXIT_LEG:
            continue        # a lost exit leg: its trade stays open, the rules fire again
        pairs[pair_of(oid)].append(oid)
    for e in entries:  # pairs with one leg filled and the other lost: unwind
        if not _sent(e) or int(e["kind"]) != JournalKind.ORDER:
            continue
        oid = int(e["order_id"])
        pid = pair_of(oid)
        if pid not in pairs or oid in pairs[pid] or oid >= UNWIND_ID_OFFSET:
            continue
        filled = fills.get(oid, 0.0)
        if filled > 0:
            iid, vid = int(e["instrument_id"]), int(e["venue_id"])
            u = Order(oid + UNWIND_ID_OFFSET, pid, int(e["opp_id"]), iid & CANONICAL_MASK,
                      m.leg_of(vid, iid), opposite(int(e["side"])), float(e["price"]), filled,
                      now, unwind=True)
            ex.start_unwind(u, now)
    for pid in [p for p, t in s.trades.trades.items() if not t.open and p not in pairs]:
        s.trades.trades.pop(pid)
    pf.peak_net = max(pf.peak_net, pf.realized_net())
    return {"entries": len(entries), "fills": len(fills),
            "lost_in_flight": sum(len(v) for v in pairs.values()),
            "breaker": s.circuit.state["reason"], "open_trades": len(s.trades.open_trades()),
            "transfers_in_flight": len(s.inventory.in_flight)}
