"""The frames of ``arbpipe attach dashboard``: the dashboard's published state drawn as text.

``render(state, sort, flt, scroll, ...)`` builds a rich renderable from the
``dashboard.state`` document (``arbpipe.ui.dashboard``); ``render_text`` gives the same
frame as plain text (``--once``: no colours, no borders); ``frame_lines`` the lines of one
frame for a given height and width. ``open_rows`` is the sorted, filtered list the table
shows, best expected profit first by default (``profit``: USD, rows without a USD rate
last). Pure functions of the document: the terminal itself (keys, redraws, attach) is
``arbpipe.ui.terminal``.

Opportunity columns (fits 100 columns with the default venue names): instrument, buy and
sell legs, ``size`` (the detector's depth-walked size, base units), ``notional`` (size x
buy VWAP, quote currency), ``lvl`` (book levels the buy / sell leg consumed; ``*``: a leg
had no L2 book and was sized on its top level), ``gross`` and ``net`` (bps at that size),
``$profit`` (expected profit in USD; in the quote currency, named, when the detector has no
USD rate for it), ``conf``, ``age``, ``id``.
"""
from __future__ import annotations

import time

from rich.text import Span, Text

from arbpipe.symbols import PERP_VENUES
from arbpipe.ui.book import profit_order
from shm_layouts.records import OPP_ID_NUMBER_MASK

SORTS = ("profit", "net", "gross", "age", "confidence", "size", "instrument")
SORT_LABEL = {"profit": "expected profit", "net": "net bps", "gross": "gross bps",
              "age": "age (newest first)",
              "confidence": "confidence", "size": "notional", "instrument": "instrument"}
REASON_TEXT = {"spread_gone": "spread gone", "quote_stale": "stale quote",
               "venue_down": "venue down", "shutdown": "shutdown",
               "detector_restart": "detector restart", "lost": "lost (reader lapped)"}
CLOSED_ROWS = 6          # interactive view; --once shows up to CLOSED_ROWS_ONCE
CLOSED_ROWS_ONCE = 20
OPEN_ROWS_ONCE = 50
POSITION_ROWS = 6


# ------------------------------------------------------------------ formatting --------

def fmt_duration(ns) -> str:
    """ns -> "850ms", "12.3s", "4m05s", "2h03m"."""
    if ns is None:
        return "-"
    s = max(ns, 0) / 1e9
    if s < 1:
        return f"{s * 1e3:.0f}ms"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def fmt_ns(ns) -> str:
    """A latency: "850ns", "12.3us", "4.56ms", "1.20s"."""
    if ns is None:
        return "-"
    if ns < 1e3:
        return f"{ns:.0f}ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f}us"
    if ns < 1e9:
        return f"{ns / 1e6:.2f}ms"
    return f"{ns / 1e9:.2f}s"


def fmt_price(x: float) -> str:
    return f"{x:.8g}"


def fmt_num(x, nd=2) -> str:
    if x is None:
        return "-"
    return f"{x:,.{nd}f}"


def fmt_rate(x) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 10 else f"{x:.1f}"


def notional(r: dict) -> float:
    """Size x buy VWAP (quote currency); a row of an older document: size x best ask."""
    n = r.get("notional")
    return n if n is not None else r["qty"] * r["buy_ask"]


def fmt_levels(r: dict) -> str:
    """Levels the buy / sell leg consumed, "2/3"; "*" when a leg had no L2 book."""
    if "buy_levels" not in r:
        return "-"
    return f"{r['buy_levels']}/{r['sell_levels']}" + ("*" if r.get("top_of_book") else "")


def fmt_profit(r: dict) -> str:
    """Expected profit in USD; in the quote currency, named, when there is no USD rate."""
    usd, p = r.get("profit_usd"), r.get("profit")
    if usd is not None:
        return f"{usd:,.2f}"
    if p is None:
        return "-"
    quote = r["instrument"].split("/")[-1] if "/" in r["instrument"] else "quote"
    return f"{p:,.2f} {quote}"


# ------------------------------------------------------------------ row selection -----

def open_rows(state: dict, sort: str = "profit", flt: str = "", now_ns: int | None = None) \
        -> list[dict]:
    """Open opportunities, filtered by instrument substring (case-insensitive), sorted."""
    rows = state["opps"]["open"]
    if flt:
        f = flt.lower()
        rows = [r for r in rows if f in r["instrument"].lower()]
    key = {"profit": profit_order,
           "net": lambda r: (-r["net_bps"], r["id"]),
           "gross": lambda r: (-r["gross_bps"], r["id"]),
           "age": lambda r: (-r["opened_ns"], r["id"]),
           "confidence": lambda r: (-r["confidence"], -r["net_bps"], r["id"]),
           "size": lambda r: (-notional(r), r["id"]),
           "instrument": lambda r: (r["instrument"], -r["net_bps"], r["id"])}[sort]
    return sorted(rows, key=key)


def closed_rows(state: dict, flt: str = "") -> list[dict]:
    rows = state["opps"]["closed"]
    if flt:
        f = flt.lower()
        rows = [r for r in rows if f in r["instrument"].lower()]
    return rows


# ------------------------------------------------------------------ sections ----------
# Each section is a list of one-line rich Texts (never wrapped: cropped at the frame's
# width), so a frame's height is known before it is drawn and drawing stays cheap.

class _Style:
    def __init__(self, plain: bool):
        self.plain = plain

    def __call__(self, style: str) -> str:
        return "" if self.plain else style


def table_lines(title: str, columns: list[tuple[str, str]], rows: list[list], S: _Style,
                empty: str | None = None) -> list[Text]:
    """Title line, header line, one line per row. A cell is a str or (str, style);
    ``columns`` are (name, "l"|"r"); widths fit the widest cell."""
    cells = [[c if isinstance(c, tuple) else (str(c), "") for c in r] for r in rows]
    widths = [len(name) for name, _ in columns]
    for r in cells:
        for j, (txt, _) in enumerate(r):
            widths[j] = max(widths[j], len(txt))

    last = len(columns) - 1

    def line(items, header=False) -> Text:
        parts, spans, pos = [], [], 0
        for j, ((txt, style), (_, just)) in enumerate(zip(items, columns)):
            pad = " " * (widths[j] - len(txt))
            cell = (pad + txt) if just == "r" else (txt + pad if j < last else txt)
            if j:
                cell = "  " + cell
            st = S("bold") if header else S(style)
            if st and txt:
                end = pos + len(cell) - (0 if just == "r" or j == last else len(pad))
                spans.append(Span(end - len(txt), end, st))
            parts.append(cell)
            pos += len(cell)
        return Text("".join(parts), spans=spans)

    out = [Text(title, style=S("bold cyan"))]
    out.append(line([(name, "") for name, _ in columns], header=True))
    out.extend(line(r) for r in cells)
    if not rows and empty:
        out.append(Text(empty, style=S("dim")))
    return out


def side_by_side(left: list[Text], right: list[Text], width: int, gap: int = 4) \
        -> list[Text]:
    """Two blocks next to each other when they fit in ``width``, else one above the other."""
    lw = max((t.cell_len for t in left), default=0)
    rw = max((t.cell_len for t in right), default=0)
    if lw + gap + rw > width:
        return left + [Text("")] + right
    out = []
    for i in range(max(len(left), len(right))):
        a = left[i].copy() if i < len(left) else Text()
        if i < len(right):
            a.append(" " * (lw + gap - a.cell_len))
            a.append_text(right[i])
        out.append(a)
    return out


def _header(state: dict, now: int, S: _Style) -> list[Text]:
    o = state["opps"]
    c = o["counters"]
    up = fmt_duration(now - state["started_ns"])
    age = (now - state["now_ns"]) / 1e9
    m = state.get("metrics") or {}
    metrics = m.get("url") or (f"unavailable ({m['error']})" if m.get("error") else
                               ("off" if not m.get("enabled") else "-"))
    t = Text()
    t.append(f"arbpipe dashboard  instance {state['instance']}", style=S("bold"))
    t.append(f"  up {up}  open {o['open_count']}  opened {c['opened']}  "
             f"closed {c['closed']}  records {c['records']}  lost {o['reader']['lost']}  "
             f"metrics {metrics}")
    if age > 3:
        t.append(f"  STATE {age:.0f}s OLD (dashboard restarting?)", style=S("bold red"))
    return [t]


_OPP_COLS = [("instrument", "l"), ("buy", "l"), ("sell", "l"), ("size", "r"),
             ("notional", "r"), ("lvl", "r"), ("gross", "r"), ("net", "r"), ("$profit", "r"),
             ("conf", "r"), ("age", "r"), ("id", "r")]


def _opportunities(state, shown, total, sort, flt, scroll, now, S) -> list[Text]:
    det = state.get("detector")
    dtxt = (f"  detector: opened {det['opened']} closed {det['closed']} open now "
            f"{det['open_now']}" if det else "  detector: not running")
    rng = f"rows {scroll + 1}-{scroll + len(shown)} of {total}" if shown else f"0 of {total}"
    tob = "  *: top of book" if any(r.get("top_of_book") for r in shown) else ""
    title = (f"Live opportunities  sort: {SORT_LABEL[sort]}"
             + (f"  filter: {flt}" if flt else "") + f"  {rng}" + tob + dtxt)
    rows = []
    for r in shown:
        net_style = "bold green" if r["net_bps"] >= 10 else "green"
        rows.append([r["instrument"], r["buy"], r["sell"], f"{r['qty']:.6g}",
                     f"{notional(r):,.0f}", (fmt_levels(r), "yellow" if r.get("top_of_book")
                                             else ""), f"{r['gross_bps']:.2f}",
                     (f"{r['net_bps']:.2f}", net_style), (fmt_profit(r), "bold"),
                     f"{r['confidence']:.0f}", fmt_duration(now - r["opened_ns"]),
                     str(r["id"] & OPP_ID_NUMBER_MASK)])
    empty = "no open opportunities" + (f" matching {flt!r}" if flt else "")
    return table_lines(title, _OPP_COLS, rows, S, empty)


def _closed(state, rows, limit, now, S) -> list[Text]:
    by = state["opps"]["closed_by_reason"]
    why = ", ".join(f"{REASON_TEXT.get(k, k)} {v}" for k, v in sorted(by.items()))
    out = []
    for r in rows[:limit]:
        out.append([r["instrument"], r["buy"], r["sell"], f"{r['net_bps']:.2f}",
                    f"{r.get('peak_net_bps', r['net_bps']):.2f}",
                    REASON_TEXT.get(r["reason"], r["reason"]), fmt_duration(r["lifetime_ns"]),
                    fmt_duration(now - r["closed_ns"]) + " ago",
                    str(r["id"] & OPP_ID_NUMBER_MASK)])
    cols = [("instrument", "l"), ("buy", "l"), ("sell", "l"), ("net", "r"), ("peak", "r"),
            ("reason", "l"), ("lived", "r"), ("closed", "r"), ("id", "r")]
    return table_lines(f"Recently closed  ({why or 'none yet'})", cols, out, S, "none")


def _books(v: dict) -> str:
    """Book health of a venue: ``ready/kept``, then resyncs by reason (``-``: BBO only)."""
    if not v.get("books"):
        return "-"
    why = ",".join(f"{k} {n}" for k, n in sorted(v.get("resyncs_by_fault", {}).items()))
    return f"{v['books_ready']}/{v['books']}" + (f" resync {why}" if why else "")


def _venues(state, S) -> list[Text]:
    colour = {"connected": "green", "stale": "yellow", "down": "bold red", "gone": "red"}
    rows = []
    for v in state["venues"]:
        age = v["last_msg_age_s"]
        rows.append([v["venue"], (v["status"], colour.get(v["status"], "")),
                     f"{v['connected']}/{v['sockets']}", fmt_rate(v["msg_rate"]),
                     "-" if age is None else fmt_duration(age * 1e9), str(v["reconnects"]),
                     str(v["rejects"]), str(v["stale_symbols"]), _books(v)])
    cols = [("venue", "l"), ("status", "l"), ("conn", "r"), ("msg/s", "r"),
            ("last msg", "r"), ("reconn", "r"), ("rejects", "r"), ("stale", "r"),
            ("books", "l")]
    bridged = (state.get("bridge") or {}).get("in") or {}
    for venue, st in sorted((bridged.get("venues") or {}).items()):   # remote: no feed here
        lag = bridged.get("lag_ms")
        rows.append([venue, (f"bridged {str(st).lower()}", "green" if st == "UP" else "yellow"),
                     "-", "-", "-" if lag is None else f"lag {lag:.0f}ms"]
                    + ["-"] * (len(cols) - 5))
    return table_lines("Venues", cols, rows, S, "no feed handlers")


def _rings(state, S) -> list[Text]:
    """One row per ring with its first reader beside it (an SPSC ring has one); further
    readers of a broadcast ring on their own rows."""
    rows = []
    for r in state["rings"]:
        fill = "-" if r["kind"] == "broadcast" else f"{r['fill']} ({r['fill_pct']:.0f}%)"
        ring = [r["name"], r["kind"], fill, fmt_rate(r["rate"]), str(r["dropped"])]
        readers = r["readers"] or [None]
        for k, x in enumerate(readers):
            cells = ring if k == 0 else ["", "", "", "", ""]
            if x is None:
                rows.append(cells + [("no reader", "dim"), "", "", "", ""])
                continue
            name = x["name"] if x["alive"] else (x["name"] + " (gone)", "red")
            rows.append(cells + [name, fmt_rate(x["rate"]), str(x["lag"]), str(x["lost"]),
                                 str(x["laps"])])
    cols = [("ring", "l"), ("kind", "l"), ("fill", "r"), ("rec/s", "r"), ("drops", "r"),
            ("reader", "l"), ("read/s", "r"), ("lag", "r"), ("lost", "r"), ("laps", "r")]
    return table_lines("Rings", cols, rows, S, "no rings")


def _latency(state, S) -> list[Text]:
    rows = [[r["hop"], str(r["count"]), fmt_ns(r["p50_ns"]), fmt_ns(r["p99_ns"]),
             fmt_ns(r["p999_ns"]), fmt_ns(r["max_ns"])] for r in state["latency"]]
    det = state.get("detector")
    if det and (det["opened"] + det["updated"]):
        rows.append(["detector recv->pub", "all", "", "", "mean " + fmt_ns(det["latency_mean_ns"]),
                     fmt_ns(det["latency_max_ns"])])
    cols = [("hop", "l"), ("n", "r"), ("p50", "r"), ("p99", "r"), ("p99.9", "r"),
            ("max*", "r")]
    out = table_lines("Latency (last minute)", cols, rows, S, "no latency histograms yet")
    if state["latency"]:
        out.append(Text("* max since the recording process started", style=S("dim")))
    return out


def _strategy(state, S, positions: int = POSITION_ROWS) -> list[Text]:
    s = state.get("strategy")
    head = Text("Strategy", style=S("bold cyan"))
    if not s:
        return [head, Text("strategy not running", style=S("dim"))]
    lines = [head]
    if not s.get("_alive", True):
        age = (state["now_ns"] - s.get("_updated_ns", 0)) / 1e9
        head.append(f"  strategy not running (last state {age:.0f}s old)", style=S("bold red"))
    br = s.get("breaker") or {}
    t = Text(f"mode {s.get('mode', '?')}  kill switch ")
    t.append("ON" if s.get("kill_switch") else "off",
             style=S("bold red") if s.get("kill_switch") else "")
    t.append("  breaker ")
    if br.get("tripped"):
        t.append(f"TRIPPED ({br.get('reason')} {br.get('value', 0):,.2f} / "
                 f"{br.get('limit', 0):,.2f})", style=S("bold red"))
    else:
        t.append("ok", style=S("green"))
    lines.append(t)
    p = s.get("pnl") or {}
    lines.append(Text(f"pnl net {fmt_num(p.get('net'))}  realized {fmt_num(p.get('realized'))}"
                      f"  unrealized {fmt_num(p.get('unrealized'))}  fees "
                      f"{fmt_num(p.get('fees'))}  day {fmt_num(p.get('day_net'))}  drawdown "
                      f"{fmt_num(p.get('drawdown'))}"))
    if "funding" in p:
        lines.append(Text(f"pnl parts: fills {fmt_num(p.get('fills'))}  fees "
                          f"{fmt_num(p.get('fees'))}  transfer fees "
                          f"{fmt_num(p.get('transfer_fees'))}  funding "
                          f"{fmt_num(p.get('funding'))}  unrealized "
                          f"{fmt_num(p.get('unrealized'))}"))
    c = s.get("counters") or {}
    lines.append(Text("  ".join(f"{k} {c[k]}" for k in ("opportunities_read", "orders",
                                                          "fills", "rejects", "unwinds",
                                                          "missed") if k in c)))
    rej = s.get("rejects") or {}
    if rej:
        lines.append(Text("rejects: " + ", ".join(
            f"{k} {v}" for k, v in sorted(rej.items(), key=lambda kv: (-kv[1], kv[0])))))
    pos = [x for x in (s.get("positions") or []) if x.get("qty")]
    if pos:
        rows = []
        for x in pos[:positions]:
            venue = x.get("venue", "")
            if x.get("market") == "perp" and venue not in PERP_VENUES:
                venue += "-perp"                       # OKX SWAP beside OKX spot
            rows.append([x.get("instrument", ""), venue, f"{x.get('qty', 0):.6g}",
                         fmt_price(x.get("avg_price", 0)), fmt_price(x.get("mark", 0)),
                         fmt_num(x.get("unrealized")), fmt_num(x.get("realized"))])
        cols = [("instrument", "l"), ("venue", "l"), ("qty", "r"), ("avg", "r"),
                ("mark", "r"), ("upnl", "r"), ("rpnl", "r")]
        lines.extend(table_lines(f"positions ({len(pos)})", cols, rows, S))
    return lines


# ------------------------------------------------------------------ the frame ---------

def frame_lines(state: dict, sort: str = "profit", flt: str = "", scroll: int = 0,
                height: int | None = None, width: int = 160, now_ns: int | None = None,
                plain: bool = False, footer: str | None = None,
                open_limit: int | None = None, closed_limit: int = CLOSED_ROWS):
    """The frame as one-line Texts. ``height`` (terminal lines) sizes the opportunities
    table so that the frame fits; without it ``open_limit`` rows (all when None) are shown.
    Returns (lines, page_rows, total_rows, scroll) so a caller can scroll by pages."""
    now = now_ns if now_ns is not None else time.time_ns()
    S = _Style(plain)
    rows = open_rows(state, sort, flt, now)
    total = len(rows)
    blank = [Text("")]
    foot = [Text(footer, style=S("dim"))] if footer is not None else []
    head = _header(state, now, S) + blank
    positions = POSITION_ROWS
    while True:
        rest = (blank + _closed(state, closed_rows(state, flt), closed_limit, now, S) + blank
                + side_by_side(_venues(state, S), _rings(state, S), width) + blank
                + side_by_side(_latency(state, S), _strategy(state, S, positions), width))
        if height is None:
            page = open_limit if open_limit is not None else max(total, 1)
            break
        page = height - len(head) - len(rest) - len(foot) - 2
        if page >= 5 or (closed_limit <= 2 and positions <= 2):
            page = max(page, 3)
            break
        closed_limit, positions = max(2, closed_limit - 2), max(2, positions - 2)
    scroll = max(0, min(scroll, max(total - page, 0)))
    shown = rows[scroll:scroll + page]
    lines = head + _opportunities(state, shown, total, sort, flt, scroll, now, S) + rest
    if foot:                          # the key line stays on the last line of the screen
        if height is not None:
            lines = lines[:height - 1] + [Text("")] * (height - 1 - len(lines))
        lines += foot
    return lines, page, total, scroll


def render(state: dict, sort: str = "profit", flt: str = "", scroll: int = 0,
           height: int | None = None, width: int = 160, now_ns: int | None = None,
           plain: bool = False, footer: str | None = None, open_limit: int | None = None,
           closed_limit: int = CLOSED_ROWS) -> Text:
    """The frame as one rich Text (lines cropped, never wrapped)."""
    lines, *_ = frame_lines(state, sort, flt, scroll, height, width, now_ns, plain, footer,
                            open_limit, closed_limit)
    t = Text("\n").join(lines)
    t.no_wrap, t.overflow = True, "crop"
    return t


def render_text(state: dict, sort: str = "profit", flt: str = "", width: int = 160,
                now_ns: int | None = None, open_limit: int = OPEN_ROWS_ONCE,
                closed_limit: int = CLOSED_ROWS_ONCE) -> str:
    """One frame as plain text (``--once``): no colours, every line right-stripped and
    cut at ``width``."""
    lines, *_ = frame_lines(state, sort, flt, 0, None, width, now_ns, plain=True,
                            open_limit=open_limit, closed_limit=closed_limit)
    return "\n".join(t.plain[:width].rstrip() for t in lines) + "\n"
