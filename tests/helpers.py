"""Helpers shared by the tests that drive real processes."""
import subprocess
import sys
import time


def wait_for(cond, timeout=90.0, what="condition", every=0.2):
    """Poll ``cond()`` every ``every`` s until it returns something true (returned) or
    ``timeout`` s pass (AssertionError naming ``what``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def cli(*args, env, check=True, timeout=120):
    """``python -m procs.cli ARGS`` with ``env``: the CompletedProcess, output captured."""
    return subprocess.run([sys.executable, "-m", "procs.cli", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, check=check)
