"""Prometheus metrics of the tree, served by the dashboard process (text format 0.0.4).

``render(state, hists)`` turns the dashboard's published view (``arbpipe.ui.dashboard``) plus
the newest latency histogram snapshots into the exposition text, which the tree's HTTP
endpoint (``arbpipe.ops.http``, in the dashboard process) serves on ``GET /metrics``.

Conventions: every name starts with ``arbpipe_``; counters end in ``_total`` (monotonic
since the writing process started: a restart is a counter reset); times are in seconds,
sizes of rings in records; money in the quote currency (USDT), except names ending in
``_usd`` (the detector's USD value); ages (``_age_seconds``) are
as of the dashboard's newest refresh. Labels: ``ring``, ``reader``, ``venue``, ``hop``,
``reason``, ``instrument``, ``market``, ``quantile``, ``process`` and ``role`` (the
supervisor's names), ``stream`` (persister, bridge in side), ``side`` (bridge: out / in),
``remote`` (the bridge's remote instance), ``buy_venue``/``sell_venue`` (detector legs).
A family whose source is absent (no supervisor, no persister) is declared with no samples.
Latency: ``arbpipe_latency_seconds{hop}`` is a histogram (``_bucket``/``_sum``/``_count``
since the recording process started, coarse ``le`` bounds from the fine shared-memory
buckets: a value counts under ``le`` when its whole fine bucket is <= le);
``arbpipe_latency_last_minute_seconds{hop,quantile}`` is a summary of the dashboard's last
minute (p50/p99/p99.9 and ``_sum``/``_count``; ``arbpipe_latency_last_minute_values{hop}``
repeats the count as a gauge).
"""
from __future__ import annotations

import math
import re

import numpy as np

from arbpipe.transport import histogram as H

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LE_SECONDS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
              5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _bucket_highs() -> np.ndarray:
    """Largest value (ns) of each fine bucket; the last bucket is open-ended."""
    lows = np.array([H.bucket_low(b) for b in range(H.NB)], np.float64)
    highs = np.empty(H.NB, np.float64)
    highs[:-1] = lows[1:] - 1
    highs[-1] = math.inf
    return highs


_HIGHS = _bucket_highs()
_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v) -> str:
    if v is None:
        return "NaN"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def metric_name(text: str) -> str:
    """A string made safe as part of a metric name (``opportunities_read`` stays)."""
    s = _NAME_RE.sub("_", str(text).lower())
    return s if s and not s[0].isdigit() else "_" + s


class Exposition:
    """Builds the text: one ``family`` (HELP/TYPE) then its samples; a family with no
    samples is still declared."""

    def __init__(self):
        self.lines: list[str] = []
        self.seen: set[str] = set()

    def family(self, name: str, mtype: str, help_: str) -> None:
        if name in self.seen:
            raise ValueError(f"metric family {name} declared twice")
        self.seen.add(name)
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {mtype}")

    def sample(self, name: str, value, **labels) -> None:
        if labels:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{lab}}} {_num(value)}")
        else:
            self.lines.append(f"{name} {_num(value)}")

    def one(self, name: str, mtype: str, help_: str, value, **labels) -> None:
        self.family(name, mtype, help_)
        self.sample(name, value, **labels)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _rings(x: Exposition, rings: list[dict]) -> None:
    fams = [
        ("arbpipe_ring_published_total", "counter", "Records published into the ring.",
         lambda r: r["published"]),
        ("arbpipe_ring_dropped_total", "counter",
         "Records the ring refused because it was full (drop policy) or timed out (block).",
         lambda r: r["dropped"]),
        ("arbpipe_ring_full_events_total", "counter", "Times a producer found the ring full.",
         lambda r: r["full_events"]),
        ("arbpipe_ring_capacity_records", "gauge", "Ring capacity in records.",
         lambda r: r["capacity"]),
        ("arbpipe_ring_fill_records", "gauge",
         "Records waiting in the ring (0 for broadcast rings: see reader lag).",
         lambda r: r["fill"]),
        ("arbpipe_ring_fill_ratio", "gauge", "Fill as a fraction of capacity (0..1).",
         lambda r: r["fill_pct"] / 100.0),
        ("arbpipe_ring_throughput_records_per_second", "gauge",
         "Records published per second over the last seconds.", lambda r: r["rate"]),
    ]
    for name, mtype, help_, get in fams:
        x.family(name, mtype, help_)
        for r in rings:
            x.sample(name, get(r), ring=r["name"], kind=r["kind"])
    rfams = [
        ("arbpipe_ring_reader_lag_records", "gauge", "Records published but not yet read.",
         "lag"),
        ("arbpipe_ring_reader_received_total", "counter", "Records read by the reader.",
         "received"),
        ("arbpipe_ring_reader_lost_total", "counter",
         "Records a lapped broadcast reader never saw.", "lost"),
        ("arbpipe_ring_reader_laps_total", "counter", "Times the reader was lapped.", "laps"),
    ]
    for name, mtype, help_, key in rfams:
        x.family(name, mtype, help_)
        for r in rings:
            for rd in r["readers"]:
                x.sample(name, rd[key], ring=r["name"], reader=rd["name"])


def _venues(x: Exposition, venues: list[dict]) -> None:
    fams = [
        ("arbpipe_venue_messages_total", "counter", "Websocket data frames received.",
         "frames"),
        ("arbpipe_venue_updates_total", "counter", "MarketUpdate records produced.",
         "updates"),
        ("arbpipe_venue_reconnects_total", "counter", "Connections made after the first.",
         "reconnects"),
        ("arbpipe_venue_disconnects_total", "counter", "Connections lost unexpectedly.",
         "disconnects"),
        ("arbpipe_venue_planned_reconnects_total", "counter",
         "Reconnects the venue asked for (notices, sequence gaps, refusals).",
         "planned_reconnects"),
        ("arbpipe_venue_halfopen_reconnects_total", "counter",
         "Connections replaced because nothing answered an idle probe (half-open).",
         "halfopen_reconnects"),
        ("arbpipe_venue_connect_failures_total", "counter", "Connection attempts that failed.",
         "connect_failures"),
        ("arbpipe_venue_ring_dropped_total", "counter",
         "Updates the venue's feed ring refused (full).", "ring_dropped"),
        ("arbpipe_venue_connected_sockets", "gauge", "Websockets connected now.",
         "connected"),
        ("arbpipe_venue_stale_symbols", "gauge",
         "Symbols silent past the watchdog now.", "stale_symbols"),
        ("arbpipe_venue_messages_per_second", "gauge",
         "Frames received per second over the last seconds.", "msg_rate"),
        ("arbpipe_venue_books", "gauge", "L2 books the feed keeps (0: BBO only).", "books"),
        ("arbpipe_venue_books_ready", "gauge", "L2 books synced and in use now.",
         "books_ready"),
    ]
    for name, mtype, help_, key in fams:
        x.family(name, mtype, help_)
        for v in venues:
            x.sample(name, v.get(key, 0), venue=v["venue"])
    x.family("arbpipe_venue_rejects_total", "counter",
             "Frames or updates rejected by the feed, by reason.")
    for v in venues:
        for reason, n in sorted(v["rejects_by_reason"].items()):
            x.sample("arbpipe_venue_rejects_total", n, venue=v["venue"], reason=reason)
    x.family("arbpipe_venue_book_resyncs_total", "counter",
             "L2 books marked not ready and resynced, by the rule that broke.")
    for v in venues:
        for reason, n in sorted(v.get("resyncs_by_fault", {}).items()):
            x.sample("arbpipe_venue_book_resyncs_total", n, venue=v["venue"], reason=reason)
    x.family("arbpipe_venue_up", "gauge", "1 while the venue is connected and fresh.")
    for v in venues:
        x.sample("arbpipe_venue_up", v["status"] == "connected", venue=v["venue"])
    x.family("arbpipe_venue_stale", "gauge",
             "1 while the venue is connected but (partly) silent.")
    for v in venues:
        x.sample("arbpipe_venue_stale", v["status"] == "stale", venue=v["venue"])
    x.family("arbpipe_venue_last_message_age_seconds", "gauge",
             "Seconds since the venue's newest frame (NaN: none yet).")
    for v in venues:
        x.sample("arbpipe_venue_last_message_age_seconds", v["last_msg_age_s"],
                 venue=v["venue"])
    x.family("arbpipe_venue_clock_skew_seconds", "gauge",
             "Median receive minus exchange time of the venue's newest quotes: network delay "
             "plus clock offset (NaN: no exchange timestamps).")
    for v in venues:
        x.sample("arbpipe_venue_clock_skew_seconds", v.get("clock_skew_s"), venue=v["venue"])


_DET_COUNTERS = (("updates", "MarketUpdate records read."),
                 ("quotes", "Quote updates read."), ("funding", "Funding updates read."),
                 ("status", "Venue status updates read."),
                 ("evaluations", "Cross-venue spread evaluations."),
                 ("published", "Opportunity records published."),
                 ("dropped_out", "Opportunity records that did not fit the output."),
                 ("walks", "Candidates sized by walking both L2 books."),
                 ("walks_top_of_book", "Candidates sized on a top level (a leg without an L2 "
                  "book: depth 0 or no depth message yet)."),
                 ("walk_levels", "Book levels consumed by the walks, both sides."))


def _detector(x: Exposition, d: dict | None) -> None:
    x.one("arbpipe_detector_up", "gauge", "1 while the detector process is alive.",
          bool(d and d.get("alive")))
    for key, help_ in _DET_COUNTERS:
        x.family(f"arbpipe_detector_{key}_total", "counter", help_)
        if d:
            x.sample(f"arbpipe_detector_{key}_total", d[key])
    for key in ("opened", "updated"):
        x.family(f"arbpipe_detector_opportunities_{key}_total", "counter",
                 f"Opportunities {key} (OPEN / UPDATE records).")
        if d:
            x.sample(f"arbpipe_detector_opportunities_{key}_total", d[key])
    for name, help_, prefix in (
            ("arbpipe_detector_opportunities_closed_total", "Opportunities closed, by reason.",
             "closed_"),
            ("arbpipe_detector_filtered_total", "Evaluations that did not publish, by filter.",
             "filter_")):
        x.family(name, "counter", help_)
        for k, v in (d or {}).items():
            if k.startswith(prefix):
                x.sample(name, v, reason=k[len(prefix):])
    for name, help_, get in (
            ("arbpipe_detector_open_opportunities", "Opportunities open now.",
             lambda d: d["open_now"]),
            ("arbpipe_detector_latency_mean_seconds",
             "Mean feed receive -> OPEN/UPDATE publish since the detector started.",
             lambda d: d["latency_mean_ns"] / 1e9),
            ("arbpipe_detector_latency_max_seconds",
             "Max feed receive -> OPEN/UPDATE publish since the detector started.",
             lambda d: d["latency_max_ns"] / 1e9),
            ("arbpipe_detector_heartbeat_age_seconds",
             "Seconds since the detector's newest housekeeping pass (every detector.sweep_ms).",
             lambda d: d.get("heartbeat_age_s")),
            ("arbpipe_detector_last_update_age_seconds",
             "Seconds since the receive time of the newest update the detector applied "
             "(NaN: none yet).", lambda d: d.get("last_update_age_s"))):
        x.family(name, "gauge", help_)
        if d:
            x.sample(name, get(d))


def _latency(x: Exposition, rows: list[dict], hists: dict) -> None:
    name = "arbpipe_latency_seconds"
    x.family(name, "histogram",
             "Latency of a pipeline hop (feed_to_detector, detect, publish_to_strategy, "
             "total) since its recording process started.")
    for hop in sorted(hists):
        snap = hists[hop]
        counts = snap[H.W_DATA:H.W_DATA + H.NB]
        cum = np.cumsum(counts)
        for le in LE_SECONDS:
            k = int(np.searchsorted(_HIGHS, le * 1e9, side="right"))
            x.sample(f"{name}_bucket", int(cum[k - 1]) if k else 0, hop=hop, le=_num(le))
        total = int(cum[-1])
        x.sample(f"{name}_bucket", total, hop=hop, le="+Inf")
        x.sample(f"{name}_sum", float(snap[H.W_SUM]) / 1e9, hop=hop)
        x.sample(f"{name}_count", total, hop=hop)
    # a summary: only a summary's samples may carry ``quantile`` (a gauge's may not)
    q = "arbpipe_latency_last_minute_seconds"
    x.family(q, "summary", "Latency of a hop over the last minute: p50/p99/p99.9 (NaN: no "
             "values), sum and count.")
    for r in rows:
        for quant, key in (("0.5", "p50_ns"), ("0.99", "p99_ns"), ("0.999", "p999_ns")):
            v = r[key]
            x.sample(q, None if v is None else v / 1e9, hop=r["hop"], quantile=quant)
        x.sample(f"{q}_sum", r.get("sum_ns", 0) / 1e9, hop=r["hop"])
        x.sample(f"{q}_count", r["count"], hop=r["hop"])
    x.family("arbpipe_latency_last_minute_values", "gauge",
             "Values recorded for a hop over the last minute.")
    for r in rows:
        x.sample("arbpipe_latency_last_minute_values", r["count"], hop=r["hop"])


def _strategy(x: Exposition, s: dict | None) -> None:
    up = bool(s and s.get("_alive"))
    x.one("arbpipe_strategy_up", "gauge", "1 while the strategy publishes its state.", up)
    x.family("arbpipe_strategy_state_age_seconds", "gauge",
             "Seconds since the strategy last published its state.")
    if s:
        x.sample("arbpipe_strategy_state_age_seconds", s.get("_age_s"))
    pnl = (s or {}).get("pnl") or {}
    for key, help_ in (("realized", "Realized PnL (quote currency)."),
                       ("unrealized", "Unrealized PnL at marks (quote currency)."),
                       ("fees", "Fees paid (quote currency)."),
                       ("net", "Net PnL: realized - fees - transfer fees + funding + "
                               "unrealized (quote currency)."),
                       ("day_net", "Net PnL since 00:00 UTC (quote currency)."),
                       ("drawdown", "Net PnL below its running peak (quote currency)."),
                       ("transfer_fees", "Withdrawal fees of simulated transfers (quote "
                                         "currency)."),
                       ("funding", "Funding received (+) or paid (-) on perp legs (quote "
                                   "currency).")):
        name = f"arbpipe_strategy_{key}_pnl" if key not in ("fees", "drawdown",
                                                            "transfer_fees") else \
            f"arbpipe_strategy_{key}"
        x.family(name, "gauge", help_)
        if key in pnl:
            x.sample(name, pnl[key])
    br = (s or {}).get("breaker") or {}
    x.family("arbpipe_strategy_breaker_tripped", "gauge",
             "1 while the circuit breaker stops new orders.")
    if s:
        x.sample("arbpipe_strategy_breaker_tripped", bool(br.get("tripped")))
    x.family("arbpipe_strategy_breaker_reason", "gauge",
             "1 for the breaker's current reason (none when not tripped).")
    if s:
        x.sample("arbpipe_strategy_breaker_reason", 1, reason=br.get("reason", "none"))
    x.family("arbpipe_strategy_kill_switch", "gauge", "1 while the kill switch is on.")
    if s:
        x.sample("arbpipe_strategy_kill_switch", bool(s.get("kill_switch")))
    for key, n in sorted(((s or {}).get("counters") or {}).items()):
        name = f"arbpipe_strategy_{metric_name(key)}_total"
        if name in x.seen:
            continue
        x.one(name, "counter", f"Strategy counter {key}.", n)
    x.family("arbpipe_strategy_rejects_by_reason_total", "counter",
             "Orders the risk checks refused, by reason.")
    for reason, n in sorted(((s or {}).get("rejects") or {}).items()):
        x.sample("arbpipe_strategy_rejects_by_reason_total", n, reason=reason)
    x.family("arbpipe_strategy_position", "gauge",
             "Position in base units per instrument and venue market.")
    x.family("arbpipe_strategy_position_unrealized_pnl", "gauge",
             "Unrealized PnL of a position (quote currency).")
    for p in (s or {}).get("positions") or []:
        lab = dict(instrument=p.get("instrument", ""), venue=p.get("venue", ""),
                   market=p.get("market", ""))
        x.sample("arbpipe_strategy_position", p.get("qty", 0.0), **lab)
        x.sample("arbpipe_strategy_position_unrealized_pnl", p.get("unrealized", 0.0), **lab)


def _dashboard(x: Exposition, state: dict) -> None:
    o = state["opps"]
    c = o["counters"]
    x.one("arbpipe_dashboard_records_total", "counter",
          "Opportunity records the dashboard read.", c["records"])
    x.one("arbpipe_dashboard_opportunities_opened_total", "counter",
          "OPEN records the dashboard read.", c["opened"])
    x.one("arbpipe_dashboard_lost_total", "counter",
          "Opportunity records the dashboard lost to laps.", o["reader"]["lost"])
    x.one("arbpipe_dashboard_open_opportunities", "gauge",
          "Opportunities open now as the dashboard sees them.", o["open_count"])
    best = max((r["net_bps"] for r in o["open"]), default=None)
    x.one("arbpipe_dashboard_best_net_bps", "gauge",
          "Best net spread (bps) among open opportunities (NaN: none open).", best)
    usd = [r["profit_usd"] for r in o["open"] if r.get("profit_usd") is not None]
    x.one("arbpipe_dashboard_best_profit_usd", "gauge",
          "Best expected profit (USD) among open opportunities at their depth-walked size "
          "(NaN: none open with a USD rate).", max(usd, default=None))
    x.one("arbpipe_dashboard_open_profit_usd", "gauge",
          "Sum of the expected profit (USD) of the open opportunities the dashboard "
          "publishes (the best 2000; those with a USD rate).", sum(usd))
    x.one("arbpipe_dashboard_open_top_of_book", "gauge",
          "Open opportunities sized on a top level (a leg without an L2 book).",
          sum(1 for r in o["open"] if r.get("top_of_book")))
    x.family("arbpipe_dashboard_open_opportunities_by_pair", "gauge",
             "Opportunities open now per instrument and (buy, sell) leg pair.")
    for p in o.get("open_by_pair") or []:
        x.sample("arbpipe_dashboard_open_opportunities_by_pair", p["count"],
                 instrument=p["instrument"], buy_venue=p["buy"], sell_venue=p["sell"])
    x.family("arbpipe_dashboard_opportunities_closed_total", "counter",
             "Opportunities closed as the dashboard saw them, by reason.")
    for reason, n in sorted(o["closed_by_reason"].items()):
        x.sample("arbpipe_dashboard_opportunities_closed_total", n, reason=reason)
    x.one("arbpipe_dashboard_publishes_total", "counter", "View documents published.",
          state["publishes"])
    x.one("arbpipe_dashboard_scrapes_total", "counter", "Scrapes of this endpoint.",
          state["metrics"].get("scrapes", 0))
    x.one("arbpipe_dashboard_refresh_seconds", "gauge",
          "Time the newest counter refresh took.", state["refresh_ms"] / 1e3)
    x.one("arbpipe_dashboard_start_time_seconds", "gauge",
          "Unix time the dashboard's accumulated state began.", state["started_ns"] / 1e9)


def _processes(x: Exposition, sup: dict | None, procs: list[dict]) -> None:
    x.family("arbpipe_supervisor_up", "gauge",
             "1 while the tree's supervisor is alive (0: its children run unsupervised).")
    if sup is not None:
        x.sample("arbpipe_supervisor_up", bool(sup.get("alive")))
    fams = [("arbpipe_process_up", "gauge",
             "1 while the process runs (0: exited, the supervisor restarts it).",
             lambda p: p["state"] == "running"),
            ("arbpipe_process_restarts_total", "counter",
             "Restarts of the process since the supervisor started.", lambda p: p["restarts"]),
            ("arbpipe_process_uptime_seconds", "gauge",
             "Seconds since the process last started (0 while it is down).",
             lambda p: p["uptime_s"])]
    for name, mtype, help_, get in fams:
        x.family(name, mtype, help_)
        for p in procs:
            x.sample(name, get(p), process=p["name"], role=p["role"])


def _persister(x: Exposition, p: dict | None) -> None:
    for name, help_, key in (("arbpipe_persister_up", "1 while the persister process is alive.",
                              "alive"),
                             ("arbpipe_redis_up", "1 while the persister is connected to Redis.",
                              "connected")):
        x.family(name, "gauge", help_)
        if p:
            x.sample(name, bool(p.get(key)))
    x.family("arbpipe_persister_buffer_capacity_records", "gauge",
             "Backlog bound per stream ([redis] buffer_records): beyond it records are dropped.")
    if p and p.get("buffer_records") is not None:
        x.sample("arbpipe_persister_buffer_capacity_records", p["buffer_records"])
    for name, mtype, help_, key in (
            ("arbpipe_persister_backlog_records", "gauge",
             "Records read but not yet written to Redis.", "backlog_by_stream"),
            ("arbpipe_persister_written_total", "counter", "Records written to Redis.",
             "written"),
            ("arbpipe_persister_dropped_total", "counter",
             "Records dropped because the stream's backlog was full.", "dropped")):
        x.family(name, mtype, help_)
        for stream, n in sorted(((p or {}).get(key) or {}).items()):
            x.sample(name, n, stream=stream)
    for name, help_, key in (
            ("arbpipe_persister_lost_total",
             "Opportunity records the persister lost to laps (never read).", "lost"),
            ("arbpipe_persister_reconnects_total", "Connections to Redis after the first.",
             "reconnects")):
        x.family(name, "counter", help_)
        if p and p.get(key) is not None:
            x.sample(name, p[key])


def _bridge(x: Exposition, b: dict | None) -> None:
    """The bridge (``arbpipe.bridge``): each side's process and Redis link, the in side's
    verdict and lag, and per ring / stream counters. Its link latency is the histogram hop
    ``bridge_link`` of ``arbpipe_latency_seconds``."""
    b = b or {}
    out, inn = b.get("out"), b.get("in")
    for name, help_, key in (("arbpipe_bridge_up", "1 while the bridge side's process is alive.",
                              "alive"),
                             ("arbpipe_bridge_redis_up", "1 while the bridge side is connected "
                              "to Redis.", "connected")):
        x.family(name, "gauge", help_)
        for side, d in (("out", out), ("in", inn)):
            if d:
                x.sample(name, bool(d.get(key)), side=side)
    x.family("arbpipe_bridge_reconnects_total", "counter",
             "Connections of a bridge side to Redis after the first.")
    for side, d in (("out", out), ("in", inn)):
        if d:
            x.sample("arbpipe_bridge_reconnects_total", d.get("reconnects") or 0, side=side)
    remote = (inn or {}).get("remote_instance") or ""
    x.family("arbpipe_bridge_link_current", "gauge",
             "1 while the in side judges the link current (remote venues UP), 0 while STALE.")
    if inn:
        x.sample("arbpipe_bridge_link_current", inn.get("link") == "UP", remote=remote)
    x.family("arbpipe_bridge_lag_seconds", "gauge",
             "How far behind the in side judges the link (heartbeat, remote and local backlog).")
    if inn:
        lag = inn.get("lag_ms")
        x.sample("arbpipe_bridge_lag_seconds", None if lag is None else lag / 1e3,
                 remote=remote)
    for name, mtype, help_, key in (
            ("arbpipe_bridge_sent_total", "counter", "Records the out side wrote to Redis.",
             "sent"),
            ("arbpipe_bridge_behind_records", "gauge",
             "Records published in the ring and not yet sent.", "behind"),
            ("arbpipe_bridge_missed_total", "counter",
             "Records the ring overwrote before the out side sent them.", "missed")):
        x.family(name, mtype, help_)
        for ring, r in sorted(((out or {}).get("rings") or {}).items()):
            x.sample(name, r.get(key) or 0, ring=ring)
    for name, mtype, help_, key in (
            ("arbpipe_bridge_received_total", "counter", "Stream entries the in side read.",
             "received"),
            ("arbpipe_bridge_published_total", "counter",
             "Remote records published into the local ring.", "published"),
            ("arbpipe_bridge_duplicates_total", "counter",
             "Entries dropped as duplicates (seq not above the last).", "duplicates"),
            ("arbpipe_bridge_gaps_total", "counter",
             "Source-ring seqs that never arrived.", "gaps"),
            ("arbpipe_bridge_ring_dropped_total", "counter",
             "Remote records the local ring refused (full).", "ring_dropped")):
        x.family(name, mtype, help_)
        for stream, s in sorted(((inn or {}).get("streams") or {}).items()):
            x.sample(name, s.get(key) or 0, stream=stream)
    x.family("arbpipe_bridge_skipped_total", "counter",
             "Entries skipped as bad (never published), by reason.")
    for stream, s in sorted(((inn or {}).get("streams") or {}).items()):
        for reason, n in sorted((s.get("bad") or {}).items()):
            x.sample("arbpipe_bridge_skipped_total", n, stream=stream, reason=reason)


def render(state: dict | None, hists: dict | None = None) -> str:
    """The exposition text of one dashboard state (None: only ``arbpipe_dashboard_up 0``)."""
    x = Exposition()
    x.one("arbpipe_dashboard_up", "gauge", "1 once the dashboard has published its view.",
          state is not None)
    if state is None:
        return x.text()
    _dashboard(x, state)
    _rings(x, state["rings"])
    _venues(x, state["venues"])
    _detector(x, state["detector"])
    _latency(x, state["latency"], hists or {})
    _strategy(x, state["strategy"])
    _persister(x, state.get("persister"))
    _bridge(x, state.get("bridge"))
    _processes(x, state.get("supervisor"), state.get("processes") or [])
    return x.text()
