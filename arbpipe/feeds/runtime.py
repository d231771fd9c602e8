"""The feed runtime: runs any venue adapter over websockets into a MarketUpdate ring.

Shape
  * one ``_Worker`` thread per ``SocketSpec`` (Binance USD-M has two). A worker connects
    (websocket-client), calls ``adapter.on_connect(i)``, sends the subscribe frames, then
    blocks in ``select`` on its socket(s) and a wake pipe: no busy loop, an idle feed costs
    nothing but its keep-alive pings. Protocol pings are answered by websocket-client;
    ``SocketSpec.ping_text`` is sent every ``ping_interval_s`` (``FeedOptions.ping_interval_s``
    overrides it, for tests).
  * hot path, per frame: ``recv_data_frame`` -> ``time.time_ns()`` -> ``adapter.parse`` ->
    ``RingSink`` packs each update with ``struct.pack_into`` into a preallocated 64-byte
    slot (recv_ts = that time, seq + 1 per record) -> one ``push_words`` per frame. The
    socket is read in chunks of up to 64 KiB (``_BufferedWebSocket``), so a burst of
    frames costs one ``recv`` syscall. Parse + push run under ``Feed.lock`` because the
    ring is single-producer and USD-M has two workers.
  * the calling thread of ``Feed.run`` does housekeeping every ``tick_s``: the silent-symbol
    watchdog, subscribe-ack timeouts and publishing the counters to shared memory
    (``shm_layouts.feed_stats``).

Reconnects
  * a lost connection: STATUS ``DISCONNECTED`` (instrument 0: the whole venue) goes into
    the ring at once; the worker reconnects forever with capped exponential backoff and
    jitter (the attempt count resets once a connection delivered data), calling
    ``adapter.sockets()`` again each time (Gate's subscribe frame carries the time) and
    ``adapter.on_connect(i)``; STATUS ``UP`` follows the first record of the new connection.
    With several sockets the venue status follows those that carry quotes (USD-M's
    funding-only socket going down is counted and logged but does not take the venue's
    quotes out); until that is known every socket counts.
  * ``Control(reconnect=True)`` (planned-disconnect notices, sequence gaps): a second
    connection is opened and subscribed while the first keeps delivering; at the first
    frame of the new one the worker calls ``on_connect(i)``, closes the old one and goes on
    with the new one: no gap and no status change. If the new connection fails the old one
    is used until it closes, then the worker reconnects at once (no backoff).
  * watchdog: a (socket, symbol) without an update for ``watchdog_s`` while connected is
    reported by name on the log and marked STALE (a STATUS record with its instrument id);
    its next update marks it UP again. That is also how an unknown Binance symbol (the
    venue says nothing, the stream is just silent) gets named. Only when *every* symbol of
    a socket is silent for ``silent_reconnect_s`` is the connection replaced, and that
    threshold doubles after each such reconnect that brings no data (capped at 10 min), so
    a quiet market cannot cause a reconnect storm.
  * half-open connections (the peer vanished without a FIN: nothing arrives, sends still
    succeed): after ``probe_idle_s`` without any frame at all the worker sends a websocket
    ping; when nothing (not even the pong) arrives ``probe_timeout_s`` later, the connection
    is replaced (STATUS ``DISCONNECTED`` reason ``HALF_OPEN``, counted
    ``halfopen_reconnects``). A stalled but live venue still answers the ping, so a stall
    only marks its symbols STALE.
  * disconnect storms: the backoff starts over only after a connection lived ``stable_s``
    and delivered data, so a venue that drops every connection soon after it opens (or
    refuses the handshake) is retried at 0.5, 1, 2, 4 ... 30 s (x jitter), each attempt logged.

Status records (kind STATUS): ``instrument_id == 0`` is about the whole venue, otherwise
about one instrument; ``status_reason`` = ``StatusReason`` | socket index << 8. A venue
``DISCONNECTED`` overrides per-symbol status; a QUOTE of a symbol means it is fresh.

Subscribe acks: acks and errors are counted per connection; an error that names a symbol
is logged with that name (and the symbol is left out of the watchdog); a connection with
neither an ack nor data ``ack_timeout_s`` after subscribing is logged.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import json
import logging
import math
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import websocket

from arbpipe.transport import segments
from arbpipe.transport.segments import HeaderInfo, Segment, SegmentError, SegmentNotFound
from arbpipe.symbols import PERP_ID_BIT, SymbolError, SymbolMap, VENUE_IDS
from arbpipe.feeds.venues.base import Control, VenueAdapter
from shm_layouts import MARKET_UPDATE, Flag, Kind, VenueStatus
from shm_layouts import feed_stats as FS
from shm_layouts import ring as L

log = logging.getLogger("arbpipe.feeds.runtime")

time_ns = time.time_ns
_OP_TEXT, _OP_BINARY, _OP_CLOSE = 0x1, 0x2, 0x8

# -- record packing (offsets: shm_layouts.records) -------------------------------------------
_PACK_QUOTE = struct.Struct("<IHBBddddqqQ")          # MARKET_UPDATE
_PACK_FUNDING = struct.Struct("<IHBBdqIf8xqqQ")      # MARKET_UPDATE_FUNDING
_PACK_STATUS = struct.Struct("<IHBBII24xqqQ")        # MARKET_UPDATE_STATUS
assert _PACK_QUOTE.size == _PACK_FUNDING.size == _PACK_STATUS.size == MARKET_UPDATE.itemsize == 64
_QUOTE, _FUNDING, _STATUS = int(Kind.QUOTE), int(Kind.FUNDING), int(Kind.STATUS)
_NO_TS = int(Flag.NO_EXCHANGE_TS)


class StatusReason(enum.IntEnum):
    """Low byte of a STATUS record's ``status_reason`` (the next byte is the socket index)."""
    NONE = 0
    CONNECTED = 1          # UP: every socket connected and delivering
    CONNECTION_LOST = 2    # DISCONNECTED: the socket closed or failed
    CONNECT_FAILED = 3     # DISCONNECTED: could not (re)connect
    WATCHDOG = 4           # STALE: no update for watchdog_s while connected
    DATA_RESUMED = 5       # UP (one symbol): updates again after STALE
    SHUTDOWN = 6           # DISCONNECTED: the feed stopped
    SILENT = 7             # DISCONNECTED: replaced a connection whose every symbol was silent
    PLANNED = 8            # DISCONNECTED: planned reconnect that could not be made seamless
    HALF_OPEN = 9          # DISCONNECTED: replaced a connection that answered nothing (idle probe)


# -- sinks -------------------------------------------------------------------------------------
class RingSink:
    """``UpdateSink`` that packs updates straight into 64-byte records and pushes them into
    an SPSC ring once per frame (``flush``). Not thread-safe: the runtime holds its lock.

    ``recv_ns`` (set by the runtime before each frame) stamps every record of the frame;
    ``seq`` is the last sequence number used (records are numbered 1, 2, 3, ...).
    ``seen`` maps instrument id -> recv_ns of its last record (the watchdog reads it)."""

    def __init__(self, ring, venue_id: int, capacity: int = 256, push_timeout: float = 0.0):
        self.ring = ring
        self.venue_id = venue_id
        self.cap = capacity
        self.buf = bytearray(capacity * 64)
        self.words = np.frombuffer(self.buf, np.int64)
        self.n = 0
        self.seq = 0
        self.recv_ns = 0
        self.seen: dict[int, int] = {}
        self.rejects: dict[str, int] = {}
        self.fundings = 0
        self.statuses = 0
        self.dropped = 0
        self.push_timeout = push_timeout

    # UpdateSink ------------------------------------------------------------------------
    def quote(self, instrument_id, bid, ask, bid_qty, ask_qty, exchange_ts_ns, flags=0):
        n = self.n
        if n == self.cap:
            self.flush()
            n = 0
        seq = self.seq + 1
        try:
            _PACK_QUOTE.pack_into(self.buf, n << 6, instrument_id, self.venue_id, _QUOTE, flags,
                                  bid, ask, bid_qty, ask_qty, exchange_ts_ns, self.recv_ns, seq)
        except struct.error:
            self.reject("pack_error")
            return
        self.seq = seq
        self.n = n + 1
        self.seen[instrument_id] = self.recv_ns

    def funding(self, instrument_id, rate, next_funding_ns, interval_s, mark_price, exchange_ts_ns):
        n = self.n
        if n == self.cap:
            self.flush()
            n = 0
        seq = self.seq + 1
        try:
            _PACK_FUNDING.pack_into(self.buf, n << 6, instrument_id, self.venue_id, _FUNDING,
                                    0 if exchange_ts_ns else _NO_TS, rate, next_funding_ns,
                                    interval_s, mark_price, exchange_ts_ns, self.recv_ns, seq)
        except (struct.error, OverflowError):
            self.reject("pack_error")
            return
        self.seq = seq
        self.n = n + 1
        self.fundings += 1
        self.seen[instrument_id] = self.recv_ns

    def status(self, status, reason=0, instrument_id=0):
        n = self.n
        if n == self.cap:
            self.flush()
            n = 0
        self.seq += 1
        _PACK_STATUS.pack_into(self.buf, n << 6, instrument_id, self.venue_id, _STATUS, _NO_TS,
                               int(status), int(reason), 0, self.recv_ns, self.seq)
        self.n = n + 1
        self.statuses += 1

    def reject(self, reason, n=1):
        r = self.rejects
        r[reason] = r.get(reason, 0) + n

    # output ---------------------------------------------------------------------------
    def flush(self) -> None:
        n = self.n
        if n:
            self.n = 0
            k = self.ring.push_words(self.words, n, self.push_timeout)
            if k != n:
                self.dropped += n - k

    @property
    def records(self) -> int:
        return self.seq

    @property
    def quotes(self) -> int:
        return self.seq - self.fundings - self.statuses


class PrintSink(RingSink):
    """Same packing as ``RingSink``; ``flush`` writes each record as one JSON line instead of
    pushing it (``arbpipe feed --print``). ``names``: instrument id -> (native, canonical)."""

    def __init__(self, out, venue: str, venue_id: int, names: dict[int, tuple[str, str]],
                 on_broken=None):
        super().__init__(None, venue_id)
        self.out = out
        self.venue = venue
        self.names = names
        self.on_broken = on_broken
        self.broken = False

    def flush(self) -> None:
        n = self.n
        if not n:
            return
        self.n = 0
        if self.broken:
            return
        recs = np.frombuffer(self.buf, MARKET_UPDATE, count=n).tolist()
        lines = [json.dumps(self.record_json(rec, k), separators=(",", ":"))
                 for k, rec in enumerate(recs)]
        try:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.broken = True
            if self.on_broken is not None:
                self.on_broken()

    def record_json(self, rec: tuple, k: int) -> dict:
        """Record ``k`` of the buffer (``rec``: its MARKET_UPDATE fields) as a JSON-able dict."""
        buf = self.buf
        iid, vid, kind, flags, bid, ask, bq, aq, exch, recv, seq = rec
        native, canonical = self.names.get(iid, (None, None))
        d = {"venue": self.venue, "symbol": native, "instrument": canonical,
             "instrument_id": iid, "market": "perp" if iid & PERP_ID_BIT else "spot",
             "kind": Kind(kind).name.lower()}
        if kind == _QUOTE:
            d.update(bid=bid, ask=ask, bid_qty=bq, ask_qty=aq)
        elif kind == _FUNDING:
            _, _, _, _, rate, nxt, interval, mark, _, _, _ = _PACK_FUNDING.unpack_from(buf, k << 6)
            d.update(funding_rate=rate, next_funding_ts=nxt, funding_interval_s=interval,
                     mark_price=mark)
        else:
            _, _, _, _, st, reason, _, _, _ = _PACK_STATUS.unpack_from(buf, k << 6)
            d.update(status=VenueStatus(st).name if st in VenueStatus._value2member_map_ else st,
                     reason=StatusReason(reason & 0xFF).name.lower()
                     if (reason & 0xFF) in StatusReason._value2member_map_ else reason,
                     socket=reason >> 8)
        d.update(exchange_ts=exch, recv_ts=recv, seq=seq, flags=flags)
        return d


# -- websocket ---------------------------------------------------------------------------------
class _BufferedWebSocket(websocket.WebSocket):
    """websocket-client's WebSocket reading the socket in chunks of up to 64 KiB: the frame
    parser asks for 2 + 2..8 + payload bytes per frame, served from the chunk, so a burst of
    frames costs one ``recv`` syscall instead of two or three per frame. ``buffered()`` says
    whether a frame can be read without waiting for the socket (select would not see it)."""

    _rbuf = b""
    _roff = 0

    def _recv(self, bufsize):
        buf, off = self._rbuf, self._roff
        avail = len(buf) - off
        if avail <= 0:
            buf = super()._recv(65536)
            off, avail = 0, len(buf)
        if bufsize >= avail:
            self._rbuf, self._roff = b"", 0
            return buf[off:] if off else buf
        self._rbuf, self._roff = buf, off + bufsize
        return buf[off:off + bufsize]

    def buffered(self) -> int:
        n = len(self._rbuf) - self._roff
        sock = self.sock
        if not n and sock is not None and hasattr(sock, "pending"):
            n = sock.pending()          # TLS: decrypted bytes select() cannot see
        return n


class _Lost(Exception):
    """The connection is gone; args[0] says why."""


@dataclasses.dataclass
class FeedOptions:
    """Tunables of one feed. Times in seconds; None = the adapter's / derived default."""
    watchdog_s: float | None = None          # per-symbol silence -> STALE (None: adapter.watchdog_s)
    silent_reconnect_s: float | None = None  # all symbols of a socket silent -> reconnect
                                             # (None: max(2 x watchdog_s, 60))
    ping_interval_s: float | None = None     # override SocketSpec.ping_interval_s (tests)
    backoff_initial_s: float = 0.5           # first reconnect delay (x jitter in [0.5, 1])
    backoff_max_s: float = 30.0              # cap of the exponential backoff
    connect_timeout_s: float = 10.0          # TCP + TLS + websocket handshake
    read_timeout_s: float = 60.0             # a frame that started must finish within this
    swap_timeout_s: float = 10.0             # planned reconnect: wait this long for the new
                                             # connection's first frame, then switch anyway
    ack_timeout_s: float = 10.0              # log when neither an ack nor data came by then
    tick_s: float = 0.25                     # housekeeping period (watchdog, stats)
    probe_idle_s: float = 10.0               # nothing received for this long: send a websocket
                                             # ping (0 = never probe)
    probe_timeout_s: float = 10.0            # ... and still nothing this long after it: the
                                             # connection is half-open, replace it
    stable_s: float = 10.0                   # a connection must live this long (and deliver
                                             # data) before the backoff starts again from the
                                             # first delay: a disconnect storm backs off
    push_timeout_s: float = 0.0              # ring full: wait this long (BLOCK rings) then drop


class _Conn:
    __slots__ = ("ws", "sock", "spec", "subscribed_ns", "acks", "errors", "frames", "records",
                 "last_msg_ns", "ack_warned", "probe_ns", "opened_mono")

    def __init__(self, ws, spec):
        self.ws = ws
        self.sock = ws.sock if ws is not None else None
        self.spec = spec
        self.subscribed_ns = 0
        self.acks = self.errors = self.frames = self.records = 0
        self.last_msg_ns = 0
        self.ack_warned = False
        self.probe_ns = 0                   # time_ns of the unanswered idle probe (0 = none)
        self.opened_mono = time.monotonic()

    def close(self) -> None:
        """Send a close frame if the socket still takes one, then drop it (no waiting for
        the close handshake: the peer may be gone)."""
        try:
            if self.ws.sock is not None:
                self.ws.sock.settimeout(0.5)
                self.ws.send_close()
        except Exception:  # noqa: BLE001
            pass
        try:
            self.ws.shutdown()
        except Exception:  # noqa: BLE001
            pass


class _Worker:
    """One websocket (``adapter.sockets()[index]``), reconnected forever, in its own thread."""

    def __init__(self, feed: "Feed", index: int):
        self.feed = feed
        self.index = index
        self.seen: dict[int, int] = {}      # instrument id -> recv_ns of its last record
        self.cur: _Conn | None = None
        self.nxt: _Conn | None = None
        self.swap_deadline = math.inf
        self.swap_wanted = False
        self.request: str | None = None     # set by the housekeeping thread ("silent")
        self.flowing = False                # the current connection delivered a record
        self.has_quotes = False             # this socket carries quotes (not only funding)
        self.attempt = 0
        self.connects = self.reconnects = self.planned = self.disconnects = 0
        self.failures = self.silent = self.halfopen = 0
        self.probes = 0
        self.frames = self.acks = self.errors = 0
        self.last_msg_ns = 0
        self.silent_level = 0               # consecutive silent reconnects without data
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"feed-{feed.venue}-{index}")

    # -- control from other threads --------------------------------------------------------
    def wake(self, request: str | None = None) -> None:
        if request is not None:
            self.request = request
        try:
            os.write(self.wake_w, b"x")
        except OSError:                     # pipe full (already woken) or closed
            pass

    @property
    def connected(self) -> bool:
        return self.cur is not None

    # -- thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        feed = self.feed
        delay = 0.0
        try:
            while not feed.stopping:
                if delay > 0 and self._sleep(delay):
                    break
                try:
                    delay = self._cycle()
                except Exception:  # noqa: BLE001 - a bug must be loud, and not end the feed
                    log.exception("%s[%d]: worker error; reconnecting", feed.venue, self.index)
                    feed._error_text(f"socket {self.index}: internal error")
                    self._close_all()
                    feed._socket_down(self, StatusReason.CONNECTION_LOST)
                    delay = self._backoff()
        finally:
            self._close_all()

    def _cycle(self) -> float:
        """Connect, serve until the connection ends; -> seconds to wait before the next."""
        feed = self.feed
        conn = self._open(swap=False)
        if conn is None:
            feed._socket_down(self, StatusReason.CONNECT_FAILED)
            return self._backoff()
        if self.connects > 1:
            self.reconnects += 1
        reason = self._serve(conn)
        self._close_all()
        if reason == "stop":
            return 0.0
        if reason == "silent":
            self.silent += 1
            feed._socket_down(self, StatusReason.SILENT, "replaced: every symbol silent")
            return feed.opts.backoff_initial_s * random.uniform(0.5, 1.0)
        if reason.startswith("planned"):
            feed._socket_down(self, StatusReason.PLANNED, reason)
            return 0.0
        lived = time.monotonic() - conn.opened_mono
        if (conn.records or self.flowing) and lived >= feed.opts.stable_s:
            self.attempt = 0                # a healthy connection ended: start over
        if reason.startswith("half-open"):
            self.halfopen += 1
            feed._socket_down(self, StatusReason.HALF_OPEN, reason)
        else:
            self.disconnects += 1
            feed._socket_down(self, StatusReason.CONNECTION_LOST, reason)
        return self._backoff()

    def _backoff(self) -> float:
        o = self.feed.opts
        d = min(o.backoff_max_s, o.backoff_initial_s * (2.0 ** min(self.attempt, 30)))
        self.attempt += 1
        d *= random.uniform(0.5, 1.0)
        if self.attempt > 1:                # the first retry is routine; a run of them is news
            log.warning("%s[%d]: reconnect attempt %d in %.2f s", self.feed.venue, self.index,
                        self.attempt, d)
        return d

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` or until woken; True when the feed is stopping."""
        deadline = time.monotonic() + seconds
        while not self.feed.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.wake_r], [], [], left)
            if r:
                self._drain_wake()
        return True

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    def _open(self, swap: bool) -> _Conn | None:
        feed = self.feed
        spec = feed.adapter.sockets()[self.index]       # fresh each time (Gate's time field)
        url = feed.base_url + spec.path
        o = feed.opts
        try:
            ws = websocket.create_connection(url, timeout=o.connect_timeout_s,
                                             class_=_BufferedWebSocket, enable_multithread=False,
                                             skip_utf8_validation=True)
        except Exception as e:  # noqa: BLE001 - refused, DNS, TLS, handshake status, timeout
            self.failures += 1
            log.warning("%s[%d]: connect to %s failed: %s", feed.venue, self.index, url,
                        _oneline(e))
            feed._error_text(f"connect {url}: {_oneline(e)}")
            return None
        conn = _Conn(ws, spec)
        try:
            ws.settimeout(o.read_timeout_s)
            if not swap:
                with feed.lock:
                    feed.adapter.on_connect(self.index)
            for frame in spec.subscribe:
                ws.send(frame)
        except Exception as e:  # noqa: BLE001
            self.failures += 1
            log.warning("%s[%d]: subscribe on %s failed: %s", feed.venue, self.index, url,
                        _oneline(e))
            conn.close()
            return None
        conn.subscribed_ns = time_ns()
        self.connects += 1
        log.info("%s[%d]: connected to %s, %d subscribe frame(s) sent", feed.venue, self.index,
                 url, len(spec.subscribe))
        return conn

    def _retire(self, c: _Conn) -> None:
        """Fold a connection's counters into the worker's totals and close it."""
        self.frames += c.frames
        self.acks += c.acks
        self.errors += c.errors
        self.last_msg_ns = max(self.last_msg_ns, c.last_msg_ns)
        c.frames = c.acks = c.errors = 0
        c.close()

    def _close_all(self) -> None:
        cur, nxt = self.cur, self.nxt
        self.cur = self.nxt = None
        for c in (cur, nxt):
            if c is not None:
                self._retire(c)
        self.swap_wanted = False
        self.swap_deadline = math.inf

    def _switch(self) -> None:
        """Make the pending new connection (planned reconnect) the current one."""
        new, old = self.nxt, self.cur
        with self.feed.lock:
            self.feed.adapter.on_connect(self.index)
        self.cur, self.nxt = new, None
        self.swap_wanted = False
        self.swap_deadline = math.inf
        self.reconnects += 1
        if old is not None:
            self._retire(old)
        log.info("%s[%d]: switched to the new connection (planned reconnect)", self.feed.venue,
                 self.index)

    def _serve(self, conn: _Conn) -> str:
        """Read until the connection is lost (-> why), the feed stops (-> "stop") or the
        watchdog asks for a new one (-> "silent"). Handles planned reconnects inside."""
        feed = self.feed
        self.cur = conn
        self.flowing = False
        spec = conn.spec
        interval = feed.opts.ping_interval_s if feed.opts.ping_interval_s is not None \
            else spec.ping_interval_s
        ping = spec.ping_text if spec.ping_text and interval and interval > 0 else None
        next_ping = time.monotonic() + interval if ping else math.inf
        probe_idle = int(feed.opts.probe_idle_s * 1e9)
        probe_timeout = int(feed.opts.probe_timeout_s * 1e9)
        wake_r = self.wake_r
        while True:
            if feed.stopping:
                return "stop"
            if self.request is not None:
                req, self.request = self.request, None
                if req == "silent":
                    return "silent"
            now = time.monotonic()
            if now >= next_ping:
                for c in (self.cur, self.nxt):
                    if c is not None:
                        try:
                            c.ws.send(ping)
                        except Exception as e:  # noqa: BLE001
                            if c is self.nxt:
                                self._drop_nxt(f"ping failed: {_oneline(e)}")
                            else:
                                return self._cur_lost(f"ping failed: {_oneline(e)}")
                next_ping = now + interval
            if self.nxt is not None and now >= self.swap_deadline:
                self._switch()
            cur, nxt = self.cur, self.nxt
            probe_deadline = math.inf
            if probe_idle > 0:
                why, wait_ns = self._probe(cur, probe_idle, probe_timeout)
                if why:
                    return why
                probe_deadline = now + wait_ns / 1e9
            ready = [c for c in (cur, nxt) if c is not None and c.ws.buffered()]
            if not ready:
                deadline = min(next_ping, self.swap_deadline, probe_deadline)
                timeout = None if deadline == math.inf else max(0.0, deadline - now)
                fds = [wake_r, cur.sock] if nxt is None else [wake_r, cur.sock, nxt.sock]
                try:
                    r, _, _ = select.select(fds, [], [], timeout)
                except (OSError, ValueError) as e:   # a socket closed under us
                    return self._cur_lost(f"select: {_oneline(e)}")
                if wake_r in r:
                    self._drain_wake()
                ready = [c for c in (cur, nxt) if c is not None and c.sock in r]
            for c in ready:
                try:
                    self._drain(c)
                except _Lost as e:
                    if c is self.nxt:
                        self._drop_nxt(str(e))
                    elif c is self.cur:
                        why = self._cur_lost(str(e))
                        if why:
                            return why

    def _probe(self, c: _Conn, idle_ns: int, timeout_ns: int) -> tuple[str, int]:
        """Half-open detection on the current connection: after ``idle_ns`` without any
        frame (data, pong, ping, heartbeat), send a websocket ping; when still nothing came
        ``timeout_ns`` later, the peer is gone without a FIN (-> the reason to reconnect).
        -> (reason or "", ns until the next check)."""
        t = time_ns()
        last = c.last_msg_ns if c.last_msg_ns > c.subscribed_ns else c.subscribed_ns
        if c.probe_ns:
            if last > c.probe_ns:
                c.probe_ns = 0              # answered (or any traffic): alive
            elif t - c.probe_ns >= timeout_ns:
                return (f"half-open: nothing received for {(t - last) / 1e9:.1f} s, "
                        f"ping unanswered for {(t - c.probe_ns) / 1e9:.1f} s"), 0
            else:
                return "", c.probe_ns + timeout_ns - t
        if t - last >= idle_ns:
            try:
                c.ws.ping(b"arbpipe-probe")
            except Exception as e:  # noqa: BLE001
                return self._cur_lost(f"probe ping failed: {_oneline(e)}") or "", idle_ns
            c.probe_ns = t
            self.probes += 1
            log.debug("%s[%d]: nothing received for %.1f s: probing with a ping", self.feed.venue,
                      self.index, (t - last) / 1e9)
            return "", timeout_ns
        return "", last + idle_ns - t

    def _cur_lost(self, why: str) -> str:
        """The current connection is gone: go on with the pending new one if there is one
        (-> ""), else -> the reason the worker reconnects."""
        if self.nxt is not None:
            log.info("%s[%d]: old connection closed (%s)", self.feed.venue, self.index, why)
            self._switch()
            return ""
        if self.swap_wanted:
            return f"planned ({why})"
        return why

    def _drop_nxt(self, why: str) -> None:
        log.warning("%s[%d]: new connection for the planned reconnect failed: %s",
                    self.feed.venue, self.index, why)
        nxt, self.nxt = self.nxt, None
        self._retire(nxt)
        self.swap_deadline = math.inf

    def _drain(self, c: _Conn) -> None:
        """Read and handle frames of ``c`` until no complete data is buffered. Hot path."""
        on_frame = self.feed._on_frame
        ws = c.ws
        recv = ws.recv_data_frame
        if c is not self.cur and c is not self.nxt:
            return
        while True:
            try:
                op, fr = recv(True)
            except (websocket.WebSocketException, OSError, AttributeError) as e:
                raise _Lost(_oneline(e)) from None
            now = time_ns()
            c.last_msg_ns = now
            if op == _OP_TEXT or op == _OP_BINARY:
                if c is not self.cur:
                    self._switch()          # first frame of the planned-reconnect connection
                ctl = on_frame(self, c, fr.data, now)
                if ctl is not None:
                    self._control(c, ctl)
            elif op == _OP_CLOSE:
                raise _Lost(_close_text(fr.data))
            if not ws.buffered():
                return

    def _control(self, c: _Conn, ctl: Control) -> None:
        feed = self.feed
        kind = ctl.kind
        reconnect = ctl.reconnect
        if kind == "ack":
            c.acks += 1
        elif kind == "error":
            c.errors += 1
            native = feed._venue_error(self, ctl)
            ad = feed.adapter
            if native and ad.refusal_fails_request and native not in ad.refused and \
                    native in ad.by_native:
                ad.refused.add(native)      # the whole request failed: resubscribe the rest
                reconnect = True
        elif kind == "notice":
            log.info("%s[%d]: venue notice: %s", feed.venue, self.index, ctl.detail)
        if reconnect and not self.swap_wanted and c is self.cur:
            self.swap_wanted = True
            self.planned += 1
            log.info("%s[%d]: planned reconnect (%s %s): opening a new connection",
                     feed.venue, self.index, kind, ctl.detail)
            nxt = self._open(swap=True)
            if nxt is not None:
                self.nxt = nxt
                self.swap_deadline = time.monotonic() + feed.opts.swap_timeout_s


def _oneline(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return " ".join(text.split())[:300]


def _close_text(data: bytes) -> str:
    if len(data) >= 2:
        code = int.from_bytes(data[:2], "big")
        return f"closed by the venue: {code} {data[2:].decode('utf-8', 'replace')}".strip()
    return "closed by the venue"


# -- the feed -----------------------------------------------------------------------------------
class Feed:
    """Runs one adapter: its sockets, reconnects, watchdog and counters.

    ``run()`` blocks (workers in their threads, housekeeping in the caller's); ``start()``
    runs it in a background thread; ``stop()`` (safe from a signal handler) ends it."""

    def __init__(self, adapter: VenueAdapter, base_url: str, sink: RingSink, *,
                 stats: "FeedStatsWriter | None" = None, options: FeedOptions | None = None):
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
        self.workers = [_Worker(self, i) for i in range(n)]
        self._main_r, self._main_w = os.pipe()
        os.set_blocking(self._main_r, False)
        os.set_blocking(self._main_w, False)
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._started = False

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
    def _on_frame(self, w: _Worker, c: _Conn, data, now: int) -> Control | None:
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

    # -- status (called by workers) -------------------------------------------------------------
    def _publish_status(self, status: int, reason: int, socket_index: int = 0,
                        instrument_id: int = 0) -> None:
        """Caller holds ``self.lock``."""
        sink = self.sink
        sink.recv_ns = time_ns()
        sink.status(int(status), int(reason) | socket_index << 8, instrument_id)
        sink.flush()
        if instrument_id == 0:
            self.venue_status = int(status)

    def _quote_workers(self) -> list[_Worker]:
        """The sockets the venue's status follows: those that carry quotes (a funding-only
        socket being down does not make the venue's quotes unusable); all of them until
        that is known."""
        return [w for w in self.workers if w.has_quotes] or self.workers

    def _socket_flowing(self, w: _Worker, quotes: bool) -> None:
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

    def _socket_down(self, w: _Worker, reason: StatusReason, why: str = "") -> None:
        w.flowing = False
        with self.lock:
            for key in [k for k in self.stale if k[0] == w.index]:
                del self.stale[key]
            if self.venue_status != VenueStatus.DISCONNECTED and w in self._quote_workers():
                self._publish_status(VenueStatus.DISCONNECTED, reason, w.index)
        if why:
            log.warning("%s[%d]: connection lost: %s", self.venue, w.index, why)
            self._error_text(f"socket {w.index}: {why}")

    def _venue_error(self, w: _Worker, ctl: Control) -> str:
        """Count and log a venue error; -> the native symbol it refuses ("" if none)."""
        sym = ctl.symbol
        if sym:
            native = self._native_of(sym)
            self.errors_by_symbol[native] += 1
            if native not in self.refused:
                self.refused[native] = ctl.detail
                log.error("%s[%d]: venue refused %s: %s", self.venue, w.index, native, ctl.detail)
            self._error_text(f"refused {native}: {ctl.detail}")
            return native
        log.error("%s[%d]: venue error: %s", self.venue, w.index, ctl.detail)
        self._error_text(ctl.detail)
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

    def _error_text(self, text: str) -> None:
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
            limit = self.silent_ns << min(w.silent_level, 10)
            limit = min(limit, max(self.silent_ns, 600_000_000_000))
            if now - ref > limit and w.request is None and w.nxt is None:
                w.silent_level += 1
                log.warning("%s[%d]: every symbol silent for %.1f s: reconnecting (next "
                            "threshold %.0f s)", self.venue, w.index, (now - ref) / 1e9,
                            min(self.silent_ns << min(w.silent_level, 10),
                                max(self.silent_ns, 600_000_000_000)) / 1e9)
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


# -- stats segment --------------------------------------------------------------------------------
class FeedStatsWriter:
    """The feed's counters segment (layout: ``shm_layouts.feed_stats``); single writer."""

    def __init__(self, seg: Segment):
        self.seg = seg
        self._rec = np.zeros(1, FS.FEED_STATS)
        self._raw = self._rec.view(np.uint8)
        self._dst = seg.bytes[FS.FEED_STATS_OFFSET:FS.FEED_STATS_OFFSET + FS.FEED_STATS.itemsize]
        self._gen_w = FS.FEED_STATS_OFFSET // 8
        self._gen = 0

    @classmethod
    def create(cls, instance: str, name: str, venue: str, venue_id: int,
               n_sockets: int) -> "FeedStatsWriter":
        h = HeaderInfo(L.MAGIC, L.LAYOUT_VERSION, FS.FEED_STATS_KIND, FS.FEED_STATS.itemsize, 1,
                       0, 0, 0, 0, 0, 0, 0, FS.FEED_STATS_OFFSET, name)
        seg = Segment.create(instance, name, FS.SEGMENT_SIZE, h, reclaim_stale=True)
        w = cls(seg)
        w.publish({"venue": venue, "venue_id": venue_id, "n_sockets": n_sockets})
        return w

    def publish(self, c: dict) -> None:
        r = self._rec[0]
        for f in FS.SCALAR_FIELDS[1:] + FS.TAIL_FIELDS:
            v = c.get(f)
            if v is not None:
                r[f] = v
        r["version"] = FS.FEED_STATS_VERSION
        rejects = np.zeros(FS.REJECT_SLOTS, np.uint64)
        for reason, n in (c.get("rejects") or {}).items():
            rejects[FS.reject_slot(reason)] += n
        r["rejects"] = rejects
        for f in FS.CONN_FIELDS:
            v = c.get(f)
            if v is not None:
                arr = np.zeros(FS.MAX_SOCKETS, r[f].dtype)
                arr[:len(v)] = v[:FS.MAX_SOCKETS]
                r[f] = arr
        if "venue" in c:
            r["venue"] = c["venue"].encode("ascii", "replace")[:32]
        if "last_error" in c:
            r["last_error"] = c["last_error"].encode("ascii", "replace")[:128]
        r["updated_ns"] = time_ns()
        words = self.seg.words
        g = self._gen
        words[self._gen_w] = g + 1                 # odd: being written
        self._dst[8:] = self._raw[8:]
        words[self._gen_w] = g + 2
        self._gen = g + 2

    def close(self) -> None:
        self._dst = None
        self.seg.close()

    def unlink(self) -> None:
        segments.unlink(self.seg.instance, self.seg.name)


def _read_record(seg: Segment) -> np.ndarray:
    words = seg.words
    gw = FS.FEED_STATS_OFFSET // 8
    src = seg.bytes[FS.FEED_STATS_OFFSET:FS.FEED_STATS_OFFSET + FS.FEED_STATS.itemsize]
    out = np.zeros(1, FS.FEED_STATS)
    raw = out.view(np.uint8)
    for _ in range(1000):
        g1 = int(words[gw])
        if g1 & 1:
            time.sleep(0)
            continue
        raw[:] = src
        if int(words[gw]) == g1:
            return out
    raw[:] = src            # the writer died mid-update: its last (possibly torn) record
    return out


def stats_record_to_dict(rec: np.ndarray) -> dict:
    r = rec[0]
    d = {f: int(r[f]) for f in FS.SCALAR_FIELDS + FS.TAIL_FIELDS}
    d["rejects"] = {name: int(n) for name, n in zip(FS.REJECT_SLOT_NAMES, r["rejects"]) if n}
    n = max(1, min(int(r["n_sockets"]), FS.MAX_SOCKETS))
    for f in FS.CONN_FIELDS:
        d[f] = [int(x) for x in r[f][:n]]
    d["venue"] = bytes(r["venue"]).decode("ascii", "replace")
    d["last_error"] = bytes(r["last_error"]).decode("ascii", "replace")
    st = d["venue_status"]
    d["venue_status_name"] = VenueStatus(st).name if st in VenueStatus._value2member_map_ else ""
    return d


def read_feed_stats(instance: str | None = None, name: str | None = None) -> list[dict]:
    """Counters of every running (or stale) feed, from any process, read-only.
    ``instance`` None = all instances; ``name`` = one segment (``feed.<venue>.stats``)."""
    out = []
    for s in segments.list_segments(instance):
        if s.header is None or s.header.kind != FS.FEED_STATS_KIND:
            continue
        if name is not None and s.name != name:
            continue
        try:
            seg = Segment.attach(s.instance, s.name, kind=FS.FEED_STATS_KIND,
                                 record_size=FS.FEED_STATS.itemsize)
        except SegmentError:
            continue
        try:
            rec = _read_record(seg)
        finally:
            seg.close()
        d = stats_record_to_dict(rec)
        d.update(instance=s.instance, name=s.name, pid=s.header.creator_pid, stale=s.stale)
        out.append(d)
    return out


_FAULT_COUNTERS = (("connects", "connects"), ("lost", "disconnects"),
                   ("planned", "planned_reconnects"), ("silent", "silent_reconnects"),
                   ("half_open", "halfopen_reconnects"), ("connect_failures", "connect_failures"),
                   ("errors", "errors"))


def render_feed_stats(rows: list[dict]) -> str:
    """One line per feed (``arbpipe stat feeds``)."""
    if not rows:
        return "no feed handlers (is a pipeline or `arbpipe feed` running?)"
    now = time_ns()
    hdr = (f"{'instance':<10} {'venue':<13} {'status':<12} {'conn':>4} {'frames':>10} "
           f"{'updates':>10} {'rejects':>8} {'dropped':>8} {'reconn':>6} {'stale':>5} "
           f"{'refused':>7} {'last msg':>9}")
    lines = [hdr, "-" * len(hdr)]
    for r in rows:
        age = f"{(now - r['last_msg_ns']) / 1e9:.1f}s" if r["last_msg_ns"] else "-"
        conn = f"{bin(r['connected_mask']).count('1')}/{r['n_sockets']}"
        lines.append(f"{r['instance']:<10} {r['venue']:<13} {r['venue_status_name'] or '-':<12} "
                     f"{conn:>4} {r['frames']:>10} {r['updates']:>10} {r['rejects_total']:>8} "
                     f"{r['ring_dropped']:>8} {r['reconnects']:>6} {r['stale_symbols']:>5} "
                     f"{r['refused_symbols']:>7} {age:>9}" + ("  GONE" if r.get("stale") else ""))
        faults = [(k, r.get(f, 0)) for k, f in _FAULT_COUNTERS if r.get(f, 0)]
        if faults:
            lines.append(" " * 11 + "connections: " + ", ".join(f"{k}={v}" for k, v in faults))
        if r["rejects"]:
            lines.append(" " * 11 + "rejects: " + ", ".join(f"{k}={v}" for k, v in r["rejects"].items()))
        if r["last_error"]:
            lines.append(" " * 11 + "last error: " + r["last_error"])
    return "\n".join(lines)


# -- building a feed from names --------------------------------------------------------------------
class UsageError(ValueError):
    """Bad venue, symbol or URL given by the user (exit code 2)."""


def base_url(url: str | None, default: str) -> str:
    """``scheme://host[:port]`` of ``url`` (its path, if any, is ignored: adapters append
    their own), or ``default``."""
    if not url:
        return default.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise UsageError(f"--url {url!r}: expected ws://HOST[:PORT] or wss://HOST[:PORT]")
    return f"{parts.scheme}://{parts.netloc}"


def build_adapter(venue: str, symbols: list[str] | None = None,
                  symbol_map: SymbolMap | None = None) -> tuple[VenueAdapter, SymbolMap]:
    """The venue's adapter for ``symbols`` (canonical or native; default: every instrument
    the map lists on that venue), with venue and instrument ids from the symbol map
    (default: ``SymbolMap.default()``, the simulator's instruments)."""
    from arbpipe.feeds.venues.registry import get
    try:
        cls = get(venue)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    smap = symbol_map if symbol_map is not None else SymbolMap.default()
    if venue not in VENUE_IDS:
        raise UsageError(f"venue {venue!r} has no venue id in arbpipe.symbols.VENUE_IDS")
    listed = smap.venue_listings(venue)
    vid = listed[0].venue_id if listed else VENUE_IDS[venue]
    try:
        if symbols:
            listings = []
            for s in symbols:
                for part in s.replace(",", " ").split():
                    li = smap.resolve(venue, part, cls.native_to_canonical)
                    if li not in listings:
                        listings.append(li)
        else:
            listings = smap.venue_listings(venue)
    except SymbolError as e:
        raise UsageError(str(e)) from None
    if not listings:
        raise UsageError(f"no instruments for {venue}: name some with --symbol")
    return cls([li.instrument() for li in listings], vid), smap


def from_config(path: str | None, venue: str):
    """(SymbolMap, the venue's config) from the pipeline config file (``arbpipe.config``)."""
    from arbpipe.config import ConfigError, load_config
    try:
        cfg = load_config(path)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if venue not in cfg.enabled_venues():
        raise UsageError(f"venues.{venue}: not an enabled venue of {path or 'the config'}")
    try:
        return SymbolMap.from_config(cfg), cfg.venues[venue], cfg
    except SymbolError as e:
        raise UsageError(f"{path}: {e}") from None


def run_feed(venue: str, url: str | None = None, symbols: list[str] | None = None,
             print_: bool = False, ring: str | None = None, instance: str | None = None, *,
             config: str | None = None, options: FeedOptions | None = None, out=None,
             symbol_map: SymbolMap | None = None, handle_signals: bool = True,
             capacity: int = 65536, policy: str = "drop") -> int:
    """One feed handler until SIGTERM / SIGINT (or ``--print`` output closed). Returns the
    exit code: 0 ok, 1 runtime failure, 2 bad usage. Without ``print_`` it writes into the
    SPSC ring ``ring`` (default ``feed.<venue>``; created, capacity 65536, drop policy, when
    absent) and the counters segment ``<ring>.stats``; it unlinks what it created.

    ``config`` (a pipeline TOML file, ``arbpipe.config``): instruments and the ids to
    publish come from it (``SymbolMap.from_config``), and so do, unless given here, the
    venue's url, its watchdog, its funding interval and the feed ring's capacity/policy."""
    from arbpipe.transport.rings import SpscRing
    stop_requested = []
    feed_box: list[Feed] = []

    def on_signal(signum, frame):
        stop_requested.append(signum)
        if feed_box:
            feed_box[0].stop()

    old = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, on_signal)
    stats = ring_obj = None
    created_ring = False
    try:
        options = dataclasses.replace(options) if options is not None else FeedOptions()
        try:
            if config is not None:
                symbol_map, vcfg, cfg = from_config(config, venue)
                url = url or vcfg.url or None
                if options.watchdog_s is None:
                    options.watchdog_s = vcfg.watchdog_s
                options.probe_idle_s = vcfg.probe_idle_s
                options.probe_timeout_s = vcfg.probe_timeout_s
                capacity, policy = cfg.rings.feed.capacity, cfg.rings.feed.policy
            adapter, smap = build_adapter(venue, symbols, symbol_map)
            bu = base_url(url, adapter.default_url)
            if config is not None and vcfg.funding_interval_s and \
                    hasattr(adapter, "funding_interval_s"):
                adapter.funding_interval_s = vcfg.funding_interval_s
        except UsageError as e:
            print(f"feed: {e}", file=sys.stderr)
            return 2
        if print_:
            names = {i.instrument_id: (i.native, smap.canonical(i.instrument_id))
                     for i in adapter.instruments}
            sink = PrintSink(out or sys.stdout, venue, adapter.venue_id, names,
                             on_broken=lambda: feed_box and feed_box[0].stop())
        else:
            instance = instance or segments.default_instance()
            ring_name = ring or f"feed.{venue}"
            try:
                stats = FeedStatsWriter.create(instance, f"{ring_name}.stats", venue,
                                               adapter.venue_id, len(adapter.sockets()))
            except segments.SegmentExists as e:
                print(f"feed: another feed handler writes {ring_name!r}: {e}", file=sys.stderr)
                return 1
            except SegmentError as e:
                print(f"feed: {e}", file=sys.stderr)
                return 1
            try:
                ring_obj = SpscRing.attach(ring_name, instance=instance, record="MarketUpdate")
            except SegmentNotFound:
                ring_obj = SpscRing.create(ring_name, capacity, "MarketUpdate", policy=policy,
                                           instance=instance)
                created_ring = True
            except SegmentError as e:
                print(f"feed: {e}", file=sys.stderr)
                return 1
            sink = RingSink(ring_obj, adapter.venue_id, push_timeout=options.push_timeout_s)
        feed = Feed(adapter, bu, sink, stats=stats, options=options)
        feed_box.append(feed)
        if stop_requested:
            return 0
        log.info("%s: %d instrument(s) at %s%s", venue, len(adapter.instruments), bu,
                 "" if print_ else f", ring {instance}/{ring or 'feed.' + venue}")
        feed.run()
        return 0
    finally:
        if ring_obj is not None:
            if created_ring:
                ring_obj.unlink()
            ring_obj.close()
        if stats is not None:
            stats.unlink()
            stats.close()
        for sig, h in old.items():
            signal.signal(sig, h)
