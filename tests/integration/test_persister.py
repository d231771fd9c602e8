"""The persister against a real redis-server: streams and their fields, the top-of-book hash,
outages (server paused / restarted) with bounded buffering and catch-up, no credentials in
any output, and the whole tree (`arbpipe up --detach`) with an external and an embedded Redis."""
import functools
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

from arbpipe.config import DEFAULT_PATH, PERP_ID_BIT
from arbpipe.persist.stats import BLOB_NAME
from arbpipe.transport.rings import BroadcastRing, SpscRing
from arbpipe.transport.stateblob import read_blob
from shm_layouts import (JOURNAL, MARKET_UPDATE, OPPORTUNITY, BreakerReason, JournalFlag,
                         JournalKind, Kind, OppState, RejectReason, Side)
from shm_layouts.records import OPP_TOP_OF_BOOK
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


wait_for = helpers.waiter(60.0, every=0.05)


def write_config(tmp_path, **redis):
    """The default config with [redis] settings replaced."""
    text = open(DEFAULT_PATH).read()
    head, sep, section = text.partition("\n[redis]")
    assert sep
    for k, v in redis.items():
        section, n = re.subn(rf"(?m)^{k} = .*$", f"{k} = {json.dumps(v)}", section, count=1)
        assert n == 1, k
    text = head + sep + section
    p = tmp_path / "arbpipe.toml"
    p.write_text(text)
    return str(p)


class Proc:
    """A real ``python -m procs.persister`` with its output in a file."""

    def __init__(self, cfg_path, instance, url, tmp_path, name="persister"):
        self.log_path = tmp_path / f"{name}.log"
        self.log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("ARBPIPE_REDIS_URL", None)
        if url is not None:
            env["ARBPIPE_REDIS_URL"] = url
        self.instance = instance
        self.p = subprocess.Popen([sys.executable, "-m", "procs.persister", "--config", cfg_path,
                                   "--instance", instance], env=env, cwd=ROOT,
                                  stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: self.blob() is not None or self.p.poll() is not None, 120,
                     "the persister to start")
        except BaseException:                # a failed start must not leave it running
            self.p.kill()
            self.p.wait(10)
            self.log.close()
            raise
        assert self.p.poll() is None, self.output()

    def blob(self):
        return read_blob(self.instance, BLOB_NAME)

    def output(self):
        return self.log_path.read_text()

    def stop(self, timeout=30):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(timeout)
        self.log.close()
        return rc


@pytest.fixture
def rings(instance):
    made = {"opportunities": BroadcastRing.create("opportunities", 4096, "Opportunity",
                                                  instance=instance),
            "journal": SpscRing.create("journal", 1024, "JournalEntry", policy="drop",
                                       instance=instance),
            "feed.binance": SpscRing.create("feed.binance", 1024, "MarketUpdate",
                                            policy="drop", instance=instance),
            "feed.okx": SpscRing.create("feed.okx", 1024, "MarketUpdate", policy="drop",
                                        instance=instance)}
    yield made
    for r in made.values():
        r.close()
        r.unlink()


def opportunities(first_seq, n):
    o = np.zeros(n, OPPORTUNITY)
    seq = np.arange(first_seq, first_seq + n)
    o["seq"] = seq
    o["opp_id"] = 1_000_000 + seq // 3
    o["instrument_id"] = 1 + seq % 3                     # BTC, ETH, SOL
    o["buy_venue"], o["sell_venue"] = 1, 5
    o["flags"] = 2                                       # sell leg: OKX SWAP
    o["state"] = OppState.OPEN
    o["confidence"] = 55.5
    o["buy_ask"] = 100.0 + seq * 0.25
    o["sell_bid"] = o["buy_ask"] * 1.001
    o["exec_qty"] = 0.125
    o["gross_bps"], o["net_bps"], o["funding_delta_bps"] = 10.0, 3.25, -0.5
    o["vwap_buy"], o["vwap_sell"] = o["buy_ask"] + 0.5, o["sell_bid"] - 0.25
    o["profit"] = 0.125 * (o["vwap_sell"] - o["vwap_buy"])
    o["profit_usd"] = np.where(seq % 2, o["profit"], np.nan)   # even seq: no USD rate
    o["top_gross_bps"], o["carry_bps"] = 10.5, 0.25
    o["buy_levels"], o["sell_levels"] = 2, 1 + seq % 4
    o["flags"] |= np.where(seq % 5 == 0, OPP_TOP_OF_BOOK, 0).astype(np.uint16)
    o["trigger_recv_ns"] = 1_700_000_000_000_000_000 + seq * 1000
    o["detect_ns"] = o["trigger_recv_ns"] + 2500
    o["opened_ns"] = o["detect_ns"]
    return o


def journal(first_seq):
    j = np.zeros(7, JOURNAL)
    j["seq"] = np.arange(first_seq, first_seq + 7)
    j["ts_ns"] = 1_700_000_000_000_000_000 + j["seq"]
    rows = [(JournalKind.ORDER, Side.BUY, 0, 0), (JournalKind.FILL, Side.BUY, 0,
                                                 JournalFlag.PARTIAL),
            (JournalKind.REJECT, Side.SELL, RejectReason.MAX_ORDER_NOTIONAL, 0),
            (JournalKind.BREAKER, Side.NONE, BreakerReason.DAILY_LOSS, 0),
            (JournalKind.KILL_SWITCH, Side.NONE, 0, JournalFlag.KILL_ON),
            (JournalKind.KILL_SWITCH, Side.NONE, 0, 0),
            (JournalKind.RESET, Side.NONE, 0, 0)]
    for i, (kind, side, reason, flags) in enumerate(rows):
        j[i]["kind"], j[i]["side"], j[i]["reason"], j[i]["flags"] = kind, side, reason, flags
    j["venue_id"][:3] = 1
    j["instrument_id"][:3] = 2
    j["order_id"][:3] = 7
    j["price"][:3] = 2000.5
    j["qty"][:3] = 1.5
    j["notional"][:3] = 3000.75
    j["fee"][1] = 3.0
    j["limit"][2], j["value"][2] = 10_000.0, 12_500.0
    j["limit"][3], j["value"][3] = 1000.0, -1000.5
    return j


def quotes():
    q = np.zeros(4, MARKET_UPDATE)
    q["kind"] = Kind.QUOTE
    q["instrument_id"] = [1, 1, 1, 1 | PERP_ID_BIT]
    q["venue_id"] = [1, 1, 5, 5]
    q["bid"] = [99.0, 100.0, 100.5, 101.0]               # the second binance quote is newer
    q["ask"] = [99.5, 100.25, 100.75, 101.5]
    q["bid_qty"], q["ask_qty"] = 2.0, 3.0
    q["recv_ts_ns"] = [1, 2, 3, 4]
    q["seq"] = [1, 2, 1, 2]
    return q


def xlen(r, instance, s):
    return r.xlen(f"arbpipe:{instance}:{s}")


def entries(r, instance, s):
    return [f for _, f in r.xrange(f"arbpipe:{instance}:{s}")]


# -- the persister alone --------------------------------------------------------------

def test_streams_and_top_of_book_have_every_record_with_unit_named_fields(
        redis_server, instance, rings, tmp_path):
    cfg = write_config(tmp_path, snapshot_interval_ms=100.0, batch=64)
    p = Proc(cfg, instance, redis_server.url, tmp_path)
    r = redis_server.client()
    try:
        wait_for(lambda: p.blob()["connected"], 30, "connected")
        ops = opportunities(1, 300)
        for k in range(0, 300, 50):
            assert rings["opportunities"].push_batch(ops[k:k + 50]) == 50
        assert rings["journal"].push_batch(journal(1)) == 7
        b = quotes()
        assert rings["feed.binance"].push_batch(b[:2]) == 2
        assert rings["feed.okx"].push_batch(b[2:]) == 2
        wait_for(lambda: xlen(r, instance, "opportunities") == 300
                 and xlen(r, instance, "trades") == 7
                 and xlen(r, instance, "events") >= 4, 30, "all records in the streams")
        got = entries(r, instance, "opportunities")
        assert [int(e["seq"]) for e in got] == list(range(1, 301)), "order kept, nothing doubled"
        e = got[4]                                      # seq 5
        assert e["instrument"] == "SOL/USDT" and e["instrument_id"] == "3"
        assert (e["buy_venue"], e["buy_market"]) == ("binance", "spot")
        assert (e["sell_venue"], e["sell_market"]) == ("okx", "perp")
        assert e["state"] == "open" and e["close_reason"] == "none"
        assert float(e["buy_ask_quote"]) == ops[4]["buy_ask"]
        assert float(e["sell_bid_quote"]) == ops[4]["sell_bid"]
        assert float(e["exec_qty_base"]) == 0.125
        assert float(e["notional_quote"]) == pytest.approx(ops[4]["vwap_buy"] * 0.125)
        assert (e["gross_bps"], e["net_bps"], e["funding_delta_bps"]) == ("10.0", "3.25", "-0.5")
        assert float(e["vwap_buy_quote"]) == ops[4]["vwap_buy"]
        assert float(e["vwap_sell_quote"]) == ops[4]["vwap_sell"]
        assert float(e["profit_quote"]) == ops[4]["profit"] == float(e["profit_usd"])
        assert (e["top_gross_bps"], e["carry_bps"]) == ("10.5", "0.25")
        assert (e["buy_levels"], e["sell_levels"], e["top_of_book"]) == ("2", "2", "1")
        assert got[5]["profit_usd"] == "nan" and got[5]["top_of_book"] == "0"   # seq 6
        assert float(got[5]["profit_quote"]) == ops[5]["profit"]
        assert e["confidence_pct"] == "55.5" and e["detect_latency_ns"] == "2500"
        assert int(e["trigger_recv_ns"]) == ops[4]["trigger_recv_ns"]
        units = ("_ns", "_bps", "_quote", "_base", "_pct", "_usd", "_levels")
        numeric = [k for k, v in e.items() if re.fullmatch(r"-?[0-9.e+-]+", v)
                   and k not in ("seq", "opp_id", "instrument_id", "top_of_book")]
        assert all(k.endswith(units) for k in numeric), numeric
        t = entries(r, instance, "trades")
        assert [x["kind"] for x in t] == ["order", "fill", "reject", "breaker", "kill_switch",
                                          "kill_switch", "reset"]
        assert t[0]["side"] == "buy" and t[0]["venue"] == "binance" and \
            t[0]["instrument"] == "ETH/USDT"
        assert float(t[0]["price_quote"]) == 2000.5 and float(t[0]["qty_base"]) == 1.5
        assert t[1]["flag_names"] == "partial" and float(t[1]["fee_quote"]) == 3.0
        assert t[2]["reason"] == "max_order_notional" and t[2]["value_unit"] == "quote"
        assert float(t[2]["limit"]) == 10_000.0 and float(t[2]["value"]) == 12_500.0
        assert t[3]["reason"] == "daily_loss"
        ev = entries(r, instance, "events")
        kinds = [x["type"] for x in ev if x["source"] == "strategy"]
        assert kinds == ["breaker_tripped", "kill_switch_on", "kill_switch_off", "breaker_reset"]
        brk = next(x for x in ev if x["type"] == "breaker_tripped")
        assert brk["reason"] == "daily_loss" and float(brk["value"]) == -1000.5
        tob = wait_for(lambda: (h := r.hgetall(f"arbpipe:{instance}:tob")) and
                       "BTC/USDT@okx-perp" in h and h, 30, "the top-of-book hash")
        bn = json.loads(tob["BTC/USDT@binance"])
        assert (bn["bid_quote"], bn["ask_quote"], bn["seq"]) == (100.0, 100.25, 2)
        assert json.loads(tob["BTC/USDT@okx"])["bid_quote"] == 100.5
        assert json.loads(tob["BTC/USDT@okx-perp"])["ask_qty_base"] == 3.0
        st = wait_for(lambda: (d := p.blob())["written"]["trades"] == 7 and d, 10, "stats")
        assert st["written"]["opportunities"] == 300 and st["read"]["opportunities"] == 300
        assert st["dropped_total"] == 0 and st["lost"] == 0 and st["backlog"] == 0
        assert st["connected"] and st["url"] == redis_server.url
        assert rings["journal"].stats()["fill"] == 0, "the journal ring is consumed"
    finally:
        rc = p.stop()
        r.close()
    assert rc == 0, p.output()
    assert p.blob() is None, "the state blob is removed at exit"
    last = [json.loads(x) for x in p.output().splitlines() if x.startswith("{")][-1]
    assert last["event"] == "stopped" and last["unwritten"] == 0


def test_venue_leg_transitions_become_events(redis_server, instance, rings, tmp_path):
    """Venue up / stale / down: transitions of the detector's per-leg status (its real stats
    segment, written here as the detector's kernel writes it)."""
    from arbpipe.config import load_config
    from arbpipe.detect.stats import DetectorStats
    from shm_layouts.detector_stats import C_NLEGS
    from shm_layouts import VenueStatus
    legs = load_config().legs().names
    ds = DetectorStats.create(instance)
    ds.counters[C_NLEGS] = len(legs)
    view = ds.legs_view(len(legs))
    view[:] = VenueStatus.UP
    p = Proc(write_config(tmp_path), instance, redis_server.url, tmp_path)
    r = redis_server.client()
    try:
        wait_for(lambda: p.blob()["legs"], 30, "the baseline of leg status")
        k = legs.index("okx-perp")

        def leg_events():
            return [x for x in entries(r, instance, "events") if x["source"] == "detector"]
        for n, st in enumerate((VenueStatus.DISCONNECTED, VenueStatus.UP, VenueStatus.STALE)):
            view[k] = st
            wait_for(lambda: len(leg_events()) == n + 1, 30, f"event {n + 1}")
        ev = leg_events()
        assert [(x["type"], x["leg"], x["venue"], x["previous"]) for x in ev] == [
            ("venue_down", "okx-perp", "okx", "up"), ("venue_up", "okx-perp", "okx", "disconnected"),
            ("venue_stale", "okx-perp", "okx", "up")]
    finally:
        assert p.stop() == 0
        r.close()
        view = None
        ds.close()


def test_streams_are_capped(redis_server, instance, rings, tmp_path):
    cfg = write_config(tmp_path, stream_maxlen=200, batch=100)
    p = Proc(cfg, instance, redis_server.url, tmp_path)
    r = redis_server.client()
    try:
        for k in range(20):
            rings["opportunities"].push_batch(opportunities(1 + k * 100, 100))
            time.sleep(0.02)
        wait_for(lambda: p.blob()["written"]["opportunities"] == 2000, 60, "all written")
        n = xlen(r, instance, "opportunities")
        assert 200 <= n < 1000, n                         # MAXLEN ~ 200 trims whole nodes
        last = r.xrevrange(f"arbpipe:{instance}:opportunities", count=1)[0][1]
        assert last["seq"] == "2000", "the newest entries are kept"
    finally:
        assert p.stop() == 0
        r.close()


@pytest.mark.parametrize("outage", ["paused", "restarted"])
def test_outage_buffers_up_to_the_bound_and_catches_up(redis_server_saving, instance, rings,
                                                        tmp_path, outage):
    srv = redis_server_saving
    cfg = write_config(tmp_path, buffer_records=1000, batch=100)
    p = Proc(cfg, instance, srv.url, tmp_path)
    r = srv.client()
    opp, jr = rings["opportunities"], rings["journal"]
    try:
        wait_for(lambda: p.blob()["connected"], 30, "connected")
        opp.push_batch(opportunities(1, 200))
        jr.push_batch(journal(1))
        wait_for(lambda: p.blob()["written"]["opportunities"] == 200, 30, "first 200 written")
        r.close()
        if outage == "paused":
            srv.pause()                                   # a hung server: timeouts
        else:
            srv.stop()                                    # gone (its data saved to disk)
        # the hot path keeps going: pushes never wait, the journal ring never fills
        for k in range(8):
            assert opp.push_batch(opportunities(201 + 100 * k, 100)) == 100
            time.sleep(0.05)
        assert jr.push_batch(journal(8)) == 7
        st = wait_for(lambda: (d := p.blob())["read"]["opportunities"] == 1000
                      and d["read"]["trades"] == 14 and not d["connected"] and d, 60,
                      "the outage seen")
        assert st["dropped"]["opportunities"] == 0, "nothing dropped under the bound"
        assert st["backlog_by_stream"]["opportunities"] == 800
        opp.push_batch(opportunities(1001, 500))           # 300 past the bound
        st = wait_for(lambda: (d := p.blob())["read"]["opportunities"] == 1500 and d, 30,
                      "the overflow read")
        wait_for(lambda: p.blob()["dropped"]["opportunities"] == 300, 10, "drops counted")
        st = p.blob()
        assert st["backlog_by_stream"]["opportunities"] == 1000
        assert st["dropped"]["trades"] == 0 and st["lost"] == 0
        assert jr.stats()["dropped"] == 0 and jr.stats()["fill"] == 0
        assert opp.stats()["readers"][0]["lost"] == 0
        time.sleep(1.0)                                   # a while down
        if outage == "paused":
            srv.resume()
        else:
            srv.start()
        st = wait_for(lambda: (d := p.blob())["backlog"] == 0 and d["connected"] and d, 60,
                      "catch-up")
        assert st["reconnects"] >= 1 and st["outages"] >= 1
        assert st["batches"] >= 12, "pipelined batches of redis.batch (100) entries"
        r = srv.client()
        seqs = [int(e["seq"]) for e in entries(r, instance, "opportunities")]
        want = list(range(1, 1201))                       # drop-newest: 1201..1500 were dropped
        assert len(seqs) == len(set(seqs)), "an entry was written twice"
        assert sorted(seqs) == want
        # a batch a stalled server applied late is refused on resend, not written twice
        assert st["written"]["opportunities"] <= 1200 <= \
            st["written"]["opportunities"] + st["already_written"]
        tr = [int(e["seq"]) for e in entries(r, instance, "trades")]
        assert sorted(tr) == list(range(1, 15))
        ev = entries(r, instance, "events")
        drop = [e for e in ev if e["type"] == "persister_dropped"]
        assert drop and drop[0]["stream"] == "opportunities" and drop[0]["records"] == "300"
        out = p.output()
        assert "buffer full" in out and ("lost" in out or "unreachable" in out) and \
            "back; backlog" in out, out
    finally:
        try:
            srv.resume()
        except (ProcessLookupError, AttributeError, TypeError):
            pass
        rc = p.stop()
        r.close()
    assert rc == 0, p.output()


def test_credentials_never_appear_in_logs_stats_or_cli(redis_server_auth, instance, rings,
                                                       tmp_path):
    srv = redis_server_auth
    pw = srv.password
    cfg = write_config(tmp_path)
    bad = Proc(cfg, instance, srv.url.replace(pw, pw[::-1]), tmp_path, name="wrong-password")
    wait_for(lambda: bad.blob()["last_error"], 30, "the auth failure")
    blobs = [json.dumps(bad.blob())]
    assert bad.stop() == 0
    p = Proc(cfg, instance, srv.url, tmp_path)
    env = dict(os.environ, ARBPIPE_INSTANCE=instance)
    try:
        wait_for(lambda: p.blob()["connected"], 30, "connected with the password")
        rings["opportunities"].push_batch(opportunities(1, 10))
        wait_for(lambda: p.blob()["written"]["opportunities"] == 10, 30, "written")
        srv.kill()                                          # errors while connected
        rings["opportunities"].push_batch(opportunities(11, 10))
        wait_for(lambda: not p.blob()["connected"] and p.blob()["last_error"], 30, "outage")
        blobs.append(json.dumps(p.blob()))
        cli = [subprocess.run([sys.executable, "-m", "procs.cli", "stat", "persister", *a],
                              env=env, capture_output=True, text=True, timeout=60)
               for a in ([], ["--json"])]
        srv.start()
        wait_for(lambda: p.blob()["backlog"] == 0, 30, "catch-up")
    finally:
        assert p.stop() == 0
    text = "\n".join([bad.output(), p.output(), *blobs, *(c.stdout + c.stderr for c in cli)])
    assert "unix://***@" in text, "the URL is shown, redacted"
    assert pw not in text and pw[::-1] not in text, "a password leaked"


# -- the whole tree --------------------------------------------------------------------

def _tree_config(tmp_path):
    text = open(DEFAULT_PATH).read()
    text = re.sub(r"(?m)^rate_hz = .*$", "rate_hz = 40.0", text, count=1)
    text = re.sub(r"(?m)^dislocation_rate_hz = .*$", "dislocation_rate_hz = 0.05", text, count=1)
    text = re.sub(r"(?m)^snapshot_interval_ms = .*$", "snapshot_interval_ms = 200.0", text,
                  count=1)
    text = re.sub(r"(?m)^risk_poll_ms = .*$", "risk_poll_ms = 200.0", text, count=1)
    p = tmp_path / "arbpipe.toml"
    p.write_text(text)
    return str(p)


_cli = functools.partial(helpers.cli, timeout=180)


def _down(env, run):
    st = None
    try:
        st = json.load(open(os.path.join(run, "status.json")))
    except (OSError, ValueError):
        pass
    _cli("down", env=env, check=False, timeout=120)
    if st:
        for pid in [st["supervisor_pid"]] + [x["pid"] for x in st["processes"] if x["pid"]]:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", pid


def test_tree_writes_streams_to_an_external_redis_without_leaking_its_password(
        redis_server_auth, instance, tmp_path):
    srv = redis_server_auth
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"), ARBPIPE_INSTANCE=instance,
               ARBPIPE_REDIS_URL=srv.url)
    run = str(tmp_path / "run" / instance)
    out = _cli("up", "--detach", "--config", _tree_config(tmp_path), env=env)
    assert "running" in out.stdout, out.stdout + out.stderr
    r = srv.client()
    try:
        names = {x["name"] for x in json.load(open(os.path.join(run, "status.json")))["processes"]}
        assert "persister" in names
        wait_for(lambda: xlen(r, instance, "opportunities") >= 3, 150, "opportunities in Redis")
        e = entries(r, instance, "opportunities")[0]
        assert e["state"] in ("open", "update", "closed") and e["instrument"].endswith("/USDT")
        assert float(e["sell_bid_quote"]) > 0 and int(e["detect_ns"]) >= int(e["trigger_recv_ns"])
        wait_for(lambda: len(r.hkeys(f"arbpipe:{instance}:tob")) > 10, 60, "top of book")
        assert "strategy" in names            # its journal is the trades stream
        wait_for(lambda: xlen(r, instance, "trades") >= 1, 120, "journal entries in Redis")
        t = entries(r, instance, "trades")[0]
        assert t["kind"] in ("order", "fill", "reject", "unwind", "missed", "breaker",
                             "reset", "kill_switch")
        status = _cli("status", env=env).stdout
        assert "redis: unix://***@" in status and "connected" in status, status
        stat = _cli("stat", "persister", env=env).stdout
        blob = json.dumps(read_blob(instance, BLOB_NAME))
    finally:
        _down(env, run)
        r.close()
    texts = [status, stat, blob]
    for root, _, files in os.walk(tmp_path / "run"):
        for f in files:
            texts.append(open(os.path.join(root, f), errors="replace").read())
    joined = "\n".join(texts)
    assert srv.password not in joined, "the Redis password leaked into a log or status"
    assert "persister" in joined


def test_tree_embeds_a_private_redis_when_none_is_configured(instance, tmp_path):
    from tests.redis_fixture import require_redis_server
    require_redis_server()
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"), ARBPIPE_INSTANCE=instance)
    env.pop("ARBPIPE_REDIS_URL", None)
    run = str(tmp_path / "run" / instance)
    out = _cli("up", "--detach", "--config", _tree_config(tmp_path), env=env)
    assert "running" in out.stdout, out.stdout + out.stderr
    from arbpipe.redis_conn import connect
    try:
        events = [json.loads(x) for x in open(os.path.join(run, "supervisor.jsonl"))]
        emb = next(e for e in events if e["event"] == "redis" and e.get("state") == "embedded")
        url = open(os.path.join(run, "redis.url")).read().split()[0]
        assert url.startswith("unix://") and url.endswith("redis.sock?db=0")
        r = connect(url, 5.0)
        wait_for(lambda: xlen(r, instance, "opportunities") >= 1, 150, "opportunities in Redis")
        out = _cli("risk", "set", "max_orders_per_s", "9", env=env, check=False)
        assert out.returncode == 0, out.stderr            # found through <run dir>/redis.url
        assert r.hget(f"arbpipe:{instance}:risk", "max_orders_per_s") == "9"
        r.close()
    finally:
        _down(env, run)
    assert not psutil.pid_exists(emb["pid"]) or psutil.Process(emb["pid"]).status() == "zombie"
    events = [json.loads(x) for x in open(os.path.join(run, "supervisor.jsonl"))]
    assert any(e["event"] == "redis" and e.get("state") == "stopped" for e in events)
    left = os.listdir(run)
    assert not [f for f in left if f.startswith("redis.") or f.endswith((".rdb", ".aof"))], left


def test_no_redis_at_all_runs_without_persister_and_says_so_once(tmp_path, monkeypatch):
    from arbpipe.config import load_config
    from arbpipe.persist.redis_embed import supervisor_service
    from arbpipe.ops.tree import plan
    monkeypatch.setenv("ARBPIPE_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("ARBPIPE_REDIS_URL", raising=False)
    monkeypatch.setenv("ARBPIPE_REDIS_SERVER", str(tmp_path / "no-redis-server"))
    cfg = load_config()
    specs, _ = plan(cfg, DEFAULT_PATH, "tnoredis")
    assert "persister" not in {s.role for s in specs}
    said = []
    assert supervisor_service(cfg, "tnoredis", str(tmp_path), console=said.append) is None
    assert len(said) == 1 and "WITHOUT persistence" in said[0] and "apt-get install" in said[0]
    monkeypatch.setenv("ARBPIPE_REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    specs, _ = plan(cfg, DEFAULT_PATH, "tnoredis")
    assert "persister" in {s.role for s in specs}
    said.clear()
    assert supervisor_service(cfg, "tnoredis", str(tmp_path), console=said.append) is None
    assert said == ["[arbpipe] redis: redis://***@127.0.0.1:1/0 (persister, risk parameters)"]


def test_supervisor_redis_service_starts_stops_and_persists_only_when_configured(
        tmp_path, monkeypatch):
    from tests.redis_fixture import require_redis_server
    from arbpipe.redis_conn import connect
    from arbpipe.persist.redis_embed import ENV_URL, RDB_NAME, RedisService
    from arbpipe.ops.supervisor import ProcessSpec, Supervisor
    require_redis_server()
    monkeypatch.setenv("ARBPIPE_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.delenv(ENV_URL, raising=False)

    def supervisor():
        spec = ProcessSpec("persister", "persister", ["true"], stage=4)
        return Supervisor("tsvc", [spec], [], console=lambda s: None)

    for persist in (False, True):
        sup = supervisor()
        svc = RedisService("tsvc", sup.dir, persist=persist).setup(sup)
        url = os.environ[ENV_URL]                      # what the children inherit
        assert open(os.path.join(sup.dir, "redis.url")).read().startswith(url)
        r = connect(url, 5.0)
        assert r.get("k") is None
        r.set("k", "v")
        r.close()
        svc.close()
        assert ENV_URL not in os.environ and [s.name for s in sup.specs] == ["persister"]
        left = sorted(f for f in os.listdir(sup.dir) if f.startswith("redis"))
        assert left == ([RDB_NAME] if persist else []), left
        sup.events.close()
    sup = supervisor()                                  # persisted data is back at the next start
    svc = RedisService("tsvc", sup.dir, persist=True).setup(sup)
    r = connect(os.environ[ENV_URL], 5.0)
    assert r.get("k") == "v"
    r.close()
    svc.close()
    sup.events.close()
    monkeypatch.setenv("ARBPIPE_REDIS_SERVER", "/bin/false")   # a server that cannot start
    sup = supervisor()
    svc = RedisService("tsvc", sup.dir).setup(sup)
    assert sup.specs == [] and ENV_URL not in os.environ, "no persister without its Redis"
    svc.close()
    sup.events.close()
    ev = [json.loads(x) for x in open(os.path.join(sup.dir, "supervisor.jsonl"))]
    assert [e.get("state") for e in ev if e["event"] == "redis"][-1] == "failed"


def test_tls_url_with_password(instance, rings, tmp_path):
    """rediss:// (TLS) with a password: the persister writes, the URL is shown redacted."""
    import shutil
    import socket
    import tempfile
    from tests.redis_fixture import TestRedis, require_redis_server
    require_redis_server()
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tempfile.mkdtemp(prefix="arbpipe-rt-", dir="/tmp")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pw = "tls-" + os.urandom(8).hex()
    srv = TestRedis(d, password=pw, extra_args=[
        "--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key,
        "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"])
    srv.start()
    url = f"rediss://:{pw}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    p = None
    try:
        p = Proc(write_config(tmp_path), instance, url, tmp_path)
        rings["opportunities"].push_batch(opportunities(1, 50))
        st = wait_for(lambda: (b := p.blob())["written"]["opportunities"] == 50 and b, 60,
                      "written over TLS")
        assert st["url"] == f"rediss://***@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
        r = srv.client()                          # plain unix socket of the same server
        assert r.xlen(f"arbpipe:{instance}:opportunities") == 50
        r.close()
    finally:
        if p is not None:
            assert p.stop() == 0
        srv.stop(remove_data=True)
        shutil.rmtree(d, ignore_errors=True)
    assert pw not in p.output() + json.dumps(st)
