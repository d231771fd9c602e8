"""Binance spot and USD-M adapters against the documented frames of docs/venues.md
("Binance"), plus sequencing, malformed input and a fuzz of the never-raise contract."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbpipe.feeds.venues.base import Control
from arbpipe.feeds.venues.registry import get
from arbpipe.feeds.venues.sink import CollectingSink
from arbpipe.symbols import Instrument
from shm_layouts import Flag
from tests.unit.venues.common_binance_bybit import (
    CONCAT_SYMBOLS, FUZZ, MS, RECV, check_contract, feed, funding, json_mutated_frame, make,
    mutated_frame, only_reject, quote)

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
