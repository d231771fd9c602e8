"""Coinbase Advanced Trade: ``level2`` kept as a book per product, published as BBO.

Wire (docs/venues.md, "Coinbase"): one socket, one channel per subscribe
message (``level2`` and ``heartbeats``). Level-2 frames arrive with channel
``l2_data``: a ``snapshot`` event (whole book) then ``update`` events whose
``new_quantity`` is the new absolute size at ``price_level`` (``"0"`` removes).
``sequence_num`` is one per-connection counter across all channels: a gap makes
the books unusable (``Control(kind="error", detail="sequence gap", reconnect=True)``
and the books are dropped until a fresh snapshot); a repeated or older number
is rejected (``duplicate`` / ``out_of_order``). An unknown product fails the whole subscribe
message (``refusal_fails_request``): the runtime resubscribes without it.

Units produced: prices in quote currency, sizes in base units, timestamps ns
(the updates' ``event_time``; the envelope ``timestamp`` when that is the epoch
placeholder of snapshots). A quote is emitted only when best bid/ask or their
sizes change. ``applied`` counts book levels applied (book-only frames emit nothing).

L2 book (``depth`` > 0; docs/venues.md, "Coinbase", "L2 book"): the same subscription;
each ``l2_data`` event goes to ``sink.book`` (a snapshot replaces the product's book, an
update sets absolute sizes) and the sink keeps and publishes the top N. Rules, per
connection: a ``sequence_num`` gap marks every synced book not ready (GAP); an update of a
product before its snapshot on this connection (EARLY_DIFF: that product's snapshot on this
connection is then not trusted either, ``out_of_order``); an event with an unusable level,
side or type (BAD_DATA of that product), and a numbered ``l2_data`` frame whose data cannot
be pinned on a product (no events, a product not subscribed) or one without a number
(BAD_DATA of every synced book). Each returns ``Control("resync", reconnect=True)``: Coinbase
sends snapshots only when a product is subscribed, so only a new connection (the worker's
planned reconnect; ``on_connect`` resets the state) resyncs. Meanwhile updates of books
that are not synced are refused (``no_snapshot``). A repeated or older ``sequence_num`` is
refused (``duplicate`` / ``out_of_order``) and the books stay exact: the frame was applied
already.
"""
from __future__ import annotations

import heapq
import re

import msgspec
import numpy as np

from arbpipe.books.full import split_levels
from arbpipe.feeds.venues.base import Control, SocketSpec, VenueAdapter, decode_frame
from arbpipe.feeds.venues.checks import I8_END, INF, stale_reason
from arbpipe.symbols import Instrument
from shm_layouts import Flag
from shm_layouts.records import BookFault

_SNAPSHOT = int(Flag.SNAPSHOT)
_NO_TS = int(Flag.NO_EXCHANGE_TS)


# -- RFC3339 -> ns ---------------------------------------------------------------
_second_cache: dict[str, int] = {}   # "YYYY-MM-DDTHH:MM:SS" -> ns (-1 when malformed)
_MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_FRACTION_SCALE = tuple(10 ** (9 - n) for n in range(10))


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _second_ns(p: str) -> int:
    """``YYYY-MM-DDTHH:MM:SS`` -> ns since the epoch; -1 when malformed."""
    if (len(p) != 19 or p[4] != "-" or p[7] != "-" or p[10] not in "Tt" or p[13] != ":" or p[16] != ":"
            or not (p[:4] + p[5:7] + p[8:10] + p[11:13] + p[14:16] + p[17:]).isdigit() or not p.isascii()):
        return -1
    y, mo, d = int(p[:4]), int(p[5:7]), int(p[8:10])
    h, mi, sec = int(p[11:13]), int(p[14:16]), int(p[17:])
    if not (1 <= mo <= 12 and 1 <= d <= _MONTH_DAYS[mo] and h < 24 and mi < 60 and sec < 60):
        return -1
    if mo == 2 and d == 29 and (y % 4 or (y % 100 == 0 and y % 400)):
        return -1
    return (((_days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + sec) * 1_000_000_000


def rfc3339_ns(s: str) -> int:
    """RFC3339 timestamp (``2023-02-09T20:30:37.167359596Z``: up to 9 fraction digits,
    ``Z`` or ``+hh:mm``) -> int ns since the epoch; -1 when malformed or outside
    [1970, 2262) (the i8 range). Never raises. The whole-second prefix is cached,
    so the usual path is one dict lookup and one small int()."""
    head = s[:19]
    base = _second_cache.get(head)
    if base is None:
        base = _second_ns(head)
        if len(_second_cache) >= 4096:
            _second_cache.clear()
        _second_cache[head] = base
    if base < 0:
        return -1
    rest = s[19:]
    tail = rest[-1:]
    if tail == "Z" or tail == "z":
        digits = rest[1:-1]
        if rest[:1] == "." and 0 < len(digits) <= 9 and digits.isdigit() and digits.isascii():
            ns = base + int(digits) * _FRACTION_SCALE[len(digits)]
        elif len(rest) == 1:
            ns = base
        else:
            return -1
    else:
        zone = rest[-6:]
        if not (len(zone) == 6 and zone[0] in "+-" and zone[3] == ":" and (zone[1:3] + zone[4:]).isdigit()
                and zone.isascii()):
            return -1
        frac = rest[:-6]
        digits = frac[1:]
        if frac and not (frac[0] == "." and 0 < len(digits) <= 9 and digits.isdigit() and digits.isascii()):
            return -1
        off = (int(zone[1:3]) * 60 + int(zone[4:])) * 60_000_000_000
        ns = base + (int(digits) * _FRACTION_SCALE[len(digits)] if digits else 0)
        ns = ns - off if zone[0] == "+" else ns + off
    return ns if 0 <= ns < I8_END else -1


# -- wire shapes -------------------------------------------------------------------
class _Level(msgspec.Struct):
    side: str
    price_level: str
    new_quantity: str
    event_time: str = ""


class _Event(msgspec.Struct):
    type: str = ""
    product_id: str = ""
    updates: list[_Level] | None = None
    subscriptions: dict[str, list[str]] | None = None


class _Msg(msgspec.Struct):
    channel: str = ""
    timestamp: str = ""
    sequence_num: int | None = None
    events: list[_Event] | None = None
    type: str = ""           # "error" frames
    message: str = ""
    reason: str = ""


_decode = msgspec.json.Decoder(_Msg).decode
_PRODUCT_IN_TEXT = re.compile(r"\b([A-Z0-9]+-[A-Z0-9]+(?:-[A-Z0-9]+)?)\b")


class _Side:
    """One side of a product's book: price -> size, with a lazy heap for the best price."""
    __slots__ = ("levels", "heap", "sign")

    def __init__(self, sign: float):
        self.levels: dict[float, float] = {}
        self.heap: list[float] = []      # sign * price; stale entries skipped lazily
        self.sign = sign                 # -1 for bids (max-heap), +1 for asks

    def set(self, price: float, qty: float) -> None:
        levels = self.levels
        if qty == 0.0:
            levels.pop(price, None)
            return
        if price not in levels:
            heapq.heappush(self.heap, self.sign * price)
            if len(self.heap) > 2 * len(levels) + 64:
                self.heap = [self.sign * p for p in levels]
                self.heap.append(self.sign * price)
                heapq.heapify(self.heap)
        levels[price] = qty

    def best(self) -> tuple[float, float] | None:
        heap, levels, sign = self.heap, self.levels, self.sign
        while heap:
            p = sign * heap[0]
            q = levels.get(p)
            if q is not None:
                return p, q
            heapq.heappop(heap)
        return None


class _Book:
    __slots__ = ("bids", "asks", "last")

    def __init__(self):
        self.bids = _Side(-1.0)
        self.asks = _Side(1.0)
        self.last: tuple | None = None   # last published (bid, bid_qty, ask, ask_qty)


FRESH, READY, WAIT, POISONED = 0, 1, 2, 3   # a product's book on this connection (depth > 0)


class CoinbaseAdapter(VenueAdapter):
    """Coinbase Advanced Trade ``level2`` -> BBO (or an L2 book when ``depth`` > 0), with
    ``heartbeats`` subscribed."""

    name = "coinbase"
    default_url = "wss://advanced-trade-ws.coinbase.com"
    market = "spot"
    path = "/"
    refusal_fails_request = True
    supports_depth = True

    def __init__(self, instruments: list[Instrument], venue_id: int = 0):
        super().__init__(instruments, venue_id)
        self._books: dict[str, _Book] = {}
        self._last_seq: int | None = None
        self.applied = 0
        # depth > 0: product -> FRESH (no snapshot yet on this connection), READY, WAIT
        # (resync asked: a new connection comes), POISONED (an update came before its
        # snapshot: nothing of it is trusted on this connection)
        self._state: dict[str, int] = {}

    def sockets(self) -> list[SocketSpec]:
        products = [i.native for i in self.subscribable()]
        frames = [
            msgspec.json.encode({"type": "subscribe", "product_ids": products, "channel": "level2"}).decode(),
            msgspec.json.encode({"type": "subscribe", "channel": "heartbeats"}).decode(),
        ]
        return [SocketSpec(self.path, frames)]

    def on_connect(self, socket_index: int) -> None:
        self._books.clear()
        self._last_seq = None
        self._state.clear()

    def _parse(self, frame, sink) -> Control | None:
        if self.depth > 0:
            return self._parse_depth(frame, sink)
        m = decode_frame(_decode, frame, sink)
        if m is None:
            return None
        if m.type == "error":
            text = f"{m.message} {m.reason}".strip()
            found = _PRODUCT_IN_TEXT.search(m.reason or m.message)
            return Control("error", detail=text, symbol=found.group(1) if found else "")
        seq = m.sequence_num
        gap = None
        if seq is not None:
            prev = self._last_seq
            if prev is not None and seq != prev + 1:
                if seq <= prev:
                    sink.reject(stale_reason(seq, prev))
                    return None
                # missed a frame: books unusable until a fresh snapshot (this frame's
                # snapshots still apply; its updates are refused as no_snapshot)
                self._books.clear()
                gap = Control("error", detail="sequence gap", reconnect=True)
            self._last_seq = seq
        ch = m.channel
        if ch == "l2_data":
            self._l2(m, sink)
            return gap
        if ch == "heartbeats":
            return gap or Control("heartbeat")
        if ch == "subscriptions":
            subs = {}
            for e in m.events or ():
                subs.update(e.subscriptions or {})
            return gap or Control("ack", detail=" ".join(f"{k}:{','.join(v)}" for k, v in subs.items()))
        sink.reject("unknown_channel" if ch else "bad_shape")
        return gap

    def _l2(self, m: _Msg, sink) -> None:
        if not m.events:
            sink.reject("bad_shape")
            return
        books = self._books
        env_ts = -2   # parsed lazily
        for e in m.events:
            inst = self.by_native.get(e.product_id)
            if inst is None:
                sink.reject("unknown_symbol")
                continue
            updates = e.updates
            if updates is None or (not updates and e.type != "snapshot"):
                sink.reject("bad_shape")
                continue
            if e.type == "snapshot":
                book = books[e.product_id] = _Book()
                flags = _SNAPSHOT
            elif e.type == "update":
                book = books.get(e.product_id)
                if book is None:
                    sink.reject("no_snapshot")
                    continue
                flags = 0
            else:
                sink.reject("bad_shape")
                continue
            bids, asks = book.bids, book.asks
            last_time = ""
            for lv in updates:
                try:
                    price = float(lv.price_level)
                    qty = float(lv.new_quantity)
                except ValueError:
                    sink.reject("bad_shape")
                    continue
                if not (0.0 < price < INF and 0.0 <= qty < INF):   # book_reject's bounds
                    sink.reject("bad_price")
                    continue
                side = lv.side
                if side == "bid":
                    bids.set(price, qty)
                elif side == "offer" or side == "ask":
                    asks.set(price, qty)
                else:
                    sink.reject("bad_shape")
                    continue
                self.applied += 1
                last_time = lv.event_time
            b, a = bids.best(), asks.best()
            if b is None or a is None:
                sink.reject("empty_book")
                continue
            top = (b[0], b[1], a[0], a[1])
            if top == book.last:
                continue
            if b[0] > a[0]:                 # every level passed the bounds: only a cross is left
                sink.reject("crossed")
                continue
            ts = rfc3339_ns(last_time) if last_time else -1
            if ts <= 0:
                if env_ts == -2:
                    env_ts = rfc3339_ns(m.timestamp)
                ts = env_ts
            if ts <= 0:
                ts, flags = 0, flags | _NO_TS
            book.last = top
            sink.quote(inst.instrument_id, b[0], a[0], b[1], a[1], ts, flags)

    # -- L2 book (depth > 0) ----------------------------------------------------------
    def _parse_depth(self, frame, sink) -> Control | None:
        m = decode_frame(_decode, frame, sink)
        if m is None:
            return None
        if m.type == "error":
            text = f"{m.message} {m.reason}".strip()
            found = _PRODUCT_IN_TEXT.search(m.reason or m.message)
            return Control("error", detail=text, symbol=found.group(1) if found else "")
        seq = m.sequence_num
        resync = None
        if seq is not None:
            prev = self._last_seq
            if prev is not None and seq != prev + 1:
                if seq <= prev:
                    sink.reject(stale_reason(seq, prev))   # applied already: books stay exact
                    return None
                resync = self._gap(sink)
            self._last_seq = seq
        ch = m.channel
        if ch == "l2_data":
            if seq is None:                         # cannot be placed in the sequence
                sink.reject("bad_shape")
                return self._break_all(sink, BookFault.BAD_DATA)
            return self._l2_depth(m, seq, sink) or resync
        if ch == "heartbeats":
            return resync or Control("heartbeat")
        if ch == "subscriptions":
            subs = {}
            for e in m.events or ():
                subs.update(e.subscriptions or {})
            return resync or Control("ack", detail=" ".join(
                f"{k}:{','.join(v)}" for k, v in subs.items()))
        sink.reject("unknown_channel" if ch else "bad_shape")
        return resync

    def _gap(self, sink) -> Control:
        """A frame was missed: which product it was cannot be told (one counter for the
        whole connection), so every synced book is broken until the new connection."""
        return self._break_all(sink, BookFault.GAP)

    def _break_all(self, sink, fault: int) -> Control:
        """Every synced book broken (``fault``) until the new connection: a frame was lost,
        or its data cannot be told apart from garbage nor pinned on one product."""
        state = self._state
        for inst in self.instruments:
            st = state.get(inst.native, FRESH)
            if st == READY:
                sink.book_broken(inst.instrument_id, fault)
            if st != POISONED:
                state[inst.native] = WAIT
        return Control("resync", detail=BookFault(fault).name, reconnect=True)

    def _broken(self, inst, fault: int, sink, state: int = WAIT) -> Control:
        sink.book_broken(inst.instrument_id, fault)
        self._state[inst.native] = state
        return Control("resync", symbol=inst.native, detail=BookFault(fault).name,
                       reconnect=True)

    def _l2_depth(self, m: _Msg, seq: int, sink) -> Control | None:
        if not m.events:                            # a numbered frame without its data
            sink.reject("bad_shape")
            return self._break_all(sink, BookFault.BAD_DATA)
        ctl = None
        env_ts = -2   # parsed lazily
        state = self._state
        for e in m.events:
            inst = self.by_native.get(e.product_id)
            if inst is None:                        # not subscribed: garbage, of some book
                sink.reject("unknown_symbol")
                ctl = self._break_all(sink, BookFault.BAD_DATA)
                continue
            st = state.get(e.product_id, FRESH)
            snap = e.type == "snapshot"
            if st == POISONED:
                sink.reject("out_of_order" if snap else "no_snapshot")
                continue
            updates = e.updates
            # garbage breaks a book that is in use (or about to be): it is not trusted
            trusted = st == READY or st == FRESH
            if not (snap or e.type == "update") or updates is None or \
                    (not updates and not snap):
                sink.reject("bad_shape")
                if trusted:
                    ctl = self._broken(inst, BookFault.BAD_DATA, sink)
                continue
            if not snap and st != READY:
                if st == FRESH:                     # an update before the snapshot
                    ctl = self._broken(inst, BookFault.EARLY_DIFF, sink, POISONED)
                else:
                    sink.reject("no_snapshot")      # resync under way
                continue
            bids, asks = [], []
            why = None
            last_time = ""
            for lv in updates:
                try:
                    price = float(lv.price_level)
                    qty = float(lv.new_quantity)
                except ValueError:
                    why = "bad_shape"
                    break
                if not (0.0 < price < INF and 0.0 <= qty < INF):
                    why = "bad_price"
                    break
                side = lv.side
                if side == "bid":
                    bids += (price, qty)        # flat: one float array for both sides
                elif side == "offer" or side == "ask":
                    asks += (price, qty)
                else:
                    why = "bad_shape"
                    break
                last_time = lv.event_time
            if why is not None:
                sink.reject(why)
                if trusted:
                    ctl = self._broken(inst, BookFault.BAD_DATA, sink)
                continue
            ts = rfc3339_ns(last_time) if last_time else -1
            if ts <= 0:
                if env_ts == -2:
                    env_ts = rfc3339_ns(m.timestamp)
                ts = env_ts
            bids, asks = split_levels(np.array(bids + asks, np.float64).reshape(-1, 2),
                                      len(bids) >> 1)
            if sink.book(inst.instrument_id, bids, asks, snap, max(ts, 0),
                         seq if 0 <= seq < I8_END else 0) is None:
                state[e.product_id] = WAIT           # refused (the sink counted why)
                ctl = Control("resync", symbol=inst.native, detail="refused", reconnect=True)
                continue
            state[e.product_id] = READY
            self.applied += len(updates)
        return ctl

    @staticmethod
    def native_to_canonical(native: str) -> str | None:
        """``BTC-USD`` -> ``BTC/USD`` (the native quote is kept)."""
        parts = native.split("-")
        if len(parts) == 2 and parts[0] and parts[1]:
            return f"{parts[0]}/{parts[1]}"
        return None
