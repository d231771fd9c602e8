"""The strategy's own live top of book, kept by peeking the feed rings read-only.

``LiveBook`` holds, per (canonical instrument, leg), the best bid / ask, their quantities
and the receive time of the quote, in two arrays whose last axis is named by the
``BF_*`` (float64) and ``BI_*`` (int64) columns. ``apply_updates`` (numba) folds a batch
of MarketUpdate words into them: QUOTE stores the top of book, a STATUS other than UP
clears the quotes it is about. Every word index and bit field comes from
``shm_layouts.words`` (the accessors inlined by ``arbpipe.transport.words``).

L2 books: LEVEL records are applied by the detector's kernels (``arbpipe.books.blocks``)
to private top-N blocks laid out as ``shm_layouts.books`` (one block per (instrument, leg):
version, state, n_bid, n_ask, bid_px[N], bid_qty[N], ask_px[N], ask_qty[N]; N = the
deepest enabled ``[venues.X] depth``), so simulated fills walk the strategy's own live books
(``ladder``); a block is
used only when READY and not half-way through a book message; a leg without one fills on
its top quote. FUNDING records store the leg's funding rate, next funding time and
interval (``funding``), which the funding accrual reads (``arbpipe.trading.funding``).

The strategy never consumes a feed ring (the detector does): ``refresh`` copies what was
committed since its last look (``arbpipe.transport.kernels.peek``) and skips ahead when
it fell more than a ring behind, since the newest quotes are the ones that matter.
"""
from __future__ import annotations

import typing

import numpy as np
from numba import njit

from arbpipe.books.blocks import on_book_resync, on_level
from arbpipe.config import CANONICAL_MASK, PERP_ID_BIT
from arbpipe.legs import LegTable
from arbpipe.transport import kernels as K
from arbpipe.transport import words as TW
from shm_layouts import words as W
from shm_layouts.books import (B_LEVELS, B_N_ASK, B_N_BID, B_STATE, B_UPDATED_NS, B_VERSION,
                               BookState, block_words)
from shm_layouts.records import (STATUS_FAULT_SHIFT, STATUS_REASON_MASK, Kind, StatusReason,
                                 VenueStatus)

_KW = dict(cache=True, nogil=True, boundscheck=False)

# float columns of LiveBook.bf[i, leg] and int columns of LiveBook.bi[i, leg]
BF_BID, BF_ASK, BF_BQ, BF_AQ, BF_FUNDING_RATE = range(5)
BF_COLUMNS = 5
BI_RECV, BI_SEEN, BI_NEXT_FUNDING, BI_FUNDING_IV = range(4)
BI_COLUMNS = 4

PEEK_BATCH = 4096                  # MarketUpdates copied per peek call

# columns of LegTable.tab[venue_id, market]
MARKET_SPOT, MARKET_PERP = 0, 1

_QUOTE, _STATUS = int(Kind.QUOTE), int(Kind.STATUS)
_FUNDING, _LEVEL = int(Kind.FUNDING), int(Kind.LEVEL)
_UP = int(VenueStatus.UP)
_READY = int(BookState.READY)
_BOOK_RESYNC = int(StatusReason.BOOK_RESYNC)


class Quote(typing.NamedTuple):
    """The live top of book of one leg."""
    bid: float
    ask: float
    bid_qty: float
    ask_qty: float
    recv_ns: int            # when the feed received it (CLOCK_REALTIME ns)


@njit(**_KW)
def apply_updates(words, fwords, n, tab, bf, bi, lvl_i, lvl_f, depth):
    """Apply n MarketUpdates (int64 ``words`` and their float64 view ``fwords``) to the
    book: QUOTE stores the top of book of (canonical instrument, leg); LEVEL goes to the
    leg's L2 block, FUNDING to its funding columns; a STATUS other than UP clears the
    quotes it is about (a venue: every leg of it), a BOOK_RESYNC one the leg's L2 block.
    Returns records applied."""
    applied = 0
    ni = bf.shape[0]
    nl = bf.shape[1]
    for r in range(n):
        b = r * W.MU_WORDS
        w0 = words[b + W.MU_HEAD]
        iid = TW.mu_instrument(w0)
        vid = TW.mu_venue(w0)
        kind = TW.mu_kind(w0)
        if vid >= tab.shape[0]:
            continue
        if kind == _QUOTE:
            leg = tab[vid, MARKET_PERP if (iid & PERP_ID_BIT) else MARKET_SPOT]
            i = iid & CANONICAL_MASK
            if leg < 0 or i <= 0 or i >= ni:
                continue
            bid, ask = fwords[b + W.MU_BID], fwords[b + W.MU_ASK]
            bq, aq = fwords[b + W.MU_BID_QTY], fwords[b + W.MU_ASK_QTY]
            if not (bid > 0.0 and ask > bid and bq > 0.0 and aq > 0.0 and ask < 1e300):
                bf[i, leg, BF_ASK] = 0.0
                continue
            bf[i, leg, BF_BID] = bid
            bf[i, leg, BF_ASK] = ask
            bf[i, leg, BF_BQ] = bq
            bf[i, leg, BF_AQ] = aq
            bi[i, leg, BI_RECV] = words[b + W.MU_RECV_TS]
            bi[i, leg, BI_SEEN] += 1
            applied += 1
        elif kind == _LEVEL or kind == _FUNDING:
            leg = tab[vid, MARKET_PERP if (iid & PERP_ID_BIT) else MARKET_SPOT]
            i = iid & CANONICAL_MASK
            if leg < 0 or i <= 0 or i >= ni:
                continue
            if kind == _LEVEL:
                on_level(lvl_i, lvl_f, depth, i * nl + leg, TW.mu_flags(w0),
                         fwords[b + W.MU_LEVEL_PRICE], fwords[b + W.MU_LEVEL_QTY],
                         words[b + W.MU_LEVEL_UPDATE_ID], words[b + W.MU_EXCHANGE_TS],
                         words[b + W.MU_RECV_TS])
            else:
                rate = fwords[b + W.MU_FUNDING_RATE]
                if not abs(rate) < 1.0:
                    continue
                bf[i, leg, BF_FUNDING_RATE] = rate
                bi[i, leg, BI_NEXT_FUNDING] = words[b + W.MU_NEXT_FUNDING]
                bi[i, leg, BI_FUNDING_IV] = TW.mu_funding_interval(
                    words[b + W.MU_FUNDING_INTERVAL])
            applied += 1
        elif kind == _STATUS:
            sw = words[b + W.MU_STATUS]
            status = TW.mu_status(sw)
            i = iid & CANONICAL_MASK
            why = TW.mu_status_reason(sw)
            if i != 0 and (why & STATUS_REASON_MASK) == _BOOK_RESYNC and 0 < i < ni \
                    and depth > 0:
                lg = tab[vid, MARKET_PERP if (iid & PERP_ID_BIT) else MARKET_SPOT]
                if lg >= 0:
                    on_book_resync(lvl_i, i * nl + lg, (why >> STATUS_FAULT_SHIFT) & 0xFF,
                                   words[b + W.MU_RECV_TS])
            if status == _UP:
                continue
            for market in range(MARKET_SPOT, MARKET_PERP + 1):
                lg = tab[vid, market]
                if lg < 0:
                    continue
                if i == 0:
                    for k in range(ni):
                        bf[k, lg, BF_ASK] = 0.0
                elif i < ni:
                    # a spot status leaves the perp leg alone unless they are one leg
                    if (iid & PERP_ID_BIT) == 0 and market == MARKET_PERP and \
                            tab[vid, MARKET_SPOT] != lg:
                        continue
                    bf[i, lg, BF_ASK] = 0.0
            applied += 1
    return applied


class LiveBook:
    """Top of book per (canonical instrument, leg); see the module docstring."""

    def __init__(self, legs: LegTable, n_instruments: int, depth: int = 0):
        self.legs = legs
        nl = len(legs)
        self.bf = np.zeros((n_instruments + 1, nl, BF_COLUMNS), np.float64)
        self.bi = np.zeros((n_instruments + 1, nl, BI_COLUMNS), np.int64)
        self.depth = int(depth)
        bw = block_words(max(self.depth, 1))
        self.lvl_i = np.zeros(((n_instruments + 1) * nl, bw), np.int64)
        self.lvl_f = self.lvl_i.view(np.float64)
        self.rings: list = []
        self.pos: list[int] = []
        self.buf = np.zeros(W.MU_WORDS * PEEK_BATCH, np.int64)
        self.fbuf = self.buf.view(np.float64)
        self.out = np.zeros(3, np.int64)     # kernels.peek: first position, count, next
        self.skipped = 0
        self.applied = 0

    def follow(self, ring) -> None:
        """Peek ``ring`` from its current head on."""
        self.rings.append(ring)
        self.pos.append(int(K.head_of(ring.w)))

    def refresh(self) -> int:
        """Apply everything committed to the followed rings since the last refresh."""
        total = 0
        for j, ring in enumerate(self.rings):
            while True:
                K.peek(ring.w, int(ring.KIND), self.pos[j], self.buf, PEEK_BATCH, self.out)
                k = int(self.out[1])
                self.skipped += max(0, int(self.out[0]) - self.pos[j])
                self.pos[j] = int(self.out[2])
                if k == 0:
                    break
                total += apply_updates(self.buf, self.fbuf, k, self.legs.tab, self.bf, self.bi,
                                       self.lvl_i, self.lvl_f, self.depth)
                if k < PEEK_BATCH:
                    break
        self.applied += total
        return total

    def apply(self, updates) -> int:
        """Apply MarketUpdate records directly (tests, replay)."""
        w = np.ascontiguousarray(updates).reshape(-1).view(np.int64)
        return apply_updates(w, w.view(np.float64), len(w) // W.MU_WORDS, self.legs.tab,
                             self.bf, self.bi, self.lvl_i, self.lvl_f, self.depth)

    def set_quote(self, i: int, leg: int, bid: float, ask: float, bid_qty: float,
                  ask_qty: float, recv_ns: int) -> None:
        f = self.bf[i, leg]
        f[BF_BID], f[BF_ASK], f[BF_BQ], f[BF_AQ] = bid, ask, bid_qty, ask_qty
        self.bi[i, leg, BI_RECV] = recv_ns

    def quote(self, i: int, leg: int) -> Quote | None:
        """The leg's live Quote, or None when it has none."""
        f = self.bf[i, leg]
        if not f[BF_ASK] > 0.0:
            return None
        return Quote(float(f[BF_BID]), float(f[BF_ASK]), float(f[BF_BQ]), float(f[BF_AQ]),
                     int(self.bi[i, leg, BI_RECV]))

    def mid(self, i: int, leg: int) -> float | None:
        q = self.quote(i, leg)
        return None if q is None else (q.bid + q.ask) / 2.0

    # -- L2 books and funding -----------------------------------------------------------
    def _block(self, i: int, leg: int) -> int:
        return i * self.bf.shape[1] + leg

    def ladder(self, i: int, leg: int, ask: bool) -> tuple[list[float], list[float]] | None:
        """(prices, quantities) of one side of the leg's L2 book, best first; None when the
        leg has no usable book (no depth, not READY, mid-message, or that side empty)."""
        if self.depth <= 0:
            return None
        b = self._block(i, leg)
        ri = self.lvl_i[b]
        if ri[B_STATE] != _READY or ri[B_VERSION] & 1:
            return None
        n = int(ri[B_N_ASK] if ask else ri[B_N_BID])
        if n <= 0:
            return None
        d = self.depth
        o = B_LEVELS + (2 * d if ask else 0)
        rf = self.lvl_f[b]
        return [float(x) for x in rf[o:o + n]], [float(x) for x in rf[o + d:o + d + n]]

    def set_levels(self, i: int, leg: int, bids, asks, recv_ns: int = 0) -> None:
        """Replace the leg's L2 book (tests, replay): ``bids`` / ``asks`` are (price, qty)
        pairs, best first (at most ``depth`` per side are kept)."""
        if self.depth <= 0:
            raise ValueError("this LiveBook keeps no L2 levels (depth 0)")
        b = self._block(i, leg)
        ri, rf, d = self.lvl_i[b], self.lvl_f[b], self.depth
        bids, asks = list(bids)[:d], list(asks)[:d]
        for o, side in ((B_LEVELS, bids), (B_LEVELS + 2 * d, asks)):
            for j, (px, q) in enumerate(side):
                rf[o + j], rf[o + d + j] = px, q
        ri[B_N_BID], ri[B_N_ASK] = len(bids), len(asks)
        ri[B_STATE] = _READY
        ri[B_UPDATED_NS] = recv_ns

    def set_funding(self, i: int, leg: int, rate: float, next_ns: int,
                    interval_s: int = 0) -> None:
        self.bf[i, leg, BF_FUNDING_RATE] = rate
        self.bi[i, leg, BI_NEXT_FUNDING] = next_ns
        self.bi[i, leg, BI_FUNDING_IV] = interval_s

    def funding(self, i: int, leg: int) -> tuple[float, int] | None:
        """(rate per interval, next funding time ns) last published for a perp leg, or None."""
        t = int(self.bi[i, leg, BI_NEXT_FUNDING])
        if t <= 0:
            return None
        return float(self.bf[i, leg, BF_FUNDING_RATE]), t
