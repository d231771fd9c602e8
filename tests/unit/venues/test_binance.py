"""Binance spot and USD-M adapters against the documented frames of docs/venues.md
("Binance"), plus sequencing, malformed input and a fuzz of the never-raise contract.
L2 books (depth > 0): the documented diff and REST snapshot frames, every sync rule and
fault, and hypothesis-generated streams (snapshots, diffs, gaps, repeats, garbage, stale and
bridging snapshots, reconnects) checked after every message against a pure-Python
reference book (``DepthVenue``, shared with test_gate.py)."""
from __future__ import annotations

import json

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from arbpipe.feeds.venues.base import Control
from arbpipe.feeds.venues.binance import MAX_STALE
from arbpipe.feeds.venues.registry import get
from arbpipe.feeds.venues.sink import CollectingSink
from arbpipe.symbols import Instrument
from shm_layouts import Flag, Kind
from shm_layouts.records import BookFault
from tests.unit.venues.common_binance_bybit import (
    CONCAT_SYMBOLS, FUZZ, MS, RECV, VENUE, check_contract, feed, funding, json_mutated_frame,
    make, mutated_frame, only_reject, quote)

# ---------------------------------------------------------------------------------------
# Documented frames (docs/venues.md), verbatim
# ---------------------------------------------------------------------------------------
BN_SPOT_RAW = """{
  "u": 400900217,
  "s": "BNBUSDT",
  "b": "25.35190000",
  "B": "31.21000000",
  "a": "25.36520000",
  "A": "40.66000000"
}"""
BN_SPOT_COMBINED = ('{"stream":"bnbusdt@bookTicker","data":{"u":400900217,"s":"BNBUSDT",'
                    '"b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}}')
BN_ACK = '{"result": null, "id": 1}'
BN_LIST_SUBS = '{"result":["btcusdt@aggTrade"],"id":3}'
BN_GET_PROPERTY = '{"result":true,"id":2}'
BN_ERR_STREAM = '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}'
BN_ERR_JSON = '{"error":{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}}'
BN_ERR_BARE = '{"code": 0, "msg": "Unknown property","id": 7}'   # doc table's inner object
BN_SHUTDOWN_RAW = '{"e":"serverShutdown","E":1770123456789}'
BN_SHUTDOWN_COMBINED = ('{"stream":"!serverShutdown","data":{"e":"serverShutdown",'
                        '"E":1770123456789}}')
BN_USDM_ACK = '{"result":null,"id":3}'
BN_USDM_BOOK = """{
  "e":"bookTicker",
  "u":400900217,
  "E": 1568014460893,
  "T": 1568014460891,
  "s":"BNBUSDT",
  "b":"25.35190000",
  "B":"31.21000000",
  "a":"25.36520000",
  "A":"40.66000000"
}"""
BN_USDM_MARK = """{
  "e": "markPriceUpdate",
  "E": 1562305380000,
  "s": "BTCUSDT",
  "p": "11794.15000000",
  "i": "11784.62659091",
  "P": "11784.25641265",
  "r": "0.00038167",
  "T": 1562306400000
}"""

BNB_Q = dict(bid=25.3519, ask=25.3652, bid_qty=31.21, ask_qty=40.66)


def bn_book(u=400900217, s="BNBUSDT", b="25.35190000", B="31.21000000", a="25.36520000",
            A="40.66000000", **extra):
    return json.dumps({"u": u, "s": s, "b": b, "B": B, "a": a, "A": A, **extra})


# ---------------------------------------------------------------------------------------
# Registry, sockets, symbols
# ---------------------------------------------------------------------------------------
def test_registry_names_and_markets():
    assert {n: get(n).market for n in ("binance", "binance-usdm")} == {
        "binance": "spot", "binance-usdm": "perp"}


def test_binance_spot_socket_subscribes_lowercase_streams():
    (spec,) = make("binance").sockets()
    assert spec.path == "/ws"
    assert spec.ping_text is None and spec.ping_interval_s == 0
    assert [json.loads(f) for f in spec.subscribe] == [
        {"method": "SUBSCRIBE", "id": 1,
         "params": ["bnbusdt@bookTicker", "btcusdt@bookTicker", "ethusdt@bookTicker"]}]


def test_binance_subscribe_is_chunked_with_distinct_ids():
    insts = [Instrument(f"C{k}USDT", k) for k in range(450)]
    (spec,) = get("binance")(insts).sockets()
    frames = [json.loads(f) for f in spec.subscribe]
    assert [f["id"] for f in frames] == [1, 2, 3]
    assert [len(f["params"]) for f in frames] == [200, 200, 50]
    assert frames[2]["params"][-1] == "c449usdt@bookTicker"


def test_binance_usdm_two_routed_sockets():
    public, market = make("binance-usdm").sockets()
    assert (public.path, market.path) == ("/public/ws", "/market/ws")
    assert json.loads(public.subscribe[0]) == {
        "method": "SUBSCRIBE", "id": 1,
        "params": ["bnbusdt@bookTicker", "btcusdt@bookTicker", "ethusdt@bookTicker"]}
    assert json.loads(market.subscribe[0]) == {
        "method": "SUBSCRIBE", "id": 2,
        "params": ["bnbusdt@markPrice@1s", "btcusdt@markPrice@1s", "ethusdt@markPrice@1s"]}
    assert public.ping_text is None and market.ping_text is None


@pytest.mark.parametrize("name", ["binance", "binance-usdm"])
@pytest.mark.parametrize("native,canonical", CONCAT_SYMBOLS)
def test_native_to_canonical(name, native, canonical):
    assert get(name).native_to_canonical(native) == canonical


# ---------------------------------------------------------------------------------------
# Binance spot
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", [BN_SPOT_RAW, BN_SPOT_COMBINED, BN_SPOT_RAW.encode(),
                                   BN_SPOT_COMBINED.encode()])
def test_binance_spot_book_ticker(frame):
    ctrl, sink = feed(make("binance"), frame)
    assert ctrl is None and not sink.rejects
    assert sink.updates == [quote(11, **BNB_Q, ts_ns=0, flags=Flag.NO_EXCHANGE_TS)]


@pytest.mark.parametrize("frame,kind,detail", [
    (BN_ACK, "ack", "id=1"),
    (BN_USDM_ACK, "ack", "id=3"),
    (BN_LIST_SUBS, "other", "btcusdt@aggTrade"),
    (BN_GET_PROPERTY, "other", "True"),
    (BN_ERR_STREAM, "error", "code 2: Invalid request: invalid stream (id=1)"),
    (BN_ERR_JSON, "error", "code 3: Invalid JSON: expected value at line 1 column 1"),
    (BN_ERR_BARE, "error", "code 0: Unknown property"),
])
@pytest.mark.parametrize("name", ["binance", "binance-usdm"])
def test_binance_control_frames(name, frame, kind, detail):
    ctrl, sink = feed(make(name), frame)
    assert isinstance(ctrl, Control) and ctrl.kind == kind and not ctrl.reconnect
    assert detail in ctrl.detail
    assert sink.updates == [] and not sink.rejects


@pytest.mark.parametrize("frame", [BN_SHUTDOWN_RAW, BN_SHUTDOWN_COMBINED])
@pytest.mark.parametrize("name", ["binance", "binance-usdm"])
def test_binance_server_shutdown_asks_reconnect(name, frame):
    ctrl, sink = feed(make(name), frame)
    assert ctrl.kind == "notice" and ctrl.reconnect is True
    assert "serverShutdown" in ctrl.detail
    assert sink.updates == [] and not sink.rejects


def test_binance_sequence_per_symbol_and_reset_on_connect():
    ad = make("binance")
    assert len(feed(ad, bn_book(u=10))[1].updates) == 1
    only_reject(feed(ad, bn_book(u=10))[1], "duplicate")
    only_reject(feed(ad, bn_book(u=9))[1], "out_of_order")
    other = feed(ad, bn_book(u=5, s="BTCUSDT", b="1", a="2"))[1]   # independent symbol
    assert [u["instrument_id"] for u in other.updates] == [21]
    assert feed(ad, bn_book(u=11))[1].updates[0]["bid"] == 25.3519
    ad.on_connect(0)
    assert len(feed(ad, bn_book(u=3))[1].updates) == 1            # new connection


# ---------------------------------------------------------------------------------------
# Binance USD-M
# ---------------------------------------------------------------------------------------
def test_binance_usdm_book_ticker_uses_transaction_time():
    ctrl, sink = feed(make("binance-usdm"), BN_USDM_BOOK, 0)
    assert ctrl is None and not sink.rejects
    assert sink.updates == [quote(11, **BNB_Q, ts_ns=1568014460891 * MS, flags=0)]


@pytest.mark.parametrize("extra", [{}, {"ap": "11790.1"}])
def test_binance_usdm_mark_price_funding(extra):
    frame = json.dumps({**json.loads(BN_USDM_MARK), **extra})
    ctrl, sink = feed(make("binance-usdm"), frame, 1)
    assert ctrl is None and not sink.rejects
    assert sink.updates == [funding(21, 0.00038167, 1562306400000 * MS, 28800, 11794.15,
                                    1562305380000 * MS)]


def test_binance_usdm_funding_interval_is_configurable_and_delivery_has_none():
    ad = make("binance-usdm")
    ad.funding_interval_s = 14400
    assert feed(ad, BN_USDM_MARK, 1)[1].updates[0]["funding_interval_s"] == 14400
    delivery = json.dumps({**json.loads(BN_USDM_MARK), "r": "", "T": 0, "E": 1562305390000})
    only_reject(feed(ad, delivery, 1)[1], "no_funding")


def test_binance_usdm_sequences_are_per_socket():
    ad = make("binance-usdm")
    mark = json.loads(BN_USDM_MARK)
    assert feed(ad, BN_USDM_BOOK, 0)[1].updates
    assert feed(ad, BN_USDM_MARK, 1)[1].updates
    only_reject(feed(ad, BN_USDM_BOOK, 0)[1], "duplicate")
    only_reject(feed(ad, BN_USDM_MARK, 1)[1], "duplicate")
    only_reject(feed(ad, json.dumps({**mark, "E": mark["E"] - 1000}), 1)[1], "out_of_order")
    ad.on_connect(1)                           # market socket reconnected: funding only
    assert feed(ad, BN_USDM_MARK, 1)[1].updates
    only_reject(feed(ad, BN_USDM_BOOK, 0)[1], "duplicate")
    ad.on_connect(0)
    assert feed(ad, BN_USDM_BOOK, 0)[1].updates


# ---------------------------------------------------------------------------------------
# Malformed input: each counted by the right reason
# ---------------------------------------------------------------------------------------
def _usdm_mark(**kw):
    return json.dumps({**json.loads(BN_USDM_MARK), **kw})


MALFORMED = [
    # not JSON / truncated
    ("binance", b"", "not_json"), ("binance", b"hello", "not_json"),
    ("binance", b"\xff\xfe\x00", "not_json"), ("binance", BN_SPOT_RAW[:-7], "not_json"),
    ("binance", "\ud800", "not_json"), ("binance-usdm", BN_USDM_MARK[:40], "not_json"),
    # wrong shape / types
    ("binance", "[1, 2]", "bad_shape"), ("binance", "{}", "bad_shape"),
    ("binance", bn_book(u="400900217"), "bad_shape"),
    ("binance", bn_book(b=25.3519), "bad_shape"),
    ("binance", bn_book(b="abc"), "bad_shape"), ("binance", bn_book(s=""), "bad_shape"),
    ("binance", '{"u": 5, "s": "BNBUSDT"}', "bad_shape"),
    ("binance", '{"stream": "x", "data": [1]}', "bad_shape"),
    ("binance-usdm", _usdm_mark(r=0.1), "bad_shape"),
    ("binance-usdm", _usdm_mark(E=0), "bad_shape"),
    # prices and quantities
    ("binance", bn_book(b="NaN"), "bad_price"), ("binance", bn_book(a="inf"), "bad_price"),
    ("binance", bn_book(b="-25.3"), "bad_price"), ("binance", bn_book(b="0"), "bad_price"),
    ("binance", bn_book(B="-1"), "bad_price"), ("binance", bn_book(A="nan"), "bad_price"),
    ("binance-usdm", _usdm_mark(p="-1"), "bad_price"),
    ("binance-usdm", _usdm_mark(r="nan"), "bad_price"),
    # crossed
    ("binance", bn_book(b="25.40"), "crossed"), ("binance-usdm", bn_book(b="26"), "crossed"),
    # unknown symbol / topic
    ("binance", bn_book(s="DOGEUSDT"), "unknown_symbol"),
    ("binance-usdm", _usdm_mark(s="DOGEUSDT"), "unknown_symbol"),
    # timestamps that do not fit ns in an i8
    ("binance-usdm", json.dumps({**json.loads(BN_USDM_BOOK), "T": 10**16}), "bad_ts"),
]


@pytest.mark.parametrize("name,frame,reason", MALFORMED,
                         ids=[f"{n}-{r}-{k}" for k, (n, _, r) in enumerate(MALFORMED)])
def test_malformed_counted(name, frame, reason):
    ad = make(name)
    for si in (0, 1) if name == "binance-usdm" else (0,):
        ctrl, sink = feed(ad, frame, si)
        assert ctrl is None
        only_reject(sink, reason)


# ---------------------------------------------------------------------------------------
# Fuzz: parse never raises; every frame yields an update, a Control or a counted reject
# ---------------------------------------------------------------------------------------
ADAPTERS = [("binance", 0), ("binance-usdm", 0), ("binance-usdm", 1)]
VALID = {
    "binance": [BN_SPOT_RAW, BN_SPOT_COMBINED, BN_ACK, BN_ERR_STREAM, BN_SHUTDOWN_COMBINED],
    "binance-usdm": [BN_USDM_BOOK, BN_USDM_MARK, BN_USDM_ACK, BN_ERR_JSON, BN_SHUTDOWN_RAW],
}
PRIME = {"binance": [], "binance-usdm": []}


@FUZZ
@given(adapter=st.sampled_from(ADAPTERS), frame=st.one_of(st.binary(max_size=300),
                                                          st.text(max_size=300)))
def test_fuzz_random_input(adapter, frame):
    check_contract(*adapter, frame, primed=False, prime=PRIME)


@FUZZ
@given(case=mutated_frame(ADAPTERS, VALID))
def test_fuzz_mutated_frames(case):
    name, si, frame, primed = case
    check_contract(name, si, frame, primed, PRIME)


@FUZZ
@given(case=json_mutated_frame(ADAPTERS, VALID))
def test_fuzz_json_mutations(case):
    name, si, frame, primed = case
    check_contract(name, si, frame, primed, PRIME)


def test_binance_book_ticker_stream_one_quote_per_frame():
    """Every bookTicker frame of a stream is one sink.quote, and again after a reconnect
    resets the ``u`` dedupe (the per-frame cost is a figure of ``arbpipe bench feeds``)."""
    ad = make("binance")
    sink = CollectingSink(recv_ns=RECV)
    frames = [bn_book(u=k).encode() for k in range(1, 2001)]
    for _ in range(2):
        ad.on_connect(0)
        sink.clear()
        for f in frames:
            ad.parse(f, RECV, sink)
        assert len(sink.updates) == len(frames) and not sink.rejects
    ad.parse(frames[-1], RECV, sink)                      # no reconnect: a duplicate now
    assert sink.rejects == {"duplicate": 1} and len(sink.updates) == len(frames)


# =======================================================================================
# L2 books (depth > 0): @depth@100ms diffs + the REST snapshot (docs/venues.md, "Binance",
# "L2 book"); the reference book and the generated streams are shared with test_gate.py
# =======================================================================================
# the documented example frames, verbatim but for the docs' // comments (spot Diff. Depth
# Stream, USD-M Diff. Book Depth Streams, the REST GET /api/v3/depth and /fapi/v1/depth
# responses)
BN_DEPTH_SPOT_DOC = """{
  "e": "depthUpdate",
  "E": 1672515782136,
  "s": "BNBBTC",
  "U": 157,
  "u": 160,
  "b": [
    [
      "0.0024",
      "10"
    ]
  ],
  "a": [
    [
      "0.0026",
      "100"
    ]
  ]
}"""
BN_DEPTH_USDM_DOC = """{
  "e": "depthUpdate",
  "E": 123456789,
  "T": 123456788,
  "s": "BTCUSDT",
  "U": 157,
  "u": 160,
  "pu": 149,
  "b": [
    [
      "0.0024",
      "10"
    ]
  ],
  "a": [
    [
      "0.0026",
      "100"
    ]
  ]
}"""
BN_REST_SPOT_DOC = """{
    "lastUpdateId": 1027024,
    "bids": [
        [
            "4.00000000",
            "431.00000000"
        ]
    ],
    "asks": [["4.00000200", "12.00000000"]]
}"""
BN_REST_USDM_DOC = """{
  "lastUpdateId": 1027024,
  "E": 1589436922972,
  "T": 1589436922959,
  "bids": [
    [
      "4.00000000",
      "431.00000000"
    ]
  ],
  "asks": [
    [
      "4.00000200",
      "12.00000000"
    ]
  ]
}"""

DEPTH_IDS = {"BNBBTC": 31, "BTCUSDT": 21, "ETHUSDT": 22}


def make_depth(name, depth=5, ids=DEPTH_IDS):
    ad = get(name)([Instrument(n, i) for n, i in ids.items()], venue_id=VENUE)
    ad.depth = depth
    return ad


def depth_sink(depth=5):
    return CollectingSink(venue_id=VENUE, recv_ns=RECV, depth=depth)


def books_of(sink, kind="book"):
    return [u for u in sink.updates if u["kind"] == kind]


def statuses_of(sink):
    return [u for u in sink.updates if u["kind"] == int(Kind.STATUS)]


def test_depth_sockets_subscribe_diff_streams_and_rest_paths():
    spot, usdm = make_depth("binance"), make_depth("binance-usdm")
    (spec,) = spot.sockets()
    assert spec.path == "/ws" and json.loads(spec.subscribe[0])["params"] == [
        "bnbbtc@depth@100ms", "btcusdt@depth@100ms", "ethusdt@depth@100ms"]
    public, market = usdm.sockets()
    assert public.path == "/public/ws" and json.loads(public.subscribe[0])["params"] == [
        "bnbbtc@depth@100ms", "btcusdt@depth@100ms", "ethusdt@depth@100ms"]
    assert json.loads(market.subscribe[0])["params"][0] == "bnbbtc@markPrice@1s"
    assert spot.supports_depth and usdm.supports_depth
    assert spot.default_rest_url == "https://api.binance.com"
    assert usdm.default_rest_url == "https://fapi.binance.com"
    assert spot.rest_snapshot_path("BTCUSDT") == "/api/v3/depth?symbol=BTCUSDT&limit=1000"
    assert usdm.rest_snapshot_path("BTCUSDT") == "/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
    assert spot.resubscribe("BTCUSDT") == []
    # depth 0: exactly the BBO subscription of before
    assert json.loads(make("binance").sockets()[0].subscribe[0])["params"][0] == \
        "bnbusdt@bookTicker"


def test_depth_spot_documented_frames_buffer_snapshot_then_apply():
    ad, sink = make_depth("binance"), depth_sink()
    ctl = ad.parse(BN_DEPTH_SPOT_DOC, RECV, sink)          # buffered; the snapshot is asked for
    assert ctl.kind == "resync" and ctl.symbol == "BNBBTC" and not ctl.reconnect
    assert sink.updates == [] and not sink.rejects and ad.applied == 1
    snap = '{"lastUpdateId": 156, "bids": [["0.0024", "3"], ["0.0023", "7"]], ' \
           '"asks": [["0.0026", "5"], ["0.0027", "9"]]}'
    assert ad.on_rest_snapshot("BNBBTC", snap.encode(), sink) is None
    snapshot, diff = books_of(sink)
    assert snapshot["snapshot"] and snapshot["update_id"] == 156 and snapshot["exchange_ts_ns"] == 0
    assert diff == dict(kind="book", instrument_id=31, snapshot=False,
                        bids=[[0.0024, 10.0], [0.0023, 7.0]], asks=[[0.0026, 100.0], [0.0027, 9.0]],
                        update_id=160, exchange_ts_ns=1672515782136 * MS)
    assert sink.is_ready(31) and sink.book_of(31).update_id == 160
    q = [u for u in sink.updates if u["kind"] == Kind.QUOTE]
    assert (q[-1]["bid"], q[-1]["bid_qty"], q[-1]["ask"], q[-1]["ask_qty"]) == \
        (0.0024, 10, 0.0026, 100)
    # the next diff continues at U = 161; the combined wrapper is the same
    nxt = json.dumps({"stream": "bnbbtc@depth@100ms", "data": {
        **json.loads(BN_DEPTH_SPOT_DOC), "U": 161, "u": 161, "b": [["0.0024", "0"]], "a": []}})
    assert ad.parse(nxt, RECV, sink) is None
    assert books_of(sink)[-1]["bids"] == [[0.0023, 7.0]] and not sink.rejects


def test_depth_spot_rest_doc_snapshot_covers_older_diffs():
    ad, sink = make_depth("binance"), depth_sink()
    ad.parse(BN_DEPTH_SPOT_DOC.replace("BNBBTC", "BTCUSDT"), RECV, sink)
    assert ad.on_rest_snapshot("BTCUSDT", BN_REST_SPOT_DOC.encode(), sink) is None
    (snapshot,) = books_of(sink)                   # the buffered 157..160 is covered: dropped
    assert (snapshot["bids"], snapshot["asks"], snapshot["update_id"]) == (
        [[4.0, 431.0]], [[4.000002, 12.0]], 1027024)
    first = json.dumps({**json.loads(BN_DEPTH_SPOT_DOC), "s": "BTCUSDT", "U": 1027020,
                        "u": 1027030, "b": [["4.00000000", "0"], ["3.9", "1"]], "a": []})
    assert ad.parse(first, RECV, sink) is None            # straddles lastUpdateId + 1
    assert books_of(sink)[-1]["bids"] == [[3.9, 1.0]] and sink.book_of(21).update_id == 1027030


def test_depth_usdm_documented_frames_pu_chain():
    ad, sink = make_depth("binance-usdm"), depth_sink()
    assert ad.parse(BN_DEPTH_USDM_DOC, RECV, sink, 0).kind == "resync"
    # U <= lastUpdateId <= u: 157 <= 158 <= 160 (USD-M straddles lastUpdateId itself)
    body = json.dumps({**json.loads(BN_REST_USDM_DOC), "lastUpdateId": 158,
                       "bids": [["0.0023", "5"]], "asks": [["0.0027", "3"]]})
    assert ad.on_rest_snapshot("BTCUSDT", body.encode(), sink) is None
    snapshot, diff = books_of(sink)
    assert snapshot["exchange_ts_ns"] == 1589436922959 * MS            # T
    assert diff["exchange_ts_ns"] == 123456788 * MS and diff["update_id"] == 160
    assert diff["bids"] == [[0.0024, 10.0], [0.0023, 5.0]]
    assert diff["asks"] == [[0.0026, 100.0], [0.0027, 3.0]]
    nxt = dict(json.loads(BN_DEPTH_USDM_DOC), U=161, u=165, pu=160, b=[["0.0024", "0"]], a=[])
    assert ad.parse(json.dumps(nxt), RECV, sink, 0) is None and sink.is_ready(21)
    # pu must equal the previous u: 165 was last, pu=164 is a gap
    bad = dict(nxt, U=166, u=170, pu=164)
    ctl = ad.parse(json.dumps(bad), RECV, sink, 0)
    assert ctl.kind == "resync" and ctl.symbol == "BTCUSDT" and "gap" in ctl.detail
    assert not sink.is_ready(21) and sink.resyncs_by_fault == {int(BookFault.GAP): 1}
    st = statuses_of(sink)[-1]
    assert st["fault"] == BookFault.GAP and st["instrument_id"] == 21
    # the documented REST body: newer than the diff buffered since the gap (dropped)
    assert ad.on_rest_snapshot("BTCUSDT", BN_REST_USDM_DOC.encode(), sink) is None
    assert sink.is_ready(21) and sink.book_of(21).update_id == 1027024
    assert books_of(sink)[-1]["bids"] == [[4.0, 431.0]]
    assert books_of(sink)[-1]["exchange_ts_ns"] == 1589436922959 * MS


def test_depth_usdm_rest_doc_lastupdateid_equal_to_u_is_kept():
    """USD-M drops only u < lastUpdateId: a diff ending at lastUpdateId is applied."""
    ad, sink = make_depth("binance-usdm"), depth_sink()
    ad.parse(BN_DEPTH_USDM_DOC, RECV, sink, 0)
    body = json.dumps({**json.loads(BN_REST_USDM_DOC), "lastUpdateId": 160,
                       "bids": [["0.0023", "5"]], "asks": [["0.0027", "3"]]})
    assert ad.on_rest_snapshot("BTCUSDT", body.encode(), sink) is None
    assert [b["update_id"] for b in books_of(sink)] == [160, 160]


def _spot_diff(U, u, b=(), a=(), s="BTCUSDT"):
    return json.dumps({"e": "depthUpdate", "E": 1672515782136, "s": s, "U": U, "u": u,
                       "b": [list(x) for x in b], "a": [list(x) for x in a]})


def _spot_snap(last, b=(("10", "1"),), a=(("11", "1"),)):
    return json.dumps({"lastUpdateId": last, "bids": [list(x) for x in b],
                       "asks": [list(x) for x in a]}).encode()


def _synced_spot(last=100):
    ad, sink = make_depth("binance"), depth_sink()
    assert ad.parse(_spot_diff(last + 1, last + 2, [("10", "2")]), RECV, sink).kind == "resync"
    assert ad.on_rest_snapshot("BTCUSDT", _spot_snap(last), sink) is None
    assert sink.is_ready(21) and sink.book_of(21).update_id == last + 2
    return ad, sink


def test_depth_spot_gap_marks_not_ready_and_the_next_snapshot_heals():
    ad, sink = _synced_spot()
    ctl = ad.parse(_spot_diff(104, 105, [("10", "3")]), RECV, sink)          # 103 missing
    assert ctl.kind == "resync" and "gap" in ctl.detail and not sink.is_ready(21)
    assert statuses_of(sink)[-1]["fault"] == BookFault.GAP
    assert ad.parse(_spot_diff(106, 106, [("9", "1")]), RECV, sink) is None    # buffered
    assert ad.on_rest_snapshot("BTCUSDT", _spot_snap(105, b=[("10", "3")]), sink) is None
    assert sink.is_ready(21) and sink.book_of(21).update_id == 106
    assert books_of(sink)[-1]["bids"] == [[10.0, 3.0], [9.0, 1.0]]


@pytest.mark.parametrize("frame", [_spot_diff(101, 102, [("10", "2")]),        # the same again
                                   _spot_diff(102, 102, [("10", "2")])])       # overlapping
def test_depth_spot_duplicate_or_overlap_is_a_gap(frame):
    ad, sink = _synced_spot()
    ctl = ad.parse(frame, RECV, sink)
    assert ctl.kind == "resync" and "duplicate" in ctl.detail and not sink.is_ready(21)
    assert sink.resyncs_by_fault == {int(BookFault.GAP): 1}


def test_depth_spot_stale_snapshot_is_fetched_again_with_the_buffer_kept():
    ad, sink = make_depth("binance"), depth_sink()
    ad.parse(_spot_diff(201, 203, [("10", "5")]), RECV, sink)
    ad.parse(_spot_diff(204, 204, [("9", "4")]), RECV, sink)
    ctl = ad.on_rest_snapshot("BTCUSDT", _spot_snap(199), sink)          # 199 + 1 < 201
    assert ctl.kind == "resync" and "stale" in ctl.detail and not sink.is_ready(21)
    assert sink.resyncs_by_fault == {int(BookFault.STALE_SNAPSHOT): 1}
    assert books_of(sink) == [] and statuses_of(sink) == []              # never was ready
    assert ad.on_rest_snapshot("BTCUSDT", _spot_snap(200), sink) is None  # 200 + 1 = U: bridges
    assert sink.book_of(21).update_id == 204
    assert books_of(sink)[-1]["bids"] == [[10.0, 5.0], [9.0, 4.0]]


def test_depth_spot_snapshot_newer_than_the_buffer_then_first_diff_must_straddle():
    ad, sink = make_depth("binance"), depth_sink()
    ad.parse(_spot_diff(201, 203), RECV, sink)
    assert ad.on_rest_snapshot("BTCUSDT", _spot_snap(210), sink) is None
    assert sink.is_ready(21) and sink.book_of(21).update_id == 210
    assert ad.parse(_spot_diff(204, 209), RECV, sink) is None           # covered: dropped
    assert ad.parse(_spot_diff(210, 212, [("10", "8")]), RECV, sink) is None   # 210 <= 211 <= 212
    assert sink.book_of(21).update_id == 212 and not sink.rejects
    # a snapshot with no buffered diff at all, and a first diff after it: STALE_SNAPSHOT
    ad2, sink2 = make_depth("binance"), depth_sink()
    assert ad2.on_rest_snapshot("BTCUSDT", _spot_snap(50), sink2) is None
    ctl = ad2.parse(_spot_diff(60, 61), RECV, sink2)
    assert ctl.kind == "resync" and sink2.resyncs_by_fault == {int(BookFault.STALE_SNAPSHOT): 1}


def test_depth_bad_rest_body_is_snapshot_failed_and_fetched_again():
    ad, sink = make_depth("binance"), depth_sink()
    ad.parse(_spot_diff(1, 2), RECV, sink)
    for body, reason in [(b"<html>502</html>", "not_json"), (b'{"code":-1121}', "bad_shape"),
                         (b'{"lastUpdateId":-5,"bids":[],"asks":[]}', "bad_shape"),
                         (b'{"lastUpdateId":1,"bids":"x","asks":[]}', "bad_shape")]:
        sink.rejects.clear()
        ctl = ad.on_rest_snapshot("BTCUSDT", body, sink)
        assert ctl.kind == "resync" and "snapshot_failed" in ctl.detail
        assert dict(sink.rejects) == {reason: 1}
    assert sink.resyncs_by_fault == {int(BookFault.SNAPSHOT_FAILED): 4}
    # garbage levels: the sink refuses the snapshot (BAD_DATA), fetched again
    ctl = ad.on_rest_snapshot("BTCUSDT", _spot_snap(1, b=[("abc", "1")]), sink)
    assert ctl.kind == "resync" and sink.resyncs_by_fault[int(BookFault.BAD_DATA)] == 1
    assert ad.on_rest_snapshot("BTCUSDT", _spot_snap(1), sink) is None and sink.is_ready(21)
    assert ad.on_rest_snapshot("NOSUCH", _spot_snap(1), sink) is None


def test_depth_garbage_diff_of_a_ready_book_resyncs():
    ad, sink = _synced_spot()
    ctl = ad.parse(_spot_diff(103, 103, [("10", "nan")]), RECV, sink)   # levels it cannot apply
    assert ctl.kind == "resync" and not sink.is_ready(21)
    assert sink.resyncs_by_fault == {int(BookFault.BAD_DATA): 1}
    ad, sink = _synced_spot()
    ctl = ad.parse(_spot_diff(103, 103, [("12", "1")]), RECV, sink)     # bid 12 > ask 11: crossed
    assert ctl.kind == "resync" and sink.resyncs_by_fault == {int(BookFault.BAD_DATA): 1}
    ad, sink = _synced_spot()
    ctl = ad.parse(_spot_diff(105, 103), RECV, sink)                    # U > u
    assert ctl.kind == "resync" and sink.rejects == {"bad_shape": 1}
    assert sink.resyncs_by_fault == {int(BookFault.BAD_DATA): 1}
    ad, sink = _synced_spot()
    ctl = ad.parse(json.dumps({**json.loads(_spot_diff(103, 103)), "E": 10**17}), RECV, sink)
    assert ctl.kind == "resync" and sink.rejects == {"bad_ts": 1}


def test_depth_reconnect_and_a_sink_gone_not_ready_resync():
    ad, sink = _synced_spot()
    ad.on_connect(0)                        # a planned swap: no socket_down, books still ready
    ctl = ad.parse(_spot_diff(103, 103), RECV, sink)
    assert ctl.kind == "resync" and not sink.is_ready(21)
    assert sink.resyncs_by_fault == {int(BookFault.RECONNECT): 1}
    assert ad.on_rest_snapshot("BTCUSDT", _spot_snap(102), sink) is None and sink.is_ready(21)
    sink.book_broken(21, BookFault.RECONNECT)     # what Feed.socket_down does (USD-M socket 1)
    ctl = ad.parse(_spot_diff(104, 104), RECV, sink)
    assert ctl.kind == "resync" and "not ready" in ctl.detail
    assert "no_snapshot" not in sink.rejects
    # usdm: a reconnect of the mark-price socket leaves the depth state alone
    u = make_depth("binance-usdm")
    usink = depth_sink()
    u.parse(json.dumps(dict(json.loads(BN_DEPTH_USDM_DOC))), RECV, usink, 0)
    u.on_connect(1)
    assert u.books.syms["BTCUSDT"].buf


def test_depth_buffer_rules_duplicates_and_gaps_while_waiting():
    ad, sink = make_depth("binance"), depth_sink()
    ad.parse(_spot_diff(10, 11), RECV, sink)
    assert ad.parse(_spot_diff(10, 11), RECV, sink) is None and sink.rejects == {"duplicate": 1}
    assert ad.parse(_spot_diff(13, 14), RECV, sink) is None            # 12 lost: buffer restarts
    assert sink.resyncs_by_fault == {int(BookFault.GAP): 1}
    assert [d[0] for d in ad.books.syms["BTCUSDT"].buf] == [13]
    assert ad.parse(_spot_diff(9, 9), RECV, sink) is None               # out of order: again
    assert sink.resyncs_by_fault == {int(BookFault.GAP): 2}
    assert [d[0] for d in ad.books.syms["BTCUSDT"].buf] == [9]
    assert ad.parse(_spot_diff(10, 12), RECV, sink) is None
    assert ad.on_rest_snapshot("BTCUSDT", _spot_snap(7), sink).kind == "resync"   # stale
    assert ad.on_rest_snapshot("BTCUSDT", _spot_snap(8), sink) is None
    assert sink.book_of(21).update_id == 12


def test_depth_stale_snapshots_in_a_row_start_the_buffer_over():
    """A diff with garbage ids (u far ahead) cannot keep a book from syncing for ever:
    after MAX_STALE stale verdicts in a row the buffer starts over."""
    ad, sink = _synced_spot(100)
    assert ad.parse(_spot_diff(103, 10**12), RECV, sink) is None     # chains: applied (garbage)
    assert ad.parse(_spot_diff(104, 104), RECV, sink).kind == "resync"   # 104 <= 10**12
    for k in range(MAX_STALE):                                       # seen 10**12: stale
        ctl = ad.on_rest_snapshot("BTCUSDT", _spot_snap(110), sink)
        assert ctl.kind == "resync" and "stale" in ctl.detail
    assert "starts over" in ctl.detail
    assert sink.resyncs_by_fault[int(BookFault.STALE_SNAPSHOT)] == MAX_STALE
    # nothing seen since: the snapshot is held until a diff can tell whether it bridges
    assert ad.on_rest_snapshot("BTCUSDT", _spot_snap(110), sink) is None
    assert not sink.is_ready(21)
    assert ad.parse(_spot_diff(111, 111), RECV, sink) is None and sink.is_ready(21)
    assert sink.book_of(21).update_id == 111


def test_depth_snapshot_before_any_diff_is_judged_by_the_next_one():
    ad, sink = make_depth("binance"), depth_sink()
    assert ad.on_rest_snapshot("BTCUSDT", _spot_snap(50), sink) is None   # held
    assert not sink.is_ready(21) and books_of(sink) == []
    assert ad.parse(_spot_diff(40, 45), RECV, sink) is None     # covered, not after it: set
    assert sink.is_ready(21) and sink.book_of(21).update_id == 50
    assert ad.parse(_spot_diff(46, 52, [("10", "4")]), RECV, sink) is None
    assert sink.is_ready(21) and sink.book_of(21).update_id == 52
    assert books_of(sink)[-1]["bids"] == [[10.0, 4.0]]


def test_depth_mode_refuses_book_tickers_and_bbo_mode_refuses_diffs():
    ad, sink = make_depth("binance"), depth_sink()
    assert ad.parse(BN_SPOT_RAW.replace("BNBUSDT", "BTCUSDT"), RECV, sink) is None
    assert sink.rejects == {"unsupported": 1} and sink.updates == []
    ctl, sink = feed(make("binance"), BN_DEPTH_SPOT_DOC)     # depth 0: as before books
    assert ctl is None and only_reject(sink, "bad_shape") is None


DEPTH_MALFORMED = [
    ('{"e":"depthUpdate","s":"BTCUSDT","U":1,"pu":0,"b":[],"a":[]}', "bad_shape"),  # no u
    ('{"e":"depthUpdate","s":"BTCUSDT","U":"1","u":2,"pu":0,"b":[],"a":[]}', "bad_shape"),
    ('{"e":"depthUpdate","s":"BTCUSDT","U":1,"u":2,"pu":0,"b":"x","a":[]}', "bad_shape"),
    ('{"e":"depthUpdate","s":"DOGEUSDT","U":1,"u":2,"pu":0,"b":[],"a":[]}', "unknown_symbol"),
    ('{"e":"depthUpdate","s":"BTCUSDT","U":1,"u":%d,"pu":0,"b":[],"a":[]}' % 2**63, "bad_shape"),
    ('{"e":"depthUpdate","s":"","U":1,"u":2,"pu":0,"b":[],"a":[]}', "bad_shape"),
    ('{"e":"depthUpdate","s":"BTCUSDT","U":1,"u":2,"pu":0,"E":-1,"b":[],"a":[]}', "bad_ts"),
]


@pytest.mark.parametrize("frame,reason", DEPTH_MALFORMED)
def test_depth_malformed_counted(frame, reason):
    ad, sink = make_depth("binance"), depth_sink()
    assert ad.parse(frame, RECV, sink) is None
    only_reject(sink, reason)
    ad, sink = make_depth("binance-usdm"), depth_sink()
    assert ad.parse(frame, RECV, sink, 0) is None
    only_reject(sink, reason)


def test_depth_usdm_needs_pu():
    ad, sink = make_depth("binance-usdm"), depth_sink()
    assert ad.parse(_spot_diff(1, 2), RECV, sink, 0) is None
    only_reject(sink, "bad_shape")


# ---------------------------------------------------------------------------------------
# A pure-Python reference book and generated streams (hypothesis): after every message the
# adapter's book equals the reference's top N, or it was marked not ready for the right fault
# ---------------------------------------------------------------------------------------
N = 5
BEST_BID, BEST_ASK = 9_999, 10_001      # bids stay at or below, asks at or above: never crossed


class DepthVenue:
    """A venue's true book: a dict per side (price ticks -> size), changed by updates that
    consume 1..3 update ids each; the frames and REST bodies in the venue's shape; the
    truth after every update id (the reference)."""

    def __init__(self, kind: str, symbol: str, levels: int = 30, first_id: int = 1000):
        self.kind, self.symbol = kind, symbol
        self.bids = {BEST_BID - 3 * k: (k % 7) + 1 for k in range(levels)}
        self.asks = {BEST_ASK + 3 * k: (k % 5) + 1 for k in range(levels)}
        self.id = first_id
        self.truth = {first_id: self._copy()}

    def _copy(self):
        return dict(self.bids), dict(self.asks)

    @staticmethod
    def px(t):
        return f"{t / 100:.2f}"

    def top(self, at_id, n=N):
        b, a = self.truth[at_id]
        return ([[t / 100, float(q)] for t, q in sorted(b.items(), reverse=True)[:n]],
                [[t / 100, float(q)] for t, q in sorted(a.items())[:n]])

    def update(self, ops, span: int) -> tuple[str, int, int]:
        """Apply ``ops`` ((side, what, value)); -> (frame, U, u)."""
        rows = ([], [])
        for side, what, value in ops:
            book = self.asks if side else self.bids
            if what == "del" and book:           # the value-th best level goes: deeper ones show
                ordered = sorted(book) if side else sorted(book, reverse=True)
                t = ordered[min(value, len(ordered) - 1)]
                del book[t]
                rows[side].append([self.px(t), "0"])
            elif what == "set":
                t = (BEST_ASK + value) if side else (BEST_BID - value)
                qty = 1 + (value * 7) % 13
                book[t] = qty
                rows[side].append([self.px(t), str(qty)])
        U, u, pu = self.id + 1, self.id + span, self.id
        self.id = u
        self.truth[u] = self._copy()
        return self.frame(U, u, pu, rows[0], rows[1]), U, u

    def frame(self, U, u, pu, b, a) -> str:
        if self.kind == "gate":
            return json.dumps({"time": 1606294781, "time_ms": 1606294781123,
                               "channel": "spot.order_book_update", "event": "update",
                               "result": {"t": 1606294781123, "e": "depthUpdate", "E": 1606294781,
                                          "s": self.symbol, "U": U, "u": u, "b": b, "a": a}})
        body = {"e": "depthUpdate", "E": 1672515782136, "s": self.symbol, "U": U, "u": u,
                "b": b, "a": a}
        if self.kind == "binance-usdm":
            body.update(T=1672515782135, pu=pu)
        return json.dumps(body)

    def body(self, at_id) -> bytes:
        b, a = self.truth[at_id]
        bids = [[self.px(t), str(q)] for t, q in sorted(b.items(), reverse=True)]
        asks = [[self.px(t), str(q)] for t, q in sorted(a.items())]
        if self.kind == "gate":
            return json.dumps({"id": at_id, "current": 1623898993123, "update": 1623898993121,
                               "asks": asks, "bids": bids}).encode()
        return json.dumps({"lastUpdateId": at_id, "bids": bids, "asks": asks}).encode()


OPS = st.lists(st.tuples(st.integers(0, 1), st.sampled_from(["del", "set", "set"]),
                         st.integers(0, 40)), min_size=1, max_size=6)
STEPS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["diff", "diff", "diff", "diff", "drop", "garbage"]), OPS,
              st.integers(1, 3)),
    st.tuples(st.sampled_from(["dup", "snap", "snap", "stale", "bridge", "reconnect"]),
              st.integers(0, 10**6))), min_size=1, max_size=50)


def run_depth_stream(adapter, symbol, iid, steps, kind, socket_index=0):
    """Drive ``adapter`` (depth ``N``) through ``steps`` as the runtime would (the REST
    snapshot only while a resync is asked for) and check every message against the
    reference (``DepthVenue``): whenever the book is ready its top N is the reference's at
    the book's update id; a break of the venue's rules marks it not ready for its fault; a
    current snapshot (or an older one the buffered diffs bridge) makes it ready; a snapshot
    older than the buffer is STALE_SNAPSHOT. Returns the sink."""
    v = DepthVenue(kind, symbol)
    sink = depth_sink(N)
    pu_chain = kind == "binance-usdm"
    asked = False                          # a snapshot request is in flight
    seen = -1                              # the newest u delivered on this connection
    last_frame = None
    garbage: set[int] = set()              # u of the diffs delivered with garbage levels

    def faults():
        return dict(sink.resyncs_by_fault)

    def plus(f0, fault):
        return {**f0, int(fault): f0.get(int(fault), 0) + 1}

    def parse(frame):
        nonlocal asked
        ctl = adapter.parse(frame, RECV, sink, socket_index)
        assert ctl is None or ctl.kind == "resync"
        if ctl is not None:
            assert ctl.symbol == symbol
            asked = True
        return ctl

    def rest(at_id):
        nonlocal asked
        asked = False
        ctl = adapter.on_rest_snapshot(symbol, v.body(at_id), sink)
        if ctl is not None:
            assert ctl.kind == "resync" and ctl.symbol == symbol
            asked = True
        return ctl

    def state():
        return adapter.books.syms.get(symbol)

    def buffered():
        s = state()
        return list(s.buf) if s is not None and s.state != 2 else []

    def check():
        if sink.is_ready(iid):
            fb = sink.book_of(iid)
            b, a = fb.top()
            assert (b.tolist(), a.tolist()) == v.top(fb.update_id), fb.update_id

    for step in steps:
        what = step[0]
        ready0, f0 = sink.is_ready(iid), faults()
        id0 = sink.book_of(iid).update_id if ready0 else None
        s0 = state()
        first0 = ready0 and s0 is not None and s0.first
        buffered0 = s0 is not None and s0.buffered
        if what in ("diff", "drop", "garbage"):
            frame, U, u = v.update(step[1], step[2])
            if what == "drop":                 # made, never delivered: the next one skips its ids
                continue
            if what == "garbage":             # valid JSON, a level that is not a number
                obj = json.loads(frame)
                body = obj["result"] if kind == "gate" else obj
                body["b"].insert(0, ["abc", "1"])
                frame = json.dumps(obj)
                garbage.add(u)
            chains = ready0 and U == id0 + 1
            seen = max(seen, u)
            ctl = parse(frame)
            last_frame = frame
            if ready0 and chains and what == "diff":
                assert ctl is None and sink.is_ready(iid) and faults() == f0
            elif ready0:
                assert ctl is not None and not sink.is_ready(iid)
                if chains:
                    want = BookFault.BAD_DATA
                elif first0 and not buffered0:
                    want = BookFault.STALE_SNAPSHOT
                else:
                    want = BookFault.GAP
                assert faults() == plus(f0, want)
                assert statuses_of(sink)[-1]["fault"] == want
                event(f"ready book broken: {want.name}")
        elif what == "dup" and last_frame is not None:
            ctl = parse(last_frame)
            if ready0 and not first0:              # (right after a snapshot it is covered)
                assert ctl is not None and not sink.is_ready(iid)
                assert faults() == plus(f0, BookFault.GAP)
        elif what == "snap" and asked:
            # the current book: in sync (USD-M applies the buffered diff that ends at it)
            reapplied = [d for d in buffered() if pu_chain and d[1] == v.id]
            blind = s0 is None or (s0.seen < 0 and not s0.buf)
            ctl = rest(v.id)
            if blind:                     # nothing seen to judge it by: held for a diff
                assert ctl is None and not sink.is_ready(iid) and state().held is not None
            elif any(d[1] in garbage for d in reapplied):
                assert ctl is not None and faults() == plus(f0, BookFault.BAD_DATA)
            else:
                assert ctl is None and sink.is_ready(iid)
                assert sink.book_of(iid).update_id == v.id
                event("current snapshot")
        elif what == "stale" and asked:
            # older than the buffer can bridge, or (nothing buffered) than a diff seen
            limit = buffered()[0][0] - 1 if buffered() else seen
            older = [k for k in v.truth if k < limit]
            if older:
                ctl = rest(older[step[1] % len(older)])
                assert ctl is not None and not sink.is_ready(iid)
                assert faults() == plus(f0, BookFault.STALE_SNAPSHOT)
                if "starts over" in ctl.detail:       # MAX_STALE in a row: all forgotten
                    seen = -1
                event("stale snapshot refused")
        elif what == "bridge" and asked and buffered():
            buf = buffered()
            lo = buf[0][0] - 1
            ids = [k for k in v.truth if lo <= k <= buf[-1][1]]
            if ids:                       # an older snapshot the buffered diffs bridge
                at = ids[step[1] % len(ids)]
                ctl = rest(at)
                if any((d[1] >= at if pu_chain else d[1] > at) and d[1] in garbage
                       for d in buf):
                    assert ctl is not None and not sink.is_ready(iid)
                    assert faults() == plus(f0, BookFault.BAD_DATA)
                else:
                    assert ctl is None and sink.is_ready(iid)
                    assert sink.book_of(iid).update_id == max(at, buf[-1][1])
                    event("older snapshot bridged by the buffer")
        elif what == "reconnect":
            sink.book_broken(iid, BookFault.RECONNECT)      # Feed.socket_down
            adapter.on_connect(socket_index)
            seen = -1
        check()
    # afterwards the book is exact again: the runtime's snapshot, then a diff
    frame, _, _ = v.update([(0, "set", 1)], 1)
    parse(frame)
    if asked:
        rest(v.id)
    frame, _, _ = v.update([(1, "del", 0)], 2)
    assert parse(frame) is None
    assert sink.is_ready(iid) and sink.book_of(iid).update_id == v.id
    check()
    return sink


@FUZZ
@given(steps=STEPS, name=st.sampled_from(["binance", "binance-usdm"]))
def test_depth_generated_streams_match_the_reference_book(steps, name):
    run_depth_stream(make_depth(name, N), "BTCUSDT", 21, steps, name)
