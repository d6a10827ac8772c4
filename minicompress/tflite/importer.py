"""TFLite -> GraphModule: `load(path | bytes)`.

The graph keeps LiteRT's interface: its inputs and outputs are the subgraph's, NHWC as stored, with the
same dtypes, in the same order. Each TFLite operator becomes the graph's existing nodes (see `lower.py`):
CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED become `nn` layers through the ONNX
importer's `lower` (so prune, quantize and shrink see ordinary layers), everything else ONNX operator nodes.
The layers and poolings compute in NCHW: a Transpose node goes in where a value changes layout, and values
produced in NCHW stay there through elementwise activations, so a chain of convolutions transposes once.

Constant tensors (buffers) become graph constants; DEQUANTIZE of a float16 or int8 constant and DENSIFY of
a sparse constant are folded when the graph is built (LiteRT also computes them once, before the first run).
A file that is not a TFLite model raises `TFLiteFormatError` naming it; an operator that is not
implemented (custom ones included) raises `UnsupportedOperatorError` naming it, its code and its node.
"""
from __future__ import annotations

import os

import numpy as np

from ..graph import registry
from ..graph.module import GraphModule, sanitize, unique_name
from . import schema
from .errors import TFLiteFormatError
from .lower import CONVERTERS, check_integer_support


def _read_bytes(source):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the TFLite bytes given"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no TFLite file at {path!r}")
        with open(path, "rb") as f:
            return f.read(), f"{path!r}"
    raise TypeError(f"model must be a path or bytes, got {type(source).__name__}")


def read(source):
    """The model's tables (`schema.read_model`) from a path or bytes; TFLiteFormatError names the file."""
    buf, where = _read_bytes(source)
    try:
        return schema.read_model(buf), where
    except schema.FormatError as exc:
        raise TFLiteFormatError(f"{where} is not a readable TFLite model: {exc}") from None


class Builder:
    """Collects the nodes, layers and constants of the GraphModule being built.

    Every TFLite tensor (by index) has an NHWC value (its name in the graph is the tensor's name) and may have
    an NCHW twin (`name/nchw`); `value` and `nchw` create the missing one with a Transpose node on demand."""

    TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]

    def __init__(self, model, subgraph, where):
        self.model, self.subgraph, self.where = model, subgraph, where
        self.tensors = subgraph["tensors"]
        self.nodes, self.modules, self.constants = [], {}, {}
        self.arrays = {}              # tensor index -> constant array (None: not a constant)
        self.names = {}               # tensor index -> NHWC value name
        self.nchw_names = {}          # tensor index -> NCHW value name
        self.taken, self.defined = set(), set()
        for index, tensor in enumerate(self.tensors):
            base = tensor["name"] or f"tensor_{index}"
            self.names[index] = unique_name(base, self.taken)
            self.taken.add(self.names[index])
            self.arrays[index] = self._constant(index, tensor)

    # ----- constants ---------------------------------------------------------------------------
    def _constant(self, index, tensor):
        buffers = self.model["buffers"]
        b = tensor["buffer"]
        if b <= 0 or b >= len(buffers) or not buffers[b].size:
            return None
        dtype = schema.TENSOR_TYPES.get(tensor["type"])
        if dtype is None:
            raise TFLiteFormatError(f"{self.where}: constant tensor {tensor['name']!r} has type "
                                    f"{_type_name(tensor['type'])}, which minicompress does not read")
        data = buffers[b]
        itemsize = np.dtype(dtype).itemsize
        if data.size % itemsize:
            raise TFLiteFormatError(f"{self.where}: buffer {b} of tensor {tensor['name']!r} holds {data.size} "
                                    f"bytes, not a whole number of {np.dtype(dtype).name} values")
        values = np.frombuffer(data.tobytes(), np.dtype(dtype).newbyteorder("<")).astype(dtype)
        if tensor["sparsity"] is not None:
            return SparseConstant(values, tensor["shape"], tensor["sparsity"])
        if values.size != int(np.prod(tensor["shape"], dtype=np.int64)):
            raise TFLiteFormatError(f"{self.where}: tensor {tensor['name']!r} of shape {tensor['shape']} has "
                                    f"{values.size} values in buffer {b}")
        return values.reshape(tensor["shape"])

    def array(self, index, op, what):
        """The constant array of tensor `index`, or UnsupportedOperatorError when it is computed."""
        value = self.arrays.get(index) if index >= 0 else None
        if value is None or isinstance(value, SparseConstant):
            raise registry.UnsupportedOperatorError(
                f"{op.label}: its {what} (tensor {self.tensor_name(index)!r}) must be a constant")
        return value

    def weights(self, op, what, weight=1, bias=2):
        """(weights, bias or None): the constants at input positions `weight` and `bias` (-1 or absent: no bias)."""
        b = op.inputs[bias] if len(op.inputs) > bias and op.inputs[bias] >= 0 else None
        return self.array(op.inputs[weight], op, what), (None if b is None else self.array(b, op, "bias"))

    def const(self, array, hint):
        name = unique_name(sanitize(hint), self.taken)
        self.taken.add(name)
        self.constants[name] = np.asarray(array)
        return name

    # ----- values and layouts ------------------------------------------------------------------
    def tensor_name(self, index):
        return self.tensors[index]["name"] if 0 <= index < len(self.tensors) else f"#{index}"

    def shape(self, index):
        return list(self.tensors[index]["shape"])

    def dtype(self, index):
        return schema.TENSOR_TYPES.get(self.tensors[index]["type"])

    def value(self, index):
        """The NHWC (as stored) value of tensor `index`."""
        if index in self.names and self.names[index] in self.defined:
            return self.names[index]
        array = self.arrays.get(index)
        if array is not None and not isinstance(array, SparseConstant):
            self.constants[self.names[index]] = array
            self.defined.add(self.names[index])
            return self.names[index]
        if index in self.nchw_names:
            return self.op("Transpose", [self.nchw_names[index]], {"perm": self.TO_NHWC}, out=self.names[index])
        raise TFLiteFormatError(f"{self.where}: tensor {self.tensor_name(index)!r} is read before any operator "
                                "computes it (operators must be in execution order)")

    def nchw(self, index):
        """The NCHW value of the 4-D tensor `index`."""
        if index not in self.nchw_names:
            name = unique_name(self.names[index] + "/nchw", self.taken)
            self.taken.add(name)
            self.nchw_names[index] = self.op("Transpose", [self.value(index)], {"perm": self.TO_NCHW}, out=name)
        return self.nchw_names[index]

    def tensor_values(self):
        """{value name: (TFLite tensor index, "nhwc" | "nchw")}: the value that holds each tensor the file's
        inputs and operators compute (NHWC as stored where that value exists, else its NCHW twin). Tensors
        folded into constants at import (DEQUANTIZE / DENSIFY of weights) are absent."""
        values = {}
        for index, name in self.names.items():
            if name in self.defined and self.arrays.get(index) is None:
                values[name] = (index, "nhwc")
            elif index in self.nchw_names:
                values[self.nchw_names[index]] = (index, "nchw")
        return values

    def has_nchw_only(self, index):
        return index in self.nchw_names and self.names[index] not in self.defined

    def set(self, index, value, layout="nhwc"):
        """Tensor `index` is computed as `value`, in `layout`. A value the last node has just written and
        nothing reads yet is renamed: to the tensor's name (NHWC) or `name/nchw`."""
        target = self.names[index] if layout == "nhwc" else self.fresh(self.names[index] + "/nchw")
        last = self.nodes[-1] if self.nodes else None
        if (last is not None and value in last["outputs"] and value not in self.constants
                and not any(value in node["inputs"] for node in self.nodes)):
            last["outputs"][last["outputs"].index(value)] = target
            self.defined.add(target)
            value = target
        elif layout == "nhwc" and value != target:
            self.op("Identity", [value], out=target)
        if layout == "nchw":
            self.nchw_names[index] = value

    def fresh(self, hint):
        name = unique_name(hint, self.taken)
        self.taken.add(name)
        return name

    # ----- nodes -------------------------------------------------------------------------------
    def op(self, op_type, inputs, attrs=None, out=None, n_out=1, name=None, version=None, domain=""):
        """Append an operator node (ONNX's of `version`, else the newest implemented; or TFLite's integer ops
        of domain "tflite"); returns its output name(s)."""
        cls = registry.resolve(domain, op_type, MAX_OPSET) if version is None else \
            registry.lookup(domain, op_type, version)
        attrs = dict(attrs or {})
        registry.check_attributes(cls, attrs, name or op_type, MAX_OPSET)
        if out is None:
            outs = [self.fresh(f"{name or op_type}:{k}") for k in range(n_out)]
        else:
            outs = [out] if isinstance(out, str) else list(out)
        self.taken.update(outs)
        self.nodes.append({"name": self.fresh(name or outs[0]), "kind": "op", "op_type": op_type, "domain": domain,
                           "version": cls.since_version, "attrs": attrs, "inputs": list(inputs), "outputs": outs})
        self.defined.update(outs)
        return outs[0] if n_out == 1 and out is None or isinstance(out, str) else outs

    def layer(self, layer, source, name, op_type):
        """Append a "module" node calling `layer` on `source`; returns its output name."""
        target = unique_name(sanitize(name), self.modules)
        self.modules[target] = layer
        out = self.fresh(f"{name}/{op_type.lower()}")
        self.nodes.append({"name": self.fresh(name), "kind": "module", "target": target, "op_type": op_type,
                           "inputs": [source], "outputs": [out]})
        self.defined.add(out)
        return out

    def activation(self, value, code, op, hint):
        """The fused activation `code` (ActivationFunctionType) applied to `value`, as LiteRT's kernels apply
        it: they clamp to the range of RELU [0, inf), RELU_N1_TO_1 [-1, 1] or RELU6 [0, 6]
        (`CalculateActivationRange`), and leave the value as it is for every other code (TANH, SIGN_BIT)."""
        if code == 1:
            return self.op("Relu", [value], name=hint + "/relu")
        if code in (2, 3):
            low, high = (-1.0, 1.0) if code == 2 else (0.0, 6.0)
            return self.op("Clip", [value, self.const(np.array(low, np.float32), hint + "/min"),
                                    self.const(np.array(high, np.float32), hint + "/max")], name=hint + "/clip")
        if code not in range(len(schema.ACTIVATIONS)):
            raise registry.UnsupportedOperatorError(f"{op.label}: fused activation {code} is not an "
                                                    "ActivationFunctionType")
        return value


class SparseConstant:
    """A constant tensor stored in TFLite's sparse format, read by a DENSIFY operator."""

    def __init__(self, values, shape, sparsity):
        self.values, self.shape, self.sparsity = values, list(shape), sparsity


class OperatorView:
    """One operator of the subgraph: its name and code, version, inputs, outputs and options."""

    def __init__(self, model, index, op):
        code = model["opcodes"][op["opcode_index"]] if op["opcode_index"] < len(model["opcodes"]) else None
        if code is None:
            raise TFLiteFormatError(f"operator {index} names operator code {op['opcode_index']}, but the model has "
                                    f"{len(model['opcodes'])}")
        self.index, self.code, self.version = index, code["code"], code["version"]
        self.custom_code = code["custom_code"]
        self.name = schema.operator_name(self.code)
        self.inputs, self.outputs = op["inputs"], op["outputs"]
        self.options = op["options"] or {}
        self.options_type = op["options_type"]
        self.known_options = op["options"] is not None
        self.label = f"operator {self.name} (code {self.code}, node {index})"


def _enum(names, code):
    return names[code] if 0 <= code < len(names) else str(code)


def _type_name(code):
    return _enum(schema.TENSOR_TYPE_NAMES, code)


MAX_OPSET = 21


def _input_spec(builder, index):
    tensor = builder.tensors[index]
    dtype = schema.TENSOR_TYPES.get(tensor["type"])
    if dtype is None:
        raise TFLiteFormatError(f"{builder.where}: input {tensor['name']!r} has type {_type_name(tensor['type'])}, "
                                "which minicompress does not read")
    signature = tensor["shape_signature"] or tensor["shape"]
    shape = [None if d < 0 else int(d) for d in signature]
    return {"name": builder.names[index], "dtype": np.dtype(dtype).name, "shape": shape}


def _check_indices(sub, n_buffers, where):
    """Every tensor index the subgraph's operators, inputs and outputs name exists (-1: an omitted optional
    operator input), and every buffer index a tensor names."""
    n = len(sub["tensors"])
    for what, indices, low in [("inputs", sub["inputs"], 0), ("outputs", sub["outputs"], 0)] + \
            [(f"operator {k} inputs", op["inputs"], -1) for k, op in enumerate(sub["operators"])] + \
            [(f"operator {k} outputs", op["outputs"], 0) for k, op in enumerate(sub["operators"])]:
        bad = [i for i in indices if not low <= i < n]
        if bad:
            raise TFLiteFormatError(f"{where}: the subgraph's {what} name tensors {bad}, but it has {n} tensors")
    for tensor in sub["tensors"]:
        if tensor["buffer"] >= max(n_buffers, 1):
            raise TFLiteFormatError(f"{where}: tensor {tensor['name']!r} names buffer {tensor['buffer']}, but the "
                                    f"model has {n_buffers}")


def load(source, subgraph=0) -> GraphModule:
    """Build a GraphModule from a TFLite model (a path or bytes); it is in eval mode.

    `model(*inputs)` takes arrays or Tensors shaped and typed as the subgraph's inputs (NHWC images, as
    LiteRT's interpreter takes them) and returns a Tensor, or a tuple in the subgraph's output order.
    Only subgraph 0, the model's main graph, is read. `model.tflite_tensors` maps the value that holds each
    TFLite tensor the graph computes to (tensor index, "nhwc" | "nchw") (`Builder.tensor_values`; saved with
    the model): `minicompress check` reads LiteRT's intermediate tensors against them.
    """
    model, where = read(source)
    graphs = model["subgraphs"]
    if not graphs:
        raise TFLiteFormatError(f"{where} has no subgraph")
    if subgraph != 0:
        names = [g["name"] or f"subgraph {i}" for i, g in enumerate(graphs)]
        detail = f"{names[subgraph]!r}" if isinstance(subgraph, int) and 0 <= subgraph < len(names) else \
            f"{subgraph!r} (the model has {len(names)}: {names})"
        raise registry.UnsupportedOperatorError(f"{where}: subgraph {detail} is not read; minicompress reads "
                                                "subgraph 0, the main graph, only")
    sub = graphs[0]
    _check_indices(sub, len(model["buffers"]), where)
    builder = Builder(model, sub, where)
    inputs = [_input_spec(builder, i) for i in sub["inputs"]]
    builder.defined.update(spec["name"] for spec in inputs)
    for index, raw in enumerate(sub["operators"]):
        try:
            op = OperatorView(model, index, raw)
        except TFLiteFormatError as exc:
            raise TFLiteFormatError(f"{where}: {exc}") from None
        if op.code == schema.CUSTOM:
            raise registry.UnsupportedOperatorError(
                f"{where}: custom operator {op.custom_code!r} (code {op.code}, node {index}) is not supported")
        convert = CONVERTERS.get(op.name)
        if convert is None:
            raise registry.UnsupportedOperatorError(f"{where}: {op.label} is not supported")
        if not op.known_options:
            raise registry.UnsupportedOperatorError(
                f"{where}: {op.label} carries builtin options of union member {op.options_type}, "
                "which minicompress does not read")
        try:
            check_integer_support(builder, op)
            convert(builder, op)
        except registry.UnsupportedOperatorError as exc:
            raise registry.UnsupportedOperatorError(f"{where}: {exc}") from None
        except (ValueError, IndexError, KeyError, TypeError, ArithmeticError) as exc:
            if isinstance(exc, TFLiteFormatError):
                raise TFLiteFormatError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
            raise TFLiteFormatError(f"{where}: {op.label}: its tensors do not fit the operator "
                                    f"({type(exc).__name__}: {exc})") from None
    outputs = [builder.value(i) for i in sub["outputs"]]
    used = {v for node in builder.nodes for v in node["inputs"]} | set(outputs)
    module = GraphModule(inputs, outputs, builder.nodes, builder.modules,
                         {k: v for k, v in builder.constants.items() if k in used}, opset_import={"": MAX_OPSET})
    module.tflite_tensors = builder.tensor_values()
    module.eval()
    return module
