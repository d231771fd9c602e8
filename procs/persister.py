"""Process entry point of the persister (the cold path to Redis).

    python -m procs.persister [--config F] [--instance I] [--flush-s S]

Reads the ``opportunities`` broadcast ring (reader ``persister``) and the strategy's
``journal`` SPSC ring, peeks the feed rings for a top-of-book snapshot, and writes Redis
Streams ``<prefix>:<instance>:opportunities|trades|events`` and the hash ``...:tob``
(``arbpipe.persist.persister``). Redis URL: ``$ARBPIPE_REDIS_URL``, else ``[redis] url``, else the
embedded server of a running tree of the instance; none at all exits 2 naming
``redis.url``. Prints one JSON line when running: ``{"event":"ready",...}`` (URL redacted).
SIGTERM / SIGINT: read what is left, write the backlog for up to ``--flush-s`` seconds,
detach, remove the ``persister.state`` blob; exit 0.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from arbpipe.config import ConfigError, load_config
from arbpipe.persist.persister import Persister
from arbpipe.redact import redact_url
from arbpipe.redis_conn import resolve_url
from arbpipe.transport.segments import SegmentError, default_instance


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="persister", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="TOML config (default config/arbpipe.toml)")
    ap.add_argument("--instance", default=None, help="pipeline instance (default $ARBPIPE_INSTANCE)")
    ap.add_argument("--flush-s", type=float, default=2.5,
                    help="at stop, seconds spent writing the backlog (default 2.5; the supervisor waits 5)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"persister: config: {e}", file=sys.stderr)
        return 2

    instance = args.instance or default_instance()
    url = resolve_url(cfg, instance)
    if not url:
        print("persister: redis.url: no Redis configured (set [redis] url or "
              "ARBPIPE_REDIS_URL; `arbpipe up` embeds a redis-server when one is installed)",
              file=sys.stderr)
        return 2

    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    try:
        p = Persister(cfg, instance, url, log=log)
    except SegmentError as e:
        print(f"persister: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"event": "ready", "pid": os.getpid(), "instance": instance,
                      "redis": redact_url(url), "prefix": p.prefix,
                      "buffer_records": cfg.redis.buffer_records}), flush=True)
    try:
        p.run(stop=lambda: bool(stopping))
    finally:
        st = p.close(args.flush_s)
        print(json.dumps({"event": "stopped", "written": st["written"],
                          "dropped": st["dropped"], "lost": st["lost"],
                          "unwritten": st["unwritten"], "reconnects": st["reconnects"]}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
