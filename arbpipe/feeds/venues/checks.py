"""The checks every venue adapter applies before it publishes an update, and the limits
they use, in one place. Each returns the reject reason token (docs/venues.md, "Common to
every venue") or None / a bool; the adapter counts the token with ``sink.reject`` and decides
the order in which it checks (that order picks the token when a frame has several faults).

Limits come from the MarketUpdate record (``shm_layouts.records``): timestamps are ns in an
i8 (a ms timestamp fits when ``0 <= ms <= MAX_MS``), the funding interval a u4
(``0 < seconds < U4_END``), the mark price an f4 (``F4_MAX``). Those range tests are written
out where they are used, against these names: on the per-frame path a call costs more than
the test.
"""
from __future__ import annotations

import math

import numpy as np

from shm_layouts.records import MARKET_UPDATE, MARKET_UPDATE_FUNDING

INF = math.inf
MS = 1_000_000                      # ns per ms: venues send ms, records hold ns
I8_END = int(np.iinfo(MARKET_UPDATE.fields["exchange_ts_ns"][0]).max) + 1   # 2**63
MAX_MS = (I8_END - 1) // MS         # largest ms timestamp whose ns value fits the i8
U4_END = int(np.iinfo(MARKET_UPDATE_FUNDING.fields["funding_interval_s"][0]).max) + 1  # 2**32
F4_MAX = 3.0e38                     # mark prices stay below this (an f4 holds up to 3.4e38)


def book_reject(bid: float, ask: float, bid_qty: float, ask_qty: float) -> str | None:
    """Why a best bid/ask cannot be published, or None: ``bad_price`` unless both prices
    are finite and > 0 and both sizes finite and >= 0 (NaN fails), ``crossed`` when
    bid > ask. Coinbase applies the same bounds to each level of its book, inline (a call
    per level would cost more than the test)."""
    if 0.0 < bid <= ask < INF and 0.0 <= bid_qty < INF and 0.0 <= ask_qty < INF:
        return None                     # the usual case, in the fewest comparisons
    if not (0.0 < bid < INF and 0.0 < ask < INF and 0.0 <= bid_qty < INF
            and 0.0 <= ask_qty < INF):
        return "bad_price"
    return "crossed"


def funding_ok(rate: float, mark: float, mark_required: bool = False) -> bool:
    """Funding rate finite, mark price in [0, ``F4_MAX``) and > 0 when ``mark_required``
    (else ``bad_price``); 0 stands for "no mark price"."""
    return -INF < rate < INF and (0.0 < mark if mark_required else 0.0 <= mark) and mark < F4_MAX


# Sequence: an update is accepted only when its key (update id, sequence number, time, or
# a tuple of them) is greater than the last accepted one's, ``NO_SEQ`` / ``NO_KEY`` before
# the first. The test is the one comparison ``if seq <= last: sink.reject(stale_reason(...))``
# at the call site, on the per-frame path.
NO_SEQ = -INF                       # the last number before any: every int is newer
NO_KEY = ()                         # the same for tuple keys: every non-empty tuple is newer


def stale_reason(seq, last) -> str:
    """The token for an update that is not newer than the last accepted one
    (``seq <= last``): ``duplicate`` when equal, ``out_of_order`` when older."""
    return "duplicate" if seq == last else "out_of_order"
