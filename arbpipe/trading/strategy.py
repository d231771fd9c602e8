"""Paper-trading strategy: opportunities in, simulated two-leg trades out, every risk checked.

Nothing here touches a real exchange account: every order is simulated against the live
top of book the strategy keeps itself. ``Strategy`` only orchestrates its parts:

    arbpipe.trading.book       LiveBook: top of book peeked from the feed rings (numba)
    arbpipe.trading.markets    Markets: legs (venue, market, fee) and instruments
    arbpipe.trading.portfolio  Portfolio: positions, balances, PnL, exposure
    arbpipe.trading.risk       Limits, RiskChecks: pair checks, sizing, order checks, rate
    arbpipe.trading.breaker    Breaker: kill switch, loss limits, circuit breaker
    arbpipe.trading.fills      PaperExchange: orders in flight, simulated fills, unwinds
    arbpipe.trading.journal    Journal: every decision and fill, to the ring and a file
    arbpipe.trading.restore    restore: a restarted strategy rebuilt from its journal
    arbpipe.trading.control    Control: the ``strategy.control`` segment
    arbpipe.trading.service    StrategyService: the process loop
    arbpipe.trading.view       read_state, status_line, render_state

Flow per Opportunity (OPEN or UPDATE; CLOSED ones are only counted): the breaker's gate
(KILL_SWITCH, read before every pair; BREAKER; DAILY_LOSS; DRAWDOWN), the pair checks (the
re-priced net counts the record's funding carry ``carry_bps``), sizing (capped by the
detector's depth-walked ``exec_qty``), each leg through the order checks, the pair's two
orders through the rate limits (``arbpipe.trading.risk``); both legs pass or neither is
sent. A pair that sizing finds short of balance is rejected BALANCE only after the order
checks (the README's order).
Observe mode: a passing pair is journaled as ORDER|OBSERVE and nothing is simulated.
Trade mode: both orders are sent (journal ORDER) and fill ``latency_ms`` later
(``arbpipe.trading.fills``). Every reject is journaled with its reason, limit and value.

Single-threaded; time is passed in (``now`` ns, CLOCK_REALTIME) so tests drive it exactly.
"""
from __future__ import annotations

import collections

from arbpipe.config import CANONICAL_MASK, PERP_ID_BIT, Config
from arbpipe.trading.book import LiveBook
from arbpipe.trading.breaker import Breaker
from arbpipe.trading.control import Control
from arbpipe.trading.fills import Order, PaperExchange
from arbpipe.trading.journal import Journal
from arbpipe.trading.markets import Markets
from arbpipe.trading.portfolio import Portfolio, Position
from arbpipe.trading.restore import restore
from arbpipe.trading.risk import Limits, Reject, RiskChecks
from shm_layouts.journal import JournalFlag, JournalKind, RejectReason
from shm_layouts.records import OPP_BUY_PERP, OPP_SELL_PERP, OppState

_CLOSED = int(OppState.CLOSED)
COUNTERS = ("opportunities_read", "orders", "fills", "rejects", "unwinds", "missed",
            "observed", "breaker_trips")


class Strategy:
    """Decisions, simulated fills, positions, PnL, breaker; see the module docstring."""

    def __init__(self, cfg: Config, book: LiveBook | None = None, journal: Journal | None = None,
                 control: Control | None = None, log=None):
        self.cfg = cfg
        self.markets = Markets(cfg)
        self.legs = self.markets.table
        self.book = book or LiveBook(self.legs, len(cfg.instruments))
        self.control = control
        self.log = log or (lambda d: None)
        self.limits = Limits(cfg.strategy)
        self.mode = cfg.strategy.mode
        self.rejects = collections.Counter()
        self.counters = collections.Counter()
        journal = journal or Journal()
        self.portfolio = Portfolio(cfg, self.markets, self.book, self.limits)
        self.risk = RiskChecks(self.markets, self.book, self.portfolio, self.limits)
        self.exchange = PaperExchange(self.markets, self.book, self.portfolio, journal,
                                      self.limits, self.counters, cfg.strategy.partial_fills)
        self.circuit = Breaker(self.portfolio, self.limits, journal, control,
                               cfg.strategy.kill_switch, self.counters, self.log)
        self._journal = journal

    # -- the parts' state, by its old names -------------------------------------------
    @property
    def journal(self) -> Journal:
        return self._journal

    @journal.setter
    def journal(self, j: Journal) -> None:
        self._journal = self.exchange.journal = self.circuit.journal = j

    @property
    def breaker(self) -> dict:
        return self.circuit.state

    @property
    def positions(self) -> dict[tuple[int, int], Position]:
        return self.portfolio.positions

    @property
    def balances(self) -> dict[int, dict[str, float]]:
        return self.portfolio.balances

    @property
    def realized(self) -> float:
        return self.portfolio.realized

    @property
    def fees(self) -> float:
        return self.portfolio.fees

    @property
    def orders(self) -> dict[int, Order]:
        return self.exchange.orders

    def kill_switch(self) -> bool:
        return self.circuit.kill_switch()

    def set_kill_switch(self, on: bool) -> None:
        self.circuit.set_kill_switch(on)

    def trip(self, reason: int, value: float, limit: float, now: int) -> None:
        self.circuit.trip(reason, value, limit, now)

    def reset_breaker(self, now: int, why: str = "manual") -> None:
        self.circuit.reset(now, why)

    def check_breaker(self, now: int) -> None:
        """Kill switch, reset requests, loss limits (housekeeping and after fills)."""
        self.circuit.check(now)

    def net(self) -> float:
        return self.portfolio.net()

    def available(self, vid: int, asset: str) -> float:
        return self.portfolio.available(vid, asset, self.exchange.in_flight())

    def apply_fill(self, i: int, leg: int, side: int, qty: float, price: float,
                   fee: float) -> float:
        return self.portfolio.apply_fill(i, leg, side, qty, price, fee)

    def check_order(self, o: Order, now: int, extra: list[Order] = ()) -> Reject | None:
        """Every per-order check on ``o`` (``extra``: orders of the same pair checked
        before it, counted as in flight)."""
        return self.risk.check_order(o, now, self.exchange.in_flight() + list(extra))

    def check_rate(self, n_orders: int, now: int) -> Reject | None:
        return self.risk.check_rate(n_orders, now)

    # -- decisions ----------------------------------------------------------------------
    def on_opportunity(self, opp, read_ns: int) -> Reject | None:
        """Decide on one Opportunity record (numpy record of ``shm_layouts.OPPORTUNITY``).
        Returns the Reject (also journaled), or None when a pair was sent / observed."""
        self.counters["opportunities_read"] += 1
        if int(opp["state"]) == _CLOSED:
            return None
        i = int(opp["instrument_id"]) & CANONICAL_MASK
        flags = int(opp["flags"])
        bleg = self.markets.leg_of(int(opp["buy_venue"]),
                                   i | (PERP_ID_BIT if flags & OPP_BUY_PERP else 0))
        sleg = self.markets.leg_of(int(opp["sell_venue"]),
                                   i | (PERP_ID_BIT if flags & OPP_SELL_PERP else 0))
        ctx = dict(opp_id=int(opp["opp_id"]), trigger_recv_ns=int(opp["trigger_recv_ns"]),
                   detect_ns=int(opp["detect_ns"]), read_ns=read_ns)
        if bleg < 0 or sleg < 0 or not 0 < i <= len(self.cfg.instruments):
            return self._reject(Reject(RejectReason.NO_QUOTE), i, max(bleg, sleg, 0), ctx,
                                read_ns)
        r = self._decide(opp, i, bleg, sleg, ctx, read_ns)
        if r is not None:
            self._reject(r, i, r.leg if r.leg >= 0 else bleg, ctx, read_ns)
        return r

    def _decide(self, opp, i, bleg, sleg, ctx, now) -> Reject | None:
        r = self.circuit.gate(now)
        if r is not None:
            return r
        in_flight = self.exchange.in_flight()
        r, qb, qs = self.risk.check_pair(i, bleg, sleg, float(opp["confidence"]), now,
                                         in_flight, len(self.exchange.pairs),
                                         float(opp["carry_bps"]))
        if r is not None:
            return r
        qty, r = self.risk.size(i, bleg, sleg, qb, qs, float(opp["exec_qty"]), in_flight)
        short = None
        if r is not None:
            if r.reason != RejectReason.BALANCE:
                return r
            # the balances leave less than the minimum order: balance comes after the
            # order checks, so they still run (on what the balances allow, r.limit) first
            short, qty = r, r.limit
        buy, sell = self.exchange.pair(i, bleg, sleg, qb.ask, qs.bid, qty, now, **ctx)
        r = self.risk.check_order(buy, now, in_flight) or \
            self.risk.check_order(sell, now, in_flight + [buy])
        if r is not None and (short is None or r.reason != RejectReason.BALANCE):
            return r
        if short is not None:
            return short
        r = self.risk.check_rate(2, now)
        if r is not None:
            return r
        self.exchange.take_pair_id()
        self.risk.traded(i, bleg, sleg, 2, now)
        observe = self.mode == "observe"
        for o in (buy, sell):
            self.exchange.journal_order(JournalKind.ORDER, o, now,
                                        int(JournalFlag.OBSERVE) if observe else 0)
        if observe:
            self.counters["observed"] += 1
            return None
        self.counters["orders"] += 2
        self.exchange.send(buy, sell)
        return None

    def _reject(self, r: Reject, i, leg, ctx, now) -> Reject:
        name = RejectReason(r.reason).name.lower()
        self.rejects[name] += 1
        self.counters["rejects"] += 1
        self.journal.write(JournalKind.REJECT, ts_ns=now, reason=int(r.reason),
                           venue_id=self.markets.venue[leg] if leg >= 0 else 0,
                           instrument_id=self.markets.iid(i, leg) if leg >= 0 else i,
                           limit=float(r.limit), value=float(r.value), **ctx)
        return r

    # -- execution ----------------------------------------------------------------------
    def poll(self, now: int) -> int:
        """Fill every order due by ``now``; settle finished pairs; run unwinds; then the
        breaker when anything executed. Returns the number of orders executed."""
        n = self.exchange.poll(now)
        if n:
            self.check_breaker(now)
        return n

    def next_due(self) -> int | None:
        return self.exchange.next_due()

    def restore(self, entries: list[dict], now: int) -> dict:
        """Rebuild from journal entries (``arbpipe.trading.restore``)."""
        return restore(self, entries, now)

    # -- state document -----------------------------------------------------------------
    def state(self, now: int, extra: dict | None = None) -> dict:
        """The state document published in ``strategy.state`` (``arbpipe.trading.view``)."""
        positions, pnl, balances = self.portfolio.report(now)
        counters = {k: int(self.counters.get(k, 0)) for k in COUNTERS}
        counters["journal_dropped"] = self.journal.dropped
        counters["in_flight"] = len(self.exchange.orders) + len(self.exchange.unwinds)
        doc = {"mode": self.mode, "kill_switch": self.kill_switch(),
               "breaker": dict(self.breaker), "counters": counters,
               "rejects": dict(self.rejects), "positions": positions, "pnl": pnl,
               "balances": balances, "limits": self.limits.as_dict(),
               "journal_seq": self.journal.seq}
        if extra:
            doc.update(extra)
        return doc
