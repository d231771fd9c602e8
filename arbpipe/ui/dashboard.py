"""The dashboard's state model: what ``arbpipe attach dashboard`` shows, kept since start.

``Dashboard`` (run by ``procs.dashboard``) reads the ``opportunities`` broadcast ring as
reader ``dashboard`` and keeps, in an ``OpportunityBook``, every opportunity still open (by
``opp_id``) and a bounded list of recently closed ones with their close reason and
lifetime. At ``refresh_hz`` it also reads the counters every other process keeps in shared
memory -- rings (``arbpipe.ops.stat.snapshot``), feeds (``arbpipe.feeds.runtime.read_feed_stats``), the
detector (``arbpipe.detect.detector.read_stats``), the strategy (state blob ``strategy.state``) and
the latency histograms (``arbpipe.transport.histogram``; last-minute windows are differences of the
snapshots kept here) -- and publishes the whole view as one JSON document in the state blob
``dashboard.state``. Attaches only read that blob, so any number of them see the state
accumulated since start and none of them can disturb the tree.

Invariants
- An opportunity is in ``open`` from its first OPEN/UPDATE record until its CLOSED record.
  Records of one opportunity share ``opp_id``; the record's ``opened_ns`` makes lifetimes
  exact even for opportunities opened before this reader joined (lifetime = CLOSED
  ``detect_ns`` - ``opened_ns``, ns).
- ``opp_id >> 32`` is the start second of the detector run that made it: when records of a
  newer run appear, the open opportunities of older runs (a detector killed without closing
  them) are closed with reason ``detector_restart``.
- When this reader is lapped (records lost), open opportunities not seen since before the
  loss are dropped with reason ``lost``; one still open comes back with its next UPDATE.
- A restarted dashboard resumes its ring slot (by reader name) and its book from the
  previous ``dashboard.state`` document, so accumulated state survives its own restart.

Units: prices in quote currency, sizes in base units, spreads in bps, times in ns
(CLOCK_REALTIME) unless a key says ``_s``; rates per second.
"""
from __future__ import annotations

import collections
import os
import signal
import time

import numpy as np

from arbpipe.transport import histogram as H
from arbpipe.transport import segments
from shm_layouts import OPPORTUNITY, CloseReason, OppState
from shm_layouts.records import OPP_BUY_PERP, OPP_SELL_PERP

STATE_BLOB = "dashboard.state"
STRATEGY_BLOB = "strategy.state"
OPP_RING = "opportunities"
READER = "dashboard"
STATE_VERSION = 1
BLOB_SIZE = 1 << 22             # 4 MiB: room for thousands of open rows (pages used on demand)
MAX_OPEN_ROWS = 2000            # open rows published (best net first); the count is exact
MAX_OPEN = 50_000               # book bound: beyond it the stalest open entries are evicted
MAX_POSITIONS = 200             # strategy positions carried into the view
HOPS = ("feed_to_detector", "detect", "publish_to_strategy", "total")
LATENCY_WINDOW_S = 60.0
RATE_WINDOW_S = 2.0

REASONS = {int(r): r.name.lower() for r in CloseReason}
REASONS.update({100: "detector_restart", 101: "lost"})
R_DETECTOR_RESTART, R_LOST = 100, 101
_OPEN, _UPDATE, _CLOSED = int(OppState.OPEN), int(OppState.UPDATE), int(OppState.CLOSED)
_FIELDS = OPPORTUNITY.names
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_I = {n: i for i, n in enumerate(_FIELDS)}


class Names:
    """Instrument and venue-leg names from the config (fallback: the registered ids)."""

    def __init__(self, cfg=None):
        self.cfg = cfg
        self.legs = cfg.legs() if cfg is not None else None
        self._cache: dict = {}

    def instrument(self, iid: int) -> str:
        key = ("i", iid)
        n = self._cache.get(key)
        if n is None:
            from arbpipe import symbols
            from arbpipe.config import CANONICAL_MASK
            n = (self.cfg.instrument_name(iid) if self.cfg is not None else None) or \
                symbols.instrument_name(int(iid) & CANONICAL_MASK)
            self._cache[key] = n
        return n

    def venue(self, vid: int, perp: bool) -> str:
        """Leg name: ``okx`` / ``okx-perp`` (a perp-only venue keeps its own name)."""
        key = ("v", vid, perp)
        n = self._cache.get(key)
        if n is None:
            from arbpipe.config import PERP_ID_BIT, VENUE_NAMES
            leg = self.legs.leg_of(vid, PERP_ID_BIT if perp else 0) if self.legs else -1
            if leg >= 0:
                n = self.legs.names[leg]
            else:
                from arbpipe.symbols import PERP_VENUES
                n = VENUE_NAMES.get(int(vid), f"venue{vid}")
                if perp and n not in PERP_VENUES:
                    n += "-perp"
            self._cache[key] = n
        return n


class OpportunityBook:
    """Open opportunities by ``opp_id`` plus the newest ``closed_keep`` closed ones."""

    def __init__(self, names: Names | None = None, closed_keep: int = 200,
                 max_open: int = MAX_OPEN):
        self.names = names or Names()
        self.open: dict[int, dict] = {}
        self.closed: collections.deque = collections.deque(maxlen=max(1, closed_keep))
        self.max_open = max_open
        self.max_run = 0                      # newest detector run (opp_id >> 32) seen
        self.counters = {"records": 0, "opened": 0, "updated": 0, "closed": 0,
                         "orphan_updates": 0, "orphan_closes": 0, "evicted": 0,
                         "bad_records": 0}
        self.closed_by_reason: dict[str, int] = {}

    # -- records -------------------------------------------------------------------------
    def apply(self, recs: np.ndarray) -> int:
        """Apply Opportunity records (structured array) in ring order; returns how many."""
        n = len(recs)
        if n == 0:
            return 0
        rows = recs.tolist()
        for r in rows:
            self._apply_one(r)
        self.counters["records"] += n
        if len(self.open) > self.max_open:
            self._evict()
        return n

    def _row(self, r) -> dict:
        i = _I
        flags = int(r[i["flags"]])
        return {"id": int(r[i["opp_id"]]),
                "instrument": self.names.instrument(int(r[i["instrument_id"]])),
                "buy": self.names.venue(int(r[i["buy_venue"]]), bool(flags & OPP_BUY_PERP)),
                "sell": self.names.venue(int(r[i["sell_venue"]]), bool(flags & OPP_SELL_PERP)),
                "buy_ask": float(r[i["buy_ask"]]), "sell_bid": float(r[i["sell_bid"]]),
                "qty": float(r[i["exec_qty"]]),
                "gross_bps": round(float(r[i["gross_bps"]]), 4),
                "net_bps": round(float(r[i["net_bps"]]), 4),
                "funding_bps": round(float(r[i["funding_delta_bps"]]), 4),
                "confidence": round(float(r[i["confidence"]]), 2),
                "opened_ns": int(r[i["opened_ns"]]) or int(r[i["detect_ns"]]),
                "updated_ns": int(r[i["detect_ns"]]),
                "trigger_ns": int(r[i["trigger_recv_ns"]]),
                "updates": 0}

    def _apply_one(self, r) -> None:
        i = _I
        state = int(r[i["state"]])
        oid = int(r[i["opp_id"]])
        run = oid >> 32
        if run > self.max_run:
            if self.max_run and self.open:
                self._close_run_before(run, int(r[i["detect_ns"]]))
            self.max_run = run
        c = self.counters
        if state == _OPEN or state == _UPDATE:
            row = self.open.get(oid)
            if row is None:
                row = self._row(r)
                row["peak_net_bps"] = row["net_bps"]
                self.open[oid] = row
                if state == _OPEN:
                    c["opened"] += 1
                else:
                    c["orphan_updates"] += 1
                    c["updated"] += 1
                return
            new = self._row(r)
            new["updates"] = row["updates"] + 1
            new["opened_ns"] = row["opened_ns"] if not int(r[i["opened_ns"]]) else new["opened_ns"]
            new["peak_net_bps"] = max(row["peak_net_bps"], new["net_bps"])
            self.open[oid] = new
            c["updated"] += 1
        elif state == _CLOSED:
            row = self.open.pop(oid, None)
            last = self._row(r)
            if row is None:
                c["orphan_closes"] += 1
                row = last
                row["peak_net_bps"] = last["net_bps"]
            elif int(r[i["opened_ns"]]):
                row["opened_ns"] = last["opened_ns"]
            self._closed(row, REASONS.get(int(r[i["close_reason"]]), "unknown"),
                         last["updated_ns"])
        else:
            c["bad_records"] += 1

    def _closed(self, row: dict, reason: str, closed_ns: int) -> None:
        row = dict(row)
        row["reason"] = reason
        row["closed_ns"] = closed_ns
        row["lifetime_ns"] = max(0, closed_ns - row["opened_ns"])
        self.closed.appendleft(row)
        self.counters["closed"] += 1
        self.closed_by_reason[reason] = self.closed_by_reason.get(reason, 0) + 1

    def _close_run_before(self, run: int, when_ns: int) -> None:
        for oid in [k for k in self.open if (k >> 32) < run]:
            self._closed(self.open.pop(oid), REASONS[R_DETECTOR_RESTART], when_ns)

    def drop_unseen_since(self, t_ns: int, now_ns: int) -> int:
        """After a lap: drop open entries whose newest record is older than ``t_ns``."""
        gone = [k for k, row in self.open.items() if row["updated_ns"] < t_ns]
        for oid in gone:
            self._closed(self.open.pop(oid), REASONS[R_LOST], now_ns)
        return len(gone)

    def _evict(self) -> None:
        extra = len(self.open) - self.max_open
        for oid in sorted(self.open, key=lambda k: self.open[k]["updated_ns"])[:extra]:
            del self.open[oid]
            self.counters["evicted"] += 1

    # -- views ------------------------------------------------------------------------------
    def open_rows(self, limit: int = MAX_OPEN_ROWS) -> list[dict]:
        rows = sorted(self.open.values(), key=lambda x: -x["net_bps"])
        return rows[:limit]

    def to_state(self, limit: int = MAX_OPEN_ROWS) -> dict:
        return {"open": self.open_rows(limit), "open_count": len(self.open),
                "closed": list(self.closed), "counters": dict(self.counters),
                "closed_by_reason": dict(self.closed_by_reason), "max_run": self.max_run}

    def restore(self, doc: dict) -> None:
        """Take over the book of a previous dashboard's published state."""
        for row in doc.get("open", []):
            self.open[int(row["id"])] = dict(row)
        for row in reversed(doc.get("closed", [])):
            self.closed.appendleft(dict(row))
        for k, v in doc.get("counters", {}).items():
            if k in self.counters:
                self.counters[k] = int(v)
        self.closed_by_reason.update({k: int(v) for k, v in doc.get("closed_by_reason",
                                                                    {}).items()})
        self.max_run = int(doc.get("max_run", 0))


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
        """One row per hop: last-window percentiles, since-start count/sum/max (ns)."""
        out = []
        order = {h: k for k, h in enumerate(HOPS)}
        for hop in sorted(self.latest, key=lambda h: (order.get(h, 99), h)):
            win, span = self.window_of(hop)
            s = H.summary(win)
            tot = self.latest[hop][1]
            n_tot = int(tot[H.W_DATA:H.W_DATA + H.NB].sum())
            out.append({"hop": hop, "window_s": round(span, 1), "count": s["count"],
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


class SegmentCache:
    """The instance's segments, attached once and kept: listed again (headers probed,
    creators checked) at most every ``relist_s``; a segment re-created under the same
    name (new creator or creation time) is attached again, a vanished one is closed."""

    def __init__(self, instance: str, relist_s: float = 1.0):
        self.instance = instance
        self.relist_s = relist_s
        self.listed = -1e9
        self.segs: dict[str, tuple] = {}       # name -> (ident, Segment, stale)

    def relist(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.listed < self.relist_s:
            return
        self.listed = now
        seen = set()
        for s in segments.list_segments(self.instance):
            h = s.header
            if h is None or s.name in (STATE_BLOB, "supervisor"):
                continue
            seen.add(s.name)
            ident = (h.creator_pid, h.created_ns, h.kind)
            cur = self.segs.get(s.name)
            if cur is not None and cur[0] == ident:
                self.segs[s.name] = (ident, cur[1], s.stale)
                continue
            if cur is not None:
                cur[1].close()
                del self.segs[s.name]
            try:
                seg = segments.Segment.attach(self.instance, s.name)
            except segments.SegmentError:
                continue
            self.segs[s.name] = (ident, seg, s.stale)
        for name in [n for n in self.segs if n not in seen]:
            self.segs.pop(name)[1].close()

    def items(self):
        """(name, Segment, stale) in name order."""
        return [(n, v[1], v[2]) for n, v in sorted(self.segs.items())]

    def close(self) -> None:
        for v in self.segs.values():
            v[1].close()
        self.segs.clear()


class Dashboard:
    """The dashboard process's work: drain the opportunities ring, refresh the other
    processes' counters, publish the view (``dashboard.state``)."""

    def __init__(self, cfg, instance: str | None = None, config_path: str | None = None,
                 publish: bool = True, log=None):
        self.cfg = cfg
        self.instance = instance or segments.default_instance()
        self.config_path = config_path
        dc = getattr(cfg, "dashboard", None)
        self.refresh_hz = float(getattr(dc, "refresh_hz", 10.0))
        self.names = Names(cfg)
        self.book = OpportunityBook(self.names, int(getattr(dc, "closed_keep", 200)))
        self.log = log or (lambda msg: None)
        self.ring = None
        self.buf = np.zeros(1024, OPPORTUNITY)
        self.lost = self.laps = 0       # records this reader lost to laps, laps (since start)
        self._ring_lost = self._ring_laps = 0
        self.rates = Rates()
        self.latency = LatencyWindows()
        self.started_ns = time.time_ns()
        self.restored = False
        self.metrics_info: dict = {"enabled": False, "host": None, "port": None, "url": None,
                                   "error": None, "scrapes": 0}
        self.publishes = 0
        self.blob = None
        self.last_state: dict | None = None
        self._hists: dict = {}
        self.rings: list[dict] = []
        self.venues: list[dict] = []
        self.detector: dict | None = None
        self.strategy: dict | None = None
        self.refresh_ms = 0.0
        self.segs = SegmentCache(self.instance)
        if publish:
            self._take_over_previous()
            from arbpipe.transport.stateblob import StateBlob
            self.blob = StateBlob.create(self.instance, STATE_BLOB, BLOB_SIZE)

    def _take_over_previous(self) -> None:
        """A crashed predecessor's state (its blob is stale): continue its book."""
        from arbpipe.transport.stateblob import read_blob
        doc = read_blob(self.instance, STATE_BLOB)
        if not doc or doc.get("_alive") or doc.get("version") != STATE_VERSION:
            return
        if doc.get("_pid") == os.getpid():
            return
        self.book.restore(doc.get("opps", {}))
        self.started_ns = int(doc.get("started_ns", self.started_ns))
        self.lost = int(doc.get("opps", {}).get("reader", {}).get("lost", 0))
        self.laps = int(doc.get("opps", {}).get("reader", {}).get("laps", 0))
        self.restored = True
        self.log(f"dashboard: continued the state of pid {doc.get('_pid')} "
                 f"({len(self.book.open)} open, {len(self.book.closed)} closed)")

    # -- the opportunities ring ------------------------------------------------------------
    def open_ring(self) -> bool:
        """Attach to ``opportunities`` as reader ``dashboard`` (False: not there yet)."""
        if self.ring is not None:
            return True
        from arbpipe.transport.rings import BroadcastRing
        try:
            ring = BroadcastRing.attach(OPP_RING, instance=self.instance, record="Opportunity")
        except segments.SegmentError:
            return False
        ring.spin = 0            # not latency-critical: sleep on the doorbell at once
        ring.yields = 0
        ring.join(READER)
        st = ring.reader_stats()        # a resumed slot keeps its counters
        self._ring_lost, self._ring_laps = st["lost"], st["laps"]
        self.ring = ring
        return True

    def wait(self, timeout: float) -> bool:
        """Block on the ring's doorbell up to ``timeout`` s (sleep if there is no ring)."""
        if self.ring is None:
            time.sleep(max(timeout, 0))
            return False
        # SIGTERM/SIGINT stay pending while asleep (at most ``timeout``): a semaphore wait
        # interrupted by a signal would skip the doorbell's sleeper bookkeeping, and a
        # sleeper count left behind makes the writer look for sleepers on every publish
        import posix_ipc
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            return self.ring.wait(max(timeout, 0))
        except posix_ipc.SignalError:
            return False
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def drain(self, max_records: int = 1 << 20) -> int:
        """Pop and apply what the ring holds (bounded). After a lap (records lost, CLOSED
        ones possibly among them) open entries not seen since the records that follow the
        gap are dropped as ``lost``."""
        if self.ring is None and not self.open_ring():
            return 0
        n = 0
        while n < max_records:
            k = self.ring.pop_batch(self.buf, timeout=0)
            st = self.ring.reader_stats()
            if k:
                self.book.apply(self.buf[:k])
                n += k
            if st["lost"] > self._ring_lost:
                since = int(self.buf["detect_ns"][:k].min()) if k else time.time_ns()
                self.book.drop_unseen_since(since, time.time_ns())
                self.lost += st["lost"] - self._ring_lost
                self.laps += max(st["laps"] - self._ring_laps, 0)
            self._ring_lost, self._ring_laps = st["lost"], st["laps"]
            if k < len(self.buf):
                break
        return n

    # -- the other processes' counters ---------------------------------------------------------
    def refresh(self) -> None:
        """Read every ring's, feed's, the detector's and the histograms' counters from the
        attached segments (``SegmentCache``), and the strategy's state blob."""
        from arbpipe.detect.detector import (C_NLEGS, N_COUNTERS, STATS_KIND, STATS_NAME,
                                      STATS_WORD0, counters_dict)
        from arbpipe.feeds.runtime import _read_record, stats_record_to_dict
        from arbpipe.transport.rings import ring_stats
        from arbpipe.transport.stateblob import read_blob
        from shm_layouts import blocks as B
        from shm_layouts import feed_stats as FS
        t0 = time.perf_counter()
        t = time.monotonic()
        now = time.time_ns()
        self.segs.relist()
        keys = set()
        rings, venues, hops = [], [], set()
        self.detector = None
        for name, seg, stale in self.segs.items():
            kind = seg.header.kind
            if kind in (1, 2, 3):
                rings.append(self._ring_row(ring_stats(seg), stale, t, keys))
            elif kind == FS.FEED_STATS_KIND:
                f = stats_record_to_dict(_read_record(seg))
                f.update(name=name, pid=seg.header.creator_pid, stale=stale)
                venues.append(self._venue_row(f, now, t, keys))
            elif kind == STATS_KIND and name == STATS_NAME:
                w = seg.words
                ctr = np.array(w[STATS_WORD0:STATS_WORD0 + N_COUNTERS])
                nl = int(ctr[C_NLEGS])
                legs = np.array(w[STATS_WORD0 + N_COUNTERS:STATS_WORD0 + N_COUNTERS + nl])
                names = self.cfg.legs().names if self.cfg is not None else None
                d = counters_dict(ctr, legs, names if names and len(names) == nl else None)
                d.update(pid=seg.header.creator_pid, alive=not stale)
                d["rate"] = round(self.rates.rate(("detector",), d["updates"], t), 1)
                keys.add(("detector",))
                self.detector = d
            elif kind == B.HISTOGRAM_KIND and name.startswith(H.PREFIX):
                hop = name[len(H.PREFIX):]
                hops.add(hop)
                self.latency.add(hop, np.array(seg.words[:H.W_DATA + H.NB]), t)
        self.rings = rings
        self.venues = sorted(venues, key=lambda v: v["venue"])
        self.rates.forget_except(keys)
        self.latency.forget_except(hops)
        s = read_blob(self.instance, STRATEGY_BLOB)
        if s is not None and isinstance(s.get("positions"), list):
            pos = s["positions"]
            if len(pos) > MAX_POSITIONS:
                s["positions"] = sorted(pos, key=lambda p: -abs(p.get("qty", 0) *
                                                                 p.get("mark", 0)))[:MAX_POSITIONS]
                s["positions_total"] = len(pos)
        self.strategy = s
        self.refresh_ms = (time.perf_counter() - t0) * 1e3

    def _ring_row(self, r: dict, stale: bool, t: float, keys: set) -> dict:
        k = ("ring", r["name"])
        keys.add(k)
        readers = []
        for x in r["readers"]:
            kx = ("reader", r["name"], x["name"])
            keys.add(kx)
            readers.append({"name": x["name"], "pid": x["pid"], "alive": x["alive"],
                            "lag": x["lag"], "received": x["received"], "lost": x["lost"],
                            "laps": x["lapped"],
                            "rate": round(self.rates.rate(kx, x["received"], t), 1)})
        return {"name": r["name"], "kind": r["kind"], "record": r["record"],
                "capacity": r["capacity"], "published": r["published"],
                "rate": round(self.rates.rate(k, r["published"], t), 1),
                "fill": r["fill"], "fill_pct": round(r["fill_pct"], 2),
                "dropped": r["dropped"], "full_events": r["full_events"],
                "stale": stale, "readers": readers}

    def _venue_row(self, f: dict, now: int, t: float, keys: set) -> dict:
        k = ("venue", f["venue"])
        keys.add(k)
        connected = bin(f["connected_mask"]).count("1")
        age = (now - f["last_msg_ns"]) / 1e9 if f["last_msg_ns"] else None
        st = (f["venue_status_name"] or "").lower()
        if f.get("stale"):
            status = "gone"                  # the feed process is dead
        elif connected == 0 or st == "disconnected":
            status = "down"
        elif st == "stale" or f["stale_symbols"]:
            status = "stale"
        else:
            status = "connected"
        return {"venue": f["venue"], "status": status, "connected": connected,
                "sockets": f["n_sockets"],
                "msg_rate": round(self.rates.rate(k, f["frames"], t), 1),
                "last_msg_age_s": None if age is None else round(age, 3),
                "frames": f["frames"], "updates": f["updates"],
                "reconnects": f["reconnects"], "disconnects": f["disconnects"],
                "planned_reconnects": f["planned_reconnects"],
                "halfopen_reconnects": f.get("halfopen_reconnects", 0),
                "connect_failures": f["connect_failures"],
                "rejects": f["rejects_total"], "rejects_by_reason": f["rejects"],
                "ring_dropped": f["ring_dropped"], "stale_symbols": f["stale_symbols"],
                "symbols": f["symbols"], "pid": f["pid"], "last_error": f["last_error"]}

    # -- the published view --------------------------------------------------------------------
    def state(self) -> dict:
        now = time.time_ns()
        opps = self.book.to_state()
        lag = None
        if self.ring is not None:
            from arbpipe.transport import ring_kernels as K
            lag = max(int(K.head_of(self.ring.w)) - self.ring.reader_stats()["position"], 0)
        opps["reader"] = {"present": self.ring is not None, "lost": self.lost,
                          "laps": self.laps, "lag": lag}
        cfg = self.cfg
        doc = {"version": STATE_VERSION, "instance": self.instance, "pid": os.getpid(),
               "started_ns": self.started_ns, "now_ns": now, "refresh_hz": self.refresh_hz,
               "restored": self.restored, "publishes": self.publishes,
               "refresh_ms": round(self.refresh_ms, 3),
               "config": {"path": self.config_path,
                          "instruments": list(cfg.instruments) if cfg is not None else [],
                          "venues": list(cfg.enabled_venues()) if cfg is not None else []},
               "metrics": dict(self.metrics_info),
               "opps": opps, "venues": self.venues, "rings": self.rings,
               "detector": self.detector, "latency": self.latency.rows(),
               "strategy": self.strategy}
        self._hists = {hop: snap for hop, (_, snap) in self.latency.latest.items()}
        self.last_state = doc
        return doc

    def publish(self) -> dict:
        doc = self.state()
        if self.blob is not None:
            try:
                self.blob.publish(doc)
            except ValueError:          # too large: fewer open rows, then try again
                doc["opps"]["open"] = doc["opps"]["open"][:200]
                doc["opps"]["closed"] = doc["opps"]["closed"][:50]
                self.blob.publish(doc)
        self.publishes += 1
        return doc

    def histogram_snapshots(self) -> dict[str, np.ndarray]:
        """Newest snapshot per hop as of the last publication (the metrics endpoint's
        ``_bucket`` series; a fresh dict per publication, safe to read from its thread)."""
        return self._hists

    # -- the loop --------------------------------------------------------------------------------
    def run(self, stop, max_wake_hz: float = 20.0) -> None:
        """Until ``stop()``: sleep on the doorbell (timeout: the next publish), drain, and
        publish at ``refresh_hz``; never wakes more than ``max_wake_hz`` times a second."""
        period = 1.0 / self.refresh_hz
        gap = 1.0 / max_wake_hz
        next_pub = time.monotonic()
        while not stop():
            now = time.monotonic()
            if now >= next_pub:
                self.drain()
                try:
                    self.refresh()
                except Exception as e:          # a torn or vanishing segment: next time
                    self.log(f"dashboard: refresh failed: {type(e).__name__}: {e}")
                self.publish()
                next_pub = max(next_pub + period, time.monotonic() + period / 4)
            woke_at = time.monotonic()
            self.wait(next_pub - woke_at)
            self.drain()
            rest = gap - (time.monotonic() - woke_at)
            if rest > 0 and not stop():
                time.sleep(min(rest, max(next_pub - time.monotonic(), 0)))

    def close(self) -> None:
        self.segs.close()
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.blob is not None:
            self.blob.close(unlink=True)
            self.blob = None
