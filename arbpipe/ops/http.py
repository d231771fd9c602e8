"""The tree's HTTP endpoint, served by the dashboard process on ``[dashboard] metrics_host:
metrics_port`` (127.0.0.1 by default): metrics for Prometheus, health and readiness for a
monitor or an orchestrator, the status document, and two control actions.

    GET  /metrics          Prometheus text (``arbpipe.ui.metrics``)
    GET  /healthz          200 / 503 + JSON: supervisor and every role running (``health``)
    GET  /readyz           200 / 503 + JSON: venues quoting, detector current, strategy able
                           to trade (``arbpipe.ops.health.readiness``)
    GET  /status           the document of ``arbpipe status --json``
    POST /kill-switch      {"on": true|false}           } only with ``Authorization: Bearer
    POST /breaker/reset    (no body)                    }  <token>``

The token comes from ``ARBPIPE_CONTROL_TOKEN`` or the 0600 file ``[dashboard]
control_token_file``; with neither the POST endpoints answer 403 saying they are off. The
token is compared in constant time and never logged. Every POST, refused or not, is
appended to ``<run dir>/control.jsonl`` with its source address and outcome. Unknown paths
404, wrong methods 405 (with ``Allow``), malformed or oversized bodies 400; none of them
changes state. A bind to a non-loopback address without a token is refused at start-up
(``check_bind``: ``arbpipe up`` and the dashboard exit 2).

The routes are a WSGI application on the standard library's ``wsgiref`` server, one thread
per request so that a slow client never holds up a scrape; the metrics text itself is
rendered by ``arbpipe.ui.metrics`` from the dashboard's view.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
import socketserver
import stat
import threading
import time
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from arbpipe.ops.control import audit, read_status, status_document
from arbpipe.ops.health import health, readiness
from arbpipe.trading.control import Control
from arbpipe.transport import segments

TOKEN_ENV = "ARBPIPE_CONTROL_TOKEN"
MAX_BODY = 1024                         # bytes; control bodies are a few bytes of JSON
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROUTES = {"/": ("GET", "HEAD"), "/metrics": ("GET", "HEAD"), "/healthz": ("GET", "HEAD"),
          "/readyz": ("GET", "HEAD"), "/status": ("GET", "HEAD"),
          "/kill-switch": ("POST",), "/breaker/reset": ("POST",)}


class TokenError(ValueError):
    """The control token is configured but unusable (unreadable file, loose mode, empty)."""


def load_token(cfg) -> str | None:
    """The control token: ``ARBPIPE_CONTROL_TOKEN``, else the file named by ``[dashboard]
    control_token_file`` (which must be 0600 or stricter and not empty), else None."""
    env = os.environ.get(TOKEN_ENV)
    if env:
        return env.strip() or None
    path = cfg.dashboard.control_token_file
    if not path:
        return None
    try:
        st = os.stat(path)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TokenError(f"dashboard.control_token_file {path}: mode "
                             f"{stat.S_IMODE(st.st_mode):04o}, must be 0600 (chmod 600 {path})")
        with open(path) as f:
            token = f.read().strip()
    except OSError as e:
        raise TokenError(f"dashboard.control_token_file {path}: {e.strerror or e}") from None
    if not token:
        raise TokenError(f"dashboard.control_token_file {path}: empty")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(cfg) -> str | None:
    """A refusal sentence when the endpoint would listen beyond this host without a control
    token (or the token is unusable); None when the configuration may start."""
    db = cfg.dashboard
    try:
        token = load_token(cfg)
    except TokenError as e:
        return str(e)
    if db.metrics_enabled and not is_loopback(db.metrics_host) and token is None:
        return (f"dashboard.metrics_host {db.metrics_host!r} is not a loopback address and no "
                f"control token is configured ({TOKEN_ENV} or dashboard.control_token_file): "
                f"refusing to serve beyond this host without one")
    return None


class App:
    """The WSGI application. ``metrics``: () -> exposition text; ``view``: () -> the
    dashboard's newest state document (or None)."""

    def __init__(self, cfg, instance: str, metrics: Callable[[], str],
                 view: Callable[[], dict | None], token: str | None):
        self.cfg, self.instance = cfg, instance
        self.metrics, self.view = metrics, view
        self.token = token.encode() if token else None
        self.requests = 0
        self.scrapes = 0                 # counted by the metrics provider
        self.errors = 0

    def __call__(self, environ, start_response):
        self.requests += 1
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        allowed = ROUTES.get(path)
        try:
            if allowed is None:
                code, ctype, body = _json(404, {"error": "not found", "paths": sorted(ROUTES)})
            elif method not in allowed:
                code, ctype, body = _json(405, {"error": f"{method} not allowed on {path}",
                                                "allow": list(allowed)})
            elif method == "POST":
                code, ctype, body = self._control(path, environ)
            else:
                code, ctype, body = self._get(path)
        except Exception as e:           # a bug answers 500; the dashboard keeps running
            self.errors += 1
            code, ctype, body = _json(500, {"error": f"{type(e).__name__}: {e}"})
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        if code == 405:
            headers.append(("Allow", ", ".join(allowed)))
        if code == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="arbpipe"'))
        start_response(f"{code} {_REASONS[code]}", headers)
        return [b"" if method == "HEAD" else body]

    def _audit(self, **entry) -> None:
        audit(self.instance, via="http", **entry)

    # -- GET ---------------------------------------------------------------------------------
    def _get(self, path: str):
        if path == "/":
            return 200, "text/plain; charset=utf-8", (
                "arbpipe: " + ", ".join(f"{' '.join(m)} {p}" for p, m in ROUTES.items()
                                        if p != "/") + "\n").encode()
        if path == "/metrics":
            return 200, METRICS_TYPE, self.metrics().encode()
        if path == "/status":
            return _json(200, status_document(self.instance))
        db = self.cfg.dashboard
        if path == "/healthz":
            ok, problems = health(read_status(self.instance), time.time(), db.health_grace_s)
        else:
            names = self.cfg.local_venues()   # remote venues: `arbpipe stat bridge`
            ok, problems = readiness(read_status(self.instance), self.view(), names,
                                     self.cfg.detector.max_quote_age_ms / 1e3,
                                     self.cfg.detector.sweep_ms / 1e3, time.time_ns(),
                                     db.health_grace_s)
        return _json(200 if ok else 503, {"ok": ok, "problems": problems})

    # -- POST --------------------------------------------------------------------------------
    def _control(self, path: str, environ):
        source = environ.get("REMOTE_ADDR", "?")
        action = path.strip("/")
        if self.token is None:
            self._audit(source=source, action=action, outcome="off")
            return _json(403, {"error": f"control endpoints are off: no token configured "
                                        f"({TOKEN_ENV} or dashboard.control_token_file)"})
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if not auth.startswith("Bearer "):
            self._audit(source=source, action=action, outcome="no token")
            return _json(401, {"error": "Authorization: Bearer <token> required"})
        if not hmac.compare_digest(auth[7:].strip().encode(), self.token):
            self._audit(source=source, action=action, outcome="wrong token")
            return _json(403, {"error": "wrong token"})
        body, why = _read_body(environ)
        if why:
            self._audit(source=source, action=action, outcome=f"bad request: {why}")
            return _json(400, {"error": why})
        if path == "/kill-switch":
            on = body.get("on") if isinstance(body, dict) else None
            if not isinstance(on, bool) or set(body) != {"on"}:
                self._audit(source=source, action=action, outcome="bad request")
                return _json(400, {"error": 'body must be {"on": true} or {"on": false}'})
        elif body not in (None, {}):
            self._audit(source=source, action=action, outcome="bad request")
            return _json(400, {"error": "this endpoint takes no body"})
        try:
            ctl = Control.attach(self.instance)
        except segments.SegmentNotFound:
            self._audit(source=source, action=action, outcome="no strategy control")
            return _json(409, {"error": "no strategy control segment: is the tree running?"})
        try:
            if path == "/kill-switch":
                prev = ctl.set_kill(on)
                self._audit(source=source, action=action, on=on, was=prev, outcome="done")
                return _json(200, {"kill_switch": on, "was": prev})
            if ctl.kill:
                self._audit(source=source, action=action, outcome="kill switch on")
                return _json(409, {"error": "the kill switch is on: turn it off first"})
            ctl.request_reset()
            self._audit(source=source, action=action, outcome="done")
            return _json(200, {"breaker_reset": "requested"})
        finally:
            ctl.close()


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            500: "Internal Server Error", 503: "Service Unavailable"}


def _json(code: int, doc) -> tuple[int, str, bytes]:
    return code, "application/json", (json.dumps(doc, default=str) + "\n").encode()


def _read_body(environ) -> tuple[object, str | None]:
    """(decoded JSON or None when empty, None) or (None, why it is refused)."""
    text = environ.get("CONTENT_LENGTH") or "0"
    try:
        n = int(text)
    except ValueError:
        return None, "bad Content-Length"
    if n < 0:
        return None, "bad Content-Length"
    if n > MAX_BODY:
        return None, f"body too large ({n} bytes, at most {MAX_BODY})"
    raw = environ["wsgi.input"].read(n) if n else b""
    if not raw.strip():
        return None, None
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError):
        return None, "body is not JSON"


class _Quiet(WSGIRequestHandler):
    timeout = 5.0                        # a client that sends nothing is dropped

    def log_message(self, fmt, *args):  # no access log: headers may carry the token
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class HttpServer:
    """Serves ``app`` on ``host:port`` from a daemon thread (port 0: a free one)."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0):
        self.app, self.host, self.port = app, host, port
        self.httpd = None
        self.thread = None

    def start(self) -> int:
        """Bind and serve; returns the bound port (OSError if the address is in use)."""
        cls = _Server6 if ":" in self.host else _Server
        self.httpd = make_server(self.host, self.port, self.app, server_class=cls,
                                 handler_class=_Quiet)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.5}, name="http", daemon=True)
        self.thread.start()
        return self.port

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
