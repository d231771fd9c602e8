"""Bybit v5 public spot (``bybit-spot``) and linear (``bybit-linear``), server side.

Paths: ``/v5/public/spot`` and ``/v5/public/linear`` (docs/venues.md, "Bybit").

Protocol: ``{"req_id":..,"op":"subscribe","args":["orderbook.1.BTCUSDT", ..]}`` gets one
ack for the request; spot ``{"success":true,"ret_msg":"subscribe","conn_id":..,
"req_id":..,"op":"subscribe"}`` (``req_id`` only when sent), linear
``{"success":true,"ret_msg":"","conn_id":..,"req_id":"","op":"subscribe"}``. An
unknown topic or symbol gets ``"success":false`` with ``"error:handler not found,topic:<t>"``;
the valid topics of the same request are subscribed. Spot takes <= 10 args per request.
JSON ping ``{"op":"ping"}`` -> pong, spot without ``req_id``, linear with it.
The connection is cut after ``idle_timeout_s`` (10 min) with neither ping nor data.

Data: ``orderbook.1.<SYM>`` always ``"type":"snapshot"`` (``ts`` before ``type``), one
immediately on subscribe, re-pushed with the same ``u`` after ``repush_s`` (3 s) without
a change. ``tickers.<SYM>``: spot = snapshot only and no bid/ask fields; linear = full
snapshot on subscribe, then deltas carrying only the fields that changed.

Depth books ``orderbook.<D>.<SYM>`` (D in ``DEPTHS`` of the category, > 1): a snapshot of
D levels a side (``InstrumentModel.book``) at subscribe, then at each quote a ``delta``
with the levels that changed or left the D-level window (size ``"0"``) and ``u`` one
above the last (``u`` counts per topic and connection and goes on across a resubscribe);
the client's book is then exactly the window. Faults (``FaultConfig``): ``book_gap_p`` a
delta is not sent but its ``u`` is used; ``book_duplicate_p`` a delta is sent twice;
``book_early_diff_p`` at (re)subscribe a delta comes before the snapshot (the last delta
sent on the topic again, else a made-up one with the ``u`` below the snapshot's).
"""
from __future__ import annotations

import asyncio
import time

from arbpipe.sim.market import Quote, fixed, trim, wall_ms
from arbpipe.sim.session import Session, decode_json, encode

U_BASE = 10_000_000
SEQ_BASE = 7_000_000_000
DEPTHS = {"spot": (1, 50, 200, 1000), "linear": (1, 50, 200, 1000)}   # orderbook.<D>


class BybitSession(Session):
    venue = "bybit-spot"
    category = "spot"
    DEFAULTS = {"idle_timeout_s": 600.0, "repush_s": 3.0}
    PATHS = ("/v5/public/spot",)
    MAX_ARGS = 10

    @classmethod
    def match(cls, path: str, single_port: bool = False) -> bool:
        return path.partition("?")[0].rstrip("/") == cls.PATHS[0]

    def on_open(self) -> None:
        r = self.rng.getrandbits(128)
        h = f"{r:032x}"
        self.conn_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        self.topics: dict[str, tuple[str, int]] = {}     # topic -> (kind, inst)
        self.book_sent: dict[str, list] = {}             # topic -> [quote, monotonic time sent]
        self.ticker_state: dict[str, dict] = {}          # linear tickers: last fields sent
        self.depth_books: dict[str, list] = {}           # topic -> [D, inst, bids, asks]
        self.depth_u: dict[str, int] = {}                # topic -> next u (kept on unsubscribe)
        self.depth_last: dict[str, bytes] = {}           # topic -> last delta frame sent
        self.spawn(self._repush_loop())

    # -- acks ------------------------------------------------------------------------
    def _reply(self, op: str, success: bool, ret_msg: str, req_id) -> bytes:
        body = {"success": success, "ret_msg": ret_msg, "conn_id": self.conn_id}
        if self.category == "spot":
            if req_id is not None:
                body["req_id"] = req_id
        else:
            body["req_id"] = "" if req_id is None else req_id
        body["op"] = op
        return encode(body)

    def on_message(self, msg) -> None:
        try:
            req = decode_json(msg)
        except ValueError:
            self.send(self._reply("", False, "error:request not json", None))
            return
        if not isinstance(req, dict):
            self.send(self._reply("", False, "error:request not json object", None))
            return
        op = req.get("op")
        req_id = req.get("req_id")
        if op == "ping":
            if self.category == "spot":
                self.send(encode({"success": True, "ret_msg": "pong", "conn_id": self.conn_id,
                                  "op": "ping"}))
            else:
                self.send(encode({"success": True, "ret_msg": "pong", "conn_id": self.conn_id,
                                  "req_id": "" if req_id is None else req_id, "op": "ping"}))
            return
        if op not in ("subscribe", "unsubscribe"):
            self.send(self._reply(str(op), False, f"error:unsupported op:{op}", req_id))
            return
        args = req.get("args")
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            self.send(self._reply(op, False, "error:args invalid", req_id))
            return
        if op == "subscribe" and self.category == "spot" and len(args) > self.MAX_ARGS:
            self.send(self._reply(op, False, f"args size >{self.MAX_ARGS}", req_id))
            return
        if op == "unsubscribe":
            for topic in args:
                self._drop_topic(topic)
            self.send(self._reply(op, True, "unsubscribe" if self.category == "spot" else "", req_id))
            return
        bad = []
        new = []
        for topic in args:
            parsed = self._parse_topic(topic)
            if parsed is None:
                bad.append(f"error:handler not found,topic:{topic}")
            elif topic in self.topics:
                bad.append(f"error:already subscribed,topic:{topic}")
            else:
                new.append((topic, parsed))
        for topic, (kind, inst) in new:
            self.topics[topic] = (kind, inst)
            self.add_inst(inst)
        if bad:
            self.send(self._reply(op, False, ";".join(bad), req_id))
        else:
            self.send(self._reply(op, True, "subscribe" if self.category == "spot" else "", req_id))
        for topic, (kind, inst) in new:              # initial snapshots follow the ack
            q = self.hub.current(inst)
            if kind == "book":
                self._send_book(topic, q)
            elif kind == "depth":
                self._depth_subscribe(topic, q)
            else:
                self._send_ticker(topic, q, snapshot=True)

    def _parse_topic(self, topic: str) -> tuple[str, int] | None:
        parts = topic.split(".")
        if len(parts) == 3 and parts[0] == "orderbook" and parts[1] == "1":
            kind, sym = "book", parts[2]
        elif len(parts) == 3 and parts[0] == "orderbook" and parts[1].isdigit() and \
                int(parts[1]) in DEPTHS[self.category]:
            kind, sym = "depth", parts[2]
        elif len(parts) == 2 and parts[0] == "tickers":
            kind, sym = "ticker", parts[1]
        else:
            return None
        im = self.hub.by_native.get(sym)
        if im is None or self.refused(sym):
            return None
        return kind, im.idx

    def _drop_topic(self, topic: str) -> None:
        entry = self.topics.pop(topic, None)
        self.book_sent.pop(topic, None)
        self.ticker_state.pop(topic, None)
        self.depth_books.pop(topic, None)
        if entry and not any(v[1] == entry[1] for v in self.topics.values()):
            self.remove_inst(entry[1])

    # -- data --------------------------------------------------------------------------
    def _send_book(self, topic: str, q: Quote) -> None:
        im = self.model.instruments[q.inst]
        now = wall_ms()
        self.send(encode({
            "topic": topic, "ts": now, "type": "snapshot",
            "data": {"s": im.native, "b": [[im.px(q.bid), im.qty(q.bid_lots)]],
                     "a": [[im.px(q.ask), im.qty(q.ask_lots)]],
                     "u": U_BASE + q.n + 1, "seq": SEQ_BASE + 3 * (q.n + 1)},
            "cts": now - 2}), data=True)
        self.book_sent[topic] = [q, time.monotonic()]

    # -- depth books (orderbook.<D>, D > 1) -------------------------------------------
    def _depth_frame(self, topic: str, typ: str, q: Quote, bids: list, asks: list,
                     u: int) -> bytes:
        im = self.model.instruments[q.inst]
        now = wall_ms()
        return encode({
            "topic": topic, "ts": now, "type": typ,
            "data": {"s": im.native,
                     "b": [[im.px(p), im.qty(n) if n else "0"] for p, n in bids],
                     "a": [[im.px(p), im.qty(n) if n else "0"] for p, n in asks],
                     "u": u, "seq": SEQ_BASE + 3 * (q.n + 1)},
            "cts": now - 2})

    def _depth_subscribe(self, topic: str, q: Quote) -> None:
        levels = int(topic.split(".")[1])
        im = self.model.instruments[q.inst]
        b, a = im.book(q, levels)
        u = self.depth_u.get(topic, U_BASE + 10 * (q.n + 2))
        f = self.faults
        if f.book_early_diff_p and self.rng.random() < f.book_early_diff_p:
            early = self.depth_last.get(topic)
            if early is None:                       # nothing sent yet: a made-up delta
                early = self._depth_frame(topic, "delta", q, b[:1], a[:1], u - 1)
            self.send(early, data=True)
        self.send(self._depth_frame(topic, "snapshot", q, b, a, u), data=True)
        self.depth_books[topic] = [levels, q.inst, dict(b), dict(a)]
        self.depth_u[topic] = u + 1

    def _depth_update(self, topic: str, entry: list, q: Quote) -> None:
        levels, _, old_b, old_a = entry
        b, a = self.model.instruments[q.inst].book(q, levels)
        bids, asks = dict(b), dict(a)
        entry[2], entry[3] = bids, asks
        up_b = [(p, 0) for p in old_b if p not in bids] + [
            (p, n) for p, n in b if old_b.get(p) != n]
        up_a = [(p, 0) for p in old_a if p not in asks] + [
            (p, n) for p, n in a if old_a.get(p) != n]
        if not up_b and not up_a:
            return
        u = self.depth_u[topic]
        self.depth_u[topic] = u + 1
        f = self.faults
        if f.book_gap_p and self.rng.random() < f.book_gap_p:
            return                                  # its u is used: the client sees a gap
        frame = self._depth_frame(topic, "delta", q, up_b, up_a, u)
        self.depth_last[topic] = frame
        self.send(frame, data=True)
        if f.book_duplicate_p and self.rng.random() < f.book_duplicate_p:
            self.send(frame, data=True)

    def _ticker_fields(self, q: Quote) -> dict:
        im = self.model.instruments[q.inst]
        last = q.ask if q.trade >= 0 else q.bid
        p0 = im.to_ticks(im.p0)
        return {"symbol": im.native, "lastPrice": im.px(last), "highPrice24h": im.px(int(p0 * 1.02)),
                "lowPrice24h": im.px(int(p0 * 0.97)), "prevPrice24h": im.px(int(p0 * 0.99)),
                "volume24h": fixed(int(2e9 / max(q.fair, 1e-9)), 3), "turnover24h": "2000000000.0000",
                "price24hPcnt": "0.0101", "usdIndexPrice": trim(f"{q.fair:.8f}")}

    def _send_ticker(self, topic: str, q: Quote, snapshot: bool) -> None:
        if self.category == "spot":
            self.send(encode({"topic": topic, "ts": wall_ms(), "type": "snapshot",
                              "cs": SEQ_BASE + q.n + 1, "data": self._ticker_fields(q)}), data=True)
            return
        im = self.model.instruments[q.inst]
        t = self.hub.clock.now_ms()
        mark = im.px(im.to_ticks(self.model.mark_price(q.inst, t)))
        index = im.px(im.to_ticks(self.model.mark_price(q.inst, t - 250.0)))
        rate = self.model.funding_rate(q.inst, t)
        last = im.px(q.ask if q.trade >= 0 else q.bid)
        p0 = im.to_ticks(im.p0)
        fields = {
            "symbol": im.native, "tickDirection": "PlusTick" if q.trade >= 0 else "MinusTick",
            "price24hPcnt": "0.012", "lastPrice": last, "prevPrice24h": im.px(int(p0 * 0.99)),
            "highPrice24h": im.px(int(p0 * 1.02)), "lowPrice24h": im.px(int(p0 * 0.97)),
            "prevPrice1h": im.px(int(p0 * 0.999)), "markPrice": mark, "indexPrice": index,
            "openInterest": "492373.72", "openInterestValue": "32824881841.75",
            "turnover24h": "4936790807.6521", "volume24h": "73191.3870",
            "fundingIntervalHour": str(self.cfg.funding_interval_h), "fundingCap": "0.005",
            "nextFundingTime": str(self.model.next_funding_ms()),
            "fundingRate": trim(f"{rate:.8f}") if rate else "0",
            "bid1Price": im.px(q.bid), "bid1Size": im.qty(q.bid_lots),
            "ask1Price": im.px(q.ask), "ask1Size": im.qty(q.ask_lots),
            "preOpenPrice": "", "preQty": "", "curPreListingPhase": ""}
        prev = self.ticker_state.get(topic)
        self.ticker_state[topic] = fields
        if snapshot or prev is None:
            self.send(encode({"topic": topic, "type": "snapshot", "data": fields,
                              "cs": SEQ_BASE + q.n + 1, "ts": wall_ms()}), data=True)
            return
        delta = {"symbol": im.native}
        for k, v in fields.items():
            if prev.get(k) != v:
                delta[k] = v
        if len(delta) > 1:
            self.send(encode({"topic": topic, "type": "delta", "data": delta,
                              "cs": SEQ_BASE + q.n + 1, "ts": wall_ms()}), data=True)

    def on_quote(self, q: Quote) -> None:
        native = self.model.instruments[q.inst].native
        book = "orderbook.1." + native
        if book in self.topics:
            self._send_book(book, q)
        if self.depth_books:
            for topic, entry in list(self.depth_books.items()):
                if entry[1] == q.inst:
                    self._depth_update(topic, entry, q)
        tick = "tickers." + native
        if tick in self.topics and (self.category == "linear" or q.trade):
            self._send_ticker(tick, q, snapshot=False)

    async def _repush_loop(self) -> None:
        period = self.t.repush_s
        if not period:
            return
        while True:
            await asyncio.sleep(period / 3.0)
            now = time.monotonic()
            for topic, (q, sent) in list(self.book_sent.items()):
                if now - sent >= period and topic in self.topics:
                    self._send_book(topic, q)        # same quote -> same u and seq


class BybitLinearSession(BybitSession):
    venue = "bybit-linear"
    category = "linear"
    PATHS = ("/v5/public/linear",)
