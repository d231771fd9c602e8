"""deploy/systemd keeps its promises (docs/operations.md, "Running as a service").

* ``systemd-analyze verify`` accepts the unit (with ExecStart pointed at a real executable),
  and rejects deliberately broken copies of it: so a real mistake in the unit fails here.
* The stop is the Ctrl-C stop: the unit's KillSignal, sent to a running ``Supervisor``, runs
  its graceful shutdown; KillMode=mixed; TimeoutStopSec covers the supervisor's own stop
  budget, computed from its code.
* systemd-sysusers and systemd-tmpfiles accept the user and directory files.
"""
import ast
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy", "systemd")
UNIT = os.path.join(DEPLOY, "arbpipe.service")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values]}} of a unit file (keys may repeat: Environment=)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    lines = iter(text.splitlines())
    for line in lines:
        while line.endswith("\\"):                      # continuation lines
            line = line[:-1] + " " + next(lines, "")
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"key outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return out


def one(unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= is missing"
    assert len(values) == 1, f"[{section}] {key}= is set {len(values)} times"
    return values[0]


def seconds(value: str) -> float:
    """A systemd time span ("90", "90s", "1min 30s", "2m") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "ms": 1e-3}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts and "".join(n + u for n, u in parts) == value.replace(" ", ""), value
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


def environment(unit) -> dict[str, str]:
    env = {}
    for value in unit["Service"].get("Environment", []):
        for item in value.split():
            key, _, val = item.strip('"').partition("=")
            env[key] = val
    return env


@pytest.fixture(scope="module")
def unit():
    with open(UNIT) as f:
        return parse_unit(f.read())


# -- the stop budget, read from the supervisor's code ------------------------------------------

def _tree(func) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(func)))


def _constant_waits(func) -> list[float]:
    """The constant arguments of ``.wait(N)`` calls in ``func`` (waits after a SIGKILL)."""
    return [n.args[0].value for n in ast.walk(_tree(func))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "wait" and n.args and isinstance(n.args[0], ast.Constant)]


def stop_budget_s() -> float:
    """The longest stop of `arbpipe up`: for every stop stage of the tree a drain wait (all
    stages but the first), the SIGTERM grace and the wait after a SIGKILL; then the embedded
    Redis's SIGTERM timeout and its wait after a SIGKILL. Each number is read from the code,
    so making a wait longer there fails this test until the unit follows."""
    from arbpipe.ops import supervisor as S, tree
    from arbpipe.persist.redis_embed import EmbeddedRedis

    stages = {n.value.value for n in ast.walk(_tree(tree.plan))
              if isinstance(n, ast.keyword) and n.arg == "stage"
              and isinstance(n.value, ast.Constant)}
    drain = inspect.signature(S.Supervisor).parameters["drain_s"].default
    for n in ast.walk(_tree(tree.main)):   # `arbpipe up` may pass its own drain_s
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Supervisor":
            for kw in n.keywords:
                if kw.arg == "drain_s":
                    assert isinstance(kw.value, ast.Constant), "drain_s is no longer a constant"
                    drain = kw.value.value
    shutdown = _tree(S.Supervisor.shutdown)
    graces = [n.right.value for n in ast.walk(shutdown)
              if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add)
              and isinstance(n.left, ast.Call) and getattr(n.left.func, "attr", "") == "monotonic"
              and isinstance(n.right, ast.Constant)]
    kill_waits = _constant_waits(S.Supervisor.shutdown)
    redis_term = inspect.signature(EmbeddedRedis.stop).parameters["timeout"].default
    redis_kill_waits = _constant_waits(EmbeddedRedis.stop)
    found = dict(stages=stages, graces=graces, kill_waits=kill_waits,
                 redis_kill_waits=redis_kill_waits)
    assert stages and len(graces) == 1 and len(kill_waits) == 1 and len(redis_kill_waits) == 1, (
        f"the supervisor's stop code changed shape ({found}): update stop_budget_s")
    n = len(stages)
    return (sum(1 for s in stages if s > 0) * drain + n * (graces[0] + kill_waits[0])
            + redis_term + redis_kill_waits[0])


# -- the promises -------------------------------------------------------------------------------

def test_runs_arbpipe_up_in_the_foreground_as_its_own_user(unit):
    assert one(unit, "Service", "Type") in ("simple", "exec")
    argv = one(unit, "Service", "ExecStart").split()
    assert os.path.basename(argv[0]) == "arbpipe" and argv[1] == "up", argv
    assert argv[argv.index("--config") + 1] == "/etc/arbpipe/arbpipe.toml"
    assert "--detach" not in argv, "the supervisor must be the unit's main process"
    assert one(unit, "Service", "User") == "arbpipe"
    assert one(unit, "Service", "Group") == "arbpipe"
    assert one(unit, "Service", "EnvironmentFile") == "-/etc/arbpipe/arbpipe.env"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_run_dir_and_numba_cache_are_writable_under_protect_system(unit):
    env = environment(unit)
    state = "/var/lib/" + one(unit, "Service", "StateDirectory")
    cache = "/var/cache/" + one(unit, "Service", "CacheDirectory")
    assert env["ARBPIPE_RUN_DIR"] == state      # arbpipe.paths.run_dir: $ARBPIPE_RUN_DIR/<instance>
    assert one(unit, "Service", "WorkingDirectory") == state
    assert env["NUMBA_CACHE_DIR"].startswith(cache + "/")
    with open(os.path.join(DEPLOY, "arbpipe.tmpfiles.conf")) as f:
        tmpfiles = f.read()
    assert re.search(rf"^d\s+{re.escape(state)}\s+0700\s+arbpipe\s+arbpipe\b", tmpfiles, re.M)


def test_restarts_on_failure_within_a_start_limit(unit):
    assert one(unit, "Service", "Restart") == "on-failure"
    assert seconds(one(unit, "Service", "RestartSec")) >= 1
    assert int(one(unit, "Unit", "StartLimitBurst")) >= 1
    assert seconds(one(unit, "Unit", "StartLimitIntervalSec")) > 0
    # a bad config exits 2 (arbpipe.ops.tree.main): restarting it cannot help
    assert "2" in one(unit, "Service", "RestartPreventExitStatus").split()


def test_stop_signals_the_supervisor_only_and_waits_for_its_budget(unit):
    assert one(unit, "Service", "KillMode") == "mixed"
    budget = stop_budget_s()
    assert 10 < budget < 600, budget
    timeout = seconds(one(unit, "Service", "TimeoutStopSec"))
    assert timeout >= budget, (f"TimeoutStopSec={timeout:g}s is shorter than the supervisor's "
                               f"stop budget of {budget:g}s: systemd would SIGKILL a draining tree")
    assert unit["Service"].get("SendSIGKILL", ["yes"]) == ["yes"]   # stragglers after it
    assert "ExecStop" not in unit["Service"], "the KillSignal does the graceful stop"


def test_no_private_dev_shm_and_nothing_that_breaks_numba(unit):
    """Operator shells (`arbpipe status`, `attach`, `down`) must see the service's /dev/shm."""
    svc = unit["Service"]
    for key in ("TemporaryFileSystem", "InaccessiblePaths", "BindPaths", "BindReadOnlyPaths",
                "ReadOnlyPaths"):
        for value in svc.get(key, []):
            assert "/dev" not in value, f"{key}={value} hides the host's /dev/shm"
    for key in ("RootDirectory", "RootImage"):
        assert key not in svc, f"{key}= gives the service a /dev/shm of its own"
    for key in ("DynamicUser", "RemoveIPC", "MemoryDenyWriteExecute"):
        assert svc.get(key, ["no"]) == ["no"], f"{key}= breaks shared memory or numba"


def test_the_kill_signal_stops_a_running_supervisor_gracefully(unit, instance, tmp_path,
                                                               monkeypatch):
    """Send the unit's KillSignal to a running (empty) Supervisor: it must be one the
    supervisor handles, and end the run through its graceful shutdown."""
    from arbpipe.ops.supervisor import Supervisor

    sig = signal.Signals[one(unit, "Service", "KillSignal")]
    monkeypatch.setenv("ARBPIPE_RUN_DIR", str(tmp_path))
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, sig)}
    sup = Supervisor(instance, [], [], console=lambda line: None)
    calls = []

    def until():
        calls.append(signal.getsignal(sig))
        if len(calls) == 1 and getattr(calls[0], "__self__", None) is sup:
            os.kill(os.getpid(), sig)       # handled: the supervisor's handler, not ours
        return len(calls) > 1 and (getattr(calls[0], "__self__", None) is not sup
                                   or len(calls) > 100)
    try:
        code = sup.run(until=until)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    assert getattr(calls[0], "__self__", None) is sup, (
        f"the supervisor does not handle KillSignal={sig.name} (handler {calls[0]!r})")
    assert len(calls) == 1, "the signal did not stop the supervisor's loop"
    assert code == 0
    with open(os.path.join(tmp_path, instance, "supervisor.jsonl")) as f:
        events = [json.loads(line)["event"] for line in f]
    assert events[-2:] == ["stopping", "down"], events


# -- the files, as systemd reads them --------------------------------------------------------

def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (package systemd): cannot check deploy/systemd")
    return path


# Messages about the machine, not the unit (user not created yet on this host).
ENVIRONMENT_ONLY = re.compile(r"(user|group) .*(does not exist|not found|failed to resolve)",
                              re.I)


def verify_problems(text: str, tmp_path) -> list[str]:
    """What `systemd-analyze verify` objects to in a copy of the unit with ExecStart on a real
    executable. Unknown keys or sections and unparsable values only warn (exit 0), so every
    diagnostic line about the file counts, besides a failing exit status."""
    exe = os.path.join(os.path.dirname(sys.executable), "arbpipe")
    if not os.access(exe, os.X_OK):
        exe = sys.executable
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={exe}", text, count=1, flags=re.M)
    d = tmp_path / f"u{len(list(tmp_path.iterdir()))}"
    d.mkdir()
    path = d / "arbpipe.service"
    path.write_text(text)
    r = subprocess.run([_tool("systemd-analyze"), "verify", "--man=no", str(path)],
                       capture_output=True, text=True, timeout=120)
    out = (r.stdout + r.stderr).splitlines()
    problems = [line for line in out
                if line.startswith(f"{path}:") and not ENVIRONMENT_ONLY.search(line)]
    if r.returncode != 0:
        problems.append(f"exit {r.returncode}: " + " | ".join(out))
    return problems


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    with open(UNIT) as f:
        assert verify_problems(f.read(), tmp_path) == []


@pytest.mark.parametrize("broken", [
    ("KillMode=mixed", "KilMode=mixed"),                 # unknown directive
    ("KillMode=mixed", "KillMode=mixd"),                 # bad value
    ("Restart=on-failure", "Restart=on-failur"),         # bad value
    ("[Install]", "[Instal]"),                           # unknown section
    ("[Service]", "[Servce]"),                           # unknown section: no ExecStart
    ("TimeoutStopSec=90s", "TimeoutStopSec=ninety"),     # bad time span
])
def test_systemd_analyze_verify_rejects_a_broken_copy(tmp_path, broken):
    with open(UNIT) as f:
        text = f.read()
    old, new = broken
    text, n = re.subn(rf"^{re.escape(old)}$", new, text, count=1, flags=re.M)
    assert n == 1, f"no line {old!r} in the unit any more: update this test"
    assert verify_problems(text, tmp_path), f"{new!r} was not flagged"


def test_sysusers_and_tmpfiles_create_the_user_and_directories(tmp_path):
    sysusers, tmpfiles = _tool("systemd-sysusers"), _tool("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles --root needs root to chown (CI runs as root)")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for cmd in ([sysusers, f"--root={root}", os.path.join(DEPLOY, "arbpipe.sysusers.conf")],
                [tmpfiles, f"--root={root}", "--create",
                 os.path.join(DEPLOY, "arbpipe.tmpfiles.conf")]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "Failed" not in r.stderr, (cmd, r.stdout, r.stderr)
    entry = [line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()
             if line.startswith("arbpipe:")]
    assert entry and entry[0][5] == "/var/lib/arbpipe", entry
    uid = int(entry[0][2])
    assert uid < 1000, "a system user: logind's RemoveIPC spares system users' shared memory"
    st = os.stat(root / "var" / "lib" / "arbpipe")
    assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o700)
