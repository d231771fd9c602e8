"""The strategy's own live top of book, kept by peeking the feed rings read-only.

``LiveBook`` holds, per (canonical instrument, leg), the best bid / ask, their quantities
and the receive time of the quote, in two arrays whose last axis is named by the
``BF_*`` (float64) and ``BI_*`` (int64) columns. ``apply_updates`` (numba) folds a batch
of MarketUpdate words into them: QUOTE stores the top of book, a STATUS other than UP
clears the quotes it is about. Every word index and bit field comes from
``shm_layouts.words`` (the accessors inlined by ``arbpipe.transport.words``).

The strategy never consumes a feed ring (the detector does): ``refresh`` copies what was
committed since its last look (``arbpipe.transport.kernels.peek``) and skips ahead when
it fell more than a ring behind, since the newest quotes are the ones that matter.
"""
from __future__ import annotations

import typing

import numpy as np
from numba import njit

from arbpipe.config import CANONICAL_MASK, PERP_ID_BIT, LegTable
from arbpipe.transport import kernels as K
from arbpipe.transport import words as TW
from shm_layouts import words as W
from shm_layouts.records import Kind, VenueStatus

_KW = dict(cache=True, nogil=True, boundscheck=False)

# float columns of LiveBook.bf[i, leg] and int columns of LiveBook.bi[i, leg]
BF_BID, BF_ASK, BF_BQ, BF_AQ = range(4)
BF_COLUMNS = 4
BI_RECV, BI_SEEN = range(2)
BI_COLUMNS = 2

PEEK_BATCH = 4096                  # MarketUpdates copied per peek call

# columns of LegTable.tab[venue_id, market]
MARKET_SPOT, MARKET_PERP = 0, 1

_QUOTE, _STATUS = int(Kind.QUOTE), int(Kind.STATUS)
_UP = int(VenueStatus.UP)


class Quote(typing.NamedTuple):
    """The live top of book of one leg."""
    bid: float
    ask: float
    bid_qty: float
    ask_qty: float
    recv_ns: int            # when the feed received it (CLOCK_REALTIME ns)


@njit(**_KW)
def apply_updates(words, fwords, n, tab, bf, bi):
    """Apply n MarketUpdates (int64 ``words`` and their float64 view ``fwords``) to the
    book: QUOTE stores the top of book of (canonical instrument, leg); a STATUS other than
    UP clears the quotes it is about (a venue: every leg of it). Returns records applied."""
    applied = 0
    ni = bf.shape[0]
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
        elif kind == _STATUS:
            status = TW.mu_status(words[b + W.MU_STATUS])
            if status == _UP:
                continue
            i = iid & CANONICAL_MASK
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

    def __init__(self, legs: LegTable, n_instruments: int):
        self.legs = legs
        nl = len(legs)
        self.bf = np.zeros((n_instruments + 1, nl, BF_COLUMNS), np.float64)
        self.bi = np.zeros((n_instruments + 1, nl, BI_COLUMNS), np.int64)
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
                total += apply_updates(self.buf, self.fbuf, k, self.legs.tab, self.bf, self.bi)
                if k < PEEK_BATCH:
                    break
        self.applied += total
        return total

    def apply(self, updates) -> int:
        """Apply MarketUpdate records directly (tests, replay)."""
        w = np.ascontiguousarray(updates).reshape(-1).view(np.int64)
        return apply_updates(w, w.view(np.float64), len(w) // W.MU_WORDS, self.legs.tab,
                             self.bf, self.bi)

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
