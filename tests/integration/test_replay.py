"""Record / replay of market data: file layout, recording off real rings from another
process, replay into real rings (content kept, timestamps rebased, REPLAYED set), and
reproducible detection from a file."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from arbpipe.replay import file as RF, recorder as RR, replayer as RP
from arbpipe.config import load_config
from arbpipe.transport.rings import SpscRing
from bench.workload import make_stream
from bench.recorded import detect_recording
from shm_layouts import MARKET_UPDATE, Flag
from shm_layouts import recording as R
from tests import helpers


cli = helpers.spawn_cli


def stream(n, seed=5, dislocation_p=0.01):
    return make_stream(load_config(), n, seed=seed, dislocation_p=dislocation_p)


def test_file_layout_maps_with_plain_numpy(tmp_path):
    cfg = load_config()
    recs = stream(5000)
    path = str(tmp_path / "a.arbrec")
    RF.write_recording(path, recs, RF.names_from_config(cfg, ["feed.binance"], "test"))
    # the documented way: header dtype, then a memmap at header_size
    hdr = np.fromfile(path, R.RECORDING_HEADER, count=1)[0]
    assert bytes(hdr["magic"]) == R.RECORDING_MAGIC
    assert int(hdr["layout_version"]) == R.RECORDING_VERSION
    assert int(hdr["record_size"]) == 64 and int(hdr["header_size"]) % 64 == 0
    assert int(hdr["records"]) == 5000
    assert int(hdr["first_recv_ns"]) == int(recs["recv_ts_ns"].min())
    assert int(hdr["last_recv_ns"]) == int(recs["recv_ts_ns"].max())
    mm = np.memmap(path, MARKET_UPDATE, mode="r", offset=int(hdr["header_size"]))
    assert mm.tobytes() == recs.tobytes()
    with open(path, "rb") as f:
        f.seek(R.NAMES_OFFSET)
        names = json.loads(f.read(int(hdr["names_size"])))
    assert names["venues"]["1"] == "binance" and names["instruments"]["1"] == "BTC/USDT"
    rec = RF.open_recording(path)
    assert len(rec) == 5000 and rec.venue_name(5) == "okx"
    assert rec.summary()["per_venue"]["okx"] == int((recs["venue_id"] == 5).sum())


def test_bad_files_are_refused_with_a_reason(tmp_path):
    p = tmp_path / "junk.bin"
    p.write_bytes(b"hello" * 100)
    with pytest.raises(RF.RecordingError, match="not an arbpipe recording"):
        RF.open_recording(str(p))
    good = str(tmp_path / "g.arbrec")
    RF.write_recording(good, stream(10), RF.names_from_config(load_config()))
    raw = bytearray(open(good, "rb").read())
    raw[8] = 99                                   # layout_version
    (tmp_path / "v.arbrec").write_bytes(bytes(raw))
    with pytest.raises(RF.RecordingError, match="layout version 99"):
        RF.open_recording(str(tmp_path / "v.arbrec"))
    out = subprocess.run([sys.executable, "-m", "procs.cli", "replay", str(p), "--speed",
                          "max"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not an arbpipe recording" in out.stdout
    out = subprocess.run([sys.executable, "-m", "procs.cli", "replay", good, "--speed",
                          "fast"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "speed" in out.stdout


def test_a_crashed_recording_is_still_readable(tmp_path):
    """records == 0 in the header (never closed): the count comes from the file size, and
    a trailing partial record is ignored."""
    recs = stream(100)
    path = str(tmp_path / "c.arbrec")
    w = RF.RecordingWriter(path, RF.names_from_config(load_config()))
    w.append(recs)
    w.f.write(b"\x01" * 20)        # half a record, then no close(): header says 0 records
    w.f.flush()
    rec = RF.open_recording(path)
    assert rec.header["records"] == 0 and len(rec) == 100
    assert rec.records.tobytes() == recs.tobytes()
    w.f.close()


def test_record_from_another_process_then_replay(instance, tmp_path):
    cfg = load_config()
    venues = ["binance", "okx"]
    rings = {v: SpscRing.create(f"feed.{v}", 1 << 15, "MarketUpdate", policy="drop",
                                instance=instance) for v in venues}
    path = str(tmp_path / "rec.arbrec")
    proc = None
    try:
        s = stream(80000)
        parts = {v: s[s["venue_id"] == cfg.venue_id(v)][:6000].copy() for v in venues}
        n = sum(len(p) for p in parts.values())
        proc = cli("record", "--out", path, "--instance", instance, "--count", str(n))
        line = proc.stdout.readline()
        assert line.startswith("recording"), line + proc.stdout.read()
        # the producers publish in batches while the "detector" consumes: the tap sees all
        out = np.zeros(512, MARKET_UPDATE)
        consumed = {v: [] for v in venues}
        for k in range(0, 6000, 500):
            for v in venues:
                assert rings[v].push_batch(parts[v][k:k + 500]) == 500
                while True:
                    got = rings[v].pop_batch(out)
                    if not got:
                        break
                    consumed[v].append(out[:got].copy())
        assert proc.wait(60) == 0, proc.stdout.read()
        assert "recorded 12,000 records" in proc.stdout.read()
        rec = RF.open_recording(path)
        assert len(rec) == n and rec.header["missed"] == 0
        assert rec.names["rings"] == ["feed.binance", "feed.okx"]
        for v in venues:   # each ring's records, in its order, byte for byte
            mine = np.asarray(rec.records[rec.records["venue_id"] == cfg.venue_id(v)])
            assert mine.tobytes() == parts[v].tobytes()
            assert np.concatenate(consumed[v]).tobytes() == parts[v].tobytes()

        t_before = time.time_ns()
        rp = cli("replay", path, "--speed", "max", "--instance", instance)
        assert rp.wait(60) == 0
        text = rp.stdout.read()
        assert "published 12,000 records" in text and "dropped 0" in text, text
        for v in venues:
            buf = np.zeros(8000, MARKET_UPDATE)
            got = rings[v].pop_batch(buf)
            assert got == 6000
            back, orig = buf[:got], parts[v]
            # everything but the two timestamps and the flag is unchanged, in order
            for f in ("instrument_id", "venue_id", "kind", "bid", "ask", "bid_qty",
                      "ask_qty", "seq"):
                assert np.array_equal(back[f], orig[f]), f
            assert np.array_equal(back["flags"], orig["flags"] | int(Flag.REPLAYED))
            assert (back["recv_ts_ns"] >= t_before).all()
            assert (np.diff(back["recv_ts_ns"]) >= 0).all()
            has = orig["exchange_ts_ns"] != 0
            lag_orig = orig["recv_ts_ns"] - orig["exchange_ts_ns"]
            lag_back = back["recv_ts_ns"] - back["exchange_ts_ns"]
            assert np.array_equal(lag_back[has], lag_orig[has])
            assert (back["exchange_ts_ns"][~has] == 0).all()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for r in rings.values():
            r.unlink()
            r.close()


def test_recorder_counts_what_it_could_not_read(instance, tmp_path):
    ring = SpscRing.create("feed.binance", 1024, "MarketUpdate", policy="drop",
                           instance=instance)
    rec = RR.Recorder(str(tmp_path / "m.arbrec"), instance, cfg=load_config())
    try:
        s = stream(20000)
        s = s[s["venue_id"] == 1][:1000]
        out = np.zeros(1000, MARKET_UPDATE)
        ring.push_batch(s[:500])
        assert rec.poll() == 500
        assert ring.pop_batch(out) == 500
        for _ in range(3):       # 1500 records go through while the recorder is not polling
            assert ring.push_batch(s[500:1000]) == 500
            assert ring.pop_batch(out) == 500
        got = rec.poll()         # the ring still holds the newest 1024 of them
        assert got == 1024 and rec.missed == 1500 - 1024
    finally:
        rec.close()
        ring.unlink()
        ring.close()
    r = RF.open_recording(str(tmp_path / "m.arbrec"))
    assert len(r) == 500 + got and r.header["missed"] == rec.missed


def test_replay_paces_by_rate_and_by_speed(instance, tmp_path):
    cfg = load_config()
    s = stream(4000)
    s = s[s["venue_id"] == 1][:400].copy()
    s["recv_ts_ns"] = 1_000_000_000 + np.arange(400, dtype=np.int64) * 1_000_000  # 1 ms apart
    path = str(tmp_path / "p.arbrec")
    RF.write_recording(path, s, RF.names_from_config(cfg))
    ring = SpscRing.create("feed.binance", 1024, "MarketUpdate", policy="drop",
                           instance=instance)
    try:
        for kw in ({"rate": 2000.0}, {"speed": 2.0}):   # both: 0.2 s for 400 records
            rp = RP.Replayer(path, instance, **kw)
            rp.warm_up()
            res = rp.run()
            rp.close()
            buf = np.zeros(1024, MARKET_UPDATE)
            assert ring.pop_batch(buf) == 400 and res["published"] == 400
            span = int(buf["recv_ts_ns"][399] - buf["recv_ts_ns"][0])
            # record 399 is due 0.1995 s after record 0: paced, not all at once
            assert span >= 0.19e9, (kw, span)
    finally:
        ring.unlink()
        ring.close()


def test_same_file_gives_the_same_opportunities(tmp_path):
    cfg = load_config()
    path = str(tmp_path / "d.arbrec")
    RF.write_recording(path, stream(60000, seed=11), RF.names_from_config(cfg))

    def run():
        o = detect_recording(path, cfg).copy()
        o["detect_ns"] = 0       # wall-clock publish time: the only field that may differ
        o["opened_ns"] = 0
        return o
    a, b = run(), run()
    assert len(a) > 100
    assert set(np.unique(a["state"]).tolist()) == {1, 2, 3}
    assert a.tobytes() == b.tobytes()


def test_replay_refuses_a_ring_that_has_a_live_feed_handler(instance, tmp_path):
    from arbpipe.transport import segments
    from arbpipe.feeds.stats import FeedStatsWriter
    cfg = load_config()
    path = str(tmp_path / "f.arbrec")
    s = stream(3000)
    RF.write_recording(path, s[s["venue_id"] == 1], RF.names_from_config(cfg))
    ring = SpscRing.create("feed.binance", 1024, "MarketUpdate", policy="drop",
                           instance=instance)
    feed = FeedStatsWriter.create(instance, "feed.binance.stats", "binance", 1, 1)
    try:   # a running feed handler owns feed.binance.stats: a second producer is refused
        with pytest.raises(segments.SegmentError, match="live feed handler"):
            RP.Replayer(path, instance, speed=float("inf"))
    finally:
        feed.seg.close()
        segments.unlink(instance, "feed.binance.stats")
        ring.unlink()
        ring.close()


def test_recorder_stops_when_the_pipeline_goes_away(instance, tmp_path):
    ring = SpscRing.create("feed.okx", 1024, "MarketUpdate", policy="drop", instance=instance)
    path = str(tmp_path / "gone.arbrec")
    proc = cli("record", "--out", path, "--instance", instance)
    try:
        assert proc.stdout.readline().startswith("recording")
        s = stream(2000)
        assert ring.push_batch(s[s["venue_id"] == 5][:100]) == 100
        ring.unlink()           # what `arbpipe down` does to every segment
        assert proc.wait(30) == 0
        out = proc.stdout.read()
        assert "rings removed" in out and "recorded 100 records" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
        ring.close()
    assert len(RF.open_recording(path)) == 100


def test_recording_again_into_the_same_file_appends(instance, tmp_path):
    ring = SpscRing.create("feed.gate", 1024, "MarketUpdate", policy="drop", instance=instance)
    path = str(tmp_path / "twice.arbrec")
    s = stream(20000)
    s = s[s["venue_id"] == 8][:300]
    try:
        for part in (s[:100], s[100:300]):
            proc = cli("record", "--out", path, "--instance", instance, "--count",
                       str(len(part)))
            assert proc.stdout.readline().startswith("recording")
            assert ring.push_batch(part) == len(part)
            assert proc.wait(30) == 0
            out = np.zeros(300, MARKET_UPDATE)
            ring.pop_batch(out)
    finally:
        ring.unlink()
        ring.close()
    rec = RF.open_recording(path)
    assert rec.header["records"] == 300 and rec.records.tobytes() == s.tobytes()
    assert rec.header["first_recv_ns"] == int(s["recv_ts_ns"].min())
