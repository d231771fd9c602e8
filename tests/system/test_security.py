"""Security: shared-memory hygiene, local-only listening sockets, no credential leaks.

(tests/test_segments.py covers mode 0600 of one ring, refusal of wrong magic / version /
record size / kind, a segment chown'ed to another uid, and `nobody` failing to open(2)
ours; here: every object of a running tree, our own attach code run as a second uid,
truncated or doctored ring headers, listening sockets, and credentials.)
"""
import functools
import json
import mmap
import os
import re
import signal
import socket
import stat
import subprocess
import time
import urllib.request

import numpy as np
import posix_ipc
import psutil
import pytest

from arbpipe.transport import segments
from arbpipe.transport.rings import MpmcRing, SpscRing, attach_any
from bench.harness import Tree, tree_config
from shm_layouts import ring as L
from tests import helpers
from tests.helpers import wait_for
from tests.redis_fixture import require_redis_server

ROOT = os.geteuid() == 0
NOBODY = 65534


_cli = functools.partial(helpers.cli, check=False)


def _tree_pids(t: Tree) -> list[int]:
    st = t.status() or {}
    try:
        sup = psutil.Process(st["supervisor_pid"])
        return [sup.pid] + [c.pid for c in sup.children(recursive=True)]
    except (KeyError, psutil.Error):
        return []


@pytest.fixture
def tree(instance, tmp_path):
    t = Tree(instance, str(tmp_path), tree_config(str(tmp_path / "arbpipe.toml"), 50.0))
    t.up()
    try:
        yield t
    finally:
        t.down()


# ------------------------------------------------------------------ shared memory -----

def test_every_object_of_a_running_tree_is_0600_and_ours(tree, instance):
    wait_for(lambda: any(s.name == "detector.stats" for s in segments.list_segments(instance)),
          what="the detector's segment")
    entries = [e for e in os.listdir("/dev/shm") if f"arbpipe.{instance}." in e]
    kinds = {e.split(".")[0] for e in entries}
    assert len(entries) > 20 and kinds == {"arbpipe", "sem"}, entries
    for e in entries:
        st = os.stat(os.path.join("/dev/shm", e))
        assert stat.S_IMODE(st.st_mode) == 0o600, (e, oct(st.st_mode))
        assert st.st_uid == os.geteuid() and st.st_gid == os.getegid(), e
    # the run dir (logs, status, the embedded redis socket) is private too
    assert stat.S_IMODE(os.stat(tree.dir).st_mode) & 0o077 == 0, oct(os.stat(tree.dir).st_mode)


def _as_nobody(fn) -> int:
    """Run fn() in a forked child switched to uid/gid 65534; its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = fn()
        except BaseException:  # noqa: BLE001 - report through the exit code
            code = 98
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not ROOT, reason="needs root to switch to a second uid")
def test_a_second_uid_is_refused_by_our_own_attach_with_a_clear_error(instance):
    ring = SpscRing.create("private", 64, "MarketUpdate", instance=instance)
    mp = MpmcRing.create("private2", 64, "MarketUpdate", instance=instance)

    def attach_ring():
        for cls, name in ((SpscRing, "private"), (MpmcRing, "private2")):
            try:
                cls.attach(name, instance=instance)
                return 1                                  # must not work
            except segments.SegmentError as e:
                if "permission denied" not in str(e) or name not in str(e):
                    return 2
        return 0

    def open_semaphore():
        try:
            posix_ipc.Semaphore(segments.sem_name(instance, "private", "c"))
            return 1
        except posix_ipc.PermissionsError:
            return 0

    def segments_listing():
        # what another user may see: the names, never the headers
        found = segments.list_segments(instance)
        return 0 if found and all(s.header is None for s in found) else 3

    assert _as_nobody(attach_ring) == 0
    assert _as_nobody(open_semaphore) == 0
    assert _as_nobody(segments_listing) == 0
    for r in (ring, mp):
        r.unlink()
        r.close()


def _shm_fd(instance, name):
    return posix_ipc.SharedMemory(segments.shm_name(instance, name))


def test_a_truncated_ring_segment_is_refused(instance):
    ring = SpscRing.create("short", 1024, "MarketUpdate", instance=instance)
    shm = _shm_fd(instance, "short")
    os.ftruncate(shm.fd, 8192)                  # header intact, most of the data gone
    shm.close_fd()
    with pytest.raises(segments.SegmentError, match=r"size 8192 bytes, its header needs \d+"):
        SpscRing.attach("short", instance=instance)
    with pytest.raises(segments.SegmentError, match="size 8192"):
        attach_any("short", instance=instance)
    ring.unlink()
    ring.close()


@pytest.mark.parametrize("field,off,dtype,value,msg", [
    ("capacity", L.OFF_CAPACITY, np.uint32, 1000, "capacity must be a power of two"),
    ("record size", L.OFF_RECORD_SIZE, np.uint32, 60, "record_size must be a positive"),
    ("data offset", L.OFF_DATA_OFFSET, np.uint32, 128, "offsets seq"),
    ("max readers", L.OFF_MAX_READERS, np.uint32, 0, "max_readers 0 out of range"),
    ("capacity too big", L.OFF_CAPACITY, np.uint32, 1 << 20, "its header needs"),
])
def test_a_doctored_ring_header_is_refused(instance, field, off, dtype, value, msg):
    ring = SpscRing.create("doc", 64, "MarketUpdate", instance=instance)
    shm = _shm_fd(instance, "doc")
    mm = mmap.mmap(shm.fd, shm.size)
    shm.close_fd()
    np.frombuffer(mm, np.uint8)[off:off + np.dtype(dtype).itemsize].view(dtype)[0] = value
    del mm
    with pytest.raises(segments.SegmentError, match=msg):
        attach_any("doc", instance=instance, )
    ring.unlink()
    ring.close()


# ------------------------------------------------------------------ sockets -----------

def test_every_listening_socket_of_the_tree_binds_loopback(tree):
    t = tree
    ready = wait_for(lambda: _dashboard_ready(t), what="the dashboard's ready line")
    assert ready.get("port"), ready
    socks = wait_for(lambda: [s for s in [_listening(t)] if len(s) >= 2 and
                           any(a.port == ready["port"] for _, a in s)],
                  what="the simulator and metrics ports")[0]
    for pid, addr in socks:
        assert addr.ip in ("127.0.0.1", "::1"), (psutil.Process(pid).cmdline(), addr)
    # the dashboard's Prometheus endpoint is among them and answers locally
    dash = next(p for p in (t.status() or {})["processes"] if p["role"] == "dashboard")
    ports = [a.port for pid, a in socks if pid == dash["pid"]]
    assert ports, f"dashboard has no listening socket: {socks}"


def _listening(t):
    pids = set(_tree_pids(t))
    return [(c.pid, c.laddr) for c in psutil.net_connections(kind="inet")
            if c.pid in pids and c.status == psutil.CONN_LISTEN]


# ------------------------------------------------------------------ credentials -------

PASSWORD = "pw-Zq81x-Never-Print-Me"


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def redis_with_password(tmp_path):
    """A redis-server on a TCP port with a password (a redis:// URL with a host, where the
    shared fixtures of tests/redis_fixture.py use unix sockets). Found, skipped or failed
    like them: without the binary it skips, or fails under ARBPIPE_REQUIRE_REDIS=1."""
    exe = require_redis_server()
    port = _free_port()
    conf = tmp_path / "redis.conf"            # the password in a file, not on a command line
    conf.write_text(f"port {port}\nbind 127.0.0.1\nrequirepass {PASSWORD}\nsave \"\"\n"
                    f"appendonly no\ndir {tmp_path}\n")
    p = subprocess.Popen([exe, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _connects(port), timeout=20, what="redis-server")
        yield port
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(10)


def _connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("password", ["right", "wrong"])
def test_no_credential_in_logs_status_stats_or_metrics(instance, tmp_path, redis_with_password,
                                                        password):
    """A run with a Redis password (the right one from the config file, then a wrong one from
    ARBPIPE_REDIS_URL: error paths): nothing the tree writes or serves contains it. (The tree
    trades on paper only: it reads no exchange API keys, and claims nothing about them.)"""
    pw = PASSWORD if password == "right" else PASSWORD + "-WRONG"
    url = f"redis://:{pw}@127.0.0.1:{redis_with_password}/0"
    cfg = tree_config(str(tmp_path / "arbpipe.toml"), 50.0)
    t = Tree(instance, str(tmp_path), cfg)
    if password == "right":                   # the URL in the config file ...
        text = open(cfg).read()
        text, n = re.subn(r'(?m)^url = ""', f'url = "{url}"', text, count=1)
        assert n == 1
        open(cfg, "w").write(text)
    else:                                     # ... and in ARBPIPE_REDIS_URL, the other way in
        t.env.update(ARBPIPE_REDIS_URL=url)
    secrets = [pw, PASSWORD]
    t.up()
    try:
        st = t.status()
        assert any(p["role"] == "persister" for p in st["processes"]), st
        # let the persister connect and write (or fail to) for a while
        wait_for(lambda: "no persister state" not in _cli("stat", "persister", "--instance",
                                                       instance, env=t.env).stdout,
              what="the persister's state")
        time.sleep(3)
        outputs = {}
        for args in (("status",), ("stat", "rings"), ("stat", "feeds"), ("stat", "detector"),
                     ("stat", "strategy"), ("stat", "persister"), ("stat", "rings", "--json"),
                     ("stat", "persister", "--json"), ("risk", "show")):
            r = _cli(*args, "--instance", instance, env=t.env)
            outputs[" ".join(args)] = r.stdout + r.stderr
        if password == "right":
            assert "***" in outputs["stat persister"] or "***" in outputs["status"], outputs
        ready = wait_for(lambda: _dashboard_ready(t), what="the dashboard's ready line")
        if ready.get("url"):
            outputs["metrics"] = urllib.request.urlopen(ready["url"], timeout=10).read().decode()
        for s in segments.list_segments(instance):    # state blobs, stats segments: raw bytes
            with open(os.path.join("/dev/shm", f"arbpipe.{instance}.{s.name}"), "rb") as f:
                outputs[f"shm {s.name}"] = f.read().decode("latin-1")
        for pid in _tree_pids(t):                     # command lines are world-readable
            try:
                outputs[f"cmdline {pid}"] = " ".join(psutil.Process(pid).cmdline())
            except psutil.Error:
                pass
    finally:
        t.down()
    for root, _, files in os.walk(t.rundir):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                outputs[os.path.join(root, f)] = fh.read().decode("utf-8", "replace")
    assert len(outputs) > 15
    assert any("persister" in k for k in outputs)
    for where, out in outputs.items():
        for s in secrets:
            assert s not in out, f"{s!r} leaked in {where}: ...{out[max(out.find(s) - 200, 0):out.find(s) + 50]}"


def _dashboard_ready(t):
    try:
        with open(os.path.join(t.dir, "dashboard.jsonl")) as f:
            for line in f:
                rec = json.loads(line)
                if '"ready"' in rec.get("line", ""):
                    return json.loads(rec["line"])["metrics"]
    except (OSError, ValueError, KeyError):
        return None
    return None
