"""L2 books of bybit-spot, bybit-linear and okx (spot and SWAP) end to end: the venue
simulator serves the depth channels with their sync protocol (docs/venues.md, "Bybit" and
"OKX", "L2 book") and the book faults of ``arbpipe.sim.config.FaultConfig``; the feed
runtime (in this process, over real websockets, into a real SPSC ring) or ``arbpipe feed
--depth N --print`` (a subprocess) keeps the books.

Exactness is checked against the simulator's own model: the simulator's books are
``InstrumentModel.book(quote, levels)`` of its deterministic quote sequence, so every top N
the feed shows (its own book after each applied message, the book a consumer rebuilds from
the LEVEL records of the ring, each ``--print`` book line) must be the model's top N of one
quote of that instrument, in quote order. Each fault must be counted and resynced by
resubscribing. Nothing asserts a duration; conditions are waited for with deadlines.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from arbpipe.feeds.feed import Feed
from arbpipe.feeds.options import FeedOptions
from arbpipe.feeds.runtime import build_adapter
from arbpipe.feeds.sinks import RingSink
from arbpipe.sim.config import make_config
from arbpipe.sim.market import Market
from arbpipe.sim.server import SimulatorThread
from arbpipe.transport.rings import SpscRing
from shm_layouts import MARKET_UPDATE, Kind
from shm_layouts.records import (MARKET_UPDATE_LEVEL, MARKET_UPDATE_STATUS, BookFault, Flag,
                                 StatusReason, status_reason_code)

DEADLINE = 60.0
N = 5                                   # top N levels kept per side
_SNAP, _ASK, _END = int(Flag.SNAPSHOT), int(Flag.BOOK_ASK), int(Flag.BOOK_END)


class RecordingSink(RingSink):
    """The feed's own ``RingSink``, also keeping the top N after each message it applied."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.tops: list[tuple[int, list, list]] = []

    def book(self, instrument_id, bids, asks, snapshot, exchange_ts_ns, update_id=0):
        fb = super().book(instrument_id, bids, asks, snapshot, exchange_ts_ns, update_id)
        if fb is not None:
            b, a = fb.top()
            self.tops.append((instrument_id, b.tolist(), a.tolist()))
        return fb


class Consumer:
    """A reader of the ring that keeps the top N of each book from its LEVEL records, as
    the detector does (SNAPSHOT clears, qty 0 removes, truncate to N; a BOOK_RESYNC status
    drops the book until its next snapshot); ``tops`` after each BOOK_END."""

    def __init__(self, ring):
        self.ring = ring
        self.out = np.zeros(ring.capacity * 8, np.int64)
        self.books: dict[int, tuple[dict, dict]] = {}
        self.tops: list[tuple[int, list, list]] = []
        self.records: list[np.ndarray] = []

    def drain(self) -> None:
        while True:
            n = self.ring.pop_words(self.out)
            if not n:
                return
            recs = self.out[:n * 8].copy().view(MARKET_UPDATE)
            self.records.append(recs)
            lv = recs.view(MARKET_UPDATE_LEVEL)
            st = recs.view(MARKET_UPDATE_STATUS)
            for k in range(len(recs)):
                kind = int(recs["kind"][k])
                iid = int(recs["instrument_id"][k])
                if kind == Kind.STATUS:
                    if iid and status_reason_code(int(st["status_reason"][k])) == \
                            StatusReason.BOOK_RESYNC:
                        self.books.pop(iid, None)
                    continue
                if kind != Kind.LEVEL:
                    continue
                flags = int(lv["flags"][k])
                if flags & _SNAP:
                    self.books[iid] = ({}, {})
                book = self.books[iid]           # a diff of a book we do not hold: KeyError
                side = book[1] if flags & _ASK else book[0]
                px, qty = float(lv["price"][k]), float(lv["qty"][k])
                if qty == 0.0:
                    side.pop(px, None)
                else:
                    side[px] = qty
                for s, rev in ((book[0], True), (book[1], False)):
                    for p in sorted(s, reverse=rev)[N:]:
                        del s[p]
                if flags & _END:
                    self.tops.append((iid, [[p, book[0][p]] for p in sorted(book[0], reverse=True)],
                                      [[p, book[1][p]] for p in sorted(book[1])]))

    def all(self) -> np.ndarray:
        return np.concatenate(self.records) if self.records else np.zeros(0, MARKET_UPDATE)


def model_checker(cfg, venue: str, natives: dict[int, str], upto: int):
    """check(tops): every (iid, bids, asks) is the model's top N of a quote of that
    instrument (the initial one or a published one before ``upto``), quotes in order."""
    vm = Market(cfg).venue(venue)
    cands: dict[int, list] = {}
    for iid, native in natives.items():
        im = vm.by_native[native]
        qs = [vm.initial(im.idx)] + [vm.quote(n) for n in range(upto) if vm.inst_of(n) == im.idx]
        tops = []
        for q in qs:
            b, a = im.book(q, N)
            tops.append(([[im.px_float(p), im.base_qty(n)] for p, n in b],
                         [[im.px_float(p), im.base_qty(n)] for p, n in a]))
        cands[iid] = tops

    def check(tops, what):
        pos = {iid: 0 for iid in cands}
        for k, (iid, b, a) in enumerate(tops):
            c, j = cands[iid], pos[iid]
            while j < len(c) and c[j] != (b, a):
                j += 1
            assert j < len(c), (f"{what} #{k} of {natives[iid]} is no model book after quote "
                                f"#{pos[iid]}: {b} {a}")
            pos[iid] = j
    return check


def run_feed(sim, cfg, venue, symbols, until, instance):
    """A Feed (depth N) of ``symbols`` against ``sim`` until ``until(feed, sink, consumer)``;
    returns (feed counters, sink, consumer, model check, natives)."""
    adapter, _ = build_adapter(venue, symbols)
    adapter.depth = N
    ring = SpscRing.create(f"feed.{venue}", 1 << 16, "MarketUpdate", policy="drop",
                           instance=instance)
    sink = RecordingSink(ring, adapter.venue_id, depth=N)
    feed = Feed(adapter, sim.urls[venue], sink,
                options=FeedOptions(backoff_initial_s=0.05, backoff_max_s=1.0))
    consumer = Consumer(ring)
    natives = {i.instrument_id: i.native for i in adapter.instruments}
    feed.start()
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            consumer.drain()
            with feed.lock:
                done = until(feed, sink)
            if done:
                break
            assert time.monotonic() < deadline, f"{venue}: timed out; {feed.counters()}"
            time.sleep(0.05)
    finally:
        feed.close()
        assert feed.join(2.0), "feed thread did not stop"
        consumer.drain()
        ring.unlink()
        ring.close()
    upto = sim.call(lambda: sim.simulator.hubs[venue].n)
    assert sink.dropped == 0
    return feed.counters(), sink, consumer, model_checker(cfg, venue, natives, upto), natives


def faults_of(sink) -> dict[str, int]:
    return {BookFault(k).name: v for k, v in sink.resyncs_by_fault.items()}


def after_last_fault(sink, natives, k):
    """True once every instrument has ``k`` applied messages since the last fault."""
    n = {iid: 0 for iid in natives}
    for iid, *_ in reversed(sink.tops):
        n[iid] += 1
        if all(v >= k for v in n.values()):
            return all(sink.is_ready(i) for i in natives)
    return False


CASES = {
    "bybit-spot": (["BTC/USDT", "ETH/USDT"], dict(book_gap_p=0.05, book_early_diff_p=1.0,
                                                  book_duplicate_p=0.1),
                   {"GAP", "EARLY_DIFF"}),
    "bybit-linear": (["BTC/USDT"], dict(book_gap_p=0.05, book_early_diff_p=1.0,
                                        book_duplicate_p=0.1), {"GAP", "EARLY_DIFF"}),
    "okx": (["BTC-USDT", "BTC-USDT-SWAP"], dict(book_gap_p=0.04, book_checksum_p=0.04,
                                                book_early_diff_p=1.0, book_duplicate_p=0.1),
            {"GAP", "CHECKSUM", "EARLY_DIFF"}),
}


@pytest.mark.parametrize("venue", list(CASES))
def test_book_faults_counted_resynced_and_exact(instance, venue):
    symbols, faults, want = CASES[venue]
    cfg = make_config([venue], rate_hz=100.0, bases=["BTC", "ETH"], faults={venue: faults})
    adapter, _ = build_adapter(venue, symbols)
    iids = {i.instrument_id for i in adapter.instruments}

    def until(feed, sink):
        return want <= set(faults_of(sink)) and sink.rejects.get("duplicate", 0) > 0 and \
            after_last_fault(sink, iids, 20)

    with SimulatorThread(cfg) as sim:
        counters, sink, consumer, check, natives = run_feed(sim, cfg, venue, symbols, until,
                                                            instance)
    got = faults_of(sink)
    assert want <= set(got) <= want | {"RECONNECT"}, got
    assert counters["book_resyncs"] == sum(got.values()) and counters["books"] == len(natives)
    assert "parse_error" not in sink.rejects and "bad_price" not in sink.rejects
    # every book the feed held, and every book rebuilt from the ring, is the model's
    check(sink.tops, "feed book")
    check(consumer.tops, "ring book")
    assert len(consumer.tops) >= 20 * len(natives)
    recs = consumer.all()
    st = recs[recs["kind"] == Kind.STATUS].view(MARKET_UPDATE_STATUS)
    resync = st[(st["status_reason"] & 0xFF) == StatusReason.BOOK_RESYNC]
    assert len(resync) > 0 and set(resync["instrument_id"]) <= set(natives)
    # QUOTEs come from the books' tops only (linear: its tickers give funding, no quotes)
    q = recs[recs["kind"] == Kind.QUOTE]
    tops = {(iid, b[0][0], a[0][0], b[0][1], a[0][1]) for iid, b, a in sink.tops if b and a}
    assert len(q) and all((int(r["instrument_id"]), r["bid"], r["ask"], r["bid_qty"],
                           r["ask_qty"]) in tops for r in q)
    if venue == "bybit-linear":
        assert (recs["kind"] == Kind.FUNDING).any()


# -- arbpipe feed --depth N --print ------------------------------------------------------
PRINT_CASES = {
    "bybit-spot": ("BTCUSDT", dict(book_gap_p=0.1), "gap"),
    "okx": ("BTC-USDT-SWAP", dict(book_checksum_p=0.1), "checksum"),
}


@pytest.mark.parametrize("venue", list(PRINT_CASES))
def test_cli_print_book_lines_are_the_simulators_books(venue):
    native, faults, fault = PRINT_CASES[venue]
    cfg = make_config([venue], rate_hz=100.0, bases=["BTC"], faults={venue: faults})
    lines: list[dict] = []
    with SimulatorThread(cfg) as sim:
        p = subprocess.Popen([sys.executable, "-m", "procs.cli", "feed", venue, "--url",
                              sim.urls[venue], "--symbol", native, "--depth", str(N), "--print"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

        def read():
            for line in p.stdout:
                if line.startswith("{"):
                    lines.append(json.loads(line))

        t = threading.Thread(target=read, daemon=True)
        t.start()
        try:
            deadline = time.monotonic() + DEADLINE
            while True:
                got = list(lines)
                resyncs = [k for k, d in enumerate(got) if d.get("fault") == fault]
                if resyncs and sum(d["kind"] == "book" for d in got[resyncs[-1]:]) >= 20:
                    break
                assert p.poll() is None, "arbpipe feed exited"
                assert time.monotonic() < deadline, f"timed out: {len(got)} lines"
                time.sleep(0.05)
        finally:
            p.terminate()
            p.wait(10)
            t.join(5)
        upto = sim.call(lambda: sim.simulator.hubs[venue].n)
    adapter, _ = build_adapter(venue, [native])
    iid = adapter.instruments[0].instrument_id
    book_lines = [d for d in lines if d["kind"] == "book"]
    assert all(d["symbol"] == native and len(d["bids"]) <= N for d in book_lines)
    status = [d for d in lines if d["kind"] == "status" and d.get("fault")]
    assert status and {d["fault"] for d in status} == {fault}
    assert all(d["status"] == "STALE" and d["reason"] == "book_resync" for d in status)
    check = model_checker(cfg, venue, {iid: native}, upto)
    check([(iid, d["bids"], d["asks"]) for d in book_lines], "--print book line")
