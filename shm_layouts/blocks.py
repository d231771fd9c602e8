"""Three small non-ring segment layouts: a state blob, a latency histogram and the
strategy's control block.

All three start with the standard 128-byte descriptor header of ``shm_layouts.ring`` (magic,
layout_version, kind, record_size, capacity, creator pid ...), ``data_offset = 128``.

State blob (header kind ``STATE_BLOB_KIND``) -- one writer, any number of readers
===================================================================================

A process publishes its current state (a JSON document) for ``arbpipe status``, the
dashboard and tests; readers never block the writer.

    offset size type  field       meaning
    ------ ---- ----  ----------  --------------------------------------------------------
       128    8 u8    gen         seqlock: odd while the writer copies a new document
       136    8 u8    length      bytes of JSON at BLOB_DATA
       144    8 i8    updated_ns  CLOCK_REALTIME ns of the newest document
       152    8 u8    writes      documents published so far
       256    -       data        UTF-8 JSON, ``length`` bytes (capacity = segment size - 256)

Writer: gen += 1 (odd), copy, length, updated_ns, gen += 1 (even, release store).
Reader: gen (acquire), copy, gen again; retry while odd or changed.

Latency histogram (header kind ``HISTOGRAM_KIND``) -- one writer, any number of readers
=========================================================================================

HdrHistogram-style log-linear buckets of values in ns: 3 significant bits past the
leading one are kept exact up to 64 ns; above, each power of two is split into
``HIST_SUB`` equal sub-buckets (relative error < 1 / HIST_SUB = 3.1%).

    offset size type      field    meaning
    ------ ---- --------  -------  -----------------------------------------------------
       128    8 i8        count    values recorded
       136    8 i8        sum_ns   sum of the values (mean = sum_ns / count)
       144    8 i8        max_ns   largest value recorded
       152    8 i8        min_ns   smallest value recorded (0 until the first one)
       160    8 i8        under    negative values (clock steps), counted, not bucketed
       168    8 i8        updated_ns  CLOCK_REALTIME ns of the newest record
       256 8*HIST_BUCKETS i8[]  buckets  counts per bucket (index: ``histogram_index``)

Bucket index of v >= 0:  v < 64: v;  else with m = floor(log2 v) (6..):
    64 + (m - 6) * 32 + ((v >> (m - 5)) & 31), clamped to HIST_BUCKETS - 1
Lowest value of bucket b >= 64: m = 6 + (b - 64) // 32, s = (b - 64) % 32:
    (32 + s) << (m - 5)
Counters only grow, so a window (e.g. the last minute) is the difference of two
snapshots; the single writer needs no atomics (readers tolerate a torn snapshot of
independent counters).

Strategy control (header kind ``CONTROL_KIND``, segment ``strategy.control``)
=============================================================================

Written by ``arbpipe kill-switch`` / ``arbpipe breaker reset`` from any shell, read by the
strategy before every order (so a flip takes effect on the next order, not the next tick).
Created by the supervisor (it outlives strategy restarts) or by a strategy run alone.

    offset size type  field             meaning
    ------ ---- ----  ----------------  -------------------------------------------------
       128    8 i8    kill_switch       1: no new orders (the breaker trips KILL_SWITCH)
       136    8 i8    kill_changed_ns   CLOCK_REALTIME ns of the last flip
       144    8 i8    reset_requests    +1 per ``arbpipe breaker reset``
       152    8 i8    kill_flips        flips so far
"""
from shm_layouts.kinds import SegmentKind


STATE_BLOB_KIND = int(SegmentKind.STATE_BLOB)
BLOB_GEN = 128
BLOB_LENGTH = 136
BLOB_UPDATED_NS = 144
BLOB_WRITES = 152
BLOB_DATA = 256

HISTOGRAM_KIND = int(SegmentKind.HISTOGRAM)
HIST_SUB = 32
HIST_MAX_POW = 42                      # values up to 2**42 ns (about 73 min) are bucketed
HIST_BUCKETS = 64 + (HIST_MAX_POW - 6 + 1) * HIST_SUB
HIST_COUNT = 128
HIST_SUM = 136
HIST_MAX = 144
HIST_MIN = 152
HIST_UNDER = 160
HIST_UPDATED_NS = 168
HIST_DATA = 256
HIST_SEGMENT_SIZE = HIST_DATA + 8 * HIST_BUCKETS

# strategy control: the table is in the module docstring
CONTROL_KIND = int(SegmentKind.CONTROL)
CTL_KILL = 128
CTL_KILL_CHANGED_NS = 136
CTL_RESET_REQUESTS = 144
CTL_KILL_FLIPS = 152
CONTROL_SIZE = 4096
