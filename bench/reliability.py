"""`arbpipe bench reliability [--quick] [--json]`: crashes, bad input, soak, in figures.

Parts (each returns a dict; ``run`` puts them together):

* ``chains``: dedicated rings under the real ``Supervisor`` (arbpipe.ops.supervisor), their
  producers and consumers SIGKILLed at random moments and restarted by it:
    - SPSC ``rel.spsc`` (block): a producer whose records carry seq == ring position
      (a restarted producer continues at ``head``) and a checker that peeks, verifies
      (seq == position, payload pattern intact) and only then pops. A kill anywhere
      leaves either a verified-and-popped record or an unpopped one, so at the end
      ``tail == head`` means every committed record was verified exactly once, in
      order; a lost, duplicated, reordered or torn record is a logged violation.
    - MPMC ``rel.mpmc`` (block, 2 producers, 2 consumers): each producer incarnation
      numbers its records 0, 1, 2, ...; consumers forward what they dequeue to the driver
      over their own SPSC ring. Checked: no (incarnation, seq) twice, no torn payload,
      per incarnation no hole that is not explained by records a killed consumer had
      taken (``received`` in its reader slot minus what it forwarded, plus ``orphaned``),
      and the ring ledger ``tail == head == sum(received) + orphaned + abandoned``.
    - broadcast ``rel.bcast``: a writer (seq == position) and a reader killed at random;
      the reader slot survives its restarts, every record it gets has seq == position,
      and ``received + lost == position - join position`` with ``position == head``.
* ``tree``: the whole tree (``arbpipe up --detach``, simulator at a raised rate), every
  process role found in status.json (simulator, feed, detector, strategy, dashboard,
  persister, whatever the plan has) SIGKILLed ``kills`` times at random moments; per
  kill the restart time (kill -> supervisor's ``start`` event) and the time until the
  role's output moves again. Meanwhile a tap reads every record committed to the feed,
  opportunities and journal rings (read-only peeks) and checks it is sane (not torn) and
  that feed seq numbers run 1, 2, 3 ... per feed incarnation with gaps only where the
  ring counted drops; a broadcast reader of ours checks received + lost == published
  since it joined. Then the whole tree is SIGKILLed, `arbpipe up` run again: stale
  segments must be reclaimed and the new run must start from fresh rings.
* ``faults``: bench/venue_faults.py: a fault per venue through the simulator (storm,
  planned disconnects, bad frames, half-open, refusal, stall), each one's counts from
  `arbpipe stat feeds`, and a venue gone silent without a word checked out of every
  opportunity within the detector's max quote age.
* ``fuzz``: bench/fuzz.py over every venue parser.
* ``soak``: bench/soak.py (RSS, fds, drops over N minutes; by default the tree fed by the
  replay process at 100 K updates/s, the issue's target rate).

Output shape: {"kills": {role: n}, "records_checked", "records_lost", "torn_records",
"frames_fuzzed", "crashes", "soak": {"minutes", "rss_growth_pct", "fd_growth", "drops"},
...details}.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import numpy as np

from arbpipe.transport import ring_kernels as K
from arbpipe.transport import segments

RW = 8
MAGIC = 0x5EED_0000_0000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pattern(inc, seq):
    """Payload words 2..7 of record (inc, seq) (vectorised over numpy arrays)."""
    return (MAGIC ^ (np.asarray(inc, np.int64) << 32) ^ np.asarray(seq, np.int64))[..., None] \
        + np.arange(RW - 2)


def records(inc, start, n):
    r = np.empty((n, RW), np.int64)
    seq = np.arange(start, start + n, dtype=np.int64)
    r[:, 0], r[:, 1] = inc, seq
    r[:, 2:] = pattern(inc, seq)
    return r.reshape(-1)


def torn_mask(recs2d):
    return (recs2d[:, 2:] != pattern(recs2d[:, 0], recs2d[:, 1])).any(axis=1)


def say(msg, **kw):
    print(json.dumps({"event": msg, **kw}), flush=True)


# ====================================================================== workers ====

def _throttle(t0, sent, rate):
    ahead = sent / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)


def worker(kind: str, instance: str, index: int, rate: float, stop_file: str) -> int:
    """One chain process (run by the supervisor as ``python -m bench.reliability worker``)."""
    from arbpipe.transport.rings import BroadcastRing, MpmcRing, SpscRing
    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
    rng = random.Random(os.getpid())
    buf = np.zeros(256 * RW, np.int64)
    t0 = time.monotonic()

    def idle():
        return os.path.exists(stop_file)

    def produce(ring, inc, seq, max_batch):
        """Push batches of 1..max_batch records numbered from ``seq`` at ``rate`` until
        SIGTERM (pausing while the stop file exists)."""
        sent = 0
        while not stopping:
            if idle():
                time.sleep(0.05)
                continue
            b = rng.randint(1, max_batch)
            k = ring.push_words(records(inc, seq, b), b, timeout=0.5)
            seq += k
            sent += k
            _throttle(t0, sent, rate)

    if kind == "spsc-producer":
        ring = SpscRing.attach("rel.spsc", instance=instance)
        seq = int(K.head_of(ring.w))       # records carry seq == ring position
        say("ready", kind=kind, start=seq)
        produce(ring, 0, seq, 64)
    elif kind == "spsc-checker":
        ring = SpscRing.attach("rel.spsc", instance=instance)
        ring.join("checker")
        out = np.zeros(3, np.int64)
        from arbpipe.transport.atomics import load_acquire
        from shm_layouts import ring as L
        say("ready", kind=kind, start=int(ring.w[L.W_TAIL]))
        while not stopping:
            pos = int(load_acquire(ring.w, L.W_TAIL))
            K.peek(ring.w, 1, pos, buf, 256, out)
            start, k = int(out[0]), int(out[1])
            if k == 0:
                ring.wait(0.2)
                continue
            recs = buf[:k * RW].reshape(k, RW)
            expect = np.arange(pos, pos + k)
            if start != pos:
                say("violation", what="records passed over", at=pos, first=start)
            bad = (recs[:, 1] != expect) | torn_mask(recs)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                say("violation", what="seq != position or torn", position=pos + i,
                    seq=int(recs[i, 1]), torn=int(torn_mask(recs).sum()))
            got = ring.pop_words(buf, k)       # only now the records leave the ring
            if got != k:
                say("violation", what="pop returned fewer than peeked", want=k, got=got)
    elif kind == "mpmc-producer":
        ring = MpmcRing.attach("rel.mpmc", instance=instance)
        ring.join_producer()
        inc = os.getpid()
        say("ready", kind=kind, inc=inc)
        produce(ring, inc, 0, 256)
    elif kind == "mpmc-consumer":
        ring = MpmcRing.attach("rel.mpmc", instance=instance)
        ring.join(f"c{index}")
        fwd = SpscRing.attach(f"rel.mpmc.fwd{index}", instance=instance)
        say("ready", kind=kind)
        while not stopping:
            k = ring.pop_batch(buf, timeout=0.2)
            if k:
                fwd.push_words(buf, k, timeout=None)
    elif kind == "bcast-writer":
        ring = BroadcastRing.attach("rel.bcast", instance=instance)
        seq = int(K.head_of(ring.w))
        say("ready", kind=kind, start=seq)
        produce(ring, 0, seq, 64)           # never blocks: every record goes in
    elif kind == "bcast-reader":
        ring = BroadcastRing.attach("rel.bcast", instance=instance)
        fresh = ring.join("checker")
        st = ring.reader_stats()
        say("ready", kind=kind, position=st["position"], received=st["received"],
            lost=st["lost"], slot=fresh)
        while not stopping:
            k = ring.pop_batch(buf, timeout=0.2)
            if not k:
                continue
            pos = ring.reader_stats()["position"]
            recs = buf[:k * RW].reshape(k, RW)
            bad = (recs[:, 1] != np.arange(pos - k, pos)) | torn_mask(recs)
            if bad.any():
                say("violation", what="broadcast seq != position or torn", position=pos - k,
                    seq=int(recs[0, 1]))
            # a slow reader is lapped by design; make that happen now and then
            if rng.random() < 0.002:
                time.sleep(0.3)
    else:
        print(f"unknown worker kind {kind}", file=sys.stderr)
        return 2
    return 0


# ====================================================================== chains =====

class _KillPlan:
    """Kills at random moments: each target process is SIGKILLed when it has run at least
    ``min_life`` s (so the supervisor sees a kill, not a crash loop) plus a random delay."""

    def __init__(self, rng, min_life=2.3, spread=1.2):
        self.rng, self.min_life, self.spread = rng, min_life, spread
        self.due: dict[str, float] = {}

    def due_at(self, name, started):
        d = self.due.get(name)
        if d is None or d[0] != started:
            d = self.due[name] = (started, max(started + self.min_life, time.monotonic())
                                  + self.rng.uniform(0, self.spread))
        return d[1]


def chains(kills: int = 20, rate: float = 20_000.0, seed: int = 1, log=print) -> dict:
    """SPSC / MPMC / broadcast chains under kill (see the module docstring)."""
    from arbpipe.ops import supervisor as S
    from arbpipe.transport.rings import BroadcastRing, MpmcRing, SpscRing
    instance = "rel" + uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="arbpipe-rel-")
    os.environ["ARBPIPE_RUN_DIR"] = tmp
    rdir = S.run_dir(instance)
    stop_file = os.path.join(rdir, "stop-producers")
    rng = random.Random(seed)

    def spec(name, kind, index=0, stage=0, r=rate):
        return S.ProcessSpec(name, kind, [sys.executable, "-m", "bench.reliability", "worker",
                                          kind, "--instance", instance, "--index", str(index),
                                          "--rate", str(r), "--stop-file", stop_file],
                             stage=stage)
    specs = [spec("spsc-producer", "spsc-producer"), spec("spsc-checker", "spsc-checker",
                                                          stage=1),
             spec("mpmc-producer.0", "mpmc-producer", 0, r=rate / 2),
             spec("mpmc-producer.1", "mpmc-producer", 1, r=rate / 2),
             spec("mpmc-consumer.0", "mpmc-consumer", 0, stage=1),
             spec("mpmc-consumer.1", "mpmc-consumer", 1, stage=1),
             spec("bcast-writer", "bcast-writer"), spec("bcast-reader", "bcast-reader",
                                                         stage=1)]
    rings = [(SpscRing, "rel.spsc", 4096, 64, "block"), (MpmcRing, "rel.mpmc", 4096, 64, "block"),
             (SpscRing, "rel.mpmc.fwd0", 1 << 16, 64, "block"),
             (SpscRing, "rel.mpmc.fwd1", 1 << 16, 64, "block"),
             (BroadcastRing, "rel.bcast", 1024, 64, "overwrite")]
    S.cpu_plan(specs, {})
    sup = S.Supervisor(instance, specs, rings, console=lambda s: None, drain_s=5.0)
    plan = _KillPlan(rng)
    kind_of = {s.name: s.role for s in specs}
    roles = sorted(set(kind_of.values()))
    done = {r: 0 for r in roles}
    restart_s: list[float] = []
    pending: dict[str, tuple[int, float]] = {}    # name -> (old pid, kill time)
    fwd = {}
    got_chunks: list[np.ndarray] = []
    state = {"phase": "kill", "t": time.monotonic(), "result": None}
    buf = np.zeros(4096 * RW, np.int64)

    def drain_fwd():
        for j in (0, 1):
            r = fwd.get(j)
            if r is None:
                try:
                    r = fwd[j] = SpscRing.attach(f"rel.mpmc.fwd{j}", instance=instance)
                    r.join("driver")
                except segments.SegmentError:
                    continue
            while True:
                n = r.pop_words(buf)
                if not n:
                    break
                got_chunks.append(buf[:n * RW].copy())

    offsets: dict[str, int] = {}
    ready: dict[str, set] = {s.name: set() for s in specs}

    def read_ready():
        """pids that printed their "ready" line (the workers' logs, as the supervisor
        writes them)."""
        for s in specs:
            try:
                with open(os.path.join(rdir, f"{s.name}.jsonl"), "rb") as f:
                    f.seek(offsets.get(s.name, 0))
                    data = f.read()
            except OSError:
                continue
            cut = data.rfind(b"\n") + 1
            offsets[s.name] = offsets.get(s.name, 0) + cut
            for line in data[:cut].splitlines():
                if b'ready' in line:
                    rec = json.loads(line)
                    ready[s.name].add(rec["pid"])
                    if s.name == "bcast-reader" and "join" not in state:
                        state["join"] = json.loads(rec["line"])["position"]

    def tick():
        now = time.monotonic()
        drain_fwd()
        read_ready()
        for s in specs:
            if s.name in pending and s.proc is not None and s.proc.pid != pending[s.name][0]:
                restart_s.append(s.started - pending.pop(s.name)[1])
        if state["phase"] == "kill":
            todo = [r for r in roles if done[r] < kills]
            if not todo:
                state["phase"], state["t"] = "drain", now
                open(stop_file, "w").close()
                log(f"chains: {sum(done.values())} kills done; draining")
                return False
            for s in specs:
                if s.role in todo and s.alive() and s.name not in pending and \
                        s.proc.pid in ready[s.name] and done[s.role] < kills and \
                        now >= plan.due_at(s.name, s.started):
                    pending[s.name] = (s.proc.pid, now)
                    os.kill(s.proc.pid, signal.SIGKILL)
                    done[s.role] += 1
            return False
        if state["phase"] == "drain":
            mp = sup.created[1]
            mp.recover()
            st = {r.name: r.stats() for r in sup.created}
            rd = [x for x in st["rel.bcast"]["readers"] if x["name"] == "checker"]
            drained = (st["rel.spsc"]["consumed"] == st["rel.spsc"]["published"]
                       and st["rel.mpmc"]["consumed"] == st["rel.mpmc"]["published"]
                       and all(st[f"rel.mpmc.fwd{j}"]["fill"] == 0 for j in (0, 1))
                       and rd and rd[0]["position"] == st["rel.bcast"]["published"])
            if drained and all(s.alive() for s in specs) and now - state["t"] > 1.0 \
                    or now - state["t"] > 60:
                state["result"] = _chain_verdict(sup, st, got_chunks, state.get("join"))
                return True
        return False

    try:
        sup.run(until=tick)
    finally:
        for r in fwd.values():
            r.close()
        os.environ.pop("ARBPIPE_RUN_DIR", None)
    res = state["result"] or {"error": "chains did not finish"}
    violations = []
    for s in specs:
        try:
            with open(os.path.join(rdir, f"{s.name}.jsonl")) as f:
                for line in f:
                    if '\\"violation\\"' in line or '"violation"' in line:
                        violations.append(json.loads(line)["line"])
        except OSError:
            pass
    res["violations"] = violations[:20]
    res["violation_count"] = len(violations)
    res["kills"] = done
    res["restart_s"] = _dist(restart_s)
    res["instance"] = instance
    left = [e for e in os.listdir("/dev/shm") if f".{instance}." in e]
    res["leaked_segments"] = left
    segments.clean(instance, everything=True)
    return res


def _chain_verdict(sup, st, chunks, join) -> dict:
    sp, mp, bc = st["rel.spsc"], st["rel.mpmc"], st["rel.bcast"]
    # SPSC: the checker verified every position below its tail
    # (a producer push that timed out while the checker was down counts as "dropped" in
    # the ring; those records were never committed and the producer sent them again)
    spsc = {"published": sp["published"], "verified": sp["consumed"],
            "lost": sp["published"] - sp["consumed"], "push_timeouts": sp["dropped"]}
    # MPMC
    words = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    recs = words.reshape(-1, RW)
    torn = int(torn_mask(recs).sum()) if len(recs) else 0
    keys = recs[:, 0].astype(np.int64) * (1 << 32) + recs[:, 1]
    uniq, counts = np.unique(keys, return_counts=True)
    dup = int((counts > 1).sum())
    holes = 0
    for inc in np.unique(recs[:, 0]):
        seqs = np.sort(recs[recs[:, 0] == inc, 1])
        holes += int(seqs[-1] + 1 - len(np.unique(seqs)))
    received = sum(r["received"] for r in mp["readers"] if r["name"].startswith("c"))
    forwarded = sum(st[f"rel.mpmc.fwd{j}"]["published"] for j in (0, 1))
    unforwarded = received - forwarded
    ledger_ok = (mp["consumed"] == mp["published"]
                 and mp["consumed"] == received + mp["orphaned"] + mp["abandoned"])
    explained = unforwarded + mp["orphaned"]
    mpmc = {"published": mp["published"], "forwarded_checked": int(len(recs)),
            "duplicates": dup, "torn": torn, "holes": holes,
            "taken_by_killed_consumers": explained, "abandoned_slots": mp["abandoned"],
            "orphaned": mp["orphaned"], "ledger_ok": bool(ledger_ok),
            "lost": max(holes - explained, 0) + (0 if ledger_ok else 1)}
    # broadcast: our reader's slot
    rd = next((r for r in bc["readers"] if r["name"] == "checker"), None)
    bcast = {"published": bc["published"]}
    if rd:
        bcast.update(received=rd["received"], lost_counted=rd["lost"], laps=rd["lapped"],
                     position=rd["position"])
        # join: where the first reader incarnation started; the slot (position and
        # counters) must have survived every restart of the reader since
        bcast["join_position"] = join
        bcast["accounted"] = bool(join is not None
                                  and rd["received"] + rd["lost"] == bc["published"] - join
                                  and rd["position"] == bc["published"])
    return {"spsc": spsc, "mpmc": mpmc, "broadcast": bcast,
            "records_checked": spsc["verified"] + int(len(recs)) + (rd["received"] if rd else 0),
            "records_lost": spsc["lost"] + mpmc["lost"] + (0 if bcast.get("accounted") else 1),
            "torn_records": torn}


def _dist(xs):
    if not xs:
        return {"n": 0}
    a = np.sort(np.asarray(xs, float))
    return {"n": len(a), "mean": float(a.mean()), "p50": float(np.median(a)),
            "p99": float(a[min(len(a) - 1, int(0.99 * len(a)))]), "max": float(a[-1])}


# ====================================================================== tree =======

def _cli(*args, env, timeout=180, check=True):
    return subprocess.run([sys.executable, "-m", "procs.cli", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, check=check)


def tree_config(path: str, rate_hz: float = 200.0, extra: dict | None = None) -> str:
    """A copy of config/arbpipe.toml with the simulator rate (and frequent dislocations)."""
    from arbpipe.config import DEFAULT_PATH
    text = open(DEFAULT_PATH).read()
    text = re.sub(r"(?m)^rate_hz = .*$", f"rate_hz = {rate_hz}", text, count=1)
    text = re.sub(r"(?m)^dislocation_rate_hz = .*$", "dislocation_rate_hz = 0.05", text, count=1)
    extra = {"metrics_port": 0, **(extra or {})}   # never collide with another tree's port
    for k, v in extra.items():
        text = re.sub(rf"(?m)^{k} = .*$", f"{k} = {v}", text, count=1)
    with open(path, "w") as f:
        f.write(text)
    return path


class Tree:
    """A tree started with `arbpipe up --detach` under a private instance and run dir."""

    def __init__(self, instance: str, workdir: str, config: str):
        self.instance, self.workdir, self.config = instance, workdir, config
        self.rundir = os.path.join(workdir, "run")
        self.env = dict(os.environ, ARBPIPE_RUN_DIR=self.rundir, ARBPIPE_INSTANCE=instance,
                        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.dir = os.path.join(self.rundir, instance)
        self._ev_off = 0

    def up(self):
        out = _cli("up", "--detach", "--config", self.config, env=self.env, timeout=240,
                   check=False)
        if out.returncode != 0 or "running" not in out.stdout:
            raise RuntimeError(f"arbpipe up failed ({out.returncode}): {out.stdout}{out.stderr}")
        return self.status()

    def status(self) -> dict | None:
        try:
            with open(os.path.join(self.dir, "status.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def down(self):
        return _cli("down", env=self.env, timeout=180, check=False)

    def events(self) -> list[dict]:
        """New supervisor events since the last call."""
        out = []
        try:
            with open(os.path.join(self.dir, "supervisor.jsonl")) as f:
                f.seek(self._ev_off)
                data = f.read()
                cut = data.rfind("\n") + 1
                self._ev_off += len(data[:cut].encode())
                for line in data[:cut].splitlines():
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
        except OSError:
            pass
        return out

    def pids(self) -> list[int]:
        st = self.status() or {}
        return [p["pid"] for p in st.get("processes", []) if p.get("pid")] + \
            ([st["supervisor_pid"]] if st.get("supervisor_pid") else [])


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
        from arbpipe.transport.rings import attach_any
        for s in segments.list_segments(self.instance):
            n = s.name
            if n in self.rings or not (n.startswith("feed.") and not n.endswith(".stats")
                                       or n in ("opportunities", "journal")):
                continue
            if s.header is None or s.header.kind not in (1, 2, 3):
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
                q = kind == 1
                bad = ~np.isin(kind, (1, 2, 3)) | (recs["venue_id"] != vid)
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
                bad = ~np.isin(recs["state"], (1, 2, 3)) | (recs["detect_ns"] < self.t_lo) \
                    | (recs["detect_ns"] > now) | ~np.isfinite(recs["net_bps"])
                bad |= (recs["state"] != 3) & ~(recs["sell_bid"] > recs["buy_ask"])
            self._bad(name, recs, bad)
        elif name == "journal":
            with np.errstate(invalid="ignore"):
                bad = ~np.isin(recs["kind"], tuple(range(1, 9))) | (recs["ts_ns"] < self.t_lo) \
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


def _ring_rows(instance):
    from arbpipe.ops.stat import snapshot
    return {r["name"]: r for r in snapshot(instance)}


def tree(kills: int = 20, rate_hz: float = 200.0, seed: int = 2, log=print,
         workdir: str | None = None, instance: str | None = None,
         max_restart_s: float = 1.0) -> dict:
    """The whole tree under kill (see the module docstring)."""
    from arbpipe.config import load_config
    from arbpipe.transport.rings import BroadcastRing
    from arbpipe.symbols import VENUE_IDS
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
            rows = _ring_rows(instance)
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
        rows = _ring_rows(instance)
        lag = {n: r["published"] - r["consumed"] for n, r in rows.items()
               if n.startswith("feed.")}
        while reader.pop_batch(rbuf):
            pass
        rs = reader.reader_stats()
        head = int(K.head_of(reader.w))
        res.update({
            "kills": done, "restart_s": _dist(restart), "resume_s": _dist(resume),
            "restart_s_by_role": {r: _dist(v) for r, v in per_role_restart.items()},
            "resume_s_by_role": {r: _dist(v) for r, v in per_role_resume.items()},
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
    rows_before = _ring_rows(t.instance)
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
        rows_after = _ring_rows(t.instance)
        if sum(r["published"] > 0 for n, r in rows_after.items() if n.startswith("feed.")) \
                == sum(n.startswith("feed.") for n in rows_after):
            break
        time.sleep(0.5)
    now = segments.list_segments(t.instance)
    rows_after = _ring_rows(t.instance)
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


# ====================================================================== run ========

def run(quick: bool = False, kills: int | None = None, fuzz_frames: int | None = None,
        soak_minutes: float | None = None, rate_hz: float | None = None, progress=True,
        parts=("chains", "tree", "faults", "fuzz", "soak"), soak_source: str = "replay",
        soak_rate: float = 100_000.0) -> dict:
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if progress else (lambda s: None)
    kills = kills if kills is not None else (3 if quick else 20)
    fuzz_frames = fuzz_frames if fuzz_frames is not None else (20_000 if quick else 1_000_000)
    soak_minutes = soak_minutes if soak_minutes is not None else (0.5 if quick else 5.0)
    rate_hz = rate_hz if rate_hz is not None else 200.0
    t0 = time.time()
    out: dict = {"quick": quick, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "kills": {}, "records_checked": 0, "records_lost": 0, "torn_records": 0,
                 "frames_fuzzed": 0, "crashes": 0}
    if "chains" in parts:
        log(f"chains: SPSC, MPMC and broadcast rings, {kills} kills per process kind")
        c = chains(kills=kills, log=log)
        out["chains"] = c
        for k, v in c.get("kills", {}).items():
            out["kills"][f"chain:{k}"] = v
        out["records_checked"] += c.get("records_checked", 0)
        out["records_lost"] += c.get("records_lost", 0) + c.get("violation_count", 0)
        out["torn_records"] += c.get("torn_records", 0)
    if "tree" in parts:
        log(f"tree: every role killed {kills} times at random moments (simulator {rate_hz}/s "
            f"per venue)")
        tr = tree(kills=kills, rate_hz=rate_hz, log=log)
        out["tree"] = tr
        for k, v in tr.get("kills", {}).items():
            out["kills"][k] = v
        tap = tr.get("tap", {})
        out["records_checked"] += tap.get("records_checked", 0)
        out["torn_records"] += tap.get("torn", 0)
        out["records_lost"] += tap.get("feed_seq_gaps_unexplained", 0)
        br = tr.get("broadcast_reader", {})
        out["records_lost"] += 0 if br.get("accounted", True) else 1
        out["restart_max_s"] = tr.get("restart_s", {}).get("max")
    if "faults" in parts:
        from bench import venue_faults
        log("faults: a fault per venue through the simulator, then a silent venue")
        vf = venue_faults.run(log=log)
        out["venue_faults"] = {k: v for k, v in vf.items() if k not in ("pids", "faults")}
        out["venue_faults_ok"] = bool(vf.get("ok"))
    if "fuzz" in parts:
        from bench import fuzz
        log(f"fuzz: {fuzz_frames:,} frames per venue")
        fz = fuzz.run(fuzz_frames)
        out["fuzz"] = {k: v for k, v in fz.items() if k != "venues"}
        out["fuzz"]["venues"] = {v: {k: x for k, x in d.items() if k != "examples"}
                                 for v, d in fz["venues"].items()}
        out["fuzz"]["examples"] = {v: d["examples"] for v, d in fz["venues"].items()
                                   if d["examples"]}
        out["frames_fuzzed"] = fz["total"]["frames"]
        out["crashes"] = fz["total"]["crashes"] + fz["total"]["parse_errors"]
    if "soak" in parts:
        from bench import soak
        if soak_minutes > 0:
            log(f"soak: {soak_minutes} min, {soak_source} at {soak_rate:,.0f} updates/s")
            sk, saved = soak.run(minutes=soak_minutes, rate=soak_rate, source=soak_source,
                                 progress=progress), None
        else:   # --soak-minutes 0: the newest saved soak result (`arbpipe bench soak`)
            sk, saved = soak.latest(), os.path.relpath(soak.RESULTS_PATH, ROOT)
        if sk is not None:
            out["soak"] = {"minutes": sk["minutes"], "rss_growth_pct": sk["rss_growth_pct"],
                           "fd_growth": sk["fd_growth"], "drops": sk["drops"],
                           "updates_per_s": sk.get("updates_per_s"),
                           "source": sk.get("source", "sim"),
                           "rate": sk.get("rate", sk.get("target_updates_per_s")),
                           "from": saved or "this run", "detail": sk}
    out["wall_s"] = round(time.time() - t0, 1)
    return out


def render(r: dict) -> str:
    lines = ["reliability figures" + (" (quick)" if r.get("quick") else "")]
    lines.append("  kills survived: " + ", ".join(f"{k}={v}" for k, v in r["kills"].items()))
    lines.append(f"  records checked {r['records_checked']:,}, lost {r['records_lost']}, "
                 f"torn {r['torn_records']}")
    if "tree" in r:
        rs = r["tree"].get("restart_s", {})
        lines.append(f"  restart after SIGKILL: mean {rs.get('mean', 0):.3f} s, max "
                     f"{rs.get('max', 0):.3f} s; resumed: {r['tree'].get('resume_s', {})}")
        lines.append(f"  whole-tree SIGKILL then up: {r['tree'].get('whole_tree_kill')}")
    if "venue_faults" in r:
        from bench import venue_faults
        lines.append("  " + venue_faults.render(r["venue_faults"]).replace("\n", "\n  "))
    lines.append(f"  frames fuzzed {r['frames_fuzzed']:,}, crashes {r['crashes']}")
    if "soak" in r:
        s = r["soak"]
        lines.append(f"  soak {s['minutes']} min ({s.get('source', 'sim')} at "
                     f"{s.get('rate') or 0:,.0f}/s, reached {s.get('updates_per_s') or 0:,.0f}/s; "
                     f"{s.get('from', 'this run')}): RSS growth {s['rss_growth_pct']:.2f}%, fd "
                     f"growth {s['fd_growth']}, drops {s['drops']}")
    lines.append(f"  wall {r['wall_s']} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reliability")
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("kind")
    w.add_argument("--instance", required=True)
    w.add_argument("--index", type=int, default=0)
    w.add_argument("--rate", type=float, default=20_000.0)
    w.add_argument("--stop-file", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "worker":
        return worker(a.kind, a.instance, a.index, a.rate, a.stop_file)
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
