"""Reductions over one or more dimensions, with torch's `dim` / `keepdim` arguments."""
import numpy as np

from ..autograd import Function


def normalize_dims(dim, ndim):
    """`dim` (None, int or sequence) as a sorted tuple of non-negative axes; validates the range."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise ValueError(f"dim={d} is out of range for a tensor with {ndim} dimensions")
        out.append(int(d) % max(ndim, 1))
    return tuple(sorted(set(out)))


def _expand_back(g, shape, dims, keepdim):
    """Reshape a reduced gradient so it broadcasts against the input shape."""
    if not keepdim:
        g = np.expand_dims(g, dims) if dims else g
    return np.broadcast_to(g, shape)


class Sum(Function):
    """sum over dims;  the gradient is the output gradient broadcast back."""

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        dims = normalize_dims(dim, a.ndim) if a.ndim else ()
        ctx.shape, ctx.dims, ctx.keepdim = a.shape, dims, keepdim
        return np.asarray(a.sum(axis=dims, keepdims=keepdim), dtype=a.dtype)

    @staticmethod
    def backward(ctx, g):
        return _expand_back(g, ctx.shape, ctx.dims, ctx.keepdim)


class Mean(Function):
    """mean over dims;  d/da = 1/n broadcast back."""

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        dims = normalize_dims(dim, a.ndim) if a.ndim else ()
        ctx.shape, ctx.dims, ctx.keepdim = a.shape, dims, keepdim
        ctx.count = int(np.prod([a.shape[d] for d in dims])) if dims else 1
        return np.asarray(a.mean(axis=dims, keepdims=keepdim), dtype=a.dtype)

    @staticmethod
    def backward(ctx, g):
        return _expand_back(g / ctx.count, ctx.shape, ctx.dims, ctx.keepdim)


def _variance(a, dim, keepdim, correction):
    """(centered input, variance, reduced dims, denominator n - correction)."""
    dims = normalize_dims(dim, a.ndim) if a.ndim else ()
    count = int(np.prod([a.shape[d] for d in dims])) if dims else 1
    centered = a - a.mean(axis=dims, keepdims=True)
    denominator = max(count - correction, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (centered * centered).sum(axis=dims, keepdims=keepdim) / denominator
    return centered, np.asarray(var, dtype=a.dtype), dims, denominator


class Var(Function):
    """var over dims with `correction` (1 = unbiased, torch's default);
    d/da = 2 (a - mean) / (n - correction)."""

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False, correction=1):
        centered, var, ctx.dims, ctx.denominator = _variance(a, dim, keepdim, correction)
        ctx.save_for_backward(centered)
        ctx.keepdim = keepdim
        return var

    @staticmethod
    def backward(ctx, g):
        (centered,) = ctx.saved
        g = g if ctx.keepdim or not ctx.dims else np.expand_dims(g, ctx.dims)
        return g * 2 * centered / ctx.denominator


class Std(Function):
    """sqrt(var);  d/da = (a - mean) / ((n - correction) std), 0 where std == 0 (as torch)."""

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False, correction=1):
        centered, var, ctx.dims, ctx.denominator = _variance(a, dim, keepdim, correction)
        std = np.sqrt(var)
        ctx.save_for_backward(centered, std)
        ctx.keepdim = keepdim
        return std

    @staticmethod
    def backward(ctx, g):
        centered, std = ctx.saved
        if not ctx.keepdim and ctx.dims:
            g, std = np.expand_dims(g, ctx.dims), np.expand_dims(std, ctx.dims)
        with np.errstate(divide="ignore", invalid="ignore"):
            grad = g * centered / (std * ctx.denominator)
        return np.where(std == 0, 0, grad)


class Max(Function):
    """max over dims (values only). The gradient goes to the maximal entries, split evenly among
    ties, as torch's `amax`."""

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False, mode="max"):
        if a.size == 0:
            raise ValueError(f"{mode}(): cannot reduce an empty tensor")
        dims = normalize_dims(dim, a.ndim) if a.ndim else ()
        reducer = np.max if mode == "max" else np.min
        out = reducer(a, axis=dims, keepdims=True)
        hit = (a == out)
        ctx.save_for_backward(hit / hit.sum(axis=dims, keepdims=True))
        ctx.dims, ctx.keepdim = dims, keepdim
        return out if keepdim else np.asarray(out.squeeze(axis=dims) if dims else out)

    @staticmethod
    def backward(ctx, g):
        (share,) = ctx.saved
        g = g if ctx.keepdim or not ctx.dims else np.expand_dims(g, ctx.dims)
        return None if share is None else g * share


def argmax(a, dim=None, keepdim=False):
    """Index of the maximum (no gradient), as torch.argmax: flat index when dim is None."""
    if dim is None:
        return np.asarray(np.argmax(a))
    return np.argmax(a, axis=dim, keepdims=keepdim)
