"""What the persister publishes about itself: the ``persister.state`` blob
(``arbpipe.transport.stateblob``, written by ``arbpipe.persist.persister.Persister.publish``)
and its views, ``arbpipe stat persister`` (``render_stats``) and the Redis line of
``arbpipe status`` (``status_line``). Light on purpose: reading it imports no Redis client
and no numba kernel."""
from __future__ import annotations

from arbpipe.transport.stateblob import read_blob

STREAMS = ("opportunities", "trades", "events")
BLOB_NAME = "persister.state"


def render_stats(d: dict | None) -> str:
    """``arbpipe stat persister``."""
    if not d:
        return "no persister state (is the persister running? it needs a Redis: see README 'Redis')"
    lines = [f"persister pid {d.get('_pid')} {'alive' if d.get('_alive') else 'GONE'}  "
             f"state {d.get('state')}  redis {d.get('url')} "
             f"{'connected' if d.get('connected') else 'DISCONNECTED'}  prefix {d.get('prefix')}",
             f"  backlog {d.get('backlog')} (bound {d.get('buffer_records')} per stream)  "
             f"reconnects {d.get('reconnects')}  outages {d.get('outages')}  "
             f"lost (lapped) {d.get('lost')}  already written {d.get('already_written')}  "
             f"rejected {d.get('rejected')}"]
    hdr = f"  {'stream':<14} {'read':>10} {'written':>10} {'backlog':>8} {'dropped':>8}"
    lines.append(hdr)
    for s in STREAMS:
        lines.append(f"  {s:<14} {d['read'].get(s, 0):>10} {d['written'].get(s, 0):>10} "
                     f"{d['backlog_by_stream'].get(s, 0):>8} {d['dropped'].get(s, 0):>8}")
    lines.append(f"  top of book: {d.get('tob_entries')} legs, {d.get('tob_snapshots')} snapshots")
    if d.get("last_error"):
        lines.append(f"  last error: {d['last_error']}")
    return "\n".join(lines)


def status_line(instance: str) -> str:
    """One line for ``arbpipe status``: where the persister writes (URL redacted), state."""
    d = read_blob(instance, BLOB_NAME)
    if not d:
        return "  redis: no persister running (no Redis, or not started yet)"
    w = d.get("written", {})
    return (f"  redis: {d.get('url')} {'connected' if d.get('connected') else 'DISCONNECTED'}, "
            f"backlog {d.get('backlog')}, written " +
            "/".join(f"{w.get(s, 0)}" for s in STREAMS) + " (opportunities/trades/events), "
            f"dropped {d.get('dropped_total')}, reconnects {d.get('reconnects')}")
