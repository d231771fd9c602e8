"""Metrics of a backtest run (``metrics``) and the report files (``write_json``,
``render_md``).

Every figure comes from the run's journal and equity samples; journal kinds are taken by
name (``JournalKind``), so kinds added later (funding, transfers, exits ...) appear in the
breakdown without a change here. Money is in the quote currency (USDT by default).

Definitions
-----------
* trade: a pair of orders sent (its two ORDER legs; observe-mode orders are not trades);
  its PnL: sell notional - buy notional - fees over every fill of the pair (unwinds
  included), a quantity left unbalanced valued at the pair's last fill price;
* detected edge of a trade: the Opportunity's ``net_bps`` on the buy leg's ordered
  notional; capture ratio: sum of trade PnL / sum of detected edge;
* fill ratio: filled / ordered notional (quantity x the order's price) over the trades'
  legs (unwinds out); legs filled / legs sent beside it;
* equity: the strategy's net PnL (realized + unrealized at the live mid - fees, and
  whatever else its portfolio books), sampled each second of recording time (at the first
  housekeeping tick of the second) and at the end;
  max drawdown: the largest fall of equity from its running peak (the peak starts at 0);
* Sharpe per day: mean / sample standard deviation of the daily PnL (equity change over
  each UTC day of the recording), not annualised, and x sqrt(365) annualised; null with
  fewer than 2 days. Sharpe per trade: mean / sample standard deviation of trade PnL;
  null with fewer than 2 trades.
"""
from __future__ import annotations

import collections
import json
import math

import numpy as np

from arbpipe.backtest.engine import Run
from arbpipe.config import CANONICAL_MASK
from shm_layouts.journal import JournalFlag, JournalKind, Side, pair_of

NS_H = 3_600 * 10**9
NS_D = 24 * NS_H
EQUITY_POINTS = 400               # equity samples kept in report.json
_UNWIND = int(JournalFlag.UNWIND_LEG)
_OBSERVE = int(JournalFlag.OBSERVE)
_PERP = int(JournalFlag.PERP)


def _kind_name(k: int) -> str:
    try:
        return JournalKind(k).name.lower()
    except ValueError:
        return f"kind_{k}"


def _std(x) -> float | None:
    return float(np.std(x, ddof=1)) if len(x) >= 2 else None


def _ratio(a, b):
    return float(a / b) if b and math.isfinite(a / b) else None


def _sharpe(x) -> float | None:
    sd = _std(x)
    return float(np.mean(x) / sd) if sd else None


def market_name(cfg, venue: str, perp: bool) -> str:
    """The venue's name, with "-perp" for the perp market of a venue that has both (OKX)."""
    v = cfg.venues.get(venue)
    return venue + "-perp" if perp and v is not None and v.perp is not None else venue


def kinds(entries: list[dict]) -> dict:
    """Per journal kind (by name, every JournalKind listed): count and sums of fee,
    realized_pnl and notional."""
    out = {k.name.lower(): {"count": 0, "fee": 0.0, "realized_pnl": 0.0, "notional": 0.0}
           for k in JournalKind}
    for e in entries:
        d = out.setdefault(_kind_name(int(e["kind"])),
                           {"count": 0, "fee": 0.0, "realized_pnl": 0.0, "notional": 0.0})
        d["count"] += 1
        for f in ("fee", "realized_pnl", "notional"):
            d[f] += float(e.get(f, 0.0) or 0.0)
    return out


def trades(run: Run) -> list[dict]:
    """One dict per trade (see the module docstring), in pair id order."""
    cfg = run.cfg
    legs: dict[int, dict] = {}
    for e in run.entries:
        k, oid = int(e["kind"]), int(e.get("order_id", 0) or 0)
        if not oid:
            continue
        flags = int(e.get("flags", 0) or 0)
        if k == JournalKind.ORDER and not flags & (_OBSERVE | _UNWIND):
            t = legs.setdefault(pair_of(oid), {"pair": pair_of(oid), "cash": 0.0, "fees": 0.0,
                                               "base": 0.0, "last_px": 0.0, "ordered": 0.0,
                                               "filled": 0.0, "legs": 0, "legs_filled": set(),
                                               "px": {}})
            t["legs"] += 1
            t["ordered"] += float(e["notional"])
            t["px"][oid] = float(e["price"])
            venue = market_name(cfg, cfg.venue_name(int(e["venue_id"])) or str(e["venue_id"]),
                                bool(flags & _PERP))
            if int(e["side"]) == Side.BUY:
                t["ts_ns"] = int(e["ts_ns"])
                t["instrument"] = cfg.instrument_name(int(e["instrument_id"]) & CANONICAL_MASK) \
                    or str(e["instrument_id"])
                t["buy"] = venue
            else:
                t["sell"] = venue
        elif k == JournalKind.FILL and pair_of(oid) in legs:
            t = legs[pair_of(oid)]
            sign = 1.0 if int(e["side"]) == Side.SELL else -1.0
            t["cash"] += sign * float(e["notional"]) - float(e["fee"])
            t["fees"] += float(e["fee"])
            t["base"] -= sign * float(e["qty"])
            t["last_px"] = float(e["price"])
            if not flags & _UNWIND:
                t["filled"] += float(e["qty"]) * t["px"].get(oid, float(e["price"]))
                t["legs_filled"].add(oid)
    out = []
    for pid in sorted(legs):
        t = legs[pid]
        pnl = t["cash"] + t["base"] * t["last_px"]
        out.append({"pair": pid, "ts_ns": t.get("ts_ns", 0),
                    "route": f"{t.get('instrument', '?')} {t.get('buy', '?')}>{t.get('sell', '?')}",
                    "pnl": pnl, "fees": t["fees"], "detected": run.detected.get(pid, 0.0),
                    "ordered": t["ordered"], "filled": t["filled"], "legs": t["legs"],
                    "legs_filled": len(t["legs_filled"])})
    return out


def equity(run: Run) -> dict:
    """Max drawdown, daily PnL and the drawdown series of the equity samples."""
    t, net = run.eq_t, run.eq_net
    if not len(net):
        return {"max_drawdown": 0.0, "daily": {}, "dd": np.zeros(0)}
    peak = np.maximum.accumulate(np.maximum(net, 0.0))
    dd = peak - net
    day = t // NS_D
    daily, prev = {}, 0.0
    for d in np.unique(day):
        last = float(net[np.nonzero(day == d)[0][-1]])
        name = np.datetime_as_string(np.datetime64(int(d) * NS_D, "ns"), unit="D")
        daily[name], prev = last - prev, last
    return {"max_drawdown": float(dd.max()), "daily": daily, "dd": dd}


def headline(m: dict) -> dict:
    """The figures of one run that latency and sweep rows show."""
    return {k: m[k] for k in ("net_pnl", "realized", "fees", "trades", "fill_ratio",
                              "capture_ratio", "max_drawdown", "sharpe_per_trade")}


def metrics(run: Run) -> dict:
    """Every figure of one run (JSON-ready, deterministic: no wall-clock value)."""
    tr = trades(run)
    ks = kinds(run.entries)
    pnl = run.state["pnl"]
    span_h = max(run.end_ns - run.start_ns, 1) / NS_H
    ordered = sum(x["ordered"] for x in tr)
    eq = equity(run)
    pnls = [x["pnl"] for x in tr]
    detected = sum(x["detected"] for x in tr)
    by_route = collections.OrderedDict()
    for x in sorted(tr, key=lambda x: x["route"]):
        r = by_route.setdefault(x["route"], {"trades": 0, "pnl": 0.0, "detected": 0.0,
                                             "fees": 0.0})
        r["trades"] += 1
        r["pnl"] += x["pnl"]
        r["detected"] += x["detected"]
        r["fees"] += x["fees"]
    by_venue: dict[str, dict] = {}
    by_inst: dict[str, float] = {}
    for p in run.state["positions"]:
        name = market_name(run.cfg, p["venue"], p["market"] == "perp")
        v = by_venue.setdefault(name, {"realized": 0.0, "unrealized": 0.0, "fees": 0.0,
                                       "net": 0.0})
        v["realized"] += p["realized"]
        v["unrealized"] += p["unrealized"]
        v["fees"] += p["fees"]
        v["net"] += p["realized"] + p["unrealized"] - p["fees"]
        by_inst[p["instrument"]] = by_inst.get(p["instrument"], 0.0) + \
            p["realized"] + p["unrealized"] - p["fees"]
    per_hour = collections.Counter((x["ts_ns"] - run.start_ns) // NS_H for x in tr)
    daily = list(eq["daily"].values())
    sd = _sharpe(daily)
    costs = {"fees": ks.get("fill", {}).get("fee", 0.0),
             "transfer": sum(v["fee"] for k, v in ks.items() if "transfer" in k),
             "funding": sum(v["realized_pnl"] for k, v in ks.items() if "funding" in k)}
    return {
        "updates": run.updates, "span_s": (run.end_ns - run.start_ns) / 1e9,
        "start_ns": run.start_ns, "end_ns": run.end_ns,
        "opportunities": run.opportunities,
        "net_pnl": float(pnl["net"]), "realized": float(pnl["realized"]),
        "unrealized": float(pnl["unrealized"]), "fees": float(pnl["fees"]),
        "costs": costs, "journal": ks,
        "trades": len(tr), "trades_per_hour": len(tr) / span_h,
        "trades_by_hour": {str(int(h)): int(c) for h, c in sorted(per_hour.items())},
        "fill_ratio": _ratio(sum(x["filled"] for x in tr), ordered),
        "legs_filled_ratio": _ratio(sum(x["legs_filled"] for x in tr),
                                    sum(x["legs"] for x in tr)),
        "detected_edge": detected, "realised_edge": float(sum(pnls)),
        "capture_ratio": _ratio(sum(pnls), detected),
        "max_drawdown": eq["max_drawdown"], "daily_pnl": eq["daily"],
        "sharpe_per_day": sd, "sharpe_per_day_annualised":
            sd * math.sqrt(365) if sd is not None else None,
        "sharpe_per_trade": _sharpe(pnls),
        "pnl_by_pair": by_route, "pnl_by_venue": by_venue, "pnl_by_instrument": by_inst,
        "counters": run.state["counters"], "rejects": dict(sorted(run.state["rejects"].items())),
        "breaker": run.state["breaker"], "pending_at_end": run.pending_at_end,
        # the detector's counters (its wall-clock stamps and latencies left out)
        "detector": {k: v for k, v in run.detector.items() if isinstance(v, (int, float))
                     and "_ns" not in k and "latency" not in k},
        "equity": _sampled(run),
    }


def _sampled(run: Run) -> list[list[float]]:
    n = len(run.eq_t)
    idx = np.unique(np.linspace(0, n - 1, min(n, EQUITY_POINTS)).astype(np.int64)) if n else []
    return [[(int(run.eq_t[i]) - run.start_ns) / 1e9, float(run.eq_net[i])] for i in idx]


def _clean(x):
    """JSON-safe: non-finite floats become null; numpy scalars plain."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def write_json(path: str, doc: dict) -> None:
    with open(path, "w") as f:
        f.write(json.dumps(_clean(doc), indent=1, allow_nan=False) + "\n")
