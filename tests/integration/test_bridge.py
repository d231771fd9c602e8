"""The bridge against a real redis-server, both sides in this process (``BridgeOut`` and
``BridgeIn`` stepped by the test) between two private instances, or as real processes:
records arrive byte for byte and exactly once, a restarted out side resends nothing, an in
side that died before saving its cursor publishes nothing twice, a paused Redis makes the
remote venues STALE and then UP, a remote with another symbol table is refused (exit 2),
and passwords (rediss:// too) never show."""
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid

import numpy as np
import pytest

from arbpipe.bridge.inbound import STALE, UP, BridgeIn, load_cursor
from arbpipe.bridge.out import BridgeOut
from arbpipe.bridge.stats import CURSOR_BLOB, render_stats
from arbpipe.config import DEFAULT_PATH, VENUE_IDS, config_from_dict
from arbpipe.transport import kernels as K
from arbpipe.transport import segments
from arbpipe.transport.rings import BroadcastRing, SpscRing
from shm_layouts import MARKET_UPDATE, OPPORTUNITY, Kind, VenueStatus
from shm_layouts.records import MARKET_UPDATE_STATUS
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = tomllib.loads(open(DEFAULT_PATH).read())
OKX = VENUE_IDS["okx"]
wait_for = helpers.waiter(60.0, every=0.02)


def _ours(name):
    return [e for e in os.listdir("/dev/shm") if f"arbpipe.{name}." in e]


@pytest.fixture
def pair(tmp_path, monkeypatch):
    """Two private instances (remote ``a``, local ``b``) and their rings; nothing left in
    /dev/shm afterwards."""
    monkeypatch.setenv("ARBPIPE_RUN_DIR", str(tmp_path / "run"))
    a, b = "ta" + uuid.uuid4().hex[:9], "tb" + uuid.uuid4().hex[:9]
    rings = {
        "a.feed": SpscRing.create("feed.okx", 4096, "MarketUpdate", policy="drop", instance=a),
        "a.opp": BroadcastRing.create("opportunities", 4096, "Opportunity", instance=a),
        "b.feed": SpscRing.create("feed.okx", 4096, "MarketUpdate", policy="drop", instance=b),
        "b.opp": BroadcastRing.create("bridge.opportunities", 4096, "Opportunity", instance=b),
    }
    yield a, b, rings
    for r in rings.values():
        r.close()
        r.unlink()
    segments.unlink(b, CURSOR_BLOB)       # an in side leaves it for its next incarnation
    left = _ours(a) + _ours(b)
    segments.clean(a, everything=True)
    segments.clean(b, everything=True)
    assert not left, f"leaked shared-memory objects: {left}"


def configs(a, **bridge):
    """(config of the remote tree a, config of the local tree b)."""
    da, db = copy.deepcopy(BASE), copy.deepcopy(BASE)
    da["bridge"] = {"enabled": True, "out_rings": ["feed.okx", "opportunities"]}
    db["bridge"] = {"enabled": True, "remote_instance": a, "remote_venues": ["okx"],
                    "in_streams": ["opportunities"], "start": "oldest", **bridge}
    return config_from_dict(da), config_from_dict(db)


def quotes(first, n):
    r = np.zeros(n, MARKET_UPDATE)
    r["instrument_id"], r["venue_id"], r["kind"] = 1, OKX, int(Kind.QUOTE)
    r["bid"] = 100.0 + np.arange(first, first + n)
    r["ask"], r["bid_qty"], r["ask_qty"] = r["bid"] + 0.5, 1.0, 1.0
    r["exchange_ts_ns"] = 1_700_000_000_000_000_000 + np.arange(first, first + n)
    r["recv_ts_ns"] = time.time_ns()
    r["seq"] = np.arange(first, first + n) + 1
    return r


def opps(first, n):
    r = np.zeros(n, OPPORTUNITY)
    r["instrument_id"], r["buy_venue"], r["sell_venue"] = 1, OKX, VENUE_IDS["binance"]
    r["opp_id"] = np.arange(first, first + n) + 1
    r["detect_ns"] = time.time_ns()
    r["seq"] = np.arange(first, first + n) + 1
    # layout 2's depth fields (bytes 104..155): a 192-byte record crosses whole
    r["vwap_buy"], r["vwap_sell"] = 100.0 + np.arange(n), 100.5 + np.arange(n)
    r["profit"], r["profit_usd"], r["carry_bps"] = 0.25, np.nan, -0.5
    r["buy_levels"], r["sell_levels"] = 3, 65535
    return r


def held(ring) -> np.ndarray:
    """Every record a ring holds (peeked), as int64 words."""
    head = int(K.head_of(ring.w))
    buf = np.zeros(max(head, 1) * ring.rw, np.int64)
    out = np.zeros(3, np.int64)
    K.peek(ring.w, int(ring.KIND), 0, buf, head, out)
    return buf[:int(out[1]) * ring.rw].copy()


def data_records(ring):
    """The feed records of the local ring that came from the remote (not our STATUS)."""
    recs = held(ring).view(MARKET_UPDATE)
    return recs[~((recs["kind"] == int(Kind.STATUS)) & (recs["instrument_id"] == 0))]


def no_seq(recs):
    """The bytes of MarketUpdates without the seq word (the local ring renumbers it)."""
    return [r.tobytes()[:56] for r in recs]


def pump(out, inn, cond, what, timeout=60.0):
    """Step both sides until ``cond()``."""
    def step():
        if out is not None:
            out.step()
        if inn is not None:
            inn.step()
        return cond()
    return wait_for(step, timeout, what)


def stream(inn, name):
    return next(s for s in inn.streams if s.remote == name)


def test_records_cross_exactly_once_and_a_restarted_out_side_resends_nothing(
        redis_server, pair):
    a, b, rings = pair
    cfg_a, cfg_b = configs(a)
    sent_q, sent_o = quotes(0, 700), opps(0, 300)
    rings["a.feed"].push_batch(sent_q[:400])
    rings["a.opp"].push_batch(sent_o)
    out = BridgeOut(cfg_a, a, redis_server.url, log=lambda m: None, blob=False)
    inn = BridgeIn(cfg_b, b, redis_server.url, log=lambda m: None, blob=False)
    try:
        pump(out, inn, lambda: stream(inn, "feed.okx").published == 400 and
             stream(inn, "opportunities").published == 300, "the first records across")
        out.close()
        rings["a.feed"].push_batch(sent_q[400:])
        out = BridgeOut(cfg_a, a, redis_server.url, log=lambda m: None, blob=False)
        pump(out, inn, lambda: stream(inn, "feed.okx").published == 700, "the rest across")
        pump(out, inn, lambda: inn.link_state == UP, "the link judged current")
        st_out = out.stats()
        assert st_out["rings"]["feed.okx"]["sent"] == 300        # resumed after what Redis had
        assert st_out["rings"]["feed.okx"]["resent"] == 0
        s = stream(inn, "feed.okx")
        assert (s.duplicates, s.gaps, sum(s.bad.values()), s.last_seq) == (0, 0, 0, 700)
        got = data_records(rings["b.feed"])
        assert no_seq(got) == no_seq(sent_q)                      # byte for byte, in order
        recs = held(rings["b.feed"]).view(MARKET_UPDATE)
        assert recs["seq"].tolist() == list(range(1, len(recs) + 1))
        assert held(rings["b.opp"]).tobytes() == sent_o.tobytes()
        assert redis_server.client().xlen(f"arbpipe:{a}:ring:feed.okx") == 700
        lat = inn.stats()["latency"]
        assert lat["count"] == 1000 and lat["p50_ms"] is not None
    finally:
        out.close()
        inn.close()


def test_an_in_side_killed_before_saving_its_cursor_publishes_nothing_twice(
        redis_server, pair, tmp_path):
    a, b, rings = pair
    cfg_a, cfg_b = configs(a, batch=64)
    out = BridgeOut(cfg_a, a, redis_server.url, log=lambda m: None, blob=False)
    inn = BridgeIn(cfg_b, b, redis_server.url, log=lambda m: None, blob=False)
    logs = []
    sent = np.concatenate([quotes(0, 200), quotes(200, 150), quotes(350, 50)])
    try:
        rings["a.feed"].push_batch(sent[:200])
        pump(out, inn, lambda: stream(inn, "feed.okx").published == 200, "200 across")
        saved = load_cursor(b)
        assert saved["streams"]["feed.okx"]["seq"] == 200
        rings["a.feed"].push_batch(sent[200:350])
        pump(out, inn, lambda: stream(inn, "feed.okx").published == 350, "150 more across")
        assert load_cursor(b)["streams"]["feed.okx"]["seq"] == 350
        # the process dies with the cursor of 150 records ago (published, not yet saved);
        # (in one process the blob cannot outlive its creator: the next one is handed it)
        inn.close(keep_cursor=False)
        rings["a.feed"].push_batch(sent[350:])
        inn = BridgeIn(cfg_b, b, redis_server.url, log=logs.append, blob=False)
        assert inn.saved == {}
        inn.saved = saved
        pump(out, inn, lambda: stream(inn, "feed.okx").published == 50, "the next 50 across")
        s = stream(inn, "feed.okx")
        assert s.recovered == 150 and s.last_seq == 400
        assert any("already in feed.okx" in m for m in logs)
        got = no_seq(data_records(rings["b.feed"]))
        assert got == no_seq(sent) and len(set(got)) == 400
        recs = held(rings["b.feed"]).view(MARKET_UPDATE)
        assert (np.diff(recs["seq"].astype(np.int64)) == 1).all()  # numbering continues
    finally:
        out.close()
        inn.close()


def test_a_paused_redis_makes_the_remote_venues_stale_then_up(redis_server, pair):
    a, b, rings = pair
    cfg_a, cfg_b = configs(a, max_lag_ms=500.0)
    out = BridgeOut(cfg_a, a, redis_server.url, log=lambda m: None, blob=False)
    inn = BridgeIn(cfg_b, b, redis_server.url, log=lambda m: None, blob=False)
    try:
        rings["a.feed"].push_batch(quotes(0, 10))
        pump(out, inn, lambda: inn.link_state == UP, "UP")
        redis_server.pause()
        try:
            pump(out, inn, lambda: inn.link_state == STALE, "STALE while Redis is paused")
            rings["a.feed"].push_batch(quotes(10, 10))      # held by the ring meanwhile
        finally:
            redis_server.resume()
        pump(out, inn, lambda: inn.link_state == UP and stream(inn, "feed.okx").last_seq == 20,
             "UP again, the backlog across", 90)
        st = held(rings["b.feed"]).view(MARKET_UPDATE_STATUS)
        mine = st[(st["kind"] == int(Kind.STATUS)) & (st["instrument_id"] == 0)]
        assert mine["status"].tolist()[-2:] == [int(VenueStatus.STALE), int(VenueStatus.UP)]
        s = stream(inn, "feed.okx")
        assert (s.accepted, s.gaps) == (20, 0) and inn.outages + out.outages >= 1
    finally:
        out.close()
        inn.close()


def run_bridge(side, cfg_path, instance, url, tmp_path, name):
    log = open(tmp_path / f"{name}.log", "w")
    env = dict(os.environ, PYTHONUNBUFFERED="1", ARBPIPE_BRIDGE_URL=url)
    return subprocess.Popen([sys.executable, "-m", "procs.bridge", "--side", side, "--config",
                             cfg_path, "--instance", instance], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT), tmp_path / f"{name}.log"


def toml(d: dict) -> str:
    """A small TOML writer for the configs of these tests (tables, scalars, lists)."""
    lines = []

    def table(prefix, t):
        scalars = {k: v for k, v in t.items() if not isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{json.dumps(k)} = {json.dumps(v)}")
        for k, v in t.items():
            if isinstance(v, dict):
                table(f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k), v)
    table("", d)
    return "\n".join(lines) + "\n"


def test_a_remote_with_another_symbol_table_is_refused_with_exit_2(redis_server, pair, tmp_path):
    a, b, rings = pair
    da, db = copy.deepcopy(BASE), copy.deepcopy(BASE)
    da["instruments"][1] = "ZZZ/USDT"
    da["bridge"] = {"enabled": True, "out_rings": ["feed.okx"]}
    db["bridge"] = {"enabled": True, "remote_instance": a, "remote_venues": ["okx"]}
    pa, pb = tmp_path / "a.toml", tmp_path / "b.toml"
    pa.write_text(toml(da))
    pb.write_text(toml(db))
    assert config_from_dict(tomllib.loads(pa.read_text())).instruments[1] == "ZZZ/USDT"
    po, _ = run_bridge("out", str(pa), a, redis_server.url, tmp_path, "out")
    try:
        r = redis_server.client()
        wait_for(lambda: r.hget(f"arbpipe:{a}:bridge:meta", "instruments"), 120, "the meta")
        pi, log = run_bridge("in", str(pb), b, redis_server.url, tmp_path, "in")
        assert pi.wait(120) == 2
        text = log.read_text()
        assert "the remote does not match this config" in text
        assert f"instrument id 2: remote instance '{a}' has 'ZZZ/USDT', the local config " \
               f"'ETH/USDT' (instruments[1])" in text
    finally:
        po.send_signal(signal.SIGTERM)
        assert po.wait(60) == 0


def test_passwords_never_show_even_when_wrong(redis_server_auth, pair, tmp_path):
    a, b, rings = pair
    srv = redis_server_auth
    cfg_a, cfg_b = configs(a)
    logs = []
    wrong = srv.url.replace(srv.password, "not-" + srv.password[4:])
    bad = BridgeOut(cfg_a, a, wrong, log=logs.append, blob=False)
    try:
        bad.step()
        assert bad.last_error and not bad.connected
    finally:
        bad.close()
    rings["a.feed"].push_batch(quotes(0, 20))
    out = BridgeOut(cfg_a, a, srv.url, log=logs.append)
    inn = BridgeIn(cfg_b, b, srv.url, log=logs.append)
    try:
        pump(out, inn, lambda: stream(inn, "feed.okx").published == 20, "20 across")
        out.publish()
        inn.publish()
        text = "\n".join(logs) + json.dumps(out.stats()) + json.dumps(inn.stats()) + \
            render_stats({"out": out.stats(), "in": inn.stats()})
        cli = helpers.cli("stat", "bridge", "--instance", b).stdout + \
            helpers.cli("stat", "bridge", "--json", "--instance", a).stdout
    finally:
        out.close()
        inn.close()
    secret = srv.password[4:]
    assert "***@" in text and secret not in text and secret not in cli
    assert "bridge in" in cli and '"out"' in cli


def test_tls_with_a_password(pair, tmp_path):
    """rediss:// (TLS) with a password: records cross, the URL is only shown redacted."""
    from tests.redis_fixture import TestRedis, require_redis_server
    a, b, rings = pair
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
    cfg_a, cfg_b = configs(a)
    logs = []
    out = inn = None
    sent = quotes(0, 300)
    try:
        rings["a.feed"].push_batch(sent)
        out = BridgeOut(cfg_a, a, url, log=logs.append, blob=False)
        inn = BridgeIn(cfg_b, b, url, log=logs.append, blob=False)
        pump(out, inn, lambda: stream(inn, "feed.okx").published == 300, "300 across TLS")
        assert inn.stats()["url"] == f"rediss://***@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
        assert no_seq(data_records(rings["b.feed"])) == no_seq(sent)
    finally:
        for side in (out, inn):
            if side is not None:
                side.close()
        srv.stop(remove_data=True)
        shutil.rmtree(d, ignore_errors=True)
    assert pw not in "\n".join(logs)
