"""Every kind id arbpipe writes into shared memory, in one registry.

Two numbers identify what a segment holds, both in the standard 128-byte header of
``shm_layouts.ring``:

* ``kind`` (u4 at +12): what the segment is -- one of the three rings, or one of the
  non-ring segments (feed stats, supervisor liveness, detector stats, state blob,
  histogram, strategy control). ``SegmentKind`` lists them all; a new kind takes an
  unused number here and nowhere else.
* ``record_type`` (u4 at +52, rings only): the record a ring carries, so that ``arbpipe
  stat`` and ``arbpipe tap`` can decode any ring. ``RecordType`` lists them; 0 is raw
  words (benchmarks, tests).

    kind  name            layout
    ----  --------------  ------------------------------------------
       1  SPSC            shm_layouts.ring
       2  MPMC            shm_layouts.ring
       3  BROADCAST       shm_layouts.ring
      10  FEED_STATS      shm_layouts.feed_stats
      11  SUPERVISOR      header only (a live supervisor's pid and start time)
      21  DETECTOR_STATS  shm_layouts.detector_stats
      22  BOOKS           shm_layouts.books
      30  STATE_BLOB      shm_layouts.blocks
      31  HISTOGRAM       shm_layouts.blocks
      32  CONTROL         shm_layouts.blocks

    record_type  name            dtype
    -----------  --------------  ----------------------------------------------------
              0  RAW             none (fixed-width words)
              1  MARKET_UPDATE   shm_layouts.records.MARKET_UPDATE
              2  OPPORTUNITY_V1  retired (128-byte Opportunity layout 1): refused by name
              3  JOURNAL         shm_layouts.journal.JOURNAL
              4  OPPORTUNITY     shm_layouts.records.OPPORTUNITY (layout 2, 192 bytes)
"""
import enum


class SegmentKind(enum.IntEnum):
    SPSC = 1
    MPMC = 2
    BROADCAST = 3
    FEED_STATS = 10
    SUPERVISOR = 11
    DETECTOR_STATS = 21
    BOOKS = 22
    STATE_BLOB = 30
    HISTOGRAM = 31
    CONTROL = 32


class RingKind(enum.IntEnum):
    """The ring subset of ``SegmentKind`` (same numbers)."""
    SPSC = SegmentKind.SPSC
    MPMC = SegmentKind.MPMC
    BROADCAST = SegmentKind.BROADCAST


RING_KINDS = frozenset(int(k) for k in RingKind)


def is_ring(kind: int) -> bool:
    """True when a header's ``kind`` is one of the rings."""
    return int(kind) in RING_KINDS


class RecordType(enum.IntEnum):
    RAW = 0
    MARKET_UPDATE = 1
    OPPORTUNITY_V1 = 2    # retired (layout 1, 128 bytes): never written, refused on attach
    JOURNAL = 3
    OPPORTUNITY = 4


# the names ``RECORD_TYPE_IDS`` has always used (ring create/attach take these)
RECORD_TYPE_NAMES = {
    RecordType.RAW: "raw",
    RecordType.MARKET_UPDATE: "MarketUpdate",
    RecordType.OPPORTUNITY: "Opportunity",
    RecordType.JOURNAL: "JournalEntry",
}
