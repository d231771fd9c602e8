"""The simulator server: websockets listeners, routing, and ways to run it.

``Simulator``        asyncio object: ``await start()`` binds, ``urls`` / ``ports`` say where,
                     ``await stop()`` closes every connection and listener.
``run_simulator``    blocking; returns when ``stop`` (a threading.Event) is set, or on
                     SIGINT / SIGTERM when called from the main thread.
``SimulatorThread``  the simulator on a background thread (tests): ``start()`` returns once
                     bound; ``stop()`` joins; usable as a context manager.
``SimulatorProcess`` the simulator as a child process (``python -m procs.simulator``).

Each venue gets its own port by default (``port + i`` in ``SimConfig.venues`` order, or
free ports when ``port`` is 0); with ``single_port`` every venue shares one port and the
request path picks the venue (``protocols.route``). Unknown paths get HTTP 404.

REST: a plain HTTP GET of a path in a served venue's ``REST_PATHS`` (the depth snapshots of
Binance ``/api/v3/depth``, USD-M ``/fapi/v1/depth`` and Gate ``/api/v4/spot/order_book``)
is answered on the venue's port by its ``rest_get(hub, path, query)`` from the
``process_request`` hook, before any websocket handshake: JSON body, ``Connection: close``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from email.utils import formatdate
from http import HTTPStatus

from arbpipe.sim.config import SimConfig
from arbpipe.sim.market import Market
from arbpipe.sim.protocols import PROTOCOLS, route, venue_paths
from arbpipe.sim.session import VenueHub

log = logging.getLogger("arbpipe.sim")


def http_response(status: int, body: bytes, content_type: str = "application/json"):
    """A plain HTTP response (REST) for the websockets server's ``process_request``."""
    from websockets.datastructures import Headers  # lazy: the optional `sim` extra
    from websockets.http11 import Response
    st = HTTPStatus(status)
    if body[:1] == b"<":
        content_type = "text/html"
    headers = Headers([("Date", formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Length", str(len(body))), ("Content-Type", content_type)])
    return Response(st.value, st.phrase, headers, body)


class Simulator:
    """All venues of one config, served by one event loop."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.market = Market(config)
        self.hubs: dict[str, VenueHub] = {}
        self.ports: dict[str, int] = {}
        self.urls: dict[str, str] = {}
        self._servers: list = []

    def _handler(self, venues: tuple[str, ...], single: bool):
        hubs = self.hubs

        def pick(path: str) -> str | None:
            if single:
                return route(path, venues, True)
            name = venues[0]
            return name if PROTOCOLS[name].match(path, False) else None

        def rest(path: str):
            """The REST answer for ``path`` when a venue of this listener serves it."""
            p, _, query = path.partition("?")
            for name in venues:
                cls = PROTOCOLS[name]
                if p in getattr(cls, "REST_PATHS", ()):
                    status, body = cls.rest_get(hubs[name], p, query)
                    return http_response(status, body)
            return None

        def process_request(connection, request):
            answer = rest(request.path)
            if answer is not None:
                return answer
            name = pick(request.path)
            if name is None:
                return connection.respond(HTTPStatus.NOT_FOUND, f"no venue serves {request.path}\n")
            hub = hubs[name]
            if hub.refuse_connect():
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                          "503 Service Temporarily Unavailable (injected fault)\n")
            return None

        async def handler(ws):
            name = pick(ws.request.path)
            if name is None:                     # process_request already refused it
                return
            hub = hubs[name]
            session = hub.session_cls(hub, ws, ws.request.path)
            await session.run()

        return handler, process_request

    async def start(self) -> dict[str, str]:
        from websockets.asyncio.server import serve  # lazy: websockets is the optional `sim` extra
        cfg = self.config
        for name in cfg.venues:
            hub = VenueHub(name, self.market.venue(name), cfg, self.market.clock, PROTOCOLS[name])
            hub.start()
            self.hubs[name] = hub
        if cfg.clock_start == "launch":
            self.market.clock.start()
        groups: list[tuple[tuple[str, ...], int]]
        if cfg.single_port:
            groups = [(tuple(cfg.venues), cfg.port)]
        else:
            groups = [((name,), cfg.port + i if cfg.port else 0) for i, name in enumerate(cfg.venues)]
        try:
            for venues, port in groups:
                handler, process_request = self._handler(venues, cfg.single_port)
                server = await serve(handler, cfg.host, port, process_request=process_request,
                                     ping_interval=None, compression=None, max_size=1 << 20,
                                     close_timeout=2, server_header="arbpipe-sim")
                self._servers.append(server)
                bound = server.sockets[0].getsockname()[1]
                host = cfg.host if ":" not in cfg.host else f"[{cfg.host}]"
                for name in venues:
                    self.ports[name] = bound
                    self.urls[name] = f"ws://{host}:{bound}"
        except BaseException:
            await self.stop()
            raise
        return dict(self.urls)

    def describe(self) -> dict:
        """What the simulator serves, as one JSON-able dict (the CLI's ready line)."""
        return {"event": "ready", "pid": os.getpid(), "host": self.config.host, "seed": self.config.seed,
                "single_port": self.config.single_port, "urls": dict(self.urls), "ports": dict(self.ports),
                "paths": {n: list(venue_paths(n)) for n in self.urls}}

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 5.0)
            except asyncio.TimeoutError:
                log.warning("simulator: connections did not close in time")
        self._servers.clear()
        for hub in self.hubs.values():
            await hub.stop()


async def serve_until(config: SimConfig, stop: asyncio.Event, ready=None) -> None:
    """Run until ``stop`` is set; ``ready(simulator)`` is called once bound."""
    sim = Simulator(config)
    await sim.start()
    try:
        if ready is not None:
            ready(sim)
        await stop.wait()
    finally:
        await sim.stop()


def run_simulator(config: SimConfig, ready=None, stop: threading.Event | None = None) -> None:
    """Blocking run. ``ready(simulator)`` is called once every port is bound. Returns when
    ``stop`` is set, or on SIGINT / SIGTERM when run on the main thread."""

    async def main():
        ev = asyncio.Event()
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, ev.set)
        watcher = None
        if stop is not None:
            watcher = loop.run_in_executor(None, stop.wait)
            watcher.add_done_callback(lambda _f: ev.set())
        try:
            await serve_until(config, ev, ready)
        finally:
            if stop is not None and not stop.is_set():
                stop.set()
            if watcher is not None:
                await watcher

    asyncio.run(main())


class SimulatorThread:
    """The simulator on a background thread. ``start()`` returns once bound."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.urls: dict[str, str] = {}
        self.ports: dict[str, int] = {}
        self.simulator: Simulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_ev: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="arbpipe-sim", daemon=True)

    def _run(self) -> None:
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop_ev = asyncio.Event()

            def ready(sim):
                self.simulator = sim
                self.urls = dict(sim.urls)
                self.ports = dict(sim.ports)
                self._ready.set()

            await serve_until(self.config, self._stop_ev, ready)

        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
        finally:
            self._ready.set()

    def start(self, timeout: float = 10.0) -> "SimulatorThread":
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("simulator did not start in time")
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error!r}") from self._error
        return self

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the simulator's loop and return its result (tests, probes)."""
        if self._loop is None:
            raise RuntimeError("simulator not running")

        async def run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5.0)

    def url(self, venue: str, path: str = "") -> str:
        return self.urls[venue] + path

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop_ev is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop_ev.set)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("simulator thread did not stop")

    def __enter__(self) -> "SimulatorThread":
        return self.start() if not self._thread.is_alive() else self

    def __exit__(self, *exc) -> None:
        self.stop()


class SimulatorProcess:
    """``python -m procs.simulator`` as a child; ``start()`` reads its ready line."""

    def __init__(self, args: list[str] | None = None, python: str | None = None, cwd: str | None = None):
        self.args = list(args or [])
        self.python = python or sys.executable
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}

    @property
    def urls(self) -> dict[str, str]:
        return self.info.get("urls", {})

    def start(self, timeout: float = 30.0) -> "SimulatorProcess":
        self.proc = subprocess.Popen([self.python, "-m", "procs.simulator", *self.args], cwd=self.cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not line or not line[0].strip():
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(5)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"simulator process gave no ready line (rc={self.proc.returncode}): {err[-2000:]}")
        self.info = json.loads(line[0])
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        return self.proc.returncode

    def __enter__(self) -> "SimulatorProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
