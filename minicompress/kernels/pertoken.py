"""Per-token (row-wise) dynamic activation quantization and its dequantizing epilogue: each row of the
activation (one token) gets its own scale and zero point, so one large token does not coarsen every other.

Quantizing a row x (K,), optionally smoothed first by a per-channel factor (SmoothQuant, x' = x / s):

    v          = x * inv_smooth                                 float32 (inv_smooth = 1 / s, or no smoothing)
    lo, hi     = min(min_k v, 0), max(max_k v, 0)               0.0 stays exactly representable
    scale      = max((hi - lo) / 255, eps)                      float32, eps = float32's machine epsilon
    zp         = qmin - lo / scale  if (qmin + lo / scale) + (qmax + hi / scale) > 0  else  qmax - hi / scale,
                 clamped to [qmin, qmax] = [-128, 127] and rounded half to even         (float32)
    q          = clamp(round_half_even(float64(v) * (1 / float64(scale)) + zp), -128, 127)   (float64)
    codes      = q + 128 (uint8), zero point zp + 128                 the GEMM's u8 x s8 operand

which is torch's `quantized_decomposed.choose_qparams_per_token_asymmetric` and `quantize_per_token`
(torch/ao/quantization/fx/_decomposed.py, after XNNPACK's rule), operation for operation, in int8 and then
shifted by 128 (an exact integer shift after rounding).

The GEMM (kernels.qgemm) takes one scalar zero point for all rows. It runs with x_zp = 0, giving
acc0[m, n] = sum_k codes[m, k] (w[n, k] - zw[n]); the row's zero point comes out of the sum afterwards:

    acc[m, n] = sum_k (codes[m, k] - zx[m]) (w[n, k] - zw[n]) = acc0[m, n] - zx[m] * colsum[n],
    colsum[n] = sum_k (w[n, k] - zw[n])                         (int64, exact)
    out[m, n] = float32(acc[m, n]) * float32(x_scale[m] * w_scale[n]) (+ bias[n])   float32, one rounding each

`dequantize_per_token` is that epilogue. Each Numba kernel's NumPy twin (`*_reference`) is the definition;
the kernels equal them bit for bit.
"""
import numpy as np
from numba import prange

from .threads import ParallelKernel

QMIN, QMAX = -128, 127
EPS = np.float32(np.finfo(np.float32).eps)


def _quantize_per_token(x, inv_smooth):
    """x (M, K) float32, inv_smooth (K,) float32 -> (codes (M, K) uint8, scales (M,) float32, zero points
    (M,) int32 in [0, 255]). Parallel over rows; each row is read twice (the second time from cache): its
    range (four running minima and maxima, so the loop vectorises), then its codes. A row holding NaN or an
    infinity gets scale NaN (its codes undefined): the caller raises on it."""
    rows, depth = x.shape
    codes = np.empty((rows, depth), np.uint8)
    scales = np.empty(rows, np.float32)
    zps = np.empty(rows, np.int32)
    zero, qmin, qmax = np.float32(0), np.float32(QMIN), np.float32(QMAX)
    full = depth - depth % 4
    for m in prange(rows):
        lo0 = lo1 = lo2 = lo3 = hi0 = hi1 = hi2 = hi3 = zero        # min(., 0) and max(., 0) from the start
        for k in range(0, full, 4):
            v0, v1 = x[m, k] * inv_smooth[k], x[m, k + 1] * inv_smooth[k + 1]
            v2, v3 = x[m, k + 2] * inv_smooth[k + 2], x[m, k + 3] * inv_smooth[k + 3]
            lo0, lo1 = (v0 if v0 < lo0 else lo0), (v1 if v1 < lo1 else lo1)
            lo2, lo3 = (v2 if v2 < lo2 else lo2), (v3 if v3 < lo3 else lo3)
            hi0, hi1 = (v0 if v0 > hi0 else hi0), (v1 if v1 > hi1 else hi1)
            hi2, hi3 = (v2 if v2 > hi2 else hi2), (v3 if v3 > hi3 else hi3)
        lo, hi = min(min(lo0, lo1), min(lo2, lo3)), max(max(hi0, hi1), max(hi2, hi3))
        for k in range(full, depth):
            v = x[m, k] * inv_smooth[k]
            lo, hi = (v if v < lo else lo), (v if v > hi else hi)
        scale = max((hi - lo) / np.float32(QMAX - QMIN), EPS)
        if not np.isfinite(scale):                                   # an infinity in the row
            scales[m], zps[m] = np.nan, 0
            continue
        descaled_lo, descaled_hi = lo / scale, hi / scale
        if (qmin + descaled_lo) + (qmax + descaled_hi) > zero:
            zp = qmin - descaled_lo
        else:
            zp = qmax - descaled_hi
        zp = np.float32(np.rint(min(max(zp, qmin), qmax)))
        inv_scale, zp64 = 1.0 / np.float64(scale), np.float64(zp)
        nans = 0                                                     # comparisons above skip NaN; count them
        for k in range(depth):
            t = np.float64(x[m, k] * inv_smooth[k]) * inv_scale + zp64
            nans += np.int32(t != t)
            q = min(max(np.rint(t), -128.0), 127.0)
            codes[m, k] = np.uint8(np.int32(q) + 128)
        scales[m], zps[m] = (scale, np.int32(zp) + 128) if nans == 0 else (np.float32(np.nan), np.int32(0))
    return codes, scales, zps


_quantize_kernel = ParallelKernel(_quantize_per_token)


def quantize_per_token(x, inv_smooth=None):
    """(codes uint8 (M, K), scales float32 (M,), zero points int32 (M,)) of x (M, K) float32, one (scale,
    zero point) per row (module docstring), after multiplying column k by inv_smooth[k] when given.
    Inputs are assumed checked (C-contiguous float32, inv_smooth float32 of length K); a row with NaN or an
    infinity (after smoothing) gets scale NaN."""
    inv_smooth = np.ones(x.shape[1], np.float32) if inv_smooth is None else inv_smooth    # x * 1 is x exactly
    return _quantize_kernel(x, inv_smooth)


def quantize_per_token_reference(x, inv_smooth=None):
    """`quantize_per_token` in NumPy, step by step as torch's decomposed per-token ops."""
    v = x if inv_smooth is None else x * inv_smooth
    lo, hi = np.minimum(v.min(axis=1), np.float32(0)), np.maximum(v.max(axis=1), np.float32(0))
    scale = np.maximum((hi - lo) / np.float32(QMAX - QMIN), EPS)
    with np.errstate(invalid="ignore"):     # rows with NaN / inf: marked below
        descaled_lo, descaled_hi = lo / scale, hi / scale
    zp = np.where((np.float32(QMIN) + descaled_lo) + (np.float32(QMAX) + descaled_hi) > 0,
                  np.float32(QMIN) - descaled_lo, np.float32(QMAX) - descaled_hi)
    zp = np.rint(np.clip(zp, np.float32(QMIN), np.float32(QMAX))).astype(np.float32)
    with np.errstate(invalid="ignore"):     # rows with NaN / inf: marked below
        q = np.rint(v.astype(np.float64) * (1.0 / scale.astype(np.float64))[:, None] + zp[:, None].astype(np.float64))
        q = np.clip(q, QMIN, QMAX).astype(np.int32)
    bad = ~np.isfinite(v).all(axis=1)
    q[bad], zp[bad], scale[bad] = 0, -128, np.nan
    return (q + 128).astype(np.uint8), scale.astype(np.float32), zp.astype(np.int32) + 128


def _dequantize_per_token(acc0, x_scales, x_zps, colsums, w_scales, bias, has_bias):
    """acc0 (M, N) int32 (the GEMM with x_zp = 0) -> float32 (M, N), the module docstring's epilogue."""
    rows, cols = acc0.shape
    out = np.empty((rows, cols), np.float32)
    for m in prange(rows):
        zx, sx = np.int64(x_zps[m]), x_scales[m]
        for n in range(cols):
            y = np.float32(np.int64(acc0[m, n]) - zx * colsums[n]) * (sx * w_scales[n])
            out[m, n] = y + bias[n] if has_bias else y
    return out


_dequantize_kernel = ParallelKernel(_dequantize_per_token)


def dequantize_per_token(acc0, x_scales, x_zps, colsums, w_scales, bias=None):
    """float32(acc0 - x_zps[:, None] * colsums) * float32(x_scales[:, None] * w_scales) (+ bias), (M, N)
    float32. acc0 int32 (M, N), x_scales float32 (M,), x_zps int32 (M,), colsums int64 (N,), w_scales
    float32 (N,), bias float32 (N,) or None; assumed checked."""
    if bias is None:
        return _dequantize_kernel(acc0, x_scales, x_zps, colsums, w_scales, w_scales, False)
    return _dequantize_kernel(acc0, x_scales, x_zps, colsums, w_scales, bias, True)


def dequantize_per_token_reference(acc0, x_scales, x_zps, colsums, w_scales, bias=None):
    """`dequantize_per_token` in NumPy."""
    acc = acc0.astype(np.int64) - x_zps.astype(np.int64)[:, None] * colsums[None, :]
    out = acc.astype(np.float32) * (x_scales[:, None] * w_scales[None, :])
    return out if bias is None else out + bias
