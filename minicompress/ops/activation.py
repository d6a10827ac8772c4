"""Activations and the softmax family, each with its derivative beside it."""
import math

import numpy as np

from ..autograd import Function
from ..kernels.gelu import gelu as gelu_kernel
from ..kernels.special import erf


class ReLU(Function):
    """max(x, 0);  d/dx = 1 where x > 0, else 0."""

    @staticmethod
    def forward(ctx, x):
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(x > 0)
        return np.maximum(x, 0).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (positive,) = ctx.saved
        return g * positive


class Hardtanh(Function):
    """clamp(x, lo, hi) (ReLU6 is lo=0, hi=6);  d/dx = 1 where lo < x < hi (exclusive, as torch)."""

    @staticmethod
    def forward(ctx, x, min_val=-1.0, max_val=1.0):
        ctx.save_for_backward((x > min_val) & (x < max_val))
        return np.clip(x, min_val, max_val).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved
        return g * inside


class LeakyReLU(Function):
    """x if x > 0 else slope * x;  d/dx = 1 or slope."""

    @staticmethod
    def forward(ctx, x, negative_slope=0.01):
        ctx.save_for_backward(x > 0)
        ctx.slope = negative_slope
        return np.where(x > 0, x, x * x.dtype.type(negative_slope))

    @staticmethod
    def backward(ctx, g):
        (positive,) = ctx.saved
        return np.where(positive, g, g * g.dtype.type(ctx.slope))


class ELU(Function):
    """x if x > 0 else alpha (exp(x) - 1);  d/dx = 1 or alpha exp(x)."""

    @staticmethod
    def forward(ctx, x, alpha=1.0):
        negative_part = x.dtype.type(alpha) * np.expm1(np.minimum(x, 0))
        ctx.save_for_backward(x, negative_part)
        ctx.alpha = alpha
        return np.where(x > 0, x, negative_part)

    @staticmethod
    def backward(ctx, g):
        x, negative_part = ctx.saved
        return np.where(x > 0, g, g * (negative_part + x.dtype.type(ctx.alpha)))


class GELU(Function):
    """x Phi(x) with Phi the standard normal CDF ('none'), or torch's tanh approximation ('tanh').

    d/dx = Phi(x) + x phi(x) for the exact form.
    """

    @staticmethod
    def forward(ctx, x, approximate="none"):
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        if x.dtype == np.float32 and x.flags.c_contiguous:
            return gelu_kernel(x, approximate)       # one vectorised pass (kernels/gelu.py)
        if approximate == "tanh":
            inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
            return (0.5 * x * (1 + np.tanh(inner))).astype(x.dtype, copy=False)
        return (0.5 * x * (1 + erf(x * x.dtype.type(1 / math.sqrt(2))))).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        if ctx.approximate == "tanh":
            k = math.sqrt(2 / math.pi)
            t = np.tanh(k * (x + 0.044715 * x ** 3))
            d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
            return g * d.astype(x.dtype, copy=False)
        cdf = 0.5 * (1 + erf(x * x.dtype.type(1 / math.sqrt(2))))
        pdf = np.exp(-0.5 * x * x) * x.dtype.type(1 / math.sqrt(2 * math.pi))
        return g * (cdf + x * pdf)


class Sigmoid(Function):
    """1 / (1 + exp(-x));  d/dx = s (1 - s). Computed without overflow for large |x|."""

    @staticmethod
    def forward(ctx, x):
        e = np.exp(-np.abs(x))
        out = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved
        return g * s * (1 - s)


class Tanh(Function):
    """tanh(x);  d/dx = 1 - tanh(x)^2."""

    @staticmethod
    def forward(ctx, x):
        out = np.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (t,) = ctx.saved
        return g * (1 - t * t)


def softmax_array(x, dim):
    shifted = x - x.max(axis=dim, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=dim, keepdims=True)


def log_softmax_array(x, dim):
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


class Softmax(Function):
    """exp(x_i) / sum_j exp(x_j) along dim;  dL/dx = s (g - sum(g s))."""

    @staticmethod
    def forward(ctx, x, dim):
        out = softmax_array(x, dim)
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved
        return s * (g - (g * s).sum(axis=ctx.dim, keepdims=True))


class LogSoftmax(Function):
    """x_i - log sum_j exp(x_j) along dim;  dL/dx = g - softmax(x) sum(g)."""

    @staticmethod
    def forward(ctx, x, dim):
        out = log_softmax_array(x, dim)
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g):
        (log_s,) = ctx.saved
        return g - np.exp(log_s) * g.sum(axis=ctx.dim, keepdims=True)
