"""Integer linear layer: uint8 activations times int8 weights, int32 accumulation, requantized to uint8.

Mirrors torch.ao.nn.quantized.Linear on the x86 / fbgemm engines (torch.ops.quantized.linear and
linear_relu). With x (M, K) quint8 per tensor, w (N, K) qint8 per output channel (per tensor is the
length-1 case) and the bias quantized to int32 in the accumulator's scale x_scale * w_scale[n]:

    bias_q[n]  = round_half_even(bias[n] / (x_scale * w_scale[n]))                               (quantize_bias)
    acc[m, n]  = sum_k (xq[m, k] - x_zp) * (wq[n, k] - w_zp[n]) + bias_q[n]                       (exact, int32)
    out[m, n]  = clamp(round_half_even(float32(acc[m, n]) * multiplier[n]) + out_zp, qmin, qmax)
    multiplier[n] = float32(float32(x_scale) * float32(w_scale[n])) / float32(out_scale)   (float32, as fbgemm)

with qmin = 0 (out_zp with a fused ReLU) and qmax = 255; see qelementwise for the requantization step.

torch's x86 module keeps the bias in float and adds bias[n] / (x_scale * w_scale[n]) to the accumulator in
float32, unrounded; the int32 bias here is that number rounded, so the two can land on either side of a
rounding boundary and differ by one step. fbgemm's AVX2 kernel also multiplies byte pairs into int16 with
saturation (vpmaddubsw), so it is exact only while |x0 * w0 + x1 * w1| < 2**15 -- the reason torch's x86
qconfig observes activations with reduce_range (7 bits). These kernels are exact for every input.

The GEMM multiplies raw bytes and applies the zero points afterwards, by expanding the product:

    sum_k (x - zx)(w - zw) = sum_k x w  -  zw * sum_k x  -  zx * sum_k w  +  K * zx * zw

so the inner loop is a plain uint8 x int8 dot product and the corrections cost one row sum per row of x
and of w. `quantized_linear` runs it on the CPU's best route (kernels/qgemm.py: AVX512-VNNI vpdpbusd and
down a ladder), packing the weight on each call; layers pack theirs once (quant.modules.Linear). `qgemm`
below is the plain Numba loop, which LLVM vectorises only to widened bytes and vpmaddwd.
"""
import numpy as np
from numba import njit, prange

from .qelementwise import (INT32_MAX, QUINT8_MAX, QUINT8_MIN, check_accumulator_range, check_output_range,
                           check_quantized, check_scale, check_weight_qparams, check_zero_point, per_channel,
                           requantize_multiplier)
from .qgemm import pack_weight, qgemm_requant_unchecked
from .threads import ParallelKernel

# Each task owns this many rows of w (N_BLOCK * K bytes, cache-resident) and streams every row of x past
# them, in tiles of 4 rows of x by 2 rows of w.
N_BLOCK = 64


# --------------------------------------------------------------------------------------------------
# int32 GEMM with zero points: the kernel every integer layer runs


def _row_sums(a):
    """a (R, K) -> (R,) int64, sum along K."""
    sums = np.zeros(a.shape[0], dtype=np.int64)
    for r in range(a.shape[0]):
        total = np.int64(0)
        for k in range(a.shape[1]):
            total += np.int64(a[r, k])
        sums[r] = total
    return sums


row_sums = njit(cache=True)(_row_sums)


def _qgemm(xq, x_zp, wq, w_zps, bias_q):
    """acc (M, N) int32 = (xq - x_zp) @ (wq - w_zps[:, None]).T + bias_q, for xq (M, K) uint8,
    wq (N, K) int8, w_zps (N,) int64, bias_q (N,) int32 (zeros when there is no bias).

    Stage 1 computes the raw dot products sum_k x w tile by tile: a 4 x 2 tile keeps eight int32
    accumulators in registers, and each of the six rows loaded per step of k feeds two or four of them.
    Tiles hanging over the last row of x or w repeat that row; they store the same value twice.
    Stage 2 adds the zero-point terms and the bias, in int64, to a result that fits int32 (checked by
    the caller). Parallel over (block of w rows, tile of x rows) tasks; each writes its own outputs.
    """
    m_rows, depth = xq.shape
    n_rows = wq.shape[0]
    out = np.empty((m_rows, n_rows), dtype=np.int32)
    m_tiles = (m_rows + 3) // 4
    n_blocks = (n_rows + N_BLOCK - 1) // N_BLOCK
    last_m = m_rows - 1
    for task in prange(n_blocks * m_tiles):
        block, tile = task // m_tiles, task % m_tiles
        m0, m1, m2, m3 = 4 * tile, min(4 * tile + 1, last_m), min(4 * tile + 2, last_m), min(4 * tile + 3, last_m)
        x0, x1, x2, x3 = xq[m0], xq[m1], xq[m2], xq[m3]
        n_stop = min(n_rows, (block + 1) * N_BLOCK)
        for n0 in range(block * N_BLOCK, n_stop, 2):
            n1 = min(n0 + 1, n_stop - 1)
            w0, w1 = wq[n0], wq[n1]
            a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = np.int32(0)
            for k in range(depth):
                u0, u1, u2, u3 = np.int16(x0[k]), np.int16(x1[k]), np.int16(x2[k]), np.int16(x3[k])
                v0, v1 = np.int16(w0[k]), np.int16(w1[k])
                a00, a01 = np.int32(a00 + u0 * v0), np.int32(a01 + u0 * v1)
                a10, a11 = np.int32(a10 + u1 * v0), np.int32(a11 + u1 * v1)
                a20, a21 = np.int32(a20 + u2 * v0), np.int32(a21 + u2 * v1)
                a30, a31 = np.int32(a30 + u3 * v0), np.int32(a31 + u3 * v1)
            out[m0, n0], out[m0, n1] = a00, a01
            out[m1, n0], out[m1, n1] = a10, a11
            out[m2, n0], out[m2, n1] = a20, a21
            out[m3, n0], out[m3, n1] = a30, a31

    x_sums = row_sums(xq) if np.any(w_zps) else np.zeros(m_rows, dtype=np.int64)    # only zw * sum_k x needs it
    w_sums = row_sums(wq)
    for m in prange(m_rows):
        for n in range(n_rows):
            out[m, n] = (out[m, n] - w_zps[n] * x_sums[m] - x_zp * w_sums[n]
                         + depth * x_zp * w_zps[n] + bias_q[n])
    return out


qgemm = ParallelKernel(_qgemm)


def qgemm_reference(xq, x_zp, wq, w_zps, bias_q):
    acc = (xq.astype(np.int64) - x_zp) @ (wq.astype(np.int64) - w_zps[:, None]).T + bias_q
    return acc.astype(np.int32)


# --------------------------------------------------------------------------------------------------
# Public entry points


def quantize_bias(bias, x_scale, w_scales):
    """round_half_even(bias / (x_scale * w_scale_c)) as int32: the bias in the accumulator's units.

    Computed in float64 (the float32 bias widened, the scale product in float64). The result must fit
    int32.

    Args:
        bias: float array (C,).
        x_scale: the input's scale, finite and > 0.
        w_scales: a scalar or (C,) weight scales, finite and > 0.

    Raises:
        TypeError: bias is not a float array.
        ValueError: a scale is not finite and > 0, w_scales has the wrong length, or a value overflows int32.

    Example:
        >>> quantize_bias(np.array([0.5, -0.26], np.float32), 0.1, np.array([0.5, 0.1]))
        array([ 10, -26], dtype=int32)
    """
    bias = np.asarray(bias)
    if bias.dtype.kind != "f" or bias.ndim != 1:
        raise TypeError(f"bias must be a 1-D float array, got dtype {bias.dtype} and shape {bias.shape}")
    x_scale = check_scale("x_scale", x_scale)
    w_scales = per_channel("w_scales", w_scales, bias.shape[0], np.float64)
    if not np.all(np.isfinite(w_scales) & (w_scales > 0)):
        raise ValueError(f"w_scales must be finite and > 0, got {w_scales}")
    quantized = np.rint(bias.astype(np.float64) / (x_scale * w_scales))
    if not np.all(np.abs(quantized) <= INT32_MAX):
        raise ValueError(f"bias / (x_scale * w_scales) must fit int32, got values up to {np.abs(quantized).max():.3g}")
    return quantized.astype(np.int32)


def check_bias_q(bias_q, channels):
    """None -> zeros; else a C-contiguous int32 (channels,) array."""
    if bias_q is None:
        return np.zeros(channels, dtype=np.int32)
    bias_q = check_quantized("bias_q", bias_q, np.int32)
    if bias_q.shape != (channels,):
        raise ValueError(f"bias_q must have shape ({channels},), got {bias_q.shape}")
    return bias_q


def quantized_linear(xq, x_scale, x_zp, wq, w_scales, w_zps, bias_q, out_scale, out_zp, relu=False):
    """torch.ops.quantized.linear (relu=True: linear_relu) on raw integer data; see the module docstring.

    Args:
        xq: uint8 (*, K) input codes, per tensor (x_scale, x_zp in [0, 255]).
        wq: int8 (N, K) weight codes; w_scales, w_zps per output channel: length N, or length 1 / scalar
            for a per-tensor weight; w_zps in [-128, 127].
        bias_q: int32 (N,) from `quantize_bias`, or None.
        out_scale, out_zp: the output's qparams (out_zp in [0, 255]).
        relu: fuse a ReLU (clamp at out_zp).

    Returns:
        uint8 (*, N).

    Raises:
        TypeError: wrong dtype (uint8 / int8 / int32 are required, nothing is cast) or non-integer zero point.
        ValueError: shapes do not match, a qparam is out of range, or K is so large int32 could overflow.

    Example:
        >>> xq = np.array([[130, 120]], np.uint8); wq = np.array([[2, -1]], np.int8)
        >>> quantized_linear(xq, 0.1, 128, wq, [0.5], [0], None, 0.2, 100)
        array([[103]], dtype=uint8)
    """
    xq, wq = check_quantized("xq", xq, np.uint8), check_quantized("wq", wq, np.int8)
    if wq.ndim != 2:
        raise ValueError(f"wq must have shape (out_features, in_features), got {wq.shape}")
    out_features, in_features = wq.shape
    if xq.ndim < 1 or xq.shape[-1] != in_features:
        raise ValueError(f"xq must have shape (*, {in_features}) to match wq {wq.shape}, got {xq.shape}")
    x_scale, out_scale = check_scale("x_scale", x_scale), check_scale("out_scale", out_scale)
    x_zp = check_zero_point("x_zp", x_zp, QUINT8_MIN, QUINT8_MAX)
    out_zp = check_zero_point("out_zp", out_zp, QUINT8_MIN, QUINT8_MAX)
    w_scales, w_zps = check_weight_qparams(w_scales, w_zps, out_features)
    bias_q = check_bias_q(bias_q, out_features)
    check_accumulator_range(in_features, bias_q)
    qmin, qmax = check_output_range(out_zp, relu)

    rows = xq.reshape(-1, in_features)
    multiplier = requantize_multiplier(x_scale, w_scales, out_scale)
    levels = qgemm_requant_unchecked(rows, x_zp, pack_weight(wq, w_zps), bias_q, multiplier, out_zp, qmin, qmax)
    return levels.reshape(*xq.shape[:-1], out_features)


def quantized_linear_reference(xq, x_scale, x_zp, wq, w_scales, w_zps, bias_q, out_scale, out_zp, relu=False):
    """The whole layer in plain NumPy: int64 accumulators, then the float32 requantization."""
    w_zps = np.broadcast_to(np.asarray(w_zps, dtype=np.int64).reshape(-1), (wq.shape[0],))
    acc = (xq.astype(np.int64) - x_zp) @ (wq.astype(np.int64) - w_zps[:, None]).T
    if bias_q is not None:
        acc = acc + bias_q
    multiplier = requantize_multiplier(x_scale, np.broadcast_to(w_scales, (wq.shape[0],)), out_scale)
    scaled = acc.astype(np.float32) * multiplier
    return np.clip(np.rint(scaled).astype(np.float64) + out_zp, out_zp if relu else 0, 255).astype(np.uint8)
