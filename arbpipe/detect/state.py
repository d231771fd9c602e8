"""The detector's state: the arrays the kernel (``arbpipe.detect.kernel``) reads and writes,
named by the tuple ``DetectorState`` and built from a config by ``new_state``.

Python code reads the fields by name (``state.book_f``); the kernels take the same arrays as
a plain tuple ``S = tuple(state)`` and read field ``book_f`` as ``S[S_BOOK_F]`` (why: next to
the S_* indices below). Every column of every table has a module-level name below too; numba
folds all of them into constants.

Shapes: ``ni`` = instruments + 1 (canonical ids start at 1; row 0 is unused), ``nl`` = legs
(``arbpipe.legs.LegTable``; at most 32, because ``act`` holds a leg set in 32 bits).

    field          shape           dtype  columns / meaning
    -------------  --------------  -----  ------------------------------------------------
    book_f         (ni, nl, 8)     f8     BK_BID, BK_ASK, BK_BID_QTY, BK_ASK_QTY,
                                          BK_FUNDING_RATE (columns 5..7 unused)
    book_i         (ni, nl, 4)     i8     BK_RECV_NS, BK_EXCHANGE_NS, BK_NEXT_FUNDING_NS,
                                          BK_FUNDING_IV_S
    pair_i         (ni, nl, nl, 4) i8     per pair (buy leg, sell leg): PO_OPP_ID (0: not
                                          open), PO_OPENED_NS, PO_PENDING_N, PO_PENDING_SINCE
    pair_f         (ni, nl, nl,    f8     values last published for the pair: PF_BUY_ASK,
                    16)                   PF_SELL_BID, PF_EXEC_QTY, PF_GROSS_BPS, PF_NET_BPS,
                                          PF_FUNDING_DELTA_BPS, PF_CONFIDENCE, PF_VWAP_BUY,
                                          PF_VWAP_SELL, PF_PROFIT, PF_PROFIT_USD,
                                          PF_TOP_GROSS, PF_CARRY_BPS, PF_BUY_LEVELS,
                                          PF_SELL_LEVELS, PF_TOP_OF_BOOK (1.0: a leg had no
                                          book)
    leg_tab        (venues, 2)     i8     leg of (venue id, LEG_SPOT / LEG_PERP); -1: none
    leg_venue      (nl,)           i8     venue id of each leg
    leg_perp       (nl,)           i8     1: the leg is a perp market
    leg_fee_bps    (nl,)           f8     taker fee of each leg
    leg_status     (nl,)           i8     VenueStatus of each leg (in the stats segment)
    leg_funding_s  (nl,)           i8     configured funding interval of each leg, s
    max_exec_qty   (ni,)           f8     per-instrument cap of exec_qty (inf: none)
    size_rule      (ni, nl, 2)     f8     SR_LOT (order size step, 0: none), SR_MIN_NOTIONAL
                                          (0: none) of each (instrument, leg)
    usd_rate       (ni,)           f8     USD per unit of the instrument's quote currency
                                          (NaN: through usd_ref)
    usd_ref        (ni,)           i8     instrument whose mid converts the quote currency
                                          to USD when usd_rate is NaN (0: none: profit_usd NaN)
    leg_depth      (nl,)           i8     [venues.<v>] depth of each leg (0: no L2 book)
    scratch        (16,)           f8     the pair being evaluated, in PF_* columns (copied
                                          to pair_f when published)
    tob            (2, 2)          f8     the one-level ladders (price, size) of a buy leg
                                          (row 0) and a sell leg (row 1) without a book
    fparams        (16,)           f8     P_* float parameters (config ``[detector]``)
    iparams        (8,)            i8     I_* int parameters
    ctr            (N_COUNTERS,)   i8     counters (``shm_layouts.detector_stats`` C_* / F_*)
    inst_status    (ni, nl)        i8     VenueStatus of each (instrument, leg)
    px             (ni, nl, 2)     f8     PX_BID, PX_ASK: a compact copy of the top of book
                                          that the per-quote scan reads
    act            (ni, nl)        i8     active (open or pending) pairs: bit s of
                                          act[i, b] & ACT_LEGS_MASK: pair (b, s); bit b of
                                          act[i, s] >> ACT_AS_SELL_SHIFT: the same pair
    lvl_i          (ni*nl, bw)     i8     the L2 top-N blocks (``shm_layouts.books``), block
    lvl_f          (ni*nl, bw)     f8     i * nl + leg; two views of the same words: the
                                          ``books`` segment's in the detector process, private
                                          ones otherwise (``arbpipe.books.blocks``)

``io`` is a separate small int64 array (the kernel's scratch words, never shared): IO_N
records staged in ``out``, IO_RWAKE / IO_PWAKE (wake the output ring's readers / input ring
r's producer: bit r), IO_READ_NS (CLOCK_REALTIME ns at which the batch being applied was
read) and IO_HIST_FEED / IO_HIST_DETECT (addresses of the hop histograms' words, 0: none; the
``Detector`` keeps those arrays alive and in place while its io is in use).
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from arbpipe.config import Config
from arbpipe.legs import LegTable
from shm_layouts import VenueStatus
from shm_layouts.books import block_words
from shm_layouts.detector_stats import C_NINST, C_NLEGS, N_COUNTERS

MAX_LEGS = 32            # a leg set is one half of an act word

# book_f columns
BK_BID, BK_ASK, BK_BID_QTY, BK_ASK_QTY, BK_FUNDING_RATE = range(5)
BOOK_F_COLS = 8
# book_i columns
BK_RECV_NS, BK_EXCHANGE_NS, BK_NEXT_FUNDING_NS, BK_FUNDING_IV_S = range(4)
BOOK_I_COLS = 4
# pair_i columns
PO_OPP_ID, PO_OPENED_NS, PO_PENDING_N, PO_PENDING_SINCE = range(4)
PAIR_I_COLS = 4
# pair_f columns
(PF_BUY_ASK, PF_SELL_BID, PF_EXEC_QTY, PF_GROSS_BPS, PF_NET_BPS, PF_FUNDING_DELTA_BPS,
 PF_CONFIDENCE, PF_VWAP_BUY, PF_VWAP_SELL, PF_PROFIT, PF_PROFIT_USD, PF_TOP_GROSS, PF_CARRY_BPS,
 PF_BUY_LEVELS, PF_SELL_LEVELS, PF_TOP_OF_BOOK) = range(16)
PAIR_F_COLS = 16
# size_rule columns
SR_LOT, SR_MIN_NOTIONAL = range(2)
# px columns
PX_BID, PX_ASK = range(2)
# leg_tab columns: the venue's spot leg and its perp leg
LEG_SPOT, LEG_PERP = 0, 1
# act words: low half = sell legs of pairs bought on this leg, high half = buy legs of pairs
# sold on this leg
ACT_AS_SELL_SHIFT = MAX_LEGS
ACT_LEGS_MASK = (1 << MAX_LEGS) - 1

# fparams: float parameters
(P_MIN_NET, P_MAX_PLAUS, P_FLOOR, P_MAX_NOTIONAL, P_SLIP_BASE, P_SLIP_DEPTH, P_UPD_THR,
 P_CONF_SPREAD, P_CONF_NOTIONAL, P_CONF_FUND, P_FUND_HORIZON_S) = range(11)
N_FPARAMS = 16
# iparams: int parameters
I_MAX_AGE, I_PERSIST_N, I_PERSIST_NS, I_OPP_BASE, I_DEPTH = range(5)
N_IPARAMS = 8

# io words
IO_N, IO_RWAKE, IO_PWAKE, IO_READ_NS, IO_HIST_FEED, IO_HIST_DETECT = range(6)
IO_WORDS = 8

DetectorState = namedtuple("DetectorState", (
    "book_f", "book_i", "pair_i", "pair_f", "leg_tab", "leg_venue", "leg_perp", "leg_fee_bps",
    "leg_status", "leg_funding_s", "max_exec_qty", "fparams", "iparams", "ctr", "inst_status",
    "px", "act", "lvl_i", "lvl_f", "size_rule", "usd_rate", "usd_ref", "leg_depth", "scratch", "tob"))

# The kernels take the state as a plain tuple (``tuple(state)``) and read a field by its
# index below: numba types a plain tuple argument from a fingerprint, but a named tuple
# through Python-level typeof, ~1 us more per kernel call from Python (~4 ns per update in
# batches of 256). Inside the kernels both cost nothing: the index is a compile-time constant.
(S_BOOK_F, S_BOOK_I, S_PAIR_I, S_PAIR_F, S_LEG_TAB, S_LEG_VENUE, S_LEG_PERP, S_LEG_FEE_BPS,
 S_LEG_STATUS, S_LEG_FUNDING_S, S_MAX_EXEC_QTY, S_FPARAMS, S_IPARAMS, S_CTR, S_INST_STATUS,
 S_PX, S_ACT, S_LVL_I, S_LVL_F, S_SIZE_RULE, S_USD_RATE, S_USD_REF,
 S_LEG_DEPTH, S_SCRATCH, S_TOB) = range(len(DetectorState._fields))
assert DetectorState._fields.index("act") == S_ACT and DetectorState._fields.index("ctr") == S_CTR


# quote currencies worth one USD unless [detector] usd_rates says otherwise
USD_UNITS = ("USD", "USDT", "USDC", "FDUSD", "DAI", "TUSD", "BUSD", "USDE", "PYUSD")


def usd_conversion(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(usd_rate, usd_ref) of every canonical instrument: a configured or USD-unit rate of
    its quote currency, else the instrument "<quote>/<a USD unit>" whose mid converts it."""
    ni = len(cfg.instruments) + 1
    rate = np.full(ni, np.nan)
    ref = np.zeros(ni, np.int64)
    ids = cfg.instrument_ids()
    rates = dict.fromkeys(USD_UNITS, 1.0) | dict(cfg.detector.usd_rates)
    for name, i in ids.items():
        quote = name.split("/")[1]
        if quote in rates:
            rate[i] = rates[quote]
            continue
        for unit in USD_UNITS:
            j = ids.get(f"{quote}/{unit}")
            if j is not None and unit in rates:
                ref[i] = j
                break
    return rate, ref


def size_rules(cfg: Config, legs: LegTable) -> np.ndarray:
    """(ni, legs, 2): lot step and min notional of each (instrument, leg) from
    ``[venues.<v>] lot_size`` / ``min_notional`` (a venue's rules cover both its markets)."""
    ni = len(cfg.instruments) + 1
    out = np.zeros((ni, len(legs), 2), np.float64)
    ids = cfg.instrument_ids()
    venues = cfg.enabled_venues()
    for leg, name in enumerate(legs.names):
        v = venues[name.removesuffix("-perp")] if name not in venues else venues[name]
        for canon, x in v.lot_size.items():
            out[ids[canon], leg, SR_LOT] = x
        for canon, x in v.min_notional.items():
            out[ids[canon], leg, SR_MIN_NOTIONAL] = x
    return out


def new_state(cfg: Config, legs: LegTable, counters: np.ndarray | None = None,
              leg_status: np.ndarray | None = None, opp_id_base: int = 0,
              levels: np.ndarray | None = None) -> DetectorState:
    """Zeroed state for ``cfg``: empty books, every status UP, the counters (and leg status)
    in the given arrays (the stats segment's words) or in private ones; ``levels``: the
    int64 words of the L2 blocks (the ``books`` segment's), private ones when None."""
    d = cfg.detector
    nl = len(legs)
    ni = len(cfg.instruments) + 1
    if nl > MAX_LEGS:
        raise ValueError(f"{nl} legs: the detector supports at most {MAX_LEGS}")
    book_f = np.zeros((ni, nl, BOOK_F_COLS), np.float64)
    book_i = np.zeros((ni, nl, BOOK_I_COLS), np.int64)
    book_i[:, :, BK_FUNDING_IV_S] = legs.funding_interval_s[None, :]
    pair_i = np.zeros((ni, nl, nl, PAIR_I_COLS), np.int64)
    pair_f = np.zeros((ni, nl, nl, PAIR_F_COLS), np.float64)
    max_qty = np.full(ni, np.inf)
    ids = cfg.instrument_ids()
    for name, q in d.max_exec_qty.items():
        max_qty[ids[name]] = q
    fp = np.zeros(N_FPARAMS, np.float64)
    fp[P_MIN_NET] = d.min_net_bps
    fp[P_MAX_PLAUS] = d.max_plausible_spread_bps
    fp[P_FLOOR] = d.confidence_floor
    fp[P_MAX_NOTIONAL] = d.max_notional
    fp[P_SLIP_BASE] = d.slippage_base_bps
    fp[P_SLIP_DEPTH] = d.slippage_depth_bps
    fp[P_UPD_THR] = d.update_threshold_bps
    fp[P_CONF_SPREAD] = d.confidence_spread_bps
    fp[P_CONF_NOTIONAL] = d.confidence_notional
    fp[P_CONF_FUND] = d.confidence_funding_bps
    fp[P_FUND_HORIZON_S] = d.funding_horizon_s
    ip = np.zeros(N_IPARAMS, np.int64)
    ip[I_MAX_AGE] = int(round(d.max_quote_age_ms * 1e6))
    ip[I_PERSIST_N] = d.persist_updates
    ip[I_PERSIST_NS] = int(round(d.persist_ms * 1e6))
    ip[I_OPP_BASE] = opp_id_base
    ctr = counters if counters is not None else np.zeros(N_COUNTERS, np.int64)
    ctr[:] = 0
    ctr[C_NLEGS] = nl
    ctr[C_NINST] = ni - 1
    lstat = leg_status if leg_status is not None else np.zeros(nl, np.int64)
    lstat[:] = int(VenueStatus.UP)
    depth = cfg.book_depth()
    ip[I_DEPTH] = depth
    bw = block_words(max(depth, 1))
    lvl_i = levels.reshape(ni * nl, bw) if levels is not None else \
        np.zeros((ni * nl, bw), np.int64)
    lvl_f = lvl_i.view(np.float64)
    usd_rate, usd_ref = usd_conversion(cfg)
    venues = cfg.enabled_venues()
    leg_depth = np.array([venues[n if n in venues else n.removesuffix("-perp")].depth
                          for n in legs.names], np.int64)
    return DetectorState(
        book_f=book_f, book_i=book_i, pair_i=pair_i, pair_f=pair_f, leg_tab=legs.tab,
        leg_venue=legs.venue, leg_perp=legs.is_perp, leg_fee_bps=legs.taker_fee_bps,
        leg_status=lstat, leg_funding_s=legs.funding_interval_s, max_exec_qty=max_qty,
        fparams=fp, iparams=ip, ctr=ctr, inst_status=np.full((ni, nl), int(VenueStatus.UP),
                                                               np.int64),
        px=np.zeros((ni, nl, 2), np.float64), act=np.zeros((ni, nl), np.int64),
        lvl_i=lvl_i, lvl_f=lvl_f, size_rule=size_rules(cfg, legs), usd_rate=usd_rate,
        usd_ref=usd_ref, leg_depth=leg_depth, scratch=np.zeros(PAIR_F_COLS, np.float64),
        tob=np.zeros((2, 2), np.float64))
