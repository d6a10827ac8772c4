"""Module fusion and batch-norm folding, as `torch.ao.quantization.fuse_modules` / `fuse_modules_qat`.

Fusing merges a run of layers into one so that the integer model computes them in one kernel and
quantizes once: conv -> bn -> relu becomes a single integer conv with a ReLU clamp, instead of three
layers with a rounding between each.

Folding batch norm (eval mode) into the preceding conv or linear layer: BN computes
gamma * (y - mean) / sqrt(var + eps) + beta on y = W x + b, which is again affine in x:

    W' = W * gamma / sqrt(var + eps)            (scaled per output channel)
    b' = (b - mean) * gamma / sqrt(var + eps) + beta

(torch.nn.utils.fusion.fuse_conv_bn_weights / fuse_linear_bn_weights). Supported runs:

    fuse_modules (eval, BN folded)     conv+bn -> Conv2d, conv+bn+relu -> ConvReLU2d, conv+relu -> ConvReLU2d,
                                       linear+bn1d -> Linear, linear+relu -> LinearReLU
    fuse_modules_qat (training)        conv+bn -> ConvBn2d, conv+bn+relu -> ConvBnReLU2d (BN kept; prepare_qat
                                       turns them into qat.ConvBn2d, which folds on the fly), the rest as above

The first name of each run receives the fused module; the others become Identity.

`fuse_mobile_classifier(model)` finds the runs in the model's traced graph (`graph.fuse`: a run is a chain
of the data flow, whatever the registration order). `find_fusable_patterns(model)` is the older, eager
way: consecutive children of the patterns above in registration order, which is only correct when forward
calls the children in the order they were registered with nothing in between (true of Sequential and of
the MobileNet blocks); check a model's forward before using it.
"""
import copy

import numpy as np

from ..nn.activation import ReLU
from ..nn.containers import Sequential
from ..nn.fused import fused_conv_forward
from ..nn.layers import BatchNorm1d, BatchNorm2d, Conv2d, Identity, Linear
from ..nn.module import Parameter


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
    """(W', b') of batch norm folded into a conv or linear layer (arrays; see the module docstring).

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


def _fuse(model, modules_to_fuse, inplace, is_qat):
    if not inplace:
        model = copy.deepcopy(model)
    groups = [modules_to_fuse] if modules_to_fuse and isinstance(modules_to_fuse[0], str) else modules_to_fuse
    for names in groups:
        mods = []
        for name in names:
            try:
                mods.append(model.get_submodule(name))
            except (AttributeError, KeyError) as exc:
                raise ValueError(f"modules_to_fuse names {name!r}, which is not a submodule of the model") from exc
        for name, module in zip(names, fuse_known_modules(mods, is_qat)):
            replace_submodule(model, name, module)
    return model


def replace_submodule(model, target, module):
    """Put `module` in place of the submodule named `target`, keeping its position among its siblings
    (Sequential runs its children in that order)."""
    parent_name, _, child = target.rpartition(".")
    parent = model.get_submodule(parent_name)
    if child not in parent._modules:
        raise ValueError(f"{target!r} is not a submodule of the model")
    parent._modules[child] = module


def fuse_modules(model, modules_to_fuse, inplace=False):
    """Fuse each run of names in `modules_to_fuse` (a list of lists, or one list), folding BN (eval mode).

        >>> fused = fuse_modules(model.eval(), [["stem.0", "stem.1", "stem.2"]])
    """
    return _fuse(model, modules_to_fuse, inplace, is_qat=False)


def fuse_modules_qat(model, modules_to_fuse, inplace=False):
    """As `fuse_modules`, but conv+bn(+relu) stay separate layers inside ConvBn2d / ConvBnReLU2d, for QAT."""
    return _fuse(model, modules_to_fuse, inplace, is_qat=True)


_PATTERNS = ((Conv2d, BatchNorm2d, ReLU), (Conv2d, BatchNorm2d), (Conv2d, ReLU), (Linear, ReLU))


def find_fusable_patterns(model):
    """Dotted-name runs of consecutive children matching conv+bn+relu, conv+bn, conv+relu, linear+relu
    (longest first). See the module docstring for when registration order is execution order."""
    found = []
    for prefix, module in model.named_modules():
        if isinstance(module, _FusedModule):
            continue
        names = list(module._modules)
        i = 0
        while i < len(names):
            for pattern in _PATTERNS:
                run = names[i:i + len(pattern)]
                if len(run) == len(pattern) and all(type(module._modules[n]) is t for n, t in zip(run, pattern)):
                    found.append([f"{prefix}.{n}" if prefix else n for n in run])
                    i += len(pattern)
                    break
            else:
                i += 1
    return found


def fuse_mobile_classifier(model, inplace=False, is_qat=False, example_inputs=None):
    """Fuse every conv+bn+relu of the MobileNet-style classifier (`nn.create_mobile_classifier`): the stem
    and both convolutions of every block. Eval mode folds BN; is_qat keeps it for `prepare_qat`.

    The runs are found in the traced graph's data flow (`graph.fuse` on `graph.trace(model, ...)`, which
    shares the model's layers and fuses them in place), so this holds for any model whose forward chains
    layers, whatever order they were registered in. `example_inputs` defaults to zeros of shape
    (1, in_channels, S, S) for the first Conv2d, S the model's `image_size` or 8 (the digits' size).
    A forward with tensor operations outside layers (the detector reshapes its outputs) cannot be traced:
    its runs are then found in registration order (`find_fusable_patterns`), as they always were."""
    from ..graph.fusion import fuse
    from ..graph.trace import TraceError
    if not inplace:
        model = copy.deepcopy(model)
    try:
        fuse(model, _example_inputs(model) if example_inputs is None else example_inputs, inplace=True,
             is_qat=is_qat)
    except TraceError:
        (fuse_modules_qat if is_qat else fuse_modules)(model, find_fusable_patterns(model), inplace=True)
    return model


def _example_inputs(model):
    size = getattr(model, "image_size", 8)
    for m in model.modules():
        if isinstance(m, Conv2d):
            return np.zeros((1, m.in_channels, size, size), np.float32)
        if isinstance(m, Linear):
            return np.zeros((1, m.in_features), np.float32)
    raise ValueError("the model has no Conv2d or Linear layer to fuse; pass example_inputs")
