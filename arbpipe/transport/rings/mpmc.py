"""``MpmcRing``: N producers, M consumers, every record taken by exactly one consumer
(kernels: ``arbpipe.transport.kernels.mpmc``), with crash recovery.

Full policies as for SPSC (``BLOCK``, ``DROP_NEWEST``). Many sleepers per side: each
registers in its own reader slot (consumers) or producer-table slot (producers).
"""
from __future__ import annotations

import os
import time

import numpy as np

from arbpipe.transport.returns import COUNT_MASK, STALL_BIT, WAKE_BIT
from arbpipe.transport.rings.common import Ring
from arbpipe.transport.rings.doorbell import QueueDoorbells, my_start_ticks
from arbpipe.transport.rings.jit import kernels
from arbpipe.transport.segments import SegmentError, pid_alive
from shm_layouts import ring as L
from shm_layouts.ring import FullPolicy, RingKind

K = None    # arbpipe.transport.kernels, bound by the first handle (arbpipe.transport.rings.jit)


class MpmcRing(Ring):
    """N producers, M consumers; every record is taken by exactly one consumer.

    Crash recovery (Vyukov's bounded queue alone wedges when a producer dies between
    claiming a slot and committing it, or a consumer between dequeuing and releasing):
    producers take a slot in the segment's producer table (pid + start ticks) and every
    producer and consumer announces its claim there before making it. A consumer that
    finds the next position claimed but uncommitted for ``STALL_S``, or a producer that
    finds the ring full because of an unreleased slot, runs ``recover()``: a stuck
    position whose every announced claimant is dead is poisoned (consumers skip it;
    counted as ``abandoned``; it never held a committed record) or released (counted as
    ``orphaned``: the dead consumer had taken the record). A live but slow claimant is
    always waited for, so nothing committed is lost and nothing is delivered twice.
    """

    KIND = RingKind.MPMC
    STALL_S = 0.1       # a stuck position is checked for dead claimants after this long

    def __init__(self, seg):
        global K
        super().__init__(seg)
        K = kernels()
        # many sleepers per side: each registers in its own reader / producer slot
        doors = QueueDoorbells(self, self._sem("c"), self._sem("p"), registered=False)
        self.doors = doors
        self._cdoor, self._pdoor = doors.consumer, doors.producer
        self.pslot = -1
        self.pslot_w = 0
        self._table_w = L.producers_offset(self.max_readers) // 8
        self._stall = np.zeros(2, np.int64)
        self._stuck: dict[int, tuple] = {}   # side -> (position, monotonic time first seen)
        self._next_check = [0.0, 0.0]         # per side: no stall check before this time

    @classmethod
    def _format(cls, seg) -> None:
        """Slot i's sequence word starts at i: free for the first lap's position i."""
        h = seg.header
        seq_w = h.seq_offset // 8
        seg.words[seq_w: seq_w + h.capacity] = np.arange(h.capacity, dtype=np.int64)

    # -- producer slot ------------------------------------------------------------------
    def join_producer(self) -> int:
        """Take a slot in the producer table (done by the first push)."""
        if self.pslot >= 0:
            return self.pslot
        pid, ticks = os.getpid(), my_start_ticks()
        w, tw = self.w, self._table_w
        for attempt in (0, 1):
            for i in range(L.PRODUCER_SLOTS):
                sw = tw + i * L.PRODUCER_SLOT_WORDS
                start = int(w[sw + L.P_START])
                owner = int(w[sw + L.P_PID])
                if attempt == 0 and owner != 0:
                    continue
                if attempt == 1:
                    if owner == 0 or pid_alive(owner, start):
                        continue
                    # a dead producer's slot: only once nothing it claimed is unresolved
                    if int(w[sw + L.P_CLAIM_N]) and K.mpmc_unresolved(
                            w, int(w[sw + L.P_CLAIM_POS]), int(w[sw + L.P_CLAIM_N])):
                        self.recover()
                        if K.mpmc_unresolved(w, int(w[sw + L.P_CLAIM_POS]),
                                             int(w[sw + L.P_CLAIM_N])):
                            continue
                if K.claim_slot_at(w, sw + L.P_PID, 0, pid) if attempt == 0 else \
                        K.claim_dead_slot(w, sw + L.P_PID, sw + L.P_START, owner, start, pid):
                    w[sw + L.P_START] = ticks
                    w[sw + L.P_CLAIM_N] = 0
                    self.reclaim_registration(sw + L.P_SLEEPER, L.W_PDOOR)  # died asleep?
                    self.pslot, self.pslot_w = i, sw
                    self._pdoor.reg_w = sw + L.P_SLEEPER
                    return i
        raise SegmentError(f"ring {self.name!r}: all {L.PRODUCER_SLOTS} producer slots are taken")

    def leave(self) -> None:
        if self.pslot >= 0 and self.w is not None:
            self.w[self.pslot_w + L.P_START] = 0   # before the pid: see claim_dead_slot
            self.w[self.pslot_w + L.P_PID] = 0
            self.pslot, self.pslot_w = -1, 0
        self._pdoor.reg_w = self._cdoor.reg_w = 0
        super().leave()

    def join(self, reader=None):
        if self.slot < 0:
            self.recover()  # a dead consumer's slot may be taken over: settle its claim first
        i = super().join(reader)
        self._cdoor.reg_w = self.slot_w + L.R_SLEEPER
        return i

    def _registration_words(self):
        return super()._registration_words() + [
            (self._table_w + i * L.PRODUCER_SLOT_WORDS + L.P_SLEEPER, L.W_PDOOR)
            for i in range(L.PRODUCER_SLOTS)]

    # -- records ------------------------------------------------------------------------
    def push_words(self, words, n, timeout=None):
        """Push n records given as flat int64 words. Returns how many went in; under
        BLOCK waits up to ``timeout`` (None = forever) and counts the rest as dropped."""
        if self.pslot < 0:
            self.join_producer()
        r = K.mpmc_push(self.w, words, n, self.pslot_w)
        k = r & COUNT_MASK
        if r & WAKE_BIT:
            self._cdoor.post_if_armed()
        if k == n:
            return k
        self._gated_check(1)
        if self.policy != FullPolicy.BLOCK:
            return k
        w, pslot_w = self.w, self.pslot_w
        return self.doors.push_blocking(
            words, n, k, timeout, lambda ws, m: K.mpmc_push(w, ws, m, pslot_w),
            lambda s: K.mpmc_writable(w, s) or self._gated_check(1))

    def pop_words(self, out, m=None):
        """Pop up to m records into flat int64 ``out``; never waits."""
        if self.slot < 0:
            self.join()
        if m is None:
            m = len(out) // self.rw
        r = K.mpmc_pop(self.w, out, m, self.slot_w, 0)   # every argument given: ~100 ns
        if r > COUNT_MASK:                               # less numba dispatch than a default
            if r & WAKE_BIT:
                self._pdoor.post_if_armed()
            if r & STALL_BIT:
                self._gated_check(0)
        return r & COUNT_MASK

    def wait(self, timeout=None):
        """Wait until a record can be popped (spin, yield, then sleep)."""
        if self.slot < 0:
            self.join()
        w = self.w
        return self._cdoor.wait(lambda s: K.mpmc_readable(w, s) or self._gated_check(0),
                                timeout)

    def wake_consumer(self) -> None:
        """Post the consumer doorbell if a consumer sleeps (after a push made inside numba)."""
        self._cdoor.post_if_armed()

    def wake_producer(self) -> None:
        """Post the producer doorbell if a BLOCK producer sleeps (after a pop inside numba)."""
        self._pdoor.post_if_armed()

    # -- recovery -----------------------------------------------------------------------
    def _gated_check(self, side: int) -> bool:
        """``_check_stall`` at most four times per ``STALL_S`` (a producer mid-commit makes
        an empty pop report a stall for a moment; that must stay cheap)."""
        now = time.monotonic()
        if now < self._next_check[side]:
            return False
        self._next_check[side] = now + self.STALL_S / 4
        return self._check_stall(side)

    def _check_stall(self, side: int) -> bool:
        """Side 0 (consumers): the next position is claimed but uncommitted; side 1
        (producers): the ring is full behind an unreleased slot. After ``STALL_S`` on the
        same position, ``recover()``. True if that unblocked something."""
        K.mpmc_stall(self.w, self._stall)
        p = int(self._stall[side])
        if p < 0:
            self._stuck.pop(side, None)
            return False
        now = time.monotonic()
        first = self._stuck.get(side)
        if first is None or first[0] != p:
            self._stuck[side] = (p, now)
            return False
        if now - first[1] < self.STALL_S:
            return False
        self._stuck.pop(side, None)
        return sum(self.recover().values()) > 0

    def _dead_flags(self, producers: bool) -> np.ndarray:
        """1 for each occupied slot whose owner is dead (producer table or reader slots)."""
        w = self.w
        if producers:
            n, base, step, pid_w = (L.PRODUCER_SLOTS, self._table_w, L.PRODUCER_SLOT_WORDS,
                                    L.P_PID)
        else:
            n, base, step, pid_w = (self.max_readers, L.W_READERS, L.READER_SLOT_WORDS,
                                    L.R_OWNER_PID)
        dead = np.zeros(n, np.int64)
        for i in range(n):
            sw = base + i * step
            pid = int(w[sw + pid_w])
            if pid == 0:
                continue
            ticks = int(w[sw + (L.P_START if producers else L.R_OWNER_START)])
            dead[i] = 0 if pid_alive(pid, ticks) else 1
        return dead

    def recover(self) -> dict:
        """Settle positions stuck on dead processes (see the class docstring); safe to
        call from any process at any time. Returns what this call did: {"abandoned": n
        (slots poisoned), "orphaned": n (slots released and counted), "released": n
        (released, already counted as received by the dead consumer)}."""
        out = np.zeros(3, np.int64)
        for producers in (True, False):
            dead = self._dead_flags(producers)
            if dead.any():
                K.mpmc_settle(self.w, producers, self._table_w, len(dead), dead, out)
        return {"abandoned": int(out[0]), "orphaned": int(out[1]), "released": int(out[2])}
