"""What the supervisor promises, checked on real trees (README "Running it" and
"Reliability"; docs/design.md, "Crash rules"; docs/operations.md, "Stop";
docs/operations.md, "Recover"):

* every role runs on the cores its CPU plan printed (every thread of it, and again after
  a restart);
* a role that dies after running 2 s or more is restarted after 0.1 s; only a crash loop
  (a role that dies within 2 s of its start, again and again) backs off, 0.1 s doubling
  to 5 s -- read from the supervisor's own records (``status.json`` restarts,
  ``supervisor.jsonl`` exit events with their ``restart_in_s``), not from our clock;
* ``arbpipe down`` and Ctrl-C (SIGINT to a foreground ``arbpipe up``) stop producers first
  and let the detector drain: every record committed to a feed ring is consumed by the
  detector, and every opportunity still open when the detector stops is closed with
  reason SHUTDOWN (checked in the opportunities ring and in the persister's Redis stream).
"""
import contextlib
import json
import os
import re
import signal
import subprocess

import numpy as np
import psutil
import pytest

from arbpipe.config import load_config
from arbpipe.detect.stats import counters_dict
from arbpipe.ops.supervisor import BACKOFF_MAX_S, BACKOFF_MIN_S, CRASH_LOOP_S
from arbpipe.transport import kernels as K
from arbpipe.transport import segments
from arbpipe.transport.rings import BroadcastRing, SpscRing
from shm_layouts import CloseReason, OppState
from shm_layouts.detector_stats import N_COUNTERS, STATS_KIND, STATS_NAME, STATS_WORD0
from tests.helpers import CLI, cli, wait_for
from tests.system.test_risk_runtime import small_config

CRASH = 2        # exit code of a process that finds its config bad


def up_detached(cfg, env):
    out = cli("up", "--detach", "--config", cfg, env=env, timeout=180)
    assert "running" in out.stdout, out.stdout + out.stderr


@contextlib.contextmanager
def detached_tree(instance, tmp_path, *edits):
    """``small_config(tmp_path, *edits)`` up with ``up --detach`` (no external Redis):
    (env, config path, run dir); `arbpipe down` after."""
    cfg = small_config(tmp_path, *edits)
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"), ARBPIPE_INSTANCE=instance)
    env.pop("ARBPIPE_REDIS_URL", None)
    up_detached(cfg, env)
    try:
        yield env, cfg, tmp_path / "run" / instance
    finally:
        cli("down", env=env, check=False, timeout=120)


@pytest.fixture
def tree(instance, tmp_path):
    with detached_tree(instance, tmp_path) as t:
        yield t


def events(run, what=None, process=None):
    with open(run / "supervisor.jsonl") as f:
        evs = [json.loads(x) for x in f if x.strip()]
    return [e for e in evs if (what is None or e["event"] == what)
            and (process is None or e.get("process") == process)]


def status(run):
    """{process: row} of the tree's status.json (what `arbpipe status` prints)."""
    try:
        with open(run / "status.json") as f:
            st = json.load(f)
    except (OSError, ValueError):
        return {}
    if not psutil.pid_exists(st["supervisor_pid"]):
        return {}
    return {p["name"]: p for p in st["processes"]}


def all_running(run, min_uptime=0.0):
    rows = status(run)
    if not rows:
        return None
    ok = all(p["state"] == "running" and p["pid"] and p["uptime_s"] >= min_uptime
             for p in rows.values())
    return rows if ok else None


# ------------------------------------------------------------------ CPU plan ---------

def printed_plan(text):
    """{process: [cores]} of the `[arbpipe] CPU plan: a=[0], b=[0, 1]` line."""
    line = next(x for x in text.splitlines() if x.startswith("[arbpipe] CPU plan: "))
    return {name: [int(c) for c in cores.split(",") if c.strip()]
            for name, cores in re.findall(r"([\w.-]+)=\[([\d, ]*)\]", line)}


def affinities(pid):
    """{what: cores} of every thread of ``pid`` and of every process below it."""
    out = {}
    for p in [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True):
        out[f"pid {p.pid}"] = sorted(p.cpu_affinity())
        for t in p.threads():
            try:
                out[f"pid {p.pid} thread {t.id}"] = sorted(os.sched_getaffinity(t.id))
            except OSError:          # the thread ended meanwhile
                pass
    return out


def test_every_role_runs_on_the_cores_its_cpu_plan_printed(tree, instance):
    env, cfg, run = tree
    plan = printed_plan((run / "supervisor.out").read_text())
    # running for a while: the roles have started their threads (detector doorbells, ...)
    rows = wait_for(lambda: all_running(run, 3.0), timeout=120,
                    what="every role running for 3 s")
    assert set(plan) == set(rows), (plan, sorted(rows))
    assert {"simulator", "detector", "strategy", "dashboard"} <= set(plan)
    usable = sorted(psutil.Process().cpu_affinity())
    if len(usable) >= 2:   # the hot path (detector, strategy) on a core the rest stays off
        assert plan["detector"] == usable[-1:] and plan["strategy"] == usable[-1:]
        assert all(usable[-1] not in cores for n, cores in plan.items()
                   if n not in ("detector", "strategy"))
    for name, p in rows.items():
        assert p["cpus"] == plan[name], (name, p["cpus"], plan[name])
        wrong = {k: v for k, v in affinities(p["pid"]).items() if v != sorted(plan[name])}
        assert not wrong, f"{name} (plan {plan[name]}) runs elsewhere: {wrong}"
    # a restarted role is pinned again
    old = rows["detector"]["pid"]
    os.kill(old, signal.SIGKILL)
    det = wait_for(lambda: (lambda r: r if r and r["pid"] != old and r["state"] == "running"
                            and r["uptime_s"] >= 2.0 else None)(status(run).get("detector")),
                   timeout=120, what="the detector restarted and running for 2 s")
    wrong = {k: v for k, v in affinities(det["pid"]).items() if v != sorted(plan["detector"])}
    assert not wrong, f"the restarted detector runs elsewhere: {wrong}"


# ------------------------------------------------------------------ restarts ---------

def lifetimes(run, process):
    """[(exit event, seconds it ran)] of ``process``, the run time from the supervisor's
    own start and exit records."""
    evs = [e for e in events(run, process=process) if e["event"] in ("start", "exit")]
    out, started = [], None
    for e in evs:
        if e["event"] == "start":
            started = e["ts"]
        elif started is not None:
            out.append((e, e["ts"] - started))
            started = None
    return out


def test_only_a_crash_loop_backs_off(tree, instance):
    env, cfg, run = tree
    role = "dashboard"
    good = open(cfg).read()
    # 1. killed after running >= 2 s (the supervisor's uptime says so): back at once
    p = wait_for(lambda: (lambda r: r if r and r["state"] == "running" and r["uptime_s"] >= 3.0
                          else None)(status(run).get(role)), timeout=120,
                 what=f"{role} running for 3 s")
    os.kill(p["pid"], signal.SIGKILL)
    wait_for(lambda: (lambda r: r["pid"] != p["pid"] and r["state"] == "running"
                      and r["restarts"] == 1)(status(run)[role]), timeout=60,
             what=f"{role} restarted once")
    [(ex, ran)] = lifetimes(run, role)
    assert ex["code"] == -signal.SIGKILL and ran >= CRASH_LOOP_S
    assert ex["restart_in_s"] <= BACKOFF_MIN_S, ex

    # 2. a crash loop: every start dies at once (its config is unreadable now)
    p = wait_for(lambda: (lambda r: r if r["state"] == "running" and r["uptime_s"] >= 3.0
                          else None)(status(run)[role]), timeout=120,
                 what=f"{role} running for 3 s again")
    try:
        with open(cfg, "w") as f:
            f.write("this is = [ not toml\n")
        os.kill(p["pid"], signal.SIGKILL)

        def crash_exits():
            got = [(e, ran) for e, ran in lifetimes(run, role) if e["code"] == CRASH]
            return got if len(got) >= 5 else None
        wait_for(crash_exits, timeout=120, what=f"5 crash-loop exits of {role}")
    finally:
        with open(cfg, "w") as f:
            f.write(good)
    life = lifetimes(run, role)
    assert life[1][0]["code"] == -signal.SIGKILL and life[1][1] >= CRASH_LOOP_S
    assert life[1][0]["restart_in_s"] <= BACKOFF_MIN_S, life[1]
    crashes = [(e, ran) for e, ran in life[2:] if e["code"] == CRASH]
    assert len(crashes) >= 5
    # a start that (on a loaded host) lived 2 s or more is no crash loop: it is restarted
    # after 0.1 s; the ones that died within 2 s wait a backoff that doubles up to 5 s
    for e, ran in crashes:
        if ran >= CRASH_LOOP_S + 0.1:
            assert e["restart_in_s"] <= BACKOFF_MIN_S, (e, ran)
    loop = [e["restart_in_s"] for e, ran in crashes if ran < CRASH_LOOP_S - 0.1]
    assert len(loop) >= 4, [(e, ran) for e, ran in crashes]
    # "0.1 s doubling to 5 s": the first wait of the loop is 0.1 s (the two kills before
    # it were no crash loop: they do not count), then each doubles, up to 5 s
    assert loop[0] == BACKOFF_MIN_S, loop
    assert all(BACKOFF_MIN_S <= d <= BACKOFF_MAX_S for d in loop), loop
    for a, b in zip(loop, loop[1:]):
        assert b == min(round(2 * a, 2), BACKOFF_MAX_S), loop
    print(f"restart delays: after a kill {life[0][0]['restart_in_s']} s; crash loop {loop}")
    # the config readable again: the role comes back and stays; every exit was a restart
    r = wait_for(lambda: (lambda r: r if r["state"] == "running" and r["uptime_s"] >= 3.0
                          else None)(status(run)[role]), timeout=120,
                 what=f"{role} running again after its config came back")
    assert r["restarts"] == len(lifetimes(run, role)) == len(events(run, "exit", role))
    others = {n: x["restarts"] for n, x in status(run).items() if n != role}
    assert not any(others.values()), f"other roles restarted: {others}"


# ------------------------------------------------------------------ stop order -------

def feed_rings(cfg_path):
    return [f"feed.{v}" for v in load_config(cfg_path).enabled_venues()]


class Witness:
    """The rings and the detector's stats segment mapped before the stop: their memory
    stays readable after the supervisor unlinks them, so what they hold when the tree is
    gone is what the stopping tree left."""

    def __init__(self, instance, cfg_path):
        self.feeds = {n: SpscRing.attach(n, instance=instance) for n in feed_rings(cfg_path)}
        self.opps = BroadcastRing.attach("opportunities", instance=instance)
        self.stats = segments.Segment.attach(instance, STATS_NAME, kind=STATS_KIND)

    def detector(self):
        return counters_dict(self.stats.words[STATS_WORD0:STATS_WORD0 + N_COUNTERS])

    def opportunities(self):
        """Every record the opportunities ring ever held (it must not have wrapped)."""
        ring = self.opps
        head = int(K.head_of(ring.w))
        assert head < ring.capacity, "the opportunities ring wrapped: the test saw too much"
        buf = np.zeros(256 * ring.rw, np.int64)
        out = np.zeros(3, np.int64)
        recs, pos = [], 0
        while pos < head:
            K.peek(ring.w, int(ring.KIND), pos, buf, 256, out)
            assert int(out[0]) == pos and int(out[1]) > 0, (pos, out)
            recs.append(buf[:int(out[1]) * ring.rw].view(ring.dtype).copy())
            pos = int(out[2])
        return np.concatenate(recs) if recs else np.zeros(0, ring.dtype)

    def close(self):
        for r in [*self.feeds.values(), self.opps]:
            r.close()
        self.stats.close()


def check_stopped_in_order(run, names):
    stopped = [e["process"] for e in events(run, "stopped")]
    assert sorted(stopped) == sorted(names), (stopped, names)
    at = {n: stopped.index(n) for n in stopped}
    producers = [n for n in stopped if n in ("simulator", "replay") or n.startswith("feed.")]
    assert producers and max(at[n] for n in producers) < at["detector"], stopped
    readers = [n for n in ("strategy", "dashboard", "persister") if n in at]
    assert all(at["detector"] < at[n] for n in readers), stopped
    if "persister" in at:        # last, so that the final entries still reach Redis
        assert at["persister"] == len(stopped) - 1, stopped
    assert events(run, "down"), "the supervisor did not finish its stop"


def check_drained(w):
    """Every committed feed record was consumed by the detector, and applied."""
    published = 0
    for name, ring in w.feeds.items():
        st = ring.stats()     # the detector, the only consumer, left its slot at its stop
        assert st["consumed"] == st["published"], (name, st)
        published += st["published"]
    d = w.detector()
    assert published > 0
    assert d["updates"] == published, (d["updates"], published)
    return d


def check_closed(w, d, redis_client, prefix):
    """Every opportunity the detector opened was closed, those still open at its stop
    with SHUTDOWN (the last records it published); the Redis stream says the same."""
    recs = w.opportunities()
    assert d["open_now"] == 0 and d["opened"] == d["closed"] > 0, d
    state, reason, ids = recs["state"], recs["close_reason"], recs["opp_id"]
    opened = set(ids[state == OppState.OPEN].tolist())
    closed_ids = ids[state == OppState.CLOSED].tolist()
    assert len(opened) == d["opened"]
    assert sorted(closed_ids) == sorted(opened), "an opportunity never closed, or twice"
    for oid in opened:     # nothing after an opportunity's close
        where = np.flatnonzero(ids == oid)
        assert state[where[-1]] == OppState.CLOSED, oid
    shut = np.flatnonzero((state == OppState.CLOSED) & (reason == CloseReason.SHUTDOWN))
    assert len(shut) == d["closed_shutdown"]
    if len(shut):          # published last, all together, by the stopping detector
        assert shut[0] == len(recs) - len(shut), "records after the SHUTDOWN closes"
    # the persister (stopped after the detector) wrote every record from the one it joined
    # at (it may join after the detector's first records: a late reader starts at the
    # newest) to the last, the SHUTDOWN closes included
    entries = redis_client.xrange(f"{prefix}:opportunities")
    got = [(int(f["seq"]), int(f["opp_id"]), f["state"], f["close_reason"]) for _, f in entries]
    want = [(int(q), int(o), OppState(st).name.lower(), CloseReason(rs).name.lower())
            for q, o, st, rs in zip(recs["seq"].tolist(), ids.tolist(), state.tolist(),
                                    reason.tolist())]
    assert got and got == want[len(want) - len(got):], "the Redis stream differs from the ring"
    return len(shut)


@pytest.fixture
def stop_tree(instance, tmp_path, redis_server):
    """(env, run dir, redis client) for a tree with the test's redis-server, brought down
    at the end whatever happened."""
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"), ARBPIPE_INSTANCE=instance,
               ARBPIPE_REDIS_URL=redis_server.url)
    yield env, tmp_path / "run" / instance, redis_server.client()
    cli("down", env=env, check=False, timeout=120)


def backlog(w):
    """Records committed to the feed rings and not yet consumed."""
    return sum(r.stats()["fill"] for r in w.feeds.values())


def test_down_stops_producers_first_and_the_detector_drains(stop_tree, instance, tmp_path):
    """The detector is held (SIGSTOP) while the feeds fill their rings and until `down`
    has stopped every producer, so a backlog is waiting when it gets to run again: the
    stop must let it consume every record before it is stopped itself."""
    env, run, rc = stop_tree
    cfg = small_config(tmp_path)
    up_detached(cfg, env)
    rows = wait_for(lambda: all_running(run, 1.0), timeout=120, what="the tree")
    names = set(rows)
    producers = {n for n in names if n == "simulator" or n.startswith("feed.")}
    wait_for(lambda: (lambda d: d and d["opened"] >= 3)(
        counters_dict(read_counters(instance))), timeout=120, what="3 opportunities opened")
    w = Witness(instance, cfg)
    try:
        det = rows["detector"]["pid"]
        os.kill(det, signal.SIGSTOP)
        try:
            wait_for(lambda: backlog(w) >= 20, timeout=60, what="a backlog in the feed rings")
            down = subprocess.Popen([*CLI, "down"], env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            wait_for(lambda: producers <= {e["process"] for e in events(run, "stopped")},
                     timeout=60, what="every producer stopped")
            waiting = backlog(w)
        finally:
            os.kill(det, signal.SIGCONT)
        out, _ = down.communicate(timeout=120)
        assert down.returncode == 0, out
        assert waiting > 0
        assert not segments.list_segments(instance)
        check_stopped_in_order(run, names)
        d = check_drained(w)
        shut = check_closed(w, d, rc, f"arbpipe:{instance}")
        print(f"down: {waiting} feed records waiting when the producers were stopped; all "
              f"{d['updates']} consumed; opened {d['opened']}, closed {d['closed']} "
              f"(venue_down {d['closed_venue_down']}, shutdown {shut})")
    finally:
        w.close()


def read_counters(instance):
    try:
        seg = segments.Segment.attach(instance, STATS_NAME, kind=STATS_KIND)
    except segments.SegmentError:
        return np.zeros(N_COUNTERS, np.int64)
    try:
        return np.array(seg.words[STATS_WORD0:STATS_WORD0 + N_COUNTERS])
    finally:
        seg.close()


def test_ctrl_c_on_a_replay_tree_drains_and_closes_what_is_open_with_shutdown(
        stop_tree, instance, tmp_path):
    """Opportunities stay open through the stop here (quotes never age: max_quote_age_ms
    is long; a replay sends no venue-down status), so the detector's stop must close
    them: SHUTDOWN."""
    from bench.workload import write_workload
    env, run, rc = stop_tree
    cfg = small_config(tmp_path, (r"(?m)^max_quote_age_ms = .*$",
                                  "max_quote_age_ms = 600000.0"))
    rec = str(tmp_path / "day.arbrec")
    write_workload(rec, load_config(cfg), 20_000, seed=7, dislocation_p=0.3,
                   source="test_supervisor_promises")
    with open(tmp_path / "up.out", "w") as log:
        up = subprocess.Popen([*CLI, "up", "--config", cfg, "--replay", rec, "--rate", "200",
                               "--loop"], env=env, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    try:
        names = set(wait_for(lambda: all_running(run, 1.0), timeout=120,
                             what="the replay tree"))
        assert "replay" in names and "simulator" not in names
        wait_for(lambda: (lambda d: d["opened"] >= 20 and d["open_now"] >= 3)(
            counters_dict(read_counters(instance))), timeout=120,
            what="opportunities open")
        w = Witness(instance, cfg)
        try:
            up.send_signal(signal.SIGINT)
            assert up.wait(timeout=120) == 0, (tmp_path / "up.out").read_text()[-3000:]
            assert not segments.list_segments(instance)
            check_stopped_in_order(run, names)
            d = check_drained(w)
            shut = check_closed(w, d, rc, f"arbpipe:{instance}")
            assert shut > 0, "no opportunity was open when the detector stopped"
            print(f"ctrl-c: {d['updates']} feed records all consumed; opened {d['opened']}, "
                  f"closed {d['closed']} (shutdown {shut})")
        finally:
            w.close()
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=120)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
