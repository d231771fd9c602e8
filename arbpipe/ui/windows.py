"""Windows over counters the dashboard reads again and again: ``Rates`` (per-key rates of
monotonic counters over the last seconds) and ``LatencyWindows`` (last-minute latency
histograms as differences of snapshots kept about once a second). A counter that goes
back (its writer restarted) starts its window again."""
from __future__ import annotations

import collections

import numpy as np

from arbpipe.transport import histogram as H

HOPS = ("feed_to_detector", "detect", "publish_to_strategy", "total")
LATENCY_WINDOW_S = 60.0
RATE_WINDOW_S = 2.0


class Rates:
    """Per-key rates of monotonic counters over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self.window = window_s
        self.hist: dict = {}

    def rate(self, key, value: int, t: float) -> float:
        d = self.hist.setdefault(key, collections.deque())
        if d and value < d[-1][1]:    # counter reset (its writer restarted)
            d.clear()
        d.append((t, value))
        while len(d) > 2 and t - d[1][0] >= self.window:
            d.popleft()
        t0, v0 = d[0]
        return (value - v0) / (t - t0) if t > t0 else 0.0

    def forget_except(self, keys) -> None:
        for k in [k for k in self.hist if k not in keys]:
            del self.hist[k]


class LatencyWindows:
    """Last-minute histograms: snapshots kept about once a second, diffed newest - oldest."""

    def __init__(self, window_s: float = LATENCY_WINDOW_S):
        self.window = window_s
        self.snaps: dict[str, collections.deque] = {}
        self.latest: dict[str, np.ndarray] = {}

    def add(self, hop: str, snap: np.ndarray, t: float) -> None:
        d = self.snaps.setdefault(hop, collections.deque())
        if d and int(snap[H.W_COUNT]) < int(d[-1][1][H.W_COUNT]):
            d.clear()                 # the writer restarted: counts began again
        if not d or t - d[-1][0] >= 1.0:
            d.append((t, snap))
        while len(d) > 1 and t - d[1][0] >= self.window:
            d.popleft()               # d[0]: the newest snapshot at least a window old
        self.latest[hop] = (t, snap)

    def window_of(self, hop: str) -> tuple[np.ndarray, float]:
        """(values recorded over the window, its length in s)."""
        t0, old = self.snaps[hop][0]
        t, new = self.latest[hop]
        if new is old:
            return new, 0.0
        return H.diff(new.copy(), old), t - t0

    def rows(self) -> list[dict]:
        """One row per hop: last-window count, sum and percentiles, since-start
        count/sum/max (ns)."""
        out = []
        order = {h: k for k, h in enumerate(HOPS)}
        for hop in sorted(self.latest, key=lambda h: (order.get(h, 99), h)):
            win, span = self.window_of(hop)
            s = H.summary(win)
            tot = self.latest[hop][1]
            n_tot = int(tot[H.W_DATA:H.W_DATA + H.NB].sum())
            out.append({"hop": hop, "window_s": round(span, 1), "count": s["count"],
                        "sum_ns": int(win[H.W_SUM]) if s["count"] else 0,
                        "p50_ns": _fin(s["p50_ns"]), "p99_ns": _fin(s["p99_ns"]),
                        "p999_ns": _fin(s["p999_ns"]), "mean_ns": _fin(s["mean_ns"]),
                        "max_ns": float(tot[H.W_MAX]) if n_tot else None,
                        "total_count": n_tot, "total_sum_ns": int(tot[H.W_SUM]),
                        "under": int(tot[H.W_UNDER])})
        return out

    def forget_except(self, hops) -> None:
        for h in [h for h in self.latest if h not in hops]:
            self.latest.pop(h, None)
            self.snaps.pop(h, None)


def _fin(x: float):
    return None if x != x else float(x)
