"""L2 books of binance (spot), binance-usdm and gate end to end: diffs on the websocket and
the REST depth snapshot served by the simulator on the same port (docs/venues.md,
"Binance" and "Gate", "L2 book"; ``arbpipe.sim.server``'s REST hook), with the book faults
of ``arbpipe.sim.config.FaultConfig`` that apply to them: a skipped update id
(``book_gap_p``), a duplicated diff (``book_duplicate_p``), a snapshot older than the
buffered diffs (``book_stale_snapshot_p``), a failed snapshot request
(``book_snapshot_fail_p``) and dropped connections. The feed runtime runs in this process
(real websockets, the real REST fetcher, a real SPSC ring) or as ``arbpipe feed --depth N
--rest-url ... --print`` (a subprocess).

Exactness: every top N the feed holds (after each applied message), every top N a consumer
rebuilds from the ring's LEVEL records, and every ``--print`` book line must be the
simulator model's top N of one quote of that instrument, in quote order
(``InstrumentModel.book``); and a direct REST snapshot taken from the simulator must equal
the feed's book at the same update id. Each fault must be counted under its BookFault and
the book resynced. Nothing asserts a duration; conditions are waited for with deadlines.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import websocket

from arbpipe.feeds.feed import Feed
from arbpipe.feeds.options import FeedOptions
from arbpipe.feeds.runtime import build_adapter
from arbpipe.feeds.sinks import PrintSink
from arbpipe.sim.config import make_config
from arbpipe.sim.server import SimulatorThread
from arbpipe.transport.rings import SpscRing
from shm_layouts import Kind
from shm_layouts.records import MARKET_UPDATE_STATUS, BookFault, StatusReason, status_reason_fault
from tests.books import N, Consumer, RecordingSink, faults_of, model_checker

DEADLINE = 60.0
VENUES = ("binance", "binance-usdm", "gate")
SYMBOLS = {"binance": ["BTC/USDT", "ETH/USDT"], "binance-usdm": ["BTC/USDT", "ETH/USDT"],
           "gate": ["BTC/USDT", "ETH/USDT"]}


def rest_url(sim, venue: str) -> str:
    return f"http://127.0.0.1:{sim.ports[venue]}"


def settled(sink, iids, k) -> bool:
    """Every instrument ready, with ``k`` applied messages since the last fault."""
    if not all(sink.is_ready(i) for i in iids):
        return False
    n = {iid: 0 for iid in iids}
    for iid, *_ in reversed(sink.tops):
        n[iid] += 1
        if all(v >= k for v in n.values()):
            return True
    return False


def run_feed(sim, cfg, venue, until, instance, during=None):
    """A Feed (depth N, REST snapshots from the simulator) until ``until(feed, sink)``
    (under the feed's lock; ``during(feed, sink)`` runs unlocked between checks); returns
    (counters, sink, consumer, model check, natives)."""
    adapter, _ = build_adapter(venue, SYMBOLS[venue])
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
            if during is not None:
                during(feed, sink)
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


def check_ring(sink, consumer, natives, check):
    """The ring's books are the model's, its QUOTEs the books' tops, and each resync was
    announced by a STATUS BOOK_RESYNC of that instrument."""
    check([(iid, b, a) for iid, _, b, a in sink.tops], "feed book")
    check(consumer.tops, "ring book")
    recs = consumer.all()
    q = recs[recs["kind"] == Kind.QUOTE]
    tops = {(iid, b[0][0], a[0][0], b[0][1], a[0][1]) for iid, _, b, a in sink.tops if b and a}
    assert len(q) and all((int(r["instrument_id"]), r["bid"], r["ask"], r["bid_qty"],
                           r["ask_qty"]) in tops for r in q)
    st = recs[recs["kind"] == Kind.STATUS].view(MARKET_UPDATE_STATUS)
    return st[(st["status_reason"] & 0xFF) == StatusReason.BOOK_RESYNC]


# -- every fault of the REST-snapshot venues: counted, resynced, exact --------------------
FAULTS = dict(book_gap_p=0.03, book_duplicate_p=0.03, book_stale_snapshot_p=0.5,
              book_snapshot_fail_p=0.3)
WANT = {"GAP", "STALE_SNAPSHOT", "SNAPSHOT_FAILED"}


@pytest.mark.parametrize("venue", VENUES)
def test_book_faults_counted_resynced_and_exact(instance, venue):
    cfg = make_config([venue], rate_hz=100.0, bases=["BTC", "ETH"], faults={venue: FAULTS})
    adapter, _ = build_adapter(venue, SYMBOLS[venue])
    iids = {i.instrument_id for i in adapter.instruments}

    def until(feed, sink):
        return WANT <= set(faults_of(sink)) and settled(sink, iids, 20) and \
            feed.resyncer.failures > 0

    with SimulatorThread(cfg) as sim:
        counters, sink, consumer, check, natives = run_feed(sim, cfg, venue, until, instance)
        book = sim.call(lambda: sim.simulator.hubs[venue].depth_book)
        served = (book.snapshots, book.stale_served, book.failed_served)
    got = faults_of(sink)
    assert WANT <= set(got) <= WANT | {"RECONNECT"}, got
    assert counters["book_resyncs"] == sum(got.values())
    assert counters["books_ready"] == counters["books"] == len(natives)
    assert "parse_error" not in sink.rejects and "bad_price" not in sink.rejects
    assert "no_snapshot" not in sink.rejects           # the adapter resyncs before the sink refuses
    assert served[1] >= got["STALE_SNAPSHOT"] and served[2] >= got["SNAPSHOT_FAILED"] > 0
    resync = check_ring(sink, consumer, natives, check)
    assert len(consumer.tops) >= 20 * len(natives)
    # a ready book that broke said so (a stale or failed snapshot hits a book not ready yet)
    assert len(resync) > 0 and set(resync["instrument_id"]) <= set(natives)
    assert {BookFault(status_reason_fault(int(r))).name for r in resync["status_reason"]} <= \
        {"GAP", "RECONNECT"}
    if venue == "binance-usdm":
        assert (consumer.all()["kind"] == Kind.FUNDING).any()


def test_dropped_connections_resync_every_book(instance):
    venue = "binance"
    cfg = make_config([venue], rate_hz=100.0, bases=["BTC", "ETH"],
                      faults={venue: dict(drop_every_s=1.0)})
    adapter, _ = build_adapter(venue, SYMBOLS[venue])
    iids = {i.instrument_id for i in adapter.instruments}

    def until(feed, sink):
        return faults_of(sink).get("RECONNECT", 0) >= 2 * len(iids) and settled(sink, iids, 10)

    with SimulatorThread(cfg) as sim:
        counters, sink, consumer, check, natives = run_feed(sim, cfg, venue, until, instance)
    assert set(faults_of(sink)) == {"RECONNECT"}
    assert counters["disconnects"] >= 2 and counters["books_ready"] == len(natives)
    resync = check_ring(sink, consumer, natives, check)
    assert {BookFault(status_reason_fault(int(r))).name for r in resync["status_reason"]} == \
        {"RECONNECT"}


# -- a direct snapshot from the simulator equals the feed's book at its update id ----------
def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        return json.loads(r.read())


@pytest.mark.parametrize("venue", VENUES)
def test_direct_rest_snapshot_equals_the_feed_book(instance, venue):
    cfg = make_config([venue], rate_hz=50.0, bases=["BTC", "ETH"],
                      faults={venue: dict(book_gap_p=0.05)})
    adapter, _ = build_adapter(venue, SYMBOLS[venue])
    iids = {i.instrument_id for i in adapter.instruments}
    wanted: list[tuple[int, int, list, list]] = []      # (iid, id, bids, asks) from the REST
    matched: list[int] = []

    with SimulatorThread(cfg) as sim:
        base = rest_url(sim, venue)

        def snapshot(native):
            path = adapter.rest_snapshot_path(native).replace("limit=1000", "limit=500")
            body = get_json(base + path)
            last = body["id"] if venue == "gate" else body["lastUpdateId"]
            top = [[[float(p), float(q)] for p, q in body[s][:N]] for s in ("bids", "asks")]
            return last, top[0], top[1]

        def during(feed, sink):
            if len(wanted) < 6 and settled(sink, iids, 1):
                inst = adapter.instruments[len(wanted) % len(adapter.instruments)]
                wanted.append((inst.instrument_id, *snapshot(inst.native)))

        def until(feed, sink):
            seen = {(iid, uid): (b, a) for iid, uid, b, a in sink.tops}
            matched[:] = [k for k, (iid, uid, b, a) in enumerate(wanted)
                          if seen.get((iid, uid)) == (b, a)]
            return len(wanted) == 6 and len(matched) == 6

        counters, sink, consumer, check, natives = run_feed(sim, cfg, venue, until, instance,
                                                            during)
    assert "GAP" in faults_of(sink) or counters["book_resyncs"] == 0
    check_ring(sink, consumer, natives, check)


# -- the simulator's REST endpoints ------------------------------------------------------
def test_simulator_rest_endpoints_errors_limits_and_routing():
    cfg = make_config(["binance", "binance-usdm", "gate"], rate_hz=20.0, bases=["BTC"],
                      single_port=True)
    with SimulatorThread(cfg) as sim:
        base = f"http://127.0.0.1:{sim.ports['binance']}"
        spot = get_json(base + "/api/v3/depth?symbol=BTCUSDT&limit=3")
        assert set(spot) == {"lastUpdateId", "bids", "asks"} and len(spot["bids"]) == 3
        assert all(float(b[0]) > float(a[0]) for b, a in zip(spot["bids"][:-1], spot["bids"][1:]))
        usdm = get_json(base + "/fapi/v1/depth?symbol=BTCUSDT&limit=5")
        assert set(usdm) == {"lastUpdateId", "E", "T", "bids", "asks"} and len(usdm["asks"]) == 5
        gate = get_json(base + "/api/v4/spot/order_book?currency_pair=BTC_USDT&limit=2"
                               "&with_id=true")
        assert set(gate) == {"id", "current", "update", "asks", "bids"} and len(gate["bids"]) == 2
        assert "id" not in get_json(base + "/api/v4/spot/order_book?currency_pair=BTC_USDT")
        levels = cfg.venues["binance"].book_levels
        assert len(get_json(base + "/api/v3/depth?symbol=BTCUSDT&limit=5000")["bids"]) == levels
        for path, status, needle in [
                ("/api/v3/depth?symbol=NOPE", 400, b"-1121"),
                ("/api/v3/depth?limit=5", 400, b"-1102"),
                ("/api/v3/depth?symbol=BTCUSDT&limit=0", 400, b"-1130"),
                ("/fapi/v1/depth?symbol=BTCUSDT&limit=7", 400, b"-1130"),
                ("/api/v4/spot/order_book?currency_pair=NOPE_USDT", 400, b"INVALID_CURRENCY_PAIR"),
                ("/api/v9/nothing", 404, b"no venue serves")]:
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(base + path, timeout=10)
            assert e.value.code == status and needle in e.value.read(), path
    # own ports: a venue answers only its own REST paths
    with SimulatorThread(make_config(["binance", "gate"], rate_hz=20.0, bases=["BTC"])) as sim:
        assert "lastUpdateId" in get_json(rest_url(sim, "binance") + "/api/v3/depth?symbol=BTCUSDT")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(rest_url(sim, "gate") + "/api/v3/depth?symbol=BTCUSDT",
                                   timeout=10)
        assert e.value.code == 404


def test_simulator_snapshot_and_diffs_agree_on_the_wire():
    """Raw websocket + REST, no adapter: a snapshot's ``lastUpdateId`` is the ``u`` of a
    diff, the diffs chain (``U`` = previous ``u`` + 1, USD-M ``pu`` = previous ``u``), and
    the snapshot plus the diffs after it is the next snapshot."""
    cfg = make_config(["binance-usdm"], rate_hz=50.0, bases=["BTC"])
    with SimulatorThread(cfg) as sim:
        ws = websocket.create_connection(
            sim.urls["binance-usdm"] + "/public/ws/btcusdt@depth@100ms", timeout=10)
        try:
            base = rest_url(sim, "binance-usdm") + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
            diffs = [json.loads(ws.recv())]
            snap = get_json(base)
            while diffs[-1]["u"] < snap["lastUpdateId"] + 5:
                diffs.append(json.loads(ws.recv()))
            later = get_json(base)
            while diffs[-1]["u"] < later["lastUpdateId"]:
                diffs.append(json.loads(ws.recv()))
        finally:
            ws.close()
    for a, b in zip(diffs, diffs[1:]):
        assert b["pu"] == a["u"] and b["U"] == a["u"] + 1
    assert snap["lastUpdateId"] in {d["u"] for d in diffs}
    book = [{p: q for p, q in snap[s]} for s in ("bids", "asks")]
    for d in diffs:
        if snap["lastUpdateId"] < d["u"] <= later["lastUpdateId"]:
            for side, rows in ((0, d["b"]), (1, d["a"])):
                for p, q in rows:
                    if float(q) == 0:
                        book[side].pop(p, None)
                    else:
                        book[side][p] = q
    assert book == [{p: q for p, q in later[s]} for s in ("bids", "asks")]


# -- arbpipe feed --depth N --rest-url ... --print ---------------------------------------
PRINT_CASES = {
    "gate": ("BTC_USDT", dict(book_stale_snapshot_p=1.0 / 3, book_gap_p=0.05)),
    "binance-usdm": ("BTCUSDT", dict(book_stale_snapshot_p=1.0 / 3, book_gap_p=0.05)),
}


@pytest.mark.parametrize("venue", list(PRINT_CASES))
def test_cli_print_book_lines_are_the_simulators_books(venue):
    native, faults = PRINT_CASES[venue]
    cfg = make_config([venue], rate_hz=100.0, bases=["BTC"], faults={venue: faults})
    lines: list[dict] = []
    with SimulatorThread(cfg) as sim:
        p = subprocess.Popen([sys.executable, "-m", "procs.cli", "feed", venue, "--url",
                              sim.urls[venue], "--rest-url", rest_url(sim, venue), "--symbol",
                              native, "--depth", str(N), "--print"],
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
                resyncs = [k for k, d in enumerate(got) if d.get("fault") == "gap"]
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
        stale = sim.call(lambda: sim.simulator.hubs[venue].depth_book.stale_served)
    adapter, _ = build_adapter(venue, [native])
    iid = adapter.instruments[0].instrument_id
    book_lines = [d for d in lines if d["kind"] == "book"]
    assert all(d["symbol"] == native and len(d["bids"]) == len(d["asks"]) == N
               for d in book_lines)
    status = [d for d in lines if d["kind"] == "status" and d.get("fault")]
    assert status and {d["fault"] for d in status} == {"gap"}
    assert all(d["status"] == "STALE" and d["reason"] == "book_resync" for d in status)
    assert stale >= 1                          # and none of them reached a book line:
    check = model_checker(cfg, venue, {iid: native}, upto)
    check([(iid, d["bids"], d["asks"]) for d in book_lines], "--print book line")


def test_print_sink_book_lines_in_process():
    """The same through ``PrintSink`` in this process (no subprocess, no shared memory):
    gate with every REST fault; each book line is a model book."""
    venue = "gate"
    cfg = make_config([venue], rate_hz=100.0, bases=["BTC"],
                      faults={venue: dict(book_stale_snapshot_p=0.5, book_snapshot_fail_p=0.5)})
    out = io.StringIO()
    with SimulatorThread(cfg) as sim:
        adapter, _ = build_adapter(venue, ["BTC/USDT"])
        adapter.depth = N
        iid = adapter.instruments[0].instrument_id
        sink = PrintSink(out, venue, adapter.venue_id, {iid: ("BTC_USDT", "BTC/USDT")}, depth=N)
        feed = Feed(adapter, sim.urls[venue], sink, rest_url=rest_url(sim, venue),
                    options=FeedOptions(backoff_initial_s=0.05, backoff_max_s=1.0))
        feed.start()
        try:
            deadline = time.monotonic() + DEADLINE
            while True:
                with feed.lock:
                    n = out.getvalue().count('"kind":"book"')
                    f = faults_of(sink)
                if n >= 30 and {"STALE_SNAPSHOT", "SNAPSHOT_FAILED"} <= set(f):
                    break
                assert time.monotonic() < deadline, feed.counters()
                time.sleep(0.05)
        finally:
            feed.close()
            assert feed.join(2.0)
        upto = sim.call(lambda: sim.simulator.hubs[venue].n)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    books = [d for d in lines if d["kind"] == "book"]
    model_checker(cfg, venue, {iid: "BTC_USDT"}, upto)(
        [(iid, d["bids"], d["asks"]) for d in books], "print line")
