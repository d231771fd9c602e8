"""The detector's stats segment ``detector.stats`` (layout: ``shm_layouts.detector_stats``):
``DetectorStats`` creates it for the detector process (its kernel then writes the counters in
place), ``read_stats`` reads it from any process, ``render_stats`` prints it for ``arbpipe
stat detector``, ``counters_dict`` names the counters of any counters array,
``top_of_book_legs`` names the legs of a config that the detector sizes on their top level
(``[venues.<v>] depth = 0``: no L2 book, the slippage-depth model).

This module imports no numba, so readers (the persister, ``arbpipe stat``) stay light.
"""
from __future__ import annotations

import numpy as np

from arbpipe.transport import segments
from shm_layouts import VenueStatus
from shm_layouts import ring as L
from shm_layouts.detector_stats import (
    C_NLEGS, COUNTER_NAMES, LEG_STATUS, MAX_LEGS_IN_STATS, N_COUNTERS, SEGMENT_SIZE,
    STATS_KIND, STATS_NAME, STATS_OFFSET, STATS_WORD0, STATS_WORDS)

_STATUS_NAMES = {int(s): s.name for s in VenueStatus}


class DetectorStats:
    """The ``detector.stats`` segment: counters written in place by the kernel."""

    def __init__(self, seg):
        self.seg = seg
        w = seg.words
        self.counters = w[STATS_WORD0:STATS_WORD0 + N_COUNTERS]
        self.leg_status = w[STATS_WORD0 + LEG_STATUS:STATS_WORD0 + LEG_STATUS + MAX_LEGS_IN_STATS]

    @classmethod
    def create(cls, instance: str) -> "DetectorStats":
        h = segments.HeaderInfo(L.MAGIC, L.LAYOUT_VERSION, STATS_KIND, 8, STATS_WORDS, 0, 0, 0,
                                0, 0, 0, 0, STATS_OFFSET, STATS_NAME)
        return cls(segments.Segment.create(instance, STATS_NAME, SEGMENT_SIZE, h,
                                           reclaim_stale=True))

    def legs_view(self, n: int) -> np.ndarray:
        return self.leg_status[:n]

    def close(self, unlink: bool = True) -> None:
        inst = self.seg.instance
        self.counters = self.leg_status = None
        self.seg.close()
        if unlink:
            segments.unlink(inst, STATS_NAME)


def counters_dict(ctr, leg_status=None, leg_names=None) -> dict:
    """{counter name: value} of a counters array, with ``latency_mean_ns`` and, given the leg
    statuses, ``legs`` = {leg name: VenueStatus name (or the raw number if it is none)}."""
    d = {name: int(ctr[i]) for i, name in enumerate(COUNTER_NAMES)}
    n = d["opened"] + d["updated"]
    d["latency_mean_ns"] = d["latency_sum_ns"] // n if n else 0
    if leg_status is not None:
        names = leg_names or [f"leg{i}" for i in range(len(leg_status))]
        d["legs"] = {names[i]: _STATUS_NAMES.get(int(leg_status[i]), int(leg_status[i]))
                     for i in range(len(leg_status))}
    return d


def top_of_book_legs(cfg) -> list[str]:
    """Legs (``LegTable`` names) of the enabled venues configured with ``depth = 0``: they
    keep no L2 book, so the detector sizes every pair with them on the top level and the
    slippage-depth model (``detector.slippage_depth_bps``; flag OPP_TOP_OF_BOOK)."""
    flat = {name for name, v in cfg.enabled_venues().items() if v.depth == 0}
    return [n for n in cfg.legs().names if n in flat or n.removesuffix("-perp") in flat]


def read_stats(instance: str | None = None, leg_names: list[str] | None = None) -> dict | None:
    """Counters of a running (or last) detector of ``instance``, or None if there is none.
    ``leg_names`` (``load_config(...).legs().names``) labels the per-leg venue status."""
    instance = instance or segments.default_instance()
    try:
        seg = segments.Segment.attach(instance, STATS_NAME, kind=STATS_KIND)
    except segments.SegmentError:
        return None
    try:
        w = seg.words
        ctr = np.array(w[STATS_WORD0:STATS_WORD0 + N_COUNTERS])
        nl = int(ctr[C_NLEGS])
        legs = np.array(w[STATS_WORD0 + LEG_STATUS:STATS_WORD0 + LEG_STATUS + nl])
        d = counters_dict(ctr, legs, leg_names if leg_names and len(leg_names) == nl else None)
        h = seg.header
        d["pid"] = h.creator_pid
        d["alive"] = not h.stale
        return d
    finally:
        seg.close()


def render_stats(d: dict | None) -> str:
    """The text of ``arbpipe stat detector``."""
    if d is None:
        return "no detector stats (is the detector running?)"
    keys = ["updates", "quotes", "funding", "status", "evaluations", "opened", "updated",
            "closed", "open_now", "published"]
    lines = [f"detector pid {d.get('pid')} {'alive' if d.get('alive') else 'GONE'}",
             "  " + "  ".join(f"{k}={d[k]}" for k in keys),
             "  closed: " + "  ".join(f"{k[7:]}={d[k]}" for k in
                                      ("closed_spread_gone", "closed_quote_stale",
                                       "closed_venue_down", "closed_shutdown")),
             "  filters: " + "  ".join(f"{k[7:]}={d[k]}" for k in COUNTER_NAMES
                                       if k.startswith("filter_")),
             f"  latency trigger recv -> OPEN/UPDATE publish: mean {d['latency_mean_ns'] / 1e3:.1f} us, "
             f"max {d['latency_max_ns'] / 1e3:.1f} us"]
    lines.append(f"  sizing: walks={d.get('walks', 0)}  top_of_book="
                 f"{d.get('walks_top_of_book', 0)}  levels={d.get('walk_levels', 0)}")
    if d.get("legs"):
        lines.append("  legs: " + "  ".join(f"{k}={v}" for k, v in d["legs"].items()))
    tob = d.get("top_of_book_legs")
    if tob:
        lines.append("  top-of-book rule (depth = 0: no L2 book, sized on the top level with "
                     "the slippage-depth model): " + "  ".join(tob))
    elif tob is not None:
        lines.append("  every leg sized on its L2 book (no venue with depth = 0)")
    return "\n".join(lines)
