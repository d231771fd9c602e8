"""The bridge's in side without Redis: XREAD replies built by hand go through the numba parser
and the in side's checks into real local rings. Every bad-entry reason is counted and never
published, duplicates and gaps are judged by seq, the link's verdict reaches the remote
venues' ring as STATUS records; the remote's meta is refused naming what differs; the
plan of a tree with remote venues; the ``[bridge]`` rules over several keys."""
import copy
import json
import time
import tomllib

import numpy as np
import pytest

from arbpipe.bridge import resp as R
from arbpipe.bridge.inbound import STALE, UP, BridgeIn
from arbpipe.bridge.meta import MetaMismatch, check_meta, decode_meta, local_meta
from arbpipe.bridge.stats import render_stats
from arbpipe.config import DEFAULT_PATH, VENUE_IDS, ConfigError, config_from_dict
from arbpipe.ops.tree import plan
from arbpipe.transport import kernels as K
from arbpipe.transport.rings import BroadcastRing, SpscRing
from shm_layouts import MARKET_UPDATE, OPPORTUNITY, Kind, VenueStatus
from shm_layouts import words as W
from shm_layouts.records import MARKET_UPDATE_STATUS, StatusReason
from shm_layouts.ring import LAYOUT_VERSION

BASE = tomllib.loads(open(DEFAULT_PATH).read())
OKX, BINANCE, GATE = VENUE_IDS["okx"], VENUE_IDS["binance"], VENUE_IDS["gate"]
KEY = "arbpipe:far:ring:feed.okx"
OPP_KEY = "arbpipe:far:ring:opportunities"


def config(**bridge):
    d = copy.deepcopy(BASE)
    d["bridge"] = {"enabled": True, "remote_instance": "far", "remote_venues": ["okx"],
                   "in_streams": ["opportunities"], **bridge}
    return config_from_dict(d)


def bulk(x):
    b = x if isinstance(x, bytes) else str(x).encode()
    return b"$%d\r\n%s\r\n" % (len(b), b)


def reply(streams: dict) -> bytes:
    """An XREAD reply: {key: [(id, [(field, value), ...]), ...]}."""
    out = b"*%d\r\n" % len(streams)
    for key, entries in streams.items():
        out += b"*2\r\n" + bulk(key) + b"*%d\r\n" % len(entries)
        for eid, fields in entries:
            out += b"*2\r\n" + bulk(eid) + b"*%d\r\n" % (2 * len(fields))
            out += b"".join(bulk(f) + bulk(v) for f, v in fields)
    return out


def quote(i, venue=OKX, kind=Kind.QUOTE):
    r = np.zeros(1, MARKET_UPDATE)
    r["instrument_id"], r["venue_id"], r["kind"] = 1, venue, int(kind)
    r["bid"], r["ask"], r["bid_qty"], r["ask_qty"] = 100.0 + i, 100.5 + i, 1.0, 2.0
    r["exchange_ts_ns"] = 1_700_000_000_000_000_000 + i
    r["recv_ts_ns"] = time.time_ns() - 1_000_000
    r["seq"] = 1000 + i            # the remote producer's own seq: the local ring renumbers
    return r


def entry(eid, rec, seq, epoch=b"100", drop=(), **over):
    f = {"rec": rec.tobytes() if hasattr(rec, "tobytes") else rec, "seq": seq,
         "rseq": int(np.frombuffer(rec.tobytes(), np.int64)[-1]) if hasattr(rec, "tobytes")
         else 0, "sent": time.time_ns(), "layout": LAYOUT_VERSION,
         "size": 64 if not hasattr(rec, "dtype") else rec.dtype.itemsize,
         "epoch": epoch, "host": "feeds-host"}
    f.update(over)
    return (eid, [(k, v) for k, v in f.items() if k not in drop])


@pytest.fixture
def bridge_in(instance):
    cfg = config()
    rings = [SpscRing.create("feed.okx", 1024, "MarketUpdate", policy="drop", instance=instance),
             BroadcastRing.create("bridge.opportunities", 1024, "Opportunity",
                                  instance=instance)]
    logs = []
    bi = BridgeIn(cfg, instance, "redis://:secret@127.0.0.1:1/0", log=logs.append, blob=False,
                  hist=False)
    bi.announced = {OKX: "okx", BINANCE: "binance"}
    bi.venue_ok[list(bi.announced)] = True
    bi.logs = logs
    yield bi
    bi.close(keep_cursor=False)
    for r in rings:
        r.close()
        r.unlink()


def feed(bi, data: bytes) -> None:
    buf = np.frombuffer(data, np.uint8).copy()
    R.parse_xread(buf, 0, len(buf), bi.names, bi.name_offs, bi.ent, bi.recs, bi.blocks, bi.res)
    assert bi.res[R.RES_STATUS] == R.ST_OK
    assert bi.res[R.RES_END] == len(buf)
    bi.handle(buf, time.time_ns())


def ring_records(ring) -> np.ndarray:
    head = int(K.head_of(ring.w))
    buf = np.zeros(max(head, 1) * ring.rw, np.int64)
    out = np.zeros(3, np.int64)
    K.peek(ring.w, int(ring.KIND), 0, buf, head, out)
    return buf[:int(out[1]) * ring.rw].copy().view(ring.dtype)   # words first: padding kept


def stream(bi, name="feed.okx"):
    return next(s for s in bi.streams if s.remote == name)


def test_each_bad_entry_is_counted_by_reason_and_never_published(bridge_in):
    bi = bridge_in
    good = [quote(1), quote(9), quote(12)]
    bad_venue_other = quote(6, venue=BINANCE)          # announced, but not this ring's venue
    bad_venue_unknown = quote(7, venue=GATE)           # never announced by the remote
    bad_kind = quote(8)
    bad_kind["kind"] = 99
    entries = [
        entry("5-1", good[0], 1),
        entry("5-2", quote(2), 2, drop=("layout",)),             # fields: layout missing
        entry("5-3", quote(3), "x3"),                            # fields: seq unreadable
        entry("5-4", quote(3), 3, layout=LAYOUT_VERSION + 7),    # layout
        entry("5-5", quote(4), 4, size=32),                      # size (field)
        entry("5-6", quote(5).tobytes()[:63], 5),                # size (the bytes)
        entry("5-7", bad_venue_other, 6),                        # venue
        entry("5-8", bad_venue_unknown, 7),                      # venue
        entry("5-9", bad_kind, 8),                               # record
        entry("5-10", good[1], 9),
        entry("5-11", good[1], 9),                               # duplicate (resent)
        entry("5-12", good[2], 12),                              # gap: 10, 11 never came
    ]
    feed(bi, reply({KEY: entries}))
    s = stream(bi)
    assert s.bad == {"fields": 2, "layout": 1, "size": 2, "venue": 2, "record": 1}
    assert (s.received, s.accepted, s.published, s.duplicates, s.gaps) == (12, 3, 3, 1, 2)
    assert s.last_seq == 12 and s.last_id == "5-12"
    # seqs 1..12: accepted + bad (with a readable seq) + gaps; seq 2 is the layout-less one
    assert s.accepted + (sum(s.bad.values()) - 1) + s.gaps == s.last_seq
    got = ring_records(s.ring)
    assert len(got) == 3
    keep = [n for n in MARKET_UPDATE.names if n != "seq"]
    for g, want in zip(got, good):
        for n in keep:                      # exchange and remote receive times kept
            assert g[n] == want[n][0], n
    assert got["seq"].tolist() == [1, 2, 3]             # the local producer's own numbering
    st = bi.stats()
    assert st["bad"]["venue"] == 2 and st["streams"]["feed.okx"]["gaps"] == 2
    assert "secret" not in json.dumps(st) and "secret" not in render_stats({"in": st})


def test_an_unannounced_venue_in_an_opportunity_is_refused(bridge_in):
    bi = bridge_in
    op = np.zeros(1, OPPORTUNITY)
    op["instrument_id"], op["buy_venue"], op["sell_venue"] = 1, OKX, BINANCE
    op["detect_ns"], op["seq"] = time.time_ns(), 1
    bad = op.copy()
    bad["sell_venue"] = GATE
    feed(bi, reply({OPP_KEY: [entry("1-1", op, 1), entry("1-2", bad, 2)]}))
    s = stream(bi, "opportunities")
    assert s.bad["venue"] == 1 and s.published == 1
    got = ring_records(s.ring)
    assert got.tobytes() == op.tobytes()                  # opportunities go through unchanged


def test_a_new_source_ring_incarnation_starts_its_seq_over(bridge_in):
    bi = bridge_in
    feed(bi, reply({KEY: [entry("1-1", quote(1), 5, epoch=b"100"),
                          entry("1-2", quote(2), 6, epoch=b"100")]}))
    s = stream(bi)
    assert (s.last_seq, s.gaps, s.epochs) == (6, 0, 0)      # a fresh reader: no gap before 5
    feed(bi, reply({KEY: [entry("2-1", quote(3), 1, epoch=b"200"),
                          entry("2-2", quote(4), 3, epoch=b"200"),
                          entry("2-3", quote(4), 3, epoch=b"200")]}))
    assert (s.last_seq, s.gaps, s.epochs, s.duplicates, s.published) == (3, 1, 1, 1, 4)
    assert any("created anew" in m for m in bi.logs)


def test_the_link_verdict_reaches_the_remote_venues_ring(bridge_in):
    bi = bridge_in
    s = stream(bi)
    bi.failed = True                       # the link failed: STALE at once
    assert bi.judge() == STALE
    bi.link = object()                     # connected, and the remote's heartbeat moved
    bi.hb_seen_at = time.monotonic()
    bi.remote_caught_up_ms = 0.0
    assert bi.judge() == UP
    bi.remote_caught_up_ms = bi.max_lag_ms + 1     # the remote out side is behind
    assert bi.judge() == STALE
    # a bridged venue-level UP while the link is STALE: followed by our STALE again
    up = np.zeros(1, MARKET_UPDATE_STATUS)
    up["venue_id"], up["kind"], up["status"] = OKX, int(Kind.STATUS), int(VenueStatus.UP)
    up["recv_ts_ns"] = time.time_ns()
    feed(bi, reply({KEY: [entry("3-1", up.view(MARKET_UPDATE), 1)]}))
    bi.remote_caught_up_ms = 0.0
    assert bi.judge() == UP
    bi.link = None
    got = ring_records(s.ring).view(MARKET_UPDATE_STATUS)
    assert (got["kind"] == int(Kind.STATUS)).all() and (got["instrument_id"] == 0).all()
    assert (got["venue_id"] == OKX).all()
    assert got["status"].tolist() == [2, 1, 2, 1, 2, 1]   # STALE UP STALE (UP STALE) UP
    assert got["status_reason"].tolist() == [
        StatusReason.WATCHDOG, StatusReason.CONNECTED, StatusReason.WATCHDOG, 0,
        StatusReason.WATCHDOG, StatusReason.CONNECTED]
    assert got["seq"].tolist() == list(range(1, 7))
    assert s.statuses == 5 and s.published == 1


def test_starting_gives_the_link_max_lag_ms_before_stale(bridge_in):
    bi = bridge_in
    assert bi.judge() is None              # not failed, not yet max_lag_ms old
    bi.t0 -= bi.max_lag_ms / 1e3 + 0.01
    assert bi.judge() == STALE


def test_every_strict_prefix_of_a_reply_is_incomplete():
    data = reply({KEY: [entry("1-1", quote(1), 1), entry("1-2", quote(2), 2)],
                  OPP_KEY: [entry("1-3", np.zeros(1, OPPORTUNITY), 1)]})
    names, offs = R.field_names()
    ent = np.zeros((8, R.ENT_COLS), np.int64)
    recs = np.zeros((8, 192), np.uint8)          # as wide as an Opportunity
    blocks = np.zeros((4, 2), np.int64)
    res = np.zeros(R.RES_WORDS, np.int64)
    buf = np.frombuffer(data, np.uint8).copy()
    for cut in range(len(buf)):
        R.parse_xread(buf, 0, cut, names, offs, ent, recs, blocks, res)
        assert res[R.RES_STATUS] == R.ST_INCOMPLETE, cut
    R.parse_xread(buf, 0, len(buf), names, offs, ent, recs, blocks, res)
    assert (res[R.RES_STATUS], res[R.RES_ENTRIES], res[R.RES_BLOCKS]) == (R.ST_OK, 3, 2)
    assert ent[1, R.ENT_INT + R.F_SEQ] == 2 and ent[2, R.ENT_BLOCK] == 1
    for junk in (b"*1\r\n*3\r\n", b"$5\r\nhello\r\n", b"*x\r\n"):
        b = np.frombuffer(junk, np.uint8).copy()
        R.parse_xread(b, 0, len(b), names, offs, ent, recs, blocks, res)
        assert res[R.RES_STATUS] == R.ST_PROTOCOL, junk
    for null in (b"*-1\r\n", b"_\r\n"):
        b = np.frombuffer(null, np.uint8).copy()
        R.parse_xread(b, 0, len(b), names, offs, ent, recs, blocks, res)
        assert res[R.RES_STATUS] == R.ST_NULL


def test_packed_xadds_are_the_commands_they_stand_for():
    recs = np.concatenate([quote(1), quote(2)])
    parts = R.xadd_parts(KEY, 5000, LAYOUT_VERSION, 64, "123", "feeds-host")
    dst = np.zeros(R.xadd_bound(parts, 2, 64), np.uint8)
    n = R.pack_xadds(dst, 0, recs.view(np.int64), W.MU_WORDS, 2, *parts, 41, W.MU_SEQ, 777)
    want = b"".join(R.command("XADD", KEY, "MAXLEN", "~", 5000, "*", "rec", r.tobytes(), "seq",
                              41 + i, "rseq", int(r["seq"]), "sent", 777, "layout",
                              LAYOUT_VERSION, "size", 64, "epoch", "123", "host", "feeds-host")
                    for i, r in enumerate(recs))
    assert bytes(dst[:n]) == want


def test_a_remote_that_differs_is_refused_naming_each_difference():
    cfg = config()
    d = copy.deepcopy(BASE)
    d["instruments"][2] = "ZZZ/USDT"
    other = config_from_dict(d)
    meta = decode_meta({k.encode(): v.encode() for k, v in
                        local_meta(other, "far", ["feed.binance"], "h").items()})
    meta["layout_version"] = str(LAYOUT_VERSION + 1)
    with pytest.raises(MetaMismatch) as e:
        check_meta(meta, cfg, "far", ["feed.okx", "opportunities"])
    msg = str(e.value)
    assert "layout version: remote instance 'far' has" in msg
    assert "instrument id 3: remote instance 'far' has 'ZZZ/USDT', the local config " \
           "'SOL/USDT' (instruments[2])" in msg
    assert "ring feed.okx: remote instance 'far' does not send it" in msg
    assert "ring opportunities" in msg
    ok = local_meta(cfg, "far", ["feed.okx", "opportunities"], "h")
    assert check_meta(ok, cfg, "far", ["feed.okx", "opportunities"])[OKX] == "okx"
    ok["venues"] = json.dumps({str(OKX): "binance"})
    with pytest.raises(MetaMismatch, match="venue id 5: remote instance 'far' calls it 'binance'"):
        check_meta(ok, cfg, "far", ["feed.okx"])


def test_the_plan_of_a_tree_with_remote_venues(instance, tmp_path, monkeypatch):
    monkeypatch.setenv("ARBPIPE_RUN_DIR", str(tmp_path))
    cfg = config(remote_venues=["okx", "gate"], out_rings=["feed.binance", "opportunities"])
    specs, rings = plan(cfg, DEFAULT_PATH, instance)
    names = {s.name: s for s in specs}
    assert "feed.okx" not in names and "feed.gate" not in names and "feed.binance" in names
    assert names["bridge.in"].stage == 1 and names["bridge.out"].stage == 4
    assert {s.role for s in specs if s.name.startswith("bridge.")} == {"bridge"}
    ring_names = [r[1] for r in rings]
    assert {"feed.okx", "feed.gate", "feed.binance", "bridge.opportunities"} <= set(ring_names)
    sim = json.loads((tmp_path / instance / "simulator.json").read_text())
    assert "okx" not in sim["venues"] and "gate" not in sim["venues"]
    assert "binance" in sim["venues"]
    off = config(enabled=False, remote_venues=["okx"])     # disabled: every venue local
    specs, _ = plan(off, DEFAULT_PATH, instance)
    assert "feed.okx" in {s.name for s in specs}
    assert not [s for s in specs if s.role == "bridge"]


@pytest.mark.parametrize("bridge,named", [
    ({"remote_instance": ""}, "bridge.remote_instance"),
    ({"out_rings": ["feed.okx"]}, "bridge.out_rings[0]"),                 # okx is remote
    ({"in_streams": ["opportunities", "feed.gate"]}, "bridge.in_streams[1]"),
    ({"remote_venues": ["okx", "nowhere"]}, "bridge.remote_venues[1]"),
    ({"heartbeat_ms": 2000.0}, "bridge.max_lag_ms"),
    ({"url": "http://x"}, "bridge.url"),
])
def test_bridge_rules_over_several_keys_name_the_key(bridge, named):
    with pytest.raises(ConfigError) as e:
        config(**bridge)
    assert str(e.value).startswith(named + ": "), str(e.value)
    d = copy.deepcopy(BASE)
    d["venues"]["okx"]["enabled"] = False
    d["bridge"] = {"remote_venues": ["okx"]}
    with pytest.raises(ConfigError, match=r"^bridge.remote_venues\[0\]: venue 'okx' is not "
                                          r"enabled"):
        config_from_dict(d)


def test_the_bridge_metrics_and_view_rows():
    from prometheus_client.parser import text_string_to_metric_families

    from arbpipe.ui import view as V
    from arbpipe.ui.metrics import Exposition, render
    from tests.unit.test_metrics import state as metrics_state
    st = metrics_state()
    st["bridge"] = {"out": {"alive": True, "connected": True, "reconnects": 0,
                            "rings": {"feed.okx": {"sent": 5, "behind": 0, "missed": 0}}},
                    "in": {"alive": True, "connected": False, "reconnects": 1, "link": "STALE",
                           "lag_ms": 1500.0, "remote_instance": "feeds",
                           "venues": {"okx": "STALE"},
                           "streams": {"feed.okx": {"received": 5, "published": 4,
                                                    "duplicates": 1, "gaps": 2,
                                                    "ring_dropped": 0,
                                                    "bad": {"fields": 0, "size": 1}}}}}
    fams = {f.name: f for f in text_string_to_metric_families(render(st, {}))}
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in fams.values() for s in f.samples if s.name.startswith("arbpipe_bridge")}
    assert got[("arbpipe_bridge_link_current", (("remote", "feeds"),))] == 0
    assert got[("arbpipe_bridge_lag_seconds", (("remote", "feeds"),))] == 1.5
    assert got[("arbpipe_bridge_redis_up", (("side", "in"),))] == 0
    assert got[("arbpipe_bridge_gaps_total", (("stream", "feed.okx"),))] == 2
    assert got[("arbpipe_bridge_skipped_total", (("reason", "size"), ("stream", "feed.okx")))] == 1
    assert got[("arbpipe_bridge_sent_total", (("ring", "feed.okx"),))] == 5
    x = Exposition()                       # no bridge: every family declared, no sample
    st.pop("bridge")
    text = render(st, {})
    assert "# TYPE arbpipe_bridge_link_current gauge" in text
    assert not [ln for ln in text.splitlines() if ln.startswith("arbpipe_bridge")]
    assert x.text() == "\n"
    rows = [t.plain for t in V._venues({"venues": [], "bridge": {"in": {
        "venues": {"okx": "UP"}, "lag_ms": 3.0}}}, V._Style(True))]
    assert any(r.startswith("okx") and "bridged up" in r and "lag 3ms" in r for r in rows)
