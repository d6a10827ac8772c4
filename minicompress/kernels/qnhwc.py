"""Kernels for quantized activations kept channels-last (NHWC) between integer layers, as fbgemm does.

A quantized 4-D activation keeps torch's logical shape (N, C, H, W), but its bytes are laid out
(N, H, W, C): the array the user sees is `nhwc.transpose(0, 3, 1, 2)`, a view (torch's
`memory_format=torch.channels_last`). Every integer layer then reads and writes whole pixels -- a 1x1
convolution is a GEMM on (N*H*W, C) with no transpose, the depthwise kernel's inner loop runs over
channels -- and no layer copies the activation into another layout.

    quantize_nhwc        float32 (N, C, H, W), any strides -> uint8 (N, H, W, C), torch.quantize_per_tensor
    global_avg_pool_nhwc uint8 (N, H, W, C) -> uint8 (N, C), the quantized adaptive_avg_pool2d(x, 1)

Quantizing is torch's fbgemm::Quantize: q = clamp(round_half_even(fma(x, 1 / scale, zero_point)), 0, 255)
in float32 with one rounding for the multiply-add (`simd.fma_float32` is the NumPy twin's definition);
here the fused multiply-add is LLVM's `llvm.fma.f32`, which every target lowers exactly (in hardware or
in libm), so it is safe to compile on any CPU.
"""
import numpy as np
from numba import prange
from numba.core import types
from numba.extending import intrinsic

from .epilogue import round_to_quantized
from .threads import ParallelKernel


@intrinsic
def fma_f32(typingctx, a, b, c):
    """float32 a * b + c rounded once (llvm.fma.f32)."""
    signature = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, sig, args):
        return builder.fma(*args)

    return signature, codegen


def channels_last(levels):
    """The (N, H, W, C) C-contiguous bytes of a 4-D (N, C, H, W) array: a view when they are laid out
    channels-last already, else one copy."""
    nhwc = levels.transpose(0, 2, 3, 1)
    return nhwc if nhwc.flags.c_contiguous else np.ascontiguousarray(nhwc)


# --------------------------------------------------------------------------------------------------
# Quantize float32 NCHW straight into channels-last codes


def _quantize_nhwc(x, inv_scale, zero_point):
    """x (N, C, H, W) float32 -> ((N, H, W, C) uint8, whether x held a NaN). Parallel over (n, h)."""
    n_batch, channels, height, width = x.shape
    out = np.empty((n_batch, height, width, channels), dtype=np.uint8)
    nan = np.zeros(n_batch * height, dtype=np.bool_)
    zp = np.float32(zero_point)
    for task in prange(n_batch * height):
        n, h = task // height, task % height
        for c in range(channels):
            line = x[n, c, h]
            for w in range(width):
                value = line[w]
                if value != value:
                    nan[task] = True
                level = np.rint(fma_f32(value, inv_scale, zp))
                out[n, h, w, c] = np.uint8(min(max(level, np.float32(0)), np.float32(255)))
    return out, nan.any()


quantize_nhwc_kernel = ParallelKernel(_quantize_nhwc)


def quantize_nhwc(x, scale, zero_point):
    """torch.quantize_per_tensor(x, scale, zero_point, torch.quint8).int_repr() for float32 x (N, C, H, W),
    returned channels-last: uint8 (N, H, W, C). scale > 0 and zero_point in [0, 255] are the caller's
    (validated) qparams.

    Raises:
        ValueError: x contains NaN, which has no quantized value.
    """
    inv_scale = np.float32(1) / np.float32(scale)
    out, has_nan = quantize_nhwc_kernel(x, inv_scale, zero_point)
    if has_nan:
        raise ValueError("x contains NaN, which has no quantized value")
    return out


def quantize_nhwc_reference(x, scale, zero_point):
    from .simd import fma_float32

    levels = np.rint(fma_float32(x, np.float32(1) / np.float32(scale), np.float32(zero_point)))
    return np.clip(levels, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


# --------------------------------------------------------------------------------------------------
# Global average pooling on channels-last codes


def _global_avg_pool_nhwc(x, zero_point):
    """x (N, H, W, C) uint8 -> (N, C) uint8: round_half_even(float32(sum (x - zp) / H / W)) + zp, the
    quotient in float64 (the float pooling kernel's arithmetic on the centred codes, whose sum is exact)."""
    n_batch, height, width, channels = x.shape
    out = np.empty((n_batch, channels), dtype=np.uint8)
    for n in prange(n_batch):
        sums = np.zeros(channels, dtype=np.int64)
        for h in range(height):
            for w in range(width):
                pixel = x[n, h, w]
                for c in range(channels):
                    sums[c] += pixel[c]
        for c in range(channels):
            mean = np.float32((sums[c] - height * width * zero_point) / height / width)
            out[n, c] = np.uint8(min(max(np.rint(mean) + zero_point, 0.0), 255.0))
    return out


global_avg_pool_nhwc = ParallelKernel(_global_avg_pool_nhwc)


def global_avg_pool_nhwc_reference(x, zero_point):
    centred = x.astype(np.int64) - zero_point
    mean = (centred.sum(axis=(1, 2)) / x.shape[1] / x.shape[2]).astype(np.float32)
    return np.clip(np.rint(mean).astype(np.float64) + zero_point, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# The quantized add on two arrays of one layout, in memory order


def _add_flat(a, a_scale, a_zp, b, b_scale, b_zp, inv_out_scale, out_zp, qmin, qmax):
    """qelementwise.qadd's float32 arithmetic on flat uint8 arrays of one length, with every value of the
    loop in float32 (qadd's int64 zero points keep LLVM from vectorising it): 1.5-2x faster. The codes and
    zero points are subtracted as float32, which is exact (|a - a_zp| <= 255) and so the same as qadd's
    integer difference: an integer one is widened to int64 by Numba, and AVX2 has no vector conversion
    from int64 to float32 (AVX512-DQ has), so that loop ran one element at a time there (3.6x slower)."""
    out = np.empty(a.shape, dtype=np.uint8)
    za, zb = np.float32(a_zp), np.float32(b_zp)
    zp, lo, hi = np.float32(out_zp), np.float32(qmin), np.float32(qmax)
    for i in prange(a.size):
        real = (np.float32(a[i]) - za) * a_scale + (np.float32(b[i]) - zb) * b_scale
        out[i] = round_to_quantized(real * inv_out_scale, zp, lo, hi)
    return out


add_flat = ParallelKernel(_add_flat)
