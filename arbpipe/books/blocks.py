"""Top-N L2 blocks: LEVEL records applied to the block of their (instrument, leg), in the
``books`` segment's layout (``shm_layouts.books``), under its seqlock.

``lvl_i`` / ``lvl_f`` are the int64 and float64 views of the same blocks (one row per block
``i * legs + leg``); the detector's kernel (``arbpipe.detect.kernel``, into the ``books``
segment) and the strategy's ``LiveBook`` (``arbpipe.trading.book``, private blocks) call
``on_level`` for each LEVEL record and ``on_book_resync`` for a BOOK_RESYNC status. A
block is odd (being changed) from the first record of a book message to its BOOK_END
record, so a reader never takes a half-applied message; a consumer truncates each side to
the block's N, which keeps it equal to the feed's top N (the feed publishes every level that
enters its top N).
"""
from __future__ import annotations

from numba import njit

from arbpipe.books.kernels import apply_level
from arbpipe.transport.atomics import load_relaxed, store_release
from shm_layouts.books import (B_EXCHANGE_NS, B_FAULT, B_LEVELS, B_N_ASK, B_N_BID, B_RESYNCS,
                               B_STATE, B_UPDATE_ID, B_UPDATED_NS, B_VERSION, BookState)
from shm_layouts.records import Flag

_KW = dict(cache=True, nogil=True, boundscheck=False)
_SNAP, _ASK, _END = int(Flag.SNAPSHOT), int(Flag.BOOK_ASK), int(Flag.BOOK_END)
_READY, _RESYNCING = int(BookState.READY), int(BookState.RESYNCING)


@njit(**_KW)
def _open(row, b):
    """Make block ``b`` odd (being changed), once per message."""
    v = load_relaxed(row[b], B_VERSION)
    if v & 1 == 0:
        store_release(row[b], B_VERSION, v + 1)


@njit(**_KW)
def _close(row, b):
    v = load_relaxed(row[b], B_VERSION)
    if v & 1 == 1:
        store_release(row[b], B_VERSION, v + 1)


@njit(**_KW)
def on_level(lvl_i, lvl_f, depth, b, flags, price, qty, update_id, ex_ns, recv_ns):
    """Apply one LEVEL record to block ``b``."""
    if depth <= 0 or b < 0 or b >= lvl_i.shape[0]:
        return
    _open(lvl_i, b)
    row_i = lvl_i[b]
    row_f = lvl_f[b]
    if flags & _SNAP:
        row_i[B_N_BID] = 0
        row_i[B_N_ASK] = 0
    if price > 0.0:
        if flags & _ASK:
            o = B_LEVELS + 2 * depth
            apply_level(row_f[o:o + depth], row_f[o + depth:o + 2 * depth],
                        row_i[B_N_ASK:B_N_ASK + 1], True, price, qty)
        else:
            o = B_LEVELS
            apply_level(row_f[o:o + depth], row_f[o + depth:o + 2 * depth],
                        row_i[B_N_BID:B_N_BID + 1], False, price, qty)
    if flags & _END:
        row_i[B_STATE] = _READY
        row_i[B_UPDATED_NS] = recv_ns
        row_i[B_EXCHANGE_NS] = ex_ns
        row_i[B_UPDATE_ID] = update_id
        _close(lvl_i, b)


@njit(**_KW)
def on_book_resync(lvl_i, b, fault, recv_ns):
    """Block ``b`` is not ready (its feed resyncs it): no levels until the next snapshot."""
    if b < 0 or b >= lvl_i.shape[0]:
        return
    _open(lvl_i, b)
    row = lvl_i[b]
    row[B_STATE] = _RESYNCING
    row[B_FAULT] = fault
    row[B_RESYNCS] += 1
    row[B_N_BID] = 0
    row[B_N_ASK] = 0
    row[B_UPDATED_NS] = recv_ns
    _close(lvl_i, b)
