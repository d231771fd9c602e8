"""Binance ``bookTicker`` frames straight from their bytes into the ring, in one numba call.

Hand-written parsing because on the per-frame path a generic decoder, four ``float()``
calls, ``struct.pack_into`` and a second numba call for the ring push cost several times
what the work itself does; ``book_ticker`` parses, checks, packs the 64-byte record into
the sink's word buffer and pushes it (``spsc_push``) in a single Python -> numba crossing.

It takes only frames it can judge exactly and *accepts*: a flat JSON object whose keys are
among ``u s b B a A`` (all required) and ``e E T`` (optional; ``e`` only "bookTicker"), no
key twice, no escapes, ``u`` / ``E`` / ``T`` plain non-negative integers of at most 18
digits, ``s`` a symbol of the table, the four decimals the grammar of
``arbpipe.books.parse.json_decimal`` takes (bit for bit ``float(text)``), prices and sizes that
pass ``book_reject``, a timestamp in range and ``u`` newer than the symbol's last. For any
other frame (garbage, a reject, the combined-stream wrapper, a control message) it returns
-1 having changed nothing, and the adapter's own decoder judges the frame as it always
did, so no input is judged differently.

The per-symbol last ``u`` lives in the table (``QuoteTable``), shared with the adapter's
slow path (``QuoteTable.last_u`` / ``accepted``).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit

from arbpipe.books.parse import json_decimal, skip_ws
from arbpipe.feeds.venues.checks import MAX_MS, MS, NO_SEQ
from arbpipe.transport.kernels import COUNT_MASK, WAKE_SHIFT
from arbpipe.transport.kernels.spsc import spsc_push
from shm_layouts.records import Flag, Kind
from shm_layouts.words import mu_head

_KW = dict(cache=True, nogil=True, boundscheck=False)

# table: row 0 the record being written (8 words), then one row per symbol with columns
LEN, NAME, IID, HEAD_TS, HEAD_NO_TS, LAST = 0, 1, 5, 6, 7, 8
NAME_WORDS = 4                       # symbol bytes packed 8 a word: at most 32 bytes
COLS = 9
NONE = -1                            # LAST: no u accepted yet (every u >= 0 is newer)
IN_DICT = -2                         # LAST: the slow path's dict holds it (u not in i8 >= 0)

_QUOTE, _COLON, _COMMA, _LBRACE, _RBRACE, _BSLASH = 34, 58, 44, 123, 125, 92
_REQUIRED = 0x3F                     # u s b B a A
_BOOK_TICKER = np.frombuffer(b"bookTicker", np.uint8)


@njit(**_KW)
def _int(s, i, n):
    """A non-negative JSON integer of at most 18 digits: (value, index after), index -1
    when not taken."""
    start = i
    v = 0
    while i < n and 48 <= s[i] <= 57:
        v = v * 10 + (s[i] - 48)
        i += 1
    d = i - start
    if d == 0 or d > 18 or (d > 1 and s[start] == 48):
        return 0, -1
    return v, i


@njit(**_KW)
def _str_end(s, i, n):
    """Index of the closing quote of the JSON string opening at ``i``; -1 when there is
    none or it holds an escape or a control byte."""
    if i >= n or s[i] != _QUOTE:
        return -1
    i += 1
    while i < n:
        c = s[i]
        if c == _QUOTE:
            return i
        if c == _BSLASH or c < 32:
            return -1
        i += 1
    return -1


@njit(**_KW)
def _symbol(tab, s, i, j):
    """Row of the symbol ``s[i:j]``; -1 when not in the table."""
    ln = j - i
    for r in range(1, tab.shape[0]):
        if tab[r, LEN] != ln:
            continue
        k = 0
        while k < ln and s[i + k] == (tab[r, NAME + (k >> 3)] >> ((k & 7) << 3)) & 0xFF:
            k += 1
        if k == ln:
            return r
    return -1


@njit(**_KW)
def _decimal(s, i, n):
    """A JSON string holding a decimal ``json_decimal`` takes: (value, index after), or -1."""
    if i >= n or s[i] != _QUOTE:
        return 0.0, -1
    v, j = json_decimal(s, i + 1, n, True)
    if j < 0 or j >= n or s[j] != _QUOTE:
        return 0.0, -1
    return v, j + 1


@njit(cache=True, nogil=False, boundscheck=False)   # holding the GIL: the call is short
def book_ticker(s, now, seq, tab, ring_w, cursors, push):
    """One frame ``s`` (bytes) received at ``now``; ``seq`` the sink's last sequence number.
    Taken: the QUOTE record (number ``seq + 1``) in ``tab[0, :8]``, pushed into the ring when
    ``push``, the symbol's last ``u`` updated; returns ``iid << 2 | wake << 1 | pushed``
    (without ``push``: pushed is 1, the caller pushes). Not taken: -1, nothing changed.
    Few arguments, all arrays but ``s``: each costs dispatch time on every call."""
    n = len(s)
    i = skip_ws(s, 0, n)
    if i >= n or s[i] != _LBRACE:
        return -1
    i = skip_ws(s, i + 1, n)
    got = 0
    u = 0
    row = -1
    ev = 0
    tr = 0
    bid = 0.0
    bq = 0.0
    ask = 0.0
    aq = 0.0
    while True:
        if i + 2 >= n or s[i] != _QUOTE or s[i + 2] != _QUOTE:
            return -1
        key = s[i + 1]
        i = skip_ws(s, i + 3, n)
        if i >= n or s[i] != _COLON:
            return -1
        i = skip_ws(s, i + 1, n)
        if key == 117:                             # u
            bit = 1
            u, i = _int(s, i, n)
        elif key == 115:                           # s
            bit = 2
            j = _str_end(s, i, n)
            if j < 0:
                return -1
            row = _symbol(tab, s, i + 1, j)
            if row < 0:
                return -1
            i = j + 1
        elif key == 98:                            # b
            bit = 4
            bid, i = _decimal(s, i, n)
        elif key == 66:                            # B
            bit = 8
            bq, i = _decimal(s, i, n)
        elif key == 97:                            # a
            bit = 16
            ask, i = _decimal(s, i, n)
        elif key == 65:                            # A
            bit = 32
            aq, i = _decimal(s, i, n)
        elif key == 101:                           # e: only "bookTicker"
            bit = 64
            j = _str_end(s, i, n)
            if j - i - 1 != len(_BOOK_TICKER):
                return -1
            for k in range(len(_BOOK_TICKER)):
                if s[i + 1 + k] != _BOOK_TICKER[k]:
                    return -1
            i = j + 1
        elif key == 69:                            # E
            bit = 128
            ev, i = _int(s, i, n)
        elif key == 84:                            # T
            bit = 256
            tr, i = _int(s, i, n)
        else:
            return -1
        if i < 0 or got & bit:
            return -1
        got |= bit
        i = skip_ws(s, i, n)
        if i >= n:
            return -1
        if s[i] == _COMMA:
            i = skip_ws(s, i + 1, n)
            continue
        if s[i] != _RBRACE or skip_ws(s, i + 1, n) != n:
            return -1
        break
    if got & _REQUIRED != _REQUIRED:
        return -1
    if not (0.0 < bid <= ask and bq >= 0.0 and aq >= 0.0):   # finite: json_decimal's are
        return -1
    ts = tr if tr != 0 else ev
    if ts > MAX_MS:
        return -1
    last = tab[row, LAST]
    if last == IN_DICT or u <= last:
        return -1
    tab[row, LAST] = u
    words = tab[0]
    words[0] = tab[row, HEAD_TS] if ts != 0 else tab[row, HEAD_NO_TS]
    f = words.view(np.float64)
    f[1] = bid
    f[2] = ask
    f[3] = bq
    f[4] = aq
    words[5] = ts * MS
    words[6] = now
    words[7] = seq + 1
    iid = tab[row, IID]
    if not push:
        return iid << 2 | 1
    r = spsc_push(ring_w, words, 1, cursors)
    return iid << 2 | ((r >> WAKE_SHIFT) & 1) << 1 | (r & COUNT_MASK)


def entry_point(dispatcher, *example):
    """The compiled ``dispatcher`` for the argument types of ``example``, to be called with
    arguments of exactly those types only: it skips the dispatcher's type resolution, a
    large part of a short call (~250 of ~600 ns on a small VM)."""
    sig = tuple(numba.typeof(a) for a in example)
    dispatcher.compile(sig)
    try:            # ``overloads[sig].entry_point`` is not public numba API: if a numba
        return dispatcher.overloads[sig].entry_point    # lacks it, the dispatcher will do
    except (KeyError, AttributeError):
        return dispatcher


def _i64(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


class QuoteTable:
    """The symbols ``book_ticker`` knows (payload spelling -> instrument id) and the last
    ``u`` accepted of each, shared by the fast path and the adapter's slow path."""

    def __init__(self, ids: dict[str, int], venue_id: int, flags: int):
        names = [s for s in ids if s.isascii() and len(s.encode()) <= 8 * NAME_WORDS]
        self.rows = {s: r for r, s in enumerate(names, 1)}
        tab = np.zeros((len(names) + 1, COLS), np.int64)
        for s, r in self.rows.items():
            b = s.encode()
            tab[r, LEN] = len(b)
            for k, c in enumerate(b):
                tab[r, NAME + (k >> 3)] |= c << ((k & 7) << 3)
            iid = ids[s]
            tab[r, IID] = iid
            tab[r, HEAD_TS] = _i64(mu_head(iid, venue_id, int(Kind.QUOTE), flags))
            tab[r, HEAD_NO_TS] = _i64(mu_head(iid, venue_id, int(Kind.QUOTE),
                                              flags | int(Flag.NO_EXCHANGE_TS)))
        tab[1:, LAST] = NONE
        self.tab = tab
        self.record = tab[0, :8]          # the record ``book_ticker`` wrote last

    def reset(self) -> None:
        """A new connection: no symbol has a last ``u``."""
        self.tab[1:, LAST] = NONE

    def last_u(self, s: str, held: dict):
        """The last ``u`` accepted for ``s`` (``NO_SEQ`` if none); ``held``: the slow path's
        dict, which holds those that do not fit the table."""
        r = self.rows.get(s)
        if r is None:
            return held.get(s, NO_SEQ)
        v = int(self.tab[r, LAST])
        if v == IN_DICT:
            return held.get(s, NO_SEQ)
        return NO_SEQ if v == NONE else v

    def accepted(self, s: str, u: int) -> None:
        """The slow path accepted ``u`` for ``s`` (and put it in its dict)."""
        r = self.rows.get(s)
        if r is not None:
            self.tab[r, LAST] = u if 0 <= u < 1 << 63 else IN_DICT
