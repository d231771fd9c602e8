"""The supervisor: creates the segments, spawns, pins, watches, restarts and stops the tree.

    simulator (unless --live) -> feed.<venue> x N -> detector -> (strategy, dashboard, persister)
    (``--replay FILE``: one replay process produces every feed.<venue> ring instead)

* Start: refuses to start over a live pipeline of the same instance (the ``supervisor``
  segment's creator is alive); reclaims the stale segments of a dead one; creates every ring
  so that producers and consumers only attach (the supervisor is the creator, so the rings
  outlive any one child and become stale only if the supervisor itself dies).
* CPU plan: explicit per-role core lists from the config, or automatic: with few cores the
  detector gets a core of its own where possible and everything else shares the rest.
* Watch: a child that exits is restarted after 0.1 s; one that dies within 2 s of its start
  (a crash loop) waits an exponential backoff instead (0.1 s doubling to 5 s, reset after
  30 s of uptime); restarts are counted. A restarted consumer resumes from its
  cursor (SPSC tail / its broadcast reader slot), so nothing committed is lost.
* Stop (Ctrl-C, SIGTERM, ``arbpipe down``): producers first (simulator, feeds), then the
  detector once its input rings are drained (bounded wait), then the rest; every segment of
  the instance is unlinked.
* Files: ``<run dir>/<process>.jsonl`` (each child's output as JSON lines), ``supervisor.jsonl`` (one
  JSON object per event), ``status.json`` (what ``arbpipe status`` prints).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil

from arbpipe.paths import run_dir
from arbpipe.transport import segments
from shm_layouts import ring as L
from shm_layouts.kinds import SegmentKind

SUPERVISOR_KIND = int(SegmentKind.SUPERVISOR)  # header kind of the liveness segment (not a ring)
BACKOFF_MIN_S, BACKOFF_MAX_S, STABLE_S = 0.1, 5.0, 30.0
CRASH_LOOP_S = 2.0  # a child that dies sooner than this after its start is crash-looping


@dataclasses.dataclass
class ProcessSpec:
    name: str                   # unique, e.g. "feed.binance"
    role: str                   # simulator | feed | detector | strategy | dashboard | persister
    argv: list[str]
    stage: int                  # stop order: lower stops first (producers)
    cpus: list[int] | None = None
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started: float = 0.0
    next_start: float = 0.0
    backoff: float = BACKOFF_MIN_S
    log: object = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def cpu_plan(specs: list[ProcessSpec], explicit: dict[str, list[int]] | None = None) -> dict:
    """Cores per process: explicit per-role lists win; otherwise the detector gets the last
    available core to itself (when there are 2+) and everything else shares the others."""
    try:
        avail = sorted(psutil.Process().cpu_affinity())
    except AttributeError:
        avail = list(range(os.cpu_count() or 1))
    plan = {}
    explicit = explicit or {}
    if len(avail) >= 2:
        hot, rest = [avail[-1]], avail[:-1]
    else:
        hot = rest = avail
    for s in specs:
        if s.role in explicit and explicit[s.role]:
            plan[s.name] = list(explicit[s.role])
        else:
            plan[s.name] = hot if s.role == "detector" else rest
        s.cpus = plan[s.name]
    return plan


class Supervisor:
    def __init__(self, instance: str, specs: list[ProcessSpec], rings: list[tuple],
                 console=print, drain_s: float = 2.0, setups: list | None = None):
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
            self.marker = segments.Segment.create(self.instance, "supervisor", 4096, h,
                                                  reclaim_stale=True)
        except segments.SegmentExists:
            other = segments.probe(self.instance, "supervisor")
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
            r = cls.create(name, cap, record, policy=policy, instance=self.instance)
            self.created.append(r)
            self.event("ring", name=name, kind=cls.KIND.name.lower(), capacity=cap,
                       policy=policy)

    def start(self, s: ProcessSpec) -> None:
        if s.log is None:
            s.log = open(os.path.join(self.dir, f"{s.name}.jsonl"), "a", buffering=1)
        env = dict(os.environ, ARBPIPE_INSTANCE=self.instance, PYTHONUNBUFFERED="1")
        s.proc = subprocess.Popen(s.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=_log_lines, args=(s.proc, s.name, s.log), daemon=True).start()
        if s.cpus:
            try:
                psutil.Process(s.proc.pid).cpu_affinity(s.cpus)
            except (psutil.Error, OSError):
                pass
        s.started = time.monotonic()
        self.event("start", process=s.name, pid=s.proc.pid, cpus=s.cpus)

    def write_status(self) -> None:
        rows = []
        for s in self.specs:
            pid = s.proc.pid if s.proc else None
            rows.append({"name": s.name, "role": s.role, "pid": pid,
                         "state": "running" if s.alive() else "restarting",
                         "cpus": s.cpus, "restarts": s.restarts,
                         "uptime_s": round(time.monotonic() - s.started, 1) if s.alive() else 0})
        st = {"instance": self.instance, "supervisor_pid": os.getpid(), "started": self.t0,
              "uptime_s": round(time.time() - self.t0, 1), "processes": rows,
              "run_dir": self.dir}
        tmp = os.path.join(self.dir, "status.json.tmp")
        with open(tmp, "w") as f:
            json.dump(st, f, indent=1)
        os.replace(tmp, os.path.join(self.dir, "status.json"))

    def watch_once(self) -> None:
        now = time.monotonic()
        for s in self.specs:
            if s.proc is not None and s.proc.poll() is not None:
                code = s.proc.returncode
                lived = now - s.started
                s.backoff = BACKOFF_MIN_S if lived > STABLE_S else min(s.backoff * 2,
                                                                       BACKOFF_MAX_S)
                # only a crash loop (death within CRASH_LOOP_S) waits the growing backoff;
                # a child killed after it got going is back within BACKOFF_MIN_S
                s.next_start = now + (0 if lived > STABLE_S else s.backoff
                                      if lived < CRASH_LOOP_S else BACKOFF_MIN_S)
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
            self.create_rings()
            for s in sorted(self.specs, key=lambda s: -s.stage):  # consumers first
                self.start(s)
            self.event("up", instance=self.instance, processes=len(self.specs),
                       run_dir=self.dir)
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            last = 0.0
            while not self.stopping and not (until and until()):
                self.watch_once()
                if time.monotonic() - last > 1.0:
                    self.write_status()
                    last = time.monotonic()
                time.sleep(0.05)
        finally:
            self.shutdown()
        return 0

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
        from arbpipe.ops.stat import snapshot
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if all(r["fill"] == 0 for r in snapshot(self.instance) if r["kind"] != "broadcast"):
                return
            time.sleep(0.05)


def _log_lines(proc: subprocess.Popen, name: str, log) -> None:
    """Turn a child's output into its JSON-lines log: {"ts", "process", "pid", "line"}."""
    for raw in proc.stdout:
        rec = {"ts": time.time(), "process": name, "pid": proc.pid,
               "line": raw.decode("utf-8", "replace").rstrip("\n")}
        try:
            log.write(json.dumps(rec) + "\n")
        except ValueError:  # log closed at shutdown
            return


def read_status(instance: str) -> dict | None:
    try:
        with open(os.path.join(run_dir(instance), "status.json")) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return None
    if not segments.pid_alive(st.get("supervisor_pid", 0)):
        return None
    return st


def down(instance: str, timeout: float = 30.0) -> bool:
    """Ask the live supervisor of ``instance`` to stop; wait until it is gone."""
    h = segments.probe(instance, "supervisor")
    if h is None or h.stale:
        segments.clean(instance)
        return False
    os.kill(h.creator_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not segments.pid_alive(h.creator_pid, h.creator_start):
            return True
        time.sleep(0.05)
    raise TimeoutError(f"supervisor pid {h.creator_pid} did not stop within {timeout} s")


def python_module(mod: str, *args) -> list[str]:
    return [sys.executable, "-m", mod, *map(str, args)]


# ------------------------------------------------------------------ the tree --

def free_port_block(n: int, host: str = "127.0.0.1") -> int:
    """A base port P with P..P+n-1 free now (the simulator keeps its ports across restarts,
    so feeds never need new urls)."""
    import random
    import socket
    for _ in range(200):
        base = random.randint(20_000, 60_000 - n)
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.bind((host, base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free local ports for the simulator")


def plan(cfg, config_path: str, instance: str, live: bool = False,
         replay: list[str] | None = None):
    """(process specs, rings) of the tree for a config. ``replay``: the arguments of
    ``procs.replay`` (``arbpipe.replay.replayer.tree_source_args``): one replay process produces
    every feed ring instead of the simulator and the feed handlers."""
    from arbpipe.transport.rings import BroadcastRing, SpscRing
    venues = list(cfg.enabled_venues())
    specs: list[ProcessSpec] = []
    urls: dict[str, str | None] = {v: (cfg.venues[v].url or None) for v in venues}
    if replay is not None:
        specs.append(ProcessSpec("replay", "replay", python_module(
            "procs.replay", *replay, "--config", config_path, "--instance", instance), stage=1))
    elif not live and cfg.simulator.enabled:
        import msgspec

        from arbpipe.config import to_sim_config
        sim = cfg.simulator
        base = sim.port or free_port_block(len(venues), sim.host)
        # the simulator serves exactly the config's native symbols (e.g. coinbase BTC-USDT),
        # venue i on port base + i, fixed so that a restarted simulator keeps its urls
        sc = msgspec.structs.replace(to_sim_config(cfg), port=base)
        sim_path = os.path.join(run_dir(instance), "simulator.json")
        with open(sim_path, "wb") as f:
            f.write(msgspec.json.encode(sc))
        specs.append(ProcessSpec("simulator", "simulator", python_module(
            "procs.simulator", "--config", sim_path), stage=0))
        urls = {v: f"ws://{sim.host}:{base + i}" for i, v in enumerate(sc.venues)}
    for v in (venues if replay is None else []):
        argv = python_module("procs.feed", v, "--config", config_path, "--instance", instance)
        if urls.get(v):
            argv += ["--url", urls[v]]
        specs.append(ProcessSpec(f"feed.{v}", "feed", argv, stage=1))
    specs.append(ProcessSpec("detector", "detector", python_module(
        "procs.detector", "--config", config_path, "--instance", instance), stage=2))
    # -- readers of the opportunities ring (stage 3: stopped after the detector) --------
    # each role appends its ProcessSpec here (strategy, dashboard, persister)
    specs.append(ProcessSpec("dashboard", "dashboard", python_module(
        "procs.dashboard", "--config", config_path, "--instance", instance), stage=3))
    specs.append(ProcessSpec("strategy", "strategy", python_module(
        "procs.strategy", "--config", config_path, "--instance", instance), stage=3))
    from arbpipe.persist.redis_embed import redis_available
    if redis_available(cfg):  # a configured Redis, or a redis-server to embed (main())
        # stage 4: stopped after the strategy, so its last journal entries reach Redis
        specs.append(ProcessSpec("persister", "persister", python_module(
            "procs.persister", "--config", config_path, "--instance", instance), stage=4))
    fr, op, jr = cfg.rings.feed, cfg.rings.opportunities, cfg.rings.trades
    rings = [(SpscRing, f"feed.{v}", fr.capacity, "MarketUpdate", fr.policy) for v in venues]
    rings.append((BroadcastRing, "opportunities", op.capacity, "Opportunity", "overwrite"))
    # strategy -> persister: the trade journal (JournalEntry records)
    rings.append((SpscRing, "journal", jr.capacity, "JournalEntry", jr.policy))
    return specs, rings


class Console:
    """The foreground view of `make up`: supervisor events plus a periodic one-line summary
    of feed rates and the newest opportunity (read with a tap: consumes nothing)."""

    def __init__(self, instance: str):
        self.instance = instance
        self.prev = None
        self.pos = None
        self.opens = 0

    def summary(self) -> str | None:
        import numpy as np

        from arbpipe.transport import ring_kernels as K
        from arbpipe.ops import stat
        from arbpipe.transport.rings import attach_any
        from arbpipe.ops.tap import decode, fmt
        rows = stat.snapshot(self.instance)
        if not rows:
            return None
        prev = {r["name"]: r for r in (self.prev or [])}
        self.prev = rows
        feeds = sum(r["published"] - prev.get(r["name"], r)["published"]
                    for r in rows if r["name"].startswith("feed."))
        newest = ""
        try:
            ring = attach_any("opportunities", instance=self.instance)
        except segments.SegmentError:
            return None
        try:
            buf = np.zeros(64 * ring.rw, np.int64)
            out = np.zeros(3, np.int64)
            head = int(K.head_of(ring.w))
            pos = head if self.pos is None else self.pos
            while True:
                K.peek(ring.w, int(ring.KIND), pos, buf, 64, out)
                k = int(out[1])
                if k == 0:
                    break
                for rec in buf[:k * ring.rw].view(ring.dtype):
                    d = decode(rec, "Opportunity")
                    if d["state"] == "open":
                        self.opens += 1
                        newest = fmt(d, "Opportunity")
                pos = int(out[2])
            self.pos = pos
            published = head
        finally:
            ring.close()
        line = (f"feeds {feeds / 2:,.0f} updates/s | opportunities published {published:,} "
                f"(opened since start {self.opens})")
        return line + (f"\n    newest: {newest}" if newest else "")


def main(config: str | None = None, live: bool = False, detach: bool = False,
         instance: str | None = None, replay: list[str] | None = None) -> int:
    from arbpipe.config import DEFAULT_PATH, ConfigError, load_config
    instance = instance or segments.default_instance()
    path = os.path.abspath(config or DEFAULT_PATH)
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(f"arbpipe: bad config {path}: {e}", file=sys.stderr)
        return 2
    if replay is not None:   # refuse a file the tree cannot be fed with before starting
        from arbpipe.replay.replayer import check_against_config
        try:
            check_against_config(replay[0], cfg)
        except (ValueError, OSError) as e:
            print(f"arbpipe: --replay: {e}", file=sys.stderr)
            return 2
    if detach:
        argv = python_module("procs.cli", "up", "--config", path, "--instance", instance,
                             *(["--live"] if live else []))
        if replay is not None:   # --replay FILE [--rate R | --speed S] [--loop]
            argv += ["--replay", *replay]
        d = run_dir(instance)
        with open(os.path.join(d, "supervisor.out"), "ab") as log:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if read_status(instance):
                print(f"arbpipe: pipeline {instance!r} running (supervisor pid {p.pid}); "
                      f"`arbpipe status`, `arbpipe stat rings`, `arbpipe down`")
                return 0
            if p.poll() is not None:
                print(f"arbpipe: supervisor exited with {p.returncode}; see "
                      f"{os.path.join(d, 'supervisor.out')}", file=sys.stderr)
                return 1
            time.sleep(0.1)
        return 1
    specs, rings = plan(cfg, path, instance, live, replay)
    explicit = {k: v for k, v in cfg.cpu.items() if v != "auto"}
    cplan = cpu_plan(specs, explicit)
    print("[arbpipe] CPU plan: " + ", ".join(f"{k}={v}" for k, v in cplan.items()), flush=True)
    from arbpipe.trading.strategy import Control
    kill = cfg.strategy.kill_switch
    sup = Supervisor(instance, specs, rings, console=lambda s: print(s, flush=True),
                     setups=[lambda inst: Control.create(inst, kill)])
    from arbpipe.persist.redis_embed import supervisor_service
    redis_svc = supervisor_service(cfg, instance, sup.dir, console=lambda s: print(s, flush=True))
    if redis_svc is not None:  # no Redis configured: a private redis-server, up before the children
        sup.setups.append(lambda inst: redis_svc.setup(sup))
    console = Console(instance)
    last = [time.monotonic()]

    def tick():
        if sys.stdout.isatty() or os.environ.get("ARBPIPE_CONSOLE", "1") == "1":
            if time.monotonic() - last[0] >= 2.0:
                last[0] = time.monotonic()
                try:
                    line = console.summary()
                except Exception as e:  # the view must never take the tree down
                    line = f"(summary unavailable: {e})"
                if line:
                    print(f"[arbpipe] {line}", flush=True)
        return False
    try:
        return sup.run(until=tick)
    except segments.SegmentExists as e:
        print(f"arbpipe: {e}", file=sys.stderr)
        return 1
