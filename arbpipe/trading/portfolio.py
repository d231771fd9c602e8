"""Positions, balances and PnL of the paper account, and its exposure to orders in flight.

PnL (quote currency): per (instrument, leg), an average-cost position; realized on
reductions; unrealized = qty x (live mid - average price), the mid of the live book, else
the last mark seen, else the average price; fees separate; net = realized + unrealized -
fees. Daily figures restart at 00:00 UTC (day_net = net - net at the day's first look);
the peak of net is kept for the drawdown.

Balances: every venue starts with ``starting_balance`` of each quote asset, and spot
venues with ``base_balances`` of each base asset. Spot fills move quote and base; perp
fills move only quote (fees and realized PnL) and an open perp position holds notional /
leverage of quote as margin.

Worst case including in-flight: for a leg with position p and unfilled in-flight buys b
and sells s, the worst position after an order of q is max(|p + b (+ q if buy)|,
|p - s (- q if sell)|). Orders in flight are passed in (``in_flight``: the exchange's
orders, plus any sibling of the same pair being checked).
"""
from __future__ import annotations

import collections
import dataclasses
import datetime

from arbpipe.config import Config
from arbpipe.trading.book import LiveBook
from arbpipe.trading.markets import Markets
from shm_layouts.journal import Side


@dataclasses.dataclass
class Position:
    qty: float = 0.0
    avg: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    mark: float = 0.0

    def fill(self, signed_qty: float, price: float) -> float:
        """Apply a fill; returns the realized PnL it closed (before fees)."""
        q0 = self.qty
        if q0 == 0.0 or (q0 > 0) == (signed_qty > 0):
            new = q0 + signed_qty
            self.avg = (self.avg * abs(q0) + price * abs(signed_qty)) / abs(new)
            self.qty = new
            return 0.0
        closing = min(abs(signed_qty), abs(q0))
        pnl = closing * (price - self.avg) * (1.0 if q0 > 0 else -1.0)
        self.realized += pnl
        new = q0 + signed_qty
        if abs(signed_qty) > abs(q0):
            self.avg = price
        elif new == 0.0:
            self.avg = 0.0
        self.qty = new
        return pnl


def utc_day(ns: int) -> str:
    """The UTC date (YYYY-MM-DD) of a CLOCK_REALTIME ns time."""
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).strftime("%Y-%m-%d")


class Portfolio:
    """See the module docstring. ``limits`` is read live (leverage, slippage_bps)."""

    def __init__(self, cfg: Config, markets: Markets, book: LiveBook, limits):
        self.m = markets
        self.book = book
        self.limits = limits
        self.positions: dict[tuple[int, int], Position] = {}
        self.balances: dict[int, dict[str, float]] = {}
        m = markets
        for vid in sorted(set(m.venue)):
            spot = any(not m.is_perp[g] for g in range(len(m)) if m.venue[g] == vid)
            bal = {}
            for q in sorted(set(m.quote.values())):
                bal[q] = float(cfg.strategy.starting_balance)
            if spot:
                for a in sorted(set(m.base.values())):
                    bal[a] = float(cfg.strategy.base_balances.get(a, 0.0))
            self.balances[vid] = bal
        self.realized = 0.0
        self.fees = 0.0
        self.peak_net = 0.0
        self.day = None
        self.day_start_net = 0.0

    # -- positions and PnL --------------------------------------------------------------
    def pos(self, i: int, leg: int) -> Position:
        p = self.positions.get((i, leg))
        if p is None:
            p = self.positions[(i, leg)] = Position()
        return p

    def mark_price(self, i: int, leg: int) -> float:
        """The live mid (remembered as the position's mark), else the last mark, else the
        average price."""
        m = self.book.mid(i, leg)
        p = self.positions.get((i, leg))
        if m is not None:
            if p is not None:
                p.mark = m
            return m
        if p is not None and p.mark > 0:
            return p.mark
        return p.avg if p is not None else 0.0

    def unrealized(self) -> float:
        return sum(p.qty * (self.mark_price(i, leg) - p.avg)
                   for (i, leg), p in self.positions.items() if p.qty != 0.0)

    def net(self) -> float:
        return self.realized + self.unrealized() - self.fees

    def watch_loss(self, now: int) -> tuple[float, float]:
        """(the day's net PnL, drawdown from the peak) at ``now``; rolls the day over at
        00:00 UTC and raises the peak first."""
        net = self.net()
        day = utc_day(now)
        if day != self.day:
            self.day, self.day_start_net = day, net
        self.peak_net = max(self.peak_net, net)
        return net - self.day_start_net, self.peak_net - net

    def apply_fill(self, i: int, leg: int, side: int, qty: float, price: float,
                   fee: float) -> float:
        """Book a fill into position, balances, realized PnL and fees (the one code path
        used live and when restoring from the journal). Returns realized PnL."""
        m = self.m
        sign = 1.0 if side == Side.BUY else -1.0
        pnl = self.pos(i, leg).fill(sign * qty, price)
        p = self.positions[(i, leg)]
        p.fees += fee
        self.realized += pnl
        self.fees += fee
        bal = self.balances[m.venue[leg]]
        q = m.quote[i]
        if m.is_perp[leg]:
            bal[q] += pnl - fee
        else:
            bal[q] -= sign * qty * price + fee
            bal[m.base[i]] = bal.get(m.base[i], 0.0) + sign * qty
        return pnl

    # -- exposure -----------------------------------------------------------------------
    @staticmethod
    def inflight(i: int, leg: int, in_flight) -> tuple[float, float]:
        """Unfilled quantity of the in-flight buys and sells of a leg."""
        b = s = 0.0
        for o in in_flight:
            if o.i == i and o.leg == leg:
                if o.side == Side.BUY:
                    b += o.qty - o.filled
                else:
                    s += o.qty - o.filled
        return b, s

    def worst(self, i: int, leg: int, in_flight, side: int = 0, qty: float = 0.0) -> float:
        """Worst-case |position| (base units) of a leg including in-flight and an order."""
        p = self.positions.get((i, leg))
        q = p.qty if p is not None else 0.0
        b, s = self.inflight(i, leg, in_flight)
        up = q + b + (qty if side == Side.BUY else 0.0)
        down = q - s - (qty if side == Side.SELL else 0.0)
        return max(abs(up), abs(down))

    def reserved(self, vid: int, in_flight) -> tuple[float, dict[str, float]]:
        """Quote and base reserved by in-flight orders on venue ``vid``."""
        m = self.m
        rq, rb = 0.0, collections.Counter()
        for o in in_flight:
            if m.venue[o.leg] != vid:
                continue
            left = o.qty - o.filled
            notional = o.price * left
            fee = notional * m.fee_bps[o.leg] / 1e4
            if m.is_perp[o.leg]:
                rq += notional / self.limits.leverage + fee
            elif o.side == Side.BUY:
                rq += notional * (1 + self.limits.slippage_bps / 1e4) + fee
            else:
                rb[m.base[o.i]] += left
        return rq, rb

    def margin_used(self, vid: int) -> float:
        m = self.m
        return sum(abs(p.qty) * self.mark_price(i, leg) / self.limits.leverage
                   for (i, leg), p in self.positions.items()
                   if m.is_perp[leg] and m.venue[leg] == vid and p.qty != 0.0)

    def available(self, vid: int, asset: str, in_flight) -> float:
        """Balance of ``asset`` on venue ``vid`` not reserved by orders in flight or margin."""
        rq, rb = self.reserved(vid, in_flight)
        bal = self.balances[vid].get(asset, 0.0)
        if asset in self.m.quote.values():
            return bal - rq - self.margin_used(vid)
        return bal - rb.get(asset, 0.0)

    # -- state document -----------------------------------------------------------------
    def report(self, now: int) -> tuple[list[dict], dict, dict]:
        """(positions, pnl, balances) of the state document (``arbpipe.trading.view``)."""
        m = self.m
        unreal = 0.0
        positions = []
        for (i, leg), p in sorted(self.positions.items()):
            if p.qty == 0.0 and p.realized == 0.0 and p.fees == 0.0:
                continue
            mark = self.mark_price(i, leg)
            u = p.qty * (mark - p.avg) if p.qty else 0.0
            unreal += u
            positions.append({"instrument": m.instruments[i - 1],
                              "venue": m.venue_names[m.venue[leg]],
                              "market": "perp" if m.is_perp[leg] else "spot",
                              "qty": p.qty, "avg_price": p.avg, "mark": mark, "unrealized": u,
                              "realized": p.realized, "fees": p.fees})
        net = self.realized + unreal - self.fees
        if self.day is None:
            self.day, self.day_start_net = utc_day(now), net
        pnl = {"realized": self.realized, "unrealized": unreal, "fees": self.fees,
               "net": net, "day": self.day, "day_net": net - self.day_start_net,
               "peak_net": max(self.peak_net, net), "drawdown": max(self.peak_net, net) - net}
        balances = {m.venue_names[v]: dict(b) for v, b in self.balances.items()}
        return positions, pnl, balances
