"""Recording market data off the feed rings into a file (``arbpipe record``).

``Recorder`` taps every ``feed.<venue>`` ring of an instance the way ``arbpipe tap`` does
(``kernels.peek``): it never consumes and never slows the producer or the detector.
It starts at each ring's head (records published from then on; ``from_start``: at the oldest
record each ring still holds, everything since the ring was created when it has not yet
wrapped) and appends what it reads in ring order, to a new file or to the end of an existing recording of the same venues
and instruments (``arbpipe.replay.file``). If it falls more than a ring's capacity behind
(it polls every millisecond, so a 65536-record ring gives it ~65 ms at 1M updates/s), the
records it could not read are counted in ``missed`` (in the header).
"""
from __future__ import annotations

import time

import numpy as np

from arbpipe.config import load_config
from arbpipe.replay.file import RecordingWriter, names_from_config
from arbpipe.transport import kernels as K
from arbpipe.transport import segments
from arbpipe.transport.rings import attach_any
from shm_layouts import MARKET_UPDATE
from shm_layouts import words as W
from shm_layouts.kinds import RecordType, RingKind


def feed_rings(instance: str) -> list[str]:
    """Names of the MarketUpdate SPSC rings ``feed.*`` of an instance."""
    out = []
    for s in segments.list_segments(instance):
        h = s.header
        if (s.name.startswith("feed.") and h is not None and h.kind == int(RingKind.SPSC)
                and h.record_type == int(RecordType.MARKET_UPDATE)):
            out.append(s.name)
    return out


class Recorder:
    """Taps rings (default: every ``feed.*`` ring of ``instance``) into a recording file.

    ``poll()`` appends what is new since the last poll (never waits); ``run()`` polls
    until ``stop()``, ``duration`` or ``count``, sleeping ``idle_s`` when nothing is new.
    """

    def __init__(self, path: str, instance: str | None = None, rings: list[str] | None = None,
                 cfg=None, batch: int = 4096, append: bool = False, from_start: bool = False):
        self.instance = instance or segments.default_instance()
        names = list(rings) if rings else feed_rings(self.instance)
        if not names:
            raise segments.SegmentNotFound(f"no feed.* rings in instance {self.instance!r} "
                                           f"(is the pipeline up?)")
        self.rings = []
        try:
            for n in names:
                r = attach_any(n, instance=self.instance)
                if r.record_size != MARKET_UPDATE.itemsize:
                    raise segments.SegmentError(f"ring {n!r} holds {r.record_size}-byte records, "
                                                f"not MarketUpdate")
                self.rings.append(r)
        except Exception:
            for r in self.rings:
                r.close()
            raise
        if cfg is None:
            cfg = load_config()
        try:
            self.writer = RecordingWriter(path, names_from_config(
                cfg, names, source=f"arbpipe record, instance {self.instance}"), append)
        except Exception:
            for r in self.rings:
                r.close()
            raise
        # position 0: peek starts at the oldest record still held (what was overwritten
        # before the recorder came is not counted as missed: it was never the recorder's)
        self.pos = [0 if from_start else int(K.head_of(r.w)) for r in self.rings]
        self.from_start = from_start
        self.kinds = [int(r.KIND) for r in self.rings]
        self.batch = batch
        self.buf = np.zeros(batch * W.MU_WORDS, np.int64)
        self.out = np.zeros(3, np.int64)

    @property
    def records(self) -> int:
        return self.writer.records

    @property
    def missed(self) -> int:
        return self.writer.missed

    def poll(self, limit: int | None = None) -> int:
        """Append every record published since the last poll (up to ``limit``)."""
        got = 0
        w = self.writer
        for i, r in enumerate(self.rings):
            while limit is None or got < limit:
                m = self.batch if limit is None else min(self.batch, limit - got)
                K.peek(r.w, self.kinds[i], self.pos[i], self.buf, m, self.out)
                start, k, nxt = int(self.out[0]), int(self.out[1]), int(self.out[2])
                if start > self.pos[i] and not (self.from_start and self.pos[i] == 0):
                    w.missed += start - self.pos[i]
                self.pos[i] = max(nxt, self.pos[i]) if k else max(start, self.pos[i])
                if k == 0:
                    break
                w.append_words(self.buf, k)
                got += k
                if k < m:
                    break
        return got

    def run(self, stop=lambda: False, duration: float | None = None, count: int | None = None,
            idle_s: float = 0.001) -> dict:
        t0 = time.monotonic()
        idle_since = None
        why = "stopped"
        while not stop():
            left = None if count is None else count - self.records
            if left is not None and left <= 0:
                why = "count"
                break
            if duration is not None and time.monotonic() - t0 >= duration:
                why = "duration"
                break
            if self.poll(left) == 0:
                now = time.monotonic()
                idle_since = idle_since or now
                if now - idle_since > 1.0:      # quiet for a second: are the rings still there?
                    idle_since = now
                    if all(segments.probe(self.instance, r.name) is None for r in self.rings):
                        why = "rings removed (the pipeline stopped)"
                        break
                time.sleep(idle_s)
            else:
                idle_since = None
        return {"records": self.records, "missed": self.missed,
                "seconds": time.monotonic() - t0, "why": why}

    def close(self) -> None:
        try:
            self.poll()
        finally:
            self.writer.close()
            for r in self.rings:
                r.close()
            self.rings = []
