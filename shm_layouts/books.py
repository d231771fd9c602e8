"""The ``books`` segment: the top N levels of every (instrument, leg) L2 book, written by the
detector as it applies LEVEL records, read by anyone (``arbpipe book``, the dashboard).

Segment layout: the standard 128-byte descriptor header of ``shm_layouts.ring`` with
``kind = BOOKS_KIND``; at ``BOOKS_META`` four u8 words (instruments + 1, legs, depth N,
block words); the blocks from ``BOOKS_DATA``, one per (instrument id i, leg l) at block
index ``i * legs + l`` (row 0 unused, as in the detector), each ``block_words`` 8-byte words:

    word          type  field          meaning
    ------------  ----  -------------  --------------------------------------------------
    0             u8    version        seqlock: odd while the detector changes the block
    1             u8    state          BookState
    2             u8    fault          records.BookFault of the last resync
    3             u8    resyncs        times the book was marked not ready
    4             i8    updated_ns     recv_ts_ns of the last message applied
    5             i8    exchange_ns    its exchange_ts_ns
    6             u8    update_id      its venue update id
    7             u8    n_bid          bid levels held (<= N)
    8             u8    n_ask          ask levels held (<= N)
    9 .. 9+N      f8    bid_px[N]      best first
    .. +N         f8    bid_qty[N]
    .. +N         f8    ask_px[N]
    .. +N         f8    ask_qty[N]

The commit rule: a reader copies a block, then reads ``version`` again; the copy is
consistent when both reads gave the same even value (the detector makes it odd at the first
record of a book message and even again after its BOOK_END record, or around a resync).
"""
import enum

from shm_layouts.kinds import SegmentKind

BOOKS_KIND = int(SegmentKind.BOOKS)
BOOKS_NAME = "books"
BOOKS_META = 128                       # bytes: after the standard header
META_NI, META_NL, META_DEPTH, META_BLOCK_WORDS = range(4)
BOOKS_DATA = 192                       # bytes: the first block

B_VERSION, B_STATE, B_FAULT, B_RESYNCS, B_UPDATED_NS, B_EXCHANGE_NS, B_UPDATE_ID, B_N_BID, \
    B_N_ASK = range(9)
B_LEVELS = 9                           # word of bid_px[0]


class BookState(enum.IntEnum):
    NONE = 0          # no depth message yet
    READY = 1         # synced: the levels are the venue's top N
    RESYNCING = 2     # a rule broke (fault): not to be used until the next snapshot


def block_words(depth: int) -> int:
    """Words of one block for top ``depth``, rounded up to whole cache lines."""
    w = B_LEVELS + 4 * depth
    return (w + 7) // 8 * 8


def segment_size(n_instruments_plus_one: int, legs: int, depth: int) -> int:
    return BOOKS_DATA + 8 * block_words(depth) * n_instruments_plus_one * legs


def bid_px(depth: int) -> slice:
    return slice(B_LEVELS, B_LEVELS + depth)


def bid_qty(depth: int) -> slice:
    return slice(B_LEVELS + depth, B_LEVELS + 2 * depth)


def ask_px(depth: int) -> slice:
    return slice(B_LEVELS + 2 * depth, B_LEVELS + 3 * depth)


def ask_qty(depth: int) -> slice:
    return slice(B_LEVELS + 3 * depth, B_LEVELS + 4 * depth)
