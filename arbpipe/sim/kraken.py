"""Kraken spot websocket v2 (``kraken``), server side.

Path: ``/v2`` (docs/venues.md, "Kraken").

On connect the server sends a ``status`` frame. ``{"method":"subscribe","params":
{"channel":"ticker","symbol":[..],"event_trigger":"bbo"},"req_id":1}`` is acked once per
symbol ``{"method":"subscribe","result":{..},"success":true,"time_in":..,"time_out":..,
"req_id":1}``; an unknown symbol gets ``{"error":"Currency pair not supported <sym>",
"method":"subscribe","success":false,"symbol":<sym>,..}``. Prices and sizes are JSON
numbers. ``ticker``: snapshot then updates, on every BBO change (``event_trigger:"bbo"``)
or on trades (default ``"trades"``). ``book`` (depth 10/25/100/500/1000): snapshot and
updates with the CRC32 ``checksum`` of the top 10 levels formatted with the pair's fixed
precision; ``qty: 0`` deletes a level, levels pushed out of the subscribed depth are not
sent (the client truncates). ``instrument``: one snapshot of the pairs' precisions.
After the first subscription ``{"channel":"heartbeat"}`` comes every ``heartbeat_s``
(1 s) in which nothing else was sent. ``{"method":"ping","req_id":n}`` -> ``pong``.

Depth faults (``FaultConfig``): ``book_checksum_p`` a book update carries a wrong
checksum; ``book_early_diff_p`` at subscribe the snapshot is held back and sent right
after the pair's first update; ``book_duplicate_p`` a book update is sent twice.
"""
from __future__ import annotations

import time
import zlib

from arbpipe.sim.market import Quote, fixed
from arbpipe.sim.session import Session, decode_json, encode, rfc3339_ns

DEPTHS = (10, 25, 100, 500, 1000)
TRIGGERS = ("bbo", "trades")


def _num(text: str) -> float:
    return float(text)


def _ck(text: str) -> str:
    return text.replace(".", "").lstrip("0")


class KrakenSession(Session):
    venue = "kraken"
    DEFAULTS = {"heartbeat_s": 1.0}
    PATHS = ("/v2",)

    @classmethod
    def match(cls, path: str, single_port: bool = False) -> bool:
        return path.partition("?")[0].rstrip("/") == "/v2"

    def on_open(self) -> None:
        self.tickers: dict[str, str] = {}                 # symbol -> event_trigger
        self.books: dict[str, list] = {}                  # symbol -> [depth, bids {ticks: lots}, asks]
        self.held: dict[str, bytes] = {}                  # symbol -> snapshot held back (book_early_diff_p)
        self.instrument_sub = False
        self.hb_mark = time.monotonic()
        self.send(encode({"channel": "status", "type": "update", "data": [{
            "version": "2.0.10", "system": "online", "api_version": "v2",
            "connection_id": self.rng.getrandbits(63)}]}))

    # -- replies -----------------------------------------------------------------------
    def _reply(self, method: str, time_in: str, req_id, *, result=None, error=None, symbol=None) -> None:
        body: dict = {}
        if error is not None:
            body["error"] = error
        body["method"] = method
        if result is not None:
            body["result"] = result
        body["success"] = error is None
        if symbol is not None and error is not None:
            body["symbol"] = symbol
        body["time_in"] = time_in
        body["time_out"] = rfc3339_ns(digits=6)
        if req_id is not None:
            body["req_id"] = req_id
        self.send(encode(body))

    def on_message(self, msg) -> None:
        time_in = rfc3339_ns(digits=6)
        try:
            req = decode_json(msg)
        except ValueError:
            self._reply("", time_in, None, error="Malformed request")
            return
        if not isinstance(req, dict):
            self._reply("", time_in, None, error="Malformed request")
            return
        method = req.get("method")
        req_id = req.get("req_id")
        if method == "ping":
            body = {"method": "pong"}
            if req_id is not None:
                body["req_id"] = req_id
            body.update({"time_in": time_in, "time_out": rfc3339_ns(digits=6)})
            self.send(encode(body))
            return
        if method not in ("subscribe", "unsubscribe"):
            self._reply(str(method), time_in, req_id, error=f"Method not found: {method}")
            return
        params = req.get("params")
        if not isinstance(params, dict):
            self._reply(method, time_in, req_id, error="Missing field: params")
            return
        channel = params.get("channel")
        if channel == "instrument":
            self._instrument(method, params, time_in, req_id)
            return
        if channel not in ("ticker", "book"):
            self._reply(method, time_in, req_id, error=f"Channel {channel} not supported")
            return
        symbols = params.get("symbol")
        if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
            self._reply(method, time_in, req_id, error="Missing field: symbol")
            return
        snapshot = params.get("snapshot", True)
        trigger = params.get("event_trigger", "trades")
        depth = params.get("depth", 10)
        if channel == "ticker" and trigger not in TRIGGERS:
            self._reply(method, time_in, req_id, error=f"Invalid event_trigger: {trigger}")
            return
        if channel == "book" and depth not in DEPTHS:
            self._reply(method, time_in, req_id, error=f"Invalid depth: {depth}")
            return
        for sym in symbols:
            im = self.hub.by_native.get(sym)
            if im is None or self.refused(sym):
                self._reply(method, time_in, req_id, error=f"Currency pair not supported {sym}", symbol=sym)
                continue
            if method == "unsubscribe":
                (self.tickers if channel == "ticker" else self.books).pop(sym, None)
                if channel == "book":
                    self.held.pop(sym, None)
                if sym not in self.tickers and sym not in self.books:
                    self.remove_inst(im.idx)
                result = {"channel": channel, "symbol": sym}
                if channel == "book":
                    result = {"channel": channel, "depth": depth, "symbol": sym}
                self._reply(method, time_in, req_id, result=result)
                continue
            already = sym in (self.tickers if channel == "ticker" else self.books)
            if already:
                self._reply(method, time_in, req_id, error="Already subscribed", symbol=sym)
                continue
            if channel == "ticker":
                self.tickers[sym] = trigger
                result = {"channel": "ticker", "symbol": sym, "snapshot": bool(snapshot),
                          "event_trigger": trigger}
            else:
                self.books[sym] = [depth, None, None]
                result = {"channel": "book", "depth": depth, "snapshot": bool(snapshot), "symbol": sym}
            self.add_inst(im.idx)
            self._reply(method, time_in, req_id, result=result)
            q = self.hub.current(im.idx)
            if channel == "ticker":
                if snapshot:
                    self._ticker(sym, q, "snapshot")
            else:
                self._book_snapshot(sym, q, send=bool(snapshot))

    def _instrument(self, method: str, params: dict, time_in: str, req_id) -> None:
        self._reply(method, time_in, req_id, result={"channel": "instrument", "snapshot": True})
        if method != "subscribe":
            self.instrument_sub = False
            return
        self.instrument_sub = True
        self.ever_subscribed = True
        pairs = []
        assets = {}
        for im in self.model.instruments:
            s = im.spec
            assets[s.base] = {"id": s.base, "status": "enabled", "precision": 10, "precision_display": 5,
                              "borrowable": False, "collateral_value": 0.0, "margin_rate": 0.0}
            assets[s.quote] = {"id": s.quote, "status": "enabled", "precision": 4, "precision_display": 2,
                               "borrowable": False, "collateral_value": 1.0, "margin_rate": 0.0}
            pairs.append({"symbol": s.native, "base": s.base, "quote": s.quote, "status": "online",
                          "qty_precision": s.qty_dp, "qty_increment": _num(fixed(1, s.qty_dp)),
                          "price_precision": s.price_dp, "price_increment": _num(fixed(1, s.price_dp)),
                          "cost_precision": 5, "marginable": False, "has_index": True,
                          "cost_min": 0.5, "tick_size": _num(fixed(1, s.price_dp)),
                          "qty_min": _num(fixed(1, s.qty_dp))})
        self.send(encode({"channel": "instrument", "type": "snapshot",
                          "data": {"assets": list(assets.values()), "pairs": pairs}}))

    # -- data ----------------------------------------------------------------------------
    def _ticker(self, sym: str, q: Quote, typ: str) -> None:
        im = self.model.instruments[q.inst]
        last = q.ask if q.trade >= 0 else q.bid
        last_f = _num(im.px(last))
        p0 = im.to_ticks(im.p0)
        self.send(encode({"channel": "ticker", "type": typ, "data": [{
            "symbol": sym, "bid": _num(im.px(q.bid)), "bid_qty": _num(im.qty(q.bid_lots)),
            "ask": _num(im.px(q.ask)), "ask_qty": _num(im.qty(q.ask_lots)), "last": last_f,
            "volume": 997038.98383185, "vwap": _num(im.px(int(p0 * 1.001))),
            "low": _num(im.px(int(p0 * 0.97))), "high": _num(im.px(int(p0 * 1.02))),
            "change": _num(im.px(last - int(p0 * 0.99))),
            "change_pct": round((last / (p0 * 0.99) - 1.0) * 100.0, 2),
            "timestamp": rfc3339_ns(digits=6)}]}), data=True)

    def checksum(self, inst: int, bids: dict, asks: dict) -> int:
        im = self.model.instruments[inst]
        pdp, qdp = im.price_dp, im.qty_dp
        parts = [_ck(fixed(p, pdp)) + _ck(fixed(asks[p], qdp)) for p in sorted(asks)[:10]]
        parts += [_ck(fixed(p, pdp)) + _ck(fixed(bids[p], qdp)) for p in sorted(bids, reverse=True)[:10]]
        return zlib.crc32("".join(parts).encode()) & 0xFFFFFFFF

    def _levels(self, side: dict, inst: int, reverse: bool) -> list[dict]:
        im = self.model.instruments[inst]
        return [{"price": _num(im.px(p)), "qty": _num(im.qty(side[p]))}
                for p in sorted(side, reverse=reverse)]

    def _book_snapshot(self, sym: str, q: Quote, send: bool = True) -> None:
        entry = self.books[sym]
        im = self.model.instruments[q.inst]
        b, a = im.book(q, entry[0])
        bids, asks = dict(b), dict(a)
        entry[1], entry[2] = bids, asks
        if send:
            frame = encode({"channel": "book", "type": "snapshot", "data": [{
                "symbol": sym, "bids": self._levels(bids, q.inst, True), "asks": self._levels(asks, q.inst, False),
                "checksum": self.checksum(q.inst, bids, asks), "timestamp": rfc3339_ns(digits=6)}]})
            p = self.faults.book_early_diff_p
            if p and self.rng.random() < p:
                self.held[sym] = frame           # sent after the first update (fault)
                return
            self.send(frame, data=True)

    def _book_update(self, sym: str, q: Quote) -> None:
        entry = self.books[sym]
        depth, old_b, old_a = entry
        im = self.model.instruments[q.inst]
        b, a = im.book(q, depth)
        bids, asks = dict(b), dict(a)
        entry[1], entry[2] = bids, asks
        up_b, up_a = [], []
        worst_bid = min(bids) if bids else 0
        worst_ask = max(asks) if asks else 0
        for p in old_b:
            if p not in bids and p > worst_bid:           # deleted inside the visible range
                up_b.append({"price": _num(im.px(p)), "qty": 0.0})
        for p in sorted(bids, reverse=True):
            if old_b.get(p) != bids[p]:
                up_b.append({"price": _num(im.px(p)), "qty": _num(im.qty(bids[p]))})
        for p in old_a:
            if p not in asks and p < worst_ask:
                up_a.append({"price": _num(im.px(p)), "qty": 0.0})
        for p in sorted(asks):
            if old_a.get(p) != asks[p]:
                up_a.append({"price": _num(im.px(p)), "qty": _num(im.qty(asks[p]))})
        if up_b or up_a:
            f = self.faults
            ck = self.checksum(q.inst, bids, asks)
            if f.book_checksum_p and self.rng.random() < f.book_checksum_p:
                ck ^= 1 << self.rng.randrange(32)    # a wrong checksum (fault)
            frame = encode({"channel": "book", "type": "update", "data": [{
                "symbol": sym, "bids": up_b, "asks": up_a, "checksum": ck,
                "timestamp": rfc3339_ns(digits=6)}]})
            self.send(frame, data=True)
            if f.book_duplicate_p and self.rng.random() < f.book_duplicate_p:
                self.send(frame, data=True)          # the same update again (fault)
            held = self.held.pop(sym, None)
            if held is not None:
                self.send(held, data=True)

    def on_quote(self, q: Quote) -> None:
        sym = self.model.instruments[q.inst].native
        trig = self.tickers.get(sym)
        if trig == "bbo" or (trig == "trades" and q.trade):
            self._ticker(sym, q, "update")
        if sym in self.books:
            self._book_update(sym, q)

    def heartbeat(self) -> None:
        if not (self.tickers or self.books or self.instrument_sub):
            return
        now = time.monotonic()
        if self.last_data <= self.hb_mark:               # nothing else went out in this period
            self.send(b'{"channel":"heartbeat"}')
        self.hb_mark = now

    def notice_frames(self) -> list[bytes]:
        return [encode({"channel": "status", "type": "update", "data": [{
            "version": "2.0.10", "system": "maintenance", "api_version": "v2",
            "connection_id": self.rng.getrandbits(63)}]})]
