"""Batch normalization and layer normalization, forward and backward.

Both normalise x_hat = (x - mean) / sqrt(var + eps) (biased variance) and apply y = x_hat * w + b.
With N the number of values each statistic covers, the input gradient is

    dx = (1 / sqrt(var + eps)) * (dxhat - mean(dxhat) - x_hat * mean(dxhat * x_hat)),  dxhat = g * w.

BatchNorm runs the kernels of kernels/norm.py where they apply (`_kernels_apply`): one pass in evaluation
without grad, one task per channel for the batch statistics and the backward in training; LayerNorm runs
its float32 kernel without grad. The NumPy expressions here are the path for every other input.
"""
import numpy as np

from ..autograd import Function
from ..kernels.norm import (
    batch_norm_inference,
    batch_norm_training,
    batch_norm_training_backward,
    layer_norm_inference,
)


def _normalized_backward(g_hat, x_hat, inv_std, axes):
    return inv_std * (g_hat - g_hat.mean(axis=axes, keepdims=True)
                      - x_hat * (g_hat * x_hat).mean(axis=axes, keepdims=True))


def _kernels_apply(x, *operands):
    """The kernels of kernels/norm.py compute in x's dtype: they apply to a C-contiguous float32 / float64 x
    of 2 or more dims when every operand (None skipped) already has that dtype (otherwise NumPy would
    promote, and the result would round differently)."""
    return (x.dtype in (np.float32, np.float64) and x.flags.c_contiguous and x.ndim >= 2
            and all(t is None or t.dtype == x.dtype for t in operands))


def _update_running(running_mean, running_var, mean, var, momentum, count):
    """torch's update of the running buffers (in place): running = (1 - momentum) * running + momentum * batch,
    with the unbiased variance var * count / (count - 1)."""
    if running_mean is not None:
        running_mean *= 1 - momentum
        running_mean += momentum * mean
    if running_var is not None:
        running_var *= 1 - momentum
        running_var += momentum * var * count / (count - 1)


def eval_affine(mean, var, weight, bias, eps, dtype):
    """(mean, inv_std, gamma, beta) of an evaluation-mode batch norm in `dtype`, inv_std = 1 / sqrt(var + eps)
    computed as the autograd path does (missing gamma / beta are ones / zeros): the operands of the
    one-pass kernel and of a convolution's fused epilogue (`kernels.conv.Epilogue`)."""
    inv_std = (1.0 / np.sqrt(var + eps)).astype(dtype)
    w = np.ones(mean.shape[0], dtype) if weight is None else weight
    b = np.zeros(mean.shape[0], dtype) if bias is None else bias
    return mean, inv_std, w, b


def _one_pass(x, mean, var, weight, bias, eps, relu, out):
    """The evaluation formula through the one-pass kernel, inv_std computed as the autograd path does."""
    mean, inv_std, w, b = eval_affine(mean, var, weight, bias, eps, x.dtype)
    return batch_norm_inference(x, mean, inv_std, w, b, relu=relu, out=out)


class BatchNorm(Function):
    """torch.nn.functional.batch_norm over dim 1 of (N, C, ...).

    Training: batch statistics, and the running buffers updated in place with
    running = (1 - momentum) * running + momentum * batch (unbiased variance), as torch.
    Evaluation: the running statistics, which are constants for the backward.
    """

    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight=None, bias=None,
                training=False, momentum=0.1, eps=1e-5):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if training:
            count = x.size // x.shape[1]
            if count <= 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input of shape {x.shape}")
            if _kernels_apply(x, weight, bias):
                # Statistics, x_hat and out with one task per channel (kernels/norm.py).
                w = np.ones(x.shape[1], x.dtype) if weight is None else weight
                b = np.zeros(x.shape[1], x.dtype) if bias is None else bias
                needs_grad = any(ctx.needs_input_grad)
                out, x_hat, mean, var, inv_std = batch_norm_training(x, w, b, eps, keep_x_hat=needs_grad)
                _update_running(running_mean, running_var, mean, var, momentum, count)
                if needs_grad:
                    ctx.save_for_backward(x_hat, inv_std.reshape(shape), w.reshape(shape))
                    ctx.axes, ctx.training = axes, training
                return out
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            _update_running(running_mean, running_var, mean, var, momentum, count)
        else:
            mean, var = running_mean, running_var
            if not any(ctx.needs_input_grad) and _kernels_apply(x, mean, weight, bias):
                # Nothing to save for a backward: the same arithmetic in one pass (kernels/norm.py).
                return _one_pass(x, mean, var, weight, bias, eps, relu=False, out=None)
        inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype).reshape(shape)
        x_hat = (x - mean.reshape(shape).astype(x.dtype)) * inv_std
        w = np.ones(x.shape[1], x.dtype) if weight is None else weight
        out = x_hat * w.reshape(shape)
        if bias is not None:
            out = out + bias.reshape(shape)
        ctx.save_for_backward(x_hat, inv_std, w.reshape(shape))
        ctx.axes, ctx.training = axes, training
        return out.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x_hat, inv_std, w = ctx.saved
        if ctx.training and _kernels_apply(x_hat, g, w):
            # Both sums and dx with one task per channel (kernels/norm.py).
            dx, dw, db = batch_norm_training_backward(np.ascontiguousarray(g), x_hat, inv_std.reshape(-1),
                                                      w.reshape(-1))
            dw = dw if ctx.needs_input_grad[3] else None
            db = db if len(ctx.needs_input_grad) > 4 and ctx.needs_input_grad[4] else None
            return dx, None, None, dw, db
        g_hat = g * w
        if ctx.training:
            dx = _normalized_backward(g_hat, x_hat, inv_std, ctx.axes)
        else:
            dx = g_hat * inv_std
        dw = (g * x_hat).sum(axis=ctx.axes) if ctx.needs_input_grad[3] else None
        db = g.sum(axis=ctx.axes) if len(ctx.needs_input_grad) > 4 and ctx.needs_input_grad[4] else None
        return dx, None, None, dw, db


class LayerNorm(Function):
    """torch.nn.functional.layer_norm over the trailing `len(normalized_shape)` dims."""

    @staticmethod
    def forward(ctx, x, normalized_shape, weight=None, bias=None, eps=1e-5):
        axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
        if not any(ctx.needs_input_grad) and x.dtype == np.float32 and _kernels_apply(x, weight, bias):
            # Nothing to save for a backward: one task per row in float32 (kernels/norm.py).
            size = int(np.prod(normalized_shape))
            w = np.ones(size, x.dtype) if weight is None else np.ascontiguousarray(weight).reshape(-1)
            b = np.zeros(size, x.dtype) if bias is None else np.ascontiguousarray(bias).reshape(-1)
            return layer_norm_inference(x.reshape(-1, size), w, b, eps).reshape(x.shape)
        mean = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True)
        inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
        x_hat = (x - mean) * inv_std
        out = x_hat if weight is None else x_hat * weight
        if bias is not None:
            out = out + bias
        ctx.save_for_backward(x_hat, inv_std, weight)
        ctx.axes = axes
        return out.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x_hat, inv_std, weight = ctx.saved
        g_hat = g if weight is None else g * weight
        dx = _normalized_backward(g_hat, x_hat, inv_std, ctx.axes)
        lead = tuple(range(g.ndim - len(ctx.axes)))
        dw = (g * x_hat).sum(axis=lead) if weight is not None else None
        db = g.sum(axis=lead) if len(ctx.needs_input_grad) > 3 and ctx.needs_input_grad[3] else None
        return dx, None, dw, db
