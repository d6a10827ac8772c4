"""Affine quantization of float arrays, per tensor and per channel, and fake quantization.

A quantized value q stands for the real number scale * (q - zero_point):

    quantize:    q = clamp(round(x / scale) + zero_point, qmin, qmax)
    dequantize:  x = scale * (q - zero_point)
    fake quantize (quantize then dequantize, in float, for quantization-aware training):
                 out = scale * (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point)
                 d out / d x = 1 where round(x / scale) + zero_point is inside [qmin, qmax], else 0
                 (the straight-through estimator; the mask returned beside `out`)

"round" is round-half-to-even, and "/ scale" is a multiplication by inv = float32(1 / float32(scale)),
never a division. torch spells the same formula with different float arithmetic in each kernel, and
since a tie (x / scale = k + 0.5) goes one way or the other on the last bit, each function here
reproduces its torch kernel exactly (torch 2.13, x86-64 CPU with AVX2 and FMA):

    quantize_per_tensor, quint8 / qint8    q = rint(fma(x, inv, zero_point))      one rounding (FBGEMM's
                                                                                  fused multiply-add)
    quantize_per_tensor, qint32;           q = rint(float32(float32(x * inv) + zero_point))   two roundings
    quantize_per_channel, every dtype
    dequantize_per_tensor                  x = float32(q - zero_point) * float32(scale)        in float32;
                                           q - zero_point is int32 arithmetic (wraps for extreme qint32)
    dequantize_per_channel                 x = float32(float64(q - zero_point) * float64(scale))
    fake_quantize_per_tensor_affine        level = zero_point + rint(x * inv) in x's precision,
                                           out = float32(clamp(level) - zero_point) * float32(scale),
                                           a float32 product even for float64 x
    fake_quantize_per_channel_affine       level as above, converted to int64 (NaN, inf and levels beyond
                                           int64 become -2**63, so they clamp to qmin: x86's conversion);
                                           out = (clamp(level) - zero_point) * scale in x's precision

The two quantize rules part where x * inv sits a hair from a tie. For x = float32(-12.15), scale = 0.1,
zero_point = 128 (quint8): the exact product is -121.4999962, so the fused sum 6.5000038 gives 7, while
float32(x * inv) = -121.5 and -121.5 + 128 = 6.5 gives 6 (round half to even). torch returns 7 from
quantize_per_tensor and 6 from quantize_per_channel; so do these functions.
Quantizing NaN raises ValueError (torch maps it to an arbitrary level); +-inf saturate to qmax / qmin.

    >>> q = quantize_per_tensor(np.array([-1.0, 0.0, 0.5, 1.0], np.float32), 0.5, 2, dtypes.qint8)
    >>> q, dequantize_per_tensor(q, 0.5, 2)
    (array([0, 2, 3, 4], dtype=int8), array([-1. ,  0. ,  0.5,  1. ], dtype=float32))
"""
import numpy as np

from . import dtypes
from ..kernels.simd import fma_float32  # noqa: F401  (quant's arithmetic and its callers use it)
from .qparams import validate_qparams


def quantize_per_tensor(x, scale, zero_point, dtype):
    """Integer levels of float32 `x` with one (scale, zero_point), as `torch.quantize_per_tensor(...).int_repr()`.

    Args:
        x: float32 array, any shape.
        scale: positive float (or 1-element array); used as float32.
        zero_point: int inside the dtype's range.
        dtype: quint8, qint8 or qint32 (a constant from `dtypes` or its name).
    Returns:
        An array of x's shape in the dtype's storage (uint8, int8 or int32).
    Raises:
        TypeError: x not float32. ValueError: x contains NaN, or invalid qparams.
    """
    dtype = dtypes.check_dtype(dtype)
    x = _float32_input(x)
    scale, zero_point = _per_tensor_qparams(scale, zero_point, dtype)
    inv = np.float32(1) / np.float32(scale)
    with np.errstate(over="ignore"):  # beyond float32: +-inf, which saturates
        if dtype is dtypes.qint32:
            levels = np.rint(x * inv + np.float32(zero_point))
        else:
            levels = np.rint(fma_float32(x, inv, np.float32(zero_point)))
    return _saturate(levels, dtype)


def quantize_per_channel(x, scales, zero_points, axis, dtype):
    """Integer levels of float32 `x` with one (scale, zero_point) per slice along `axis`,
    as `torch.quantize_per_channel(...).int_repr()`.

    Args:
        x: float32 array with at least one dimension.
        scales: x.shape[axis] positive floats (torch keeps them in float64; quantizing uses float32).
        zero_points: x.shape[axis] ints inside the dtype's range.
        axis: the channel axis (negative counts from the end).
        dtype: quint8, qint8 or qint32.
    Returns:
        An array of x's shape in the dtype's storage.
    """
    dtype = dtypes.check_dtype(dtype)
    x = _float32_input(x)
    axis = _axis(axis, x.ndim)
    scales, zero_points = _per_channel_qparams(scales, zero_points, dtype, x.shape[axis])
    inv = _along(np.float32(1) / scales.astype(np.float32), axis, x.ndim)
    with np.errstate(over="ignore"):
        levels = np.rint(x * inv + _along(zero_points.astype(np.float32), axis, x.ndim))
    return _saturate(levels, dtype)


def dequantize_per_tensor(q, scale, zero_point):
    """float32 values scale * (q - zero_point) of integer levels `q`, as torch's `.dequantize()`.

    The dtype follows q's storage (uint8 -> quint8, int8 -> qint8, int32 -> qint32).
    """
    q = _levels_input(q)
    scale, zero_point = _per_tensor_qparams(scale, zero_point, dtypes.dtype_of_storage(q.dtype))
    centered = _wrap_int32(q.astype(np.int64) - zero_point)
    return np.asarray(centered.astype(np.float32) * np.float32(scale))


def dequantize_per_channel(q, scales, zero_points, axis):
    """float32 values scales[c] * (q - zero_points[c]) along `axis`, as torch's `.dequantize()`."""
    q = _levels_input(q)
    if q.ndim == 0:
        raise ValueError("q must have at least one dimension for per-channel dequantization")
    axis = _axis(axis, q.ndim)
    scales, zero_points = _per_channel_qparams(scales, zero_points, dtypes.dtype_of_storage(q.dtype),
                                               q.shape[axis])
    centered = q.astype(np.float32) - _along(zero_points.astype(np.float32), axis, q.ndim)
    return (centered.astype(np.float64) * _along(scales, axis, q.ndim)).astype(np.float32)


def fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max):
    """Quantize-dequantize `x` in float, as `torch.fake_quantize_per_tensor_affine`.

    Args:
        x: float32 or float64 array (NaN gives scale * (quant_min - zero_point) with mask 0, as torch).
        scale: positive float, used as float32. zero_point: int in [quant_min, quant_max].
        quant_min, quant_max: ints, quant_min <= quant_max.
    Returns:
        (out, mask): out has x's shape and dtype; mask (bool) is where the gradient passes,
        d out / d x = mask (torch's straight-through estimator).
    """
    x = _float_input(x)
    quant_min, quant_max = _quant_range(quant_min, quant_max)
    scale = _fake_scale(scale, "scale")
    if scale.ndim != 0:
        raise ValueError(f"scale={scale} must be a single number")
    zero_point = _fake_zero_points(zero_point, quant_min, quant_max, "zero_point")
    if zero_point.ndim != 0:
        raise ValueError(f"zero_point={zero_point} must be a single int")
    inv = np.float32(1) / scale
    with np.errstate(over="ignore"):
        level = zero_point.astype(x.dtype) + np.rint(x * x.dtype.type(inv))
    clamped = np.clip(np.where(np.isnan(level), quant_min, level), quant_min, quant_max)  # std::fmax drops NaN
    out = (clamped - zero_point).astype(np.float32) * scale
    return np.asarray(out, x.dtype), np.asarray((level >= quant_min) & (level <= quant_max))


def fake_quantize_per_channel_affine(x, scale, zero_point, axis, quant_min, quant_max):
    """Quantize-dequantize `x` with one (scale, zero_point) per slice along `axis`, as
    `torch.fake_quantize_per_channel_affine`.

    Args:
        x: float32 or float64 array with at least one dimension.
        scale: x.shape[axis] positive floats, used as float32 (torch requires a float32 tensor).
        zero_point: x.shape[axis] ints in [quant_min, quant_max].
        axis: the channel axis. quant_min, quant_max: ints, quant_min <= quant_max.
    Returns:
        (out, mask) as `fake_quantize_per_tensor_affine`.
    """
    x = _float_input(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension for per-channel fake quantization")
    axis = _axis(axis, x.ndim)
    quant_min, quant_max = _quant_range(quant_min, quant_max)
    scale = _fake_scale(scale, "scale")
    zero_point = _fake_zero_points(zero_point, quant_min, quant_max, "zero_point")
    if scale.shape != (x.shape[axis],) or zero_point.shape != (x.shape[axis],):
        raise ValueError(f"scale and zero_point must have x.shape[axis] = {x.shape[axis]} elements; "
                         f"got shapes {scale.shape} and {zero_point.shape}")
    inv = _along(np.float32(1) / scale, axis, x.ndim).astype(x.dtype)
    zp = _along(zero_point, axis, x.ndim)
    with np.errstate(over="ignore"):
        level = zp.astype(x.dtype) + np.rint(x * inv)
    # torch's static_cast<int64_t>: x86 turns NaN and anything outside int64 into -2**63
    representable = np.abs(level) < 2.0**63
    level = np.where(representable, level, 0).astype(np.int64)
    level[~representable] = np.iinfo(np.int64).min
    clamped = np.clip(level, quant_min, quant_max)
    out = (clamped - zp).astype(np.float64) * _along(scale, axis, x.ndim).astype(np.float64)
    return out.astype(x.dtype), (level >= quant_min) & (level <= quant_max)


def _saturate(levels, dtype):
    """Clamp float levels to the dtype's range in float64 (exact for int32 bounds) and store them."""
    return np.asarray(np.clip(np.asarray(levels, np.float64), dtype.quant_min, dtype.quant_max), dtype.storage)


def _wrap_int32(values):
    return (values + 2**31) % 2**32 - 2**31


def _along(values, axis, ndim):
    """Reshape 1-d `values` to broadcast along `axis` of an ndim-dimensional array."""
    shape = [1] * ndim
    shape[axis] = -1
    return np.reshape(values, shape)


def _axis(axis, ndim):
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis={axis!r} must be an int")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for an array with {ndim} dimensions")
    return int(axis) % ndim


def _float32_input(x):
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"x must be a float32 array (as torch's quantize requires); got dtype {x.dtype}")
    if np.isnan(x).any():
        raise ValueError("x contains NaN, which has no quantized value")
    return x


def _float_input(x):
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x must be a float32 or float64 array; got dtype {x.dtype}")
    return x


def _levels_input(q):
    q = np.asarray(q)
    dtypes.dtype_of_storage(q.dtype, "q")
    return q


def _per_tensor_qparams(scale, zero_point, dtype):
    scale, zero_point = np.asarray(scale), np.asarray(zero_point)
    if scale.size != 1 or zero_point.size != 1:
        raise ValueError(f"scale={scale} and zero_point={zero_point} must be single numbers for "
                         f"per-tensor quantization")
    scale, zero_point = validate_qparams(scale.reshape(()), zero_point.reshape(()), dtype)
    return float(scale), int(zero_point)


def _per_channel_qparams(scales, zero_points, dtype, channels):
    scales, zero_points = validate_qparams(np.atleast_1d(scales), np.atleast_1d(zero_points), dtype)
    if scales.shape != (channels,):
        raise ValueError(f"scales and zero_points must have {channels} elements (the size of the channel "
                         f"axis); got {scales.size}")
    return scales, zero_points


def _quant_range(quant_min, quant_max):
    for name, value in (("quant_min", quant_min), ("quant_max", quant_max)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{name}={value!r} must be an int")
    if quant_min > quant_max:
        raise ValueError(f"quant_min={quant_min} must not exceed quant_max={quant_max}")
    return int(quant_min), int(quant_max)


def _fake_scale(scale, name):
    scale = np.asarray(scale)
    if scale.dtype.kind not in "fiu":
        raise TypeError(f"{name}={scale!r} must be real numbers")
    scale32 = scale.astype(np.float32)
    with np.errstate(divide="ignore", over="ignore"):
        if not (np.isfinite(scale32) & (scale32 > 0) & np.isfinite(np.float32(1) / scale32)).all():
            raise ValueError(f"{name}={scale} must be positive and finite in float32, with a finite reciprocal")
    return scale32


def _fake_zero_points(zero_point, quant_min, quant_max, name):
    zero_point = np.asarray(zero_point)
    if zero_point.dtype.kind not in "iu":
        raise TypeError(f"{name}={zero_point!r} must be integers")
    zero_point = zero_point.astype(np.int64)
    if ((zero_point < quant_min) | (zero_point > quant_max)).any():
        raise ValueError(f"{name}={zero_point} must lie in [quant_min, quant_max] = [{quant_min}, {quant_max}]")
    return zero_point
