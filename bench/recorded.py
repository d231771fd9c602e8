"""The detector kernel over a recording, in replay order: what a recorded workload yields.

``detect_recording`` is the reproducibility check of record / replay (the same file gives
the same opportunities: ids, prices, sizes, states; only the wall-clock ``detect_ns`` /
``opened_ns`` differ) and how ``bench.pipeline`` measures a workload's opportunity share.
It joins two feature packages (``arbpipe.replay`` reads the file, ``arbpipe.detect`` runs
the kernel), so it lives here, above both.
"""
from __future__ import annotations

import numpy as np

from arbpipe.config import load_config
from arbpipe.detect.detector import Detector
from arbpipe.replay.file import Recording
from shm_layouts import MARKET_UPDATE, OPPORTUNITY


def detect_recording(recording: Recording | str, cfg=None, chunk: int = 65536) -> np.ndarray:
    """Opportunities the detector kernel produces from the file's records in the order a
    replay publishes them (by recv_ts, stable: a recorder appends ring by ring, so file
    order is not time order), in collect mode with opp ids from 1: the same file gives the
    same opportunities."""
    rec = recording if isinstance(recording, Recording) else Recording(recording)
    det = Detector(cfg or load_config())
    recs = rec.words(0, len(rec)).view(MARKET_UPDATE)
    order = np.argsort(recs["recv_ts_ns"], kind="stable")
    parts = []
    for a in range(0, len(rec), chunk):
        parts.append(det.process(recs[order[a:a + chunk]]))
    return np.concatenate(parts) if parts else np.zeros(0, OPPORTUNITY)
