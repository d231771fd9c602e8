"""The HTTP endpoint (arbpipe.ops.http) on a real socket, with a real strategy control
segment: routes, the token rules, bad input that changes nothing, the audit file, the
start-up refusal of a non-local bind without a token, and the health verdicts."""
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from arbpipe.config import load_config, parse_config
from arbpipe.ops import health as HL
from arbpipe.ops import http as HT
from arbpipe.paths import run_dir
from arbpipe.trading.control import Control
from tests.helpers import cli

TOKEN = "tok-5d1e7c-Never-Log-Me"


@pytest.fixture
def served(instance, tmp_path, monkeypatch):
    """An App on a free port with a control segment; yields (base url, control, app)."""
    monkeypatch.setenv("ARBPIPE_RUN_DIR", str(tmp_path / "run"))
    ctl = Control.create(instance)
    app = HT.App(load_config(), instance, lambda: "arbpipe_up 1\n", lambda: None, TOKEN)
    srv = HT.HttpServer(app, "127.0.0.1", 0)
    port = srv.start()
    try:
        yield f"http://127.0.0.1:{port}", ctl, app
    finally:
        srv.stop()
        ctl.close(unlink=True)


def req(url, method="GET", body=None, token=None, headers=None):
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    r = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def audit_lines(instance):
    path = os.path.join(run_dir(instance), "control.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(x) for x in f]


def test_metrics_status_and_index(served, instance):
    base, _, app = served
    code, h, body = req(base + "/metrics")
    assert code == 200 and body == "arbpipe_up 1\n"
    assert h["Content-Type"].startswith("text/plain; version=0.0.4")
    code, _, body = req(base + "/status")
    doc = json.loads(body)
    assert code == 200 and doc["instance"] == instance and doc["running"] is False
    assert {"strategy.control"} <= {s["name"] for s in doc["segments"]}
    code, _, body = req(base + "/")
    assert code == 200 and "/healthz" in body and "/kill-switch" in body
    # no supervisor in this test: unhealthy, not ready, each saying why
    code, _, body = req(base + "/healthz")
    assert code == 503 and json.loads(body) == {"ok": False,
                                                "problems": ["supervisor: not running"]}
    code, _, body = req(base + "/readyz")
    assert code == 503 and "dashboard: no view yet" in json.loads(body)["problems"]


def test_kill_switch_and_breaker_reset_need_the_token(served, instance):
    base, ctl, _ = served
    assert req(base + "/kill-switch", "POST", {"on": True})[0] == 401
    assert req(base + "/kill-switch", "POST", {"on": True}, token="nope")[0] == 403
    assert req(base + "/kill-switch", "POST", {"on": True}, token=TOKEN[:-1])[0] == 403
    assert ctl.kill is False and ctl.reset_requests == 0
    code, _, body = req(base + "/kill-switch", "POST", {"on": True}, token=TOKEN)
    assert code == 200 and json.loads(body) == {"kill_switch": True, "was": False}
    assert ctl.kill is True
    # the breaker is not reset while the kill switch is on (as `arbpipe breaker reset`)
    code, _, body = req(base + "/breaker/reset", "POST", token=TOKEN)
    assert code == 409 and ctl.reset_requests == 0
    assert req(base + "/kill-switch", "POST", {"on": False}, token=TOKEN)[0] == 200
    code, _, body = req(base + "/breaker/reset", "POST", token=TOKEN)
    assert code == 200 and ctl.reset_requests == 1 and ctl.kill is False
    lines = audit_lines(instance)
    assert [x["outcome"] for x in lines] == ["no token", "wrong token", "wrong token", "done",
                                             "kill switch on", "done", "done"]
    assert all(x["source"] == "127.0.0.1" and x["via"] == "http" for x in lines)
    assert [x["action"] for x in lines][-2:] == ["kill-switch", "breaker/reset"]
    with open(os.path.join(run_dir(instance), "control.jsonl")) as f:
        assert TOKEN not in f.read()
    assert os.stat(os.path.join(run_dir(instance), "control.jsonl")).st_mode & 0o077 == 0


def test_control_endpoints_are_off_without_a_token(instance, tmp_path, monkeypatch):
    monkeypatch.setenv("ARBPIPE_RUN_DIR", str(tmp_path / "run"))
    ctl = Control.create(instance)
    srv = HT.HttpServer(HT.App(load_config(), instance, lambda: "", lambda: None, None))
    base = f"http://127.0.0.1:{srv.start()}"
    try:
        code, _, body = req(base + "/kill-switch", "POST", {"on": True}, token=TOKEN)
        assert code == 403 and "control endpoints are off" in body
        assert req(base + "/breaker/reset", "POST", token="")[0] == 403
        assert ctl.kill is False and ctl.reset_requests == 0
        assert [x["outcome"] for x in audit_lines(instance)] == ["off", "off"]
    finally:
        srv.stop()
        ctl.close(unlink=True)


@pytest.mark.parametrize("path,method,body,code,why", [
    ("/nope", "GET", None, 404, "not found"),
    ("/metrics", "POST", b"{}", 405, "not allowed"),
    ("/kill-switch", "GET", None, 405, "not allowed"),
    ("/healthz", "DELETE", None, 405, "not allowed"),
    ("/kill-switch", "POST", b"{on: true", 400, "not JSON"),
    ("/kill-switch", "POST", b'{"on": "yes"}', 400, "body must be"),
    ("/kill-switch", "POST", b'{"on": true, "x": 1}', 400, "body must be"),
    ("/kill-switch", "POST", b"[true]", 400, "body must be"),
    ("/kill-switch", "POST", None, 400, "body must be"),
    ("/kill-switch", "POST", b'{"on": true}' + b" " * 2000, 400, "too large"),
    ("/kill-switch", "POST", b"\xff\xfe", 400, "not JSON"),
    ("/breaker/reset", "POST", b'{"now": 1}', 400, "takes no body"),
])
def test_bad_requests_change_nothing(served, path, method, body, code, why):
    base, ctl, _ = served
    got, h, text = req(base + path, method, body, token=TOKEN)
    assert got == code and why in text, (got, text)
    if code == 405:
        assert "Allow" in h
    assert ctl.kill is False and ctl.reset_requests == 0
    assert req(base + "/metrics")[0] == 200          # the scrape still works


def test_a_silent_client_does_not_hold_up_a_scrape(served):
    base, _, _ = served
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")     # ... and never finishes
        done = threading.Event()
        res = []

        def scrape():
            res.append(req(base + "/metrics")[0])
            done.set()
        threading.Thread(target=scrape, daemon=True).start()
        assert done.wait(30) and res == [200]
    finally:
        s.close()


def _cfg(tmp_path, **dashboard):
    text = open(os.path.join(os.path.dirname(__file__), "..", "..", "config",
                             "arbpipe.toml")).read()
    for k, v in dashboard.items():
        line = f"{k} = {json.dumps(v)}"
        if f"\n{k} = " in text:
            text = re.sub(rf"(?m)^{k} = .*$", line, text, count=1)
        else:
            text = text.replace("[dashboard]", f"[dashboard]\n{line}", 1)
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


def test_non_local_bind_needs_a_token(tmp_path, monkeypatch, instance):
    monkeypatch.delenv(HT.TOKEN_ENV, raising=False)
    open_cfg = parse_config(open(_cfg(tmp_path, metrics_host="0.0.0.0")).read())
    why = HT.check_bind(open_cfg)
    assert why and "dashboard.metrics_host '0.0.0.0'" in why and HT.TOKEN_ENV in why
    monkeypatch.setenv(HT.TOKEN_ENV, TOKEN)
    assert HT.check_bind(open_cfg) is None
    monkeypatch.delenv(HT.TOKEN_ENV)
    assert HT.check_bind(load_config()) is None                  # 127.0.0.1: no token needed
    # `arbpipe up` refuses before starting anything
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"))
    env.pop(HT.TOKEN_ENV, None)
    r = cli("up", "--config", _cfg(tmp_path, metrics_host="0.0.0.0"), "--instance", instance,
            env=env, check=False, timeout=120)
    assert r.returncode == 2 and "not a loopback address" in r.stderr, r.stdout + r.stderr
    assert not [e for e in os.listdir("/dev/shm") if f"arbpipe.{instance}." in e]
    # ... and so does the dashboard process alone
    r = subprocess.run([sys.executable, "-m", "procs.dashboard", "--config",
                        _cfg(tmp_path, metrics_host="0.0.0.0"), "--instance", instance],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not a loopback address" in r.stderr


def test_token_file_must_be_private_and_not_empty(tmp_path, monkeypatch):
    monkeypatch.delenv(HT.TOKEN_ENV, raising=False)
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o644)
    cfg = parse_config(open(_cfg(tmp_path, control_token_file=str(f))).read())
    with pytest.raises(HT.TokenError, match="mode 0644, must be 0600"):
        HT.load_token(cfg)
    f.chmod(0o600)
    assert HT.load_token(cfg) == TOKEN
    f.write_text("  \n")
    with pytest.raises(HT.TokenError, match="empty"):
        HT.load_token(cfg)
    missing = parse_config(open(_cfg(tmp_path, control_token_file=str(tmp_path / "no"))).read())
    assert "No such file" in HT.check_bind(missing)


def test_health_verdicts():
    now = 1_000.0
    st = {"started": now - 100, "uptime_s": 99.5, "processes": [
        {"name": "detector", "state": "running", "down_s": 0, "restarts": 0},
        {"name": "feed.okx", "state": "restarting", "down_s": 3.0, "restarts": 4}]}
    assert HL.health(st, now, grace_s=10) == (True, [])
    ok, why = HL.health(st, now, grace_s=2)
    assert not ok and why == ["feed.okx: restarting for 3.0 s (restarts 4)"]
    ok, why = HL.health(st, now + 30, grace_s=10)
    assert not ok and why[0].startswith("supervisor: status not updated for 30")
    now_ns = int(now * 1e9)
    view = {"venues": [{"venue": "okx", "status": "connected", "last_msg_age_s": 0.2},
                       {"venue": "gate", "status": "stale", "last_msg_age_s": 9.0}],
            "detector": {"alive": True, "heartbeat_ns": now_ns - 10**8},
            "strategy": {"kill_switch": False, "breaker": {"tripped": False}, "_alive": True}}
    args = (3.0, 0.1, now_ns, 10)
    assert HL.readiness(st, view, ["okx"], *args) == (True, [])
    ok, why = HL.readiness(st, view, ["okx", "gate", "kraken"], *args)
    assert why == ["venue gate: stale", "venue kraken: no feed statistics"]
    view["venues"][0].update(books=10, books_ready=8)        # depth on: two books resyncing
    assert HL.readiness(st, view, ["okx"], *args)[1] == ["venue okx: 2 of 10 books resyncing"]
    view["venues"][0].update(books_ready=10)
    view["strategy"]["kill_switch"] = True
    view["strategy"]["breaker"] = {"tripped": True, "reason": "DAILY_LOSS"}
    view["detector"]["heartbeat_ns"] = now_ns - 5 * 10**9
    ok, why = HL.readiness(st, view, ["okx"], *args)
    assert why == ["detector: heartbeat 5.0 s old (max 2 s)", "strategy: kill switch on",
                   "strategy: breaker tripped (DAILY_LOSS)"]
    assert HL.readiness(None, view, [], *args)[1][0] == "supervisor: not running"
