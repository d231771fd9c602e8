"""Configuration of the venue simulator (msgspec Structs; unknown keys are rejected).

Units: rates in updates per second, times in seconds unless the name says ``_ms``,
spreads, noise and dislocations in basis points (1 bp = 0.0001), sizes in USD notional
or base-asset units as named. A ``None`` timeout means "the venue's documented default"
(see each protocol module's ``DEFAULTS``).
"""
from __future__ import annotations

from typing import Literal

import msgspec

# Venue names, fixed; each is served by one protocol module (arbpipe.sim.protocols).
VENUES = ("binance", "binance-usdm", "bybit-spot", "bybit-linear", "okx", "coinbase",
          "kraken", "gate")
PERP_VENUES = ("binance-usdm", "bybit-linear")   # okx serves SPOT and SWAP on one venue

DEFAULT_BASES = ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "AVAX", "LINK", "LTC", "DOT")

# base: (start price in USD, price decimals, qty decimals, OKX SWAP ctVal in base units)
# Illustrative values in the ranges the venues use; the simulator is self-consistent, not a copy.
ASSET_TABLE = {
    "BTC": (65000.0, 2, 5, 0.01),
    "ETH": (3500.0, 2, 4, 0.1),
    "SOL": (150.0, 2, 3, 1.0),
    "XRP": (0.6, 4, 1, 100.0),
    "DOGE": (0.15, 5, 0, 1000.0),
    "ADA": (0.45, 4, 1, 100.0),
    "AVAX": (35.0, 2, 2, 1.0),
    "LINK": (15.0, 3, 2, 1.0),
    "LTC": (80.0, 2, 3, 1.0),
    "DOT": (7.0, 3, 2, 1.0),
}
FALLBACK_ASSET = (100.0, 2, 3, 1.0)


class _Base(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class InstrumentSpec(_Base, frozen=True):
    """One instrument on one venue."""
    native: str                      # venue's native symbol: BTCUSDT, BTC-USDT-SWAP, BTC/USD ...
    base: str                        # base asset; instruments with the same base share a fair value
    quote: str                       # quote asset (USD and USDT share the fair value)
    kind: Literal["spot", "perp"] = "spot"
    ct_val: float = 0.0              # base units per contract when sizes are contracts (OKX SWAP); 0 = base units
    price_dp: int = 2                # price decimals; tick = 10**-price_dp
    qty_dp: int = 4                  # quantity decimals; lot = 10**-qty_dp (ignored when ct_val > 0)


class FaultConfig(_Base):
    """Faults injected on every connection of one venue. 0 / False disables each."""
    drop_every_s: float = 0.0        # abort the TCP connection (no close frame) N s after connect
    stall_every_s: float = 0.0       # every N s after connect ...
    stall_s: float = 0.0             # ... send nothing for T s (socket stays open; frames are lost)
    malformed_p: float = 0.0         # probability a data frame is replaced by a malformed one
    reorder_p: float = 0.0           # probability a data frame is held back and sent after the next one
    duplicate_p: float = 0.0         # probability a data frame is sent twice
    refuse_subscribe: bool = False   # reject every subscription with the venue's error frame
    refuse_symbols: list[str] = []   # reject these native symbols only
    notice_every_s: float = 0.0      # planned disconnect: notice frame N s after connect (venue shape) ...
    notice_lead_s: float = 1.0       # ... then a clean close this long after the notice
    halfopen_after_s: float = 0.0    # half-open: N s after connect the server goes silent AND
                                     # stops reading (pings unanswered, no close, no FIN) ...
    halfopen_hold_s: float = 30.0    # ... and drops the TCP connection this long after that
    refuse_connect_p: float = 0.0    # probability a websocket handshake is refused (HTTP 503)
    # depth-channel (L2 book) faults, each where the venue's sync protocol can show it:
    book_gap_p: float = 0.0          # a depth diff is not sent, its sequence number is used (coinbase,
                                     # bybit, okx)
    book_checksum_p: float = 0.0     # a depth message carries a wrong checksum (kraken, okx)
    book_early_diff_p: float = 0.0   # at (re)subscribe the first diff is sent before the snapshot
    book_duplicate_p: float = 0.0    # a depth diff is sent twice
    book_stale_snapshot_p: float = 0.0  # REST-snapshot venues (binance, gate): a depth snapshot
                                     # from a lagging replica, older than any buffered diff
    book_snapshot_fail_p: float = 0.0   # REST-snapshot venues: a depth snapshot request gets HTTP 503
    book_no_ws_snapshot: bool = False   # okx: no depth snapshot on the websocket (as OKX since
                                     # August 2026): books start from the REST snapshot


class Timeouts(_Base):
    """Protocol timers; None = the venue's default (its module's DEFAULTS)."""
    ping_interval_s: float | None = None       # server websocket ping frames (binance, gate)
    pong_timeout_s: float | None = None        # close when a server ping gets no pong in time
    idle_timeout_s: float | None = None        # close after this long without traffic (okx 30, bybit 600, coinbase 75)
    subscribe_deadline_s: float | None = None  # close when nothing was subscribed in time (coinbase 5)
    heartbeat_s: float | None = None           # application heartbeat period (coinbase, kraken)
    repush_s: float | None = None              # re-send an unchanged L1 snapshot after this idle time (bybit 3, okx 60)
    funding_push_s: float | None = None        # funding push period (okx funding-rate)
    lifetime_s: float | None = None            # close every connection after this long (binance 24 h)
    incoming_limit_per_s: float | None = None  # client messages per second before disconnect (binance 5 / 10)


class VenueSimConfig(_Base):
    """Price model and protocol behaviour of one venue."""
    rate_hz: float = 20.0            # quote updates per second over all the venue's instruments; 0 = as fast as possible
    instruments: list[InstrumentSpec] = []  # empty = derived from SimConfig.bases by the venue's naming convention
    latency_ms: float | None = None  # the venue sees the fair value from this long ago (None = venue default)
    noise_bps: float = 0.3           # sd of per-update mid noise
    half_spread_bps: float | None = None  # None = venue default (spot 1.0, perp 0.5)
    size_usd: float = 50_000.0       # mean top-of-book size, USD notional
    trade_p: float = 0.3             # probability an update carries a trade (trade-driven channels)
    book_levels: int = 20            # levels per side of the simulated depth book (coinbase level2, kraken book)
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    faults: FaultConfig = msgspec.field(default_factory=FaultConfig)


def _all_venues() -> dict[str, VenueSimConfig]:
    return {v: VenueSimConfig() for v in VENUES}


class SimConfig(_Base):
    """Everything the simulator needs. ``venues`` holds only the venues to serve."""
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 0                    # per-venue mode: venue i binds port + i (0 = every venue gets a free port)
    single_port: bool = False        # serve every venue on one port, routed by path (see protocols.route)
    bases: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_BASES))
    venues: dict[str, VenueSimConfig] = msgspec.field(default_factory=_all_venues)
    clock_start: Literal["first_subscribe", "launch"] = "first_subscribe"
    walk_step_ms: float = 10.0       # fair-value random-walk step
    vol_bps_per_sqrt_s: float = 2.0  # fair-value volatility
    dislocation_rate_hz: float = 0.005   # dislocations per second per (venue, instrument)
    dislocation_bps: float = 40.0    # mean |jump| of a dislocated quote (drawn in [0.5, 1.5] x this)
    dislocation_ms: float = 1500.0   # mean duration (drawn in [0.5, 1.5] x this)
    funding_mean: float = 0.0001     # mean funding rate per interval (1 bp)
    funding_venue_sd: float = 0.00005   # sd of each (venue, instrument)'s own funding level around the mean
    funding_sd: float = 0.00003      # stationary sd of the funding drift around that level
    funding_reversion_s: float = 600.0  # mean-reversion time of the funding drift
    funding_interval_h: int = 8
    max_rate_clock_hz: float = 10_000.0  # rate_hz == 0: simulated time advances 1/this s per update
    max_queue: int = 50_000          # frames queued for one client before it is dropped as a slow consumer

    def __post_init__(self):
        unknown = sorted(set(self.venues) - set(VENUES))
        if unknown:
            raise ValueError(f"venues: unknown venue {unknown[0]!r}; known: {', '.join(VENUES)}")
        for name, v in self.venues.items():
            if v.rate_hz < 0:
                raise ValueError(f"venues.{name}.rate_hz: must be >= 0")
            for f in ("malformed_p", "reorder_p", "duplicate_p", "refuse_connect_p",
                      "book_gap_p", "book_checksum_p", "book_early_diff_p", "book_duplicate_p",
                      "book_stale_snapshot_p", "book_snapshot_fail_p"):
                p = getattr(v.faults, f)
                if not 0.0 <= p <= 1.0:
                    raise ValueError(f"venues.{name}.faults.{f}: must be in [0, 1]")


def default_instruments(venue: str, bases=DEFAULT_BASES) -> list[InstrumentSpec]:
    """Instruments of ``venue`` for ``bases`` in the venue's native naming."""
    out: list[InstrumentSpec] = []
    for b in bases:
        b = b.upper()
        _p0, pdp, qdp, ctv = ASSET_TABLE.get(b, FALLBACK_ASSET)
        if venue in ("binance", "bybit-spot"):
            out.append(InstrumentSpec(native=f"{b}USDT", base=b, quote="USDT", price_dp=pdp, qty_dp=qdp))
        elif venue in ("binance-usdm", "bybit-linear"):
            out.append(InstrumentSpec(native=f"{b}USDT", base=b, quote="USDT", kind="perp",
                                      price_dp=pdp, qty_dp=qdp))
        elif venue == "okx":
            out.append(InstrumentSpec(native=f"{b}-USDT", base=b, quote="USDT", price_dp=pdp, qty_dp=qdp))
            out.append(InstrumentSpec(native=f"{b}-USDT-SWAP", base=b, quote="USDT", kind="perp",
                                      ct_val=ctv, price_dp=pdp, qty_dp=qdp))
        elif venue == "coinbase":
            out.append(InstrumentSpec(native=f"{b}-USD", base=b, quote="USD", price_dp=pdp, qty_dp=8))
        elif venue == "kraken":
            out.append(InstrumentSpec(native=f"{b}/USD", base=b, quote="USD", price_dp=pdp, qty_dp=8))
        elif venue == "gate":
            out.append(InstrumentSpec(native=f"{b}_USDT", base=b, quote="USDT", price_dp=pdp, qty_dp=qdp))
        else:
            raise ValueError(f"unknown venue {venue!r}")
    return out


def instruments_for(cfg: SimConfig, venue: str) -> list[InstrumentSpec]:
    v = cfg.venues[venue]
    return list(v.instruments) if v.instruments else default_instruments(venue, cfg.bases)


def make_config(venues=None, *, seed: int = 1, rate_hz: float | None = None, bases=None,
                timeouts: dict | None = None, faults: dict | None = None, **kw) -> SimConfig:
    """Convenience builder. ``timeouts`` / ``faults`` map venue -> dict of fields,
    e.g. ``faults={"okx": {"drop_every_s": 2}}``; other keywords go to SimConfig."""
    names = list(venues) if venues else list(VENUES)
    vcs = {}
    for n in names:
        vk: dict = {}
        if rate_hz is not None:
            vk["rate_hz"] = rate_hz
        if timeouts and n in timeouts:
            vk["timeouts"] = Timeouts(**timeouts[n])
        if faults and n in faults:
            vk["faults"] = FaultConfig(**faults[n])
        vcs[n] = VenueSimConfig(**vk)
    unknown = set(timeouts or {}) | set(faults or {})
    unknown -= set(names)
    if unknown:
        raise ValueError(f"timeouts/faults name a venue that is not served: {sorted(unknown)[0]!r}")
    if bases is not None:
        kw["bases"] = [b.upper() for b in bases]
    return SimConfig(seed=seed, venues=vcs, **kw)


def load_config(data: dict) -> SimConfig:
    """Decode a plain dict (from TOML/JSON) into SimConfig; errors name the offending key."""
    return msgspec.convert(data, SimConfig)
