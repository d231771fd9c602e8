"""Where a running feed puts what its adapter parsed (the ``UpdateSink`` of
``arbpipe.feeds.venues.base``).

``RingSink`` packs each update with ``struct.pack_into`` straight into a preallocated
64-byte MarketUpdate slot and pushes the frame's records into the feed's SPSC ring in one
``push_words``; ``PrintSink`` packs the same way and writes JSON lines instead
(``arbpipe feed --print``). The packing formats are derived from the record dtypes of
``shm_layouts.records`` (offsets there), so they cannot drift from the byte contract.
``CollectingSink`` (``arbpipe.feeds.venues.sink``) keeps dicts, for adapter tests.
"""
from __future__ import annotations

import json
import struct

import numpy as np

from arbpipe.books.full import (GARBAGE, NO_ROOM, BookError, FullBook, levels_array,
                                publish_message)
from arbpipe.feeds.books import BookKeeping
from arbpipe.symbols import PERP_ID_BIT
from shm_layouts.records import (MARKET_UPDATE, MARKET_UPDATE_FUNDING, MARKET_UPDATE_STATUS,
                                 Flag, Kind, StatusReason, VenueStatus,
                                 BookFault, pack_status_reason, status_reason_code,
                                 status_reason_fault, status_reason_socket)
from shm_layouts.words import mu_head

_STRUCT_CODE = {"u1": "B", "u2": "H", "u4": "I", "u8": "Q", "i8": "q", "f4": "f", "f8": "d"}


def record_struct(dtype: np.dtype) -> struct.Struct:
    """A little-endian ``struct.Struct`` with ``dtype``'s fields in offset order (gaps as
    pad bytes): packs and unpacks one record of that dtype."""
    fmt, pos = "<", 0
    for dt, off, *_ in sorted(dtype.fields.values(), key=lambda f: f[1]):
        if off > pos:
            fmt += f"{off - pos}x"
        fmt += _STRUCT_CODE[f"{dt.kind}{dt.itemsize}"]
        pos = off + dt.itemsize
    if dtype.itemsize > pos:
        fmt += f"{dtype.itemsize - pos}x"
    s = struct.Struct(fmt)
    assert s.size == dtype.itemsize, (fmt, dtype)
    return s


PACK_QUOTE = record_struct(MARKET_UPDATE)             # "<IHBBddddqqQ"
PACK_FUNDING = record_struct(MARKET_UPDATE_FUNDING)   # "<IHBBdqIf8xqqQ"
PACK_STATUS = record_struct(MARKET_UPDATE_STATUS)     # "<IHBBII24xqqQ"
SLOT = MARKET_UPDATE.itemsize                         # bytes per record in the buffer
SLOT_SHIFT = SLOT.bit_length() - 1                    # record k starts at k << SLOT_SHIFT
assert 1 << SLOT_SHIFT == SLOT
_QUOTE, _FUNDING, _STATUS = int(Kind.QUOTE), int(Kind.FUNDING), int(Kind.STATUS)
_NO_TS = int(Flag.NO_EXCHANGE_TS)
_LEVEL = int(Kind.LEVEL)


class RingSink(BookKeeping):
    """``UpdateSink`` that packs updates straight into 64-byte records and pushes them into
    an SPSC ring once per frame (``flush``). Not thread-safe: the runtime holds its lock.
    ``depth`` > 0 keeps an L2 book per instrument (``arbpipe.feeds.books``): ``book`` and
    ``book_broken`` publish LEVEL, QUOTE and STATUS records.

    ``recv_ns`` (set by the runtime before each frame) stamps every record of the frame;
    ``seq`` is the last sequence number used (records are numbered 1, 2, 3, ...).
    ``seen`` maps instrument id -> recv_ns of its last record (the watchdog reads it)."""

    def __init__(self, ring, venue_id: int, capacity: int = 256, push_timeout: float = 0.0,
                 depth: int = 0):
        self.ring = ring
        self.venue_id = venue_id
        self.init_books(depth)
        capacity = max(capacity, 4 * depth + 8)     # a snapshot's top N and its QUOTE fit
        self.cap = capacity
        self.buf = bytearray(capacity * SLOT)
        self.words = np.frombuffer(self.buf, np.int64)
        self.n = 0
        self.seq = 0
        self.recv_ns = 0
        self.seen: dict[int, int] = {}
        self.rejects: dict[str, int] = {}
        self.fundings = 0
        self.statuses = 0
        self.dropped = 0
        self.push_timeout = push_timeout
        self._heads: dict[int, int] = {}     # instrument id -> word 0 of its records

    # UpdateSink ------------------------------------------------------------------------
    def quote(self, instrument_id, bid, ask, bid_qty, ask_qty, exchange_ts_ns, flags=0):
        n = self.n
        if n == self.cap:
            self.flush()
            n = 0
        seq = self.seq + 1
        try:
            PACK_QUOTE.pack_into(self.buf, n << SLOT_SHIFT, instrument_id, self.venue_id, _QUOTE,
                                 flags, bid, ask, bid_qty, ask_qty, exchange_ts_ns, self.recv_ns,
                                 seq)
        except struct.error:
            self.reject("pack_error")
            return
        self.seq = seq
        self.n = n + 1
        self.seen[instrument_id] = self.recv_ns

    def funding(self, instrument_id, rate, next_funding_ns, interval_s, mark_price, exchange_ts_ns):
        n = self.n
        if n == self.cap:
            self.flush()
            n = 0
        seq = self.seq + 1
        try:
            PACK_FUNDING.pack_into(self.buf, n << SLOT_SHIFT, instrument_id, self.venue_id,
                                   _FUNDING, 0 if exchange_ts_ns else _NO_TS, rate,
                                   next_funding_ns, interval_s, mark_price, exchange_ts_ns,
                                   self.recv_ns, seq)
        except (struct.error, OverflowError):
            self.reject("pack_error")
            return
        self.seq = seq
        self.n = n + 1
        self.fundings += 1
        self.seen[instrument_id] = self.recv_ns

    def status(self, status, reason=0, instrument_id=0):
        n = self.n
        if n == self.cap:
            self.flush()
            n = 0
        self.seq += 1
        PACK_STATUS.pack_into(self.buf, n << SLOT_SHIFT, instrument_id, self.venue_id, _STATUS,
                              _NO_TS, int(status), int(reason), 0, self.recv_ns, self.seq)
        self.n = n + 1
        self.statuses += 1

    def reject(self, reason, n=1):
        r = self.rejects
        r[reason] = r.get(reason, 0) + n

    def book(self, instrument_id, bids, asks, snapshot, exchange_ts_ns, update_id=0):
        """Apply one depth message of an instrument (``bids``/``asks``: [price, qty] rows,
        qty 0 removes; ``snapshot`` replaces the book) and publish its top-N change as LEVEL
        records, then a QUOTE when the top moved. Returns the ``FullBook`` (for a checksum
        check) or None when the message was refused. One numba call applies, diffs and
        packs (``FullBook.publish``: ``publish_message``)."""
        if self.depth <= 0:
            self.reject("unsupported")
            return None
        if not snapshot and instrument_id not in self.ready:
            self.reject("no_snapshot")
            return None
        fb = self.books.get(instrument_id)
        if fb is None:
            fb = self.books[instrument_id] = FullBook(self.depth)
        try:
            levels, nb = levels_array(bids, asks)
        except BookError:
            levels = None
        n = self.n
        head = self._heads.get(instrument_id)
        if head is None:
            head = self._heads[instrument_id] = mu_head(instrument_id, self.venue_id, 0, 0)
        r = GARBAGE if levels is None else publish_message(
            fb.f, fb.i, levels, nb, snapshot, self.words, n, self.cap - n, head, update_id,
            exchange_ts_ns, self.recv_ns, self.seq)
        if r < 0:
            if r != NO_ROOM:            # GARBAGE / CROSSED: refused, the book resyncs
                self.reject("bad_price")
                self.book_broken(instrument_id, BookFault.BAD_DATA)
                return None
            self.flush()                # applied; the records go after a flush
            n = 0
            fb.pack(snapshot, self.words, 0, head, update_id, exchange_ts_ns, self.recv_ns,
                    self.seq)
            r = int(fb.io[1]) << 32 | int(fb.io[2])
        records = r >> 32
        fb.messages += 1
        fb.update_id = update_id
        self.ready.add(instrument_id)
        self.book_messages += 1
        self.seq += records
        self.n = n + records
        self.book_levels += r & 0xFFFFFFFF
        self.seen[instrument_id] = self.recv_ns
        return fb

    def book_broken(self, instrument_id, fault, socket_index=0):
        """A venue rule broke: the book is not ready until its next snapshot; STATUS STALE
        (BOOK_RESYNC | fault) for the instrument, unless it was not ready already."""
        if self._broken(instrument_id, fault):
            self.status(VenueStatus.STALE, pack_status_reason(StatusReason.BOOK_RESYNC,
                                                              socket_index, fault),
                        instrument_id=instrument_id)

    # output ---------------------------------------------------------------------------
    def flush(self) -> None:
        n = self.n
        if n:
            self.n = 0
            k = self.ring.push_words(self.words, n, self.push_timeout)
            if k != n:
                self.dropped += n - k

    @property
    def records(self) -> int:
        return self.seq

    @property
    def quotes(self) -> int:
        return self.seq - self.fundings - self.statuses


class PrintSink(RingSink):
    """Same packing as ``RingSink``; ``flush`` writes each record as one JSON line instead of
    pushing it (``arbpipe feed --print``). ``names``: instrument id -> (native, canonical)."""

    def __init__(self, out, venue: str, venue_id: int, names: dict[int, tuple[str, str]],
                 on_broken=None, depth: int = 0):
        super().__init__(None, venue_id, depth=depth)
        self.out = out
        self.venue = venue
        self.names = names
        self.on_broken = on_broken
        self.broken = False

    def flush(self) -> None:
        n = self.n
        if not n:
            return
        self.n = 0
        if self.broken:
            return
        recs = np.frombuffer(self.buf, MARKET_UPDATE, count=n).tolist()
        # LEVEL records are shown as one "book" line per message (``book``), not one by one
        self._write([json.dumps(self.record_json(rec, k), separators=(",", ":"))
                     for k, rec in enumerate(recs) if rec[2] != _LEVEL])

    def _write(self, lines: list[str]) -> None:
        if not lines or self.broken:
            return
        try:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.broken = True
            if self.on_broken is not None:
                self.on_broken()

    def book(self, instrument_id, bids, asks, snapshot, exchange_ts_ns, update_id=0):
        """As ``RingSink.book``; after a message that changed the top N, one line
        ``{"kind": "book", "venue", "symbol", "bids": [[price, qty], ...], "asks": ...}``
        (best first, at most ``depth`` levels a side)."""
        self.flush()
        before = self.book_levels
        fb = super().book(instrument_id, bids, asks, snapshot, exchange_ts_ns, update_id)
        self.flush()
        if fb is not None and self.book_levels != before:
            b, a = fb.top()
            self._write([json.dumps({"kind": "book", "venue": self.venue,
                                     "symbol": self.names.get(instrument_id, (None,))[0],
                                     "bids": b.tolist(), "asks": a.tolist()},
                                    separators=(",", ":"))])
        return fb

    def record_json(self, rec: tuple, k: int) -> dict:
        """Record ``k`` of the buffer (``rec``: its MARKET_UPDATE fields) as a JSON-able dict."""
        buf = self.buf
        iid, vid, kind, flags, bid, ask, bq, aq, exch, recv, seq = rec
        native, canonical = self.names.get(iid, (None, None))
        d = {"venue": self.venue, "symbol": native, "instrument": canonical,
             "instrument_id": iid, "market": "perp" if iid & PERP_ID_BIT else "spot",
             "kind": Kind(kind).name.lower()}
        if kind == _QUOTE:
            d.update(bid=bid, ask=ask, bid_qty=bq, ask_qty=aq)
        elif kind == _FUNDING:
            _, _, _, _, rate, nxt, interval, mark, _, _, _ = PACK_FUNDING.unpack_from(
                buf, k << SLOT_SHIFT)
            d.update(funding_rate=rate, next_funding_ts=nxt, funding_interval_s=interval,
                     mark_price=mark)
        else:
            _, _, _, _, st, reason, _, _, _ = PACK_STATUS.unpack_from(buf, k << SLOT_SHIFT)
            code = status_reason_code(reason)
            d.update(status=VenueStatus(st).name if st in VenueStatus._value2member_map_ else st,
                     reason=StatusReason(code).name.lower()
                     if code in StatusReason._value2member_map_ else reason,
                     socket=status_reason_socket(reason))
            if code == StatusReason.BOOK_RESYNC:
                f = status_reason_fault(reason)
                d["fault"] = BookFault(f).name.lower() if f in BookFault._value2member_map_ \
                    else f
        d.update(exchange_ts=exch, recv_ts=recv, seq=seq, flags=flags)
        return d
