"""Every depth fault of the simulator on every venue, on the whole tree: the scenario and
its figures (issue 15, "Order books").

``arbpipe bench reliability --only book-faults`` runs it (``run``); its result is the
``book_faults`` section of bench/results/reliability.json.

Scenario: the default tree (config/arbpipe.toml: 8 venues, L2 books on) with a
``[simulator.faults.<venue>]`` table per venue holding the depth faults its protocol can
show (``arbpipe.sim.config.FaultConfig``; the venue modules of arbpipe/sim/ name theirs):

=============================  ===============================================================
venues                         faults
=============================  ===============================================================
binance, binance-usdm, gate    gap, duplicate diff, stale REST snapshot, REST snapshot HTTP 503
bybit-spot, bybit-linear       gap, duplicate diff, early diff (a delta before the snapshot)
okx (spot and SWAP)            gap, wrong checksum, duplicate diff, early diff
coinbase                       gap, duplicate diff, early diff
kraken                         wrong checksum, duplicate diff, early diff
=============================  ===============================================================

The tree runs ``seconds`` (90) with every fault on; meanwhile the feed rings are recorded
(``Recorder``) and every record of the ``opportunities`` ring is kept. Then, faults still
on, it waits until every venue has shown all its books ready in one sample of `arbpipe stat
feeds` (``ready_again``).

Figures per venue: book messages, resyncs by fault and rejects by reason (`arbpipe stat
feeds --json` as the recording ends), books ready at the end of the window / books; from
the recording, the not-ready windows of each book (a BOOK_RESYNC STATUS of the instrument
until its next QUOTE, which the feed publishes from the snapshot that makes it ready): how
many, closed, still open when the recording ends, time to ready (p50 / max ms) by the
fault that opened the window. A fault that hits a book already resyncing (a stale or
failed REST snapshot, an early diff at (re)subscribe) publishes no new STATUS: it is
counted in ``resyncs_by_fault`` and lengthens the window it falls in.

Checked against the opportunities ring (the detector must never use a book that is not
ready): no OPEN or UPDATE of a pair with a leg inside one of its not-ready windows
(``used_while_resyncing``, must be 0). The detector reads the feed rings in turn, so a
record of another ring stamped a little before or after the leg's STATUS or ready QUOTE
can be taken on the other side of it: inside ``SLACK_MS`` after the STATUS an opportunity
is counted apart (``in_slack``); one priced on the leg from a quote at or after the
window's end and not from the leg's last quote before it was taken after the ready quote
(``after_ready_quote``). Also: no opportunity sized on a top level only
(``OPP_TOP_OF_BOOK``: every leg has a book); opportunities of the resynced legs once ready
again (``on_faulted_legs_after_ready``) show that the check had something to check.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid

import numpy as np

from arbpipe.config import DEFAULT_PATH, parse_config
from arbpipe.replay.file import open_recording
from arbpipe.replay.recorder import Recorder
from arbpipe.symbols import PERP_ID_BIT
from bench.harness import Tree, cli
from bench.venue_faults import OppsReader
from shm_layouts import Kind, OppState
from shm_layouts.records import (MARKET_UPDATE_STATUS, OPP_BUY_PERP, OPP_SELL_PERP,
                                 OPP_TOP_OF_BOOK, BookFault, StatusReason,
                                 status_reason_code, status_reason_fault)

SECONDS = 90.0              # faults-on window
SLACK_MS = 50.0             # after a BOOK_RESYNC STATUS, for the detector to read it
REST = ("binance", "binance-usdm", "gate")
GAP, DUP, EARLY, CHECKSUM, STALE, FAIL = (0.004, 0.004, 0.25, 0.01, 0.25, 0.25)
FAULTS = {v: {"book_gap_p": GAP, "book_duplicate_p": DUP, "book_stale_snapshot_p": STALE,
              "book_snapshot_fail_p": FAIL} for v in REST}
FAULTS.update({v: {"book_gap_p": GAP, "book_duplicate_p": DUP, "book_early_diff_p": EARLY}
               for v in ("bybit-spot", "bybit-linear", "coinbase")})
FAULTS["okx"] = {"book_gap_p": GAP, "book_checksum_p": CHECKSUM, "book_duplicate_p": DUP,
                 "book_early_diff_p": EARLY}
FAULTS["kraken"] = {"book_checksum_p": CHECKSUM, "book_duplicate_p": DUP,
                    "book_early_diff_p": EARLY}
COUNTERS = ("frames", "quotes", "books", "books_ready", "book_messages", "book_levels",
            "book_resyncs", "reconnects", "rejects_total")


def faults(scale: float = 1.0) -> dict:
    """``FAULTS`` with every probability times ``scale`` (at most 1)."""
    return {v: {k: round(min(1.0, p * scale), 6) for k, p in f.items()}
            for v, f in FAULTS.items()}


def faults_toml(scale: float = 1.0) -> str:
    return "".join(f"\n[simulator.faults.{v}]\n" + "".join(f"{k} = {p}\n" for k, p in f.items())
                   for v, f in faults(scale).items())


def fault_config(base_text: str | None = None, scale: float = 1.0) -> str:
    """config/arbpipe.toml (books on, 20 updates/s per venue) with a free metrics port,
    frequent dislocations (opportunities to check) and ``FAULTS`` (times ``scale``)."""
    text = base_text if base_text is not None else open(DEFAULT_PATH).read()
    for pat, rep in ((r"(?m)^metrics_port = .*$", "metrics_port = 0"),
                     (r"(?m)^dislocation_rate_hz = .*$", "dislocation_rate_hz = 0.05")):
        text, n = re.subn(pat, rep, text, count=1)
        if n != 1:
            raise ValueError(f"config text has no line matching {pat!r}")
    return text + faults_toml(scale)


def _leg(venue, iid, perp):
    return (int(venue), int(iid) | (PERP_ID_BIT if perp else 0))


def windows(rec: np.ndarray) -> tuple[dict, dict]:
    """Not-ready windows per leg (venue_id, instrument_id) from a recording of the feed
    rings, in each ring's order: [BOOK_RESYNC status, next QUOTE of the leg) as [start ns,
    end ns or None (still open), fault]; and every QUOTE of each leg as (recv ns, bid, ask)
    arrays."""
    st = rec.view(MARKET_UPDATE_STATUS)
    out: dict = {}
    kinds = rec["kind"]
    sel = np.flatnonzero((kinds == Kind.STATUS) | (kinds == Kind.QUOTE))
    open_: dict = {}
    for k in sel:                       # the recording keeps each ring's order
        kind = int(kinds[k])
        leg = (int(rec["venue_id"][k]), int(rec["instrument_id"][k]))
        t = int(rec["recv_ts_ns"][k])
        if kind == Kind.STATUS and leg[1] != 0 and \
                status_reason_code(int(st["status_reason"][k])) == StatusReason.BOOK_RESYNC:
            if leg not in open_:
                w = [t, None, status_reason_fault(int(st["status_reason"][k]))]
                open_[leg] = w
                out.setdefault(leg, []).append(w)
        elif kind == Kind.QUOTE and leg in open_:
            open_.pop(leg)[1] = t
    q = rec[kinds == Kind.QUOTE]
    quotes = {}
    for leg in out:
        m = q[(q["venue_id"] == leg[0]) & (q["instrument_id"] == leg[1])]
        quotes[leg] = (m["recv_ts_ns"].astype(np.int64), m["bid"], m["ask"])
    return out, quotes


def _ready_price(quotes, start: int, end: int, price: float, buy: bool) -> bool:
    """``price`` is the ask (buy leg) / bid (sell leg) of a quote of the leg from ``end``
    (the quote that made it ready) on, within a second, and not that of its last quote
    before ``start`` (the one a detector ignoring the resync would still hold)."""
    t, bid, ask = quotes
    px = ask if buy else bid
    before = px[t < start]
    if len(before) and before[-1] == price:
        return False
    m = (t >= end) & (t < end + 1_000_000_000)
    return bool(np.any(px[m] == price))


def check_opps(opps: np.ndarray, wins: dict, quotes: dict, slack_ns: int) -> dict:
    """Opportunities (OPEN / UPDATE) with a leg inside one of its not-ready windows.

    The detector reads the feed rings in turn, so a record of another ring stamped a little
    before or after a leg's STATUS or ready QUOTE can be taken on the other side of it:
    inside ``slack_ns`` after the STATUS an opportunity is counted apart (``in_slack``);
    one whose price on the leg is that of a quote from the window's end on (the detector
    had taken the ready book's quote first) is ``after_ready_quote``; any other is
    ``used_while_resyncing``."""
    live = opps[opps["state"] != OppState.CLOSED]
    used = in_slack = after_ready = 0
    examples = []
    legs_b = [_leg(v, i, f & OPP_BUY_PERP) for v, i, f in
              zip(live["buy_venue"], live["instrument_id"], live["flags"])]
    legs_s = [_leg(v, i, f & OPP_SELL_PERP) for v, i, f in
              zip(live["sell_venue"], live["instrument_id"], live["flags"])]
    for n, t in enumerate(live["trigger_recv_ns"]):
        t = int(t)
        for leg, buy in ((legs_b[n], True), (legs_s[n], False)):
            for a, b, fault in wins.get(leg, ()):
                if a <= t and (b is None or t < b):
                    price = float(live["buy_ask"][n] if buy else live["sell_bid"][n])
                    if t < a + slack_ns:
                        in_slack += 1
                    elif b is not None and _ready_price(quotes[leg], a, b, price, buy):
                        after_ready += 1
                    else:
                        used += 1
                        if len(examples) < 5:
                            examples.append({"leg": leg, "trigger_ns": t, "window": [a, b],
                                             "fault": fault, "price": price,
                                             "side": "buy" if buy else "sell"})
    faulted = {leg for leg, ws in wins.items() if ws}
    after = sum(1 for n, t in enumerate(live["trigger_recv_ns"])
                if any(leg in faulted and any(b is not None and b <= t for _, b, _ in wins[leg])
                       for leg in (legs_b[n], legs_s[n])))
    return {"opportunities": int(len(opps)), "open_or_update": int(len(live)),
            "used_while_resyncing": used, "in_slack": in_slack,
            "after_ready_quote": after_ready, "examples": examples,
            "top_of_book_sized": int(((opps["flags"] & OPP_TOP_OF_BOOK) != 0).sum()),
            "on_faulted_legs_after_ready": after,
            "closed": int((opps["state"] == OppState.CLOSED).sum())}


def _ms(xs) -> dict:
    if not xs:
        return {"n": 0}
    a = np.sort(np.asarray(xs, float)) / 1e6
    return {"n": len(a), "p50_ms": round(float(np.median(a)), 1),
            "p99_ms": round(float(a[min(len(a) - 1, int(0.99 * len(a)))]), 1),
            "max_ms": round(float(a[-1]), 1)}


def ready_figures(wins: dict, venue_ids: dict) -> dict:
    """Per venue: windows, closed, still open, time to ready overall and by fault."""
    names = {i: v for v, i in venue_ids.items()}
    out: dict = {}
    for (vid, _), ws in wins.items():
        v = out.setdefault(names.get(vid, str(vid)), {"windows": 0, "closed": 0, "open": 0,
                                                      "_all": [], "_by": {}})
        for a, b, fault in ws:
            v["windows"] += 1
            if b is None:
                v["open"] += 1
                continue
            v["closed"] += 1
            v["_all"].append(b - a)
            name = BookFault(fault).name.lower() if fault in BookFault._value2member_map_ \
                else str(fault)
            v["_by"].setdefault(name, []).append(b - a)
    for v in out.values():
        v["time_to_ready"] = _ms(v.pop("_all"))
        v["time_to_ready_by_fault"] = {k: _ms(x) for k, x in sorted(v.pop("_by").items())}
    return dict(sorted(out.items()))


def run(instance: str | None = None, workdir: str | None = None, seconds: float = SECONDS,
        scale: float = 1.0, keep: bool = False, log=print) -> dict:
    """The scenario on a fresh tree; -> its figures (``ok``: recovery and the detector's
    invariant held; ``error`` when a step timed out). ``scale`` multiplies the fault
    probabilities; ``keep`` keeps the workdir (config, recording). The tree is always taken
    down."""
    instance = instance or "bkf" + uuid.uuid4().hex[:8]
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="arbpipe-bookfaults-")
    cfg_path = os.path.join(workdir, "book_faults.toml")
    text = fault_config(scale=scale)
    cfg = parse_config(text)
    with open(cfg_path, "w") as f:
        f.write(text)
    tree = Tree(instance, workdir, cfg_path)
    out: dict = {"ok": False, "seconds": seconds, "slack_ms": SLACK_MS, "faults": faults(scale),
                 "command": "arbpipe bench reliability --only book-faults"}
    opps = recorder = None
    t0 = time.monotonic()

    def feeds():
        rows = json.loads(cli("stat", "feeds", "--json", "--instance", instance,
                               env=tree.env).stdout)
        return {r["venue"]: r for r in rows}
    try:
        tree.up()
        log(f"book-faults: tree up ({time.monotonic() - t0:.0f} s); {seconds:g} s with every "
            f"depth fault on")
        opps = OppsReader(instance)
        rec_path = os.path.join(workdir, "feeds.arbrec")
        recorder = Recorder(rec_path, instance=instance, cfg=cfg)
        f0 = feeds()
        t_start = time.monotonic()
        while time.monotonic() - t_start < seconds:
            recorder.poll()
            opps.poll(0.05)
        f1 = feeds()
        recorder.poll()
        opps.poll(0.05)
        # faults still on: each venue shows all its books ready in one sample
        ready_again: dict = {v: r["books"] > 0 and r["books_ready"] == r["books"]
                             for v, r in f1.items()}
        deadline = time.monotonic() + 90
        while not all(ready_again.values()) and time.monotonic() < deadline:
            recorder.poll()
            opps.poll(0.05)
            for v, r in feeds().items():
                ready_again[v] = ready_again.get(v, False) or \
                    (r["books"] > 0 and r["books_ready"] == r["books"])
            time.sleep(0.3)
        recorder.poll()
        opps.poll(0.05)
        f2 = feeds()            # the counters as the recording ends
        recorder.poll()
        recorder.writer.close()
        det = json.loads(cli("stat", "detector", "--json", "--instance", instance,
                              env=tree.env).stdout)
        out["stat_feeds_text"] = cli("stat", "feeds", "--instance", instance,
                                      env=tree.env).stdout
        rec = open_recording(rec_path).records
        wins, quotes = windows(rec)
        venue_ids = {r["venue"]: r["venue_id"] for r in f2.values()}
        ready = ready_figures(wins, venue_ids)
        out["venues"] = {}
        for v, r in sorted(f2.items()):
            r0, r1 = f0.get(v, {}), f1.get(v, {})
            out["venues"][v] = {
                **{k: r[k] for k in COUNTERS},
                "book_messages_in_window": r1.get("book_messages", 0) - r0.get("book_messages", 0),
                "resyncs_by_fault": r["resyncs_by_fault"], "rejects": r["rejects"],
                "books_ready_end_of_window": f"{r1.get('books_ready', 0)}/{r1.get('books', 0)}",
                "ready_again": bool(ready_again.get(v)),
                **ready.get(v, {"windows": 0, "closed": 0, "open": 0,
                                "time_to_ready": {"n": 0}, "time_to_ready_by_fault": {}})}
        out["detector"] = {k: det.get(k) for k in
                           ("opened", "closed_quote_stale", "closed_venue_down",
                            "filter_status", "filter_stale", "status_updates", "updates")
                           if k in det}
        out["opportunities"] = check_opps(opps.all(), wins, quotes, int(SLACK_MS * 1e6))
        out["recorded_records"] = int(len(rec))
        out["recorder_missed"] = int(recorder.missed)
        o = out["opportunities"]
        vs = out["venues"].values()
        out["ok"] = bool(len(out["venues"]) == 8 and all(v["ready_again"] for v in vs)
                         and all(v["book_resyncs"] > 0 for v in vs)
                         and o["used_while_resyncing"] == 0 and o["top_of_book_sized"] == 0
                         and out["recorder_missed"] == 0)
    except (TimeoutError, RuntimeError) as e:
        out["error"] = str(e)
    finally:
        for x in (opps, recorder):
            try:
                if x is not None:
                    x.close()
            except Exception:  # noqa: BLE001 - the tree must go down whatever happened
                pass
        out["pids"] = tree.pids()
        tree.down()
        out["wall_s"] = round(time.monotonic() - t0, 1)
        if own and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif keep:
            out["workdir"] = workdir
    return out


def render(r: dict) -> str:
    if not r.get("venues"):
        return f"book faults: {r.get('error', 'no result')}"
    lines = [f"book faults (simulator, every depth fault on, {r['seconds']:g} s), from "
             f"`arbpipe stat feeds` and the recorded feed rings:"]
    for v, c in r["venues"].items():
        ttr = c["time_to_ready"]
        lines.append(f"  {v:<13} {c['book_messages']:>7} book msgs, resyncs "
                     + ", ".join(f"{k}={n}" for k, n in c["resyncs_by_fault"].items())
                     + f"; ready {c['books_ready_end_of_window']} at the end, again "
                     f"{'yes' if c['ready_again'] else 'NO'}; time to ready p50 "
                     f"{ttr.get('p50_ms', '-')} ms max {ttr.get('max_ms', '-')} ms")
    o = r["opportunities"]
    lines.append(f"  opportunities {o['opportunities']} ({o['open_or_update']} open/update): "
                 f"{o['used_while_resyncing']} used a book not ready ({o['in_slack']} within "
                 f"{r['slack_ms']:g} ms of its resync, {o.get('after_ready_quote', 0)} priced "
                 f"from its ready quote), {o['top_of_book_sized']} top-of-book "
                 f"sized, {o['on_faulted_legs_after_ready']} on faulted legs after ready")
    if r.get("error"):
        lines.append(f"  error: {r['error']}")
    return "\n".join(lines)
