"""The Gate.io v4 adapter (``spot.book_ticker``): documented frames, update-id handling,
control frames, malformed input, and fuzzing (parse never raises). L2 books
(``spot.order_book_update`` + the REST ``/spot/order_book`` snapshot): the documented
frames, the rules, and hypothesis streams against the reference book of test_binance.py.

Fixtures are the example frames of docs/venues.md ("Gate")."""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings

from arbpipe.feeds.venues.registry import get
from arbpipe.feeds.venues.sink import CollectingSink
from arbpipe.symbols import Instrument
from shm_layouts import Kind
from shm_layouts.records import BookFault
from tests.unit.venues.test_binance import STEPS, run_depth_stream
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


# =======================================================================================
# L2 books (depth > 0): spot.order_book_update + the REST order_book snapshot
# (docs/venues.md, "Gate", "L2 book"); the reference and the generated streams are the
# Binance spot ones (tests/unit/venues/test_binance.py: same rules, Gate's frames)
# =======================================================================================
# the documented frames, verbatim: the spot.order_book_update notification, the
# GET /spot/order_book response (with_id=true), the subscribe request
GATE_DEPTH_DOC = """{
  "time": 1606294781,
  "time_ms": 1606294781236,
  "channel": "spot.order_book_update",
  "event": "update",
  "result": {
    "t": 1606294781123,
    "e": "depthUpdate",
    "E": 1606294781,
    "s": "BTC_USDT",
    "U": 48776301,
    "u": 48776306,
    "b": [
      ["19137.74", "0.0001"],
      ["19088.37", "0"]
    ],
    "a": [["19137.75", "0.6135"]]
  }
}"""
GATE_REST_DOC = """{
  "id": 123456,
  "current": 1623898993123,
  "update": 1623898993121,
  "asks": [
    [
      "1.52",
      "1.151"
    ],
    [
      "1.53",
      "1.218"
    ]
  ],
  "bids": [
    [
      "1.17",
      "201.863"
    ],
    [
      "1.16",
      "725.464"
    ]
  ]
}"""
GATE_DEPTH_SUB = ('{"time": 1606294781, "channel": "spot.order_book_update", "event": "subscribe", '
                  '"payload": ["BTC_USDT", "100ms"]}')
GATE_DEPTH_ACK = ('{"time":1606294781,"time_ms":1606294781236,"channel":"spot.order_book_update",'
                  '"event":"subscribe","error":null,"result":{"status":"success"}}')


def gate_depth(depth=5):
    a = gate()
    a.depth = depth
    return a


def gsink(depth=5):
    return CollectingSink(6, recv_ns=RECV, depth=depth)


def _books(sink):
    return [u for u in sink.updates if u["kind"] == "book"]


def _gd(U, u, b=(), a=(), s="BTC_USDT", **extra):
    return json.dumps({"time": 1606294781, "channel": "spot.order_book_update", "event": "update",
                       "result": {"t": 1606294781123, "e": "depthUpdate", "E": 1606294781, "s": s,
                                  "U": U, "u": u, "b": [list(x) for x in b],
                                  "a": [list(x) for x in a], **extra}})


def _gsnap(i, b=(("19137.70", "1"),), a=(("19137.80", "2"),)):
    return json.dumps({"id": i, "current": 1623898993123, "update": 1623898993121,
                       "asks": [list(x) for x in a], "bids": [list(x) for x in b]}).encode()


def test_gate_depth_subscribes_one_pair_a_request_and_rest_path():
    a = gate_depth()
    subs = [json.loads(f) for f in a.sockets()[0].subscribe]
    ref = json.loads(GATE_DEPTH_SUB)
    assert [{k: v for k, v in s.items() if k != "time"} for s in subs] == [
        {"channel": "spot.order_book_update", "event": "subscribe", "payload": [p, "100ms"]}
        for p in ("BTC_USDT", "ETH_USDT")]
    assert set(subs[0]) == set(ref) and abs(subs[0]["time"] - time.time()) < 5
    assert a.supports_depth and a.default_rest_url == "https://api.gateio.ws"
    assert a.rest_snapshot_path("BTC_USDT") == \
        "/api/v4/spot/order_book?currency_pair=BTC_USDT&limit=100&with_id=true"
    ctl, sink = feed(a, GATE_DEPTH_ACK, gsink())
    assert ctl.kind == "ack" and not sink.rejects
    a.refused.add("ETH_USDT")                     # one refused pair: the others stay
    assert [json.loads(f)["payload"][0] for f in a.sockets()[0].subscribe] == ["BTC_USDT"]


def test_gate_depth_documented_frames():
    a, sink = gate_depth(), gsink()
    ctl = a.parse(GATE_DEPTH_DOC, RECV, sink)
    assert ctl.kind == "resync" and ctl.symbol == "BTC_USDT" and sink.updates == []
    # baseId + 1 within [U, u]: 48776301 <= 48776303 + 1 <= 48776306
    assert a.on_rest_snapshot("BTC_USDT", _gsnap(48776303, b=[("19137.74", "5"), ("19088.37", "2"),
                                                              ("19000", "1")]), sink) is None
    snapshot, diff = _books(sink)
    assert snapshot["exchange_ts_ns"] == 1623898993121 * 1_000_000          # "update"
    assert diff["update_id"] == 48776306 and diff["exchange_ts_ns"] == 1606294781123 * 1_000_000
    assert diff["bids"] == [[19137.74, 0.0001], [19000.0, 1.0]]               # 19088.37 removed
    assert diff["asks"] == [[19137.75, 0.6135], [19137.8, 2.0]]
    q = [u for u in sink.updates if u["kind"] == Kind.QUOTE][-1]
    assert (q["bid"], q["ask"], q["instrument_id"]) == (19137.74, 19137.75, 21)
    # the documented REST body (id 123456), for ETH_USDT (its levels fit no BTC book)
    eth = _gd(123450, 123460, b=[("1.17", "1")], s="ETH_USDT")
    assert a.parse(eth, RECV, sink).kind == "resync"
    assert a.on_rest_snapshot("ETH_USDT", GATE_REST_DOC.encode(), sink) is None
    assert _books(sink)[-1]["bids"] == [[1.17, 1.0], [1.16, 725.464]]
    assert _books(sink)[-2]["asks"] == [[1.52, 1.151], [1.53, 1.218]]
    assert sink.book_of(22).update_id == 123460


def test_gate_depth_rules():
    a, sink = gate_depth(), gsink()
    a.parse(_gd(11, 12), RECV, sink)
    assert a.on_rest_snapshot("BTC_USDT", _gsnap(9), sink).kind == "resync"      # 9 + 1 < 11
    assert sink.resyncs_by_fault == {int(BookFault.STALE_SNAPSHOT): 1}
    assert a.on_rest_snapshot("BTC_USDT", _gsnap(10), sink) is None and sink.is_ready(21)
    assert a.parse(_gd(13, 15), RECV, sink) is None and sink.book_of(21).update_id == 15
    ctl = a.parse(_gd(17, 17), RECV, sink)                                        # 16 lost
    assert ctl.kind == "resync" and not sink.is_ready(21)
    assert [u["fault"] for u in sink.updates if u["kind"] == Kind.STATUS] == [BookFault.GAP]
    assert a.on_rest_snapshot("BTC_USDT", _gsnap(16), sink) is None
    assert sink.book_of(21).update_id == 17
    ctl = a.parse(_gd(17, 17), RECV, sink)                                        # duplicate
    assert ctl.kind == "resync" and sink.resyncs_by_fault[int(BookFault.GAP)] == 2
    bad = json.loads(GATE_DEPTH_DOC)
    del bad["result"]["U"]
    assert a.parse(json.dumps(bad), RECV, sink) is None and sink.rejects["bad_shape"] == 1


def test_gate_depth_full_book_replaces_the_local_one():
    """``full: true`` (Gate's 2025 change of spot.order_book_update): the message is the
    whole book; the next update must start at its ``u`` + 1."""
    a, sink = gate_depth(), gsink()
    full = _gd(90, 100, b=[("19137.70", "1")], a=[("19137.80", "2")], full=True, l="100")
    assert a.parse(full, RECV, sink) is None and sink.is_ready(21)
    assert _books(sink)[-1]["snapshot"] and sink.book_of(21).update_id == 100
    assert a.parse(_gd(101, 102, b=[("19137.71", "3")]), RECV, sink) is None
    assert _books(sink)[-1]["bids"][0] == [19137.71, 3.0]
    # a REST snapshot arriving after a full book changed nothing
    assert a.on_rest_snapshot("BTC_USDT", _gsnap(50), sink) is None
    assert sink.book_of(21).update_id == 102
    ctl = a.parse(_gd(104, 104), RECV, sink)
    assert ctl.kind == "resync" and not sink.is_ready(21)
    assert a.parse(full.replace('"u": 100', '"u": 110'), RECV, sink) is None   # heals it
    assert sink.is_ready(21) and sink.book_of(21).update_id == 110
    garbage = _gd(111, 111, b=[("19137.70", "x")], full=True)
    assert a.parse(garbage, RECV, sink).kind == "resync" and not sink.is_ready(21)
    assert sink.resyncs_by_fault[int(BookFault.BAD_DATA)] == 1


def test_gate_depth_mode_and_bbo_mode_keep_to_their_channel():
    a, sink = gate_depth(), gsink()
    assert a.parse(GATE_UPDATE, RECV, sink) is None and sink.rejects == {"unsupported": 1}
    ctl, sink = feed(gate(), GATE_DEPTH_DOC)                      # depth 0: as before books
    assert ctl is None and sink.rejects == {"unknown_channel": 1}


@pytest.mark.parametrize("body,reason", [(b"", "not_json"), (b"[]", "bad_shape"),
                                         (b'{"label":"INVALID_CURRENCY_PAIR"}', "bad_shape"),
                                         (b'{"id":-1,"asks":[],"bids":[]}', "bad_shape"),
                                         (b'{"id":1,"asks":[],"bids":[],"update":-5}', "bad_ts")])
def test_gate_depth_bad_rest_body(body, reason):
    a, sink = gate_depth(), gsink()
    a.parse(_gd(1, 1), RECV, sink)
    ctl = a.on_rest_snapshot("BTC_USDT", body, sink)
    assert ctl.kind == "resync" and sink.rejects == {reason: 1}
    assert sink.resyncs_by_fault == {int(BookFault.SNAPSHOT_FAILED): 1}


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=STEPS)
def test_gate_depth_generated_streams_match_the_reference_book(steps):
    run_depth_stream(gate_depth(5), "BTC_USDT", 21, steps, "gate")
