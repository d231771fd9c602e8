"""A running tree seen from outside: its status (``status.json`` in the run dir, written by
the supervisor every second) and stopping it (SIGTERM to its supervisor, found by the
creator pid of the instance's ``supervisor`` segment). What ``arbpipe status`` and ``arbpipe
down`` use; it imports nothing heavy, so those commands start fast."""
from __future__ import annotations

import json
import os
import signal
import time

from arbpipe.paths import run_dir
from arbpipe.transport import segments

SUPERVISOR_SEGMENT = "supervisor"   # the liveness segment a running supervisor creates


def read_status(instance: str) -> dict | None:
    """The newest status.json of ``instance`` while its supervisor lives, else None."""
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
    h = segments.probe(instance, SUPERVISOR_SEGMENT)
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
