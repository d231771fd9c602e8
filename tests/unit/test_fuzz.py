"""Venue parser fuzzing (the quick version of `arbpipe bench reliability`'s fuzz figures).

Each venue's adapter, built from config/arbpipe.toml as the feed builds it, gets generated
and mutated frames through its parse path into a real SPSC ring exactly as
``Feed.on_frame`` does (bench/fuzz.py), plus hypothesis-generated JSON built from the
venue's own field names. Every frame must be accounted for (records, a control frame,
applied book levels, or a reject by a named reason), nothing may raise, the adapter's
last-resort guard must never fire, and every record in the ring must be sane.
"""
import json
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbpipe.feeds.sinks import RingSink
from arbpipe.feeds.venues.sink import CollectingSink
from arbpipe.transport.rings import SpscRing
from bench import fuzz
from shm_layouts import MARKET_UPDATE
from shm_layouts.feed_stats import REJECT_REASONS

FRAMES = 20_000


@pytest.mark.parametrize("venue", fuzz.VENUES)
def test_generated_and_mutated_frames(instance, venue):
    r = fuzz.fuzz_venue(venue, FRAMES, seed=7, instance=instance)
    detail = json.dumps(r["examples"], indent=1)[:3000]
    assert r["frames"] == FRAMES
    assert r["crashes"] == 0, detail
    assert r["parse_errors"] == 0, detail
    assert r["silent"] == 0, detail
    assert r["bad_records"] == 0, detail
    assert r["accounted"] and r["frames"] == r["parsed"] + r["rejected"]
    assert r["unnamed_reasons"] == [], r["rejects"]
    assert r["ring_dropped"] == 0
    # the fuzzer is not degenerate: valid frames got through, bad ones were refused for
    # several reasons, duplicates were noticed where the venue has sequence numbers
    assert r["records"] > FRAMES // 10 and r["parsed"] > FRAMES // 10
    assert len(r["rejects"]) >= 4, r["rejects"]
    assert r["rejects"].get("not_json", 0) > 0
    if venue != "kraken":
        assert r["rejects"].get("duplicate", 0) + r["rejects"].get("out_of_order", 0) > 0


@pytest.mark.parametrize("venue", fuzz.BOOK_VENUES)
def test_depth_channel_frames(instance, venue):
    """The venue's depth channel (L2 books of ``fuzz.BOOK_DEPTH`` levels): generated and
    mutated snapshots and diffs with the venue's ids, gaps and repeats. Besides the checks
    above: every LEVEL / STATUS record is sane, a reader rebuilding the books from the ring
    never gets a diff for a book it does not hold nor a crossed book, rules broken by the
    garbage were counted (BookFault) and answered with a resync, and one snapshot per
    symbol afterwards makes every book ready and equal to the venue's reference."""
    r = fuzz.fuzz_venue(venue, FRAMES, seed=11, instance=instance, depth=fuzz.BOOK_DEPTH)
    detail = json.dumps(r["examples"], indent=1)[:3000]
    assert r["frames"] == FRAMES
    assert r["crashes"] == 0 and r["parse_errors"] == 0, detail
    assert r["silent"] == 0 and r["bad_records"] == 0, detail
    assert r["accounted"] and r["frames"] == r["parsed"] + r["rejected"]
    assert r["unnamed_reasons"] == [] and r["ring_dropped"] == 0, r["rejects"]
    assert r["book_violations"] == 0, detail
    assert r["books"] > 0 and r["final_exact"] == r["books"], detail
    # not degenerate: books were published, broken by the garbage and resynced
    assert r["records"] > FRAMES // 10 and r["parsed"] > FRAMES // 20
    assert {"GAP", "EARLY_DIFF", "BAD_DATA"} <= set(r["book_faults"]), r["book_faults"]
    assert r["resyncs"] > 0 and r["rejects"].get("no_snapshot", 0) > 0
    if venue == "okx":
        assert r["book_faults"].get("CHECKSUM", 0) > 0


KEYS = {
    "binance": ["u", "s", "b", "B", "a", "A", "e", "E", "T", "p", "r", "stream", "data",
                "result", "id", "error", "code", "msg"],
    "binance-usdm": ["u", "s", "b", "B", "a", "A", "e", "E", "T", "p", "r", "i", "P"],
    "bybit-spot": ["topic", "type", "ts", "cts", "data", "s", "b", "a", "u", "seq",
                   "success", "ret_msg", "op", "req_id"],
    "bybit-linear": ["topic", "type", "ts", "cs", "data", "symbol", "bid1Price", "bid1Size",
                     "ask1Price", "ask1Size", "markPrice", "fundingRate", "nextFundingTime",
                     "fundingIntervalHour"],
    "okx": ["arg", "channel", "instId", "data", "asks", "bids", "ts", "seqId", "event",
            "code", "msg", "fundingRate", "fundingTime", "nextFundingTime"],
    "coinbase": ["channel", "timestamp", "sequence_num", "events", "type", "product_id",
                 "updates", "side", "price_level", "new_quantity", "event_time",
                 "subscriptions", "message", "reason"],
    "kraken": ["channel", "type", "data", "symbol", "bid", "bid_qty", "ask", "ask_qty",
               "timestamp", "method", "success", "result", "error", "system"],
    "gate": ["channel", "event", "result", "t", "u", "s", "b", "B", "a", "A", "status",
             "error", "code", "message", "type", "msg", "time"],
}


# depth channels (fuzz.BOOK_VENUES): the words of their book frames
BOOK_KEYS = {
    "bybit-spot": ["topic", "type", "ts", "cts", "data", "s", "b", "a", "u", "seq"],
    "bybit-linear": ["topic", "type", "ts", "cts", "data", "s", "b", "a", "u", "seq"],
    "okx": ["arg", "channel", "instId", "action", "data", "asks", "bids", "ts", "checksum",
            "prevSeqId", "seqId"],
}


def _json_for(venue, depth=0):
    adapter = fuzz.fuzz_adapter(venue)
    natives = [i.native for i in adapter.instruments]
    words = ["snapshot", "delta", "update", "bbo-tbt", "l2_data", "ticker", "spot.book_ticker",
             "bid", "offer", "1", "0", "NaN", "1e999", "-1", "2024-01-01T00:00:00Z",
             "orderbook.1." + natives[0], "tickers." + natives[0]]
    keys = list(KEYS[venue])
    if depth:
        adapter.depth = depth
        keys += BOOK_KEYS[venue]
        words += ["books", "100.5", "99.5", "0.25", f"orderbook.{depth}.{natives[0]}"]
        words += BOOK_WORDS.get(venue, [])
        if hasattr(adapter, "book_channel"):
            words.append(f"orderbook.{adapter.book_channel()}.{natives[0]}")
    scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
               | st.floats(allow_nan=False) | st.sampled_from(natives)
               | st.sampled_from(words) | st.text(max_size=12))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(keys), inner, max_size=6), max_leaves=25)
    frames = st.dictionaries(st.sampled_from(keys), values, max_size=8)
    return adapter, frames


@pytest.mark.parametrize("venue", fuzz.VENUES)
def test_hypothesis_json_in_the_venues_vocabulary(instance, venue):
    _hypothesis_json(instance, venue)


@pytest.mark.parametrize("venue", fuzz.BOOK_VENUES)
def test_hypothesis_json_in_the_depth_channels_vocabulary(instance, venue):
    _hypothesis_json(instance, venue, fuzz.BOOK_DEPTH)


def _hypothesis_json(instance, venue, depth=0):
    adapter, frames = _json_for(venue, depth)
    ring = SpscRing.create("hyp", 1 << 14, "MarketUpdate", policy="drop", instance=instance)
    sink = RingSink(ring, adapter.venue_id, depth=depth)
    out = np.zeros(1 << 14, MARKET_UPDATE)
    ids = {i.instrument_id for i in adapter.instruments}
    applied = [0]

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True)
    @given(frames, st.booleans())
    def check(obj, as_text):
        frame = json.dumps(obj)
        frame = frame if as_text else frame.encode()
        before, rej0 = sink.seq, sum(sink.rejects.values())
        ap0, bf0 = getattr(adapter, "applied", 0), sink.book_resyncs
        ctl = adapter.parse(frame, 1, sink, 0)
        sink.flush()
        got, rej = sink.seq - before, sum(sink.rejects.values()) - rej0
        assert got or rej or ctl is not None or getattr(adapter, "applied", 0) != ap0 \
            or sink.book_resyncs != bf0, frame
        assert "parse_error" not in sink.rejects, frame
        assert set(sink.rejects) <= set(REJECT_REASONS), sink.rejects
        n = ring.pop_batch(out)
        for rec in out[:n]:
            assert rec["instrument_id"] in ids
            if rec["kind"] == 1:
                assert 0 < rec["bid"] <= rec["ask"] < float("inf"), rec
        applied[0] += 1

    try:
        check()
    finally:
        ring.unlink()
        ring.close()
    assert applied[0] > 0


# -- depth channels kept from diffs and REST snapshots (binance, binance-usdm, gate) -------
@pytest.mark.parametrize("venue", fuzz.REST_BOOK_VENUES)
def test_rest_depth_channel_frames(instance, venue):
    """The depth diffs of the REST-snapshot venues (``fuzz.RestBookFrames``): generated and
    mutated diffs with the venue's ids, gaps and repeats, and the REST snapshot each resync
    asks for (current, older, mutated or junk bodies through ``on_rest_snapshot``). Besides
    the frame checks: no body crashes or goes unaccounted, the rules broken by the garbage
    were counted (BookFault) and answered with a resync, and after a reconnect's resync
    every book is ready and equal to the venue's reference."""
    r = fuzz.fuzz_venue(venue, FRAMES, seed=11, instance=instance, depth=fuzz.BOOK_DEPTH)
    detail = json.dumps(r["examples"], indent=1)[:3000]
    assert r["frames"] == FRAMES
    assert r["crashes"] == 0 and r["parse_errors"] == 0, detail
    assert r["silent"] == 0 and r["bad_records"] == 0, detail
    assert r["accounted"] and r["frames"] == r["parsed"] + r["rejected"]
    assert r["unnamed_reasons"] == [] and r["ring_dropped"] == 0, r["rejects"]
    assert r["book_violations"] == 0, detail
    assert r["books"] > 0 and r["final_exact"] == r["books"], detail
    assert r["rest_crashes"] == 0 and r["rest_silent"] == 0, detail
    # not degenerate: books were published, broken by the garbage, fetched again
    assert r["records"] > FRAMES // 10 and r["parsed"] > FRAMES // 20
    assert {"GAP", "STALE_SNAPSHOT", "BAD_DATA", "SNAPSHOT_FAILED"} <= set(r["book_faults"]), \
        r["book_faults"]
    assert set(r["rest_kinds"]) == {"current", "older", "mutant", "junk"}, r["rest_kinds"]
    assert r["rest_rejected"] > 0 and r["resyncs"] >= r["rest_bodies"] > FRAMES // 20


BOOK_KEYS.update({
    "binance": ["e", "E", "s", "U", "u", "b", "a", "stream", "data"],
    "binance-usdm": ["e", "E", "T", "s", "U", "u", "pu", "b", "a"],
    "gate": ["channel", "event", "result", "t", "e", "E", "s", "U", "u", "b", "a", "full"],
})
REST_KEYS = {"binance": ["lastUpdateId", "bids", "asks"],
             "binance-usdm": ["lastUpdateId", "E", "T", "bids", "asks"],
             "gate": ["id", "current", "update", "asks", "bids"]}


@pytest.mark.parametrize("venue", fuzz.REST_BOOK_VENUES)
def test_hypothesis_json_in_the_rest_depth_channels_vocabulary(instance, venue):
    _hypothesis_json(instance, venue, fuzz.BOOK_DEPTH)


@pytest.mark.parametrize("venue", fuzz.REST_BOOK_VENUES)
def test_hypothesis_rest_snapshot_bodies(venue):
    """Hypothesis-built REST bodies in the venue's words, given to ``on_rest_snapshot``
    while the book waits for its snapshot: each is applied (the book becomes ready, its
    levels sane), or refused by a named reason with the snapshot asked for again; nothing
    raises."""
    adapter = fuzz.fuzz_adapter(venue)
    adapter.depth = fuzz.BOOK_DEPTH
    inst = adapter.instruments[0]
    gen = fuzz.RestBookFrames(venue, [inst.native], random.Random(3), adapter)
    levels = st.lists(st.tuples(st.sampled_from(["99.5", "99.25", "100.5", "101", "0", "-1",
                                                 "NaN", "x", "1e999", ""]),
                                st.sampled_from(["1", "0", "2.5", "-3", "inf", "abc"])).map(list),
                      max_size=4)
    value = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=6)
             | st.floats(allow_nan=False) | levels)
    bodies = st.dictionaries(st.sampled_from(REST_KEYS[venue]), value, max_size=6)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True)
    @given(bodies, st.booleans())
    def check(obj, junk_bytes):
        sink = CollectingSink(adapter.venue_id, recv_ns=1, depth=fuzz.BOOK_DEPTH)
        adapter.on_connect(0)
        ctl = adapter.parse(json.dumps(gen.diff(inst.native)), 1, sink, 0)
        assert ctl is not None and ctl.kind == "resync"
        body = json.dumps(obj).encode()
        if junk_bytes:
            body = body[: len(body) // 2]
        r0, f0 = sum(sink.rejects.values()), sink.book_resyncs
        ctl = adapter.on_rest_snapshot(inst.native, body, sink)
        assert "parse_error" not in sink.rejects, body
        assert set(sink.rejects) <= set(REJECT_REASONS), sink.rejects
        if sink.is_ready(inst.instrument_id):
            b, a = sink.book_of(inst.instrument_id).top()
            assert (b[:, 0] > 0).all() and (a[:, 0] > 0).all() and (b[:, 1] >= 0).all()
            assert not (len(b) and len(a)) or b[0, 0] < a[0, 0]
        else:
            assert ctl is not None and ctl.kind == "resync", body
            assert sum(sink.rejects.values()) > r0 or sink.book_resyncs > f0, body

    check()


# -- depth channels resynced on the socket: coinbase (a reconnect), kraken (resubscribe) ----
CB_KR_FAULTS = {"coinbase": {"GAP", "EARLY_DIFF", "BAD_DATA"},
                "kraken": {"CHECKSUM", "EARLY_DIFF", "BAD_DATA"}}


@pytest.mark.parametrize("venue", fuzz.CB_KR_BOOK_VENUES)
def test_coinbase_kraken_depth_channel_frames(instance, venue):
    """Coinbase ``level2`` / Kraken ``book`` kept as books (``fuzz.CoinbaseBookFrames``,
    ``fuzz.KrakenBookFrames``): generated and mutated snapshots and updates (Coinbase: one
    sequence number per connection, skipped now and then; Kraken: the checksum of the top
    10, updates lost now and then), replays. Every frame parsed or refused by a named
    reason, nothing raises, every record sane, a ring reader never sees a diff of a book it
    does not hold; the rules broken by the garbage were counted (BookFault) and answered
    with a resync (a reconnect / a resubscribe, as the venue answers it), and after a last
    resync every book is ready and equal to the venue's reference: a book that took garbage
    was resynced, not trusted."""
    r = fuzz.fuzz_venue(venue, FRAMES, seed=11, instance=instance, depth=fuzz.BOOK_DEPTH)
    detail = json.dumps(r["examples"], indent=1)[:3000]
    assert r["frames"] == FRAMES
    assert r["crashes"] == 0 and r["parse_errors"] == 0, detail
    assert r["silent"] == 0 and r["bad_records"] == 0, detail
    assert r["accounted"] and r["frames"] == r["parsed"] + r["rejected"]
    assert r["unnamed_reasons"] == [] and r["ring_dropped"] == 0, r["rejects"]
    assert r["book_violations"] == 0, detail
    assert r["books"] > 0 and r["final_exact"] == r["books"], detail
    # not degenerate: books were published, broken by the garbage and resynced
    assert r["records"] > FRAMES // 20 and r["parsed"] > FRAMES // 20
    assert CB_KR_FAULTS[venue] <= set(r["book_faults"]), r["book_faults"]
    assert r["resyncs"] > 0 and r["rejects"].get("no_snapshot", 0) > 0


BOOK_KEYS.update({
    "coinbase": ["channel", "timestamp", "sequence_num", "events", "type", "product_id",
                 "updates", "side", "price_level", "new_quantity", "event_time"],
    "kraken": ["channel", "type", "data", "symbol", "bids", "asks", "price", "qty", "checksum",
               "timestamp", "method", "result", "success", "depth", "pairs",
               "price_precision", "qty_precision"],
})
BOOK_WORDS = {"coinbase": ["l2_data", "snapshot", "update", "bid", "offer", "heartbeats"],
              "kraken": ["book", "instrument", "snapshot", "update", "subscribe", "unsubscribe"]}


@pytest.mark.parametrize("venue", fuzz.CB_KR_BOOK_VENUES)
def test_hypothesis_json_in_the_coinbase_kraken_depth_vocabulary(instance, venue):
    _hypothesis_json(instance, venue, fuzz.BOOK_DEPTH)


def test_depth_run_covers_every_depth_channel_and_merges_the_chunks():
    """``fuzz.run(..., depth=N)`` (`arbpipe bench reliability --only fuzz-books`): every venue
    with a depth channel, the chunks' counters summed and their dicts merged by key."""
    r = fuzz.run(600, workers=1, chunks=2, depth=fuzz.BOOK_DEPTH)
    assert set(r["venues"]) == set(fuzz.DEPTH_VENUES) == set(fuzz.VENUES)
    assert r["depth"] == fuzz.BOOK_DEPTH and r["total"]["frames"] == 600 * len(fuzz.VENUES)
    t = r["total"]
    assert t["crashes"] == t["parse_errors"] == t["rest_crashes"] == t["silent"] == 0
    assert t["final_exact"] == t["books"] > 0 and t["book_violations"] == 0
    for v, d in r["venues"].items():
        assert d["frames"] == 600 and sum(d["kinds"].values()) == 600, v
        assert d["book_faults"] and d["resyncs"] > 0, (v, d["book_faults"])
        assert sum(d["rejects"].values()) >= d["rejected"], v
    for v in fuzz.REST_BOOK_VENUES:
        assert r["venues"][v]["rest_bodies"] == sum(r["venues"][v]["rest_kinds"].values()) > 0
