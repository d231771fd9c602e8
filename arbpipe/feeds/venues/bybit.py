"""Bybit v5 public adapters (docs/venues.md, "Bybit").

``bybit-spot``    ``orderbook.1.<SYMBOL>`` on ``/v5/public/spot``. Level 1 is snapshot-only;
                  the top bid/ask levels are the quote (any ``orderbook.<N>`` snapshot works
                  the same way; a depth > 1 ``delta`` cannot be applied without a book and is
                  rejected as ``unsupported``). Exchange time = ``cts`` (matching engine),
                  else ``ts``.
``bybit-linear``  ``tickers.<SYMBOL>`` on ``/v5/public/linear``: one ``snapshot`` then
                  ``delta`` frames in which absent fields are unchanged, so the adapter keeps
                  merged per-symbol state. Every accepted frame re-publishes the merged quote
                  (``bid1Price/bid1Size/ask1Price/ask1Size``; a push re-asserts the BBO as of
                  its ``ts``) and publishes funding (``fundingRate``, ``nextFundingTime``,
                  ``fundingIntervalHour``, ``markPrice``) when the frame carries one of those.
                  Exchange time = ``ts``.

Units: prices in quote currency, sizes in base coin, ms on the wire -> ns (x 1_000_000),
funding interval hours -> seconds. ``Flag.SNAPSHOT`` is set when the frame's ``type`` is
``snapshot``.

Ordering, per (topic kind, symbol), by the key (update id, ts) with update id = ``data.u``
(orderbook) or ``cs`` (tickers): an equal key is a ``duplicate``, a smaller one
``out_of_order``. An equal update id with a newer ``ts`` is accepted: this is the idle
re-send of the level-1 snapshot every 3 s (same ``u``), and the ticker push whose ``cs`` did
not move; it is re-published so the quote stays fresh downstream. ``u == 1`` in an
orderbook snapshot means a venue service restart and resets the symbol's order, and so does
any ticker ``snapshot`` (only an exact repeat of the last key is a ``duplicate``). State is
per connection and reset by ``on_connect``.

Keep-alive: the client sends ``{"op":"ping"}`` every 20 s; spot and linear pongs differ
(``req_id`` only on linear) and both classify as ``Control("pong")``. One subscribe frame
per topic with ``req_id`` = topic, so a failed ack names its topic even when ``ret_msg``
does not (e.g. ``"Params Error"``).

L2 books (``depth`` N > 0; docs/venues.md, "Bybit", "L2 book"): both adapters subscribe
``orderbook.<D>.<SYMBOL>`` with D the smallest depth channel Bybit offers for the category
that is >= N (``BOOK_DEPTHS``; the largest when none is), instead of their BBO channel;
linear keeps ``tickers`` for funding only (its bid/ask are not published: QUOTEs come from
the book's top). Per symbol and connection: ``snapshot`` replaces the book; a ``delta``
applies when its ``u`` is the last one + 1 (``u`` is contiguous per topic); a ``u`` not
above the last is ``duplicate`` / ``out_of_order`` and dropped (the book stays exact); a
skipped ``u`` is a GAP and a delta before any snapshot an EARLY_DIFF: the book is marked
not ready and ``Control("resync")`` makes the runtime send ``resubscribe(native)``
(unsubscribe + subscribe), after which Bybit sends a fresh snapshot; deltas that arrive
meanwhile are dropped (``no_snapshot``). ``u == 1`` (any type) is Bybit's service restart:
counted as RESTART and applied as a snapshot. A message whose levels cannot be applied
(garbage numbers, a crossed book) is BAD_DATA (counted by the sink) and resynced the same
way; two bad snapshots in a row wait ``RESYNC_RETRY`` dropped deltas before asking again.
"""
from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from arbpipe.books.parse import raw_levels
from arbpipe.feeds.venues.base import Control, SocketSpec, VenueAdapter, decode_frame
from arbpipe.feeds.venues.binance import split_concatenated
from arbpipe.feeds.venues.checks import (MAX_MS, MS, NO_KEY, U4_END, book_reject, funding_ok,
                                         stale_reason)
from arbpipe.symbols import Instrument
from shm_layouts import Flag
from shm_layouts.records import BookFault

_SNAP = int(Flag.SNAPSHOT)
_DEFAULT_INTERVAL_S = 8 * 3600
_TOPIC_RE = re.compile(r"((?:orderbook\.\d+|tickers)\.([^\s,;:\]\"']+))")
# orderbook depth channels per category (Bybit v5 "Orderbook", Depths), ascending
BOOK_DEPTHS = {"spot": (1, 50, 200, 1000), "linear": (1, 50, 200, 1000)}
RESYNC_RETRY = 1000     # dropped deltas of a book awaiting its snapshot before asking again
_ID_END = 1 << 63       # update ids go into the records' u8 word; larger ones are garbage


class _Envelope(msgspec.Struct, gc=False):
    """Data frames (topic type ts cts cs data) and op replies (success ret_msg op req_id)."""
    topic: str | None = None
    type: str | None = None
    ts: int = 0
    cts: int = 0
    cs: int | None = None
    data: msgspec.Raw = msgspec.Raw()
    success: bool | None = None
    ret_msg: str = ""
    op: str | None = None
    req_id: Any = None


class _Book(msgspec.Struct, gc=False):
    """``orderbook.N`` data: levels are [price, size] strings, bids descending."""
    s: str
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    u: int
    seq: int | None = None


class _Ticker(msgspec.Struct, gc=False):
    """``tickers`` data; None = absent from this frame (unchanged in a delta)."""
    symbol: str
    bid1Price: str | None = None
    bid1Size: str | None = None
    ask1Price: str | None = None
    ask1Size: str | None = None
    markPrice: str | None = None
    fundingRate: str | None = None
    nextFundingTime: str | None = None
    fundingIntervalHour: str | None = None


_decode_env = msgspec.json.Decoder(_Envelope).decode
_decode_book = msgspec.json.Decoder(_Book).decode


class _RawBook(msgspec.Struct, gc=False):
    """``_Book`` with the levels left as raw JSON, parsed by ``raw_levels`` (numba)."""
    s: str
    b: msgspec.Raw
    a: msgspec.Raw
    u: int
    seq: int | None = None


_decode_raw_book = msgspec.json.Decoder(_RawBook).decode


def _decode_depth(data) -> tuple:
    """(book, bids, asks) of an ``orderbook.N`` data object: the levels as float arrays
    when ``raw_levels`` takes them, else as ``_Book`` decodes them (and fails) before."""
    try:
        d = _decode_raw_book(data)
        lv = raw_levels(d.b, d.a, True)       # strings only, as ``_Book`` requires
    except msgspec.DecodeError:             # the decoder below says why, as before
        lv = None
    if lv is None:
        d = _decode_book(data)
        return d, d.b, d.a
    return d, lv[0], lv[1]
_decode_ticker = msgspec.json.Decoder(_Ticker).decode


class _Sync:
    """Book sync state of one symbol on the current connection: ``key`` = (u, ts) of the
    last applied message (None before any); ``synced``: deltas apply; ``pending``: a resync
    was asked for and deltas are dropped until a snapshot; ``bad``: consecutive snapshots
    the sink refused."""
    __slots__ = ("key", "synced", "pending", "ignored", "bad")

    def __init__(self):
        self.key = None
        self.synced = self.pending = False
        self.ignored = self.bad = 0


class _TickerState:
    """Merged ``tickers`` fields of one symbol, parsed; None = unknown or cleared."""
    __slots__ = ("bid", "bid_qty", "ask", "ask_qty", "rate", "next_ms", "hours", "mark")

    def __init__(self):
        self.bid = self.bid_qty = self.ask = self.ask_qty = None
        self.rate = self.next_ms = self.hours = self.mark = None


class _BybitBase(VenueAdapter):
    """Shared parsing; subclasses set ``name``, ``market``, ``category``, ``_path``,
    ``_channel`` and ``_book_extra`` (topics kept beside the book in depth mode)."""

    default_url = "wss://stream.bybit.com"
    supports_depth = True
    category: str
    _path: str
    _channel: str                       # topic prefix subscribed per symbol (BBO mode)
    _book_extra: tuple[str, ...] = ()   # topic prefixes subscribed beside the book (depth mode)

    def __init__(self, instruments: list[Instrument], venue_id: int = 0):
        super().__init__(instruments, venue_id)
        self._ids = {i.native: i.instrument_id for i in instruments}
        self._last: dict[tuple[str, str], tuple[int, int]] = {}   # (kind, sym) -> (id, ts)
        self._tickers: dict[str, _TickerState] = {}               # merged ticker fields
        self._sync: dict[str, _Sync] = {}                         # depth mode: per symbol
        self.applied = 0        # messages that changed state without a record (books, tickers)

    @staticmethod
    def native_to_canonical(native: str) -> str | None:
        return split_concatenated(native)

    def book_channel(self) -> int:
        """The ``orderbook.<D>`` depth D subscribed for ``depth`` (0: BBO mode)."""
        n = self.depth
        if n <= 0:
            return 0
        depths = BOOK_DEPTHS[self.category]
        return next((d for d in depths if d >= n), depths[-1])

    def _book_topic(self, native: str) -> str:
        return f"orderbook.{self.book_channel()}.{native}"

    def topics(self) -> list[str]:
        """Every topic subscribed, in order (one subscribe frame each)."""
        natives = [i.native for i in self.instruments]
        if self.book_channel():
            return [self._book_topic(n) for n in natives] + [
                f"{extra}{n}" for extra in self._book_extra for n in natives]
        return [f"{self._channel}{n}" for n in natives]

    def sockets(self) -> list[SocketSpec]:
        subs = [json.dumps({"req_id": t, "op": "subscribe", "args": [t]}) for t in self.topics()]
        return [SocketSpec(path=self._path, subscribe=subs, ping_text='{"op":"ping"}',
                           ping_interval_s=20.0)]

    def resubscribe(self, native: str) -> list[str]:
        """Unsubscribe + subscribe of ``native``'s book topic: Bybit answers the subscribe
        with a fresh snapshot."""
        t = self._book_topic(native)
        return [json.dumps({"req_id": t, "op": op, "args": [t]})
                for op in ("unsubscribe", "subscribe")]

    def on_connect(self, socket_index: int) -> None:
        self._last.clear()
        self._tickers.clear()
        self._sync.clear()

    # -- parse -----------------------------------------------------------------
    def parse(self, frame, recv_ns: int, sink, socket_index: int = 0) -> Control | None:
        env = decode_frame(_decode_env, frame, sink)
        if env is None:
            return None
        topic = env.topic
        try:
            if topic is None:
                return self._reply(env, sink)
            if not len(env.data) or env.type not in ("snapshot", "delta"):
                sink.reject("bad_shape")
            elif not 0 <= env.ts <= MAX_MS or not 0 <= env.cts <= MAX_MS:
                sink.reject("bad_ts")
            elif topic.startswith("orderbook."):
                if self.depth > 0:
                    return self._depth_book(env, sink)
                self._book(env, sink)
            elif topic.startswith("tickers."):
                self._ticker(env, sink)
            else:
                sink.reject("unknown_topic")
        except msgspec.ValidationError:
            sink.reject("bad_shape")
        except (ValueError, TypeError, OverflowError, RecursionError):  # float("x"), odd Any
            sink.reject("bad_shape")
        return None

    def _in_order(self, key: tuple[str, str], seq: tuple[int, int], sink) -> bool:
        last = self._last.get(key, NO_KEY)
        if seq <= last:
            sink.reject(stale_reason(seq, last))
            return False
        return True

    def _book(self, env: _Envelope, sink) -> None:
        if env.type != "snapshot":
            sink.reject("unsupported")     # depth > 1 delta; level 1 is snapshot-only
            return
        d = _decode_book(env.data)
        iid = self._ids.get(d.s)
        if iid is None:
            sink.reject("unknown_symbol")
            return
        if not d.b or not d.a:
            sink.reject("empty_book")
            return
        (bp, bq), (ap, aq) = d.b[0], d.a[0]
        bid, bid_qty, ask, ask_qty = float(bp), float(bq), float(ap), float(aq)
        why = book_reject(bid, ask, bid_qty, ask_qty)
        if why is not None:
            sink.reject(why)
            return
        key = ("ob", d.s)
        if d.u == 1:                       # service restart: the book starts over
            self._last.pop(key, None)
        seq = (d.u, env.ts)
        if not self._in_order(key, seq, sink):
            return
        self._last[key] = seq
        sink.quote(iid, bid, ask, bid_qty, ask_qty, (env.cts or env.ts) * MS, _SNAP)

    # -- L2 book (depth > 0) ---------------------------------------------------------
    def _depth_book(self, env: _Envelope, sink) -> Control | None:
        d, bids, asks = _decode_depth(env.data)
        sym = d.s
        inst = self.by_native.get(sym)
        if inst is None:
            sink.reject("unknown_symbol")
            return None
        if env.topic != self._book_topic(sym):      # another depth (or symbol) than ours
            sink.reject("unknown_topic")
            return None
        u = d.u
        if not 0 <= u < _ID_END:
            sink.reject("bad_shape")
            return None
        st = self._sync.get(sym)
        if st is None:
            st = self._sync[sym] = _Sync()
        key = (u, env.ts)
        if u == 1:                                   # service restart: overwrite
            if st.key == key:
                sink.reject("duplicate")
                return None
            if st.key is not None:
                sink.book_broken(inst.instrument_id, BookFault.RESTART)
            return self._apply(st, inst, d, bids, asks, env, True, sink)
        if env.type == "snapshot":
            if st.synced and key <= st.key:          # a repeat, or older than the book
                sink.reject(stale_reason(key, st.key))
                return None
            return self._apply(st, inst, d, bids, asks, env, True, sink)
        if not st.synced:
            if st.pending:                           # resync asked for: wait for the snapshot
                sink.reject("no_snapshot")
                st.ignored += 1
                if st.ignored % RESYNC_RETRY == 0:
                    return Control("resync", symbol=sym, detail="retry")
                return None
            return self._broken(st, inst, sym, BookFault.EARLY_DIFF, sink)
        last = st.key[0]
        if u <= last:
            sink.reject(stale_reason(u, last))
            return None
        if u != last + 1:
            return self._broken(st, inst, sym, BookFault.GAP, sink)
        return self._apply(st, inst, d, bids, asks, env, False, sink)

    def _apply(self, st: _Sync, inst: Instrument, d, bids, asks, env: _Envelope,
               snapshot: bool, sink) -> Control | None:
        fb = sink.book(inst.instrument_id, bids, asks, snapshot, (env.cts or env.ts) * MS, d.u)
        if fb is None:          # refused: the sink counted why (BAD_DATA, no_snapshot)
            return self._lost(st, d.s, snapshot, "refused")
        st.key = (d.u, env.ts)
        st.synced = True
        st.pending = False
        st.bad = 0
        self.applied += 1
        return None

    def _broken(self, st: _Sync, inst: Instrument, sym: str, fault: BookFault,
                sink) -> Control | None:
        sink.book_broken(inst.instrument_id, fault)
        return self._lost(st, sym, False, fault.name)

    @staticmethod
    def _lost(st: _Sync, sym: str, snapshot: bool, detail: str) -> Control | None:
        """The book is not ready: resync, except after a second unusable snapshot in a row
        (then ``RESYNC_RETRY`` dropped deltas later: resubscribing at once would only fetch
        the same snapshot again)."""
        st.synced = False
        st.pending = True
        st.ignored = 0
        if snapshot:
            st.bad += 1
            if st.bad > 1:
                return None
        return Control("resync", symbol=sym, detail=detail)

    def _ticker(self, env: _Envelope, sink) -> None:
        d = _decode_ticker(env.data)
        sym = d.symbol
        iid = self._ids.get(sym)
        if iid is None:
            sink.reject("unknown_symbol")
            return
        key = ("tk", sym)
        seq = (env.cs if env.cs is not None else 0, env.ts)
        snapshot = env.type == "snapshot"
        if snapshot and self._last.get(key) != seq:
            pass                           # a new snapshot restarts the symbol's order
        elif not self._in_order(key, seq, sink):
            return
        old = _TickerState() if snapshot else self._tickers.get(sym) or _TickerState()
        # absent (None) = unchanged; "" = cleared (empty side, no funding); ValueError on
        # a non-numeric string rejects the whole frame as bad_shape before anything changes
        v0, v1, v2, v3 = d.bid1Price, d.bid1Size, d.ask1Price, d.ask1Size
        f0, f1, f2, f3 = d.fundingRate, d.nextFundingTime, d.fundingIntervalHour, d.markPrice
        st = _TickerState()
        st.bid = old.bid if v0 is None else float(v0) if v0 else None
        st.bid_qty = old.bid_qty if v1 is None else float(v1) if v1 else None
        st.ask = old.ask if v2 is None else float(v2) if v2 else None
        st.ask_qty = old.ask_qty if v3 is None else float(v3) if v3 else None
        st.rate = old.rate if f0 is None else float(f0) if f0 else None
        st.next_ms = old.next_ms if f1 is None else int(f1) if f1 else None
        st.hours = old.hours if f2 is None else int(f2) if f2 else None
        st.mark = old.mark if f3 is None else float(f3) if f3 else None
        self._tickers[sym] = st
        self._last[key] = seq
        ts_ns = env.ts * MS
        emitted = False
        bid, ask, bid_qty, ask_qty = st.bid, st.ask, st.bid_qty, st.ask_qty
        if self.depth > 0:      # the book publishes the quotes: tickers give funding only
            pass
        elif bid is not None and ask is not None and bid_qty is not None and ask_qty is not None:
            emitted = True
            why = book_reject(bid, ask, bid_qty, ask_qty)
            if why is not None:
                sink.reject(why)
            else:
                sink.quote(iid, bid, ask, bid_qty, ask_qty, ts_ns, _SNAP if snapshot else 0)
        if (f0 is not None or f1 is not None or f2 is not None or f3 is not None) \
                and st.rate is not None and st.next_ms is not None:
            emitted = True
            rate, mark = st.rate, st.mark or 0.0
            interval_s = st.hours * 3600 if st.hours is not None else _DEFAULT_INTERVAL_S
            if not funding_ok(rate, mark):
                sink.reject("bad_price")
            elif not (0 < st.next_ms <= MAX_MS and 0 < interval_s < U4_END):
                sink.reject("bad_ts")
            else:
                sink.funding(iid, rate, st.next_ms * MS, interval_s, mark, ts_ns)
        if emitted:
            return
        if self.depth > 0:
            self.applied += 1               # merged: its fields count for the next funding
        else:
            sink.reject("no_bbo")          # nothing publishable yet (e.g. spot tickers)

    def _reply(self, env: _Envelope, sink) -> Control | None:
        """Op replies: pong (spot and linear shapes), subscribe acks and failures."""
        op, msg = env.op, env.ret_msg
        if op is None and env.success is None:
            sink.reject("bad_shape")
            return None
        if op in ("ping", "pong") or msg == "pong":
            return Control(kind="pong" if env.success is not False else "error", detail=msg)
        if env.success is False:
            where = f"{msg} {env.req_id if isinstance(env.req_id, str) else ''}"
            hit = _TOPIC_RE.search(where)
            topic = hit.group(1) if hit else ""
            sym = hit.group(2) if hit else ""
            if not topic and "topic:" in msg:
                topic = msg.split("topic:", 1)[1].strip()
            return Control(kind="error", detail=f"{op}: {msg} [{topic}]", symbol=sym)
        if op in ("subscribe", "unsubscribe"):
            return Control(kind="ack", detail=f"{op} {env.req_id}")
        return Control(kind="other", detail=f"{op}: {msg}")


class BybitSpot(_BybitBase):
    """Bybit spot BBO from ``orderbook.1.<SYMBOL>`` (depth mode: the ``orderbook.<D>`` book)."""
    name = "bybit-spot"
    market = "spot"
    category = "spot"
    _path = "/v5/public/spot"
    _channel = "orderbook.1."


class BybitLinear(_BybitBase):
    """Bybit USDT/USDC perpetual BBO + funding from ``tickers.<SYMBOL>`` (merged deltas);
    depth mode: the ``orderbook.<D>`` book, and ``tickers`` for funding."""
    name = "bybit-linear"
    market = "perp"
    category = "linear"
    _path = "/v5/public/linear"
    _channel = "tickers."
    _book_extra = ("tickers.",)
