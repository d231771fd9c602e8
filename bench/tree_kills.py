"""`arbpipe bench reliability` part ``tree``: the whole tree under kill.

The tree runs with ``arbpipe up --detach`` (simulator at a raised rate); every process
role found in status.json (simulator, feed, detector, strategy, dashboard, persister,
whatever the plan has) is SIGKILLed ``kills`` times at random moments. Per kill: the
restart time (kill -> the supervisor's ``start`` event) and the time until the role's
output moves again. Meanwhile a ``Tapper`` reads every record committed to the feed,
opportunities and journal rings (read-only peeks) and checks it is sane (not torn) and
that feed seq numbers run 1, 2, 3 ... per feed incarnation with gaps only where the ring
counted drops; a broadcast reader of ours checks received + lost == published since it
joined. Then ``whole_tree_kill``: the whole tree SIGKILLed and `arbpipe up` run again --
stale segments must be reclaimed and the new run must start from fresh rings.
"""
from __future__ import annotations

import os
import random
import signal
import tempfile
import threading
import time
import uuid

import numpy as np

from arbpipe.config import load_config
from arbpipe.ops.stat import snapshot
from arbpipe.symbols import VENUE_IDS
from arbpipe.transport import kernels as K
from arbpipe.transport import segments
from arbpipe.transport.rings import BroadcastRing, attach_any
from bench.harness import Tree, dist, tree_config
from shm_layouts import JournalKind, Kind, OppState
from shm_layouts.kinds import is_ring

MU_KINDS = tuple(int(k) for k in Kind)            # the kinds a sane MarketUpdate has
OPP_STATES = tuple(int(s) for s in OppState)
JOURNAL_KINDS = tuple(int(k) for k in JournalKind)


class Tapper(threading.Thread):
    """Reads every committed record of the feed, opportunities and journal rings with
    read-only peeks; checks sanity (a torn record cannot pass) and feed seq continuity."""

    def __init__(self, instance: str, venue_ids: dict[str, int]):
        super().__init__(daemon=True)
        self.instance, self.venue_ids = instance, venue_ids
        self.stop = threading.Event()
        self.pos: dict[str, int] = {}
        self.last_seq: dict[str, int] = {}
        self.rings: dict[str, object] = {}
        self.checked = 0
        self.torn = 0
        self.torn_examples: list[str] = []
        self.missed = 0
        self.gaps = 0
        self.restarts = 0
        self.dropped_start: dict[str, int] = {}
        self.t_lo = time.time_ns() - 60 * 10**9

    def _attach(self):
        for s in segments.list_segments(self.instance):
            n = s.name
            if n in self.rings or not (n.startswith("feed.") and not n.endswith(".stats")
                                       or n in ("opportunities", "journal")):
                continue
            if s.header is None or not is_ring(s.header.kind):
                continue
            try:
                r = self.rings[n] = attach_any(n, instance=self.instance)
            except segments.SegmentError:
                continue
            self.pos[n] = int(K.head_of(r.w))
            self.dropped_start[n] = r.stats()["dropped"]

    def run(self):
        out = np.zeros(3, np.int64)
        bufs = {}
        while not self.stop.is_set():
            self._attach()
            idle = True
            for n, r in list(self.rings.items()):
                buf = bufs.get(n)
                if buf is None:
                    buf = bufs[n] = np.zeros(4096 * r.rw, np.int64)
                K.peek(r.w, int(r.KIND), self.pos[n], buf, 4096, out)
                start, k = int(out[0]), int(out[1])
                if start > self.pos[n]:
                    self.missed += start - self.pos[n]
                    self.last_seq.pop(n, None)
                if k:
                    idle = False
                    self._check(n, r, buf[:k * r.rw].view(r.dtype))
                self.pos[n] = int(out[2]) if k else max(self.pos[n], start)
            if idle:
                time.sleep(0.01)

    def _check(self, name, ring, recs):
        self.checked += len(recs)
        now = time.time_ns() + 60 * 10**9
        if name.startswith("feed."):
            venue = name[5:]
            vid = self.venue_ids.get(venue, -1)
            kind = recs["kind"]
            with np.errstate(invalid="ignore"):
                q = kind == Kind.QUOTE
                bad = ~np.isin(kind, MU_KINDS) | (recs["venue_id"] != vid)
                bad |= (recs["recv_ts_ns"] < self.t_lo) | (recs["recv_ts_ns"] > now)
                bad |= q & ~((recs["bid"] > 0) & (recs["bid"] <= recs["ask"])
                             & np.isfinite(recs["ask"]) & (recs["bid_qty"] >= 0)
                             & (recs["ask_qty"] >= 0))
            self._bad(name, recs, bad)
            # seq runs 1, 2, 3 ... per feed incarnation; a restarted feed starts at 1 again;
            # a record the ring refused (drop policy) leaves a gap of one
            seq = recs["seq"].astype(np.int64)
            prev = self.last_seq.get(name)
            full = np.concatenate([[prev], seq]) if prev is not None else seq
            a, b = full[:-1], full[1:]
            step = b - a
            restart = (b == 1) & (step != 1)
            self.restarts += int(restart.sum())
            odd = (step != 1) & ~restart
            self.gaps += int(np.where(step[odd] > 1, step[odd] - 1, 1).sum())
            self.last_seq[name] = int(seq[-1])
        elif name == "opportunities":
            with np.errstate(invalid="ignore"):
                bad = ~np.isin(recs["state"], OPP_STATES) | (recs["detect_ns"] < self.t_lo) \
                    | (recs["detect_ns"] > now) | ~np.isfinite(recs["net_bps"])
                bad |= (recs["state"] != OppState.CLOSED) & ~(recs["sell_bid"] > recs["buy_ask"])
                # layout 2 (192 bytes): a sized opportunity has a size, a finite profit and
                # levels on both sides (profit_usd may be NaN: no USD rate)
                bad |= (recs["state"] != OppState.CLOSED) & (
                    ~(recs["exec_qty"] > 0) | ~np.isfinite(recs["profit"])
                    | (recs["buy_levels"] == 0) | (recs["sell_levels"] == 0))
            self._bad(name, recs, bad)
        elif name == "journal":
            with np.errstate(invalid="ignore"):
                bad = ~np.isin(recs["kind"], JOURNAL_KINDS) | (recs["ts_ns"] < self.t_lo) \
                    | (recs["ts_ns"] > now) | (recs["seq"] == 0)
            self._bad(name, recs, bad)

    def _bad(self, name, recs, bad):
        k = int(bad.sum())
        if k:
            self.torn += k
            for i in np.flatnonzero(bad)[:2]:
                if len(self.torn_examples) < 6:
                    self.torn_examples.append(f"{name}: {recs[i]}")

    def close(self):
        self.stop.set()
        self.join(5)
        for r in self.rings.values():
            r.close()
        self.rings.clear()


def ring_rows(instance) -> dict:
    """{ring name: its ``arbpipe stat rings`` row} of an instance."""
    return {r["name"]: r for r in snapshot(instance)}


def tree(kills: int = 20, rate_hz: float = 200.0, seed: int = 2, log=print,
         workdir: str | None = None, instance: str | None = None,
         max_restart_s: float = 1.0) -> dict:
    """The whole tree under kill (see the module docstring)."""
    rng = random.Random(seed)
    instance = instance or "rt" + uuid.uuid4().hex[:8]
    workdir = workdir or tempfile.mkdtemp(prefix="arbpipe-tree-")
    cfg_path = tree_config(os.path.join(workdir, "arbpipe.toml"), rate_hz)
    cfg = load_config(cfg_path)
    t = Tree(instance, workdir, cfg_path)
    res: dict = {"instance": instance, "rate_hz": rate_hz}
    tap = None
    reader = None
    try:
        st = t.up()
        procs = st["processes"]
        roles = sorted({p["role"] for p in procs})
        by_role = {r: [p["name"] for p in procs if p["role"] == r] for r in roles}
        res["roles"] = by_role
        log(f"tree {instance}: {len(procs)} processes, roles {roles}")
        tap = Tapper(instance, {v: VENUE_IDS[v] for v in cfg.enabled_venues()})
        tap.start()
        reader = BroadcastRing.attach("opportunities", instance=instance)
        reader.join("reliability")
        join_pos = reader.reader_stats()["position"]
        rbuf = reader.empty(4096)
        starts: dict[str, float] = {}        # name -> wall time of its latest start
        for e in t.events():
            if e.get("event") == "start":
                starts[e["process"]] = e["ts"]
        done = {r: 0 for r in roles}
        restart, resume, slow, stuck = [], [], [], []
        per_role_restart: dict[str, list] = {r: [] for r in roles}
        per_role_resume: dict[str, list] = {r: [] for r in roles}

        def progress_signal(name, role):
            """A number that grows while the role does its job."""
            rows = ring_rows(instance)
            if role == "feed" or role == "simulator":
                names = [f"feed.{name[5:]}"] if role == "feed" else \
                    [n for n in rows if n.startswith("feed.")]
                return sum(rows[n]["published"] for n in names if n in rows)
            # a consumer role: what its reader slots (named after the role) have taken in
            return sum(x["received"] + x["lost"] for r in rows.values() for x in r["readers"]
                       if x["name"] == role)

        deadline = time.monotonic() + max(600.0, kills * len(roles) * 20.0)
        while any(done[r] < kills for r in roles) and time.monotonic() < deadline:
            role = min((r for r in roles if done[r] < kills), key=lambda r: done[r])
            name = rng.choice(by_role[role])
            st = t.status()
            row = next((p for p in st["processes"] if p["name"] == name), None) if st else None
            if not row or row["state"] != "running" or not row["pid"]:
                time.sleep(0.1)
                continue
            for e in t.events():
                if e.get("event") == "start":
                    starts[e["process"]] = e["ts"]
            started = starts.get(name, time.time() - 10)
            # a random moment at least CRASH_LOOP_S into its life
            wait = started + 2.3 + rng.uniform(0, 1.5) - time.time()
            if wait > 0:
                time.sleep(wait)
            before = progress_signal(name, role)
            pid = row["pid"]
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            t_kill = time.time()
            done[role] += 1
            new_start = None
            limit = time.monotonic() + 30
            while time.monotonic() < limit and new_start is None:
                for e in t.events():
                    if e.get("event") == "start":
                        starts[e["process"]] = e["ts"]
                        if e["process"] == name and e["pid"] != pid:
                            new_start = e["ts"]
                time.sleep(0.02)
            if new_start is None:
                stuck.append(name)
                continue
            dt = new_start - t_kill
            restart.append(dt)
            per_role_restart[role].append(dt)
            if dt > max_restart_s:
                slow.append((name, round(dt, 3)))
            # the pipeline resumes: the role's output (or intake) moves again
            limit = time.monotonic() + 30
            moved = None
            while time.monotonic() < limit:
                if progress_signal(name, role) > before:
                    moved = time.time() - t_kill
                    break
                time.sleep(0.05)
            if moved is None:
                stuck.append(name)
            else:
                resume.append(moved)
                per_role_resume[role].append(moved)
            while reader.pop_batch(rbuf):
                pass
        # settle: the detector catches up with every feed ring
        time.sleep(2.0)
        rows = ring_rows(instance)
        lag = {n: r["published"] - r["consumed"] for n, r in rows.items()
               if n.startswith("feed.")}
        while reader.pop_batch(rbuf):
            pass
        rs = reader.reader_stats()
        head = int(K.head_of(reader.w))
        res.update({
            "kills": done, "restart_s": dist(restart), "resume_s": dist(resume),
            "restart_s_by_role": {r: dist(v) for r, v in per_role_restart.items()},
            "resume_s_by_role": {r: dist(v) for r, v in per_role_resume.items()},
            "restarts_over_limit": slow, "not_resumed": stuck,
            "feed_ring_lag_after": lag,
            "feed_dropped": {n: r["dropped"] for n, r in rows.items() if n.startswith("feed.")},
            "tap": {"records_checked": tap.checked, "torn": tap.torn,
                    "examples": tap.torn_examples, "tap_missed": tap.missed,
                    "feed_seq_gaps": tap.gaps, "feed_restarts_seen": tap.restarts,
                    "feed_dropped_meanwhile": sum(
                        rows[n]["dropped"] - tap.dropped_start.get(n, 0) for n in rows
                        if n.startswith("feed.")),
                    "feed_seq_gaps_unexplained": max(0, tap.gaps - sum(
                        rows[n]["dropped"] - tap.dropped_start.get(n, 0) for n in rows
                        if n.startswith("feed.")))},
            "broadcast_reader": {"received": rs["received"], "lost": rs["lost"],
                                 "laps": rs["laps"], "join_position": join_pos,
                                 "position": rs["position"], "head": head,
                                 "accounted": rs["received"] + rs["lost"]
                                 == rs["position"] - join_pos},
        })
        reader.close()
        reader = None
        tap.close()
        tap = None
        res["whole_tree_kill"] = whole_tree_kill(t, log)
    finally:
        if tap is not None:
            tap.close()
        if reader is not None:
            reader.close()
        t.down()
        left = [e for e in os.listdir("/dev/shm") if f".{instance}." in e]
        res["leaked_after_down"] = left
    return res


def whole_tree_kill(t: Tree, log=print) -> dict:
    """SIGKILL the supervisor and every child at once, then `arbpipe up` again."""
    st = t.status()
    old = {s.name: s.header.creator_pid for s in segments.list_segments(t.instance)
           if s.header}
    rows_before = ring_rows(t.instance)
    pids = t.pids()
    t_kill_ns = time.time_ns()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(1.0)
    left = segments.list_segments(t.instance)
    stale_left = [s.name for s in left if s.stale]
    log(f"whole tree killed: {len(pids)} processes; {len(stale_left)} stale segments left")
    t2 = t.up()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:        # the new feeds publish again
        rows_after = ring_rows(t.instance)
        if sum(r["published"] > 0 for n, r in rows_after.items() if n.startswith("feed.")) \
                == sum(n.startswith("feed.") for n in rows_after):
            break
        time.sleep(0.5)
    now = segments.list_segments(t.instance)
    rows_after = ring_rows(t.instance)
    fresh = all(s.header is not None and not s.stale and s.header.created_ns > t_kill_ns
                for s in now)
    reused = [s.name for s in now if s.header and old.get(s.name) == s.header.creator_pid]
    # nothing of the dead run read as live: the new rings start from 0
    restarted_from_zero = all(
        rows_after[n]["published"] < rows_before[n]["published"] or
        rows_before[n]["published"] == 0
        for n in rows_after if n in rows_before and n.startswith("feed."))
    feeds_moving = all(r["published"] > 0 for n, r in rows_after.items()
                       if n.startswith("feed."))
    return {"processes_killed": len(pids), "stale_segments_left": len(stale_left),
            "reclaimed": fresh and not reused, "new_supervisor": t2["supervisor_pid"] !=
            (st or {}).get("supervisor_pid"), "fresh_rings": restarted_from_zero,
            "feeds_moving": feeds_moving,
            "orphan_semaphores": len(segments.orphan_semaphores(t.instance))}
