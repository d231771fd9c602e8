"""Book-side kernels (numba): sorted levels of one side of a book, in place.

A side is ``px[:n]`` / ``qty[:n]`` with ``n = cnt[0]``, sorted best first: bids by
descending price, asks by ascending price (``ask`` = True). ``apply_levels`` applies a
message's levels (qty 0 removes; a price not present is inserted; a full side drops its
worst level to make room for a better one and ignores one that would be worst).
``top_diff`` compares two top-N views of one side and writes the levels that turn the old
into the new (removals as qty 0 first, then every new or changed level).
"""
from __future__ import annotations

from numba import njit

_KW = dict(cache=True, nogil=True, boundscheck=False)


@njit(**_KW)
def _find(px, n, price, ask):
    """Index of ``price`` in the side, or of where it would go (binary search)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        p = px[mid]
        if p == price:
            return mid
        if (p < price) if ask else (p > price):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**_KW)
def apply_level(px, qty, cnt, ask, price, q):
    """Apply one level to a side; returns 1 when the side changed, else 0."""
    n = cnt[0]
    cap = px.shape[0]
    j = _find(px, n, price, ask)
    found = j < n and px[j] == price
    if q == 0.0:
        if not found:
            return 0
        for t in range(j, n - 1):
            px[t] = px[t + 1]
            qty[t] = qty[t + 1]
        cnt[0] = n - 1
        return 1
    if found:
        if qty[j] == q:
            return 0
        qty[j] = q
        return 1
    if j >= cap:                  # worse than every level of a full side
        return 0
    last = n if n < cap else cap - 1
    for t in range(last, j, -1):
        px[t] = px[t - 1]
        qty[t] = qty[t - 1]
    px[j] = price
    qty[j] = q
    cnt[0] = last + 1
    return 1


@njit(**_KW)
def apply_levels(px, qty, cnt, ask, levels, m):
    """Apply ``levels[:m]`` ((price, qty) rows) in order; returns how many changed the side."""
    changed = 0
    for r in range(m):
        changed += apply_level(px, qty, cnt, ask, levels[r, 0], levels[r, 1])
    return changed


@njit(**_KW)
def top_diff(opx, oqty, on, npx, nqty, nn, out):
    """Rows (price, qty) of ``out`` that turn the old top (``opx[:on]``) into the new
    (``npx[:nn]``): every old price absent from the new top as qty 0, then every new level
    that is absent or different in the old. Both are sorted the same way. Returns the row
    count (at most on + nn)."""
    m = 0
    for a in range(on):
        p = opx[a]
        hit = False
        for b in range(nn):
            if npx[b] == p:
                hit = True
                break
        if not hit:
            out[m, 0] = p
            out[m, 1] = 0.0
            m += 1
    for b in range(nn):
        p = npx[b]
        same = False
        for a in range(on):
            if opx[a] == p:
                same = oqty[a] == nqty[b]
                break
        if not same:
            out[m, 0] = p
            out[m, 1] = nqty[b]
            m += 1
    return m


@njit(**_KW)
def crossed(bpx, bn, apx, an):
    """True when the best bid is at or above the best ask (a book that cannot be)."""
    return bn > 0 and an > 0 and bpx[0] >= apx[0]
