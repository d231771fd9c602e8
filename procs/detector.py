"""Process entry point of the detector.

    python -m procs.detector [--config F] [--instance I]

Attaches ``feed.<venue>`` (SPSC, MarketUpdate) of every enabled venue of the config
(waiting until they exist), attaches or creates the ``opportunities`` broadcast ring
(Opportunity, capacity ``rings.opportunities.capacity``), creates the ``detector.stats``
segment (counters; ``arbpipe.detect.stats.read_stats``) and runs the numba loop
(``arbpipe.detect.service.DetectorService``). Prints one JSON line on stdout when running:
``{"event":"ready","pid":..,"instance":..,"inputs":[ring names],"legs":[..]}``.
SIGTERM / SIGINT: drain the inputs, close every open opportunity (SHUTDOWN), detach,
unlink what this process created; exit 0. Bad config exits 2 naming the key.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys

from arbpipe.config import ConfigError, load_config


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="detector", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="TOML config (default config/arbpipe.toml)")
    ap.add_argument("--instance", default=None, help="pipeline instance (default $ARBPIPE_INSTANCE)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"detector: config: {e}", file=sys.stderr)
        return 2

    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # lazy: numba and the kernels load in ~430 ms; a bad config is reported before that
    from arbpipe.detect.service import DetectorService
    from arbpipe.transport.segments import SegmentError  # lazy: with the service, see above

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    try:
        svc = DetectorService(cfg, args.instance, log=log)
    except SegmentError as e:
        print(f"detector: {e}", file=sys.stderr)
        return 1
    try:
        if not svc.attach_inputs(stop=lambda: bool(stopping)):
            return 0
        svc.open_output()
        svc.warm_up()
        print(json.dumps({"event": "ready", "pid": __import__("os").getpid(),
                          "instance": svc.instance,
                          "inputs": [f"feed.{v}" for v, _ in svc.inputs],
                          "legs": svc.det.legs.names}), flush=True)
        svc.run(stop=lambda: bool(stopping))
    finally:
        svc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
