"""Venue parser fuzzing (the quick version of `arbpipe bench reliability`'s fuzz figures).

Each venue's adapter, built from config/arbpipe.toml as the feed builds it, gets generated
and mutated frames through its parse path into a real SPSC ring exactly as
``Feed.on_frame`` does (bench/fuzz.py), plus hypothesis-generated JSON built from the
venue's own field names. Every frame must be accounted for (records, a control frame,
applied book levels, or a reject by a named reason), nothing may raise, the adapter's
last-resort guard must never fire, and every record in the ring must be sane.
"""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbpipe.feeds.sinks import RingSink
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


def _json_for(venue):
    adapter = fuzz._adapter(venue)
    natives = [i.native for i in adapter.instruments]
    scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
               | st.floats(allow_nan=False) | st.sampled_from(natives)
               | st.sampled_from(["snapshot", "delta", "update", "bbo-tbt", "l2_data",
                                  "ticker", "spot.book_ticker", "bid", "offer", "1", "0",
                                  "NaN", "1e999", "-1", "2024-01-01T00:00:00Z",
                                  "orderbook.1." + natives[0], "tickers." + natives[0]])
               | st.text(max_size=12))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(KEYS[venue]), inner, max_size=6), max_leaves=25)
    frames = st.dictionaries(st.sampled_from(KEYS[venue]), values, max_size=8)
    return adapter, frames


@pytest.mark.parametrize("venue", fuzz.VENUES)
def test_hypothesis_json_in_the_venues_vocabulary(instance, venue):
    adapter, frames = _json_for(venue)
    ring = SpscRing.create("hyp", 1 << 14, "MarketUpdate", policy="drop", instance=instance)
    sink = RingSink(ring, adapter.venue_id)
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
        ap0 = getattr(adapter, "applied", 0)
        ctl = adapter.parse(frame, 1, sink, 0)
        sink.flush()
        got, rej = sink.seq - before, sum(sink.rejects.values()) - rej0
        assert got or rej or ctl is not None or getattr(adapter, "applied", 0) != ap0, frame
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
