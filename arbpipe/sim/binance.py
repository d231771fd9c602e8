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

L2 books (docs/venues.md, "Binance", "L2 book"): ``<symbol>@depth`` / ``@depth@100ms``
(USD-M: on ``/public``) send one ``depthUpdate`` per quote of the symbol whose book
(``InstrumentModel.book``, ``book_levels`` a side) changed: the levels that changed or left
the book (size 0), ``U``..``u`` the update ids since the last diff (USD-M adds ``pu``, the
last diff's ``u``). The REST snapshot ``GET /api/v3/depth`` (USD-M ``/fapi/v1/depth``) is
served on the same port (``rest_get``): ``lastUpdateId`` is the ``u`` of the last diff, so
a snapshot and the diffs agree exactly. ``DepthBook`` keeps that venue-wide state, shared
with Gate. Faults: ``book_gap_p`` (a diff is not sent; its ids are skipped),
``book_duplicate_p`` (a diff is sent twice), ``book_stale_snapshot_p`` (a snapshot from a
lagging replica, older than any diff a client can have buffered), ``book_snapshot_fail_p``
(the snapshot request gets HTTP 503).
"""
from __future__ import annotations

import collections
import random
import re
import time
from urllib.parse import parse_qs

from arbpipe.sim.market import TAG_BOOK, Quote, decimal_str, mix64, pad, stable_id, wall_ms
from arbpipe.sim.session import Session, decode_json, encode

_STREAM_RE = re.compile(r"^[a-z0-9_\-]+@[A-Za-z0-9_@]+$")
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
U_BASE = 40_000_000_000


DEPTH_STREAMS = ("depth", "depth@100ms")


class DepthBook:
    """The depth book of a REST-snapshot venue (Binance spot / USD-M, Gate), venue-wide (one
    per hub, ``DepthBook.of``): per instrument the *base*, the quote whose book the last
    diff brought clients to, and that book (``InstrumentModel.book``, ``book_levels`` a
    side, {price ticks: lots}).

    ``diff_for(q)`` (once per quote, the same for every session of the venue): the levels of
    ``q``'s book that differ from the base's (lots 0: the level left the book) and the ids
    ``U`` = base.n + 1 + ``u_base``, ``u`` = q.n + ``u_base``, ``pu`` = base.n + ``u_base``;
    q becomes the base. None when no level changed (the next diff covers q's ids).
    ``snapshot(inst)``: the base's book with id base.n + ``u_base``: the ``u`` of the last
    diff, so a snapshot plus the diffs after it is exactly the venue's book. A base is
    taken lazily: the quote before the first diff, or the hub's current quote for a
    snapshot asked first. ``stale(inst)``: the oldest base kept (``HISTORY`` a symbol) with
    an id ``STALE_LAG`` older still, as a lagging replica would serve it: older than any
    diff a client can hold, so the client must fetch again."""

    HISTORY = 64
    STALE_LAG = 1000

    def __init__(self, hub, u_base: int):
        self.hub = hub
        self.model = hub.model
        self.levels = self.model.book_levels
        self.u_base = u_base
        self.base: dict[int, Quote] = {}
        self.books: dict[int, tuple[dict, dict]] = {}
        self.history: dict[int, collections.deque] = {}
        self.last: dict[int, tuple] = {}           # inst -> (q.n, diff or None)
        self.rng = random.Random(mix64(hub.cfg.seed ^ (TAG_BOOK << 56) ^ stable_id(hub.name)))
        self.snapshots = self.stale_served = self.failed_served = 0

    @classmethod
    def of(cls, hub, u_base: int) -> "DepthBook":
        book = getattr(hub, "depth_book", None)
        if book is None:
            book = hub.depth_book = cls(hub, u_base)
        return book

    def _book(self, q: Quote) -> tuple[dict, dict]:
        b, a = self.model.instruments[q.inst].book(q, self.levels)
        return dict(b), dict(a)

    def _set_base(self, q: Quote, book: tuple[dict, dict]) -> None:
        self.base[q.inst] = q
        self.books[q.inst] = book
        self.history.setdefault(q.inst, collections.deque(maxlen=self.HISTORY)).append(q)

    def _ensure(self, inst: int, before_n: int | None = None) -> Quote:
        q = self.base.get(inst)
        if q is None:
            q = self.hub.current(inst) if before_n is None else \
                self.model.last_before(inst, before_n)
            self._set_base(q, self._book(q))
        return q

    def diff_for(self, q: Quote):
        """(U, u, pu, bids, asks) with rows (ticks, lots) best first, or None."""
        got = self.last.get(q.inst)
        if got is not None and got[0] == q.n:
            return got[1]
        prev = self._ensure(q.inst, q.n)
        d = None
        if prev.n < q.n:
            ob, oa = self.books[q.inst]
            nb, na = self._book(q)
            bids = [(p, nb.get(p, 0)) for p in sorted(set(ob) | set(nb), reverse=True)
                    if ob.get(p) != nb.get(p)]
            asks = [(p, na.get(p, 0)) for p in sorted(set(oa) | set(na))
                    if oa.get(p) != na.get(p)]
            if bids or asks:
                ub = self.u_base
                d = (prev.n + 1 + ub, q.n + ub, prev.n + ub, bids, asks)
                self._set_base(q, (nb, na))
        self.last[q.inst] = (q.n, d)
        return d

    def snapshot(self, inst: int, limit: int) -> tuple[int, list, list]:
        """(id, bids, asks): the base's book, at most ``limit`` levels a side, best first."""
        q = self._ensure(inst)
        b, a = self.books[inst]
        self.snapshots += 1
        return (q.n + self.u_base, sorted(b.items(), reverse=True)[:limit],
                sorted(a.items())[:limit])

    def stale(self, inst: int, limit: int) -> tuple[int, list, list]:
        """A lagging replica's snapshot: the oldest base kept, with an id older still."""
        self._ensure(inst)
        q = self.history[inst][0]
        b, a = self._book(q)
        self.stale_served += 1
        return (max(0, q.n + self.u_base - self.STALE_LAG), sorted(b.items(), reverse=True)[:limit],
                sorted(a.items())[:limit])

    def serve(self, inst: int, limit: int):
        """What a snapshot request gets under the venue's faults: (503, None), or (200,
        (id, bids, asks)), stale with ``book_stale_snapshot_p``."""
        f = self.hub.vcfg.faults
        if f.book_snapshot_fail_p and self.rng.random() < f.book_snapshot_fail_p:
            self.failed_served += 1
            return 503, None
        if f.book_stale_snapshot_p and self.rng.random() < f.book_stale_snapshot_p:
            return 200, self.stale(inst, limit)
        return 200, self.snapshot(inst, limit)


def depth_faults(session, frame: bytes) -> None:
    """Send one depth diff under the book faults of ``session``'s venue: ``book_gap_p``
    drops it (its ids are skipped), ``book_duplicate_p`` sends it twice."""
    f = session.faults
    if f.book_gap_p and session.rng.random() < f.book_gap_p:
        return
    session.send(frame, data=True)
    if f.book_duplicate_p and session.rng.random() < f.book_duplicate_p:
        session.send(frame, data=True)


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
    DATA_STREAMS = {"bookTicker": "public", "depth": "public", "depth@100ms": "public"}
    DISCONNECT_ON_BAD_JSON = False
    REST_PATHS = ("/api/v3/depth",)                 # served on the same port (rest_get)
    REST_LIMITS: tuple[int, ...] = ()               # spot: any 1..5000 (more is cut to 5000)
    REST_LIMIT_DEFAULT = 100
    REST_LIMIT_MAX = 5000

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
        self.depth_streams: dict[int, str] = {}   # inst -> its depth stream name
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
        elif typ in DEPTH_STREAMS:
            self.depth_streams[inst] = name
            self.add_inst(inst)
        elif typ.startswith("markPrice"):
            period = 1.0 if typ.endswith("@1s") else 3.0
            self.mark_streams[name] = (inst, period, time.monotonic() + period)

    def _remove_stream(self, name: str) -> None:
        entry = self.streams.pop(name, None)
        self.mark_streams.pop(name, None)
        if entry and entry[0] is not None and self.depth_streams.get(entry[0]) == name:
            del self.depth_streams[entry[0]]
            for other, (i, typ) in self.streams.items():   # another depth stream of it stays
                if i == entry[0] and typ in DEPTH_STREAMS and \
                        self.DATA_STREAMS.get(typ) == self.route:
                    self.depth_streams[i] = other
                    break
        if entry and entry[0] is not None and entry[1] in ("bookTicker", *DEPTH_STREAMS):
            if not any(v[0] == entry[0] and v[1] in ("bookTicker", *DEPTH_STREAMS)
                       for v in self.streams.values()):
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
        depth = self.depth_streams.get(q.inst)
        if depth is not None:
            d = DepthBook.of(self.hub, U_BASE).diff_for(q)
            if d is not None:
                depth_faults(self, self._wrap(depth, self.depth_update(q, d)))

    # -- L2 books ------------------------------------------------------------------------
    @classmethod
    def _px(cls, im, ticks: int) -> str:
        return pad(im.px(ticks), 8)

    @classmethod
    def _qty(cls, im, lots: int) -> str:
        return pad(im.qty(lots), 8)

    @classmethod
    def _rows(cls, im, rows) -> list[list[str]]:
        return [[cls._px(im, p), cls._qty(im, n)] for p, n in rows]

    def depth_update(self, q: Quote, d) -> dict:
        im = self.model.instruments[q.inst]
        U, u, _pu, bids, asks = d
        return {"e": "depthUpdate", "E": wall_ms(), "s": im.native, "U": U, "u": u,
                "b": self._rows(im, bids), "a": self._rows(im, asks)}

    @classmethod
    def depth_body(cls, im, snap) -> dict:
        last_id, bids, asks = snap
        return {"lastUpdateId": last_id, "bids": cls._rows(im, bids),
                "asks": cls._rows(im, asks)}

    @classmethod
    def rest_get(cls, hub, path: str, query: str) -> tuple[int, bytes]:
        """``GET <path>?<query>`` of one of ``REST_PATHS``: (HTTP status, JSON body)."""
        args = {k: v[-1] for k, v in parse_qs(query).items()}
        sym = args.get("symbol", "")
        im = hub.by_native.get(sym)
        if not sym:
            return 400, encode({"code": -1102, "msg": "Mandatory parameter 'symbol' was not "
                                                     "sent, was empty/null, or malformed."})
        if im is None:
            return 400, encode({"code": -1121, "msg": "Invalid symbol."})
        try:
            limit = int(args.get("limit", cls.REST_LIMIT_DEFAULT))
        except ValueError:
            limit = -1
        if limit < 1 or (cls.REST_LIMITS and limit not in cls.REST_LIMITS):
            return 400, encode({"code": -1130, "msg": "Data sent for parameter 'limit' is not "
                                                     "valid."})
        status, snap = DepthBook.of(hub, U_BASE).serve(im.idx, min(limit, cls.REST_LIMIT_MAX))
        if snap is None:
            return status, b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
        return status, encode(cls.depth_body(im, snap))

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
    DATA_STREAMS = {"bookTicker": "public", "markPrice": "market", "markPrice@1s": "market",
                    "depth": "public", "depth@100ms": "public"}
    DISCONNECT_ON_BAD_JSON = True
    REST_PATHS = ("/fapi/v1/depth",)
    REST_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
    REST_LIMIT_DEFAULT = 500
    REST_LIMIT_MAX = 1000

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

    @classmethod
    def _px(cls, im, ticks: int) -> str:
        return im.px(ticks)

    @classmethod
    def _qty(cls, im, lots: int) -> str:
        return im.qty(lots)

    def depth_update(self, q: Quote, d) -> dict:
        im = self.model.instruments[q.inst]
        U, u, pu, bids, asks = d
        now = wall_ms()
        return {"e": "depthUpdate", "E": now, "T": now - 1, "s": im.native, "U": U, "u": u,
                "pu": pu, "b": self._rows(im, bids), "a": self._rows(im, asks)}

    @classmethod
    def depth_body(cls, im, snap) -> dict:
        last_id, bids, asks = snap
        now = wall_ms()
        return {"lastUpdateId": last_id, "E": now, "T": now - 1,
                "bids": cls._rows(im, bids), "asks": cls._rows(im, asks)}
