"""OKX v5 public: ``bbo-tbt`` (spot and SWAP) and ``funding-rate`` (SWAP).

Wire (docs/venues.md, "OKX"): one socket ``/ws/v5/public``; every
``bbo-tbt`` push is a full level-1 snapshot ``[price, size, "0", orders]`` with
``ts`` (string, ms, matching-engine time) and ``seqId`` (int, per instId).
Units produced: prices in quote currency; quantities in base units (SWAP sizes
are contracts, multiplied by ``Instrument.contract_size`` = ctVal); timestamps ns.

Keep-alive: the client sends the bare text ``ping`` before 30 s of silence, the
server answers the bare text ``pong``. A ``64008`` notice announces a planned
disconnect (``Control(kind="notice", reconnect=True)``).
"""
from __future__ import annotations

import re

import msgspec

from arbpipe.feeds.venues.base import Control, SocketSpec, VenueAdapter, decode_frame
from arbpipe.feeds.venues.checks import (MAX_MS, MS, NO_SEQ, U4_END, book_reject, funding_ok,
                                         stale_reason)
from arbpipe.symbols import Instrument

_ARGS_PER_MESSAGE = 50              # keeps each subscribe frame far below the 64 KB cap
_DEFAULT_FUNDING_INTERVAL_S = 28800  # OKX default (8 h) when nextFundingTime is missing


class _Arg(msgspec.Struct):
    channel: str = ""
    instId: str = ""


class _Data(msgspec.Struct):
    """Union of the ``data[]`` items of ``bbo-tbt`` and ``funding-rate``."""
    asks: list[list[str]] | None = None
    bids: list[list[str]] | None = None
    ts: str = ""
    seqId: int | None = None
    fundingRate: str = ""
    fundingTime: str = ""
    nextFundingTime: str = ""


class _Msg(msgspec.Struct):
    """Data push (``arg`` + ``data``) or event (``event``, ``code``, ``msg``)."""
    arg: _Arg | None = None
    data: list[_Data] | None = None
    event: str = ""
    code: str = ""
    msg: str = ""


_decode = msgspec.json.Decoder(_Msg).decode
_INST_IN_TEXT = re.compile(r"instId\W*([A-Za-z0-9]+(?:-[A-Za-z0-9]+)+)")


def _ms_to_ns(text: str) -> int:
    """Decimal string of ms since the epoch -> ns (fits i8); -1 when it is not one."""
    if text.isdigit() and text.isascii() and len(text) <= 13:
        ms = int(text)
        if ms <= MAX_MS:
            return ms * MS
    return -1


class OkxAdapter(VenueAdapter):
    """OKX spot + SWAP BBO (``bbo-tbt``) and SWAP funding (``funding-rate``)."""

    name = "okx"
    default_url = "wss://ws.okx.com:8443"
    market = "spot"      # also serves SWAP instruments (native ends in "-SWAP")
    path = "/ws/v5/public"

    def __init__(self, instruments: list[Instrument], venue_id: int = 0):
        super().__init__(instruments, venue_id)
        self._last_seq: dict[str, int] = {}

    def sockets(self) -> list[SocketSpec]:
        args = [{"channel": "bbo-tbt", "instId": i.native} for i in self.instruments]
        args += [{"channel": "funding-rate", "instId": i.native}
                 for i in self.instruments if i.native.endswith("-SWAP")]
        frames = [msgspec.json.encode({"op": "subscribe", "args": args[k:k + _ARGS_PER_MESSAGE]}).decode()
                  for k in range(0, len(args), _ARGS_PER_MESSAGE)]
        return [SocketSpec(self.path, frames, ping_text="ping", ping_interval_s=20.0)]

    def on_connect(self, socket_index: int) -> None:
        self._last_seq.clear()

    def _parse(self, frame, sink) -> Control | None:
        if frame == "pong" or frame == b"pong":
            return Control("pong")
        m = decode_frame(_decode, frame, sink)
        if m is None:
            return None
        arg = m.arg
        if m.data is not None and arg is not None:
            if arg.channel == "bbo-tbt":
                return self._bbo(arg.instId, m.data, sink)
            if arg.channel == "funding-rate":
                return self._funding(arg.instId, m.data, sink)
            sink.reject("unknown_channel")
            return None
        if m.event:
            return self._event(m)
        sink.reject("bad_shape")
        return None

    def _bbo(self, inst_id: str, data: list[_Data], sink) -> None:
        inst = self.by_native.get(inst_id)
        if inst is None:
            sink.reject("unknown_symbol", len(data) or 1)
            return None
        if not data:
            sink.reject("bad_shape")
            return None
        last_seq = self._last_seq
        for d in data:
            asks, bids, seq = d.asks, d.bids, d.seqId
            if not asks or not bids or seq is None or len(asks[0]) < 2 or len(bids[0]) < 2:
                sink.reject("bad_shape")
                continue
            prev = last_seq.get(inst_id, NO_SEQ)
            if seq <= prev:
                sink.reject(stale_reason(seq, prev))
                continue
            ts = _ms_to_ns(d.ts)
            try:
                bid = float(bids[0][0])
                bq = float(bids[0][1])
                ask = float(asks[0][0])
                aq = float(asks[0][1])
            except ValueError:
                sink.reject("bad_shape")
                continue
            if ts < 0:
                sink.reject("bad_shape")
                continue
            why = book_reject(bid, ask, bq, aq)
            if why is not None:
                sink.reject(why)
                continue
            last_seq[inst_id] = seq
            cs = inst.contract_size
            sink.quote(inst.instrument_id, bid, ask, bq * cs, aq * cs, ts)
        return None

    def _funding(self, inst_id: str, data: list[_Data], sink) -> None:
        inst = self.by_native.get(inst_id)
        if inst is None:
            sink.reject("unknown_symbol", len(data) or 1)
            return None
        if not data:
            sink.reject("bad_shape")
            return None
        for d in data:
            ts = _ms_to_ns(d.ts)
            t_next = _ms_to_ns(d.fundingTime)
            try:
                rate = float(d.fundingRate)
            except ValueError:
                rate = None
            if rate is None or ts < 0 or t_next < 0:
                sink.reject("bad_shape")
                continue
            if t_next == 0:                # "0": no next funding time is not one
                sink.reject("bad_ts")
                continue
            if not funding_ok(rate, 0.0):   # OKX sends no mark price
                sink.reject("bad_price")
                continue
            t_after = _ms_to_ns(d.nextFundingTime)
            interval_s = (t_after - t_next) // 1_000_000_000 if t_after > t_next else 0
            if not 0 < interval_s < U4_END:
                interval_s = _DEFAULT_FUNDING_INTERVAL_S
            sink.funding(inst.instrument_id, rate, t_next, interval_s, 0.0, ts)
        return None

    @staticmethod
    def _event(m: _Msg) -> Control:
        ev, arg = m.event, m.arg
        inst = arg.instId if arg is not None else ""
        if ev in ("subscribe", "unsubscribe"):
            return Control("ack", detail=f"{ev} {arg.channel if arg else ''}".rstrip(), symbol=inst)
        if ev == "error":
            if not inst:
                found = _INST_IN_TEXT.search(m.msg)
                inst = found.group(1) if found else ""
            return Control("error", detail=f"{m.code} {m.msg}".strip(), symbol=inst)
        if ev == "notice":
            return Control("notice", detail=f"{m.code} {m.msg}".strip(), reconnect=m.code == "64008")
        return Control("other", detail=ev)

    @staticmethod
    def native_to_canonical(native: str) -> str | None:
        """``BTC-USDT`` / ``BTC-USDT-SWAP`` -> ``BTC/USDT``; dated futures -> None."""
        parts = native.split("-")
        if len(parts) == 3 and parts[2] == "SWAP":
            parts.pop()
        if len(parts) == 2 and parts[0] and parts[1]:
            return f"{parts[0]}/{parts[1]}"
        return None
