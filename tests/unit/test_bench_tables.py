"""The README's figures are the committed artifacts' (bench/tables.py, scripts/bench-tables)."""
import copy
import json
import os
import re

import pytest

from bench import tables

RESULTS = tables.RESULTS


def _readme():
    with open(tables.README) as f:
        return f.read()


def test_every_readme_figure_block_equals_its_artifact():
    text = _readme()
    assert sorted(tables.names(text)) == sorted(tables.SOURCES)
    assert tables.render(text) == text, "README figures differ: run scripts/bench-tables"


def test_each_artifact_is_committed_and_named_in_its_block():
    text = _readme()
    for name, (fname, _) in tables.SOURCES.items():
        assert os.path.exists(os.path.join(RESULTS, fname)), fname
        body = next(m["body"] for m in tables.BLOCK.finditer(text) if m["name"] == name)
        assert f"bench/results/{fname}" in body, name


def test_latency_cells_are_the_artifacts_medians_and_spreads(tmp_path):
    with open(os.path.join(RESULTS, "pipeline.json")) as f:
        res = json.load(f)
    out = tables.latency(res)
    for r in res["runs"]:
        if r["setup"] == "harness" and r["transport"] == "arbpipe":
            p50 = f"{r['total']['p50_ns'] / 1000:,.0f}"
            assert re.search(rf"\| {p50}( \([\d,]+–[\d,]+\))? / ", out), (p50, out)
    # a changed artifact changes the README block: the check would fail on a stale README
    changed = copy.deepcopy(res)
    changed["runs"][0]["total"]["p50_ns"] = 123_456_789.0
    assert "123,457" in tables.latency(changed) and "123,457" not in out


def test_spread_is_shown_when_runs_were_repeated():
    run = {"setup": "harness", "transport": "arbpipe", "rate": 10_000, "sustained": True,
           "repeats": 3, "total": {"p50_ns": 50_000.0, "p99_ns": 150_000.0},
           "spread": {"total": {"p50_ns": [40_000.0, 61_000.0], "p99_ns": [120_000.0,
                                                                           900_000.0]}}}
    assert tables._cell(run) == "50 (40–61) / 150 (120–900) µs"
    assert tables._cell(dict(run, sustained=False)).endswith(" †")
    assert tables._cell(dict(run, repeats=1)) == "50 / 150 µs"


def test_unknown_block_is_refused_by_name():
    with pytest.raises(ValueError, match="figures:nosuch"):
        tables.render("<!-- figures:nosuch -->\nx\n<!-- /figures -->\n")


def test_check_mode_fails_on_a_stale_readme(tmp_path, capsys):
    stale = tmp_path / "README.md"
    stale.write_text(_readme().replace("0 SPSC drops", "7 SPSC drops", 1))
    assert tables.main(["--check", "--readme", str(stale)]) == 1
    assert "soak" in capsys.readouterr().out
    assert tables.main(["--readme", str(stale)]) == 0          # rewrites it
    assert stale.read_text() == _readme()


def test_live_block_is_the_artifacts_medians_and_floor():
    with open(os.path.join(RESULTS, "live.json")) as f:
        res = json.load(f)
    out = tables.live(res)
    for v, s in res["summary"].items():
        row = next(x for x in out.splitlines() if x.startswith(f"| {v} |"))
        p50 = s["hops"]["feed_to_detector"]["p50_us"]["median"]
        assert tables._span(s["hops"]["feed_to_detector"]["p50_us"]) in row, (v, row)
        assert p50 is not None
    assert tables._span(res["floor"]["other_core"]["p50_us"]) in out
    changed = copy.deepcopy(res)
    v = next(iter(changed["summary"]))
    changed["summary"][v]["hops"]["total"]["p50_us"] = {"median": 98765.0, "min": 98765.0,
                                                        "max": 98765.0}
    assert "98.77 ms" in tables.live(changed) and "98.77 ms" not in out


def test_profiles_block_has_every_profile_and_rate():
    with open(os.path.join(RESULTS, "pipeline-profiles.json")) as f:
        res = json.load(f)
    out = tables.profiles(res)
    for p in res["profiles"]:
        assert f"{p}: total" in out
    rows = [x for x in out.splitlines() if x.startswith("| ") and x[2].isdigit()]
    assert len(rows) == len(res["rates"])


def test_footprint_block_is_the_artifacts_medians():
    with open(os.path.join(RESULTS, "footprint.json")) as f:
        res = json.load(f)
    out = tables.footprint(res)
    assert tables._span(res["total_uss_mib"], unit=" MiB", nd=1) in out
    assert tables._span(res["idle_total_pct"], unit=" %", nd=2) in out
    assert "| detector | " + tables._span(res["processes"]["detector"]["uss_mib"], unit=" MiB",
                                          nd=1) in out
    feeds = [k for k in res["processes"] if k.startswith("feed.")]
    assert f"each of the {len(feeds)} feeds" in out and "| feed." not in out
