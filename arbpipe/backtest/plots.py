"""The PNGs of a backtest report (matplotlib, Agg, no metadata: the same run gives the same
bytes). ``write_plots`` returns the file names written, or raises ``NoPlots`` saying why
(matplotlib missing: it comes with the ``bench`` extra, which ``make`` installs); the
report is written either way and says so."""
from __future__ import annotations

import os

import numpy as np


class NoPlots(RuntimeError):
    pass


def _plt():
    try:
        # lazy: saves 0.4-3 s (matplotlib.pyplot) when the PNGs are not drawn; optional package
        import matplotlib
        matplotlib.use("Agg")
        # lazy: the same import (pyplot after the Agg backend is chosen)
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise NoPlots(f"matplotlib is not installed ({e}); pip install -e '.[bench]' "
                      f"(or matplotlib alone)") from None
    plt.rcParams["svg.hashsalt"] = "arbpipe"
    return plt


def _save(plt, fig, out_dir: str, name: str, names: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=90, metadata={"Software": None})
    plt.close(fig)
    names.append(name)


def _bars(plt, ax, labels, values, title):
    y = np.arange(len(labels))
    ax.barh(y, values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
    ax.set_yticks(y, labels, fontsize=7)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_title(title)


def write_plots(out_dir: str, doc: dict, eq_t: np.ndarray, eq_net: np.ndarray,
                dd: np.ndarray) -> list[str]:
    plt = _plt()
    m, names = doc["run"], []
    t_h = (eq_t - m["start_ns"]) / 3.6e12 if len(eq_t) else eq_t
    for name, y, title, color in (("equity.png", eq_net, "Equity (net PnL)", "tab:blue"),
                                  ("drawdown.png", -dd, "Drawdown from peak", "tab:red")):
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.plot(t_h, y, color=color, lw=1)
        if name == "drawdown.png":
            ax.fill_between(t_h, y, 0, color=color, alpha=0.3)
        ax.set_xlabel("recording time, h")
        ax.set_ylabel("quote ccy")
        ax.set_title(title)
        _save(plt, fig, out_dir, name, names)
    for name, items, title in (
            ("pnl_by_pair.png", [(k, v["pnl"]) for k, v in m["pnl_by_pair"].items()],
             "PnL by pair"),
            ("pnl_by_venue.png", sorted((k, v["net"]) for k, v in m["pnl_by_venue"].items()),
             "PnL by venue")):
        items = sorted(items, key=lambda kv: (kv[1], kv[0]))
        if len(items) > 40:                 # the 20 worst and the 20 best
            items = items[:20] + items[-20:]
        fig, ax = plt.subplots(figsize=(8, 1.5 + 0.25 * max(len(items), 1)))
        _bars(plt, ax, [k for k, _ in items], [v for _, v in items], title)
        _save(plt, fig, out_dir, name, names)
    hours = m["trades_by_hour"]
    if hours:
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.bar([int(h) for h in hours], list(hours.values()), color="tab:blue")
        ax.set_xlabel("hour of the recording")
        ax.set_ylabel("trades")
        ax.set_title("Trades per hour")
        _save(plt, fig, out_dir, "trades_per_hour.png", names)
    if doc["latency"]:
        rows = doc["latency"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["latency_ms"] for r in rows], [r["net_pnl"] for r in rows], "o-")
        ax.set_xlabel("strategy.latency_ms")
        ax.set_ylabel("net PnL")
        ax.set_title("Latency sensitivity")
        _save(plt, fig, out_dir, "latency.png", names)
    costs = m["costs"]
    fig, ax = plt.subplots(figsize=(6, 3))
    _bars(plt, ax, ["fees", "funding", "transfers", "realized", "net"],
          [-costs["fees"], costs["funding"], -costs["transfer"], m["realized"], m["net_pnl"]],
          "PnL components")
    _save(plt, fig, out_dir, "components.png", names)
    return names
