"""Where a pipeline instance keeps its files (status, logs, redis data, last journal state)."""
from __future__ import annotations

import os


def run_dir(instance: str) -> str:
    """The private (0700) run directory of ``instance``: ``$ARBPIPE_RUN_DIR/<instance>``, else
    under ``$XDG_RUNTIME_DIR`` or ``/tmp/arbpipe-<uid>``; created when missing."""
    base = os.environ.get("ARBPIPE_RUN_DIR") or os.path.join(
        os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/arbpipe-{os.geteuid()}", "arbpipe")
    d = os.path.join(base, instance)
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d
