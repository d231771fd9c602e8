"""``arbpipe stat rings``: every ring's counters, read from any shell without stopping anything."""
from __future__ import annotations

import time

from arbpipe.transport import segments
from arbpipe.transport.rings import ring_stats
from shm_layouts.kinds import is_ring


def snapshot(instance: str | None = None) -> list[dict]:
    out = []
    for s in segments.list_segments(instance):
        if s.header is None or not is_ring(s.header.kind):
            continue
        try:
            seg = segments.Segment.attach(s.instance, s.name)
        except segments.SegmentError:
            continue
        try:
            st = ring_stats(seg)
            st["stale"] = s.stale
            out.append(st)
        finally:
            seg.close()
    return out


def with_rates(instance: str | None, interval: float = 0.5, prev: list[dict] | None = None):
    """Snapshot plus records/s since ``prev`` (or over ``interval`` seconds)."""
    if prev is None:
        prev = snapshot(instance)
        time.sleep(interval)
    dt = max(interval, 1e-3)
    cur = snapshot(instance)
    before = {(r["instance"], r["name"]): r for r in prev}
    for r in cur:
        p = before.get((r["instance"], r["name"]))
        r["rate"] = (r["published"] - p["published"]) / dt if p else 0.0
        rd = {x["name"]: x for x in (p["readers"] if p else [])}
        for x in r["readers"]:
            px = rd.get(x["name"])
            x["rate"] = (x["received"] - px["received"]) / dt if px else 0.0
    return cur


def render(rows: list[dict]) -> str:
    if not rows:
        return "no arbpipe rings (is a pipeline running? `arbpipe status`)"
    hdr = (f"{'instance':<10} {'ring':<24} {'kind':<9} {'record':<12} {'cap':>7} {'published':>12} "
           f"{'rec/s':>10} {'fill%':>6} {'dropped':>9} {'full':>7} {'sleeps':>7} {'wakes':>7}")
    lines = [hdr, "-" * len(hdr)]
    for r in rows:
        fill = "-" if r["kind"] == "broadcast" else f"{r['fill_pct']:.1f}"
        lines.append(f"{r['instance']:<10} {r['name']:<24} {r['kind']:<9} {r['record']:<12} "
                     f"{r['capacity']:>7} {r['published']:>12} {r.get('rate', 0):>10.0f} "
                     f"{fill:>6} {r['dropped']:>9} {r['full_events']:>7} {r['sleeps']:>7} "
                     f"{r['wakes']:>7}" + ("  STALE" if r.get("stale") else ""))
        for x in r["readers"]:
            state = "" if x["alive"] else "  (gone)"
            lines.append(f"{'':<10}   reader {x['name']:<17} pid {x['pid']:<8} pos {x['position']:<12}"
                         f" lag {x['lag']:<8} rec/s {x.get('rate', 0):<10.0f} lost {x['lost']:<8}"
                         f" laps {x['lapped']}{state}")
    return "\n".join(lines)

