"""Venue parser fuzzing: generated and mutated frames through every adapter's parse path.

Each venue's adapter is built as the feed runtime builds it (``arbpipe.feeds.runtime.build_adapter``
with the symbol map of ``config/arbpipe.toml``) and driven as ``Feed.on_frame`` drives it:
``sink.recv_ns = now``, ``adapter.parse(frame, now, sink, socket_index)``, ``sink.flush()``
into a real SPSC ring (``RingSink``), with ``adapter.on_connect`` now and then as a
reconnect would. Frames are bytes, as websocket-client hands them over (a share are str).

Frames: valid frames of the venue's documented shapes (docs/venues.md; sequence ids
increasing, the instruments of the config), the venue's control frames (acks, errors,
pongs, notices), replays of earlier frames (duplicates, out of order), and mutants of
those: byte flips, inserted/deleted/duplicated bytes, truncation, splices; and at the JSON
level: deleted fields, type swaps, huge numbers, NaN/inf, unicode, nested junk, wrong
symbols, empty/oversized lists.

Checked for every frame (``FuzzStats``):
  * no exception escapes ``parse`` (``crashes``) and the adapter's last-resort guard never
    fires (``parse_errors``: a ``parse_error`` reject means a parser bug);
  * the frame is accounted for: it produced records, a ``Control``, applied book levels
    (Coinbase), or at least one reject by a named reason (``REJECT_REASONS``); a frame that
    does none of these is ``silent`` (must be 0); ``frames == parsed + rejected``, where a
    frame with both records and rejects counts as rejected (``partial`` says how many);
  * every record that reaches the ring is sane (``bad_records`` must be 0): kind quote or
    funding, the adapter's venue id, a subscribed instrument id, finite positive prices
    with bid <= ask, finite non-negative sizes, exchange time >= 0, known flags, funding
    rate finite and next funding time / interval positive, per-producer seq 1, 2, 3 ...

``run(frames_per_venue, workers)`` fuzzes every venue (one process per venue, ``workers``
at a time) and returns the figures; ``python -m bench.fuzz [N]`` prints them.
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import random
import sys
import time
import traceback
import uuid

import msgspec
import numpy as np

from arbpipe.config import load_config
from arbpipe.feeds.runtime import build_adapter
from arbpipe.feeds.sinks import RingSink
from arbpipe.symbols import SymbolMap
from arbpipe.transport.rings import SpscRing
from shm_layouts import MARKET_UPDATE, Flag, Kind
from shm_layouts.feed_stats import REJECT_REASONS
from shm_layouts.records import MARKET_UPDATE_FUNDING

VENUES = ("binance", "binance-usdm", "bybit-spot", "bybit-linear", "okx", "coinbase",
          "kraken", "gate")

_enc = msgspec.json.encode
_HUGE = (1e308, -1e308, 10**30, -(10**30), 2**63, 2**64, -(2**63) - 1, 10**400, 0, -1, -0.0,
         1e-320, 5e-324, 9007199254740993)
_ODD_NUM_STR = ("NaN", "nan", "-nan", "Infinity", "-Infinity", "inf", "-inf", "1e999",
                "-1e999", "0", "-0", "-1", "0x10", " 1.5", "1.5 ", "1_000", "1e-400", "",
                "1.2.3", "٣", "１２", "+5", ".5", "5.", "1e", "e5", "9" * 400,
                "0." + "0" * 300 + "1")
_UNICODE = ("\u0000", "\ud800", "\udfff", "\ufeff", "\u202e", "é", "漢字", "\U0001f600",
            "\\u0000", "\x7f", "BTC\u200bUSDT", "ＢＴＣＵＳＤＴ")
_WRONG_SYMBOLS = ("BTCUSDT", "btcusdt", "BTC-USDT", "BTC_USDT", "BTC/USDT", "BTC-USDT-SWAP",
                  "XBT/USD", "ETHBTC", "", " ", "BTCUSDT ", "DOGE-XYZ", "A" * 300,
                  "orderbook.1.BTCUSDT", "tickers.", "\u0000")


def _px(rng, base):
    return f"{base * (1 + rng.uniform(-0.01, 0.01)):.4f}"


class VenueFrames:
    """Valid frames of one venue (documented shapes) with increasing sequence ids."""

    def __init__(self, venue: str, natives: list[str], rng: random.Random, adapter=None):
        self.venue, self.natives, self.rng = venue, natives, rng
        self.adapter = adapter     # Coinbase: follow its sequence / books like a venue would
        self.seq = 1000
        self.ms = 1_760_000_000_000
        self.cb_seq = 0
        self.cb_books: set[str] = set()

    def _next(self):
        self.seq += self.rng.choice((1, 1, 1, 2, 7))
        self.ms += self.rng.randint(0, 50)
        return self.seq, self.ms

    def valid(self):
        """(frame object, socket index)."""
        rng, v = self.rng, self.venue
        sym = rng.choice(self.natives)
        seq, ms = self._next()
        bid = float(_px(rng, 100.0))
        ask = f"{bid + rng.choice((0.0, 0.01, 0.5)):.4f}"
        bid = f"{bid:.4f}"
        q1, q2 = f"{rng.uniform(0, 50):.3f}", f"{rng.uniform(0, 50):.3f}"
        if v == "binance":
            body = {"u": seq, "s": sym.upper(), "b": bid, "B": q1, "a": ask, "A": q2}
            if rng.random() < 0.2:
                body = {"stream": f"{sym.lower()}@bookTicker", "data": body}
            return body, 0
        if v == "binance-usdm":
            if rng.random() < 0.3:
                return {"e": "markPriceUpdate", "E": ms, "s": sym.upper(), "p": bid,
                        "i": bid, "P": bid, "r": f"{rng.uniform(-0.001, 0.001):.8f}",
                        "T": ms + 3_600_000}, 1
            return {"e": "bookTicker", "u": seq, "E": ms, "T": ms - 2, "s": sym.upper(),
                    "b": bid, "B": q1, "a": ask, "A": q2}, 0
        if v == "bybit-spot":
            return {"topic": f"orderbook.1.{sym}", "ts": ms, "type": "snapshot",
                    "data": {"s": sym, "b": [[bid, q1]], "a": [[ask, q2]], "u": seq,
                             "seq": seq * 10}, "cts": ms - 2}, 0
        if v == "bybit-linear":
            snap = rng.random() < 0.2
            data = {"symbol": sym, "bid1Price": bid, "bid1Size": q1, "ask1Price": ask,
                    "ask1Size": q2}
            if snap or rng.random() < 0.3:
                data.update(markPrice=bid, fundingRate=f"{rng.uniform(-0.001, 0.001):.6f}",
                            nextFundingTime=str(ms + 3_600_000), fundingIntervalHour="8")
            return {"topic": f"tickers.{sym}", "type": "snapshot" if snap else "delta",
                    "data": data, "cs": seq, "ts": ms}, 0
        if v == "okx":
            if sym.endswith("-SWAP") and rng.random() < 0.2:
                return {"arg": {"channel": "funding-rate", "instId": sym},
                        "data": [{"fundingRate": f"{rng.uniform(-0.001, 0.001):.8f}",
                                  "fundingTime": str(ms + 3_600_000),
                                  "nextFundingTime": str(ms + 3_600_000 + 28_800_000),
                                  "instId": sym, "ts": str(ms)}]}, 0
            return {"arg": {"channel": "bbo-tbt", "instId": sym},
                    "data": [{"asks": [[ask, q2, "0", "2"]], "bids": [[bid, q1, "0", "1"]],
                              "ts": str(ms), "seqId": seq}]}, 0
        if v == "coinbase":
            a = self.adapter
            if a is not None:   # a mutant moved the connection's sequence / dropped books
                self.cb_seq = max(self.cb_seq, a._last_seq or 0)
                self.cb_books &= set(a._books)
            self.cb_seq += 1
            t = _rfc3339(ms)
            if sym not in self.cb_books or rng.random() < 0.05:
                self.cb_books.add(sym)
                ups = [{"side": "bid", "event_time": t, "price_level": bid, "new_quantity": q1},
                       {"side": "offer", "event_time": t, "price_level": ask,
                        "new_quantity": q2}]
                ev = {"type": "snapshot", "product_id": sym, "updates": ups}
            else:
                ups = [{"side": rng.choice(("bid", "offer")), "event_time": t,
                        "price_level": rng.choice((bid, ask)),
                        "new_quantity": rng.choice((q1, "0"))}]
                ev = {"type": "update", "product_id": sym, "updates": ups}
            return {"channel": "l2_data", "client_id": "", "timestamp": t,
                    "sequence_num": self.cb_seq, "events": [ev]}, 0
        if v == "kraken":
            return {"channel": "ticker", "type": rng.choice(("snapshot", "update")),
                    "data": [{"symbol": sym, "bid": float(bid), "bid_qty": float(q1),
                              "ask": float(ask), "ask_qty": float(q2), "last": float(bid),
                              "timestamp": _rfc3339(ms)}]}, 0
        if v == "gate":
            return {"time": ms // 1000, "channel": "spot.book_ticker", "event": "update",
                    "result": {"t": ms, "u": seq, "s": sym, "b": bid, "B": q1, "a": ask,
                               "A": q2}}, 0
        raise ValueError(v)

    def controls(self):
        """The venue's control frames (documented acks, errors, pongs, notices)."""
        s = self.natives[0]
        cb_seq = self.cb_seq + 1
        return {
            "binance": ['{"result":null,"id":1}', '{"result":["btcusdt@aggTrade"],"id":3}',
                        '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}',
                        '{"code": 0, "msg": "Unknown property","id": 7}',
                        '{"e":"serverShutdown","E":1770123456789}',
                        '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}'],
            "binance-usdm": ['{"result":null,"id":3}', '{"e":"serverShutdown","E":1770123456789}',
                             '{"error":{"code":3,"msg":"Invalid JSON"}}'],
            "bybit-spot": ['{"success":true,"ret_msg":"subscribe","conn_id":"x","req_id":"1",'
                           '"op":"subscribe"}',
                           '{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}',
                           '{"success":false,"ret_msg":"error:handler not found,topic:'
                           f'orderbook.1.{s}","conn_id":"x","req_id":"orderbook.1.{s}",'
                           '"op":"subscribe"}'],
            "bybit-linear": ['{"success":true,"ret_msg":"","conn_id":"x","req_id":"",'
                             '"op":"subscribe"}',
                             '{"success":true,"ret_msg":"pong","conn_id":"x","req_id":"",'
                             '"op":"ping"}'],
            "okx": ["pong", '{"event":"subscribe","arg":{"channel":"bbo-tbt","instId":"%s"},'
                    '"connId":"a"}' % s,
                    '{"event":"error","msg":"Wrong URL or channel:tickers,instId:NMR-USDT '
                    'doesn\'t exist.","code":"60018","connId":"0d"}',
                    '{"event":"notice","code":"64008","msg":"reconnect","connId":"a"}'],
            "coinbase": ['{"channel":"subscriptions","client_id":"","timestamp":'
                         '"2026-04-07T14:30:00.000000Z","sequence_num":%d,"events":'
                         '[{"subscriptions":{"level2":["%s"]}}]}' % (cb_seq, s),
                         '{"type":"error","message":"Failed to subscribe","reason":'
                         '"DOGE-XYZ is not a valid product"}',
                         '{"channel":"heartbeats","client_id":"","timestamp":'
                         '"2023-06-23T20:31:26.122969572Z","sequence_num":%d,"events":'
                         '[{"current_time":"2023-06-23 20:31:56","heartbeat_counter":"3"}]}'
                         % (cb_seq,)],
            "kraken": ['{"channel": "heartbeat"}', '{"method":"pong","req_id":101}',
                       '{"channel":"status","type":"update","data":[{"version":"2.0.10",'
                       '"system":"online","api_version":"v2","connection_id":1}]}',
                       '{"method":"subscribe","result":{"channel":"ticker","symbol":"%s",'
                       '"snapshot":true,"event_trigger":"bbo"},"success":true}' % s,
                       '{"error":"Currency pair not supported XBT/USD","method":"subscribe",'
                       '"success":false,"symbol":"XBT/USD"}'],
            "gate": ['{"time":1611541000,"channel":"spot.book_ticker","event":"subscribe",'
                     '"error":null,"result":{"status":"success"}}',
                     '{"time":1611541000,"channel":"spot.book_ticker","event":"subscribe",'
                     '"error":{"code":2,"message":"Alert sub ob.BTC_USDT.400"},'
                     '"result":{"status":"fail"}}',
                     '{"time":1545404023,"channel":"spot.pong","event":"","error":null,'
                     '"result":null}',
                     '{"type":"upgrade","msg":"The connection will soon be closed."}'],
        }[self.venue]


def _rfc3339(ms: int) -> str:
    s, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:03d}000Z"


# ------------------------------------------------------------------ mutators ------

def _paths(obj, prefix=()):
    """Every (container, key) pair inside a JSON object."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((obj, k))
            out.extend(_paths(v))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((obj, i))
            out.extend(_paths(v))
    return out


def _junk(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice((None, True, False, 0, -1, 1.5, "", "x", [], {}, "0", "null",
                           rng.choice(_HUGE), rng.choice(_ODD_NUM_STR), rng.choice(_UNICODE)))
    if r < 0.6:
        return [_junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(("a", "b", "s", "u", "data", "", "e")): _junk(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def _swap_type(rng, v):
    if isinstance(v, str):
        return rng.choice((None, 0, 1.5, [], {}, True, [v], rng.choice(_ODD_NUM_STR),
                           rng.choice(_UNICODE), v * rng.randint(2, 50), v.upper(), v[::-1]))
    if isinstance(v, bool) or v is None:
        return rng.choice((0, 1, "true", "", [], {}, "null"))
    if isinstance(v, (int, float)):
        return rng.choice((str(v) if abs(v) < 10**300 else "1e999", None, [v], {},
                           rng.choice(_HUGE), -v, v * 10 + 1 if abs(v) < 10**300 else v,
                           rng.choice(_ODD_NUM_STR), True))
    if isinstance(v, list):
        return rng.choice(([], {}, None, "[]", v * rng.randint(2, 20), [v], v[:1] * 0,
                           [None] * 3, [[]]))
    if isinstance(v, dict):
        return rng.choice(([], None, "{}", [v], {}, {"": v}))
    return None


def mutate_object(obj, rng: random.Random, natives: list[str]):
    """Mutate a parsed JSON frame in place (1-3 edits); returns the object (or a new root)."""
    for _ in range(rng.randint(1, 3)):
        paths = _paths(obj)
        if not paths:
            return _junk(rng)
        parent, key = rng.choice(paths)
        v = parent[key]
        op = rng.random()
        if op < 0.18 and isinstance(parent, dict):
            del parent[key]                                            # field deletion
        elif op < 0.40:
            parent[key] = _swap_type(rng, v)                           # type swap
        elif op < 0.52:
            parent[key] = rng.choice(_HUGE)                            # huge numbers
        elif op < 0.62:
            parent[key] = rng.choice(_ODD_NUM_STR)                     # NaN / inf / odd
        elif op < 0.68:
            parent[key] = rng.choice((math.nan, math.inf, -math.inf))  # bare NaN tokens
        elif op < 0.74:
            parent[key] = (v if isinstance(v, str) else "") + rng.choice(_UNICODE)
        elif op < 0.80:
            parent[key] = _junk(rng)                                   # nested junk
        elif op < 0.88:
            parent[key] = rng.choice(_WRONG_SYMBOLS + tuple(n.lower() for n in natives[:3]))
        elif op < 0.93 and isinstance(parent, dict):
            parent[rng.choice(("extra", "data", "u", "s", "ts", "topic", "type", "event",
                               "channel", "arg", "result"))] = _junk(rng)
        elif op < 0.97:
            deep = _junk(rng)
            for _ in range(rng.randint(10, 200)):
                deep = [deep]
            parent[key] = deep
        else:
            return rng.choice(([obj], [], {}, "text", 42, None, [obj, obj]))
    return obj


def mutate_bytes(data: bytes, rng: random.Random, other: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:
            b = bytearray(rng.randbytes(rng.randint(0, 16)))
            continue
        op = rng.random()
        i = rng.randrange(len(b))
        if op < 0.3:
            b[i] ^= 1 << rng.randrange(8)                              # bit flip
        elif op < 0.45:
            b[i] = rng.choice(b'{}[]",:0-.eE\\ \x00\xff\x80nNtf')      # structural byte
        elif op < 0.6:
            del b[i:i + rng.randint(1, 8)]                             # deletion
        elif op < 0.7:
            b[i:i] = rng.randbytes(rng.randint(1, 8))                  # insertion
        elif op < 0.8:
            b = b[:i]                                                  # truncation
        elif op < 0.88:
            j = rng.randrange(len(b))
            lo, hi = min(i, j), max(i, j)
            b[hi:hi] = b[lo:hi]                                        # duplicated slice
        elif op < 0.95:
            j = rng.randrange(len(other) or 1)
            b = b[:i] + bytearray(other[j:])                           # splice
        else:
            b[i:i + 4] = rng.choice((b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80",
                                     b"\\ud8", b"1e99"))               # bad utf-8 / escapes
    return bytes(b)


# ------------------------------------------------------------------ the runner -----

class FuzzStats(dict):
    pass


def _adapter(venue: str):
    smap = SymbolMap.from_config(load_config())
    adapter, _ = build_adapter(venue, None, smap)
    return adapter


def _check_records(recs, venue_id, ids, next_seq) -> tuple[int, list]:
    """Count insane records among popped MarketUpdates; returns (bad, examples)."""
    bad = np.zeros(len(recs), bool)
    seq = recs["seq"].astype(np.int64)
    bad |= seq != np.arange(next_seq, next_seq + len(recs))
    bad |= recs["venue_id"] != venue_id
    bad |= ~np.isin(recs["instrument_id"], ids)
    kind = recs["kind"]
    q = kind == int(Kind.QUOTE)
    f = kind == int(Kind.FUNDING)
    bad |= ~(q | f)
    with np.errstate(invalid="ignore"):
        bid, ask = recs["bid"], recs["ask"]
        bq, aq = recs["bid_qty"], recs["ask_qty"]
        okq = (np.isfinite(bid) & np.isfinite(ask) & np.isfinite(bq) & np.isfinite(aq)
               & (bid > 0) & (bid <= ask) & (bq >= 0) & (aq >= 0)
               & (recs["exchange_ts_ns"] >= 0)
               & ((recs["flags"] & ~np.uint8(int(Flag.SNAPSHOT) | int(Flag.NO_EXCHANGE_TS)))
                  == 0))
        fr = recs.view(MARKET_UPDATE_FUNDING)
        okf = (np.isfinite(fr["funding_rate"]) & (fr["next_funding_ns"] > 0)
               & (fr["funding_interval_s"] > 0) & np.isfinite(fr["mark_price"])
               & (fr["mark_price"] >= 0) & (fr["exchange_ts_ns"] >= 0))
    bad |= q & ~okq
    bad |= f & ~okf
    idx = np.flatnonzero(bad)
    return int(len(idx)), [str(recs[i]) for i in idx[:3]]


def fuzz_venue(venue: str, n: int, seed: int = 1, instance: str | None = None) -> dict:
    """Fuzz one venue with n frames; returns its FuzzStats (see the module docstring)."""
    rng = random.Random(seed)
    adapter = _adapter(venue)
    natives = [i.native for i in adapter.instruments]
    ids = np.array(sorted({i.instrument_id for i in adapter.instruments}), np.uint32)
    gen = VenueFrames(venue, natives, rng, adapter)
    instance = instance or "fz" + uuid.uuid4().hex[:8]
    ring = SpscRing.create("fuzz", 1 << 16, "MarketUpdate", policy="drop", instance=instance)
    try:
        sink = RingSink(ring, adapter.venue_id)
        out = np.zeros(1 << 16, MARKET_UPDATE)
        n_sockets = len(adapter.sockets())
        applied = getattr(adapter, "applied", None)
        st = {"venue": venue, "frames": 0, "parsed": 0, "rejected": 0, "partial": 0,
              "controls": 0, "records": 0, "crashes": 0, "parse_errors": 0, "silent": 0,
              "bad_records": 0, "ring_dropped": 0, "rejects": {}, "unnamed_reasons": [],
              "examples": [], "kinds": {"valid": 0, "control": 0, "replay": 0,
                                        "object_mutant": 0, "byte_mutant": 0, "random": 0}}
        history: list[bytes] = []
        controls = [c.encode() for c in gen.controls()]
        popped_seq = 1
        reject_total = 0
        t0 = time.perf_counter()
        for i in range(n):
            if i % 997 == 0 and rng.random() < 0.5:
                for s in range(n_sockets):
                    adapter.on_connect(s)                   # a reconnect resets sequences
                gen.cb_books.clear()
                gen.cb_seq = 0
            r = rng.random()
            si = 0
            if r < 0.25:
                obj, si = gen.valid()
                frame = _enc(obj)
                kind = "valid"
            elif r < 0.30:
                frame = rng.choice(controls)
                kind = "control"
            elif r < 0.36 and history:
                frame = rng.choice(history)                 # duplicate / out of order
                kind = "replay"
            elif r < 0.70:
                obj, si = gen.valid() if rng.random() < 0.85 else \
                    (_loads_or_text(rng.choice(controls)), 0)
                obj = mutate_object(obj, rng, natives)
                try:
                    frame = json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode(
                        "utf-8", "surrogatepass")
                except (ValueError, RecursionError):
                    try:
                        frame = repr(obj).encode("utf-8", "surrogatepass")
                    except (ValueError, RecursionError):
                        frame = b'{"x": ' + b"9" * 5000 + b"}"
                kind = "object_mutant"
            elif r < 0.97:
                base = rng.choice(history) if history and rng.random() < 0.5 else \
                    _enc(gen.valid()[0])
                frame = mutate_bytes(base, rng, rng.choice(controls))
                kind = "byte_mutant"
            else:
                frame = rng.randbytes(rng.randint(0, 64))
                kind = "random"
            if kind == "valid" and len(history) < 256:
                history.append(frame)
            elif kind == "valid" and rng.random() < 0.05:
                history[rng.randrange(256)] = frame
            if n_sockets > 1:
                si = si if rng.random() < 0.9 else rng.randrange(n_sockets)
            if rng.random() < 0.1:
                try:
                    frame = frame.decode("utf-8")           # str frames as well as bytes
                except UnicodeDecodeError:
                    pass
            st["kinds"][kind] += 1
            # -- exactly what Feed.on_frame does ----------------------------------------
            now = time.time_ns()
            before = sink.seq
            ap0 = adapter.applied if applied is not None else 0
            sink.recv_ns = now
            try:
                ctl = adapter.parse(frame, now, sink, si)
            except Exception as e:  # noqa: BLE001 - the figure we are after
                ctl = None
                st["crashes"] += 1
                if len(st["examples"]) < 5:
                    st["examples"].append({"what": "crash", "frame": _show(frame),
                                           "error": "".join(traceback.format_exception_only(e))
                                           .strip()})
            if sink.n:
                sink.flush()
            # -- accounting --------------------------------------------------------------
            got = sink.seq - before
            rt = sum(sink.rejects.values())
            rej = rt - reject_total
            reject_total = rt
            st["frames"] += 1
            if rej:
                st["rejected"] += 1
                if got:
                    st["partial"] += 1
            elif got or ctl is not None or (applied is not None and adapter.applied != ap0):
                st["parsed"] += 1
            else:
                st["silent"] += 1
                if len(st["examples"]) < 5:
                    st["examples"].append({"what": "silent", "frame": _show(frame)})
            if ctl is not None:
                st["controls"] += 1
            if sink.rejects.get("parse_error", 0) > st["parse_errors"]:
                st["parse_errors"] = sink.rejects["parse_error"]
                if len(st["examples"]) < 5:
                    st["examples"].append({"what": "parse_error", "frame": _show(frame)})
            if sink.seq - popped_seq > 30_000 or i == n - 1:
                k = ring.pop_batch(out)
                while k:
                    bad, ex = _check_records(out[:k], adapter.venue_id, ids, popped_seq)
                    st["bad_records"] += bad
                    for e in ex:
                        if len(st["examples"]) < 5:
                            st["examples"].append({"what": "bad_record", "record": e})
                    popped_seq += k
                    st["records"] += k
                    k = ring.pop_batch(out)
        st["seconds"] = time.perf_counter() - t0
        st["ring_dropped"] = sink.dropped
        st["rejects"] = dict(sorted(sink.rejects.items()))
        st["unnamed_reasons"] = sorted(set(sink.rejects) - set(REJECT_REASONS))
        st["accounted"] = st["frames"] == st["parsed"] + st["rejected"] + st["silent"]
        return st
    finally:
        ring.unlink()
        ring.close()


def _loads_or_text(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode()


def _show(frame, limit=300):
    s = frame if isinstance(frame, str) else frame.decode("utf-8", "backslashreplace")
    return s[:limit] + ("..." if len(s) > limit else "")


def _task(args):
    venue, n, seed = args
    return fuzz_venue(venue, n, seed)


def run(frames_per_venue: int = 1_000_000, workers: int | None = None, seed: int = 1,
        venues=VENUES, chunks: int = 4) -> dict:
    """Fuzz every venue with ``frames_per_venue`` frames (split into ``chunks`` runs with
    their own seeds, ``workers`` processes); returns the figures per venue and in total."""
    workers = workers or min(len(os.sched_getaffinity(0)), 2)
    per = [(v, frames_per_venue // chunks + (1 if c < frames_per_venue % chunks else 0),
            seed * 1000 + c) for v in venues for c in range(chunks)]
    t0 = time.perf_counter()
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_task, per, chunksize=1)
    else:
        parts = [_task(p) for p in per]
    wall = time.perf_counter() - t0
    by: dict[str, dict] = {}
    for p in parts:
        a = by.setdefault(p["venue"], {"venue": p["venue"], "rejects": {}, "examples": [],
                                       "unnamed_reasons": [], "kinds": {}})
        for k, v in p.items():
            if isinstance(v, bool):
                a[k] = a.get(k, True) and v
            elif isinstance(v, (int, float)) and k != "venue":
                a[k] = a.get(k, 0) + v
        for k, v in p["rejects"].items():
            a["rejects"][k] = a["rejects"].get(k, 0) + v
        for k, v in p["kinds"].items():
            a["kinds"][k] = a["kinds"].get(k, 0) + v
        a["examples"] = (a["examples"] + p["examples"])[:5]
        a["unnamed_reasons"] = sorted(set(a["unnamed_reasons"]) | set(p["unnamed_reasons"]))
    total = {k: sum(v[k] for v in by.values()) for k in
             ("frames", "parsed", "rejected", "partial", "controls", "records", "crashes",
              "parse_errors", "silent", "bad_records", "ring_dropped")}
    total["accounted"] = all(v["accounted"] for v in by.values())
    return {"frames_per_venue": frames_per_venue, "workers": workers, "wall_s": wall,
            "frames_per_s": total["frames"] / wall if wall else 0.0, "total": total,
            "venues": by}


def render(res: dict) -> str:
    lines = [f"{'venue':<13} {'frames':>9} {'parsed':>9} {'rejected':>9} {'records':>9} "
             f"{'crashes':>7} {'guard':>5} {'silent':>6} {'bad rec':>7}  top rejects"]
    for v in res["venues"].values():
        top = sorted(v["rejects"].items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"{v['venue']:<13} {v['frames']:>9} {v['parsed']:>9} {v['rejected']:>9} "
                     f"{v['records']:>9} {v['crashes']:>7} {v['parse_errors']:>5} "
                     f"{v['silent']:>6} {v['bad_records']:>7}  "
                     + ", ".join(f"{k}={n}" for k, n in top))
    t = res["total"]
    lines.append(f"total {t['frames']:,} frames in {res['wall_s']:.1f} s "
                 f"({res['frames_per_s']:,.0f}/s, {res['workers']} workers): crashes "
                 f"{t['crashes']}, guard-caught parse errors {t['parse_errors']}, silent "
                 f"{t['silent']}, bad records {t['bad_records']}")
    return "\n".join(lines)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    r = run(n)
    print(render(r))
    for v in r["venues"].values():
        for e in v["examples"]:
            print(v["venue"], json.dumps(e)[:400])
