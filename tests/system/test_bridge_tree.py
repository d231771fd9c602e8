"""Two trees on one host over one real redis-server, as on two hosts: tree A runs the
simulator and the feeds of okx and kraken and sends their rings (bridge out); tree B runs
the feeds of bybit-spot and coinbase, gets okx and kraken from the bridge (bridge in) and
runs the detector and the strategy on all four.

One run checks, in order: opportunities on B that pair a remote venue with a local one;
both bridge processes SIGKILLed and restarted by their supervisors; Redis stopped for about
10 s and started again (its data saved and reloaded): the remote venues' legs go STALE in
B's detector and come back UP; then A stops (its bridge sends what its rings still hold) and
the counts add up: every record A's feed rings published is in B's ring exactly once and in
order, and B's in side accounts for every seq (accepted + skipped + gaps)."""
import json
import os
import re
import signal
import time

import numpy as np
import pytest

from arbpipe.config import VENUE_IDS, load_config
from arbpipe.detect.stats import read_stats
from arbpipe.redis_conn import connect_raw
from arbpipe.transport import kernels as K
from arbpipe.transport import segments
from arbpipe.transport.rings import attach_any
from arbpipe.transport.stateblob import read_blob
from bench.harness import Tree, tree_config
from shm_layouts import MARKET_UPDATE, OPPORTUNITY, Kind
from shm_layouts.records import MARKET_UPDATE_STATUS, StatusReason
from tests import helpers

ALL = ["binance", "binance-usdm", "bybit-spot", "bybit-linear", "okx", "coinbase", "kraken",
       "gate"]
REMOTE, LOCAL = ["okx", "kraken"], ["bybit-spot", "coinbase"]
wait_for = helpers.waiter(120.0, every=0.2)


def section(text: str, name: str, values: dict) -> str:
    """``text`` with keys of its ``[name]`` table replaced (values as TOML via JSON)."""
    head, sep, rest = text.partition(f"\n[{name}]")
    assert sep, name
    body, nl, tail = rest.partition("\n[")
    for k, v in values.items():
        body, n = re.subn(rf"(?m)^{k} = .*$", f"{k} = {json.dumps(v)}", body, count=1)
        assert n == 1, k
    return head + sep + body + nl + tail


def venues_off(text: str, names) -> str:
    for v in names:
        text = text.replace(f"[venues.{v}]\n", f"[venues.{v}]\nenabled = false\n", 1)
    return text


def held(ring) -> np.ndarray:
    head = int(K.head_of(ring.w))
    buf = np.zeros(max(head, 1) * ring.rw, np.int64)
    out = np.zeros(3, np.int64)
    K.peek(ring.w, int(ring.KIND), 0, buf, head, out)
    return buf[:int(out[1]) * ring.rw].copy()


def pid_of(tree, name):
    st = tree.status() or {}
    p = next((p for p in st.get("processes", []) if p["name"] == name), None)
    return p and p["state"] == "running" and p["pid"], p and p["restarts"]


@pytest.fixture
def trees(redis_server_saving, tmp_path):
    a = "ta" + os.urandom(4).hex()
    b = "tb" + os.urandom(4).hex()
    base = open(tree_config(str(tmp_path / "base.toml"), rate_hz=50.0)).read()
    base = section(base, "redis", {"url": redis_server_saving.url})
    ta = venues_off(base, [v for v in ALL if v not in REMOTE])
    # streams long enough for the whole test: nothing trimmed before B has read it
    ta = section(ta, "bridge", {"enabled": True, "out_rings": [f"feed.{v}" for v in REMOTE],
                                "maxlen": 1_000_000})
    tb = venues_off(base, [v for v in ALL if v not in REMOTE + LOCAL])
    tb = section(tb, "bridge", {"enabled": True, "remote_instance": a, "remote_venues": REMOTE,
                                "start": "oldest", "max_lag_ms": 1500.0})
    (tmp_path / "a.toml").write_text(ta)
    (tmp_path / "b.toml").write_text(tb)
    A = Tree(a, str(tmp_path), str(tmp_path / "a.toml"))
    B = Tree(b, str(tmp_path), str(tmp_path / "b.toml"))
    try:
        B.up()
        A.up()
        yield A, B, redis_server_saving
    finally:
        A.down()
        B.down()
        for t in (A, B):
            left = [e for e in os.listdir("/dev/shm") if f"arbpipe.{t.instance}." in e]
            segments.clean(t.instance, everything=True)
            assert not left, f"leaked shared-memory objects: {left}"


def test_two_trees_bridge_quotes_survive_kills_and_a_redis_outage(trees):
    A, B, redis = trees
    cfg_b = load_config(B.config)
    legs = cfg_b.legs().names
    remote_ids = {VENUE_IDS[v] for v in REMOTE}
    local_ids = {VENUE_IDS[v] for v in LOCAL}

    # 1. opportunities on B that pair a remote venue with a local one
    def crossing():
        try:
            ring = attach_any("opportunities", instance=B.instance)
        except segments.SegmentError:
            return None
        try:
            o = held(ring).view(OPPORTUNITY)
        finally:
            ring.close()
        pairs = {(int(x["buy_venue"]), int(x["sell_venue"])) for x in o}
        return [p for p in pairs if {p[0] in remote_ids, p[1] in remote_ids} == {True, False}
                and (p[0] in local_ids or p[1] in local_ids)]
    found = wait_for(crossing, 240, "an opportunity pairing a remote venue with a local one")
    assert found

    # 2. both bridge processes SIGKILLed: their supervisors start them again
    for tree, name in ((B, "bridge.in"), (A, "bridge.out")):
        pid, restarts = wait_for(lambda: pid_of(tree, name)[0] and pid_of(tree, name),
                                 120, f"{name} running")
        blob = "bridge.in.state" if name == "bridge.in" else "bridge.out.state"
        wait_for(lambda: (read_blob(tree.instance, blob) or {}).get("connected"), 120,
                 f"{name} connected")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: pid_of(tree, name)[0] not in (False, None, pid)
                 and pid_of(tree, name)[1] > restarts, 120, f"{name} restarted")
        wait_for(lambda: (b := read_blob(tree.instance, blob)) and b.get("connected")
                 and b.get("_pid") != pid, 120, f"{name} connected again")

    def legs_are(status):
        d = read_stats(B.instance, legs) or {}
        got = d.get("legs") or {}
        return all(got.get(v) == status for v in REMOTE) and got
    wait_for(lambda: (read_blob(B.instance, "bridge.in.state") or {}).get("link") == "UP"
             and legs_are("UP"), 120, "the link current, remote legs UP before the outage")

    # 3. Redis stopped for about 10 s: remote legs STALE, then UP again
    t_stop = time.monotonic()
    redis.stop()
    try:
        wait_for(lambda: legs_are("STALE"), 120, "remote legs STALE while Redis is down")
        local_legs = (read_stats(B.instance, legs) or {}).get("legs") or {}
        assert all(local_legs.get(v) == "UP" for v in LOCAL), local_legs
        time.sleep(max(10.0 - (time.monotonic() - t_stop), 0.0))
    finally:
        redis.start()
    wait_for(lambda: (read_blob(B.instance, "bridge.in.state") or {}).get("link") == "UP"
             and legs_are("UP"), 180, "the link current, remote legs UP after Redis is back")
    assert read_blob(B.instance, "bridge.in.state")["outages"] >= 1

    # 4. A stops (its bridge sends the rest), B reads it all; the counts add up
    r = connect_raw(redis.url, 5.0, "arbpipe-test")
    A.down()
    final = {}
    for v in REMOTE:
        last = r.xrevrange(f"arbpipe:{A.instance}:ring:feed.{v}", "+", "-", count=1)
        final[v] = int(last[0][1][b"seq"])
    # A's bridge sent everything its rings held: nothing behind, nothing overwritten unsent
    stopped = [json.loads(json.loads(ln)["line"]) for ln in
               open(os.path.join(A.dir, "bridge.out.jsonl"))
               if '\\"event\\": \\"stopped\\"' in ln]
    assert stopped, "bridge.out printed no stopped line"
    for v in REMOTE:
        assert stopped[-1]["rings"][f"feed.{v}"]["behind"] == 0, stopped[-1]
        assert stopped[-1]["rings"][f"feed.{v}"]["missed"] == 0, stopped[-1]
    wait_for(lambda: all((read_blob(B.instance, "bridge.in.state") or {}).get("streams", {})
                         .get(f"feed.{v}", {}).get("last_seq") == final[v] for v in REMOTE),
             120, "B's bridge read everything A sent")
    st = read_blob(B.instance, "bridge.in.state")
    for v in REMOTE:
        s = st["streams"][f"feed.{v}"]
        assert sum(s["bad"].values()) == 0, s
        # every seq this incarnation was to read is accounted for
        assert s["accepted"] + s["gaps"] == s["last_seq"] - s["start_seq"], s
        assert s["published"] + s["ring_dropped"] == s["accepted"], s
        # the stream, deduplicated by seq, is every record A's feed ring published
        by_seq = {}
        for _, f in r.xrange(f"arbpipe:{A.instance}:ring:feed.{v}", "-", "+"):
            by_seq.setdefault(int(f[b"seq"]), f)
        assert sorted(by_seq) == list(range(1, final[v] + 1)), v
        assert len({f[b"epoch"] for f in by_seq.values()}) == 1
        sent = [by_seq[k][b"rec"][:56] for k in sorted(by_seq)]
        # B's ring holds each of them exactly once, in order; the rest is B's own STATUS
        ring = attach_any(f"feed.{v}", instance=B.instance)
        try:
            recs = held(ring).view(MARKET_UPDATE)
        finally:
            ring.close()
        assert (np.diff(recs["seq"].astype(np.int64)) == 1).all()
        known = set(sent)
        data = [x.tobytes()[:56] for x in recs if x.tobytes()[:56] in known]
        assert data == sent, v
        ours = np.array([x.tobytes()[:56] not in known for x in recs])
        mine = recs[ours].view(MARKET_UPDATE_STATUS)
        assert len(mine) >= 2 and (mine["kind"] == int(Kind.STATUS)).all()
        assert set(mine["status_reason"].tolist()) <= {int(StatusReason.WATCHDOG),
                                                       int(StatusReason.CONNECTED)}
    r.close()
