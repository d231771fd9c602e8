"""The Coinbase adapter (``level2`` kept as a book per product, published as BBO):
documented frames, book-to-BBO, sequence handling, control frames, malformed input,
RFC3339 timestamps, and fuzzing (parse never raises); with ``depth`` > 0 the L2 book
published through the sink: every sync rule and its resync, and hypothesis streams
against a reference venue.

Fixtures are the example frames of docs/venues.md ("Coinbase")."""
from __future__ import annotations

import datetime
import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from arbpipe.feeds.venues.base import Control
from arbpipe.feeds.venues.coinbase import rfc3339_ns
from arbpipe.feeds.venues.registry import get
from arbpipe.feeds.venues.sink import CollectingSink
from arbpipe.sim.market import fixed
from arbpipe.symbols import Instrument
from shm_layouts import Flag
from shm_layouts.records import BookFault
from tests.unit.venues.common_okx_coinbase_kraken_gate import (
    RECV, assert_quote, feed, fuzz_parse_never_raises, garbage_counted_once, only_quote,
    parse_stream)

# --------------------------------------------------------------------------- fixtures
# section 4, Coinbase
CB_SUBS = '{"channel":"subscriptions","client_id":"","timestamp":"2026-04-07T14:30:00.000000Z","sequence_num":0,"events":[{"subscriptions":{"level2":["BTC-USD"],"market_trades":["BTC-USD","ETH-USD"]}}]}'
CB_ERROR = '{"type":"error","message":"Failed to subscribe","reason":"DOGE-XYZ is not a valid product"}'
CB_TICKER = """{
  "channel": "ticker", "client_id": "", "timestamp": "2023-02-09T20:30:37.167359596Z", "sequence_num": 0,
  "events": [{"type": "snapshot", "tickers": [{"type": "ticker", "product_id": "BTC-USD", "price": "21932.98",
    "volume_24_h": "16038.28770938", "low_24_h": "21835.29", "high_24_h": "23011.18", "low_52_w": "15460",
    "high_52_w": "48240", "price_percent_chg_24_h": "-4.15775596190603", "best_bid": "21931.98",
    "best_bid_quantity": "8000.21", "best_ask": "21933.98", "best_ask_quantity": "8038.07770938"}]}]
}"""
CB_L2_SNAPSHOT = """{
  "channel": "l2_data",
  "client_id": "",
  "timestamp": "2023-02-09T20:32:50.714964855Z",
  "sequence_num": 0,
  "events": [
    {
      "type": "snapshot",
      "product_id": "BTC-USD",
      "updates": [
        {"side": "bid", "event_time": "1970-01-01T00:00:00Z", "price_level": "21921.73", "new_quantity": "0.06317902"},
        {"side": "bid", "event_time": "1970-01-01T00:00:00Z", "price_level": "21921.3", "new_quantity": "0.02"}
      ]
    }
  ]
}"""
CB_HEARTBEAT_DOC = """{
  "channel": "heartbeats", "client_id": "", "timestamp": "2023-06-23T20:31:26.122969572Z", "sequence_num": 0,
  "events": [{"current_time": "2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105", "heartbeat_counter": "3049"}]
}"""
CB_HEARTBEAT_PROD = '{"channel":"heartbeats","timestamp":"2023-06-23T20:31:26.122969572Z","sequence_num":0,"events":[{"current_time":"2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105","heartbeat_counter":14191}]}'

# ------------------------------------------------------------------------- adapters
CB_INSTRUMENTS = [Instrument("BTC-USD", 3), Instrument("ETH-USD", 4)]


def coinbase():
    return get("coinbase")(CB_INSTRUMENTS, venue_id=4)


FACTORIES = {"coinbase": coinbase}


def cb_frame(seq, events, channel="l2_data", ts="2026-07-26T09:33:07.419487123Z"):
    return json.dumps({"channel": channel, "timestamp": ts, "sequence_num": seq, "events": events})


def lvl(side, price, qty, t="2026-07-26T09:33:07.419487Z"):
    return {"side": side, "event_time": t, "price_level": price, "new_quantity": qty}


def _prime(adapter):
    adapter.parse(cb_frame(0, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        lvl("bid", "10", "1"), lvl("offer", "11", "1")]}]), RECV, CollectingSink())


# ----------------------------------------------------------------------- registry
@pytest.mark.parametrize("name,path,url", [
    ("coinbase", "/", "wss://advanced-trade-ws.coinbase.com"),
])
def test_registered_with_endpoint(name, path, url):
    a = FACTORIES[name]()
    assert a.name == name and a.default_url == url
    specs = a.sockets()
    assert len(specs) == 1 and specs[0].path == path
    assert all(isinstance(f, str) for f in specs[0].subscribe)


@pytest.mark.parametrize("name,native,canonical", [
    ("coinbase", "BTC-USD", "BTC/USD"), ("coinbase", "ETH-USDC", "ETH/USDC"),
    ("coinbase", "BTC-PERP-INTX", None), ("coinbase", "-USD", None),
])
def test_native_to_canonical(name, native, canonical):
    assert get(name).native_to_canonical(native) == canonical


# ------------------------------------------------------------------------ Coinbase
def test_coinbase_sockets_one_channel_per_subscribe():
    spec = coinbase().sockets()[0]
    frames = [json.loads(f) for f in spec.subscribe]
    assert frames == [
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "level2"},
        {"type": "subscribe", "channel": "heartbeats"},
    ]


def test_coinbase_doc_snapshot_bids_only_then_offers():
    a = coinbase()
    ctl, sink = feed(a, CB_L2_SNAPSHOT)
    assert ctl is None and not sink.updates and sink.rejects == {"empty_book": 1}
    assert a.applied == 2
    ctl, sink = feed(a, cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [
        lvl("offer", "21925.01", "0.5"), lvl("offer", "21926", "1.5")]}]))
    assert ctl is None
    assert_quote(only_quote(sink), 3, 21921.73, 21925.01, 0.06317902, 0.5,
                 rfc3339_ns("2026-07-26T09:33:07.419487Z"), venue=4)
    assert sink.updates[0]["exchange_ts_ns"] == 1785058387419487000


def test_coinbase_book_to_bbo_sequence():
    a = coinbase()
    snap = cb_frame(5, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        lvl("bid", "100.0", "1", "1970-01-01T00:00:00Z"), lvl("bid", "99.5", "2", "1970-01-01T00:00:00Z"),
        lvl("bid", "99", "3", "1970-01-01T00:00:00Z"), lvl("offer", "101", "4", "1970-01-01T00:00:00Z"),
        lvl("offer", "101.5", "5", "1970-01-01T00:00:00Z")]}], ts="2023-02-09T20:32:50.714964855Z")
    _, sink = feed(a, snap)
    assert_quote(only_quote(sink), 3, 100.0, 101.0, 1.0, 4.0, 1675974770714964855, flags=int(Flag.SNAPSHOT))

    def upd(seq, *levels):
        return cb_frame(seq, [{"type": "update", "product_id": "BTC-USD", "updates": list(levels)}])

    t1 = "2023-02-09T20:32:51.000000001Z"
    _, sink = feed(a, upd(6, lvl("bid", "100.00", "1.25", t1)))      # best bid size changes
    assert_quote(only_quote(sink), 3, 100.0, 101.0, 1.25, 4.0, 1675974771000000001)
    _, sink = feed(a, upd(7, lvl("bid", "98", "9"), lvl("offer", "102", "1")))  # deeper only
    assert not sink.updates and not sink.rejects
    assert a.applied == 5 + 1 + 2
    _, sink = feed(a, upd(8, lvl("bid", "100", "0")))                 # best removed: next level
    assert_quote(only_quote(sink), 3, 99.5, 101.0, 2.0, 4.0, rfc3339_ns("2026-07-26T09:33:07.419487Z"))
    _, sink = feed(a, upd(9, lvl("offer", "101", "0.0"), lvl("offer", "101.5", "0")))  # two asks gone
    assert_quote(only_quote(sink), 3, 99.5, 102.0, 2.0, 1.0, rfc3339_ns("2026-07-26T09:33:07.419487Z"))
    _, sink = feed(a, upd(10, lvl("offer", "100.25", "0.75")))         # new best inside the spread
    assert_quote(only_quote(sink), 3, 99.5, 100.25, 2.0, 0.75, 1785058387419487000)
    _, sink = feed(a, upd(11, lvl("bid", "50", "0")))                  # removing an absent level
    assert not sink.updates and not sink.rejects
    _, sink = feed(a, upd(12, lvl("bid", "100.5", "1")))               # would cross the book
    assert not sink.updates and sink.rejects == {"crossed": 1}


def test_coinbase_snapshot_replaces_book_and_products_are_separate():
    a = coinbase()
    s1 = cb_frame(0, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        lvl("bid", "10", "1"), lvl("offer", "11", "1")]},
        {"type": "snapshot", "product_id": "ETH-USD", "updates": [lvl("bid", "1", "2"), lvl("offer", "2", "3")]}])
    _, sink = feed(a, s1)
    assert [(u["instrument_id"], u["bid"], u["ask"]) for u in sink.updates] == [(3, 10.0, 11.0), (4, 1.0, 2.0)]
    s2 = cb_frame(1, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        lvl("bid", "9", "1"), lvl("offer", "12", "1")]}])
    _, sink = feed(a, s2)
    assert_quote(only_quote(sink), 3, 9.0, 12.0, 1.0, 1.0, 1785058387419487000, flags=int(Flag.SNAPSHOT))


def test_coinbase_sequence_gap_duplicate_out_of_order():
    a = coinbase()
    snap = cb_frame(10, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        lvl("bid", "10", "1"), lvl("offer", "11", "1")]}])
    feed(a, snap)
    upd = lambda seq, q: cb_frame(seq, [{"type": "update", "product_id": "BTC-USD",
                                         "updates": [lvl("bid", "10", q)]}])
    sink = CollectingSink(recv_ns=RECV)
    assert a.parse(upd(11, "2"), RECV, sink) is None
    assert a.parse(upd(11, "3"), RECV, sink) is None
    assert a.parse(upd(9, "4"), RECV, sink) is None
    assert [u["bid_qty"] for u in sink.updates] == [2.0]
    assert sink.rejects == {"duplicate": 1, "out_of_order": 1}
    # heartbeats share the counter
    assert a.parse(cb_frame(12, [{"heartbeat_counter": 1}], channel="heartbeats"), RECV, sink).kind == "heartbeat"
    ctl = a.parse(upd(14, "5"), RECV, sink)
    assert ctl == Control("error", detail="sequence gap", reconnect=True)
    assert len(sink.updates) == 1 and sink.rejects["no_snapshot"] == 1
    # book dropped until a new snapshot arrives
    assert a.parse(upd(15, "6"), RECV, sink) is None
    assert sink.rejects["no_snapshot"] == 2 and len(sink.updates) == 1
    # a snapshot in a frame after a gap still rebuilds the book (e.g. after a resubscribe)
    ctl = a.parse(cb_frame(20, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        lvl("bid", "10", "8"), lvl("offer", "11", "1")]}]), RECV, sink)
    assert ctl.kind == "error" and ctl.reconnect and sink.updates[-1]["bid_qty"] == 8.0
    # reconnect: counter restarts anywhere, fresh snapshot
    a.on_connect(0)
    a.parse(cb_frame(0, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        lvl("bid", "10", "7"), lvl("offer", "11", "1")]}]), RECV, sink)
    assert sink.updates[-1]["bid_qty"] == 7.0 and sink.updates[-1]["flags"] == int(Flag.SNAPSHOT)


def test_coinbase_update_before_snapshot_rejected():
    _, sink = feed(coinbase(), cb_frame(0, [{"type": "update", "product_id": "BTC-USD",
                                             "updates": [lvl("bid", "1", "1")]}]))
    assert sink.rejects == {"no_snapshot": 1} and not sink.updates


@pytest.mark.parametrize("frame,kind,symbol,detail_has", [
    (CB_SUBS, "ack", "", "level2:BTC-USD"),
    (CB_ERROR, "error", "DOGE-XYZ", "Failed to subscribe"),
    ('{"type":"error","message":"failure to subscribe"}', "error", "", "failure"),
    (CB_HEARTBEAT_DOC, "heartbeat", "", ""),
    (CB_HEARTBEAT_PROD, "heartbeat", "", ""),
])
def test_coinbase_control_frames(frame, kind, symbol, detail_has):
    ctl, sink = feed(coinbase(), frame)
    assert ctl is not None and (ctl.kind, ctl.symbol, ctl.reconnect) == (kind, symbol, False)
    assert detail_has in ctl.detail
    assert not sink.updates and not sink.rejects


def _cb_with_book():
    a = coinbase()
    feed(a, cb_frame(0, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        lvl("bid", "10", "1"), lvl("offer", "11", "1")]}]))
    return a


@pytest.mark.parametrize("frame,reason", [
    (CB_TICKER.replace('"sequence_num": 0', '"sequence_num": 1'), "unknown_channel"),
    (cb_frame(1, [{"type": "update", "product_id": "SOL-USD", "updates": [lvl("bid", "1", "1")]}]), "unknown_symbol"),
    (cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [lvl("bid", "nan", "1")]}]), "bad_price"),
    (cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [lvl("bid", "-10.5", "1")]}]), "bad_price"),
    (cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [lvl("bid", "0", "1")]}]), "bad_price"),
    (cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [lvl("offer", "12", "-1")]}]), "bad_price"),
    (cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [lvl("offer", "12", "1e999")]}]), "bad_price"),
    (cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [lvl("buy", "12", "1")]}]), "bad_shape"),
    (cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [lvl("bid", "x", "1")]}]), "bad_shape"),
    (cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": []}]), "bad_shape"),
    (cb_frame(1, [{"type": "weird", "product_id": "BTC-USD", "updates": [lvl("bid", "9", "1")]}]), "bad_shape"),
    (cb_frame(1, [{"type": "update", "product_id": "BTC-USD"}]), "bad_shape"),
    (cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [lvl("offer", "11", "0")]}]), "empty_book"),
    (cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [lvl("bid", "12", "1")]}]), "crossed"),
    (cb_frame(1, []), "bad_shape"),
    ('{"channel":"l2_data","sequence_num":1}', "bad_shape"),
    ('{"channel":"l2_data","sequence_num":"1","events":[]}', "bad_shape"),
    ('{"timestamp":"x"}', "bad_shape"),
    ("[]", "bad_shape"),
    ("{", "not_json"),
    (b"\x00\x01", "not_json"),
])
def test_coinbase_malformed(frame, reason):
    a = _cb_with_book()
    ctl, sink = feed(a, frame)
    assert ctl is None and not sink.updates
    assert sink.rejects == {reason: 1}


def test_coinbase_bad_level_skipped_rest_applied():
    a = _cb_with_book()
    _, sink = feed(a, cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [
        lvl("bid", "nan", "1"), lvl("bid", "10.5", "2")]}]))
    assert sink.rejects == {"bad_price": 1}
    assert [(u["bid"], u["bid_qty"]) for u in sink.updates] == [(10.5, 2.0)]


def test_coinbase_timestamp_fallbacks():
    a = coinbase()
    # snapshot placeholder event_time -> envelope timestamp
    _, sink = feed(a, cb_frame(0, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        lvl("bid", "10", "1", "1970-01-01T00:00:00Z"), lvl("offer", "11", "1", "1970-01-01T00:00:00Z")]}],
        ts="2023-02-09T20:32:50.714964855Z"))
    assert sink.updates[0]["exchange_ts_ns"] == 1675974770714964855
    # neither usable -> 0 and NO_EXCHANGE_TS
    _, sink = feed(a, cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [
        lvl("bid", "10", "2", "garbage")]}], ts="also garbage"))
    u = only_quote(sink)
    assert u["exchange_ts_ns"] == 0 and u["flags"] == int(Flag.NO_EXCHANGE_TS)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 40), st.sampled_from([0, 0, 1, 2, 3.5]), st.booleans()),
                min_size=1, max_size=60))
def test_coinbase_book_matches_naive_model(ops):
    """Random level updates: every emitted quote equals the top of a naive dict book,
    and a quote is emitted exactly when that top (prices or sizes) changes."""
    a = coinbase()
    bids = {float(p): 1.0 for p in range(1, 20)}
    asks = {float(p): 1.0 for p in range(21, 41)}
    snap = [lvl("bid", str(p), "1") for p in bids] + [lvl("offer", str(p), "1") for p in asks]
    _, sink = feed(a, cb_frame(0, [{"type": "snapshot", "product_id": "BTC-USD", "updates": snap}]))
    last = (19.0, 1.0, 21.0, 1.0)
    assert (sink.updates[0]["bid"], sink.updates[0]["bid_qty"], sink.updates[0]["ask"], sink.updates[0]["ask_qty"]) == last
    for seq, (is_bid, price, qty, as_int_text) in enumerate(ops, start=1):
        side = bids if is_bid else asks
        nb, na = dict(bids), dict(asks)
        (nb if is_bid else na).pop(float(price), None)
        if qty:
            (nb if is_bid else na)[float(price)] = float(qty)
        text = str(price) if as_int_text else f"{price}.000"
        _, sink = feed(a, cb_frame(seq, [{"type": "update", "product_id": "BTC-USD",
                                          "updates": [lvl("bid" if is_bid else "offer", text, str(qty))]}]))
        if not nb or not na:
            assert sink.rejects == {"empty_book": 1} and not sink.updates
        else:
            top = (max(nb), nb[max(nb)], min(na), na[min(na)])
            if top[0] > top[2]:
                assert sink.rejects == {"crossed": 1} and not sink.updates
            elif top != last:
                u = only_quote(sink)
                assert (u["bid"], u["bid_qty"], u["ask"], u["ask_qty"]) == top
                last = top
            else:
                assert not sink.updates and not sink.rejects
        bids, asks = nb, na


@pytest.mark.parametrize("text,expected", [
    ("2023-02-09T20:30:37.167359596Z", 1675974637167359596),
    ("2023-02-09T20:32:50.714964855Z", 1675974770714964855),
    ("2023-09-25T09:04:31.742648Z", 1695632671742648000),
    ("1970-01-01T00:00:00Z", 0),
    ("2024-02-29T23:59:59.5Z", 1709251199500000000),
    ("2023-09-25T11:04:31.742648+02:00", 1695632671742648000),
    ("2023-09-25T07:04:31.742648-02:00", 1695632671742648000),
    ("2023-02-29T00:00:00Z", -1), ("2023-02-09T24:00:00Z", -1), ("2023-02-09T20:30:37", -1),
    ("2023-02-09T20:30:37.Z", -1), ("2023-02-09T20:30:37.1234567890Z", -1), ("", -1), ("Z", -1),
    ("2023-02-09 20:30:37 +0000 UTC", -1), ("9999-12-31T23:59:59Z", -1), ("２０２３-02-09T20:30:37Z", -1),
])
def test_rfc3339_examples(text, expected):
    assert rfc3339_ns(text) == expected


@settings(max_examples=500, deadline=None, database=None)
@given(st.datetimes(min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(2262, 1, 1)),
       st.integers(0, 999), st.integers(1, 9))
def test_rfc3339_matches_datetime(dt, extra_ns, ndigits):
    ns_total = dt.microsecond * 1000 + extra_ns
    frac = f"{ns_total:09d}"[:ndigits]
    text = dt.strftime("%Y-%m-%dT%H:%M:%S") + "." + frac + "Z"
    whole = int(dt.replace(microsecond=0, tzinfo=datetime.timezone.utc).timestamp())
    assert rfc3339_ns(text) == whole * 1_000_000_000 + int(frac) * 10 ** (9 - ndigits)


# ------------------------------------------- a stream of frames (cost: arbpipe bench feeds)
def _deep_book(adapter):
    adapter.parse(cb_frame(0, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        lvl("bid", str(100 - i * 0.01), "1") for i in range(500)] + [
        lvl("offer", str(101 + i * 0.01), "1") for i in range(500)]}]), RECV, CollectingSink())


def test_bbo_frame_stream_one_quote_per_frame():
    frames = [cb_frame(i, [{"type": "update", "product_id": "BTC-USD", "updates": [
        lvl("bid", "100", str(1 + i % 7))]}]).encode() for i in range(1, 2001)]
    # every update moves the top of a 500-level book: one quote each, again after a reconnect
    assert parse_stream(coinbase(), frames, _deep_book) == [len(frames)] * 2


# -------------------------------------------------------- fuzzing: parse never raises
VALID = {
    "coinbase": [CB_L2_SNAPSHOT.replace('"sequence_num": 0', '"sequence_num": 1'),
                 cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [
                     lvl("bid", "10.5", "1"), lvl("offer", "11", "0"), lvl("offer", "10.75", "2")]}]),
                 CB_SUBS, CB_ERROR, CB_TICKER, CB_HEARTBEAT_DOC, CB_HEARTBEAT_PROD],
}


def test_fuzz_parse_never_raises_and_accounts_for_every_frame():
    fuzz_parse_never_raises(coinbase, VALID["coinbase"], _prime)


def test_every_reject_reason_is_counted_once_per_frame_for_random_garbage():
    garbage_counted_once(coinbase)


# ============================================================ L2 book (depth > 0)
# docs/venues.md, "Coinbase", "L2 book"
def coinbase_book(depth=5):
    a = get("coinbase")(CB_INSTRUMENTS, venue_id=4)
    a.depth = depth
    return a, CollectingSink(4, recv_ns=RECV, depth=depth)


def _faults(sink):
    return [u["fault"] for u in sink.updates if u.get("fault")]


def test_coinbase_depth_doc_snapshot_then_update():
    a, sink = coinbase_book()
    assert a.supports_depth
    assert a.sockets()[0].subscribe == coinbase().sockets()[0].subscribe    # same channels
    assert a.parse(CB_L2_SNAPSHOT, RECV, sink) is None
    assert not sink.rejects and sink.is_ready(3)
    (book,) = sink.updates                        # bids only: a book, no QUOTE yet
    assert book["kind"] == "book" and book["snapshot"] and book["update_id"] == 0
    assert book["bids"] == [[21921.73, 0.06317902], [21921.3, 0.02]] and book["asks"] == []
    assert book["exchange_ts_ns"] == 1675974770714964855      # epoch placeholder -> envelope
    sink.clear()
    assert a.parse(cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [
        lvl("offer", "21925.01", "0.5"), lvl("offer", "21926", "1.5"),
        lvl("bid", "21921.3", "0")]}]), RECV, sink) is None
    book, quote = sink.updates
    assert book["bids"] == [[21921.73, 0.06317902]] and book["update_id"] == 1
    assert book["asks"] == [[21925.01, 0.5], [21926.0, 1.5]]
    assert_quote(quote, 3, 21921.73, 21925.01, 0.06317902, 0.5, 1785058387419487000)


@pytest.mark.parametrize("frame,kind,symbol,detail_has", [
    (CB_SUBS, "ack", "", "level2:BTC-USD"),
    (CB_ERROR, "error", "DOGE-XYZ", "Failed to subscribe"),
    (CB_HEARTBEAT_DOC, "heartbeat", "", ""),
    (CB_HEARTBEAT_PROD, "heartbeat", "", ""),
])
def test_coinbase_depth_control_frames(frame, kind, symbol, detail_has):
    a, sink = coinbase_book()
    ctl = a.parse(frame, RECV, sink)
    assert ctl is not None and (ctl.kind, ctl.symbol, ctl.reconnect) == (kind, symbol, False)
    assert detail_has in ctl.detail and not sink.updates and not sink.rejects


def test_coinbase_depth_publishes_the_top_n_only():
    a, sink = coinbase_book(depth=2)
    snap = [lvl("bid", str(100 - i), "1") for i in range(5)] + \
        [lvl("offer", str(101 + i), "1") for i in range(5)]
    a.parse(cb_frame(0, [{"type": "snapshot", "product_id": "BTC-USD", "updates": snap}]), RECV, sink)
    assert sink.updates[0]["bids"] == [[100.0, 1.0], [99.0, 1.0]]
    sink.clear()
    # a change below the top 2: applied, nothing to publish
    a.parse(cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [
        lvl("bid", "97", "5")]}]), RECV, sink)
    assert not sink.updates and not sink.rejects and a.applied == 11
    # the best bid removed: the third level comes up
    a.parse(cb_frame(2, [{"type": "update", "product_id": "BTC-USD", "updates": [
        lvl("bid", "100", "0")]}]), RECV, sink)
    assert sink.updates[0]["bids"] == [[99.0, 1.0], [98.0, 1.0]] and sink.updates[1]["bid"] == 99.0


def _two_books(a, sink, seq=0):
    a.parse(cb_frame(seq, [
        {"type": "snapshot", "product_id": "BTC-USD", "updates": [lvl("bid", "10", "1"), lvl("offer", "11", "1")]},
        {"type": "snapshot", "product_id": "ETH-USD", "updates": [lvl("bid", "1", "2"), lvl("offer", "2", "3")]}]),
        RECV, sink)
    assert sink.is_ready(3) and sink.is_ready(4)


def test_coinbase_depth_gap_breaks_every_book_and_reconnects():
    a, sink = coinbase_book()
    _two_books(a, sink, seq=10)
    up = lambda seq, q, p="BTC-USD": cb_frame(seq, [{"type": "update", "product_id": p,
                                                     "updates": [lvl("bid", "10", q)]}])
    assert a.parse(up(11, "2"), RECV, sink) is None
    sink.clear()
    # repeated and older numbers: refused, the books are exact (that frame was applied)
    assert a.parse(up(11, "2"), RECV, sink) is None and a.parse(up(9, "4"), RECV, sink) is None
    assert sink.rejects == {"duplicate": 1, "out_of_order": 1} and not sink.updates
    assert sink.book_of(3).top(1)[0].tolist() == [[10.0, 2.0]]
    ctl = a.parse(up(13, "5", "ETH-USD"), RECV, sink)           # 12 is missing
    assert ctl == Control("resync", detail="GAP", reconnect=True)
    assert sorted(_faults(sink)) == [BookFault.GAP, BookFault.GAP]
    assert sink.resyncs_by_fault == {BookFault.GAP: 2} and not sink.ready
    assert sink.rejects["no_snapshot"] == 1                     # this frame's update too
    assert a.parse(up(14, "6"), RECV, sink) is None and sink.rejects["no_snapshot"] == 2
    # the planned reconnect: a new counter, fresh snapshots
    a.on_connect(0)
    assert a.parse(CB_SUBS, RECV, sink).kind == "ack"
    _two_books(a, sink, seq=1)
    assert a.parse(up(2, "7"), RECV, sink) is None
    assert sink.book_of(3).top(1)[0].tolist() == [[10.0, 7.0]]


def test_coinbase_depth_update_before_snapshot_is_an_early_diff():
    a, sink = coinbase_book()
    ctl = a.parse(cb_frame(0, [{"type": "update", "product_id": "BTC-USD",
                                "updates": [lvl("bid", "1", "1")]}]), RECV, sink)
    assert ctl == Control("resync", symbol="BTC-USD", detail="EARLY_DIFF", reconnect=True)
    assert sink.resyncs_by_fault == {BookFault.EARLY_DIFF: 1}
    # the snapshot that follows on this connection may be older than that update: refused
    a.parse(cb_frame(1, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        lvl("bid", "10", "1"), lvl("offer", "11", "1")]}]), RECV, sink)
    assert sink.rejects == {"out_of_order": 1} and not sink.is_ready(3)
    # other products are not affected
    a.parse(cb_frame(2, [{"type": "snapshot", "product_id": "ETH-USD", "updates": [
        lvl("bid", "1", "1"), lvl("offer", "2", "1")]}]), RECV, sink)
    assert sink.is_ready(4)
    a.on_connect(0)
    a.parse(cb_frame(0, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        lvl("bid", "10", "1"), lvl("offer", "11", "1")]}]), RECV, sink)
    assert sink.is_ready(3)


@pytest.mark.parametrize("event,reason", [
    ({"type": "update", "product_id": "BTC-USD", "updates": [lvl("bid", "nan", "1")]}, "bad_price"),
    ({"type": "update", "product_id": "BTC-USD", "updates": [lvl("bid", "10.5", "1"), lvl("bid", "-1", "1")]}, "bad_price"),
    ({"type": "update", "product_id": "BTC-USD", "updates": [lvl("offer", "12", "1e999")]}, "bad_price"),
    ({"type": "update", "product_id": "BTC-USD", "updates": [lvl("buy", "12", "1")]}, "bad_shape"),
    ({"type": "update", "product_id": "BTC-USD", "updates": [lvl("bid", "x", "1")]}, "bad_shape"),
    ({"type": "update", "product_id": "BTC-USD", "updates": []}, "bad_shape"),
    ({"type": "weird", "product_id": "BTC-USD", "updates": [lvl("bid", "9", "1")]}, "bad_shape"),
    ({"type": "update", "product_id": "BTC-USD"}, "bad_shape"),
    ({"type": "snapshot", "product_id": "BTC-USD", "updates": [lvl("bid", "9", "x")]}, "bad_shape"),
])
def test_coinbase_depth_garbage_resyncs_the_book(event, reason):
    a, sink = coinbase_book()
    _two_books(a, sink)
    before = sink.book_of(3).top()
    sink.clear()
    ctl = a.parse(cb_frame(1, [event]), RECV, sink)
    assert ctl.kind == "resync" and ctl.reconnect and ctl.symbol == "BTC-USD"
    assert sink.rejects == {reason: 1} and _faults(sink) == [BookFault.BAD_DATA]
    assert not sink.is_ready(3) and sink.is_ready(4)           # nothing of it was applied
    assert before[0].tolist() == [[10.0, 1.0]]


@pytest.mark.parametrize("frame,reason", [
    (cb_frame(1, []), "bad_shape"),                                   # numbered, no data
    (cb_frame(1, [{"type": "update", "product_id": "BTC-USDX",
                   "updates": [lvl("bid", "10", "3")]}]), "unknown_symbol"),
    ('{"channel":"l2_data","events":[{"type":"update","product_id":"BTC-USD","updates":[]}]}',
     "bad_shape"),                                                    # no sequence_num
])
def test_coinbase_depth_garbage_of_no_known_book_resyncs_every_book(frame, reason):
    """A frame that used a sequence number (or has none) but whose data cannot be pinned on
    one product: some update may be lost, every synced book is broken."""
    a, sink = coinbase_book()
    _two_books(a, sink)
    sink.clear()
    ctl = a.parse(frame, RECV, sink)
    assert ctl == Control("resync", detail="BAD_DATA", reconnect=True)
    assert sink.rejects == {reason: 1} and not sink.ready
    assert sink.resyncs_by_fault == {BookFault.BAD_DATA: 2}


def test_coinbase_depth_crossed_update_is_bad_data():
    a, sink = coinbase_book()
    _two_books(a, sink)
    ctl = a.parse(cb_frame(1, [{"type": "update", "product_id": "BTC-USD",
                                "updates": [lvl("bid", "12", "1")]}]), RECV, sink)
    assert ctl.kind == "resync" and ctl.reconnect
    assert sink.resyncs_by_fault == {BookFault.BAD_DATA: 1} and not sink.is_ready(3)


# ------------------------------------- a reference venue, and hypothesis-generated streams
class CoinbaseVenue:
    """A pure-Python Coinbase ``level2``: a book per product (a dict per side, ticks ->
    lots, sizes absolute), one ``sequence_num`` counter per connection."""

    def __init__(self, products):
        self.books = {p: ({}, {}) for p in products}
        self.seq = 0

    def frame(self, events, channel="l2_data"):
        f = cb_frame(self.seq, events, channel=channel)
        self.seq += 1
        return f

    def snapshot(self, p):
        b, a = self.books[p]
        ups = [lvl("bid", fixed(t, 2), fixed(q, 4)) for t, q in sorted(b.items(), reverse=True)]
        ups += [lvl("offer", fixed(t, 2), fixed(q, 4)) for t, q in sorted(a.items())]
        return {"type": "snapshot", "product_id": p, "updates": ups}

    def update(self, p, ops):
        b, a = self.books[p]
        ups = []
        for is_bid, t, q in ops:
            side = b if is_bid else a
            if q:
                side[t] = q
            else:
                side.pop(t, None)
            ups.append(lvl("bid" if is_bid else "offer", fixed(t, 2), fixed(q, 4)))
        return {"type": "update", "product_id": p, "updates": ups}

    def top(self, p, n):
        b, a = self.books[p]
        fl = lambda rows: [[float(fixed(t, 2)), float(fixed(q, 4))] for t, q in rows[:n]]
        return fl(sorted(b.items(), reverse=True)), fl(sorted(a.items()))


_CB_LEVEL = st.tuples(st.booleans(), st.integers(1, 30), st.sampled_from([0, 0, 1, 5, 12345, 10**9]))
_CB_OP = st.one_of(
    st.tuples(st.just("update"), st.booleans(), st.lists(_CB_LEVEL, min_size=1, max_size=5)),
    st.tuples(st.just("gap"), st.booleans(), st.lists(_CB_LEVEL, min_size=1, max_size=3)),
    st.tuples(st.just("dup"), st.booleans(), st.none()),
    st.tuples(st.just("old"), st.booleans(), st.none()),
    st.tuples(st.just("heartbeat"), st.booleans(), st.none()),
    st.tuples(st.just("garbage"), st.booleans(), st.none()),
    st.tuples(st.just("early"), st.booleans(), st.lists(_CB_LEVEL, min_size=1, max_size=3)),
)


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.lists(_CB_LEVEL, max_size=40), ops=st.lists(_CB_OP, max_size=40))
def test_coinbase_book_matches_a_reference_venue(initial, ops):
    """After every message each product's book (top N, through CollectingSink) equals the
    reference venue's, or it is not ready and was marked so for the fault the message
    deserved; a resync (a new connection) makes it exact again."""
    n = 5
    a, sink = coinbase_book(n)
    products = {"BTC-USD": 3, "ETH-USD": 4}
    venue = CoinbaseVenue(products)
    place = lambda ops_: [(b, t if b else t + 30, q) for b, t, q in ops_]   # never crossed
    for p in products:
        venue.update(p, place(initial))
    sent = []

    def deliver(frame, expect=()):
        r0 = dict(sink.resyncs_by_fault)
        ctl = a.parse(frame, RECV, sink)
        assert "parse_error" not in sink.rejects
        new = {k for k, v in sink.resyncs_by_fault.items() if v != r0.get(k, 0)}
        assert new <= set(expect), (new, expect)
        for k in new:
            event(f"fault {BookFault(k).name}")
        sent.append(frame)
        check()
        if ctl is not None and ctl.kind == "resync":
            assert ctl.reconnect
            reconnect()
        return ctl

    def reconnect(early=None):
        a.on_connect(0)                  # the worker's planned reconnect (books stay as they are)
        venue.seq = 0
        deliver(venue.frame([{"subscriptions": {"level2": list(products)}}], "subscriptions"))
        for p in products:
            if p == early:
                deliver(venue.frame([venue.update(p, place([(True, 1, 3)]))]),
                        expect=(BookFault.EARLY_DIFF,))
            deliver(venue.frame([venue.snapshot(p)]))

    def check():
        for p, iid in products.items():
            if sink.is_ready(iid):
                b, s = sink.book_of(iid).top(n)
                assert (b.tolist(), s.tolist()) == venue.top(p, n), p

    reconnect()
    for op, which, arg in ops:
        p = "BTC-USD" if which else "ETH-USD"
        if op == "update":
            deliver(venue.frame([venue.update(p, place(arg))]))
        elif op == "gap":
            venue.frame([venue.update(p, place(arg))])      # numbered, never delivered
            deliver(venue.frame([], "heartbeats").replace('"events": []', '"events": [{}]'),
                    expect=(BookFault.GAP,))
        elif op == "dup" and sent:
            rej = sum(sink.rejects.values())
            deliver(sent[-1])
            assert sum(sink.rejects.values()) == rej + 1
        elif op == "old" and len(sent) > 1:
            deliver(sent[0])
        elif op == "heartbeat":
            deliver(venue.frame([{"current_time": "x", "heartbeat_counter": venue.seq}], "heartbeats"))
        elif op == "garbage":
            deliver(venue.frame([{"type": "update", "product_id": p,
                                  "updates": [lvl("bid", "NaN", "1")]}]), expect=(BookFault.BAD_DATA,))
        elif op == "early":                  # a new connection whose first diff of p
            deliver(venue.frame([venue.update(p, place(arg))]))    # precedes p's snapshot
            reconnect(early=p)
    for iid in products.values():
        assert sink.is_ready(iid)
