"""The wait policy of every ring: how an idle side blocks, and how it is woken.

Waiting (consumers on an empty ring, BLOCK producers on a full one): spin for ``spin``
iterations inside numba, then ``os.sched_yield()`` ``yields`` times, then block on a
doorbell semaphore, re-checking at least every ``MAX_BLOCK_S``. The sleeper arms a flag
in the segment before re-checking, and the other side posts only when the flag is
armed, so posts are rare and a wake-up is never lost (``arbpipe.transport.kernels.doorbell``
holds the handshake). There is one policy, tuned per handle through ``spin`` and
``yields`` (0 and 0: sleep at once; see docs/design.md, "Wait policy").

Sleepers killed asleep: every sleeper registers a token (its pid and start time) while it
is counted in a doorbell's ``sleepers``. A registration left by a dead process is undone
by the ring (``Ring.reclaim_sleepers``), exactly once, by whoever meets it first.
"""
from __future__ import annotations

import os
import time

import numpy as np
import posix_ipc

from arbpipe.transport.returns import COUNT_MASK, WAKE_BIT
from arbpipe.transport.rings.jit import kernels
from arbpipe.transport.segments import SegmentError, pid_alive, process_start_ticks, sem_name
from shm_layouts import ring as L

K = None    # arbpipe.transport.kernels, bound by the first handle (arbpipe.transport.rings.jit)

DEFAULT_SPIN = 20_000      # pause iterations (~tens of µs) before yielding
DEFAULT_YIELDS = 50        # sched_yield calls before blocking on the doorbell
MAX_BLOCK_S = 1.0          # a sleeper re-checks at least this often
RECLAIM_EVERY = 64         # fruitless wake-ups (sleepers > 0, none armed) per clock read
RECLAIM_INTERVAL_S = 0.5   # ... and at most one dead-sleeper scan per this many seconds

BELL_TAG = "bell"          # a shared bell's semaphore: <segment>.bell
_me = (0, 0)               # (pid, start ticks) of this process, cached


def my_start_ticks() -> int:
    """Start time of this process in clock ticks since boot (cached; fork-safe)."""
    global _me
    pid = os.getpid()
    if _me[0] != pid:
        _me = (pid, process_start_ticks(pid))
    return _me[1]


def sleeper_token() -> int:
    """This process's doorbell registration token: start ticks << 24 | pid."""
    return my_start_ticks() << L.SLEEPER_PID_BITS | os.getpid()


def token_alive(token: int) -> bool:
    """True if the process incarnation a sleeper token names still runs."""
    return pid_alive(token & L.SLEEPER_PID_MASK, token >> L.SLEEPER_PID_BITS)


class Doorbell:
    """The sleeping side of a ring: a semaphore plus counters/armed flag in the segment.
    ``reg_w``: the word where this sleeper registers its token while it is counted in
    ``sleepers`` (0: no registration, a death while asleep cannot be undone).

    ``ring`` is the handle it belongs to: its ``w``, ``spin`` and ``yields`` are read at
    every wait, and it undoes dead sleepers' registrations
    (``reclaim_registration``, ``note_fruitless_wake``)."""

    def __init__(self, ring, door_w: int, sem: posix_ipc.Semaphore, armed_w: int,
                 sleeps_w: int, wakes_w: int, reg_w: int = 0, bell_w: int = 0):
        global K
        K = kernels()
        self.ring, self.door_w, self.sem = ring, door_w, sem
        self.armed_w, self.sleeps_w, self.wakes_w = armed_w, sleeps_w, wakes_w
        self.reg_w = reg_w
        self.bell_w = bell_w        # SPSC consumer side: word of a shared bell's token
        self._bell = (0, None)      # (token, semaphore) of the last bell posted

    def wait(self, ready, timeout: float | None) -> bool:
        """Wait until ``ready(spins)`` is true or ``timeout`` s pass (None: forever)."""
        r = self.ring
        if ready(r.spin):
            return True
        for _ in range(r.yields):
            os.sched_yield()
            if ready(0):
                return True
        deadline = None if timeout is None else time.monotonic() + timeout
        w = r.w
        reg_w, token, door = self.reg_w, sleeper_token(), self.door_w
        if self.bell_w and w[self.bell_w]:
            w[self.bell_w] = 0     # a shared bell left here: this sleeper uses our semaphore
        if reg_w and int(w[reg_w]) not in (0, token):
            r.reclaim_registration(reg_w, door)   # left by a sleeper that died asleep?
        while True:
            remaining = MAX_BLOCK_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            reg = K.announce_sleep(w, door, self.armed_w, reg_w, token)
            if ready(0):
                K.leave_sleep(w, door, self.armed_w, self.sleeps_w, self.wakes_w, False,
                              reg_w, token, reg)
                return True
            try:
                self.sem.acquire(min(remaining, MAX_BLOCK_S))
                woken = True
            except posix_ipc.BusyError:
                woken = False
            except posix_ipc.SignalError:
                # a signal (e.g. SIGTERM with a handler) interrupted the sleep: leave the
                # sleeper count as we found it and return, so the caller sees its stop flag
                K.leave_sleep(w, door, self.armed_w, self.sleeps_w, self.wakes_w, False,
                              reg_w, token, reg)
                return bool(ready(0))
            K.leave_sleep(w, door, self.armed_w, self.sleeps_w, self.wakes_w, woken,
                          reg_w, token, reg)
            if ready(0):
                return True

    def post_if_armed(self) -> None:
        """Called when a publish saw sleepers > 0: post if a sleeper is armed (its shared
        bell when it sleeps on one for several rings, see ``SharedBell``)."""
        w = self.ring.w
        if K.take_armed(w, self.armed_w):
            sem = self.sem
            if self.bell_w:
                t = int(w[self.bell_w])
                if t:
                    sem = self._bell_sem(t) or sem
            sem.release()
            K.count_post(w, self.door_w)
        else:
            self.ring.note_fruitless_wake()

    def _bell_sem(self, token: int):
        """The semaphore of the shared bell ``token`` names (cached); None if it is gone
        (its consumer died: the ring's own semaphore is posted instead, harmlessly)."""
        t, sem = self._bell
        if t == token:
            return sem
        if sem is not None:
            try:
                sem.close()
            except posix_ipc.Error:
                pass
        self._bell = (0, None)
        off = self.door_w * 8 + L.D_BELL_NAME_OFF
        raw = bytes(self.ring.seg.bytes[off:off + L.BELL_NAME_LEN]).rstrip(b"\0")
        try:
            sem = posix_ipc.Semaphore(sem_name(self.ring.instance, raw.decode("ascii"),
                                               BELL_TAG))
        except (posix_ipc.Error, UnicodeDecodeError, SegmentError):
            return None
        self._bell = (token, sem)
        return sem


class SharedBell:
    """One doorbell for a consumer that reads several SPSC rings (the detector reads every
    ``feed.<venue>``): one semaphore ``<segment>.bell``, one wake-up, no helper threads.

    The consumer writes its token and the bell's segment name into each ring's consumer
    doorbell block (``bell``, ``bell_name``); a producer that takes the armed flag posts
    the bell instead of the ring's own semaphore. Sleep is the same handshake as
    ``Doorbell.wait``, over every ring at once: announce on each ring (count, register
    the token, arm, fence), re-check every ring, block on the bell, then leave each ring
    (a leave undoes what its announce did, or a reclaim did it already). A publisher
    on any ring sees the armed flag or the sleeper sees its record: no lost wake-up.
    Several posters may post one sleep; the surplus is taken back (non-blocking
    acquires) after a wake-up. Crash: the registrations are per ring, as for one ring;
    the semaphore goes with ``segment`` (unlinked with it, also when it is reclaimed
    stale); a producer that cannot open it posts the ring's own semaphore."""

    def __init__(self, rings: list, segment: str, instance: str):
        global K
        K = kernels()
        self.rings = list(rings)
        self.segment = segment
        self.name = sem_name(instance, segment, BELL_TAG)
        try:
            posix_ipc.unlink_semaphore(self.name)       # a dead predecessor's
        except posix_ipc.ExistentialError:
            pass
        self.sem = posix_ipc.Semaphore(self.name, posix_ipc.O_CREX, 0o600, 0)
        self.token = sleeper_token()
        raw = segment.encode("ascii")[:L.BELL_NAME_LEN]
        self._words = []
        for r in self.rings:
            door = L.W_CDOOR
            off = door * 8 + L.D_BELL_NAME_OFF
            b = r.seg.bytes
            b[off:off + L.BELL_NAME_LEN] = 0
            b[off:off + len(raw)] = np.frombuffer(raw, np.uint8)
            r.w[door + L.D_BELL] = self.token
            self._words.append((r, door, *door_words(door, True)))
        self.sleeps = self.wakes = 0

    def sleep(self, ready, timeout: float) -> bool:
        """Block until ``ready()`` (checks every ring, no spinning) or ``timeout`` s
        (at most ``MAX_BLOCK_S``); True if ready."""
        token = self.token
        regs = []
        for r, door, armed_w, _, _, reg_w in self._words:
            if r.w[door + L.D_BELL] != token:
                r.w[door + L.D_BELL] = token        # another sleeper cleared it meanwhile
            if int(r.w[reg_w]) not in (0, token):
                r.reclaim_registration(reg_w, door)
            regs.append(K.announce_sleep(r.w, door, armed_w, reg_w, token))
        woken = False
        if not ready():
            try:
                self.sem.acquire(max(min(timeout, MAX_BLOCK_S), 0))
                woken = True
            except (posix_ipc.BusyError, posix_ipc.SignalError):
                pass
        for (r, door, armed_w, sleeps_w, wakes_w, reg_w), reg in zip(self._words, regs):
            taken = woken and r.w[armed_w] == 0      # this ring's producer posted
            K.leave_sleep(r.w, door, armed_w, sleeps_w, wakes_w, taken, reg_w, token, reg)
        if woken:
            self.wakes += 1
            while True:                                # posts of the other rings' producers
                try:
                    self.sem.acquire(0)
                except (posix_ipc.BusyError, posix_ipc.SignalError):
                    break
        self.sleeps += 1
        return bool(ready())

    def close(self) -> None:
        for r, door, *_ in self._words:
            if r.w is not None and r.w[door + L.D_BELL] == self.token:
                r.w[door + L.D_BELL] = 0
        self._words = []
        try:
            self.sem.close()
        except posix_ipc.Error:
            pass
        try:
            posix_ipc.unlink_semaphore(self.name)
        except posix_ipc.ExistentialError:
            pass


def door_words(door: int, registered: bool) -> tuple[int, int, int, int]:
    """(armed, sleeps, wakes, registration) words of the doorbell block at word ``door``;
    registration 0 unless the block's own ``sleeper`` word is used (SPSC)."""
    return (door + L.D_ARMED, door + L.D_SLEEPS, door + L.D_WAKES,
            door + L.D_SLEEPER if registered else 0)


class QueueDoorbells:
    """The two doorbells of a queue ring (SPSC, MPMC): consumers sleep on ``consumer``
    while the ring is empty, BLOCK producers on ``producer`` while it is full.
    ``registered``: sleepers register in the doorbell block's own ``sleeper`` word (SPSC:
    one sleeper per side); otherwise each one sets its ``reg_w`` from its own slot."""

    def __init__(self, ring, consumer_sem, producer_sem, registered: bool):
        self.ring = ring
        self.consumer = Doorbell(ring, L.W_CDOOR, consumer_sem,
                                 *door_words(L.W_CDOOR, registered),
                                 bell_w=L.W_CDOOR + L.D_BELL if registered else 0)
        self.producer = Doorbell(ring, L.W_PDOOR, producer_sem,
                                 *door_words(L.W_PDOOR, registered))

    def push_blocking(self, words, n: int, k: int, timeout: float | None, push,
                      writable) -> int:
        """BLOCK policy: wait for space (producer doorbell) and push the rest of ``n``
        records (``k`` are in), up to ``timeout``; what is left then counts as dropped.
        ``push(words, n)`` runs the push kernel, ``writable(spins)`` says there is room."""
        ring = self.ring
        deadline = None if timeout is None else time.monotonic() + timeout
        w = ring.w
        while k < n:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0 or not self.producer.wait(writable, left):
                K.add(w, L.W_DROPPED, n - k)
                return k
            r = push(words[k * ring.rw:], n - k)
            k += r & COUNT_MASK
            if r & WAKE_BIT:
                self.consumer.post_if_armed()
        return k
