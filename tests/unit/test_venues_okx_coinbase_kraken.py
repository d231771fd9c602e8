"""Venue adapters okx, coinbase, kraken, gate: documented frames, book-to-BBO,
sequence handling, control frames, malformed input, and fuzzing (parse never raises).

Fixtures are the example frames of docs/venues.md ("OKX", "Coinbase", "Kraken", "Gate").
"""
from __future__ import annotations

import datetime
import json
import math
import random
import time

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbpipe.feeds.venues.registry import get
from arbpipe.feeds.venues.base import Control
from arbpipe.symbols import Instrument
from arbpipe.feeds.venues.coinbase import rfc3339_ns
from arbpipe.feeds.venues.sink import CollectingSink
from shm_layouts import Flag, Kind

RECV = 1_800_000_000_000_000_000

# --------------------------------------------------------------------------- fixtures
# section 3, OKX
OKX_ACK = '{"id": "1512", "event": "subscribe", "arg": {"channel": "tickers", "instId": "BTC-USDT"}, "connId": "a4d3ae55"}'
OKX_ERR_60012 = r'{"id": "1512", "event": "error", "code": "60012", "msg": "Invalid request: {\"op\": \"subscribe\", \"argss\":[{ \"channel\" : \"tickers\", \"instId\" : \"LTC-USD-200327\"}]}", "connId": "a4d3ae55"}'
OKX_ERR_60018 = '{"event":"error","msg":"Wrong URL or channel:tickers,instId:NMR-USDT doesn\'t exist. Please use the correct URL, channel and parameters referring to API document.","code":"60018","connId":"0d0c61a5"}'
OKX_NOTICE = '{"event": "notice", "code": "64008", "msg": "The connection will soon be closed for a service upgrade. Please reconnect.", "connId": "a4d3ae55"}'
OKX_BBO = """{
  "arg": {"channel": "bbo-tbt", "instId": "BCH-USDT-SWAP"},
  "data": [
    {
      "asks": [["111.06","55154","0","2"]],
      "bids": [["111.05","57745","0","2"]],
      "ts": "1670324386802",
      "seqId": 363996337
    }
  ]
}"""
OKX_TICKERS = """{
  "arg": {"channel": "tickers", "instId": "BTC-USDT"},
  "data": [
    {
      "instType": "SPOT", "instId": "BTC-USDT", "last": "9999.99", "lastSz": "0.1",
      "askPx": "9999.99", "askSz": "11", "bidPx": "8888.88", "bidSz": "5",
      "open24h": "9000", "high24h": "10000", "low24h": "8888.88", "volCcy24h": "2222",
      "vol24h": "2222", "sodUtc0": "2222", "sodUtc8": "2222", "ts": "1597026383085"
    }
  ]
}"""
OKX_FUNDING = """{
   "arg":{"channel":"funding-rate","instId":"BTC-USD-SWAP"},
   "data":[
      {
         "formulaType": "noRate",
         "fundingRate":"0.0001875391284828",
         "fundingTime":"1700726400000",
         "impactValue": "",
         "instId":"BTC-USD-SWAP",
         "instType":"SWAP",
         "interestRate": "",
         "method": "current_period",
         "maxFundingRate":"0.00375",
         "minFundingRate":"-0.00375",
         "nextFundingRate":"",
         "nextFundingTime":"1700755200000",
         "premium": "0.0001233824646391",
         "settFundingRate":"0.0001699799259033",
         "settState":"settled",
         "ts":"1700724675402"
      }
   ]
}"""

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

# section 5, Kraken
KR_STATUS = '{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online","api_version":"v2","connection_id":1}]}'
KR_ACK_BOOK = '{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,"symbol":"BTC/USD"},"success":true,"time_in":"2026-07-07T23:00:03.501510Z","time_out":"2026-07-07T23:00:03.501553Z"}'
KR_ACK_TICKER = '{"method":"subscribe","result":{"channel":"ticker","symbol":"ALGO/USD","snapshot":true,"event_trigger":"bbo"},"success":true,"time_in":"2023-09-25T09:04:31.742599Z","time_out":"2023-09-25T09:04:31.742648Z"}'
KR_REJECT = '{"error":"Currency pair not supported XBT/USD","method":"subscribe","success":false,"symbol":"XBT/USD","time_in":"2026-10-06T17:39:49.588049Z","time_out":"2026-10-06T17:39:49.588083Z"}'
KR_TICKER = """{
    "channel": "ticker",
    "type": "update",
    "data": [
        {
            "symbol": "ALGO/USD",
            "bid": 0.10025,
            "bid_qty": 740.0,
            "ask": 0.10035,
            "ask_qty": 740.0,
            "last": 0.10035,
            "volume": 997038.98383185,
            "vwap": 0.10148,
            "low": 0.09979,
            "high": 0.10285,
            "change": -0.00017,
            "change_pct": -0.17,
            "timestamp": "2023-09-25T09:04:31.742648Z"
        }
    ]
}"""
KR_BOOK_SNAPSHOT = '{"channel":"book","type":"snapshot","data":[{"symbol":"MATIC/USD","bids":[{"price":0.5666,"qty":4831.75496356},{"price":0.5665,"qty":6658.22734739}],"asks":[{"price":0.5668,"qty":4410.79769741},{"price":0.5669,"qty":4655.40412487}],"checksum":2439117997}]}'
KR_BOOK_UPDATE = '{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD","bids":[{"price":0.5657,"qty":1098.3947558}],"asks":[],"checksum":2114181697,"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
KR_HEARTBEAT = '{"channel": "heartbeat"}'
KR_PONG = '{"method":"pong","req_id":101,"time_in":"2023-09-25T09:04:31.742599Z","time_out":"2023-09-25T09:04:31.742648Z"}'

# section 6, Gate
GATE_ACK = '{"time": 1611541000, "channel": "spot.book_ticker", "event": "subscribe", "error": null, "result": {"status": "success"}}'
GATE_ACK_DOC = '{"time": 1611541000, "channel": "spot.orders", "event": "subscribe", "error": null, "result": {"status": "success"}}'
GATE_ERR = '{"time": 1611541000, "channel": "spot.book_ticker", "event": "subscribe", "error": {"code": 2, "message": "Alert sub ob.BTC_USDT.400"}, "result": {"status": "fail"}}'
GATE_UPDATE = """{
  "time": 1606293275,
  "channel": "spot.book_ticker",
  "event": "update",
  "result": {
    "t": 1606293275123,
    "u": 48733182,
    "s": "BTC_USDT",
    "b": "19177.79",
    "B": "0.0003341504",
    "a": "19179.38",
    "A": "0.09"
  }
}"""
GATE_PONG = '{"time": 1545404023, "channel": "spot.pong", "event": "", "error": null, "result": null}'
GATE_UPGRADE = '{"type": "upgrade", "msg": "The connection will soon be closed for a service upgrade. Please reconnect."}'

# ------------------------------------------------------------------------- adapters
OKX_INSTRUMENTS = [Instrument("BCH-USDT-SWAP", 7, 0.1), Instrument("BTC-USD-SWAP", 9, 100.0),
                   Instrument("BTC-USDT", 1)]
CB_INSTRUMENTS = [Instrument("BTC-USD", 3), Instrument("ETH-USD", 4)]
KR_INSTRUMENTS = [Instrument("ALGO/USD", 11), Instrument("BTC/USD", 12)]
GATE_INSTRUMENTS = [Instrument("BTC_USDT", 21), Instrument("ETH_USDT", 22)]


def okx():
    return get("okx")(OKX_INSTRUMENTS, venue_id=3)


def coinbase():
    return get("coinbase")(CB_INSTRUMENTS, venue_id=4)


def kraken():
    return get("kraken")(KR_INSTRUMENTS, venue_id=5)


def gate():
    return get("gate")(GATE_INSTRUMENTS, venue_id=6)


FACTORIES = {"okx": okx, "coinbase": coinbase, "kraken": kraken, "gate": gate}


def feed(adapter, frame, sink=None):
    sink = sink or CollectingSink(adapter.venue_id, recv_ns=RECV)
    ctl = adapter.parse(frame, RECV, sink)
    return ctl, sink


def only_quote(sink):
    assert not sink.rejects, sink.rejects
    assert len(sink.updates) == 1, sink.updates
    u = sink.updates[0]
    assert u["kind"] == Kind.QUOTE
    return u


def assert_quote(u, iid, bid, ask, bid_qty, ask_qty, ts, flags=0, venue=None):
    assert u["kind"] == Kind.QUOTE
    assert u["instrument_id"] == iid
    assert u["bid"] == bid and u["ask"] == ask
    assert u["bid_qty"] == pytest.approx(bid_qty, rel=1e-12, abs=0)
    assert u["ask_qty"] == pytest.approx(ask_qty, rel=1e-12, abs=0)
    assert u["exchange_ts_ns"] == ts and type(u["exchange_ts_ns"]) is int
    assert u["recv_ts_ns"] == RECV
    assert u["flags"] == flags
    if venue is not None:
        assert u["venue_id"] == venue


def cb_frame(seq, events, channel="l2_data", ts="2026-07-26T09:33:07.419487123Z"):
    return json.dumps({"channel": channel, "timestamp": ts, "sequence_num": seq, "events": events})


def lvl(side, price, qty, t="2026-07-26T09:33:07.419487Z"):
    return {"side": side, "event_time": t, "price_level": price, "new_quantity": qty}


# ----------------------------------------------------------------------- registry
@pytest.mark.parametrize("name,path,url", [
    ("okx", "/ws/v5/public", "wss://ws.okx.com:8443"),
    ("coinbase", "/", "wss://advanced-trade-ws.coinbase.com"),
    ("kraken", "/v2", "wss://ws.kraken.com"),
    ("gate", "/ws/v4/", "wss://api.gateio.ws"),
])
def test_registered_with_endpoint(name, path, url):
    a = FACTORIES[name]()
    assert a.name == name and a.default_url == url
    specs = a.sockets()
    assert len(specs) == 1 and specs[0].path == path
    assert all(isinstance(f, str) for f in specs[0].subscribe)


@pytest.mark.parametrize("name,native,canonical", [
    ("okx", "BTC-USDT", "BTC/USDT"), ("okx", "BTC-USDT-SWAP", "BTC/USDT"),
    ("okx", "BTC-USD-SWAP", "BTC/USD"), ("okx", "BTC-USD-200327", None), ("okx", "BTCUSDT", None),
    ("coinbase", "BTC-USD", "BTC/USD"), ("coinbase", "ETH-USDC", "ETH/USDC"),
    ("coinbase", "BTC-PERP-INTX", None), ("coinbase", "-USD", None),
    ("kraken", "BTC/USD", "BTC/USD"), ("kraken", "ETH/USDT", "ETH/USDT"), ("kraken", "BTCUSD", None),
    ("gate", "BTC_USDT", "BTC/USDT"), ("gate", "BTC-USDT", None), ("gate", "BTC_", None),
])
def test_native_to_canonical(name, native, canonical):
    assert get(name).native_to_canonical(native) == canonical


# ---------------------------------------------------------------------------- OKX
def test_okx_sockets_subscribe_bbo_all_funding_swap_only():
    spec = okx().sockets()[0]
    assert spec.ping_text == "ping" and 0 < spec.ping_interval_s < 30
    args = [a for f in spec.subscribe for a in json.loads(f)["args"]]
    assert all(json.loads(f)["op"] == "subscribe" for f in spec.subscribe)
    assert sorted((a["channel"], a["instId"]) for a in args) == sorted([
        ("bbo-tbt", "BCH-USDT-SWAP"), ("bbo-tbt", "BTC-USD-SWAP"), ("bbo-tbt", "BTC-USDT"),
        ("funding-rate", "BCH-USDT-SWAP"), ("funding-rate", "BTC-USD-SWAP")])


def test_okx_subscribe_split_below_64kb():
    a = get("okx")([Instrument(f"C{i}-USDT-SWAP", i, 1.0) for i in range(300)])
    frames = a.sockets()[0].subscribe
    assert len(frames) > 1 and all(len(f) < 64 * 1024 for f in frames)
    assert sum(len(json.loads(f)["args"]) for f in frames) == 600


def test_okx_bbo_swap_contracts_to_base():
    ctl, sink = feed(okx(), OKX_BBO)
    assert ctl is None
    assert_quote(only_quote(sink), 7, 111.05, 111.06, 57745 * 0.1, 55154 * 0.1,
                 1670324386802_000_000, venue=3)


def test_okx_bbo_spot_sizes_are_base():
    frame = OKX_BBO.replace("BCH-USDT-SWAP", "BTC-USDT")
    ctl, sink = feed(okx(), frame)
    assert_quote(only_quote(sink), 1, 111.05, 111.06, 57745.0, 55154.0, 1670324386802_000_000)


def test_okx_bbo_accepts_str_and_bytes():
    a = okx()
    _, s1 = feed(a, OKX_BBO.encode())
    a.on_connect(0)
    _, s2 = feed(a, OKX_BBO)
    assert s1.updates == s2.updates and len(s1.updates) == 1


def test_okx_funding():
    ctl, sink = feed(okx(), OKX_FUNDING)
    assert ctl is None and not sink.rejects
    (u,) = sink.updates
    assert u["kind"] == Kind.FUNDING and u["instrument_id"] == 9
    assert u["funding_rate"] == 0.0001875391284828
    assert u["next_funding_ns"] == 1700726400000_000_000
    assert u["funding_interval_s"] == 8 * 3600
    assert u["mark_price"] == 0.0
    assert u["exchange_ts_ns"] == 1700724675402_000_000


def test_okx_funding_interval_from_times_and_default():
    f = json.loads(OKX_FUNDING)
    f["data"][0]["nextFundingTime"] = str(1700726400000 + 4 * 3600_000)
    _, sink = feed(okx(), json.dumps(f))
    assert sink.updates[0]["funding_interval_s"] == 4 * 3600
    f["data"][0]["nextFundingTime"] = ""
    _, sink = feed(okx(), json.dumps(f))
    assert sink.updates[0]["funding_interval_s"] == 8 * 3600
    f["data"][0]["fundingRate"] = "-0.0002"
    _, sink = feed(okx(), json.dumps(f))
    assert sink.updates[0]["funding_rate"] == -0.0002


def test_okx_seq_duplicate_and_out_of_order_then_reconnect_resets():
    a = okx()
    sink = CollectingSink(recv_ns=RECV)
    def bbo(seq, bid="111.05"):
        return OKX_BBO.replace("363996337", str(seq)).replace('"111.05"', f'"{bid}"')
    a.parse(bbo(100), RECV, sink)
    a.parse(bbo(100), RECV, sink)            # re-sent idle snapshot, same seqId
    a.parse(bbo(99, "111.00"), RECV, sink)   # older
    a.parse(bbo(101, "111.01"), RECV, sink)
    assert [u["bid"] for u in sink.updates] == [111.05, 111.01]
    assert sink.rejects == {"duplicate": 1, "out_of_order": 1}
    # seqId is per instId: another instrument with a lower seqId is fine
    a.parse(bbo(5).replace("BCH-USDT-SWAP", "BTC-USDT"), RECV, sink)
    assert sink.updates[-1]["instrument_id"] == 1
    # after maintenance seqId may restart lower: a reconnect resets the state
    a.on_connect(0)
    a.parse(bbo(3, "110.5"), RECV, sink)
    assert sink.updates[-1]["bid"] == 110.5 and sum(sink.rejects.values()) == 2


def test_okx_rejected_frame_does_not_advance_seq():
    a = okx()
    sink = CollectingSink(recv_ns=RECV)
    a.parse(OKX_BBO.replace('"111.05"', '"111.07"'), RECV, sink)   # crossed, seq 363996337
    a.parse(OKX_BBO, RECV, sink)
    assert sink.rejects == {"crossed": 1} and len(sink.updates) == 1


@pytest.mark.parametrize("frame,kind,symbol,reconnect,detail_has", [
    (OKX_ACK, "ack", "BTC-USDT", False, "subscribe"),
    (OKX_ERR_60012, "error", "LTC-USD-200327", False, "60012"),
    (OKX_ERR_60018, "error", "NMR-USDT", False, "60018"),
    (OKX_NOTICE, "notice", "", True, "64008"),
    ("pong", "pong", "", False, ""),
    (b"pong", "pong", "", False, ""),
    ('{"event":"notice","code":"64009","msg":"something else"}', "notice", "", False, "64009"),
])
def test_okx_control_frames(frame, kind, symbol, reconnect, detail_has):
    ctl, sink = feed(okx(), frame)
    assert isinstance(ctl, Control)
    assert (ctl.kind, ctl.symbol, ctl.reconnect) == (kind, symbol, reconnect)
    assert detail_has in ctl.detail
    assert not sink.updates and not sink.rejects


def test_okx_error_with_arg_names_inst():
    ctl, _ = feed(okx(), '{"event":"error","code":"60018","msg":"x","arg":{"channel":"bbo-tbt","instId":"FOO-BAR"}}')
    assert ctl.kind == "error" and ctl.symbol == "FOO-BAR"


@pytest.mark.parametrize("frame,reason", [
    (OKX_TICKERS, "unknown_channel"),
    (OKX_BBO.replace("BCH-USDT-SWAP", "ETH-USDT-SWAP"), "unknown_symbol"),
    (OKX_BBO.replace('"111.05"', '"NaN"'), "bad_price"),
    (OKX_BBO.replace('"111.06"', '"inf"'), "bad_price"),
    (OKX_BBO.replace('"111.05"', '"0"'), "bad_price"),
    (OKX_BBO.replace('"111.05"', '"-111.05"'), "bad_price"),
    (OKX_BBO.replace('"57745"', '"-1"'), "bad_price"),
    (OKX_BBO.replace('"111.05"', '"111.07"'), "crossed"),
    (OKX_BBO.replace('"111.05"', '"abc"'), "bad_shape"),
    (OKX_BBO.replace('"seqId": 363996337', '"seqId": "363996337"'), "bad_shape"),
    (OKX_BBO.replace(',\n      "seqId": 363996337', ''), "bad_shape"),
    (OKX_BBO.replace('[["111.05","57745","0","2"]]', '[]'), "bad_shape"),
    (OKX_BBO.replace('"1670324386802"', '"16703243x6802"'), "bad_shape"),
    (OKX_BBO.replace('"1670324386802"', '"99999999999999999999"'), "bad_shape"),
    (OKX_FUNDING.replace('"0.0001875391284828"', '""'), "bad_shape"),
    (OKX_FUNDING.replace('"0.0001875391284828"', '"nan"'), "bad_price"),
    (OKX_FUNDING.replace("BTC-USD-SWAP", "ETH-USD-SWAP"), "unknown_symbol"),
    ('{"arg":{"channel":"bbo-tbt","instId":"BCH-USDT-SWAP"},"data":[]}', "bad_shape"),
    ('{"arg":"bbo-tbt","data":[]}', "bad_shape"),
    ('{"foo":1}', "bad_shape"),
    ("[1,2]", "bad_shape"),
    ("null", "bad_shape"),
    ("ping", "not_json"),
    ("", "not_json"),
    (b"\xff\xfe{", "not_json"),
    ('{"arg":', "not_json"),
])
def test_okx_malformed(frame, reason):
    ctl, sink = feed(okx(), frame)
    assert ctl is None and not sink.updates
    assert sink.rejects == {reason: 1}


def test_okx_multiple_data_items_each_checked():
    f = json.loads(OKX_BBO)
    d = f["data"][0]
    f["data"] = [d, dict(d, seqId=d["seqId"] + 1, bids=[["111.04", "1", "0", "1"]]),
                 dict(d, seqId=d["seqId"] + 2, bids=[["200", "1", "0", "1"]])]
    _, sink = feed(okx(), json.dumps(f))
    assert [u["bid"] for u in sink.updates] == [111.05, 111.04]
    assert sink.updates[1]["bid_qty"] == pytest.approx(0.1)
    assert sink.rejects == {"crossed": 1}


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


# -------------------------------------------------------------------------- Kraken
def test_kraken_sockets_subscribe_ticker_bbo():
    spec = kraken().sockets()[0]
    (sub,) = [json.loads(f) for f in spec.subscribe]
    assert sub["method"] == "subscribe"
    assert sub["params"] == {"channel": "ticker", "symbol": ["ALGO/USD", "BTC/USD"],
                             "event_trigger": "bbo", "snapshot": True}
    assert json.loads(spec.ping_text) == {"method": "ping"}


def test_kraken_ticker_doc_numbers():
    ctl, sink = feed(kraken(), KR_TICKER)
    assert ctl is None
    assert_quote(only_quote(sink), 11, 0.10025, 0.10035, 740.0, 740.0, 1695632671742648000, venue=5)


def test_kraken_ticker_snapshot_flag_int_numbers_and_missing_ts():
    f = json.loads(KR_TICKER)
    f["type"] = "snapshot"
    f["data"][0].update(symbol="BTC/USD", bid=65000, ask=65001, bid_qty=2, ask_qty=0)
    _, sink = feed(kraken(), json.dumps(f))
    assert_quote(only_quote(sink), 12, 65000.0, 65001.0, 2.0, 0.0, 1695632671742648000, flags=int(Flag.SNAPSHOT))
    del f["data"][0]["timestamp"]
    f["type"] = "update"
    _, sink = feed(kraken(), json.dumps(f))
    assert_quote(only_quote(sink), 12, 65000.0, 65001.0, 2.0, 0.0, 0, flags=int(Flag.NO_EXCHANGE_TS))


@pytest.mark.parametrize("frame,kind,symbol,detail_has", [
    (KR_ACK_BOOK, "ack", "BTC/USD", "book"),
    (KR_ACK_TICKER, "ack", "ALGO/USD", "ticker"),
    (KR_REJECT, "error", "XBT/USD", "Currency pair not supported"),
    ('{"error":"Currency pair not supported FOO/BAR","method":"subscribe","success":false}', "error", "FOO/BAR", "FOO/BAR"),
    (KR_HEARTBEAT, "heartbeat", "", ""),
    (KR_PONG, "pong", "", ""),
    (KR_STATUS, "other", "", "online"),
])
def test_kraken_control_frames(frame, kind, symbol, detail_has):
    ctl, sink = feed(kraken(), frame)
    assert ctl is not None and (ctl.kind, ctl.symbol, ctl.reconnect) == (kind, symbol, False)
    assert detail_has in ctl.detail
    assert not sink.updates and not sink.rejects


def _kr(**fields):
    f = json.loads(KR_TICKER)
    f["data"][0].update(fields)
    return json.dumps(f)


@pytest.mark.parametrize("frame,reason", [
    (KR_BOOK_SNAPSHOT, "unknown_channel"),
    (KR_BOOK_UPDATE, "unknown_channel"),
    (_kr(bid="0.10025"), "bad_shape"),           # v2 numbers are JSON numbers, not strings
    (_kr(ask=None), "bad_shape"),
    (_kr(symbol="XBT/USD"), "unknown_symbol"),
    (_kr(bid=0), "bad_price"),
    (_kr(ask=-1.5), "bad_price"),
    (_kr(bid_qty=-740.0), "bad_price"),
    (_kr(bid=0.2), "crossed"),
    (_kr(timestamp="2023-09-25 09:04"), "bad_shape"),
    (KR_TICKER.replace("0.10025", "1e400"), "bad_shape"),
    (KR_TICKER.replace("0.10025", "NaN"), "not_json"),
    ('{"channel":"ticker","type":"update","data":[]}', "bad_shape"),
    ('{"channel":"ticker","type":"update"}', "bad_shape"),
    ('{"channel":"ticker","data":{"symbol":"ALGO/USD"}}', "bad_shape"),
    ('{"type":"update"}', "bad_shape"),
    ('"heartbeat"', "bad_shape"),
    ("{'channel': 'heartbeat'}", "not_json"),
])
def test_kraken_malformed(frame, reason):
    ctl, sink = feed(kraken(), frame)
    assert ctl is None and not sink.updates
    assert sink.rejects == {reason: 1}


# ---------------------------------------------------------------------------- Gate
def test_gate_subscribe_time_in_seconds():
    spec = gate().sockets()[0]
    (sub,) = [json.loads(f) for f in spec.subscribe]
    assert sub["channel"] == "spot.book_ticker" and sub["event"] == "subscribe"
    assert sub["payload"] == ["BTC_USDT", "ETH_USDT"]
    assert isinstance(sub["time"], int) and abs(sub["time"] - time.time()) < 5


def test_gate_book_ticker_doc():
    ctl, sink = feed(gate(), GATE_UPDATE)
    assert ctl is None
    assert_quote(only_quote(sink), 21, 19177.79, 19179.38, 0.0003341504, 0.09, 1606293275123_000_000, venue=6)
    f = json.loads(GATE_UPDATE)
    f["time_ms"] = 1606293275723
    _, sink = feed(gate(), json.dumps(f))
    assert_quote(only_quote(sink), 21, 19177.79, 19179.38, 0.0003341504, 0.09, 1606293275123_000_000)


def test_gate_update_id_duplicate_out_of_order_reset():
    a = gate()
    sink = CollectingSink(recv_ns=RECV)
    frame = lambda u, b="19177.79": GATE_UPDATE.replace("48733182", str(u)).replace('"19177.79"', f'"{b}"')
    a.parse(frame(10), RECV, sink)
    a.parse(frame(10), RECV, sink)
    a.parse(frame(9), RECV, sink)
    a.parse(frame(11, "19178"), RECV, sink)
    a.parse(frame(5).replace("BTC_USDT", "ETH_USDT"), RECV, sink)
    assert [(u["instrument_id"], u["bid"]) for u in sink.updates] == [(21, 19177.79), (21, 19178.0), (22, 19177.79)]
    assert sink.rejects == {"duplicate": 1, "out_of_order": 1}
    a.on_connect(0)
    a.parse(frame(1), RECV, sink)
    assert len(sink.updates) == 4


@pytest.mark.parametrize("frame,kind,symbol,reconnect,detail_has", [
    (GATE_ACK, "ack", "", False, "spot.book_ticker"),
    (GATE_ACK_DOC, "ack", "", False, "spot.orders"),
    (GATE_ERR, "error", "BTC_USDT", False, "Alert sub"),
    (GATE_PONG, "pong", "", False, ""),
    (GATE_UPGRADE, "notice", "", True, "service upgrade"),
])
def test_gate_control_frames(frame, kind, symbol, reconnect, detail_has):
    ctl, sink = feed(gate(), frame)
    assert ctl is not None and (ctl.kind, ctl.symbol, ctl.reconnect) == (kind, symbol, reconnect)
    assert detail_has in ctl.detail
    assert not sink.updates and not sink.rejects


def _gate(**fields):
    f = json.loads(GATE_UPDATE)
    f["result"].update(fields)
    return json.dumps(f)


@pytest.mark.parametrize("frame,reason", [
    (_gate(s="DOGE_USDT"), "unknown_symbol"),
    (_gate(b="NaN"), "bad_price"),
    (_gate(a="Infinity"), "bad_price"),
    (_gate(b="0"), "bad_price"),
    (_gate(A="-0.09"), "bad_price"),
    (_gate(b="19180"), "crossed"),
    (_gate(b=""), "bad_shape"),
    (_gate(b=19177.79), "bad_shape"),
    (_gate(u="48733182"), "bad_shape"),
    (_gate(t=None), "bad_shape"),
    (_gate(t=-5), "bad_shape"),
    (_gate(t=10**17), "bad_shape"),
    ('{"channel":"spot.book_ticker","event":"update","result":null}', "bad_shape"),
    ('{"channel":"spot.trades","event":"update","result":{}}', "unknown_channel"),
    ('{"time":1}', "bad_shape"),
    ("[]", "bad_shape"),
    ("", "not_json"),
    ("\ud800", "not_json"),
])
def test_gate_malformed(frame, reason):
    ctl, sink = feed(gate(), frame)
    assert ctl is None and not sink.updates
    assert sink.rejects == {reason: 1}


# --------------------------------------------------------------- speed (loose bound)
@pytest.mark.parametrize("name,frames", [
    ("okx", None), ("kraken", [KR_TICKER.encode()]), ("gate", None), ("coinbase", None)])
def test_bbo_frame_parse_is_microseconds(name, frames):
    class Null:
        n = 0
        def quote(self, *a):
            self.n += 1
        def reject(self, reason, n=1):
            raise AssertionError(reason)
    a = FACTORIES[name]()
    if name == "okx":
        frames = [OKX_BBO.replace("363996337", str(i)).encode() for i in range(1, 2001)]
    elif name == "gate":
        frames = [GATE_UPDATE.replace("48733182", str(i)).encode() for i in range(1, 2001)]
    elif name == "coinbase":
        frames = [cb_frame(i, [{"type": "update", "product_id": "BTC-USD", "updates": [
            lvl("bid", "100", str(1 + i % 7))]}]).encode() for i in range(1, 2001)]
    else:
        frames = frames * 2000
    sink = Null()
    best = float("inf")
    for _ in range(3):
        a.on_connect(0)
        if name == "coinbase":
            a.parse(cb_frame(0, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
                lvl("bid", str(100 - i * 0.01), "1") for i in range(500)] + [
                lvl("offer", str(101 + i * 0.01), "1") for i in range(500)]}]), RECV, CollectingSink())
        t0 = time.perf_counter()
        for f in frames:
            a.parse(f, RECV, sink)
        best = min(best, (time.perf_counter() - t0) / len(frames))
    assert sink.n > 0
    assert best < 25e-6, f"{name}: {best * 1e6:.1f} us per frame"


# -------------------------------------------------------- fuzzing: parse never raises
VALID = {
    "okx": [OKX_BBO, OKX_FUNDING, OKX_ACK, OKX_ERR_60012, OKX_ERR_60018, OKX_NOTICE, OKX_TICKERS, "pong",
            OKX_BBO.replace("BCH-USDT-SWAP", "BTC-USDT")],
    "coinbase": [CB_L2_SNAPSHOT.replace('"sequence_num": 0', '"sequence_num": 1'),
                 cb_frame(1, [{"type": "update", "product_id": "BTC-USD", "updates": [
                     lvl("bid", "10.5", "1"), lvl("offer", "11", "0"), lvl("offer", "10.75", "2")]}]),
                 CB_SUBS, CB_ERROR, CB_TICKER, CB_HEARTBEAT_DOC, CB_HEARTBEAT_PROD],
    "kraken": [KR_TICKER, KR_STATUS, KR_ACK_BOOK, KR_ACK_TICKER, KR_REJECT, KR_BOOK_SNAPSHOT,
               KR_BOOK_UPDATE, KR_HEARTBEAT, KR_PONG],
    "gate": [GATE_UPDATE, GATE_ACK, GATE_ERR, GATE_PONG, GATE_UPGRADE],
}
_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                       st.text(max_size=12), st.sampled_from(["0", "-1", "nan", "inf", "1e999", "", "BTC-USD",
                                                              "bid", "offer", "snapshot", "update", "ticker"]))
_JSON = st.recursive(_JSON_LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=6)


def _mutate_json(obj, data):
    """Replace, delete or retype one random node of a decoded JSON document."""
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,))
    walk(obj, ())
    path = data.draw(st.sampled_from(paths))
    if not path:
        return data.draw(_JSON)
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    action = data.draw(st.sampled_from(["replace", "delete", "stringify", "dup"]))
    if action == "delete":
        del parent[path[-1]]
    elif action == "stringify":
        parent[path[-1]] = json.dumps(parent[path[-1]])
    elif action == "dup" and isinstance(parent, list):
        parent.append(parent[path[-1]])
    else:
        parent[path[-1]] = data.draw(_JSON)
    return obj


def _is_number_text(v):
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _renumber(obj, data):
    """Give one or two numeric leaves (JSON numbers or numeric strings) a random
    value of the same representation: reaches the price/size/ts/seq checks."""
    leaves = []

    def walk(node, path):
        if isinstance(node, dict):
            items = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            if (isinstance(node, (int, float)) and not isinstance(node, bool)) or (
                    isinstance(node, str) and node and _is_number_text(node)):
                leaves.append(path)
            return
        for k, v in items:
            walk(v, path + (k,))
    walk(obj, ())
    for _ in range(data.draw(st.integers(1, 2))):
        if not leaves:
            break
        path = data.draw(st.sampled_from(leaves))
        parent = obj
        for p in path[:-1]:
            parent = parent[p]
        old = parent[path[-1]]
        new = data.draw(st.one_of(st.integers(-5, 10**14), st.floats(-1e3, 1e15, allow_nan=False),
                                  st.sampled_from([0, 1, 740.0, 0.5, 111.07, 10**19])))
        if isinstance(old, str):
            new = data.draw(st.sampled_from([str(new), "nan", "inf", "-0"])) if data.draw(st.booleans()) else str(new)
        elif isinstance(old, int) and not isinstance(new, int):
            new = int(new)
        parent[path[-1]] = new
    return obj


def _mutate_bytes(raw: bytes, data) -> bytes:
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        i = data.draw(st.integers(0, max(len(b) - 1, 0)))
        if op == "flip" and b:
            b[i] = data.draw(st.integers(0, 255))
        elif op == "delete" and b:
            del b[i:i + data.draw(st.integers(1, 8))]
        elif op == "insert":
            b[i:i] = data.draw(st.sampled_from([b'"', b",", b"}", b"]", b"-", b"0", b"e9", b"\\", b"\xff", b"null"]))
        else:
            del b[i:]
    return bytes(b)


def _frame_strategy(name):
    valid = VALID[name]

    @st.composite
    def frames(draw):
        kind = draw(st.sampled_from(["bytes", "text", "json", "json", "raw", "raw", "num", "num", "valid"]))
        if kind == "bytes":
            return draw(st.binary(max_size=200))
        if kind == "text":
            return draw(st.text(max_size=100))
        base = draw(st.sampled_from(valid))
        if kind == "valid":
            return base
        if kind in ("json", "num") and base[:1] == "{":
            mutate = _renumber if kind == "num" else _mutate_json
            obj = mutate(json.loads(base), draw(st.data()))
            try:
                return json.dumps(obj)
            except ValueError:
                return base
        return _mutate_bytes(base.encode() if isinstance(base, str) else base, draw(st.data()))
    return frames()


def _prime(name, adapter):
    if name == "coinbase":
        adapter.parse(cb_frame(0, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
            lvl("bid", "10", "1"), lvl("offer", "11", "1")]}]), RECV, CollectingSink())


@pytest.mark.parametrize("name", ["okx", "coinbase", "kraken", "gate"])
def test_fuzz_parse_never_raises_and_accounts_for_every_frame(name):
    outcomes = {"update": 0, "control": 0, "reject": 0, "book": 0}

    @settings(max_examples=2000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_frame_strategy(name))
    def check(frame):
        a = FACTORIES[name]()
        _prime(name, a)
        applied = getattr(a, "applied", 0)
        sink = CollectingSink(recv_ns=RECV)
        ctl = a.parse(frame, RECV, sink)           # must not raise
        assert "parse_error" not in sink.rejects, frame
        assert ctl is None or isinstance(ctl, Control)
        for u in sink.updates:
            if u["kind"] == Kind.QUOTE:
                assert 0 < u["bid"] <= u["ask"] < math.inf
                assert 0 <= u["bid_qty"] < math.inf and 0 <= u["ask_qty"] < math.inf
            else:
                assert u["kind"] == Kind.FUNDING and math.isfinite(u["funding_rate"])
            assert 0 <= u["exchange_ts_ns"] < 2**63
        book_only = getattr(a, "applied", 0) > applied
        assert sink.updates or ctl is not None or sum(sink.rejects.values()) >= 1 or book_only, frame
        outcomes["update" if sink.updates else "control" if ctl else "reject" if sink.rejects else "book"] += 1

    check()
    # the mutated valid frames must reach the data path, not only the rejects
    assert outcomes["update"] >= 5 and outcomes["reject"] >= 200, outcomes


def test_every_reject_reason_is_counted_once_per_frame_for_random_garbage():
    rng = random.Random(7)
    for name, make in FACTORIES.items():
        a = make()
        sink = CollectingSink()
        for _ in range(500):
            a.parse(bytes(rng.randrange(256) for _ in range(rng.randrange(40))), RECV, sink)
        assert sum(sink.rejects.values()) == 500 and set(sink.rejects) <= {"not_json", "bad_shape"}, (name, sink.rejects)
