"""Bringing an L2 book back after its adapter gave it up (``Control("resync")``).

Two ways, by venue: a REST snapshot (the adapter names its path: Binance, Gate, OKX), fetched
off the socket threads by one fetcher thread and applied under the feed's lock with the
diffs the adapter buffered meanwhile; or the websocket itself (the adapter gives the frames
that make the venue send a snapshot again: Bybit, Kraken; Coinbase reconnects, which
the worker's planned reconnect already does). A failed REST request counts
``SNAPSHOT_FAILED`` and is retried after a growing pause (0.5 s doubling to 10 s) while the
feed runs; a snapshot the adapter refuses (stale, unusable) is asked for again after a
shorter pause (0.1 s doubling to 1 s); one request per symbol is ever in flight. Requests
wait in a queue ordered by the time they are due, so a symbol waiting out its retry pause
never holds up another symbol's first request.

Uses the standard library's ``urllib`` (one small GET per resync; no extra dependency).
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import urllib.error
import urllib.request

from shm_layouts.records import BookFault

log = logging.getLogger("arbpipe.feed")

RETRY_MIN_S, RETRY_MAX_S = 0.5, 10.0      # after a failed request
REFUSED_MIN_S, REFUSED_MAX_S = 0.1, 1.0   # after a snapshot the adapter refused (a lagging
                                          # replica catches up within a few diffs)
TIMEOUT_S = 10.0
MAX_BODY = 32 << 20


class Resyncer:
    def __init__(self, feed, rest_url: str):
        self.feed = feed
        self.rest_url = rest_url.rstrip("/")
        self.pending: set[str] = set()         # natives with a REST request queued/in flight
        self.due: list = []                    # heap of (due monotonic s, n, native, path, pause)
        self.cond = threading.Condition()
        self._n = itertools.count()
        self._stop = False
        self.thread: threading.Thread | None = None
        self.requests = 0
        self.failures = 0

    def handle(self, worker, conn, ctl) -> None:
        """A ``Control("resync")`` from the adapter, on the worker's thread."""
        ad = self.feed.adapter
        native = ctl.symbol
        path = ad.rest_snapshot_path(native) if native else None
        if path is not None:
            if native not in self.pending:
                self.pending.add(native)
                self._start()
                self._put(native, path, 0.0)
            return
        if ctl.reconnect:
            return                            # the worker's planned reconnect resubscribes
        frames = ad.resubscribe(native) if native else []
        for f in frames:
            try:
                conn.ws.send(f)
            except Exception as e:  # noqa: BLE001 - a dead socket: its reconnect resyncs
                log.warning("%s[%d]: resubscribe %s failed: %s", self.feed.venue,
                            worker.index, native, e)
                return

    def _start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=f"resync-{self.feed.venue}",
                                           daemon=True)
            self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self._stop = True
            self.cond.notify()

    def _put(self, native: str, path: str, pause: float) -> None:
        """Queue a request for ``native``, due ``pause`` seconds from now."""
        with self.cond:
            heapq.heappush(self.due, (time.monotonic() + pause, next(self._n), native, path,
                                      pause))
            self.cond.notify()

    def _next(self):
        """The next request once it is due; None when stopping."""
        with self.cond:
            while True:
                if self._stop or self.feed.stopping:
                    return None
                if self.due:
                    wait = self.due[0][0] - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self.due)[2:]
                    self.cond.wait(min(wait, 1.0))
                else:
                    self.cond.wait(1.0)

    def _run(self) -> None:
        feed = self.feed
        while not feed.stopping:
            item = self._next()
            if item is None:
                return
            native, path, pause = item
            self.requests += 1
            try:
                with urllib.request.urlopen(self.rest_url + path, timeout=TIMEOUT_S) as r:
                    body = r.read(MAX_BODY)
            except (urllib.error.URLError, OSError, ValueError) as e:
                self.failures += 1
                log.warning("%s: depth snapshot of %s failed: %s", feed.venue, native, e)
                feed.note_error(f"snapshot {native}: {e}")
                inst = feed.adapter.by_native.get(native)
                with feed.lock:
                    if inst is not None:
                        feed.sink.recv_ns = time.time_ns()
                        feed.sink.book_broken(inst.instrument_id, BookFault.SNAPSHOT_FAILED)
                        feed.sink.flush()
                self._put(native, path, min(max(pause * 2, RETRY_MIN_S), RETRY_MAX_S))
                continue
            with feed.lock:
                feed.sink.recv_ns = time.time_ns()
                self.pending.discard(native)
                try:
                    ctl = feed.adapter.on_rest_snapshot(native, body, feed.sink)
                except Exception:  # noqa: BLE001 - adapters must not raise; count it
                    feed.sink.reject("parse_error")
                    ctl = None
                feed.sink.flush()
            if ctl is not None and ctl.kind == "resync":
                # the adapter refused the snapshot (stale, garbage): ask again after a pause
                nat = ctl.symbol or native
                p = feed.adapter.rest_snapshot_path(nat)
                if p is not None and nat not in self.pending:
                    self.pending.add(nat)
                    self._put(nat, p, min(max(pause * 2, REFUSED_MIN_S), REFUSED_MAX_S))
                elif p is None:
                    # no REST path for it: only its socket thread can resubscribe (the
                    # adapter asks from there with its next frame)
                    log.warning("%s: snapshot of %s refused and no REST path to ask again",
                                feed.venue, nat)
