"""The bridge's in side (process ``bridge.in``): a remote instance's streams -> local rings.

Reading: one ``XREAD COUNT [bridge] batch BLOCK [bridge] block_ms STREAMS ...`` per round
over every stream of ``Config.bridge_in_rings()``, parsed in numba (``resp.parse_xread``).
Why XREAD and not XREADGROUP: each stream has exactly one consumer (this process), so a
consumer group would add server-side state (a pending-entries list to XACK, a group to
create and trim) that buys nothing: there is nobody to share or hand entries over to. What
a group's acknowledgements would give -- not losing or repeating entries across a crash --
comes instead from two things of our own: the last entry id of every stream, saved locally
after each round (the state blob ``bridge.in.cursor``, a shared-memory segment that outlives
the process, so the supervisor's restart finds it; a new tree starts without it), and the
source-ring seq of every entry, by which duplicates are dropped. After a SIGKILL the
entries after the saved id are read again and compared with the records the local ring
holds (``recover``): what is already there is skipped, so nothing is published twice and
nothing is lost. XACK would not close that window either (publish and acknowledge are two
steps); the ring itself is the truth.

Checking: every entry must carry the fields of ``arbpipe.bridge.resp`` with this build's
layout version and the ring's record size; a record's venue must be one the remote
announced (and, on ``feed.<venue>``, that venue). Otherwise it is counted by reason
(``stats.REASONS``) and skipped, never published. Per stream, an entry whose seq is not
above the last one of the same epoch is a duplicate (dropped, counted); a jump counts the
missing seqs as gaps.

Publishing: ``feed.<venue>`` rings get the remote records with their exchange and receive
times unchanged and this process's own seq numbers (continuing from what the ring holds, as
replay does: the bridge is the ring's producer); ``opportunities`` / ``journal`` go unchanged
into local broadcast rings ``bridge.opportunities`` / ``bridge.journal``.

The link: current while connected, the remote's heartbeat counter moved within
``max_lag_ms + heartbeat_ms + block_ms``, the remote was caught up within ``max_lag_ms``
and no stream has had a backlog (full XREAD rounds) for longer than ``max_lag_ms``. When it
is not, a venue-level STATUS STALE (instrument 0, reason WATCHDOG) goes into the feed ring
of every remote venue, so the detector stops using their quotes; when it is current again,
the venue's last status from the remote (UP unless the remote said otherwise; reason
CONNECTED). Stats: the ``bridge.in.state`` blob, the histogram ``hist.bridge_link`` (local
receive time - the record's remote time: receive time, detection time or journal time).
"""
from __future__ import annotations

import time

import numpy as np

from arbpipe.bridge import resp as R
from arbpipe.bridge.link import Link, LinkError
from arbpipe.bridge.meta import HEARTBEAT_FIELDS, RECORD_SIZES, check_meta, decode_meta, \
    record_of
from arbpipe.bridge.out import link_timeout
from arbpipe.bridge.stats import CURSOR_BLOB, HIST_HOP, IN_BLOB, REASONS, local_ring, \
    meta_key, stream_key
from arbpipe.config import VENUE_IDS
from arbpipe.redact import redact_url
from arbpipe.redis_conn import key_prefix
from arbpipe.transport import histogram as H
from arbpipe.transport import kernels as K
from arbpipe.transport.rings import BroadcastRing, SpscRing, attach_any
from arbpipe.transport.segments import SegmentError
from arbpipe.transport.stateblob import StateBlob, read_blob
from shm_layouts import JOURNAL, MARKET_UPDATE, OPPORTUNITY, Flag, Kind, VenueStatus
from shm_layouts.records import MARKET_UPDATE_STATUS, StatusReason
from shm_layouts import words as W
from shm_layouts.ring import LAYOUT_VERSION, W_DROPPED

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 2.0
STATE_EVERY_S = 0.5
DTYPES = {"MarketUpdate": MARKET_UPDATE, "Opportunity": OPPORTUNITY, "JournalEntry": JOURNAL}
# the record word holding the remote time the link latency is measured from
TIME_WORD = {"MarketUpdate": W.MU_RECV_TS, "Opportunity": W.OP_DETECT_NS,
             "JournalEntry": W.word_of(JOURNAL, "ts_ns")}
REQUIRED = (R.F_REC, R.F_LAYOUT, R.F_SIZE)              # besides seq and epoch
REQUIRED_INTS = (1 << R.F_LAYOUT) | (1 << R.F_SIZE)
PLACE_BITS = (1 << R.F_SEQ) | (1 << R.F_EPOCH)           # what places an entry in its stream
KIND_OK = np.zeros(256, bool)                            # MarketUpdate kinds this build knows
KIND_OK[[int(k) for k in Kind]] = True
UP, STALE = "UP", "STALE"
_REASON = {r: i for i, r in enumerate(REASONS)}


class StreamIn:
    """One remote ring being read: where it lands, how far it is read, its counters."""

    def __init__(self, remote_ring: str, prefix: str):
        self.remote = remote_ring
        self.key = stream_key(prefix, remote_ring)
        self.key_b = self.key.encode()
        self.local = local_ring(remote_ring)
        self.record = record_of(remote_ring)
        self.dtype = DTYPES[self.record]
        self.size = RECORD_SIZES[self.record]
        self.rw = self.size // 8
        self.venue = remote_ring[len("feed."):] if remote_ring.startswith("feed.") else None
        self.venue_id = VENUE_IDS.get(self.venue, -1) if self.venue else -1
        self.ring = None
        self.ring_epoch = 0                 # the local ring's creation time
        self.last_id = "0-0"                # the last entry read (XREAD continues after it)
        self.epoch: bytes | None = None     # source ring incarnation of the last entry
        self.epoch_hash = 0
        self.last_seq = 0
        self.start_seq: int | None = None   # last_seq when this process began reading
        self.seq = 0                        # feed rings: the last local seq number used
        self.remote_status = int(VenueStatus.UP)  # the remote's last venue-level status
        self.behind_since: float | None = None
        self.received = self.accepted = self.published = self.duplicates = self.gaps = 0
        self.ring_dropped = self.epochs = self.recovered = self.statuses = 0
        self.bad = {r: 0 for r in REASONS}
        self.lag_ms: float | None = None
        self.hist = H.empty()
        self.moved = False

    def stats(self) -> dict:
        n = int(self.hist[H.W_DATA:].sum())
        return {"ring": self.local, "stream": self.key, "last_id": self.last_id,
                "epoch": self.epoch.decode() if self.epoch else None,
                "last_seq": self.last_seq, "start_seq": self.start_seq,
                "received": self.received,
                "accepted": self.accepted, "published": self.published,
                "duplicates": self.duplicates, "gaps": self.gaps, "bad": dict(self.bad),
                "ring_dropped": self.ring_dropped, "statuses": self.statuses,
                "epochs": self.epochs,
                "recovered": self.recovered, "lag_ms": self.lag_ms,
                "backlog": self.behind_since is not None,
                "p50_ms": H.percentile(self.hist, 50) / 1e6 if n else None,
                "p99_ms": H.percentile(self.hist, 99) / 1e6 if n else None, "latency_count": n}


def load_cursor(instance: str) -> dict:
    """The cursor an in side of ``instance`` saved last (``{}``: none)."""
    d = read_blob(instance, CURSOR_BLOB)
    return d if isinstance(d, dict) else {}


class BridgeIn:
    """Remote streams -> local rings. ``run(stop)`` until ``stop()``; ``close()``.
    ``MetaMismatch`` (from ``connect``) means the remote cannot be read with this config."""

    def __init__(self, cfg, instance: str, url: str, log=print, blob: bool = True,
                 hist: bool = True):
        b = cfg.bridge
        self.cfg, self.instance, self.url, self.log = cfg, instance, url, log
        self.safe_url = redact_url(url)
        self.remote_instance = b.remote_instance
        self.prefix = key_prefix(cfg, b.remote_instance)
        self.meta_key = meta_key(self.prefix)
        self.batch, self.block_ms = b.batch, b.block_ms
        self.max_lag_ms = b.max_lag_ms
        self.alive_ms = b.max_lag_ms + b.heartbeat_ms + b.block_ms
        self.streams = [StreamIn(r, self.prefix) for r in cfg.bridge_in_rings()]
        self.by_key = {s.key_b: s for s in self.streams}
        self.remote_venues = [s for s in self.streams if s.venue]
        self.timeout = link_timeout(cfg) + b.block_ms / 1e3
        self.link: Link | None = None
        self.connected = False
        self.announced: dict[int, str] = {}
        self.venue_ok = np.zeros(1 << 16, bool)     # venue id -> announced by the remote
        self.remote_host = ""
        self.remote_pid = ""
        self.hb_value = None
        self.hb_seen_at: float | None = None
        self.remote_caught_up_ms = 0.0
        self.remote_behind = 0
        self.next_hb = 0.0
        self.link_state: str | None = None       # what the remote venues were last told
        self.t0 = time.monotonic()
        self.failed = False
        self.first_connect = True
        self.reconnects = self.outages = self.rounds = self.transitions = 0
        self.last_error = ""
        self._ever = False
        self.backoff = BACKOFF_MIN_S
        self.next_try = 0.0
        self._next_state = 0.0
        self.lag_ms = None
        names, offs = R.field_names()
        self.names, self.name_offs = names, offs
        rows = max(self.batch * max(len(self.streams), 1), 1)
        self.ent = np.zeros((rows, R.ENT_COLS), np.int64)
        # one row per entry, as wide as the largest record (Opportunity: 192 bytes)
        self.recs = np.zeros((rows, max(RECORD_SIZES.values())), np.uint8)
        self.blocks = np.zeros((max(len(self.streams), 1) + 4, 2), np.int64)
        self.res = np.zeros(R.RES_WORDS, np.int64)
        self.state = "starting"
        self.saved = load_cursor(instance)          # the previous incarnation's, if any
        self.cursor = self.blob = None
        self.hist = H.Histogram.create(instance, HIST_HOP) if hist else None
        try:
            self.attach_rings()
            self.cursor = StateBlob.create(instance, CURSOR_BLOB, size=1 << 16)
            self.blob = StateBlob.create(instance, IN_BLOB) if blob else None
        except Exception:
            self._close_segments()
            raise

    # -- local rings ---------------------------------------------------------------------
    def attach_rings(self, create: bool = False, capacity: int = 65536) -> None:
        """Attach every local ring (the supervisor creates them; ``create``: make missing
        ones, for tools and tests)."""
        for s in self.streams:
            if s.ring is not None:
                continue
            try:
                s.ring = attach_any(s.local, instance=self.instance)
            except SegmentError:
                if not create:
                    raise
                cls = SpscRing if s.venue else BroadcastRing
                s.ring = cls.create(s.local, capacity, s.record,
                                    policy="drop" if s.venue else "overwrite",
                                    instance=self.instance)
            if s.ring.record_size != s.size:
                raise SegmentError(f"ring {s.local!r} holds {s.ring.record_size}-byte records, "
                                   f"not {s.record}")
            s.ring_epoch = int(s.ring.seg.header.created_ns)
            if s.venue:
                s.seq = self._ring_last_seq(s.ring)

    def _ring_last_seq(self, ring) -> int:
        """The last seq number used in a feed ring (as ``replay``'s ``ring_seq_start``: the
        newest record's seq, or published + dropped if more)."""
        head = int(K.head_of(ring.w))
        last = 0
        if head:
            buf = np.zeros(ring.rw, np.int64)
            out = np.zeros(3, np.int64)
            K.peek(ring.w, int(ring.KIND), head - 1, buf, 1, out)
            if out[1]:
                last = int(buf[W.MU_SEQ])
        return max(last, head + int(ring.w[W_DROPPED]))

    # -- connection ----------------------------------------------------------------------
    def connect(self) -> bool:
        """Connect, check the remote's meta, set every stream's read position. False on a
        link failure (retried with backoff); ``MetaMismatch`` propagates."""
        try:
            self.link = Link(self.url, self.timeout, "arbpipe-bridge-in")
            meta = decode_meta(self.link.call("HGETALL", self.meta_key))
            if not meta:
                raise LinkError(f"no {self.meta_key} yet (is the bridge out side of "
                                f"{self.remote_instance!r} running?)")
            self._accept_meta(meta)
            for s in self.streams:
                self._position(s)
        except LinkError as e:
            self._fail(e)
            return False
        except Exception:
            if self.link is not None:
                self.link.close()
                self.link = None
            raise
        self.first_connect = False
        self.hb_seen_at = None
        self.next_hb = 0.0
        if self._ever:
            self.reconnects += 1
            self.log(f"bridge in: redis {self.safe_url} back; reading {self.remote_instance} "
                     f"from " + ", ".join(f"{s.remote} {s.last_id}" for s in self.streams))
        else:
            self.log(f"bridge in: connected to redis {self.safe_url}; reading "
                     f"{self.remote_instance}@{self.remote_host}: " +
                     ", ".join(f"{s.remote} -> {s.local} from {s.last_id}"
                               for s in self.streams))
        self._ever = self.connected = True
        self.backoff = BACKOFF_MIN_S
        return True

    def _accept_meta(self, meta: dict) -> None:
        self.announced = check_meta(meta, self.cfg, self.remote_instance,
                                    [s.remote for s in self.streams])
        self.venue_ok[:] = False
        self.venue_ok[list(self.announced)] = True
        self.remote_host = meta.get("host", "")
        self.remote_pid = (meta.get("pid", ""), meta.get("started_ns", ""))

    def _position(self, s: StreamIn) -> None:
        """Where to read ``s`` from: on the first connect the saved cursor (checked against
        the local ring: ``recover``) or the ``[bridge] start`` policy; later, where it was
        (from the stream's start if the stream was created anew behind our back)."""
        if self.first_connect:
            cur = self.saved
            c = (cur.get("streams") or {}).get(s.remote)
            if c and (cur.get("rings") or {}).get(s.local) == s.ring_epoch:
                s.last_id = str(c.get("id", "0-0"))
                s.epoch = c["epoch"].encode() if c.get("epoch") else None
                s.epoch_hash = _hash(s.epoch) if s.epoch else 0
                s.last_seq = int(c.get("seq", 0))
                self.recover(s)
                s.start_seq = s.last_seq if s.epoch else None
                return
            if self.cfg.bridge.start == "oldest":
                s.last_id = "0-0"
            else:
                s.last_id = self._stream_last_id(s) or "0-0"
            return
        last = self._stream_last_id(s)
        if last is not None and _id_tuple(last) < _id_tuple(s.last_id):
            self.log(f"bridge in: stream {s.key} was created anew (last id {last} < ours "
                     f"{s.last_id}); reading it from its start, duplicates dropped by seq")
            s.last_id = "0-0"

    def _stream_last_id(self, s: StreamIn) -> str | None:
        try:
            info = self.link.call("XINFO", "STREAM", s.key)
        except LinkError as e:
            if "no such key" in str(e).lower():
                return None
            raise
        if isinstance(info, dict):
            v = info.get(b"last-generated-id", info.get("last-generated-id"))
        else:
            d = dict(zip(info[::2], info[1::2]))
            v = d.get(b"last-generated-id")
        return v.decode() if isinstance(v, bytes) else (str(v) if v is not None else None)

    def recover(self, s: StreamIn) -> None:
        """After a restart: the entries after the saved id that are already in the local
        ring (published before the cursor was saved: at most one round) are skipped. The
        stream is walked from the saved id while its entries are found in the ring."""
        ring = s.ring
        head = int(K.head_of(ring.w))
        n = min(ring.capacity, head)
        buf = np.zeros(max(n, 1) * ring.rw, np.int64)
        out = np.zeros(3, np.int64)
        K.peek(ring.w, int(ring.KIND), head - n, buf, n, out)
        keep = W.MU_SEQ * 8 if s.venue else s.size      # feed rings renumber the seq word
        words = buf[:int(out[1]) * ring.rw]
        raw = words.view(np.uint8).reshape(-1, s.size)
        have = {bytes(r[:keep]) for r in raw}
        newest = int(words[TIME_WORD[s.record]::ring.rw].max()) if len(words) else 0
        tw = TIME_WORD[s.record] * 8
        match, seen, start = None, 0, f"({s.last_id}"
        # walk on while entries are found; before the first find, until the entries are
        # all younger than anything the ring holds (or as far as the ring reaches back)
        while have and seen <= ring.capacity + 2 * self.batch:
            rows = self.link.call("XRANGE", s.key, start, "+", "COUNT", 2 * self.batch)
            last_hit, oldest = None, None
            for j, (eid, fields) in enumerate(rows or []):
                f = fields if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2]))
                rec = f.get(b"rec")
                if rec is None or len(rec) != s.size:
                    continue
                t = int.from_bytes(rec[tw:tw + 8], "little", signed=True)
                oldest = t if oldest is None else min(oldest, t)
                if bytes(rec[:keep]) in have:
                    last_hit = j
                    match = (seen + j, eid, f)
            if not rows or (match is not None and last_hit != len(rows) - 1):
                break
            if last_hit is None and oldest is not None and oldest > newest:
                break
            seen += len(rows)
            eid = rows[-1][0]
            start = "(" + (eid.decode() if isinstance(eid, bytes) else str(eid))
        if match is None:
            return
        j, eid, f = match
        s.last_id = eid.decode() if isinstance(eid, bytes) else str(eid)
        try:
            s.epoch = bytes(f[b"epoch"])
            s.epoch_hash = _hash(s.epoch)
            s.last_seq = int(f[b"seq"])
        except (KeyError, ValueError):
            pass
        s.recovered = j + 1
        self.log(f"bridge in: {s.remote}: {j + 1} entries after the saved cursor were already "
                 f"in {s.local}; resuming after {s.last_id}")

    def _fail(self, e: LinkError) -> None:
        self.last_error = str(e)
        self.failed = True
        if self.connected:
            self.outages += 1
            self.log(f"bridge in: redis {self.safe_url} lost ({e}); reconnecting with backoff")
        elif self.backoff == BACKOFF_MIN_S:
            self.log(f"bridge in: redis {self.safe_url}: {e}; retrying with backoff")
        self.connected = False
        if self.link is not None:
            self.link.close()
            self.link = None
        self.next_try = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)

    # -- reading ---------------------------------------------------------------------------
    def read_round(self) -> int:
        """One XREAD over every stream; returns the entries it brought."""
        link = self.link
        link.compact()
        args = ["XREAD", "COUNT", self.batch, "BLOCK", self.block_ms, "STREAMS"]
        args += [s.key for s in self.streams] + [s.last_id for s in self.streams]
        link.send(R.command(*args))
        while True:
            R.parse_xread(link.buf, link.start, link.end, self.names, self.name_offs, self.ent,
                          self.recs, self.blocks, self.res)
            st = int(self.res[R.RES_STATUS])
            if st != R.ST_INCOMPLETE:
                break
            link.recv()
        t_recv = time.time_ns()
        if st == R.ST_ERROR:
            raise LinkError("XREAD: " + link.text(int(self.res[R.RES_ERR_OFF]),
                                                  int(self.res[R.RES_ERR_LEN])))
        if st == R.ST_PROTOCOL:
            raise LinkError("XREAD: malformed reply")
        n = self.handle(link.buf, t_recv)
        link.start = int(self.res[R.RES_END])
        self.rounds += 1
        return n

    def handle(self, buf, t_recv: int) -> int:
        """Process a parsed XREAD reply (``self.res``, ``self.ent``, ``self.recs`` over
        ``buf``): check, deduplicate, publish. Returns the entries."""
        now = time.monotonic()
        st = int(self.res[R.RES_STATUS])
        nent = int(self.res[R.RES_ENTRIES]) if st == R.ST_OK else 0
        nblk = int(self.res[R.RES_BLOCKS]) if st == R.ST_OK else 0
        seen = set()
        for bi in range(nblk):
            off, ln = int(self.blocks[bi, 0]), int(self.blocks[bi, 1])
            s = self.by_key.get(bytes(buf[off:off + ln]))
            if s is None:
                continue
            idx = np.flatnonzero(self.ent[:nent, R.ENT_BLOCK] == bi)
            if not len(idx):
                continue
            seen.add(s.key_b)
            self._take(s, buf, idx, t_recv)
            s.behind_since = (s.behind_since or now) if len(idx) >= self.batch else None
        for s in self.streams:
            if s.key_b not in seen:
                s.behind_since = None
        return nent

    def _take(self, s: StreamIn, buf, idx, t_recv: int) -> None:
        ent = self.ent[idx]
        n = len(idx)
        s.received += n
        s.moved = True
        s.last_id = f"{int(ent[-1, R.ENT_ID_MS])}-{int(ent[-1, R.ENT_ID_SEQ])}"
        reason = np.full(n, -1, np.int64)
        # placed: a readable seq and epoch (given once), a real entry id. Only a placed
        # entry takes part in duplicates and gaps; a bad one still uses up its seq
        placed = (ent[:, R.ENT_OFF + R.F_SEQ] >= 0) & (ent[:, R.ENT_OFF + R.F_EPOCH] >= 0)
        placed &= (ent[:, R.ENT_BADINT] & (1 << R.F_SEQ)) == 0
        placed &= (ent[:, R.ENT_DUP] & PLACE_BITS) == 0
        placed &= (ent[:, R.ENT_BADID] == 0) & (ent[:, R.ENT_INT + R.F_SEQ] > 0)
        # fields: besides, the record, layout and size given once, the integers readable
        miss = ~placed | (ent[:, R.ENT_DUP] != 0)
        for f in REQUIRED:
            miss |= ent[:, R.ENT_OFF + f] < 0
        miss |= (ent[:, R.ENT_BADINT] & REQUIRED_INTS) != 0
        reason[miss] = _REASON["fields"]
        ok = np.flatnonzero(placed)
        dup = np.zeros(n, bool)
        if len(ok):
            self._dedup(s, buf, ent, ok, dup)
        live = (reason < 0) & ~dup
        lay = ent[:, R.ENT_INT + R.F_LAYOUT]
        reason[live & (lay != LAYOUT_VERSION)] = _REASON["layout"]
        live = (reason < 0) & ~dup
        size_bad = (ent[:, R.ENT_INT + R.F_SIZE] != s.size) | (ent[:, R.ENT_LEN + R.F_REC] != s.size)
        reason[live & size_bad] = _REASON["size"]
        live = (reason < 0) & ~dup
        raw = np.ascontiguousarray(self.recs[idx, :s.size])    # bytes exactly as sent
        recs = raw.view(s.dtype).reshape(n)
        reason[live & ~self._venues_ok(s, recs)] = _REASON["venue"]
        live = (reason < 0) & ~dup
        if s.venue:
            reason[live & ~KIND_OK[recs["kind"]]] = _REASON["record"]
        counted = reason[(reason >= 0) & ~dup]
        if len(counted):
            for r, k in enumerate(np.bincount(counted, minlength=len(REASONS))):
                s.bad[REASONS[r]] += int(k)
        good = (reason < 0) & ~dup
        if not good.any():
            return
        # whole rows of bytes (a structured copy would skip the padding of a record)
        words = raw[good].view(np.int64).reshape(-1)
        s.accepted += len(words) // s.rw
        lat = t_recv - words[TIME_WORD[s.record]::s.rw]
        H.record_many(s.hist, lat, len(lat))
        if self.hist is not None:
            H.record_many(self.hist.h, lat, len(lat))
        s.lag_ms = float(lat[-1]) / 1e6
        self._publish(s, words)

    def _dedup(self, s: StreamIn, buf, ent, ok, dup) -> None:
        seqs = ent[ok, R.ENT_INT + R.F_SEQ]
        hashes = ent[ok, R.ENT_EPOCH_HASH]
        cut = (np.flatnonzero(hashes[1:] != hashes[:-1]) + 1).tolist()
        for a, b in zip([0] + cut, cut + [len(ok)]):
            h = int(hashes[a])
            if h != s.epoch_hash:
                row = ent[ok[a]]
                off, ln = int(row[R.ENT_OFF + R.F_EPOCH]), int(row[R.ENT_LEN + R.F_EPOCH])
                epoch = bytes(buf[off:off + ln])
                first = int(seqs[a])
                if s.epoch is not None:
                    s.epochs += 1
                    self.log(f"bridge in: {s.remote}: the remote ring was created anew "
                             f"(epoch {s.epoch.decode(errors='replace')} -> "
                             f"{epoch.decode(errors='replace')})")
                    s.last_seq = 0
                else:
                    s.last_seq = first - 1     # where this process starts reading: no gap
                    s.start_seq = s.last_seq
                s.epoch, s.epoch_hash = epoch, h
            seg = seqs[a:b]
            prev = np.empty(len(seg), np.int64)
            prev[0] = s.last_seq
            if len(seg) > 1:
                np.maximum.accumulate(seg[:-1], out=prev[1:])
                np.maximum(prev, s.last_seq, out=prev)
            keep = seg > prev
            dup[ok[a:b][~keep]] = True
            s.duplicates += int((~keep).sum())
            if keep.any():
                top = int(seg[keep].max())
                s.gaps += top - s.last_seq - int(keep.sum())
                s.last_seq = top

    def _venues_ok(self, s: StreamIn, recs) -> np.ndarray:
        ok = self.venue_ok
        if s.venue:
            v = recs["venue_id"]
            return (v == s.venue_id) & ok[v]
        if s.record == "Opportunity":
            return ok[recs["buy_venue"]] & ok[recs["sell_venue"]]
        v = recs["venue_id"]
        return (v == 0) | ok[v]

    def _publish(self, s: StreamIn, words) -> None:
        """Publish records given as int64 words (a copy of ours)."""
        n = len(words) // s.rw
        if s.venue:
            recs = words.view(MARKET_UPDATE)
            st = recs[(recs["kind"] == int(Kind.STATUS)) & (recs["instrument_id"] == 0)]
            if len(st):
                s.remote_status = int(st.view(MARKET_UPDATE_STATUS)["status"][-1])
                if self.link_state == STALE:       # the link is not current: stay STALE
                    words = np.concatenate([words, self._status(
                        s, int(VenueStatus.STALE), StatusReason.WATCHDOG).view(np.int64)])
            m = len(words) // s.rw
            words[W.MU_SEQ::s.rw] = s.seq + 1 + np.arange(m, dtype=np.int64)
            s.seq += m
        self._push(s, words, n)

    def _push(self, s: StreamIn, words, bridged: int) -> None:
        """Push records given as int64 words (the first ``bridged`` from the remote, the
        rest our STATUS)."""
        k = s.ring.push_words(words, len(words) // s.rw, timeout=self.block_ms / 1e3)
        s.published += min(k, bridged)
        s.ring_dropped += bridged - min(k, bridged)
        s.statuses += max(k - bridged, 0)

    def _status(self, s: StreamIn, status: int, reason) -> np.ndarray:
        rec = np.zeros(1, MARKET_UPDATE_STATUS)
        rec["venue_id"] = s.venue_id
        rec["kind"] = int(Kind.STATUS)
        rec["flags"] = int(Flag.NO_EXCHANGE_TS)
        rec["status"] = status
        rec["status_reason"] = int(reason)
        rec["recv_ts_ns"] = time.time_ns()
        return rec.view(MARKET_UPDATE)

    # -- the link's verdict --------------------------------------------------------------
    def poll_heartbeat(self) -> None:
        now = time.monotonic()
        if now < self.next_hb or self.link is None:
            return
        self.next_hb = now + max(self.cfg.bridge.heartbeat_ms / 2e3, 0.02)
        vals = self.link.call("HMGET", self.meta_key, *HEARTBEAT_FIELDS)
        d = dict(zip(HEARTBEAT_FIELDS, [v.decode() if isinstance(v, bytes) else v
                                        for v in vals]))
        if (d.get("pid"), d.get("started_ns")) != self.remote_pid:
            meta = decode_meta(self.link.call("HGETALL", self.meta_key))
            if not meta:
                raise LinkError(f"{self.meta_key} is gone")
            restarted = meta.get("pid") != self.remote_pid[0]
            self._accept_meta(meta)          # the remote out side (re)connected: check again
            if restarted:
                self.log(f"bridge in: the remote out side restarted (pid {d.get('pid')}); "
                         f"its meta agrees")
        if d.get("heartbeat") != self.hb_value:
            self.hb_value = d.get("heartbeat")
            self.hb_seen_at = now
            try:
                self.remote_caught_up_ms = float(d.get("caught_up_age_ms") or 0)
                self.remote_behind = int(d.get("behind") or 0)
            except ValueError:
                self.remote_caught_up_ms = float("inf")

    def judge(self) -> str | None:
        """Is the link current? Publishes STALE / UP into the remote venues' rings on a
        change. Returns the verdict (None while starting)."""
        now = time.monotonic()
        lag = 0.0
        current = self.link is not None and self.hb_seen_at is not None
        if current:
            hb_age = (now - self.hb_seen_at) * 1e3
            lag = max(self.remote_caught_up_ms, 0.0)
            current = hb_age <= self.alive_ms and lag <= self.max_lag_ms
            lag = max(lag, hb_age - self.cfg.bridge.heartbeat_ms - self.block_ms, 0.0)
        for s in self.streams:
            if s.behind_since is not None:
                age = (now - s.behind_since) * 1e3
                lag = max(lag, age)
                if age > self.max_lag_ms:
                    current = False
        if self.link is None:
            lag = None
        self.lag_ms = None if lag is None else round(lag, 1)
        verdict = UP if current else STALE
        if verdict == STALE and self.link_state is None and not self.failed and \
                (now - self.t0) * 1e3 < self.max_lag_ms:
            return None                      # starting: give the link max_lag_ms to come up
        if verdict != self.link_state:
            self._tell_venues(verdict)
        return verdict

    def _tell_venues(self, verdict: str) -> None:
        prev = self.link_state
        self.link_state = verdict
        self.transitions += 1
        for s in self.remote_venues:
            if verdict == STALE:
                rec = self._status(s, int(VenueStatus.STALE), StatusReason.WATCHDOG)
            else:
                rec = self._status(s, s.remote_status, StatusReason.CONNECTED)
            rec["seq"] = s.seq + 1
            s.seq += 1
            self._push(s, rec.view(np.int64).copy(), 0)
        if self.remote_venues:
            self.log(f"bridge in: link {prev or 'starting'} -> {verdict}: remote venues "
                     f"{', '.join(s.venue for s in self.remote_venues)} "
                     f"{'STALE' if verdict == STALE else 'back to their remote status'}"
                     f" (lag {self.lag_ms} ms)")

    # -- loop ------------------------------------------------------------------------------
    def save_cursor(self) -> None:
        if self.cursor is None or not any(s.moved for s in self.streams):
            return
        self.cursor.publish({
            "remote_instance": self.remote_instance,
            "rings": {s.local: s.ring_epoch for s in self.streams},
            "streams": {s.remote: {"id": s.last_id, "seq": s.last_seq,
                                   "epoch": s.epoch.decode() if s.epoch else None}
                        for s in self.streams}})
        for s in self.streams:
            s.moved = False

    def step(self) -> int:
        """One pass: (re)connect, one XREAD round, heartbeat, verdict. Returns entries."""
        n = 0
        now = time.monotonic()
        if self.link is None and now >= self.next_try:
            self.connect()
        if self.link is not None:
            try:
                n = self.read_round()
                self.save_cursor()
                self.poll_heartbeat()
            except LinkError as e:
                self._fail(e)
        self.judge()
        if now >= self._next_state:
            self._next_state = now + STATE_EVERY_S
            self.publish()
        return n

    def run(self, stop=lambda: False) -> None:
        self.state = "running"
        while not stop():
            self.step()
            if self.link is None:
                time.sleep(min(max(self.next_try - time.monotonic(), 0.0), 0.1))

    def stats(self) -> dict:
        snap = self.hist.h if self.hist is not None else H.empty()
        n = int(snap[H.W_DATA:].sum())
        return {"state": self.state, "connected": self.connected, "url": self.safe_url,
                "remote_instance": self.remote_instance, "remote_host": self.remote_host,
                "link": self.link_state or "starting", "lag_ms": self.lag_ms,
                "remote_caught_up_age_ms": self.remote_caught_up_ms,
                "remote_behind": self.remote_behind,
                "heartbeat_age_ms": None if self.hb_seen_at is None else
                round((time.monotonic() - self.hb_seen_at) * 1e3, 1),
                "reconnects": self.reconnects, "outages": self.outages, "rounds": self.rounds,
                "transitions": self.transitions, "last_error": self.last_error,
                "venues": {s.venue: (self.link_state or "starting") if self.link_state != UP
                           else VenueStatus(s.remote_status).name
                           if s.remote_status in VenueStatus._value2member_map_ else
                           s.remote_status for s in self.remote_venues},
                "latency": {"count": n,
                            "p50_ms": H.percentile(snap, 50) / 1e6 if n else None,
                            "p99_ms": H.percentile(snap, 99) / 1e6 if n else None,
                            "p999_ms": H.percentile(snap, 99.9) / 1e6 if n else None},
                "bad": {r: sum(s.bad[r] for s in self.streams) for r in REASONS},
                "streams": {s.remote: s.stats() for s in self.streams}}

    def publish(self) -> None:
        if self.blob is not None:
            self.blob.publish(self.stats())

    def _close_segments(self, keep_cursor: bool = True) -> None:
        for s in self.streams:
            if s.ring is not None:
                s.ring.close()
                s.ring = None
        if self.cursor is not None:           # left for the next incarnation (stale until then)
            self.cursor.close(unlink=not keep_cursor)
            self.cursor = None
        if self.hist is not None:
            self.hist.close(unlink=True)
            self.hist = None

    def close(self, keep_cursor: bool = True) -> dict:
        """Detach. ``keep_cursor``: leave the ``bridge.in.cursor`` blob for the next
        incarnation (the supervisor removes it with the tree)."""
        self.state = "stopped"
        st = self.stats()
        self.save_cursor()
        if self.link is not None:
            self.link.close()
            self.link = None
        self._close_segments(keep_cursor)
        if getattr(self, "blob", None) is not None:
            self.blob.close(unlink=True)
            self.blob = None
        return st


def _hash(epoch: bytes) -> int:
    """``resp.parse_xread``'s epoch hash (FNV-1a, int64) of an epoch value."""
    h = R.FNV_OFFSET
    for c in epoch:
        h = ((h ^ c) * R.FNV_PRIME + (1 << 63)) % (1 << 64) - (1 << 63)
    return h if h != 0 else 1


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0
