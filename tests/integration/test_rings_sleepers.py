"""Doorbell hygiene after a sleeper is SIGKILLed asleep (issue 9 follow-up).

A real process attaches and blocks on a ring's doorbell; the test waits until the
segment shows it registered and armed, stops it (SIGSTOP) to make sure it is caught
asleep, and SIGKILLs it. Its registration must then be undone exactly once (counted
in ``sleepers_reclaimed``) by the other side's wake path or by the next owner of its
slot, and a live sleeper must never be reclaimed. Everything is asserted on the
ring's own counters, never on timings.
"""
import multiprocessing as mp
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from arbpipe.transport import rings as R
from arbpipe.transport.segments import process_start_ticks
from shm_layouts import ring as L
from tests import ring_workers as W

CTX = mp.get_context("spawn")
ONE = W.make_batch(1, np.arange(1, dtype=np.int64))


def _token(pid):
    return process_start_ticks(pid) << L.SLEEPER_PID_BITS | pid


def _reader_slot_w(ring, pid):
    for i in range(ring.max_readers):
        sw = L.W_READERS + i * L.READER_SLOT_WORDS
        if int(ring.w[sw + L.R_OWNER_PID]) == pid:
            return sw
    return None


def _producer_slot_w(ring, pid):
    tw = L.producers_offset(ring.max_readers) // 8
    for i in range(L.PRODUCER_SLOTS):
        sw = tw + i * L.PRODUCER_SLOT_WORDS
        if int(ring.w[sw + L.P_PID]) == pid:
            return sw
    return None


def _sleep_words(ring, kind, side, pid):
    """(doorbell, registration word, armed word) of pid's sleep on ``ring``, or None."""
    door = L.W_PDOOR if side == "producer" else L.W_CDOOR
    if kind == "spsc":
        return door, door + L.D_SLEEPER, door + L.D_ARMED
    if side == "producer":
        sw = _producer_slot_w(ring, pid)
        return None if sw is None else (door, sw + L.P_SLEEPER, door + L.D_ARMED)
    sw = _reader_slot_w(ring, pid)
    if sw is None:
        return None
    armed = sw + L.R_ARMED if kind == "broadcast" else door + L.D_ARMED
    return door, sw + L.R_SLEEPER, armed


def _asleep(ring, kind, side, pid):
    """The segment shows pid counted as a sleeper, registered with its token, armed."""
    words = _sleep_words(ring, kind, side, pid)
    if words is None:
        return False
    door, reg, armed = words
    w = ring.w
    return (int(w[door + L.D_SLEEPERS]) >= 1 and int(w[reg]) == _token(pid)
            and int(w[armed]) == 1)


def _start_sleeper(kind, instance, side, reader="sleepy"):
    p = CTX.Process(target=W.sleep_on_doorbell, args=(kind, instance, "z", side, reader))
    p.start()
    return p


def _wait_asleep(ring, kind, side, p, deadline_s=120):
    """Wait until p is asleep on the doorbell and stop it there (SIGSTOP)."""
    deadline = time.monotonic() + deadline_s
    while True:
        assert p.is_alive(), f"the sleeper exited with {p.exitcode}"
        if _asleep(ring, kind, side, p.pid):
            os.kill(p.pid, signal.SIGSTOP)
            if _asleep(ring, kind, side, p.pid):   # caught between two of its 1 s sleeps?
                return
            os.kill(p.pid, signal.SIGCONT)
        assert time.monotonic() < deadline, "the sleeper never went to sleep"
        time.sleep(0.01)


def _kill_asleep(ring, kind, side, p):
    _wait_asleep(ring, kind, side, p)
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL


def _keys(side):
    if side == "producer":
        return "producer_sleepers", "producer_posts", "producer_sleepers_reclaimed"
    return "sleepers", "posts", "sleepers_reclaimed"


@pytest.mark.parametrize("kind,side", [("broadcast", "consumer"), ("spsc", "consumer"),
                                       ("spsc", "producer"), ("mpmc", "consumer"),
                                       ("mpmc", "producer")])
def test_sleeper_killed_asleep_is_reclaimed_by_the_other_sides_wake_path(instance, kind,
                                                                          side):
    """Before: the dead sleeper stayed counted for good, and every publish (every pop, for
    a dead BLOCK producer) went to look for it. Now the first publish posts its armed flag
    once, and the wake path's dead-sleeper check undoes its count; after that publishes
    see no sleeper and post nothing."""
    sl, posts, rec = _keys(side)
    cap = 4096 if side == "consumer" else 256
    ring = W.CLASSES[kind].create("z", cap, "MarketUpdate",
                                  policy="block" if side == "producer" else "drop",
                                  instance=instance)
    buf = np.zeros(8 * cap, np.int64)
    try:
        if side == "producer":
            ring.join("checker")   # before the sleeper dies: the join path is another test
        p = _start_sleeper(kind, instance, side)
        _kill_asleep(ring, kind, side, p)
        st = ring.stats()
        assert (st[sl], st[posts], st[rec]) == (1, 0, 0), st

        def step():
            if side == "consumer":
                assert ring.push_words(ONE, 1) == 1
            else:                 # consume one (the wake path), make room for one more
                assert ring.pop_words(buf, 1) == 1
                assert ring.push_words(ONE, 1, timeout=0) == 1

        steps = 0
        while ring.stats()[sl] and steps < 2000:
            step()
            steps += 1
        st = ring.stats()
        assert st[sl] == 0, f"the dead sleeper is still counted after {steps} steps: {st}"
        assert st[rec] == 1 and st[posts] == 1, st   # its armed flag was posted once
        # the first wake path posted; the dead-sleeper check is due every RECLAIM_EVERY
        # fruitless ones (the first at once)
        assert steps == 1 + R.RECLAIM_EVERY
        published = st["published"]
        for _ in range(1000):
            step()
        st = ring.stats()
        assert st["published"] == published + 1000
        assert (st[sl], st[posts], st[rec]) == (0, 1, 1), st
        # every push went in, none refused (DROP on the consumer side: a record pushed is
        # either in the ring or counted as dropped; here all of them are in it)
        assert st["dropped"] == 0, st
        if side == "consumer":
            assert st["published"] == steps + 1000, st
    finally:
        ring.close()
        ring.unlink()


@pytest.mark.parametrize("kind", ["broadcast", "spsc", "mpmc"])
def test_restarted_consumer_reclaims_its_dead_predecessor_and_is_itself_untouched(instance,
                                                                                   kind):
    """A consumer killed asleep; its successor takes the same reader slot (same name): its
    join undoes the dead registration (nothing else runs in between), its own sleep is
    counted, a dead-sleeper scan from the writer leaves it alone, and a publish wakes it."""
    ring = W.CLASSES[kind].create("z", 1024, "MarketUpdate", policy="drop",
                                  instance=instance)
    procs = []
    try:
        procs.append(_start_sleeper(kind, instance, "consumer"))
        _kill_asleep(ring, kind, "consumer", procs[0])
        st = ring.stats()
        assert (st["sleepers"], st["sleepers_reclaimed"]) == (1, 0), st
        (dead,) = st["readers"]
        assert dead["name"] == "sleepy" and not dead["alive"]
        slot_w = _reader_slot_w(ring, procs[0].pid)

        procs.append(_start_sleeper(kind, instance, "consumer"))
        p2 = procs[1]
        _wait_asleep(ring, kind, "consumer", p2)
        os.kill(p2.pid, signal.SIGCONT)
        st = ring.stats()
        (rd,) = st["readers"]
        assert rd["name"] == "sleepy" and rd["pid"] == p2.pid and rd["alive"]
        assert _reader_slot_w(ring, p2.pid) == slot_w, "the successor took another slot"
        assert (st["sleepers"], st["sleepers_reclaimed"]) == (1, 1), st
        assert ring.reclaim_sleepers() == 0, "a live sleeper was reclaimed"
        st = ring.stats()
        assert (st["sleepers"], st["sleepers_reclaimed"]) == (1, 1), st
        posts = st["posts"]
        assert ring.push_words(ONE, 1) == 1
        p2.join(60)
        assert p2.exitcode == 0, "the successor was not woken"
        st = ring.stats()
        assert st["sleepers"] == 0 and st["posts"] == posts + 1, st
        assert (st["published"], st["dropped"]) == (1, 0), st
    finally:
        for q in procs:
            if q.is_alive():
                q.kill()
                q.join(10)
        ring.close()
        ring.unlink()


def test_reader_slot_whose_pid_was_reused_is_not_alive(instance):
    """A reader slot stores its owner's start time next to the pid: once the dead reader's
    pid belongs to another (live) process, the slot is still seen as dead, and a reader of
    the same name takes it over instead of taking a new slot."""
    ring = R.BroadcastRing.create("z", 64, "MarketUpdate", instance=instance)
    procs, other = [], None
    try:
        procs.append(_start_sleeper("broadcast", instance, "consumer", reader="ghost"))
        _wait_asleep(ring, "broadcast", "consumer", procs[0])
        sw = _reader_slot_w(ring, procs[0].pid)
        start = int(ring.w[sw + L.R_OWNER_START])
        assert start == process_start_ticks(procs[0].pid) > 0
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].join(30)
        # the pid is reused by a live process (started at another clock tick); the slot
        # keeps the dead reader's start time
        while other is None or process_start_ticks(other.pid) == start:
            if other is not None:
                other.kill()
                other.wait(10)
                time.sleep(0.02)
            other = subprocess.Popen(["sleep", "120"])
        ring.w[sw + L.R_OWNER_PID] = other.pid
        (rd,) = ring.stats()["readers"]
        assert rd["pid"] == other.pid and not rd["alive"]
        succ = R.BroadcastRing.attach("z", instance=instance)
        try:
            succ.join("ghost")
            assert succ.slot_w == sw, "the dead slot looked alive: a new slot was taken"
            assert int(ring.w[sw + L.R_OWNER_START]) == process_start_ticks(os.getpid())
            (rd,) = ring.stats()["readers"]
            assert rd["pid"] == os.getpid() and rd["alive"]
            assert ring.stats()["sleepers_reclaimed"] == 1   # it had died asleep
        finally:
            succ.close()
        assert ring.stats()["readers"] == []
        assert int(ring.w[sw + L.R_OWNER_START]) == 0, "leave keeps a stale start time"
    finally:
        if other is not None:
            other.kill()
            other.wait(10)
        ring.close()
        ring.unlink()
