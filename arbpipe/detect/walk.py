"""Sizing a candidate pair by walking both L2 books: the size that maximises the expected
profit after every cost, and the fills it implies (``arbpipe.detect.kernel._evaluate`` calls
these; tests/unit/test_walk.py checks them against a brute-force reference).

Buy on leg b (its asks, best first), sell on leg s (its bids, best first). For a size q:
``BN(q)`` / ``SN(q)`` are the buy / sell notionals of filling q level by level, and with the
per-unit cost coefficients (fractions, not bps)

    kb = 1 + fee_b + slip / 2 + carry_b     (paid per unit of buy notional)
    ks = 1 - fee_s - slip / 2 + carry_s     (kept per unit of sell notional)

the expected profit is ``ks * SN(q) - kb * BN(q)``: each taker fee on its own leg's notional,
the slippage allowance on the mid notional ``(BN + SN) / 2``, the funding carry over the
horizon on each perp leg's notional (``carry_b`` > 0 when a long perp pays funding,
``carry_s`` > 0 when a short perp receives it). The walk consumes the two ladders together
in chunks (the smaller remainder of the current ask and bid level); a chunk at prices
(pa, pb) adds ``d * (ks * pb - kb * pa)``, which never grows as the walk goes deeper, so the
profit is concave in q and the walk stops at the first chunk that adds nothing (the first
chunk is taken even when it loses money, if net there still meets a negative min_net: a
monitoring setup that asks for losing opportunities sees them at top size). It also stops
where a cap binds (``qmax`` base units, ``nmax`` of buy notional) and where the net at the
size would fall under ``min_net``: net(q) >= k (k = min_net as a fraction) is
``(ks - k/2) * SN - (kb + k/2) * BN >= 0``, linear inside a chunk, so the largest such size
in the chunk is solved exactly. Since net(q) never grows with q, the result is the largest
size with net >= min_net, capped at the unconstrained optimum: the profit-maximising size
under the constraints.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_KW = dict(cache=True, nogil=True, boundscheck=False)

# a remainder this small (relative to the size) is float rounding, not a level taken
REM_EPS = 1e-12


@njit(inline="always", **_KW)
def choose_size_at(la, ra, apx, aqty, na, lb, rb, bpx, bqty, nb, kb, ks, kmin, qmax, nmax):
    """(size in base units, solved): the buy leg's asks are ``la[ra, apx + k]`` (prices) and
    ``la[ra, aqty + k]`` (sizes), k < ``na``; the sell leg's bids ``lb[rb, bpx + k]`` /
    ``lb[rb, bqty + k]``, k < ``nb`` (rows of 2-D arrays, not slices: a slice costs a
    reference-count update in the detector's hot path); cost coefficients ``kb``/``ks``,
    ``kmin`` = min_net as a fraction, caps ``qmax`` (base) and ``nmax`` (buy notional);
    size 0.0 when not even the first unit qualifies; ``solved``: the size is where net
    reaches min_net (its net may come out a rounding error under min_net)."""
    if na <= 0 or nb <= 0:
        return 0.0, False
    a = ks - 0.5 * kmin
    bb = kb + 0.5 * kmin
    q = 0.0
    bn = 0.0
    sn = 0.0
    ia = 0
    ib = 0
    rem_a = la[ra, aqty]
    rem_b = lb[rb, bqty]
    while ia < na and ib < nb:
        pa = la[ra, apx + ia]
        pb = lb[rb, bpx + ib]
        if ks * pb - kb * pa <= 0.0 and q > 0.0:
            break                        # the marginal chunk earns nothing after costs
        d = rem_a if rem_a < rem_b else rem_b
        last = False
        solved = False
        if q + d >= qmax:
            d = qmax - q
            last = True
        if bn + d * pa >= nmax:
            d = (nmax - bn) / pa
            last = True
        g = a * pb - bb * pa
        if g < 0.0:                      # this chunk pulls net(q) down towards min_net
            dl = (a * sn - bb * bn) / -g
            if dl <= d:
                d = dl
                last = True
                solved = True
        if d <= 0.0:
            break
        q += d
        bn += d * pa
        sn += d * pb
        if last:
            return q, solved
        rem_a -= d
        rem_b -= d
        if rem_a <= 0.0:
            ia += 1
            if ia < na:
                rem_a = la[ra, aqty + ia]
        if rem_b <= 0.0:
            ib += 1
            if ib < nb:
                rem_b = lb[rb, bqty + ib]
    return q, False


@njit(inline="always", **_KW)
def side_fill_at(lad, r, px, qty, n, q):
    """(notional, levels used) of filling ``q`` on the ladder ``lad[r, px + k]`` (prices)
    / ``lad[r, qty + k]`` (sizes), k < ``n``, best level first; the last level used may be
    partial."""
    rem = q
    notional = 0.0
    k = 0
    eps = q * REM_EPS
    while rem > eps and k < n:
        x = lad[r, qty + k]
        take = x if x < rem else rem
        notional += lad[r, px + k] * take
        rem -= take
        k += 1
    return notional, k


def _ladder(px, qty, n):
    """A one-row ladder of the ``*_at`` functions from 1-D prices and sizes."""
    return np.concatenate((np.asarray(px, np.float64)[:n], np.asarray(qty, np.float64)[:n]))[None, :]


def choose_size(ap, aq, na, bp, bq, nb, kb, ks, kmin, qmax, nmax):
    """``choose_size_at`` over 1-D ladders (tests, benchmarks)."""
    return _choose(_ladder(ap, aq, na), na, _ladder(bp, bq, nb), nb, kb, ks, kmin, qmax, nmax)


def side_fill(px, qty, n, q):
    """``side_fill_at`` over a 1-D ladder (tests, benchmarks)."""
    return _fill(_ladder(px, qty, n), n, q)


@njit(**_KW)
def _choose(la, na, lb, nb, kb, ks, kmin, qmax, nmax):
    return choose_size_at(la, 0, 0, na, na, lb, 0, 0, nb, nb, kb, ks, kmin, qmax, nmax)


@njit(**_KW)
def _fill(lad, n, q):
    return side_fill_at(lad, 0, 0, n, n, q)


@njit(inline="always", **_KW)
def round_to_lot(q, lot):
    """``q`` rounded down to a whole number of ``lot`` (0: no step); a quotient within
    1e-9 under a whole number counts as that number (0.3 / 0.1 is 2.9999999999999996)."""
    if lot <= 0.0:
        return q
    n = int(q / lot + 1e-9)
    r = n * lot
    return r if r < q else q
