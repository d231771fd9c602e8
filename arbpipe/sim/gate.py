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
"""
from __future__ import annotations

import time

from arbpipe.sim.market import Quote, trim
from arbpipe.sim.session import Session, decode_json, encode

U_BASE = 48_000_000
TIME_SKEW_S = 60


class GateSession(Session):
    venue = "gate"
    DEFAULTS = {"ping_interval_s": 20.0, "pong_timeout_s": 60.0}
    PATHS = ("/ws/v4/",)

    @classmethod
    def match(cls, path: str, single_port: bool = False) -> bool:
        return path.partition("?")[0].rstrip("/") == "/ws/v4"

    def on_open(self) -> None:
        self.pairs: set[str] = set()

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
                self.remove_inst(idx)
        self._reply(req, channel, event, result={"status": "success"})

    def on_quote(self, q: Quote) -> None:
        im = self.model.instruments[q.inst]
        if im.native not in self.pairs:
            return
        now = time.time()
        ms = int(now * 1000)
        self.send(encode({"time": int(now), "time_ms": ms, "channel": "spot.book_ticker", "event": "update",
                          "result": {"t": ms - 1, "u": U_BASE + q.n, "s": im.native,
                                     "b": trim(im.px(q.bid)), "B": trim(im.qty(q.bid_lots)),
                                     "a": trim(im.px(q.ask)), "A": trim(im.qty(q.ask_lots))}}), data=True)

    def notice_frames(self) -> list[bytes]:
        return [encode({"type": "upgrade",
                        "msg": "The connection will soon be closed for a service upgrade. Please reconnect."})]

