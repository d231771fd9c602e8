"""OKX v5 public: ``bbo-tbt`` (spot and SWAP) and ``funding-rate`` (SWAP).

Wire (docs/venues.md, "OKX"): one socket ``/ws/v5/public``; every
``bbo-tbt`` push is a full level-1 snapshot ``[price, size, "0", orders]`` with
``ts`` (string, ms, matching-engine time) and ``seqId`` (int, per instId).
Units produced: prices in quote currency; quantities in base units (SWAP sizes
are contracts, multiplied by ``Instrument.contract_size`` = ctVal); timestamps ns.

Keep-alive: the client sends the bare text ``ping`` before 30 s of silence, the
server answers the bare text ``pong``. A ``64008`` notice announces a planned
disconnect (``Control(kind="notice", reconnect=True)``).

L2 books (``depth`` N > 0; docs/venues.md, "OKX", "L2 book"): ``books`` (400 levels)
instead of ``bbo-tbt``, at most ``BOOKS_PER_SOCKET`` instruments per socket (OKX asks for
fewer than 30 depth channels per connection). Per instId and connection: ``action``
``snapshot`` (``prevSeqId`` -1) replaces the book; an ``update`` applies when its
``prevSeqId`` is the last applied ``seqId`` (``seqId == prevSeqId``: nothing changed, the
idle keep-alive; ``seqId < prevSeqId``: the sequence restarted after maintenance, still
chained); a repeat of the last message (same ``seqId`` and ``prevSeqId``) is ``duplicate``
and dropped; any other ``prevSeqId`` is a GAP and an update before the snapshot an
EARLY_DIFF. A non-zero ``checksum`` (signed CRC32 of the top 25 levels, bid and ask
``price:size`` strings interleaved, as sent) is verified on every message before it is
published; OKX deprecated the field and sends 0, which means "not given".

Snapshots (docs/venues.md, "OKX", "No websocket snapshot"): OKX's changelog drops the
websocket snapshot of ``books``; the snapshot comes from REST ``GET /api/v5/market/books``
(``rest_snapshot_path``, ``sz`` 400) and is bridged to the updates by their ids. An update of
a book without a snapshot is held (``HOLD_MAX``); the first counts EARLY_DIFF and makes the
runtime fetch the REST snapshot, the later ones count ``no_snapshot``. The REST body
(``_rest_snapshot``) drops the held updates with ``seqId`` <= its ``seqId``; the first left
must have ``prevSeqId`` <= snapshot ``seqId`` (else STALE_SNAPSHOT, fetched again); the
snapshot replaces the book and the held updates follow. Until the next update is applied
the book is "bridged" (``_Sync.bridge``): an update the snapshot covers is dropped, one with
``prevSeqId`` <= its ``seqId`` applies. A websocket ``snapshot`` is still taken whenever it
comes (it drops what was held; a REST body after it is ignored). Every broken rule (GAP,
CHECKSUM, BAD_DATA, ...) marks the book not ready and returns ``Control("resync")``: the
runtime fetches the REST snapshot and updates meanwhile are held. A REST body without
``seqId`` turns REST off (``rest_seq_ids``): resync is then ``resubscribe(native)``
(unsubscribe + subscribe), as before the change. Sizes of SWAP levels are contracts,
multiplied by ``contract_size``; the checksum uses the strings as sent.
"""
from __future__ import annotations

import bisect
import collections
import heapq
import re
import zlib

import msgspec
import numpy as np

from arbpipe.books.full import split_levels
from arbpipe.feeds.venues.base import Control, SocketSpec, VenueAdapter, decode_frame
from arbpipe.feeds.venues.checks import (MAX_MS, MS, NO_SEQ, U4_END, book_reject, funding_ok,
                                         stale_reason)
from arbpipe.symbols import Instrument
from shm_layouts.records import BookFault

_ARGS_PER_MESSAGE = 50              # keeps each subscribe frame far below the 64 KB cap
_DEFAULT_FUNDING_INTERVAL_S = 28800  # OKX default (8 h) when nextFundingTime is missing
BOOK_CHANNEL = "books"              # 400 levels: snapshot, then incremental updates
BOOK_LEVELS = 400
BOOKS_PER_SOCKET = 29               # OKX: fewer than 30 depth channels per connection
CHECKSUM_LEVELS = 25
RESYNC_RETRY = 1000                 # dropped updates of a book awaiting its snapshot
HOLD_MAX = 2000                     # updates held per book for the bridge to a REST snapshot
REST_BOOKS_PATH = "/api/v5/market/books"
_ID_END = 1 << 63                   # seqIds go into the records' u8 word


class _Arg(msgspec.Struct):
    channel: str = ""
    instId: str = ""


class _Data(msgspec.Struct):
    """Union of the ``data[]`` items of ``bbo-tbt``, ``books`` and ``funding-rate``."""
    asks: list[list[str]] | None = None
    bids: list[list[str]] | None = None
    ts: str = ""
    seqId: int | None = None
    prevSeqId: int | None = None
    checksum: int | None = None
    fundingRate: str = ""
    fundingTime: str = ""
    nextFundingTime: str = ""


class _Msg(msgspec.Struct):
    """Data push (``arg`` + ``data``) or event (``event``, ``code``, ``msg``)."""
    arg: _Arg | None = None
    action: str = ""
    data: list[_Data] | None = None
    event: str = ""
    code: str = ""
    msg: str = ""


_decode = msgspec.json.Decoder(_Msg).decode
_INST_IN_TEXT = re.compile(r"instId\W*([A-Za-z0-9]+(?:-[A-Za-z0-9]+)+)")


def checksum(bids, asks) -> int:
    """OKX's book checksum: CRC32 of the top 25 levels as ``price:size`` strings (as sent),
    bid 1, ask 1, bid 2, ask 2, ... (a shorter side just ends), joined by ``:``, as a signed
    32-bit integer. ``bids`` / ``asks``: (price, size) string pairs, best first."""
    parts = []
    nb, na = min(len(bids), CHECKSUM_LEVELS), min(len(asks), CHECKSUM_LEVELS)
    for i in range(max(nb, na)):
        if i < nb:
            parts.append(bids[i][0])
            parts.append(bids[i][1])
        if i < na:
            parts.append(asks[i][0])
            parts.append(asks[i][1])
    c = zlib.crc32(":".join(parts).encode())
    return c - (1 << 32) if c >= 1 << 31 else c


class _RestBook(msgspec.Struct):
    """``data[]`` item of ``GET /api/v5/market/books``: levels, ``ts`` and ``seqId``."""
    asks: list[list[str]] | None = None
    bids: list[list[str]] | None = None
    ts: str = ""
    seqId: int | str | None = None


class _RestBody(msgspec.Struct):
    code: str = ""
    msg: str = ""
    data: list[_RestBook] | None = None


_decode_rest = msgspec.json.Decoder(_RestBody).decode


def _rest_seq(v) -> int | None:
    """The REST ``seqId`` (a number, or a decimal string) as an int; None when unusable."""
    if type(v) is str:
        v = int(v) if v.isdigit() and v.isascii() and len(v) <= 19 else None
    return v if type(v) is int and 0 <= v < _ID_END else None


def _hold(st: "_Sync", seq: int, prev: int, d: "_Data", ts: int) -> None:
    """Keep an update of a book that is not synced, for the bridge to a REST snapshot: only
    a newer one (a repeat or an older one cannot be bridged); a sequence restart
    (``seqId < prevSeqId``) starts the buffer again."""
    buf = st.buf
    if seq < prev:
        buf.clear()
    elif buf and seq <= buf[-1][0]:
        return
    buf.append((seq, prev, d, ts))


class _Sync:
    """Book sync state of one instId on its connection: ``seq`` / ``prev`` of the last
    applied message, ``synced`` (updates apply), ``pending`` (resync asked for), ``bids`` /
    ``asks``: price -> ``"price:size"`` as sent (for the checksum), ``bp`` / ``ap`` their
    prices ascending (the top 25 is a slice, not a scan of the book)."""
    __slots__ = ("seq", "prev", "synced", "pending", "ignored", "bad", "bids", "asks", "bp",
                 "ap", "buf", "bridge", "fresh", "seen")

    def __init__(self):
        self.seq = self.prev = None
        self.synced = self.pending = False
        self.bridge = False     # the book is a REST snapshot (``seq`` its seqId): the next
                                # update chains when prevSeqId <= seq < seqId
        self.fresh = False      # ... and that snapshot is as new as every update seen
        self.seen = -1          # highest update seqId seen
        self.buf: collections.deque = collections.deque(maxlen=HOLD_MAX)  # (seq, prev, d, ts)
        self.ignored = self.bad = 0
        self.bids: dict[float, str] = {}
        self.asks: dict[float, str] = {}
        self.bp: list[float] = []
        self.ap: list[float] = []


def _joined_checksum(bids: list[str], asks: list[str]) -> int:
    """``checksum`` of ``"price:size"`` strings (best first, at most 25 a side)."""
    n = min(len(bids), len(asks))
    parts = [""] * (2 * n)
    parts[0::2] = bids[:n]                 # bid 1, ask 1, bid 2, ... in C, not per level
    parts[1::2] = asks[:n]
    parts += bids[n:] or asks[n:]
    c = zlib.crc32(":".join(parts).encode())
    return c - (1 << 32) if c >= 1 << 31 else c


def _ms_to_ns(text: str) -> int:
    """Decimal string of ms since the epoch -> ns (fits i8); -1 when it is not one."""
    if text.isdigit() and text.isascii() and len(text) <= 13:
        ms = int(text)
        if ms <= MAX_MS:
            return ms * MS
    return -1


class OkxAdapter(VenueAdapter):
    """OKX spot + SWAP BBO (``bbo-tbt``) and SWAP funding (``funding-rate``)."""

    name = "okx"
    default_url = "wss://ws.okx.com:8443"
    market = "spot"      # also serves SWAP instruments (native ends in "-SWAP")
    path = "/ws/v5/public"
    supports_depth = True
    default_rest_url = "https://www.okx.com"

    def __init__(self, instruments: list[Instrument], venue_id: int = 0):
        super().__init__(instruments, venue_id)
        self._last_seq: dict[str, int] = {}
        self._sync: dict[str, _Sync] = {}       # depth mode: per instId
        self.applied = 0        # book messages applied (an unchanged one makes no record)
        self.rest_seq_ids = True    # REST snapshots carry seqId (False: resubscribe instead)

    def groups(self) -> list[list[Instrument]]:
        """Instruments per socket: all on one in BBO mode; in depth mode at most
        ``BOOKS_PER_SOCKET`` each, as evenly as that allows."""
        insts = self.instruments
        if self.depth <= 0 or len(insts) <= BOOKS_PER_SOCKET:
            return [insts]
        k = -(-len(insts) // BOOKS_PER_SOCKET)
        per = -(-len(insts) // k)
        return [insts[j:j + per] for j in range(0, len(insts), per)]

    def sockets(self) -> list[SocketSpec]:
        book = BOOK_CHANNEL if self.depth > 0 else "bbo-tbt"
        specs = []
        for group in self.groups():
            args = [{"channel": book, "instId": i.native} for i in group]
            args += [{"channel": "funding-rate", "instId": i.native}
                     for i in group if i.native.endswith("-SWAP")]
            frames = [msgspec.json.encode({"op": "subscribe",
                                           "args": args[k:k + _ARGS_PER_MESSAGE]}).decode()
                      for k in range(0, len(args), _ARGS_PER_MESSAGE)]
            specs.append(SocketSpec(self.path, frames, ping_text="ping", ping_interval_s=20.0))
        return specs

    def resubscribe(self, native: str) -> list[str]:
        """Unsubscribe + subscribe of ``native``'s ``books`` (used only when REST is off:
        ``rest_seq_ids``): an OKX that still pushes snapshots answers with one."""
        arg = [{"channel": BOOK_CHANNEL, "instId": native}]
        return [msgspec.json.encode({"op": op, "args": arg}).decode()
                for op in ("unsubscribe", "subscribe")]

    def on_connect(self, socket_index: int) -> None:
        self._last_seq.clear()
        if self._sync:
            groups = self.groups()
            if socket_index < len(groups):
                for i in groups[socket_index]:
                    self._sync.pop(i.native, None)

    def _parse(self, frame, sink) -> Control | None:
        if frame == "pong" or frame == b"pong":
            return Control("pong")
        m = decode_frame(_decode, frame, sink)
        if m is None:
            return None
        arg = m.arg
        if m.data is not None and arg is not None:
            if arg.channel == BOOK_CHANNEL and self.depth > 0:
                return self._books(arg.instId, m.action, m.data, sink)
            if arg.channel == "bbo-tbt" and self.depth <= 0:
                return self._bbo(arg.instId, m.data, sink)
            if arg.channel == "funding-rate":
                return self._funding(arg.instId, m.data, sink)
            sink.reject("unknown_channel")
            return None
        if m.event:
            return self._event(m)
        sink.reject("bad_shape")
        return None

    def _bbo(self, inst_id: str, data: list[_Data], sink) -> None:
        inst = self.by_native.get(inst_id)
        if inst is None:
            sink.reject("unknown_symbol", len(data) or 1)
            return None
        if not data:
            sink.reject("bad_shape")
            return None
        last_seq = self._last_seq
        for d in data:
            asks, bids, seq = d.asks, d.bids, d.seqId
            if not asks or not bids or seq is None or len(asks[0]) < 2 or len(bids[0]) < 2:
                sink.reject("bad_shape")
                continue
            prev = last_seq.get(inst_id, NO_SEQ)
            if seq <= prev:
                sink.reject(stale_reason(seq, prev))
                continue
            ts = _ms_to_ns(d.ts)
            try:
                bid = float(bids[0][0])
                bq = float(bids[0][1])
                ask = float(asks[0][0])
                aq = float(asks[0][1])
            except ValueError:
                sink.reject("bad_shape")
                continue
            if ts < 0:
                sink.reject("bad_shape")
                continue
            why = book_reject(bid, ask, bq, aq)
            if why is not None:
                sink.reject(why)
                continue
            last_seq[inst_id] = seq
            cs = inst.contract_size
            sink.quote(inst.instrument_id, bid, ask, bq * cs, aq * cs, ts)
        return None

    # -- L2 book (depth > 0) ---------------------------------------------------------
    def _books(self, inst_id: str, action: str, data: list[_Data], sink) -> Control | None:
        inst = self.by_native.get(inst_id)
        if inst is None:
            sink.reject("unknown_symbol", len(data) or 1)
            return None
        if not data or action not in ("snapshot", "update"):
            sink.reject("bad_shape")
            return None
        ctl = None
        for d in data:              # OKX sends one item per push; more are taken in order
            c = self._book_item(inst, action == "snapshot", d, sink)
            ctl = ctl or c
        return ctl

    def _book_item(self, inst: Instrument, snapshot: bool, d: _Data, sink) -> Control | None:
        seq, prev = d.seqId, d.prevSeqId
        ts = _ms_to_ns(d.ts)
        if (seq is None or prev is None or d.asks is None or d.bids is None or ts < 0
                or not (0 <= seq < _ID_END and -1 <= prev < _ID_END)):
            sink.reject("bad_shape")
            return None
        native = inst.native
        st = self._sync.get(native)
        if st is None:
            st = self._sync[native] = _Sync()
        if snapshot:
            if st.synced and seq == st.seq and prev == st.prev:
                sink.reject("duplicate")
                return None
            ctl = self._apply(st, inst, d, True, ts, sink)
            if st.synced:           # in stream order: what was held is older than it
                st.buf.clear()
            return ctl
        if seq > st.seen:
            st.seen = seq
        if not st.synced:
            _hold(st, seq, prev, d, ts)     # for the bridge to a REST snapshot
            if st.pending:          # resync asked for: wait for a snapshot (REST or ws)
                sink.reject("no_snapshot")
                st.ignored += 1
                if st.ignored % RESYNC_RETRY == 0:
                    return Control("resync", symbol=native, detail="retry")
                return None
            return self._broken(st, inst, BookFault.EARLY_DIFF, sink)
        return self._update(st, inst, d, seq, prev, ts, sink)

    def _update(self, st: _Sync, inst: Instrument, d: _Data, seq: int, prev: int, ts: int,
                sink) -> Control | None:
        """An update of a synced book: chained to the last message, or (``st.bridge``)
        bridged to the REST snapshot it follows."""
        if st.bridge:               # the book is a REST snapshot at seqId st.seq
            if prev <= seq <= st.seq:   # the snapshot covers it already
                self.applied += 1
                return None
            if prev <= st.seq < seq:    # prevSeqId <= snapshot seqId < seqId: the first after it
                return self._apply(st, inst, d, False, ts, sink)
            # an update went missing after a snapshot as new as all we had seen (GAP), or
            # the snapshot is older than an update seen but not held (STALE_SNAPSHOT); a
            # sequence restart (seqId < prevSeqId) cannot be placed against it either
            fault = BookFault.GAP if st.fresh else BookFault.STALE_SNAPSHOT
            ctl = self._broken(st, inst, fault, sink)
            _hold(st, seq, prev, d, ts)
            return ctl
        if prev == st.seq:          # chained (seqId == prevSeqId: unchanged; smaller: reset)
            return self._apply(st, inst, d, False, ts, sink)
        if seq == st.seq and prev == st.prev:
            sink.reject("duplicate")
            return None
        ctl = self._broken(st, inst, BookFault.GAP, sink)
        _hold(st, seq, prev, d, ts)         # newer than the book: the bridge may start at it
        return ctl

    # -- REST snapshot (GET /api/v5/market/books) ----------------------------------------
    def rest_snapshot_path(self, native: str) -> str | None:
        """``GET /api/v5/market/books?instId=..&sz=400`` (spot and SWAP), unless a REST
        body came without ``seqId`` (then books resync by resubscribing, as before)."""
        if self.depth <= 0 or not self.rest_seq_ids:
            return None
        return f"{REST_BOOKS_PATH}?instId={native}&sz={BOOK_LEVELS}"

    def _rest_snapshot(self, native: str, inst: Instrument, body: bytes,
                       sink) -> Control | None:
        iid = inst.instrument_id
        st = self._sync.get(native)
        if st is None:
            st = self._sync[native] = _Sync()
        if st.synced:
            return None                     # a websocket snapshot (or a bridge) came first
        r = decode_frame(_decode_rest, body, sink)      # counts not_json / bad_shape
        d = r.data[0] if r is not None and r.code == "0" and r.data else None
        seq = _rest_seq(d.seqId) if d is not None else None
        ts = _ms_to_ns(d.ts) if d is not None else -1
        if r is not None and (d is None or d.asks is None or d.bids is None or ts < 0
                              or (d.seqId is not None and seq is None)):
            sink.reject("bad_shape")        # an error answer (code != "0"), or unusable
            d = None
        if d is None:                       # counted; the runtime fetches it again
            sink.book_broken(iid, BookFault.SNAPSHOT_FAILED)
            return Control("resync", symbol=native, detail="snapshot_failed: bad body")
        if seq is None:
            # no seqId: the snapshot cannot be placed in the update chain. Fall back to
            # websocket snapshots: the next update asks for a resubscribe.
            self.rest_seq_ids = False
            sink.book_broken(iid, BookFault.SNAPSHOT_FAILED)
            st.pending = True
            st.ignored = RESYNC_RETRY - 1
            return None
        buf = st.buf
        while buf and buf[0][0] <= seq:     # covered by the snapshot
            buf.popleft()
        if buf and buf[0][1] > seq:         # the first update after it does not reach it
            sink.book_broken(iid, BookFault.STALE_SNAPSHOT)
            return Control("resync", symbol=native, detail="STALE_SNAPSHOT")
        snap = _Data(asks=d.asks, bids=d.bids, ts=d.ts, seqId=seq, prevSeqId=-1)
        ctl = self._apply(st, inst, snap, True, ts, sink)
        if not st.synced:
            return ctl
        st.bridge, st.fresh = True, 0 <= st.seen <= seq
        held = list(buf)
        buf.clear()
        for k, (s, p, item, t) in enumerate(held):
            ctl = self._update(st, inst, item, s, p, t, sink)
            if not st.synced:               # broke again: keep what followed for the next one
                for h in held[k + 1:]:
                    _hold(st, *h)
                return ctl
        return None

    def _apply(self, st: _Sync, inst: Instrument, d: _Data, snapshot: bool, ts: int,
               sink) -> Control | None:
        cs = inst.contract_size
        if snapshot:
            bm, am, bp, ap = {}, {}, None, None     # sorted once below
        else:
            bm, am, bp, ap = st.bids, st.asks, st.bp, st.ap
        flat = []                  # price, size, ... of the bids then the asks: one array
        nb = 0
        odd = False                # a NaN price: sorted lists cannot hold it
        try:
            for m, keys, rows in ((bm, bp, d.bids), (am, ap, d.asks)):
                for r in rows:
                    px, sz = r[0], r[1]
                    p, q = float(px), float(sz) * cs
                    flat.append(p)
                    flat.append(q)
                    if p != p:
                        odd = True
                    if q == 0.0:
                        if m.pop(p, None) is not None and keys is not None and not odd:
                            del keys[bisect.bisect_left(keys, p)]
                    else:
                        if keys is not None and not odd and p not in m:
                            bisect.insort(keys, p)
                        m[p] = px + ":" + sz
                if m is bm:
                    nb = len(flat) >> 1
        except (ValueError, IndexError):    # a level that is not [price, size, ...] numbers
            sink.reject("bad_shape")
            return self._broken(st, inst, BookFault.BAD_DATA, sink, snapshot)
        if snapshot and not odd:
            bp, ap = sorted(bm), sorted(am)
        ck = d.checksum
        if ck:                              # 0 / absent: not given (deprecated by OKX)
            if odd:                         # as the scan of every level did
                bk = heapq.nlargest(CHECKSUM_LEVELS, bm)
                ak = heapq.nsmallest(CHECKSUM_LEVELS, am)
            else:
                bk = bp[:-CHECKSUM_LEVELS - 1:-1]
                ak = ap[:CHECKSUM_LEVELS]
            if _joined_checksum(list(map(bm.__getitem__, bk)),
                                list(map(am.__getitem__, ak))) != ck:
                return self._broken(st, inst, BookFault.CHECKSUM, sink, snapshot)
        bids, asks = split_levels(np.array(flat, np.float64).reshape(-1, 2), nb)
        fb = sink.book(inst.instrument_id, bids, asks, snapshot, ts, d.seqId)
        if fb is None:          # refused: the sink counted why (BAD_DATA, no_snapshot)
            return self._lost(st, inst.native, snapshot, "refused")
        st.seq, st.prev = d.seqId, d.prevSeqId
        st.bids, st.asks = bm, am
        if snapshot:
            st.bp, st.ap = bp, ap
        st.synced = True
        st.pending = st.bridge = False
        st.bad = 0
        self.applied += 1
        return None

    def _broken(self, st: _Sync, inst: Instrument, fault: BookFault, sink,
                snapshot: bool = False) -> Control | None:
        sink.book_broken(inst.instrument_id, fault)
        return self._lost(st, inst.native, snapshot, fault.name)

    @staticmethod
    def _lost(st: _Sync, native: str, snapshot: bool, detail: str) -> Control | None:
        """The book is not ready: resync, except after a second unusable snapshot in a row
        (then ``RESYNC_RETRY`` dropped updates later: resubscribing at once would only
        fetch the same snapshot again)."""
        st.synced = False
        st.pending = True
        st.ignored = 0
        if snapshot:
            st.bad += 1
            if st.bad > 1:
                return None
        return Control("resync", symbol=native, detail=detail)

    def _funding(self, inst_id: str, data: list[_Data], sink) -> None:
        inst = self.by_native.get(inst_id)
        if inst is None:
            sink.reject("unknown_symbol", len(data) or 1)
            return None
        if not data:
            sink.reject("bad_shape")
            return None
        for d in data:
            ts = _ms_to_ns(d.ts)
            t_next = _ms_to_ns(d.fundingTime)
            try:
                rate = float(d.fundingRate)
            except ValueError:
                rate = None
            if rate is None or ts < 0 or t_next < 0:
                sink.reject("bad_shape")
                continue
            if t_next == 0:                # "0": no next funding time is not one
                sink.reject("bad_ts")
                continue
            if not funding_ok(rate, 0.0):   # OKX sends no mark price
                sink.reject("bad_price")
                continue
            t_after = _ms_to_ns(d.nextFundingTime)
            interval_s = (t_after - t_next) // 1_000_000_000 if t_after > t_next else 0
            if not 0 < interval_s < U4_END:
                interval_s = _DEFAULT_FUNDING_INTERVAL_S
            sink.funding(inst.instrument_id, rate, t_next, interval_s, 0.0, ts)
        return None

    @staticmethod
    def _event(m: _Msg) -> Control:
        ev, arg = m.event, m.arg
        inst = arg.instId if arg is not None else ""
        if ev in ("subscribe", "unsubscribe"):
            return Control("ack", detail=f"{ev} {arg.channel if arg else ''}".rstrip(), symbol=inst)
        if ev == "error":
            if not inst:
                found = _INST_IN_TEXT.search(m.msg)
                inst = found.group(1) if found else ""
            return Control("error", detail=f"{m.code} {m.msg}".strip(), symbol=inst)
        if ev == "notice":
            return Control("notice", detail=f"{m.code} {m.msg}".strip(), reconnect=m.code == "64008")
        return Control("other", detail=ev)

    @staticmethod
    def native_to_canonical(native: str) -> str | None:
        """``BTC-USDT`` / ``BTC-USDT-SWAP`` -> ``BTC/USDT``; dated futures -> None."""
        parts = native.split("-")
        if len(parts) == 3 and parts[2] == "SWAP":
            parts.pop()
        if len(parts) == 2 and parts[0] and parts[1]:
            return f"{parts[0]}/{parts[1]}"
        return None
