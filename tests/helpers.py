"""Helpers shared by the tests that drive real processes: polling for a condition and
running the ``arbpipe`` command line (``python -m procs.cli``)."""
import subprocess
import sys
import time

CLI = (sys.executable, "-m", "procs.cli")


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


def waiter(timeout=90.0, what="condition", every=0.2):
    """``wait_for`` with a test file's own defaults, called the same way:
    ``wait_for = helpers.waiter(60.0, every=0.05)`` then ``wait_for(cond, 30, "x")``."""
    def wait(cond, timeout=timeout, what=what):
        return wait_for(cond, timeout, what, every)
    return wait


def cli(*args, env=None, check=True, timeout=120):
    """``python -m procs.cli ARGS`` with ``env`` (None: this process's): the
    CompletedProcess, output captured. ``check``: a non-zero exit fails the test with the
    command and its output."""
    r = subprocess.run([*CLI, *args], env=env, text=True, capture_output=True,
                       timeout=timeout)
    if check:
        assert r.returncode == 0, (f"arbpipe {' '.join(map(str, args))} exited "
                                   f"{r.returncode}:\n{r.stdout}{r.stderr}")
    return r


def spawn_cli(*args, **popen):
    """``python -m procs.cli ARGS`` started, not waited for: the Popen, stdout and stderr
    together in ``stdout`` (text); ``popen`` goes to Popen (env, cwd, ...)."""
    return subprocess.Popen([*CLI, *args], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, **popen)
