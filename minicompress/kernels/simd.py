"""x86 vector instructions inside Numba loops: LLVM intrinsics behind `numba.extending.intrinsic`, and
the host's CPU features that say which of them may be compiled.

LLVM's loop vectoriser never emits `vpdpbusd` (u8 x s8 dot products of 4-byte groups added to int32
lanes) for a plain Numba loop, whatever the loop's shape; it widens the bytes into 32-bit lanes instead.
The integer GEMM (`qgemm.py`) therefore calls the instructions by name:

    vpdpbusd(acc, a, b)[i] = acc[i] + sum_{j<4} uint8(a[i].byte[j]) * int8(b[i].byte[j])   (int32, wraps)
        llvm.x86.avx512.vpdpbusd.512   16 lanes (zmm), AVX512-VNNI
        llvm.x86.avx512.vpdpbusd.256    8 lanes (ymm), AVX512-VNNI + AVX512VL (EVEX) or AVX-VNNI (VEX):
                                       LLVM picks the encoding from the target's features (clang's
                                       _mm256_dpbusd_epi32 and _mm256_dpbusd_avx_epi32 both lower to it)
    pmaddwd(a, b)[i] = int16(a[i].lo) * int16(b[i].lo) + int16(a[i].hi) * int16(b[i].hi)      (int32)
        llvm.x86.avx2.pmadd.wd          8 lanes (ymm), AVX2
    pmaddubsw(a, b)[j] = sat16(uint8(a.byte[2j]) * int8(b.byte[2j]) + uint8(a.byte[2j+1]) * int8(b.byte[2j+1]))
        llvm.x86.avx2.pmadd.ub.sw       16 int16 lanes (ymm), AVX2; sat16 clamps to [-32768, 32767]

vpdpbusd and pmaddwd never saturate: vpdpbusd adds four products of at most 255 * 128 to the lane,
pmaddwd two. pmaddubsw does: a pair of 255 * -128 products is -65280. `maddubs_add8` (pmaddubsw, then
pmaddwd against int16 ones to add its two neighbouring int16 into each int32 lane, as MLAS's and fbgemm's
AVX2 kernels do) therefore equals vpdpbusd only for operands whose every pair sum fits int16;
`maddubs_reference` below is its NumPy emulation, saturation included, and kernels/qgemm.py says when
the route using it is allowed.

A vector is a Numba value of type `I32x16` or `I32x8` (an LLVM `<16 x i32>` / `<8 x i32>`); `zeros`,
`load` (from a flat int32 array at an element index), `splat` (one int32 in every lane) and `store`
move data in and out. Local vector variables live in registers after LLVM's mem2reg.

Compiling one of these intrinsics for a CPU without the instruction makes LLVM abort the whole
process (no Python exception), so callers check `has_features` before the first call of a kernel that
uses them: Numba compiles a function at its first call, for the features `host_features` returns.
"""
import os
import platform

import numpy as np

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


def host_features():
    """The CPU features Numba compiles for: NUMBA_CPU_FEATURES when set ("+avx2,-avx512f,..."), else
    the host's as LLVM detects them; an empty set off x86."""
    listed = os.environ.get("NUMBA_CPU_FEATURES")
    if listed is not None:
        return {item[1:] for item in listed.split(",") if item.startswith("+")}
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return set()
    import llvmlite.binding as llvm
    return {name for name, enabled in llvm.get_host_cpu_features().items() if enabled}


def has_features(*names):
    """True when every named feature (LLVM's spelling: "avx512vnni", "avxvnni", "avx2") is available."""
    return set(names) <= host_features()


# --------------------------------------------------------------------------------------------------
# Vector types


def _vector_type(lanes):
    llvm_type = ir.VectorType(ir.IntType(32), lanes)

    class VectorType(types.Type):
        def __init__(self):
            super().__init__(name=f"i32x{lanes}")

    @register_model(VectorType)
    class VectorModel(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):
            super().__init__(dmm, fe_type, llvm_type)

    return VectorType(), llvm_type


I32x16, _V16 = _vector_type(16)
I32x8, _V8 = _vector_type(8)
_LLVM = {I32x16: _V16, I32x8: _V8}


def _vector_ops(numba_type):
    """zeros(), load(flat_array, index), splat(int32), store(flat_array, index, vector) for one vector type."""
    llvm_type = _LLVM[numba_type]
    lanes = llvm_type.count

    def element_pointer(context, builder, array_type, array, index):
        data = context.make_array(array_type)(context, builder, array).data
        return builder.bitcast(builder.gep(data, [index]), llvm_type.as_pointer())

    @intrinsic
    def zeros(typingctx):
        return numba_type(), lambda context, builder, sig, args: ir.Constant(llvm_type, [0] * lanes)

    @intrinsic
    def load(typingctx, array, index):
        def codegen(context, builder, sig, args):
            return builder.load(element_pointer(context, builder, sig.args[0], args[0], args[1]), align=4)
        return numba_type(array, index), codegen

    @intrinsic
    def splat(typingctx, value):
        def codegen(context, builder, sig, args):
            one = builder.insert_element(ir.Constant(llvm_type, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, ir.Constant(llvm_type, ir.Undefined), ir.Constant(llvm_type, [0] * lanes))
        return numba_type(types.int32), codegen

    @intrinsic
    def store(typingctx, array, index, vector):
        def codegen(context, builder, sig, args):
            builder.store(args[2], element_pointer(context, builder, sig.args[0], args[0], args[1]), align=4)
            return context.get_dummy_value()
        return types.none(array, index, numba_type), codegen

    return zeros, load, splat, store


zeros16, load16, splat16, store16 = _vector_ops(I32x16)
zeros8, load8, splat8, store8 = _vector_ops(I32x8)


# --------------------------------------------------------------------------------------------------
# The instructions


def _call(builder, name, result_type, arg_types, args):
    function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(result_type, arg_types), name)
    return builder.call(function, args)


@intrinsic
def vpdpbusd16(typingctx, acc, a, b):
    """acc + per-lane dot products of a's 4 uint8 with b's 4 int8 (zmm); needs avx512vnni."""
    def codegen(context, builder, sig, args):
        return _call(builder, "llvm.x86.avx512.vpdpbusd.512", _V16, [_V16] * 3, args)
    return I32x16(I32x16, I32x16, I32x16), codegen


@intrinsic
def vpdpbusd8(typingctx, acc, a, b):
    """The ymm form; needs avx512vnni + avx512vl, or avxvnni."""
    def codegen(context, builder, sig, args):
        return _call(builder, "llvm.x86.avx512.vpdpbusd.256", _V8, [_V8] * 3, args)
    return I32x8(I32x8, I32x8, I32x8), codegen


@intrinsic
def pmaddwd_add8(typingctx, acc, a, b):
    """acc + pmaddwd(a, b): each lane's two int16 pairs multiplied and added in int32 (ymm); needs avx2."""
    def codegen(context, builder, sig, args):
        halves = ir.VectorType(ir.IntType(16), 16)
        a16, b16 = builder.bitcast(args[1], halves), builder.bitcast(args[2], halves)
        return builder.add(args[0], _call(builder, "llvm.x86.avx2.pmadd.wd", _V8, [halves, halves], [a16, b16]))
    return I32x8(I32x8, I32x8, I32x8), codegen


@intrinsic
def maddubs_add8(typingctx, acc, a, b):
    """acc + pmaddwd(pmaddubsw(a, b), 1): each lane's 4 uint8 of a times b's 4 int8, the two neighbouring
    pairs first added in saturating int16 (ymm); needs avx2. Exact only where no pair sum leaves int16."""
    def codegen(context, builder, sig, args):
        bytes32, halves = ir.VectorType(ir.IntType(8), 32), ir.VectorType(ir.IntType(16), 16)
        a8, b8 = builder.bitcast(args[1], bytes32), builder.bitcast(args[2], bytes32)
        pairs = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", halves, [bytes32, bytes32], [a8, b8])
        ones = ir.Constant(halves, [1] * 16)
        return builder.add(args[0], _call(builder, "llvm.x86.avx2.pmadd.wd", _V8, [halves, halves], [pairs, ones]))
    return I32x8(I32x8, I32x8, I32x8), codegen


def _byte_op(name):
    @intrinsic
    def byte_op(typingctx, a, b):
        def codegen(context, builder, sig, args):
            bytes32 = ir.VectorType(ir.IntType(8), 32)
            a8, b8 = builder.bitcast(args[0], bytes32), builder.bitcast(args[1], bytes32)
            return builder.bitcast(_call(builder, name, bytes32, [bytes32, bytes32], [a8, b8]), _V8)
        return I32x8(I32x8, I32x8), codegen
    return byte_op


# Per byte of two I32x8: min(a, b) as uint8 (vpminub) and max(a - b, 0) as uint8 (vpsubusb). LLVM's generic
# intrinsics: legal on any CPU. a = umin8(a, L) + usubsat8(a, L) splits a code into two parts <= L when
# 255 - L <= L (qconv's maddubs GEMM, for the rare pixels above its code limit).
umin8 = _byte_op("llvm.umin.v32i8")
usubsat8 = _byte_op("llvm.usub.sat.v32i8")


def maddubs_reference(x, w):
    """What `maddubs_add8` computes, on whole arrays: x (M, K) uint8 times w (N, K) int8 with K even, the
    products of k = 2j and 2j + 1 added and clamped to int16 (pmaddubsw's saturation), then summed in int64.
    Equals x @ w.T exactly when no pair sum leaves [-32768, 32767]."""
    products = x.astype(np.int64)[:, None, :] * w.astype(np.int64)[None, :, :]
    pairs = products.reshape(x.shape[0], w.shape[0], -1, 2).sum(axis=3)
    return np.clip(pairs, -2**15, 2**15 - 1).sum(axis=2)


# --------------------------------------------------------------------------------------------------
# Not x86-specific


@intrinsic
def fma32(typingctx, a, b, c):
    """float32 a * b + c with one rounding (llvm.fma.f32: the FMA instruction where there is one, the C
    library's fmaf elsewhere; the loop vectoriser widens it). Safe to compile on any CPU. Its NumPy twin is
    `fma_float32`."""
    def codegen(context, builder, sig, args):
        f32 = ir.FloatType()
        return _call(builder, "llvm.fma.f32", f32, [f32] * 3, args)
    return types.float32(types.float32, types.float32, types.float32), codegen


def fma_float32(a, b, c):
    """float32(a * b + c) with a single rounding (a fused multiply-add), for float32 a, b, c.

    a * b is exact in float64 (24 + 24 significant bits fit in 53). The float64 sum is then made
    "round to odd" (its last bit set whenever the sum was inexact, using the exact error from Knuth's
    TwoSum), so that the final rounding to float32 cannot fall on a tie that was not there: rounding
    to odd with at least two extra bits, then to nearest, equals rounding the exact value to nearest.
    """
    a, b, c = (np.asarray(v, np.float64) for v in (a, b, c))
    with np.errstate(invalid="ignore", over="ignore"):
        product = a * b
        total = np.asarray(product + c)
        back = total - product
        error = (product - (total - back)) + (c - back)
        needs_odd = (error != 0) & np.isfinite(total) & ((total.view(np.int64) & 1) == 0)
        total = np.where(needs_odd, np.nextafter(total, np.where(error > 0, np.inf, -np.inf)), total)
        return total.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# float32 vectors (generic LLVM: legal on any CPU)
#
# An `F32x16` is an LLVM `<16 x float>`. Nothing below names an x86 instruction: LLVM lowers a 16-lane
# vector to one zmm register with AVX-512, two ymm with AVX2, four xmm with SSE, so these compile and run
# everywhere. They let a kernel keep a register tile of accumulators (`kernels/flash_attention.py`), which
# the loop vectoriser never builds from a plain loop over arrays (it reloads and stores the tile at every
# step, not knowing that the arrays do not alias).


class _F32x16Type(types.Type):
    def __init__(self):
        super().__init__(name="f32x16")


_VF16 = ir.VectorType(ir.FloatType(), 16)


@register_model(_F32x16Type)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VF16)


F32x16 = _F32x16Type()


def _float_pointer(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), _VF16.as_pointer())


@intrinsic
def fzeros16(typingctx):
    """16 float32 zeros."""
    return F32x16(), lambda context, builder, sig, args: ir.Constant(_VF16, [0.0] * 16)


@intrinsic
def fload16(typingctx, array, index):
    """array[index:index + 16] of a flat float32 array (no bounds check)."""
    def codegen(context, builder, sig, args):
        return builder.load(_float_pointer(context, builder, sig.args[0], args[0], args[1]), align=4)
    return F32x16(array, index), codegen


@intrinsic
def fstore16(typingctx, array, index, vector):
    """array[index:index + 16] = vector, for a flat float32 array (no bounds check)."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], _float_pointer(context, builder, sig.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()
    return types.none(array, index, F32x16), codegen


@intrinsic
def fsplat16(typingctx, value):
    """One float32 in all 16 lanes."""
    def codegen(context, builder, sig, args):
        one = builder.insert_element(ir.Constant(_VF16, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, ir.Constant(_VF16, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16))
    return F32x16(types.float32), codegen


@intrinsic
def fmuladd16(typingctx, a, b, c):
    """a * b + c per lane (llvm.fmuladd: one FMA where the CPU has it, a multiply and an add elsewhere, so
    the last bit may differ between CPUs)."""
    def codegen(context, builder, sig, args):
        return _call(builder, "llvm.fmuladd.v16f32", _VF16, [_VF16] * 3, args)
    return F32x16(F32x16, F32x16, F32x16), codegen


@intrinsic
def fmul16(typingctx, a, b):
    """a * b per lane."""
    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])
    return F32x16(F32x16, F32x16), codegen


@intrinsic
def float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the int32 `bits` (a bit cast, as NumPy's `.view(np.float32)`)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen
