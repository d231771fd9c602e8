"""Latency histograms in shared memory (layout: ``shm_layouts.blocks``), recorded in numba.

One writer per histogram (the process that measures that hop) records values in ns with
``record(h, v)`` inside its numba loop (or ``Histogram.record`` from Python); any process
reads a snapshot with ``read_histogram(instance, name)`` and turns it into percentiles with
``summary(counts)``. Counts only grow: the difference of two snapshots is the histogram
of the values recorded between them (the dashboard's "last minute").

Names: ``hist.<hop>``, e.g. ``hist.feed_to_detector``, ``hist.detect``,
``hist.publish_to_strategy``, ``hist.total``; ``list_histograms`` finds them all.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from arbpipe.transport import segments
from shm_layouts import blocks as B
from shm_layouts import ring as L

_KW = dict(cache=True, nogil=True, boundscheck=False)
W_COUNT, W_SUM, W_MAX, W_MIN = B.HIST_COUNT // 8, B.HIST_SUM // 8, B.HIST_MAX // 8, B.HIST_MIN // 8
W_UNDER, W_UPDATED, W_DATA = B.HIST_UNDER // 8, B.HIST_UPDATED_NS // 8, B.HIST_DATA // 8
NB = B.HIST_BUCKETS
PREFIX = "hist."


@njit(inline="always", **_KW)
def bucket_index(v):
    """Bucket of a value v >= 0 (see the layout docstring)."""
    if v < 64:
        return v
    m = 63
    while (v >> m) == 0:
        m -= 1
    b = 64 + (m - 6) * 32 + ((v >> (m - 5)) & 31)
    return b if b < NB else NB - 1


@njit(**_KW)
def bucket_low(b):
    """Smallest value that lands in bucket b."""
    if b < 64:
        return b
    m = 6 + (b - 64) // 32
    s = (b - 64) % 32
    return (32 + s) << (m - 5)


@njit(inline="always", **_KW)
def record(h, v):
    """Record one value (ns) into histogram words ``h`` (a whole segment's int64 view)."""
    if v < 0:
        h[W_UNDER] += 1
        return
    h[W_DATA + bucket_index(v)] += 1
    h[W_COUNT] += 1
    h[W_SUM] += v
    if v > h[W_MAX]:
        h[W_MAX] = v
    if h[W_MIN] == 0 or v < h[W_MIN]:
        h[W_MIN] = v


@njit(**_KW)
def record_many(h, values, n):
    for i in range(n):
        record(h, values[i])


class Histogram:
    """The writer side of ``hist.<hop>`` (its creator unlinks it on close)."""

    def __init__(self, seg: segments.Segment):
        self.seg = seg
        self.h = seg.words

    @classmethod
    def create(cls, instance: str, hop: str) -> "Histogram":
        name = PREFIX + hop
        h = segments.HeaderInfo(L.MAGIC, L.LAYOUT_VERSION, B.HISTOGRAM_KIND, 8, NB, 0, 0, 0,
                                0, 0, 0, 0, B.HIST_DATA, name)
        return cls(segments.Segment.create(instance, name, B.HIST_SEGMENT_SIZE, h,
                                           reclaim_stale=True))

    def record(self, v: int) -> None:
        record(self.h, int(v))

    def close(self, unlink: bool = True) -> None:
        inst, name = self.seg.instance, self.seg.name
        self.h = None
        self.seg.close()
        if unlink:
            segments.unlink(inst, name)


def empty() -> np.ndarray:
    """A snapshot-shaped zero array (header words included, so indices match)."""
    return np.zeros(W_DATA + NB, np.int64)


def read_histogram(instance: str | None, hop: str) -> np.ndarray | None:
    """A copy of ``hist.<hop>``'s words (index with W_* / W_DATA), or None if missing."""
    instance = instance or segments.default_instance()
    try:
        seg = segments.Segment.attach(instance, PREFIX + hop, kind=B.HISTOGRAM_KIND)
    except segments.SegmentError:
        return None
    try:
        return np.array(seg.words[:W_DATA + NB])
    finally:
        seg.close()


def list_histograms(instance: str | None = None) -> list[str]:
    """Hop names of every histogram segment of ``instance``."""
    instance = instance or segments.default_instance()
    return [s.name[len(PREFIX):] for s in segments.list_segments(instance)
            if s.name.startswith(PREFIX)]


def diff(new: np.ndarray, old: np.ndarray | None) -> np.ndarray:
    """The values recorded between snapshot ``old`` and ``new`` (max/min: of ``new``). A
    bucket that went down means the writer made the histogram anew in between (a restart):
    then everything ``new`` holds was recorded since, and that is returned."""
    if old is None:
        return new
    d = new - old
    if (d[W_DATA:W_DATA + NB] < 0).any() or d[W_COUNT] < 0:
        return new.copy()
    d[W_MAX], d[W_MIN] = new[W_MAX], new[W_MIN]
    return d


def percentile(snap: np.ndarray, q: float) -> float:
    """Value at percentile q (0..100): the middle of the bucket holding that rank,
    capped at the recorded max. NaN when empty."""
    counts = snap[W_DATA:W_DATA + NB]
    total = int(counts.sum())
    if total == 0:
        return float("nan")
    rank = max(1, int(np.ceil(q / 100.0 * total)))
    b = int(np.searchsorted(np.cumsum(counts), rank))
    lo = bucket_low(b)
    hi = bucket_low(b + 1) if b + 1 < NB else lo
    mid = lo if b < 64 else (lo + hi - 1) / 2.0
    mx = int(snap[W_MAX])
    return float(min(mid, mx)) if mx > 0 else float(mid)


def summary(snap: np.ndarray | None) -> dict:
    """{"count", "mean_ns", "p50_ns", "p99_ns", "p999_ns", "max_ns"} of a snapshot."""
    if snap is None:
        snap = empty()
    n = int(snap[W_DATA:W_DATA + NB].sum())
    return {"count": n,
            "mean_ns": float(snap[W_SUM]) / n if n else float("nan"),
            "p50_ns": percentile(snap, 50), "p99_ns": percentile(snap, 99),
            "p999_ns": percentile(snap, 99.9),
            "max_ns": float(snap[W_MAX]) if n else float("nan")}


def from_values(values) -> np.ndarray:
    """A snapshot built from an array of ns values (benchmarks' in-process use)."""
    snap = empty()
    v = np.ascontiguousarray(values, dtype=np.int64)
    record_many(snap, v, len(v))
    return snap
