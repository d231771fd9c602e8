"""deploy/prometheus with the real promtool: the rules load (check rules), fire and stay quiet
as their unit tests say (test rules: every alert fires in one case and stays quiet in
another), the scrape config loads and points at the configured port (check config), the
Grafana board's queries parse, the exporter's text passes check metrics, and every alert is
labelled, annotated and has a runbook section in docs/operations.md."""
import re
import subprocess
import tomllib

import numpy as np
import yaml

from arbpipe.config import DEFAULT_PATH
from arbpipe.transport import histogram as H
from arbpipe.ui.metrics import render
from tests import deploy
from tests.unit.test_metrics import DETECTOR, PERSISTER, PROCESSES, VENUE, state


def promtool(*args, stdin=None):
    r = subprocess.run([deploy.require_promtool(), *args], input=stdin, text=True,
                       capture_output=True, timeout=120, cwd=deploy.ROOT)
    assert r.returncode == 0, f"promtool {' '.join(args)} exited {r.returncode}:\n" \
                              f"{r.stdout}{r.stderr}"
    return r.stdout + r.stderr


def test_rules_pass_promtool_check():
    out = promtool("check", "rules", deploy.RULES)
    assert f"SUCCESS: {len(deploy.alert_rules())} rules found" in out, out


def test_rule_unit_tests_pass_and_cover_every_alert_both_ways():
    assert deploy.RULE_TESTS
    out = promtool("test", "rules", *deploy.RULE_TESTS)
    assert out.count("SUCCESS") == len(deploy.RULE_TESTS) and "FAILED" not in out, out
    fires, quiet = set(), set()
    for path in deploy.RULE_TESTS:
        with open(path) as f:
            doc = yaml.safe_load(f)
        assert doc["rule_files"] == ["../arbpipe-rules.yml"], path
        for case in doc["tests"]:
            for t in case.get("alert_rule_test", []):
                (fires if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = {r["alert"] for r in deploy.alert_rules()}
    assert fires == names, f"no firing case for {names - fires}"
    assert quiet == names, f"no quiet case for {names - quiet}"


def test_scrape_config_passes_promtool_and_targets_the_configured_port():
    out = promtool("check", "config", deploy.PROM_CONFIG)
    assert "SUCCESS: 1 rule files found" in out, out
    with open(DEFAULT_PATH, "rb") as f:
        dash = tomllib.load(f)["dashboard"]
    with open(deploy.PROM_CONFIG) as f:
        cfg = yaml.safe_load(f)
    assert cfg["rule_files"] == ["arbpipe-rules.yml"]
    (job,) = cfg["scrape_configs"]
    assert job["job_name"] == "arbpipe" and job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [
        f"{dash['metrics_host']}:{dash['metrics_port']}"]


def test_every_alert_has_severity_annotations_and_a_runbook_section():
    anchors = deploy.anchors()
    for r in deploy.alert_rules():
        name = r["alert"]
        assert re.fullmatch(r"Arbpipe[A-Z][A-Za-z]+", name), name
        assert r["labels"]["severity"] in ("critical", "warning"), name
        a = r["annotations"]
        assert a["summary"].strip() and a["description"].strip(), name
        assert a["runbook_url"] == f"docs/operations.md#alert-{name.lower()}", name
        assert f"alert-{name.lower()}" in anchors, f"docs/operations.md has no section {name}"


def test_grafana_queries_parse_as_promql(tmp_path):
    """Each query of the board, with Grafana's variables given values, as a recording rule:
    promtool parses every expression."""
    rules = [{"record": f"arbpipe_board:query{i}",
              "expr": t["expr"].replace("$__rate_interval", "1m").replace("$instance", ".*")}
             for i, (_, t) in enumerate(deploy.board_targets())]
    path = tmp_path / "board-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "board", "rules": rules}]}))
    out = promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in out, out


def test_exporter_text_passes_promtool_check_metrics():
    st = state()
    st["venues"], st["detector"] = [VENUE], dict(DETECTOR, closed_spread_gone=1,
                                                 filter_stale=2)
    st["rings"] = [{"name": "feed.okx", "kind": "spsc", "published": 5, "dropped": 1,
                    "full_events": 1, "capacity": 8, "fill": 2, "fill_pct": 25.0,
                    "rate": 1.0, "readers": [{"name": "detector", "lag": 2, "received": 3,
                                              "lost": 0, "laps": 0}]}]
    st["strategy"] = {"_alive": True, "_age_s": 0.2, "kill_switch": False,
                      "breaker": {"tripped": False, "reason": "none"},
                      "pnl": {"realized": 1.5, "net": 1.0, "fees": 0.5},
                      "counters": {"orders": 2}, "rejects": {"max_order_notional": 1}}
    st["persister"], st["processes"], st["supervisor"] = PERSISTER, PROCESSES, {"alive": True}
    st["opps"]["open_by_pair"] = [{"instrument": "BTC/USDT", "buy": "okx", "sell": "gate",
                                   "count": 1}]
    snap = H.from_values(np.array([1000, 2000, 3000], np.int64))
    promtool("check", "metrics", stdin=render(st, {"total": snap}))


def test_metric_names_are_read_from_promql_robustly():
    expr = ('histogram_quantile(0.99, sum by (hop, le) (rate(arbpipe_latency_seconds_bucket'
            '{ring="arbpipe_not_a_metric", x=~\'arbpipe_nor_this\'}[5m]))) / '
            'my_arbpipe_other + arbpipe_venue_up and on() arbpipe:recorded')
    assert deploy.metric_names(expr) == {"arbpipe_latency_seconds_bucket", "arbpipe_venue_up"}
    fams = {"arbpipe_latency_seconds": "histogram", "arbpipe_q": "summary",
            "arbpipe_c_total": "counter", "arbpipe_g_count": "gauge"}
    assert deploy.missing_names(
        {"arbpipe_latency_seconds_bucket", "arbpipe_latency_seconds_count", "arbpipe_q_sum",
         "arbpipe_q_bucket", "arbpipe_c_total_count", "arbpipe_g_count", "arbpipe_gone"},
        fams) == {"arbpipe_q_bucket", "arbpipe_c_total_count", "arbpipe_gone"}
