"""Venue faults through the simulator, on the whole tree (`arbpipe up --detach`).

Every venue but two gets its own fault from ``[simulator.faults.<venue>]``; the test waits
for each one to be handled as ``arbpipe/feed.py`` documents it and reads the counts back
through the CLI (`arbpipe stat feeds --json`, `arbpipe stat detector --json`), as an
operator would. Then a venue goes silent without saying so (its feed process stopped with
SIGSTOP, so no STATUS record comes either) and the detector alone must stop using its quotes
once they are older than ``detector.max_quote_age_ms``; checked record by record against a
recording of the feed rings, then the venue comes back.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from arbpipe import segments
from arbpipe.config import DEFAULT_PATH, ConfigError, parse_config
from arbpipe.replay import Recorder, open_recording
from arbpipe.rings import BroadcastRing
from shm_layouts import Kind, OppState

BINANCE = 1             # venue ids (arbpipe.symbols.VENUE_IDS)
MAX_AGE_MS = 1500.0

FAULTS = """
[simulator.faults.bybit-linear]      # disconnect storm: every connection dies after 1 s,
drop_every_s = 1.0                   # and 30 % of the handshakes are refused (HTTP 503)
refuse_connect_p = 0.3
[simulator.faults.okx]               # planned disconnects, announced by the venue
notice_every_s = 3.0
notice_lead_s = 1.0
[simulator.faults.gate]              # duplicated, reordered and malformed frames
duplicate_p = 0.1
reorder_p = 0.05
malformed_p = 0.05
[simulator.faults.kraken]            # half-open: no data, no pong, no FIN 3 s after connect
halfopen_after_s = 3.0
halfopen_hold_s = 20.0
[simulator.faults.coinbase]          # one subscription refused by name
refuse_symbols = ["ETH-USDT"]
[simulator.faults.bybit-spot]        # the venue stalls (sends nothing) 5 s after connect
stall_every_s = 5.0
stall_s = 600.0
"""


def cli(*args, env, check=True, timeout=120):
    return subprocess.run([sys.executable, "-m", "arbpipe.cli", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, check=check)


def wait_for(cond, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def fault_config() -> str:
    text = open(DEFAULT_PATH).read()
    sub = [(r"(?m)^rate_hz = .*$", "rate_hz = 40.0"),
           (r"(?m)^dislocation_rate_hz = .*$", "dislocation_rate_hz = 0.1"),
           (r"(?m)^max_quote_age_ms = 3000\.0.*$", f"max_quote_age_ms = {MAX_AGE_MS}"),
           (r"(?m)^metrics_port = .*$", "metrics_port = 0"),
           (r"(?m)^\[venues\.kraken\]$", "[venues.kraken]\nprobe_idle_s = 0.5\nprobe_timeout_s = 1.0"),
           (r"(?m)^\[venues\.bybit-spot\]$", "[venues.bybit-spot]\nwatchdog_s = 1.0")]
    for pat, rep in sub:
        text, n = re.subn(pat, rep, text, count=1)
        assert n == 1, pat
    return text + FAULTS


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
    cfg = parse_config(fault_config())        # the suite's own config is valid
    from arbpipe.config import to_sim_config
    sim = to_sim_config(cfg)
    assert sim.venues["kraken"].faults.halfopen_after_s == 3.0
    assert sim.venues["binance"].faults.drop_every_s == 0.0


class Opps:
    """Every record of the ``opportunities`` broadcast ring from now on (a reader slot)."""

    def __init__(self, instance):
        self.ring = BroadcastRing.attach("opportunities", instance=instance)
        self.ring.join("faults-test")
        self.buf = self.ring.empty(1024)
        self.got = []

    def poll(self, timeout=0.2):
        n = self.ring.pop_batch(self.buf, timeout=timeout)
        if n:
            self.got.append(self.buf[:n].copy())
        return n

    def all(self):
        return np.concatenate(self.got) if self.got else self.ring.empty(0)

    def close(self):
        self.ring.close()


def feeds(env, instance):
    rows = json.loads(cli("stat", "feeds", "--json", "--instance", instance, env=env).stdout)
    return {r["venue"]: r for r in rows}


def involves(opps, venue):
    return (opps["buy_venue"] == venue) | (opps["sell_venue"] == venue)


def test_venue_faults_on_the_whole_tree(instance, tmp_path):
    cfg = tmp_path / "arbpipe.toml"
    cfg.write_text(fault_config())
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"), ARBPIPE_INSTANCE=instance)
    out = cli("up", "--detach", "--config", str(cfg), env=env, timeout=240)
    assert "running" in out.stdout, out.stdout + out.stderr
    status_path = tmp_path / "run" / instance / "status.json"
    stopped = None
    try:
        rec_path = str(tmp_path / "feeds.rec")
        opps = Opps(instance)
        recorder = Recorder(rec_path, instance=instance, cfg=parse_config(fault_config()))
        rec_start = time.time_ns()

        def pump():
            recorder.poll()
            opps.poll()

        # -- each fault handled as documented, counts visible in `arbpipe stat feeds` -----------
        def handled():
            pump()
            f = feeds(env, instance)
            if len(f) < 8:                      # feeds still starting
                return False
            rej = f["gate"]["rejects"]
            return (f["bybit-linear"]["disconnects"] >= 2 and
                    f["bybit-linear"]["connect_failures"] >= 1 and
                    f["okx"]["planned_reconnects"] >= 1 and
                    rej.get("duplicate", 0) >= 1 and rej.get("out_of_order", 0) >= 1 and
                    rej.get("not_json", 0) + rej.get("bad_shape", 0) >= 1 and
                    f["kraken"]["halfopen_reconnects"] >= 1 and
                    f["coinbase"]["refused_symbols"] == 1 and
                    f["bybit-spot"]["stale_symbols"] >= 1 and f)
        f = wait_for(handled, 180, "every venue fault counted in `arbpipe stat feeds`")
        assert "ETH-USDT" in f["coinbase"]["last_error"]
        assert f["okx"]["disconnects"] == 0, "a planned reconnect is not a lost connection"
        assert f["kraken"]["disconnects"] == 0, "half-open is counted as half-open"
        for v in ("binance", "binance-usdm"):            # the controls: no fault, no reconnect
            assert f[v]["reconnects"] == 0 and f[v]["disconnects"] == 0, (v, f[v])
            assert f[v]["halfopen_reconnects"] == 0 and f[v]["rejects_total"] == 0, (v, f[v])
        text = cli("stat", "feeds", "--instance", instance, env=env).stdout
        assert re.search(r"kraken.*\n.*half_open=\d", text), text
        assert re.search(r"bybit-linear.*\n.*lost=\d", text), text
        wait_for(lambda: (pump(), all(r["quotes"] > 0 for r in feeds(env, instance).values()))[1],
                 60, "every venue quoting: " + str({v: r["quotes"] for v, r in f.items()}))
        det = json.loads(cli("stat", "detector", "--json", "--instance", instance,
                             env=env).stdout)
        assert det["filter_status"] + det["closed_venue_down"] > 0, \
            "the detector saw none of the STALE / DISCONNECTED statuses"

        # -- a venue silent without a word: excluded by the detector within max age ------------
        wait_for(lambda: (pump(), involves(opps.all(), BINANCE).any())[1], 120,
                 "an opportunity on binance")
        st = json.load(open(status_path))
        feed_pid = next(p["pid"] for p in st["processes"] if p["name"] == "feed.binance")
        os.kill(feed_pid, signal.SIGSTOP)
        stopped = feed_pid
        t_stop = time.time_ns()

        def others_after_max_age():
            # opportunities of the other venues well inside (stop + max age, now - 1 s): the
            # window checked below is closed 1 s before the venue comes back
            pump()
            a = opps.all()
            t = a["trigger_recv_ns"]
            late = (t > t_stop + int(MAX_AGE_MS * 1e6)) & (t < time.time_ns() - 1_000_000_000)
            return (late & ~involves(a, BINANCE) & (a["state"] != OppState.CLOSED)).sum() >= 3
        wait_for(others_after_max_age, 120, "opportunities of other venues after max age")
        os.kill(feed_pid, signal.SIGCONT)
        stopped = None
        t_cont = time.time_ns()
        wait_for(lambda: (pump(), ((opps.all()["trigger_recv_ns"] > t_cont) &
                                   involves(opps.all(), BINANCE)).any())[1], 120,
                 "binance opportunities again after the venue came back")
        pump()
        recorder.writer.close()
        assert recorder.missed == 0
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        try:
            st2 = json.load(open(status_path))
        except (OSError, ValueError):
            st2 = {"processes": [], "supervisor_pid": 0}
        try:
            opps.close()
            recorder.close()
        except Exception:  # noqa: BLE001 - the tree must go down whatever happened above
            pass
        cli("down", env=env, check=False, timeout=120)
        for p in st2["processes"]:
            pid = p["pid"]
            assert not pid or not psutil.pid_exists(pid) or \
                psutil.Process(pid).status() == "zombie", p
    assert not segments.list_segments(instance)

    # Before the stop and after it: every OPEN / UPDATE that uses a binance quote had one
    # at most max age old (a binance quote received after the trigger counts as fresh: the
    # detector may read it first).
    max_age_ns = int(MAX_AGE_MS * 1e6)
    rec = open_recording(rec_path).records
    q = rec[(rec["kind"] == Kind.QUOTE) & (rec["venue_id"] == BINANCE)]
    assert len(q), "nothing recorded from binance"
    a = opps.all()
    live = a[(a["state"] != OppState.CLOSED) & involves(a, BINANCE) &
             (a["trigger_recv_ns"] >= rec_start + max_age_ns)]
    assert len(live), "no binance opportunity to check"
    for o in live:
        mine = q["recv_ts_ns"][q["instrument_id"] == o["instrument_id"]]
        assert len(mine) and int(mine.max()) >= int(o["trigger_recv_ns"]) - max_age_ns, \
            f"opportunity {int(o['opp_id'])} used a binance quote older than {MAX_AGE_MS} ms"
    # While binance was silent: the newest binance quote is at most from t_stop, so from
    # t_stop + max age until the venue came back no OPEN / UPDATE may use binance.
    last_before = int(q["recv_ts_ns"][q["recv_ts_ns"] <= t_stop].max())
    t = a["trigger_recv_ns"]
    window = (t > last_before + max_age_ns) & (t < t_cont - 1_000_000_000)
    stale = a[window & involves(a, BINANCE) & (a["state"] != OppState.CLOSED)]
    assert len(stale) == 0, f"{len(stale)} binance opportunities while its quotes were stale"
    others = a[window & ~involves(a, BINANCE) & (a["state"] != OppState.CLOSED)]
    assert len(others) >= 3, "the window held no opportunities at all: nothing was checked"
