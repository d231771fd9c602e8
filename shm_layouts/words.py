"""The records of ``shm_layouts.records`` seen as little-endian 64-bit words.

Numba kernels move records as ``uint64``/``int64`` words: a MarketUpdate is 8 words, an
Opportunity 24. This module names every word index and every bit field inside a word,
each derived from the dtype's offsets (so it cannot drift from ``records``), and gives
the accessors that pack and unpack them. Kernels use these names; numba folds the
module-level constants, and ``arbpipe.transport.words`` compiles the accessors inline.

MarketUpdate, 8 words (``MU_*``)

    word  bits    field                  kinds
    ----  ------  ---------------------  ---------------------------------
       0  0..31   instrument_id          all
       0  32..47  venue_id               all
       0  48..55  kind                   all
       0  56..63  flags                  all
       1  f64     bid | funding_rate     QUOTE | FUNDING
       1  f64     price                  LEVEL
       1  0..31   status                 STATUS
       1  32..63  status_reason          STATUS
       2  f64/i64 ask | next_funding_ns  QUOTE | FUNDING
       2  f64     qty                    LEVEL
       3  f64     bid_qty                QUOTE
       3  u64     update_id              LEVEL
       3  0..31   funding_interval_s     FUNDING
       3  32..63  mark_price (f32 bits)  FUNDING
       4  f64     ask_qty                QUOTE
       4  0..31   depth                  LEVEL
       5  i64     exchange_ts_ns         all
       6  i64     recv_ts_ns             all
       7  u64     seq                    all

Opportunity, 24 words (``OP_*``)

    word  bits    field
    ----  ------  ---------------------
       0  0..31   instrument_id
       0  32..47  buy_venue
       0  48..63  sell_venue
       1  0..7    state
       1  8..15   close_reason
       1  16..31  flags
       1  32..63  confidence (f32 bits)
       2  f64     buy_ask
       3  f64     sell_bid
       4  f64     exec_qty
       5  f64     gross_bps
       6  f64     net_bps
       7  f64     funding_delta_bps
       8  i64     trigger_recv_ns
       9  i64     detect_ns
      10  u64     opp_id
      11  u64     seq
      12  i64     opened_ns
      13  f64     vwap_buy
      14  f64     vwap_sell
      15  f64     profit
      16  f64     profit_usd
      17  f64     top_gross_bps
      18  f64     carry_bps
      19  0..15   buy_levels
      19  16..31  sell_levels
   20-23          reserved, zero
"""
from shm_layouts.records import (MARKET_UPDATE, MARKET_UPDATE_FUNDING, MARKET_UPDATE_LEVEL,
                                 MARKET_UPDATE_STATUS, OPPORTUNITY)


def word_of(dtype, name):
    """Index of the 64-bit word that holds field ``name``."""
    return dtype.fields[name][1] // 8


def shift_of(dtype, name):
    """Bit position of field ``name`` inside its word (little-endian)."""
    return (dtype.fields[name][1] % 8) * 8


def mask_of(dtype, name):
    """Mask of field ``name`` once shifted down to bit 0."""
    return (1 << (8 * dtype.fields[name][0].itemsize)) - 1


MU_WORDS = MARKET_UPDATE.itemsize // 8
OP_WORDS = OPPORTUNITY.itemsize // 8

# -- MarketUpdate word 0: instrument_id | venue_id << 32 | kind << 48 | flags << 56 -----
MU_HEAD = word_of(MARKET_UPDATE, "instrument_id")
MU_IID_SHIFT = shift_of(MARKET_UPDATE, "instrument_id")
MU_IID_MASK = mask_of(MARKET_UPDATE, "instrument_id")
MU_VENUE_SHIFT = shift_of(MARKET_UPDATE, "venue_id")
MU_VENUE_MASK = mask_of(MARKET_UPDATE, "venue_id")
MU_KIND_SHIFT = shift_of(MARKET_UPDATE, "kind")
MU_KIND_MASK = mask_of(MARKET_UPDATE, "kind")
MU_FLAGS_SHIFT = shift_of(MARKET_UPDATE, "flags")
MU_FLAGS_MASK = mask_of(MARKET_UPDATE, "flags")
# -- QUOTE --------------------------------------------------------------------------
MU_BID = word_of(MARKET_UPDATE, "bid")
MU_ASK = word_of(MARKET_UPDATE, "ask")
MU_BID_QTY = word_of(MARKET_UPDATE, "bid_qty")
MU_ASK_QTY = word_of(MARKET_UPDATE, "ask_qty")
MU_EXCHANGE_TS = word_of(MARKET_UPDATE, "exchange_ts_ns")
MU_RECV_TS = word_of(MARKET_UPDATE, "recv_ts_ns")
MU_SEQ = word_of(MARKET_UPDATE, "seq")
# -- FUNDING ------------------------------------------------------------------------
MU_FUNDING_RATE = word_of(MARKET_UPDATE_FUNDING, "funding_rate")
MU_NEXT_FUNDING = word_of(MARKET_UPDATE_FUNDING, "next_funding_ns")
MU_FUNDING_INTERVAL = word_of(MARKET_UPDATE_FUNDING, "funding_interval_s")
MU_FUNDING_INTERVAL_MASK = mask_of(MARKET_UPDATE_FUNDING, "funding_interval_s")
MU_MARK_PRICE_SHIFT = shift_of(MARKET_UPDATE_FUNDING, "mark_price")
# -- STATUS -------------------------------------------------------------------------
MU_LEVEL_PRICE = word_of(MARKET_UPDATE_LEVEL, "price")
MU_LEVEL_QTY = word_of(MARKET_UPDATE_LEVEL, "qty")
MU_LEVEL_UPDATE_ID = word_of(MARKET_UPDATE_LEVEL, "update_id")
MU_LEVEL_DEPTH = word_of(MARKET_UPDATE_LEVEL, "depth")
MU_LEVEL_DEPTH_MASK = mask_of(MARKET_UPDATE_LEVEL, "depth")

MU_STATUS = word_of(MARKET_UPDATE_STATUS, "status")
MU_STATUS_MASK = mask_of(MARKET_UPDATE_STATUS, "status")
MU_STATUS_REASON_SHIFT = shift_of(MARKET_UPDATE_STATUS, "status_reason")
MU_STATUS_REASON_MASK = mask_of(MARKET_UPDATE_STATUS, "status_reason")

# -- Opportunity word 0: instrument_id | buy_venue << 32 | sell_venue << 48 -----------
OP_HEAD = word_of(OPPORTUNITY, "instrument_id")
OP_IID_MASK = mask_of(OPPORTUNITY, "instrument_id")
OP_BUY_VENUE_SHIFT = shift_of(OPPORTUNITY, "buy_venue")
OP_SELL_VENUE_SHIFT = shift_of(OPPORTUNITY, "sell_venue")
OP_VENUE_MASK = mask_of(OPPORTUNITY, "buy_venue")
# -- word 1: state | close_reason << 8 | flags << 16 | confidence (f32 bits) << 32 --------
OP_STATE_WORD = word_of(OPPORTUNITY, "state")
OP_STATE_MASK = mask_of(OPPORTUNITY, "state")
OP_REASON_SHIFT = shift_of(OPPORTUNITY, "close_reason")
OP_REASON_MASK = mask_of(OPPORTUNITY, "close_reason")
OP_FLAGS_SHIFT = shift_of(OPPORTUNITY, "flags")
OP_FLAGS_MASK = mask_of(OPPORTUNITY, "flags")
OP_CONFIDENCE_SHIFT = shift_of(OPPORTUNITY, "confidence")
# -- one field per word -------------------------------------------------------------
OP_BUY_ASK = word_of(OPPORTUNITY, "buy_ask")
OP_SELL_BID = word_of(OPPORTUNITY, "sell_bid")
OP_EXEC_QTY = word_of(OPPORTUNITY, "exec_qty")
OP_GROSS_BPS = word_of(OPPORTUNITY, "gross_bps")
OP_NET_BPS = word_of(OPPORTUNITY, "net_bps")
OP_FUNDING_DELTA = word_of(OPPORTUNITY, "funding_delta_bps")
OP_TRIGGER_RECV = word_of(OPPORTUNITY, "trigger_recv_ns")
OP_DETECT_NS = word_of(OPPORTUNITY, "detect_ns")
OP_ID = word_of(OPPORTUNITY, "opp_id")
OP_SEQ = word_of(OPPORTUNITY, "seq")
OP_OPENED_NS = word_of(OPPORTUNITY, "opened_ns")
OP_VWAP_BUY = word_of(OPPORTUNITY, "vwap_buy")
OP_VWAP_SELL = word_of(OPPORTUNITY, "vwap_sell")
OP_PROFIT = word_of(OPPORTUNITY, "profit")
OP_PROFIT_USD = word_of(OPPORTUNITY, "profit_usd")
OP_TOP_GROSS = word_of(OPPORTUNITY, "top_gross_bps")
OP_CARRY = word_of(OPPORTUNITY, "carry_bps")
# -- word 19: buy_levels | sell_levels << 16 -------------------------------------------
OP_LEVELS = word_of(OPPORTUNITY, "buy_levels")
OP_SELL_LEVELS_SHIFT = shift_of(OPPORTUNITY, "sell_levels")
OP_LEVELS_MASK = mask_of(OPPORTUNITY, "buy_levels")
OP_RESERVED = OP_LEVELS + 1             # words OP_RESERVED .. OP_WORDS - 1 are zero


# -- accessors (plain Python; ``arbpipe.transport.words`` compiles them for kernels) ------
def mu_instrument(w0):
    return (w0 >> MU_IID_SHIFT) & MU_IID_MASK


def mu_venue(w0):
    return (w0 >> MU_VENUE_SHIFT) & MU_VENUE_MASK


def mu_kind(w0):
    return (w0 >> MU_KIND_SHIFT) & MU_KIND_MASK


def mu_flags(w0):
    return (w0 >> MU_FLAGS_SHIFT) & MU_FLAGS_MASK


def mu_head(instrument_id, venue_id, kind, flags):
    """Word 0 of a MarketUpdate."""
    return ((instrument_id & MU_IID_MASK) << MU_IID_SHIFT | (venue_id & MU_VENUE_MASK)
            << MU_VENUE_SHIFT | (kind & MU_KIND_MASK) << MU_KIND_SHIFT
            | (flags & MU_FLAGS_MASK) << MU_FLAGS_SHIFT)


def mu_status(w1):
    return w1 & MU_STATUS_MASK


def mu_status_reason(w1):
    return (w1 >> MU_STATUS_REASON_SHIFT) & MU_STATUS_REASON_MASK


def mu_funding_interval(w3):
    return w3 & MU_FUNDING_INTERVAL_MASK


def op_head(instrument_id, buy_venue, sell_venue):
    """Word 0 of an Opportunity."""
    return ((instrument_id & OP_IID_MASK) | (buy_venue & OP_VENUE_MASK) << OP_BUY_VENUE_SHIFT
            | (sell_venue & OP_VENUE_MASK) << OP_SELL_VENUE_SHIFT)


def op_levels(buy_levels, sell_levels):
    """Word 19 of an Opportunity."""
    return (buy_levels & OP_LEVELS_MASK) | (sell_levels & OP_LEVELS_MASK) << OP_SELL_LEVELS_SHIFT


def op_state_word(state, reason, flags, confidence_bits):
    """Word 1 of an Opportunity; ``confidence_bits`` are the f32 bits of the confidence."""
    return ((state & OP_STATE_MASK) | (reason & OP_REASON_MASK) << OP_REASON_SHIFT
            | (flags & OP_FLAGS_MASK) << OP_FLAGS_SHIFT | confidence_bits << OP_CONFIDENCE_SHIFT)
