"""Detector counters segment ``detector.stats``: one per running detector, readable from any
shell (``arbpipe stat detector``, the dashboard, the persister's leg events).

Segment layout: 4096 bytes. The standard 128-byte descriptor header of ``shm_layouts.ring``
(magic, layout_version, creator pid, ...) with ``kind = STATS_KIND``
(``SegmentKind.DETECTOR_STATS``, 21, so ring tools skip it), ``record_size = 8``, ``capacity =
STATS_WORDS`` (the int64 words after the header) and ``data_offset = STATS_OFFSET`` (128); one
``DETECTOR_STATS`` record fills the rest of the segment. The detector's kernel writes the
counters in place (plain int64 stores, one writer); a reader copies them and tolerates a torn
snapshot of independent counters.

Kernels index the counters as an int64 array that starts at ``STATS_OFFSET``: counter
``name`` is word ``C_<NAME>`` (or ``F_<NAME>`` for the filters), i.e. its offset below / 8.

DetectorStats -- 3968 bytes, little-endian int64 words
======================================================

    offset size type     field                 meaning
    ------ ---- -------  --------------------  ---------------------------------------------
         0    8 i8       updates               MarketUpdates applied (every kind, unknown too)
         8    8 i8       quotes                QUOTE records of a known (instrument, leg)
        16    8 i8       funding               FUNDING records of a known (instrument, leg)
        24    8 i8       status                STATUS records
        32    8 i8       evaluations           candidate pairs checked (both quoted, gross > 0)
        40    8 i8       opened                OPEN records published
        48    8 i8       updated               UPDATE records published
        56    8 i8       closed                CLOSED records published
        64    8 i8       closed_spread_gone    ... of them with CloseReason.SPREAD_GONE
        72    8 i8       closed_quote_stale    ... CloseReason.QUOTE_STALE
        80    8 i8       closed_venue_down     ... CloseReason.VENUE_DOWN
        88    8 i8       closed_shutdown       ... CloseReason.SHUTDOWN
        96    8 i8       filter_stale          candidates with a leg quote older than max_quote_age
       104    8 i8       filter_status         candidates with a venue or instrument status not UP
       112    8 i8       filter_invalid        invalid QUOTE / FUNDING values (not finite, crossed)
       120    8 i8       filter_implausible    candidates above max_plausible_spread_bps
       128    8 i8       filter_below_net      candidates below min_net_bps
       136    8 i8       filter_confidence     candidates below confidence_floor
       144    8 i8       filter_persist        qualifying candidates still pending (persistence)
       152    8 i8       filter_unknown        updates of an unknown venue / leg / instrument / kind
       160    8 i8       open_now              gauge: opportunities open now
       168    8 i8       published             Opportunity records written (every state)
       176    8 i8       dropped_out           records lost to a full collect-mode buffer (0 when
                                               publishing to the ring)
       184    8 i8       opp_counter           opportunities numbered so far (opp_id = base + n)
       192    8 i8       seq                   seq of the newest Opportunity record
       200    8 i8       last_trigger_recv_ns  recv_ts_ns of the newest update applied
       208    8 i8       last_detect_ns        detect_ns of the newest record published
       216    8 i8       latency_sum_ns        sum of detect_ns - trigger_recv_ns, OPEN and UPDATE
       224    8 i8       latency_max_ns        largest of those
       232    8 i8       sweeps                staleness sweeps run
       240    8 i8       kernel_calls          kernel entries (batches applied, pump calls)
       248    8 i8       idle_waits            times the service slept on the ring doorbells
       256    8 i8       heartbeat_ns          CLOCK_REALTIME ns of the newest housekeeping pass
       264    8 i8       n_legs                legs of the config: entries of leg_status in use
       272    8 i8       n_instruments         instruments of the config
       280    8 i8       filter_size           candidates whose size is 0 after the lot step or
                                               under a venue's min notional
       288    8 i8       walks                 candidates sized by walking both L2 books
       296    8 i8       walks_top_of_book     candidates sized on a top level (a leg without
                                               a book: depth 0 or no depth message yet)
       304    8 i8       walk_levels           levels consumed by those walks, both sides
       312  200          (reserved, zero: counter slots 39..63; new counters are appended here)
       512 3456 i8[432]  leg_status            VenueStatus of each leg (config leg order,
                                               ``arbpipe.config.LegTable``); n_legs used

Counters only grow, except the gauges (open_now, the last_* / heartbeat times, n_legs,
n_instruments, leg_status). A detector restart recreates the segment from zero.
"""
import numpy as np

from shm_layouts.kinds import SegmentKind
from shm_layouts.ring import BLOCK

STATS_KIND = int(SegmentKind.DETECTOR_STATS)   # header kind; not a ring
STATS_NAME = "detector.stats"
SEGMENT_SIZE = 4096
STATS_OFFSET = BLOCK                # bytes: the record follows the 128-byte header
STATS_WORD0 = STATS_OFFSET // 8     # segment word of counter 0
STATS_WORDS = (SEGMENT_SIZE - STATS_OFFSET) // 8

COUNTER_NAMES = (
    "updates", "quotes", "funding", "status", "evaluations",
    "opened", "updated", "closed",
    "closed_spread_gone", "closed_quote_stale", "closed_venue_down", "closed_shutdown",
    "filter_stale", "filter_status", "filter_invalid", "filter_implausible",
    "filter_below_net", "filter_confidence", "filter_persist", "filter_unknown",
    "open_now", "published", "dropped_out", "opp_counter", "seq",
    "last_trigger_recv_ns", "last_detect_ns", "latency_sum_ns", "latency_max_ns",
    "sweeps", "kernel_calls", "idle_waits", "heartbeat_ns", "n_legs", "n_instruments",
    "filter_size", "walks", "walks_top_of_book", "walk_levels",
)
N_COUNTERS = 64                     # counter slots (the named ones, then reserved)
MAX_LEGS_IN_STATS = STATS_WORDS - N_COUNTERS
LEG_STATUS = N_COUNTERS             # word of leg 0's status, counted from counter 0
assert len(COUNTER_NAMES) <= N_COUNTERS


def _build():
    names = list(COUNTER_NAMES) + ["leg_status"]
    formats = [np.dtype("<i8")] * len(COUNTER_NAMES) + [(np.dtype("<i8"), (MAX_LEGS_IN_STATS,))]
    offsets = [8 * i for i in range(len(COUNTER_NAMES))] + [8 * LEG_STATUS]
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": SEGMENT_SIZE - STATS_OFFSET})


DETECTOR_STATS = _build()
assert DETECTOR_STATS.itemsize == 3968 and MAX_LEGS_IN_STATS == 432


def counter(name):
    """Word index of counter ``name`` in the counters array (its offset / 8)."""
    return DETECTOR_STATS.fields[name][1] // 8


C_UPDATES = counter("updates")
C_QUOTES = counter("quotes")
C_FUNDING = counter("funding")
C_STATUS = counter("status")
C_EVALS = counter("evaluations")
C_OPENED = counter("opened")
C_UPDATED = counter("updated")
C_CLOSED = counter("closed")
C_CL_GONE = counter("closed_spread_gone")
C_CL_STALE = counter("closed_quote_stale")
C_CL_DOWN = counter("closed_venue_down")
C_CL_SHUT = counter("closed_shutdown")
F_STALE = counter("filter_stale")
F_STATUS = counter("filter_status")
F_INVALID = counter("filter_invalid")
F_IMPLAUSIBLE = counter("filter_implausible")
F_BELOW = counter("filter_below_net")
F_CONF = counter("filter_confidence")
F_PERSIST = counter("filter_persist")
F_UNKNOWN = counter("filter_unknown")
C_OPEN_NOW = counter("open_now")
C_PUBLISHED = counter("published")
C_DROPPED = counter("dropped_out")
C_OPP_N = counter("opp_counter")
C_SEQ = counter("seq")
C_LAST_TRIG = counter("last_trigger_recv_ns")
C_LAST_DETECT = counter("last_detect_ns")
C_LAT_SUM = counter("latency_sum_ns")
C_LAT_MAX = counter("latency_max_ns")
C_SWEEPS = counter("sweeps")
C_CALLS = counter("kernel_calls")
C_IDLE = counter("idle_waits")
C_HEARTBEAT = counter("heartbeat_ns")
C_NLEGS = counter("n_legs")
C_NINST = counter("n_instruments")
F_SIZE = counter("filter_size")
C_WALKS = counter("walks")
C_WALKS_TOB = counter("walks_top_of_book")
C_WALK_LEVELS = counter("walk_levels")
