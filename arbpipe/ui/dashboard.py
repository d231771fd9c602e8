"""The dashboard process's work: what ``arbpipe attach dashboard`` shows, kept since start.

``Dashboard`` (run by ``procs.dashboard``) reads the ``opportunities`` broadcast ring as
reader ``dashboard`` and keeps, in an ``OpportunityBook``, every opportunity still open (by
``opp_id``) and a bounded list of recently closed ones with their close reason and
lifetime. At ``refresh_hz`` it also reads the counters every other process keeps in shared
memory, from the segments it keeps attached (``SegmentCache``) -- rings, feeds, the
detector's counters, the latency histograms (last-minute windows are differences of the
snapshots kept here) -- and the strategy's state blob ``strategy.state``, and publishes
the whole view as one JSON document in the state blob ``dashboard.state``. For the metrics
endpoint it also reads the persister's ``persister.state`` blob, the supervisor's
``status.json`` (restarts per process) and peeks at the newest records of each
``feed.<venue>`` ring (clock skew: receive minus exchange time). Attaches only read the
view's blob, so any number of them see the state accumulated since start and none of them
can disturb the tree.

A restarted dashboard resumes its ring slot (by reader name) and its book from the previous
``dashboard.state`` document, so accumulated state survives its own restart. The book and
its invariants: ``arbpipe.ui.book``; rate and latency windows: ``arbpipe.ui.windows``; the
blob's name and version: ``arbpipe.ui.blob``.

Units: prices in quote currency, sizes in base units, spreads in bps, times in ns
(CLOCK_REALTIME) unless a key says ``_s``; rates per second.
"""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import posix_ipc

from arbpipe.bridge.stats import read_stats as read_bridge_stats
from arbpipe.detect.stats import counters_dict
from arbpipe.feeds.stats import read_record, stats_record_to_dict
from arbpipe.paths import run_dir
from arbpipe.persist.stats import BLOB_NAME as PERSISTER_BLOB
from arbpipe.transport import histogram as H
from arbpipe.transport import kernels as K
from arbpipe.transport import segments
from arbpipe.transport.rings import BroadcastRing, ring_stats
from arbpipe.transport.stateblob import StateBlob, read_blob
from arbpipe.ui.blob import STATE_BLOB, STATE_VERSION
from arbpipe.ui.book import Names, OpportunityBook
from arbpipe.ui.windows import LatencyWindows, Rates
from shm_layouts import MARKET_UPDATE, OPPORTUNITY, Kind
from shm_layouts import blocks as B
from shm_layouts import feed_stats as FS
from shm_layouts import words as W
from shm_layouts.detector_stats import C_CALLS, C_HEARTBEAT, C_IDLE, C_NLEGS, C_SWEEPS, \
    N_COUNTERS, STATS_KIND, STATS_NAME, STATS_WORD0
from shm_layouts.kinds import is_ring

STRATEGY_BLOB = "strategy.state"
OPP_RING = "opportunities"
READER = "dashboard"
BLOB_SIZE = 1 << 22             # 4 MiB: room for thousands of open rows (pages used on demand)
MAX_POSITIONS = 200             # strategy positions carried into the view
SKEW_RECORDS = 64               # newest records of a feed ring behind its clock skew
IDLE_PUBLISH_S = 2.0            # nothing moved: the view is still published this often
QUIET_CHECK_S = 0.5             # ... and, once quiet that long, checked for moves this often
_FEED_W0 = FS.FEED_STATS_OFFSET // 8    # a feed stats record's first word, and its words
_FEED_STAMPS = [FS.FEED_STATS.fields[f][1] // 8 for f in ("gen", "updated_ns")]  # move idle
PERSISTER_KEYS = ("state", "connected", "backlog_by_stream", "buffer_records", "written",
                  "dropped", "lost", "reconnects")
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def bridge_view(d: dict) -> dict | None:
    """The bridge's two state blobs (``arbpipe.bridge.stats``), cut to what the view and
    the ``arbpipe_bridge_*`` metrics show; None without a bridge."""
    out, inn = d.get("out"), d.get("in")
    if not out and not inn:
        return None
    v: dict = {}
    if out:
        v["out"] = {"alive": bool(out.get("_alive")), "connected": bool(out.get("connected")),
                    "reconnects": out.get("reconnects", 0),
                    "caught_up_age_ms": out.get("caught_up_age_ms"),
                    "rings": {n: {k: r.get(k, 0) for k in ("sent", "behind", "missed")}
                              for n, r in (out.get("rings") or {}).items()}}
    if inn:
        v["in"] = {"alive": bool(inn.get("_alive")), "connected": bool(inn.get("connected")),
                   "reconnects": inn.get("reconnects", 0), "link": inn.get("link"),
                   "lag_ms": inn.get("lag_ms"), "remote_instance": inn.get("remote_instance"),
                   "venues": inn.get("venues") or {}, "latency": inn.get("latency") or {},
                   "streams": {n: {k: s.get(k) for k in ("received", "published", "duplicates",
                                                         "gaps", "ring_dropped", "bad",
                                                         "lag_ms")}
                               for n, s in (inn.get("streams") or {}).items()}}
    return v


class SegmentCache:
    """The instance's segments, attached once and kept: listed again (headers probed,
    creators checked) at most every ``relist_s``; a segment re-created under the same
    name (new creator or creation time) is attached again, a vanished one is closed."""

    def __init__(self, instance: str, relist_s: float = 1.0):
        self.instance = instance
        self.relist_s = relist_s
        self.listed = -1e9
        self.segs: dict[str, tuple] = {}       # name -> (ident, Segment, stale)
        self.supervisor_stale: bool | None = None   # None: no supervisor segment

    def relist(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.listed < self.relist_s:
            return
        self.listed = now
        seen = set()
        self.supervisor_stale = None
        for s in segments.list_segments(self.instance):
            h = s.header
            if h is not None and s.name == "supervisor":
                self.supervisor_stale = s.stale
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
        self.skipped = 0               # refreshes skipped: nothing had moved
        self.blob = None
        self.last_state: dict | None = None
        self._hists: dict = {}
        self.rings: list[dict] = []
        self.venues: list[dict] = []
        self.detector: dict | None = None
        self.strategy: dict | None = None
        self.persister: dict | None = None
        self.bridge: dict | None = None
        self.processes: list[dict] = []
        self._status_read = -1e9
        self._mu = np.zeros(SKEW_RECORDS * W.MU_WORDS, np.int64)
        self._peek_out = np.zeros(3, np.int64)
        self.refresh_ms = 0.0
        self.segs = SegmentCache(self.instance)
        if publish:
            self._take_over_previous()
            self.blob = StateBlob.create(self.instance, STATE_BLOB, BLOB_SIZE)

    def _take_over_previous(self) -> None:
        """A crashed predecessor's state (its blob is stale): continue its book."""
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
        t0 = time.perf_counter()
        t = time.monotonic()
        now = time.time_ns()
        self.segs.relist()
        keys = set()
        rings, venues, hops, skew = [], [], set(), {}
        self.detector = None
        for name, seg, stale in self.segs.items():
            kind = seg.header.kind
            if is_ring(kind):
                rings.append(self._ring_row(ring_stats(seg), stale, t, keys))
                if name.startswith("feed.") and rings[-1]["record"] == "MarketUpdate":
                    skew[name[5:]] = self._clock_skew(seg)
            elif kind == FS.FEED_STATS_KIND:
                f = stats_record_to_dict(read_record(seg))
                f.update(name=name, pid=seg.header.creator_pid, stale=stale)
                venues.append(self._venue_row(f, now, t, keys))
            elif kind == STATS_KIND and name == STATS_NAME:
                w = seg.words
                ctr = np.array(w[STATS_WORD0:STATS_WORD0 + N_COUNTERS])
                nl = int(ctr[C_NLEGS])
                legs = np.array(w[STATS_WORD0 + N_COUNTERS:STATS_WORD0 + N_COUNTERS + nl])
                names = self.cfg.legs().names if self.cfg is not None else None
                d = counters_dict(ctr, legs, names if names and len(names) == nl else None)
                d.update(pid=seg.header.creator_pid, alive=not stale,
                         heartbeat_age_s=_age(now, d["heartbeat_ns"]),
                         last_update_age_s=_age(now, d["last_trigger_recv_ns"]))
                d["rate"] = round(self.rates.rate(("detector",), d["updates"], t), 1)
                keys.add(("detector",))
                self.detector = d
            elif kind == B.HISTOGRAM_KIND and name.startswith(H.PREFIX):
                hop = name[len(H.PREFIX):]
                hops.add(hop)
                self.latency.add(hop, np.array(seg.words[:H.W_DATA + H.NB]), t)
        for v in venues:
            v["clock_skew_s"] = skew.get(v["venue"])
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
        if s is not None:
            s["_age_s"] = _age(now, s.get("_updated_ns", 0))
        self.strategy = s
        p = read_blob(self.instance, PERSISTER_BLOB)
        self.persister = None if p is None else dict(
            {k: p.get(k) for k in PERSISTER_KEYS}, alive=bool(p.get("_alive")))
        self.bridge = bridge_view(read_bridge_stats(self.instance))
        if t - self._status_read >= 1.0:     # the supervisor writes it every second
            self._status_read = t
            self.processes = self._supervised()
        self.refresh_ms = (time.perf_counter() - t0) * 1e3

    def _clock_skew(self, seg) -> float | None:
        """Median receive minus exchange time (s) of the newest quotes in a feed ring that
        carry an exchange time (peeked: nothing is consumed); None without any."""
        w = seg.words
        start = max(int(K.head_of(w)) - SKEW_RECORDS, 0)
        K.peek(w, int(seg.header.kind), start, self._mu, SKEW_RECORDS, self._peek_out)
        recs = self._mu[:int(self._peek_out[1]) * W.MU_WORDS].view(MARKET_UPDATE)
        q = recs[(recs["kind"] == Kind.QUOTE) & (recs["exchange_ts_ns"] > 0)]
        if not len(q):
            return None
        return round(float(np.median(q["recv_ts_ns"] - q["exchange_ts_ns"])) / 1e9, 6)

    def _supervised(self) -> list[dict]:
        """Each process of the tree as the supervisor's ``status.json`` has it (state,
        restarts, uptime); [] without a supervisor."""
        if self.segs.supervisor_stale is None:
            return []
        try:
            with open(os.path.join(run_dir(self.instance), "status.json")) as f:
                rows = json.load(f).get("processes", [])
        except (OSError, ValueError):
            return self.processes
        return [{k: p.get(k) for k in ("name", "role", "state", "restarts", "uptime_s")}
                for p in rows]

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
                "books": f.get("books", 0), "books_ready": f.get("books_ready", 0),
                "book_resyncs": f.get("book_resyncs", 0),
                "resyncs_by_fault": f.get("resyncs_by_fault", {}),
                "symbols": f["symbols"], "pid": f["pid"], "last_error": f["last_error"]}

    # -- the published view --------------------------------------------------------------------
    def state(self) -> dict:
        now = time.time_ns()
        opps = self.book.to_state()
        lag = None
        if self.ring is not None:
            lag = max(int(K.head_of(self.ring.w)) - self.ring.reader_stats()["position"], 0)
        opps["reader"] = {"present": self.ring is not None, "lost": self.lost,
                          "laps": self.laps, "lag": lag}
        pairs: dict[tuple, int] = {}
        for row in self.book.open.values():
            k = (row["instrument"], row["buy"], row["sell"])
            pairs[k] = pairs.get(k, 0) + 1
        opps["open_by_pair"] = [{"instrument": k[0], "buy": k[1], "sell": k[2], "count": n}
                                for k, n in sorted(pairs.items())]
        sup = self.segs.supervisor_stale
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
               "strategy": self.strategy, "persister": self.persister,
               "bridge": self.bridge,
               "supervisor": None if sup is None else {"alive": not sup},
               "processes": self.processes}
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

    # -- what moved ------------------------------------------------------------------------------
    def fingerprint(self) -> int:
        """A cheap summary of what the view is made of, from the attached segments: ring
        heads, feed counters (not their publication stamps), the detector's counters (not
        its heartbeat and loop counts), histogram buckets, this reader's position. Equal
        fingerprints: a refresh would read the same numbers (only ages would move). State
        blobs (strategy, persister) are republished by their writers on timers: what moves
        them moves a ring first, or shows at the next ``IDLE_PUBLISH_S`` publication."""
        parts = [len(self.segs.segs)]
        for name, (ident, seg, _) in self.segs.segs.items():
            kind = ident[2]
            w = seg.words
            if is_ring(kind):
                parts.append(int(K.head_of(w)))
            elif kind == STATS_KIND and name == STATS_NAME:
                c = np.array(w[STATS_WORD0:STATS_WORD0 + N_COUNTERS])
                c[[C_HEARTBEAT, C_CALLS, C_IDLE, C_SWEEPS]] = 0
                parts.append(hash(c.tobytes()))
            elif kind == FS.FEED_STATS_KIND:
                r = np.array(w[_FEED_W0:])
                r[_FEED_STAMPS] = 0
                parts.append(hash(r.tobytes()))
            elif kind == B.HISTOGRAM_KIND and name.startswith(H.PREFIX):
                parts.append(hash(w[:H.W_DATA + H.NB].tobytes()))
        if self.ring is not None:
            parts.append(self.ring.reader_stats()["position"])
        return hash(tuple(parts))

    # -- the loop --------------------------------------------------------------------------------
    def run(self, stop, max_wake_hz: float = 20.0) -> None:
        """Until ``stop()``: sleep on the doorbell (timeout: the next publish), drain, and
        publish at ``refresh_hz`` -- but only when something moved (``fingerprint``), or
        at least every ``IDLE_PUBLISH_S`` (ages, rates decaying, processes); never wakes
        more than ``max_wake_hz`` times a second. Once nothing has moved for
        ``IDLE_PUBLISH_S``, the fingerprint is taken only every ``QUIET_CHECK_S`` until it
        moves or an opportunity arrives (the doorbell wakes the loop for that)."""
        period = 1.0 / self.refresh_hz
        gap = 1.0 / max_wake_hz
        next_pub = time.monotonic()
        published_at, last_fp, moved_at = -1e9, None, time.monotonic()
        while not stop():
            now = time.monotonic()
            if now >= next_pub:
                self.drain()
                fp = self.fingerprint()
                if fp != last_fp:
                    moved_at = now
                if fp != last_fp or now - published_at >= IDLE_PUBLISH_S:
                    try:
                        self.refresh()
                    except Exception as e:          # a torn or vanishing segment: next time
                        self.log(f"dashboard: refresh failed: {type(e).__name__}: {e}")
                    self.publish()
                    published_at, last_fp = time.monotonic(), self.fingerprint()
                else:
                    self.skipped += 1
                step = period if now - moved_at < IDLE_PUBLISH_S else max(period, QUIET_CHECK_S)
                next_pub = max(next_pub + step, time.monotonic() + step / 4)
            woke_at = time.monotonic()
            self.wait(next_pub - woke_at)
            if self.drain():                    # an opportunity: back to refresh_hz at once
                if time.monotonic() - moved_at >= IDLE_PUBLISH_S:
                    next_pub = time.monotonic()
                moved_at = time.monotonic()
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


def _age(now_ns: int, then_ns) -> float | None:
    """Seconds from ``then_ns`` to ``now_ns`` (None when ``then_ns`` is 0: never)."""
    return round((now_ns - then_ns) / 1e9, 3) if then_ns else None
