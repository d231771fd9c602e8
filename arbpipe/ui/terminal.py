"""``arbpipe attach dashboard``: the dashboard's view in a terminal.

``attach(instance)`` reads the ``dashboard.state`` blob at 10 Hz and redraws the frame
(``arbpipe.ui.view``) on the alternate screen; keys come from the terminal in cbreak mode
(select with a timeout): ``q`` quits (the tree keeps running), Up/Down scroll by one row,
PgUp/PgDn by a page, Home/End, ``s`` cycles the sort, ``/`` starts a filter by instrument
substring (Enter applies, Esc cancels, an empty filter clears it). The terminal is restored
on every exit (q, Ctrl-C, SIGTERM, SIGHUP); a dead terminal (SIGHUP, EOF or EIO) ends the
attach only: nothing here writes anywhere but its own terminal. ``--once`` prints one
plain-text frame instead.
"""
from __future__ import annotations

import io
import os
import select
import signal
import sys
import termios
import time
import tty
from typing import Callable, Optional

from rich.color import ColorSystem
from rich.console import Console
from rich.text import Text

from arbpipe.transport.stateblob import read_blob
from arbpipe.ui.blob import STATE_BLOB
from arbpipe.ui.view import SORTS, frame_lines, render_text

StatusReader = Callable[[str], Optional[dict]]

# ------------------------------------------------------------------ reading the blob ---

class NotRunning(RuntimeError):
    """The pipeline or its dashboard is not running (message says which)."""


def read_state(instance: str, read_status: StatusReader, wait_s: float = 0.0) -> dict:
    """The dashboard's newest state; waits up to ``wait_s`` for a starting dashboard of a
    running pipeline. NotRunning says why there is none. ``read_status(instance)`` gives the
    supervisor's status document, or None when no tree runs (the caller passes
    ``arbpipe.ops.control.read_status``: the view sits below the operator layer)."""
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
        self.sort = SORTS[0]              # expected profit
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


def attach(instance: str, read_status: StatusReader, once: bool = False,
           width: int | None = None, wait_s: float = 5.0, refresh_hz: float = 10.0,
           out=None) -> int:
    """Run the view (or print one frame with ``once``). Returns the exit code.
    ``read_status`` as for ``read_state``."""
    out = out or sys.stdout
    try:
        state = read_state(instance, read_status, wait_s)
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
    return _interactive(instance, read_status, state, refresh_hz, width)


def _interactive(instance: str, read_status: StatusReader, state: dict, refresh_hz: float,
                 width: int | None) -> int:
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
