"""The ``books`` segment (layout: ``shm_layouts.books``): created by the detector, read by
anyone. ``BooksSegment.create`` sizes it for a config's instruments, legs and depth and
hands the detector the int64 words of its blocks; ``read_book`` copies one block under the
seqlock (a copy taken while the detector changed the block is taken again)."""
from __future__ import annotations

import time

import numpy as np

from arbpipe.transport import segments
from shm_layouts import books as BK
from shm_layouts import ring as L
from shm_layouts.records import BookFault

SPINS = 10_000          # copies tried before giving up on a block the writer holds odd


class BooksSegment:
    def __init__(self, seg: segments.Segment):
        self.seg = seg
        meta = seg.words[BK.BOOKS_META // 8:BK.BOOKS_META // 8 + 4]
        self.ni, self.nl, self.depth, self.bw = (int(x) for x in meta)
        n = self.ni * self.nl * self.bw
        self.blocks = seg.words[BK.BOOKS_DATA // 8:BK.BOOKS_DATA // 8 + n]

    @classmethod
    def create(cls, instance: str, ni: int, nl: int, depth: int) -> "BooksSegment":
        """``ni``: instrument ids + 1 (row 0 unused), ``nl`` legs, top ``depth`` levels."""
        bw = BK.block_words(max(depth, 1))
        size = BK.segment_size(ni, nl, max(depth, 1))
        h = segments.HeaderInfo(L.MAGIC, L.LAYOUT_VERSION, BK.BOOKS_KIND, 8, ni * nl, 0, 0, 0,
                                0, 0, 0, 0, BK.BOOKS_DATA, BK.BOOKS_NAME)
        seg = segments.Segment.create(instance, BK.BOOKS_NAME, size, h, reclaim_stale=True)
        o = BK.BOOKS_META // 8
        seg.words[o + BK.META_NI] = ni
        seg.words[o + BK.META_NL] = nl
        seg.words[o + BK.META_DEPTH] = depth
        seg.words[o + BK.META_BLOCK_WORDS] = bw
        return cls(seg)

    @classmethod
    def attach(cls, instance: str | None = None) -> "BooksSegment":
        return cls(segments.Segment.attach(instance or segments.default_instance(),
                                           BK.BOOKS_NAME, kind=BK.BOOKS_KIND))

    def read(self, instrument_id: int, leg: int) -> dict | None:
        """A consistent copy of one book: {"state", "fault", "resyncs", "updated_ns",
        "exchange_ns", "update_id", "bids": [[px, qty], ...], "asks": ...} (best first), or
        None while the writer keeps the block odd past ``SPINS`` tries."""
        if not (0 < instrument_id < self.ni and 0 <= leg < self.nl):
            raise IndexError(f"no book for instrument {instrument_id}, leg {leg}")
        b = (instrument_id * self.nl + leg) * self.bw
        src = self.blocks[b:b + self.bw]
        copy = np.empty(self.bw, np.int64)
        for k in range(SPINS):
            v1 = int(src[BK.B_VERSION])
            if v1 & 1 == 0:
                copy[:] = src
                if int(src[BK.B_VERSION]) == v1:
                    return _decode(copy, self.depth)
            if k % 100 == 99:
                time.sleep(0)
        return None

    def close(self, unlink: bool = False) -> None:
        inst, created = self.seg.instance, self.seg.created
        self.blocks = None
        self.seg.close()
        if unlink and created:
            segments.unlink(inst, BK.BOOKS_NAME)


def _decode(w: np.ndarray, depth: int) -> dict:
    f = w.view(np.float64)
    nb, na = int(w[BK.B_N_BID]), int(w[BK.B_N_ASK])
    fault = int(w[BK.B_FAULT])
    return {"state": BK.BookState(int(w[BK.B_STATE])).name.lower(),
            "fault": BookFault(fault).name.lower() if fault in BookFault._value2member_map_
            else fault,
            "resyncs": int(w[BK.B_RESYNCS]), "updated_ns": int(w[BK.B_UPDATED_NS]),
            "exchange_ns": int(w[BK.B_EXCHANGE_NS]), "update_id": int(w[BK.B_UPDATE_ID]),
            "bids": np.column_stack((f[BK.bid_px(depth)][:nb], f[BK.bid_qty(depth)][:nb])).tolist(),
            "asks": np.column_stack((f[BK.ask_px(depth)][:na], f[BK.ask_qty(depth)][:na])).tolist()}
