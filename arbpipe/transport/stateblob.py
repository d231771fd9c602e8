"""A process's current state as a JSON document in shared memory (``shm_layouts.blocks``).

One writer publishes with ``StateBlob.publish(dict)``; any process reads the newest
document with ``read_blob(instance, name)`` without ever blocking the writer (seqlock).
Used for the state that is not a fixed counter table: the strategy's positions and PnL,
the persister's backlog, the dashboard's accumulated view.
"""
from __future__ import annotations

import time

import msgspec
import numpy as np

from arbpipe.transport import segments
from shm_layouts import blocks as B
from shm_layouts import ring as L

DEFAULT_SIZE = 1 << 18  # 256 KiB: ample for a few hundred positions


class StateBlob:
    """The writer side of a ``<name>`` state blob segment (creator unlinks on close)."""

    def __init__(self, seg: segments.Segment):
        self.seg = seg
        self.w = seg.words
        self.b = seg.bytes
        self.capacity = len(self.b) - B.BLOB_DATA
        self._enc = msgspec.json.Encoder()

    @classmethod
    def create(cls, instance: str, name: str, size: int = DEFAULT_SIZE) -> "StateBlob":
        h = segments.HeaderInfo(L.MAGIC, L.LAYOUT_VERSION, B.STATE_BLOB_KIND, 1,
                                size - B.BLOB_DATA, 0, 0, 0, 0, 0, 0, 0, B.BLOB_DATA, name)
        return cls(segments.Segment.create(instance, name, size, h, reclaim_stale=True))

    def publish(self, doc) -> int:
        """Publish ``doc`` (anything msgspec encodes); returns its size in bytes.
        A document larger than the segment raises ValueError (nothing is published)."""
        data = self._enc.encode(doc)
        n = len(data)
        if n > self.capacity:
            raise ValueError(f"state document of {n} bytes exceeds the {self.capacity}-byte "
                             f"segment {self.seg.path}")
        w, g = self.w, B.BLOB_GEN // 8
        gen = int(w[g])
        w[g] = gen + 1                      # odd: readers retry
        self.b[B.BLOB_DATA:B.BLOB_DATA + n] = np.frombuffer(data, np.uint8)
        w[B.BLOB_LENGTH // 8] = n
        w[B.BLOB_UPDATED_NS // 8] = time.time_ns()
        w[B.BLOB_WRITES // 8] += 1
        w[g] = gen + 2                      # even: consistent (numpy stores are ordered on x86)
        return n

    def close(self, unlink: bool = True) -> None:
        inst, name = self.seg.instance, self.seg.name
        self.w = self.b = None
        self.seg.close()
        if unlink:
            segments.unlink(inst, name)


def read_blob(instance: str | None, name: str, retries: int = 1000) -> dict | None:
    """The newest document of blob ``name`` (with ``_updated_ns``, ``_pid``, ``_alive``
    added), or None when there is no such segment or nothing was published yet."""
    instance = instance or segments.default_instance()
    try:
        seg = segments.Segment.attach(instance, name, kind=B.STATE_BLOB_KIND)
    except segments.SegmentError:
        return None
    try:
        w, b, g = seg.words, seg.bytes, B.BLOB_GEN // 8
        for _ in range(retries):
            g1 = int(w[g])
            if g1 & 1:
                time.sleep(0)
                continue
            n = int(w[B.BLOB_LENGTH // 8])
            data = bytes(b[B.BLOB_DATA:B.BLOB_DATA + n])
            updated = int(w[B.BLOB_UPDATED_NS // 8])
            if int(w[g]) == g1:
                if n == 0:
                    return None
                doc = msgspec.json.decode(data)
                if isinstance(doc, dict):
                    h = seg.header
                    doc["_updated_ns"] = updated
                    doc["_pid"] = h.creator_pid
                    doc["_alive"] = not h.stale
                return doc
        return None
    finally:
        seg.close()
