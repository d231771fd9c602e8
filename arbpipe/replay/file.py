"""The recording file: ``Recording`` reads one (``open_recording``), ``RecordingWriter`` writes
or continues one. The byte layout (a small header with the venue and instrument names, then
raw 64-byte MarketUpdate records that numpy maps directly) is ``shm_layouts.recording``.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from arbpipe.config import PERP_ID_BIT
from shm_layouts import MARKET_UPDATE
from shm_layouts import recording as R
from shm_layouts import words as W


class RecordingError(ValueError):
    """A file that is not a recording this version can read (the message says why)."""


def names_from_config(cfg, rings=None, source: str = "") -> dict:
    """The names document of a recording made with ``cfg`` (venue ids, canonical ids)."""
    venues = {str(cfg.venue_id(v)): v for v in cfg.enabled_venues()}
    insts = {str(i): name for name, i in cfg.instrument_ids().items()}
    return {"venues": venues, "instruments": insts, "perp_id_bit": int(PERP_ID_BIT),
            "rings": list(rings or []), "source": source}


class RecordingWriter:
    """Appends MarketUpdate records to a recording file; ``close`` completes the header.
    ``append``: continue an existing recording (same venue and instrument names) instead
    of starting a new file."""

    def __init__(self, path: str, names: dict, append: bool = False):
        if append and os.path.exists(path) and os.path.getsize(path) > 0:
            self._reopen(path, names)
            return
        blob = json.dumps(names, separators=(",", ":")).encode()
        self.header_size = R.header_size_for(len(blob))
        self.path = path
        self.f = open(path, "wb")
        self.hdr = np.zeros(1, R.RECORDING_HEADER)
        h = self.hdr[0]
        h["magic"] = R.RECORDING_MAGIC
        h["layout_version"] = R.RECORDING_VERSION
        h["record_size"] = R.RECORD_SIZE
        h["header_size"] = self.header_size
        h["names_size"] = len(blob)
        h["created_ns"] = time.time_ns()
        head = bytearray(self.header_size)
        head[:R.NAMES_OFFSET] = self.hdr.tobytes()
        head[R.NAMES_OFFSET:R.NAMES_OFFSET + len(blob)] = blob
        self.f.write(head)
        self.records = 0
        self.missed = 0
        self.first = 0
        self.last = 0

    def _reopen(self, path: str, names: dict) -> None:
        old = Recording(path)
        for key in ("venues", "instruments"):
            if old.names.get(key) != names.get(key):
                raise RecordingError(f"{path}: recorded with other {key} names; record into a "
                                     f"new file")
        self.path = path
        self.header_size = old.header["header_size"]
        self.hdr = np.fromfile(path, R.RECORDING_HEADER, count=1)
        self.records, self.missed = old.count, old.header["missed"]
        self.first, self.last = old.header["first_recv_ns"], old.header["last_recv_ns"]
        if self.records and not self.first:     # never closed: take them from the records
            recv = np.asarray(old.records["recv_ts_ns"])
            self.first, self.last = int(recv.min()), int(recv.max())
        del old
        self.f = open(path, "r+b")
        self.f.truncate(self.header_size + self.records * R.RECORD_SIZE)  # a torn last record
        self.f.seek(0, os.SEEK_END)

    def append_words(self, words: np.ndarray, n: int) -> None:
        """Append n records given as flat int64 words."""
        if n <= 0:
            return
        w = words[:n * W.MU_WORDS]
        recv = w[W.MU_RECV_TS::W.MU_WORDS]
        lo, hi = int(recv.min()), int(recv.max())
        self.first = lo if self.records == 0 or lo < self.first else self.first
        self.last = hi if hi > self.last else self.last
        self.f.write(memoryview(np.ascontiguousarray(w)).cast("B"))
        self.records += n

    def append(self, recs: np.ndarray) -> None:
        """Append a MARKET_UPDATE array."""
        recs = np.ascontiguousarray(recs)
        if recs.dtype.itemsize != R.RECORD_SIZE:
            raise ValueError(f"records must be {R.RECORD_SIZE} bytes, got {recs.dtype.itemsize}")
        self.append_words(recs.reshape(-1).view(np.int64), len(recs))

    def close(self) -> None:
        if self.f is None:
            return
        h = self.hdr[0]
        h["records"] = self.records
        h["first_recv_ns"] = self.first
        h["last_recv_ns"] = self.last
        h["missed"] = self.missed
        self.f.flush()
        self.f.seek(0)
        self.f.write(self.hdr.tobytes())
        self.f.close()
        self.f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_recording(path: str, records: np.ndarray, names: dict) -> None:
    """Write a whole MARKET_UPDATE array as a recording."""
    with RecordingWriter(path, names) as w:
        w.append(records)


class Recording:
    """An open recording: ``header`` (dict), ``names`` (dict), ``records`` (read-only
    memmap of MARKET_UPDATE; a trailing partial record of a crashed recorder is ignored)."""

    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        if size < R.NAMES_OFFSET:
            raise RecordingError(f"{path}: {size} bytes is too short for a recording header")
        hdr = np.fromfile(path, R.RECORDING_HEADER, count=1)[0]
        if bytes(hdr["magic"]) != R.RECORDING_MAGIC.rstrip(b"\0"):
            raise RecordingError(f"{path}: not an arbpipe recording "
                                 f"(magic {bytes(hdr['magic'])!r})")
        if int(hdr["layout_version"]) != R.RECORDING_VERSION:
            raise RecordingError(f"{path}: recording layout version {int(hdr['layout_version'])}, "
                                 f"this arbpipe reads {R.RECORDING_VERSION}")
        if int(hdr["record_size"]) != MARKET_UPDATE.itemsize:
            raise RecordingError(f"{path}: record size {int(hdr['record_size'])}, expected "
                                 f"{MARKET_UPDATE.itemsize}")
        hs, ns = int(hdr["header_size"]), int(hdr["names_size"])
        if hs % R.RECORD_SIZE or hs < R.MIN_HEADER_SIZE or R.NAMES_OFFSET + ns > hs or hs > size:
            raise RecordingError(f"{path}: corrupt header (header_size {hs}, names_size {ns})")
        self.header = {k: (bytes(hdr[k]) if k == "magic" else int(hdr[k]))
                       for k in R.RECORDING_HEADER.names}
        with open(path, "rb") as f:
            f.seek(R.NAMES_OFFSET)
            try:
                self.names = json.loads(f.read(ns).decode())
            except ValueError as e:
                raise RecordingError(f"{path}: names document unreadable: {e}") from None
        n = (size - hs) // MARKET_UPDATE.itemsize
        declared = self.header["records"]
        if declared and declared < n:
            n = declared
        self.count = n
        self.records = (np.memmap(path, MARKET_UPDATE, mode="r", offset=hs, shape=(n,))
                        if n else np.zeros(0, MARKET_UPDATE))

    def __len__(self) -> int:
        return self.count

    def venue_name(self, venue_id: int) -> str | None:
        return self.names.get("venues", {}).get(str(int(venue_id)))

    def words(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Records [start, stop) as flat int64 words (a read-only view of the file)."""
        return np.ascontiguousarray(self.records[start:stop]).reshape(-1).view(np.int64)

    def summary(self) -> dict:
        recs = self.records
        span = (self.header["last_recv_ns"] - self.header["first_recv_ns"]) if self.count else 0
        per_venue = {}
        if self.count:
            ids, counts = np.unique(np.asarray(recs["venue_id"]), return_counts=True)
            per_venue = {(self.venue_name(i) or str(int(i))): int(c) for i, c in zip(ids, counts)}
        return {"path": self.path, "records": self.count, "span_s": span / 1e9,
                "missed": self.header["missed"], "per_venue": per_venue,
                "instruments": len(self.names.get("instruments", {}))}


def open_recording(path: str) -> Recording:
    """The recording at ``path`` (RecordingError: not one this version reads)."""
    return Recording(path)
