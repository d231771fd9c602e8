"""The symbol map: (venue, native symbol) <-> (venue_id u16, instrument_id u32), O(1) both ways.

Names
  * A canonical instrument is ``BASE/QUOTE`` (``BTC/USDT``, ``BTC/USD``). A venue lists it
    on a *market*, spot or perp: Binance ``BTCUSDT`` (spot), Binance USD-M ``BTCUSDT``
    (perp), OKX ``BTC-USDT`` (spot) and ``BTC-USDT-SWAP`` (perp) are all ``BTC/USDT``.
  * A native symbol is the venue's own spelling: ``BTCUSDT`` (binance, binance-usdm,
    bybit-spot, bybit-linear), ``BTC-USDT`` / ``BTC-USDT-SWAP`` (okx), ``BTC-USD``
    (coinbase), ``BTC/USD`` (kraken), ``BTC_USDT`` (gate).

Ids (the same in every process and after a restart; no coordination needed)
  * venue ids: the fixed table ``VENUE_IDS`` (binance=1 ... gate=8); a venue keeps its id.
  * the canonical id of a name in ``REGISTERED`` is its position + 1 (1, 2, 3, ...: small
    and dense, array indices). ``REGISTERED`` is append-only: new names go at its end;
    nothing is moved or removed. Its first ten entries are the order of
    ``config/arbpipe.toml``'s ``instruments``, so the default map and the default config
    agree (``arbpipe.config``: canonical id = position in the config's list + 1).
  * a name not registered (``--symbol PEPEUSDT``): ``HASHED_ID_BASE | blake2b-23(name)``,
    a pure function of the name in [2**23, 2**24); a collision with another name of the
    same map is refused when the map is built.
  * a perp market publishes ``canonical id | PERP_ID_BIT`` (bit 24, ``arbpipe.config``'s
    convention): the detector tells OKX SWAP from OKX spot by it, and ``& CANONICAL_MASK``
    gives the canonical id back.
  * 0 is never an instrument: a STATUS record with ``instrument_id == 0`` is about the venue.

Every process can have the map: it is a pure function of its input. Without a config:
``SymbolMap.default()`` (the simulator's default instruments on every venue; OKX SWAP
contract values included). With the pipeline config: ``SymbolMap.from_config(cfg)`` takes
the (native, published id) list of ``cfg.symbol_map(venue)``, so the feeds publish exactly
the ids the detector's leg table expects. Nothing is published in shared memory.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterable, Mapping


@dataclasses.dataclass
class Instrument:
    """A subscribed instrument on one venue."""
    native: str           # venue's native symbol, e.g. "BTCUSDT", "BTC-USDT-SWAP"
    instrument_id: int    # canonical instrument id (symbol map)
    contract_size: float = 1.0  # base units per contract (OKX SWAP); 1 for spot


# -- venues ----------------------------------------------------------------------------
VENUE_IDS: dict[str, int] = {
    "binance": 1, "binance-usdm": 2, "bybit-spot": 3, "bybit-linear": 4,
    "okx": 5, "coinbase": 6, "kraken": 7, "gate": 8,
}
VENUE_NAMES: dict[int, str] = {v: k for k, v in VENUE_IDS.items()}
PERP_VENUES = ("binance-usdm", "bybit-linear")     # perpetuals only
BOTH_VENUES = ("okx",)                             # spot and SWAP on one venue id
# the rest list spot only

PERP_ID_BIT = 1 << 24            # on the instrument id of perp-market updates (one definition)
CANONICAL_MASK = PERP_ID_BIT - 1
HASHED_ID_BASE = 1 << 23         # unregistered names: [2**23, 2**24)

# -- default instruments (the simulator's defaults) --------------------------------------
DEFAULT_BASES = ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "AVAX", "LINK", "LTC", "DOT")
OKX_SWAP_CT_VAL: dict[str, float] = {   # base units per contract (OKX ctVal)
    "BTC": 0.01, "ETH": 0.1, "SOL": 1.0, "XRP": 100.0, "DOGE": 1000.0,
    "ADA": 100.0, "AVAX": 1.0, "LINK": 1.0, "LTC": 1.0, "DOT": 1.0,
}
DEFAULT_QUOTE = {"binance": "USDT", "binance-usdm": "USDT", "bybit-spot": "USDT",
                 "bybit-linear": "USDT", "okx": "USDT", "gate": "USDT",
                 "coinbase": "USD", "kraken": "USD"}

# -- the append-only registry ------------------------------------------------------------
# canonical id = index + 1. APPEND ONLY: never reorder, rename or delete an entry.
REGISTERED: tuple[str, ...] = (
    "BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT",
    "ADA/USDT", "AVAX/USDT", "LINK/USDT", "LTC/USDT", "DOT/USDT",
    "BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD", "DOGE/USD",
    "ADA/USD", "AVAX/USD", "LINK/USD", "LTC/USD", "DOT/USD",
    # append new canonical instruments here
)
_REGISTERED_IDS = {name: i + 1 for i, name in enumerate(REGISTERED)}


class SymbolError(ValueError):
    """A symbol, venue or map entry that cannot be used; the message says which."""


def split_canonical(name: str) -> tuple[str, str]:
    """``BTC/USDT`` -> (BTC, USDT)."""
    base, sep, quote = name.partition("/")
    if not sep or not base or not quote or "/" in quote or ":" in name:
        raise SymbolError(f"not a canonical instrument {name!r}: use BASE/QUOTE")
    return base, quote


def is_canonical(text: str) -> bool:
    try:
        split_canonical(text)
        return True
    except SymbolError:
        return False


def canonical_id(canonical: str) -> int:
    """Registered: its small dense id; otherwise the hashed id (in [2**23, 2**24))."""
    cid = _REGISTERED_IDS.get(canonical)
    if cid is not None:
        return cid
    h = int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=4).digest(), "little")
    return HASHED_ID_BASE | (h & (HASHED_ID_BASE - 1))


def instrument_id_for(canonical: str, perp: bool = False) -> int:
    """The id a feed publishes for ``canonical`` on a spot (or perp) market."""
    return canonical_id(canonical) | (PERP_ID_BIT if perp else 0)


def venue_market(venue: str) -> str:
    """"spot", "perp" or "both" (okx)."""
    venue_id(venue)
    return "perp" if venue in PERP_VENUES else "both" if venue in BOTH_VENUES else "spot"


def native_symbol(venue: str, canonical: str, perp: bool | None = None) -> str:
    """The venue's native spelling of a canonical instrument on one of its markets
    (``perp`` None: the venue's only market; spot on okx)."""
    base, quote = split_canonical(canonical)
    market = venue_market(venue)
    if perp is None:
        perp = market == "perp"
    if perp and market == "spot":
        raise SymbolError(f"{venue} lists spot only, not a {canonical} perpetual")
    if not perp and market == "perp":
        raise SymbolError(f"{venue} lists perpetuals only, not {canonical} spot")
    if venue in ("binance", "bybit-spot", "binance-usdm", "bybit-linear"):
        return f"{base}{quote}"
    if venue == "okx":
        return f"{base}-{quote}-SWAP" if perp else f"{base}-{quote}"
    if venue == "coinbase":
        return f"{base}-{quote}"
    if venue == "kraken":
        return f"{base}/{quote}"
    return f"{base}_{quote}"     # gate


def venue_id(venue: str) -> int:
    try:
        return VENUE_IDS[venue]
    except KeyError:
        raise SymbolError(f"unknown venue {venue!r}; known: {', '.join(VENUE_IDS)}") from None


def opaque_name(venue: str, native: str) -> str:
    """Instrument name of a native symbol whose pair cannot be told: ``<native>@<venue>``
    (an instrument of that venue alone, comparable with nothing)."""
    return f"{native}@{venue}"


# -- names for display (tap, dashboards) ---------------------------------------------------
def venue_name(vid: int) -> str:
    """``5`` -> ``okx`` (the id as text when unknown)."""
    return VENUE_NAMES.get(int(vid), str(vid))


def leg_name(vid: int, perp: bool) -> str:
    """Name of one market of a venue, as the dashboard shows it: ``okx`` / ``okx-perp`` for
    OKX spot / SWAP (one venue id); a perp-only venue keeps its own name."""
    name = venue_name(vid)
    return name + "-perp" if perp and name not in PERP_VENUES else name


def instrument_name(instrument_id: int) -> str:
    """Registered name of a published id, ``-PERP`` appended for a perp market
    (``1`` -> ``BTC/USDT``, ``1 | PERP_ID_BIT`` -> ``BTC/USDT-PERP``); the id as text
    when it is not registered (hashed ids are not reversible)."""
    iid = int(instrument_id)
    k = (iid & CANONICAL_MASK) - 1
    if 0 <= k < len(REGISTERED):
        return REGISTERED[k] + ("-PERP" if iid & PERP_ID_BIT else "")
    return str(iid)


@dataclasses.dataclass(frozen=True)
class Listing:
    """One instrument on one market of one venue."""
    venue: str
    native: str
    canonical: str
    contract_size: float = 1.0          # base units per contract (OKX SWAP ctVal); 1 otherwise
    perp: bool = False
    instrument_id: int = 0              # published id; 0 = derived (instrument_id_for)
    venue_id: int = 0                   # 0 = VENUE_IDS[venue]

    def __post_init__(self):
        if not self.instrument_id:
            object.__setattr__(self, "instrument_id", instrument_id_for(self.canonical, self.perp))
        if not self.venue_id:
            object.__setattr__(self, "venue_id", venue_id(self.venue))

    @property
    def base(self) -> str:
        return self.canonical.partition("/")[0]

    @property
    def quote(self) -> str:
        return self.canonical.partition("/")[2]

    @property
    def market(self) -> str:
        return "perp" if self.perp else "spot"

    def instrument(self) -> Instrument:
        """What a venue adapter takes."""
        return Instrument(self.native, self.instrument_id, self.contract_size)


class SymbolMap:
    """(venue, native) <-> (venue_id, instrument_id); instrument_id -> canonical name."""

    def __init__(self, listings: Iterable[Listing] = ()):
        self._by_native: dict[tuple[str, str], tuple[int, int]] = {}
        self._by_id: dict[tuple[int, int], Listing] = {}
        self._listing: dict[tuple[str, str], Listing] = {}
        self._canonical: dict[int, str] = {}      # canonical id -> name
        self._venue: dict[str, list[Listing]] = {}
        for listing in listings:
            self.add(listing)

    # -- building --------------------------------------------------------------------
    def add(self, listing: Listing) -> Listing:
        """Add one listing; refuses anything that would make a lookup ambiguous."""
        if not listing.canonical.endswith("@" + listing.venue):
            split_canonical(listing.canonical)
        vid, iid = listing.venue_id, listing.instrument_id
        if not 0 < iid < 2**32 or bool(iid & PERP_ID_BIT) != listing.perp:
            raise SymbolError(f"{listing.venue} {listing.native}: instrument id {iid:#x} does "
                              f"not fit a {listing.market} market")
        cid = iid & CANONICAL_MASK
        other = self._canonical.get(cid)
        if other is not None and other != listing.canonical:
            raise SymbolError(f"instrument id {cid:#x} of {listing.canonical!r} collides with "
                              f"{other!r}; rename one or append one to symbols.REGISTERED")
        key = (listing.venue, listing.native)
        old = self._listing.get(key)
        if old is not None:
            if old == listing:
                return old
            raise SymbolError(f"{listing.venue} {listing.native!r} is listed twice "
                              f"({old.canonical} and {listing.canonical})")
        old = self._by_id.get((vid, iid))
        if old is not None:
            raise SymbolError(f"{listing.venue}: {listing.canonical} {listing.market} has two "
                              f"native symbols ({old.native!r} and {listing.native!r})")
        if not listing.contract_size > 0:
            raise SymbolError(f"{listing.venue} {listing.native}: contract_size must be > 0")
        self._canonical[cid] = listing.canonical
        self._by_native[key] = (vid, iid)
        self._by_id[(vid, iid)] = listing
        self._listing[key] = listing
        self._venue.setdefault(listing.venue, []).append(listing)
        return listing

    @classmethod
    def default(cls, bases: Iterable[str] = DEFAULT_BASES,
                venues: Iterable[str] = tuple(VENUE_IDS)) -> "SymbolMap":
        """The simulator's default instruments on every venue (``arbpipe.sim.config``)."""
        m = cls()
        venues = tuple(venues)
        for base in (b.upper() for b in bases):
            for venue in venues:
                canonical = f"{base}/{DEFAULT_QUOTE[venue]}"
                market = venue_market(venue)
                if market in ("spot", "both"):
                    m.add(Listing(venue, native_symbol(venue, canonical, False), canonical))
                if market in ("perp", "both"):
                    size = OKX_SWAP_CT_VAL.get(base, 1.0) if venue == "okx" else 1.0
                    m.add(Listing(venue, native_symbol(venue, canonical, True), canonical, size,
                                  perp=True))
        return m

    @classmethod
    def from_config(cls, cfg) -> "SymbolMap":
        """From an ``arbpipe.config.Config``: every enabled venue's ``cfg.symbol_map(venue)``
        (native symbol, published id, canonical name, market) with ``cfg.venue_id(venue)``.
        OKX SWAP contract sizes come from ``OKX_SWAP_CT_VAL`` (the config has none)."""
        m = cls()
        for venue in cfg.enabled_venues():
            vid = cfg.venue_id(venue)
            for vi in cfg.symbol_map(venue):
                perp = vi.market == "perp"
                size = OKX_SWAP_CT_VAL.get(vi.canonical.partition("/")[0], 1.0) \
                    if perp and venue == "okx" else 1.0
                m.add(Listing(venue, vi.native, vi.canonical, size, perp, vi.instrument_id, vid))
        return m

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> "SymbolMap":
        """From ``to_records()`` output (or hand-written dicts with the Listing fields;
        ``instrument_id`` / ``venue_id`` may be left out to derive them)."""
        return cls(Listing(**dict(r)) for r in records)

    def to_records(self) -> list[dict]:
        """Every listing as a plain dict (JSON-able), in insertion order."""
        return [dataclasses.asdict(x) for x in self._listing.values()]

    # -- lookups (all O(1) dict lookups) --------------------------------------------------
    def lookup(self, venue: str, native: str) -> tuple[int, int] | None:
        """(venue_id, instrument_id) of a native symbol, or None."""
        return self._by_native.get((venue, native))

    def listing(self, venue: str, native: str) -> Listing | None:
        return self._listing.get((venue, native))

    def by_id(self, venue_id: int, instrument_id: int) -> Listing | None:
        return self._by_id.get((venue_id, instrument_id))

    def native(self, venue_id: int, instrument_id: int) -> str | None:
        listing = self._by_id.get((venue_id, instrument_id))
        return listing.native if listing is not None else None

    def canonical(self, instrument_id: int) -> str | None:
        """Canonical name of a published id (the perp bit is ignored)."""
        return self._canonical.get(instrument_id & CANONICAL_MASK)

    def venues(self) -> list[str]:
        return list(self._venue)

    def venue_listings(self, venue: str) -> list[Listing]:
        return list(self._venue.get(venue, ()))

    def instruments(self, venue: str) -> list[Instrument]:
        return [x.instrument() for x in self._venue.get(venue, ())]

    def __len__(self) -> int:
        return len(self._listing)

    def __iter__(self):
        return iter(self._listing.values())

    # -- user input -----------------------------------------------------------------------
    def resolve(self, venue: str, symbol: str, native_to_canonical=None) -> Listing:
        """A ``--symbol`` argument: canonical ``BASE/QUOTE`` (the venue's only market, spot
        on okx; ``BASE/QUOTE:PERP`` or ``BASE/QUOTE:<settle>`` picks the perp market) or the
        venue's native symbol. A native symbol the map does not know is accepted as is,
        with the id of the pair the venue's naming implies (``native_to_canonical``) or,
        failing that, of ``opaque_name``. The listing is added to the map."""
        vid = venue_id(venue)
        market = venue_market(venue)
        symbol = symbol.strip()
        if not symbol:
            raise SymbolError("empty symbol")
        for cand in (symbol, symbol.upper()):
            hit = self._listing.get((venue, cand))
            if hit is not None:
                return hit
        name, _, suffix = symbol.upper().partition(":")
        if is_canonical(name):
            perp = bool(suffix) or market == "perp"
            if perp and market == "spot":
                raise SymbolError(f"{venue} lists spot only, not a {name} perpetual")
            for x in self._venue.get(venue, ()):
                if x.canonical == name and x.perp == perp:
                    return x
            size = OKX_SWAP_CT_VAL.get(name.partition("/")[0], 1.0) \
                if perp and venue == "okx" else 1.0
            return self.add(Listing(venue, native_symbol(venue, name, perp), name, size, perp))
        # an unknown native symbol
        perp = market == "perp" or (venue == "okx" and symbol.upper().endswith("-SWAP"))
        canonical = native_to_canonical(symbol) if native_to_canonical else None
        if not canonical or not is_canonical(canonical):
            canonical = opaque_name(venue, symbol)
        iid = instrument_id_for(canonical, perp)
        if (vid, iid) in self._by_id or \
                self._canonical.get(iid & CANONICAL_MASK, canonical) != canonical:
            canonical = opaque_name(venue, symbol)
        return self.add(Listing(venue, symbol, canonical, 1.0, perp))


_DEFAULT: SymbolMap | None = None


def default_map() -> SymbolMap:
    """A shared default map (treat as read-only; build your own to add listings)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = SymbolMap.default()
    return _DEFAULT
