"""The pipeline configuration: one TOML file decoded into msgspec Structs.

``load_config(path) -> Config`` (or ``parse_config(text)`` / ``config_from_dict(d)``).
Every problem raises ``ConfigError`` whose message starts with the offending key path,
e.g. ``venues.okx.taker_fee_bps: expected float, got str``; unknown keys are refused
(``venues.okx.takerfee: unknown key``), malformed TOML names the line. Semantic rules
(fees >= 0, capacities powers of two, instruments known, ...) name their key too.

Units: fees, spreads and thresholds in bps (1 bp = 0.0001); ages and periods in ms
unless the name says ``_s``; notionals in quote currency (USDT); quantities in base units.

Instruments and ids
-------------------
``instruments`` is the canonical list (``BASE/QUOTE``); the canonical instrument id of
``instruments[k]`` is ``k + 1`` (0 means "none"; ``arbpipe.symbols.REGISTERED`` starts with
the default list in the same order, so default ids agree everywhere). A *perp* market's
instrument id carries ``PERP_ID_BIT`` on top of the canonical id: ``BTC-USDT-SWAP`` on OKX
(canonical 1) is published as ``1 | PERP_ID_BIT``. ``Config.symbol_map(venue)`` lists, per
venue, every (native symbol, published instrument id, canonical id, canonical name,
market) the feed must use; ``symbols.SymbolMap.from_config(cfg)`` builds the feeds' map
from it.

Legs (how spot and perp markets of one venue are told apart)
------------------------------------------------------------
The detector keeps a top of book per (instrument, *leg*), where a leg is one market of
one venue: ``(venue_id, market)`` with market 0 = spot, 1 = perp. Most venues have one
market (``market = "spot"`` or ``"perp"``); a venue with a ``[venues.X.perp]`` table
(OKX: spot and SWAP on venue id 5) has two legs (``Config.legs()``, an
``arbpipe.legs.LegTable``). ``LegTable.leg_of(venue_id, instrument_id)`` resolves an update: the market is ``instrument_id & PERP_ID_BIT``; on a
single-market perp venue both values map to its one leg (a perp-only feed that forgets
the bit still lands right), on a two-market venue the bit decides, a spot-only venue
refuses perp ids. The feed therefore sets ``PERP_ID_BIT`` on the instrument id of every
perp-market update (quote, funding, per-instrument status) — mandatory for OKX SWAP.
``shm_layouts.records`` is unchanged.

One file on purpose (about 770 lines): the schema and the rules that validate it are read
together, key by key; split apart, every rule would point at a struct in another file. The
generic part, TOML tables to Structs with errors that name the key path, is in
``arbpipe.config_decode``.
"""
from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from typing import Literal

import msgspec

from arbpipe import symbols as _sym
from arbpipe.config_decode import ConfigError, convert, join_key
from arbpipe.legs import LegTable
from arbpipe.redact import redact_url
from arbpipe.sim import config as S  # the module only: the package imports nothing
from arbpipe.sim.config import VENUES as SIM_VENUES, FaultConfig

VENUE_IDS = _sym.VENUE_IDS       # fixed venue ids (binance=1 ... gate=8)
VENUE_NAMES = _sym.VENUE_NAMES
SPOT, PERP = 0, 1                # market codes (leg table columns)
PERP_ID_BIT = _sym.PERP_ID_BIT   # set on the instrument id of perp-market updates
CANONICAL_MASK = PERP_ID_BIT - 1
MAX_INSTRUMENTS = (1 << 23) - 1  # canonical ids stay below symbols.HASHED_ID_BASE

ROLES = ("simulator", "feed", "detector", "strategy", "dashboard", "persister", "bridge",
         "supervisor")
DEFAULT_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "config", "arbpipe.toml")

_INSTRUMENT_RE = re.compile(r"[A-Z0-9]{1,20}/[A-Z0-9]{1,20}")   # fullmatch: no "\n" after
_HOST_RE = re.compile(r"[A-Za-z0-9.:_-]+")
_INSTANCE_RE = re.compile(r"[A-Za-z0-9_-]{1,100}")    # an instance name (segment names: no '.')
BRIDGE_RINGS = ("opportunities", "journal")          # besides feed.<venue>: rings a bridge sends
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class _Base(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    pass


# ------------------------------------------------------------------ structs ------

class PerpMarket(_Base, kw_only=True):
    """The second (perp) market of a venue that serves spot and perp on one venue id."""
    taker_fee_bps: float
    maker_fee_bps: float
    funding_interval_s: int = 28800     # used when a funding update carries no interval
    instruments: list[str] | None = None  # pair subset (None: the venue's list)
    symbols: dict[str, str] = {}         # pair -> native symbol override


class VenueConfig(_Base, kw_only=True):
    """One venue (one feed process, one ``feed.<name>`` ring)."""
    enabled: bool = True
    market: Literal["spot", "perp"] = "spot"
    taker_fee_bps: float
    maker_fee_bps: float
    funding_interval_s: int = 0          # perp venues: default interval (s) when updates carry none
    url: str = ""                        # override of the websocket base url ("" = simulator / venue default)
    rest_url: str = ""                   # override of the REST base url (depth snapshots)
    depth: int = 20                      # L2 book: top N levels per side (0 = BBO only)
    watchdog_s: float = 30.0             # silent-symbol watchdog
    probe_idle_s: float = 10.0           # nothing received this long: websocket ping (0 = never)
    probe_timeout_s: float = 10.0        # no answer this long after it: half-open, reconnect
    instruments: list[str] | None = None  # pair subset this venue quotes (None = all)
    symbols: dict[str, str] = {}         # pair -> native symbol override
    lot_size: dict[str, float] = {}      # pair -> order size step, base units (both markets)
    min_notional: dict[str, float] = {}  # pair -> smallest order notional, quote ccy
    perp: PerpMarket | None = None       # second market on the same venue id (OKX SWAP)


class DetectorConfig(_Base, kw_only=True):
    """Detection rules (see arbpipe.detect.kernel for the formulas)."""
    min_net_bps: float = 1.0             # publish when net spread >= this
    max_quote_age_ms: float = 1000.0     # a leg quote older than this (vs the trigger) is stale
    max_plausible_spread_bps: float = 300.0  # gross above this is treated as bad data
    confidence_floor: float = 20.0       # 0..100
    max_notional: float = 50_000.0       # executable size cap: qty <= max_notional / buy_ask
    max_exec_qty: dict[str, float] = {}  # optional per-instrument cap, base units
    slippage_base_bps: float = 0.0       # allowance for the market moving during the order, bps
    slippage_depth_bps: float = 2.0      # legs without an L2 book only: + this x qty / top qty
    funding_horizon_s: float = 0.0       # funding carry over this horizon in net (0: shown only)
    usd_rates: dict[str, float] = {}     # quote currency -> USD (USD stablecoins default to 1)
    update_threshold_bps: float = 0.5    # re-publish (UPDATE) when net moves more than this
    persist_updates: int = 1             # qualifying evaluations needed before OPEN (<= 1: at once)
    persist_ms: float = 0.0              # and qualifying for at least this long (0: no wait)
    confidence_spread_bps: float = 10.0  # net spread giving the full spread component
    confidence_notional: float = 10_000.0  # executable notional giving the full depth component
    confidence_funding_bps: float = 5.0  # funding delta giving the full (or zero) funding component
    sweep_ms: float = 100.0              # staleness sweep period of open opportunities
    batch: int = 256                     # records popped per ring per kernel step
    max_records_per_call: int = 65_536   # bound on records between Python housekeeping
    idle_poll_ms: float = 250.0          # idle: the longest sleep on the feed rings' bell


class StrategyLimits(_Base, kw_only=True):
    """Paper-trading strategy: mode, pre-trade risk limits, simulated execution, balances.

    Money in quote currency (USDT), prices in quote per base unit, quantities in base
    units, times in ms. A limit of 0 disables that check (except the rate limits: 0
    orders allowed means no orders). Runtime changes: ``RISK_KEYS`` may be changed while
    running (Redis hash / ``arbpipe risk set``); the others need a restart.
    """
    mode: Literal["trade", "observe"] = "trade"  # observe: journal what it would trade, no fills
    kill_switch: bool = False            # start halted (``arbpipe kill-switch on|off`` flips it)
    min_net_bps: float = 2.0             # re-priced net spread needed to trade
    min_confidence: float = 40.0         # detector confidence needed to trade
    max_quote_age_ms: float = 2000.0     # live top of book older than this: STALE_QUOTE
    cooldown_ms: float = 500.0           # same (instrument, buy, sell) pair at most this often
    max_order_notional: float = 10_000.0     # per leg order, price x qty
    max_position_notional: float = 50_000.0  # |position| of one (instrument, venue market),
                                             # in-flight orders included (worst case)
    max_venue_notional: float = 150_000.0    # sum of |positions| on one venue, in-flight included
    max_gross_notional: float = 200_000.0    # sum of |positions| everywhere, in-flight included
    max_orders_per_s: int = 20           # orders sent in any rolling 1 s (both legs count)
    max_orders_per_min: int = 600        # and in any rolling 60 s
    fat_finger_bps: float = 100.0        # order price further than this from the venue mid
    daily_loss_limit: float = 1_000.0    # net PnL (realized + unrealized - fees) since 00:00 UTC
    max_drawdown: float = 2_000.0        # net PnL below its running peak by more than this
    max_open_orders: int = 8             # pairs in flight at once
    latency_ms: float = 2.0              # simulated order-to-fill latency
    slippage_bps: float = 1.0            # fills this much worse than the quote
    partial_fills: bool = True           # fill at most the top-of-book quantity at fill time
    leverage: float = 5.0                # perp legs reserve notional / leverage of quote
    starting_balance: float = 100_000.0  # quote currency held on every venue at start
    base_balances: dict[str, float] = {}  # base asset -> units held on every spot venue at start
    # -- the trade's life (arbpipe.trading.depth / inventory / exits / funding) --
    limit_tolerance_bps: float = 0.0     # IOC limit = worst acceptable level price -/+ this
    exit_net_bps: float = 0.0            # perp pairs: exit when closing costs <= this (bps of mid)
    max_hold_s: float = 0.0              # perp pairs: exit after this long (0 = no limit)
    stop_basis_bps: float = 0.0          # perp pairs: exit when the basis widened this much (0 = off)
    kill_switch_flatten: bool = False    # kill switch on: also exit every open perp pair
    flatten_on_stop: bool = False        # shutdown: exit every open perp pair first
    inventory_bands: dict[str, list[float]] = {}  # asset -> [low, target, high] per spot venue
    withdrawal_fee: dict[str, dict[str, float]] = {}  # venue -> asset -> fee, asset units
    transfer_delay_s: float = 600.0      # simulated transfer time between venues
    equity_sample_s: float = 60.0        # equity curve sample period (0 = off)


RISK_KEYS = ("min_net_bps", "min_confidence", "max_quote_age_ms", "cooldown_ms",
             "max_order_notional", "max_position_notional", "max_venue_notional",
             "max_gross_notional", "max_orders_per_s", "max_orders_per_min", "fat_finger_bps",
             "daily_loss_limit", "max_drawdown", "max_open_orders", "slippage_bps",
             "latency_ms")


class RingSpec(_Base, kw_only=True):
    capacity: int
    policy: Literal["block", "drop", "overwrite"] = "drop"


def _ring(cap, policy):
    return msgspec.field(default_factory=lambda: RingSpec(capacity=cap, policy=policy))


class RingsConfig(_Base, kw_only=True):
    """Capacity (records, power of two) and full policy per ring kind."""
    feed: RingSpec = _ring(65_536, "drop")           # SPSC feed.<venue> -> detector
    opportunities: RingSpec = _ring(65_536, "overwrite")  # broadcast detector -> readers
    trades: RingSpec = _ring(16_384, "drop")         # strategy -> persister
    events: RingSpec = _ring(16_384, "drop")         # MPMC any -> persister


class RedisConfig(_Base, kw_only=True):
    """Redis (cold path: persister streams, top-of-book hash, runtime risk parameters).

    ``url`` "" = an embedded private redis-server when one is installed, else no Redis;
    ``$ARBPIPE_REDIS_URL`` overrides it. Keys are ``<stream_prefix>:<instance>:...``.
    """
    url: str = ""                        # redis://, rediss:// (TLS) or unix:// url
    stream_prefix: str = "arbpipe"
    stream_maxlen: int = 100_000         # XADD MAXLEN ~ per stream
    snapshot_interval_ms: float = 1000.0  # top-of-book hash refresh period
    buffer_records: int = 100_000        # persister backlog bound per stream (beyond: dropped, counted)
    batch: int = 512                     # XADDs per pipelined round trip
    risk_poll_ms: float = 1000.0         # strategy polls the risk hash this often
    embedded_persist: bool = False       # embedded server keeps <run dir>/redis-dump.rdb across runs


class SimulatorConfig(_Base, kw_only=True):
    enabled: bool = True                 # default run: venues served by the local simulator
    host: str = "127.0.0.1"
    port: int = 0                        # 0 = free ports
    seed: int = 1
    rate_hz: float = 20.0                # quote updates/s per venue
    dislocation_rate_hz: float = 0.005   # per (venue, instrument)
    dislocation_bps: float = 40.0
    dislocation_ms: float = 1500.0
    # Injected venue faults, per venue: [simulator.faults.<venue>] with the fields of
    # arbpipe.sim.config.FaultConfig (drop_every_s, stall_every_s/stall_s, halfopen_after_s,
    # refuse_connect_p, malformed_p, reorder_p, duplicate_p, refuse_subscribe,
    # refuse_symbols, notice_every_s/notice_lead_s). Empty = a well-behaved market.
    faults: dict[str, dict] = {}


class DashboardConfig(_Base, kw_only=True):
    """The dashboard process (``procs.dashboard``) and its HTTP endpoint (metrics, health,
    status, control: ``arbpipe.ops.http``)."""
    metrics_enabled: bool = True
    metrics_host: str = "127.0.0.1"      # bind address of the HTTP endpoint (local only by default)
    metrics_port: int = 9464             # 0 = a free port (written into the dashboard.state blob)
    control_token_file: str = ""         # 0600 file with the bearer token of the POST endpoints
    health_grace_s: float = 10.0         # a role restarting this long makes /healthz fail
    refresh_hz: float = 10.0             # view publications per second
    closed_keep: int = 200               # recently closed opportunities kept in the view


class SupervisorConfig(_Base, kw_only=True):
    """How `arbpipe up` starts the roles (``arbpipe.ops.supervisor``)."""
    fork_server: bool = True             # fork the Python roles from one preloaded process
    #                                      (arbpipe.ops.forkserver): shared imports, less memory


class BridgeConfig(_Base, kw_only=True):
    """Rings of one tree copied to another over Redis Streams (``arbpipe.bridge``; README
    "Two hosts"). Out side (process ``bridge.out``): ``out_rings`` of this tree -> streams
    ``<redis.stream_prefix>:<instance>:ring:<ring>``. In side (``bridge.in``): the streams of
    ``remote_instance`` -> local rings: ``feed.<venue>`` of every ``remote_venues`` entry (this
    tree runs no feed handler and no simulator for them but creates their rings), plus
    ``in_streams`` (``opportunities``, ``journal``: into local broadcast rings
    ``bridge.<ring>``). Lists are checked even while ``enabled`` is false; they take effect
    only when it is true.
    """
    enabled: bool = False
    url: str = ""                        # "" = the [redis] resolution; $ARBPIPE_BRIDGE_URL overrides
    out_rings: list[str] = []            # feed.<venue> (a local venue), opportunities, journal
    remote_instance: str = ""            # the instance whose streams the in side reads
    remote_venues: list[str] = []        # enabled venues fed by the bridge, not by a local feed
    in_streams: list[str] = []           # more remote rings to read: opportunities, journal
                                         # (feed.<venue> of a remote venue is always read)
    maxlen: int = 100_000                # XADD MAXLEN ~ per stream
    batch: int = 512                     # records per pipelined XADD round, XREAD COUNT
    max_lag_ms: float = 1000.0           # link down or behind more than this: remote venues STALE
    heartbeat_ms: float = 250.0          # out side: heartbeat in the meta hash this often
    block_ms: int = 100                  # in side: XREAD BLOCK (the link is judged at least this often)
    idle_poll_ms: float = 1.0            # out side: an idle ring is peeked again after this
    start: Literal["newest", "oldest"] = "newest"   # in side with no saved cursor: where to begin


class Config(_Base, kw_only=True):
    instruments: list[str] = []
    venues: dict[str, VenueConfig] = {}
    detector: DetectorConfig = msgspec.field(default_factory=DetectorConfig)
    strategy: StrategyLimits = msgspec.field(default_factory=StrategyLimits)
    rings: RingsConfig = msgspec.field(default_factory=RingsConfig)
    cpu: dict[str, list[int] | str | int] = {}   # role -> cores ("auto": supervisor decides); profile; realtime_priority
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    simulator: SimulatorConfig = msgspec.field(default_factory=SimulatorConfig)
    dashboard: DashboardConfig = msgspec.field(default_factory=DashboardConfig)
    bridge: BridgeConfig = msgspec.field(default_factory=BridgeConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)

    # -- derived views ---------------------------------------------------------
    def instrument_ids(self) -> dict[str, int]:
        """canonical name -> canonical id (1-based position in ``instruments``)."""
        return {name: k + 1 for k, name in enumerate(self.instruments)}

    def instrument_name(self, instrument_id: int) -> str | None:
        """Canonical name of a (canonical or perp-bit) instrument id."""
        k = (int(instrument_id) & CANONICAL_MASK) - 1
        return self.instruments[k] if 0 <= k < len(self.instruments) else None

    def enabled_venues(self) -> dict[str, VenueConfig]:
        return {n: v for n, v in self.venues.items() if v.enabled}

    def book_depth(self) -> int:
        """N of the detector's and the strategy's L2 books: the deepest ``[venues.<v>]
        depth`` of an enabled venue (0: top of book only)."""
        return max([v.depth for v in self.enabled_venues().values()] + [0])

    def remote_venues(self) -> list[str]:
        """Enabled venues whose ``feed.<venue>`` ring the bridge fills (``[bridge]
        remote_venues`` while the bridge is enabled): no feed handler, no simulator here."""
        return list(self.bridge.remote_venues) if self.bridge.enabled else []

    def local_venues(self) -> list[str]:
        """Enabled venues served by a feed handler (or replay) of this tree."""
        remote = set(self.remote_venues())
        return [v for v in self.enabled_venues() if v not in remote]

    def bridge_in_rings(self) -> list[str]:
        """Remote rings the bridge's in side reads: ``feed.<venue>`` of every remote venue,
        then ``[bridge] in_streams`` (empty while the bridge is disabled)."""
        if not self.bridge.enabled:
            return []
        out = [f"feed.{v}" for v in self.bridge.remote_venues]
        return out + [r for r in self.bridge.in_streams if r not in out]

    @staticmethod
    def venue_id(name: str) -> int:
        return VENUE_IDS[name]

    @staticmethod
    def venue_name(venue_id: int) -> str | None:
        return VENUE_NAMES.get(int(venue_id))

    def symbol_map(self, venue: str) -> list["VenueInstrument"]:
        """Every instrument the feed of ``venue`` subscribes: native symbol, the id it must
        publish (canonical id, | PERP_ID_BIT on the perp market) and the market."""
        v = self.venues[venue]
        ids = self.instrument_ids()
        out = []
        markets = [(v.market == "perp", v.instruments, v.symbols)]
        if v.perp is not None:
            markets.append((True, v.perp.instruments if v.perp.instruments is not None
                            else v.instruments, v.perp.symbols))
        for perp, subset, overrides in markets:
            for name in (subset if subset is not None else self.instruments):
                native = overrides.get(name) or _sym.native_symbol(venue, name, perp)
                cid = ids[name]
                out.append(VenueInstrument(native, cid | (PERP_ID_BIT if perp else 0), cid,
                                           name, "perp" if perp else "spot"))
        return out

    def symbols(self) -> "_sym.SymbolMap":
        """The feeds' SymbolMap of every enabled venue (``SymbolMap.from_config``)."""
        return _sym.SymbolMap.from_config(self)

    def legs(self) -> LegTable:
        return LegTable.from_config(self)


class VenueInstrument(typing.NamedTuple):
    native: str          # venue's native symbol
    instrument_id: int   # what the feed publishes in MarketUpdate.instrument_id
    canonical_id: int    # canonical id (1-based)
    canonical: str       # "BTC/USDT"
    market: str          # "spot" | "perp"


# ------------------------------------------------------------------ semantics ----

def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def _finite(check, value, key, lo=None, hi=None, lo_open=False):
    check(math.isfinite(value), key, f"must be a finite number, got {value!r}")
    if lo is not None:
        if lo_open:
            check(value > lo, key, f"must be > {lo}, got {value!r}")
        else:
            check(value >= lo, key, f"must be >= {lo}, got {value!r}")
    if hi is not None:
        check(value <= hi, key, f"must be <= {hi}, got {value!r}")


def _int64(c, obj, key: str) -> None:
    """Every integer of the decoded config fits 64 bits (TOML integers are signed 64-bit;
    tomllib and msgspec take bigger ones, which numpy and the shared-memory records
    cannot hold). ``simulator.faults`` is left raw here: ``_sim_faults`` decodes it."""
    if isinstance(obj, msgspec.Struct):
        for f in obj.__struct_fields__:
            if not (isinstance(obj, SimulatorConfig) and f == "faults"):
                _int64(c, getattr(obj, f), join_key(key, f))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _int64(c, v, join_key(key, k))
    elif isinstance(obj, list):
        for j, v in enumerate(obj):
            _int64(c, v, f"{key}[{j}]")
    elif type(obj) is int:
        c(INT64_MIN <= obj <= INT64_MAX, key, f"must fit a 64-bit signed integer, got {obj}")


def _unique_natives(c, cfg: Config, name: str, v: VenueConfig) -> None:
    """Two instruments of one venue never share a native symbol (the feeds' SymbolMap
    refuses it): the later one, or the ``symbols`` override that makes the clash, is named."""
    ids = cfg.instrument_ids()
    seen: dict[str, VenueInstrument] = {}
    for vi in cfg.symbol_map(name):
        prev = seen.setdefault(vi.native, vi)
        if prev is vi or (prev.canonical, prev.market) == (vi.canonical, vi.market):
            continue                      # the same instrument listed twice in a subset
        blame = None
        for x in (vi, prev):
            second = x.market == "perp" and v.perp is not None
            if x.canonical in (v.perp.symbols if second else v.symbols):
                blame = f"venues.{name}{'.perp' if second else ''}.symbols.{x.canonical}"
                break
        c(False, blame or f"instruments[{ids[vi.canonical] - 1}]",
          f"{name} native symbol {vi.native!r} would name both {prev.canonical} "
          f"{prev.market} and {vi.canonical} {vi.market}")


def _validate_trade_life(c, cfg: Config) -> None:
    """``[strategy]`` keys of the trade's life: IOC limits, exits, inventory, transfers."""
    s, k = cfg.strategy, "strategy"
    for f in ("limit_tolerance_bps", "max_hold_s", "stop_basis_bps", "transfer_delay_s",
              "equity_sample_s"):
        _finite(c, getattr(s, f), f"{k}.{f}", 0.0)
    _finite(c, s.exit_net_bps, f"{k}.exit_net_bps", -10_000.0, 10_000.0)
    for asset, band in s.inventory_bands.items():
        key = f"{k}.inventory_bands.{asset}"
        c(bool(re.fullmatch(r"[A-Z0-9]{1,20}", asset)), key, "expected an upper-case asset name")
        c(len(band) == 3, key, f"expected [low, target, high], got {band!r}")
        if len(band) == 3:
            c(all(math.isfinite(x) and x >= 0.0 for x in band), key,
              f"expected finite numbers >= 0, got {band!r}")
            c(band[0] <= band[1] <= band[2], key, f"expected low <= target <= high, got {band!r}")
    for venue, fees in s.withdrawal_fee.items():
        key = f"{k}.withdrawal_fee.{venue}"
        c(venue in cfg.venues, key, "unknown venue (not in venues)")
        for asset, x in fees.items():
            c(bool(re.fullmatch(r"[A-Z0-9]{1,20}", asset)), f"{key}.{asset}",
              "expected an upper-case asset name")
            _finite(c, x, f"{key}.{asset}", 0.0)


def validate_config(cfg: Config) -> None:
    c = _check
    _int64(c, cfg, "")
    c(len(cfg.instruments) > 0, "instruments", "at least one instrument is needed")
    seen = set()
    for k, name in enumerate(cfg.instruments):
        key = f"instruments[{k}]"
        c(bool(_INSTRUMENT_RE.fullmatch(name)), key,
          f"expected canonical 'BASE/QUOTE' in upper case, got {name!r}")
        c(name not in seen, key, f"duplicate instrument {name!r}")
        seen.add(name)

    def known(lst, key):
        for j, name in enumerate(lst):
            c(name in seen, f"{key}[{j}]", f"unknown instrument {name!r} (not in instruments)")

    c(any(v.enabled for v in cfg.venues.values()), "venues", "no venue is enabled")
    for name, v in cfg.venues.items():
        key = f"venues.{name}"
        c(name in VENUE_IDS, key, f"unknown venue; known: {', '.join(VENUE_IDS)}")
        _finite(c, v.taker_fee_bps, f"{key}.taker_fee_bps", 0.0, 1000.0)
        _finite(c, v.maker_fee_bps, f"{key}.maker_fee_bps", -1000.0, 1000.0)
        c(v.funding_interval_s >= 0, f"{key}.funding_interval_s", "must be >= 0")
        if v.market == "perp":
            c(v.funding_interval_s > 0, f"{key}.funding_interval_s",
              "must be > 0 for a perp venue")
            c(v.perp is None, f"{key}.perp", "a perp venue has no second perp market")
        _finite(c, v.watchdog_s, f"{key}.watchdog_s", 0.0, lo_open=True)
        _finite(c, v.probe_idle_s, f"{key}.probe_idle_s", 0.0)
        _finite(c, v.probe_timeout_s, f"{key}.probe_timeout_s", 0.0, lo_open=True)
        c(v.url == "" or bool(re.match(r"^wss?://", v.url)), f"{key}.url",
          f"expected ws:// or wss:// url, got {v.url!r}")
        c(v.rest_url == "" or bool(re.match(r"^https?://", v.rest_url)), f"{key}.rest_url",
          f"expected http:// or https:// url, got {v.rest_url!r}")
        c(0 <= v.depth <= 1000, f"{key}.depth", f"must be in 0..1000 (0 = BBO only), got {v.depth}")
        if v.instruments is not None:
            known(v.instruments, f"{key}.instruments")
        for canon, native in v.symbols.items():
            c(canon in seen, f"{key}.symbols.{canon}", "unknown instrument (not in instruments)")
            c(bool(native.strip()), f"{key}.symbols.{canon}", "empty native symbol")
        for tname, lo_open in (("lot_size", True), ("min_notional", False)):
            for canon, x in getattr(v, tname).items():
                c(canon in seen, f"{key}.{tname}.{canon}", "unknown instrument (not in instruments)")
                _finite(c, x, f"{key}.{tname}.{canon}", 0.0, lo_open=lo_open)
        if v.perp is not None:
            p, pk = v.perp, f"{key}.perp"
            _finite(c, p.taker_fee_bps, f"{pk}.taker_fee_bps", 0.0, 1000.0)
            _finite(c, p.maker_fee_bps, f"{pk}.maker_fee_bps", -1000.0, 1000.0)
            c(p.funding_interval_s > 0, f"{pk}.funding_interval_s", "must be > 0")
            if p.instruments is not None:
                known(p.instruments, f"{pk}.instruments")
            for canon, native in p.symbols.items():
                c(canon in seen, f"{pk}.symbols.{canon}", "unknown instrument (not in instruments)")
                c(bool(native.strip()), f"{pk}.symbols.{canon}", "empty native symbol")
        try:
            cfg.symbol_map(name)
        except _sym.SymbolError as e:
            key2 = f"{key}.perp" if v.perp is not None and "spot only" in str(e) else \
                f"{key}.market"
            c(False, key2, str(e))
        _unique_natives(c, cfg, name, v)
    d, k = cfg.detector, "detector"
    _finite(c, d.min_net_bps, f"{k}.min_net_bps", -1000.0, 10_000.0)
    _finite(c, d.max_quote_age_ms, f"{k}.max_quote_age_ms", 0.0, lo_open=True)
    _finite(c, d.max_plausible_spread_bps, f"{k}.max_plausible_spread_bps", 0.0, lo_open=True)
    _finite(c, d.confidence_floor, f"{k}.confidence_floor", 0.0, 100.0)
    _finite(c, d.max_notional, f"{k}.max_notional", 0.0, lo_open=True)
    for canon, q in d.max_exec_qty.items():
        c(canon in seen, f"{k}.max_exec_qty.{canon}", "unknown instrument (not in instruments)")
        _finite(c, q, f"{k}.max_exec_qty.{canon}", 0.0, lo_open=True)
    _finite(c, d.slippage_base_bps, f"{k}.slippage_base_bps", 0.0)
    _finite(c, d.slippage_depth_bps, f"{k}.slippage_depth_bps", 0.0)
    _finite(c, d.funding_horizon_s, f"{k}.funding_horizon_s", 0.0, 366 * 86400.0)
    for ccy, rate in d.usd_rates.items():
        c(bool(re.fullmatch(r"[A-Z0-9]{1,20}", ccy)), f"{k}.usd_rates.{ccy}",
          "expected an upper-case currency name")
        _finite(c, rate, f"{k}.usd_rates.{ccy}", 0.0, lo_open=True)
    _finite(c, d.update_threshold_bps, f"{k}.update_threshold_bps", 0.0)
    c(d.persist_updates >= 0, f"{k}.persist_updates", "must be >= 0")
    _finite(c, d.persist_ms, f"{k}.persist_ms", 0.0)
    _finite(c, d.confidence_spread_bps, f"{k}.confidence_spread_bps", 0.0, lo_open=True)
    _finite(c, d.confidence_notional, f"{k}.confidence_notional", 0.0, lo_open=True)
    _finite(c, d.confidence_funding_bps, f"{k}.confidence_funding_bps", 0.0, lo_open=True)
    _finite(c, d.sweep_ms, f"{k}.sweep_ms", 0.0, lo_open=True)
    c(1 <= d.batch <= 65536, f"{k}.batch", f"must be in 1..65536, got {d.batch}")
    c(d.max_records_per_call >= d.batch, f"{k}.max_records_per_call",
      f"must be >= detector.batch ({d.batch})")
    _finite(c, d.idle_poll_ms, f"{k}.idle_poll_ms", 0.0, 10_000.0, lo_open=True)
    s, k = cfg.strategy, "strategy"
    for f in ("max_order_notional", "max_position_notional", "max_venue_notional",
              "max_gross_notional", "daily_loss_limit", "max_drawdown", "cooldown_ms",
              "starting_balance", "max_quote_age_ms", "fat_finger_bps", "latency_ms",
              "slippage_bps"):
        _finite(c, getattr(s, f), f"{k}.{f}", 0.0)
    _finite(c, s.leverage, f"{k}.leverage", 0.0, 1000.0, lo_open=True)
    c(s.max_orders_per_s >= 0, f"{k}.max_orders_per_s", "must be >= 0")
    c(s.max_orders_per_min >= 0, f"{k}.max_orders_per_min", "must be >= 0")
    for asset, q in s.base_balances.items():
        c(bool(re.fullmatch(r"[A-Z0-9]{1,20}", asset)), f"{k}.base_balances.{asset}",
          "expected an upper-case asset name")
        _finite(c, q, f"{k}.base_balances.{asset}", 0.0)
    _finite(c, s.min_net_bps, f"{k}.min_net_bps", -1000.0, 10_000.0)
    _finite(c, s.min_confidence, f"{k}.min_confidence", 0.0, 100.0)
    c(s.max_open_orders >= 0, f"{k}.max_open_orders", "must be >= 0")
    c(s.max_order_notional <= s.max_position_notional or s.max_position_notional == 0,
      f"{k}.max_order_notional", "must be <= strategy.max_position_notional")
    _validate_trade_life(c, cfg)
    for rname in RingsConfig.__struct_fields__:
        r, rk = getattr(cfg.rings, rname), f"rings.{rname}"
        c(r.capacity >= 2 and r.capacity & (r.capacity - 1) == 0, f"{rk}.capacity",
          f"must be a power of two >= 2, got {r.capacity}")
        c(r.capacity <= 1 << 24, f"{rk}.capacity", f"must be <= {1 << 24}, got {r.capacity}")
        if rname == "opportunities":
            c(r.policy == "overwrite", f"{rk}.policy",
              "a broadcast ring never blocks: policy must be 'overwrite'")
        else:
            c(r.policy != "overwrite", f"{rk}.policy", "'overwrite' is for broadcast rings only")
    for role, cores in cfg.cpu.items():
        if role == "profile":       # [cpu] profile: how hot roles idle (arbpipe.transport.idle)
            c(cores in CPU_PROFILES, "cpu.profile",
              f"expected one of {', '.join(map(repr, CPU_PROFILES))}, got {cores!r}")
            continue
        if role == "realtime_priority":   # SCHED_FIFO priority of the sleeping hot roles
            c(type(cores) is int and 0 <= cores <= 99, "cpu.realtime_priority",
              f"expected an integer 0 (off) to 99, got {cores!r}")
            continue
        c(role in ROLES, f"cpu.{role}", f"unknown role; known: {', '.join(ROLES)}")
        c(cores == "auto" or isinstance(cores, list), f"cpu.{role}",
          f"expected \"auto\" or a list of cores, got {cores!r}")
        if cores != "auto":
            c(len(cores) > 0, f"cpu.{role}", "empty core list (use \"auto\")")
            for j, core in enumerate(cores):
                c(core >= 0, f"cpu.{role}[{j}]", f"must be >= 0, got {core}")
    rd = cfg.redis
    if rd.url:
        c(bool(re.match(r"^(redis|rediss|unix)://", rd.url)), "redis.url",
          f"expected redis://, rediss:// or unix:// url, got {redact_url(rd.url)!r}")
    c(bool(re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", rd.stream_prefix)), "redis.stream_prefix",
      "expected 1-64 characters of A-Z a-z 0-9 _ . -")
    c(rd.stream_maxlen > 0, "redis.stream_maxlen", "must be > 0")
    _finite(c, rd.snapshot_interval_ms, "redis.snapshot_interval_ms", 0.0, lo_open=True)
    c(1 <= rd.buffer_records <= 1 << 24, "redis.buffer_records", "must be in 1..16777216")
    c(1 <= rd.batch <= 65536, "redis.batch", "must be in 1..65536")
    _finite(c, rd.risk_poll_ms, "redis.risk_poll_ms", 0.0, lo_open=True)
    sim, k = cfg.simulator, "simulator"
    c(bool(_HOST_RE.fullmatch(sim.host)), f"{k}.host",
      f"expected an address or host name, got {sim.host!r}")
    c(0 <= sim.port < 65536, f"{k}.port", f"must be in 0..65535, got {sim.port}")
    for f in ("rate_hz", "dislocation_rate_hz", "dislocation_bps", "dislocation_ms"):
        _finite(c, getattr(sim, f), f"{k}.{f}", 0.0)
    if sim.faults:
        _sim_faults(cfg, c)
    db, k = cfg.dashboard, "dashboard"
    c(0 <= db.metrics_port < 65536, f"{k}.metrics_port",
      f"must be in 0..65535 (0 = a free port), got {db.metrics_port}")
    c(bool(_HOST_RE.fullmatch(db.metrics_host)), f"{k}.metrics_host",
      f"expected an address or host name, got {db.metrics_host!r}")
    _finite(c, db.refresh_hz, f"{k}.refresh_hz", 1.0, 100.0)
    c(1 <= db.closed_keep <= 5000, f"{k}.closed_keep",
      f"must be in 1..5000, got {db.closed_keep}")
    _finite(c, db.health_grace_s, f"{k}.health_grace_s", 0.0, 3600.0)
    _bridge(cfg, c)


def _bridge(cfg: Config, c) -> None:
    """``[bridge]``: every key named by its own refusal (lists: the offending element)."""
    b, k = cfg.bridge, "bridge"
    if b.url:
        c(bool(re.match(r"^(redis|rediss|unix)://", b.url)), f"{k}.url",
          f"expected redis://, rediss:// or unix:// url, got {redact_url(b.url)!r}")
    enabled = cfg.enabled_venues()
    seen: set[str] = set()
    for j, v in enumerate(b.remote_venues):
        key = f"{k}.remote_venues[{j}]"
        c(v in VENUE_IDS, key, f"unknown venue {v!r}; known: {', '.join(VENUE_IDS)}")
        c(v in enabled, key, f"venue {v!r} is not enabled (venues.{v})")
        c(v not in seen, key, f"duplicate venue {v!r}")
        seen.add(v)
    remote = seen
    out_seen: set[str] = set()
    for j, r in enumerate(b.out_rings):
        key = f"{k}.out_rings[{j}]"
        venue = r[len("feed."):] if r.startswith("feed.") else None
        c(r in BRIDGE_RINGS or (venue is not None and venue in enabled), key,
          f"expected feed.<enabled venue>, {' or '.join(BRIDGE_RINGS)}, got {r!r}")
        c(venue not in remote, key, f"venue {venue!r} is remote (bridge.remote_venues): "
          f"its ring is filled by this bridge and is not sent back")
        c(r not in out_seen, key, f"duplicate ring {r!r}")
        out_seen.add(r)
    if b.remote_instance:
        c(bool(_INSTANCE_RE.fullmatch(b.remote_instance)), f"{k}.remote_instance",
          f"expected an instance name (letters, digits, '_', '-'), got {b.remote_instance!r}")
    in_seen: set[str] = set()
    for j, r in enumerate(b.in_streams):
        key = f"{k}.in_streams[{j}]"
        venue = r[len("feed."):] if r.startswith("feed.") else None
        c(r in BRIDGE_RINGS or (venue is not None and venue in remote), key,
          f"expected {' or '.join(BRIDGE_RINGS)} or feed.<a venue of bridge.remote_venues>, "
          f"got {r!r}")
        c(r not in in_seen, key, f"duplicate ring {r!r}")
        in_seen.add(r)
    if b.enabled and (b.remote_venues or b.in_streams):
        c(bool(b.remote_instance), f"{k}.remote_instance",
          "required: the instance whose streams bridge.remote_venues / in_streams read")
    c(b.maxlen > 0, f"{k}.maxlen", "must be > 0")
    c(1 <= b.batch <= 65536, f"{k}.batch", f"must be in 1..65536, got {b.batch}")
    _finite(c, b.heartbeat_ms, f"{k}.heartbeat_ms", 0.0, 60_000.0, lo_open=True)
    _finite(c, b.max_lag_ms, f"{k}.max_lag_ms", 0.0, lo_open=True)
    c(b.max_lag_ms > b.heartbeat_ms, f"{k}.max_lag_ms",
      f"must be > bridge.heartbeat_ms ({b.heartbeat_ms:g}): the link is judged by heartbeats")
    c(1 <= b.block_ms <= 1000, f"{k}.block_ms", f"must be in 1..1000, got {b.block_ms}")
    _finite(c, b.idle_poll_ms, f"{k}.idle_poll_ms", 0.0, 1000.0, lo_open=True)


def _sim_faults(cfg: Config, c) -> dict:
    """``simulator.faults`` decoded into ``arbpipe.sim.config.FaultConfig`` per venue (the
    checks name the offending key)."""
    served = [v for v in cfg.local_venues() if v in SIM_VENUES]
    out = {}
    for venue, table in cfg.simulator.faults.items():
        key = f"simulator.faults.{venue}"
        c(venue in served, key, f"not a venue the simulator serves here; served: {', '.join(served)}")
        f = convert(table, FaultConfig, key)
        for name in FaultConfig.__struct_fields__:
            v = getattr(f, name)
            if isinstance(v, float):
                hi = 1.0 if name.endswith("_p") else None
                _finite(c, v, f"{key}.{name}", 0.0, hi)
        c(all(isinstance(x, str) and x for x in f.refuse_symbols), f"{key}.refuse_symbols",
          "expected native symbol strings")
        out[venue] = f
    return out


# ------------------------------------------------------------------ entry points -

def config_from_dict(data: dict) -> Config:
    """Decode and validate a plain dict (as TOML gives it)."""
    venues = data.get("venues") if isinstance(data, dict) else None
    for name in venues if isinstance(venues, dict) else ():
        # before decoding: an unknown venue is named as such, not by a key missing inside
        _check(name in VENUE_IDS, f"venues.{name}",
               f"unknown venue; known: {', '.join(VENUE_IDS)}")
    cfg = convert(data, Config, "")
    validate_config(cfg)
    return cfg


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    return config_from_dict(data)


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load ``path`` (default ``config/arbpipe.toml``); raises ConfigError naming the key."""
    path = os.fspath(path) if path is not None else DEFAULT_PATH
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte {e.start})") from None
    return parse_config(text, path)


CPU_SETTINGS = ("profile", "realtime_priority")     # [cpu] keys that are not roles


def cpu_plan(cfg: Config) -> dict[str, list[int]]:
    """Explicit per-role core lists (roles set to "auto" or absent are left out)."""
    return {r: list(c) for r, c in cfg.cpu.items() if r not in CPU_SETTINGS and c != "auto"}


CPU_PROFILES = ("default", "low-latency")


def cpu_profile(cfg: Config) -> str:
    """``[cpu] profile``: "default" (nothing spins) or "low-latency" (hot roles spin)."""
    return str(cfg.cpu.get("profile", "default"))


def cpu_realtime(cfg: Config) -> int:
    """``[cpu] realtime_priority``: SCHED_FIFO priority of the hot roles that sleep (0: off)."""
    return int(cfg.cpu.get("realtime_priority", 0))


def to_sim_config(cfg: Config):
    """The simulator's config (``arbpipe.sim.config.SimConfig``) serving exactly the native
    symbols of ``cfg``'s enabled built-in venues, with ``cfg.simulator``'s settings."""
    venues = {}
    for name in cfg.local_venues():      # a remote venue (bridge) is served by the other tree
        if name not in S.VENUES:
            continue
        specs = []
        for vi in cfg.symbol_map(name):
            base, quote = vi.canonical.split("/")
            _p0, pdp, qdp, _ctv = S.ASSET_TABLE.get(base, S.FALLBACK_ASSET)
            perp = vi.market == "perp"
            ct = _sym.OKX_SWAP_CT_VAL.get(base, 1.0) if perp and name == "okx" else 0.0
            specs.append(S.InstrumentSpec(native=vi.native, base=base, quote=quote,
                                          kind="perp" if perp else "spot", ct_val=ct,
                                          price_dp=pdp, qty_dp=qdp))
        venues[name] = S.VenueSimConfig(rate_hz=cfg.simulator.rate_hz, instruments=specs)
    for name, faults in _sim_faults(cfg, _check).items():
        venues[name] = msgspec.structs.replace(venues[name], faults=faults)
    sc = cfg.simulator
    return S.SimConfig(seed=sc.seed, host=sc.host, port=sc.port, venues=venues,
                       bases=sorted({i.split("/")[0] for i in cfg.instruments}),
                       dislocation_rate_hz=sc.dislocation_rate_hz,
                       dislocation_bps=sc.dislocation_bps, dislocation_ms=sc.dislocation_ms)
