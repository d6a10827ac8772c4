"""`fold_qdq(graph_module)`: a loaded QDQ graph as minicompress's integer layers, as onnxruntime's graph
optimizer turns it into QLinearConv / QGemm / QLinearAdd.

`load` runs a QDQ file as written: every DequantizeLinear -> float op -> QuantizeLinear in float32, which is
the ONNX semantics but neither integer arithmetic nor fast. `fold_qdq` finds the node units onnxruntime fuses
and puts the quantized module in their place (QTensors flow between them):

    QuantizeLinear(x) with constant per-tensor qparams         -> quant.modules.Quantize
    DQ(x) [, DQ(W int8), DQ(B int32)] -> Conv [-> Relu] -> Q   -> Conv2d / ConvReLU2d (the float bias
                                                                  B * B_scale, re-quantized to the same codes)
    DQ(x), DQ(W) -> Gemm (alpha = beta = 1) [-> Relu] -> Q     -> Linear / LinearReLU
    DQ(x), DQ(W) -> MatMul [-> Add DQ(B)] [-> Relu] -> Q       -> Linear / LinearReLU
    DQ(a), DQ(b) -> Add -> Q                                   -> QuantizedAdd
    DQ(x) -> Relu / Clip(0, 6) / MaxPool / AveragePool / GlobalAveragePool / Reshape(0.., -1) -> Q
            with Q's qparams those of x                        -> ReLU / ReLU6 / pools / Flatten
    any other DequantizeLinear of an activation                -> DeQuantize

Anything else (a unit whose weight is not a constant, asymmetric pads, Q parameters a layer cannot keep,
int8 activations) stays as it was. The folded model computes what minicompress's own int8 model computes
(torch's arithmetic: an input quantized as round(x * (1 / scale)), exact integer sums), so a model written
by `export` and folded gives the int8 model's outputs bit for bit; against the file's float reading it
differs by at most about one quantization step, as onnxruntime's fused kernels do.
"""
import numpy as np

from .. import nn
from ..graph.module import GraphModule, sanitize, unique_name
from ..quant import modules as nnq
from ..qtensor import QTensor


def fold_qdq(model):
    """A new GraphModule in which the QDQ node units of `model` (a GraphModule from `load`) are quantized
    layers; `model` is left as it is. Its submodules are shared, not copied."""
    if not isinstance(model, GraphModule):
        raise TypeError(f"fold_qdq expects a GraphModule (minicompress.onnx.load), got {type(model).__name__}")
    return _Folder(model).run()


class _Folder:
    def __init__(self, model):
        self.model = model
        self.consts = {v: model._buffers[b].data.reshape(shape) for v, (b, shape) in model.constants.items()}
        self.nodes = self._fold_constant_quantize(_without_identities(model.nodes, model.outputs))
        self.producer = {v: n for n in self.nodes for v in n["outputs"] if v}
        self.consumers = {}
        for n in self.nodes:
            for v in n["inputs"]:
                if v:
                    self.consumers.setdefault(v, []).append(n)
        self.modules = dict(model._modules)
        self.replaced = {}        # id(first node of a unit) -> the module node taking its place
        self.removed = set()      # id(node) of the unit's other nodes

    def _fold_constant_quantize(self, nodes):
        """Nodes without the QuantizeLinear of constants (onnxruntime quantizes a weight given as a Constant
        node that way), whose levels become constants: DQ(levels) is then a constant's DQ like any weight's."""
        from ..graph import registry
        kept = []
        for node in nodes:
            if (self._op(node, "QuantizeLinear") and node["outputs"][0] not in self.model.outputs
                    and all(v in self.consts for v in node["inputs"] if v)):
                cls = registry.lookup("", "QuantizeLinear", node["version"])
                self.consts[node["outputs"][0]] = np.asarray(
                    cls().run(*[self.consts[v] if v else None for v in node["inputs"]], **node.get("attrs", {})))
            else:
                kept.append(node)
        return kept

    # ----- small readers -------------------------------------------------------------------------
    def _op(self, node, op_type):
        return node is not None and node["kind"] == "op" and node["op_type"] == op_type and not node.get("domain")

    def _only_consumer(self, value):
        users = self.consumers.get(value, [])
        return users[0] if len(users) == 1 and value not in self.model.outputs else None

    def _scalar_qparams(self, node):
        """(scale, zero_point, storage dtype) of a per-tensor Q / DQ node with constant qparams, else None."""
        if len(node["inputs"]) < 3 or any(v not in self.consts for v in node["inputs"][1:3]):
            return None
        scale, zero_point = self.consts[node["inputs"][1]], self.consts[node["inputs"][2]]
        if scale.size != 1 or zero_point.size != 1:
            return None
        return float(scale.reshape(())), int(zero_point.reshape(())), zero_point.dtype

    def _activation(self, value):
        """(q value, scale, zero_point) when `value` is a DequantizeLinear of a quint8 activation."""
        node = self.producer.get(value)
        if not self._op(node, "DequantizeLinear") or node["inputs"][0] in self.consts:
            return None
        qparams = self._scalar_qparams(node)
        if qparams is None or qparams[2] != np.uint8:
            return None
        return node["inputs"][0], qparams[0], qparams[1]

    def _constant_dq(self, value, storage):
        """(codes, scales, zero points, axis) of a DequantizeLinear of a constant, else None."""
        node = self.producer.get(value)
        if not self._op(node, "DequantizeLinear") or any(v not in self.consts for v in node["inputs"][:2]):
            return None
        codes = self.consts[node["inputs"][0]]
        if codes.dtype != storage:
            return None
        zp = self.consts.get(node["inputs"][2]) if len(node["inputs"]) > 2 and node["inputs"][2] else None
        scale = self.consts[node["inputs"][1]]
        zp = np.zeros(scale.shape, codes.dtype) if zp is None else zp
        return codes, scale.astype(np.float64), zp.astype(np.int64), node.get("attrs", {}).get("axis", 1)

    def _weight(self, value, out_axis):
        """The qint8 QTensor of a constant DQ(int8) weight, per channel only along `out_axis`."""
        found = self._constant_dq(value, np.int8)
        if found is None:
            return None
        codes, scale, zp, axis = found
        if scale.size == 1:
            return QTensor.per_tensor(codes, float(scale.reshape(())), int(zp.reshape(())))
        if axis % codes.ndim != out_axis or scale.ndim != 1:
            return None
        return QTensor.per_channel(codes, scale, zp, out_axis)

    def _bias(self, value, x_scale, weight):
        """The float32 bias of a constant DQ(int32) with scale x_scale * w_scale and zero point 0, else None."""
        found = self._constant_dq(value, np.int32)
        if found is None:
            return None
        codes, scale, zp, _ = found
        w_scales = weight.q_per_channel_scales() if weight.is_per_channel() else np.array([weight.q_scale()])
        if zp.any() or not np.allclose(scale, x_scale * w_scales, rtol=1e-6, atol=0):
            return None
        return (codes.reshape(-1) * np.broadcast_to(scale.reshape(-1), codes.reshape(-1).shape)).astype(np.float32)

    def _output_q(self, value, relu_allowed):
        """(relu?, [nodes after the op], Q node) when `value` flows through an optional Relu into one Q."""
        node = self._only_consumer(value)
        relu, chain = False, []
        if relu_allowed and self._op(node, "Relu"):
            relu, chain = True, [node]
            node = self._only_consumer(node["outputs"][0])
        if not self._op(node, "QuantizeLinear"):
            return None
        qparams = self._scalar_qparams(node)
        if qparams is None or qparams[2] != np.uint8:
            return None
        return relu, chain + [node], node, qparams[0], qparams[1]

    # ----- units ---------------------------------------------------------------------------------
    def _fold(self, node):
        """(module, [q inputs], nodes replaced after `node`, output Q node) or None."""
        op = node["op_type"] if node["kind"] == "op" and not node.get("domain") else None
        attrs = node.get("attrs", {})
        ins = node["inputs"]
        if op in ("Conv", "Gemm", "MatMul"):
            x = self._activation(ins[0])
            if x is None or len(ins) < 2:
                return None
            extra, bias_value, out_value = [], ins[2] if len(ins) > 2 and ins[2] else None, node["outputs"][0]
            if op == "MatMul":
                add = self._only_consumer(out_value)
                if self._op(add, "Add") and add["inputs"][0] == out_value and self.producer.get(add["inputs"][1]):
                    extra, bias_value, out_value = [add], add["inputs"][1], add["outputs"][0]
            tail = self._output_q(out_value, relu_allowed=True)
            if tail is None:
                return None
            relu, chain, q, scale, zero_point = tail
            module = self._layer(op, attrs, ins, x, bias_value, relu, scale, zero_point)
            return None if module is None else (module, [x[0]], extra + chain, q)
        if op == "Add":
            a, b = self._activation(ins[0]), self._activation(ins[1])
            tail = self._output_q(node["outputs"][0], relu_allowed=False)
            if a is None or b is None or tail is None:
                return None
            return nnq.QuantizedAdd(tail[3], tail[4]), [a[0], b[0]], tail[1], tail[2]
        if op in _SAME_QPARAMS:
            x = self._activation(ins[0])
            tail = self._output_q(node["outputs"][0], relu_allowed=False)
            if x is None or tail is None or (tail[3], tail[4]) != (x[1], x[2]):
                return None
            module = _SAME_QPARAMS[op](self, attrs, ins)
            return None if module is None else (module, [x[0]], tail[1], tail[2])
        return None

    def _layer(self, op, attrs, ins, x, bias_value, relu, scale, zero_point):
        if op == "Conv":
            weight = self._weight(ins[1], 0)
            pads = attrs.get("pads", [0, 0, 0, 0])
            if (weight is None or weight.ndim != 4 or attrs.get("auto_pad", "NOTSET") != "NOTSET"
                    or list(pads[:2]) != list(pads[2:])):
                return None
            bias = None if bias_value is None else self._bias(bias_value, x[1], weight)
            if bias_value is not None and bias is None:
                return None
            cls = nnq.ConvReLU2d if relu else nnq.Conv2d
            return cls(weight, bias, scale, zero_point, tuple(attrs.get("strides", [1, 1])), tuple(pads[:2]),
                       tuple(attrs.get("dilations", [1, 1])), int(attrs.get("group", 1)))
        if op == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                return None
            weight = self._weight(ins[1], 0 if attrs.get("transB", 0) else 1)
            if weight is not None and not attrs.get("transB", 0):
                weight = _transposed(weight)
        else:                                                   # MatMul: B is (in, out)
            weight = self._weight(ins[1], 1)
            weight = None if weight is None else _transposed(weight)
        if weight is None or weight.ndim != 2:
            return None
        bias = None if bias_value is None else self._bias(bias_value, x[1], weight)
        if bias_value is not None and bias is None:
            return None
        return (nnq.LinearReLU if relu else nnq.Linear)(weight, bias, scale, zero_point)

    # ----- the pass ------------------------------------------------------------------------------
    def run(self):
        model = self.model
        nodes = []
        quantized = set()         # values the new nodes produce as QTensors
        for node in self.nodes:
            if id(node) in self.removed:
                continue
            folded = self._fold(node)
            if folded is not None:
                module, q_inputs, after, q = folded
                self.removed.update(id(n) for n in after)
                nodes.append(self._module_node(node["name"], module, q_inputs, q["outputs"][0]))
                quantized.add(q["outputs"][0])
                continue
            if self._op(node, "QuantizeLinear") and node["inputs"][0] not in self.consts:
                qparams = self._scalar_qparams(node)
                if qparams is not None and qparams[2] == np.uint8:
                    nodes.append(self._module_node(node["name"], nnq.Quantize(qparams[0], qparams[1]),
                                                   node["inputs"][:1], node["outputs"][0]))
                    quantized.add(node["outputs"][0])
                    continue
            # a DequantizeLinear of levels no folded node makes (a QuantizeLinear of a constant, as
            # onnxruntime writes for weights given as Constant nodes) stays the ONNX op
            if node["inputs"] and node["inputs"][0] in quantized and \
                    self._activation(node["outputs"][0] if node["outputs"] else None) is not None:
                nodes.append(self._module_node(node["name"], nnq.DeQuantize(), node["inputs"][:1],
                                               node["outputs"][0]))
                continue
            nodes.append(node)
        nodes = _live(nodes, model.outputs)
        used = {v for n in nodes for v in n["inputs"]} | set(model.outputs)
        targets = {n["target"] for n in nodes if n["kind"] == "module"}
        modules = {name: m for name, m in self.modules.items() if name in targets}
        constants = {v: a for v, a in self.consts.items() if v in used}
        folded = GraphModule(model.inputs, model.outputs, nodes, modules, constants, model.opset_import)
        return folded.train(model.training)

    def _module_node(self, name, module, inputs, output):
        target = unique_name(sanitize(name), self.modules)
        self.modules[target] = module
        return {"name": name, "kind": "module", "target": target, "inputs": list(inputs), "outputs": [output],
                "op_type": type(module).__name__}


def _transposed(weight):
    """A (K, N) weight as Linear's (N, K), per channel along the output axis."""
    codes = np.ascontiguousarray(weight.int_repr().T)
    if weight.is_per_channel():
        return QTensor.per_channel(codes, weight.q_per_channel_scales(), weight.q_per_channel_zero_points(), 0)
    return QTensor.per_tensor(codes, weight.q_scale(), weight.q_zero_point())


def _without_identities(nodes, outputs):
    """The nodes with every Identity operator whose output is not a graph output left out, its readers reading
    its input instead (the exporter writes an Identity for nn.Identity layers, between DQ and the next op)."""
    alias, kept = {}, []
    for node in nodes:
        node = dict(node, inputs=[alias.get(v, v) for v in node["inputs"]])
        if (node["kind"] == "op" and node["op_type"] == "Identity" and not node.get("domain")
                and node["outputs"][0] not in outputs):
            alias[node["outputs"][0]] = node["inputs"][0]
            continue
        kept.append(node)
    return kept


def _live(nodes, outputs):
    """The nodes some output depends on, in order."""
    needed, keep = set(outputs), []
    for node in reversed(nodes):
        if any(v in needed for v in node["outputs"] if v):
            keep.append(node)
            needed.update(v for v in node["inputs"] if v)
    return keep[::-1]


# ----- layers that keep their input's qparams ------------------------------------------------------

def _window(attrs):
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if attrs.get("auto_pad", "NOTSET") != "NOTSET" or pads[:2] != pads[2:] or len(pads) != 4:
        return None
    return tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", [1, 1])), tuple(pads[:2])


def _max_pool(folder, attrs, ins):
    window = _window(attrs)
    if window is None or attrs.get("storage_order", 0):
        return None
    return nnq.MaxPool2d(nn.MaxPool2d(*window, dilation=tuple(attrs.get("dilations", [1, 1])),
                                      ceil_mode=bool(attrs.get("ceil_mode", 0))))


def _avg_pool(folder, attrs, ins):
    window = _window(attrs)
    if window is None or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        return None
    return nnq.AvgPool2d(nn.AvgPool2d(*window, ceil_mode=bool(attrs.get("ceil_mode", 0)),
                                      count_include_pad=bool(attrs.get("count_include_pad", 0))))


def _clip(folder, attrs, ins):
    low = folder.consts.get(ins[1]) if len(ins) > 1 and ins[1] else attrs.get("min")
    high = folder.consts.get(ins[2]) if len(ins) > 2 and ins[2] else attrs.get("max")
    if low is None or high is None or float(np.reshape(low, ())) != 0.0 or float(np.reshape(high, ())) != 6.0:
        return None
    return nnq.ReLU6()


def _reshape(folder, attrs, ins):
    shape = folder.consts.get(ins[1]) if len(ins) > 1 else None
    if shape is None or shape.ndim != 1 or not len(shape) or shape[-1] != -1 or (shape[:-1] != 0).any():
        return None
    return nnq.Flatten(nn.Flatten(start_dim=len(shape) - 1))


_SAME_QPARAMS = {"Relu": lambda folder, attrs, ins: nnq.ReLU(), "Clip": _clip, "MaxPool": _max_pool,
                 "AveragePool": _avg_pool, "Reshape": _reshape,
                 "GlobalAveragePool": lambda folder, attrs, ins: nnq.AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d(1))}
