"""Depth-channel fuzzing (L2 books): the venues' depth streams and a ring reader that
rebuilds the books, used by ``bench.fuzz.fuzz_venue(..., depth=N)`` and bench/feeds_depth.py.

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

``DEPTH_VENUES``: every venue with a depth channel (all of ``BOOK_FRAMES``);
``bench.fuzz.run(..., depth=N)`` fuzzes them all (``arbpipe bench reliability --only
fuzz-books``).
"""
from __future__ import annotations

import json
import random
import time
import traceback
import zlib

import msgspec

from arbpipe.feeds.venues.kraken import book_depth
from arbpipe.sim.market import fixed
from arbpipe.sim.okx import okx_checksum
from bench.fuzz_mutate import rfc3339, show_frame, mutate_bytes, mutate_object
from shm_layouts import Flag, Kind
from shm_layouts.records import (MARKET_UPDATE_LEVEL, MARKET_UPDATE_STATUS, BookFault,
                                 StatusReason, status_reason_code)

_enc = msgspec.json.encode


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
                ck = okx_book_checksum(self._levels(self.books[sym][0], True)[:25],
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


def okx_book_checksum(bids, asks) -> int:
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
                st["examples"].append({"what": "rest crash", "body": show_frame(body),
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
                st["examples"].append({"what": "rest silent", "body": show_frame(body)})
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
        return {"channel": channel, "timestamp": rfc3339(self.ms), "sequence_num": seq,
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
        t = rfc3339(self.ms)
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
            "checksum": self.checksum(sym), "timestamp": rfc3339(self.ms)}]}

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
        t = rfc3339(self.ms)
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

DEPTH_VENUES = tuple(BOOK_FRAMES)   # every venue with a depth channel (all eight)


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

