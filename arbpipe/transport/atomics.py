"""Atomic operations on uint64/int64 array elements, for numba kernels.

Each function is a numba ``@intrinsic`` that emits one LLVM atomic instruction on
the naturally aligned 8-byte element ``arr[idx]``:

    load_acquire(arr, i)          load atomic acquire
    load_relaxed(arr, i)          load atomic monotonic (never hoisted out of a loop)
    store_release(arr, i, v)      store atomic release
    cas(arr, i, expected, new)    cmpxchg acq_rel/acquire -> (ok, observed)
    fetch_add(arr, i, v)          atomicrmw add seq_cst -> previous value
    fence_acquire/fence_release/fence_seq_cst()
    cpu_relax()                   the spin-wait hint (x86 ``pause``, arm ``yield``)

Cross-process cursors must only be read with these inside spin loops: a plain
load may legally be hoisted by LLVM and spin forever. All of them can also be
called from Python (each call is a small jitted wrapper, ~100-300 ns).
"""
import platform

from llvmlite import binding as _llvm, ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_WORD_TYPES = (types.uint64, types.int64)


def _check(arr):
    if not isinstance(arr, types.Array) or arr.dtype not in _WORD_TYPES:
        raise TypeError(f"atomics need a uint64/int64 array, got {arr}")


def _ptr(context, builder, arrty, arr, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [idx])


def _make_load(order):
    @intrinsic
    def _load(typingctx, arr, idx):
        _check(arr)

        def codegen(context, builder, sig, args):
            ptr = _ptr(context, builder, sig.args[0], args[0], args[1])
            return builder.load_atomic(ptr, order, 8)
        return arr.dtype(arr, types.intp), codegen
    return _load


def _make_store(order):
    @intrinsic
    def _store(typingctx, arr, idx, val):
        _check(arr)

        def codegen(context, builder, sig, args):
            v = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
            builder.store_atomic(v, _ptr(context, builder, sig.args[0], args[0], args[1]), order, 8)
            return context.get_dummy_value()
        return types.void(arr, types.intp, val), codegen
    return _store


def _make_fence(order):
    @intrinsic
    def _fence(typingctx):
        def codegen(context, builder, sig, args):
            builder.fence(order)
            return context.get_dummy_value()
        return types.void(), codegen
    return _fence


_load_acq = _make_load("acquire")
_load_mono = _make_load("monotonic")
_store_rel = _make_store("release")
_fence_acq = _make_fence("acquire")
_fence_rel = _make_fence("release")
_fence_sc = _make_fence("seq_cst")


@intrinsic
def _cas(typingctx, arr, idx, expected, new):
    _check(arr)

    def codegen(context, builder, sig, args):
        dt = sig.args[0].dtype
        ptr = _ptr(context, builder, sig.args[0], args[0], args[1])
        exp = context.cast(builder, args[2], sig.args[2], dt)
        nv = context.cast(builder, args[3], sig.args[3], dt)
        res = builder.cmpxchg(ptr, exp, nv, "acq_rel", "acquire")
        observed = builder.extract_value(res, 0)
        ok = builder.extract_value(res, 1)
        return context.make_tuple(builder, sig.return_type, [ok, observed])
    return types.Tuple((types.boolean, arr.dtype))(arr, types.intp, expected, new), codegen


@intrinsic
def _rmw_add(typingctx, arr, idx, val):
    _check(arr)

    def codegen(context, builder, sig, args):
        ptr = _ptr(context, builder, sig.args[0], args[0], args[1])
        v = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        return builder.atomic_rmw("add", ptr, v, "seq_cst")
    return arr.dtype(arr, types.intp, val), codegen


try:  # inline asm (the spin hint) needs the native asm parser, which numba does not load
    _llvm.initialize_native_asmparser()
except Exception:  # pragma: no cover
    pass

_RELAX_ASM = {"x86_64": "pause", "AMD64": "pause", "aarch64": "yield", "arm64": "yield"}.get(
    platform.machine(), "")


@intrinsic
def _relax(typingctx):
    def codegen(context, builder, sig, args):
        if _RELAX_ASM:
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(ir.InlineAsm(fnty, _RELAX_ASM, "~{memory}", side_effect=True), [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(inline="always", cache=True)
def load_acquire(arr, idx):
    return _load_acq(arr, idx)


@njit(inline="always", cache=True)
def load_relaxed(arr, idx):
    return _load_mono(arr, idx)


@njit(inline="always", cache=True)
def store_release(arr, idx, val):
    _store_rel(arr, idx, val)


@njit(inline="always", cache=True)
def cas(arr, idx, expected, new):
    return _cas(arr, idx, expected, new)


@njit(inline="always", cache=True)
def fetch_add(arr, idx, val):
    return _rmw_add(arr, idx, val)


@njit(inline="always", cache=True)
def fence_acquire():
    _fence_acq()


@njit(inline="always", cache=True)
def fence_release():
    _fence_rel()


@njit(inline="always", cache=True)
def fence_seq_cst():
    _fence_sc()


@njit(inline="always", cache=True)
def cpu_relax():
    _relax()
