"""The whole tree: `arbpipe up --detach` on the simulator, opportunities, restarts, `down`."""
import json
import os
import re
import signal
import time

import psutil
import pytest

from arbpipe.transport import segments
from arbpipe.config import DEFAULT_PATH
from arbpipe.transport.rings import BroadcastRing
from shm_layouts import OppState
from tests.helpers import cli, wait_for

VENUE_IDS = set(range(1, 9))


@pytest.fixture
def tree(instance, tmp_path):
    text = open(DEFAULT_PATH).read()
    text = re.sub(r"(?m)^rate_hz = .*$", "rate_hz = 40.0", text, count=1)
    text = re.sub(r"(?m)^dislocation_rate_hz = .*$", "dislocation_rate_hz = 0.05", text,
                  count=1)
    cfg = tmp_path / "arbpipe.toml"
    cfg.write_text(text)
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"), ARBPIPE_INSTANCE=instance)
    out = cli("up", "--detach", "--config", str(cfg), env=env, timeout=180)
    assert "running" in out.stdout, out.stdout + out.stderr
    st = json.load(open(tmp_path / "run" / instance / "status.json"))
    pids = [st["supervisor_pid"]]
    try:
        yield env, st
    finally:
        st2 = None
        try:
            st2 = json.load(open(tmp_path / "run" / instance / "status.json"))
        except (OSError, ValueError):
            pass
        kids = [p["pid"] for p in (st2 or st)["processes"] if p["pid"]]
        cli("down", env=env, check=False, timeout=120)
        for pid in pids + kids:  # nothing of the tree survives `down`
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", pid


def read_opportunities(instance, want, timeout=120, need_open=False):
    """At least ``want`` records read after joining (and, with ``need_open``, until one of
    them is an OPEN: a reader that joins a running tree may first see updates and closes of
    opportunities opened before it came)."""
    ring = BroadcastRing.attach("opportunities", instance=instance)
    ring.join("test")
    out = ring.empty(256)
    got = []
    deadline = time.monotonic() + timeout
    while (len(got) < want or need_open and not any(o["state"] == OppState.OPEN for o in got)) \
            and time.monotonic() < deadline:
        n = ring.pop_batch(out, timeout=1.0)
        got.extend(out[:n].copy())
    ring.close()
    return got


def test_up_finds_opportunities_and_down_leaves_nothing(tree, instance):
    env, st = tree
    names = {p["name"] for p in st["processes"]}
    assert {"simulator", "detector", "feed.binance", "feed.okx", "feed.kraken"} <= names
    opps = read_opportunities(instance, 5, need_open=True)
    assert len(opps) >= 5, "no opportunities from the simulated venues"
    opened = [o for o in opps if o["state"] == OppState.OPEN]
    assert opened
    for o in opened:
        assert o["buy_venue"] in VENUE_IDS and o["sell_venue"] in VENUE_IDS
        assert o["sell_bid"] > o["buy_ask"] > 0, "an opportunity buys below where it sells"
        gross = (o["sell_bid"] - o["buy_ask"]) / ((o["sell_bid"] + o["buy_ask"]) / 2) * 1e4
        assert abs(gross - o["top_gross_bps"]) < 0.01 * max(1.0, gross)
        # at the walked size: buying never below the best ask, selling never above the best
        # bid (a VWAP is notional / size: at one level, within rounding of that level's price)
        assert o["vwap_buy"] >= o["buy_ask"] * (1 - 1e-12), (o["vwap_buy"], o["buy_ask"])
        assert o["vwap_sell"] <= o["sell_bid"] * (1 + 1e-12), (o["vwap_sell"], o["sell_bid"])
        assert o["gross_bps"] <= o["top_gross_bps"] * 1.01 + 1e-9
        assert o["net_bps"] < o["gross_bps"], "fees must come off the gross spread"
        assert o["exec_qty"] > 0 and 0 <= o["confidence"] <= 100
        assert o["trigger_recv_ns"] <= o["detect_ns"]
    rings = json.loads(cli("stat", "rings", "--json", "--instance", instance, env=env).stdout)
    by = {r["name"]: r for r in rings}
    feeds = [r for r in rings if r["name"].startswith("feed.")]
    assert len(feeds) == 8
    wait_for(lambda: all(r["published"] > 0 for r in json.loads(cli(
        "stat", "rings", "--json", "--instance", instance, env=env).stdout)
        if r["name"].startswith("feed.")), what="every venue's feed publishing")
    assert by["feed.binance"]["readers"]
    assert "opportunities" in by and by["opportunities"]["kind"] == "broadcast"
    status = cli("status", env=env).stdout
    assert "detector" in status and "running" in status
    logs = os.path.join(env["ARBPIPE_RUN_DIR"], instance)
    for name in ("supervisor", "detector", "feed.binance"):
        with open(os.path.join(logs, f"{name}.jsonl")) as f:
            lines = [json.loads(x) for x in f if x.strip()]
        assert lines, f"{name} logged nothing"
    cli("down", env=env)
    assert not segments.list_segments(instance)
    assert not [e for e in os.listdir("/dev/shm") if f".{instance}." in e]


@pytest.mark.parametrize("role", ["detector", "feed.okx"])
def test_killed_role_is_restarted_and_pipeline_keeps_producing(tree, instance, role):
    env, st = tree
    run = os.path.join(env["ARBPIPE_RUN_DIR"], instance, "status.json")
    victim = next(p for p in st["processes"] if p["name"] == role)
    wait_for(lambda: read_opportunities(instance, 1, timeout=5), what="first opportunity")
    os.kill(victim["pid"], signal.SIGKILL)

    def restarted():
        s = json.load(open(run))
        p = next(p for p in s["processes"] if p["name"] == role)
        return p["restarts"] >= 1 and p["state"] == "running" and p["pid"] != victim["pid"]
    wait_for(restarted, what=f"{role} restart")
    ring = "feed.okx" if role == "feed.okx" else "opportunities"
    from arbpipe.ops.stat import snapshot

    def published():
        return next(r["published"] for r in snapshot(instance) if r["name"] == ring)
    p0 = published()
    wait_for(lambda: published() > p0, what=f"{ring} moving again after the restart")
