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
from arbpipe.trading.view import read_state
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


def audit(instance: str, **entry) -> None:
    """Append one control action (kill switch, breaker reset: who, from where, outcome) to
    ``<run dir>/control.jsonl``; one ``write`` of one line, so concurrent writers interleave
    whole lines."""
    line = json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry}) + "\n"
    fd = os.open(os.path.join(run_dir(instance), "control.jsonl"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def status_document(instance: str) -> dict:
    """What ``arbpipe status --json`` prints and ``GET /status`` serves: the supervisor's
    status (None when not running), the strategy's headline state and the segments."""
    st = read_status(instance)
    strat = read_state(instance)
    keep = ("mode", "kill_switch", "breaker", "counters", "pnl", "_alive")
    segs = [{"name": s.name, "creator_pid": s.header.creator_pid if s.header else None,
             "stale": s.stale} for s in segments.list_segments(instance)]
    return {"instance": instance, "running": st is not None, "supervisor": st,
            "strategy": {k: strat[k] for k in keep if k in strat} if strat else None,
            "segments": segs}


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
