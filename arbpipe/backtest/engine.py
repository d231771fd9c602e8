"""One backtest run: a checked recording (``arbpipe.backtest.load``) through the live tree's
detector and paper strategy, on a simulated clock that is the recording's receive time.

Order of events (what the live tree does, with recording time for wall-clock time):

* records go to the detector (``Detector.process``, collect mode, opp ids from 1) in
  chunks, in replay order (recv_ts, stable);
* each Opportunity it returns is decided at its trigger time t = ``trigger_recv_ns``
  (``detect_ns`` is set to t: detection and the ring hop take no simulated time), after
  the strategy's book (``LiveBook``, fed straight from the records, no rings) has applied
  every record with recv_ts <= t and every fill due by t has executed: the strategy sees
  the book as it was at t;
* fills (``latency_ms``), unwinds and whatever else the strategy schedules are executed
  at their due time (``Strategy.next_due``) against the book as it was then;
* housekeeping (the breaker, polling) runs every ``HOUSEKEEPING_S`` of recording time as
  in ``StrategyService``, and samples the equity (``Strategy.net()``) every ``EQUITY_S``
  and at the end; stretches with no records and nothing due are skipped; something still
  due after a poll at its time (an unwind waiting for a quote) waits for the next tick;
* after the last record, the clock runs on until nothing is due (at most ``DRAIN_S``).

Nothing reads the wall clock except ``elapsed_s`` (throughput): the same recording and
config give the same journal, equity and counters.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from arbpipe.backtest.load import Loaded
from arbpipe.config import Config
from arbpipe.detect.detector import Detector
from arbpipe.trading.book import LiveBook
from arbpipe.trading.journal import Journal
from arbpipe.trading.strategy import Strategy
from shm_layouts import MARKET_UPDATE
from shm_layouts.journal import JournalFlag, JournalKind, pair_of
from shm_layouts.records import OppState

from arbpipe.trading.service import HOUSEKEEPING_S

CHUNK = 65536                     # records per detector call
DRAIN_S = 60.0                    # the clock runs on at most this long after the last record
EQUITY_S = 1.0                    # equity sampled at the first tick of each second
_MU_WORDS = MARKET_UPDATE.itemsize // 8
_ORDER = int(JournalKind.ORDER)
_OBSERVE = int(JournalFlag.OBSERVE)
_CLOSED = int(OppState.CLOSED)


@dataclasses.dataclass
class Run:
    """What one run produced (``arbpipe.backtest.report`` turns it into metrics)."""
    cfg: Config
    updates: int
    start_ns: int
    end_ns: int
    opportunities: dict           # state name -> records
    entries: list                 # every journal entry (dicts, JOURNAL field names)
    detected: dict                # pair id -> detected edge (quote ccy) at the ordered size
    eq_t: np.ndarray              # equity samples: recording time ns ...
    eq_net: np.ndarray            # ... and the strategy's net PnL then
    state: dict                   # Strategy.state at the end
    detector: dict                # Detector.stats() at the end
    book_applied: int
    pending_at_end: int           # orders / unwinds still due when the clock stopped
    elapsed_s: float              # wall clock of the run (throughput only) ...
    detect_s: float = 0.0         # ... of which in the detector kernel
    cpu_s: float = 0.0            # CPU time of the run (the process's, all threads)


def live_book(cfg: Config) -> LiveBook:
    """The strategy's book as the live service builds it (the L2 depth of the config where
    ``LiveBook`` keeps levels), fed here from the records instead of the rings."""
    return LiveBook(cfg.legs(), len(cfg.instruments), cfg.book_depth())


class Engine:
    """The simulated-clock loop of one run; ``run()`` returns a ``Run``."""

    def __init__(self, cfg: Config, data: Loaded, progress=None):
        self.cfg = cfg
        self.data = data
        self.recv = data.recv
        self.words = data.words
        self.progress = progress or (lambda n: None)
        self.det = Detector(cfg)
        self.book = live_book(cfg)
        self.journal = Journal(None, keep=None)
        self.s = Strategy(cfg, book=self.book, journal=self.journal)
        self.pos = 0                  # records applied to the book
        self.hk_ns = int(HOUSEKEEPING_S * 1e9)
        self.next_hk = None
        self.last_poll = None         # the time polled last
        self.stuck = None             # ... when something due then could not execute
        self.hk_pos = -1              # self.pos at the last tick
        self.eq_ns = int(EQUITY_S * 1e9)
        self.next_eq = 0              # the next tick at or after this samples the equity
        self.eq_t: list[int] = []
        self.eq_net: list[float] = []
        self.detected: dict[int, float] = {}
        self.book_applied = 0
        self.hooks = [f for f in (getattr(self.s, n, None) for n in ("housekeeping", "tick"))
                      if callable(f)]

    # -- the clock ----------------------------------------------------------------------
    def _apply(self, upto: int) -> None:
        if upto > self.pos:
            w = self.words[self.pos * _MU_WORDS:upto * _MU_WORDS]
            self.book_applied += self.book.apply(w.view(MARKET_UPDATE))
            self.pos = upto

    def _due(self) -> int | None:
        due = self.s.next_due()
        if due is not None and self.stuck is not None and due <= self.stuck:
            return None               # polled at that time and still due: waits for a tick
        return due

    def _poll(self, t: int) -> None:
        self.s.poll(t)
        self.last_poll = t
        due = self.s.next_due()
        self.stuck = t if due is not None and due <= t else None

    def _tick(self, t: int, last: bool = False) -> None:
        """What ``StrategyService.housekeeping`` asks of the strategy (breaker, poll; a
        strategy with its own ``housekeeping(now)`` / ``tick(now)`` has that called too),
        then an equity sample."""
        s = self.s
        s.check_breaker(t)
        for hook in self.hooks:
            hook(t)
        self._poll(t)
        if t >= self.next_eq or last:
            self.eq_t.append(t)
            self.eq_net.append(float(s.net()))
            self.next_eq = t + self.eq_ns
        nxt = t + self.hk_ns
        if self.pos == self.hk_pos and s.next_due() is None and self.pos < len(self.recv):
            # nothing moved since the last tick and nothing is due: skip to the tick
            # before the next record
            gap = int(self.recv[self.pos]) - t
            nxt = t + max(1, gap // self.hk_ns) * self.hk_ns
        self.hk_pos = self.pos
        self.next_hk = nxt

    def advance(self, target: int, t: int) -> None:
        """Bring the book to records [0, target) and the clock to ``t`` (>= their recv
        times): every fill and tick due by then runs at its own time, in order."""
        recv = self.recv
        while True:
            due = self._due()
            hk = self.next_hk
            ev = hk if due is None or hk <= due else due
            if ev > t:
                break
            j = int(np.searchsorted(recv, ev, "right"))
            self._apply(min(max(j, self.pos), target))
            if ev == hk:
                self._tick(ev)
            else:
                self._poll(ev)
        self._apply(target)

    # -- the run --------------------------------------------------------------------------
    def run(self) -> Run:
        t0, c0 = time.perf_counter(), time.process_time()
        n = len(self.recv)
        start = int(self.recv[0]) if n else 0
        self.next_hk = start
        s, journal, recv = self.s, self.journal, self.recv
        states = {int(x): 0 for x in OppState}
        detect_s = 0.0
        for a in range(0, n, CHUNK):
            b = min(n, a + CHUNK)
            td = time.perf_counter()
            opps = self.det.process(self.words[a * _MU_WORDS:b * _MU_WORDS])
            detect_s += time.perf_counter() - td
            if len(opps):
                trig = opps["trigger_recv_ns"]
                opps["detect_ns"] = trig
                upto = np.searchsorted(recv, trig, "right")
                st = opps["state"]
                for k in range(len(opps)):
                    state = int(st[k])
                    states[state] = states.get(state, 0) + 1
                    t = int(trig[k])
                    if state != _CLOSED:
                        self.advance(int(upto[k]), t)
                    seq = journal.seq
                    s.on_opportunity(opps[k], t)
                    if journal.seq != seq:
                        self._note_orders(opps[k], journal.seq - seq)
            self.progress(b - a)
        end = int(recv[-1]) if n else 0
        self.advance(n, end)
        stop = end + int(DRAIN_S * 1e9)
        while True:       # let what is in flight finish, then a last tick
            due = self._due()
            if due is None or due > stop:
                break
            self.advance(n, due)
        t_end = max(end, self.last_poll or end)
        if self.next_hk is not None and self.next_hk <= t_end:
            self.advance(n, t_end)
        self._tick(t_end, last=True)
        pending = len(s.exchange.orders) + len(s.exchange.unwinds)
        return Run(cfg=self.cfg, updates=n, start_ns=start, end_ns=t_end,
                   opportunities={OppState(k).name.lower(): v for k, v in sorted(states.items())},
                   entries=list(journal.entries), detected=dict(self.detected),
                   eq_t=np.asarray(self.eq_t, np.int64), eq_net=np.asarray(self.eq_net),
                   state=s.state(t_end), detector=self.det.stats(),
                   book_applied=self.book_applied, pending_at_end=pending,
                   elapsed_s=time.perf_counter() - t0, detect_s=detect_s,
                   cpu_s=time.process_time() - c0)

    def _note_orders(self, opp, n_new: int) -> None:
        """The detected edge of the pair just ordered: the opportunity's net (bps, fees
        and allowances out) on the ordered notional."""
        entries = self.journal.entries
        for e in (entries[-k] for k in range(n_new, 0, -1)):
            if int(e["kind"]) == _ORDER and not int(e.get("flags", 0)) & _OBSERVE \
                    and int(e.get("side", 0)) == 1:
                self.detected[pair_of(int(e["order_id"]))] = \
                    float(opp["net_bps"]) / 1e4 * float(e["notional"])


def warm_up(cfg: Config, data: Loaded, n: int = 4096) -> float:
    """Compile (or load from numba's cache) the detector and book kernels on the first
    records, outside the timed runs; returns the seconds it took."""
    t0 = time.perf_counter()
    w = data.words[:min(n, len(data)) * _MU_WORDS]
    Detector(cfg).process(w)
    live_book(cfg).apply(w.view(MARKET_UPDATE))
    return time.perf_counter() - t0


def run(cfg: Config, data: Loaded, progress=None) -> Run:
    """One backtest of ``data`` under ``cfg`` (see the module docstring)."""
    return Engine(cfg, data, progress).run()
