"""What the benchmarks share: running the ``arbpipe`` command line, a whole tree started with
`arbpipe up --detach` under a private instance and run dir (``Tree``, ``tree_config``), a
distribution summary and the host's CPU name.

Used by bench/tree_kills.py, bench/soak.py and bench/venue_faults.py (trees), bench/chains.py
(``dist``), bench/detect.py and bench/pipeline.py (``cpu_name``), bench/live.py,
bench/footprint.py and bench/pipeline_profiles.py (``save_result``; the first two also
``Tree.wait_running``, ``tree_processes``, ``cpu_seconds``, ``spread``); it imports no other
bench module.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import numpy as np
import psutil

from arbpipe.config import DEFAULT_PATH

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, env, timeout=180, check=True) -> subprocess.CompletedProcess:
    """``python -m procs.cli ARGS`` with ``env``: the CompletedProcess, output captured
    (``check``: a non-zero exit raises CalledProcessError)."""
    return subprocess.run([sys.executable, "-m", "procs.cli", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, check=check)


def tree_config(path: str, rate_hz: float = 200.0, extra: dict | None = None) -> str:
    """A copy of config/arbpipe.toml with the simulator rate (and frequent dislocations)."""
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
        self.events_read = 0          # bytes of supervisor.jsonl already returned by events()

    what = "arbpipe up"              # named in the error when `up` fails

    def up_args(self) -> list[str]:
        """Arguments of `arbpipe up` (a subclass adds its feed source)."""
        return ["up", "--detach", "--config", self.config]

    def up(self):
        out = cli(*self.up_args(), env=self.env, timeout=240, check=False)
        if out.returncode != 0 or "running" not in out.stdout:
            raise RuntimeError(f"{self.what} failed ({out.returncode}): {out.stdout}{out.stderr}")
        return self.status()

    def status(self) -> dict | None:
        try:
            with open(os.path.join(self.dir, "status.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def down(self):
        return cli("down", env=self.env, timeout=180, check=False)

    def events(self) -> list[dict]:
        """New supervisor events since the last call."""
        out = []
        try:
            with open(os.path.join(self.dir, "supervisor.jsonl")) as f:
                f.seek(self.events_read)
                data = f.read()
                cut = data.rfind("\n") + 1
                self.events_read += len(data[:cut].encode())
                for line in data[:cut].splitlines():
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
        except OSError:
            pass
        return out

    def running(self, settle_s: float) -> dict | None:
        """status.json once the supervisor lives and every process has run ``settle_s``."""
        st = self.status()
        if not st or not psutil.pid_exists(st.get("supervisor_pid", 0)):
            return None
        rows = st.get("processes", [])
        if rows and all(p["state"] == "running" and p["pid"] and p["uptime_s"] >= settle_s
                        for p in rows):
            return st
        return None

    def wait_running(self, settle_s: float, timeout_s: float = 300.0) -> dict:
        """``running`` once it holds (checked every 0.5 s); RuntimeError after ``timeout_s``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            st = self.running(settle_s)
            if st:
                return st
            time.sleep(0.5)
        raise RuntimeError(f"the tree did not run for {settle_s:g} s within {timeout_s:g} s")

    def pids(self) -> list[int]:
        st = self.status() or {}
        return [p["pid"] for p in st.get("processes", []) if p.get("pid")] + \
            ([st["supervisor_pid"]] if st.get("supervisor_pid") else [])


RESULTS_DIR = os.path.join(ROOT, "bench", "results")


def save_result(res: dict, name: str, out_dir: str = RESULTS_DIR) -> str:
    """Write ``res`` as ``<out_dir>/<name>`` (indented JSON); returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    return path


def tree_processes(st: dict) -> dict:
    """psutil Process -> name of the supervisor and everything below it: roles by their
    status.json name, the fork server as "fork-server", others by their process name."""
    names = {p["pid"]: p["name"] for p in st["processes"]}
    sup = psutil.Process(st["supervisor_pid"])
    out = {}
    for p in [sup] + sup.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
            out[p] = "supervisor" if p.pid == sup.pid else names.get(p.pid) or (
                "fork-server" if "arbpipe.ops.forkserver" in cmd else p.name())
        except psutil.Error:
            continue
    return out


def cpu_seconds(procs) -> dict:
    """psutil Process -> user + system CPU seconds so far (processes gone are left out)."""
    out = {}
    for p in procs:
        try:
            c = p.cpu_times()
            out[p] = c.user + c.system
        except psutil.Error:
            pass
    return out


def spread(xs) -> dict:
    """{"median", "min", "max"} of the finite numbers in ``xs`` ({"median": None} if none):
    how a figure of repeated runs is kept."""
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return {"median": None}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def dist(xs) -> dict:
    """{"n", "mean", "p50", "p99", "max"} of a list of numbers ({"n": 0} when empty)."""
    if not xs:
        return {"n": 0}
    a = np.sort(np.asarray(xs, float))
    return {"n": len(a), "mean": float(a.mean()), "p50": float(np.median(a)),
            "p99": float(a[min(len(a) - 1, int(0.99 * len(a)))]), "max": float(a[-1])}


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
