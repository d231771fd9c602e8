"""The HTTP endpoint on a running tree: healthy and ready; not ready while the strategy is
halted through POST /kill-switch or while a venue's feed is frozen; unhealthy while a role
crash-loops; /status is `arbpipe status --json`; the token appears nowhere it writes."""
import json
import os
import signal
import urllib.error
import urllib.request

from bench.harness import Tree, tree_config
from tests.helpers import cli, wait_for

TOKEN = "tok-93ab1f-Never-Log-Me"


def _url(t):
    try:
        with open(os.path.join(t.dir, "dashboard.jsonl")) as f:
            for line in f:
                rec = json.loads(line)
                if '"ready"' in rec.get("line", ""):
                    url = json.loads(rec["line"])["metrics"]["url"]
                    return url and url.removesuffix("/metrics")
    except (OSError, ValueError, KeyError):
        return None
    return None


def get(url, method="GET", body=None, token=None):
    h = {"Authorization": f"Bearer {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, h, method=method),
                                    timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _problems(base, path, code):
    c, doc = get(base + path)
    return doc["problems"] if c == code else None


def _pid(t, name):
    return next(p["pid"] for p in t.status()["processes"] if p["name"] == name)


def test_health_readiness_status_and_control_on_a_running_tree(instance, tmp_path):
    cfg = tree_config(str(tmp_path / "arbpipe.toml"), 50.0, {"health_grace_s": 2.0})
    good = open(cfg).read()
    t = Tree(instance, str(tmp_path), cfg)
    t.env["ARBPIPE_CONTROL_TOKEN"] = TOKEN
    t.up()
    try:
        base = wait_for(lambda: _url(t), 120, "the dashboard's HTTP endpoint")
        wait_for(lambda: get(base + "/readyz")[0] == 200, 120, "/readyz 200")
        code, doc = get(base + "/healthz")
        assert code == 200 and doc == {"ok": True, "problems": []}
        code, doc = get(base + "/status")
        cli_doc = json.loads(cli("status", "--json", "--instance", instance, env=t.env).stdout)
        assert code == 200 and doc["running"] and cli_doc["running"]
        assert doc["supervisor"]["supervisor_pid"] == cli_doc["supervisor"]["supervisor_pid"]
        assert [p["name"] for p in doc["supervisor"]["processes"]] == \
            [p["name"] for p in cli_doc["supervisor"]["processes"]]

        # halted through the control endpoint: not ready, saying why; then ready again
        assert get(base + "/kill-switch", "POST", {"on": True})[0] == 401
        assert get(base + "/kill-switch", "POST", {"on": True}, token=TOKEN)[0] == 200
        wait_for(lambda: "strategy: kill switch on" in (_problems(base, "/readyz", 503) or []),
                 60, "/readyz 503 naming the kill switch")
        assert get(base + "/healthz")[0] == 200            # halted is not unhealthy
        assert get(base + "/kill-switch", "POST", {"on": False}, token=TOKEN)[0] == 200
        wait_for(lambda: get(base + "/readyz")[0] == 200, 60, "/readyz 200 after resuming")

        # a venue's feed frozen: not ready, naming the venue; healthy (the process runs)
        feed = _pid(t, "feed.okx")
        os.kill(feed, signal.SIGSTOP)
        try:
            wait_for(lambda: any(p.startswith("venue okx:") for p in
                                 _problems(base, "/readyz", 503) or []),
                     60, "/readyz 503 naming okx")
            assert get(base + "/healthz")[0] == 200
        finally:
            os.kill(feed, signal.SIGCONT)
        wait_for(lambda: get(base + "/readyz")[0] == 200, 60, "/readyz 200 after okx resumed")

        # a role that cannot start again (its config broken) is unhealthy after the grace
        with open(cfg, "w") as f:
            f.write("this is = not [toml\n")
        os.kill(_pid(t, "persister"), signal.SIGKILL)
        problems = wait_for(lambda: _problems(base, "/healthz", 503), 60, "/healthz 503")
        assert any(p.startswith("persister: restarting for") for p in problems), problems
        with open(cfg, "w") as f:
            f.write(good)
        wait_for(lambda: get(base + "/healthz")[0] == 200, 60, "/healthz 200 after the fix")
    finally:
        with open(cfg, "w") as f:
            f.write(good)
        t.down()
    audit = [json.loads(x) for x in open(os.path.join(t.dir, "control.jsonl"))]
    assert [(a["action"], a["outcome"], a.get("on")) for a in audit] == [
        ("kill-switch", "no token", None), ("kill-switch", "done", True),
        ("kill-switch", "done", False)]
    assert {a["source"] for a in audit} == {"127.0.0.1"}
    for root, _, files in os.walk(t.rundir):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert TOKEN.encode() not in f.read(), name
