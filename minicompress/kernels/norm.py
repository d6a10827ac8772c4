"""Batch normalization in evaluation mode as one pass over the input, beside its NumPy twin.

With the running statistics fixed, batch norm is a per-channel affine map (torch.nn.functional.batch_norm,
training=False), optionally followed by ReLU (the conv -> bn -> relu of MobileNet blocks):

    out[n, c, k] = (x[n, c, k] - mean[c]) * inv_std[c] * weight[c] + bias[c]        inv_std = 1 / sqrt(var + eps)
    out          = max(out, 0)                                                        with relu (NaN stays NaN)

computed in that order, in x's dtype, with no fused multiply-add: the kernel gives the same bits as the
NumPy expression `batch_norm_inference_reference` (which is how `ops/norm.py` computes it with autograd).
NumPy builds that expression in four passes, each allocating a full-size temporary; the kernel reads x once
and writes once, and may write into x itself (`out=x`) when the caller owns x.

x is (N, C, K) with K the flattened spatial size; the (n, c) rows run in parallel above the work cutoff of
`threads.py` (each writes only its own row).
"""
import numpy as np
from numba import prange

from .threads import ParallelKernel, threads_for


def _batch_norm_inference(x, mean, inv_std, weight, bias, relu, out):
    n_batch, channels, size = x.shape
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        m, s, w, b = mean[c], inv_std[c], weight[c], bias[c]
        row_in, row_out = x[n, c], out[n, c]
        if relu:
            for k in range(size):
                v = (row_in[k] - m) * s * w + b
                row_out[k] = v if not v < 0 else 0
        else:
            for k in range(size):
                row_out[k] = (row_in[k] - m) * s * w + b


batch_norm_inference_kernel = ParallelKernel(_batch_norm_inference)


def batch_norm_inference(x, mean, inv_std, weight, bias, relu=False, out=None):
    """x (N, C, ...) C-contiguous; mean, inv_std, weight, bias (C,) in x's dtype. Returns out (new unless
    given; `out=x` normalises in place)."""
    out = np.empty_like(x) if out is None else out
    shape3 = (x.shape[0], x.shape[1], -1)
    with threads_for(x.size):
        batch_norm_inference_kernel(x.reshape(shape3), mean, inv_std, weight, bias, bool(relu), out.reshape(shape3))
    return out


def batch_norm_inference_reference(x, mean, inv_std, weight, bias, relu=False):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = (x - mean.reshape(shape)) * inv_std.reshape(shape) * weight.reshape(shape) + bias.reshape(shape)
    return np.maximum(out, 0) if relu else out
