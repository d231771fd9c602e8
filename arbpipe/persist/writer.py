"""Buffered, pipelined Redis Streams writing, and what happens when Redis is down or slow.

``RecordBuffer``: a bounded FIFO per stream between the ring reader and the writer thread
(``redis.buffer_records`` records). What does not fit a full buffer is dropped and
counted (newest first, as the rings' drop policy); nothing is dropped while the backlog
stays under the bound.

``RedisWriter`` (its own thread) sends pipelined batches of ``redis.batch`` XADDs, packed
as RESP text (``XaddPacker``), streams capped with ``MAXLEN ~ redis.stream_maxlen``, plus
the pending top-of-book hash. A failed or timed-out round trip leaves its records in the
buffer; the writer reconnects with backoff (0.1 s doubling to 5 s) and resends. Entry ids
are assigned here (``<ms>-<seq>``, above the stream's last id, ``IdGen``) and kept across
resends, so a batch that did reach a server that then stalled is not written twice: Redis
refuses the repeated id and it is counted as ``already_written``. One writer writes a
given prefix. URLs and error texts are redacted (``arbpipe.redact``) before they are
logged or kept.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from redis.exceptions import ResponseError

from arbpipe.redact import redact_url, scrub
from arbpipe.redis_conn import IO_TIMEOUT_S, connect

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0
IDLE_S = 0.25                 # idle writer: wakes at least this often
WRITE_ORDER = ("events", "trades", "opportunities")   # the order a batch takes streams in
TRANSIENT = ("OOM", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY",
             "NOAUTH", "WRONGPASS", "NOPERM")
DUPLICATE = "equal or smaller than the target stream top item"


class RecordBuffer:
    """Bounded FIFO of records between the ring reader and the Redis writer.

    ``put`` (reader thread) appends what fits and counts the rest as ``dropped``
    (newest first). ``take`` (writer thread) copies the oldest records without removing
    them; ``done`` removes them once Redis has them. Each record keeps the stream id the
    writer gave it on its first send (``ids``), so a resend repeats the same id.
    Fixed-size records live in a numpy array (``dtype``); ``dtype=None`` holds objects.
    """

    def __init__(self, dtype, capacity: int):
        self.capacity = int(capacity)
        self.data = np.zeros(self.capacity, dtype) if dtype is not None else \
            np.empty(self.capacity, object)
        self.ids = np.zeros((self.capacity, 2), np.int64)   # (ms, seq); ms 0 = unassigned
        self.head = self.tail = 0                           # absolute counts
        self.accepted = self.dropped = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.head - self.tail

    def put(self, recs) -> int:
        """Append ``recs`` (array or list); returns how many fit (the rest: dropped)."""
        n = len(recs)
        with self._lock:
            k = min(n, self.capacity - (self.head - self.tail))
            h = self.head
        if k:
            idx = (h + np.arange(k)) % self.capacity
            if self.data.dtype == object:
                for j, i in enumerate(idx):
                    self.data[i] = recs[j]
            else:
                self.data[idx] = recs[:k]
            self.ids[idx] = 0
        with self._lock:
            self.head += k
            self.accepted += k
            self.dropped += n - k
        return k

    def take(self, n: int):
        """(start, records, ids view indices) of the oldest up to ``n`` records."""
        with self._lock:
            t, k = self.tail, min(n, self.head - self.tail)
        idx = (t + np.arange(k)) % self.capacity
        return t, self.data[idx], idx

    def done(self, start: int, n: int) -> None:
        with self._lock:
            assert start == self.tail, (start, self.tail)
            self.tail += n


class IdGen:
    """Stream ids ``<ms>-<seq>`` strictly above the last one handed out or seen."""

    def __init__(self):
        self.ms = 0
        self.seq = 0

    def seen(self, stream_id: str | None) -> None:
        if not stream_id:
            return
        ms, _, seq = str(stream_id).partition("-")
        ms, seq = int(ms), int(seq or 0)
        if (ms, seq) > (self.ms, self.seq):
            self.ms, self.seq = ms, seq

    def next(self, now_ms: int) -> tuple[int, int]:
        if now_ms > self.ms:
            self.ms, self.seq = now_ms, 0
        else:
            self.seq += 1
        return self.ms, self.seq


class RedisWriter:
    """Moves buffered records to Redis from its own thread (see the module docstring).

    Counters (read by any thread): ``written[stream]``, ``already_written``, ``rejected``,
    ``reconnects``, ``outages``, ``batches``, ``connected``, ``last_error`` (redacted).
    """

    def __init__(self, url: str, prefix: str, buffers: dict, rows: dict, batch: int = 512,
                 maxlen: int = 100_000, log=print, timeout: float = IO_TIMEOUT_S):
        self.url = url
        self.safe_url = redact_url(url)
        self.prefix = prefix
        self.buffers = buffers              # stream -> RecordBuffer
        # stream -> (field names or None, f(records) -> value tuples, or dicts when None)
        self.rows = rows
        self.packers = {s: XaddPacker(f"{prefix}:{s}", maxlen, keys)
                        for s, (keys, _) in rows.items()}
        self.conn = None                    # the writer's own connection (raw pipelining)
        self.batch = batch
        self.maxlen = maxlen
        self.log = log
        self.timeout = timeout
        self.client = None
        self.ids = {s: IdGen() for s in buffers}
        self.connected = False
        self.written = {s: 0 for s in buffers}
        self.already_written = self.rejected = 0
        self.reconnects = self.outages = self.batches = 0
        self.last_error = ""
        self.last_write_ns = 0
        self.backoff = BACKOFF_MIN_S
        self.next_try = 0.0
        self.tob: dict | None = None        # pending top-of-book mapping (latest wins)
        self.tob_written = 0
        self._ever_connected = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.flush_deadline: float | None = None

    # -- control ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="redis-writer", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, flush_s: float = 3.0) -> None:
        """Write what is buffered (up to ``flush_s``), then stop the thread."""
        self.flush_deadline = time.monotonic() + flush_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(flush_s + self.timeout + 2.0)
        self._close()

    def backlog(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    # -- connection ---------------------------------------------------------------
    def _fail(self, e: BaseException) -> None:
        msg = scrub(f"{type(e).__name__}: {e}", self.url)
        self.last_error = msg[:300]
        if self.connected:
            self.outages += 1
            self.log(f"persister: redis {self.safe_url} lost ({self.last_error}); buffering "
                     f"(bound {next(iter(self.buffers.values())).capacity} records per stream), "
                     f"reconnecting with backoff")
        elif not self._ever_connected and self.backoff == BACKOFF_MIN_S:
            self.log(f"persister: redis {self.safe_url} unreachable ({self.last_error}); "
                     f"buffering, retrying with backoff")
        self.connected = False
        self._close()
        self.next_try = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)

    def _close(self) -> None:
        c, self.client = self.client, None
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # noqa: BLE001
                pass
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    def _connect(self) -> bool:
        c = None
        try:
            c = connect(self.url, self.timeout, "arbpipe-persister")
            self.client = c
            c.ping()
            for s in self.buffers:             # new ids go above whatever the stream has
                try:
                    info = c.xinfo_stream(f"{self.prefix}:{s}")
                    self.ids[s].seen(info.get("last-generated-id"))
                except Exception as e:  # noqa: BLE001 - "no such key": a new stream
                    if "no such key" not in str(e).lower():
                        raise
            self.conn = c.connection_pool.get_connection()
            self.conn.connect()
        except Exception as e:  # noqa: BLE001 - redis errors, OSError, ssl errors
            self._fail(e)
            return False
        if self._ever_connected:
            self.reconnects += 1
            self.log(f"persister: redis {self.safe_url} back; backlog {self.backlog()} records "
                     f"to write")
        else:
            self.log(f"persister: connected to redis {self.safe_url}")
        self._ever_connected = True
        self.connected = True
        return True

    # -- loop ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            if stopping and (self.backlog() == 0 or time.monotonic() >= self.flush_deadline):
                return
            if self.client is None:
                wait = self.next_try - time.monotonic()
                if wait > 0:
                    if stopping:
                        time.sleep(max(min(wait, self.flush_deadline - time.monotonic()), 0))
                    else:
                        self._stop.wait(wait)
                    continue
                if not self._connect():
                    continue
            try:
                n = self._write_once()
            except Exception as e:  # noqa: BLE001 - connection lost, timeout, ...
                self._fail(e)
                continue
            self.backoff = BACKOFF_MIN_S     # reset only once a round trip succeeded
            if n == 0 and not stopping:
                self._wake.wait(IDLE_S)
                self._wake.clear()

    def _write_once(self) -> int:
        """One pipelined round trip of up to ``batch`` XADDs (and the tob hash if due).

        Commands are packed here (``XaddPacker``: RESP text built once per entry, field
        names pre-encoded) and sent on the writer's connection in one write; replies are
        read in order. An error reply is per entry: a repeated id counts as
        ``already_written``, a transient one (OOM, LOADING, ...) ends the batch and is
        retried after backoff, any other is counted as ``rejected`` and skipped."""
        parts: list[str] = []
        plan = []            # (stream, start, count)
        left = self.batch
        now_ms = time.time_ns() // 1_000_000
        for s in WRITE_ORDER:
            b = self.buffers.get(s)
            if b is None or left <= 0 or not len(b):
                continue
            start, recs, idx = b.take(left)
            k = len(recs)
            if not k:
                continue
            rows = self.rows[s][1](recs)
            packer = self.packers[s]
            gen = self.ids[s]
            for j in range(k):
                i = idx[j]
                if b.ids[i, 0] == 0:
                    b.ids[i] = gen.next(now_ms)
                parts.append(packer.xadd(f"{b.ids[i, 0]}-{b.ids[i, 1]}", rows[j]))
            plan.append((s, start, k))
            left -= k
        tob = self.tob
        if tob is not None:
            args = ["HSET", f"{self.prefix}:tob"]
            for f, v in tob.items():
                args += (f, v)
            parts.append(pack_command(args))
        if not parts:
            return 0
        conn = self.conn
        conn.send_packed_command(["".join(parts).encode("utf-8")], check_health=False)
        results = []
        for _ in range(len(parts)):
            try:
                results.append(conn.read_response())
            except ResponseError as e:
                results.append(e)
        self.batches += 1
        pos = 0
        transient = None
        for s, start, k in plan:
            ok = 0
            for j in range(k):
                r = results[pos + j]
                if isinstance(r, Exception):
                    text = str(r)
                    if DUPLICATE in text:
                        self.already_written += 1
                    elif text.split(" ", 1)[0].upper() in TRANSIENT:
                        transient = r
                        break
                    else:
                        self.rejected += 1
                        self.last_error = scrub(f"XADD {s}: {text}", self.url)[:300]
                else:
                    self.written[s] += 1
                ok += 1
            self.buffers[s].done(start, ok)
            pos += k
            if transient is not None:
                break
        if tob is not None and transient is None and not isinstance(results[-1], Exception):
            if self.tob is tob:
                self.tob = None
            self.tob_written += 1
        self.last_write_ns = time.time_ns()
        if transient is not None:
            raise transient
        return sum(k for _, _, k in plan)


def _bulk(x: str) -> str:
    """One RESP bulk string (length in bytes)."""
    n = len(x) if x.isascii() else len(x.encode("utf-8"))
    return f"${n}\r\n{x}\r\n"


def pack_command(args) -> str:
    """A RESP command (array of bulk strings) as text; encode as UTF-8 to send."""
    return f"*{len(args)}\r\n" + "".join(_bulk(a if isinstance(a, str) else str(a))
                                         for a in args)


class XaddPacker:
    """``XADD key MAXLEN ~ N id field value ...`` as RESP text, with the constant part
    (command, key, cap, and the field names when the stream has fixed ``keys``) encoded once."""

    def __init__(self, key: str, maxlen: int, keys: tuple | None):
        self.keys = keys
        self.head_args = ["XADD", key, "MAXLEN", "~", str(int(maxlen))]
        self.head = "".join(_bulk(a) for a in self.head_args)
        self.kseg = [_bulk(k) for k in keys] if keys else None
        self.count = f"*{len(self.head_args) + 1 + 2 * len(keys)}\r\n" if keys else None

    def xadd(self, entry_id: str, row) -> str:
        if self.kseg is None:                          # a dict: any field names
            args = [*self.head_args, entry_id]
            for f, v in row.items():
                args += (f, v if isinstance(v, str) else str(v))
            return pack_command(args)
        return (self.count + self.head + _bulk(entry_id) +
                "".join(k + _bulk(v) for k, v in zip(self.kseg, row)))
