"""Ring buffers in POSIX shared memory: ``SpscRing``, ``MpmcRing``, ``BroadcastRing``.

One segment per ring (layout: ``shm_layouts.ring``), records of a fixed size
(a multiple of 8 bytes; ``MarketUpdate`` is 64, ``Opportunity`` 128). Hot paths
are numba kernels (``arbpipe.transport.ring_kernels``); Python makes one call per batch.

Full-ring policy (stated at creation): ``BLOCK`` waits for space up to a timeout
(what did not fit when the timeout expires is counted as dropped), ``DROP_NEWEST``
refuses what does not fit and counts it. Broadcast rings never wait: slow
readers are lapped, notice it, count what they lost and resume at the newest
record.

Waiting (consumers on an empty ring, BLOCK producers on a full one): spin for
``spin`` iterations inside numba, then ``os.sched_yield()`` ``yields`` times, then
block on a doorbell semaphore. The sleeper arms a flag in the segment before
re-checking, and the other side posts only when the flag is armed, so posts are
rare and a wake-up is never lost.

Sleepers killed asleep: every sleeper registers a token (its pid and start time)
while it is counted in a doorbell's ``sleepers`` (the SPSC side in the doorbell
block, MPMC and broadcast endpoints in their own slot). A process SIGKILLed asleep
would otherwise stay counted for good, and every publish would take the Python wake
path looking for it. Its registration is undone, exactly once, by whoever meets it
first: the next owner of its slot (``join``, ``join_producer``), the SPSC side's
next sleeper, or the other side's wake path, which runs ``reclaim_sleepers`` when it
finds ``sleepers`` > 0 but nobody armed (every ``RECLAIM_EVERY`` such calls, at most
once per ``RECLAIM_INTERVAL_S``). Counted as ``sleepers_reclaimed`` (``producer_``
for the producer doorbell) in ``ring_stats``.

Reader slots record the owner's start time next to its pid, so a dead reader's slot
never looks alive because its pid was reused.
"""
from __future__ import annotations

import os
import time

import numpy as np
import posix_ipc

from arbpipe.transport import ring_kernels as K
from arbpipe.transport.segments import (HeaderInfo, Segment, SegmentError, default_instance, pid_alive,
                              process_start_ticks, sem_name, unlink)
from shm_layouts import RECORD_TYPE_IDS, RECORD_TYPES
from shm_layouts import ring as L
from shm_layouts.ring import FullPolicy, RingKind

_LOW = 0xFFFFFFFF
DEFAULT_SPIN = 20_000      # pause iterations (~tens of µs) before yielding
DEFAULT_YIELDS = 50        # sched_yield calls before blocking on the doorbell
MAX_BLOCK_S = 1.0          # a sleeper re-checks at least this often
RECLAIM_EVERY = 64         # fruitless wake-ups (sleepers > 0, none armed) per clock read
RECLAIM_INTERVAL_S = 0.5   # ... and at most one dead-sleeper scan per this many seconds

_me = (0, 0)               # (pid, start ticks) of this process, cached


def my_start_ticks() -> int:
    """Start time of this process in clock ticks since boot (cached; fork-safe)."""
    global _me
    pid = os.getpid()
    if _me[0] != pid:
        _me = (pid, process_start_ticks(pid))
    return _me[1]


def sleeper_token() -> int:
    """This process's doorbell registration token: start ticks << 24 | pid."""
    return my_start_ticks() << L.SLEEPER_PID_BITS | os.getpid()


def token_alive(token: int) -> bool:
    """True if the process incarnation a sleeper token names still runs."""
    return pid_alive(token & L.SLEEPER_PID_MASK, token >> L.SLEEPER_PID_BITS)


def _record_spec(record):
    """-> (record_type id, record_size, numpy dtype or None) for a record name, dtype or size."""
    if isinstance(record, str):
        if record not in RECORD_TYPE_IDS:
            raise ValueError(f"unknown record type {record!r}; known: {sorted(RECORD_TYPE_IDS)}")
        rt = RECORD_TYPE_IDS[record]
        dt = RECORD_TYPES[rt]
        if dt is None:
            raise ValueError("record='raw' needs a size: pass record=<bytes>")
        return rt, dt.itemsize, dt
    if isinstance(record, np.dtype):
        for rt, dt in RECORD_TYPES.items():
            if dt is not None and dt == record:
                return rt, dt.itemsize, dt
        return 0, record.itemsize, record
    size = int(record)
    return 0, size, None


def _policy(policy) -> FullPolicy:
    if isinstance(policy, FullPolicy):
        return policy
    names = {"block": FullPolicy.BLOCK, "drop": FullPolicy.DROP_NEWEST,
             "drop_newest": FullPolicy.DROP_NEWEST, "drop-newest": FullPolicy.DROP_NEWEST,
             "overwrite": FullPolicy.OVERWRITE}
    try:
        return names[str(policy).lower()]
    except KeyError:
        raise ValueError(f"unknown full policy {policy!r}; use one of {sorted(names)}") from None


class Doorbell:
    """The sleeping side of a ring: a semaphore plus counters/armed flag in the segment.
    ``reg_w``: the word where this sleeper registers its token while it is counted in
    ``sleepers`` (0: no registration, a death while asleep cannot be undone)."""

    def __init__(self, ring: "Ring", door_w: int, sem: posix_ipc.Semaphore, armed_w: int,
                 sleeps_w: int, wakes_w: int, reg_w: int = 0):
        self.ring, self.door_w, self.sem = ring, door_w, sem
        self.armed_w, self.sleeps_w, self.wakes_w = armed_w, sleeps_w, wakes_w
        self.reg_w = reg_w

    def wait(self, ready, timeout: float | None) -> bool:
        """Wait until ``ready(spins)`` is true or ``timeout`` s pass (None: forever)."""
        r = self.ring
        if ready(r.spin):
            return True
        for _ in range(r.yields):
            os.sched_yield()
            if ready(0):
                return True
        deadline = None if timeout is None else time.monotonic() + timeout
        w = r.w
        reg_w, token, door = self.reg_w, sleeper_token(), self.door_w
        if reg_w and int(w[reg_w]) not in (0, token):
            r._reclaim_word(reg_w, door)   # left by a sleeper that died asleep?
        while True:
            remaining = MAX_BLOCK_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            reg = K.announce_sleep(w, door, self.armed_w, reg_w, token)
            if ready(0):
                K.leave_sleep(w, door, self.armed_w, self.sleeps_w, self.wakes_w, False,
                              reg_w, token, reg)
                return True
            try:
                self.sem.acquire(min(remaining, MAX_BLOCK_S))
                woken = True
            except posix_ipc.BusyError:
                woken = False
            except posix_ipc.SignalError:
                # a signal (e.g. SIGTERM with a handler) interrupted the sleep: leave the
                # sleeper count as we found it and return, so the caller sees its stop flag
                K.leave_sleep(w, door, self.armed_w, self.sleeps_w, self.wakes_w, False,
                              reg_w, token, reg)
                return bool(ready(0))
            K.leave_sleep(w, door, self.armed_w, self.sleeps_w, self.wakes_w, woken,
                          reg_w, token, reg)
            if ready(0):
                return True

    def post_if_armed(self) -> None:
        """Called when a publish saw sleepers > 0: post if a sleeper is armed."""
        if K.take_armed(self.ring.w, self.armed_w):
            self.sem.release()
            K.count_post(self.ring.w, self.door_w)
        else:
            self.ring._fruitless_wake()


class Ring:
    """Common part of the three ring kinds: segment, geometry, reader slots, stats."""

    KIND: RingKind

    def __init__(self, seg: Segment):
        K.warm_up()
        check_geometry(seg)
        self.seg = seg
        self.w = seg.words
        h = seg.header
        self.name = seg.name
        self.instance = seg.instance
        self.capacity = h.capacity
        self.record_size = h.record_size
        self.rw = h.record_size // 8
        self.record_type = h.record_type
        self.dtype = RECORD_TYPES.get(h.record_type) or np.dtype((np.void, h.record_size))
        self.policy = FullPolicy(h.policy)
        self.max_readers = h.max_readers
        self.spin = DEFAULT_SPIN
        self.yields = DEFAULT_YIELDS
        self.slot = -1
        self.slot_w = 0
        self._st = np.zeros(4, np.int64)
        self._sems: dict[str, posix_ipc.Semaphore] = {}
        self._one = np.zeros(self.rw, np.int64)
        self._one_out = np.zeros(self.rw, np.int64)
        self._closed = False
        self._fruitless = 0         # wake paths that found sleepers but nobody armed
        self._next_reclaim = 0.0    # monotonic time before which no dead-sleeper scan runs
        self._regs = None           # (registration words, their doorbells), built lazily

    # -- construction ---------------------------------------------------------
    @classmethod
    def create(cls, name: str, capacity: int, record="MarketUpdate", policy="block",
               instance: str | None = None, max_readers: int = 16,
               reclaim_stale: bool = True) -> "Ring":
        instance = instance or default_instance()
        rtype, rsize, _ = _record_spec(record)
        pol = _policy(policy)
        if cls.KIND == RingKind.BROADCAST:
            pol = FullPolicy.OVERWRITE
        elif pol == FullPolicy.OVERWRITE:
            raise ValueError("policy 'overwrite' is for broadcast rings only")
        seq_off, data_off, total = L.segment_layout(cls.KIND, capacity, rsize, max_readers)
        h = HeaderInfo(L.MAGIC, L.LAYOUT_VERSION, int(cls.KIND), rsize, capacity, 0, int(pol), 0,
                       0, max_readers, rtype, seq_off, data_off, name)
        seg = Segment.create(instance, name, total, h, reclaim_stale=reclaim_stale)
        if cls.KIND == RingKind.MPMC:
            seg.words[seq_off // 8: seq_off // 8 + capacity] = np.arange(capacity, dtype=np.int64)
        try:
            for tag in cls._sem_tags(max_readers):
                posix_ipc.Semaphore(sem_name(instance, name, tag), posix_ipc.O_CREX, 0o600, 0)
        except posix_ipc.ExistentialError:
            # left over from a crashed run whose segment was reclaimed
            unlink(instance, name)
            raise SegmentError(f"stale semaphores of {name!r} were in the way; they are removed, "
                               f"retry") from None
        return cls(seg)

    @classmethod
    def attach(cls, name: str, instance: str | None = None, record=None) -> "Ring":
        instance = instance or default_instance()
        rtype = rsize = None
        if record is not None:
            rtype, rsize, _ = _record_spec(record)
        seg = Segment.attach(instance, name, kind=int(cls.KIND), record_size=rsize,
                             record_type=rtype)
        return cls(seg)

    @staticmethod
    def _sem_tags(max_readers):
        return ["c", "p"]

    def _sem(self, tag) -> posix_ipc.Semaphore:
        s = self._sems.get(tag)
        if s is None:
            s = self._sems[tag] = posix_ipc.Semaphore(sem_name(self.instance, self.name, tag))
        return s

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.leave()      # reader slot, and an MPMC producer's slot in the producer table
        for s in self._sems.values():
            try:
                s.close()
            except posix_ipc.Error:
                pass
        self._sems.clear()
        self.w = None
        self.seg.close()

    def unlink(self) -> None:
        """Remove the segment and its semaphores from the system (mapped users keep working)."""
        unlink(self.instance, self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reader slots ---------------------------------------------------------
    def _slot_word(self, i: int) -> int:
        return L.W_READERS + i * L.READER_SLOT_WORDS

    def join(self, reader: str | None = None) -> int:
        """Take a reader slot (named ``reader``). A dead reader's slot of the same name is
        taken over with its position (a restarted consumer resumes where it stopped)."""
        if self.slot >= 0:
            return self.slot
        reader = (reader or f"pid{os.getpid()}")[:L.READER_NAME_LEN]
        pid = os.getpid()
        for i in range(self.max_readers):
            if self._slot_name(i) == reader and self._take_dead_slot(i, pid):
                return self._took(i, reader, fresh=False)
        i = K.claim_slot(self.w, self.max_readers, 0, pid, -1)
        if i < 0:  # reclaim a dead reader's slot
            for j in range(self.max_readers):
                if self._take_dead_slot(j, pid):
                    i = j
                    break
        if i < 0:
            raise SegmentError(f"ring {self.name!r}: all {self.max_readers} reader slots are taken")
        return self._took(i, reader, fresh=True)

    def _take_dead_slot(self, i: int, pid: int) -> bool:
        """Take reader slot i if its owner is dead (pid and start ticks); True if taken."""
        sw = self._slot_word(i)
        start = int(self.w[sw + L.R_OWNER_START])
        owner = int(self.w[sw + L.R_OWNER_PID])
        if not owner or pid_alive(owner, start):
            return False
        return bool(K.claim_dead_slot(self.w, sw + L.R_OWNER_PID, sw + L.R_OWNER_START,
                                      owner, start, pid))

    def _took(self, i, reader, fresh):
        sw = self._slot_word(i)
        self.w[sw + L.R_OWNER_START] = my_start_ticks()
        self.w[sw + L.R_ARMED] = 0        # the previous owner may have died armed
        self.reclaim_sleepers()           # ... and asleep (its token, or the SPSC side's)
        if fresh:
            for r in (L.R_RECEIVED, L.R_LOST, L.R_LAPS, L.R_SLEEPS, L.R_WAKES):
                self.w[sw + r] = 0
            self.w[sw + L.R_POSITION] = self._join_position()
        off = (sw * 8) + L.READER_NAME_OFF
        raw = reader.encode("ascii", "replace")
        b = self.seg.bytes
        b[off:off + L.READER_NAME_LEN] = 0
        b[off:off + len(raw)] = np.frombuffer(raw, np.uint8)
        self.slot, self.slot_w = i, sw
        return i

    def _join_position(self) -> int:
        return 0

    def _slot_name(self, i) -> str:
        off = self._slot_word(i) * 8 + L.READER_NAME_OFF
        return bytes(self.seg.bytes[off:off + L.READER_NAME_LEN]).rstrip(b"\0").decode("ascii",
                                                                                       "replace")

    def leave(self) -> None:
        if self.slot >= 0 and self.w is not None:
            self.w[self.slot_w + L.R_OWNER_START] = 0   # before the pid: see _take_dead_slot
            self.w[self.slot_w + L.R_OWNER_PID] = 0
        self.slot = -1

    # -- dead sleepers ---------------------------------------------------------
    def _registration_words(self) -> list[tuple[int, int]]:
        """(registration word, its doorbell) of every sleeper this ring kind can have."""
        regs = [(L.W_CDOOR + L.D_SLEEPER, L.W_CDOOR), (L.W_PDOOR + L.D_SLEEPER, L.W_PDOOR)]
        regs += [(self._slot_word(i) + L.R_SLEEPER, L.W_CDOOR)
                 for i in range(self.max_readers)]
        return regs

    def _reclaim_word(self, reg_w: int, door: int) -> int:
        t = int(self.w[reg_w])
        if t == 0 or token_alive(t):
            return 0
        return int(K.reclaim_sleeper(self.w, reg_w, t, door))

    def reclaim_sleepers(self) -> int:
        """Undo the doorbell registration of every sleeper whose process is gone (killed
        while asleep), so that publishers stop looking for it; each is counted in its
        doorbell's ``sleepers_reclaimed``. Safe from any process at any time (one CAS
        per registration: a live or newer sleeper is never touched). Returns how many."""
        if self._regs is None:
            r = self._registration_words()
            self._regs = (np.array([a for a, _ in r], np.int64),
                          np.array([d for _, d in r], np.int64))
        regs, doors = self._regs
        toks = self.w[regs]
        n = 0
        for j in np.flatnonzero(toks):
            t = int(toks[j])
            if not token_alive(t):
                n += int(K.reclaim_sleeper(self.w, int(regs[j]), t, int(doors[j])))
        return n

    def _fruitless_wake(self) -> None:
        """A publish saw sleepers > 0 but nobody was armed: normal for a moment (a sleeper
        already posted has not left yet), for good if a sleeper died asleep. Scan for
        dead sleepers every ``RECLAIM_EVERY`` such calls, at most once per
        ``RECLAIM_INTERVAL_S``."""
        self._fruitless += 1
        if self._fruitless % RECLAIM_EVERY:
            return
        now = time.monotonic()
        if now < self._next_reclaim:
            return
        self._next_reclaim = now + RECLAIM_INTERVAL_S
        self.reclaim_sleepers()

    # -- records ----------------------------------------------------------------
    def words_of(self, recs) -> np.ndarray:
        """Flat int64 word view of records (structured array, void scalar or bytes)."""
        if isinstance(recs, np.ndarray):
            if recs.dtype == np.int64 and recs.ndim == 1:
                return recs
            if recs.dtype.itemsize != self.record_size:
                raise ValueError(f"ring {self.name!r} holds {self.record_size}-byte records, "
                                 f"got {recs.dtype.itemsize}-byte items")
            return np.ascontiguousarray(recs).reshape(-1).view(np.int64)
        if isinstance(recs, np.void):
            return np.frombuffer(recs.tobytes(), np.int64)
        b = memoryview(recs).cast("B")
        if len(b) % self.record_size:
            raise ValueError(f"{len(b)} bytes is not a whole number of {self.record_size}-byte "
                             f"records")
        return np.frombuffer(b, np.int64)

    def empty(self, n: int) -> np.ndarray:
        """A zeroed structured array of n records of this ring's type."""
        return np.zeros(n, self.dtype)

    # -- stats -------------------------------------------------------------------
    def stats(self) -> dict:
        return ring_stats(self.seg)


class SpscRing(Ring):
    """One producer, one consumer. Batched and single-record push/pop."""

    KIND = RingKind.SPSC

    def __init__(self, seg):
        super().__init__(seg)
        self._cdoor = Doorbell(self, L.W_CDOOR, self._sem("c"), L.W_CDOOR + L.D_ARMED,
                               L.W_CDOOR + L.D_SLEEPS, L.W_CDOOR + L.D_WAKES,
                               L.W_CDOOR + L.D_SLEEPER)
        self._pdoor = Doorbell(self, L.W_PDOOR, self._sem("p"), L.W_PDOOR + L.D_ARMED,
                               L.W_PDOOR + L.D_SLEEPS, L.W_PDOOR + L.D_WAKES,
                               L.W_PDOOR + L.D_SLEEPER)

    # producer
    def push_words(self, words: np.ndarray, n: int, timeout: float | None = None) -> int:
        """Push n records given as flat int64 words. Returns how many went in; under
        BLOCK waits up to ``timeout`` (None = forever) and counts the rest as dropped."""
        r = K.spsc_push(self.w, words, n, self._st)
        k = r & _LOW
        if r >> 32:
            self._cdoor.post_if_armed()
        if k == n or self.policy != FullPolicy.BLOCK:
            return k
        return self._push_blocking(words, n, k, timeout)

    def _push_blocking(self, words, n, k, timeout):
        """BLOCK policy: wait for space (doorbell) and push the rest, up to ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        w = self.w
        while k < n:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0 or not self._pdoor.wait(
                    lambda s: self._writable(w, s), left):
                K.add(w, L.W_DROPPED, n - k)
                return k
            r = self._push_kernel(words[k * self.rw:], n - k)
            k += r & _LOW
            if r >> 32:
                self._cdoor.post_if_armed()
        return k

    def _push_kernel(self, words, n):
        return K.spsc_push(self.w, words, n, self._st)

    @staticmethod
    def _writable(w, spins):
        return K.spsc_writable(w, spins)

    def push(self, rec, timeout: float | None = None) -> bool:
        return self.push_batch(rec, timeout) == 1

    def push_batch(self, recs, timeout: float | None = None) -> int:
        words = self.words_of(recs)
        return self.push_words(words, len(words) // self.rw, timeout)

    # consumer
    def pop_words(self, out: np.ndarray, m: int | None = None) -> int:
        """Pop up to m records into flat int64 ``out``; never waits."""
        if self.slot < 0:
            self.join()
        if m is None:
            m = len(out) // self.rw
        r = K.spsc_pop(self.w, out, m, self._st, self.slot_w)
        if r >> 32:
            self._pdoor.post_if_armed()
        return r & _LOW

    def wake_consumer(self) -> None:
        """Post the consumer doorbell if a consumer sleeps (after a push made inside numba)."""
        self._cdoor.post_if_armed()

    def wake_producer(self) -> None:
        """Post the producer doorbell if a BLOCK producer sleeps (after a pop inside numba)."""
        self._pdoor.post_if_armed()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a record can be popped (spin, yield, then sleep)."""
        w = self.w
        return self._cdoor.wait(lambda s: K.spsc_readable(w, s), timeout)

    def pop_batch(self, out: np.ndarray, timeout: float | None = 0) -> int:
        """Pop into a structured array (or flat int64 words); wait up to ``timeout`` if empty."""
        words = out if out.dtype == np.int64 else out.reshape(-1).view(np.int64)
        n = self.pop_words(words)
        if n == 0 and timeout != 0 and self.wait(timeout):
            n = self.pop_words(words)
        return n

    def pop(self, timeout: float | None = 0):
        """One record as a numpy structured scalar (a copy), or None."""
        n = self.pop_batch(self._one_out, timeout)
        return self._one_out.view(self.dtype)[0].copy() if n else None


class MpmcRing(SpscRing):
    """N producers, M consumers; every record is taken by exactly one consumer.

    Crash recovery (Vyukov's bounded queue alone wedges when a producer dies between
    claiming a slot and committing it, or a consumer between dequeuing and releasing):
    producers take a slot in the segment's producer table (pid + start ticks) and every
    producer and consumer announces its claim there before making it. A consumer that
    finds the next position claimed but uncommitted for ``STALL_S``, or a producer that
    finds the ring full because of an unreleased slot, runs ``recover()``: a stuck
    position whose every announced claimant is dead is poisoned (consumers skip it;
    counted as ``abandoned``; it never held a committed record) or released (counted as
    ``orphaned``: the dead consumer had taken the record). A live but slow claimant is
    always waited for, so nothing committed is lost and nothing is delivered twice.
    """

    KIND = RingKind.MPMC
    STALL_S = 0.1       # a stuck position is checked for dead claimants after this long

    def __init__(self, seg):
        super().__init__(seg)
        self.pslot = -1
        self.pslot_w = 0
        self._table_w = L.producers_offset(self.max_readers) // 8
        self._stall = np.zeros(2, np.int64)
        self._stuck: dict[int, tuple] = {}   # side -> (position, monotonic time first seen)
        self._next_check = [0.0, 0.0]         # per side: no stall check before this time
        # many sleepers per side: each registers in its own reader / producer slot
        self._cdoor.reg_w = 0
        self._pdoor.reg_w = 0

    # -- producer slot ------------------------------------------------------------------
    def join_producer(self) -> int:
        """Take a slot in the producer table (done by the first push)."""
        if self.pslot >= 0:
            return self.pslot
        pid, ticks = os.getpid(), my_start_ticks()
        w, tw = self.w, self._table_w
        for attempt in (0, 1):
            for i in range(L.PRODUCER_SLOTS):
                sw = tw + i * L.PRODUCER_SLOT_WORDS
                start = int(w[sw + L.P_START])
                owner = int(w[sw + L.P_PID])
                if attempt == 0 and owner != 0:
                    continue
                if attempt == 1:
                    if owner == 0 or pid_alive(owner, start):
                        continue
                    # a dead producer's slot: only once nothing it claimed is unresolved
                    if int(w[sw + L.P_CLAIM_N]) and K.mpmc_unresolved(
                            w, int(w[sw + L.P_CLAIM_POS]), int(w[sw + L.P_CLAIM_N])):
                        self.recover()
                        if K.mpmc_unresolved(w, int(w[sw + L.P_CLAIM_POS]),
                                             int(w[sw + L.P_CLAIM_N])):
                            continue
                if K.claim_slot_at(w, sw + L.P_PID, 0, pid) if attempt == 0 else \
                        K.claim_dead_slot(w, sw + L.P_PID, sw + L.P_START, owner, start, pid):
                    w[sw + L.P_START] = ticks
                    w[sw + L.P_CLAIM_N] = 0
                    self._reclaim_word(sw + L.P_SLEEPER, L.W_PDOOR)  # it died asleep?
                    self.pslot, self.pslot_w = i, sw
                    self._pdoor.reg_w = sw + L.P_SLEEPER
                    return i
        raise SegmentError(f"ring {self.name!r}: all {L.PRODUCER_SLOTS} producer slots are taken")

    def leave(self) -> None:
        if self.pslot >= 0 and self.w is not None:
            self.w[self.pslot_w + L.P_START] = 0   # before the pid: see claim_dead_slot
            self.w[self.pslot_w + L.P_PID] = 0
            self.pslot, self.pslot_w = -1, 0
        self._pdoor.reg_w = self._cdoor.reg_w = 0
        super().leave()

    def join(self, reader=None):
        if self.slot < 0:
            self.recover()  # a dead consumer's slot may be taken over: settle its claim first
        i = super().join(reader)
        self._cdoor.reg_w = self.slot_w + L.R_SLEEPER
        return i

    def _registration_words(self):
        return super()._registration_words() + [
            (self._table_w + i * L.PRODUCER_SLOT_WORDS + L.P_SLEEPER, L.W_PDOOR)
            for i in range(L.PRODUCER_SLOTS)]

    # -- records ------------------------------------------------------------------------
    def push_words(self, words, n, timeout=None):
        if self.pslot < 0:
            self.join_producer()
        r = K.mpmc_push(self.w, words, n, self.pslot_w)
        k = r & _LOW
        if r >> 32:
            self._cdoor.post_if_armed()
        if k == n:
            return k
        self._gated_check(1)
        if self.policy != FullPolicy.BLOCK:
            return k
        return self._push_blocking(words, n, k, timeout)

    def _push_kernel(self, words, n):
        return K.mpmc_push(self.w, words, n, self.pslot_w)

    def _writable(self, w, spins):
        return K.mpmc_writable(w, spins) or self._gated_check(1)

    def pop_words(self, out, m=None):
        if self.slot < 0:
            self.join()
        if m is None:
            m = len(out) // self.rw
        r = K.mpmc_pop(self.w, out, m, self.slot_w, 0)   # every argument given: ~100 ns
        if r > _LOW:                                     # less numba dispatch than a default
            if (r >> 32) & 1:
                self._pdoor.post_if_armed()
            if r >> 33:
                self._gated_check(0)
        return r & _LOW

    def wait(self, timeout=None):
        if self.slot < 0:
            self.join()
        w = self.w
        return self._cdoor.wait(lambda s: K.mpmc_readable(w, s) or self._gated_check(0),
                                timeout)

    # -- recovery -----------------------------------------------------------------------
    def _gated_check(self, side: int) -> bool:
        """``_check_stall`` at most four times per ``STALL_S`` (a producer mid-commit makes
        an empty pop report a stall for a moment; that must stay cheap)."""
        now = time.monotonic()
        if now < self._next_check[side]:
            return False
        self._next_check[side] = now + self.STALL_S / 4
        return self._check_stall(side)

    def _check_stall(self, side: int) -> bool:
        """Side 0 (consumers): the next position is claimed but uncommitted; side 1
        (producers): the ring is full behind an unreleased slot. After ``STALL_S`` on the
        same position, ``recover()``. True if that unblocked something."""
        K.mpmc_stall(self.w, self._stall)
        p = int(self._stall[side])
        if p < 0:
            self._stuck.pop(side, None)
            return False
        now = time.monotonic()
        first = self._stuck.get(side)
        if first is None or first[0] != p:
            self._stuck[side] = (p, now)
            return False
        if now - first[1] < self.STALL_S:
            return False
        self._stuck.pop(side, None)
        return sum(self.recover().values()) > 0

    def _dead_flags(self, producers: bool) -> np.ndarray:
        """1 for each occupied slot whose owner is dead (producer table or reader slots)."""
        w = self.w
        if producers:
            n, base, step, pid_w = (L.PRODUCER_SLOTS, self._table_w, L.PRODUCER_SLOT_WORDS,
                                    L.P_PID)
        else:
            n, base, step, pid_w = (self.max_readers, L.W_READERS, L.READER_SLOT_WORDS,
                                    L.R_OWNER_PID)
        dead = np.zeros(n, np.int64)
        for i in range(n):
            sw = base + i * step
            pid = int(w[sw + pid_w])
            if pid == 0:
                continue
            ticks = int(w[sw + (L.P_START if producers else L.R_OWNER_START)])
            dead[i] = 0 if pid_alive(pid, ticks) else 1
        return dead

    def recover(self) -> dict:
        """Settle positions stuck on dead processes (see the class docstring); safe to
        call from any process at any time. Returns what this call did: {"abandoned": n
        (slots poisoned), "orphaned": n (slots released and counted), "released": n
        (released, already counted as received by the dead consumer)}."""
        out = np.zeros(3, np.int64)
        for producers in (True, False):
            dead = self._dead_flags(producers)
            if dead.any():
                K.mpmc_settle(self.w, producers, self._table_w, len(dead), dead, out)
        return {"abandoned": int(out[0]), "orphaned": int(out[1]), "released": int(out[2])}


class BroadcastRing(Ring):
    """One writer, any number of independent readers; the writer never waits."""

    KIND = RingKind.BROADCAST

    def __init__(self, seg):
        super().__init__(seg)
        self._armed = np.zeros(self.max_readers, np.int64)
        self._rdoor = None

    @staticmethod
    def _sem_tags(max_readers):
        return [f"r{i}" for i in range(max_readers)]

    def _join_position(self) -> int:
        head = int(K.head_of(self.w))
        return head - 1 if head > 0 else 0  # late joiners start at the newest record

    def join(self, reader=None):
        i = super().join(reader)
        sw = self.slot_w
        self._rdoor = Doorbell(self, L.W_CDOOR, self._sem(f"r{i}"), sw + L.R_ARMED,
                               sw + L.R_SLEEPS, sw + L.R_WAKES, sw + L.R_SLEEPER)
        return i

    # writer
    def push_words(self, words, n, timeout=None):
        r = K.bcast_push(self.w, words, n)
        if r >> 32:
            self.wake_readers()
        return r & _LOW

    def wake_readers(self) -> None:
        """Post the doorbell of every sleeping reader (after a push made inside numba)."""
        k = K.armed_readers(self.w, self.max_readers, self._armed)
        for j in range(k):
            self._sem(f"r{int(self._armed[j])}").release()
            K.count_post(self.w, L.W_CDOOR)
        if k == 0:
            self._fruitless_wake()

    def push(self, rec, timeout=None) -> bool:
        return self.push_batch(rec) == 1

    def push_batch(self, recs, timeout=None) -> int:
        words = self.words_of(recs)
        return self.push_words(words, len(words) // self.rw)

    # readers
    def pop_words(self, out, m=None):
        if self.slot < 0:
            self.join()
        if m is None:
            m = len(out) // self.rw
        return K.bcast_pop(self.w, out, m, self.slot_w)

    def wait(self, timeout=None):
        if self.slot < 0:
            self.join()
        w, sw = self.w, self.slot_w
        return self._rdoor.wait(lambda s: K.bcast_readable(w, sw, s), timeout)

    pop_batch = SpscRing.pop_batch
    pop = SpscRing.pop

    def reader_stats(self) -> dict:
        sw = self.slot_w
        return {k: int(self.w[sw + off]) for k, off in
                (("position", L.R_POSITION), ("received", L.R_RECEIVED), ("lost", L.R_LOST),
                 ("laps", L.R_LAPS))}


def check_geometry(seg: Segment) -> None:
    """Refuse (SegmentError) a ring segment whose header does not describe a ring that fits
    it: kind, capacity (power of two), record size (multiple of 8), reader count, the
    offsets of its parts, and its size. Kernels trust the header, so a truncated or
    doctored segment must never reach them."""
    h = seg.header
    size = len(seg.buf)
    path = seg.path if hasattr(seg, "path") else seg.name
    try:
        kind = RingKind(h.kind)
        if not 0 < h.max_readers <= 1024:
            raise ValueError(f"max_readers {h.max_readers} out of range")
        seq_off, data_off, total = L.segment_layout(kind, h.capacity, h.record_size,
                                                    h.max_readers)
    except ValueError as e:
        raise SegmentError(f"refusing segment {path}: header does not describe a ring ({e})")\
            from None
    if (h.seq_offset, h.data_offset) != (seq_off, data_off):
        raise SegmentError(f"refusing segment {path}: offsets seq {h.seq_offset} / data "
                           f"{h.data_offset}, a {kind.name} ring of this geometry has "
                           f"{seq_off} / {data_off}")
    if size < total:
        raise SegmentError(f"refusing segment {path}: size {size} bytes, its header needs "
                           f"{total} ({h.capacity} x {h.record_size}-byte records)")


RING_CLASSES = {RingKind.SPSC: SpscRing, RingKind.MPMC: MpmcRing,
                RingKind.BROADCAST: BroadcastRing}


def attach_any(name: str, instance: str | None = None) -> Ring:
    """Attach to a ring of whatever kind its header says."""
    instance = instance or default_instance()
    seg = Segment.attach(instance, name)
    kind = RingKind(seg.header.kind)
    return RING_CLASSES[kind](seg)


def ring_stats(seg: Segment) -> dict:
    """Counters of a ring, read without disturbing it (plain aligned loads)."""
    w = seg.words
    h = seg.header
    kind = RingKind(h.kind)
    head = int(w[L.W_HEAD])
    tail = int(w[L.W_TAIL])
    readers = []
    for i in range(h.max_readers):
        sw = L.W_READERS + i * L.READER_SLOT_WORDS
        pid = int(w[sw + L.R_OWNER_PID])
        if not pid:
            continue
        start = int(w[sw + L.R_OWNER_START])
        off = sw * 8 + L.READER_NAME_OFF
        name = bytes(seg.bytes[off:off + L.READER_NAME_LEN]).rstrip(b"\0").decode("ascii",
                                                                                  "replace")
        pos = int(w[sw + L.R_POSITION]) if kind == RingKind.BROADCAST else tail
        readers.append({"name": name, "pid": pid, "alive": pid_alive(pid, start),
                        "position": pos, "lag": max(head - pos, 0),
                        "received": int(w[sw + L.R_RECEIVED]), "lost": int(w[sw + L.R_LOST]),
                        "lapped": int(w[sw + L.R_LAPS]), "sleeps": int(w[sw + L.R_SLEEPS]),
                        "wakes": int(w[sw + L.R_WAKES])})
    fill = 0 if kind == RingKind.BROADCAST else max(head - tail, 0)
    cd, pd = L.W_CDOOR, L.W_PDOOR
    return {
        "name": seg.name, "instance": seg.instance, "kind": kind.name.lower(),
        "record": {v: k for k, v in RECORD_TYPE_IDS.items()}.get(h.record_type, "raw"),
        "record_size": h.record_size, "capacity": h.capacity,
        "policy": FullPolicy(h.policy).name.lower(), "creator_pid": h.creator_pid,
        "published": head, "consumed": tail if kind != RingKind.BROADCAST else None,
        "fill": fill, "fill_pct": 100.0 * fill / h.capacity,
        "dropped": int(w[L.W_DROPPED]), "full_events": int(w[L.W_FULL_EVENTS]),
        "batches": int(w[L.W_BATCHES]),
        "abandoned": int(w[L.W_ABANDONED]), "orphaned": int(w[L.W_ORPHANED]),
        "sleeps": int(w[cd + L.D_SLEEPS]), "wakes": int(w[cd + L.D_WAKES]),
        "posts": int(w[cd + L.D_POSTS]), "sleepers": int(w[cd + L.D_SLEEPERS]),
        "sleepers_reclaimed": int(w[cd + L.D_RECLAIMED]),
        "producer_sleeps": int(w[pd + L.D_SLEEPS]), "producer_wakes": int(w[pd + L.D_WAKES]),
        "producer_posts": int(w[pd + L.D_POSTS]), "producer_sleepers": int(w[pd + L.D_SLEEPERS]),
        "producer_sleepers_reclaimed": int(w[pd + L.D_RECLAIMED]),
        "readers": readers,
    }


_ = process_start_ticks
