"""TFLite's int8 kernels, compiled: the reference formulas of `graph/ops/litert.py` at the speed of the
project's int8 GEMM, with the same bits.

    conv2d_accumulators      CONV_2D's int32 sums: im2row (`kernels.qconv`) and `qgemm`, exact on every route
    depthwise_accumulators   DEPTHWISE_CONV_2D's int32 sums: a direct loop over each output row's pixels
    fully_connected_accumulators   FULLY_CONNECTED's int32 sums, one `qgemm` call
    requantize               clamp(MBQM(acc, q[c], shift[c]) + zp), per channel or per tensor, to int8
    rescaled_sum             ADD / SUB: both inputs rescaled to a common scale, summed, rescaled, in one pass

The int8 GEMM takes uint8 activations: an int8 code x is the uint8 x + 128 (its bits with the top one
flipped) with the zero point moved by 128 too, so (x - zp) is unchanged and the int32 sums are the
reference's exactly (K * 255 * 255 < 2^31 is checked when the weight is packed). A padded tap reads the
zero point, adding (zp - zp) w = 0, as TFLite's loops skip it. The fixed-point multiply
(`multiply_by_quantized_multiplier`, gemmlowp's two roundings or TFLITE_SINGLE_ROUNDING's one) is written
once here for Numba, step for step as the NumPy twin in litert.py, in int64 as that twin.

Weights are packed once per weight array (`packed_weight` keeps them while the array lives), so an
interpreted model packs on its first call and a compiled plan when it is built.
"""
import weakref

import numpy as np
from numba import njit, prange

from . import qgemm
from .qconv import im2row
from .threads import ParallelKernel

_PACKED = {}


def packed_weight(w, zero_points):
    """`qgemm.pack_weight` of w (O, ...) int8 as (O, K) with per-row `zero_points`, packed on first use and
    kept while the caller's array `w` (not a view of it) lives (a weight changed in place afterwards is
    not packed again: TFLite constants are not)."""
    key = (id(w), w.shape, w.ctypes.data)
    hit = _PACKED.get(key)
    if hit is not None and hit[0]() is w:
        return hit[1]
    packed = qgemm.pack_weight(np.ascontiguousarray(w.reshape(w.shape[0], -1), np.int8), zero_points)
    _PACKED[key] = (weakref.ref(w, lambda _, key=key, cache=_PACKED: cache.pop(key, None)), packed)
    return packed


def as_uint8(x, zero_point):
    """int8 codes x with zero point zp as the uint8 codes x + 128 with zero point zp + 128 (same x - zp)."""
    return np.ascontiguousarray(x).view(np.uint8) ^ np.uint8(0x80), int(zero_point) + 128


@njit(cache=True, inline="always")
def _mbqm(x, q, shift, single):
    """TFLite's MultiplyByQuantizedMultiplier on int64 scalars: `litert.multiply_by_quantized_multiplier`,
    written without branches (selects and shifts) so that a loop over elements vectorises: C's division by
    2^31 toward zero is an arithmetic shift after adding 2^31 - 1 to a negative dividend."""
    if single:
        total = 31 - shift
        return (x * q + (np.int64(1) << (total - 1))) >> total
    left = max(shift, np.int64(0))
    right = max(-shift, np.int64(0))
    a = x << left
    ab = a * q
    negative = np.int64(ab < 0)
    v = ab + (np.int64(1) << 30) - negative * ((np.int64(1) << 31) - 1)       # the nudge: 2^30 or 1 - 2^30
    high = (v + ((v >> 63) & ((np.int64(1) << 31) - 1))) >> 31
    saturated = np.int64((a == q) & (a == -(np.int64(1) << 31)))
    high = high + saturated * ((np.int64(1) << 31) - 1 - high)
    mask = (np.int64(1) << right) - 1
    threshold = (mask >> 1) + np.int64(high < 0)
    return (high >> right) + np.int64((high & mask) > threshold)


def _requantize(acc, q, shift, zero_point, low, high, single, out):
    """out[m, c] = clamp(MBQM(acc[m, c], q[c], shift[c]) + zero_point, low, high) (one q for every c when
    q has one element). Parallel over rows."""
    rows, channels = acc.shape
    per_channel = q.size > 1
    for m in prange(rows):
        for c in range(channels):
            k = c if per_channel else 0
            v = _mbqm(np.int64(acc[m, c]), q[k], shift[k], single) + zero_point
            out[m, c] = min(max(v, low), high)
    return out


requantize_kernel = ParallelKernel(_requantize)


def requantize(acc, multipliers, shifts, zero_point, low, high, rounding, dtype=np.int8):
    """acc (..., C) int32 -> dtype: the twin of `litert._requantize` with channels on the last axis."""
    acc = np.ascontiguousarray(acc)
    rows = acc.reshape(-1, acc.shape[-1] if acc.ndim else 1)
    q = np.ascontiguousarray(np.atleast_1d(np.asarray(multipliers, np.int64)))
    s = np.ascontiguousarray(np.atleast_1d(np.asarray(shifts, np.int64)))
    out = np.empty(rows.shape, dtype)
    requantize_kernel(rows, q, s, np.int64(zero_point), np.int64(low), np.int64(high), rounding == "single", out)
    return out.reshape(acc.shape)


def conv2d_accumulators(x, input_zero_point, w, bias, strides, dilations, pads, out_size):
    """int32 (N, OH, OW, O) sums of CONV_2D, groups 1: x (N, H, W, C) int8, w (O, KH, KW, C) int8, bias
    int32 (O,) or None; pads the rows / columns before (those after are implied by out_size)."""
    n, _, _, c = x.shape
    o, kh, kw, _ = w.shape
    oh, ow = out_size
    xu, zp = as_uint8(x, input_zero_point)
    if (kh, kw) == (1, 1) and tuple(pads) == (0, 0):
        sh, sw = strides
        rows = np.ascontiguousarray(xu[:, ::sh, ::sw][:, :oh, :ow]).reshape(-1, c)
    else:
        rows = im2row(xu, zp, (kh, kw), tuple(strides), tuple(pads), tuple(dilations), (oh, ow), 0, n * oh, 0, c,
                      kh * kw * c)
    packed = packed_weight(w, np.zeros(o, np.int64))
    bias = None if bias is None else np.ascontiguousarray(bias, np.int32)
    return qgemm.qgemm_packed(rows, zp, packed, bias).reshape(n, oh, ow, o)


def fully_connected_accumulators(x, input_zero_point, w, weight_zero_point, bias):
    """int32 (B, O) sums of FULLY_CONNECTED: x (B, I) int8, w (O, I) int8 with one zero point."""
    xu, zp = as_uint8(x, input_zero_point)
    packed = packed_weight(w, np.full(w.shape[0], int(weight_zero_point), np.int64))
    bias = None if bias is None else np.ascontiguousarray(bias, np.int32)
    return qgemm.qgemm_packed(xu, zp, packed, bias)


def _depthwise(x, zero_point, w, bias, strides, dilations, pads, out_size, out):
    """out[n, p, q, c] = bias[c] + sum_{i, j} (x[n, p sh + i dh - ph, q sw + j dw - pw, c] - zp) w[i, j, c],
    taps outside x skipped. Parallel over (n, p); the inner loop runs over a pixel's channels."""
    n_batch, height, width, channels = x.shape
    kh, kw = w.shape[0], w.shape[1]
    out_h, out_w = out_size
    zp = np.int32(zero_point)
    for task in prange(n_batch * out_h):
        n, p = task // out_h, task % out_h
        row = out[n, p]
        for q in range(out_w):
            for c in range(channels):
                row[q, c] = bias[c]
        for i in range(kh):
            h = p * strides[0] + i * dilations[0] - pads[0]
            if h < 0 or h >= height:
                continue
            line = x[n, h]
            for j in range(kw):
                tap = w[i, j]
                for q in range(out_w):
                    col = q * strides[1] + j * dilations[1] - pads[1]
                    if col < 0 or col >= width:
                        continue
                    pixel = line[col]
                    acc = row[q]
                    for c in range(channels):
                        acc[c] += (np.int32(pixel[c]) - zp) * tap[c]
    return out


depthwise_kernel = ParallelKernel(_depthwise)


def depthwise_accumulators(x, input_zero_point, w, bias, strides, dilations, pads, out_size):
    """int32 (N, OH, OW, C M) sums of DEPTHWISE_CONV_2D: x (N, H, W, C) int8, w (1, KH, KW, C M) int8
    (output channel c M + m reads input channel c), bias int32 (C M,) or None."""
    channels = w.shape[3]
    multiplier = channels // x.shape[3]
    if multiplier > 1:
        x = np.repeat(x, multiplier, axis=3)
    taps = np.ascontiguousarray(w[0], np.int32)
    bias = np.zeros(channels, np.int32) if bias is None else np.ascontiguousarray(bias, np.int32)
    out = np.empty((x.shape[0], *out_size, channels), np.int32)
    return depthwise_kernel(np.ascontiguousarray(x), np.int32(input_zero_point), taps, bias,
                            (int(strides[0]), int(strides[1])), (int(dilations[0]), int(dilations[1])),
                            (int(pads[0]), int(pads[1])), (int(out_size[0]), int(out_size[1])), out)


def _rescaled_sum(a, b, sign, za, zb, q, s, zero_point, low, high, left_shift, single, out):
    """out = clamp(MBQM(MBQM((a - za) << ls, q0, s0) + sign MBQM((b - zb) << ls, q1, s1), q2, s2) + zp)."""
    for k in prange(a.size):
        va = _mbqm((np.int64(a[k]) - za) << left_shift, q[0], s[0], single)
        vb = _mbqm((np.int64(b[k]) - zb) << left_shift, q[1], s[1], single)
        v = _mbqm(va + sign * vb, q[2], s[2], single) + zero_point
        out[k] = min(max(v, low), high)
    return out


rescaled_sum_kernel = ParallelKernel(_rescaled_sum)


def rescaled_sum(a, b, sign, zero_points, multipliers, shifts, output_zero_point, low, high, left_shift, rounding):
    """ADD (sign 1) / SUB (-1) of int8 a and b, broadcast: the twin of `litert._rescaled_sum`."""
    a, b = (np.ascontiguousarray(v) for v in np.broadcast_arrays(a, b))
    out = np.empty(a.shape, a.dtype)
    rescaled_sum_kernel(a.reshape(-1), b.reshape(-1), np.int64(sign), np.int64(zero_points[0]),
                        np.int64(zero_points[1]), np.asarray(multipliers, np.int64)[:3], np.asarray(shifts, np.int64)[:3],
                        np.int64(output_zero_point), np.int64(low), np.int64(high), np.int64(left_shift),
                        rounding == "single", out.reshape(-1))
    return out
