"""What every ring kernel shares: compile options, the ring kinds and full policies as
plain ints, the packed return value, the geometry read from the header, and the record
copies that wrap around the end of the data area.

Module-level ints are folded by numba like literals, so naming them costs nothing.

numba's on-disk cache (``cache=True``) is keyed on the source file of each kernel, not on
the files it inlines: after changing a helper here (or in ``doorbell``), remove the
cached kernels (``find arbpipe -name __pycache__ -exec rm -rf {} +``; ``make clean``
does it too), or the kernels of the sibling modules keep the old code.
"""
from numba import njit

from arbpipe.transport.returns import COUNT_MASK, STALL_BIT, STALL_SHIFT, WAKE_BIT, \
    WAKE_SHIFT  # noqa: F401 (the packed return value: numba-free, for the ring classes)
from shm_layouts.kinds import RingKind
from shm_layouts.ring import HALF_MASK, HALF_SHIFT, W_GEOM, W_OFFSETS, W_POLICY, WORD_SHIFT, \
    FullPolicy

KERNEL_OPTIONS = dict(cache=True, nogil=True, boundscheck=False)

KIND_SPSC = int(RingKind.SPSC)
KIND_MPMC = int(RingKind.MPMC)
KIND_BROADCAST = int(RingKind.BROADCAST)
POLICY_BLOCK = int(FullPolicy.BLOCK)
POLICY_DROP = int(FullPolicy.DROP_NEWEST)


@njit(inline="always", **KERNEL_OPTIONS)
def geometry(w):
    """(capacity, words per record, data word offset, seq word offset)."""
    g = w[W_GEOM]
    o = w[W_OFFSETS]
    return (g >> HALF_SHIFT, (g & HALF_MASK) >> WORD_SHIFT, (o >> HALF_SHIFT) >> WORD_SHIFT,
            (o & HALF_MASK) >> WORD_SHIFT)


@njit(inline="always", **KERNEL_OPTIONS)
def full_policy(w):
    """The ring's ``FullPolicy`` as an int."""
    return w[W_POLICY] >> HALF_SHIFT


@njit(inline="always", **KERNEL_OPTIONS)
def copy_in(w, data_w, cap, rw, pos, src, first, k):
    """Copy records src[first:first+k] to ring positions pos..pos+k-1 (two chunks at wrap)."""
    s = pos & (cap - 1)
    c1 = min(k, cap - s)
    d = data_w + s * rw
    o = first * rw
    for j in range(c1 * rw):
        w[d + j] = src[o + j]
    o += c1 * rw
    for j in range((k - c1) * rw):
        w[data_w + j] = src[o + j]


@njit(inline="always", **KERNEL_OPTIONS)
def copy_out(w, data_w, cap, rw, pos, dst, first, k):
    """Copy the records at ring positions pos..pos+k-1 to dst[first:first+k]."""
    s = pos & (cap - 1)
    c1 = min(k, cap - s)
    d = data_w + s * rw
    o = first * rw
    for j in range(c1 * rw):
        dst[o + j] = w[d + j]
    o += c1 * rw
    for j in range((k - c1) * rw):
        dst[o + j] = w[data_w + j]
