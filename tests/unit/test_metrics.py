"""The dashboard's Prometheus text passes the checks ``promtool check metrics`` makes on
label use: ``quantile`` only on summary samples, ``le`` only on histogram buckets, and a
summary carries its ``_sum`` and ``_count``."""
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from arbpipe.transport import histogram as H
from arbpipe.ui.metrics import render

ROWS = [{"hop": "total", "window_s": 60.0, "count": 3, "sum_ns": 6000, "p50_ns": 2000.0,
         "p99_ns": 2500.0, "p999_ns": 2500.0, "mean_ns": 2000.0, "max_ns": 2600.0,
         "total_count": 9, "total_sum_ns": 18000, "under": 0},
        {"hop": "detect", "window_s": 0.0, "count": 0, "sum_ns": 0, "p50_ns": None,
         "p99_ns": None, "p999_ns": None, "mean_ns": None, "max_ns": None,
         "total_count": 0, "total_sum_ns": 0, "under": 0}]


def state():
    return {"opps": {"counters": {"records": 5, "opened": 2}, "reader": {"lost": 0},
                     "open_count": 1, "open": [{"net_bps": 3.5}],
                     "closed_by_reason": {"spread_gone": 1}},
            "publishes": 7, "metrics": {"scrapes": 1}, "refresh_ms": 1.5,
            "started_ns": 1_700_000_000_000_000_000, "rings": [], "venues": [],
            "detector": None, "latency": ROWS, "strategy": None}


def test_quantile_and_le_only_where_the_family_type_allows_them():
    snap = H.from_values(np.array([1000, 2000, 3000], np.int64))
    fams = list(text_string_to_metric_families(render(state(), {"total": snap})))
    assert fams
    for fam in fams:
        for s in fam.samples:
            if "quantile" in s.labels:
                assert fam.type == "summary", (fam.name, fam.type, s)
            if "le" in s.labels:
                assert fam.type == "histogram" and s.name.endswith("_bucket"), (fam.name, s)


def test_last_minute_latency_is_a_summary_with_sum_and_count():
    fams = {f.name: f for f in text_string_to_metric_families(render(state(), {}))}
    f = fams["arbpipe_latency_last_minute_seconds"]
    assert f.type == "summary"
    got = {(s.name, s.labels.get("hop"), s.labels.get("quantile")): s.value for s in f.samples}
    assert got[("arbpipe_latency_last_minute_seconds", "total", "0.5")] == 2e-6
    assert got[("arbpipe_latency_last_minute_seconds", "total", "0.99")] == 2.5e-6
    assert got[("arbpipe_latency_last_minute_seconds_sum", "total", None)] == 6e-6
    assert got[("arbpipe_latency_last_minute_seconds_count", "total", None)] == 3
    assert got[("arbpipe_latency_last_minute_seconds_count", "detect", None)] == 0
    assert np.isnan(got[("arbpipe_latency_last_minute_seconds", "detect", "0.999")])
    values = {s.labels["hop"]: s.value for s in fams["arbpipe_latency_last_minute_values"].samples}
    assert values == {"total": 3, "detect": 0}


VENUE = {"venue": "okx", "status": "connected", "frames": 10, "updates": 9, "reconnects": 0,
         "disconnects": 0, "planned_reconnects": 0, "halfopen_reconnects": 0,
         "connect_failures": 0, "ring_dropped": 0, "connected": 1, "stale_symbols": 0,
         "msg_rate": 5.0, "rejects_by_reason": {}, "last_msg_age_s": 0.2,
         "clock_skew_s": 0.0125}
DETECTOR = {"alive": True, "updates": 9, "quotes": 9, "funding": 0, "status": 0,
            "evaluations": 4, "published": 1, "dropped_out": 0, "opened": 1, "updated": 0,
            "open_now": 1, "latency_mean_ns": 5000, "latency_max_ns": 9000,
            "heartbeat_age_s": 0.05, "last_update_age_s": 0.3, "walks": 3,
            "walks_top_of_book": 1, "walk_levels": 7, "filter_size": 2, "filter_stale": 0}
PERSISTER = {"alive": True, "connected": False, "state": "running", "buffer_records": 100,
             "backlog_by_stream": {"opportunities": 40, "trades": 0, "events": 1},
             "written": {"opportunities": 7, "trades": 2, "events": 3},
             "dropped": {"opportunities": 5, "trades": 0, "events": 0}, "lost": 2,
             "reconnects": 3}
PROCESSES = [{"name": "detector", "role": "detector", "state": "running", "restarts": 2,
              "uptime_s": 12.5},
             {"name": "feed.okx", "role": "feed", "state": "restarting", "restarts": 7,
              "uptime_s": 0}]


def samples(text):
    """{(sample name, sorted labels): value} and {family name: type} of an exposition."""
    vals, types = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            vals[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return vals, types


def test_health_families_carry_the_tree_state_the_alerts_read():
    st = state()
    st["venues"], st["detector"] = [VENUE], DETECTOR
    st["strategy"] = {"_alive": True, "_age_s": 0.4, "breaker": {"tripped": True,
                                                                 "reason": "drawdown"},
                      "kill_switch": False}
    st["persister"], st["processes"], st["supervisor"] = PERSISTER, PROCESSES, {"alive": True}
    st["opps"]["open_by_pair"] = [{"instrument": "BTC/USDT", "buy": "okx", "sell": "gate",
                                   "count": 2}]
    v, types = samples(render(st, {}))
    assert v[("arbpipe_venue_clock_skew_seconds", (("venue", "okx"),))] == 0.0125
    assert v[("arbpipe_detector_heartbeat_age_seconds", ())] == 0.05
    assert v[("arbpipe_detector_last_update_age_seconds", ())] == 0.3
    assert v[("arbpipe_strategy_state_age_seconds", ())] == 0.4
    assert v[("arbpipe_strategy_breaker_tripped", ())] == 1
    assert v[("arbpipe_strategy_kill_switch", ())] == 0
    assert v[("arbpipe_persister_up", ())] == 1 and v[("arbpipe_redis_up", ())] == 0
    assert v[("arbpipe_persister_backlog_records", (("stream", "opportunities"),))] == 40
    assert v[("arbpipe_persister_buffer_capacity_records", ())] == 100
    assert v[("arbpipe_persister_dropped_total", (("stream", "opportunities"),))] == 5
    assert v[("arbpipe_persister_written_total", (("stream", "events"),))] == 3
    assert v[("arbpipe_persister_lost_total", ())] == 2
    assert v[("arbpipe_persister_reconnects_total", ())] == 3
    assert v[("arbpipe_supervisor_up", ())] == 1
    feed = (("process", "feed.okx"), ("role", "feed"))
    assert v[("arbpipe_process_restarts_total", feed)] == 7
    assert v[("arbpipe_process_up", feed)] == 0
    assert v[("arbpipe_process_up", (("process", "detector"), ("role", "detector")))] == 1
    assert v[("arbpipe_process_uptime_seconds", (("process", "detector"),
                                                 ("role", "detector")))] == 12.5
    assert v[("arbpipe_dashboard_open_opportunities_by_pair", (
        ("buy_venue", "okx"), ("instrument", "BTC/USDT"), ("sell_venue", "gate")))] == 2
    assert v[("arbpipe_detector_walks_total", ())] == 3
    assert v[("arbpipe_detector_walks_top_of_book_total", ())] == 1
    assert v[("arbpipe_detector_walk_levels_total", ())] == 7
    assert v[("arbpipe_detector_filtered_total", (("reason", "size"),))] == 2
    # every sample follows its own family's HELP/TYPE (else the parser makes an "unknown" one)
    assert "unknown" not in types.values(), types
    # the parser strips _total from a counter family's name
    for fam, typ in (("arbpipe_process_restarts", "counter"), ("arbpipe_redis_up", "gauge"),
                     ("arbpipe_persister_dropped", "counter"),
                     ("arbpipe_venue_clock_skew_seconds", "gauge")):
        assert types[fam] == typ, fam


def test_health_families_are_declared_without_samples_when_their_source_is_absent():
    """No supervisor, no persister, no detector, no exchange time: every family the alerts
    read is still declared (a rule's metric name stays checkable); no sample is made up."""
    st = state()
    st["venues"] = [dict(VENUE, clock_skew_s=None)]
    text = render(st, {})
    v, types = samples(text)
    for fam in ("arbpipe_supervisor_up", "arbpipe_process_up", "arbpipe_process_restarts",
                "arbpipe_redis_up", "arbpipe_persister_up", "arbpipe_persister_backlog_records",
                "arbpipe_persister_dropped", "arbpipe_detector_heartbeat_age_seconds",
                "arbpipe_strategy_state_age_seconds",
                "arbpipe_dashboard_open_opportunities_by_pair"):
        assert fam in types, fam
        assert not [k for k in v if k[0].startswith(fam)], fam
    assert np.isnan(v[("arbpipe_venue_clock_skew_seconds", (("venue", "okx"),))])
    for line in text.splitlines():
        if line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4 and line.split(" ", 3)[3].strip(), line


def test_expected_profit_gauges_skip_rows_without_a_usd_rate():
    st = state()
    st["opps"]["open"] = [
        {"net_bps": 3.5, "profit": 12.0, "profit_usd": 12.0, "top_of_book": False},
        {"net_bps": 9.0, "profit": 30.0, "profit_usd": None, "top_of_book": True},
        {"net_bps": 1.0, "profit": 2.5, "profit_usd": 2.5, "top_of_book": True}]
    v, _ = samples(render(st, {}))
    assert v[("arbpipe_dashboard_best_profit_usd", ())] == 12.0
    assert v[("arbpipe_dashboard_open_profit_usd", ())] == 14.5
    assert v[("arbpipe_dashboard_open_top_of_book", ())] == 2
    assert v[("arbpipe_dashboard_best_net_bps", ())] == 9.0
    v, _ = samples(render(state(), {}))             # rows without the fields: no USD value
    assert np.isnan(v[("arbpipe_dashboard_best_profit_usd", ())])
    assert v[("arbpipe_dashboard_open_profit_usd", ())] == 0
