"""The circuit breaker, the kill switch and the loss limits.

The breaker trips on DAILY_LOSS (the day's net PnL reaching -daily_loss_limit, <=),
DRAWDOWN (net down max_drawdown from its peak, >=) or KILL_SWITCH; while tripped every
new pair is rejected (BREAKER). ``arbpipe kill-switch off`` resets a kill-switch trip;
``arbpipe breaker reset`` (a reset request in the control segment) resets the others: a
drawdown reset re-bases the peak at the current net; a daily-loss trip comes back at the
next check while the day's loss is still past the limit. A limit of 0 disables it.

BREAKER / RESET / KILL_SWITCH entries are journaled, so a restarted strategy comes back
halted if it was (``arbpipe.trading.restore``).
"""
from __future__ import annotations

import collections

from arbpipe.trading.control import Control
from arbpipe.trading.journal import Journal
from arbpipe.trading.portfolio import Portfolio
from arbpipe.trading.risk import Limits, Reject
from shm_layouts.journal import BreakerReason, JournalFlag, JournalKind, RejectReason

NONE = BreakerReason.NONE.name.lower()
DRAWDOWN = BreakerReason.DRAWDOWN.name.lower()
KILL_SWITCH = BreakerReason.KILL_SWITCH.name.lower()


def untripped(since_ns: int) -> dict:
    """The breaker state document when it is not tripped."""
    return {"tripped": False, "reason": NONE, "since_ns": since_ns, "value": 0.0, "limit": 0.0}


def tripped(reason: int, since_ns: int, value: float, limit: float) -> dict:
    """The breaker state document when it tripped for ``reason`` (a BreakerReason)."""
    return {"tripped": True, "reason": BreakerReason(reason).name.lower(), "since_ns": since_ns,
            "value": float(value), "limit": float(limit)}


class Breaker:
    """See the module docstring. ``state`` is the breaker's state document; the kill switch
    is the control segment's, or a local flag when there is none (tests)."""

    def __init__(self, portfolio: Portfolio, limits: Limits, journal: Journal,
                 control: Control | None, kill_switch: bool, counters: collections.Counter,
                 log):
        self.portfolio = portfolio
        self.limits = limits
        self.journal = journal
        self.control = control
        self.counters = counters
        self.log = log
        self.kill_local = kill_switch
        self.state = untripped(0)
        self.resets_seen = control.reset_requests if control is not None else 0
        self.kill_seen = None

    @property
    def is_tripped(self) -> bool:
        return self.state["tripped"]

    def kill_switch(self) -> bool:
        return self.control.kill if self.control is not None else self.kill_local

    def set_kill_switch(self, on: bool) -> None:
        if self.control is not None:
            self.control.set_kill(on)
        else:
            self.kill_local = on

    def trip(self, reason: int, value: float, limit: float, now: int) -> None:
        if self.state["tripped"]:
            return
        self.state = tripped(reason, now, value, limit)
        self.counters["breaker_trips"] += 1
        self.journal.write(JournalKind.BREAKER, ts_ns=now, reason=int(reason), limit=limit,
                           value=value)
        self.log({"event": "breaker", "reason": self.state["reason"], "value": value,
                  "limit": limit})

    def reset(self, now: int, why: str = "manual") -> None:
        if not self.state["tripped"]:
            return
        if self.state["reason"] == DRAWDOWN:
            self.portfolio.peak_net = self.portfolio.net()
        self.state = untripped(now)
        self.journal.write(JournalKind.RESET, ts_ns=now)
        self.log({"event": "breaker_reset", "by": why})

    def loss_check(self, now: int) -> Reject | None:
        """DAILY_LOSS or DRAWDOWN when past its limit (rolls the day, raises the peak)."""
        lim = self.limits
        day_net, dd = self.portfolio.watch_loss(now)
        if lim.daily_loss_limit > 0 and day_net <= -lim.daily_loss_limit:
            return Reject(RejectReason.DAILY_LOSS, -1, -lim.daily_loss_limit, day_net)
        if lim.max_drawdown > 0 and dd >= lim.max_drawdown:
            return Reject(RejectReason.DRAWDOWN, -1, lim.max_drawdown, dd)
        return None

    def check(self, now: int) -> None:
        """Kill switch, reset requests, loss limits (housekeeping and after fills)."""
        kill = self.kill_switch()
        if kill != self.kill_seen:
            if self.kill_seen is not None or kill:
                self.journal.write(JournalKind.KILL_SWITCH, ts_ns=now,
                                   flags=int(JournalFlag.KILL_ON) if kill else 0)
                self.log({"event": "kill_switch", "on": kill})
            self.kill_seen = kill
            if not kill and self.state["reason"] == KILL_SWITCH:
                self.reset(now, "kill-switch off")
        if kill:
            self.trip(BreakerReason.KILL_SWITCH, 1.0, 1.0, now)
        if self.control is not None and self.control.reset_requests != self.resets_seen:
            self.resets_seen = self.control.reset_requests
            if not kill:
                self.reset(now, "arbpipe breaker reset")
        r = self.loss_check(now)
        if r is not None:
            self.trip(BreakerReason.DAILY_LOSS if r.reason == RejectReason.DAILY_LOSS
                      else BreakerReason.DRAWDOWN, r.value, r.limit, now)

    def gate(self, now: int) -> Reject | None:
        """The first checks of every pair: KILL_SWITCH, BREAKER, DAILY_LOSS, DRAWDOWN (the
        last two trip the breaker as well)."""
        if self.kill_switch():
            self.check(now)
            return Reject(RejectReason.KILL_SWITCH)
        if self.state["tripped"]:
            return Reject(RejectReason.BREAKER)
        r = self.loss_check(now)
        if r is not None:
            self.check(now)
            return r
        return None
