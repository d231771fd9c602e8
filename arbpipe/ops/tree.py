"""The tree of a config and `arbpipe up`.

``plan``: the process specs and rings of a config --

    simulator (unless --live) -> feed.<venue> x N -> detector -> (strategy, dashboard, persister)
    (``--replay FILE``: one replay process produces every feed.<venue> ring instead)
    ([bridge] enabled: bridge.in produces the feed.<venue> rings of the remote venues, which
    get no feed handler and no simulator; bridge.out taps the rings sent to another tree)

``main``: `arbpipe up` -- checks the config (and a ``--replay`` recording against it), then
runs the tree under the ``Supervisor`` (``arbpipe.ops.supervisor``) in the foreground, with
``Console`` printing a periodic summary, or starts itself detached and waits until the tree
runs.
"""
from __future__ import annotations

import math
import os
import random
import socket
import subprocess
import sys
import time

import msgspec
import numpy as np

from arbpipe.bridge.link import configured_bridge_url
from arbpipe.bridge.stats import local_ring
from arbpipe.config import DEFAULT_PATH, ConfigError, cpu_plan as config_cpu_plan, cpu_profile, \
    cpu_realtime, load_config, to_sim_config
from arbpipe.ops import stat
from arbpipe.ops.control import read_status
from arbpipe.ops.http import check_bind
from arbpipe.ops.supervisor import ProcessSpec, Supervisor, cpu_plan, idle_summary
from arbpipe.ops.tap import decode, fmt
from arbpipe.paths import run_dir
from arbpipe.persist.redis_embed import redis_available, supervisor_service
from arbpipe.replay.source import check_against_config
from arbpipe.trading.control import Control
from arbpipe.transport import segments
from arbpipe.transport.rings import BroadcastRing, SpscRing
from arbpipe.transport.rings import view as V


def python_module(mod: str, *args) -> list[str]:
    return [sys.executable, "-m", mod, *map(str, args)]


# ------------------------------------------------------------------ the tree --

def free_port_block(n: int, host: str = "127.0.0.1") -> int:
    """A base port P with P..P+n-1 free now (the simulator keeps its ports across restarts,
    so feeds never need new urls)."""
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
    ``procs.replay`` (``arbpipe.replay.source.tree_source_args``): one replay process produces
    every feed ring instead of the simulator and the feed handlers."""
    venues = list(cfg.enabled_venues())
    local = cfg.local_venues()     # the others are remote: the bridge fills their feed rings
    specs: list[ProcessSpec] = []
    urls: dict[str, str | None] = {v: (cfg.venues[v].url or None) for v in local}
    rest_urls: dict[str, str | None] = {}    # the config's rest_url (or the venue's) otherwise
    if replay is not None:
        specs.append(ProcessSpec("replay", "replay", python_module(
            "procs.replay", *replay, "--config", config_path, "--instance", instance), stage=1))
    elif not live and cfg.simulator.enabled and local:
        sim = cfg.simulator
        base = sim.port or free_port_block(len(local), sim.host)
        # the simulator serves exactly the config's native symbols (e.g. coinbase BTC-USDT),
        # venue i on port base + i, fixed so that a restarted simulator keeps its urls
        sc = msgspec.structs.replace(to_sim_config(cfg), port=base)
        sim_path = os.path.join(run_dir(instance), "simulator.json")
        with open(sim_path, "wb") as f:
            f.write(msgspec.json.encode(sc))
        specs.append(ProcessSpec("simulator", "simulator", python_module(
            "procs.simulator", "--config", sim_path), stage=0))
        urls = {v: f"ws://{sim.host}:{base + i}" for i, v in enumerate(sc.venues)}
        # the simulator serves each venue's REST depth snapshots on the same port
        rest_urls = {v: f"http://{sim.host}:{base + i}" for i, v in enumerate(sc.venues)}
    for v in (local if replay is None else []):
        argv = python_module("procs.feed", v, "--config", config_path, "--instance", instance)
        if urls.get(v):
            argv += ["--url", urls[v]]
        if rest_urls.get(v):
            argv += ["--rest-url", rest_urls[v]]
        specs.append(ProcessSpec(f"feed.{v}", "feed", argv, stage=1))
    specs.append(ProcessSpec("detector", "detector", python_module(
        "procs.detector", "--config", config_path, "--instance", instance), stage=2))
    # -- readers of the opportunities ring (stage 3: stopped after the detector) --------
    # each role appends its ProcessSpec here (strategy, dashboard, persister)
    specs.append(ProcessSpec("dashboard", "dashboard", python_module(
        "procs.dashboard", "--config", config_path, "--instance", instance), stage=3))
    specs.append(ProcessSpec("strategy", "strategy", python_module(
        "procs.strategy", "--config", config_path, "--instance", instance), stage=3))
    if redis_available(cfg):  # a configured Redis, or a redis-server to embed (main())
        # stage 4: stopped after the strategy, so its last journal entries reach Redis
        specs.append(ProcessSpec("persister", "persister", python_module(
            "procs.persister", "--config", config_path, "--instance", instance), stage=4))
    if cfg.bridge.enabled:
        # in: a producer of the remote venues' feed rings, stopped with the feeds (stage 1);
        # out: a tap of the rings it sends, stopped last, so the final records still go out
        if cfg.bridge_in_rings():
            specs.append(ProcessSpec("bridge.in", "bridge", python_module(
                "procs.bridge", "--side", "in", "--config", config_path, "--instance",
                instance), stage=1))
        if cfg.bridge.out_rings:
            specs.append(ProcessSpec("bridge.out", "bridge", python_module(
                "procs.bridge", "--side", "out", "--config", config_path, "--instance",
                instance), stage=4))
    fr, op, jr = cfg.rings.feed, cfg.rings.opportunities, cfg.rings.trades
    # every enabled venue's ring, remote ones included (their producer is bridge.in)
    rings = [(SpscRing, f"feed.{v}", fr.capacity, "MarketUpdate", fr.policy) for v in venues]
    rings.append((BroadcastRing, "opportunities", op.capacity, "Opportunity", "overwrite"))
    # strategy -> persister: the trade journal (JournalEntry records)
    rings.append((SpscRing, "journal", jr.capacity, "JournalEntry", jr.policy))
    # a remote tree's opportunities / journal, read in by the bridge (any reader may tap them)
    for r in cfg.bridge_in_rings():
        if not r.startswith("feed."):
            spec, record = (op, "Opportunity") if r == "opportunities" else (jr, "JournalEntry")
            rings.append((BroadcastRing, local_ring(r), spec.capacity, record, "overwrite"))
    return specs, rings


def feeds_text(rate: float, publishing: int, feeds: int) -> str:
    """The feeds part of the summary line. Until every feed ring has its first record it
    says how many do, and while none has, why a first start is quiet (outside check: a cold
    numba cache showed ``feeds 0 updates/s`` for 10-25 s with no word of why)."""
    text = f"feeds {rate:,.0f} updates/s"
    if publishing < feeds:
        text += f" ({publishing}/{feeds} feeds publishing"
        text += ("; a first start compiles the numba kernels, 10-25 s, once)" if publishing == 0
                 else ")")
    return text


class Console:
    """The foreground view of `make up`: supervisor events plus a periodic one-line summary
    of feed rates, the open opportunities' expected profit (USD, at the detector's
    depth-walked sizes; those seen since the console started) and the newest opportunity
    (read with a tap: consumes nothing)."""

    MAX_TRACKED = 10_000           # open opportunities followed for the profit total

    def __init__(self, instance: str):
        self.instance = instance
        self.prev = None
        self.pos = None
        self.opens = 0
        self.open_usd: dict[int, float | None] = {}   # opp_id -> profit_usd (None: no rate)

    def summary(self) -> str | None:
        rows = stat.snapshot(self.instance)
        if not rows:
            return None
        prev = {r["name"]: r for r in (self.prev or [])}
        self.prev = rows
        feeds = sum(r["published"] - prev.get(r["name"], r)["published"]
                    for r in rows if r["name"].startswith("feed."))
        newest = ""
        try:
            ring = V.attach("opportunities", instance=self.instance)   # numba-free
        except segments.SegmentError:
            return None
        try:
            buf = np.zeros(64 * ring.rw, np.int64)
            out = np.zeros(3, np.int64)
            head = V.head_of(ring.w)
            pos = head if self.pos is None else self.pos
            while True:
                V.peek(ring.w, int(ring.KIND), pos, buf, 64, out)
                k = int(out[1])
                if int(out[0]) > pos:          # lapped: closes were missed, start over
                    self.open_usd.clear()
                if k == 0:
                    break
                for rec in buf[:k * ring.rw].view(ring.dtype):
                    d = decode(rec, "Opportunity")
                    if d["state"] == "open":
                        self.opens += 1
                        newest = fmt(d, "Opportunity")
                    if d["state"] == "closed":
                        self.open_usd.pop(d["opp_id"], None)
                    elif d["opp_id"] in self.open_usd or len(self.open_usd) < self.MAX_TRACKED:
                        usd = d["profit_usd"]
                        self.open_usd[d["opp_id"]] = usd if math.isfinite(usd) else None
                pos = int(out[2])
            self.pos = pos
            published = head
        finally:
            ring.close()
        feed_rows = [r for r in rows if r["name"].startswith("feed.")]
        line = (feeds_text(feeds / 2, sum(1 for r in feed_rows if r["published"]), len(feed_rows))
                + f" | opportunities published {published:,} (opened since start {self.opens})")
        if self.open_usd:
            usd = [v for v in self.open_usd.values() if v is not None]
            line += f" | open {len(self.open_usd)}: expected ${sum(usd):,.2f}" + (
                f", best ${max(usd):,.2f}" if usd else "") + (
                f" ({len(self.open_usd) - len(usd)} without a USD rate)"
                if len(usd) < len(self.open_usd) else "")
        return line + (f"\n    newest: {newest}" if newest else "")


def main(config: str | None = None, live: bool = False, detach: bool = False,
         instance: str | None = None, replay: list[str] | None = None) -> int:
    instance = instance or segments.default_instance()
    path = os.path.abspath(config or DEFAULT_PATH)
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(f"arbpipe: bad config {path}: {e}", file=sys.stderr)
        return 2
    b = cfg.bridge
    if b.enabled and (b.out_rings or cfg.bridge_in_rings()) and not configured_bridge_url(cfg):
        print(f"arbpipe: bad config {path}: bridge.url: no Redis for the bridge (set "
              f"ARBPIPE_BRIDGE_URL, [bridge] url, [redis] url or ARBPIPE_REDIS_URL: the other "
              f"tree must reach the same server)", file=sys.stderr)
        return 2
    refusal = check_bind(cfg)     # the HTTP endpoint: never beyond this host without a token
    if refusal:
        print(f"arbpipe: {refusal}", file=sys.stderr)
        return 2
    if replay is not None:   # refuse a file the tree cannot be fed with before starting
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
    explicit = config_cpu_plan(cfg)
    notes: list[str] = []
    cplan = cpu_plan(specs, explicit, cpu_profile(cfg), notes, cpu_realtime(cfg))
    print("[arbpipe] CPU plan: " + ", ".join(f"{k}={v}" for k, v in cplan.items()), flush=True)
    print(f"[arbpipe] idle ({cpu_profile(cfg)} profile): {idle_summary(specs)}", flush=True)
    for n in notes:
        print(f"[arbpipe] CPU plan {n}", flush=True)
    kill = cfg.strategy.kill_switch
    sup = Supervisor(instance, specs, rings, console=lambda s: print(s, flush=True),
                     setups=[lambda inst: Control.create(inst, kill)],
                     fork_server=cfg.supervisor.fork_server)
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
