"""Process entry point of the bridge, one side per process.

    python -m procs.bridge --side out|in [--config F] [--instance I] [--flush-s S]

``--side out`` (``bridge.out``): taps ``[bridge] out_rings`` and writes them to Redis Streams
``<prefix>:<instance>:ring:<ring>`` (``arbpipe.bridge.out``). ``--side in`` (``bridge.in``):
reads the streams of ``[bridge] remote_instance`` into the local rings: ``feed.<venue>`` of
each remote venue, ``bridge.opportunities`` / ``bridge.journal`` (``arbpipe.bridge.inbound``).

Redis URL: ``$ARBPIPE_BRIDGE_URL``, else ``[bridge] url``, else the ``[redis]`` resolution
(``$ARBPIPE_REDIS_URL``, ``[redis] url``, the embedded server of a running tree); none at all
exits 2 naming ``bridge.url``. The URL is printed and logged only redacted. Prints one JSON
line when running: ``{"event":"ready",...}``. Exit codes: 0 stopped (SIGTERM / SIGINT), 1
runtime failure (a ring missing or of the wrong layout), 2 bad configuration, or a remote
whose announcement (symbol table, layout version, rings) disagrees with this config -- the
message names each difference.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from arbpipe.bridge.inbound import BridgeIn
from arbpipe.bridge.link import bridge_url
from arbpipe.bridge.meta import MetaMismatch
from arbpipe.bridge.out import BridgeOut
from arbpipe.config import ConfigError, load_config
from arbpipe.redact import redact_url
from arbpipe.transport.segments import SegmentError, default_instance

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m procs.bridge",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", choices=("out", "in"), required=True)
    ap.add_argument("--config", default=None, help="TOML config (default config/arbpipe.toml)")
    ap.add_argument("--instance", default=None, help="pipeline instance (default $ARBPIPE_INSTANCE)")
    ap.add_argument("--flush-s", type=float, default=2.0,
                    help="out side, at stop: seconds spent sending what the rings still hold")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"bridge: config: {e}", file=sys.stderr)
        return 2
    instance = args.instance or default_instance()
    b = cfg.bridge
    if args.side == "in":
        if not b.remote_instance or not cfg.bridge_in_rings():
            print("bridge: bridge.remote_venues: nothing to read in (set [bridge] enabled, "
                  "remote_instance and remote_venues or in_streams)", file=sys.stderr)
            return 2
        if b.remote_instance == instance:
            print(f"bridge: bridge.remote_instance: {instance!r} is this instance; the remote "
                  f"tree needs its own instance name", file=sys.stderr)
            return 2
    elif not b.out_rings:
        print("bridge: bridge.out_rings: no ring to send", file=sys.stderr)
        return 2
    url = bridge_url(cfg, instance)
    if not url:
        print("bridge: bridge.url: no Redis configured (set [bridge] url, ARBPIPE_BRIDGE_URL, "
              "[redis] url or ARBPIPE_REDIS_URL)", file=sys.stderr)
        return 2

    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    try:
        side = BridgeOut(cfg, instance, url, log=log) if args.side == "out" else \
            BridgeIn(cfg, instance, url, log=log)
    except SegmentError as e:
        print(f"bridge: {e}", file=sys.stderr)
        return 1
    ready = {"event": "ready", "side": args.side, "pid": os.getpid(), "instance": instance,
             "redis": redact_url(url)}
    if args.side == "in":
        ready.update(remote_instance=b.remote_instance,
                     streams={s.remote: s.local for s in side.streams})
    else:
        ready.update(rings=list(b.out_rings))
    print(json.dumps(ready), flush=True)
    code = 0
    try:
        side.run(stop=lambda: bool(stopping))
    except MetaMismatch as e:
        print(f"bridge: the remote does not match this config: {e}", file=sys.stderr,
              flush=True)
        code = 2
    except SegmentError as e:
        print(f"bridge: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        st = side.close(args.flush_s) if args.side == "out" else side.close()
        if args.side == "out":
            summary = {n: {k: r[k] for k in ("sent", "missed", "behind")}
                       for n, r in st["rings"].items()}
        else:
            summary = {n: {k: s[k] for k in ("published", "duplicates", "gaps", "bad")}
                       for n, s in st["streams"].items()}
        print(json.dumps({"event": "stopped", "side": args.side, "rings": summary}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
