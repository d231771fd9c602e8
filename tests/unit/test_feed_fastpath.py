"""The Binance bookTicker fast path (``arbpipe.feeds.fastpath``, ``Feed._on_frame_fast``)
judges every frame exactly as the adapter's msgspec path does: the same stream of frames
(valid ones, rejects, garbage) through two feeds, one with the fast path and one without,
gives the same ring words, sequence numbers, reject counters by reason, drops, ring and
feed state."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbpipe.feeds import feed as feed_mod
from arbpipe.feeds.connection import Conn
from arbpipe.feeds.fastpath import book_ticker
from arbpipe.feeds.feed import Feed
from arbpipe.feeds.sinks import RingSink
from arbpipe.feeds.venues.binance import BinanceSpot, BinanceUsdm
from arbpipe.symbols import Instrument
from arbpipe.transport.rings import SpscRing

IDS = {"BNBUSDT": 11, "BTCUSDT": 21, "ETHUSDT": 22, "1000PEPEUSDT": 23}
VENUE = 3
NOW = 1_700_000_000_123_456_789
CAP = 16                    # ring records: a long enough stream fills it (drops)


def _slow(cls):
    class Slow(cls):
        def quote_fastpath(self):
            return None
    return Slow


class Pair:
    """Two feeds of the same venue over two rings: ``fast`` (the fast path) and ``slow``
    (the adapter's parse only)."""

    def __init__(self, cls, instance, policy, tag):
        inst = [Instrument(n, i) for n, i in IDS.items()]
        self.feeds, self.rings = [], []
        for name, ad in (("fast", cls(inst, VENUE)), ("slow", _slow(cls)(inst, VENUE))):
            ring = SpscRing.create(f"fp.{tag}.{name}", CAP, "MarketUpdate", policy=policy,
                                   instance=instance)
            self.rings.append(ring)
            self.feeds.append(Feed(ad, "ws://unused:1", RingSink(ring, VENUE)))
        fast, slow = self.feeds
        assert fast._fast is not None and slow._fast is None

    def close(self):
        for f in self.feeds:
            for fd in [f._main_r, f._main_w] + [x for w in f.workers for x in (w.wake_r, w.wake_w)]:
                os.close(fd)
        for r in self.rings:
            r.unlink()
            r.close()

    def reset(self):
        for f, r in zip(self.feeds, self.rings):
            for k in range(len(f.workers)):
                f.adapter.on_connect(k)
            s = f.sink
            s.seq = s.fundings = s.statuses = s.dropped = s.n = 0
            s.rejects.clear()
            f.venue_status = 0
            for w in f.workers:
                w.seen.clear()
                w.flowing = w.has_quotes = False
            drain(r)

    def run(self, frames):
        """Each (frame, socket, reconnect) through both feeds; the outcomes of both."""
        out = []
        for f, r in zip(self.feeds, self.rings):
            conns = [Conn(None, None) for _ in f.workers]
            before = r.stats()
            ctls, words = [], []
            for k, (frame, si, reconnect) in enumerate(frames):
                si %= len(f.workers)
                if reconnect:
                    f.adapter.on_connect(si)
                ctls.append(f.on_frame(f.workers[si], conns[si], frame, NOW + k))
                if k % 7 == 6:
                    words.append(drain(r))
            words.append(drain(r))
            s = f.sink
            stats = {k: v - before[k] for k, v in r.stats().items()
                     if isinstance(v, int) and not isinstance(v, bool)}
            out.append(dict(
                ctls=ctls, words=np.concatenate(words).tolist(), seq=s.seq,
                rejects=dict(s.rejects), dropped=s.dropped, n=s.n, stats=stats,
                seen=[dict(w.seen) for w in f.workers], status=f.venue_status,
                flowing=[(w.flowing, w.has_quotes) for w in f.workers],
                conns=[(c.frames, c.records) for c in conns]))
        return out


def drain(ring):
    out = np.zeros(CAP * 8 * 4, np.int64)
    got = []
    while True:
        n = ring.pop_words(out)
        if not n:
            return np.concatenate(got) if got else np.zeros(0, np.int64)
        got.append(out[:n * 8].copy())


# -- frames ----------------------------------------------------------------------------
SYMS = list(IDS) + ["btcusdt", "FOOUSDT", "", "BTCUSDTX", "BTC\\u0055SDT"]
DECIMALS = st.one_of(
    st.from_regex(r"-?[0-9]{1,6}\.[0-9]{1,8}", fullmatch=True),
    st.from_regex(r"-?[0-9]{1,24}(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["NaN", "nan", "inf", "-inf", "Infinity", "1_000", " 1.5", "1.5 ", "",
                     "0", "-0.0", "0.0", "1e400", "1e-400", ".5", "5.", "0x10", "1e", "+1",
                     "00012.5", "9007199254740993", "0.30000000000000004", "1.0e22",
                     "1e23", "123456789012345678", "1234567890123456789"]),
    st.text(max_size=6))


def _q(text):
    return '"' + text + '"'


EDGE_INTS = ["007", "0", "1.0", "1e3", '"5"', "null", "-0", "-1", "true", "[]",
             "9223372036854775807", "9223372036854775808", "18446744073709551615",
             "18446744073709551616", "999999999999999999", "1000000000000000000",
             "9223372036854", "9223372036855", "99999999999999"]
INTS = st.one_of(st.sampled_from(EDGE_INTS), st.integers(0, 40).map(str),
                 st.integers(0, 2**70).map(str), st.integers(-2**64, 2**64).map(str))
E_VALUES = ['"bookTicker"', '"depthUpdate"', '"markPriceUpdate"', '""', '"bookTickerX"', "1"]
VALUES = {
    "u": INTS,
    "s": st.sampled_from(SYMS).map(_q) | st.sampled_from(["null", "1", "[]"]),
    "b": DECIMALS.map(_q) | st.sampled_from(["1.5", "null", "{}"]),
    "B": DECIMALS.map(_q) | st.sampled_from(["1.5", "null"]),
    "a": DECIMALS.map(_q) | st.sampled_from(["2.5", "null"]),
    "A": DECIMALS.map(_q) | st.sampled_from(["2.5", "null"]),
    "e": st.sampled_from(E_VALUES),
    "E": INTS | st.integers(1_700_000_000_000, 1_800_000_000_000).map(str),
    "T": INTS | st.integers(1_700_000_000_000, 1_800_000_000_000).map(str),
    "p": st.just('"1.0"'), "r": st.just('"0.0001"'), "id": st.just("1"),
    "result": st.just("null"), "stream": st.just('"btcusdt@bookTicker"'), "x": st.just("{}"),
}

PERTURB = ["u"] * 4 + ["s", "b", "B", "a", "A", "e"] + ["E", "T"] * 2 + sorted(VALUES)


@st.composite
def frame(draw):
    """A bookTicker-like JSON frame: mostly valid, sometimes a field or the text broken."""
    u = draw(st.integers(0, 40))
    sym = draw(st.sampled_from(list(IDS)))
    bid = draw(st.integers(1, 10**6))
    ask = bid + draw(st.integers(-2, 10**3))
    fields = {"u": str(u), "s": _q(sym), "b": _q(f"{bid / 100:.8f}"),
              "B": _q(draw(DECIMALS) if draw(st.booleans()) else "0.57945000"),
              "a": _q(f"{ask / 100:.8f}"), "A": _q("0.61234000")}
    for key in draw(st.lists(st.sampled_from(PERTURB), max_size=3)):
        if draw(st.integers(0, 3)) == 0:
            fields.pop(key, None)
        else:
            fields[key] = draw(VALUES[key])
    items = list(fields.items())
    if draw(st.booleans()):
        items = draw(st.permutations(items))
    if draw(st.integers(0, 15)) == 0 and items:
        items.append(draw(st.sampled_from(items)))            # a key twice
    sp = draw(st.sampled_from(["", " ", "\n", "\t "]))
    text = "{" + sp + ("," + sp).join(f'"{k}"{sp}:{sp}{v}' for k, v in items) + sp + "}"
    if draw(st.integers(0, 15)) == 0:
        text = '{"stream":"x@bookTicker","data":' + text + "}"
    data = text.encode()
    m = draw(st.integers(0, 12))
    if m == 0 and data:
        data = data[:draw(st.integers(0, len(data) - 1))]     # truncated
    elif m == 1 and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    elif m == 2:
        data += draw(st.sampled_from([b" ", b"x", b"}", b"\x00", b",{}"]))
    elif m == 3:
        data = draw(st.sampled_from([b"", b"{}", b"[]", b"null", b"\xff\xfe", b"{\"u\":1}"]))
    return data


STREAMS = st.lists(st.tuples(frame(), st.integers(0, 1), st.integers(0, 30).map(lambda x: x == 0)),
                   min_size=1, max_size=30)


def _assert_same(pair, frames):
    fast, slow = pair.run(frames)
    assert fast == slow


@pytest.mark.parametrize("cls", [BinanceSpot, BinanceUsdm])
@pytest.mark.parametrize("policy", ["drop", "block"])
def test_fast_path_judges_every_frame_as_the_adapter_does(instance, cls, policy, monkeypatch):
    monkeypatch.setattr(feed_mod, "time_ns", lambda: NOW)   # STATUS records' recv time
    pair = Pair(cls, instance, policy, f"{cls.name}.{policy}")
    if policy == "block":
        for f in pair.feeds:
            f.sink.push_timeout = 0.0

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(STREAMS)
    def check(frames):
        pair.reset()
        _assert_same(pair, frames)

    try:
        check()
    finally:
        pair.close()


def test_fast_path_takes_valid_frames_and_packs_the_same_record(instance, monkeypatch):
    """Not vacuous: the kernel takes a plain bookTicker, and the record is what
    ``RingSink.quote`` packs."""
    monkeypatch.setattr(feed_mod, "time_ns", lambda: NOW)
    pair = Pair(BinanceSpot, instance, "drop", "valid")
    try:
        fast = pair.feeds[0]
        _, tab, ring_w, cursors, push = fast._fast
        fr = (b'{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000",'
              b'"a":"25.36520000","A":"40.66000000"}')
        assert book_ticker(fr, NOW, 5, tab, ring_w, cursors, push) == 11 << 2 | 1
        assert book_ticker(fr, NOW, 6, tab, ring_w, cursors, push) == -1    # duplicate
        rec = struct.unpack("<IHBBddddqqQ", tab[0, :8].tobytes())
        assert rec == (11, VENUE, 1, 2, 25.3519, 25.3652, 31.21, 40.66, 0, NOW, 6)
        pair.reset()
        frames = [(fr.replace(b"400900217", str(k).encode()), 0, False) for k in range(1, 9)]
        _assert_same(pair, frames)
        assert pair.feeds[0].sink.seq == 8 + 1            # 8 quotes and the UP status
    finally:
        pair.close()


def _bt(**kw):
    f = {"u": "5", "s": '"BTCUSDT"', "b": '"64998.01"', "B": '"0.5"', "a": '"65001.34"',
         "A": '"0.6"'}
    f.update(kw)
    return ("{" + ",".join(f'"{k}":{v}' for k, v in f.items() if v is not None) + "}").encode()


EDGE_FRAMES = (
    [_bt(u=v) for v in EDGE_INTS]
    + [_bt(E=v) for v in EDGE_INTS] + [_bt(T=v) for v in EDGE_INTS]
    + [_bt(T=v, E="1700000000000") for v in EDGE_INTS]
    + [_bt(**{k: _q(v)}) for k in "bBaA"
       for v in ["NaN", "inf", "-1", "-0.0", "0", "1e400", "1e-400", "1_0", " 1", "1e23",
                 "9007199254740993", "1234567890123456789", "00064999", "65000.5e0", ".5"]]
    + [_bt(**{k: None}) for k in "usbBaA"] + [_bt(e=v) for v in E_VALUES]
    + [_bt(s=_q(v)) for v in SYMS] + [_bt(b='"65001.35"'), _bt(x="1"), _bt(U="1")])


@pytest.mark.parametrize("edge", EDGE_FRAMES)
def test_edge_frames_between_valid_ones(instance, monkeypatch, edge):
    """Each edge frame after a valid one, then frames whose fate depends on what it did
    to the symbol's last ``u``."""
    monkeypatch.setattr(feed_mod, "time_ns", lambda: NOW)
    pair = Pair(BinanceSpot, instance, "drop", "edge")
    try:
        frames = [(_bt(u="3"), 0, False), (edge, 0, False), (_bt(u="4"), 0, False),
                  (_bt(u="6"), 0, False), (_bt(u="9223372036854775809"), 0, False),
                  (_bt(u="7"), 0, False), (edge, 0, True), (_bt(u="2"), 0, False)]
        _assert_same(pair, frames)
    finally:
        pair.close()
