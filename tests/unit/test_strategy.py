"""The paper-trading strategy: every risk check at, below and above its limit, the breaker,
the kill switch (through the real CLI and control segment), simulated fills and unwinds,
and restart from the journal reproducing positions and PnL exactly."""
import json
import os
import re
import subprocess
import sys
import time

import msgspec
import numpy as np
import pytest

from arbpipe.config import load_config
from arbpipe.trading.control import Control
from arbpipe.trading.fills import Order
from arbpipe.trading.journal import Journal, read_journal
from arbpipe.trading.strategy import Strategy
from shm_layouts import OPPORTUNITY
from shm_layouts.journal import BreakerReason, JournalFlag, JournalKind, RejectReason, Side

T0 = 1_800_000_000_000_000_000          # a fixed "now" (ns), 2027-01-15 08:00 UTC
MS = 1_000_000
BTC = 1                                 # canonical id of BTC/USDT in the default config


def make(tmp_path=None, control=None, **limits):
    cfg = load_config()
    cfg = msgspec.structs.replace(cfg, strategy=msgspec.structs.replace(cfg.strategy, **limits))
    j = Journal(str(tmp_path / "journal.jsonl")) if tmp_path else Journal()
    return Strategy(cfg, journal=j, control=control)


def leg(s, name):
    return s.legs.names.index(name)


def quote(s, name, bid, ask, qty=1.0, t=T0, i=BTC):
    s.book.set_quote(i, leg(s, name), bid, ask, qty, qty, t)


def opp(s, buy, sell, i=BTC, conf=80.0, exec_qty=0.5, state=1, opp_id=1):
    o = np.zeros(1, OPPORTUNITY)[0]
    bl, sl = leg(s, buy), leg(s, sell)
    o["instrument_id"] = i
    o["buy_venue"], o["sell_venue"] = s.legs.venue[bl], s.legs.venue[sl]
    o["flags"] = (1 if s.legs.is_perp[bl] else 0) | (2 if s.legs.is_perp[sl] else 0)
    o["state"], o["confidence"], o["exec_qty"], o["opp_id"] = state, conf, exec_qty, opp_id
    o["trigger_recv_ns"], o["detect_ns"] = T0 - 20_000, T0 - 10_000
    return o


def wide(s, t=T0, i=BTC):
    """binance ask 100000, bybit-spot bid 100400: ~40 bps gross, ~18 bps net of fees."""
    quote(s, "binance", 99_990.0, 100_000.0, t=t, i=i)
    quote(s, "bybit-spot", 100_400.0, 100_410.0, t=t, i=i)


def kinds(s, kind):
    return [e for e in s.journal.entries if e["kind"] == kind]


def order(s, name, side, price, qty, i=BTC, oid=1):
    return Order(oid, 0, 0, i, leg(s, name), side, price, qty, T0)


# ------------------------------------------------------------------ happy path ------

def test_a_good_opportunity_becomes_two_filled_legs_with_fees_once_per_leg():
    s = make(latency_ms=2.0, slippage_bps=1.0)
    wide(s)
    assert s.on_opportunity(opp(s, "binance", "bybit-spot"), T0) is None
    assert [e["side"] for e in kinds(s, JournalKind.ORDER)] == [Side.BUY, Side.SELL]
    assert s.poll(T0 + MS) == 0                      # not due before the latency
    assert s.poll(T0 + 2 * MS) == 2
    fills = kinds(s, JournalKind.FILL)
    assert len(fills) == 2
    buy, sell = fills
    assert buy["price"] == pytest.approx(100_000.0 * 1.0001)
    assert sell["price"] == pytest.approx(100_400.0 * 0.9999)
    for f, name in ((buy, "binance"), (sell, "bybit-spot")):
        bps = s.legs.taker_fee_bps[leg(s, name)]
        assert f["fee"] == f["price"] * f["qty"] * bps / 1e4
    assert s.fees == buy["fee"] + sell["fee"]        # each leg's fee exactly once
    st = s.state(T0 + 2 * MS)
    assert st["pnl"]["fees"] == s.fees
    pos = {p["venue"]: p for p in st["positions"]}
    assert pos["binance"]["qty"] == buy["qty"] and pos["bybit-spot"]["qty"] == -sell["qty"]
    bal = st["balances"]
    assert bal["binance"]["USDT"] == 100_000.0 - buy["notional"] - buy["fee"]
    assert bal["bybit-spot"]["BTC"] == 1.0 - sell["qty"]
    # sized by the 10k per-order notional cap (leg prices ~100k)
    assert max(buy["notional"], sell["notional"]) <= 10_000.0 * 1.0002


def test_closed_records_are_counted_not_traded():
    s = make()
    wide(s)
    assert s.on_opportunity(opp(s, "binance", "bybit-spot", state=3), T0) is None
    assert not s.journal.entries and s.counters["opportunities_read"] == 1


def test_observe_mode_journals_what_it_would_trade_and_simulates_nothing():
    s = make(mode="observe")
    wide(s)
    assert s.on_opportunity(opp(s, "binance", "bybit-spot"), T0) is None
    orders = kinds(s, JournalKind.ORDER)
    assert len(orders) == 2 and all(e["flags"] & JournalFlag.OBSERVE for e in orders)
    s.poll(T0 + 100 * MS)
    assert not kinds(s, JournalKind.FILL) and not s.positions and not s.orders


# ------------------------------------------------------------------ pair checks -----

def reject_reason(s, o, t=T0):
    r = s.on_opportunity(o, t)
    return None if r is None else RejectReason(r.reason)


def test_stale_quote_boundary():
    s = make(max_quote_age_ms=100.0, cooldown_ms=0.0)
    wide(s, t=T0 - 100 * MS)                          # exactly max age: passes
    assert reject_reason(s, opp(s, "binance", "bybit-spot")) is None
    s2 = make(max_quote_age_ms=100.0)
    wide(s2, t=T0 - 100 * MS - 1)                     # 1 ns older: stale
    assert reject_reason(s2, opp(s2, "binance", "bybit-spot")) == RejectReason.STALE_QUOTE


def test_no_live_quote_rejects():
    s = make()
    quote(s, "binance", 99_990.0, 100_000.0)
    assert reject_reason(s, opp(s, "binance", "bybit-spot")) == RejectReason.NO_QUOTE


def test_in_flight_then_cooldown():
    s = make(cooldown_ms=500.0, latency_ms=2.0)
    wide(s)
    assert reject_reason(s, opp(s, "binance", "bybit-spot")) is None
    assert reject_reason(s, opp(s, "binance", "bybit-spot"), T0 + MS) == RejectReason.IN_FLIGHT
    s.poll(T0 + 2 * MS)
    wide(s, t=T0 + 3 * MS)
    assert reject_reason(s, opp(s, "binance", "bybit-spot"), T0 + 3 * MS) == \
        RejectReason.COOLDOWN
    wide(s, t=T0 + 500 * MS)
    assert reject_reason(s, opp(s, "binance", "bybit-spot"), T0 + 500 * MS) is None


def test_max_open_orders_counts_pairs_in_flight():
    s = make(max_open_orders=1, cooldown_ms=0.0)
    wide(s)
    wide(s, i=2)
    quote(s, "binance", 3_000.0, 3_000.5, qty=5.0, i=2)
    quote(s, "bybit-spot", 3_015.0, 3_015.5, qty=5.0, i=2)
    assert reject_reason(s, opp(s, "binance", "bybit-spot")) is None
    assert reject_reason(s, opp(s, "binance", "bybit-spot", i=2)) == RejectReason.MAX_OPEN_ORDERS


def test_confidence_and_threshold_boundaries():
    s = make(min_confidence=40.0)
    wide(s)
    assert reject_reason(s, opp(s, "binance", "bybit-spot", conf=39.99)) == \
        RejectReason.LOW_CONFIDENCE
    assert reject_reason(s, opp(s, "binance", "bybit-spot", conf=40.0)) is None
    # net = gross - 10 - 10 (taker fees) - 2 x 1 (slippage): set min_net_bps to exactly it
    s2 = make(slippage_bps=1.0)
    wide(s2)
    gross = (100_400.0 - 100_000.0) / 100_200.0 * 1e4
    net = gross - 10.0 - 10.0 - 2.0
    s2.limits.min_net_bps = net
    assert reject_reason(s2, opp(s2, "binance", "bybit-spot")) is None
    s3 = make(slippage_bps=1.0)
    wide(s3)
    s3.limits.min_net_bps = net + 1e-9
    assert reject_reason(s3, opp(s3, "binance", "bybit-spot")) == RejectReason.BELOW_THRESHOLD
    # the detector's funding carry (Opportunity.carry_bps) counts in the re-priced net
    o = opp(s3, "binance", "bybit-spot")
    o["carry_bps"] = 0.5
    assert reject_reason(s3, o) is None
    s4 = make(slippage_bps=1.0)
    wide(s4)
    s4.limits.min_net_bps = net
    o = opp(s4, "binance", "bybit-spot")
    o["carry_bps"] = -0.5
    assert reject_reason(s4, o) == RejectReason.BELOW_THRESHOLD


# ------------------------------------------------------------------ order checks ----

def test_max_order_notional_boundary():
    s = make(max_order_notional=10_000.0, fat_finger_bps=0.0)
    wide(s)
    assert s.check_order(order(s, "binance", Side.BUY, 100_000.0, 0.1), T0) is None
    r = s.check_order(order(s, "binance", Side.BUY, 100_000.0, 0.1000001), T0)
    assert r.reason == RejectReason.MAX_ORDER_NOTIONAL and r.limit == 10_000.0


def test_fat_finger_boundary():
    s = make(fat_finger_bps=50.0)
    quote(s, "binance", 99_000.0, 101_000.0, qty=10.0)   # mid 100000
    assert s.check_order(order(s, "binance", Side.BUY, 100_500.0, 0.01), T0) is None  # 50 bps
    r = s.check_order(order(s, "binance", Side.BUY, 100_501.0, 0.01), T0)
    assert r.reason == RejectReason.FAT_FINGER and r.value == pytest.approx(50.1)


def test_position_limit_counts_in_flight_and_accumulates():
    s = make(max_position_notional=30_000.0, max_order_notional=10_000.0, cooldown_ms=0.0,
             max_venue_notional=0.0, max_gross_notional=0.0, fat_finger_bps=0.0,
             latency_ms=1.0)
    accepted = 0
    for k in range(5):                                    # each pair buys ~0.0996 BTC
        t = T0 + k * 10 * MS
        wide(s, t=t)
        r = s.on_opportunity(opp(s, "binance", "bybit-spot", opp_id=k + 1), t)
        if r is None:
            accepted += 1
            s.poll(t + MS)
        else:
            assert r.reason == RejectReason.MAX_POSITION_INSTRUMENT
            assert r.value > 30_000.0 >= r.value - 10_000.0
            break
    assert accepted == 3                                  # 3 x ~10k fit, the 4th would not
    # in flight counts: a fresh strategy with one unfilled 0.25 BTC buy in flight
    # (binary-exact quantities: 0.25 + 0.125 = 0.375 x 80000 = 30000 exactly)
    s2 = make(max_position_notional=30_000.0, max_order_notional=0.0, fat_finger_bps=0.0)
    s2.orders[99] = order(s2, "binance", Side.BUY, 80_000.0, 0.25, oid=99)
    assert s2.check_order(order(s2, "binance", Side.BUY, 80_000.0, 0.125), T0) is None  # 30k
    r = s2.check_order(order(s2, "binance", Side.BUY, 80_000.0, 0.125 + 1e-9), T0)
    assert r.reason == RejectReason.MAX_POSITION_INSTRUMENT
    # the opposite side's worst case is the other direction: a sell of 0.125 is fine
    assert s2.check_order(order(s2, "binance", Side.SELL, 80_000.0, 0.125), T0) is None


def test_venue_and_gross_limits():
    s = make(max_position_notional=0.0, max_venue_notional=25_000.0, max_gross_notional=0.0,
             max_order_notional=0.0, fat_finger_bps=0.0)
    quote(s, "binance", 99_990.0, 100_000.0, qty=10.0)
    quote(s, "binance", 2_999.0, 3_000.0, qty=10.0, i=2)
    s.apply_fill(2, leg(s, "binance"), Side.BUY, 5.0, 3_000.0, 0.0)  # 15k ETH on binance
    assert s.check_order(order(s, "binance", Side.BUY, 100_000.0, 0.1), T0) is None  # 25k
    r = s.check_order(order(s, "binance", Side.BUY, 100_000.0, 0.1001), T0)
    assert r.reason == RejectReason.MAX_POSITION_VENUE
    s.limits.max_venue_notional = 0.0
    s.limits.max_gross_notional = 20_000.0
    r = s.check_order(order(s, "binance", Side.BUY, 100_000.0, 0.0501), T0)
    assert r.reason == RejectReason.MAX_GROSS


def test_balances_spot_buy_spot_sell_and_perp_margin():
    s = make(starting_balance=1_000.0, max_order_notional=0.0, fat_finger_bps=0.0,
             slippage_bps=0.0, base_balances={"BTC": 0.01})
    quote(s, "binance", 99_990.0, 100_000.0, qty=10.0)
    # spot buy: notional + fee (10 bps) must fit 1000 USDT
    ok_qty = 1_000.0 / (100_000.0 * 1.001)
    assert s.check_order(order(s, "binance", Side.BUY, 100_000.0, ok_qty * 0.999999), T0) is None
    r = s.check_order(order(s, "binance", Side.BUY, 100_000.0, ok_qty * 1.0001), T0)
    assert r.reason == RejectReason.BALANCE
    # spot sell: base units held
    quote(s, "bybit-spot", 99_990.0, 100_000.0, qty=10.0)
    assert s.check_order(order(s, "bybit-spot", Side.SELL, 100_000.0, 0.01), T0) is None
    r = s.check_order(order(s, "bybit-spot", Side.SELL, 100_000.0, 0.0100001), T0)
    assert r.reason == RejectReason.BALANCE and r.limit == 0.01
    # perp: notional / leverage (5x) + fee of quote
    quote(s, "binance-usdm", 99_990.0, 100_000.0, qty=10.0)
    assert s.check_order(order(s, "binance-usdm", Side.SELL, 100_000.0, 0.049), T0) is None
    r = s.check_order(order(s, "binance-usdm", Side.SELL, 100_000.0, 0.051), T0)
    assert r.reason == RejectReason.BALANCE
    # sizing: the balance cut the pair below the minimum: BALANCE, nothing sent
    s2 = make(starting_balance=5.0)
    wide(s2)
    assert reject_reason(s2, opp(s2, "binance", "bybit-spot")) == RejectReason.BALANCE


def test_rate_limits_per_second_and_per_minute():
    s = make(max_orders_per_s=4, max_orders_per_min=6, cooldown_ms=0.0, latency_ms=0.0)
    got = []
    for k in range(4):
        t = T0 + k * 100 * MS                              # 4 pairs within 0.4 s
        wide(s, t=t)
        got.append(reject_reason(s, opp(s, "binance", "bybit-spot", opp_id=k), t))
        s.poll(t)
    # 2 pairs = 4 orders fill the second; the third pair would be orders 5 and 6
    assert got == [None, None, RejectReason.RATE_LIMIT_SECOND, RejectReason.RATE_LIMIT_SECOND]
    t = T0 + 1_100 * MS                                    # a new second: orders 5, 6 of the minute
    wide(s, t=t)
    assert reject_reason(s, opp(s, "binance", "bybit-spot", opp_id=9), t) is None
    s.poll(t)
    t = T0 + 2_500 * MS
    wide(s, t=t)
    assert reject_reason(s, opp(s, "binance", "bybit-spot", opp_id=10), t) == \
        RejectReason.RATE_LIMIT_MINUTE
    t = T0 + 61_000 * MS                                   # the window rolled
    wide(s, t=t)
    assert reject_reason(s, opp(s, "binance", "bybit-spot", opp_id=11), t) is None


# ------------------------------------------------------------------ breaker ----------

def test_rapid_losses_trip_the_breaker_and_reset_resumes(instance):
    ctl = Control.create(instance)
    try:
        s = make(control=ctl, daily_loss_limit=50.0, max_drawdown=0.0, cooldown_ms=0.0,
                 latency_ms=1.0)
        t = T0
        for k in range(10):
            wide(s, t=t)
            r = s.on_opportunity(opp(s, "binance", "bybit-spot", opp_id=k), t)
            if r is not None:
                break
            s.poll(t + MS)
            # the market turns against both legs at once: long binance falls, short bybit rises
            quote(s, "binance", 99_000.0, 99_010.0, t=t + MS)
            quote(s, "bybit-spot", 101_400.0, 101_410.0, t=t + MS)
            s.check_breaker(t + MS)
            t += 10 * MS
        assert s.breaker["tripped"] and s.breaker["reason"] == "daily_loss"
        assert s.breaker["value"] <= -50.0
        br = kinds(s, JournalKind.BREAKER)
        assert len(br) == 1 and br[0]["limit"] == -50.0
        wide(s, t=t)
        assert reject_reason(s, opp(s, "binance", "bybit-spot", opp_id=99), t) == \
            RejectReason.BREAKER
        # raise the limit (as a risk change would), reset: trading resumes
        s.limits.daily_loss_limit = 1e9
        ctl.request_reset()
        s.check_breaker(t)
        assert not s.breaker["tripped"] and kinds(s, JournalKind.RESET)
        assert reject_reason(s, opp(s, "binance", "bybit-spot", opp_id=100), t) is None
    finally:
        ctl.close(unlink=True)


def test_drawdown_trips_and_reset_rebases_the_peak():
    s = make(max_drawdown=20.0, daily_loss_limit=0.0)
    quote(s, "binance", 100_000.0, 100_010.0)
    s.apply_fill(BTC, leg(s, "binance"), Side.BUY, 0.1, 100_005.0, 0.0)
    quote(s, "binance", 101_000.0, 101_010.0)              # +100 peak
    s.check_breaker(T0)
    assert not s.breaker["tripped"]
    quote(s, "binance", 100_800.0, 100_810.0)              # peak - 20: trips (>=)
    s.check_breaker(T0 + MS)
    assert s.breaker["reason"] == "drawdown" and s.breaker["value"] == pytest.approx(20.0)
    s.reset_breaker(T0 + 2 * MS)
    s.check_breaker(T0 + 3 * MS)
    assert not s.breaker["tripped"]


def test_kill_switch_from_the_cli_blocks_the_next_order(instance, tmp_path):
    ctl = Control.create(instance)
    try:
        s = make(control=ctl, cooldown_ms=0.0)
        env_cli = [sys.executable, "-m", "procs.cli"]
        out = subprocess.run(env_cli + ["kill-switch", "on", "--instance", instance],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "ON (was OFF)" in out.stdout
        flipped = time.time_ns()
        wide(s)
        assert reject_reason(s, opp(s, "binance", "bybit-spot")) == RejectReason.KILL_SWITCH
        seen = time.time_ns()
        print(f"kill switch: CLI exit -> next order rejected in {(seen - flipped) / 1e6:.3f} ms "
              f"(flip written at {ctl.kill_changed_ns})")
        assert s.breaker["reason"] == "kill_switch"
        ks = kinds(s, JournalKind.KILL_SWITCH)
        assert ks and ks[-1]["flags"] & JournalFlag.KILL_ON
        out = subprocess.run(env_cli + ["kill-switch", "off", "--instance", instance],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "OFF (was ON)" in out.stdout
        s.check_breaker(T0 + MS)
        assert not s.breaker["tripped"]
        wide(s, t=T0 + MS)
        assert reject_reason(s, opp(s, "binance", "bybit-spot"), T0 + MS) is None
        bad = subprocess.run(env_cli + ["kill-switch", "maybe", "--instance", instance],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2
    finally:
        ctl.close(unlink=True)
    gone = subprocess.run([sys.executable, "-m", "procs.cli", "kill-switch", "on",
                           "--instance", instance], capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and "running" in gone.stderr


# ------------------------------------------------------------------ fills ------------

def test_partial_fill_and_one_leg_failure_are_unwound():
    s = make(latency_ms=1.0, slippage_bps=0.0, partial_fills=True)
    wide(s)
    assert s.on_opportunity(opp(s, "binance", "bybit-spot"), T0) is None
    want = kinds(s, JournalKind.ORDER)[0]["qty"]
    # before the fills: binance still quotes only half the size; bybit's bid fell away
    quote(s, "binance", 99_990.0, 100_000.0, qty=want / 2, t=T0 + MS)
    quote(s, "bybit-spot", 100_300.0, 100_310.0, t=T0 + MS)
    s.poll(T0 + MS)
    fills, missed = kinds(s, JournalKind.FILL), kinds(s, JournalKind.MISSED)
    assert len(fills) == 1 and fills[0]["flags"] & JournalFlag.PARTIAL
    assert fills[0]["qty"] == want / 2 and len(missed) == 1
    unw = kinds(s, JournalKind.UNWIND)
    assert len(unw) == 1 and unw[0]["side"] == Side.SELL and unw[0]["qty"] == want / 2
    s.poll(T0 + 2 * MS)
    last = kinds(s, JournalKind.FILL)[-1]
    assert last["flags"] & JournalFlag.UNWIND_LEG and last["price"] == 99_990.0
    assert s.positions[(BTC, leg(s, "binance"))].qty == pytest.approx(0.0, abs=1e-15)
    assert s.counters["unwinds"] == 1
    assert s.realized == pytest.approx(want / 2 * (99_990.0 - 100_000.0))


# ------------------------------------------------------------------ restart ---------

def run_session(s, n, seed=3):
    """n opportunities with moving prices, some partial fills and one-leg misses."""
    rng = np.random.default_rng(seed)
    t = T0
    for k in range(n):
        i = 1 + k % 2
        base = 100_000.0 if i == 1 else 3_000.0
        px = base * (1 + rng.normal(0, 0.002))
        sp = px * rng.uniform(0.002, 0.004)
        buy, sell = ("binance", "bybit-spot") if k % 3 else ("bybit-spot", "binance")
        qty = rng.uniform(0.05, 2.0) * (1 if i == 1 else 20)
        quote(s, buy, px - 1e-3 * px, px, qty=qty, t=t, i=i)
        quote(s, sell, px + sp, px + sp + 1e-3 * px, qty=qty, t=t, i=i)
        s.on_opportunity(opp(s, buy, sell, i=i, opp_id=k + 1), t)
        if k % 5 == 4:  # the sell venue's bid drops before the fill: one leg misses
            quote(s, sell, px - 0.01 * px, px, qty=qty, t=t + MS, i=i)
        s.poll(t + 2 * MS)
        s.poll(t + 4 * MS)
        t += 600 * MS
    return t


def snapshot(s):
    return ({k: (p.qty, p.avg, p.realized, p.fees) for k, p in s.positions.items()},
            {v: dict(b) for v, b in s.balances.items()}, s.realized, s.fees)


def test_restart_from_the_journal_reproduces_positions_and_pnl_exactly(tmp_path):
    s = make(tmp_path, cooldown_ms=0.0, latency_ms=2.0)
    t = run_session(s, 60)
    assert len(kinds(s, JournalKind.FILL)) > 40 and s.counters["unwinds"] > 0
    before = snapshot(s)
    s.journal.close()
    s2 = make(tmp_path)
    s2.journal = Journal(str(tmp_path / "journal.jsonl"))
    info = s2.restore(read_journal(str(tmp_path / "journal.jsonl")), t)
    assert snapshot(s2) == before                        # exact, not approximately
    assert info["lost_in_flight"] == 0 and s2.journal.seq == s.journal.seq
    # fees: the sum of every FILL's fee, once
    fees = sum(e["fee"] for e in read_journal(str(tmp_path / "journal.jsonl"))
               if e["kind"] == JournalKind.FILL)
    assert s2.fees == pytest.approx(fees, rel=1e-12)


def test_restart_with_orders_in_flight_marks_them_missed_and_unwinds(tmp_path):
    s = make(tmp_path, latency_ms=5.0, slippage_bps=0.0)
    wide(s)
    s.on_opportunity(opp(s, "binance", "bybit-spot"), T0)
    buy = s.orders[min(s.orders)]
    s.exchange.execute(buy, T0 + 5 * MS)  # the buy filled, then the process died
    s.journal.close()
    s2 = make(tmp_path)
    wide(s2, t=T0 + 10 * MS)
    s2.journal = Journal(str(tmp_path / "journal.jsonl"))
    info = s2.restore(read_journal(str(tmp_path / "journal.jsonl")), T0 + 10 * MS)
    assert info["lost_in_flight"] == 1
    assert s2.positions[(BTC, leg(s2, "binance"))].qty == buy.filled
    s2.poll(T0 + 10 * MS)
    assert s2.positions[(BTC, leg(s2, "binance"))].qty == 0.0
    kinds2 = [e["kind"] for e in read_journal(str(tmp_path / "journal.jsonl"))]
    assert kinds2[-3:] == [JournalKind.MISSED, JournalKind.UNWIND, JournalKind.FILL]


def test_breaker_state_survives_a_restart(tmp_path):
    s = make(tmp_path, max_drawdown=1.0, daily_loss_limit=0.0)
    quote(s, "binance", 100_000.0, 100_010.0)
    s.apply_fill(BTC, leg(s, "binance"), Side.BUY, 0.1, 100_005.0, 0.0)
    s.journal.write(JournalKind.FILL, side=1, venue_id=1, instrument_id=BTC, order_id=3,
                    price=100_005.0, qty=0.1, fee=0.0)
    quote(s, "binance", 99_000.0, 99_010.0)
    s.check_breaker(T0)
    assert s.breaker["tripped"]
    s.journal.close()
    s2 = make(tmp_path)
    s2.restore(read_journal(str(tmp_path / "journal.jsonl")), T0 + MS)
    assert s2.breaker["tripped"] and s2.breaker["reason"] == "drawdown"
    wide(s2, t=T0 + MS)
    assert reject_reason(s2, opp(s2, "binance", "bybit-spot"), T0 + MS) == RejectReason.BREAKER


def test_journal_lines_name_their_fields(tmp_path):
    from arbpipe.trading.journal import describe_entry
    cfg = load_config()
    j = Journal(str(tmp_path / "j.jsonl"), describe=describe_entry(cfg))
    j.write(JournalKind.REJECT, reason=int(RejectReason.FAT_FINGER), venue_id=1,
            instrument_id=BTC, limit=1.0, value=2.0)
    j.close()
    line = json.loads(open(tmp_path / "j.jsonl").read())
    assert line["kind_name"] == "reject" and line["reason_name"] == "fat_finger"
    assert line["venue"] == "binance" and line["instrument"] == "BTC/USDT"


def test_a_lapped_strategy_counts_what_it_lost_and_keeps_going(instance, tmp_path):
    """The service on real rings: a broadcast ring of 16 records, 100 published before
    the strategy reads: received + lost = published, and the state says so."""
    from arbpipe.transport.rings import BroadcastRing, SpscRing
    from arbpipe.trading.service import StrategyService
    from arbpipe.trading.view import read_state
    cfg = load_config()
    ring = BroadcastRing.create("opportunities", 16, "Opportunity", policy="overwrite",
                                instance=instance)
    journal = SpscRing.create("journal", 1024, "JournalEntry", policy="drop", instance=instance)
    svc = StrategyService(cfg, instance, log=lambda m: None,
                          journal_path=str(tmp_path / "journal.jsonl"))
    try:
        assert svc.open()
        recs = np.zeros(100, OPPORTUNITY)
        recs["state"], recs["instrument_id"], recs["buy_venue"], recs["sell_venue"] = 1, 1, 1, 3
        recs["opp_id"], recs["confidence"] = np.arange(1, 101), 80.0
        ring.push_batch(recs)
        while svc.step():
            pass
        svc.publish(time.time_ns())
        st = read_state(instance)
        got = st["counters"]["opportunities_read"]
        assert st["ring"]["received"] == got and st["counters"]["lost"] == st["ring"]["lost"]
        assert got + st["counters"]["lost"] == 100 and st["counters"]["lost"] >= 84
        # each one read was decided (no live quote here: NO_QUOTE), journaled to the ring too
        assert st["rejects"] == {"no_quote": got}
        assert journal.stats()["published"] == got
    finally:
        svc.close()
        journal.close()
        journal.unlink()
        ring.close()
        ring.unlink()


def test_a_new_tree_comes_back_halted_when_the_last_run_ended_halted(instance, tmp_path):
    """The supervisor keeps the last run's journal as journal-<time>.jsonl; a strategy
    starting a new run with no journal of its own restores the breaker from it."""
    from arbpipe.transport.rings import BroadcastRing
    from arbpipe.trading.service import StrategyService
    from arbpipe.trading.view import read_state
    old = Journal(str(tmp_path / "journal-20261123T000000.jsonl"))
    old.write(JournalKind.BREAKER, reason=2, limit=20.0, value=25.0)   # DRAWDOWN
    old.close()
    ring = BroadcastRing.create("opportunities", 16, "Opportunity", policy="overwrite",
                                instance=instance)
    svc = StrategyService(load_config(), instance, log=lambda m: None,
                          journal_path=str(tmp_path / "journal.jsonl"))
    try:
        assert svc.open()
        st = read_state(instance)
        assert st["breaker"]["tripped"] and st["breaker"]["reason"] == "drawdown"
    finally:
        svc.close()
        ring.close()
        ring.unlink()


# ------------------------------------------------------------------ check order -----
# README ("Paper trading"): "... sends both legs through every pre-trade check (first
# failure rejects with a named reason): kill switch, breaker, daily loss, drawdown, ...".
# For every adjacent pair (check i, check i+1) of that list both are made to fail at once
# and the reject must name check i.

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "README.md")
R = RejectReason
# the README's words for each check -> the RejectReason(s) the code names it by; "stale
# quote" is the live-quote check: no quote at all (NO_QUOTE), then one too old (STALE_QUOTE)
README_WORDS = {
    "kill switch": [R.KILL_SWITCH], "breaker": [R.BREAKER], "daily loss": [R.DAILY_LOSS],
    "drawdown": [R.DRAWDOWN], "instrument in flight": [R.IN_FLIGHT],
    "open pairs": [R.MAX_OPEN_ORDERS], "cooldown": [R.COOLDOWN],
    "confidence": [R.LOW_CONFIDENCE], "stale quote": [R.NO_QUOTE, R.STALE_QUOTE],
    "re-priced net spread": [R.BELOW_THRESHOLD], "order notional": [R.MAX_ORDER_NOTIONAL],
    "fat finger": [R.FAT_FINGER],
    "position per instrument and per venue and gross (in-flight orders counted)":
        [R.MAX_POSITION_INSTRUMENT, R.MAX_POSITION_VENUE, R.MAX_GROSS],
    "balance": [R.BALANCE],
    "orders per second and per minute": [R.RATE_LIMIT_SECOND, R.RATE_LIMIT_MINUTE]}
CHECK_ORDER = [R.KILL_SWITCH, R.BREAKER, R.DAILY_LOSS, R.DRAWDOWN, R.IN_FLIGHT,
               R.MAX_OPEN_ORDERS, R.COOLDOWN, R.LOW_CONFIDENCE, R.NO_QUOTE, R.STALE_QUOTE,
               R.BELOW_THRESHOLD, R.MAX_ORDER_NOTIONAL, R.FAT_FINGER,
               R.MAX_POSITION_INSTRUMENT, R.MAX_POSITION_VENUE, R.MAX_GROSS, R.BALANCE,
               R.RATE_LIMIT_SECOND, R.RATE_LIMIT_MINUTE]
# the per-order checks (RiskChecks.check_order), each leg through every one
ORDER_CHECKS = CHECK_ORDER[CHECK_ORDER.index(R.MAX_ORDER_NOTIONAL):
                           CHECK_ORDER.index(R.BALANCE) + 1]


def readme_check_order():
    text = " ".join(open(README).read().split())
    m = re.search(r"every pre-trade check \(first failure rejects with a named reason\): "
                  r"(.*?)\. Fills are", text)
    assert m, "README no longer lists the pre-trade checks in 'Paper trading'"
    words = [w.strip() for w in m.group(1).split(", ")]
    unknown = [w for w in words if w not in README_WORDS]
    assert not unknown, f"README names checks this test does not know: {unknown}"
    return [r for w in words for r in README_WORDS[w]]


def reasons_in(text):
    return [R[t] for t in re.findall(r"\b[A-Z][A-Z_]{2,}\b", text) if t in R.__members__]


def code_check_order():
    """The order the code's own documentation gives: the breaker's gate, then the pair
    checks, then the order checks and the two rate limits (arbpipe.trading.risk)."""
    from arbpipe.trading import risk
    from arbpipe.trading.breaker import Breaker
    doc = risk.__doc__
    pair = doc[doc.index("Pair checks"):doc.index("Sizing:")]
    orders = doc[doc.index("Order checks"):doc.index("Boundaries:")]
    out = []
    for r in reasons_in(Breaker.gate.__doc__) + reasons_in(pair) + reasons_in(orders):
        if r not in out:
            out.append(r)
    return out


def test_the_documented_check_order_is_the_one_the_code_documents():
    assert readme_check_order() == CHECK_ORDER
    assert code_check_order() == CHECK_ORDER


BASE = dict(cooldown_ms=0.0, latency_ms=1_000.0, daily_loss_limit=1_000.0,
            max_drawdown=2_000.0, max_open_orders=8, min_confidence=40.0,
            max_quote_age_ms=2_000.0, min_net_bps=2.0, max_order_notional=10_000.0,
            fat_finger_bps=100.0, max_position_notional=50_000.0,
            max_venue_notional=150_000.0, max_gross_notional=200_000.0,
            max_orders_per_s=20, max_orders_per_min=600, slippage_bps=1.0)


class Case:
    """One decision: the BTC/USDT pair buy binance (ask 100000) / sell bybit-spot (bid
    100400, ~18 bps net), sized ~0.0998 BTC (~10k by max_order_notional), which passes
    every check; ``breaks`` make named checks fail (a setup step each)."""

    def __init__(self):
        self.s = make(**BASE)
        self.conf = 80.0
        self.quote_t = {"binance": T0, "bybit-spot": T0}
        self.steps = []

    def quote(self):
        for name, bid, ask in (("binance", 99_990.0, 100_000.0),
                               ("bybit-spot", 100_400.0, 100_410.0)):
            if self.quote_t[name] is not None:
                quote(self.s, name, bid, ask, t=self.quote_t[name])

    def decide(self):
        self.quote()
        for _, step in sorted(self.steps, key=lambda x: x[0]):
            step(self)
        return reject_reason(self.s, opp(self.s, "binance", "bybit-spot", conf=self.conf,
                                         opp_id=2))

    def order_check(self):
        """The buy leg alone through RiskChecks.check_order (0.1 BTC at 100000 = 10k)."""
        self.quote()
        for _, step in sorted(self.steps, key=lambda x: x[0]):
            step(self)
        r = self.s.check_order(order(self.s, "binance", Side.BUY, 100_000.0, 0.1, oid=7), T0)
        return None if r is None else RejectReason(r.reason)


def _lose(c):
    """A 100 USDT loss today: the day is looked at first, then an ETH buy paying 100 fee."""
    s = c.s
    s.portfolio.watch_loss(T0 - 2 * MS)
    s.apply_fill(2, leg(s, "binance"), Side.BUY, 1.0, 3_000.0, 100.0)


def _in_flight(c):
    """A first BTC pair sent a moment ago, still in flight (latency 1 s)."""
    s = c.s
    assert reject_reason(s, opp(s, "binance", "bybit-spot", opp_id=1), T0 - MS) is None
    assert s.orders


def _limit(**kw):
    def step(c):
        for k, v in kw.items():
            setattr(c.s.limits, k, v)
    return step


def _attr(**kw):
    def step(c):
        for k, v in kw.items():
            setattr(c, k, v)
    return step


def _stale(c):
    c.quote_t["binance"] = T0 - 3_000 * MS
    c.quote()


def _no_quote(c):
    c.s.book.set_quote(BTC, leg(c.s, "bybit-spot"), 0.0, 0.0, 0.0, 0.0, 0)


def _cooldown(c):
    s = c.s
    s.limits.cooldown_ms = 500.0
    s.risk.traded(BTC, leg(s, "binance"), leg(s, "bybit-spot"), 2, T0 - MS)


def _gross(c):
    """Gross exposure past its limit whatever the pair's size: 2 ETH (6k) held on okx."""
    s = c.s
    s.limits.max_gross_notional = 5_000.0
    s.apply_fill(2, leg(s, "okx"), Side.BUY, 2.0, 3_000.0, 0.0)


def _poor(c):
    c.s.balances[c.s.legs.venue[leg(c.s, "binance")]]["USDT"] = 5.0


# each check's way to fail: (step priority, step); the pair sent by IN_FLIGHT goes first,
# everything else after it (so that it does not stop that pair)
BREAKS = {
    R.KILL_SWITCH: (5, lambda c: c.s.set_kill_switch(True)),
    R.BREAKER: (5, lambda c: c.s.trip(BreakerReason.MANUAL, 1.0, 1.0, T0 - MS)),
    R.DAILY_LOSS: (5, lambda c: (_limit(daily_loss_limit=50.0)(c), _lose(c))),
    R.DRAWDOWN: (5, lambda c: (_limit(max_drawdown=50.0)(c), _lose(c))),
    R.IN_FLIGHT: (0, _in_flight),
    R.MAX_OPEN_ORDERS: (5, _limit(max_open_orders=0)),
    R.COOLDOWN: (5, _cooldown),
    R.LOW_CONFIDENCE: (5, _attr(conf=10.0)),
    R.NO_QUOTE: (5, _no_quote),
    R.STALE_QUOTE: (4, _stale),
    R.BELOW_THRESHOLD: (5, _limit(min_net_bps=100.0)),
    # in a decision the pair is sized to max_order_notional, so the order notional check
    # itself cannot fail there; a cap below the minimum order sizes the pair out instead
    R.MAX_ORDER_NOTIONAL: (5, _limit(max_order_notional=5_000.0)),
    R.FAT_FINGER: (5, _limit(fat_finger_bps=0.1)),            # the ask is 0.5 bps off mid
    R.MAX_POSITION_INSTRUMENT: (5, _limit(max_position_notional=5_000.0)),
    R.MAX_POSITION_VENUE: (5, _limit(max_venue_notional=5_000.0)),
    R.MAX_GROSS: (5, _gross),
    R.BALANCE: (5, _poor),                                    # 5 USDT left on binance
    R.RATE_LIMIT_SECOND: (5, _limit(max_orders_per_s=1)),
    R.RATE_LIMIT_MINUTE: (5, _limit(max_orders_per_min=1)),
}
# in a decision the order notional check is preceded by sizing to max_order_notional:
# with a cap below the minimum order (10 USDT) the pair is sized out (SIZE_TOO_SMALL)
FLOW_BREAKS = {**BREAKS, R.MAX_ORDER_NOTIONAL: (5, _limit(max_order_notional=5.0))}
FLOW_ALONE = {R.MAX_ORDER_NOTIONAL: R.SIZE_TOO_SMALL}


def decide(*reasons, level="flow"):
    c = Case()
    for r in reasons:
        c.steps.append((FLOW_BREAKS if level == "flow" else BREAKS)[r])
    return c.decide() if level == "flow" else c.order_check()


def test_the_case_passes_every_check_until_one_is_broken():
    assert decide() is None
    assert decide(level="order") is None


PAIRS = list(zip(CHECK_ORDER, CHECK_ORDER[1:]))


@pytest.mark.parametrize("first,second", PAIRS,
                         ids=[f"{a.name.lower()}-before-{b.name.lower()}" for a, b in PAIRS])
def test_when_two_adjacent_checks_fail_the_earlier_one_names_the_reject(first, second):
    # the whole decision (Strategy.on_opportunity), unless the first check is the order
    # notional one, which a decision never reaches failing (see FLOW_BREAKS)
    if first != R.MAX_ORDER_NOTIONAL:
        for r in (first, second):               # each alone fails, by its own reason
            assert decide(r) == FLOW_ALONE.get(r, r), r.name
        assert decide(first, second) == first
        assert decide(second, first) == first   # whatever order the failures were set up
    # the per-order checks of one leg (RiskChecks.check_order)
    if first in ORDER_CHECKS and second in ORDER_CHECKS:
        for r in (first, second):
            assert decide(r, level="order") == r, r.name
        assert decide(first, second, level="order") == first
