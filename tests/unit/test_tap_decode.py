"""`arbpipe tap` and the `make up` summary name an opportunity's legs as the dashboard does:
OKX spot and SWAP share venue id 5 and are told apart by the record's perp flags."""
import numpy as np

from arbpipe.ops.tap import decode, fmt
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
