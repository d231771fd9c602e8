"""The `make up` summary and `arbpipe tap`: an opportunity's legs are named as the dashboard names
them (OKX spot and SWAP share venue id 5; the perp flags tell them apart), and quiet feeds
are explained."""
import numpy as np

from arbpipe.ops.tap import decode, fmt
from arbpipe.ops.tree import feeds_text
from arbpipe.symbols import VENUE_IDS
from shm_layouts import OPPORTUNITY, OppState
from shm_layouts.records import OPP_BUY_PERP, OPP_SELL_PERP


def _opp(buy, sell, flags):
    r = np.zeros(1, OPPORTUNITY)
    r["instrument_id"], r["buy_venue"], r["sell_venue"] = 2, VENUE_IDS[buy], VENUE_IDS[sell]
    r["state"], r["flags"], r["buy_ask"], r["sell_bid"] = OppState.OPEN, flags, 3500.0, 3509.73
    return decode(r[0], "Opportunity")


def test_okx_spot_and_swap_are_named_apart():
    d = _opp("okx", "okx", OPP_SELL_PERP)
    assert (d["buy"], d["sell"]) == ("okx", "okx-perp")
    assert "buy okx@3500 sell okx-perp@3509.73" in fmt(d, "Opportunity")
    d = _opp("okx", "okx", OPP_BUY_PERP)
    assert (d["buy"], d["sell"]) == ("okx-perp", "okx")


def test_perp_only_venue_keeps_its_name():
    d = _opp("binance", "binance-usdm", OPP_SELL_PERP)
    assert (d["buy"], d["sell"]) == ("binance", "binance-usdm")


def test_summary_says_why_feeds_are_quiet_until_every_feed_publishes():
    assert feeds_text(0.0, 0, 8) == ("feeds 0 updates/s (0/8 feeds publishing; a first start "
                                     "compiles the numba kernels, 10-25 s, once)")
    assert feeds_text(120.0, 3, 8) == "feeds 120 updates/s (3/8 feeds publishing)"
    assert feeds_text(1900.0, 8, 8) == "feeds 1,900 updates/s"


def test_summary_line_sums_the_expected_profit_of_the_open_opportunities(instance):
    """The `make up` summary follows the opportunities ring (a tap): the open ones' expected
    profit in USD (the detector's, at the depth-walked size), the best of them, and how many
    have no USD rate; a CLOSED record takes its opportunity out."""
    from arbpipe.ops.tree import Console
    from arbpipe.transport.rings import BroadcastRing
    ring = BroadcastRing.create("opportunities", 64, "Opportunity", instance=instance)
    try:
        c = Console(instance)
        assert "open " not in (c.summary() or "")
        recs = np.zeros(4, OPPORTUNITY)
        recs["instrument_id"], recs["buy_venue"], recs["sell_venue"] = 1, 1, 5
        recs["opp_id"] = [1, 2, 3, 3]
        recs["state"] = [OppState.OPEN, OppState.OPEN, OppState.OPEN, OppState.CLOSED]
        recs["buy_ask"], recs["sell_bid"], recs["exec_qty"] = 100.0, 100.5, 2.0
        recs["vwap_buy"], recs["vwap_sell"] = 100.1, 100.4
        recs["profit"] = [12.5, 3.0, 4.0, 4.0]
        recs["profit_usd"] = [12.5, np.nan, 4.0, 4.0]
        recs["buy_levels"], recs["sell_levels"] = 2, 1
        for r in recs:
            assert ring.push(r)
        line = c.summary()
        assert "| open 2: expected $12.50, best $12.50 (1 without a USD rate)" in line, line
        assert "levels 2/1 profit 4.00 usd 4.00" in line.splitlines()[1], line  # newest OPEN
    finally:
        ring.unlink()
        ring.close()
