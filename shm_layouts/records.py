"""Fixed-width records exchanged between arbpipe processes (little-endian).

MarketUpdate -- 64 bytes, one cache line
========================================

    offset size type  field              meaning
    ------ ---- ----  -----------------  ------------------------------------------------
         0    4 u4    instrument_id      symbol-map id of (venue, native symbol)
         4    2 u2    venue_id           venue id (config order)
         6    1 u1    kind               Kind.QUOTE / Kind.FUNDING / Kind.STATUS
         7    1 u1    flags              Flag bits (snapshot, exchange-ts-missing, ...)
         8    8 f8    bid                best bid price (quote currency)
        16    8 f8    ask                best ask price
        24    8 f8    bid_qty            size at best bid, base-asset units
        32    8 f8    ask_qty            size at best ask, base-asset units
        40    8 i8    exchange_ts_ns     venue timestamp, ns since epoch (0 when venue gives none)
        48    8 i8    recv_ts_ns         local receive time, CLOCK_REALTIME ns
        56    8 u8    seq                per-producer sequence number (1, 2, 3, ...)

  kind == FUNDING reuses bytes 8..31:
         8    8 f8    funding_rate       rate per funding interval (0.0001 = 1 bp)
        16    8 i8    next_funding_ns    next funding time, ns since epoch
        24    4 u4    funding_interval_s funding interval in seconds (3600, 14400, 28800)
        28    4 f4    mark_price         mark price where the venue gives one, else 0

  kind == LEVEL (one price level of an L2 book, MARKET_UPDATE_LEVEL) reuses bytes 8..39:
         8    8 f8    price              the level's price
        16    8 f8    qty                its size, base units; 0 removes the level
        24    8 u8    update_id          the venue's book update id of the message (0: none)
        32    4 u4    depth              N: the publisher keeps its consumers' books to the
                                         top N levels per side (drop what falls below)
    flags: SNAPSHOT on the first record of a message that replaces the book (clear both
    sides first), BOOK_ASK for an ask level (else a bid), BOOK_END on the message's last
    record: the book is consistent after it. The records of one message are consecutive.

  kind == STATUS reuses bytes 8..15:
         8    4 u4    status             VenueStatus code
        12    4 u4    status_reason      the publisher's reason code; a feed handler writes
                                         StatusReason in bits 0..7 (STATUS_REASON_MASK),
                                         its socket index in bits 8..15
                                         (STATUS_SOCKET_SHIFT, STATUS_SOCKET_MASK) and, for
                                         BOOK_RESYNC, the BookFault in bits 16..23
                                         (STATUS_FAULT_SHIFT)

Opportunity -- 192 bytes, three cache lines (layout 2; RecordType.OPPORTUNITY)
================================================================================

Layout 2 sizes every opportunity by walking both L2 books (``arbpipe.detect.walk``): the
size, both VWAPs, gross and net at that size and the expected profit in money. Layout 1
(128 bytes, RecordType.OPPORTUNITY_V1) carried only top-of-book values; a ring or a stream
of layout 1 is refused by name (``RETIRED_RECORD_TYPES``).

    offset size type  field              meaning
    ------ ---- ----  -----------------  ------------------------------------------------
         0    4 u4    instrument_id      canonical instrument id
         4    2 u2    buy_venue          venue where we buy (lift the asks)
         6    2 u2    sell_venue         venue where we sell (hit the bids)
         8    1 u1    state              OppState.OPEN / UPDATE / CLOSED
         9    1 u1    close_reason       CloseReason (NONE unless state == CLOSED)
        10    2 u2    flags              OPP_BUY_PERP (1): buy leg is the venue's perp market;
                                         OPP_SELL_PERP (2): sell leg is (OKX spot and SWAP
                                         share venue id 5); OPP_TOP_OF_BOOK (4): a leg has no
                                         L2 book (depth 0): sized on the top level with the
                                         slippage-depth model
        12    4 f4    confidence         0..100
        16    8 f8    buy_ask            best ask on the buy leg
        24    8 f8    sell_bid           best bid on the sell leg
        32    8 f8    exec_qty           the size, base units: maximises profit after costs
        40    8 f8    gross_bps          (sell notional - buy notional) / mid notional at
                                         exec_qty, bps (the VWAPs' spread)
        48    8 f8    net_bps            profit / mid notional at exec_qty, bps: gross minus
                                         both taker fees, the slippage allowance, plus the
                                         funding carry
        56    8 f8    funding_delta_bps  funding difference normalised to 8 h, bps (shown)
        64    8 i8    trigger_recv_ns    recv_ts_ns of the MarketUpdate that triggered it
        72    8 i8    detect_ns          CLOCK_REALTIME ns when the detector published it
        80    8 u8    opp_id             id shared by open/update/closed of one opportunity:
                                         the detector run's start second in bits 32..63
                                         (OPP_ID_RUN_SHIFT), n = 1, 2, ... of the run in
                                         bits 0..31 (OPP_ID_NUMBER_MASK)
        88    8 u8    seq                detector output sequence number
        96    8 i8    opened_ns          detect_ns of the OPEN record of this opportunity
       104    8 f8    vwap_buy           buy notional / exec_qty (quote per base unit)
       112    8 f8    vwap_sell          sell notional / exec_qty
       120    8 f8    profit             expected profit at exec_qty, quote currency
       128    8 f8    profit_usd         the same in USD (NaN: no rate for the quote currency)
       136    8 f8    top_gross_bps      (sell_bid - buy_ask) / mid of the top levels, bps
       144    8 f8    carry_bps          funding carry over [detector] funding_horizon_s in
                                         net_bps (0 with the default horizon 0)
       152    2 u2    buy_levels         ask levels of the buy leg consumed (last partial)
       154    2 u2    sell_levels        bid levels of the sell leg consumed
       156   36       (reserved, zero)
"""
import enum

import numpy as np


OPP_BUY_PERP = 1
OPP_SELL_PERP = 2
OPP_TOP_OF_BOOK = 4      # a leg without an L2 book: sized on the top level
# opp_id = detector run start second << OPP_ID_RUN_SHIFT | n (n = 1, 2, ... within the run)
OPP_ID_RUN_SHIFT = 32
OPP_ID_NUMBER_MASK = (1 << OPP_ID_RUN_SHIFT) - 1


class Kind(enum.IntEnum):
    QUOTE = 1
    FUNDING = 2
    STATUS = 3
    LEVEL = 4             # one L2 book level (MARKET_UPDATE_LEVEL)


class Flag(enum.IntFlag):
    NONE = 0
    SNAPSHOT = 1          # full state, not a delta
    NO_EXCHANGE_TS = 2    # venue gives no timestamp; exchange_ts_ns is 0
    REPLAYED = 4          # published by replay, not a live feed
    SYNTHETIC = 8         # produced by a benchmark generator
    BOOK_ASK = 16         # LEVEL: an ask level (else a bid)
    BOOK_END = 32         # LEVEL: the last record of a book message


class VenueStatus(enum.IntEnum):
    UP = 1
    STALE = 2             # connected but silent past the watchdog
    DISCONNECTED = 3      # socket down; quotes must not be used


class StatusReason(enum.IntEnum):
    """Why a feed handler published a STATUS record: bits 0..7 of its ``status_reason``;
    bits 8..15 hold the index of the socket the record is about (``pack_status_reason``)."""
    NONE = 0
    CONNECTED = 1          # UP: every socket connected and delivering
    CONNECTION_LOST = 2    # DISCONNECTED: the socket closed or failed
    CONNECT_FAILED = 3     # DISCONNECTED: could not (re)connect
    WATCHDOG = 4           # STALE: no update for watchdog_s while connected
    DATA_RESUMED = 5       # UP (one symbol): updates again after STALE
    SHUTDOWN = 6           # DISCONNECTED: the feed stopped
    SILENT = 7             # DISCONNECTED: replaced a connection whose every symbol was silent
    PLANNED = 8            # DISCONNECTED: planned reconnect that could not be made seamless
    HALF_OPEN = 9          # DISCONNECTED: replaced a connection that answered nothing (idle probe)
    BOOK_RESYNC = 10       # STALE (one symbol): its L2 book broke a rule (BookFault in bits
                           # 16..23) and is not ready until it is synced again


class BookFault(enum.IntEnum):
    """Why a feed handler's L2 book was marked not ready and resynced (counted per reason in
    the feed stats; bits 16..23 of a BOOK_RESYNC status_reason)."""
    NONE = 0
    GAP = 1                # an update id (or sequence number) was skipped
    CHECKSUM = 2           # the venue's checksum disagrees with the book
    STALE_SNAPSHOT = 3     # the snapshot is older than the buffered diffs can bridge
    EARLY_DIFF = 4         # a diff before any snapshot (or that a snapshot cannot precede)
    RESTART = 5            # the venue said its book service restarted
    BAD_DATA = 6           # a level that cannot be applied (crossed book, garbage numbers)
    RECONNECT = 7          # the connection was replaced: every book of it resyncs
    SNAPSHOT_FAILED = 8    # the REST snapshot request failed or its body was unusable


# status_reason of a feed handler's STATUS record: StatusReason | socket index << 8
STATUS_REASON_MASK = 0xFF     # bits 0..7: StatusReason
STATUS_SOCKET_SHIFT = 8       # bits 8..15: the feed's socket index
STATUS_SOCKET_MASK = 0xFF


STATUS_FAULT_SHIFT = 16       # bits 16..23: the BookFault of a BOOK_RESYNC status
STATUS_FAULT_MASK = 0xFF


def pack_status_reason(reason: int, socket_index: int, fault: int = 0) -> int:
    """``status_reason`` of a feed handler's STATUS record about socket ``socket_index``
    (``fault``: the BookFault of a BOOK_RESYNC)."""
    return int(reason) | socket_index << STATUS_SOCKET_SHIFT | int(fault) << STATUS_FAULT_SHIFT


def status_reason_fault(status_reason: int) -> int:
    """The ``BookFault`` in a BOOK_RESYNC ``status_reason``."""
    return status_reason >> STATUS_FAULT_SHIFT & STATUS_FAULT_MASK


def status_reason_code(status_reason: int) -> int:
    """The ``StatusReason`` value in a ``status_reason``."""
    return status_reason & STATUS_REASON_MASK


def status_reason_socket(status_reason: int) -> int:
    """The socket index in a ``status_reason``."""
    return status_reason >> STATUS_SOCKET_SHIFT & STATUS_SOCKET_MASK


class OppState(enum.IntEnum):
    OPEN = 1
    UPDATE = 2
    CLOSED = 3


class CloseReason(enum.IntEnum):
    NONE = 0
    SPREAD_GONE = 1
    QUOTE_STALE = 2
    VENUE_DOWN = 3
    SHUTDOWN = 4


def _dtype(fields, itemsize):
    names = [f[0] for f in fields]
    return np.dtype({
        "names": names,
        "formats": [np.dtype(f[1]).newbyteorder("<") for f in fields],
        "offsets": [f[2] for f in fields],
        "itemsize": itemsize,
    })


MARKET_UPDATE = _dtype([
    ("instrument_id", "u4", 0),
    ("venue_id", "u2", 4),
    ("kind", "u1", 6),
    ("flags", "u1", 7),
    ("bid", "f8", 8),
    ("ask", "f8", 16),
    ("bid_qty", "f8", 24),
    ("ask_qty", "f8", 32),
    ("exchange_ts_ns", "i8", 40),
    ("recv_ts_ns", "i8", 48),
    ("seq", "u8", 56),
], 64)

# Views of the same 64 bytes for the FUNDING and STATUS kinds (see table above).
MARKET_UPDATE_FUNDING = _dtype([
    ("instrument_id", "u4", 0),
    ("venue_id", "u2", 4),
    ("kind", "u1", 6),
    ("flags", "u1", 7),
    ("funding_rate", "f8", 8),
    ("next_funding_ns", "i8", 16),
    ("funding_interval_s", "u4", 24),
    ("mark_price", "f4", 28),
    ("exchange_ts_ns", "i8", 40),
    ("recv_ts_ns", "i8", 48),
    ("seq", "u8", 56),
], 64)

MARKET_UPDATE_LEVEL = _dtype([
    ("instrument_id", "u4", 0),
    ("venue_id", "u2", 4),
    ("kind", "u1", 6),
    ("flags", "u1", 7),
    ("price", "f8", 8),
    ("qty", "f8", 16),
    ("update_id", "u8", 24),
    ("depth", "u4", 32),
    ("exchange_ts_ns", "i8", 40),
    ("recv_ts_ns", "i8", 48),
    ("seq", "u8", 56),
], 64)

MARKET_UPDATE_STATUS = _dtype([
    ("instrument_id", "u4", 0),
    ("venue_id", "u2", 4),
    ("kind", "u1", 6),
    ("flags", "u1", 7),
    ("status", "u4", 8),
    ("status_reason", "u4", 12),
    ("exchange_ts_ns", "i8", 40),
    ("recv_ts_ns", "i8", 48),
    ("seq", "u8", 56),
], 64)

OPPORTUNITY = _dtype([
    ("instrument_id", "u4", 0),
    ("buy_venue", "u2", 4),
    ("sell_venue", "u2", 6),
    ("state", "u1", 8),
    ("close_reason", "u1", 9),
    ("flags", "u2", 10),
    ("confidence", "f4", 12),
    ("buy_ask", "f8", 16),
    ("sell_bid", "f8", 24),
    ("exec_qty", "f8", 32),
    ("gross_bps", "f8", 40),
    ("net_bps", "f8", 48),
    ("funding_delta_bps", "f8", 56),
    ("trigger_recv_ns", "i8", 64),
    ("detect_ns", "i8", 72),
    ("opp_id", "u8", 80),
    ("seq", "u8", 88),
    ("opened_ns", "i8", 96),
    ("vwap_buy", "f8", 104),
    ("vwap_sell", "f8", 112),
    ("profit", "f8", 120),
    ("profit_usd", "f8", 128),
    ("top_gross_bps", "f8", 136),
    ("carry_bps", "f8", 144),
    ("buy_levels", "u2", 152),
    ("sell_levels", "u2", 154),
], 192)

assert MARKET_UPDATE.itemsize == 64, MARKET_UPDATE.itemsize
assert MARKET_UPDATE_FUNDING.itemsize == 64
assert MARKET_UPDATE_STATUS.itemsize == 64
assert MARKET_UPDATE_LEVEL.itemsize == 64
assert OPPORTUNITY.itemsize == 192, OPPORTUNITY.itemsize

# Record type ids stored in a ring header so `stat` / `tap` can decode any ring.
# 0 means raw words (benchmarks, tests); the id is part of the attach check.
from shm_layouts.journal import JOURNAL  # noqa: E402
from shm_layouts.kinds import RECORD_TYPE_NAMES as _TYPE_NAMES, RecordType  # noqa: E402

RECORD_TYPES = {
    int(RecordType.RAW): None,
    int(RecordType.MARKET_UPDATE): MARKET_UPDATE,
    int(RecordType.OPPORTUNITY): OPPORTUNITY,
    int(RecordType.JOURNAL): JOURNAL,
}
RECORD_TYPE_IDS = {name: int(t) for t, name in _TYPE_NAMES.items()}
# record types an older arbpipe wrote that this build refuses, by id: (name, bytes)
RETIRED_RECORD_TYPES = {int(RecordType.OPPORTUNITY_V1): ("Opportunity layout 1", 128)}
RECORD_TYPE_NAMES = {v: k for k, v in RECORD_TYPE_IDS.items()}
