"""Every metric the alerting rules (deploy/prometheus/arbpipe-rules.yml) and the Grafana
board (deploy/grafana/arbpipe.json) read is served by a real tree: a renamed family fails
here instead of silently disarming an alert. The health families the rules added come with
samples from the running tree (supervisor, processes, detector heartbeat, clock skew)."""
import math
import urllib.request

import psutil
from prometheus_client.parser import text_string_to_metric_families

from arbpipe.persist.redis_embed import redis_server_path
from arbpipe.transport.stateblob import read_blob
from arbpipe.ui.blob import STATE_BLOB
from bench.harness import Tree
from tests import deploy
from tests.helpers import wait_for

TREE_TOML = """
instruments = ["BTC/USDT", "ETH/USDT"]
[venues.binance]
taker_fee_bps = 10.0
maker_fee_bps = 10.0
[venues.okx]
taker_fee_bps = 10.0
maker_fee_bps = 8.0
[simulator]
rate_hz = 20.0
[dashboard]
metrics_port = 0
"""
VENUES = ("binance", "okx")
TIMED = "okx"        # its quotes carry exchange time (binance's bookTicker has none: NaN skew)


def scrape(port) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def samples(text) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def ready(instance):
    """The dashboard's view once it shows both venues (okx's clock skew), the detector's loop
    running with a quote seen, the strategy and the supervisor's processes (the metrics port is
    in it)."""
    d = read_blob(instance, STATE_BLOB)
    if not (d and d.get("_alive") and d["metrics"].get("port") and d.get("processes")):
        return None
    v = {x["venue"]: x for x in d["venues"]}
    if set(v) != set(VENUES) or v[TIMED].get("clock_skew_s") is None:
        return None
    det = d["detector"]
    # the detector's stats segment exists before its loop first beats and before its first
    # quote: both ages are None (NaN on /metrics) until then
    if not (det and det.get("heartbeat_age_s") is not None
            and det.get("last_update_age_s") is not None
            and d["strategy"] and d["strategy"].get("_age_s") is not None):
        return None
    return d


def test_every_metric_the_rules_and_the_board_read_is_served(instance, tmp_path):
    cfg = tmp_path / "arbpipe.toml"
    cfg.write_text(TREE_TOML)
    tree = Tree(instance, str(tmp_path), str(cfg))
    pids = []
    try:
        tree.up()
        pids = tree.pids()
        st = wait_for(lambda: ready(instance), 120, "the tree in the dashboard's view")
        text = scrape(st["metrics"]["port"])
        fams = deploy.families(text)
        names = set()
        for r in deploy.alert_rules():
            names |= deploy.metric_names(r["expr"])
        for _, t in deploy.board_targets():
            names |= deploy.metric_names(t["expr"])
        assert len(names) > 30, names
        assert not deploy.missing_names(names, fams), sorted(deploy.missing_names(names, fams))
        s = samples(text)
        assert s[("arbpipe_supervisor_up", ())] == 1
        det = (("process", "detector"), ("role", "detector"))
        assert s[("arbpipe_process_up", det)] == 1
        assert s[("arbpipe_process_restarts_total", det)] == 0
        assert math.isfinite(s[("arbpipe_detector_heartbeat_age_seconds", ())])
        assert math.isfinite(s[("arbpipe_detector_last_update_age_seconds", ())])
        assert math.isfinite(s[("arbpipe_strategy_state_age_seconds", ())])
        skew = {v: s[("arbpipe_venue_clock_skew_seconds", (("venue", v),))] for v in VENUES}
        # with L2 books on (the default) Binance's quotes come from its depth stream, which
        # carries an event time, so every venue has a skew now
        assert math.isfinite(skew[TIMED]) and math.isfinite(skew["binance"]), skew
        if redis_server_path():          # the embedded Redis: a persister runs
            d = wait_for(lambda: (lambda x: x if ("arbpipe_redis_up", ()) in x else None)(
                samples(scrape(st["metrics"]["port"]))), 60, "the persister's metrics")
            assert d[("arbpipe_persister_up", ())] == 1
            assert ("arbpipe_persister_backlog_records", (("stream", "trades"),)) in d
    finally:
        tree.down()
        for pid in pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", pid
