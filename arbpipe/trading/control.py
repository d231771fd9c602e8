"""The ``strategy.control`` segment: the kill switch and breaker-reset requests.

Layout: "Strategy control" in ``shm_layouts.blocks``. The supervisor creates it (so it
outlives strategy restarts), a strategy run alone creates its own; ``arbpipe kill-switch``
and ``arbpipe breaker reset`` write it from any shell, and the strategy reads the kill
switch before every pair, so a flip takes effect on the next order.

This module imports no numba: operator commands use it without compiling kernels.
"""
from __future__ import annotations

import time

from arbpipe.transport import segments
from shm_layouts import blocks as B
from shm_layouts import ring as L

CONTROL_NAME = "strategy.control"

WORD = 8                                       # every control field is one int64 word
_KILL = B.CTL_KILL // WORD
_KILL_CHANGED = B.CTL_KILL_CHANGED_NS // WORD
_RESETS = B.CTL_RESET_REQUESTS // WORD
_FLIPS = B.CTL_KILL_FLIPS // WORD
CONTROL_WORDS = _FLIPS - _KILL + 1             # the header's capacity: fields, one word each


class Control:
    """Reads and writes the fields of an attached (or created) control segment."""

    def __init__(self, seg):
        self.seg = seg
        self.w = seg.words

    @classmethod
    def create(cls, instance: str, kill_switch: bool = False) -> "Control":
        h = segments.HeaderInfo(L.MAGIC, L.LAYOUT_VERSION, B.CONTROL_KIND, WORD, CONTROL_WORDS,
                                0, 0, 0, 0, 0, 0, 0, L.BLOCK, CONTROL_NAME)
        c = cls(segments.Segment.create(instance, CONTROL_NAME, B.CONTROL_SIZE, h,
                                        reclaim_stale=True))
        c.w[_KILL] = 1 if kill_switch else 0
        return c

    @classmethod
    def attach(cls, instance: str) -> "Control":
        return cls(segments.Segment.attach(instance, CONTROL_NAME, kind=B.CONTROL_KIND))

    @classmethod
    def open(cls, instance: str, kill_switch: bool = False) -> "Control":
        """Attach to the supervisor's control segment, or create one (a strategy alone)."""
        try:
            return cls.attach(instance)
        except segments.SegmentNotFound:
            try:
                return cls.create(instance, kill_switch)
            except segments.SegmentExists:
                return cls.attach(instance)

    @property
    def kill(self) -> bool:
        return bool(self.w[_KILL])

    def set_kill(self, on: bool) -> bool:
        """Flip the kill switch; returns the previous value."""
        prev = bool(self.w[_KILL])
        self.w[_KILL] = 1 if on else 0
        # stamped after the store: a decision that read its clock later sees the flip
        self.w[_KILL_CHANGED] = time.time_ns()
        if prev != on:
            self.w[_FLIPS] += 1
        return prev

    @property
    def kill_changed_ns(self) -> int:
        return int(self.w[_KILL_CHANGED])

    @property
    def reset_requests(self) -> int:
        return int(self.w[_RESETS])

    def request_reset(self) -> None:
        self.w[_RESETS] += 1

    def close(self, unlink: bool = False) -> None:
        inst = self.seg.instance
        created = self.seg.created
        self.w = None
        self.seg.close()
        if unlink and created:
            segments.unlink(inst, CONTROL_NAME)
