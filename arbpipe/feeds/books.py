"""The feed handler's side of L2 books: one ``FullBook`` per instrument, whether each is
ready, and what a depth message or a broken rule turns into.

Adapters never touch rings: they call the sink's ``book(...)`` with a message's levels and
``book_broken(...)`` when a venue rule is broken (a gap, a checksum mismatch, ...); the
sinks (``arbpipe.feeds.sinks``, ``arbpipe.feeds.venues.sink``) mix in ``BookKeeping`` and
publish what it decides:

* a snapshot (``snapshot=True``) makes the book ready: its whole top N goes out (first
  record flagged SNAPSHOT, last BOOK_END) and a QUOTE of its top;
* a diff of a ready book goes out as the LEVEL records of its top-N change (none when the
  top N did not change) and a QUOTE when the best level of a side moved;
* a diff of a book that is not ready is refused (reject ``no_snapshot``): the adapter was
  told to resync, and the next snapshot makes it ready again;
* a broken rule marks the book not ready, counts the fault (``resyncs_by_fault``) and
  publishes STATUS STALE for that instrument with reason BOOK_RESYNC | fault, so that the
  detector stops using its quotes until the next snapshot's QUOTE.
"""
from __future__ import annotations

from arbpipe.books.full import BookError, FullBook
from shm_layouts.records import BookFault


class BookKeeping:
    """Mixed into a sink: ``init_books(depth)`` first (depth 0: books off)."""

    def init_books(self, depth: int) -> None:
        self.depth = depth
        self.books: dict[int, FullBook] = {}
        self.ready: set[int] = set()
        self.book_messages = 0
        self.book_levels = 0
        self.book_resyncs = 0
        self.resyncs_by_fault: dict[int, int] = {}

    def book_of(self, instrument_id: int) -> FullBook | None:
        """The instrument's full book (None before its first message)."""
        return self.books.get(instrument_id)

    def is_ready(self, instrument_id: int) -> bool:
        return instrument_id in self.ready

    def _apply(self, instrument_id: int, bids, asks, snapshot: bool, update_id: int):
        """(book, changes, top moved) for a message to publish, or None (refused)."""
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
            changes, moved = fb.apply(bids, asks, snapshot)
        except BookError:
            self.reject("bad_price")
            self.book_broken(instrument_id, BookFault.BAD_DATA)
            return None
        fb.update_id = update_id
        self.ready.add(instrument_id)
        self.book_messages += 1
        return fb, changes, moved

    def _broken(self, instrument_id: int, fault: int) -> bool:
        """Mark not ready and count; False when it was not ready already (nothing to say)."""
        was = instrument_id in self.ready
        self.ready.discard(instrument_id)
        fb = self.books.get(instrument_id)
        if fb is not None:
            fb.clear()
        self.book_resyncs += 1
        self.resyncs_by_fault[int(fault)] = self.resyncs_by_fault.get(int(fault), 0) + 1
        return was

    def book_counters(self) -> dict:
        return {"books": len(self.books) if self.depth > 0 else 0,
                "books_ready": len(self.ready), "book_messages": self.book_messages,
                "book_levels": self.book_levels, "book_resyncs": self.book_resyncs,
                "resyncs_by_fault": dict(self.resyncs_by_fault)}
