"""``warm_up``: load (or compile) every ring kernel once per process, before any hot path.

Each kernel is called on a private scratch ring of each kind, with the argument types the
ring classes use, so that no first call in a hot path pays numba's cache-load or compile
time (~10-100 ms each).
"""
import numpy as np

from arbpipe.transport.kernels.broadcast import bcast_pop, bcast_push, bcast_readable
from arbpipe.transport.kernels.common import POLICY_BLOCK
from arbpipe.transport.kernels.doorbell import announce_sleep, armed_readers, count_post, \
    leave_sleep, reclaim_sleeper, take_armed
from arbpipe.transport.kernels.mpmc import mpmc_claim_only, mpmc_pop, mpmc_push, mpmc_readable, \
    mpmc_settle, mpmc_stall, mpmc_unresolved, mpmc_writable
from arbpipe.transport.kernels.peek import head_of, peek
from arbpipe.transport.kernels.slots import add, claim_dead_slot, claim_slot, claim_slot_at
from arbpipe.transport.kernels.spsc import spsc_pop, spsc_push, spsc_readable, spsc_writable
from shm_layouts.kinds import RingKind
from shm_layouts.ring import D_ARMED, D_RECLAIMED, D_SLEEPS, D_WAKES, HALF_SHIFT, W_CDOOR, \
    W_DROPPED, W_GEOM, W_OFFSETS, W_POLICY, W_READERS, producers_offset, segment_layout

_warm = False


def warm_up() -> None:
    """Load (or compile) every kernel once, on a private scratch ring, so that no
    first call in a hot path pays numba's cache-load or compile time (~10-100 ms each)."""
    global _warm
    if _warm:
        return
    for kind in (RingKind.SPSC, RingKind.MPMC, RingKind.BROADCAST):
        cap, rs = 8, 64
        seq_off, data_off, total = segment_layout(kind, cap, rs, 2)
        w = np.zeros(total // 8, np.int64)
        w[W_GEOM] = rs | (cap << HALF_SHIFT)
        w[W_OFFSETS] = seq_off | (data_off << HALF_SHIFT)
        w[W_POLICY] = POLICY_BLOCK << HALF_SHIFT
        if kind == RingKind.MPMC:
            w[seq_off // 8: seq_off // 8 + cap] = np.arange(cap)
        src = np.zeros(8 * 2, np.int64)
        st = np.zeros(4, np.int64)
        sw = W_READERS
        if kind == RingKind.SPSC:
            spsc_push(w, src, 2, st)
            spsc_pop(w, src, 2, st, sw)
            spsc_readable(w, 1)
            spsc_writable(w, 1)
        elif kind == RingKind.MPMC:
            pw = producers_offset(2) // 8
            mpmc_push(w, src, 2)
            mpmc_push(w, src, 2, pw)
            mpmc_pop(w, src, 2, sw)
            mpmc_pop(w, src, 2, sw, 0)
            mpmc_readable(w, 1)
            mpmc_writable(w, 1)
            mpmc_stall(w, st)
            dead = np.zeros(2, np.int64)
            mpmc_settle(w, True, pw, 2, dead, st)
            mpmc_settle(w, False, pw, 2, dead, st)
            mpmc_unresolved(w, 0, 2)
            mpmc_claim_only(w, 1, pw)
        else:
            bcast_push(w, src, 2)
            bcast_pop(w, src, 2, sw)
            bcast_readable(w, sw, 1)
        reg = W_CDOOR + D_RECLAIMED + 1   # a spare word of the scratch ring
        r = announce_sleep(w, W_CDOOR, W_CDOOR + D_ARMED, reg, 5)
        leave_sleep(w, W_CDOOR, W_CDOOR + D_ARMED, W_CDOOR + D_SLEEPS, W_CDOOR + D_WAKES, True,
                    reg, 5, r)
        reclaim_sleeper(w, reg, 5, W_CDOOR)
        claim_dead_slot(w, reg, reg + 1, 0, 0, 1)
        take_armed(w, W_CDOOR + D_ARMED)
        armed_readers(w, 2, st)
        claim_slot(w, 2, 0, 1, -1)
        claim_slot_at(w, W_DROPPED, 0, 0)
        peek(w, int(kind), 0, src, 2, st)
        add(w, W_DROPPED, 1)
        count_post(w, W_CDOOR)
        head_of(w)
    _warm = True
