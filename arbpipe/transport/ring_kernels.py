"""numba kernels for the three ring kinds. Python calls one kernel per batch.

Every kernel takes ``w``, the whole segment as an int64 array, and reads the ring
geometry from the header words (``shm_layouts.ring``). Records are moved as
``record_size // 8`` int64 words from/to flat int64 arrays. Cross-process cursors
are read and written only through ``arbpipe.transport.atomics``.

Memory-ordering rules (see docs/design.md, "Ring invariants"):
  * SPSC/MPMC: records are written, then published with a release store of the
    cursor (SPSC ``head``) or of the slot's sequence word (MPMC); readers acquire.
  * broadcast: the writer publishes each record with a release store of ``head``
    followed by a release fence, so that no byte of record ``p + capacity`` can be
    visible before ``head > p``. A reader copies, issues an acquire fence, re-reads
    ``head`` and discards what may have been overwritten meanwhile (seqlock-style).
  * Doorbells: a sleeper does RMW(sleepers += 1), fence, re-check; a publisher
    stores, fences, loads ``sleepers``. One of the two always sees the other.
    The sleeper also registers its token (CAS 0 -> token) after the increment and
    unregisters (CAS token -> 0) before the decrement, so that a dead sleeper's
    count can be undone exactly once (``reclaim_sleeper``) and never more than it
    added (see shm_layouts.ring, "Doorbell sleepers").
Kernels return packed ints: ``count | wake << 32`` where ``wake`` tells the
Python side to post a doorbell.
"""
from numba import njit

from arbpipe.transport.atomics import (cas, cpu_relax, fence_acquire, fence_release, fence_seq_cst,
                             fetch_add, load_acquire, load_relaxed, store_release)
from shm_layouts.ring import (D_ARMED, D_POSTS, D_RECLAIMED, D_SLEEPERS, P_CLAIM_N,
                              P_CLAIM_POS, P_PID, PRODUCER_SLOT_WORDS, R_ARMED, R_CLAIM_N, R_CLAIM_POS, R_LAPS,
                              R_LOST, R_OWNER_PID, R_POSITION, R_RECEIVED, READER_SLOT_WORDS,
                              SEQ_POISON, W_ABANDONED, W_BATCHES, W_CDOOR, W_CLAIM, W_DROPPED,
                              W_FULL_EVENTS, W_GEOM, W_HEAD, W_OFFSETS, W_ORPHANED, W_PDOOR,
                              W_POLICY, W_READERS, W_TAIL, FullPolicy)

_DROP = int(FullPolicy.DROP_NEWEST)
_BLOCK = int(FullPolicy.BLOCK)
_LOW = 0xFFFFFFFF
_SEQ = SEQ_POISON - 1      # the position part of an MPMC sequence word
_KW = dict(cache=True, nogil=True, boundscheck=False)


@njit(inline="always", **_KW)
def geometry(w):
    """(capacity, words per record, data word offset, seq word offset)."""
    g = w[W_GEOM]
    o = w[W_OFFSETS]
    return g >> 32, (g & _LOW) >> 3, (o >> 32) >> 3, (o & _LOW) >> 3


@njit(inline="always", **_KW)
def _policy(w):
    return w[W_POLICY] >> 32


@njit(inline="always", **_KW)
def _copy_in(w, data_w, cap, rw, pos, src, first, k):
    """Copy records src[first:first+k] to ring positions pos..pos+k-1 (two chunks at wrap)."""
    s = pos & (cap - 1)
    c1 = min(k, cap - s)
    d = data_w + s * rw
    o = first * rw
    for j in range(c1 * rw):
        w[d + j] = src[o + j]
    o += c1 * rw
    for j in range((k - c1) * rw):
        w[data_w + j] = src[o + j]


@njit(inline="always", **_KW)
def _copy_out(w, data_w, cap, rw, pos, dst, first, k):
    s = pos & (cap - 1)
    c1 = min(k, cap - s)
    d = data_w + s * rw
    o = first * rw
    for j in range(c1 * rw):
        dst[o + j] = w[d + j]
    o += c1 * rw
    for j in range((k - c1) * rw):
        dst[o + j] = w[data_w + j]


@njit(inline="always", **_KW)
def _sleepers_after_publish(w, door):
    fence_seq_cst()
    return 1 if load_relaxed(w, door + D_SLEEPERS) > 0 else 0


# ---------------------------------------------------------------- SPSC ---------

@njit(**_KW)
def spsc_push(w, src, n, st):
    """Push src records [0, n). st[0] caches the consumer cursor. Returns count|wake<<32."""
    cap, rw, data_w, _ = geometry(w)
    head = load_relaxed(w, W_HEAD)
    tail = st[0]
    free = cap - (head - tail)
    if free < n:
        tail = load_acquire(w, W_TAIL)
        st[0] = tail
        free = cap - (head - tail)
    k = n if n < free else free
    wake = 0
    if k > 0:
        store_release(w, W_CLAIM, head + k)  # lets a tap tell which slots may change
        fence_release()
        _copy_in(w, data_w, cap, rw, head, src, 0, k)
        store_release(w, W_HEAD, head + k)
        w[W_BATCHES] += 1
        wake = _sleepers_after_publish(w, W_CDOOR)
    if k < n:
        w[W_FULL_EVENTS] += 1
        if _policy(w) == _DROP:
            w[W_DROPPED] += n - k
    return k | (wake << 32)


@njit(**_KW)
def spsc_pop(w, dst, m, st, slot_w):
    """Pop up to m records into dst. st[1] caches the producer cursor."""
    cap, rw, data_w, _ = geometry(w)
    tail = load_relaxed(w, W_TAIL)
    head = st[1]
    if head - tail < m:
        head = load_acquire(w, W_HEAD)
        st[1] = head
    k = head - tail
    if k > m:
        k = m
    wake = 0
    if k > 0:
        _copy_out(w, data_w, cap, rw, tail, dst, 0, k)
        store_release(w, W_TAIL, tail + k)
        w[slot_w + R_RECEIVED] += k
        if _policy(w) == _BLOCK:
            wake = _sleepers_after_publish(w, W_PDOOR)
    return k | (wake << 32)


@njit(**_KW)
def spsc_readable(w, spins):
    """Spin up to ``spins`` times for a record; returns True when one is there."""
    tail = load_relaxed(w, W_TAIL)
    for _ in range(spins):
        if load_acquire(w, W_HEAD) > tail:
            return True
        cpu_relax()
    return load_acquire(w, W_HEAD) > tail


@njit(**_KW)
def spsc_writable(w, spins):
    cap = w[W_GEOM] >> 32
    head = load_relaxed(w, W_HEAD)
    for _ in range(spins):
        if head - load_acquire(w, W_TAIL) < cap:
            return True
        cpu_relax()
    return head - load_acquire(w, W_TAIL) < cap


# ---------------------------------------------------------------- MPMC ---------
#
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

@njit(inline="always", **_KW)
def _mpmc_claim(w, seq_w, mask, n, pslot_w):
    """CAS-claim up to n free positions from head; (pos, k), k == 0 when full."""
    pos = load_relaxed(w, W_HEAD)
    if n <= 0:
        return pos, 0
    while True:
        k = 0
        while k < n and load_acquire(w, seq_w + ((pos + k) & mask)) == pos + k:
            k += 1
        if k == 0:
            s = load_acquire(w, seq_w + (pos & mask)) & _SEQ
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


@njit(**_KW)
def mpmc_push(w, src, n, pslot_w=0):
    """Vyukov bounded MPMC enqueue of up to n records, claimed as one run by CAS.
    ``pslot_w``: word index of this producer's slot in the producer table (0: none, the
    claim is then not recoverable if this process dies mid-push)."""
    cap, rw, data_w, seq_w = geometry(w)
    mask = cap - 1
    pos = load_relaxed(w, W_HEAD)
    announced = False
    while True:     # the claim loop of _mpmc_claim, written out (measurably faster)
        k = 0
        while k < n and load_acquire(w, seq_w + ((pos + k) & mask)) == pos + k:
            k += 1
        if k == 0:
            s = load_acquire(w, seq_w + (pos & mask)) & _SEQ
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
        _copy_in(w, data_w, cap, rw, pos, src, 0, k)
        for i in range(k):
            store_release(w, seq_w + ((pos + i) & mask), pos + i + 1)
        fetch_add(w, W_BATCHES, 1)
        wake = _sleepers_after_publish(w, W_CDOOR)
    if k < n:
        fetch_add(w, W_FULL_EVENTS, 1)
        if _policy(w) == _DROP:
            fetch_add(w, W_DROPPED, n - k)
    return k | (wake << 32)


@njit(**_KW)
def mpmc_claim_only(w, n, pslot_w):
    """Claim up to n positions and return without committing them: what a producer
    SIGKILLed between its CAS and its commit leaves behind (recovery tests)."""
    cap, _, _, seq_w = geometry(w)
    pos, k = _mpmc_claim(w, seq_w, cap - 1, n, pslot_w)
    return pos if k > 0 else -1


@njit(**_KW)
def mpmc_pop(w, dst, m, slot_w, hold=0):
    """Vyukov bounded MPMC dequeue of up to m records (one CAS for the run).

    Poisoned slots at the front are skipped (and released). Returns count | wake << 32 |
    stalled << 33, where ``stalled`` says the next position is claimed by a producer but
    not committed (the Python side then checks whether that producer is alive).
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
                return stalled << 33
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
    _copy_out(w, data_w, cap, rw, pos, dst, 0, k)
    w[slot_w + R_RECEIVED] += k
    store_release(w, slot_w + R_CLAIM_N, -k)
    for i in range(k):
        store_release(w, seq_w + ((pos + i) & mask), pos + i + cap)
    wake = 0
    if _policy(w) == _BLOCK:
        wake = _sleepers_after_publish(w, W_PDOOR)
    return k | (wake << 32)


@njit(**_KW)
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
    if q >= 0 and q < tail and load_acquire(w, seq_w + (q & mask)) & _SEQ == q + 1:
        out[1] = q


@njit(**_KW)
def _mpmc_dead_cover(w, p, producers, table_w, nslots, dead):
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


@njit(**_KW)
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
                        _mpmc_dead_cover(w, p, True, table_w, nslots, dead):
                    ok, _ = cas(w, slot, p, (p + 1) | SEQ_POISON)
                    if ok:
                        fetch_add(w, W_ABANDONED, 1)
                        out[0] += 1
            else:
                s = load_acquire(w, slot)
                if p < load_acquire(w, W_TAIL) and s & _SEQ == p + 1 and \
                        _mpmc_dead_cover(w, p, False, table_w, nslots, dead):
                    ok, _ = cas(w, slot, s, p + cap)
                    if ok:
                        if counted or s != p + 1:
                            out[2] += 1
                        else:
                            fetch_add(w, W_ORPHANED, 1)
                            out[1] += 1


@njit(**_KW)
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
        if p < tail and s & _SEQ == p + 1:
            return True
    return False


@njit(**_KW)
def mpmc_readable(w, spins):
    cap, _, _, seq_w = geometry(w)
    for _ in range(spins + 1):
        pos = load_relaxed(w, W_TAIL)
        if load_acquire(w, seq_w + (pos & (cap - 1))) & _SEQ == pos + 1:
            return True
        cpu_relax()
    return False


@njit(**_KW)
def mpmc_writable(w, spins):
    cap, _, _, seq_w = geometry(w)
    for _ in range(spins + 1):
        pos = load_relaxed(w, W_HEAD)
        if load_acquire(w, seq_w + (pos & (cap - 1))) == pos:
            return True
        cpu_relax()
    return False


# ------------------------------------------------------------- broadcast -------

@njit(**_KW)
def bcast_push(w, src, n):
    """Publish n records; never waits. Each record is committed by its own head store."""
    cap, rw, data_w, _ = geometry(w)
    head = load_relaxed(w, W_HEAD)
    for i in range(n):
        _copy_in(w, data_w, cap, rw, head + i, src, i, 1)
        store_release(w, W_HEAD, head + i + 1)
        fence_release()  # keeps the next record's bytes behind this head store
    wake = 0
    if n > 0:
        w[W_BATCHES] += 1
        wake = _sleepers_after_publish(w, W_CDOOR)
    return n | (wake << 32)


@njit(**_KW)
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
        _copy_out(w, data_w, cap, rw, pos, dst, 0, k)
        fence_acquire()
        h2 = load_relaxed(w, W_HEAD)
        if h2 - pos >= cap:  # lapped while copying: what we copied may be torn
            continue
        store_release(w, slot_w + R_POSITION, pos + k)
        w[slot_w + R_RECEIVED] += k
        return k


@njit(**_KW)
def bcast_readable(w, slot_w, spins):
    pos = w[slot_w + R_POSITION]
    for _ in range(spins):
        if load_acquire(w, W_HEAD) > pos:
            return True
        cpu_relax()
    return load_acquire(w, W_HEAD) > pos


# ------------------------------------------------------------------ tap --------

@njit(**_KW)
def peek(w, kind, pos, dst, m, out):
    """Copy up to m committed records from position ``pos`` on without consuming them.

    out[0] = first position copied (pos, or later if the ring moved past it),
    out[1] = records copied, out[2] = the position to peek from next. Records the
    producer may have been overwriting during the copy are discarded (seqlock
    check against the claim (SPSC) / head (MPMC, broadcast) cursor).
    """
    cap, rw, data_w, seq_w = geometry(w)
    head = load_acquire(w, W_HEAD)
    if kind == 2:  # MPMC: only the committed prefix from pos
        start = max(pos, head - cap)
        k = 0
        while k < m and start + k < head:
            p = start + k
            s = load_acquire(w, seq_w + (p & (cap - 1)))
            if s != p + 1 and s != p + cap:
                break
            k += 1
    else:  # SPSC: slot head-cap stays intact until claim passes head; broadcast: it may not
        start = max(pos, head - cap + (1 if kind == 3 else 0))
        k = min(m, head - start)
    if k < 0:
        k = 0
    _copy_out(w, data_w, cap, rw, start, dst, 0, k)
    fence_acquire()
    limit = load_relaxed(w, W_CLAIM) if kind == 1 else load_relaxed(w, W_HEAD)
    bad = (limit - cap + (1 if kind == 3 else 0)) - start  # first safe position - start
    if bad > 0:
        bad = min(bad, k)
        for i in range((k - bad) * rw):
            dst[i] = dst[bad * rw + i]
        start += bad
        k -= bad
    out[0] = start
    out[1] = k
    out[2] = start + k


# --------------------------------------------------- doorbells and slots -------

@njit(**_KW)
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


@njit(**_KW)
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


@njit(**_KW)
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


@njit(**_KW)
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


@njit(**_KW)
def take_armed(w, armed_w):
    """Disarm a sleeper's flag; True if this caller must post its semaphore."""
    if load_acquire(w, armed_w) == 0:
        return False
    ok, _ = cas(w, armed_w, 1, 0)
    return ok


@njit(**_KW)
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


@njit(**_KW)
def claim_slot(w, max_readers, expected_pid, pid, only):
    """CAS a reader slot's owner from expected_pid to pid (first free one if only < 0)."""
    for i in range(max_readers):
        if only >= 0 and i != only:
            continue
        ok, _ = cas(w, W_READERS + i * READER_SLOT_WORDS + R_OWNER_PID, expected_pid, pid)
        if ok:
            return i
    return -1


@njit(**_KW)
def claim_slot_at(w, idx, expected_pid, pid):
    """CAS one owner word from expected_pid to pid; True if this call took it."""
    ok, _ = cas(w, idx, expected_pid, pid)
    return ok


@njit(**_KW)
def add(w, idx, v):
    return fetch_add(w, idx, v)


@njit(**_KW)
def count_post(w, door):
    fetch_add(w, door + D_POSTS, 1)


@njit(**_KW)
def head_of(w):
    return load_acquire(w, W_HEAD)



_warm = False


def warm_up() -> None:
    """Load (or compile) every kernel once, on a private scratch ring, so that no
    first call in a hot path pays numba's cache-load or compile time (~10-100 ms each)."""
    global _warm
    if _warm:
        return
    import numpy as np

    from shm_layouts.ring import RingKind, segment_layout
    for kind in (RingKind.SPSC, RingKind.MPMC, RingKind.BROADCAST):
        cap, rs = 8, 64
        seq_off, data_off, total = segment_layout(kind, cap, rs, 2)
        w = np.zeros(total // 8, np.int64)
        w[W_GEOM] = rs | (cap << 32)
        w[W_OFFSETS] = seq_off | (data_off << 32)
        w[W_POLICY] = _BLOCK << 32
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
            from shm_layouts.ring import producers_offset
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
        leave_sleep(w, W_CDOOR, W_CDOOR + D_ARMED, W_CDOOR + 1, W_CDOOR + 2, True, reg, 5, r)
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
