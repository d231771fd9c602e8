"""``FullBook``: a feed handler's book of one instrument, at the depth the venue publishes.

``apply(bids, asks, snapshot)`` applies one depth message (numpy ``(k, 2)`` float arrays
of (price, qty) rows; qty 0 removes a level; ``snapshot`` replaces the book) and returns
the rows that turn the previous top N into the new one (``changes``: side, price, qty; a
snapshot returns the whole new top N), so that a consumer that keeps only N levels per side
stays equal to this book's top N. ``pack_levels`` writes those rows as LEVEL records.

Capacity: ``CAPACITY`` levels per side (the deepest book any venue publishes is 5000 on
Binance's REST snapshot; a side that is full drops its worst level for a better one).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from arbpipe.books.kernels import apply_levels, crossed, top_diff
from arbpipe.transport.casts import f64_bits
from shm_layouts import words as W
from shm_layouts.records import Flag

CAPACITY = 5000
BID, ASK = 0, 1
_SNAPSHOT, _ASK, _END = int(Flag.SNAPSHOT), int(Flag.BOOK_ASK), int(Flag.BOOK_END)
_EMPTY = np.zeros((0, 2), np.float64)


class BookError(ValueError):
    """A message that leaves the book crossed (best bid >= best ask) or holds numbers that
    are not finite positive prices / non-negative sizes."""


class FullBook:
    def __init__(self, depth: int, capacity: int = CAPACITY):
        if depth < 1:
            raise ValueError(f"depth {depth}: must be >= 1")
        self.depth = depth
        self.px = np.zeros((2, capacity), np.float64)
        self.qty = np.zeros((2, capacity), np.float64)
        self.cnt = np.zeros((2, 1), np.int64)
        self.top_px = np.zeros((2, depth), np.float64)     # the top N last published
        self.top_qty = np.zeros((2, depth), np.float64)
        self.top_n = np.zeros(2, np.int64)
        self.diff = np.zeros((2, 2 * depth, 2), np.float64)
        self.update_id = 0           # the venue's id of the last applied message
        self.messages = 0

    def clear(self) -> None:
        self.cnt[:] = 0
        self.top_n[:] = 0

    def side(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(prices, sizes) of side ``s`` (BID or ASK), best first, every level held."""
        n = int(self.cnt[s, 0])
        return self.px[s, :n], self.qty[s, :n]

    def top(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(bids, asks) as (k, 2) arrays of the best ``n`` levels (default: depth)."""
        n = self.depth if n is None else n
        out = []
        for s in (BID, ASK):
            k = min(int(self.cnt[s, 0]), n)
            out.append(np.column_stack((self.px[s, :k], self.qty[s, :k])))
        return out[0], out[1]

    def apply(self, bids, asks, snapshot: bool = False) -> tuple[list, bool]:
        """Apply a message; returns (changes, top_of_book_changed). ``changes``: per side
        (BID, ASK) a (k, 2) array of rows to publish. Raises BookError (the book is then
        unusable until the next snapshot: the caller resyncs)."""
        b = _levels(bids)
        a = _levels(asks)
        if snapshot:
            self.cnt[:] = 0
        apply_levels(self.px[BID], self.qty[BID], self.cnt[BID], False, b, len(b))
        apply_levels(self.px[ASK], self.qty[ASK], self.cnt[ASK], True, a, len(a))
        if crossed(self.px[BID], self.cnt[BID, 0], self.px[ASK], self.cnt[ASK, 0]):
            raise BookError(f"crossed book: bid {self.px[BID, 0]} >= ask {self.px[ASK, 0]}")
        self.messages += 1
        changes = []
        moved = False
        for s in (BID, ASK):
            n = min(int(self.cnt[s, 0]), self.depth)
            tp, tq = self.top_px[s], self.top_qty[s]
            on = int(self.top_n[s])
            if (on > 0) != (n > 0) or (n > 0 and (tp[0] != self.px[s, 0]
                                                   or tq[0] != self.qty[s, 0])):
                moved = True            # the best level of this side changed
            if snapshot:
                rows = np.column_stack((self.px[s, :n], self.qty[s, :n]))
            else:
                m = top_diff(tp, tq, on, self.px[s], self.qty[s], n, self.diff[s])
                rows = self.diff[s, :m]
            tp[:n] = self.px[s, :n]
            tq[:n] = self.qty[s, :n]
            self.top_n[s] = n
            changes.append(rows)
        return changes, moved


def _levels(rows) -> np.ndarray:
    """(k, 2) float64 from a list of [price, qty] pairs (numbers or numeric strings);
    BookError when a price is not finite and > 0 or a size not finite and >= 0."""
    if rows is None or len(rows) == 0:
        return _EMPTY
    try:
        a = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as e:   # OverflowError: a JSON int > 1e308
        raise BookError(f"levels: {e}") from None
    if a.ndim != 2 or a.shape[1] < 2:
        raise BookError(f"levels: expected [price, qty] rows, got shape {a.shape}")
    a = a[:, :2]
    if not (np.isfinite(a).all() and (a[:, 0] > 0).all() and (a[:, 1] >= 0).all()):
        raise BookError("levels: a price or size is not a finite positive number")
    return a


@njit(cache=True, nogil=True, boundscheck=False)
def pack_levels(words, n0, rows, m, head, flags, update_id, depth, ex_ts, recv_ts, seq0):
    """Write ``rows[:m]`` as LEVEL records at record ``n0`` of ``words``: ``head`` is the
    record's word 0 without flags, ``flags`` the flags of every row (side, SNAPSHOT on the
    first only); returns the last seq used."""
    seq = seq0
    for r in range(m):
        o = (n0 + r) * W.MU_WORDS
        f = flags if r == 0 else flags & ~_SNAPSHOT
        words[o + W.MU_HEAD] = head | (f & W.MU_FLAGS_MASK) << W.MU_FLAGS_SHIFT
        words[o + W.MU_LEVEL_PRICE] = f64_bits(rows[r, 0])
        words[o + W.MU_LEVEL_QTY] = f64_bits(rows[r, 1])
        words[o + W.MU_LEVEL_UPDATE_ID] = update_id
        words[o + W.MU_LEVEL_DEPTH] = depth & W.MU_LEVEL_DEPTH_MASK
        words[o + W.MU_EXCHANGE_TS] = ex_ts
        words[o + W.MU_RECV_TS] = recv_ts
        seq += 1
        words[o + W.MU_SEQ] = seq
    return seq

