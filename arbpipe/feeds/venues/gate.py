"""Gate.io v4 spot: ``spot.book_ticker``.

Wire (docs/venues.md, "Gate"): one socket ``/ws/v4/``; the subscribe frame
carries ``time`` in unix seconds (must be within 60 s of server time, so
``sockets()`` must be called at each connect). Each update's ``result`` holds
``t`` (order-book time, ms), ``u`` (order-book update id, per symbol) and the
best bid/ask price and size as strings ``b``/``B``/``a``/``A``. The server keeps
the connection alive with protocol-level pings (no application ping needed).

Units produced: prices in quote currency, sizes in base units, timestamps ns.
A repeated ``u`` is rejected as ``duplicate``, a smaller one as ``out_of_order``.

L2 books (``depth`` > 0; docs/venues.md, "Gate", "L2 book"): one
``spot.order_book_update`` subscription per pair (``[pair, "100ms"]``) replaces
``spot.book_ticker``; each update carries ``U``/``u`` (first / last order-book id) and the
changed levels ``b``/``a`` as [price, size] strings. Books start from the REST snapshot
``GET /api/v4/spot/order_book?currency_pair=P&limit=100&with_id=true`` (its ``id``) and are
kept by the rules Binance spot uses (``arbpipe.feeds.venues.binance.DiffSync``): buffered
updates the snapshot covers (``u`` <= id) are dropped, the first one applied must have
``U`` <= id + 1 <= ``u``, then each ``U`` = previous ``u`` + 1. An update with
``full: true`` is a whole book: it replaces the local one (id = its ``u``).
"""
from __future__ import annotations

import re
import time
from typing import Any

import msgspec
import numpy as np

from arbpipe.feeds.venues.base import Control, SocketSpec, VenueAdapter, decode_frame
from arbpipe.feeds.venues.binance import ID_END, DiffSync, fast_depth
from arbpipe.feeds.venues.checks import MAX_MS, MS, NO_SEQ, book_reject, stale_reason
from arbpipe.symbols import Instrument
from shm_layouts.records import BookFault


class _Result(msgspec.Struct):
    """``result`` of a book_ticker update (``b``/``a`` strings), of an order_book_update
    (``U``, ``b``/``a`` lists of [price, size], ``full``), or ``{"status": ...}`` of an ack."""
    t: int | None = None
    u: int | None = None
    U: int | None = None
    s: str = ""
    bid: Any = msgspec.field(default="", name="b")
    bid_qty: str = msgspec.field(default="", name="B")
    ask: Any = msgspec.field(default="", name="a")
    ask_qty: str = msgspec.field(default="", name="A")
    full: bool = False
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


class _RawResult(_Result):
    """``_Result`` with the levels left as raw JSON (depth mode: ``raw_levels``)."""
    bid: msgspec.Raw = msgspec.field(default=msgspec.Raw(), name="b")
    ask: msgspec.Raw = msgspec.field(default=msgspec.Raw(), name="a")


class _RawMsg(_Msg):
    result: _RawResult | None = None


_decode_raw = msgspec.json.Decoder(_RawMsg).decode


def _gate_levels(m: _RawMsg):
    r = m.result
    if m.channel == "spot.order_book_update" and m.event == "update" and r is not None:
        return r.bid, r.ask
    return None


class _Snapshot(msgspec.Struct):
    """REST ``/spot/order_book`` with ``with_id=true``: ``id`` (order-book id), ``current``
    (response time, ms), ``update`` (last change, ms), ``asks``/``bids`` [price, size]."""
    id: int
    asks: list
    bids: list
    current: int = 0
    update: int = 0


_decode_snapshot = msgspec.json.Decoder(_Snapshot).decode
_PAIR_IN_TEXT = re.compile(r"([A-Z0-9]+_[A-Z0-9]+)")


class GateAdapter(VenueAdapter):
    """Gate.io v4 spot BBO from ``spot.book_ticker``."""

    name = "gate"
    default_url = "wss://api.gateio.ws"
    default_rest_url = "https://api.gateio.ws"
    market = "spot"
    path = "/ws/v4/"
    refusal_fails_request = True     # an unknown pair fails the whole subscribe request
    supports_depth = True
    depth_interval = "100ms"

    def __init__(self, instruments: list[Instrument], venue_id: int = 0):
        super().__init__(instruments, venue_id)
        self._last_u: dict[str, int] = {}
        self.books = DiffSync(pu_chain=False)

    @property
    def applied(self) -> int:
        """Depth messages taken without output of their own (``DiffSync.applied``)."""
        return self.books.applied

    def sockets(self) -> list[SocketSpec]:
        now = int(time.time())
        if self.depth > 0:                 # one order_book_update subscription per pair
            frames = [{"time": now, "channel": "spot.order_book_update", "event": "subscribe",
                       "payload": [i.native, self.depth_interval]} for i in self.subscribable()]
        else:
            frames = [{"time": now, "channel": "spot.book_ticker", "event": "subscribe",
                       "payload": [i.native for i in self.subscribable()]}]
        return [SocketSpec(self.path, [msgspec.json.encode(f).decode() for f in frames])]

    def on_connect(self, socket_index: int) -> None:
        self._last_u.clear()
        self.books.reset()

    # -- L2 books --------------------------------------------------------------
    def rest_snapshot_path(self, native: str) -> str | None:
        return f"/api/v4/spot/order_book?currency_pair={native}&limit=100&with_id=true"

    def _rest_snapshot(self, native: str, inst, body: bytes, sink) -> Control | None:
        snap = decode_frame(_decode_snapshot, body, sink)
        if snap is not None and not 0 <= snap.id < ID_END:
            sink.reject("bad_shape")
            snap = None
        if snap is not None and not (0 <= snap.update <= MAX_MS and 0 <= snap.current <= MAX_MS):
            sink.reject("bad_ts")
            snap = None
        if snap is None:                       # unusable body: counted, fetched again
            sink.book_broken(inst.instrument_id, BookFault.SNAPSHOT_FAILED)
            return Control("resync", symbol=native, detail="snapshot_failed: bad body")
        ts = snap.update or snap.current
        return self.books.snapshot(native, inst.instrument_id, snap.id, snap.bids, snap.asks,
                                   ts * MS, sink)

    def _depth(self, r: _Result | None, sink, bids=None, asks=None) -> Control | None:
        """``bids`` / ``asks``: the levels parsed already (``fast_depth``), else ``r``'s."""
        if r is not None and bids is None:
            bids, asks = r.bid, r.ask
        if r is None or r.u is None or r.t is None or (r.U is None and not r.full) or \
                (type(bids) is not list and type(bids) is not np.ndarray) or \
                (type(asks) is not list and type(asks) is not np.ndarray):
            sink.reject("bad_shape")
            inst = self.by_native.get(r.s) if r is not None else None
            return self.books.bad(r.s, inst.instrument_id, sink) if inst is not None else None
        inst = self.by_native.get(r.s)
        if inst is None:
            sink.reject("unknown_symbol")
            return None
        iid = inst.instrument_id
        U = r.u if r.U is None else r.U
        if not 0 <= U <= r.u < ID_END:
            sink.reject("bad_shape")
            return self.books.bad(r.s, iid, sink)
        if not 0 <= r.t <= MAX_MS:
            sink.reject("bad_ts")
            return self.books.bad(r.s, iid, sink)
        if r.full:
            return self.books.full(r.s, iid, r.u, bids, asks, r.t * MS, sink)
        return self.books.diff(r.s, iid, U, r.u, None, bids, asks, r.t * MS, sink)

    def _parse(self, frame, sink) -> Control | None:
        if self.depth > 0:
            fast = fast_depth(frame, _decode_raw, _gate_levels)
            if fast is not None:
                return self._depth(fast[0].result, sink, fast[1], fast[2])
        m = decode_frame(_decode, frame, sink)
        if m is None:
            return None
        ch, ev = m.channel, m.event
        if ch == "spot.book_ticker" and ev == "update":
            if self.depth > 0:                 # books: quotes come from the book's top
                sink.reject("unsupported")
                return None
            self._book_ticker(m.result, sink)
            return None
        if ch == "spot.order_book_update" and ev == "update" and self.depth > 0:
            return self._depth(m.result, sink)
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
        if type(r.bid) is not str or type(r.ask) is not str:
            sink.reject("bad_shape")
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
