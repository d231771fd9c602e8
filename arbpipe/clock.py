"""System-wide clocks readable inside numba kernels.

``realtime_ns()`` is CLOCK_REALTIME in ns (same clock as ``time.time_ns()``): every
process on the host reads the same clock, so a timestamp taken in a feed process
can be subtracted from one taken in the detector. ``monotonic_ns()`` is
CLOCK_MONOTONIC (``time.monotonic_ns()``). Both go through libc's vDSO
``clock_gettime`` (~20 ns), called directly from jitted code.
"""
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1


@intrinsic
def _clock_gettime_ns(typingctx, clock_id):
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        ts_t = ir.LiteralStructType([i64, i64])
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), ts_t.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        ts = cgutils.alloca_once(builder, ts_t)
        cid = builder.trunc(context.cast(builder, args[0], sig.args[0], types.int64), ir.IntType(32))
        builder.call(fn, [cid, ts])
        sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)
    return types.int64(clock_id), codegen


@njit(inline="always", cache=True)
def realtime_ns():
    return _clock_gettime_ns(CLOCK_REALTIME)


@njit(inline="always", cache=True)
def monotonic_ns():
    return _clock_gettime_ns(CLOCK_MONOTONIC)
