"""``FullBook``: a feed handler's book of one instrument, at the depth the venue publishes.

``apply(bids, asks, snapshot)`` applies one depth message (numpy ``(k, 2)`` float arrays
of (price, qty) rows; qty 0 removes a level; ``snapshot`` replaces the book) and returns
the rows that turn the previous top N into the new one (``changes``: side, price, qty; a
snapshot returns the whole new top N), so that a consumer that keeps only N levels per side
stays equal to this book's top N. ``pack_levels`` writes those rows as LEVEL records.

The feed's hot path is ``publish`` (``publish_message``): the same apply, top-N change and
packing (LEVEL records, then the QUOTE when the top moved) in one numba call per message,
straight into the sink's word buffer, from one float64 array of both sides
(``levels_array``; adapters that parse levels themselves hand them over with
``split_levels``, ``arbpipe.books.parse`` from the raw JSON bytes).

Capacity: ``CAPACITY`` levels per side (the deepest book any venue publishes is 5000 on
Binance's REST snapshot; a side that is full drops its worst level for a better one).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from arbpipe.books.kernels import apply_level, apply_levels, crossed, top_diff
from arbpipe.transport.casts import f64_bits
from shm_layouts import words as W
from shm_layouts.records import Flag, Kind

CAPACITY = 5000
BID, ASK = 0, 1
_SNAPSHOT, _ASK, _END = int(Flag.SNAPSHOT), int(Flag.BOOK_ASK), int(Flag.BOOK_END)
_EMPTY = np.zeros((0, 2), np.float64)
_QUOTE_KIND = int(Kind.QUOTE)
_LEVEL_KIND = int(Kind.LEVEL)
# ``publish`` answers below 0 (>= 0: records << 32 | LEVEL records, all written)
GARBAGE, CROSSED, NO_ROOM = -1, -2, -3


class BookError(ValueError):
    """A message that leaves the book crossed (best bid >= best ask) or holds numbers that
    are not finite positive prices / non-negative sizes."""


class FullBook:
    def __init__(self, depth: int, capacity: int = CAPACITY):
        if depth < 1:
            raise ValueError(f"depth {depth}: must be >= 1")
        self.depth = depth
        # every array is a view of two buffers (``f``: floats, ``i``: ints), so that the
        # per-message kernel takes 2 arrays instead of 11 (numba types each argument per call)
        d2 = 2 * depth
        self.f = f = np.zeros(4 * capacity + 2 * d2 + 2 * d2 * 2, np.float64)
        self.px = f[:2 * capacity].reshape(2, capacity)
        self.qty = f[2 * capacity:4 * capacity].reshape(2, capacity)
        o = 4 * capacity
        self.top_px = f[o:o + d2].reshape(2, depth)        # the top N last published
        self.top_qty = f[o + d2:o + 2 * d2].reshape(2, depth)
        self.diff = f[o + 2 * d2:].reshape(2, d2, 2)
        self.i = i = np.zeros(11, np.int64)
        self.cnt = i[0:2].reshape(2, 1)
        self.top_n = i[2:4]
        self.rows = i[4:6]                                 # rows of ``diff`` per side to publish
        self.io = i[6:9]                 # publish: last seq, records written, LEVEL records
        i[9], i[10] = capacity, depth
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

    def publish(self, levels: np.ndarray, nb: int, snapshot: bool, words, n0: int, room: int,
                head: int, update_id: int, ex_ts: int, recv_ts: int, seq: int) -> int:
        """``apply`` and the packing of its records in one kernel call: ``levels`` (k, 2)
        float64, bids first (``nb`` rows) then asks. Writes the LEVEL records of the top-N
        change (and the QUOTE when the top moved) at record ``n0`` of ``words`` when they fit
        in ``room`` records; ``head``: the records' word 0 without kind and flags. Returns
        ``records << 32 | levels`` (records written, QUOTE included; seq goes on from
        ``seq``), NO_ROOM (the book is applied and its rows kept: flush, then ``pack``),
        GARBAGE (nothing applied) or CROSSED."""
        return publish_message(self.f, self.i, levels, nb, snapshot, words, n0, room, head,
                               update_id, ex_ts, recv_ts, seq)

    def pack(self, snapshot: bool, words, n0: int, head: int, update_id: int, ex_ts: int,
             recv_ts: int, seq: int) -> None:
        """The records of the last ``publish`` that answered NO_ROOM; ``io``: last seq,
        records written, LEVEL records."""
        self.io[0] = seq
        pack_message(self.px, self.qty, self.diff, self.rows, snapshot, words, n0, head,
                     update_id, self.depth, ex_ts, recv_ts, self.io)


_SPLIT: tuple = (None, None, _EMPTY, 0)    # the last ``split_levels``: (bids, asks, rows, nb)


def split_levels(rows: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """(bids, asks) = (``rows[:nb]``, ``rows[nb:]``) of a (k, 2) float64 array of both
    sides, for ``sink.book``; remembered, so that ``levels_array`` hands ``rows`` back
    instead of joining the two again (one tuple, swapped whole: safe across threads)."""
    global _SPLIT
    b, a = rows[:nb], rows[nb:]
    _SPLIT = (b, a, rows, nb)
    return b, a


def levels_array(bids, asks) -> tuple[np.ndarray, int]:
    """(rows, nb): the (k, 2) float64 rows of ``bids`` then ``asks`` in one conversion
    (lists of [price, qty] numbers or numeric strings), nb the bid rows; BookError as
    ``_levels`` (the range checks are the kernel's)."""
    last = _SPLIT
    if bids is last[0] and asks is last[1]:
        return last[2], last[3]                          # from ``split_levels``
    if type(bids) is np.ndarray and type(asks) is np.ndarray and bids.ndim == asks.ndim == 2 \
            and bids.shape[1] == asks.shape[1] == 2 and bids.dtype == asks.dtype == np.float64:
        return np.concatenate((bids, asks)), len(bids)    # parsed already (books.parse)
    if type(bids) is list and type(asks) is list:
        nb = len(bids)
        if nb + len(asks) == 0:
            return _EMPTY, 0
        try:
            a = np.asarray(bids + asks, dtype=np.float64)   # one conversion for both sides
            if a.ndim == 2 and a.shape[1] >= 2 and (nb == 0 or nb == len(a) or
                                                     len(bids[0]) == len(asks[0])):
                return (a if a.shape[1] == 2 else np.ascontiguousarray(a[:, :2])), nb
        except (ValueError, TypeError, OverflowError):
            pass                        # ragged or garbage: per side, which says why
    b, s = _levels(bids), _levels(asks)
    return np.ascontiguousarray(np.concatenate((b, s))), len(b)


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


@njit(cache=True, nogil=True, boundscheck=False)
def publish_message(f, i, lv, nb, snapshot, words, n0, room, head, update_id, ex_ts, recv_ts,
                    seq):
    """``FullBook.publish`` in one call (one numba dispatch per message): check, apply both
    sides, the top-N change per side into ``diff`` / ``rows``, then ``pack_message``.
    ``f`` / ``i``: the book's buffers (``FullBook.__init__`` lays them out)."""
    cap, depth = i[9], i[10]
    d2 = 2 * depth
    px = f[:2 * cap].reshape((2, cap))
    qty = f[2 * cap:4 * cap].reshape((2, cap))
    o = 4 * cap
    top_px = f[o:o + d2].reshape((2, depth))
    top_qty = f[o + d2:o + 2 * d2].reshape((2, depth))
    diff = f[o + 2 * d2:].reshape((2, d2, 2))
    cnt = i[0:2].reshape((2, 1))
    top_n = i[2:4]
    rows = i[4:6]
    io = i[6:9]
    io[0] = seq
    k = lv.shape[0]
    for r in range(k):                  # all checked before anything is applied
        p, q = lv[r, 0], lv[r, 1]
        if not (0.0 < p < np.inf and 0.0 <= q < np.inf):
            return GARBAGE
    if snapshot:
        cnt[0, 0] = 0
        cnt[1, 0] = 0
    for r in range(k):
        s = 0 if r < nb else 1
        apply_level(px[s], qty[s], cnt[s], s == 1, lv[r, 0], lv[r, 1])
    if cnt[0, 0] > 0 and cnt[1, 0] > 0 and px[0, 0] >= px[1, 0]:
        return CROSSED
    moved = False
    m = 0
    for s in range(2):
        n = min(cnt[s, 0], depth)
        on = top_n[s]
        if (on > 0) != (n > 0) or (n > 0 and (top_px[s, 0] != px[s, 0]
                                               or top_qty[s, 0] != qty[s, 0])):
            moved = True                # the best level of this side changed
        if snapshot:
            for t in range(n):
                diff[s, t, 0] = px[s, t]
                diff[s, t, 1] = qty[s, t]
            rows[s] = n
        else:
            rows[s] = _sorted_diff(top_px[s], top_qty[s], on, px[s], qty[s], n, diff[s], s == 1)
        for t in range(n):
            top_px[s, t] = px[s, t]
            top_qty[s, t] = qty[s, t]
        top_n[s] = n
        m += rows[s]
    if snapshot and m == 0:             # an empty book still says "reset" once
        diff[0, 0, 0] = 0.0
        diff[0, 0, 1] = 0.0
        rows[0] = 1
        m = 1
    quote = moved and cnt[0, 0] > 0 and cnt[1, 0] > 0
    io[1] = 0 if quote else -1          # pack_message: -1 = no QUOTE
    # flushes where the record-by-record packing did: m levels keep a slot for the QUOTE
    if (m + 1 > room) if m > 0 else (quote and room == 0):
        io[2] = m
        return NO_ROOM
    pack_message(px, qty, diff, rows, snapshot, words, n0, head, update_id, depth, ex_ts,
                 recv_ts, io)
    return io[1] << 32 | m


@njit(cache=True, nogil=True, boundscheck=False)
def _sorted_diff(opx, oqty, on, npx, nqty, nn, out, ask):
    """``top_diff`` (same rows, same order) in one pass over each: both tops are sorted
    the same way with distinct prices, so a cursor replaces the inner scan."""
    m = 0
    b = 0
    for a in range(on):
        p = opx[a]
        while b < nn and ((npx[b] < p) if ask else (npx[b] > p)):
            b += 1
        if not (b < nn and npx[b] == p):
            out[m, 0] = p
            out[m, 1] = 0.0
            m += 1
    a = 0
    for b in range(nn):
        p = npx[b]
        while a < on and ((opx[a] < p) if ask else (opx[a] > p)):
            a += 1
        if not (a < on and opx[a] == p and oqty[a] == nqty[b]):
            out[m, 0] = p
            out[m, 1] = nqty[b]
            m += 1
    return m


@njit(cache=True, nogil=True, boundscheck=False)
def pack_message(px, qty, diff, rows, snapshot, words, n0, head, update_id, depth, ex_ts,
                 recv_ts, io):
    """The LEVEL records of ``diff[s, :rows[s]]`` (bids, then asks; SNAPSHOT on the first,
    BOOK_END on the last) and, when ``io[1]`` is 0, a QUOTE of the book's top, at record
    ``n0``; ``io``: seq in -> last seq, records written, LEVEL records."""
    quote = io[1] == 0
    seq = io[0]
    lhead = head | (_LEVEL_KIND & W.MU_KIND_MASK) << W.MU_KIND_SHIFT
    m = rows[0] + rows[1]
    last_side = 1 if rows[1] > 0 else 0
    o = n0 * W.MU_WORDS
    first = True
    for s in range(2):
        for r in range(rows[s]):
            f = _ASK if s == 1 else 0
            if first and snapshot:
                f |= _SNAPSHOT
            first = False
            if s == last_side and r == rows[s] - 1:
                f |= _END
            words[o + W.MU_HEAD] = lhead | (f & W.MU_FLAGS_MASK) << W.MU_FLAGS_SHIFT
            words[o + W.MU_LEVEL_PRICE] = f64_bits(diff[s, r, 0])
            words[o + W.MU_LEVEL_QTY] = f64_bits(diff[s, r, 1])
            words[o + W.MU_LEVEL_UPDATE_ID] = update_id
            words[o + W.MU_LEVEL_DEPTH] = depth & W.MU_LEVEL_DEPTH_MASK
            words[o + W.MU_EXCHANGE_TS] = ex_ts
            words[o + W.MU_RECV_TS] = recv_ts
            seq += 1
            words[o + W.MU_SEQ] = seq
            o += W.MU_WORDS
    n = m
    if quote:
        words[o + W.MU_HEAD] = head | (_QUOTE_KIND & W.MU_KIND_MASK) << W.MU_KIND_SHIFT
        words[o + W.MU_BID] = f64_bits(px[0, 0])
        words[o + W.MU_ASK] = f64_bits(px[1, 0])
        words[o + W.MU_BID_QTY] = f64_bits(qty[0, 0])
        words[o + W.MU_ASK_QTY] = f64_bits(qty[1, 0])
        words[o + W.MU_EXCHANGE_TS] = ex_ts
        words[o + W.MU_RECV_TS] = recv_ts
        seq += 1
        words[o + W.MU_SEQ] = seq
        n += 1
    io[0] = seq
    io[1] = n
    io[2] = m
