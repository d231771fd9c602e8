"""Binance spot and USD-M futures adapters (docs/venues.md, "Binance").

``binance``       spot ``<symbol>@bookTicker`` on ``/ws`` (raw-stream mode, live SUBSCRIBE).
                  The payload has no time field: quotes carry ``Flag.NO_EXCHANGE_TS`` and
                  ``exchange_ts_ns == 0``.
``binance-usdm``  USD-M perpetuals over two sockets, because since 2026 the streams are
                  routed: socket 0 = ``/public/ws`` (``<symbol>@bookTicker``, exchange time
                  = ``T`` transaction time), socket 1 = ``/market/ws``
                  (``<symbol>@markPrice@1s`` -> funding: ``r`` rate per interval, ``T`` next
                  funding time, ``p`` mark price, ``E`` event time).

Units: prices in quote currency, quantities in base-asset units (Binance sizes are base
already), timestamps ms on the wire -> ns since the epoch (x 1_000_000).

Ordering: per symbol, a bookTicker whose ``u`` equals the last accepted one is a
``duplicate``, a smaller one ``out_of_order``; markPrice frames are ordered the same way by
``E``. State is per connection and reset by ``on_connect``.

Keep-alive is the server's websocket ping frame (answered by the runtime); there is no
application ping. An unknown symbol gets no error from Binance: the stream stays silent and
the runtime's watchdog reports it. Plain payloads and the combined-stream wrapper
``{"stream":..,"data":..}`` are both accepted.

L2 books (``depth`` > 0; docs/venues.md, "Binance", "L2 book"): ``<symbol>@depth@100ms``
replaces ``@bookTicker`` (USD-M: on socket 0, ``/public``), and the REST snapshot
(``GET /api/v3/depth`` / ``GET /fapi/v1/depth``, ``limit=1000``) starts each book. The sync
rules live in ``DiffSync`` (Gate keeps its book the same way): diffs are buffered until the
snapshot arrives, those with ``u`` <= ``lastUpdateId`` (USD-M: ``u`` < it) are dropped, the
first one applied must straddle ``lastUpdateId + 1`` (USD-M: ``lastUpdateId``), and each
next one must continue the chain: ``U`` = previous ``u`` + 1 (USD-M: ``pu`` = previous
``u``). A snapshot that the buffered diffs cannot bridge is STALE_SNAPSHOT and fetched
again; any other break (a gap, a duplicate, garbage) marks the book not ready and resyncs.
"""
from __future__ import annotations

import collections
import json
from typing import Any

import msgspec
import numpy as np

from arbpipe.books.parse import raw_levels
from arbpipe.feeds.fastpath import QuoteTable
from arbpipe.feeds.venues.base import Control, SocketSpec, VenueAdapter, decode_frame
from arbpipe.feeds.venues.checks import (MAX_MS, MS, NO_SEQ, book_reject, funding_ok,
                                         stale_reason)
from arbpipe.symbols import Instrument
from shm_layouts import Flag
from shm_layouts.records import BookFault

_NO_TS = int(Flag.NO_EXCHANGE_TS)
SUBSCRIBE_CHUNK = 200                # streams per SUBSCRIBE frame (<= 1024 per connection)

# Known quote assets of concatenated symbols, longest-suffix-first where they overlap.
QUOTE_SUFFIXES = ("FDUSD", "USDT", "USDC", "USD", "BTC", "ETH")


def split_concatenated(native: str, quotes=QUOTE_SUFFIXES) -> str | None:
    """``BTCUSDT`` -> ``BTC/USDT`` by stripping a known quote suffix; None if none fits.
    Best effort only: the config's per-venue native symbol is authoritative."""
    sym = native.upper()
    if not sym.isalnum():                  # dated futures (BTCUSDT_250627), odd symbols
        return None
    for q in quotes:
        if sym.endswith(q) and len(sym) > len(q):
            return f"{sym[:-len(q)]}/{q}"
    return None


class _Msg(msgspec.Struct, gc=False):
    """Every Binance frame shape in one struct; absent fields keep their default.
    bookTicker: u s b B a A (+ e E T on USD-M); depthUpdate: e E s U u b a (+ T pu on
    USD-M; ``b`` / ``a`` are then [price, qty] lists); markPriceUpdate: e E s p r T;
    ack: result id; error: error id (or a bare code msg); combined wrapper: stream data;
    serverShutdown: e E."""
    e: str = ""
    E: int = 0
    T: int = 0
    s: str = ""
    u: int | None = None
    U: int | None = None
    pu: int | None = None
    b: Any = None            # bookTicker: str; depthUpdate: list of [price, qty]
    B: str | None = None
    a: Any = None
    A: str | None = None
    p: str | None = None
    r: str | None = None
    result: Any = msgspec.UNSET
    id: Any = msgspec.UNSET
    error: Any = msgspec.UNSET
    code: Any = None
    msg: Any = None
    stream: str | None = None
    data: msgspec.Raw = msgspec.Raw()


_decode = msgspec.json.Decoder(_Msg).decode


class _RawMsg(_Msg, gc=False):
    """``_Msg`` with the levels left as raw JSON (depth mode: ``raw_levels`` parses them)."""
    b: msgspec.Raw = msgspec.Raw()
    a: msgspec.Raw = msgspec.Raw()


_decode_raw = msgspec.json.Decoder(_RawMsg).decode


def fast_depth(frame, decode_raw, levels_of):
    """(message, bids, asks) of a depth frame whose levels ``raw_levels`` takes (float
    arrays, no Python object per level), else None: the frame then goes the usual way,
    which judges it as before. ``levels_of(m)``: its (raw bids, raw asks) or None."""
    try:
        m = decode_raw(frame)
    except msgspec.DecodeError:
        return None
    raw = levels_of(m)
    if raw is None:
        return None
    lv = raw_levels(raw[0], raw[1], False)
    return None if lv is None else (m, lv[0], lv[1])


def _binance_levels(m: _RawMsg):
    return (m.b, m.a) if m.e == "depthUpdate" else None


class _Snapshot(msgspec.Struct, gc=False):
    """REST depth snapshot: spot ``{"lastUpdateId", "bids", "asks"}``; USD-M adds ``E``
    (message time) and ``T`` (transaction time), ms."""
    lastUpdateId: int
    bids: list
    asks: list
    E: int = 0
    T: int = 0


_decode_snapshot = msgspec.json.Decoder(_Snapshot).decode


# ---------------------------------------------------------------------------------------
# L2 books kept from diffs and a REST snapshot (Binance spot, Binance USD-M, Gate)
# ---------------------------------------------------------------------------------------
ID_END = 1 << 63                  # update ids must fit the LEVEL record's i8
MAX_BUFFERED = 4096               # diffs kept per symbol while its snapshot is on its way
MAX_STALE = 3                     # stale snapshots in a row before the buffer starts over
IDLE, WAIT, LIVE = 0, 1, 2        # per symbol: nothing asked / snapshot asked, buffering / synced


class _Sym:
    """Sync state of one symbol's book (``DiffSync``)."""
    __slots__ = ("state", "last", "first", "buffered", "buf", "seen", "stale", "held")

    def __init__(self):
        self.state = IDLE
        self.seen = -1            # the newest ``u`` seen on this connection
        self.stale = 0            # snapshots found stale in a row
        self.held = None          # a snapshot waiting for a diff to be judged against
        self.last = 0             # LIVE: the book's update id
        self.first = False        # LIVE: the first diff after the snapshot is still to come
        self.buffered = False     # diffs were seen before the snapshot was applied
        self.buf: collections.deque = collections.deque(maxlen=MAX_BUFFERED)


class DiffSync:
    """The venue rules of a book kept from diffs (``U``..``u`` ids) and a REST snapshot, per
    symbol; the adapter decodes, this decides (docs/venues.md, "Binance", "L2 book").

    ``pu_chain`` False (Binance spot, Gate): diffs with ``u`` <= the snapshot's id are
    dropped, the first applied one must have ``U`` <= id + 1 <= ``u``, each next one ``U`` =
    previous ``u`` + 1. True (Binance USD-M): ``u`` < id dropped, ``U`` <= id <= ``u`` (or
    ``pu`` = id: the diff that ended at id came before we subscribed, this one follows it
    exactly), then ``pu`` = previous ``u``. Per symbol the state is IDLE (nothing asked),
    WAIT (the snapshot is asked for: diffs are buffered, checked to chain among themselves)
    or LIVE.

    * the first diff of a symbol on a connection is buffered and answered with
      ``Control("resync")`` (the runtime fetches the snapshot); a book the sink still had
      ready is given up first (RECONNECT: the connection was replaced);
    * ``snapshot``: buffered diffs the snapshot covers are dropped; if the first one left
      starts after it (or none is left and the snapshot is older than a diff seen on this
      connection), the snapshot is STALE_SNAPSHOT and fetched again (the buffer is kept,
      and starts over after ``MAX_STALE`` such in a row); if no diff was seen at all (a new
      connection, a buffer started over) it is held and judged at the next diff; else the
      book is set to it and the buffered diffs are applied;
    * buffering: a repeat of the last buffered diff is refused (``duplicate``); a diff that
      does not continue the buffer (a gap, one out of order) is GAP and starts it again;
    * LIVE: a diff that does not continue the chain (a gap, a duplicate, one from before the
      book) is GAP, one the sink refuses (garbage levels, a crossed book) BAD_DATA; the book
      is given up (``sink.book_broken``) and resynced; a newer diff starts the new buffer;
    * a LIVE book the sink says is not ready (a connection of the feed was lost) resyncs.

    ``applied`` counts the depth messages taken (buffered, applied, or dropped as older than
    the snapshot): such a frame emits nothing by itself."""

    def __init__(self, pu_chain: bool):
        self.pu_chain = pu_chain
        self.syms: dict[str, _Sym] = {}
        self.applied = 0

    def reset(self) -> None:
        """A new connection: every symbol starts again (its first diff asks for a snapshot)."""
        self.syms.clear()

    def holding(self, native: str) -> bool:
        """A snapshot of ``native`` is held until a diff tells whether it bridges."""
        s = self.syms.get(native)
        return s is not None and s.held is not None

    def _chains(self, last: int, U: int, pu) -> bool:
        return pu == last if self.pu_chain else U == last + 1

    def _resync(self, native: str, detail: str) -> Control:
        return Control("resync", symbol=native, detail=detail)

    def _broken(self, native, iid, s: _Sym, fault: BookFault, detail: str, sink,
                keep=None) -> Control:
        sink.book_broken(iid, fault)
        s.state = WAIT
        s.first = False
        s.buf.clear()
        s.buffered = keep is not None
        if keep is not None:
            s.buf.append(keep)
        return self._resync(native, f"{fault.name.lower()}: {detail}")

    def _stale(self, native, iid, s: _Sym, detail: str, sink) -> Control:
        """The snapshot cannot be bridged: STALE_SNAPSHOT, fetched again. After
        ``MAX_STALE`` in a row the buffer starts over (whatever made them stale, a diff
        with garbage ids included, is forgotten; starting over is always sound)."""
        sink.book_broken(iid, BookFault.STALE_SNAPSHOT)
        s.state = WAIT
        s.stale += 1
        if s.stale >= MAX_STALE:
            s.stale = 0
            s.buf.clear()
            s.buffered = False
            s.seen = -1
            detail += "; the buffer starts over"
        return self._resync(native, f"stale_snapshot: {detail}")

    def bad(self, native: str, iid: int, sink) -> Control | None:
        """A depth message of ``native`` the adapter refused (garbage): a LIVE book cannot
        be trusted any more (BAD_DATA, resync); a buffering one just misses it (the chain
        check of the next diff tells)."""
        s = self.syms.get(native)
        if s is not None and s.state == LIVE:
            return self._broken(native, iid, s, BookFault.BAD_DATA, "garbage diff", sink)
        return None

    def diff(self, native: str, iid: int, U: int, u: int, pu, bids, asks, ts_ns: int,
             sink) -> Control | None:
        """One diff (``U``..``u``, ``pu`` on USD-M) of ``native``; ids already checked to
        be 0 <= U <= u < 2**63."""
        s = self.syms.get(native)
        if s is None:
            s = self.syms[native] = _Sym()
        d = (U, u, pu, bids, asks, ts_ns)
        if u > s.seen:
            s.seen = u
        if s.state == LIVE:
            if not sink.is_ready(iid):
                s.state = WAIT                 # the runtime gave the book up (a lost socket)
                s.buf.clear()
                s.buf.append(d)
                s.buffered = True
                self.applied += 1
                return self._resync(native, "book not ready")
            return self._live(native, iid, s, d, sink)
        buf = s.buf
        if buf:
            last = buf[-1]
            if U == last[0] and u == last[1]:
                sink.reject("duplicate")
                return None
            if not self._chains(last[1], U, pu):
                sink.book_broken(iid, BookFault.GAP)   # counted; the buffer starts again here
                buf.clear()
        buf.append(d)
        s.buffered = True
        self.applied += 1
        if s.state == IDLE:
            s.state = WAIT
            if sink.is_ready(iid):             # a replaced connection: this book resyncs too
                sink.book_broken(iid, BookFault.RECONNECT)
            if s.held is None:
                return self._resync(native, "snapshot")
        if s.held is not None:                 # a snapshot came first: judge it now
            held, s.held = s.held, None
            return self.snapshot(native, iid, *held, sink)
        return None

    def _live(self, native, iid, s: _Sym, d, sink) -> Control | None:
        U, u, pu, bids, asks, ts_ns = d
        if s.first:                            # the first diff after the snapshot
            last = s.last
            if (u < last) if self.pu_chain else (u <= last):
                self.applied += 1              # the snapshot covers it already
                return None
            if (U > last and pu != last) if self.pu_chain else (U > last + 1):
                fault = BookFault.GAP if s.buffered else BookFault.STALE_SNAPSHOT
                return self._broken(native, iid, s, fault,
                                    f"first diff U={U} does not reach the snapshot's {last}",
                                    sink, keep=d)
        elif not self._chains(s.last, U, pu):
            if u <= s.last:
                why = "duplicate" if u == s.last else "out of order"
                return self._broken(native, iid, s, BookFault.GAP,
                                    f"{why} diff u={u} (book at {s.last})", sink)
            return self._broken(native, iid, s, BookFault.GAP,
                                f"diff U={U} pu={pu} after {s.last}", sink, keep=d)
        if sink.book(iid, bids, asks, False, ts_ns, u) is None:
            s.state = WAIT                     # refused (the sink counted BAD_DATA)
            s.first = False
            s.buf.clear()
            s.buffered = False
            return self._resync(native, "bad_data: diff refused")
        s.last = u
        s.first = False
        self.applied += 1
        return None

    def full(self, native: str, iid: int, u: int, bids, asks, ts_ns: int,
             sink) -> Control | None:
        """A whole book on the stream (Gate ``full: true``): it replaces the book; the next
        diff must start at ``u`` + 1."""
        s = self.syms.get(native)
        if s is None:
            s = self.syms[native] = _Sym()
        s.held = None
        if u > s.seen:
            s.seen = u
        if sink.book(iid, bids, asks, True, ts_ns, u) is None:
            was = s.state
            s.state = WAIT
            s.buf.clear()
            s.buffered = False
            return self._resync(native, "bad_data: full book refused") if was != WAIT else None
        s.state, s.last, s.first, s.buffered = LIVE, u, False, False
        s.buf.clear()
        self.applied += 1
        return None

    def snapshot(self, native: str, iid: int, last_id: int, bids, asks, ts_ns: int,
                 sink) -> Control | None:
        """The REST snapshot of ``native`` (id ``last_id``) arrived."""
        s = self.syms.get(native)
        if s is None:
            s = self.syms[native] = _Sym()
        if s.state == LIVE and sink.is_ready(iid):
            return None                        # in sync already (a full book came first)
        buf = s.buf
        covered = (lambda d: d[1] < last_id) if self.pu_chain else (lambda d: d[1] <= last_id)
        while buf and covered(buf[0]):
            buf.popleft()
        if buf:
            U, pu = buf[0][0], buf[0][2]
            if (U > last_id and pu != last_id) if self.pu_chain else (U > last_id + 1):
                return self._stale(native, iid, s, f"lastUpdateId {last_id}, first buffered "
                                                   f"U={U}", sink)
        elif last_id < s.seen:            # older than diffs seen and no longer buffered
            return self._stale(native, iid, s, f"lastUpdateId {last_id} < u={s.seen} seen",
                               sink)
        elif s.seen < 0:                  # nothing to judge it by yet: the next diff will
            s.held = (last_id, bids, asks, ts_ns)
            s.state = WAIT
            return None
        if sink.book(iid, bids, asks, True, ts_ns, last_id) is None:
            s.state = WAIT                     # garbage levels (the sink counted BAD_DATA)
            return self._resync(native, "bad_data: snapshot refused")
        s.state, s.last, s.first, s.stale = LIVE, last_id, True, 0
        s.buffered = s.seen >= 0          # diffs came before it: a first diff that misses it
        pending = list(buf)               # says diffs were lost (GAP), else it is stale
        buf.clear()
        for k, d in enumerate(pending):
            ctl = self._live(native, iid, s, d, sink)
            if ctl is not None:
                for rest in pending[k + 1:]:
                    if s.buf and rest[1] <= s.buf[-1][1]:
                        continue
                    s.buf.append(rest)
                return ctl
        return None


class _BinanceBase(VenueAdapter):
    """Shared parsing; subclasses set ``name``, ``default_url``, ``market`` and sockets."""

    _quote_flags: int = 0
    _pu_chain: bool = False          # depth diffs chained by ``pu`` (USD-M) or ``U`` (spot)
    _rest_depth_path: str = ""       # REST depth snapshot path (limit=1000)
    supports_depth = True
    funding_interval_s: int = 8 * 3600
    """markPrice carries no interval; 8 h is the USD-M default. The runtime may set this
    per venue from config (symbols on 4 h / 1 h funding need their own venue entry)."""

    def __init__(self, instruments: list[Instrument], venue_id: int = 0):
        super().__init__(instruments, venue_id)
        # payload ``s`` is uppercase; stream names are lowercase
        self._ids = {i.native.upper(): i.instrument_id for i in instruments}
        self._natives = {i.native.upper(): i.native for i in instruments}
        self._last_u: dict[str, int] = {}    # bookTicker updateId per symbol
        self._last_E: dict[str, int] = {}    # markPrice event time per symbol
        self.books = DiffSync(pu_chain=self._pu_chain)   # L2 books (depth > 0)
        self._fast: QuoteTable | None = None  # bookTicker fast path (``quote_fastpath``)

    def quote_fastpath(self) -> QuoteTable | None:
        """The table of ``arbpipe.feeds.fastpath.book_ticker`` (bookTicker frames parsed and
        pushed in one numba call; ``Feed`` falls back to ``parse`` for what it does not
        take); None with L2 books (no bookTicker then)."""
        if self.depth > 0:
            return None
        if self._fast is None:
            self._fast = QuoteTable(self._ids, self.venue_id, self._quote_flags)
        return self._fast

    @property
    def applied(self) -> int:
        """Depth messages taken without output of their own (buffered, dropped as covered
        by the snapshot) or applied (``DiffSync.applied``)."""
        return self.books.applied

    @staticmethod
    def native_to_canonical(native: str) -> str | None:
        return split_concatenated(native)

    def _subscribe_frames(self, suffix: str, first_id: int) -> list[str]:
        streams = [f"{i.native.lower()}@{suffix}" for i in self.instruments]
        return [json.dumps({"method": "SUBSCRIBE", "params": streams[k:k + SUBSCRIBE_CHUNK],
                            "id": first_id + n})
                for n, k in enumerate(range(0, len(streams), SUBSCRIBE_CHUNK))]

    def _book_stream(self) -> str:
        """The stream of the quote socket: the depth diffs with depth > 0, else bookTicker."""
        return "depth@100ms" if self.depth > 0 else "bookTicker"

    def on_connect(self, socket_index: int) -> None:
        self._last_u.clear()
        if self._fast is not None:
            self._fast.reset()
        self._last_E.clear()
        self.books.reset()

    # -- L2 books --------------------------------------------------------------
    def rest_snapshot_path(self, native: str) -> str | None:
        return f"{self._rest_depth_path}?symbol={native.upper()}&limit=1000"

    def _rest_snapshot(self, native: str, inst, body: bytes, sink) -> Control | None:
        iid = inst.instrument_id
        snap = decode_frame(_decode_snapshot, body, sink)
        if snap is not None and not 0 <= snap.lastUpdateId < ID_END:
            sink.reject("bad_shape")
            snap = None
        if snap is not None and not (0 <= snap.T <= MAX_MS and 0 <= snap.E <= MAX_MS):
            sink.reject("bad_ts")
            snap = None
        if snap is None:                       # unusable body: counted, fetched again
            sink.book_broken(iid, BookFault.SNAPSHOT_FAILED)
            return Control("resync", symbol=native, detail="snapshot_failed: bad body")
        ts = snap.T or snap.E                  # spot snapshots carry no time: 0
        return self.books.snapshot(native, iid, snap.lastUpdateId, snap.bids, snap.asks,
                                   ts * MS, sink)

    def _depth(self, m: _Msg, sink, b, a) -> Control | None:
        """``b`` / ``a``: the levels, as ``_Msg`` decodes them or parsed (``fast_depth``)."""
        if self.depth <= 0:
            sink.reject("bad_shape")           # as before books: not a frame of ours
            return None
        U, u = m.U, m.u
        if U is None or u is None or not m.s or (self._pu_chain and m.pu is None) or \
                (b is not None and type(b) is not list and type(b) is not np.ndarray) or \
                (a is not None and type(a) is not list and type(a) is not np.ndarray):
            sink.reject("bad_shape")
            iid = self._ids.get(m.s)
            return self.books.bad(self._natives[m.s], iid, sink) if iid is not None else None
        iid = self._ids.get(m.s)
        if iid is None:
            sink.reject("unknown_symbol")
            return None
        native = self._natives[m.s]
        if not 0 <= U <= u < ID_END:
            sink.reject("bad_shape")
            return self.books.bad(native, iid, sink)
        ts = m.T or m.E
        if not 0 <= ts <= MAX_MS:
            sink.reject("bad_ts")
            return self.books.bad(native, iid, sink)
        return self.books.diff(native, iid, U, u, m.pu, b, a, ts * MS, sink)

    # -- parse -----------------------------------------------------------------
    def parse(self, frame, recv_ns: int, sink, socket_index: int = 0) -> Control | None:
        return self._parse(frame, sink, True)

    def _parse(self, frame, sink, outer: bool) -> Control | None:
        fast = fast_depth(frame, _decode_raw, _binance_levels) if self.depth > 0 else None
        m = fast[0] if fast is not None else decode_frame(_decode, frame, sink)
        if m is None:
            return None
        try:
            if fast is not None:
                return self._depth(m, sink, fast[1], fast[2])
            if m.e == "depthUpdate":
                return self._depth(m, sink, m.b, m.a)
            if m.u is not None:
                self._quote(m, sink)
                return None
            if outer and m.stream is not None and len(m.data):
                return self._parse(m.data, sink, False)   # combined-stream wrapper
            return self._other(m, sink)
        except (ValueError, TypeError, OverflowError, RecursionError):  # float("x"), odd Any
            sink.reject("bad_shape")
            return None

    def _quote(self, m: _Msg, sink) -> None:
        b, bq, a, aq = m.b, m.B, m.a, m.A
        if type(b) is not str or bq is None or type(a) is not str or aq is None or not m.s:
            sink.reject("bad_shape")
            return
        if self.depth > 0:                     # books: quotes come from the book's top
            sink.reject("unsupported")
            return
        iid = self._ids.get(m.s)
        if iid is None:
            sink.reject("unknown_symbol")
            return
        bid, ask, bid_qty, ask_qty = float(b), float(a), float(bq), float(aq)
        why = book_reject(bid, ask, bid_qty, ask_qty)
        if why is not None:
            sink.reject(why)
            return
        ts = m.T or m.E                    # USD-M: transaction time, else event time
        if not 0 <= ts <= MAX_MS:
            sink.reject("bad_ts")
            return
        u = m.u
        fast = self._fast                  # the fast path keeps the last u in its table
        last = self._last_u.get(m.s, NO_SEQ) if fast is None else fast.last_u(m.s, self._last_u)
        if u <= last:
            sink.reject(stale_reason(u, last))
            return
        self._last_u[m.s] = u
        if fast is not None:
            fast.accepted(m.s, u)
        flags = self._quote_flags if ts else self._quote_flags | _NO_TS
        sink.quote(iid, bid, ask, bid_qty, ask_qty, ts * MS, flags)

    def _funding(self, m: _Msg, sink) -> None:
        if m.r is None or m.p is None or not m.s or m.E <= 0:
            sink.reject("bad_shape")
            return
        iid = self._ids.get(m.s)
        if iid is None:
            sink.reject("unknown_symbol")
            return
        if m.r == "" or m.T == 0:          # delivery contract: no funding
            sink.reject("no_funding")
            return
        rate, mark = float(m.r), float(m.p)
        if not funding_ok(rate, mark, mark_required=True):
            sink.reject("bad_price")
            return
        if not (0 < m.T <= MAX_MS and m.E <= MAX_MS):
            sink.reject("bad_ts")
            return
        last = self._last_E.get(m.s, NO_SEQ)
        if m.E <= last:
            sink.reject(stale_reason(m.E, last))
            return
        self._last_E[m.s] = m.E
        sink.funding(iid, rate, m.T * MS, self.funding_interval_s, mark, m.E * MS)

    def _other(self, m: _Msg, sink) -> Control | None:
        if m.e == "markPriceUpdate":
            self._funding(m, sink)
            return None
        if m.error is not msgspec.UNSET:
            err = m.error
            if isinstance(err, dict):
                detail = f"code {err.get('code')}: {err.get('msg')}"
            else:
                detail = str(err)
            if m.id is not msgspec.UNSET:
                detail += f" (id={m.id})"
            return Control(kind="error", detail=detail)
        if m.code is not None and m.msg is not None:   # error object without the wrapper
            return Control(kind="error", detail=f"code {m.code}: {m.msg}")
        if m.id is not msgspec.UNSET and m.result is not msgspec.UNSET:
            if m.result is None:
                return Control(kind="ack", detail=f"id={m.id}")
            return Control(kind="other", detail=f"id={m.id} result={m.result!r}"[:200])
        if m.e == "serverShutdown":
            return Control(kind="notice", detail=f"serverShutdown E={m.E}", reconnect=True)
        sink.reject("bad_shape")
        return None


class BinanceSpot(_BinanceBase):
    """Binance spot BBO: ``<symbol>@bookTicker``; no exchange timestamp. With depth > 0:
    ``<symbol>@depth@100ms`` and the ``/api/v3/depth`` snapshot."""
    name = "binance"
    default_url = "wss://stream.binance.com:9443"
    default_rest_url = "https://api.binance.com"
    market = "spot"
    _quote_flags = 0          # NO_EXCHANGE_TS is added because bookTicker has no T/E
    _rest_depth_path = "/api/v3/depth"

    def sockets(self) -> list[SocketSpec]:
        return [SocketSpec(path="/ws", subscribe=self._subscribe_frames(self._book_stream(), 1))]


class BinanceUsdm(_BinanceBase):
    """Binance USD-M perpetuals: BBO on socket 0 (/public), funding on socket 1 (/market).
    With depth > 0 socket 0 carries ``<symbol>@depth@100ms`` (chained by ``pu``) and books
    start from the ``/fapi/v1/depth`` snapshot."""
    name = "binance-usdm"
    default_url = "wss://fstream.binance.com"
    default_rest_url = "https://fapi.binance.com"
    market = "perp"
    _pu_chain = True
    _rest_depth_path = "/fapi/v1/depth"

    def sockets(self) -> list[SocketSpec]:
        public = self._subscribe_frames(self._book_stream(), 1)
        market = self._subscribe_frames("markPrice@1s", len(public) + 1)
        return [SocketSpec(path="/public/ws", subscribe=public),
                SocketSpec(path="/market/ws", subscribe=market)]

    def on_connect(self, socket_index: int) -> None:
        if socket_index == 0:
            self._last_u.clear()
            if self._fast is not None:
                self._fast.reset()
            self.books.reset()
        else:
            self._last_E.clear()
