"""``arbpipe bench pipeline --repeat N`` folds N runs into medians with their spread."""
from bench.pipeline_repeat import combine
from bench.pipeline_report import render
from bench.pipeline_runs import HOPS


def _run(transport, rate, p50, p99, drops=0, sustained=True, achieved=None):
    q = {"p50_ns": p50, "p99_ns": p99, "p999_ns": p99 * 2, "max_ns": p99 * 3, "count": 10}
    return {"setup": "harness", "transport": transport, "rate": rate,
            "achieved_rate": achieved or float(rate), "sent": rate, "drops": drops,
            "drops_detail": {"input_full": drops, "output_full": 0, "reader_lost": 0,
                             "other": 0},
            "generator_behind": 0, "backlog_at_end": {"detector": 0, "reader": 0},
            "total": dict(q), "hops": {h: dict(q) for h in HOPS},
            "cpu_pct": {"gen": 10.0, "det": 20.0, "reader": p50 / 1000},
            "total_buckets": [[p99, 1]], "detector_sustained": sustained,
            "sustained": sustained}


def test_medians_spread_worst_drops_and_all_or_nothing_sustained():
    each = [[_run("arbpipe", 1000, 50_000, 900_000), _run("pyzmq", 1000, 200_000, 400_000)],
            [_run("arbpipe", 1000, 40_000, 100_000, drops=7, sustained=False),
             _run("pyzmq", 1000, 250_000, 450_000)],
            [_run("arbpipe", 1000, 60_000, 120_000), _run("pyzmq", 1000, 210_000, 500_000)]]
    rows = combine(each)
    assert [(r["transport"], r["rate"]) for r in rows] == [("arbpipe", 1000), ("pyzmq", 1000)]
    a, z = rows
    assert a["total"]["p50_ns"] == 50_000 and a["total"]["p99_ns"] == 120_000
    assert a["spread"]["total"]["p50_ns"] == [40_000, 60_000]
    assert a["spread"]["total"]["p99_ns"] == [100_000, 900_000]
    assert a["hops"]["detect"]["p99_ns"] == 120_000
    assert a["spread"]["hops"]["detect"]["p99_ns"] == [100_000, 900_000]
    assert a["total"]["count"] == 30 and a["repeats"] == 3
    assert a["drops"] == 7 and a["spread"]["drops"] == [0, 7]
    assert a["sustained_in"] == 2 and a["sustained"] is False
    assert a["total_buckets"] == [[120_000, 1]]       # the median-p99 repeat's spectrum
    assert z["sustained"] is True and z["total"]["p99_ns"] == 450_000
    for runs in each:                                 # the inputs are left as they were
        assert all("spread" not in r for r in runs)


def test_one_repeat_is_the_run_itself():
    r = _run("arbpipe", 1000, 50_000, 90_000)
    (row,) = combine([[r]])
    assert row["total"]["p50_ns"] == 50_000 and row["spread"]["total"]["p50_ns"] == [50_000] * 2


def test_render_shows_the_spread():
    rows = combine([[_run("arbpipe", 10_000, p, 2 * p)] for p in (40_000, 50_000, 61_000)])
    res = {"host": {"time": "t", "cpu": "c", "cores": 2, "python": "3.11"},
           "pinning": {"note": "n"}, "workload": {"updates": 1, "venues": 8, "legs": 9,
                                                  "instruments": 10, "opportunity_share": 0.01},
           "warmup_s": 0.5, "duration_s": 1, "generator_tick_us": 200, "nice": 0, "repeat": 3,
           "channel_capacity": 65536, "rates": [10_000], "runs": rows, "search": [],
           "max_zero_drop_rate_by": {"arbpipe": 10_000}, "targets": [], "notes": ["n"]}
    md = render(res)
    assert "Each setup ran 3 times" in md
    assert "| 50.0 µs (40.0 µs–61.0 µs) | 0.10 ms (80.0 µs–0.12 ms) |" in md
