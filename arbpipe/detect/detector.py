"""The detector as a Python object: ``Detector`` holds the state of one config
(``arbpipe.detect.state``) and drives the kernel (``arbpipe.detect.kernel``, whose docstring
states the detection rules) in collect mode (records returned) or ring mode (records
published to a broadcast ring from inside the kernel). The process around it is
``arbpipe.detect.service``; the stats segment ``arbpipe.detect.stats``.
"""
from __future__ import annotations

import time

import numpy as np

from arbpipe.config import CANONICAL_MASK, Config
from arbpipe.detect import kernel as KN
from arbpipe.detect.state import (
    BK_ASK, BK_ASK_QTY, BK_BID, BK_BID_QTY, BK_EXCHANGE_NS, BK_FUNDING_IV_S, BK_FUNDING_RATE,
    BK_NEXT_FUNDING_NS, BK_RECV_NS, IO_HIST_DETECT, IO_HIST_FEED, IO_N, IO_RWAKE, IO_WORDS,
    PO_OPP_ID, new_state)
from arbpipe.detect.stats import counters_dict
from arbpipe.legs import LegTable
from arbpipe.transport import histogram as H
from shm_layouts import OPPORTUNITY
from shm_layouts.records import OPP_ID_RUN_SHIFT
from shm_layouts import words as W


class Detector:
    """Detection state for one config. ``process`` (collect mode) returns the Opportunity
    records an array of MarketUpdates produced; ``attach_output(ring)`` switches to ring
    mode (records go straight into a BroadcastRing's words inside the kernel).
    ``state`` names the arrays (``arbpipe.detect.state.DetectorState``); ``S`` is the same
    arrays as the plain tuple the kernels take.
    ``hist_feed`` / ``hist_detect``: histogram words (``arbpipe.transport.histogram``) of the
    feed_to_detector and detect hops (``arbpipe.detect.hops``); private zeroed ones when
    None."""

    def __init__(self, cfg: Config, counters: np.ndarray | None = None,
                 leg_status: np.ndarray | None = None, opp_id_base: int = 0,
                 out_records: int | None = None, hist_feed: np.ndarray | None = None,
                 hist_detect: np.ndarray | None = None, levels: np.ndarray | None = None):
        self.cfg = cfg
        self.legs: LegTable = cfg.legs()
        nl = len(self.legs)
        ni = len(cfg.instruments) + 1
        self.n_legs, self.n_instruments = nl, ni - 1
        self.state = new_state(cfg, self.legs, counters, leg_status, opp_id_base, levels)
        self.S = tuple(self.state)      # what the kernels take (arbpipe.detect.state, S_*)
        self.counters = self.state.ctr
        self.leg_status = self.state.leg_status
        self.hist_feed = H.empty() if hist_feed is None else hist_feed
        self.hist_detect = H.empty() if hist_detect is None else hist_detect
        for h in (self.hist_feed, self.hist_detect):   # the kernels write them by address
            if h.dtype != np.int64 or not h.flags.c_contiguous or len(h) < H.W_DATA + H.NB:
                raise ValueError("a hop histogram must be the int64 words of a histogram")
        # collect mode: out must hold any single update's worst case (a status closing
        # every open opportunity) plus one quote's
        worst = (ni - 1) * nl * nl + 2 * nl
        self.out = np.zeros(W.OP_WORDS * max(out_records or 0, worst, 1024), np.int64)
        self.io = np.zeros(IO_WORDS, np.int64)
        self.io[IO_HIST_FEED] = self.hist_feed.ctypes.data
        self.io[IO_HIST_DETECT] = self.hist_detect.ctypes.data
        self.ow = np.zeros(0, np.int64)

    # -- ring mode ----------------------------------------------------------------
    def attach_output(self, ring, staging_records: int = 256) -> None:
        """Publish straight into ``ring`` (a BroadcastRing of Opportunity) from the kernel."""
        self.ring = ring
        self.ow = ring.w
        self.out = np.zeros(W.OP_WORDS * staging_records, np.int64)

    def _take(self) -> np.ndarray:
        n = int(self.io[IO_N])
        self.io[IO_N] = 0
        return self.out[:n * W.OP_WORDS].copy().view(OPPORTUNITY)

    # -- collect mode -------------------------------------------------------------
    def process(self, updates) -> np.ndarray:
        """Apply MarketUpdates (structured array or flat int64 words); return the
        Opportunity records produced (empty in ring mode)."""
        words = updates if (isinstance(updates, np.ndarray) and updates.dtype == np.int64) \
            else np.ascontiguousarray(updates).reshape(-1).view(np.int64)
        n = len(words) // W.MU_WORDS
        parts = []
        done = 0
        while done < n:
            k = KN.process_words(self.S, words[done * W.MU_WORDS:], n - done, self.out,
                                 self.ow, self.io)
            done += k
            if self.ow.shape[0] == 0:
                parts.append(self._take())
            elif k == 0:
                break
        self._wake()
        if not parts:
            return np.zeros(0, OPPORTUNITY)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def sweep(self, now_ns: int | None = None) -> np.ndarray:
        now = time.time_ns() if now_ns is None else int(now_ns)
        KN.sweep(self.S, self.out, self.ow, self.io, now)
        self._wake()
        return self._take() if self.ow.shape[0] == 0 else np.zeros(0, OPPORTUNITY)

    def close_all(self, reason: int = KN.R_SHUTDOWN, trig_ns: int | None = None) -> np.ndarray:
        trig = time.time_ns() if trig_ns is None else int(trig_ns)
        KN.close_all(self.S, self.out, self.ow, self.io, int(reason), trig)
        self._wake()
        return self._take() if self.ow.shape[0] == 0 else np.zeros(0, OPPORTUNITY)

    def _wake(self) -> None:
        if self.io[IO_RWAKE]:
            self.io[IO_RWAKE] = 0
            wake_readers(self.ring)

    # -- views ----------------------------------------------------------------------
    def stats(self) -> dict:
        return counters_dict(self.counters, self.leg_status, self.legs.names)

    def open_opportunities(self) -> list[tuple[int, int, int, int]]:
        """(instrument, buy leg, sell leg, opp_id) of every open opportunity."""
        po = self.state.pair_i
        idx = np.argwhere(po[:, :, :, PO_OPP_ID] != 0)
        return [(int(i), int(b), int(s), int(po[i, b, s, PO_OPP_ID])) for i, b, s in idx]

    def book(self, instrument_id: int, leg: int) -> dict:
        bkf, bki = self.state.book_f, self.state.book_i
        i = instrument_id & CANONICAL_MASK
        return {"bid": bkf[i, leg, BK_BID], "ask": bkf[i, leg, BK_ASK],
                "bid_qty": bkf[i, leg, BK_BID_QTY], "ask_qty": bkf[i, leg, BK_ASK_QTY],
                "funding_rate": bkf[i, leg, BK_FUNDING_RATE],
                "recv_ts_ns": int(bki[i, leg, BK_RECV_NS]),
                "exchange_ts_ns": int(bki[i, leg, BK_EXCHANGE_NS]),
                "next_funding_ns": int(bki[i, leg, BK_NEXT_FUNDING_NS]),
                "funding_interval_s": int(bki[i, leg, BK_FUNDING_IV_S])}


def wake_readers(ring) -> None:
    """Post the doorbell of every sleeping reader of a BroadcastRing."""
    ring.wake_readers()


def wake_producer(ring) -> None:
    """Post a BLOCK-policy SPSC ring's producer doorbell if the producer sleeps."""
    ring.wake_producer()


def decode(words: np.ndarray) -> np.ndarray:
    """Opportunity records from flat int64 words."""
    return np.ascontiguousarray(words).view(OPPORTUNITY)


def opp_id_base_now() -> int:
    """A base for opp ids unique across detector restarts: the start second in the run bits."""
    return (time.time_ns() // 1_000_000_000) << OPP_ID_RUN_SHIFT
