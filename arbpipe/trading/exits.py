"""Trades that live on after their fills: pairs with a perp leg, held until an exit rule
fires, and the per-pair ledger of every pair.

A spot <-> spot pair is done at its fills (its profit is locked there; the inventory it
moved is ``arbpipe.trading.inventory``'s). A pair with a perp leg (spot <-> perp,
perp <-> perp) is a ``Trade``: long ``qty_b`` on its buy leg, short ``qty_s`` on its sell
leg, both moved by every fill of the pair (entry, unwind, exit; order ids in
``shm_layouts.journal``), so a restart that replays the FILLs rebuilds it exactly.

Exit rules, checked each strategy poll on every open trade with nothing in flight, the
first that holds firing (``rule``); the exit spread is what closing pays for the basis,
(sell leg's ask - buy leg's bid) / their mid, bps; the entry spread is the fills' (sell
VWAP - buy VWAP) / their mid:

    SHUTDOWN      the strategy stops with ``flatten_on_stop``
    KILL_SWITCH   the kill switch is on and ``kill_switch_flatten`` is set
    STOP          exit spread >= entry spread + ``stop_basis_bps`` (the basis moved against
                  us; 0 = off)
    MAX_HOLD      held ``max_hold_s`` (0 = no limit)
    CONVERGED     exit spread <= ``exit_net_bps``

An exit is two IOC legs priced on the books like entries (``exit_orders``: sell ``qty_b``
on the buy leg, buy ``qty_s`` on the sell leg, each limited ``limit_tolerance_bps`` beyond
the deepest level its size reaches), journaled EXIT then ORDER|EXIT_LEG. What an exit
leg does not fill stays open and the rules are checked again at the next poll (a new
attempt, new order ids): an exit is never unwound.

Exit checks (``check_exit``), each leg, the first failure rejecting the exit for this poll
(journaled REJECT|EXIT_LEG once per trade and reason): NO_QUOTE and STALE_QUOTE (the leg
is priced on its live book), FAT_FINGER, BALANCE (a spot leg: the base it sells or the
quote it buys with; a perp leg closing frees margin); then both orders against
RATE_LIMIT_SECOND and RATE_LIMIT_MINUTE. Every other check is entry-only (kill switch,
breaker, loss limits, in flight, open pairs, cooldown, confidence, net spread, order
notional, positions): an exit only reduces exposure and is never blocked by them.
"""
from __future__ import annotations

import collections
import dataclasses

from arbpipe.trading.book import LiveBook
from arbpipe.trading.depth import limit_price, worst_price
from arbpipe.trading.fills import Order
from arbpipe.trading.markets import Markets
from arbpipe.trading.portfolio import Portfolio
from arbpipe.trading.risk import Reject
from shm_layouts.journal import (UNWIND_ID_OFFSET, ExitReason, RejectReason, Side,
                                 exit_order_id, is_buy_leg, pair_of, pair_order_ids)

EPS_QTY = 1e-12          # base units: a leg holding less is closed
LEDGER_KEEP = 1000       # pairs kept in the per-pair ledger


@dataclasses.dataclass
class Trade:
    pid: int
    i: int
    bleg: int = -1
    sleg: int = -1
    qty_b: float = 0.0             # long on the buy leg
    qty_s: float = 0.0             # short on the sell leg
    buy_qty: float = 0.0           # entry fills
    buy_notional: float = 0.0
    sell_qty: float = 0.0
    sell_notional: float = 0.0
    opened_ns: int = 0
    attempts: int = 0              # exits sent
    last_reject: int = 0

    @property
    def open(self) -> bool:
        return self.qty_b > EPS_QTY or self.qty_s > EPS_QTY

    def entry_spread_bps(self) -> float:
        if self.buy_qty <= 0 or self.sell_qty <= 0:
            return 0.0
        b, s = self.buy_notional / self.buy_qty, self.sell_notional / self.sell_qty
        return (s - b) / ((s + b) / 2) * 1e4


class Trades:
    """Open trades and the per-pair ledger; see the module docstring. ``limits`` is read
    live."""

    def __init__(self, markets: Markets, book: LiveBook, portfolio: Portfolio, limits):
        self.m = markets
        self.book = book
        self.portfolio = portfolio
        self.limits = limits
        self.trades: dict[int, Trade] = {}
        self.ledger: collections.OrderedDict = collections.OrderedDict()
        self.spot_legs: collections.OrderedDict = collections.OrderedDict()  # pid -> legs noted
        self.closed = 0

    # -- the code paths shared with restore ---------------------------------------------
    def note_order(self, order_id: int, i: int, leg: int) -> None:
        """An entry order was sent (live) or its ORDER entry replayed: a pair with a perp
        leg becomes a Trade."""
        pid = pair_of(order_id)
        t = self.trades.get(pid)
        if t is None:
            if not self.m.is_perp[leg]:
                # a spot leg: a Trade only if the other leg is perp (noted later)
                self.spot_legs.setdefault(pid, []).append((order_id, leg))
                while len(self.spot_legs) > LEDGER_KEEP:
                    self.spot_legs.popitem(last=False)
                return
            t = self.trades[pid] = Trade(pid, i)
            for oid, lg in self.spot_legs.pop(pid, []):
                self._set_leg(t, oid, lg)
        self._set_leg(t, order_id, leg)

    @staticmethod
    def _set_leg(t: Trade, order_id: int, leg: int) -> None:
        if is_buy_leg(order_id):
            t.bleg = leg
        else:
            t.sleg = leg

    def on_fill(self, order_id: int, side: int, qty: float, price: float, fee: float,
                pnl: float, now: int) -> None:
        """A fill of any order of a pair (entry, unwind, exit), after the portfolio booked it."""
        pid = pair_of(order_id)
        led = self.ledger.get(pid)
        if led is None:
            led = self.ledger[pid] = {"fills": 0.0, "fees": 0.0, "funding": 0.0}
            while len(self.ledger) > LEDGER_KEEP:
                self.ledger.popitem(last=False)
        led["fills"] += pnl
        led["fees"] += fee
        t = self.trades.get(pid)
        if t is None:
            return
        entry = order_id < UNWIND_ID_OFFSET
        if is_buy_leg(order_id):
            t.qty_b += qty if side == Side.BUY else -qty
            if entry:
                t.buy_qty += qty
                t.buy_notional += qty * price
        else:
            t.qty_s += qty if side == Side.SELL else -qty
            if entry:
                t.sell_qty += qty
                t.sell_notional += qty * price
        if entry and t.opened_ns == 0:
            t.opened_ns = int(now)
        if not entry and not t.open:
            self.trades.pop(pid)
            self.closed += 1

    def attribute_funding(self, i: int, leg: int, amount: float) -> None:
        """Share a funding payment of a perp leg among the trades holding it, by quantity."""
        held = [(t, t.qty_b if t.bleg == leg else t.qty_s) for t in self.trades.values()
                if t.i == i and leg in (t.bleg, t.sleg)]
        total = sum(q for _, q in held)
        for t, q in held:
            if total > 0:
                led = self.ledger.setdefault(t.pid, {"fills": 0.0, "fees": 0.0, "funding": 0.0})
                led["funding"] += amount * q / total

    def held(self) -> dict[tuple[int, str], float]:
        """(venue id, base asset) -> units the open trades' long spot legs hold there."""
        out: dict[tuple[int, str], float] = {}
        for t in self.trades.values():
            if t.bleg >= 0 and not self.m.is_perp[t.bleg] and t.qty_b > 0:
                k = (self.m.venue[t.bleg], self.m.base[t.i])
                out[k] = out.get(k, 0.0) + t.qty_b
        return out

    def settled(self, pid: int) -> None:
        """A pair's entry legs (and unwind) are done: a trade left with nothing is dropped."""
        t = self.trades.get(pid)
        if t is not None and not t.open:
            self.trades.pop(pid)

    # -- exit rules -------------------------------------------------------------------------
    def open_trades(self) -> list[Trade]:
        return [t for _, t in sorted(self.trades.items())
                if t.open and t.bleg >= 0 and t.sleg >= 0]

    def exit_spread_bps(self, t: Trade) -> float | None:
        qb, qs = self.book.quote(t.i, t.bleg), self.book.quote(t.i, t.sleg)
        if qb is None or qs is None:
            return None
        bid, ask = qb.bid, qs.ask
        return (ask - bid) / ((ask + bid) / 2) * 1e4

    def rule(self, t: Trade, now: int, kill: bool = False, shutdown: bool = False
             ) -> tuple[int, float, float] | None:
        """(ExitReason, exit spread bps, the rule's threshold) of the first rule that holds."""
        lim = self.limits
        x = self.exit_spread_bps(t)
        xs = x if x is not None else float("nan")
        if shutdown:
            return int(ExitReason.SHUTDOWN), xs, 0.0
        if kill:
            return int(ExitReason.KILL_SWITCH), xs, 0.0
        if x is not None and lim.stop_basis_bps > 0:
            stop = t.entry_spread_bps() + lim.stop_basis_bps
            if x >= stop:
                return int(ExitReason.STOP), x, stop
        if lim.max_hold_s > 0 and now - t.opened_ns >= lim.max_hold_s * 1e9:
            return int(ExitReason.MAX_HOLD), (now - t.opened_ns) / 1e9, lim.max_hold_s
        if x is not None and x <= lim.exit_net_bps:
            return int(ExitReason.CONVERGED), x, lim.exit_net_bps
        return None

    def exit_orders(self, t: Trade, due: int) -> list[Order]:
        """The exit's IOC legs (one per leg still open), limits priced on the live books."""
        out = []
        bid_id, sell_id = pair_order_ids(t.pid)
        for src, leg, side, qty in ((bid_id, t.bleg, Side.SELL, t.qty_b),
                                    (sell_id, t.sleg, Side.BUY, t.qty_s)):
            if qty <= EPS_QTY:
                continue
            q = self.book.quote(t.i, leg)
            price = 0.0 if q is None else (q.bid if side == Side.SELL else q.ask)
            lad = self.book.ladder(t.i, leg, ask=side == Side.BUY)
            if lad is None and q is not None:
                lad = ([price], [q.bid_qty if side == Side.SELL else q.ask_qty])
            worst = worst_price(*lad, qty) if lad is not None else None
            lim = limit_price(side, worst, self.limits.limit_tolerance_bps) if worst else 0.0
            out.append(Order(exit_order_id(src, t.attempts), t.pid, 0, t.i, leg, side, price,
                             qty, due, exit=True, limit=lim))
        return out

    def check_exit(self, o: Order, now: int, in_flight) -> Reject | None:
        """The exit checks of one exit leg (module docstring)."""
        lim, m, pf = self.limits, self.m, self.portfolio
        q = self.book.quote(o.i, o.leg)
        if q is None or o.price <= 0:
            return Reject(RejectReason.NO_QUOTE, o.leg)
        age = (now - q.recv_ns) / 1e6
        if lim.max_quote_age_ms > 0 and age > lim.max_quote_age_ms:
            return Reject(RejectReason.STALE_QUOTE, o.leg, lim.max_quote_age_ms, age)
        if lim.fat_finger_bps > 0:
            mid = (q.bid + q.ask) / 2
            dist = abs(o.price - mid) / mid * 1e4
            if dist > lim.fat_finger_bps:
                return Reject(RejectReason.FAT_FINGER, o.leg, lim.fat_finger_bps, dist)
        if not m.is_perp[o.leg]:
            vid = m.venue[o.leg]
            if o.side == Side.SELL:
                need, have = o.qty, pf.available(vid, m.base[o.i], in_flight)
            else:
                notional = o.price * o.qty
                need = notional * (1 + lim.slippage_bps / 1e4) + notional * m.fee_bps[o.leg] / 1e4
                have = pf.available(vid, m.quote[o.i], in_flight)
            if need > have:
                return Reject(RejectReason.BALANCE, o.leg, have, need)
        return None

    # -- state document -----------------------------------------------------------------
    def report(self, now: int) -> dict:
        m = self.m
        trades = []
        for t in self.open_trades():
            x = self.exit_spread_bps(t)
            trades.append({"pair": t.pid, "instrument": m.instruments[t.i - 1],
                           "buy": m.names[t.bleg], "sell": m.names[t.sleg],
                           "qty_buy_leg": t.qty_b, "qty_sell_leg": t.qty_s,
                           "entry_spread_bps": t.entry_spread_bps(),
                           "exit_spread_bps": x, "held_s": (now - t.opened_ns) / 1e9,
                           "exits_sent": t.attempts, **self.ledger.get(t.pid, {})})
        pairs = [{"pair": pid, **led, "realized": led["fills"] - led["fees"] + led["funding"]}
                 for pid, led in list(self.ledger.items())[-20:]]
        return {"open": trades, "closed": self.closed, "pairs": pairs}
