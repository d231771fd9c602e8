"""Pre-trade risk checks: the current limits, the pair checks, sizing, the order checks and
the order rate. (The loss limits and the kill switch are the breaker's:
``arbpipe.trading.breaker``.)

Pair checks, in order, the first failure rejecting the pair with a named RejectReason:
IN_FLIGHT (the instrument already has a pair in flight), MAX_OPEN_ORDERS, COOLDOWN (the
same instrument/buy/sell pair traded less than cooldown_ms ago), LOW_CONFIDENCE, NO_QUOTE,
STALE_QUOTE (live quote older than max_quote_age_ms), BELOW_THRESHOLD (net re-priced from
the live book: gross - both taker fees - 2 x slippage_bps + the detector's funding carry
``carry_bps``, 0 unless ``[detector] funding_horizon_s`` is set).

Sizing: qty = min(live ask qty (buy leg), live bid qty (sell leg), the detector's
exec_qty, max_order_notional / price of each leg), then capped by what the balances
allow; BALANCE when the balances cut it below MIN_ORDER_NOTIONAL, SIZE_TOO_SMALL when
anything else did.

Order checks, each leg through every one: MAX_ORDER_NOTIONAL, FAT_FINGER,
MAX_POSITION_INSTRUMENT, MAX_POSITION_VENUE, MAX_GROSS, BALANCE; then the pair's two
orders against RATE_LIMIT_SECOND and RATE_LIMIT_MINUTE.

Boundaries: a value equal to its limit passes, one above it rejects: notional <=
max_order_notional, |worst-case position| <= max_position_notional, distance from mid <=
fat_finger_bps, orders in the rolling window + 2 <= the rate limit, age <=
max_quote_age_ms, net >= min_net_bps, confidence >= min_confidence. A money/bps limit of 0
disables its check; the count limits (max_open_orders, rates) mean what they say (0: none
allowed). Worst-case positions are valued at the order price (its own leg) or the mark
(the others; ``arbpipe.trading.portfolio``).

Exits (pairs with a perp leg, ``arbpipe.trading.exits``) go through the exit checks only:
the live-quote check of each leg (no quote, stale quote), fat finger, balance (a spot leg),
then the two rate limits; every other check above is entry-only, so an exit is never
blocked by an entry-only limit. Sizing with L2 books: the top quantities are those of the
whole book held (``Strategy.depth_quotes``), the detector's depth-walked exec_qty caps it.
"""
from __future__ import annotations

import collections
import dataclasses
import math

from arbpipe.config import RISK_KEYS
from arbpipe.trading.book import LiveBook, Quote
from arbpipe.trading.fills import Order
from arbpipe.trading.markets import Markets
from arbpipe.trading.portfolio import Portfolio
from shm_layouts.journal import RejectReason, Side

MIN_ORDER_NOTIONAL = 10.0          # quote currency: smaller orders are not worth sending
RATE_SECOND_NS = 1_000_000_000
RATE_WINDOW_NS = 60_000_000_000    # the per-minute window; sends older than this are dropped


@dataclasses.dataclass
class Reject:
    reason: int
    leg: int = -1
    limit: float = 0.0
    value: float = 0.0


class Limits:
    """The strategy's current limits: config values, changed at runtime via ``apply``."""

    def __init__(self, s):
        for f in s.__struct_fields__:
            setattr(self, f, getattr(s, f))

    def apply(self, changes: dict) -> list[tuple[str, object, object]]:
        """Apply validated changes atomically; returns (key, old, new) of each."""
        out = []
        for k, v in changes.items():
            if k not in RISK_KEYS:
                raise KeyError(k)
            old = getattr(self, k)
            setattr(self, k, type(old)(v))
            out.append((k, old, getattr(self, k)))
        return out

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in RISK_KEYS}


class RiskChecks:
    """The checks of the module docstring, on the live book and the portfolio. Keeps the
    send times of the last minute (``sent``) and each pair's last trade (``last_trade``)."""

    def __init__(self, markets: Markets, book: LiveBook, portfolio: Portfolio, limits: Limits):
        self.m = markets
        self.book = book
        self.portfolio = portfolio
        self.limits = limits
        self.sent: collections.deque = collections.deque()  # send times (ns), last 60 s
        self.last_trade: dict[tuple[int, int, int], int] = {}

    def check_pair(self, i: int, bleg: int, sleg: int, confidence: float, now: int,
                   in_flight: list[Order], open_pairs: int, carry_bps: float = 0.0
                   ) -> tuple[Reject | None, Quote | None, Quote | None]:
        """The pair checks; (None, buy leg quote, sell leg quote) when they pass.
        ``carry_bps``: the opportunity's funding carry (Opportunity.carry_bps)."""
        lim = self.limits
        if any(o.i == i for o in in_flight):
            return Reject(RejectReason.IN_FLIGHT), None, None
        if open_pairs >= lim.max_open_orders:
            return Reject(RejectReason.MAX_OPEN_ORDERS, -1, lim.max_open_orders,
                          open_pairs), None, None
        last = self.last_trade.get((i, bleg, sleg))
        if last is not None and lim.cooldown_ms > 0 and now - last < lim.cooldown_ms * 1e6:
            return Reject(RejectReason.COOLDOWN, -1, lim.cooldown_ms, (now - last) / 1e6), \
                None, None
        if confidence < lim.min_confidence:
            return Reject(RejectReason.LOW_CONFIDENCE, -1, lim.min_confidence, confidence), \
                None, None
        qb, qs = self.book.quote(i, bleg), self.book.quote(i, sleg)
        if qb is None or qs is None:
            return Reject(RejectReason.NO_QUOTE, bleg if qb is None else sleg), None, None
        for leg, q in ((bleg, qb), (sleg, qs)):
            age = (now - q.recv_ns) / 1e6
            if lim.max_quote_age_ms > 0 and age > lim.max_quote_age_ms:
                return Reject(RejectReason.STALE_QUOTE, leg, lim.max_quote_age_ms, age), \
                    None, None
        ask, bid = qb.ask, qs.bid
        mid = (ask + bid) / 2
        net = (bid - ask) / mid * 1e4 - self.m.fee_bps[bleg] - self.m.fee_bps[sleg] \
            - 2 * lim.slippage_bps + (carry_bps if math.isfinite(carry_bps) else 0.0)
        if net < lim.min_net_bps:
            return Reject(RejectReason.BELOW_THRESHOLD, -1, lim.min_net_bps, net), None, None
        return None, qb, qs

    def size(self, i: int, bleg: int, sleg: int, qb: Quote, qs: Quote, exec_qty: float,
             in_flight: list[Order]) -> tuple[float, Reject | None]:
        """The pair's quantity (base units), or the Reject when it is too small."""
        lim, m = self.limits, self.m
        ask, bid = qb.ask, qs.bid
        qty = min(qb.ask_qty, qs.bid_qty, exec_qty or math.inf)
        if lim.max_order_notional > 0:
            qty = min(qty, lim.max_order_notional / max(ask, bid))
        capped = qty
        for leg, side, px in ((bleg, Side.BUY, ask), (sleg, Side.SELL, bid)):
            vid = m.venue[leg]
            fee = m.fee_bps[leg] / 1e4
            if m.is_perp[leg]:
                room = self.portfolio.available(vid, m.quote[i], in_flight) / (
                    px * (1 / lim.leverage + fee))
            elif side == Side.BUY:
                room = self.portfolio.available(vid, m.quote[i], in_flight) / (
                    px * (1 + lim.slippage_bps / 1e4 + fee))
            else:
                room = self.portfolio.available(vid, m.base[i], in_flight)
            capped = min(capped, max(room, 0.0))
        if capped * max(ask, bid) < MIN_ORDER_NOTIONAL:
            if qty * max(ask, bid) >= MIN_ORDER_NOTIONAL:
                return 0.0, Reject(RejectReason.BALANCE, -1, capped, qty)
            return 0.0, Reject(RejectReason.SIZE_TOO_SMALL, -1, MIN_ORDER_NOTIONAL,
                               qty * max(ask, bid))
        return capped * (1 - 1e-9), None  # stay clear of a balance boundary by rounding

    def check_order(self, o: Order, now: int, in_flight: list[Order]) -> Reject | None:
        """Every per-order check on ``o``; ``in_flight``: the orders in flight, with the
        orders of the same pair checked before ``o``."""
        lim, m, pf = self.limits, self.m, self.portfolio
        notional = o.price * o.qty
        if lim.max_order_notional > 0 and notional > lim.max_order_notional:
            return Reject(RejectReason.MAX_ORDER_NOTIONAL, o.leg, lim.max_order_notional,
                          notional)
        if lim.fat_finger_bps > 0:
            mid = self.book.mid(o.i, o.leg)
            if mid is None:
                return Reject(RejectReason.NO_QUOTE, o.leg)
            dist = abs(o.price - mid) / mid * 1e4
            if dist > lim.fat_finger_bps:
                return Reject(RejectReason.FAT_FINGER, o.leg, lim.fat_finger_bps, dist)
        if lim.max_position_notional > 0:
            worst = pf.worst(o.i, o.leg, in_flight, o.side, o.qty) * o.price
            if worst > lim.max_position_notional:
                return Reject(RejectReason.MAX_POSITION_INSTRUMENT, o.leg,
                              lim.max_position_notional, worst)
        vid = m.venue[o.leg]
        if lim.max_venue_notional > 0 or lim.max_gross_notional > 0:
            keys = {k for k in pf.positions} | {(x.i, x.leg) for x in in_flight}
            keys.add((o.i, o.leg))
            venue = gross = 0.0
            for (i, leg) in keys:
                if (i, leg) == (o.i, o.leg):
                    v = pf.worst(i, leg, in_flight, o.side, o.qty) * o.price
                else:
                    v = pf.worst(i, leg, in_flight) * pf.mark_price(i, leg)
                gross += v
                if m.venue[leg] == vid:
                    venue += v
            if lim.max_venue_notional > 0 and venue > lim.max_venue_notional:
                return Reject(RejectReason.MAX_POSITION_VENUE, o.leg,
                              lim.max_venue_notional, venue)
            if lim.max_gross_notional > 0 and gross > lim.max_gross_notional:
                return Reject(RejectReason.MAX_GROSS, o.leg, lim.max_gross_notional, gross)
        fee = notional * m.fee_bps[o.leg] / 1e4
        q = m.quote[o.i]
        if m.is_perp[o.leg]:
            need, have = notional / lim.leverage + fee, pf.available(vid, q, in_flight)
        elif o.side == Side.BUY:
            need = notional * (1 + lim.slippage_bps / 1e4) + fee
            have = pf.available(vid, q, in_flight)
        else:
            need, have = o.qty, pf.available(vid, m.base[o.i], in_flight)
        if need > have:
            return Reject(RejectReason.BALANCE, o.leg, have, need)
        return None

    def check_rate(self, n_orders: int, now: int) -> Reject | None:
        """``n_orders`` more orders now against the per-second and per-minute limits."""
        while self.sent and self.sent[0] <= now - RATE_WINDOW_NS:
            self.sent.popleft()
        last_s = sum(1 for t in self.sent if t > now - RATE_SECOND_NS)
        if last_s + n_orders > self.limits.max_orders_per_s:
            return Reject(RejectReason.RATE_LIMIT_SECOND, -1, self.limits.max_orders_per_s,
                          last_s + n_orders)
        if len(self.sent) + n_orders > self.limits.max_orders_per_min:
            return Reject(RejectReason.RATE_LIMIT_MINUTE, -1, self.limits.max_orders_per_min,
                          len(self.sent) + n_orders)
        return None

    def traded(self, i: int, bleg: int, sleg: int, n_orders: int, now: int) -> None:
        """A pair passed every check at ``now``: start its cooldown, count its orders."""
        self.last_trade[(i, bleg, sleg)] = now
        self.sent.extend([now] * n_orders)
