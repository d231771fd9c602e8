"""The feed counters segment (layout: ``shm_layouts.feed_stats``): the feed's single
writer (``FeedStatsWriter``) and the readers any process may use (``read_record``,
``read_feed_stats``), plus the ``arbpipe stat feeds`` table (``render_feed_stats``).

The record is published under a seqlock: the writer makes ``gen`` odd, copies the record
after it, makes ``gen`` even; a reader copies and retries while ``gen`` is odd or moved.
"""
from __future__ import annotations

import time

import numpy as np

from arbpipe.transport import segments
from arbpipe.transport.segments import HeaderInfo, Segment, SegmentError
from shm_layouts import feed_stats as FS
from shm_layouts import ring as L
from shm_layouts.records import BookFault, VenueStatus

time_ns = time.time_ns

_GEN_OFFSET = FS.FEED_STATS.fields["gen"][1]               # the seqlock word in the record
_GEN_WORD = (FS.FEED_STATS_OFFSET + _GEN_OFFSET) // 8        # ... as a word of the segment
_BODY = _GEN_OFFSET + FS.FEED_STATS.fields["gen"][0].itemsize  # record bytes after gen
_RECORD = slice(FS.FEED_STATS_OFFSET, FS.FEED_STATS_OFFSET + FS.FEED_STATS.itemsize)
_VENUE_LEN = FS.FEED_STATS.fields["venue"][0].itemsize            # S32
_ERROR_LEN = FS.FEED_STATS.fields["last_error"][0].itemsize       # S128


class FeedStatsWriter:
    """The feed's counters segment (layout: ``shm_layouts.feed_stats``); single writer."""

    def __init__(self, seg: Segment):
        self.seg = seg
        self._rec = np.zeros(1, FS.FEED_STATS)
        self._raw = self._rec.view(np.uint8)
        self._dst = seg.bytes[_RECORD]
        self._gen = 0

    @classmethod
    def create(cls, instance: str, name: str, venue: str, venue_id: int,
               n_sockets: int) -> "FeedStatsWriter":
        h = HeaderInfo(L.MAGIC, L.LAYOUT_VERSION, FS.FEED_STATS_KIND, FS.FEED_STATS.itemsize, 1,
                       0, 0, 0, 0, 0, 0, 0, FS.FEED_STATS_OFFSET, name)
        seg = Segment.create(instance, name, FS.SEGMENT_SIZE, h, reclaim_stale=True)
        w = cls(seg)
        w.publish({"venue": venue, "venue_id": venue_id, "n_sockets": n_sockets})
        return w

    def publish(self, c: dict) -> None:
        r = self._rec[0]
        for f in FS.SCALAR_FIELDS[1:] + FS.TAIL_FIELDS:
            v = c.get(f)
            if v is not None:
                r[f] = v
        r["version"] = FS.FEED_STATS_VERSION
        rejects = np.zeros(FS.REJECT_SLOTS, np.uint64)
        for reason, n in (c.get("rejects") or {}).items():
            rejects[FS.reject_slot(reason)] += n
        r["rejects"] = rejects
        faults = c.get("resyncs_by_fault")
        if faults is not None:
            arr = np.zeros(FS.FAULT_SLOTS, np.uint64)
            for code, n in faults.items():
                arr[min(int(code), FS.FAULT_SLOTS - 1)] += n
            r["resyncs_by_fault"] = arr
        for f in FS.CONN_FIELDS:
            v = c.get(f)
            if v is not None:
                arr = np.zeros(FS.MAX_SOCKETS, r[f].dtype)
                arr[:len(v)] = v[:FS.MAX_SOCKETS]
                r[f] = arr
        if "venue" in c:
            r["venue"] = c["venue"].encode("ascii", "replace")[:_VENUE_LEN]
        if "last_error" in c:
            r["last_error"] = c["last_error"].encode("ascii", "replace")[:_ERROR_LEN]
        r["updated_ns"] = time_ns()
        words = self.seg.words
        g = self._gen
        words[_GEN_WORD] = g + 1                   # odd: being written
        self._dst[_BODY:] = self._raw[_BODY:]
        words[_GEN_WORD] = g + 2
        self._gen = g + 2

    def close(self) -> None:
        self._dst = None
        self.seg.close()

    def unlink(self) -> None:
        segments.unlink(self.seg.instance, self.seg.name)


def read_record(seg: Segment) -> np.ndarray:
    """A consistent copy of the FEED_STATS record of an attached counters segment (the
    last, possibly torn, record when its writer died mid-update)."""
    words = seg.words
    src = seg.bytes[_RECORD]
    out = np.zeros(1, FS.FEED_STATS)
    raw = out.view(np.uint8)
    for _ in range(1000):
        g1 = int(words[_GEN_WORD])
        if g1 & 1:
            time.sleep(0)
            continue
        raw[:] = src
        if int(words[_GEN_WORD]) == g1:
            return out
    raw[:] = src            # the writer died mid-update: its last (possibly torn) record
    return out


def _fault_name(code: int) -> str:
    return BookFault(code).name.lower() if code in BookFault._value2member_map_ else str(code)


def stats_record_to_dict(rec: np.ndarray) -> dict:
    r = rec[0]
    d = {f: int(r[f]) for f in FS.SCALAR_FIELDS + FS.TAIL_FIELDS}
    d["rejects"] = {name: int(n) for name, n in zip(FS.REJECT_SLOT_NAMES, r["rejects"]) if n}
    d["resyncs_by_fault"] = {_fault_name(k): int(n) for k, n in enumerate(r["resyncs_by_fault"])
                             if n}
    n = max(1, min(int(r["n_sockets"]), FS.MAX_SOCKETS))
    for f in FS.CONN_FIELDS:
        d[f] = [int(x) for x in r[f][:n]]
    d["venue"] = bytes(r["venue"]).decode("ascii", "replace")
    d["last_error"] = bytes(r["last_error"]).decode("ascii", "replace")
    st = d["venue_status"]
    d["venue_status_name"] = VenueStatus(st).name if st in VenueStatus._value2member_map_ else ""
    return d


def read_feed_stats(instance: str | None = None, name: str | None = None) -> list[dict]:
    """Counters of every running (or stale) feed, from any process, read-only.
    ``instance`` None = all instances; ``name`` = one segment (``feed.<venue>.stats``)."""
    out = []
    for s in segments.list_segments(instance):
        if s.header is None or s.header.kind != FS.FEED_STATS_KIND:
            continue
        if name is not None and s.name != name:
            continue
        try:
            seg = Segment.attach(s.instance, s.name, kind=FS.FEED_STATS_KIND,
                                 record_size=FS.FEED_STATS.itemsize)
        except SegmentError:
            continue
        try:
            rec = read_record(seg)
        finally:
            seg.close()
        d = stats_record_to_dict(rec)
        d.update(instance=s.instance, name=s.name, pid=s.header.creator_pid, stale=s.stale)
        out.append(d)
    return out


_FAULT_COUNTERS = (("connects", "connects"), ("lost", "disconnects"),
                   ("planned", "planned_reconnects"), ("silent", "silent_reconnects"),
                   ("half_open", "halfopen_reconnects"), ("connect_failures", "connect_failures"),
                   ("errors", "errors"))


def render_feed_stats(rows: list[dict]) -> str:
    """One line per feed (``arbpipe stat feeds``)."""
    if not rows:
        return "no feed handlers (is a pipeline or `arbpipe feed` running?)"
    now = time_ns()
    hdr = (f"{'instance':<10} {'venue':<13} {'status':<12} {'conn':>4} {'frames':>10} "
           f"{'updates':>10} {'rejects':>8} {'dropped':>8} {'reconn':>6} {'stale':>5} "
           f"{'refused':>7} {'last msg':>9}")
    lines = [hdr, "-" * len(hdr)]
    for r in rows:
        age = f"{(now - r['last_msg_ns']) / 1e9:.1f}s" if r["last_msg_ns"] else "-"
        conn = f"{bin(r['connected_mask']).count('1')}/{r['n_sockets']}"
        lines.append(f"{r['instance']:<10} {r['venue']:<13} {r['venue_status_name'] or '-':<12} "
                     f"{conn:>4} {r['frames']:>10} {r['updates']:>10} {r['rejects_total']:>8} "
                     f"{r['ring_dropped']:>8} {r['reconnects']:>6} {r['stale_symbols']:>5} "
                     f"{r['refused_symbols']:>7} {age:>9}" + ("  GONE" if r.get("stale") else ""))
        faults = [(k, r.get(f, 0)) for k, f in _FAULT_COUNTERS if r.get(f, 0)]
        if faults:
            lines.append(" " * 11 + "connections: " + ", ".join(f"{k}={v}" for k, v in faults))
        if r["rejects"]:
            lines.append(" " * 11 + "rejects: " + ", ".join(f"{k}={v}" for k, v in r["rejects"].items()))
        if r.get("books"):
            lines.append(" " * 11 + f"books: {r['books_ready']}/{r['books']} ready, "
                         f"{r['book_messages']:,} messages, {r['book_levels']:,} levels, "
                         f"{r['book_resyncs']} resyncs" + (" (" + ", ".join(
                             f"{k}={v}" for k, v in r["resyncs_by_fault"].items()) + ")"
                             if r["resyncs_by_fault"] else ""))
        if r["last_error"]:
            lines.append(" " * 11 + "last error: " + r["last_error"])
    return "\n".join(lines)
