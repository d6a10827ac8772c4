"""2-D convolution as a Function over the Numba kernels in `kernels/conv.py`.

out[n, o] = sum_{c in group(o)} sum_{i,j} x_pad[n, c, s*h + d*i, s*w + d*j] * weight[o, c, i, j] + bias[o]
"""
import numpy as np

from ..autograd import Function
from ..kernels import conv as kernels


class Conv2d(Function):
    """torch.nn.functional.conv2d (zero padding); validation happens in `functional.conv2d`."""

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
        ctx.save_for_backward(x, weight)
        ctx.params = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        # the bias is added in the kernel's output pass (the same sum, rounded the same way)
        return kernels.conv2d_forward(x, weight, stride, padding, dilation, groups, kernels.Epilogue(bias=bias))

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


def conv2d_inference(x, weight, bias, stride, padding, dilation, groups, norm=None, clip=None):
    """clip(batch_norm(conv2d(x, weight, bias))) on arrays, in one kernel (no graph is recorded): the
    conv -> BatchNorm (eval) -> ReLU/ReLU6/Clip of an inference forward, each step applied in the pass
    that writes the conv's output (`kernels.conv.Epilogue`), with the bits of the layers run one by one.

    x (N, C, H, W) C-contiguous, weight (O, C / groups, kh, kw), bias (O,) or None, all one float dtype;
    norm = (mean, inv_std, gamma, beta) (O,) or None; clip = (lo, hi) or None. Returns (N, O, Ho, Wo)."""
    return kernels.conv2d_forward(x, weight, stride, padding, dilation, groups, kernels.Epilogue(bias, norm, clip))


class ConvTranspose2d(Function):
    """torch.nn.functional.conv_transpose2d: the adjoint of `Conv2d` with respect to its input.

    With weight (C_in, C_out / groups, kh, kw) read as a convolution weight (O = C_in, C/groups = C_out / groups),
    the full (unpadded) result is the convolution's input gradient on H_full = (H - 1) s + d (kh - 1) + 1 rows;
    the output is its window [begin, begin + H_out), zero where the window runs past H_full (output_padding
    larger than the padding). torch's H_out = (H - 1) s - 2 p + d (kh - 1) + output_padding + 1 with begin = p;
    ONNX's asymmetric pads give begin = pads_begin. The backward is the convolution itself (d/dx) and the
    convolution's weight gradient with input and output swapped (d/dweight), both on the full window.
    """

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=(1, 1), dilation=(1, 1), groups=1, begin=(0, 0), out_size=None):
        n, _, h, w = x.shape
        kh, kw = weight.shape[2:]
        full = (n, weight.shape[1] * groups, (h - 1) * stride[0] + dilation[0] * (kh - 1) + 1,
                (w - 1) * stride[1] + dilation[1] * (kw - 1) + 1)
        out_size = full[2:] if out_size is None else tuple(out_size)
        ctx.save_for_backward(x, weight)
        ctx.params = (stride, (0, 0), dilation, groups)
        ctx.has_bias = bias is not None
        ctx.window = _crop_window(full[2:], begin, out_size)
        ctx.full = full
        x = x if x.flags.c_contiguous else x.copy()
        result = kernels.conv2d_backward_input(x, weight, full, stride, (0, 0), dilation, groups)
        if tuple(begin) == (0, 0) and out_size == full[2:]:
            out = result                     # the window is the whole result (a fresh array): no copy
        else:
            out = np.zeros(full[:2] + out_size, dtype=result.dtype)
            src, dst = ctx.window
            out[dst] = result[src]
        if bias is not None:
            out += bias.reshape(1, -1, 1, 1)
        return out

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved
        src, dst = ctx.window
        g_full = np.zeros(ctx.full, dtype=g.dtype)
        g_full[src] = g[dst]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = kernels.conv2d_forward(g_full, weight, *ctx.params)
        if ctx.needs_input_grad[1]:
            grad_w = kernels.conv2d_backward_weight(x if x.flags.c_contiguous else x.copy(), g_full, weight.shape,
                                                    *ctx.params)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(axis=(0, 2, 3))
        return grad_x, grad_w, grad_b


def _crop_window(full_size, begin, out_size):
    """Index tuples (into the full result, into the output) of the rows/columns both share."""
    src, dst = [slice(None), slice(None)], [slice(None), slice(None)]
    for full, b, size in zip(full_size, begin, out_size):
        lo, hi = max(b, 0), min(b + size, full)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - b, lo - b + max(hi - lo, 0)))
    return tuple(src), tuple(dst)
