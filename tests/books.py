"""What the L2-book integration tests of several venues share: the feed's sink that keeps
each applied top N, a ring reader that rebuilds the top N from LEVEL records as the detector
does, the simulator model's books to compare them with, and the faults a sink counted."""
from __future__ import annotations

import numpy as np

from arbpipe.feeds.sinks import RingSink
from arbpipe.sim.market import Market
from shm_layouts import MARKET_UPDATE, Kind
from shm_layouts.records import (MARKET_UPDATE_LEVEL, MARKET_UPDATE_STATUS, BookFault, Flag,
                                 StatusReason, status_reason_code)

N = 5                                   # top N levels kept per side
_SNAP, _ASK, _END = int(Flag.SNAPSHOT), int(Flag.BOOK_ASK), int(Flag.BOOK_END)


class RecordingSink(RingSink):
    """The feed's own ``RingSink``, also keeping (instrument, update id, top N) after each
    message it applied."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.tops: list[tuple[int, int, list, list]] = []

    def book(self, instrument_id, bids, asks, snapshot, exchange_ts_ns, update_id=0):
        fb = super().book(instrument_id, bids, asks, snapshot, exchange_ts_ns, update_id)
        if fb is not None:
            b, a = fb.top()
            self.tops.append((instrument_id, update_id, b.tolist(), a.tolist()))
        return fb


class Consumer:
    """A reader of the ring that keeps the top N of each book from its LEVEL records (a
    SNAPSHOT flag clears, qty 0 removes, truncate to N; a BOOK_RESYNC status drops the book
    until its next snapshot); ``tops`` after each BOOK_END."""

    def __init__(self, ring):
        self.ring = ring
        self.out = np.zeros(ring.capacity * 8, np.int64)
        self.books: dict[int, tuple[dict, dict]] = {}
        self.tops: list[tuple[int, list, list]] = []
        self.records: list[np.ndarray] = []

    def drain(self) -> None:
        while True:
            n = self.ring.pop_words(self.out)
            if not n:
                return
            recs = self.out[:n * 8].copy().view(MARKET_UPDATE)
            self.records.append(recs)
            lv = recs.view(MARKET_UPDATE_LEVEL)
            st = recs.view(MARKET_UPDATE_STATUS)
            for k in range(len(recs)):
                kind = int(recs["kind"][k])
                iid = int(recs["instrument_id"][k])
                if kind == Kind.STATUS:
                    if iid and status_reason_code(int(st["status_reason"][k])) == \
                            StatusReason.BOOK_RESYNC:
                        self.books.pop(iid, None)
                    continue
                if kind != Kind.LEVEL:
                    continue
                flags = int(lv["flags"][k])
                if flags & _SNAP:
                    self.books[iid] = ({}, {})
                book = self.books[iid]           # a diff of a book we do not hold: KeyError
                side = book[1] if flags & _ASK else book[0]
                px, qty = float(lv["price"][k]), float(lv["qty"][k])
                if qty == 0.0:
                    side.pop(px, None)
                else:
                    side[px] = qty
                for s, rev in ((book[0], True), (book[1], False)):
                    for p in sorted(s, reverse=rev)[N:]:
                        del s[p]
                if flags & _END:
                    self.tops.append((iid, [[p, book[0][p]] for p in sorted(book[0], reverse=True)],
                                      [[p, book[1][p]] for p in sorted(book[1])]))

    def all(self) -> np.ndarray:
        return np.concatenate(self.records) if self.records else np.zeros(0, MARKET_UPDATE)


def model_checker(cfg, venue: str, natives: dict[int, str], upto: int):
    """check(tops): every (iid, bids, asks) is the model's top N of a quote of that
    instrument (the initial one or a published one before ``upto``), quotes in order."""
    vm = Market(cfg).venue(venue)
    cands: dict[int, list] = {}
    for iid, native in natives.items():
        im = vm.by_native[native]
        qs = [vm.initial(im.idx)] + [vm.quote(n) for n in range(upto) if vm.inst_of(n) == im.idx]
        cands[iid] = [([[im.px_float(p), im.base_qty(n)] for p, n in b],
                       [[im.px_float(p), im.base_qty(n)] for p, n in a])
                      for b, a in (im.book(q, N) for q in qs)]

    def check(tops, what):
        pos = {iid: 0 for iid in cands}
        for k, (iid, b, a) in enumerate(tops):
            c, j = cands[iid], pos[iid]
            while j < len(c) and c[j] != (b, a):
                j += 1
            assert j < len(c), (f"{what} #{k} of {natives[iid]} is no model book after quote "
                                f"#{pos[iid]}: {b} {a}")
            pos[iid] = j
    return check


def faults_of(sink) -> dict[str, int]:
    return {BookFault(k).name: v for k, v in sink.resyncs_by_fault.items()}
