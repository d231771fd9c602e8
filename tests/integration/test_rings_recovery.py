"""MPMC crash recovery with real SIGKILLed processes: a producer killed between its claim
and its commit, a consumer killed between its dequeue and its release, and producers
SIGKILLed at random moments under load with every record sequence-checked end to end."""
import multiprocessing as mp
import os
import random
import signal
import time

import numpy as np
import pytest

from arbpipe.transport import kernels as K
from arbpipe.transport.rings import MpmcRing

CTX = mp.get_context("spawn")
RW = 8                     # words per 64-byte record
MAGIC = 0x5EED_0000_0000


def _records(inc, start, n):
    """Flat words of records start..start+n-1 of producer incarnation ``inc``; words 3..
    are a pattern derived from (inc, seq) so that a torn record cannot pass the check."""
    r = np.empty((n, RW), np.int64)
    seq = np.arange(start, start + n, dtype=np.int64)
    r[:, 0], r[:, 1], r[:, 2] = inc, seq, start
    r[:, 3:] = (MAGIC ^ (inc << 40) ^ seq)[:, None] + np.arange(RW - 3)
    return r.reshape(-1)


def _torn(words):
    recs = words.reshape(-1, RW)
    want = (MAGIC ^ (recs[:, 0:1] << 40) ^ recs[:, 1:2]) + np.arange(RW - 3)
    return int((recs[:, 3:] != want).any(axis=1).sum())


def _producer(instance, name, inc, total, max_batch, ready):
    """Push records 0..total-1 of incarnation ``inc`` in random batches (BLOCK policy)."""
    ring = MpmcRing.attach(name, instance=instance)
    ring.join_producer()
    rng = random.Random(inc)
    ready.set()
    seq = 0
    while seq < total:
        b = min(rng.randint(1, max_batch), total - seq)
        seq += ring.push_words(_records(inc, seq, b), b, timeout=30.0)
    ring.close()


def _claim_then_die(instance, name, committed, claimed):
    """Commit ``committed`` records, claim ``claimed`` more, then SIGKILL itself."""
    ring = MpmcRing.attach(name, instance=instance)
    ring.join_producer()
    words = _records(7, 0, committed)
    assert ring.push_words(words, committed) == committed
    assert K.mpmc_claim_only(ring.w, claimed, ring.pslot_w) >= 0
    os.kill(os.getpid(), signal.SIGKILL)


def _dequeue_then_die(instance, name, n):
    """Dequeue n records (CAS) and SIGKILL itself before releasing their slots."""
    ring = MpmcRing.attach(name, instance=instance)
    ring.join("victim")
    buf = np.zeros(n * RW, np.int64)
    assert K.mpmc_pop(ring.w, buf, n, ring.slot_w, 1) == n
    os.kill(os.getpid(), signal.SIGKILL)


def _drain(ring, out, timeout=20.0):
    """Pop until empty for a while (recovery included); return the words received."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = ring.pop_batch(out, timeout=0.3)
        if n:
            got.append(out[:n * RW].copy())
            deadline = time.monotonic() + timeout
        elif ring.stats()["published"] == ring.stats()["consumed"]:
            break
    return np.concatenate(got) if got else np.zeros(0, np.int64)


def test_producer_killed_between_claim_and_commit_does_not_wedge(instance):
    ring = MpmcRing.create("mp", 64, "MarketUpdate", policy="block", instance=instance)
    p = CTX.Process(target=_claim_then_die, args=(instance, "mp", 10, 5))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    st = ring.stats()
    assert st["published"] == 15 and st["abandoned"] == 0
    ring.push_words(_records(8, 0, 10), 10)
    out = np.zeros(64 * RW, np.int64)
    words = _drain(ring, out)
    recs = words.reshape(-1, RW)
    assert _torn(words) == 0
    assert [int(s) for s in recs[recs[:, 0] == 7, 1]] == list(range(10))
    assert [int(s) for s in recs[recs[:, 0] == 8, 1]] == list(range(10))
    st = ring.stats()
    assert st["abandoned"] == 5, st
    assert st["consumed"] == st["published"] == 25
    # the ring keeps working across the poisoned slots' next lap
    for lap in range(3):
        ring.push_words(_records(9, 0, 64), 64)
        assert ring.pop_batch(out) == 64
    ring.unlink()
    ring.close()


def test_consumer_killed_between_dequeue_and_release_does_not_wedge(instance):
    ring = MpmcRing.create("mp", 8, "MarketUpdate", policy="block", instance=instance)
    ring.push_words(_records(1, 0, 8), 8)
    p = CTX.Process(target=_dequeue_then_die, args=(instance, "mp", 4))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    # the ring is full behind 4 unreleased slots: a BLOCK push recovers them
    t0 = time.monotonic()
    pushed = ring.push_words(_records(2, 0, 4), 4,
                             timeout=10.0)
    assert pushed == 4, f"push stayed blocked {time.monotonic() - t0:.1f} s"
    st = ring.stats()
    assert st["orphaned"] == 4 and st["abandoned"] == 0
    out = np.zeros(16 * RW, np.int64)
    recs = _drain(ring, out).reshape(-1, RW)
    assert [(int(a), int(b)) for a, b in recs[:, :2]] == \
        [(1, s) for s in range(4, 8)] + [(2, s) for s in range(4)]
    # ledger: published = received by live consumers + orphaned (taken by the dead one)
    assert st["published"] == 12 and len(recs) + st["orphaned"] == 12
    ring.unlink()
    ring.close()


def test_producers_sigkilled_at_random_moments_lose_and_duplicate_nothing(instance):
    """3 producer slots, each refilled with a new incarnation whenever its process is
    SIGKILLed (16 kills at random moments, large batches so that many kills land between
    a claim and its commit). Every record committed is received exactly once and intact;
    per incarnation the received sequence numbers are exactly 0..c-1 (a batch commits in
    order, so a kill leaves a committed prefix) and, the test being the only consumer, in
    the order they were pushed (MPMC keeps each producer's order); received + abandoned ==
    claimed."""
    cap = 1 << 12
    ring = MpmcRing.create("mp", cap, "MarketUpdate", policy="block", instance=instance)
    rng = random.Random(1)
    procs, inc = {}, 0
    kills = 0

    def spawn(slot):
        nonlocal inc
        inc += 1
        ev = CTX.Event()
        p = CTX.Process(target=_producer, args=(instance, "mp", inc, 10**9, 2048, ev))
        p.start()
        procs[slot] = (p, ev)

    for s in range(3):
        spawn(s)
    out = np.zeros(4096 * RW, np.int64)
    chunks = []
    next_kill = time.monotonic() + 1.0
    while kills < 16:
        n = ring.pop_batch(out, timeout=0.05)
        if n:
            chunks.append(out[:n * RW].copy())
        if time.monotonic() >= next_kill:
            slot = rng.randrange(3)
            p, ev = procs[slot]
            if ev.is_set():          # it is running its push loop
                os.kill(p.pid, signal.SIGKILL)
                p.join(30)
                kills += 1
                spawn(slot)
            next_kill = time.monotonic() + rng.uniform(0.02, 0.2)
    for p, ev in procs.values():
        ev.wait(60)
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
    chunks.append(_drain(ring, out))
    words = np.concatenate(chunks)
    recs = words.reshape(-1, RW)
    st = ring.stats()
    assert _torn(words) == 0
    assert st["consumed"] == st["published"], st
    assert len(recs) + st["abandoned"] == st["published"], st
    received = 0
    for j in range(1, inc + 1):
        seqs = recs[recs[:, 0] == j, 1]        # in the order received: never sorted
        assert len(np.unique(seqs)) == len(seqs), f"incarnation {j}: duplicates"
        assert np.array_equal(seqs, np.arange(len(seqs))), \
            f"incarnation {j}: a committed record is missing or out of order"
        received += len(seqs)
    assert received == len(recs) > 0
    print(f"\nkills {kills}, records {received}, abandoned slots {st['abandoned']}")
    ring.unlink()
    ring.close()


@pytest.mark.parametrize("n", [0])
def test_empty_push_and_pop_return_at_once(instance, n):
    ring = MpmcRing.create("mp", 8, "MarketUpdate", policy="block", instance=instance)
    assert ring.push_words(np.zeros(0, np.int64), n) == 0
    assert ring.pop_words(np.zeros(RW, np.int64), n) == 0
    ring.unlink()
    ring.close()
