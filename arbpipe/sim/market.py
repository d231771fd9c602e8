"""The simulator's price model: deterministic in the seed, cheap to query.

Time here is *simulated* time in ms since the market clock started. A venue's update
``n`` happens at simulated time ``(n + 1) * dt`` with ``dt = 1000 / rate_hz`` ms, and the
server sends it at that wall time after the clock started; so the sequence of quotes a
venue produces is a pure function of (seed, config, n), whatever the wall-clock jitter.

Model, per instrument (= base asset; USD and USDT quotes share it):

* fair value: a log-normal random walk on a ``walk_step_ms`` grid, generated in blocks of
  ``FairWalk.BLOCK`` steps, each block from its own seeded generator;
* per venue: the venue sees the fair value from ``latency_ms`` ago, adds N(0, noise_bps)
  to the mid, quotes +- ``half_spread_bps`` rounded outwards to its tick, with log-normal
  top-of-book sizes around ``size_usd`` notional;
* dislocations: per (venue, instrument) a Poisson process (``dislocation_rate_hz``) of
  events that move that venue's mid by +-X bps (X ~ U[0.5, 1.5] x dislocation_bps) for
  Y ms (Y ~ U[0.5, 1.5] x dislocation_ms); a 40 bp jump survives two 10 bp taker legs;
* funding (perp instruments): an Ornstein-Uhlenbeck drift on a 1 s grid around a level
  of its own per (venue, instrument), clamped to +-0.3 %.

Prices are integer ticks and sizes integer lots internally (``fixed`` renders them as
exact decimal strings), so no float rounding noise reaches the wire.
"""
from __future__ import annotations

import collections
import math
import time
import zlib

import numpy as np

from arbpipe.sim.config import ASSET_TABLE, FALLBACK_ASSET, InstrumentSpec, SimConfig, instruments_for

TAG_WALK, TAG_VENUE, TAG_INIT, TAG_DISLOC, TAG_FUNDING, TAG_SESSION, TAG_BOOK = range(1, 8)

VENUE_LATENCY_MS = {"binance": 5.0, "binance-usdm": 5.0, "bybit-spot": 15.0, "bybit-linear": 15.0,
                    "okx": 20.0, "coinbase": 40.0, "kraken": 60.0, "gate": 30.0}
MASK64 = (1 << 64) - 1


def stable_id(text: str) -> int:
    """A stable non-negative id for a name (seeds must not depend on config order)."""
    return zlib.crc32(text.encode())


def rng_for(seed: int, *words: int) -> np.random.Generator:
    return np.random.default_rng([seed & MASK64, *words])


def mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap deterministic hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def fixed(units: int, dp: int) -> str:
    """Integer ``units`` of 10**-dp as an exact decimal string with ``dp`` decimals."""
    if dp <= 0:
        return str(units * 10 ** (-dp))
    sign = "-" if units < 0 else ""
    s = str(abs(units)).rjust(dp + 1, "0")
    return f"{sign}{s[:-dp]}.{s[-dp:]}"


def trim(text: str) -> str:
    """Drop trailing zeros (and a bare point) of a decimal string: 21921.30 -> 21921.3."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def pad(text: str, dp: int) -> str:
    """Right-pad a decimal string with zeros to ``dp`` decimals (Binance spot prints 8)."""
    if "." not in text:
        return text + "." + "0" * dp
    have = len(text) - text.index(".") - 1
    return text + "0" * (dp - have) if have < dp else text


def decimal_str(x: float, dp: int = 8) -> str:
    """A float rounded to ``dp`` decimals, fixed notation."""
    return f"{x:.{dp}f}"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class MarketClock:
    """Simulated time: ms of wall (monotonic) time since ``start()``; 0 before it."""

    def __init__(self):
        self.t0: float | None = None

    @property
    def started(self) -> bool:
        return self.t0 is not None

    def start(self) -> bool:
        """Start the clock if it is not running; True when this call started it."""
        if self.t0 is None:
            self.t0 = time.monotonic()
            return True
        return False

    def now_ms(self) -> float:
        return 0.0 if self.t0 is None else (time.monotonic() - self.t0) * 1000.0


class FairWalk:
    """Log-normal random walk of one asset's fair value on a fixed time grid."""

    BLOCK = 4096
    CACHE = 8

    def __init__(self, seed: int, asset: str, p0: float, vol_bps_per_sqrt_s: float, step_ms: float):
        self.seed = seed
        self.aid = stable_id(asset)
        self.step_ms = step_ms
        self.sigma = vol_bps_per_sqrt_s * 1e-4 * math.sqrt(step_ms / 1000.0)
        self.starts = [math.log(p0)]          # log price at the first step of block b
        self.cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

    def _increments(self, b: int) -> np.ndarray:
        return rng_for(self.seed, TAG_WALK, self.aid, b).normal(0.0, self.sigma, self.BLOCK)

    def _block(self, b: int) -> np.ndarray:
        arr = self.cache.get(b)
        if arr is not None:
            self.cache.move_to_end(b)
            return arr
        while len(self.starts) <= b:          # walk forward: each block starts where the last ended
            k = len(self.starts) - 1
            self.starts.append(self.starts[k] + float(self._increments(k).sum()))
        inc = self._increments(b)
        arr = np.empty(self.BLOCK)
        arr[0] = self.starts[b]
        np.cumsum(inc[:-1], out=arr[1:])
        arr[1:] += self.starts[b]
        self.cache[b] = arr
        if len(self.cache) > self.CACHE:
            self.cache.popitem(last=False)
        return arr

    def price_at(self, t_ms: float) -> float:
        k = int(t_ms // self.step_ms) if t_ms > 0 else 0
        b, j = divmod(k, self.BLOCK)
        return math.exp(self._block(b)[j])


class Dislocations:
    """Poisson schedule of temporary quote jumps for one (venue, instrument)."""

    KEEP_MS = 60_000.0

    def __init__(self, rng: np.random.Generator, rate_hz: float, bps: float, ms: float):
        self.rng = rng
        self.mean_gap_ms = 1000.0 / rate_hz if rate_hz > 0 else math.inf
        self.bps = bps
        self.ms = ms
        self.events: collections.deque[tuple[float, float, float]] = collections.deque()  # (start, end, bps)
        self.next_start = self._gap()

    def _gap(self) -> float:
        return float(self.rng.exponential(self.mean_gap_ms)) if math.isfinite(self.mean_gap_ms) else math.inf

    def at(self, t_ms: float) -> float:
        """Jump (bps, signed) in force at ``t_ms``; 0 when none."""
        while self.next_start <= t_ms:
            u = self.rng.random(3)
            size = (0.5 + u[0]) * self.bps * (1.0 if u[1] < 0.5 else -1.0)
            dur = (0.5 + u[2]) * self.ms
            self.events.append((self.next_start, self.next_start + dur, size))
            self.next_start += self._gap()
        while self.events and self.events[0][1] < t_ms - self.KEEP_MS:
            self.events.popleft()
        for start, end, size in reversed(self.events):   # the latest event wins on overlap
            if start <= t_ms < end:
                return size
        return 0.0


class FundingDrift:
    """Funding rate per interval of one perp on one venue: OU on a 1 s grid."""

    CHUNK = 256
    CAP = 0.003

    def __init__(self, rng: np.random.Generator, level: float, sd: float, reversion_s: float):
        self.rng = rng
        self.level = level
        self.theta = 1.0 / max(reversion_s, 1.0)
        self.sigma = sd * math.sqrt(2.0 * self.theta)
        self.k = 0
        self.r = level
        self.history: collections.deque[float] = collections.deque([level], maxlen=3600)
        self._z = np.empty(0)
        self._zi = 0

    def _normal(self) -> float:
        if self._zi >= len(self._z):
            self._z = self.rng.standard_normal(self.CHUNK)
            self._zi = 0
        z = self._z[self._zi]
        self._zi += 1
        return float(z)

    def at(self, t_s: float) -> float:
        k = max(0, int(t_s))
        while self.k < k:
            self.r += self.theta * (self.level - self.r) + self.sigma * self._normal()
            self.r = min(self.CAP, max(-self.CAP, self.r))
            self.history.append(self.r)
            self.k += 1
        back = self.k - k
        if back >= len(self.history):
            return self.history[0]
        return self.history[-1 - back]


class Quote:
    """One top-of-book update of one instrument on one venue.

    Prices in integer ticks of the instrument, sizes in integer lots (contracts for a
    contract-sized instrument). ``trade``: +1 buy / -1 sell / 0 none happened with it."""

    __slots__ = ("n", "inst", "t_ms", "bid", "ask", "bid_lots", "ask_lots", "trade",
                 "trade_lots", "disloc_bps", "fair")

    def __init__(self, n, inst, t_ms, bid, ask, bid_lots, ask_lots, trade, trade_lots, disloc_bps, fair):
        self.n = n
        self.inst = inst
        self.t_ms = t_ms
        self.bid = bid
        self.ask = ask
        self.bid_lots = bid_lots
        self.ask_lots = ask_lots
        self.trade = trade
        self.trade_lots = trade_lots
        self.disloc_bps = disloc_bps
        self.fair = fair

    def key(self) -> tuple:
        return (self.n, self.inst, self.bid, self.ask, self.bid_lots, self.ask_lots, self.trade)

    def __repr__(self) -> str:
        return f"Quote(n={self.n}, inst={self.inst}, bid={self.bid}, ask={self.ask}, " \
               f"bid_lots={self.bid_lots}, ask_lots={self.ask_lots}, disloc={self.disloc_bps:.1f})"


class InstrumentModel:
    """Static description of an instrument on a venue plus its per-venue processes."""

    def __init__(self, idx: int, spec: InstrumentSpec, walk: FairWalk, p0: float,
                 disloc: Dislocations, funding: FundingDrift | None, half_spread_bps: float,
                 book_gap_bps: float = 0.5):
        self.idx = idx
        self.spec = spec
        self.native = spec.native
        self.walk = walk
        self.p0 = p0
        self.disloc = disloc
        self.funding = funding
        self.half_spread = half_spread_bps * 1e-4
        self.price_dp = spec.price_dp
        self.tick = 10.0 ** -spec.price_dp
        self.contracts = spec.ct_val > 0
        self.qty_dp = spec.qty_dp
        self.lot = spec.ct_val if self.contracts else 10.0 ** -spec.qty_dp
        self.salt = stable_id(spec.native)
        self.book_gap = max(1, round(p0 * book_gap_bps * 1e-4 / self.tick))   # ticks between book levels
        self.book_mean_lots = 0.0     # set by VenueModel: the mean size of a deeper level

    # -- rendering ---------------------------------------------------------------
    def px(self, ticks: int) -> str:
        """Price as a decimal string with the instrument's decimals."""
        return fixed(ticks, self.price_dp)

    def px_float(self, ticks: int) -> float:
        return float(fixed(ticks, self.price_dp))

    def qty(self, lots: int) -> str:
        """Size in the venue's unit: contracts (integer) or base units with qty decimals."""
        return str(lots) if self.contracts else fixed(lots, self.qty_dp)

    def base_qty(self, lots: int) -> float:
        """Size in base-asset units (contracts x ctVal)."""
        return lots * self.spec.ct_val if self.contracts else float(fixed(lots, self.qty_dp))

    def base_qty_str(self, lots: int) -> str:
        if self.contracts:
            return trim(decimal_str(lots * self.spec.ct_val, 8))
        return fixed(lots, self.qty_dp)

    def to_ticks(self, price: float) -> int:
        return int(round(price / self.tick))

    # -- depth book --------------------------------------------------------------
    def level_lots(self, side: int, ticks: int, mean_lots: float) -> int:
        """Deterministic size of a deeper book level (stable while the level exists)."""
        h = mix64((ticks << 2) ^ (side & 3) ^ (self.salt << 40)) / float(MASK64)
        return max(1, int(round(mean_lots * (0.2 + 1.8 * h))))

    def book(self, q: Quote, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """``levels`` (price_ticks, lots) per side, best first: the quote's top level, then
        levels on a fixed grid of ``book_gap`` ticks (so they persist while the top moves),
        each sized from its price alone around ``book_mean_lots`` (so a deeper level keeps
        its size while it exists and only the levels near the top change per update)."""
        g = self.book_gap
        mean = self.book_mean_lots or max(1.0, q.bid_lots * 1.0)
        bids = [(q.bid, q.bid_lots)]
        p = ((q.bid - 1) // g) * g
        while len(bids) < levels:
            bids.append((p, self.level_lots(0, p, mean)))
            p -= g
        asks = [(q.ask, q.ask_lots)]
        p = (q.ask // g + 1) * g
        while len(asks) < levels:
            asks.append((p, self.level_lots(1, p, mean)))
            p += g
        bids = [lv for lv in bids if lv[0] > 0]
        return bids, asks


class VenueModel:
    """Deterministic quote sequence of one venue: ``quote(n)`` is a pure function of n."""

    BLOCK = 1024

    def __init__(self, market: "Market", name: str, cfg: SimConfig):
        vc = cfg.venues[name]
        self.name = name
        self.seed = cfg.seed
        self.vid = stable_id(name)
        self.rate_hz = vc.rate_hz
        self.dt_ms = 1000.0 / vc.rate_hz if vc.rate_hz > 0 else 1000.0 / cfg.max_rate_clock_hz
        self.lag_ms = VENUE_LATENCY_MS[name] if vc.latency_ms is None else vc.latency_ms
        self.noise = vc.noise_bps * 1e-4
        self.size_usd = vc.size_usd
        self.trade_p = vc.trade_p
        self.book_levels = max(1, vc.book_levels)
        specs = instruments_for(cfg, name)
        if not specs:
            raise ValueError(f"venues.{name}: no instruments")
        self.instruments: list[InstrumentModel] = []
        for i, spec in enumerate(specs):
            walk = market.walk(spec.base)
            hs = vc.half_spread_bps
            if hs is None:
                hs = 0.5 if spec.kind == "perp" else 1.0
            sid = stable_id(spec.native)
            disloc = Dislocations(rng_for(cfg.seed, TAG_DISLOC, self.vid, sid),
                                  cfg.dislocation_rate_hz, cfg.dislocation_bps, cfg.dislocation_ms)
            funding = None
            if spec.kind == "perp":
                frng = rng_for(cfg.seed, TAG_FUNDING, self.vid, sid)
                level = cfg.funding_mean + cfg.funding_venue_sd * float(frng.standard_normal())
                funding = FundingDrift(frng, level, cfg.funding_sd, cfg.funding_reversion_s)
            p0 = ASSET_TABLE.get(spec.base.upper(), FALLBACK_ASSET)[0]
            self.instruments.append(InstrumentModel(i, spec, walk, p0, disloc, funding, hs))
            self.instruments[-1].book_mean_lots = max(
                1.0, round(self.size_usd / p0 / self.instruments[-1].lot))
        self.by_native = {m.native: m for m in self.instruments}
        self._blk = -1
        self._arrays: tuple = ()
        self.funding_interval_ms = cfg.funding_interval_h * 3_600_000

    # -- the quote sequence ------------------------------------------------------
    def t_ms(self, n: int) -> float:
        return (n + 1) * self.dt_ms

    def _block(self, b: int) -> tuple:
        if b != self._blk:
            r = rng_for(self.seed, TAG_VENUE, self.vid, b)
            size = self.BLOCK
            self._arrays = (
                r.integers(0, len(self.instruments), size),   # which instrument updates
                r.standard_normal(size),                      # mid noise
                r.lognormal(0.0, 0.5, size),                  # bid size factor
                r.lognormal(0.0, 0.5, size),                  # ask size factor
                r.random(size),                               # trade?
                r.random(size),                               # trade side / size
            )
            self._blk = b
        return self._arrays

    def inst_of(self, n: int) -> int:
        b, j = divmod(n, self.BLOCK)
        return int(self._block(b)[0][j])

    def _make(self, n: int, im: InstrumentModel, t: float, z: float, fb: float, fa: float,
              ut: float, us: float, disloc: float) -> Quote:
        fair = im.walk.price_at(t - self.lag_ms)
        mid = fair * (1.0 + z * self.noise + disloc * 1e-4)
        bid = math.floor(mid * (1.0 - im.half_spread) / im.tick)
        ask = math.ceil(mid * (1.0 + im.half_spread) / im.tick)
        if ask <= bid:
            ask = bid + 1
        mean_lots = self.size_usd / fair / im.lot
        bid_lots = max(1, int(round(mean_lots * fb)))
        ask_lots = max(1, int(round(mean_lots * fa)))
        trade = 0
        trade_lots = 0
        if ut < self.trade_p:
            trade = 1 if us < 0.5 else -1
            trade_lots = max(1, int(round(mean_lots * 0.05 * (0.2 + 2.0 * (us % 0.5)))))
        return Quote(n, im.idx, t, bid, ask, bid_lots, ask_lots, trade, trade_lots, disloc, fair)

    def quote(self, n: int) -> Quote:
        """Update ``n`` (n >= 0). Calls must come with non-decreasing n for dislocations
        to be exact; other parts are random-access."""
        b, j = divmod(n, self.BLOCK)
        inst, z, fb, fa, ut, us = self._block(b)
        im = self.instruments[int(inst[j])]
        t = self.t_ms(n)
        return self._make(n, im, t, float(z[j]), float(fb[j]), float(fa[j]), float(ut[j]),
                          float(us[j]), im.disloc.at(t))

    def initial(self, i: int) -> Quote:
        """The quote of instrument ``i`` before update 0 (n = -1, simulated time 0)."""
        im = self.instruments[i]
        r = rng_for(self.seed, TAG_INIT, self.vid, im.salt)
        z, fb, fa = r.standard_normal(), r.lognormal(0.0, 0.5), r.lognormal(0.0, 0.5)
        return self._make(-1, im, 0.0, float(z), float(fb), float(fa), 1.0, 1.0, 0.0)

    def last_before(self, i: int, n: int, max_blocks: int = 64) -> Quote:
        """The latest quote of instrument ``i`` among updates < n (initial quote if none)."""
        b = (n - 1) // self.BLOCK if n > 0 else -1
        stop = max(-1, b - max_blocks)
        saved = (self._blk, self._arrays)
        try:
            while b > stop:
                inst = self._block(b)[0]
                hi = min(self.BLOCK, n - b * self.BLOCK)
                idx = np.nonzero(inst[:hi] == i)[0]
                if len(idx):
                    k = b * self.BLOCK + int(idx[-1])
                    return self.quote(k)
                b -= 1
            return self.initial(i)
        finally:
            self._blk, self._arrays = saved

    def quotes(self, count: int, start: int = 0) -> list[Quote]:
        """``count`` consecutive updates from ``start`` (offline use, tests)."""
        return [self.quote(n) for n in range(start, start + count)]

    # -- funding / mark ----------------------------------------------------------
    def funding_rate(self, i: int, t_ms: float) -> float:
        f = self.instruments[i].funding
        return f.at(t_ms / 1000.0) if f is not None else 0.0

    def mark_price(self, i: int, t_ms: float) -> float:
        return self.instruments[i].walk.price_at(t_ms)

    def next_funding_ms(self, now_wall_ms: int | None = None) -> int:
        now = wall_ms() if now_wall_ms is None else now_wall_ms
        iv = self.funding_interval_ms
        return (now // iv + 1) * iv


class Market:
    """All fair values and venue models of one simulator run."""

    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        self.clock = MarketClock()
        self._walks: dict[str, FairWalk] = {}
        self.venues: dict[str, VenueModel] = {name: VenueModel(self, name, cfg) for name in cfg.venues}

    def walk(self, base: str) -> FairWalk:
        base = base.upper()
        w = self._walks.get(base)
        if w is None:
            p0 = ASSET_TABLE.get(base, FALLBACK_ASSET)[0]
            w = FairWalk(self.cfg.seed, base, p0, self.cfg.vol_bps_per_sqrt_s, self.cfg.walk_step_ms)
            self._walks[base] = w
        return w

    def venue(self, name: str) -> VenueModel:
        return self.venues[name]
