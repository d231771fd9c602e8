"""Feed counters segment: one per running feed handler, named ``<ring>.stats``
(``feed.<venue>.stats`` by default), readable from any shell (``arbpipe stat``).

Segment layout: the standard 128-byte descriptor header of ``shm_layouts.ring``
(magic, layout_version, record_size, creator pid, ...) with ``ring_kind =
FEED_STATS_KIND`` (10, so ring tools skip it), ``record_size = FEED_STATS.itemsize``,
``capacity = 1`` and ``data_offset = FEED_STATS_OFFSET``; one ``FEED_STATS`` record
follows at that offset. The rest of the 4 KiB page is zero.

FeedStats -- 1024 bytes, little-endian; every field is 8-byte aligned
======================================================================

    offset size type     field               meaning
    ------ ---- -------  ------------------  ---------------------------------------------
         0    8 u8       gen                 seqlock: odd while the writer updates the record
         8    8 u8       version             FEED_STATS_VERSION
        16    8 u8       venue_id            venue id (arbpipe.symbols.VENUE_IDS)
        24    8 u8       n_sockets           websockets this venue needs (<= MAX_SOCKETS)
        32    8 u8       frames              websocket data frames received (all sockets)
        40    8 u8       updates             records produced (quote + funding + status)
        48    8 u8       quotes              QUOTE records produced
        56    8 u8       funding             FUNDING records produced
        64    8 u8       status_records      STATUS records produced
        72    8 u8       rejects_total       sum of ``rejects``
        80    8 u8       ring_dropped        records the ring refused (full, drop policy)
        88    8 u8       connects            websocket connections established (first included)
        96    8 u8       reconnects          connections established after the first one
       104    8 u8       planned_reconnects  reconnects the venue asked for (notices, seq gaps)
       112    8 u8       disconnects         connections lost unexpectedly
       120    8 u8       connect_failures    connection attempts that failed
       128    8 u8       silent_reconnects   reconnects because every symbol of a socket was silent
       136    8 i8       last_msg_ns         CLOCK_REALTIME ns of the newest frame (0 = none)
       144    8 i8       last_update_ns      recv time of the newest record produced (0 = none)
       152    8 u8       connected_mask      bit i set: socket i is connected
       160    8 u8       venue_status        records.VenueStatus last published (0 = none yet)
       168    8 u8       symbols             instruments subscribed
       176    8 u8       stale_symbols       (socket, symbol) pairs silent past the watchdog now
       184    8 u8       refused_symbols     symbols the venue refused by name
       192    8 u8       acks                subscribe acks received (all sockets)
       200    8 u8       errors              error frames received (all sockets)
       208    8 i8       updated_ns          CLOCK_REALTIME ns of this publication
       216  192 u8[24]   rejects             rejected frames/updates by reason slot (REJECT_SLOTS)
       408   32 u8[4]    conn_connected      per socket: 1 while connected
       440   32 u8[4]    conn_frames         per socket: data frames received
       472   32 u8[4]    conn_acks           per socket: acks on the current connection
       504   32 u8[4]    conn_errors         per socket: errors on the current connection
       536   32 u8[4]    conn_reconnects     per socket: reconnects
       568   32 i8[4]    conn_last_msg_ns    per socket: recv time of the newest frame
       600   32 S32      venue               venue name, ASCII, NUL padded
       632  128 S128     last_error          newest error text (ASCII, NUL padded, truncated)
       760    8 u8       halfopen_reconnects reconnects because a connection went half-open: nothing
                                             at all (not even a pong) came back for an idle probe
                                             (version 2; this word was reserved, zero, in version 1)
       768    8 u8       books               L2 books kept (0: depth off, BBO only)  } version 3
       776    8 u8       books_ready         of those, synced and in use now          }
       784    8 u8       book_messages       depth messages applied                   }
       792    8 u8       book_levels         LEVEL records published                  }
       800    8 u8       book_resyncs        books marked not ready and resynced      }
       808  128 u8[16]   resyncs_by_fault    book_resyncs by records.BookFault value  }
       936   88          (reserved, zero)

Reject reason slots: ``REJECT_REASONS[i]`` is slot i; slots after the named ones are
reserved (new names are appended there, never moved); every reason not listed is
counted in the last slot, ``other``.

Consistency: the single writer (the feed process) bumps ``gen`` to odd, copies the
record, bumps it to even; a reader copies the record and retries while ``gen`` is odd
or changed. Counters are monotonic except the per-connection ones and the gauges.
"""
import numpy as np

from shm_layouts.kinds import SegmentKind

FEED_STATS_KIND = int(SegmentKind.FEED_STATS)  # header kind; not a ring
FEED_STATS_VERSION = 3
FEED_STATS_OFFSET = 128       # bytes: the record follows the 128-byte header
MAX_SOCKETS = 4
REJECT_SLOTS = 24

REJECT_REASONS = (
    "not_json", "bad_shape", "bad_price", "crossed", "bad_ts", "unknown_symbol",
    "duplicate", "out_of_order", "unknown_channel", "unknown_topic", "no_funding",
    "no_bbo", "no_snapshot", "empty_book", "unsupported", "parse_error", "pack_error",
)
OTHER_SLOT = REJECT_SLOTS - 1
REJECT_SLOT = {name: i for i, name in enumerate(REJECT_REASONS)}
REJECT_SLOT_NAMES = tuple(REJECT_REASONS) + tuple(
    f"reserved{i}" for i in range(len(REJECT_REASONS), OTHER_SLOT)) + ("other",)
assert len(REJECT_REASONS) < REJECT_SLOTS and len(REJECT_SLOT_NAMES) == REJECT_SLOTS

_SCALARS = (
    ("gen", "u8"), ("version", "u8"), ("venue_id", "u8"), ("n_sockets", "u8"),
    ("frames", "u8"), ("updates", "u8"), ("quotes", "u8"), ("funding", "u8"),
    ("status_records", "u8"), ("rejects_total", "u8"), ("ring_dropped", "u8"),
    ("connects", "u8"), ("reconnects", "u8"), ("planned_reconnects", "u8"),
    ("disconnects", "u8"), ("connect_failures", "u8"), ("silent_reconnects", "u8"),
    ("last_msg_ns", "i8"), ("last_update_ns", "i8"), ("connected_mask", "u8"),
    ("venue_status", "u8"), ("symbols", "u8"), ("stale_symbols", "u8"),
    ("refused_symbols", "u8"), ("acks", "u8"), ("errors", "u8"), ("updated_ns", "i8"),
)
SCALAR_FIELDS = tuple(n for n, _ in _SCALARS)
TAIL_FIELDS = ("halfopen_reconnects",      # u8 counters after the text fields (version 2)
               "books", "books_ready", "book_messages", "book_levels", "book_resyncs")  # 3
FAULT_SLOTS = 16                            # resyncs_by_fault: one slot per BookFault value
CONN_FIELDS = ("conn_connected", "conn_frames", "conn_acks", "conn_errors", "conn_reconnects",
               "conn_last_msg_ns")


def _build():
    names, formats, offsets = [], [], []
    off = 0
    for n, t in _SCALARS:
        names.append(n)
        formats.append(np.dtype(t).newbyteorder("<"))
        offsets.append(off)
        off += 8
    names.append("rejects")
    formats.append((np.dtype("<u8"), (REJECT_SLOTS,)))
    offsets.append(off)
    off += 8 * REJECT_SLOTS
    for n in CONN_FIELDS:
        names.append(n)
        formats.append((np.dtype("<i8" if n.endswith("_ns") else "<u8"), (MAX_SOCKETS,)))
        offsets.append(off)
        off += 8 * MAX_SOCKETS
    names += ["venue", "last_error"]
    formats += ["S32", "S128"]
    offsets += [off, off + 32]
    off += 32 + 128
    for n in TAIL_FIELDS:
        names.append(n)
        formats.append(np.dtype("<u8"))
        offsets.append(off)
        off += 8
    names.append("resyncs_by_fault")
    formats.append((np.dtype("<u8"), (FAULT_SLOTS,)))
    offsets.append(off)
    off += 8 * FAULT_SLOTS
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": 1024}), off


FEED_STATS, _END = _build()
assert FEED_STATS.itemsize == 1024 and _END <= 1024
assert FEED_STATS.fields["rejects"][1] == 216
assert FEED_STATS.fields["conn_connected"][1] == 408
assert FEED_STATS.fields["venue"][1] == 600
assert FEED_STATS.fields["last_error"][1] == 632
assert FEED_STATS.fields["halfopen_reconnects"][1] == 760
assert FEED_STATS.fields["books"][1] == 768
assert FEED_STATS.fields["resyncs_by_fault"][1] == 808
SEGMENT_SIZE = 4096
assert FEED_STATS_OFFSET + FEED_STATS.itemsize <= SEGMENT_SIZE


def reject_slot(reason: str) -> int:
    """Slot index of a reject reason (``other`` for reasons not in the list)."""
    return REJECT_SLOT.get(reason, OTHER_SLOT)
