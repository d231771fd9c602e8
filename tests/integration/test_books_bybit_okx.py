"""L2 books of bybit-spot, bybit-linear and okx (spot and SWAP) end to end: the venue
simulator serves the depth channels with their sync protocol (docs/venues.md, "Bybit" and
"OKX", "L2 book") and the book faults of ``arbpipe.sim.config.FaultConfig``; the feed
runtime (in this process, over real websockets, into a real SPSC ring) or ``arbpipe feed
--depth N --print`` (a subprocess) keeps the books.

Exactness is checked against the simulator's own model: the simulator's books are
``InstrumentModel.book(quote, levels)`` of its deterministic quote sequence, so every top N
the feed shows (its own book after each applied message, the book a consumer rebuilds from
the LEVEL records of the ring, each ``--print`` book line) must be the model's top N of one
quote of that instrument, in quote order. Each fault must be counted and resynced (Bybit by
resubscribing, OKX from its REST snapshot ``GET /api/v5/market/books``, which the simulator
serves on the venue's port, bridged by seqId/prevSeqId; with ``book_no_ws_snapshot`` OKX
sends no websocket snapshot at all, as announced for production). Nothing asserts a
duration; conditions are waited for with deadlines.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from arbpipe.feeds.feed import Feed
from arbpipe.feeds.options import FeedOptions
from arbpipe.feeds.runtime import build_adapter
from arbpipe.sim.config import make_config
from arbpipe.sim.server import SimulatorThread
from arbpipe.transport.rings import SpscRing
from shm_layouts import Kind
from shm_layouts.records import MARKET_UPDATE_STATUS, StatusReason
from tests.books import N, Consumer, RecordingSink, faults_of, model_checker

DEADLINE = 60.0


def rest_url(sim, venue: str) -> str:
    """The simulator serves the venue's REST snapshots on its websocket port."""
    return f"http://127.0.0.1:{sim.ports[venue]}"


def run_feed(sim, cfg, venue, symbols, until, instance):
    """A Feed (depth N) of ``symbols`` against ``sim`` until ``until(feed, sink, consumer)``;
    returns (feed counters, sink, consumer, model check, natives)."""
    adapter, _ = build_adapter(venue, symbols)
    adapter.depth = N
    ring = SpscRing.create(f"feed.{venue}", 1 << 16, "MarketUpdate", policy="drop",
                           instance=instance)
    sink = RecordingSink(ring, adapter.venue_id, depth=N)
    feed = Feed(adapter, sim.urls[venue], sink, rest_url=rest_url(sim, venue),
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
    counters = feed.counters()
    counters["rest_requests"] = feed.resyncer.requests      # REST snapshots fetched
    return counters, sink, consumer, model_checker(cfg, venue, natives, upto), natives


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
    # no websocket snapshot (OKX since August 2026): every book starts from REST (the first
    # update shows none is coming: EARLY_DIFF), and every resync is a REST snapshot
    "okx-rest": (["BTC-USDT", "BTC-USDT-SWAP"], dict(book_no_ws_snapshot=True,
                                                     book_gap_p=0.04, book_checksum_p=0.04,
                                                     book_duplicate_p=0.1),
                 {"GAP", "CHECKSUM", "EARLY_DIFF"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_book_faults_counted_resynced_and_exact(instance, case):
    symbols, faults, want = CASES[case]
    venue = case.split("-rest")[0]
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
    check([(iid, b, a) for iid, _, b, a in sink.tops], "feed book")
    check(consumer.tops, "ring book")
    assert len(consumer.tops) >= 20 * len(natives)
    recs = consumer.all()
    st = recs[recs["kind"] == Kind.STATUS].view(MARKET_UPDATE_STATUS)
    resync = st[(st["status_reason"] & 0xFF) == StatusReason.BOOK_RESYNC]
    assert len(resync) > 0 and set(resync["instrument_id"]) <= set(natives)
    # QUOTEs come from the books' tops only (linear: its tickers give funding, no quotes)
    q = recs[recs["kind"] == Kind.QUOTE]
    tops = {(iid, b[0][0], a[0][0], b[0][1], a[0][1]) for iid, _, b, a in sink.tops if b and a}
    assert len(q) and all((int(r["instrument_id"]), r["bid"], r["ask"], r["bid_qty"],
                           r["ask_qty"]) in tops for r in q)
    if venue == "bybit-linear":
        assert (recs["kind"] == Kind.FUNDING).any()
    if venue == "okx":                  # resynced from REST snapshots, never resubscribed
        assert counters["rest_requests"] > 0


def test_okx_books_from_rest_snapshots_only(instance):
    """OKX without websocket snapshots (``book_no_ws_snapshot``), with failing and lagging
    REST snapshots: every book becomes ready from a REST snapshot bridged to the buffered
    updates by seqId/prevSeqId, every failed or stale snapshot is counted and fetched again,
    and every book the feed held or the ring carried is the simulator's."""
    venue, symbols = "okx", ["BTC-USDT", "BTC-USDT-SWAP", "ETH-USDT"]
    cfg = make_config([venue], rate_hz=100.0, bases=["BTC", "ETH"], faults={venue: dict(
        book_no_ws_snapshot=True, book_snapshot_fail_p=0.3, book_stale_snapshot_p=0.3,
        book_gap_p=0.03)})
    adapter, _ = build_adapter(venue, symbols)
    iids = {i.instrument_id for i in adapter.instruments}
    want = {"EARLY_DIFF", "SNAPSHOT_FAILED", "STALE_SNAPSHOT", "GAP"}

    def until(feed, sink):
        return want <= set(faults_of(sink)) and after_last_fault(sink, iids, 20)

    with SimulatorThread(cfg) as sim:
        counters, sink, consumer, check, natives = run_feed(sim, cfg, venue, symbols, until,
                                                            instance)
    got = faults_of(sink)
    assert want <= set(got) <= want | {"RECONNECT"}, got
    assert counters["rest_requests"] >= len(natives) and "parse_error" not in sink.rejects and "bad_price" not in sink.rejects
    assert all(sink.is_ready(i) for i in iids)
    check([(iid, b, a) for iid, _, b, a in sink.tops], "feed book")
    check(consumer.tops, "ring book")
    assert len(consumer.tops) >= 20 * len(natives)


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
                              sim.urls[venue], "--rest-url", rest_url(sim, venue),
                              "--symbol", native, "--depth", str(N), "--print"],
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


# -- the simulator's OKX REST snapshot -------------------------------------------------------
def _get(url):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_okx_sim_rest_books_shape_errors_and_no_ws_snapshot():
    """``GET /api/v5/market/books`` on the venue's port: OKX's shape, ``sz`` levels a side
    (default 1, at most 400), the venue's error codes; with ``book_no_ws_snapshot`` a
    ``books`` subscribe gets its ack and then updates only, whose first ``prevSeqId`` a REST
    snapshot taken after the subscribe reaches (prevSeqId <= seqId of the snapshot)."""
    from websockets.sync.client import connect
    cfg = make_config(["okx"], rate_hz=50.0, bases=["BTC"],
                      faults={"okx": dict(book_no_ws_snapshot=True)})
    with SimulatorThread(cfg) as sim:
        base = rest_url(sim, "okx") + "/api/v5/market/books"
        st, body = _get(base + "?instId=BTC-USDT-SWAP&sz=400")
        r = json.loads(body)
        assert st == 200 and r["code"] == "0" and r["msg"] == "" and len(r["data"]) == 1
        d = r["data"][0]
        assert set(d) == {"asks", "bids", "ts", "seqId"} and type(d["seqId"]) is int
        assert len(d["bids"]) == len(d["asks"]) == 400 and d["ts"].isdigit()
        assert all(len(x) == 4 and x[2] == "0" for x in d["bids"] + d["asks"])
        assert float(d["bids"][0][0]) < float(d["asks"][0][0])
        d1 = json.loads(_get(base + "?instId=BTC-USDT")[1])["data"][0]
        assert len(d1["bids"]) == len(d1["asks"]) == 1
        assert len(json.loads(_get(base + "?instId=BTC-USDT&sz=5000")[1])["data"][0]["asks"]) \
            == 400
        for q, code in (("", "50014"), ("?instId=NOPE-USDT", "51001"),
                        ("?instId=BTC-USDT&sz=x", "51000")):
            st, body = _get(base + q)
            assert st == 400 and json.loads(body)["code"] == code
        with connect(sim.urls["okx"] + "/ws/v5/public") as ws:
            ws.send(json.dumps({"op": "subscribe",
                                "args": [{"channel": "books", "instId": "BTC-USDT"}]}))
            assert json.loads(ws.recv(timeout=10))["event"] == "subscribe"
            snap = json.loads(_get(base + "?instId=BTC-USDT&sz=400")[1])["data"][0]
            actions = []
            first_prev = None
            while len(actions) < 5:
                m = json.loads(ws.recv(timeout=10))
                actions.append(m["action"])
                if first_prev is None:
                    first_prev = m["data"][0]["prevSeqId"]
            assert actions == ["update"] * 5
            assert first_prev <= snap["seqId"]
