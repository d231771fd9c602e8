"""The host's floor, measured in the same run as everything else.

* a bare numba SPSC ring (head/tail words, no policy, no counters, no doorbell),
  producer and consumer each looping entirely inside numba;
* cache-line ping-pong: two processes bounce one atomic word; half the round
  trip is the fastest possible one-way hand-off between the two cores.
"""
from numba import njit

from arbpipe.transport.atomics import cpu_relax, load_acquire, store_release
from arbpipe.clock import monotonic_ns

HEAD, TAIL, DATA = 16, 32, 64  # word offsets (each cursor on its own 128-byte block)


@njit(cache=True, nogil=True)
def bare_produce(w, pool, n, batch, cap):
    rw = 8
    mask = cap - 1
    plen = len(pool) // rw
    head = 0
    tail = 0
    sent = 0
    while sent < n:
        b = min(batch, n - sent)
        while cap - (head - tail) < b:
            tail = load_acquire(w, TAIL)
            cpu_relax()
        for i in range(b):
            s = ((head + i) & mask) * rw + DATA
            o = ((sent + i) % plen) * rw
            for j in range(rw):
                w[s + j] = pool[o + j]
        head += b
        store_release(w, HEAD, head)
        sent += b
    return sent


@njit(cache=True, nogil=True)
def bare_consume(w, n, batch, cap):
    rw = 8
    mask = cap - 1
    tail = 0
    head = 0
    csum = 0
    t0 = 0
    while tail < n:
        while head == tail:
            head = load_acquire(w, HEAD)
            if head == tail:
                cpu_relax()
        if t0 == 0:
            t0 = monotonic_ns()
        k = min(head - tail, batch)
        for i in range(k):
            csum += w[((tail + i) & mask) * rw + DATA + 1]
        tail += k
        store_release(w, TAIL, tail)
    return csum, monotonic_ns() - t0


@njit(cache=True, nogil=True)
def pingpong(w, me, rounds):
    """me=0 starts; each side waits for the word to reach its turn and bumps it."""
    t0 = monotonic_ns()
    for r in range(rounds):
        want = 2 * r + me
        while load_acquire(w, HEAD) != want:
            cpu_relax()
        store_release(w, HEAD, want + 1)
    return monotonic_ns() - t0

