"""OKX v5 public (``okx``: SPOT and SWAP instruments on one socket), server side.

Path: ``/ws/v5/public`` (docs/venues.md, "OKX").

Protocol: ``{"id":"1","op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"}]}``
gets one ack per arg ``{"id":"1","event":"subscribe","arg":{..},"connId":".."}`` (``id``
echoed only when sent); an unknown instrument or channel gets
``{"event":"error","code":"60018","msg":"Wrong URL or channel:..,instId:.. doesn't exist. ..."}``;
a request that does not parse gets ``60012``, an unknown op ``60019``, more than 480
subscribe/unsubscribe requests per hour ``60014``. Keep-alive is the bare text ``ping``
answered by the bare text ``pong``; the connection is closed (4004) after
``idle_timeout_s`` (30 s) without traffic. Planned disconnect: ``64008`` notice.

Data: ``bbo-tbt`` full level-1 snapshot ``[px, sz, "0", orders]`` with string ``ts`` and
integer ``seqId``, one at subscribe, re-sent with the same ``seqId`` after ``repush_s``
(60 s) without change; SWAP sizes are contracts (ctVal from the instrument spec).
``tickers`` (spot and swap) and ``funding-rate`` (SWAP only; at subscribe, then every
``funding_push_s``).

``books``: a snapshot of ``BOOK_LEVELS`` (400) levels a side (``InstrumentModel.book``)
with ``prevSeqId`` -1, then at each quote an ``update`` with the levels that changed or
left the window (size ``"0"``), ``seqId`` from the venue-wide update number (increasing,
not contiguous, like OKX's) and ``prevSeqId`` = the ``seqId`` sent before; after
``repush_s`` (60 s) without a change an empty update with ``seqId == prevSeqId``. Each
message carries the signed CRC32 ``checksum`` of its top 25 levels as sent
(``okx_checksum``). Faults (``FaultConfig``): ``book_gap_p`` an update is not sent but
its ``seqId`` counts as sent; ``book_checksum_p`` an update carries a wrong checksum;
``book_duplicate_p`` an update is sent twice; ``book_early_diff_p`` at (re)subscribe an
update comes before the snapshot (the last update sent again, else a made-up one with
the snapshot's ids). ``book_no_ws_snapshot``: no snapshot on (re)subscribe, only the
updates (OKX's announced change, docs/venues.md "OKX"); clients take the snapshot from REST.

REST ``GET /api/v5/market/books?instId=..&sz=..`` (``rest_get``, on the venue's port):
``{"code":"0","msg":"","data":[{"asks","bids","ts","seqId"}]}``, ``sz`` levels a side (1 by
default, at most ``BOOK_LEVELS``), the book of the instrument's current quote with the
``seqId`` an update of that quote carries (so an update after it has ``prevSeqId`` <=
``seqId`` < its ``seqId``); an unknown ``instId`` gets ``code`` 51001, a bad ``sz`` 51000.
Faults: ``book_snapshot_fail_p`` HTTP 503; ``book_stale_snapshot_p`` the book of an older
quote (``STALE_LAG`` updates back) with its older ``seqId``, as a lagging replica.
"""
from __future__ import annotations

import asyncio
import random
import time
import zlib
from urllib.parse import parse_qs

from arbpipe.sim.market import TAG_BOOK, Quote, decimal_str, mix64, stable_id, trim, wall_ms
from arbpipe.sim.session import Session, decode_json, encode

SEQ_BASE = 360_000_000
CHANNELS = ("bbo-tbt", "books", "tickers", "funding-rate")
HOURLY_LIMIT = 480
BOOK_LEVELS = 400
CHECKSUM_LEVELS = 25
REST_BOOKS = "/api/v5/market/books"
STALE_LAG = 200                     # updates (venue-wide) behind a stale REST snapshot


def okx_checksum(bids: list, asks: list) -> int:
    """Signed CRC32 of ``bid1px:bid1sz:ask1px:ask1sz:bid2px:...`` over the top 25 levels
    (a shorter side just ends); ``bids`` / ``asks``: (price, size) strings, best first."""
    parts = []
    for i in range(max(min(len(bids), CHECKSUM_LEVELS), min(len(asks), CHECKSUM_LEVELS))):
        for side in (bids, asks):
            if i < min(len(side), CHECKSUM_LEVELS):
                parts += side[i]
    c = zlib.crc32(":".join(parts).encode())
    return c - (1 << 32) if c >= 1 << 31 else c


class OkxSession(Session):
    venue = "okx"
    DEFAULTS = {"idle_timeout_s": 30.0, "repush_s": 60.0, "funding_push_s": 60.0}
    PATHS = ("/ws/v5/public",)
    REST_PATHS = (REST_BOOKS,)          # served on the same port (rest_get)

    @classmethod
    def rest_get(cls, hub, path: str, query: str) -> tuple[int, bytes]:
        """``GET /api/v5/market/books?instId=..&sz=..``: (HTTP status, JSON body)."""
        args = {k: v[-1] for k, v in parse_qs(query).items()}
        inst_id = args.get("instId", "")
        im = hub.by_native.get(inst_id)
        if not inst_id:
            return 400, encode({"code": "50014", "msg": "Parameter instId can not be empty",
                                "data": []})
        if im is None:
            return 400, encode({"code": "51001", "msg": "Instrument ID does not exist",
                                "data": []})
        sz = args.get("sz", "1")
        if not (sz.isdigit() and 1 <= int(sz)):
            return 400, encode({"code": "51000", "msg": "Parameter sz error", "data": []})
        sz = min(int(sz), BOOK_LEVELS)
        f = hub.vcfg.faults
        rng = getattr(hub, "okx_rest_rng", None)
        if rng is None:
            rng = hub.okx_rest_rng = random.Random(
                mix64(hub.cfg.seed ^ (TAG_BOOK << 56) ^ stable_id(hub.name)))
        if f.book_snapshot_fail_p and rng.random() < f.book_snapshot_fail_p:
            return 503, b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
        q = hub.current(im.idx)
        if f.book_stale_snapshot_p and rng.random() < f.book_stale_snapshot_p:
            q = hub.model.last_before(im.idx, max(0, q.n - STALE_LAG))
        b, a = hub.model.instruments[im.idx].book(q, BOOK_LEVELS)
        return 200, encode({"code": "0", "msg": "", "data": [{
            "asks": cls._rows(hub.model, q, a[:sz]), "bids": cls._rows(hub.model, q, b[:sz]),
            "ts": str(wall_ms()), "seqId": SEQ_BASE + q.n + 1}]})

    @staticmethod
    def _rows(model, q: Quote, levels: list) -> list:
        im = model.instruments[q.inst]
        return [[trim(im.px(p)), trim(im.qty(n)), "0", str(1 + n % 7)] for p, n in levels]

    @classmethod
    def match(cls, path: str, single_port: bool = False) -> bool:
        return path.partition("?")[0].rstrip("/") == "/ws/v5/public"

    def on_open(self) -> None:
        self.conn_id = f"{self.rng.getrandbits(32):08x}"
        self.subs: dict[tuple[str, str], int] = {}       # (channel, instId) -> inst
        self.bbo_sent: dict[str, list] = {}              # instId -> [quote, monotonic time sent]
        self.funding_due: dict[str, float] = {}          # instId -> monotonic due time
        self.books: dict[str, list] = {}                 # instId -> [bids, asks, seqId, sent]
        self.books_last: dict[str, tuple[bytes, int]] = {}   # instId -> (last update, seqId)
        self.requests: list[float] = []
        self.spawn(self._timers())

    def on_idle_timeout(self) -> None:
        self.close(4004, "No data received in 30s.")

    # -- requests ----------------------------------------------------------------------
    def _error(self, code: str, msg: str, rid=None) -> bytes:
        body = {}
        if rid is not None:
            body["id"] = rid
        body.update({"event": "error", "code": code, "msg": msg, "connId": self.conn_id})
        return encode(body)

    def on_message(self, msg) -> None:
        text = msg.decode(errors="replace") if isinstance(msg, bytes) else msg
        if text == "ping":
            self.send("pong")
            return
        try:
            req = decode_json(text)
        except ValueError:
            self.send(self._error("60012", f"Invalid request: {text}"))
            return
        if not isinstance(req, dict):
            self.send(self._error("60012", f"Invalid request: {text}"))
            return
        rid = req.get("id")
        op = req.get("op")
        if op not in ("subscribe", "unsubscribe"):
            if op in ("login",):
                self.send(self._error("60012", f"Invalid request: {text}", rid))
            else:
                self.send(self._error("60019", f"Invalid OP: {op}", rid))
            return
        args = req.get("args")
        if not isinstance(args, list) or not args or not all(isinstance(a, dict) for a in args):
            self.send(self._error("60012", f"Invalid request: {text}", rid))
            return
        now = time.monotonic()
        self.requests = [t for t in self.requests if t > now - 3600.0]
        if len(self.requests) >= HOURLY_LIMIT:
            self.send(self._error("60014", "Requests too frequent.", rid))
            return
        self.requests.append(now)
        for arg in args:
            self._one(op, arg, rid)

    def _one(self, op: str, arg: dict, rid) -> None:
        channel = arg.get("channel")
        inst_id = arg.get("instId")
        im = self.hub.by_native.get(inst_id) if isinstance(inst_id, str) else None
        ok = (channel in CHANNELS and im is not None and not self.refused(inst_id)
              and (channel != "funding-rate" or im.spec.kind == "perp"))
        if not ok:
            self.send(self._error("60018", f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. "
                                           "Please use the correct URL, channel and parameters referring "
                                           "to API document.", rid))
            return
        ack = {}
        if rid is not None:
            ack["id"] = rid
        ack.update({"event": op, "arg": {"channel": channel, "instId": inst_id}, "connId": self.conn_id})
        key = (channel, inst_id)
        if op == "unsubscribe":
            self.subs.pop(key, None)
            if channel == "bbo-tbt":
                self.bbo_sent.pop(inst_id, None)
            if channel == "books":
                self.books.pop(inst_id, None)
            if channel == "funding-rate":
                self.funding_due.pop(inst_id, None)
            if not any(i == im.idx for i in self.subs.values()):
                self.remove_inst(im.idx)
            self.send(encode(ack))
            return
        self.subs[key] = im.idx
        if channel != "funding-rate":
            self.add_inst(im.idx)
        else:
            self.ever_subscribed = True
            self.hub.clock.start()
        self.send(encode(ack))
        if channel == "bbo-tbt":
            self._send_bbo(inst_id, self.hub.current(im.idx))
        elif channel == "books":
            self._books_subscribe(inst_id, self.hub.current(im.idx))
        elif channel == "tickers":
            self._send_ticker(inst_id, self.hub.current(im.idx))
        else:
            self._send_funding(inst_id, im.idx)
            self.funding_due[inst_id] = time.monotonic() + self.t.funding_push_s

    # -- data ----------------------------------------------------------------------------
    def _send_bbo(self, inst_id: str, q: Quote) -> None:
        im = self.model.instruments[q.inst]
        orders_b = 1 + (q.bid_lots % 7)
        orders_a = 1 + (q.ask_lots % 7)
        self.send(encode({"arg": {"channel": "bbo-tbt", "instId": inst_id},
                          "data": [{"asks": [[trim(im.px(q.ask)), trim(im.qty(q.ask_lots)), "0", str(orders_a)]],
                                    "bids": [[trim(im.px(q.bid)), trim(im.qty(q.bid_lots)), "0", str(orders_b)]],
                                    "ts": str(wall_ms()), "seqId": SEQ_BASE + q.n + 1}]}), data=True)
        self.bbo_sent[inst_id] = [q, time.monotonic()]

    # -- books --------------------------------------------------------------------------
    def _levels(self, q: Quote, levels: list) -> list:
        im = self.model.instruments[q.inst]
        return [[trim(im.px(p)), trim(im.qty(n)), "0", str(1 + n % 7)] if n else
                [trim(im.px(p)), "0", "0", "0"] for p, n in levels]   # as rest_get's rows

    def _book_checksum(self, q: Quote, bids: dict, asks: dict) -> int:
        im = self.model.instruments[q.inst]
        b = [(trim(im.px(p)), trim(im.qty(bids[p]))) for p in sorted(bids, reverse=True)[:25]]
        a = [(trim(im.px(p)), trim(im.qty(asks[p]))) for p in sorted(asks)[:25]]
        return okx_checksum(b, a)

    def _books_frame(self, inst_id: str, action: str, q: Quote, bids: list, asks: list,
                     ck: int, prev: int, seq: int) -> bytes:
        return encode({"arg": {"channel": "books", "instId": inst_id}, "action": action,
                       "data": [{"asks": self._levels(q, asks), "bids": self._levels(q, bids),
                                 "ts": str(wall_ms()), "checksum": ck, "prevSeqId": prev,
                                 "seqId": seq}]})

    def _books_subscribe(self, inst_id: str, q: Quote) -> None:
        b, a = self.model.instruments[q.inst].book(q, BOOK_LEVELS)
        bids, asks = dict(b), dict(a)
        seq = SEQ_BASE + q.n + 1
        f = self.faults
        if f.book_no_ws_snapshot:         # updates only: the client takes the REST snapshot
            self.books[inst_id] = [bids, asks, seq, time.monotonic()]
            return
        ck = self._book_checksum(q, bids, asks)
        if f.book_early_diff_p and self.rng.random() < f.book_early_diff_p:
            last = self.books_last.get(inst_id)
            early = last[0] if last is not None else self._books_frame(
                inst_id, "update", q, b[:1], a[:1], ck, -1, seq)     # made up
            self.send(early, data=True)
        self.send(self._books_frame(inst_id, "snapshot", q, b, a, ck, -1, seq), data=True)
        self.books[inst_id] = [bids, asks, seq, time.monotonic()]

    def _books_update(self, inst_id: str, entry: list, q: Quote) -> None:
        old_b, old_a = entry[0], entry[1]
        b, a = self.model.instruments[q.inst].book(q, BOOK_LEVELS)
        bids, asks = dict(b), dict(a)
        entry[0], entry[1] = bids, asks
        up_b = [(p, 0) for p in old_b if p not in bids] + [
            (p, n) for p, n in b if old_b.get(p) != n]
        up_a = [(p, 0) for p in old_a if p not in asks] + [
            (p, n) for p, n in a if old_a.get(p) != n]
        if not up_b and not up_a:
            return
        prev, seq = entry[2], SEQ_BASE + q.n + 1
        entry[2], entry[3] = seq, time.monotonic()
        f = self.faults
        if f.book_gap_p and self.rng.random() < f.book_gap_p:
            return                                  # counted as sent: the next prevSeqId skips
        ck = self._book_checksum(q, bids, asks)
        if f.book_checksum_p and self.rng.random() < f.book_checksum_p:
            ck = ck ^ 0x5A5A5A5A or 1               # wrong (and not 0, which means "none")
        frame = self._books_frame(inst_id, "update", q, up_b, up_a, ck, prev, seq)
        self.books_last[inst_id] = (frame, seq)
        self.send(frame, data=True)
        if f.book_duplicate_p and self.rng.random() < f.book_duplicate_p:
            self.send(frame, data=True)

    def _books_idle(self, inst_id: str, entry: list) -> None:
        """No change for ``repush_s``: an empty update with ``seqId == prevSeqId``."""
        q = self.hub.current(self.subs[("books", inst_id)])
        seq = entry[2]
        entry[3] = time.monotonic()
        self.send(self._books_frame(inst_id, "update", q, [], [],
                                    self._book_checksum(q, entry[0], entry[1]), seq, seq),
                  data=True)

    def _send_ticker(self, inst_id: str, q: Quote) -> None:
        im = self.model.instruments[q.inst]
        last = q.ask if q.trade >= 0 else q.bid
        p0 = im.to_ticks(im.p0)
        self.send(encode({"arg": {"channel": "tickers", "instId": inst_id}, "data": [{
            "instType": "SWAP" if im.spec.kind == "perp" else "SPOT", "instId": inst_id,
            "last": trim(im.px(last)), "lastSz": trim(im.qty(max(1, q.trade_lots))),
            "askPx": trim(im.px(q.ask)), "askSz": trim(im.qty(q.ask_lots)),
            "bidPx": trim(im.px(q.bid)), "bidSz": trim(im.qty(q.bid_lots)),
            "open24h": trim(im.px(int(p0 * 0.99))), "high24h": trim(im.px(int(p0 * 1.02))),
            "low24h": trim(im.px(int(p0 * 0.97))), "volCcy24h": "2222", "vol24h": "2222",
            "sodUtc0": trim(im.px(int(p0 * 0.995))), "sodUtc8": trim(im.px(int(p0 * 0.998))),
            "ts": str(wall_ms())}]}), data=True)

    def _send_funding(self, inst_id: str, inst: int) -> None:
        t = self.hub.clock.now_ms()
        rate = self.model.funding_rate(inst, t)
        nxt = self.model.next_funding_ms()
        iv = self.model.funding_interval_ms
        self.send(encode({"arg": {"channel": "funding-rate", "instId": inst_id}, "data": [{
            "formulaType": "noRate", "fundingRate": trim(decimal_str(rate, 16)) or "0",
            "fundingTime": str(nxt), "impactValue": "", "instId": inst_id, "instType": "SWAP",
            "interestRate": "", "method": "current_period", "maxFundingRate": "0.00375",
            "minFundingRate": "-0.00375", "nextFundingRate": "", "nextFundingTime": str(nxt + iv),
            "premium": trim(decimal_str(rate * 0.66, 16)) or "0",
            "settFundingRate": trim(decimal_str(self.model.funding_rate(inst, max(0.0, t - 3_600_000)), 16)) or "0",
            "settState": "settled", "ts": str(wall_ms())}]}), data=True)

    def on_quote(self, q: Quote) -> None:
        inst_id = self.model.instruments[q.inst].native
        if ("bbo-tbt", inst_id) in self.subs:
            self._send_bbo(inst_id, q)
        if ("tickers", inst_id) in self.subs:
            self._send_ticker(inst_id, q)
        entry = self.books.get(inst_id)
        if entry is not None:
            self._books_update(inst_id, entry, q)

    async def _timers(self) -> None:
        """bbo-tbt re-push of an unchanged snapshot, and funding-rate pushes."""
        repush = self.t.repush_s or 0.0
        fpush = self.t.funding_push_s or 0.0
        period = min(p for p in (repush / 3.0, fpush / 3.0, 1.0) if p > 0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            if repush:
                for inst_id, (q, sent) in list(self.bbo_sent.items()):
                    if now - sent >= repush and ("bbo-tbt", inst_id) in self.subs:
                        self._send_bbo(inst_id, q)
                for inst_id, entry in list(self.books.items()):
                    if now - entry[3] >= repush:
                        self._books_idle(inst_id, entry)
            for inst_id, due in list(self.funding_due.items()):
                if now >= due and fpush:
                    self.funding_due[inst_id] = now + fpush
                    self._send_funding(inst_id, self.subs[("funding-rate", inst_id)])

    def notice_frames(self) -> list[bytes]:
        return [encode({"event": "notice", "code": "64008",
                        "msg": "The connection will soon be closed for a service upgrade. Please reconnect.",
                        "connId": self.conn_id})]
