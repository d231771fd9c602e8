"""An immediate-or-cancel order filled against one side of a book: walking levels.

``walk`` takes the levels of the side an order takes liquidity from (asks for a buy, bids
for a sell, best first) and fills up to ``qty`` on the levels whose price is within the
order's limit (a buy: price <= limit; a sell: price >= limit; no limit: every level). Each
level's quantity is taken at that level's price moved ``slip_bps`` against us (the market
moving during the order). Partial where the book is thin; ``extend`` fills what the levels
lack at the last level taken (a market order that must complete: unwinds, the old
``partial_fills = false``).

``worst_price`` is what the strategy prices an order's limit from: the price of the
deepest level that filling ``qty`` reaches on the book as it is now (the opportunity's
worst acceptable price); ``limit_price`` moves it ``tolerance_bps`` further.

Plain Python: it runs once per order (rare), over at most the book's depth.
"""
from __future__ import annotations

import typing

from shm_layouts.journal import Side


class Fill(typing.NamedTuple):
    qty: float              # filled, base units (0: nothing within the limit)
    price: float            # VWAP of the slipped level prices (one level: its price exactly)
    notional: float         # sum of level qty x slipped level price
    levels: int             # levels touched (the last one possibly partly)


def within(side: int, price: float, limit: float | None) -> bool:
    if limit is None:
        return True
    return price <= limit if side == Side.BUY else price >= limit


def walk(prices, qtys, side: int, qty: float, limit: float | None = None,
         slip_bps: float = 0.0, extend: bool = False) -> Fill:
    """Fill up to ``qty`` on the levels (best first) within ``limit``; see the module
    docstring."""
    slip = slip_bps / 1e4
    k = (1 + slip) if side == Side.BUY else (1 - slip)
    filled, notional, n, last = 0.0, 0.0, 0, None
    for px, q in zip(prices, qtys):
        left = qty - filled
        if left <= qty * 1e-12 or not within(side, px, limit):
            break
        take = min(q, left)
        if take <= 0.0:
            continue
        notional += take * (px * k)
        filled += take
        n += 1
        last = px
    left = qty - filled
    if extend and left > qty * 1e-12 and last is not None:
        notional += left * (last * k)
        filled += left
    if abs(qty - filled) <= qty * 1e-12:
        filled = qty
    if n == 0:
        return Fill(0.0, 0.0, 0.0, 0)
    return Fill(filled, last * k if n == 1 else notional / filled, notional, n)


def worst_price(prices, qtys, qty: float) -> float | None:
    """The price of the deepest level that filling ``qty`` reaches (the last level when
    the book is thinner than ``qty``); None on an empty side."""
    left, last = qty, None
    for px, q in zip(prices, qtys):
        last = px
        left -= q
        if left <= 0.0:
            break
    return last


def limit_price(side: int, worst: float, tolerance_bps: float) -> float:
    """An IOC limit ``tolerance_bps`` beyond ``worst`` (up for a buy, down for a sell)."""
    t = tolerance_bps / 1e4
    return worst * (1 + t) if side == Side.BUY else worst * (1 - t)
