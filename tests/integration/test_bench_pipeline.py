"""Hop histograms of the detector and the `arbpipe bench pipeline` smoke run (shape and
non-zero counts only: speed figures belong to the benchmark's output, not to tests)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from arbpipe.transport import histogram as H
from arbpipe.transport import segments
from arbpipe.config import DEFAULT_PATH, load_config
from arbpipe.detect.detector import Detector
from arbpipe.detect.hops import hist_bucket_of
from arbpipe.detect.stats import read_stats
from arbpipe.transport.rings import SpscRing
from bench.workload import make_stream


def test_detector_buckets_are_the_histogram_buckets():
    vals = list(range(0, 5000)) + [(1 << k) + d for k in range(6, 62) for d in (-1, 0, 1, 7)]
    vals += list(np.random.default_rng(1).integers(0, 1 << 45, 20000))
    for v in vals:
        assert hist_bucket_of(int(v)) == H.bucket_index(int(v)), v


def test_collect_mode_records_the_detect_hop():
    cfg = load_config()
    det = Detector(cfg)
    s = make_stream(cfg, 40000, seed=3, dislocation_p=0.01)
    s["recv_ts_ns"] = time.time_ns()
    opps = det.process(s)
    actionable = int(np.isin(opps["state"], (1, 2)).sum())
    assert actionable > 0
    snap = det.hist_detect
    assert H.summary(snap)["count"] == actionable
    assert det.hist_feed[H.W_COUNT] == 0     # feed -> detector is the ring path's (pump)


def test_detector_process_publishes_and_unlinks_hop_histograms(instance, tmp_path):
    cfg = load_config()
    venues = list(cfg.enabled_venues())
    rings = {v: SpscRing.create(f"feed.{v}", 1 << 16, "MarketUpdate", policy="drop",
                                instance=instance) for v in venues}
    env = dict(os.environ, ARBPIPE_INSTANCE=instance)
    proc = subprocess.Popen([sys.executable, "-m", "procs.detector", "--config", DEFAULT_PATH,
                             "--instance", instance], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert '"ready"' in line, line + proc.stdout.read()
        assert {"feed_to_detector", "detect"} <= set(H.list_histograms(instance))
        s = make_stream(cfg, 30000, seed=4, dislocation_p=0.01)
        for k in range(0, len(s), 1000):
            part = s[k:k + 1000].copy()
            part["recv_ts_ns"] = time.time_ns()
            for v in venues:
                mine = part[part["venue_id"] == cfg.venue_id(v)]
                assert rings[v].push_batch(mine) == len(mine)
                rings[v].wake_consumer()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = read_stats(instance)
            if st and st["updates"] == len(s):
                break
            time.sleep(0.05)
        st = read_stats(instance)
        assert st["updates"] == len(s)
        feed = H.summary(H.read_histogram(instance, "feed_to_detector"))
        det = H.summary(H.read_histogram(instance, "detect"))
        assert feed["count"] == len(s)
        assert det["count"] == st["opened"] + st["updated"] > 0
        assert feed["p50_ns"] > 0 and det["max_ns"] >= det["p50_ns"] > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        for r in rings.values():
            r.unlink()
            r.close()
    assert H.list_histograms(instance) == []      # the service unlinked its histograms


def test_bench_pipeline_smoke(instance, tmp_path):
    out_dir = tmp_path / "results"
    res = subprocess.run([sys.executable, "-m", "procs.cli", "bench", "pipeline", "--rates",
                          "5k", "--duration", "1.0", "--warmup", "0.5", "--json", "--out-dir",
                          str(out_dir), "--instance", instance], capture_output=True, text=True,
                         timeout=500)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert json.load(open(out_dir / "pipeline.json")) == doc
    assert (out_dir / "pipeline.md").read_text().startswith("# arbpipe bench pipeline")
    assert (out_dir / "pipeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(doc["max_zero_drop_rate"], float)
    runs = doc["runs"]
    seen = {(r["setup"], r["transport"]) for r in runs}
    assert ("tree", "arbpipe") in seen and ("harness", "arbpipe") in seen
    for t in ("mp-queue", "faster-fifo", "pyzmq"):   # each ran, or says why not
        assert ("harness", t) in seen or any(n.startswith(t) for n in doc["notes"]), t
    four = {"p50_ns", "p99_ns", "p999_ns", "max_ns"}
    for r in runs:
        assert r["transport"] in ("arbpipe", "mp-queue", "faster-fifo", "pyzmq")
        assert r["rate"] == 5000 and isinstance(r["achieved_rate"], float)
        assert r["achieved_rate"] > 0 and r["sent"] > 0 and isinstance(r["drops"], int)
        assert four <= set(r["total"]) and r["total"]["count"] > 0, r
        assert set(r["hops"]) == {"feed_to_detector", "detect", "publish_to_strategy"}
        for h in r["hops"].values():
            assert four <= set(h) and h["count"] > 0, r
        assert r["total"]["max_ns"] >= r["total"]["p50_ns"] > 0
    assert not [s for s in segments.list_segments(instance)]


def test_bench_pipeline_repeat_reports_medians_of_each_run(instance, tmp_path):
    out_dir = tmp_path / "results"
    res = subprocess.run([sys.executable, "-m", "procs.cli", "bench", "pipeline", "--rates",
                          "2k", "--duration", "0.5", "--warmup", "0.2", "--no-tree",
                          "--transports", "arbpipe", "--repeat", "2", "--json", "--out-dir",
                          str(out_dir), "--instance", instance], capture_output=True, text=True,
                         timeout=500)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["repeat"] == 2 and [len(x) for x in doc["runs_each"]] == [1, 1]
    assert [r["repeat"] for x in doc["runs_each"] for r in x] == [0, 1]
    (row,) = doc["runs"]
    assert row["repeats"] == 2 and row["transport"] == "arbpipe" and row["rate"] == 2000
    each = [x[0]["total"]["p50_ns"] for x in doc["runs_each"]]
    lo, hi = row["spread"]["total"]["p50_ns"]
    assert (lo, hi) == (min(each), max(each)) and row["total"]["p50_ns"] == sum(each) / 2
    assert row["total"]["count"] == sum(x[0]["total"]["count"] for x in doc["runs_each"]) > 0
    assert "Each setup ran 2 times" in (out_dir / "pipeline.md").read_text()
    assert not [s for s in segments.list_segments(instance)]
