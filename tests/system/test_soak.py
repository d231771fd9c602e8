"""The tree fed by a replay process (`arbpipe up --replay`), and the soak that uses it.

* `arbpipe up --detach --replay FILE --rate R --loop` on a small recording: one replay
  process (no simulator, no feed handlers) drives every feed ring; the detector publishes
  opportunities; `status` and `stat rings` show it. The replay process SIGKILLed is
  restarted and publishing continues with every feed ring's seq numbers running 1, 2, 3,
  ... across both incarnations (checked record by record against the ring positions).
  `arbpipe down` leaves nothing.
* Bad usage of the replay options exits 2 naming the option or the venue.
* A tiny `bench.soak.run(source="replay")`: the summary's shape, drops == 0 at a low rate.
"""
import functools
import json
import os
import signal

import numpy as np

from arbpipe.replay import file as RF
from arbpipe.transport import kernels as K
from arbpipe.transport import segments
from arbpipe.config import load_config
from arbpipe.transport.rings import attach_any
from arbpipe.transport.stateblob import read_blob
from bench import soak
from bench.workload import make_stream
from bench.harness import tree_config
from shm_layouts import Flag
from tests import helpers


def _recording(path, cfg, n=20_000):
    recs = make_stream(cfg, n, seed=11, dislocation_p=0.01)
    RF.write_recording(path, recs, RF.names_from_config(cfg, source="test_soak"))
    return path


_wait = helpers.waiter(90.0, "", every=0.1)


def _feed_rows(instance):
    from arbpipe.ops.stat import snapshot
    return {r["name"]: r for r in snapshot(instance)}


def _feeds_published(instance):
    return {n: r["published"] for n, r in _feed_rows(instance).items() if n.startswith("feed.")}


def _ring_seqs(instance, name):
    """(seq of every record at ring positions 0..head-1, head, dropped)."""
    r = attach_any(name, instance=instance)
    try:
        head = int(K.head_of(r.w))
        buf = np.zeros(max(head, 1) * r.rw, np.int64)
        out = np.zeros(3, np.int64)
        K.peek(r.w, int(r.KIND), 0, buf, head, out)
        assert int(out[0]) == 0, f"{name}: the ring lapped its first records"
        recs = buf[:int(out[1]) * r.rw].view(r.dtype)
        return recs["seq"].astype(np.int64), recs["flags"], head, r.stats()["dropped"]
    finally:
        r.close()


def test_up_replay_drives_the_tree_and_a_killed_replay_continues_seq(instance, tmp_path):
    cfg_path = tree_config(str(tmp_path / "arbpipe.toml"), 20.0)
    cfg = load_config(cfg_path)
    rec = _recording(str(tmp_path / "rec.arbrec"), cfg)
    t = soak.ReplayTree(instance, str(tmp_path), cfg_path, rec, 3000.0)

    cli = functools.partial(helpers.cli, env=t.env)
    t.up()
    try:
        st = t.status()
        names = {p["name"]: p for p in st["processes"]}
        assert "replay" in names and names["replay"]["role"] == "replay"
        assert "simulator" not in names and not [n for n in names if n.startswith("feed.")]
        feeds = [f"feed.{v}" for v in cfg.enabled_venues()]
        # every feed ring advances; the detector publishes opportunities
        _wait(lambda: all(v > 200 for v in _feeds_published(instance).values())
              and len(_feeds_published(instance)) == len(feeds), what="feed rings advancing")
        _wait(lambda: _feed_rows(instance)["opportunities"]["published"] > 0,
              what="opportunities")
        out = cli("status", "--instance", instance).stdout
        assert "replay" in out and "running" in out, out
        rows = json.loads(cli("stat", "rings", "--json", "--instance", instance).stdout)
        assert {r["name"] for r in rows} >= set(feeds) | {"opportunities"}
        blob = read_blob(instance, "replay.state")
        assert blob["_alive"] and blob["incarnations"] == 1 and blob["published"] > 0

        # SIGKILL the replay process: restarted, publishing continues, seq continues
        old_pid = names["replay"]["pid"]
        before = _feeds_published(instance)
        os.kill(old_pid, signal.SIGKILL)
        _wait(lambda: (p := {x["name"]: x for x in (t.status() or {}).get("processes", [])}
                       .get("replay")) and p["pid"] != old_pid and p["restarts"] >= 1,
              what="replay restarted")
        _wait(lambda: (b := read_blob(instance, "replay.state")) and b["_alive"]
              and b["incarnations"] == 2 and b["published"] > 0, what="second incarnation")
        _wait(lambda: all(_feeds_published(instance)[n] > before[n] + 100 for n in feeds),
              what="publishing after the restart")
        blob = read_blob(instance, "replay.state")
        assert blob["resumed_from"] > 0            # went on from where the first one was
        assert sum(blob["seq_start"]) >= sum(before.values())
        for n in feeds:
            seq, flags, head, dropped = _ring_seqs(instance, n)
            assert dropped == 0, n
            assert len(seq) == head > before[n]
            # one numbering across both incarnations: the record at position p has seq p + 1
            assert np.array_equal(seq, np.arange(1, head + 1)), (n, seq[:5], seq[-5:])
            assert (flags & int(Flag.REPLAYED)).all(), n
    finally:
        res = t.down()
    assert res.returncode == 0 and "stopped" in res.stdout, res.stdout + res.stderr
    assert segments.list_segments(instance) == []
    assert t.status() is None


def test_up_replay_refuses_bad_options_with_exit_2(instance, tmp_path):
    cfg = load_config()
    rec = _recording(str(tmp_path / "rec.arbrec"), cfg, n=1000)
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"), ARBPIPE_INSTANCE=instance)

    up = functools.partial(helpers.cli, "up", "--detach", env=env, check=False)
    r = up("--rate", "1000")
    assert r.returncode == 2 and "--replay" in r.stderr, r.stderr
    r = up("--replay", rec, "--rate", "1000", "--speed", "10x")
    assert r.returncode == 2 and "--rate and --speed" in r.stderr, r.stderr
    r = up("--replay", rec, "--speed", "fast")
    assert r.returncode == 2 and "--speed" in r.stderr, r.stderr
    r = up("--replay", str(tmp_path / "missing.arbrec"))
    assert r.returncode == 2 and "missing.arbrec" in r.stderr, r.stderr
    # a recording of a venue the config does not enable: refused, the venue named
    text = open(tree_config(str(tmp_path / "c.toml"))).read()
    text = text.replace("[venues.gate]\n", "[venues.gate]\nenabled = false\n", 1)
    (tmp_path / "c.toml").write_text(text)
    r = up("--config", str(tmp_path / "c.toml"), "--replay", rec)
    assert r.returncode == 2 and "'gate'" in r.stderr, r.stderr
    assert segments.list_segments(instance) == []


def test_tiny_replay_soak_has_the_summary_shape_and_no_drops(tmp_path):
    res = soak.run(minutes=0.3, rate=5000.0, interval=2.0, progress=False,
                   out_dir=str(tmp_path), source="replay")
    assert "error" not in res, res
    assert res["source"] == "replay" and res["rate"] == 5000.0
    for k in ("minutes", "updates_per_s", "rss_growth_pct", "rss_slope_mib_per_min",
              "anon_growth_pct", "fd_growth", "drops", "broadcast_lost", "max_lag",
              "restarts", "processes", "series", "warmup_s", "samples"):
        assert k in res, k
    assert res["samples"] >= 5 and len(res["series"]) == res["samples"]
    assert res["drops"] == 0 and res["restarts"] == 0
    assert res["updates_per_s"] > 0
    assert "replay" in res["processes"] and "detector" in res["processes"]
    assert not [n for n in res["processes"] if n.startswith("feed.") or n == "simulator"]
    rp = res["replay"]
    assert rp["published"] > 0 and rp["dropped"] == 0 and rp["loop"] and rp["rate"] == 5000.0
    assert res["recording"]["synthesized"] and os.path.exists(res["recording"]["path"])
    # the series' published counter only grows; its last value covers what the replay sent
    pub = [s["published"] for s in res["series"]]
    assert pub == sorted(pub) and pub[-1] > 0
    assert segments.list_segments(res["instance"]) == []
    assert not [e for e in os.listdir("/dev/shm") if f".{res['instance']}." in e]
    path = soak.save(res, str(tmp_path / "soak.json"))
    assert soak.latest(path)["source"] == "replay"
