"""The cold path to Redis: rings in, Redis Streams and a top-of-book hash out.

Keys (``P = <redis.stream_prefix>:<instance>``, e.g. ``arbpipe:default``):

  ``P:opportunities``  stream, one entry per Opportunity record (open / update / closed)
  ``P:trades``         stream, one entry per JournalEntry (orders, fills, rejects, ...)
  ``P:events``         stream: breaker trips and resets, kill switch, venue legs up / stale /
                       down (from the detector's leg status), the persister's own drops
  ``P:tob``            hash, field ``<instrument>@<leg>`` -> JSON top of book, refreshed
                       every ``redis.snapshot_interval_ms`` (fields ``_snapshot_ns``, ``_legs``)

Stream entries are flat field maps whose names carry their unit (``_ns``, ``_bps``,
``_quote`` = quote currency, ``_base`` = base-asset units, ``_pct``); numbers are decimal
strings (floats in shortest round-trip form). Streams are capped with ``MAXLEN ~
redis.stream_maxlen``.

Never slows the hot path. The reading side (``Persister.pump``) only moves records from the
rings into bounded in-process buffers (``RecordBuffer``, ``redis.buffer_records`` records per
stream): the ``opportunities`` broadcast ring (reader ``persister``; a lap is counted as
``lost``) and the strategy's ``journal`` SPSC ring (the persister is its only consumer, so
the strategy's pushes never find it full because Redis is slow). The writing side
(``RedisWriter``, its own thread) sends pipelined batches of ``redis.batch`` XADDs. What does
not fit a full buffer is dropped and counted (newest first, as the rings' drop policy);
nothing is dropped while the backlog stays under the bound.

Redis down or slow: a failed or timed-out round trip leaves its records in the buffer; the
writer reconnects with backoff (0.1 s doubling to 5 s) and resends. Entry ids are assigned
by the persister (``<ms>-<seq>``, above the stream's last id) and kept across resends, so a
batch that did reach a server that then stalled is not written twice: Redis refuses the
repeated id and it is counted as ``already_written``. One persister writes a given prefix.

URLs and error texts are redacted (``arbpipe.redact``) before they are logged or published.
State: the ``persister.state`` blob (``arbpipe.transport.stateblob``; ``arbpipe stat persister``).
"""
from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import posix_ipc

from arbpipe.transport import ring_kernels as K
from arbpipe.redact import redact_url, scrub
from arbpipe.redis_conn import IO_TIMEOUT_S, connect, key_prefix  # noqa: F401
from shm_layouts import (JOURNAL, MARKET_UPDATE, OPPORTUNITY, BreakerReason, CloseReason,
                         JournalFlag, JournalKind, Kind, OppState, RejectReason, Side)
from shm_layouts.records import OPP_BUY_PERP, OPP_SELL_PERP

STREAMS = ("opportunities", "trades", "events")
BLOB_NAME = "persister.state"
OPP_RING, JOURNAL_RING, READER = "opportunities", "journal", "persister"
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0
POLL_S = 0.1                  # idle: the journal ring is checked this often
STATUS_POLL_S = 0.5           # detector leg status and state blob refresh
POP_BATCH = 1024
EVENT_JOURNAL_KINDS = (int(JournalKind.BREAKER), int(JournalKind.RESET),
                       int(JournalKind.KILL_SWITCH))
_TRANSIENT = ("OOM", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY",
              "NOAUTH", "WRONGPASS", "NOPERM")
_DUPLICATE = "equal or smaller than the target stream top item"


# ------------------------------------------------------------------ field maps ----

def _num(x) -> str:
    if isinstance(x, float):
        return repr(x) if math.isfinite(x) else ("nan" if x != x else ("inf" if x > 0 else "-inf"))
    return str(x)


def _enum_name(enum, v) -> str:
    try:
        return enum(v).name.lower()
    except ValueError:
        return str(v)


_REASON_UNIT = {
    RejectReason.STALE_QUOTE: "ms", RejectReason.COOLDOWN: "ms",
    RejectReason.BELOW_THRESHOLD: "bps", RejectReason.FAT_FINGER: "bps",
    RejectReason.LOW_CONFIDENCE: "pct",
    RejectReason.RATE_LIMIT_SECOND: "orders", RejectReason.RATE_LIMIT_MINUTE: "orders",
    RejectReason.MAX_ORDER_NOTIONAL: "quote", RejectReason.MAX_POSITION_INSTRUMENT: "quote",
    RejectReason.MAX_POSITION_VENUE: "quote", RejectReason.DAILY_LOSS: "quote",
    RejectReason.DRAWDOWN: "quote", RejectReason.BALANCE: "quote",
}
for _n, _u in (("MAX_GROSS", "quote"), ("MAX_OPEN_ORDERS", "orders")):
    if hasattr(RejectReason, _n):
        _REASON_UNIT[RejectReason[_n]] = _u


class Names:
    """Instrument, venue and leg names of the config (ids as numbers when unknown)."""

    def __init__(self, cfg):
        from arbpipe.config import CANONICAL_MASK, PERP_ID_BIT, VENUE_NAMES
        self.cfg = cfg
        self.perp_bit = PERP_ID_BIT
        self.mask = CANONICAL_MASK
        self.venues = dict(VENUE_NAMES)
        self.legs = cfg.legs()
        self._inst: dict[int, str] = {}
        self.perp_venues = {n for n, v in cfg.venues.items() if v.market == "perp"}

    def instrument(self, iid: int) -> str:
        s = self._inst.get(iid)
        if s is None:
            s = self._inst[iid] = self.cfg.instrument_name(iid) or str(iid & self.mask)
        return s

    def venue(self, vid: int) -> str:
        return self.venues.get(vid, str(vid))

    def market(self, vid: int, perp_flag: bool) -> str:
        return "perp" if perp_flag or self.venue(vid) in self.perp_venues else "spot"

    def leg(self, vid: int, iid: int) -> str:
        k = self.legs.leg_of(vid, iid)
        return self.legs.names[k] if k >= 0 else f"{self.venue(vid)}{'-perp' if iid & self.perp_bit else ''}"


OPP_KEYS = ("seq", "opp_id", "state", "close_reason", "instrument", "instrument_id",
            "buy_venue", "buy_market", "sell_venue", "sell_market", "buy_ask_quote",
            "sell_bid_quote", "exec_qty_base", "notional_quote", "gross_bps", "net_bps",
            "funding_delta_bps", "confidence_pct", "trigger_recv_ns", "detect_ns", "opened_ns",
            "detect_latency_ns")


def opportunity_values(recs: np.ndarray, names: Names) -> list[tuple]:
    """Field values (``OPP_KEYS`` order, decimal strings) of Opportunity records."""
    out = []
    st, cr = {}, {}
    for (iid, bv, sv, state, reason, flags, conf, ask, bid, qty, gross, net, fund, trig, det,
         opp_id, seq, opened) in recs[list(OPPORTUNITY.names)].tolist():
        s_ = st.get(state) or st.setdefault(state, _enum_name(OppState, state))
        r_ = cr.get(reason) or cr.setdefault(reason, _enum_name(CloseReason, reason))
        out.append((
            str(seq), str(opp_id), s_, r_, names.instrument(iid), str(iid),
            names.venue(bv), names.market(bv, flags & OPP_BUY_PERP),
            names.venue(sv), names.market(sv, flags & OPP_SELL_PERP),
            _num(ask), _num(bid), _num(qty), _num(ask * qty), _num(gross), _num(net),
            _num(fund), _num(float(conf)), str(trig), str(det), str(opened),
            str(det - trig if trig else 0)))
    return out


def opportunity_fields(recs: np.ndarray, names: Names) -> list[dict]:
    """Stream entries (flat field maps) of Opportunity records: prices in quote currency
    (``_quote``), sizes in base units (``_base``), spreads ``_bps``, times ``_ns``."""
    return [dict(zip(OPP_KEYS, v)) for v in opportunity_values(recs, names)]


def _flag_names(flags: int) -> str:
    return "|".join(f.name.lower() for f in JournalFlag if f and flags & f)


def _reason(kind: int, reason: int) -> str:
    if kind == JournalKind.REJECT:
        return _enum_name(RejectReason, reason)
    if kind == JournalKind.BREAKER:
        return _enum_name(BreakerReason, reason)
    return _enum_name(RejectReason, reason) if reason else "none"


def _unit(kind: int, reason: int) -> str:
    if kind == JournalKind.FILL:
        return "bps"           # value = slippage of the fill
    if kind == JournalKind.REJECT:
        try:
            return _REASON_UNIT.get(RejectReason(reason), "")
        except ValueError:
            return ""
    if kind == JournalKind.BREAKER:
        return "quote"         # daily loss / drawdown, quote currency
    return ""


JOURNAL_KEYS = ("seq", "ts_ns", "kind", "side", "reason", "flags", "flag_names", "venue",
                "venue_id", "market", "instrument", "instrument_id", "order_id", "opp_id",
                "price_quote", "qty_base", "notional_quote", "fee_quote", "realized_pnl_quote",
                "limit", "value", "value_unit", "trigger_recv_ns", "detect_ns", "read_ns")


def journal_values(recs: np.ndarray, names: Names) -> list[tuple]:
    """Field values (``JOURNAL_KEYS`` order) of JournalEntry records."""
    out = []
    for (seq, ts, kind, side, reason, flags, vid, iid, order_id, opp_id, price, qty, notional,
         fee, pnl, limit, value, trig, det, read) in recs[list(JOURNAL.names)].tolist():
        perp = bool(iid & names.perp_bit) or bool(flags & JournalFlag.PERP)
        out.append((
            str(seq), str(ts), _enum_name(JournalKind, kind), _enum_name(Side, side),
            _reason(kind, reason), str(flags), _flag_names(flags),
            names.venue(vid) if vid else "", str(vid),
            ("perp" if perp else "spot") if vid else "",
            names.instrument(iid) if iid else "", str(iid), str(order_id), str(opp_id),
            _num(price), _num(qty), _num(notional), _num(fee), _num(pnl), _num(limit),
            _num(value), _unit(kind, reason), str(trig), str(det), str(read)))
    return out


def journal_fields(recs: np.ndarray, names: Names) -> list[dict]:
    """Stream entries of JournalEntry records (``limit`` / ``value`` in ``value_unit``)."""
    return [dict(zip(JOURNAL_KEYS, v)) for v in journal_values(recs, names)]


def journal_event(rec) -> dict | None:
    """The events-stream entry of a breaker / reset / kill-switch journal record, else None."""
    kind = int(rec["kind"])
    if kind not in EVENT_JOURNAL_KINDS:
        return None
    flags = int(rec["flags"])
    if kind == JournalKind.BREAKER:
        typ = "breaker_tripped"
    elif kind == JournalKind.RESET:
        typ = "breaker_reset"
    else:
        typ = "kill_switch_on" if flags & JournalFlag.KILL_ON else "kill_switch_off"
    return {"type": typ, "source": "strategy", "ts_ns": _num(int(rec["ts_ns"])),
            "reason": _reason(kind, int(rec["reason"])),
            "limit": _num(float(rec["limit"])), "value": _num(float(rec["value"])),
            "value_unit": _unit(kind, int(rec["reason"])), "journal_seq": _num(int(rec["seq"]))}


def event(typ: str, source: str, **fields) -> dict:
    d = {"type": typ, "source": source, "ts_ns": _num(time.time_ns())}
    d.update({k: _num(v) if not isinstance(v, str) else v for k, v in fields.items()})
    return d


# ------------------------------------------------------------------ buffers -------

class RecordBuffer:
    """Bounded FIFO of records between the ring reader and the Redis writer.

    ``put`` (reader thread) appends what fits and counts the rest as ``dropped``
    (newest first). ``take`` (writer thread) copies the oldest records without removing
    them; ``done`` removes them once Redis has them. Each record keeps the stream id the
    writer gave it on its first send (``ids``), so a resend repeats the same id.
    Fixed-size records live in a numpy array (``dtype``); ``dtype=None`` holds objects.
    """

    def __init__(self, dtype, capacity: int):
        self.capacity = int(capacity)
        self.data = np.zeros(self.capacity, dtype) if dtype is not None else \
            np.empty(self.capacity, object)
        self.ids = np.zeros((self.capacity, 2), np.int64)   # (ms, seq); ms 0 = unassigned
        self.head = self.tail = 0                           # absolute counts
        self.accepted = self.dropped = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.head - self.tail

    def put(self, recs) -> int:
        """Append ``recs`` (array or list); returns how many fit (the rest: dropped)."""
        n = len(recs)
        with self._lock:
            k = min(n, self.capacity - (self.head - self.tail))
            h = self.head
        if k:
            idx = (h + np.arange(k)) % self.capacity
            if self.data.dtype == object:
                for j, i in enumerate(idx):
                    self.data[i] = recs[j]
            else:
                self.data[idx] = recs[:k]
            self.ids[idx] = 0
        with self._lock:
            self.head += k
            self.accepted += k
            self.dropped += n - k
        return k

    def take(self, n: int):
        """(start, records, ids view indices) of the oldest up to ``n`` records."""
        with self._lock:
            t, k = self.tail, min(n, self.head - self.tail)
        idx = (t + np.arange(k)) % self.capacity
        return t, self.data[idx], idx

    def done(self, start: int, n: int) -> None:
        with self._lock:
            assert start == self.tail, (start, self.tail)
            self.tail += n


class IdGen:
    """Stream ids ``<ms>-<seq>`` strictly above the last one handed out or seen."""

    def __init__(self):
        self.ms = 0
        self.seq = 0

    def seen(self, stream_id: str | None) -> None:
        if not stream_id:
            return
        ms, _, seq = str(stream_id).partition("-")
        ms, seq = int(ms), int(seq or 0)
        if (ms, seq) > (self.ms, self.seq):
            self.ms, self.seq = ms, seq

    def next(self, now_ms: int) -> tuple[int, int]:
        if now_ms > self.ms:
            self.ms, self.seq = now_ms, 0
        else:
            self.seq += 1
        return self.ms, self.seq


# ------------------------------------------------------------------ the writer ----

class RedisWriter:
    """Moves buffered records to Redis from its own thread (see the module docstring).

    Counters (read by any thread): ``written[stream]``, ``already_written``, ``rejected``,
    ``reconnects``, ``outages``, ``batches``, ``connected``, ``last_error`` (redacted).
    """

    def __init__(self, url: str, prefix: str, buffers: dict, rows: dict, batch: int = 512,
                 maxlen: int = 100_000, log=print, timeout: float = IO_TIMEOUT_S):
        self.url = url
        self.safe_url = redact_url(url)
        self.prefix = prefix
        self.buffers = buffers              # stream -> RecordBuffer
        # stream -> (field names or None, f(records) -> value tuples, or dicts when None)
        self.rows = rows
        self.packers = {s: XaddPacker(f"{prefix}:{s}", maxlen, keys)
                        for s, (keys, _) in rows.items()}
        self.conn = None                    # the writer's own connection (raw pipelining)
        self.batch = batch
        self.maxlen = maxlen
        self.log = log
        self.timeout = timeout
        self.client = None
        self.ids = {s: IdGen() for s in buffers}
        self.connected = False
        self.written = {s: 0 for s in buffers}
        self.already_written = self.rejected = 0
        self.reconnects = self.outages = self.batches = 0
        self.last_error = ""
        self.last_write_ns = 0
        self.backoff = BACKOFF_MIN_S
        self.next_try = 0.0
        self.tob: dict | None = None        # pending top-of-book mapping (latest wins)
        self.tob_written = 0
        self._ever_connected = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.flush_deadline: float | None = None

    # -- control ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="redis-writer", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, flush_s: float = 3.0) -> None:
        """Write what is buffered (up to ``flush_s``), then stop the thread."""
        self.flush_deadline = time.monotonic() + flush_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(flush_s + self.timeout + 2.0)
        self._close()

    def backlog(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    # -- connection ---------------------------------------------------------------
    def _fail(self, e: BaseException) -> None:
        msg = scrub(f"{type(e).__name__}: {e}", self.url)
        self.last_error = msg[:300]
        if self.connected:
            self.outages += 1
            self.log(f"persister: redis {self.safe_url} lost ({self.last_error}); buffering "
                     f"(bound {next(iter(self.buffers.values())).capacity} records per stream), "
                     f"reconnecting with backoff")
        elif not self._ever_connected and self.backoff == BACKOFF_MIN_S:
            self.log(f"persister: redis {self.safe_url} unreachable ({self.last_error}); "
                     f"buffering, retrying with backoff")
        self.connected = False
        self._close()
        self.next_try = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)

    def _close(self) -> None:
        c, self.client = self.client, None
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # noqa: BLE001
                pass
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    def _connect(self) -> bool:
        c = None
        try:
            c = connect(self.url, self.timeout, "arbpipe-persister")
            self.client = c
            c.ping()
            for s in self.buffers:             # new ids go above whatever the stream has
                try:
                    info = c.xinfo_stream(f"{self.prefix}:{s}")
                    self.ids[s].seen(info.get("last-generated-id"))
                except Exception as e:  # noqa: BLE001 - "no such key": a new stream
                    if "no such key" not in str(e).lower():
                        raise
            self.conn = c.connection_pool.get_connection()
            self.conn.connect()
        except Exception as e:  # noqa: BLE001 - redis errors, OSError, ssl errors
            self._fail(e)
            return False
        if self._ever_connected:
            self.reconnects += 1
            self.log(f"persister: redis {self.safe_url} back; backlog {self.backlog()} records "
                     f"to write")
        else:
            self.log(f"persister: connected to redis {self.safe_url}")
        self._ever_connected = True
        self.connected = True
        return True

    # -- loop ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            if stopping and (self.backlog() == 0 or time.monotonic() >= self.flush_deadline):
                return
            if self.client is None:
                wait = self.next_try - time.monotonic()
                if wait > 0:
                    if stopping:
                        time.sleep(max(min(wait, self.flush_deadline - time.monotonic()), 0))
                    else:
                        self._stop.wait(wait)
                    continue
                if not self._connect():
                    continue
            try:
                n = self._write_once()
            except Exception as e:  # noqa: BLE001 - connection lost, timeout, ...
                self._fail(e)
                continue
            self.backoff = BACKOFF_MIN_S     # reset only once a round trip succeeded
            if n == 0 and not stopping:
                self._wake.wait(POLL_S)
                self._wake.clear()

    def _write_once(self) -> int:
        """One pipelined round trip of up to ``batch`` XADDs (and the tob hash if due).

        Commands are packed here (``XaddPacker``: RESP text built once per entry, field
        names pre-encoded) and sent on the writer's connection in one write; replies are
        read in order. An error reply is per entry: a repeated id counts as
        ``already_written``, a transient one (OOM, LOADING, ...) ends the batch and is
        retried after backoff, any other is counted as ``rejected`` and skipped."""
        from redis.exceptions import ResponseError
        parts: list[str] = []
        plan = []            # (stream, start, count)
        left = self.batch
        now_ms = time.time_ns() // 1_000_000
        for s in ("events", "trades", "opportunities"):
            b = self.buffers.get(s)
            if b is None or left <= 0 or not len(b):
                continue
            start, recs, idx = b.take(left)
            k = len(recs)
            if not k:
                continue
            rows = self.rows[s][1](recs)
            packer = self.packers[s]
            gen = self.ids[s]
            for j in range(k):
                i = idx[j]
                if b.ids[i, 0] == 0:
                    b.ids[i] = gen.next(now_ms)
                parts.append(packer.xadd(f"{b.ids[i, 0]}-{b.ids[i, 1]}", rows[j]))
            plan.append((s, start, k))
            left -= k
        tob = self.tob
        if tob is not None:
            args = ["HSET", f"{self.prefix}:tob"]
            for f, v in tob.items():
                args += (f, v)
            parts.append(pack_command(args))
        if not parts:
            return 0
        conn = self.conn
        conn.send_packed_command(["".join(parts).encode("utf-8")], check_health=False)
        results = []
        for _ in range(len(parts)):
            try:
                results.append(conn.read_response())
            except ResponseError as e:
                results.append(e)
        self.batches += 1
        pos = 0
        transient = None
        for s, start, k in plan:
            ok = 0
            for j in range(k):
                r = results[pos + j]
                if isinstance(r, Exception):
                    text = str(r)
                    if _DUPLICATE in text:
                        self.already_written += 1
                    elif text.split(" ", 1)[0].upper() in _TRANSIENT:
                        transient = r
                        break
                    else:
                        self.rejected += 1
                        self.last_error = scrub(f"XADD {s}: {text}", self.url)[:300]
                else:
                    self.written[s] += 1
                ok += 1
            self.buffers[s].done(start, ok)
            pos += k
            if transient is not None:
                break
        if tob is not None and transient is None and not isinstance(results[-1], Exception):
            if self.tob is tob:
                self.tob = None
            self.tob_written += 1
        self.last_write_ns = time.time_ns()
        if transient is not None:
            raise transient
        return sum(k for _, _, k in plan)


def _bulk(x: str) -> str:
    """One RESP bulk string (length in bytes)."""
    n = len(x) if x.isascii() else len(x.encode("utf-8"))
    return f"${n}\r\n{x}\r\n"


def pack_command(args) -> str:
    """A RESP command (array of bulk strings) as text; encode as UTF-8 to send."""
    return f"*{len(args)}\r\n" + "".join(_bulk(a if isinstance(a, str) else str(a))
                                         for a in args)


class XaddPacker:
    """``XADD key MAXLEN ~ N id field value ...`` as RESP text, with the constant part
    (command, key, cap, and the field names when the stream has fixed ``keys``) encoded once."""

    def __init__(self, key: str, maxlen: int, keys: tuple | None):
        self.keys = keys
        self.head_args = ["XADD", key, "MAXLEN", "~", str(int(maxlen))]
        self.head = "".join(_bulk(a) for a in self.head_args)
        self.kseg = [_bulk(k) for k in keys] if keys else None
        self.count = f"*{len(self.head_args) + 1 + 2 * len(keys)}\r\n" if keys else None

    def xadd(self, entry_id: str, row) -> str:
        if self.kseg is None:                          # a dict: any field names
            args = [*self.head_args, entry_id]
            for f, v in row.items():
                args += (f, v if isinstance(v, str) else str(v))
            return pack_command(args)
        return (self.count + self.head + _bulk(entry_id) +
                "".join(k + _bulk(v) for k, v in zip(self.kseg, row)))


# ------------------------------------------------------------------ top of book ---

class TopOfBook:
    """Last quote per (venue, instrument) seen in the ``feed.<venue>`` rings, by peeking
    (read-only: nothing is consumed, the feeds and the detector are not disturbed)."""

    def __init__(self, cfg, instance: str, names: Names):
        self.cfg = cfg
        self.instance = instance
        self.names = names
        self.rings: dict[str, object] = {}
        self.pos: dict[str, int] = {}
        self.last: dict[tuple[int, int], tuple] = {}
        self.changed = False
        self._buf = np.zeros(4096 * 8, np.int64)
        self._out = np.zeros(3, np.int64)

    def _attach(self):
        from arbpipe.transport.rings import SpscRing
        from arbpipe.transport.segments import SegmentError
        for v in self.cfg.enabled_venues():
            name = f"feed.{v}"
            if name in self.rings:
                continue
            try:
                self.rings[name] = SpscRing.attach(name, self.instance, record="MarketUpdate")
                self.pos[name] = 0
            except SegmentError:
                pass

    def poll(self, limit: int = 1 << 17) -> int:
        """Peek what the feed rings published since the last poll; returns records seen."""
        self._attach()
        seen = 0
        for name, ring in self.rings.items():
            pos = self.pos[name]
            while seen < limit:
                K.peek(ring.w, int(ring.KIND), pos, self._buf, 4096, self._out)
                k = int(self._out[1])
                if k == 0:
                    pos = max(pos, int(self._out[0]))
                    break
                recs = self._buf[:k * 8].view(MARKET_UPDATE)
                q = recs[recs["kind"] == Kind.QUOTE]
                if len(q):
                    key = (q["venue_id"].astype(np.int64) << 32) | q["instrument_id"].astype(np.int64)
                    _, first = np.unique(key[::-1], return_index=True)
                    for r in q[::-1][first].tolist():
                        self.last[(r[1], r[0])] = r
                    self.changed = True
                seen += k
                pos = int(self._out[2])
            self.pos[name] = pos
        return seen

    def mapping(self) -> dict[str, str]:
        """The hash fields: ``<instrument>@<leg>`` -> JSON (unit-named keys)."""
        out = {}
        n = self.names
        for (vid, iid), r in self.last.items():
            _, _, _, _, bid, ask, bq, aq, xts, rts, seq = r
            mid = (bid + ask) / 2
            out[f"{n.instrument(iid)}@{n.leg(vid, iid)}"] = json.dumps({
                "bid_quote": bid, "ask_quote": ask, "bid_qty_base": bq, "ask_qty_base": aq,
                "mid_quote": mid, "spread_bps": (ask - bid) / mid * 1e4 if mid > 0 else None,
                "exchange_ts_ns": xts, "recv_ts_ns": rts, "seq": seq})
        out["_snapshot_ns"] = str(time.time_ns())
        out["_legs"] = str(len(self.last))
        return out

    def close(self) -> None:
        for r in self.rings.values():
            r.close()
        self.rings.clear()


# ------------------------------------------------------------------ the service ---

class Persister:
    """Rings -> buffers -> Redis. ``run(stop)`` until ``stop()``; ``close()`` flushes."""

    def __init__(self, cfg, instance: str, url: str, log=print, blob: bool = True):
        from arbpipe.transport.stateblob import StateBlob
        rc = cfg.redis
        self.cfg = cfg
        self.instance = instance
        self.log = log
        self.url = url
        self.safe_url = redact_url(url)
        self.prefix = key_prefix(cfg, instance)
        self.names = Names(cfg)
        self.buffers = {"opportunities": RecordBuffer(OPPORTUNITY, rc.buffer_records),
                        "trades": RecordBuffer(JOURNAL, rc.buffer_records),
                        "events": RecordBuffer(None, rc.buffer_records)}
        names = self.names
        self.writer = RedisWriter(url, self.prefix, self.buffers, {
            "opportunities": (OPP_KEYS, lambda r: opportunity_values(r, names)),
            "trades": (JOURNAL_KEYS, lambda r: journal_values(r, names)),
            "events": (None, list)}, batch=rc.batch, maxlen=rc.stream_maxlen, log=log)
        self.tob = TopOfBook(cfg, instance, self.names)
        self.opp = self.journal = None
        self.read = {s: 0 for s in STREAMS}
        self.lost = 0
        self._lost_seen = 0
        self._reported_drops = {s: 0 for s in STREAMS}
        self.legs: dict[str, str] | None = None
        self.state = "starting"
        self._opp_buf = np.zeros(POP_BATCH, OPPORTUNITY)
        self._jr_buf = np.zeros(POP_BATCH, JOURNAL)
        self._next_status = 0.0
        self._next_tob = 0.0
        self._missing_noted = 0.0
        self.blob = StateBlob.create(instance, BLOB_NAME) if blob else None

    # -- rings --------------------------------------------------------------------
    def attach(self) -> bool:
        """Attach the rings that exist (retried by ``pump``); True when both are attached."""
        from arbpipe.transport.rings import BroadcastRing, SpscRing
        from arbpipe.transport.segments import SegmentError
        if self.opp is None:
            try:
                r = BroadcastRing.attach(OPP_RING, self.instance, record="Opportunity")
                r.join(READER)
                r.spin, r.yields = 0, 0        # cold path: sleep on the doorbell at once
                self._lost_seen = r.reader_stats()["lost"]
                self.opp = r
            except SegmentError:
                pass
        if self.journal is None:
            try:
                r = SpscRing.attach(JOURNAL_RING, self.instance, record="JournalEntry")
                r.join(READER)
                r.spin, r.yields = 0, 0
                self.journal = r
            except SegmentError:
                pass
        ok = self.opp is not None and self.journal is not None
        if not ok and time.monotonic() - self._missing_noted > 30:
            self._missing_noted = time.monotonic()
            missing = [n for n, r in ((OPP_RING, self.opp), (JOURNAL_RING, self.journal))
                       if r is None]
            self.log(f"persister: waiting for ring(s) {', '.join(missing)}")
        return ok

    def pump(self) -> int:
        """Move everything readable from the rings into the buffers; returns records moved."""
        moved = 0
        if self.opp is None or self.journal is None:
            self.attach()
        if self.opp is not None:
            while True:
                n = self.opp.pop_batch(self._opp_buf, timeout=0)
                if n == 0:
                    break
                self.read["opportunities"] += n
                self.buffers["opportunities"].put(self._opp_buf[:n])
                moved += n
                if n < POP_BATCH:
                    break
            lost = self.opp.reader_stats()["lost"]
            if lost != self._lost_seen:
                d = lost - self._lost_seen
                self._lost_seen = lost
                self.lost += d
                self._event(event("persister_lost", "persister", stream="opportunities",
                                  records=d, note="lapped on the broadcast ring"))
        if self.journal is not None:
            while True:
                n = self.journal.pop_batch(self._jr_buf, timeout=0)
                if n == 0:
                    break
                recs = self._jr_buf[:n]
                self.read["trades"] += n
                self.buffers["trades"].put(recs)
                for i in np.flatnonzero(np.isin(recs["kind"], EVENT_JOURNAL_KINDS)):
                    self._event(journal_event(recs[i]))
                moved += n
                if n < POP_BATCH:
                    break
        if moved:
            self.writer.wake()
        return moved

    def _event(self, ev: dict) -> None:
        self.read["events"] += 1
        self.buffers["events"].put([ev])
        self.writer.wake()

    # -- periodic -------------------------------------------------------------------
    def poll_legs(self) -> None:
        """Venue legs up / stale / down: transitions of the detector's leg status."""
        from arbpipe.detect.detector import read_stats
        try:
            d = read_stats(self.instance, self.names.legs.names)
        except Exception:  # noqa: BLE001 - a detector restarting; try again later
            return
        if not d or not d.get("alive"):
            return
        legs = {k: str(v) for k, v in (d.get("legs") or {}).items()}
        if self.legs is not None:
            for leg, st in legs.items():
                prev = self.legs.get(leg)
                if prev is not None and prev != st:
                    typ = {"UP": "venue_up", "STALE": "venue_stale",
                           "DISCONNECTED": "venue_down"}.get(st, "venue_status")
                    venue = leg[:-5] if leg.endswith("-perp") else leg
                    self._event(event(typ, "detector", leg=leg, venue=venue, status=st.lower(),
                                      previous=prev.lower()))
        self.legs = legs

    def _report_drops(self) -> None:
        for s, b in self.buffers.items():
            d = b.dropped - self._reported_drops[s]
            if d <= 0:
                continue
            self._reported_drops[s] = b.dropped
            self.log(f"persister: {s} buffer full ({b.capacity} records): dropped {d} "
                     f"(total {b.dropped})")
            if s != "events":
                self._event(event("persister_dropped", "persister", stream=s, records=d,
                                  total=b.dropped))

    def housekeeping(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now >= self._next_status:
            self._next_status = now + STATUS_POLL_S
            self.poll_legs()
            self._report_drops()
            self.publish()
        if now >= self._next_tob:
            self._next_tob = now + self.cfg.redis.snapshot_interval_ms / 1e3
            try:
                self.tob.poll()
            except Exception as e:  # noqa: BLE001 - a feed ring being recreated
                self.log(f"persister: top-of-book peek failed: {e}")
            if self.tob.changed and self.writer.connected:
                self.tob.changed = False
                self.writer.tob = self.tob.mapping()
                self.writer.wake()

    def stats(self) -> dict:
        w = self.writer
        return {"state": self.state, "connected": w.connected, "url": self.safe_url,
                "prefix": self.prefix,
                "backlog": w.backlog(), "backlog_by_stream": {s: len(b) for s, b in
                                                              self.buffers.items()},
                "buffer_records": self.cfg.redis.buffer_records,
                "read": dict(self.read), "written": dict(w.written),
                "dropped": {s: b.dropped for s, b in self.buffers.items()},
                "dropped_total": sum(b.dropped for b in self.buffers.values()),
                "lost": self.lost, "already_written": w.already_written,
                "rejected": w.rejected, "reconnects": w.reconnects, "outages": w.outages,
                "batches": w.batches, "tob_snapshots": w.tob_written,
                "tob_entries": len(self.tob.last), "last_write_ns": w.last_write_ns,
                "last_error": w.last_error, "legs": self.legs,
                "rings": {"opportunities": self.opp is not None,
                          "journal": self.journal is not None}}

    def publish(self) -> None:
        if self.blob is not None:
            self.blob.publish(self.stats())

    # -- loop -----------------------------------------------------------------------
    def run(self, stop=lambda: False) -> None:
        self.attach()
        self.writer.start()
        self.state = "running"
        self.publish()
        while not stop():
            n = self.pump()
            self.housekeeping()
            if n:
                continue
            try:
                if self.opp is not None:
                    self.opp.wait(POLL_S)      # sleeps on the doorbell; the journal is
                else:                          # checked at least every POLL_S
                    time.sleep(POLL_S)
            except posix_ipc.SignalError:      # SIGTERM while asleep: stop() says so
                pass

    def close(self, flush_s: float = 3.0) -> dict:
        """Read what is left in the rings, write the backlog (up to ``flush_s``), detach.
        Returns the final stats (``unwritten``: records left in the buffers)."""
        self.state = "flushing"
        try:
            self.pump()
            self._report_drops()
            self.publish()
        except Exception as e:  # noqa: BLE001
            self.log(f"persister: final read failed: {e}")
        self.writer.stop(flush_s)
        self.state = "stopped"
        st = self.stats()
        st["unwritten"] = st["backlog"]
        for r in (self.opp, self.journal):
            if r is not None:
                r.close()
        self.opp = self.journal = None
        self.tob.close()
        if self.blob is not None:
            self.blob.close(unlink=True)
            self.blob = None
        return st


def render_stats(d: dict | None) -> str:
    """``arbpipe stat persister``."""
    if not d:
        return "no persister state (is the persister running? it needs a Redis: see README 'Redis')"
    lines = [f"persister pid {d.get('_pid')} {'alive' if d.get('_alive') else 'GONE'}  "
             f"state {d.get('state')}  redis {d.get('url')} "
             f"{'connected' if d.get('connected') else 'DISCONNECTED'}  prefix {d.get('prefix')}",
             f"  backlog {d.get('backlog')} (bound {d.get('buffer_records')} per stream)  "
             f"reconnects {d.get('reconnects')}  outages {d.get('outages')}  "
             f"lost (lapped) {d.get('lost')}  already written {d.get('already_written')}  "
             f"rejected {d.get('rejected')}"]
    hdr = f"  {'stream':<14} {'read':>10} {'written':>10} {'backlog':>8} {'dropped':>8}"
    lines.append(hdr)
    for s in STREAMS:
        lines.append(f"  {s:<14} {d['read'].get(s, 0):>10} {d['written'].get(s, 0):>10} "
                     f"{d['backlog_by_stream'].get(s, 0):>8} {d['dropped'].get(s, 0):>8}")
    lines.append(f"  top of book: {d.get('tob_entries')} legs, {d.get('tob_snapshots')} snapshots")
    if d.get("last_error"):
        lines.append(f"  last error: {d['last_error']}")
    return "\n".join(lines)


def status_line(instance: str) -> str:
    """One line for ``arbpipe status``: where the persister writes (URL redacted), state."""
    from arbpipe.transport.stateblob import read_blob
    d = read_blob(instance, BLOB_NAME)
    if not d:
        return "  redis: no persister running (no Redis, or not started yet)"
    w = d.get("written", {})
    return (f"  redis: {d.get('url')} {'connected' if d.get('connected') else 'DISCONNECTED'}, "
            f"backlog {d.get('backlog')}, written " +
            "/".join(f"{w.get(s, 0)}" for s in STREAMS) + " (opportunities/trades/events), "
            f"dropped {d.get('dropped_total')}, reconnects {d.get('reconnects')}")
