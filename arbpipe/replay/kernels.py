"""The numba kernels of replay: re-stamping a recorded MarketUpdate as received now
(``restamp``), the last seq number a ring's producer used (``ring_seq_start``), and one
paced publishing step into the feed rings (``replay_step``).

Records are handled as int64 words; every word index and bit position comes from
``shm_layouts.words`` (``W``) and the ring header words from ``shm_layouts.ring``, which
numba folds as constants. Re-stamping follows the recording file's rule
(``shm_layouts.recording``): ``recv_ts_ns`` becomes the publish time, ``exchange_ts_ns``
moves by the same amount (0 stays 0), a flag is or-ed into the flags byte, every other
word is copied unchanged.
"""
from __future__ import annotations

from numba import njit

from arbpipe.transport import kernels as K
from arbpipe.transport.atomics import load_acquire
from shm_layouts import Flag
from shm_layouts import words as W
from shm_layouts.ring import W_DROPPED, W_HEAD

KW = dict(cache=True, nogil=True, boundscheck=False)
REPLAYED_BITS = int(Flag.REPLAYED) << W.MU_FLAGS_SHIFT   # Flag.REPLAYED in word 0
# ``K.spsc_push`` returns ``pushed | wake << 32`` (wake: the consumer sleeps, ring its bell)
PUSH_COUNT_MASK = 0xFFFFFFFF
PUSH_WAKE_SHIFT = 32

# io words of the replay kernel
IO_PUSHED, IO_DROPPED, IO_WAKE, IO_FULL, IO_SKIPPED = range(5)
MODE_MAX, MODE_RATE, MODE_SPEED = 0, 1, 2


@njit(inline="always", **KW)
def restamp(dst, d, src, o, now, flag_bits):
    """Copy the MarketUpdate at word ``o`` of ``src`` to word ``d`` of ``dst`` as if received
    at ``now``: recv_ts = now, exchange_ts moved by the same amount (0 stays 0),
    ``flag_bits`` or-ed into word 0. The seq word is left to the caller."""
    recv = src[o + W.MU_RECV_TS]
    exch = src[o + W.MU_EXCHANGE_TS]
    dst[d + W.MU_HEAD] = src[o + W.MU_HEAD] | flag_bits
    # the body words, whatever the kind puts there (quote, funding or status fields)
    dst[d + W.MU_BID] = src[o + W.MU_BID]
    dst[d + W.MU_ASK] = src[o + W.MU_ASK]
    dst[d + W.MU_BID_QTY] = src[o + W.MU_BID_QTY]
    dst[d + W.MU_ASK_QTY] = src[o + W.MU_ASK_QTY]
    dst[d + W.MU_EXCHANGE_TS] = exch + (now - recv) if exch != 0 else 0
    dst[d + W.MU_RECV_TS] = now


@njit(**KW)
def _flush_ring(rings, sts, stage, cnt, r, drop, io):
    n = cnt[r]
    if n == 0:
        return True
    res = K.spsc_push(rings[r], stage[r], n, sts[r])
    k = res & PUSH_COUNT_MASK
    if (res >> PUSH_WAKE_SHIFT) != 0:
        io[IO_WAKE] |= 1 << r
    io[IO_PUSHED] += k
    if k == n:
        cnt[r] = 0
        return True
    if drop:
        io[IO_DROPPED] += n - k
        cnt[r] = 0
        return True
    row = stage[r]
    for j in range((n - k) * W.MU_WORDS):
        row[j] = row[k * W.MU_WORDS + j]
    cnt[r] = n - k
    io[IO_FULL] = 1
    return False


@njit(**KW)
def ring_seq_start(w):
    """The last seq number used in SPSC ring ``w`` by a producer that numbers every record
    it offers (1, 2, 3, ... per ring): max(seq of the newest committed record, published +
    dropped). A restarted producer continues at this + 1, so the ring's seq numbers keep
    rising with gaps only where records were refused, never a restart at 1."""
    cap, rw, data_w, _ = K.geometry(w)
    head = load_acquire(w, W_HEAD)
    last = 0
    if head > 0:
        last = w[data_w + ((head - 1) & (cap - 1)) * rw + W.MU_SEQ]
    n = head + load_acquire(w, W_DROPPED)
    return last if last > n else n


@njit(**KW)
def replay_step(rings, sts, stage, cnt, words, order, ring_of, rel, span, pos, total, mode,
                t0, period, speed, now, max_step, drop, io, seqs, reseq):
    """Publish the records due at ``now`` from global position ``pos`` (record
    ``order[pos % n]`` of loop ``pos // n``); returns the new position.

    mode MAX: everything (up to ``max_step`` records); RATE: position p is due at
    t0 + p * period; SPEED: at t0 + (loop * span + rel[idx]) / speed. Each record is
    staged per ring (``ring_of[idx]``, < 0: skipped) with recv_ts = now, exchange_ts
    shifted alike, REPLAYED set; rings are pushed when their stage fills and at the end.
    ``drop`` False: a full ring keeps the rest staged, io[IO_FULL] = 1 and the step ends.
    ``reseq``: seq = ++seqs[ring] (numbered as staged, so a refused record leaves a gap of
    one, as a feed handler's do); else the recorded seq is kept.
    """
    n = order.shape[0]
    batch = stage.shape[1] // W.MU_WORDS
    nr = cnt.shape[0]
    end = total
    if mode == MODE_RATE:
        due = (now - t0) // period + 1
        if due < end:
            end = due
    if end - pos > max_step:
        end = pos + max_step
    p = pos
    while p < end:
        loop = p // n
        idx = order[p - loop * n]
        if mode == MODE_SPEED:
            if t0 + (loop * span + rel[idx]) / speed > now:
                break
        r = ring_of[idx]
        if r < 0:
            io[IO_SKIPPED] += 1
            p += 1
            continue
        c = cnt[r]
        if c == batch:
            if not _flush_ring(rings, sts, stage, cnt, r, drop, io):
                return p
            c = cnt[r]
        o = idx * W.MU_WORDS
        d = c * W.MU_WORDS
        row = stage[r]
        restamp(row, d, words, o, now, REPLAYED_BITS)
        if reseq:
            s = seqs[r] + 1
            seqs[r] = s
            row[d + W.MU_SEQ] = s
        else:
            row[d + W.MU_SEQ] = words[o + W.MU_SEQ]
        cnt[r] = c + 1
        p += 1
    for r in range(nr):
        if not _flush_ring(rings, sts, stage, cnt, r, drop, io):
            return p
    return p
