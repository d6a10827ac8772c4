"""Fused layers: a conv -> BatchNorm -> ReLU / ReLU6 chain run as one convolution kernel in inference, the
fused layer classes quantization works on (`ConvReLU2d`, `ConvBn2d`, `ConvBnReLU2d`, `LinearReLU`, as torch's
`nn.intrinsic`), and batch-norm folding (`fuse_conv_bn_eval`, `fuse_conv_bn_weights`).

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
import copy
import math

import numpy as np

from .. import functional as F
from ..autograd import is_grad_enabled
from ..ops.norm import eval_affine
from .activation import ReLU, ReLU6
from .containers import Sequential
from .layers import BatchNorm1d, BatchNorm2d, Conv2d, Identity, Linear
from .module import Parameter

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


class _FusedModule(Sequential):
    """A run of float layers kept together so that quantization treats them as one (torch's
    `torch.ao.nn.intrinsic._FusedModule`); forward runs them in order."""


class _FusedConv(_FusedModule):
    """conv (-> bn) (-> relu): in inference without grad, one convolution kernel with the rest in its
    output pass (`nn.fused`, the same bits as the layers in order); otherwise the layers in order."""

    def _chain(self):
        raise NotImplementedError

    def forward(self, x):
        out = fused_conv_forward(*self._chain(), x)
        return super().forward(x) if out is None else out


class ConvReLU2d(_FusedConv):
    def __init__(self, conv, relu):
        super().__init__(conv, relu)

    def _chain(self):
        return self[0], None, self[1]


class LinearReLU(_FusedModule):
    def __init__(self, linear, relu):
        super().__init__(linear, relu)


class ConvBn2d(_FusedConv):
    def __init__(self, conv, bn):
        super().__init__(conv, bn)

    def _chain(self):
        return self[0], self[1], None


class ConvBnReLU2d(_FusedConv):
    def __init__(self, conv, bn, relu):
        super().__init__(conv, bn, relu)

    def _chain(self):
        return self[0], self[1], self[2]


def fuse_conv_bn_weights(weight, bias, running_mean, running_var, eps, gamma, beta):
    """(W', b') of eval-mode batch norm folded into a conv or linear layer y = W x + b (arrays):

        W' = W * gamma / sqrt(var + eps)            (scaled per output channel)
        b' = (b - mean) * gamma / sqrt(var + eps) + beta

    as torch.nn.utils.fusion.fuse_conv_bn_weights / fuse_linear_bn_weights.

    weight: (C_out, ...), bias: (C_out,) or None; the BN arrays: (C_out,). Computed in float32 as torch.
    """
    weight = np.asarray(weight, np.float32)
    bias = np.zeros(weight.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)
    gamma = np.ones_like(running_mean) if gamma is None else gamma
    beta = np.zeros_like(running_mean) if beta is None else beta
    rsqrt = (np.float32(1) / np.sqrt(running_var + np.float32(eps))).astype(np.float32)
    fused_weight = weight * (gamma * rsqrt).reshape((-1,) + (1,) * (weight.ndim - 1))
    fused_bias = (bias - running_mean) * rsqrt * gamma + beta          # torch's order of float32 operations
    return fused_weight.astype(np.float32), fused_bias.astype(np.float32)


def fuse_conv_bn_eval(conv, bn):
    """A copy of `conv` (Conv2d or Linear) with eval-mode `bn` folded into its weight and bias."""
    if conv.training or bn.training:
        raise ValueError("folding batch norm needs eval mode (call model.eval() first, or use fuse_modules_qat)")
    if bn.running_mean is None:
        raise ValueError("folding batch norm needs its running statistics (track_running_stats=True)")
    if bn.num_features != conv.weight.shape[0]:
        raise ValueError(f"batch norm has {bn.num_features} features but the layer has {conv.weight.shape[0]} outputs")
    fused = copy.deepcopy(conv)
    weight, bias = fuse_conv_bn_weights(
        conv.weight.data, None if conv.bias is None else conv.bias.data, bn.running_mean.data, bn.running_var.data,
        bn.eps, None if bn.weight is None else bn.weight.data, None if bn.bias is None else bn.bias.data)
    fused.weight = Parameter(weight)
    fused.bias = Parameter(bias)
    return fused


def fuse_known_modules(mods, is_qat=False):
    """The fused module for the run `mods`, followed by Identity for each of the others."""
    types = tuple(type(m) for m in mods)
    if types == (Conv2d, BatchNorm2d, ReLU):
        fused = ConvBnReLU2d(*mods) if is_qat else ConvReLU2d(fuse_conv_bn_eval(mods[0], mods[1]), mods[2])
    elif types == (Conv2d, BatchNorm2d):
        fused = ConvBn2d(*mods) if is_qat else fuse_conv_bn_eval(*mods)
    elif types == (Conv2d, ReLU):
        fused = ConvReLU2d(*mods)
    elif types == (Linear, ReLU):
        fused = LinearReLU(*mods)
    elif types == (Linear, BatchNorm1d) and not is_qat:
        fused = fuse_conv_bn_eval(*mods)
    else:
        raise ValueError(f"cannot fuse the sequence {[t.__name__ for t in types]}; supported: conv+bn, conv+bn+relu, "
                         f"conv+relu, linear+relu, linear+bn1d (eval)")
    fused.train(mods[0].training)
    return [fused] + [Identity() for _ in mods[1:]]


def replace_submodule(model, target, module):
    """Put `module` in place of the submodule named `target`, keeping its position among its siblings
    (Sequential runs its children in that order)."""
    parent_name, _, child = target.rpartition(".")
    parent = model.get_submodule(parent_name)
    if child not in parent._modules:
        raise ValueError(f"{target!r} is not a submodule of the model")
    parent._modules[child] = module
