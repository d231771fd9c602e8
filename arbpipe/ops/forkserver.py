"""The fork server (``[supervisor] fork_server``, issue 18): one preloaded process that forks
the tree's Python roles, so that what every role imports (numpy, numba, llvmlite, msgspec,
the arbpipe modules) and the ring kernels it loads are in memory once, shared
copy-on-write by every role, instead of once per role.

* **The server** (``python -m arbpipe.ops.forkserver``, started by the supervisor, output in
  ``<run dir>/forkserver.jsonl``): imports ``PRELOAD``, loads the ring kernels
  (``arbpipe.transport.kernels.warm_up``), moves every object into the GC's permanent
  generation (``gc.freeze``: no collection touches their pages in a child), checks that it
  runs one thread (``OPENBLAS_NUM_THREADS=1``: numpy's OpenBLAS would start its worker
  threads at import; the forked roles inherit that, and do no BLAS work), says ``ready``
  and then serves requests on a ``SOCK_SEQPACKET`` Unix socket until the socket closes (or
  the supervisor dies: ``PR_SET_PDEATHSIG``). It never starts a thread, so a fork copies a
  consistent process (one thread or more after the preload: it refuses, the roles are
  exec'd). It reaps its children
  (``SIGCHLD`` -> ``waitpid``) and sends each exit status to the supervisor.
* **A spawn** (``ForkServer.spawn``): argv (``python -m procs.<role> ARGS``), environment,
  cwd, cores and nice value as JSON, stdin / stdout / stderr as file descriptors
  (``SCM_RIGHTS``). The child: default signal dispositions, a new session (as
  ``start_new_session``), the three descriptors on 0 / 1 / 2, the cwd, the environment
  (``os.environ``), its cores (``sched_setaffinity``: every thread it starts inherits them)
  and nice value, its argv in ``/proc/<pid>/cmdline`` (the server's argv leaves room:
  empty arguments; the rest reads as trailing NULs), fresh RNG seeds (``random`` reseeds
  itself; numpy's global one here), then ``runpy.run_module("procs.<role>", "__main__")``
  with ``sys.argv`` as ``python -m`` sets it, then what interpreter exit does (non-daemon
  threads joined, ``atexit``), and ``os._exit`` with the role's exit code (an uncaught
  ``KeyboardInterrupt``: killed by SIGINT, as an exec'd interpreter).
* **The handle** (``ForkedProcess``): what the supervisor uses of a ``subprocess.Popen``
  (``pid``, ``stdout``, ``poll``, ``wait``, ``returncode``, ``send_signal``, ``terminate``,
  ``kill``) for a process that is the server's child, not the supervisor's: signals go
  through a pidfd (never to a reused pid), the exit status comes from the server.
* **The server dies** (killed, crashed): the roles it forked keep running (reparented to
  init); the supervisor watches them through their pidfds and starts a new server (until it
  is ready, roles are started the exec way). The exit status of a role whose server died
  before reporting it is unknown: recorded as ``EXIT_UNKNOWN`` (255), a crash.
* **Code changed on disk**: a role restarted after an edit must run the new code, as an
  exec'd one does. Before each fork the server compares the modification times of the
  checkout's modules it loaded with those at its preload; when one changed it refuses
  (``fork_server`` event ``stale``) and from then on only reaps what it forked (closed once
  all of that has ended), the role is exec'd, and a new server loads the new code.
* **Not forked** (exec'd as before): anything that is not ``python -m procs.<role>`` (the
  embedded redis-server is not a role at all), and every role while no server is ready
  (it failed to start: ``fork_server`` event, retried after ``RETRY_S``).

Differences from an exec'd role, by design: ``/proc/<pid>/environ`` shows the server's
start environment (``os.environ`` is the role's); the hash seed, ``OPENBLAS_NUM_THREADS=1``
and objects frozen by ``gc.freeze`` are the server's.

Shared pages stay shared until written: Python reference counts do write the pages of the
objects a role touches, so a role's USS still grows with what it uses; what it never
touches (most of numba and llvmlite) stays shared.
"""
from __future__ import annotations

import atexit
import ctypes
import gc
import importlib
import io
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

EXIT_UNKNOWN = 255        # a forked role's exit status that its dead server never reported
READY_TIMEOUT_S = 180.0   # a first start may compile the ring kernels (cold numba cache)
RETRY_S = 30.0            # a server that failed to start is not tried again sooner
STATUS_WAIT_S = 1.0       # a role seen gone (pidfd): how long to wait for its exit status
MAX_MSG = 1 << 20
TITLE_ROOM = 4096         # empty arguments of the server: room for a child's argv
PRELOAD = ("numpy", "numba", "llvmlite", "msgspec", "psutil",
           "arbpipe.config", "arbpipe.transport.rings", "arbpipe.transport.segments",
           "arbpipe.feeds.runtime", "arbpipe.detect.service", "arbpipe.trading.service",
           "arbpipe.trading.params", "arbpipe.persist.persister", "arbpipe.redis_conn",
           "arbpipe.sim.server", "arbpipe.sim.config", "arbpipe.ui.dashboard",
           "arbpipe.ui.metrics")
ROLE_PREFIX = "procs."


def forkable(argv: list[str]) -> str | None:
    """The role module of ``python -m procs.<role> ...`` (this interpreter), else None."""
    if len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m" \
            and argv[2].startswith(ROLE_PREFIX):
        return argv[2]
    return None


# =================================================================== the server ====

def _preload() -> tuple[float, list[str]]:
    t0 = time.monotonic()
    failed = []
    for mod in PRELOAD:
        try:
            importlib.import_module(mod)
        except Exception as e:   # the role imports it itself and says what is wrong
            failed.append(f"{mod}: {type(e).__name__}: {e}")
    try:
        from arbpipe.transport import kernels as K  # lazy: numba, ~0.8 s; the server only
        K.warm_up()
    except Exception as e:
        failed.append(f"ring kernels: {type(e).__name__}: {e}")
    gc.collect()
    gc.freeze()
    return time.monotonic() - t0, failed


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _sources() -> dict[str, int]:
    """{file: mtime_ns} of every module of this checkout the server has loaded."""
    out = {}
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if f and f.startswith(ROOT + os.sep) and os.sep + ".venv" + os.sep not in f:
            try:
                out[f] = os.stat(f).st_mtime_ns
            except OSError:
                pass
    return out


def _stale(sources: dict[str, int]) -> str | None:
    """A loaded source file changed (or gone) since the preload, else None."""
    for f, t in sources.items():
        try:
            if os.stat(f).st_mtime_ns != t:
                return f
        except OSError:
            return f
    return None


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _send(sock: socket.socket, msg: dict) -> None:
    sock.send(json.dumps(msg).encode())


def _set_title(argv: list[str]) -> None:
    """``/proc/self/cmdline`` := argv (as far as the server's argument area holds it)."""
    try:
        with open("/proc/self/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        start, end = int(rest[45]), int(rest[46])       # fields 48, 49: arg_start, arg_end
        data = b"\0".join(a.encode(errors="surrogateescape") for a in argv) + b"\0"
        room = end - start
        if room <= 0:
            return
        data = data[:room - 1] + b"\0" if len(data) > room else data
        ctypes.memmove(start, data, len(data))
        ctypes.memset(start + len(data), 0, room - len(data))
    except (OSError, ValueError, IndexError):
        pass


def _stdio() -> None:
    """sys.stdin / stdout / stderr on the new descriptors 0 / 1 / 2, unbuffered writes
    as ``PYTHONUNBUFFERED`` gives an exec'd role."""
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        old = getattr(sys, name)
        enc = getattr(old, "encoding", None) or "utf-8"
        errors = "backslashreplace" if name == "stderr" else getattr(old, "errors", "strict")
        if mode == "r":
            new = io.TextIOWrapper(io.open(fd, "rb", closefd=False), encoding=enc, errors=errors)
        else:
            raw = io.open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)
            new = io.TextIOWrapper(raw, encoding=enc, errors=errors,
                                   line_buffering=name == "stderr" and not unbuffered,
                                   write_through=unbuffered)
        setattr(sys, name, new)
        setattr(sys, f"__{name}__", new)


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def _child(req: dict, fds: list[int], sock: socket.socket, closing: list[int]) -> None:
    """In the forked child: become the role; never returns."""
    code = 1
    interrupted = False
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sock.close()
        for fd in closing:
            os.close(fd)
        os.setsid()
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in set(fds):
            if fd > 2:
                os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        if req.get("cpus"):
            try:
                os.sched_setaffinity(0, req["cpus"])
            except OSError:
                pass
        if req.get("nice"):
            try:
                os.setpriority(os.PRIO_PROCESS, 0, int(req["nice"]))
            except OSError:
                pass          # the supervisor tries too, and says so when refused
        argv = req["argv"]
        _set_title(argv)
        _stdio()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        sys.argv = [argv[0], *argv[3:]]       # run_module sets [0] to the module's file
        try:
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = _exit_code(e.code)
        except KeyboardInterrupt:
            traceback.print_exc()
            interrupted = True
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        try:
            threading._shutdown()             # what interpreter exit does, in its order
        except Exception:
            pass
        atexit._run_exitfuncs()
    except BaseException:
        try:
            traceback.print_exc()
        except Exception:
            pass
    finally:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:
                pass
        if interrupted:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code)


def serve(sock: socket.socket) -> int:
    preload_s, failed = _preload()
    sources = _sources()
    threads = _threads()
    stale = None
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *a: None)
    _send(sock, {"ready": os.getpid(), "preload_s": round(preload_s, 3), "failed": failed,
                 "threads": threads})
    for f in failed:
        print(f"forkserver: preload failed: {f}", file=sys.stderr, flush=True)
    if threads != 1:
        print(f"forkserver: {threads} threads after the preload: refusing to fork",
              file=sys.stderr, flush=True)
        return 1

    def reap():
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    while True:
        r, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in r:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
            reap()
        if sock in r:
            msg, fds, _flags, _addr = socket.recv_fds(sock, MAX_MSG, 8)
            if not msg:
                return 0               # the supervisor closed the socket (or died)
            req = json.loads(msg)
            changed = stale or _stale(sources)
            if changed is not None:     # a role must run the code on disk, as when exec'd
                stale = changed         # from now on only reaps what it forked
                for fd in fds:
                    os.close(fd)
                _send(sock, {"id": req["id"], "stale": os.path.relpath(changed, ROOT)})
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as e:
                for fd in fds:
                    os.close(fd)
                _send(sock, {"id": req["id"], "error": f"fork: {e}"})
                continue
            if pid == 0:
                _child(req, fds, sock, [wake_r, wake_w])
            for fd in fds:
                os.close(fd)
            _send(sock, {"id": req["id"], "pid": pid})
        reap()


def main() -> int:
    argv = sys.argv
    fd = int(argv[argv.index("--fd") + 1])
    parent = int(argv[argv.index("--parent") + 1])
    try:   # die with the supervisor (the roles forked so far do not: they are its roles)
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        return 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # a Ctrl-C is the supervisor's to handle
    sock = socket.socket(fileno=fd)
    return serve(sock)


# =================================================================== the supervisor side ====

class ForkServerError(RuntimeError):
    pass


class _Link:
    """One server process and its socket; the handles of the roles it forked."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket):
        self.proc, self.sock = proc, sock
        self.ready = False
        self.dead = False
        self.info: dict = {}
        self.handles: dict[int, "ForkedProcess"] = {}
        self.replies: dict[int, dict] = {}
        self.lock = threading.RLock()

    def pump(self, timeout: float = 0.0) -> None:
        """Read what the server sent (waiting up to ``timeout`` s for the first message)."""
        with self.lock:
            while not self.dead:
                try:
                    r, _, _ = select.select([self.sock], [], [], timeout)
                except (OSError, ValueError):
                    r = [self.sock]
                if not r:
                    return
                timeout = 0.0
                try:
                    msg = self.sock.recv(MAX_MSG)
                except OSError:
                    msg = b""
                if not msg:
                    self._died()
                    return
                m = json.loads(msg)
                if "exit" in m:
                    h = self.handles.pop(int(m["exit"]), None)
                    if h is not None:
                        h._exited(int(m["code"]))
                elif "ready" in m:
                    self.ready, self.info = True, m
                elif "id" in m:
                    self.replies[int(m["id"])] = m

    def _died(self) -> None:
        self.dead, self.ready = True, False
        try:
            self.sock.close()
        except OSError:
            pass
        for h in self.handles.values():
            h._orphaned()
        self.handles.clear()

    def alive(self) -> bool:
        if not self.dead and self.proc.poll() is not None:
            self.pump(0.0)             # what it sent before it died, then its EOF
            if not self.dead:
                self._died()
        return not self.dead


class ForkedProcess:
    """A role forked by the server: the part of ``subprocess.Popen`` the supervisor uses."""

    def __init__(self, link: _Link, pid: int, argv: list[str], stdout):
        self.link, self.pid, self.args, self.stdout = link, pid, argv, stdout
        self.returncode: int | None = None
        self.status_unknown = False
        self.orphaned = False
        try:
            self.pidfd: int | None = os.pidfd_open(pid)
        except OSError:        # already gone (and reaped): its exit status is on its way
            self.pidfd = None

    def _exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        self._close_pidfd()

    def _orphaned(self) -> None:
        self.orphaned = True

    def _close_pidfd(self) -> None:
        if self.pidfd is not None:
            try:
                os.close(self.pidfd)
            except OSError:
                pass
            self.pidfd = None

    def _gone(self) -> bool:
        """Has the process ended (its pidfd is readable)?"""
        if self.pidfd is None:
            return True
        r, _, _ = select.select([self.pidfd], [], [], 0)
        return bool(r)

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if not self.orphaned:
            self.link.pump(0.0)
            if self.returncode is None and not self.orphaned and self._gone():
                self.link.pump(STATUS_WAIT_S)     # the server reaps it and says how it ended
                if self.returncode is None and not self.link.alive():
                    self.orphaned = True
        if self.returncode is None and self.orphaned and self._gone():
            self.returncode, self.status_unknown = EXIT_UNKNOWN, True
            self._close_pidfd()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = 0.1 if deadline is None else min(deadline - time.monotonic(), 0.1)
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            fds = [f for f in (self.pidfd,) if f is not None]
            if not self.orphaned and not self.link.dead:
                fds.append(self.link.sock)
            try:
                select.select(fds, [], [], left)
            except (OSError, ValueError):
                time.sleep(left)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is not None or self.pidfd is None:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The supervisor's fork server: ``launch()`` it, ``spawn()`` roles (None: not now, start
    it the exec way), ``check()`` it from the watch loop, ``close()`` it at the end.
    ``event(what, **kw)``: the supervisor's event log; ``log(proc)``: starts the thread
    that turns the server's output into its log (``forkserver.jsonl``)."""

    def __init__(self, event, log=None, ready_timeout_s: float = READY_TIMEOUT_S):
        self.event, self.log = event, log
        self.ready_timeout_s = ready_timeout_s
        self.link: _Link | None = None
        self.retired: list[_Link] = []    # stale servers, until what they forked has ended
        self.next_try = 0.0
        self.seq = 0
        self.launches = 0

    def launch(self) -> None:
        """Start a server (not waiting for it to be ready)."""
        if self.link is not None and self.link.alive():
            return
        try:          # the handles need pidfds (Linux 5.3): without them, exec every role
            os.close(os.pidfd_open(os.getpid()))
        except (AttributeError, OSError) as e:
            self.next_try = float("inf")
            self.event("fork_server", state="unavailable", reason=f"no pidfd: {e}")
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, "-m", "arbpipe.ops.forkserver", "--fd", str(theirs.fileno()),
                "--parent", str(os.getpid()), "--", *([""] * TITLE_ROOM)]
        # numpy's OpenBLAS starts its worker threads at import: one thread here, so that a
        # fork copies everything there is (the roles do no BLAS work: single-threaded there)
        env = dict(os.environ, PYTHONUNBUFFERED="1", OPENBLAS_NUM_THREADS="1")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    pass_fds=[theirs.fileno()])
        except OSError as e:
            ours.close()
            theirs.close()
            self.next_try = time.monotonic() + RETRY_S
            self.event("fork_server", state="unavailable", reason=str(e))
            return
        theirs.close()
        self.launches += 1
        self.link = _Link(proc, ours)
        self.started = time.monotonic()
        if self.log is not None:
            self.log(proc)

    def ready(self, wait: bool) -> _Link | None:
        """The ready server's link, else None (``wait``: wait for a starting one)."""
        link = self.link
        if link is None or not link.alive():
            if link is not None:
                self.event("fork_server", state="exited", pid=link.proc.pid,
                           code=link.proc.poll())
                self.link = link = None
            if time.monotonic() < self.next_try:
                return None
            self.launch()
            link = self.link
            if link is None:
                return None
        if not link.ready:
            deadline = self.started + self.ready_timeout_s
            while True:
                link.pump(min(max(deadline - time.monotonic(), 0.0), 0.5) if wait else 0.0)
                if link.ready or not link.alive() or not wait or time.monotonic() >= deadline:
                    break
            if not link.ready:
                if not link.alive() or time.monotonic() >= deadline:
                    self.event("fork_server", state="unavailable", pid=link.proc.pid,
                               reason="exited before ready" if link.dead else "not ready in "
                               f"{self.ready_timeout_s:g} s")
                    self._stop(link)
                    self.link = None
                    self.next_try = time.monotonic() + RETRY_S
                return None
            info = link.info
            if info.get("threads") != 1:
                self.event("fork_server", state="unavailable", pid=link.proc.pid,
                           reason=f"{info.get('threads')} threads")
                self._stop(link)
                self.link = None
                self.next_try = time.monotonic() + RETRY_S
                return None
            self.event("fork_server", state="up", pid=link.proc.pid,
                       preload_s=info.get("preload_s"), failed=len(info.get("failed") or []))
        return link

    def check(self) -> None:
        """From the watch loop: notice a dead server and start another; notice a starting
        one ready (its ``fork_server`` event); close a stale one whose roles all ended."""
        for link in list(self.retired):
            link.pump(0.0)
            if not link.handles or not link.alive():
                self.retired.remove(link)
                self._stop(link)
        if self.link is not None and (not self.link.alive() or not self.link.ready):
            self.ready(wait=False)

    def spawn(self, argv: list[str], env: dict, cwd: str, cpus=None, nice: int = 0,
              wait: bool = False) -> ForkedProcess | None:
        """Fork ``python -m procs.<role> ...`` (``forkable``); None: no ready server."""
        if forkable(argv) is None:
            return None
        link = self.ready(wait)
        if link is None:
            return None
        r, w = os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        try:
            with link.lock:
                self.seq += 1
                req = {"id": self.seq, "argv": list(argv), "env": dict(env), "cwd": cwd,
                       "cpus": list(cpus or []), "nice": int(nice or 0)}
                try:
                    socket.send_fds(link.sock, [json.dumps(req).encode()], [stdin, w, w])
                except OSError:
                    link._died()
                    os.close(r)
                    return None
                deadline = time.monotonic() + 10.0
                while self.seq not in link.replies and link.alive() \
                        and time.monotonic() < deadline:
                    link.pump(0.5)
                rep = link.replies.pop(self.seq, None)
                if rep is None or "pid" not in rep:
                    os.close(r)
                    if rep is not None and "stale" in rep:
                        # it still reports the exits of what it forked, then is closed;
                        # a new server loads the code on disk
                        self.event("fork_server", state="stale", pid=link.proc.pid,
                                   changed=rep["stale"])
                        self.retired.append(link)
                        self.link = None
                        self.launch()
                    elif rep is not None:
                        self.event("fork_server", state="refused", reason=rep.get("error"))
                    return None
                h = ForkedProcess(link, int(rep["pid"]), list(argv), os.fdopen(r, "rb"))
                link.handles[h.pid] = h
                return h
        finally:
            os.close(w)
            os.close(stdin)

    def _stop(self, link: _Link, timeout: float = 5.0) -> None:
        if not link.dead:
            link._died()           # closes our end: the server's EOF
        try:
            link.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            link.proc.kill()
            link.proc.wait(5)

    def close(self) -> None:
        for link in self.retired:
            self._stop(link)
        self.retired.clear()
        if self.link is not None:
            self._stop(self.link)
            self.link = None


if __name__ == "__main__":
    sys.exit(main())
