"""`arbpipe bench reliability` part ``chains``: dedicated rings under the real supervisor
(``arbpipe.ops.supervisor``), their producers and consumers SIGKILLed at random moments and
restarted by it.

* SPSC ``rel.spsc`` (block): a producer whose records carry seq == ring position (a
  restarted producer continues at ``head``) and a checker that peeks, verifies (seq ==
  position, payload pattern intact) and only then pops. A kill anywhere leaves either a
  verified-and-popped record or an unpopped one, so at the end ``tail == head`` means
  every committed record was verified exactly once, in order; a lost, duplicated,
  reordered or torn record is a logged violation.
* MPMC ``rel.mpmc`` (block, 2 producers, 2 consumers): each producer incarnation numbers
  its records 0, 1, 2, ...; consumers forward what they dequeue to the driver over their
  own SPSC ring. Checked: no (incarnation, seq) twice, no torn payload, per incarnation no
  hole that is not explained by records a killed consumer had taken (``received`` in its
  reader slot minus what it forwarded, plus ``orphaned``), and the ring ledger ``tail ==
  head == sum(received) + orphaned + abandoned``.
* broadcast ``rel.bcast``: a writer (seq == position) and a reader killed at random; the
  reader slot survives its restarts, every record it gets has seq == position, and
  ``received + lost == position - join position`` with ``position == head``.

Records are the benchmark's own: ``RW`` int64 words (incarnation, seq, then a payload
pattern derived from both) in raw rings. The workers run as ``python -m bench.chains
worker KIND ...`` under the supervisor.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid

import numpy as np

from arbpipe.ops import supervisor as S
from arbpipe.paths import run_dir
from arbpipe.transport import kernels as K
from arbpipe.transport import segments
from arbpipe.transport.atomics import load_acquire
from arbpipe.transport.rings import BroadcastRing, MpmcRing, SpscRing, ring_stats
from bench.harness import dist
from shm_layouts import ring as L

RW = 8
MAGIC = 0x5EED_0000_0000


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
    """One chain process (run by the supervisor as ``python -m bench.chains worker``)."""
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
        say("ready", kind=kind, start=int(ring.w[L.W_TAIL]))
        while not stopping:
            pos = int(load_acquire(ring.w, L.W_TAIL))
            K.peek(ring.w, int(ring.KIND), pos, buf, 256, out)
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
    instance = "rel" + uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="arbpipe-rel-")
    os.environ["ARBPIPE_RUN_DIR"] = tmp
    rdir = run_dir(instance)
    stop_file = os.path.join(rdir, "stop-producers")
    rng = random.Random(seed)

    def spec(name, kind, index=0, stage=0, r=rate):
        return S.ProcessSpec(name, kind, [sys.executable, "-m", "bench.chains", "worker",
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
            with MpmcRing.attach("rel.mpmc", instance=instance) as mp:
                mp.recover()      # the supervisor holds the segments only (no kernels)
            st = {seg.name: ring_stats(seg) for seg in sup.created}
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
    res["restart_s"] = dist(restart_s)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.chains")
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
