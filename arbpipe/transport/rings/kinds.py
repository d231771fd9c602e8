"""The ring classes by ``RingKind``, and ``attach_any`` (attach to a ring of whatever kind
its header says: ``arbpipe tap``, the recorder, the supervisor's checks)."""
from __future__ import annotations

from arbpipe.transport.rings.broadcast import BroadcastRing
from arbpipe.transport.rings.common import Ring
from arbpipe.transport.rings.mpmc import MpmcRing
from arbpipe.transport.rings.spsc import SpscRing
from arbpipe.transport.segments import Segment, default_instance
from shm_layouts.ring import RingKind

RING_CLASSES = {RingKind.SPSC: SpscRing, RingKind.MPMC: MpmcRing,
                RingKind.BROADCAST: BroadcastRing}


def attach_any(name: str, instance: str | None = None) -> Ring:
    """Attach to a ring of whatever kind its header says."""
    instance = instance or default_instance()
    seg = Segment.attach(instance, name)
    kind = RingKind(seg.header.kind)
    return RING_CLASSES[kind](seg)
