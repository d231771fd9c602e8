"""Reading a ring without consuming it: ``peek`` (taps, the recorder, the strategy's look
at the opportunity ring) and ``head_of``.

``peek`` copies committed records, then issues an acquire fence and re-reads the cursor
that says which slots the producer may be overwriting (``claim`` in an SPSC ring,
``head`` otherwise), and drops what it may have torn: the seqlock check the broadcast
readers use.
"""
from numba import njit

from arbpipe.transport.atomics import fence_acquire, load_acquire, load_relaxed
from arbpipe.transport.kernels.common import KERNEL_OPTIONS, KIND_BROADCAST, KIND_MPMC, \
    KIND_SPSC, copy_out, geometry
from shm_layouts.ring import W_CLAIM, W_HEAD


@njit(**KERNEL_OPTIONS)
def peek(w, kind, pos, dst, m, out):
    """Copy up to m committed records from position ``pos`` on without consuming them.

    out[0] = first position copied (pos, or later if the ring moved past it),
    out[1] = records copied, out[2] = the position to peek from next. Records the
    producer may have been overwriting during the copy are discarded (seqlock
    check against the claim (SPSC) / head (MPMC, broadcast) cursor).
    """
    cap, rw, data_w, seq_w = geometry(w)
    head = load_acquire(w, W_HEAD)
    if kind == KIND_MPMC:  # only the committed prefix from pos
        start = max(pos, head - cap)
        k = 0
        while k < m and start + k < head:
            p = start + k
            s = load_acquire(w, seq_w + (p & (cap - 1)))
            if s != p + 1 and s != p + cap:
                break
            k += 1
    else:  # SPSC: slot head-cap stays intact until claim passes head; broadcast: it may not
        start = max(pos, head - cap + (1 if kind == KIND_BROADCAST else 0))
        k = min(m, head - start)
    if k < 0:
        k = 0
    copy_out(w, data_w, cap, rw, start, dst, 0, k)
    fence_acquire()
    limit = load_relaxed(w, W_CLAIM) if kind == KIND_SPSC else load_relaxed(w, W_HEAD)
    # first safe position - start
    bad = (limit - cap + (1 if kind == KIND_BROADCAST else 0)) - start
    if bad > 0:
        bad = min(bad, k)
        for i in range((k - bad) * rw):
            dst[i] = dst[bad * rw + i]
        start += bad
        k -= bad
    out[0] = start
    out[1] = k
    out[2] = start + k


@njit(**KERNEL_OPTIONS)
def head_of(w):
    """The ring's ``head`` (acquire)."""
    return load_acquire(w, W_HEAD)
