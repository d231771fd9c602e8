"""What the OKX, Coinbase, Kraken and Gate adapter tests share (tests/unit/venues/
test_okx.py, test_coinbase.py, test_kraken.py, test_gate.py): the parse helper, quote
assertions, the never-raise fuzz, the random-garbage count and the frame-stream count."""
from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbpipe.feeds.venues.base import Control
from arbpipe.feeds.venues.sink import CollectingSink
from shm_layouts import Kind

RECV = 1_800_000_000_000_000_000


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


# ------------------------------------------- a stream of frames (cost: arbpipe bench feeds)
def parse_stream(a, frames, prime=None, passes=2):
    """Quotes per pass of ``a.parse`` over ``frames`` into a sink that counts quotes (any
    reject fails), ``a.on_connect(0)`` then ``prime(a)`` before each pass (a reconnect
    resets the sequence checks). The per-frame cost is a figure of ``arbpipe bench feeds``."""
    class Null:
        n = 0
        def quote(self, *a):
            self.n += 1
        def reject(self, reason, n=1):
            raise AssertionError(reason)
    counts = []
    for _ in range(passes):
        sink = Null()
        a.on_connect(0)
        if prime is not None:
            prime(a)
        for f in frames:
            a.parse(f, RECV, sink)
        counts.append(sink.n)
    return counts


# -------------------------------------------------------- fuzzing: parse never raises
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


def frame_strategy(valid):
    """Frames for the fuzz: random bytes or text, ``valid`` frames, and those mutated."""

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


def fuzz_parse_never_raises(make, valid, prime=None):
    """Hypothesis frames (``frame_strategy(valid)``) into fresh adapters from ``make``
    (``prime(adapter)`` first): parse never raises, every frame yields an update, a
    Control, a counted reject or a book change, and the data path is reached."""
    outcomes = {"update": 0, "control": 0, "reject": 0, "book": 0}

    @settings(max_examples=2000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(frame_strategy(valid))
    def check(frame):
        a = make()
        if prime is not None:
            prime(a)
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


def garbage_counted_once(make, seed=7):
    """500 frames of random bytes into ``make()``: each counted once, as not_json or
    bad_shape."""
    rng = random.Random(seed)
    a = make()
    sink = CollectingSink()
    for _ in range(500):
        a.parse(bytes(rng.randrange(256) for _ in range(rng.randrange(40))), RECV, sink)
    assert sum(sink.rejects.values()) == 500 and set(sink.rejects) <= {"not_json", "bad_shape"}, (a.name, sink.rejects)
