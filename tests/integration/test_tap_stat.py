"""`arbpipe tap` and `arbpipe stat rings` from another process, on live rings."""
import json
import os
import subprocess
import sys
import time

import numpy as np

from arbpipe.ops import tap as T
from arbpipe.transport.rings import BroadcastRing, MpmcRing, SpscRing
from shm_layouts import MARKET_UPDATE, OPPORTUNITY
from shm_layouts.records import OPP_TOP_OF_BOOK


def _quotes(n, start=0):
    a = np.zeros(n, MARKET_UPDATE)
    a["kind"] = 1
    a["venue_id"] = 1
    a["instrument_id"] = 7
    a["bid"] = 100 + np.arange(start, start + n)
    a["ask"] = a["bid"] + 0.5
    a["seq"] = np.arange(start, start + n) + 1
    return a


def test_tap_sees_records_without_consuming_them(instance):
    for cls in (SpscRing, MpmcRing):
        r = cls.create("feed.x", 64, "MarketUpdate", policy="drop", instance=instance)
        r.push_batch(_quotes(10))
        seen = []
        res = T.tap("feed.x", instance=instance, count=10, as_json=True, emit=seen.append,
                    from_start=True, idle_timeout=10)
        assert res["shown"] == 10
        recs = [json.loads(x) for x in seen]
        assert [x["seq"] for x in recs] == list(range(1, 11))
        assert recs[0]["kind"] == "quote" and recs[0]["bid"] == 100.0
        # nothing was consumed: the real consumer still gets all 10
        c = cls.attach("feed.x", instance=instance)
        assert c.pop_batch(np.zeros(16, MARKET_UPDATE)) == 10
        # consumed records that are not yet overwritten can still be tapped; once the
        # producer laps them the tap skips ahead and counts what it missed
        r.push_batch(_quotes(200, 10))  # drop policy: only 64 fit
        c.pop_batch(np.zeros(64, MARKET_UPDATE))
        r.push_batch(_quotes(64, 1000))
        seen.clear()
        res = T.tap("feed.x", instance=instance, count=64, as_json=True, emit=seen.append,
                    from_start=True, idle_timeout=10)
        assert res["missed"] > 0
        assert [json.loads(x)["seq"] for x in seen] == list(range(1001, 1065))
        c.close()
        r.unlink()
        r.close()


def test_tap_cli_on_broadcast_ring(instance):
    r = BroadcastRing.create("opportunities", 1024, "Opportunity", instance=instance)
    p = subprocess.Popen([sys.executable, "-m", "procs.cli", "tap", "opportunities", "--count",
                          "5", "--json", "--instance", instance], stdout=subprocess.PIPE,
                         text=True)
    o = np.zeros(1, OPPORTUNITY)
    o["state"] = 1
    o["net_bps"] = 12.5
    o["exec_qty"], o["vwap_buy"], o["vwap_sell"] = 0.5, 100.25, 100.5
    o["profit"], o["profit_usd"] = 0.0625, np.nan       # no USD rate: NaN in the record
    o["buy_levels"], o["sell_levels"], o["flags"] = 2, 3, OPP_TOP_OF_BOOK
    lines = []
    import time
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        r.push_batch(o)  # keeps publishing until the tap has printed 5
        time.sleep(0.01)
    out = p.communicate(timeout=30)[0]
    strict = {"NaN": None, "Infinity": None, "-Infinity": None}
    lines = [json.loads(x, parse_constant=lambda c: strict[c]) for x in out.splitlines()]
    assert "NaN" not in out, "tap --json must write strict JSON (NaN as null)"
    assert len(lines) == 5 and all(x["state"] == "open" and x["net_bps"] == 12.5 for x in lines)
    x = lines[0]
    assert x["profit_usd"] is None and x["profit"] == 0.0625
    assert (x["vwap_buy"], x["vwap_sell"], x["notional"]) == (100.25, 100.5, 50.125)
    assert (x["buy_levels"], x["sell_levels"], x["top_of_book"]) == (2, 3, True)
    for k in ("top_gross_bps", "carry_bps", "exec_qty", "gross_bps", "opened_ns"):
        assert k in x, k
    line = T.fmt(T.decode(o[0], "Opportunity"), "Opportunity")
    assert "qty 0.5 (50) levels 2/3 top-of-book profit 0.06 usd -" in line, line
    # the tap took no reader slot and the writer never noticed it
    assert r.stats()["readers"] == []
    r.unlink()
    r.close()


def test_stat_rings_json_from_another_process(instance):
    r = SpscRing.create("feed.binance", 128, "MarketUpdate", policy="drop", instance=instance)
    c = SpscRing.attach("feed.binance", instance=instance)
    c.join("detector")
    r.push_batch(_quotes(100))
    r.push_batch(_quotes(100))  # 72 dropped
    c.pop_batch(np.zeros(50, MARKET_UPDATE))
    out = subprocess.run([sys.executable, "-m", "procs.cli", "stat", "rings", "--json",
                          "--instance", instance, "--interval", "0.1"],
                         capture_output=True, text=True, check=True).stdout
    (row,) = json.loads(out)
    assert row["name"] == "feed.binance" and row["kind"] == "spsc"
    assert row["record"] == "MarketUpdate" and row["capacity"] == 128
    assert row["published"] == 128 and row["dropped"] == 72
    (rd,) = row["readers"]
    assert rd["name"] == "detector" and rd["position"] == 50 and rd["lag"] == 78
    text = subprocess.run([sys.executable, "-m", "procs.cli", "stat", "rings", "--instance",
                           instance], capture_output=True, text=True, check=True).stdout
    assert "feed.binance" in text and "detector" in text
    c.close()
    r.unlink()
    r.close()


STAT_CFG = """
instruments = ["BTC/USDT"]
[venues.binance]
taker_fee_bps = 10.0
maker_fee_bps = 10.0
depth = 0
[venues.okx]
taker_fee_bps = 10.0
maker_fee_bps = 8.0
[venues.okx.perp]
taker_fee_bps = 5.0
maker_fee_bps = 2.0
"""


def test_stat_detector_shows_walks_and_the_top_of_book_legs(instance, tmp_path):
    """`arbpipe stat detector`: the sizing counters, and the legs of a venue configured with
    depth = 0 named as sized on the top level (the slippage-depth model)."""
    from arbpipe.detect.stats import DetectorStats
    from shm_layouts.detector_stats import C_NLEGS, C_WALK_LEVELS, C_WALKS, C_WALKS_TOB, F_SIZE
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(STAT_CFG)
    st = DetectorStats.create(instance)
    try:
        st.counters[C_WALKS], st.counters[C_WALKS_TOB] = 8, 3
        st.counters[C_WALK_LEVELS], st.counters[F_SIZE] = 20, 2
        st.counters[C_NLEGS] = 3
        st.leg_status[:3] = 1
        run = [sys.executable, "-m", "procs.cli", "stat", "detector", "--instance", instance]
        text = subprocess.run(run + ["--config", str(cfg)], capture_output=True, text=True,
                              check=True).stdout
        assert "sizing: walks=8  top_of_book=3  levels=20" in text, text
        assert "size=2" in text.split("filters:")[1].splitlines()[0]
        assert "legs: binance=UP  okx=UP  okx-perp=UP" in text, text
        tob = [x for x in text.splitlines() if "top-of-book rule" in x]
        assert len(tob) == 1 and tob[0].endswith("slippage-depth model): binance"), text
        d = json.loads(subprocess.run(run + ["--config", str(cfg), "--json"],
                                      capture_output=True, text=True, check=True).stdout)
        assert d["top_of_book_legs"] == ["binance"] and d["walks_top_of_book"] == 3
        # without a config (and no running detector to take it from): counters only
        text = subprocess.run(run, capture_output=True, text=True, check=True).stdout
        assert "sizing: walks=8" in text and "top-of-book rule" not in text
        # the config of the running detector: its --config, relative to its cwd (/proc)
        from arbpipe.ops.cli import _detector_config
        fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                 "procs.detector", "--config", cfg.name], cwd=tmp_path)
        try:
            for _ in range(500):                      # until the child has exec'd
                if b"procs.detector" in open(f"/proc/{fake.pid}/cmdline", "rb").read():
                    break
                time.sleep(0.01)
            got = _detector_config(None, {"alive": True, "pid": fake.pid})
            assert got is not None and got.venues["binance"].depth == 0
            assert _detector_config(None, {"alive": False, "pid": fake.pid}) is None
        finally:
            fake.kill()
            fake.wait(10)
        assert _detector_config(None, {"alive": True, "pid": os.getpid()}) is None
        cfg.write_text(STAT_CFG.replace("depth = 0", "depth = 5"))
        text = subprocess.run(run + ["--config", str(cfg)], capture_output=True, text=True,
                              check=True).stdout
        assert "every leg sized on its L2 book (no venue with depth = 0)" in text, text
        cfg.write_text(STAT_CFG.replace("maker_fee_bps = 10.0\n", ""))
        bad = subprocess.run(run + ["--config", str(cfg)], capture_output=True, text=True)
        assert bad.returncode == 2 and "venues.binance.maker_fee_bps" in bad.stderr
    finally:
        st.close()
