"""One side's connection to Redis: a redis-py client for the rare commands (meta hash,
XRANGE, XINFO) and, on a second connection of the same client, the raw socket the hot path
writes packed commands to and reads replies from (``arbpipe.bridge.resp``).

redis-py makes the connection (TCP, unix socket or TLS for ``rediss://``, AUTH, SELECT,
CLIENT SETNAME, RESP2); after its handshake nothing else reads that socket. Every failure
(refused, reset, timeout, a TLS error) raises ``LinkError`` with the URL and any
credential scrubbed from the text (``arbpipe.redact``), so it can be logged as is.
"""
from __future__ import annotations

import os

import numpy as np

from arbpipe.redact import redact_url, scrub
from arbpipe.redis_conn import configured_url, connect_raw, resolve_url

ENV_URL = "ARBPIPE_BRIDGE_URL"


def configured_bridge_url(cfg) -> str:
    """``$ARBPIPE_BRIDGE_URL``, else ``[bridge] url``, else the configured Redis
    (``$ARBPIPE_REDIS_URL``, ``[redis] url``); "" when none is configured."""
    return os.environ.get(ENV_URL, "").strip() or cfg.bridge.url or configured_url(cfg)


def bridge_url(cfg, instance: str) -> str:
    """The URL a bridge process uses: ``configured_bridge_url``, else the [redis] resolution
    (the embedded server of a running tree of ``instance``)."""
    return configured_bridge_url(cfg) or resolve_url(cfg, instance)


class LinkError(RuntimeError):
    """The link failed; the message is safe to log (credentials scrubbed)."""


class Link:
    """``client`` (redis-py, bytes replies) and ``send`` / ``recv`` on a raw socket."""

    def __init__(self, url: str, timeout: float, name: str, bufsize: int = 1 << 20):
        self.url = url
        self.safe_url = redact_url(url)
        self.client = None
        self.conn = None
        self.sock = None
        self.buf = np.zeros(bufsize, np.uint8)
        self.start = 0              # replies in buf[start:end] not yet taken
        self.end = 0
        try:
            self.client = connect_raw(url, timeout, name)
            self.client.ping()
            self.conn = self.client.connection_pool.get_connection()
            self.conn.connect()
            self.sock = self.conn._sock       # redis-py's socket after its handshake
            if self.sock is None:
                raise LinkError("no socket after connect")
        except Exception as e:  # noqa: BLE001 - redis errors, OSError, ssl errors
            self.close()
            raise self.error(e) from None

    def error(self, e: BaseException) -> LinkError:
        if isinstance(e, LinkError):
            return e
        return LinkError(scrub(f"{type(e).__name__}: {e}", self.url)[:300])

    def send(self, data) -> None:
        try:
            self.sock.sendall(data)
        except Exception as e:  # noqa: BLE001
            raise self.error(e) from None

    def compact(self) -> None:
        """Drop the replies already taken (before a new round)."""
        if self.start == self.end:
            self.start = self.end = 0
        elif self.start:
            n = self.end - self.start
            self.buf[:n] = self.buf[self.start:self.end]
            self.start, self.end = 0, n

    def recv(self) -> int:
        """Read what has arrived (blocking up to the socket timeout) into ``buf`` after
        ``end``, growing the buffer when full; returns the bytes read."""
        if self.end >= len(self.buf):
            grown = np.zeros(len(self.buf) * 2, np.uint8)
            grown[:self.end] = self.buf[:self.end]
            self.buf = grown
        try:
            n = self.sock.recv_into(memoryview(self.buf)[self.end:])
        except Exception as e:  # noqa: BLE001 - timeout, reset, ssl
            raise self.error(e) from None
        if n == 0:
            raise LinkError("connection closed by the server")
        self.end += n
        return n

    def text(self, off: int, n: int) -> str:
        return scrub(bytes(self.buf[off:off + n]).decode("utf-8", "replace"), self.url)[:300]

    def call(self, *args):
        """A rare command through redis-py (its own connection of the pool)."""
        try:
            return self.client.execute_command(*args)
        except Exception as e:  # noqa: BLE001
            raise self.error(e) from None

    def close(self) -> None:
        conn, self.conn, self.sock = self.conn, None, None
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # noqa: BLE001
                pass
        c, self.client = self.client, None
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
