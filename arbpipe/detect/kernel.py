"""Cross-venue arbitrage detection: the numba kernel over the books of every (instrument, leg).

The state it works on is ``arbpipe.detect.state.DetectorState`` as a plain tuple, read by
the field indices ``S_*`` (every table and column is named there); records are read and
written as int64 words through ``shm_layouts.words`` and the inline accessors of
``arbpipe.transport.words``; counters are the words of the stats segment
(``shm_layouts.detector_stats``); hop histograms are ``arbpipe.detect.hops``. The Python side
is ``arbpipe.detect.detector.Detector``, the process loop ``arbpipe.detect.service``.

Legs
----
A *leg* is one market of one venue (``arbpipe.legs.LegTable``): OKX spot and OKX SWAP
are two legs of venue 5. An update's leg is ``leg_tab[venue_id, instrument_id has
PERP_ID_BIT]``; its canonical instrument is ``instrument_id & CANONICAL_MASK``. Updates
whose leg or instrument is unknown are counted (``filter_unknown``) and ignored.

Book (per canonical instrument i, leg l)
----------------------------------------
bid, ask, bid_qty, ask_qty (a leg "has a quote" when ask > 0), exchange ts, recv ts,
funding rate, next funding time, funding interval (s). Per leg: venue status (starts UP).
The L2 top N of (i, l) is its block in ``lvl_i`` / ``lvl_f`` (``arbpipe.books.blocks``):
LEVEL records are applied there; a leg "has a book" when its venue's depth > 0 and its
block is READY with levels on the side a pair needs.

Rules, per MarketUpdate (units: prices in quote ccy, qty in base units, ts in ns)
------------------------------------------------------------------------------------
QUOTE on (i, k):
  * invalid (not finite, bid <= 0, bid >= ask, a qty <= 0): ``filter_invalid`` += 1, the
    leg's quote is cleared, every open opportunity of (i, k) closes QUOTE_STALE.
  * otherwise the quote is stored and, for every other leg j in leg order, the pair
    (buy k, sell j) then (buy j, sell k) is evaluated with t = the update's recv ts (only
    pairs with a positive top gross or already open / pending: the others cannot change):
      1. a leg without a quote                   -> not a candidate (open: QUOTE_STALE)
      2. sell_bid <= buy_ask (gross <= 0)         -> not a candidate (open: SPREAD_GONE)
      -- a candidate from here on (``evaluations`` += 1); each failing check counts once:
      3. a status (venue or instrument) != UP    -> filter_status     (open: VENUE_DOWN)
      4. t - recv_ts > max_quote_age on either leg -> filter_stale      (open: QUOTE_STALE)
      5. gross_bps > max_plausible_spread_bps     -> filter_implausible (open: QUOTE_STALE)
      6. sizing (below): no size with net_bps >= min_net_bps (1e-9 bps of rounding
         allowed only where the size was solved for net = min_net)
                                                  -> filter_below_net  (open: SPREAD_GONE)
      6b. the size is 0 after the lot step, or a leg's notional is under its
         min_notional                             -> filter_size       (open: SPREAD_GONE)
      7. confidence < confidence_floor            -> filter_confidence (open: SPREAD_GONE)
      8. qualifies: open -> UPDATE if |net - last published net| > update_threshold_bps;
         not open -> pending count += 1 (pending since t at the first one); OPEN when
         count >= persist_updates (if > 1) and t - since >= persist_ms (if > 0), else
         ``filter_persist`` += 1. Any failing check resets the pending state.
LEVEL on (i, k): applied to the block; after a message's BOOK_END record, when the book's
  top equals the stored quote (the message changed deeper levels only: a change of the top
  is followed by its QUOTE, which evaluates), the leg's recv ts is t and its pairs are
  evaluated as for a QUOTE.
FUNDING on (i, k): rate, next time, interval (0 -> the leg's configured interval) stored;
  no evaluation (funding feeds funding_delta, confidence and, with
  ``funding_horizon_s`` > 0, the carry in net).
STATUS with instrument_id 0 is about venue v (all its legs): status stored; STALE closes
  every open opportunity with a leg of v (QUOTE_STALE), DISCONNECTED closes them
  (VENUE_DOWN), clears v's quotes and resets its per-instrument statuses to UP.
STATUS with an instrument id is about that (instrument, leg) only (the feed's silent-symbol
  watchdog): same closes and clearing, for pairs with that (instrument, leg). A valid
  QUOTE of (i, k) sets its per-instrument status back to UP. Check 3 requires the venue
  status of both legs and the per-instrument status of both (i, leg) to be UP.
Sweep (housekeeping, ``now``): an open opportunity with a leg quote older than
  max_quote_age closes QUOTE_STALE (trigger_recv_ns = that older recv ts).
Shutdown: every open opportunity closes SHUTDOWN.

Formulas
--------
  top_gross_bps = (sell_bid - buy_ask) / ((buy_ask + sell_bid) / 2) * 1e4  (check 5)
  ladders    = the buy leg's asks and the sell leg's bids from their L2 blocks; a leg
               without a book contributes its top level alone (flag OPP_TOP_OF_BOOK)
  exec_qty q = ``arbpipe.detect.walk.choose_size`` over the two ladders (the size that
               maximises profit, net >= min_net_bps at that size, buy notional <=
               max_notional, q <= max_exec_qty[instrument]), then rounded down to the
               coarser lot step of the two legs ([venues.<v>] lot_size)
  BN, SN     = buy / sell notional of filling q level by level (``side_fill``); the levels
               consumed on each side are published; MN = (BN + SN) / 2
  vwap_buy   = BN / q, vwap_sell = SN / q;  gross_bps = (SN - BN) / MN * 1e4
  fees       = taker_fee[buy] * BN + taker_fee[sell] * SN   (fees as fractions)
  slippage   = slippage_base_bps * MN (an allowance for the market moving during the
               order's latency) + only with OPP_TOP_OF_BOOK: slippage_depth_bps * MN * q /
               (smallest top qty among the legs without a book), today's top-of-book model
  carry      = funding_horizon_s * (rate[sell] / interval[sell] * SN
               - rate[buy] / interval[buy] * BN), perp legs only (0 with horizon 0)
  profit     = (SN - BN) - fees - slippage + carry      (quote currency)
  net_bps    = profit / MN * 1e4;  carry_bps = carry / MN * 1e4
  profit_usd = profit * USD rate of the quote currency (``usd_rate``, or the mid of the
               ``usd_ref`` instrument's first quoted leg; NaN when neither exists)
  funding(l) = rate * (28800 / interval_s) * 1e4 for a perp leg (bps per 8 h), 0 for spot
  funding_delta_bps = funding(sell) - funding(buy)   (> 0: the hedge earns funding)
  confidence = 50 * clamp01(net_bps / confidence_spread_bps)
             + 30 * clamp01(BN / confidence_notional)
             + 20 * clamp01(0.5 + funding_delta_bps / (2 * confidence_funding_bps))
  (spread, depth, funding components; neutral funding gives 10 of the 20)

Output records (``shm_layouts.OPPORTUNITY``): OPEN and UPDATE carry the values just
computed; CLOSED carries the values last published for that opportunity, with its own
trigger_recv_ns / detect_ns. ``opp_id`` = opp_id_base + n (n = 1, 2, ...); ``seq`` counts
records; ``flags`` carries ``OPP_BUY_PERP`` and ``OPP_SELL_PERP`` (``shm_layouts.records``)
so readers can tell OKX spot from OKX SWAP (same venue id).

Counters ``latency_sum_ns`` / ``latency_max_ns``: detect_ns - trigger_recv_ns of OPEN and
UPDATE records (feed receive -> opportunity published, both CLOCK_REALTIME).

Modes: in collect mode (``ow`` empty) records are staged in ``out`` for the caller; in ring
mode ``out`` is a staging buffer flushed into the broadcast ring's words ``ow``.
"""
from __future__ import annotations

import math

from numba import njit

from arbpipe.clock import realtime_ns
from arbpipe.config import CANONICAL_MASK, PERP_ID_BIT
from arbpipe.transport.casts import as_f64, f32_bits, f64_bits
from arbpipe.detect.hops import hist_at, hist_record, io_hist_addr
from arbpipe.books.blocks import on_book_resync, on_level
from arbpipe.detect.walk import choose_size_at, round_to_lot, side_fill_at
from arbpipe.detect.state import (
    ACT_AS_SELL_SHIFT, ACT_LEGS_MASK, BK_ASK, BK_ASK_QTY, BK_BID, BK_BID_QTY, BK_EXCHANGE_NS,
    BK_FUNDING_IV_S, BK_FUNDING_RATE, BK_NEXT_FUNDING_NS, BK_RECV_NS, I_DEPTH, I_MAX_AGE,
    I_OPP_BASE,
    I_PERSIST_N, I_PERSIST_NS, IO_HIST_DETECT, IO_N, IO_READ_NS, IO_RWAKE, LEG_PERP, LEG_SPOT,
    P_CONF_FUND, P_CONF_NOTIONAL, P_CONF_SPREAD, P_FLOOR, P_FUND_HORIZON_S, P_MAX_NOTIONAL,
    P_MAX_PLAUS, P_MIN_NET, P_SLIP_BASE, P_SLIP_DEPTH, P_UPD_THR, PF_BUY_ASK, PF_BUY_LEVELS,
    PF_CARRY_BPS, PF_CONFIDENCE, PF_EXEC_QTY, PF_FUNDING_DELTA_BPS, PF_GROSS_BPS, PF_NET_BPS,
    PF_PROFIT, PF_PROFIT_USD, PF_SELL_BID, PF_SELL_LEVELS, PF_TOP_GROSS, PF_TOP_OF_BOOK,
    PF_VWAP_BUY, PF_VWAP_SELL, PO_OPENED_NS, PO_OPP_ID, SR_LOT, SR_MIN_NOTIONAL,
    PO_PENDING_N, PO_PENDING_SINCE, PX_ASK, PX_BID, S_ACT, S_BOOK_F, S_BOOK_I, S_CTR,
    S_FPARAMS, S_INST_STATUS, S_IPARAMS, S_LEG_FEE_BPS, S_LEG_FUNDING_S, S_LEG_PERP,
    S_LEG_DEPTH, S_LEG_STATUS, S_LEG_TAB, S_LEG_VENUE, S_LVL_F, S_LVL_I, S_MAX_EXEC_QTY,
    S_PAIR_F, S_PAIR_I, S_PX, S_SCRATCH, S_SIZE_RULE, S_TOB, S_USD_RATE, S_USD_REF)
from arbpipe.transport import kernels as K
from arbpipe.transport import words as TW
from shm_layouts import CloseReason, Kind, OppState, VenueStatus
from shm_layouts import words as W
from shm_layouts.detector_stats import (
    C_CALLS, C_CL_DOWN, C_CL_GONE, C_CL_SHUT, C_CL_STALE, C_CLOSED, C_DROPPED, C_EVALS,
    C_FUNDING, C_LAST_DETECT, C_LAST_TRIG, C_LAT_MAX, C_LAT_SUM, C_OPEN_NOW, C_OPENED, C_OPP_N,
    C_PUBLISHED, C_QUOTES, C_SEQ, C_STATUS, C_SWEEPS, C_UPDATED, C_UPDATES, C_WALK_LEVELS,
    C_WALKS, C_WALKS_TOB, F_BELOW, F_CONF, F_IMPLAUSIBLE, F_INVALID, F_PERSIST, F_SIZE,
    F_STALE, F_STATUS, F_UNKNOWN)
from shm_layouts.books import B_LEVELS, B_N_ASK, B_N_BID, B_STATE, BookState
from shm_layouts.records import (OPP_BUY_PERP, OPP_SELL_PERP, OPP_TOP_OF_BOOK,
                                 STATUS_FAULT_SHIFT, STATUS_REASON_MASK, Flag, StatusReason)

_KW = dict(cache=True, nogil=True, boundscheck=False)

# funding rates are normalised to bps per 8 hours
FUNDING_NORM_S = 28800.0
BPS = 1e4

_QUOTE, _FUNDING, _STATUS = int(Kind.QUOTE), int(Kind.FUNDING), int(Kind.STATUS)
_LEVEL = int(Kind.LEVEL)
_BOOK_RESYNC, _REASON_MASK = int(StatusReason.BOOK_RESYNC), STATUS_REASON_MASK
_FAULT_SHIFT = STATUS_FAULT_SHIFT
_UP, _DISC = int(VenueStatus.UP), int(VenueStatus.DISCONNECTED)
_OPEN, _UPDATE, _CLOSED = int(OppState.OPEN), int(OppState.UPDATE), int(OppState.CLOSED)
_R_GONE, _R_STALE = int(CloseReason.SPREAD_GONE), int(CloseReason.QUOTE_STALE)
_R_DOWN = int(CloseReason.VENUE_DOWN)
R_SHUTDOWN = int(CloseReason.SHUTDOWN)
_INF = math.inf
_NAN = math.nan
_END = int(Flag.BOOK_END)
_BOOK_READY = int(BookState.READY)
# net_bps may come out this far under min_net_bps where the size was solved for min_net
NET_EPS_BPS = 1e-9


@njit(inline="always", **_KW)
def _clamp01(x):
    if x < 0.0:
        return 0.0
    if x > 1.0:
        return 1.0
    return x


@njit(inline="always", **_KW)
def _leg_col(iid):
    """The leg_tab column of an instrument id: its venue's perp leg or its spot leg."""
    return LEG_PERP if (iid & PERP_ID_BIT) != 0 else LEG_SPOT


@njit(inline="always", **_KW)
def _act_set(act, i, b, s):
    """Mark pair (b, s) of instrument i active (open or pending): bit s of act[i, b]'s low
    half, bit b of act[i, s]'s high half, so a quote on leg k finds its active pairs in one
    word."""
    act[i, b] |= 1 << s
    act[i, s] |= 1 << (ACT_AS_SELL_SHIFT + b)


@njit(inline="always", **_KW)
def _act_clr(act, i, b, s):
    act[i, b] &= ~(1 << s)
    act[i, s] &= ~(1 << (ACT_AS_SELL_SHIFT + b))


@njit(inline="always", **_KW)
def _set_quote(S, i, k, bid, ask, bq, aq):
    bkf, px = S[S_BOOK_F], S[S_PX]
    bkf[i, k, BK_BID] = bid
    bkf[i, k, BK_ASK] = ask
    bkf[i, k, BK_BID_QTY] = bq
    bkf[i, k, BK_ASK_QTY] = aq
    px[i, k, PX_BID] = bid
    px[i, k, PX_ASK] = ask


@njit(**_KW)
def flush(out, ow, io, ctr):
    """Ring mode: publish the records staged in ``out`` to the broadcast ring ``ow``."""
    n = io[IO_N]
    if n > 0 and ow.shape[0] > 0:
        r = K.bcast_push(ow, out, n)
        if (r >> K.WAKE_SHIFT) != 0:
            io[IO_RWAKE] = 1
        io[IO_N] = 0


@njit(**_KW)
def _emit(S, out, ow, io, i, b, s, state, reason, trig):
    """Write one Opportunity from the pair's published values (pair_f) and ids (pair_i)."""
    po, pf, lven, lperp, ctr = S[S_PAIR_I], S[S_PAIR_F], S[S_LEG_VENUE], S[S_LEG_PERP], S[S_CTR]
    cap = out.shape[0] // W.OP_WORDS
    if io[IO_N] >= cap:
        if ow.shape[0] > 0:
            flush(out, ow, io, ctr)
        else:
            ctr[C_DROPPED] += 1
            return
    now = realtime_ns()
    if state == _OPEN:
        po[i, b, s, PO_OPENED_NS] = now
    seq = ctr[C_SEQ] + 1
    ctr[C_SEQ] = seq
    o = io[IO_N] * W.OP_WORDS
    flags = 0
    if lperp[b] != 0:
        flags |= OPP_BUY_PERP
    if lperp[s] != 0:
        flags |= OPP_SELL_PERP
    if pf[i, b, s, PF_TOP_OF_BOOK] != 0.0:
        flags |= OPP_TOP_OF_BOOK
    out[o + W.OP_HEAD] = TW.op_head(i, lven[b], lven[s])
    out[o + W.OP_STATE_WORD] = TW.op_state_word(state, reason, flags,
                                                f32_bits(pf[i, b, s, PF_CONFIDENCE]))
    out[o + W.OP_BUY_ASK] = f64_bits(pf[i, b, s, PF_BUY_ASK])
    out[o + W.OP_SELL_BID] = f64_bits(pf[i, b, s, PF_SELL_BID])
    out[o + W.OP_EXEC_QTY] = f64_bits(pf[i, b, s, PF_EXEC_QTY])
    out[o + W.OP_GROSS_BPS] = f64_bits(pf[i, b, s, PF_GROSS_BPS])
    out[o + W.OP_NET_BPS] = f64_bits(pf[i, b, s, PF_NET_BPS])
    out[o + W.OP_FUNDING_DELTA] = f64_bits(pf[i, b, s, PF_FUNDING_DELTA_BPS])
    out[o + W.OP_TRIGGER_RECV] = trig
    out[o + W.OP_DETECT_NS] = now
    out[o + W.OP_ID] = po[i, b, s, PO_OPP_ID]
    out[o + W.OP_SEQ] = seq
    out[o + W.OP_OPENED_NS] = po[i, b, s, PO_OPENED_NS]
    out[o + W.OP_VWAP_BUY] = f64_bits(pf[i, b, s, PF_VWAP_BUY])
    out[o + W.OP_VWAP_SELL] = f64_bits(pf[i, b, s, PF_VWAP_SELL])
    out[o + W.OP_PROFIT] = f64_bits(pf[i, b, s, PF_PROFIT])
    out[o + W.OP_PROFIT_USD] = f64_bits(pf[i, b, s, PF_PROFIT_USD])
    out[o + W.OP_TOP_GROSS] = f64_bits(pf[i, b, s, PF_TOP_GROSS])
    out[o + W.OP_CARRY] = f64_bits(pf[i, b, s, PF_CARRY_BPS])
    out[o + W.OP_LEVELS] = TW.op_levels(int(pf[i, b, s, PF_BUY_LEVELS]),
                                        int(pf[i, b, s, PF_SELL_LEVELS]))
    for x in range(W.OP_RESERVED, W.OP_WORDS):
        out[o + x] = 0
    io[IO_N] += 1
    ctr[C_PUBLISHED] += 1
    ctr[C_LAST_DETECT] = now
    if state != _CLOSED:
        hd = io_hist_addr(io, IO_HIST_DETECT)
        if hd != 0:
            hist_record(hist_at(hd), now - io[IO_READ_NS])
        lat = now - trig
        if lat >= 0:
            ctr[C_LAT_SUM] += lat
            if lat > ctr[C_LAT_MAX]:
                ctr[C_LAT_MAX] = lat


@njit(**_KW)
def _close(S, out, ow, io, i, b, s, reason, trig):
    po, ctr = S[S_PAIR_I], S[S_CTR]
    _emit(S, out, ow, io, i, b, s, _CLOSED, reason, trig)
    _act_clr(S[S_ACT], i, b, s)
    po[i, b, s, PO_OPP_ID] = 0
    po[i, b, s, PO_OPENED_NS] = 0
    po[i, b, s, PO_PENDING_N] = 0
    po[i, b, s, PO_PENDING_SINCE] = 0
    ctr[C_CLOSED] += 1
    ctr[C_OPEN_NOW] -= 1
    if reason == _R_GONE:
        ctr[C_CL_GONE] += 1
    elif reason == _R_STALE:
        ctr[C_CL_STALE] += 1
    elif reason == _R_DOWN:
        ctr[C_CL_DOWN] += 1
    else:
        ctr[C_CL_SHUT] += 1


@njit(inline="always", **_KW)
def _drop(S, out, ow, io, i, b, s, reason, trig):
    """The pair does not qualify: reset pending, close if open."""
    po = S[S_PAIR_I]
    if po[i, b, s, PO_PENDING_N] != 0:
        po[i, b, s, PO_PENDING_N] = 0
        _act_clr(S[S_ACT], i, b, s)
    if po[i, b, s, PO_OPP_ID] != 0:
        _close(S, out, ow, io, i, b, s, reason, trig)


@njit(inline="always", **_KW)
def _funding_bps(S, i, leg):
    if S[S_LEG_PERP][leg] == 0:
        return 0.0
    iv = S[S_BOOK_I][i, leg, BK_FUNDING_IV_S]
    if iv <= 0:
        return 0.0
    return S[S_BOOK_F][i, leg, BK_FUNDING_RATE] * (FUNDING_NORM_S / iv) * BPS


@njit(inline="always", **_KW)
def _carry_rate(bkf, bki, lperp, i, leg, h):
    """Funding over ``h`` seconds per unit of a perp leg's notional (a fraction; 0 for spot
    or with h = 0): what a long position pays, a short one receives, when > 0."""
    if h <= 0.0 or lperp[leg] == 0:
        return 0.0
    iv = bki[i, leg, BK_FUNDING_IV_S]
    if iv <= 0:
        return 0.0
    return bkf[i, leg, BK_FUNDING_RATE] * (h / iv)


@njit(inline="always", **_KW)
def _usd_rate(S, i):
    """USD per unit of instrument i's quote currency (NaN: unknown)."""
    r = S[S_USD_RATE][i]
    if r == r:
        return r
    j = S[S_USD_REF][i]
    if j <= 0:
        return _NAN
    bkf = S[S_BOOK_F]
    for leg in range(bkf.shape[1]):
        if bkf[j, leg, BK_BID] > 0.0 and bkf[j, leg, BK_ASK] > 0.0:
            return (bkf[j, leg, BK_BID] + bkf[j, leg, BK_ASK]) * 0.5
    return _NAN


@njit(inline="always", **_KW)
def _size(S, i, b, s, vals):
    """Size pair (buy b, sell s) of instrument i on its ladders (the formulas above) into
    ``vals`` (PF_* columns); -> the filter counter that refuses it, or -1.

    Ladders are passed as (2-D array, row, column offset) of the L2 blocks, or of the
    two-row ``tob`` scratch for a leg without a book, never as slices: every array taken
    out of the state or sliced costs reference-count updates (~10 ns each), which at ~25
    per evaluation was most of its cost."""
    bkf, bki, lvl_i, lvl_f = S[S_BOOK_F], S[S_BOOK_I], S[S_LVL_I], S[S_LVL_F]
    lfee, lperp, ldepth, fp = S[S_LEG_FEE_BPS], S[S_LEG_PERP], S[S_LEG_DEPTH], S[S_FPARAMS]
    ctr, sr, tob_l = S[S_CTR], S[S_SIZE_RULE], S[S_TOB]
    nl = lfee.shape[0]
    n = S[S_IPARAMS][I_DEPTH]
    fb = lfee[b] / BPS
    fs = lfee[s] / BPS
    sl = fp[P_SLIP_BASE] / BPS
    h = fp[P_FUND_HORIZON_S]
    cb = _carry_rate(bkf, bki, lperp, i, b, h)
    cs = _carry_rate(bkf, bki, lperp, i, s, h)
    kb = 1.0 + fb + 0.5 * sl + cb
    ks = 1.0 - fs - 0.5 * sl + cs
    rb = i * nl + b
    rs = i * nl + s
    book_b = (n > 0 and ldepth[b] > 0 and lvl_i[rb, B_STATE] == _BOOK_READY
              and lvl_i[rb, B_N_ASK] > 0)
    book_s = (n > 0 and ldepth[s] > 0 and lvl_i[rs, B_STATE] == _BOOK_READY
              and lvl_i[rs, B_N_BID] > 0)
    if book_b:
        la, ra, oa, na = lvl_f, rb, B_LEVELS + 2 * n, lvl_i[rb, B_N_ASK]
    else:
        tob_l[0, 0] = bkf[i, b, BK_ASK]
        tob_l[0, 1] = bkf[i, b, BK_ASK_QTY]
        la, ra, oa, na = tob_l, 0, 0, 1
    if book_s:
        lb, rbid, ob, nb = lvl_f, rs, B_LEVELS, lvl_i[rs, B_N_BID]
    else:
        tob_l[1, 0] = bkf[i, s, BK_BID]
        tob_l[1, 1] = bkf[i, s, BK_BID_QTY]
        lb, rbid, ob, nb = tob_l, 1, 0, 1
    na_q = n if book_b else 1          # column distance from a price to its size
    nb_q = n if book_s else 1
    tob = not (book_b and book_s)
    if tob:
        ctr[C_WALKS_TOB] += 1
    else:
        ctr[C_WALKS] += 1
    q, solved = choose_size_at(la, ra, oa, oa + na_q, na, lb, rbid, ob, ob + nb_q, nb, kb, ks,
                               fp[P_MIN_NET] / BPS, S[S_MAX_EXEC_QTY][i], fp[P_MAX_NOTIONAL])
    if q <= 0.0:
        return F_BELOW
    lot = sr[i, b, SR_LOT] if sr[i, b, SR_LOT] > sr[i, s, SR_LOT] else sr[i, s, SR_LOT]
    q = round_to_lot(q, lot)
    if q <= 0.0:
        return F_SIZE
    bn, lb_used = side_fill_at(la, ra, oa, oa + na_q, na, q)
    sn, ls_used = side_fill_at(lb, rbid, ob, ob + nb_q, nb, q)
    ctr[C_WALK_LEVELS] += lb_used + ls_used
    if bn < sr[i, b, SR_MIN_NOTIONAL] or sn < sr[i, s, SR_MIN_NOTIONAL]:
        return F_SIZE
    mn = 0.5 * (bn + sn)
    fees = fb * bn + fs * sn
    slip = sl * mn
    if tob and fp[P_SLIP_DEPTH] != 0.0:
        top = _INF
        if not book_b:
            top = tob_l[0, 1]
        if not book_s and tob_l[1, 1] < top:
            top = tob_l[1, 1]
        slip += fp[P_SLIP_DEPTH] / BPS * mn * (q / top)
    carry = cs * sn - cb * bn
    profit = (sn - bn) - fees - slip + carry
    net = profit / mn * BPS
    if net < fp[P_MIN_NET] and not (solved and net >= fp[P_MIN_NET] - NET_EPS_BPS):
        return F_BELOW
    vals[PF_EXEC_QTY] = q
    vals[PF_VWAP_BUY] = bn / q
    vals[PF_VWAP_SELL] = sn / q
    vals[PF_GROSS_BPS] = (sn - bn) / mn * BPS
    vals[PF_NET_BPS] = net
    vals[PF_PROFIT] = profit
    vals[PF_PROFIT_USD] = profit * _usd_rate(S, i)
    vals[PF_CARRY_BPS] = carry / mn * BPS
    vals[PF_BUY_LEVELS] = lb_used
    vals[PF_SELL_LEVELS] = ls_used
    vals[PF_TOP_OF_BOOK] = 1.0 if tob else 0.0
    return -1


@njit(inline="always", **_KW)
def _publish_values(pf, i, b, s, vals):
    for c in range(vals.shape[0]):
        pf[i, b, s, c] = vals[c]


@njit(**_KW)
def _evaluate(S, out, ow, io, i, b, s, t):
    """Evaluate buying on leg b (its ask) and selling on leg s (its bid) at trigger time t."""
    bkf, bki, po, pf = S[S_BOOK_F], S[S_BOOK_I], S[S_PAIR_I], S[S_PAIR_F]
    lstat, istat = S[S_LEG_STATUS], S[S_INST_STATUS]
    fp, ip, ctr = S[S_FPARAMS], S[S_IPARAMS], S[S_CTR]
    buy_ask = bkf[i, b, BK_ASK]
    sell_bid = bkf[i, s, BK_BID]
    if buy_ask <= 0.0 or sell_bid <= 0.0:
        _drop(S, out, ow, io, i, b, s, _R_STALE, t)
        return
    if sell_bid <= buy_ask:
        _drop(S, out, ow, io, i, b, s, _R_GONE, t)
        return
    ctr[C_EVALS] += 1
    if lstat[b] != _UP or lstat[s] != _UP or istat[i, b] != _UP or istat[i, s] != _UP:
        ctr[F_STATUS] += 1
        _drop(S, out, ow, io, i, b, s, _R_DOWN, t)
        return
    max_age = ip[I_MAX_AGE]
    if t - bki[i, b, BK_RECV_NS] > max_age or t - bki[i, s, BK_RECV_NS] > max_age:
        ctr[F_STALE] += 1
        _drop(S, out, ow, io, i, b, s, _R_STALE, t)
        return
    mid = (buy_ask + sell_bid) * 0.5
    gross = (sell_bid - buy_ask) / mid * BPS
    if gross > fp[P_MAX_PLAUS]:
        ctr[F_IMPLAUSIBLE] += 1
        _drop(S, out, ow, io, i, b, s, _R_STALE, t)
        return
    vals = S[S_SCRATCH]
    why = _size(S, i, b, s, vals)
    if why >= 0:
        ctr[why] += 1
        _drop(S, out, ow, io, i, b, s, _R_GONE, t)
        return
    net = vals[PF_NET_BPS]
    fd = _funding_bps(S, i, s) - _funding_bps(S, i, b)
    conf = (50.0 * _clamp01(net / fp[P_CONF_SPREAD])
            + 30.0 * _clamp01(vals[PF_EXEC_QTY] * vals[PF_VWAP_BUY] / fp[P_CONF_NOTIONAL])
            + 20.0 * _clamp01(0.5 + fd / (2.0 * fp[P_CONF_FUND])))
    vals[PF_BUY_ASK] = buy_ask
    vals[PF_SELL_BID] = sell_bid
    vals[PF_TOP_GROSS] = gross
    vals[PF_FUNDING_DELTA_BPS] = fd
    vals[PF_CONFIDENCE] = conf
    if conf < fp[P_FLOOR]:
        ctr[F_CONF] += 1
        _drop(S, out, ow, io, i, b, s, _R_GONE, t)
        return
    if po[i, b, s, PO_OPP_ID] != 0:
        if abs(net - pf[i, b, s, PF_NET_BPS]) > fp[P_UPD_THR]:
            _publish_values(pf, i, b, s, vals)
            ctr[C_UPDATED] += 1
            _emit(S, out, ow, io, i, b, s, _UPDATE, 0, t)
        return
    c = po[i, b, s, PO_PENDING_N]
    if c == 0:
        po[i, b, s, PO_PENDING_SINCE] = t
    c += 1
    po[i, b, s, PO_PENDING_N] = c
    _act_set(S[S_ACT], i, b, s)
    if (ip[I_PERSIST_N] <= 1 or c >= ip[I_PERSIST_N]) and (
            ip[I_PERSIST_NS] <= 0 or t - po[i, b, s, PO_PENDING_SINCE] >= ip[I_PERSIST_NS]):
        n = ctr[C_OPP_N] + 1
        ctr[C_OPP_N] = n
        po[i, b, s, PO_OPP_ID] = ip[I_OPP_BASE] + n
        po[i, b, s, PO_PENDING_N] = 0
        _publish_values(pf, i, b, s, vals)
        ctr[C_OPENED] += 1
        ctr[C_OPEN_NOW] += 1
        _emit(S, out, ow, io, i, b, s, _OPEN, 0, t)
    else:
        ctr[F_PERSIST] += 1


@njit(**_KW)
def _scan(S, out, ow, io, i, k, t):
    """Evaluate the pairs of (i, k) worth evaluating (the QUOTE path's scan, for a book
    message that changed levels under an unchanged top)."""
    px, act = S[S_PX], S[S_ACT]
    nl = S[S_LEG_VENUE].shape[0]
    bid = px[i, k, PX_BID]
    ask = px[i, k, PX_ASK]
    m = act[i, k]
    for j in range(nl):
        if j == k:
            continue
        bj = px[i, j, PX_BID]
        aj = px[i, j, PX_ASK]
        if bj > ask or ((m >> j) & 1) != 0:
            _evaluate(S, out, ow, io, i, k, j, t)
            m = act[i, k]
        if (bid > aj and aj > 0.0) or ((m >> (ACT_AS_SELL_SHIFT + j)) & 1) != 0:
            _evaluate(S, out, ow, io, i, j, k, t)
            m = act[i, k]


@njit(**_KW)
def _invalid_quote(S, out, ow, io, i, k, t):
    """Rare path of a QUOTE that fails validation: clear the leg, drop its pairs."""
    nl = S[S_LEG_VENUE].shape[0]
    S[S_CTR][F_INVALID] += 1
    _set_quote(S, i, k, 0.0, 0.0, 0.0, 0.0)
    for j in range(nl):
        if j != k:
            _drop(S, out, ow, io, i, k, j, _R_STALE, t)
            _drop(S, out, ow, io, i, j, k, _R_STALE, t)


@njit(**_KW)
def _on_status(S, out, ow, io, vid, iid, status, t):
    """Venue status (iid == 0: every leg of the venue) or one instrument's (iid != 0)."""
    tab, lstat, istat = S[S_LEG_TAB], S[S_LEG_STATUS], S[S_INST_STATUS]
    ctr, act = S[S_CTR], S[S_ACT]
    ctr[C_STATUS] += 1
    if vid < 0 or vid >= tab.shape[0] or status < _UP or status > _DISC:
        ctr[F_UNKNOWN] += 1
        return
    ni = S[S_BOOK_F].shape[0]
    nl = S[S_LEG_VENUE].shape[0]
    reason = _R_DOWN if status == _DISC else _R_STALE
    if iid != 0:
        i = iid & CANONICAL_MASK
        leg = tab[vid, _leg_col(iid)]
        if leg < 0 or i <= 0 or i >= ni:
            ctr[F_UNKNOWN] += 1
            return
        istat[i, leg] = status
        if status == _UP:
            return
        for j in range(nl):
            if j != leg:
                _drop(S, out, ow, io, i, leg, j, reason, t)
                _drop(S, out, ow, io, i, j, leg, reason, t)
        if status == _DISC:
            _set_quote(S, i, leg, 0.0, 0.0, 0.0, 0.0)
        return
    l0 = tab[vid, LEG_SPOT]
    l1 = tab[vid, LEG_PERP]
    if l0 < 0 and l1 < 0:
        ctr[F_UNKNOWN] += 1
        return
    if l0 >= 0:
        lstat[l0] = status
    if l1 >= 0:
        lstat[l1] = status
    if status == _UP:
        return
    for i in range(1, ni):
        for b in range(nl):
            m = act[i, b] & ACT_LEGS_MASK          # active (open or pending) pairs (b, s)
            s = 0
            while m != 0:
                if (m & 1) != 0 and (b == l0 or b == l1 or s == l0 or s == l1):
                    _drop(S, out, ow, io, i, b, s, reason, t)
                m >>= 1
                s += 1
        if status == _DISC:
            if l0 >= 0:
                _set_quote(S, i, l0, 0.0, 0.0, 0.0, 0.0)
                istat[i, l0] = _UP
            if l1 >= 0:
                _set_quote(S, i, l1, 0.0, 0.0, 0.0, 0.0)
                istat[i, l1] = _UP


@njit(**_KW)
def _on_funding(S, i, k, rate, nxt, iv):
    bkf, bki, ctr = S[S_BOOK_F], S[S_BOOK_I], S[S_CTR]
    ctr[C_FUNDING] += 1
    if not (abs(rate) < _INF):
        ctr[F_INVALID] += 1
        return
    bkf[i, k, BK_FUNDING_RATE] = rate
    bki[i, k, BK_NEXT_FUNDING_NS] = nxt
    bki[i, k, BK_FUNDING_IV_S] = iv if iv > 0 else S[S_LEG_FUNDING_S][k]


@njit(**_KW)
def apply_updates(S, bi, n, out, ow, io):
    """Apply n MarketUpdates (flat int64 words). Collect mode (``ow`` empty): stops before
    an update whose worst-case output might not fit ``out``; returns updates consumed.

    The QUOTE fast path is written out here with the arrays taken out of the state once per
    call (a numba call or tuple access per update costs reference-count updates on every
    array); rare paths (invalid quote, evaluation of a candidate pair, status, funding) are
    calls.
    """
    bkf, bki, tab, lven, ctr = S[S_BOOK_F], S[S_BOOK_I], S[S_LEG_TAB], S[S_LEG_VENUE], S[S_CTR]
    istat, px, act = S[S_INST_STATUS], S[S_PX], S[S_ACT]
    lvl_i, lvl_f = S[S_LVL_I], S[S_LVL_F]
    depth = S[S_IPARAMS][I_DEPTH]
    a0 = B_LEVELS + 2 * depth           # column of the best ask in an L2 block
    ni = bkf.shape[0]
    nl = lven.shape[0]
    ntab = tab.shape[0]
    cap = out.shape[0] // W.OP_WORDS
    collect = ow.shape[0] == 0
    for r in range(n):
        o = r * W.MU_WORDS
        w0 = bi[o + W.MU_HEAD]
        iid = TW.mu_instrument(w0)
        vid = TW.mu_venue(w0)
        kind = TW.mu_kind(w0)
        if collect:
            need = 2 * nl if kind != _STATUS else ctr[C_OPEN_NOW]
            if io[IO_N] + need > cap:
                return r
        t = bi[o + W.MU_RECV_TS]
        ctr[C_UPDATES] += 1
        ctr[C_LAST_TRIG] = t
        if kind == _STATUS:
            sw = bi[o + W.MU_STATUS]
            why = TW.mu_status_reason(sw)
            if iid != 0 and (why & _REASON_MASK) == _BOOK_RESYNC and vid < ntab:
                kb = tab[vid, _leg_col(iid)]
                ib = iid & CANONICAL_MASK
                if kb >= 0 and 0 < ib < ni:
                    on_book_resync(S[S_LVL_I], ib * nl + kb, (why >> _FAULT_SHIFT) & 0xFF, t)
            _on_status(S, out, ow, io, vid, iid, TW.mu_status(sw), t)
            continue
        i = iid & CANONICAL_MASK
        k = -1
        if vid < ntab:
            k = tab[vid, _leg_col(iid)]
        if k < 0 or i <= 0 or i >= ni:
            ctr[F_UNKNOWN] += 1
            continue
        if kind == _FUNDING:
            _on_funding(S, i, k, as_f64(bi[o + W.MU_FUNDING_RATE]), bi[o + W.MU_NEXT_FUNDING],
                        TW.mu_funding_interval(bi[o + W.MU_FUNDING_INTERVAL]))
            continue
        if kind == _LEVEL:
            fl = TW.mu_flags(w0)
            rb = i * nl + k
            on_level(lvl_i, lvl_f, depth, rb, fl, as_f64(bi[o + W.MU_LEVEL_PRICE]),
                     as_f64(bi[o + W.MU_LEVEL_QTY]), bi[o + W.MU_LEVEL_UPDATE_ID],
                     bi[o + W.MU_EXCHANGE_TS], t)
            # after a book message: evaluate now when its top is the stored quote (levels
            # changed under it); a changed top is followed by its QUOTE, which evaluates
            if ((fl & _END) != 0 and lvl_i[rb, B_STATE] == _BOOK_READY
                    and lvl_i[rb, B_N_BID] > 0 and lvl_i[rb, B_N_ASK] > 0
                    and bkf[i, k, BK_ASK] > 0.0 and istat[i, k] == _UP
                    and lvl_f[rb, B_LEVELS] == bkf[i, k, BK_BID]
                    and lvl_f[rb, B_LEVELS + depth] == bkf[i, k, BK_BID_QTY]
                    and lvl_f[rb, a0] == bkf[i, k, BK_ASK]
                    and lvl_f[rb, a0 + depth] == bkf[i, k, BK_ASK_QTY]):
                bki[i, k, BK_RECV_NS] = t
                _scan(S, out, ow, io, i, k, t)
            continue
        if kind != _QUOTE:
            ctr[F_UNKNOWN] += 1
            continue
        ctr[C_QUOTES] += 1
        bid = as_f64(bi[o + W.MU_BID])
        ask = as_f64(bi[o + W.MU_ASK])
        bq = as_f64(bi[o + W.MU_BID_QTY])
        aq = as_f64(bi[o + W.MU_ASK_QTY])
        if not (bid > 0.0 and ask > bid and ask < _INF and bq > 0.0 and bq < _INF
                and aq > 0.0 and aq < _INF):
            _invalid_quote(S, out, ow, io, i, k, t)
            continue
        bkf[i, k, BK_BID] = bid
        bkf[i, k, BK_ASK] = ask
        bkf[i, k, BK_BID_QTY] = bq
        bkf[i, k, BK_ASK_QTY] = aq
        px[i, k, PX_BID] = bid
        px[i, k, PX_ASK] = ask
        istat[i, k] = _UP       # a quote of a symbol means it is fresh
        bki[i, k, BK_RECV_NS] = t
        bki[i, k, BK_EXCHANGE_NS] = bi[o + W.MU_EXCHANGE_TS]
        # A pair that is neither open nor pending (act) and has no positive gross spread
        # needs no evaluation (its outcome would be "nothing happens"): most pairs, most of
        # the time. The scan reads px[i] (bid/ask of every leg) and act[i, k].
        m = act[i, k]
        for j in range(nl):
            if j == k:
                continue
            bj = px[i, j, PX_BID]
            aj = px[i, j, PX_ASK]
            if bj > ask or ((m >> j) & 1) != 0:
                _evaluate(S, out, ow, io, i, k, j, t)
                m = act[i, k]
            if (bid > aj and aj > 0.0) or ((m >> (ACT_AS_SELL_SHIFT + j)) & 1) != 0:
                _evaluate(S, out, ow, io, i, j, k, t)
                m = act[i, k]
    return n


@njit(**_KW)
def process_words(S, bi, n, out, ow, io):
    """Kernel entry: apply n updates; in ring mode publish everything to ``ow``."""
    S[S_CTR][C_CALLS] += 1
    if io.shape[0] > IO_READ_NS:
        io[IO_READ_NS] = realtime_ns()
    k = apply_updates(S, bi, n, out, ow, io)
    flush(out, ow, io, S[S_CTR])
    return k


@njit(**_KW)
def sweep(S, out, ow, io, now):
    """Close open opportunities with a leg quote older than max_quote_age at ``now``."""
    bki, po, ctr, act = S[S_BOOK_I], S[S_PAIR_I], S[S_CTR], S[S_ACT]
    ctr[C_SWEEPS] += 1
    if ctr[C_OPEN_NOW] == 0:
        return
    max_age = S[S_IPARAMS][I_MAX_AGE]
    ni = S[S_BOOK_F].shape[0]
    nl = S[S_LEG_VENUE].shape[0]
    for i in range(1, ni):
        for b in range(nl):
            m = act[i, b] & ACT_LEGS_MASK
            s = -1
            while m != 0:
                s += 1
                bit = m & 1
                m >>= 1
                if bit != 0 and po[i, b, s, PO_OPP_ID] != 0:
                    rb = bki[i, b, BK_RECV_NS]
                    rs = bki[i, s, BK_RECV_NS]
                    if now - rb > max_age or now - rs > max_age:
                        _close(S, out, ow, io, i, b, s, _R_STALE, rb if rb < rs else rs)
    flush(out, ow, io, ctr)


@njit(**_KW)
def close_all(S, out, ow, io, reason, trig):
    """Close every open opportunity with ``reason`` (SHUTDOWN at exit)."""
    po, ctr, act = S[S_PAIR_I], S[S_CTR], S[S_ACT]
    ni = S[S_BOOK_F].shape[0]
    nl = S[S_LEG_VENUE].shape[0]
    for i in range(1, ni):
        for b in range(nl):
            m = act[i, b] & ACT_LEGS_MASK
            s = -1
            while m != 0:
                s += 1
                bit = m & 1
                m >>= 1
                if bit != 0 and po[i, b, s, PO_OPP_ID] != 0:
                    _close(S, out, ow, io, i, b, s, reason, trig)
    flush(out, ow, io, ctr)
