"""The detector's hop histograms, recorded from its kernels.

Two hops (``arbpipe.transport.histogram`` layout; the service's are the shared segments
``hist.feed_to_detector`` and ``hist.detect``, a bare ``Detector`` keeps private ones):

  feed_to_detector: read_ns - recv_ts_ns of every update ``pump`` pops from a feed ring, with
                    one CLOCK_REALTIME read (read_ns) per popped batch.
  detect:           detect_ns - read_ns of every OPEN / UPDATE record (``process_words``:
                    read_ns is its entry time). The hops add up: (read - recv) + (detect -
                    read) + (strategy read - detect) = strategy read - recv.

The kernels reach the histograms through their addresses in ``io`` (IO_HIST_FEED,
IO_HIST_DETECT), not through the state: every extra array in the state is passed, field by
field, on every call of the evaluation and emit kernels, which cost ~4% in the stress
benchmark.
"""
from __future__ import annotations

from numba import carray, njit
from numba.cpython.unsafe.numbers import leading_zeros

from arbpipe.transport.casts import i64_ptr
from arbpipe.transport import histogram as H
from shm_layouts import blocks as B

_KW = dict(cache=True, nogil=True, boundscheck=False)

# bucket index (shm_layouts.blocks, "Latency histogram"): values below LINEAR are their own
# bucket; above, HIST_SUB sub-buckets per power of two
SUB_BITS = B.HIST_SUB.bit_length() - 1
SUB_MASK = B.HIST_SUB - 1
LINEAR_BITS = SUB_BITS + 1
LINEAR = 1 << LINEAR_BITS
assert B.HIST_SUB == 1 << SUB_BITS and LINEAR == 2 * B.HIST_SUB


@njit(inline="always", **_KW)
def hist_at(addr):
    """The histogram words at ``addr`` (an address from io, never 0)."""
    return carray(i64_ptr(addr), (H.W_DATA + H.NB,))


@njit(inline="always", **_KW)
def io_hist_addr(io, slot):
    """The address in io word ``slot``; 0 (none) when io is too short to have it."""
    return io[slot] if io.shape[0] > slot else 0


@njit(inline="always", **_KW)
def hist_bucket(v):
    """``histogram.bucket_index`` (same buckets) with the leading one found by one ctlz
    instead of a shift loop: ~2 ns per value instead of ~30, which keeps a per-update record
    out of the detector's cost (tests/integration/test_bench_pipeline.py checks both agree)."""
    if v < LINEAR:
        return v
    m = 63 - leading_zeros(v)
    b = LINEAR + (m - LINEAR_BITS) * B.HIST_SUB + ((v >> (m - SUB_BITS)) & SUB_MASK)
    return b if b < H.NB else H.NB - 1


@njit(inline="always", **_KW)
def hist_record(h, v):
    """``histogram.record(h, v)`` with ``hist_bucket``: one value (ns) into histogram words."""
    if v < 0:
        h[H.W_UNDER] += 1
        return
    h[H.W_DATA + hist_bucket(v)] += 1
    h[H.W_COUNT] += 1
    h[H.W_SUM] += v
    if v > h[H.W_MAX]:
        h[H.W_MAX] = v
    if h[H.W_MIN] == 0 or v < h[H.W_MIN]:
        h[H.W_MIN] = v


@njit(**_KW)
def hist_bucket_of(v):
    """Test hook: ``hist_bucket`` callable from Python."""
    return hist_bucket(v)
