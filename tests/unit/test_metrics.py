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
