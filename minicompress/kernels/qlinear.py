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
down a ladder; its NumPy twin is `qgemm.qgemm_reference`), packing the weight on each call; layers pack
theirs once (quant.modules.Linear).
"""
import numpy as np

from .qelementwise import (INT32_MAX, QUINT8_MAX, QUINT8_MIN, check_accumulator_range, check_output_range,
                           check_quantized, check_scale, check_weight_qparams, check_zero_point, per_channel,
                           requantize_multiplier)
from .epilogue import requantize_reference
from .qgemm import pack_weight, qgemm_requant_unchecked

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
    return requantize_reference(acc, multiplier, out_zp, out_zp if relu else 0, QUINT8_MAX)
