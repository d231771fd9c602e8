"""`arbpipe bench reliability [--quick] [--json]`: crashes, bad input, soak, in figures.

Parts (each returns a dict; ``run`` puts them together):

* ``chains`` (bench/chains.py): SPSC, MPMC and broadcast rings under the real
  ``Supervisor`` (arbpipe.ops.supervisor), their producers and consumers SIGKILLed at
  random moments and restarted by it; every record sequence-checked (nothing lost,
  duplicated, reordered or torn) and every ring ledger balanced.
* ``tree`` (bench/tree_kills.py): the whole tree (``arbpipe up --detach``), every process
  role SIGKILLed ``kills`` times at random moments: restart and resume times, every record
  of the feed, opportunities and journal rings checked by a read-only tap; then the whole
  tree SIGKILLed and started again over its stale segments.
* ``faults``: bench/venue_faults.py: a fault per venue through the simulator (storm,
  planned disconnects, bad frames, half-open, refusal, stall), each one's counts from
  `arbpipe stat feeds`, and a venue gone silent without a word checked out of every
  opportunity within the detector's max quote age.
* ``fuzz``: bench/fuzz.py over every venue parser.
* ``fuzz-books``: bench/fuzz.py with L2 books on (bench/fuzz_books.py): every venue's depth
  channel and, for binance, binance-usdm and gate, the REST snapshot bodies; per venue the
  frames, crashes, rejects by reason, resyncs by fault, and every book equal to the venue's
  reference after its final resync (a book that took garbage was resynced, not trusted).
* ``book-faults``: bench/book_faults.py: the whole tree with every depth fault of the
  simulator on every venue; resyncs by fault, books ready again, and no opportunity on a
  leg whose book was resyncing.
* ``soak``: bench/soak.py (RSS, fds, drops over N minutes; by default the tree fed by the
  replay process at 100 K updates/s, the issue's target rate).

Output shape: {"kills": {role: n}, "records_checked", "records_lost", "torn_records",
"frames_fuzzed", "crashes", "soak": {"minutes", "rss_growth_pct", "fd_growth", "drops"},
...details}.
"""
from __future__ import annotations

import os
import sys
import time

from bench import book_faults, fuzz, soak, venue_faults
from bench.chains import chains
from bench.harness import ROOT
from bench.tree_kills import tree


PARTS = ("chains", "tree", "faults", "fuzz", "fuzz-books", "book-faults", "soak")
DEFAULT_PARTS = ("chains", "tree", "faults", "fuzz", "soak")
SECTIONS = {"chains": ("chains",), "tree": ("tree", "restart_max_s"),
            "faults": ("venue_faults", "venue_faults_ok"), "fuzz": ("fuzz", "frames_fuzzed"),
            "fuzz-books": ("fuzz_books", "fuzz_books_ok"),
            "book-faults": ("book_faults", "book_faults_ok"), "soak": ("soak",)}


def run(quick: bool = False, kills: int | None = None, fuzz_frames: int | None = None,
        soak_minutes: float | None = None, rate_hz: float | None = None, progress=True,
        parts=DEFAULT_PARTS, soak_source: str = "replay",
        soak_rate: float = 100_000.0) -> dict:
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if progress else (lambda s: None)
    kills = kills if kills is not None else (3 if quick else 20)
    fuzz_frames = fuzz_frames if fuzz_frames is not None else (20_000 if quick else 1_000_000)
    soak_minutes = soak_minutes if soak_minutes is not None else (0.5 if quick else 5.0)
    rate_hz = rate_hz if rate_hz is not None else 200.0
    t0 = time.time()
    out: dict = {"quick": quick, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "kills": {}, "records_checked": 0, "records_lost": 0, "torn_records": 0,
                 "frames_fuzzed": 0, "crashes": 0}
    if "chains" in parts:
        log(f"chains: SPSC, MPMC and broadcast rings, {kills} kills per process kind")
        c = chains(kills=kills, log=log)
        out["chains"] = c
        for k, v in c.get("kills", {}).items():
            out["kills"][f"chain:{k}"] = v
        out["records_checked"] += c.get("records_checked", 0)
        out["records_lost"] += c.get("records_lost", 0) + c.get("violation_count", 0)
        out["torn_records"] += c.get("torn_records", 0)
    if "tree" in parts:
        log(f"tree: every role killed {kills} times at random moments (simulator {rate_hz}/s "
            f"per venue)")
        tr = tree(kills=kills, rate_hz=rate_hz, log=log)
        out["tree"] = tr
        for k, v in tr.get("kills", {}).items():
            out["kills"][k] = v
        tap = tr.get("tap", {})
        out["records_checked"] += tap.get("records_checked", 0)
        out["torn_records"] += tap.get("torn", 0)
        out["records_lost"] += tap.get("feed_seq_gaps_unexplained", 0)
        br = tr.get("broadcast_reader", {})
        out["records_lost"] += 0 if br.get("accounted", True) else 1
        out["restart_max_s"] = tr.get("restart_s", {}).get("max")
    if "faults" in parts:
        log("faults: a fault per venue through the simulator, then a silent venue")
        vf = venue_faults.run(log=log)
        out["venue_faults"] = {k: v for k, v in vf.items() if k not in ("pids", "faults")}
        out["venue_faults_ok"] = bool(vf.get("ok"))
    if "fuzz" in parts:
        log(f"fuzz: {fuzz_frames:,} frames per venue")
        fz = fuzz.run(fuzz_frames)
        out["fuzz"] = {k: v for k, v in fz.items() if k != "venues"}
        out["fuzz"]["venues"] = {v: {k: x for k, x in d.items() if k != "examples"}
                                 for v, d in fz["venues"].items()}
        out["fuzz"]["examples"] = {v: d["examples"] for v, d in fz["venues"].items()
                                   if d["examples"]}
        out["frames_fuzzed"] = fz["total"]["frames"]
        out["crashes"] = fz["total"]["crashes"] + fz["total"]["parse_errors"]
    if "fuzz-books" in parts:
        log(f"fuzz-books: {fuzz_frames:,} depth-channel frames per venue (books of "
            f"{fuzz.BOOK_DEPTH} levels)")
        fb = fuzz.run(fuzz_frames, depth=fuzz.BOOK_DEPTH)
        out["fuzz_books"] = {k: v for k, v in fb.items() if k != "venues"}
        out["fuzz_books"]["venues"] = {v: {k: x for k, x in d.items() if k != "examples"}
                                       for v, d in fb["venues"].items()}
        out["fuzz_books"]["examples"] = {v: d["examples"] for v, d in fb["venues"].items()
                                         if d["examples"]}
        out["fuzz_books_ok"] = fuzz_books_ok(fb)
        out["crashes"] += book_crashes(fb)
    if "book-faults" in parts:
        log("book-faults: the whole tree with every depth fault on every venue")
        bf = book_faults.run(log=log)
        out["book_faults"] = {k: v for k, v in bf.items() if k != "pids"}
        out["book_faults_ok"] = bool(bf.get("ok"))
    if "soak" in parts:
        if soak_minutes > 0:
            log(f"soak: {soak_minutes} min, {soak_source} at {soak_rate:,.0f} updates/s")
            sk, saved = soak.run(minutes=soak_minutes, rate=soak_rate, source=soak_source,
                                 progress=progress), None
        else:   # --soak-minutes 0: the newest saved soak result (`arbpipe bench soak`)
            sk, saved = soak.latest(), os.path.relpath(soak.RESULTS_PATH, ROOT)
        if sk is not None:
            out["soak"] = {"minutes": sk["minutes"], "rss_growth_pct": sk["rss_growth_pct"],
                           "fd_growth": sk["fd_growth"], "drops": sk["drops"],
                           "updates_per_s": sk.get("updates_per_s"),
                           "source": sk.get("source", "sim"),
                           "rate": sk.get("rate", sk.get("target_updates_per_s")),
                           "from": saved or "this run", "detail": sk}
    # where each section's figures come from: this run, or a saved result copied in
    keys = {"chains": "chains", "tree": "tree", "faults": "venue_faults", "fuzz": "fuzz",
            "fuzz-books": "fuzz_books", "book-faults": "book_faults", "soak": "soak"}
    out["measured"] = {part: f"this run (started {out['started']})"
                       for part in parts if keys[part] in out}
    if out.get("soak", {}).get("from", "this run") != "this run":
        out["measured"]["soak"] = (f"copied from {out['soak']['from']} (finished "
                                   f"{out['soak']['detail'].get('finished', '?')})")
    out["wall_s"] = round(time.time() - t0, 1)
    return out


def book_crashes(fb: dict) -> int:
    t = fb["total"]
    return t["crashes"] + t["parse_errors"] + t.get("rest_crashes", 0)


def fuzz_books_ok(fb: dict) -> bool:
    """Every depth frame parsed or refused by a named reason, nothing raised, every record
    sane, and every book exact after its final resync."""
    t = fb["total"]
    return (book_crashes(fb) == 0 and t["silent"] == 0 and t["bad_records"] == 0
            and t["accounted"] and not t["unnamed_reasons"] and t["book_violations"] == 0
            and t["rest_silent"] == 0 and t["final_exact"] == t["books"] > 0)


def merge(saved: dict, new: dict) -> dict:
    """``saved`` (an earlier reliability.json) with the parts ``new`` measured replaced by
    ``new``'s (``measured`` says where each part comes from); the totals follow."""
    out = dict(saved, measured=dict(saved.get("measured", {})))
    for part in new.get("measured", {}):
        for k in SECTIONS[part]:
            if k in new:
                out[k] = new[k]
        out["measured"][part] = new["measured"][part]
    if "fuzz" in out:
        t = out["fuzz"]["total"]
        out["crashes"] = t["crashes"] + t["parse_errors"]
    if "fuzz_books" in out:
        out["crashes"] = out.get("crashes", 0) + book_crashes(out["fuzz_books"])
    return out


def render(r: dict) -> str:
    lines = ["reliability figures" + (" (quick)" if r.get("quick") else "")]
    lines.append("  kills survived: " + ", ".join(f"{k}={v}" for k, v in r["kills"].items()))
    lines.append(f"  records checked {r['records_checked']:,}, lost {r['records_lost']}, "
                 f"torn {r['torn_records']}")
    if "tree" in r:
        rs = r["tree"].get("restart_s", {})
        lines.append(f"  restart after SIGKILL: mean {rs.get('mean', 0):.3f} s, max "
                     f"{rs.get('max', 0):.3f} s; resumed: {r['tree'].get('resume_s', {})}")
        lines.append(f"  whole-tree SIGKILL then up: {r['tree'].get('whole_tree_kill')}")
    if "venue_faults" in r:
        lines.append("  " + venue_faults.render(r["venue_faults"]).replace("\n", "\n  "))
    lines.append(f"  frames fuzzed {r['frames_fuzzed']:,}, crashes {r['crashes']}")
    if "fuzz_books" in r:
        fb = r["fuzz_books"]
        t = fb["total"]
        lines.append(f"  depth channels fuzzed: {t['frames']:,} frames ({fb['frames_per_venue']:,}"
                     f" per venue), {book_crashes(fb)} crashes, {t['resyncs']:,} resyncs, books "
                     f"exact after resync {t['final_exact']}/{t['books']}, REST bodies "
                     f"{t['rest_bodies']:,}: {'ok' if r.get('fuzz_books_ok') else 'NOT ok'}")
    if "book_faults" in r:
        lines.append("  " + book_faults.render(r["book_faults"]).replace("\n", "\n  "))
    if "soak" in r:
        s = r["soak"]
        lines.append(f"  soak {s['minutes']} min ({s.get('source', 'sim')} at "
                     f"{s.get('rate') or 0:,.0f}/s, reached {s.get('updates_per_s') or 0:,.0f}/s; "
                     f"{s.get('from', 'this run')}): RSS growth {s['rss_growth_pct']:.2f}%, fd "
                     f"growth {s['fd_growth']}, drops {s['drops']}")
    lines.append(f"  wall {r['wall_s']} s")
    return "\n".join(lines)
