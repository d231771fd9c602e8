"""Registry of the simulated venues' server sides, and path routing.

Each venue module (``arbpipe/sim/<venue>.py``) has the same shape: one ``Session``
subclass with ``venue``, ``PATHS``, ``DEFAULTS`` (timers), ``match(path)``,
``on_open``, ``on_message``, ``on_quote`` and ``notice_frames``.

Paths collide: Binance spot's raw-stream namespace ``/ws/<stream>...`` contains OKX's
``/ws/v5/public`` and Gate's ``/ws/v4/``, and Binance spot ``/ws`` is also USD-M's
unrouted legacy path. So the simulator gives every venue its own port by default. With
``single_port`` the precedence of ``ROUTE_ORDER`` resolves them: exact venue paths
first, Binance's namespaces next, Coinbase's ``/`` last; USD-M is then reachable only on
its routed ``/public/...`` and ``/market/...`` paths.
"""
from __future__ import annotations

from arbpipe.sim.binance import BinanceSession, BinanceUsdmSession
from arbpipe.sim.bybit import BybitLinearSession, BybitSession
from arbpipe.sim.coinbase import CoinbaseSession
from arbpipe.sim.gate import GateSession
from arbpipe.sim.kraken import KrakenSession
from arbpipe.sim.okx import OkxSession
from arbpipe.sim.session import Session

PROTOCOLS: dict[str, type[Session]] = {
    "binance": BinanceSession,
    "binance-usdm": BinanceUsdmSession,
    "bybit-spot": BybitSession,
    "bybit-linear": BybitLinearSession,
    "okx": OkxSession,
    "coinbase": CoinbaseSession,
    "kraken": KrakenSession,
    "gate": GateSession,
}

ROUTE_ORDER = ("okx", "gate", "bybit-spot", "bybit-linear", "kraken", "binance-usdm", "binance", "coinbase")


def route(path: str, venues, single_port: bool = True) -> str | None:
    """The venue (among ``venues``) that serves ``path``, or None."""
    for name in ROUTE_ORDER:
        if name in venues and PROTOCOLS[name].match(path, single_port):
            return name
    return None


def venue_paths(name: str) -> tuple[str, ...]:
    return PROTOCOLS[name].PATHS
