"""Model -> ONNX: `export(model, example_inputs, path, opset_version=17)` for float models, and for
minicompress's int8 models in onnxruntime's QDQ format (each quantized layer by its type, in a traced model
or as a GraphModule node: `export_quantized.py`).

A GraphModule is written node by node (its layers back to Conv / Gemm / ...; its operator nodes as they
are, when the target opset gives them the same semantics). Any other model is first traced on
`example_inputs` (`graph.trace`: a forward hook on every leaf layer, the data flow read from which recorded
output each layer consumed), so the model's forward must only chain layers (as the project's own models
do; a tensor operation between layers is reported, not guessed), then written as that graph.
"""
from __future__ import annotations

import os

import numpy as np

from .. import nn
from ..graph import registry
from ..graph.module import GraphModule
from ..graph.trace import IDENTITY_LAYERS, TraceError, trace
from ..nn.module import Module
from ..qtensor import QTensor
from ..tensor import Tensor
from .errors import ExportError
from .export_quantized import check_supported, emit_quantized, is_quantized_layer

_ELEM = {"float32": 1, "uint8": 2, "int8": 3, "int32": 6, "int64": 7, "bool": 9, "float16": 10, "float64": 11}


def _elem(tensor):
    """The ONNX element type of a traced value; a QTensor is the float output of its DequantizeLinear."""
    return _ELEM["float32"] if isinstance(tensor, QTensor) else _ELEM[tensor.dtype.name]


class _TraceExportError(ExportError, TraceError):
    """A model that cannot be traced, reported as an export error."""


class _Builder:
    """Collects nodes and initializers with unique names."""

    def __init__(self, opset):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.opset = opset
        self.nodes, self.initializers, self.names = [], [], set()

    def name(self, base):
        base = base or "v"
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def constant(self, base, array):
        name = self.name(base)
        array = np.asarray(array)           # a 0-d array stays a scalar (ascontiguousarray would make it 1-d)
        array = np.ascontiguousarray(array) if array.ndim else array
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def node(self, op_type, inputs, outputs, name, **attrs):
        self.nodes.append(self.helper.make_node(op_type, inputs, outputs, name=self.name(name), **attrs))


def _pairs(value):
    return [int(v) for v in ((value, value) if isinstance(value, (int, np.integer)) else value)]


# ----- layers ------------------------------------------------------------------------------------

def _weight(layer, name="weight"):
    value = getattr(layer, name)
    return None if value is None else np.asarray(value.data, np.float32)


def _emit_layer(b, layer, name, x, out, rank):
    """ONNX nodes computing `out` from `x` for one layer (rank: the input's number of dimensions)."""
    kind = type(layer)
    if kind is nn.Conv2d:
        ins = [x, b.constant(f"{name}.weight", _weight(layer))]
        if layer.bias is not None:
            ins.append(b.constant(f"{name}.bias", _weight(layer, "bias")))
        p = _pairs(layer.padding)
        b.node("Conv", ins, [out], name, kernel_shape=_pairs(layer.kernel_size), strides=_pairs(layer.stride),
               pads=p + p, dilations=_pairs(layer.dilation), group=int(layer.groups))
    elif kind is nn.ConvTranspose2d:
        ins = [x, b.constant(f"{name}.weight", _weight(layer))]
        if layer.bias is not None:
            ins.append(b.constant(f"{name}.bias", _weight(layer, "bias")))
        p = _pairs(layer.padding)
        b.node("ConvTranspose", ins, [out], name, kernel_shape=_pairs(layer.kernel_size),
               strides=_pairs(layer.stride), pads=p + p, dilations=_pairs(layer.dilation), group=int(layer.groups),
               output_padding=_pairs(layer.output_padding))
    elif kind is nn.Linear:
        w = _weight(layer)
        if rank == 2:
            ins = [x, b.constant(f"{name}.weight", w)]
            if layer.bias is not None:
                ins.append(b.constant(f"{name}.bias", _weight(layer, "bias")))
            b.node("Gemm", ins, [out], name, transB=1)
        elif layer.bias is None:
            b.node("MatMul", [x, b.constant(f"{name}.weight_t", w.T.copy())], [out], name)
        else:
            mid = b.name(f"{name}_matmul")
            b.node("MatMul", [x, b.constant(f"{name}.weight_t", w.T.copy())], [mid], name)
            b.node("Add", [mid, b.constant(f"{name}.bias", _weight(layer, "bias"))], [out], f"{name}_bias")
    elif kind in (nn.BatchNorm2d, nn.BatchNorm1d):
        if layer.training or layer.running_mean is None:
            raise ExportError(f"layer {name!r}: a BatchNorm exports in eval mode with running statistics "
                              "(call model.eval())")
        c = layer.num_features
        scale = _weight(layer) if layer.weight is not None else np.ones(c, np.float32)
        shift = _weight(layer, "bias") if layer.bias is not None else np.zeros(c, np.float32)
        ins = [x, b.constant(f"{name}.weight", scale), b.constant(f"{name}.bias", shift),
               b.constant(f"{name}.running_mean", np.asarray(layer.running_mean.data, np.float32)),
               b.constant(f"{name}.running_var", np.asarray(layer.running_var.data, np.float32))]
        momentum = 0.1 if layer.momentum is None else layer.momentum
        b.node("BatchNormalization", ins, [out], name, epsilon=float(layer.eps), momentum=1.0 - float(momentum))
    elif kind is nn.LayerNorm:
        if b.opset < 17:
            raise ExportError(f"layer {name!r}: LayerNormalization needs opset_version >= 17")
        shape = tuple(layer.normalized_shape)
        scale = _weight(layer) if layer.weight is not None else np.ones(shape, np.float32)
        ins = [x, b.constant(f"{name}.weight", scale)]
        if layer.bias is not None:
            ins.append(b.constant(f"{name}.bias", _weight(layer, "bias")))
        b.node("LayerNormalization", ins, [out], name, axis=-len(shape), epsilon=float(layer.eps))
    elif kind is nn.ReLU:
        b.node("Relu", [x], [out], name)
    elif kind is nn.ReLU6 and b.opset < 11:
        b.node("Clip", [x], [out], name, min=0.0, max=6.0)
    elif kind is nn.ReLU6:
        b.node("Clip", [x, b.constant(f"{name}.min", np.float32(0)), b.constant(f"{name}.max", np.float32(6))],
               [out], name)
    elif kind is nn.LeakyReLU:
        b.node("LeakyRelu", [x], [out], name, alpha=float(layer.negative_slope))
    elif kind is nn.ELU:
        b.node("Elu", [x], [out], name, alpha=float(layer.alpha))
    elif kind is nn.Sigmoid:
        b.node("Sigmoid", [x], [out], name)
    elif kind is nn.Tanh:
        b.node("Tanh", [x], [out], name)
    elif kind is nn.GELU:
        if b.opset >= 20:
            b.node("Gelu", [x], [out], name, approximate=layer.approximate)
        elif layer.approximate == "none":       # x * 0.5 * (1 + erf(x / sqrt(2)))
            scaled, e, one = b.name(f"{name}_scaled"), b.name(f"{name}_erf"), b.name(f"{name}_plus1")
            half = b.name(f"{name}_half")
            b.node("Mul", [x, b.constant(f"{name}.inv_sqrt2", np.float32(1 / np.sqrt(2)))], [scaled], name)
            b.node("Erf", [scaled], [e], f"{name}_erf")
            b.node("Add", [e, b.constant(f"{name}.one", np.float32(1))], [one], f"{name}_add")
            b.node("Mul", [x, b.constant(f"{name}.half", np.float32(0.5))], [half], f"{name}_mulhalf")
            b.node("Mul", [half, one], [out], f"{name}_mul")
        else:
            raise ExportError(f"layer {name!r}: GELU(approximate='tanh') needs opset_version >= 20")
    elif kind is nn.Softmax:
        if b.opset < 13:
            raise ExportError(f"layer {name!r}: Softmax over one axis needs opset_version >= 13")
        b.node("Softmax", [x], [out], name, axis=int(-1 if layer.dim is None else layer.dim))
    elif kind is nn.MaxPool2d:
        p = _pairs(layer.padding)
        b.node("MaxPool", [x], [out], name, kernel_shape=_pairs(layer.kernel_size), strides=_pairs(layer.stride),
               pads=p + p, dilations=_pairs(layer.dilation), ceil_mode=int(layer.ceil_mode))
    elif kind is nn.AvgPool2d:
        if layer.divisor_override:
            raise ExportError(f"layer {name!r}: AvgPool2d's divisor_override has no ONNX form")
        p = _pairs(layer.padding)
        b.node("AveragePool", [x], [out], name, kernel_shape=_pairs(layer.kernel_size),
               strides=_pairs(layer.stride), pads=p + p, ceil_mode=int(layer.ceil_mode),
               count_include_pad=int(layer.count_include_pad))
    elif kind is nn.AdaptiveAvgPool2d:
        if _pairs(layer.output_size) != [1, 1]:
            raise ExportError(f"layer {name!r}: only AdaptiveAvgPool2d(1) has an ONNX form (GlobalAveragePool)")
        b.node("GlobalAveragePool", [x], [out], name)
    elif kind is nn.Flatten:
        if layer.end_dim not in (-1, rank - 1):
            raise ExportError(f"layer {name!r}: Flatten with end_dim={layer.end_dim} is not supported")
        start = layer.start_dim % rank
        if start == rank - 1:
            b.node("Identity", [x], [out], name)
        else:
            shape = b.constant(f"{name}.shape", np.array([0] * start + [-1], np.int64))
            b.node("Reshape", [x, shape], [out], name)
    elif kind.__name__ in IDENTITY_LAYERS and kind.__module__.startswith("minicompress."):
        b.node("Identity", [x], [out], name)
    else:
        raise ExportError(f"layer {name!r} ({kind.__name__}) has no ONNX export here")


# ----- a GraphModule -------------------------------------------------------------------------------

def _export_graph(b, model, inputs):
    for spec in model.inputs:
        b.names.add(spec["name"])
    for node in model.nodes:
        b.names.update(v for v in node["outputs"] if v)
    for value, (buffer, shape) in model.constants.items():
        b.names.add(value)
        b.initializers.append(b.numpy_helper.from_array(
            np.ascontiguousarray(model._buffers[buffer].data.reshape(shape)), value))
    with _no_grad():
        outputs, env = model.run(*inputs, keep="all")
    for node in model.nodes:
        if node["kind"] == "module":
            layer = model.get_submodule(node["target"])
            if is_quantized_layer(layer):
                emit_quantized(b, layer, node["target"], node["inputs"], [env[v] for v in node["inputs"]],
                               node["outputs"][0])
            elif isinstance(layer, nn.Add):
                b.node("Add", node["inputs"], node["outputs"], node["target"])
            else:
                _emit_layer(b, layer, node["target"], node["inputs"][0], node["outputs"][0],
                            env[node["inputs"][0]].ndim)
            continue
        _emit_operator(b, node)
    return ([(spec["name"], env[spec["name"]]) for spec in model.inputs],
            [(v, env[v]) for v in model.outputs])


def _no_grad():
    from ..autograd import no_grad
    return no_grad()


def _emit_operator(b, node):
    domain = node.get("domain", "")
    version = b.opset if not domain else 1
    attrs = dict(node.get("attrs", {}))
    if node["op_type"] == "Pad" and node["version"] == 2 and b.opset >= 11:
        # the importer's explicit padding before an asymmetric Conv: pads become an input from opset 11
        pads = b.constant(f"{node['name']}.pads", np.array(attrs.pop("pads"), np.int64))
        b.node("Pad", node["inputs"] + [pads], node["outputs"], node["name"], **attrs)
        return
    cls = registry.resolve(domain, node["op_type"], version, node["name"])
    if cls.since_version != node["version"]:
        raise ExportError(f"node {node['name']!r} ({node['op_type']}) has the semantics of its opset-"
                          f"{node['version']} form, which opset {b.opset} changes: export with the graph's "
                          f"opset_version ({registry.normalise_domain(domain) or 'default'} domain)")
    from .importer import _onnx
    onnx = _onnx()
    converted = {k: onnx.numpy_helper.from_array(np.asarray(v)) if isinstance(v, np.ndarray) else v
                 for k, v in attrs.items()}
    b.nodes.append(b.helper.make_node(node["op_type"], node["inputs"], node["outputs"], name=node["name"],
                                      domain=domain, **converted))


# ----- entry point ---------------------------------------------------------------------------------

def export(model, example_inputs, path=None, opset_version=17, dynamic_batch=True):
    """Write `model` as ONNX to `path` (or return the bytes when path is None); returns the ModelProto.

    Args:
        model: a Module (traced on `example_inputs`) or a GraphModule (written node by node); float layers
            become their ONNX operators, quantized ones (`quant.convert`, `quantize_dynamic`) QDQ units
            (export_quantized.py); a quantized layer with no such form raises ExportError naming it.
        example_inputs: a Tensor / array or a tuple of them, the model's positional inputs.
        opset_version: the default-domain opset, 7 to 21 (a traced Softmax needs 13, LayerNorm 17).
        dynamic_batch: name the first dimension of traced inputs and outputs "batch" (a GraphModule keeps
            its own input shapes).
    """
    from .importer import MAX_OPSET, MIN_OPSET, _onnx
    onnx = _onnx()
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress Module, got {type(model).__name__}")
    lowest = max(MIN_OPSET, 7)     # opset 6's explicit broadcasting is read, never written
    if not isinstance(opset_version, int) or not lowest <= opset_version <= MAX_OPSET:
        raise ValueError(f"opset_version must be an int from {lowest} to {MAX_OPSET}, got {opset_version!r}")
    example = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    inputs = tuple(x if isinstance(x, Tensor) else Tensor(np.asarray(x)) for x in example)
    b = _Builder(opset_version)
    was_training = model.training
    model.eval()
    try:
        traced = not isinstance(model, GraphModule)
        if traced:
            try:
                graph = trace(model, inputs, dynamic_batch=dynamic_batch)
            except TraceError as exc:
                raise _TraceExportError(str(exc)) from None
        else:
            graph = model
        graph_inputs, graph_outputs = _export_graph(b, graph, inputs)
        shapes = {s["name"]: s.get("shape") for s in graph.inputs}
    finally:
        model.train(was_training)

    def info(name, tensor, declared=None):
        shape = list(declared) if declared is not None else list(tensor.shape)
        if declared is None and dynamic_batch and shape:
            shape[0] = "batch"
        return b.helper.make_tensor_value_info(name, _elem(tensor), shape)

    graph = b.helper.make_graph(b.nodes, "minicompress", [info(n, t, shapes.get(n)) for n, t in graph_inputs],
                                [info(n, t) if traced else
                                 b.helper.make_tensor_value_info(n, _elem(t), [None] * t.ndim)
                                 for n, t in graph_outputs], b.initializers)
    domains = sorted({node.domain for node in b.nodes} - {"", "ai.onnx"})      # com.microsoft: MatMulNBits
    proto = b.helper.make_model(graph, opset_imports=[b.helper.make_opsetid("", opset_version)]
                                + [b.helper.make_opsetid(domain, 1) for domain in domains],
                                producer_name="minicompress", ir_version=8 if opset_version < 21 else 10)
    onnx.checker.check_model(proto)
    if path is not None:
        path = os.fspath(path)
        with open(path, "wb") as f:
            f.write(proto.SerializeToString())
    return proto
