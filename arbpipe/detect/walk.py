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

from numba import njit

_KW = dict(cache=True, nogil=True, boundscheck=False)

# a remainder this small (relative to the size) is float rounding, not a level taken
REM_EPS = 1e-12


@njit(**_KW)
def choose_size(ap, aq, na, bp, bq, nb, kb, ks, kmin, qmax, nmax):
    """(size in base units, solved): asks ``ap``/``aq`` (``na`` levels) of the buy leg,
    bids ``bp``/``bq`` (``nb``) of the sell leg, cost coefficients ``kb``/``ks``, ``kmin``
    = min_net as a fraction, caps ``qmax`` (base) and ``nmax`` (buy notional); size 0.0
    when not even the first unit qualifies; ``solved``: the size is where net reaches
    min_net (its net may come out a rounding error under min_net)."""
    if na <= 0 or nb <= 0:
        return 0.0, False
    a = ks - 0.5 * kmin
    bb = kb + 0.5 * kmin
    q = 0.0
    bn = 0.0
    sn = 0.0
    ia = 0
    ib = 0
    ra = aq[0]
    rb = bq[0]
    while ia < na and ib < nb:
        pa = ap[ia]
        pb = bp[ib]
        if ks * pb - kb * pa <= 0.0 and q > 0.0:
            break                        # the marginal chunk earns nothing after costs
        d = ra if ra < rb else rb
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
        ra -= d
        rb -= d
        if ra <= 0.0:
            ia += 1
            if ia < na:
                ra = aq[ia]
        if rb <= 0.0:
            ib += 1
            if ib < nb:
                rb = bq[ib]
    return q, False


@njit(**_KW)
def side_fill(px, qty, n, q):
    """(notional, levels used) of filling ``q`` on one ladder, best level first; the last
    level used may be partial."""
    rem = q
    notional = 0.0
    k = 0
    eps = q * REM_EPS
    while rem > eps and k < n:
        take = qty[k] if qty[k] < rem else rem
        notional += px[k] * take
        rem -= take
        k += 1
    return notional, k


@njit(**_KW)
def round_to_lot(q, lot):
    """``q`` rounded down to a whole number of ``lot`` (0: no step); a quotient within
    1e-9 under a whole number counts as that number (0.3 / 0.1 is 2.9999999999999996)."""
    if lot <= 0.0:
        return q
    n = int(q / lot + 1e-9)
    r = n * lot
    return r if r < q else q
