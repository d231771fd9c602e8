"""Ownership of reader slots and MPMC producer slots, and a shared counter add.

A slot whose owner is dead is taken over by CAS(start: the dead owner's ticks -> 0), then
CAS(pid: dead -> new), so nobody ever pairs the new pid with the old owner's start time
(see shm_layouts.ring, "Slot takeover").
"""
from numba import njit

from arbpipe.transport.atomics import cas, fetch_add
from arbpipe.transport.kernels.common import KERNEL_OPTIONS
from shm_layouts.ring import R_OWNER_PID, READER_SLOT_WORDS, W_READERS


@njit(**KERNEL_OPTIONS)
def claim_dead_slot(w, owner_w, start_w, dead_pid, dead_start, pid):
    """Take over a slot whose owner (dead_pid, dead_start) was found dead: CAS the start
    word to 0, then the owner word to pid. True if this call took the slot (the caller
    then stores its own start ticks). Zeroing the start first means nobody ever reads
    the new pid with the dead owner's start ticks (which would make it look dead)."""
    ok, _ = cas(w, start_w, dead_start, 0)
    if not ok:
        return False
    ok, _ = cas(w, owner_w, dead_pid, pid)
    return ok


@njit(**KERNEL_OPTIONS)
def claim_slot(w, max_readers, expected_pid, pid, only):
    """CAS a reader slot's owner from expected_pid to pid (first free one if only < 0)."""
    for i in range(max_readers):
        if only >= 0 and i != only:
            continue
        ok, _ = cas(w, W_READERS + i * READER_SLOT_WORDS + R_OWNER_PID, expected_pid, pid)
        if ok:
            return i
    return -1


@njit(**KERNEL_OPTIONS)
def claim_slot_at(w, idx, expected_pid, pid):
    """CAS one owner word from expected_pid to pid; True if this call took it."""
    ok, _ = cas(w, idx, expected_pid, pid)
    return ok


@njit(**KERNEL_OPTIONS)
def add(w, idx, v):
    """Atomic ``w[idx] += v`` (a counter more than one process writes); the old value."""
    return fetch_add(w, idx, v)
