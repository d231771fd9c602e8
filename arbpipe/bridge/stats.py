"""Names the bridge shares with its readers, and its views: the Redis keys, the state blobs
``bridge.out.state`` / ``bridge.in.state`` (``arbpipe.transport.stateblob``, written by the
two sides), ``arbpipe stat bridge`` (``render_stats``) and the bridge line of ``arbpipe
status`` (``status_line``). Light on purpose: reading it imports no Redis client and no
numba kernel.
"""
from __future__ import annotations

from arbpipe.transport.stateblob import read_blob

OUT_BLOB, IN_BLOB = "bridge.out.state", "bridge.in.state"
HIST_HOP = "bridge_link"        # hist.bridge_link: local receive - the record's remote time
CURSOR_BLOB = "bridge.in.cursor"   # the in side's last entry per stream (outlives the process)
# why an entry was skipped (never published), the keys of ``bad`` in the in side's stats
REASONS = ("fields", "layout", "size", "venue", "record")
LOCAL_PREFIX = "bridge."        # a remote opportunities / journal ring lands in bridge.<ring>


def stream_key(prefix: str, ring: str) -> str:
    """The stream of one ring: ``<stream_prefix>:<instance>:ring:<ring>`` (prefix given)."""
    return f"{prefix}:ring:{ring}"


def meta_key(prefix: str) -> str:
    """The hash the out side describes itself in: symbol table, layout, heartbeat."""
    return f"{prefix}:bridge:meta"


def local_ring(remote_ring: str) -> str:
    """The local ring the in side publishes a remote ring's records into."""
    return remote_ring if remote_ring.startswith("feed.") else LOCAL_PREFIX + remote_ring


def read_stats(instance: str | None) -> dict:
    """{"out": blob or None, "in": blob or None} of a running (or last) bridge."""
    return {"out": read_blob(instance, OUT_BLOB), "in": read_blob(instance, IN_BLOB)}


def _ms(v) -> str:
    return "-" if v is None else f"{v:,.1f}"


def render_stats(d: dict) -> str:
    """``arbpipe stat bridge``."""
    out, inn = d.get("out"), d.get("in")
    if not out and not inn:
        return ("no bridge state (is [bridge] enabled with out_rings or remote_venues? see "
                "README 'Two hosts')")
    lines = []
    if out:
        lines.append(f"bridge out  pid {out.get('_pid')} {'alive' if out.get('_alive') else 'GONE'}"
                     f"  redis {out.get('url')} "
                     f"{'connected' if out.get('connected') else 'DISCONNECTED'}  host "
                     f"{out.get('host')}  reconnects {out.get('reconnects')}  heartbeats "
                     f"{out.get('heartbeats')}  caught up {_ms(out.get('caught_up_age_ms'))} ms ago")
        lines.append(f"  {'ring':<24} {'published':>11} {'sent':>11} {'behind':>8} "
                     f"{'missed':>8} {'resent':>8}  stream")
        for name, r in sorted((out.get("rings") or {}).items()):
            lines.append(f"  {name:<24} {r.get('published', 0):>11} {r.get('sent', 0):>11} "
                         f"{r.get('behind', 0):>8} {r.get('missed', 0):>8} "
                         f"{r.get('resent', 0):>8}  {r.get('stream')}")
        if out.get("last_error"):
            lines.append(f"  last error: {out['last_error']}")
    if inn:
        lines.append(f"bridge in   pid {inn.get('_pid')} {'alive' if inn.get('_alive') else 'GONE'}"
                     f"  redis {inn.get('url')} "
                     f"{'connected' if inn.get('connected') else 'DISCONNECTED'}  remote "
                     f"{inn.get('remote_instance')}@{inn.get('remote_host') or '?'}  link "
                     f"{inn.get('link')}  lag {_ms(inn.get('lag_ms'))} ms  reconnects "
                     f"{inn.get('reconnects')}")
        lat = inn.get("latency") or {}
        lines.append(f"  link latency (local receive - remote time): p50 {_ms(lat.get('p50_ms'))}"
                     f" ms  p99 {_ms(lat.get('p99_ms'))} ms  ({lat.get('count', 0)} records)"
                     f"  remote venues: " + ", ".join(
                         f"{v} {s}" for v, s in sorted((inn.get('venues') or {}).items())))
        lines.append(f"  {'stream':<24} {'received':>10} {'published':>10} {'dup':>7} "
                     f"{'gaps':>7} {'bad':>6} {'ring drop':>9} {'lag ms':>8} {'p50 ms':>8} "
                     f"{'p99 ms':>8}  ring")
        for name, s in sorted((inn.get("streams") or {}).items()):
            bad = sum((s.get("bad") or {}).values())
            lines.append(f"  {name:<24} {s.get('received', 0):>10} {s.get('published', 0):>10} "
                         f"{s.get('duplicates', 0):>7} {s.get('gaps', 0):>7} {bad:>6} "
                         f"{s.get('ring_dropped', 0):>9} {_ms(s.get('lag_ms')):>8} "
                         f"{_ms(s.get('p50_ms')):>8} {_ms(s.get('p99_ms')):>8}  {s.get('ring')}")
        bad = inn.get("bad") or {}
        if any(bad.values()):
            lines.append("  skipped entries: " + ", ".join(f"{k} {v}" for k, v in bad.items() if v))
        if inn.get("last_error"):
            lines.append(f"  last error: {inn['last_error']}")
    return "\n".join(lines)


def status_line(instance: str) -> str | None:
    """One line for ``arbpipe status`` (None when there is no bridge)."""
    d = read_stats(instance)
    out, inn = d["out"], d["in"]
    if not out and not inn:
        return None
    parts = []
    if out:
        parts.append(f"out {'connected' if out.get('connected') else 'DISCONNECTED'}, sent "
                     f"{sum(r.get('sent', 0) for r in (out.get('rings') or {}).values())}")
    if inn:
        parts.append(f"in from {inn.get('remote_instance')} {inn.get('link')}, published "
                     f"{sum(s.get('published', 0) for s in (inn.get('streams') or {}).values())}"
                     f", lag {_ms(inn.get('lag_ms'))} ms")
    return f"  bridge: {'; '.join(parts)}"
