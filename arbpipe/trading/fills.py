"""Simulated execution: the orders in flight, their paper fills and one-leg unwinds.

Each order is an immediate-or-cancel with a limit price (``Order.limit``: the worst level
its size reached on the book when it was priced, ``limit_tolerance_bps`` beyond; 0: its
quoted price): ``latency_ms`` after it was sent it walks the live book of its leg
(``arbpipe.trading.depth.walk``: the L2 levels of ``LiveBook.ladder``, else the top quote),
taking every level within the limit, each at its price moved ``slippage_bps`` against us:
partial where the book is thin when ``partial_fills``, else the whole order once anything
is within the limit; nothing within it: MISSED. Fees: the leg's taker fee on the fill
notional (VWAP x qty), charged once per fill.

One-leg failure policy: when the two legs of a pair filled different quantities, the
difference is flattened on the leg that filled more by an UNWIND order at the next live
book (market: walks without a limit and completes at the last level, slippage against
us; retried each tick while that leg has no quote); unwinds skip the risk checks (they
only reduce exposure) and are counted. Exit orders (``Order.exit``, sent by the
strategy's exit rules, ``arbpipe.trading.exits``) fill like entries and are never unwound:
what they leave stays in the trade. ``on_fill`` (set by the strategy) hears every fill
after the portfolio booked it; ``on_settle`` every pair whose entry legs are done.

Order ids follow ``shm_layouts.journal`` (``pair_order_ids``, ``UNWIND_ID_OFFSET``).
"""
from __future__ import annotations

import collections
import dataclasses

from arbpipe.trading.book import LiveBook
from arbpipe.trading.depth import walk
from arbpipe.trading.journal import Journal
from arbpipe.trading.markets import Markets
from arbpipe.trading.portfolio import Portfolio
from shm_layouts.journal import UNWIND_ID_OFFSET, JournalFlag, JournalKind, Side, pair_order_ids


@dataclasses.dataclass
class Order:
    order_id: int
    pair_id: int
    opp_id: int
    i: int                 # canonical instrument
    leg: int
    side: int              # Side.BUY / Side.SELL
    price: float           # quoted price the order was sent at
    qty: float
    due_ns: int
    unwind: bool = False
    trigger_recv_ns: int = 0
    detect_ns: int = 0
    read_ns: int = 0
    filled: float = 0.0
    done: bool = False
    limit: float = 0.0     # IOC limit price (0: the quoted price)
    exit: bool = False     # an exit leg (arbpipe.trading.exits)
    maker: bool = False    # charged the leg's maker fee (resting orders: not simulated yet)

    @property
    def sign(self) -> int:
        return 1 if self.side == Side.BUY else -1


def opposite(side: int) -> int:
    return Side.SELL if side == Side.BUY else Side.BUY


class PaperExchange:
    """Orders in flight and their simulated execution; see the module docstring.

    ``orders``: legs in flight (not done) by order id; ``pairs``: pair id -> its two legs
    until both are done and settled; ``unwinds``: unwind orders waiting to execute.
    ``limits`` is read live (latency_ms, slippage_bps); ``counters`` are the strategy's."""

    def __init__(self, markets: Markets, book: LiveBook, portfolio: Portfolio,
                 journal: Journal, limits, counters: collections.Counter, partial_fills: bool):
        self.m = markets
        self.book = book
        self.portfolio = portfolio
        self.journal = journal
        self.limits = limits
        self.counters = counters
        self.partial_fills = partial_fills
        self.orders: dict[int, Order] = {}
        self.pairs: dict[int, list[Order]] = {}
        self.unwinds: list[Order] = []
        self.next_pair = 1
        self.on_fill = None        # (order, qty, price, fee, realized pnl, now) -> None
        self.on_settle = None      # (pair id) -> None

    def in_flight(self) -> list[Order]:
        return list(self.orders.values())

    def due_after(self, now: int) -> int:
        return now + int(self.limits.latency_ms * 1e6)

    def pair(self, i: int, bleg: int, sleg: int, ask: float, bid: float, qty: float,
             now: int, opp_id: int, **times) -> tuple[Order, Order]:
        """The two legs of the next pair (not sent: ``send`` sends them)."""
        pid = self.next_pair
        buy_id, sell_id = pair_order_ids(pid)
        due = self.due_after(now)
        buy = Order(buy_id, pid, opp_id, i, bleg, Side.BUY, ask, qty, due, **times)
        sell = Order(sell_id, pid, opp_id, i, sleg, Side.SELL, bid, qty, due, **times)
        return buy, sell

    def take_pair_id(self) -> None:
        """The pair from ``pair`` passed every check: its id is used (sent or observed)."""
        self.next_pair += 1

    def send(self, buy: Order, sell: Order) -> None:
        for o in (buy, sell):
            self.orders[o.order_id] = o
        self.pairs[buy.pair_id] = [buy, sell]

    def send_exit(self, pid: int, orders: list[Order]) -> None:
        """The legs of an exit of pair ``pid`` (one or two)."""
        for o in orders:
            self.orders[o.order_id] = o
        self.pairs[pid] = list(orders)

    def busy(self, pid: int) -> bool:
        """Pair ``pid`` has an order or an unwind in flight."""
        return pid in self.pairs or any(u.pair_id == pid for u in self.unwinds)

    def journal_order(self, kind: int, o: Order, now: int, flags: int = 0) -> None:
        """An ORDER, UNWIND or MISSED entry of ``o``."""
        m = self.m
        f = flags | (int(JournalFlag.PERP) if m.is_perp[o.leg] else 0) | (
            int(JournalFlag.UNWIND_LEG) if o.unwind else 0) | (
            int(JournalFlag.EXIT_LEG) if o.exit else 0)
        self.journal.write(kind, ts_ns=now, side=int(o.side), flags=f,
                           venue_id=m.venue[o.leg], instrument_id=m.iid(o.i, o.leg),
                           order_id=o.order_id, opp_id=o.opp_id, price=o.price, qty=o.qty,
                           notional=o.price * o.qty, limit=o.limit,
                           trigger_recv_ns=o.trigger_recv_ns, detect_ns=o.detect_ns,
                           read_ns=o.read_ns)

    def start_unwind(self, u: Order, now: int) -> None:
        self.counters["unwinds"] += 1
        self.journal_order(JournalKind.UNWIND, u, now)
        self.unwinds.append(u)

    def execute(self, o: Order, now: int) -> None:
        """Fill (or miss) ``o`` against the live book now; an unwind without a quote waits."""
        m = self.m
        q = self.book.quote(o.i, o.leg)
        if o.unwind and q is None:
            return  # retried at the next tick
        qty = px = 0.0
        if q is not None:
            buy = o.side == Side.BUY
            lad = self.book.ladder(o.i, o.leg, ask=buy)
            if lad is None:
                lad = ([q.ask], [q.ask_qty]) if buy else ([q.bid], [q.bid_qty])
            limit = None if o.unwind else (o.limit if o.limit > 0 else o.price)
            f = walk(lad[0], lad[1], o.side, o.qty, limit, self.limits.slippage_bps,
                     extend=o.unwind or not self.partial_fills)
            qty, px = f.qty, f.price
        o.done = True
        self.orders.pop(o.order_id, None)
        if qty <= 0.0:
            self.counters["missed"] += 1
            self.journal_order(JournalKind.MISSED, o, now)
            return
        o.filled = qty
        fee = px * qty * (m.maker_fee_bps if o.maker else m.fee_bps)[o.leg] / 1e4
        pnl = self.portfolio.apply_fill(o.i, o.leg, o.side, qty, px, fee, now)
        self.counters["fills"] += 1
        flags = (int(JournalFlag.PARTIAL) if qty < o.qty else 0) | (
            int(JournalFlag.PERP) if m.is_perp[o.leg] else 0) | (
            int(JournalFlag.UNWIND_LEG) if o.unwind else 0) | (
            int(JournalFlag.EXIT_LEG) if o.exit else 0)
        self.journal.write(JournalKind.FILL, ts_ns=now, side=int(o.side), flags=flags,
                           venue_id=m.venue[o.leg], instrument_id=m.iid(o.i, o.leg),
                           order_id=o.order_id, opp_id=o.opp_id, price=px, qty=qty,
                           notional=px * qty, fee=fee, realized_pnl=pnl, limit=o.limit,
                           value=self.limits.slippage_bps, trigger_recv_ns=o.trigger_recv_ns,
                           detect_ns=o.detect_ns, read_ns=o.read_ns)
        if self.on_fill is not None:
            self.on_fill(o, qty, px, fee, pnl, now)

    def settle(self, pid: int, now: int) -> None:
        """Both legs done: unwind any difference on the leg that filled more."""
        legs = self.pairs.pop(pid)
        if any(o.unwind or o.exit for o in legs):
            return
        buy, sell = legs
        diff = buy.filled - sell.filled
        if abs(diff) * max(buy.price, sell.price) < 1e-9:
            if self.on_settle is not None:
                self.on_settle(pid)
            return
        src = buy if diff > 0 else sell
        u = Order(src.order_id + UNWIND_ID_OFFSET, pid, src.opp_id, src.i, src.leg,
                  opposite(src.side), src.price, abs(diff), self.due_after(now), unwind=True,
                  trigger_recv_ns=src.trigger_recv_ns, detect_ns=src.detect_ns,
                  read_ns=src.read_ns)
        self.start_unwind(u, now)

    def poll(self, now: int) -> int:
        """Fill every order due by ``now``; settle finished pairs; run unwinds. Returns
        the number of orders executed."""
        n = 0
        for o in sorted((o for o in self.orders.values() if o.due_ns <= now),
                        key=lambda o: o.order_id):
            self.execute(o, now)
            n += 1
        for pid, legs in list(self.pairs.items()):
            if all(o.done for o in legs):
                self.settle(pid, now)
        for u in list(self.unwinds):
            if u.due_ns <= now:
                self.execute(u, now)
                if u.done:
                    self.unwinds.remove(u)
                    n += 1
        return n

    def next_due(self) -> int | None:
        due = [o.due_ns for o in self.orders.values()] + [u.due_ns for u in self.unwinds]
        return min(due) if due else None
