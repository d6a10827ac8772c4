"""Model -> TFLite: `export(model, example_inputs, path=None, io_dtype="int8")`, a float model or an int8 model
of `minicompress.quant`, written as a `.tflite` flatbuffer that LiteRT's interpreter runs.

A GraphModule is written node by node; any other model is first traced on `example_inputs`
(`graph.trace`, as `onnx.export` does), so its forward must only chain layers. The example runs once:
every value's shape (TFLite files carry static shapes: the example's batch size is the file's) and, in
an int8 model, every value's scale and zero point come from that run.

Layout, as ai-edge-torch writes models: the file's inputs and outputs have the model's own shapes (NCHW
images), a TRANSPOSE at each boundary turns them to TFLite's NHWC, and everything between the two runs in
NHWC (convolutions, pools, MEAN, channel softmax and concatenation, elementwise ops). A value leaves NHWC
only where an operator needs the model's order (a Flatten of a feature map with H * W > 1 is a TRANSPOSE
back to NCHW and a RESHAPE, so the flattened order is torch's).

    layer / operator node                 TFLite
    Conv2d (groups 1) [+ BatchNorm] [+ ReLU / ReLU6]   CONV_2D (filter OHWI; BN folded; fused activation)
    Conv2d (groups = in_channels)         DEPTHWISE_CONV_2D (filter 1HW(C*M), depth_multiplier M)
    Linear [+ ReLU]                       FULLY_CONNECTED (keep_num_dims past rank 2)
    BatchNorm after anything else         MUL, ADD (per channel)
    ReLU, ReLU6, Clip, Hardtanh           the producer's fused activation when it is the only reader
                                          (RELU, RELU6, RELU_N1_TO_1), else RELU / RELU6 / RELU_N1_TO_1,
                                          MAXIMUM then MINIMUM for other bounds
    Sigmoid Tanh HardSwish LeakyReLU      LOGISTIC TANH HARD_SWISH LEAKY_RELU
    Add Mul Sub Div                       ADD MUL SUB DIV (NumPy broadcasting)
    MaxPool2d AvgPool2d                   MAX_POOL_2D AVERAGE_POOL_2D
    AdaptiveAvgPool2d(1), GlobalAveragePool   MEAN over H and W
    Flatten Reshape / Softmax / Concat    RESHAPE / SOFTMAX (beta 1) / CONCATENATION
    Dropout Identity QuantStub DeQuantStub    nothing (the value passes on)

TF's padding is SAME or VALID: a torch padding equal to SAME's split is SAME, zero is VALID, any other
is a PAD before a VALID window (zeros, or the zero point of int8 codes: real zero either way; a max pool
with such a padding is refused, since it would pad -inf).

int8 (a model that `quant.convert` made, best with `quant.get_default_qconfig("tflite")`): the integer
layers become TFLite's int8 operators, fully integer. Activations are int8 per tensor: minicompress's quint8
code q with zero point z is TFLite's q - 128 with zero point z - 128, the same real value. Weights are the
layer's own int8 codes, per output channel (quantized_dimension 0, or 3 for a depthwise filter), which must
have zero point 0 and lie in [-127, 127] (TFLite's spec; the "tflite" qconfig quantizes so); the bias is
int32 at s_in * s_w[c] (`kernels.qlinear.quantize_bias`, the rounding minicompress's layers use). A fused
ReLU is the operator's fused activation. `io_dtype="int8"` (the default) gives what TFLite's converter
gives with `inference_input_type = inference_output_type = tf.int8`: the file takes the int8 codes of the
model's Quantize layer and returns those of its last layer (dequantize with the output tensor's scale and
zero point); `io_dtype="float32"` keeps a QUANTIZE after the input and a DEQUANTIZE before the output.

Anything else is refused before any byte is written (`TFLiteExportError` naming the node and its type),
and the file is written to a temporary name and renamed, so no partial file is ever left.
"""
from __future__ import annotations

import os
import secrets

import numpy as np

from ..graph.module import GraphModule
from ..graph.trace import TraceError, trace
from ..nn.module import Module
from ..qtensor import QTensor
from ..quant import dtypes as qd
from ..tensor import Tensor
from . import export_layers as layers
from . import schema
from .errors import TFLiteExportError
from .writer import ModelWriter

TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


class Exporter:
    """The TFLite tensors of the graph's values, in the layouts they exist in, and the operators so far.

    Each value (by name) has a "plain" tensor (the model's own layout) and / or, when 4-D, an "nhwc" one;
    `plain` and `nhwc` add the missing one with a TRANSPOSE when an operator asks for it."""

    def __init__(self, graph, env, io_dtype):
        self.graph, self.env, self.io_dtype = graph, env, io_dtype
        self.w = ModelWriter()
        self.tensors = {}                    # value -> {"plain": index, "nhwc": index}
        self.producers = {}                  # tensor index -> the operator dict that writes it
        self.perms = {}
        self.consumers = {}
        for node in graph.nodes:
            for v in node["inputs"]:
                self.consumers[v] = self.consumers.get(v, 0) + 1
        self.outputs = set(graph.outputs)
        self.input_tensors = {}             # model input -> its tensor
        self.fold_bn, self.folded = {}, set()    # conv node -> the BatchNorm2d folded into it; those BN nodes

    # ----- values ------------------------------------------------------------------------------
    def shape(self, value):
        return list(self.env[value].shape)

    def is_quantized(self, value):
        return isinstance(self.env[value], QTensor)

    def quantization(self, value):
        """TFLite's int8 (scale, zero point) of a QTensor value, or None for a float one."""
        q = self.env[value]
        if not isinstance(q, QTensor):
            return None
        if q.is_per_channel():
            raise TFLiteExportError(f"value {value!r} is quantized per channel; TFLite activations are per tensor")
        shift = 128 if q.dtype is qd.quint8 else 0
        return {"scale": np.array([q.q_scale()], np.float32), "zero_point": np.array([q.q_zero_point() - shift])}

    def dtype(self, value):
        if self.is_quantized(value):
            return np.int8
        dtype = np.dtype(self.env[value].dtype)
        if dtype != np.float32:
            raise TFLiteExportError(f"value {value!r} is {dtype}; the exported graph computes in float32 or int8")
        return np.float32

    def new(self, value, layout, suffix=""):
        """A new tensor for `value` in `layout` (the shape permuted to NHWC for "nhwc"); its index. A twin of a
        tensor the value already has takes that tensor's type and quantization (an alias such as an int8
        model's DeQuantize output is the int8 tensor it passes on)."""
        shape = self.shape(value)
        if layout == "nhwc":
            shape = [shape[i] for i in TO_NHWC]
        existing = next(iter(self.tensors.get(value, {}).values()), None)
        if existing is not None:
            twin = self.w.tensors[existing]
            index = self.w.tensor(value + suffix, shape, schema.TENSOR_TYPES[twin["type"]], twin["quantization"])
        else:
            index = self.w.tensor(value + suffix, shape, self.dtype(value), self.quantization(value))
        self.tensors.setdefault(value, {})[layout] = index
        return index

    def alias(self, value, source):
        """`value` is `source` (an identity layer, a folded batch norm, a fused activation)."""
        self.tensors[value] = self.tensors[source]

    def layout(self, value):
        return "nhwc" if "nhwc" in self.tensors[value] else "plain"

    def constant(self, name, array, quantization=None):
        return self.w.constant(name, array, quantization)

    def perm(self, perm):
        key = tuple(perm)
        if key not in self.perms:
            self.perms[key] = self.constant(f"perm_{''.join(map(str, perm))}", np.array(perm, np.int32))
        return self.perms[key]

    def plain(self, value):
        t = self.tensors[value]
        if "plain" not in t:
            out = self.new(value, "plain", "/nchw")
            self.op("TRANSPOSE", [t["nhwc"], self.perm(TO_NCHW)], [out])
        return t["plain"]

    def nhwc(self, value):
        t = self.tensors[value]
        if "nhwc" not in t:
            if len(self.shape(value)) != 4:
                raise TFLiteExportError(f"value {value!r} of shape {self.shape(value)} is not a 4-D feature map")
            out = self.new(value, "nhwc", "/nhwc")
            self.op("TRANSPOSE", [t["plain"], self.perm(TO_NHWC)], [out])
        return t["nhwc"]

    def get(self, value, layout):
        return self.nhwc(value) if layout == "nhwc" else self.plain(value)

    def op(self, name, inputs, outputs, options=None, **fields):
        op = self.w.operator(name, inputs, outputs, options, **fields)
        for index in outputs:
            self.producers[index] = op
        return op

    def only_reader(self, value):
        """Whether one node reads `value` and it is not a graph output (so its producer may absorb that node)."""
        return self.consumers.get(value, 0) == 1 and value not in self.outputs


def _as_inputs(example_inputs):
    example = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return tuple(x if isinstance(x, Tensor) else Tensor(np.asarray(x)) for x in example)


def _is_quantized_model(graph):
    return any(node["kind"] == "module" and type(graph.get_submodule(node["target"])).__module__.startswith(
        "minicompress.quant.") for node in graph.nodes)


def _converters(graph, quantized):
    """[(node, converter)] for every node, or TFLiteExportError naming the first one that has none."""
    plan = []
    for node in graph.nodes:
        if node["kind"] == "module":
            layer = graph.get_submodule(node["target"])
            convert = layers.for_layer(layer, quantized)
            what = f"layer {node['target']!r} ({type(layer).__name__})"
        else:
            convert = None if quantized else layers.OPERATORS.get(node["op_type"])
            what = f"operator node {node['name']!r} ({node['op_type']})"
        if convert is None:
            kind = "an int8 model" if quantized else "a float model"
            raise TFLiteExportError(f"{what} has no TFLite export in {kind} (supported: "
                                    f"{layers.supported(quantized)})")
        plan.append((node, convert))
    return plan


def export(model, example_inputs, path=None, io_dtype="int8"):
    """Write `model` as a TFLite flatbuffer to `path` (atomically) and return the file's bytes.

    Args:
        model: a GraphModule (written node by node) or a Module traced on `example_inputs`; float layers,
            or the integer layers of `quant.convert` (fully integer; see the module docstring).
        example_inputs: a Tensor / array or a tuple of them: the model's positional inputs, whose shapes
            (batch size included) the file keeps.
        path: where to write; None returns the bytes only.
        io_dtype: for an int8 model, "int8" (inputs and outputs are int8 codes, as TFLite's converter with
            inference_input_type = tf.int8) or "float32" (QUANTIZE / DEQUANTIZE inside the file). A float
            model's inputs and outputs are float32 either way.

    Raises:
        TFLiteExportError: a layer or operator with no TFLite form here, or int8 weights outside TFLite's
            spec, named; nothing is written then.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress Module, got {type(model).__name__}")
    if io_dtype not in ("int8", "float32"):
        raise ValueError(f"io_dtype must be 'int8' or 'float32', got {io_dtype!r}")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    inputs = _as_inputs(example_inputs)
    from ..autograd import no_grad
    was_training = model.training
    model.eval()
    try:
        try:
            graph = model if isinstance(model, GraphModule) else trace(model, inputs, dynamic_batch=False)
        except TraceError as exc:
            raise TFLiteExportError(str(exc)) from None
        quantized = _is_quantized_model(graph)
        plan = _converters(graph, quantized)
        with no_grad():
            _, env = graph.run(*inputs, keep="all")
        data = _build(graph, env, plan, quantized, io_dtype)
    finally:
        model.train(was_training)
    if path is not None:
        _write_atomically(os.fspath(path), data)
    return data


def _build(graph, env, plan, quantized, io_dtype):
    ex = Exporter(graph, env, io_dtype if quantized else "float32")
    for spec in graph.inputs:
        if not (quantized and io_dtype == "int8"):
            ex.input_tensors[spec["name"]] = ex.new(spec["name"], "plain")
    layers.plan_batch_norm_folding(ex, plan)
    for node, convert in plan:
        convert(ex, node)
    for spec in graph.inputs:
        if spec["name"] not in ex.input_tensors:
            raise TFLiteExportError(f"input {spec['name']!r}: an int8 model's input must be read by its Quantize "
                                    "layer only (or export with io_dtype='float32')")
    outputs = [ex.plain(value) for value in graph.outputs]
    float_code = schema.TENSOR_TYPE_CODES[np.dtype(np.float32)]
    for value, index in zip(graph.outputs, outputs):
        if quantized and ex.io_dtype == "int8" and ex.w.tensors[index]["type"] == float_code:
            raise TFLiteExportError(f"output {value!r} is float; an int8 model ends in quantized layers (and "
                                    "DeQuantize)")
    return ex.w.to_bytes([ex.input_tensors[s["name"]] for s in graph.inputs], outputs)


def _write_atomically(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write to {path!r}: it is a folder")
    tmp = os.path.join(folder, f".tmp-{secrets.token_hex(8)}.tflite")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)

