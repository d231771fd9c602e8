"""Paper-trading strategy: opportunities in, simulated two-leg trades out, every risk checked.

Nothing here touches a real exchange account: every order is simulated against the live
books the strategy keeps itself. ``Strategy`` only orchestrates its parts:

    arbpipe.trading.book       LiveBook: top of book, L2 levels and funding peeked from the
                               feed rings (numba)
    arbpipe.trading.markets    Markets: legs (venue, market, fee) and instruments
    arbpipe.trading.portfolio  Portfolio: positions, balances, PnL, exposure
    arbpipe.trading.risk       Limits, RiskChecks: pair checks, sizing, order checks, rate
    arbpipe.trading.breaker    Breaker: kill switch, loss limits, circuit breaker
    arbpipe.trading.fills      PaperExchange: orders in flight, simulated fills, unwinds
    arbpipe.trading.depth      walk: an IOC order on a book's levels, limit prices
    arbpipe.trading.exits      Trades: pairs with a perp leg held until an exit rule fires,
                               the exit checks, the per-pair ledger
    arbpipe.trading.funding    Funding: perp legs pay / receive funding at funding times
    arbpipe.trading.inventory  Inventory: balances kept in bands by simulated transfers
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
Trade mode: both orders are sent (journal ORDER), each an IOC with a limit (the worst level
its size reaches on the live book, ``limit_tolerance_bps`` beyond), and fill ``latency_ms``
later on the live book (``arbpipe.trading.fills``). Every reject is journaled with its
reason, limit and value.

The trade's life, at each ``poll`` after the fills: funding settles on open perp legs
(``arbpipe.trading.funding``); pairs with a perp leg are held until an exit rule fires
(converged to ``exit_net_bps``, ``max_hold_s``, a stop on adverse basis, the kill switch
with ``kill_switch_flatten``, ``stop`` with ``flatten_on_stop``) and exit with two IOC
legs priced like entries (``arbpipe.trading.exits``); the inventory manager keeps
balances inside their bands by transfers (``arbpipe.trading.inventory``); the equity curve
is sampled every ``equity_sample_s`` (journal EQUITY). Exits go through the exit checks
only: stale quote (NO_QUOTE, STALE_QUOTE), FAT_FINGER, BALANCE, then RATE_LIMIT_SECOND and
RATE_LIMIT_MINUTE; every other check is entry-only, so an exit is never blocked by an
entry-only limit (a failed exit check is journaled REJECT|EXIT_LEG and retried at the next
poll).

Single-threaded; time is passed in (``now`` ns, CLOCK_REALTIME) so tests drive it exactly.
"""
from __future__ import annotations

import collections

from arbpipe.config import CANONICAL_MASK, PERP_ID_BIT, Config
from arbpipe.trading.book import LiveBook
from arbpipe.trading.breaker import Breaker
from arbpipe.trading.control import Control
from arbpipe.trading.depth import limit_price, worst_price
from arbpipe.trading.exits import Trades
from arbpipe.trading.fills import Order, PaperExchange
from arbpipe.trading.funding import Funding
from arbpipe.trading.inventory import Inventory
from arbpipe.trading.journal import Journal
from arbpipe.trading.markets import Markets
from arbpipe.trading.portfolio import Portfolio, Position
from arbpipe.trading.restore import restore
from arbpipe.trading.risk import Limits, Reject, RiskChecks
from shm_layouts.journal import JournalFlag, JournalKind, RejectReason, Side, pair_order_ids
from shm_layouts.records import OPP_BUY_PERP, OPP_SELL_PERP, OppState

_CLOSED = int(OppState.CLOSED)
COUNTERS = ("opportunities_read", "orders", "fills", "rejects", "unwinds", "missed",
            "observed", "breaker_trips", "exits", "exit_rejects", "transfers", "fundings")


class Strategy:
    """Decisions, simulated fills, positions, PnL, breaker; see the module docstring."""

    def __init__(self, cfg: Config, book: LiveBook | None = None, journal: Journal | None = None,
                 control: Control | None = None, log=None):
        self.cfg = cfg
        self.markets = Markets(cfg)
        self.legs = self.markets.table
        self.book = book or LiveBook(self.legs, len(cfg.instruments), cfg.book_depth())
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
        self.trades = Trades(self.markets, self.book, self.portfolio, self.limits)
        self.funding = Funding(self.markets, self.book, self.portfolio, journal, self.trades)
        self.inventory = Inventory(cfg, self.markets, self.book, self.portfolio, journal)
        self.exchange.on_fill = self._on_fill
        self.exchange.on_settle = self.trades.settled
        self._journal = journal
        self._equity_at = None         # time of the last equity sample

    # -- the parts' state, by its old names -------------------------------------------
    @property
    def journal(self) -> Journal:
        return self._journal

    @journal.setter
    def journal(self, j: Journal) -> None:
        self._journal = self.exchange.journal = self.circuit.journal = j
        self.funding.journal = self.inventory.journal = j

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
                   fee: float, now: int = 0) -> float:
        return self.portfolio.apply_fill(i, leg, side, qty, price, fee, now)

    def _on_fill(self, o: Order, qty: float, price: float, fee: float, pnl: float,
                 now: int) -> None:
        self.trades.on_fill(o.order_id, o.side, qty, price, fee, pnl, now)

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
        qty, r = self.risk.size(i, bleg, sleg, *self.depth_quotes(i, bleg, sleg, qb, qs),
                                float(opp["exec_qty"]), in_flight)
        short = None
        if r is not None:
            if r.reason != RejectReason.BALANCE:
                return r
            # the balances leave less than the minimum order: balance comes after the
            # order checks, so they still run (on what the balances allow, r.limit) first
            short, qty = r, r.limit
        buy, sell = self.exchange.pair(i, bleg, sleg, qb.ask, qs.bid, qty, now, **ctx)
        buy.limit, sell.limit = self.limit_of(buy), self.limit_of(sell)
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
        for o in (buy, sell):
            self.trades.note_order(o.order_id, o.i, o.leg)
        self.exchange.send(buy, sell)
        return None

    def depth_quotes(self, i, bleg, sleg, qb, qs):
        """The live quotes with the top quantities replaced by the L2 books' (all levels
        held), so sizing is capped by the depth an IOC can walk, not by the top level."""
        la, lb = self.book.ladder(i, bleg, ask=True), self.book.ladder(i, sleg, ask=False)
        if la is not None:
            qb = qb._replace(ask_qty=sum(la[1]))
        if lb is not None:
            qs = qs._replace(bid_qty=sum(lb[1]))
        return qb, qs

    def limit_of(self, o: Order) -> float:
        """An order's IOC limit: the deepest level its size reaches on the live book (the
        top quote without one), ``limit_tolerance_bps`` beyond."""
        lad = self.book.ladder(o.i, o.leg, ask=o.side == Side.BUY)
        worst = worst_price(lad[0], lad[1], o.qty) if lad is not None else o.price
        return limit_price(o.side, worst or o.price, self.limits.limit_tolerance_bps)

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
        """Fill every order due by ``now``; settle finished pairs; run unwinds; settle
        funding; fire exit rules; land / start transfers; sample the equity; then the
        breaker when anything happened. Returns the number of orders executed."""
        n = self.exchange.poll(now)
        k = 0
        if self.mode != "observe":
            k = self.funding.tick(now)
            self.counters["fundings"] += k
            k += self.exits(now)
            t = self.inventory.tick(now, self.exchange.in_flight(), self.trades.held())
            self.counters["transfers"] += t
            k += t
        self.sample_equity(now)
        if n or k:
            self.check_breaker(now)
        return n

    def sample_equity(self, now: int) -> None:
        period = self.cfg.strategy.equity_sample_s
        if period <= 0:
            return
        if self._equity_at is None:
            self._equity_at = now
        elif now - self._equity_at >= period * 1e9:
            self._equity_at = now
            c = self.portfolio.sample_equity(now)
            self.journal.write(JournalKind.EQUITY, ts_ns=now, value=c["net"],
                               realized_pnl=c["fills"], fee=c["fees"],
                               limit=c["transfer_fees"], price=c["funding"],
                               notional=c["unrealized"])

    def exits(self, now: int, shutdown: bool = False) -> int:
        """Fire the exit rules on every open trade with nothing in flight; an exit that
        passes the exit checks sends its legs. Returns exits sent."""
        kill = self.limits.kill_switch_flatten and self.kill_switch()
        sent = 0
        for t in self.trades.open_trades():
            if self.exchange.busy(t.pid):
                continue
            fired = self.trades.rule(t, now, kill, shutdown)
            if fired is None:
                continue
            reason, value, limit = fired
            in_flight = self.exchange.in_flight()
            orders = self.trades.exit_orders(t, self.exchange.due_after(now))
            r, checked = None, []
            for o in orders:
                r = self.trades.check_exit(o, now, in_flight + checked)
                if r is not None:
                    break
                checked.append(o)
            if r is None:
                r = self.risk.check_rate(len(orders), now)
            src = pair_order_ids(t.pid)[0]
            if r is not None:
                if r.reason != t.last_reject:
                    t.last_reject = int(r.reason)
                    self.counters["exit_rejects"] += 1
                    leg = r.leg if r.leg >= 0 else t.bleg
                    self.journal.write(JournalKind.REJECT, ts_ns=now, reason=int(r.reason),
                                       flags=int(JournalFlag.EXIT_LEG),
                                       venue_id=self.markets.venue[leg],
                                       instrument_id=self.markets.iid(t.i, leg),
                                       order_id=src, limit=float(r.limit),
                                       value=float(r.value))
                continue
            t.last_reject = 0
            self.journal.write(JournalKind.EXIT, ts_ns=now, reason=reason,
                               instrument_id=t.i, order_id=src, qty=max(t.qty_b, t.qty_s),
                               value=value, limit=limit)
            t.attempts += 1
            self.risk.sent.extend([now] * len(orders))
            for o in orders:
                self.exchange.journal_order(JournalKind.ORDER, o, now)
            self.counters["orders"] += len(orders)
            self.counters["exits"] += 1
            self.exchange.send_exit(t.pid, orders)
            sent += 1
        return sent

    def stop(self, now: int, clock=None, sleep=None, timeout_s: float = 5.0) -> int:
        """Shutdown: with ``flatten_on_stop``, exit every open trade (rule SHUTDOWN) and,
        given a ``clock`` (ns) and ``sleep``, poll until nothing is in flight or
        ``timeout_s``. Returns the trades still open."""
        if not self.cfg.strategy.flatten_on_stop or self.mode == "observe":
            return len(self.trades.open_trades())
        self.exits(now, shutdown=True)
        if clock is not None and sleep is not None:
            end = now + int(timeout_s * 1e9)
            while self.exchange.next_due() is not None and now < end:
                due = self.exchange.next_due()
                if due > now:
                    sleep(min((due - now) / 1e9, 0.05))
                now = clock()
                self.exchange.poll(now)
                self.exits(now, shutdown=True)
        return len(self.trades.open_trades())

    def next_due(self) -> int | None:
        """The next time something is due: an order or unwind, a transfer landing, a
        funding time of an open perp leg."""
        due = [self.exchange.next_due()]
        due += [t.due_ns for t in self.inventory.in_flight.values()]
        for (i, leg), pp in self.portfolio.pnl_positions.items():
            if leg >= 0 and pp.qty != 0.0:
                f = self.book.funding(i, leg)
                if f is not None and f[1] > self.funding.last_paid.get((i, leg), 0) \
                        and f[1] > pp.opened_ns:
                    due.append(f[1])
        due = [d for d in due if d is not None]
        return min(due) if due else None

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
               "journal_seq": self.journal.seq, "trades": self.trades.report(now),
               "inventory": self.inventory.report()}
        if extra:
            doc.update(extra)
        return doc
