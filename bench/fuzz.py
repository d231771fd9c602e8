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
    (``adapter.applied``), a counted book fault (``BookFault``), or at least one reject by a
    named reason (``REJECT_REASONS``); a frame that does none of these is ``silent`` (must
    be 0); ``frames == parsed + rejected``, where a
    frame with both records and rejects counts as rejected (``partial`` says how many);
  * every record that reaches the ring is sane (``bad_records`` must be 0): kind quote or
    funding, the adapter's venue id, a subscribed instrument id, finite positive prices
    with bid <= ask, finite non-negative sizes, exchange time >= 0, known flags, funding
    rate finite and next funding time / interval positive, per-producer seq 1, 2, 3 ...

Depth channels (L2 books): ``fuzz_venue(..., depth=N)`` with the venue's depth stream of
bench/fuzz_books.py (its docstring says what is checked besides); ``run(..., depth=N)``
fuzzes every venue's depth channel (``DEPTH_VENUES``: all eight). The mutators are
bench/fuzz_mutate.py's. Every name the two hold stays importable from here.
"""
from __future__ import annotations

import json
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
# the depth channels and the mutators live in their own modules; their names stay
# importable from here (bench/feeds_depth.py and the tests use them)
from bench.fuzz_books import (BOOK_DEPTH, BOOK_FRAMES, BOOK_VENUES,  # noqa: F401
                              CB_KR_BOOK_VENUES, DEPTH_VENUES, REST_BOOK_VENUES, BookFrames,
                              BookReader, CoinbaseBookFrames, KrakenBookFrames, RestBookFrames,
                              okx_book_checksum, deliver_rest)
from bench.fuzz_mutate import (HUGE_NUMBERS, ODD_NUMBER_STRINGS, ODD_UNICODE, WRONG_SYMBOLS,  # noqa: F401
                               nested_junk, leaf_paths, rfc3339, show_frame, swap_type, mutate_bytes,
                               mutate_object)
from shm_layouts import MARKET_UPDATE, Flag, Kind
from shm_layouts.feed_stats import REJECT_REASONS
from shm_layouts.records import (MARKET_UPDATE_FUNDING, MARKET_UPDATE_LEVEL,
                                 MARKET_UPDATE_STATUS, BookFault, StatusReason)

VENUES = ("binance", "binance-usdm", "bybit-spot", "bybit-linear", "okx", "coinbase",
          "kraken", "gate")

_enc = msgspec.json.encode


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
        self.books = BOOK_FRAMES[venue](venue, natives, rng, adapter) if (
            getattr(adapter, "depth", 0) > 0 and venue in BOOK_FRAMES) else None

    def _next(self):
        self.seq += self.rng.choice((1, 1, 1, 2, 7))
        self.ms += self.rng.randint(0, 50)
        return self.seq, self.ms

    def valid(self):
        """(frame object, socket index)."""
        rng, v = self.rng, self.venue
        if self.books is not None and (v != "bybit-linear" or rng.random() < 0.8):
            return self.books.valid()           # depth stream (linear: tickers for funding)
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
            t = rfc3339(ms)
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
                              "timestamp": rfc3339(ms)}]}, 0
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




# ------------------------------------------------------------------ the runner -----

class FuzzStats(dict):
    pass


def fuzz_adapter(venue: str):
    smap = SymbolMap.from_config(load_config())
    adapter, _ = build_adapter(venue, None, smap)
    return adapter


def _check_records(recs, venue_id, ids, next_seq, depth: int = 0) -> tuple[int, list]:
    """Count insane records among popped MarketUpdates; returns (bad, examples). With
    ``depth`` > 0 LEVEL records and the per-instrument STATUS of a broken book are expected
    too (an empty snapshot's one row is price 0, qty 0)."""
    bad = np.zeros(len(recs), bool)
    seq = recs["seq"].astype(np.int64)
    bad |= seq != np.arange(next_seq, next_seq + len(recs))
    bad |= recs["venue_id"] != venue_id
    bad |= ~np.isin(recs["instrument_id"], ids)
    kind = recs["kind"]
    q = kind == int(Kind.QUOTE)
    f = kind == int(Kind.FUNDING)
    if depth > 0:
        lv = kind == int(Kind.LEVEL)
        stt = kind == int(Kind.STATUS)
        lr = recs.view(MARKET_UPDATE_LEVEL)
        sr = recs.view(MARKET_UPDATE_STATUS)
        snap = (lr["flags"] & np.uint8(int(Flag.SNAPSHOT))) != 0
        with np.errstate(invalid="ignore"):
            okl = (np.isfinite(lr["price"]) & np.isfinite(lr["qty"]) & (lr["qty"] >= 0)
                   & ((lr["price"] > 0) | (snap & (lr["price"] == 0) & (lr["qty"] == 0)))
                   & (lr["depth"] == depth) & (lr["exchange_ts_ns"] >= 0)
                   & ((lr["flags"] & ~np.uint8(int(Flag.SNAPSHOT) | int(Flag.BOOK_ASK)
                                               | int(Flag.BOOK_END))) == 0))
        oks = (sr["status_reason"] & 0xFF) == int(StatusReason.BOOK_RESYNC)
        bad |= lv & ~okl
        bad |= stt & ~oks
        bad |= ~(q | f | lv | stt)
    else:
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


def fuzz_venue(venue: str, n: int, seed: int = 1, instance: str | None = None,
               depth: int = 0) -> dict:
    """Fuzz one venue with n frames; returns its FuzzStats (see the module docstring).
    ``depth`` > 0: its depth channel, books of N levels (``BOOK_VENUES`` only)."""
    rng = random.Random(seed)
    adapter = fuzz_adapter(venue)
    if depth > 0:
        if venue not in BOOK_FRAMES:
            raise ValueError(f"{venue}: no depth-channel frames to fuzz")
        adapter.depth = depth
    natives = [i.native for i in adapter.instruments]
    ids = np.array(sorted({i.instrument_id for i in adapter.instruments}), np.uint32)
    gen = VenueFrames(venue, natives, rng, adapter)
    books = gen.books
    reader = BookReader(depth) if depth > 0 else None
    instance = instance or "fz" + uuid.uuid4().hex[:8]
    ring = SpscRing.create("fuzz", 1 << 16, "MarketUpdate", policy="drop", instance=instance)
    try:
        sink = RingSink(ring, adapter.venue_id, depth=depth)
        out = np.zeros(1 << 16, MARKET_UPDATE)
        n_sockets = len(adapter.sockets())
        applied = getattr(adapter, "applied", None)
        st = {"venue": venue, "frames": 0, "parsed": 0, "rejected": 0, "partial": 0,
              "controls": 0, "records": 0, "crashes": 0, "parse_errors": 0, "silent": 0,
              "bad_records": 0, "ring_dropped": 0, "rejects": {}, "unnamed_reasons": [],
              "examples": [], "kinds": {"valid": 0, "control": 0, "replay": 0,
                                        "object_mutant": 0, "byte_mutant": 0, "random": 0},
              "books": 0, "book_faults": {}, "resyncs": 0, "book_violations": 0,
              "final_exact": 0, "rest_bodies": 0, "rest_rejected": 0, "rest_crashes": 0,
              "rest_silent": 0, "rest_held": 0, "rest_kinds": {}}
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
                if books is not None:                       # as Feed.socket_down does
                    for iid in sorted(sink.ready):
                        sink.book_broken(iid, BookFault.RECONNECT)
                    books.reconnect()
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
            bf0 = sink.book_resyncs
            sink.recv_ns = now
            try:
                ctl = adapter.parse(frame, now, sink, si)
            except Exception as e:  # noqa: BLE001 - the figure we are after
                ctl = None
                st["crashes"] += 1
                if len(st["examples"]) < 5:
                    st["examples"].append({"what": "crash", "frame": show_frame(frame),
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
            elif got or ctl is not None or (applied is not None and adapter.applied != ap0) \
                    or sink.book_resyncs != bf0:          # a counted BookFault

                st["parsed"] += 1
            else:
                st["silent"] += 1
                if len(st["examples"]) < 5:
                    st["examples"].append({"what": "silent", "frame": show_frame(frame)})
            if ctl is not None:
                st["controls"] += 1
                if ctl.kind == "resync" and books is not None:
                    st["resyncs"] += 1
                    books.resync(ctl.symbol)        # the venue answers the resubscribe
            if books is not None and hasattr(books, "rest_due"):
                deliver_rest(adapter, sink, books, st)   # REST snapshots the runtime fetched
                reject_total = sum(sink.rejects.values())   # theirs, not the next frame's
            if sink.rejects.get("parse_error", 0) > st["parse_errors"]:
                st["parse_errors"] = sink.rejects["parse_error"]
                if len(st["examples"]) < 5:
                    st["examples"].append({"what": "parse_error", "frame": show_frame(frame)})
            if sink.seq - popped_seq > 30_000 or i == n - 1:
                popped_seq = _pop_all(ring, out, adapter.venue_id, ids, popped_seq, depth,
                                      reader, st)
        st["seconds"] = time.perf_counter() - t0
        if books is not None:
            # one snapshot per symbol, as the venue sends after a resubscribe: every book is
            # ready and equal to the reference again, whatever garbage came before
            if hasattr(books, "final_sync"):              # REST venues: as after a reconnect
                books.final_sync(adapter, sink)
            else:
                for inst in adapter.instruments:
                    books.resync(inst.native)
                    sink.recv_ns = time.time_ns()
                    adapter.parse(_enc(books.snapshot(inst.native)), sink.recv_ns, sink, 0)
                    sink.flush()
            _pop_all(ring, out, adapter.venue_id, ids, popped_seq, depth, reader, st)
            for inst in adapter.instruments:
                want = books.top(inst.native, depth, inst.contract_size)
                fb = sink.book_of(inst.instrument_id)
                got = fb.top() if fb is not None else None
                if sink.is_ready(inst.instrument_id) and got is not None and \
                        (got[0].tolist(), got[1].tolist()) == want and \
                        reader.top(inst.instrument_id) == want:
                    st["final_exact"] += 1
                elif len(st["examples"]) < 5:
                    st["examples"].append({"what": "book not exact after its snapshot",
                                           "symbol": inst.native})
            st["books"] = len(adapter.instruments)
            st["book_faults"] = {BookFault(k).name: v for k, v in
                                 sorted(sink.resyncs_by_fault.items())}
            st["book_violations"] = reader.violations
            for e in reader.examples:
                if len(st["examples"]) < 5:
                    st["examples"].append({"what": "book_violation", "detail": e})
        st["ring_dropped"] = sink.dropped
        st["rejects"] = dict(sorted(sink.rejects.items()))
        st["unnamed_reasons"] = sorted(set(sink.rejects) - set(REJECT_REASONS))
        st["accounted"] = st["frames"] == st["parsed"] + st["rejected"] + st["silent"]
        return st
    finally:
        ring.unlink()
        ring.close()


def _pop_all(ring, out, venue_id, ids, popped_seq, depth, reader, st) -> int:
    """Pop and check every record in the ring; returns the next expected seq."""
    k = ring.pop_batch(out)
    while k:
        bad, ex = _check_records(out[:k], venue_id, ids, popped_seq, depth)
        st["bad_records"] += bad
        for e in ex:
            if len(st["examples"]) < 5:
                st["examples"].append({"what": "bad_record", "record": e})
        if reader is not None:
            reader.apply(out[:k])
        popped_seq += k
        st["records"] += k
        k = ring.pop_batch(out)
    return popped_seq


def _loads_or_text(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode()


def _task(args):
    venue, n, seed, depth = args
    return fuzz_venue(venue, n, seed, depth=depth)


DICT_FIELDS = ("rejects", "kinds", "book_faults", "rest_kinds")   # merged by key
DEPTH_TOTALS = ("books", "final_exact", "resyncs", "book_violations", "rest_bodies",
                "rest_rejected", "rest_crashes", "rest_silent")


def run(frames_per_venue: int = 1_000_000, workers: int | None = None, seed: int = 1,
        venues=None, chunks: int = 4, depth: int = 0) -> dict:
    """Fuzz every venue with ``frames_per_venue`` frames (split into ``chunks`` runs with
    their own seeds, ``workers`` processes); returns the figures per venue and in total.
    ``depth`` > 0: the depth channels (books of N levels) of ``DEPTH_VENUES`` instead; each
    chunk ends with every book resynced and compared with the venue's reference
    (``final_exact`` of ``books``, summed over the chunks)."""
    venues = venues or (DEPTH_VENUES if depth > 0 else VENUES)
    workers = workers or min(len(os.sched_getaffinity(0)), 2)
    per = [(v, frames_per_venue // chunks + (1 if c < frames_per_venue % chunks else 0),
            seed * 1000 + c, depth) for v in venues for c in range(chunks)]
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
        for f in DICT_FIELDS:
            for k, v in p.get(f, {}).items():
                a.setdefault(f, {})[k] = a.get(f, {}).get(k, 0) + v
        a["examples"] = (a["examples"] + p["examples"])[:5]
        a["unnamed_reasons"] = sorted(set(a["unnamed_reasons"]) | set(p["unnamed_reasons"]))
    total = {k: sum(v[k] for v in by.values()) for k in
             ("frames", "parsed", "rejected", "partial", "controls", "records", "crashes",
              "parse_errors", "silent", "bad_records", "ring_dropped")
             + (DEPTH_TOTALS if depth > 0 else ())}
    total["accounted"] = all(v["accounted"] for v in by.values())
    total["unnamed_reasons"] = sorted({r for v in by.values() for r in v["unnamed_reasons"]})
    return {"frames_per_venue": frames_per_venue, "depth": depth, "chunks": chunks,
            "workers": workers, "wall_s": wall,
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
        if res.get("depth"):
            lines.append(f"{'':<13} books exact after resync {v['final_exact']}/{v['books']}, "
                         f"resyncs {v['resyncs']}, ring-reader violations "
                         f"{v['book_violations']}, faults " + ", ".join(
                             f"{k}={n}" for k, n in sorted(v.get("book_faults", {}).items()))
                         + (f"; REST bodies {v['rest_bodies']} ({v['rest_rejected']} refused, "
                            f"{v['rest_crashes']} crashes)" if v.get("rest_bodies") else ""))
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
