"""Coinbase Advanced Trade market data (``coinbase``), server side.

Path: ``/`` (docs/venues.md, "Coinbase").

Protocol: one channel per message, ``{"type":"subscribe","product_ids":[..],"channel":"level2"}``;
``{"type":"subscribe","channel":"heartbeats"}``. Without a subscribe within
``subscribe_deadline_s`` (5 s) the connection is closed. Each (un)subscribe is answered
with the ``subscriptions`` envelope listing every active subscription. An unknown product
fails the whole message with ``{"type":"error","message":"Failed to subscribe",
"reason":"<product> is not a valid product"}``.

Envelope (production form, no ``client_id``): ``channel``, ``timestamp`` (RFC3339 ns),
``sequence_num`` (one counter per connection across all channels), ``events``.
``level2`` data arrives on channel ``l2_data``: a snapshot of the whole simulated book,
then updates ``{side, event_time, price_level, new_quantity}`` ("0" removes a level).
``ticker`` is trade-driven (snapshot at subscribe, then updates on trades).
``heartbeats``: one per ``heartbeat_s`` (1 s) with an integer ``heartbeat_counter``.
Without a heartbeats subscription a connection that sent nothing for ``idle_timeout_s``
(75 s, the documented 60-90 s) is closed.

Depth faults (``FaultConfig``): ``book_gap_p`` an update is not sent but its
``sequence_num`` is used (the client sees a gap); ``book_early_diff_p`` at subscribe the
snapshot is held back and sent right after the product's first update (with the next
``sequence_num``: in order on the wire, but the update came before any snapshot);
``book_duplicate_p`` an update frame is sent twice (same ``sequence_num``).
"""
from __future__ import annotations

import time

from arbpipe.sim.market import Quote, trim
from arbpipe.sim.session import Session, decode_json, encode, rfc3339_ns

DATA_CHANNELS = ("level2", "ticker")
CHANNELS = ("level2", "ticker", "heartbeats")
EPOCH = "1970-01-01T00:00:00Z"
_STARTED = time.monotonic()      # the "m=+<seconds>" of current_time counts from here


class CoinbaseSession(Session):
    venue = "coinbase"
    DEFAULTS = {"subscribe_deadline_s": 5.0, "heartbeat_s": 1.0, "idle_timeout_s": 75.0}
    PATHS = ("/",)

    @classmethod
    def match(cls, path: str, single_port: bool = False) -> bool:
        return path.partition("?")[0] in ("/", "")

    def on_open(self) -> None:
        self.seq = 0
        self.hb_counter = 0
        self.channels: dict[str, list[str]] = {}        # channel -> product ids
        self.books: dict[str, tuple[dict, dict]] = {}   # product -> (bids, asks) ticks -> lots sent
        self.held: dict[str, dict] = {}                 # product -> snapshot event held back (book_early_diff_p)
        self.ticker_started: set[str] = set()

    def activity(self) -> float:
        # heartbeats keep channels open; without them only data counts
        if "heartbeats" in self.channels or not self.channels:
            return time.monotonic()
        return self.last_tx

    def _envelope(self, channel: str, events: list) -> bytes:
        body = {"channel": channel, "timestamp": rfc3339_ns(), "sequence_num": self.seq, "events": events}
        self.seq += 1
        return encode(body)

    def _error(self, message: str, reason: str | None = None) -> None:
        body = {"type": "error", "message": message}
        if reason is not None:
            body["reason"] = reason
        self.send(encode(body))

    # -- requests ----------------------------------------------------------------------
    def on_message(self, msg) -> None:
        try:
            req = decode_json(msg)
        except ValueError:
            self._error("Failed to parse message", "malformed JSON")
            return
        if not isinstance(req, dict):
            self._error("Failed to parse message", "expected a JSON object")
            return
        typ = req.get("type")
        if typ not in ("subscribe", "unsubscribe"):
            self._error(f"Unsupported message type: {typ}")
            return
        channel = req.get("channel")
        if "channels" in req or not isinstance(channel, str):
            self._error("Failed to subscribe", "one channel name (\"channel\") per message is required")
            return
        if channel not in CHANNELS:
            self._error("Failed to subscribe", f"{channel} is not a valid channel")
            return
        products = req.get("product_ids", [])
        if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            self._error("Failed to subscribe", "product_ids must be a list of strings")
            return
        if channel in DATA_CHANNELS and typ == "subscribe":
            if not products:
                self._error("Failed to subscribe", "product_ids is required")
                return
            for p in products:
                if p not in self.hub.by_native or self.refused(p):
                    self._error("Failed to subscribe", f"{p} is not a valid product")
                    return
        if typ == "subscribe":
            self._subscribe(channel, products)
        else:
            self._unsubscribe(channel, products)

    def _ack(self) -> None:
        subs = {ch: list(ps) for ch, ps in self.channels.items()}
        self.send(self._envelope("subscriptions", [{"subscriptions": subs}]))

    def _subscribe(self, channel: str, products: list[str]) -> None:
        self.ever_subscribed = True
        have = self.channels.setdefault(channel, [])
        new = [p for p in products if p not in have]
        have.extend(new)
        if channel == "heartbeats":
            self.hub.clock.start()
        for p in new:
            self.add_inst(self.hub.by_native[p].idx)
        self._ack()
        for p in new:
            q = self.hub.current(self.hub.by_native[p].idx)
            if channel == "level2":
                self._l2_snapshot(p, q)
            else:
                self._ticker(p, q, "snapshot")

    def _unsubscribe(self, channel: str, products: list[str]) -> None:
        have = self.channels.get(channel)
        if have is not None:
            gone = list(have) if not products else [p for p in products if p in have]
            for p in gone:
                have.remove(p)
                if channel == "level2":
                    self.books.pop(p, None)
                    self.held.pop(p, None)
                else:
                    self.ticker_started.discard(p)
            if not have and (not products or channel != "heartbeats"):
                del self.channels[channel]
            for p in gone:
                if p not in self.channels.get("level2", ()) and p not in self.channels.get("ticker", ()):
                    self.remove_inst(self.hub.by_native[p].idx)
        self._ack()

    # -- data ----------------------------------------------------------------------------
    def _levels(self, q: Quote) -> tuple[dict, dict]:
        im = self.model.instruments[q.inst]
        bids, asks = im.book(q, self.model.book_levels)
        return dict(bids), dict(asks)

    def _l2_snapshot(self, product: str, q: Quote) -> None:
        im = self.model.instruments[q.inst]
        bids, asks = self._levels(q)
        self.books[product] = (bids, asks)
        ups = [{"side": "bid", "event_time": EPOCH, "price_level": trim(im.px(p)), "new_quantity": im.qty(s)}
               for p, s in sorted(bids.items(), reverse=True)]
        ups += [{"side": "offer", "event_time": EPOCH, "price_level": trim(im.px(p)), "new_quantity": im.qty(s)}
                for p, s in sorted(asks.items())]
        event = {"type": "snapshot", "product_id": product, "updates": ups}
        p = self.faults.book_early_diff_p
        if p and self.rng.random() < p:
            self.held[product] = event           # sent after the first update (fault)
            return
        self.send(self._envelope("l2_data", [event]), data=True)

    def _l2_update(self, product: str, q: Quote) -> None:
        im = self.model.instruments[q.inst]
        old = self.books.get(product)
        if old is None:
            return
        bids, asks = self._levels(q)
        self.books[product] = (bids, asks)
        et = rfc3339_ns(digits=6)
        ups = []
        for side, new, prev in (("bid", bids, old[0]), ("offer", asks, old[1])):
            for p in prev:
                if p not in new:
                    ups.append({"side": side, "event_time": et, "price_level": trim(im.px(p)),
                                "new_quantity": "0"})
            for p, s in new.items():
                if prev.get(p) != s:
                    ups.append({"side": side, "event_time": et, "price_level": trim(im.px(p)),
                                "new_quantity": im.qty(s)})
        if ups:
            f = self.faults
            held = self.held.pop(product, None)
            if held is None and f.book_gap_p and self.rng.random() < f.book_gap_p:
                self.seq += 1                    # a skipped sequence number (fault)
                return
            frame = self._envelope("l2_data", [{"type": "update", "product_id": product, "updates": ups}])
            self.send(frame, data=True)
            if f.book_duplicate_p and self.rng.random() < f.book_duplicate_p:
                self.send(frame, data=True)      # the same diff again, same sequence_num (fault)
            if held is not None:
                self.send(self._envelope("l2_data", [held]), data=True)

    def _ticker(self, product: str, q: Quote, typ: str) -> None:
        im = self.model.instruments[q.inst]
        price = q.ask if q.trade >= 0 else q.bid
        p0 = im.to_ticks(im.p0)
        self.send(self._envelope("ticker", [{"type": typ, "tickers": [{
            "type": "ticker", "product_id": product, "price": trim(im.px(price)),
            "volume_24_h": "16038.28770938", "low_24_h": trim(im.px(int(p0 * 0.97))),
            "high_24_h": trim(im.px(int(p0 * 1.02))), "low_52_w": trim(im.px(int(p0 * 0.5))),
            "high_52_w": trim(im.px(int(p0 * 1.4))), "price_percent_chg_24_h": "-1.15775596190603",
            "best_bid": trim(im.px(q.bid)), "best_bid_quantity": im.qty(q.bid_lots),
            "best_ask": trim(im.px(q.ask)), "best_ask_quantity": im.qty(q.ask_lots)}]}]), data=True)

    def on_quote(self, q: Quote) -> None:
        product = self.model.instruments[q.inst].native
        if product in self.books:
            self._l2_update(product, q)
        if q.trade and product in self.channels.get("ticker", ()):
            self._ticker(product, q, "update")

    def heartbeat(self) -> None:
        if "heartbeats" not in self.channels:
            return
        self.hb_counter += 1
        ns = time.time_ns()
        up = time.monotonic() - _STARTED
        s, frac = divmod(ns, 1_000_000_000)
        current = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s)) + f".{frac:09d} +0000 UTC m=+{up:.9f}"
        self.send(self._envelope("heartbeats", [{"current_time": current,
                                                  "heartbeat_counter": self.hb_counter}]))
