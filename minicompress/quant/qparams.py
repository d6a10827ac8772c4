"""Scale and zero point from an observed range: the one formula every observer calls.

Mirrors `torch.ao.quantization.observer.UniformQuantizationObserverBase._calculate_qparams` (and the
range defaults of its `__init__`, `torch.ao.quantization.utils.calculate_qmin_qmax`). With the observed
`min_val`, `max_val` (float32, per tensor or per channel) and the integer range [qmin, qmax]:

    min_neg = min(min_val, 0),  max_pos = max(max_val, 0)       the range always contains 0.0

    affine:     scale = max((max_pos - min_neg) / (qmax - qmin), eps)
                zero_point = clamp(qmin - round(min_neg / scale), qmin, qmax)
    symmetric:  scale = max(max(-min_neg, max_pos) / ((qmax - qmin) / 2), eps)
                zero_point = 0 for qint8 / qint32; for quint8 128, or (qmin + qmax) // 2 with a custom range
    per_channel_affine_float_qparams:
                scale = (max_val - min_val) / (qmax - qmin), replaced by 1.0 where it is <= eps
                zero_point = -min_val / scale                               (a float)

Containing 0.0 makes 0.0 exactly representable (zero padding, ReLU zeros). Every step is float32
arithmetic with round-half-to-even, as in torch, so scale matches torch's bit for bit. The default
range is the dtype's full range, halved by `reduce_range` (quint8 [0, 127], qint8 [-64, 63]: headroom
for the 16-bit intermediate sums of x86 `vpmaddubsw`); a custom (quant_min, quant_max) must contain 0
and `reduce_range` halves it too (`quant_min // 2, quant_max // 2`).

    >>> scale, zero_point = calculate_qparams(-1.0, 3.0)          # quint8, per_tensor_affine
    >>> scale, zero_point
    (array([0.01568628], dtype=float32), array([64]))
"""
import numpy as np

from . import dtypes as qd

EPS = float(np.finfo(np.float32).eps)


def calculate_qmin_qmax(quant_min=None, quant_max=None, dtype=qd.quint8, reduce_range=False):
    """The integer range an observer quantizes to, as `torch.ao.quantization.utils.calculate_qmin_qmax`.

    Without (quant_min, quant_max): the dtype's range, halved by `reduce_range` for quint8 / qint8
    (qint32 ignores it). With both: they must satisfy quant_min <= 0 <= quant_max, quant_min < quant_max,
    lie inside the dtype's range, and `reduce_range` halves them (floor division).

    Returns:
        (qmin, qmax) as Python ints.
    Raises:
        ValueError: only one of quant_min / quant_max given, a range without 0, an empty range, or one
            outside the dtype.
    """
    dtype = qd.check_dtype(dtype)
    if (quant_min is None) != (quant_max is None):
        raise ValueError(f"quant_min={quant_min!r} and quant_max={quant_max!r}: give both or neither")
    if quant_min is None:
        if dtype is qd.qint32 or not reduce_range:
            return dtype.quant_min, dtype.quant_max
        return dtype.quant_min // 2, dtype.quant_max // 2
    quant_min, quant_max = _int(quant_min, "quant_min"), _int(quant_max, "quant_max")
    if not quant_min <= 0 <= quant_max:
        raise ValueError(f"quant_min={quant_min}, quant_max={quant_max}: the range must contain 0")
    if quant_min >= quant_max:
        raise ValueError(f"quant_min={quant_min} must be less than quant_max={quant_max}")
    if quant_min < dtype.quant_min or quant_max > dtype.quant_max:
        raise ValueError(f"quant_min={quant_min}, quant_max={quant_max} exceed the range of {dtype!r} "
                         f"[{dtype.quant_min}, {dtype.quant_max}]")
    if reduce_range:
        return quant_min // 2, quant_max // 2
    return quant_min, quant_max


def calculate_qparams(min_val, max_val, dtype=qd.quint8, qscheme=qd.per_tensor_affine, quant_min=None,
                      quant_max=None, reduce_range=False, eps=EPS):
    """(scale, zero_point) for the observed range [min_val, max_val]; see the module docstring.

    Args:
        min_val, max_val: a scalar / 0-d array (per tensor) or 1-d arrays of one value per channel,
            rounded to float32 as an observer's buffers are. (inf, -inf) is an observer that saw
            nothing, and an empty array too: both give the defaults (1.0, 0) like torch.
        dtype, qscheme: constants from `dtypes` or their names.
        quant_min, quant_max, reduce_range: the integer range, see `calculate_qmin_qmax`.
        eps: the smallest scale (rounded to float32), so that a constant input still gives a usable scale.

    Returns:
        scale: float32 array of shape (1,) per tensor (torch's shape) or (C,) per channel.
        zero_point: int64 array of the same shape (float32 for per_channel_affine_float_qparams).
    Raises:
        ValueError: min_val > max_val, NaN or infinite bounds (other than the unobserved (inf, -inf)),
            shapes that differ or have more than one dimension, symmetric quint8 with reduce_range
            (torch's observers refuse it), eps <= 0, or a bad quant range.
    """
    dtype, qscheme = qd.check_dtype(dtype), qd.check_qscheme(qscheme)
    min_val, max_val = _bounds(min_val, "min_val"), _bounds(max_val, "max_val")
    if min_val.shape != max_val.shape or min_val.ndim > 1:
        raise ValueError(f"min_val and max_val must both be scalars or 1-d arrays of the same length; "
                         f"got shapes {min_val.shape} and {max_val.shape}")
    if qscheme.symmetric and reduce_range and dtype is qd.quint8:
        raise ValueError(f"reduce_range=True is not supported for {qscheme!r} with {dtype!r}")
    eps = _positive_float(eps, "eps")
    custom_range = quant_min is not None and quant_max is not None
    qmin, qmax = calculate_qmin_qmax(quant_min, quant_max, dtype, reduce_range)

    if min_val.size == 0 or (min_val.ndim == 0 and min_val == np.inf and max_val == -np.inf):
        return np.ones(1, np.float32), np.zeros(1, np.int64)
    if not (np.isfinite(min_val).all() and np.isfinite(max_val).all()):
        raise ValueError(f"min_val={min_val} and max_val={max_val} must be finite")
    if (min_val > max_val).any():
        raise ValueError(f"min_val={min_val} must not exceed max_val={max_val}")

    zero = np.float32(0)
    min_neg, max_pos = np.minimum(min_val, zero), np.maximum(max_val, zero)
    if qscheme.symmetric:
        scale = np.maximum(np.maximum(-min_neg, max_pos) / np.float32((qmax - qmin) / 2), eps)
        zp = 0
        if dtype is qd.quint8:
            zp = (qmin + qmax) // 2 if custom_range else 128
        zero_point = np.full(scale.shape, zp, np.int64)
    elif qscheme is qd.per_channel_affine_float_qparams:
        scale = (max_val - min_val) / np.float32(qmax - qmin)
        scale = np.where(scale > eps, scale, np.float32(1))
        zero_point = -min_val / scale
    else:
        scale = np.maximum((max_pos - min_neg) / np.float32(qmax - qmin), eps)
        levels = _to_int32(np.rint(min_neg / scale))
        zero_point = np.clip(_wrap_int32(qmin - levels), qmin, qmax)
    return np.atleast_1d(scale).astype(np.float32), np.atleast_1d(zero_point).astype(
        np.float32 if qscheme is qd.per_channel_affine_float_qparams else np.int64)


def validate_qparams(scale, zero_point, dtype):
    """Check (scale, zero_point) for quantizing to `dtype` and return them as (float64, int64) arrays.

    scale must be positive and finite once rounded to float32, with a finite float32 reciprocal
    (quantizing multiplies by 1 / scale); zero_point must be an integer inside the dtype's range. Both are
    scalars or 1-d arrays of the same shape.

    Raises:
        TypeError: a non-numeric scale or a non-integer zero_point.
        ValueError: scale <= 0, NaN, infinite or too small; zero_point out of range; shapes that differ.
    """
    dtype = qd.check_dtype(dtype)
    scale, zero_point = np.asarray(scale), np.asarray(zero_point)
    if scale.dtype.kind not in "fiu":
        raise TypeError(f"scale={scale!r} must be a real number or an array of them")
    if zero_point.dtype.kind not in "iu":
        if zero_point.dtype.kind != "f" or not np.array_equal(zero_point, np.round(zero_point)):
            raise TypeError(f"zero_point={zero_point!r} must be an integer or an array of integers")
    if scale.shape != zero_point.shape or scale.ndim > 1:
        raise ValueError(f"scale and zero_point must both be scalars or 1-d arrays of the same length; "
                         f"got shapes {scale.shape} and {zero_point.shape}")
    scale = scale.astype(np.float64)
    with np.errstate(over="ignore", divide="ignore"):
        scale32 = scale.astype(np.float32)
        usable = np.isfinite(scale32) & (scale32 > 0) & np.isfinite(np.float32(1) / scale32)
    if not usable.all():
        raise ValueError(f"scale={scale} must be positive and finite in float32, with a finite reciprocal")
    zero_point = zero_point.astype(np.int64)
    if ((zero_point < dtype.quant_min) | (zero_point > dtype.quant_max)).any():
        raise ValueError(f"zero_point={zero_point} is outside the range of {dtype!r} "
                         f"[{dtype.quant_min}, {dtype.quant_max}]")
    return scale, zero_point


def _bounds(value, name):
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name}={value!r} must be real numbers")
    array = array.astype(np.float32)
    if np.isnan(array).any():
        raise ValueError(f"{name}={value!r} contains NaN")
    return array


def _positive_float(value, name):
    if not isinstance(value, (int, float, np.integer, np.floating)) or not 0 < value < np.inf:
        raise ValueError(f"{name}={value!r} must be a positive finite number")
    return np.float32(value)


def _int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name}={value!r} must be an int")
    return int(value)


def _to_int32(levels):
    """float32 -> int32 as torch's `.to(torch.int)` on x86: a value outside int32 becomes -2**31.

    Only qint32 affine reaches that case (min_neg / scale can be as low as -2**32)."""
    inside = (levels >= -2.0**31) & (levels < 2.0**31)
    return np.where(inside, levels, -2.0**31).astype(np.int64)


def _wrap_int32(values):
    """int64 -> int32 with two's-complement wraparound, as torch's int32 `qmin - levels`."""
    return (np.asarray(values, np.int64) + 2**31) % 2**32 - 2**31
