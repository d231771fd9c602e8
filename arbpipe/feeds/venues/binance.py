"""Binance spot and USD-M futures adapters (docs/venues.md, "Binance").

``binance``       spot ``<symbol>@bookTicker`` on ``/ws`` (raw-stream mode, live SUBSCRIBE).
                  The payload has no time field: quotes carry ``Flag.NO_EXCHANGE_TS`` and
                  ``exchange_ts_ns == 0``.
``binance-usdm``  USD-M perpetuals over two sockets, because since 2026 the streams are
                  routed: socket 0 = ``/public/ws`` (``<symbol>@bookTicker``, exchange time
                  = ``T`` transaction time), socket 1 = ``/market/ws``
                  (``<symbol>@markPrice@1s`` -> funding: ``r`` rate per interval, ``T`` next
                  funding time, ``p`` mark price, ``E`` event time).

Units: prices in quote currency, quantities in base-asset units (Binance sizes are base
already), timestamps ms on the wire -> ns since the epoch (x 1_000_000).

Ordering: per symbol, a bookTicker whose ``u`` equals the last accepted one is a
``duplicate``, a smaller one ``out_of_order``; markPrice frames are ordered the same way by
``E``. State is per connection and reset by ``on_connect``.

Keep-alive is the server's websocket ping frame (answered by the runtime); there is no
application ping. An unknown symbol gets no error from Binance: the stream stays silent and
the runtime's watchdog reports it. Plain payloads and the combined-stream wrapper
``{"stream":..,"data":..}`` are both accepted.
"""
from __future__ import annotations

import json
from typing import Any

import msgspec

from arbpipe.feeds.venues.base import Control, SocketSpec, VenueAdapter, decode_frame
from arbpipe.feeds.venues.checks import (MAX_MS, MS, NO_SEQ, book_reject, funding_ok,
                                         stale_reason)
from arbpipe.symbols import Instrument
from shm_layouts import Flag

_NO_TS = int(Flag.NO_EXCHANGE_TS)
SUBSCRIBE_CHUNK = 200                # streams per SUBSCRIBE frame (<= 1024 per connection)

# Known quote assets of concatenated symbols, longest-suffix-first where they overlap.
QUOTE_SUFFIXES = ("FDUSD", "USDT", "USDC", "USD", "BTC", "ETH")


def split_concatenated(native: str, quotes=QUOTE_SUFFIXES) -> str | None:
    """``BTCUSDT`` -> ``BTC/USDT`` by stripping a known quote suffix; None if none fits.
    Best effort only: the config's per-venue native symbol is authoritative."""
    sym = native.upper()
    if not sym.isalnum():                  # dated futures (BTCUSDT_250627), odd symbols
        return None
    for q in quotes:
        if sym.endswith(q) and len(sym) > len(q):
            return f"{sym[:-len(q)]}/{q}"
    return None


class _Msg(msgspec.Struct, gc=False):
    """Every Binance frame shape in one struct; absent fields keep their default.
    bookTicker: u s b B a A (+ e E T on USD-M); markPriceUpdate: e E s p r T;
    ack: result id; error: error id (or a bare code msg); combined wrapper: stream data;
    serverShutdown: e E."""
    e: str = ""
    E: int = 0
    T: int = 0
    s: str = ""
    u: int | None = None
    b: str | None = None
    B: str | None = None
    a: str | None = None
    A: str | None = None
    p: str | None = None
    r: str | None = None
    result: Any = msgspec.UNSET
    id: Any = msgspec.UNSET
    error: Any = msgspec.UNSET
    code: Any = None
    msg: Any = None
    stream: str | None = None
    data: msgspec.Raw = msgspec.Raw()


_decode = msgspec.json.Decoder(_Msg).decode


class _BinanceBase(VenueAdapter):
    """Shared parsing; subclasses set ``name``, ``default_url``, ``market`` and sockets."""

    _quote_flags: int = 0
    funding_interval_s: int = 8 * 3600
    """markPrice carries no interval; 8 h is the USD-M default. The runtime may set this
    per venue from config (symbols on 4 h / 1 h funding need their own venue entry)."""

    def __init__(self, instruments: list[Instrument], venue_id: int = 0):
        super().__init__(instruments, venue_id)
        # payload ``s`` is uppercase; stream names are lowercase
        self._ids = {i.native.upper(): i.instrument_id for i in instruments}
        self._last_u: dict[str, int] = {}    # bookTicker updateId per symbol
        self._last_E: dict[str, int] = {}    # markPrice event time per symbol

    @staticmethod
    def native_to_canonical(native: str) -> str | None:
        return split_concatenated(native)

    def _subscribe_frames(self, suffix: str, first_id: int) -> list[str]:
        streams = [f"{i.native.lower()}@{suffix}" for i in self.instruments]
        return [json.dumps({"method": "SUBSCRIBE", "params": streams[k:k + SUBSCRIBE_CHUNK],
                            "id": first_id + n})
                for n, k in enumerate(range(0, len(streams), SUBSCRIBE_CHUNK))]

    def on_connect(self, socket_index: int) -> None:
        self._last_u.clear()
        self._last_E.clear()

    # -- parse -----------------------------------------------------------------
    def parse(self, frame, recv_ns: int, sink, socket_index: int = 0) -> Control | None:
        return self._parse(frame, sink, True)

    def _parse(self, frame, sink, outer: bool) -> Control | None:
        m = decode_frame(_decode, frame, sink)
        if m is None:
            return None
        try:
            if m.u is not None:
                self._quote(m, sink)
                return None
            if outer and m.stream is not None and len(m.data):
                return self._parse(m.data, sink, False)   # combined-stream wrapper
            return self._other(m, sink)
        except (ValueError, TypeError, OverflowError, RecursionError):  # float("x"), odd Any
            sink.reject("bad_shape")
            return None

    def _quote(self, m: _Msg, sink) -> None:
        b, bq, a, aq = m.b, m.B, m.a, m.A
        if b is None or bq is None or a is None or aq is None or not m.s:
            sink.reject("bad_shape")
            return
        iid = self._ids.get(m.s)
        if iid is None:
            sink.reject("unknown_symbol")
            return
        bid, ask, bid_qty, ask_qty = float(b), float(a), float(bq), float(aq)
        why = book_reject(bid, ask, bid_qty, ask_qty)
        if why is not None:
            sink.reject(why)
            return
        ts = m.T or m.E                    # USD-M: transaction time, else event time
        if not 0 <= ts <= MAX_MS:
            sink.reject("bad_ts")
            return
        u = m.u
        last = self._last_u.get(m.s, NO_SEQ)
        if u <= last:
            sink.reject(stale_reason(u, last))
            return
        self._last_u[m.s] = u
        flags = self._quote_flags if ts else self._quote_flags | _NO_TS
        sink.quote(iid, bid, ask, bid_qty, ask_qty, ts * MS, flags)

    def _funding(self, m: _Msg, sink) -> None:
        if m.r is None or m.p is None or not m.s or m.E <= 0:
            sink.reject("bad_shape")
            return
        iid = self._ids.get(m.s)
        if iid is None:
            sink.reject("unknown_symbol")
            return
        if m.r == "" or m.T == 0:          # delivery contract: no funding
            sink.reject("no_funding")
            return
        rate, mark = float(m.r), float(m.p)
        if not funding_ok(rate, mark, mark_required=True):
            sink.reject("bad_price")
            return
        if not (0 < m.T <= MAX_MS and m.E <= MAX_MS):
            sink.reject("bad_ts")
            return
        last = self._last_E.get(m.s, NO_SEQ)
        if m.E <= last:
            sink.reject(stale_reason(m.E, last))
            return
        self._last_E[m.s] = m.E
        sink.funding(iid, rate, m.T * MS, self.funding_interval_s, mark, m.E * MS)

    def _other(self, m: _Msg, sink) -> Control | None:
        if m.e == "markPriceUpdate":
            self._funding(m, sink)
            return None
        if m.error is not msgspec.UNSET:
            err = m.error
            if isinstance(err, dict):
                detail = f"code {err.get('code')}: {err.get('msg')}"
            else:
                detail = str(err)
            if m.id is not msgspec.UNSET:
                detail += f" (id={m.id})"
            return Control(kind="error", detail=detail)
        if m.code is not None and m.msg is not None:   # error object without the wrapper
            return Control(kind="error", detail=f"code {m.code}: {m.msg}")
        if m.id is not msgspec.UNSET and m.result is not msgspec.UNSET:
            if m.result is None:
                return Control(kind="ack", detail=f"id={m.id}")
            return Control(kind="other", detail=f"id={m.id} result={m.result!r}"[:200])
        if m.e == "serverShutdown":
            return Control(kind="notice", detail=f"serverShutdown E={m.E}", reconnect=True)
        sink.reject("bad_shape")
        return None


class BinanceSpot(_BinanceBase):
    """Binance spot BBO: ``<symbol>@bookTicker``; no exchange timestamp."""
    name = "binance"
    default_url = "wss://stream.binance.com:9443"
    market = "spot"
    _quote_flags = 0          # NO_EXCHANGE_TS is added because bookTicker has no T/E

    def sockets(self) -> list[SocketSpec]:
        return [SocketSpec(path="/ws", subscribe=self._subscribe_frames("bookTicker", 1))]


class BinanceUsdm(_BinanceBase):
    """Binance USD-M perpetuals: BBO on socket 0 (/public), funding on socket 1 (/market)."""
    name = "binance-usdm"
    default_url = "wss://fstream.binance.com"
    market = "perp"

    def sockets(self) -> list[SocketSpec]:
        public = self._subscribe_frames("bookTicker", 1)
        market = self._subscribe_frames("markPrice@1s", len(public) + 1)
        return [SocketSpec(path="/public/ws", subscribe=public),
                SocketSpec(path="/market/ws", subscribe=market)]

    def on_connect(self, socket_index: int) -> None:
        (self._last_u if socket_index == 0 else self._last_E).clear()
