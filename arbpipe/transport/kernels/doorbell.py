"""Doorbell kernels: both sides of the sleep / wake handshake, in the segment's words.

A sleeper counts itself in ``sleepers`` (RMW), registers its token (CAS 0 -> token), arms,
and issues a full fence before it re-checks the ring; a publisher commits, issues a full
fence and loads ``sleepers`` (``sleepers_after_publish``). One of the two always sees the
other, so a wake-up is never lost. The sleeper unregisters (CAS token -> 0) before it
subtracts itself, so that a dead sleeper's count is undone exactly once
(``reclaim_sleeper``) and never more than it added (see shm_layouts.ring, "Doorbell
sleepers").
"""
from numba import njit

from arbpipe.transport.atomics import cas, fence_seq_cst, fetch_add, load_acquire, load_relaxed, \
    store_release
from arbpipe.transport.kernels.common import KERNEL_OPTIONS
from shm_layouts.ring import D_POSTS, D_RECLAIMED, D_SLEEPERS, R_ARMED, READER_SLOT_WORDS, \
    W_READERS


@njit(inline="always", **KERNEL_OPTIONS)
def sleepers_after_publish(w, door):
    """After a commit: full fence, then 1 if doorbell ``door`` has sleepers, else 0."""
    fence_seq_cst()
    return 1 if load_relaxed(w, door + D_SLEEPERS) > 0 else 0


@njit(**KERNEL_OPTIONS)
def announce_sleep(w, door, armed_w, reg_w, token):
    """Become a sleeper: count, register ``token`` at ``reg_w`` (CAS from 0; 0: no
    registration word), arm, full fence. The caller re-checks readiness next. Returns
    True if registered (then only ``leave_sleep`` or ``reclaim_sleeper`` undoes it)."""
    fetch_add(w, door + D_SLEEPERS, 1)
    registered = False
    if reg_w > 0:
        ok, _ = cas(w, reg_w, 0, token)
        registered = ok
    store_release(w, armed_w, 1)
    fence_seq_cst()
    return registered


@njit(**KERNEL_OPTIONS)
def leave_sleep(w, door, armed_w, sleeps_w, wakes_w, woken, reg_w, token, registered):
    """Stop being a sleeper. A registered sleeper takes its token back first and
    subtracts itself only if nobody reclaimed it meanwhile."""
    if registered:
        ok, _ = cas(w, reg_w, token, 0)
        if ok:
            fetch_add(w, door + D_SLEEPERS, -1)
    else:
        fetch_add(w, door + D_SLEEPERS, -1)
    store_release(w, armed_w, 0)
    fetch_add(w, sleeps_w, 1)
    if woken:
        fetch_add(w, wakes_w, 1)


@njit(**KERNEL_OPTIONS)
def reclaim_sleeper(w, reg_w, token, door):
    """Undo the registration ``token`` at ``reg_w`` of a sleeper found dead: CAS it to 0
    and, if this call won, subtract it from the doorbell's sleepers and count it in
    ``sleepers_reclaimed``. Returns 1 if it did, 0 if the word no longer held token."""
    ok, _ = cas(w, reg_w, token, 0)
    if not ok:
        return 0
    fetch_add(w, door + D_SLEEPERS, -1)
    fetch_add(w, door + D_RECLAIMED, 1)
    return 1


@njit(**KERNEL_OPTIONS)
def take_armed(w, armed_w):
    """Disarm a sleeper's flag; True if this caller must post its semaphore."""
    if load_acquire(w, armed_w) == 0:
        return False
    ok, _ = cas(w, armed_w, 1, 0)
    return ok


@njit(**KERNEL_OPTIONS)
def armed_readers(w, max_readers, out):
    """Disarm every armed broadcast reader; their slot indexes go to out. Returns count."""
    k = 0
    for i in range(max_readers):
        a = W_READERS + i * READER_SLOT_WORDS + R_ARMED
        if load_acquire(w, a) == 1:
            ok, _ = cas(w, a, 1, 0)
            if ok:
                out[k] = i
                k += 1
    return k


@njit(**KERNEL_OPTIONS)
def count_post(w, door):
    """Count one semaphore post of doorbell ``door``."""
    fetch_add(w, door + D_POSTS, 1)
