"""One doorbell for a consumer of several SPSC rings (``SharedBell``, issue 18).

A real process sleeps on one bell over three rings; the test waits until every ring shows
it registered and armed, pushes one record into one of the rings, and checks that the
sleeper got it through the bell (the ring's own semaphore was never posted) and left
every ring as it found it. Then the same after a sleeper SIGKILLed asleep: a restarted
one reclaims the dead registrations exactly once and is woken as before. Everything is
asserted on the rings' own counters and semaphores, never on timings.
"""
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import posix_ipc

from arbpipe.transport import kernels as K
from arbpipe.transport import rings as R
from arbpipe.transport.rings.doorbell import SharedBell
from arbpipe.transport.segments import process_start_ticks, sem_name
from shm_layouts import ring as L
from tests import ring_workers as W

CTX = mp.get_context("spawn")
NAMES = ("b0", "b1", "b2")
OWNER = "bellowner"


def _token(pid):
    return process_start_ticks(pid) << L.SLEEPER_PID_BITS | pid


def bell_sleeper(instance, n, q):
    """Attach the rings, sleep on one bell, report (ring index, first word) per record."""
    rings = [R.SpscRing.attach(nm, instance) for nm in NAMES]
    for r in rings:
        r.join("sleeper")
    bell = SharedBell(rings, OWNER, instance)
    buf = np.zeros(8 * 16, np.int64)
    got = 0
    try:
        while got < n:
            for i, r in enumerate(rings):
                k = r.pop_words(buf, 16)
                for j in range(k):
                    q.put((i, int(buf[j * 8 + 1])))
                got += k
            if got < n:
                bell.sleep(lambda: any(K.spsc_readable(r.w, 0) for r in rings), 5.0)
    finally:
        bell.close()
        for r in rings:
            r.close()


def _armed_everywhere(rings, pid):
    t = _token(pid)
    return all(int(r.w[L.W_CDOOR + L.D_ARMED]) == 1 and
               int(r.w[L.W_CDOOR + L.D_SLEEPER]) == t and
               int(r.w[L.W_CDOOR + L.D_BELL]) == t for r in rings)


def _wait_armed(rings, p, deadline_s=120):
    deadline = time.monotonic() + deadline_s
    while not _armed_everywhere(rings, p.pid):
        assert p.is_alive(), f"the sleeper exited with {p.exitcode}"
        assert time.monotonic() < deadline, "the sleeper never went to sleep on the bell"
        time.sleep(0.005)


def _own_sem_value(instance, name):
    s = posix_ipc.Semaphore(sem_name(instance, name, "c"))
    try:
        return s.value
    finally:
        s.close()


def _create(instance):
    return [R.SpscRing.create(nm, 1024, "MarketUpdate", policy="drop", instance=instance)
            for nm in NAMES]


def _close(rings):
    for r in rings:
        r.close()
        r.unlink()


def test_one_bell_wakes_a_consumer_of_several_rings(instance):
    rings = _create(instance)
    q = CTX.Queue()
    n = 6
    p = CTX.Process(target=bell_sleeper, args=(instance, n, q))
    p.start()
    try:
        for k in range(n):
            _wait_armed(rings, p)
            i = k % len(rings)
            assert rings[i].push_words(W.make_batch(1, np.array([k], np.int64)), 1) == 1
            assert q.get(timeout=60) == (i, k)
        p.join(60)
        assert p.exitcode == 0
        for nm, r in zip(NAMES, rings):
            st = r.stats()
            assert st["sleepers"] == 0, st           # every sleep left as it came
            assert st["posts"] == n // len(rings), st   # one post per record pushed here
            assert _own_sem_value(instance, nm) == 0     # ... all of them on the bell
            assert int(r.w[L.W_CDOOR + L.D_BELL]) == 0   # the bell left with its consumer
    finally:
        if p.is_alive():
            p.kill()
        _close(rings)


def test_restarted_bell_sleeper_reclaims_its_dead_predecessor(instance):
    rings = _create(instance)
    q = CTX.Queue()
    p = CTX.Process(target=bell_sleeper, args=(instance, 1, q))
    p.start()
    p2 = None
    try:
        _wait_armed(rings, p)
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        for r in rings:
            assert r.stats()["sleepers"] == 1
        p2 = CTX.Process(target=bell_sleeper, args=(instance, 1, q))
        p2.start()
        _wait_armed(rings, p2)
        for r in rings:   # the dead registration undone once, the live one counted
            st = r.stats()
            assert (st["sleepers"], st["sleepers_reclaimed"]) == (1, 1), st
        assert rings[2].push_words(W.make_batch(1, np.array([7], np.int64)), 1) == 1
        assert q.get(timeout=60) == (2, 7)
        p2.join(60)
        assert p2.exitcode == 0
        for r in rings:
            assert r.stats()["sleepers"] == 0
    finally:
        for x in (p, p2):
            if x is not None and x.is_alive():
                x.kill()
        _close(rings)
