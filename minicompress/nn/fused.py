"""Inference fusion of a conv -> BatchNorm -> ReLU / ReLU6 chain of layers into one convolution kernel.

onnxruntime folds an eval BatchNorm into the conv before it and runs the ReLU in the conv's epilogue;
without that, each layer is one more full-size pass over memory (and one more allocation). Here the chain
runs as one kernel call (`functional.conv2d_fused_inference`): the conv's sum, then its bias, the batch
norm's affine map and the clamp, in the pass that writes each output block. Each step keeps the formula
and rounding of its layer, so the result has the bits of the layers run one by one.

`fused_conv_forward(conv, bn, activation, x)` returns that result, or None when the chain cannot be fused
and the caller must run the layers: a gradient is wanted (the kernel records no graph), a layer is not
the plain float layer (a quantized or QAT replacement), a forward hook would need the conv's or the
batch norm's output, the batch norm is training or has no running statistics, or its parameters have
another dtype. The conv's forward pre-hooks run as usual (pruning recomputes `weight` in one).
"""
import math

from .. import functional as F
from ..autograd import is_grad_enabled
from ..ops.norm import eval_affine
from .activation import ReLU, ReLU6
from .layers import BatchNorm2d, Conv2d

# The clamp (lo, hi) of each activation layer, the `clip` of the kernel's epilogue.
ACTIVATION_CLIPS = {ReLU: (0.0, math.inf), ReLU6: (0.0, 6.0)}


def _is_plain(module, kind):
    """module is exactly `kind` (not a fused or quantized replacement) and has no hooks to run."""
    return type(module) is kind and not module._forward_hooks and not module._forward_pre_hooks


def fusable(conv, bn=None, activation=None):
    """True when conv (-> bn) (-> activation) can run as one kernel in inference (see the module docstring;
    the input's dtype and rank are checked by `fused_conv_forward`)."""
    if type(conv) is not Conv2d or conv._forward_hooks:
        return False
    if bn is not None and not (_is_plain(bn, BatchNorm2d) and not bn.training and bn.running_mean is not None):
        return False
    return activation is None or any(_is_plain(activation, kind) for kind in ACTIVATION_CLIPS)


def activation_clip(activation):
    """The clamp (lo, hi) of a ReLU / ReLU6 layer, None for no activation."""
    return None if activation is None else ACTIVATION_CLIPS[type(activation)]


def batch_norm_affine(bn, dtype):
    """(mean, inv_std, gamma, beta) of an eval BatchNorm2d as arrays of `dtype`, or None when a
    parameter has another dtype (NumPy would promote, the fused kernel would not)."""
    tensors = [t for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias) if t is not None]
    if dtype.kind != "f" or any(t.data.dtype != dtype for t in tensors):
        return None
    return eval_affine(bn.running_mean.data, bn.running_var.data, None if bn.weight is None else bn.weight.data,
                       None if bn.bias is None else bn.bias.data, bn.eps, dtype)


def fused_conv_forward(conv, bn, activation, x):
    """activation(bn(conv(x))) (bn and activation may be None) as one kernel call, or None when the
    layers must run one by one (see the module docstring)."""
    if not fusable(conv, bn, activation):
        return None
    return fused_conv_clip_forward(conv, bn, activation_clip(activation), x)


def fused_conv_clip_forward(conv, bn, clip, x):
    """clamp(bn(conv(x)), *clip) (bn and clip may be None) as one kernel call, or None when the layers
    must run one by one; the activation given as its bounds (an imported graph's Relu or Clip node)."""
    if is_grad_enabled() or not fusable(conv, bn) or x.ndim != 4:
        return None
    norm = None
    if bn is not None:
        norm = batch_norm_affine(bn, x.dtype)
        if norm is None:
            return None
    args = (x,)
    for hook in list(conv._forward_pre_hooks.values()):
        result = hook(conv, args)
        if result is not None:
            args = result if isinstance(result, tuple) else (result,)
    return F.conv2d_fused_inference(args[0], conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation,
                                    conv.groups, norm=norm, clip=clip)
