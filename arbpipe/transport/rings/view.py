"""Reading a ring without numba: ``attach`` (a ``RingView``: no reader slot, no semaphores),
``head_of`` and ``peek``, the plain-numpy twins of the kernels of
``arbpipe.transport.kernels.peek``, for a process that must not load numba and LLVM (the
supervisor's console line, ``arbpipe.ops.tree.Console``). A tap that polls a ring in a loop
uses the kernels (``arbpipe.ops.tap``).

``peek`` is the same seqlock-style read as the kernel: copy the committed records, re-read
the cursor that says which slots the producer may be overwriting (``claim`` in an SPSC
ring, ``head`` otherwise) and drop what it may have torn. Its loads are plain aligned
8-byte numpy loads, as in ``ring_stats``: the check relies on loads not being reordered
with each other, which x86-64 (TSO) guarantees and the kernel's acquire fence guarantees
everywhere.
"""
from __future__ import annotations

import numpy as np

from arbpipe.transport.rings.common import check_geometry
from arbpipe.transport.segments import Segment, default_instance
from shm_layouts import RECORD_TYPES
from shm_layouts.ring import HALF_MASK, HALF_SHIFT, W_CLAIM, W_GEOM, W_HEAD, W_OFFSETS, \
    WORD_SHIFT, RingKind

_SPSC, _MPMC, _BROADCAST = int(RingKind.SPSC), int(RingKind.MPMC), int(RingKind.BROADCAST)


class RingView:
    """A read-only look at a ring of any kind: its words, geometry and record dtype."""

    def __init__(self, seg: Segment):
        check_geometry(seg)
        h = seg.header
        self.seg = seg
        self.w = seg.words
        self.name = seg.name
        self.instance = seg.instance
        self.KIND = RingKind(h.kind)
        self.capacity = h.capacity
        self.record_size = h.record_size
        self.rw = h.record_size // 8
        self.record_type = h.record_type
        self.dtype = RECORD_TYPES.get(h.record_type) or np.dtype((np.void, h.record_size))

    def close(self) -> None:
        if self.w is not None:
            self.w = None
            self.seg.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def attach(name: str, instance: str | None = None) -> RingView:
    """A ``RingView`` of the ring ``name`` (of whatever kind its header says)."""
    return RingView(Segment.attach(instance or default_instance(), name))


def head_of(w) -> int:
    """The ring's ``head``."""
    return int(w[W_HEAD])


def peek(w, kind: int, pos: int, dst, m: int, out) -> None:
    """Copy up to m committed records from position ``pos`` on without consuming them, as
    ``arbpipe.transport.kernels.peek``: out[0] = first position copied (pos, or later if
    the ring moved past it), out[1] = records copied, out[2] = the position to peek from
    next."""
    g, o = int(w[W_GEOM]), int(w[W_OFFSETS])
    cap, rw = g >> HALF_SHIFT, (g & HALF_MASK) >> WORD_SHIFT
    data_w, seq_w = (o >> HALF_SHIFT) >> WORD_SHIFT, (o & HALF_MASK) >> WORD_SHIFT
    head = int(w[W_HEAD])
    if kind == _MPMC:  # only the committed prefix from pos
        start = max(pos, head - cap)
        k = 0
        while k < m and start + k < head:
            p = start + k
            s = int(w[seq_w + (p & (cap - 1))])
            if s != p + 1 and s != p + cap:
                break
            k += 1
    else:  # SPSC: slot head-cap stays intact until claim passes head; broadcast: it may not
        start = max(pos, head - cap + (1 if kind == _BROADCAST else 0))
        k = min(m, head - start)
    k = max(k, 0)
    s = start & (cap - 1)
    c1 = min(k, cap - s)
    dst[:c1 * rw] = w[data_w + s * rw: data_w + (s + c1) * rw]
    dst[c1 * rw: k * rw] = w[data_w: data_w + (k - c1) * rw]
    limit = int(w[W_CLAIM]) if kind == _SPSC else int(w[W_HEAD])
    bad = (limit - cap + (1 if kind == _BROADCAST else 0)) - start  # first safe position - start
    if bad > 0:
        bad = min(bad, k)
        dst[:(k - bad) * rw] = dst[bad * rw: k * rw].copy()
        start += bad
        k -= bad
    out[0] = start
    out[1] = k
    out[2] = start + k
