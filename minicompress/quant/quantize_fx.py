"""Graph-mode static quantization, as `torch.ao.quantization.quantize_fx`: `fuse_fx`, `prepare_fx`, `convert_fx`.

    prepared = prepare_fx(model, get_default_qconfig("x86"), example_inputs)  # traced, fused, observed
    for x in calibration_batches: prepared(x)
    quantized = convert_fx(prepared)                                          # a GraphModule on integers

Unlike eager `prepare` (observers as hooks on modules), the observers are nodes of the graph, placed at node
outputs, so operator nodes of an imported ONNX graph are observed as well as layers:

  prepare_fx  1. `trace` the model (a GraphModule is used as is) and `graph.fuse` it (Conv+BN+ReLU...);
              2. classify each node: *quantizable* (a layer in DEFAULT_STATIC_QUANT_MODULE_MAPPINGS, or an
                 operator in `_OPERATORS`: Add, Concat, Relu, Clip(0, 6), MaxPool, AveragePool,
                 GlobalAveragePool, Flatten(axis=1), Reshape (constant shape), Identity) or float;
              3. insert an observer node (`qconfig.activation()`, submodule `activation_post_process_<k>`)
                 after each quantizable node's output and after each float value a quantizable node reads.
  convert_fx  each quantizable node becomes the project's quantized module (`quant/modules.py`, through
              `from_float` for layers: Conv2d / ConvReLU2d / Linear / LinearReLU / QuantStub -> Quantize ...;
              QuantizedAdd, QuantizedConcat, ReLU, ReLU6, pools, Flatten, Reshape for operators), a Quantize
              node goes where a quantized node reads a float value (qparams of that value's observer), a
              DeQuantize node where a float node or the graph's output reads a quantized one, and the
              observer nodes go. Nodes keep their value names; a quantized graph output keeps its name too
              (the DeQuantize writes it).

`qconfig_mapping` is a QConfig (every node) or a dict {"": global QConfig, node name or layer target:
QConfig or None}; None leaves that node float. Nodes with the same-qparams modules (ReLU, pools, Flatten)
keep their input's qparams after convert, as torch's; their output observer only records.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np

from ..graph.fusion import fuse
from ..graph.module import GraphModule, unique_name
from ..graph.patterns import clip_bounds, consumers
from ..graph.trace import trace
from ..nn.module import Module
from . import modules as nnq
from ..nn.fused import replace_submodule
from .prepare import DEFAULT_STATIC_QUANT_MODULE_MAPPINGS
from .qconfig import QConfig
from ..nn.stubs import DeQuantStub, QuantStub

OBSERVER_PREFIX = "activation_post_process_"


def fuse_fx(model, example_inputs=None):
    """`graph.fuse` (eval-mode Conv+BN+ReLU fusion found in the graph), under torch's name."""
    return fuse(model, example_inputs)


# ----- which nodes are quantized -----------------------------------------------------------------------

def _symmetric_pads(attrs, rank=2):
    pads = list(attrs.get("pads") or [0] * (2 * rank))
    return pads[:rank] == pads[rank:] and attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")


def _pool_args(attrs):
    return dict(kernel_size=tuple(attrs["kernel_shape"]), stride=tuple(attrs.get("strides") or [1, 1]),
                padding=tuple((attrs.get("pads") or [0, 0, 0, 0])[:2]), ceil_mode=bool(attrs.get("ceil_mode", 0)))


def _operator_module(graph, node, out_qparams):
    """The quantized module for an operator node, or None when the node stays float."""
    op, attrs = node["op_type"], node.get("attrs", {})
    data = [v for v in node["inputs"] if v]
    constant = [v in graph.constants for v in data]
    if op == "Relu":
        return nnq.ReLU()
    if op == "Clip":
        bounds = clip_bounds(graph, node)
        return nnq.ReLU() if bounds == (0.0, None) else nnq.ReLU6() if bounds == (0.0, 6.0) else None
    if op == "Identity":
        return nnq.Dropout()
    if op == "Add" and len(data) == 2 and not any(constant):
        return nnq.QuantizedAdd(*out_qparams()) if out_qparams else nnq.QuantizedAdd(1.0, 0)
    if op == "Concat" and not any(constant):
        return nnq.QuantizedConcat(*(out_qparams() if out_qparams else (1.0, 0)), axis=attrs.get("axis", 1))
    if op == "GlobalAveragePool":
        return nnq.AdaptiveAvgPool2d(SimpleNamespace(output_size=1))
    if op == "Flatten" and attrs.get("axis", 1) == 1:
        return nnq.Flatten(SimpleNamespace(start_dim=1, end_dim=-1))
    if op == "Reshape" and len(data) == 2 and constant[1] and not attrs.get("allowzero", 0):
        buffer, shape = graph.constants[data[1]]
        return nnq.Reshape(np.asarray(graph._buffers[buffer].data).reshape(shape))
    kernel = attrs.get("kernel_shape")
    if op in ("MaxPool", "AveragePool") and kernel is not None and len(kernel) == 2 and _symmetric_pads(attrs) \
            and len(node["outputs"]) == 1 and not attrs.get("storage_order", 0):
        if op == "MaxPool":
            return nnq.MaxPool2d(SimpleNamespace(dilation=tuple(attrs.get("dilations") or [1, 1]), **_pool_args(attrs)))
        return nnq.AvgPool2d(SimpleNamespace(count_include_pad=bool(attrs.get("count_include_pad", 0)),
                                             divisor_override=None, **_pool_args(attrs)))
    return None


def _data_inputs(graph, node):
    """The activations a quantized node reads (a Reshape's shape and a Clip's bounds are not)."""
    inputs = [v for v in node["inputs"] if v]
    if node["kind"] == "op" and node["op_type"] in ("Reshape", "Clip"):
        inputs = inputs[:1]
    return inputs


def _qconfig_for(mapping, node):
    for key in (node["name"], node.get("target")):
        if key is not None and key in mapping:
            return mapping[key]
    return mapping.get("")


def _role(graph, node, qconfig):
    """'quantize' (QuantStub), 'dequantize' (DeQuantStub), 'quantized' or 'float'."""
    if qconfig is None:
        return "float"
    if node["kind"] == "module":
        layer = graph.get_submodule(node["target"])
        if isinstance(layer, QuantStub):
            return "quantize"
        if isinstance(layer, DeQuantStub):
            return "dequantize"
        return "quantized" if type(layer) in DEFAULT_STATIC_QUANT_MODULE_MAPPINGS else "float"
    if node.get("domain", "") or len([v for v in node["outputs"] if v]) != 1:
        return "float"
    return "quantized" if _operator_module(graph, node, None) is not None else "float"


def _check_mapping(qconfig_mapping):
    if isinstance(qconfig_mapping, QConfig):
        return {"": qconfig_mapping}
    if isinstance(qconfig_mapping, dict) and all(q is None or isinstance(q, QConfig) for q in qconfig_mapping.values()):
        return dict(qconfig_mapping)
    raise TypeError(f"qconfig_mapping must be a QConfig or a dict of QConfig / None (\"\" for the global one), "
                    f"got {type(qconfig_mapping).__name__}")


# ----- prepare --------------------------------------------------------------------------------------------

def prepare_fx(model, qconfig_mapping, example_inputs=None):
    """The fused, observed GraphModule of `model` (see the module docstring); `model` is not modified.

    Args:
        model: a Module whose forward chains layers (traced on `example_inputs`) or a GraphModule.
        qconfig_mapping: a QConfig, or {"": QConfig, name: QConfig | None}.
        example_inputs: the forward's inputs, to trace a Module.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress Module, got {type(model).__name__}")
    mapping = _check_mapping(qconfig_mapping)
    if not isinstance(model, GraphModule) and example_inputs is None:
        raise ValueError("example_inputs is needed to trace a model that is not a GraphModule")
    model = copy.deepcopy(model)
    graph = fuse(model if isinstance(model, GraphModule) else trace(model.eval(), example_inputs), inplace=True)
    graph.eval()
    producer = {v: node for node in graph.nodes for v in node["outputs"] if v}
    roles = {node["name"]: _role(graph, node, _qconfig_for(mapping, node)) for node in graph.nodes}
    observe = {}                                   # value -> qconfig of the node that asks for it
    for node in graph.nodes:
        qconfig = _qconfig_for(mapping, node)
        role = roles[node["name"]]
        if role in ("quantized", "quantize"):
            observe.setdefault(node["outputs"][0], qconfig)
            if node["kind"] == "module":
                graph.get_submodule(node["target"]).qconfig = qconfig      # from_float reads its weight observer
        if role == "quantized":
            for v in _data_inputs(graph, node):
                source = producer.get(v)
                if v not in graph.constants and (source is None or roles[source["name"]] not in ("quantized", "quantize")):
                    observe.setdefault(v, qconfig)
    graph.quantization_roles = roles
    _insert_observers(graph, observe)
    return graph


def _insert_observers(graph, observe):
    renamed, nodes, k = {}, [], 0
    taken = {v for node in graph.nodes for v in node["outputs"]} | {s["name"] for s in graph.inputs}

    def add(value):
        nonlocal k
        target = unique_name(f"{OBSERVER_PREFIX}{k}", graph._modules)
        k += 1
        graph.add_module(target, observe[value].activation())
        name = unique_name(f"{value}_observed", taken)
        taken.add(name)
        renamed[value] = name
        nodes.append({"name": name, "kind": "module", "target": target, "op_type": "Observer", "observes": value,
                      "inputs": [value], "outputs": [name]})

    for spec in graph.inputs:
        if spec["name"] in observe:
            add(spec["name"])
    for node in graph.nodes:
        node["inputs"] = [renamed.get(v, v) for v in node["inputs"]]
        nodes.append(node)
        for v in node["outputs"]:
            if v in observe:
                add(v)
    graph.nodes = nodes
    graph.outputs = [renamed.get(v, v) for v in graph.outputs]
    graph.validate()


# ----- convert --------------------------------------------------------------------------------------------

def convert_fx(prepared):
    """The quantized GraphModule of a `prepare_fx` model that has seen calibration data (a copy)."""
    if not isinstance(prepared, GraphModule) or not hasattr(prepared, "quantization_roles"):
        raise TypeError("convert_fx expects the GraphModule returned by prepare_fx")
    graph = copy.deepcopy(prepared)
    roles = graph.__dict__.pop("quantization_roles")
    observers, restore = {}, {}
    for node in graph.nodes:
        if node.get("op_type") == "Observer" and "observes" in node:
            observers[node["observes"]] = graph.get_submodule(node["target"])
            restore[node["outputs"][0]] = node["observes"]
    nodes = [n for n in graph.nodes if not ("observes" in n and n.get("op_type") == "Observer")]
    for node in nodes:
        node["inputs"] = [restore.get(v, v) for v in node["inputs"]]
    outputs = [restore.get(v, v) for v in graph.outputs]
    for name in [n for n in graph._modules if n.startswith(OBSERVER_PREFIX)]:
        del graph._modules[name]

    def qparams(value, where):
        observer = observers.get(value)
        if observer is None or not observer.observed:
            raise ValueError(f"node {where!r}: the observer of value {value!r} has seen no data; run calibration "
                             "batches through the prepared model before convert_fx")
        scale, zero_point = observer.calculate_qparams()
        return float(scale[0]), int(zero_point[0])

    quantized, float_of, quant_of, new_nodes = set(), {}, {}, []
    taken = {v for n in nodes for v in n["outputs"]} | {s["name"] for s in graph.inputs}

    def fresh(base):
        name = unique_name(base, taken)
        taken.add(name)
        return name

    def as_float(v):
        if v not in quantized:
            return v
        if v not in float_of:
            if "dequantize" not in graph._modules:
                graph.add_module("dequantize", nnq.DeQuantize())
            float_of[v] = fresh(f"{v}_dequant")
            new_nodes.append({"name": float_of[v], "kind": "module", "target": "dequantize", "op_type": "DeQuantize",
                              "inputs": [v], "outputs": [float_of[v]]})
        return float_of[v]

    def as_quantized(v, where):
        if v in quantized or v in graph.constants:
            return v
        if v not in quant_of:
            target = fresh(f"quantize_{len(quant_of)}")
            graph.add_module(target, nnq.Quantize(*qparams(v, where)))
            quant_of[v] = fresh(f"{v}_quant")
            new_nodes.append({"name": quant_of[v], "kind": "module", "target": target, "op_type": "QuantizeLinear",
                              "inputs": [v], "outputs": [quant_of[v]]})
        return quant_of[v]

    for node in nodes:
        role = roles.get(node["name"], "float")
        if role == "dequantize" and node["inputs"][0] in quantized:
            replace_submodule(graph, node["target"], nnq.DeQuantize())
        elif role == "quantize":
            node["inputs"] = [as_float(v) for v in node["inputs"]]
            layer = graph.get_submodule(node["target"])
            replace_submodule(graph, node["target"], _from_float(layer, observers, node, qparams))
            quantized.add(node["outputs"][0])
        elif role == "quantized":
            data = _data_inputs(graph, node)
            node["inputs"] = [as_quantized(v, node["name"]) if v in data else v for v in node["inputs"]]
            if node["kind"] == "module":
                layer = graph.get_submodule(node["target"])
                replace_submodule(graph, node["target"], _from_float(layer, observers, node, qparams))
            else:
                module = _operator_module(graph, node, lambda: qparams(node["outputs"][0], node["name"]))
                target = fresh(node["name"].replace(".", "_").replace("/", "_"))
                graph.add_module(target, module)
                node.update(kind="module", target=target, inputs=[as_quantized(v, node["name"]) for v in data])
                for key in ("domain", "version", "attrs"):
                    node.pop(key, None)
            quantized.add(node["outputs"][0])
        else:
            node["inputs"] = [as_float(v) for v in node["inputs"]]
        new_nodes.append(node)
    final = []
    for v in outputs:
        if v in quantized:            # the DeQuantize writes the output's own name; the producer is renamed
            inner = fresh(f"{v}_quantized")
            for n in new_nodes:
                n["outputs"] = [inner if o == v else o for o in n["outputs"]]
                n["inputs"] = [inner if i == v else i for i in n["inputs"]]
            if "dequantize" not in graph._modules:
                graph.add_module("dequantize", nnq.DeQuantize())
            new_nodes.append({"name": v, "kind": "module", "target": "dequantize", "op_type": "DeQuantize",
                              "inputs": [inner], "outputs": [v]})
            quantized.discard(v)
        final.append(v)
    graph.nodes, graph.outputs = new_nodes, final
    for m in graph.modules():
        m.__dict__.pop("qconfig", None)
    read = {v for n in new_nodes for v in n["inputs"]} | set(final)
    for value in [v for v in graph.constants if v not in read]:      # a Reshape's shape, now in its module
        buffer, _ = graph.constants.pop(value)
        del graph._buffers[buffer]
    graph.validate()
    return graph.eval()


def _from_float(layer, observers, node, qparams):
    """mapping[type(layer)].from_float(layer) with the node's output observer as its activation_post_process."""
    qparams(node["outputs"][0], node["name"])            # the clear error when the observer saw nothing
    target = DEFAULT_STATIC_QUANT_MODULE_MAPPINGS[type(layer)]
    layer._modules["activation_post_process"] = observers[node["outputs"][0]]
    try:
        return target.from_float(layer)
    finally:
        del layer._modules["activation_post_process"]
