"""``arbpipe bench feeds --depth N``: a depth message from its frame to a book applied and
its top-N change in the feed ring, per venue.

Frames: the valid depth streams of ``bench.fuzz`` (``VenueFrames`` with books on: each
venue's snapshots and diffs with its own ids and checksums; REST snapshots delivered as the
runtime would), encoded as the venue sends them, each made just before it is timed: made up
front, the stream does not follow the adapter (REST snapshots are then of the final book,
so most diffs are dropped as older; Coinbase sequences break), and only a few dozen frames
per venue were timed. Path timed per frame: exactly what
``Feed.on_frame`` does (``adapter.parse`` into a ``RingSink`` with L2 books of N levels,
then one push into a real SPSC ring); the ring is drained between frames, untimed. A first
pass warms the kernels and the books; the second is timed. Figures: median / p99 us per
frame, levels per diff, and depth messages per second of one feed (1 / mean time).
"""
from __future__ import annotations

import json
import random
import statistics
import time
import uuid

import numpy as np

from arbpipe.transport import segments
from arbpipe.transport.rings import SpscRing
from arbpipe.feeds.sinks import RingSink
from bench.fuzz import BOOK_FRAMES, VenueFrames, deliver_rest, fuzz_adapter
from shm_layouts import MARKET_UPDATE

TARGET_US = 10.0
TARGET_MSGS = 30_000


def _frames(venue: str, depth: int, seed: int):
    adapter = fuzz_adapter(venue)
    adapter.depth = depth
    natives = [i.native for i in adapter.instruments]
    gen = VenueFrames(venue, natives, random.Random(seed), adapter)
    return adapter, gen


def run_venue(venue: str, depth: int = 20, n: int = 20_000, seed: int = 1) -> dict:
    inst = "bd" + uuid.uuid4().hex[:8]
    ring = SpscRing.create("bench", 1 << 16, "MarketUpdate", policy="drop", instance=inst)
    try:
        ring.join("bench")
        buf = np.zeros(1 << 12, MARKET_UPDATE)
        times = []
        levels = []
        for rep in range(2):
            adapter, gen = _frames(venue, depth, seed)
            sink = RingSink(ring, adapter.venue_id, depth=depth)
            st = {"rest_bodies": 0, "rest_kinds": {}, "rest_rejected": 0, "rest_held": 0,
                  "rest_silent": 0, "rest_crashes": 0, "resyncs": 0, "examples": []}
            books = gen.books
            for _ in range(n):
                # made here, untimed: the stream follows the adapter (REST snapshots are of
                # the book as it is now, Coinbase sequences), so it cannot be made up front
                o, si = gen.valid()
                frame = json.dumps(o).encode()
                lv0 = sink.book_levels
                t0 = time.perf_counter_ns()
                sink.recv_ns = time.time_ns()
                ctl = adapter.parse(frame, sink.recv_ns, sink, si)
                if sink.n:
                    sink.flush()
                dt = time.perf_counter_ns() - t0
                if ctl is not None and ctl.kind == "resync":
                    books.resync(ctl.symbol)
                if hasattr(books, "rest_due"):
                    deliver_rest(adapter, sink, books, st)
                while ring.pop_batch(buf):
                    pass
                if rep and sink.book_levels > lv0:      # frames that changed a book
                    times.append(dt)
                    levels.append(sink.book_levels - lv0)
        t = np.array(times, np.float64) / 1e3
        return {"venue": venue, "depth": depth, "frames": n, "timed": len(t),
                "us_median": float(np.median(t)) if len(t) else None,
                "us_p99": float(np.percentile(t, 99)) if len(t) else None,
                "levels_per_message_median": statistics.median(levels) if levels else 0,
                "messages_per_s": float(1e6 / t.mean()) if len(t) else None,
                "resyncs": sink.book_resyncs, "ready": len(sink.ready)}
    finally:
        ring.close()
        segments.clean(inst, everything=True)


def run(depth: int = 20, n: int = 20_000) -> dict:
    return {"depth": depth, "target_us": TARGET_US, "target_messages_per_s": TARGET_MSGS,
            "venues": [run_venue(v, depth, n) for v in BOOK_FRAMES]}


def render(res: dict) -> str:
    lines = [f"depth messages: frame -> book applied -> top-{res['depth']} change in the ring "
             f"(targets: median <= {res['target_us']:g} us, >= {res['target_messages_per_s']:,} "
             f"messages/s per feed)", "",
             "| venue | timed | us median | us p99 | LEVEL records / message | messages/s | "
             "verdict |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in res["venues"]:
        ok = r["us_median"] is not None and r["us_median"] <= res["target_us"] and \
            r["messages_per_s"] >= res["target_messages_per_s"]
        lines.append(f"| {r['venue']} | {r['timed']:,} | {r['us_median']:.1f} | "
                     f"{r['us_p99']:.1f} | {r['levels_per_message_median']:g} | "
                     f"{r['messages_per_s']:,.0f} | {'meets targets' if ok else 'BELOW target'} |")
    return "\n".join(lines)
