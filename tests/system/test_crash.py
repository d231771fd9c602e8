"""Crash and restart, the quick version of `arbpipe bench reliability` (bench/reliability.py).

* Dedicated SPSC, MPMC and broadcast rings under the real Supervisor: producers and
  consumers SIGKILLed at random moments and restarted; every record sequence-checked.
* The whole tree (`arbpipe up --detach`): every role of the supervisor's plan, as
  status.json lists it (so roles added later are covered), SIGKILLed a few times at
  random moments under load; each is restarted and the pipeline resumes; a tap checks
  every committed feed / opportunity / journal record and the feed seq numbers; our
  broadcast reader accounts for every record. Then the whole tree is SIGKILLed and
  `arbpipe up` reclaims its stale segments; `down` leaves nothing.
"""
import os

from bench import reliability as R


def test_chains_lose_duplicate_and_tear_nothing_under_kills():
    r = R.chains(kills=3, rate=20_000, seed=5, log=lambda s: None)
    assert r["violation_count"] == 0, r["violations"]
    assert all(n >= 3 for n in r["kills"].values()), r["kills"]
    assert set(r["kills"]) == {"spsc-producer", "spsc-checker", "mpmc-producer",
                               "mpmc-consumer", "bcast-writer", "bcast-reader"}
    sp, mp, bc = r["spsc"], r["mpmc"], r["broadcast"]
    assert sp["published"] > 0 and sp["lost"] == 0 and sp["verified"] == sp["published"]
    assert mp["published"] > 0 and mp["ledger_ok"], mp
    assert mp["duplicates"] == 0 and mp["torn"] == 0 and mp["lost"] == 0, mp
    assert bc["accounted"], bc
    assert r["records_lost"] == 0 and r["torn_records"] == 0
    assert r["leaked_segments"] == []


def test_every_role_killed_restarts_and_the_pipeline_resumes(instance, tmp_path):
    r = R.tree(kills=2, rate_hz=200.0, seed=3, log=lambda s: None, workdir=str(tmp_path),
               instance=instance)
    roles = set(r["roles"])
    assert {"simulator", "feed", "detector"} <= roles
    assert set(r["kills"]) == roles and all(n >= 2 for n in r["kills"].values()), r["kills"]
    assert r["restart_s"]["n"] == sum(r["kills"].values()), r["restart_s"]
    assert r["not_resumed"] == [], r["not_resumed"]
    tap = r["tap"]
    assert tap["records_checked"] > 1000
    assert tap["torn"] == 0, tap["examples"]
    assert tap["feed_seq_gaps_unexplained"] == 0, tap
    assert tap["feed_restarts_seen"] >= 1            # a killed feed started over at seq 1
    br = r["broadcast_reader"]
    assert br["accounted"] and br["position"] == br["head"], br
    assert all(lag < 4096 for lag in r["feed_ring_lag_after"].values()), r["feed_ring_lag_after"]
    w = r["whole_tree_kill"]
    assert w["processes_killed"] >= 4 and w["stale_segments_left"] > 0, w
    assert w["reclaimed"] and w["new_supervisor"] and w["feeds_moving"], w
    assert w["orphan_semaphores"] == 0, w
    assert r["leaked_after_down"] == []
    assert not [e for e in os.listdir("/dev/shm") if f".{instance}." in e]
