"""Depth-aware sizing (``arbpipe.detect.walk`` and the detector's use of it) against a
brute-force reference.

The reference knows nothing of the walk: it lists every size where a level of either ladder
ends (and where a cap binds), computes the profit ``ks * SN(q) - kb * BN(q)`` at each from
the ladders directly, takes the best, and, when net at that size is under min_net, finds the
largest size that meets min_net by bisection. The kernel's size must equal it within 1e-9
relative (the kernel sums chunk by chunk, the reference level by level, and bisects: a
different order of operations is unavoidable there). Given the size, the fills (notional and
levels on each side) are compared exactly: the reference fills level by level with the same
float operations as ``side_fill``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbpipe.config import PERP_ID_BIT, config_from_dict
from arbpipe.detect.detector import Detector
from arbpipe.detect.walk import choose_size, round_to_lot, side_fill
from shm_layouts import MARKET_UPDATE, Flag, Kind
from shm_layouts.records import MARKET_UPDATE_FUNDING, MARKET_UPDATE_LEVEL, OPP_TOP_OF_BOOK

T0 = 1_700_000_000_000_000_000
BIN, BYS = 1, 3


# ------------------------------------------------------------ the reference -------

def fill_ref(px, qty, q):
    """(notional, levels) of filling q best level first (the same float operations as
    ``side_fill``, written independently)."""
    notional, rem, k = 0.0, q, 0
    for p, x in zip(px, qty):
        if not rem > q * 1e-12:
            break
        take = x if x < rem else rem
        notional += p * take
        rem -= take
        k += 1
    return notional, k


def size_ref(asks, bids, kb, ks, kmin, qmax, nmax):
    """The profit-maximising size under the caps and net >= min_net, by enumeration."""
    if not asks or not bids:
        return 0.0
    cum = set()
    for ladder in (asks, bids):
        c = 0.0
        for _, x in ladder:
            c += x
            cum.add(c)
    top = min(sum(x for _, x in asks), sum(x for _, x in bids))
    cap = min(qmax, top)
    c, n = 0.0, 0.0                       # where the buy notional reaches nmax
    for p, x in asks:
        if n + p * x >= nmax:
            cap = min(cap, c + (nmax - n) / p)
            break
        c += x
        n += p * x
    cands = sorted({q for q in cum if q <= cap} | {cap})

    def at(q):
        bn, _ = fill_ref([p for p, _ in asks], [x for _, x in asks], q)
        sn, _ = fill_ref([p for p, _ in bids], [x for _, x in bids], q)
        return ks * sn - kb * bn, (ks - kmin / 2) * sn - (kb + kmin / 2) * bn

    best_q, best_p = 0.0, 0.0
    for q in cands:
        p, _ = at(q)
        if p > best_p * (1 + 1e-12) + 1e-12:
            best_q, best_p = q, p
    if best_q == 0.0:
        # nothing earns: the first chunk alone, where a negative min_net allows it
        q1 = min(asks[0][1], bids[0][1], cap)
        return q1 if at(q1)[1] >= 0 else 0.0
    if at(best_q)[1] >= 0:
        return best_q
    lo, hi = 0.0, best_q
    for _ in range(200):
        mid = (lo + hi) / 2
        if at(mid)[1] >= 0:
            lo = mid
        else:
            hi = mid
    return lo


# ------------------------------------------------------------ ladders -------------

@st.composite
def ladders(draw):
    """(asks, bids, kb, ks, kmin, qmax, nmax): thin and thick books, crossed by a little or a
    lot, equal prices across venues, fee-heavy, capped."""
    base = draw(st.sampled_from([0.05, 1.0, 100.0, 40_000.0]))
    cross = draw(st.sampled_from([0.0, 1e-5, 5e-4, 3e-3, 2e-2]))
    tick = base * draw(st.sampled_from([1e-5, 1e-4, 1e-3]))

    def ladder(sign, start):
        n = draw(st.integers(1, 12))
        out, p = [], start
        for _ in range(n):
            out.append((p, draw(st.sampled_from([0.001, 0.01, 0.3, 1.0, 2.5, 40.0]))))
            p += sign * tick * draw(st.integers(1, 5))
        return out
    asks = ladder(+1, base)
    bids = ladder(-1, base * (1 + cross))
    fee_b = draw(st.sampled_from([0.0, 1.0, 10.0, 60.0])) / 1e4
    fee_s = draw(st.sampled_from([0.0, 2.0, 10.0, 40.0])) / 1e4
    slip = draw(st.sampled_from([0.0, 0.5, 3.0])) / 1e4
    carry_b = draw(st.sampled_from([0.0, 1e-4, -2e-4]))
    carry_s = draw(st.sampled_from([0.0, 1e-4, -2e-4]))
    kb = 1.0 + fee_b + 0.5 * slip + carry_b
    ks = 1.0 - fee_s - 0.5 * slip + carry_s
    kmin = draw(st.sampled_from([-5.0, 0.0, 0.5, 1.0, 5.0, 30.0])) / 1e4
    qmax = draw(st.sampled_from([math.inf, 0.5, 3.0]))
    nmax = draw(st.sampled_from([math.inf, 50.0, 1e4]))
    return asks, bids, kb, ks, kmin, qmax, nmax


def arrays(ladder):
    return (np.array([p for p, _ in ladder], np.float64),
            np.array([x for _, x in ladder], np.float64), len(ladder))


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(ladders())
def test_walk_equals_the_brute_force_reference(case):
    asks, bids, kb, ks, kmin, qmax, nmax = case
    ap, aq, na = arrays(asks)
    bp, bq, nb = arrays(bids)
    q, solved = choose_size(ap, aq, na, bp, bq, nb, kb, ks, kmin, qmax, nmax)
    want = size_ref(asks, bids, kb, ks, kmin, qmax, nmax)
    assert q == pytest.approx(want, rel=1e-9, abs=1e-12), (q, want, solved)
    if q > 0:
        # the fills at the kernel's size: exactly the reference's
        assert side_fill(ap, aq, na, q) == fill_ref(list(ap), list(aq), q)
        assert side_fill(bp, bq, nb, q) == fill_ref(list(bp), list(bq), q)
        # never over a cap, and net >= min_net (to rounding where solved for it)
        bn, _ = fill_ref(list(ap), list(aq), q)
        sn, _ = fill_ref(list(bp), list(bq), q)
        assert q <= qmax * (1 + 1e-12) and bn <= nmax * (1 + 1e-12)
        slack = (ks - kmin / 2) * sn - (kb + kmin / 2) * bn
        assert slack >= -1e-9 * (bn + sn), (slack, solved)


def test_the_walk_stops_at_the_first_unprofitable_level():
    # asks 100 x 1, 100.5 x 1, 102 x 5; bids 101 x 1.5, 100.9 x 1; no fees, no min net:
    # chunk 1: 1 @ (100, 101) +1.0; chunk 2: 0.5 @ (100.5, 101) +0.25; chunk 3: 0.5 @
    # (100.5, 100.9) +0.2; then 102 > 100.9: stop at q = 2.0
    ap, aq, na = arrays([(100.0, 1.0), (100.5, 1.0), (102.0, 5.0)])
    bp, bq, nb = arrays([(101.0, 1.5), (100.9, 1.0)])
    q, solved = choose_size(ap, aq, na, bp, bq, nb, 1.0, 1.0, 0.0, math.inf, math.inf)
    assert (q, solved) == (2.0, False)
    assert side_fill(ap, aq, na, q) == (100.0 + 100.5, 2)
    assert side_fill(bp, bq, nb, q) == (101.0 * 1.5 + 100.9 * 0.5, 2)


def test_lot_rounding():
    assert round_to_lot(0.3, 0.1) == 0.3            # 0.3 / 0.1 = 2.9999999999999996
    assert round_to_lot(0.35, 0.1) == pytest.approx(0.3)
    assert round_to_lot(0.099, 0.1) == 0.0
    assert round_to_lot(1.234567, 0.0) == 1.234567


# ------------------------------------------------------------ through the detector -

def base_cfg(det=None, venues=None):
    v = {"binance": {"taker_fee_bps": 10.0, "maker_fee_bps": 10.0, "depth": 5},
         "bybit-spot": {"taker_fee_bps": 10.0, "maker_fee_bps": 10.0, "depth": 5}}
    for name, extra in (venues or {}).items():
        v[name] = v.get(name, {}) | extra
    d = {"min_net_bps": 1.0, "max_quote_age_ms": 1000.0, "confidence_floor": 0.0,
         "max_notional": 1e12, "slippage_base_bps": 0.0, "slippage_depth_bps": 2.0,
         "update_threshold_bps": 0.0, "persist_updates": 1, "persist_ms": 0.0}
    return config_from_dict({"instruments": ["BTC/USDT"], "venues": v,
                             "detector": d | (det or {})})


def levels(vid, iid, bids, asks, t=T0, snapshot=True):
    """One book message as LEVEL records (bids then asks; last flagged BOOK_END)."""
    rows = [(p, x, 0) for p, x in bids] + [(p, x, int(Flag.BOOK_ASK)) for p, x in asks]
    r = np.zeros(len(rows), MARKET_UPDATE_LEVEL)
    for k, (p, x, fl) in enumerate(rows):
        if k == 0 and snapshot:
            fl |= int(Flag.SNAPSHOT)
        if k == len(rows) - 1:
            fl |= int(Flag.BOOK_END)
        r[k] = (iid, vid, int(Kind.LEVEL), fl, p, x, 1, 5, 0, t, k + 1)
    return r.view(MARKET_UPDATE)


def quote(vid, iid, bid, ask, bq, aq, t=T0):
    r = np.zeros(1, MARKET_UPDATE)
    r[0] = (iid, vid, int(Kind.QUOTE), 0, bid, ask, bq, aq, 0, t, 1)
    return r


def book(vid, bids, asks, t=T0):
    """A snapshot and the QUOTE of its top, as a feed with books publishes them."""
    return np.concatenate([levels(vid, 1, bids, asks, t),
                           quote(vid, 1, bids[0][0], asks[0][0], bids[0][1], asks[0][1], t)])


BUY_BOOK = dict(bids=[(99.9, 1.0)], asks=[(100.0, 1.0), (100.2, 2.0), (100.6, 4.0)])
SELL_BOOK = dict(bids=[(101.0, 0.5), (100.8, 1.5), (100.3, 3.0)], asks=[(101.1, 1.0)])


def test_readme_example_hand_computed():
    """The README's worked example: buy on binance, sell on bybit-spot, 10 bps taker each.

    kb = 1.001, ks = 0.999. Chunks (size @ ask, bid: ks * bid - kb * ask per unit):
    0.5 @ 100.0, 101.0: +0.799; 0.5 @ 100.0, 100.8: +0.5992; 1.0 @ 100.2, 100.8: +0.399;
    then 100.2, 100.3: 100.1997 - 100.3002 < 0: stop at q = 2.0.
    BN = 100.0 * 1 + 100.2 * 1 = 200.2; SN = 101.0 * 0.5 + 100.8 * 1.5 = 201.7;
    fees = 0.001 * 200.2 + 0.001 * 201.7 = 0.4019; profit = 1.5 - 0.4019 = 1.0981.
    """
    d = Detector(base_cfg())
    out = d.process(np.concatenate([book(BIN, **BUY_BOOK), book(BYS, **SELL_BOOK)]))
    assert len(out) == 1
    r = out[0]
    assert (r["buy_venue"], r["sell_venue"], r["flags"]) == (BIN, BYS, 0)
    assert r["exec_qty"] == 2.0
    assert (r["buy_levels"], r["sell_levels"]) == (2, 2)
    assert r["vwap_buy"] == pytest.approx(100.1)
    assert r["vwap_sell"] == pytest.approx(100.85)
    assert r["profit"] == pytest.approx(1.0981)
    assert r["profit_usd"] == r["profit"]                  # USDT counts as one USD
    mn = (200.2 + 201.7) / 2
    assert r["net_bps"] == pytest.approx(1.0981 / mn * 1e4)
    assert r["gross_bps"] == pytest.approx(1.5 / mn * 1e4)
    assert r["top_gross_bps"] == pytest.approx(1.0 / 100.5 * 1e4)
    assert r["buy_ask"] == 100.0 and r["sell_bid"] == 101.0
    s = d.stats()
    assert s["walks"] == 1 and s["walk_levels"] == 4


def _profit(det=None, venues=None, funding=None):
    """The OPEN record of the example books with one setting changed (size pinned by
    max_exec_qty so only the costs move)."""
    d = Detector(base_cfg({"max_exec_qty": {"BTC/USDT": 1.5}, "min_net_bps": -100.0}
                          | (det or {}), venues))
    recs = [book(BIN, **BUY_BOOK), book(BYS, **SELL_BOOK)]
    out = d.process(np.concatenate(recs))
    assert len(out) == 1 and out[0]["exec_qty"] == 1.5
    return out[0]


def test_each_cost_appears_exactly_once():
    base = _profit()
    bn = base["vwap_buy"] * 1.5
    sn = base["vwap_sell"] * 1.5
    mn = (bn + sn) / 2
    # one more bp of taker fee on the buy leg costs 1 bp of the buy notional, once
    r = _profit(venues={"binance": {"taker_fee_bps": 11.0}})
    assert base["profit"] - r["profit"] == pytest.approx(1e-4 * bn, rel=1e-9)
    r = _profit(venues={"bybit-spot": {"taker_fee_bps": 11.0}})
    assert base["profit"] - r["profit"] == pytest.approx(1e-4 * sn, rel=1e-9)
    # one bp of slippage allowance costs 1 bp of the mid notional, once
    r = _profit({"slippage_base_bps": 1.0})
    assert base["profit"] - r["profit"] == pytest.approx(1e-4 * mn, rel=1e-9)
    assert base["net_bps"] - r["net_bps"] == pytest.approx(1.0, rel=1e-9)
    # the slippage-depth model does not apply where both legs have books
    r = _profit({"slippage_depth_bps": 50.0})
    assert r["profit"] == base["profit"]


def test_funding_carry_appears_once_and_only_with_a_horizon():
    cfg = {"instruments": ["BTC/USDT"],
           "venues": {"binance": {"taker_fee_bps": 10.0, "maker_fee_bps": 10.0, "depth": 5},
                      "binance-usdm": {"market": "perp", "taker_fee_bps": 5.0,
                                       "maker_fee_bps": 2.0, "funding_interval_s": 28800,
                                       "depth": 5}},
           "detector": {"min_net_bps": -100.0, "confidence_floor": 0.0,
                        "max_exec_qty": {"BTC/USDT": 1.5}, "update_threshold_bps": 0.0}}

    def run(horizon, rate):
        c = dict(cfg, detector=cfg["detector"] | {"funding_horizon_s": horizon})
        d = Detector(config_from_dict(c))
        perp = 1 | PERP_ID_BIT
        fr = np.zeros(1, MARKET_UPDATE_FUNDING)
        fr[0] = (perp, 2, int(Kind.FUNDING), 0, rate, T0 + 10**12, 28800, 0.0, 0, T0, 1)
        sell = np.concatenate([levels(2, perp, SELL_BOOK["bids"], SELL_BOOK["asks"]),
                               quote(2, perp, 101.0, 101.1, 0.5, 1.0)])
        out = d.process(np.concatenate([fr.view(MARKET_UPDATE), book(BIN, **BUY_BOOK), sell]))
        assert len(out) == 1
        return out[0]
    flat = run(0.0, 0.0)
    assert run(0.0, 1e-4)["profit"] == flat["profit"]         # horizon 0: shown only
    r = run(28800.0, 1e-4)                                    # one interval, short perp
    sn = r["vwap_sell"] * 1.5
    assert r["profit"] - flat["profit"] == pytest.approx(1e-4 * sn, rel=1e-9)
    assert r["carry_bps"] > 0 and flat["carry_bps"] == 0.0


def test_a_leg_without_a_book_keeps_the_top_of_book_rule_and_says_so():
    d = Detector(base_cfg(venues={"bybit-spot": {"depth": 0}}))
    out = d.process(np.concatenate([book(BIN, **BUY_BOOK),
                                    quote(BYS, 1, 101.0, 101.1, 0.5, 1.0)]))
    assert len(out) == 1
    r = out[0]
    assert r["flags"] & OPP_TOP_OF_BOOK
    assert r["exec_qty"] == 0.5 and (r["buy_levels"], r["sell_levels"]) == (1, 1)
    assert d.stats()["walks_top_of_book"] == 1


def test_lot_size_and_min_notional():
    d = Detector(base_cfg(venues={"binance": {"lot_size": {"BTC/USDT": 0.3}}}))
    out = d.process(np.concatenate([book(BIN, **BUY_BOOK), book(BYS, **SELL_BOOK)]))
    assert out[0]["exec_qty"] == pytest.approx(1.8)          # 2.0 down to 6 lots of 0.3
    d = Detector(base_cfg(venues={"bybit-spot": {"min_notional": {"BTC/USDT": 1e6}}}))
    out = d.process(np.concatenate([book(BIN, **BUY_BOOK), book(BYS, **SELL_BOOK)]))
    assert len(out) == 0 and d.stats()["filter_size"] == 1


def test_a_deeper_change_re_evaluates_without_a_quote():
    d = Detector(base_cfg({"update_threshold_bps": 0.0}))
    d.process(np.concatenate([book(BIN, **BUY_BOOK), book(BYS, **SELL_BOOK)]))
    # the second bid level grows: no change of the top, so no QUOTE follows
    diff = levels(BYS, 1, [(100.8, 3.0)], [], t=T0 + 1000, snapshot=False)
    out = d.process(diff)
    assert len(out) == 1 and out[0]["state"] == 2          # UPDATE
    assert out[0]["exec_qty"] > 2.0
