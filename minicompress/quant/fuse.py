"""Module fusion and batch-norm folding, as `torch.ao.quantization.fuse_modules` / `fuse_modules_qat`.

Fusing merges a run of layers into one so that the integer model computes them in one kernel and
quantizes once: conv -> bn -> relu becomes a single integer conv with a ReLU clamp, instead of three
layers with a rounding between each.

Folding batch norm (eval mode) into the preceding conv or linear layer: BN computes
gamma * (y - mean) / sqrt(var + eps) + beta on y = W x + b, which is again affine in x:

    W' = W * gamma / sqrt(var + eps)            (scaled per output channel)
    b' = (b - mean) * gamma / sqrt(var + eps) + beta

(torch.nn.utils.fusion.fuse_conv_bn_weights / fuse_linear_bn_weights; the fused layer classes and the
folding live in `nn/fused.py`, as torch keeps them in `nn.intrinsic`). Supported runs:

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
from ..nn.fused import _FusedModule, fuse_known_modules, replace_submodule
from ..nn.layers import BatchNorm2d, Conv2d, Linear


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
