"""The socket worker: one thread per ``SocketSpec`` of the adapter (Binance USD-M has two),
keeping that websocket connected forever.

A worker connects (websocket-client), calls ``adapter.on_connect(i)``, sends the subscribe
frames, then blocks in ``select`` on its socket(s) and a wake pipe: no busy loop, an idle
feed costs nothing but its keep-alive pings. Protocol pings are answered by
websocket-client; ``SocketSpec.ping_text`` is sent every ``ping_interval_s``
(``FeedOptions.ping_interval_s`` overrides it, for tests). Each data frame goes to
``Feed.on_frame`` (parse and push, under the feed's lock).

When the connection ends the worker reports it (``Feed.socket_down``), waits as the
policy of ``arbpipe.feeds.connection`` says and connects again, calling
``adapter.sockets()`` again each time (Gate's subscribe frame carries the time).

Planned reconnects (``Control(reconnect=True)``: planned-disconnect notices, sequence
gaps): a second connection is opened and subscribed while the first keeps delivering; at
the first frame of the new one the worker calls ``on_connect(i)``, closes the old one and
goes on with the new one: no gap and no status change. If the new connection fails the
old one is used until it closes, then the worker reconnects at once (no backoff).
"""
from __future__ import annotations

import logging
import math
import os
import select
import threading
import time

import websocket

from arbpipe.feeds.connection import (PROBE_LOST, PROBE_PAYLOAD, PROBE_SEND,
                                      BufferedWebSocket, Conn, backoff_delay,
                                      backoff_starts_over, silent_retry_delay)
from arbpipe.feeds.venues.base import Control
from shm_layouts.records import StatusReason

log = logging.getLogger("arbpipe.feed")

time_ns = time.time_ns
OP_TEXT = websocket.ABNF.OPCODE_TEXT
OP_BINARY = websocket.ABNF.OPCODE_BINARY
OP_CLOSE = websocket.ABNF.OPCODE_CLOSE


class Lost(Exception):
    """The connection is gone; args[0] says why."""


class Worker:
    """One websocket (``adapter.sockets()[index]``), reconnected forever, in its own thread."""

    def __init__(self, feed: "Feed", index: int):  # noqa: F821 - arbpipe.feeds.feed.Feed
        self.feed = feed
        self.index = index
        self.seen: dict[int, int] = {}      # instrument id -> recv_ns of its last record
        self.cur: Conn | None = None
        self.nxt: Conn | None = None
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
                    feed.note_error(f"socket {self.index}: internal error")
                    self._close_all()
                    feed.socket_down(self, StatusReason.CONNECTION_LOST)
                    delay = self._backoff()
        finally:
            self._close_all()

    def _cycle(self) -> float:
        """Connect, serve until the connection ends; -> seconds to wait before the next."""
        feed = self.feed
        conn = self._open(swap=False)
        if conn is None:
            feed.socket_down(self, StatusReason.CONNECT_FAILED)
            return self._backoff()
        if self.connects > 1:
            self.reconnects += 1
        reason = self._serve(conn)
        self._close_all()
        if reason == "stop":
            return 0.0
        if reason == "silent":
            self.silent += 1
            feed.socket_down(self, StatusReason.SILENT, "replaced: every symbol silent")
            return silent_retry_delay(feed.opts)
        if reason.startswith("planned"):
            feed.socket_down(self, StatusReason.PLANNED, reason)
            return 0.0
        lived = time.monotonic() - conn.opened_mono
        if backoff_starts_over(feed.opts, conn.records > 0 or self.flowing, lived):
            self.attempt = 0                # a healthy connection ended: start over
        if reason.startswith("half-open"):
            self.halfopen += 1
            feed.socket_down(self, StatusReason.HALF_OPEN, reason)
        else:
            self.disconnects += 1
            feed.socket_down(self, StatusReason.CONNECTION_LOST, reason)
        return self._backoff()

    def _backoff(self) -> float:
        d = backoff_delay(self.feed.opts, self.attempt)
        self.attempt += 1
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

    def _open(self, swap: bool) -> Conn | None:
        feed = self.feed
        spec = feed.adapter.sockets()[self.index]       # fresh each time (Gate's time field)
        url = feed.base_url + spec.path
        o = feed.opts
        try:
            ws = websocket.create_connection(url, timeout=o.connect_timeout_s,
                                             class_=BufferedWebSocket, enable_multithread=False,
                                             skip_utf8_validation=True)
        except Exception as e:  # noqa: BLE001 - refused, DNS, TLS, handshake status, timeout
            self.failures += 1
            log.warning("%s[%d]: connect to %s failed: %s", feed.venue, self.index, url,
                        oneline(e))
            feed.note_error(f"connect {url}: {oneline(e)}")
            return None
        conn = Conn(ws, spec)
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
                        oneline(e))
            conn.close()
            return None
        conn.subscribed_ns = time_ns()
        self.connects += 1
        log.info("%s[%d]: connected to %s, %d subscribe frame(s) sent", feed.venue, self.index,
                 url, len(spec.subscribe))
        return conn

    def _retire(self, c: Conn) -> None:
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

    def _serve(self, conn: Conn) -> str:
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
                                self._drop_nxt(f"ping failed: {oneline(e)}")
                            else:
                                return self._cur_lost(f"ping failed: {oneline(e)}")
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
                    return self._cur_lost(f"select: {oneline(e)}")
                if wake_r in r:
                    self._drain_wake()
                ready = [c for c in (cur, nxt) if c is not None and c.sock in r]
            for c in ready:
                try:
                    self._drain(c)
                except Lost as e:
                    if c is self.nxt:
                        self._drop_nxt(str(e))
                    elif c is self.cur:
                        why = self._cur_lost(str(e))
                        if why:
                            return why

    def _probe(self, c: Conn, idle_ns: int, timeout_ns: int) -> tuple[str, int]:
        """Half-open detection on the current connection (``Conn.idle_probe``): sends the
        probe ping when it is due; -> (the reason to reconnect or "", ns until the next
        check)."""
        t = time_ns()
        verdict, wait_ns = c.idle_probe(t, idle_ns, timeout_ns)
        if verdict == PROBE_LOST:
            return c.half_open_reason(t), 0
        if verdict == PROBE_SEND:
            try:
                c.ws.ping(PROBE_PAYLOAD)
            except Exception as e:  # noqa: BLE001
                return self._cur_lost(f"probe ping failed: {oneline(e)}") or "", idle_ns
            c.probe_ns = t
            self.probes += 1
            log.debug("%s[%d]: nothing received for %.1f s: probing with a ping", self.feed.venue,
                      self.index, (t - c.heard_ns()) / 1e9)
        return "", wait_ns

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

    def _drain(self, c: Conn) -> None:
        """Read and handle frames of ``c`` until no complete data is buffered. Hot path."""
        on_frame = self.feed.on_frame
        ws = c.ws
        recv = ws.recv_data_frame
        if c is not self.cur and c is not self.nxt:
            return
        while True:
            try:
                op, fr = recv(True)
            except (websocket.WebSocketException, OSError, AttributeError) as e:
                raise Lost(oneline(e)) from None
            now = time_ns()
            c.last_msg_ns = now
            if op == OP_TEXT or op == OP_BINARY:
                if c is not self.cur:
                    self._switch()          # first frame of the planned-reconnect connection
                ctl = on_frame(self, c, fr.data, now)
                if ctl is not None:
                    self._control(c, ctl)
            elif op == OP_CLOSE:
                raise Lost(close_text(fr.data))
            if not ws.buffered():
                return

    def _control(self, c: Conn, ctl: Control) -> None:
        feed = self.feed
        kind = ctl.kind
        reconnect = ctl.reconnect
        if kind == "ack":
            c.acks += 1
        elif kind == "error":
            c.errors += 1
            native = feed.venue_error(self, ctl)
            ad = feed.adapter
            if native and ad.refusal_fails_request and native not in ad.refused and \
                    native in ad.by_native:
                ad.refused.add(native)      # the whole request failed: resubscribe the rest
                reconnect = True
        elif kind == "notice":
            log.info("%s[%d]: venue notice: %s", feed.venue, self.index, ctl.detail)
        elif kind == "resync":              # an L2 book broke a venue rule (arbpipe.feeds.resync)
            feed.resyncer.handle(self, c, ctl)
        if reconnect and not self.swap_wanted and c is self.cur:
            self.swap_wanted = True
            self.planned += 1
            log.info("%s[%d]: planned reconnect (%s %s): opening a new connection",
                     feed.venue, self.index, kind, ctl.detail)
            nxt = self._open(swap=True)
            if nxt is not None:
                self.nxt = nxt
                self.swap_deadline = time.monotonic() + feed.opts.swap_timeout_s


def oneline(e: BaseException) -> str:
    """An exception as one line of at most 300 characters (for logs and ``last_error``)."""
    text = str(e) or type(e).__name__
    return " ".join(text.split())[:300]


def close_text(data: bytes) -> str:
    """Why the venue closed the connection, from the payload of its close frame."""
    if len(data) >= 2:
        code = int.from_bytes(data[:2], "big")
        return f"closed by the venue: {code} {data[2:].decode('utf-8', 'replace')}".strip()
    return "closed by the venue"
