"""Idle strategies and the CPU profiles (issue 18): the default profile spins nowhere;
the low-latency one spins only the hot roles, and a spinning role that would share a core
with a cold one is named (and made to sleep)."""
import re

import pytest

from arbpipe.config import DEFAULT_PATH, ConfigError, cpu_plan, cpu_profile, cpu_realtime, \
    parse_config
from arbpipe.ops.supervisor import ProcessSpec
from arbpipe.ops.supervisor import cpu_plan as supervisor_cpu_plan
from arbpipe.transport import idle as IDLE

ROLES = {"detector": "detector", "strategy": "strategy", "dashboard": "dashboard",
         "feed.binance": "feed", "simulator": "simulator"}


def test_default_profile_sleeps_everywhere():
    chosen, problems = IDLE.plan_idle("default", {n: [0] for n in ROLES}, ROLES)
    assert set(chosen.values()) == {"sleep"} and not problems


def test_low_latency_spins_hot_roles_on_cores_of_their_own_or_yields_on_a_shared_one():
    own = {"detector": [2], "strategy": [1], "dashboard": [0], "feed.binance": [0],
           "simulator": [0]}
    chosen, problems = IDLE.plan_idle("low-latency", own, ROLES)
    assert chosen["detector"] == chosen["strategy"] == "busy-spin" and not problems
    assert chosen["dashboard"] == chosen["feed.binance"] == "sleep"
    shared = dict(own, strategy=[2])
    chosen, problems = IDLE.plan_idle("low-latency", shared, ROLES)
    assert chosen["detector"] == chosen["strategy"] == "yield" and not problems


def test_low_latency_names_a_spinning_role_that_shares_a_core_with_a_cold_one():
    cpus = {"detector": [1], "strategy": [0], "dashboard": [0], "feed.binance": [0],
            "simulator": [0]}
    _, problems = IDLE.plan_idle("low-latency", cpus, ROLES)
    assert len(problems) == 1 and problems[0].startswith("strategy ")
    assert "dashboard" in problems[0] and "feed.binance" in problems[0]


def _specs():
    return [ProcessSpec(n, r, ["true"], 0) for n, r in ROLES.items()]


def test_supervisor_plan_keeps_the_hot_path_together_and_makes_conflicts_sleep():
    specs = _specs()
    plan = supervisor_cpu_plan(specs, {}, "default")
    assert plan["detector"] == plan["strategy"]
    if len(set(map(tuple, plan.values()))) > 1:     # 2+ cores: the rest stays off it
        assert all(set(plan["detector"]).isdisjoint(c) for n, c in plan.items()
                   if n not in ("detector", "strategy"))
    assert {s.env[IDLE.IDLE_ENV] for s in specs} == {"sleep"}
    notes = []
    specs = _specs()
    plan = supervisor_cpu_plan(specs, {"feed": plan["detector"]}, "low-latency", notes)
    assert any(n.startswith("warning: detector ") and "feed.binance" in n for n in notes), notes
    assert {s.env[IDLE.IDLE_ENV] for s in specs if s.role == "detector"} == {"sleep"}


def test_idle_strategies_return_when_ready_and_time_out_when_not():
    for cls in (IDLE.SleepingIdle, IDLE.BackoffIdle, IDLE.YieldingIdle, IDLE.BusySpinIdle):
        s = cls()
        assert s.wait(lambda spins: True, lambda t: False, 1.0) is True
        assert s.wait(lambda spins: False, lambda t: False, 0.01) is False
        assert IDLE.STRATEGIES[cls.NAME] is cls


def test_cpu_profile_in_the_config():
    base = open(DEFAULT_PATH).read()
    assert cpu_profile(parse_config(base)) == "default"
    base = re.sub(r'(?m)^profile = "default".*$', "", base)
    cfg = parse_config(base.replace("[cpu]", '[cpu]\nprofile = "low-latency"', 1))
    assert cpu_profile(cfg) == "low-latency" and "profile" not in cpu_plan(cfg)
    with pytest.raises(ConfigError, match=r"^cpu\.profile: "):
        parse_config(base.replace("[cpu]", '[cpu]\nprofile = "fast"', 1))
    with pytest.raises(ConfigError, match=r"^cpu\.detector: "):
        parse_config(base.replace('detector = "auto"', 'detector = "all"', 1))


def test_realtime_priority_goes_to_the_hot_roles_that_sleep_only():
    specs = _specs()
    supervisor_cpu_plan(specs, {}, "default", [], realtime=7)
    assert {s.name: s.rt_priority for s in specs if s.rt_priority} == {"detector": 7,
                                                                      "strategy": 7}
    notes = []
    specs = _specs()
    supervisor_cpu_plan(specs, {}, "low-latency", notes, realtime=7)
    assert not any(s.rt_priority for s in specs)     # they spin or yield: SCHED_FIFO would
    assert sum("not made real-time" in n for n in notes) == 2, notes   # starve their core
    specs = _specs()
    supervisor_cpu_plan(specs, {}, "default")
    assert not any(s.rt_priority for s in specs)


def test_realtime_priority_in_the_config():
    base = open(DEFAULT_PATH).read()
    assert cpu_realtime(parse_config(base)) == 0
    base = re.sub(r"(?m)^realtime_priority = .*$", "", base)
    cfg = parse_config(base.replace("[cpu]", "[cpu]\nrealtime_priority = 20", 1))
    assert cpu_realtime(cfg) == 20 and "realtime_priority" not in cpu_plan(cfg)
    for bad in ("100", "-1", '"high"'):
        with pytest.raises(ConfigError, match=r"^cpu\.realtime_priority: "):
            parse_config(base.replace("[cpu]", f"[cpu]\nrealtime_priority = {bad}", 1))
