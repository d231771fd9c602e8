"""deploy/grafana/arbpipe.json is a Grafana dashboard: valid JSON, a Prometheus data source
variable that every panel and every query uses, and the panels docs/operations.md
("Alerts") promises. Whether each query parses as PromQL: tests/integration/
test_deploy_prometheus.py; whether each metric exists: tests/system/
test_deploy_metric_names.py."""
import json

from tests import deploy

DS = {"type": "prometheus", "uid": "${datasource}"}


def test_board_is_json_with_a_prometheus_datasource_variable():
    with open(deploy.BOARD) as f:
        b = json.loads(f.read())
    assert 36 <= b["schemaVersion"] <= 41 and b["title"] and b["uid"]
    var = {v["name"]: v for v in b["templating"]["list"]}
    assert var["datasource"]["type"] == "datasource"
    assert var["datasource"]["query"] == "prometheus"
    for v in var.values():                     # the other variables query the same source
        if v["type"] == "query":
            assert v["datasource"] == DS, v["name"]


def test_every_panel_and_query_uses_the_datasource_variable():
    b = deploy.board()
    ids, width = set(), 24
    targets = deploy.board_targets(b)
    assert len(targets) >= 20
    for p in b["panels"]:
        assert p["id"] not in ids, p["id"]
        ids.add(p["id"])
        g = p["gridPos"]
        assert g["x"] + g["w"] <= width and g["h"] > 0, p["title"]
        if p["type"] == "row":
            assert not p.get("targets"), p["title"]
            continue
        assert p["datasource"] == DS, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
    for p, t in targets:
        assert t["datasource"] == DS, (p["title"], t)
        assert deploy.metric_names(t["expr"]), (p["title"], t["expr"])
        assert '{instance=~"$instance"}' in t["expr"], (p["title"], t["expr"])


def test_board_shows_what_operators_need():
    exprs = [t["expr"] for _, t in deploy.board_targets()]
    names = set().union(*map(deploy.metric_names, exprs))
    assert any("histogram_quantile(" in e and "arbpipe_latency_seconds_bucket" in e and
               "by (hop, le)" in e for e in exprs)
    for n in ("arbpipe_venue_updates_total", "arbpipe_venue_last_message_age_seconds",
              "arbpipe_ring_fill_ratio", "arbpipe_ring_dropped_total",
              "arbpipe_ring_reader_lag_records", "arbpipe_dashboard_open_opportunities_by_pair",
              "arbpipe_strategy_realized_pnl", "arbpipe_strategy_unrealized_pnl",
              "arbpipe_strategy_fees", "arbpipe_strategy_net_pnl",
              "arbpipe_strategy_rejects_by_reason_total", "arbpipe_detector_latency_mean_seconds"):
        assert n in names, n
