"""Gate.io v4 spot: ``spot.book_ticker``.

Wire (docs/venues.md, "Gate"): one socket ``/ws/v4/``; the subscribe frame
carries ``time`` in unix seconds (must be within 60 s of server time, so
``sockets()`` must be called at each connect). Each update's ``result`` holds
``t`` (order-book time, ms), ``u`` (order-book update id, per symbol) and the
best bid/ask price and size as strings ``b``/``B``/``a``/``A``. The server keeps
the connection alive with protocol-level pings (no application ping needed).

Units produced: prices in quote currency, sizes in base units, timestamps ns.
A repeated ``u`` is rejected as ``duplicate``, a smaller one as ``out_of_order``.
"""
from __future__ import annotations

import re
import time

import msgspec

from arbpipe.feeds.venues.base import Control, SocketSpec, VenueAdapter, decode_frame
from arbpipe.feeds.venues.checks import MAX_MS, MS, NO_SEQ, book_reject, stale_reason
from arbpipe.symbols import Instrument


class _Result(msgspec.Struct):
    """``result`` of a book_ticker update, or ``{"status": ...}`` of an ack."""
    t: int | None = None
    u: int | None = None
    s: str = ""
    bid: str = msgspec.field(default="", name="b")
    bid_qty: str = msgspec.field(default="", name="B")
    ask: str = msgspec.field(default="", name="a")
    ask_qty: str = msgspec.field(default="", name="A")
    status: str = ""


class _Error(msgspec.Struct):
    code: int | None = None
    message: str = ""


class _Msg(msgspec.Struct):
    channel: str = ""
    event: str = ""
    result: _Result | None = None
    error: _Error | None = None
    type: str = ""           # {"type": "upgrade", "msg": ...}
    msg: str = ""


_decode = msgspec.json.Decoder(_Msg).decode
_PAIR_IN_TEXT = re.compile(r"([A-Z0-9]+_[A-Z0-9]+)")


class GateAdapter(VenueAdapter):
    """Gate.io v4 spot BBO from ``spot.book_ticker``."""

    name = "gate"
    default_url = "wss://api.gateio.ws"
    market = "spot"
    path = "/ws/v4/"
    refusal_fails_request = True     # an unknown pair fails the whole subscribe request

    def __init__(self, instruments: list[Instrument], venue_id: int = 0):
        super().__init__(instruments, venue_id)
        self._last_u: dict[str, int] = {}

    def sockets(self) -> list[SocketSpec]:
        sub = {"time": int(time.time()), "channel": "spot.book_ticker", "event": "subscribe",
               "payload": [i.native for i in self.subscribable()]}
        return [SocketSpec(self.path, [msgspec.json.encode(sub).decode()])]

    def on_connect(self, socket_index: int) -> None:
        self._last_u.clear()

    def _parse(self, frame, sink) -> Control | None:
        m = decode_frame(_decode, frame, sink)
        if m is None:
            return None
        ch, ev = m.channel, m.event
        if ch == "spot.book_ticker" and ev == "update":
            self._book_ticker(m.result, sink)
            return None
        if ev in ("subscribe", "unsubscribe"):
            err = m.error
            if err is not None or (m.result is not None and m.result.status not in ("", "success")):
                text = err.message if err is not None else ""
                found = _PAIR_IN_TEXT.search(text)
                code = err.code if err is not None else ""
                return Control("error", detail=f"{ch} {ev} {code} {text}".strip(),
                               symbol=found.group(1) if found else "")
            return Control("ack", detail=f"{ev} {ch}")
        if ch == "spot.pong":
            return Control("pong")
        if m.type == "upgrade":
            return Control("notice", detail=m.msg, reconnect=True)
        if m.error is not None:
            return Control("error", detail=f"{m.error.code} {m.error.message}")
        sink.reject("unknown_channel" if ch else "bad_shape")
        return None

    def _book_ticker(self, r: _Result | None, sink) -> None:
        if r is None or r.t is None or r.u is None:
            sink.reject("bad_shape")
            return
        inst = self.by_native.get(r.s)
        if inst is None:
            sink.reject("unknown_symbol")
            return
        u, sym = r.u, r.s
        prev = self._last_u.get(sym, NO_SEQ)
        if u <= prev:
            sink.reject(stale_reason(u, prev))
            return
        try:
            bid, bq, ask, aq = float(r.bid), float(r.bid_qty), float(r.ask), float(r.ask_qty)
        except ValueError:
            sink.reject("bad_shape")
            return
        why = book_reject(bid, ask, bq, aq)
        if why is not None:
            sink.reject(why)
            return
        if not 0 <= r.t <= MAX_MS:
            sink.reject("bad_shape")
            return
        self._last_u[sym] = u
        sink.quote(inst.instrument_id, bid, ask, bq, aq, r.t * MS)

    @staticmethod
    def native_to_canonical(native: str) -> str | None:
        """``BTC_USDT`` -> ``BTC/USDT``."""
        parts = native.split("_")
        if len(parts) == 2 and parts[0] and parts[1]:
            return f"{parts[0]}/{parts[1]}"
        return None
