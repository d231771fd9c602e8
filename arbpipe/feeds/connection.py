"""One websocket connection of a feed and the rules for replacing it, in one place.

``Conn`` is one open connection (its socket, subscribe time, per-connection counters and
the state of its idle probe); ``BufferedWebSocket`` is the websocket-client class it reads
through. The functions below are the whole retry policy; the socket worker
(``arbpipe.feeds.worker``) and the housekeeping (``arbpipe.feeds.feed``) only apply them.

* Backoff: a lost or refused connection is retried after ``backoff_initial_s`` x 2^attempt,
  capped at ``backoff_max_s``, times a jitter in [0.5, 1] (``backoff_delay``): 0.5, 1, 2,
  4 ... 30 s, each retry after the first logged. The attempt count starts over when a
  connection delivers data (the ``Feed`` resets it at the first record) and when one that
  lived ``stable_s`` and delivered data ends (``backoff_starts_over``); a venue that
  refuses the handshake or drops every connection before data keeps backing off.
* Silent sockets: when every symbol of a socket is silent for the silent-reconnect
  threshold, the connection is replaced after a short jittered pause
  (``silent_retry_delay``); the threshold doubles after each such reconnect that brings no
  data, capped at 10 min (``silent_limit_ns``), so a quiet market cannot cause a reconnect
  storm.
* Half-open connections (the peer vanished without a FIN: nothing arrives, sends still
  succeed): after ``probe_idle_s`` without any frame at all a websocket ping is sent;
  when nothing, not even the pong, arrives ``probe_timeout_s`` later the connection is
  replaced (``Conn.idle_probe``). A stalled but live venue still answers the ping, so a
  stall only marks its symbols STALE.
"""
from __future__ import annotations

import random
import time

import websocket

from arbpipe.feeds.options import FeedOptions

PROBE_PAYLOAD = b"arbpipe-probe"      # application data of the idle probe's ping

# verdicts of Conn.idle_probe
PROBE_WAIT = 0          # nothing to do until the next check
PROBE_SEND = 1          # idle for probe_idle_s: send the probe ping now
PROBE_LOST = 2          # the probe went unanswered for probe_timeout_s: half-open

BACKOFF_MAX_DOUBLINGS = 30            # 2^attempt stops growing here (the cap rules anyway)
SILENT_MAX_DOUBLINGS = 10             # silent threshold: doubled at most this many times
SILENT_CAP_NS = 600_000_000_000       # ... and at most 10 min (unless the base is longer)


# -- the policy -----------------------------------------------------------------------------
def jitter() -> float:
    """The random factor every retry delay is multiplied by."""
    return random.uniform(0.5, 1.0)


def backoff_delay(opts: FeedOptions, attempt: int) -> float:
    """Seconds before the retry that follows ``attempt`` earlier ones (0 = the first)."""
    d = min(opts.backoff_max_s,
            opts.backoff_initial_s * (2.0 ** min(attempt, BACKOFF_MAX_DOUBLINGS)))
    return d * jitter()


def silent_retry_delay(opts: FeedOptions) -> float:
    """Seconds before reconnecting a socket replaced because every symbol was silent."""
    return opts.backoff_initial_s * jitter()


def backoff_starts_over(opts: FeedOptions, delivered: bool, lived_s: float) -> bool:
    """True when a connection that ended was healthy: it delivered data and lived
    ``stable_s``; the next retry then waits the first delay again."""
    return delivered and lived_s >= opts.stable_s


def silent_limit_ns(silent_ns: int, level: int) -> int:
    """The every-symbol-silent threshold after ``level`` silent reconnects without data."""
    return min(silent_ns << min(level, SILENT_MAX_DOUBLINGS), max(silent_ns, SILENT_CAP_NS))


# -- the connection ---------------------------------------------------------------------------
class BufferedWebSocket(websocket.WebSocket):
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


class Conn:
    """One open websocket of a worker, with its per-connection counters."""
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

    def heard_ns(self) -> int:
        """When anything last arrived (or the subscribe was sent, if later)."""
        return self.last_msg_ns if self.last_msg_ns > self.subscribed_ns else self.subscribed_ns

    def idle_probe(self, now: int, idle_ns: int, timeout_ns: int) -> tuple[int, int]:
        """Half-open detection: -> (``PROBE_WAIT`` | ``PROBE_SEND`` | ``PROBE_LOST``, ns
        until the next check). Any frame after the probe (the pong or other traffic) clears
        it; the caller sets ``probe_ns`` when it sent the ping."""
        last = self.heard_ns()
        if self.probe_ns:
            if last > self.probe_ns:
                self.probe_ns = 0              # answered (or any traffic): alive
            elif now - self.probe_ns >= timeout_ns:
                return PROBE_LOST, 0
            else:
                return PROBE_WAIT, self.probe_ns + timeout_ns - now
        if now - last >= idle_ns:
            return PROBE_SEND, timeout_ns
        return PROBE_WAIT, last + idle_ns - now

    def half_open_reason(self, now: int) -> str:
        """Why the connection is replaced after ``PROBE_LOST`` (starts with "half-open")."""
        return (f"half-open: nothing received for {(now - self.heard_ns()) / 1e9:.1f} s, "
                f"ping unanswered for {(now - self.probe_ns) / 1e9:.1f} s")
