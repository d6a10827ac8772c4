"""ONNX -> GraphModule: `load(path | bytes | ModelProto)`.

The model's nodes are read in topological order; a Conv, Gemm, MatMul or normalization with constant
weights becomes an `nn` layer (see `lower.py`), every other node an operator node resolved in the registry
at the model's opset for its domain, so each node keeps the semantics of the opset it was written for.
Initializers and Constant nodes become constants of the graph. An operator, opset or attribute that is not
implemented raises `UnsupportedOperatorError` naming the op type, the node and the opset.
"""
from __future__ import annotations

import os

import numpy as np

from ..graph import registry
from ..graph.module import GraphModule, sanitize, unique_name
from ..graph.ops.elementwise import numpy_dtype
from ..graph.ops.quantized import check_arithmetic
from .lower import lower

MIN_OPSET, MAX_OPSET = 6, 21
# Opsets 22 to 28 revised operators mostly to accept more element types (bfloat16, float8, int4, int2,
# float4). A model of those opsets is read when each of its operators is unchanged since opset 21, or its
# revision only widened the types (same inputs, outputs, attributes and text in onnx's schema), or it is one
# of the revisions below, checked by hand: an added attribute that acts only on types minicompress refuses
# (a node setting it is refused by the attribute check), or a clarification that minicompress already
# follows. Element types that are not implemented are refused where the values are read.
NEWEST_OPSET = 28
REVISIONS_READ_AS_21 = {
    ("MaxPool", 22): "states that windows starting in the right padding are ignored (ceil_mode), as here",
    ("AveragePool", 22): "states that windows starting in the right padding are ignored (ceil_mode), as here",
    ("Cast", 24): "adds float8e8m0 and its round_mode attribute", ("Cast", 28): "adds types",
    ("Range", 27): "adds stash_type, for float16 and bfloat16 only",
    ("QuantizeLinear", 23): "adds 4-bit types and precision (default: the scale's type, as before)",
    ("QuantizeLinear", 25): "adds 2-bit types",
    ("DequantizeLinear", 23): "adds 4-bit types and output_dtype (default: the scale's type, as before)",
}


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading ONNX files needs the onnx package: pip install 'minicompress[onnx]'") from exc
    return onnx


def _schema_text(schema):
    return ([(i.name, i.option) for i in schema.inputs], [(o.name, o.option) for o in schema.outputs],
            sorted(schema.attributes), schema.doc)


def _check_read_as_21(op_type, opset, node_name):
    """Refuse a node of a model opset above 21 whose operator changed meaning after opset 21."""
    from onnx import defs
    try:
        old = defs.get_schema(op_type, MAX_OPSET)
    except Exception:  # noqa: BLE001  (onnx raises SchemaError for an unknown operator or opset)
        return          # not an operator of onnx's schema at 21: the registry lookup names it
    for version in range(MAX_OPSET + 1, opset + 1):
        schema = defs.get_schema(op_type, version)
        if schema.since_version <= old.since_version or (op_type, schema.since_version) in REVISIONS_READ_AS_21:
            continue
        previous = defs.get_schema(op_type, schema.since_version - 1)
        if _schema_text(schema) != _schema_text(previous):
            raise registry.UnsupportedOperatorError(
                f"operator {op_type!r} (node {node_name!r}, opset {opset}): its revision at opset "
                f"{schema.since_version} changed more than the types it accepts; minicompress implements it "
                f"up to opset {MAX_OPSET}")


def read_model(source):
    """A ModelProto from a path, bytes or a ModelProto."""
    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return onnx.load_from_string(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no ONNX file at {path!r}")
        return onnx.load(path)
    raise TypeError(f"model must be a path, bytes or an onnx.ModelProto, got {type(source).__name__}")


def attribute_values(node):
    """{name: Python value} of a NodeProto's attributes (tensors as NumPy arrays, strings decoded)."""
    onnx = _onnx()
    from onnx import numpy_helper
    values = {}
    for attr in node.attribute:
        if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise registry.UnsupportedOperatorError(
                f"operator {node.op_type!r} (node {node.name!r}): subgraph attribute {attr.name!r} "
                "(control flow) is not supported")
        if attr.type == onnx.AttributeProto.TENSOR:
            values[attr.name] = numpy_helper.to_array(attr.t)
        elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
            raise registry.UnsupportedOperatorError(f"node {node.name!r}: sparse tensor attributes are not supported")
        else:
            value = onnx.helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, list):
                value = [v.decode() if isinstance(v, bytes) else v for v in value]
            values[attr.name] = value
    return values


def _value_shapes(model):
    """{value name: [dim, ...]} from the graph's declarations and onnx's shape inference (None = unknown).

    A negative `dim_value` (PaddlePaddle's exporter writes -1 for a dynamic dimension) is unknown too, as
    onnxruntime reads it."""
    onnx = _onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:   # shape inference is a help here, never a requirement
        inferred = model
    shapes = {}
    graph = inferred.graph
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        t = info.type.tensor_type
        if t.HasField("shape"):
            shapes[info.name] = [(d.dim_value if d.dim_value >= 0 else None) if d.HasField("dim_value")
                                 else (d.dim_param or None) for d in t.shape.dim]
    return shapes


def _input_spec(info, shapes):
    t = info.type.tensor_type
    dtype = numpy_dtype(t.elem_type, f"input {info.name!r}").name if t.elem_type else None
    return {"name": info.name, "dtype": dtype, "shape": shapes.get(info.name)}


def load(source, arithmetic="exact") -> GraphModule:
    """Build a GraphModule from an ONNX model (a path, bytes or onnx.ModelProto); it is in eval mode.

    `model(*inputs)` takes arrays or Tensors in the graph's input order (initializers excluded) and returns
    a Tensor, or a tuple in the graph's output order.

    `arithmetic` says how the integer operators (MatMulInteger, QLinearMatMul, QGemm, QLinearConv,
    DynamicQuantizeLSTM) sum uint8 x int8 products: "exact" (the ONNX formula; onnxruntime on CPUs with
    VNNI), or "u8s8-saturating", byte pairs added in saturating int16 as onnxruntime's MLAS kernels do on
    AVX2 CPUs without VNNI (`kernels/saturating.py`), to reproduce that onnxruntime bit for bit. Every
    other operator and type is the same either way. The choice is kept in each such node.

    Raises:
        ValueError: `arithmetic` is not one of "exact", "u8s8-saturating".
    """
    from onnx import numpy_helper
    check_arithmetic(arithmetic)
    model = read_model(source)
    opsets = {registry.normalise_domain(o.domain): o.version for o in model.opset_import}
    opset = opsets.get("", None)
    if opset is None or not MIN_OPSET <= opset <= NEWEST_OPSET:
        raise registry.UnsupportedOperatorError(
            f"the model's default-domain opset is {opset}; minicompress reads opsets {MIN_OPSET} to {MAX_OPSET} "
            f"(and {MAX_OPSET + 1} to {NEWEST_OPSET} where an operator is unchanged since {MAX_OPSET} but for types)")
    graph = model.graph
    shapes = _value_shapes(model)
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    inputs = [_input_spec(i, shapes) for i in graph.input if i.name not in constants]
    nodes, modules, used = [], {}, set()

    def constant(value):
        return constants.get(value) if value else None

    def rank(value):
        shape = shapes.get(value)
        return None if shape is None else len(shape)

    def spatial(value):
        shape = shapes.get(value)
        if shape is None or any(not isinstance(d, int) or d <= 0 for d in shape[2:]):
            return None
        return shape[2:]

    for index, proto in enumerate(graph.node):
        name = proto.name or f"{proto.op_type}_{index}"
        domain = registry.normalise_domain(proto.domain)
        version = opsets.get(domain)
        if version is None:
            raise registry.UnsupportedOperatorError(
                f"operator {proto.op_type!r} (node {name!r}) is in domain {domain!r}, which the model does not import")
        if domain == "" and version > MAX_OPSET:
            _check_read_as_21(proto.op_type, version, name)
        cls = registry.resolve(domain, proto.op_type, version, name)
        attrs = attribute_values(proto)
        registry.check_attributes(cls, attrs, name, version)
        ins, outs = list(proto.input), list(proto.output)
        if proto.op_type == "Constant" and domain == "":
            constants[outs[0]] = np.asarray(cls().run(**attrs))
            continue
        if proto.op_type == "Identity" and domain == "" and ins[0] in constants:
            constants[outs[0]] = constants[ins[0]]     # torch's exporter shares equal weights this way
            continue
        lowered = lower(proto.op_type, cls.since_version, attrs, ins, outs, constant, rank, spatial, domain)
        if lowered is not None:
            layer, pre = lowered
            target = unique_name(sanitize(name), modules)
            modules[target] = layer
            source = ins[0]
            for k, (op_type, op_version, op_attrs) in enumerate(pre):
                staged = f"{name}/{op_type.lower()}_{k}"
                nodes.append({"name": staged, "kind": "op", "op_type": op_type, "domain": "",
                              "version": op_version, "attrs": op_attrs, "inputs": [source], "outputs": [staged]})
                source = staged
            nodes.append({"name": name, "kind": "module", "target": target, "op_type": proto.op_type,
                          "inputs": [source], "outputs": outs[:1]})
            continue
        used.update(v for v in ins if v in constants)
        nodes.append({"name": name, "kind": "op", "op_type": proto.op_type, "domain": domain,
                      "version": cls.since_version, "attrs": attrs, "inputs": ins, "outputs": outs})
        if cls.uses_arithmetic and arithmetic != "exact":
            nodes[-1]["arithmetic"] = arithmetic
    used.update(o.name for o in graph.output if o.name in constants)
    module = GraphModule(inputs, [o.name for o in graph.output], nodes, modules,
                         {v: constants[v] for v in sorted(used)}, opset_import=opsets)
    module.eval()
    return module
