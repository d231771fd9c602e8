"""Paper-trading strategy: opportunities in, simulated two-leg trades out, every risk checked.

Nothing here touches a real exchange account: every order is simulated against the live
top of book the strategy keeps itself (``LiveBook``: it peeks the feed rings read-only).

Flow per Opportunity (OPEN or UPDATE; CLOSED ones are only counted)
-------------------------------------------------------------------
1. Pair checks, first failure rejects the pair with a named ``RejectReason``:
   KILL_SWITCH (control segment, read before every pair), BREAKER, DAILY_LOSS, DRAWDOWN,
   IN_FLIGHT (the instrument already has a pair in flight), MAX_OPEN_ORDERS, COOLDOWN (the
   same instrument/buy/sell pair traded less than cooldown_ms ago), LOW_CONFIDENCE,
   NO_QUOTE, STALE_QUOTE (live quote older than max_quote_age_ms), BELOW_THRESHOLD
   (net re-priced from the live book: gross - both taker fees - 2 x slippage_bps).
2. Sizing: qty = min(live ask qty (buy leg), live bid qty (sell leg), the detector's
   exec_qty, max_order_notional / price of each leg), then capped by what the balances
   allow; BALANCE when the balances cut it below MIN_ORDER_NOTIONAL, SIZE_TOO_SMALL when
   anything else did.
3. Order checks, each leg order through every one: MAX_ORDER_NOTIONAL, FAT_FINGER,
   MAX_POSITION_INSTRUMENT, MAX_POSITION_VENUE, MAX_GROSS, BALANCE; then the pair's two
   orders against RATE_LIMIT_SECOND and RATE_LIMIT_MINUTE. Both legs pass or neither is sent.
4. Observe mode: a passing pair is journaled as ORDER|OBSERVE and nothing is simulated.
   Trade mode: both orders are sent (journal ORDER), and fill ``latency_ms`` later.

Boundaries (documented and tested): a value equal to its limit passes, one above it
rejects: notional <= max_order_notional, |worst-case position| <= max_position_notional,
distance from mid <= fat_finger_bps, orders in the rolling window + 2 <= the rate limit,
age <= max_quote_age_ms, net >= min_net_bps, confidence >= min_confidence. Losses are the
exception: the day's net PnL reaching -daily_loss_limit (<=) and a drawdown reaching
max_drawdown (>=) trip the breaker. A money/bps limit of 0 disables its check; the count
limits (max_open_orders, rates) mean what they say (0: none allowed).

Worst case including in-flight: for a (instrument, venue market) leg with position p and
unfilled in-flight buys b and sells s, the worst position after an order of q is
max(|p + b (+ q if buy)|, |p - s (- q if sell)|), valued at the order price (its own leg)
or the live mid (the others; the average price when there is no live quote).

Simulated execution
-------------------
Each order is an immediate-or-cancel at its quoted price: ``latency_ms`` after it was sent
it fills at the quoted price moved ``slippage_bps`` against us, if the live quote is still
at or better than that price; quantity min(order, live top quantity) when
``partial_fills``, else the whole order; otherwise MISSED. Fees: the leg's taker fee on
the fill notional, charged once per fill. One-leg failure policy: when the two legs of a
pair filled different quantities, the difference is flattened on the leg that filled more
by an UNWIND order at the next live quote (market, full size, slippage against us;
retried each tick while that leg has no quote); unwinds skip the risk checks (they only
reduce exposure) and are counted.

PnL (quote currency): per leg, average-cost position; realized on reductions; unrealized
= qty x (live mid - average price); fees separate; net = realized + unrealized - fees.
Daily figures restart at 00:00 UTC (day_net = net - net at the day's first look). Spot
legs move the venue's quote and base balances; perp legs move only quote (fees and
realized PnL) and reserve notional / leverage of it while open.

Circuit breaker: trips on DAILY_LOSS, DRAWDOWN or KILL_SWITCH; while tripped every new
pair is rejected (BREAKER). ``arbpipe kill-switch off`` resets a kill-switch trip;
``arbpipe breaker reset`` resets the others (a drawdown reset re-bases the peak at the
current net; a daily-loss trip comes back at the next check while the day's loss is still
past the limit). BREAKER / RESET entries are journaled, so a restarted strategy comes back
halted if it was.

Journal: every ORDER, FILL, REJECT, UNWIND, MISSED, BREAKER, RESET and KILL_SWITCH
entry is a ``shm_layouts.JOURNAL`` record pushed to the SPSC ring ``journal`` (for the
persister; drop policy, drops counted) and a JSON line in ``<run dir>/journal.jsonl``.
A restarted strategy replays that file through the same code path (``restore``), so its
positions, balances, realized PnL and fees are exactly those before the restart; orders
that were in flight when it died are journaled MISSED and any imbalance is unwound.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import math
import os
import time

import numpy as np
from numba import njit

from arbpipe.transport import ring_kernels as K
from arbpipe.config import CANONICAL_MASK, PERP_ID_BIT, RISK_KEYS, Config, LegTable
from shm_layouts import blocks as B
from shm_layouts import ring as L
from shm_layouts.journal import (JOURNAL, BreakerReason, JournalFlag, JournalKind,
                                 RejectReason, Side)
from shm_layouts.records import OPPORTUNITY, Kind, VenueStatus

_KW = dict(cache=True, nogil=True, boundscheck=False)
MU_WORDS = 8
MIN_ORDER_NOTIONAL = 10.0          # quote currency: smaller orders are not worth sending
STATE_NAME = "strategy.state"
CONTROL_NAME = "strategy.control"
READER_NAME = "strategy"
HOUSEKEEPING_S = 0.1               # control word, marks, breaker, state blob

_QUOTE, _STATUS = int(Kind.QUOTE), int(Kind.STATUS)
_UP = int(VenueStatus.UP)

# book columns
BF_BID, BF_ASK, BF_BQ, BF_AQ = range(4)
BI_RECV, BI_SEEN = range(2)


# ------------------------------------------------------------------ live book -------

@njit(**_KW)
def apply_updates(words, fwords, n, tab, bf, bi):
    """Apply n MarketUpdates (int64 ``words`` and their float64 view ``fwords``) to the
    book: QUOTE stores the top of book of (canonical instrument, leg); a STATUS other than
    UP clears the quotes it is about (a venue: every leg of it). Returns records applied."""
    applied = 0
    ni = bf.shape[0]
    for r in range(n):
        b = r * MU_WORDS
        w0 = words[b]
        iid = w0 & 0xFFFFFFFF
        vid = (w0 >> 32) & 0xFFFF
        kind = (w0 >> 48) & 0xFF
        if vid >= tab.shape[0]:
            continue
        if kind == _QUOTE:
            leg = tab[vid, 1 if (iid & PERP_ID_BIT) else 0]
            i = iid & CANONICAL_MASK
            if leg < 0 or i <= 0 or i >= ni:
                continue
            bid, ask, bq, aq = fwords[b + 1], fwords[b + 2], fwords[b + 3], fwords[b + 4]
            if not (bid > 0.0 and ask > bid and bq > 0.0 and aq > 0.0 and ask < 1e300):
                bf[i, leg, BF_ASK] = 0.0
                continue
            bf[i, leg, BF_BID] = bid
            bf[i, leg, BF_ASK] = ask
            bf[i, leg, BF_BQ] = bq
            bf[i, leg, BF_AQ] = aq
            bi[i, leg, BI_RECV] = words[b + 6]
            bi[i, leg, BI_SEEN] += 1
            applied += 1
        elif kind == _STATUS:
            status = words[b + 1] & 0xFFFFFFFF
            if status == _UP:
                continue
            i = iid & CANONICAL_MASK
            for leg in range(2):
                lg = tab[vid, leg]
                if lg < 0:
                    continue
                if i == 0:
                    for k in range(ni):
                        bf[k, lg, BF_ASK] = 0.0
                elif i < ni:
                    if (iid & PERP_ID_BIT) == 0 and leg == 1 and tab[vid, 0] != lg:
                        continue
                    bf[i, lg, BF_ASK] = 0.0
            applied += 1
    return applied


class LiveBook:
    """Top of book per (canonical instrument, leg), kept by peeking the feed rings.

    The strategy never consumes a feed ring (the detector does); it copies what was
    committed since its last look (``ring_kernels.peek``), skipping ahead when it fell
    more than a ring behind (the newest quotes are what matter)."""

    def __init__(self, legs: LegTable, n_instruments: int):
        self.legs = legs
        nl = len(legs)
        self.bf = np.zeros((n_instruments + 1, nl, 4), np.float64)
        self.bi = np.zeros((n_instruments + 1, nl, 2), np.int64)
        self.rings: list = []
        self.pos: list[int] = []
        self.buf = np.zeros(MU_WORDS * 4096, np.int64)
        self.fbuf = self.buf.view(np.float64)
        self.out = np.zeros(3, np.int64)
        self.skipped = 0
        self.applied = 0

    def follow(self, ring) -> None:
        """Peek ``ring`` from its current head on."""
        self.rings.append(ring)
        self.pos.append(int(K.head_of(ring.w)))

    def refresh(self) -> int:
        """Apply everything committed to the followed rings since the last refresh."""
        total = 0
        for j, ring in enumerate(self.rings):
            while True:
                K.peek(ring.w, int(ring.KIND), self.pos[j], self.buf, 4096, self.out)
                k = int(self.out[1])
                self.skipped += max(0, int(self.out[0]) - self.pos[j])
                self.pos[j] = int(self.out[2])
                if k == 0:
                    break
                total += apply_updates(self.buf, self.fbuf, k, self.legs.tab, self.bf, self.bi)
                if k < 4096:
                    break
        self.applied += total
        return total

    def apply(self, updates) -> int:
        """Apply MarketUpdate records directly (tests, replay)."""
        w = np.ascontiguousarray(updates).reshape(-1).view(np.int64)
        return apply_updates(w, w.view(np.float64), len(w) // MU_WORDS, self.legs.tab,
                             self.bf, self.bi)

    def set_quote(self, i: int, leg: int, bid: float, ask: float, bid_qty: float,
                  ask_qty: float, recv_ns: int) -> None:
        self.bf[i, leg] = (bid, ask, bid_qty, ask_qty)
        self.bi[i, leg, BI_RECV] = recv_ns

    def quote(self, i: int, leg: int):
        """(bid, ask, bid_qty, ask_qty, recv_ns) or None when the leg has no live quote."""
        f = self.bf[i, leg]
        if not f[BF_ASK] > 0.0:
            return None
        return float(f[0]), float(f[1]), float(f[2]), float(f[3]), int(self.bi[i, leg, BI_RECV])

    def mid(self, i: int, leg: int) -> float | None:
        q = self.quote(i, leg)
        return None if q is None else (q[0] + q[1]) / 2.0


# ------------------------------------------------------------------ control ---------

class Control:
    """The ``strategy.control`` segment (``shm_layouts.blocks``): kill switch, resets."""

    def __init__(self, seg):
        self.seg = seg
        self.w = seg.words

    @classmethod
    def create(cls, instance: str, kill_switch: bool = False) -> "Control":
        from arbpipe.transport.segments import HeaderInfo, Segment
        h = HeaderInfo(L.MAGIC, L.LAYOUT_VERSION, B.CONTROL_KIND, 8, 4, 0, 0, 0, 0, 0, 0, 0,
                       L.BLOCK, CONTROL_NAME)
        c = cls(Segment.create(instance, CONTROL_NAME, B.CONTROL_SIZE, h, reclaim_stale=True))
        c.w[B.CTL_KILL // 8] = 1 if kill_switch else 0
        return c

    @classmethod
    def attach(cls, instance: str) -> "Control":
        from arbpipe.transport.segments import Segment
        return cls(Segment.attach(instance, CONTROL_NAME, kind=B.CONTROL_KIND))

    @classmethod
    def open(cls, instance: str, kill_switch: bool = False) -> "Control":
        """Attach to the supervisor's control segment, or create one (a strategy alone)."""
        from arbpipe.transport.segments import SegmentExists, SegmentNotFound
        try:
            return cls.attach(instance)
        except SegmentNotFound:
            try:
                return cls.create(instance, kill_switch)
            except SegmentExists:
                return cls.attach(instance)

    @property
    def kill(self) -> bool:
        return bool(self.w[B.CTL_KILL // 8])

    def set_kill(self, on: bool) -> bool:
        """Flip the kill switch; returns the previous value."""
        prev = bool(self.w[B.CTL_KILL // 8])
        self.w[B.CTL_KILL // 8] = 1 if on else 0
        # stamped after the store: a decision that read its clock later sees the flip
        self.w[B.CTL_KILL_CHANGED_NS // 8] = time.time_ns()
        if prev != on:
            self.w[B.CTL_KILL_FLIPS // 8] += 1
        return prev

    @property
    def kill_changed_ns(self) -> int:
        return int(self.w[B.CTL_KILL_CHANGED_NS // 8])

    @property
    def reset_requests(self) -> int:
        return int(self.w[B.CTL_RESET_REQUESTS // 8])

    def request_reset(self) -> None:
        self.w[B.CTL_RESET_REQUESTS // 8] += 1

    def close(self, unlink: bool = False) -> None:
        from arbpipe.transport import segments
        inst = self.seg.instance
        created = self.seg.created
        self.w = None
        self.seg.close()
        if unlink and created:
            segments.unlink(inst, CONTROL_NAME)


# ------------------------------------------------------------------ journal ---------

class Journal:
    """Appends JournalEntry records to the ``journal`` ring (optional), a JSON-lines file
    (optional) and an in-memory tail (``entries``, bounded) for views and tests."""

    def __init__(self, path: str | None = None, ring=None, keep: int = 10_000,
                 describe=None):
        self.path = path
        self.ring = ring
        self.seq = 0
        self.dropped = 0
        self.entries: collections.deque = collections.deque(maxlen=keep)
        self.describe = describe or (lambda d: d)
        self.file = open(path, "a", buffering=1) if path else None
        self._rec = np.zeros(1, JOURNAL)

    def write(self, kind: int, **fields) -> dict:
        self.seq += 1
        d = {"seq": self.seq, "ts_ns": fields.pop("ts_ns", None) or time.time_ns(),
             "kind": int(kind)}
        d.update(fields)
        rec = self._rec
        rec[0] = 0
        for k, v in d.items():
            rec[0][k] = v
        if self.ring is not None and self.ring.push_words(rec.view(np.int64), 1) != 1:
            self.dropped += 1
        if self.file is not None:
            self.file.write(json.dumps(self.describe(dict(d))) + "\n")
        self.entries.append(d)
        return d

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def read_journal(path: str) -> list[dict]:
    """Entries of a journal file; a torn last line (killed mid-write) is ignored."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return out


# ------------------------------------------------------------------ model ------------

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

    @property
    def sign(self) -> int:
        return 1 if self.side == Side.BUY else -1


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


def _utc_day(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).strftime("%Y-%m-%d")


# ------------------------------------------------------------------ strategy --------

class Strategy:
    """Decisions, simulated fills, positions, PnL, breaker. Single-threaded; time is
    passed in (``now`` ns, CLOCK_REALTIME) so tests drive it exactly."""

    def __init__(self, cfg: Config, book: LiveBook | None = None, journal: Journal | None = None,
                 control: Control | None = None, log=None):
        self.cfg = cfg
        self.legs: LegTable = cfg.legs()
        self.book = book or LiveBook(self.legs, len(cfg.instruments))
        self.journal = journal or Journal()
        self.control = control
        self.log = log or (lambda d: None)
        self.limits = Limits(cfg.strategy)
        self.mode = cfg.strategy.mode
        self._kill_local = cfg.strategy.kill_switch
        self.bases = {k + 1: n.split("/")[0] for k, n in enumerate(cfg.instruments)}
        self.quote_ccy = {k + 1: n.split("/")[1] for k, n in enumerate(cfg.instruments)}
        self.fee_bps = [float(x) for x in self.legs.taker_fee_bps]
        self.is_perp = [bool(x) for x in self.legs.is_perp]
        self.leg_venue = [int(x) for x in self.legs.venue]
        self.leg_names = list(self.legs.names)
        self.venue_names = {int(v): cfg.venue_name(int(v)) for v in self.legs.venue}
        self.positions: dict[tuple[int, int], Position] = {}
        self.balances: dict[int, dict[str, float]] = {}
        for vid in sorted(set(self.leg_venue)):
            spot = any(not self.is_perp[g] for g in range(len(self.legs))
                       if self.leg_venue[g] == vid)
            bal = {}
            for q in sorted(set(self.quote_ccy.values())):
                bal[q] = float(cfg.strategy.starting_balance)
            if spot:
                for a in sorted(set(self.bases.values())):
                    bal[a] = float(cfg.strategy.base_balances.get(a, 0.0))
            self.balances[vid] = bal
        self.orders: dict[int, Order] = {}            # in flight (not done)
        self.pairs: dict[int, list[Order]] = {}        # pair id -> its orders, until settled
        self.unwinds: list[Order] = []                 # waiting for a live quote
        self.next_pair = 1
        self.sent: collections.deque = collections.deque()  # send times (ns), last 60 s
        self.last_trade: dict[tuple[int, int, int], int] = {}
        self.realized = 0.0
        self.fees = 0.0
        self.peak_net = 0.0
        self.day = None
        self.day_start_net = 0.0
        self.breaker = {"tripped": False, "reason": "none", "since_ns": 0, "value": 0.0,
                        "limit": 0.0}
        self.resets_seen = control.reset_requests if control is not None else 0
        self.kill_seen = None
        self.rejects = collections.Counter()
        self.counters = collections.Counter()

    # -- helpers ------------------------------------------------------------------------
    def kill_switch(self) -> bool:
        return self.control.kill if self.control is not None else self._kill_local

    def set_kill_switch(self, on: bool) -> None:
        if self.control is not None:
            self.control.set_kill(on)
        else:
            self._kill_local = on

    def pos(self, i: int, leg: int) -> Position:
        p = self.positions.get((i, leg))
        if p is None:
            p = self.positions[(i, leg)] = Position()
        return p

    def iid(self, i: int, leg: int) -> int:
        return i | (PERP_ID_BIT if self.is_perp[leg] else 0)

    def _mark_price(self, i: int, leg: int) -> float:
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
        return sum(p.qty * (self._mark_price(i, leg) - p.avg)
                   for (i, leg), p in self.positions.items() if p.qty != 0.0)

    def net(self) -> float:
        return self.realized + self.unrealized() - self.fees

    def _inflight(self, i: int, leg: int) -> tuple[float, float]:
        b = s = 0.0
        for o in self.orders.values():
            if o.i == i and o.leg == leg:
                if o.side == Side.BUY:
                    b += o.qty - o.filled
                else:
                    s += o.qty - o.filled
        return b, s

    def _worst(self, i: int, leg: int, side: int = 0, qty: float = 0.0) -> float:
        """Worst-case |position| (base units) of a leg including in-flight and an order."""
        p = self.positions.get((i, leg))
        q = p.qty if p is not None else 0.0
        b, s = self._inflight(i, leg)
        up = q + b + (qty if side == Side.BUY else 0.0)
        down = q - s - (qty if side == Side.SELL else 0.0)
        return max(abs(up), abs(down))

    def _reserved(self, vid: int) -> tuple[float, dict[str, float]]:
        """Quote and base reserved by in-flight orders on venue ``vid``."""
        rq, rb = 0.0, collections.Counter()
        for o in self.orders.values():
            if self.leg_venue[o.leg] != vid:
                continue
            left = o.qty - o.filled
            notional = o.price * left
            fee = notional * self.fee_bps[o.leg] / 1e4
            if self.is_perp[o.leg]:
                rq += notional / self.limits.leverage + fee
            elif o.side == Side.BUY:
                rq += notional * (1 + self.limits.slippage_bps / 1e4) + fee
            else:
                rb[self.bases[o.i]] += left
        return rq, rb

    def _margin_used(self, vid: int) -> float:
        return sum(abs(p.qty) * self._mark_price(i, leg) / self.limits.leverage
                   for (i, leg), p in self.positions.items()
                   if self.is_perp[leg] and self.leg_venue[leg] == vid and p.qty != 0.0)

    def available(self, vid: int, asset: str) -> float:
        rq, rb = self._reserved(vid)
        bal = self.balances[vid].get(asset, 0.0)
        if asset in self.quote_ccy.values():
            return bal - rq - self._margin_used(vid)
        return bal - rb.get(asset, 0.0)

    # -- breaker ------------------------------------------------------------------------
    def trip(self, reason: int, value: float, limit: float, now: int) -> None:
        if self.breaker["tripped"]:
            return
        self.breaker = {"tripped": True, "reason": BreakerReason(reason).name.lower(),
                        "since_ns": now, "value": float(value), "limit": float(limit)}
        self.counters["breaker_trips"] += 1
        self.journal.write(JournalKind.BREAKER, ts_ns=now, reason=int(reason), limit=limit,
                           value=value)
        self.log({"event": "breaker", "reason": self.breaker["reason"], "value": value,
                  "limit": limit})

    def reset_breaker(self, now: int, why: str = "manual") -> None:
        if not self.breaker["tripped"]:
            return
        if self.breaker["reason"] == "drawdown":
            self.peak_net = self.net()
        self.breaker = {"tripped": False, "reason": "none", "since_ns": now, "value": 0.0,
                        "limit": 0.0}
        self.journal.write(JournalKind.RESET, ts_ns=now)
        self.log({"event": "breaker_reset", "by": why})

    def _loss_check(self, now: int) -> Reject | None:
        net = self.net()
        day = _utc_day(now)
        if day != self.day:
            self.day, self.day_start_net = day, net
        self.peak_net = max(self.peak_net, net)
        lim = self.limits
        day_net = net - self.day_start_net
        if lim.daily_loss_limit > 0 and day_net <= -lim.daily_loss_limit:
            return Reject(RejectReason.DAILY_LOSS, -1, -lim.daily_loss_limit, day_net)
        dd = self.peak_net - net
        if lim.max_drawdown > 0 and dd >= lim.max_drawdown:
            return Reject(RejectReason.DRAWDOWN, -1, lim.max_drawdown, dd)
        return None

    def check_breaker(self, now: int) -> None:
        """Kill switch, reset requests, loss limits (housekeeping and after fills)."""
        kill = self.kill_switch()
        if kill != self.kill_seen:
            if self.kill_seen is not None or kill:
                self.journal.write(JournalKind.KILL_SWITCH, ts_ns=now,
                                   flags=int(JournalFlag.KILL_ON) if kill else 0)
                self.log({"event": "kill_switch", "on": kill})
            self.kill_seen = kill
            if not kill and self.breaker["reason"] == "kill_switch":
                self.reset_breaker(now, "kill-switch off")
        if kill:
            self.trip(BreakerReason.KILL_SWITCH, 1.0, 1.0, now)
        if self.control is not None and self.control.reset_requests != self.resets_seen:
            self.resets_seen = self.control.reset_requests
            if not kill:
                self.reset_breaker(now, "arbpipe breaker reset")
        r = self._loss_check(now)
        if r is not None:
            self.trip(BreakerReason.DAILY_LOSS if r.reason == RejectReason.DAILY_LOSS
                      else BreakerReason.DRAWDOWN, r.value, r.limit, now)

    # -- checks -------------------------------------------------------------------------
    def check_order(self, o: Order, now: int, extra: list[Order] = ()) -> Reject | None:
        """Every per-order check on ``o`` (``extra``: orders of the same pair checked
        before it, counted as in flight)."""
        lim = self.limits
        notional = o.price * o.qty
        if lim.max_order_notional > 0 and notional > lim.max_order_notional:
            return Reject(RejectReason.MAX_ORDER_NOTIONAL, o.leg, lim.max_order_notional,
                          notional)
        if lim.fat_finger_bps > 0:
            m = self.book.mid(o.i, o.leg)
            if m is None:
                return Reject(RejectReason.NO_QUOTE, o.leg)
            dist = abs(o.price - m) / m * 1e4
            if dist > lim.fat_finger_bps:
                return Reject(RejectReason.FAT_FINGER, o.leg, lim.fat_finger_bps, dist)
        for x in extra:
            self.orders[-x.order_id] = x      # pair siblings count as in flight
        try:
            if lim.max_position_notional > 0:
                worst = self._worst(o.i, o.leg, o.side, o.qty) * o.price
                if worst > lim.max_position_notional:
                    return Reject(RejectReason.MAX_POSITION_INSTRUMENT, o.leg,
                                  lim.max_position_notional, worst)
            vid = self.leg_venue[o.leg]
            if lim.max_venue_notional > 0 or lim.max_gross_notional > 0:
                keys = {k for k in self.positions} | {(x.i, x.leg) for x in self.orders.values()}
                keys.add((o.i, o.leg))
                venue = gross = 0.0
                for (i, leg) in keys:
                    if (i, leg) == (o.i, o.leg):
                        v = self._worst(i, leg, o.side, o.qty) * o.price
                    else:
                        v = self._worst(i, leg) * self._mark_price(i, leg)
                    gross += v
                    if self.leg_venue[leg] == vid:
                        venue += v
                if lim.max_venue_notional > 0 and venue > lim.max_venue_notional:
                    return Reject(RejectReason.MAX_POSITION_VENUE, o.leg,
                                  lim.max_venue_notional, venue)
                if lim.max_gross_notional > 0 and gross > lim.max_gross_notional:
                    return Reject(RejectReason.MAX_GROSS, o.leg, lim.max_gross_notional, gross)
            fee = notional * self.fee_bps[o.leg] / 1e4
            q = self.quote_ccy[o.i]
            if self.is_perp[o.leg]:
                need, have = notional / lim.leverage + fee, self.available(vid, q)
            elif o.side == Side.BUY:
                need = notional * (1 + lim.slippage_bps / 1e4) + fee
                have = self.available(vid, q)
            else:
                need, have = o.qty, self.available(vid, self.bases[o.i])
            if need > have:
                return Reject(RejectReason.BALANCE, o.leg, have, need)
        finally:
            for x in extra:
                self.orders.pop(-x.order_id, None)
        return None

    def check_rate(self, n_orders: int, now: int) -> Reject | None:
        while self.sent and self.sent[0] <= now - 60_000_000_000:
            self.sent.popleft()
        last_s = sum(1 for t in self.sent if t > now - 1_000_000_000)
        if last_s + n_orders > self.limits.max_orders_per_s:
            return Reject(RejectReason.RATE_LIMIT_SECOND, -1, self.limits.max_orders_per_s,
                          last_s + n_orders)
        if len(self.sent) + n_orders > self.limits.max_orders_per_min:
            return Reject(RejectReason.RATE_LIMIT_MINUTE, -1, self.limits.max_orders_per_min,
                          len(self.sent) + n_orders)
        return None

    # -- decisions ----------------------------------------------------------------------
    def on_opportunity(self, opp, read_ns: int) -> Reject | None:
        """Decide on one Opportunity record (numpy record of ``shm_layouts.OPPORTUNITY``).
        Returns the Reject (also journaled), or None when a pair was sent / observed."""
        self.counters["opportunities_read"] += 1
        if int(opp["state"]) == 3:   # CLOSED
            return None
        i = int(opp["instrument_id"]) & CANONICAL_MASK
        flags = int(opp["flags"])
        bleg = self.legs.leg_of(int(opp["buy_venue"]), i | (PERP_ID_BIT if flags & 1 else 0))
        sleg = self.legs.leg_of(int(opp["sell_venue"]), i | (PERP_ID_BIT if flags & 2 else 0))
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
        lim = self.limits
        if self.kill_switch():
            self.check_breaker(now)
            return Reject(RejectReason.KILL_SWITCH)
        if self.breaker["tripped"]:
            return Reject(RejectReason.BREAKER)
        r = self._loss_check(now)
        if r is not None:
            self.check_breaker(now)
            return r
        if any(o.i == i for o in self.orders.values()):
            return Reject(RejectReason.IN_FLIGHT)
        if len(self.pairs) >= lim.max_open_orders:
            return Reject(RejectReason.MAX_OPEN_ORDERS, -1, lim.max_open_orders, len(self.pairs))
        key = (i, bleg, sleg)
        last = self.last_trade.get(key)
        if last is not None and lim.cooldown_ms > 0 and now - last < lim.cooldown_ms * 1e6:
            return Reject(RejectReason.COOLDOWN, -1, lim.cooldown_ms, (now - last) / 1e6)
        conf = float(opp["confidence"])
        if conf < lim.min_confidence:
            return Reject(RejectReason.LOW_CONFIDENCE, -1, lim.min_confidence, conf)
        qb, qs = self.book.quote(i, bleg), self.book.quote(i, sleg)
        if qb is None or qs is None:
            return Reject(RejectReason.NO_QUOTE, bleg if qb is None else sleg)
        for leg, q in ((bleg, qb), (sleg, qs)):
            age = (now - q[4]) / 1e6
            if lim.max_quote_age_ms > 0 and age > lim.max_quote_age_ms:
                return Reject(RejectReason.STALE_QUOTE, leg, lim.max_quote_age_ms, age)
        ask, bid = qb[1], qs[0]
        mid = (ask + bid) / 2
        net = (bid - ask) / mid * 1e4 - self.fee_bps[bleg] - self.fee_bps[sleg] \
            - 2 * lim.slippage_bps
        if net < lim.min_net_bps:
            return Reject(RejectReason.BELOW_THRESHOLD, -1, lim.min_net_bps, net)
        # sizing
        qty = min(qb[3], qs[2], float(opp["exec_qty"]) or math.inf)
        if lim.max_order_notional > 0:
            qty = min(qty, lim.max_order_notional / max(ask, bid))
        capped = qty
        for leg, side, px in ((bleg, Side.BUY, ask), (sleg, Side.SELL, bid)):
            vid = self.leg_venue[leg]
            fee = self.fee_bps[leg] / 1e4
            if self.is_perp[leg]:
                room = self.available(vid, self.quote_ccy[i]) / (px * (1 / lim.leverage + fee))
            elif side == Side.BUY:
                room = self.available(vid, self.quote_ccy[i]) / (
                    px * (1 + lim.slippage_bps / 1e4 + fee))
            else:
                room = self.available(vid, self.bases[i])
            capped = min(capped, max(room, 0.0))
        if capped * max(ask, bid) < MIN_ORDER_NOTIONAL:
            if qty * max(ask, bid) >= MIN_ORDER_NOTIONAL:
                return Reject(RejectReason.BALANCE, -1, capped, qty)
            return Reject(RejectReason.SIZE_TOO_SMALL, -1, MIN_ORDER_NOTIONAL,
                          qty * max(ask, bid))
        qty = capped * (1 - 1e-9)  # stay clear of a balance boundary by rounding
        pid = self.next_pair
        due = now + int(lim.latency_ms * 1e6)
        buy = Order(2 * pid + 1, pid, ctx["opp_id"], i, bleg, Side.BUY, ask, qty, due, **{
            k: ctx[k] for k in ("trigger_recv_ns", "detect_ns", "read_ns")})
        sell = Order(2 * pid + 2, pid, ctx["opp_id"], i, sleg, Side.SELL, bid, qty, due, **{
            k: ctx[k] for k in ("trigger_recv_ns", "detect_ns", "read_ns")})
        r = self.check_order(buy, now) or self.check_order(sell, now, extra=[buy])
        if r is not None:
            return r
        r = self.check_rate(2, now)
        if r is not None:
            return r
        self.next_pair += 1
        self.last_trade[key] = now
        self.sent.extend((now, now))
        observe = self.mode == "observe"
        for o in (buy, sell):
            self._journal_order(JournalKind.ORDER, o, now,
                                int(JournalFlag.OBSERVE) if observe else 0)
        if observe:
            self.counters["observed"] += 1
            return None
        self.counters["orders"] += 2
        for o in (buy, sell):
            self.orders[o.order_id] = o
        self.pairs[pid] = [buy, sell]
        return None

    def _reject(self, r: Reject, i, leg, ctx, now) -> Reject:
        name = RejectReason(r.reason).name.lower()
        self.rejects[name] += 1
        self.counters["rejects"] += 1
        self.journal.write(JournalKind.REJECT, ts_ns=now, reason=int(r.reason),
                           venue_id=self.leg_venue[leg] if leg >= 0 else 0,
                           instrument_id=self.iid(i, leg) if leg >= 0 else i,
                           limit=float(r.limit), value=float(r.value), **ctx)
        return r

    def _journal_order(self, kind, o: Order, now, flags=0) -> None:
        f = flags | (int(JournalFlag.PERP) if self.is_perp[o.leg] else 0) | (
            int(JournalFlag.UNWIND_LEG) if o.unwind else 0)
        self.journal.write(kind, ts_ns=now, side=int(o.side), flags=f,
                           venue_id=self.leg_venue[o.leg], instrument_id=self.iid(o.i, o.leg),
                           order_id=o.order_id, opp_id=o.opp_id, price=o.price, qty=o.qty,
                           notional=o.price * o.qty, trigger_recv_ns=o.trigger_recv_ns,
                           detect_ns=o.detect_ns, read_ns=o.read_ns)

    # -- execution ----------------------------------------------------------------------
    def apply_fill(self, i: int, leg: int, side: int, qty: float, price: float,
                   fee: float) -> float:
        """Book a fill into position, balances, realized PnL and fees (the one code path
        used live and when restoring from the journal). Returns realized PnL."""
        sign = 1.0 if side == Side.BUY else -1.0
        pnl = self.pos(i, leg).fill(sign * qty, price)
        p = self.positions[(i, leg)]
        p.fees += fee
        self.realized += pnl
        self.fees += fee
        bal = self.balances[self.leg_venue[leg]]
        q = self.quote_ccy[i]
        if self.is_perp[leg]:
            bal[q] += pnl - fee
        else:
            bal[q] -= sign * qty * price + fee
            bal[self.bases[i]] = bal.get(self.bases[i], 0.0) + sign * qty
        return pnl

    def _execute(self, o: Order, now: int) -> None:
        q = self.book.quote(o.i, o.leg)
        slip = self.limits.slippage_bps / 1e4
        qty = 0.0
        px = o.price * (1 + slip) if o.side == Side.BUY else o.price * (1 - slip)
        if o.unwind:
            if q is None:
                return  # retried at the next tick
            px = q[1] * (1 + slip) if o.side == Side.BUY else q[0] * (1 - slip)
            qty = o.qty
        elif q is not None:
            live, top = (q[1], q[3]) if o.side == Side.BUY else (q[0], q[2])
            ok = live <= px if o.side == Side.BUY else live >= px
            if ok:
                qty = min(o.qty, top) if self.cfg.strategy.partial_fills else o.qty
        o.done = True
        self.orders.pop(o.order_id, None)
        if qty <= 0.0:
            self.counters["missed"] += 1
            self._journal_order(JournalKind.MISSED, o, now)
            return
        o.filled = qty
        fee = px * qty * self.fee_bps[o.leg] / 1e4
        pnl = self.apply_fill(o.i, o.leg, o.side, qty, px, fee)
        self.counters["fills"] += 1
        flags = (int(JournalFlag.PARTIAL) if qty < o.qty else 0) | (
            int(JournalFlag.PERP) if self.is_perp[o.leg] else 0) | (
            int(JournalFlag.UNWIND_LEG) if o.unwind else 0)
        self.journal.write(JournalKind.FILL, ts_ns=now, side=int(o.side), flags=flags,
                           venue_id=self.leg_venue[o.leg], instrument_id=self.iid(o.i, o.leg),
                           order_id=o.order_id, opp_id=o.opp_id, price=px, qty=qty,
                           notional=px * qty, fee=fee, realized_pnl=pnl,
                           value=self.limits.slippage_bps, trigger_recv_ns=o.trigger_recv_ns,
                           detect_ns=o.detect_ns, read_ns=o.read_ns)

    def _settle(self, pid: int, now: int) -> None:
        """Both legs done: unwind any difference on the leg that filled more."""
        legs = self.pairs.pop(pid)
        if any(o.unwind for o in legs):
            return
        buy, sell = legs
        diff = buy.filled - sell.filled
        if abs(diff) * max(buy.price, sell.price) < 1e-9:
            return
        src = buy if diff > 0 else sell
        side = Side.SELL if diff > 0 else Side.BUY
        u = Order(src.order_id + 1_000_000_000_000, pid, src.opp_id, src.i, src.leg, side,
                  src.price, abs(diff), now + int(self.limits.latency_ms * 1e6), unwind=True,
                  trigger_recv_ns=src.trigger_recv_ns, detect_ns=src.detect_ns,
                  read_ns=src.read_ns)
        self.counters["unwinds"] += 1
        self._journal_order(JournalKind.UNWIND, u, now)
        self.unwinds.append(u)

    def poll(self, now: int) -> int:
        """Fill every order due by ``now``; settle finished pairs; run unwinds. Returns
        the number of orders executed."""
        n = 0
        for o in sorted((o for o in self.orders.values() if o.due_ns <= now),
                        key=lambda o: o.order_id):
            self._execute(o, now)
            n += 1
        for pid, legs in list(self.pairs.items()):
            if all(o.done for o in legs):
                self._settle(pid, now)
        for u in list(self.unwinds):
            if u.due_ns <= now:
                self._execute(u, now)
                if u.done:
                    self.unwinds.remove(u)
                    n += 1
        if n:
            self.check_breaker(now)
        return n

    def next_due(self) -> int | None:
        due = [o.due_ns for o in self.orders.values()] + [u.due_ns for u in self.unwinds]
        return min(due) if due else None

    # -- restore ------------------------------------------------------------------------
    def restore(self, entries: list[dict], now: int) -> dict:
        """Rebuild positions, balances, PnL, breaker and ids from journal entries (in
        order), through the same ``apply_fill`` the live path uses. Orders that never got
        a FILL or MISSED are journaled MISSED now and any pair imbalance is unwound."""
        open_orders: dict[int, dict] = {}
        fills: collections.Counter = collections.Counter()
        last_seq = 0
        for e in entries:
            last_seq = max(last_seq, int(e["seq"]))
            k = int(e["kind"])
            if k in (JournalKind.ORDER, JournalKind.UNWIND) and not (
                    int(e.get("flags", 0)) & JournalFlag.OBSERVE):
                open_orders[int(e["order_id"])] = e
                self.next_pair = max(self.next_pair,
                                     (int(e["order_id"]) % 1_000_000_000_000 - 1) // 2 + 1)
                if k == JournalKind.ORDER:
                    self.sent.append(int(e["ts_ns"]))
            elif k == JournalKind.FILL:
                iid, vid = int(e["instrument_id"]), int(e["venue_id"])
                leg = self.legs.leg_of(vid, iid)
                self.apply_fill(iid & CANONICAL_MASK, leg, int(e["side"]), float(e["qty"]),
                                float(e["price"]), float(e["fee"]))
                fills[int(e["order_id"])] += float(e["qty"])
                open_orders.pop(int(e["order_id"]), None)
                self.counters["fills"] += 1
            elif k == JournalKind.MISSED:
                open_orders.pop(int(e["order_id"]), None)
            elif k == JournalKind.BREAKER:
                self.breaker = {"tripped": True,
                                "reason": BreakerReason(int(e["reason"])).name.lower(),
                                "since_ns": int(e["ts_ns"]), "value": float(e["value"]),
                                "limit": float(e["limit"])}
            elif k == JournalKind.RESET:
                self.breaker = {"tripped": False, "reason": "none", "since_ns": int(e["ts_ns"]),
                                "value": 0.0, "limit": 0.0}
        self.journal.seq = max(self.journal.seq, last_seq)
        self.next_pair += 1
        # orders in flight when the previous process died never filled
        pairs: dict[int, list] = collections.defaultdict(list)
        for oid, e in sorted(open_orders.items()):
            if int(e["kind"]) == JournalKind.UNWIND:  # an unwind never lost: send it again
                iid, vid = int(e["instrument_id"]), int(e["venue_id"])
                self.unwinds.append(Order(oid, (oid % 1_000_000_000_000 - 1) // 2,
                                          int(e["opp_id"]), iid & CANONICAL_MASK,
                                          self.legs.leg_of(vid, iid), int(e["side"]),
                                          float(e["price"]), float(e["qty"]), now, unwind=True))
                continue
            self.journal.write(JournalKind.MISSED, ts_ns=now, side=int(e["side"]),
                               flags=int(e.get("flags", 0)) | int(JournalFlag.RESTORED),
                               venue_id=int(e["venue_id"]), instrument_id=int(e["instrument_id"]),
                               order_id=oid, opp_id=int(e["opp_id"]), price=float(e["price"]),
                               qty=float(e["qty"]))
            if int(e["kind"]) == JournalKind.ORDER:
                pairs[(oid - 1) // 2].append(oid)
        for e in entries:  # pairs with one leg filled and the other lost: unwind
            if int(e["kind"]) != JournalKind.ORDER or int(e.get("flags", 0)) & \
                    JournalFlag.OBSERVE:
                continue
            oid = int(e["order_id"])
            pid = (oid - 1) // 2
            if pid not in pairs or oid in pairs[pid]:
                continue
            filled = fills.get(oid, 0.0)
            if filled > 0:
                iid, vid = int(e["instrument_id"]), int(e["venue_id"])
                leg = self.legs.leg_of(vid, iid)
                side = Side.SELL if int(e["side"]) == Side.BUY else Side.BUY
                u = Order(oid + 1_000_000_000_000, pid, int(e["opp_id"]), iid & CANONICAL_MASK,
                          leg, side, float(e["price"]), filled, now, unwind=True)
                self.counters["unwinds"] += 1
                self._journal_order(JournalKind.UNWIND, u, now)
                self.unwinds.append(u)
        self.peak_net = max(self.peak_net, self.realized - self.fees)
        return {"entries": len(entries), "fills": int(sum(1 for _ in fills)),
                "lost_in_flight": sum(len(v) for v in pairs.values()),
                "breaker": self.breaker["reason"]}

    # -- views --------------------------------------------------------------------------
    def state(self, now: int, extra: dict | None = None) -> dict:
        unreal = 0.0
        positions = []
        for (i, leg), p in sorted(self.positions.items()):
            if p.qty == 0.0 and p.realized == 0.0 and p.fees == 0.0:
                continue
            mark = self._mark_price(i, leg)
            u = p.qty * (mark - p.avg) if p.qty else 0.0
            unreal += u
            positions.append({"instrument": self.cfg.instruments[i - 1],
                              "venue": self.venue_names[self.leg_venue[leg]],
                              "market": "perp" if self.is_perp[leg] else "spot",
                              "qty": p.qty, "avg_price": p.avg, "mark": mark, "unrealized": u,
                              "realized": p.realized, "fees": p.fees})
        net = self.realized + unreal - self.fees
        if self.day is None:
            self.day, self.day_start_net = _utc_day(now), net
        counters = {k: int(self.counters.get(k, 0)) for k in
                    ("opportunities_read", "orders", "fills", "rejects", "unwinds", "missed",
                     "observed", "breaker_trips")}
        counters["journal_dropped"] = self.journal.dropped
        counters["in_flight"] = len(self.orders) + len(self.unwinds)
        doc = {"mode": self.mode, "kill_switch": self.kill_switch(),
               "breaker": dict(self.breaker), "counters": counters,
               "rejects": dict(self.rejects), "positions": positions,
               "pnl": {"realized": self.realized, "unrealized": unreal, "fees": self.fees,
                       "net": net, "day": self.day, "day_net": net - self.day_start_net,
                       "peak_net": max(self.peak_net, net),
                       "drawdown": max(self.peak_net, net) - net},
               "balances": {self.venue_names[v]: dict(b) for v, b in self.balances.items()},
               "limits": self.limits.as_dict(), "journal_seq": self.journal.seq}
        if extra:
            doc.update(extra)
        return doc


def describe_entry(cfg: Config):
    """A journal JSON-line formatter adding names (kind, side, reason, venue, instrument)."""
    def f(d: dict) -> dict:
        k = int(d["kind"])
        d["kind_name"] = JournalKind(k).name.lower()
        if "side" in d:
            d["side_name"] = Side(int(d["side"])).name.lower()
        if k == JournalKind.REJECT:
            d["reason_name"] = RejectReason(int(d["reason"])).name.lower()
        elif k == JournalKind.BREAKER:
            d["reason_name"] = BreakerReason(int(d["reason"])).name.lower()
        if d.get("venue_id"):
            d["venue"] = cfg.venue_name(int(d["venue_id"]))
        if d.get("instrument_id"):
            d["instrument"] = cfg.instrument_name(int(d["instrument_id"]))
        return d
    return f


def read_state(instance: str | None = None) -> dict | None:
    """The running (or last) strategy's state document, or None."""
    from arbpipe.transport.stateblob import read_blob
    return read_blob(instance, STATE_NAME)


def status_line(d: dict | None) -> str:
    """One line for ``arbpipe status``."""
    if d is None:
        return "  strategy: no state published"
    c, p, b = d["counters"], d["pnl"], d["breaker"]
    return (f"  strategy: {d['mode']}, kill switch {'ON' if d['kill_switch'] else 'off'}, "
            f"breaker {'TRIPPED (' + b['reason'] + ')' if b['tripped'] else 'ok'}, "
            f"orders {c['orders']:,} fills {c['fills']:,} rejects {c['rejects']:,}, "
            f"net PnL {p['net']:,.2f} (fees {p['fees']:,.2f})")


def render_state(d: dict | None) -> str:
    if d is None:
        return "strategy: not running"
    c, p, b = d["counters"], d["pnl"], d["breaker"]
    lines = [f"strategy pid {d.get('_pid')} ({'alive' if d.get('_alive') else 'dead'}) "
             f"mode {d['mode']}  kill switch {'ON' if d['kill_switch'] else 'off'}  "
             f"breaker {'TRIPPED (' + b['reason'] + ')' if b['tripped'] else 'ok'}",
             f"  opportunities {c['opportunities_read']:,}  orders {c['orders']:,}  fills "
             f"{c['fills']:,}  rejects {c['rejects']:,}  unwinds {c['unwinds']:,}  missed "
             f"{c['missed']:,}  lost {c.get('lost', 0):,}",
             f"  pnl net {p['net']:,.2f}  realized {p['realized']:,.2f}  unrealized "
             f"{p['unrealized']:,.2f}  fees {p['fees']:,.2f}  day {p['day_net']:,.2f}  "
             f"drawdown {p['drawdown']:,.2f}"]
    if d["rejects"]:
        lines.append("  rejects: " + ", ".join(f"{k} {v:,}" for k, v in
                                               sorted(d["rejects"].items(), key=lambda kv: -kv[1])))
    for pos in d["positions"]:
        if pos["qty"]:
            lines.append(f"  {pos['instrument']:<10} {pos['venue']:<13} {pos['market']:<4} qty "
                         f"{pos['qty']:+.6g} @ {pos['avg_price']:.6g} mark {pos['mark']:.6g} "
                         f"upnl {pos['unrealized']:+.2f}")
    return "\n".join(lines)


# ------------------------------------------------------------------ service ---------

class StrategyService:
    """The strategy process's body: ``opportunities`` (broadcast reader "strategy") in,
    feed rings peeked for the live book, ``journal`` ring + file out, state blob
    ``strategy.state``, histograms ``hist.publish_to_strategy`` and ``hist.total``.

    Idle: blocks on the opportunities doorbell until the next fill is due or the next
    housekeeping tick (HOUSEKEEPING_S), so an idle strategy costs ~10 wake-ups/s."""

    def __init__(self, cfg: Config, instance: str | None = None, log=print,
                 journal_path: str | None = None, risk_source=None):
        from arbpipe.transport.segments import default_instance
        self.cfg = cfg
        self.instance = instance or default_instance()
        self.log = log
        self.journal_path = journal_path
        self.risk_source = risk_source
        self.opps = None
        self.jring = None
        self.control = None
        self.blob = None
        self.hists = []
        self.feeds = []
        self.strategy = None
        self._mirrored = None
        self.buf = np.zeros(256, OPPORTUNITY)

    def _jlog(self, d: dict) -> None:
        self.log(json.dumps({"ts": time.time(), **d}))

    def open(self, stop=lambda: False, retry_s: float = 0.1) -> bool:
        """Attach (waiting for) the opportunities ring and the feed rings; open the
        journal ring when it exists; create state blob, control (if missing), histograms."""
        from arbpipe.transport.histogram import Histogram
        from arbpipe.transport.rings import BroadcastRing, SpscRing
        from arbpipe.transport.segments import SegmentNotFound
        from arbpipe.transport.stateblob import StateBlob
        while self.opps is None:
            try:
                self.opps = BroadcastRing.attach("opportunities", instance=self.instance)
            except SegmentNotFound:
                if stop():
                    return False
                time.sleep(retry_s)
        self.opps.join(READER_NAME)
        try:
            self.jring = SpscRing.attach("journal", instance=self.instance)
        except SegmentNotFound:
            self._jlog({"event": "no_journal_ring",
                        "note": "journal entries go to the file only"})
        legs = self.cfg.legs()
        book = LiveBook(legs, len(self.cfg.instruments))
        for v in self.cfg.enabled_venues():
            try:
                r = SpscRing.attach(f"feed.{v}", instance=self.instance)
            except SegmentNotFound:
                continue
            self.feeds.append(r)
            book.follow(r)
        self.control = Control.open(self.instance, self.cfg.strategy.kill_switch)
        jpath = self.journal_path
        if jpath is None:
            from arbpipe.paths import run_dir
            jpath = os.path.join(run_dir(self.instance), "journal.jsonl")
        previous = read_journal(jpath)
        journal = Journal(jpath, self.jring, describe=describe_entry(self.cfg))
        self.strategy = Strategy(self.cfg, book, journal, self.control, log=self._jlog)
        now = time.time_ns()
        if previous:
            info = self.strategy.restore(previous, now)
            self._jlog({"event": "restored", **info})
        else:
            # a new tree: come back halted if the last run's journal ended halted
            # (its file was kept as journal-<time>.jsonl by the supervisor) ...
            self._breaker_from_last_run(os.path.dirname(jpath), now)
        if not previous and self.risk_source is not None:
            # ... or if the breaker mirrored in Redis says so
            b = self.risk_source.load_breaker()
            if b and b.get("tripped") and str(b.get("reason", "")).upper() in \
                    BreakerReason.__members__:
                reason = BreakerReason[str(b["reason"]).upper()]
                if reason == BreakerReason.KILL_SWITCH:
                    self.control.set_kill(True)   # check_breaker below trips it
                else:
                    self.strategy.trip(reason, float(b.get("value", 0.0)),
                                       float(b.get("limit", 0.0)), now)
                self._jlog({"event": "breaker_restored_from_redis",
                            "reason": reason.name.lower()})
        self.blob = StateBlob.create(self.instance, STATE_NAME)
        self.h_pub = Histogram.create(self.instance, "publish_to_strategy")
        self.h_total = Histogram.create(self.instance, "total")
        self.hists = [self.h_pub, self.h_total]
        from arbpipe.transport.histogram import empty, record
        record(empty(), 1)  # compile (or load) the kernel before "ready", not on the first record
        book.refresh()
        self.strategy.check_breaker(now)
        self.publish(now)
        return True

    def _breaker_from_last_run(self, run_dir: str, now: int) -> None:
        import glob
        olds = sorted(glob.glob(os.path.join(run_dir, "journal-*.jsonl")))
        if not olds:
            return
        last = None
        for e in read_journal(olds[-1]):
            if int(e["kind"]) in (JournalKind.BREAKER, JournalKind.RESET):
                last = e
        if last is not None and int(last["kind"]) == JournalKind.BREAKER:
            reason = BreakerReason(int(last["reason"]))
            if reason == BreakerReason.KILL_SWITCH:
                self.control.set_kill(True)
            else:
                self.strategy.trip(reason, float(last["value"]), float(last["limit"]), now)
            self._jlog({"event": "breaker_restored_from_last_run",
                        "reason": reason.name.lower(), "journal": os.path.basename(olds[-1])})

    def publish(self, now: int) -> None:
        rs = self.opps.reader_stats()
        s = self.strategy
        extra = {"ring": {"received": rs["received"], "lost": rs["lost"], "laps": rs["laps"]},
                 "book": {"applied": s.book.applied, "skipped": s.book.skipped}}
        doc = s.state(now, extra)
        doc["counters"]["lost"] = rs["lost"]
        self.blob.publish(doc)

    def step(self) -> int:
        """One pass: read opportunities, decide, fill what is due. Returns records read."""
        from arbpipe.transport.histogram import record
        s = self.strategy
        n = self.opps.pop_batch(self.buf)
        now = time.time_ns()
        if n:
            s.book.refresh()
            hp, ht = self.h_pub.h, self.h_total.h
            for k in range(n):
                rec = self.buf[k]
                if int(rec["state"]) != 3:
                    record(hp, now - int(rec["detect_ns"]))
                    record(ht, now - int(rec["trigger_recv_ns"]))
                s.on_opportunity(rec, now)
        due = s.next_due()
        if due is not None and due <= now:
            s.book.refresh()
            s.poll(now)
        return n

    def housekeeping(self, now: int) -> None:
        s = self.strategy
        s.book.refresh()
        if self.risk_source is not None:
            try:
                changes = self.risk_source.take()
            except Exception as e:  # never let the cold path stop trading decisions
                changes = None
                self._jlog({"event": "risk_source_error", "error": str(e)})
            if changes:
                for k, old, new in s.limits.apply(changes):
                    self._jlog({"event": "risk_change", "key": k, "old": old, "new": new})
        s.check_breaker(now)
        s.poll(now)
        if self.risk_source is not None and s.breaker != self._mirrored:
            self._mirrored = dict(s.breaker)
            try:
                self.risk_source.mirror_breaker(dict(s.breaker))
            except Exception as e:  # the cold path never stops the strategy
                self._jlog({"event": "breaker_mirror_failed", "error": str(e)})
        self.publish(now)

    def run(self, stop=lambda: False) -> None:
        s = self.strategy
        last = 0.0
        while not stop():
            n = self.step()
            t = time.monotonic()
            if t - last >= HOUSEKEEPING_S:
                self.housekeeping(time.time_ns())
                last = t
            if n == 0:
                due = s.next_due()
                wait = HOUSEKEEPING_S - (time.monotonic() - last)
                if due is not None:
                    wait = min(wait, (due - time.time_ns()) / 1e9)
                if wait > 0:
                    self.opps.wait(wait)
        self.housekeeping(time.time_ns())

    def close(self) -> None:
        if self.strategy is not None:
            self.strategy.journal.close()
        for h in self.hists:
            h.close()
        self.hists = []
        if self.blob is not None:
            self.blob.close()
            self.blob = None
        if self.opps is not None:
            self.opps.leave()
            self.opps.close()
            self.opps = None
        for r in self.feeds + ([self.jring] if self.jring is not None else []):
            r.close()
        self.feeds = []
        if self.control is not None:
            self.control.close(unlink=True)
            self.control = None
