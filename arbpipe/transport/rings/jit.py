"""``kernels()``: the numba ring kernels (``arbpipe.transport.kernels``), imported and warmed
up by the first ring handle a process makes.

The ring modules call the kernels as ``K.<kernel>(...)`` through a module global ``K`` that
is None until a handle's constructor binds it (``global K; K = kernels()``). A hot path looks
``K`` up exactly as it would after a module-level import, and a process that only creates
ring segments (``Ring.create_segment``) and reads their counters (``ring_stats``) never
imports numba and LLVM: the supervisor (``arbpipe bench footprint``: 79 -> 40 MiB USS).
"""
from __future__ import annotations

_K = None


def kernels():
    """The ring kernels module, every kernel loaded (``warm_up``) before it is returned."""
    global _K
    if _K is None:
        from arbpipe.transport import kernels as K  # lazy: numba + LLVM: 150 ms, 37 MiB USS
        K.warm_up()
        _K = K
    return _K
