"""The requantize epilogue every int8 kernel route ends in: int32 accumulators to uint8 codes.

    q = clamp(round_half_even(float32(acc) * multiplier) + out_zp, qmin, qmax)

fbgemm's arithmetic (torch's x86 engine; see qelementwise for the multiplier): the product is one float32
rounding, round_half_even is lrintf's, qmin = out_zp fuses a ReLU and qmax = the code of 6.0 a ReLU6.
The routes (qgemm's ladder, the zmm conv GEMM, the depthwise loop, `requantize_rows`) differ only in how
they compute `acc`; each ends here. One formula, in the spellings a kernel needs, all with the same bits:

    requantize_reference   NumPy on whole arrays: the definition, which every kernel's twin calls
    requantize_value       one accumulator inside a Numba loop (inlined, so the caller's loop vectorises)
    requantize_store16     16 lanes of a register in LLVM vector instructions (legal on any CPU), for a
                           kernel that keeps a tile's result in a zmm register up to the store
    requantize_store8      the same on 8 lanes (a ymm register: the AVX2 conv GEMM)
    finish_tile            a qgemm tile: the zero-point and bias terms added to the raw sums, then stored
                           as int32, requantized, or scaled to float32 (the dynamic Linear)

`round_to_quantized` is the step after the product, which the quantized add shares. Rounding and the
clamp may run in float32 or float64 (out_zp, qmin, qmax given either way): round_half_even(...) is an
integer-valued float, adding out_zp to it is exact below 2**24, and anything larger clamps to the same
bound in both.
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import simd


def round_to_quantized_reference(scaled, out_zp, qmin, qmax):
    """clamp(round_half_even(scaled) + out_zp, qmin, qmax) as uint8, on arrays."""
    return np.clip(np.rint(scaled).astype(np.float64) + out_zp, qmin, qmax).astype(np.uint8)


def requantize_reference(acc, multiplier, out_zp, qmin, qmax):
    """The definition: acc (any integer array) to uint8 with multiplier (float32, broadcast against acc)."""
    return round_to_quantized_reference(acc.astype(np.float32) * multiplier, out_zp, qmin, qmax)


def _round_to_quantized(scaled, out_zp, qmin, qmax):
    """One value: the twin of `round_to_quantized_reference`. Clamping in floating point first keeps the
    float -> int conversion in range whatever `scaled` is."""
    return np.uint8(np.int32(min(max(np.rint(scaled) + out_zp, qmin), qmax)))


round_to_quantized = njit(cache=True, inline="always")(_round_to_quantized)


def _requantize_value(acc, multiplier, out_zp, qmin, qmax):
    """One accumulator: float32(acc) * multiplier in float32, then round and clamp."""
    return round_to_quantized(np.float32(acc) * multiplier, out_zp, qmin, qmax)


requantize_value = njit(cache=True, inline="always")(_requantize_value)


def _vector_at(context, builder, array_type, array, index, vector_type):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), vector_type.as_pointer())


def _requantize_store(lanes, accumulator_type):
    """requantize_store{lanes}: `requantize_value` on `lanes` lanes of an int32 vector, stored as uint8."""
    v_int, v_float, v_byte = (ir.VectorType(t, lanes) for t in (ir.IntType(32), ir.FloatType(), ir.IntType(8)))

    @intrinsic
    def requantize_store(typingctx, out, out_index, acc, col_term, multiplier, column, zero_point, low, high):
        def codegen(context, builder, sig, args):
            out_a, out_i, acc_v, col_a, mult_a, col_i, zp, lo, hi = args
            total = builder.add(acc_v, builder.load(_vector_at(context, builder, sig.args[3], col_a, col_i, v_int),
                                                    align=4))
            scaled = builder.fmul(builder.sitofp(total, v_float),
                                  builder.load(_vector_at(context, builder, sig.args[4], mult_a, col_i, v_float), align=4))

            def call(name, *values):
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v_float, [v_float] * len(values)),
                                                    name)
                return builder.call(fn, values)

            def splat(value):
                one = builder.insert_element(ir.Constant(v_float, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
                return builder.shuffle_vector(one, ir.Constant(v_float, ir.Undefined), ir.Constant(v_int, [0] * lanes))

            level = builder.fadd(call(f"llvm.rint.v{lanes}f32", scaled), splat(zp))
            level = call(f"llvm.minnum.v{lanes}f32", call(f"llvm.maxnum.v{lanes}f32", level, splat(lo)), splat(hi))
            codes = builder.trunc(builder.fptosi(level, v_int), v_byte)
            builder.store(codes, _vector_at(context, builder, sig.args[0], out_a, out_i, v_byte), align=1)
            return context.get_dummy_value()
        if acc is not accumulator_type:
            return None
        return types.none(out, out_index, acc, col_term, multiplier, column, zero_point, low, high), codegen

    requantize_store.__doc__ = (
        f"out[out_index : out_index + {lanes}] = requantize_value(acc + col_term[column:+{lanes}], "
        f"multiplier[column:+{lanes}], zero_point, low, high) on {lanes} lanes: acc an `simd.I32x{lanes}`, "
        f"zero_point, low, high float32.")
    return requantize_store


requantize_store16 = _requantize_store(16, simd.I32x16)
requantize_store8 = _requantize_store(8, simd.I32x8)


INT32, UINT8, FLOAT32 = 0, 1, 2                              # what finish_tile stores


def _finish_tile(scratch, rows, width, m0, n0, count, x_sums, w_zps, col_terms, has_zero_points, multiplier,
                 out_zp, qmin, qmax, bias_f, acc_out, q_out, f_out, mode):
    """Finish one qgemm tile (rows x count raw sums sum_k x w in `scratch`, row-major by `width`):
    + col_terms[n] (- w_zps[n] * x_sums[m]), in wrapping int32 (exact, as the result fits int32), then by
    `mode`: INT32 stores it, UINT8 requantizes it, FLOAT32 scales it to float32 (fma(float32(acc),
    multiplier, bias_f) when bias_f is not empty, fbgemm's ReQuantizeForFloat). Every array is sliced to
    the tile first, so that its indices start at 0 (an offset index defeats the vectoriser: Numba's
    negative-index wraparound turns each load into a gather)."""
    cols, zps = col_terms[n0:n0 + count], w_zps[n0:n0 + count]
    for r in range(rows):
        m, tile = m0 + r, scratch[r * width:r * width + count]
        if has_zero_points:
            row_term = x_sums[m]
            for j in range(count):
                tile[j] = np.int32(tile[j] + cols[j] - np.int32(zps[j] * row_term))
        else:
            for j in range(count):
                tile[j] = np.int32(tile[j] + cols[j])
        if mode == UINT8:
            out, scales = q_out[m, n0:n0 + count], multiplier[n0:n0 + count]
            for j in range(count):
                out[j] = requantize_value(tile[j], scales[j], out_zp, qmin, qmax)
        elif mode == FLOAT32:
            real, scales = f_out[m, n0:n0 + count], multiplier[n0:n0 + count]
            if bias_f.shape[0] == 0:
                for j in range(count):
                    real[j] = np.float32(tile[j]) * scales[j]
            else:
                bias = bias_f[n0:n0 + count]
                for j in range(count):
                    real[j] = simd.fma32(np.float32(tile[j]), scales[j], bias[j])
        else:
            acc_out[m, n0:n0 + count] = tile


finish_tile = njit(cache=True)(_finish_tile)
