"""Elementwise chains as one pass: the kernels a compiled plan runs for the chains an exporter writes
node by node (`graph/rewrite.py` finds them), each beside the NumPy twin that runs the nodes one ufunc
at a time.

    hard-swish (ONNX Add, Clip, Mul, Div)    out = x * min(max(x + a, lo), hi) / d
    PRelu, a slope per channel (axis 1)       out = x if x >= 0 else x * slope[c]   (NaN: NaN * slope)
    nearest upsampling by integer factors     out[..., i, j] = x[..., i // fh, j // fw]   (a copy)

Each operation is the node's own, in float32 (or the input's dtype) and in the nodes' order, with no fused
multiply-add, so the kernel has the twin's bits: max(t, lo) keeps t when it is NaN or equal to lo (as
np.maximum), min(t, hi) likewise (as np.minimum).
"""
import numpy as np
from numba import njit


def _hard_swish_pass(x, a, lo, hi, d, out):
    for i in range(x.size):
        v = x[i]
        t = v + a
        if t < lo:  # noqa: PLR1730  (not max(): NaN must stay NaN, as np.maximum)
            t = lo
        if t > hi:  # noqa: PLR1730
            t = hi
        out[i] = v * t / d


hard_swish_pass = njit(cache=True)(_hard_swish_pass)


def hard_swish(x, a, lo, hi, d, out=None):
    """x * clip(x + a, lo, hi) / d into `out` (x's shape and dtype, C-contiguous; new when None) in one
    pass; x C-contiguous, a, lo, hi, d scalars of x's dtype."""
    if out is None:
        out = np.empty_like(x)
    hard_swish_pass(x.reshape(-1), a, lo, hi, d, out.reshape(-1))
    return out


def hard_swish_reference(x, a, lo, hi, d):
    """The ONNX nodes one by one: Add, Clip (max then min), Mul, Div."""
    return np.divide(np.multiply(x, np.minimum(np.maximum(np.add(x, a), lo), hi)), d)


def _prelu_planes(x, slope, out):
    """x, out (N, C, L): out[n, c, k] = x if x >= 0 else x * slope[c] (one rounding, as the ONNX node)."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            s, src, dst = slope[c], x[n, c], out[n, c]
            for k in range(src.shape[0]):
                v = src[k]
                dst[k] = v if v >= 0 else v * s


prelu_planes = njit(cache=True)(_prelu_planes)


def prelu(x, slope, out=None):
    """PRelu of x (N, C, ...) with slope (C,) of x's dtype into `out` (new when None), one pass."""
    x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty_like(x)
    shape3 = (x.shape[0], x.shape[1], -1)
    prelu_planes(x.reshape(shape3), np.ascontiguousarray(slope), out.reshape(shape3))
    return out


def prelu_reference(x, slope):
    """The ONNX node: np.where(x >= 0, x, x * slope) with slope along axis 1."""
    return np.where(x >= 0, x, x * slope.reshape((1, -1) + (1,) * (x.ndim - 2)))


def _repeat_planes(x, fh, fw, out):
    """x (P, H, W) -> out (P, H fh, W fw): each output row built once from its input row, then copied to the
    fh - 1 rows below it."""
    planes, height, width = x.shape
    for p in range(planes):
        for i in range(height):
            src, first = x[p, i], out[p, i * fh]
            for j in range(width):
                v = src[j]
                for b in range(fw):
                    first[j * fw + b] = v
            for a in range(1, fh):
                row = out[p, i * fh + a]
                for k in range(first.shape[0]):
                    row[k] = first[k]


repeat_planes = njit(cache=True)(_repeat_planes)


def repeat_upsample(x, fh, fw, out=None):
    """Nearest upsampling of the last two axes of x by integer factors (fh, fw) into `out` (new when None)."""
    x = np.ascontiguousarray(x)
    *lead, h, w = x.shape
    if out is None:
        out = np.empty((*lead, h * fh, w * fw), x.dtype)
    repeat_planes(x.reshape(-1, h, w), fh, fw, out.reshape(-1, h * fh, w * fw))
    return out


def repeat_upsample_reference(x, fh, fw):
    """The twin: np.repeat along each of the two axes."""
    return np.repeat(np.repeat(x, fh, axis=-2), fw, axis=-1)
