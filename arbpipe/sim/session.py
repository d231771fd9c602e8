"""Server-side connection machinery shared by every simulated venue.

``VenueHub``   one per venue: owns the venue's quote sequence (``VenueModel``), runs the
               producer that emits update n at simulated time (n + 1) / rate, and fans
               each quote out to the sessions subscribed to its instrument.
``Session``    one per websocket connection: an outgoing frame queue drained by a writer
               task, the venue's timers (server pings, idle / subscribe deadlines,
               heartbeats, lifetime) and the injected faults. Each venue module subclasses
               it with the same shape: ``match`` (paths), ``DEFAULTS`` (timers),
               ``on_open``, ``on_message``, ``on_quote``, ``notice_frames``.

Invariants: a session never blocks the producer (``on_quote`` formats and queues); a
client that lets ``SimConfig.max_queue`` frames pile up is dropped as a slow consumer (at
rate 0, "as fast as possible", the producer waits for it instead). Idle costs nothing:
every timer is an ``asyncio.sleep`` until its next deadline.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from types import SimpleNamespace
from typing import ClassVar

import msgspec

from arbpipe.sim.config import SimConfig, VenueSimConfig
from arbpipe.sim.market import TAG_SESSION, MarketClock, Quote, VenueModel, mix64, stable_id

log = logging.getLogger("arbpipe.sim")

encode = msgspec.json.encode
_decoder = msgspec.json.Decoder()

TIMER_NAMES = ("ping_interval_s", "pong_timeout_s", "idle_timeout_s", "subscribe_deadline_s",
               "heartbeat_s", "repush_s", "funding_push_s", "lifetime_s", "incoming_limit_per_s")

_CLOSE = object()
_ABORT = object()


def decode_json(text):
    """Parsed JSON or raises ValueError (msgspec.DecodeError is a ValueError)."""
    return _decoder.decode(text)


def rfc3339_ns(ns: int | None = None, digits: int = 9) -> str:
    """``2023-02-09T20:30:37.167359596Z`` (digits = 9) or µs (digits = 6)."""
    ns = time.time_ns() if ns is None else ns
    s, frac = divmod(ns, 1_000_000_000)
    frac_s = f"{frac:09d}"[:digits]
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac_s}Z"


class VenueHub:
    """The venue-wide side of the simulator: quote producer and subscriber registry."""

    MAX_CATCHUP = 2000      # updates emitted in one wake-up before the producer skips ahead
    MAX_BATCH = 256         # updates per batch at rate 0

    def __init__(self, name: str, model: VenueModel, cfg: SimConfig, clock: MarketClock,
                 session_cls: type["Session"]):
        self.name = name
        self.model = model
        self.cfg = cfg
        self.vcfg: VenueSimConfig = cfg.venues[name]
        self.clock = clock
        self.session_cls = session_cls
        self.instruments = model.instruments
        self.by_native = model.by_native
        self.subs: list[set[Session]] = [set() for _ in model.instruments]
        self.sessions: set[Session] = set()
        self.last: list[Quote | None] = [None] * len(model.instruments)
        self.n = 0                     # next update index to emit
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()
        self.conn_counter = 0
        self.published = 0
        self.refused_connects = 0
        self._fault_rng = random.Random(mix64(cfg.seed ^ (TAG_SESSION << 56) ^ stable_id(name)))
        self.timers = SimpleNamespace(**{k: getattr(self.vcfg.timeouts, k) if getattr(
            self.vcfg.timeouts, k) is not None else session_cls.DEFAULTS.get(k) for k in TIMER_NAMES})
        self._task: asyncio.Task | None = None

    # -- registry -----------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._produce(), name=f"sim-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def next_conn_no(self) -> int:
        self.conn_counter += 1
        return self.conn_counter

    def refuse_connect(self) -> bool:
        """The ``refuse_connect_p`` fault: True when this handshake is to be refused."""
        p = self.vcfg.faults.refuse_connect_p
        if p and self._fault_rng.random() < p:
            self.refused_connects += 1
            return True
        return False

    def subscribe(self, session: "Session", inst: int) -> None:
        self.subs[inst].add(session)
        if self.clock.start():
            log.debug("market clock started by %s", self.name)
        self.wake.set()

    def unsubscribe(self, session: "Session", inst: int) -> None:
        self.subs[inst].discard(session)

    def drop_session(self, session: "Session") -> None:
        for s in self.subs:
            s.discard(session)
        self.sessions.discard(session)
        self.drained.set()

    def has_subscribers(self) -> bool:
        return any(self.subs)

    def current(self, inst: int) -> Quote:
        """The latest quote of an instrument (what a snapshot shows)."""
        q = self.last[inst]
        if q is None:
            q = self.model.last_before(inst, self.n)
            self.last[inst] = q
        return q

    # -- producer -------------------------------------------------------------------
    def _publish(self, q: Quote) -> None:
        self.last[q.inst] = q
        self.published += 1
        subs = self.subs[q.inst]
        if subs:
            for s in tuple(subs):
                s.on_quote(q)

    async def _produce(self) -> None:
        model = self.model
        dt = model.dt_ms
        paced = model.rate_hz > 0
        idle = True
        while True:
            if not self.has_subscribers() or not self.clock.started:
                idle = True
                self.wake.clear()
                await self.wake.wait()
                continue
            if paced:
                due = int(self.clock.now_ms() // dt) - 1        # last n with (n + 1) * dt <= now
                if idle or due - self.n >= self.MAX_CATCHUP:      # nobody watched, or we fell behind
                    if due + 1 > self.n:
                        self.n = due + 1 if idle else due + 1 - self.MAX_CATCHUP // 2
                        self.last = [None] * len(self.last)
                idle = False
                while self.n <= due:
                    self._publish(model.quote(self.n))
                    self.n += 1
                delay = (model.t_ms(self.n) - self.clock.now_ms()) / 1000.0
                await asyncio.sleep(max(0.0, delay))
            else:
                idle = False
                for _ in range(self.MAX_BATCH):
                    self._publish(model.quote(self.n))
                    self.n += 1
                await self._backpressure()

    async def _backpressure(self) -> None:
        high = min(self.cfg.max_queue // 2, self.MAX_BATCH * 8)   # keep the data fresh, not just fast
        while any(len(s.out) > high for s in self.sessions):
            self.drained.clear()
            await self.drained.wait()
        await asyncio.sleep(0)


class Session:
    """One client connection. Subclasses implement the venue protocol."""

    venue: ClassVar[str] = ""
    DEFAULTS: ClassVar[dict] = {}
    PATHS: ClassVar[tuple[str, ...]] = ()     # documentation: the paths the venue serves

    def __init__(self, hub: VenueHub, ws, path: str):
        self.hub = hub
        self.ws = ws
        self.path = path
        self.model = hub.model
        self.cfg = hub.cfg
        self.faults = hub.vcfg.faults
        self.t = hub.timers
        self.conn_no = hub.next_conn_no()
        self.rng = random.Random(mix64(hub.cfg.seed ^ (TAG_SESSION << 56) ^ (stable_id(hub.name) << 20)
                                       ^ self.conn_no))
        self.out: collections.deque = collections.deque()
        self._out_event = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.opened = time.monotonic()
        self.last_tx = self.opened
        self.last_rx = self.opened
        self.last_data = self.opened       # last data frame queued (heartbeat rules)
        self.stalled_until = 0.0
        self.closing = False
        self.halfopen = False              # the half-open fault: nothing in, nothing out
        self.ever_subscribed = False
        self._held: bytes | None = None
        self._rx_times: collections.deque = collections.deque()
        self.insts: set[int] = set()       # instruments registered with the hub

    # -- venue hooks -----------------------------------------------------------------
    @classmethod
    def match(cls, path: str, single_port: bool = False) -> bool:
        raise NotImplementedError

    def on_open(self) -> None:
        """Called once the websocket is open (send greeting frames, start venue timers)."""

    def on_message(self, msg: str | bytes) -> None:
        raise NotImplementedError

    def on_quote(self, q: Quote) -> None:
        raise NotImplementedError

    def notice_frames(self) -> list[bytes]:
        """Frames announcing a planned disconnect; empty when the venue documents none."""
        return []

    def on_idle_timeout(self) -> None:
        self.close(1000, "idle timeout")

    def heartbeat(self) -> None:
        """Called every ``heartbeat_s`` when the venue has one."""

    # -- subscriptions ---------------------------------------------------------------
    def refused(self, native: str) -> bool:
        f = self.faults
        return f.refuse_subscribe or native in f.refuse_symbols or "*" in f.refuse_symbols

    def add_inst(self, i: int) -> None:
        self.ever_subscribed = True
        if i not in self.insts:
            self.insts.add(i)
            self.hub.subscribe(self, i)

    def remove_inst(self, i: int) -> None:
        if i in self.insts:
            self.insts.discard(i)
            self.hub.unsubscribe(self, i)

    # -- sending -----------------------------------------------------------------------
    def send(self, frame: bytes | str, data: bool = False) -> None:
        """Queue one text frame. ``data`` frames are subject to the injected faults."""
        if self.closing or self.halfopen:
            return
        if self.stalled_until and time.monotonic() < self.stalled_until:
            return
        if isinstance(frame, str):
            frame = frame.encode()
        if data:
            self.last_data = time.monotonic()
            f = self.faults
            if f.malformed_p and self.rng.random() < f.malformed_p:
                frame = self._malform(frame)
            if f.duplicate_p and self.rng.random() < f.duplicate_p:
                self.out.append(frame)
            if self._held is not None:
                self.out.append(frame)
                frame, self._held = self._held, None
            elif f.reorder_p and self.rng.random() < f.reorder_p:
                self._held = frame
                return
        self.out.append(frame)
        self._out_event.set()
        if len(self.out) > self.cfg.max_queue and self.model.rate_hz > 0:
            log.info("%s conn %d: slow consumer (%d frames queued), dropping", self.hub.name,
                     self.conn_no, len(self.out))
            self.abort()

    def _malform(self, frame: bytes) -> bytes:
        r = self.rng.random()
        if r < 0.4:
            return frame[: max(1, len(frame) // 2)]                 # truncated JSON
        if r < 0.6:
            return b"<html><body><h1>502 Bad Gateway</h1></body></html>"   # not JSON
        if r < 0.8:
            return frame.replace(b'"', b"'", 3)                     # broken quoting
        return b'{"unexpected":' + str(self.rng.randrange(1 << 30)).encode() + b"}"

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send what is queued, then a close frame."""
        if not self.closing and not self.halfopen:
            self.out.append((_CLOSE, code, reason))
            self._out_event.set()
            self.closing = True

    def abort(self) -> None:
        """Drop the TCP connection now, without a close frame."""
        self.closing = True
        self.out.clear()
        self.out.append((_ABORT,))
        self._out_event.set()

    async def _writer(self) -> None:
        ws = self.ws
        out = self.out
        hub = self.hub
        low = self.cfg.max_queue // 4
        while True:
            while not out:
                self._out_event.clear()
                await self._out_event.wait()
            item = out.popleft()
            if type(item) is tuple:
                if item[0] is _ABORT:
                    ws.transport.abort()
                    return
                await ws.close(item[1], item[2])
                return
            await ws.send(item, text=True)
            self.last_tx = time.monotonic()
            if len(out) < low and not hub.drained.is_set():
                hub.drained.set()

    # -- lifecycle ---------------------------------------------------------------------
    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        return task

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed  # lazy: the optional `sim` extra
        self.hub.sessions.add(self)
        writer = self.spawn(self._writer())
        try:
            self._start_timers()
            self.on_open()
            limit = self.t.incoming_limit_per_s
            async for msg in self.ws:
                now = time.monotonic()
                self.last_rx = now
                if limit:
                    rx = self._rx_times
                    rx.append(now)
                    while rx and rx[0] <= now - 1.0:
                        rx.popleft()
                    if len(rx) > limit:
                        log.info("%s conn %d: over %s msgs/s, disconnecting", self.hub.name, self.conn_no, limit)
                        self.close(1008, "Too many requests")
                        continue
                if self.closing:
                    continue
                try:
                    self.on_message(msg)
                except Exception:          # a protocol bug must not kill the server
                    log.exception("%s: error handling %r", self.hub.name, msg[:200])
            if not writer.done():          # client closed: let queued frames go, then stop
                writer.cancel()
        except ConnectionClosed:
            pass
        finally:
            self.closing = True
            self.hub.drop_session(self)
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- timers ------------------------------------------------------------------------
    def _start_timers(self) -> None:
        t, f = self.t, self.faults
        if t.ping_interval_s:
            self.spawn(self._server_pings(t.ping_interval_s, t.pong_timeout_s))
        if t.idle_timeout_s:
            self.spawn(self._idle_watch(t.idle_timeout_s))
        if t.subscribe_deadline_s:
            self.spawn(self._subscribe_deadline(t.subscribe_deadline_s))
        if t.heartbeat_s:
            self.spawn(self._every(t.heartbeat_s, self.heartbeat))
        if t.lifetime_s:
            self.spawn(self._after(t.lifetime_s, lambda: self.close(1000, "connection lifetime reached")))
        if f.drop_every_s:
            self.spawn(self._after(f.drop_every_s, self.abort))
        if f.stall_every_s and f.stall_s:
            self.spawn(self._stalls(f.stall_every_s, f.stall_s))
        if f.notice_every_s:
            self.spawn(self._notice(f.notice_every_s, f.notice_lead_s))
        if f.halfopen_after_s:
            self.spawn(self._half_open(f.halfopen_after_s, f.halfopen_hold_s))

    async def _after(self, delay: float, fn) -> None:
        await asyncio.sleep(delay)
        fn()

    async def _every(self, period: float, fn) -> None:
        while True:
            await asyncio.sleep(period)
            if not self.closing:
                fn()

    async def _server_pings(self, interval: float, timeout: float | None) -> None:
        n = 0
        while True:
            await asyncio.sleep(interval)
            if self.closing or self.halfopen or (self.stalled_until and
                                                  time.monotonic() < self.stalled_until):
                continue
            n += 1
            try:
                waiter = await self.ws.ping(f"{int(time.time() * 1000)}-{n}".encode())
            except Exception:
                return
            if timeout:
                self.spawn(self._await_pong(waiter, timeout))

    async def _await_pong(self, waiter, timeout: float) -> None:
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            log.info("%s conn %d: no pong within %.1fs, closing", self.hub.name, self.conn_no, timeout)
            self.close(1008, "pong timeout")
        except Exception:
            pass

    def activity(self) -> float:
        """Monotonic time of the last traffic either way (idle rules of okx / bybit)."""
        return max(self.last_tx, self.last_rx)

    async def _idle_watch(self, timeout: float) -> None:
        while True:
            wait = self.activity() + timeout - time.monotonic()
            if wait <= 0:
                if not self.closing:
                    self.on_idle_timeout()
                return
            await asyncio.sleep(wait)

    async def _subscribe_deadline(self, deadline: float) -> None:
        await asyncio.sleep(deadline)
        if not self.ever_subscribed:
            self.close(1000, "subscribe deadline exceeded")

    async def _stalls(self, every: float, length: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.stalled_until = time.monotonic() + length
            await asyncio.sleep(length)

    async def _half_open(self, after: float, hold: float) -> None:
        """The peer vanishes without a FIN: stop sending (frames, pings, closes) and stop
        reading, so the client's pings go unanswered; then drop the socket after ``hold``."""
        await asyncio.sleep(after)
        if self.closing:
            return
        self.halfopen = True
        self.out.clear()
        try:
            self.ws.transport.pause_reading()
        except Exception:  # noqa: BLE001 - transport already gone
            return
        log.info("%s conn %d: half-open for %.1f s", self.hub.name, self.conn_no, hold)
        await asyncio.sleep(hold)
        self.abort()

    async def _notice(self, every: float, lead: float) -> None:
        await asyncio.sleep(every)
        for frame in self.notice_frames():
            self.send(frame)
        await asyncio.sleep(lead)
        self.close(1001, "service upgrade")
