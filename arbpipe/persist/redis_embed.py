"""Which Redis the tree talks to, and a private ``redis-server`` when none is configured.

URL resolution (``arbpipe.redis_conn.resolve_url``), first that is set wins:
  1. ``$ARBPIPE_REDIS_URL`` (the supervisor sets it for its children when it embeds a server),
  2. ``[redis] url`` of the config,
  3. the URL of the embedded server of a running tree of this instance (``<run dir>/redis.url``,
     used by ``arbpipe risk ...`` from another shell),
  4. ``""``: no Redis; the tree runs without persistence.

Embedded server (``EmbeddedRedis``): ``redis-server`` on a unix socket in a private
directory (the run dir, or a short ``/tmp/arbpipe-redis-*`` one when the socket path would
pass the 107-byte ``sun_path`` limit), TCP off (``--port 0``), ``--save "" --appendonly no``
(no persistence files), socket mode 0700. ``start()`` waits until it answers PING;
``stop()`` ends it (SIGTERM, then SIGKILL), removes its socket and private directory.
With ``[redis] embedded_persist = true`` it keeps ``<run dir>/redis-dump.rdb`` (saved every
minute and at stop, loaded at the next start), so risk overrides and the breaker mirror
survive a restart of the whole tree. The
server gets ``PR_SET_PDEATHSIG`` so it dies with the process that started it, even on
SIGKILL. ``RedisService`` wraps it for the supervisor (started before the children, stopped
after them; its URL goes to the children as ``$ARBPIPE_REDIS_URL``).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from urllib.parse import quote

from arbpipe.redact import redact_url
from arbpipe.redis_conn import ENV_URL, URL_FILE, configured_url, ping  # noqa: F401 (ENV_URL: the children's variable)

SOCKET_NAME = "redis.sock"
RDB_NAME = "redis-dump.rdb"     # only with save=True ([redis] embedded_persist)
SUN_PATH_MAX = 100              # keep clear of the 108-byte sun_path (with NUL)
INSTALL_HINT = ("install it with `sudo apt-get install redis-server` (or `sudo scripts/install-redis`), "
                "or point at a server with ARBPIPE_REDIS_URL / [redis] url")


def redis_server_path() -> str | None:
    """The ``redis-server`` binary ($ARBPIPE_REDIS_SERVER, else PATH, else /usr/{s,}bin)."""
    explicit = os.environ.get("ARBPIPE_REDIS_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("redis-server")
    if found:
        return found
    for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(p, os.X_OK):
            return p
    return None


def redis_available(cfg) -> bool:
    """True when the tree will have a Redis: one is configured or redis-server can be embedded."""
    return bool(configured_url(cfg)) or redis_server_path() is not None


try:  # loaded here, in the parent: the child between fork and exec only makes the call
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _pdeathsig():  # runs in the child between fork and exec: no allocation, no locks
    if _prctl is not None:
        _prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG: die with the starting thread


class EmbeddedRedis:
    """A private redis-server on a unix socket; ``start()`` / ``stop()``, or ``with``."""

    def __init__(self, directory: str, password: str | None = None, save: bool = False,
                 binary: str | None = None, log_file: str | None = None,
                 extra_args: list[str] | None = None):
        self.directory = os.path.abspath(directory)
        self.password = password
        self.save = save                  # keep an RDB (``RDB_NAME`` in ``directory``) across stop/start
        self.binary = binary or redis_server_path()
        self.extra_args = list(extra_args or [])
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None
        self._short_dir: str | None = None
        sock = os.path.join(self.directory, SOCKET_NAME)
        if len(sock.encode()) > SUN_PATH_MAX:
            self._short_dir = tempfile.mkdtemp(prefix="arbpipe-redis-", dir="/tmp")
            sock = os.path.join(self._short_dir, SOCKET_NAME)
        self.socket = sock
        self.data_dir = self.directory    # redis-server's --dir: where an RDB would go

    @property
    def url(self) -> str:
        """``unix://[:password@]/path/redis.sock?db=0``."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"unix://{auth}{self.socket}?db=0"

    def argv(self) -> list[str]:
        a = [self.binary, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--dir", self.data_dir, "--daemonize", "no", "--appendonly", "no",
             "--protected-mode", "no", "--loglevel", "warning",
             "--logfile", self.log_file or ""]
        if self.save:
            a += ["--save", "60 1", "--dbfilename", RDB_NAME]
        else:
            a += ["--save", ""]
        a += self.extra_args
        if self.password:
            a.append("-")                 # the password comes on stdin, never in argv (ps)
        return a

    def start(self, timeout: float = 10.0) -> "EmbeddedRedis":
        if self.binary is None:
            raise FileNotFoundError(f"redis-server not found; {INSTALL_HINT}")
        if self.alive():
            return self
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        os.makedirs(os.path.dirname(self.socket), mode=0o700, exist_ok=True)
        try:
            os.unlink(self.socket)        # left by a killed server
        except FileNotFoundError:
            pass
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.PIPE if self.password
                                     else subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=_pdeathsig)
        if self.password:
            quoted = self.password.replace("\\", "\\\\").replace('"', '\\"')
            self.proc.stdin.write(f'requirepass "{quoted}"\n'.encode())
            self.proc.stdin.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode("utf-8", "replace").strip()
                self.proc = None
                raise RuntimeError(f"redis-server exited at start: {err[-500:] or 'no output'}")
            if os.path.exists(self.socket) and ping(self.url, 0.5):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on {self.socket} within {timeout} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its socket but answers nothing (a hung Redis)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self, timeout: float = 5.0, remove_data: bool | None = None) -> None:
        """End the server (SIGTERM; SIGKILL after ``timeout``) and remove its socket. With
        ``save`` the RDB is written at SIGTERM and kept unless ``remove_data``."""
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)   # a paused server cannot handle SIGTERM
            except ProcessLookupError:
                pass
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p is not None and p.stderr is not None:
            p.stderr.close()
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass
        if self._short_dir:
            shutil.rmtree(self._short_dir, ignore_errors=True)
        if self.save and remove_data:
            try:
                os.unlink(os.path.join(self.data_dir, RDB_NAME))
            except FileNotFoundError:
                pass

    def kill(self) -> None:
        """SIGKILL (a crash): nothing is saved; the socket file stays until ``start``."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc.stderr.close()
            self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(remove_data=True)


class RedisService:
    """The supervisor's embedded Redis, as a ``Supervisor.setups`` entry: ``setup(sup)``
    (before the children start) starts the server, exports its URL as
    ``$ARBPIPE_REDIS_URL`` to the children and records it in ``<run dir>/redis.url`` (for
    ``arbpipe risk`` from other shells); if it cannot start, the processes that need it
    (``needed_by``) are taken out of the tree and the event says so. ``close()`` (after
    the children stopped) stops it and leaves nothing behind."""

    needed_by = ("persister",)

    def __init__(self, instance: str, directory: str, persist: bool = False):
        self.instance = instance
        self.persist = persist            # keep <run dir>/redis-dump.rdb across runs
        self.server = EmbeddedRedis(directory, save=persist)
        self.url_file = os.path.join(directory, URL_FILE)
        self.event = lambda what, **kw: None
        self._env_before: str | None = None

    def setup(self, sup) -> "RedisService":
        self.event = sup.event
        try:
            self.server.start()
        except (OSError, RuntimeError) as e:
            sup.specs[:] = [s for s in sup.specs if s.role not in self.needed_by]
            self.event("redis", state="failed", error=str(e)[:300],
                       note="running without persistence")
            return self
        tmp = self.url_file + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{self.server.url} {os.getpid()}\n")
        os.replace(tmp, self.url_file)
        self._env_before = os.environ.get(ENV_URL)
        os.environ[ENV_URL] = self.server.url      # inherited by every child started now
        self.event("redis", state="embedded", url=redact_url(self.server.url),
                   pid=self.server.pid)
        return self

    def close(self) -> None:
        try:
            os.unlink(self.url_file)
        except FileNotFoundError:
            pass
        if self._env_before is None:
            os.environ.pop(ENV_URL, None)
        else:
            os.environ[ENV_URL] = self._env_before
        if self.server.proc is not None:
            self.server.stop(remove_data=not self.persist)
            self.event("redis", state="stopped")


def supervisor_service(cfg, instance: str, directory: str, console=print):
    """What the supervisor does about Redis, said once on ``console``: an external URL is
    used as configured (None returned); with none configured an embedded server is
    returned (``RedisService``) when redis-server exists; otherwise None and one line
    saying the tree runs without persistence."""
    url = configured_url(cfg)
    if url:
        console(f"[arbpipe] redis: {redact_url(url)} (persister, risk parameters)")
        return None
    if redis_server_path() is None:
        console("[arbpipe] redis: no [redis] url configured and no redis-server found: running "
                f"WITHOUT persistence and runtime risk changes; {INSTALL_HINT}")
        return None
    return RedisService(instance, directory, persist=cfg.redis.embedded_persist)
