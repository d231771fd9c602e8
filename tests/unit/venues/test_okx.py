"""The OKX adapter (``bbo-tbt`` and ``funding-rate``): documented frames, contract sizes,
sequence handling, control frames, malformed input, and fuzzing (parse never raises).

Fixtures are the example frames of docs/venues.md ("OKX")."""
from __future__ import annotations

import json

import pytest

from arbpipe.feeds.venues.base import Control
from arbpipe.feeds.venues.registry import get
from arbpipe.feeds.venues.sink import CollectingSink
from arbpipe.symbols import Instrument
from shm_layouts import Kind
from tests.unit.venues.common_okx_coinbase_kraken_gate import (
    RECV, assert_quote, feed, fuzz_parse_never_raises, garbage_counted_once, only_quote,
    parse_stream)

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

# ------------------------------------------------------------------------- adapters
OKX_INSTRUMENTS = [Instrument("BCH-USDT-SWAP", 7, 0.1), Instrument("BTC-USD-SWAP", 9, 100.0),
                   Instrument("BTC-USDT", 1)]


def okx():
    return get("okx")(OKX_INSTRUMENTS, venue_id=3)


FACTORIES = {"okx": okx}


# ----------------------------------------------------------------------- registry
@pytest.mark.parametrize("name,path,url", [
    ("okx", "/ws/v5/public", "wss://ws.okx.com:8443"),
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


# ------------------------------------------- a stream of frames (cost: arbpipe bench feeds)
def test_bbo_frame_stream_one_quote_per_frame():
    frames = [OKX_BBO.replace("363996337", str(i)).encode() for i in range(1, 2001)]
    assert parse_stream(okx(), frames) == [len(frames)] * 2    # and again after a reconnect


# -------------------------------------------------------- fuzzing: parse never raises
VALID = {
    "okx": [OKX_BBO, OKX_FUNDING, OKX_ACK, OKX_ERR_60012, OKX_ERR_60018, OKX_NOTICE, OKX_TICKERS, "pong",
            OKX_BBO.replace("BCH-USDT-SWAP", "BTC-USDT")],
}


def test_fuzz_parse_never_raises_and_accounts_for_every_frame():
    fuzz_parse_never_raises(okx, VALID["okx"])


def test_every_reject_reason_is_counted_once_per_frame_for_random_garbage():
    garbage_counted_once(okx)
