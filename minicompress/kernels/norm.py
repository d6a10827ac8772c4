"""Normalization kernels beside their NumPy twins: batch norm in evaluation mode in one pass and in training
mode (batch statistics, forward and backward) with one task per channel; layer norm for inference, one
task per row (at the end of the file).

Evaluation.

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

Training. The statistics are the batch's, per channel over the N * K values of x (torch.nn.functional.batch_norm,
training=True):

    mean[c] = sum_{n,k} x[n, c, k] / (N K)          var[c] = sum_{n,k} (x[n, c, k] - mean[c])^2 / (N K)  (biased)
    x_hat   = (x - mean[c]) * inv_std[c]             out    = x_hat * weight[c] + bias[c]

and, with g the gradient of out, g_hat = g * weight and the means over the same N * K values,

    dx = inv_std * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))
    dweight = sum(g * x_hat)        dbias = sum(g)        so  mean(g_hat) = weight * dbias / (N K),
                                                              mean(g_hat * x_hat) = weight * dweight / (N K).

NumPy reduces over axes (0, 2, 3) with float32 sums and builds a full-size temporary per operator. The
kernels give each channel to one task (C tasks run in parallel above the work cutoff), which reads the channel's
values a few times while they are in cache: two passes for mean and variance, summed in float64 (a two-pass
variance: no cancellation of E[x^2] - E[x]^2), one to write x_hat and out; one pass for the two sums of the
backward, one to write dx. mean, var and inv_std = 1 / sqrt(var + eps) are computed in float64 and rounded
once to x's dtype; x_hat and out are then computed in x's dtype as the eval formula is, dx in float64 from
float64 per-channel terms. The twins compute the same values with NumPy reductions (float64 accumulators,
pairwise order): kernel and twin differ only by the order of the float64 sums, so by a unit in the last
place of x's dtype where a statistic rounds the other way.
"""
import numpy as np
from numba import njit, prange

from .attention import sum_float32
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


def _batch_norm_training(x, weight, bias, eps, x_hat, out, mean, var, inv_std):
    n_batch, channels, size = x.shape
    count = n_batch * size
    for c in prange(channels):
        total = np.float64(0.0)     # np.float64, not 0.0: under NUMBA_DISABLE_JIT a Python float + float32 is float32
        for n in range(n_batch):
            row = x[n, c]
            for k in range(size):
                total += row[k]
        centre = total / count
        squares = np.float64(0.0)
        for n in range(n_batch):
            row = x[n, c]
            for k in range(size):
                d = row[k] - centre
                squares += d * d
        spread = squares / count
        mean[c], var[c], inv_std[c] = centre, spread, 1.0 / np.sqrt(spread + eps)
        m, s, w, b = mean[c], inv_std[c], weight[c], bias[c]   # read back: rounded to x's dtype
        for n in range(n_batch):
            row_in, row_hat, row_out = x[n, c], x_hat[n, c], out[n, c]
            for k in range(size):
                v = (row_in[k] - m) * s
                row_hat[k] = v
                row_out[k] = v * w + b


batch_norm_training_kernel = ParallelKernel(_batch_norm_training)


def batch_norm_training(x, weight, bias, eps, keep_x_hat=True):
    """x (N, C, ...) C-contiguous with N * prod(...) > 1; weight, bias (C,) in x's dtype. Returns
    (out, x_hat, mean, var, inv_std): out and x_hat shaped as x, the rest (C,), all in x's dtype; var is
    biased. Without `keep_x_hat` x_hat is not written (returned as None) and out is the one full-size array."""
    channels = x.shape[1]
    out = np.empty_like(x)
    x_hat = np.empty_like(x) if keep_x_hat else out     # the kernel writes x_hat before out: sharing is safe
    mean, var, inv_std = (np.empty(channels, x.dtype) for _ in range(3))
    shape3 = (x.shape[0], channels, -1)
    with threads_for(x.size):
        batch_norm_training_kernel(x.reshape(shape3), weight, bias, float(eps), x_hat.reshape(shape3),
                                   out.reshape(shape3), mean, var, inv_std)
    return out, (x_hat if keep_x_hat else None), mean, var, inv_std


def batch_norm_training_reference(x, weight, bias, eps):
    axes, shape = (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)
    mean64, var64 = x.mean(axis=axes, dtype=np.float64), x.var(axis=axes, dtype=np.float64)
    mean, var, inv_std = (a.astype(x.dtype) for a in (mean64, var64, 1.0 / np.sqrt(var64 + eps)))
    x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
    return x_hat * weight.reshape(shape) + bias.reshape(shape), x_hat, mean, var, inv_std


def _batch_norm_training_backward(g, x_hat, inv_std, weight, dx, dweight, dbias):
    n_batch, channels, size = g.shape
    count = n_batch * size
    for c in prange(channels):
        sum_g, sum_gx = np.float64(0.0), np.float64(0.0)
        for n in range(n_batch):
            row_g, row_hat = g[n, c], x_hat[n, c]
            for k in range(size):
                sum_g += row_g[k]
                sum_gx += row_g[k] * row_hat[k]
        dbias[c], dweight[c] = sum_g, sum_gx
        w, s = weight[c], inv_std[c]
        mean_g_hat, mean_g_hat_x_hat = w * (sum_g / count), w * (sum_gx / count)     # float64
        for n in range(n_batch):
            row_g, row_hat, row_dx = g[n, c], x_hat[n, c], dx[n, c]
            for k in range(size):
                row_dx[k] = s * (row_g[k] * w - mean_g_hat - row_hat[k] * mean_g_hat_x_hat)


batch_norm_training_backward_kernel = ParallelKernel(_batch_norm_training_backward)


def batch_norm_training_backward(g, x_hat, inv_std, weight):
    """g, x_hat (N, C, ...) C-contiguous; inv_std, weight (C,), all in one dtype. Returns (dx, dweight, dbias)
    of the training-mode batch norm in that dtype."""
    channels = g.shape[1]
    dx = np.empty_like(g)
    dweight, dbias = np.empty(channels, g.dtype), np.empty(channels, g.dtype)
    shape3 = (g.shape[0], channels, -1)
    with threads_for(g.size):
        batch_norm_training_backward_kernel(g.reshape(shape3), x_hat.reshape(shape3), inv_std, weight,
                                            dx.reshape(shape3), dweight, dbias)
    return dx, dweight, dbias


def batch_norm_training_backward_reference(g, x_hat, inv_std, weight):
    axes, shape = (0,) + tuple(range(2, g.ndim)), (1, -1) + (1,) * (g.ndim - 2)
    count = g.size // g.shape[1]
    dbias, dweight = g.sum(axis=axes, dtype=np.float64), (g * x_hat).sum(axis=axes, dtype=np.float64)
    w = weight.reshape(shape)
    mean_g_hat, mean_g_hat_x_hat = (w * (a / count).reshape(shape) for a in (dbias, dweight))
    dx = inv_std.reshape(shape) * (g * w - mean_g_hat - x_hat * mean_g_hat_x_hat)
    return dx.astype(g.dtype), dweight.astype(g.dtype), dbias.astype(g.dtype)


# --------------------------------------------------------------------------------------------------
# Layer normalization (inference)
#
# torch.nn.functional.layer_norm over the last D values of each row, in float32 throughout (torch's CPU
# kernel accumulates float32 in float32 too, with a Welford cascade):
#
#     mean = sum(x) / D     var = sum((x - mean)^2) / D  (two passes, no E[x^2] - E[x]^2 cancellation)
#     out  = (x - mean) * rstd * weight + bias            rstd = 1 / sqrt(var + eps)
#
# The sums are reassociated (`sum_float32`, `_sum_squared_deviation`) so LLVM vectorises them; kernel and
# twin (NumPy's pairwise float32 sums) then differ by the order of float32 additions only. Rows run in
# parallel above the work cutoff, each writing its own row.


def _sum_squared_deviation(row, centre):
    total = np.float32(0.0)
    for k in range(row.shape[0]):
        d = row[k] - centre
        total += d * d
    return total


sum_squared_deviation = njit(cache=True, fastmath={"reassoc", "nsz"})(_sum_squared_deviation)


def _layer_norm_inference(x, weight, bias, eps, out):
    n_rows, size = x.shape
    inv_size = np.float32(1.0) / np.float32(size)
    for r in prange(n_rows):
        row_in, row_out = x[r], out[r]
        centre = sum_float32(row_in) * inv_size
        spread = sum_squared_deviation(row_in, centre) * inv_size
        rstd = np.float32(1.0) / np.sqrt(spread + eps)
        for k in range(size):
            row_out[k] = (row_in[k] - centre) * rstd * weight[k] + bias[k]


layer_norm_inference_kernel = ParallelKernel(_layer_norm_inference, error_model="numpy")


def layer_norm_inference(x, weight, bias, eps, out=None):
    """x (..., D) float32 C-contiguous, weight and bias (D,) float32. Returns out (new unless given)."""
    out = np.empty_like(x) if out is None else out
    size = x.shape[-1]
    with threads_for(x.size):
        layer_norm_inference_kernel(x.reshape(-1, size), weight, bias, np.float32(eps), out.reshape(-1, size))
    return out


def layer_norm_inference_reference(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) * (1 / np.sqrt(var + x.dtype.type(eps))) * weight + bias
