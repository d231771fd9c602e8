"""Bybit v5 public adapters (venue-protocols.md section 2).

``bybit-spot``    ``orderbook.1.<SYMBOL>`` on ``/v5/public/spot``. Level 1 is snapshot-only;
                  the top bid/ask levels are the quote (any ``orderbook.<N>`` snapshot works
                  the same way; a depth > 1 ``delta`` cannot be applied without a book and is
                  rejected as ``unsupported``). Exchange time = ``cts`` (matching engine),
                  else ``ts``.
``bybit-linear``  ``tickers.<SYMBOL>`` on ``/v5/public/linear``: one ``snapshot`` then
                  ``delta`` frames in which absent fields are unchanged, so the adapter keeps
                  merged per-symbol state. Every accepted frame re-publishes the merged quote
                  (``bid1Price/bid1Size/ask1Price/ask1Size``; a push re-asserts the BBO as of
                  its ``ts``) and publishes funding (``fundingRate``, ``nextFundingTime``,
                  ``fundingIntervalHour``, ``markPrice``) when the frame carries one of those.
                  Exchange time = ``ts``.

Units: prices in quote currency, sizes in base coin, ms on the wire -> ns (x 1_000_000),
funding interval hours -> seconds. ``Flag.SNAPSHOT`` is set when the frame's ``type`` is
``snapshot``.

Ordering, per (topic kind, symbol), by the key (update id, ts) with update id = ``data.u``
(orderbook) or ``cs`` (tickers): an equal key is a ``duplicate``, a smaller one
``out_of_order``. An equal update id with a newer ``ts`` is accepted: this is the idle
re-send of the level-1 snapshot every 3 s (same ``u``), and the ticker push whose ``cs`` did
not move; it is re-published so the quote stays fresh downstream. ``u == 1`` in an
orderbook snapshot means a venue service restart and resets the symbol's order, and so does
any ticker ``snapshot`` (only an exact repeat of the last key is a ``duplicate``). State is
per connection and reset by ``on_connect``.

Keep-alive: the client sends ``{"op":"ping"}`` every 20 s; spot and linear pongs differ
(``req_id`` only on linear) and both classify as ``Control("pong")``. One subscribe frame
per topic with ``req_id`` = topic, so a failed ack names its topic even when ``ret_msg``
does not (e.g. ``"Params Error"``).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec

from arbpipe.venues.base import Control, Instrument, SocketSpec, VenueAdapter, register
from arbpipe.venues.binance import split_concatenated
from shm_layouts import Flag

_INF = math.inf
_MAX_MS = (2**63 - 1) // 1_000_000
_F4_MAX = 3.0e38
_SNAP = int(Flag.SNAPSHOT)
_DEFAULT_INTERVAL_S = 8 * 3600
_TOPIC_RE = re.compile(r"((?:orderbook\.\d+|tickers)\.([^\s,\]\"']+))")
_UNSET = msgspec.UNSET


class _Envelope(msgspec.Struct, gc=False):
    """Data frames (topic type ts cts cs data) and op replies (success ret_msg op req_id)."""
    topic: str | None = None
    type: str | None = None
    ts: int = 0
    cts: int = 0
    cs: int | None = None
    data: msgspec.Raw = msgspec.Raw()
    success: bool | None = None
    ret_msg: str = ""
    op: str | None = None
    req_id: Any = None


class _Book(msgspec.Struct, gc=False):
    """``orderbook.N`` data: levels are [price, size] strings, bids descending."""
    s: str
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    u: int
    seq: int | None = None


class _Ticker(msgspec.Struct, gc=False):
    """``tickers`` data; None = absent from this frame (unchanged in a delta)."""
    symbol: str
    bid1Price: str | None = None
    bid1Size: str | None = None
    ask1Price: str | None = None
    ask1Size: str | None = None
    markPrice: str | None = None
    fundingRate: str | None = None
    nextFundingTime: str | None = None
    fundingIntervalHour: str | None = None


_decode_env = msgspec.json.Decoder(_Envelope).decode
_decode_book = msgspec.json.Decoder(_Book).decode
_decode_ticker = msgspec.json.Decoder(_Ticker).decode

_BBO_FIELDS = ("bid1Price", "bid1Size", "ask1Price", "ask1Size")
_FUNDING_FIELDS = ("markPrice", "fundingRate", "nextFundingTime", "fundingIntervalHour")


class _BybitBase(VenueAdapter):
    """Shared parsing; subclasses set ``name``, ``market``, ``_path`` and ``_channel``."""

    default_url = "wss://stream.bybit.com"
    _path: str
    _channel: str                       # topic prefix subscribed per symbol

    def __init__(self, instruments: list[Instrument], venue_id: int = 0):
        super().__init__(instruments, venue_id)
        self._ids = {i.native: i.instrument_id for i in instruments}
        self._last: dict[tuple[str, str], tuple[int, int]] = {}   # (kind, sym) -> (id, ts)
        self._tickers: dict[str, dict[str, str]] = {}             # merged ticker fields

    @staticmethod
    def native_to_canonical(native: str) -> str | None:
        return split_concatenated(native)

    def sockets(self) -> list[SocketSpec]:
        subs = [json.dumps({"req_id": t, "op": "subscribe", "args": [t]})
                for t in (f"{self._channel}{i.native}" for i in self.instruments)]
        return [SocketSpec(path=self._path, subscribe=subs, ping_text='{"op":"ping"}',
                           ping_interval_s=20.0)]

    def on_connect(self, socket_index: int) -> None:
        self._last.clear()
        self._tickers.clear()

    # -- parse -----------------------------------------------------------------
    def parse(self, frame, recv_ns: int, sink, socket_index: int = 0) -> Control | None:
        try:
            env = _decode_env(frame)
        except msgspec.ValidationError:
            sink.reject("bad_shape")
            return None
        except Exception:                  # DecodeError, bad unicode in a str frame, ...
            sink.reject("not_json")
            return None
        topic = env.topic
        try:
            if topic is None:
                return self._reply(env, sink)
            if not len(env.data) or env.type not in ("snapshot", "delta"):
                sink.reject("bad_shape")
            elif not 0 <= env.ts <= _MAX_MS or not 0 <= env.cts <= _MAX_MS:
                sink.reject("bad_ts")
            elif topic.startswith("orderbook."):
                self._book(env, sink)
            elif topic.startswith("tickers."):
                self._ticker(env, sink)
            else:
                sink.reject("unknown_topic")
        except msgspec.ValidationError:
            sink.reject("bad_shape")
        except (ValueError, TypeError, OverflowError, RecursionError):  # float("x"), odd Any
            sink.reject("bad_shape")
        return None

    def _in_order(self, key: tuple[str, str], seq: tuple[int, int], sink) -> bool:
        last = self._last.get(key)
        if last is not None and seq <= last:
            sink.reject("duplicate" if seq == last else "out_of_order")
            return False
        return True

    def _book(self, env: _Envelope, sink) -> None:
        if env.type != "snapshot":
            sink.reject("unsupported")     # depth > 1 delta; level 1 is snapshot-only
            return
        d = _decode_book(env.data)
        iid = self._ids.get(d.s)
        if iid is None:
            sink.reject("unknown_symbol")
            return
        if not d.b or not d.a:
            sink.reject("empty_book")
            return
        (bp, bq), (ap, aq) = d.b[0], d.a[0]
        bid, bid_qty, ask, ask_qty = float(bp), float(bq), float(ap), float(aq)
        if not (0.0 < bid < _INF and 0.0 < ask < _INF and 0.0 <= bid_qty < _INF
                and 0.0 <= ask_qty < _INF):
            sink.reject("bad_price")
            return
        if bid > ask:
            sink.reject("crossed")
            return
        key = ("ob", d.s)
        if d.u == 1:                       # service restart: the book starts over
            self._last.pop(key, None)
        seq = (d.u, env.ts)
        if not self._in_order(key, seq, sink):
            return
        self._last[key] = seq
        sink.quote(iid, bid, ask, bid_qty, ask_qty, (env.cts or env.ts) * 1_000_000, _SNAP)

    def _ticker(self, env: _Envelope, sink) -> None:
        d = _decode_ticker(env.data)
        sym = d.symbol
        iid = self._ids.get(sym)
        if iid is None:
            sink.reject("unknown_symbol")
            return
        key = ("tk", sym)
        seq = (env.cs if env.cs is not None else 0, env.ts)
        snapshot = env.type == "snapshot"
        if snapshot and self._last.get(key) != seq:
            pass                           # a new snapshot restarts the symbol's order
        elif not self._in_order(key, seq, sink):
            return
        self._last[key] = seq
        state = {} if snapshot else self._tickers.setdefault(sym, {})
        if snapshot:
            self._tickers[sym] = state
        has_funding = False
        for f in _BBO_FIELDS:
            v = getattr(d, f)
            if v is not None:
                state[f] = v
        for f in _FUNDING_FIELDS:
            v = getattr(d, f)
            if v is not None:
                state[f] = v
                has_funding = True
        ts_ns = env.ts * 1_000_000
        flags = _SNAP if snapshot else 0
        emitted = self._ticker_quote(iid, state, ts_ns, flags, sink)
        if has_funding:
            emitted = self._ticker_funding(iid, state, ts_ns, sink) or emitted
        if not emitted:
            sink.reject("no_bbo")          # nothing publishable yet (e.g. spot tickers)

    @staticmethod
    def _ticker_quote(iid: int, st: dict, ts_ns: int, flags: int, sink) -> bool:
        """Publish the merged BBO; True if published or rejected (counted)."""
        b, bq, a, aq = (st.get(f) for f in _BBO_FIELDS)
        if not (b and bq and a and aq):    # a side never seen, or "" (empty side)
            return False
        try:
            bid, bid_qty, ask, ask_qty = float(b), float(bq), float(a), float(aq)
        except ValueError:
            sink.reject("bad_shape")
            return True
        if not (0.0 < bid < _INF and 0.0 < ask < _INF and 0.0 <= bid_qty < _INF
                and 0.0 <= ask_qty < _INF):
            sink.reject("bad_price")
        elif bid > ask:
            sink.reject("crossed")
        else:
            sink.quote(iid, bid, ask, bid_qty, ask_qty, ts_ns, flags)
        return True

    @staticmethod
    def _ticker_funding(iid: int, st: dict, ts_ns: int, sink) -> bool:
        """Publish merged funding; True if published or rejected (counted)."""
        r, nxt = st.get("fundingRate"), st.get("nextFundingTime")
        if not r or not nxt:               # dated futures: "" (no funding)
            return False
        hours, m = st.get("fundingIntervalHour"), st.get("markPrice")
        try:
            rate, next_ms = float(r), int(nxt)
            interval_s = int(hours) * 3600 if hours else _DEFAULT_INTERVAL_S
            mark = float(m) if m else 0.0
        except ValueError:
            sink.reject("bad_shape")
            return True
        if not (-_INF < rate < _INF and 0.0 <= mark < _F4_MAX):
            sink.reject("bad_price")
        elif not (0 < next_ms <= _MAX_MS and 0 < interval_s < 2**32):
            sink.reject("bad_ts")
        else:
            sink.funding(iid, rate, next_ms * 1_000_000, interval_s, mark, ts_ns)
        return True

    def _reply(self, env: _Envelope, sink) -> Control | None:
        """Op replies: pong (spot and linear shapes), subscribe acks and failures."""
        op, msg = env.op, env.ret_msg
        if op is None and env.success is None:
            sink.reject("bad_shape")
            return None
        if op in ("ping", "pong") or msg == "pong":
            return Control(kind="pong" if env.success is not False else "error", detail=msg)
        if env.success is False:
            where = f"{msg} {env.req_id if isinstance(env.req_id, str) else ''}"
            hit = _TOPIC_RE.search(where)
            topic = hit.group(1) if hit else ""
            sym = hit.group(2) if hit else ""
            if not topic and "topic:" in msg:
                topic = msg.split("topic:", 1)[1].strip()
            return Control(kind="error", detail=f"{op}: {msg} [{topic}]", symbol=sym)
        if op in ("subscribe", "unsubscribe"):
            return Control(kind="ack", detail=f"{op} {env.req_id}")
        return Control(kind="other", detail=f"{op}: {msg}")


@register
class BybitSpot(_BybitBase):
    """Bybit spot BBO from ``orderbook.1.<SYMBOL>``."""
    name = "bybit-spot"
    market = "spot"
    _path = "/v5/public/spot"
    _channel = "orderbook.1."


@register
class BybitLinear(_BybitBase):
    """Bybit USDT/USDC perpetual BBO + funding from ``tickers.<SYMBOL>`` (merged deltas)."""
    name = "bybit-linear"
    market = "perp"
    _path = "/v5/public/linear"
    _channel = "tickers."
