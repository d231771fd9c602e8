"""What the benchmarks share: running the ``arbpipe`` command line, a whole tree started with
`arbpipe up --detach` under a private instance and run dir (``Tree``, ``tree_config``), a
distribution summary and the host's CPU name.

Used by bench/tree_kills.py, bench/soak.py and bench/venue_faults.py (trees), bench/chains.py
(``dist``), bench/detect.py and bench/pipeline.py (``cpu_name``), bench/live.py,
bench/footprint.py and bench/pipeline_profiles.py (``save_result``); it imports no other
bench module.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys

import numpy as np

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
