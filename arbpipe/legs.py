"""Detector legs: one per (enabled venue, market), where a market is spot or perp.

A venue with one market has one leg; a venue with a ``[venues.X.perp]`` table (OKX: spot
and SWAP on one venue id) has two. ``LegTable.leg_of(venue_id, instrument_id)`` resolves an
update by the ``PERP_ID_BIT`` of its instrument id (``arbpipe.config``'s docstring, "Legs",
tells the whole rule). Built from a config by ``Config.legs()``.
"""
from __future__ import annotations

from arbpipe.symbols import PERP_ID_BIT, VENUE_IDS


class LegTable:
    """Detector legs: one per (enabled venue, market). Leg order: by venue id, spot first.

    ``tab[venue_id, market]`` is the leg index or -1; ``venue[leg]``, ``is_perp[leg]``,
    ``taker_fee_bps[leg]``, ``funding_interval_s[leg]``, ``names[leg]`` describe each leg.
    """

    def __init__(self, legs: list[tuple[str, int, int, float, int]]):
        import numpy as np  # lazy: numpy is ~110 ms of import; arbpipe status/down never build legs
        self.names = [x[0] for x in legs]
        self.venue = np.array([x[1] for x in legs], np.int64)
        self.is_perp = np.array([x[2] for x in legs], np.int64)
        self.taker_fee_bps = np.array([x[3] for x in legs], np.float64)
        self.funding_interval_s = np.array([x[4] for x in legs], np.int64)
        max_vid = int(self.venue.max()) if len(legs) else 0
        self.tab = np.full((max_vid + 1, 2), -1, np.int64)
        for i, (_, vid, perp, _, _) in enumerate(legs):
            self.tab[vid, perp] = i
        for vid in range(max_vid + 1):
            # a perp-only venue takes ids with or without the perp bit;
            # a spot-only venue refuses perp-bit ids (column 1 stays -1)
            if self.tab[vid, 0] < 0 and self.tab[vid, 1] >= 0:
                self.tab[vid, 0] = self.tab[vid, 1]

    def __len__(self):
        return len(self.names)

    @classmethod
    def from_config(cls, cfg) -> "LegTable":
        """The legs of ``cfg``'s enabled venues (an ``arbpipe.config.Config``)."""
        legs = []
        for name, v in sorted(cfg.enabled_venues().items(), key=lambda kv: VENUE_IDS[kv[0]]):
            vid = VENUE_IDS[name]
            perp = 1 if v.market == "perp" else 0
            legs.append((name, vid, perp, v.taker_fee_bps, v.funding_interval_s if perp else 0))
            if v.perp is not None:
                legs.append((name + "-perp", vid, 1, v.perp.taker_fee_bps,
                             v.perp.funding_interval_s))
        return cls(legs)

    def leg_of(self, venue_id: int, instrument_id: int) -> int:
        """Leg of an update from ``venue_id`` about ``instrument_id`` (-1: no such leg)."""
        if not 0 <= venue_id < self.tab.shape[0]:
            return -1
        return int(self.tab[venue_id, 1 if int(instrument_id) & PERP_ID_BIT else 0])

    def describe(self) -> list[dict]:
        return [{"leg": i, "name": self.names[i], "venue_id": int(self.venue[i]),
                 "market": "perp" if self.is_perp[i] else "spot",
                 "taker_fee_bps": float(self.taker_fee_bps[i]),
                 "funding_interval_s": int(self.funding_interval_s[i])}
                for i in range(len(self))]
