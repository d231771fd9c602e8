"""``arbpipe attach dashboard``: the terminal view of the dashboard's published state.

Pure part: ``render(state, sort, flt, scroll, ...)`` builds a rich renderable from the
``dashboard.state`` document (``arbpipe.ui.dashboard``); ``render_text`` gives the same
frame as plain text (``--once``: no colours, no borders). ``open_rows`` is the sorted,
filtered list the table shows.

Terminal part: ``attach(instance)`` reads the blob at 10 Hz and redraws on the alternate
screen; keys come from the terminal in cbreak mode (select with a timeout):
``q`` quits (the tree keeps running), Up/Down scroll by one row, PgUp/PgDn by a page,
Home/End, ``s`` cycles the sort, ``/`` starts a filter by instrument substring (Enter
applies, Esc cancels, an empty filter clears it). The terminal is restored on every exit
(q, Ctrl-C, SIGTERM, SIGHUP); a dead terminal (SIGHUP, EOF or EIO) ends the attach only:
nothing here writes anywhere but its own terminal.
"""
from __future__ import annotations

import io
import os
import select
import signal
import sys
import time

from rich.console import Console
from rich.color import ColorSystem
from rich.text import Span, Text

from arbpipe.symbols import PERP_VENUES

SORTS = ("net", "gross", "age", "confidence", "size", "instrument")
SORT_LABEL = {"net": "net bps", "gross": "gross bps", "age": "age (newest first)",
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


# ------------------------------------------------------------------ row selection -----

def open_rows(state: dict, sort: str = "net", flt: str = "", now_ns: int | None = None) \
        -> list[dict]:
    """Open opportunities, filtered by instrument substring (case-insensitive), sorted."""
    rows = state["opps"]["open"]
    if flt:
        f = flt.lower()
        rows = [r for r in rows if f in r["instrument"].lower()]
    key = {"net": lambda r: (-r["net_bps"], r["id"]),
           "gross": lambda r: (-r["gross_bps"], r["id"]),
           "age": lambda r: (-r["opened_ns"], r["id"]),
           "confidence": lambda r: (-r["confidence"], -r["net_bps"], r["id"]),
           "size": lambda r: (-r["qty"] * r["buy_ask"], r["id"]),
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


_OPP_COLS = [("instrument", "l"), ("buy", "l"), ("ask", "r"), ("sell", "l"), ("bid", "r"),
             ("gross", "r"), ("net", "r"), ("fund", "r"), ("size", "r"), ("notional", "r"),
             ("conf", "r"), ("age", "r"), ("upd", "r"), ("id", "r")]


def _opportunities(state, shown, total, sort, flt, scroll, now, S) -> list[Text]:
    det = state.get("detector")
    dtxt = (f"  detector: opened {det['opened']} closed {det['closed']} open now "
            f"{det['open_now']}" if det else "  detector: not running")
    rng = f"rows {scroll + 1}-{scroll + len(shown)} of {total}" if shown else f"0 of {total}"
    title = (f"Live opportunities  sort: {SORT_LABEL[sort]}"
             + (f"  filter: {flt}" if flt else "") + f"  {rng}" + dtxt)
    rows = []
    for r in shown:
        net_style = "bold green" if r["net_bps"] >= 10 else "green"
        rows.append([r["instrument"], r["buy"], fmt_price(r["buy_ask"]), r["sell"],
                     fmt_price(r["sell_bid"]), f"{r['gross_bps']:.2f}",
                     (f"{r['net_bps']:.2f}", net_style), f"{r['funding_bps']:.2f}",
                     f"{r['qty']:.6g}", f"{r['qty'] * r['buy_ask']:,.0f}",
                     f"{r['confidence']:.0f}", fmt_duration(now - r["opened_ns"]),
                     str(r["updates"]), str(r["id"] & 0xFFFFFFFF)])
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
                    str(r["id"] & 0xFFFFFFFF)])
    cols = [("instrument", "l"), ("buy", "l"), ("sell", "l"), ("net", "r"), ("peak", "r"),
            ("reason", "l"), ("lived", "r"), ("closed", "r"), ("id", "r")]
    return table_lines(f"Recently closed  ({why or 'none yet'})", cols, out, S, "none")


def _venues(state, S) -> list[Text]:
    colour = {"connected": "green", "stale": "yellow", "down": "bold red", "gone": "red"}
    rows = []
    for v in state["venues"]:
        age = v["last_msg_age_s"]
        rows.append([v["venue"], (v["status"], colour.get(v["status"], "")),
                     f"{v['connected']}/{v['sockets']}", fmt_rate(v["msg_rate"]),
                     "-" if age is None else fmt_duration(age * 1e9), str(v["reconnects"]),
                     str(v["rejects"]), str(v["stale_symbols"])])
    cols = [("venue", "l"), ("status", "l"), ("conn", "r"), ("msg/s", "r"),
            ("last msg", "r"), ("reconn", "r"), ("rejects", "r"), ("stale", "r")]
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

def frame_lines(state: dict, sort: str = "net", flt: str = "", scroll: int = 0,
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


def render(state: dict, sort: str = "net", flt: str = "", scroll: int = 0,
           height: int | None = None, width: int = 160, now_ns: int | None = None,
           plain: bool = False, footer: str | None = None, open_limit: int | None = None,
           closed_limit: int = CLOSED_ROWS) -> Text:
    """The frame as one rich Text (lines cropped, never wrapped)."""
    lines, *_ = frame_lines(state, sort, flt, scroll, height, width, now_ns, plain, footer,
                            open_limit, closed_limit)
    t = Text("\n").join(lines)
    t.no_wrap, t.overflow = True, "crop"
    return t


def render_text(state: dict, sort: str = "net", flt: str = "", width: int = 160,
                now_ns: int | None = None, open_limit: int = OPEN_ROWS_ONCE,
                closed_limit: int = CLOSED_ROWS_ONCE) -> str:
    """One frame as plain text (``--once``): no colours, every line right-stripped and
    cut at ``width``."""
    lines, *_ = frame_lines(state, sort, flt, 0, None, width, now_ns, plain=True,
                            open_limit=open_limit, closed_limit=closed_limit)
    return "\n".join(t.plain[:width].rstrip() for t in lines) + "\n"


# ------------------------------------------------------------------ reading the blob ---

class NotRunning(RuntimeError):
    """The pipeline or its dashboard is not running (message says which)."""


def read_state(instance: str, wait_s: float = 0.0) -> dict:
    """The dashboard's newest state; waits up to ``wait_s`` for a starting dashboard of a
    running pipeline. NotRunning says why there is none."""
    from arbpipe.ui.dashboard import STATE_BLOB
    from arbpipe.transport.stateblob import read_blob
    from arbpipe.ops.supervisor import read_status
    deadline = time.monotonic() + wait_s
    while True:
        doc = read_blob(instance, STATE_BLOB)
        if doc is not None and doc.get("_alive"):
            return doc
        st = read_status(instance)
        if st is None and doc is None:
            raise NotRunning(f"pipeline {instance!r} is not running (start it with "
                             f"`arbpipe up`; `arbpipe status` shows what runs)")
        if time.monotonic() >= deadline:
            if st is None:
                age = (time.time_ns() - doc["_updated_ns"]) / 1e9
                raise NotRunning(f"the dashboard of pipeline {instance!r} is not running "
                                 f"(its last state is {age:.0f}s old)")
            dash = [p for p in st["processes"] if p["role"] == "dashboard"]
            why = "it is not part of this tree" if not dash else \
                f"it is {dash[0]['state']} ({dash[0]['restarts']} restarts; see {st['run_dir']})"
            raise NotRunning(f"the dashboard of pipeline {instance!r} is not running: {why}")
        time.sleep(0.1)


# ------------------------------------------------------------------ the terminal ------

KEYS = {b"\x1b[A": "up", b"\x1bOA": "up", b"\x1b[B": "down", b"\x1bOB": "down",
        b"\x1b[5~": "pgup", b"\x1b[6~": "pgdn", b"\x1b[H": "home", b"\x1b[1~": "home",
        b"\x1bOH": "home", b"\x1b[F": "end", b"\x1b[4~": "end", b"\x1bOF": "end",
        b"\x1b[C": "right", b"\x1b[D": "left", b"\x1bOC": "right", b"\x1bOD": "left"}


def parse_keys(data: bytes) -> list[str]:
    """Raw terminal bytes -> key names ("q", "up", "pgdn", "enter", "esc", "backspace",
    or the character itself)."""
    out = []
    i = 0
    while i < len(data):
        b = data[i:i + 1]
        if b == b"\x1b":
            for seq, name in KEYS.items():
                if data.startswith(seq, i):
                    out.append(name)
                    i += len(seq)
                    break
            else:
                if data[i + 1:i + 2] == b"[":     # unknown CSI: skip to its final byte
                    j = i + 2
                    while j < len(data) and not 0x40 <= data[j] <= 0x7E:
                        j += 1
                    i = j + 1
                else:
                    out.append("esc")
                    i += 1
            continue
        if b in (b"\r", b"\n"):
            out.append("enter")
        elif b in (b"\x7f", b"\x08"):
            out.append("backspace")
        else:
            try:
                out.append(b.decode("ascii"))
            except UnicodeDecodeError:
                pass
        i += 1
    return out


class ViewState:
    """What one attach remembers: sort, filter, scroll, the filter being typed."""

    def __init__(self):
        self.sort = "net"
        self.flt = ""
        self.scroll = 0
        self.typing: str | None = None    # not None while "/" input is open
        self.page = 10
        self.total = 0
        self.quit = False

    def key(self, k: str) -> None:
        if self.typing is not None:
            if k == "enter":
                self.flt, self.typing, self.scroll = self.typing.strip(), None, 0
            elif k == "esc":
                self.typing = None
            elif k == "backspace":
                self.typing = self.typing[:-1]
            elif len(k) == 1 and k.isprintable():
                self.typing += k
            return
        if k == "q" or k == "Q":
            self.quit = True
        elif k == "s":
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
            self.scroll = 0
        elif k == "S":
            self.sort = SORTS[(SORTS.index(self.sort) - 1) % len(SORTS)]
            self.scroll = 0
        elif k == "/":
            self.typing = ""
        elif k == "up":
            self.scroll = max(0, self.scroll - 1)
        elif k == "down":
            self.scroll = min(self.scroll + 1, max(self.total - self.page, 0))
        elif k == "pgup":
            self.scroll = max(0, self.scroll - self.page)
        elif k == "pgdn":
            self.scroll = min(self.scroll + self.page, max(self.total - self.page, 0))
        elif k == "home":
            self.scroll = 0
        elif k == "end":
            self.scroll = max(self.total - self.page, 0)
        elif k == "esc":
            self.flt, self.scroll = "", 0

    def footer(self) -> str:
        if self.typing is not None:
            return f"filter by instrument: {self.typing}_   (Enter apply, Esc cancel)"
        return ("q quit  arrows/PgUp/PgDn scroll  s sort  / filter"
                + (f"  (filter {self.flt!r}; / + Enter clears)" if self.flt else ""))


class _TerminalGone(Exception):
    pass


def attach(instance: str, once: bool = False, width: int | None = None,
           wait_s: float = 5.0, refresh_hz: float = 10.0, out=None) -> int:
    """Run the view (or print one frame with ``once``). Returns the exit code."""
    out = out or sys.stdout
    try:
        state = read_state(instance, wait_s)
    except NotRunning as e:
        print(f"arbpipe: {e}", file=sys.stderr)
        return 1
    if once:
        w = width or 160
        out.write(render_text(state, width=w))
        out.flush()
        return 0
    if not (os.isatty(0) and out.isatty()):
        print("arbpipe: attach dashboard needs a terminal; use --once for plain text",
              file=sys.stderr)
        return 2
    return _interactive(instance, state, refresh_hz, width)


def _interactive(instance: str, state: dict, refresh_hz: float, width: int | None) -> int:
    import termios
    import tty
    from arbpipe.ui.dashboard import STATE_BLOB
    from arbpipe.transport.stateblob import read_blob
    fd = sys.stdin.fileno()
    ofd = sys.stdout.fileno()
    saved = termios.tcgetattr(fd)
    old_handlers = {}

    def on_signal(signum, frame):
        raise _TerminalGone(signum) if signum == signal.SIGHUP else SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        old_handlers[sig] = signal.signal(sig, on_signal)
    v = ViewState()
    period = 1.0 / refresh_hz
    gone_since = None
    code = 0

    def write(data: str) -> None:
        b = data.encode("utf-8", "replace")
        while b:
            try:
                n = os.write(ofd, b)
            except BlockingIOError:
                select.select([], [ofd], [], 1.0)
                continue
            except OSError as e:       # EIO / EPIPE: the terminal is gone
                raise _TerminalGone(e) from None
            b = b[n:]

    try:
        tty.setcbreak(fd)
        write("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J")
        last_draw = 0.0
        last_gen = None
        dirty = True
        while not v.quit:
            now = time.monotonic()
            if now - last_draw >= period or dirty:
                doc = read_blob(instance, STATE_BLOB)
                if doc is not None and doc.get("_alive"):
                    state, gone_since = doc, None
                elif gone_since is None:
                    gone_since = now
                elif now - gone_since > 15.0:
                    from arbpipe.ops.supervisor import read_status
                    if read_status(instance) is None:
                        code = 1
                        break
                gen = (state["now_ns"], v.sort, v.flt, v.scroll, v.typing)
                if dirty or gen != last_gen or now - last_draw >= 1.0:
                    write(_frame(state, v, width))
                    last_gen = gen
                last_draw, dirty = now, False
            try:
                r, _, _ = select.select([fd], [], [], max(0.0, period - (time.monotonic() -
                                                                       last_draw)))
            except InterruptedError:
                continue
            if r:
                try:
                    data = os.read(fd, 256)
                except OSError as e:
                    raise _TerminalGone(e) from None
                if not data:
                    raise _TerminalGone("EOF")
                for k in parse_keys(data):
                    v.key(k)
                dirty = True
    except _TerminalGone:
        code = 0
        return 0
    except KeyboardInterrupt:
        code = 0
    finally:
        try:
            write("\x1b[?25h\x1b[?1049l")
        except _TerminalGone:
            pass
        try:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        except (termios.error, OSError):
            pass
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    if code == 1:
        print(f"arbpipe: pipeline {instance!r} stopped", file=sys.stderr)
    return code


def _frame(state: dict, v: ViewState, width: int | None) -> str:
    """The escape sequences that redraw the whole screen with one frame."""
    size = os.get_terminal_size(sys.stdout.fileno())
    w = width or size.columns
    h = size.lines
    lines, page, total, scroll = frame_lines(state, v.sort, v.flt, v.scroll, height=h,
                                             width=w, footer=v.footer())
    v.page, v.total, v.scroll = page, total, scroll
    return "\x1b[H" + "\x1b[K\r\n".join(ansi_line(t, w) for t in lines[:h]) + "\x1b[K\x1b[J"


_CONSOLE: list = []


def ansi_line(t: Text, width: int) -> str:
    """One Text as ANSI, cut at ``width`` cells."""
    if not _CONSOLE:
        cs = ColorSystem.EIGHT_BIT if "256" in os.environ.get("TERM", "") else \
            ColorSystem.STANDARD
        _CONSOLE.append((Console(file=io.StringIO(), force_terminal=True, highlight=False,
                                 emoji=False), cs))
    c, cs = _CONSOLE[0]
    if t.cell_len > width:
        t = t.copy()
        t.truncate(width)
    return "".join(seg.style.render(seg.text, color_system=cs) if seg.style else seg.text
                   for seg in t.render(c) if not seg.control)
