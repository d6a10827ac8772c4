"""Eager-mode quantization flow: `prepare`, `prepare_qat`, `convert`, as `torch.ao.quantization.quantize`.

    model.qconfig = get_default_qconfig("x86")
    prepared = prepare(fuse_mobile_classifier(model.eval()))   # observers on every layer's output
    for x, _ in calibration_loader: prepared(x)                # observers record ranges
    quantized = convert(prepared)                              # float layers -> integer layers

prepare:
    1. propagate `qconfig` from each module to its children that have none (`propagate_qconfig_`);
    2. give every module that produces new quantization parameters (QuantStub, Conv2d, Linear, the
       fused and QAT layers, Add) and has a qconfig an `activation_post_process` child,
       `qconfig.activation()`, and a forward hook that passes the module's output through it.
       Layers that keep their input's qparams (ReLU, pooling, Flatten, Dropout) need no observer.

prepare_qat: swaps float layers for their QAT versions (fake-quantized weights, `qat.py`), then prepares
with FakeQuantize as the activation observer, so training sees the quantization error.

convert: replaces every module whose type is in the mapping with `mapping[type].from_float(module)`;
a module with an observer that saw no data is an error naming the layer (its qparams would be the
meaningless defaults (1.0, 0)).
"""
import copy

from ..nn import activation as nn_act
from ..nn import layers as nn_layers
from ..nn.module import Module
from ..nn import fused
from . import qat
from . import modules as nnq
from .fake_quantize import FakeQuantize
from ..nn.stubs import DeQuantStub, QuantStub

DEFAULT_STATIC_QUANT_MODULE_MAPPINGS = {
    QuantStub: nnq.Quantize,
    DeQuantStub: nnq.DeQuantize,
    nn_layers.Linear: nnq.Linear,
    nn_layers.Conv2d: nnq.Conv2d,
    nn_layers.Add: nnq.QuantizedAdd,
    fused.ConvReLU2d: nnq.ConvReLU2d,
    fused.LinearReLU: nnq.LinearReLU,
    qat.Linear: nnq.Linear,
    qat.LinearReLU: nnq.LinearReLU,
    qat.Conv2d: nnq.Conv2d,
    qat.ConvReLU2d: nnq.ConvReLU2d,
    qat.ConvBn2d: nnq.Conv2d,
    qat.ConvBnReLU2d: nnq.ConvReLU2d,
    nn_act.ReLU: nnq.ReLU,
    nn_act.ReLU6: nnq.ReLU6,
    nn_act.MaxPool2d: nnq.MaxPool2d,
    nn_act.AvgPool2d: nnq.AvgPool2d,
    nn_act.AdaptiveAvgPool2d: nnq.AdaptiveAvgPool2d,
    nn_layers.Flatten: nnq.Flatten,
    nn_layers.Dropout: nnq.Dropout,
}

DEFAULT_QAT_MODULE_MAPPINGS = {
    nn_layers.Linear: qat.Linear,
    nn_layers.Conv2d: qat.Conv2d,
    fused.LinearReLU: qat.LinearReLU,
    fused.ConvReLU2d: qat.ConvReLU2d,
    fused.ConvBn2d: qat.ConvBn2d,
    fused.ConvBnReLU2d: qat.ConvBnReLU2d,
}

# Modules whose output gets an observer: each sets its own output qparams after convert.
OBSERVED_TYPES = (QuantStub, nn_layers.Linear, nn_layers.Conv2d, nn_layers.Add, fused._FusedModule,
                  qat.Linear, qat.Conv2d)


def propagate_qconfig_(module, qconfig_dict=None):
    """Give each submodule without a `qconfig` its parent's (in place). qconfig_dict maps dotted names
    or module types to a qconfig that overrides the inherited one."""
    qconfig_dict = qconfig_dict or {}

    def visit(mod, name, inherited):
        qconfig = qconfig_dict.get(type(mod), inherited)
        qconfig = qconfig_dict.get(name, qconfig)
        qconfig = getattr(mod, "qconfig", None) or qconfig
        mod.qconfig = qconfig
        for child_name, child in mod._modules.items():
            if child is not None:
                visit(child, f"{name}.{child_name}" if name else child_name, qconfig)

    visit(module, "", None)


def _observer_forward_hook(module, args, output):
    """Pass the output through the module's observer (or fake quantizer, which may change it)."""
    return module.activation_post_process(output)


# Forward hooks that a model file can hold (by name): `io.save` writes them, `io.load` re-attaches them.
SERIALIZABLE_FORWARD_HOOKS = (_observer_forward_hook,)


def _add_observers(module):
    for child in module._modules.values():
        if child is None:
            continue
        if isinstance(child, OBSERVED_TYPES) and getattr(child, "qconfig", None) is not None:
            if "activation_post_process" not in child._modules:
                child.activation_post_process = child.qconfig.activation()
                child.register_forward_hook(_observer_forward_hook)
            if isinstance(child, (fused._FusedModule, qat.Linear, qat.Conv2d)):
                continue
        _add_observers(child)


def prepare(model, inplace=False):
    """Attach observers to a float model (see the module docstring). The model needs a `qconfig`
    somewhere (usually `model.qconfig = get_default_qconfig("x86")`)."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    propagate_qconfig_(model)
    if not any(getattr(m, "qconfig", None) is not None for m in model.modules()):
        raise ValueError("no module has a qconfig: set model.qconfig (e.g. get_default_qconfig('x86')) before "
                         "prepare; nothing would be quantized")
    _add_observers(model)
    return model


def prepare_qat(model, mapping=None, inplace=False):
    """Swap float layers for QAT layers (fake-quantized weights) and attach FakeQuantize observers to their
    outputs. The model should be in training mode and fused with `fuse_modules_qat`."""
    if not inplace:
        model = copy.deepcopy(model)
    propagate_qconfig_(model)
    _swap(model, mapping or DEFAULT_QAT_MODULE_MAPPINGS, prefix="", check_observed=False)
    return prepare(model, inplace=True)


def convert(module, mapping=None, inplace=False, remove_qconfig=True):
    """Replace observed float / QAT layers with quantized ones (see the module docstring)."""
    if not isinstance(module, Module):
        raise TypeError(f"module must be a Module, got {type(module).__name__}")
    if not inplace:
        module = copy.deepcopy(module)
    _swap(module, mapping or DEFAULT_STATIC_QUANT_MODULE_MAPPINGS, prefix="", check_observed=True)
    if remove_qconfig:
        for m in module.modules():
            m.__dict__.pop("qconfig", None)
    return module.eval()


def _swap(module, mapping, prefix, check_observed):
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        qualified = f"{prefix}.{name}" if prefix else name
        target = mapping.get(type(child))
        if target is None or getattr(child, "qconfig", None) is None:
            _swap(child, mapping, qualified, check_observed)
            continue
        if check_observed:
            _check_observed(child, qualified)
        module._modules[name] = target.from_float(child)


def _check_observed(child, name):
    observer = child._modules.get("activation_post_process")
    if observer is None:
        if isinstance(child, OBSERVED_TYPES):
            raise ValueError(f"layer {name!r} ({type(child).__name__}) has no observer: call prepare() on the model "
                             f"and run calibration data through it before convert")
        return
    if not observer.observed:
        kind = "fake quantizer" if isinstance(observer, FakeQuantize) else "observer"
        raise ValueError(f"layer {name!r} ({type(child).__name__}): its {kind} has seen no data; run calibration "
                         f"batches through the prepared model before convert")
