"""What the three ring kinds share: ``Ring``, the base of ``SpscRing``, ``MpmcRing`` and
``BroadcastRing`` (siblings; none extends another).

A ``Ring`` handle owns: the segment (create with its semaphores, attach, the header
checks of ``check_geometry``, close, unlink), the ring geometry, the reader slot of a
consumer (join, take over a dead reader's slot, leave), the undoing of dead sleepers'
doorbell registrations, the conversion of records to flat int64 words, the single-record
and structured-array forms of push and pop, and the stats. A kind supplies ``KIND``,
``push_words``, ``pop_words`` and ``wait``, and where it differs, the hooks
``_choose_policy``, ``_format``, ``_sem_tags``, ``_join_position`` and
``_registration_words``.

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

from arbpipe.transport.rings.doorbell import DEFAULT_SPIN, DEFAULT_YIELDS, RECLAIM_EVERY, \
    RECLAIM_INTERVAL_S, my_start_ticks, token_alive
from arbpipe.transport.rings.jit import kernels
from arbpipe.transport.rings.stats import ring_stats
from arbpipe.transport.segments import HeaderInfo, Segment, SegmentError, default_instance, \
    pid_alive, sem_name, unlink
from shm_layouts import RECORD_TYPE_IDS, RECORD_TYPES
from shm_layouts import ring as L
from shm_layouts.ring import FullPolicy, RingKind

K = None    # arbpipe.transport.kernels, bound by the first handle (arbpipe.transport.rings.jit)

POLICY_NAMES = {"block": FullPolicy.BLOCK, "drop": FullPolicy.DROP_NEWEST,
                "drop_newest": FullPolicy.DROP_NEWEST, "drop-newest": FullPolicy.DROP_NEWEST,
                "overwrite": FullPolicy.OVERWRITE}


def record_spec(record):
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


def parse_policy(policy) -> FullPolicy:
    """A ``FullPolicy`` from itself or its name ("block", "drop", "overwrite", ...)."""
    if isinstance(policy, FullPolicy):
        return policy
    try:
        return POLICY_NAMES[str(policy).lower()]
    except KeyError:
        raise ValueError(f"unknown full policy {policy!r}; use one of {sorted(POLICY_NAMES)}") \
            from None


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


class Ring:
    """Common part of the three ring kinds: segment, geometry, reader slots, stats."""

    KIND: RingKind

    def __init__(self, seg: Segment):
        global K
        K = kernels()
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
        # cached copies of the other side's cursor, for the SPSC kernels (the ``st``
        # argument of spsc_push / spsc_pop; other kinds ignore it)
        self.cursors = np.zeros(4, np.int64)
        self._sems: dict[str, posix_ipc.Semaphore] = {}
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
        """A new ring (``create_segment``) and a handle on it."""
        return cls(cls.create_segment(name, capacity, record, policy, instance, max_readers,
                                      reclaim_stale))

    @classmethod
    def create_segment(cls, name: str, capacity: int, record="MarketUpdate", policy="block",
                       instance: str | None = None, max_readers: int = 16,
                       reclaim_stale: bool = True) -> Segment:
        """Create a ring's segment and semaphores, formatted, without making a handle (no
        numba: the supervisor creates every ring this way and keeps the ``Segment`` until
        it stops, so that the rings outlive its children)."""
        instance = instance or default_instance()
        rtype, rsize, _ = record_spec(record)
        pol = cls._choose_policy(parse_policy(policy))
        seq_off, data_off, total = L.segment_layout(cls.KIND, capacity, rsize, max_readers)
        h = HeaderInfo(L.MAGIC, L.LAYOUT_VERSION, int(cls.KIND), rsize, capacity, 0, int(pol), 0,
                       0, max_readers, rtype, seq_off, data_off, name)
        seg = Segment.create(instance, name, total, h, reclaim_stale=reclaim_stale)
        cls._format(seg)
        try:
            for tag in cls._sem_tags(max_readers):
                posix_ipc.Semaphore(sem_name(instance, name, tag), posix_ipc.O_CREX, 0o600, 0)
        except posix_ipc.ExistentialError:
            # left over from a crashed run whose segment was reclaimed
            unlink(instance, name)
            raise SegmentError(f"stale semaphores of {name!r} were in the way; they are removed, "
                               f"retry") from None
        return seg

    @classmethod
    def attach(cls, name: str, instance: str | None = None, record=None) -> "Ring":
        instance = instance or default_instance()
        rtype = rsize = None
        if record is not None:
            rtype, rsize, _ = record_spec(record)
        seg = Segment.attach(instance, name, kind=int(cls.KIND), record_size=rsize,
                             record_type=rtype)
        return cls(seg)

    @classmethod
    def _choose_policy(cls, policy: FullPolicy) -> FullPolicy:
        """The full policy a new ring of this kind gets when ``policy`` is asked for."""
        if policy == FullPolicy.OVERWRITE:
            raise ValueError("policy 'overwrite' is for broadcast rings only")
        return policy

    @classmethod
    def _format(cls, seg: Segment) -> None:
        """Initialise a new segment's words beyond the header (all zero by default)."""

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

    def reclaim_registration(self, reg_w: int, door: int) -> int:
        """Undo the registration at word ``reg_w`` (doorbell ``door``) if the sleeper it
        names is dead; 1 if this call undid it."""
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

    def note_fruitless_wake(self) -> None:
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

    def push_words(self, words: np.ndarray, n: int, timeout: float | None = None) -> int:
        """Push n records given as flat int64 words; returns how many went in."""
        raise NotImplementedError

    def pop_words(self, out: np.ndarray, m: int | None = None) -> int:
        """Pop up to m records into flat int64 ``out``; never waits."""
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a record can be popped (spin, yield, then sleep)."""
        raise NotImplementedError

    def push(self, rec, timeout: float | None = None) -> bool:
        return self.push_batch(rec, timeout) == 1

    def push_batch(self, recs, timeout: float | None = None) -> int:
        words = self.words_of(recs)
        return self.push_words(words, len(words) // self.rw, timeout)

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

    # -- stats -------------------------------------------------------------------
    def stats(self) -> dict:
        return ring_stats(self.seg)
