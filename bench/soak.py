"""`arbpipe bench soak [--source sim|replay] --minutes N --rate R`: the whole tree at a fixed
rate for N minutes.

Starts the tree (`arbpipe up --detach`, private instance and run dir) fed by one of two
sources: ``sim`` (the simulator at ``rate`` updates/s over all venues, parsed by the 8
JSON feed handlers: on a 2-core host these top out around 4.5 K updates/s) or ``replay``
(`arbpipe up --replay FILE --rate R --loop`: one replay process publishes a recording into
every feed ring at ``rate`` records/s, looping with timestamps rebased; everything
downstream of the feed rings runs as usual). The replay source uses ``recording`` or
synthesizes one once (``bench.workload.make_stream``, as bench/pipeline.py does) in the work
dir. Samples every ``interval`` s: RSS and open fds of the
supervisor and every process under it (redis-server included when the persister embeds
one), every ring's published / dropped / fill and its readers' lag and lost counts.
Reports drift after a warm-up (``warmup`` share of the run, at least 20 s, extended until
the shared ring pages stop growing, at most half the run): total RSS
growth in % and its slope (MiB/min), split into private heap (RssAnon: what a leak grows)
and shared ring pages (RssShmem: grows until every page of every ring a process maps has
been touched once, so at a low rate it keeps growing for a while), fd growth, drops on SPSC/MPMC rings, records lost by
lapped broadcast readers, the largest reader lag, process restarts, and the update rate
reached. Targets (issue 9): zero SPSC drops at 100 K updates/s for 30 minutes, RSS growth
< 5 % after warm-up, fd count flat. The result states its ``source`` and target rate;
the command line writes it to bench/results/soak.json (what `arbpipe bench reliability
--soak-minutes 0` reports as its soak figures).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid

import numpy as np
import psutil

from arbpipe.config import load_config
from arbpipe.ops.stat import snapshot
from arbpipe.replay.source import check_against_config
from arbpipe.transport.stateblob import read_blob
from bench.harness import Tree, tree_config
from bench.workload import write_workload

RESULTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "soak.json")
SOURCES = ("sim", "replay")
RECORDING_UPDATES = 200_000     # synthesized recording: records per loop (12.8 MB)


def _procs(sup_pid: int) -> list[psutil.Process]:
    try:
        sup = psutil.Process(sup_pid)
        return [sup] + sup.children(recursive=True)
    except psutil.Error:
        return []


def _rss_parts(pid: int) -> dict:
    """RssAnon (private heap: what a leak grows) and RssShmem (ring pages touched so far:
    grows until every page of every mapped ring has been touched once), bytes."""
    out = {"anon": 0, "shmem": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    out["anon"] = int(line.split()[1]) * 1024
                elif line.startswith("RssShmem:"):
                    out["shmem"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def _sample(tree, t0) -> dict:
    st = tree.status() or {}
    procs = {}
    names = {p["pid"]: p["name"] for p in st.get("processes", [])}
    names[st.get("supervisor_pid")] = "supervisor"
    for p in _procs(st.get("supervisor_pid", 0)):
        try:
            with p.oneshot():
                procs[p.pid] = {"name": names.get(p.pid) or p.name(),
                                "rss": p.memory_info().rss, "fds": p.num_fds(),
                                **_rss_parts(p.pid)}
        except psutil.Error:
            continue
    rings = {}
    for r in snapshot(tree.instance):
        rings[r["name"]] = {"kind": r["kind"], "published": r["published"],
                            "dropped": r["dropped"], "fill": r["fill"],
                            "lag": max([x["lag"] for x in r["readers"]] or [0]),
                            "lost": sum(x["lost"] for x in r["readers"])}
    return {"t": time.monotonic() - t0, "procs": procs, "rings": rings,
            "restarts": sum(p["restarts"] for p in st.get("processes", [])),
            "rss": sum(p["rss"] for p in procs.values()),
            "anon": sum(p["anon"] for p in procs.values()),
            "shmem": sum(p["shmem"] for p in procs.values()),
            "fds": sum(p["fds"] for p in procs.values())}


def make_recording(path: str, cfg, n: int = RECORDING_UPDATES, seed: int = 20261123,
                   dislocation_p: float = 0.002) -> dict:
    """Synthesize the soak's recording (the bench pipeline's workload generator)."""
    write_workload(path, cfg, n, seed, dislocation_p, source="bench soak workload")
    return {"path": path, "records": n, "seed": seed, "dislocation_p": dislocation_p,
            "synthesized": True}


class ReplayTree(Tree):
    """A ``bench.harness.Tree`` started with ``--replay FILE --rate R [--loop]``."""
    what = "arbpipe up --replay"

    def __init__(self, instance: str, workdir: str, config: str, recording: str, rate: float,
                 loop: bool = True):
        super().__init__(instance, workdir, config)
        self.recording, self.rate, self.loop = recording, rate, loop

    def up_args(self) -> list[str]:
        return super().up_args() + ["--replay", self.recording, "--rate",
                                    repr(float(self.rate))] + (["--loop"] if self.loop else [])


def _replay_state(instance: str) -> dict | None:
    d = read_blob(instance, "replay.state")
    return {k: v for k, v in d.items() if not k.startswith("_")} if d else None


def run(minutes: float = 5.0, rate: float = 100_000.0, interval: float = 5.0,
        warmup: float = 0.2, progress=True, out_dir: str | None = None,
        source: str = "sim", recording: str | None = None) -> dict:
    """Soak the tree fed by ``source`` ("sim" or "replay") at ``rate`` updates/s for
    ``minutes``; returns the ``summarize`` dict plus source, recording and replay state."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r}: use one of {', '.join(SOURCES)}")
    if not rate > 0 or not minutes > 0 or not interval > 0:
        raise ValueError("rate, minutes and interval must be > 0")
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if progress else (lambda s: None)
    workdir = out_dir or tempfile.mkdtemp(prefix="arbpipe-soak-")
    cfg_path = os.path.join(workdir, "arbpipe.toml")
    tree_config(cfg_path, 1.0)
    cfg = load_config(cfg_path)
    venues = len(cfg.enabled_venues())
    instance = "soak" + uuid.uuid4().hex[:6]
    rec_info = None
    if source == "sim":
        tree_config(cfg_path, rate / venues)
        t = Tree(instance, workdir, cfg_path)
    else:
        if recording:
            rec = check_against_config(recording, cfg)
            rec_info = {"path": os.path.abspath(recording), "records": len(rec),
                        "synthesized": False}
            del rec
        else:
            rec_info = make_recording(os.path.join(workdir, "soak.arbrec"), cfg)
            log(f"soak: synthesized {rec_info['records']:,} records into {rec_info['path']}")
        t = ReplayTree(instance, workdir, cfg_path, rec_info["path"], rate)
    samples = []
    replay_end = None
    log(f"soak: source {source}, {rate:,.0f} updates/s, {minutes} min, instance {instance}")
    t.up()
    try:
        t0 = time.monotonic()
        end = t0 + minutes * 60
        nxt = t0
        while True:
            now = time.monotonic()
            if now >= nxt:
                s = _sample(t, t0)
                samples.append(s)
                if len(samples) > 1:
                    a = samples[-2]
                    upd = sum(r["published"] - a["rings"].get(n, r)["published"]
                              for n, r in s["rings"].items() if n.startswith("feed."))
                    log(f"soak {s['t']:7.1f} s: {upd / (s['t'] - a['t']):9,.0f} updates/s, "
                        f"RSS {s['rss'] / 2**20:7.1f} MiB (anon {s['anon'] / 2**20:6.1f}, "
                        f"shm {s['shmem'] / 2**20:6.1f}), fds {s['fds']}, drops "
                        f"{sum(r['dropped'] for r in s['rings'].values())}, max lag "
                        f"{max([r['lag'] for r in s['rings'].values()] or [0])}")
                nxt += interval
            if now >= end:
                break
            time.sleep(min(max(nxt - time.monotonic(), 0.05), 1.0))
        if source == "replay":
            replay_end = _replay_state(instance)
    finally:
        t.down()
    res = summarize(samples, minutes, rate, warmup, instance)
    res.update(source=source, rate=rate, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if source == "replay":
        res["recording"] = rec_info
        res["replay"] = replay_end
        if rec_info.get("synthesized") and not out_dir:   # our temp dir: keep the logs only
            try:
                os.unlink(rec_info["path"])
                rec_info["removed"] = True
            except OSError:
                pass
    return res


def save(res: dict, path: str = RESULTS_PATH) -> str:
    """Write a soak result as JSON (bench/results/soak.json by default)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1, default=str)
    os.replace(tmp, path)
    return path


def latest(path: str = RESULTS_PATH) -> dict | None:
    """The newest saved soak result, or None when there is none (or it is unreadable)."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and "rss_growth_pct" in d else None


def summarize(samples: list[dict], minutes: float, rate: float, warmup: float,
              instance: str = "") -> dict:
    if len(samples) < 2:
        return {"minutes": minutes, "error": "too few samples", "rss_growth_pct": 0.0,
                "fd_growth": 0, "drops": 0}
    span = samples[-1]["t"]
    # warm-up: ``warmup`` of the run (at least 20 s), and until every ring page has been
    # touched once (shared RSS at its plateau: at a low rate a 64 K-record ring takes
    # minutes to fill, and those one-time page faults are not drift)
    fixed_t = max(warmup * span, min(20.0, span / 2))
    shm_end = samples[-1]["shmem"]
    plateau_t = next((s["t"] for s in samples if s["shmem"] >= 0.99 * shm_end), span)
    w_t = max(fixed_t, min(plateau_t, span * 0.5))
    base = next(s for s in samples if s["t"] >= w_t)
    fixed = next(s for s in samples if s["t"] >= fixed_t)
    last = samples[-1]
    after = [s for s in samples if s["t"] >= w_t]
    ts = np.array([s["t"] for s in after])
    rss = np.array([s["rss"] for s in after], float)
    anon = np.array([s["anon"] for s in after], float)
    slope = float(np.polyfit(ts / 60.0, rss / 2**20, 1)[0]) if len(after) >= 3 else 0.0
    aslope = float(np.polyfit(ts / 60.0, anon / 2**20, 1)[0]) if len(after) >= 3 else 0.0
    first = samples[0]

    def ring_delta(key, kinds):
        return sum(r[key] - first["rings"].get(n, {key: 0})[key]
                   for n, r in last["rings"].items() if r["kind"] in kinds)
    feed_pub = sum(r["published"] for n, r in last["rings"].items() if n.startswith("feed."))
    feed_pub0 = sum(r["published"] for n, r in base["rings"].items() if n.startswith("feed."))
    per_proc = {}
    for pid, p in last["procs"].items():
        b = base["procs"].get(pid)
        if b:
            per_proc[p["name"]] = {"rss_mib": round(p["rss"] / 2**20, 1),
                                   "rss_growth_pct": round(100.0 * (p["rss"] - b["rss"])
                                                           / max(b["rss"], 1), 2),
                                   "anon_mib": round(p["anon"] / 2**20, 1),
                                   "anon_growth_pct": round(100.0 * (p["anon"] - b["anon"])
                                                            / max(b["anon"], 1), 2),
                                   "shmem_mib": round(p["shmem"] / 2**20, 1),
                                   "fd_growth": p["fds"] - b["fds"]}
    return {
        "minutes": round(span / 60.0, 2), "target_updates_per_s": rate,
        "updates_per_s": round((feed_pub - feed_pub0) / max(last["t"] - base["t"], 1e-9), 1),
        "warmup_s": round(base["t"], 1),
        "rss_growth_pct_after_fixed_warmup": round(
            100.0 * (last["rss"] - fixed["rss"]) / fixed["rss"], 2),
        "fixed_warmup_s": round(fixed["t"], 1),
        "rss_mib_after_warmup": round(base["rss"] / 2**20, 1),
        "rss_mib_end": round(last["rss"] / 2**20, 1),
        "rss_growth_pct": round(100.0 * (last["rss"] - base["rss"]) / base["rss"], 2),
        "rss_slope_mib_per_min": round(slope, 3),
        "anon_mib_after_warmup": round(base["anon"] / 2**20, 1),
        "anon_mib_end": round(last["anon"] / 2**20, 1),
        "anon_growth_pct": round(100.0 * (last["anon"] - base["anon"]) / max(base["anon"], 1), 2),
        "anon_slope_mib_per_min": round(aslope, 3),
        "shmem_mib_after_warmup": round(base["shmem"] / 2**20, 1),
        "shmem_mib_end": round(last["shmem"] / 2**20, 1),
        "fds_after_warmup": base["fds"], "fds_end": last["fds"],
        "fd_growth": last["fds"] - base["fds"],
        "drops": ring_delta("dropped", ("spsc", "mpmc")),
        "broadcast_lost": ring_delta("lost", ("broadcast",)),
        "max_lag": {n: max(s["rings"].get(n, {"lag": 0})["lag"] for s in samples)
                    for n in last["rings"]},
        "restarts": last["restarts"] - first["restarts"],
        "processes": per_proc, "samples": len(samples), "instance": instance,
        "series": [{"t": round(s["t"], 1), "rss_mib": round(s["rss"] / 2**20, 2),
                    "anon_mib": round(s["anon"] / 2**20, 2),
                    "shmem_mib": round(s["shmem"] / 2**20, 2),
                    "fds": s["fds"],
                    "published": sum(r["published"] for n, r in s["rings"].items()
                                     if n.startswith("feed.")),
                    "dropped": sum(r["dropped"] for r in s["rings"].values())}
                   for s in samples],
    }


def render(r: dict) -> str:
    return (f"soak ({r.get('source', 'sim')}) {r['minutes']} min at "
            f"{r.get('updates_per_s', 0):,.0f} updates/s "
            f"(target {r.get('target_updates_per_s', 0):,.0f}): RSS "
            f"{r.get('rss_mib_after_warmup')} -> {r.get('rss_mib_end')} MiB "
            f"({r['rss_growth_pct']:+.2f}%, {r.get('rss_slope_mib_per_min', 0):+.3f} MiB/min; "
            f"private heap {r.get('anon_mib_after_warmup')} -> {r.get('anon_mib_end')} MiB "
            f"{r.get('anon_growth_pct', 0):+.2f}%, shared ring pages "
            f"{r.get('shmem_mib_after_warmup')} -> {r.get('shmem_mib_end')} MiB), "
            f"fds {r.get('fds_after_warmup')} -> {r.get('fds_end')} ({r['fd_growth']:+d}), "
            f"SPSC/MPMC drops {r['drops']}, broadcast lost {r.get('broadcast_lost')}, "
            f"restarts {r.get('restarts')}")


if __name__ == "__main__":
    m = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    res = run(m, source=sys.argv[2] if len(sys.argv) > 2 else "sim")
    print(json.dumps({k: v for k, v in res.items() if k != "series"}, indent=1))
