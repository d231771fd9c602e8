"""Process entry point of one feed handler.

    python -m procs.feed VENUE [--url U] [--symbol S ...] [--ring NAME] [--instance I] [--print]
                         [--config FILE] [--watchdog S] [--ping-interval S] [--silent-reconnect S] [--verbose]

``--url`` replaces only the venue's scheme, host and port (the adapter appends its own
paths). ``--config`` takes the instruments and the instrument ids to publish from the
pipeline config (what the detector expects; also the venue's url, watchdog and the feed
ring's size unless given here); without it the simulator's default instruments and
``arbpipe.symbols`` ids are used. ``--symbol`` takes canonical ``BASE/QUOTE``
(``BASE/QUOTE:PERP`` for OKX SWAP) or the venue's native symbol (repeatable, or comma-separated); a native symbol the symbol map
does not know is used as is. ``--print`` writes every normalized update as one JSON line on
stdout and needs no shared memory. Otherwise updates go into the SPSC ring ``feed.<venue>``
(or ``--ring``) of the instance, created when absent (capacity 65536, drop when full),
with the counters in ``<ring>.stats``. SIGTERM / SIGINT stop it cleanly: sockets closed,
what it created unlinked. Log lines go to stderr. Exit codes: 0 ok, 1 runtime failure
(e.g. another feed already writes that ring), 2 bad usage.
"""
from __future__ import annotations

import argparse
import logging
import sys

from arbpipe.feeds.options import FeedOptions
from arbpipe.feeds.runtime import run_feed


def _setup_logging(verbose: bool = False) -> None:
    root = logging.getLogger()
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s feed %(levelname)s %(message)s"))
        root.addHandler(h)
    logging.getLogger("arbpipe.feed").setLevel(logging.DEBUG if verbose else logging.INFO)


def feed_command(venue: str, url: str | None = None, symbol: list[str] | None = None,
                 print_: bool = False, ring: str | None = None, instance: str | None = None,
                 *, config: str | None = None, watchdog: float | None = None,
                 ping_interval: float | None = None, silent_reconnect: float | None = None,
                 verbose: bool = False, depth: int | None = None,
                 rest_url: str | None = None) -> int:
    """``arbpipe feed VENUE ...``: run one feed handler in this process until SIGTERM /
    SIGINT; returns the exit code (0 ok, 1 runtime failure, 2 bad usage). ``config``: the
    pipeline TOML (instruments, published ids, url, watchdog, ring size from it)."""
    _setup_logging(verbose)
    opts = FeedOptions(watchdog_s=watchdog, ping_interval_s=ping_interval,
                       silent_reconnect_s=silent_reconnect)
    return run_feed(venue, url=url, symbols=list(symbol or []) or None, print_=print_,
                    ring=ring, instance=instance, config=config, options=opts, depth=depth,
                    rest_url=rest_url)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m procs.feed", description="arbpipe feed handler")
    p.add_argument("venue", help="binance, binance-usdm, bybit-spot, bybit-linear, okx, "
                                 "coinbase, kraken, gate")
    p.add_argument("--url", help="ws[s]://HOST[:PORT] replacing the venue's (paths are kept)")
    p.add_argument("--symbol", action="append", default=[], metavar="S",
                   help="BASE/QUOTE or native symbol; repeatable (default: the venue's list)")
    p.add_argument("--ring", help="SPSC ring name (default feed.<venue>)")
    p.add_argument("--instance", help="pipeline instance (default $ARBPIPE_INSTANCE or 'default')")
    p.add_argument("--config", help="pipeline TOML (instruments and their published ids, url, "
                                     "watchdog, ring size); default: the simulator's instruments")
    p.add_argument("--print", dest="print_", action="store_true",
                   help="write each normalized update as a JSON line on stdout; no ring")
    p.add_argument("--watchdog", type=float, help="seconds of silence before a symbol is stale")
    p.add_argument("--ping-interval", type=float, help="override the venue's ping interval (s)")
    p.add_argument("--silent-reconnect", type=float,
                   help="seconds of silence of every symbol before reconnecting")
    p.add_argument("--depth", type=int, help="L2 book: top N levels per side (0: BBO only)")
    p.add_argument("--rest-url", help="http[s]://HOST[:PORT] replacing the venue's REST base")
    p.add_argument("--verbose", "-v", action="store_true")
    a = p.parse_args(argv)
    return feed_command(a.venue, a.url, a.symbol, a.print_, a.ring, a.instance,
                        config=a.config, watchdog=a.watchdog, ping_interval=a.ping_interval,
                        silent_reconnect=a.silent_reconnect, verbose=a.verbose, depth=a.depth,
                        rest_url=a.rest_url)


if __name__ == "__main__":
    sys.exit(main())
