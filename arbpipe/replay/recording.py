"""Record market data off the feed rings into a file, and replay a file into feed rings.

File format: ``shm_layouts.recording`` (a small header with the venue and instrument names,
then raw 64-byte MarketUpdate records that numpy maps directly).

Recording (``Recorder``, ``arbpipe record``) taps every ``feed.<venue>`` ring of an
instance the way ``arbpipe tap`` does (``ring_kernels.peek``): it never consumes and never
slows the producer or the detector. It starts at each ring's head (records published
from then on) and appends what it reads in ring order, to a new file or to the end of an
existing recording of the same venues and instruments. If it falls more than a ring's
capacity behind (it polls every millisecond, so a 65536-record ring gives it ~65 ms at
1M updates/s), the records it could not read are counted in ``missed`` (in the header).

Replay (``Replayer``, ``arbpipe replay``) publishes the records into ``feed.<venue name>``
(names from the file's header) as the venues' feed handlers would: each record keeps
every byte except ``recv_ts_ns`` (its publish time, one clock read per step),
``exchange_ts_ns`` (shifted by the same amount; 0 stays 0) and ``flags`` (| REPLAYED).
Pacing, from one absolute schedule (no drift): ``speed`` (1.0 = the recorded gaps
between recv timestamps, 10.0 = ten times faster, inf = as fast as the rings take them)
or ``rate`` (records/s, evenly spaced). Records are replayed in recv_ts order (stable,
so equal stamps keep file order). A full ring drops the records and counts them
(``on_full="drop"``, what a live feed does) or waits for space (``"wait"``, the default
at speed max). An SPSC ring has one producer: replay into rings whose feed handlers
are stopped (or that replay creates, ``create=True``). ``seq="continue"`` renumbers each
ring's records 1, 2, 3, ... continuing from what the ring already holds
(``ring_seq_start``), so a restarted sole producer never starts a ring over at seq 1;
the default keeps the recorded seq numbers.

In the tree (``arbpipe up --replay FILE [--rate R | --speed S] [--loop]``) one replay
process (``procs.replay``) is the producer of every ``feed.<venue>`` ring in place of the
simulator and the feed handlers; ``check_against_config`` refuses a file whose venues or
instrument ids the config does not have, and ``tree_source_args`` checks the options.

Reproducibility: ``detect(recording, cfg)`` runs the detector kernel over the file in
file order; the same file gives the same opportunities (ids, prices, sizes, states)
every time. Replayed into a running detector the same holds up to the interleaving of
the rings, which depends on timing.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
from numba import njit

from arbpipe.transport import ring_kernels as K
from arbpipe.transport import segments
from arbpipe.transport.atomics import load_acquire
from shm_layouts import MARKET_UPDATE, OPPORTUNITY, Flag
from shm_layouts import recording as R
from shm_layouts.ring import W_DROPPED, W_HEAD

_KW = dict(cache=True, nogil=True, boundscheck=False)
_LOW = 0xFFFFFFFF
RW = 8                        # int64 words per MarketUpdate
W_EXCH, W_RECV, W_SEQ = 5, 6, 7   # word index of exchange_ts_ns / recv_ts_ns / seq
_REPLAYED_BITS = int(Flag.REPLAYED) << 56   # flags is byte 7 of word 0


@njit(inline="always", **_KW)
def restamp(dst, d, src, o, now, flag_bits):
    """Copy the record at word ``o`` of ``src`` to word ``d`` of ``dst`` as if received at
    ``now``: recv_ts = now, exchange_ts moved by the same amount (0 stays 0), ``flag_bits``
    or-ed into word 0. Word 7 (seq) is left to the caller."""
    recv = src[o + W_RECV]
    exch = src[o + W_EXCH]
    dst[d] = src[o] | flag_bits
    dst[d + 1] = src[o + 1]
    dst[d + 2] = src[o + 2]
    dst[d + 3] = src[o + 3]
    dst[d + 4] = src[o + 4]
    dst[d + W_EXCH] = exch + (now - recv) if exch != 0 else 0
    dst[d + W_RECV] = now


class RecordingError(ValueError):
    """A file that is not a recording this version can read (the message says why)."""


# ------------------------------------------------------------------ file ------

def names_from_config(cfg, rings=None, source: str = "") -> dict:
    """The names document of a recording made with ``cfg`` (venue ids, canonical ids)."""
    from arbpipe.config import PERP_ID_BIT
    venues = {str(cfg.venue_id(v)): v for v in cfg.enabled_venues()}
    insts = {str(i): name for name, i in cfg.instrument_ids().items()}
    return {"venues": venues, "instruments": insts, "perp_id_bit": int(PERP_ID_BIT),
            "rings": list(rings or []), "source": source}


class RecordingWriter:
    """Appends MarketUpdate records to a recording file; ``close`` completes the header.
    ``append``: continue an existing recording (same venue and instrument names) instead
    of starting a new file."""

    def __init__(self, path: str, names: dict, append: bool = False):
        if append and os.path.exists(path) and os.path.getsize(path) > 0:
            self._reopen(path, names)
            return
        blob = json.dumps(names, separators=(",", ":")).encode()
        self.header_size = R.header_size_for(len(blob))
        self.path = path
        self.f = open(path, "wb")
        self.hdr = np.zeros(1, R.RECORDING_HEADER)
        h = self.hdr[0]
        h["magic"] = R.RECORDING_MAGIC
        h["layout_version"] = R.RECORDING_VERSION
        h["record_size"] = R.RECORD_SIZE
        h["header_size"] = self.header_size
        h["names_size"] = len(blob)
        h["created_ns"] = time.time_ns()
        head = bytearray(self.header_size)
        head[:R.NAMES_OFFSET] = self.hdr.tobytes()
        head[R.NAMES_OFFSET:R.NAMES_OFFSET + len(blob)] = blob
        self.f.write(head)
        self.records = 0
        self.missed = 0
        self.first = 0
        self.last = 0

    def _reopen(self, path: str, names: dict) -> None:
        old = Recording(path)
        for key in ("venues", "instruments"):
            if old.names.get(key) != names.get(key):
                raise RecordingError(f"{path}: recorded with other {key} names; record into a "
                                     f"new file")
        self.path = path
        self.header_size = old.header["header_size"]
        self.hdr = np.fromfile(path, R.RECORDING_HEADER, count=1)
        self.records, self.missed = old.count, old.header["missed"]
        self.first, self.last = old.header["first_recv_ns"], old.header["last_recv_ns"]
        if self.records and not self.first:     # never closed: take them from the records
            recv = np.asarray(old.records["recv_ts_ns"])
            self.first, self.last = int(recv.min()), int(recv.max())
        del old
        self.f = open(path, "r+b")
        self.f.truncate(self.header_size + self.records * R.RECORD_SIZE)  # a torn last record
        self.f.seek(0, os.SEEK_END)

    def append_words(self, words: np.ndarray, n: int) -> None:
        """Append n records given as flat int64 words."""
        if n <= 0:
            return
        w = words[:n * RW]
        recv = w[W_RECV::RW]
        lo, hi = int(recv.min()), int(recv.max())
        self.first = lo if self.records == 0 or lo < self.first else self.first
        self.last = hi if hi > self.last else self.last
        self.f.write(memoryview(np.ascontiguousarray(w)).cast("B"))
        self.records += n

    def append(self, recs: np.ndarray) -> None:
        """Append a MARKET_UPDATE array."""
        recs = np.ascontiguousarray(recs)
        if recs.dtype.itemsize != R.RECORD_SIZE:
            raise ValueError(f"records must be {R.RECORD_SIZE} bytes, got {recs.dtype.itemsize}")
        self.append_words(recs.reshape(-1).view(np.int64), len(recs))

    def close(self) -> None:
        if self.f is None:
            return
        h = self.hdr[0]
        h["records"] = self.records
        h["first_recv_ns"] = self.first
        h["last_recv_ns"] = self.last
        h["missed"] = self.missed
        self.f.flush()
        self.f.seek(0)
        self.f.write(self.hdr.tobytes())
        self.f.close()
        self.f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_recording(path: str, records: np.ndarray, names: dict) -> None:
    """Write a whole MARKET_UPDATE array as a recording."""
    with RecordingWriter(path, names) as w:
        w.append(records)


class Recording:
    """An open recording: ``header`` (dict), ``names`` (dict), ``records`` (read-only
    memmap of MARKET_UPDATE; a trailing partial record of a crashed recorder is ignored)."""

    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        if size < R.NAMES_OFFSET:
            raise RecordingError(f"{path}: {size} bytes is too short for a recording header")
        hdr = np.fromfile(path, R.RECORDING_HEADER, count=1)[0]
        if bytes(hdr["magic"]) != R.RECORDING_MAGIC.rstrip(b"\0"):
            raise RecordingError(f"{path}: not an arbpipe recording "
                                 f"(magic {bytes(hdr['magic'])!r})")
        if int(hdr["layout_version"]) != R.RECORDING_VERSION:
            raise RecordingError(f"{path}: recording layout version {int(hdr['layout_version'])}, "
                                 f"this arbpipe reads {R.RECORDING_VERSION}")
        if int(hdr["record_size"]) != MARKET_UPDATE.itemsize:
            raise RecordingError(f"{path}: record size {int(hdr['record_size'])}, expected "
                                 f"{MARKET_UPDATE.itemsize}")
        hs, ns = int(hdr["header_size"]), int(hdr["names_size"])
        if hs % 64 or hs < R.MIN_HEADER_SIZE or R.NAMES_OFFSET + ns > hs or hs > size:
            raise RecordingError(f"{path}: corrupt header (header_size {hs}, names_size {ns})")
        self.header = {k: (bytes(hdr[k]) if k == "magic" else int(hdr[k]))
                       for k in R.RECORDING_HEADER.names}
        with open(path, "rb") as f:
            f.seek(R.NAMES_OFFSET)
            try:
                self.names = json.loads(f.read(ns).decode())
            except ValueError as e:
                raise RecordingError(f"{path}: names document unreadable: {e}") from None
        n = (size - hs) // MARKET_UPDATE.itemsize
        declared = self.header["records"]
        if declared and declared < n:
            n = declared
        self.count = n
        self.records = (np.memmap(path, MARKET_UPDATE, mode="r", offset=hs, shape=(n,))
                        if n else np.zeros(0, MARKET_UPDATE))

    def __len__(self) -> int:
        return self.count

    def venue_name(self, venue_id: int) -> str | None:
        return self.names.get("venues", {}).get(str(int(venue_id)))

    def words(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Records [start, stop) as flat int64 words (a read-only view of the file)."""
        return np.ascontiguousarray(self.records[start:stop]).reshape(-1).view(np.int64)

    def summary(self) -> dict:
        recs = self.records
        span = (self.header["last_recv_ns"] - self.header["first_recv_ns"]) if self.count else 0
        per_venue = {}
        if self.count:
            ids, counts = np.unique(np.asarray(recs["venue_id"]), return_counts=True)
            per_venue = {(self.venue_name(i) or str(int(i))): int(c) for i, c in zip(ids, counts)}
        return {"path": self.path, "records": self.count, "span_s": span / 1e9,
                "missed": self.header["missed"], "per_venue": per_venue,
                "instruments": len(self.names.get("instruments", {}))}


def open_recording(path: str) -> Recording:
    return Recording(path)


# ---------------------------------------------------------------- recorder ----

def feed_rings(instance: str) -> list[str]:
    """Names of the MarketUpdate SPSC rings ``feed.*`` of an instance."""
    from shm_layouts import RECORD_TYPE_IDS
    from shm_layouts.ring import RingKind
    out = []
    for s in segments.list_segments(instance):
        h = s.header
        if (s.name.startswith("feed.") and h is not None and h.kind == int(RingKind.SPSC)
                and h.record_type == RECORD_TYPE_IDS["MarketUpdate"]):
            out.append(s.name)
    return out


class Recorder:
    """Taps rings (default: every ``feed.*`` ring of ``instance``) into a recording file.

    ``poll()`` appends what is new since the last poll (never waits); ``run()`` polls
    until ``stop()``, ``duration`` or ``count``, sleeping ``idle_s`` when nothing is new.
    """

    def __init__(self, path: str, instance: str | None = None, rings: list[str] | None = None,
                 cfg=None, batch: int = 4096, append: bool = False):
        from arbpipe.transport.rings import attach_any
        self.instance = instance or segments.default_instance()
        names = list(rings) if rings else feed_rings(self.instance)
        if not names:
            raise segments.SegmentNotFound(f"no feed.* rings in instance {self.instance!r} "
                                           f"(is the pipeline up?)")
        self.rings = []
        try:
            for n in names:
                r = attach_any(n, instance=self.instance)
                if r.record_size != MARKET_UPDATE.itemsize:
                    raise segments.SegmentError(f"ring {n!r} holds {r.record_size}-byte records, "
                                                f"not MarketUpdate")
                self.rings.append(r)
        except Exception:
            for r in self.rings:
                r.close()
            raise
        if cfg is None:
            from arbpipe.config import load_config
            cfg = load_config()
        try:
            self.writer = RecordingWriter(path, names_from_config(
                cfg, names, source=f"arbpipe record, instance {self.instance}"), append)
        except Exception:
            for r in self.rings:
                r.close()
            raise
        self.pos = [int(K.head_of(r.w)) for r in self.rings]
        self.kinds = [int(r.KIND) for r in self.rings]
        self.batch = batch
        self.buf = np.zeros(batch * RW, np.int64)
        self.out = np.zeros(3, np.int64)

    @property
    def records(self) -> int:
        return self.writer.records

    @property
    def missed(self) -> int:
        return self.writer.missed

    def poll(self, limit: int | None = None) -> int:
        """Append every record published since the last poll (up to ``limit``)."""
        got = 0
        w = self.writer
        for i, r in enumerate(self.rings):
            while limit is None or got < limit:
                m = self.batch if limit is None else min(self.batch, limit - got)
                K.peek(r.w, self.kinds[i], self.pos[i], self.buf, m, self.out)
                start, k, nxt = int(self.out[0]), int(self.out[1]), int(self.out[2])
                if start > self.pos[i]:
                    w.missed += start - self.pos[i]
                self.pos[i] = max(nxt, self.pos[i]) if k else max(start, self.pos[i])
                if k == 0:
                    break
                w.append_words(self.buf, k)
                got += k
                if k < m:
                    break
        return got

    def run(self, stop=lambda: False, duration: float | None = None, count: int | None = None,
            idle_s: float = 0.001) -> dict:
        t0 = time.monotonic()
        idle_since = None
        why = "stopped"
        while not stop():
            left = None if count is None else count - self.records
            if left is not None and left <= 0:
                why = "count"
                break
            if duration is not None and time.monotonic() - t0 >= duration:
                why = "duration"
                break
            if self.poll(left) == 0:
                now = time.monotonic()
                idle_since = idle_since or now
                if now - idle_since > 1.0:      # quiet for a second: are the rings still there?
                    idle_since = now
                    if all(segments.probe(self.instance, r.name) is None for r in self.rings):
                        why = "rings removed (the pipeline stopped)"
                        break
                time.sleep(idle_s)
            else:
                idle_since = None
        return {"records": self.records, "missed": self.missed,
                "seconds": time.monotonic() - t0, "why": why}

    def close(self) -> None:
        try:
            self.poll()
        finally:
            self.writer.close()
            for r in self.rings:
                r.close()
            self.rings = []


# ---------------------------------------------------------------- replayer ----

# io words of the replay kernel
IO_PUSHED, IO_DROPPED, IO_WAKE, IO_FULL, IO_SKIPPED = range(5)
MODE_MAX, MODE_RATE, MODE_SPEED = 0, 1, 2


@njit(**_KW)
def _flush_ring(rings, sts, stage, cnt, r, drop, io):
    n = cnt[r]
    if n == 0:
        return True
    res = K.spsc_push(rings[r], stage[r], n, sts[r])
    k = res & _LOW
    if (res >> 32) != 0:
        io[IO_WAKE] |= 1 << r
    io[IO_PUSHED] += k
    if k == n:
        cnt[r] = 0
        return True
    if drop:
        io[IO_DROPPED] += n - k
        cnt[r] = 0
        return True
    row = stage[r]
    for j in range((n - k) * 8):
        row[j] = row[k * 8 + j]
    cnt[r] = n - k
    io[IO_FULL] = 1
    return False


@njit(**_KW)
def ring_seq_start(w):
    """The last seq number used in SPSC ring ``w`` by a producer that numbers every record
    it offers (1, 2, 3, ... per ring): max(seq of the newest committed record, published +
    dropped). A restarted producer continues at this + 1, so the ring's seq numbers keep
    rising with gaps only where records were refused, never a restart at 1."""
    cap, rw, data_w, _ = K.geometry(w)
    head = load_acquire(w, W_HEAD)
    last = 0
    if head > 0:
        last = w[data_w + ((head - 1) & (cap - 1)) * rw + W_SEQ]
    n = head + load_acquire(w, W_DROPPED)
    return last if last > n else n


@njit(**_KW)
def replay_step(rings, sts, stage, cnt, words, order, ring_of, rel, span, pos, total, mode,
                t0, period, speed, now, max_step, drop, io, seqs, reseq):
    """Publish the records due at ``now`` from global position ``pos`` (record
    ``order[pos % n]`` of loop ``pos // n``); returns the new position.

    mode MAX: everything (up to ``max_step`` records); RATE: position p is due at
    t0 + p * period; SPEED: at t0 + (loop * span + rel[idx]) / speed. Each record is
    staged per ring (``ring_of[idx]``, < 0: skipped) with recv_ts = now, exchange_ts
    shifted alike, REPLAYED set; rings are pushed when their stage fills and at the end.
    ``drop`` False: a full ring keeps the rest staged, io[IO_FULL] = 1 and the step ends.
    ``reseq``: seq = ++seqs[ring] (numbered as staged, so a refused record leaves a gap of
    one, as a feed handler's do); else the recorded seq is kept.
    """
    n = order.shape[0]
    batch = stage.shape[1] // 8
    nr = cnt.shape[0]
    end = total
    if mode == MODE_RATE:
        due = (now - t0) // period + 1
        if due < end:
            end = due
    if end - pos > max_step:
        end = pos + max_step
    p = pos
    while p < end:
        loop = p // n
        idx = order[p - loop * n]
        if mode == MODE_SPEED:
            if t0 + (loop * span + rel[idx]) / speed > now:
                break
        r = ring_of[idx]
        if r < 0:
            io[IO_SKIPPED] += 1
            p += 1
            continue
        c = cnt[r]
        if c == batch:
            if not _flush_ring(rings, sts, stage, cnt, r, drop, io):
                return p
            c = cnt[r]
        o = idx * 8
        d = c * 8
        row = stage[r]
        restamp(row, d, words, o, now, _REPLAYED_BITS)
        if reseq:
            s = seqs[r] + 1
            seqs[r] = s
            row[d + 7] = s
        else:
            row[d + 7] = words[o + 7]
        cnt[r] = c + 1
        p += 1
    for r in range(nr):
        if not _flush_ring(rings, sts, stage, cnt, r, drop, io):
            return p
    return p


def parse_speed(text) -> float:
    """'1x', '10x', '2.5', 'max' -> a float (inf for max)."""
    t = str(text).strip().lower()
    if t in ("max", "inf", "0"):
        return float("inf")
    try:
        v = float(t[:-1] if t.endswith("x") else t)
    except ValueError:
        raise ValueError(f"speed {text!r}: use e.g. 1x, 10x or max") from None
    if not v > 0:
        raise ValueError(f"speed {text!r} must be > 0")
    return v


class Replayer:
    """Publishes a recording into the ``feed.<venue>`` rings of ``instance``.

    speed: 1.0 real time, 10.0 ten times faster, inf as fast as possible; or ``rate``
    (records/s, overrides speed). ``loop``: start over at the end (timestamps keep
    moving forward). ``on_full``: "drop" (count, like a live feed) or "wait"; default
    "wait" at speed max, else "drop". ``create``: create missing rings (capacity,
    drop policy) and unlink them at ``close``. ``tick_s``: sleep at least this long between
    steps (fewer wake-ups; records due meanwhile go out together, stamped when sent).
    ``seq``: "keep" the recorded seq numbers, or "continue" each ring's own numbering
    (``ring_seq_start``: what a restarted sole producer of the ring needs).
    """

    def __init__(self, recording: Recording | str, instance: str | None = None,
                 speed: float = 1.0, rate: float | None = None, loop: bool = False,
                 on_full: str | None = None, create: bool = False, capacity: int = 65536,
                 batch: int = 256, max_step: int = 65536, tick_s: float = 0.0,
                 seq: str = "keep"):
        from numba.typed import List

        from arbpipe.transport.rings import SpscRing
        self.rec = recording if isinstance(recording, Recording) else Recording(recording)
        if len(self.rec) == 0:
            raise RecordingError(f"{self.rec.path}: no records")
        self.instance = instance or segments.default_instance()
        self.speed, self.rate, self.loop = float(speed), rate, loop
        if on_full is None:
            on_full = "wait" if (rate is None and speed == float("inf")) else "drop"
        if on_full not in ("drop", "wait"):
            raise ValueError(f"on_full {on_full!r}: use 'drop' or 'wait'")
        self.drop = on_full == "drop"
        if seq not in ("keep", "continue"):
            raise ValueError(f"seq {seq!r}: use 'keep' or 'continue'")
        self.reseq = seq == "continue"
        recs = self.rec.records
        self.words = self.rec.words()
        vids = np.asarray(recs["venue_id"]).astype(np.int64)
        uniq = [int(v) for v in np.unique(vids)]
        self.rings, self.ring_names, self.created = [], [], []
        ring_index = {}
        try:
            for v in uniq:
                vname = self.rec.venue_name(v)
                if vname is None:
                    continue
                name = f"feed.{vname}"
                live = segments.probe(self.instance, name + ".stats")
                if live is not None and not live.stale:
                    raise segments.SegmentError(
                        f"ring {name!r} has a live feed handler (pid {live.creator_pid}); an "
                        f"SPSC ring has one producer: stop the feed first")
                try:
                    r = SpscRing.attach(name, self.instance, record="MarketUpdate")
                except segments.SegmentNotFound:
                    if not create:
                        raise segments.SegmentNotFound(
                            f"ring {name!r} not found in instance {self.instance!r} (start the "
                            f"pipeline with its feeds stopped, or replay --create)") from None
                    r = SpscRing.create(name, capacity, "MarketUpdate", policy="drop",
                                        instance=self.instance)
                    self.created.append(name)
                ring_index[v] = len(self.rings)
                self.rings.append(r)
                self.ring_names.append(name)
        except Exception:
            self._close_rings()
            raise
        if len(self.rings) > 62:
            raise ValueError("at most 62 rings")
        lut = np.full(max(uniq) + 1, -1, np.int64)
        for v, i in ring_index.items():
            lut[v] = i
        self.ring_of = lut[vids]
        recv = np.asarray(recs["recv_ts_ns"]).astype(np.int64)
        self.order = np.argsort(recv, kind="stable").astype(np.int64)
        r0 = int(recv.min())
        self.rel = (recv - r0).astype(np.float64)
        self.span = float(recv.max() - r0) + 1.0   # one loop's length, ns of recorded time
        if self.span < 2.0 and len(recv) > 1:
            self.span = float(len(recv))
        self.lst = List()
        for r in self.rings:
            self.lst.append(r.w)
        nr = max(len(self.rings), 1)
        self.sts = np.zeros((nr, 4), np.int64)
        self.stage = np.zeros((nr, batch * RW), np.int64)
        self.cnt = np.zeros(nr, np.int64)
        self.io = np.zeros(8, np.int64)
        self.seqs = np.zeros(nr, np.int64)     # last seq used per ring (seq="continue")
        if self.reseq:
            for i, r in enumerate(self.rings):
                self.seqs[i] = ring_seq_start(r.w)
        self.max_step = max_step
        self.tick_ns = int(tick_s * 1e9)
        self.pos = 0

    def _close_rings(self):
        for r in self.rings:
            r.close()
        for name in self.created:
            segments.unlink(self.instance, name)
        self.rings, self.created = [], []

    def warm_up(self) -> None:
        """Load the kernel (numba cache) without publishing anything."""
        io = np.zeros(8, np.int64)
        replay_step(self.lst, self.sts, self.stage, self.cnt, self.words, self.order,
                    self.ring_of, self.rel, self.span, 0, 0, MODE_MAX, 0, 1, 1.0, 0, 0,
                    self.drop, io, self.seqs, self.reseq)

    def run(self, stop=lambda: False, duration: float | None = None, progress=None,
            start: int = 0, progress_s: float = 0.2) -> dict:
        """Replay until the end (or forever with ``loop``), ``duration`` s, or ``stop()``.
        ``start``: the global position to begin at (record ``order[start % n]`` of loop
        ``start // n``; the pacing schedule is shifted so that it is due now).
        ``progress(position, published)`` is called every ``progress_s`` s.
        Returns {"published", "dropped", "skipped", "seconds", "rate", "loops",
        "position"}."""
        import ctypes
        try:  # 1 us timer slack: the pacing sleeps wake close to their deadline
            ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        n = len(self.order)
        total = (1 << 62) if self.loop else n
        if self.rate:
            mode, period = MODE_RATE, max(int(round(1e9 / self.rate)), 1)
        elif self.speed == float("inf"):
            mode, period = MODE_MAX, 1
        else:
            mode, period = MODE_SPEED, 1
        io = self.io
        io[:] = 0
        t_start = time.time_ns()
        t0 = t_start + 1000
        pos = max(int(start), 0)
        if pos and mode == MODE_RATE:
            t0 -= pos * period
        elif pos and mode == MODE_SPEED:
            lp = pos // n
            t0 -= int((lp * self.span + self.rel[self.order[pos - lp * n]]) / self.speed)
        deadline = None if duration is None else time.monotonic() + duration
        last_progress = 0.0
        lst, sts, stage, cnt, words = self.lst, self.sts, self.stage, self.cnt, self.words
        order, ring_of, rel, span, speed = self.order, self.ring_of, self.rel, self.span, self.speed
        while not stop():
            now = time.time_ns()
            if deadline is not None and time.monotonic() >= deadline:
                break
            pos = replay_step(lst, sts, stage, cnt, words, order, ring_of, rel, span, pos,
                              total, mode, t0, period, speed, now, self.max_step, self.drop, io,
                              self.seqs, self.reseq)
            if io[IO_WAKE]:
                m = int(io[IO_WAKE])
                io[IO_WAKE] = 0
                for r in range(len(self.rings)):
                    if m >> r & 1:
                        self.rings[r].wake_consumer()
            if progress is not None and time.monotonic() - last_progress > progress_s:
                last_progress = time.monotonic()
                progress(pos, int(io[IO_PUSHED]))
            if io[IO_FULL]:
                io[IO_FULL] = 0
                for r in self.rings:
                    r.wake_consumer()
                time.sleep(20e-6)
                continue
            if pos >= total and not cnt.any():
                break
            if mode == MODE_MAX:
                continue
            if mode == MODE_RATE:
                nxt = t0 + pos * period
            else:
                loop = pos // n
                nxt = t0 + int((loop * span + rel[order[pos - loop * n]]) / speed)
            wait = nxt - time.time_ns()
            if wait > 0:
                time.sleep(max(wait, self.tick_ns) / 1e9)
        self.pos = pos
        secs = (time.time_ns() - t_start) / 1e9
        pub = int(io[IO_PUSHED])
        return {"published": pub, "dropped": int(io[IO_DROPPED]), "skipped": int(io[IO_SKIPPED]),
                "seconds": secs, "rate": pub / secs if secs > 0 else 0.0,
                "loops": pos // n if n else 0, "position": pos, "rings": list(self.ring_names)}

    def close(self) -> None:
        self._close_rings()


# ---------------------------------------------------------------- detection ---

def detect(recording: Recording | str, cfg=None, chunk: int = 65536) -> np.ndarray:
    """Opportunities the detector kernel produces from the file's records in file order
    (collect mode, opp ids from 1): the same file gives the same opportunities."""
    from arbpipe.config import load_config
    from arbpipe.detect.detector import Detector
    rec = recording if isinstance(recording, Recording) else Recording(recording)
    det = Detector(cfg or load_config())
    parts = []
    for a in range(0, len(rec), chunk):
        parts.append(det.process(rec.words(a, a + chunk)))
    return np.concatenate(parts) if parts else np.zeros(0, OPPORTUNITY)


# ------------------------------------------------------------ supervised ------

def tree_source_args(path: str, rate=None, speed=None, loop: bool = False) -> list[str]:
    """Check the options of ``arbpipe up --replay`` and return them as the replay
    process's arguments (``procs.replay``). ValueError names the offending option."""
    if rate is not None and speed is not None:
        raise ValueError("--rate and --speed: give one of them")
    if rate is not None and not float(rate) > 0:
        raise ValueError(f"--rate {rate}: must be > 0 (records/s)")
    if speed is not None:
        try:
            parse_speed(speed)
        except ValueError as e:
            raise ValueError(f"--speed: {e}") from None
    args = [os.path.abspath(path)]
    if rate is not None:
        args += ["--rate", repr(float(rate))]
    if speed is not None:
        args += ["--speed", str(speed)]
    return args + (["--loop"] if loop else [])


def check_against_config(recording: Recording | str, cfg) -> Recording:
    """A recording the tree of ``cfg`` can be fed with: records present, every venue of
    the file an enabled venue of the config (its ``feed.<venue>`` ring exists) and every
    instrument id naming the same instrument. RecordingError names the offender."""
    rec = recording if isinstance(recording, Recording) else Recording(recording)
    if len(rec) == 0:
        raise RecordingError(f"{rec.path}: no records")
    venues = set(cfg.enabled_venues())
    ids = np.unique(np.asarray(rec.records["venue_id"]))
    for v in ids:
        name = rec.venue_name(v)
        if name is None:
            raise RecordingError(f"{rec.path}: venue id {int(v)} has no name in the file's "
                                 f"names document")
        if name not in venues:
            raise RecordingError(f"{rec.path}: venue {name!r} is not an enabled venue of the "
                                 f"config (venues.{name})")
    cfg_insts = {str(i): n for n, i in cfg.instrument_ids().items()}
    for i, name in rec.names.get("instruments", {}).items():
        if i in cfg_insts and cfg_insts[i] != name:
            raise RecordingError(f"{rec.path}: instrument id {i} is {name!r} in the file but "
                                 f"{cfg_insts[i]!r} in the config (instruments)")
    return rec


# ---------------------------------------------------------------- commands ----

def _split(items) -> list[str]:
    out = []
    for it in items or []:
        out += [x.strip() for x in str(it).split(",") if x.strip()]
    return out


def _stop_flag():
    """A stop() that turns true on SIGTERM / SIGINT (KeyboardInterrupt is not raised)."""
    import signal
    flag = []

    def on(signum, frame):
        flag.append(signum)
    signal.signal(signal.SIGTERM, on)
    signal.signal(signal.SIGINT, on)
    return lambda: bool(flag)


def record_command(out: str, rings=None, duration=None, count=None, config=None,
                   instance=None, echo=print) -> int:
    """``arbpipe record``: tap the rings into ``out`` until Ctrl-C / duration / count."""
    from arbpipe.config import ConfigError, load_config
    try:
        cfg = load_config(config)
    except ConfigError as e:
        echo(f"arbpipe record: bad config: {e}")
        return 2
    try:
        rec = Recorder(out, instance, _split(rings) or None, cfg, append=True)
    except RecordingError as e:
        echo(f"arbpipe record: {e}")
        return 2
    except segments.SegmentError as e:
        echo(f"arbpipe record: {e}")
        return 1
    except OSError as e:
        echo(f"arbpipe record: {out}: {e}")
        return 1
    stop = _stop_flag()
    had = rec.records
    echo(f"recording {', '.join(r.name for r in rec.rings)} of instance {rec.instance!r} "
         f"into {out}" + (f" (appending to its {had:,} records)" if had else "")
         + " (Ctrl-C stops)")
    try:
        res = rec.run(stop=stop, duration=duration, count=count)
    finally:
        rec.close()
    if res["why"].startswith("rings removed"):
        echo(f"arbpipe record: {res['why']}")
    echo(f"recorded {rec.records - had:,} records in {res['seconds']:.1f} s"
         + (f"; {rec.missed:,} went by while the recorder lagged (not in the file)"
            if rec.missed else ""))
    return 0


def replay_command(path: str, speed: str = "1x", rate=None, loop=False, duration=None,
                   create=False, on_full=None, instance=None, echo=print) -> int:
    """``arbpipe replay``: publish a recording into the feed rings."""
    try:
        sp = parse_speed(speed)
        if rate is not None and not rate > 0:
            raise ValueError(f"rate {rate} must be > 0")
        if on_full not in (None, "drop", "wait"):
            raise ValueError(f"--on-full {on_full!r}: use drop or wait")
    except ValueError as e:
        echo(f"arbpipe replay: {e}")
        return 2
    try:
        rp = Replayer(path, instance, speed=sp, rate=rate, loop=loop, on_full=on_full,
                      create=create)
    except (RecordingError, OSError) as e:
        echo(f"arbpipe replay: {e}")
        return 1 if isinstance(e, OSError) else 2
    except segments.SegmentError as e:
        echo(f"arbpipe replay: {e}")
        return 1
    stop = _stop_flag()
    how = f"{rate:,.0f} records/s" if rate else ("max speed" if sp == float("inf") else f"{sp:g}x")
    echo(f"replaying {len(rp.rec):,} records from {path} into {', '.join(rp.ring_names)} "
         f"(instance {rp.instance!r}) at {how}{', looping' if loop else ''}")
    try:
        rp.warm_up()
        res = rp.run(stop=stop, duration=duration)
        if rp.created:   # let the consumer drain what we created before unlinking it
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and any(
                    r.stats()["fill"] for r in rp.rings):
                time.sleep(0.02)
    finally:
        rp.close()
    echo(f"published {res['published']:,} records in {res['seconds']:.2f} s "
         f"({res['rate']:,.0f}/s), dropped {res['dropped']:,}"
         + (f", skipped {res['skipped']:,} (venue not in the file's names)"
            if res["skipped"] else ""))
    return 0
