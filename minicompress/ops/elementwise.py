"""Elementwise ops with NumPy broadcasting. Gradients are returned in the broadcast shape;
the autograd engine sums them back to each input's shape.

Derived ops (subtraction, division, square root, ...) that are cheap to express through these
primitives still get their own Function when that keeps the backward exact and short.
"""
import numpy as np

from ..autograd import Function


class Add(Function):
    """a + b;  d/da = 1, d/db = 1."""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    """a - b;  d/da = 1, d/db = -1."""

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, -g


class Mul(Function):
    """a * b;  d/da = b, d/db = a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        return (g * b if ctx.needs_input_grad[0] else None,
                g * a if ctx.needs_input_grad[1] else None)


class Div(Function):
    """a / b;  d/da = 1/b, d/db = -a/b^2."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        return (g / b if ctx.needs_input_grad[0] else None,
                -g * a / (b * b) if ctx.needs_input_grad[1] else None)


class Pow(Function):
    """a ** b;  d/da = b a^(b-1), d/db = a^b log(a) (torch's convention: 0 where a == 0)."""

    @staticmethod
    def forward(ctx, a, b):
        out = np.power(a, b)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = g * b * np.power(a, b - 1)
            grad_a = np.where(np.asarray(b) == 0, 0, grad_a).astype(g.dtype, copy=False)
        if ctx.needs_input_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                grad_b = np.where(a == 0, 0, g * out * np.log(np.where(a == 0, 1, a)))
        return grad_a, grad_b


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    """exp(a);  d/da = exp(a)."""

    @staticmethod
    def forward(ctx, a):
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        return g * out


class Log(Function):
    """log(a);  d/da = 1/a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        return g / a


def _xlogy(x, y):
    """x log y, 0 where x == 0 unless y is NaN (torch.xlogy)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = x * np.log(y)
    return np.where((x == 0) & ~np.isnan(y), np.zeros((), out.dtype), out)


class Xlogy(Function):
    """x log y, as torch.xlogy: 0 where x == 0 (even for y == 0), NaN where y is NaN, and x log y
    elsewhere (so NaN for x != 0, y < 0).  d/dx = xlogy(x != 0, y), d/dy = x / y (torch's formulas:
    d/dy is NaN at x == y == 0, as there)."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return _xlogy(x, y)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_x = g * _xlogy((x != 0).astype(g.dtype), y)
        if ctx.needs_input_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                grad_y = g * x / y
        return grad_x, grad_y


class Sqrt(Function):
    """sqrt(a);  d/da = 1 / (2 sqrt(a))."""

    @staticmethod
    def forward(ctx, a):
        out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        return g / (2 * out)


class Abs(Function):
    """|a|;  d/da = sign(a) (0 at 0, as torch)."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.abs(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        return g * np.sign(a)


class Clamp(Function):
    """clamp(a, min, max);  gradient 1 where min <= a <= max (inclusive, as torch), else 0."""

    @staticmethod
    def forward(ctx, a, min=None, max=None):
        keep = np.ones(a.shape, dtype=bool)
        out = a
        if min is not None:
            keep &= a >= min
            out = np.maximum(out, np.asarray(min, dtype=a.dtype))
        if max is not None:
            keep &= a <= max
            out = np.minimum(out, np.asarray(max, dtype=a.dtype))
        ctx.save_for_backward(keep)
        return np.array(out, dtype=a.dtype, copy=True) if out is a else out

    @staticmethod
    def backward(ctx, g):
        (keep,) = ctx.saved
        return g * keep


class Where(Function):
    """where(condition, a, b): the gradient flows to the chosen side only."""

    @staticmethod
    def forward(ctx, condition, a, b):
        ctx.save_for_backward(condition)
        return np.where(condition, a, b)

    @staticmethod
    def backward(ctx, g):
        (condition,) = ctx.saved
        return None, np.where(condition, g, 0), np.where(condition, 0, g)


class Maximum(Function):
    """maximum(a, b); on ties the gradient is split evenly, as torch."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        share_a = (a > b) + 0.5 * (a == b)
        return g * share_a, g * (1 - share_a)


class Minimum(Function):
    """minimum(a, b); on ties the gradient is split evenly, as torch."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        share_a = (a < b) + 0.5 * (a == b)
        return g * share_a, g * (1 - share_a)
