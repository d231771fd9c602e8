"""SPSC kernels: one producer, one consumer, two cursors.

Commit rule: a record is committed when the producer's release store of ``head`` moves
past its position. The producer first stores ``claim`` (the positions it may be writing,
for taps), then copies, then stores ``head``; the consumer acquires ``head`` before it
copies out and releases ``tail`` after. Each side caches the other's cursor in ``st``
and reloads it only when the cache says full (producer) or empty (consumer).
"""
from numba import njit

from arbpipe.transport.atomics import cpu_relax, fence_release, load_acquire, load_relaxed, \
    store_release
from arbpipe.transport.kernels.common import KERNEL_OPTIONS, POLICY_BLOCK, POLICY_DROP, \
    WAKE_SHIFT, copy_in, copy_out, full_policy, geometry
from arbpipe.transport.kernels.doorbell import sleepers_after_publish
from shm_layouts.ring import HALF_SHIFT, R_RECEIVED, W_BATCHES, W_CDOOR, W_CLAIM, W_DROPPED, \
    W_FULL_EVENTS, W_GEOM, W_HEAD, W_PDOOR, W_TAIL

ST_TAIL = 0     # st[ST_TAIL]: the producer's copy of the consumer cursor
ST_HEAD = 1     # st[ST_HEAD]: the consumer's copy of the producer cursor


@njit(**KERNEL_OPTIONS)
def spsc_push(w, src, n, st):
    """Push src records [0, n). st[ST_TAIL] caches the consumer cursor. Returns
    ``count | wake << WAKE_SHIFT``."""
    cap, rw, data_w, _ = geometry(w)
    head = load_relaxed(w, W_HEAD)
    tail = st[ST_TAIL]
    free = cap - (head - tail)
    if free < n:
        tail = load_acquire(w, W_TAIL)
        st[ST_TAIL] = tail
        free = cap - (head - tail)
    k = n if n < free else free
    wake = 0
    if k > 0:
        store_release(w, W_CLAIM, head + k)  # lets a tap tell which slots may change
        fence_release()
        copy_in(w, data_w, cap, rw, head, src, 0, k)
        store_release(w, W_HEAD, head + k)
        w[W_BATCHES] += 1
        wake = sleepers_after_publish(w, W_CDOOR)
    if k < n:
        w[W_FULL_EVENTS] += 1
        if full_policy(w) == POLICY_DROP:
            w[W_DROPPED] += n - k
    return k | (wake << WAKE_SHIFT)


@njit(**KERNEL_OPTIONS)
def spsc_pop(w, dst, m, st, slot_w):
    """Pop up to m records into dst. st[ST_HEAD] caches the producer cursor. Returns
    ``count | wake << WAKE_SHIFT``."""
    cap, rw, data_w, _ = geometry(w)
    tail = load_relaxed(w, W_TAIL)
    head = st[ST_HEAD]
    if head - tail < m:
        head = load_acquire(w, W_HEAD)
        st[ST_HEAD] = head
    k = head - tail
    if k > m:
        k = m
    wake = 0
    if k > 0:
        copy_out(w, data_w, cap, rw, tail, dst, 0, k)
        store_release(w, W_TAIL, tail + k)
        w[slot_w + R_RECEIVED] += k
        if full_policy(w) == POLICY_BLOCK:
            wake = sleepers_after_publish(w, W_PDOOR)
    return k | (wake << WAKE_SHIFT)


@njit(**KERNEL_OPTIONS)
def spsc_readable(w, spins):
    """Spin up to ``spins`` times for a record; returns True when one is there."""
    tail = load_relaxed(w, W_TAIL)
    for _ in range(spins):
        if load_acquire(w, W_HEAD) > tail:
            return True
        cpu_relax()
    return load_acquire(w, W_HEAD) > tail


@njit(**KERNEL_OPTIONS)
def spsc_writable(w, spins):
    """Spin up to ``spins`` times for room; returns True when there is some."""
    cap = w[W_GEOM] >> HALF_SHIFT
    head = load_relaxed(w, W_HEAD)
    for _ in range(spins):
        if head - load_acquire(w, W_TAIL) < cap:
            return True
        cpu_relax()
    return head - load_acquire(w, W_TAIL) < cap
