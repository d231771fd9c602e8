"""Feed runtime against the venue simulator over real websockets, into real SPSC rings and a
real counters segment in /dev/shm; ``procs.feed`` as a real subprocess for ``--print`` and
SIGTERM. Conditions are waited for with generous deadlines; nothing asserts a duration.
"""
from __future__ import annotations

import json
import logging
import re
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from arbpipe import config
from arbpipe.feeds.feed import Feed
from arbpipe.feeds.options import FeedOptions
from arbpipe.feeds.runtime import UsageError, base_url, build_adapter
from arbpipe.feeds.sinks import RingSink
from arbpipe.feeds.stats import FeedStatsWriter, read_feed_stats, render_feed_stats
from arbpipe.transport.rings import SpscRing
from arbpipe.sim.config import make_config
from arbpipe.sim.server import SimulatorThread
from arbpipe.sim.config import ASSET_TABLE, VENUES, default_instruments
from arbpipe.symbols import (PERP_ID_BIT, REGISTERED, VENUE_IDS, SymbolMap, instrument_id_for,
                             instrument_name, native_symbol, venue_name)
from shm_layouts import MARKET_UPDATE, Flag, Kind, VenueStatus
from shm_layouts.records import (MARKET_UPDATE_FUNDING, MARKET_UPDATE_STATUS, STATUS_REASON_MASK,
                                 StatusReason)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEADLINE = 20.0
CONFIG_TOML = """
instruments = ["BTC/USDT", "ETH/USDT"]
[venues.okx]
taker_fee_bps = 10.0
maker_fee_bps = 8.0
watchdog_s = 20.0
[venues.okx.perp]
taker_fee_bps = 5.0
maker_fee_bps = 2.0
funding_interval_s = 28800
[venues.gate]
taker_fee_bps = 20.0
maker_fee_bps = 20.0
"""


# -- helpers -------------------------------------------------------------------------------------
@contextmanager
def simulator(venues, **kw):
    sim = SimulatorThread(make_config(venues, **kw)).start()
    try:
        yield sim
    finally:
        sim.stop()


class Running:
    """A Feed in this process writing into a fresh ring + stats segment; ``records`` collects
    everything popped from the ring (a numpy MARKET_UPDATE array)."""

    def __init__(self, feed, ring, stats, instance):
        self.feed, self.ring, self.stats, self.instance = feed, ring, stats, instance
        self._out = np.zeros(ring.capacity * 8, np.int64)
        self._chunks = []

    def drain(self) -> np.ndarray:
        while True:
            n = self.ring.pop_words(self._out)
            if not n:
                break
            self._chunks.append(self._out[:n * 8].copy().view(MARKET_UPDATE))
        return self.records

    @property
    def records(self) -> np.ndarray:
        if not self._chunks:
            return np.zeros(0, MARKET_UPDATE)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]

    def shm_stats(self) -> dict:
        rows = read_feed_stats(self.instance, f"feed.{self.feed.venue}.stats")
        assert len(rows) == 1, rows
        return rows[0]

    def wait(self, pred, what: str, timeout: float = DEADLINE):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            got = pred(self)
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{self.feed.venue}: timed out waiting for {what}; "
                             f"counters {self.feed.counters()}")


@contextmanager
def running(sim, venue, instance, symbols=None, capacity=1 << 14, **opts):
    adapter, _ = build_adapter(venue, symbols)
    ring = SpscRing.create(f"feed.{venue}", capacity, "MarketUpdate", policy="drop",
                           instance=instance)
    stats = FeedStatsWriter.create(instance, f"feed.{venue}.stats", venue, adapter.venue_id,
                                   len(adapter.sockets()))
    opts.setdefault("backoff_initial_s", 0.05)
    opts.setdefault("backoff_max_s", 1.0)
    feed = Feed(adapter, sim.urls[venue], RingSink(ring, adapter.venue_id), stats=stats,
                options=FeedOptions(**opts))
    r = Running(feed, ring, stats, instance)
    feed.start()
    try:
        yield r
    finally:
        feed.close()
        assert feed.join(1.0), "feed thread did not stop"
        assert not any(w.thread.is_alive() for w in feed.workers)
        stats.unlink()
        stats.close()
        ring.unlink()
        ring.close()


def statuses(recs, instrument_id=0):
    st = recs[recs["kind"] == Kind.STATUS].view(MARKET_UPDATE_STATUS)
    return st[st["instrument_id"] == instrument_id] if instrument_id is not None else st


def kinds(recs, kind):
    return recs[recs["kind"] == int(kind)]


def shm_entries(instance):
    return sorted(e for e in os.listdir("/dev/shm") if f"arbpipe.{instance}." in e)


# -- symbol map ----------------------------------------------------------------------------------
def test_symbol_map_ids_are_fixed_and_match_the_simulator():
    assert VENUE_IDS == {"binance": 1, "binance-usdm": 2, "bybit-spot": 3, "bybit-linear": 4,
                         "okx": 5, "coinbase": 6, "kraken": 7, "gate": 8}
    # registered ids are positions in the append-only list: these never change
    assert REGISTERED[:3] == ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    assert instrument_id_for("BTC/USDT") == 1 and instrument_id_for("DOT/USDT") == 10
    assert instrument_id_for("BTC/USD") == 11
    assert instrument_id_for("BTC/USDT", perp=True) == 1 | PERP_ID_BIT
    # unregistered names: a pure function of the name (same after a restart), below bit 24
    assert instrument_id_for("FOO/USDT") == 0xCACFF9
    m = SymbolMap.default()
    assert len(m) == 90
    for venue in VENUES:
        sim = [(i.native, i.ct_val or 1.0, i.kind == "perp") for i in default_instruments(venue)]
        assert [(x.native, x.contract_size, x.perp) for x in m.venue_listings(venue)] == sim, venue
        for x in m.venue_listings(venue):
            vid, iid = m.lookup(venue, x.native)
            assert (vid, iid) == (VENUE_IDS[venue], instrument_id_for(x.canonical, x.perp))
            assert m.native(vid, iid) == x.native and m.canonical(iid) == x.canonical
            assert m.by_id(vid, iid) is x
    # one canonical instrument across venues; a perp market carries PERP_ID_BIT
    assert m.lookup("binance", "BTCUSDT")[1] == m.lookup("okx", "BTC-USDT")[1] == \
        m.lookup("gate", "BTC_USDT")[1] == 1
    assert m.lookup("binance-usdm", "BTCUSDT")[1] == m.lookup("okx", "BTC-USDT-SWAP")[1] == \
        1 | PERP_ID_BIT
    assert m.lookup("coinbase", "BTC-USD")[1] == m.lookup("kraken", "BTC/USD")[1] == 11
    assert m.listing("okx", "ETH-USDT-SWAP").contract_size == 0.1
    assert instrument_name(2 | PERP_ID_BIT) == "ETH/USDT-PERP" and venue_name(5) == "okx"
    # rebuilding (another process, a restart) gives the same map
    assert SymbolMap.from_records(m.to_records()).to_records() == m.to_records()


def test_symbol_map_from_the_pipeline_config(tmp_path):
    assert config.PERP_ID_BIT == PERP_ID_BIT and config.VENUE_IDS == VENUE_IDS
    path = tmp_path / "c.toml"
    path.write_text(CONFIG_TOML)
    cfg = config.load_config(path)
    m = SymbolMap.from_config(cfg)
    for venue in cfg.enabled_venues():
        for vi in cfg.symbol_map(venue):
            assert m.lookup(venue, vi.native) == (cfg.venue_id(venue), vi.instrument_id)
    assert m.listing("okx", "ETH-USDT-SWAP").contract_size == 0.1
    # the default map publishes the same ids as a config listing the same instruments
    d = SymbolMap.default()
    for x in m:
        if d.lookup(x.venue, x.native):
            assert d.lookup(x.venue, x.native) == m.lookup(x.venue, x.native)


def test_symbol_resolution_of_user_input():
    m = SymbolMap.default()
    from arbpipe.feeds.venues.registry import get
    assert m.resolve("binance-usdm", "BTC/USDT").instrument_id == 1 | PERP_ID_BIT
    assert m.resolve("okx", "ETH/USDT").native == "ETH-USDT"
    assert m.resolve("okx", "eth/usdt:perp").native == "ETH-USDT-SWAP"
    assert m.resolve("binance", "btcusdt").instrument_id == 1
    foo = m.resolve("binance", "FOOUSDT", get("binance").native_to_canonical)
    assert (foo.native, foo.canonical) == ("FOOUSDT", "FOO/USDT")
    assert m.lookup("binance", "FOOUSDT") == (1, instrument_id_for("FOO/USDT"))
    odd = m.resolve("binance", "XYZ", get("binance").native_to_canonical)
    assert odd.canonical == "XYZ@binance" and 1 << 23 <= odd.instrument_id < 1 << 24
    assert native_symbol("gate", "PEPE/USDT") == "PEPE_USDT"
    with pytest.raises(ValueError):
        native_symbol("binance", "BTC/USDT", perp=True)
    with pytest.raises(ValueError):
        m.resolve("gate", "BTC/USDT:PERP")
    assert base_url("ws://127.0.0.1:9/x/y?z=1", "wss://a") == "ws://127.0.0.1:9"
    with pytest.raises(UsageError):
        base_url("127.0.0.1:9", "wss://a")
    with pytest.raises(UsageError):
        build_adapter("nosuchvenue")


# -- every venue into a ring ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def all_venues_sim():
    with simulator(list(VENUES), seed=7, rate_hz=40) as sim:
        yield sim


def _base_of(iid, smap):
    return smap.canonical(int(iid)).partition("/")[0]


@pytest.mark.parametrize("venue", VENUES)
def test_each_venue_into_ring(all_venues_sim, instance, venue):
    smap = SymbolMap.default()
    expected = {x.instrument_id for x in smap.venue_listings(venue)}
    perp = venue in ("binance-usdm", "bybit-linear", "okx")
    want_distinct = 5
    with running(all_venues_sim, venue, instance) as r:
        def done(r):
            q = kinds(r.records, Kind.QUOTE)
            ok = len(set(q["instrument_id"].tolist())) >= want_distinct
            if perp:
                ok = ok and len(kinds(r.records, Kind.FUNDING)) > 0
            return ok and len(statuses(r.records)) > 0
        r.wait(done, "quotes of 5 instruments (and funding on perp venues)")
        st = r.wait(lambda r: (lambda s: s["venue_status"] == VenueStatus.UP and s["acks"] > 0
                               and s["updates"] > 0 and s)(r.shm_stats()), "counters in shm")
        recs = r.records
    now = time.time_ns()
    assert (recs["venue_id"] == VENUE_IDS[venue]).all()
    assert np.array_equal(recs["seq"], np.arange(1, len(recs) + 1, dtype=np.uint64)), \
        "seq must count records 1, 2, 3, ..."
    assert (np.abs(recs["recv_ts_ns"] - now) < 120e9).all()
    q = kinds(recs, Kind.QUOTE)
    assert set(q["instrument_id"].tolist()) <= expected
    perp_ids = {x.instrument_id for x in smap.venue_listings(venue) if x.perp}
    assert all(bool(i & PERP_ID_BIT) == (i in perp_ids) for i in q["instrument_id"].tolist())
    for rec in q:
        bid, ask = float(rec["bid"]), float(rec["ask"])
        mid = (bid + ask) / 2
        base = _base_of(rec["instrument_id"], smap)
        p0 = ASSET_TABLE[base][0]
        assert 0 < bid <= ask and (ask - bid) / mid < 0.01, rec
        assert 0.8 * p0 < mid < 1.2 * p0, (base, rec)
        # sizes are base units (OKX SWAP contracts x ctVal): notional near the sim's 50k USD
        for qty in (float(rec["bid_qty"]), float(rec["ask_qty"])):
            assert 1_000 < qty * mid < 2_000_000, (venue, base, qty, mid)
        if rec["flags"] & Flag.NO_EXCHANGE_TS:
            assert rec["exchange_ts_ns"] == 0
        else:
            assert abs(int(rec["exchange_ts_ns"]) - int(rec["recv_ts_ns"])) < 60e9
    if perp:
        f = kinds(recs, Kind.FUNDING).view(MARKET_UPDATE_FUNDING)
        assert set(f["instrument_id"].tolist()) <= perp_ids
        assert (np.abs(f["funding_rate"]) < 0.01).all()
        assert (f["next_funding_ns"] > now - 3600e9).all()
        assert set(f["funding_interval_s"].tolist()) <= {3600, 14400, 28800}
    up = statuses(recs)
    assert int(up["status"][0]) == VenueStatus.UP
    assert st["venue"] == venue and st["venue_id"] == VENUE_IDS[venue]
    assert st["venue_status"] == VenueStatus.UP
    assert st["frames"] > 0 and st["updates"] > 0 and st["acks"] > 0 and st["errors"] == 0
    n_sock = 2 if venue == "binance-usdm" else 1
    assert st["n_sockets"] == n_sock and st["connected_mask"] == (1 << n_sock) - 1
    assert st["reconnects"] == 0 and st["connects"] == n_sock


# -- faults -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("venue", ["gate", "binance-usdm"])
def test_dropped_connection_reconnects_with_status_records(instance, venue):
    """Gate: a fresh subscribe frame (its time field) per reconnect; USD-M: two sockets."""
    with simulator([venue], seed=3, rate_hz=60, faults={venue: {"drop_every_s": 1.5}}) as sim, \
            running(sim, venue, instance) as r:
        def resumed(r):
            recs = r.records
            st = statuses(recs)
            down = np.flatnonzero(st["status"] == VenueStatus.DISCONNECTED)
            if not len(down):
                return False
            up_after = np.flatnonzero((st["status"] == VenueStatus.UP) &
                                      (st["seq"] > st["seq"][down[0]]))
            if not len(up_after):
                return False
            seq_up = st["seq"][up_after[0]]
            return (kinds(recs, Kind.QUOTE)["seq"] > seq_up).any()
        r.wait(resumed, "DISCONNECTED, then UP, then quotes again")
        r.wait(lambda r: r.shm_stats()["reconnects"] >= 1, "reconnects counted in shm")
        st = r.shm_stats()
        assert st["disconnects"] >= 1
        down = statuses(r.records)
        d = down[down["status"] == VenueStatus.DISCONNECTED][0]
        assert d["status_reason"] & STATUS_REASON_MASK == StatusReason.CONNECTION_LOST


def test_planned_disconnect_notice_swaps_without_gap(instance):
    with simulator(["okx"], seed=5, rate_hz=60,
                   faults={"okx": {"notice_every_s": 1.0, "notice_lead_s": 1.0}}) as sim, \
            running(sim, "okx", instance) as r:
        st = r.wait(lambda r: (lambda s: s["reconnects"] >= 2 and s)(r.shm_stats()),
                    "two planned reconnects in shm")
        first = r.records["seq"].max()
        r.wait(lambda r: (kinds(r.records, Kind.QUOTE)["seq"] > first).any(), "quotes after")
    assert st["planned_reconnects"] >= 2 and st["disconnects"] == 0 and st["connects"] >= 3
    s = statuses(r.records)
    assert not (s["status"] == VenueStatus.DISCONNECTED).any(), "a swap must not publish a gap"


def test_stall_marks_symbols_stale_without_reconnect_storm(instance, caplog):
    caplog.set_level(logging.INFO, logger="arbpipe.feed")
    with simulator(["gate"], seed=9, rate_hz=100,
                   faults={"gate": {"stall_every_s": 1.5, "stall_s": 3.0}}) as sim, \
            running(sim, "gate", instance, watchdog_s=1.0) as r:
        def stale_then_up(r):
            s = statuses(r.records, None)
            s = s[s["instrument_id"] != 0]
            stale = s[s["status"] == VenueStatus.STALE]
            if not len(stale):
                return False
            return ((s["status"] == VenueStatus.UP) & (s["seq"] > stale["seq"][0])).any()
        r.wait(stale_then_up, "a symbol STALE, then UP again")
        r.wait(lambda r: r.shm_stats()["stale_symbols"] == 0, "stale symbols back to 0")
        st = r.shm_stats()
    assert st["connects"] == 1 and st["reconnects"] == 0 and st["disconnects"] == 0
    assert st["silent_reconnects"] == 0
    text = caplog.text
    assert "marked stale" in text and "updates again" in text
    natives = {i.native for i in r.feed.adapter.instruments}
    assert any(n in text for n in natives), "stale symbols must be named"


def test_every_symbol_silent_replaces_the_connection(instance):
    with simulator(["kraken"], seed=9, rate_hz=50,
                   faults={"kraken": {"stall_every_s": 1.0, "stall_s": 60.0}}) as sim, \
            running(sim, "kraken", instance, watchdog_s=0.5, silent_reconnect_s=1.0) as r:
        r.wait(lambda r: r.feed.counters()["silent_reconnects"] >= 1, "a silent reconnect")
        w = r.feed.workers[0]
        r.wait(lambda r: w.flowing, "data on the new connection")
    s = statuses(r.records)
    assert (s["status_reason"][s["status"] == VenueStatus.DISCONNECTED] & STATUS_REASON_MASK
            == StatusReason.SILENT).any()


def test_half_open_connection_is_probed_and_replaced(instance, caplog):
    """The simulator's okx goes half-open 1 s after each connect (no data, no pong, no FIN).
    The idle probe finds it and replaces the connection; quotes flow again."""
    caplog.set_level(logging.INFO, logger="arbpipe.feed")
    with simulator(["okx"], seed=11, rate_hz=80,
                   faults={"okx": {"halfopen_after_s": 1.0, "halfopen_hold_s": 20.0}}) as sim, \
            running(sim, "okx", instance, probe_idle_s=0.5, probe_timeout_s=1.0) as r:
        r.wait(lambda r: r.shm_stats()["halfopen_reconnects"] >= 2, "two half-open replacements")
        last = r.records["seq"].max()
        r.wait(lambda r: (kinds(r.records, Kind.QUOTE)["seq"] > last).any(), "quotes after")
        st = r.shm_stats()
        text = render_feed_stats(read_feed_stats(instance))
    assert "half_open=" in text and "okx" in text
    assert st["connects"] >= 3 and st["disconnects"] == 0
    down = statuses(r.records)
    down = down[down["status"] == VenueStatus.DISCONNECTED]
    assert len(down) >= 2 and (down["status_reason"] & STATUS_REASON_MASK == StatusReason.HALF_OPEN).all()
    assert "half-open: nothing received" in caplog.text


def test_stalled_but_live_venue_answers_the_probe(instance):
    """The control: a stall (no data, but the server still answers pings) is probed and
    left alone; its symbols only go STALE."""
    with simulator(["gate"], seed=9, rate_hz=100,
                   faults={"gate": {"stall_every_s": 1.0, "stall_s": 4.0}}) as sim, \
            running(sim, "gate", instance, watchdog_s=1.0, probe_idle_s=0.5,
                    probe_timeout_s=1.0) as r:
        r.wait(lambda r: r.feed.counters()["probes"] >= 2 and r.shm_stats()["stale_symbols"] > 0,
               "probes sent during the stall, symbols stale")
        r.wait(lambda r: r.shm_stats()["stale_symbols"] == 0, "data again after the stall")
        st = r.shm_stats()
    assert st["halfopen_reconnects"] == 0 and st["reconnects"] == 0 and st["disconnects"] == 0


def test_disconnect_storm_backs_off(instance, caplog):
    """Every connection drops 0.2 s after it opens and half the handshakes are refused
    (HTTP 503): the backoff keeps growing to its cap instead of hammering the venue."""
    caplog.set_level(logging.INFO, logger="arbpipe.feed")
    faults = {"bybit-spot": {"drop_every_s": 0.2, "refuse_connect_p": 0.5}}
    with simulator(["bybit-spot"], seed=12, rate_hz=100, faults=faults) as sim, \
            running(sim, "bybit-spot", instance, backoff_initial_s=0.02, backoff_max_s=0.4,
                    stable_s=30.0) as r:
        w = r.feed.workers[0]
        r.wait(lambda r: w.attempt >= 7, "seven attempts in a row without a stable connection")
        st = r.shm_stats()
        refused = sim.call(lambda: sim.simulator.hubs["bybit-spot"].refused_connects)
    assert st["disconnects"] >= 1 and st["connect_failures"] >= 1 and refused >= 1
    assert st["connect_failures"] <= refused        # every failure here is an injected refusal
    delays = [float(m) for m in re.findall(r"reconnect attempt \d+ in ([0-9.]+) s", caplog.text)]
    # the delay of attempt k is initial x 2**k (x jitter in [0.5, 1]), capped: with 7 attempts
    # the cap is reached; a storm never retries at the initial delay throughout
    assert delays and max(delays) >= 0.4 * 0.5 and max(delays) <= 0.4


@pytest.mark.parametrize("venue,native", [("okx", "ETH-USDT"), ("bybit-spot", "ETHUSDT"),
                                          ("kraken", "ETH/USD"), ("gate", "ETH_USDT"),
                                          ("coinbase", "ETH-USD")])
def test_refused_symbol_is_reported_by_name(instance, caplog, venue, native):
    caplog.set_level(logging.INFO, logger="arbpipe.feed")
    with simulator([venue], seed=2, rate_hz=50, faults={venue: {"refuse_symbols": [native]}}) as sim, \
            running(sim, venue, instance) as r:
        r.wait(lambda r: native in r.feed.refused, f"{native} refused")
        r.wait(lambda r: r.shm_stats()["refused_symbols"] >= 1, "refusal in shm")
        # the others still stream (coinbase fails the whole subscribe message: resubscribed)
        refused_id = r.feed.adapter.by_native[native].instrument_id
        others = {i.instrument_id for i in r.feed.adapter.instruments} - {refused_id}

        def quoted(r):
            return {int(i) for i in kinds(r.records, Kind.QUOTE)["instrument_id"]}
        r.wait(lambda r: quoted(r) >= others, "every other symbol quoting")
        st = r.shm_stats()
    assert st["errors"] >= 1 and native in st["last_error"]
    assert any(rec.levelno >= logging.ERROR and native in rec.getMessage()
               for rec in caplog.records)
    assert list(r.feed.refused) == [native]
    assert refused_id not in quoted(r), "the refused symbol streamed"


def test_unknown_binance_symbol_is_named_by_the_watchdog(instance, caplog):
    caplog.set_level(logging.INFO, logger="arbpipe.feed")
    foo = instrument_id_for("FOO/USDT")
    with simulator(["binance"], seed=4, rate_hz=200) as sim, \
            running(sim, "binance", instance, symbols=["BTC/USDT", "FOOUSDT"], watchdog_s=1.0) as r:
        r.wait(lambda r: (statuses(r.records, foo)["status"] == VenueStatus.STALE).any(),
               "STALE status of FOOUSDT")
        c = r.feed.counters()
        r.wait(lambda r: r.shm_stats()["stale_symbols"] >= 1, "stale count in shm")
        quotes = kinds(r.records, Kind.QUOTE)
    assert "FOOUSDT" in c["stale"] and "BTCUSDT" not in c["stale"]
    assert set(quotes["instrument_id"].tolist()) == {1}
    assert any("FOOUSDT" in rec.getMessage() and "stale" in rec.getMessage()
               for rec in caplog.records)
    assert c["reconnects"] == 0


def test_malformed_duplicate_reordered_counted_by_reason_in_shm(instance):
    faults = {"gate": {"malformed_p": 0.15, "duplicate_p": 0.15, "reorder_p": 0.1}}
    with simulator(["gate"], seed=6, rate_hz=150, faults=faults) as sim, \
            running(sim, "gate", instance) as r:
        def counted(r):
            rej = r.shm_stats()["rejects"]
            return rej.get("duplicate", 0) >= 3 and rej.get("out_of_order", 0) >= 1 and \
                (rej.get("not_json", 0) + rej.get("bad_shape", 0)) >= 3
        r.wait(counted, "duplicate, out_of_order and malformed counts in shm")
        st = r.shm_stats()
    assert st["rejects_total"] == sum(st["rejects"].values())
    assert st["reconnects"] == 0 and st["updates"] > 0


def test_heartbeats_keep_an_idle_connection_alive(instance):
    """OKX closes a connection 2 s without traffic; the market is idle (one update per
    50 s). With pings every 0.5 s the connection stays; with the venue's 20 s it does not
    (the control, so this test can fail)."""
    timeouts = {"okx": {"idle_timeout_s": 2.0, "repush_s": 1000.0, "funding_push_s": 1000.0}}
    with simulator(["okx"], seed=8, rate_hz=0.02, timeouts=timeouts) as sim:
        with running(sim, "okx", instance, ping_interval_s=0.5) as pinged:
            adapter, _ = build_adapter("okx")
            ring2 = SpscRing.create("ctrl", 1024, "MarketUpdate", policy="drop", instance=instance)
            ctrl = Feed(adapter, sim.urls["okx"], RingSink(ring2, adapter.venue_id),
                        options=FeedOptions(backoff_initial_s=0.05)).start()
            try:
                deadline = time.monotonic() + DEADLINE
                while ctrl.counters()["disconnects"] < 1 and time.monotonic() < deadline:
                    time.sleep(0.1)
                cc = ctrl.counters()
            finally:
                ctrl.close()
                ring2.unlink()
                ring2.close()
            pc = pinged.feed.counters()
            st = pinged.shm_stats()
    assert cc["disconnects"] >= 1, "control: without pings the idle timeout must close it"
    assert pc["connects"] == 1 and pc["disconnects"] == 0 and pc["reconnects"] == 0, pc
    assert st["connected_mask"] == 1


# -- the process ----------------------------------------------------------------------------------
def _env(instance):
    env = dict(os.environ, ARBPIPE_INSTANCE=instance, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_print_mode_writes_json_lines(instance):
    with simulator(["kraken"], seed=1, rate_hz=50) as sim:
        url = sim.urls["kraken"] + "/this/path/is/ignored"
        p = subprocess.Popen([sys.executable, "-m", "procs.feed", "kraken", "--url", url,
                              "--print", "--symbol", "BTC/USD", "--symbol", "ETH/USD"],
                             cwd=ROOT, env=_env(instance), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        lines: list[dict] = []

        def read():
            for line in p.stdout:
                lines.append(json.loads(line))
                if sum(1 for x in lines if x["kind"] == "quote") >= 6:
                    return
        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(DEADLINE)
        try:
            assert shm_entries(instance) == [], "--print must not create shared memory"
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            err = p.stderr.read()
        t.join(5)
    assert rc == 0, err
    quotes = [x for x in lines if x["kind"] == "quote"]
    assert len(quotes) >= 6, (lines, err)
    for x in quotes:
        assert x["venue"] == "kraken"
        assert (x["symbol"], x["instrument"]) in {("BTC/USD", "BTC/USD"), ("ETH/USD", "ETH/USD")}
        assert x["instrument_id"] == instrument_id_for(x["instrument"]) and x["market"] == "spot"
        assert 0 < x["bid"] <= x["ask"] and x["bid_qty"] >= 0 and x["ask_qty"] >= 0
        assert isinstance(x["recv_ts"], int) and abs(x["recv_ts"] - time.time_ns()) < 120e9
        assert x["exchange_ts"] > 0
    assert any(x["kind"] == "status" and x["status"] == "UP" for x in lines)


def test_sigterm_leaves_no_segments(instance, tmp_path):
    """``--config``: the config's instruments and ids (OKX SWAP with PERP_ID_BIT)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG_TOML)
    with simulator(["okx"], seed=1, rate_hz=50) as sim:
        p = subprocess.Popen([sys.executable, "-m", "procs.feed", "okx", "--url", sim.urls["okx"],
                              "--instance", instance, "--config", str(cfg)], cwd=ROOT,
                             env=_env(instance), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            rows = []
            while time.monotonic() < deadline and p.poll() is None:
                rows = read_feed_stats(instance, "feed.okx.stats")
                if rows and rows[0]["updates"] > 10:
                    break
                time.sleep(0.1)
            assert rows and rows[0]["updates"] > 10, (rows, p.poll())
            assert rows[0]["pid"] == p.pid and rows[0]["venue_status"] == VenueStatus.UP
            ring = SpscRing.attach("feed.okx", instance=instance)
            out = np.zeros(1024 * 8, np.int64)
            n = ring.pop_words(out)
            ring.close()
            assert n > 0
            recs = out[:n * 8].view(MARKET_UPDATE)
            assert (recs["venue_id"] == VENUE_IDS["okx"]).all()
            q = kinds(recs, Kind.QUOTE)
            assert set(q["instrument_id"].tolist()) <= {1, 2, 1 | PERP_ID_BIT, 2 | PERP_ID_BIT}
            assert rows[0]["symbols"] == 4
            assert "arbpipe." + instance + ".feed.okx" in shm_entries(instance)
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            err = p.stderr.read()
            p.stdout.close()
            p.stderr.close()
    assert rc == 0, err
    assert shm_entries(instance) == [], shm_entries(instance)
    assert "connected to" in err


def test_second_feed_on_the_same_ring_is_refused(instance):
    with simulator(["gate"], seed=1, rate_hz=20) as sim, running(sim, "gate", instance):
        p = subprocess.run([sys.executable, "-m", "procs.feed", "gate", "--url", sim.urls["gate"],
                            "--instance", instance], cwd=ROOT, env=_env(instance),
                           capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "another feed handler" in p.stderr


def test_bad_usage_exits_2(instance):
    p = subprocess.run([sys.executable, "-m", "procs.feed", "nosuch", "--print"], cwd=ROOT,
                       env=_env(instance), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "unknown venue" in p.stderr
