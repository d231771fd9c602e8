"""The strategy's published state, read and rendered for ``arbpipe status`` and
``arbpipe stat strategy``.

The strategy process publishes its state document (``Strategy.state``: mode, kill switch,
breaker, counters, rejects, positions, pnl, balances, limits) in the state blob
``strategy.state`` (``shm_layouts.blocks``). This module imports no numba: operator
commands read and render the document without compiling kernels.
"""
from __future__ import annotations

from arbpipe.transport.stateblob import read_blob

STATE_NAME = "strategy.state"


def read_state(instance: str | None = None) -> dict | None:
    """The running (or last) strategy's state document, or None."""
    return read_blob(instance, STATE_NAME)


def _breaker_text(b: dict) -> str:
    return "TRIPPED (" + b["reason"] + ")" if b["tripped"] else "ok"


def status_line(d: dict | None) -> str:
    """One line for ``arbpipe status``."""
    if d is None:
        return "  strategy: no state published"
    c, p, b = d["counters"], d["pnl"], d["breaker"]
    return (f"  strategy: {d['mode']}, kill switch {'ON' if d['kill_switch'] else 'off'}, "
            f"breaker {_breaker_text(b)}, "
            f"orders {c['orders']:,} fills {c['fills']:,} rejects {c['rejects']:,}, "
            f"net PnL {p['net']:,.2f} (fees {p['fees']:,.2f})")


def render_state(d: dict | None) -> str:
    """The state document as a few lines of text (``arbpipe stat strategy``)."""
    if d is None:
        return "strategy: not running"
    c, p, b = d["counters"], d["pnl"], d["breaker"]
    lines = [f"strategy pid {d.get('_pid')} ({'alive' if d.get('_alive') else 'dead'}) "
             f"mode {d['mode']}  kill switch {'ON' if d['kill_switch'] else 'off'}  "
             f"breaker {_breaker_text(b)}",
             f"  opportunities {c['opportunities_read']:,}  orders {c['orders']:,}  fills "
             f"{c['fills']:,}  rejects {c['rejects']:,}  unwinds {c['unwinds']:,}  missed "
             f"{c['missed']:,}  lost {c.get('lost', 0):,}",
             f"  pnl net {p['net']:,.2f}  realized {p['realized']:,.2f}  unrealized "
             f"{p['unrealized']:,.2f}  fees {p['fees']:,.2f}  day {p['day_net']:,.2f}  "
             f"drawdown {p['drawdown']:,.2f}"]
    if "funding" in p:
        lines.append(f"  pnl components: fills {p['fills']:,.2f}  - fees {p['fees']:,.2f}  - "
                     f"transfer fees {p['transfer_fees']:,.2f}  + funding {p['funding']:+,.2f}"
                     f"  = realized net {p['realized_net']:,.2f}  + unrealized "
                     f"{p['unrealized']:,.2f}  = net {p['net']:,.2f}")
    if d["rejects"]:
        lines.append("  rejects: " + ", ".join(f"{k} {v:,}" for k, v in
                                               sorted(d["rejects"].items(), key=lambda kv: -kv[1])))
    for pos in d["positions"]:
        if pos["qty"]:
            lines.append(f"  {pos['instrument']:<10} {pos['venue']:<13} {pos['market']:<4} qty "
                         f"{pos['qty']:+.6g} @ {pos['avg_price']:.6g} mark {pos['mark']:.6g} "
                         f"upnl {pos['unrealized']:+.2f}")
    for t in (d.get("trades") or {}).get("open", []):
        x = t.get("exit_spread_bps")
        lines.append(f"  trade #{t['pair']} {t['instrument']} long {t['buy']} "
                     f"{t['qty_buy_leg']:.6g} short {t['sell']} {t['qty_sell_leg']:.6g}  entry "
                     f"{t['entry_spread_bps']:.2f} bps  exit "
                     f"{'-' if x is None else format(x, '.2f')} bps  held {t['held_s']:.0f}s  "
                     f"funding {t.get('funding', 0.0):+,.2f}")
    for x in (d.get("inventory") or {}).get("in_flight", []):
        lines.append(f"  transfer #{x['id']} {x['qty']:.6g} {x['asset']} {x['from']} -> "
                     f"{x['to']} (fee {x['fee_units']:.6g} {x['asset']}, {x['fee']:,.2f})")
    return "\n".join(lines)
