"""The tunables of one feed handler (``FeedOptions``); the rules that use them are in
``arbpipe.feeds.connection`` (reconnects, half-open probe) and ``arbpipe.feeds.feed``
(watchdog, housekeeping)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class FeedOptions:
    """Tunables of one feed. Times in seconds; None = the adapter's / derived default."""
    watchdog_s: float | None = None          # per-symbol silence -> STALE (None: adapter.watchdog_s)
    silent_reconnect_s: float | None = None  # all symbols of a socket silent -> reconnect
                                             # (None: max(2 x watchdog_s, 60))
    ping_interval_s: float | None = None     # override SocketSpec.ping_interval_s (tests)
    backoff_initial_s: float = 0.5           # first reconnect delay (x jitter in [0.5, 1])
    backoff_max_s: float = 30.0              # cap of the exponential backoff
    connect_timeout_s: float = 10.0          # TCP + TLS + websocket handshake
    read_timeout_s: float = 60.0             # a frame that started must finish within this
    swap_timeout_s: float = 10.0             # planned reconnect: wait this long for the new
                                             # connection's first frame, then switch anyway
    ack_timeout_s: float = 10.0              # log when neither an ack nor data came by then
    tick_s: float = 0.5                      # housekeeping period (watchdog, stats)
    probe_idle_s: float = 10.0               # nothing received for this long: send a websocket
                                             # ping (0 = never probe)
    probe_timeout_s: float = 10.0            # ... and still nothing this long after it: the
                                             # connection is half-open, replace it
    stable_s: float = 10.0                   # a connection must live this long (and deliver
                                             # data) before the backoff starts again from the
                                             # first delay: a disconnect storm backs off
    push_timeout_s: float = 0.0              # ring full: wait this long (BLOCK rings) then drop
