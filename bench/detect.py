"""``arbpipe bench detect``: detection cost per MarketUpdate, 8 venues x 1000 instruments.

Workload: the default config's 8 venues (9 legs: OKX spot and SWAP are two) with 1000
synthetic instruments; a deterministic stream (``bench.workload.make_stream``) of quotes
(uniform over instrument x leg, mid = a random-walk fair value + noise, half spread
0.5..2 bp, 0.2 % of quotes dislocated by 20..60 bp so opportunities open, update and
close) plus 1 % funding updates. Each (instrument, leg) is re-quoted every ~9 ms of stream
time (recv ts advance 1 us per update), so quotes are fresh and every quote is checked
against 8 other legs in both directions (16 pair evaluations).

Modes (both after one untimed pass that fills the book and loads the kernels):
  * ``kernel``: ``arbpipe.detect.kernel.process_words`` over the stream in batches of
    ``batch`` updates (what the process does per ring batch), output collected in memory.
  * ``kernel-stress``: as ``kernel`` with 5 % of quotes dislocated (many more candidate
    pairs, opens, updates and closes per update).
  * ``rings``: the process's real path: 8 real SPSC rings (one per venue, POSIX shared
    memory, in this process) pre-filled with the venue's updates, drained by
    ``arbpipe.detect.service.pump`` (spsc_pop per ring in batches, detect, bcast_push into a
    real ``opportunities`` BroadcastRing). Filling is not timed; draining is.
  * ``books, depth N`` (``--depth N``): every quote arrives as a depth message that
    replaces the top N of its book (a SNAPSHOT of N bids and N asks around the quote, 1 bp
    apart: 2N LEVEL records, then its QUOTE), the heaviest book traffic a feed sends; every
    candidate pair is sized by walking both books. ``ns/update`` is per record; per book
    message (its 2N + 1 records) too. The stream is cut so the records stay ~``updates``.
  * ``books, depth N, stress``: the same with 5 % of quotes dislocated.
  * ``walk``: ``arbpipe.detect.walk`` alone (choose_size + both side_fill) over pairs of
    N-level ladders crossed by 0..30 bp with 10 bp fees: ns per candidate walk.
ns/update = wall time / updates applied, best and median of ``repeats`` runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tomllib
import uuid

import numpy as np
from numba import njit
from numba.typed import List

from arbpipe.config import DEFAULT_PATH, config_from_dict
from arbpipe.detect import detector as D
from arbpipe.detect import kernel as KN
from arbpipe.detect import service as DS
from arbpipe.transport import segments
from arbpipe.transport.rings import BroadcastRing, SpscRing
from arbpipe.detect.walk import choose_size_at, side_fill_at
from bench.harness import cpu_name
from bench.workload import make_stream, with_levels
from shm_layouts import MARKET_UPDATE, Flag, Kind
from shm_layouts.records import MARKET_UPDATE_LEVEL

TARGET_NS = 150.0
TARGET_BOOK_NS = 250.0     # per record with books of depth N (issue: 8 venues x 1000 instruments)


def bench_config(n_instruments: int = 1000):
    with open(DEFAULT_PATH, "rb") as f:
        data = tomllib.load(f)
    data["instruments"] = [f"I{k:04d}/USDT" for k in range(n_instruments)]
    data["detector"].pop("max_exec_qty", None)
    return config_from_dict(data)


def _retime(rec: np.ndarray, base: int) -> None:
    rec["recv_ts_ns"] = base + np.arange(len(rec), dtype=np.int64) * 1000


def run_kernel(cfg, stream, batch=256, repeats=5, label="kernel") -> dict:
    det = D.Detector(cfg, out_records=batch * 2 * 9 + 16)
    words = stream.view(np.int64)
    n = len(stream)
    out, ow, io, S = det.out, det.ow, det.io, det.S
    cap = len(out) // 16
    times = []
    for rep in range(repeats + 1):
        _retime(stream, time.time_ns())
        t0 = time.perf_counter_ns()
        for k in range(0, n, batch):
            m = min(batch, n - k)
            done = KN.process_words(S, words[k * 8:], m, out, ow, io)
            assert done == m and io[0] <= cap
            io[0] = 0
        dt = time.perf_counter_ns() - t0
        if rep:
            times.append(dt / n)
    s = det.stats()
    return {"mode": label, "batch": batch, "updates": n, "ns_per_update_best": min(times),
            "ns_per_update_median": statistics.median(times), "runs": times,
            "published_per_run": s["published"] // (repeats + 1),
            "evaluations_per_run": s["evaluations"] // (repeats + 1)}


def with_depth(stream: np.ndarray, depth: int, records: int) -> np.ndarray:
    """The stream's first quotes as full top-``depth`` book messages (2 * depth LEVEL
    records: SNAPSHOT on the first, BOOK_ASK on the asks, BOOK_END on the last; prices 1 bp
    apart from the quote, sizes 1..3 x the top size), each followed by its QUOTE; funding
    records kept; cut at ``records`` records."""
    per = 2 * depth + 1
    q = stream["kind"] == Kind.QUOTE
    keep = np.cumsum(np.where(q, per, 1)) <= records
    src = stream[keep]
    q = src["kind"] == Kind.QUOTE
    size = np.where(q, per, 1)
    start = np.cumsum(size) - size
    out = np.zeros(int(size.sum()), MARKET_UPDATE)
    out[start + np.where(q, per - 1, 0)] = src
    quotes, at = src[q], start[q]
    lv = out.view(MARKET_UPDATE_LEVEL)
    j = np.arange(depth)
    for side in (0, 1):
        idx = at[:, None] + side * depth + j[None, :]
        px = quotes["ask" if side else "bid"][:, None] * (1 + (1 if side else -1) * 1e-4 * j)
        qty = quotes["ask_qty" if side else "bid_qty"][:, None] * (1 + j % 3)
        lv["price"][idx] = px
        lv["qty"][idx] = qty
        lv["flags"][idx] = int(Flag.BOOK_ASK) if side else 0
        lv["instrument_id"][idx] = quotes["instrument_id"][:, None]
        lv["venue_id"][idx] = quotes["venue_id"][:, None]
        lv["kind"][idx] = int(Kind.LEVEL)
        lv["depth"][idx] = depth
        lv["exchange_ts_ns"][idx] = quotes["exchange_ts_ns"][:, None]
    lv["flags"][at] |= int(Flag.SNAPSHOT)
    lv["flags"][at + 2 * depth - 1] |= int(Flag.BOOK_END)
    return out


def depth_config(cfg, depth: int):
    """``cfg`` with every venue keeping L2 books of ``depth`` levels."""
    venues = {k: v.__class__(**{f: getattr(v, f) for f in v.__struct_fields__} | {"depth": depth})
              for k, v in cfg.venues.items()}
    return cfg.__class__(**{f: getattr(cfg, f) for f in cfg.__struct_fields__}
                         | {"venues": venues})


@njit(cache=True, nogil=True)
def _walks(asks, bids, n, fee_bps):
    kb = 1.0 + fee_bps / 1e4
    ks = 1.0 - fee_bps / 1e4
    acc = 0.0
    for r in range(asks.shape[0]):
        q, _ = choose_size_at(asks, r, 0, n, n, bids, r, 0, n, n, kb, ks, 1e-4, np.inf, np.inf)
        if q > 0.0:
            bn, _ = side_fill_at(asks, r, 0, n, n, q)
            sn, _ = side_fill_at(bids, r, 0, n, n, q)
            acc += sn - bn
    return acc


def run_walk(depth: int, pairs: int = 200_000, repeats: int = 5, seed: int = 3) -> dict:
    """ns per candidate walk on ``pairs`` pairs of ``depth``-level ladders (the books
    crossed by 0..30 bp, 10 bp taker fee a side, sizes 0.1..3 per level), each ladder one
    row of prices then sizes, as the detector's L2 blocks hold them."""
    rng = np.random.default_rng(seed)
    j = np.arange(depth)
    cross = rng.uniform(0, 30e-4, pairs)[:, None]
    asks = np.concatenate([np.broadcast_to(100.0 * (1 + 1e-4 * j), (pairs, depth)),
                           rng.uniform(0.1, 3.0, (pairs, depth))], axis=1)
    bids = np.concatenate([100.0 * (1 + cross) * (1 - 1e-4 * j)[None, :],
                           rng.uniform(0.1, 3.0, (pairs, depth))], axis=1)
    asks, bids = np.ascontiguousarray(asks), np.ascontiguousarray(bids)
    _walks(asks[:10], bids[:10], depth, 10.0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        _walks(asks, bids, depth, 10.0)
        times.append((time.perf_counter_ns() - t0) / pairs)
    return {"mode": f"walk, depth {depth}", "pairs": pairs, "ns_per_walk_best": min(times),
            "ns_per_walk_median": statistics.median(times), "runs": times}


def run_rings(cfg, stream, batch=256, repeats=5, capacity=1 << 16) -> dict:
    inst = "bench" + uuid.uuid4().hex[:8]
    venues = list(cfg.enabled_venues())
    rings = []
    try:
        for v in venues:
            r = SpscRing.create(f"feed.{v}", capacity, "MarketUpdate", policy="drop",
                                instance=inst)
            r.join("detector")
            rings.append(r)
        opp = BroadcastRing.create("opportunities", 1 << 16, "Opportunity", instance=inst)
        det = D.Detector(cfg)
        det.attach_output(opp)
        lst = List()
        for r in rings:
            lst.append(r.w)
        sts = np.zeros((len(rings), 4), np.int64)
        slots = np.array([r.slot_w for r in rings], np.int64)
        buf = np.zeros(batch * 8, np.int64)
        vid = np.array([cfg.venue_id(v) for v in venues])
        # per round: as much of the stream as fits every venue's ring
        per_venue = [stream[stream["venue_id"] == v] for v in vid]
        rounds = min(len(p) for p in per_venue) // capacity
        chunk = capacity if rounds else min(len(p) for p in per_venue)
        rounds = max(rounds, 1)
        times, total = [], 0
        for rep in range(repeats + 1):
            for k in range(rounds):
                parts = [p[k * chunk:(k + 1) * chunk].copy() for p in per_venue]
                base = time.time_ns()
                for j, p in enumerate(parts):
                    p["recv_ts_ns"] = base + np.arange(len(p), dtype=np.int64) * 1000 * len(parts) + j
                    assert rings[j].push_batch(p) == len(p)
                n = sum(len(p) for p in parts)
                t0 = time.perf_counter_ns()
                got = 0
                while got < n:
                    got += DS.pump(det.S, lst, sts, slots, buf, batch, 1 << 20, det.out, det.ow,
                                   det.io)
                dt = time.perf_counter_ns() - t0
                if rep:
                    times.append(dt / n)
                    total += n
        s = det.stats()
        res = {"mode": "rings", "batch": batch, "updates": total,
               "ns_per_update_best": min(times), "ns_per_update_median": statistics.median(times),
               "runs": times, "published_total": s["published"]}
        det.ow = np.zeros(0, np.int64)
        det.ring = None
        del lst
        opp.close()
        return res
    finally:
        for r in rings:
            r.close()
        segments.clean(inst, everything=True)


def run(n_instruments: int = 1000, updates: int = 2_000_000, batch: int = 256,
        repeats: int = 5, modes=("kernel", "books", "rings", "stress"), depth: int = 0) -> dict:
    cfg = bench_config(n_instruments)
    if depth > 0:
        modes = tuple(modes) + ("depth", "depth-stress", "walk")
    stream = make_stream(cfg, updates)
    legs = cfg.legs()
    res = {"host": {"machine": platform.machine(), "cpu": cpu_name(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
           "venues": len(cfg.enabled_venues()), "legs": len(legs), "instruments": n_instruments,
           "target_ns_per_update": TARGET_NS, "results": []}
    if "kernel" in modes:
        res["results"].append(run_kernel(cfg, stream, batch, repeats))
    if "rings" in modes:
        res["results"].append(run_rings(cfg, stream, batch, repeats))
    if "books" in modes:
        books = with_levels(stream)
        r = run_kernel(cfg, books, batch, repeats, "kernel, books on (2 LEVEL records per quote)")
        quotes = int((stream["kind"] == Kind.QUOTE).sum())
        r["records_per_quote"] = round(len(books) / max(quotes, 1), 3)
        r["ns_per_quote_median"] = r["ns_per_update_median"] * len(books) / max(quotes, 1)
        res["results"].append(r)
    if "stress" in modes:
        hot = make_stream(cfg, updates, seed=7, dislocation_p=0.05)
        res["results"].append(run_kernel(cfg, hot, batch, repeats, "kernel-stress (5% dislocated)"))
    if "depth" in modes:
        dcfg = depth_config(cfg, depth)
        for label, src in (("", stream), (", stress", None)):
            if src is None:
                src = make_stream(cfg, updates, seed=7, dislocation_p=0.05)
            books = with_depth(src, depth, updates)
            r = run_kernel(dcfg, books, batch, repeats, f"books, depth {depth}{label}")
            msgs = int((src["kind"] == Kind.QUOTE).sum() and
                       (books["kind"] == Kind.QUOTE).sum())
            r["book_messages"] = msgs
            r["ns_per_book_message_median"] = r["ns_per_update_median"] * len(books) / max(msgs, 1)
            res["results"].append(r)
    if "walk" in modes:
        res["walk"] = run_walk(depth, repeats=repeats)
    res["target_ns_per_book_update"] = TARGET_BOOK_NS
    return res


def render(res: dict) -> str:
    h = res["host"]
    lines = [f"detect: {res['venues']} venues ({res['legs']} legs) x {res['instruments']} "
             f"instruments on {h['cpu']} ({h['cores']} cores), target <= "
             f"{res['target_ns_per_update']:.0f} ns/update",
             "", "| mode | batch | updates timed | ns/update best | ns/update median | verdict |",
             "|---|---|---|---|---|---|"]
    for r in res["results"]:
        ok = "meets target" if r["ns_per_update_median"] <= res["target_ns_per_update"] \
            else "ABOVE target"
        lines.append(f"| {r['mode']} | {r['batch']} | {r['updates']:,} | "
                     f"{r['ns_per_update_best']:.1f} | {r['ns_per_update_median']:.1f} | {ok} |")
    lines.append("")
    for k in res["results"]:
        if "ns_per_quote_median" in k:
            lines.append(f"{k['mode']}: {k['records_per_quote']} records per quote, "
                         f"{k['ns_per_quote_median']:.1f} ns per quote with its levels "
                         f"(median)")
    for k in res["results"]:
        if "ns_per_book_message_median" in k:
            ok = "meets" if k["ns_per_update_median"] <= res["target_ns_per_book_update"] \
                else "ABOVE"
            lines.append(f"{k['mode']}: {k['ns_per_update_median']:.1f} ns per record ({ok} the "
                         f"{res['target_ns_per_book_update']:.0f} ns target), "
                         f"{k['ns_per_book_message_median']:,.0f} ns per book message of "
                         f"its records (median)")
    if "walk" in res:
        w = res["walk"]
        lines.append(f"{w['mode']}: {w['ns_per_walk_median']:.1f} ns per candidate walk "
                     f"(choose_size + both fills; median of {len(w['runs'])}, best "
                     f"{w['ns_per_walk_best']:.1f})")
    for k in res["results"]:
        if "evaluations_per_run" in k:
            lines.append(f"{k['mode']}: {k['evaluations_per_run']:,} candidate evaluations and "
                         f"{k['published_per_run']:,} opportunity records per pass of "
                         f"{k['updates']:,} updates")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.detect")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--instruments", type=int, default=1000)
    ap.add_argument("--updates", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--depth", type=int, default=0, help="also books of N levels + walks")
    ap.add_argument("--out", default=None, help="write JSON here too")
    a = ap.parse_args(argv)
    res = run(a.instruments, a.updates, a.batch, a.repeats, depth=a.depth)
    text = json.dumps(res, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text if a.json else render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
