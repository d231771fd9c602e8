"""Process entry point of the dashboard.

    python -m procs.dashboard [--config F] [--instance I]

Reads the ``opportunities`` broadcast ring (reader ``dashboard``; attached once it
exists) and every other process's counters, keeps the view's state since start and
publishes it in the state blob ``dashboard.state`` at ``[dashboard] refresh_hz``
(``arbpipe.ui.dashboard``); serves the tree's HTTP endpoint on ``metrics_host:metrics_port``
(``arbpipe.ops.http``: /metrics from ``arbpipe.ui.metrics``, /healthz, /readyz, /status and
the token-guarded control POSTs; port 0 = a free one). Idle: sleeps on the ring's doorbell with the
next publication as timeout, waking at most ~20 times a second.

Prints one JSON line on stdout when running:
``{"event":"ready","pid":..,"instance":..,"metrics":{"host","port","url","error"}}``.
A metrics port already in use is reported (``metrics.error`` in the blob, a log line) and
retried every 5 s; the view keeps working. SIGTERM / SIGINT: exit 0, the blob unlinked.
Bad config exits 2 naming the key; a non-loopback ``metrics_host`` without a control token
(or an unusable token file) exits 2 saying why.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from arbpipe.config import ConfigError, load_config

METRICS_RETRY_S = 5.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="dashboard", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="TOML config (default config/arbpipe.toml)")
    ap.add_argument("--instance", default=None,
                    help="pipeline instance (default $ARBPIPE_INSTANCE)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"dashboard: config: {e}", file=sys.stderr)
        return 2

    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    from arbpipe.ops import http  # lazy: as below (its own imports are light)
    refusal = http.check_bind(cfg)
    if refusal:
        print(f"dashboard: {refusal}", file=sys.stderr)
        return 2

    # imported after the signal handlers, so that a SIGTERM during their ~450 ms (numba
    # kernels) still ends the process cleanly (exit 0)
    from arbpipe.transport.segments import SegmentError  # lazy: as said above
    from arbpipe.ui import metrics  # lazy: as above
    from arbpipe.ui.dashboard import Dashboard  # lazy: as above

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    try:
        dash = Dashboard(cfg, args.instance, config_path=args.config, log=log)
    except SegmentError as e:
        print(f"dashboard: {e}", file=sys.stderr)
        return 1
    dc = cfg.dashboard
    server = None
    next_try = [0.0]

    def provider():
        app.scrapes += 1
        dash.metrics_info["scrapes"] = app.scrapes
        return metrics.render(dash.last_state, dash.histogram_snapshots())

    app = http.App(cfg, dash.instance, provider, lambda: dash.last_state, http.load_token(cfg))

    def start_metrics():
        nonlocal server
        info = dash.metrics_info
        info.update(enabled=dc.metrics_enabled, host=dc.metrics_host)
        if not dc.metrics_enabled or server is not None or time.monotonic() < next_try[0]:
            return
        s = http.HttpServer(app, dc.metrics_host, dc.metrics_port)
        try:
            port = s.start()
        except OSError as e:
            next_try[0] = time.monotonic() + METRICS_RETRY_S
            if info.get("error") is None:
                log(f"dashboard: metrics endpoint {dc.metrics_host}:{dc.metrics_port} "
                    f"unavailable ({e.strerror or e}); retrying every {METRICS_RETRY_S:.0f} s")
            info["error"] = f"{dc.metrics_host}:{dc.metrics_port}: {e.strerror or e}"
            return
        server = s
        host = f"[{dc.metrics_host}]" if ":" in dc.metrics_host else dc.metrics_host
        info.update(port=port, url=f"http://{host}:{port}/metrics", error=None)

    try:
        start_metrics()
        dash.open_ring()
        dash.refresh()
        dash.publish()
        print(json.dumps({"event": "ready", "pid": os.getpid(), "instance": dash.instance,
                          "restored": dash.restored,
                          "metrics": {k: dash.metrics_info.get(k) for k in
                                      ("host", "port", "url", "error")}}), flush=True)
        last_retry = [time.monotonic()]

        def stop():
            if server is None and dc.metrics_enabled and \
                    time.monotonic() - last_retry[0] >= METRICS_RETRY_S:
                last_retry[0] = time.monotonic()
                start_metrics()
            return bool(stopping)

        dash.run(stop)
    finally:
        if server is not None:
            server.stop()
        dash.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
