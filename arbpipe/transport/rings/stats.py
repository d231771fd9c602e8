"""``ring_stats``: the counters of any ring, read from its segment without a handle and
without disturbing it (plain aligned loads), for ``arbpipe stat rings``, the dashboard
and ``Ring.stats``."""
from __future__ import annotations

from arbpipe.transport.segments import Segment, pid_alive
from shm_layouts import RECORD_TYPE_IDS
from shm_layouts import ring as L
from shm_layouts.ring import FullPolicy, RingKind


def ring_stats(seg: Segment) -> dict:
    """Counters of a ring, read without disturbing it (plain aligned loads)."""
    w = seg.words
    h = seg.header
    kind = RingKind(h.kind)
    head = int(w[L.W_HEAD])
    tail = int(w[L.W_TAIL])
    readers = []
    for i in range(h.max_readers):
        sw = L.W_READERS + i * L.READER_SLOT_WORDS
        pid = int(w[sw + L.R_OWNER_PID])
        if not pid:
            continue
        start = int(w[sw + L.R_OWNER_START])
        off = sw * 8 + L.READER_NAME_OFF
        name = bytes(seg.bytes[off:off + L.READER_NAME_LEN]).rstrip(b"\0").decode("ascii",
                                                                                  "replace")
        pos = int(w[sw + L.R_POSITION]) if kind == RingKind.BROADCAST else tail
        readers.append({"name": name, "pid": pid, "alive": pid_alive(pid, start),
                        "position": pos, "lag": max(head - pos, 0),
                        "received": int(w[sw + L.R_RECEIVED]), "lost": int(w[sw + L.R_LOST]),
                        "lapped": int(w[sw + L.R_LAPS]), "sleeps": int(w[sw + L.R_SLEEPS]),
                        "wakes": int(w[sw + L.R_WAKES])})
    fill = 0 if kind == RingKind.BROADCAST else max(head - tail, 0)
    cd, pd = L.W_CDOOR, L.W_PDOOR
    return {
        "name": seg.name, "instance": seg.instance, "kind": kind.name.lower(),
        "record": {v: k for k, v in RECORD_TYPE_IDS.items()}.get(h.record_type, "raw"),
        "record_size": h.record_size, "capacity": h.capacity,
        "policy": FullPolicy(h.policy).name.lower(), "creator_pid": h.creator_pid,
        "published": head, "consumed": tail if kind != RingKind.BROADCAST else None,
        "fill": fill, "fill_pct": 100.0 * fill / h.capacity,
        "dropped": int(w[L.W_DROPPED]), "full_events": int(w[L.W_FULL_EVENTS]),
        "batches": int(w[L.W_BATCHES]),
        "abandoned": int(w[L.W_ABANDONED]), "orphaned": int(w[L.W_ORPHANED]),
        "sleeps": int(w[cd + L.D_SLEEPS]), "wakes": int(w[cd + L.D_WAKES]),
        "posts": int(w[cd + L.D_POSTS]), "sleepers": int(w[cd + L.D_SLEEPERS]),
        "sleepers_reclaimed": int(w[cd + L.D_RECLAIMED]),
        "producer_sleeps": int(w[pd + L.D_SLEEPS]), "producer_wakes": int(w[pd + L.D_WAKES]),
        "producer_posts": int(w[pd + L.D_POSTS]), "producer_sleepers": int(w[pd + L.D_SLEEPERS]),
        "producer_sleepers_reclaimed": int(w[pd + L.D_RECLAIMED]),
        "readers": readers,
    }
