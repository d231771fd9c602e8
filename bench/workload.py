"""The synthetic MarketUpdate stream the benchmarks feed the detector with.

``make_stream``: quotes uniform over instrument x leg of a config, mid = a random-walk fair
value + noise, half spread 0.5..2 bp, a share ``dislocation_p`` of quotes dislocated by
20..60 bp (so opportunities open, update and close), 1 % funding updates on perp legs;
deterministic for a seed. ``write_workload`` writes one as a recording (what
bench/pipeline.py and bench/soak.py replay).
"""
from __future__ import annotations

import time

import numpy as np

from arbpipe.config import PERP_ID_BIT
from arbpipe.replay import file as RF
from shm_layouts import MARKET_UPDATE, Flag, Kind
from shm_layouts.records import MARKET_UPDATE_FUNDING, MARKET_UPDATE_LEVEL

FUNDING_INTERVAL_S = 28800          # 8 h, as the perp venues pay it


def make_stream(cfg, n: int, seed: int = 20261123, dislocation_p: float = 0.002) -> np.ndarray:
    """n MarketUpdates (structured array), deterministic."""
    rng = np.random.default_rng(seed)
    legs = cfg.legs()
    nl, ni = len(legs), len(cfg.instruments)
    fair = 10.0 ** rng.uniform(-1, 4, ni)
    inst = rng.integers(1, ni + 1, n)
    leg = rng.integers(0, nl, n)
    steps = rng.normal(0, 0.2e-4, n)
    mid = fair[inst - 1] * (1 + steps + rng.normal(0, 0.3e-4, n))
    disl = rng.random(n) < dislocation_p
    mid[disl] *= 1 + rng.choice([-1, 1], disl.sum()) * rng.uniform(20, 60, disl.sum()) * 1e-4
    hs = rng.uniform(0.5, 2.0, n) * 1e-4
    rec = np.zeros(n, MARKET_UPDATE)
    perp = legs.is_perp[leg].astype(bool)
    rec["instrument_id"] = inst | np.where(perp, PERP_ID_BIT, 0)
    rec["venue_id"] = legs.venue[leg]
    rec["kind"] = int(Kind.QUOTE)
    rec["bid"] = mid * (1 - hs)
    rec["ask"] = mid * (1 + hs)
    notional = rng.uniform(2_000, 80_000, n)
    rec["bid_qty"] = notional / mid
    rec["ask_qty"] = notional * rng.uniform(0.5, 1.5, n) / mid
    t0 = time.time_ns()
    rec["recv_ts_ns"] = t0 + np.arange(n, dtype=np.int64) * 1000
    rec["exchange_ts_ns"] = rec["recv_ts_ns"] - 2_000_000
    rec["seq"] = np.arange(1, n + 1)
    # funding updates on perp legs: the same record seen through the FUNDING layout
    fund = (rng.random(n) < 0.01) & perp
    f = rec.view(MARKET_UPDATE_FUNDING)
    f["kind"][fund] = int(Kind.FUNDING)
    f["funding_rate"][fund] = rng.normal(1e-4, 1e-4, fund.sum())
    f["next_funding_ns"][fund] = t0 + 3600 * 10**9
    f["funding_interval_s"][fund] = FUNDING_INTERVAL_S
    f["mark_price"][fund] = 0.0
    return rec


def with_levels(stream: np.ndarray) -> np.ndarray:
    """The stream with L2 books on: each QUOTE preceded by the two LEVEL records of a depth
    message that replaces its book by the quote's top level (the bid flagged SNAPSHOT, then
    the ask flagged BOOK_END), so every book stays consistent with the quotes; 3 records
    per quote, in the order a feed publishes them (``arbpipe.feeds.sinks.RingSink.book``)."""
    q = stream["kind"] == Kind.QUOTE
    n = len(stream) + 2 * int(q.sum())
    out = np.zeros(n, MARKET_UPDATE)
    pos = np.arange(len(stream)) + 2 * np.cumsum(q) - 2 * q      # where each record lands
    out[pos + 2 * q] = stream
    quotes = stream[q]
    for side in (0, 1):
        lv = np.zeros(len(quotes), MARKET_UPDATE_LEVEL)     # fancy indexing copies: build,
        lv["instrument_id"] = quotes["instrument_id"]      # then store
        lv["venue_id"] = quotes["venue_id"]
        lv["kind"] = Kind.LEVEL
        lv["flags"] = (Flag.BOOK_ASK | Flag.BOOK_END) if side else Flag.SNAPSHOT
        lv["price"] = quotes["ask" if side else "bid"]
        lv["qty"] = quotes["ask_qty" if side else "bid_qty"]
        lv["depth"] = 20
        lv["exchange_ts_ns"] = quotes["exchange_ts_ns"]
        lv["recv_ts_ns"] = quotes["recv_ts_ns"]
        lv["seq"] = quotes["seq"]
        out[pos[q] + side] = lv.view(MARKET_UPDATE)
    return out


def write_workload(path: str, cfg, n: int, seed: int, dislocation_p: float,
                   source: str, books: bool = False) -> np.ndarray:
    """``make_stream(cfg, n, seed, dislocation_p)`` written as a recording at ``path``
    (header names from ``cfg``, ``source`` said in it; ``books``: each quote with the two
    LEVEL records of its depth message, ``with_levels``); returns the records."""
    recs = make_stream(cfg, n, seed=seed, dislocation_p=dislocation_p)
    if books:
        recs = with_levels(recs)
    RF.write_recording(path, recs, RF.names_from_config(cfg, source=source))
    return recs
