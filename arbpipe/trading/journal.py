"""The strategy's trade journal: writing entries, reading a journal file back, naming fields.

Every ORDER, FILL, REJECT, UNWIND, MISSED, BREAKER, RESET, KILL_SWITCH, TRANSFER,
TRANSFER_DONE, FUNDING, EXIT and EQUITY entry is a ``shm_layouts.journal.JOURNAL`` record
pushed to the SPSC ring ``journal`` (for the persister; drop policy, drops counted) and a
JSON line in ``<run dir>/journal.jsonl``. A restarted strategy replays that file
(``arbpipe.trading.restore``).
"""
from __future__ import annotations

import collections
import json
import time

import numpy as np

from arbpipe.config import Config
from shm_layouts.journal import (JOURNAL, BreakerReason, ExitReason, JournalKind, RejectReason,
                                 Side, TransferAsset)


class Journal:
    """Appends JournalEntry records to the ``journal`` ring (optional), a JSON-lines file
    (optional) and an in-memory tail (``entries``, bounded) for views and tests."""

    def __init__(self, path: str | None = None, ring=None, keep: int = 10_000,
                 describe=None):
        self.path = path
        self.ring = ring
        self.seq = 0
        self.dropped = 0
        self.entries: collections.deque = collections.deque(maxlen=keep)
        self.describe = describe or (lambda d: d)
        self.file = open(path, "a", buffering=1) if path else None
        self._rec = np.zeros(1, JOURNAL)      # reused: one record per write

    def write(self, kind: int, **fields) -> dict:
        """Journal one entry (``fields``: JOURNAL field names); returns it as a dict."""
        self.seq += 1
        d = {"seq": self.seq, "ts_ns": fields.pop("ts_ns", None) or time.time_ns(),
             "kind": int(kind)}
        d.update(fields)
        rec = self._rec
        rec[0] = 0
        for k, v in d.items():
            rec[0][k] = v
        if self.ring is not None and self.ring.push_words(rec.view(np.int64), 1) != 1:
            self.dropped += 1
        if self.file is not None:
            self.file.write(json.dumps(self.describe(dict(d))) + "\n")
        self.entries.append(d)
        return d

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def read_journal(path: str) -> list[dict]:
    """Entries of a journal file; a torn last line (killed mid-write) is ignored."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return out


def describe_entry(cfg: Config):
    """A journal JSON-line formatter adding names (kind, side, reason, venue, instrument)."""
    def f(d: dict) -> dict:
        k = int(d["kind"])
        d["kind_name"] = JournalKind(k).name.lower()
        if "side" in d:
            d["side_name"] = Side(int(d["side"])).name.lower()
        if k == JournalKind.REJECT:
            d["reason_name"] = RejectReason(int(d["reason"])).name.lower()
        elif k == JournalKind.BREAKER:
            d["reason_name"] = BreakerReason(int(d["reason"])).name.lower()
        elif k == JournalKind.EXIT:
            d["reason_name"] = ExitReason(int(d["reason"])).name.lower()
        elif k in (JournalKind.TRANSFER, JournalKind.TRANSFER_DONE):
            d["asset_kind"] = TransferAsset(int(d["reason"])).name.lower()
            if d.get("opp_id"):
                d["to_venue"] = cfg.venue_name(int(d["opp_id"]))
        if d.get("venue_id"):
            d["venue"] = cfg.venue_name(int(d["venue_id"]))
        if d.get("instrument_id"):
            d["instrument"] = cfg.instrument_name(int(d["instrument_id"]))
        return d
    return f
