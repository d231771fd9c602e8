"""The supervisor: creates the segments, spawns, pins, watches, restarts and stops the tree.

    simulator (unless --live) -> feed.<venue> x N -> detector -> (strategy, dashboard, persister)
    (``--replay FILE``: one replay process produces every feed.<venue> ring instead)

* Start: refuses to start over a live pipeline of the same instance (the ``supervisor``
  segment's creator is alive); reclaims the stale segments of a dead one; creates every ring
  so that producers and consumers only attach (the supervisor is the creator, so the rings
  outlive any one child and become stale only if the supervisor itself dies).
* CPU plan: explicit per-role core lists from the config, or automatic: the hot path
  (detector and strategy) together on the last core, everything else (feeds, simulator,
  dashboard, persister, ...) on the others; with 3+ cores in the low-latency profile the
  detector and the strategy get one core each. Hot roles are also niced (``HOT_NICE``)
  where permitted (the plan says when not); with ``[cpu] realtime_priority`` > 0 the hot
  roles that sleep run under SCHED_FIFO at that priority (a ``realtime_refused`` event when
  the user lacks the right). Idle strategies: ``[cpu] profile``
  (``arbpipe.transport.idle.plan_idle``): default, nothing spins; low-latency, the hot
  roles busy-spin on cores of their own or yield on a shared hot core, and a spinning
  role that would share a core with a cold one is named and made to sleep instead.
* Watch: a child that exits is restarted after 0.1 s; one that dies within 2 s of its start
  (a crash loop) waits an exponential backoff instead (0.1 s doubling to 5 s, reset after
  30 s of uptime); restarts are counted. A restarted consumer resumes from its
  cursor (SPSC tail / its broadcast reader slot), so nothing committed is lost.
* Stop (Ctrl-C, SIGTERM, ``arbpipe down``): producers first (simulator, feeds), then the
  detector once its input rings are drained (bounded wait), then the rest; every segment of
  the instance is unlinked.
* Fork server (``[supervisor] fork_server``; ``arbpipe.ops.forkserver``): the Python roles
  are forked from one preloaded process instead of exec'd, sharing what they all import
  copy-on-write; cores, nice, output capture, restarts and the stop order stay as above.
  A role is exec'd whenever no fork server is ready.
* Files: ``<run dir>/<process>.jsonl`` (each child's output as JSON lines), ``supervisor.jsonl`` (one
  JSON object per event), ``status.json`` (what ``arbpipe status`` prints).

The tree itself (which processes and rings a config makes) and `arbpipe up` are in
``arbpipe.ops.tree``; reading the status of a running tree and stopping it, in
``arbpipe.ops.control``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import threading
import time

import psutil

from arbpipe.ops.control import SUPERVISOR_SEGMENT
from arbpipe.ops.forkserver import ForkServer, forkable
from arbpipe.ops.stat import snapshot
from arbpipe.paths import run_dir
from arbpipe.transport import idle as IDLE
from arbpipe.transport import segments
from shm_layouts import ring as L
from shm_layouts.kinds import SegmentKind

SUPERVISOR_KIND = int(SegmentKind.SUPERVISOR)  # header kind of the liveness segment (not a ring)
BACKOFF_MIN_S, BACKOFF_MAX_S, STABLE_S = 0.1, 5.0, 30.0
CRASH_LOOP_S = 2.0  # a child that dies sooner than this after its start is crash-looping
HOT_NICE = -10      # the hot roles' nice value, where permitted
WATCH_S = 0.5       # the watch loop's longest sleep (a child's exit wakes it at once)


SIMULATOR_READY_S = 15.0     # the longest wait for the simulator's ready line at start
# the start of a role's {"event": "ready", ...} line as its JSON log record quotes it
READY_MARK = b'{\\"event\\": \\"ready\\"'


@dataclasses.dataclass
class ProcessSpec:
    name: str                   # unique, e.g. "feed.binance"
    role: str                   # simulator | feed | detector | strategy | dashboard | persister
    argv: list[str]
    stage: int                  # stop order: lower stops first (producers)
    cpus: list[int] | None = None
    env: dict | None = None     # extra environment (the idle strategy, ARBPIPE_IDLE)
    nice: int = 0               # nice value to set after the start (0: leave as is)
    rt_priority: int = 0        # SCHED_FIFO priority to set after the start (0: leave as is)
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started: float = 0.0
    exited: float = 0.0         # monotonic time of its last exit (0: never exited)
    next_start: float = 0.0
    backoff: float = BACKOFF_MIN_S
    log: object = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def cpu_plan(specs: list[ProcessSpec], explicit: dict[str, list[int]] | None = None,
             profile: str = "default", notes: list | None = None, realtime: int = 0) -> dict:
    """Cores per process: explicit per-role lists win; otherwise the hot roles (detector,
    strategy) share the last available core (when there are 2+; in the low-latency
    profile with 3+ cores, one core each) and everything else shares the others. Sets
    each spec's ``cpus``, ``env`` (its idle strategy), ``nice`` and, with ``realtime`` > 0,
    ``rt_priority`` of the hot roles that sleep (a spinning or yielding role under
    SCHED_FIFO would starve everything else on its core: it keeps its nice value and a note
    says so); what the plan had to change or could not do goes to ``notes`` (conflicts of
    spinning roles first)."""
    try:
        avail = sorted(psutil.Process().cpu_affinity())
    except AttributeError:
        avail = list(range(os.cpu_count() or 1))
    plan = {}
    explicit = explicit or {}
    if profile == "low-latency" and len(avail) >= 3:
        hot = {"detector": [avail[-1]], "strategy": [avail[-2]]}
        rest = avail[:-2]
    elif len(avail) >= 2:
        hot = {r: [avail[-1]] for r in IDLE.HOT_ROLES}
        rest = avail[:-1]
    else:
        hot = {r: avail for r in IDLE.HOT_ROLES}
        rest = avail
    for s in specs:
        if s.role in explicit and explicit[s.role]:
            plan[s.name] = list(explicit[s.role])
        else:
            plan[s.name] = hot.get(s.role, rest)
        s.cpus = plan[s.name]
    idle, problems = IDLE.plan_idle(profile, plan, {s.name: s.role for s in specs})
    notes = notes if notes is not None else []
    for p in problems:
        notes.append(f"warning: {p}: it sleeps instead (give it a core of its own)")
    bad = {p.split(" ", 1)[0] for p in problems}
    for s in specs:
        name = IDLE.SleepingIdle.NAME if s.name in bad else idle[s.name]
        s.env = dict(s.env or {}, **{IDLE.IDLE_ENV: name})
        if s.role in IDLE.HOT_ROLES:
            s.nice = HOT_NICE
            if realtime and name == IDLE.SleepingIdle.NAME:
                s.rt_priority = realtime
            elif realtime:
                notes.append(f"note: {s.name} {name}s when idle: not made real-time "
                             f"(SCHED_FIFO would starve its core)")
    return plan


def idle_summary(specs: list[ProcessSpec]) -> str:
    """One line: each hot process's idle strategy and nice value."""
    return ", ".join(f"{s.name}={(s.env or {}).get(IDLE.IDLE_ENV, 'sleep')}"
                     + (f" nice {s.nice}" if s.nice else "")
                     + (f" SCHED_FIFO {s.rt_priority}" if s.rt_priority else "")
                     for s in specs if s.role in IDLE.HOT_ROLES)


class Supervisor:
    def __init__(self, instance: str, specs: list[ProcessSpec], rings: list[tuple],
                 console=print, drain_s: float = 2.0, setups: list | None = None,
                 fork_server: bool = False):
        self.instance = instance
        self.specs = specs
        self.rings = rings            # (RingClass, name, capacity, record, policy)
        self.setups = setups or []    # f(instance) -> object with close(): other segments
        self.console = console
        self.drain_s = drain_s
        self.dir = run_dir(instance)
        self.events = open(os.path.join(self.dir, "supervisor.jsonl"), "a", buffering=1)
        self.stopping = False
        self.t0 = time.time()
        self.created: list = []
        self.marker = None
        self.exited = threading.Event()   # set when a child's output ends (it exited)
        self._nice_refused = False
        self._rt_refused = False
        self._fs_waited = False
        self.fork_server = ForkServer(self.event, self._log_fork_server) if fork_server else None
        self._fs_log = None

    def _log_fork_server(self, proc) -> None:
        if self._fs_log is None:
            self._fs_log = open(os.path.join(self.dir, "forkserver.jsonl"), "a", buffering=1)
        threading.Thread(target=_log_lines, args=(proc, "forkserver", self._fs_log),
                         daemon=True).start()

    # -- events ---------------------------------------------------------------
    def event(self, what: str, **kw) -> None:
        rec = {"ts": time.time(), "event": what, **kw}
        self.events.write(json.dumps(rec) + "\n")
        detail = " ".join(f"{k}={v}" for k, v in kw.items())
        self.console(f"[arbpipe] {time.strftime('%H:%M:%S')} {what} {detail}".rstrip())

    # -- lifecycle --------------------------------------------------------------
    def claim(self) -> None:
        """Become the one live supervisor of this instance. The previous run's trade
        journal is kept as ``journal-<time>.jsonl``: a new tree starts flat, a restarted
        strategy within one run rebuilds from ``journal.jsonl``."""
        segments.clean(self.instance)  # stale segments of a crashed run
        h = segments.HeaderInfo(L.MAGIC, L.LAYOUT_VERSION, SUPERVISOR_KIND, 8, 1, 0, 0, 0, 0, 0,
                                0, 0, L.BLOCK, "supervisor")
        try:
            self.marker = segments.Segment.create(self.instance, SUPERVISOR_SEGMENT, 4096, h,
                                                  reclaim_stale=True)
        except segments.SegmentExists:
            other = segments.probe(self.instance, SUPERVISOR_SEGMENT)
            raise segments.SegmentExists(
                f"pipeline {self.instance!r} is already running (supervisor pid "
                f"{other.creator_pid if other else '?'}); `arbpipe down` stops it") from None
        journal = os.path.join(self.dir, "journal.jsonl")
        if os.path.exists(journal):
            os.replace(journal, os.path.join(
                self.dir, time.strftime("journal-%Y%m%dT%H%M%S.jsonl", time.gmtime())))

    def create_rings(self) -> None:
        for setup in self.setups:
            self.created.append(setup(self.instance))
        for cls, name, cap, record, policy in self.rings:
            r = cls.create_segment(name, cap, record, policy=policy, instance=self.instance)
            self.created.append(r)
            self.event("ring", name=name, kind=cls.KIND.name.lower(), capacity=cap,
                       policy=policy)

    def start(self, s: ProcessSpec) -> None:
        if s.log is None:
            s.log = open(os.path.join(self.dir, f"{s.name}.jsonl"), "a", buffering=1)
        env = dict(os.environ, ARBPIPE_INSTANCE=self.instance, PYTHONUNBUFFERED="1",
                   **(s.env or {}))
        s.proc = None
        if self.fork_server is not None and forkable(s.argv):  # None: no server ready
            s.proc = self.fork_server.spawn(s.argv, env, os.getcwd(), s.cpus, s.nice,
                                            wait=not self._fs_waited)
            self._fs_waited = True        # only the first start waits for the server
        if s.proc is None:
            s.proc = subprocess.Popen(s.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=_log_lines, args=(s.proc, s.name, s.log, self.exited),
                         daemon=True).start()
        if s.cpus:
            try:
                psutil.Process(s.proc.pid).cpu_affinity(s.cpus)
            except (psutil.Error, OSError):
                pass
        if s.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, s.proc.pid, s.nice)
            except OSError as e:
                if not self._nice_refused:
                    self._nice_refused = True
                    self.event("nice_refused", process=s.name, nice=s.nice,
                               error=e.strerror or str(e))
        if s.rt_priority:
            try:
                os.sched_setscheduler(s.proc.pid, os.SCHED_FIFO,
                                      os.sched_param(s.rt_priority))
            except OSError as e:
                if not self._rt_refused:
                    self._rt_refused = True
                    self.event("realtime_refused", process=s.name, priority=s.rt_priority,
                               error=e.strerror or str(e))
        s.started = time.monotonic()
        self.event("start", process=s.name, pid=s.proc.pid, cpus=s.cpus)

    def write_status(self) -> None:
        rows = []
        for s in self.specs:
            pid = s.proc.pid if s.proc else None
            rows.append({"name": s.name, "role": s.role, "pid": pid,
                         "state": "running" if s.alive() else "restarting",
                         "cpus": s.cpus, "restarts": s.restarts,
                         "uptime_s": round(time.monotonic() - s.started, 1) if s.alive() else 0,
                         # how long it has been waiting to run again (health_grace_s)
                         "down_s": 0 if s.alive() else
                         round(time.monotonic() - (s.exited or time.monotonic()), 1)})
        st = {"instance": self.instance, "supervisor_pid": os.getpid(), "started": self.t0,
              "uptime_s": round(time.time() - self.t0, 1), "processes": rows,
              "run_dir": self.dir}
        tmp = os.path.join(self.dir, "status.json.tmp")
        with open(tmp, "w") as f:
            json.dump(st, f, indent=1)
        os.replace(tmp, os.path.join(self.dir, "status.json"))

    def watch_once(self) -> None:
        if self.fork_server is not None:
            self.fork_server.check()
        now = time.monotonic()
        for s in self.specs:
            if s.proc is not None and s.proc.poll() is not None:
                code = s.proc.returncode
                lived = now - s.started
                if lived > STABLE_S:
                    s.backoff = BACKOFF_MIN_S
                # only a crash loop (death within CRASH_LOOP_S) waits the backoff, and only
                # it doubles it (0.1 s, 0.2 s, ... 5 s); a child killed after it got going
                # is back within BACKOFF_MIN_S and leaves the backoff as it was
                if lived < CRASH_LOOP_S:
                    wait = s.backoff
                    s.backoff = min(s.backoff * 2, BACKOFF_MAX_S)
                else:
                    wait = 0 if lived > STABLE_S else BACKOFF_MIN_S
                s.next_start = now + wait
                s.exited = now
                s.proc = None
                s.restarts += 1
                self.event("exit", process=s.name, code=code, restart_in_s=round(
                    s.next_start - now, 2))
            if s.proc is None and now >= s.next_start and not self.stopping:
                self.start(s)

    def run(self, until=None) -> int:
        """Run until a signal (or ``until()`` is true). Returns the exit code."""
        self.claim()
        try:
            if self.fork_server is not None:
                self.fork_server.launch()    # preloads while the segments are made
            self.create_rings()
            # the simulator first, until it listens (it stands in for the venues the feeds
            # connect to: a feed forked in milliseconds would otherwise find no server and
            # count a connect failure); then every ring role, consumers first
            sims = [s for s in self.specs if s.role == "simulator"]
            for s in sims:
                self._start_and_wait_ready(s, SIMULATOR_READY_S)
            for s in sorted(self.specs, key=lambda s: -s.stage):
                if s.role != "simulator":
                    self.start(s)
            self.event("up", instance=self.instance, processes=len(self.specs),
                       run_dir=self.dir)
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            last = 0.0
            while not self.stopping and not (until and until()):
                self.exited.clear()
                self.watch_once()
                if time.monotonic() - last > 1.0:
                    self.write_status()
                    last = time.monotonic()
                self.exited.wait(self._idle_s())
        finally:
            self.shutdown()
        return 0

    def _start_and_wait_ready(self, s: ProcessSpec, timeout: float) -> None:
        """Start ``s`` and wait until its output has a ``"event": "ready"`` line (at most
        ``timeout`` s; a role that never says so just costs the wait)."""
        path = os.path.join(self.dir, f"{s.name}.jsonl")
        start = os.path.getsize(path) if os.path.exists(path) else 0
        self.start(s)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and s.proc is not None and s.proc.poll() is None:
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    if READY_MARK in f.read():
                        return
            except OSError:
                pass
            time.sleep(0.02)

    def _idle_s(self) -> float:
        """How long the watch loop may sleep: until a child's output ends (it exited:
        ``exited`` is set), the next restart is due, or ``WATCH_S`` (status, ``until``)."""
        now = time.monotonic()
        t = WATCH_S
        for s in self.specs:
            if s.proc is None:
                t = min(t, s.next_start - now)
        return max(t, 0.005)

    def _on_signal(self, signum, frame):
        self.stopping = True

    def shutdown(self) -> None:
        self.stopping = True
        self.event("stopping", instance=self.instance)
        for stage in sorted({s.stage for s in self.specs}):
            group = [s for s in self.specs if s.stage == stage and s.alive()]
            if stage > 0:
                self._drain(self.drain_s)
            for s in group:
                s.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5.0
            for s in group:
                try:
                    s.proc.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    s.proc.kill()
                    s.proc.wait(5)
                self.event("stopped", process=s.name, code=s.proc.returncode)
        if self.fork_server is not None:
            self.fork_server.close()
        for r in self.created:
            r.close()
        removed = segments.clean(self.instance, everything=True)
        if self.marker is not None:
            self.marker.close()
        self.event("down", instance=self.instance, segments_removed=len(removed))
        try:
            os.unlink(os.path.join(self.dir, "status.json"))
        except OSError:
            pass
        self.events.close()

    def _drain(self, limit_s: float) -> None:
        """Wait (bounded) until every SPSC/MPMC ring has been consumed."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if all(r["fill"] == 0 for r in snapshot(self.instance) if r["kind"] != "broadcast"):
                return
            time.sleep(0.05)


def _log_lines(proc: subprocess.Popen, name: str, log, exited=None) -> None:
    """Turn a child's output into its JSON-lines log: {"ts", "process", "pid", "line"};
    set ``exited`` when the output ends (the child exited)."""
    try:
        for raw in proc.stdout:
            rec = {"ts": time.time(), "process": name, "pid": proc.pid,
                   "line": raw.decode("utf-8", "replace").rstrip("\n")}
            try:
                log.write(json.dumps(rec) + "\n")
            except ValueError:  # log closed at shutdown
                return
    finally:
        if exited is not None:
            exited.set()
