"""Every depth fault of the simulator on every venue, on the whole tree
(``bench/book_faults.py``, the short version of `arbpipe bench reliability --only
book-faults`).

The default tree (8 venues, L2 books on) runs with the depth faults each venue's protocol
can show (gaps, duplicated and early diffs, wrong checksums, stale and failing REST
snapshots; the probabilities of the bench, 45 s): every venue's books are
broken and resynced, each shows all its books ready again with the faults still on, and
the detector never opens or updates an opportunity with a leg whose book was resyncing
(checked against a recording of the feed rings and every record of the opportunities
ring).
"""
import psutil

from arbpipe.config import parse_config, to_sim_config
from arbpipe.transport import segments
from bench import book_faults as BF

# which resync reasons each venue must show (a fault the scenario sets for it)
SHOWN = {"binance": {"gap", "stale_snapshot", "snapshot_failed"},
         "binance-usdm": {"gap", "stale_snapshot", "snapshot_failed"},
         "gate": {"gap", "stale_snapshot", "snapshot_failed"},
         "bybit-spot": {"gap", "early_diff"}, "bybit-linear": {"gap", "early_diff"},
         "okx": {"gap", "checksum", "early_diff"}, "coinbase": {"gap", "early_diff"},
         "kraken": {"checksum", "early_diff"}}


def test_book_fault_config_is_valid_and_only_where_meaningful():
    sim = to_sim_config(parse_config(BF.fault_config()))
    for v in ("binance", "binance-usdm", "gate"):
        f = sim.venues[v].faults
        assert f.book_stale_snapshot_p > 0 and f.book_snapshot_fail_p > 0
        assert f.book_checksum_p == f.book_early_diff_p == 0
    for v in ("okx", "kraken"):
        assert sim.venues[v].faults.book_checksum_p > 0
    for v in ("bybit-spot", "bybit-linear", "coinbase"):
        assert sim.venues[v].faults.book_checksum_p == 0
    assert sim.venues["kraken"].faults.book_gap_p == 0     # a gap Kraken cannot show
    assert all(sim.venues[v].faults.duplicate_p == 0 for v in sim.venues)


def test_every_depth_fault_on_the_whole_tree(instance, tmp_path):
    r = BF.run(instance=instance, workdir=str(tmp_path), seconds=45, log=lambda s: None)
    for pid in r.get("pids", []):            # nothing of the tree survives `down`
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", pid
    assert not segments.list_segments(instance)
    assert "error" not in r, r.get("error")
    assert sorted(r["venues"]) == sorted(SHOWN)
    for v, c in r["venues"].items():
        # the faults broke books and were counted by reason ...
        assert SHOWN[v] & set(c["resyncs_by_fault"]), (v, c["resyncs_by_fault"])
        assert c["book_resyncs"] > 0 and c["book_messages"] > 0, (v, c)
        # ... and every book was resynced: all ready again with the faults still on
        assert c["ready_again"], (v, c)
        assert c["windows"] == c["closed"] + c["open"]
    assert sum(c["closed"] for c in r["venues"].values()) > 0
    o = r["opportunities"]
    assert r["recorder_missed"] == 0 and r["recorded_records"] > 0
    assert o["used_while_resyncing"] == 0, o["examples"]
    assert o["top_of_book_sized"] == 0
    assert o["open_or_update"] > 0          # the check had opportunities to check
    assert r["ok"]
