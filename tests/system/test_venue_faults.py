"""Venue faults through the simulator, on the whole tree (``bench/venue_faults.py``).

Every venue but two gets its own fault from ``[simulator.faults.<venue>]``; the scenario
waits until each one shows in `arbpipe stat feeds` as ``arbpipe/feed.py`` documents it.
Then a venue goes silent without saying so (its feed SIGSTOPped: no STATUS either) and the
detector alone must stop using its quotes once they are older than
``detector.max_quote_age_ms``: checked record by record against a recording of the feed
rings and every record of the opportunities ring; then the venue comes back.
"""
import re

import psutil
import pytest

from arbpipe.transport import segments
from arbpipe.config import DEFAULT_PATH, ConfigError, parse_config, to_sim_config
from bench import venue_faults as VF


def test_fault_config_errors_name_the_key():
    base = open(DEFAULT_PATH).read()
    cases = [("[simulator.faults.nowhere]\ndrop_every_s = 1.0\n", "simulator.faults.nowhere"),
             ("[simulator.faults.okx]\ndrop_every = 1.0\n", "simulator.faults.okx"),
             ("[simulator.faults.okx]\nreorder_p = 2.0\n", "simulator.faults.okx.reorder_p"),
             ("[simulator.faults.okx]\nstall_s = -1.0\n", "simulator.faults.okx.stall_s"),
             ("[simulator.faults.okx]\nrefuse_symbols = \"BTC-USDT\"\n",
              "simulator.faults.okx.refuse_symbols")]
    for extra, key in cases:
        with pytest.raises(ConfigError) as e:
            parse_config(base + extra)
        assert key in str(e.value), (extra, str(e.value))
    sim = to_sim_config(parse_config(VF.fault_config()))     # the scenario's config is valid
    assert sim.venues["kraken"].faults.halfopen_after_s == 3.0
    assert sim.venues["bybit-linear"].faults.refuse_connect_p == 0.3
    assert sim.venues["binance"].faults.drop_every_s == 0.0


def test_venue_faults_on_the_whole_tree(instance, tmp_path):
    r = VF.run(instance=instance, workdir=str(tmp_path), log=lambda s: None)
    for pid in r.get("pids", []):            # nothing of the tree survives `down`
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", pid
    assert not segments.list_segments(instance)
    assert "error" not in r, (r.get("error"), r.get("missing"))
    f = r["venues"]
    # each fault counted as documented (the scenario waited for VF.EXPECTED) ...
    assert "ETH-USDT" in f["coinbase"]["last_error"]
    assert f["okx"]["disconnects"] == 0, "a planned reconnect is not a lost connection"
    assert f["kraken"]["disconnects"] == 0, "half-open is counted as half-open"
    for v in ("binance", "binance-usdm"):            # ... and the controls count nothing
        c = f[v]
        assert c["reconnects"] == c["disconnects"] == c["halfopen_reconnects"] == 0, (v, c)
        assert c["rejects_total"] == 0 and c["connect_failures"] == 0, (v, c)
    assert all(c["quotes"] > 0 for c in f.values()), "a venue stopped quoting for good"
    m = r["metrics"]                             # and Prometheus sees the same
    assert m["arbpipe_venue_halfopen_reconnects_total"]["kraken"] >= 1
    assert m["arbpipe_venue_planned_reconnects_total"]["okx"] >= 1
    assert m["arbpipe_venue_disconnects_total"]["bybit-linear"] >= 2
    assert m["arbpipe_venue_halfopen_reconnects_total"]["binance"] == 0
    text = r["stat_feeds_text"]
    assert re.search(r"kraken.*\n.*half_open=\d", text), text
    assert re.search(r"bybit-linear.*\n.*lost=\d", text), text
    # the feeds' STALE / DISCONNECTED / UP statuses reached the detector (what it does with
    # them is tests/test_detector.py's business)
    assert r["detector_before_stop"]["status"] > 0
    # the silent venue: never used past max age, and the window was really checked
    s = r["silent_venue"]
    assert s["recorder_missed"] == 0 and s["binance_quotes_recorded"] > 0
    assert s["binance_opportunities_checked"] > 0
    assert s["used_older_than_max_age"] == 0
    assert s["opportunities_while_stale"] == 0
    assert s["other_opportunities_in_window"] >= 3
    assert s["last_use_after_last_quote_ms"] is None or \
        s["last_use_after_last_quote_ms"] <= r["max_quote_age_ms"]
    assert r["ok"]
