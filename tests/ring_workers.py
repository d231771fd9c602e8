"""Process bodies for the cross-process ring tests (spawned, so they import this module).

Records carry (producer id, seq) and every other word is derived from them, so a
consumer can verify any record on its own: a torn or half-written record fails
the check.
"""
import os
import random
import signal
import time

import numpy as np

from arbpipe.transport.rings import BroadcastRing, MpmcRing, SpscRing
from shm_layouts import ring as L

CLASSES = {"spsc": SpscRing, "mpmc": MpmcRing, "broadcast": BroadcastRing}
MIX = np.int64(0x9E3779B97F4A7C15 - (1 << 64))


def make_batch(pid, seqs, rw=8):
    w = np.empty((len(seqs), rw), np.int64)
    w[:, 0] = pid
    w[:, 1] = seqs
    for j in range(2, rw):
        w[:, j] = (seqs * MIX) ^ (pid * 1000003 + j)
    return w.reshape(-1)


def check_batch(words, n, rw=8):
    """Return (pids, seqs) of n records; raise if any record is torn."""
    w = words[: n * rw].reshape(n, rw)
    pids, seqs = w[:, 0].copy(), w[:, 1].copy()
    for j in range(2, rw):
        expect = (seqs * MIX) ^ (pids * 1000003 + j)
        bad = np.nonzero(w[:, j] != expect)[0]
        if len(bad):
            raise AssertionError(f"torn record: seq={seqs[bad[0]]} word {j}")
    return pids, seqs


def produce(kind, instance, name, pid, count, batch_max, seed, timeout=30.0):
    """Push records 0..count-1 of producer ``pid``, each exactly once, in random batches.
    BLOCK: every one goes in (a push that times out fails the process). DROP: what a full
    ring refuses is lost, never pushed again (the ring counts it as dropped), so for one
    ring received + dropped == count over its producers."""
    ring = CLASSES[kind].attach(name, instance=instance)
    rng = random.Random(seed)
    seq = 0
    while seq < count:
        b = min(rng.randint(1, batch_max), count - seq)
        words = make_batch(pid, np.arange(seq, seq + b, dtype=np.int64))
        pushed = ring.push_words(words, b, timeout=timeout)
        if pushed < b and ring.policy.name == "BLOCK":
            raise SystemExit(f"producer {pid}: push timed out")
        seq += b
    ring.close()


def consume(kind, instance, name, total, out_q, reader="c", idle_exit=5.0, batch=512):
    """Pop until `total` records (or idle_exit s without records once the first came: a
    producer spawned on a loaded host may take seconds to start); send results to out_q."""
    ring = CLASSES[kind].attach(name, instance=instance)
    ring.join(reader)
    buf = np.zeros(batch * ring.rw, np.int64)
    got_p, got_s = [], []
    n_total = 0
    while n_total < total:
        n = ring.pop_words(buf)
        if n == 0:
            if not ring.wait(idle_exit if n_total else max(idle_exit, 120.0)):
                break
            continue
        p, s = check_batch(buf, n, ring.rw)
        got_p.append(p)
        got_s.append(s)
        n_total += n
    # the ring's own count of what this reader received (before close frees its slot)
    stats = ring.reader_stats() if kind == "broadcast" else \
        {"received": int(ring.w[ring.slot_w + L.R_RECEIVED])}
    ring.close()
    pids = np.concatenate(got_p) if got_p else np.zeros(0, np.int64)
    seqs = np.concatenate(got_s) if got_s else np.zeros(0, np.int64)
    out_q.put((reader, pids.tolist(), seqs.tolist(), stats))


def produce_forever(kind, instance, name, ready_q, pid=7, claim_and_die=False):
    """Push big batches of records (pid, 0, 1, ...) as fast as possible until killed (for
    the SIGKILL test); what a full ring refuses is pushed again, so the records committed
    are always 0..c-1 (the ring's ``dropped`` then counts refusals that were retried, and
    how many records a killed producer tried is unknowable: no drop accounting here; the
    ``produce`` tests check it). ``claim_and_die`` (MPMC): once publishing, claim 5 positions
    without committing them and SIGKILL itself there."""
    from arbpipe.transport import kernels as K
    ring = CLASSES[kind].attach(name, instance=instance)
    seq = 0
    ready = False
    while True:
        if ready and claim_and_die and K.mpmc_claim_only(ring.w, 5, ring.pslot_w) >= 0:
            os.kill(os.getpid(), signal.SIGKILL)
        b = 64
        pushed = ring.push_words(make_batch(pid, np.arange(seq, seq + b, dtype=np.int64)), b,
                                 timeout=0.0)
        seq += pushed
        if not ready and pushed:  # compiled and publishing: the kill may come any time now
            ready_q.put(os.getpid())
            ready_q.close()
            ready_q.join_thread()   # flushed before any kill (ours or the test's)
            ready = True
        if pushed == 0:
            time.sleep(0)


def create_and_die(kind, instance, name):
    """Create a ring, then die without cleaning up (a crashed supervisor)."""
    CLASSES[kind].create(name, 64, "MarketUpdate", instance=instance)
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_on_doorbell(kind, instance, name, side="consumer", reader="sleepy"):
    """Block on a ring's doorbell (for the tests that SIGKILL a sleeper). side
    'consumer': take reader slot ``reader`` and sleep until a record is readable, then
    exit; side 'producer' (BLOCK policy): fill the ring, then push one record more and
    wait for space."""
    ring = CLASSES[kind].attach(name, instance=instance)
    ring.spin, ring.yields = 0, 0          # go to sleep at once
    if side == "consumer":
        ring.join(reader)
        ring.wait(None)       # returns once a record is readable (woken by a post)
        ring.close()
        return
    n = ring.capacity + 1
    ring.push_words(make_batch(1, np.arange(n, dtype=np.int64)), n, timeout=None)
    ring.close()
