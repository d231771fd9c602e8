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
    parts.append(f"{r['frames_fuzzed']:,} frames fuzzed, {r['crashes']} crashes")
    if "soak" in r:
        parts.append(f"soak section {r.get('measured', {}).get('soak', r['soak'].get('from'))}")
    return "; ".join(parts) + ".\n"


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


SOURCES = {"latency": ("pipeline.json", latency), "soak": ("soak.json", soak),
           "reliability": ("reliability.json", reliability), "bridge": ("bridge.json", bridge)}


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
