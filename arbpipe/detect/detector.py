"""Cross-venue arbitrage detection: a numba kernel over a top of book per (instrument, leg).

Legs
----
A *leg* is one market of one venue (``arbpipe.config.LegTable``): OKX spot and OKX SWAP
are two legs of venue 5. An update's leg is ``leg_tab[venue_id, instrument_id has
PERP_ID_BIT]``; its canonical instrument is ``instrument_id & CANONICAL_MASK``. Updates
whose leg or instrument is unknown are counted (``filter_unknown``) and ignored.

Book (per canonical instrument i, leg l)
----------------------------------------
bid, ask, bid_qty, ask_qty (a leg "has a quote" when ask > 0), exchange ts, recv ts,
funding rate, next funding time, funding interval (s). Per leg: venue status (starts UP).

Rules, per MarketUpdate (units: prices in quote ccy, qty in base units, ts in ns)
------------------------------------------------------------------------------------
QUOTE on (i, k):
  * invalid (not finite, bid <= 0, bid >= ask, a qty <= 0): ``filter_invalid`` += 1, the
    leg's quote is cleared, every open opportunity of (i, k) closes QUOTE_STALE.
  * otherwise the quote is stored and, for every other leg j in leg order, the pair
    (buy k, sell j) then (buy j, sell k) is evaluated with t = the update's recv ts:
      1. a leg without a quote                   -> not a candidate (open: QUOTE_STALE)
      2. sell_bid <= buy_ask (gross <= 0)         -> not a candidate (open: SPREAD_GONE)
      -- a candidate from here on (``evaluations`` += 1); each failing check counts once:
      3. a status (venue or instrument) != UP    -> filter_status     (open: VENUE_DOWN)
      4. t - recv_ts > max_quote_age on either leg -> filter_stale      (open: QUOTE_STALE)
      5. gross_bps > max_plausible_spread_bps     -> filter_implausible (open: QUOTE_STALE)
      6. net_bps < min_net_bps                    -> filter_below_net  (open: SPREAD_GONE)
      7. confidence < confidence_floor            -> filter_confidence (open: SPREAD_GONE)
      8. qualifies: open -> UPDATE if |net - last published net| > update_threshold_bps;
         not open -> pending count += 1 (pending since t at the first one); OPEN when
         count >= persist_updates (if > 1) and t - since >= persist_ms (if > 0), else
         ``filter_persist`` += 1. Any failing check resets the pending state.
FUNDING on (i, k): rate, next time, interval (0 -> the leg's configured interval) stored;
  no evaluation (funding is informational: it feeds funding_delta and confidence).
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
  mid        = (buy_ask + sell_bid) / 2
  gross_bps  = (sell_bid - buy_ask) / mid * 1e4
  top_qty    = min(ask_qty[buy], bid_qty[sell])
  exec_qty   = min(top_qty, max_notional / buy_ask, max_exec_qty[instrument])
  slippage   = slippage_base_bps + slippage_depth_bps * exec_qty / top_qty
               (a cost that grows as the executed size approaches the top-of-book size)
  net_bps    = gross_bps - taker_fee[buy] - taker_fee[sell] - slippage
  funding(l) = rate * (28800 / interval_s) * 1e4 for a perp leg (bps per 8 h), 0 for spot
  funding_delta_bps = funding(sell) - funding(buy)   (> 0: the hedge earns funding)
  confidence = 50 * clamp01(net_bps / confidence_spread_bps)
             + 30 * clamp01(exec_qty * buy_ask / confidence_notional)
             + 20 * clamp01(0.5 + funding_delta_bps / (2 * confidence_funding_bps))
  (spread, depth, funding components; neutral funding gives 10 of the 20)

Output records (``shm_layouts.OPPORTUNITY``): OPEN and UPDATE carry the values just
computed; CLOSED carries the values last published for that opportunity, with its own
trigger_recv_ns / detect_ns. ``opp_id`` = opp_id_base + n (n = 1, 2, ...); ``seq`` counts
records; ``flags`` (reserved in the contract) carries OPP_FLAG_BUY_PERP (1) and
OPP_FLAG_SELL_PERP (2) so readers can tell OKX spot from OKX SWAP (same venue id).

Counters ``latency_sum_ns`` / ``latency_max_ns``: detect_ns - trigger_recv_ns of OPEN and
UPDATE records (feed receive -> opportunity published, both CLOCK_REALTIME).

Hop histograms (``arbpipe.transport.histogram`` layout; the service's are the shared segments
``hist.feed_to_detector`` and ``hist.detect``, a bare ``Detector`` keeps private ones)
-------------------------------------------------------------------------------------
The kernels reach them through their addresses in ``io`` (not through S: every extra array
in S is passed, field by field, on every call of _evaluate / _emit, which cost ~4% in the
stress benchmark).
  feed_to_detector: read_ns - recv_ts_ns of every update ``pump`` pops from a feed ring, with
                    one CLOCK_REALTIME read (read_ns) per popped batch.
  detect:           detect_ns - read_ns of every OPEN / UPDATE record (``process_words``: read_ns
                    is its entry time). The hops add up: (read - recv) + (detect - read) +
                    (strategy read - detect) = strategy read - recv.

Stats segment ``detector.stats``
--------------------------------
A 4096-byte segment with the standard header (kind ``STATS_KIND``, record_size 8,
capacity = number of words); from byte 128: ``N_COUNTERS`` int64 counters
(``COUNTER_NAMES`` order), then one int64 venue status per leg. The kernel writes them in
place; ``read_stats(instance)`` reads them from any process.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.cpython.unsafe.numbers import leading_zeros
from numba.extending import intrinsic

from arbpipe.transport import histogram as H
from arbpipe.transport import ring_kernels as K
from arbpipe.clock import realtime_ns
from arbpipe.config import CANONICAL_MASK, PERP_ID_BIT, Config, LegTable
from shm_layouts import OPPORTUNITY, CloseReason, Kind, OppState, VenueStatus
from shm_layouts import ring as L

_KW = dict(cache=True, nogil=True, boundscheck=False)
_LOW = 0xFFFFFFFF

MU_WORDS = 8       # int64 words per MarketUpdate
OPP_WORDS = 16     # int64 words per Opportunity

OPP_FLAG_BUY_PERP = 1
OPP_FLAG_SELL_PERP = 2

_QUOTE, _FUNDING, _STATUS = int(Kind.QUOTE), int(Kind.FUNDING), int(Kind.STATUS)
_UP, _STALE, _DISC = int(VenueStatus.UP), int(VenueStatus.STALE), int(VenueStatus.DISCONNECTED)
_OPEN, _UPDATE, _CLOSED = int(OppState.OPEN), int(OppState.UPDATE), int(OppState.CLOSED)
_R_GONE, _R_STALE = int(CloseReason.SPREAD_GONE), int(CloseReason.QUOTE_STALE)
_R_DOWN, _R_SHUT = int(CloseReason.VENUE_DOWN), int(CloseReason.SHUTDOWN)
_PERP_BIT = PERP_ID_BIT
_CMASK = CANONICAL_MASK
_INF = math.inf

# ---------------------------------------------------------------- counters -------
COUNTER_NAMES = (
    "updates", "quotes", "funding", "status", "evaluations",
    "opened", "updated", "closed",
    "closed_spread_gone", "closed_quote_stale", "closed_venue_down", "closed_shutdown",
    "filter_stale", "filter_status", "filter_invalid", "filter_implausible",
    "filter_below_net", "filter_confidence", "filter_persist", "filter_unknown",
    "open_now", "published", "dropped_out", "opp_counter", "seq",
    "last_trigger_recv_ns", "last_detect_ns", "latency_sum_ns", "latency_max_ns",
    "sweeps", "kernel_calls", "idle_waits", "heartbeat_ns", "n_legs", "n_instruments",
)
N_COUNTERS = 64
assert len(COUNTER_NAMES) <= N_COUNTERS
C = {n: i for i, n in enumerate(COUNTER_NAMES)}
(C_UPDATES, C_QUOTES, C_FUNDING, C_STATUS, C_EVALS, C_OPENED, C_UPDATED, C_CLOSED,
 C_CL_GONE, C_CL_STALE, C_CL_DOWN, C_CL_SHUT, F_STALE, F_STATUS, F_INVALID, F_IMPLAUSIBLE,
 F_BELOW, F_CONF, F_PERSIST, F_UNKNOWN, C_OPEN_NOW, C_PUBLISHED, C_DROPPED, C_OPP_N, C_SEQ,
 C_LAST_TRIG, C_LAST_DETECT, C_LAT_SUM, C_LAT_MAX, C_SWEEPS, C_CALLS, C_IDLE, C_HEARTBEAT,
 C_NLEGS, C_NINST) = range(len(COUNTER_NAMES))
_CLOSE_COUNTER = {1: C_CL_GONE, 2: C_CL_STALE, 3: C_CL_DOWN, 4: C_CL_SHUT}

STATS_KIND = 21                 # header kind of the detector stats segment (not a ring)
STATS_NAME = "detector.stats"
STATS_WORD0 = L.BLOCK // 8      # first counter word
MAX_LEGS_IN_STATS = (4096 - L.BLOCK) // 8 - N_COUNTERS

# float params
(P_MIN_NET, P_MAX_PLAUS, P_FLOOR, P_MAX_NOTIONAL, P_SLIP_BASE, P_SLIP_DEPTH, P_UPD_THR,
 P_CONF_SPREAD, P_CONF_NOTIONAL, P_CONF_FUND) = range(10)
# int params
I_MAX_AGE, I_PERSIST_N, I_PERSIST_NS, I_OPP_BASE = range(4)
# io words. IO_READ_NS: CLOCK_REALTIME ns at which the batch being applied was read.
# IO_HIST_FEED / IO_HIST_DETECT: addresses of the hop histograms' words (0: none); the
# Detector keeps those arrays alive and in place while its io is in use.
IO_N, IO_RWAKE, IO_PWAKE, IO_READ_NS, IO_HIST_FEED, IO_HIST_DETECT = range(6)
IO_WORDS = 8


# ---------------------------------------------------------------- bit casts ------

@intrinsic
def _as_f64(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _f64_bits(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _f32_bits(typingctx, x):
    def codegen(context, builder, sig, args):
        f = builder.fptrunc(args[0], ir.FloatType())
        return builder.zext(builder.bitcast(f, ir.IntType(32)), ir.IntType(64))
    return types.int64(types.float64), codegen


# ---------------------------------------------------------------- histograms -----

@intrinsic
def _i64_ptr(typingctx, addr):
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], ir.IntType(64).as_pointer())
    return types.CPointer(types.int64)(types.int64), codegen


@njit(inline="always", **_KW)
def _hist_at(addr):
    """The histogram words at ``addr`` (an address from io, never 0)."""
    return carray(_i64_ptr(addr), (H.W_DATA + H.NB,))


@njit(inline="always", **_KW)
def _io_hist_addr(io, slot):
    return io[slot] if io.shape[0] > slot else 0


@njit(inline="always", **_KW)
def _hist_bucket(v):
    """``histogram.bucket_index`` (same buckets) with the leading one found by one ctlz
    instead of a shift loop: ~2 ns per value instead of ~30, which keeps a per-update record
    out of the detector's cost (tests/test_bench_pipeline.py checks both agree)."""
    if v < 64:
        return v
    m = 63 - leading_zeros(v)
    b = 64 + (m - 6) * 32 + ((v >> (m - 5)) & 31)
    return b if b < H.NB else H.NB - 1


@njit(inline="always", **_KW)
def hist_record(h, v):
    """``histogram.record(h, v)`` with ``_hist_bucket``: one value (ns) into histogram words."""
    if v < 0:
        h[H.W_UNDER] += 1
        return
    h[H.W_DATA + _hist_bucket(v)] += 1
    h[H.W_COUNT] += 1
    h[H.W_SUM] += v
    if v > h[H.W_MAX]:
        h[H.W_MAX] = v
    if h[H.W_MIN] == 0 or v < h[H.W_MIN]:
        h[H.W_MIN] = v


@njit(**_KW)
def hist_bucket_of(v):
    """Test hook: ``_hist_bucket`` callable from Python."""
    return _hist_bucket(v)


# ---------------------------------------------------------------- kernel ---------

@njit(inline="always", **_KW)
def _clamp01(x):
    if x < 0.0:
        return 0.0
    if x > 1.0:
        return 1.0
    return x


@njit(inline="always", **_KW)
def _act_set(act, i, b, s):
    """Mark pair (b, s) of instrument i active (open or pending): bit s of act[i, b]'s low
    half, bit b of act[i, s]'s high half, so a quote on leg k finds its active pairs in one
    word."""
    act[i, b] |= 1 << s
    act[i, s] |= 1 << (32 + b)


@njit(inline="always", **_KW)
def _act_clr(act, i, b, s):
    act[i, b] &= ~(1 << s)
    act[i, s] &= ~(1 << (32 + b))


@njit(inline="always", **_KW)
def _set_quote(S, i, k, bid, ask, bq, aq):
    bkf, px = S[0], S[15]
    bkf[i, k, 0] = bid
    bkf[i, k, 1] = ask
    bkf[i, k, 2] = bq
    bkf[i, k, 3] = aq
    px[i, k, 0] = bid
    px[i, k, 1] = ask


@njit(**_KW)
def _flush(out, ow, io, ctr):
    n = io[IO_N]
    if n > 0 and ow.shape[0] > 0:
        r = K.bcast_push(ow, out, n)
        if (r >> 32) != 0:
            io[IO_RWAKE] = 1
        io[IO_N] = 0


@njit(**_KW)
def _emit(S, out, ow, io, i, b, s, state, reason, trig):
    """Write one Opportunity from the pair's published values (pf) and ids (po)."""
    (bkf, bki, po, pf, tab, lven, lperp, lfee, lstat, lint, imaxq, fp, ip, ctr, istat, px,
     act) = S
    cap = out.shape[0] // 16
    if io[IO_N] >= cap:
        if ow.shape[0] > 0:
            _flush(out, ow, io, ctr)
        else:
            ctr[C_DROPPED] += 1
            return
    now = realtime_ns()
    if state == _OPEN:
        po[i, b, s, 1] = now
    seq = ctr[C_SEQ] + 1
    ctr[C_SEQ] = seq
    o = io[IO_N] * 16
    flags = 0
    if lperp[b] != 0:
        flags |= 1
    if lperp[s] != 0:
        flags |= 2
    out[o] = i | (lven[b] << 32) | (lven[s] << 48)
    out[o + 1] = state | (reason << 8) | (flags << 16) | (_f32_bits(pf[i, b, s, 6]) << 32)
    out[o + 2] = _f64_bits(pf[i, b, s, 0])
    out[o + 3] = _f64_bits(pf[i, b, s, 1])
    out[o + 4] = _f64_bits(pf[i, b, s, 2])
    out[o + 5] = _f64_bits(pf[i, b, s, 3])
    out[o + 6] = _f64_bits(pf[i, b, s, 4])
    out[o + 7] = _f64_bits(pf[i, b, s, 5])
    out[o + 8] = trig
    out[o + 9] = now
    out[o + 10] = po[i, b, s, 0]
    out[o + 11] = seq
    out[o + 12] = po[i, b, s, 1]
    out[o + 13] = 0
    out[o + 14] = 0
    out[o + 15] = 0
    io[IO_N] += 1
    ctr[C_PUBLISHED] += 1
    ctr[C_LAST_DETECT] = now
    if state != _CLOSED:
        hd = _io_hist_addr(io, IO_HIST_DETECT)
        if hd != 0:
            hist_record(_hist_at(hd), now - io[IO_READ_NS])
        lat = now - trig
        if lat >= 0:
            ctr[C_LAT_SUM] += lat
            if lat > ctr[C_LAT_MAX]:
                ctr[C_LAT_MAX] = lat


@njit(**_KW)
def _close(S, out, ow, io, i, b, s, reason, trig):
    po = S[2]
    ctr = S[13]
    _emit(S, out, ow, io, i, b, s, _CLOSED, reason, trig)
    _act_clr(S[16], i, b, s)
    po[i, b, s, 0] = 0
    po[i, b, s, 1] = 0
    po[i, b, s, 2] = 0
    po[i, b, s, 3] = 0
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
    po = S[2]
    if po[i, b, s, 2] != 0:
        po[i, b, s, 2] = 0
        _act_clr(S[16], i, b, s)
    if po[i, b, s, 0] != 0:
        _close(S, out, ow, io, i, b, s, reason, trig)


@njit(inline="always", **_KW)
def _funding_bps(S, i, leg):
    bkf, bki, lperp = S[0], S[1], S[6]
    if lperp[leg] == 0:
        return 0.0
    iv = bki[i, leg, 3]
    if iv <= 0:
        return 0.0
    return bkf[i, leg, 4] * (28800.0 / iv) * 1e4


@njit(**_KW)
def _evaluate(S, out, ow, io, i, b, s, t):
    """Evaluate buying on leg b (its ask) and selling on leg s (its bid) at trigger time t."""
    (bkf, bki, po, pf, tab, lven, lperp, lfee, lstat, lint, imaxq, fp, ip, ctr, istat, px,
     act) = S
    buy_ask = bkf[i, b, 1]
    sell_bid = bkf[i, s, 0]
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
    if t - bki[i, b, 0] > max_age or t - bki[i, s, 0] > max_age:
        ctr[F_STALE] += 1
        _drop(S, out, ow, io, i, b, s, _R_STALE, t)
        return
    mid = (buy_ask + sell_bid) * 0.5
    gross = (sell_bid - buy_ask) / mid * 1e4
    if gross > fp[P_MAX_PLAUS]:
        ctr[F_IMPLAUSIBLE] += 1
        _drop(S, out, ow, io, i, b, s, _R_STALE, t)
        return
    top = bkf[i, b, 3]
    if bkf[i, s, 2] < top:
        top = bkf[i, s, 2]
    q = top
    qcap = fp[P_MAX_NOTIONAL] / buy_ask
    if qcap < q:
        q = qcap
    if imaxq[i] < q:
        q = imaxq[i]
    slip = fp[P_SLIP_BASE] + fp[P_SLIP_DEPTH] * (q / top)
    net = gross - lfee[b] - lfee[s] - slip
    if net < fp[P_MIN_NET]:
        ctr[F_BELOW] += 1
        _drop(S, out, ow, io, i, b, s, _R_GONE, t)
        return
    fd = _funding_bps(S, i, s) - _funding_bps(S, i, b)
    conf = (50.0 * _clamp01(net / fp[P_CONF_SPREAD])
            + 30.0 * _clamp01(q * buy_ask / fp[P_CONF_NOTIONAL])
            + 20.0 * _clamp01(0.5 + fd / (2.0 * fp[P_CONF_FUND])))
    if conf < fp[P_FLOOR]:
        ctr[F_CONF] += 1
        _drop(S, out, ow, io, i, b, s, _R_GONE, t)
        return
    if po[i, b, s, 0] != 0:
        if abs(net - pf[i, b, s, 4]) > fp[P_UPD_THR]:
            pf[i, b, s, 0] = buy_ask
            pf[i, b, s, 1] = sell_bid
            pf[i, b, s, 2] = q
            pf[i, b, s, 3] = gross
            pf[i, b, s, 4] = net
            pf[i, b, s, 5] = fd
            pf[i, b, s, 6] = conf
            ctr[C_UPDATED] += 1
            _emit(S, out, ow, io, i, b, s, _UPDATE, 0, t)
        return
    c = po[i, b, s, 2]
    if c == 0:
        po[i, b, s, 3] = t
    c += 1
    po[i, b, s, 2] = c
    _act_set(act, i, b, s)
    if (ip[I_PERSIST_N] <= 1 or c >= ip[I_PERSIST_N]) and (
            ip[I_PERSIST_NS] <= 0 or t - po[i, b, s, 3] >= ip[I_PERSIST_NS]):
        n = ctr[C_OPP_N] + 1
        ctr[C_OPP_N] = n
        po[i, b, s, 0] = ip[I_OPP_BASE] + n
        po[i, b, s, 2] = 0
        pf[i, b, s, 0] = buy_ask
        pf[i, b, s, 1] = sell_bid
        pf[i, b, s, 2] = q
        pf[i, b, s, 3] = gross
        pf[i, b, s, 4] = net
        pf[i, b, s, 5] = fd
        pf[i, b, s, 6] = conf
        ctr[C_OPENED] += 1
        ctr[C_OPEN_NOW] += 1
        _emit(S, out, ow, io, i, b, s, _OPEN, 0, t)
    else:
        ctr[F_PERSIST] += 1


@njit(**_KW)
def _invalid_quote(S, out, ow, io, i, k, t):
    """Rare path of a QUOTE that fails validation: clear the leg, drop its pairs."""
    nl = S[5].shape[0]
    S[13][F_INVALID] += 1
    _set_quote(S, i, k, 0.0, 0.0, 0.0, 0.0)
    for j in range(nl):
        if j != k:
            _drop(S, out, ow, io, i, k, j, _R_STALE, t)
            _drop(S, out, ow, io, i, j, k, _R_STALE, t)


@njit(**_KW)
def _on_status(S, out, ow, io, vid, iid, status, t):
    """Venue status (iid == 0: every leg of the venue) or one instrument's (iid != 0)."""
    (bkf, bki, po, pf, tab, lven, lperp, lfee, lstat, lint, imaxq, fp, ip, ctr, istat, px,
     act) = S
    ctr[C_STATUS] += 1
    if vid < 0 or vid >= tab.shape[0] or status < _UP or status > _DISC:
        ctr[F_UNKNOWN] += 1
        return
    ni = bkf.shape[0]
    nl = lven.shape[0]
    reason = _R_DOWN if status == _DISC else _R_STALE
    if iid != 0:
        i = iid & _CMASK
        leg = tab[vid, 1 if (iid & _PERP_BIT) != 0 else 0]
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
    l0 = tab[vid, 0]
    l1 = tab[vid, 1]
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
            m = act[i, b] & 0xFFFFFFFF          # active (open or pending) pairs (b, s)
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
    bkf, bki, lint, ctr = S[0], S[1], S[9], S[13]
    ctr[C_FUNDING] += 1
    if not (abs(rate) < _INF):
        ctr[F_INVALID] += 1
        return
    bkf[i, k, 4] = rate
    bki[i, k, 2] = nxt
    bki[i, k, 3] = iv if iv > 0 else lint[k]


@njit(**_KW)
def _process(S, bi, n, out, ow, io):
    """Apply n MarketUpdates (flat int64 words). Collect mode (``ow`` empty): stops before
    an update whose worst-case output might not fit ``out``; returns updates consumed.

    The QUOTE fast path is written out here with the arrays unpacked once per call (a
    numba call or tuple access per update costs reference-count updates on every array);
    rare paths (invalid quote, evaluation of a candidate pair, status, funding) are calls.
    """
    (bkf, bki, po, pf, tab, lven, lperp, lfee, lstat, lint, imaxq, fp, ip, ctr, istat, px,
     act) = S
    ni = bkf.shape[0]
    nl = lven.shape[0]
    ntab = tab.shape[0]
    cap = out.shape[0] // 16
    collect = ow.shape[0] == 0
    for r in range(n):
        o = r * 8
        w0 = bi[o]
        iid = w0 & 0xFFFFFFFF
        vid = (w0 >> 32) & 0xFFFF
        kind = (w0 >> 48) & 0xFF
        if collect:
            need = 2 * nl if kind != _STATUS else ctr[C_OPEN_NOW]
            if io[IO_N] + need > cap:
                return r
        t = bi[o + 6]
        ctr[C_UPDATES] += 1
        ctr[C_LAST_TRIG] = t
        if kind == _STATUS:
            _on_status(S, out, ow, io, vid, iid, bi[o + 1] & 0xFFFFFFFF, t)
            continue
        i = iid & _CMASK
        k = -1
        if vid < ntab:
            k = tab[vid, 1 if (iid & _PERP_BIT) != 0 else 0]
        if k < 0 or i <= 0 or i >= ni:
            ctr[F_UNKNOWN] += 1
            continue
        if kind == _FUNDING:
            _on_funding(S, i, k, _as_f64(bi[o + 1]), bi[o + 2], bi[o + 3] & 0xFFFFFFFF)
            continue
        if kind != _QUOTE:
            ctr[F_UNKNOWN] += 1
            continue
        ctr[C_QUOTES] += 1
        bid = _as_f64(bi[o + 1])
        ask = _as_f64(bi[o + 2])
        bq = _as_f64(bi[o + 3])
        aq = _as_f64(bi[o + 4])
        if not (bid > 0.0 and ask > bid and ask < _INF and bq > 0.0 and bq < _INF
                and aq > 0.0 and aq < _INF):
            _invalid_quote(S, out, ow, io, i, k, t)
            continue
        bkf[i, k, 0] = bid
        bkf[i, k, 1] = ask
        bkf[i, k, 2] = bq
        bkf[i, k, 3] = aq
        px[i, k, 0] = bid
        px[i, k, 1] = ask
        istat[i, k] = _UP       # a quote of a symbol means it is fresh
        bki[i, k, 0] = t
        bki[i, k, 1] = bi[o + 5]
        # A pair that is neither open nor pending (act) and has no positive gross spread
        # needs no evaluation (its outcome would be "nothing happens"): most pairs, most of
        # the time. The scan reads px[i] (bid/ask of every leg) and act[i, k].
        m = act[i, k]
        for j in range(nl):
            if j == k:
                continue
            bj = px[i, j, 0]
            aj = px[i, j, 1]
            if bj > ask or ((m >> j) & 1) != 0:
                _evaluate(S, out, ow, io, i, k, j, t)
                m = act[i, k]
            if (bid > aj and aj > 0.0) or ((m >> (32 + j)) & 1) != 0:
                _evaluate(S, out, ow, io, i, j, k, t)
                m = act[i, k]
    return n


@njit(**_KW)
def process_words(S, bi, n, out, ow, io):
    """Kernel entry: apply n updates; in ring mode publish everything to ``ow``."""
    S[13][C_CALLS] += 1
    if io.shape[0] > IO_READ_NS:
        io[IO_READ_NS] = realtime_ns()
    k = _process(S, bi, n, out, ow, io)
    _flush(out, ow, io, S[13])
    return k


@njit(**_KW)
def sweep(S, out, ow, io, now):
    """Close open opportunities with a leg quote older than max_quote_age at ``now``."""
    (bkf, bki, po, pf, tab, lven, lperp, lfee, lstat, lint, imaxq, fp, ip, ctr, istat, px,
     act) = S
    ctr[C_SWEEPS] += 1
    if ctr[C_OPEN_NOW] == 0:
        return
    max_age = ip[I_MAX_AGE]
    ni = bkf.shape[0]
    nl = lven.shape[0]
    for i in range(1, ni):
        for b in range(nl):
            m = act[i, b] & 0xFFFFFFFF
            s = -1
            while m != 0:
                s += 1
                bit = m & 1
                m >>= 1
                if bit != 0 and po[i, b, s, 0] != 0:
                    rb = bki[i, b, 0]
                    rs = bki[i, s, 0]
                    if now - rb > max_age or now - rs > max_age:
                        _close(S, out, ow, io, i, b, s, _R_STALE, rb if rb < rs else rs)
    _flush(out, ow, io, ctr)


@njit(**_KW)
def close_all(S, out, ow, io, reason, trig):
    """Close every open opportunity with ``reason`` (SHUTDOWN at exit)."""
    bkf, po, lven, ctr, act = S[0], S[2], S[5], S[13], S[16]
    ni = bkf.shape[0]
    nl = lven.shape[0]
    for i in range(1, ni):
        for b in range(nl):
            m = act[i, b] & 0xFFFFFFFF
            s = -1
            while m != 0:
                s += 1
                bit = m & 1
                m >>= 1
                if bit != 0 and po[i, b, s, 0] != 0:
                    _close(S, out, ow, io, i, b, s, reason, trig)
    _flush(out, ow, io, ctr)


@njit(**_KW)
def pump(S, rings, sts, slots, buf, batch, max_records, out, ow, io):
    """Poll every feed ring (round robin, ``batch`` records each), apply and publish, until
    all are empty or ``max_records`` were taken. Returns records taken. io[IO_PWAKE] gets
    bit r set when ring r's blocked producer must be woken, io[IO_RWAKE] = 1 when readers
    of ``ow`` must be woken."""
    ctr = S[13]
    hfa = _io_hist_addr(io, IO_HIST_FEED)
    ctr[C_CALLS] += 1
    total = 0
    nr = len(rings)
    while total < max_records:
        got = 0
        for r in range(nr):
            res = K.spsc_pop(rings[r], buf, batch, sts[r], slots[r])
            k = res & _LOW
            if (res >> 32) != 0:
                io[IO_PWAKE] |= 1 << r
            if k > 0:
                got += k
                now = realtime_ns()
                io[IO_READ_NS] = now
                if hfa != 0:
                    hf = _hist_at(hfa)
                    for j in range(k):
                        hist_record(hf, now - buf[j * 8 + 6])
                _process(S, buf, k, out, ow, io)
                _flush(out, ow, io, ctr)
        total += got
        if got == 0:
            break
    return total


@njit(**_KW)
def any_readable(rings, spins):
    """Spin up to ``spins`` rounds over every ring; True as soon as one has a record."""
    nr = len(rings)
    for _ in range(spins + 1):
        for r in range(nr):
            if K.spsc_readable(rings[r], 0):
                return True
    return False


# ---------------------------------------------------------------- Python side ----

class Detector:
    """Detection state for one config. ``process`` (collect mode) returns the Opportunity
    records an array of MarketUpdates produced; ``attach_output(ring)`` switches to ring
    mode (records go straight into a BroadcastRing's words inside the kernel).
    ``hist_feed`` / ``hist_detect``: histogram words (``arbpipe.transport.histogram``) of the
    feed_to_detector and detect hops; private zeroed ones when None."""

    def __init__(self, cfg: Config, counters: np.ndarray | None = None,
                 leg_status: np.ndarray | None = None, opp_id_base: int = 0,
                 out_records: int | None = None, hist_feed: np.ndarray | None = None,
                 hist_detect: np.ndarray | None = None):
        self.cfg = cfg
        self.legs: LegTable = cfg.legs()
        d = cfg.detector
        nl = len(self.legs)
        ni = len(cfg.instruments) + 1
        self.n_legs, self.n_instruments = nl, ni - 1
        bkf = np.zeros((ni, nl, 8), np.float64)
        bki = np.zeros((ni, nl, 4), np.int64)
        bki[:, :, 3] = self.legs.funding_interval_s[None, :]
        po = np.zeros((ni, nl, nl, 4), np.int64)
        pf = np.zeros((ni, nl, nl, 8), np.float64)
        imaxq = np.full(ni, np.inf)
        ids = cfg.instrument_ids()
        for name, q in d.max_exec_qty.items():
            imaxq[ids[name]] = q
        fp = np.zeros(16, np.float64)
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
        ip = np.zeros(8, np.int64)
        ip[I_MAX_AGE] = int(round(d.max_quote_age_ms * 1e6))
        ip[I_PERSIST_N] = d.persist_updates
        ip[I_PERSIST_NS] = int(round(d.persist_ms * 1e6))
        ip[I_OPP_BASE] = opp_id_base
        ctr = counters if counters is not None else np.zeros(N_COUNTERS, np.int64)
        ctr[:] = 0
        ctr[C_NLEGS] = nl
        ctr[C_NINST] = ni - 1
        lstat = leg_status if leg_status is not None else np.zeros(nl, np.int64)
        lstat[:] = _UP
        self.counters = ctr
        self.leg_status = lstat
        if nl > 32:
            raise ValueError(f"{nl} legs: the detector supports at most 32")
        istat = np.full((ni, nl), _UP, np.int64)
        px = np.zeros((ni, nl, 2), np.float64)
        act = np.zeros((ni, nl), np.int64)
        self.hist_feed = H.empty() if hist_feed is None else hist_feed
        self.hist_detect = H.empty() if hist_detect is None else hist_detect
        for h in (self.hist_feed, self.hist_detect):   # the kernels write them by address
            if h.dtype != np.int64 or not h.flags.c_contiguous or len(h) < H.W_DATA + H.NB:
                raise ValueError("a hop histogram must be the int64 words of a histogram")
        self.S = (bkf, bki, po, pf, self.legs.tab, self.legs.venue, self.legs.is_perp,
                  self.legs.taker_fee_bps, lstat, self.legs.funding_interval_s, imaxq, fp, ip,
                  ctr, istat, px, act)
        # collect mode: out must hold any single update's worst case (a status closing
        # every open opportunity) plus one quote's
        worst = (ni - 1) * nl * nl + 2 * nl
        self.out = np.zeros(OPP_WORDS * max(out_records or 0, worst, 1024), np.int64)
        self.io = np.zeros(IO_WORDS, np.int64)
        self.io[IO_HIST_FEED] = self.hist_feed.ctypes.data
        self.io[IO_HIST_DETECT] = self.hist_detect.ctypes.data
        self.ow = np.zeros(0, np.int64)

    # -- ring mode ----------------------------------------------------------------
    def attach_output(self, ring, staging_records: int = 256) -> None:
        """Publish straight into ``ring`` (a BroadcastRing of Opportunity) from the kernel."""
        self.ring = ring
        self.ow = ring.w
        self.out = np.zeros(OPP_WORDS * staging_records, np.int64)

    def _take(self) -> np.ndarray:
        n = int(self.io[IO_N])
        self.io[IO_N] = 0
        return self.out[:n * OPP_WORDS].copy().view(OPPORTUNITY)

    # -- collect mode -------------------------------------------------------------
    def process(self, updates) -> np.ndarray:
        """Apply MarketUpdates (structured array or flat int64 words); return the
        Opportunity records produced (empty in ring mode)."""
        words = updates if (isinstance(updates, np.ndarray) and updates.dtype == np.int64) \
            else np.ascontiguousarray(updates).reshape(-1).view(np.int64)
        n = len(words) // MU_WORDS
        parts = []
        done = 0
        while done < n:
            k = process_words(self.S, words[done * MU_WORDS:], n - done, self.out, self.ow,
                              self.io)
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
        sweep(self.S, self.out, self.ow, self.io, now)
        self._wake()
        return self._take() if self.ow.shape[0] == 0 else np.zeros(0, OPPORTUNITY)

    def close_all(self, reason: int = _R_SHUT, trig_ns: int | None = None) -> np.ndarray:
        trig = time.time_ns() if trig_ns is None else int(trig_ns)
        close_all(self.S, self.out, self.ow, self.io, int(reason), trig)
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
        po = self.S[2]
        idx = np.argwhere(po[:, :, :, 0] != 0)
        return [(int(i), int(b), int(s), int(po[i, b, s, 0])) for i, b, s in idx]

    def book(self, instrument_id: int, leg: int) -> dict:
        bkf, bki = self.S[0], self.S[1]
        i = instrument_id & CANONICAL_MASK
        return {"bid": bkf[i, leg, 0], "ask": bkf[i, leg, 1], "bid_qty": bkf[i, leg, 2],
                "ask_qty": bkf[i, leg, 3], "funding_rate": bkf[i, leg, 4],
                "recv_ts_ns": int(bki[i, leg, 0]), "exchange_ts_ns": int(bki[i, leg, 1]),
                "next_funding_ns": int(bki[i, leg, 2]),
                "funding_interval_s": int(bki[i, leg, 3])}


def wake_readers(ring) -> None:
    """Post the doorbell of every sleeping reader of a BroadcastRing."""
    ring.wake_readers()


def wake_producer(ring) -> None:
    """Post a BLOCK-policy SPSC ring's producer doorbell if the producer sleeps."""
    ring.wake_producer()


def counters_dict(ctr, leg_status=None, leg_names=None) -> dict:
    d = {name: int(ctr[i]) for i, name in enumerate(COUNTER_NAMES)}
    n = d["opened"] + d["updated"]
    d["latency_mean_ns"] = d["latency_sum_ns"] // n if n else 0
    if leg_status is not None:
        names = leg_names or [f"leg{i}" for i in range(len(leg_status))]
        d["legs"] = {names[i]: VenueStatus(int(leg_status[i])).name
                     if int(leg_status[i]) in (1, 2, 3) else int(leg_status[i])
                     for i in range(len(leg_status))}
    return d


# ---------------------------------------------------------------- stats segment --

class DetectorStats:
    """The ``detector.stats`` segment: counters written in place by the kernel."""

    def __init__(self, seg):
        self.seg = seg
        w = seg.words
        self.counters = w[STATS_WORD0:STATS_WORD0 + N_COUNTERS]
        self.leg_status = w[STATS_WORD0 + N_COUNTERS:STATS_WORD0 + N_COUNTERS + MAX_LEGS_IN_STATS]

    @classmethod
    def create(cls, instance: str) -> "DetectorStats":
        from arbpipe.transport.segments import HeaderInfo, Segment
        words = N_COUNTERS + MAX_LEGS_IN_STATS
        h = HeaderInfo(L.MAGIC, L.LAYOUT_VERSION, STATS_KIND, 8, words, 0, 0, 0, 0, 0, 0, 0,
                       L.BLOCK, STATS_NAME)
        return cls(Segment.create(instance, STATS_NAME, 4096, h, reclaim_stale=True))

    def legs_view(self, n: int) -> np.ndarray:
        return self.leg_status[:n]

    def close(self, unlink: bool = True) -> None:
        from arbpipe.transport import segments
        inst = self.seg.instance
        self.counters = self.leg_status = None
        self.seg.close()
        if unlink:
            segments.unlink(inst, STATS_NAME)


def read_stats(instance: str | None = None, leg_names: list[str] | None = None) -> dict | None:
    """Counters of a running (or last) detector of ``instance``, or None if there is none.
    ``leg_names`` (``load_config(...).legs().names``) labels the per-leg venue status."""
    from arbpipe.transport import segments
    instance = instance or segments.default_instance()
    try:
        seg = segments.Segment.attach(instance, STATS_NAME, kind=STATS_KIND)
    except segments.SegmentError:
        return None
    try:
        w = seg.words
        ctr = np.array(w[STATS_WORD0:STATS_WORD0 + N_COUNTERS])
        nl = int(ctr[C_NLEGS])
        legs = np.array(w[STATS_WORD0 + N_COUNTERS:STATS_WORD0 + N_COUNTERS + nl])
        d = counters_dict(ctr, legs, leg_names if leg_names and len(leg_names) == nl else None)
        h = seg.header
        d["pid"] = h.creator_pid
        d["alive"] = not h.stale
        return d
    finally:
        seg.close()


def render_stats(d: dict | None) -> str:
    if d is None:
        return "no detector stats (is the detector running?)"
    keys = ["updates", "quotes", "funding", "status", "evaluations", "opened", "updated",
            "closed", "open_now", "published"]
    lines = [f"detector pid {d.get('pid')} {'alive' if d.get('alive') else 'GONE'}",
             "  " + "  ".join(f"{k}={d[k]}" for k in keys),
             "  closed: " + "  ".join(f"{k[7:]}={d[k]}" for k in
                                      ("closed_spread_gone", "closed_quote_stale",
                                       "closed_venue_down", "closed_shutdown")),
             "  filters: " + "  ".join(f"{k[7:]}={d[k]}" for k in COUNTER_NAMES
                                       if k.startswith("filter_")),
             f"  latency trigger recv -> OPEN/UPDATE publish: mean {d['latency_mean_ns'] / 1e3:.1f} us, "
             f"max {d['latency_max_ns'] / 1e3:.1f} us"]
    if d.get("legs"):
        lines.append("  legs: " + "  ".join(f"{k}={v}" for k, v in d["legs"].items()))
    return "\n".join(lines)


# ---------------------------------------------------------------- the process loop -

FEED_RING = "feed.{venue}"
OPP_RING = "opportunities"
HIST_HOPS = ("feed_to_detector", "detect")   # hist.<hop> segments of the service
SPIN_ROUNDS = 64     # idle: rounds over every input ring in numba (~10 us) before yielding
IDLE_YIELDS = 4      # then sched_yield this many times, re-checking


class RingWatchers:
    """Sleep until any of several SPSC rings has a record, without polling.

    A process can block on one semaphore only, and each feed ring has its own doorbell;
    so one small thread per ring blocks on that ring's doorbell (``SpscRing.wait``, GIL
    released) while the main thread sleeps on an Event. Protocol (no lost wake-up): the
    main thread sets every ``go[i]``, clears ``wake``, re-checks the rings, then waits on
    ``wake``; watcher i waits for ``go[i]``, arms its doorbell and blocks; when its ring
    becomes readable it clears ``go[i]`` and sets ``wake``. A watcher re-arms every
    ``poll_s`` (so it notices ``close``); while nothing arrives the process makes only
    those few wake-ups per second.
    """

    def __init__(self, rings: list, poll_s: float = 0.25):
        import threading
        self.poll_s = poll_s
        self.wake = threading.Event()
        self.go = [threading.Event() for _ in rings]
        self.closing = False
        self.threads = [threading.Thread(target=self._watch, args=(i, r), daemon=True,
                                         name=f"doorbell-{i}") for i, r in enumerate(rings)]
        for t in self.threads:
            t.start()

    def _watch(self, i, ring) -> None:
        import posix_ipc
        go = self.go[i]
        while not self.closing:
            if not go.wait(self.poll_s):
                continue
            try:
                ready = ring.wait(self.poll_s)
            except posix_ipc.SignalError:
                continue
            if ready and not self.closing:
                go.clear()
                self.wake.set()

    def sleep(self, ready, timeout: float) -> bool:
        """Block until a watched ring is readable, ``ready()`` is true, or ``timeout``."""
        for g in self.go:
            g.set()
        self.wake.clear()
        if ready():
            return True
        return self.wake.wait(timeout)

    def close(self) -> None:
        self.closing = True
        for g in self.go:
            g.set()
        for t in self.threads:
            t.join(timeout=5 * self.poll_s + 1.0)


class DetectorService:
    """The detector process's body: feed rings in, ``opportunities`` out, stats segment,
    hop histograms ``hist.feed_to_detector`` and ``hist.detect`` (created here, unlinked at
    close).

    Loop: ``pump`` (numba) polls every input ring round robin in batches, applies the
    updates and publishes into the broadcast ring, returning to Python when all inputs
    are empty or after ``detector.max_records_per_call`` records. Housekeeping (staleness
    sweep, heartbeat) runs every ``detector.sweep_ms``. Idle: spin ``SPIN_ROUNDS`` rounds
    over all inputs in numba, yield ``IDLE_YIELDS`` times, then sleep in ``RingWatchers``
    (one doorbell thread per input ring) until a record arrives or the next sweep is due:
    ~0% CPU when idle, a wake-up of tens of microseconds when data resumes.
    """

    def __init__(self, cfg: Config, instance: str | None = None, log=print):
        from arbpipe.transport.segments import default_instance
        self.cfg = cfg
        self.instance = instance or default_instance()
        self.log = log
        self.venues = list(cfg.enabled_venues())
        self.inputs: list = []
        self.opp = None
        self.created_opp = False
        self.watchers = None
        self._loop_state = None
        self.stats_seg = DetectorStats.create(self.instance)
        self.hists = []
        try:
            for hop in HIST_HOPS:
                self.hists.append(H.Histogram.create(self.instance, hop))
        except Exception:
            self._close_hists()
            self.stats_seg.close(unlink=True)
            raise
        legs = cfg.legs()
        if len(legs) > MAX_LEGS_IN_STATS:
            raise ValueError(f"{len(legs)} legs: the stats segment holds {MAX_LEGS_IN_STATS}")
        self.det = Detector(cfg, counters=self.stats_seg.counters,
                            leg_status=self.stats_seg.legs_view(len(legs)),
                            opp_id_base=opp_id_base_now(), hist_feed=self.hists[0].h,
                            hist_detect=self.hists[1].h)
        self._closed = False

    # -- rings ----------------------------------------------------------------------
    def attach_inputs(self, stop=lambda: False, retry_s: float = 0.1) -> bool:
        """Attach ``feed.<venue>`` of every enabled venue, retrying until they all exist
        (False if ``stop()`` turned true first)."""
        from arbpipe.transport.rings import SpscRing
        from arbpipe.transport.segments import SegmentNotFound
        pending = {v: None for v in self.venues}
        last_note = 0.0
        while True:
            for v in list(pending):
                try:
                    r = SpscRing.attach(FEED_RING.format(venue=v), self.instance,
                                        record="MarketUpdate")
                except SegmentNotFound:
                    continue
                r.join("detector")
                r.spin, r.yields = 0, 0     # the service spins over all rings itself
                del pending[v]
                self.inputs.append((v, r))
            if not pending:
                order = {v: k for k, v in enumerate(self.venues)}
                self.inputs.sort(key=lambda x: order[x[0]])
                return True
            if stop():
                return False
            now = time.monotonic()
            if now - last_note > 5.0:
                self.log(f"detector: waiting for rings {', '.join(FEED_RING.format(venue=v) for v in pending)}")
                last_note = now
            time.sleep(retry_s)

    def open_output(self) -> None:
        """Attach the ``opportunities`` broadcast ring, creating it if nobody did."""
        from arbpipe.transport.rings import BroadcastRing
        from arbpipe.transport.segments import SegmentExists, SegmentNotFound
        spec = self.cfg.rings.opportunities
        for _ in range(50):
            try:
                self.opp = BroadcastRing.attach(OPP_RING, self.instance, record="Opportunity")
                break
            except SegmentNotFound:
                pass
            try:
                self.opp = BroadcastRing.create(OPP_RING, spec.capacity, "Opportunity",
                                                instance=self.instance)
                self.created_opp = True
                break
            except SegmentExists:
                continue
        if self.opp is None:
            raise RuntimeError("cannot attach or create the opportunities ring")
        self.det.attach_output(self.opp)

    # -- loop -------------------------------------------------------------------------
    def _prepare(self):
        if self._loop_state is None:
            from numba.typed import List
            rings = List()
            for _, r in self.inputs:
                rings.append(r.w)
            nr = len(self.inputs)
            sts = np.zeros((max(nr, 1), 4), np.int64)
            slots = np.array([r.slot_w for _, r in self.inputs] or [0], np.int64)
            buf = np.zeros(self.cfg.detector.batch * MU_WORDS, np.int64)
            self._loop_state = (rings, sts, slots, buf)
        return self._loop_state

    def _pump(self) -> int:
        rings, sts, slots, buf = self._prepare()
        if len(rings) == 0:
            return 0
        det, d = self.det, self.cfg.detector
        n = pump(det.S, rings, sts, slots, buf, d.batch, d.max_records_per_call, det.out,
                 det.ow, det.io)
        if det.io[IO_RWAKE] or det.io[IO_PWAKE]:
            self._wakes(det.io)
        return n

    def warm_up(self) -> None:
        """Load every kernel the loop uses (numba cache) before declaring ready."""
        rings = self._prepare()[0]
        self._pump()
        if len(rings):
            any_readable(rings, 0)
        det = self.det
        sweep(det.S, det.out, det.ow, det.io, time.time_ns())
        if det.counters[C_OPEN_NOW] == 0:
            close_all(det.S, det.out, det.ow, det.io, _R_SHUT, 0)

    def run(self, stop=lambda: False) -> None:
        det = self.det
        rings = self._prepare()[0]
        nr = len(rings)
        S, out, io, ctr = det.S, det.out, det.io, det.counters
        sweep_s = self.cfg.detector.sweep_ms / 1e3
        next_sweep = time.monotonic() + sweep_s
        if nr:
            self.watchers = RingWatchers([r for _, r in self.inputs],
                                         self.cfg.detector.idle_poll_ms / 1e3)
        ctr[C_HEARTBEAT] = time.time_ns()
        while not stop():
            n = self._pump()
            now = time.monotonic()
            if now >= next_sweep:
                sweep(S, out, det.ow, io, time.time_ns())
                if io[IO_RWAKE]:
                    self._wakes(io)
                ctr[C_HEARTBEAT] = time.time_ns()
                next_sweep = now + sweep_s
            if n:
                continue
            if nr == 0:
                time.sleep(max(next_sweep - now, 1e-3))
                continue
            if any_readable(rings, SPIN_ROUNDS):
                continue
            ready = False
            for _ in range(IDLE_YIELDS):
                os.sched_yield()
                if any_readable(rings, 0):
                    ready = True
                    break
            if ready:
                continue
            ctr[C_IDLE] += 1
            self.watchers.sleep(lambda: any_readable(rings, 0), max(next_sweep - now, 1e-4))

    def _wakes(self, io) -> None:
        if io[IO_RWAKE]:
            io[IO_RWAKE] = 0
            wake_readers(self.opp)
        m = int(io[IO_PWAKE])
        if m:
            io[IO_PWAKE] = 0
            for r in range(len(self.inputs)):
                if m >> r & 1:
                    wake_producer(self.inputs[r][1])

    def drain(self, timeout_s: float = 2.0) -> int:
        """Apply what is left in the input rings (bounded by ``timeout_s``)."""
        if self.opp is None:
            return 0
        total = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = self._pump()
            total += n
            if n == 0:
                break
        return total

    def close(self) -> None:
        """Drain, close every open opportunity (SHUTDOWN), detach; unlink what we created."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.watchers is not None:
                self.watchers.close()
                self.watchers = None
            if self.opp is not None:
                self.drain()
                close_all(self.det.S, self.det.out, self.det.ow, self.det.io, _R_SHUT,
                          time.time_ns())
                self._wakes(self.det.io)
        finally:
            self._loop_state = None
            for _, r in self.inputs:
                r.close()
            self.inputs = []
            if self.opp is not None:
                self.det.ow = np.zeros(0, np.int64)
                self.det.ring = None
                self.opp.close()
                if self.created_opp:
                    self.opp.unlink()
                self.opp = None
            self.det.S = self.det.counters = self.det.leg_status = None
            self.det.io[IO_HIST_FEED] = self.det.io[IO_HIST_DETECT] = 0
            self.det.hist_feed = self.det.hist_detect = None
            self.stats_seg.close(unlink=True)
            self._close_hists()

    def _close_hists(self) -> None:
        for h in self.hists:
            h.close(unlink=True)
        self.hists = []


def decode(words: np.ndarray) -> np.ndarray:
    """Opportunity records from flat int64 words."""
    return np.ascontiguousarray(words).view(OPPORTUNITY)


def opp_id_base_now() -> int:
    """A base for opp ids unique across detector restarts: start second << 32."""
    return (time.time_ns() // 1_000_000_000) << 32


_ = os
