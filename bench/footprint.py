"""``arbpipe bench footprint``: the memory a default tree takes (issue 18).

A tree of the default config (config/arbpipe.toml, metrics on a free port) is started with
`arbpipe up --detach` under a private instance and run dir; once every role has run for
``settle_s`` seconds (status.json), every process of the tree -- the supervisor and every
process below it (the roles, the embedded redis-server, the fork server when on) -- is
measured with psutil ``memory_full_info()``: USS (pages private to the process: what
stopping it would free) and PSS (its proportional share of what it shares), summed per
process name. Then, with ``idle_s`` > 0, what the tree costs at rest: the simulator is
stopped (SIGSTOP: no market data arrives, every socket stays open), and after
``IDLE_SETTLE_S`` the CPU time of every process over ``idle_s`` seconds is read (% of one
core; user + system, psutil); the simulator is continued. Then `arbpipe down` (nothing of
the instance is left in /dev/shm).

``fork_server``: None keeps the config's ``[supervisor] fork_server``; True / False
override it in the copy of the config. Figures only: nothing here fails on a figure.
"""
from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import time
import uuid

import psutil

from arbpipe.config import DEFAULT_PATH
from arbpipe.transport import segments
from bench.harness import Tree, cpu_seconds, save_result, spread, tree_processes

MIB = 1024 * 1024
IDLE_SETTLE_S = 3.0


def _config(path: str, fork_server: bool | None) -> str:
    text = open(DEFAULT_PATH).read()
    text = re.sub(r"(?m)^metrics_port = .*$", "metrics_port = 0", text, count=1)
    if fork_server is not None:
        value = "true" if fork_server else "false"
        text, n = re.subn(r"(?m)^fork_server = .*$", f"fork_server = {value}", text, count=1)
        if n == 0 and fork_server:     # no such key: the switch is off
            text += f"\n[supervisor]\nfork_server = {value}\n"
    with open(path, "w") as f:
        f.write(text)
    return path


def measure(st: dict) -> dict:
    """{name: {"pid", "uss_mib", "pss_mib", "rss_mib"}} of the supervisor and everything
    below it; roles by their status.json name, other processes by their process name."""
    out = {}
    for p, name in tree_processes(st).items():
        try:
            m = p.memory_full_info()
        except psutil.Error:
            continue
        key, k = name, 2
        while key in out:
            key, k = f"{name}#{k}", k + 1
        out[key] = {"pid": p.pid, "uss_mib": round(m.uss / MIB, 1),
                    "pss_mib": round(m.pss / MIB, 1), "rss_mib": round(m.rss / MIB, 1)}
    return out


def idle_cpu(st: dict, idle_s: float) -> dict:
    """% of one core per process over ``idle_s`` with the simulator stopped."""
    sim = next(p["pid"] for p in st["processes"] if p["role"] == "simulator")
    procs = tree_processes(st)
    os.kill(sim, signal.SIGSTOP)
    try:
        time.sleep(IDLE_SETTLE_S)
        a, t0 = cpu_seconds(procs), time.monotonic()
        time.sleep(idle_s)
        b, t1 = cpu_seconds(procs), time.monotonic()
    finally:
        os.kill(sim, signal.SIGCONT)
    per = {}
    for p, name in procs.items():
        if p in a and p in b:
            per[name] = per.get(name, 0.0) + 100 * (b[p] - a[p]) / (t1 - t0)
    return {"seconds": round(t1 - t0, 1), "processes": {k: round(v, 2) for k, v in per.items()},
            "total_pct": round(sum(per.values()), 2)}


def run(settle_s: float = 10.0, fork_server: bool | None = None, instance: str | None = None,
        timeout_s: float = 300.0, progress: bool = False, idle_s: float = 0.0) -> dict:
    inst = instance or "fp" + uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="arbpipe-footprint-") as work:
        tree = Tree(inst, work, _config(os.path.join(work, "arbpipe.toml"), fork_server))
        try:
            tree.up()
            st = tree.wait_running(settle_s, timeout_s)
            if progress:
                print(f"footprint: tree {inst!r} up; measuring", flush=True)
            procs = measure(st)
            idle = None
            if idle_s > 0:
                if progress:
                    print(f"footprint: simulator stopped; idle CPU over {idle_s:g} s",
                          flush=True)
                idle = idle_cpu(st, idle_s)
        finally:
            tree.down()
        left = segments.list_segments(inst)
    total = {k: round(sum(p[k] for p in procs.values()), 1)
             for k in ("uss_mib", "pss_mib", "rss_mib")}
    return {"instance": inst, "settle_s": settle_s, "fork_server": fork_server,
            "processes": procs, "total": total, "idle": idle, "segments_left": len(left)}


def repeated(n: int, settle_s: float = 10.0, idle_s: float = 20.0, progress: bool = False) -> dict:
    """``run`` ``n`` times (a fresh default tree each, fork server as configured, idle CPU
    measured): every run, and per process the median USS and idle CPU with their min-max."""
    runs = [run(settle_s=settle_s, idle_s=idle_s, progress=progress) for _ in range(n)]
    names = sorted({k for r in runs for k in r["processes"]})
    per = {k: {"uss_mib": spread([r["processes"][k]["uss_mib"] for r in runs
                                if k in r["processes"]]),
               "idle_pct": spread([r["idle"]["processes"].get(k, 0.0) for r in runs])}
           for k in names}
    return {"measured": time.strftime("%Y-%m-%d %H:%M:%S"), "cores": os.cpu_count(),
            "command": f"arbpipe bench footprint --repeat {n} --settle {settle_s:g} "
                       f"--idle {idle_s:g} --save",
            "settle_s": settle_s, "idle_s": idle_s, "runs": runs, "processes": per,
            "total_uss_mib": spread([r["total"]["uss_mib"] for r in runs]),
            "total_pss_mib": spread([r["total"]["pss_mib"] for r in runs]),
            "idle_total_pct": spread([r["idle"]["total_pct"] for r in runs])}


def save(res: dict) -> str:
    return save_result(res, "footprint.json")


def render(res: dict) -> str:
    fs = res["fork_server"]
    lines = [f"tree footprint (fork server: {'config' if fs is None else ('on' if fs else 'off')};"
             f" after {res['settle_s']:g} s running)",
             f"{'process':<22}{'pid':>8}{'USS MiB':>10}{'PSS MiB':>10}{'RSS MiB':>10}"]
    for name, p in sorted(res["processes"].items(), key=lambda kv: -kv[1]["uss_mib"]):
        lines.append(f"{name:<22}{p['pid']:>8}{p['uss_mib']:>10.1f}{p['pss_mib']:>10.1f}"
                     f"{p['rss_mib']:>10.1f}")
    t = res["total"]
    lines.append(f"{'total':<22}{'':>8}{t['uss_mib']:>10.1f}{t['pss_mib']:>10.1f}"
                 f"{t['rss_mib']:>10.1f}")
    idle = res.get("idle")
    if idle:
        top = sorted(idle["processes"].items(), key=lambda kv: -kv[1])[:6]
        lines.append(f"idle (simulator stopped, {idle['seconds']:g} s): "
                     f"{idle['total_pct']:.2f} % of one core in total; "
                     + ", ".join(f"{k} {v:.2f} %" for k, v in top))
    if res["segments_left"]:
        lines.append(f"warning: {res['segments_left']} segments of the instance left in /dev/shm")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    arg = sys.argv[1] if len(sys.argv) > 1 else "config"
    r = run(fork_server={"on": True, "off": False}.get(arg), progress=True)
    print(render(r))
    print(json.dumps(r))
