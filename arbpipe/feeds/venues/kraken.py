"""Kraken spot WebSocket v2: ``ticker`` with ``event_trigger: "bbo"``, or the ``book``
channel kept as an L2 book when ``depth`` > 0.

Wire (docs/venues.md, "Kraken"): one socket ``/v2``; ticker data items carry
``bid``/``bid_qty``/``ask``/``ask_qty`` as JSON numbers (base-asset quantities)
and ``timestamp`` RFC3339 with microseconds. No sequence number. The server sends
``{"channel":"heartbeat"}`` about once a second once subscribed; the optional
client ping ``{"method":"ping"}`` is answered with ``{"method":"pong"}``.
Symbols are ``BASE/QUOTE`` with ``BTC`` (not ``XBT``).

Units produced: prices in quote currency, sizes in base units, timestamps ns.
The first push after subscribing (``type: snapshot``) carries ``Flag.SNAPSHOT``.

L2 book (``depth`` N > 0; docs/venues.md, "Kraken", "L2 book"): the adapter subscribes
``instrument`` (the pairs' ``price_precision`` / ``qty_precision``) and ``book`` at the
smallest Kraken depth D >= N of 10/25/100/500/1000 instead of the ticker. Each book
message (snapshot or update) is applied to the adapter's own book of exact decimals per
pair, which is truncated to D after every update (Kraken sends no delete for a level
pushed out of scope), and its CRC32 ``checksum`` is verified: asks best 10 low->high then
bids best 10 high->low, each price and size printed at the pair's fixed precision with
the point removed and leading zeros stripped, CRC32 of the concatenation, unsigned.
When the precision is not known yet (no ``instrument`` data for the pair) it is learnt
from the first message with levels, as the precision pair (0..12 decimals each) whose
checksum matches; a snapshot whose checksum fails with the known precision but matches
another one corrects it. Then the message goes to ``sink.book`` (the levels and the truncated ones as
deletions). A broken rule marks the book not ready (``sink.book_broken``) and returns
``Control("resync", symbol=<pairs joined by ",">)``; the runtime sends ``resubscribe``
(unsubscribe then subscribe ``book`` for those pairs). Rules: a checksum mismatch
(CHECKSUM); an update before the pair's snapshot on the connection, or after the
resubscription's ack but before its snapshot (EARLY_DIFF); a book message with unusable
levels or without a checksum (BAD_DATA). While a pair resyncs,
its updates are refused (``no_snapshot``), and so are snapshots sent before the new
subscription's ack (``out_of_order``: they belong to the old one); after
``RESUBSCRIBE_AFTER`` such messages the resubscription is asked for again. An update identical to
the pair's previous one (same time, checksum and levels) is a replay: ``duplicate``.
"""
from __future__ import annotations

import bisect
import re
import zlib
from decimal import Decimal

import msgspec
import numpy as np

from arbpipe.books.full import split_levels
from arbpipe.feeds.venues.base import Control, SocketSpec, VenueAdapter, decode_frame
from arbpipe.feeds.venues.checks import INF, book_reject
from arbpipe.feeds.venues.coinbase import rfc3339_ns
from shm_layouts import Flag
from shm_layouts.records import BookFault

_SNAPSHOT = int(Flag.SNAPSHOT)
_NO_TS = int(Flag.NO_EXCHANGE_TS)


class _Ticker(msgspec.Struct):
    """A ``data[]`` item (ticker; the fields of other channels are ignored)."""
    symbol: str = ""
    bid: float | None = None
    bid_qty: float | None = None
    ask: float | None = None
    ask_qty: float | None = None
    timestamp: str = ""
    system: str = ""         # status channel


class _Result(msgspec.Struct):
    channel: str = ""
    symbol: str = ""


class _Msg(msgspec.Struct):
    channel: str = ""
    type: str = ""
    data: list[_Ticker] | None = None
    method: str = ""
    success: bool | None = None
    result: _Result | None = None
    error: str | None = None
    symbol: str = ""


_decode = msgspec.json.Decoder(_Msg).decode
_PAIR_IN_TEXT = re.compile(r"\b([A-Za-z0-9]+/[A-Za-z0-9]+)\b")


# -- L2 book (depth > 0) --------------------------------------------------------------
DEPTHS = (10, 25, 100, 500, 1000)     # the depths Kraken's book channel offers
CHECKSUM_LEVELS = 10                  # the checksum covers the best 10 levels a side
MAX_DP = 12                           # precisions tried when learning one from a checksum


def book_depth(n: int) -> int:
    """The Kraken book depth to subscribe for a top-``n`` book: the smallest offered depth
    >= n (1000 at most)."""
    for d in DEPTHS:
        if d >= n:
            return d
    return DEPTHS[-1]


def _ck(v: Decimal, dp: int) -> str:
    """One number of the checksum string: fixed ``dp`` decimals, point removed, leading
    zeros stripped."""
    return format(v, f".{dp}f").replace(".", "").lstrip("0")


def checksum(asks, bids, price_dp: int, qty_dp: int) -> int:
    """Kraken's book checksum of ``asks`` (best first, low->high) and ``bids`` (best first,
    high->low), each an iterable of (price, qty) Decimals: only the first 10 of each count."""
    parts = [_ck(p, price_dp) + _ck(q, qty_dp) for p, q in list(asks)[:CHECKSUM_LEVELS]]
    parts += [_ck(p, price_dp) + _ck(q, qty_dp) for p, q in list(bids)[:CHECKSUM_LEVELS]]
    return zlib.crc32("".join(parts).encode()) & 0xFFFFFFFF


_EMPTY_CRC = zlib.crc32(b"")


def _levels_ok(levels) -> bool:
    """Every price finite and > 0, every size 0 or finite and > 0 (as the float the book
    keeps: a size that rounds to 0 would delete there and stay here)."""
    for lv in levels:
        p, q = lv.price, lv.qty
        if not (p.is_finite() and q.is_finite()):
            return False
        fp, fq = float(p), float(q)
        if not (0.0 < fp < INF and (0.0 < fq < INF or q == 0)):
            return False
    return True


def _decimals(v: Decimal) -> int:
    e = v.as_tuple().exponent
    return -e if isinstance(e, int) and e < 0 else 0


class _BLevel(msgspec.Struct):
    price: Decimal            # exact: the checksum needs the venue's digits, not a float's
    qty: Decimal


class _BItem(msgspec.Struct):
    """A ``data[]`` item of ``book`` (``system``: of the status channel)."""
    symbol: str = ""
    bids: list[_BLevel] | None = None
    asks: list[_BLevel] | None = None
    checksum: int | None = None
    timestamp: str = ""
    system: str = ""


class _Pair(msgspec.Struct):
    symbol: str = ""
    price_precision: int | None = None
    qty_precision: int | None = None


class _Instruments(msgspec.Struct):
    pairs: list[_Pair] | None = None


class _BMsg(msgspec.Struct):
    channel: str = ""
    type: str = ""
    data: list[_BItem] | _Instruments | None = None
    method: str = ""
    success: bool | None = None
    result: _Result | None = None
    error: str | None = None
    symbol: str = ""


_decode_book = msgspec.json.Decoder(_BMsg).decode

FRESH, READY, WAIT, ARMED = 0, 1, 2, 3   # a pair's book on this connection (see _KBook)
# messages of a pair refused while its resubscription's ack is awaited before it is asked
# again: after an unsubscribe nothing more comes but what was in flight, so a stream that
# goes on means the resubscription did not happen (refused, or its ack was lost)
RESUBSCRIBE_AFTER = 100


class _KBook:
    """One pair's book as Kraken sends it: exact decimals, at most ``depth`` levels a side.
    ``state``: FRESH (no snapshot yet on this connection), READY, WAIT (resync asked; the
    new subscription's ack not seen yet), ARMED (ack seen: the next snapshot is the new
    one)."""
    __slots__ = ("bids", "asks", "bp", "ap", "state", "last", "refused", "cb", "ca")

    def __init__(self):
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        # price -> (its size object, precision, checksum text): a level is formatted once,
        # not at every message (the formatting was most of a message's cost)
        self.cb: dict[Decimal, tuple] = {}
        self.ca: dict[Decimal, tuple] = {}
        self.bp: list[Decimal] = []      # bid prices, ascending (best last)
        self.ap: list[Decimal] = []      # ask prices, ascending (best first)
        self.state = FRESH
        self.last = None                 # the last update applied (replay detection)
        self.refused = 0                 # messages refused while waiting (WAIT)

    def clear(self, state: int) -> None:
        self.bids.clear()
        self.asks.clear()
        self.cb.clear()
        self.ca.clear()
        self.bp.clear()
        self.ap.clear()
        self.last = None
        self.state = state
        self.refused = 0

    def top(self):
        """(asks, bids) best 10 of each, best first, as (price, qty) pairs."""
        asks, bids = self.asks, self.bids
        return ([(p, asks[p]) for p in self.ap[:CHECKSUM_LEVELS]],
                [(p, bids[p]) for p in self.bp[:-CHECKSUM_LEVELS - 1:-1]])


def _parts(top, cache: dict, dp: tuple[int, int], parts: list) -> None:
    """Append the checksum text of each (price, size) of ``top`` at precision ``dp``, from
    ``cache`` when the level is the one formatted before (same size object, same dp)."""
    for p, q in top:
        c = cache.get(p)
        if c is None or c[0] is not q or c[1] != dp:
            c = cache[p] = (q, dp, _ck(p, dp[0]) + _ck(q, dp[1]))
        parts.append(c[2])


def _cached_checksum(kb: _KBook, top_a, top_b, dp: tuple[int, int]) -> int:
    """``checksum(top_a, top_b, *dp)`` with the per-level texts cached in ``kb``."""
    parts: list[str] = []
    _parts(top_a, kb.ca, dp, parts)
    _parts(top_b, kb.cb, dp, parts)
    return zlib.crc32("".join(parts).encode()) & 0xFFFFFFFF


class KrakenAdapter(VenueAdapter):
    """Kraken v2 spot BBO from the ``ticker`` channel (``event_trigger: bbo``), or an L2
    book from ``book`` when ``depth`` > 0."""

    name = "kraken"
    default_url = "wss://ws.kraken.com"
    market = "spot"
    path = "/v2"
    supports_depth = True

    def __init__(self, instruments, venue_id: int = 0):
        super().__init__(instruments, venue_id)
        self._books: dict[str, _KBook] = {}
        self.precision: dict[str, tuple[int, int]] = {}   # pair -> (price_dp, qty_dp)
        self.applied = 0          # book messages applied (depth > 0)

    def sockets(self) -> list[SocketSpec]:
        if self.depth > 0:
            subs = [{"method": "subscribe", "params": {"channel": "instrument", "snapshot": True},
                     "req_id": 2},
                    {"method": "subscribe",
                     "params": {"channel": "book", "symbol": [i.native for i in self.instruments],
                                "depth": book_depth(self.depth), "snapshot": True},
                     "req_id": 3}]
            return [SocketSpec(self.path, [msgspec.json.encode(f).decode() for f in subs],
                               ping_text='{"method":"ping"}', ping_interval_s=20.0)]
        sub = {"method": "subscribe",
               "params": {"channel": "ticker", "symbol": [i.native for i in self.instruments],
                          "event_trigger": "bbo", "snapshot": True},
               "req_id": 1}
        return [SocketSpec(self.path, [msgspec.json.encode(sub).decode()],
                           ping_text='{"method":"ping"}', ping_interval_s=20.0)]

    def on_connect(self, socket_index: int) -> None:
        self._books.clear()

    def resubscribe(self, native: str) -> list[str]:
        """Unsubscribe then subscribe ``book`` for ``native`` (pairs joined by ","): the
        venue answers with acks and a fresh snapshot."""
        symbols = [s for s in native.split(",") if s]
        d = book_depth(self.depth)
        return [msgspec.json.encode({"method": m, "params": {
                    "channel": "book", "symbol": symbols, "depth": d,
                    **({"snapshot": True} if m == "subscribe" else {})}, "req_id": 4}).decode()
                for m in ("unsubscribe", "subscribe")]

    def _parse(self, frame, sink) -> Control | None:
        if self.depth > 0:
            return self._parse_depth(frame, sink)
        m = decode_frame(_decode, frame, sink)
        if m is None:
            return None
        ch = m.channel
        if ch == "ticker":
            self._ticker(m.data or [], m.type == "snapshot", sink)
            return None
        if ch == "heartbeat":
            return Control("heartbeat")
        if m.method:
            return self._method(m)
        if ch == "status":
            system = m.data[0].system if m.data else ""
            return Control("other", detail=f"status {system}".strip())
        sink.reject("unknown_channel" if ch else "bad_shape")
        return None

    def _ticker(self, data: list[_Ticker], snapshot: bool, sink) -> None:
        if not data:
            sink.reject("bad_shape")
            return
        by_native = self.by_native
        for d in data:
            inst = by_native.get(d.symbol)
            if inst is None:
                sink.reject("unknown_symbol")
                continue
            bid, bq, ask, aq = d.bid, d.bid_qty, d.ask, d.ask_qty
            if bid is None or bq is None or ask is None or aq is None:
                sink.reject("bad_shape")
                continue
            why = book_reject(bid, ask, bq, aq)
            if why is not None:
                sink.reject(why)
                continue
            flags = _SNAPSHOT if snapshot else 0
            if d.timestamp:
                ts = rfc3339_ns(d.timestamp)
                if ts < 0:
                    sink.reject("bad_shape")
                    continue
            else:
                ts, flags = 0, flags | _NO_TS
            sink.quote(inst.instrument_id, bid, ask, bq, aq, ts, flags)

    # -- L2 book (depth > 0) ----------------------------------------------------------
    def _parse_depth(self, frame, sink) -> Control | None:
        m = decode_frame(_decode_book, frame, sink)
        if m is None:
            return None
        ch = m.channel
        if ch == "book":
            return self._book(m, sink)
        if ch == "heartbeat":
            return Control("heartbeat")
        if m.method:
            ctl = self._method(m)
            r = m.result
            if ctl.kind == "ack" and m.method == "subscribe" and r is not None and \
                    r.channel == "book":
                kb = self._books.get(r.symbol)
                if kb is not None and kb.state == WAIT:
                    kb.state = ARMED       # the snapshot that follows is the new one
            return ctl
        if ch == "instrument":
            data = m.data
            if not isinstance(data, _Instruments) or data.pairs is None:
                sink.reject("bad_shape")
                return None
            n = 0
            for p in data.pairs:
                pdp, qdp = p.price_precision, p.qty_precision
                if p.symbol in self.by_native and pdp is not None and qdp is not None and \
                        0 <= pdp <= 18 and 0 <= qdp <= 18:
                    self.precision[p.symbol] = (pdp, qdp)
                    n += 1
            return Control("other", detail=f"instrument {m.type}: {n} pairs")
        if ch == "status":
            data = m.data
            system = data[0].system if isinstance(data, list) and data else ""
            return Control("other", detail=f"status {system}".strip())
        sink.reject("unknown_channel" if ch else "bad_shape")
        return None

    def _book(self, m: _BMsg, sink) -> Control | None:
        snap = m.type == "snapshot"
        data = m.data
        if not (snap or m.type == "update") or not isinstance(data, list) or not data:
            sink.reject("bad_shape")
            return None
        broken = []
        for d in data:
            inst = self.by_native.get(d.symbol)
            if inst is None:
                sink.reject("unknown_symbol")
                continue
            if not self._apply(inst, d, snap, sink):
                broken.append(d.symbol)
        if broken:
            return Control("resync", symbol=",".join(broken), detail="book")
        return None

    def _broken(self, inst, kb: _KBook, fault: int, sink) -> bool:
        sink.book_broken(inst.instrument_id, fault)
        kb.clear(WAIT)
        return False

    def _apply(self, inst, d: _BItem, snap: bool, sink) -> bool:
        """One pair's book message; False when the pair must resync."""
        sym = d.symbol
        kb = self._books.get(sym)
        if kb is None:
            kb = self._books[sym] = _KBook()
        state = kb.state
        if state == WAIT:
            sink.reject("out_of_order" if snap else "no_snapshot")
            kb.refused += 1
            if kb.refused >= RESUBSCRIBE_AFTER:   # still streaming: the resubscription failed
                kb.refused = 0
                return False
            return True
        if not snap and state != READY:      # FRESH / ARMED: an update before the snapshot
            return self._broken(inst, kb, BookFault.EARLY_DIFF, sink)
        bids, asks, ck = d.bids, d.asks, d.checksum
        if bids is None or asks is None or ck is None:
            sink.reject("bad_shape")
            return self._broken(inst, kb, BookFault.BAD_DATA, sink)
        if not (_levels_ok(bids) and _levels_ok(asks)):
            sink.reject("bad_price")
            return self._broken(inst, kb, BookFault.BAD_DATA, sink)
        if not snap:
            key = (d.timestamp, ck, bids, asks)
            if key == kb.last:
                sink.reject("duplicate")          # a replay of the update just applied
                return True
        depth = book_depth(self.depth)
        if snap:
            kb.clear(READY)
        # price, size, ... of the bids then the asks, for one float array
        rows_b = [x for lv in bids for x in (float(lv.price), float(lv.qty))]
        rows_a = [x for lv in asks for x in (float(lv.price), float(lv.qty))]
        _set_levels(kb.bids, kb.bp, bids, kb.cb)
        _set_levels(kb.asks, kb.ap, asks, kb.ca)
        bp, ap = kb.bp, kb.ap
        if len(bp) > depth:                       # truncate: Kraken sends no delete for these
            cut = bp[:len(bp) - depth]
            del bp[:len(bp) - depth]
            for p in cut:
                del kb.bids[p]
                kb.cb.pop(p, None)
                rows_b += (float(p), 0.0)
        if len(ap) > depth:
            cut = ap[depth:]
            del ap[depth:]
            for p in cut:
                del kb.asks[p]
                kb.ca.pop(p, None)
                rows_a += (float(p), 0.0)
        top_a, top_b = kb.top()
        if top_a or top_b:
            dp = self.precision.get(sym)
            ok = dp is not None and _cached_checksum(kb, top_a, top_b, dp) == ck
            if not ok and (dp is None or snap):
                # not told yet, or told wrong (a snapshot checks itself): learn it from here
                ok = self._learn_precision(sym, top_a, top_b, ck) is not None
        else:
            ok = ck == _EMPTY_CRC              # an empty book: the CRC32 of ""
        if not ok:
            return self._broken(inst, kb, BookFault.CHECKSUM, sink)
        self.applied += 1
        kb.state = READY
        if not snap:
            kb.last = key
        ts = rfc3339_ns(d.timestamp) if d.timestamp else 0
        rows_b, rows_a = split_levels(np.array(rows_b + rows_a, np.float64).reshape(-1, 2),
                                      len(rows_b) >> 1)
        if sink.book(inst.instrument_id, rows_b, rows_a, snap, max(ts, 0), 0) is None:
            kb.clear(WAIT)                        # refused (the sink counted why): resync
            return False
        return True

    def _learn_precision(self, sym: str, top_a, top_b, ck: int) -> tuple[int, int] | None:
        """The (price_dp, qty_dp) whose checksum of this book is ``ck``, when the
        ``instrument`` channel has not told it yet (None: none matches, or no levels)."""
        if not top_a and not top_b:
            return None
        lvls = top_a + top_b
        p0 = max(_decimals(p) for p, _ in lvls)
        q0 = max(_decimals(q) for _, q in lvls)
        for pdp in range(p0, MAX_DP + 1):
            for qdp in range(q0, MAX_DP + 1):
                if checksum(top_a, top_b, pdp, qdp) == ck:
                    self.precision[sym] = (pdp, qdp)
                    return pdp, qdp
        return None

    @staticmethod
    def _method(m: _Msg) -> Control:
        method = m.method
        if method == "pong":
            return Control("pong")
        if m.success is False or m.error:
            symbol = m.symbol or (m.result.symbol if m.result else "")
            if not symbol:
                found = _PAIR_IN_TEXT.search(m.error or "")
                symbol = found.group(1) if found else ""
            return Control("error", detail=f"{method}: {m.error or 'failed'}", symbol=symbol)
        if method in ("subscribe", "unsubscribe"):
            r = m.result
            return Control("ack", detail=f"{method} {r.channel if r else ''}".rstrip(),
                           symbol=r.symbol if r else m.symbol)
        return Control("other", detail=method)

    @staticmethod
    def native_to_canonical(native: str) -> str | None:
        """``BTC/USD`` -> ``BTC/USD`` (v2 names are already BASE/QUOTE)."""
        parts = native.split("/")
        if len(parts) == 2 and parts[0] and parts[1]:
            return native
        return None


def _set_levels(side: dict, prices: list, levels, cache: dict) -> None:
    """Apply ``levels`` (absolute sizes, 0 removes) to one side: ``side`` price -> size,
    ``prices`` its prices ascending; ``cache``: the side's checksum texts."""
    for lv in levels:
        p, q = lv.price, lv.qty
        if q == 0:
            if side.pop(p, None) is not None:
                del prices[bisect.bisect_left(prices, p)]
                cache.pop(p, None)
        else:
            if p not in side:
                bisect.insort(prices, p)
            side[p] = q
