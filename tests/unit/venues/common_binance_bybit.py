"""What the Binance and Bybit adapter tests share (tests/unit/venues/test_binance.py,
test_bybit.py): one symbol map of concatenated symbols, the parse helper, the expected
update dicts, and the contract every fuzzed frame must keep (parse never raises; every
frame yields an update, a Control or a counted reject)."""
from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from arbpipe.feeds.venues.base import Control
from arbpipe.feeds.venues.registry import get
from arbpipe.feeds.venues.sink import CollectingSink
from arbpipe.symbols import Instrument
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


# native -> canonical of concatenated symbols (split_concatenated), for every adapter here
CONCAT_SYMBOLS = [
    ("BTCUSDT", "BTC/USDT"), ("ETHBTC", "ETH/BTC"), ("BTCFDUSD", "BTC/FDUSD"),
    ("SOLUSDC", "SOL/USDC"), ("1000PEPEUSDT", "1000PEPE/USDT"), ("ETHUSD", "ETH/USD"),
    ("BTCUSDT_250627", None), ("BTC-26DEC25", None), ("USDT", None), ("FOOBAR", None)]


# ---------------------------------------------------------------------------------------
# Fuzz: parse never raises; every frame yields an update, a Control or a counted reject
# ---------------------------------------------------------------------------------------
FLAGS_OK = {0, int(Flag.SNAPSHOT), int(Flag.NO_EXCHANGE_TS)}


def check_contract(name, si, frame, primed, prime):
    """``prime``: adapter name -> frames fed first when ``primed``."""
    ad = make(name)
    if primed:
        for p in prime[name]:
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


@st.composite
def mutated_frame(draw, adapters, valid):
    """(name, socket, a valid frame of ``valid[name]`` with its bytes mutated, primed)."""
    name, si = draw(st.sampled_from(adapters))
    data = bytearray(draw(st.sampled_from(valid[name])).encode())
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
def json_mutated_frame(draw, adapters, valid):
    """(name, socket, a valid frame of ``valid[name]`` with JSON values replaced or removed, primed)."""
    name, si = draw(st.sampled_from(adapters))
    obj = json.loads(draw(st.sampled_from(valid[name])))
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
