"""POSIX shared-memory segments and doorbell semaphores, named per pipeline instance.

Names: ``/arbpipe.<instance>.<name>`` for segments, ``/arbpipe.<instance>.<name>.<tag>``
for semaphores (they show in /dev/shm as ``sem.arbpipe...``). Segments are created
with mode 0600. Every segment starts with the ring descriptor header
(``shm_layouts.ring``); attaching checks magic, layout version, record size and the
owner uid, and refuses a mismatch with a ``SegmentError`` that says what differs.

A segment is *stale* when the process that created it is gone (pid dead, or the
pid reused by a process that started later); stale segments are reclaimed by
``arbpipe clean`` and by ``create(..., reclaim_stale=True)``.
"""
from __future__ import annotations

import dataclasses
import mmap
import os
import re
import time

import numpy as np
import posix_ipc

from shm_layouts import ring as L
from shm_layouts.records import RECORD_TYPE_NAMES, RETIRED_RECORD_TYPES

SHM_DIR = "/dev/shm"
PREFIX = "arbpipe"
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


class SegmentError(RuntimeError):
    """A segment cannot be created or attached safely; the message says why."""


class SegmentExists(SegmentError):
    pass


class SegmentNotFound(SegmentError):
    pass


def default_instance() -> str:
    return os.environ.get("ARBPIPE_INSTANCE", "default")


def check_name(part: str, what: str) -> str:
    if not part or not _NAME_RE.match(part) or len(part) > 100:
        raise SegmentError(f"invalid {what} {part!r}: use letters, digits, '_', '-', '.'")
    return part


def shm_name(instance: str, name: str) -> str:
    check_name(instance, "instance name")
    check_name(name, "segment name")
    if "." in instance:
        raise SegmentError(f"invalid instance name {instance!r}: no '.' allowed")
    return f"/{PREFIX}.{instance}.{name}"


def sem_name(instance: str, name: str, tag: str) -> str:
    return f"{shm_name(instance, name)}.{tag}"


def process_start_ticks(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot (0 when it does not exist or is a
    zombie: killed processes of a tree whose supervisor died wait for init to reap them)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    # comm may contain spaces/parens: fields after the last ')' are fixed
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):  # a zombie is dead: its parent just has not reaped it yet
        return 0
    return int(rest[19])


def pid_alive(pid: int, start_ticks: int = 0) -> bool:
    if pid <= 0:
        return False
    ticks = process_start_ticks(pid)
    if ticks == 0:
        return False
    return start_ticks == 0 or ticks == start_ticks


@dataclasses.dataclass
class HeaderInfo:
    magic: int
    version: int
    kind: int
    record_size: int
    capacity: int
    creator_pid: int
    policy: int
    created_ns: int
    creator_start: int
    max_readers: int
    record_type: int
    seq_offset: int
    data_offset: int
    name: str

    @classmethod
    def read(cls, buf) -> "HeaderInfo":
        h = np.frombuffer(buf, dtype=np.uint8, count=L.BLOCK)

        def u32(off):
            return int(h[off:off + 4].view(np.uint32)[0])

        def u64(off):
            return int(h[off:off + 8].view(np.uint64)[0])
        name = bytes(h[L.OFF_NAME:L.OFF_NAME + L.NAME_LEN]).rstrip(b"\0").decode("ascii", "replace")
        return cls(u64(L.OFF_MAGIC), u32(L.OFF_VERSION), u32(L.OFF_KIND), u32(L.OFF_RECORD_SIZE),
                   u32(L.OFF_CAPACITY), u32(L.OFF_CREATOR_PID), u32(L.OFF_POLICY),
                   u64(L.OFF_CREATED_NS), u64(L.OFF_CREATOR_START), u32(L.OFF_MAX_READERS),
                   u32(L.OFF_RECORD_TYPE), u32(L.OFF_SEQ_OFFSET), u32(L.OFF_DATA_OFFSET), name)

    def write(self, buf) -> None:
        h = np.frombuffer(buf, dtype=np.uint8, count=L.BLOCK)

        def put(off, val, dt):
            h[off:off + np.dtype(dt).itemsize].view(dt)[0] = val
        put(L.OFF_VERSION, self.version, np.uint32)
        put(L.OFF_KIND, self.kind, np.uint32)
        put(L.OFF_RECORD_SIZE, self.record_size, np.uint32)
        put(L.OFF_CAPACITY, self.capacity, np.uint32)
        put(L.OFF_CREATOR_PID, self.creator_pid, np.uint32)
        put(L.OFF_POLICY, self.policy, np.uint32)
        put(L.OFF_CREATED_NS, self.created_ns, np.uint64)
        put(L.OFF_CREATOR_START, self.creator_start, np.uint64)
        put(L.OFF_MAX_READERS, self.max_readers, np.uint32)
        put(L.OFF_RECORD_TYPE, self.record_type, np.uint32)
        put(L.OFF_SEQ_OFFSET, self.seq_offset, np.uint32)
        put(L.OFF_DATA_OFFSET, self.data_offset, np.uint32)
        raw = self.name.encode("ascii")[:L.NAME_LEN]
        h[L.OFF_NAME:L.OFF_NAME + L.NAME_LEN] = 0
        h[L.OFF_NAME:L.OFF_NAME + len(raw)] = np.frombuffer(raw, np.uint8)
        # magic last: a half-initialised segment never passes the attach check
        put(L.OFF_MAGIC, self.magic, np.uint64)

    @property
    def stale(self) -> bool:
        return not pid_alive(self.creator_pid, self.creator_start)


class Segment:
    """One mapped POSIX shared-memory segment (``.buf`` is the mmap, ``.words`` an int64 view)."""

    def __init__(self, instance: str, name: str, mm: mmap.mmap, created: bool):
        self.instance = instance
        self.name = name
        self.path = shm_name(instance, name)
        self.buf = mm
        self.words = np.frombuffer(mm, dtype=np.int64)
        self.bytes = np.frombuffer(mm, dtype=np.uint8)
        self.created = created

    @property
    def header(self) -> HeaderInfo:
        return HeaderInfo.read(self.buf)

    @classmethod
    def create(cls, instance: str, name: str, size: int, header: HeaderInfo,
               reclaim_stale: bool = True) -> "Segment":
        path = shm_name(instance, name)
        try:
            shm = posix_ipc.SharedMemory(path, posix_ipc.O_CREX, mode=0o600, size=size)
        except posix_ipc.ExistentialError:
            other = probe(instance, name)
            if reclaim_stale and (other is None or other.stale):
                unlink(instance, name)
                shm = posix_ipc.SharedMemory(path, posix_ipc.O_CREX, mode=0o600, size=size)
            else:
                pid = other.creator_pid if other else "?"
                raise SegmentExists(f"segment {path} exists and its creator (pid {pid}) is alive; "
                                    f"is pipeline instance {instance!r} already running?") from None
        try:
            os.fchmod(shm.fd, 0o600)
            mm = mmap.mmap(shm.fd, size)
        finally:
            shm.close_fd()
        header.creator_pid = os.getpid()
        header.creator_start = process_start_ticks(os.getpid())
        header.created_ns = time.time_ns()
        header.write(mm)
        return cls(instance, name, mm, True)

    @classmethod
    def attach(cls, instance: str, name: str, *, kind: int | None = None,
               record_size: int | None = None, record_type: int | None = None) -> "Segment":
        path = shm_name(instance, name)
        try:
            shm = posix_ipc.SharedMemory(path, 0)
        except posix_ipc.ExistentialError:
            raise SegmentNotFound(f"no segment {path} (is pipeline {instance!r} running?)") from None
        except posix_ipc.PermissionsError:
            raise SegmentError(f"segment {path}: permission denied (owned by another user)") from None
        try:
            st = os.fstat(shm.fd)
            if st.st_uid != os.geteuid():
                raise SegmentError(f"refusing segment {path}: owned by uid {st.st_uid}, "
                                   f"we are uid {os.geteuid()}")
            if st.st_size < L.BLOCK:
                raise SegmentError(f"refusing segment {path}: {st.st_size} bytes is too small "
                                   f"for an arbpipe header")
            mm = mmap.mmap(shm.fd, st.st_size)
        finally:
            shm.close_fd()
        h = HeaderInfo.read(mm)
        problem = None
        if h.magic != L.MAGIC:
            problem = f"bad magic {h.magic:#018x} (expected {L.MAGIC:#018x}): not an arbpipe ring"
        elif h.version != L.LAYOUT_VERSION:
            problem = f"layout version {h.version}, this build reads version {L.LAYOUT_VERSION}"
        elif kind is not None and h.kind != kind:
            problem = f"ring kind {h.kind}, expected {kind}"
        elif record_type is not None and h.record_type in RETIRED_RECORD_TYPES:
            old, size = RETIRED_RECORD_TYPES[h.record_type]
            problem = (f"it holds {old} records ({size} bytes) of an older arbpipe; this build "
                       f"reads {RECORD_TYPE_NAMES.get(record_type, record_type)} records of "
                       f"{record_size} bytes: stop that tree (arbpipe down) and start it again "
                       f"with this build")
        elif record_size is not None and h.record_size != record_size:
            problem = f"record size {h.record_size} bytes, expected {record_size}"
        elif record_type is not None and h.record_type != record_type:
            problem = f"record type {h.record_type}, expected {record_type}"
        if problem:
            mm.close()
            raise SegmentError(f"refusing segment {path}: {problem}")
        return cls(instance, name, mm, False)

    def close(self) -> None:
        self.words = self.bytes = None
        try:
            self.buf.close()
        except BufferError:
            # numpy views of the mapping are still alive somewhere; the mapping
            # goes away with them (or at exit), the name is what must not leak
            pass


def probe(instance: str, name: str) -> HeaderInfo | None:
    """Header of an existing segment, or None if it is missing/unreadable/not ours."""
    path = os.path.join(SHM_DIR, shm_name(instance, name)[1:])
    try:
        with open(path, "rb") as f:
            data = f.read(L.BLOCK)
    except OSError:
        return None
    if len(data) < L.BLOCK:
        return None
    h = HeaderInfo.read(data)
    return h if h.magic == L.MAGIC else None


def unlink(instance: str, name: str) -> None:
    """Unlink a segment and every semaphore that belongs to it. Missing is fine."""
    path = shm_name(instance, name)
    try:
        posix_ipc.unlink_shared_memory(path)
    except posix_ipc.ExistentialError:
        pass
    prefix = "sem." + path[1:] + "."
    for entry in _shm_entries():
        if entry.startswith(prefix):
            try:
                posix_ipc.unlink_semaphore("/" + entry[4:])
            except posix_ipc.ExistentialError:
                pass


def _shm_entries() -> list[str]:
    try:
        return os.listdir(SHM_DIR)
    except OSError:
        return []


@dataclasses.dataclass
class Listed:
    instance: str
    name: str
    header: HeaderInfo | None

    @property
    def stale(self) -> bool:
        return self.header is None or self.header.stale


def list_segments(instance: str | None = None) -> list[Listed]:
    """Every arbpipe segment in /dev/shm (optionally of one instance), sorted by name."""
    out = []
    for entry in _shm_entries():
        if not entry.startswith(PREFIX + "."):
            continue
        parts = entry.split(".", 2)
        if len(parts) != 3:
            continue
        _, inst, name = parts
        if instance is not None and inst != instance:
            continue
        out.append(Listed(inst, name, probe(inst, name)))
    return sorted(out, key=lambda s: (s.instance, s.name))


def orphan_semaphores(instance: str | None = None) -> list[str]:
    """Semaphores of ours whose segment is gone."""
    segs = {f"{s.instance}.{s.name}" for s in list_segments(instance)}
    out = []
    for entry in _shm_entries():
        if not entry.startswith("sem." + PREFIX + "."):
            continue
        body = entry[len("sem." + PREFIX + "."):]
        if instance is not None and not body.startswith(instance + "."):
            continue
        if body.rsplit(".", 1)[0] not in segs:
            out.append("/" + entry[4:])
    return out


def clean(instance: str | None = None, everything: bool = False,
          skipped: list | None = None) -> list[str]:
    """Unlink stale segments (creator gone) and orphan semaphores; returns the names removed.

    A segment whose creator is alive is kept, and appended to ``skipped`` (when given) as
    ``(name, creator pid)``. ``everything`` unlinks those too: only for the owner of
    ``instance`` taking down what it made (the supervisor at shutdown, a benchmark, a test
    fixture once its processes stopped), never for an operator command; it needs an
    instance.
    """
    if everything and instance is None:
        raise ValueError("clean(everything=True) takes one instance, not all of them")
    removed = []
    for s in list_segments(instance):
        if everything or s.stale:
            unlink(s.instance, s.name)
            removed.append(f"/{PREFIX}.{s.instance}.{s.name}")
        elif skipped is not None:
            skipped.append((f"{PREFIX}.{s.instance}.{s.name}", s.header.creator_pid))
    for sem in orphan_semaphores(instance):
        try:
            posix_ipc.unlink_semaphore(sem)
            removed.append(sem)
        except posix_ipc.ExistentialError:
            pass
    return removed
