"""Repeated runs of ``arbpipe bench pipeline`` folded into one row per (setup, transport,
rate): the median of each figure over the repeats, with its min-max spread beside it.

On a shared host one run says little (a neighbour's burst moves a p99 several-fold), so
``--repeat N`` runs every setup N times, interleaved (tree, then each transport, then the
tree again ...), and the report shows medians with the spread of the N runs."""
from __future__ import annotations

import statistics

from bench.pipeline_runs import HOPS

QUANTILES = ("p50_ns", "p99_ns", "p999_ns", "max_ns")


def _median(values):
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def _span(values):
    vals = [v for v in values if v is not None]
    return [float(min(vals)), float(max(vals))] if vals else None


def _fold(rs: list[dict], pick) -> tuple:
    vals = [pick(r) for r in rs]
    return _median(vals), _span(vals)


def combine(each: list[list[dict]]) -> list[dict]:
    """``each``: one list of runs per repeat. Returns one run per (setup, transport, rate),
    in first-seen order: latency quantiles, achieved rate and CPU are medians over the
    repeats, ``spread`` holds their [min, max]; drops are the worst repeat's; the row is
    sustained only when every repeat was (``sustained_in`` counts them). The percentile
    spectrum (``total_buckets``) is the median-p99 repeat's."""
    groups: dict[tuple, list[dict]] = {}
    for runs in each:
        for r in runs:
            groups.setdefault((r["setup"], r["transport"], r["rate"]), []).append(r)
    out = []
    for rs in groups.values():
        by_p99 = sorted(rs, key=lambda r: (r["total"]["p99_ns"] is None, r["total"]["p99_ns"]))
        row = dict(by_p99[len(by_p99) // 2])
        spread = {"total": {}, "hops": {h: {} for h in HOPS}}
        row["total"] = dict(row["total"])
        row["hops"] = {h: dict(row["hops"][h]) for h in HOPS}
        for q in QUANTILES:
            row["total"][q], spread["total"][q] = _fold(rs, lambda r: r["total"][q])
            for h in HOPS:
                row["hops"][h][q], spread["hops"][h][q] = _fold(rs, lambda r: r["hops"][h][q])
        row["total"]["count"] = int(sum(r["total"].get("count") or 0 for r in rs))
        row["achieved_rate"], spread["achieved_rate"] = _fold(rs, lambda r: r["achieved_rate"])
        row["cpu_pct"] = {k: _median([r["cpu_pct"].get(k) for r in rs]) for k in row["cpu_pct"]}
        worst = max(rs, key=lambda r: r["drops"])
        row["drops"], row["drops_detail"] = worst["drops"], worst["drops_detail"]
        spread["drops"] = [min(r["drops"] for r in rs), max(r["drops"] for r in rs)]
        row["sustained_in"] = sum(bool(r["sustained"]) for r in rs)
        row["sustained"] = row["sustained_in"] == len(rs)
        row["detector_sustained"] = all(r["detector_sustained"] for r in rs)
        row["repeats"] = len(rs)
        row["spread"] = spread
        out.append(row)
    return out
