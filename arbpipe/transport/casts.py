"""Bit casts for numba kernels (detector, books), compiled to one LLVM instruction each: the
float64 fields of a record travel as the bits of an int64 word (``shm_layouts.words``)."""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def as_f64(typingctx, x):
    """The float64 whose bits are the int64 ``x``."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def f64_bits(typingctx, x):
    """The bits of float64 ``x`` as an int64."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def f32_bits(typingctx, x):
    """The bits of ``x`` rounded to float32, zero-extended to an int64."""
    def codegen(context, builder, sig, args):
        f = builder.fptrunc(args[0], ir.FloatType())
        return builder.zext(builder.bitcast(f, ir.IntType(32)), ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def i64_ptr(typingctx, addr):
    """An int64 pointer to the address ``addr``."""
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], ir.IntType(64).as_pointer())
    return types.CPointer(types.int64)(types.int64), codegen
