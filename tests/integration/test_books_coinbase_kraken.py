"""Coinbase ``level2`` and Kraken ``book`` kept as exact L2 books (depth > 0): the feed
runtime against the venue simulator over real websockets, into a real SPSC ring and
counters segment (docs/venues.md, "Coinbase" / "Kraken", "L2 book").

Each test compares the feed handler's book, and a book rebuilt from the LEVEL records of
the ring as a consumer rebuilds it, with the simulator's own book (what it has sent on the
connection). To compare at rest, the simulator's quote producer is stopped first; the
faults are switched off before that, so that the last resync completes. Every simulator
depth fault is counted by its BookFault (or reject reason), resynced, and the book is exact
afterwards. Conditions are waited for with generous deadlines; nothing asserts a duration.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from arbpipe.feeds.feed import Feed
from arbpipe.feeds.options import FeedOptions
from arbpipe.feeds.runtime import build_adapter
from arbpipe.feeds.sinks import RingSink
from arbpipe.feeds.stats import FeedStatsWriter, read_feed_stats
from arbpipe.sim.config import make_config
from arbpipe.sim.server import SimulatorThread
from arbpipe.transport.rings import SpscRing
from shm_layouts import MARKET_UPDATE, Flag, Kind, VenueStatus
from shm_layouts.records import (MARKET_UPDATE_LEVEL, MARKET_UPDATE_STATUS, BookFault,
                                 StatusReason, status_reason_code, status_reason_fault)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEADLINE = 30.0
SYMBOLS = ["BTC/USD", "ETH/USD"]
BOOK_FAULTS = ("book_gap_p", "book_checksum_p", "book_early_diff_p", "book_duplicate_p",
               "malformed_p", "reorder_p", "drop_every_s")
_LEVEL, _STATUS = int(Kind.LEVEL), int(Kind.STATUS)


@contextmanager
def simulator(venue, faults=None, seed=11):
    cfg = make_config([venue], seed=seed, rate_hz=50, bases=["BTC", "ETH"],
                      faults={venue: faults} if faults else None)
    sim = SimulatorThread(cfg).start()
    try:
        yield sim
    finally:
        sim.stop()


class RingBooks:
    """A consumer's books from the ring's LEVEL records (records.py, kind LEVEL): SNAPSHOT
    clears, qty 0 removes, BOOK_END ends a message, after which each side is cut to the
    record's depth; a BOOK_RESYNC STATUS makes the instrument's book not ready until its
    next snapshot."""

    def __init__(self):
        self.books: dict[int, tuple[dict, dict]] = {}
        self.ready: set[int] = set()
        self.faults: list[tuple[int, int]] = []        # (instrument_id, BookFault)

    def apply(self, recs: np.ndarray) -> None:
        for rec in recs:
            kind = int(rec["kind"])
            iid = int(rec["instrument_id"])
            if kind == _STATUS:
                s = np.array([rec]).view(MARKET_UPDATE_STATUS)[0]
                if status_reason_code(int(s["status_reason"])) == StatusReason.BOOK_RESYNC:
                    assert int(s["status"]) == VenueStatus.STALE
                    self.ready.discard(iid)
                    self.faults.append((iid, status_reason_fault(int(s["status_reason"]))))
                continue
            if kind != _LEVEL:
                continue
            lv = np.array([rec]).view(MARKET_UPDATE_LEVEL)[0]
            f = int(lv["flags"])
            bids, asks = self.books.setdefault(iid, ({}, {}))
            if f & Flag.SNAPSHOT:
                bids.clear()
                asks.clear()
                self.ready.add(iid)
            side = asks if f & Flag.BOOK_ASK else bids
            price, qty = float(lv["price"]), float(lv["qty"])
            assert 0 < price < np.inf and 0 <= qty < np.inf
            if qty == 0:
                side.pop(price, None)
            else:
                side[price] = qty
            if f & Flag.BOOK_END:
                n = int(lv["depth"])
                for p in sorted(bids, reverse=True)[n:]:
                    del bids[p]
                for p in sorted(asks)[n:]:
                    del asks[p]

    def top(self, iid, n):
        bids, asks = self.books.get(iid, ({}, {}))
        return ([[p, bids[p]] for p in sorted(bids, reverse=True)[:n]],
                [[p, asks[p]] for p in sorted(asks)[:n]])


class Running:
    def __init__(self, feed, ring, instance, depth):
        self.feed, self.ring, self.instance, self.depth = feed, ring, instance, depth
        self.adapter = feed.adapter
        self.sink = feed.sink
        self.consumer = RingBooks()
        self._out = np.zeros(ring.capacity * 8, np.int64)
        self.chunks: list[np.ndarray] = []

    def drain(self) -> None:
        while True:
            n = self.ring.pop_words(self._out)
            if not n:
                return
            recs = self._out[:n * 8].copy().view(MARKET_UPDATE)
            self.chunks.append(recs)
            self.consumer.apply(recs)

    @property
    def records(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, MARKET_UPDATE)

    def stats(self) -> dict:
        (row,) = read_feed_stats(self.instance, f"feed.{self.feed.venue}.stats")
        return row

    def wait(self, pred, what, timeout=DEADLINE):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            got = pred()
            if got:
                return got
            time.sleep(0.05)
        with self.feed.lock:
            c = self.feed.counters()
        raise AssertionError(f"timed out waiting for {what}; counters {c}")


@contextmanager
def books_feed(sim, venue, instance, depth):
    adapter, _ = build_adapter(venue, SYMBOLS)
    adapter.depth = depth
    ring = SpscRing.create(f"feed.{venue}", 1 << 16, "MarketUpdate", policy="drop",
                           instance=instance)
    stats = FeedStatsWriter.create(instance, f"feed.{venue}.stats", venue, adapter.venue_id,
                                   len(adapter.sockets()))
    feed = Feed(adapter, sim.urls[venue], RingSink(ring, adapter.venue_id, depth=depth),
                stats=stats, options=FeedOptions(backoff_initial_s=0.05, backoff_max_s=1.0))
    r = Running(feed, ring, instance, depth)
    feed.start()
    try:
        yield r
    finally:
        feed.close()
        assert feed.join(2.0), "feed thread did not stop"
        stats.unlink()
        stats.close()
        ring.unlink()
        ring.close()


def sim_truth(sim, venue, n):
    """(bids, asks) top n per native symbol, as the simulator last sent them on the newest
    connection that carries the symbol (floats of the decimal strings it sends)."""
    hub = sim.simulator.hubs[venue]

    def read():
        out = {}
        for s in sorted(hub.sessions, key=lambda s: s.conn_no):
            for sym, entry in s.books.items():
                bids, asks = entry[-2:]
                if bids is None:
                    continue
                im = hub.by_native[sym]
                out[sym] = ([[float(im.px(p)), im.base_qty(bids[p])] for p in sorted(bids, reverse=True)[:n]],
                            [[float(im.px(p)), im.base_qty(asks[p])] for p in sorted(asks)[:n]])
        return out
    return sim.call(read)


def faults_off_and_pause(sim, venue, r: Running) -> None:
    """Switch the book faults off, let every book sync again, then stop the quote producer
    (the simulator keeps serving: snapshots, acks, heartbeats)."""
    hub = sim.simulator.hubs[venue]

    def off():
        dropping = hub.vcfg.faults.drop_every_s
        for f in BOOK_FAULTS:
            setattr(hub.vcfg.faults, f, 0.0)
        return hub.conn_counter if dropping else 0
    mark = sim.call(off)      # connections up to this one still drop: wait for a newer one

    def synced():
        held, newest = sim.call(lambda: (any(getattr(s, "held", None) for s in hub.sessions),
                                         max((s.conn_no for s in hub.sessions), default=0)))
        with r.feed.lock:
            ready = all(r.sink.is_ready(i.instrument_id) for i in r.adapter.instruments)
        return ready and not held and newest > mark
    r.wait(synced, "every book synced with the faults off")
    sim.call(lambda: hub._task.cancel())


def assert_exact(sim, venue, r: Running) -> None:
    n = r.depth
    ids = {i.native: i.instrument_id for i in r.adapter.instruments}

    def exact():
        truth = sim_truth(sim, venue, n)
        with r.feed.lock:
            mine = {}
            for sym, iid in ids.items():
                if not r.sink.is_ready(iid):
                    return False
                b, a = r.sink.book_of(iid).top(n)
                mine[sym] = (b.tolist(), a.tolist())
        if set(truth) != set(ids):
            return False
        return all(mine[s] == truth[s] and r.consumer.top(ids[s], n) == truth[s]
                   and ids[s] in r.consumer.ready for s in ids)
    r.wait(exact, "the feed's and the ring consumer's books equal the simulator's")
    truth = sim_truth(sim, venue, n)
    for sym, (b, a) in truth.items():
        assert len(b) == len(a) == n, (sym, len(b), len(a))     # the sim has 20 levels a side


@pytest.mark.parametrize("venue,depth", [("coinbase", 10), ("kraken", 20)])
def test_books_exact_without_faults(instance, venue, depth):
    with simulator(venue) as sim, books_feed(sim, venue, instance, depth) as r:
        r.wait(lambda: r.stats()["book_messages"] > 200, "200 book messages")
        faults_off_and_pause(sim, venue, r)
        assert_exact(sim, venue, r)
        st = r.stats()
    assert st["books"] == 2 and st["books_ready"] == 2
    assert st["book_resyncs"] == 0 and not st["resyncs_by_fault"]
    assert st["reconnects"] == 0 and st["errors"] == 0
    recs = r.records
    lv = recs[recs["kind"] == _LEVEL].view(MARKET_UPDATE_LEVEL)
    assert len(lv) and (lv["depth"] == depth).all()
    q = recs[recs["kind"] == int(Kind.QUOTE)]
    assert len(q) and (q["bid"] < q["ask"]).all()
    # every message's records end with BOOK_END; the first record of each instrument is a snapshot
    for iid in np.unique(lv["instrument_id"]):
        mine = lv[lv["instrument_id"] == iid]
        assert mine["flags"][0] & Flag.SNAPSHOT and mine["flags"][-1] & Flag.BOOK_END


FAULTS = [
    # venue, the simulator's fault, what counts it
    ("coinbase", {"book_gap_p": 0.05}, BookFault.GAP),
    # (an early diff needs a subscribe: connections are dropped now and then to get more)
    ("coinbase", {"book_early_diff_p": 0.7, "drop_every_s": 1.5}, BookFault.EARLY_DIFF),
    ("coinbase", {"book_duplicate_p": 0.1}, "duplicate"),
    ("coinbase", {"malformed_p": 0.03, "reorder_p": 0.03}, BookFault.GAP),
    ("kraken", {"book_checksum_p": 0.05}, BookFault.CHECKSUM),
    ("kraken", {"book_early_diff_p": 0.7, "drop_every_s": 1.5}, BookFault.EARLY_DIFF),
    ("kraken", {"book_duplicate_p": 0.1}, "duplicate"),
    ("kraken", {"malformed_p": 0.03, "reorder_p": 0.03}, BookFault.CHECKSUM),
]


@pytest.mark.parametrize("venue,faults,counted", FAULTS,
                         ids=[f"{v}-{'+'.join(f)}" for v, f, _ in FAULTS])
def test_book_fault_counted_resynced_exact(instance, venue, faults, counted):
    depth = 10
    with simulator(venue, faults) as sim, books_feed(sim, venue, instance, depth) as r:
        if isinstance(counted, str):       # a refused replay: counted, the book stays exact
            r.wait(lambda: r.stats()["rejects"].get(counted, 0) >= 3, f"3 {counted} rejects")
        else:
            name = counted.name.lower()
            r.wait(lambda: r.stats()["resyncs_by_fault"].get(name, 0) >= 2,
                   f"2 {name} resyncs in the counters segment")
        faults_off_and_pause(sim, venue, r)
        assert_exact(sim, venue, r)
        st = r.stats()
        with r.feed.lock:
            c = r.feed.counters()
    if isinstance(counted, str):
        assert st["book_resyncs"] == 0 and st["reconnects"] == 0
        return
    assert st["book_resyncs"] >= 2 and c["books_ready"] == 2
    if "drop_every_s" in faults:
        pass
    elif venue == "coinbase":              # only a new connection resyncs
        assert st["planned_reconnects"] >= 1 and st["disconnects"] == 0
    else:                                  # resubscribed on the same connection
        assert st["reconnects"] == 0 and st["acks"] >= 4
    # the ring says it too: STATUS STALE (BOOK_RESYNC | fault) when the book was in use (a
    # book that a dropped connection had marked not ready already says RECONNECT), and every
    # book's last such status is followed by a snapshot of it
    recs = r.records
    faults_seen = {f for _, f in r.consumer.faults}
    assert int(counted) in faults_seen or "drop_every_s" in faults, faults_seen
    st_recs = recs[recs["kind"] == _STATUS].view(MARKET_UPDATE_STATUS)
    lv = recs[recs["kind"] == _LEVEL].view(MARKET_UPDATE_LEVEL)
    for iid in {i for i, _ in r.consumer.faults}:
        mine = st_recs[(st_recs["instrument_id"] == iid)
                       & ((st_recs["status_reason"] & 0xFF) == int(StatusReason.BOOK_RESYNC))]
        later = lv[(lv["instrument_id"] == iid) & (lv["seq"] > mine["seq"][-1])]
        assert len(later) and later["flags"][0] & Flag.SNAPSHOT


@pytest.mark.parametrize("venue,symbol", [("coinbase", "BTC-USD"), ("kraken", "BTC/USD")])
def test_print_mode_prints_book_lines(instance, venue, symbol):
    """``arbpipe feed VENUE --depth N --print``: a ``book`` line per message that changed the
    top N, best first, at most N levels a side."""
    env = dict(os.environ, ARBPIPE_INSTANCE=instance, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    with simulator(venue) as sim:
        p = subprocess.Popen([sys.executable, "-m", "procs.feed", venue, "--url", sim.urls[venue],
                              "--print", "--symbol", symbol, "--depth", "3"],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        lines: list[dict] = []

        def read():
            for line in p.stdout:
                lines.append(json.loads(line))
                if sum(1 for x in lines if x["kind"] == "book") >= 5:
                    return
        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(DEADLINE)
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        err = p.stderr.read()
        t.join(5)
    assert rc == 0, err
    books = [x for x in lines if x["kind"] == "book"]
    assert len(books) >= 5, (lines[:5], err)
    for x in books:
        assert x["venue"] == venue and x["symbol"] == symbol
        assert 1 <= len(x["bids"]) <= 3 and 1 <= len(x["asks"]) <= 3
        bids, asks = [b[0] for b in x["bids"]], [a[0] for a in x["asks"]]
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    assert any(x["kind"] == "quote" for x in lines)
