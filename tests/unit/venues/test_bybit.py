"""Bybit spot and linear adapters against the documented frames of docs/venues.md
("Bybit"), plus sequencing, malformed input and a fuzz of the never-raise contract."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbpipe.feeds.venues.registry import get
from shm_layouts import Flag, Kind
from tests.unit.venues.common_binance_bybit import (
    CONCAT_SYMBOLS, FUZZ, IDS, MS, check_contract, feed, funding, json_mutated_frame, make,
    mutated_frame, only_reject, quote)

# ---------------------------------------------------------------------------------------
# Documented frames (docs/venues.md), verbatim
# ---------------------------------------------------------------------------------------
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


def ob1(u=18521288, ts=1672304484978, bid="16493.50", bid_qty="0.006", ask="16611.00",
        ask_qty="0.029", sym="BTCUSDT", kind="snapshot"):
    return json.dumps({"topic": f"orderbook.1.{sym}", "ts": ts, "type": kind,
                       "data": {"s": sym, "b": [[bid, bid_qty]], "a": [[ask, ask_qty]],
                                "u": u, "seq": 7961638724}, "cts": ts - 2})


def tick(data, cs, ts, kind="delta", sym="BTCUSDT"):
    return json.dumps({"topic": f"tickers.{sym}", "type": kind,
                       "data": {"symbol": sym, **data}, "cs": cs, "ts": ts})


# ---------------------------------------------------------------------------------------
# Registry, sockets, symbols
# ---------------------------------------------------------------------------------------
def test_registry_names_and_markets():
    assert {n: get(n).market for n in ("bybit-spot", "bybit-linear")} == {
        "bybit-spot": "spot", "bybit-linear": "perp"}


@pytest.mark.parametrize("name,path,topic", [("bybit-spot", "/v5/public/spot", "orderbook.1."),
                                             ("bybit-linear", "/v5/public/linear", "tickers.")])
def test_bybit_socket_subscribe_and_ping(name, path, topic):
    (spec,) = make(name).sockets()
    assert spec.path == path
    assert json.loads(spec.ping_text) == {"op": "ping"} and spec.ping_interval_s == 20
    assert [json.loads(f) for f in spec.subscribe] == [
        {"req_id": f"{topic}{s}", "op": "subscribe", "args": [f"{topic}{s}"]} for s in IDS]


@pytest.mark.parametrize("name", ["bybit-spot", "bybit-linear"])
@pytest.mark.parametrize("native,canonical", CONCAT_SYMBOLS)
def test_native_to_canonical(name, native, canonical):
    assert get(name).native_to_canonical(native) == canonical


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
def _ob(**kw):
    return ob1(**kw)


def _snap(**fields):
    snap = json.loads(BY_TICKER_SNAPSHOT)
    snap["data"].update(fields)
    return json.dumps(snap)


MALFORMED = [
    # not JSON / truncated
    ("bybit-spot", BY_OB1[:-1], "not_json"), ("bybit-spot", b"pong", "not_json"),
    ("bybit-linear", BY_TICKER_DELTA[:60], "not_json"),
    ("bybit-linear", "\udcff{}", "not_json"),
    # wrong shape / types
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
    ("bybit-spot", _ob(bid="NaN"), "bad_price"), ("bybit-spot", _ob(ask="-16611"), "bad_price"),
    ("bybit-spot", _ob(ask_qty="-0.029"), "bad_price"), ("bybit-spot", _ob(bid="0"), "bad_price"),
    ("bybit-linear", _snap(bid1Price="NaN", markPrice="1", fundingRate=""), "bad_price"),
    ("bybit-linear", _snap(ask1Size="-3", fundingRate=""), "bad_price"),
    # crossed
    ("bybit-spot", _ob(bid="16700"), "crossed"),
    ("bybit-linear", _snap(bid1Price="70000", fundingRate=""), "crossed"),
    # unknown symbol / topic
    ("bybit-spot", _ob(sym="DOGEUSDT"), "unknown_symbol"),
    ("bybit-linear", tick({}, 1, 2, sym="DOGEUSDT"), "unknown_symbol"),
    ("bybit-spot", _ob().replace("orderbook.1.", "publicTrade."), "unknown_topic"),
    # timestamps that do not fit ns in an i8
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
ADAPTERS = [("bybit-spot", 0), ("bybit-linear", 0)]
VALID = {
    "bybit-spot": [BY_OB1, BY_OB50_DOC, BY_ACK_SPOT, BY_PONG_SPOT, BY_SUB_FAIL],
    "bybit-linear": [BY_TICKER_SNAPSHOT, BY_TICKER_DELTA, BY_ACK_LINEAR, BY_PONG_LINEAR],
}
PRIME = {"bybit-spot": [], "bybit-linear": [BY_TICKER_SNAPSHOT]}


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
