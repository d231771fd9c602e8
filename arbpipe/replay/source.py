"""A recording as the source of a tree (``arbpipe up --replay FILE``), checked without numba
in the supervisor: ``tree_source_args`` (the options, as the arguments of ``procs.replay``),
``check_against_config`` (the file against the tree's config) and ``parse_speed``. The
replay process itself is ``arbpipe.replay.replayer``.
"""
from __future__ import annotations

import os

import numpy as np

from arbpipe.replay.file import Recording, RecordingError


def parse_speed(text) -> float:
    """'1x', '10x', '2.5', 'max' -> a float (inf for max)."""
    t = str(text).strip().lower()
    if t in ("max", "inf", "0"):
        return float("inf")
    try:
        v = float(t[:-1] if t.endswith("x") else t)
    except ValueError:
        raise ValueError(f"speed {text!r}: use e.g. 1x, 10x or max") from None
    if not v > 0:
        raise ValueError(f"speed {text!r} must be > 0")
    return v


def tree_source_args(path: str, rate=None, speed=None, loop: bool = False) -> list[str]:
    """Check the options of ``arbpipe up --replay`` and return them as the replay
    process's arguments (``procs.replay``). ValueError names the offending option."""
    if rate is not None and speed is not None:
        raise ValueError("--rate and --speed: give one of them")
    if rate is not None and not float(rate) > 0:
        raise ValueError(f"--rate {rate}: must be > 0 (records/s)")
    if speed is not None:
        try:
            parse_speed(speed)
        except ValueError as e:
            raise ValueError(f"--speed: {e}") from None
    args = [os.path.abspath(path)]
    if rate is not None:
        args += ["--rate", repr(float(rate))]
    if speed is not None:
        args += ["--speed", str(speed)]
    return args + (["--loop"] if loop else [])


def check_against_config(recording: Recording | str, cfg) -> Recording:
    """A recording the tree of ``cfg`` can be fed with: records present, every venue of
    the file an enabled venue of the config (its ``feed.<venue>`` ring exists) and every
    instrument id naming the same instrument. RecordingError names the offender."""
    rec = recording if isinstance(recording, Recording) else Recording(recording)
    if len(rec) == 0:
        raise RecordingError(f"{rec.path}: no records")
    venues = set(cfg.enabled_venues())
    ids = np.unique(np.asarray(rec.records["venue_id"]))
    for v in ids:
        name = rec.venue_name(v)
        if name is None:
            raise RecordingError(f"{rec.path}: venue id {int(v)} has no name in the file's "
                                 f"names document")
        if name not in venues:
            raise RecordingError(f"{rec.path}: venue {name!r} is not an enabled venue of the "
                                 f"config (venues.{name})")
        if name in cfg.remote_venues():
            raise RecordingError(f"{rec.path}: venue {name!r} is remote in the config "
                                 f"(bridge.remote_venues): the bridge produces its ring")
    cfg_insts = {str(i): n for n, i in cfg.instrument_ids().items()}
    for i, name in rec.names.get("instruments", {}).items():
        if i in cfg_insts and cfg_insts[i] != name:
            raise RecordingError(f"{rec.path}: instrument id {i} is {name!r} in the file but "
                                 f"{cfg_insts[i]!r} in the config (instruments)")
    return rec
