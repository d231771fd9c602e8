"""The operator commands ``arbpipe record`` and ``arbpipe replay``: options checked, Ctrl-C /
SIGTERM turned into a clean stop, results echoed, exit codes (0 ok, 1 runtime failure such
as a missing ring, 2 bad usage or a file that is not a recording)."""
from __future__ import annotations

import signal
import time

from arbpipe.config import ConfigError, load_config
from arbpipe.replay.file import RecordingError
from arbpipe.replay.recorder import Recorder
from arbpipe.replay.replayer import Replayer
from arbpipe.replay.source import parse_speed
from arbpipe.transport import segments


def split_names(items) -> list[str]:
    """Ring names given as repeated and / or comma-separated options, flattened."""
    out = []
    for it in items or []:
        out += [x.strip() for x in str(it).split(",") if x.strip()]
    return out


def stop_flag():
    """A stop() that turns true on SIGTERM / SIGINT (KeyboardInterrupt is not raised)."""
    flag = []

    def on(signum, frame):
        flag.append(signum)
    signal.signal(signal.SIGTERM, on)
    signal.signal(signal.SIGINT, on)
    return lambda: bool(flag)


def record_command(out: str, rings=None, duration=None, count=None, config=None,
                   instance=None, echo=print, from_start: bool = False) -> int:
    """``arbpipe record``: tap the rings into ``out`` until Ctrl-C / duration / count."""
    try:
        cfg = load_config(config)
    except ConfigError as e:
        echo(f"arbpipe record: bad config: {e}")
        return 2
    try:
        rec = Recorder(out, instance, split_names(rings) or None, cfg, append=True,
                       from_start=from_start)
    except RecordingError as e:
        echo(f"arbpipe record: {e}")
        return 2
    except segments.SegmentError as e:
        echo(f"arbpipe record: {e}")
        return 1
    except OSError as e:
        echo(f"arbpipe record: {out}: {e}")
        return 1
    stop = stop_flag()
    had = rec.records
    echo(f"recording {', '.join(r.name for r in rec.rings)} of instance {rec.instance!r} "
         f"into {out}" + (f" (appending to its {had:,} records)" if had else "")
         + " (Ctrl-C stops)")
    try:
        res = rec.run(stop=stop, duration=duration, count=count)
    finally:
        rec.close()
    if res["why"].startswith("rings removed"):
        echo(f"arbpipe record: {res['why']}")
    echo(f"recorded {rec.records - had:,} records in {res['seconds']:.1f} s"
         + (f"; {rec.missed:,} went by while the recorder lagged (not in the file)"
            if rec.missed else ""))
    return 0


def replay_command(path: str, speed: str = "1x", rate=None, loop=False, duration=None,
                   create=False, on_full=None, instance=None, echo=print) -> int:
    """``arbpipe replay``: publish a recording into the feed rings."""
    try:
        sp = parse_speed(speed)
        if rate is not None and not rate > 0:
            raise ValueError(f"rate {rate} must be > 0")
        if on_full not in (None, "drop", "wait"):
            raise ValueError(f"--on-full {on_full!r}: use drop or wait")
    except ValueError as e:
        echo(f"arbpipe replay: {e}")
        return 2
    try:
        rp = Replayer(path, instance, speed=sp, rate=rate, loop=loop, on_full=on_full,
                      create=create)
    except (RecordingError, OSError) as e:
        echo(f"arbpipe replay: {e}")
        return 1 if isinstance(e, OSError) else 2
    except segments.SegmentError as e:
        echo(f"arbpipe replay: {e}")
        return 1
    stop = stop_flag()
    how = f"{rate:,.0f} records/s" if rate else ("max speed" if sp == float("inf") else f"{sp:g}x")
    echo(f"replaying {len(rp.rec):,} records from {path} into {', '.join(rp.ring_names)} "
         f"(instance {rp.instance!r}) at {how}{', looping' if loop else ''}")
    try:
        rp.warm_up()
        res = rp.run(stop=stop, duration=duration)
        if rp.created:   # let the consumer drain what we created before unlinking it
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and any(
                    r.stats()["fill"] for r in rp.rings):
                time.sleep(0.02)
    finally:
        rp.close()
    echo(f"published {res['published']:,} records in {res['seconds']:.2f} s "
         f"({res['rate']:,.0f}/s), dropped {res['dropped']:,}"
         + (f", skipped {res['skipped']:,} (venue not in the file's names)"
            if res["skipped"] else ""))
    return 0
