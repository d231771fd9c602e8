"""Binance spot (``binance``) and USD-M futures (``binance-usdm``), server side.

Paths (docs/venues.md, "Binance"):
  spot   ``/ws`` (live SUBSCRIBE), ``/ws/<stream>[/<stream>...]`` (raw streams),
         ``/stream?streams=a/b`` (combined wrapper ``{"stream":..,"data":..}``).
  USD-M  the same under ``/public`` (``@bookTicker``) and ``/market`` (``@markPrice``,
         ``@markPrice@1s``); a stream on the wrong route is accepted and stays silent.
         Unrouted ``/ws`` / ``/stream`` behave as ``/public`` (own-port mode only).

Protocol: ``{"method":"SUBSCRIBE","params":[..],"id":1}`` -> ``{"result":null,"id":1}``;
an unknown symbol is accepted and never delivers (no error); a malformed request gets
``{"error":{"code":2,"msg":"Invalid request: .."},"id":..}``; invalid JSON
``{"error":{"code":3,"msg":"Invalid JSON: .."}}`` (USD-M then disconnects). Spot
bookTicker has no time field; USD-M bookTicker has ``E`` / ``T``. Server websocket ping
frames (spot 20 s, USD-M 3 min; closed without a pong within 1 / 10 min); incoming
messages limited to 5 / 10 per second; 24 h lifetime; ``serverShutdown`` notice.
"""
from __future__ import annotations

import re
import time
from urllib.parse import parse_qs

from arbpipe.sim.market import Quote, decimal_str, pad, wall_ms
from arbpipe.sim.session import Session, decode_json, encode

_STREAM_RE = re.compile(r"^[a-z0-9_\-]+@[A-Za-z0-9_@]+$")
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
U_BASE = 40_000_000_000


def _err(code: int, msg: str, rid=...) -> bytes:
    body = {"error": {"code": code, "msg": msg}}
    if rid is not ...:
        body["id"] = rid
    return encode(body)


class BinanceSession(Session):
    """Binance spot."""

    venue = "binance"
    DEFAULTS = {"ping_interval_s": 20.0, "pong_timeout_s": 60.0, "incoming_limit_per_s": 5,
                "lifetime_s": 86400.0}
    PATHS = ("/ws", "/ws/<stream>", "/stream?streams=<a>/<b>")
    PREFIXES: tuple[str, ...] = ("",)
    DATA_STREAMS = {"bookTicker": "public"}          # stream type -> route that delivers it
    DISCONNECT_ON_BAD_JSON = False

    @classmethod
    def _split(cls, path: str, single_port: bool) -> tuple[str, str, str] | None:
        """(route, mode, rest) for a path this venue serves, else None."""
        p, _, query = path.partition("?")
        for prefix in cls.PREFIXES:
            if prefix and not p.startswith(prefix + "/"):
                continue
            rest = p[len(prefix):]
            route = prefix.strip("/") or "public"
            if rest == "/ws" or rest.startswith("/ws/"):
                return route, "raw", rest[4:]
            if rest == "/stream" or rest == "/stream/":
                return route, "combined", query
        return None

    @classmethod
    def match(cls, path: str, single_port: bool = False) -> bool:
        return cls._split(path, single_port) is not None

    # -- connection ------------------------------------------------------------------
    def on_open(self) -> None:
        route, mode, rest = self._split(self.path, False)
        self.route = route
        self.combined = mode == "combined"
        self.streams: dict[str, tuple] = {}      # stream name -> (inst index | None, type)
        self.mark_streams: dict[str, tuple[int, float, float]] = {}   # name -> (inst, period, next due)
        if mode == "raw":
            names = [s for s in rest.split("/") if s]
        else:
            names = [s for s in parse_qs(rest).get("streams", [""])[0].split("/") if s]
        for name in names:
            self._add_stream(name)
        if self.route == "market":
            self.spawn(self._every(0.1, self._mark_tick))

    def _parse_stream(self, name: str) -> tuple[int | None, str] | None:
        """(instrument index or None when unknown, stream type); None when malformed."""
        if not isinstance(name, str) or not _STREAM_RE.match(name):
            return None
        sym, _, typ = name.partition("@")
        im = self.hub.by_native.get(sym.upper())
        return (im.idx if im is not None else None), typ

    def _add_stream(self, name: str) -> None:
        parsed = self._parse_stream(name)
        if parsed is None:
            return
        inst, typ = parsed
        self.streams[name] = (inst, typ)
        self.ever_subscribed = True
        if inst is None or self.DATA_STREAMS.get(typ) != self.route:
            return                                  # well-formed but nothing to deliver: silence
        if typ == "bookTicker":
            self.add_inst(inst)
        elif typ.startswith("markPrice"):
            period = 1.0 if typ.endswith("@1s") else 3.0
            self.mark_streams[name] = (inst, period, time.monotonic() + period)

    def _remove_stream(self, name: str) -> None:
        entry = self.streams.pop(name, None)
        self.mark_streams.pop(name, None)
        if entry and entry[0] is not None and entry[1] == "bookTicker":
            if not any(v[0] == entry[0] and v[1] == "bookTicker" for v in self.streams.values()):
                self.remove_inst(entry[0])

    # -- requests --------------------------------------------------------------------
    def on_message(self, msg) -> None:
        try:
            req = decode_json(msg)
        except ValueError:
            self.send(_err(3, "Invalid JSON: expected value at line 1 column 1"))
            if self.DISCONNECT_ON_BAD_JSON:
                self.close(1008, "Invalid JSON")
            return
        if not isinstance(req, dict):
            self.send(_err(2, "Invalid request: expected an object"))
            return
        rid = req.get("id")
        method = req.get("method")
        if method is None:
            self.send(_err(2, "Invalid request: missing field `method`", rid))
            return
        if method not in _METHODS:
            choices = ", ".join(f"`{m}`" for m in _METHODS)
            self.send(_err(2, f"Invalid request: unknown variant `{method}`, expected one of {choices}", rid))
            return
        params = req.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not params:
                self.send(_err(2, "Invalid request: invalid params", rid))
                return
            parsed = [self._parse_stream(s) for s in params]
            if any(p is None for p in parsed):
                self.send(_err(2, "Invalid request: invalid stream", rid))
                return
            if method == "SUBSCRIBE":
                if any(inst is not None and self.refused(self.model.instruments[inst].native)
                       for inst, _ in parsed):
                    self.send(_err(2, "Invalid request: invalid stream", rid))
                    return
                for s in params:
                    self._add_stream(s)
            else:
                for s in params:
                    self._remove_stream(s)
            self.send(encode({"result": None, "id": rid}))
        elif method == "LIST_SUBSCRIPTIONS":
            self.send(encode({"result": list(self.streams), "id": rid}))
        elif method == "SET_PROPERTY":
            if isinstance(params, list) and len(params) == 2 and params[0] == "combined" \
                    and isinstance(params[1], bool):
                self.combined = params[1]
                self.send(encode({"result": None, "id": rid}))
            else:
                self.send(_err(0, "Unknown property", rid))
        else:  # GET_PROPERTY
            if isinstance(params, list) and params == ["combined"]:
                self.send(encode({"result": self.combined, "id": rid}))
            else:
                self.send(_err(0, "Unknown property", rid))

    # -- data --------------------------------------------------------------------------
    def _wrap(self, stream: str, payload: dict) -> bytes:
        if self.combined:
            return encode({"stream": stream, "data": payload})
        return encode(payload)

    def book_ticker(self, q: Quote) -> dict:
        im = self.model.instruments[q.inst]
        return {"u": U_BASE + q.n, "s": im.native,
                "b": pad(im.px(q.bid), 8), "B": pad(im.qty(q.bid_lots), 8),
                "a": pad(im.px(q.ask), 8), "A": pad(im.qty(q.ask_lots), 8)}

    def on_quote(self, q: Quote) -> None:
        im = self.model.instruments[q.inst]
        name = im.native.lower() + "@bookTicker"
        if name in self.streams:
            self.send(self._wrap(name, self.book_ticker(q)), data=True)

    def _mark_tick(self) -> None:
        if not self.mark_streams:
            return
        now = time.monotonic()
        for name, (inst, period, due) in list(self.mark_streams.items()):
            if now >= due:
                self.mark_streams[name] = (inst, period, max(due + period, now))
                self.send(self._wrap(name, self.mark_price(inst)), data=True)

    def mark_price(self, inst: int) -> dict:
        im = self.model.instruments[inst]
        t = self.hub.clock.now_ms()
        mark = self.model.mark_price(inst, t)
        index = self.model.mark_price(inst, t - 250.0)
        rate = self.model.funding_rate(inst, t)
        return {"e": "markPriceUpdate", "E": wall_ms(), "s": im.native,
                "p": pad(im.px(im.to_ticks(mark)), 8), "ap": pad(im.px(im.to_ticks(mark)), 8),
                "i": decimal_str(index, 8), "P": decimal_str(mark * (1 + rate / 2), 8),
                "r": decimal_str(rate, 8), "T": self.model.next_funding_ms()}

    def notice_frames(self) -> list[bytes]:
        body = {"e": "serverShutdown", "E": wall_ms()}
        if self.combined:
            return [encode({"stream": "!serverShutdown", "data": body})]
        return [encode(body)]


class BinanceUsdmSession(BinanceSession):
    """Binance USD-M futures: routed ``/public`` and ``/market`` paths."""

    venue = "binance-usdm"
    DEFAULTS = {"ping_interval_s": 180.0, "pong_timeout_s": 600.0, "incoming_limit_per_s": 10,
                "lifetime_s": 86400.0}
    PATHS = ("/public/ws", "/public/ws/<stream>", "/public/stream?streams=..",
             "/market/ws", "/market/ws/<stream>", "/market/stream?streams=..")
    PREFIXES = ("/public", "/market", "")
    DATA_STREAMS = {"bookTicker": "public", "markPrice": "market", "markPrice@1s": "market"}
    DISCONNECT_ON_BAD_JSON = True

    @classmethod
    def match(cls, path: str, single_port: bool = False) -> bool:
        split = cls._split(path, single_port)
        if split is None:
            return False
        # unrouted /ws and /stream belong to binance spot when every venue shares a port
        p = path.partition("?")[0]
        return not (single_port and not (p.startswith("/public/") or p.startswith("/market/")))

    def book_ticker(self, q: Quote) -> dict:
        im = self.model.instruments[q.inst]
        now = wall_ms()
        return {"e": "bookTicker", "u": U_BASE + q.n, "E": now, "T": now - 1, "s": im.native,
                "b": im.px(q.bid), "B": im.qty(q.bid_lots), "a": im.px(q.ask), "A": im.qty(q.ask_lots)}
