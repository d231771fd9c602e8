"""The strategy inside the real tree on the simulator: opportunities become simulated
trades with consistent PnL, the kill switch flipped from the CLI stops new orders, and a
SIGKILLed strategy comes back with exactly the positions its journal says."""
import json
import os
import re
import signal

import pytest

from arbpipe.config import DEFAULT_PATH, load_config
from arbpipe.trading.journal import Journal, read_journal
from arbpipe.trading.strategy import Strategy
from arbpipe.trading.view import read_state
from shm_layouts.journal import JournalKind, RejectReason
from tests.system.test_pipeline import cli, wait_for

QUIET = ("binance-usdm", "bybit-linear", "coinbase", "kraken", "gate")


@pytest.fixture
def small_tree(instance, tmp_path):
    text = open(DEFAULT_PATH).read()
    for v in QUIET:  # three venues (binance, bybit-spot, okx spot+perp) keep the tree light
        text = text.replace(f"[venues.{v}]\n", f"[venues.{v}]\nenabled = false\n", 1)
    text = re.sub(r"(?m)^rate_hz = .*$", "rate_hz = 40.0", text, count=1)
    text = re.sub(r"(?m)^dislocation_rate_hz = .*$", "dislocation_rate_hz = 0.08", text, count=1)
    cfg = tmp_path / "arbpipe.toml"
    cfg.write_text(text)
    run = tmp_path / "run"
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(run), ARBPIPE_INSTANCE=instance)
    out = cli("up", "--detach", "--config", str(cfg), env=env, timeout=180)
    assert "running" in out.stdout, out.stdout + out.stderr
    try:
        yield env, str(cfg), run / instance
    finally:
        cli("down", env=env, check=False, timeout=120)


def replayed(cfg_path, journal_path):
    """Positions, realized PnL and fees rebuilt from the journal file alone."""
    s = Strategy(load_config(cfg_path), journal=Journal())
    entries = [e for e in read_journal(journal_path)]
    s.restore(entries, 0)
    return s, s.positions


def positions_of(state):
    return {(p["instrument"], p["venue"], p["market"]): (p["qty"], p["avg_price"], p["realized"],
                                                        p["fees"]) for p in state["positions"]}


def test_strategy_trades_on_the_simulator_and_obeys_the_kill_switch(small_tree, instance):
    env, cfg_path, run = small_tree
    st = wait_for(lambda: (lambda d: d if d and d["counters"]["fills"] >= 4 else None)(
        read_state(instance)), timeout=180, what="the strategy's first fills")
    assert st["mode"] == "trade" and st["_alive"]
    # stop new orders from the CLI; everything in flight settles
    out = cli("kill-switch", "on", "--instance", instance, env=env)
    assert "ON (was OFF)" in out.stdout
    from arbpipe.trading.control import Control
    ctl = Control.attach(instance)
    flip_ns = ctl.kill_changed_ns
    ctl.close()
    st = wait_for(lambda: (lambda d: d if d["kill_switch"] and d["breaker"]["tripped"]
                           and d["counters"]["in_flight"] == 0 else None)(read_state(instance)),
                  timeout=30, what="the breaker tripped by the kill switch")
    assert st["breaker"]["reason"] == "kill_switch"
    journal = str(run / "journal.jsonl")
    entries = read_journal(journal)
    orders = [e for e in entries if e["kind"] == JournalKind.ORDER]
    assert orders and all(e["ts_ns"] <= flip_ns for e in orders), \
        "an order was sent after the kill switch was on"
    # fees counted exactly once per fill, at the leg's taker fee
    cfg = load_config(cfg_path)
    legs = cfg.legs()
    fills = [e for e in entries if e["kind"] == JournalKind.FILL]
    for f in fills:
        leg = legs.leg_of(f["venue_id"], f["instrument_id"])
        assert f["fee"] == f["price"] * f["qty"] * legs.taker_fee_bps[leg] / 1e4
    st = read_state(instance)
    s, _ = replayed(cfg_path, journal)
    assert st["pnl"]["fees"] == s.fees == sum(f["fee"] for f in fills)
    assert st["pnl"]["realized"] == s.realized
    assert positions_of(st) == positions_of(s.state(0))
    # every ORDER of a pair has a FILL or MISSED (nothing left in flight)
    done = {e["order_id"] for e in entries if e["kind"] in (JournalKind.FILL, JournalKind.MISSED)}
    assert {e["order_id"] for e in orders} <= done
    # rejects are journaled with named reasons; the kill switch is one of them now or soon
    names = {RejectReason(e["reason"]).name for e in entries if e["kind"] == JournalKind.REJECT}
    assert names, "no rejects at all is implausible (cooldown / in-flight at least)"
    # the journal ring carries the same entries for the persister
    rings = {r["name"]: r for r in json.loads(cli("stat", "rings", "--json", "--instance",
                                                  instance, env=env).stdout)}
    assert rings["journal"]["published"] + rings["journal"].get("dropped", 0) >= len(entries) - 2
    out = cli("stat", "strategy", "--instance", instance, env=env).stdout
    assert "kill switch ON" in out and "TRIPPED (kill_switch)" in out


def test_killed_strategy_restores_its_positions_from_the_journal(small_tree, instance):
    env, cfg_path, run = small_tree
    st = wait_for(lambda: (lambda d: d if d and d["counters"]["fills"] >= 2 else None)(
        read_state(instance)), timeout=180, what="the strategy's first fills")
    cli("kill-switch", "on", "--instance", instance, env=env)
    st = wait_for(lambda: (lambda d: d if d["kill_switch"] and d["counters"]["in_flight"] == 0
                           else None)(read_state(instance)), timeout=30, what="orders settled")
    before = positions_of(st)
    pid = st["_pid"]
    os.kill(pid, signal.SIGKILL)
    st2 = wait_for(lambda: (lambda d: d if d and d["_pid"] != pid and d["_alive"] else None)(
        read_state(instance)), timeout=120, what="the restarted strategy's state")
    assert positions_of(st2) == before
    assert st2["breaker"]["tripped"] and st2["kill_switch"]
    log = [json.loads(x) for x in open(run / "strategy.jsonl") if x.strip()]
    restored = [json.loads(x["line"]) for x in log if '"restored"' in x["line"]]
    assert restored and restored[-1]["lost_in_flight"] == 0
    # resume: kill switch off, the breaker resets and trading continues
    cli("kill-switch", "off", "--instance", instance, env=env)
    wait_for(lambda: not read_state(instance)["breaker"]["tripped"], timeout=30,
             what="breaker reset by kill-switch off")
