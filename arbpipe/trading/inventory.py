"""The inventory manager: per-venue balances kept inside bands by simulated transfers.

A spot <-> spot pair moves inventory: base leaves the venue that sold, quote the one that
bought. ``[strategy] inventory_bands`` gives, per asset, ``[low, target, high]`` for the
available balance of that asset on every venue that holds it (base assets: spot venues;
quote assets: every venue). ``tick`` (each strategy poll) first lands the transfers that
are due, then looks at each banded asset in name order, one transfer per asset in flight:

* a venue below ``low``: the venue holding the most sends it what brings it back to
  ``target`` (plus the withdrawal fee), at most what keeps the sender at ``target``;
* else a venue above ``high``: it sends what it holds above ``target`` to the venue
  holding the least, at most what brings that one to ``target`` (plus the fee).

The base an open trade's spot leg holds (``Trades.held``) is not counted as available: it
stays for the exit that sells it.

A transfer is debited at its source when sent and credited, less the source venue's
``[strategy] withdrawal_fee`` for the asset (asset units), at its destination
``transfer_delay_s`` later: while in flight the balance is on neither venue, so no order
can use it. The fee is booked once, when sent, in quote currency at the asset's mid on the
source venue (1 for a quote asset): ``Portfolio.transfer_fees``, a PnL component; the
base units it costs leave the balances, not the trading positions. A base transfer moves
the whole quantity between the two venues' spot leg positions when sent (what each venue's
mid marks: inventory in flight is marked at its destination), the PnL position stays. Every transfer is
journaled (TRANSFER, TRANSFER_DONE; fields in ``shm_layouts.journal``) and replayed by
``arbpipe.trading.restore`` through ``start`` / ``land``, the code paths used live.
"""
from __future__ import annotations

import dataclasses

from arbpipe.trading.book import LiveBook
from arbpipe.trading.journal import Journal
from arbpipe.trading.markets import Markets
from arbpipe.trading.portfolio import Portfolio
from shm_layouts.journal import JournalKind, TransferAsset

MIN_TRANSFER = 1e-12       # asset units: smaller moves are not made


@dataclasses.dataclass
class Transfer:
    tid: int
    src: int                 # venue ids
    dst: int
    asset: str
    kind: int                # TransferAsset
    iid: int                 # an instrument naming the asset
    qty: float               # debited at the source
    fee_units: float         # withdrawal fee, asset units (qty - fee_units arrives)
    price: float             # the asset's mid used to value the fee
    fee: float               # fee_units x price, quote currency
    sent_ns: int
    due_ns: int

    def report(self, m: Markets) -> dict:
        return {"id": self.tid, "asset": self.asset, "from": m.venue_names[self.src],
                "to": m.venue_names[self.dst], "qty": self.qty, "fee_units": self.fee_units,
                "fee": self.fee, "sent_ns": self.sent_ns, "due_ns": self.due_ns}


class Inventory:
    """Bands, transfers in flight and their journal; see the module docstring."""

    def __init__(self, cfg, markets: Markets, book: LiveBook, portfolio: Portfolio,
                 journal: Journal):
        s = cfg.strategy
        self.m = markets
        self.book = book
        self.portfolio = portfolio
        self.journal = journal
        self.bands = {a: tuple(float(x) for x in b) for a, b in sorted(s.inventory_bands.items())}
        ids = {cfg.venue_name(v): v for v in set(markets.venue)}
        self.fees = {(ids[v], a): float(x) for v, d in s.withdrawal_fee.items() if v in ids
                     for a, x in d.items()}
        self.delay_ns = int(round(s.transfer_delay_s * 1e9))
        self.in_flight: dict[int, Transfer] = {}
        self.next_id = 1
        self.done = 0

    # -- the code paths shared with restore ---------------------------------------------
    def start(self, t: Transfer) -> None:
        """Book a transfer leaving its source (balance, fee) and hold it in flight."""
        self.portfolio.move_balance(t.src, t.asset, -t.qty)
        self.portfolio.charge_transfer_fee(t.fee)
        if t.kind == TransferAsset.BASE:
            self.portfolio.move_position(t.iid, self.spot_leg(t.src), self.spot_leg(t.dst),
                                         t.qty)
        self.in_flight[t.tid] = t
        self.next_id = max(self.next_id, t.tid + 1)

    def land(self, tid: int) -> Transfer | None:
        """Book a transfer arriving: its destination gets qty less the fee."""
        t = self.in_flight.pop(tid, None)
        if t is not None:
            self.portfolio.move_balance(t.dst, t.asset, t.qty - t.fee_units)
            self.done += 1
        return t

    def spot_leg(self, vid: int) -> int:
        m = self.m
        return next((g for g in range(len(m)) if m.venue[g] == vid and not m.is_perp[g]), -1)

    # -- naming assets --------------------------------------------------------------------
    def asset_ref(self, asset: str) -> tuple[int, int]:
        """(TransferAsset, an instrument naming it) of an asset; (NONE, 0) if unknown."""
        for i, b in sorted(self.m.base.items()):
            if b == asset:
                return int(TransferAsset.BASE), i
        for i, q in sorted(self.m.quote.items()):
            if q == asset:
                return int(TransferAsset.QUOTE), i
        return int(TransferAsset.NONE), 0

    def asset_of(self, kind: int, iid: int) -> str:
        return self.m.base[iid] if kind == TransferAsset.BASE else self.m.quote[iid]

    def price_of(self, kind: int, iid: int, vid: int) -> float | None:
        """The asset's mid on venue ``vid`` (any spot venue when it has none); 1 for quote."""
        if kind == TransferAsset.QUOTE:
            return 1.0
        m = self.m
        legs = [g for g in range(len(m)) if not m.is_perp[g]]
        for g in sorted(legs, key=lambda g: m.venue[g] != vid):
            mid = self.book.mid(iid, g)
            if mid is not None:
                return mid
        return None

    # -- rebalancing ------------------------------------------------------------------------
    def holders(self, asset: str) -> list[int]:
        return sorted(v for v, b in self.portfolio.balances.items() if asset in b)

    def tick(self, now: int, orders, held: dict | None = None) -> int:
        """Land what is due, then start what the bands ask for. ``held``: (venue id, asset)
        -> units open trades still need there (the base a trade's spot leg holds until its
        exit sells it), never sent away. Returns transfers made."""
        held = held or {}
        n = 0
        for tid in sorted(t.tid for t in self.in_flight.values() if t.due_ns <= now):
            t = self.land(tid)
            self._journal(JournalKind.TRANSFER_DONE, t, now, t.qty - t.fee_units)
            n += 1
        busy = {t.asset for t in self.in_flight.values()}
        for asset, (lo, tgt, hi) in self.bands.items():
            if asset in busy:
                continue
            vids = self.holders(asset)
            if len(vids) < 2:
                continue
            bal = {v: self.portfolio.available(v, asset, orders) - held.get((v, asset), 0.0)
                   for v in vids}
            low = [v for v in vids if bal[v] < lo]
            high = [v for v in vids if bal[v] > hi]
            if low:
                dst = min(low, key=lambda v: (bal[v], v))
                src = max((v for v in vids if v != dst), key=lambda v: (bal[v], -v))
                fee = self.fees.get((src, asset), 0.0)
                qty = min(tgt - bal[dst] + fee, bal[src] - tgt)
            elif high:
                src = max(high, key=lambda v: (bal[v], -v))
                dst = min((v for v in vids if v != src), key=lambda v: (bal[v], v))
                fee = self.fees.get((src, asset), 0.0)
                qty = min(bal[src] - tgt, tgt - bal[dst] + fee)
            else:
                continue
            if qty - fee <= MIN_TRANSFER:
                continue
            kind, iid = self.asset_ref(asset)
            price = self.price_of(kind, iid, src)
            if price is None:
                continue
            t = Transfer(self.next_id, src, dst, asset, kind, iid, qty, fee, price,
                         fee * price, now, now + self.delay_ns)
            self.start(t)
            self._journal(JournalKind.TRANSFER, t, now, t.qty)
            n += 1
        return n

    def _journal(self, kind: int, t: Transfer, now: int, qty: float) -> None:
        f = dict(order_id=t.tid, venue_id=t.src, opp_id=t.dst, reason=t.kind,
                 instrument_id=t.iid, qty=qty, trigger_recv_ns=t.due_ns)
        if kind == JournalKind.TRANSFER:
            f.update(value=t.fee_units, price=t.price, fee=t.fee, notional=t.qty * t.price)
        self.journal.write(kind, ts_ns=now, **f)

    def from_entry(self, e: dict) -> Transfer:
        """The Transfer of a TRANSFER journal entry (restore)."""
        kind, iid = int(e["reason"]), int(e["instrument_id"])
        return Transfer(int(e["order_id"]), int(e["venue_id"]), int(e["opp_id"]),
                        self.asset_of(kind, iid), kind, iid, float(e["qty"]),
                        float(e["value"]), float(e["price"]), float(e["fee"]),
                        int(e["ts_ns"]), int(e["trigger_recv_ns"]))

    def report(self) -> dict:
        return {"in_flight": [t.report(self.m) for t in sorted(self.in_flight.values(),
                                                                 key=lambda t: t.tid)],
                "done": self.done, "transfer_fees": self.portfolio.transfer_fees}
