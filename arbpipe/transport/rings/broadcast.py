"""``BroadcastRing``: one writer, any number of independent readers
(kernels: ``arbpipe.transport.kernels.broadcast``).

The writer never waits (policy ``OVERWRITE``): slow readers are lapped, notice it, count
what they lost and resume at the newest record. A late joiner starts at the newest
record. Each reader sleeps on its own semaphore (``r<slot>``) and arms its own slot, so a
push wakes exactly the readers that sleep.
"""
from __future__ import annotations

import numpy as np

from arbpipe.transport.returns import COUNT_MASK, WAKE_BIT
from arbpipe.transport.rings.common import Ring
from arbpipe.transport.rings.doorbell import Doorbell
from arbpipe.transport.rings.jit import kernels
from shm_layouts import ring as L
from shm_layouts.ring import FullPolicy, RingKind

K = None    # arbpipe.transport.kernels, bound by the first handle (arbpipe.transport.rings.jit)


class BroadcastRing(Ring):
    """One writer, any number of independent readers; the writer never waits."""

    KIND = RingKind.BROADCAST

    def __init__(self, seg):
        global K
        super().__init__(seg)
        K = kernels()
        self._armed = np.zeros(self.max_readers, np.int64)
        self._rdoor = None

    @classmethod
    def _choose_policy(cls, policy: FullPolicy) -> FullPolicy:
        return FullPolicy.OVERWRITE     # whatever was asked: the writer never waits

    @staticmethod
    def _sem_tags(max_readers):
        return [f"r{i}" for i in range(max_readers)]

    def _join_position(self) -> int:
        head = int(K.head_of(self.w))
        return head - 1 if head > 0 else 0  # late joiners start at the newest record

    def join(self, reader=None):
        i = super().join(reader)
        sw = self.slot_w
        self._rdoor = Doorbell(self, L.W_CDOOR, self._sem(f"r{i}"), sw + L.R_ARMED,
                               sw + L.R_SLEEPS, sw + L.R_WAKES, sw + L.R_SLEEPER)
        return i

    # writer
    def push_words(self, words, n, timeout=None):
        """Publish n records given as flat int64 words; never waits (``timeout`` is
        ignored). Returns n."""
        r = K.bcast_push(self.w, words, n)
        if r & WAKE_BIT:
            self.wake_readers()
        return r & COUNT_MASK

    def wake_readers(self) -> None:
        """Post the doorbell of every sleeping reader (after a push made inside numba)."""
        k = K.armed_readers(self.w, self.max_readers, self._armed)
        for j in range(k):
            self._sem(f"r{int(self._armed[j])}").release()
            K.count_post(self.w, L.W_CDOOR)
        if k == 0:
            self.note_fruitless_wake()

    # readers
    def pop_words(self, out, m=None):
        """Read up to m records into flat int64 ``out``; never waits."""
        if self.slot < 0:
            self.join()
        if m is None:
            m = len(out) // self.rw
        return K.bcast_pop(self.w, out, m, self.slot_w)

    def wait(self, timeout=None):
        """Wait until this reader has a record to read (spin, yield, then sleep)."""
        if self.slot < 0:
            self.join()
        w, sw = self.w, self.slot_w
        return self._rdoor.wait(lambda s: K.bcast_readable(w, sw, s), timeout)

    def reader_stats(self) -> dict:
        sw = self.slot_w
        return {k: int(self.w[sw + off]) for k, off in
                (("position", L.R_POSITION), ("received", L.R_RECEIVED), ("lost", L.R_LOST),
                 ("laps", L.R_LAPS))}
