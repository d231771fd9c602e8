"""Idle strategies: what a hot consumer (detector, strategy) does while its input is empty.

As Aeron's ``IdleStrategy`` and the Disruptor's ``WaitStrategy``: sibling classes (none
extends another) with one method, ``wait(ready, sleep, timeout) -> bool``, true once
input is there, false when ``timeout`` s passed first. ``ready(spins)`` checks the
inputs, spinning up to ``spins`` rounds inside numba; ``sleep(timeout)`` blocks on the
consumer's doorbell (no lost wake-up; see ``arbpipe.transport.rings.doorbell``).

* ``SleepingIdle``: a short spin (``spins``), a few ``sched_yield``, then the doorbell.
  The default profile: an idle process sleeps, a wake-up costs one futex wake.
* ``BackoffIdle``: spin, yield, then sleep with a growing pause (``min_park_s`` doubling
  to ``max_park_s``), never the doorbell: no post needed, bounded CPU.
* ``YieldingIdle``: spin a little, then ``sched_yield`` until input comes: the choice for
  hot roles that share one core (each gives the core to the other when empty).
* ``BusySpinIdle``: spin until input comes: lowest latency, a whole core per role.

``[cpu] profile`` picks them (``for_role``): "default" -> ``SleepingIdle`` everywhere;
"low-latency" -> ``BusySpinIdle`` for the hot roles when each has a core of its own,
``YieldingIdle`` when they share one (the supervisor decides and passes the name in
``ARBPIPE_IDLE``).
"""
from __future__ import annotations

import os
import time

PROFILES = ("default", "low-latency")
HOT_ROLES = ("detector", "strategy")      # the roles that spin in the low-latency profile
IDLE_ENV = "ARBPIPE_IDLE"                 # the supervisor's choice for one child


class SleepingIdle:
    NAME = "sleep"
    spinning = False

    def __init__(self, spins: int = 64, yields: int = 4):
        self.spins, self.yields = spins, yields

    def wait(self, ready, sleep, timeout: float) -> bool:
        if ready(self.spins):
            return True
        for _ in range(self.yields):
            os.sched_yield()
            if ready(0):
                return True
        return bool(sleep(timeout))


class BackoffIdle:
    NAME = "backoff"
    spinning = False

    def __init__(self, spins: int = 64, yields: int = 8, min_park_s: float = 1e-6,
                 max_park_s: float = 1e-3):
        self.spins, self.yields = spins, yields
        self.min_park_s, self.max_park_s = min_park_s, max_park_s

    def wait(self, ready, sleep, timeout: float) -> bool:
        if ready(self.spins):
            return True
        for _ in range(self.yields):
            os.sched_yield()
            if ready(0):
                return True
        deadline = time.monotonic() + timeout
        park = self.min_park_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(park, left))
            if ready(0):
                return True
            park = min(park * 2, self.max_park_s)


class YieldingIdle:
    NAME = "yield"
    spinning = True

    def __init__(self, spins: int = 64):
        self.spins = spins

    def wait(self, ready, sleep, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if ready(self.spins):
                return True
            os.sched_yield()
            if time.monotonic() >= deadline:
                return False


class BusySpinIdle:
    NAME = "busy-spin"
    spinning = True

    def __init__(self, spins: int = 4096):
        self.spins = spins

    def wait(self, ready, sleep, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if ready(self.spins):
                return True
            if time.monotonic() >= deadline:
                return False


STRATEGIES = {c.NAME: c for c in (SleepingIdle, BackoffIdle, YieldingIdle, BusySpinIdle)}


def for_role(role: str, profile: str = "default", own_core: bool = True):
    """The idle strategy of ``role``: ``ARBPIPE_IDLE`` (set by the supervisor) wins, else
    by profile. Only hot roles ever spin, and only in the low-latency profile."""
    name = os.environ.get(IDLE_ENV, "")
    if name in STRATEGIES:
        return STRATEGIES[name]()
    if profile == "low-latency" and role in HOT_ROLES:
        return BusySpinIdle() if own_core else YieldingIdle()
    return SleepingIdle()


def plan_idle(profile: str, cpus: dict[str, list[int]], roles: dict[str, str]) \
        -> tuple[dict[str, str], list[str]]:
    """The idle strategy of every process (name -> strategy name) under ``profile`` and
    the CPU plan ``cpus`` (name -> cores; ``roles``: name -> role), and the conflicts
    (a spinning process sharing a core with any process other than a hot one). In the
    low-latency profile a hot role with a core of its own busy-spins; hot roles sharing
    cores only with each other yield."""
    out, problems = {}, []
    for name, role in roles.items():
        out[name] = SleepingIdle.NAME
    if profile != "low-latency":
        return out, problems
    for name, role in roles.items():
        if role not in HOT_ROLES:
            continue
        mine = set(cpus.get(name) or [])
        sharers = [n for n, c in cpus.items() if n != name and mine & set(c or [])]
        cold = [n for n in sharers if roles.get(n) not in HOT_ROLES]
        out[name] = YieldingIdle.NAME if sharers else BusySpinIdle.NAME
        if not mine:
            problems.append(f"{name} spins ({out[name]}) with no core of its own (no CPU plan)")
        elif cold:
            problems.append(f"{name} spins ({out[name]}) on core(s) {sorted(mine)} shared with "
                            f"{', '.join(sorted(cold))}")
    return out, problems
