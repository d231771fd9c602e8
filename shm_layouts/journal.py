"""The strategy's trade journal record: every order, fill, reject and breaker event.

JournalEntry -- 128 bytes, two cache lines, little-endian
==========================================================

    offset size type  field            meaning
    ------ ---- ----  ---------------  ------------------------------------------------------
         0    8 u8    seq              journal sequence, 1, 2, 3, ... (continues across restarts)
         8    8 i8    ts_ns            CLOCK_REALTIME ns the entry was made
        16    1 u1    kind             JournalKind
        17    1 u1    side             Side (NONE for breaker / kill-switch entries)
        18    1 u1    reason           RejectReason (REJECT), BreakerReason (BREAKER), else 0
        19    1 u1    flags            JournalFlag bits
        20    2 u2    venue_id         venue of the order / fill (0: not venue specific)
        22    2 u2    (reserved, zero)
        24    4 u4    instrument_id    canonical id, | PERP_ID_BIT for a perp market leg
        28    4 u4    (reserved, zero)
        32    8 u8    order_id         strategy order id (both legs of a pair share the pair's
                                       id: leg 1 is 2n+1, leg 2 is 2n+2; an unwind is its
                                       source order's id + UNWIND_ID_OFFSET; 0 for non-orders)
        40    8 u8    opp_id           Opportunity.opp_id that caused it (0: none)
        48    8 f8    price            order limit / fill price, quote currency
        56    8 f8    qty              base-asset units (fills: the filled quantity)
        64    8 f8    notional         price x qty, quote currency
        72    8 f8    fee              fee charged on this fill, quote currency (>= 0)
        80    8 f8    realized_pnl     realized PnL this fill closed, quote currency, before fees
        88    8 f8    limit            REJECT: the limit that was hit; BREAKER: the threshold
        96    8 f8    value            REJECT: the value that broke it; FILL: slippage bps;
                                       BREAKER: the observed value
       104    8 i8    trigger_recv_ns  Opportunity.trigger_recv_ns (feed receive time)
       112    8 i8    detect_ns        Opportunity.detect_ns (published by the detector)
       120    8 i8    read_ns          when the strategy read the opportunity

Fields used by the kinds of the trade's life (the others as above):

    kind           fields
    -------------  ------------------------------------------------------------------------
    TRANSFER       order_id: transfer id (1, 2, ...); venue_id: from; opp_id: to venue id;
                   reason: TransferAsset; instrument_id: an instrument naming the asset (its
                   base for BASE, its quote for QUOTE); qty: units debited at the source;
                   value: the withdrawal fee, asset units; price: the asset's mid used to
                   value it (1 for the quote asset); fee: value x price, quote currency (the
                   transfer fee in PnL); trigger_recv_ns: when it arrives
    TRANSFER_DONE  order_id, venue_id, opp_id, reason, instrument_id as its TRANSFER; qty:
                   units credited at the destination (qty - value of the TRANSFER)
    FUNDING        venue_id, instrument_id (perp leg); qty: the signed position paid on;
                   price: the mid it was valued at; value: the funding rate; realized_pnl:
                   the payment, signed (+ received, - paid), quote currency;
                   trigger_recv_ns: the funding time it settles
    EXIT           order_id: the entry pair's buy-leg order id (the trade); reason:
                   ExitReason; qty: the larger open leg; value: the exit spread (bps);
                   limit: the rule's threshold. The exit's two legs follow as ORDER entries
                   with flag EXIT_LEG, ids ``exit_order_id``
    EQUITY         a sample of the PnL: value: net; realized_pnl: fills; fee: trading fees;
                   limit: transfer fees; price: funding; notional: unrealized

Units: prices and money in the instrument's quote currency (USDT in the default config).
Order ids: ``pair_order_ids``, ``pair_of``, ``UNWIND_ID_OFFSET`` and ``exit_order_id``.
"""
import enum

import numpy as np

UNWIND_ID_OFFSET = 1_000_000_000_000   # order_id of an unwind = its source order's + this


def pair_order_ids(pair_id):
    """order_id of the buy leg and of the sell leg of pair ``pair_id``."""
    return 2 * pair_id + 1, 2 * pair_id + 2


def pair_of(order_id):
    """The pair id an order id (a leg's, an unwind's or an exit's) belongs to."""
    return (order_id % UNWIND_ID_OFFSET - 1) // 2


def exit_order_id(order_id, attempt):
    """order_id of attempt ``attempt`` (0, 1, ...) to close the leg of entry order
    ``order_id``: the entry's id + (2 + attempt) x UNWIND_ID_OFFSET."""
    return order_id % UNWIND_ID_OFFSET + (2 + attempt) * UNWIND_ID_OFFSET


def is_buy_leg(order_id):
    """True for an order of a pair's buy leg (its entry, unwind or exit)."""
    return (order_id % UNWIND_ID_OFFSET) % 2 == 1


class JournalKind(enum.IntEnum):
    ORDER = 1           # an order passed every risk check and was sent (simulated)
    FILL = 2            # (part of) an order filled
    REJECT = 3          # an order failed a check; ``reason`` says which
    UNWIND = 4          # a one-leg fill was flattened at the next quote (an order entry)
    BREAKER = 5         # the circuit breaker tripped; ``reason`` says why
    RESET = 6           # the breaker was reset by an operator
    KILL_SWITCH = 7     # the kill switch was flipped; ``flags`` has KILL_ON when now on
    MISSED = 8          # an order that got no fill (quote moved, nothing left)
    TRANSFER = 9        # a simulated transfer between venues left its source
    TRANSFER_DONE = 10  # ... and arrived
    FUNDING = 11        # funding paid or received on a perp leg at a funding time
    EXIT = 12           # an exit rule fired on a pair with a perp leg; ``reason``: ExitReason
    EQUITY = 13         # a sample of the equity curve (the PnL components)


class ExitReason(enum.IntEnum):
    NONE = 0
    CONVERGED = 1       # closing costs <= exit_net_bps
    MAX_HOLD = 2        # held max_hold_s
    STOP = 3            # the basis widened stop_basis_bps against the entry
    KILL_SWITCH = 4     # kill switch on with kill_switch_flatten
    SHUTDOWN = 5        # stop with flatten_on_stop


class TransferAsset(enum.IntEnum):
    NONE = 0
    BASE = 1
    QUOTE = 2


class Side(enum.IntEnum):
    NONE = 0
    BUY = 1
    SELL = 2


class RejectReason(enum.IntEnum):
    NONE = 0
    KILL_SWITCH = 1
    BREAKER = 2
    STALE_QUOTE = 3         # live top of book older than max_quote_age_ms
    IN_FLIGHT = 4           # the same instrument already has an order in flight
    BELOW_THRESHOLD = 5     # re-priced net spread below strategy.min_net_bps
    LOW_CONFIDENCE = 6
    MAX_ORDER_NOTIONAL = 7
    MAX_POSITION_INSTRUMENT = 8
    MAX_POSITION_VENUE = 9
    RATE_LIMIT_SECOND = 10
    RATE_LIMIT_MINUTE = 11
    FAT_FINGER = 12         # price too far from the venue's mid
    DAILY_LOSS = 13
    DRAWDOWN = 14
    BALANCE = 15            # not enough quote (buy) or base (sell) on the venue
    SIZE_TOO_SMALL = 16     # nothing left after sizing
    NO_QUOTE = 17           # no live top of book for a leg
    COOLDOWN = 18           # the same pair traded less than cooldown_ms ago
    OBSERVE_ONLY = 19       # mode = observe: would trade, nothing simulated
    MAX_OPEN_ORDERS = 20    # max_open_orders pairs already in flight
    MAX_GROSS = 21          # sum of |positions| everywhere would pass max_gross_notional


class BreakerReason(enum.IntEnum):
    NONE = 0
    DAILY_LOSS = 1
    DRAWDOWN = 2
    KILL_SWITCH = 3
    MANUAL = 4


class JournalFlag(enum.IntFlag):
    NONE = 0
    PARTIAL = 1         # FILL: less than the order quantity
    UNWIND_LEG = 2      # ORDER / FILL of an unwind
    PERP = 4            # the order's market is the venue's perp
    KILL_ON = 8         # KILL_SWITCH: the switch is now on
    RESTORED = 16       # written while rebuilding state after a restart
    OBSERVE = 32        # ORDER in observe mode: would have been sent, nothing simulated
    EXIT_LEG = 64       # ORDER / FILL / MISSED of an exit


JOURNAL = np.dtype({
    "names": ["seq", "ts_ns", "kind", "side", "reason", "flags", "venue_id", "instrument_id",
              "order_id", "opp_id", "price", "qty", "notional", "fee", "realized_pnl", "limit",
              "value", "trigger_recv_ns", "detect_ns", "read_ns"],
    "formats": ["<u8", "<i8", "u1", "u1", "u1", "u1", "<u2", "<u4",
                "<u8", "<u8", "<f8", "<f8", "<f8", "<f8", "<f8", "<f8",
                "<f8", "<i8", "<i8", "<i8"],
    "offsets": [0, 8, 16, 17, 18, 19, 20, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120],
    "itemsize": 128,
})
assert JOURNAL.itemsize == 128
