"""MPMC kernels: a bounded Vyukov queue (many producers, many consumers, each record taken
once) with crash recovery.

Commit rule: the record at position ``p`` is committed when the release store of its
slot's sequence word sets it to ``p + 1``; the consumer frees the slot for the next lap
by storing ``p + capacity``. ``head`` and ``tail`` move only by CAS: a producer claims a
run of free slots with one CAS on ``head``, a consumer a run of committed ones with one
CAS on ``tail``; both acquire the slots' sequence words before touching the records.
"""
from numba import njit

from arbpipe.transport.atomics import cas, cpu_relax, fetch_add, load_acquire, load_relaxed, \
    store_release
from arbpipe.transport.kernels.common import KERNEL_OPTIONS, POLICY_BLOCK, POLICY_DROP, \
    STALL_SHIFT, WAKE_SHIFT, copy_in, copy_out, full_policy, geometry
from arbpipe.transport.kernels.doorbell import sleepers_after_publish
from shm_layouts.ring import P_CLAIM_N, P_CLAIM_POS, P_PID, PRODUCER_SLOT_WORDS, R_CLAIM_N, \
    R_CLAIM_POS, R_OWNER_PID, R_RECEIVED, READER_SLOT_WORDS, SEQ_POISON, SEQ_POSITION, \
    W_ABANDONED, W_BATCHES, W_CDOOR, W_DROPPED, W_FULL_EVENTS, W_HEAD, W_ORPHANED, W_PDOOR, \
    W_READERS, W_TAIL

# Crash recovery (see shm_layouts.ring, "MPMC crash recovery"). Before the CAS that
# claims positions [pos, pos + k), a producer stores (claim_pos, claim_n) in its slot of
# the producer table (``pslot_w``) and a consumer in its reader slot; the CAS (acq_rel)
# orders those stores before the claim. A finished claim stays announced (clearing it
# would cost a store per batch): it covers only committed / released positions, which
# recovery never touches. A claim whose CAS failed is re-announced at the retry, or
# withdrawn (claim_n = 0) when the call ends without a claim (full / empty), so a live
# process never keeps covering positions another one claimed. A consumer sets
# claim_n = -k once ``received`` counts the batch.
# A slot that stays claimed-but-uncommitted (seq == p, p < head) while every claim that
# covers p belongs to a dead process is poisoned: seq = (p + 1) | SEQ_POISON; consumers
# skip it like a record and release it. A slot dequeued-but-unreleased (seq == p + 1,
# p < tail) with only dead claimants is released (seq = p + capacity) for the producers.


@njit(inline="always", **KERNEL_OPTIONS)
def _claim_run(w, seq_w, mask, n, pslot_w):
    """CAS-claim up to n free positions from head; (pos, k), k == 0 when full."""
    pos = load_relaxed(w, W_HEAD)
    if n <= 0:
        return pos, 0
    while True:
        k = 0
        while k < n and load_acquire(w, seq_w + ((pos + k) & mask)) == pos + k:
            k += 1
        if k == 0:
            s = load_acquire(w, seq_w + (pos & mask)) & SEQ_POSITION
            if s < pos:  # slot still holds the previous lap's record: full
                if pslot_w > 0:
                    store_release(w, pslot_w + P_CLAIM_N, 0)
                return pos, 0
            pos = load_relaxed(w, W_HEAD)
            continue
        if pslot_w > 0:
            w[pslot_w + P_CLAIM_POS] = pos
            store_release(w, pslot_w + P_CLAIM_N, k)
        ok, seen = cas(w, W_HEAD, pos, pos + k)
        if ok:
            return pos, k
        pos = seen


@njit(**KERNEL_OPTIONS)
def mpmc_push(w, src, n, pslot_w=0):
    """Vyukov bounded MPMC enqueue of up to n records, claimed as one run by CAS.
    ``pslot_w``: word index of this producer's slot in the producer table (0: none, the
    claim is then not recoverable if this process dies mid-push)."""
    cap, rw, data_w, seq_w = geometry(w)
    mask = cap - 1
    pos = load_relaxed(w, W_HEAD)
    announced = False
    while True:     # the claim loop of _claim_run, written out (measurably faster)
        k = 0
        while k < n and load_acquire(w, seq_w + ((pos + k) & mask)) == pos + k:
            k += 1
        if k == 0:
            s = load_acquire(w, seq_w + (pos & mask)) & SEQ_POSITION
            if s < pos or n <= 0:  # slot still holds the previous lap's record: full
                if announced:      # withdraw the claim whose CAS failed: it is not ours
                    store_release(w, pslot_w + P_CLAIM_N, 0)
                break
            pos = load_relaxed(w, W_HEAD)
            continue
        if pslot_w > 0:
            w[pslot_w + P_CLAIM_POS] = pos
            store_release(w, pslot_w + P_CLAIM_N, k)
            announced = True
        ok, seen = cas(w, W_HEAD, pos, pos + k)
        if ok:
            break
        pos = seen
    wake = 0
    if k > 0:
        copy_in(w, data_w, cap, rw, pos, src, 0, k)
        for i in range(k):
            store_release(w, seq_w + ((pos + i) & mask), pos + i + 1)
        fetch_add(w, W_BATCHES, 1)
        wake = sleepers_after_publish(w, W_CDOOR)
    if k < n:
        fetch_add(w, W_FULL_EVENTS, 1)
        if full_policy(w) == POLICY_DROP:
            fetch_add(w, W_DROPPED, n - k)
    return k | (wake << WAKE_SHIFT)


@njit(**KERNEL_OPTIONS)
def mpmc_claim_only(w, n, pslot_w):
    """Claim up to n positions and return without committing them: what a producer
    SIGKILLed between its CAS and its commit leaves behind (recovery tests)."""
    cap, _, _, seq_w = geometry(w)
    pos, k = _claim_run(w, seq_w, cap - 1, n, pslot_w)
    return pos if k > 0 else -1


@njit(**KERNEL_OPTIONS)
def mpmc_pop(w, dst, m, slot_w, hold=0):
    """Vyukov bounded MPMC dequeue of up to m records (one CAS for the run).

    Poisoned slots at the front are skipped (and released). Returns ``count | wake <<
    WAKE_SHIFT | stalled << STALL_SHIFT``, where ``stalled`` says the next position is
    claimed by a producer but not committed (the Python side then checks whether that
    producer is alive).
    ``hold`` != 0 (recovery tests only) returns right after the dequeue CAS, leaving the
    slots unreleased as a consumer SIGKILLed there would."""
    cap, rw, data_w, seq_w = geometry(w)
    mask = cap - 1
    pos = load_relaxed(w, W_TAIL)
    announced = False
    while True:
        k = 0
        while k < m and load_acquire(w, seq_w + ((pos + k) & mask)) == pos + k + 1:
            k += 1
        if k == 0:
            if announced:      # a claim whose CAS failed is not ours: withdraw it
                store_release(w, slot_w + R_CLAIM_N, 0)
                announced = False
            if m <= 0:
                return 0
            s = load_acquire(w, seq_w + (pos & mask))
            if s == (pos + 1) | SEQ_POISON:  # abandoned by a dead producer: skip it
                w[slot_w + R_CLAIM_POS] = pos
                store_release(w, slot_w + R_CLAIM_N, -1)
                ok, seen = cas(w, W_TAIL, pos, pos + 1)
                if ok:
                    store_release(w, seq_w + (pos & mask), pos + cap)
                    pos += 1
                else:
                    pos = seen
                store_release(w, slot_w + R_CLAIM_N, 0)
                continue
            if s < pos + 1:  # not yet published: empty (or a producer is mid-commit)
                stalled = 1 if (s == pos and load_acquire(w, W_HEAD) > pos) else 0
                return stalled << STALL_SHIFT
            pos = load_relaxed(w, W_TAIL)
            continue
        w[slot_w + R_CLAIM_POS] = pos
        store_release(w, slot_w + R_CLAIM_N, k)
        announced = True
        ok, seen = cas(w, W_TAIL, pos, pos + k)
        if ok:
            break
        pos = seen
    if hold:
        return k
    copy_out(w, data_w, cap, rw, pos, dst, 0, k)
    w[slot_w + R_RECEIVED] += k
    store_release(w, slot_w + R_CLAIM_N, -k)
    for i in range(k):
        store_release(w, seq_w + ((pos + i) & mask), pos + i + cap)
    wake = 0
    if full_policy(w) == POLICY_BLOCK:
        wake = sleepers_after_publish(w, W_PDOOR)
    return k | (wake << WAKE_SHIFT)


@njit(**KERNEL_OPTIONS)
def mpmc_stall(w, out):
    """Where MPMC traffic is stuck, if anywhere: out[0] = position claimed by a producer
    but not committed (-1: none), out[1] = position dequeued but not released that keeps
    producers out (-1: none)."""
    cap, _, _, seq_w = geometry(w)
    mask = cap - 1
    out[0] = -1
    out[1] = -1
    tail = load_acquire(w, W_TAIL)
    head = load_acquire(w, W_HEAD)
    if head > tail and load_acquire(w, seq_w + (tail & mask)) == tail:
        out[0] = tail
    # producers' next position: its slot must have been released by the previous lap
    q = head - cap
    if q >= 0 and q < tail and load_acquire(w, seq_w + (q & mask)) & SEQ_POSITION == q + 1:
        out[1] = q


@njit(**KERNEL_OPTIONS)
def _dead_cover(w, p, producers, table_w, nslots, dead):
    """True if at least one announced claim covers p and every such claimant is dead
    (``dead[i]`` != 0 for slot i, as the caller found it)."""
    k = 0
    for i in range(nslots):
        if producers:
            sw = table_w + i * PRODUCER_SLOT_WORDS
            pid = load_acquire(w, sw + P_PID)
            n = load_acquire(w, sw + P_CLAIM_N)
            c0 = load_acquire(w, sw + P_CLAIM_POS)
        else:
            sw = W_READERS + i * READER_SLOT_WORDS
            pid = load_acquire(w, sw + R_OWNER_PID)
            n = load_acquire(w, sw + R_CLAIM_N)
            c0 = load_acquire(w, sw + R_CLAIM_POS)
        if n < 0:
            n = -n
        if pid != 0 and n > 0 and c0 <= p < c0 + n:
            if dead[i] == 0:
                return False
            k += 1
    return k > 0


@njit(**KERNEL_OPTIONS)
def mpmc_settle(w, producers, table_w, nslots, dead, out):
    """Settle what dead processes left stuck: for every slot i with ``dead[i]`` and an
    announced claim, each position of the claim that is still claimed-but-uncommitted
    (producers) is poisoned, or dequeued-but-unreleased (consumers) is released, provided
    every claimant covering it is dead. out[0] += poisoned, out[1] += released and
    counted as orphaned, out[2] += released without counting (the dead consumer had
    counted them as received, or the slot was a poisoned one being skipped)."""
    cap, _, _, seq_w = geometry(w)
    mask = cap - 1
    for i in range(nslots):
        if dead[i] == 0:
            continue
        if producers:
            sw = table_w + i * PRODUCER_SLOT_WORDS
            n = load_acquire(w, sw + P_CLAIM_N)
            c0 = load_acquire(w, sw + P_CLAIM_POS)
        else:
            sw = W_READERS + i * READER_SLOT_WORDS
            n = load_acquire(w, sw + R_CLAIM_N)
            c0 = load_acquire(w, sw + R_CLAIM_POS)
        counted = n < 0
        if n < 0:
            n = -n
        for p in range(c0, c0 + n):
            slot = seq_w + (p & mask)
            if producers:
                if p < load_acquire(w, W_HEAD) and load_acquire(w, slot) == p and \
                        _dead_cover(w, p, True, table_w, nslots, dead):
                    ok, _ = cas(w, slot, p, (p + 1) | SEQ_POISON)
                    if ok:
                        fetch_add(w, W_ABANDONED, 1)
                        out[0] += 1
            else:
                s = load_acquire(w, slot)
                if p < load_acquire(w, W_TAIL) and s & SEQ_POSITION == p + 1 and \
                        _dead_cover(w, p, False, table_w, nslots, dead):
                    ok, _ = cas(w, slot, s, p + cap)
                    if ok:
                        if counted or s != p + 1:
                            out[2] += 1
                        else:
                            fetch_add(w, W_ORPHANED, 1)
                            out[1] += 1


@njit(**KERNEL_OPTIONS)
def mpmc_unresolved(w, c0, n):
    """True if a position of the claim [c0, c0 + |n|) is still claimed and uncommitted
    or dequeued and unreleased (a dead process's slot must not be reused before)."""
    if n < 0:
        n = -n
    cap, _, _, seq_w = geometry(w)
    head = load_acquire(w, W_HEAD)
    tail = load_acquire(w, W_TAIL)
    for p in range(c0, c0 + n):
        s = load_acquire(w, seq_w + (p & (cap - 1)))
        if p < head and s == p:
            return True
        if p < tail and s & SEQ_POSITION == p + 1:
            return True
    return False


@njit(**KERNEL_OPTIONS)
def mpmc_readable(w, spins):
    cap, _, _, seq_w = geometry(w)
    for _ in range(spins + 1):
        pos = load_relaxed(w, W_TAIL)
        if load_acquire(w, seq_w + (pos & (cap - 1))) & SEQ_POSITION == pos + 1:
            return True
        cpu_relax()
    return False


@njit(**KERNEL_OPTIONS)
def mpmc_writable(w, spins):
    cap, _, _, seq_w = geometry(w)
    for _ in range(spins + 1):
        pos = load_relaxed(w, W_HEAD)
        if load_acquire(w, seq_w + (pos & (cap - 1))) == pos:
            return True
        cpu_relax()
    return False
