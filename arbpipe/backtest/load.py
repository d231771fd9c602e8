"""A recording checked end to end before a backtest reads it, then put in replay order.

``load(path, cfg)`` refuses, naming the byte offset, any file a backtest must not trust:
a short or foreign header, a names document that is not JSON, a file that ends inside a
record or before the records its header declares, and records that cannot come from a
feed (an unknown kind or venue, a receive time <= 0). The checks are vectorised: one pass
over the file's columns. ``check_config``: the config must give the recorded ids the
recorded names (a recording of other instruments would be read with the wrong ones).

What passes is the records sorted by ``recv_ts_ns`` (stable), as ``arbpipe replay`` and
``bench.recorded.detect_recording`` feed the detector, as one contiguous array.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from arbpipe.config import CANONICAL_MASK, Config
from shm_layouts import MARKET_UPDATE
from shm_layouts import recording as R
from shm_layouts.records import Kind


class BadRecording(ValueError):
    """A recording the backtest refuses; the message names the file and the byte offset."""


@dataclasses.dataclass
class Loaded:
    path: str
    names: dict
    header: dict
    records: np.ndarray          # MARKET_UPDATE, sorted by recv_ts_ns (stable), contiguous
    recv: np.ndarray             # their recv_ts_ns (int64)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def words(self) -> np.ndarray:
        return self.records.view(np.int64).reshape(-1)


def _fail(path: str, offset: int, what: str):
    raise BadRecording(f"{path}: byte offset {offset}: {what}")


def _header(path: str, size: int) -> tuple[dict, dict]:
    if size < R.NAMES_OFFSET:
        _fail(path, size, f"truncated: the file ends inside the {R.NAMES_OFFSET}-byte header")
    hdr = np.fromfile(path, R.RECORDING_HEADER, count=1)[0]
    if bytes(hdr["magic"]) != R.RECORDING_MAGIC.rstrip(b"\0"):
        _fail(path, 0, f"not an arbpipe recording (magic {bytes(hdr['magic'])!r})")
    if int(hdr["layout_version"]) != R.RECORDING_VERSION:
        _fail(path, 8, f"recording layout version {int(hdr['layout_version'])}, this arbpipe "
                       f"reads {R.RECORDING_VERSION}")
    if int(hdr["record_size"]) != MARKET_UPDATE.itemsize:
        _fail(path, 12, f"record size {int(hdr['record_size'])}, expected "
                        f"{MARKET_UPDATE.itemsize}")
    hs, ns = int(hdr["header_size"]), int(hdr["names_size"])
    if hs % R.RECORD_SIZE or hs < R.MIN_HEADER_SIZE or R.NAMES_OFFSET + ns > hs:
        _fail(path, 16, f"corrupt header (header_size {hs}, names_size {ns})")
    if hs > size:
        _fail(path, size, f"truncated: the file ends inside the {hs}-byte header")
    header = {k: (bytes(hdr[k]) if k == "magic" else int(hdr[k]))
              for k in R.RECORDING_HEADER.names}
    with open(path, "rb") as f:
        f.seek(R.NAMES_OFFSET)
        blob = f.read(ns)
    try:
        names = json.loads(blob.decode())
        if not isinstance(names, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        _fail(path, R.NAMES_OFFSET, f"names document unreadable: {e}")
    return header, names


def load(path: str) -> Loaded:
    """The checked recording at ``path`` in replay order (BadRecording: see the module)."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise BadRecording(f"{path}: cannot read: {e.strerror}") from None
    header, names = _header(path, size)
    hs, rs = header["header_size"], MARKET_UPDATE.itemsize
    n, partial = divmod(size - hs, rs)
    declared = header["records"]
    if declared and declared > n:
        _fail(path, size, f"truncated: the header declares {declared} records (the file "
                          f"would end at byte {hs + declared * rs}), record {n} is "
                          f"{'incomplete' if partial else 'missing'}")
    if partial and not declared:
        _fail(path, hs + n * rs, f"truncated: a partial record of {partial} bytes at the end "
                                 f"(record {n}; a recorder that did not close?)")
    n = declared or n
    recs = np.fromfile(path, MARKET_UPDATE, count=n, offset=hs) if n else \
        np.zeros(0, MARKET_UPDATE)
    if len(recs) != n:          # the file shrank while being read
        _fail(path, hs + len(recs) * rs, "truncated while reading")
    _check_records(path, hs, recs, names)
    recv = np.asarray(recs["recv_ts_ns"], np.int64)
    order = np.argsort(recv, kind="stable")
    recs = np.ascontiguousarray(recs[order])
    return Loaded(path, names, header, recs, recv[order].copy())


def _check_records(path: str, hs: int, recs: np.ndarray, names: dict) -> None:
    if not len(recs):
        return
    rs = MARKET_UPDATE.itemsize
    kinds = np.asarray(recs["kind"])
    bad = ~np.isin(kinds, [int(k) for k in Kind])
    if bad.any():
        k = int(np.argmax(bad))
        _fail(path, hs + k * rs + 6, f"corrupt record {k}: kind {int(kinds[k])} is none of "
                                     f"{', '.join(f'{m.name}={int(m)}' for m in Kind)}")
    venues = np.asarray(recs["venue_id"])
    known = [int(v) for v in names.get("venues", {})]
    bad = ~np.isin(venues, known)
    if bad.any():
        k = int(np.argmax(bad))
        _fail(path, hs + k * rs + 4, f"corrupt record {k}: venue id {int(venues[k])} is not "
                                     f"in the recording's names ({sorted(known)})")
    recv = np.asarray(recs["recv_ts_ns"])
    bad = recv <= 0
    if bad.any():
        k = int(np.argmax(bad))
        _fail(path, hs + k * rs + 48, f"corrupt record {k}: recv_ts_ns {int(recv[k])}")


def check_config(loaded: Loaded, cfg: Config) -> list[str]:
    """Problems reading ``loaded`` with ``cfg`` (empty: none): a recorded venue or
    instrument id the config names differently."""
    out = []
    for vid, name in sorted(loaded.names.get("venues", {}).items()):
        mine = cfg.venue_name(int(vid))
        if mine is not None and mine != name:
            out.append(f"venue id {vid} is {name!r} in the recording, {mine!r} in the config")
    for iid, name in sorted(loaded.names.get("instruments", {}).items(), key=lambda x: int(x[0])):
        mine = cfg.instrument_name(int(iid) & CANONICAL_MASK)
        if mine is not None and mine != name:
            out.append(f"instrument id {iid} is {name!r} in the recording, {mine!r} in the "
                       f"config")
    return out
