"""The Kraken v2 adapter (``ticker`` with ``event_trigger: bbo``): documented frames,
control frames, malformed input, and fuzzing (parse never raises).

Fixtures are the example frames of docs/venues.md ("Kraken")."""
from __future__ import annotations

import json

import pytest

from arbpipe.feeds.venues.registry import get
from arbpipe.symbols import Instrument
from shm_layouts import Flag
from tests.unit.venues.common_okx_coinbase_kraken_gate import (
    assert_quote, feed, fuzz_parse_never_raises, garbage_counted_once, only_quote, parse_stream)

# --------------------------------------------------------------------------- fixtures
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

# ------------------------------------------------------------------------- adapters
KR_INSTRUMENTS = [Instrument("ALGO/USD", 11), Instrument("BTC/USD", 12)]


def kraken():
    return get("kraken")(KR_INSTRUMENTS, venue_id=5)


FACTORIES = {"kraken": kraken}


# ----------------------------------------------------------------------- registry
@pytest.mark.parametrize("name,path,url", [
    ("kraken", "/v2", "wss://ws.kraken.com"),
])
def test_registered_with_endpoint(name, path, url):
    a = FACTORIES[name]()
    assert a.name == name and a.default_url == url
    specs = a.sockets()
    assert len(specs) == 1 and specs[0].path == path
    assert all(isinstance(f, str) for f in specs[0].subscribe)


@pytest.mark.parametrize("name,native,canonical", [
    ("kraken", "BTC/USD", "BTC/USD"), ("kraken", "ETH/USDT", "ETH/USDT"), ("kraken", "BTCUSD", None),
])
def test_native_to_canonical(name, native, canonical):
    assert get(name).native_to_canonical(native) == canonical


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


# ------------------------------------------- a stream of frames (cost: arbpipe bench feeds)
def test_bbo_frame_stream_one_quote_per_frame():
    assert parse_stream(kraken(), [KR_TICKER.encode()] * 2000) == [2000] * 2   # no seq: no dedupe


# -------------------------------------------------------- fuzzing: parse never raises
VALID = {
    "kraken": [KR_TICKER, KR_STATUS, KR_ACK_BOOK, KR_ACK_TICKER, KR_REJECT, KR_BOOK_SNAPSHOT,
               KR_BOOK_UPDATE, KR_HEARTBEAT, KR_PONG],
}


def test_fuzz_parse_never_raises_and_accounts_for_every_frame():
    fuzz_parse_never_raises(kraken, VALID["kraken"])


def test_every_reject_reason_is_counted_once_per_frame_for_random_garbage():
    garbage_counted_once(kraken)
