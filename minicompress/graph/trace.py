"""`trace(model, example_inputs) -> GraphModule`: a model whose forward chains layers, as a graph.

As `torch.fx.symbolic_trace`, the result holds the model's own submodules (the same objects, under the
same dotted names, so `state_dict` keys do not change) plus a node list; unlike it, tracing is concrete:
`example_inputs` run once with a forward hook on every leaf layer, recording (layer, input tensors, output
tensor), and the data flow is read from which recorded tensor each layer consumed. So the forward must
only chain layers, as the project's own models do (`nn.Add` for a residual sum); a tensor computed by an
operation outside any layer cannot be followed and is reported, naming the layer that reads it.

A leaf is a layer with no children, one of `LEAF_TYPES` (a Conv2d holding an observer child is still a
conv), or a fused run (`nn.fused._FusedModule`: conv+relu stays one node). Each call becomes a node

    {"name": "blocks_0_conv_depthwise", "kind": "module", "target": "blocks.0.conv.depthwise",
     "op_type": "Conv", "inputs": ["stem_2"], "outputs": ["blocks_0_conv_depthwise"]}

whose `op_type` is the ONNX name of the layer (`layer_op_type`), so graph passes (patterns, fusion,
observers, export) match traced and imported graphs alike. A layer called twice gives two nodes.
"""
from __future__ import annotations

import numpy as np

from .. import nn
from ..nn.module import Module
from ..qtensor import QTensor
from ..tensor import Tensor
from .module import GraphModule, sanitize, unique_name


class TraceError(ValueError):
    """A forward that does not only chain layers (a tensor made outside any layer); `layer` names the
    layer that reads it (None when it is the model's output)."""

    def __init__(self, message, layer=None):
        super().__init__(message)
        self.layer = layer


# ONNX op_type of each layer kind (module nodes carry it; an unknown layer keeps its class name)
_OP_TYPES = {nn.Conv2d: "Conv", nn.ConvTranspose2d: "ConvTranspose", nn.Linear: "Gemm",
             nn.BatchNorm2d: "BatchNormalization", nn.BatchNorm1d: "BatchNormalization",
             nn.LayerNorm: "LayerNormalization", nn.ReLU: "Relu", nn.ReLU6: "Clip", nn.LeakyReLU: "LeakyRelu",
             nn.ELU: "Elu", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh", nn.GELU: "Gelu", nn.Softmax: "Softmax",
             nn.MaxPool2d: "MaxPool", nn.AvgPool2d: "AveragePool", nn.AdaptiveAvgPool2d: "GlobalAveragePool",
             nn.Flatten: "Flatten", nn.Add: "Add"}
LEAF_TYPES = tuple(_OP_TYPES)
# layers that are the identity at inference (dropout, float quant stubs)
IDENTITY_LAYERS = {"Identity", "Dropout", "QuantStub", "DeQuantStub"}


def layer_op_type(layer):
    """The ONNX op_type a layer computes ("Conv" for nn.Conv2d, "Identity" for Dropout, ...), else its
    class name."""
    kind = type(layer)
    if kind in _OP_TYPES:
        return _OP_TYPES[kind]
    if kind.__name__ in IDENTITY_LAYERS and kind.__module__.startswith("minicompress."):
        return "Identity"
    return kind.__name__


def is_leaf(module):
    """A layer that becomes one node: no children, one of LEAF_TYPES, a fused run or a quantized layer."""
    from ..nn.fused import _FusedModule
    return (isinstance(module, LEAF_TYPES + (_FusedModule,)) or type(module).__name__ in IDENTITY_LAYERS
            or type(module).__module__.startswith("minicompress.quant.") or not module._modules)


def record_calls(model, inputs):
    """([(qualified name, layer, [input tensors], output)] in call order, model output), in eval mode
    without grad: the hook tracer every graph pass builds on."""
    from ..autograd import no_grad
    calls, handles = [], []

    def visit(module, prefix):
        for child_name, child in module._modules.items():
            if child is None:
                continue
            full = f"{prefix}.{child_name}" if prefix else child_name
            if is_leaf(child):
                handles.append(child.register_forward_hook(
                    lambda m, args, out, full=full: calls.append((full, m, list(args), out)) and None))
            else:
                visit(child, full)

    visit(model, "")
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            output = model(*inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls, output


def _as_inputs(example_inputs):
    example = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not example:
        raise ValueError("example_inputs must hold at least one input")
    return tuple(x if isinstance(x, Tensor) else Tensor(np.asarray(x)) for x in example)


def trace(model, example_inputs, dynamic_batch=True, unread_outputs=False):
    """The GraphModule of `model`'s forward on `example_inputs` (see the module docstring).

    Args:
        model: a minicompress Module whose forward only chains layers (a GraphModule is returned as is).
        example_inputs: a Tensor / array or a tuple of them, the forward's positional inputs.
        dynamic_batch: declare the first dimension of each input as "batch" (any size); the other
            dimensions are the example's.
        unread_outputs: where the forward's output is computed outside any layer (a detector reshaping its
            head outputs), make the graph's outputs the layer outputs that no layer reads instead of raising
            (what shrink's channel analysis needs; such a graph does not compute the model's output).

    Returns:
        a GraphModule sharing `model`'s layers (deep-copy the model first to change one without the other).

    Raises:
        TraceError: naming the layer whose input (or the model output) was computed outside any layer.
    """
    if isinstance(model, GraphModule):
        return model
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress Module, got {type(model).__name__}")
    inputs = _as_inputs(example_inputs)
    calls, output = record_calls(model, inputs)
    names, specs, keep = {}, [], []
    for i, t in enumerate(inputs):
        names[id(t)] = "input" if len(inputs) == 1 else f"input_{i}"
        shape = list(t.shape)
        if dynamic_batch and shape:
            shape[0] = "batch"
        specs.append({"name": names[id(t)], "dtype": t.dtype.name, "shape": shape})
    taken, nodes = set(names.values()), []
    for qualified, layer, args, out in calls:
        keep.append((args, out))              # holds every traced tensor, so that no id is reused
        if not isinstance(out, (Tensor, QTensor)):
            raise TraceError(f"layer {qualified!r} ({type(layer).__name__}) returned a {type(out).__name__}; "
                             "only layers returning a single tensor trace")
        tensors = [a for a in args if isinstance(a, (Tensor, QTensor))]
        missing = [i for i, a in enumerate(tensors) if id(a) not in names]
        if missing:
            raise TraceError(f"cannot trace layer {qualified!r} ({type(layer).__name__}): its input {missing[0]} "
                             "was computed by a tensor operation outside any layer; tracing follows models whose "
                             "forward only chains layers (express it as a layer, e.g. nn.Add, or load the model "
                             "as a GraphModule)", layer=qualified)
        value = unique_name(sanitize(qualified), taken)
        taken.add(value)
        nodes.append({"name": value, "kind": "module", "target": qualified, "op_type": layer_op_type(layer),
                      "inputs": [names[id(a)] for a in tensors], "outputs": [value]})
        names[id(out)] = value
    outputs = output if isinstance(output, tuple) else (output,)
    if unread_outputs and any(id(o) not in names for o in outputs):
        # the forward ends in tensor operations (a detector's reshape of its head outputs): the graph's
        # outputs are then the layer outputs no layer reads, which is what a channel analysis needs
        read = {v for node in nodes for v in node["inputs"]}
        outputs = [o for o in (out for _, _, _, out in calls) if names.get(id(o)) not in read]
        outputs = list({id(o): o for o in outputs}.values())
    for o in outputs:
        if id(o) not in names:
            raise TraceError("the model's output was computed outside any layer: trace cannot follow it")
    used = {node["target"].split(".")[0] for node in nodes}
    modules = {name: child for name, child in model._modules.items() if name in used}
    graph = GraphModule(specs, [names[id(o)] for o in outputs], nodes, modules)
    graph.train(model.training)
    return graph
