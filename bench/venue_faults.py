"""Venue faults through the simulator, on the whole tree: the scenario and its figures.

``arbpipe bench reliability --only faults`` runs it; ``tests/system/test_venue_faults.py`` runs it
and asserts on what it returns.

Scenario (``FAULTS``, a ``[simulator.faults.<venue>]`` table per venue; see
``arbpipe.sim.config.FaultConfig``; the handling is documented in docs/venues.md and
``arbpipe.feeds.feed``):

=============  ==========================================  ===================================
venue          fault                                        handled as
=============  ==========================================  ===================================
bybit-linear   disconnect storm: every connection drops     DISCONNECTED / UP statuses, backoff
               1 s after it opens, 30 % of handshakes        grows while no connection is stable
               refused (HTTP 503)                            (``disconnects``, ``connect_failures``)
okx            planned disconnect notices every 3 s         seamless swap: ``planned_reconnects``,
                                                             no DISCONNECTED
gate           duplicated / reordered / malformed frames    rejected by reason (or, books on, a
                                                            GAP resync): ``duplicate``,
                                                             ``out_of_order``, ``not_json`` ...
kraken         half-open 3 s after connect (no data, no     idle probe unanswered: replaced,
               pong, no FIN)                                 ``halfopen_reconnects``
coinbase       ETH-USDT subscription refused                named in ``last_error``, the others
                                                             resubscribed: ``refused_symbols``
bybit-spot     stall: nothing sent from 5 s after connect   symbols STALE after the watchdog:
                                                             ``stale_symbols``; the detector drops
                                                             the venue on the statuses
binance        none, then its feed is SIGSTOPped: silent    the detector alone stops using its
               without a word (no STATUS either)            quotes once older than max age
binance-usdm   none (the control)                           nothing counted
=============  ==========================================  ===================================

The silent-venue check is made record by record against a recording of the feed rings
(``arbpipe.replay.recorder.Recorder``) and every record of the ``opportunities`` ring: from the
newest binance quote + ``max_quote_age_ms`` until the venue is back, no OPEN / UPDATE may
use binance, and opportunities of the other venues in that window show it was checked.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import time
import urllib.request
import uuid

import numpy as np

from arbpipe.config import DEFAULT_PATH, parse_config
from arbpipe.replay.file import open_recording
from arbpipe.replay.recorder import Recorder
from arbpipe.transport.rings import BroadcastRing
from arbpipe.transport.stateblob import read_blob
from arbpipe.ui.dashboard import STATE_BLOB
from bench.harness import Tree, cli
from shm_layouts import Kind, OppState

BINANCE = 1                 # venue id (arbpipe.symbols.VENUE_IDS)
MAX_AGE_MS = 1500.0         # detector.max_quote_age_ms of the scenario

FAULTS = """
[simulator.faults.bybit-linear]
drop_every_s = 1.0
refuse_connect_p = 0.3
[simulator.faults.okx]
notice_every_s = 3.0
notice_lead_s = 1.0
[simulator.faults.gate]
duplicate_p = 0.1
reorder_p = 0.05
malformed_p = 0.05
[simulator.faults.kraken]
halfopen_after_s = 3.0
halfopen_hold_s = 20.0
[simulator.faults.coinbase]
refuse_symbols = ["ETH-USDT"]
[simulator.faults.bybit-spot]
stall_every_s = 5.0
stall_s = 600.0
"""

# what each faulted venue must show in `arbpipe stat feeds` before the scenario goes on
EXPECTED = {
    "bybit-linear": lambda f: f["disconnects"] >= 2 and f["connect_failures"] >= 1,
    "okx": lambda f: f["planned_reconnects"] >= 1,
    # with L2 books on (the default) a duplicated or reordered depth diff breaks Gate's id
    # chain: the book resyncs (GAP) instead of the frame being rejected as such
    "gate": lambda f: (f["rejects"].get("duplicate", 0) + f["rejects"].get("out_of_order", 0)
                       + f.get("resyncs_by_fault", {}).get("gap", 0) >= 2 and
                       f["rejects"].get("not_json", 0) + f["rejects"].get("bad_shape", 0) >= 1),
    "kraken": lambda f: f["halfopen_reconnects"] >= 1,
    "coinbase": lambda f: f["refused_symbols"] == 1,
    "bybit-spot": lambda f: f["stale_symbols"] >= 1,
}
COUNTERS = ("connects", "reconnects", "disconnects", "planned_reconnects", "silent_reconnects",
            "halfopen_reconnects", "connect_failures", "refused_symbols", "stale_symbols",
            "quotes", "rejects_total")


def fault_config(base_text: str | None = None) -> str:
    """config/arbpipe.toml with the scenario: 40 updates/s per venue, frequent dislocations,
    max quote age ``MAX_AGE_MS``, fast half-open probes on kraken, a 1 s watchdog on
    bybit-spot, a free metrics port, and ``FAULTS``."""
    text = base_text if base_text is not None else open(DEFAULT_PATH).read()
    sub = [(r"(?m)^rate_hz = .*$", "rate_hz = 40.0"),
           (r"(?m)^dislocation_rate_hz = .*$", "dislocation_rate_hz = 0.1"),
           (r"(?m)^max_quote_age_ms = 3000\.0.*$", f"max_quote_age_ms = {MAX_AGE_MS}"),
           (r"(?m)^metrics_port = .*$", "metrics_port = 0"),
           (r"(?m)^\[venues\.kraken\]$", "[venues.kraken]\nprobe_idle_s = 0.5\nprobe_timeout_s = 1.0"),
           (r"(?m)^\[venues\.bybit-spot\]$", "[venues.bybit-spot]\nwatchdog_s = 1.0")]
    for pat, rep in sub:
        text, n = re.subn(pat, rep, text, count=1)
        if n != 1:
            raise ValueError(f"config text has no line matching {pat!r}")
    return text + FAULTS


def involves(opps: np.ndarray, venue: int) -> np.ndarray:
    return (opps["buy_venue"] == venue) | (opps["sell_venue"] == venue)


class OppsReader:
    """Every record of the ``opportunities`` broadcast ring from now on (a reader slot)."""

    def __init__(self, instance: str):
        self.ring = BroadcastRing.attach("opportunities", instance=instance)
        self.ring.join("venue-faults")
        self.buf = self.ring.empty(1024)
        self.got: list[np.ndarray] = []

    def poll(self, timeout: float = 0.2) -> int:
        n = self.ring.pop_batch(self.buf, timeout=timeout)
        if n:
            self.got.append(self.buf[:n].copy())
        return n

    def all(self) -> np.ndarray:
        return np.concatenate(self.got) if self.got else self.ring.empty(0)

    def close(self) -> None:
        self.ring.close()


def _wait(cond, timeout: float, what: str, pump):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pump()
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


_METRICS = ("arbpipe_venue_disconnects_total", "arbpipe_venue_planned_reconnects_total",
            "arbpipe_venue_halfopen_reconnects_total", "arbpipe_venue_connect_failures_total",
            "arbpipe_venue_stale_symbols")


def _fault_metrics(instance: str) -> dict | None:
    """The fault counters as Prometheus shows them (the dashboard's /metrics, port from its
    state blob): {metric: {venue: value}}; None until the endpoint answers with them."""
    port = ((read_blob(instance, STATE_BLOB) or {}).get("metrics") or {}).get("port")
    if not port:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    out: dict = {m: {} for m in _METRICS}
    for line in text.splitlines():
        m = re.match(r'^(\w+)\{venue="([^"]+)"\} (\S+)$', line)
        if m and m.group(1) in out:
            out[m.group(1)][m.group(2)] = float(m.group(3))
    return out if all(out.values()) else None


def run(instance: str | None = None, workdir: str | None = None, log=print) -> dict:
    """The scenario on a fresh tree; -> its figures (``ok`` False with ``error`` when a
    step timed out). The tree is always taken down."""
    instance = instance or "flt" + uuid.uuid4().hex[:8]
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="arbpipe-faults-")
    cfg_path = os.path.join(workdir, "faults.toml")
    text = fault_config()
    with open(cfg_path, "w") as f:
        f.write(text)
    tree = Tree(instance, workdir, cfg_path)
    out: dict = {"ok": False, "max_quote_age_ms": MAX_AGE_MS, "faults": FAULTS.strip()}
    stopped = None
    opps = recorder = None
    t0 = time.monotonic()
    try:
        tree.up()
        log(f"faults: tree up ({time.monotonic() - t0:.0f} s); waiting for every fault")
        opps = OppsReader(instance)
        rec_path = os.path.join(workdir, "feeds.arbrec")
        recorder = Recorder(rec_path, instance=instance, cfg=parse_config(text))
        rec_start = time.time_ns()

        def pump():
            recorder.poll()
            opps.poll(0.05)

        def feeds():
            rows = json.loads(cli("stat", "feeds", "--json", "--instance", instance,
                                   env=tree.env).stdout)
            return {r["venue"]: r for r in rows}

        def handled():
            f = feeds()
            return len(f) >= 8 and all(ok(f[v]) for v, ok in EXPECTED.items()) and f
        try:
            f = _wait(handled, 180, "every venue fault in `arbpipe stat feeds`", pump)
        except TimeoutError:
            f = feeds()
            out["missing"] = sorted(v for v, ok in EXPECTED.items() if v not in f or not ok(f[v]))
            raise
        out["seconds_to_all_faults"] = round(time.monotonic() - t0, 1)
        _wait(lambda: all(r["quotes"] > 0 for r in feeds().values()), 60,
              "every venue quoting", pump)
        f = feeds()
        out["venues"] = {v: {k: r[k] for k in COUNTERS} | {"rejects": r["rejects"],
                                                           "last_error": r["last_error"]}
                         for v, r in sorted(f.items())}
        out["stat_feeds_text"] = cli("stat", "feeds", "--instance", instance,
                                      env=tree.env).stdout
        out["metrics"] = _wait(lambda: _fault_metrics(instance), 30, "the dashboard's metrics",
                               pump)
        det = json.loads(cli("stat", "detector", "--json", "--instance", instance,
                              env=tree.env).stdout)

        # -- binance silent without a word: its feed process stopped ----------------------
        _wait(lambda: involves(opps.all(), BINANCE).any(), 120, "an opportunity on binance", pump)
        feed_pid = next(p["pid"] for p in tree.status()["processes"]
                        if p["name"] == "feed.binance")
        log("faults: SIGSTOP feed.binance")
        os.kill(feed_pid, signal.SIGSTOP)
        stopped = feed_pid
        t_stop = time.time_ns()
        age_ns = int(MAX_AGE_MS * 1e6)

        def others_late():
            # opportunities of other venues inside (stop + max age, now - 1 s): the checked
            # window closes 1 s before the venue comes back
            a = opps.all()
            t = a["trigger_recv_ns"]
            late = (t > t_stop + age_ns) & (t < time.time_ns() - 1_000_000_000)
            return (late & ~involves(a, BINANCE) & (a["state"] != OppState.CLOSED)).sum() >= 3
        _wait(others_late, 120, "opportunities of other venues after max age", pump)
        det_stopped = json.loads(cli("stat", "detector", "--json", "--instance", instance,
                                      env=tree.env).stdout)
        os.kill(feed_pid, signal.SIGCONT)
        stopped = None
        t_cont = time.time_ns()
        log("faults: SIGCONT feed.binance")
        _wait(lambda: ((opps.all()["trigger_recv_ns"] > t_cont) &
                       involves(opps.all(), BINANCE)).any(), 120,
              "binance opportunities again", pump)
        pump()
        recorder.writer.close()
        out["detector"] = {k: det_stopped[k] - det.get(k, 0) for k in
                           ("filter_stale", "filter_status", "closed_quote_stale",
                            "closed_venue_down", "opened")}
        out["detector_before_stop"] = {k: det[k] for k in
                                       ("status", "filter_stale", "filter_status",
                                        "closed_quote_stale", "closed_venue_down", "opened")}

        # -- the record-by-record check ---------------------------------------------------
        rec = open_recording(rec_path).records
        q = rec[(rec["kind"] == Kind.QUOTE) & (rec["venue_id"] == BINANCE)]
        a = opps.all()
        live = a[(a["state"] != OppState.CLOSED) & involves(a, BINANCE) &
                 (a["trigger_recv_ns"] >= rec_start + age_ns)]
        too_old = 0
        for o in live:
            mine = q["recv_ts_ns"][q["instrument_id"] == o["instrument_id"]]
            if not len(mine) or int(mine.max()) < int(o["trigger_recv_ns"]) - age_ns:
                too_old += 1
        last_before = int(q["recv_ts_ns"][q["recv_ts_ns"] <= t_stop].max()) if len(q) else 0
        t = a["trigger_recv_ns"]
        window = (t > last_before + age_ns) & (t < t_cont - 1_000_000_000)
        notclosed = a["state"] != OppState.CLOSED
        used = a[involves(a, BINANCE) & notclosed & (t > last_before) & (t < t_cont - 1_000_000_000)]
        out["silent_venue"] = {
            "venue": "binance", "stopped_s": round((t_cont - t_stop) / 1e9, 1),
            "binance_quotes_recorded": int(len(q)),
            "binance_opportunities_checked": int(len(live)),
            "used_older_than_max_age": too_old,
            "opportunities_while_stale": int((window & involves(a, BINANCE) & notclosed).sum()),
            "other_opportunities_in_window": int((window & ~involves(a, BINANCE) & notclosed).sum()),
            "last_use_after_last_quote_ms": round((int(used["trigger_recv_ns"].max()) - last_before)
                                                  / 1e6, 1) if len(used) else None,
            "recorder_missed": int(recorder.missed),
        }
        sv = out["silent_venue"]
        out["ok"] = (sv["used_older_than_max_age"] == 0 and sv["opportunities_while_stale"] == 0
                     and sv["other_opportunities_in_window"] > 0 and sv["recorder_missed"] == 0)
    except TimeoutError as e:
        out["error"] = str(e)
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        for x in (opps, recorder):
            try:
                if x is not None:
                    x.close()
            except Exception:  # noqa: BLE001 - the tree must go down whatever happened
                pass
        pids = tree.pids()
        tree.down()
        out["pids"] = pids
        out["wall_s"] = round(time.monotonic() - t0, 1)
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def render(r: dict) -> str:
    if not r.get("venues"):
        return f"venue faults: {r.get('error', 'no result')} (missing: {r.get('missing')})"
    lines = ["venue faults (simulator), counts from `arbpipe stat feeds`:"]
    for v, c in r["venues"].items():
        nz = {k: x for k, x in c.items() if x and k not in ("last_error", "quotes")}
        lines.append(f"  {v:<13} quotes {c['quotes']:>7}  " +
                     ", ".join(f"{k}={x}" for k, x in nz.items()))
    s = r.get("silent_venue")
    if s:
        lines.append(f"  silent venue ({s['venue']}, {s['stopped_s']} s): "
                     f"{s['binance_opportunities_checked']} opportunities checked, "
                     f"{s['used_older_than_max_age']} used a quote older than "
                     f"{r['max_quote_age_ms']:.0f} ms, {s['opportunities_while_stale']} while "
                     f"stale; last use {s['last_use_after_last_quote_ms']} ms after its last quote")
    if r.get("error"):
        lines.append(f"  error: {r['error']}")
    return "\n".join(lines)
