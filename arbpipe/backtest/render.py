"""report.md of a backtest (``render_md``) and the command's terminal summary (``summary``).

The report document (``arbpipe.backtest.cli.build_report``) is what report.json holds;
report.md shows the same figures as tables, plus the throughput measured (the one
machine-dependent line, which report.json leaves out so that it stays identical run to run).
"""
from __future__ import annotations

import math

from arbpipe.backtest import report as RP


def _f(x, nd=2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{nd}f}"


def _rate(x) -> str:
    return f"{x:,.0f}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _head_rows(rows: list[dict], keys: list[str]) -> list[list]:
    return [[r[k] for k in keys] + [_f(r["net_pnl"]), _f(r["realized"]), _f(r["fees"]),
                                    r["trades"], _pct(r["fill_ratio"]),
                                    _f(r["capture_ratio"]), _f(r["max_drawdown"]),
                                    _f(r["sharpe_per_trade"])] for r in rows]


HEAD = ["net PnL", "realized", "fees", "trades", "fill ratio", "capture", "max DD",
        "Sharpe/trade"]


def render_md(doc: dict, throughput: dict | None) -> str:
    rec, m, cfg = doc["recording"], doc["run"], doc["settings"]
    L = ["# Backtest report", "",
         f"Recording `{rec['path']}`: {rec['records']:,} updates over {_f(rec['span_s'], 1)} s "
         f"of recording time (source: {rec.get('source') or 'n/a'}). Config "
         f"`{doc['config']['file']}`" + (", with " + ", ".join(f"`{k}={v}`" for k, v in
                                                           doc["config"]["set"].items())
                                         if doc["config"]["set"] else "") + ".",
         f"Strategy: mode {cfg['mode']}, latency {cfg['latency_ms']} ms, slippage "
         f"{cfg['slippage_bps']} bp, min net {cfg['min_net_bps']} bp (detector "
         f"{cfg['detector_min_net_bps']} bp).", ""]
    if throughput:
        L += [f"Throughput: {_rate(throughput['updates_per_s'])} updates/s through detector + "
              f"strategy ({throughput['updates']:,} updates in {throughput['seconds']:.2f} s, "
              f"{throughput['runs']} run(s); {_rate(throughput['updates_per_cpu_s'])} per CPU "
              f"second, {throughput['cpu_s']:.2f} s of CPU): the detector kernel alone "
              f"{_rate(throughput['detector_updates_per_s'])} updates/s; the strategy "
              f"{_rate(throughput['opportunities_per_s'])} opportunity records/s "
              f"({throughput['opportunities']:,} records); numba kernels compiled or loaded "
              f"before, in {throughput['warm_up_s']:.1f} s, not counted. Measured on this "
              f"machine: the only line that differs between two runs of the same input.", ""]
    L += ["## Result", ""]
    L += _table(["figure", "value"], [
        ["net PnL", _f(m["net_pnl"])], ["realized", _f(m["realized"])],
        ["unrealized (open positions at the mid)", _f(m["unrealized"])],
        ["fees", _f(m["fees"])], ["funding", _f(m["costs"]["funding"])],
        ["transfers", _f(m["costs"]["transfer"])],
        ["trades", m["trades"]], ["trades per hour", _f(m["trades_per_hour"], 1)],
        ["fill ratio (notional)", _pct(m["fill_ratio"])],
        ["legs filled / sent", _pct(m["legs_filled_ratio"])],
        ["detected edge (sum)", _f(m["detected_edge"])],
        ["realised edge (sum of trade PnL)", _f(m["realised_edge"])],
        ["capture ratio", _f(m["capture_ratio"])],
        ["max drawdown", _f(m["max_drawdown"])],
        ["Sharpe per day (annualised x sqrt 365)",
         f"{_f(m['sharpe_per_day'])} ({_f(m['sharpe_per_day_annualised'])})"
         if m["sharpe_per_day"] is not None else "n/a (fewer than 2 UTC days)"],
        ["Sharpe per trade", _f(m["sharpe_per_trade"])],
        ["orders still in flight at the end", m["pending_at_end"]]])
    L += ["Opportunities: " + ", ".join(f"{k} {v:,}" for k, v in m["opportunities"].items()),
          "", "Rejects: " + (", ".join(f"{k} {v:,}" for k, v in m["rejects"].items()) or
                             "none"), ""]
    L += ["## Journal by kind", ""]
    L += _table(["kind", "entries", "fees", "realized PnL", "notional"],
                [[k, v["count"], _f(v["fee"]), _f(v["realized_pnl"]), _f(v["notional"])]
                 for k, v in m["journal"].items()])
    L += ["## PnL by pair (instrument buy venue > sell venue)", ""]
    L += _table(["pair", "trades", "PnL", "detected edge", "fees", "capture"],
                [[k, v["trades"], _f(v["pnl"]), _f(v["detected"]), _f(v["fees"]),
                  _f(v["pnl"] / v["detected"] if v["detected"] else None)]
                 for k, v in m["pnl_by_pair"].items()] or [["(no trades)", "", "", "", "", ""]])
    L += ["## PnL by venue (positions: realized + unrealized - fees)", ""]
    L += _table(["venue", "realized", "unrealized", "fees", "net"],
                [[k, _f(v["realized"]), _f(v["unrealized"]), _f(v["fees"]), _f(v["net"])]
                 for k, v in sorted(m["pnl_by_venue"].items())] or [["(none)", "", "", "", ""]])
    L += ["## Daily PnL (UTC)", ""]
    L += _table(["day", "PnL"], [[d, _f(v)] for d, v in m["daily_pnl"].items()])
    if doc["latency"]:
        L += ["## Latency sensitivity (strategy.latency_ms)", ""]
        L += _table(["latency ms"] + HEAD, _head_rows(doc["latency"], ["latency_ms"]))
    if doc["sweep"]["rows"]:
        keys = doc["sweep"]["keys"]
        L += ["## Sweep", ""]
        L += _table(keys + HEAD, _head_rows(doc["sweep"]["rows"], keys))
    L += ["## Plots", ""]
    if doc["plots"]:
        L += [f"![{p}]({p})" for p in doc["plots"]] + [""]
    else:
        L += [f"No plots: {doc['plots_note']}", ""]
    L += ["## Definitions", "", RP.__doc__.split("Definitions\n-----------\n", 1)[1].strip(), ""]
    return "\n".join(L)


def summary(doc: dict, throughput: dict | None, out_dir: str) -> str:
    m = doc["run"]
    lines = [f"backtest: {m['updates']:,} updates, {m['trades']} trades, net PnL "
             f"{_f(m['net_pnl'])} (fees {_f(m['fees'])}), fill ratio {_pct(m['fill_ratio'])}, "
             f"capture {_f(m['capture_ratio'])}, max drawdown {_f(m['max_drawdown'])}"]
    for r in doc["latency"]:
        lines.append(f"  latency {r['latency_ms']} ms: net {_f(r['net_pnl'])}, "
                     f"{r['trades']} trades, fill ratio {_pct(r['fill_ratio'])}")
    for r in doc["sweep"]["rows"]:
        ks = ", ".join(f"{k}={r[k]}" for k in doc["sweep"]["keys"])
        lines.append(f"  {ks}: net {_f(r['net_pnl'])}, {r['trades']} trades")
    if throughput:
        lines.append(f"throughput: {_rate(throughput['updates_per_s'])} updates/s "
                     f"(detector + strategy, {throughput['updates']:,} updates in "
                     f"{throughput['seconds']:.2f} s, {_rate(throughput['updates_per_cpu_s'])} "
                     f"per CPU second; detector kernel "
                     f"{_rate(throughput['detector_updates_per_s'])} updates/s, strategy "
                     f"{_rate(throughput['opportunities_per_s'])} opportunities/s)")
    lines.append(f"report: {out_dir}/report.md, report.json"
                 + (f", {len(doc['plots'])} PNGs" if doc["plots"] else " (no PNGs)"))
    return "\n".join(lines)
