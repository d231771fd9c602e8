"""The feed handler process: a venue adapter built from names (``build_adapter``), its
ring and counters segment set up, the ``Feed`` run until SIGTERM / SIGINT (``run_feed``).

The parts: ``arbpipe.feeds.feed`` (the ``Feed``: workers, status records, watchdog,
counters), ``arbpipe.feeds.worker`` (one thread per websocket), ``arbpipe.feeds.connection``
(a connection and the reconnect / backoff / half-open probe policy),
``arbpipe.feeds.sinks`` (records into the ring, or JSON lines), ``arbpipe.feeds.stats``
(the counters segment), ``arbpipe.feeds.options`` (the tunables) and
``arbpipe.feeds.venues`` (one adapter per venue). Log lines of all of them go to the
logger ``arbpipe.feed``.
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
from urllib.parse import urlsplit

from arbpipe.config import ConfigError, load_config
from arbpipe.feeds.feed import Feed
from arbpipe.feeds.options import FeedOptions
from arbpipe.feeds.sinks import PrintSink, RingSink
from arbpipe.feeds.stats import FeedStatsWriter
from arbpipe.feeds.venues.base import VenueAdapter
from arbpipe.feeds.venues.registry import get as get_adapter_class
from arbpipe.symbols import VENUE_IDS, SymbolError, SymbolMap
from arbpipe.transport import segments
from arbpipe.transport.rings import SpscRing
from arbpipe.transport.segments import SegmentError, SegmentNotFound

log = logging.getLogger("arbpipe.feed")


class UsageError(ValueError):
    """Bad venue, symbol or URL given by the user (exit code 2)."""


def base_url(url: str | None, default: str) -> str:
    """``scheme://host[:port]`` of ``url`` (its path, if any, is ignored: adapters append
    their own), or ``default``."""
    if not url:
        return default.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise UsageError(f"--url {url!r}: expected ws://HOST[:PORT] or wss://HOST[:PORT]")
    return f"{parts.scheme}://{parts.netloc}"


def rest_base(url: str | None, default: str) -> str:
    """``scheme://host[:port]`` of the REST base (``--rest-url``; its path is ignored)."""
    if not url:
        return default.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--rest-url {url!r}: expected http://HOST[:PORT] or https://HOST[:PORT]")
    return f"{parts.scheme}://{parts.netloc}"


def build_adapter(venue: str, symbols: list[str] | None = None,
                  symbol_map: SymbolMap | None = None) -> tuple[VenueAdapter, SymbolMap]:
    """The venue's adapter for ``symbols`` (canonical or native; default: every instrument
    the map lists on that venue), with venue and instrument ids from the symbol map
    (default: ``SymbolMap.default()``, the simulator's instruments)."""
    try:
        cls = get_adapter_class(venue)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    smap = symbol_map if symbol_map is not None else SymbolMap.default()
    if venue not in VENUE_IDS:
        raise UsageError(f"venue {venue!r} has no venue id in arbpipe.symbols.VENUE_IDS")
    listed = smap.venue_listings(venue)
    vid = listed[0].venue_id if listed else VENUE_IDS[venue]
    try:
        if symbols:
            listings = []
            for s in symbols:
                for part in s.replace(",", " ").split():
                    li = smap.resolve(venue, part, cls.native_to_canonical)
                    if li not in listings:
                        listings.append(li)
        else:
            listings = smap.venue_listings(venue)
    except SymbolError as e:
        raise UsageError(str(e)) from None
    if not listings:
        raise UsageError(f"no instruments for {venue}: name some with --symbol")
    return cls([li.instrument() for li in listings], vid), smap


def from_config(path: str | None, venue: str):
    """(SymbolMap, the venue's config) from the pipeline config file (``arbpipe.config``)."""
    try:
        cfg = load_config(path)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if venue not in cfg.enabled_venues():
        raise UsageError(f"venues.{venue}: not an enabled venue of {path or 'the config'}")
    try:
        return SymbolMap.from_config(cfg), cfg.venues[venue], cfg
    except SymbolError as e:
        raise UsageError(f"{path}: {e}") from None


def run_feed(venue: str, url: str | None = None, symbols: list[str] | None = None,
             print_: bool = False, ring: str | None = None, instance: str | None = None, *,
             config: str | None = None, options: FeedOptions | None = None, out=None,
             symbol_map: SymbolMap | None = None, handle_signals: bool = True,
             capacity: int = 65536, policy: str = "drop", depth: int | None = None,
             rest_url: str | None = None) -> int:
    """One feed handler until SIGTERM / SIGINT (or ``--print`` output closed). Returns the
    exit code: 0 ok, 1 runtime failure, 2 bad usage. Without ``print_`` it writes into the
    SPSC ring ``ring`` (default ``feed.<venue>``; created, capacity 65536, drop policy, when
    absent) and the counters segment ``<ring>.stats``; it unlinks what it created.

    ``config`` (a pipeline TOML file, ``arbpipe.config``): instruments and the ids to
    publish come from it (``SymbolMap.from_config``), and so do, unless given here, the
    venue's url, its watchdog, its funding interval and the feed ring's capacity/policy.
    ``depth`` (default: the config's ``[venues.<v>] depth``, else 0): top N levels of an L2
    book per instrument, where the adapter supports depth; ``rest_url`` replaces scheme,
    host and port of the venue's REST base (depth snapshots), as ``url`` does for sockets."""
    stop_requested = []
    feed_box: list[Feed] = []

    def on_signal(signum, frame):
        stop_requested.append(signum)
        if feed_box:
            feed_box[0].stop()

    old = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, on_signal)
    stats = ring_obj = None
    created_ring = False
    try:
        options = dataclasses.replace(options) if options is not None else FeedOptions()
        try:
            if config is not None:
                symbol_map, vcfg, cfg = from_config(config, venue)
                url = url or vcfg.url or None
                if options.watchdog_s is None:
                    options.watchdog_s = vcfg.watchdog_s
                options.probe_idle_s = vcfg.probe_idle_s
                options.probe_timeout_s = vcfg.probe_timeout_s
                capacity, policy = cfg.rings.feed.capacity, cfg.rings.feed.policy
                if depth is None:
                    depth = vcfg.depth
                rest_url = rest_url or vcfg.rest_url or None
            adapter, smap = build_adapter(venue, symbols, symbol_map)
            bu = base_url(url, adapter.default_url)
            rest = rest_base(rest_url, adapter.default_rest_url)
            depth = int(depth or 0)
            if depth < 0:
                raise UsageError(f"--depth {depth}: must be >= 0")
            if depth and not adapter.supports_depth:
                log.warning("%s: L2 books are not supported by this adapter yet; BBO only",
                            venue)
                depth = 0
            adapter.depth = depth
            if config is not None and vcfg.funding_interval_s and \
                    hasattr(adapter, "funding_interval_s"):
                adapter.funding_interval_s = vcfg.funding_interval_s
        except UsageError as e:
            print(f"feed: {e}", file=sys.stderr)
            return 2
        if print_:
            names = {i.instrument_id: (i.native, smap.canonical(i.instrument_id))
                     for i in adapter.instruments}
            sink = PrintSink(out or sys.stdout, venue, adapter.venue_id, names,
                             on_broken=lambda: feed_box and feed_box[0].stop(), depth=depth)
        else:
            instance = instance or segments.default_instance()
            ring_name = ring or f"feed.{venue}"
            try:
                stats = FeedStatsWriter.create(instance, f"{ring_name}.stats", venue,
                                               adapter.venue_id, len(adapter.sockets()))
            except segments.SegmentExists as e:
                print(f"feed: another feed handler writes {ring_name!r}: {e}", file=sys.stderr)
                return 1
            except SegmentError as e:
                print(f"feed: {e}", file=sys.stderr)
                return 1
            try:
                ring_obj = SpscRing.attach(ring_name, instance=instance, record="MarketUpdate")
            except SegmentNotFound:
                ring_obj = SpscRing.create(ring_name, capacity, "MarketUpdate", policy=policy,
                                           instance=instance)
                created_ring = True
            except SegmentError as e:
                print(f"feed: {e}", file=sys.stderr)
                return 1
            sink = RingSink(ring_obj, adapter.venue_id, push_timeout=options.push_timeout_s,
                            depth=depth)
        feed = Feed(adapter, bu, sink, stats=stats, options=options, rest_url=rest)
        feed_box.append(feed)
        if stop_requested:
            return 0
        log.info("%s: %d instrument(s) at %s%s", venue, len(adapter.instruments), bu,
                 "" if print_ else f", ring {instance}/{ring or 'feed.' + venue}")
        feed.run()
        return 0
    finally:
        if ring_obj is not None:
            if created_ring:
                ring_obj.unlink()
            ring_obj.close()
        if stats is not None:
            stats.unlink()
            stats.close()
        for sig, h in old.items():
            signal.signal(sig, h)
