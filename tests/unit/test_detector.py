"""Detector: numba kernel vs a pure-Python reference of the same rules, direct cases,
config errors, and the real process between real rings.

The reference (``Ref``) restates the rules of ``arbpipe.detect.kernel``'s docstring in plain
Python dicts and floats; hypothesis streams (random quotes, funding, venue and instrument
status, stale/backward timestamps, crossed and invalid books, unknown ids, sweeps) must give
exactly the same Opportunity records (every field but detect_ns / opened_ns) and the same
counters.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbpipe.config import (PERP_ID_BIT, ConfigError, config_from_dict, load_config,
                            parse_config)
from arbpipe.detect.detector import Detector
from arbpipe.detect.walk import choose_size
from arbpipe.detect.stats import read_stats
from shm_layouts.detector_stats import COUNTER_NAMES
from shm_layouts import MARKET_UPDATE, OPPORTUNITY, CloseReason, Kind, OppState, VenueStatus
from shm_layouts.records import OPP_TOP_OF_BOOK
from tests.helpers import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
UP, STALE, DISC = int(VenueStatus.UP), int(VenueStatus.STALE), int(VenueStatus.DISCONNECTED)
OPEN, UPDATE, CLOSED = int(OppState.OPEN), int(OppState.UPDATE), int(OppState.CLOSED)
GONE, QSTALE, DOWN, SHUT = (int(CloseReason.SPREAD_GONE), int(CloseReason.QUOTE_STALE),
                            int(CloseReason.VENUE_DOWN), int(CloseReason.SHUTDOWN))
BIN, USDM, BYS, BYL, OKX, CB, KR, GATE = 1, 2, 3, 4, 5, 6, 7, 8


def base_dict(**det):
    d = {
        "instruments": ["BTC/USDT", "ETH/USDT", "SOL/USDT"],
        "venues": {
            "binance": {"taker_fee_bps": 10.0, "maker_fee_bps": 10.0},
            "binance-usdm": {"market": "perp", "taker_fee_bps": 5.0, "maker_fee_bps": 2.0,
                             "funding_interval_s": 28800},
            "bybit-spot": {"taker_fee_bps": 10.0, "maker_fee_bps": 10.0},
            "bybit-linear": {"market": "perp", "taker_fee_bps": 5.5, "maker_fee_bps": 2.0,
                             "funding_interval_s": 14400},
            "okx": {"taker_fee_bps": 10.0, "maker_fee_bps": 8.0,
                    "perp": {"taker_fee_bps": 5.0, "maker_fee_bps": 2.0,
                             "funding_interval_s": 28800}},
            "gate": {"taker_fee_bps": 0.0, "maker_fee_bps": 0.0},
        },
        "detector": {"min_net_bps": 1.0, "max_quote_age_ms": 1000.0,
                     "max_plausible_spread_bps": 300.0, "confidence_floor": 0.0,
                     "max_notional": 1e12, "slippage_base_bps": 0.0,
                     "slippage_depth_bps": 2.0, "update_threshold_bps": 0.5,
                     "persist_updates": 1, "persist_ms": 0.0},
    }
    d["detector"].update(det)
    return d


def cfg_of(**det):
    return config_from_dict(base_dict(**det))


# ------------------------------------------------------------ record builders -----

def quote(vid, iid, bid, ask, bq=1.0, aq=1.0, t=T0, ex=0):
    r = np.zeros(1, MARKET_UPDATE)
    r[0] = (iid, vid, int(Kind.QUOTE), 0, bid, ask, bq, aq, ex, t, 1)
    return r


def funding(vid, iid, rate, interval_s=0, nxt=0, t=T0):
    r = np.zeros(1, MARKET_UPDATE)
    w = r.view(np.int64)
    w[0] = iid | (vid << 32) | (int(Kind.FUNDING) << 48)
    w[1:2] = np.array([rate], np.float64).view(np.int64)
    w[2] = nxt
    w[3] = interval_s
    w[6] = t
    return r


def status(vid, st_, iid=0, t=T0):
    r = np.zeros(1, MARKET_UPDATE)
    w = r.view(np.int64)
    w[0] = iid | (vid << 32) | (int(Kind.STATUS) << 48)
    w[1] = st_
    w[6] = t
    return r


def cat(*recs):
    return np.concatenate(recs)


# ------------------------------------------------------------ the reference -------

class Ref:
    """Plain-Python restatement of the detection rules."""

    def __init__(self, cfg):
        legs = cfg.legs()
        self.nl = len(legs)
        self.ni = len(cfg.instruments)
        self.venue = [int(x) for x in legs.venue]
        self.perp = [bool(x) for x in legs.is_perp]
        self.fee = [float(x) for x in legs.taker_fee_bps]
        self.default_iv = [int(x) for x in legs.funding_interval_s]
        self.cols = {}
        for leg, (v, p) in enumerate(zip(self.venue, self.perp)):
            self.cols.setdefault(v, {})[p] = leg
        d = cfg.detector
        self.d = d
        self.max_age = int(round(d.max_quote_age_ms * 1e6))
        self.persist_ns = int(round(d.persist_ms * 1e6))
        ids = cfg.instrument_ids()
        self.maxq = {ids[k]: q for k, q in d.max_exec_qty.items()}
        self.book = {}          # (i, leg) -> (bid, ask, bq, aq, recv)
        self.recv = {}          # (i, leg) -> last recv of a valid quote
        self.fund = {}          # (i, leg) -> (rate, interval)
        self.vstat = [UP] * self.nl
        self.istat = {}         # (i, leg) -> status
        self.open = {}          # (i, b, s) -> dict
        self.pend = {}          # (i, b, s) -> (count, since)
        self.c = dict.fromkeys(COUNTER_NAMES, 0)
        self.seq = 0
        self.nopp = 0
        self.out = []

    # ids
    def leg(self, vid, iid):
        cols = self.cols.get(vid)
        if not cols:
            return None
        if iid & PERP_ID_BIT:
            return cols.get(True)
        return cols.get(False, cols.get(True))

    # output
    def emit(self, i, b, s, state, reason, trig):
        o = self.open[(i, b, s)]
        self.seq += 1
        # the streams carry no LEVEL records: every pair is sized on the top levels
        flags = (1 if self.perp[b] else 0) | (2 if self.perp[s] else 0) | OPP_TOP_OF_BOOK
        v = o["vals"]
        self.out.append((i, self.venue[b], self.venue[s], state, reason, flags,
                         float(np.float32(v[6])), v[0], v[1], v[2], v[3], v[4], v[5], trig,
                         o["id"], self.seq) + v[7:])
        self.c["published"] += 1

    def close(self, key, reason, trig):
        self.emit(*key, CLOSED, reason, trig)
        del self.open[key]
        self.pend.pop(key, None)
        self.c["closed"] += 1
        self.c["open_now"] -= 1
        self.c[{GONE: "closed_spread_gone", QSTALE: "closed_quote_stale",
                DOWN: "closed_venue_down", SHUT: "closed_shutdown"}[reason]] += 1

    def fail(self, key, reason, trig):
        self.pend.pop(key, None)
        if key in self.open:
            self.close(key, reason, trig)

    def fbps(self, i, leg):
        if not self.perp[leg]:
            return 0.0
        rate, iv = self.fund.get((i, leg), (0.0, self.default_iv[leg]))
        if iv <= 0:
            return 0.0
        return rate * (28800.0 / iv) * 1e4

    @staticmethod
    def clamp(x):
        return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x

    def evaluate(self, i, b, s, t):
        key = (i, b, s)
        qb, qs = self.book.get((i, b)), self.book.get((i, s))
        if qb is None or qs is None:
            return self.fail(key, QSTALE, t)
        buy_ask, sell_bid = qb[1], qs[0]
        if not sell_bid > buy_ask:
            return self.fail(key, GONE, t)
        self.c["evaluations"] += 1
        if (self.vstat[b] != UP or self.vstat[s] != UP
                or self.istat.get((i, b), UP) != UP or self.istat.get((i, s), UP) != UP):
            self.c["filter_status"] += 1
            return self.fail(key, DOWN, t)
        if t - self.recv[(i, b)] > self.max_age or t - self.recv[(i, s)] > self.max_age:
            self.c["filter_stale"] += 1
            return self.fail(key, QSTALE, t)
        mid = (buy_ask + sell_bid) * 0.5
        gross = (sell_bid - buy_ask) / mid * 1e4
        if gross > self.d.max_plausible_spread_bps:
            self.c["filter_implausible"] += 1
            return self.fail(key, QSTALE, t)
        # sized on the top levels (no LEVEL records in these streams): the walk of one level
        # a side (its enumeration is checked in tests/unit/test_walk.py), then the costs
        # restated from the kernel's docstring
        fb, fs, sl = self.fee[b] / 1e4, self.fee[s] / 1e4, self.d.slippage_base_bps / 1e4
        kb, ks = 1.0 + fb + 0.5 * sl + 0.0, 1.0 - fs - 0.5 * sl + 0.0
        ap, aq = np.array([buy_ask]), np.array([qb[3]])
        bp, bq = np.array([sell_bid]), np.array([qs[2]])
        self.c["walks_top_of_book"] += 1
        q, solved = choose_size(ap, aq, 1, bp, bq, 1, kb, ks,
                                        self.d.min_net_bps / 1e4, self.maxq.get(i, math.inf),
                                        self.d.max_notional)
        if q <= 0.0:
            self.c["filter_below_net"] += 1
            return self.fail(key, GONE, t)
        bn, sn = buy_ask * q, sell_bid * q
        self.c["walk_levels"] += 2
        mn = 0.5 * (bn + sn)
        slip = sl * mn + self.d.slippage_depth_bps / 1e4 * mn * (q / min(qb[3], qs[2]))
        profit = (sn - bn) - (fb * bn + fs * sn) - slip + (0.0 * sn - 0.0 * bn)
        net = profit / mn * 1e4
        if net < self.d.min_net_bps and not (solved and net >= self.d.min_net_bps - 1e-9):
            self.c["filter_below_net"] += 1
            return self.fail(key, GONE, t)
        fd = self.fbps(i, s) - self.fbps(i, b)
        conf = (50.0 * self.clamp(net / self.d.confidence_spread_bps)
                + 30.0 * self.clamp(q * (bn / q) / self.d.confidence_notional)
                + 20.0 * self.clamp(0.5 + fd / (2.0 * self.d.confidence_funding_bps)))
        if conf < self.d.confidence_floor:
            self.c["filter_confidence"] += 1
            return self.fail(key, GONE, t)
        vals = (buy_ask, sell_bid, q, (sn - bn) / mn * 1e4, net, fd, conf, bn / q, sn / q,
                profit, profit, gross, 0.0, 1, 1)
        if key in self.open:
            if abs(net - self.open[key]["vals"][4]) > self.d.update_threshold_bps:
                self.open[key]["vals"] = vals
                self.c["updated"] += 1
                self.emit(i, b, s, UPDATE, 0, t)
            return
        n, since = self.pend.get(key, (0, t))
        n += 1
        self.pend[key] = (n, since)
        pn = self.d.persist_updates
        if (pn <= 1 or n >= pn) and (self.persist_ns <= 0 or t - since >= self.persist_ns):
            self.pend.pop(key)
            self.nopp += 1
            self.open[key] = {"id": self.nopp, "vals": vals}
            self.c["opened"] += 1
            self.c["open_now"] += 1
            self.emit(i, b, s, OPEN, 0, t)
        else:
            self.c["filter_persist"] += 1

    def pairs_with(self, legs):
        for i in range(1, self.ni + 1):
            for b in range(self.nl):
                for s in range(self.nl):
                    if b in legs or s in legs:
                        yield i, b, s

    def apply(self, rec):
        w = np.frombuffer(rec.tobytes(), np.int64)
        iid, vid, kind = int(rec["instrument_id"]), int(rec["venue_id"]), int(rec["kind"])
        t = int(rec["recv_ts_ns"])
        self.c["updates"] += 1
        if kind == Kind.STATUS:
            return self.on_status(vid, iid, int(w[1] & 0xFFFFFFFF), t)
        i = iid & (PERP_ID_BIT - 1)
        leg = self.leg(vid, iid)
        if leg is None or not 1 <= i <= self.ni:
            self.c["filter_unknown"] += 1
            return
        if kind == Kind.QUOTE:
            return self.on_quote(i, leg, float(rec["bid"]), float(rec["ask"]),
                                 float(rec["bid_qty"]), float(rec["ask_qty"]), t)
        if kind == Kind.FUNDING:
            self.c["funding"] += 1
            rate = float(w[1:2].view(np.float64)[0])
            if not abs(rate) < math.inf:
                self.c["filter_invalid"] += 1
                return
            iv = int(w[3] & 0xFFFFFFFF)
            self.fund[(i, leg)] = (rate, iv if iv > 0 else self.default_iv[leg])
            return
        self.c["filter_unknown"] += 1

    def on_quote(self, i, k, bid, ask, bq, aq, t):
        self.c["quotes"] += 1
        ok = (bid > 0 and ask > bid and ask < math.inf and 0 < bq < math.inf
              and 0 < aq < math.inf)
        if not ok:
            self.c["filter_invalid"] += 1
            self.book.pop((i, k), None)
            for j in range(self.nl):
                if j != k:
                    self.fail((i, k, j), QSTALE, t)
                    self.fail((i, j, k), QSTALE, t)
            return
        self.book[(i, k)] = (bid, ask, bq, aq)
        self.recv[(i, k)] = t
        self.istat[(i, k)] = UP
        for j in range(self.nl):
            if j != k:
                self.evaluate(i, k, j, t)
                self.evaluate(i, j, k, t)

    def on_status(self, vid, iid, st_, t):
        self.c["status"] += 1
        cols = self.cols.get(vid)
        if st_ not in (UP, STALE, DISC) or not cols:
            self.c["filter_unknown"] += 1
            return
        reason = DOWN if st_ == DISC else QSTALE
        if iid:
            i = iid & (PERP_ID_BIT - 1)
            leg = self.leg(vid, iid)
            if leg is None or not 1 <= i <= self.ni:
                self.c["filter_unknown"] += 1
                return
            self.istat[(i, leg)] = st_
            if st_ == UP:
                return
            for j in range(self.nl):
                if j != leg:
                    self.fail((i, leg, j), reason, t)
                    self.fail((i, j, leg), reason, t)
            if st_ == DISC:
                self.book.pop((i, leg), None)
            return
        legs = set(cols.values())
        for leg in legs:
            self.vstat[leg] = st_
        if st_ == UP:
            return
        for key in list(self.pairs_with(legs)):
            self.fail(key, reason, t)
        if st_ == DISC:
            for i in range(1, self.ni + 1):
                for leg in legs:
                    self.book.pop((i, leg), None)
                    self.istat.pop((i, leg), None)

    def sweep(self, now):
        self.c["sweeps"] += 1
        for key in sorted(self.open):
            i, b, s = key
            rb, rs = self.recv[(i, b)], self.recv[(i, s)]
            if now - rb > self.max_age or now - rs > self.max_age:
                self.close(key, QSTALE, min(rb, rs))

    def close_all(self, reason, trig):
        for key in sorted(self.open):
            self.close(key, reason, trig)


def as_tuples(recs):
    return [(int(r["instrument_id"]), int(r["buy_venue"]), int(r["sell_venue"]),
             int(r["state"]), int(r["close_reason"]), int(r["flags"]), float(r["confidence"]),
             float(r["buy_ask"]), float(r["sell_bid"]), float(r["exec_qty"]),
             float(r["gross_bps"]), float(r["net_bps"]), float(r["funding_delta_bps"]),
             int(r["trigger_recv_ns"]), int(r["opp_id"]), int(r["seq"]), float(r["vwap_buy"]),
             float(r["vwap_sell"]), float(r["profit"]), float(r["profit_usd"]),
             float(r["top_gross_bps"]), float(r["carry_bps"]), int(r["buy_levels"]),
             int(r["sell_levels"])) for r in recs]


COMPARED = [n for n in COUNTER_NAMES if n not in (
    "last_trigger_recv_ns", "last_detect_ns", "latency_sum_ns", "latency_max_ns",
    "kernel_calls", "idle_waits", "heartbeat_ns", "n_legs", "n_instruments", "opp_counter",
    "seq", "dropped_out")]


def run_both(cfg, events):
    """events: structured MarketUpdate arrays or ("sweep", now) / ("close_all",)."""
    det, ref = Detector(cfg), Ref(cfg)
    got, pending = [], []

    def flush():
        if pending:
            got.extend(as_tuples(det.process(cat(*pending))))
            pending.clear()
    for ev in events:
        if isinstance(ev, tuple):
            flush()
            if ev[0] == "sweep":
                got.extend(as_tuples(det.sweep(ev[1])))
                ref.sweep(ev[1])
            else:
                got.extend(as_tuples(det.close_all(SHUT, ev[1])))
                ref.close_all(SHUT, ev[1])
        else:
            pending.append(ev)
            for r in ev:
                ref.apply(r)
    flush()
    return det, ref, got


# ------------------------------------------------------------ hypothesis ----------

LEG_IDS = [(BIN, 0), (USDM, 0), (USDM, PERP_ID_BIT), (BYS, 0), (BYL, PERP_ID_BIT),
           (OKX, 0), (OKX, PERP_ID_BIT), (GATE, 0), (CB, 0), (BIN, PERP_ID_BIT)]
HOT_LEGS = [(BIN, 0), (GATE, 0), (OKX, PERP_ID_BIT)]
BASE_PX = {1: 100.0, 2: 2.5, 3: 40000.0}


@st.composite
def streams(draw):
    n = draw(st.integers(1, 80))
    t = T0
    events = []
    for _ in range(n):
        t += draw(st.sampled_from([0, 1, MS, MS, 10 * MS, 10 * MS, 100 * MS, 400 * MS,
                                   999 * MS, 1000 * MS, 1001 * MS, 3000 * MS, -50 * MS]))
        kind = draw(st.sampled_from(["q"] * 16 + ["f", "s", "s2", "sweep", "u"]))
        vid, bit = draw(st.sampled_from(LEG_IDS + HOT_LEGS * 3))
        i = draw(st.sampled_from([1, 1, 1, 1, 1, 1, 2, 3, 4]))          # 4: not configured
        iid = i | bit
        if kind == "q":
            off = draw(st.sampled_from([0, 0, 0, 2, -2, 10, -10, 25, -25, 40, 60, -60]))
            off += draw(st.integers(-3, 3)) * 0.25
            mid = BASE_PX.get(i, 1.0) * (1 + off * 1e-4)
            hs = draw(st.sampled_from([0.1, 1.0, 5.0])) * 1e-4
            bid, ask = mid * (1 - hs), mid * (1 + hs)
            shape = draw(st.sampled_from(["ok"] * 30 + ["crossed", "zero", "nan", "inf",
                                                      "equal", "huge"]))
            if shape == "crossed":
                bid, ask = ask, bid
            elif shape == "zero":
                bid = 0.0
            elif shape == "nan":
                ask = float("nan")
            elif shape == "inf":
                ask = float("inf")
            elif shape == "equal":
                bid = ask
            elif shape == "huge":
                bid, ask = mid * 1.05, mid * 1.0501
            bq = draw(st.sampled_from([0.001, 0.5, 1.0, 1.0, 3.0, 1e6, 0.0]))
            aq = draw(st.sampled_from([0.001, 0.5, 1.0, 1.0, 3.0, 1e6, -1.0]))
            events.append(quote(vid, iid, bid, ask, bq, aq, t))
        elif kind == "f":
            rate = draw(st.sampled_from([0.0, 1e-4, -2e-4, 5e-4, float("nan")]))
            iv = draw(st.sampled_from([0, 3600, 14400, 28800]))
            events.append(funding(vid, iid, rate, iv, t + 3600 * 10**9, t))
        elif kind == "s":
            events.append(status(vid, draw(st.sampled_from([UP, UP, STALE, DISC, 7])), 0, t))
        elif kind == "s2":
            events.append(status(vid, draw(st.sampled_from([UP, STALE, DISC])), iid, t))
        elif kind == "u":
            events.append(status(draw(st.sampled_from([0, 6, 9, 300])), UP, 0, t))
        else:
            events.append(("sweep", t + draw(st.sampled_from([0, 500 * MS, 1001 * MS]))))
    if draw(st.booleans()):
        events.append(("close_all", t))
    return events


DET_VARIANTS = st.fixed_dictionaries({
    "min_net_bps": st.sampled_from([-5.0, 0.0, 1.0, 4.0, 20.0]),
    "confidence_floor": st.sampled_from([0.0, 20.0, 55.0]),
    "update_threshold_bps": st.sampled_from([0.0, 0.5, 5.0]),
    "persist_updates": st.sampled_from([0, 1, 2, 3]),
    "persist_ms": st.sampled_from([0.0, 150.0]),
    "slippage_base_bps": st.sampled_from([0.0, 0.25]),
    "max_notional": st.sampled_from([1e12, 150.0]),
    "max_plausible_spread_bps": st.sampled_from([300.0, 60.0]),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), DET_VARIANTS)
def test_kernel_matches_reference(events, det):
    cfg = config_from_dict(base_dict(**det, max_exec_qty={"SOL/USDT": 0.75}))
    d, ref, got = run_both(cfg, events)
    assert got == ref.out
    stats = d.stats()
    assert {k: stats[k] for k in COMPARED} == {k: ref.c[k] for k in COMPARED}
    assert stats["published"] == len(got)


def test_reference_streams_do_produce_every_kind_of_record():
    """Guard against a vacuous equivalence test: the generator's kind of stream yields
    opens, updates and every close reason."""
    import random
    rnd = random.Random(7)
    cfg = cfg_of()
    seen = set()
    for _ in range(40):
        t = T0
        events = []
        for _ in range(300):
            t += rnd.choice([MS, 100 * MS, 400 * MS, 1500 * MS])
            vid, bit = rnd.choice(LEG_IDS[:8])
            r = rnd.random()
            if r < 0.9:
                mid = 100.0 * (1 + rnd.randint(-60, 60) * 1e-4)
                events.append(quote(vid, 1 | bit, mid * 0.9999, mid * 1.0001, 1, 1, t))
            elif r < 0.95:
                events.append(status(vid, rnd.choice([UP, STALE, DISC]), 0, t))
            else:
                events.append(("sweep", t))
        events.append(("close_all", t))
        _, ref, got = run_both(cfg, events)
        assert got == ref.out
        seen |= {(x[3], x[4]) for x in got}
    assert {(OPEN, 0), (UPDATE, 0), (CLOSED, GONE), (CLOSED, QSTALE), (CLOSED, DOWN),
            (CLOSED, SHUT)} <= seen


# ------------------------------------------------------------ direct cases --------

def test_known_dislocation_gives_open_with_hand_computed_numbers():
    d = Detector(cfg_of(confidence_spread_bps=10.0, confidence_notional=10_000.0))
    out = d.process(cat(quote(BIN, 1, 100.00, 100.01, 5.0, 1.0, T0),
                        quote(BYS, 1, 100.50, 100.51, 2.0, 2.0, T0 + 5 * MS)))
    assert len(out) == 1
    r = out[0]
    assert (r["state"], r["close_reason"]) == (OPEN, 0)
    assert (r["instrument_id"], r["buy_venue"], r["sell_venue"]) == (1, BIN, BYS)
    assert r["buy_ask"] == 100.01 and r["sell_bid"] == 100.50
    # mid 100.255; gross = 0.49 / 100.255 * 1e4 = 48.8753... bps
    assert r["gross_bps"] == pytest.approx(48.87536781, abs=1e-7)
    # exec = min(ask qty 1.0 on binance, bid qty 2.0 on bybit) = 1.0 -> slippage 2 * 1/1
    assert r["exec_qty"] == 1.0
    assert r["net_bps"] == pytest.approx(48.87536781 - 10 - 10 - 2.0, abs=1e-7)
    assert r["funding_delta_bps"] == 0.0
    # 50 (net >= 10 bps) + 30 * 100.01/10000 + 20 * 0.5 (no funding)
    assert r["confidence"] == pytest.approx(50 + 30 * 0.010001 + 10, abs=1e-4)
    assert r["trigger_recv_ns"] == T0 + 5 * MS
    assert r["opp_id"] == 1 and r["seq"] == 1
    assert r["flags"] == OPP_TOP_OF_BOOK      # quotes only: no L2 book on either leg
    assert r["opened_ns"] == r["detect_ns"] and abs(r["detect_ns"] - time.time_ns()) < 10**10
    s = d.stats()
    assert s["opened"] == 1 and s["open_now"] == 1 and s["evaluations"] == 1


def test_exec_qty_caps_and_slippage():
    d = Detector(cfg_of(max_notional=50.0, slippage_base_bps=0.5, slippage_depth_bps=4.0))
    out = d.process(cat(quote(BIN, 1, 99.0, 100.0, 5.0, 2.0, T0),
                        quote(BYS, 1, 101.0, 101.5, 3.0, 3.0, T0)))
    r = out[0]
    assert r["exec_qty"] == 0.5                   # 50 / 100 < min(2, 3)
    gross = (101.0 - 100.0) / 100.5 * 1e4
    assert r["net_bps"] == pytest.approx(gross - 20 - (0.5 + 4.0 * 0.5 / 2.0))


def test_update_only_on_material_change_then_spread_gone():
    d = Detector(cfg_of(update_threshold_bps=2.0))
    out = d.process(cat(quote(BIN, 1, 99.9, 100.0, 1, 1, T0),
                        quote(BYS, 1, 100.5, 100.6, 1, 1, T0 + MS)))
    assert [int(x) for x in out["state"]] == [OPEN]
    net0 = float(out[0]["net_bps"])
    out = d.process(quote(BYS, 1, 100.51, 100.6, 1, 1, T0 + 2 * MS))    # ~+1 bp: no update
    assert len(out) == 0
    out = d.process(quote(BYS, 1, 100.6, 100.7, 1, 1, T0 + 3 * MS))     # ~+10 bp: update
    assert [int(x) for x in out["state"]] == [UPDATE]
    assert out[0]["net_bps"] > net0 + 2 and out[0]["opp_id"] == 1
    out = d.process(quote(BYS, 1, 100.05, 100.7, 1, 1, T0 + 4 * MS))    # gross 5 bp < fees
    assert [(int(x["state"]), int(x["close_reason"])) for x in out] == [(CLOSED, GONE)]
    assert out[0]["sell_bid"] == 100.6            # CLOSED carries the last published values
    assert out[0]["trigger_recv_ns"] == T0 + 4 * MS
    s = d.stats()
    assert (s["opened"], s["updated"], s["closed_spread_gone"], s["open_now"]) == (1, 1, 1, 0)
    assert s["filter_below_net"] == 1


def _open_one(d, t=T0):
    out = d.process(cat(quote(BIN, 1, 99.9, 100.0, 1, 1, t), quote(BYS, 1, 100.5, 100.6, 1, 1, t)))
    assert [int(x) for x in out["state"]] == [OPEN]
    return out[0]


def test_closed_quote_stale_by_sweep():
    d = Detector(cfg_of())
    _open_one(d)
    assert len(d.sweep(T0 + 1000 * MS)) == 0                     # exactly max age: still fresh
    out = d.sweep(T0 + 1001 * MS)
    assert [(int(x["state"]), int(x["close_reason"])) for x in out] == [(CLOSED, QSTALE)]
    assert out[0]["trigger_recv_ns"] == T0
    assert d.stats()["closed_quote_stale"] == 1


def test_closed_venue_down_on_disconnect_and_quotes_cleared():
    d = Detector(cfg_of())
    _open_one(d)
    out = d.process(status(BYS, DISC, 0, T0 + MS))
    assert [(int(x["state"]), int(x["close_reason"])) for x in out] == [(CLOSED, DOWN)]
    assert d.book(1, d.legs.leg_of(BYS, 1))["ask"] == 0.0
    # quotes after the disconnect but before UP are filtered by status
    out = d.process(quote(BYS, 1, 100.5, 100.6, 1, 1, T0 + 2 * MS))
    assert len(out) == 0 and d.stats()["filter_status"] == 1
    out = d.process(cat(status(BYS, UP, 0, T0 + 3 * MS), quote(BYS, 1, 100.5, 100.6, 1, 1, T0 + 4 * MS)))
    assert [int(x) for x in out["state"]] == [OPEN] and out[0]["opp_id"] == 2


def test_venue_stale_and_instrument_status_close_quote_stale():
    d = Detector(cfg_of())
    _open_one(d)
    out = d.process(status(BIN, STALE, 0, T0 + MS))
    assert [(int(x["state"]), int(x["close_reason"])) for x in out] == [(CLOSED, QSTALE)]
    d.process(status(BIN, UP, 0, T0 + 2 * MS))
    out = d.process(quote(BYS, 1, 100.5, 100.6, 1, 1, T0 + 3 * MS))
    assert [int(x) for x in out["state"]] == [OPEN]
    # the feed's silent-symbol watchdog: STALE for one instrument of one venue
    out = d.process(status(BYS, STALE, 1, T0 + 4 * MS))
    assert [(int(x["state"]), int(x["close_reason"])) for x in out] == [(CLOSED, QSTALE)]
    assert d.stats()["closed_quote_stale"] == 2
    # ... and a fresh quote of that symbol makes it usable again
    out = d.process(quote(BYS, 1, 100.5, 100.6, 1, 1, T0 + 5 * MS))
    assert [int(x) for x in out["state"]] == [OPEN]


def test_crossed_book_closes_and_counts_invalid():
    d = Detector(cfg_of())
    _open_one(d)
    out = d.process(quote(BYS, 1, 100.7, 100.6, 1, 1, T0 + MS))
    assert [(int(x["state"]), int(x["close_reason"])) for x in out] == [(CLOSED, QSTALE)]
    for bad in (quote(BIN, 2, 0.0, 1.0), quote(BIN, 2, 1.0, 1.0), quote(BIN, 2, 1.0, 2.0, 0.0),
                quote(BIN, 2, float("nan"), 2.0), quote(BIN, 2, 1.0, float("inf"))):
        d.process(bad)
    assert d.stats()["filter_invalid"] == 6


def test_shutdown_closes_everything():
    d = Detector(cfg_of())
    _open_one(d)
    out = d.close_all(SHUT, T0 + 9)
    assert [(int(x["state"]), int(x["close_reason"])) for x in out] == [(CLOSED, SHUT)]
    assert d.stats()["open_now"] == 0 and d.stats()["closed_shutdown"] == 1


def test_filters_counted_by_reason():
    def run(updates, **det):
        d = Detector(cfg_of(**det))
        d.process(cat(*updates))
        s = d.stats()
        assert s["opened"] == 0
        return {k[7:]: v for k, v in s.items() if k.startswith("filter_") and v}

    buy = quote(BIN, 1, 99.9, 100.0, 1, 1, T0)
    # stale: the binance quote is 1001 ms older than the trigger
    assert run([buy, quote(BYS, 1, 100.5, 100.6, 1, 1, T0 + 1001 * MS)]) == {"stale": 1}
    # implausible: ~300 bp gross
    assert run([buy, quote(BYS, 1, 103.0, 103.1, 1, 1, T0)],
               max_plausible_spread_bps=200.0) == {"implausible": 1}
    # below net: ~10 bp gross < 20 bp of fees
    assert run([buy, quote(BYS, 1, 100.1, 100.2, 1, 1, T0)]) == {"below_net": 1}
    # confidence: net ~27 bp but a tiny size and a floor of 90
    assert run([buy, quote(BYS, 1, 100.5, 100.6, 1, 1, T0)],
               confidence_floor=90.0) == {"confidence": 1}
    # status: the selling venue is STALE
    assert run([status(BYS, STALE), buy, quote(BYS, 1, 100.5, 100.6, 1, 1, T0)]) == \
        {"status": 1}
    # persistence: needs 2 qualifying evaluations
    assert run([buy, quote(BYS, 1, 100.5, 100.6, 1, 1, T0)], persist_updates=2) == \
        {"persist": 1}
    # invalid: crossed
    assert run([quote(BIN, 1, 100.1, 100.0)]) == {"invalid": 1}
    # unknown: venue 6 not configured, instrument 9 not configured, spot venue with a perp
    # id, unknown kind, status of an unknown venue / with an unknown code
    odd = quote(BIN, 1, 1, 2)
    odd["kind"] = 9
    assert run([quote(CB, 1, 1, 2), quote(BIN, 9, 1, 2), quote(BIN, 1 | PERP_ID_BIT, 1, 2),
                odd, status(CB, DISC), status(BIN, 42)]) == {"unknown": 6}


def test_persistence_by_updates_and_by_time():
    d = Detector(cfg_of(persist_updates=3))
    d.process(quote(BIN, 1, 99.9, 100.0, 1, 1, T0))
    assert len(d.process(quote(BYS, 1, 100.5, 100.6, 1, 1, T0))) == 0
    assert len(d.process(quote(BYS, 1, 100.5, 100.6, 1, 1, T0 + 1))) == 0
    out = d.process(quote(BYS, 1, 100.5, 100.6, 1, 1, T0 + 2))
    assert [int(x) for x in out["state"]] == [OPEN]
    assert d.stats()["filter_persist"] == 2
    d = Detector(cfg_of(persist_ms=50.0))
    d.process(quote(BIN, 1, 99.9, 100.0, 1, 1, T0))
    assert len(d.process(quote(BYS, 1, 100.5, 100.6, 1, 1, T0))) == 0
    assert len(d.process(quote(BYS, 1, 100.5, 100.6, 1, 1, T0 + 49 * MS))) == 0
    # a failing evaluation resets the clock
    d.process(quote(BYS, 1, 100.0, 100.1, 1, 1, T0 + 50 * MS))
    assert len(d.process(quote(BYS, 1, 100.5, 100.6, 1, 1, T0 + 60 * MS))) == 0
    out = d.process(quote(BYS, 1, 100.5, 100.6, 1, 1, T0 + 110 * MS))
    assert [int(x) for x in out["state"]] == [OPEN]


@pytest.mark.parametrize("buy,sell", [(BIN, BYS), (GATE, BYS), (BYS, GATE)])
def test_net_exactly_at_threshold_opens_and_one_ulp_above_does_not(buy, sell):
    cfg = cfg_of()
    legs = cfg.legs()
    fee_b = float(legs.taker_fee_bps[legs.leg_of(buy, 1)])
    fee_s = float(legs.taker_fee_bps[legs.leg_of(sell, 1)])
    ask, bid = 100.0, 100.37
    bn, sn = 0.0 + ask * 1.0, 0.0 + bid * 1.0          # one unit at the top, as side_fill
    mn = 0.5 * (bn + sn)
    slip = 0.0 / 1e4 * mn + 2.0 / 1e4 * mn * (1.0 / 1.0)   # base 0, depth 2 x q / top
    profit = (sn - bn) - (fee_b / 1e4 * bn + fee_s / 1e4 * sn) - slip + 0.0
    net = profit / mn * 1e4
    for min_net, opens in ((net, True), (math.nextafter(net, math.inf), False)):
        d = Detector(cfg_of(min_net_bps=min_net))
        out = d.process(cat(quote(buy, 1, ask - 0.1, ask, 1, 1, T0),
                            quote(sell, 1, bid, bid + 0.1, 1, 1, T0)))
        assert (len(out) == 1) == opens, (buy, sell, min_net)
        if opens:
            assert out[0]["net_bps"] == net
        else:
            assert d.stats()["filter_below_net"] == 1


def test_okx_spot_and_swap_are_separate_legs_with_funding():
    cfg = cfg_of(confidence_funding_bps=5.0)
    d = Detector(cfg)
    legs = d.legs
    assert legs.leg_of(OKX, 1) != legs.leg_of(OKX, 1 | PERP_ID_BIT)
    # SWAP funding 1 bp per 8 h; bybit-linear 2 bp per 4 h = 4 bp per 8 h
    d.process(cat(funding(OKX, 1 | PERP_ID_BIT, 1e-4, 28800), funding(BYL, 1 | PERP_ID_BIT, 2e-4, 0)))
    out = d.process(cat(quote(OKX, 1, 99.9, 100.0, 1, 1, T0),                 # okx spot
                        quote(OKX, 1 | PERP_ID_BIT, 100.4, 100.5, 1, 1, T0)))  # okx swap
    r = out[0]
    assert (r["buy_venue"], r["sell_venue"], r["flags"] & 3) == (OKX, OKX, 2)  # sell leg is perp
    assert r["funding_delta_bps"] == pytest.approx(1.0)                       # 1 bp - spot 0
    out = d.process(quote(BYL, 1 | PERP_ID_BIT, 99.0, 99.1, 1, 1, T0 + 1))   # buy bybit-linear
    opens = [x for x in out if x["state"] == OPEN and x["buy_venue"] == BYL
             and x["sell_venue"] == OKX and x["flags"] & 3 == 3]
    assert len(opens) == 1
    # sell okx swap (1 bp / 8 h) - buy bybit-linear (2e-4 * 28800/14400 = 4 bp / 8 h)
    assert opens[0]["funding_delta_bps"] == pytest.approx(1.0 - 4.0)


def test_collect_mode_output_never_overflows_on_mass_close():
    d = Detector(cfg_of(min_net_bps=-1000.0))
    t = T0
    recs = []
    for i in (1, 2, 3):
        for k, (vid, bit) in enumerate(LEG_IDS[:8]):
            px = 100.0 * (1 + k * 1e-4)
            recs.append(quote(vid, i | bit, px * 0.99999, px * 1.00001, 1, 1, t))
    out = d.process(cat(*recs))
    n_open = d.stats()["open_now"]
    assert n_open > 20 and len(out) >= n_open
    out = d.process(cat(status(OKX, DISC), status(BIN, DISC), status(BYS, DISC)))
    assert d.stats()["dropped_out"] == 0
    assert all(int(x["close_reason"]) == DOWN for x in out)


# ------------------------------------------------------------ config ---------------

def test_default_config_loads_8_venues_10_instruments():
    cfg = load_config()
    assert len(cfg.instruments) == 10 and all(i.endswith("/USDT") for i in cfg.instruments)
    assert list(cfg.enabled_venues()) == ["binance", "binance-usdm", "bybit-spot",
                                          "bybit-linear", "okx", "coinbase", "kraken", "gate"]
    legs = cfg.legs()
    assert legs.names == ["binance", "binance-usdm", "bybit-spot", "bybit-linear", "okx",
                          "okx-perp", "coinbase", "kraken", "gate"]
    assert [bool(x) for x in legs.is_perp] == [False, True, False, True, False, True, False,
                                               False, False]
    natives = {v: [x.native for x in cfg.symbol_map(v)][0] for v in cfg.enabled_venues()}
    assert natives == {"binance": "BTCUSDT", "binance-usdm": "BTCUSDT", "bybit-spot": "BTCUSDT",
                       "bybit-linear": "BTCUSDT", "okx": "BTC-USDT", "coinbase": "BTC-USDT",
                       "kraken": "BTC/USDT", "gate": "BTC_USDT"}
    swap = [x for x in cfg.symbol_map("okx") if x.market == "perp"][0]
    assert (swap.native, swap.instrument_id) == ("BTC-USDT-SWAP", 1 | PERP_ID_BIT)


BAD = [
    ('[venues.okx]\ntaker_fee_bps = "x"\nmaker_fee_bps = 1', "venues.okx.taker_fee_bps: expected float, got str"),
    ('[venues.okx]\ntaker_fee_bps = 1\nmaker_fee_bps = 1\ntakerfee = 2', "venues.okx.takerfee: unknown key"),
    ('[venues.okx]\nmaker_fee_bps = 1', "venues.okx.taker_fee_bps: required key missing"),
    ('[venues.okx]\ntaker_fee_bps = -1.0\nmaker_fee_bps = 1', "venues.okx.taker_fee_bps: must be >= 0"),
    ('[venues.okx]\ntaker_fee_bps = 1\nmaker_fee_bps = 1\n[venues.okx.perp]\ntaker_fee_bps = 1\n'
     'maker_fee_bps = 1\nfunding_interval_s = "8h"', "venues.okx.perp.funding_interval_s: expected int"),
    ('[venues.nyse]\ntaker_fee_bps = 1\nmaker_fee_bps = 1', "venues.nyse: unknown venue"),
    ('[venues.kraken]\ntaker_fee_bps = 1\nmaker_fee_bps = 1\nmarket = "perp"\nfunding_interval_s = 3600',
     "venues.kraken.market: kraken lists spot only"),
    ('[venues.okx]\ntaker_fee_bps = 1\nmaker_fee_bps = 1\ninstruments = ["PEPE/USDT"]',
     "venues.okx.instruments[0]: unknown instrument"),
    ('[rings.feed]\ncapacity = 1000', "rings.feed.capacity: must be a power of two"),
    ('[rings.opportunities]\ncapacity = 1024\npolicy = "drop"', "rings.opportunities.policy"),
    ('[detector]\nmax_quote_age_ms = 0', "detector.max_quote_age_ms: must be > 0"),
    ('[detector]\nconfidence_floor = 101', "detector.confidence_floor: must be <= 100"),
    ('[detector]\nmin_net_bps = "1"', "detector.min_net_bps: expected float, got str"),
    ('[detector.max_exec_qty]\n"BTC/USDT" = "x"', "detector.max_exec_qty.BTC/USDT: expected float"),
    ('[detector.max_exec_qty]\n"FOO/USDT" = 1.0', "detector.max_exec_qty.FOO/USDT: unknown instrument"),
    ('[strategy]\ndaily_loss_limit = -5.0', "strategy.daily_loss_limit: must be >= 0"),
    ('[cpu]\ndetector = [-1]', "cpu.detector[0]: must be >= 0"),
    ('[cpu]\nwizard = [1]', "cpu.wizard: unknown role"),
    ('[redis]\nurl = "http://x"', "redis.url: expected redis://"),
    ('[simulator]\nrate_hz = -1.0', "simulator.rate_hz: must be >= 0"),
]
GOOD_HEAD = ('instruments = ["BTC/USDT", "ETH/USDT"]\n'
             '[venues.binance]\ntaker_fee_bps = 10.0\nmaker_fee_bps = 10.0\n')


@pytest.mark.parametrize("body,msg", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_config_error_names_the_key(body, msg):
    with pytest.raises(ConfigError) as e:
        parse_config(GOOD_HEAD + body)
    assert str(e.value).startswith(msg), str(e.value)


def test_config_error_instruments_and_toml_syntax(tmp_path):
    with pytest.raises(ConfigError, match=r"^instruments\[1\]: expected str, got int"):
        parse_config('instruments = ["BTC/USDT", 3]')
    with pytest.raises(ConfigError, match=r"^instruments\[0\]: expected canonical"):
        parse_config('instruments = ["btcusdt"]\n[venues.binance]\ntaker_fee_bps=1\nmaker_fee_bps=1')
    with pytest.raises(ConfigError, match=r"^detector: expected table, got int"):
        parse_config("detector = 3\n" + GOOD_HEAD)
    with pytest.raises(ConfigError, match=r"^venues: no venue is enabled"):
        parse_config(GOOD_HEAD + "enabled = false\n")
    p = tmp_path / "bad.toml"
    p.write_text('instruments = ["BTC/USDT"]\n[venues.binance]\ntaker_fee_bps = \n')
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML: .*line 3"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_detector_process_exits_2_naming_the_key(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(GOOD_HEAD + '[detector]\nmin_net_bps = "high"\n')
    r = subprocess.run([sys.executable, "-m", "procs.detector", "--config", str(p),
                        "--instance", "tnone"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "detector.min_net_bps: expected float, got str" in r.stderr


# ------------------------------------------------------------ cross-process --------

def test_detector_process_between_real_rings(instance, tmp_path):
    from arbpipe.transport.rings import BroadcastRing, SpscRing
    from arbpipe.transport import segments
    cfg_path = tmp_path / "c.toml"
    text = open(os.path.join(ROOT, "config", "arbpipe.toml")).read()
    assert "max_quote_age_ms = 3000.0" in text
    cfg_path.write_text(text.replace("max_quote_age_ms = 3000.0", "max_quote_age_ms = 60000.0"))
    cfg = load_config(cfg_path)
    feeds = {v: SpscRing.create(f"feed.{v}", 1024, "MarketUpdate", policy="drop",
                                instance=instance) for v in cfg.enabled_venues()}
    proc = subprocess.Popen([sys.executable, "-m", "procs.detector", "--config", str(cfg_path),
                             "--instance", instance], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    opp = None
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready" and len(ready["inputs"]) == 8
        opp = BroadcastRing.attach("opportunities", instance, record="Opportunity")
        opp.join("test")
        got = []

        def read(n, timeout=30.0):     # a deadline for "it never came", not a latency bound
            deadline = time.monotonic() + timeout
            buf = np.zeros(64, OPPORTUNITY)
            while len(got) < n and time.monotonic() < deadline:
                k = opp.pop_batch(buf, timeout=0.2)
                got.extend(buf[:k].copy())
            return got

        now = time.time_ns()
        feeds["binance"].push_batch(quote(BIN, 1, 100.00, 100.01, 1.0, 1.0, now))
        # taken before the quote that triggers, which comes on another ring
        wait_for(lambda: read_stats(instance)["updates"] == 1, 30, "the binance quote taken",
                 every=0.01)
        now = time.time_ns()
        feeds["gate"].push_batch(quote(GATE, 1, 100.60, 100.61, 1.0, 1.0, now))
        read(1)
        assert len(got) == 1
        r = got[0]
        assert (r["state"], r["buy_venue"], r["sell_venue"], r["trigger_recv_ns"]) == \
            (OPEN, BIN, GATE, now)
        assert now <= r["detect_ns"] <= time.time_ns()   # detected after the push, before us
        # OKX SWAP (perp id) vs binance-usdm on ETH; then the venue disconnects
        now = time.time_ns()
        feeds["okx"].push_batch(quote(OKX, 2 | PERP_ID_BIT, 2000.0, 2000.1, 1, 1, now))
        feeds["binance-usdm"].push_batch(quote(USDM, 2 | PERP_ID_BIT, 2010.0, 2010.1, 1, 1, now))
        read(2)
        assert (got[1]["buy_venue"], got[1]["sell_venue"], got[1]["flags"] & 3) == (OKX, USDM, 3)
        feeds["okx"].push_batch(status(OKX, DISC, 0, time.time_ns()))
        read(3)
        assert (got[2]["state"], got[2]["close_reason"]) == (CLOSED, DOWN)
        # idle: the process sleeps on every feed ring's doorbell and wakes only for its
        # sweeps: each pass of its loop is one sweep and one idle wait, none spins (its idle
        # CPU and wake-up latency are figures of `arbpipe bench idle`, not assertions here)
        for v, ring in feeds.items():
            assert wait_for(lambda: ring.stats()["sleepers"], 30, f"a sleeper on feed.{v}",
                            every=0.01) == 1
        s0 = read_stats(instance, cfg.legs().names)

        def swept(n):
            s = read_stats(instance, cfg.legs().names)
            return s if s["sweeps"] >= s0["sweeps"] + n else None
        s1 = wait_for(lambda: swept(5), 30, "5 sweeps", every=0.05)
        passes, sweeps, waits = (s1[k] - s0[k] for k in ("kernel_calls", "sweeps", "idle_waits"))
        assert s1["updates"] == s0["updates"] and sweeps - 1 <= passes <= 2 * sweeps + 2, \
            (passes, sweeps)
        assert abs(waits - passes) <= 2, (waits, passes)
        # a record after the idle period is picked up, whatever ring it is on
        t_push = time.time_ns()
        feeds["kraken"].push_batch(quote(KR, 1, 100.9, 101.0, 1, 1, t_push))
        read(4)
        assert got[3]["trigger_recv_ns"] == t_push and got[3]["sell_venue"] == KR
        assert t_push <= got[3]["detect_ns"] <= time.time_ns()
        stats = read_stats(instance, cfg.legs().names)
        assert stats["alive"] and stats["updates"] == 6 and stats["open_now"] == 2
        assert stats["legs"]["okx"] == "DISCONNECTED" and stats["legs"]["binance"] == "UP"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr.read()
        read(6)
        assert sorted((int(x["state"]), int(x["close_reason"])) for x in got[4:]) == \
            [(CLOSED, SHUT), (CLOSED, SHUT)]
        # what the detector created (opportunities, detector.stats) is gone; the feeds stay
        left = {s.name for s in segments.list_segments(instance)}
        assert left == {f"feed.{v}" for v in cfg.enabled_venues()}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if opp is not None:
            opp.close()
        for r in feeds.values():
            r.close()
            r.unlink()
