"""What the strategy knows about each leg and each instrument, from the config.

A leg is one (enabled venue, market) of ``arbpipe.legs.LegTable``: its venue id, whether
it is a perp market, its taker fee (every simulated fill takes liquidity) and its maker fee
(``[venues.X] maker_fee_bps``, or its ``perp`` table's: kept for resting orders, which the
paper exchange does not simulate yet; ``Order.maker`` selects it). An instrument (canonical id 1..n) has a base and a
quote asset. The values are copied into plain lists and dicts once, since every decision
reads them.
"""
from __future__ import annotations

from arbpipe.config import PERP_ID_BIT, Config
from arbpipe.legs import LegTable


class Markets:
    """Legs and instruments of a config; see the module docstring."""

    def __init__(self, cfg: Config):
        self.table: LegTable = cfg.legs()
        t = self.table
        self.instruments = list(cfg.instruments)
        self.base = {k + 1: n.split("/")[0] for k, n in enumerate(cfg.instruments)}
        self.quote = {k + 1: n.split("/")[1] for k, n in enumerate(cfg.instruments)}
        self.fee_bps = [float(x) for x in t.taker_fee_bps]
        venues = cfg.enabled_venues()
        self.maker_fee_bps = [float(venues[n].maker_fee_bps if n in venues else
                                    venues[n.removesuffix("-perp")].perp.maker_fee_bps)
                              for n in t.names]
        self.is_perp = [bool(x) for x in t.is_perp]
        self.venue = [int(x) for x in t.venue]
        self.names = list(t.names)
        self.venue_names = {int(v): cfg.venue_name(int(v)) for v in t.venue}

    def __len__(self) -> int:
        return len(self.table)

    def iid(self, i: int, leg: int) -> int:
        """The instrument id of canonical instrument ``i`` on ``leg`` (PERP_ID_BIT on perps)."""
        return i | (PERP_ID_BIT if self.is_perp[leg] else 0)

    def leg_of(self, venue_id: int, instrument_id: int) -> int:
        """The leg of (venue, instrument id), -1 if none."""
        return self.table.leg_of(venue_id, instrument_id)
