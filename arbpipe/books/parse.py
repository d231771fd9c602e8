"""Depth levels straight from the raw JSON bytes of a frame (numba): ``[[price, qty], ...]``
arrays of both sides into one float64 array, no Python object per level.

``parse_sides(b, a, out, strings_only)`` parses two JSON arrays of 2-element rows (``b``
then ``a``, the raw bytes, e.g. ``bytes(msgspec.Raw)``) into ``out[:k]`` and returns
``nb << 32 | k`` (nb: the bid rows), or -1 when a byte does not fit the narrow grammar it
takes: rows of exactly 2 values, each a JSON string holding a plain decimal (``-?d+(.d+)?
([eE][+-]?d+)?``, no escapes, no blanks) or, unless ``strings_only``, such a JSON number;
at most 18 significant digits and a value that Clinger's fast path converts exactly
(mantissa <= 2**53, power of ten <= 22). For what it takes the result is bit for bit
``float(text)`` (one correctly rounded IEEE multiply or divide of two exact values); the
caller handles anything else the way it did before (its decoder and ``float``), so that
no input is judged differently.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from arbpipe.books.full import split_levels

_KW = dict(cache=True, nogil=True, boundscheck=False)
_POW10 = np.array([10.0 ** k for k in range(23)], np.float64)   # exact in float64
_MANT_MAX = 1 << 53
_QUOTE, _MINUS, _DOT, _COMMA = 34, 45, 46, 44
_LBR, _RBR = 91, 93


@njit(**_KW)
def skip_ws(s, i, n):
    while i < n:
        c = s[i]
        if c != 32 and c != 9 and c != 10 and c != 13:
            break
        i += 1
    return i


@njit(**_KW)
def json_decimal(s, i, n, quoted):
    """(value, index after it); index -1 when the text is not taken."""
    neg = False
    if i < n and s[i] == _MINUS:
        neg = True
        i += 1
    m = 0
    digits = 0                    # significant digits in m
    start = i
    while i < n and 48 <= s[i] <= 57:
        d = s[i] - 48
        if m > 0 or d > 0:
            digits += 1
        m = m * 10 + d
        i += 1
        if digits > 18:
            return 0.0, -1
    if i == start:
        return 0.0, -1
    if not quoted and s[start] == 48 and i - start > 1:
        return 0.0, -1            # a JSON number with a leading zero: not JSON
    e = 0
    if i < n and s[i] == _DOT:
        i += 1
        f0 = i
        while i < n and 48 <= s[i] <= 57:
            d = s[i] - 48
            if m > 0 or d > 0:
                digits += 1
            m = m * 10 + d
            e -= 1
            i += 1
            if digits > 18:
                return 0.0, -1
        if i == f0:
            return 0.0, -1
    if i < n and (s[i] == 101 or s[i] == 69):       # e / E
        i += 1
        eneg = False
        if i < n and (s[i] == 43 or s[i] == _MINUS):
            eneg = s[i] == _MINUS
            i += 1
        x0 = i
        x = 0
        while i < n and 48 <= s[i] <= 57:
            x = x * 10 + (s[i] - 48)
            i += 1
            if x > 1000:
                return 0.0, -1
        if i == x0:
            return 0.0, -1
        e += -x if eneg else x
    if m > _MANT_MAX or e > 22 or e < -22:
        if m != 0:
            return 0.0, -1
        e = 0
    v = float(m)
    if e > 0:
        v = v * _POW10[e]
    elif e < 0:
        v = v / _POW10[-e]
    return (-v if neg else v), i


@njit(**_KW)
def _value(s, i, n, strings_only):
    if i < n and s[i] == _QUOTE:
        v, j = json_decimal(s, i + 1, n, True)
        if j < 0 or j >= n or s[j] != _QUOTE:
            return 0.0, -1
        return v, j + 1
    if strings_only:
        return 0.0, -1
    return json_decimal(s, i, n, False)


@njit(**_KW)
def _rows(s, out, r, strings_only):
    """Rows of the JSON array ``s`` into ``out[r:]``; the row count after, or -1."""
    n = len(s)
    cap = out.shape[0]
    i = skip_ws(s, 0, n)
    if i >= n or s[i] != _LBR:
        return -1
    i = skip_ws(s, i + 1, n)
    if i < n and s[i] == _RBR:
        return r if skip_ws(s, i + 1, n) == n else -1
    while True:
        if i >= n or s[i] != _LBR or r >= cap:
            return -1
        p, i = _value(s, skip_ws(s, i + 1, n), n, strings_only)
        if i < 0:
            return -1
        i = skip_ws(s, i, n)
        if i >= n or s[i] != _COMMA:
            return -1
        q, i = _value(s, skip_ws(s, i + 1, n), n, strings_only)
        if i < 0:
            return -1
        i = skip_ws(s, i, n)
        if i >= n or s[i] != _RBR:
            return -1
        out[r, 0] = p
        out[r, 1] = q
        r += 1
        i = skip_ws(s, i + 1, n)
        if i < n and s[i] == _COMMA:
            i = skip_ws(s, i + 1, n)
            continue
        if i < n and s[i] == _RBR:
            return r if skip_ws(s, i + 1, n) == n else -1
        return -1


@njit(**_KW)
def parse_sides(b, a, out, strings_only):
    """``nb << 32 | k``: the rows of ``b`` then ``a`` in ``out[:k]``, nb of them bids; -1
    when not taken (one int back: a tuple costs more to box than the parse)."""
    nb = _rows(b, out, 0, strings_only)
    if nb < 0:
        return -1
    k = _rows(a, out, nb, strings_only)
    if k < 0:
        return -1
    return nb << 32 | k


def raw_levels(b, a, strings_only: bool = True):
    """(bids, asks) float64 (k, 2) arrays (``split_levels`` views of one array) of the raw
    JSON ``b`` / ``a`` (bytes-like, e.g. ``msgspec.Raw``), or None when ``parse_sides``
    does not take them."""
    sb = bytes(b)                 # numba takes bytes for less than np.frombuffer costs
    sa = bytes(a)
    out = np.empty(((len(sb) + len(sa)) // 5 + 1, 2), np.float64)  # a row is >= 5 bytes
    r = parse_sides(sb, sa, out, strings_only)
    if r < 0:
        return None
    return split_levels(out[:r & 0xFFFFFFFF], r >> 32)
