"""Paper trading that lives the whole trade: IOC fills on the live L2 books, a spot <-> spot
round with an inventory rebalance, a spot <-> perp trade held across a funding time and
exited on convergence, a thin book giving a partial fill and an unwind, the exit rules,
PnL components that add up exactly, and journal replay (also after a real SIGKILL)
reproducing positions, balances, transfers in flight, open trades and PnL exactly.

Every scenario is computed by hand in its comments; the figures are checked to the cent.
"""
import os
import signal
import subprocess
import sys
import textwrap

import msgspec
import numpy as np
import pytest

from arbpipe.config import PERP_ID_BIT, ConfigError, load_config, validate_config
from arbpipe.trading.depth import limit_price, walk, worst_price
from arbpipe.trading.journal import Journal, read_journal
from arbpipe.trading.strategy import Strategy
from shm_layouts import OPPORTUNITY
from shm_layouts.journal import ExitReason, JournalFlag, JournalKind, RejectReason, Side

T0 = 1_800_000_000_000_000_000          # 2027-01-15 08:00 UTC
MS = 1_000_000
S = 1_000_000_000
BTC, ETH = 1, 2
BASE = dict(slippage_bps=0.0, latency_ms=1.0, cooldown_ms=0.0, max_order_notional=20_000.0,
            equity_sample_s=0.0)


def make(tmp_path=None, **limits):
    cfg = load_config()
    cfg = msgspec.structs.replace(cfg, strategy=msgspec.structs.replace(
        cfg.strategy, **{**BASE, **limits}))
    j = Journal(str(tmp_path / "journal.jsonl")) if tmp_path else Journal()
    return Strategy(cfg, journal=j)


def leg(s, name):
    return s.legs.names.index(name)


def quote(s, name, bid, ask, t, i, qty=10.0):
    s.book.set_quote(i, leg(s, name), bid, ask, qty, qty, t)


def opp(s, buy, sell, i, exec_qty, opp_id=1):
    o = np.zeros(1, OPPORTUNITY)[0]
    bl, sl = leg(s, buy), leg(s, sell)
    o["instrument_id"] = i
    o["buy_venue"], o["sell_venue"] = s.legs.venue[bl], s.legs.venue[sl]
    o["flags"] = (1 if s.legs.is_perp[bl] else 0) | (2 if s.legs.is_perp[sl] else 0)
    o["state"], o["confidence"], o["exec_qty"], o["opp_id"] = 1, 80.0, exec_qty, opp_id
    return o


def kinds(entries, kind):
    return [e for e in entries if e["kind"] == kind]


def cents(x):
    return round(x + 0.0, 2)


def components_from_journal(entries):
    """Each PnL component summed from the journal, in journal order (as the portfolio
    adds them)."""
    fills = fees = tfees = funding = 0.0
    for e in entries:
        k = e["kind"]
        if k == JournalKind.FILL:
            fills += e["realized_pnl"]
            fees += e["fee"]
        elif k == JournalKind.TRANSFER:
            tfees += e["fee"]
        elif k == JournalKind.FUNDING:
            funding += e["realized_pnl"]
    return fills, fees, tfees, funding


def assert_journal_adds_up(s, entries):
    fills, fees, tfees, funding = components_from_journal(entries)
    p = s.state(T0)["pnl"]
    assert (p["fills"], p["fees"], p["transfer_fees"], p["funding"]) == \
        (fills, fees, tfees, funding)                         # exactly
    assert p["realized_net"] == fills - fees - tfees + funding
    assert p["net"] == p["realized_net"] + p["unrealized"]


def snapshot(s):
    pf = s.portfolio
    return ({k: (p.qty, p.avg, p.realized, p.fees, p.funding) for k, p in pf.positions.items()},
            {k: (p.qty, p.avg, p.realized, p.fees, p.funding, p.opened_ns)
             for k, p in pf.pnl_positions.items()},
            {v: dict(b) for v, b in pf.balances.items()},
            (pf.realized, pf.fees, pf.transfer_fees, pf.funding),
            {t: (x.src, x.dst, x.asset, x.qty, x.fee_units, x.fee, x.due_ns)
             for t, x in s.inventory.in_flight.items()},
            {p: (t.i, t.bleg, t.sleg, t.qty_b, t.qty_s, t.buy_notional, t.sell_notional,
                 t.opened_ns, t.attempts) for p, t in s.trades.trades.items()
             if t.open},
            dict(s.funding.last_paid))


def restored(s, tmp_path, now):
    s.journal.close()
    s2 = make(tmp_path, **_limits_of(s))
    s2.journal = Journal(str(tmp_path / "journal.jsonl"))
    s2.restore(read_journal(str(tmp_path / "journal.jsonl")), now)
    return s2


def _limits_of(s):
    st = s.cfg.strategy
    return {k: getattr(st, k) for k in st.__struct_fields__}


# ------------------------------------------------------------------ depth ------------

def test_walk_takes_levels_within_the_limit_partial_on_a_thin_book():
    asks = [2000.0, 2001.0, 2003.0], [1.0, 1.0, 5.0]
    f = walk(*asks, Side.BUY, 1.5, limit=2001.0)
    assert (f.qty, f.notional, f.levels) == (1.5, 2000.0 + 0.5 * 2001.0, 2)
    f = walk(*asks, Side.BUY, 3.0, limit=2001.0)         # 2003 is beyond the limit
    assert (f.qty, f.levels) == (2.0, 2) and f.price == 2000.5
    assert walk(*asks, Side.BUY, 1.0, limit=1999.0).qty == 0.0
    bids = [2010.0, 2009.0], [1.5, 1.0]
    f = walk(*bids, Side.SELL, 2.0, limit=2009.0, slip_bps=10.0)
    assert f.notional == pytest.approx(1.5 * 2010 * 0.999 + 0.5 * 2009 * 0.999)
    f = walk(*bids, Side.SELL, 4.0, extend=True)         # a market order completes
    assert f.qty == 4.0 and f.notional == 1.5 * 2010 + 2.5 * 2009
    assert worst_price(*asks, 1.5) == 2001.0 and worst_price(*asks, 99.0) == 2003.0
    assert limit_price(Side.BUY, 2000.0, 5.0) == 2001.0
    assert limit_price(Side.SELL, 2000.0, 5.0) == 1999.0


def test_live_book_applies_level_and_funding_records():
    from shm_layouts.records import MARKET_UPDATE, MARKET_UPDATE_FUNDING, \
        MARKET_UPDATE_LEVEL, Flag, Kind
    s = make()
    b, lg = s.book, leg(s, "binance")
    vid = s.legs.venue[lg]
    r = np.zeros(5, MARKET_UPDATE_LEVEL)
    rows = [(Flag.SNAPSHOT, 100.0, 1.0), (0, 99.0, 2.0), (Flag.BOOK_ASK, 101.0, 1.5),
            (Flag.BOOK_ASK | Flag.BOOK_END, 102.0, 3.0)]
    for j, (fl, px, q) in enumerate(rows):
        r[j]["instrument_id"], r[j]["venue_id"], r[j]["kind"] = ETH, vid, int(Kind.LEVEL)
        r[j]["flags"], r[j]["price"], r[j]["qty"] = int(fl), px, q
    assert b.apply(r[:2].view(MARKET_UPDATE)) == 2
    assert b.ladder(ETH, lg, ask=False) is None           # mid-message: not used
    b.apply(r[2:4].view(MARKET_UPDATE))
    assert b.ladder(ETH, lg, ask=True) == ([101.0, 102.0], [1.5, 3.0])
    assert b.ladder(ETH, lg, ask=False) == ([100.0, 99.0], [1.0, 2.0])
    f = np.zeros(1, MARKET_UPDATE_FUNDING)
    pl = leg(s, "binance-usdm")
    f[0]["instrument_id"], f[0]["venue_id"], f[0]["kind"] = ETH | PERP_ID_BIT, \
        s.legs.venue[pl], int(Kind.FUNDING)
    f[0]["funding_rate"], f[0]["next_funding_ns"] = 1e-4, T0 + 3600 * S
    b.apply(f.view(MARKET_UPDATE))
    assert b.funding(ETH, pl) == (1e-4, T0 + 3600 * S)


# ------------------------------------------------------------------ scenario 1 -------
# spot <-> spot, ETH/USDT: buy binance, sell bybit-spot, then the rebalance.
#   books: binance asks 2000 x 1.0, 2001 x 2.0 (bid 1998); bybit bids 2010 x 1.5, 2009 x 1.0
#   exec_qty 2.0: qty q = 2.0 (x (1 - 1e-9), the balance guard)
#   buy:  1.0 @ 2000 + 1.0 @ 2001 = 4001.00, fee 10 bps 4.001
#   sell: 1.5 @ 2010 + 0.5 @ 2009 = 4019.50, fee 10 bps 4.0195
#   fills PnL 4019.50 - 4001.00 = 18.50 (locked at the fills), fees 8.0205 -> 8.02
#   ETH after: binance 22, bybit 18; band [19, 20, 21]: bybit < 19, binance sends
#   min(20 - 18 + 0.002 fee, 22 - 20) = 2.0 ETH; fee 0.002 ETH x binance mid 1999 = 3.998
#   lands 600 s later: bybit 18 + 2.0 - 0.002 = 19.998, binance 20.0
#   realized net = 18.50 - 8.0205 - 3.998 = 6.4815 -> 6.48; unrealized 0 (inventory moved back)

def scenario_spot_round(tmp_path=None):
    s = make(tmp_path, inventory_bands={"ETH": [19.0, 20.0, 21.0]},
             withdrawal_fee={"binance": {"ETH": 0.002}}, transfer_delay_s=600.0)
    bn, by = leg(s, "binance"), leg(s, "bybit-spot")
    quote(s, "binance", 1998.0, 2000.0, T0, ETH)
    quote(s, "bybit-spot", 2010.0, 2012.0, T0, ETH)
    s.book.set_levels(ETH, bn, [(1998.0, 5.0)], [(2000.0, 1.0), (2001.0, 2.0)])
    s.book.set_levels(ETH, by, [(2010.0, 1.5), (2009.0, 1.0)], [(2012.0, 5.0)])
    assert s.on_opportunity(opp(s, "binance", "bybit-spot", ETH, 2.0), T0) is None
    return s


def test_spot_round_locks_its_profit_and_rebalances_inventory():
    s = scenario_spot_round()
    bn, by = leg(s, "binance"), leg(s, "bybit-spot")
    orders = kinds(s.journal.entries, JournalKind.ORDER)
    assert [o["limit"] for o in orders] == [2001.0, 2009.0]   # deepest levels the size reaches
    s.poll(T0 + MS)
    fills = kinds(s.journal.entries, JournalKind.FILL)
    assert [cents(f["notional"]) for f in fills] == [4001.00, 4019.50]
    assert cents(s.portfolio.realized) == 18.50 and cents(s.portfolio.fees) == 8.02
    assert not any(f["flags"] & JournalFlag.PARTIAL for f in fills)
    # the transfer left binance at once (the same poll): unavailable while in flight
    (tr,) = kinds(s.journal.entries, JournalKind.TRANSFER)
    assert (tr["venue_id"], tr["opp_id"]) == (s.legs.venue[bn], s.legs.venue[by])
    assert cents(tr["qty"]) == 2.00 and tr["value"] == 0.002 and cents(tr["fee"]) == 4.00
    assert tr["fee"] == pytest.approx(3.998) and tr["trigger_recv_ns"] == T0 + MS + 600 * S
    b = s.balances
    assert cents(b[s.legs.venue[bn]]["ETH"]) == 20.00 and cents(b[s.legs.venue[by]]["ETH"]) == 18.00
    st = s.state(T0 + MS)
    assert st["inventory"]["in_flight"][0]["to"] == "bybit-spot"
    s.poll(T0 + MS + 599 * S)
    assert not kinds(s.journal.entries, JournalKind.TRANSFER_DONE)
    assert s.next_due() == T0 + MS + 600 * S
    s.poll(T0 + MS + 600 * S)
    (done,) = kinds(s.journal.entries, JournalKind.TRANSFER_DONE)
    assert cents(done["qty"]) == 2.00 and done["qty"] == pytest.approx(2.0 - 0.002, abs=1e-8)
    assert b[s.legs.venue[by]]["ETH"] == pytest.approx(19.998, abs=1e-8)
    assert b[s.legs.venue[bn]]["ETH"] == pytest.approx(20.0, abs=1e-8)
    assert len(kinds(s.journal.entries, JournalKind.TRANSFER)) == 1   # inside the band now
    p = s.state(T0 + MS + 600 * S)["pnl"]
    assert (cents(p["fills"]), cents(p["fees"]), cents(p["transfer_fees"]),
            cents(p["funding"])) == (18.50, 8.02, 4.00, 0.00)
    assert cents(p["realized_net"]) == 6.48 and cents(p["unrealized"]) == 0.00
    assert cents(p["net"]) == 6.48
    assert_journal_adds_up(s, s.journal.entries)


# ------------------------------------------------------------------ scenario 2 -------
# spot <-> perp, BTC/USDT: buy binance spot 100000, sell binance-usdm perp 100300; top of
# book only (no L2 levels for these legs), exec_qty 0.1: q = 0.1
#   entry: buy 0.1 @ 100000 = 10000.00 fee 10 bps 10.00; sell 0.1 @ 100300 = 10030.00
#   fee 5 bps 5.015
#   funding at T0 + 1 h, rate +0.0001: the short perp receives 0.1 x mid 100210 x 0.0001
#   = +1.0021 (spot 99990/100000, perp 100200/100220: exit spread (100220 - 99990) /
#   100105 = 22.98 bps > exit_net_bps 0: held; unrealized 0.1 x (99995 - 100000)
#   + -0.1 x (100210 - 100300) = -0.50 + 9.00 = 8.50)
#   T0 + 2 h: spot 100100/100110, perp 100080/100090: exit spread (100090 - 100100) /
#   100095 = -1.00 bps <= 0: CONVERGED; exit sells 0.1 spot @ 100100 (fee 10.01), buys
#   0.1 perp @ 100090 (fee 5.0045)
#   fills: spot +10.00, perp (100300 - 100090) x 0.1 = +21.00: 31.00
#   fees 10 + 5.015 + 10.01 + 5.0045 = 30.0295 -> 30.03; funding +1.0021 -> 1.00
#   realized net 31.00 - 30.0295 + 1.0021 = 1.9726 -> 1.97

def scenario_perp_entry(tmp_path=None, **limits):
    s = make(tmp_path, **limits)
    quote(s, "binance", 99_990.0, 100_000.0, T0, BTC, qty=1.0)
    quote(s, "binance-usdm", 100_300.0, 100_310.0, T0, BTC, qty=1.0)
    s.book.set_funding(BTC, leg(s, "binance-usdm"), 1e-4, T0 + 3600 * S, 28800)
    assert s.on_opportunity(opp(s, "binance", "binance-usdm", BTC, 0.1), T0) is None
    s.poll(T0 + MS)
    return s


def funding_time(s, t=T0 + 3600 * S):
    quote(s, "binance", 99_990.0, 100_000.0, t, BTC, qty=1.0)
    quote(s, "binance-usdm", 100_200.0, 100_220.0, t, BTC, qty=1.0)
    s.poll(t)


def converge(s, t=T0 + 7200 * S):
    quote(s, "binance", 100_100.0, 100_110.0, t, BTC, qty=1.0)
    quote(s, "binance-usdm", 100_080.0, 100_090.0, t, BTC, qty=1.0)
    s.poll(t)
    s.poll(t + MS)


def test_spot_perp_trade_held_across_funding_and_exited_on_convergence():
    s = scenario_perp_entry()
    e = s.journal.entries
    fills = kinds(e, JournalKind.FILL)
    assert [cents(f["notional"]) for f in fills] == [10_000.00, 10_030.00]
    assert [f["fee"] for f in fills] == pytest.approx([10.0, 5.015], abs=1e-6)
    (t,) = s.trades.open_trades()
    assert cents(t.entry_spread_bps()) == 29.96
    assert s.next_due() == T0 + 3600 * S                  # the funding time
    s.poll(T0 + 1800 * S)                                 # wide: held
    assert not kinds(e, JournalKind.EXIT)
    funding_time(s)
    (fu,) = kinds(e, JournalKind.FUNDING)
    assert fu["realized_pnl"] == pytest.approx(1.0021, abs=1e-7) and cents(fu["price"]) == 100_210.0
    assert fu["trigger_recv_ns"] == T0 + 3600 * S and fu["value"] == 1e-4
    p = s.state(T0 + 3600 * S)["pnl"]
    assert cents(p["unrealized"]) == 8.50 and cents(p["funding"]) == 1.00
    assert not kinds(e, JournalKind.EXIT)                 # 22.98 bps: still held
    s.poll(T0 + 3600 * S + MS)
    assert len(kinds(e, JournalKind.FUNDING)) == 1        # each funding time once
    converge(s)
    (ex,) = kinds(e, JournalKind.EXIT)
    assert ex["reason"] == ExitReason.CONVERGED and cents(ex["value"]) == -1.00
    legs = [f for f in kinds(e, JournalKind.FILL) if f["flags"] & JournalFlag.EXIT_LEG]
    assert [(f["side"], f["price"]) for f in legs] == [(Side.SELL, 100_100.0), (Side.BUY, 100_090.0)]
    assert not s.trades.open_trades() and s.trades.closed == 1
    p = s.state(T0 + 7200 * S)["pnl"]
    assert (cents(p["fills"]), cents(p["fees"]), cents(p["funding"]),
            cents(p["realized_net"]), cents(p["unrealized"])) == (31.00, 30.03, 1.00, 1.97, 0.0)
    assert all(pp.qty == pytest.approx(0.0, abs=1e-12) for pp in s.portfolio.pnl_positions.values())
    pair = s.state(T0 + 7200 * S)["trades"]["pairs"][-1]
    assert cents(pair["realized"]) == 1.97                # fills - fees + funding, per pair
    assert_journal_adds_up(s, e)


# ------------------------------------------------------------------ scenario 3 -------
# a thin book, ETH/USDT buy binance / sell bybit-spot, exec_qty 1.5: q = 1.5
#   decision: binance asks 2000 x 1.0, 2001 x 1.0 -> buy limit 2001; bybit bids 2010 x 2.0
#   before the fill binance thins to 2000 x 0.5, 2003 x 5.0 (beyond the limit):
#   buy fills 0.5 @ 2000 = 1000.00 (PARTIAL), fee 1.00; sell fills 1.5 @ 2010 = 3015.00,
#   fee 3.015; the sell filled 1.0 more: unwound by a market BUY of 1.0 on bybit, asks
#   2012 x 0.6, 2013 x 1.0: 0.6 @ 2012 + 0.4 @ 2013 = 2012.40 (VWAP 2012.40), fee 2.0124
#   fills: 0.5 x (2010 - 2000) + 1.0 x (2010 - 2012.40) = 5.00 - 2.40 = 2.60
#   fees 1.00 + 3.015 + 2.0124 = 6.0274 -> 6.03; realized net -3.4274 -> -3.43
#   left: binance +0.5, bybit -0.5 (pool flat): unrealized 0.5 x (1999 - 2011) = -6.00

def test_thin_book_partial_fill_is_unwound_on_the_book():
    s = make(partial_fills=True)
    bn, by = leg(s, "binance"), leg(s, "bybit-spot")
    quote(s, "binance", 1998.0, 2000.0, T0, ETH)
    quote(s, "bybit-spot", 2010.0, 2012.0, T0, ETH)
    s.book.set_levels(ETH, bn, [(1998.0, 5.0)], [(2000.0, 1.0), (2001.0, 1.0)])
    s.book.set_levels(ETH, by, [(2010.0, 2.0)], [(2012.0, 0.6), (2013.0, 1.0)])
    assert s.on_opportunity(opp(s, "binance", "bybit-spot", ETH, 1.5), T0) is None
    s.book.set_levels(ETH, bn, [(1998.0, 5.0)], [(2000.0, 0.5), (2003.0, 5.0)])
    s.poll(T0 + MS)
    e = s.journal.entries
    buy, sell = kinds(e, JournalKind.FILL)
    assert buy["flags"] & JournalFlag.PARTIAL and buy["qty"] == 0.5 and buy["price"] == 2000.0
    assert cents(sell["notional"]) == 3015.00 and not sell["flags"] & JournalFlag.PARTIAL
    (u,) = kinds(e, JournalKind.UNWIND)
    assert u["side"] == Side.BUY and cents(u["qty"]) == 1.00
    s.poll(T0 + 2 * MS)
    uf = kinds(e, JournalKind.FILL)[-1]
    assert uf["flags"] & JournalFlag.UNWIND_LEG and cents(uf["price"]) == 2012.40
    assert cents(uf["notional"]) == 2012.40 and cents(uf["fee"]) == 2.01
    p = s.state(T0 + 2 * MS)["pnl"]
    assert (cents(p["fills"]), cents(p["fees"]), cents(p["realized_net"]),
            cents(p["unrealized"])) == (2.60, 6.03, -3.43, -6.00)
    assert s.positions[(ETH, bn)].qty == 0.5
    assert s.positions[(ETH, by)].qty == pytest.approx(-0.5, abs=1e-8)
    assert_journal_adds_up(s, e)


# ------------------------------------------------------------------ exit rules -------

def test_stop_max_hold_and_kill_switch_flatten_fire_and_exits_skip_entry_limits():
    s = scenario_perp_entry(stop_basis_bps=10.0)
    # the basis widens against us: exit spread (100410 - 99990) / 100200 = 41.9 bps
    # >= entry 29.96 + 10
    quote(s, "binance", 99_990.0, 100_000.0, T0 + S, BTC, qty=1.0)
    quote(s, "binance-usdm", 100_400.0, 100_410.0, T0 + S, BTC, qty=1.0)
    s.set_kill_switch(True)           # entry-only: does not block the exit
    s.limits.max_position_notional = 1.0
    s.poll(T0 + S)
    (ex,) = kinds(s.journal.entries, JournalKind.EXIT)
    assert ex["reason"] == ExitReason.STOP and cents(ex["limit"]) == 39.96
    s.poll(T0 + S + MS)
    assert not s.trades.open_trades()

    s = scenario_perp_entry(max_hold_s=60.0)
    s.poll(T0 + 59 * S)
    assert not kinds(s.journal.entries, JournalKind.EXIT)
    quote(s, "binance", 99_990.0, 100_000.0, T0 + MS + 60 * S, BTC, qty=1.0)
    quote(s, "binance-usdm", 100_300.0, 100_310.0, T0 + MS + 60 * S, BTC, qty=1.0)
    s.poll(T0 + MS + 60 * S)
    assert kinds(s.journal.entries, JournalKind.EXIT)[0]["reason"] == ExitReason.MAX_HOLD

    s = scenario_perp_entry(kill_switch_flatten=True)
    s.poll(T0 + 2 * MS)
    assert not kinds(s.journal.entries, JournalKind.EXIT)
    s.set_kill_switch(True)
    s.poll(T0 + 3 * MS)
    assert kinds(s.journal.entries, JournalKind.EXIT)[0]["reason"] == ExitReason.KILL_SWITCH


def test_a_stale_leg_blocks_the_exit_which_retries_and_a_partial_exit_stays_open():
    s = scenario_perp_entry(max_quote_age_ms=1000.0)
    t = T0 + 7200 * S
    quote(s, "binance", 100_100.0, 100_110.0, t - 2 * S, BTC, qty=1.0)       # stale
    quote(s, "binance-usdm", 100_080.0, 100_090.0, t, BTC, qty=1.0)
    s.poll(t)
    s.poll(t + MS)
    rej = [e for e in kinds(s.journal.entries, JournalKind.REJECT)
           if e["flags"] & JournalFlag.EXIT_LEG]
    assert len(rej) == 1 and rej[0]["reason"] == RejectReason.STALE_QUOTE   # journaled once
    # fresh again, but the spot bid holds only 0.04: the exit sells 0.04, the rest stays
    quote(s, "binance", 100_100.0, 100_110.0, t + 2 * MS, BTC, qty=0.04)
    s.poll(t + 2 * MS)
    s.poll(t + 3 * MS)
    (tr,) = s.trades.open_trades()
    assert tr.qty_b == pytest.approx(0.06) and tr.qty_s == pytest.approx(0.0, abs=1e-12)
    quote(s, "binance", 100_100.0, 100_110.0, t + 4 * MS, BTC, qty=1.0)
    s.poll(t + 4 * MS)
    s.poll(t + 5 * MS)
    assert not s.trades.open_trades()
    assert len(kinds(s.journal.entries, JournalKind.EXIT)) == 2


def test_flatten_on_stop_exits_every_open_trade():
    s = scenario_perp_entry(flatten_on_stop=True)
    clock = iter(range(T0 + S, T0 + S + 100 * MS, MS))
    assert s.stop(T0 + S, clock=lambda: next(clock), sleep=lambda x: None) == 0
    assert kinds(s.journal.entries, JournalKind.EXIT)[0]["reason"] == ExitReason.SHUTDOWN


# ------------------------------------------------------------------ restore -----------

def test_journal_replay_reproduces_transfers_trades_and_pnl_exactly(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # a transfer in flight
    s = scenario_spot_round(tmp_path / "a")
    s.poll(T0 + MS)
    assert s.inventory.in_flight
    before = snapshot(s)
    s2 = restored(s, tmp_path / "a", T0 + 2 * MS)
    assert snapshot(s2) == before
    s2.poll(T0 + MS + 600 * S)                          # lands after the restart
    assert not s2.inventory.in_flight and cents(s2.state(T0)["pnl"]["net"]) == 6.48
    assert_journal_adds_up(s2, read_journal(str(tmp_path / "a" / "journal.jsonl")))
    # a perp trade open after a funding time: not paid twice, then exits
    s = scenario_perp_entry(tmp_path / "b")
    funding_time(s)
    before = snapshot(s)
    s2 = restored(s, tmp_path / "b", T0 + 3600 * S + MS)
    assert snapshot(s2) == before
    s2.poll(T0 + 3600 * S + 2 * MS)
    converge(s2)
    entries = read_journal(str(tmp_path / "b" / "journal.jsonl"))
    assert len(kinds(entries, JournalKind.FUNDING)) == 1
    assert cents(s2.state(T0)["pnl"]["realized_net"]) == 1.97
    assert_journal_adds_up(s2, entries)


def test_sigkill_mid_trade_then_replay_is_exact(tmp_path):
    """A child process runs the rebalance and the perp trade to a funding time, with a
    transfer in flight, prints its state and SIGKILLs itself; the replay equals it."""
    script = textwrap.dedent(f"""
        import json, os, pathlib, signal, sys
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import test_trade_lifecycle as T
        tmp = pathlib.Path({str(tmp_path)!r})
        s = T.scenario_spot_round(tmp)
        s.poll(T.T0 + T.MS)
        T.quote(s, "binance", 99_990.0, 100_000.0, T.T0 + T.MS, T.BTC, qty=1.0)
        T.quote(s, "binance-usdm", 100_300.0, 100_310.0, T.T0 + T.MS, T.BTC, qty=1.0)
        s.book.set_funding(T.BTC, T.leg(s, "binance-usdm"), 1e-4, T.T0 + 3600 * T.S, 28800)
        s.on_opportunity(T.opp(s, "binance", "binance-usdm", T.BTC, 0.1, opp_id=2), T.T0 + T.MS)
        s.poll(T.T0 + 2 * T.MS)
        T.funding_time(s, T.T0 + 300 * T.S)
        s.book.set_funding(T.BTC, T.leg(s, "binance-usdm"), 1e-4, T.T0 + 300 * T.S, 28800)
        s.poll(T.T0 + 300 * T.S)
        print(repr(T.snapshot(s)), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    before = eval(p.stdout.strip().splitlines()[-1])
    s2 = make(tmp_path, inventory_bands={"ETH": [19.0, 20.0, 21.0]},
              withdrawal_fee={"binance": {"ETH": 0.002}}, transfer_delay_s=600.0)
    s2.journal = Journal(str(tmp_path / "journal.jsonl"))
    info = s2.restore(read_journal(str(tmp_path / "journal.jsonl")), T0 + 301 * S)
    assert info["open_trades"] == 1 and info["transfers_in_flight"] == 1
    assert snapshot(s2) == before
    assert len(kinds(read_journal(str(tmp_path / "journal.jsonl")), JournalKind.FUNDING)) == 1


# ------------------------------------------------------------------ config ------------

@pytest.mark.parametrize("change,key", [
    (dict(inventory_bands={"ETH": [21.0, 20.0, 19.0]}), "strategy.inventory_bands.ETH"),
    (dict(inventory_bands={"ETH": [1.0, 2.0]}), "strategy.inventory_bands.ETH"),
    (dict(withdrawal_fee={"nowhere": {"ETH": 0.1}}), "strategy.withdrawal_fee.nowhere"),
    (dict(withdrawal_fee={"binance": {"ETH": -1.0}}), "strategy.withdrawal_fee.binance.ETH"),
    (dict(max_hold_s=-1.0), "strategy.max_hold_s"),
    (dict(limit_tolerance_bps=float("nan")), "strategy.limit_tolerance_bps"),
])
def test_bad_trade_life_keys_are_named(change, key):
    cfg = load_config()
    cfg = msgspec.structs.replace(cfg, strategy=msgspec.structs.replace(cfg.strategy, **change))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg)


# ------------------------------------------------------------------ views -------------

def test_equity_is_sampled_and_every_component_is_shown():
    from arbpipe.trading.view import render_state
    s = scenario_perp_entry(equity_sample_s=60.0)
    s.poll(T0 + 30 * S)
    assert not kinds(s.journal.entries, JournalKind.EQUITY)
    funding_time(s, T0 + 3600 * S)                       # one sample, after the funding
    (eq,) = kinds(s.journal.entries, JournalKind.EQUITY)
    st = s.state(T0 + 3600 * S)
    p = st["pnl"]
    assert (eq["value"], eq["realized_pnl"], eq["fee"], eq["limit"], eq["price"],
            eq["notional"]) == (p["net"], p["fills"], p["fees"], p["transfer_fees"],
                                p["funding"], p["unrealized"])
    assert p["equity"] == [[T0 + 3600 * S, p["net"]]]
    st.update(_pid=1, _alive=True)
    text = render_state(st)
    assert "transfer fees 0.00  + funding +1.00" in text and "= net " in text
    assert "trade #" in text and "long binance 0.1 short binance-usdm 0.1" in text


def test_a_maker_order_pays_the_maker_fee():
    from arbpipe.trading.fills import Order
    s = make()
    quote(s, "okx", 1999.0, 2000.0, T0, ETH)
    lg = leg(s, "okx")
    assert (s.markets.fee_bps[lg], s.markets.maker_fee_bps[lg]) == (10.0, 8.0)
    for oid, maker in ((3, False), (4, True)):
        o = Order(oid, 1, 0, ETH, lg, Side.BUY, 2000.0, 1.0, T0, maker=maker)
        s.exchange.orders[o.order_id] = o
        s.exchange.execute(o, T0)
    a, b = kinds(s.journal.entries, JournalKind.FILL)
    assert (a["fee"], b["fee"]) == (2.0, 1.6)


def test_the_base_an_open_trade_holds_is_not_rebalanced_away():
    # band BTC [1.02, 1.05, 1.2]: every spot venue holds 1.0 (< low) but binance, 1.1 after
    # buying the trade's 0.1 spot; that 0.1 is the trade's (its exit sells it): binance
    # counts 1.0 and has nothing above target to send
    s = scenario_perp_entry(inventory_bands={"BTC": [1.02, 1.05, 1.2]})
    assert not kinds(s.journal.entries, JournalKind.TRANSFER)
    assert s.trades.held() == {(s.legs.venue[leg(s, "binance")], "BTC"): pytest.approx(0.1)}
    assert s.inventory.tick(T0 + 2 * MS, [], s.trades.held()) == 0
    assert s.inventory.tick(T0 + 2 * MS, [], {}) == 1   # counting it, 0.05 would go
    (tr,) = kinds(s.journal.entries, JournalKind.TRANSFER)
    assert tr["venue_id"] == s.legs.venue[leg(s, "binance")] and cents(tr["qty"]) == 0.05


def test_exit_legs_lost_in_a_restart_are_missed_and_the_exit_fires_again(tmp_path):
    from shm_layouts.journal import UNWIND_ID_OFFSET
    s = scenario_perp_entry(tmp_path)
    t = T0 + 7200 * S
    quote(s, "binance", 100_100.0, 100_110.0, t, BTC, qty=1.0)
    quote(s, "binance-usdm", 100_080.0, 100_090.0, t, BTC, qty=1.0)
    s.poll(t)                                            # exit sent, then the process dies
    assert len(s.orders) == 2
    before = snapshot(s)
    s2 = restored(s, tmp_path, t + MS)
    assert snapshot(s2) == before
    e = read_journal(str(tmp_path / "journal.jsonl"))
    missed = kinds(e, JournalKind.MISSED)
    assert len(missed) == 2 and all(m["flags"] & JournalFlag.EXIT_LEG for m in missed)
    assert not kinds(e, JournalKind.UNWIND) and len(s2.trades.open_trades()) == 1
    quote(s2, "binance", 100_100.0, 100_110.0, t + MS, BTC, qty=1.0)
    quote(s2, "binance-usdm", 100_080.0, 100_090.0, t + MS, BTC, qty=1.0)
    s2.poll(t + MS)
    s2.poll(t + 2 * MS)
    exit_fills = [f for f in s2.journal.entries if f["kind"] == JournalKind.FILL]
    assert {f["order_id"] // UNWIND_ID_OFFSET for f in exit_fills} == {3}   # attempt 1
    assert not s2.trades.open_trades()
    assert_journal_adds_up(s2, read_journal(str(tmp_path / "journal.jsonl")))
