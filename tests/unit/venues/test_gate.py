"""The Gate.io v4 adapter (``spot.book_ticker``): documented frames, update-id handling,
control frames, malformed input, and fuzzing (parse never raises).

Fixtures are the example frames of docs/venues.md ("Gate")."""
from __future__ import annotations

import json
import time

import pytest

from arbpipe.feeds.venues.registry import get
from arbpipe.feeds.venues.sink import CollectingSink
from arbpipe.symbols import Instrument
from tests.unit.venues.common_okx_coinbase_kraken_gate import (
    RECV, assert_quote, feed, fuzz_parse_never_raises, garbage_counted_once, only_quote,
    parse_stream)

# --------------------------------------------------------------------------- fixtures
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
GATE_INSTRUMENTS = [Instrument("BTC_USDT", 21), Instrument("ETH_USDT", 22)]


def gate():
    return get("gate")(GATE_INSTRUMENTS, venue_id=6)


FACTORIES = {"gate": gate}


# ----------------------------------------------------------------------- registry
@pytest.mark.parametrize("name,path,url", [
    ("gate", "/ws/v4/", "wss://api.gateio.ws"),
])
def test_registered_with_endpoint(name, path, url):
    a = FACTORIES[name]()
    assert a.name == name and a.default_url == url
    specs = a.sockets()
    assert len(specs) == 1 and specs[0].path == path
    assert all(isinstance(f, str) for f in specs[0].subscribe)


@pytest.mark.parametrize("name,native,canonical", [
    ("gate", "BTC_USDT", "BTC/USDT"), ("gate", "BTC-USDT", None), ("gate", "BTC_", None),
])
def test_native_to_canonical(name, native, canonical):
    assert get(name).native_to_canonical(native) == canonical


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


# ------------------------------------------- a stream of frames (cost: arbpipe bench feeds)
def test_bbo_frame_stream_one_quote_per_frame():
    frames = [GATE_UPDATE.replace("48733182", str(i)).encode() for i in range(1, 2001)]
    assert parse_stream(gate(), frames) == [len(frames)] * 2   # and again after a reconnect


# -------------------------------------------------------- fuzzing: parse never raises
VALID = {
    "gate": [GATE_UPDATE, GATE_ACK, GATE_ERR, GATE_PONG, GATE_UPGRADE],
}


def test_fuzz_parse_never_raises_and_accounts_for_every_frame():
    fuzz_parse_never_raises(gate, VALID["gate"])


def test_every_reject_reason_is_counted_once_per_frame_for_random_garbage():
    garbage_counted_once(gate)
