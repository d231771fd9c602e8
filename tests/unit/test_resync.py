"""The REST resync fetcher (``arbpipe.feeds.resync.Resyncer``) against a real HTTP server: a
symbol whose snapshot keeps failing waits out its own retry pause without holding up the
first request of another symbol (requests are queued by the time they are due)."""
from __future__ import annotations

import http.server
import threading
import time
import types

from arbpipe.feeds.resync import Resyncer
from tests.helpers import wait_for


class _Handler(http.server.BaseHTTPRequestHandler):
    events: list = []

    def do_GET(self):
        bad = "s=A" in self.path
        self.events.append("A" if bad else "B")
        if bad:
            self.send_response(503)
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *a):
        pass


class _Sink:
    recv_ns = 0

    def __init__(self):
        self.broken = 0

    def book_broken(self, iid, fault):
        self.broken += 1

    def flush(self):
        pass

    def reject(self, r):
        pass


class _Adapter:
    """The two calls the fetcher makes of a venue adapter."""
    by_native = {"A": types.SimpleNamespace(instrument_id=1),
                 "B": types.SimpleNamespace(instrument_id=2)}

    def __init__(self):
        self.applied = []

    def rest_snapshot_path(self, native):
        return f"/depth?s={native}"

    def on_rest_snapshot(self, native, body, sink):
        self.applied.append(native)
        return None


def test_a_failing_symbol_does_not_hold_up_another_symbols_snapshot():
    _Handler.events = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    feed = types.SimpleNamespace(stopping=False, adapter=_Adapter(), sink=_Sink(),
                                 lock=threading.Lock(), venue="test", note_error=lambda e: None)
    r = Resyncer(feed, f"http://127.0.0.1:{srv.server_address[1]}")
    try:
        r.handle(None, None, types.SimpleNamespace(symbol="A", reconnect=False))
        # A fails at once, then after 0.5, 1.0 and 2.0 s pauses: its next pause is 4 s
        wait_for(lambda: _Handler.events.count("A") >= 4, 30, "four failed requests of A")
        r.handle(None, None, types.SimpleNamespace(symbol="B", reconnect=False))
        wait_for(lambda: "B" in feed.adapter.applied, 30, "B's snapshot applied")
        # B went out before A's next (fifth) request, which waits out A's 4 s pause
        assert _Handler.events.count("A") == 4, _Handler.events
        assert feed.sink.broken == 4 and r.failures == 4 and "B" not in r.pending
    finally:
        feed.stopping = True
        r.stop()
        srv.shutdown()
