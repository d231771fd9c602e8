"""Ring buffers in POSIX shared memory: ``SpscRing``, ``MpmcRing``, ``BroadcastRing``.

One segment per ring (layout: ``shm_layouts.ring``), records of a fixed size (a multiple
of 8 bytes; ``MarketUpdate`` is 64, ``Opportunity`` 128). Hot paths are numba kernels
(``arbpipe.transport.kernels``); Python makes one call per batch.

    module     holds
    ---------  ----------------------------------------------------------------------
    common     Ring: segment create / attach / header checks, reader slots, dead
               sleepers, record conversion, push / pop forms, stats; check_geometry
    spsc       SpscRing (one producer, one consumer)
    mpmc       MpmcRing (N producers, M consumers, crash recovery)
    broadcast  BroadcastRing (one writer that never waits, independent readers)
    doorbell   the wait policy: Doorbell, QueueDoorbells, sleeper tokens
    stats      ring_stats (counters of any ring, read without a handle)
    kinds      RING_CLASSES, attach_any
    view       RingView: head_of and peek without numba (the supervisor's console line)
    jit        kernels(): the numba kernels, imported by the first handle of a process

Importing this package does not import numba: the kernels are bound when a process makes
its first handle (``jit``), so a process that only creates segments (``Ring.create_segment``)
and reads counters never loads them (the supervisor).

The three ring classes are siblings under ``Ring``. Full-ring policy (stated at
creation): ``BLOCK`` waits for space up to a timeout (what did not fit when the timeout
expires is counted as dropped), ``DROP_NEWEST`` refuses what does not fit and counts it.
Broadcast rings never wait: slow readers are lapped, notice it, count what they lost and
resume at the newest record. Waiting and waking: ``doorbell``; the protocols and their
invariants: docs/design.md, "Rings" and "Ring invariants".
"""
from arbpipe.transport.rings.broadcast import BroadcastRing
from arbpipe.transport.rings.common import Ring, check_geometry, parse_policy, record_spec
from arbpipe.transport.rings.doorbell import DEFAULT_SPIN, DEFAULT_YIELDS, MAX_BLOCK_S, \
    RECLAIM_EVERY, RECLAIM_INTERVAL_S, Doorbell, QueueDoorbells, my_start_ticks, \
    sleeper_token, token_alive
from arbpipe.transport.rings.kinds import RING_CLASSES, attach_any
from arbpipe.transport.rings.mpmc import MpmcRing
from arbpipe.transport.rings.spsc import SpscRing
from arbpipe.transport.rings.stats import ring_stats

__all__ = [
    "BroadcastRing", "MpmcRing", "Ring", "SpscRing", "RING_CLASSES", "attach_any",
    "check_geometry", "parse_policy", "record_spec", "ring_stats",
    "DEFAULT_SPIN", "DEFAULT_YIELDS", "MAX_BLOCK_S", "RECLAIM_EVERY", "RECLAIM_INTERVAL_S",
    "Doorbell", "QueueDoorbells", "my_start_ticks", "sleeper_token", "token_alive",
]
