"""2-D convolution as a Function over the Numba kernels in `kernels/conv.py`.

out[n, o] = sum_{c in group(o)} sum_{i,j} x_pad[n, c, s*h + d*i, s*w + d*j] * weight[o, c, i, j] + bias[o]
"""
from ..autograd import Function
from ..kernels import conv as kernels


class Conv2d(Function):
    """torch.nn.functional.conv2d (zero padding); validation happens in `functional.conv2d`."""

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
        ctx.save_for_backward(x, weight)
        ctx.params = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        out = kernels.conv2d_forward(x, weight, stride, padding, dilation, groups)
        if bias is not None:
            out += bias.reshape(1, -1, 1, 1)
        return out

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved
        g = g if g.flags.c_contiguous else g.copy()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = kernels.conv2d_backward_input(g, weight, x.shape, *ctx.params)
        if ctx.needs_input_grad[1]:
            grad_w = kernels.conv2d_backward_weight(g, x, weight.shape, *ctx.params)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(axis=(0, 2, 3))
        return grad_x, grad_w, grad_b
