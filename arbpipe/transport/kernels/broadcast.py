"""Broadcast kernels: one writer that never waits, any number of independent readers.

Commit rule: the record at position ``p`` is committed when the writer's release store
of ``head`` moves past ``p``, and a reader may keep it only if ``head`` is still below
``p + capacity`` after the copy. The writer stores ``head`` with release and then issues
a release fence after every record, so no byte of record ``p + capacity`` can be visible
before ``head > p``; a reader copies, issues an acquire fence, re-reads ``head`` and
discards what may have been overwritten meanwhile (seqlock-style).
"""
from numba import njit

from arbpipe.transport.atomics import cpu_relax, fence_acquire, fence_release, load_acquire, \
    load_relaxed, store_release
from arbpipe.transport.kernels.common import KERNEL_OPTIONS, WAKE_SHIFT, copy_in, copy_out, \
    geometry
from arbpipe.transport.kernels.doorbell import sleepers_after_publish
from shm_layouts.ring import R_LAPS, R_LOST, R_POSITION, R_RECEIVED, W_BATCHES, W_CDOOR, W_HEAD


@njit(**KERNEL_OPTIONS)
def bcast_push(w, src, n):
    """Publish n records; never waits. Each record is committed by its own head store."""
    cap, rw, data_w, _ = geometry(w)
    head = load_relaxed(w, W_HEAD)
    for i in range(n):
        copy_in(w, data_w, cap, rw, head + i, src, i, 1)
        store_release(w, W_HEAD, head + i + 1)
        fence_release()  # keeps the next record's bytes behind this head store
    wake = 0
    if n > 0:
        w[W_BATCHES] += 1
        wake = sleepers_after_publish(w, W_CDOOR)
    return n | (wake << WAKE_SHIFT)


@njit(**KERNEL_OPTIONS)
def bcast_pop(w, dst, m, slot_w):
    """Read up to m records for the reader in slot ``slot_w``.

    A lapped reader skips to the newest record, adding what it skipped to its
    ``lost`` count (so received + lost == records published since it joined).
    """
    cap, rw, data_w, _ = geometry(w)
    pos = w[slot_w + R_POSITION]
    while True:
        head = load_acquire(w, W_HEAD)
        if head - pos >= cap:  # the oldest unread record is (being) overwritten
            newest = head - 1
            w[slot_w + R_LOST] += newest - pos
            w[slot_w + R_LAPS] += 1
            pos = newest
        k = head - pos
        if k > m:
            k = m
        if k <= 0:
            store_release(w, slot_w + R_POSITION, pos)
            return 0
        copy_out(w, data_w, cap, rw, pos, dst, 0, k)
        fence_acquire()
        h2 = load_relaxed(w, W_HEAD)
        if h2 - pos >= cap:  # lapped while copying: what we copied may be torn
            continue
        store_release(w, slot_w + R_POSITION, pos + k)
        w[slot_w + R_RECEIVED] += k
        return k


@njit(**KERNEL_OPTIONS)
def bcast_readable(w, slot_w, spins):
    """Spin up to ``spins`` times for a record the reader in ``slot_w`` has not read."""
    pos = w[slot_w + R_POSITION]
    for _ in range(spins):
        if load_acquire(w, W_HEAD) > pos:
            return True
        cpu_relax()
    return load_acquire(w, W_HEAD) > pos
