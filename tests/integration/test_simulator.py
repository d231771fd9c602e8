"""The venue simulator over real websockets (websocket-client, the feed handlers' library).

Every simulator here binds free ports on 127.0.0.1 and is stopped by its context manager;
the last test checks that no simulator thread outlived its test.
"""
from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager

import msgspec
import pytest
import websocket

from arbpipe.sim.config import InstrumentSpec, SimConfig, VENUES, VenueSimConfig, load_config, make_config
from arbpipe.sim.market import Market
from arbpipe.sim.server import SimulatorProcess, SimulatorThread
from arbpipe.sim.binance import U_BASE as BINANCE_U_BASE
from arbpipe.sim.bybit import U_BASE as BYBIT_U_BASE
from arbpipe.sim.market import pad

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OP_CLOSE, OP_PING = 0x8, 0x9
DEADLINE = 30.0     # s, for what must happen: running out means it never did (not a window)


# -- helpers ---------------------------------------------------------------------------------
@contextmanager
def simulator(venues=None, **kw):
    sim = SimulatorThread(make_config(venues, **kw)).start()
    try:
        yield sim
    finally:
        sim.stop()
        assert not sim._thread.is_alive()


@pytest.fixture(scope="module")
def sim():
    """Every venue, 100 updates/s each, default protocol timers."""
    with simulator(seed=11, rate_hz=100) as s:
        yield s


def connect(sim, venue, path, timeout=3.0):
    return websocket.create_connection(sim.urls[venue] + path, timeout=timeout)


def send(ws, obj):
    ws.send(obj if isinstance(obj, str) else json.dumps(obj))


def recv(ws):
    return json.loads(ws.recv())


def recv_until(ws, pred, timeout=3.0, limit=10_000):
    """First parsed frame satisfying ``pred``; frames before it are returned too."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(seen) < limit:
        m = recv(ws)
        seen.append(m)
        if pred(m):
            return m, seen
    raise AssertionError(f"no matching frame in {timeout}s; saw {seen[-5:]}")


def collect(ws, pred, n, timeout=5.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"only {len(out)} of {n} frames in {timeout}s"
        m = recv(ws)
        if pred(m):
            out.append(m)
    return out


def assert_silent(ws, seconds, pred=lambda m: True):
    """No frame matching ``pred`` arrives within ``seconds``."""
    ws.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            m = recv(ws)
        except websocket.WebSocketTimeoutException:
            continue
        assert not pred(m), f"unexpected frame {m}"


def wait_closed(ws, timeout):
    """Read until the server closes; returns the close code (None for an abrupt drop)."""
    deadline = time.monotonic() + timeout
    ws.settimeout(0.25)
    while time.monotonic() < deadline:
        try:
            op, data = ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            ws.shutdown()
            return None
        if op == OP_CLOSE:
            ws.shutdown()           # the close reply already went out (websocket-client sends it)
            return int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
    raise AssertionError(f"connection still open after {timeout}s")


def peek_frames(ws):
    """The server's frames waiting unread in ``ws``'s socket, as (opcode, payload), left
    there (so a ping among them is not answered): unmasked frames under 126 bytes."""
    if not select.select([ws.sock], [], [], 0)[0]:      # the socket's timeout would wait
        return []
    data = ws.sock.recv(1 << 16, socket.MSG_PEEK)
    out, i = [], 0
    while i + 2 <= len(data) and i + 2 + (data[i + 1] & 0x7F) <= len(data):
        n = data[i + 1] & 0x7F
        assert n < 126, "peek_frames reads small frames only"
        out.append((data[i] & 0x0F, data[i + 2:i + 2 + n]))
        i += 2 + n
    return out


def is_dec_str(x):
    if not isinstance(x, str) or not x:
        return False
    float(x)
    return True


# -- Binance ---------------------------------------------------------------------------------
def test_binance_spot_subscribe_ack_and_book_ticker(sim):
    ws = connect(sim, "binance", "/ws")
    send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker", "ethusdt@bookTicker"], "id": 1})
    assert recv(ws) == {"result": None, "id": 1}
    frames = collect(ws, lambda m: True, 6)
    for m in frames:
        assert list(m) == ["u", "s", "b", "B", "a", "A"]            # no E / T: no timestamp at all
        assert isinstance(m["u"], int) and m["s"] in ("BTCUSDT", "ETHUSDT")
        for k in "bBaA":
            assert is_dec_str(m[k]) and len(m[k].split(".")[1]) == 8
        assert float(m["b"]) < float(m["a"])
    send(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2})
    m, _ = recv_until(ws, lambda m: m.get("id") == 2)
    assert sorted(m["result"]) == ["btcusdt@bookTicker", "ethusdt@bookTicker"]
    ws.close()

    ws = connect(sim, "binance", "/stream?streams=solusdt@bookTicker")
    m = recv(ws)
    assert m["stream"] == "solusdt@bookTicker" and m["data"]["s"] == "SOLUSDT"
    ws.close()


def test_binance_unknown_symbol_is_silent_and_bad_requests_get_errors(sim):
    ws = connect(sim, "binance", "/ws")
    send(ws, {"method": "SUBSCRIBE", "params": ["nosuchusdt@bookTicker"], "id": 7})
    assert recv(ws) == {"result": None, "id": 7}
    assert_silent(ws, 0.8)
    ws.settimeout(3)
    send(ws, {"params": ["btcusdt@bookTicker"], "id": 8})
    m = recv(ws)
    assert m["id"] == 8 and m["error"]["code"] == 2 and "method" in m["error"]["msg"]
    send(ws, "{not json")
    m = recv(ws)
    assert m == {"error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}}
    ws.close()


def test_binance_usdm_routes_book_ticker_public_mark_price_market(sim):
    ws = connect(sim, "binance-usdm", "/public/ws")
    send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 3})
    assert recv(ws) == {"result": None, "id": 3}
    m = recv(ws)
    assert list(m) == ["e", "u", "E", "T", "s", "b", "B", "a", "A"]
    assert m["e"] == "bookTicker" and isinstance(m["E"], int) and isinstance(m["T"], int)
    assert all(is_dec_str(m[k]) for k in "bBaA")
    ws.close()

    ws = connect(sim, "binance-usdm", "/market/ws")
    send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s", "ethusdt@bookTicker"], "id": 1})
    assert recv(ws) == {"result": None, "id": 1}
    frames = collect(ws, lambda m: True, 2, timeout=4)
    for m in frames:                                   # bookTicker on /market: silently nothing
        assert m["e"] == "markPriceUpdate" and m["s"] == "BTCUSDT"
        assert all(is_dec_str(m[k]) for k in "piPr") and isinstance(m["T"], int)
        assert m["T"] % (8 * 3600 * 1000) == 0 and m["T"] > time.time() * 1000
    ws.close()


def test_binance_server_pings_and_pong_timeout():
    """Order and counts, not windows: the server pings first; the connection that never
    answers gets pings, then a 1008 close; the one that answers is still pinged after."""
    with simulator(["binance"], timeouts={"binance": {"ping_interval_s": 0.2, "pong_timeout_s": 2.0}}) as s:
        kept = connect(s, "binance", "/ws")
        quiet = connect(s, "binance", "/ws")             # left unread until closed: never pongs
        deadline = time.monotonic() + DEADLINE
        while not any(op == OP_CLOSE for op, _ in peek_frames(quiet)):
            assert time.monotonic() < deadline, "the silent connection was never closed"
            op, _ = kept.recv_data(control_frame=True)   # websocket-client answers it with a pong
            assert op == OP_PING                         # unsubscribed: nothing but pings
        seen = peek_frames(quiet)
        assert [op for op, _ in seen] == [OP_PING] * (len(seen) - 1) + [OP_CLOSE] and len(seen) >= 2
        assert int.from_bytes(seen[-1][1][:2], "big") == 1008
        assert wait_closed(quiet, DEADLINE) == 1008
        for _ in range(3):                               # answered pings kept it open
            op, _ = kept.recv_data(control_frame=True)
            assert op == OP_PING
        kept.close()


def test_binance_incoming_message_limit():
    with simulator(["binance"], timeouts={"binance": {"incoming_limit_per_s": 5}}) as s:
        ws = connect(s, "binance", "/ws")
        for i in range(7):                                # 5 per second allowed
            send(ws, {"method": "LIST_SUBSCRIPTIONS", "id": i})
        assert wait_closed(ws, DEADLINE) == 1008


def test_binance_invalid_json_disconnects_usdm(sim):
    ws = connect(sim, "binance-usdm", "/public/ws")
    send(ws, "nope")
    assert recv(ws)["error"]["code"] == 3
    assert wait_closed(ws, DEADLINE) is not None


# -- Bybit -----------------------------------------------------------------------------------
def test_bybit_spot_ack_snapshot_and_pong(sim):
    ws = connect(sim, "bybit-spot", "/v5/public/spot")
    send(ws, {"req_id": "10001", "op": "subscribe", "args": ["orderbook.1.BTCUSDT", "tickers.ETHUSDT"]})
    ack = recv(ws)
    assert list(ack) == ["success", "ret_msg", "conn_id", "req_id", "op"]
    assert ack["success"] is True and ack["ret_msg"] == "subscribe" and ack["req_id"] == "10001"
    books = collect(ws, lambda m: m.get("topic") == "orderbook.1.BTCUSDT", 3)
    for m in books:
        assert list(m) == ["topic", "ts", "type", "data", "cts"]   # ts before type
        assert m["type"] == "snapshot" and isinstance(m["ts"], int) and isinstance(m["cts"], int)
        d = m["data"]
        assert d["s"] == "BTCUSDT" and isinstance(d["u"], int) and isinstance(d["seq"], int)
        (bp, bq), = d["b"]
        (ap, aq), = d["a"]
        assert all(is_dec_str(x) for x in (bp, bq, ap, aq)) and float(bp) < float(ap)
    tick, _ = recv_until(ws, lambda m: m.get("topic") == "tickers.ETHUSDT")
    assert tick["type"] == "snapshot" and "bid1Price" not in tick["data"]   # spot tickers: no BBO
    send(ws, {"op": "ping"})
    pong, _ = recv_until(ws, lambda m: m.get("op") == "ping")
    assert pong == {"success": True, "ret_msg": "pong", "conn_id": ack["conn_id"], "op": "ping"}
    send(ws, {"op": "subscribe", "args": ["orderbook.1.NOPEUSDT"], "req_id": "x"})
    err, _ = recv_until(ws, lambda m: m.get("op") == "subscribe")
    assert err["success"] is False and err["ret_msg"] == "error:handler not found,topic:orderbook.1.NOPEUSDT"
    ws.close()


def test_bybit_linear_ack_pong_and_ticker_deltas(sim):
    ws = connect(sim, "bybit-linear", "/v5/public/linear")
    send(ws, {"op": "subscribe", "args": ["tickers.BTCUSDT", "orderbook.1.BTCUSDT"]})
    ack = recv(ws)
    assert list(ack) == ["success", "ret_msg", "conn_id", "req_id", "op"]
    assert ack["success"] is True and ack["ret_msg"] == "" and ack["req_id"] == ""
    first, _ = recv_until(ws, lambda m: m.get("topic") == "tickers.BTCUSDT")
    assert first["type"] == "snapshot" and isinstance(first["cs"], int) and isinstance(first["ts"], int)
    full = first["data"]
    for k in ("bid1Price", "bid1Size", "ask1Price", "ask1Size", "fundingRate", "nextFundingTime", "markPrice"):
        assert is_dec_str(full[k]), k
    deltas = collect(ws, lambda m: m.get("topic") == "tickers.BTCUSDT", 3)
    for m in deltas:
        assert m["type"] == "delta" and m["data"]["symbol"] == "BTCUSDT"
        assert set(m["data"]) < set(full) and all(isinstance(v, str) for v in m["data"].values())
    books = collect(ws, lambda m: m.get("topic") == "orderbook.1.BTCUSDT", 3)
    assert all(b["type"] == "snapshot" for b in books)
    send(ws, {"req_id": "100001", "op": "ping"})
    pong, _ = recv_until(ws, lambda m: m.get("op") == "ping")
    assert pong == {"success": True, "ret_msg": "pong", "conn_id": ack["conn_id"], "req_id": "100001", "op": "ping"}
    ws.close()


# -- OKX ---------------------------------------------------------------------------------------
def test_okx_acks_bbo_contracts_funding_and_errors(sim):
    ws = connect(sim, "okx", "/ws/v5/public")
    send(ws, {"id": "1512", "op": "subscribe", "args": [
        {"channel": "bbo-tbt", "instId": "BTC-USDT"}, {"channel": "bbo-tbt", "instId": "BTC-USDT-SWAP"},
        {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"}, {"channel": "bbo-tbt", "instId": "NOPE-USDT"},
        {"channel": "funding-rate", "instId": "BTC-USDT"}]})
    frames = collect(ws, lambda m: True, 12)
    acks = [m for m in frames if m.get("event") == "subscribe"]
    assert len(acks) == 3
    assert list(acks[0]) == ["id", "event", "arg", "connId"] and acks[0]["id"] == "1512"
    errors = [m for m in frames if m.get("event") == "error"]
    assert len(errors) == 2 and all(e["code"] == "60018" for e in errors)
    assert "NOPE-USDT" in errors[0]["msg"] and "doesn't exist" in errors[0]["msg"]
    bbo = [m for m in frames if m.get("arg", {}).get("channel") == "bbo-tbt" and "data" in m]
    assert bbo
    for m in bbo:
        d, = m["data"]
        assert isinstance(d["ts"], str) and d["ts"].isdigit() and isinstance(d["seqId"], int)
        (ap, asz, zero, n_orders), = d["asks"]
        assert zero == "0" and n_orders.isdigit() and is_dec_str(ap) and is_dec_str(asz)
        if m["arg"]["instId"] == "BTC-USDT-SWAP":
            assert asz.isdigit()                          # contracts; x ctVal 0.01 = BTC
            assert 0.01 < int(asz) * 0.01 < 100
    def is_funding(m):
        return m.get("arg", {}).get("channel") == "funding-rate" and "data" in m
    fr = next((m for m in frames if is_funding(m)), None) or recv_until(ws, is_funding)[0]
    d, = fr["data"]
    assert is_dec_str(d["fundingRate"]) and d["fundingTime"].isdigit() and d["nextFundingTime"].isdigit()
    assert int(d["nextFundingTime"]) - int(d["fundingTime"]) == 8 * 3600 * 1000
    send(ws, "ping")
    ws.settimeout(3)
    while True:                                         # the bare text pong among data pushes
        raw = ws.recv()
        if raw == "pong":
            break
    send(ws, "{bad")
    err, _ = recv_until(ws, lambda m: m.get("event") == "error")
    assert err["code"] == "60012"
    ws.close()


def test_okx_idle_connection_is_dropped_and_ping_keeps_it():
    """Order, not windows: while one connection pings and gets its pongs, the silent one
    is closed 4004 (the first frame it gets); the pinging one is answered after that too."""
    with simulator(["okx"], timeouts={"okx": {"idle_timeout_s": 2.0}}) as s:
        kept = connect(s, "okx", "/ws/v5/public")
        idle = connect(s, "okx", "/ws/v5/public")
        deadline = time.monotonic() + DEADLINE
        while not peek_frames(idle):
            assert time.monotonic() < deadline, "the idle connection was never closed"
            send(kept, "ping")
            assert kept.recv() == "pong"
            time.sleep(0.05)
        assert [op for op, _ in peek_frames(idle)] == [OP_CLOSE]
        assert wait_closed(idle, DEADLINE) == 4004
        send(kept, "ping")
        assert kept.recv() == "pong"
        kept.close()


# -- Coinbase ------------------------------------------------------------------------------------
def test_coinbase_level2_heartbeats_and_sequence(sim):
    ws = connect(sim, "coinbase", "/")
    send(ws, {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "level2"})
    send(ws, {"type": "subscribe", "channel": "heartbeats"})
    frames = collect(ws, lambda m: True, 40, timeout=6)
    assert frames[0]["channel"] == "subscriptions"
    assert frames[0]["events"][0]["subscriptions"] == {"level2": ["BTC-USD", "ETH-USD"]}
    seqs = [m["sequence_num"] for m in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))       # one counter across channels
    assert all("client_id" not in m for m in frames)              # production envelope
    assert not any(m["channel"] == "level2" for m in frames)
    books = {"BTC-USD": ({}, {}), "ETH-USD": ({}, {})}
    l2 = [m for m in frames if m["channel"] == "l2_data"]
    assert l2[0]["events"][0]["type"] == "snapshot"
    for m in l2:
        for ev in m["events"]:
            bids, asks = books[ev["product_id"]]
            for u in ev["updates"]:
                assert u["side"] in ("bid", "offer") and is_dec_str(u["price_level"]) \
                    and is_dec_str(u["new_quantity"]) and isinstance(u["event_time"], str)
                side = bids if u["side"] == "bid" else asks
                if u["new_quantity"] == "0":
                    assert u["price_level"] in side          # never removes an unknown level
                    del side[u["price_level"]]
                else:
                    side[u["price_level"]] = u["new_quantity"]
    for bids, asks in books.values():
        if bids:
            assert len(bids) == len(asks) == 20
            assert max(map(float, bids)) < min(map(float, asks))
    assert any(m["events"][0]["type"] == "update" for m in l2)
    hb, _ = recv_until(ws, lambda m: m["channel"] == "heartbeats", timeout=3)
    ev, = hb["events"]
    assert isinstance(ev["heartbeat_counter"], int) and " +0000 UTC m=+" in ev["current_time"]
    send(ws, {"type": "subscribe", "product_ids": ["NOPE-USD"], "channel": "ticker"})
    err, _ = recv_until(ws, lambda m: m.get("type") == "error")
    assert err["message"] == "Failed to subscribe" and "NOPE-USD" in err["reason"]
    ws.close()


def test_coinbase_subscribe_deadline():
    with simulator(["coinbase"], timeouts={"coinbase": {"subscribe_deadline_s": 0.5}}) as s:
        lazy = connect(s, "coinbase", "/")
        prompt = connect(s, "coinbase", "/")
        send(prompt, {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "ticker"})
        assert recv(prompt)["channel"] == "subscriptions"
        assert wait_closed(lazy, DEADLINE) is not None
        time.sleep(0.3)
        m, _ = recv_until(prompt, lambda m: m["channel"] == "ticker")
        t, = m["events"][0]["tickers"]
        assert all(is_dec_str(t[k]) for k in ("best_bid", "best_bid_quantity", "best_ask", "best_ask_quantity"))
        prompt.close()


# -- Kraken --------------------------------------------------------------------------------------
def _kraken_checksum(bids, asks, pdp, qdp):
    def fmt(v, dp):
        return f"{v:.{dp}f}".replace(".", "").lstrip("0")
    s = "".join(fmt(p, pdp) + fmt(q, qdp) for p, q in sorted(asks.items())[:10])
    s += "".join(fmt(p, pdp) + fmt(q, qdp) for p, q in sorted(bids.items(), reverse=True)[:10])
    return zlib.crc32(s.encode()) & 0xFFFFFFFF


def test_kraken_status_ticker_book_checksum_and_errors(sim):
    ws = connect(sim, "kraken", "/v2")
    status = recv(ws)
    assert status["channel"] == "status" and status["data"][0]["system"] == "online"
    send(ws, {"method": "subscribe", "params": {"channel": "instrument"}})
    inst, _ = recv_until(ws, lambda m: m.get("channel") == "instrument")
    prec = {p["symbol"]: (p["price_precision"], p["qty_precision"]) for p in inst["data"]["pairs"]}
    send(ws, {"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD", "NOPE/USD"],
                                                 "event_trigger": "bbo"}, "req_id": 1})
    ack, _ = recv_until(ws, lambda m: m.get("method") == "subscribe" and m.get("req_id") == 1)
    assert ack["success"] is True
    assert ack["result"] == {"channel": "ticker", "symbol": "BTC/USD", "snapshot": True, "event_trigger": "bbo"}
    err, seen = recv_until(ws, lambda m: m.get("method") == "subscribe" and not m["success"])
    assert err["error"] == "Currency pair not supported NOPE/USD" and err["symbol"] == "NOPE/USD"
    ticks = [m for m in seen if m.get("channel") == "ticker"]
    ticks += collect(ws, lambda m: m.get("channel") == "ticker", 3)
    assert ticks[0]["type"] == "snapshot" and ticks[1]["type"] == "update"
    for m in ticks:
        d, = m["data"]
        for k in ("bid", "bid_qty", "ask", "ask_qty", "last"):
            assert isinstance(d[k], (int, float)) and not isinstance(d[k], bool), k
        assert d["bid"] < d["ask"] and d["timestamp"].endswith("Z")

    send(ws, {"method": "subscribe", "params": {"channel": "book", "symbol": ["ETH/USD"], "depth": 10}, "req_id": 2})
    pdp, qdp = prec["ETH/USD"]
    bids, asks = {}, {}
    n_checked = 0
    deadline = time.monotonic() + 5
    while n_checked < 8:
        assert time.monotonic() < deadline
        m = recv(ws)
        if m.get("channel") != "book":
            continue
        d, = m["data"]
        if m["type"] == "snapshot":
            bids = {lv["price"]: lv["qty"] for lv in d["bids"]}
            asks = {lv["price"]: lv["qty"] for lv in d["asks"]}
        else:
            for side, levels in ((bids, d["bids"]), (asks, d["asks"])):
                for lv in levels:
                    if lv["qty"] == 0:
                        del side[lv["price"]]
                    else:
                        side[lv["price"]] = lv["qty"]
            bids = dict(sorted(bids.items(), reverse=True)[:10])   # truncate to the depth
            asks = dict(sorted(asks.items())[:10])
        assert _kraken_checksum(bids, asks, pdp, qdp) == d["checksum"]
        n_checked += 1
    send(ws, {"method": "ping", "req_id": 101})
    pong, _ = recv_until(ws, lambda m: m.get("method") == "pong")
    assert pong["req_id"] == 101 and "time_in" in pong and "time_out" in pong
    ws.close()


def test_kraken_heartbeat_only_after_subscribe_and_bybit_repush_same_u():
    cfg = make_config(["kraken", "bybit-spot"], seed=3, rate_hz=0.2, bases=["BTC"],
                      timeouts={"kraken": {"heartbeat_s": 0.2}, "bybit-spot": {"repush_s": 0.3}})
    with SimulatorThread(cfg) as s:
        ws = connect(s, "kraken", "/v2")
        assert recv(ws)["channel"] == "status"
        assert_silent(ws, 0.6)                          # no heartbeat before a subscription
        ws.settimeout(3)
        send(ws, {"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD"]}})
        hb, _ = recv_until(ws, lambda m: m.get("channel") == "heartbeat", timeout=2)
        assert hb == {"channel": "heartbeat"}
        ws.close()

        ws = connect(s, "bybit-spot", "/v5/public/spot")
        send(ws, {"op": "subscribe", "args": ["orderbook.1.BTCUSDT"]})
        assert recv(ws)["success"] is True
        a, b = collect(ws, lambda m: m.get("topic") == "orderbook.1.BTCUSDT", 2, timeout=2)
        assert a["data"]["u"] == b["data"]["u"] and a["data"] == b["data"]   # unchanged -> same u
        ws.close()


# -- Gate ------------------------------------------------------------------------------------------
def test_gate_subscribe_update_ping_and_errors(sim):
    ws = connect(sim, "gate", "/ws/v4/")
    send(ws, {"time": int(time.time()), "id": 5, "channel": "spot.book_ticker", "event": "subscribe",
              "payload": ["BTC_USDT", "ETH_USDT"]})
    ack = recv(ws)
    assert ack["error"] is None and ack["result"] == {"status": "success"} and ack["id"] == 5
    assert ack["channel"] == "spot.book_ticker" and ack["event"] == "subscribe" and isinstance(ack["time"], int)
    ups = collect(ws, lambda m: m.get("event") == "update", 4)
    for m in ups:
        r = m["result"]
        assert isinstance(m["time"], int) and isinstance(m["time_ms"], int)
        assert isinstance(r["t"], int) and isinstance(r["u"], int) and r["s"] in ("BTC_USDT", "ETH_USDT")
        assert all(is_dec_str(r[k]) for k in "bBaA") and float(r["b"]) < float(r["a"])
    send(ws, {"time": int(time.time()), "channel": "spot.ping"})
    pong, _ = recv_until(ws, lambda m: m.get("channel") == "spot.pong")
    assert pong["event"] == "" and pong["error"] is None and pong["result"] is None
    send(ws, {"time": int(time.time()), "channel": "spot.book_ticker", "event": "subscribe", "payload": ["NOPE_USDT"]})
    err, _ = recv_until(ws, lambda m: m.get("event") == "subscribe")
    assert err["result"] == {"status": "fail"} and err["error"]["code"] == 2 and "NOPE_USDT" in err["error"]["message"]
    send(ws, {"time": int(time.time()) - 3600, "channel": "spot.book_ticker", "event": "subscribe",
              "payload": ["BTC_USDT"]})
    err, _ = recv_until(ws, lambda m: m.get("event") == "subscribe")
    assert err["result"] == {"status": "fail"}
    ws.close()


# -- determinism -------------------------------------------------------------------------------------
def _first_binance_quotes(seed, n=12):
    with simulator(["binance"], seed=seed, rate_hz=200) as s:
        ws = connect(s, "binance", "/ws")
        send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker", "ethusdt@bookTicker"], "id": 1})
        assert recv(ws)["id"] == 1
        frames = collect(ws, lambda m: True, n)
        ws.close()
    return [(m["u"], m["s"], m["b"], m["B"], m["a"], m["A"]) for m in frames]


def test_same_seed_same_quotes():
    a = _first_binance_quotes(42)
    b = _first_binance_quotes(42)
    assert a == b
    assert _first_binance_quotes(43) != a
    # and they are exactly the offline model's updates n = u - U_BASE
    model = Market(make_config(["binance"], seed=42, rate_hz=200)).venue("binance")
    for u, *wire in a:
        q = model.quote(u - BINANCE_U_BASE)
        im = model.instruments[q.inst]
        assert wire == [im.native, pad(im.px(q.bid), 8), pad(im.qty(q.bid_lots), 8),
                        pad(im.px(q.ask), 8), pad(im.qty(q.ask_lots), 8)]


def test_market_dislocations_make_fee_surviving_spreads_that_close():
    def cross_spreads(disloc_rate):
        cfg = make_config(["binance", "bybit-spot"], seed=9, rate_hz=20, bases=["BTC", "ETH"],
                          dislocation_rate_hz=disloc_rate)
        m = Market(cfg)
        a, b = m.venue("binance"), m.venue("bybit-spot")
        last_a, last_b = {}, {}
        best = []
        for n in range(20 * 60 * 10):                         # 10 simulated minutes
            for v, last in ((a, last_a), (b, last_b)):
                q = v.quote(n)
                last[q.inst] = q
            for i in last_a.keys() & last_b.keys():
                qa, qb = last_a[i], last_b[i]
                mid = (qa.bid + qa.ask) / 2
                best.append(max(qa.bid - qb.ask, qb.bid - qa.ask) / mid * 1e4)   # bps, taker both legs
        return best

    quiet = cross_spreads(0.0)
    assert max(quiet) < 5.0                                   # no false arbs from noise and latency
    busy = cross_spreads(0.02)
    hits = [x for x in busy if x > 20.0]                      # survives ~10 bps taker fee per leg
    assert hits and len(hits) < 0.2 * len(busy)               # they appear, and they close


def test_funding_drifts_per_venue():
    m = Market(make_config(["binance-usdm", "bybit-linear", "okx"], seed=4))
    u, b, o = m.venue("binance-usdm"), m.venue("bybit-linear"), m.venue("okx")
    swap = o.by_native["BTC-USDT-SWAP"].idx
    r = [(u.funding_rate(0, t), b.funding_rate(0, t), o.funding_rate(swap, t)) for t in range(0, 3_600_000, 60_000)]
    assert len({x[0] for x in r}) > 30                        # it drifts
    assert any(abs(x[0] - x[1]) > 1e-6 for x in r)            # and differs across venues
    assert all(abs(v) <= 0.003 for x in r for v in x)


# -- faults -----------------------------------------------------------------------------------------
def test_fault_drop_connection_is_seen_by_client():
    with simulator(["binance"], rate_hz=50, faults={"binance": {"drop_every_s": 0.5}}) as s:
        ws = connect(s, "binance", "/ws")
        send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 1})
        assert recv(ws) == {"result": None, "id": 1}         # served first, then dropped:
        assert wait_closed(ws, DEADLINE) is None              # abrupt, no close frame


def test_fault_planned_disconnect_notices():
    faults = {"okx": {"notice_every_s": 0.3, "notice_lead_s": 0.2},
              "binance": {"notice_every_s": 0.3, "notice_lead_s": 0.2}}
    with simulator(["okx", "binance"], faults=faults) as s:
        ws = connect(s, "okx", "/ws/v5/public")
        m = recv(ws)
        assert m["event"] == "notice" and m["code"] == "64008" and "service upgrade" in m["msg"]
        assert wait_closed(ws, DEADLINE) == 1001                # the notice first, then the close
        ws = connect(s, "binance", "/ws")
        m = recv(ws)
        assert m["e"] == "serverShutdown" and isinstance(m["E"], int)
        assert wait_closed(ws, DEADLINE) == 1001


def test_fault_malformed_duplicate_stall_and_refuse():
    faults = {"gate": {"malformed_p": 1.0},
              "binance": {"duplicate_p": 1.0},
              "bybit-spot": {"stall_every_s": 0.4, "stall_s": 0.8},
              "okx": {"refuse_symbols": ["ETH-USDT"]},
              "binance-usdm": {"reorder_p": 0.3}}
    with simulator(["gate", "binance", "bybit-spot", "okx", "binance-usdm"], rate_hz=100, faults=faults) as s:
        ws = connect(s, "gate", "/ws/v4/")
        send(ws, {"time": int(time.time()), "channel": "spot.book_ticker", "event": "subscribe", "payload": ["BTC_USDT"]})
        assert recv(ws)["result"] == {"status": "success"}    # control frames stay intact
        bad = 0
        for _ in range(5):
            raw = ws.recv()
            try:
                m = json.loads(raw)
                bad += not (isinstance(m, dict) and m.get("event") == "update" and "result" in m)
            except ValueError:
                bad += 1
        assert bad == 5
        ws.close()

        ws = connect(s, "binance", "/ws")
        send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 1})
        assert recv(ws)["id"] == 1
        frames = collect(ws, lambda m: True, 6)
        assert [f["u"] for f in frames[0::2]] == [f["u"] for f in frames[1::2]]
        ws.close()

        ws = connect(s, "binance-usdm", "/public/ws")
        send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker", "ethusdt@bookTicker"], "id": 1})
        assert recv(ws)["id"] == 1
        us = [f["u"] for f in collect(ws, lambda m: True, 30)]
        assert sorted(us) == sorted(set(us)) and us != sorted(us)     # all there, some out of order
        ws.close()

        # a stall drops frames (counted against the offline model's updates of the two
        # instruments), and frames come again on the same socket after it
        ws = connect(s, "bybit-spot", "/v5/public/spot")
        send(ws, {"op": "subscribe", "args": ["orderbook.1.BTCUSDT", "orderbook.1.ETHUSDT"]})
        assert recv(ws)["success"] is True
        model = Market(s.config).venue("bybit-spot")
        mine = {model.by_native[x].idx for x in ("BTCUSDT", "ETHUSDT")}
        got, missed = [], []                                   # update numbers n = u - U_BASE - 1
        deadline = time.monotonic() + DEADLINE
        while not missed:
            assert time.monotonic() < deadline, "no update was ever dropped by a stall"
            n = recv(ws)["data"]["u"] - BYBIT_U_BASE - 1       # raises if the socket closed
            if got and n <= got[-1]:
                continue                                       # a re-push of an earlier update
            if got:                                            # dropped, then n on the same socket
                missed = [k for k in range(got[-1] + 1, n) if model.quote(k).inst in mine]
            got.append(n)
        ws.close()

        ws = connect(s, "okx", "/ws/v5/public")
        send(ws, {"op": "subscribe", "args": [{"channel": "bbo-tbt", "instId": "ETH-USDT"}]})
        m = recv(ws)
        assert m["event"] == "error" and m["code"] == "60018"
        ws.close()


# -- serving: ports, paths, process ------------------------------------------------------------------
def test_single_port_routes_by_path():
    cfg = make_config(seed=2, rate_hz=50, single_port=True)
    with SimulatorThread(cfg) as s:
        assert len(set(s.ports.values())) == 1
        cases = [("binance", "/ws", {"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 1},
                  lambda m: m == {"result": None, "id": 1}),
                 ("binance-usdm", "/public/ws", {"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 2},
                  lambda m: m == {"result": None, "id": 2}),
                 ("okx", "/ws/v5/public", "ping", None),
                 ("bybit-linear", "/v5/public/linear", {"op": "ping"}, lambda m: "req_id" in m),
                 ("bybit-spot", "/v5/public/spot", {"op": "ping"}, lambda m: "req_id" not in m),
                 ("gate", "/ws/v4/", {"time": int(time.time()), "channel": "spot.ping"},
                  lambda m: m["channel"] == "spot.pong"),
                 ("coinbase", "/", {"type": "subscribe", "channel": "heartbeats"},
                  lambda m: m["channel"] == "subscriptions")]
        for venue, path, frame, check in cases:
            ws = connect(s, venue, path)
            send(ws, frame)
            if check is None:
                assert ws.recv() == "pong"
            else:
                assert check(recv(ws)), venue
            ws.close()
        ws = connect(s, "kraken", "/v2")
        assert recv(ws)["channel"] == "status"
        ws.close()
        with pytest.raises(websocket.WebSocketBadStatusException):
            connect(s, "kraken", "/nowhere")


def test_per_venue_ports_refuse_other_paths(sim):
    assert len(set(sim.ports.values())) == len(VENUES)
    with pytest.raises(websocket.WebSocketBadStatusException):
        connect(sim, "okx", "/ws")                             # binance's path on okx's port


def test_cli_process_ready_line_and_sigterm():
    bad = subprocess.run([sys.executable, "-m", "procs.simulator", "--venues", "nope"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "nope" in bad.stderr
    proc = SimulatorProcess(["--seed", "3", "--rate", "20", "--venues", "okx", "binance",
                             "--instruments", "BTC", "ETH"], cwd=ROOT)
    proc.start()
    try:
        info = proc.info
        assert info["event"] == "ready" and set(info["urls"]) == {"okx", "binance"}
        assert info["paths"]["okx"] == ["/ws/v5/public"]
        ws = websocket.create_connection(info["urls"]["okx"] + "/ws/v5/public", timeout=3)
        send(ws, {"op": "subscribe", "args": [{"channel": "bbo-tbt", "instId": "ETH-USDT-SWAP"},
                                               {"channel": "bbo-tbt", "instId": "SOL-USDT-SWAP"}]})
        assert recv(ws)["event"] == "subscribe"
        assert recv(ws)["arg"]["instId"] == "ETH-USDT-SWAP"
        assert recv(ws)["code"] == "60018"                    # SOL not served (--instruments BTC ETH)
        ws.close()
    finally:
        rc = proc.stop()
    assert rc == 0


def test_config_rejects_unknown_keys_and_venues():
    with pytest.raises(msgspec.ValidationError, match="nope"):
        load_config({"venues": {"okx": {"nope": 1}}})
    with pytest.raises(msgspec.ValidationError, match="unknown venue"):
        load_config({"venues": {"ftx": {}}})
    cfg = load_config({"seed": 5, "venues": {"okx": {"rate_hz": 3, "instruments": [
        {"native": "BTC-USDT-SWAP", "base": "BTC", "quote": "USDT", "kind": "perp", "ct_val": 0.01, "price_dp": 1}]}}})
    assert isinstance(cfg, SimConfig) and isinstance(cfg.venues["okx"], VenueSimConfig)
    assert cfg.venues["okx"].instruments[0] == InstrumentSpec(native="BTC-USDT-SWAP", base="BTC", quote="USDT",
                                                              kind="perp", ct_val=0.01, price_dp=1)


def test_no_simulator_left_running():
    leftovers = [t for t in threading.enumerate() if t.name == "arbpipe-sim" and t.is_alive()]
    # the module fixture's simulator is still up until module teardown; nothing else may be
    assert len(leftovers) <= 1

