"""The Redis protocol (RESP2) of the bridge's hot path, built and parsed in numba.

The bridge moves one stream entry per record, so the per-entry cost is what bounds it.
redis-py (without hiredis) parses a reply element by element in Python, a few us each,
and an XREAD entry of the bridge has 19 elements. Here the out side packs a whole round of
``XADD`` commands (``pack_xadds``) into one byte buffer and counts their replies
(``count_replies``); the in side parses a whole ``XREAD`` reply (``parse_xread``) into an
entry table and a record array. Python makes one call per round.

Entry fields (the out side writes them in this order; the in side accepts any order and
ignores fields it does not know, so a newer sender can add some):

    field    value
    -------  -----------------------------------------------------------------------------
    rec      the record's bytes, exactly as in the source ring (MarketUpdate 64,
             JournalEntry 128, Opportunity 192 bytes)
    seq      the record's position in its source ring + 1: per ring, gap-free while the
             ring lives, whoever produced the record (duplicates and gaps are judged by it)
    rseq     the record's own seq field (its producer's sequence number)
    sent     CLOCK_REALTIME ns when the out side packed it
    layout   shm_layouts.ring.LAYOUT_VERSION of the sender
    size     the record size in bytes
    epoch    the source ring's incarnation (its creation time, ns): ``seq`` starts over at 1
             when the ring is created again
    host     the sending host's name

Integers are ASCII decimal. ``FIELDS`` lists the names; ``ENT_*`` name the columns of the
entry table ``parse_xread`` fills.
"""
from __future__ import annotations

import numpy as np
from numba import njit

KW = dict(cache=True, nogil=True, boundscheck=False)

FIELDS = ("rec", "seq", "rseq", "sent", "layout", "size", "epoch", "host")
F_REC, F_SEQ, F_RSEQ, F_SENT, F_LAYOUT, F_SIZE, F_EPOCH, F_HOST = range(len(FIELDS))
INT_FIELDS = (F_SEQ, F_RSEQ, F_SENT, F_LAYOUT, F_SIZE)
NF = len(FIELDS)

# entry table columns (int64): block (stream) index, id, then per field its value's offset
# in the reply buffer (-1: missing) and length, the parsed integers, flags
ENT_BLOCK, ENT_ID_MS, ENT_ID_SEQ = 0, 1, 2
ENT_OFF = 3                      # + field index: value offset in the reply (-1: absent)
ENT_LEN = ENT_OFF + NF           # + field index: value length
ENT_INT = ENT_LEN + NF           # + field index: parsed integer (INT_FIELDS only)
ENT_BADINT = ENT_INT + NF        # bit f set: field f is present but not an integer
ENT_DUP = ENT_BADINT + 1         # bit f set: field f given twice
ENT_UNKNOWN = ENT_DUP + 1        # fields with a name not in FIELDS
ENT_EPOCH_HASH = ENT_UNKNOWN + 1  # FNV-1a of the epoch value (0: absent)
ENT_BADID = ENT_EPOCH_HASH + 1   # 1: the entry id is not "<ms>-<seq>"
ENT_COLS = ENT_BADID + 1

# parse_xread status (res[RES_STATUS])
ST_INCOMPLETE, ST_OK, ST_NULL, ST_ERROR, ST_PROTOCOL = 0, 1, 2, 3, 4
RES_STATUS, RES_END, RES_ENTRIES, RES_BLOCKS, RES_ERR_OFF, RES_ERR_LEN = range(6)
RES_WORDS = 8
# count_replies result words
CR_PARSED, CR_END, CR_ERRORS, CR_FIRST_ERR, CR_ERR_OFF, CR_ERR_LEN, CR_BAD = range(7)

CR, LF, DOLLAR, STAR, MINUS, PLUS, COLON, ZERO = 13, 10, 36, 42, 45, 43, 58, 48
FNV_OFFSET, FNV_PRIME = -3750763034362895579, 1099511628211   # 64-bit FNV-1a as int64


def u8(text: str | bytes) -> np.ndarray:
    """Bytes (or ASCII text) as a uint8 array for the kernels."""
    b = text.encode() if isinstance(text, str) else bytes(text)
    return np.frombuffer(b, np.uint8).copy()


def bulk(x) -> bytes:
    """One RESP bulk string."""
    b = x if isinstance(x, bytes) else str(x).encode()
    return b"$%d\r\n%s\r\n" % (len(b), b)


def command(*args) -> bytes:
    """A RESP command (an array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)


def field_names() -> tuple[np.ndarray, np.ndarray]:
    """``FIELDS`` as one uint8 array and the offsets of each name (for ``parse_xread``)."""
    raw = b"".join(f.encode() for f in FIELDS)
    offs = np.zeros(NF + 1, np.int64)
    for i, f in enumerate(FIELDS):
        offs[i + 1] = offs[i] + len(f)
    return np.frombuffer(raw, np.uint8).copy(), offs


def xadd_parts(key: str, maxlen: int, layout: int, size: int, epoch: str, host: str):
    """The constant parts of the bridge's XADD of one ring: (prefix up to the first field,
    the ``rec`` name and length header, the names of seq / rseq / sent, the constant
    fields after them)."""
    nargs = 6 + 2 * NF      # XADD key MAXLEN ~ N * + fields
    prefix = (b"*%d\r\n" % nargs + bulk("XADD") + bulk(key) + bulk("MAXLEN") + bulk("~") +
              bulk(int(maxlen)) + bulk("*"))
    rec = bulk("rec") + b"$%d\r\n" % size
    suffix = (bulk("layout") + bulk(int(layout)) + bulk("size") + bulk(int(size)) +
              bulk("epoch") + bulk(epoch) + bulk("host") + bulk(host))
    return (u8(prefix), u8(rec), u8(bulk("seq")), u8(bulk("rseq")), u8(bulk("sent")),
            u8(suffix))


def xadd_bound(parts, n: int, size: int) -> int:
    """Bytes ``pack_xadds`` may write for ``n`` records."""
    return n * (sum(len(p) for p in parts) + size + 2 + 3 * 26)


# ------------------------------------------------------------------ building ------

@njit(inline="always", **KW)
def _copy(dst, o, src):
    n = src.shape[0]
    for i in range(n):
        dst[o + i] = src[i]
    return o + n


@njit(inline="always", **KW)
def _ndigits(v):
    n = 1
    while v >= 10:
        v //= 10
        n += 1
    return n


@njit(inline="always", **KW)
def _put_int(dst, o, v):
    """ASCII decimal of v (a negative v gets its '-')."""
    if v < 0:
        dst[o] = MINUS
        o += 1
        v = -v
    n = _ndigits(v)
    for i in range(n - 1, -1, -1):
        dst[o + i] = ZERO + v % 10
        v //= 10
    return o + n


@njit(inline="always", **KW)
def _put_bulk_int(dst, o, v):
    n = _ndigits(-v if v < 0 else v) + (1 if v < 0 else 0)
    dst[o] = DOLLAR
    o = _put_int(dst, o + 1, n)
    dst[o] = CR
    dst[o + 1] = LF
    o = _put_int(dst, o + 2, v)
    dst[o] = CR
    dst[o + 1] = LF
    return o + 2


@njit(**KW)
def pack_xadds(dst, o, src, rw, n, prefix, rec_head, n_seq, n_rseq, n_sent, suffix,
               seq0, rseq_word, sent_ns):
    """Append n XADD commands to ``dst`` from byte ``o``, one per record of ``src`` (int64
    words, ``rw`` per record): record i gets seq ``seq0 + i``, rseq its word
    ``rseq_word``. Returns the end offset. ``dst`` must hold ``xadd_bound`` more bytes."""
    for i in range(n):
        o = _copy(dst, o, prefix)
        o = _copy(dst, o, rec_head)
        base = i * rw
        for j in range(rw):
            v = src[base + j]
            for b in range(8):
                dst[o + b] = (v >> (8 * b)) & 0xFF
            o += 8
        dst[o] = CR
        dst[o + 1] = LF
        o += 2
        o = _copy(dst, o, n_seq)
        o = _put_bulk_int(dst, o, seq0 + i)
        o = _copy(dst, o, n_rseq)
        o = _put_bulk_int(dst, o, src[base + rseq_word])
        o = _copy(dst, o, n_sent)
        o = _put_bulk_int(dst, o, sent_ns)
        o = _copy(dst, o, suffix)
    return o


# ------------------------------------------------------------------ parsing -------

@njit(inline="always", **KW)
def _line_end(buf, pos, end):
    """Index of the CR of the CRLF ending the line that starts at pos (-1: not yet)."""
    i = pos
    while i + 1 < end:
        if buf[i] == CR and buf[i + 1] == LF:
            return i
        i += 1
    return -1


@njit(inline="always", **KW)
def _atoi(buf, s, e):
    """(value, ok) of the ASCII decimal in buf[s:e]."""
    if e <= s or e - s > 19:
        return 0, False
    neg = buf[s] == MINUS
    i = s + 1 if neg else s
    if i >= e:
        return 0, False
    v = 0
    while i < e:
        c = buf[i]
        if c < ZERO or c > ZERO + 9:
            return 0, False
        v = v * 10 + (c - ZERO)
        i += 1
    return (-v if neg else v), True


@njit(**KW)
def _header(buf, pos, end, kind):
    """Parse a ``<kind><int>CRLF`` header at pos: (value, next pos); next -1: incomplete,
    -2: another type byte there (-3 an error reply: value = its line end)."""
    if pos >= end:
        return 0, -1
    t = buf[pos]
    if t != kind:
        if t == MINUS:
            e = _line_end(buf, pos, end)
            if e < 0:
                return 0, -1
            return e, -3
        return 0, -2
    e = _line_end(buf, pos + 1, end)
    if e < 0:
        return 0, -1
    v, ok = _atoi(buf, pos + 1, e)
    if not ok:
        return 0, -2
    return v, e + 2


@njit(**KW)
def skip_reply(buf, pos, end):
    """End of the one complete reply at pos (-1: incomplete, -2: malformed)."""
    pending = 1
    while pending > 0:
        if pos >= end:
            return -1
        t = buf[pos]
        e = _line_end(buf, pos + 1, end)
        if e < 0:
            return -1
        if t == STAR:
            n, ok = _atoi(buf, pos + 1, e)
            if not ok:
                return -2
            pos = e + 2
            if n > 0:
                pending += n
        elif t == DOLLAR:
            n, ok = _atoi(buf, pos + 1, e)
            if not ok:
                return -2
            pos = e + 2
            if n >= 0:
                if pos + n + 2 > end:
                    return -1
                pos += n + 2
        elif t == PLUS or t == MINUS or t == COLON:
            pos = e + 2
        else:
            return -2
        pending -= 1
    return pos


@njit(**KW)
def count_replies(buf, pos, end, want, res):
    """Walk up to ``want`` complete replies from pos (XADD's: a bulk id or an error).
    res: CR_PARSED replies, CR_END offset after them, CR_ERRORS error replies,
    CR_FIRST_ERR index of the first error (-1), CR_ERR_OFF/LEN its text, CR_BAD 1 if a reply
    was malformed."""
    res[CR_PARSED] = 0
    res[CR_ERRORS] = 0
    res[CR_FIRST_ERR] = -1
    res[CR_BAD] = 0
    k = 0
    while k < want:
        if pos < end and buf[pos] == MINUS:
            e = _line_end(buf, pos, end)
            if e < 0:
                break
            if res[CR_ERRORS] == 0:
                res[CR_FIRST_ERR] = k
                res[CR_ERR_OFF] = pos + 1
                res[CR_ERR_LEN] = e - pos - 1
            res[CR_ERRORS] += 1
            pos = e + 2
        else:
            nxt = skip_reply(buf, pos, end)
            if nxt == -1:
                break
            if nxt == -2:
                res[CR_BAD] = 1
                break
            pos = nxt
        k += 1
    res[CR_PARSED] = k
    res[CR_END] = pos
    return k


@njit(inline="always", **KW)
def _same(buf, s, n, names, a, b):
    if n != b - a:
        return False
    for i in range(n):
        if buf[s + i] != names[a + i]:
            return False
    return True


@njit(**KW)
def _parse_id(buf, s, e):
    """(ms, seq, ok) of an entry id ``<ms>-<seq>``."""
    d = -1
    for i in range(s, e):
        if buf[i] == MINUS:
            d = i
            break
    if d < 0:
        return 0, 0, False
    ms, ok1 = _atoi(buf, s, d)
    sq, ok2 = _atoi(buf, d + 1, e)
    return ms, sq, ok1 and ok2 and ms >= 0 and sq >= 0


@njit(**KW)
def parse_xread(buf, pos, end, names, name_offs, ent, recs, blocks, res):
    """Parse one XREAD reply at buf[pos:end].

    ``ent`` (rows x ``ENT_COLS``) gets a row per entry, ``recs`` (rows x max record bytes)
    the ``rec`` value of each (when it fits), ``blocks`` (rows x 2) the key's offset and
    length of each stream in the reply. ``res``: RES_STATUS (ST_*), RES_END (offset after the
    reply), RES_ENTRIES, RES_BLOCKS, and for an error reply RES_ERR_OFF / RES_ERR_LEN."""
    res[RES_STATUS] = ST_INCOMPLETE
    res[RES_ENTRIES] = 0
    res[RES_BLOCKS] = 0
    if pos >= end:
        return
    t = buf[pos]
    if t == MINUS:
        e = _line_end(buf, pos, end)
        if e < 0:
            return
        res[RES_ERR_OFF] = pos + 1
        res[RES_ERR_LEN] = e - pos - 1
        res[RES_END] = e + 2
        res[RES_STATUS] = ST_ERROR
        return
    if t == 95:              # "_" RESP3 null
        e = _line_end(buf, pos, end)
        if e < 0:
            return
        res[RES_END] = e + 2
        res[RES_STATUS] = ST_NULL
        return
    ns, p = _header(buf, pos, end, STAR)
    if p == -1:
        return
    if p < 0:
        res[RES_STATUS] = ST_PROTOCOL
        return
    if ns < 0:
        res[RES_END] = p
        res[RES_STATUS] = ST_NULL
        return
    if ns > blocks.shape[0]:
        res[RES_STATUS] = ST_PROTOCOL
        return
    rows = ent.shape[0]
    maxrec = recs.shape[1]
    n = 0
    for s in range(ns):
        two, p = _header(buf, p, end, STAR)
        if p == -1:
            return
        if p < 0 or two != 2:
            res[RES_STATUS] = ST_PROTOCOL
            return
        klen, p = _header(buf, p, end, DOLLAR)
        if p == -1:
            return
        if p < 0 or klen < 0:
            res[RES_STATUS] = ST_PROTOCOL
            return
        if p + klen + 2 > end:
            return
        blocks[s, 0] = p
        blocks[s, 1] = klen
        p += klen + 2
        ne, p = _header(buf, p, end, STAR)
        if p == -1:
            return
        if p < 0:
            res[RES_STATUS] = ST_PROTOCOL
            return
        for _ in range(ne):
            if n >= rows:
                res[RES_STATUS] = ST_PROTOCOL
                return
            two, p = _header(buf, p, end, STAR)
            if p == -1:
                return
            if p < 0 or two != 2:
                res[RES_STATUS] = ST_PROTOCOL
                return
            ilen, p = _header(buf, p, end, DOLLAR)
            if p == -1:
                return
            if p < 0 or ilen < 0:
                res[RES_STATUS] = ST_PROTOCOL
                return
            if p + ilen + 2 > end:
                return
            row = ent[n]
            for c in range(ENT_COLS):
                row[c] = 0
            for f in range(NF):
                row[ENT_OFF + f] = -1
            row[ENT_BLOCK] = s
            ms, sq, ok = _parse_id(buf, p, p + ilen)
            row[ENT_ID_MS] = ms
            row[ENT_ID_SEQ] = sq
            row[ENT_BADID] = 0 if ok else 1
            p += ilen + 2
            nf, p = _header(buf, p, end, STAR)
            if p == -1:
                return
            if p < 0 or nf < 0 or nf % 2:
                res[RES_STATUS] = ST_PROTOCOL
                return
            for _k in range(nf // 2):
                flen, p = _header(buf, p, end, DOLLAR)
                if p == -1:
                    return
                if p < 0 or flen < 0:
                    res[RES_STATUS] = ST_PROTOCOL
                    return
                if p + flen + 2 > end:
                    return
                fs = p
                p += flen + 2
                vlen, p = _header(buf, p, end, DOLLAR)
                if p == -1:
                    return
                if p < 0 or vlen < 0:
                    res[RES_STATUS] = ST_PROTOCOL
                    return
                if p + vlen + 2 > end:
                    return
                vs = p
                p += vlen + 2
                f = -1
                for j in range(NF):
                    if _same(buf, fs, flen, names, name_offs[j], name_offs[j + 1]):
                        f = j
                        break
                if f < 0:
                    row[ENT_UNKNOWN] += 1
                    continue
                if row[ENT_OFF + f] >= 0:
                    row[ENT_DUP] |= 1 << f
                row[ENT_OFF + f] = vs
                row[ENT_LEN + f] = vlen
                if f == F_REC:
                    if vlen <= maxrec:
                        for b in range(vlen):
                            recs[n, b] = buf[vs + b]
                elif f == F_EPOCH:
                    h = FNV_OFFSET
                    for b in range(vlen):
                        h = (h ^ buf[vs + b]) * FNV_PRIME
                    row[ENT_EPOCH_HASH] = h if h != 0 else 1
                elif f != F_HOST:
                    v, ok = _atoi(buf, vs, vs + vlen)
                    row[ENT_INT + f] = v
                    if not ok:
                        row[ENT_BADINT] |= 1 << f
            n += 1
    res[RES_END] = p
    res[RES_ENTRIES] = n
    res[RES_BLOCKS] = ns
    res[RES_STATUS] = ST_OK
