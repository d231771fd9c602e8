"""The README's figures, generated from the committed benchmark artifacts.

Every block of figures in README.md sits between ``<!-- figures:NAME ... -->`` and
``<!-- /figures -->`` and is written here from one file in bench/results/ (``SOURCES``):
``scripts/bench-tables`` rewrites the blocks, ``scripts/bench-tables --check`` (and
tests/unit/test_bench_tables.py) fails when the README says something its artifact does
not. To change a figure, re-run its benchmark, commit the artifact, run the script.
"""
from __future__ import annotations

import argparse
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
README = os.path.join(ROOT, "README.md")

BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w-]+)[^>]*-->\n)(?P<body>.*?)(<!-- /figures -->)",
                   re.S)
TRANSPORT_COLUMNS = (("harness", "arbpipe", "arbpipe"), ("harness", "mp-queue", "mp.Queue"),
                     ("harness", "faster-fifo", "faster-fifo"), ("harness", "pyzmq", "pyzmq"),
                     ("tree", "arbpipe", "real tree (with the strategy)"))


def _rate(v: float) -> str:
    return f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}K" if v >= 1e3 else f"{v:g}"


def _rates_arg(rates) -> str:
    return ",".join(_rate(r).lower() for r in rates)


def _us(ns) -> str:
    return "-" if ns is None else f"{ns / 1000:,.0f}"


def _cell(run: dict | None) -> str:
    """'p50 / p99 µs', each with the min–max of the repeats when there were several."""
    if run is None:
        return "-"
    sp = (run.get("spread") or {}).get("total", {}) if run.get("repeats", 1) > 1 else {}

    def one(q):
        s = sp.get(q)
        return _us(run["total"][q]) + (f" ({_us(s[0])}–{_us(s[1])})" if s else "")
    return f"{one('p50_ns')} / {one('p99_ns')} µs" + ("" if run["sustained"] else " †")


def latency(res: dict) -> str:
    """The Latency table: total p50 / p99 per transport and rate, the tree's sustained rate,
    the targets' verdicts."""
    h = res["host"]
    n = res.get("repeat", 1)
    cmd = (f"arbpipe bench pipeline --rates {_rates_arg(res['rates'])} --duration "
           f"{res['duration_s']:g}" + (f" --repeat {n}" if n > 1 else "")
           + (f" --nice {res['nice']}" if res.get("nice") else ""))
    runs = {(r["setup"], r["transport"], r["rate"]): r for r in res["runs"]}
    spread = (f"median of {n} interleaved runs, min–max in brackets" if n > 1 else
              "one run: no spread measured")
    lines = [f"Measured {h['time']} on {h['cpu']} ({h['cores']} cores, Python {h['python']}, "
             f"1-minute load {' → '.join(str(x) for x in h.get('loadavg_1m', []))}) with "
             f"`{cmd}` ({res['workload']['opportunity_share']:.1%} of updates open or "
             f"update an opportunity); total latency p50 / p99, {spread} "
             f"([bench/results/pipeline.json](bench/results/pipeline.json)):", "",
             "| updates/s | " + " | ".join(c[2] for c in TRANSPORT_COLUMNS) + " |",
             "|---:|" + "---:|" * len(TRANSPORT_COLUMNS)]
    for rate in res["rates"]:
        cells = [_cell(runs.get((s, t, rate))) for s, t, _ in TRANSPORT_COLUMNS]
        if any(c != "-" for c in cells):
            lines.append(f"| {_rate(rate)} | " + " | ".join(cells) + " |")
    lines.append("")
    if any(not r["sustained"] for r in res["runs"]):
        lines += ["† not sustained at that rate (drops, or a stage ending the window behind): "
                  "the latency includes queueing.", ""]
    det = res.get("max_zero_drop_rate_detector") or 0
    tree = res.get("max_zero_drop_rate_by", {}).get("arbpipe-tree") or 0
    lines.append(f"Highest rate sustained with zero drops (of the rates run and a search between "
                 f"them): the detector alone takes {_rate(det) if det else 'none'} updates/s "
                 f"from the feed rings; end to end the tree sustains "
                 f"{_rate(tree) if tree else 'none'}/s.")
    tgt = []
    for t in res.get("targets", []):
        if "value_ns" in t:
            val = f"{_us(t['value_ns'])} µs"
        elif isinstance(t.get("value"), float):
            val = f"{t['value']:.1f}x"
        else:
            continue
        tgt.append(f"{t['target']}{' (' + t['setup'] + ')' if t.get('setup') else ''}: "
                   f"{'met' if t['met'] else 'not met'}, {val}")
    if tgt:
        lines += ["", "Targets: " + "; ".join(tgt) + "."]
    return "\n".join(lines) + "\n"


def soak(s: dict) -> str:
    src = s.get("source", "sim")
    cmd = f"scripts/soak --source {src} --rate {s['rate']:.0f} --minutes {s['minutes']:g}"
    return (f"Latest ([bench/results/soak.json](bench/results/soak.json), finished "
            f"{s.get('finished', '?')}): `{cmd}`: {s['updates_per_s']:,.0f} updates/s for "
            f"{s['minutes']:g} min ({s['series'][-1]['published'] / 1e6:.1f} M records), "
            f"{s['drops']} SPSC drops, {s['broadcast_lost']} broadcast records lost, "
            f"{s['restarts']} restarts, RSS {s['rss_mib_after_warmup']} → {s['rss_mib_end']} "
            f"MiB after the {s['warmup_s'] / 60:g} min warm-up ({s['rss_growth_pct']:+.2f} %), "
            f"fds {s['fds_after_warmup']} → {s['fds_end']}.\n")


def reliability(r: dict) -> str:
    kills = r.get("kills", {})
    per = sorted(set(kills.values()))
    tree = r.get("tree", {})
    parts = [f"Latest full run ([bench/results/reliability.json](bench/results/reliability.json),"
             f" started {r['started']}{', quick' if r.get('quick') else ''}): "
             f"{sum(kills.values())} SIGKILLs ({'/'.join(map(str, per))} per process kind), "
             f"{r['records_checked']:,} records checked, {r['records_lost']} lost, "
             f"{r['torn_records']} torn"]
    if tree.get("restart_s"):
        parts.append(f"slowest restart after a SIGKILL {tree['restart_s']['max']:.2f} s")
    if "venue_faults_ok" in r:
        parts.append("every venue fault handled" if r["venue_faults_ok"] else
                     "venue faults NOT all handled")
    fb = r.get("fuzz_books", {}).get("total")
    measured = r.get("measured", {})
    parts.append(f"{r['frames_fuzzed']:,} frames fuzzed" + (
        f" and {fb['frames']:,} depth-channel frames (fuzz-books: "
        f"{measured.get('fuzz-books', '?')})" if fb else "") + f", {r['crashes']} crashes")
    if "book_faults_ok" in r:
        parts.append(("every book fault recovered" if r["book_faults_ok"] else
                      "book faults NOT all recovered")
                     + f" (book-faults: {measured.get('book-faults', '?')})")
    if "soak" in r:
        parts.append(f"soak section {r.get('measured', {}).get('soak', r['soak'].get('from'))}")
    return "; ".join(parts) + ".\n"


def _nz(d: dict) -> str:
    return ", ".join(f"{k} {n:,}" for k, n in sorted(d.items(), key=lambda kv: -kv[1]) if n) \
        or "-"


def fuzz_books(r: dict) -> str:
    """The depth-channel fuzz (``arbpipe bench reliability --only fuzz-books``): per venue
    frames, crashes, rejects by reason, resyncs by fault, books exact after resync."""
    fb = r.get("fuzz_books")
    if not fb:
        return "No depth-channel fuzz run in bench/results/reliability.json yet.\n"
    t = fb["total"]
    crashes = t["crashes"] + t["parse_errors"] + t.get("rest_crashes", 0)
    lines = [f"Latest ([bench/results/reliability.json](bench/results/reliability.json), "
             f"section `fuzz_books`, {r.get('measured', {}).get('fuzz-books', '?')}): "
             f"`arbpipe bench reliability --only fuzz-books --fuzz-frames "
             f"{fb['frames_per_venue']}`, books of {fb['depth']} levels, "
             f"{t['frames']:,} frames in {fb['wall_s'] / 60:.1f} min ({fb['workers']} "
             f"workers): {crashes} crashes, {t['silent']} frames unaccounted, "
             f"{t['bad_records']} bad records, {t['book_violations']} ring-reader violations; "
             f"after the last resync of each of the {fb['chunks']} runs per venue, "
             f"{t['final_exact']} of {t['books']} books equal to the venue's reference.", "",
             "| venue | frames | crashes | rejects by reason | resyncs | resyncs by fault | "
             "REST bodies (refused) |", "|---|---:|---:|---|---:|---|---:|"]
    for v, d in fb["venues"].items():
        rest = (f"{d['rest_bodies']:,} ({d['rest_rejected']:,})" if d.get("rest_bodies")
                else "-")
        lines.append(f"| {v} | {d['frames']:,} | "
                     f"{d['crashes'] + d['parse_errors'] + d.get('rest_crashes', 0)} | "
                     f"{_nz(d['rejects'])} | {d['resyncs']:,} | "
                     f"{_nz({k.lower(): n for k, n in d.get('book_faults', {}).items()})} | "
                     f"{rest} |")
    return "\n".join(lines) + "\n"


def book_faults(r: dict) -> str:
    """The whole tree with every depth fault on (``--only book-faults``)."""
    bf = r.get("book_faults")
    if not bf or not bf.get("venues"):
        return "No book-faults run in bench/results/reliability.json yet.\n"
    o = bf["opportunities"]
    lines = [f"Latest ([bench/results/reliability.json](bench/results/reliability.json), "
             f"section `book_faults`, {r.get('measured', {}).get('book-faults', '?')}): "
             f"`{bf.get('command', 'arbpipe bench reliability --only book-faults')}`, the "
             f"default tree (8 venues, books on) on the simulator with every depth fault its "
             f"venue can show on for {bf['seconds']:g} s ({bf['wall_s']:g} s with start, the "
             f"wait for every book ready and `arbpipe down`): "
             f"{'all recovered' if bf.get('ok') else 'NOT all recovered'}.", "",
             "| venue | book msgs | resyncs by fault | not-ready windows (closed) | "
             "time to ready p50 / max | ready at end | ready again | rejects by reason |",
             "|---|---:|---|---:|---:|---:|:---:|---|"]
    for v, c in bf["venues"].items():
        ttr = c["time_to_ready"]
        tt = (f"{ttr['p50_ms']:,.0f} / {ttr['max_ms']:,.0f} ms" if ttr.get("n") else "-")
        lines.append(f"| {v} | {c['book_messages']:,} | {_nz(c['resyncs_by_fault'])} | "
                     f"{c['windows']} ({c['closed']}) | {tt} | "
                     f"{c['books_ready_end_of_window']} | {'yes' if c['ready_again'] else 'NO'}"
                     f" | {_nz(c['rejects'])} |")
    lines += ["", f"Detector: {o['opportunities']:,} opportunity records "
              f"({o['open_or_update']:,} OPEN / UPDATE), {o['used_while_resyncing']} with a leg "
              f"whose book was resyncing (from {bf['slack_ms']:g} ms after its BOOK_RESYNC "
              f"status to its next quote; {o['in_slack']} inside those {bf['slack_ms']:g} ms, "
              f"{o.get('after_ready_quote', 0)} stamped before the ready quote but priced from "
              f"it: the detector took that quote first), "
              f"{o['top_of_book_sized']} sized on a top level only, "
              f"{o['on_faulted_legs_after_ready']:,} on resynced legs once ready again; "
              f"feed rings recorded: {bf['recorded_records']:,} records, "
              f"{bf['recorder_missed']} missed."]
    return "\n".join(lines) + "\n"


def bridge(r: dict) -> str:
    """``arbpipe bench bridge --json``: throughput and the latency the hop adds."""
    t, h = r["throughput"], r["host"]
    lines = [f"Latest ([bench/results/bridge.json](bench/results/bridge.json), one run of "
             f"`arbpipe bench bridge --json` on {h['cpu']}, {h['cores']} cores, "
             f"{r['redis']}): {t.get('records_per_s') or 0:,.0f} records/s through out -> "
             f"Redis -> in; latency from the push into the source ring to the pop from the "
             f"destination ring, against the same hop over one local ring:", "",
             "| updates/s | local ring p50 / p99 / p99.9 | bridge p50 / p99 / p99.9 | "
             "added p50 / p99 |", "|---:|---:|---:|---:|"]
    for x in r["rates"]:
        def q(s):
            return " / ".join(_us(s.get(k) * 1000 if s.get(k) is not None else None)
                              for k in ("p50_us", "p99_us", "p999_us")) + " µs"
        add = x.get("added") or {}
        lines.append(f"| {_rate(x['rate'])} | {q(x['local'])} | {q(x['bridge'])} | "
                     f"{(add.get('p50_us') or 0) / 1000:,.1f} / "
                     f"{(add.get('p99_us') or 0) / 1000:,.1f} ms |")
    return "\n".join(lines) + "\n"


def _span(m: dict, scale: float = 1.0, unit: str = " µs", nd: int = 0) -> str:
    """'median (min–max)' of a {"median", "min", "max"} summary (``nd`` decimals)."""
    if not m or m.get("median") is None:
        return "-"

    def one(x):
        x *= scale
        return f"{x / 1000:,.2f} ms" if unit == " µs" and x >= 1000 else f"{x:,.{nd}f}{unit}"
    return one(m["median"]) + ("" if m["min"] == m["max"] else
                               f" ({one(m['min'])}–{one(m['max'])})")


def live(res: dict) -> str:
    """The default tree at `make up`'s rate, per CPU variant, beside the host's floor."""
    h = res["host"]
    hops = list(next(iter(res["summary"].values()))["hops"])
    lines = [f"Measured {res['measured']} on {h['cpu']} ({h['cores']} cores, Python "
             f"{h['python']}, 1-minute load {h['loadavg_end'][0]} at the end) with "
             f"`{res['command']}`: the default tree on the simulator (8 venues, books on, "
             f"the paper strategy trading), {res['duration_s']:g} s windows after every role "
             f"ran {res['settle_s']:g} s; median of {len(res['floor_runs'])} interleaved runs, "
             f"min–max in brackets ([bench/results/live.json](bench/results/live.json)):", "",
             "| variant | updates/s | tree CPU | " + " | ".join(
                 f"{x} p50 / p99" for x in hops) + " |",
             "|---|---:|---:|" + "---:|" * len(hops)]
    for v, s in res["summary"].items():
        cells = [f"{_span(s['hops'][x]['p50_us'])} / {_span(s['hops'][x]['p99_us'])}"
                 for x in hops]
        lines.append(f"| {v} | {_span(s['updates_per_s'], unit='')} | "
                     f"{_span(s['tree_cpu_pct'], unit=' %')} | " + " | ".join(cells) + " |")
    fl = res["floor"]
    gap = res["floor_runs"][0]["gap_s"] * 1e3
    lines += ["", f"The host's floor, measured in the same run: waking a process blocked on a "
              f"bare POSIX semaphore after {gap:g} ms idle takes {_span(fl['other_core']['p50_us'])}"
              f" p50 / {_span(fl['other_core']['p99_us'])} p99 from the other core and "
              f"{_span(fl['same_core']['p50_us'])} / {_span(fl['same_core']['p99_us'])} on "
              f"the same core."]
    return "\n".join(lines) + "\n"


def profiles(res: dict) -> str:
    """`bench pipeline`'s real tree under both profiles: total and hop p50 / p99 per rate."""
    cols = list(res["profiles"])
    first = res["profiles"][cols[0]]
    lines = [f"Measured {res['measured']} on {first['host']['cpu']} ({first['host']['cores']} "
             f"cores) with `{res['command']}` (bench pipeline's real tree: replay -> feed "
             f"rings -> detector -> strategy; 1-minute load "
             + ", ".join(f"{p} {' → '.join(map(str, d['host']['loadavg_1m']))}"
                         for p, d in res["profiles"].items())
             + f"); p50 / p99, median of {first['repeat']} runs, min–max of the runs' p50 in "
               f"brackets ([bench/results/pipeline-profiles.json]"
               f"(bench/results/pipeline-profiles.json)):", "",
             "| updates/s | " + " | ".join(f"{p}: total | {p}: feed→det / publish→strategy"
                                          for p in cols) + " |",
             "|---:|" + "---:|---:|" * len(cols)]
    for rate in res["rates"]:
        cells = []
        for p in cols:
            r = next((x for x in res["profiles"][p]["runs"] if x["rate"] == rate), None)
            if r is None:
                cells += ["-", "-"]
                continue
            sp = ((r.get("spread") or {}).get("total") or {}).get("p50_ns")
            tot = (f"{_us(r['total']['p50_ns'])}" + (f" ({_us(sp[0])}–{_us(sp[1])})" if sp
                                                      else "")
                   + f" / {_us(r['total']['p99_ns'])} µs" + ("" if r["sustained"] else " †"))
            hp = r["hops"]
            cells += [tot, f"{_us(hp['feed_to_detector']['p50_ns'])} / "
                           f"{_us(hp['publish_to_strategy']['p50_ns'])} µs p50"]
        lines.append(f"| {_rate(rate)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def footprint(res: dict) -> str:
    """The default tree's memory (USS per process) and its CPU at rest."""
    rows = sorted(res["processes"].items(), key=lambda kv: -kv[1]["uss_mib"]["median"])
    feeds = [k for k, _ in rows if k.startswith("feed.")]
    lines = [f"Measured {res['measured']} ({res['cores']} cores) with `{res['command']}`: "
             f"the default tree (config/arbpipe.toml, fork server on) after every role ran "
             f"{res['settle_s']:g} s; then the simulator stopped (SIGSTOP: no market data, "
             f"sockets open) and the CPU of every process over {res['idle_s']:g} s; median of "
             f"{len(res['runs'])} trees, min–max in brackets "
             f"([bench/results/footprint.json](bench/results/footprint.json)):", "",
             "| process | USS | CPU at rest (% of one core) |", "|---|---:|---:|"]
    for k, v in rows:
        if k in feeds[1:]:
            continue
        if k in feeds:       # one row for the feeds: the range of their medians
            uss = [res["processes"][f]["uss_mib"]["median"] for f in feeds]
            cpu = [res["processes"][f]["idle_pct"]["median"] for f in feeds]
            lines.append(f"| each of the {len(feeds)} feeds | {min(uss):.1f}–{max(uss):.1f} MiB"
                         f" | {min(cpu):.2f}–{max(cpu):.2f} % |")
            continue
        lines.append(f"| {k} | {_span(v['uss_mib'], unit=' MiB', nd=1)} | "
                     f"{_span(v['idle_pct'], unit=' %', nd=2)} |")
    lines.append(f"| **whole tree** | **{_span(res['total_uss_mib'], unit=' MiB', nd=1)}** | "
                 f"**{_span(res['idle_total_pct'], unit=' %', nd=2)}** |")
    return "\n".join(lines) + "\n"


SOURCES = {"latency": ("pipeline.json", latency), "soak": ("soak.json", soak),
           "reliability": ("reliability.json", reliability), "bridge": ("bridge.json", bridge),
           "fuzz-books": ("reliability.json", fuzz_books),
           "book-faults": ("reliability.json", book_faults),
           "live": ("live.json", live), "profiles": ("pipeline-profiles.json", profiles),
           "footprint": ("footprint.json", footprint)}


def block(name: str, results_dir: str = RESULTS) -> str:
    fname, fn = SOURCES[name]
    with open(os.path.join(results_dir, fname)) as f:
        return fn(json.load(f))


def render(text: str, results_dir: str = RESULTS) -> str:
    """``text`` with every figures block regenerated from its artifact; an unknown block
    name is an error naming it."""
    def sub(m):
        name = m["name"]
        if name not in SOURCES:
            raise ValueError(f"README block figures:{name}: no such source; known: "
                             f"{', '.join(SOURCES)}")
        return m.group(1) + block(name, results_dir) + m.group(4)
    return BLOCK.sub(sub, text)


def names(text: str) -> list[str]:
    return [m["name"] for m in BLOCK.finditer(text)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench-tables",
                                 description="regenerate the README's figures from "
                                             "bench/results/*.json")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README differs")
    ap.add_argument("--readme", default=README)
    a = ap.parse_args(argv)
    with open(a.readme) as f:
        text = f.read()
    new = render(text)
    missing = [n for n in SOURCES if n not in names(text)]
    if missing:
        print(f"{a.readme}: no figures block for {', '.join(missing)}")
        return 1
    if new == text:
        print(f"{a.readme}: figures match bench/results ({', '.join(names(text))})")
        return 0
    if a.check:
        stale = [n for n, o, w in zip(names(text), BLOCK.finditer(text), BLOCK.finditer(new))
                 if o["body"] != w["body"]]
        print(f"{a.readme}: figures differ from bench/results in: {', '.join(stale)} "
              f"(run scripts/bench-tables)")
        return 1
    with open(a.readme, "w") as f:
        f.write(new)
    print(f"{a.readme}: figures rewritten ({', '.join(names(text))})")
    return 0
