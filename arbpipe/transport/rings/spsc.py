"""``SpscRing``: one producer, one consumer (kernels: ``arbpipe.transport.kernels.spsc``).

Full-ring policy (stated at creation): ``BLOCK`` waits for space up to a timeout (what
did not fit when the timeout expires is counted as dropped), ``DROP_NEWEST`` refuses
what does not fit and counts it. Each side sleeps on its own doorbell and registers in
the doorbell block (one sleeper per side).
"""
from __future__ import annotations

import numpy as np

from arbpipe.transport.returns import COUNT_MASK, WAKE_BIT
from arbpipe.transport.rings.common import Ring
from arbpipe.transport.rings.doorbell import QueueDoorbells
from arbpipe.transport.rings.jit import kernels
from shm_layouts.ring import FullPolicy, RingKind

K = None    # arbpipe.transport.kernels, bound by the first handle (arbpipe.transport.rings.jit)


class SpscRing(Ring):
    """One producer, one consumer. Batched and single-record push/pop."""

    KIND = RingKind.SPSC

    def __init__(self, seg):
        global K
        super().__init__(seg)
        K = kernels()
        doors = QueueDoorbells(self, self._sem("c"), self._sem("p"), registered=True)
        self.doors = doors
        self._cdoor, self._pdoor = doors.consumer, doors.producer

    # producer
    def push_words(self, words: np.ndarray, n: int, timeout: float | None = None) -> int:
        """Push n records given as flat int64 words. Returns how many went in; under
        BLOCK waits up to ``timeout`` (None = forever) and counts the rest as dropped."""
        r = K.spsc_push(self.w, words, n, self.cursors)
        k = r & COUNT_MASK
        if r & WAKE_BIT:
            self._cdoor.post_if_armed()
        if k == n or self.policy != FullPolicy.BLOCK:
            return k
        w, cursors = self.w, self.cursors
        return self.doors.push_blocking(
            words, n, k, timeout, lambda ws, m: K.spsc_push(w, ws, m, cursors),
            lambda s: K.spsc_writable(w, s))

    # consumer
    def pop_words(self, out: np.ndarray, m: int | None = None) -> int:
        """Pop up to m records into flat int64 ``out``; never waits."""
        if self.slot < 0:
            self.join()
        if m is None:
            m = len(out) // self.rw
        r = K.spsc_pop(self.w, out, m, self.cursors, self.slot_w)
        if r & WAKE_BIT:
            self._pdoor.post_if_armed()
        return r & COUNT_MASK

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a record can be popped (spin, yield, then sleep)."""
        w = self.w
        return self._cdoor.wait(lambda s: K.spsc_readable(w, s), timeout)

    def wake_consumer(self) -> None:
        """Post the consumer doorbell if a consumer sleeps (after a push made inside numba)."""
        self._cdoor.post_if_armed()

    def wake_producer(self) -> None:
        """Post the producer doorbell if a BLOCK producer sleeps (after a pop inside numba)."""
        self._pdoor.post_if_armed()
