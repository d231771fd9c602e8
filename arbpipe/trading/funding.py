"""Funding on perp legs: paid or received at each funding time, from the FUNDING records.

The strategy's ``LiveBook`` keeps, per perp leg, the funding rate and the next funding time
of the latest FUNDING record. ``tick`` (each strategy poll) settles a funding time ``t``
of a leg once ``now >= t``, when the leg's PnL position is open (it opened before ``t``)
and ``t`` is later than the last one settled on that leg: the payment is
``-qty x mark x rate`` (a long pays a positive rate, a short receives it; mark: the leg's
live mid at settlement, else its last mark), booked into the venue's quote balance and the
``funding`` PnL component (``Portfolio.apply_funding``), shared among the open trades
holding the leg by quantity (their per-pair ledger), and journaled as FUNDING (fields in
``shm_layouts.journal``). A restart replays FUNDING entries through ``book``, the code
path used live, so no funding time is paid twice.
"""
from __future__ import annotations

from arbpipe.trading.book import LiveBook
from arbpipe.trading.journal import Journal
from arbpipe.trading.markets import Markets
from arbpipe.trading.portfolio import Portfolio
from shm_layouts.journal import JournalFlag, JournalKind


class Funding:
    """Funding settlement per perp leg; see the module docstring. ``trades``: an
    ``arbpipe.trading.exits.Trades`` (per-pair attribution) or None."""

    def __init__(self, markets: Markets, book: LiveBook, portfolio: Portfolio,
                 journal: Journal, trades=None):
        self.m = markets
        self.book = book
        self.portfolio = portfolio
        self.journal = journal
        self.trades = trades
        self.last_paid: dict[tuple[int, int], int] = {}
        self.settled = 0

    def book_payment(self, i: int, leg: int, amount: float, t: int) -> None:
        """Book a payment of funding time ``t`` (live and restore)."""
        self.portfolio.apply_funding(i, leg, amount)
        self.last_paid[(i, leg)] = max(self.last_paid.get((i, leg), 0), int(t))
        if self.trades is not None:
            self.trades.attribute_funding(i, leg, amount)
        self.settled += 1

    def tick(self, now: int) -> int:
        """Settle every funding time due by ``now``; returns how many were settled."""
        n = 0
        pf, m = self.portfolio, self.m
        for (i, leg), pp in sorted(pf.pnl_positions.items()):
            if leg < 0 or not m.is_perp[leg] or pp.qty == 0.0:
                continue
            f = self.book.funding(i, leg)
            if f is None:
                continue
            rate, t = f
            if t > now or t <= pp.opened_ns or t <= self.last_paid.get((i, leg), 0):
                continue
            mark = pf.mark_price(i, leg)
            amount = -pp.qty * mark * rate
            self.book_payment(i, leg, amount, t)
            self.journal.write(JournalKind.FUNDING, ts_ns=now, flags=int(JournalFlag.PERP),
                               venue_id=m.venue[leg], instrument_id=m.iid(i, leg),
                               qty=pp.qty, price=mark, value=rate, realized_pnl=amount,
                               notional=pp.qty * mark, trigger_recv_ns=t)
            n += 1
        return n
