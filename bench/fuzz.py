"""Venue parser fuzzing: generated and mutated frames through every adapter's parse path.

Each venue's adapter is built as the feed runtime builds it (``arbpipe.feeds.runtime.build_adapter``
with the symbol map of ``config/arbpipe.toml``) and driven as ``Feed.on_frame`` drives it:
``sink.recv_ns = now``, ``adapter.parse(frame, now, sink, socket_index)``, ``sink.flush()``
into a real SPSC ring (``RingSink``), with ``adapter.on_connect`` now and then as a
reconnect would. Frames are bytes, as websocket-client hands them over (a share are str).

Frames: valid frames of the venue's documented shapes (docs/venues.md; sequence ids
increasing, the instruments of the config), the venue's control frames (acks, errors,
pongs, notices), replays of earlier frames (duplicates, out of order), and mutants of
those: byte flips, inserted/deleted/duplicated bytes, truncation, splices; and at the JSON
level: deleted fields, type swaps, huge numbers, NaN/inf, unicode, nested junk, wrong
symbols, empty/oversized lists.

Checked for every frame (``FuzzStats``):
  * no exception escapes ``parse`` (``crashes``) and the adapter's last-resort guard never
    fires (``parse_errors``: a ``parse_error`` reject means a parser bug);
  * the frame is accounted for: it produced records, a ``Control``, applied book levels
    (``adapter.applied``), a counted book fault (``BookFault``), or at least one reject by a
    named reason (``REJECT_REASONS``); a frame that does none of these is ``silent`` (must
    be 0); ``frames == parsed + rejected``, where a
    frame with both records and rejects counts as rejected (``partial`` says how many);
  * every record that reaches the ring is sane (``bad_records`` must be 0): kind quote or
    funding, the adapter's venue id, a subscribed instrument id, finite positive prices
    with bid <= ask, finite non-negative sizes, exchange time >= 0, known flags, funding
    rate finite and next funding time / interval positive, per-producer seq 1, 2, 3 ...

``run(frames_per_venue, workers)`` fuzzes every venue (one process per venue, ``workers``
at a time) and returns the figures; ``python -m bench.fuzz [N]`` prints them.

Depth channels (``fuzz_venue(..., depth=N)``, the venues of ``BOOK_VENUES``): the adapter
keeps L2 books (``depth`` N, a ``RingSink`` with books) and the valid frames are the
venue's depth stream (``BookFrames``: a reference book per symbol, snapshots and diffs with
the venue's ids, now and then a skipped id or a repeat); a ``Control("resync")`` makes the
next frame of that symbol a snapshot, as the venue answers the runtime's resubscribe, and a
reconnect marks the ready books not ready (RECONNECT) as ``Feed.socket_down`` does. Also
checked: LEVEL and per-instrument STATUS records are sane, a reader that rebuilds the books
from the ring never gets a diff for a book it does not hold nor a crossed book
(``book_violations`` must be 0), and after the run one snapshot per symbol makes every book
ready and equal to the reference (``final_exact`` == ``books``): a book that took garbage
was resynced, not trusted. REST-snapshot venues (``REST_BOOK_VENUES``, ``RestBookFrames``):
a resync is answered by the runtime's REST snapshot (``on_rest_snapshot``, a few frames
later; current, older, mutated or junk bodies, counted as ``rest_*``), and the final
resync is a reconnect's (one diff, then the current snapshot).
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import random
import sys
import time
import traceback
import uuid
import zlib

import msgspec
import numpy as np

from arbpipe.config import load_config
from arbpipe.feeds.runtime import build_adapter
from arbpipe.feeds.sinks import RingSink
from arbpipe.feeds.venues.kraken import book_depth
from arbpipe.sim.market import fixed
from arbpipe.sim.okx import okx_checksum
from arbpipe.symbols import SymbolMap
from arbpipe.transport.rings import SpscRing
from shm_layouts import MARKET_UPDATE, Flag, Kind
from shm_layouts.feed_stats import REJECT_REASONS
from shm_layouts.records import (MARKET_UPDATE_FUNDING, MARKET_UPDATE_LEVEL,
                                 MARKET_UPDATE_STATUS, BookFault, StatusReason,
                                 status_reason_code)

VENUES = ("binance", "binance-usdm", "bybit-spot", "bybit-linear", "okx", "coinbase",
          "kraken", "gate")

_enc = msgspec.json.encode
_HUGE = (1e308, -1e308, 10**30, -(10**30), 2**63, 2**64, -(2**63) - 1, 10**400, 0, -1, -0.0,
         1e-320, 5e-324, 9007199254740993)
_ODD_NUM_STR = ("NaN", "nan", "-nan", "Infinity", "-Infinity", "inf", "-inf", "1e999",
                "-1e999", "0", "-0", "-1", "0x10", " 1.5", "1.5 ", "1_000", "1e-400", "",
                "1.2.3", "٣", "１２", "+5", ".5", "5.", "1e", "e5", "9" * 400,
                "0." + "0" * 300 + "1")
_UNICODE = ("\u0000", "\ud800", "\udfff", "\ufeff", "\u202e", "é", "漢字", "\U0001f600",
            "\\u0000", "\x7f", "BTC\u200bUSDT", "ＢＴＣＵＳＤＴ")
_WRONG_SYMBOLS = ("BTCUSDT", "btcusdt", "BTC-USDT", "BTC_USDT", "BTC/USDT", "BTC-USDT-SWAP",
                  "XBT/USD", "ETHBTC", "", " ", "BTCUSDT ", "DOGE-XYZ", "A" * 300,
                  "orderbook.1.BTCUSDT", "tickers.", "\u0000")


def _px(rng, base):
    return f"{base * (1 + rng.uniform(-0.01, 0.01)):.4f}"


BOOK_DEPTH = 10         # top N of the depth-channel fuzz


class BookFrames:
    """The depth stream of one venue (``BOOK_VENUES``) as the venue sends it: per symbol a
    reference book (price -> size strings), a snapshot first (and after ``resync``), then
    diffs with the venue's ids; 3 % of the diffs skip an id (a gap) and a repeat of the last
    frame comes with the replays of ``fuzz_venue``."""

    def __init__(self, venue: str, natives: list[str], rng: random.Random, adapter):
        self.venue, self.natives, self.rng, self.adapter = venue, natives, rng, adapter
        self.books = {s: ({}, {}) for s in natives}
        self.ids = {s: rng.randrange(1000, 10**9) for s in natives}
        self.need = set(natives)            # symbols whose next frame is a snapshot
        self.ms = 1_760_000_000_000

    def resync(self, native: str) -> None:
        if native in self.books:
            self.need.add(native)

    def reconnect(self) -> None:
        self.need = set(self.natives)

    def _levels(self, side: dict, bids: bool) -> list:
        return sorted(side.items(), key=lambda kv: float(kv[0]), reverse=bids)

    def _change(self, sym: str) -> tuple[list, list]:
        rng = self.rng
        out = []
        for k, side in enumerate(self.books[sym]):
            rows = []
            for _ in range(rng.randint(0, 4)):
                step = rng.randrange(60) * 0.25          # bids below 100, asks above
                p = f"{99.99 - step if k == 0 else 100.01 + step:.2f}"
                q = "0" if side and rng.random() < 0.3 else str(rng.randint(1, 500))
                if q == "0":
                    p = rng.choice(list(side))
                    side.pop(p)
                else:
                    side[p] = q
                rows.append([p, q])
            out.append(rows)
        return out[0], out[1]

    def snapshot(self, sym: str):
        self.need.discard(sym)
        b, a = self.books[sym]
        if not b and not a:
            self._change(sym)
        self.ids[sym] += self.rng.randint(1, 9)
        return self._frame(sym, True, self._levels(b, True), self._levels(a, False), None)

    def valid(self):
        rng = self.rng
        sym = rng.choice(self.natives)
        self.ms += rng.randint(0, 50)
        if sym in self.need or rng.random() < 0.01:
            return self.snapshot(sym), 0
        prev = self.ids[sym]
        if rng.random() < 0.03:                 # a diff that never comes: the id skips
            self._change(sym)
            prev = self.ids[sym] = prev + (1 if self.venue != "okx" else rng.randint(1, 9))
        b, a = self._change(sym)
        self.ids[sym] = prev + (1 if self.venue != "okx" else rng.randint(0, 9))
        return self._frame(sym, False, b, a, prev), 0

    def _frame(self, sym, snapshot, b, a, prev):
        uid, ms = self.ids[sym], self.ms
        if self.venue == "okx":
            ck = 0
            if self.rng.random() < 0.7:
                ck = _okx_checksum(self._levels(self.books[sym][0], True)[:25],
                                   self._levels(self.books[sym][1], False)[:25])
            return {"arg": {"channel": "books", "instId": sym},
                    "action": "snapshot" if snapshot else "update",
                    "data": [{"asks": [[p, q, "0", "1"] for p, q in a],
                              "bids": [[p, q, "0", "1"] for p, q in b], "ts": str(ms),
                              "checksum": ck, "prevSeqId": -1 if snapshot else prev,
                              "seqId": uid}]}
        return {"topic": f"orderbook.{self.adapter.book_channel()}.{sym}", "ts": ms,
                "type": "snapshot" if snapshot else "delta",
                "data": {"s": sym, "b": [list(x) for x in b], "a": [list(x) for x in a],
                         "u": uid, "seq": uid * 3}, "cts": ms - 2}

    def top(self, sym: str, n: int, contract_size: float) -> tuple[list, list]:
        b, a = self.books[sym]
        return ([[float(p), float(q) * contract_size] for p, q in self._levels(b, True)[:n]],
                [[float(p), float(q) * contract_size] for p, q in self._levels(a, False)[:n]])


def _okx_checksum(bids, asks) -> int:
    """The simulator's checksum: as the venue computes it."""
    return okx_checksum(bids, asks)


BOOK_FRAMES = {"bybit-spot": BookFrames, "bybit-linear": BookFrames, "okx": BookFrames}
BOOK_VENUES = tuple(BOOK_FRAMES)            # venues whose depth channel is fuzzed


class RestBookFrames:
    """The depth stream of a REST-snapshot venue (binance, binance-usdm, gate;
    docs/venues.md, "Binance", "L2 book"): per symbol a reference book (price -> size
    strings) and its update id; diffs ``U``..``u`` (USD-M ``pu``) of 1..4 ids, 3 % of them after a diff that
    never comes (a gap). A ``Control("resync")`` queues the runtime's REST snapshot, handed
    to ``on_rest_snapshot`` 0..6 frames later (``rest_due``): the current reference book
    mostly, else an older one (stale), a mutated body or junk. ``final_sync`` resyncs every
    book as a reconnect does (one diff, then the current snapshot)."""

    HISTORY = 16

    def __init__(self, venue: str, natives: list[str], rng: random.Random, adapter):
        self.venue, self.natives, self.rng, self.adapter = venue, natives, rng, adapter
        self.books = {s: ({}, {}) for s in natives}
        self.ids = {s: rng.randrange(1000, 10**9) for s in natives}
        self.history = {s: [] for s in natives}     # (id, bids, asks) of earlier states
        self.pending: dict[str, int] = {}           # symbol -> frames until its snapshot
        self.ms = 1_760_000_000_000
        for s in natives:
            self._change(s, 8)

    def resync(self, native: str) -> None:
        if native in self.books and native not in self.pending:
            self.pending[native] = self.rng.randint(0, 6)

    def reconnect(self) -> None:
        """The adapter forgot its books (``on_connect``): the next diff asks again."""

    def _levels(self, side: dict, bids: bool) -> list:
        return sorted(side.items(), key=lambda kv: float(kv[0]), reverse=bids)

    def _change(self, sym: str, at_least: int = 0) -> tuple[list, list]:
        rng = self.rng
        out = []
        for k, side in enumerate(self.books[sym]):
            rows = []
            for _ in range(max(at_least, rng.randint(0, 4))):
                step = rng.randrange(60) * 0.25          # bids below 100, asks above
                p = f"{99.99 - step if k == 0 else 100.01 + step:.2f}"
                q = "0" if side and rng.random() < 0.3 else str(rng.randint(1, 500))
                if q == "0":
                    p = rng.choice(list(side))
                    side.pop(p)
                else:
                    side[p] = q
                rows.append([p, q])
            out.append(rows)
        return out[0], out[1]

    def _advance(self, sym: str) -> tuple[int, int, int, list, list]:
        b, a = self._change(sym)
        prev = self.ids[sym]
        U, u = prev + 1, prev + self.rng.randint(1, 4)
        self.ids[sym] = u
        h = self.history[sym]
        h.append((u, dict(self.books[sym][0]), dict(self.books[sym][1])))
        del h[:-self.HISTORY]
        return U, u, prev, b, a

    def diff(self, sym: str) -> dict:
        """The next diff of ``sym`` (the reference book moves on)."""
        U, u, pu, b, a = self._advance(sym)
        self.ms += self.rng.randint(0, 50)
        ms = self.ms
        if self.venue == "gate":
            return {"time": ms // 1000, "time_ms": ms, "channel": "spot.order_book_update",
                    "event": "update", "result": {"t": ms, "e": "depthUpdate", "E": ms // 1000,
                                                  "s": sym, "U": U, "u": u, "b": b, "a": a}}
        body = {"e": "depthUpdate", "E": ms, "s": sym.upper(), "U": U, "u": u, "b": b, "a": a}
        if self.venue == "binance-usdm":
            body.update(T=ms - 1, pu=pu)
        if self.rng.random() < 0.2:
            return {"stream": f"{sym.lower()}@depth@100ms", "data": body}
        return body

    def valid(self):
        rng = self.rng
        sym = rng.choice(self.natives)
        if self.venue == "binance-usdm" and rng.random() < 0.1:   # funding on socket 1
            self.ms += rng.randint(0, 50)
            return {"e": "markPriceUpdate", "E": self.ms, "s": sym.upper(), "p": "100.00",
                    "i": "100.00", "P": "100.00", "r": f"{rng.uniform(-0.001, 0.001):.8f}",
                    "T": self.ms + 3_600_000}, 1
        if rng.random() < 0.03:                  # a diff that never comes: the ids skip
            self._advance(sym)
        return self.diff(sym), 0

    def body(self, sym: str, at: tuple | None = None) -> bytes:
        """The REST snapshot of ``sym``: the current book, or ``at`` = (id, bids, asks)."""
        uid, b, a = at if at is not None else (self.ids[sym], *self.books[sym])
        bids = [list(x) for x in self._levels(b, True)]
        asks = [list(x) for x in self._levels(a, False)]
        if self.venue == "gate":
            return _enc({"id": uid, "current": self.ms, "update": self.ms - 1, "asks": asks,
                         "bids": bids})
        body = {"lastUpdateId": uid, "bids": bids, "asks": asks}
        if self.venue == "binance-usdm":
            body.update(E=self.ms, T=self.ms - 1)
        return _enc(body)

    def rest_due(self) -> list[tuple[str, bytes, str]]:
        """(symbol, body, kind) of the snapshots the runtime receives now."""
        out = []
        for sym in list(self.pending):
            left = self.pending[sym]
            if left > 0:
                self.pending[sym] = left - 1
                continue
            del self.pending[sym]
            r = self.rng.random()
            h = self.history[sym]
            if r < 0.78 or len(h) < 2:
                out.append((sym, self.body(sym), "current"))
            elif r < 0.88:
                out.append((sym, self.body(sym, h[self.rng.randrange(len(h) - 1)]), "older"))
            elif r < 0.96:
                obj = mutate_object(json.loads(self.body(sym)), self.rng, self.natives)
                try:
                    out.append((sym, json.dumps(obj).encode("utf-8", "surrogatepass"), "mutant"))
                except (ValueError, RecursionError):
                    out.append((sym, b'{"lastUpdateId": ', "mutant"))
            else:
                out.append((sym, self.rng.choice((b"", b"<html>502 Bad Gateway</html>",
                                                  b'{"code":-1003,"msg":"Too many requests"}',
                                                  mutate_bytes(self.body(sym), self.rng, b"{}"))),
                            "junk"))
        return out

    def final_sync(self, adapter, sink) -> None:
        """Every book resynced as after a reconnect (``Feed.socket_down`` then
        ``on_connect``): one diff per symbol, then its current REST snapshot."""
        for iid in sorted(sink.ready):
            sink.book_broken(iid, BookFault.RECONNECT)
        adapter.on_connect(0)
        self.pending.clear()
        for sym in self.natives:
            sink.recv_ns = time.time_ns()
            adapter.parse(_enc(self.diff(sym)), sink.recv_ns, sink, 0)
            adapter.on_rest_snapshot(sym, self.body(sym), sink)
            sink.flush()

    def top(self, sym: str, n: int, contract_size: float) -> tuple[list, list]:
        b, a = self.books[sym]
        return ([[float(p), float(q) * contract_size] for p, q in self._levels(b, True)[:n]],
                [[float(p), float(q) * contract_size] for p, q in self._levels(a, False)[:n]])


REST_BOOK_VENUES = ("binance", "binance-usdm", "gate")   # depth channels with REST snapshots
BOOK_FRAMES.update({v: RestBookFrames for v in REST_BOOK_VENUES})


def deliver_rest(adapter, sink, books, st) -> None:
    """The REST snapshots due now (``RestBookFrames.rest_due``) through
    ``adapter.on_rest_snapshot``, as ``arbpipe.feeds.resync`` does; counted in ``st``."""
    for sym, body, kind in books.rest_due():
        r0, bf0, seq0 = sum(sink.rejects.values()), sink.book_resyncs, sink.seq
        sink.recv_ns = time.time_ns()
        st["rest_bodies"] += 1
        st["rest_kinds"][kind] = st["rest_kinds"].get(kind, 0) + 1
        try:
            ctl = adapter.on_rest_snapshot(sym, body, sink)
        except Exception as e:  # noqa: BLE001 - the figure we are after
            ctl = None
            st["rest_crashes"] += 1
            if len(st["examples"]) < 5:
                st["examples"].append({"what": "rest crash", "body": _show(body),
                                       "error": "".join(traceback.format_exception_only(e))
                                       .strip()})
        if sink.n:
            sink.flush()
        if sum(sink.rejects.values()) > r0:
            st["rest_rejected"] += 1
        elif adapter.books.holding(sym):              # judged at the next diff
            st["rest_held"] += 1
        elif ctl is None and sink.book_resyncs == bf0 and sink.seq == seq0 and \
                not sink.is_ready(adapter.by_native[sym].instrument_id):
            st["rest_silent"] += 1
            if len(st["examples"]) < 5:
                st["examples"].append({"what": "rest silent", "body": _show(body)})
        if ctl is not None and ctl.kind == "resync":
            st["resyncs"] += 1
            books.resync(ctl.symbol)


# -- depth channels resynced on the socket: coinbase (reconnect) and kraken (resubscribe) --
class CoinbaseBookFrames:
    """Coinbase ``level2`` as the venue sends it (docs/venues.md "Coinbase", "L2 book"): per
    product a reference book (price -> size strings) and one ``sequence_num`` counter for the
    connection (it follows the adapter's, as the BBO frames do, so that a replayed or mutated
    frame that moved it does not stall the stream); after a (re)connect a snapshot per
    product, then updates of absolute sizes ("0" removes), 3 % of them never sent (a gap),
    5 % heartbeats. A ``Control("resync")`` is answered as the runtime's planned reconnect
    does: ``on_connect``, the counter from 0, a snapshot per product (``final_sync`` too)."""

    def __init__(self, venue: str, natives: list[str], rng: random.Random, adapter):
        self.natives, self.rng, self.adapter = natives, rng, adapter
        self.books = {s: ({}, {}) for s in natives}
        self.seq = 0
        self.need = list(natives)            # products whose snapshot comes next
        self.ms = 1_760_000_000_000
        for s in natives:
            self._change(s, 6)

    def resync(self, native: str) -> None:
        self.adapter.on_connect(0)           # Control("resync", reconnect=True)
        self.reconnect()

    def reconnect(self) -> None:
        self.seq = 0
        self.need = list(self.natives)

    def _levels(self, side: dict, bids: bool) -> list:
        return sorted(side.items(), key=lambda kv: float(kv[0]), reverse=bids)

    def _change(self, sym: str, at_least: int = 1) -> list:
        rng = self.rng
        rows = []
        while len(rows) < at_least or (rows and rng.random() < 0.4):
            k = rng.randrange(2)
            side = self.books[sym][k]
            step = rng.randrange(60) * 0.25              # bids below 100, asks above
            p = f"{99.99 - step if k == 0 else 100.01 + step:.2f}"
            if side and rng.random() < 0.3:
                p = rng.choice(list(side))
                side.pop(p)
                q = "0"
            else:
                q = str(rng.randint(1, 500))
                side[p] = q
            rows.append(("bid" if k == 0 else "offer", p, q))
        return rows

    def _frame(self, events: list, channel: str = "l2_data") -> dict:
        last = self.adapter._last_seq
        self.seq = max(self.seq, 0 if last is None else last + 1)
        seq, self.seq = self.seq, self.seq + 1
        return {"channel": channel, "timestamp": _rfc3339(self.ms), "sequence_num": seq,
                "events": events}

    def snapshot(self, sym: str) -> dict:
        b, a = self.books[sym]
        t = "1970-01-01T00:00:00Z"
        ups = [{"side": "bid", "event_time": t, "price_level": p, "new_quantity": q}
               for p, q in self._levels(b, True)]
        ups += [{"side": "offer", "event_time": t, "price_level": p, "new_quantity": q}
                for p, q in self._levels(a, False)]
        return self._frame([{"type": "snapshot", "product_id": sym, "updates": ups}])

    def valid(self):
        rng = self.rng
        self.ms += rng.randint(0, 50)
        if self.need:
            return self.snapshot(self.need.pop(0)), 0
        if rng.random() < 0.05:
            return self._frame([{"current_time": "2026-01-01 00:00:00", "heartbeat_counter":
                                 self.seq}], "heartbeats"), 0
        sym = rng.choice(self.natives)
        if rng.random() < 0.03:                  # an update that never comes: the counter skips
            self._change(sym)
            self._frame([])
        t = _rfc3339(self.ms)
        ups = [{"side": s, "event_time": t, "price_level": p, "new_quantity": q}
               for s, p, q in self._change(sym)]
        return self._frame([{"type": "update", "product_id": sym, "updates": ups}]), 0

    def final_sync(self, adapter, sink) -> None:
        """A last planned reconnect: every book from a fresh snapshot."""
        self.resync("")
        while self.need:
            sink.recv_ns = time.time_ns()
            adapter.parse(_enc(self.snapshot(self.need.pop(0))), sink.recv_ns, sink, 0)
            sink.flush()

    def top(self, sym: str, n: int, contract_size: float) -> tuple[list, list]:
        b, a = self.books[sym]
        return ([[float(p), float(q)] for p, q in self._levels(b, True)[:n]],
                [[float(p), float(q)] for p, q in self._levels(a, False)[:n]])


class KrakenBookFrames:
    """Kraken ``book`` (v2) as the venue sends it (docs/venues.md "Kraken", "L2 book"): first
    the ``instrument`` snapshot (the pairs' precisions); per pair a reference book (ticks ->
    lots, deeper than the subscribed depth D) whose best D levels are the view; a snapshot,
    then updates of the view's changes (``qty: 0`` for a level that left the view unless the
    depth pushed it out) with the CRC32 checksum computed as Kraken does (fixed precision);
    3 % of the updates never sent (the next checksum finds them, or not: below the 10th
    level). A ``Control("resync")`` is answered as the venue answers ``resubscribe``: the
    unsubscribe and subscribe acks, then a snapshot; ``final_sync`` does that for each pair."""

    PDP, QDP = 2, 8

    def __init__(self, venue: str, natives: list[str], rng: random.Random, adapter):
        self.natives, self.rng, self.adapter = natives, rng, adapter
        self.depth = book_depth(adapter.depth)
        self.books = {s: ({}, {}) for s in natives}      # ticks -> lots
        self.views = {}
        self.queue: list[tuple[str, str]] = [("instrument", "")]
        self.ms = 1_760_000_000_000
        for s in natives:
            for _ in range(self.depth + 10):
                self._op(s)
            self.views[s] = self._view(s)
        self.reconnect()

    def resync(self, native: str) -> None:
        for s in native.split(","):
            if s in self.books:
                self.queue += [("unsubscribe", s), ("subscribe", s), ("snapshot", s)]

    def reconnect(self) -> None:
        self.queue += [("snapshot", s) for s in self.natives]

    def _op(self, sym: str) -> None:
        rng = self.rng
        k = rng.randrange(2)
        side = self.books[sym][k]
        if side and rng.random() < 0.35:
            side.pop(rng.choice(list(side)))
        else:
            t = 9999 - rng.randrange(60) if k == 0 else 10001 + rng.randrange(60)
            side[t] = rng.choice((1, 7, 12345678, rng.randint(1, 10**11)))

    def _view(self, sym: str) -> tuple[list, list]:
        b, a = self.books[sym]
        return (sorted(b.items(), reverse=True)[:self.depth], sorted(a.items())[:self.depth])

    def _change(self, sym: str) -> tuple[list, list]:
        """Change the book until its view changes; the view's change as Kraken sends it."""
        while True:
            for _ in range(self.rng.randint(1, 3)):
                self._op(sym)
            old, new = self.views[sym], self._view(sym)
            if old != new:
                break
        self.views[sym] = new
        out = []
        for k, (o, n) in enumerate(zip(old, new)):
            nd, od = dict(n), dict(o)
            worst = n[-1][0] if n else None
            full = len(n) == self.depth
            rows = [(p, 0) for p, _ in o if p not in nd
                    and not (full and (p < worst if k == 0 else p > worst))]
            rows += [(p, q) for p, q in n if od.get(p) != q]
            out.append(rows)
        return out[0], out[1]

    def _rows(self, rows) -> list:
        return [{"price": float(fixed(p, self.PDP)), "qty": float(fixed(q, self.QDP))}
                for p, q in rows]

    def checksum(self, sym: str) -> int:
        b, a = self.views[sym]
        f = lambda u, dp: fixed(u, dp).replace(".", "").lstrip("0")
        s = "".join(f(p, self.PDP) + f(q, self.QDP) for p, q in a[:10])
        s += "".join(f(p, self.PDP) + f(q, self.QDP) for p, q in b[:10])
        return zlib.crc32(s.encode()) & 0xFFFFFFFF

    def _book(self, sym: str, typ: str, b: list, a: list) -> dict:
        return {"channel": "book", "type": typ, "data": [{
            "symbol": sym, "bids": self._rows(b), "asks": self._rows(a),
            "checksum": self.checksum(sym), "timestamp": _rfc3339(self.ms)}]}

    def snapshot(self, sym: str) -> dict:
        b, a = self.views[sym]
        return self._book(sym, "snapshot", b, a)

    def _queued(self, what: str, sym: str) -> dict:
        if what == "instrument":
            return {"channel": "instrument", "type": "snapshot", "data": {"assets": [], "pairs": [
                {"symbol": s, "status": "online", "price_precision": self.PDP,
                 "qty_precision": self.QDP} for s in self.natives]}}
        if what == "snapshot":
            return self.snapshot(sym)
        result = {"channel": "book", "depth": self.depth, "symbol": sym}
        if what == "subscribe":
            result["snapshot"] = True
        t = _rfc3339(self.ms)
        return {"method": what, "result": result, "success": True, "time_in": t, "time_out": t}

    def valid(self):
        rng = self.rng
        self.ms += rng.randint(0, 50)
        if self.queue:
            return self._queued(*self.queue.pop(0)), 0
        sym = rng.choice(self.natives)
        if rng.random() < 0.03:                  # an update that never comes
            self._change(sym)
        return self._book(sym, "update", *self._change(sym)), 0

    def final_sync(self, adapter, sink) -> None:
        """Every pair resubscribed: acks, then its snapshot."""
        self.queue.clear()
        for s in self.natives:
            for what in ("unsubscribe", "subscribe", "snapshot"):
                sink.recv_ns = time.time_ns()
                adapter.parse(_enc(self._queued(what, s)), sink.recv_ns, sink, 0)
                sink.flush()

    def top(self, sym: str, n: int, contract_size: float) -> tuple[list, list]:
        b, a = self.views[sym]
        return ([[float(fixed(p, self.PDP)), float(fixed(q, self.QDP))] for p, q in b[:n]],
                [[float(fixed(p, self.PDP)), float(fixed(q, self.QDP))] for p, q in a[:n]])


CB_KR_BOOK_VENUES = ("coinbase", "kraken")     # depth channels resynced on the socket
BOOK_FRAMES.update({"coinbase": CoinbaseBookFrames, "kraken": KrakenBookFrames})


class VenueFrames:
    """Valid frames of one venue (documented shapes) with increasing sequence ids."""

    def __init__(self, venue: str, natives: list[str], rng: random.Random, adapter=None):
        self.venue, self.natives, self.rng = venue, natives, rng
        self.adapter = adapter     # Coinbase: follow its sequence / books like a venue would
        self.seq = 1000
        self.ms = 1_760_000_000_000
        self.cb_seq = 0
        self.cb_books: set[str] = set()
        self.books = BOOK_FRAMES[venue](venue, natives, rng, adapter) if (
            getattr(adapter, "depth", 0) > 0 and venue in BOOK_FRAMES) else None

    def _next(self):
        self.seq += self.rng.choice((1, 1, 1, 2, 7))
        self.ms += self.rng.randint(0, 50)
        return self.seq, self.ms

    def valid(self):
        """(frame object, socket index)."""
        rng, v = self.rng, self.venue
        if self.books is not None and (v != "bybit-linear" or rng.random() < 0.8):
            return self.books.valid()           # depth stream (linear: tickers for funding)
        sym = rng.choice(self.natives)
        seq, ms = self._next()
        bid = float(_px(rng, 100.0))
        ask = f"{bid + rng.choice((0.0, 0.01, 0.5)):.4f}"
        bid = f"{bid:.4f}"
        q1, q2 = f"{rng.uniform(0, 50):.3f}", f"{rng.uniform(0, 50):.3f}"
        if v == "binance":
            body = {"u": seq, "s": sym.upper(), "b": bid, "B": q1, "a": ask, "A": q2}
            if rng.random() < 0.2:
                body = {"stream": f"{sym.lower()}@bookTicker", "data": body}
            return body, 0
        if v == "binance-usdm":
            if rng.random() < 0.3:
                return {"e": "markPriceUpdate", "E": ms, "s": sym.upper(), "p": bid,
                        "i": bid, "P": bid, "r": f"{rng.uniform(-0.001, 0.001):.8f}",
                        "T": ms + 3_600_000}, 1
            return {"e": "bookTicker", "u": seq, "E": ms, "T": ms - 2, "s": sym.upper(),
                    "b": bid, "B": q1, "a": ask, "A": q2}, 0
        if v == "bybit-spot":
            return {"topic": f"orderbook.1.{sym}", "ts": ms, "type": "snapshot",
                    "data": {"s": sym, "b": [[bid, q1]], "a": [[ask, q2]], "u": seq,
                             "seq": seq * 10}, "cts": ms - 2}, 0
        if v == "bybit-linear":
            snap = rng.random() < 0.2
            data = {"symbol": sym, "bid1Price": bid, "bid1Size": q1, "ask1Price": ask,
                    "ask1Size": q2}
            if snap or rng.random() < 0.3:
                data.update(markPrice=bid, fundingRate=f"{rng.uniform(-0.001, 0.001):.6f}",
                            nextFundingTime=str(ms + 3_600_000), fundingIntervalHour="8")
            return {"topic": f"tickers.{sym}", "type": "snapshot" if snap else "delta",
                    "data": data, "cs": seq, "ts": ms}, 0
        if v == "okx":
            if sym.endswith("-SWAP") and rng.random() < 0.2:
                return {"arg": {"channel": "funding-rate", "instId": sym},
                        "data": [{"fundingRate": f"{rng.uniform(-0.001, 0.001):.8f}",
                                  "fundingTime": str(ms + 3_600_000),
                                  "nextFundingTime": str(ms + 3_600_000 + 28_800_000),
                                  "instId": sym, "ts": str(ms)}]}, 0
            return {"arg": {"channel": "bbo-tbt", "instId": sym},
                    "data": [{"asks": [[ask, q2, "0", "2"]], "bids": [[bid, q1, "0", "1"]],
                              "ts": str(ms), "seqId": seq}]}, 0
        if v == "coinbase":
            a = self.adapter
            if a is not None:   # a mutant moved the connection's sequence / dropped books
                self.cb_seq = max(self.cb_seq, a._last_seq or 0)
                self.cb_books &= set(a._books)
            self.cb_seq += 1
            t = _rfc3339(ms)
            if sym not in self.cb_books or rng.random() < 0.05:
                self.cb_books.add(sym)
                ups = [{"side": "bid", "event_time": t, "price_level": bid, "new_quantity": q1},
                       {"side": "offer", "event_time": t, "price_level": ask,
                        "new_quantity": q2}]
                ev = {"type": "snapshot", "product_id": sym, "updates": ups}
            else:
                ups = [{"side": rng.choice(("bid", "offer")), "event_time": t,
                        "price_level": rng.choice((bid, ask)),
                        "new_quantity": rng.choice((q1, "0"))}]
                ev = {"type": "update", "product_id": sym, "updates": ups}
            return {"channel": "l2_data", "client_id": "", "timestamp": t,
                    "sequence_num": self.cb_seq, "events": [ev]}, 0
        if v == "kraken":
            return {"channel": "ticker", "type": rng.choice(("snapshot", "update")),
                    "data": [{"symbol": sym, "bid": float(bid), "bid_qty": float(q1),
                              "ask": float(ask), "ask_qty": float(q2), "last": float(bid),
                              "timestamp": _rfc3339(ms)}]}, 0
        if v == "gate":
            return {"time": ms // 1000, "channel": "spot.book_ticker", "event": "update",
                    "result": {"t": ms, "u": seq, "s": sym, "b": bid, "B": q1, "a": ask,
                               "A": q2}}, 0
        raise ValueError(v)

    def controls(self):
        """The venue's control frames (documented acks, errors, pongs, notices)."""
        s = self.natives[0]
        cb_seq = self.cb_seq + 1
        return {
            "binance": ['{"result":null,"id":1}', '{"result":["btcusdt@aggTrade"],"id":3}',
                        '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}',
                        '{"code": 0, "msg": "Unknown property","id": 7}',
                        '{"e":"serverShutdown","E":1770123456789}',
                        '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}'],
            "binance-usdm": ['{"result":null,"id":3}', '{"e":"serverShutdown","E":1770123456789}',
                             '{"error":{"code":3,"msg":"Invalid JSON"}}'],
            "bybit-spot": ['{"success":true,"ret_msg":"subscribe","conn_id":"x","req_id":"1",'
                           '"op":"subscribe"}',
                           '{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}',
                           '{"success":false,"ret_msg":"error:handler not found,topic:'
                           f'orderbook.1.{s}","conn_id":"x","req_id":"orderbook.1.{s}",'
                           '"op":"subscribe"}'],
            "bybit-linear": ['{"success":true,"ret_msg":"","conn_id":"x","req_id":"",'
                             '"op":"subscribe"}',
                             '{"success":true,"ret_msg":"pong","conn_id":"x","req_id":"",'
                             '"op":"ping"}'],
            "okx": ["pong", '{"event":"subscribe","arg":{"channel":"bbo-tbt","instId":"%s"},'
                    '"connId":"a"}' % s,
                    '{"event":"error","msg":"Wrong URL or channel:tickers,instId:NMR-USDT '
                    'doesn\'t exist.","code":"60018","connId":"0d"}',
                    '{"event":"notice","code":"64008","msg":"reconnect","connId":"a"}'],
            "coinbase": ['{"channel":"subscriptions","client_id":"","timestamp":'
                         '"2026-04-07T14:30:00.000000Z","sequence_num":%d,"events":'
                         '[{"subscriptions":{"level2":["%s"]}}]}' % (cb_seq, s),
                         '{"type":"error","message":"Failed to subscribe","reason":'
                         '"DOGE-XYZ is not a valid product"}',
                         '{"channel":"heartbeats","client_id":"","timestamp":'
                         '"2023-06-23T20:31:26.122969572Z","sequence_num":%d,"events":'
                         '[{"current_time":"2023-06-23 20:31:56","heartbeat_counter":"3"}]}'
                         % (cb_seq,)],
            "kraken": ['{"channel": "heartbeat"}', '{"method":"pong","req_id":101}',
                       '{"channel":"status","type":"update","data":[{"version":"2.0.10",'
                       '"system":"online","api_version":"v2","connection_id":1}]}',
                       '{"method":"subscribe","result":{"channel":"ticker","symbol":"%s",'
                       '"snapshot":true,"event_trigger":"bbo"},"success":true}' % s,
                       '{"error":"Currency pair not supported XBT/USD","method":"subscribe",'
                       '"success":false,"symbol":"XBT/USD"}'],
            "gate": ['{"time":1611541000,"channel":"spot.book_ticker","event":"subscribe",'
                     '"error":null,"result":{"status":"success"}}',
                     '{"time":1611541000,"channel":"spot.book_ticker","event":"subscribe",'
                     '"error":{"code":2,"message":"Alert sub ob.BTC_USDT.400"},'
                     '"result":{"status":"fail"}}',
                     '{"time":1545404023,"channel":"spot.pong","event":"","error":null,'
                     '"result":null}',
                     '{"type":"upgrade","msg":"The connection will soon be closed."}'],
        }[self.venue]


def _rfc3339(ms: int) -> str:
    s, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:03d}000Z"


# ------------------------------------------------------------------ mutators ------

def _paths(obj, prefix=()):
    """Every (container, key) pair inside a JSON object."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((obj, k))
            out.extend(_paths(v))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((obj, i))
            out.extend(_paths(v))
    return out


def _junk(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice((None, True, False, 0, -1, 1.5, "", "x", [], {}, "0", "null",
                           rng.choice(_HUGE), rng.choice(_ODD_NUM_STR), rng.choice(_UNICODE)))
    if r < 0.6:
        return [_junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(("a", "b", "s", "u", "data", "", "e")): _junk(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def _swap_type(rng, v):
    if isinstance(v, str):
        return rng.choice((None, 0, 1.5, [], {}, True, [v], rng.choice(_ODD_NUM_STR),
                           rng.choice(_UNICODE), v * rng.randint(2, 50), v.upper(), v[::-1]))
    if isinstance(v, bool) or v is None:
        return rng.choice((0, 1, "true", "", [], {}, "null"))
    if isinstance(v, (int, float)):
        return rng.choice((str(v) if abs(v) < 10**300 else "1e999", None, [v], {},
                           rng.choice(_HUGE), -v, v * 10 + 1 if abs(v) < 10**300 else v,
                           rng.choice(_ODD_NUM_STR), True))
    if isinstance(v, list):
        return rng.choice(([], {}, None, "[]", v * rng.randint(2, 20), [v], v[:1] * 0,
                           [None] * 3, [[]]))
    if isinstance(v, dict):
        return rng.choice(([], None, "{}", [v], {}, {"": v}))
    return None


def mutate_object(obj, rng: random.Random, natives: list[str]):
    """Mutate a parsed JSON frame in place (1-3 edits); returns the object (or a new root)."""
    for _ in range(rng.randint(1, 3)):
        paths = _paths(obj)
        if not paths:
            return _junk(rng)
        parent, key = rng.choice(paths)
        v = parent[key]
        op = rng.random()
        if op < 0.18 and isinstance(parent, dict):
            del parent[key]                                            # field deletion
        elif op < 0.40:
            parent[key] = _swap_type(rng, v)                           # type swap
        elif op < 0.52:
            parent[key] = rng.choice(_HUGE)                            # huge numbers
        elif op < 0.62:
            parent[key] = rng.choice(_ODD_NUM_STR)                     # NaN / inf / odd
        elif op < 0.68:
            parent[key] = rng.choice((math.nan, math.inf, -math.inf))  # bare NaN tokens
        elif op < 0.74:
            parent[key] = (v if isinstance(v, str) else "") + rng.choice(_UNICODE)
        elif op < 0.80:
            parent[key] = _junk(rng)                                   # nested junk
        elif op < 0.88:
            parent[key] = rng.choice(_WRONG_SYMBOLS + tuple(n.lower() for n in natives[:3]))
        elif op < 0.93 and isinstance(parent, dict):
            parent[rng.choice(("extra", "data", "u", "s", "ts", "topic", "type", "event",
                               "channel", "arg", "result"))] = _junk(rng)
        elif op < 0.97:
            deep = _junk(rng)
            for _ in range(rng.randint(10, 200)):
                deep = [deep]
            parent[key] = deep
        else:
            return rng.choice(([obj], [], {}, "text", 42, None, [obj, obj]))
    return obj


def mutate_bytes(data: bytes, rng: random.Random, other: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:
            b = bytearray(rng.randbytes(rng.randint(0, 16)))
            continue
        op = rng.random()
        i = rng.randrange(len(b))
        if op < 0.3:
            b[i] ^= 1 << rng.randrange(8)                              # bit flip
        elif op < 0.45:
            b[i] = rng.choice(b'{}[]",:0-.eE\\ \x00\xff\x80nNtf')      # structural byte
        elif op < 0.6:
            del b[i:i + rng.randint(1, 8)]                             # deletion
        elif op < 0.7:
            b[i:i] = rng.randbytes(rng.randint(1, 8))                  # insertion
        elif op < 0.8:
            b = b[:i]                                                  # truncation
        elif op < 0.88:
            j = rng.randrange(len(b))
            lo, hi = min(i, j), max(i, j)
            b[hi:hi] = b[lo:hi]                                        # duplicated slice
        elif op < 0.95:
            j = rng.randrange(len(other) or 1)
            b = b[:i] + bytearray(other[j:])                           # splice
        else:
            b[i:i + 4] = rng.choice((b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80",
                                     b"\\ud8", b"1e99"))               # bad utf-8 / escapes
    return bytes(b)


# ------------------------------------------------------------------ the runner -----

class FuzzStats(dict):
    pass


def fuzz_adapter(venue: str):
    smap = SymbolMap.from_config(load_config())
    adapter, _ = build_adapter(venue, None, smap)
    return adapter


def _check_records(recs, venue_id, ids, next_seq, depth: int = 0) -> tuple[int, list]:
    """Count insane records among popped MarketUpdates; returns (bad, examples). With
    ``depth`` > 0 LEVEL records and the per-instrument STATUS of a broken book are expected
    too (an empty snapshot's one row is price 0, qty 0)."""
    bad = np.zeros(len(recs), bool)
    seq = recs["seq"].astype(np.int64)
    bad |= seq != np.arange(next_seq, next_seq + len(recs))
    bad |= recs["venue_id"] != venue_id
    bad |= ~np.isin(recs["instrument_id"], ids)
    kind = recs["kind"]
    q = kind == int(Kind.QUOTE)
    f = kind == int(Kind.FUNDING)
    if depth > 0:
        lv = kind == int(Kind.LEVEL)
        stt = kind == int(Kind.STATUS)
        lr = recs.view(MARKET_UPDATE_LEVEL)
        sr = recs.view(MARKET_UPDATE_STATUS)
        snap = (lr["flags"] & np.uint8(int(Flag.SNAPSHOT))) != 0
        with np.errstate(invalid="ignore"):
            okl = (np.isfinite(lr["price"]) & np.isfinite(lr["qty"]) & (lr["qty"] >= 0)
                   & ((lr["price"] > 0) | (snap & (lr["price"] == 0) & (lr["qty"] == 0)))
                   & (lr["depth"] == depth) & (lr["exchange_ts_ns"] >= 0)
                   & ((lr["flags"] & ~np.uint8(int(Flag.SNAPSHOT) | int(Flag.BOOK_ASK)
                                               | int(Flag.BOOK_END))) == 0))
        oks = (sr["status_reason"] & 0xFF) == int(StatusReason.BOOK_RESYNC)
        bad |= lv & ~okl
        bad |= stt & ~oks
        bad |= ~(q | f | lv | stt)
    else:
        bad |= ~(q | f)
    with np.errstate(invalid="ignore"):
        bid, ask = recs["bid"], recs["ask"]
        bq, aq = recs["bid_qty"], recs["ask_qty"]
        okq = (np.isfinite(bid) & np.isfinite(ask) & np.isfinite(bq) & np.isfinite(aq)
               & (bid > 0) & (bid <= ask) & (bq >= 0) & (aq >= 0)
               & (recs["exchange_ts_ns"] >= 0)
               & ((recs["flags"] & ~np.uint8(int(Flag.SNAPSHOT) | int(Flag.NO_EXCHANGE_TS)))
                  == 0))
        fr = recs.view(MARKET_UPDATE_FUNDING)
        okf = (np.isfinite(fr["funding_rate"]) & (fr["next_funding_ns"] > 0)
               & (fr["funding_interval_s"] > 0) & np.isfinite(fr["mark_price"])
               & (fr["mark_price"] >= 0) & (fr["exchange_ts_ns"] >= 0))
    bad |= q & ~okq
    bad |= f & ~okf
    idx = np.flatnonzero(bad)
    return int(len(idx)), [str(recs[i]) for i in idx[:3]]


class BookReader:
    """Rebuilds the books from popped records as a consumer does (SNAPSHOT clears, qty 0
    removes, truncate to N; a BOOK_RESYNC status drops the book); ``violations``: a diff
    for a book it does not hold, a crossed book at BOOK_END."""

    def __init__(self, depth: int):
        self.depth = depth
        self.books: dict[int, tuple[dict, dict]] = {}
        self.violations = 0
        self.examples: list[str] = []

    def _bad(self, what: str) -> None:
        self.violations += 1
        if len(self.examples) < 3:
            self.examples.append(what)

    def apply(self, recs) -> None:
        lr = recs.view(MARKET_UPDATE_LEVEL)
        sr = recs.view(MARKET_UPDATE_STATUS)
        for k in range(len(recs)):
            kind = int(recs["kind"][k])
            iid = int(recs["instrument_id"][k])
            if kind == Kind.STATUS:
                if status_reason_code(int(sr["status_reason"][k])) == StatusReason.BOOK_RESYNC:
                    self.books.pop(iid, None)
                continue
            if kind != Kind.LEVEL:
                continue
            flags = int(lr["flags"][k])
            if flags & Flag.SNAPSHOT:
                self.books[iid] = ({}, {})
            book = self.books.get(iid)
            if book is None:
                self._bad(f"diff of instrument {iid} whose book was not held")
                continue
            side = book[1] if flags & Flag.BOOK_ASK else book[0]
            px, qty = float(lr["price"][k]), float(lr["qty"][k])
            if qty == 0.0:
                side.pop(px, None)
            else:
                side[px] = qty
            if flags & Flag.BOOK_END:
                for sd, rev in ((book[0], True), (book[1], False)):
                    for p in sorted(sd, reverse=rev)[self.depth:]:
                        del sd[p]
                if book[0] and book[1] and max(book[0]) >= min(book[1]):
                    self._bad(f"crossed book of instrument {iid}: {max(book[0])} >= "
                              f"{min(book[1])}")

    def top(self, iid: int) -> tuple[list, list] | None:
        book = self.books.get(iid)
        if book is None:
            return None
        return ([[p, book[0][p]] for p in sorted(book[0], reverse=True)],
                [[p, book[1][p]] for p in sorted(book[1])])


def fuzz_venue(venue: str, n: int, seed: int = 1, instance: str | None = None,
               depth: int = 0) -> dict:
    """Fuzz one venue with n frames; returns its FuzzStats (see the module docstring).
    ``depth`` > 0: its depth channel, books of N levels (``BOOK_VENUES`` only)."""
    rng = random.Random(seed)
    adapter = fuzz_adapter(venue)
    if depth > 0:
        if venue not in BOOK_FRAMES:
            raise ValueError(f"{venue}: no depth-channel frames to fuzz")
        adapter.depth = depth
    natives = [i.native for i in adapter.instruments]
    ids = np.array(sorted({i.instrument_id for i in adapter.instruments}), np.uint32)
    gen = VenueFrames(venue, natives, rng, adapter)
    books = gen.books
    reader = BookReader(depth) if depth > 0 else None
    instance = instance or "fz" + uuid.uuid4().hex[:8]
    ring = SpscRing.create("fuzz", 1 << 16, "MarketUpdate", policy="drop", instance=instance)
    try:
        sink = RingSink(ring, adapter.venue_id, depth=depth)
        out = np.zeros(1 << 16, MARKET_UPDATE)
        n_sockets = len(adapter.sockets())
        applied = getattr(adapter, "applied", None)
        st = {"venue": venue, "frames": 0, "parsed": 0, "rejected": 0, "partial": 0,
              "controls": 0, "records": 0, "crashes": 0, "parse_errors": 0, "silent": 0,
              "bad_records": 0, "ring_dropped": 0, "rejects": {}, "unnamed_reasons": [],
              "examples": [], "kinds": {"valid": 0, "control": 0, "replay": 0,
                                        "object_mutant": 0, "byte_mutant": 0, "random": 0},
              "books": 0, "book_faults": {}, "resyncs": 0, "book_violations": 0,
              "final_exact": 0, "rest_bodies": 0, "rest_rejected": 0, "rest_crashes": 0,
              "rest_silent": 0, "rest_held": 0, "rest_kinds": {}}
        history: list[bytes] = []
        controls = [c.encode() for c in gen.controls()]
        popped_seq = 1
        reject_total = 0
        t0 = time.perf_counter()
        for i in range(n):
            if i % 997 == 0 and rng.random() < 0.5:
                for s in range(n_sockets):
                    adapter.on_connect(s)                   # a reconnect resets sequences
                gen.cb_books.clear()
                gen.cb_seq = 0
                if books is not None:                       # as Feed.socket_down does
                    for iid in sorted(sink.ready):
                        sink.book_broken(iid, BookFault.RECONNECT)
                    books.reconnect()
            r = rng.random()
            si = 0
            if r < 0.25:
                obj, si = gen.valid()
                frame = _enc(obj)
                kind = "valid"
            elif r < 0.30:
                frame = rng.choice(controls)
                kind = "control"
            elif r < 0.36 and history:
                frame = rng.choice(history)                 # duplicate / out of order
                kind = "replay"
            elif r < 0.70:
                obj, si = gen.valid() if rng.random() < 0.85 else \
                    (_loads_or_text(rng.choice(controls)), 0)
                obj = mutate_object(obj, rng, natives)
                try:
                    frame = json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode(
                        "utf-8", "surrogatepass")
                except (ValueError, RecursionError):
                    try:
                        frame = repr(obj).encode("utf-8", "surrogatepass")
                    except (ValueError, RecursionError):
                        frame = b'{"x": ' + b"9" * 5000 + b"}"
                kind = "object_mutant"
            elif r < 0.97:
                base = rng.choice(history) if history and rng.random() < 0.5 else \
                    _enc(gen.valid()[0])
                frame = mutate_bytes(base, rng, rng.choice(controls))
                kind = "byte_mutant"
            else:
                frame = rng.randbytes(rng.randint(0, 64))
                kind = "random"
            if kind == "valid" and len(history) < 256:
                history.append(frame)
            elif kind == "valid" and rng.random() < 0.05:
                history[rng.randrange(256)] = frame
            if n_sockets > 1:
                si = si if rng.random() < 0.9 else rng.randrange(n_sockets)
            if rng.random() < 0.1:
                try:
                    frame = frame.decode("utf-8")           # str frames as well as bytes
                except UnicodeDecodeError:
                    pass
            st["kinds"][kind] += 1
            # -- exactly what Feed.on_frame does ----------------------------------------
            now = time.time_ns()
            before = sink.seq
            ap0 = adapter.applied if applied is not None else 0
            bf0 = sink.book_resyncs
            sink.recv_ns = now
            try:
                ctl = adapter.parse(frame, now, sink, si)
            except Exception as e:  # noqa: BLE001 - the figure we are after
                ctl = None
                st["crashes"] += 1
                if len(st["examples"]) < 5:
                    st["examples"].append({"what": "crash", "frame": _show(frame),
                                           "error": "".join(traceback.format_exception_only(e))
                                           .strip()})
            if sink.n:
                sink.flush()
            # -- accounting --------------------------------------------------------------
            got = sink.seq - before
            rt = sum(sink.rejects.values())
            rej = rt - reject_total
            reject_total = rt
            st["frames"] += 1
            if rej:
                st["rejected"] += 1
                if got:
                    st["partial"] += 1
            elif got or ctl is not None or (applied is not None and adapter.applied != ap0) \
                    or sink.book_resyncs != bf0:          # a counted BookFault

                st["parsed"] += 1
            else:
                st["silent"] += 1
                if len(st["examples"]) < 5:
                    st["examples"].append({"what": "silent", "frame": _show(frame)})
            if ctl is not None:
                st["controls"] += 1
                if ctl.kind == "resync" and books is not None:
                    st["resyncs"] += 1
                    books.resync(ctl.symbol)        # the venue answers the resubscribe
            if books is not None and hasattr(books, "rest_due"):
                deliver_rest(adapter, sink, books, st)   # REST snapshots the runtime fetched
                reject_total = sum(sink.rejects.values())   # theirs, not the next frame's
            if sink.rejects.get("parse_error", 0) > st["parse_errors"]:
                st["parse_errors"] = sink.rejects["parse_error"]
                if len(st["examples"]) < 5:
                    st["examples"].append({"what": "parse_error", "frame": _show(frame)})
            if sink.seq - popped_seq > 30_000 or i == n - 1:
                popped_seq = _pop_all(ring, out, adapter.venue_id, ids, popped_seq, depth,
                                      reader, st)
        st["seconds"] = time.perf_counter() - t0
        if books is not None:
            # one snapshot per symbol, as the venue sends after a resubscribe: every book is
            # ready and equal to the reference again, whatever garbage came before
            if hasattr(books, "final_sync"):              # REST venues: as after a reconnect
                books.final_sync(adapter, sink)
            else:
                for inst in adapter.instruments:
                    books.resync(inst.native)
                    sink.recv_ns = time.time_ns()
                    adapter.parse(_enc(books.snapshot(inst.native)), sink.recv_ns, sink, 0)
                    sink.flush()
            _pop_all(ring, out, adapter.venue_id, ids, popped_seq, depth, reader, st)
            for inst in adapter.instruments:
                want = books.top(inst.native, depth, inst.contract_size)
                fb = sink.book_of(inst.instrument_id)
                got = fb.top() if fb is not None else None
                if sink.is_ready(inst.instrument_id) and got is not None and \
                        (got[0].tolist(), got[1].tolist()) == want and \
                        reader.top(inst.instrument_id) == want:
                    st["final_exact"] += 1
                elif len(st["examples"]) < 5:
                    st["examples"].append({"what": "book not exact after its snapshot",
                                           "symbol": inst.native})
            st["books"] = len(adapter.instruments)
            st["book_faults"] = {BookFault(k).name: v for k, v in
                                 sorted(sink.resyncs_by_fault.items())}
            st["book_violations"] = reader.violations
            for e in reader.examples:
                if len(st["examples"]) < 5:
                    st["examples"].append({"what": "book_violation", "detail": e})
        st["ring_dropped"] = sink.dropped
        st["rejects"] = dict(sorted(sink.rejects.items()))
        st["unnamed_reasons"] = sorted(set(sink.rejects) - set(REJECT_REASONS))
        st["accounted"] = st["frames"] == st["parsed"] + st["rejected"] + st["silent"]
        return st
    finally:
        ring.unlink()
        ring.close()


def _pop_all(ring, out, venue_id, ids, popped_seq, depth, reader, st) -> int:
    """Pop and check every record in the ring; returns the next expected seq."""
    k = ring.pop_batch(out)
    while k:
        bad, ex = _check_records(out[:k], venue_id, ids, popped_seq, depth)
        st["bad_records"] += bad
        for e in ex:
            if len(st["examples"]) < 5:
                st["examples"].append({"what": "bad_record", "record": e})
        if reader is not None:
            reader.apply(out[:k])
        popped_seq += k
        st["records"] += k
        k = ring.pop_batch(out)
    return popped_seq


def _loads_or_text(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode()


def _show(frame, limit=300):
    s = frame if isinstance(frame, str) else frame.decode("utf-8", "backslashreplace")
    return s[:limit] + ("..." if len(s) > limit else "")


def _task(args):
    venue, n, seed = args
    return fuzz_venue(venue, n, seed)


def run(frames_per_venue: int = 1_000_000, workers: int | None = None, seed: int = 1,
        venues=VENUES, chunks: int = 4) -> dict:
    """Fuzz every venue with ``frames_per_venue`` frames (split into ``chunks`` runs with
    their own seeds, ``workers`` processes); returns the figures per venue and in total."""
    workers = workers or min(len(os.sched_getaffinity(0)), 2)
    per = [(v, frames_per_venue // chunks + (1 if c < frames_per_venue % chunks else 0),
            seed * 1000 + c) for v in venues for c in range(chunks)]
    t0 = time.perf_counter()
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_task, per, chunksize=1)
    else:
        parts = [_task(p) for p in per]
    wall = time.perf_counter() - t0
    by: dict[str, dict] = {}
    for p in parts:
        a = by.setdefault(p["venue"], {"venue": p["venue"], "rejects": {}, "examples": [],
                                       "unnamed_reasons": [], "kinds": {}})
        for k, v in p.items():
            if isinstance(v, bool):
                a[k] = a.get(k, True) and v
            elif isinstance(v, (int, float)) and k != "venue":
                a[k] = a.get(k, 0) + v
        for k, v in p["rejects"].items():
            a["rejects"][k] = a["rejects"].get(k, 0) + v
        for k, v in p["kinds"].items():
            a["kinds"][k] = a["kinds"].get(k, 0) + v
        a["examples"] = (a["examples"] + p["examples"])[:5]
        a["unnamed_reasons"] = sorted(set(a["unnamed_reasons"]) | set(p["unnamed_reasons"]))
    total = {k: sum(v[k] for v in by.values()) for k in
             ("frames", "parsed", "rejected", "partial", "controls", "records", "crashes",
              "parse_errors", "silent", "bad_records", "ring_dropped")}
    total["accounted"] = all(v["accounted"] for v in by.values())
    return {"frames_per_venue": frames_per_venue, "workers": workers, "wall_s": wall,
            "frames_per_s": total["frames"] / wall if wall else 0.0, "total": total,
            "venues": by}


def render(res: dict) -> str:
    lines = [f"{'venue':<13} {'frames':>9} {'parsed':>9} {'rejected':>9} {'records':>9} "
             f"{'crashes':>7} {'guard':>5} {'silent':>6} {'bad rec':>7}  top rejects"]
    for v in res["venues"].values():
        top = sorted(v["rejects"].items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"{v['venue']:<13} {v['frames']:>9} {v['parsed']:>9} {v['rejected']:>9} "
                     f"{v['records']:>9} {v['crashes']:>7} {v['parse_errors']:>5} "
                     f"{v['silent']:>6} {v['bad_records']:>7}  "
                     + ", ".join(f"{k}={n}" for k, n in top))
    t = res["total"]
    lines.append(f"total {t['frames']:,} frames in {res['wall_s']:.1f} s "
                 f"({res['frames_per_s']:,.0f}/s, {res['workers']} workers): crashes "
                 f"{t['crashes']}, guard-caught parse errors {t['parse_errors']}, silent "
                 f"{t['silent']}, bad records {t['bad_records']}")
    return "\n".join(lines)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    r = run(n)
    print(render(r))
    for v in r["venues"].values():
        for e in v["examples"]:
            print(v["venue"], json.dumps(e)[:400])
