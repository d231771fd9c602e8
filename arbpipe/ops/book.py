"""``arbpipe book INSTRUMENT [--venue V] [--depth N] [--json] [--watch]``: the live L2 ladder
of a running tree, read-only, from the detector's ``books`` segment (``arbpipe.books``): per
leg quoting the instrument, its state (ready, resyncing and why, or no book yet), the age of
its last message, its resync count and the top levels, bids beside asks."""
from __future__ import annotations

import time

from arbpipe.books.segment import BooksSegment


def book_rows(seg: BooksSegment, cfg, instrument: str, venue: str | None = None,
              depth: int | None = None, now_ns: int | None = None) -> list[dict]:
    """One dict per leg of ``instrument`` (``venue``: only the legs whose name starts with
    it, so ``okx`` gives okx and okx-perp)."""
    ids = cfg.instrument_ids()
    if instrument not in ids:
        raise ValueError(f"unknown instrument {instrument!r}; known: {', '.join(ids)}")
    iid = ids[instrument]
    now = now_ns or time.time_ns()
    legs = cfg.legs()
    out = []
    for leg, name in enumerate(legs.names):
        if venue and not (name == venue or name.startswith(venue + "-")):
            continue
        b = seg.read(iid, leg)
        if b is None:
            b = {"state": "busy", "bids": [], "asks": [], "updated_ns": 0, "resyncs": 0,
                 "fault": "none"}
        n = depth or seg.depth
        b.update(leg=name, instrument=instrument, bids=b["bids"][:n], asks=b["asks"][:n],
                 age_s=round((now - b["updated_ns"]) / 1e9, 3) if b["updated_ns"] else None)
        out.append(b)
    if venue and not out:
        raise ValueError(f"no leg named {venue!r}; legs: {', '.join(legs.names)}")
    return out


def render(rows: list[dict]) -> str:
    lines = []
    for b in rows:
        why = f" ({b['fault']})" if b["state"] == "resyncing" else ""
        age = f"{b['age_s']:.1f} s ago" if b.get("age_s") is not None else "no message yet"
        lines.append(f"{b['leg']:<14} {b['instrument']:<10} {b['state']}{why}, last message "
                     f"{age}, resyncs {b['resyncs']}")
        if b["bids"] or b["asks"]:
            lines.append(f"  {'bid qty':>14} {'bid':>14} | {'ask':<14} {'ask qty':<14}")
            for k in range(max(len(b["bids"]), len(b["asks"]))):
                bid = b["bids"][k] if k < len(b["bids"]) else None
                ask = b["asks"][k] if k < len(b["asks"]) else None
                left = f"{bid[1]:>14.8g} {bid[0]:>14.10g}" if bid else " " * 29
                right = f"{ask[0]:<14.10g} {ask[1]:<14.8g}" if ask else ""
                lines.append(f"  {left} | {right}".rstrip())
    return "\n".join(lines) if lines else "no legs"


def book_states(seg: BooksSegment, leg_names: list[str]) -> dict:
    """{leg name: {state: count}} over every instrument's block (what the detector uses:
    only READY books; RESYNCING ones with their faults)."""
    out = {}
    for leg, name in enumerate(leg_names[:seg.nl]):
        counts: dict[str, int] = {}
        for iid in range(1, seg.ni):
            b = seg.read(iid, leg)
            if b is None:
                continue
            key = b["state"] if b["state"] != "resyncing" else f"resyncing ({b['fault']})"
            counts[key] = counts.get(key, 0) + 1
        out[name] = counts
    return out


def render_states(states: dict) -> str:
    rows = [f"  {leg:<14} " + ", ".join(f"{k} {n}" for k, n in sorted(c.items()))
            for leg, c in states.items() if c and set(c) != {"none"}]
    return "books (the detector uses only ready ones):\n" + "\n".join(rows) if rows else \
        "books: none (depth 0, or no depth message yet)"

