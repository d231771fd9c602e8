"""Binance and Bybit adapters against the documented frames of docs/venues.md (sections
1 and 2), plus sequencing, malformed input and a fuzz of the never-raise contract."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbpipe.feeds.venues.registry import get
from arbpipe.feeds.venues.base import Control
from arbpipe.symbols import Instrument
from arbpipe.feeds.venues.sink import CollectingSink
from shm_layouts import Flag, Kind
from shm_layouts.records import MARKET_UPDATE, MARKET_UPDATE_FUNDING

RECV = 1_700_000_000_123_456_789
VENUE = 3
IDS = {"BNBUSDT": 11, "BTCUSDT": 21, "ETHUSDT": 22}
MS = 1_000_000


def make(name: str):
    return get(name)([Instrument(n, i) for n, i in IDS.items()], venue_id=VENUE)


def feed(adapter, frame, socket_index=0):
    sink = CollectingSink(venue_id=VENUE, recv_ns=RECV)
    ctrl = adapter.parse(frame, RECV, sink, socket_index)
    return ctrl, sink


def quote(iid, bid, ask, bid_qty, ask_qty, ts_ns, flags):
    return dict(kind=int(Kind.QUOTE), instrument_id=iid, venue_id=VENUE, bid=bid, ask=ask,
                bid_qty=bid_qty, ask_qty=ask_qty, exchange_ts_ns=ts_ns, recv_ts_ns=RECV,
                flags=int(flags))


def funding(iid, rate, next_ns, interval_s, mark, ts_ns):
    return dict(kind=int(Kind.FUNDING), instrument_id=iid, venue_id=VENUE, funding_rate=rate,
                next_funding_ns=next_ns, funding_interval_s=interval_s, mark_price=mark,
                exchange_ts_ns=ts_ns, recv_ts_ns=RECV)


def only_reject(sink, reason):
    assert sink.updates == []
    assert dict(sink.rejects) == {reason: 1}


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

BY_ACK_SPOT = ('{"success": true, "ret_msg": "subscribe", "conn_id": '
               '"2324d924-aa4d-45b0-a858-7b8be29ab52b", "req_id": "10001", "op": "subscribe"}')
BY_ACK_LINEAR = ('{"success": true, "ret_msg": "", "conn_id": '
                 '"3cd84cb1-4d06-4a05-930a-2efe5fc70f0f", "req_id": "", "op": "subscribe"}')
BY_SUB_FAIL = ('{"success": false, "ret_msg": "error:handler not found,topic:dcp.future", '
               '"conn_id": "d9jhogatbetvf6evjmc0-8eoj", "req_id": "dcp.future", '
               '"op": "subscribe"}')
BY_PONG_SPOT = ('{"success": true, "ret_msg": "pong", "conn_id": '
                '"0970e817-426e-429a-a679-ff7f55e0b16a", "op": "ping"}')
BY_PONG_LINEAR = ('{"success": true, "ret_msg": "pong", "conn_id": '
                  '"465772b1-7630-4fdc-a492-e003e6f0f260", "req_id": "", "op": "ping"}')
BY_OB50_DOC = """{
    "topic": "orderbook.50.BTCUSDT",
    "type": "snapshot",
    "ts": 1672304484978,
    "data": {
        "s": "BTCUSDT",
        "b": [["16493.50", "0.006"], ["16493.00", "0.100"]],
        "a": [["16611.00", "0.029"], ["16612.00", "0.213"]],
    "u": 18521288,
    "seq": 7961638724
    },
    "cts": 1672304484976
}"""
BY_OB1 = ('{"topic":"orderbook.1.BTCUSDT","ts":1672304484978,"type":"snapshot","data":'
          '{"s":"BTCUSDT","b":[["16493.50","0.006"]],"a":[["16611.00","0.029"]],'
          '"u":18521288,"seq":7961638724},"cts":1672304484976}')
BY_TICKER_SNAPSHOT = """{
  "topic": "tickers.BTCUSDT",
  "type": "snapshot",
  "data": {
    "symbol": "BTCUSDT",
    "tickDirection": "MinusTick",
    "price24hPcnt": "-0.158315",
    "lastPrice": "66666.60",
    "prevPrice24h": "79206.20",
    "highPrice24h": "79266.30",
    "lowPrice24h": "65076.90",
    "prevPrice1h": "66666.60",
    "markPrice": "66666.60",
    "indexPrice": "115418.19",
    "openInterest": "492373.72",
    "openInterestValue": "32824881841.75",
    "turnover24h": "4936790807.6521",
    "volume24h": "73191.3870",
    "fundingIntervalHour": "8",
    "fundingCap": "0.005",
    "nextFundingTime": "1760342400000",
    "fundingRate": "-0.005",
    "bid1Price": "66666.60",
    "bid1Size": "23789.165",
    "ask1Price": "66666.70",
    "ask1Size": "23775.469",
    "preOpenPrice": "",
    "preQty": "",
    "curPreListingPhase": ""
  },
  "cs": 9532239429,
  "ts": 1760325052630
}"""
BY_TICKER_DELTA = ('{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT",'
                   '"bid1Price":"66666.50","bid1Size":"12.001","ask1Price":"66666.60",'
                   '"ask1Size":"3.500"},"cs":9532239430,"ts":1760325052730}')
BY_TICKER_SPOT = """{"topic": "tickers.BTCUSDT", "ts": 1673853746003, "type": "snapshot", "cs": 2588407389,
 "data": {"symbol": "BTCUSDT", "lastPrice": "21109.77", "highPrice24h": "21426.99", "lowPrice24h": "20575",
          "prevPrice24h": "20704.93", "volume24h": "6780.866843", "turnover24h": "141946527.22907118",
          "price24hPcnt": "0.0196", "usdIndexPrice": "21120.2400136"}}"""

BNB_Q = dict(bid=25.3519, ask=25.3652, bid_qty=31.21, ask_qty=40.66)


def ob1(u=18521288, ts=1672304484978, bid="16493.50", bid_qty="0.006", ask="16611.00",
        ask_qty="0.029", sym="BTCUSDT", kind="snapshot"):
    return json.dumps({"topic": f"orderbook.1.{sym}", "ts": ts, "type": kind,
                       "data": {"s": sym, "b": [[bid, bid_qty]], "a": [[ask, ask_qty]],
                                "u": u, "seq": 7961638724}, "cts": ts - 2})


def tick(data, cs, ts, kind="delta", sym="BTCUSDT"):
    return json.dumps({"topic": f"tickers.{sym}", "type": kind,
                       "data": {"symbol": sym, **data}, "cs": cs, "ts": ts})


def bn_book(u=400900217, s="BNBUSDT", b="25.35190000", B="31.21000000", a="25.36520000",
            A="40.66000000", **extra):
    return json.dumps({"u": u, "s": s, "b": b, "B": B, "a": a, "A": A, **extra})


# ---------------------------------------------------------------------------------------
# Registry, sockets, symbols
# ---------------------------------------------------------------------------------------
def test_registry_names_and_markets():
    assert {n: get(n).market for n in ("binance", "binance-usdm", "bybit-spot",
                                        "bybit-linear")} == {
        "binance": "spot", "binance-usdm": "perp", "bybit-spot": "spot",
        "bybit-linear": "perp"}


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


@pytest.mark.parametrize("name,path,topic", [("bybit-spot", "/v5/public/spot", "orderbook.1."),
                                             ("bybit-linear", "/v5/public/linear", "tickers.")])
def test_bybit_socket_subscribe_and_ping(name, path, topic):
    (spec,) = make(name).sockets()
    assert spec.path == path
    assert json.loads(spec.ping_text) == {"op": "ping"} and spec.ping_interval_s == 20
    assert [json.loads(f) for f in spec.subscribe] == [
        {"req_id": f"{topic}{s}", "op": "subscribe", "args": [f"{topic}{s}"]} for s in IDS]


@pytest.mark.parametrize("name", ["binance", "binance-usdm", "bybit-spot", "bybit-linear"])
@pytest.mark.parametrize("native,canonical", [
    ("BTCUSDT", "BTC/USDT"), ("ETHBTC", "ETH/BTC"), ("BTCFDUSD", "BTC/FDUSD"),
    ("SOLUSDC", "SOL/USDC"), ("1000PEPEUSDT", "1000PEPE/USDT"), ("ETHUSD", "ETH/USD"),
    ("BTCUSDT_250627", None), ("BTC-26DEC25", None), ("USDT", None), ("FOOBAR", None)])
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
# Bybit control frames
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bybit-spot", "bybit-linear"])
@pytest.mark.parametrize("frame,kind", [(BY_ACK_SPOT, "ack"), (BY_ACK_LINEAR, "ack"),
                                        (BY_PONG_SPOT, "pong"), (BY_PONG_LINEAR, "pong")])
def test_bybit_acks_and_pongs(name, frame, kind):
    ctrl, sink = feed(make(name), frame)
    assert ctrl.kind == kind and ctrl.symbol == "" and not ctrl.reconnect
    assert sink.updates == [] and not sink.rejects


def test_bybit_failed_subscribe_names_topic():
    ctrl, sink = feed(make("bybit-spot"), BY_SUB_FAIL)
    assert ctrl.kind == "error" and "dcp.future" in ctrl.detail
    assert "handler not found" in ctrl.detail and ctrl.symbol == ""
    assert sink.updates == [] and not sink.rejects


@pytest.mark.parametrize("ret_msg,req_id", [
    ("Params Error", "orderbook.1.FOOUSDT"),                     # topic only in our req_id
    ("error:handler not found,topic:orderbook.1.FOOUSDT", ""),   # topic only in ret_msg
    ("error:handler not found,topic:orderbook.1.FOOUSDT;error:handler not found,"
     "topic:orderbook.1.BARUSDT", "sub-1"),                      # several failures joined
])
def test_bybit_failed_subscribe_names_symbol(ret_msg, req_id):
    frame = json.dumps({"success": False, "ret_msg": ret_msg, "conn_id": "x",
                        "req_id": req_id, "op": "subscribe"})
    ctrl, _ = feed(make("bybit-spot"), frame)
    assert ctrl.kind == "error" and ctrl.symbol == "FOOUSDT"
    assert "orderbook.1.FOOUSDT" in ctrl.detail and ret_msg in ctrl.detail


# ---------------------------------------------------------------------------------------
# Bybit orderbook.1 (spot)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", [BY_OB1, BY_OB50_DOC, BY_OB1.encode()])
def test_bybit_orderbook_snapshot_top_level(frame):
    ctrl, sink = feed(make("bybit-spot"), frame)
    assert ctrl is None and not sink.rejects
    assert sink.updates == [quote(21, 16493.5, 16611.0, 0.006, 0.029, 1672304484976 * MS,
                                  Flag.SNAPSHOT)]


def test_bybit_orderbook_resend_duplicate_out_of_order_restart():
    ad = make("bybit-spot")
    assert len(feed(ad, ob1())[1].updates) == 1
    only_reject(feed(ad, ob1())[1], "duplicate")                 # same frame twice
    resend = feed(ad, ob1(ts=1672304484978 + 3000))[1]           # idle re-send, same u
    assert not resend.rejects
    assert resend.updates == [quote(21, 16493.5, 16611.0, 0.006, 0.029,
                                    (1672304484978 + 3000 - 2) * MS, Flag.SNAPSHOT)]
    only_reject(feed(ad, ob1(ts=1672304484978 + 1000))[1], "out_of_order")   # older re-send
    only_reject(feed(ad, ob1(u=18521287, ts=1672304490000))[1], "out_of_order")
    assert len(feed(ad, ob1(u=18521289, ts=1672304490000))[1].updates) == 1
    assert len(feed(ad, ob1(u=1, ts=1672304490001))[1].updates) == 1       # service restart
    assert len(feed(ad, ob1(u=2, ts=1672304490002))[1].updates) == 1
    ad.on_connect(0)
    assert len(feed(ad, ob1(u=2, ts=1672304490002))[1].updates) == 1


def test_bybit_orderbook_empty_side_and_delta():
    ad = make("bybit-spot")
    empty = json.loads(BY_OB1)
    empty["data"]["a"] = []
    only_reject(feed(ad, json.dumps(empty))[1], "empty_book")
    only_reject(feed(ad, ob1(kind="delta"))[1], "unsupported")


def test_bybit_spot_ticker_has_no_bbo():
    only_reject(feed(make("bybit-spot"), BY_TICKER_SPOT)[1], "no_bbo")
    only_reject(feed(make("bybit-linear"), BY_TICKER_SPOT)[1], "no_bbo")


# ---------------------------------------------------------------------------------------
# Bybit tickers (linear): snapshot + delta merging
# ---------------------------------------------------------------------------------------
SNAP_TS = 1760325052630 * MS
NEXT_FUNDING = 1760342400000 * MS


def test_bybit_linear_snapshot_quote_and_funding():
    ctrl, sink = feed(make("bybit-linear"), BY_TICKER_SNAPSHOT)
    assert ctrl is None and not sink.rejects
    assert sink.updates == [
        quote(21, 66666.60, 66666.70, 23789.165, 23775.469, SNAP_TS, Flag.SNAPSHOT),
        funding(21, -0.005, NEXT_FUNDING, 28800, 66666.60, SNAP_TS)]


def test_bybit_linear_delta_fixture():
    ad = make("bybit-linear")
    feed(ad, BY_TICKER_SNAPSHOT)
    ctrl, sink = feed(ad, BY_TICKER_DELTA)
    assert ctrl is None and not sink.rejects
    assert sink.updates == [quote(21, 66666.50, 66666.60, 12.001, 3.5, 1760325052730 * MS, 0)]


def test_bybit_linear_delta_keeps_absent_fields():
    ad = make("bybit-linear")
    feed(ad, BY_TICKER_SNAPSHOT)
    feed(ad, BY_TICKER_DELTA)
    sink = feed(ad, tick({"ask1Price": "66667.00", "ask1Size": "1.25"}, 9532239431,
                         1760325052830))[1]
    assert sink.updates == [quote(21, 66666.50, 66667.00, 12.001, 1.25, 1760325052830 * MS, 0)]
    sink = feed(ad, tick({"fundingRate": "0.0001", "fundingIntervalHour": "4"}, 9532239432,
                         1760325052930))[1]
    ts = 1760325052930 * MS
    assert sink.updates == [quote(21, 66666.50, 66667.00, 12.001, 1.25, ts, 0),
                            funding(21, 0.0001, NEXT_FUNDING, 14400, 66666.60, ts)]
    sink = feed(ad, tick({"lastPrice": "1.0"}, 9532239432, 1760325053030))[1]   # cs unmoved
    assert sink.updates == [quote(21, 66666.50, 66667.00, 12.001, 1.25,
                                  1760325053030 * MS, 0)]


def test_bybit_linear_sequence_and_reset():
    ad = make("bybit-linear")
    feed(ad, BY_TICKER_SNAPSHOT)
    feed(ad, BY_TICKER_DELTA)
    only_reject(feed(ad, BY_TICKER_DELTA)[1], "duplicate")
    only_reject(feed(ad, tick({"bid1Price": "1"}, 9532239429, 1760325052999))[1],
                "out_of_order")
    ad.on_connect(0)                       # merged state is per connection
    only_reject(feed(ad, tick({"ask1Price": "66667.00"}, 9532239440, 1760325060000))[1],
                "no_bbo")
    assert len(feed(ad, BY_TICKER_SNAPSHOT)[1].updates) == 2


def test_bybit_linear_dated_future_has_no_funding():
    ad = make("bybit-linear")
    snap = json.loads(BY_TICKER_SNAPSHOT)
    snap["data"].update(fundingRate="", nextFundingTime="")
    sink = feed(ad, json.dumps(snap))[1]
    assert [u["kind"] for u in sink.updates] == [Kind.QUOTE] and not sink.rejects


def test_bybit_linear_bad_delta_is_counted_and_state_follows_venue():
    ad = make("bybit-linear")
    feed(ad, BY_TICKER_SNAPSHOT)
    only_reject(feed(ad, tick({"bid1Price": "66670.00"}, 9532239430, 1760325052730))[1],
                "crossed")
    sink = feed(ad, tick({"ask1Price": "66671.00"}, 9532239431, 1760325052830))[1]
    assert [(u["bid"], u["ask"]) for u in sink.updates] == [(66670.0, 66671.0)]


# ---------------------------------------------------------------------------------------
# Malformed input: each counted by the right reason
# ---------------------------------------------------------------------------------------
def _usdm_mark(**kw):
    return json.dumps({**json.loads(BN_USDM_MARK), **kw})


def _ob(**kw):
    return ob1(**kw)


def _snap(**fields):
    snap = json.loads(BY_TICKER_SNAPSHOT)
    snap["data"].update(fields)
    return json.dumps(snap)


MALFORMED = [
    # not JSON / truncated
    ("binance", b"", "not_json"), ("binance", b"hello", "not_json"),
    ("binance", b"\xff\xfe\x00", "not_json"), ("binance", BN_SPOT_RAW[:-7], "not_json"),
    ("binance", "\ud800", "not_json"), ("binance-usdm", BN_USDM_MARK[:40], "not_json"),
    ("bybit-spot", BY_OB1[:-1], "not_json"), ("bybit-spot", b"pong", "not_json"),
    ("bybit-linear", BY_TICKER_DELTA[:60], "not_json"),
    ("bybit-linear", "\udcff{}", "not_json"),
    # wrong shape / types
    ("binance", "[1, 2]", "bad_shape"), ("binance", "{}", "bad_shape"),
    ("binance", bn_book(u="400900217"), "bad_shape"),
    ("binance", bn_book(b=25.3519), "bad_shape"),
    ("binance", bn_book(b="abc"), "bad_shape"), ("binance", bn_book(s=""), "bad_shape"),
    ("binance", '{"u": 5, "s": "BNBUSDT"}', "bad_shape"),
    ("binance", '{"stream": "x", "data": [1]}', "bad_shape"),
    ("binance-usdm", _usdm_mark(r=0.1), "bad_shape"),
    ("binance-usdm", _usdm_mark(E=0), "bad_shape"),
    ("bybit-spot", "[]", "bad_shape"), ("bybit-spot", "{}", "bad_shape"),
    ("bybit-spot", '{"topic": "orderbook.1.BTCUSDT", "type": "snapshot"}', "bad_shape"),
    ("bybit-spot", _ob().replace('"u": 18521288', '"u": "x"'), "bad_shape"),
    ("bybit-spot", _ob().replace('[["16493.50", "0.006"]]', '"16493.50"'), "bad_shape"),
    ("bybit-spot", _ob().replace('"ts": 1672304484978', '"ts": "1"'), "bad_shape"),
    ("bybit-spot", _ob(kind="partial"), "bad_shape"),
    ("bybit-linear", tick({"bid1Price": 66666.5}, 1, 2), "bad_shape"),
    ("bybit-linear", tick({"fundingRate": "0.1", "nextFundingTime": "soon"}, 1, 2),
     "bad_shape"),
    # prices and quantities
    ("binance", bn_book(b="NaN"), "bad_price"), ("binance", bn_book(a="inf"), "bad_price"),
    ("binance", bn_book(b="-25.3"), "bad_price"), ("binance", bn_book(b="0"), "bad_price"),
    ("binance", bn_book(B="-1"), "bad_price"), ("binance", bn_book(A="nan"), "bad_price"),
    ("binance-usdm", _usdm_mark(p="-1"), "bad_price"),
    ("binance-usdm", _usdm_mark(r="nan"), "bad_price"),
    ("bybit-spot", _ob(bid="NaN"), "bad_price"), ("bybit-spot", _ob(ask="-16611"), "bad_price"),
    ("bybit-spot", _ob(ask_qty="-0.029"), "bad_price"), ("bybit-spot", _ob(bid="0"), "bad_price"),
    ("bybit-linear", _snap(bid1Price="NaN", markPrice="1", fundingRate=""), "bad_price"),
    ("bybit-linear", _snap(ask1Size="-3", fundingRate=""), "bad_price"),
    # crossed
    ("binance", bn_book(b="25.40"), "crossed"), ("binance-usdm", bn_book(b="26"), "crossed"),
    ("bybit-spot", _ob(bid="16700"), "crossed"),
    ("bybit-linear", _snap(bid1Price="70000", fundingRate=""), "crossed"),
    # unknown symbol / topic
    ("binance", bn_book(s="DOGEUSDT"), "unknown_symbol"),
    ("binance-usdm", _usdm_mark(s="DOGEUSDT"), "unknown_symbol"),
    ("bybit-spot", _ob(sym="DOGEUSDT"), "unknown_symbol"),
    ("bybit-linear", tick({}, 1, 2, sym="DOGEUSDT"), "unknown_symbol"),
    ("bybit-spot", _ob().replace("orderbook.1.", "publicTrade."), "unknown_topic"),
    # timestamps that do not fit ns in an i8
    ("binance-usdm", json.dumps({**json.loads(BN_USDM_BOOK), "T": 10**16}), "bad_ts"),
    ("bybit-spot", _ob(ts=10**16), "bad_ts"),
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
ADAPTERS = [("binance", 0), ("binance-usdm", 0), ("binance-usdm", 1), ("bybit-spot", 0),
            ("bybit-linear", 0)]
VALID = {
    "binance": [BN_SPOT_RAW, BN_SPOT_COMBINED, BN_ACK, BN_ERR_STREAM, BN_SHUTDOWN_COMBINED],
    "binance-usdm": [BN_USDM_BOOK, BN_USDM_MARK, BN_USDM_ACK, BN_ERR_JSON, BN_SHUTDOWN_RAW],
    "bybit-spot": [BY_OB1, BY_OB50_DOC, BY_ACK_SPOT, BY_PONG_SPOT, BY_SUB_FAIL],
    "bybit-linear": [BY_TICKER_SNAPSHOT, BY_TICKER_DELTA, BY_ACK_LINEAR, BY_PONG_LINEAR],
}
PRIME = {"binance": [], "binance-usdm": [], "bybit-spot": [], "bybit-linear": [BY_TICKER_SNAPSHOT]}
FLAGS_OK = {0, int(Flag.SNAPSHOT), int(Flag.NO_EXCHANGE_TS)}


def _check_contract(name, si, frame, primed):
    ad = make(name)
    if primed:
        for p in PRIME[name]:
            feed(ad, p, si)
    ctrl, sink = feed(ad, frame, si)
    assert ctrl is None or isinstance(ctrl, Control)
    assert ctrl is not None or sink.updates or sum(sink.rejects.values()) >= 1
    rec = np.zeros(1, MARKET_UPDATE)
    frec = np.zeros(1, MARKET_UPDATE_FUNDING)
    for u in sink.updates:
        assert u["instrument_id"] in IDS.values() and u["venue_id"] == VENUE
        assert 0 <= u["exchange_ts_ns"] < 2**63
        if u["kind"] == Kind.QUOTE:
            assert 0 < u["bid"] <= u["ask"] < math.inf
            assert 0 <= u["bid_qty"] < math.inf and 0 <= u["ask_qty"] < math.inf
            assert u["flags"] in FLAGS_OK
            rec[0] = (u["instrument_id"], VENUE, u["kind"], u["flags"], u["bid"], u["ask"],
                      u["bid_qty"], u["ask_qty"], u["exchange_ts_ns"], RECV, 1)
        else:
            assert u["kind"] == Kind.FUNDING and math.isfinite(u["funding_rate"])
            assert 0 < u["next_funding_ns"] < 2**63 and 0 < u["funding_interval_s"] < 2**32
            assert 0 <= u["mark_price"] < 3.4e38
            frec[0] = (u["instrument_id"], VENUE, u["kind"], 0, u["funding_rate"],
                       u["next_funding_ns"], u["funding_interval_s"], u["mark_price"],
                       u["exchange_ts_ns"], RECV, 1)


FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(adapter=st.sampled_from(ADAPTERS), frame=st.one_of(st.binary(max_size=300),
                                                          st.text(max_size=300)))
def test_fuzz_random_input(adapter, frame):
    _check_contract(*adapter, frame, primed=False)


@st.composite
def mutated_frame(draw):
    name, si = draw(st.sampled_from(ADAPTERS))
    data = bytearray(draw(st.sampled_from(VALID[name])).encode())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.sampled_from(b'0123456789-.eE"{}[],:nN \\x'))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 12))]
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 20))]
    return name, si, bytes(data), draw(st.booleans())


@FUZZ
@given(case=mutated_frame())
def test_fuzz_mutated_frames(case):
    name, si, frame, primed = case
    _check_contract(name, si, frame, primed)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.sampled_from(["NaN", "inf", "-1", "0", "1e400", "", "12.5", "BTCUSDT", "snapshot",
                       "delta", "1760342400000", "99999999999999999999"]),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                              max_size=3),
    max_leaves=6)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for k, v in enumerate(obj):
            yield from _paths(v, prefix + (k,))


@st.composite
def json_mutated_frame(draw):
    name, si = draw(st.sampled_from(ADAPTERS))
    obj = json.loads(draw(st.sampled_from(VALID[name])))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(obj))))
        if not path:
            continue
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        if draw(st.booleans()):
            parent[path[-1]] = draw(JSON_VALUES)
        else:
            del parent[path[-1]]
    return name, si, json.dumps(obj), draw(st.booleans())


@FUZZ
@given(case=json_mutated_frame())
def test_fuzz_json_mutations(case):
    name, si, frame, primed = case
    _check_contract(name, si, frame, primed)


def test_binance_book_ticker_decode_is_fast():
    """A bookTicker frame to sink.quote in a few microseconds (loose bound: shared CI)."""
    import time

    ad = make("binance")
    sink = CollectingSink(recv_ns=RECV)
    frames = [bn_book(u=k).encode() for k in range(1, 20001)]
    best = math.inf
    for _ in range(3):
        ad.on_connect(0)
        sink.clear()
        t0 = time.perf_counter()
        for f in frames:
            ad.parse(f, RECV, sink)
        best = min(best, (time.perf_counter() - t0) / len(frames))
    assert len(sink.updates) == len(frames) and not sink.rejects
    assert best < 20e-6, f"{best * 1e6:.1f} us per frame"
