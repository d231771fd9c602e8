"""The dashboard: state model, `arbpipe attach dashboard` (--once and a real terminal via
tmux), Prometheus metrics. Real rings, real processes, a real simulated tree."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from arbpipe.config import config_from_dict
from arbpipe.ui.blob import STATE_BLOB
from arbpipe.ui.book import OpportunityBook
from arbpipe.ui.dashboard import Dashboard
from arbpipe.ui.terminal import ViewState, parse_keys
from arbpipe.ui.view import open_rows
from arbpipe.transport.histogram import Histogram
from arbpipe.ui.metrics import render as render_metrics
from arbpipe.transport.rings import BroadcastRing
from arbpipe.transport.stateblob import StateBlob, read_blob
from shm_layouts import OPPORTUNITY, CloseReason, OppState
from shm_layouts.records import OPP_SELL_PERP, OPP_TOP_OF_BOOK
from tests import helpers
from tests.helpers import cli

T0 = 1_700_000_000_000_000_000          # ns
RUN1, RUN2 = 1_700_000_000 << 32, 1_700_000_100 << 32
BIN, BYB, OKX = 1, 3, 5
BTC, ETH = 1, 2

CFG = {
    "instruments": ["BTC/USDT", "ETH/USDT"],
    "venues": {"binance": {"taker_fee_bps": 10.0, "maker_fee_bps": 10.0},
               "bybit-spot": {"taker_fee_bps": 10.0, "maker_fee_bps": 10.0},
               "okx": {"taker_fee_bps": 10.0, "maker_fee_bps": 8.0,
                       "perp": {"taker_fee_bps": 5.0, "maker_fee_bps": 2.0}}},
    "dashboard": {"metrics_port": 0, "closed_keep": 4},
}
CFG_TOML = """
instruments = ["BTC/USDT", "ETH/USDT"]
[venues.binance]
taker_fee_bps = 10.0
maker_fee_bps = 10.0
[venues.bybit-spot]
taker_fee_bps = 10.0
maker_fee_bps = 10.0
[venues.okx]
taker_fee_bps = 10.0
maker_fee_bps = 8.0
[venues.okx.perp]
taker_fee_bps = 5.0
maker_fee_bps = 2.0
[dashboard]
metrics_port = 0
closed_keep = 4
"""
# the tree used end to end: 3 venues, 2 instruments, frequent dislocations
TREE_TOML = """
instruments = ["BTC/USDT", "ETH/USDT"]
[venues.binance]
taker_fee_bps = 10.0
maker_fee_bps = 10.0
[venues.bybit-spot]
taker_fee_bps = 10.0
maker_fee_bps = 10.0
[venues.okx]
taker_fee_bps = 10.0
maker_fee_bps = 8.0
[detector]
max_quote_age_ms = 3000.0
[simulator]
rate_hz = 20.0
dislocation_rate_hz = 0.3
dislocation_bps = 40.0
dislocation_ms = 1500.0
[dashboard]
metrics_port = 0
"""


def opp(state, oid, inst, buy, sell, ask, bid, net, detect_ns, opened_ns, reason=0, flags=0,
        gross=None, qty=0.5, conf=71.0, fund=0.0, vwap_buy=None, usd=None, levels=(1, 1)):
    """An Opportunity record; by default sized on the top level (VWAPs = ask / bid), profit
    = net x qty x mid, in USD too (``usd``: another USD value, NaN for none)."""
    r = np.zeros(1, OPPORTUNITY)
    r["instrument_id"], r["buy_venue"], r["sell_venue"] = inst, buy, sell
    r["state"], r["close_reason"], r["flags"] = int(state), int(reason), flags
    r["buy_ask"], r["sell_bid"], r["exec_qty"], r["confidence"] = ask, bid, qty, conf
    r["gross_bps"] = gross if gross is not None else (bid - ask) / ((bid + ask) / 2) * 1e4
    r["top_gross_bps"] = (bid - ask) / ((bid + ask) / 2) * 1e4
    r["net_bps"], r["funding_delta_bps"] = net, fund
    r["vwap_buy"] = vwap_buy if vwap_buy is not None else ask
    r["vwap_sell"] = bid
    r["profit"] = net / 1e4 * qty * (ask + bid) / 2
    r["profit_usd"] = usd if usd is not None else r["profit"]
    r["buy_levels"], r["sell_levels"] = levels
    r["trigger_recv_ns"], r["detect_ns"] = detect_ns - 1000, detect_ns
    r["opp_id"], r["opened_ns"] = oid, opened_ns
    return r


S = 1_000_000_000
SCRIPT = [  # a small deterministic run of the detector's output
    opp(OppState.OPEN, RUN1 + 1, BTC, BIN, OKX, 65000.5, 65040.25, 4.2, T0, T0, gross=6.11),
    opp(OppState.OPEN, RUN1 + 2, ETH, BYB, OKX, 3500.0, 3503.5, 3.0, T0 + S // 10,
        T0 + S // 10, flags=OPP_SELL_PERP, qty=2.0, conf=55.0, fund=1.25, gross=10.25,
        usd=np.nan),                                   # no USD rate: after every USD value
    opp(OppState.UPDATE, RUN1 + 1, BTC, BIN, OKX, 65000.5, 65060.0, 9.0, T0 + S // 2, T0,
        gross=9.15),
    opp(OppState.CLOSED, RUN1 + 1, BTC, BIN, OKX, 65000.5, 65060.0, 9.0, T0 + 3 * S // 2, T0,
        reason=CloseReason.SPREAD_GONE, gross=9.15),
    # opened before this reader joined: its lifetime still comes from opened_ns
    opp(OppState.CLOSED, RUN1 + 7, BTC, BYB, BIN, 64990.0, 65020.0, 2.5, T0 + 2 * S, T0 - 2 * S,
        reason=CloseReason.QUOTE_STALE),
    opp(OppState.UPDATE, RUN1 + 3, ETH, BIN, BYB, 3499.0, 3502.0, 2.0, T0 + 2 * S, T0 + S,
        vwap_buy=3499.5, usd=0.25, levels=(3, 2), flags=OPP_TOP_OF_BOOK),
]


def push(ring, recs):
    for r in recs:
        assert ring.push(r)


# ------------------------------------------------------------------ the state model -----

def test_book_keeps_open_and_closed_exactly(instance):
    cfg = config_from_dict(CFG)
    ring = BroadcastRing.create("opportunities", 64, "Opportunity", instance=instance)
    d = Dashboard(cfg, instance, publish=False)
    try:
        assert d.open_ring()
        push(ring, SCRIPT)
        assert d.drain() == len(SCRIPT)
        b = d.book
        assert sorted(b.open) == [RUN1 + 2, RUN1 + 3]
        eth = b.open[RUN1 + 2]
        assert (eth["instrument"], eth["buy"], eth["sell"]) == ("ETH/USDT", "bybit-spot",
                                                                "okx-perp")
        assert eth["funding_bps"] == 1.25 and eth["qty"] == 2.0 and eth["confidence"] == 55.0
        closed = list(b.closed)          # newest first
        assert [(c["id"], c["reason"], c["lifetime_ns"]) for c in closed] == [
            (RUN1 + 7, "quote_stale", 4 * S), (RUN1 + 1, "spread_gone", 3 * S // 2)]
        btc = closed[1]
        assert (btc["net_bps"], btc["peak_net_bps"], btc["updates"]) == (9.0, 9.0, 1)
        assert btc["sell_bid"] == 65060.0 and btc["opened_ns"] == T0
        assert b.counters == {"records": 6, "opened": 2, "updated": 2, "closed": 2,
                              "orphan_updates": 1, "orphan_closes": 1, "evicted": 0,
                              "bad_records": 0}
        # a newer detector run: what the old one left open closes as detector_restart
        push(ring, [opp(OppState.OPEN, RUN2 + 1, BTC, OKX, BIN, 65000.0, 65050.0, 5.0,
                        T0 + 10 * S, T0 + 10 * S)])
        assert d.drain() == 1
        assert sorted(b.open) == [RUN2 + 1]
        assert [(c["id"], c["reason"]) for c in list(b.closed)[:2]] == [
            (RUN1 + 3, "detector_restart"), (RUN1 + 2, "detector_restart")]
        assert list(b.closed)[0]["lifetime_ns"] == 9 * S     # opened T0+1s, seen gone T0+10s
        assert len(b.closed) == 4                          # closed_keep bounds the list
        assert b.closed_by_reason == {"spread_gone": 1, "quote_stale": 1,
                                      "detector_restart": 2}
        st = d.state()
        assert st["opps"]["open_count"] == 1 and st["opps"]["reader"]["lost"] == 0
    finally:
        d.close()
        ring.unlink()
        ring.close()


def test_lapped_reader_counts_lost_and_drops_unconfirmed(instance):
    cfg = config_from_dict(CFG)
    ring = BroadcastRing.create("opportunities", 16, "Opportunity", instance=instance)
    d = Dashboard(cfg, instance, publish=False)
    try:
        d.open_ring()
        push(ring, [opp(OppState.OPEN, RUN1 + 1, BTC, BIN, OKX, 100.0, 101.0, 5.0, T0, T0),
                    opp(OppState.OPEN, RUN1 + 2, ETH, BIN, OKX, 10.0, 10.1, 5.0, T0, T0)])
        d.drain()
        assert sorted(d.book.open) == [RUN1 + 1, RUN1 + 2]
        # 40 updates of #2 while the reader sleeps: the 16-record ring laps it
        push(ring, [opp(OppState.UPDATE, RUN1 + 2, ETH, BIN, OKX, 10.0, 10.1, 5.0 + i / 100,
                        T0 + (i + 1) * S, T0) for i in range(40)])
        d.drain()
        assert d.lost > 0 and d.laps >= 1
        assert list(d.book.open) == [RUN1 + 2], "#1 may have closed in what was lost"
        assert d.book.closed[0]["reason"] == "lost" and d.book.closed[0]["id"] == RUN1 + 1
        assert d.book.open[RUN1 + 2]["net_bps"] == 5.39
        assert d.state()["opps"]["reader"]["lost"] == d.lost
    finally:
        d.close()
        ring.unlink()
        ring.close()


def test_view_sorts_filters_and_reads_keys():
    book = OpportunityBook(closed_keep=10)
    recs = np.concatenate([
        opp(OppState.OPEN, RUN1 + 1, BTC, BIN, OKX, 100.0, 101.0, 5.0, T0 + 3, T0 + 3,
            gross=30.0, qty=1.0, conf=60.0, usd=7.0),
        opp(OppState.OPEN, RUN1 + 2, ETH, BIN, OKX, 10.0, 10.1, 8.0, T0 + 1, T0 + 1,
            gross=20.0, qty=50.0, conf=80.0, usd=np.nan),
        opp(OppState.OPEN, RUN1 + 3, BTC, BYB, OKX, 100.0, 101.0, 2.0, T0 + 2, T0 + 2,
            gross=40.0, qty=0.1, conf=70.0, usd=9.0),
        opp(OppState.OPEN, RUN1 + 4, ETH, BYB, OKX, 10.0, 10.1, 1.0, T0 + 4, T0 + 4,
            gross=10.0, qty=500.0, conf=50.0, usd=np.nan, vwap_buy=10.05)])
    book.apply(recs)
    state = {"opps": book.to_state()}
    ids = {s: [r["id"] - RUN1 for r in open_rows(state, s)] for s in
           ("profit", "net", "gross", "age", "confidence", "size", "instrument")}
    # profit: USD values first (9 > 7), then those without a rate by quote profit
    # (#4: 1 bp x 500 x 10.05 = 0.50 > #2: 8 bp x 50 x 10.05 = 0.40); size: qty x vwap_buy
    assert ids == {"profit": [3, 1, 4, 2], "net": [2, 1, 3, 4], "gross": [3, 1, 2, 4],
                   "age": [4, 1, 3, 2], "confidence": [2, 3, 1, 4], "size": [4, 2, 1, 3],
                   "instrument": [1, 3, 2, 4]}
    assert [r["id"] - RUN1 for r in open_rows(state, "net", "btc")] == [1, 3]
    assert open_rows(state)[0]["id"] == RUN1 + 3, "expected profit is the default sort"
    assert [r["id"] - RUN1 for r in book.open_rows()] == [3, 1, 4, 2]
    row = book.open[RUN1 + 4]
    assert row["profit_usd"] is None and row["notional"] == 500 * 10.05
    assert (row["buy_levels"], row["sell_levels"], row["top_of_book"]) == (1, 1, False)
    assert parse_keys(b"q\x1b[A\x1b[B\x1b[5~\x1b[6~s/et\r\x7f\x1b") == [
        "q", "up", "down", "pgup", "pgdn", "s", "/", "e", "t", "enter", "backspace", "esc"]
    v = ViewState()
    v.total, v.page = 30, 10
    assert v.sort == "profit"
    for k in ["s", "s", "s", "pgdn", "down", "/", "B", "T", "X", "backspace", "C", "enter"]:
        v.key(k)
    assert (v.sort, v.flt, v.scroll, v.quit) == ("age", "BTC", 0, False)
    v.key("q")
    assert v.quit


def test_metrics_text_follows_the_exposition_format():
    from arbpipe.ui.metrics import Exposition
    x = Exposition()
    x.one("arbpipe_test_total", "counter", "A counter.", 3, ring='we"ird\\name\n')
    fams = {f.name: f for f in text_string_to_metric_families(x.text())}
    s = fams["arbpipe_test"].samples[0]
    assert s.name == "arbpipe_test_total" and s.value == 3
    assert s.labels["ring"] == 'we"ird\\name\n'
    none = list(text_string_to_metric_families(render_metrics(None)))
    assert [f.name for f in none] == ["arbpipe_dashboard_up"]


def test_config_section_is_validated_with_key_paths():
    from arbpipe.config import ConfigError
    for key, value, path in (("metrics_port", 70000, "dashboard.metrics_port"),
                             ("refresh_hz", 0.0, "dashboard.refresh_hz"),
                             ("closed_keep", 0, "dashboard.closed_keep"),
                             ("metrics_host", "bad host", "dashboard.metrics_host"),
                             ("metrics_prot", 1, "dashboard.metrics_prot")):
        bad = dict(CFG, dashboard={key: value})
        with pytest.raises(ConfigError, match=re.escape(path)):
            config_from_dict(bad)
    assert config_from_dict(dict(CFG, dashboard={})).dashboard.metrics_host == "127.0.0.1"


# ------------------------------------------------------------------ the process ---------

wait_for = helpers.waiter(60, every=0.1)


def scrape(port) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def start_dashboard(cfg_path, instance, env, metrics=True):
    p = subprocess.Popen([sys.executable, "-m", "procs.dashboard", "--config", str(cfg_path),
                          "--instance", instance], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=env)
    line = p.stdout.readline()
    assert line, f"dashboard exited with {p.wait(10)}"
    ready = json.loads(line)
    assert ready["event"] == "ready" and bool(ready["metrics"]["port"]) == metrics, ready
    return p, ready


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
    return p.returncode


def test_once_and_metrics_show_a_known_run_exactly(instance, tmp_path):
    """procs.dashboard over a ring fed with known records (and a known histogram and
    strategy state): --once prints exactly them, the metrics count them, a restarted
    dashboard keeps what it had accumulated."""
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(CFG_TOML)
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"), ARBPIPE_INSTANCE=instance)
    ring = BroadcastRing.create("opportunities", 1024, "Opportunity", instance=instance)
    hist = Histogram.create(instance, "total")
    strat = StateBlob.create(instance, "strategy.state")
    strat.publish({
        "mode": "trade", "kill_switch": False,
        "breaker": {"tripped": True, "reason": "daily_loss", "since_ns": T0, "value": -1234.5,
                    "limit": 1000.0},
        "counters": {"opportunities_read": 6, "lost": 0, "orders": 4, "fills": 3,
                     "rejects": 2, "unwinds": 0, "missed": 1, "journal_dropped": 0},
        "rejects": {"stale_quote": 2},
        "positions": [{"instrument": "BTC/USDT", "venue": "okx", "market": "perp",
                       "qty": -0.25, "avg_price": 65010.0, "mark": 65020.0,
                       "unrealized": -2.5, "realized": 0.0, "fees": 0.8}],
        "pnl": {"realized": 10.0, "unrealized": -2.5, "fees": 1.5, "net": 6.0,
                "day": "2023-11-14", "day_net": 6.0, "peak_net": 8.0, "drawdown": 2.0},
        "balances": {}, "limits": {}, "journal_seq": 7})
    procs = []
    try:
        p, ready = start_dashboard(cfg_path, instance, env)
        procs.append(p)
        port = ready["metrics"]["port"]
        m0 = scrape(port)
        for v in [2000] * 90 + [50_000] * 9 + [2_000_000]:   # within the last minute
            hist.record(v)
        push(ring, SCRIPT)
        wait_for(lambda: (read_blob(instance, STATE_BLOB) or {}).get("opps", {}).get(
            "counters", {}).get("records") == len(SCRIPT), what="the dashboard reading")
        out = cli("attach", "dashboard", "--once", "--instance", instance, env=env).stdout
        lines = out.splitlines()
        assert lines[0].startswith(f"arbpipe dashboard  instance {instance}")
        assert "open 2  opened 2  closed 2  records 6  lost 0" in lines[0]
        assert f"metrics http://127.0.0.1:{port}/metrics" in lines[0]
        i = lines.index(next(x for x in lines if x.startswith("Live opportunities")))
        assert ("sort: expected profit  rows 1-2 of 2  *: top of book  detector: not running"
                in lines[i]), lines[i]
        assert lines[i + 1].split() == ["instrument", "buy", "sell", "size", "notional", "lvl",
                                        "gross", "net", "$profit", "conf", "age", "id"]
        # expected profit first: #3 has a USD value, #2 none (its quote-currency profit
        # shown, named); #3 walked 3 ask and 2 bid levels, a leg without a book (*)
        assert re.fullmatch(r"ETH/USDT\s+binance\s+bybit-spot\s+0\.5\s+1,750\s+3/2\*\s+8\.57\s+"
                            r"2\.00\s+0\.25\s+71\s+\S+\s+3", lines[i + 2]), lines[i + 2]
        assert re.fullmatch(r"ETH/USDT\s+bybit-spot\s+okx-perp\s+2\s+7,000\s+1/1\s+10\.25\s+"
                            r"3\.00\s+2\.10 USDT\s+55\s+\S+\s+2", lines[i + 3]), lines[i + 3]
        # fits 100 columns (the ages here are years: as wide as a live age of minutes)
        assert max(len(re.sub(r"\d+h\d\dm", "4m05s", x)) for x in lines[i + 2:i + 4]) <= 100
        j = lines.index(next(x for x in lines if x.startswith("Recently closed")))
        assert lines[j] == "Recently closed  (stale quote 1, spread gone 1)"
        assert re.fullmatch(r"BTC/USDT\s+bybit-spot\s+binance\s+2\.50\s+2\.50\s+stale quote"
                            r"\s+4\.0s\s+\S+ ago\s+7", lines[j + 2]), lines[j + 2]
        assert re.fullmatch(r"BTC/USDT\s+binance\s+okx\s+9\.00\s+9\.00\s+spread gone"
                            r"\s+1\.5s\s+\S+ ago\s+1", lines[j + 3]), lines[j + 3]
        assert any(re.match(r"total\s+100\s+2\.0us\s+\S+\s+\S+\s+2\.00ms", x) for x in lines)
        assert re.search(r"opportunities\s+broadcast\s+-\s+\S+\s+0\s+dashboard\s+\S+\s+0\s+0"
                         r"\s+0$", out, re.M), out
        assert "mode trade  kill switch off  breaker TRIPPED (daily_loss -1,234.50 / " \
               "1,000.00)" in out
        assert "pnl net 6.00  realized 10.00  unrealized -2.50  fees 1.50" in out
        assert re.search(r"BTC/USDT\s+okx-perp\s+-0\.25\s+65010\s+65020\s+-2\.50", out)
        assert "rejects: stale_quote 2" in out

        m = wait_for(lambda: (lambda s: s if s.get(("arbpipe_dashboard_records_total", ()))
                              == 6 else None)(scrape(port)), what="metrics of the run")
        assert m0[("arbpipe_dashboard_records_total", ())] == 0
        assert m[("arbpipe_dashboard_opportunities_opened_total", ())] == 2
        assert m[("arbpipe_dashboard_open_opportunities", ())] == 2
        assert m[("arbpipe_dashboard_best_profit_usd", ())] == 0.25
        assert m[("arbpipe_dashboard_open_top_of_book", ())] == 1
        assert m[("arbpipe_dashboard_opportunities_closed_total",
                  (("reason", "quote_stale"),))] == 1
        assert m[("arbpipe_ring_published_total", (("kind", "broadcast"),
                                                   ("ring", "opportunities")))] == 6
        assert m[("arbpipe_ring_reader_received_total", (("reader", "dashboard"),
                                                         ("ring", "opportunities")))] == 6
        h = (("hop", "total"),)
        assert m[("arbpipe_latency_seconds_count", h)] == 100
        assert m[("arbpipe_latency_seconds_bucket", h + (("le", "2.5e-06"),))] == 90
        assert m[("arbpipe_latency_seconds_bucket", h + (("le", "5e-05"),))] == 90
        assert m[("arbpipe_latency_seconds_bucket", h + (("le", "0.0001"),))] == 99
        assert m[("arbpipe_latency_seconds_bucket", h + (("le", "+Inf"),))] == 100
        assert abs(m[("arbpipe_latency_seconds_sum", h)] - (90 * 2e-6 + 9 * 5e-5 + 2e-3)) < 1e-9
        assert m[("arbpipe_strategy_breaker_tripped", ())] == 1
        assert m[("arbpipe_strategy_net_pnl", ())] == 6.0
        assert m[("arbpipe_strategy_rejects_by_reason_total", (("reason", "stale_quote"),))] == 2
        assert m[("arbpipe_detector_up", ())] == 0

        # a crashed dashboard is restarted: the new one continues the accumulated state
        p.kill()
        p.wait(10)
        sleepers = ring.stats()["sleepers"]   # 1 if it died asleep: its successor undoes it
        p2, ready2 = start_dashboard(cfg_path, instance, env)
        procs.append(p2)
        assert ready2["restored"]
        push(ring, [opp(OppState.CLOSED, RUN1 + 2, ETH, BYB, OKX, 3500.0, 3503.5, 3.0,
                        T0 + 5 * S, T0 + S // 10, reason=CloseReason.VENUE_DOWN,
                        flags=OPP_SELL_PERP)])
        st = wait_for(lambda: (lambda d: d if d and d["opps"]["counters"]["records"] == 7
                               else None)(read_blob(instance, STATE_BLOB)),
                      what="the restarted dashboard reading")
        assert st["opps"]["open_count"] == 1 and st["opps"]["counters"]["opened"] == 2
        assert [c["id"] for c in st["opps"]["closed"]] == [RUN1 + 2, RUN1 + 7, RUN1 + 1]
        assert st["opps"]["closed"][0]["reason"] == "venue_down"
        assert st["opps"]["closed"][0]["lifetime_ns"] == 5 * S - S // 10
        m2 = scrape(ready2["metrics"]["port"])
        assert m2[("arbpipe_dashboard_records_total", ())] == 7
        assert stop(p2) == 0
        st = ring.stats()
        assert st["sleepers"] == 0, "SIGTERM left a doorbell sleeper behind"
        assert st["sleepers_reclaimed"] == sleepers, "the killed reader's sleep was not undone"
        assert read_blob(instance, STATE_BLOB) is None, "a stopped dashboard unlinks its blob"
        r = cli("attach", "dashboard", "--once", "--wait", "0", "--instance", instance,
                env=env, check=False)
        assert r.returncode == 1 and "not running" in r.stderr
    finally:
        for p in procs:
            stop(p)
        strat.close()
        hist.close()
        ring.unlink()
        ring.close()


def test_metrics_port_in_use_is_reported_retried_and_the_view_keeps_working(instance,
                                                                             tmp_path):
    import socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(CFG_TOML.replace("metrics_port = 0", f"metrics_port = {port}"))
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"), ARBPIPE_INSTANCE=instance)
    ring = BroadcastRing.create("opportunities", 64, "Opportunity", instance=instance)
    p = None
    try:
        p, ready = start_dashboard(cfg_path, instance, env, metrics=False)
        assert ready["metrics"]["error"].startswith(f"127.0.0.1:{port}: ")
        push(ring, SCRIPT[:1])
        dashboard_state(instance, lambda d: d["opps"]["counters"]["records"] == 1,
                        what="the view without metrics")
        out = cli("attach", "dashboard", "--once", "--instance", instance, env=env).stdout
        assert f"metrics unavailable (127.0.0.1:{port}: " in out.splitlines()[0]
        assert re.search(r"^BTC/USDT\s+binance\s+okx\s+0\.5\s+32,500\s+1/1\s", out, re.M), out
        taken.close()                      # the port frees up: the endpoint comes up there
        st = dashboard_state(instance, lambda d: d["metrics"]["port"] == port, timeout=30,
                             what="the metrics endpoint after the port freed up")
        assert st["metrics"]["error"] is None
        assert scrape(port)[("arbpipe_dashboard_records_total", ())] == 1
        assert p.poll() is None
    finally:
        taken.close()
        if p is not None:
            assert stop(p) == 0
        ring.unlink()
        ring.close()


def test_attach_refuses_clearly_without_a_tree(instance, tmp_path):
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"))
    r = cli("attach", "dashboard", "--once", "--instance", instance, env=env, check=False)
    assert r.returncode == 1
    assert f"pipeline {instance!r} is not running" in r.stderr


# ------------------------------------------------------------------ a running tree ------

@pytest.fixture
def tree(instance, tmp_path):
    cfg = tmp_path / "arbpipe.toml"
    cfg.write_text(TREE_TOML)
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"), ARBPIPE_INSTANCE=instance)
    out = cli("up", "--detach", "--config", str(cfg), env=env, timeout=180)
    assert "running" in out.stdout, out.stdout + out.stderr
    status = tmp_path / "run" / instance / "status.json"
    try:
        yield env, status
    finally:
        try:
            st = json.load(open(status))
            pids = [st["supervisor_pid"]] + [p["pid"] for p in st["processes"] if p["pid"]]
        except (OSError, ValueError):
            pids = []
        cli("down", env=env, check=False, timeout=120)
        for pid in pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", pid


def dashboard_state(instance, cond=lambda d: True, timeout=120, what="dashboard state"):
    return wait_for(lambda: (lambda d: d if d and d.get("_alive") and cond(d) else None)(
        read_blob(instance, STATE_BLOB)), timeout=timeout, what=what)


def dash_proc(status_path):
    st = json.load(open(status_path))
    return next(p for p in st["processes"] if p["name"] == "dashboard")


def test_running_tree_once_and_metrics(tree, instance):
    env, status = tree
    st = dashboard_state(instance, lambda d: d["opps"]["counters"]["opened"] >= 3 and
                         len(d["venues"]) == 3, what="opportunities in the dashboard")
    # --once: venues, rings and opportunities consistent with the detector
    out = cli("attach", "dashboard", "--once", "--instance", instance, env=env).stdout
    from arbpipe.detect.stats import read_stats
    det = read_stats(instance)
    for v in ("binance", "bybit-spot", "okx"):
        assert re.search(rf"^{v}\s+(connected|stale)\s+1/1", out, re.M), out
    for r in ("feed.binance", "feed.bybit-spot", "feed.okx", "opportunities"):
        assert re.search(rf"^.*{re.escape(r)}\s+(spsc|broadcast)", out, re.M), out
    for v in ("binance", "bybit-spot", "okx"):     # each feed ring with its reader
        assert re.search(rf"feed\.{v}\s+spsc\s+\d+ \(\d+%\)\s+\S+\s+\d+\s+detector\s", out), out
    assert re.search(r"^\s+dashboard\s+\S+\s+\d+\s+0\s+0$", out, re.M) or \
        re.search(r"opportunities\s+broadcast\s+-\s+\S+\s+\d+\s+dashboard\s", out), out
    m = re.search(r"  opened (\d+)  closed (\d+)  records (\d+)", out)
    opened = int(m.group(1))
    assert 3 <= opened <= det["opened"]
    assert re.search(r"^(BTC|ETH)/USDT\s+\S+\s+\S+\s+\S+\s+.*spread gone", out, re.M) or \
        re.search(r"^(BTC|ETH)/USDT\s+(binance|bybit-spot|okx)\s+(binance|bybit-spot|okx)\s+"
                  r"[\d.]+\s+", out, re.M), out
    # records seen by a tap are in the dashboard's book with the same legs
    tapped = [json.loads(x) for x in cli("tap", "opportunities", "--json", "--count", "3",
                                         "--instance", instance, env=env,
                                         timeout=120).stdout.splitlines()]
    assert len(tapped) == 3

    def known(d):
        rows = {r["id"]: r for r in d["opps"]["open"] + d["opps"]["closed"]}
        return all(t["opp_id"] in rows and rows[t["opp_id"]]["instrument"] == t["instrument"]
                   for t in tapped)
    st = dashboard_state(instance, known, what="tapped opportunities in the dashboard")
    rows = {r["id"]: r for r in st["opps"]["open"] + st["opps"]["closed"]}
    for t in tapped:
        r = rows[t["opp_id"]]
        assert r["buy"] == t["buy"] and r["sell"] == t["sell"], (r, t)
        if t["state"] != "closed":   # sized by the detector (USDT: a USD rate of 1)
            assert t["exec_qty"] > 0 and t["profit_usd"] is not None and t["buy_levels"] >= 1, t
            assert r["profit_usd"] is not None and r["notional"] > 0, r
    # metrics: parsed by the Prometheus parser; counters move with the simulator
    port = st["metrics"]["port"]
    a = scrape(port)
    key = ("arbpipe_venue_messages_total", (("venue", "binance"),))
    ring = ("arbpipe_ring_published_total", (("kind", "spsc"), ("ring", "feed.okx")))
    b = wait_for(lambda: (lambda s: s if s[key] > a[key] and s[ring] > a[ring] else None)(
        scrape(port)), what="counters growing between scrapes")
    assert b[("arbpipe_venue_up", (("venue", "okx"),))] in (0, 1)
    assert b[("arbpipe_detector_up", ())] == 1
    assert b[("arbpipe_detector_opportunities_opened_total", ())] >= opened
    assert ("arbpipe_ring_reader_lag_records", (("reader", "dashboard"),
                                                ("ring", "opportunities"))) in b
    assert any(k[0] == "arbpipe_latency_seconds_count" for k in b)
    assert dash_proc(status)["restarts"] == 0


def section_rows(text, title):
    """The rows of a table of the view (the lines after its title and header that start
    with an instrument); the count agrees with the title's "rows a-b of n" when it has one."""
    lines = text.splitlines()
    i = next((k for k, x in enumerate(lines) if x.startswith(title)), None)
    if i is None:
        return []
    rows = []
    for x in lines[i + 2:]:
        if not re.match(r"(BTC|ETH)/USDT ", x):
            break
        rows.append(x)
    m = re.search(r"rows (\d+)-(\d+) of \d+", lines[i])
    if m:
        assert len(rows) == int(m.group(2)) - int(m.group(1)) + 1, (lines[i], rows)
    return rows


def tmux_bin():
    t = shutil.which("tmux")
    if t is None:
        if os.environ.get("ARBPIPE_REQUIRE_TMUX") == "1":
            pytest.fail("tmux is required (ARBPIPE_REQUIRE_TMUX=1) but not installed")
        pytest.skip("tmux not installed (`make tmux` installs it)")
    return t


def test_terminal_view_in_tmux(tree, instance, tmp_path):
    tmux = tmux_bin()
    env, status = tree
    dashboard_state(instance, lambda d: d["opps"]["counters"]["opened"] >= 1,
                    what="a first opportunity")
    dash_pid = dash_proc(status)["pid"]
    sock = f"arbpipe-{instance}"

    def tm(*args, check=True):
        return subprocess.run([tmux, "-L", sock, *args], capture_output=True, text=True,
                              timeout=30, check=check, env=env)

    def pane(name):
        return tm("capture-pane", "-p", "-t", name).stdout

    attach = (f"env ARBPIPE_RUN_DIR={env['ARBPIPE_RUN_DIR']} {sys.executable} -m procs.cli "
              f"attach dashboard --instance {instance}")
    done, stty, pid2 = tmp_path / "exit1", tmp_path / "stty1", tmp_path / "pid2"
    try:
        tm("new-session", "-d", "-s", "one", "-x", "200", "-y", "50",
           f"{attach}; echo EXIT=$? > {done}; stty -a > {stty}; sleep 600")
        tm("new-session", "-d", "-s", "two", "-x", "200", "-y", "50",
           f"sh -c 'echo $$ > {pid2}; exec {attach}'")
        # both attaches show the sections of the running tree
        for name in ("one", "two"):
            wait_for(lambda: all(s in pane(name) for s in (
                "Live opportunities", "Recently closed", "Venues", "Rings", "Latency",
                "Strategy", "binance", "bybit-spot", "okx", "feed.okx", "opportunities")),
                what=f"the view in session {name}")
        text = pane("one")
        assert "sort: expected profit" in text and re.search(r"opened [1-9]", text)
        # s cycles the sort; rows follow it. Checked on a frame that shows at least two live
        # rows: an empty table is sorted by any key and would prove nothing.
        tm("send-keys", "-t", "one", "s")
        text = wait_for(lambda: (lambda t: t if "sort: net bps" in t and
                                 len(section_rows(t, "Live opportunities")) >= 2 else None)(
            pane("one")), timeout=180, what="two live opportunities sorted by net")
        rows = section_rows(text, "Live opportunities")
        nets = [float(r.split()[7]) for r in rows]
        assert len(nets) >= 2 and nets == sorted(nets, reverse=True), nets
        # / filters by instrument: first a frame with ETH rows (what the filter must remove)
        wait_for(lambda: any(r.startswith("ETH/USDT") for t in [pane("one")]
                             for r in section_rows(t, "Live opportunities") +
                             section_rows(t, "Recently closed")),
                 timeout=180, what="ETH/USDT rows before filtering")
        tm("send-keys", "-t", "one", "/")
        tm("send-keys", "-t", "one", "-l", "BTC")
        wait_for(lambda: "filter by instrument: BTC_" in pane("one"), what="filter input")
        tm("send-keys", "-t", "one", "Enter")
        # then a filtered frame with BTC rows in it: only BTC rows, live and closed
        text = wait_for(lambda: (lambda t: t if "filter: BTC" in t and any(
            r.startswith("BTC/USDT") for r in section_rows(t, "Live opportunities")) else None)(
            pane("one")), timeout=180, what="a live BTC/USDT row under the filter")
        shown = section_rows(text, "Live opportunities") + section_rows(text, "Recently closed")
        assert shown and all(r.startswith("BTC/USDT ") for r in shown), shown
        live = text.split("Live opportunities", 1)[1].split("Venues", 1)[0]
        assert "ETH/USDT" not in live
        for key in ("Down", "NPage", "PPage", "Up"):
            tm("send-keys", "-t", "one", key)
        wait_for(lambda: "Live opportunities" in pane("one"), what="view after scrolling")
        # q leaves the view, restores the terminal, and the tree keeps running
        tm("send-keys", "-t", "one", "q")
        wait_for(lambda: done.exists() and done.read_text().strip() == "EXIT=0" and
                 stty.exists() and stty.stat().st_size > 0, what="q to end the attach")
        modes = stty.read_text().split()
        assert "icanon" in modes and "echo" in modes, "terminal left in cbreak mode"
        assert "two" in tm("list-sessions").stdout, "the other attach is unaffected"
        # a dead terminal: killing the session ends that attach only
        apid = int(pid2.read_text())
        tm("kill-session", "-t", "two")
        wait_for(lambda: not psutil.pid_exists(apid) or
                 psutil.Process(apid).status() == psutil.STATUS_ZOMBIE,
                 what="the attach of a dead terminal to exit")
        out = cli("status", "--instance", instance, env=env).stdout
        assert "restarting" not in out
        d = dash_proc(status)
        assert d["pid"] == dash_pid and d["restarts"] == 0 and d["state"] == "running"
        before = read_blob(instance, STATE_BLOB)["publishes"]
        dashboard_state(instance, lambda x: x["publishes"] > before,
                        what="the dashboard still publishing")
    finally:
        tm("kill-server", check=False)
