"""Ops that move or select data without arithmetic: reshape, transpose, permute, index, cat,
stack, expand, pad. Each backward moves the gradient back the same way."""
import numpy as np

from ..autograd import Function


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)


class Permute(Function):
    """Reorder axes; the backward applies the inverse permutation."""

    @staticmethod
    def forward(ctx, a, dims):
        ctx.inverse = tuple(np.argsort(dims))
        return np.transpose(a, dims)

    @staticmethod
    def backward(ctx, g):
        return np.transpose(g, ctx.inverse)


class Contiguous(Function):
    """A C-contiguous copy (kernels need one); the gradient passes through."""

    @staticmethod
    def forward(ctx, a):
        return np.ascontiguousarray(a)

    @staticmethod
    def backward(ctx, g):
        return g


class Expand(Function):
    """Broadcast to a larger shape; the engine sums the gradient back."""

    @staticmethod
    def forward(ctx, a, shape):
        return np.broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        return g


class GetItem(Function):
    """a[index] for basic and advanced indexing; the backward scatter-adds (repeated indices add up)."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx, g):
        grad = np.zeros(ctx.shape, dtype=g.dtype)
        np.add.at(grad, ctx.index, g)
        return grad


class TakeAlongDim(Function):
    """np.take_along_axis (torch.gather's cousin); the backward puts the gradient back in place."""

    @staticmethod
    def forward(ctx, a, indices, dim):
        ctx.shape, ctx.indices, ctx.dim = a.shape, indices, dim
        return np.take_along_axis(a, indices, axis=dim)

    @staticmethod
    def backward(ctx, g):
        grad = np.zeros(ctx.shape, dtype=g.dtype)
        np.put_along_axis(grad, ctx.indices, g, axis=ctx.dim)
        return grad


class Cat(Function):
    """Concatenate along `dim`; the backward splits the gradient at the same offsets."""

    @staticmethod
    def forward(ctx, *arrays, dim=0):
        ctx.dim = dim
        ctx.offsets = np.cumsum([a.shape[dim] for a in arrays])[:-1]
        return np.concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        return tuple(np.split(g, ctx.offsets, axis=ctx.dim))


class Stack(Function):
    """Stack along a new axis `dim`."""

    @staticmethod
    def forward(ctx, *arrays, dim=0):
        ctx.dim = dim
        return np.stack(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        return tuple(np.moveaxis(g, ctx.dim, 0))


class Pad(Function):
    """Constant padding; `pad` is torch's order (last dim first: (left, right, top, bottom, ...))."""

    @staticmethod
    def forward(ctx, a, pad, value=0.0):
        widths = [(0, 0)] * a.ndim
        for i in range(len(pad) // 2):
            widths[a.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
        ctx.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, a.shape))
        return np.pad(a, widths, constant_values=value)

    @staticmethod
    def backward(ctx, g):
        return g[ctx.slices]
