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

import posix_ipc

from arbpipe.transport import kernels as K
from arbpipe.transport.segments import pid_alive, process_start_ticks
from shm_layouts import ring as L

DEFAULT_SPIN = 20_000      # pause iterations (~tens of µs) before yielding
DEFAULT_YIELDS = 50        # sched_yield calls before blocking on the doorbell
MAX_BLOCK_S = 1.0          # a sleeper re-checks at least this often
RECLAIM_EVERY = 64         # fruitless wake-ups (sleepers > 0, none armed) per clock read
RECLAIM_INTERVAL_S = 0.5   # ... and at most one dead-sleeper scan per this many seconds

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
                 sleeps_w: int, wakes_w: int, reg_w: int = 0):
        self.ring, self.door_w, self.sem = ring, door_w, sem
        self.armed_w, self.sleeps_w, self.wakes_w = armed_w, sleeps_w, wakes_w
        self.reg_w = reg_w

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
        """Called when a publish saw sleepers > 0: post if a sleeper is armed."""
        if K.take_armed(self.ring.w, self.armed_w):
            self.sem.release()
            K.count_post(self.ring.w, self.door_w)
        else:
            self.ring.note_fruitless_wake()


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
                                 *door_words(L.W_CDOOR, registered))
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
            k += r & K.COUNT_MASK
            if r & K.WAKE_BIT:
                self.consumer.post_if_armed()
        return k
