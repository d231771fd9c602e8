"""`arbpipe tap` and `arbpipe stat rings` from another process, on live rings."""
import json
import subprocess
import sys

import numpy as np

from arbpipe.ops import tap as T
from arbpipe.transport.rings import BroadcastRing, MpmcRing, SpscRing
from shm_layouts import MARKET_UPDATE, OPPORTUNITY


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
    lines = []
    import time
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        r.push_batch(o)  # keeps publishing until the tap has printed 5
        time.sleep(0.01)
    out = p.communicate(timeout=30)[0]
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 5 and all(x["state"] == "open" and x["net_bps"] == 12.5 for x in lines)
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
