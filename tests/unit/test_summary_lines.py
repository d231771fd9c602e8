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
