"""onnxruntime's quantization arithmetic (`onnxruntime.quantization.quant_utils`), spelled out in NumPy.

onnxruntime's static quantizer does not use torch's formula (`qparams.calculate_qparams`); its own, in
`compute_scale_zp`, is what a model quantized by `quantize_static` holds:

    rmin = min(rmin, 0), rmax = max(rmax, 0)                       (float32, the range always holds 0)
    symmetric:  rmin, rmax = -max(|rmin|, |rmax|), +max(|rmin|, |rmax|)
    scale      = (rmax - rmin) / (qmax - qmin)                      computed in float64, stored as float32
    zero_point = round(qmin - rmin / scale)     (float64 scale)     asymmetric
               = round((qmin + qmax) / 2)                           symmetric (0 for int8, 128 for uint8)
    scale < float32 tiny  ->  scale 1, zero point 0

with (qmin, qmax) from `qmin_qmax`: uint8 [0, 255], int8 [-128, 127], int8 symmetric [-127, 127] (so an
int8 weight scale is max|w| / 127, not / 127.5), and with reduce_range uint8 [0, 127], int8 [-64, 64].
Values are quantized as `quantize_nparray` does: `round(float32(x) / float32(scale)) + zero_point`
(NumPy's round: half to even), clipped to the dtype's full range.
"""
from __future__ import annotations

import numpy as np

# (qmin, qmax) per storage dtype, as quant_utils.ONNX_INT_TYPE_RANGE / _SYMMETRIC_RANGE / _REDUCED_RANGE
_FULL = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}
_SYMMETRIC = {np.dtype(np.int8): (-127, 127)}
_REDUCED = {np.dtype(np.uint8): (0, 127), np.dtype(np.int8): (-64, 64)}


def qmin_qmax(storage, reduce_range=False, symmetric=False):
    """(qmin, qmax) as NumPy scalars of `storage` (np.uint8 or np.int8): onnxruntime's
    `get_qmin_qmax_for_qType`; reduce_range takes precedence over symmetric, as there."""
    storage = np.dtype(storage)
    if storage not in _FULL:
        raise ValueError(f"storage={storage} is not supported; expected uint8 or int8")
    table = _REDUCED if reduce_range else _SYMMETRIC if symmetric and storage in _SYMMETRIC else _FULL
    qmin, qmax = table[storage]
    return np.array(qmin, storage), np.array(qmax, storage)


def compute_scale_zp(rmin, rmax, qmin, qmax, symmetric=False):
    """(zero_point, scale) for the range [rmin, rmax] (float32 arrays or scalars): the module docstring's
    formula, onnxruntime's `compute_scale_zp` (without its min_real_range option)."""
    rmin, rmax = np.asarray(rmin), np.asarray(rmax)
    rmin = np.minimum(rmin, np.array(0, rmin.dtype))
    rmax = np.maximum(rmax, np.array(0, rmax.dtype))
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, +absmax
    dr = np.array(rmax, np.float64) - np.array(rmin, np.float64)
    dq = np.array(qmax, np.float64) - np.array(qmin, np.float64)
    scale = np.array(dr / dq)
    if scale < np.finfo(rmax.dtype).tiny:
        return np.array(0, qmin.dtype), np.array(1.0, rmax.dtype)
    if symmetric:
        zero_point = np.array(np.round((qmin + qmax) / np.array(2.0, np.float64)), qmin.dtype)
    else:
        zero_point = np.array(np.round(qmin - rmin / scale), qmin.dtype)
    return zero_point, scale.astype(rmax.dtype)


def quantize_array(x, scale, zero_point, storage):
    """Levels of `x`: round(float32(x) / scale) + zero_point, clipped to the full range of `storage`
    (onnxruntime's `quantize_nparray`)."""
    qmin, qmax = qmin_qmax(storage)
    levels = np.asarray((np.asarray(x).astype(np.float32) / scale).round() + zero_point)
    np.clip(levels, qmin, qmax, out=levels)
    return levels.astype(storage)


def weight_qparams(w, storage=np.int8, symmetric=True, reduce_range=False):
    """(zero_point, scale) of one weight tensor (or one channel of it) from its own min and max, as
    `compute_data_quant_params`: int8 weights are symmetric by default in onnxruntime."""
    w = np.asarray(w).ravel()
    if not w.size:
        return np.array(0, storage), np.array(1.0, w.dtype)
    qmin, qmax = qmin_qmax(storage, reduce_range, symmetric)
    return compute_scale_zp(np.array(w.min(), w.dtype), np.array(w.max(), w.dtype), qmin, qmax, symmetric)


def weight_qparams_per_channel(w, axis, storage=np.int8, reduce_range=False):
    """(scales (C,), zero points (C,)) of `w`, one symmetric pair per slice along `axis`, as onnxruntime's
    QDQ quantizer computes them for Conv (axis 0), ConvTranspose (axis 1), Gemm (axis 0 if transB else 1)
    and MatMul (axis 1) weights with per_channel=True."""
    w = np.asarray(w)
    pairs = [weight_qparams(w.take(i, axis), storage, True, reduce_range) for i in range(w.shape[axis])]
    return np.asarray([s for _, s in pairs]), np.asarray([z for z, _ in pairs])


def quantize_per_channel(w, scales, zero_points, axis, storage=np.int8):
    """Levels of `w` with one (scale, zero point) per slice along `axis` (`quantize_onnx_initializer`)."""
    w = np.asarray(w)
    shape = list(w.shape)
    shape[axis] = 1
    return np.concatenate([quantize_array(w.take(i, axis).ravel(), scales[i], zero_points[i], storage)
                           .reshape(shape) for i in range(w.shape[axis])], axis)


def quantize_bias(bias, input_scale, weight_scale, beta=1.0):
    """(int32 levels, bias scale) of a bias: scale = input_scale * weight_scale * beta, zero point 0,
    levels round(float64(b) / float64(scale)) clipped to int32 (`quantize_bias_static_impl`)."""
    bias = np.asarray(bias)
    if beta == 0:
        bias, beta = np.zeros_like(bias), 1.0
    scale = input_scale * weight_scale * beta
    levels = (np.asarray(bias, np.float64) / np.asarray(scale, np.float64)).round()
    info = np.iinfo(np.int32)
    levels = np.clip(levels, np.float64(info.min), np.float64(info.max)).astype(np.int32)
    return levels.reshape(bias.shape), np.asarray(scale, bias.dtype).reshape(-1)


def adjust_weight_scale_for_int32_bias(input_scale, weight_scale, bias, per_channel):
    """The weight scale raised where input_scale * weight_scale would push the int32 bias out of range
    (onnxruntime's `_adjust_weight_scale_for_int32_bias`: the smallest valid bias scale is
    1.0001 * 2 * |b| / (2^32 - 2), computed in float64). Returns (changed, new weight scale)."""
    weight_scale = np.array(weight_scale)
    if not weight_scale.size:
        return False, weight_scale
    bias = np.asarray(bias)
    info = np.iinfo(np.int32)
    qrange = np.array(info.max, np.float64) - np.array(info.min + 1, np.float64)
    changed = False
    in64 = np.array(np.asarray(input_scale).item(), np.float64)
    if not per_channel:
        rmin = np.minimum(bias.min(), np.array(0, np.float64))
        rmax = np.maximum(bias.max(), np.array(0, np.float64))
        smallest = 1.0001 * (2.0 * np.maximum(np.abs(rmin), np.abs(rmax))) / qrange
        candidate = in64 * np.array(weight_scale.item(), np.float64)
        if 0.0 < candidate < smallest:
            weight_scale = (np.array(weight_scale.item(), np.float64) * (smallest / candidate)).astype(
                weight_scale.dtype)
            changed = True
    elif weight_scale.ndim == 1:
        for i in range(weight_scale.shape[0]):
            smallest = 1.0001 * (2.0 * np.abs(bias[i])) / qrange
            w64 = np.array(weight_scale[i].item(), np.float64)
            candidate = in64 * w64
            if 0.0 < candidate < smallest:
                weight_scale[i] = (w64 * (smallest / candidate)).astype(weight_scale.dtype)
                changed = True
    return changed, weight_scale
