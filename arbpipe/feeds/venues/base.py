"""The one shape every venue module has.

A venue module (``arbpipe/feeds/venues/<name>.py``) defines one ``VenueAdapter``
subclass per market; ``registry.py`` lists them all. The adapter knows only the venue's
wire protocol: where to connect, what to send to subscribe and to keep the
connection alive, and how to turn a received frame into normalised updates. It
knows nothing about sockets, rings or processes: the feed runtime
(``arbpipe.feeds``) owns the connection, reconnects, watchdogs and the ring.

Contract of ``parse``:
  * never raises on any input (bytes or str of any content);
  * for each accepted update calls ``sink.quote`` / ``sink.funding`` /
    ``sink.status`` with the canonical instrument id from the symbol map;
  * for each frame or update it refuses calls ``sink.reject(reason)`` with a
    short, stable reason token (``not_json``, ``bad_shape``, ``bad_price``,
    ``crossed``, ``unknown_symbol``, ``duplicate``, ``out_of_order``, ...);
  * control frames (acks, pongs, heartbeats) return a ``Control`` describing
    them so the runtime can check acks and surface errors.

L2 books (``depth`` > 0, set by the runtime from ``[venues.<v>] depth`` when the adapter
says ``supports_depth``): the adapter subscribes its depth channel instead of its BBO
channel and, per depth message, keeps the venue's sync rules itself (update ids, sequence
numbers, checksums) and calls:
  * ``sink.book(instrument_id, bids, asks, snapshot, exchange_ts_ns, update_id)``: apply
    the levels (``[price, qty]`` rows, qty 0 removes; ``snapshot`` replaces the book); the
    sink publishes the top-N change and a QUOTE of the top; it returns the ``FullBook``
    (``top(n)`` for a checksum) or None when it refused the message;
  * ``sink.book_broken(instrument_id, fault)`` when a rule breaks (``BookFault``: GAP,
    CHECKSUM, STALE_SNAPSHOT, EARLY_DIFF, RESTART, BAD_DATA), then returns
    ``Control("resync", symbol=native, detail=fault name)`` (``reconnect=True`` when only a
    new connection resyncs, as on Coinbase). The runtime then fetches the REST snapshot
    (``rest_snapshot_path(native)`` not None: GET ``rest_url`` + path, the body goes to
    ``on_rest_snapshot``; a failure is ``SNAPSHOT_FAILED`` and is retried) or sends
    ``resubscribe(native)`` on that socket. A lost connection marks every book of the
    feed not ready (``RECONNECT``) and the adapter resyncs each on its next message.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, Protocol

import msgspec

from arbpipe.symbols import Instrument
from shm_layouts.records import BookFault


class UpdateSink(Protocol):
    """Where an adapter puts what it parsed. Units: prices in quote currency,
    quantities in base-asset units, timestamps in ns since the epoch."""

    def quote(self, instrument_id: int, bid: float, ask: float, bid_qty: float,
              ask_qty: float, exchange_ts_ns: int, flags: int = 0) -> None: ...

    def funding(self, instrument_id: int, rate: float, next_funding_ns: int,
                interval_s: int, mark_price: float, exchange_ts_ns: int) -> None: ...

    def status(self, status: int, reason: int = 0) -> None: ...

    def reject(self, reason: str, n: int = 1) -> None: ...


@dataclasses.dataclass
class Control:
    """A non-data frame, classified for the runtime."""
    kind: str            # "ack" | "error" | "pong" | "heartbeat" | "notice" | "other"
    detail: str = ""     # human text (error message, failing symbol, notice)
    symbol: str = ""     # native symbol the error names, when it names one
    reconnect: bool = False  # the venue announced a planned disconnect: reconnect now


@dataclasses.dataclass
class SocketSpec:
    """One websocket the adapter needs (Binance USD-M needs two)."""
    path: str                         # appended to the base url, e.g. "/ws" or "/v5/public/spot"
    subscribe: list                   # frames (str) to send after connect, in order
    ping_text: str | None = None      # application-level ping frame text, if the venue wants one
    ping_interval_s: float = 0.0      # send ping_text this often (0 = never)


class VenueAdapter:
    """Base class. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]                 # "binance", "bybit-linear", ...
    default_url: ClassVar[str]          # scheme://host[:port]; paths come from sockets()
    venue_id: int = 0                   # set by the runtime from config
    market: ClassVar[str] = "spot"      # "spot" | "perp"
    watchdog_s: ClassVar[float] = 30.0  # default silent-symbol watchdog
    # True when one refused symbol fails the whole subscribe request (nothing of it is
    # streamed): the runtime then adds the symbol to ``refused`` and reconnects (planned,
    # seamless), and ``sockets()`` leaves refused symbols out (``subscribable()``).
    refusal_fails_request: ClassVar[bool] = False
    supports_depth: ClassVar[bool] = False  # True once the adapter speaks its depth channel
    default_rest_url: ClassVar[str] = ""    # scheme://host[:port] of REST snapshots, if any
    depth: int = 0                          # top N levels kept per side (0: BBO only)

    def __init__(self, instruments: list[Instrument], venue_id: int = 0):
        self.instruments = instruments
        self.venue_id = venue_id
        self.by_native = {i.native: i for i in instruments}
        self.refused: set[str] = set()  # natives the venue refused (see refusal_fails_request)

    def subscribable(self) -> list[Instrument]:
        """The instruments to subscribe: all but those the venue refused."""
        refused = self.refused
        return [i for i in self.instruments if i.native not in refused] if refused else \
            self.instruments

    # -- protocol --------------------------------------------------------
    def sockets(self) -> list[SocketSpec]:
        raise NotImplementedError

    def parse(self, frame, recv_ns: int, sink: UpdateSink, socket_index: int = 0) -> Control | None:
        """Default: ``self._parse(frame, sink)`` behind a last-resort guard, so that a bug
        shows as a counted ``parse_error`` reject instead of killing the feed."""
        try:
            return self._parse(frame, sink)
        except Exception:
            sink.reject("parse_error")
            return None

    def _parse(self, frame, sink: UpdateSink) -> Control | None:
        raise NotImplementedError

    def on_connect(self, socket_index: int) -> None:
        """Called at every (re)connect: reset per-connection sequence state."""

    # -- L2 books (depth > 0) ----------------------------------------------------------
    def rest_snapshot_path(self, native: str) -> str | None:
        """Path and query of the REST depth snapshot of ``native`` (None: the venue sends
        snapshots on its websocket)."""
        return None

    def on_rest_snapshot(self, native: str, body: bytes, sink: UpdateSink) -> Control | None:
        """Apply a REST snapshot body of ``native`` with the diffs buffered meanwhile
        (``self._rest_snapshot``, the venue's rules) behind a last-resort guard, as ``parse``
        does: never raises; a body it cannot use is SNAPSHOT_FAILED and fetched again."""
        inst = self.by_native.get(native)
        if inst is None:
            return None
        try:
            return self._rest_snapshot(native, inst, body, sink)
        except Exception:  # noqa: BLE001 - last resort: counted, and the book fetched again
            sink.reject("parse_error")
            sink.book_broken(inst.instrument_id, BookFault.SNAPSHOT_FAILED)
            return Control("resync", symbol=native, detail="snapshot_failed: parse error")

    def _rest_snapshot(self, native: str, inst: Instrument, body: bytes,
                       sink: UpdateSink) -> Control | None:
        return None

    def resubscribe(self, native: str) -> list[str]:
        """Frames that make the venue send ``native``'s depth snapshot again."""
        return []

    @staticmethod
    def native_to_canonical(native: str) -> str | None:
        """Best-effort BASE/QUOTE from a native symbol (None when it cannot tell)."""
        return None


def decode_frame(decoder, frame, sink: UpdateSink):
    """Decode with a msgspec decoder; on failure count ``bad_shape`` (valid JSON, wrong
    shape) or ``not_json`` and return None."""
    try:
        return decoder(frame)
    except msgspec.ValidationError:
        sink.reject("bad_shape")
    except Exception:  # DecodeError, bad unicode in a str frame, a non-text frame, ...
        sink.reject("not_json")
    return None


Factory = Callable[..., VenueAdapter]
