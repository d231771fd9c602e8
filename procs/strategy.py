"""Process entry point of the paper-trading strategy.

    python -m procs.strategy [--config F] [--instance I] [--journal PATH]

Attaches ``opportunities`` (broadcast reader "strategy"; waits until it exists), peeks
every ``feed.<venue>`` ring for its live top of book, appends to the ``journal`` ring when
it exists and to ``<run dir>/journal.jsonl`` (``--journal`` overrides), rebuilds its
positions from that file when it restarts, and publishes its state in the
``strategy.state`` blob (``arbpipe stat strategy``). Prints one JSON line when running:
``{"event":"ready","pid":..,"instance":..,"restored":..}``; other events are JSON lines
on stdout (the supervisor keeps them in ``<run dir>/strategy.jsonl``).
SIGTERM / SIGINT: stop after the current pass, publish the final state, exit 0.
Bad config exits 2 naming the key.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from arbpipe.config import ConfigError, load_config
from arbpipe.trading.params import RiskSource
from arbpipe.trading.service import StrategyService
from arbpipe.transport.segments import SegmentError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="strategy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="TOML config (default config/arbpipe.toml)")
    ap.add_argument("--instance", default=None, help="pipeline instance (default $ARBPIPE_INSTANCE)")
    ap.add_argument("--journal", default=None, help="journal file (default <run dir>/journal.jsonl)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"strategy: config: {e}", file=sys.stderr)
        return 2

    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *a: stopping.append(1))

    risk = None
    try:
        risk = RiskSource(cfg, args.instance or os.environ.get("ARBPIPE_INSTANCE", "default"),
                          log=lambda m: print(m, flush=True))
    except Exception as e:  # Redis is the cold path: never a reason not to run
        print(json.dumps({"event": "risk_source_unavailable", "error": str(e)}), flush=True)
        risk = None

    svc = StrategyService(cfg, args.instance, log=lambda m: print(m, flush=True),
                          journal_path=args.journal, risk_source=risk)
    try:
        if not svc.open(stop=lambda: bool(stopping)):
            return 0
        if risk is not None:
            try:
                risk.start()
            except Exception as e:
                print(json.dumps({"event": "risk_source_unavailable", "error": str(e)}),
                      flush=True)
                svc.risk_source = None
        print(json.dumps({"event": "ready", "pid": os.getpid(), "instance": svc.instance,
                          "journal_seq": svc.strategy.journal.seq,
                          "mode": svc.strategy.mode}), flush=True)
        svc.run(stop=lambda: bool(stopping))
    except SegmentError as e:
        print(f"strategy: {e}", file=sys.stderr)
        return 1
    finally:
        svc.close()
        if risk is not None:
            try:
                risk.close()
            except Exception:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
