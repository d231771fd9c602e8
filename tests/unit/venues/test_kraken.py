"""The Kraken v2 adapter (``ticker`` with ``event_trigger: bbo``): documented frames,
control frames, malformed input, and fuzzing (parse never raises); with ``depth`` > 0 the
``book`` channel: the documented checksum example, every sync rule and its resync, and
hypothesis streams against a reference venue.

Fixtures are the example frames of docs/venues.md ("Kraken")."""
from __future__ import annotations

import json
import zlib
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from arbpipe.feeds.venues.base import Control
from arbpipe.feeds.venues.kraken import _ck, book_depth, checksum
from arbpipe.feeds.venues.registry import get
from arbpipe.feeds.venues.sink import CollectingSink
from arbpipe.sim.market import fixed, trim
from arbpipe.symbols import Instrument
from shm_layouts import Flag
from shm_layouts.records import BookFault
from tests.unit.venues.common_okx_coinbase_kraken_gate import (
    RECV, assert_quote, feed, fuzz_parse_never_raises, garbage_counted_once, only_quote,
    parse_stream)

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


# ============================================================ L2 book (depth > 0)
# docs/venues.md, "Kraken", "L2 book". The documented book example (MATIC/USD, the
# whole 10-level snapshot and the update after it, with their checksums).
KR_BOOK_SNAPSHOT_DOC = """{
    "channel": "book",
    "type": "snapshot",
    "data": [
        {
            "symbol": "MATIC/USD",
            "bids": [
                {"price": 0.5666, "qty": 4831.75496356},
                {"price": 0.5665, "qty": 6658.22734739},
                {"price": 0.5664, "qty": 18724.91513344},
                {"price": 0.5663, "qty": 11563.92544914},
                {"price": 0.5662, "qty": 14006.65365711},
                {"price": 0.5661, "qty": 17454.85679807},
                {"price": 0.566, "qty": 18097.1547},
                {"price": 0.5659, "qty": 33644.89175666},
                {"price": 0.5658, "qty": 148.3464},
                {"price": 0.5657, "qty": 606.70854372}
            ],
            "asks": [
                {"price": 0.5668, "qty": 4410.79769741},
                {"price": 0.5669, "qty": 4655.40412487},
                {"price": 0.567, "qty": 49844.89424998},
                {"price": 0.5671, "qty": 24306.41678},
                {"price": 0.5672, "qty": 29783.25223475},
                {"price": 0.5673, "qty": 57234.71239278},
                {"price": 0.5674, "qty": 45065.04744},
                {"price": 0.5675, "qty": 5912.76380354},
                {"price": 0.5676, "qty": 42514.92434778},
                {"price": 0.5677, "qty": 36304.0847022}
            ],
            "checksum": 2439117997
        }
    ]
}"""
# the pair's precisions, in the shape of the ``instrument`` channel (fields trimmed)
KR_INSTRUMENT = ('{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[{"symbol":'
                 '"MATIC/USD","base":"MATIC","quote":"USD","status":"online","qty_precision":8,'
                 '"qty_increment":1e-08,"price_precision":4,"price_increment":0.0001}]}}')
MATIC = Instrument("MATIC/USD", 21)


def kraken_book(depth=10, instruments=(MATIC,)):
    a = get("kraken")(list(instruments), venue_id=5)
    a.depth = depth
    return a, CollectingSink(5, recv_ns=RECV, depth=depth)


def _doc_levels():
    d = json.loads(KR_BOOK_SNAPSHOT_DOC)["data"][0]
    as_dec = lambda rows: [(Decimal(json.dumps(r["price"])), Decimal(json.dumps(r["qty"]))) for r in rows]
    return as_dec(d["asks"]), as_dec(d["bids"])


def test_kraken_checksum_documented_values():
    asks, bids = _doc_levels()
    assert checksum(asks, bids, 4, 8) == 2439117997
    bids[-1] = (Decimal("0.5657"), Decimal("1098.3947558"))          # the documented update
    assert checksum(asks, bids, 4, 8) == 2114181697
    # the documented level string, and why the pair's fixed precision matters: the JSON
    # number text ("0.566", "18097.1547") gives another value
    assert _ck(Decimal("45285.2"), 1) + _ck(Decimal("0.00100000"), 8) == "452852100000"
    asks, bids = _doc_levels()
    text = "".join(str(p).replace(".", "").lstrip("0") + str(q).replace(".", "").lstrip("0")
                   for p, q in asks + bids)
    assert zlib.crc32(text.encode()) == 3830085102 != 2439117997


@pytest.mark.parametrize("with_instrument", [True, False])
def test_kraken_book_documented_snapshot_and_update(with_instrument):
    a, sink = kraken_book()
    if with_instrument:
        ctl = a.parse(KR_INSTRUMENT, RECV, sink)
        assert ctl.kind == "other" and "1 pairs" in ctl.detail
    assert a.parse(KR_BOOK_SNAPSHOT_DOC, RECV, sink) is None
    assert a.precision["MATIC/USD"] == (4, 8)        # told, or learnt from the checksum
    assert not sink.rejects and not sink.resyncs_by_fault and sink.is_ready(21)
    book, quote = sink.updates
    assert book["kind"] == "book" and book["snapshot"] and book["instrument_id"] == 21
    assert book["bids"][0] == [0.5666, 4831.75496356] and book["asks"][-1] == [0.5677, 36304.0847022]
    assert len(book["bids"]) == len(book["asks"]) == 10
    assert_quote(quote, 21, 0.5666, 0.5668, 4831.75496356, 4410.79769741, 0)
    sink.clear()
    assert a.parse(KR_BOOK_UPDATE, RECV, sink) is None
    assert not sink.rejects and not sink.resyncs_by_fault
    (book,) = sink.updates                          # a deep level changed: no QUOTE
    assert book["bids"][-1] == [0.5657, 1098.3947558]
    assert book["exchange_ts_ns"] == 1696613755440295000
    sink.clear()
    assert a.parse(KR_BOOK_UPDATE, RECV, sink) is None      # the same update again: a replay
    assert sink.rejects == {"duplicate": 1} and not sink.updates


@pytest.mark.parametrize("frame,kind,symbol,detail_has", [
    (KR_ACK_BOOK, "ack", "BTC/USD", "book"),
    (KR_REJECT, "error", "XBT/USD", "Currency pair not supported"),
    (KR_HEARTBEAT, "heartbeat", "", ""),
    (KR_PONG, "pong", "", ""),
    (KR_STATUS, "other", "", "online"),
])
def test_kraken_depth_control_frames(frame, kind, symbol, detail_has):
    a, sink = kraken_book(instruments=KR_INSTRUMENTS)
    ctl = a.parse(frame, RECV, sink)
    assert ctl is not None and (ctl.kind, ctl.symbol, ctl.reconnect) == (kind, symbol, False)
    assert detail_has in ctl.detail and not sink.updates and not sink.rejects


@pytest.mark.parametrize("frame,reason", [
    (KR_TICKER, "unknown_channel"),              # not subscribed with books
    ('{"channel":"book","type":"update","data":[]}', "bad_shape"),
    ('{"channel":"book","type":"weird","data":[{"symbol":"MATIC/USD"}]}', "bad_shape"),
    ('{"channel":"book","type":"update","data":{"symbol":"MATIC/USD"}}', "bad_shape"),
    ('{"channel":"book","type":"update","data":[{"symbol":"XBT/USD","bids":[],"asks":[],"checksum":0}]}',
     "unknown_symbol"),
    ('{"channel":"instrument","type":"snapshot","data":[]}', "bad_shape"),
    ("{", "not_json"),
])
def test_kraken_depth_malformed(frame, reason):
    a, sink = _ready_matic()
    ctl = a.parse(frame, RECV, sink)
    assert ctl is None and not sink.updates and sink.rejects == {reason: 1}
    assert sink.is_ready(21)          # not of this book: it is not touched


def test_kraken_depth_sockets_and_resubscribe():
    assert [book_depth(n) for n in (1, 10, 11, 20, 25, 26, 100, 101, 500, 1000, 5000)] == \
        [10, 10, 25, 25, 25, 100, 100, 500, 500, 1000, 1000]
    a, _ = kraken_book(depth=20, instruments=KR_INSTRUMENTS)
    assert a.supports_depth
    spec = a.sockets()[0]
    inst, book = [json.loads(f) for f in spec.subscribe]
    assert inst["params"] == {"channel": "instrument", "snapshot": True}
    assert book["params"] == {"channel": "book", "symbol": ["ALGO/USD", "BTC/USD"], "depth": 25,
                              "snapshot": True}
    unsub, sub = [json.loads(f) for f in a.resubscribe("BTC/USD,ALGO/USD")]
    assert unsub["method"] == "unsubscribe" and sub["method"] == "subscribe"
    assert unsub["params"] == {"channel": "book", "symbol": ["BTC/USD", "ALGO/USD"], "depth": 25}
    assert sub["params"] == {"channel": "book", "symbol": ["BTC/USD", "ALGO/USD"], "depth": 25,
                             "snapshot": True}


def _fault_statuses(sink):
    return [u["fault"] for u in sink.updates if u.get("fault")]


def test_kraken_checksum_mismatch_resyncs_by_resubscribing():
    a, sink = kraken_book()
    a.parse(KR_INSTRUMENT, RECV, sink)
    a.parse(KR_BOOK_SNAPSHOT_DOC, RECV, sink)
    sink.clear()
    bad = KR_BOOK_UPDATE.replace("2114181697", "2114181696")
    ctl = a.parse(bad, RECV, sink)
    assert ctl == Control("resync", symbol="MATIC/USD", detail="book")
    assert _fault_statuses(sink) == [BookFault.CHECKSUM] and not sink.is_ready(21)
    assert sink.resyncs_by_fault == {BookFault.CHECKSUM: 1}
    # until the new subscription's ack: updates are in flight, snapshots belong to the old one
    sink.clear()
    assert a.parse(KR_BOOK_UPDATE, RECV, sink) is None
    assert a.parse(KR_BOOK_SNAPSHOT_DOC, RECV, sink) is None
    assert sink.rejects == {"no_snapshot": 1, "out_of_order": 1} and not sink.updates
    unsub_ack = ('{"method":"unsubscribe","result":{"channel":"book","depth":10,"symbol":"MATIC/USD"},'
                 '"success":true,"time_in":"2023-10-06T17:35:55.440295Z","time_out":"2023-10-06T17:35:55.440295Z"}')
    sub_ack = ('{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,'
               '"symbol":"MATIC/USD"},"success":true,"time_in":"2023-10-06T17:35:55.440295Z",'
               '"time_out":"2023-10-06T17:35:55.440295Z"}')
    assert a.parse(unsub_ack, RECV, sink).kind == "ack"
    assert a.parse(KR_BOOK_SNAPSHOT_DOC, RECV, sink) is None
    assert sink.rejects["out_of_order"] == 2
    assert a.parse(sub_ack, RECV, sink).kind == "ack"
    assert a.parse(KR_BOOK_SNAPSHOT_DOC, RECV, sink) is None
    assert sink.is_ready(21) and sink.updates[0]["snapshot"]
    assert a.parse(KR_BOOK_UPDATE, RECV, sink) is None and sink.updates[-1]["bids"][-1] == [0.5657, 1098.3947558]


def test_kraken_update_before_snapshot_is_an_early_diff():
    a, sink = kraken_book()
    ctl = a.parse(KR_BOOK_UPDATE, RECV, sink)
    assert ctl.kind == "resync" and ctl.symbol == "MATIC/USD"
    assert sink.resyncs_by_fault == {BookFault.EARLY_DIFF: 1} and not sink.updates
    # after a reconnect (on_connect) every pair starts over: the snapshot is taken again
    a.on_connect(0)
    assert a.parse(KR_BOOK_SNAPSHOT_DOC, RECV, sink) is None and sink.is_ready(21)


def _kr_book(typ, bids, asks, ck, symbol="MATIC/USD", ts="2023-10-06T17:35:55.440295Z"):
    """A book frame; a level's numbers are written as given (text is the JSON token)."""
    tok = lambda v: v if isinstance(v, str) else json.dumps(v)
    lv = lambda rows: "[" + ",".join('{"price":%s,"qty":%s}' % (tok(p), tok(q)) for p, q in rows) + "]"
    ck = "" if ck is None else ',"checksum":%d' % ck
    return ('{"channel":"book","type":"%s","data":[{"symbol":"%s","bids":%s,"asks":%s%s,'
            '"timestamp":"%s"}]}' % (typ, symbol, lv(bids), lv(asks), ck, ts))


def _ready_matic(depth=10):
    a, sink = kraken_book(depth)
    a.parse(KR_INSTRUMENT, RECV, sink)
    a.parse(KR_BOOK_SNAPSHOT_DOC, RECV, sink)
    sink.clear()
    return a, sink


@pytest.mark.parametrize("bids,asks,ck,reason", [
    ([[0.5657, -1.0]], [], 0, "bad_price"),
    ([[0.0, 1.0]], [], 0, "bad_price"),
    ([["1e400", 1.0]], [], 0, "bad_price"),
    ([[0.5657, '"NaN"']], [], 0, "bad_price"),
    ([[0.5657, '"sNaN"']], [], 0, "bad_price"),
    ([[0.5657, "1e-400"]], [], 0, "bad_price"),         # a size that is 0 only as a float
    ([[0.5657, 1.0]], [], None, "bad_shape"),            # no checksum: cannot be verified
])
def test_kraken_garbage_in_a_book_message_resyncs(bids, asks, ck, reason):
    a, sink = _ready_matic()
    ctl = a.parse(_kr_book("update", bids, asks, ck), RECV, sink)
    assert ctl.kind == "resync" and sink.rejects == {reason: 1}
    assert sink.resyncs_by_fault == {BookFault.BAD_DATA: 1} and not sink.is_ready(21)


def test_kraken_crossed_book_is_bad_data():
    a, sink = _ready_matic()
    asks, bids = _doc_levels()
    bids.insert(0, (Decimal("0.5669"), Decimal("1")))       # above the best ask
    ck = checksum(asks, bids, 4, 8)
    ctl = a.parse(_kr_book("update", [[0.5669, 1.0]], [], ck), RECV, sink)
    assert ctl.kind == "resync" and sink.resyncs_by_fault == {BookFault.BAD_DATA: 1}


def test_kraken_truncates_to_the_subscribed_depth():
    """Depth 10: a better bid pushes the 10th out; Kraken sends no delete for it."""
    a, sink = _ready_matic()
    asks, bids = _doc_levels()
    bids = [(Decimal("0.5667"), Decimal("5"))] + bids[:9]
    upd = _kr_book("update", [[0.5667, 5.0]], [], checksum(asks, bids, 4, 8))
    assert a.parse(upd, RECV, sink) is None and not sink.rejects
    book, quote = sink.updates
    assert book["bids"][0] == [0.5667, 5.0] and book["bids"][-1] == [0.5658, 148.3464]
    assert len(book["bids"]) == 10 and quote["bid"] == 0.5667
    fb = sink.book_of(21)
    assert len(fb.side(0)[0]) == 10           # the 0.5657 level is gone from the full book
    # deleting a level exposes the one below: the venue sends it as an insert
    bids2 = bids[1:] + [(Decimal("0.5657"), Decimal("7"))]
    upd = _kr_book("update", [[0.5667, 0.0], [0.5657, 7.0]], [], checksum(asks, bids2, 4, 8))
    sink.clear()
    assert a.parse(upd, RECV, sink) is None and not sink.rejects
    assert sink.updates[0]["bids"][-1] == [0.5657, 7.0] and sink.updates[0]["bids"][0][0] == 0.5666


def test_kraken_depth_zero_is_the_ticker_adapter():
    a = kraken()
    assert a.depth == 0
    ctl, sink = feed(a, KR_BOOK_SNAPSHOT_DOC)
    assert ctl is None and sink.rejects == {"unknown_channel": 1}


# ------------------------------------- a reference venue, and hypothesis-generated streams
class KrakenVenue:
    """A pure-Python Kraken ``book`` channel: the whole book (a dict per side, ticks -> lots),
    the subscribed view (its best ``depth`` levels), frames as Kraken sends them (JSON
    numbers in their shortest form; a level leaving the view gets ``qty: 0`` unless it was
    pushed out by the depth) and the checksum as Kraken computes it."""

    def __init__(self, symbol, depth, pdp=4, qdp=8):
        self.symbol, self.depth, self.pdp, self.qdp = symbol, depth, pdp, qdp
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.view = self._view()

    def _view(self):
        d = self.depth
        b = sorted(self.bids.items(), reverse=True)[:d]
        a = sorted(self.asks.items())[:d]
        return b, a

    def _num(self, units, dp):
        return trim(fixed(units, dp))

    def _rows(self, rows):
        return "[" + ",".join('{"price":%s,"qty":%s}' % (self._num(p, self.pdp), self._num(q, self.qdp))
                              for p, q in rows) + "]"

    def checksum(self, bad=False):
        b, a = self.view
        f = lambda u, dp: fixed(u, dp).replace(".", "").lstrip("0")
        s = "".join(f(p, self.pdp) + f(q, self.qdp) for p, q in a[:10])
        s += "".join(f(p, self.pdp) + f(q, self.qdp) for p, q in b[:10])
        return (zlib.crc32(s.encode()) & 0xFFFFFFFF) ^ (1 if bad else 0)

    def _frame(self, typ, bids, asks, bad=False):
        return ('{"channel":"book","type":"%s","data":[{"symbol":"%s","bids":%s,"asks":%s,'
                '"checksum":%d,"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
                % (typ, self.symbol, self._rows(bids), self._rows(asks), self.checksum(bad)))

    def snapshot(self):
        b, a = self.view
        return self._frame("snapshot", b, a)

    def change(self, ops, bad=False):
        """Apply (is_bid, ticks, lots) to the book; the update frame (None: the view did not
        change)."""
        for is_bid, p, q in ops:
            side = self.bids if is_bid else self.asks
            if q:
                side[p] = q
            else:
                side.pop(p, None)
        old = self.view
        self.view = new = self._view()
        rows = []
        for k, (o, n) in enumerate(zip(old, new)):
            nd = dict(n)
            worst = n[-1][0] if n else None
            full = len(n) == self.depth
            out = []
            for p, _ in o:
                pushed = full and (p < worst if k == 0 else p > worst)
                if p not in nd and not pushed:
                    out.append((p, 0))
            od = dict(o)
            out += [(p, q) for p, q in n if od.get(p) != q]
            rows.append(out)
        if not rows[0] and not rows[1] and not bad:
            return None
        return self._frame("update", rows[0], rows[1], bad)

    def top(self, n):
        b, a = self.view
        fl = lambda rows: [[float(fixed(p, self.pdp)), float(fixed(q, self.qdp))] for p, q in rows[:n]]
        return fl(b), fl(a)


def _acks(symbol, depth):
    return [json.dumps({"method": m, "result": {"channel": "book", "depth": depth, "symbol": symbol},
                        "success": True}) for m in ("unsubscribe", "subscribe")]


_LEVEL = st.tuples(st.booleans(), st.integers(1, 40), st.sampled_from([0, 0, 1, 7, 12345678, 10**12]))
_OP = st.one_of(
    st.tuples(st.just("change"), st.lists(_LEVEL, min_size=1, max_size=6)),
    st.tuples(st.just("lose"), st.lists(_LEVEL, min_size=1, max_size=3)),
    st.tuples(st.just("dup"), st.just(None)),
    st.tuples(st.just("bad_checksum"), st.lists(_LEVEL, min_size=1, max_size=3)),
    st.tuples(st.just("reconnect"), st.booleans()),
)


@pytest.mark.parametrize("n", [5, 20])
@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.lists(_LEVEL, max_size=60), ops=st.lists(_OP, max_size=40))
def test_kraken_book_matches_a_reference_venue(n, initial, ops):
    """After every message the adapter's book (top N, through CollectingSink) equals the
    reference venue's, or it is not ready and the fault is the one the message deserved.
    A lost message the checksum cannot see (a change below the 10th level) leaves levels
    11..N unverifiable: only the top 10 are compared until the next snapshot."""
    inst = Instrument("BTC/USD", 12)
    a, sink = kraken_book(n, [inst])
    venue = KrakenVenue("BTC/USD", book_depth(n))
    # bids at 1..40 ticks, asks at 41..80: the book never crosses
    place = lambda ops_: [(b, p if b else p + 40, q) for b, p, q in ops_]
    venue.change(place(initial))
    blind = False                          # a lost message may have changed levels 11..N
    unseen = False                         # ... and no message was verified since it

    def deliver(frame, expect=(), verifies=True):
        nonlocal blind, unseen
        if '"type":"snapshot"' in frame:
            blind = unseen = False         # a snapshot replaces the whole book
        if blind:                          # a message was lost: the checksum may see it now
            expect = tuple(expect) + (BookFault.CHECKSUM,)
        resyncs0 = dict(sink.resyncs_by_fault)
        applied0 = sink.book_messages
        ctl = a.parse(frame, RECV, sink)
        assert "parse_error" not in sink.rejects
        new = {k: v - resyncs0.get(k, 0) for k, v in sink.resyncs_by_fault.items()
               if v != resyncs0.get(k, 0)}
        assert set(new) <= set(expect), (new, expect)
        for k in new:
            event(f"fault {BookFault(k).name}")
        if ctl is not None and ctl.kind == "resync":
            assert ctl.symbol == "BTC/USD" and not sink.is_ready(12)
            for f in _acks("BTC/USD", venue.depth):        # the venue answers resubscribe()
                a.parse(f, RECV, sink)
            blind = unseen = False
            deliver(venue.snapshot())
        check(applied0 if verifies else None)
        return ctl is None or ctl.kind != "resync"

    def check(applied0=None):
        nonlocal unseen
        if applied0 is not None and sink.book_messages != applied0:
            unseen = False                 # a current message was verified since the loss
        if sink.is_ready(12) and not unseen:
            b, s = sink.book_of(12).top(n)
            rb, rs = venue.top(n)
            k = 10 if blind else n
            assert (b.tolist()[:k], s.tolist()[:k]) == (rb[:k], rs[:k])

    deliver(venue.snapshot())
    assert sink.is_ready(12)
    last = None                            # the last update delivered
    just = False                           # ... by the previous op
    for op, arg in ops:
        was, just = just, False
        if op == "change":
            f = venue.change(place(arg))
            if f is not None:
                last, just = f, deliver(f)
        elif op == "lose":
            if venue.change(place(arg)) is not None:
                blind = unseen = True      # the next message's checksum finds it, or not
        elif op == "dup" and last is not None:
            if was:                        # a duplicated diff: refused as such, book unchanged
                rej = sink.rejects["duplicate"]
                deliver(last, expect=(BookFault.CHECKSUM,))
                assert sink.rejects["duplicate"] == rej + 1 or not sink.is_ready(12)
            else:                          # a stale replay: caught by the checksum, or
                before = sink.book_resyncs     # unverifiable until the next message (its
                if sink.is_ready(12):          # checksum is of an older book)
                    blind = unseen = True
                deliver(last, expect=(BookFault.CHECKSUM,), verifies=False)
                if sink.book_resyncs != before:
                    assert not blind and not unseen     # resynced by deliver()
        elif op == "bad_checksum":
            f = venue.change(place(arg), bad=True)
            assert not deliver(f, expect=(BookFault.CHECKSUM,))
            last = f
        elif op == "reconnect":
            a.on_connect(0)
            for iid in sorted(sink.ready):
                sink.book_broken(iid, BookFault.RECONNECT)       # as the feed runtime does
            blind = False
            unseen = False
            if arg:                        # a diff first (the early-diff fault), then the snapshot
                f = venue.change(place([(True, 1, 3)]))
                if f is not None:
                    deliver(f, expect=(BookFault.EARLY_DIFF,))
            deliver(venue.snapshot())
    # the book ends exact once it is synced again
    deliver(venue.snapshot())
    assert sink.is_ready(12) and not blind
