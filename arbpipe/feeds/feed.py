"""``Feed``: one venue adapter run over websockets into a MarketUpdate ring.

Shape
  * one ``Worker`` thread per ``SocketSpec`` (``arbpipe.feeds.worker``); the connection
    and its replacement rules are in ``arbpipe.feeds.connection``.
  * hot path, per frame (``Feed.on_frame``): ``recv_data_frame`` -> ``time.time_ns()`` ->
    ``adapter.parse`` -> ``RingSink`` packs each update into a preallocated 64-byte slot
    (recv_ts = that time, seq + 1 per record) -> one ``push_words`` per frame. The socket
    is read in chunks of up to 64 KiB (``BufferedWebSocket``), so a burst of frames costs
    one ``recv`` syscall. Parse + push run under ``Feed.lock`` because the ring is
    single-producer and USD-M has two workers. Binance bookTicker frames are first tried
    by a one-call numba fast path (``Feed._on_frame_fast``, ``arbpipe.feeds.fastpath``:
    parse, checks, pack and push together); a frame it does not take goes the way above.
  * the calling thread of ``Feed.run`` does housekeeping every ``tick_s``: the
    silent-symbol watchdog, subscribe-ack timeouts and publishing the counters to shared
    memory (``arbpipe.feeds.stats``).

Status records (kind STATUS): ``instrument_id == 0`` is about the whole venue, otherwise
about one instrument; ``status_reason`` = ``StatusReason`` | socket index << 8
(``shm_layouts.records.pack_status_reason``). A venue ``DISCONNECTED`` overrides
per-symbol status; a QUOTE of a symbol means it is fresh.
  * a lost connection: STATUS ``DISCONNECTED`` (instrument 0) goes into the ring at once;
    STATUS ``UP`` follows the first record of the new connection. With several sockets the
    venue status follows those that carry quotes (USD-M's funding-only socket going down
    is counted and logged but does not take the venue's quotes out); until that is known
    every socket counts.
  * watchdog: a (socket, symbol) without an update for ``watchdog_s`` while connected is
    reported by name on the log and marked STALE (a STATUS record with its instrument id);
    its next update marks it UP again. That is also how an unknown Binance symbol (the
    venue says nothing, the stream is just silent) gets named. Only when *every* symbol of
    a socket is silent for ``silent_reconnect_s`` is the connection replaced (threshold:
    ``arbpipe.feeds.connection.silent_limit_ns``).
  * half-open connections are replaced with STATUS ``DISCONNECTED`` reason ``HALF_OPEN``
    (counted ``halfopen_reconnects``).

Subscribe acks: acks and errors are counted per connection; an error that names a symbol
is logged with that name (and the symbol is left out of the watchdog); a connection with
neither an ack nor data ``ack_timeout_s`` after subscribing is logged.
"""
from __future__ import annotations

import collections
import logging
import os
import select
import socket
import threading
import time

from arbpipe.feeds.connection import Conn, silent_limit_ns
from arbpipe.feeds.fastpath import book_ticker, entry_point
from arbpipe.feeds.options import FeedOptions
from arbpipe.feeds.resync import Resyncer
from arbpipe.feeds.sinks import RingSink
from arbpipe.feeds.stats import FeedStatsWriter
from arbpipe.feeds.venues.base import Control, VenueAdapter
from arbpipe.feeds.worker import Worker
from arbpipe.transport.rings import SpscRing
from shm_layouts import feed_stats as FS
from shm_layouts.records import BookFault, StatusReason, VenueStatus, pack_status_reason
from shm_layouts.ring import FullPolicy

log = logging.getLogger("arbpipe.feed")

time_ns = time.time_ns


class Feed:
    """Runs one adapter: its sockets, reconnects, watchdog and counters.

    ``run()`` blocks (workers in their threads, housekeeping in the caller's); ``start()``
    runs it in a background thread; ``stop()`` (safe from a signal handler) ends it."""

    def __init__(self, adapter: VenueAdapter, base_url: str, sink: RingSink, *,
                 stats: FeedStatsWriter | None = None, options: FeedOptions | None = None,
                 rest_url: str = ""):
        self.adapter = adapter
        self._parse = adapter.parse
        self.venue = adapter.name
        self.base_url = base_url.rstrip("/")
        self.sink = sink
        self.stats_writer = stats
        self.opts = o = options or FeedOptions()
        self.lock = threading.Lock()
        self.stopping = False
        wd = o.watchdog_s if o.watchdog_s is not None else adapter.watchdog_s
        self.watchdog_ns = int(wd * 1e9)
        silent = o.silent_reconnect_s if o.silent_reconnect_s is not None else max(2 * wd, 60.0)
        self.silent_ns = int(silent * 1e9)
        self.names = {i.instrument_id: i.native for i in adapter.instruments}
        self.refused: dict[str, str] = {}          # native -> venue's error text
        self.stale: dict[tuple[int, int], int] = {}  # (socket, iid) -> ns marked stale
        self.venue_status = 0
        self.last_error = ""
        self.last_error_ns = 0
        self.errors_by_symbol: collections.Counter = collections.Counter()
        self._parse_bugs = 0
        n = len(adapter.sockets())
        if n > FS.MAX_SOCKETS:
            raise ValueError(f"{self.venue}: {n} sockets; the stats layout holds {FS.MAX_SOCKETS}")
        self.workers = [Worker(self, i) for i in range(n)]
        self.resyncer = Resyncer(self, rest_url or adapter.default_rest_url)
        self._main_r, self._main_w = os.pipe()
        os.set_blocking(self._main_r, False)
        os.set_blocking(self._main_w, False)
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._started = False
        self._fast = self._fast_args(adapter, sink)
        if self._fast is not None:
            self.on_frame = self._on_frame_fast

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "Feed":
        """Run in a background thread (library / tests)."""
        self._thread = threading.Thread(target=self.run, name=f"feed-{self.venue}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the feed to stop; async-signal-safe (a flag and pipe writes)."""
        self.stopping = True
        for fd in [self._main_w] + [w.wake_w for w in self.workers]:
            try:
                os.write(fd, b"x")
            except OSError:
                pass

    def join(self, timeout: float | None = 10.0) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return self._done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.stop()
        self.join(timeout)

    def __enter__(self) -> "Feed":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self) -> None:
        """Blocking: start the workers, do housekeeping until ``stop()``, then shut down."""
        self._started = True
        for w in self.workers:
            w.thread.start()
        tick = self.opts.tick_s
        try:
            while not self.stopping:
                r, _, _ = select.select([self._main_r], [], [], tick)
                if r:
                    try:
                        while os.read(self._main_r, 512):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                if self.stopping:
                    break
                try:
                    self._tick()
                except Exception:  # noqa: BLE001 - housekeeping must not end the feed
                    log.exception("%s: housekeeping failed", self.venue)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.stopping = True
        self.resyncer.stop()
        for w in self.workers:
            w.wake()
        for w in self.workers:
            w.thread.join(5.0)
            if w.thread.is_alive():                 # stuck mid-frame: unblock its recv
                for c in (w.cur, w.nxt):
                    if c is not None and c.sock is not None:
                        try:
                            c.sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                w.thread.join(5.0)
        with self.lock:
            if self.venue_status != 0:
                self._publish_status(VenueStatus.DISCONNECTED, StatusReason.SHUTDOWN)
        self._publish_stats()
        for w in self.workers:
            for fd in (w.wake_r, w.wake_w):
                _close_fd(fd)
        for fd in (self._main_r, self._main_w):
            _close_fd(fd)
        self._done.set()

    # -- hot path --------------------------------------------------------------------------------
    def on_frame(self, w: Worker, c: Conn, data, now: int) -> Control | None:
        """One data frame (received at ``now``, ns) of worker ``w``'s connection ``c``:
        parse it and push its records into the ring (one push per frame)."""
        c.frames += 1
        sink = self.sink
        with self.lock:
            sink.recv_ns = now
            sink.seen = w.seen
            before = sink.seq
            fund = sink.fundings
            try:
                ctl = self._parse(data, now, sink, w.index)
            except Exception:  # noqa: BLE001 - adapters must not raise; count it
                sink.reject("parse_error")
                ctl = None
                self._parse_bug()
            if sink.n:
                sink.flush()
            got = sink.seq - before
            quotes = got - (sink.fundings - fund)
        if got:
            c.records += got
            if not w.flowing or (quotes and not w.has_quotes):
                self._socket_flowing(w, quotes > 0)
        return ctl

    @staticmethod
    def _fast_args(adapter, sink):
        """(kernel, table, ring words, cursors, push in the kernel) of the adapter's one-call
        fast path (``arbpipe.feeds.fastpath``), or None: no fast path, or a sink / ring it
        does not write the way ``RingSink.flush`` would (a BLOCK ring is pushed by
        ``flush``, which waits)."""
        fastpath = getattr(adapter, "quote_fastpath", None)
        table = fastpath() if fastpath is not None else None
        if table is None or type(sink) is not RingSink or type(sink.ring) is not SpscRing:
            return None
        ring = sink.ring
        args = (table.tab, ring.w, ring.cursors, ring.policy != FullPolicy.BLOCK)
        return (entry_point(book_ticker, b"", 0, 0, *args),) + args

    def _on_frame_fast(self, w: Worker, c: Conn, data, now: int) -> Control | None:
        """``on_frame`` with a try of the fast path first: a frame it takes is parsed, packed
        and pushed in one numba call; any other goes the usual way (``on_frame``). The
        kernel pushes its record alone: ``sink.n`` is 0 between frames (every writer of the
        sink flushes before it lets go of the lock)."""
        sink = self.sink
        kernel, tab, ring_w, cursors, push = self._fast
        with self.lock:
            # the kernel takes bytes only (its compiled argument types are fixed)
            r = kernel(data, now, sink.seq, tab, ring_w, cursors, push) \
                if type(data) is bytes else -1
            if r >= 0:
                sink.recv_ns = now
                sink.seq += 1
                w.seen[r >> 2] = now
                if not push:
                    sink.words[:8] = tab[0, :8]
                    sink.n = 1
                    sink.flush()
                else:
                    if r & 2:                   # as ``SpscRing.push_words`` does
                        sink.ring._cdoor.post_if_armed()
                    if not r & 1:
                        sink.dropped += 1
        if r < 0:
            return Feed.on_frame(self, w, c, data, now)
        c.frames += 1
        c.records += 1
        if not w.flowing or not w.has_quotes:
            self._socket_flowing(w, True)
        return None

    # -- status (called by workers) -------------------------------------------------------------
    def _publish_status(self, status: int, reason: int, socket_index: int = 0,
                        instrument_id: int = 0) -> None:
        """Caller holds ``self.lock``."""
        sink = self.sink
        sink.recv_ns = time_ns()
        sink.status(int(status), pack_status_reason(reason, socket_index), instrument_id)
        sink.flush()
        if instrument_id == 0:
            self.venue_status = int(status)

    def _quote_workers(self) -> list[Worker]:
        """The sockets the venue's status follows: those that carry quotes (a funding-only
        socket being down does not make the venue's quotes unusable); all of them until
        that is known."""
        return [w for w in self.workers if w.has_quotes] or self.workers

    def _socket_flowing(self, w: Worker, quotes: bool) -> None:
        w.flowing = True
        w.silent_level = 0
        w.attempt = 0
        if quotes:
            w.has_quotes = True
        with self.lock:
            if self.venue_status != VenueStatus.UP and \
                    all(x.flowing for x in self._quote_workers()):
                self._publish_status(VenueStatus.UP, StatusReason.CONNECTED, w.index)
                log.info("%s: up (data flowing)", self.venue)

    def socket_down(self, w: Worker, reason: StatusReason, why: str = "") -> None:
        """Worker ``w`` lost (or could not make) its connection: its books (every book of
        the feed) are not ready until each is synced again on the new connection."""
        w.flowing = False
        with self.lock:
            sink = self.sink
            if sink.ready:
                sink.recv_ns = time_ns()
                for iid in sorted(sink.ready):
                    sink.book_broken(iid, BookFault.RECONNECT, w.index)
                sink.flush()
            for key in [k for k in self.stale if k[0] == w.index]:
                del self.stale[key]
            if self.venue_status != VenueStatus.DISCONNECTED and w in self._quote_workers():
                self._publish_status(VenueStatus.DISCONNECTED, reason, w.index)
        if why:
            log.warning("%s[%d]: connection lost: %s", self.venue, w.index, why)
            self.note_error(f"socket {w.index}: {why}")

    def venue_error(self, w: Worker, ctl: Control) -> str:
        """Count and log a venue error; -> the native symbol it refuses ("" if none)."""
        sym = ctl.symbol
        if sym:
            native = self._native_of(sym)
            self.errors_by_symbol[native] += 1
            if native not in self.refused:
                self.refused[native] = ctl.detail
                log.error("%s[%d]: venue refused %s: %s", self.venue, w.index, native, ctl.detail)
            self.note_error(f"refused {native}: {ctl.detail}")
            return native
        log.error("%s[%d]: venue error: %s", self.venue, w.index, ctl.detail)
        self.note_error(ctl.detail)
        return ""

    def _native_of(self, sym: str) -> str:
        """The subscribed native symbol an error names (venues differ in case)."""
        if sym in self.adapter.by_native:
            return sym
        up = sym.upper()
        for n in self.adapter.by_native:
            if n.upper() == up:
                return n
        return sym

    def note_error(self, text: str) -> None:
        """Keep ``text`` as the newest error (``last_error`` of the counters)."""
        self.last_error = text
        self.last_error_ns = time_ns()

    def _parse_bug(self) -> None:
        self._parse_bugs += 1
        if self._parse_bugs <= 3:
            log.exception("%s: adapter.parse raised (counted as parse_error)", self.venue)

    # -- housekeeping ---------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time_ns()
        self._watchdog(now)
        self._publish_stats(now)

    def _watchdog(self, now: int) -> None:
        wd = self.watchdog_ns
        instruments = [i for i in self.adapter.instruments if i.native not in self.refused]
        for w in self.workers:
            c = w.cur
            if c is None or not c.subscribed_ns:
                continue
            o = self.opts
            if not c.ack_warned and not c.acks and not c.records and \
                    now - c.subscribed_ns > o.ack_timeout_s * 1e9:
                c.ack_warned = True
                log.warning("%s[%d]: neither an ack nor data %.0f s after subscribing",
                            self.venue, w.index, o.ack_timeout_s)
            if not instruments:
                continue
            since = c.subscribed_ns
            newest = 0
            seen = w.seen
            for inst in instruments:
                iid = inst.instrument_id
                last = seen.get(iid, 0)
                if last > newest:
                    newest = last
                key = (w.index, iid)
                marked = self.stale.get(key)
                if marked is not None:
                    if last > marked:
                        with self.lock:
                            self.stale.pop(key, None)
                            self._publish_status(VenueStatus.UP, StatusReason.DATA_RESUMED,
                                                 w.index, iid)
                        log.info("%s[%d]: %s updates again", self.venue, w.index, inst.native)
                    continue
                ref = last if last > since else since
                if now - ref > wd:
                    with self.lock:
                        self.stale[key] = now
                        self._publish_status(VenueStatus.STALE, StatusReason.WATCHDOG, w.index, iid)
                    if last < since:
                        log.warning("%s[%d]: %s: no update in %.1f s since subscribing "
                                    "(unknown or inactive symbol?): marked stale", self.venue,
                                    w.index, inst.native, (now - since) / 1e9)
                    else:
                        log.warning("%s[%d]: %s: no update for %.1f s while connected: "
                                    "marked stale", self.venue, w.index, inst.native,
                                    (now - last) / 1e9)
            ref = newest if newest > since else since
            limit = silent_limit_ns(self.silent_ns, w.silent_level)
            if now - ref > limit and w.request is None and w.nxt is None:
                w.silent_level += 1
                log.warning("%s[%d]: every symbol silent for %.1f s: reconnecting (next "
                            "threshold %.0f s)", self.venue, w.index, (now - ref) / 1e9,
                            silent_limit_ns(self.silent_ns, w.silent_level) / 1e9)
                w.wake("silent")

    # -- counters -------------------------------------------------------------------------------
    def counters(self) -> dict:
        """Every counter as a plain dict (what goes to shared memory)."""
        sink = self.sink
        ws = self.workers
        rejects = dict(sink.rejects)
        conns = [w.cur for w in ws]
        frames = sum(w.frames + (c.frames if c else 0) for w, c in zip(ws, conns))
        return {
            "venue": self.venue, "venue_id": sink.venue_id, "n_sockets": len(ws),
            "frames": frames, "updates": sink.records, "quotes": sink.quotes,
            "funding": sink.fundings, "status_records": sink.statuses,
            "rejects_total": sum(rejects.values()), "rejects": rejects,
            "ring_dropped": sink.dropped,
            "connects": sum(w.connects for w in ws), "reconnects": sum(w.reconnects for w in ws),
            "planned_reconnects": sum(w.planned for w in ws),
            "disconnects": sum(w.disconnects for w in ws),
            "connect_failures": sum(w.failures for w in ws),
            "silent_reconnects": sum(w.silent for w in ws),
            "halfopen_reconnects": sum(w.halfopen for w in ws),
            "probes": sum(w.probes for w in ws),
            "last_msg_ns": max([w.last_msg_ns for w in ws] + [c.last_msg_ns for c in conns if c]),
            "last_update_ns": sink.recv_ns if sink.records else 0,
            "connected_mask": sum(1 << i for i, c in enumerate(conns) if c is not None),
            "venue_status": self.venue_status,
            "symbols": len(self.adapter.instruments), "stale_symbols": len(self.stale),
            "refused_symbols": len(self.refused),
            "acks": sum(w.acks + (c.acks if c else 0) for w, c in zip(ws, conns)),
            "errors": sum(w.errors + (c.errors if c else 0) for w, c in zip(ws, conns)),
            "conn_connected": [int(c is not None) for c in conns],
            "conn_frames": [w.frames + (c.frames if c else 0) for w, c in zip(ws, conns)],
            "conn_acks": [c.acks if c else 0 for c in conns],
            "conn_errors": [c.errors if c else 0 for c in conns],
            "conn_reconnects": [w.reconnects for w in ws],
            "conn_last_msg_ns": [c.last_msg_ns if c else w.last_msg_ns for w, c in zip(ws, conns)],
            **sink.book_counters(),
            "last_error": self.last_error,
            "stale": sorted({self.names.get(iid, str(iid)) for _, iid in list(self.stale)}),
            "refused": sorted(self.refused),
        }

    def _publish_stats(self, now: int | None = None) -> None:
        if self.stats_writer is not None:
            self.stats_writer.publish(self.counters())


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
