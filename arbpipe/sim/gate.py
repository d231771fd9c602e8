"""Gate.io v4 spot (``gate``), server side.

Path: ``/ws/v4/`` (docs/venues.md, "Gate").

Protocol: ``{"time":<s>,"channel":"spot.book_ticker","event":"subscribe","payload":["BTC_USDT"]}``
(``time`` in seconds, within 60 s of the server's clock; optional ``id`` echoed) ->
``{"time":..,"time_ms":..,"channel":"spot.book_ticker","event":"subscribe","error":null,
"result":{"status":"success"}}``; an unknown pair fails the request with
``"error":{"code":2,"message":"unknown currency pair: <pair>"},"result":{"status":"fail"}``.
Updates ``{"time","time_ms","channel","event":"update","result":{"t","u","s","b","B","a","A"}}``
(prices and sizes strings, ``t`` ms). Keep-alive: server websocket ping frames; the optional
app ping ``{"channel":"spot.ping"}`` is answered with ``spot.pong``. Planned disconnect:
``{"type":"upgrade","msg":..}``.

L2 books (docs/venues.md, "Gate", "L2 book"): ``spot.order_book_update`` with payload
``[pair, interval]`` (one pair a request; interval ``100ms``) sends one update
per quote of the pair whose book changed, ``{"t","e":"depthUpdate","E","s","U","u","b","a"}``
with the changed levels (size ``0``: removed); the REST snapshot
``GET /api/v4/spot/order_book?currency_pair=P&limit=N&with_id=true`` is served on the same
port (``rest_get``) with ``id`` = the ``u`` of the last update (``DepthBook``, shared with
Binance, with the same book faults).
"""
from __future__ import annotations

import time
from urllib.parse import parse_qs

from arbpipe.sim.binance import DepthBook, depth_faults
from arbpipe.sim.market import Quote, trim
from arbpipe.sim.session import Session, decode_json, encode

U_BASE = 48_000_000
TIME_SKEW_S = 60
DEPTH_CHANNEL = "spot.order_book_update"
DEPTH_INTERVALS = ("100ms",)


class GateSession(Session):
    venue = "gate"
    DEFAULTS = {"ping_interval_s": 20.0, "pong_timeout_s": 60.0}
    PATHS = ("/ws/v4/",)
    REST_PATHS = ("/api/v4/spot/order_book",)

    @classmethod
    def match(cls, path: str, single_port: bool = False) -> bool:
        return path.partition("?")[0].rstrip("/") == "/ws/v4"

    def on_open(self) -> None:
        self.pairs: set[str] = set()           # spot.book_ticker
        self.depth_pairs: set[str] = set()     # spot.order_book_update

    def _reply(self, req: dict, channel: str, event: str, error=None, result=None) -> None:
        now = time.time()
        body = {"time": int(now), "time_ms": int(now * 1000)}
        if "id" in req:
            body["id"] = req["id"]
        body.update({"channel": channel, "event": event, "error": error, "result": result})
        self.send(encode(body))

    def on_message(self, msg) -> None:
        try:
            req = decode_json(msg)
        except ValueError:
            self._reply({}, "", "", error={"code": 1, "message": "invalid request body"},
                        result={"status": "fail"})
            return
        if not isinstance(req, dict):
            self._reply({}, "", "", error={"code": 1, "message": "invalid request body"},
                        result={"status": "fail"})
            return
        channel = req.get("channel")
        event = req.get("event", "")
        if channel == "spot.ping":
            now = time.time()
            body = {"time": int(now), "time_ms": int(now * 1000)}
            if "id" in req:
                body["id"] = req["id"]
            body.update({"channel": "spot.pong", "event": "", "error": None, "result": None})
            self.send(encode(body))
            return
        if event not in ("subscribe", "unsubscribe"):
            self._reply(req, str(channel), str(event), error={"code": 1, "message": "invalid request body"},
                        result={"status": "fail"})
            return
        t = req.get("time")
        if not isinstance(t, int) or abs(t - time.time()) > TIME_SKEW_S:
            self._reply(req, str(channel), event,
                        error={"code": 2, "message": "invalid argument: time must be within 60s of server time"},
                        result={"status": "fail"})
            return
        if channel == DEPTH_CHANNEL:
            self._depth_request(req, event)
            return
        if channel != "spot.book_ticker":
            self._reply(req, str(channel), event, error={"code": 2, "message": f"unknown channel {channel}"},
                        result={"status": "fail"})
            return
        payload = req.get("payload")
        if not isinstance(payload, list) or not payload or not all(isinstance(p, str) for p in payload):
            self._reply(req, channel, event, error={"code": 2, "message": "invalid argument: payload"},
                        result={"status": "fail"})
            return
        for p in payload:
            if p not in self.hub.by_native or self.refused(p):
                self._reply(req, channel, event, error={"code": 2, "message": f"unknown currency pair: {p}"},
                            result={"status": "fail"})
                return
        for p in payload:
            idx = self.hub.by_native[p].idx
            if event == "subscribe":
                self.pairs.add(p)
                self.add_inst(idx)
            else:
                self.pairs.discard(p)
                if p not in self.depth_pairs:
                    self.remove_inst(idx)
        self._reply(req, channel, event, result={"status": "success"})

    def _depth_request(self, req: dict, event: str) -> None:
        """``spot.order_book_update`` (un)subscribe: payload ``[pair, interval]``."""
        def fail(message: str) -> None:
            self._reply(req, DEPTH_CHANNEL, event, error={"code": 2, "message": message},
                        result={"status": "fail"})

        payload = req.get("payload")
        if not (isinstance(payload, list) and len(payload) == 2
                and all(isinstance(x, str) for x in payload)):
            fail("invalid argument: payload")
            return
        pair, interval = payload
        if pair not in self.hub.by_native or self.refused(pair):
            fail(f"unknown currency pair: {pair}")
            return
        if interval not in DEPTH_INTERVALS:
            fail(f"invalid argument: interval {interval}")
            return
        idx = self.hub.by_native[pair].idx
        if event == "subscribe":
            self.depth_pairs.add(pair)
            self.add_inst(idx)
        else:
            self.depth_pairs.discard(pair)
            if pair not in self.pairs:
                self.remove_inst(idx)
        self._reply(req, DEPTH_CHANNEL, event, result={"status": "success"})

    def on_quote(self, q: Quote) -> None:
        im = self.model.instruments[q.inst]
        if im.native in self.depth_pairs:
            d = DepthBook.of(self.hub, U_BASE).diff_for(q)
            if d is not None:
                depth_faults(self, self.depth_update(q, d))
        if im.native not in self.pairs:
            return
        now = time.time()
        ms = int(now * 1000)
        self.send(encode({"time": int(now), "time_ms": ms, "channel": "spot.book_ticker", "event": "update",
                          "result": {"t": ms - 1, "u": U_BASE + q.n, "s": im.native,
                                     "b": trim(im.px(q.bid)), "B": trim(im.qty(q.bid_lots)),
                                     "a": trim(im.px(q.ask)), "A": trim(im.qty(q.ask_lots))}}), data=True)

    # -- L2 books ------------------------------------------------------------------------
    @staticmethod
    def _rows(im, rows) -> list[list[str]]:
        return [[trim(im.px(p)), trim(im.qty(n))] for p, n in rows]

    def depth_update(self, q: Quote, d) -> bytes:
        im = self.model.instruments[q.inst]
        U, u, _pu, bids, asks = d
        now = time.time()
        ms = int(now * 1000)
        return encode({"time": int(now), "time_ms": ms, "channel": DEPTH_CHANNEL,
                       "event": "update",
                       "result": {"t": ms - 1, "e": "depthUpdate", "E": int(now), "s": im.native,
                                  "U": U, "u": u, "b": self._rows(im, bids),
                                  "a": self._rows(im, asks)}})

    @classmethod
    def rest_get(cls, hub, path: str, query: str) -> tuple[int, bytes]:
        """``GET /api/v4/spot/order_book?currency_pair=P&limit=N&with_id=true``."""
        args = {k: v[-1] for k, v in parse_qs(query).items()}
        pair = args.get("currency_pair", "")
        im = hub.by_native.get(pair)
        if im is None:
            return 400, encode({"label": "INVALID_CURRENCY_PAIR",
                                "message": f"Invalid currency pair: {pair}"})
        try:
            limit = int(args.get("limit", "10"))
        except ValueError:
            limit = 0
        if limit < 1:
            return 400, encode({"label": "INVALID_PARAM_VALUE", "message": "Invalid limit"})
        status, snap = DepthBook.of(hub, U_BASE).serve(im.idx, limit)
        if snap is None:
            return status, b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
        last_id, bids, asks = snap
        ms = int(time.time() * 1000)
        body = {"current": ms, "update": ms - 1,
                "asks": cls._rows(im, asks), "bids": cls._rows(im, bids)}
        if args.get("with_id") == "true":
            body = {"id": last_id, **body}
        return status, encode(body)

    def notice_frames(self) -> list[bytes]:
        return [encode({"type": "upgrade",
                        "msg": "The connection will soon be closed for a service upgrade. Please reconnect."})]

