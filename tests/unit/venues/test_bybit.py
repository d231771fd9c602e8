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


# ---------------------------------------------------------------------------------------
# L2 books (depth > 0): orderbook.<D> snapshot + delta, u contiguous per topic
# (docs/venues.md, "Bybit", "L2 book")
# ---------------------------------------------------------------------------------------
from hypothesis import settings  # noqa: E402

from arbpipe.feeds.venues.bybit import BOOK_DEPTHS  # noqa: E402
from arbpipe.feeds.venues.sink import CollectingSink  # noqa: E402
from shm_layouts.records import BookFault, StatusReason  # noqa: E402
from tests.unit.venues.common_binance_bybit import RECV, VENUE  # noqa: E402

N = 3          # levels kept per side in these tests

# Bybit's derivatives "Orderbook" page: a snapshot (its "..." rows left out) and the delta
# that follows it (the excerpt ends before the delta's u: the next one is used)
BY_OB50_DERIV_SNAPSHOT = """{"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": 1671179923028,
 "data": {"s": "BTCUSDT",
          "b": [["17440.00", "40.833"], ["17439.50", "0.513"], ["17416.00", "6.156"], ["17415.50", "32.268"]],
          "a": [["17440.50", "78.815"], ["17441.00", "8.858"], ["17464.50", "4.901"], ["17465.00", "5.744"]],
          "u": 13079592, "seq": 22520573250}}"""
BY_OB50_DERIV_DELTA = """{"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": 1671179923046,
 "data": {"s": "BTCUSDT", "b": [], "a": [["17440.50", "78.857"], ["17442.00", "1.510"]],
          "u": 13079593, "seq": 22520573251}}"""


def deep(name="bybit-spot", depth=N):
    ad = make(name)
    ad.depth = depth
    return ad


def dsink(depth=N):
    return CollectingSink(venue_id=VENUE, recv_ns=RECV, depth=depth)


def ob(kind, u, bids=(), asks=(), sym="BTCUSDT", d=50, ts=1672304484978):
    return json.dumps({"topic": f"orderbook.{d}.{sym}", "ts": ts, "type": kind,
                       "data": {"s": sym, "b": [list(x) for x in bids],
                                "a": [list(x) for x in asks], "u": u, "seq": 7961638724},
                       "cts": ts - 2})


def books(sink):
    return [(u["bids"], u["asks"]) for u in sink.updates if u["kind"] == "book"]


def faults(sink):
    return {BookFault(k).name: v for k, v in sink.resyncs_by_fault.items()}


SNAP = ob("snapshot", 100, [("99.5", "1"), ("99", "2"), ("98.5", "3"), ("98", "4")],
          [("100", "1"), ("100.5", "2"), ("101", "3"), ("101.5", "4")])


@pytest.mark.parametrize("name", ["bybit-spot", "bybit-linear"])
@pytest.mark.parametrize("depth,channel", [(1, 1), (2, 50), (20, 50), (50, 50), (51, 200),
                                           (200, 200), (201, 1000), (1000, 1000),
                                           (5000, 1000)])
def test_book_channel_is_the_smallest_documented_depth_that_covers(name, depth, channel):
    ad = deep(name, depth)
    assert ad.supports_depth and ad.book_channel() == channel
    assert channel in BOOK_DEPTHS[ad.category]
    (spec,) = ad.sockets()
    topics = [json.loads(f)["args"][0] for f in spec.subscribe]
    book = [f"orderbook.{channel}.{s}" for s in IDS]
    assert topics == (book + [f"tickers.{s}" for s in IDS] if name == "bybit-linear" else book)
    assert ad.resubscribe("BTCUSDT") == [
        json.dumps({"req_id": f"orderbook.{channel}.BTCUSDT", "op": op,
                    "args": [f"orderbook.{channel}.BTCUSDT"]})
        for op in ("unsubscribe", "subscribe")]


def test_book_documented_v5_snapshot():
    ad, sink = deep(depth=5), dsink(5)
    assert ad.parse(BY_OB50_DOC, RECV, sink) is None and not sink.rejects
    assert books(sink) == [([[16493.5, 0.006], [16493.0, 0.1]],
                            [[16611.0, 0.029], [16612.0, 0.213]])]
    assert sink.updates[-1] == quote(21, 16493.5, 16611.0, 0.006, 0.029,
                                     1672304484976 * MS, 0)
    assert sink.is_ready(21) and ad.applied == 1


def test_book_documented_derivatives_snapshot_then_delta():
    ad, sink = deep(depth=4), dsink(4)
    ad.parse(BY_OB50_DERIV_SNAPSHOT, RECV, sink)
    assert ad.parse(BY_OB50_DERIV_DELTA, RECV, sink) is None and not sink.rejects
    assert books(sink)[-1] == (
        [[17440.0, 40.833], [17439.5, 0.513], [17416.0, 6.156], [17415.5, 32.268]],
        [[17440.5, 78.857], [17441.0, 8.858], [17442.0, 1.51], [17464.5, 4.901]])
    assert sink.updates[-1]["kind"] == Kind.QUOTE and sink.updates[-1]["ask_qty"] == 78.857
    assert sink.updates[-1]["exchange_ts_ns"] == 1671179923046 * MS   # no cts: ts


def test_book_delta_applies_deletes_and_exposes_deeper_levels():
    ad, sink = deep(), dsink()
    ad.parse(SNAP, RECV, sink)
    assert books(sink)[-1] == ([[99.5, 1.0], [99.0, 2.0], [98.5, 3.0]],
                               [[100.0, 1.0], [100.5, 2.0], [101.0, 3.0]])
    assert ad.parse(ob("delta", 101, [("99.5", "0"), ("99.25", "7")], [("100", "0")]), RECV,
                    sink) is None
    assert books(sink)[-1] == ([[99.25, 7.0], [99.0, 2.0], [98.5, 3.0]],
                               [[100.5, 2.0], [101.0, 3.0], [101.5, 4.0]])
    sink.clear()
    ad.parse(ob("delta", 102, [("97", "1")], []), RECV, sink)    # below the top N: no record
    assert sink.updates == [] and not sink.rejects and ad.applied == 3


def test_book_gap_marks_not_ready_and_resubscribes_then_exact():
    ad, sink = deep(), dsink()
    ad.parse(SNAP, RECV, sink)
    ctl = ad.parse(ob("delta", 102, [("99", "5")]), RECV, sink)          # 101 skipped
    assert ctl.kind == "resync" and ctl.symbol == "BTCUSDT" and ctl.detail == "GAP"
    assert not sink.is_ready(21) and faults(sink) == {"GAP": 1}
    st = sink.updates[-1]
    assert st["kind"] == Kind.STATUS and st["fault"] == BookFault.GAP
    assert st["status_reason"] == StatusReason.BOOK_RESYNC and st["instrument_id"] == 21
    sink.clear()
    assert ad.parse(ob("delta", 103, [("99", "6")]), RECV, sink) is None   # meanwhile: dropped
    assert sink.rejects == {"no_snapshot": 1} and sink.updates == []
    ad.parse(ob("snapshot", 200, [("99", "6")], [("100", "1")]), RECV, sink)
    assert sink.is_ready(21) and books(sink)[-1] == ([[99.0, 6.0]], [[100.0, 1.0]])
    ad.parse(ob("delta", 201, [], [("100.5", "2")]), RECV, sink)
    assert books(sink)[-1] == ([[99.0, 6.0]], [[100.0, 1.0], [100.5, 2.0]])


def test_book_delta_before_snapshot_is_early_diff():
    ad, sink = deep(), dsink()
    ctl = ad.parse(ob("delta", 5, [("99", "1")]), RECV, sink)
    assert ctl.kind == "resync" and ctl.detail == "EARLY_DIFF"
    assert faults(sink) == {"EARLY_DIFF": 1} and not sink.is_ready(21)
    assert [u for u in sink.updates if u["kind"] == "book"] == []
    ad.parse(SNAP, RECV, sink)
    assert sink.is_ready(21)


def test_book_duplicate_and_out_of_order_are_dropped_and_the_book_stays_ready():
    ad, sink = deep(), dsink()
    ad.parse(SNAP, RECV, sink)
    d1 = ob("delta", 101, [("99", "5")])
    ad.parse(d1, RECV, sink)
    before = books(sink)[-1]
    sink.clear()
    assert ad.parse(d1, RECV, sink) is None
    assert ad.parse(ob("delta", 100, [("99", "9")]), RECV, sink) is None
    assert ad.parse(SNAP, RECV, sink) is None                    # the same snapshot again
    assert sink.rejects == {"duplicate": 1, "out_of_order": 2} and sink.updates == []
    assert sink.is_ready(21) and not sink.resyncs_by_fault
    ad.parse(ob("delta", 102, [("99", "4")]), RECV, sink)
    assert books(sink)[-1] == ([[99.5, 1.0], [99.0, 4.0], [98.5, 3.0]], before[1])


def test_book_u_1_is_a_restart_counted_and_overwritten():
    ad, sink = deep(), dsink()
    ad.parse(SNAP, RECV, sink)
    restart = ob("delta", 1, [("50", "1")], [("51", "2")], ts=1672304490000)
    assert ad.parse(restart, RECV, sink) is None
    assert faults(sink) == {"RESTART": 1} and sink.is_ready(21)
    assert books(sink)[-1] == ([[50.0, 1.0]], [[51.0, 2.0]])
    assert ad.parse(restart, RECV, sink) is None and sink.rejects == {"duplicate": 1}
    ad.parse(ob("delta", 2, [("50.5", "1")], [], ts=1672304490001), RECV, sink)
    assert books(sink)[-1] == ([[50.5, 1.0], [50.0, 1.0]], [[51.0, 2.0]])
    fresh, s2 = deep(), dsink()                  # u = 1 first on a connection: no restart
    fresh.parse(restart, RECV, s2)
    assert s2.is_ready(21) and not s2.resyncs_by_fault


@pytest.mark.parametrize("levels,reason", [
    ([("NaN", "1")], "bad_price"), ([("99", "-1")], "bad_price"), ([("1e999", "1")], "bad_price"),
    ([("0x10", "1")], "bad_price"), ([("100.5", "1")], "bad_price"),    # crossed
])
def test_book_garbage_levels_are_bad_data_and_resynced(levels, reason):
    ad, sink = deep(), dsink()
    ad.parse(SNAP, RECV, sink)
    ctl = ad.parse(ob("delta", 101, levels), RECV, sink)
    assert ctl.kind == "resync" and sink.rejects == {reason: 1}
    assert faults(sink) == {"BAD_DATA": 1} and not sink.is_ready(21)
    ad.parse(ob("delta", 102, [("99", "1")]), RECV, sink)              # dropped meanwhile
    ad.parse(SNAP, RECV, sink)
    assert sink.is_ready(21)


def test_book_two_bad_snapshots_in_a_row_wait_before_asking_again():
    ad, sink = deep(), dsink()
    bad = ob("snapshot", 100, [("101", "1")], [("100", "1")])           # crossed
    assert ad.parse(bad, RECV, sink).kind == "resync"
    assert ad.parse(ob("snapshot", 101, [("101", "1")], [("100", "1")]), RECV, sink) is None
    ctls = [ad.parse(ob("delta", 102 + k, [("99", "1")]), RECV, sink) for k in range(1000)]
    assert [c.detail for c in ctls if c is not None] == ["retry"]      # after 1000 dropped


@pytest.mark.parametrize("frame,reason", [
    (ob("snapshot", 100, [("99", "1")], [("100", "1")], d=1), "unknown_topic"),   # not ours
    (ob("snapshot", 100, [("99", "1")], [("100", "1")], d=200), "unknown_topic"),
    (ob("snapshot", 100, [("99", "1")], [("100", "1")], sym="DOGEUSDT"), "unknown_symbol"),
    (ob("snapshot", -1, [("99", "1")], [("100", "1")]), "bad_shape"),
    (ob("snapshot", 2**63, [("99", "1")], [("100", "1")]), "bad_shape"),
    (ob("snapshot", 100, [("99", "1", "x")], [("100", "1")]), "bad_shape"),
    (ob("snapshot", 100, [[99, 1]], [("100", "1")]), "bad_shape"),
])
def test_book_refused_frames(frame, reason):
    ad, sink = deep(), dsink()
    assert ad.parse(frame, RECV, sink) is None
    assert sink.rejects == {reason: 1} and sink.updates == [] and not sink.is_ready(21)


def test_book_empty_sides_are_a_book_and_make_no_quote():
    ad, sink = deep(), dsink()
    ad.parse(ob("snapshot", 100, [], []), RECV, sink)
    assert sink.is_ready(21) and books(sink) == [([], [])] and not sink.rejects
    ad.parse(ob("delta", 101, [("99", "1")], []), RECV, sink)
    assert books(sink)[-1] == ([[99.0, 1.0]], []) and not any(
        u["kind"] == Kind.QUOTE for u in sink.updates)


def test_book_level1_channel_takes_the_idle_resend():
    ad, sink = deep(depth=1), dsink(1)
    f = ob("snapshot", 100, [("99", "1")], [("100", "1")], d=1)
    ad.parse(f, RECV, sink)
    ad.parse(f, RECV, sink)
    ad.parse(ob("snapshot", 100, [("99", "1")], [("100", "1")], d=1, ts=1672304487978), RECV,
             sink)
    assert sink.rejects == {"duplicate": 1} and ad.applied == 2


def test_book_linear_tickers_give_funding_only():
    ad, sink = deep("bybit-linear"), dsink()
    ad.parse(BY_TICKER_SNAPSHOT, RECV, sink)
    assert [u["kind"] for u in sink.updates] == [Kind.FUNDING] and not sink.rejects
    sink.clear()
    assert ad.parse(BY_TICKER_DELTA, RECV, sink) is None               # bid/ask only
    assert sink.updates == [] and not sink.rejects and ad.applied == 1
    ad.parse(SNAP, RECV, sink)
    assert [u["kind"] for u in sink.updates] == ["book", Kind.QUOTE]


def test_book_on_connect_forgets_the_sync():
    ad, sink = deep(), dsink()
    ad.parse(SNAP, RECV, sink)
    ad.on_connect(0)
    assert ad.parse(ob("delta", 101, [("99", "1")]), RECV, sink).detail == "EARLY_DIFF"


def test_book_depth_0_is_the_bbo_adapter():
    ad = deep(depth=0)
    assert [json.loads(f)["args"][0] for f in ad.sockets()[0].subscribe] == [
        f"orderbook.1.{s}" for s in IDS]
    only_reject(feed(ad, ob("delta", 101, [("99", "1")], [("100", "1")], d=1))[1], "unsupported")


# -- hypothesis: generated streams against a pure-Python reference book ------------------
PX_BID = [f"{99.5 - 0.5 * k:.2f}" for k in range(12)]     # bids below 100, asks above:
PX_ASK = [f"{100 + 0.5 * k:.2f}" for k in range(12)]      # the venue's book never crosses
QTY = st.sampled_from(["0", "0", "0.5", "1", "2.25", "10"])
CHANGES = st.tuples(st.lists(st.tuples(st.sampled_from(PX_BID), QTY), max_size=5),
                    st.lists(st.tuples(st.sampled_from(PX_ASK), QTY), max_size=5))
OPS = st.lists(st.one_of(
    st.tuples(st.just("snapshot")), st.tuples(st.just("delta"), CHANGES),
    st.tuples(st.just("gap"), CHANGES), st.tuples(st.just("dup")),
    st.tuples(st.just("restart")), st.tuples(st.just("reconnect"))), max_size=40)


def _top(side: dict, bids: bool, n: int) -> list:
    keys = sorted(side, key=float, reverse=bids)[:n]
    return [[float(p), float(side[p])] for p in keys]


@settings(max_examples=300, deadline=None)
@given(first_delta=st.booleans(), ops=OPS)
def test_book_generated_streams_match_the_reference(first_delta, ops):
    """The venue keeps a reference book (a dict per side) and numbers its messages with a
    contiguous u; the stream has gaps (a message not delivered), duplicates, restarts
    (u = 1), reconnects and deletions exposing deeper levels. After every message the
    adapter's book equals the reference's top N as of the last message it received, or it
    is not ready and the fault the reference expects was counted; a final snapshot always
    makes it exact again."""
    ad, sink = deep(), dsink()
    ref = ({}, {})
    shown = None                    # the reference's top N as of the last message delivered
    u = 1000
    last = None                     # last frame delivered
    synced = pending = gapped = False
    seen = False                    # the adapter holds a u of the symbol (this connection)
    expect = {}
    ts = 1672304484978

    def apply(changes):
        for side, rows in zip(ref, changes):
            for p, q in rows:
                side.pop(p, None) if q == "0" else side.__setitem__(p, q)

    def snapshot_frame(uid):
        return ob("snapshot", uid, sorted(ref[0].items(), key=lambda x: -float(x[0])),
                  sorted(ref[1].items(), key=lambda x: float(x[0])), ts=ts)

    def count(fault):
        expect[fault] = expect.get(fault, 0) + 1

    def deliver(frame, verdict):
        nonlocal synced, pending, gapped, seen, shown
        rej = sum(sink.rejects.values())
        ctl = ad.parse(frame, RECV, sink)
        if verdict in ("GAP", "EARLY_DIFF"):
            count(verdict)
            synced, pending, gapped = False, True, False
            assert ctl is not None and ctl.kind == "resync" and ctl.detail == verdict
            assert ctl.symbol == "BTCUSDT"
        else:
            assert ctl is None
        if verdict in ("snapshot", "RESTART", "applied"):
            if verdict == "RESTART":
                count("RESTART")
            synced, pending, seen = True, False, True
            shown = (_top(ref[0], True, N), _top(ref[1], False, N))
        if verdict == "dropped":
            assert sum(sink.rejects.values()) == rej + 1
        assert faults(sink) == expect
        assert sink.is_ready(21) == synced
        if synced:
            b, a = sink.book_of(21).top()
            assert (b.tolist(), a.tolist()) == shown

    if first_delta:
        apply(([(PX_BID[0], "1")], []))
        u += 1
        deliver(ob("delta", u, [(PX_BID[0], "1")], [], ts=ts), "EARLY_DIFF")
    for op in ops:
        kind = op[0]
        ts += 1
        if kind in ("snapshot", "restart"):
            u = u + 1 if kind == "snapshot" else 1
            last = snapshot_frame(u)
            deliver(last, "RESTART" if kind == "restart" and seen else "snapshot")
            gapped = False
        elif kind in ("delta", "gap"):
            apply(op[1])
            u += 1
            if kind == "gap":
                gapped = True
                continue
            last = ob("delta", u, *op[1], ts=ts)
            if synced:
                deliver(last, "GAP" if gapped else "applied")
            elif pending:
                deliver(last, "dropped")
            else:
                deliver(last, "EARLY_DIFF")
        elif kind == "dup" and last is not None:
            deliver(last, "dropped")
        elif kind == "reconnect":
            ad.on_connect(0)
            sink.book_broken(21, BookFault.RECONNECT)     # as Feed.socket_down does
            count("RECONNECT")
            synced = pending = gapped = seen = False
            last = None
    ts += 1
    u += 1
    deliver(snapshot_frame(u), "snapshot")
