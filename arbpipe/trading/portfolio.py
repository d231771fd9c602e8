"""Positions, balances and PnL of the paper account, and its exposure to orders in flight.

PnL (quote currency), in components that are each journaled: ``realized`` (the fills':
average-cost positions, realized on reductions), ``fees`` (trading fees, FILL entries),
``transfer_fees`` (TRANSFER entries), ``funding`` (signed, + received; FUNDING entries) and
``unrealized``; realized_net = realized - fees - transfer_fees + funding; net =
realized_net + unrealized (``components``). The PnL positions (``pnl_positions``) pool every
spot leg of an instrument into one (base is base on any venue: a spot <-> spot pair's
profit is locked at its fills, and the inventory it moved between venues is the inventory
manager's, ``arbpipe.trading.inventory``) and keep each perp leg apart. ``positions`` (per
(instrument, leg): the quantity and average price traded on that venue market, with the
realized PnL its fills closed in the PnL position) serve the exposure checks, the display
and the marks: unrealized = the sum over legs of qty x (mark - the average price of the
leg's PnL position), the mark being the leg's live mid, else the last mark seen, else the
average price (so a flat spot pool whose legs are long on one venue and short on another
carries the two venues' mid difference, and nothing when the mids agree). Daily figures restart at 00:00 UTC (day_net = net - net at the day's first look);
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


SPOT_POOL = -1          # pnl_positions key of an instrument's pooled spot legs


@dataclasses.dataclass
class Position:
    qty: float = 0.0
    avg: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    mark: float = 0.0
    funding: float = 0.0
    opened_ns: int = 0      # PnL positions: when it last left zero

    def fill(self, signed_qty: float, price: float, book: bool = True) -> float:
        """Apply a fill; returns the realized PnL it closed (before fees), added to
        ``realized`` when ``book``."""
        q0 = self.qty
        if q0 == 0.0 or (q0 > 0) == (signed_qty > 0):
            new = q0 + signed_qty
            self.avg = (self.avg * abs(q0) + price * abs(signed_qty)) / abs(new)
            self.qty = new
            return 0.0
        closing = min(abs(signed_qty), abs(q0))
        pnl = closing * (price - self.avg) * (1.0 if q0 > 0 else -1.0)
        if book:
            self.realized += pnl
        new = q0 + signed_qty
        if abs(signed_qty) > abs(q0):
            self.avg = price
        elif new == 0.0:
            self.avg = 0.0
        self.qty = new
        return pnl


EQUITY_KEEP = 1440      # equity curve samples kept (a day at the default 60 s)
EQUITY_SHOWN = 120      # ... and published in the state document


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
        self.pnl_positions: dict[tuple[int, int], Position] = {}
        self.realized = 0.0
        self.fees = 0.0
        self.transfer_fees = 0.0
        self.funding = 0.0
        self.equity: collections.deque = collections.deque(maxlen=EQUITY_KEEP)
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

    def pnl_key(self, i: int, leg: int) -> tuple[int, int]:
        """The PnL position a leg's fills go to: the instrument's spot pool, or the perp leg."""
        return (i, leg) if self.m.is_perp[leg] else (i, SPOT_POOL)

    def pnl_pos(self, i: int, leg: int) -> Position:
        return self.pnl_positions.get(self.pnl_key(i, leg)) or Position()

    def unrealized(self) -> float:
        u = 0.0
        for (i, leg), p in sorted(self.positions.items()):
            if p.qty != 0.0:
                u += self.leg_unrealized(i, leg, p)
        return u

    def leg_unrealized(self, i: int, leg: int, p: Position) -> float:
        return p.qty * (self.mark_price(i, leg) - self.pnl_pos(i, leg).avg)

    def realized_net(self) -> float:
        """realized - fees - transfer_fees + funding (the journal's components, in order)."""
        return self.realized - self.fees - self.transfer_fees + self.funding

    def net(self) -> float:
        return self.realized_net() + self.unrealized()

    def components(self) -> dict:
        """Every PnL component and the totals they make (the state document's ``pnl``)."""
        unreal = self.unrealized()
        rn = self.realized_net()
        return {"fills": self.realized, "fees": self.fees,
                "transfer_fees": self.transfer_fees, "funding": self.funding,
                "realized_net": rn, "unrealized": unreal, "net": rn + unreal}

    def sample_equity(self, now: int) -> dict:
        """Append an equity curve sample (ts_ns, net) and return the components."""
        c = self.components()
        self.equity.append((int(now), c["net"]))
        return c

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
                   fee: float, now: int = 0) -> float:
        """Book a fill into position, balances, realized PnL and fees (the one code path
        used live and when restoring from the journal). Returns realized PnL."""
        m = self.m
        sign = 1.0 if side == Side.BUY else -1.0
        key = self.pnl_key(i, leg)
        pp = self.pnl_positions.get(key)
        if pp is None:
            pp = self.pnl_positions[key] = Position()
        q0 = pp.qty
        pnl = pp.fill(sign * qty, price)
        if abs(pp.qty) > abs(q0) and (q0 == 0.0 or (q0 > 0) != (pp.qty > 0)):
            pp.opened_ns = int(now)
        pp.fees += fee
        p = self.pos(i, leg)
        p.fill(sign * qty, price, book=False)
        p.realized += pnl
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

    def apply_funding(self, i: int, leg: int, amount: float) -> None:
        """Book a funding payment (signed, + received) of a perp leg: PnL and its venue's
        quote balance (the one code path used live and when restoring)."""
        self.funding += amount
        self.pos(i, leg).funding += amount
        pp = self.pnl_positions.get(self.pnl_key(i, leg))
        if pp is not None:
            pp.funding += amount
        q = self.m.quote[i]
        bal = self.balances[self.m.venue[leg]]
        bal[q] = bal.get(q, 0.0) + amount

    def move_balance(self, vid: int, asset: str, qty: float) -> None:
        """Add ``qty`` (negative: take) of ``asset`` on venue ``vid`` (transfers)."""
        bal = self.balances[vid]
        bal[asset] = bal.get(asset, 0.0) + qty

    def charge_transfer_fee(self, fee: float) -> None:
        self.transfer_fees += fee

    def move_position(self, i: int, src_leg: int, dst_leg: int, qty: float) -> None:
        """A transfer of ``qty`` base of instrument ``i`` between two spot legs: the legs'
        positions (what each venue's mid marks) move with it, the PnL position and the
        realized PnL do not (the asset is still ours; its fee is a transfer fee)."""
        for leg, q in ((src_leg, -qty), (dst_leg, qty)):
            if leg >= 0:
                p = self.pos(i, leg)
                p.fill(q, p.mark if p.mark > 0 else p.avg, book=False)

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
        positions = []
        for (i, leg), p in sorted(self.positions.items()):
            if p.qty == 0.0 and p.realized == 0.0 and p.fees == 0.0 and p.funding == 0.0:
                continue
            mark = self.mark_price(i, leg)
            u = self.leg_unrealized(i, leg, p) if p.qty else 0.0
            positions.append({"instrument": m.instruments[i - 1],
                              "venue": m.venue_names[m.venue[leg]],
                              "market": "perp" if m.is_perp[leg] else "spot",
                              "qty": p.qty, "avg_price": p.avg, "mark": mark, "unrealized": u,
                              "realized": p.realized, "fees": p.fees, "funding": p.funding})
        c = self.components()
        net = c["net"]
        if self.day is None:
            self.day, self.day_start_net = utc_day(now), net
        pnl = {"realized": self.realized, "unrealized": c["unrealized"], "fees": self.fees,
               "net": net, "day": self.day, "day_net": net - self.day_start_net,
               "peak_net": max(self.peak_net, net), "drawdown": max(self.peak_net, net) - net,
               "fills": c["fills"], "transfer_fees": self.transfer_fees,
               "funding": self.funding, "realized_net": c["realized_net"],
               "equity": [list(e) for e in list(self.equity)[-EQUITY_SHOWN:]]}
        balances = {m.venue_names[v]: dict(b) for v, b in self.balances.items()}
        return positions, pnl, balances
