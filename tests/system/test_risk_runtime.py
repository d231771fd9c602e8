"""A risk limit changed at runtime, end to end (docs/operations.md, "Risk controls"):
on a running tree that trades on paper, with a real redis-server, `arbpipe risk set KEY
VALUE` is applied by the strategy within `redis.risk_poll_ms`, the strategy logs the old
and the new value, and from then on the orders the new limit refuses are refused with
that limit's reason; `arbpipe risk unset` brings the configuration's value back.

The limit: `max_orders_per_s = 0`. The rate limits are the last check a pair goes
through, so with 0 every pair that would have been sent is refused RATE_LIMIT_SECOND
(journaled with limit 0, which tells these rejects from the ones the configured 20/s
makes), and no order at all is sent while it holds."""
import json
import os
import re

import pytest

from arbpipe.config import DEFAULT_PATH
from arbpipe.trading.journal import read_journal
from arbpipe.trading.view import read_state
from shm_layouts.journal import JournalKind, RejectReason
from tests.helpers import cli, wait_for

QUIET = ("binance-usdm", "bybit-linear", "coinbase", "kraken", "gate")
KEY, CONFIGURED = "max_orders_per_s", 20


def small_config(tmp_path, *extra):
    """The default config with three venues (binance, bybit-spot, okx spot + perp), a
    busy simulator (frequent dislocations: the strategy trades within seconds), a free
    metrics port; ``extra``: (regex, replacement) edits."""
    text = open(DEFAULT_PATH).read()
    for v in QUIET:
        text = text.replace(f"[venues.{v}]\n", f"[venues.{v}]\nenabled = false\n", 1)
    edits = [(r"(?m)^rate_hz = .*$", "rate_hz = 40.0"),
             (r"(?m)^dislocation_rate_hz = .*$", "dislocation_rate_hz = 0.3"),
             (r"(?m)^metrics_port = .*$", "metrics_port = 0"), *extra]
    for pat, rep in edits:
        text, n = re.subn(pat, rep, text, count=1)
        assert n == 1, pat
    path = tmp_path / "arbpipe.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def trading_tree(instance, tmp_path, redis_server):
    cfg = small_config(tmp_path, (r"(?m)^risk_poll_ms = .*$", "risk_poll_ms = 200.0"))
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"), ARBPIPE_INSTANCE=instance,
               ARBPIPE_REDIS_URL=redis_server.url)
    out = cli("up", "--detach", "--config", cfg, env=env, timeout=180)
    assert "running" in out.stdout, out.stdout + out.stderr
    try:
        yield env, cfg, tmp_path / "run" / instance
    finally:
        cli("down", env=env, check=False, timeout=120)


def strategy_log(run):
    """The strategy's output lines (the supervisor wraps each in {"line": ...})."""
    try:
        with open(run / "strategy.jsonl") as f:
            return [json.loads(x)["line"] for x in f if x.strip()]
    except OSError:
        return []


def risk_changes(run, key):
    out = []
    for line in strategy_log(run):
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict) and d.get("event") == "risk_change" and d.get("key") == key:
            out.append(d)
    return out


def rejects(entries, reason, limit=None):
    return [e for e in entries if e["kind"] == JournalKind.REJECT and e["reason"] == reason
            and (limit is None or e["limit"] == limit)]


def test_risk_set_is_applied_logged_and_refuses_orders_by_that_limit(trading_tree, instance):
    env, cfg, run = trading_tree
    journal = str(run / "journal.jsonl")
    st = wait_for(lambda: (lambda d: d if d and d["counters"]["fills"] >= 2 else None)(
        read_state(instance)), timeout=180, what="the strategy's first paper fills")
    assert st["mode"] == "trade" and st["limits"][KEY] == CONFIGURED
    sent_before = len([e for e in read_journal(journal) if e["kind"] == JournalKind.ORDER])
    assert sent_before >= 2
    stat0 = json.loads(cli("stat", "strategy", "--json", "--instance", instance, env=env).stdout)
    rate0 = stat0["rejects"].get("rate_limit_second", 0)

    out = cli("risk", "set", KEY, "0", "--config", cfg, "--instance", instance, env=env)
    assert KEY in out.stdout

    # applied (a generous deadline: risk_poll_ms is 200 ms; failing means "never applied")
    wait_for(lambda: read_state(instance)["limits"][KEY] == 0, timeout=60,
             what=f"the strategy applying {KEY} = 0")
    ch = wait_for(lambda: risk_changes(run, KEY), timeout=30, what="the risk_change log line")
    assert len(ch) == 1 and ch[0]["old"] == CONFIGURED and ch[0]["new"] == 0, ch
    assert any(f"risk: {KEY} {CONFIGURED} -> 0 (redis)" in x for x in strategy_log(run))
    applied_ns = int(ch[0]["ts"] * 1e9)

    # from then on every pair that gets as far as the rate limit is refused by it
    def refused_by_the_new_limit():
        es = read_journal(journal)
        got = [e for e in rejects(es, RejectReason.RATE_LIMIT_SECOND, 0.0)]
        return es if len(got) >= 3 else None
    entries = wait_for(refused_by_the_new_limit, timeout=180,
                       what="pairs refused RATE_LIMIT_SECOND with limit 0")
    after = [e for e in entries if e["ts_ns"] > applied_ns + 1_000]
    before = [e for e in entries if e["ts_ns"] < applied_ns - 1_000]
    zero = rejects(entries, RejectReason.RATE_LIMIT_SECOND, 0.0)
    assert all(e["ts_ns"] >= applied_ns - 1_000 for e in zero), \
        "a reject by the new limit before the strategy logged applying it"
    assert all(e["value"] >= 2.0 for e in zero), "a pair is (at least) two orders over 0"
    assert not [e for e in after if e["kind"] == JournalKind.ORDER], \
        f"an order was sent after {KEY} = 0 was applied"
    sent = {e["order_id"] for e in before if e["kind"] in (JournalKind.ORDER, JournalKind.UNWIND)}
    late = [e for e in after if e["kind"] == JournalKind.FILL and e["order_id"] not in sent]
    assert not late, f"fills of orders sent after the change: {late[:3]}"
    st = json.loads(cli("stat", "strategy", "--json", "--instance", instance, env=env).stdout)
    assert st["limits"][KEY] == 0
    assert st["rejects"].get("rate_limit_second", 0) >= rate0 + 3
    shown = json.loads(cli("risk", "show", "--json", "--config", cfg, "--instance", instance,
                           env=env).stdout)
    row = next(r for r in shown["rows"] if r["key"] == KEY)
    assert row["redis"] == "0" and row["strategy"] == 0 and row["config"] == CONFIGURED

    # unset: the configuration's value again, logged, and orders are sent again
    cli("risk", "unset", KEY, "--config", cfg, "--instance", instance, env=env)
    wait_for(lambda: read_state(instance)["limits"][KEY] == CONFIGURED, timeout=60,
             what=f"the strategy reverting {KEY} to the config value")
    ch = wait_for(lambda: (lambda c: c if len(c) == 2 else None)(risk_changes(run, KEY)),
                  timeout=30, what="the second risk_change log line")
    assert ch[1]["old"] == 0 and ch[1]["new"] == CONFIGURED, ch
    reverted_ns = int(ch[1]["ts"] * 1e9)
    wait_for(lambda: [e for e in read_journal(journal) if e["kind"] == JournalKind.ORDER
                      and e["ts_ns"] > reverted_ns], timeout=180,
             what="an order sent again after the unset")
