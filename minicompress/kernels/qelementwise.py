"""Elementwise integer kernels on quantized (uint8) data: requantization of int32 accumulators, the
quantized add, and relu / relu6; plus the checks on quantization parameters that the integer linear
and conv2d entry points share.

A quint8 value q stands for the real number scale * (q - zero_point). Integer layers compute an int32
accumulator `acc` whose real value is acc * (x_scale * w_scale); requantization maps it to the output's
(out_scale, out_zp):

    multiplier = float32(float32(x_scale) * float32(w_scale)) / float32(out_scale)      (float32 division)
    q = clamp(round_half_even(float32(acc) * multiplier) + out_zp, qmin, qmax)          (float32 product)

This is fbgemm's arithmetic (torch's x86 / fbgemm engines): every step is float32, int32 -> float32
rounds to nearest even (exact for |acc| < 2**24), and the rounding is lrintf's, half to even. qmin = 0,
qmax = 255 for quint8; a fused ReLU raises qmin to out_zp, which is what quantizing max(real, 0) gives.

Float32 activations are quantized (`quantize_uint8`, for the dynamic Linear) as torch's quantize_per_tensor:
q = clamp(round_half_even(fma(x, float32(1 / scale), zero_point)), 0, 255), one rounding in the fma.

The quantized add (torch.ops.quantized.add, torch.ops.quantized.add_relu) works in real numbers, also in
float32 as torch does on CPU:

    real = float32(a - a_zp) * float32(a_scale) + float32(b - b_zp) * float32(b_scale)
    q = clamp(round_half_even(real * float32(1 / out_scale)) + out_zp, qmin, qmax)

torch's vectorised loop dequantizes with one fused multiply-add, scale * a + (-zp * scale), which can
differ from the line above in the last bit of a float32 and so, at an exact tie, by one step.

Kernels assume validated, C-contiguous input; `requantize` and `quantized_add` validate.
"""
import numpy as np
from numba import njit, prange

from .epilogue import requantize_reference, requantize_value, round_to_quantized, round_to_quantized_reference
from .simd import fma32
from .threads import ParallelKernel, threads_for

QUINT8_MIN, QUINT8_MAX = 0, 255
QINT8_MIN, QINT8_MAX = -128, 127
INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------------------------------
# Quantization-parameter checks shared by the integer kernels' entry points


def check_scale(name, scale):
    """A per-tensor scale as a float: finite and > 0."""
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {scale!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {scale!r}")
    return value


def check_zero_point(name, zero_point, low, high):
    """A per-tensor zero point as an int in [low, high]."""
    if isinstance(zero_point, (bool, np.bool_)) or not isinstance(zero_point, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {zero_point!r}")
    if not low <= zero_point <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {zero_point}")
    return int(zero_point)


def check_quantized(name, array, dtype):
    """`array` as a C-contiguous ndarray of exactly `dtype` (no silent casts: the bytes are the values)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of {np.dtype(dtype).name}, got {type(array).__name__}")
    if array.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {array.dtype}")
    return np.ascontiguousarray(array)


def per_channel(name, values, channels, dtype):
    """A per-channel parameter (scalar, length 1, or length `channels`) as a length-`channels` array."""
    array = np.asarray(values)
    if array.ndim > 1 or array.size not in (1, channels):
        raise ValueError(f"{name} must be a scalar or have length 1 or {channels}, got shape {array.shape}")
    if dtype is np.int64 and array.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    return np.ascontiguousarray(np.broadcast_to(array.reshape(-1).astype(dtype), (channels,)))


def check_weight_qparams(w_scales, w_zps, channels):
    """Per-channel weight scales (float32, finite, > 0) and qint8 zero points (int64), length `channels`."""
    scales = per_channel("w_scales", w_scales, channels, np.float64)
    if not np.all(np.isfinite(scales) & (scales > 0)):
        raise ValueError(f"w_scales must be finite and > 0, got {scales[~(np.isfinite(scales) & (scales > 0))][:4]}")
    zps = per_channel("w_zps", w_zps, channels, np.int64)
    if zps.min() < QINT8_MIN or zps.max() > QINT8_MAX:
        raise ValueError(f"w_zps must lie in [{QINT8_MIN}, {QINT8_MAX}], got values in [{zps.min()}, {zps.max()}]")
    return scales.astype(np.float32), zps


def check_output_range(out_zp, relu):
    """(qmin, qmax) of a quint8 output; a fused ReLU clamps at the zero point, the quantized 0.0."""
    return (out_zp if relu else QUINT8_MIN), QUINT8_MAX


def check_accumulator_range(depth, bias_q):
    """int32 accumulators hold sum_k (x - x_zp)(w - w_zp) + bias exactly when depth * 255 * 255 + |bias|
    fits in int32 (each centred factor lies in [-255, 255]); the kernels rely on it."""
    largest_bias = 0 if bias_q is None or bias_q.size == 0 else int(np.abs(bias_q.astype(np.int64)).max())
    if depth * 255 * 255 + largest_bias > INT32_MAX:
        raise ValueError(f"a reduction over {depth} products plus a bias of magnitude {largest_bias} can overflow "
                         f"int32 accumulators; expected depth * 65025 + max|bias_q| <= {INT32_MAX}")


def requantize_multiplier(x_scale, w_scales, out_scale):
    """float32(float32(x_scale) * float32(w_scales)) / float32(out_scale), elementwise: fbgemm's
    `act_times_w_scale / output_scale`, every operation in float32."""
    act_times_w_scale = np.float32(x_scale) * np.asarray(w_scales, dtype=np.float32)
    return np.ascontiguousarray(act_times_w_scale / np.float32(out_scale), dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# Requantization: int32 accumulators -> uint8 (the formula itself is epilogue.py's)


def _requantize_rows(acc, multiplier, out_zp, qmin, qmax):
    """acc (R, C) int32, multiplier (C,) float32 -> (R, C) uint8; column c is requantized with
    multiplier[c]. Parallel over rows; the loop over c vectorises."""
    rows, channels = acc.shape
    out = np.empty((rows, channels), dtype=np.uint8)
    for r in prange(rows):
        for c in range(channels):
            out[r, c] = requantize_value(acc[r, c], multiplier[c], out_zp, qmin, qmax)
    return out


requantize_rows = ParallelKernel(_requantize_rows)


requantize_rows_reference = requantize_reference


def requantize(acc, multiplier, out_zp, qmin=QUINT8_MIN, qmax=QUINT8_MAX):
    """Map int32 accumulators to uint8: clamp(round_half_even(float32(acc) * multiplier) + out_zp, qmin, qmax).

    Args:
        acc: int32 array (..., C); the channel axis is the last one.
        multiplier: a positive scalar (per tensor) or a length-C array (per channel), used in float32;
            see `requantize_multiplier`.
        out_zp: the output zero point, in [0, 255].
        qmin, qmax: the clamp, 0 <= qmin <= qmax <= 255 (qmin = out_zp fuses a ReLU).

    Returns:
        uint8 array of acc's shape.

    Raises:
        TypeError: acc is not an int32 array, or out_zp / qmin / qmax are not integers.
        ValueError: a multiplier is not finite and > 0, has the wrong length, or a bound is out of range.

    Example:
        >>> requantize(np.array([[-3, 5, 6]], np.int32), 0.5, 10)
        array([[ 8, 12, 13]], dtype=uint8)
    """
    acc = check_quantized("acc", acc, np.int32)
    if acc.ndim == 0:
        raise ValueError("acc must have at least one dimension (the channel axis), got a scalar")
    out_zp = check_zero_point("out_zp", out_zp, QUINT8_MIN, QUINT8_MAX)
    qmin = check_zero_point("qmin", qmin, QUINT8_MIN, QUINT8_MAX)
    qmax = check_zero_point("qmax", qmax, qmin, QUINT8_MAX)
    channels = acc.shape[-1]
    scales = per_channel("multiplier", multiplier, channels, np.float64)
    if not np.all(np.isfinite(scales) & (scales > 0)):
        raise ValueError(f"multiplier must be finite and > 0, got {np.asarray(multiplier)!r}")
    rows = acc.reshape(-1, channels)
    with threads_for(acc.size):
        levels = requantize_rows(rows, scales.astype(np.float32), out_zp, qmin, qmax)
    return levels.reshape(acc.shape)


# --------------------------------------------------------------------------------------------------
# Quantization of float32 activations (the dynamic Linear's per-call step)


def _quantize_uint8(x, inv_scale, zero_point):
    """x (L,) float32, finite -> (L,) uint8: clamp(round_half_even(fma(x, inv_scale, zero_point)), 0, 255),
    torch's quantize_per_tensor for quint8 (one fused multiply-add in float32). Parallel over elements."""
    out = np.empty(x.size, dtype=np.uint8)
    zp, low, high = np.float32(zero_point), np.float32(QUINT8_MIN), np.float32(QUINT8_MAX)
    for i in prange(x.size):
        out[i] = np.uint8(np.int32(min(max(np.rint(fma32(x[i], inv_scale, zp)), low), high)))
    return out


quantize_uint8 = ParallelKernel(_quantize_uint8)


def quantize_uint8_reference(x, inv_scale, zero_point):
    from .simd import fma_float32          # the NumPy emulation of a float32 fma
    return np.clip(np.rint(fma_float32(x, inv_scale, np.float32(zero_point))), QUINT8_MIN, QUINT8_MAX).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Quantized add


def _qadd(a, a_scale, a_zp, b, b_scale, b_zp, inv_out_scale, out_zp, qmin, qmax):
    """a, b (L,) uint8 of one shape; scales float32 -> (L,) uint8, torch.ops.quantized.add's float32
    arithmetic. Parallel over the elements."""
    out = np.empty(a.shape, dtype=np.uint8)
    for i in prange(a.size):
        real = np.float32(np.int32(a[i]) - a_zp) * a_scale + np.float32(np.int32(b[i]) - b_zp) * b_scale
        out[i] = round_to_quantized(real * inv_out_scale, out_zp, qmin, qmax)
    return out


qadd = ParallelKernel(_qadd)


def qadd_reference(a, a_scale, a_zp, b, b_scale, b_zp, inv_out_scale, out_zp, qmin, qmax):
    real_a = (a.astype(np.int64) - a_zp).astype(np.float32) * a_scale        # float32 throughout
    real_b = (b.astype(np.int64) - b_zp).astype(np.float32) * b_scale
    return round_to_quantized_reference((real_a + real_b) * inv_out_scale, out_zp, qmin, qmax)


def quantized_add(aq, a_scale, a_zp, bq, b_scale, b_zp, out_scale, out_zp, relu=False):
    """torch.ops.quantized.add (relu=True: torch.ops.quantized.add_relu) on raw quint8 data.

    out = quantize(dequantize(a) + dequantize(b)) in the output's (out_scale, out_zp); see the module
    docstring for the exact float32 arithmetic.

    Args:
        aq, bq: uint8 arrays whose shapes broadcast together.
        a_scale, b_scale, out_scale: finite, > 0.
        a_zp, b_zp, out_zp: integers in [0, 255].
        relu: clamp the result at out_zp (the quantized 0.0).

    Returns:
        uint8 array of the broadcast shape.

    Raises:
        TypeError: an input is not uint8, or a zero point is not an integer.
        ValueError: a scale or zero point is out of range, or the shapes do not broadcast.

    Example:
        >>> quantized_add(np.array([10], np.uint8), 0.5, 0, np.array([4], np.uint8), 0.25, 0, 1.0, 0)
        array([6], dtype=uint8)
    """
    aq, bq = check_quantized("aq", aq, np.uint8), check_quantized("bq", bq, np.uint8)
    a_scale, b_scale = check_scale("a_scale", a_scale), check_scale("b_scale", b_scale)
    out_scale = check_scale("out_scale", out_scale)
    a_zp = check_zero_point("a_zp", a_zp, QUINT8_MIN, QUINT8_MAX)
    b_zp = check_zero_point("b_zp", b_zp, QUINT8_MIN, QUINT8_MAX)
    out_zp = check_zero_point("out_zp", out_zp, QUINT8_MIN, QUINT8_MAX)
    try:
        shape = np.broadcast_shapes(aq.shape, bq.shape)
    except ValueError:
        raise ValueError(f"aq and bq must have broadcastable shapes, got {aq.shape} and {bq.shape}") from None
    a = np.ascontiguousarray(np.broadcast_to(aq, shape)).reshape(-1)
    b = np.ascontiguousarray(np.broadcast_to(bq, shape)).reshape(-1)
    qmin, qmax = check_output_range(out_zp, relu)
    # torch: `float inv_scale = 1.0f / scale` with the scale held as a double.
    inv_out_scale = np.float32(1.0 / out_scale)
    with threads_for(a.size):
        out = qadd(a, np.float32(a_scale), a_zp, b, np.float32(b_scale), b_zp, inv_out_scale, out_zp, qmin, qmax)
    return out.reshape(shape)


# --------------------------------------------------------------------------------------------------
# ReLU and ReLU6 on quantized data: clamps in the integer domain, one NumPy call each


def quantize_value(value, scale, zero_point):
    """The quint8 code of one real number, as torch's quantize_val (fbgemm::Quantize): float32
    round_half_even(value * (1 / scale)) + zero_point, clamped to [0, 255], 1 / scale in float32 too."""
    scaled = np.float32(value) * (np.float32(1.0) / np.float32(scale))
    return int(np.clip(np.rint(scaled) + zero_point, QUINT8_MIN, QUINT8_MAX))


def quantized_relu(xq, zero_point):
    """torch.relu on a quint8 tensor: max(q, zero_point), the quantized max(x, 0) in the same qparams."""
    xq = check_quantized("xq", xq, np.uint8)
    zero_point = check_zero_point("zero_point", zero_point, QUINT8_MIN, QUINT8_MAX)
    return np.maximum(xq, np.uint8(zero_point))


def quantized_relu6(xq, scale, zero_point):
    """torch.ao.nn.quantized.ReLU6: min(max(q, zero_point), q(6.0)), q(6.0) = quantize_value(6.0, ...),
    in the input's qparams."""
    xq = check_quantized("xq", xq, np.uint8)
    scale = check_scale("scale", scale)
    zero_point = check_zero_point("zero_point", zero_point, QUINT8_MIN, QUINT8_MAX)
    six = quantize_value(6.0, scale, zero_point)
    return np.clip(xq, np.uint8(zero_point), np.uint8(six))
