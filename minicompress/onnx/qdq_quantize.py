"""`quantize_qdq(model, batches)`: the QDQ graph onnxruntime's `quantize_static` writes, made here.

Reproduces `quantize_static(model, out, reader, quant_format=QDQ, per_channel=..., reduce_range=...,
activation_type=QUInt8, weight_type=QInt8, calibrate_method=...)` of onnxruntime 1.32 on the float graph as
given (run `quant_pre_process` first, as onnxruntime advises, to fold BatchNormalization): the calibration
runs the float graph in minicompress (`onnx.load` -> GraphModule, every value kept by name), the ranges come
from `quant.ort_calibrate`, the numbers from `quant.ort_qparams`, and the rewrite follows
`qdq_quantizer.QDQQuantizer`:

1. Which tensors: every node whose op type is one onnxruntime quantizes (`OP_TYPES`: its QLinear and QDQ
   registries) marks its tensors, by its rule:
       Conv, ConvTranspose, Gemm   input 0 and output 0 as activations, the weight per channel (axis 0;
                                   ConvTranspose 1; Gemm 0 if transB else 1), the bias as int32
       MatMul                      initializer inputs as weights (axis 1), the others as activations
       Relu, Clip                  only when the input is marked: the producer's output is renamed to the
                                   activation's output and the activation node removed (a Conv -> Relu
                                   becomes a Conv writing `/relu_output`), else input and output marked
       Reshape, Transpose, Squeeze, Unsqueeze, Flatten, AveragePool, Slice, TopK, MaxPool (opset >= 12),
       Resize (opset >= 11)        when the input is marked, the output reuses the input's scale and zero
                                   point (its own calibrated range is not used)
       BatchNormalization, InstanceNormalization, LayerNormalization
                                   input and outputs as activations, scale as a per-tensor weight, bias int32
       Pad                         all float inputs marked; the output reuses input 0's pair for edge,
                                   reflect and wrap padding and for a constant 0, else has its own
       Split                       input marked; every output reuses its pair
       Gather, GatherElements      a float initializer table is quantized as an activation and the output
                                   reuses its pair; a marked input passes its pair on
       Where                       outputs marked when both value inputs are
       every other listed op       (Add, Mul, GlobalAveragePool, Concat, Softmax, Sigmoid, ...) all float
                                   inputs and outputs as activations, each with its own range
   A tensor is marked only when its type is known to be float (shape inference); others are skipped, as there.
2. Ranges: inputs and outputs of those nodes (not initializers) are calibrated. Then, as
   `adjust_tensor_ranges`: a Relu / Clip input read by that node alone takes the output's range, and every
   Softmax output gets [0, 1].
3. Numbers: activations uint8, `compute_scale_zp` over the range; weights int8 symmetric per channel
   ([-127, 127], scale max|w| / 127; reduce_range: [-64, 64]); a weight scale is raised where the int32 bias
   would overflow; biases int32 with scale input_scale * weight_scale (* Gemm's beta, then beta = 1).
4. Names, as onnxruntime writes them: a quantized activation `t` gets `t_QuantizeLinear` -> `t_QuantizeLinear_Output`
   -> `t_DequantizeLinear` -> `t_DequantizeLinear_Output`, read by its consumers (a graph output keeps its
   name on the DequantizeLinear, the producer writing `t_QuantizeLinear_Input`); scale and zero point are
   `t_scale`, `t_zero_point`; a weight `w` is stored as `w_quantized` and read through `w_DequantizeLinear`;
   a bias `b` as `b_quantized` (`b_quantized_scale`, `b_quantized_zero_point`) dequantized back to `b`.

The ranges are calibrated on minicompress's float values, which differ from onnxruntime's in the last bits,
so scales agree to about 1e-6 relative, not to the bit; a symmetric range (percentile, distribution) makes
the zero point a tie (round(127.5)) that can fall on 127 here and 128 there.
"""
from __future__ import annotations

import copy

import numpy as np

from ..quant import ort_qparams as oq
from ..quant.ort_calibrate import Calibrator
from .importer import _onnx

# onnxruntime.quantization.registry: QLinearOpsRegistry | QDQRegistry (quantize_static's default op types)
OP_TYPES = frozenset("""ArgMax Conv Gemm MatMul Add Mul Relu Clip LeakyRelu Sigmoid MaxPool GlobalAveragePool
    Split Pad Reshape Squeeze Unsqueeze Flatten Resize AveragePool Concat Softmax Where Gather Transpose
    EmbedLayerNormalization ConvTranspose Slice GatherElements InstanceNormalization LayerNormalization
    BatchNormalization TopK CumSum""".split())
SHARED_OUTPUT = frozenset("Reshape Transpose Squeeze Unsqueeze Flatten AveragePool Slice TopK".split())
_FLOAT_TYPES = (1, 10)                       # TensorProto.FLOAT, FLOAT16


class QDQQuantizer:
    """The rewrite of one model (module docstring, steps 1, 3 and 4); `ranges` maps tensor names to
    (lowest, highest) float32 pairs (step 2 is applied here)."""

    def __init__(self, model, ranges, per_channel=True, reduce_range=False):
        onnx = _onnx()
        self.onnx = onnx
        self.model = model
        graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        self.types = {}
        for info in list(graph.value_info) + list(graph.output) + list(graph.input):
            if info.type.HasField("tensor_type"):
                self.types[info.name] = info.type.tensor_type.elem_type
        self.initializers = {init.name: init for init in graph.initializer}
        self.graph_outputs = {o.name for o in graph.output}
        self.graph_inputs = {i.name for i in graph.input}
        self.per_channel, self.reduce_range = per_channel, reduce_range
        self.ranges = dict(ranges)
        self.to_quantize = {}        # name -> {"kind": "activation" | "weight", "axis": int | None, "shared": (input, node)}
        self.biases = {}             # name -> (node name, input name, weight name, beta)
        self.removed = []
        self.quantized = {}          # name -> (dq output or q name, scale name, zp name)
        self.new_initializers = []

    # ----- step 1: marking ---------------------------------------------------------------------
    def _array(self, name):
        return self.onnx.numpy_helper.to_array(self.initializers[name])

    def _quantizable(self, name):
        if name in self.initializers:
            return self.initializers[name].data_type in _FLOAT_TYPES
        return self.types.get(name) in _FLOAT_TYPES

    def mark(self, name, kind="activation", shared=None):
        if not name or not self._quantizable(name):
            return
        if shared is not None:
            self.to_quantize[name] = {"kind": kind, "axis": None, "shared": shared}
        elif name not in self.to_quantize:
            self.to_quantize[name] = {"kind": kind, "axis": None, "shared": None}

    def mark_weight(self, name, default_axis):
        """Per channel along default_axis when per_channel and the axis exists, else one pair."""
        init = self.initializers.get(name)
        if init is not None and self.per_channel and -len(init.dims) <= default_axis < len(init.dims):
            if init.data_type in _FLOAT_TYPES:
                self.to_quantize[name] = {"kind": "weight", "axis": default_axis % len(init.dims), "shared": None}
        else:
            self.mark(name, "weight")

    def mark_bias(self, node, bias, input_name, weight, beta=1.0):
        init = self.initializers.get(bias)
        if init is None or init.data_type not in _FLOAT_TYPES:
            return
        if bias in self.biases:
            raise NotImplementedError(f"bias {bias!r} is shared by several nodes; onnxruntime copies it, "
                                      "which is not reproduced here")
        self.biases[bias] = (node.name, input_name, weight, beta)

    def is_marked(self, name):
        return name in self.to_quantize or name in self.biases

    def consumers(self, name):
        return [n for n in self.model.graph.node for i in n.input if i == name]

    def try_replacing_upstream_output(self, upstream, output):
        if (output in self.params and len(self.consumers(upstream)) == 1
                and upstream not in self.graph_outputs and upstream not in self.graph_inputs):
            for node in self.model.graph.node:
                node.output[:] = [output if o == upstream else o for o in node.output]
            self.to_quantize.pop(upstream, None)
            return True
        return False

    def mark_node(self, node):
        op, ins, outs = node.op_type, list(node.input), list(node.output)
        if op in ("Conv", "ConvTranspose"):
            self.mark(ins[0])
            self.mark(outs[0])
            self.mark_weight(ins[1], 0 if op == "Conv" else 1)
            if len(ins) == 3:
                self.mark_bias(node, ins[2], ins[0], ins[1])
        elif op == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            self.mark(ins[0])
            self.mark(outs[0])
            self.mark_weight(ins[1], 0 if "transB" in attrs and attrs["transB"].i > 0 else 1)
            if len(ins) == 3 and ins[2] in self.initializers:
                beta = attrs["beta"].f if "beta" in attrs else 1.0
                self.mark_bias(node, ins[2], ins[0], ins[1], beta)
                if "beta" in attrs:
                    attrs["beta"].f = 1.0
        elif op == "MatMul":
            for name in ins + outs:
                if name in self.initializers:
                    self.mark_weight(name, 1)
                else:
                    self.mark(name)
        elif op in ("Relu", "Clip"):
            if not self.is_marked(ins[0]):
                return
            if self.try_replacing_upstream_output(ins[0], outs[0]):
                self.removed.append(node)
            else:
                self.mark(ins[0])
            self.mark(outs[0])
        elif op in SHARED_OUTPUT or (op == "MaxPool" and self.opset >= 12) or (op == "Resize" and self.opset >= 11):
            if self.is_marked(ins[0]):
                self.mark(outs[0], shared=(ins[0], node.name))
        elif op in ("MaxPool", "Resize"):
            return
        elif op == "Pad":
            for name in ins:
                self.mark(name)
            if self._pad_keeps_qparams(node):
                self.mark(outs[0], shared=(ins[0], node.name))
            else:
                self.mark(outs[0])
        elif op == "Split":
            if not self.is_marked(ins[0]):
                self.mark(ins[0])
            for name in outs:
                self.mark(name, shared=(ins[0], node.name))
        elif op in ("Gather", "GatherElements"):
            init = self.initializers.get(ins[0])
            if init is not None and init.data_type in _FLOAT_TYPES:
                self.mark(ins[0])
                self.mark(outs[0], shared=(ins[0], node.name))
            elif self.is_marked(ins[0]):
                self.mark(outs[0], shared=(ins[0], node.name))
        elif op == "Where":
            if self.is_marked(ins[1]) and self.is_marked(ins[2]):
                for name in outs:
                    self.mark(name)
        elif op in ("BatchNormalization", "InstanceNormalization", "LayerNormalization"):
            self.mark(ins[0])
            if ins[1] in self.initializers:
                self.mark_weight(ins[1], 1)
            else:
                self.mark(ins[1])
            if len(ins) > 2 and ins[2]:
                self.mark_bias(node, ins[2], ins[0], ins[1])
            for name in outs:
                self.mark(name)
        else:
            for name in ins + outs:
                self.mark(name)

    def _pad_keeps_qparams(self, node):
        """Whether Pad's output reuses its input's pair (QDQPad): for edge, reflect and wrap padding, and for
        constant padding with the value 0 (which the input's quantization represents exactly)."""
        attrs = {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("mode", b"constant")
        if mode in (b"reflect", b"edge", b"wrap"):
            return True
        if mode != b"constant" or self.types.get(node.input[0]) is None:
            return False
        dtype = self.onnx.helper.tensor_dtype_to_np_dtype(self.types[node.input[0]])
        if self.opset < 11:
            value = np.array(attrs.get("value", 0), dtype)
        elif len(node.input) >= 3 and node.input[2]:
            value = self._constant(node.input[2])
        else:
            value = np.array(0, dtype)
        return value is not None and value.dtype in (np.float32, np.float16) and float(value.item()) == 0

    def _constant(self, name):
        for node in self.model.graph.node:
            if node.op_type == "Constant" and node.output[0] == name:
                for attr in node.attribute:
                    if attr.name == "value":
                        return self.onnx.numpy_helper.to_array(attr.t)
        return self._array(name) if name in self.initializers else None

    # ----- steps 2 and 3: ranges and numbers ---------------------------------------------------
    def adjust_ranges(self):
        for node in self.model.graph.node:
            if node.op_type in ("Clip", "Relu") and node.op_type in OP_TYPES:
                if len(self.consumers(node.input[0])) != 1:
                    continue
                if node.input[0] in self.ranges and node.output[0] in self.ranges:
                    self.ranges[node.input[0]] = self.ranges[node.output[0]]
            elif node.op_type == "Softmax":
                self.ranges[node.output[0]] = (np.float32(0.0), np.float32(1.0))

    def activation_params(self):
        qmin, qmax = oq.qmin_qmax(np.uint8)
        self.params = {}
        for name, (low, high) in self.ranges.items():
            zp, scale = oq.compute_scale_zp(np.asarray(low, np.float32), np.asarray(high, np.float32), qmin, qmax)
            self.params[name] = (np.asarray(zp).squeeze(), np.asarray(scale).squeeze())

    def initializer_params(self):
        out = {}
        for name, info in self.to_quantize.items():
            if name not in self.initializers:
                continue
            data = self._array(name)
            weight = info["kind"] == "weight"
            storage = np.int8 if weight else np.uint8
            if info["axis"] is not None:
                scales, zps = oq.weight_qparams_per_channel(data, info["axis"], storage, self.reduce_range)
                out[name] = (zps, scales, storage, info["axis"])
            else:
                zp, scale = oq.weight_qparams(data, storage, weight, self.reduce_range)
                out[name] = (zp, scale, storage, None)
        return out

    def adjust_weights_for_biases(self):
        for bias, (node_name, input_name, weight, _beta) in self.biases.items():
            if input_name not in self.params or input_name not in self.to_quantize or weight not in self.weights:
                continue
            zps, scales, storage, axis = self.weights[weight]
            if storage != np.int8 or np.asarray(zps).any():
                continue
            changed, new = oq.adjust_weight_scale_for_int32_bias(
                np.asarray(self.params[input_name][1], np.float32), scales, self._array(bias), axis is not None)
            if changed:
                self.weights[weight] = (zps, new, storage, axis)

    # ----- step 4: the graph -------------------------------------------------------------------
    def _initializer(self, name, array, onnx_type=None):
        helper = self.onnx.helper
        array = np.asarray(array)
        if onnx_type is None:
            tensor = self.onnx.numpy_helper.from_array(array, name)
        else:
            tensor = helper.make_tensor(name, onnx_type, array.shape, array.ravel().tolist())
        self.new_initializers.append(tensor)
        self.initializers[name] = tensor
        return tensor

    def _scale_zp(self, name, zp, scale, storage):
        tp = self.onnx.TensorProto
        zp_type = tp.INT8 if np.dtype(storage) == np.int8 else tp.UINT8
        self._initializer(name + "_zero_point", np.asarray(zp), zp_type)
        self._initializer(name + "_scale", np.asarray(scale, np.float32), tp.FLOAT)
        return name + "_scale", name + "_zero_point"

    def _node(self, op, ins, outs, name, axis=None):
        node = self.onnx.helper.make_node(op, ins, outs, name, axis=axis)
        self.model.graph.node.append(node)

    def _rename_inputs(self, old, new):
        for node in self.model.graph.node:
            node.input[:] = [new if i == old else i for i in node.input]

    def add_weight(self, name):
        zps, scales, storage, axis = self.weights[name]
        scale_name, zp_name = self._scale_zp(name, zps, scales, storage)
        data = self._array(name)
        if axis is None:
            levels = oq.quantize_array(data.ravel(), scales, zps, storage).reshape(data.shape)
        else:
            levels = oq.quantize_per_channel(data, scales, zps, axis, storage)
        self._initializer(name + "_quantized", levels)
        self._rename_inputs(name, name + "_DequantizeLinear_Output")
        self._node("DequantizeLinear", [name + "_quantized", scale_name, zp_name],
                   [name + "_DequantizeLinear_Output"], name + "_DequantizeLinear", axis)
        self.quantized[name] = (name + "_quantized", scale_name, zp_name)

    def add_activation(self, name, scale_name, zp_name):
        q_input, dq_output = name, name + "_DequantizeLinear_Output"
        if name in self.graph_outputs:
            q_input, dq_output = name + "_QuantizeLinear_Input", name
            for node in self.model.graph.node:
                node.output[:] = [q_input if o == name else o for o in node.output]
        else:
            self._rename_inputs(name, dq_output)
        self._node("QuantizeLinear", [q_input, scale_name, zp_name], [name + "_QuantizeLinear_Output"],
                   name + "_QuantizeLinear")
        self._node("DequantizeLinear", [name + "_QuantizeLinear_Output", scale_name, zp_name], [dq_output],
                   name + "_DequantizeLinear")
        self.quantized[name] = (dq_output, scale_name, zp_name)

    def add_bias(self, bias, input_name, weight, beta):
        if weight not in self.quantized or input_name not in self.quantized:
            raise ValueError(f"bias {bias!r}: its input {input_name!r} or weight {weight!r} is not quantized, so it "
                             "has no int32 scale (onnxruntime stops here too)")
        input_scale = self._array(self.quantized[input_name][1])
        weight_scale = self._array(self.quantized[weight][1])
        levels, scale = oq.quantize_bias(self._array(bias), input_scale, weight_scale, beta)
        q = bias + "_quantized"
        self._initializer(q, levels)
        self._initializer(q + "_scale", scale)
        if scale.size > 1:
            self._initializer(q + "_zero_point", np.zeros(scale.shape, np.int32))
        else:
            self._initializer(q + "_zero_point", np.array(0, np.int32), self.onnx.TensorProto.INT32)
        graph = self.model.graph
        graph.initializer.remove(self.initializers.pop(bias))
        self._node("DequantizeLinear", [q, q + "_scale", q + "_zero_point"], [bias], bias + "_DequantizeLinear",
                   0 if scale.size > 1 else None)
        self.quantized[bias] = (q, q + "_scale", q + "_zero_point")

    def run(self):
        graph = self.model.graph
        self.adjust_ranges()
        self.activation_params()
        for node in list(graph.node):
            if node.op_type in OP_TYPES:
                self.mark_node(node)
        self.weights = self.initializer_params()
        self.adjust_weights_for_biases()
        for name, info in list(self.to_quantize.items()):
            if info["shared"] is not None or name in self.quantized:
                continue
            if name in self.initializers:
                self.add_weight(name)
            else:
                if name not in self.params:
                    raise ValueError(f"tensor {name!r} is to be quantized but has no calibrated range")
                zp, scale = self.params[name]
                self.add_activation(name, *self._scale_zp(name, zp, scale, np.uint8))
            del self.to_quantize[name]
        while self.to_quantize:
            ready = [(n, i) for n, i in self.to_quantize.items() if i["shared"][0] in self.quantized]
            if not ready:
                raise ValueError(f"tensors {sorted(self.to_quantize)} share the qparams of tensors that are not "
                                 "quantized")
            for name, info in ready:
                del self.to_quantize[name]
                _, scale_name, zp_name = self.quantized[info["shared"][0]]
                self.add_activation(name, scale_name, zp_name)
        for bias, (_node, input_name, weight, beta) in self.biases.items():
            self.add_bias(bias, input_name, weight, beta)
        for node in self.removed:
            graph.node.remove(node)
        graph.initializer.extend(self.new_initializers)
        used = {i for n in graph.node for i in n.input} | self.graph_outputs
        keep = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        names = {t.name for t in keep}
        inputs = [i for i in graph.input if i.name not in self.initializers or i.name in names]
        del graph.input[:]
        graph.input.extend(inputs)
        _topological_sort(graph)
        return self.model


def _topological_sort(graph):
    """Nodes in an order where each reads only values defined before it (graph inputs, initializers)."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in defined for i in node.input):
                ordered.append(node)
                defined.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"the graph has a cycle or reads undefined values at {rest[0].name!r}")
        pending = rest
    nodes = [copy.deepcopy(n) for n in ordered]
    del graph.node[:]
    graph.node.extend(nodes)


def calibration_tensors(model):
    """Names whose range is calibrated: float inputs and outputs of nodes of OP_TYPES, not initializers
    (`CalibraterBase.select_tensors_to_calibrate`)."""
    types = {}
    for info in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    inits = {t.name for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type in OP_TYPES:
            for name in list(node.input) + list(node.output):
                if types.get(name) in _FLOAT_TYPES and name not in inits and name not in names:
                    names.append(name)
    return names


def calibrate(model, batches, method="minmax", **options):
    """{tensor name: (lowest, highest)} over the batches (one array per batch, for a one-input graph) with
    onnxruntime's calibrator `method` (quant.ort_calibrate), the float graph run by minicompress."""
    from ..autograd import no_grad
    from .importer import load
    names = calibration_tensors(model)
    graph = load(model)
    calibrators = {name: Calibrator(method, **options) for name in names}
    constants = _constant_values(model, names)
    with no_grad():
        for batch in batches:
            _, values = graph.run(batch, keep="all")
            for name in names:
                value = values.get(name, constants.get(name))
                if value is not None:
                    calibrators[name].collect(np.asarray(getattr(value, "data", value)))
    return {name: c.compute_range() for name, c in calibrators.items() if c.observed}


def _constant_values(model, names):
    """{name: array} of Constant nodes' outputs among `names` (a Constant read by a layer, such as a Conv
    weight written as a Constant node, is folded into the layer and is no graph value)."""
    from .importer import attribute_values
    from ..graph import registry
    wanted, out = set(names), {}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output[0] in wanted:
            cls = registry.resolve("", "Constant", opset, node.name)
            out[node.output[0]] = np.asarray(cls().run(**attribute_values(node)))
    return out


def infer_shapes(model):
    """The model with onnx's shape inference's value_info (what onnxruntime's quantizer reads types from)."""
    onnx = _onnx()
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001  (onnx raises its own error classes)
        raise ValueError(f"onnx's shape inference failed ({type(exc).__name__}: {exc}); onnxruntime's quantizer "
                         "reads tensor types from it") from exc


def quantize_qdq(model, batches, method="minmax", per_channel=True, reduce_range=False, **options):
    """The QDQ int8 ModelProto of `model` (a float ModelProto, not modified) as onnxruntime's quantize_static
    writes it (module docstring), calibrated on `batches` with `method` (minmax, entropy, percentile,
    distribution; options num_bins, num_quantized_bins, percentile as onnxruntime's extra options)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < 10:
        raise ValueError(f"the model's opset is {opset}; onnxruntime's QDQ format needs opset 10 or later "
                         "(convert the model first)")
    model = infer_shapes(copy.deepcopy(model))
    ranges = calibrate(model, batches, method, **options)
    quantizer = QDQQuantizer(model, ranges, per_channel, reduce_range)
    out = quantizer.run()
    out.producer_name = "minicompress"
    return out
