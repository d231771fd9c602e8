"""Runtime risk limits through a real redis-server: validation, hot reload, outages,
the breaker mirror, `arbpipe risk set|unset|show`, and no credentials in any output."""
import functools
import json
import os
import re
import shutil
import tempfile
import time

import msgspec
import pytest

from arbpipe.config import RISK_KEYS, load_config
from arbpipe.trading.params import RiskError, RiskSource, check_change, parse_value
from tests import helpers
from tests.redis_fixture import TestRedis, require_redis_server


wait_for = helpers.waiter(30.0, every=0.05)


@pytest.fixture
def cfg():
    c = load_config()
    return msgspec.structs.replace(c, redis=msgspec.structs.replace(c.redis, risk_poll_ms=100.0))


cli = functools.partial(helpers.cli, timeout=60, check=False)


# -- validation (no Redis) --------------------------------------------------------------

def test_values_are_checked_with_the_config_rules(cfg):
    assert parse_value("max_orders_per_s", "30") == 30
    assert isinstance(parse_value("max_orders_per_s", "30"), int)
    assert parse_value("max_order_notional", b"2500.5") == 2500.5
    bad = [("max_order_notional", "abc", "expected float"),
           ("max_orders_per_s", "2.5", "expected int"),
           ("fat_finger_bps", "nan", "finite"),
           ("min_confidence", "101", "must be <= 100"),
           ("cooldown_ms", "-1", "must be >= 0"),
           ("starting_balance", "1", "unknown risk key"),      # not runtime-changeable
           ("nonsense", "1", "unknown risk key")]
    for key, raw, why in bad:
        with pytest.raises(RiskError) as e:
            check_change(cfg, {}, key, raw)
        assert str(e.value).startswith(f"{key}: ") and why in str(e.value), str(e.value)
    # cross-key rule of the config: an order may not exceed the position limit
    with pytest.raises(RiskError, match=r"^max_order_notional: .*max_position_notional"):
        check_change(cfg, {}, "max_order_notional", "60000")
    assert check_change(cfg, {"max_position_notional": 80_000.0}, "max_order_notional",
                        "60000") == 60_000.0


def test_apply_accepts_rejects_and_reverts_with_logged_reasons(cfg):
    logs = []
    rs = RiskSource(cfg, "tunit", log=logs.append, url="")
    assert rs.take() is None
    got = rs.apply({"max_order_notional": "5000", "min_confidence": "250", "bogus": "1"})
    assert got == {"max_order_notional": 5000.0}
    assert rs.take() == {"max_order_notional": 5000.0} and rs.take() is None
    assert any("max_order_notional 10000.0 -> 5000.0" in m for m in logs), logs
    assert any(m.startswith("risk: rejected min_confidence='250'") and "<= 100" in m
               for m in logs), logs
    assert any("rejected bogus" in m for m in logs), logs
    assert rs.limits()["min_confidence"] == cfg.strategy.min_confidence
    n = len(logs)
    rs.apply({"max_order_notional": "5000", "min_confidence": "250", "bogus": "1"})
    assert len(logs) == n, "the same rejection is logged once, not at every poll"
    assert rs.apply({}) == {"max_order_notional": cfg.strategy.max_order_notional}
    assert "key removed" in logs[-1]


# -- with a real redis-server -----------------------------------------------------------

def test_change_in_redis_takes_effect_and_invalid_is_rejected(cfg, redis_server, instance):
    logs = []
    rs = RiskSource(cfg, instance, log=logs.append, url=redis_server.url).start()
    r = redis_server.client()
    key = f"arbpipe:{instance}:risk"
    try:
        r.hset(key, "max_orders_per_s", "7")
        assert wait_for(rs.take, 10, "the change") == {"max_orders_per_s": 7}
        assert any("max_orders_per_s 20 -> 7 (redis)" in m for m in logs), logs
        r.hset(key, "max_drawdown", "-5")
        wait_for(lambda: any("rejected max_drawdown='-5'" in m for m in logs), 10,
                 "the rejection")
        assert rs.take() is None
        assert rs.limits()["max_drawdown"] == cfg.strategy.max_drawdown
        assert rs.limits()["max_orders_per_s"] == 7
        r.hdel(key, "max_orders_per_s")
        assert wait_for(rs.take, 10, "the revert") == {"max_orders_per_s": 20}
    finally:
        rs.close()
        r.close()


def test_unreachable_at_start_uses_config_and_recovers(cfg, instance):
    require_redis_server()
    d = tempfile.mkdtemp(prefix="arbpipe-rt-", dir="/tmp")
    srv = TestRedis(d)                        # not started yet: nothing on its socket
    logs = []
    rs = RiskSource(cfg, instance, log=logs.append, url=srv.url).start()
    try:
        wait_for(lambda: any("unreachable" in m for m in logs), 10, "the outage note")
        time.sleep(0.5)                       # several more polls
        assert sum("unreachable" in m for m in logs) == 1, logs
        assert rs.take() is None
        assert rs.limits() == {k: getattr(cfg.strategy, k) for k in RISK_KEYS}
        srv.start()
        c = srv.client()
        c.hset(f"arbpipe:{instance}:risk", "latency_ms", "9.5")
        c.close()
        assert wait_for(rs.take, 15, "the change after recovery") == {"latency_ms": 9.5}
        assert any("reachable again" in m for m in logs), logs
        srv.stop()                            # a second outage: noted once again
        wait_for(lambda: sum("unreachable" in m for m in logs) == 2, 15, "second outage")
        assert rs.limits()["latency_ms"] == 9.5, "last good values are kept"
    finally:
        rs.close()
        srv.stop(remove_data=True)
        shutil.rmtree(d, ignore_errors=True)


def test_breaker_state_is_mirrored_and_loaded(cfg, redis_server, instance):
    rs = RiskSource(cfg, instance, log=lambda m: None, url=redis_server.url).start()
    state = {"tripped": True, "reason": "daily_loss", "since_ns": 1_700_000_000_000_000_000,
             "value": -1500.25, "limit": 1000.0}
    try:
        assert rs.load_breaker() is None
        rs.mirror_breaker(state)
        r = redis_server.client()
        wait_for(lambda: r.hgetall(f"arbpipe:{instance}:breaker"), 10, "the mirror")
        r.close()
        fresh = RiskSource(cfg, instance, log=lambda m: None, url=redis_server.url)
        got = fresh.load_breaker()
        assert got.pop("updated_ns") > 0
        assert got == state
        # a state queued just before close() is still written
        rs.mirror_breaker(dict(state, tripped=False, reason="none"))
    finally:
        rs.close()
    assert RiskSource(cfg, instance, log=print, url=redis_server.url).load_breaker()[
        "tripped"] is False
    nothing = RiskSource(cfg, instance, log=lambda m: None, url="unix:///nonexistent/x.sock")
    assert nothing.load_breaker() is None


def test_cli_risk_set_show_unset_and_exit_codes(redis_server, instance, tmp_path):
    env = dict(os.environ, ARBPIPE_REDIS_URL=redis_server.url, ARBPIPE_INSTANCE=instance,
               ARBPIPE_RUN_DIR=str(tmp_path / "run"))
    r = redis_server.client()
    key = f"arbpipe:{instance}:risk"
    out = cli("risk", "set", "max_order_notional", "5000", env=env)
    assert out.returncode == 0, out.stderr
    assert r.hget(key, "max_order_notional") == "5000.0"
    out = cli("risk", "set", "max_orders_per_min", "12.5", env=env)
    assert out.returncode == 2 and "max_orders_per_min" in out.stderr, out
    out = cli("risk", "set", "max_position_notional", "100", env=env)   # < max_order_notional
    assert out.returncode == 2 and out.stderr.split("risk ", 1)[1].startswith(
        "max_position_notional: "), out.stderr
    out = cli("risk", "set", "no_such_key", "1", env=env)
    assert out.returncode == 2 and "no_such_key" in out.stderr
    assert set(r.hkeys(key)) == {"max_order_notional"}, "nothing invalid was written"
    show = json.loads(cli("risk", "show", "--json", env=env).stdout)
    row = {x["key"]: x for x in show["rows"]}["max_order_notional"]
    assert row["redis"] == "5000.0" and row["config"] == 10_000.0
    out = cli("risk", "unset", "max_order_notional", env=env)
    assert out.returncode == 0 and not r.hexists(key, "max_order_notional")
    r.close()
    down = dict(env, ARBPIPE_REDIS_URL="unix:///nonexistent-dir/redis.sock")
    out = cli("risk", "set", "max_order_notional", "5000", env=down)
    assert out.returncode == 1 and "unreachable" in out.stderr, out
    out = cli("risk", "set", "min_confidence", "500", env=down)
    assert out.returncode == 2 and "min_confidence" in out.stderr, out


def test_credentials_never_appear_in_risk_output(cfg, redis_server_auth, instance, tmp_path):
    pw = redis_server_auth.password
    good = redis_server_auth.url
    wrong = good.replace(pw, pw[::-1])
    secret_bits = {pw, pw[::-1]}
    logs = []
    rs = RiskSource(cfg, instance, log=logs.append, url=wrong).start()
    wait_for(lambda: any("unreachable" in m for m in logs), 10, "the auth failure note")
    rs.close()
    ok = RiskSource(cfg, instance, log=logs.append, url=good).start()
    c = redis_server_auth.client()
    c.hset(f"arbpipe:{instance}:risk", "min_net_bps", "3.5")
    c.close()
    assert wait_for(ok.take, 10, "change over an authenticated connection") == {"min_net_bps": 3.5}
    ok.close()
    env = dict(os.environ, ARBPIPE_INSTANCE=instance, ARBPIPE_RUN_DIR=str(tmp_path / "run"))
    outs = [cli("risk", "set", "min_net_bps", "4", env=dict(env, ARBPIPE_REDIS_URL=good)),
            cli("risk", "show", env=dict(env, ARBPIPE_REDIS_URL=good)),
            cli("risk", "set", "min_net_bps", "4", env=dict(env, ARBPIPE_REDIS_URL=wrong))]
    assert [o.returncode for o in outs] == [0, 0, 1], outs
    text = "\n".join(logs + [o.stdout + o.stderr for o in outs])
    assert "unix://***@" in text or "redis://***@" in text, "the URL is shown, redacted"
    for s in secret_bits:
        assert s not in text, "a password leaked into logs or command output"
    assert not re.search(r"pw-[0-9a-f]{24}", text)


def test_default_config_is_valid_for_every_risk_key(cfg):
    """Every RISK_KEY round-trips its own config value through the runtime validation."""
    for k in RISK_KEYS:
        v = getattr(cfg.strategy, k)
        assert check_change(cfg, {}, k, repr(v) if isinstance(v, float) else str(v)) == v
