"""Process entry point of the replay source: one process producing every feed ring.

    python -m procs.replay FILE [--instance I] [--config F] [--rate R | --speed S] [--loop]
                           [--tick-us U] [--on-full drop|wait]

What ``arbpipe up --replay FILE`` runs instead of the simulator and the feed handlers
(role ``replay``, stage 1). Publishes the recording into the ``feed.<venue>`` rings the
supervisor created (``arbpipe.replay.replayer.Replayer``: timestamps rebased to the publish time,
REPLAYED set; ``--rate`` records/s evenly spaced, else ``--speed`` 1x / 10x / max of the
recorded timing; ``--loop`` starts over at the end). Each ring's seq numbers continue
from the ring itself (``arbpipe.replay.kernels.ring_seq_start``), so a restarted replay process
never starts a ring over at seq 1; and it resumes at the recording position its previous
incarnation last published in the ``replay.state`` blob (written every 50 ms: after a
SIGKILL at most that much of the recording goes out a second time, with new seq numbers
and timestamps).

State blob ``replay.state`` (``arbpipe.transport.stateblob.read_blob``): recording, position,
records, loops, published / dropped / skipped (this incarnation and all incarnations),
target rate, behind (records due by the schedule but not yet sent), done. A replay that
is not looping and reaches the end stays up idle (blocked in a 0.5 s sleep) until
SIGTERM, so that the supervisor does not restart it. Prints one JSON line when running:
``{"event":"ready", ...}``. Exit codes: 0 ok (SIGTERM / SIGINT), 1 runtime failure (a
ring missing, a live feed handler on a ring), 2 bad usage or a file that is not a
recording.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from arbpipe.config import ConfigError, load_config
from arbpipe.replay import file as RF, kernels as RK, replayer as RP, source as RS
from arbpipe.transport import segments
from arbpipe.transport.stateblob import StateBlob, read_blob

STATE_BLOB = "replay.state"
STATE_EVERY_S = 0.05


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m procs.replay",
                                 description="replay a recording into every feed ring")
    ap.add_argument("recording", help="a recording made by `arbpipe record` (or a bench)")
    ap.add_argument("--instance", default=None, help="pipeline instance "
                                                     "(default $ARBPIPE_INSTANCE or 'default')")
    ap.add_argument("--config", default=None, help="pipeline TOML: the file's venues and "
                                                   "instruments are checked against it")
    ap.add_argument("--rate", type=float, default=None, help="records/s, evenly spaced")
    ap.add_argument("--speed", default=None, help="1x, 10x, ... or max (default 1x)")
    ap.add_argument("--loop", action="store_true", help="start over at the end")
    ap.add_argument("--tick-us", type=float, default=500.0,
                    help="shortest sleep between publishing steps, us (records due meanwhile "
                         "go out together)")
    ap.add_argument("--on-full", choices=("drop", "wait"), default=None,
                    help="a full ring: drop and count (default), or wait (default at max)")
    a = ap.parse_args(argv)

    try:
        speed = RS.parse_speed(a.speed or "1x")
        if a.rate is not None and not a.rate > 0:
            raise ValueError(f"--rate {a.rate}: must be > 0")
        if a.rate is not None and a.speed is not None:
            raise ValueError("--rate and --speed: give one of them")
        if a.tick_us < 0:
            raise ValueError(f"--tick-us {a.tick_us}: must be >= 0")
        rec = RF.Recording(a.recording)
        if a.config:
            try:
                cfg = load_config(a.config)
            except ConfigError as e:
                raise ValueError(f"config: {e}") from None
            RS.check_against_config(rec, cfg)
    except (ValueError, OSError) as e:   # RecordingError is a ValueError
        print(f"replay: {e}", file=sys.stderr)
        return 2
    instance = a.instance or segments.default_instance()

    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    path = os.path.abspath(a.recording)
    prev = read_blob(instance, STATE_BLOB)
    resume = 0
    before = {"published": 0, "dropped": 0, "skipped": 0, "incarnations": 0}
    if prev and not prev.get("_alive") and prev.get("recording") == path \
            and prev.get("records") == len(rec):
        resume = int(prev.get("position", 0))
        before = {k: int(prev.get(f"{k}_total" if k != "incarnations" else k, 0))
                  for k in before}
    try:
        rp = RP.Replayer(rec, instance, speed=speed, rate=a.rate, loop=a.loop,
                         on_full=a.on_full, tick_s=a.tick_us / 1e6, seq="continue")
    except RF.RecordingError as e:
        print(f"replay: {e}", file=sys.stderr)
        return 2
    except segments.SegmentError as e:
        print(f"replay: {e}", file=sys.stderr)
        return 1
    blob = None
    try:
        blob = StateBlob.create(instance, STATE_BLOB, size=1 << 16)
        rp.warm_up()
        n = len(rec)
        t_run = [0]
        period = 1e9 / a.rate if a.rate else None
        doc = {"recording": path, "records": n, "rings": rp.ring_names, "pid": os.getpid(),
               "rate": a.rate, "speed": a.speed or ("1x" if not a.rate else None),
               "loop": a.loop, "resumed_from": resume,
               "incarnations": before["incarnations"] + 1, "seq_start": rp.seqs.tolist(),
               "done": False}

        def publish(pos, done=False):
            io = rp.io
            pub, drop, skip = int(io[RK.IO_PUSHED]), int(io[RK.IO_DROPPED]), \
                int(io[RK.IO_SKIPPED])
            behind = 0
            if period and not done:
                due = resume + int((time.time_ns() - t_run[0]) / period)
                behind = max(due - pos, 0)
            doc.update(position=int(pos), loops=int(pos // n), published=pub, dropped=drop,
                       skipped=skip, published_total=before["published"] + pub,
                       dropped_total=before["dropped"] + drop,
                       skipped_total=before["skipped"] + skip, behind=behind, done=done,
                       updated_ns=time.time_ns())
            blob.publish(doc)

        publish(resume)
        print(json.dumps({"event": "ready", "pid": os.getpid(), "instance": instance,
                          "rings": rp.ring_names, "records": n, "resumed_from": resume,
                          "seq_start": rp.seqs.tolist()}), flush=True)
        t_run[0] = time.time_ns()
        res = rp.run(stop=lambda: bool(stopping), progress=lambda pos, pushed: publish(pos),
                     start=resume, progress_s=STATE_EVERY_S)
        publish(res["position"], done=not stopping)
        print(json.dumps({"event": "stopped" if stopping else "done", **{
            k: res[k] for k in ("published", "dropped", "skipped", "loops", "position")}}),
            flush=True)
        while not stopping:        # the end of a one-pass replay: stay up, idle
            time.sleep(0.5)
    finally:
        rp.close()
        if blob is not None:
            blob.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
