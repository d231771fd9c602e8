"""A recording of a live tree, backtested with the tree's own config, gives the decisions the
live strategy made: every opportunity record the live strategy decided is decided by the
backtest too; those the live strategy read on time (within ``MAX_LAG_NS`` of the trigger)
get the same outcome (order sent, or the same reject reason), and the opportunities traded
alike fill at the same prices and sizes.

The tree runs OKX alone (spot and SWAP make the pairs; one feed ring, so the detector's
input order is the file's; ``tests/system/test_replay_tree.py``), so the backtest's
detector gives the live opportunity records. Why a decision can still differ, and what
the test does about each:

* time: the live strategy decides at its wall-clock read time and fills ``latency_ms``
  after it, when its loop wakes; the backtest decides at the trigger's receive time and
  fills exactly ``latency_ms`` later. Cooldown, rate windows, quote age, position and loss
  limits carry one decision's timing into the next ones, so the tree runs with them out
  of play and ``latency_ms = 0`` (``UNCOUPLED``). With the default limits, one decision
  taken late live (the strategy starts after the detector, so its first opportunities are
  read up to a second late, in one batch) changes later ones through the cooldown and the
  rate windows: about three in four decisions agreed in a run measured that way;
* batching: the live strategy reads up to 256 opportunities, decides them all, then polls
  fills; the backtest fills at the due time, between two opportunities. A record read late
  live can therefore find the previous pair still in flight (IN_FLIGHT live, an order in
  the backtest): decisions read late are counted and printed, not held to agree;
* the book: the live strategy peeks the feed ring when it reads an opportunity, so its
  book may already hold quotes received after the trigger; the backtest's book is the book
  at the trigger time. A re-priced net, a size or a fill can then differ: decisions are
  held to ``MIN_AGREEMENT``; a fill that differs must have such a newer update of its leg
  in the recording (``book_moved``), else the test fails.
"""
import collections
import os
import re
import signal

from arbpipe.backtest import engine as E
from arbpipe.backtest import load as LD
from arbpipe.config import load_config
from arbpipe.detect.stats import read_stats
from arbpipe.replay.recorder import Recorder
from arbpipe.trading.journal import read_journal
from arbpipe.trading.view import read_state
from bench.harness import Tree
from shm_layouts.journal import JournalFlag, JournalKind, RejectReason, Side
from shm_layouts.records import OPP_ID_NUMBER_MASK
from tests.helpers import wait_for
from tests.system.test_replay_tree import _okx_only, _producers

MIN_AGREEMENT = 0.9
MIN_ORDERS = 30                  # pairs the live strategy orders before the recording
MAX_LAG_NS = 50_000_000         # decisions compared: read live within 50 ms of the trigger


# limits whose state couples one decision to the timing of earlier ones (cooldown, rate
# windows, position and loss limits, quote age, the latency window of in-flight orders)
# taken out of play, so that a decision the live strategy took late (start-up) does not
# change the later ones; what remains is decided on the book and the opportunity
UNCOUPLED = {"cooldown_ms": 0.0, "max_orders_per_s": 1000000, "max_orders_per_min": 100000000,
             "max_open_orders": 100000, "max_position_notional": 1e12,
             "max_venue_notional": 1e12, "max_gross_notional": 1e12, "daily_loss_limit": 1e12,
             "max_drawdown": 1e12, "max_quote_age_ms": 86400000.0, "latency_ms": 0.0,
             "starting_balance": 1e12}


def _strategy_keys(path: str, values: dict) -> None:
    text = open(path).read()
    a = re.search(r"(?m)^\[strategy\].*$", text).end()
    b = a + re.search(r"(?m)^\[", text[a:]).start()
    body = text[a:b]
    for k, v in values.items():
        body, n = re.subn(rf"(?m)^{k} = [^#\n]*", f"{k} = {v} ", body, count=1)
        assert n == 1, k
    open(path, "w").write(text[:a] + body + text[b:])


def decisions(entries) -> dict[int, list[tuple[str, int]]]:
    """Per opportunity number: (outcome, read lag ns) of each record decided, in order; the
    outcome is "order" or the reject reason, the lag read_ns - trigger_recv_ns."""
    out = collections.defaultdict(list)
    for e in entries:
        k, flags = int(e["kind"]), int(e.get("flags", 0) or 0)
        opp = int(e.get("opp_id", 0) or 0) & OPP_ID_NUMBER_MASK
        lag = int(e.get("read_ns", 0) or 0) - int(e.get("trigger_recv_ns", 0) or 0)
        if k == JournalKind.REJECT:
            out[opp].append((RejectReason(int(e["reason"])).name.lower(), lag))
        elif k == JournalKind.ORDER and int(e["side"]) == Side.BUY and \
                not flags & int(JournalFlag.UNWIND_LEG):
            out[opp].append(("order", lag))
    return out


def fills(entries) -> dict[int, list[tuple]]:
    """Per opportunity number: (side, price, qty) of each fill of its orders (unwinds out)."""
    out = collections.defaultdict(list)
    for e in entries:
        if int(e["kind"]) == JournalKind.FILL and \
                not int(e.get("flags", 0) or 0) & int(JournalFlag.UNWIND_LEG):
            out[int(e["opp_id"]) & OPP_ID_NUMBER_MASK].append(
                (int(e["side"]), round(float(e["price"]), 9), round(float(e["qty"]), 12)))
    return out


def book_moved(data, live_entries, opp: int) -> bool:
    """Whether the recording has an update of one of the opportunity's legs received after
    its trigger and by the live strategy's last fill of it: the live book (peeked when the
    strategy ran) could then hold a quote the backtest's book (as of the trigger) did not."""
    mine = [e for e in live_entries if int(e.get("opp_id", 0) or 0) & OPP_ID_NUMBER_MASK == opp
            and int(e["kind"]) == JournalKind.FILL]
    lo = min(int(e["trigger_recv_ns"]) for e in mine)
    hi = max(int(e["ts_ns"]) for e in mine)
    legs = {(int(e["venue_id"]), int(e["instrument_id"])) for e in mine}
    r = data.records
    sel = (data.recv > lo) & (data.recv <= hi)
    return any(((r["venue_id"][sel] == v) & (r["instrument_id"][sel] == i)).any()
               for v, i in legs)


def test_a_backtest_of_a_recorded_live_tree_makes_the_live_decisions(instance, tmp_path):
    cfg_path = _okx_only(str(tmp_path / "okx.toml"))
    _strategy_keys(cfg_path, UNCOUPLED)
    cfg = load_config(cfg_path)
    rec_path = str(tmp_path / "live.arbrec")
    live = Tree(instance, str(tmp_path / "live"), cfg_path)
    live.up()
    try:
        wait_for(lambda: ((read_state(instance) or {}).get("counters", {}).get("orders", 0)
                          >= 2 * MIN_ORDERS), timeout=300,
                 what=f"{MIN_ORDERS} pairs ordered by the live strategy")
        producers = _producers(live)
        for pid in producers:                  # freeze the input; the tree drains it
            os.kill(pid, signal.SIGSTOP)
        try:
            rec = Recorder(rec_path, instance=instance, cfg=cfg, from_start=True)
            try:
                assert rec.poll() > 0 and rec.missed == 0
            finally:
                rec.close()
            n = len(LD.load(rec_path))
            wait_for(lambda: read_stats(instance)["updates"] == n, timeout=60,
                     what="the live detector to have read every recorded update")
            published = read_stats(instance)["published"]

            def drained():
                st = read_state(instance) or {}
                c = st.get("counters", {})
                return c.get("opportunities_read", 0) + c.get("lost", 0) >= published and \
                    c.get("in_flight", 1) == 0
            wait_for(drained, timeout=60, what="the live strategy to decide and fill everything")
            state = read_state(instance)
            # before the producers go on: later entries decide records the file does not hold
            live_entries = read_journal(os.path.join(live.dir, "journal.jsonl"))
        finally:
            for pid in producers:
                os.kill(pid, signal.SIGCONT)
    finally:
        live.down()
    assert state["counters"]["lost"] == 0
    data = LD.load(rec_path)
    run = E.run(cfg, data)

    ours, theirs = decisions(run.entries), decisions(live_entries)
    assert theirs, "the live strategy decided nothing"
    # every opportunity the live strategy decided is decided by the backtest, as often
    missing = [o for o in theirs if len(ours.get(o, [])) < len(theirs[o])]
    assert not missing, f"opportunities decided live only: {missing[:10]}"
    assert all(lag == 0 for v in ours.values() for _, lag in v)   # recording time
    # the k-th decision of an opportunity live and in the backtest decide the same record;
    # the live strategy read some records late (its start-up, a busy machine): those
    # decisions are timing's, counted apart
    pairs = [(a, b, lag) for o in theirs for (a, lag), (b, _) in zip(theirs[o], ours[o])]
    prompt = [(a, b) for a, b, lag in pairs if lag <= MAX_LAG_NS]
    same = sum(a == b for a, b in prompt)
    diff = collections.Counter(f"live {a} / backtest {b}" for a, b in prompt if a != b)
    late = collections.Counter(f"live {a} / backtest {b}" for a, b, lag in pairs
                               if lag > MAX_LAG_NS and a != b)
    print(f"\nlive/backtest: {same}/{len(prompt)} decisions read within "
          f"{MAX_LAG_NS / 1e6:.0f} ms agree; differences: {dict(diff)}; "
          f"{len(pairs) - len(prompt)} read later, differences there: {dict(late)}")
    assert len(prompt) >= MIN_ORDERS, "too few decisions read on time to compare"
    assert same / len(prompt) >= MIN_AGREEMENT, (same, len(prompt), diff)
    # the fills of the opportunities decided alike and on time: the same prices and sizes
    # (latency 0: the live strategy fills in the pass that sent, on its book of then)
    alike = [o for o in theirs if all(lag <= MAX_LAG_NS and a == b for (a, lag), (b, _) in
                                      zip(theirs[o], ours[o]))
             and any(a == "order" for a, _ in theirs[o])]
    fl, fb = fills(live_entries), fills(run.entries)
    differ = [o for o in alike if fl[o] != fb[o][:len(fl[o])]]
    moved = [o for o in differ if book_moved(data, live_entries, o)]
    print(f"fills: {len(alike) - len(differ)}/{len(alike)} opportunities traded alike fill "
          f"alike; {len(moved)} differ where the live book had moved on before the live fill")
    assert len(alike) >= 5
    assert sorted(moved) == sorted(differ), "fills differ on a book the backtest also had"
