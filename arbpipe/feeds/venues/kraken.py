"""Kraken spot WebSocket v2: ``ticker`` with ``event_trigger: "bbo"``.

Wire (docs/venues.md, "Kraken"): one socket ``/v2``; ticker data items carry
``bid``/``bid_qty``/``ask``/``ask_qty`` as JSON numbers (base-asset quantities)
and ``timestamp`` RFC3339 with microseconds. No sequence number. The server sends
``{"channel":"heartbeat"}`` about once a second once subscribed; the optional
client ping ``{"method":"ping"}`` is answered with ``{"method":"pong"}``.
Symbols are ``BASE/QUOTE`` with ``BTC`` (not ``XBT``).

Units produced: prices in quote currency, sizes in base units, timestamps ns.
The first push after subscribing (``type: snapshot``) carries ``Flag.SNAPSHOT``.
"""
from __future__ import annotations

import re

import msgspec

from arbpipe.feeds.venues.base import Control, SocketSpec, VenueAdapter, decode_frame
from arbpipe.feeds.venues.checks import book_reject
from arbpipe.feeds.venues.coinbase import rfc3339_ns
from shm_layouts import Flag

_SNAPSHOT = int(Flag.SNAPSHOT)
_NO_TS = int(Flag.NO_EXCHANGE_TS)


class _Ticker(msgspec.Struct):
    """A ``data[]`` item (ticker; the fields of other channels are ignored)."""
    symbol: str = ""
    bid: float | None = None
    bid_qty: float | None = None
    ask: float | None = None
    ask_qty: float | None = None
    timestamp: str = ""
    system: str = ""         # status channel


class _Result(msgspec.Struct):
    channel: str = ""
    symbol: str = ""


class _Msg(msgspec.Struct):
    channel: str = ""
    type: str = ""
    data: list[_Ticker] | None = None
    method: str = ""
    success: bool | None = None
    result: _Result | None = None
    error: str | None = None
    symbol: str = ""


_decode = msgspec.json.Decoder(_Msg).decode
_PAIR_IN_TEXT = re.compile(r"\b([A-Za-z0-9]+/[A-Za-z0-9]+)\b")


class KrakenAdapter(VenueAdapter):
    """Kraken v2 spot BBO from the ``ticker`` channel (``event_trigger: bbo``)."""

    name = "kraken"
    default_url = "wss://ws.kraken.com"
    market = "spot"
    path = "/v2"

    def sockets(self) -> list[SocketSpec]:
        sub = {"method": "subscribe",
               "params": {"channel": "ticker", "symbol": [i.native for i in self.instruments],
                          "event_trigger": "bbo", "snapshot": True},
               "req_id": 1}
        return [SocketSpec(self.path, [msgspec.json.encode(sub).decode()],
                           ping_text='{"method":"ping"}', ping_interval_s=20.0)]

    def _parse(self, frame, sink) -> Control | None:
        m = decode_frame(_decode, frame, sink)
        if m is None:
            return None
        ch = m.channel
        if ch == "ticker":
            self._ticker(m.data or [], m.type == "snapshot", sink)
            return None
        if ch == "heartbeat":
            return Control("heartbeat")
        if m.method:
            return self._method(m)
        if ch == "status":
            system = m.data[0].system if m.data else ""
            return Control("other", detail=f"status {system}".strip())
        sink.reject("unknown_channel" if ch else "bad_shape")
        return None

    def _ticker(self, data: list[_Ticker], snapshot: bool, sink) -> None:
        if not data:
            sink.reject("bad_shape")
            return
        by_native = self.by_native
        for d in data:
            inst = by_native.get(d.symbol)
            if inst is None:
                sink.reject("unknown_symbol")
                continue
            bid, bq, ask, aq = d.bid, d.bid_qty, d.ask, d.ask_qty
            if bid is None or bq is None or ask is None or aq is None:
                sink.reject("bad_shape")
                continue
            why = book_reject(bid, ask, bq, aq)
            if why is not None:
                sink.reject(why)
                continue
            flags = _SNAPSHOT if snapshot else 0
            if d.timestamp:
                ts = rfc3339_ns(d.timestamp)
                if ts < 0:
                    sink.reject("bad_shape")
                    continue
            else:
                ts, flags = 0, flags | _NO_TS
            sink.quote(inst.instrument_id, bid, ask, bq, aq, ts, flags)

    @staticmethod
    def _method(m: _Msg) -> Control:
        method = m.method
        if method == "pong":
            return Control("pong")
        if m.success is False or m.error:
            symbol = m.symbol or (m.result.symbol if m.result else "")
            if not symbol:
                found = _PAIR_IN_TEXT.search(m.error or "")
                symbol = found.group(1) if found else ""
            return Control("error", detail=f"{method}: {m.error or 'failed'}", symbol=symbol)
        if method in ("subscribe", "unsubscribe"):
            r = m.result
            return Control("ack", detail=f"{method} {r.channel if r else ''}".rstrip(),
                           symbol=r.symbol if r else m.symbol)
        return Control("other", detail=method)

    @staticmethod
    def native_to_canonical(native: str) -> str | None:
        """``BTC/USD`` -> ``BTC/USD`` (v2 names are already BASE/QUOTE)."""
        parts = native.split("/")
        if len(parts) == 2 and parts[0] and parts[1]:
            return native
        return None
