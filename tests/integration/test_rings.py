"""Rings across real processes and real shared memory."""
import multiprocessing as mp
import os
import random
import signal
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from arbpipe.transport.rings import BroadcastRing, MpmcRing, SpscRing, attach_any
from tests import ring_workers as W

CTX = mp.get_context("spawn")


def run_procs(procs, timeout=240):
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(deadline - time.monotonic(), 1))
        if p.is_alive():
            for q in procs:
                q.kill()
            raise AssertionError(f"{p.name} did not finish")
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"


def collect(q, n, timeout=240):
    return [q.get(timeout=timeout) for _ in range(n)]


def test_spsc_two_million_records_exactly_once_in_order(instance):
    n = 2_000_000
    ring = SpscRing.create("spsc", 4096, "MarketUpdate", policy="block", instance=instance)
    q = CTX.Queue()
    prod = CTX.Process(target=W.produce, args=("spsc", instance, "spsc", 1, n, 700, 1),
                       name="producer")
    cons = CTX.Process(target=W.consume, args=("spsc", instance, "spsc", n, q), name="consumer")
    cons.start()
    run_procs([prod])
    (_, pids, seqs, rs), = collect(q, 1)
    cons.join(30)
    assert len(seqs) == n
    assert np.array_equal(np.asarray(seqs), np.arange(n))
    assert set(pids) == {1}
    s = ring.stats()
    assert s["published"] == n and s["consumed"] == n and s["dropped"] == 0
    assert rs["received"] == n
    ring.unlink()
    ring.close()


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(cap_log2=st.integers(3, 12), batch_max=st.integers(1, 300),
       policy=st.sampled_from(["block", "drop"]), kind=st.sampled_from(["spsc", "mpmc"]),
       seed=st.integers(0, 2**31))
def test_single_producer_any_geometry(cap_log2, batch_max, policy, kind, seed):
    """Whatever the capacity, batch sizes and policy: no duplicate, order kept, and
    every record sent is either received or counted as dropped (the producer never pushes
    a refused record again: received + dropped == sent, exactly)."""
    instance = f"h{seed % 100000}{os.getpid()}"
    n = 60_000
    cls = SpscRing if kind == "spsc" else MpmcRing
    ring = cls.create("r", 1 << cap_log2, "MarketUpdate", policy=policy, instance=instance)
    try:
        q = CTX.Queue()
        cons = CTX.Process(target=W.consume, args=(kind, instance, "r", n, q, "c", 3.0))
        cons.start()
        run_procs([CTX.Process(target=W.produce,
                               args=(kind, instance, "r", 3, n, batch_max, seed))])
        (_, pids, seqs, rs), = collect(q, 1)
        cons.join(30)
        seqs = np.asarray(seqs)
        assert set(pids) <= {3}
        assert len(np.unique(seqs)) == len(seqs), "duplicate record"
        assert np.all(np.diff(seqs) > 0), "order not preserved"
        assert len(seqs) == 0 or (seqs[0] >= 0 and seqs[-1] < n)
        s = ring.stats()
        assert s["published"] == s["consumed"] == rs["received"] == len(seqs)
        assert len(seqs) + s["dropped"] == n, f"received {len(seqs)} + dropped {s['dropped']}"
        if policy == "block":
            assert s["dropped"] == 0 and np.array_equal(seqs, np.arange(n))
    finally:
        ring.unlink()
        ring.close()
    from arbpipe.transport import segments
    assert not segments.list_segments(instance)


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_drop_policy_counts_every_refused_record(instance, kind):
    """DROP across processes, with drops for certain: a producer fills a 64-record ring
    nobody reads (records 0..63 go in, the other 9936 are refused and counted), then a
    producer and a one-record-at-a-time consumer run together. Each time: received +
    dropped == pushed, and what was received is in the producer's order."""
    n, cap = 10_000, 64
    ring = W.CLASSES[kind].create("dr", cap, "MarketUpdate", policy="drop", instance=instance)
    try:
        run_procs([CTX.Process(target=W.produce, args=(kind, instance, "dr", 1, n, 100, 1),
                               name="producer")])
        s = ring.stats()
        assert (s["published"], s["dropped"]) == (cap, n - cap), s
        q = CTX.Queue()
        run_procs([CTX.Process(target=W.consume, args=(kind, instance, "dr", n, q, "c", 1.0),
                               name="consumer")])
        (_, pids, seqs, rs), = collect(q, 1)
        assert seqs == list(range(cap)) and set(pids) == {1}, "the first 64, in order"
        assert rs["received"] + ring.stats()["dropped"] == n
        # together: the consumer takes one record per pop, the producer batches up to 300
        cons = CTX.Process(target=W.consume, args=(kind, instance, "dr", n, q, "c", 5.0, 1),
                           name="consumer")
        cons.start()
        run_procs([CTX.Process(target=W.produce, args=(kind, instance, "dr", 2, n, 300, 2),
                               name="producer")])
        (_, pids, seqs, rs), = collect(q, 1)
        cons.join(30)
        seqs = np.asarray(seqs)
        assert set(pids) <= {2} and np.all(np.diff(seqs) > 0), "duplicate or out of order"
        s = ring.stats()
        assert rs["received"] == len(seqs) and s["published"] == s["consumed"] == cap + len(seqs)
        assert len(seqs) + (s["dropped"] - (n - cap)) == n, s
    finally:
        ring.unlink()
        ring.close()


def test_mpmc_two_producers_two_consumers_union_exact(instance):
    per = 400_000
    ring = MpmcRing.create("mp", 1024, "MarketUpdate", policy="block", instance=instance)
    q = CTX.Queue()
    consumers = [CTX.Process(target=W.consume, args=("mpmc", instance, "mp", 2 * per, q, f"c{i}",
                                                     3.0), name=f"consumer{i}")
                 for i in range(2)]
    for c in consumers:
        c.start()
    deadline = time.monotonic() + 120
    while len(ring.stats()["readers"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # both consumers compete from the first record
    run_procs([CTX.Process(target=W.produce, args=("mpmc", instance, "mp", pid, per, 200, pid),
                           name=f"producer{pid}") for pid in (1, 2)])
    results = collect(q, 2)
    for c in consumers:
        c.join(30)
    seen = []
    for _, pids, seqs, rs in results:
        pids, seqs = np.asarray(pids), np.asarray(seqs)
        for pid in (1, 2):
            mine = seqs[pids == pid]
            assert np.all(np.diff(mine) > 0), "per-producer order broken for a consumer"
        assert rs["received"] == len(seqs)
        seen.extend(zip(pids.tolist(), seqs.tolist()))
    assert len(seen) == 2 * per, "records lost or duplicated"
    # compared as a set: which consumer takes which record, and how the two consumers'
    # records interleave, is not promised (per consumer, each producer's order is: above)
    assert set(seen) == {(p, s) for p in (1, 2) for s in range(per)}
    st_ = ring.stats()
    assert st_["published"] == st_["consumed"] == 2 * per and st_["dropped"] == 0
    ring.unlink()
    ring.close()


def test_broadcast_slow_reader_is_lapped_and_counts_the_gap(instance):
    cap = 64
    w = BroadcastRing.create("bc", cap, "MarketUpdate", instance=instance)
    slow = BroadcastRing.attach("bc", instance=instance)
    slow.join("slow")
    fast = BroadcastRing.attach("bc", instance=instance)
    fast.join("fast")
    buf = np.zeros(8 * 1024, np.int64)
    published = 0
    fast_seqs = []
    for i in range(40):
        b = 25
        w.push_words(W.make_batch(1, np.arange(published, published + b, dtype=np.int64)), b)
        published += b
        n = fast.pop_words(buf)
        fast_seqs.extend(W.check_batch(buf, n)[1].tolist())
    assert fast_seqs == list(range(published))
    n = slow.pop_words(buf)
    _, seqs = W.check_batch(buf, n)
    rs = slow.reader_stats()
    assert rs["laps"] == 1
    assert seqs[0] == published - 1, "a lapped reader resumes at the newest record"
    assert rs["lost"] == published - 1 == published - n
    assert rs["received"] + rs["lost"] == published
    late = BroadcastRing.attach("bc", instance=instance)
    late.join("late")
    n = late.pop_words(buf)
    assert n == 1 and W.check_batch(buf, n)[1][0] == published - 1
    for r in (slow, fast, late):
        r.close()
    w.unlink()
    w.close()


def test_broadcast_across_processes_accounts_for_every_record(instance):
    """A fast and a deliberately small-batch reader in other processes: for each,
    received + lost == published, and what it received is in order and untorn."""
    n = 300_000
    w = BroadcastRing.create("bcp", 256, "MarketUpdate", instance=instance)
    q = CTX.Queue()
    readers = [CTX.Process(target=W.consume, args=("broadcast", instance, "bcp", n, q, name,
                                                   2.0, bs))
               for name, bs in (("big", 512), ("tiny", 1))]
    for r in readers:
        r.start()
    deadline = time.monotonic() + 120
    while len(w.stats()["readers"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # both join before the first record
    for r in range(0, n, 100):
        w.push_words(W.make_batch(1, np.arange(r, r + 100, dtype=np.int64)), 100)
    results = collect(q, 2)
    for r in readers:
        r.join(30)
    for name, _, seqs, stats in results:
        seqs = np.asarray(seqs)
        assert np.all(np.diff(seqs) > 0), name
        assert stats["received"] == len(seqs)
        assert stats["received"] + stats["lost"] == n, (name, stats)
    w.unlink()
    w.close()


@pytest.mark.parametrize("kind", ["spsc", "mpmc", "broadcast"])
def test_sigkilled_producer_never_exposes_a_torn_record(instance, kind):
    """Eight producers in turn on the same ring, each SIGKILLed mid-stream while a reader
    reads. No torn record is ever exposed, and per producer the records received are
    exactly once and in order: all of 0..c-1 for SPSC/MPMC (a kill leaves a committed
    prefix), strictly increasing for broadcast (whose reader may be lapped). An MPMC
    producer killed between its claim and its commit (every other one does that on
    purpose) leaves positions that never commit: the reader's stall check recovers them
    (poisoned, counted as ``abandoned``) on the same ring, so every position published
    is consumed or abandoned."""
    cls = W.CLASSES[kind]
    ring = cls.create("k", 512, "MarketUpdate", policy="drop", instance=instance)
    reader = cls.attach("k", instance=instance)
    reader.join("checker")
    p = None
    try:
        buf = np.zeros(8 * 512, np.int64)
        rng = random.Random(5)
        got_ids, got_seqs = [], []

        def read():
            n = reader.pop_words(buf)
            if n:
                ids, seqs = W.check_batch(buf, n)
                got_ids.append(ids)
                got_seqs.append(seqs)
            return n

        incarnations = range(1, 9)
        for inc in incarnations:
            mid_claim = kind == "mpmc" and inc % 2 == 0
            rq = CTX.Queue()
            p = CTX.Process(target=W.produce_forever, args=(kind, instance, "k", rq, inc,
                                                            mid_claim))
            p.start()
            rq.get(timeout=60)
            deadline = time.monotonic() + (60 if mid_claim else rng.uniform(0.05, 0.4))
            while time.monotonic() < deadline:   # read while it writes, then kill it
                read()
                if mid_claim and not p.is_alive():
                    break
            if not mid_claim:
                os.kill(p.pid, signal.SIGKILL)
            p.join(10)
            assert p.exitcode == -signal.SIGKILL
            deadline = time.monotonic() + 60
            while True:     # drain; MPMC: until recovery has settled what the kill left
                if read():
                    continue
                st = ring.stats()
                if kind != "mpmc" or st["consumed"] == st["published"]:
                    break
                assert time.monotonic() < deadline, f"MPMC ring still stuck after a kill: {st}"
                time.sleep(0.005)
        ids, seqs = np.concatenate(got_ids), np.concatenate(got_seqs)
        assert len(seqs) > 0
        assert np.all(np.diff(ids) >= 0), "records of a producer arrived after its successor's"
        assert set(ids.tolist()) <= set(incarnations)
        for inc in incarnations:
            mine = seqs[ids == inc]
            if kind == "broadcast":
                assert np.all(np.diff(mine) > 0), f"producer {inc}: duplicate or out of order"
            else:
                assert len(mine) > 0, f"producer {inc}: its first committed batch never arrived"
                assert np.array_equal(mine, np.arange(len(mine))), \
                    f"producer {inc}: a record lost, duplicated or out of order"
        st = ring.stats()
        if kind == "spsc":
            assert st["consumed"] == st["published"] == len(seqs)
        elif kind == "mpmc":
            assert st["consumed"] == st["published"] == len(seqs) + st["abandoned"], st
            assert st["abandoned"] >= 5 * 4, st    # at least the claims made on purpose
        else:
            rs = reader.reader_stats()
            assert rs["received"] == len(seqs) and rs["received"] + rs["lost"] == st["published"]
    finally:
        if p is not None and p.is_alive():
            p.kill()
            p.join(10)
        reader.close()
        ring.unlink()
        ring.close()


def _voluntary_switches():
    """This thread's voluntary context switches: one per time it blocked."""
    with open("/proc/thread-self/status") as f:
        return next(int(line.split()[1]) for line in f
                    if line.startswith("voluntary_ctxt_switches:"))


def test_blocked_consumer_is_woken_and_idles_without_cpu(instance):
    ring = SpscRing.create("door", 64, "MarketUpdate", instance=instance)
    cons = SpscRing.attach("door", instance=instance)
    v0 = _voluntary_switches()
    assert cons.wait(timeout=0.5) is False  # nothing comes: it must sleep, not spin or poll
    blocks = _voluntary_switches() - v0
    s = ring.stats()
    # counted, not timed (the idle consumer's CPU is a figure of `arbpipe bench rings`): one
    # or two sleeps on the doorbell, and the thread blocked about that often, not in a loop
    assert 1 <= s["sleeps"] <= 2 and s["sleepers"] == 0
    assert 1 <= blocks <= 10, blocks
    # a producer in another process wakes the sleeper
    q = CTX.Queue()
    c = CTX.Process(target=W.consume, args=("spsc", instance, "door", 1, q, "c", 30.0))
    c.start()
    deadline = time.monotonic() + 60
    while ring.stats()["sleepers"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ring.stats()["sleepers"] == 1, "consumer never went to sleep"
    ring.push_words(W.make_batch(1, np.arange(1, dtype=np.int64)), 1)
    (_, _, seqs, _), = collect(q, 1, timeout=60)
    c.join(10)
    assert seqs == [0]
    s = ring.stats()
    assert s["posts"] >= 1 and s["wakes"] >= 1
    cons.close()
    ring.unlink()
    ring.close()


def test_block_policy_times_out_and_counts_drops(instance):
    ring = SpscRing.create("full", 8, "MarketUpdate", policy="block", instance=instance)
    words = W.make_batch(1, np.arange(12, dtype=np.int64))
    assert ring.push_words(words, 12, timeout=0.2) == 8
    s = ring.stats()
    assert s["dropped"] == 4 and s["full_events"] >= 1 and s["producer_sleeps"] >= 1
    ring.unlink()
    ring.close()


def test_structured_records_round_trip(instance):
    from shm_layouts import MARKET_UPDATE
    ring = SpscRing.create("mu", 16, "MarketUpdate", instance=instance)
    rec = np.zeros(3, MARKET_UPDATE)
    rec["instrument_id"] = [1, 2, 3]
    rec["bid"] = [100.5, 200.25, 3.0]
    rec["ask"] = [100.75, 200.5, 3.5]
    rec["recv_ts_ns"] = 123
    assert ring.push_batch(rec) == 3
    assert ring.push(rec[0])
    other = attach_any("mu", instance=instance)
    out = other.empty(8)
    assert other.pop_batch(out) == 4
    assert out["bid"][:3].tolist() == [100.5, 200.25, 3.0]
    assert out["instrument_id"][3] == 1 and out["recv_ts_ns"][3] == 123
    with pytest.raises(ValueError, match="64-byte"):
        ring.push_batch(np.zeros(1, [("x", "u8")]))
    other.close()
    ring.unlink()
    ring.close()


def test_a_signal_during_a_doorbell_sleep_returns_instead_of_raising(instance):
    """A consumer with a SIGALRM handler asleep on an empty ring: the wait returns False
    (nothing readable) and the sleeper count is back to zero."""
    import signal as _signal
    from arbpipe.transport.rings import SpscRing
    ring = SpscRing.create("sig", 64, "MarketUpdate", instance=instance)
    try:
        fired = []
        old = _signal.signal(_signal.SIGALRM, lambda *a: fired.append(1))
        _signal.setitimer(_signal.ITIMER_REAL, 0.3)
        try:
            assert ring.wait(5.0) is False
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
            _signal.signal(_signal.SIGALRM, old)
        assert fired
        st = ring.stats()
        assert st["sleepers"] == 0 and st["sleeps"] >= 1
    finally:
        ring.close()
        ring.unlink()
