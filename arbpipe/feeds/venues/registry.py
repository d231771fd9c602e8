"""Every venue adapter, by the name the config uses. To add a venue: one module beside this
one and one line here."""
from __future__ import annotations

from arbpipe.feeds.venues.base import VenueAdapter
from arbpipe.feeds.venues.binance import BinanceSpot, BinanceUsdm
from arbpipe.feeds.venues.bybit import BybitLinear, BybitSpot
from arbpipe.feeds.venues.coinbase import CoinbaseAdapter
from arbpipe.feeds.venues.gate import GateAdapter
from arbpipe.feeds.venues.kraken import KrakenAdapter
from arbpipe.feeds.venues.okx import OkxAdapter

REGISTRY: dict[str, type[VenueAdapter]] = {cls.name: cls for cls in (
    BinanceSpot, BinanceUsdm, BybitSpot, BybitLinear, OkxAdapter, CoinbaseAdapter, KrakenAdapter,
    GateAdapter)}


def get(name: str) -> type[VenueAdapter]:
    """The adapter class of venue ``name`` (KeyError naming the known ones)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown venue {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
