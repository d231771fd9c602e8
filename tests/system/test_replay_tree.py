"""The same file gives the same opportunities and the same books: a live tree recorded,
replayed into a fresh tree, yields the live tree's opportunity records (ids and wall-clock
stamps aside) and its L2 books level for level.

The trees run one feed ring (OKX alone: its spot and SWAP legs make the pairs), so that the
detector's input order is the ring's order in both trees. With several rings the detector
interleaves near-simultaneous updates as they arrive, which a recording of the rings does
not capture (README, "record / replay"). Quote age and persistence are out of play
(``max_quote_age_ms`` far above the run, ``persist_ms = 0``): a replay restamps receive
times, and decisions that compare them would depend on the replay's pacing."""
import os
import re
import signal

import numpy as np

from arbpipe.books.segment import BooksSegment
from arbpipe.config import load_config
from arbpipe.detect.stats import read_stats
from arbpipe.replay.file import Recording
from arbpipe.replay.recorder import Recorder
from arbpipe.transport import kernels as K
from arbpipe.transport.rings import attach_any
from bench.harness import Tree, tree_config
from bench.recorded import detect_recording
from bench.soak import ReplayTree
from shm_layouts import OPPORTUNITY, OppState
from tests.helpers import wait_for

# what may differ between two runs of the same input: ids, sequence and wall-clock stamps
# (trigger_recv_ns: a replay restamps receive times)
VARIES = ("opp_id", "seq", "detect_ns", "opened_ns", "trigger_recv_ns")
FIELDS = [n for n in OPPORTUNITY.names if n not in VARIES]


def _okx_only(path: str) -> str:
    cfg = tree_config(path, 50.0)
    text = open(cfg).read()
    for v in ("binance", "binance-usdm", "bybit-spot", "bybit-linear", "coinbase", "kraken",
              "gate"):
        text, n = re.subn(rf"(?m)^\[venues\.{re.escape(v)}\]\n", f"[venues.{v}]\nenabled = false\n",
                          text)
        assert n == 1, v
    for key, value in (("max_quote_age_ms", "86400000.0"), ("persist_ms", "0.0"),
                       ("dislocation_rate_hz", "0.5")):
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)
        assert n == 1, key
    open(cfg, "w").write(text)
    return cfg


def _opportunities(instance: str) -> np.ndarray:
    """Every record the opportunities ring still holds, from its first."""
    r = attach_any("opportunities", instance=instance)
    try:
        n = OPPORTUNITY.itemsize // 8
        buf, out = np.zeros(65536 * n, np.int64), np.zeros(3, np.int64)
        K.peek(r.w, int(r.KIND), 0, buf, 65536, out)
        assert int(out[0]) == 0, "the ring wrapped: the run is too long for the test"
        return buf[:int(out[1]) * n].view(OPPORTUNITY).copy()
    finally:
        r.close()


def _rows(opps: np.ndarray) -> list[tuple]:
    return [tuple(x) for x in opps[FIELDS].tolist()]


def _books(instance: str, cfg) -> dict:
    """Every (instrument, leg) book of the detector's ``books`` segment: state and levels."""
    seg = BooksSegment.attach(instance)
    try:
        out = {}
        for iid in range(1, len(cfg.instruments) + 1):
            for leg in range(len(cfg.legs())):
                b = seg.read(iid, leg)
                out[iid, leg] = (b["state"], b["bids"], b["asks"])
        return out
    finally:
        seg.close()


def _producers(tree) -> list[int]:
    return [p["pid"] for p in tree.status()["processes"]
            if p["role"] == "simulator" or p["role"].startswith("feed")]


def test_a_recorded_live_tree_replays_into_the_same_opportunities(instance, tmp_path):
    cfg_path = _okx_only(str(tmp_path / "okx.toml"))
    cfg = load_config(cfg_path)
    rec_path = str(tmp_path / "live.arbrec")
    live_inst = instance
    live = Tree(live_inst, str(tmp_path / "live"), cfg_path)
    live.up()
    try:
        # a live run long enough for opportunities to open, move and close
        wait_for(lambda: len(_opportunities(live_inst)) >= 150, timeout=240,
                 what="150 opportunity records from the live tree")
        producers = _producers(live)
        for pid in producers:                  # freeze the input; the detector drains it
            os.kill(pid, signal.SIGSTOP)
        try:
            rec = Recorder(rec_path, instance=live_inst, cfg=cfg, from_start=True)
            try:
                assert rec.poll() > 0 and rec.missed == 0
            finally:
                rec.close()
            n = len(Recording(rec_path))
            wait_for(lambda: read_stats(live_inst)["updates"] == n, timeout=60,
                     what="the live detector to have read every recorded update")
            live_opps = _opportunities(live_inst)
            live_books = _books(live_inst, cfg)
        finally:
            for pid in producers:
                os.kill(pid, signal.SIGCONT)
    finally:
        live.down()

    states = set(live_opps["state"].tolist())
    assert {OppState.OPEN, OppState.UPDATE, OppState.CLOSED} <= states, states
    # the kernel over the file, in replay order, gives the live records (stamps included)
    ref = detect_recording(rec_path, cfg)
    assert len(ref) == len(live_opps)
    assert np.array_equal(ref["trigger_recv_ns"], live_opps["trigger_recv_ns"])
    assert _rows(ref) == _rows(live_opps)

    # the file replayed into a fresh tree: the same records again
    replay_inst = instance + "r"
    again = ReplayTree(replay_inst, str(tmp_path / "replay"), cfg_path, rec_path, 2000.0,
                       loop=False)
    again.up()
    try:
        wait_for(lambda: (read_stats(replay_inst) or {}).get("updates") == n, timeout=240,
                 what=f"the replay tree's detector to read all {n} updates")
        replayed = _opportunities(replay_inst)
        replayed_books = _books(replay_inst, cfg)
    finally:
        again.down()
    assert len(replayed) == len(live_opps)
    assert _rows(replayed) == _rows(live_opps)
    # the L2 books (LEVEL records in the feed ring) are rebuilt exactly, level for level
    ready = [k for k, b in live_books.items() if b[0] == "ready" and b[1] and b[2]]
    assert len(ready) >= 10, "OKX books on (depth 20 by default) should be ready"
    assert replayed_books == live_books
    assert not [e for e in os.listdir("/dev/shm") if f"arbpipe.{replay_inst}." in e]
