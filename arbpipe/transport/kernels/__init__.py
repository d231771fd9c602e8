"""numba kernels for the three ring kinds. Python calls one kernel per batch.

Every kernel takes ``w``, the whole segment as an int64 array, and reads the ring
geometry from the header words (``shm_layouts.ring``). Records are moved as
``record_size // 8`` int64 words from/to flat int64 arrays. Cross-process cursors
are read and written only through ``arbpipe.transport.atomics``.

    module     holds
    ---------  ----------------------------------------------------------------------
    common     compile options, kinds / policies as ints, packed returns, geometry, copies
    spsc       spsc_push, spsc_pop, spsc_readable, spsc_writable
    mpmc       mpmc_push, mpmc_pop, their crash recovery (stall, settle, unresolved)
    broadcast  bcast_push, bcast_pop, bcast_readable
    peek       peek (read without consuming), head_of
    doorbell   both sides of the sleep / wake handshake
    slots      reader and producer slot ownership, add
    warmup     warm_up (load every kernel once per process)

Commit rules, one per ring kind:
  * SPSC: a record is committed when the producer's release store of ``head`` moves
    past its position.
  * MPMC: the record at position ``p`` is committed when the release store of its
    slot's sequence word sets it to ``p + 1`` (the consumer frees it with ``p + capacity``).
  * broadcast: the record at ``p`` is committed when the writer's release store of
    ``head`` moves past ``p``, and a reader keeps it only if ``head`` is still below
    ``p + capacity`` after its copy.

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
Kernels return packed ints: ``count | wake << WAKE_SHIFT`` where ``wake`` tells the
Python side to post a doorbell.
"""
from arbpipe.transport.kernels.broadcast import bcast_pop, bcast_push, bcast_readable
from arbpipe.transport.kernels.common import COUNT_MASK, KERNEL_OPTIONS, KIND_BROADCAST, \
    KIND_MPMC, KIND_SPSC, POLICY_BLOCK, POLICY_DROP, STALL_BIT, STALL_SHIFT, WAKE_BIT, \
    WAKE_SHIFT, copy_in, copy_out, full_policy, geometry
from arbpipe.transport.kernels.doorbell import announce_sleep, armed_readers, count_post, \
    leave_sleep, reclaim_sleeper, sleepers_after_publish, take_armed
from arbpipe.transport.kernels.mpmc import mpmc_claim_only, mpmc_pop, mpmc_push, mpmc_readable, \
    mpmc_settle, mpmc_stall, mpmc_unresolved, mpmc_writable
from arbpipe.transport.kernels.peek import head_of, peek
from arbpipe.transport.kernels.slots import add, claim_dead_slot, claim_slot, claim_slot_at
from arbpipe.transport.kernels.spsc import spsc_pop, spsc_push, spsc_readable, spsc_writable
from arbpipe.transport.kernels.warmup import warm_up

__all__ = [
    "COUNT_MASK", "KERNEL_OPTIONS", "KIND_BROADCAST", "KIND_MPMC", "KIND_SPSC", "POLICY_BLOCK",
    "POLICY_DROP", "STALL_BIT", "STALL_SHIFT", "WAKE_BIT", "WAKE_SHIFT",
    "add", "announce_sleep", "armed_readers", "bcast_pop", "bcast_push", "bcast_readable",
    "claim_dead_slot", "claim_slot", "claim_slot_at", "copy_in", "copy_out", "count_post",
    "full_policy", "geometry", "head_of", "leave_sleep", "mpmc_claim_only", "mpmc_pop",
    "mpmc_push", "mpmc_readable", "mpmc_settle", "mpmc_stall", "mpmc_unresolved",
    "mpmc_writable", "peek", "reclaim_sleeper", "sleepers_after_publish", "spsc_pop",
    "spsc_push", "spsc_readable", "spsc_writable", "take_armed", "warm_up",
]
