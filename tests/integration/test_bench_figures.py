"""Smoke runs of `arbpipe bench idle`, `arbpipe bench feeds --only venues` and `--depth` (shape and
positive figures only: the figures themselves belong to the benchmarks' output, not to tests)."""
import json

from bench.fuzz import VENUES
from tests.helpers import cli


def test_bench_idle_short_run(instance):
    r = cli("bench", "idle", "--json", "--idle-seconds", "0.3", "--repeats", "2", "--samples",
            "4", "--gap", "0.1", "--instance", instance, timeout=600)
    res = json.loads(r.stdout)
    assert res["instance"] == instance
    d, p = res["detector"], res["peer"]
    for proc in (d, p):
        assert len(proc["idle_cpu_pct_runs"]) == 2 and proc["idle_cpu_pct"] >= 0
        w = proc["wake"]
        assert w["samples"] == 4 and w["max_us"] >= w["p90_us"] >= w["p50_us"] > 0
    assert d["wake"]["missed"] == 0 and 0 <= d["wake"]["armed"] <= 4
    assert d["kernel_calls_per_s"] > 0 and d["idle_waits_per_s"] > 0
    assert d["opened"] >= 2 and d["closed"] >= 2          # each pair opens, then closes
    assert res["wake_p50_ratio_detector_vs_peer"] > 0
    assert "bare doorbell consumer" in cli("bench", "idle", "--idle-seconds", "0.2", "--repeats",
                                           "1", "--samples", "1", "--gap", "0.1", "--instance",
                                           instance, timeout=600).stdout


def test_bench_feeds_every_venue_short_run():
    r = cli("bench", "feeds", "--json", "--only", "venues", "--venue-frames", "500",
            "--repeats", "2", timeout=600)
    res = json.loads(r.stdout)
    assert set(res) == {"host", "venues"}
    assert [v["venue"] for v in res["venues"]] == list(VENUES)
    for v in res["venues"]:
        assert v["frames"] == 500 and v["repeats"] == 2
        assert v["us_per_frame_median"] >= v["us_per_frame_best"] > 0
        assert v["json_loads_us_per_frame_median"] > 0 and v["ratio_vs_json_loads"] > 0
        assert v["records_per_frame"] > 0 and v["ring_dropped"] == 0
    text = cli("bench", "feeds", "--only", "venues", "--venue-frames", "100", "--repeats",
               "1").stdout
    assert all(f"| {v} |" in text for v in VENUES)
    assert cli("bench", "feeds", "--only", "nope", check=False).returncode == 2


def test_bench_feeds_depth_reports_every_book_venue():
    r = cli("bench", "feeds", "--depth", "5", "--depth-frames", "400", "--json", timeout=600)
    res = json.loads(r.stdout)
    assert res["depth"] == 5
    venues = {v["venue"]: v for v in res["venues"]}
    assert set(venues) == {"binance", "binance-usdm", "bybit-spot", "bybit-linear", "okx",
                           "coinbase", "kraken", "gate"}
    for v in venues.values():
        assert v["timed"] > 0 and v["us_median"] > 0 and v["messages_per_s"] > 0, v
