"""Pooling Functions over the Numba kernels in `kernels/pool.py`."""
from ..autograd import Function
from ..kernels import pool as kernels


class MaxPool2d(Function):
    """Window maximum; the gradient goes to the position that won (first maximum, as torch)."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        out, indices = kernels.max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.indices, ctx.shape = indices, x.shape
        return out

    @staticmethod
    def backward(ctx, g):
        return kernels.max_pool2d_backward(g.copy() if not g.flags.c_contiguous else g, ctx.indices, ctx.shape)


class AvgPool2d(Function):
    """Window mean with torch's divisor rules (count_include_pad, divisor_override, ceil_mode)."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        ctx.shape = x.shape
        ctx.params = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        return kernels.avg_pool2d_forward(x, *ctx.params)

    @staticmethod
    def backward(ctx, g):
        return kernels.avg_pool2d_backward(g.copy() if not g.flags.c_contiguous else g, ctx.shape, *ctx.params)


class AdaptiveAvgPool2d(Function):
    """Mean over windows [floor(i H / oh), ceil((i + 1) H / oh)), as torch."""

    @staticmethod
    def forward(ctx, x, output_size):
        ctx.shape = x.shape
        return kernels.adaptive_avg_pool2d_forward(x, output_size)

    @staticmethod
    def backward(ctx, g):
        return kernels.adaptive_avg_pool2d_backward(g.copy() if not g.flags.c_contiguous else g, ctx.shape)
