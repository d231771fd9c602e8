"""The bridge's out side (process ``bridge.out``): local rings -> Redis Streams.

For every ring of ``[bridge] out_rings`` it is a tap (``kernels.peek``, as ``arbpipe tap``
and ``arbpipe record``): it never consumes, never takes a reader slot, never makes a
producer wait. A ring is its own buffer: while Redis is away the out side simply does not
advance, and what the ring's producer overwrites meanwhile (more than a capacity behind) is
counted as ``missed`` and shows up as a gap on the in side.

Each round peeks up to ``[bridge] batch`` records per ring from its position, packs one XADD
per record (``arbpipe.bridge.resp.pack_xadds``: fields rec, seq, rseq, sent, layout, size,
epoch, host; ``MAXLEN ~ [bridge] maxlen``) to ``<prefix>:ring:<ring>``, sends them in one
write and counts the replies; a ring's position advances over the records whose XADD
succeeded. ``seq`` is the record's ring position + 1 and ``epoch`` the ring's creation
time: per ring and gap-free while the ring lives, whichever producer wrote the record.

(Re)connecting: the meta hash (``arbpipe.bridge.meta``) is written, then each ring's
position is taken from its stream's last entry when that entry is of the same ring
incarnation (a restarted out side resumes exactly after what Redis holds, no entry twice);
a stream that lost entries (a Redis restarted from an older snapshot) gets them again and
the in side drops the duplicates by seq. A new ring incarnation starts at the oldest record
the ring still holds. A heartbeat (counter, ms since the out side was last caught up,
records behind) goes to the meta hash every ``[bridge] heartbeat_ms``.
"""
from __future__ import annotations

import time

import numpy as np

from arbpipe.bridge import resp as R
from arbpipe.bridge.link import Link, LinkError
from arbpipe.bridge.meta import RECORD_SIZES, host_name, local_meta, record_of
from arbpipe.bridge.stats import OUT_BLOB, meta_key, stream_key
from arbpipe.redact import redact_url
from arbpipe.redis_conn import IO_TIMEOUT_S, key_prefix
from arbpipe.transport import kernels as K
from arbpipe.transport.rings import attach_any
from arbpipe.transport.segments import SegmentError
from arbpipe.transport.stateblob import StateBlob
from shm_layouts import JOURNAL
from shm_layouts import words as W
from shm_layouts.ring import LAYOUT_VERSION

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 2.0
STATE_EVERY_S = 0.5
ATTACH_EVERY_S = 0.5
BUSY_POLL_S = 100e-6          # the pause after a round that sent records (else idle_poll_ms)
# the word holding each record type's own seq (sent as ``rseq``)
RSEQ_WORD = {"MarketUpdate": W.MU_SEQ, "Opportunity": W.OP_SEQ,
             "JournalEntry": W.word_of(JOURNAL, "seq")}


def link_timeout(cfg) -> float:
    """Connect and round-trip timeout of a bridge connection: a stalled Redis is noticed
    within about ``max_lag_ms`` (at least 0.5 s, at most the usual 2 s)."""
    return min(IO_TIMEOUT_S, max(0.5, cfg.bridge.max_lag_ms / 1e3))


class RingOut:
    """One ring being sent: its tap, stream key, packed-command parts and counters."""

    def __init__(self, ring, name: str, prefix: str, cfg, host: str):
        self.ring, self.name = ring, name
        self.kind = int(ring.KIND)
        self.record = record_of(name)
        self.rw = ring.rw
        self.epoch = str(ring.seg.header.created_ns)
        self.key = stream_key(prefix, name)
        self.parts = R.xadd_parts(self.key, cfg.bridge.maxlen, LAYOUT_VERSION, ring.record_size,
                                  self.epoch, host)
        self.rseq_word = RSEQ_WORD[self.record]
        self.buf = np.zeros(cfg.bridge.batch * self.rw, np.int64)
        self.pos: int | None = None        # next ring position to send (None: not synced)
        self.sent = self.missed = self.resent = 0

    def head(self) -> int:
        return int(K.head_of(self.ring.w))

    def stats(self) -> dict:
        head = self.head()
        return {"stream": self.key, "epoch": self.epoch, "published": head,
                "position": self.pos, "sent": self.sent, "missed": self.missed,
                "resent": self.resent, "behind": max(head - (self.pos or 0), 0)}


class BridgeOut:
    """Local rings -> Redis Streams. ``run(stop)`` until ``stop()``; ``close()`` flushes."""

    def __init__(self, cfg, instance: str, url: str, log=print, blob: bool = True):
        b = cfg.bridge
        self.cfg, self.instance, self.url, self.log = cfg, instance, url, log
        self.safe_url = redact_url(url)
        self.prefix = key_prefix(cfg, instance)
        self.meta_key = meta_key(self.prefix)
        self.host = host_name()
        self.wanted = list(b.out_rings)
        self.rings: dict[str, RingOut] = {}
        self.batch = b.batch
        self.timeout = link_timeout(cfg)
        self.link: Link | None = None
        self.connected = False
        self.reconnects = self.outages = self.heartbeats = self.rounds = 0
        self.last_error = ""
        self._ever = False
        self.backoff = BACKOFF_MIN_S
        self.next_try = 0.0
        self.next_hb = 0.0
        self.caught_up_at = time.monotonic()
        self.behind = 0
        self._next_attach = 0.0
        self._next_state = 0.0
        self._missing_noted = 0.0
        self.dst = np.zeros(1 << 16, np.uint8)
        self.res = np.zeros(8, np.int64)
        self.out = np.zeros(3, np.int64)
        self.state = "starting"
        self.blob = StateBlob.create(instance, OUT_BLOB) if blob else None

    # -- rings ---------------------------------------------------------------------
    def attach(self) -> None:
        for name in self.wanted:
            if name in self.rings:
                continue
            try:
                ring = attach_any(name, instance=self.instance)
            except SegmentError:
                continue
            want = RECORD_SIZES[record_of(name)]
            if ring.record_size != want:
                ring.close()
                raise SegmentError(f"ring {name!r} holds {ring.record_size}-byte records, "
                                   f"not {record_of(name)} ({want})")
            r = RingOut(ring, name, self.prefix, self.cfg, self.host)
            self.rings[name] = r
            if self.link is not None:
                try:
                    self._sync(r)
                except LinkError as e:
                    self._fail(e)
        missing = [n for n in self.wanted if n not in self.rings]
        if missing and time.monotonic() - self._missing_noted > 30:
            self._missing_noted = time.monotonic()
            self.log(f"bridge out: waiting for ring(s) {', '.join(missing)}")

    def _sync(self, r: RingOut) -> None:
        """Position of ``r`` from its stream's last entry (see the module docstring)."""
        last = self.link.call("XREVRANGE", r.key, "+", "-", "COUNT", 1)
        pos = None
        if last:
            _id, fields = last[0]
            f = {k: v for k, v in zip(fields[::2], fields[1::2])} if isinstance(fields, list) \
                else dict(fields)
            try:
                if f.get(b"epoch", b"").decode() == r.epoch:
                    pos = int(f[b"seq"])
            except (KeyError, ValueError, UnicodeDecodeError):
                pos = None
        if pos is not None:
            if r.pos is not None and pos < r.pos:
                r.resent += r.pos - pos        # Redis lost them: sent again, deduplicated there
            r.pos = pos
        elif r.pos is None:
            r.pos = 0                          # a new ring incarnation: from its oldest record

    # -- connection ------------------------------------------------------------------
    def _connect(self) -> bool:
        try:
            self.link = Link(self.url, self.timeout, "arbpipe-bridge-out")
            meta = local_meta(self.cfg, self.instance, self.wanted, self.host)
            args = [x for kv in meta.items() for x in kv]
            self.link.call("HSET", self.meta_key, *args)
            for r in self.rings.values():
                self._sync(r)
        except LinkError as e:
            self._fail(e)
            return False
        if self._ever:
            self.reconnects += 1
            self.log(f"bridge out: redis {self.safe_url} back; resuming "
                     + ", ".join(f"{r.name} at {r.pos}" for r in self.rings.values()))
        else:
            self.log(f"bridge out: connected to redis {self.safe_url} as {self.host}; sending "
                     + ", ".join(self.wanted))
        self._ever = self.connected = True
        self.backoff = BACKOFF_MIN_S
        self.next_hb = 0.0
        return True

    def _fail(self, e: LinkError) -> None:
        self.last_error = str(e)
        if self.connected:
            self.outages += 1
            self.log(f"bridge out: redis {self.safe_url} lost ({e}); the rings hold the "
                     f"backlog, reconnecting with backoff")
        elif not self._ever and self.backoff == BACKOFF_MIN_S:
            self.log(f"bridge out: redis {self.safe_url} unreachable ({e}); retrying with backoff")
        self.connected = False
        if self.link is not None:
            self.link.close()
            self.link = None
        self.next_try = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)

    # -- sending ---------------------------------------------------------------------
    def round(self) -> int:
        """Peek every ring, send what is new in one pipelined write, advance on success.
        Returns the records sent (LinkError when the link failed)."""
        plan = []
        o = 0
        now = time.time_ns()
        for r in self.rings.values():
            if r.pos is None:
                continue
            K.peek(r.ring.w, r.kind, r.pos, r.buf, self.batch, self.out)
            start, k = int(self.out[0]), int(self.out[1])
            if start > r.pos:
                r.missed += start - r.pos
                r.pos = start
            if k == 0:
                continue
            need = o + R.xadd_bound(r.parts, k, r.rw * 8)
            if need > len(self.dst):
                grown = np.zeros(max(need, 2 * len(self.dst)), np.uint8)
                grown[:o] = self.dst[:o]
                self.dst = grown
            o = R.pack_xadds(self.dst, o, r.buf, r.rw, k, *r.parts, start + 1, r.rseq_word, now)
            plan.append((r, start, k))
        if not plan:
            return 0
        link = self.link
        link.compact()
        link.send(memoryview(self.dst)[:o])
        want = sum(k for _, _, k in plan)
        got, first_err, err_text = 0, -1, ""
        while got < want:
            R.count_replies(link.buf, link.start, link.end, want - got, self.res)
            if self.res[R.CR_BAD]:
                raise LinkError("malformed reply to XADD")
            if self.res[R.CR_ERRORS] and first_err < 0:
                first_err = got + int(self.res[R.CR_FIRST_ERR])
                err_text = link.text(int(self.res[R.CR_ERR_OFF]), int(self.res[R.CR_ERR_LEN]))
            got += int(self.res[R.CR_PARSED])
            link.start = int(self.res[R.CR_END])
            if got < want:
                link.recv()
        ok_upto = want if first_err < 0 else first_err
        base = 0
        for r, start, k in plan:
            done = min(max(ok_upto - base, 0), k)
            r.pos = start + done
            r.sent += done
            base += k
        self.rounds += 1
        if first_err >= 0:
            raise LinkError(f"XADD refused: {err_text}")
        return ok_upto

    def _heartbeat(self) -> None:
        now = time.monotonic()
        behind = sum(max(r.head() - r.pos, 0) for r in self.rings.values() if r.pos is not None)
        self.behind = behind
        if behind == 0 and len(self.rings) == len(self.wanted):
            self.caught_up_at = now
        if now < self.next_hb or self.link is None:
            return
        self.next_hb = now + self.cfg.bridge.heartbeat_ms / 1e3
        self.heartbeats += 1
        self.link.call("HSET", self.meta_key, "heartbeat", self.heartbeats,
                       "caught_up_age_ms", round(self.caught_up_age_ms(), 1),
                       "behind", behind)

    def caught_up_age_ms(self) -> float:
        return 0.0 if self.behind == 0 and len(self.rings) == len(self.wanted) else \
            (time.monotonic() - self.caught_up_at) * 1e3

    # -- loop --------------------------------------------------------------------------
    def step(self) -> int:
        """One pass: attach, (re)connect, send a round, heartbeat. Returns records sent."""
        now = time.monotonic()
        if now >= self._next_attach:
            self._next_attach = now + ATTACH_EVERY_S
            self.attach()
        n = 0
        if self.link is None and now >= self.next_try:
            self._connect()
        if self.link is not None:
            try:
                n = self.round()
                self._heartbeat()
            except LinkError as e:
                self._fail(e)
                n = 0
        if now >= self._next_state:
            self._next_state = now + STATE_EVERY_S
            self.publish()
        return n

    def run(self, stop=lambda: False) -> None:
        self.state = "running"
        idle = self.cfg.bridge.idle_poll_ms / 1e3
        busy = min(idle, BUSY_POLL_S)
        sent = 0
        while not stop():
            n = self.step()
            if n == 0:
                # right after records went out, more are likely: look again sooner
                wait = (busy if sent else idle) if self.link is not None else \
                    min(max(self.next_try - time.monotonic(), 0.0), 0.1)
                time.sleep(wait)
            sent = n

    def stats(self) -> dict:
        return {"state": self.state, "connected": self.connected, "url": self.safe_url,
                "host": self.host, "prefix": self.prefix, "meta": self.meta_key,
                "reconnects": self.reconnects, "outages": self.outages,
                "heartbeats": self.heartbeats, "rounds": self.rounds,
                "caught_up_age_ms": round(self.caught_up_age_ms(), 1), "behind": self.behind,
                "last_error": self.last_error, "wanted": self.wanted,
                "rings": {n: r.stats() for n, r in self.rings.items()}}

    def publish(self) -> None:
        if self.blob is not None:
            self.blob.publish(self.stats())

    def close(self, flush_s: float = 2.0) -> dict:
        """Send what the rings still hold (up to ``flush_s``), then detach."""
        self.state = "flushing"
        deadline = time.monotonic() + flush_s
        while time.monotonic() < deadline and self.link is not None:
            try:
                if self.round() == 0:
                    self._heartbeat()
                    break
            except LinkError as e:
                self._fail(e)
                break
        self.state = "stopped"
        st = self.stats()
        if self.link is not None:
            self.link.close()
            self.link = None
        for r in self.rings.values():
            r.ring.close()
        self.rings = {}
        if self.blob is not None:
            self.blob.close(unlink=True)
            self.blob = None
        return st
