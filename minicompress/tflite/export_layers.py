"""Each layer and operator node as TFLite operators, for `export.py`: `for_layer(layer, quantized)` and
`OPERATORS[op_type]` give `convert(exporter, node)`, which reads the node's input tensors through the
exporter (in NHWC or in the model's layout, `Exporter.nhwc` / `plain`) and appends its operators. The table
of what becomes what is export.py's docstring.

Float and int8 layers share every converter that only moves or compares values (pools, MEAN, RESHAPE,
CONCATENATION, ADD, the activations): a tensor's type and quantization follow its value (int8 with TFLite's
zero point for a QTensor). Only the layers with weights differ: float weights, or the layer's int8 codes
with their per-channel scales and the int32 bias at s_in * s_w.
"""
from __future__ import annotations

import math

import numpy as np

from .. import nn
from ..graph.ops.nn import window_pads
from ..graph.trace import IDENTITY_LAYERS
from ..kernels.qlinear import quantize_bias
from ..nn import fused
from ..quant import modules as nnq
from . import schema
from .errors import TFLiteExportError

TO_NHWC = [0, 2, 3, 1]
RELU, RELU_N1_TO_1, RELU6 = 1, 2, 3
_ACTIVATION_OPS = {RELU: "RELU", RELU_N1_TO_1: "RELU_N1_TO_1", RELU6: "RELU6"}
SAME, VALID = 0, 1


def _pairs(value):
    return [int(v) for v in ((value, value) if isinstance(value, (int, np.integer)) else value)]


def _layer(ex, node):
    return ex.graph.get_submodule(node["target"])


def _fail(node, message):
    what = f"layer {node['target']!r}" if node["kind"] == "module" else f"operator node {node['name']!r}"
    raise TFLiteExportError(f"{what}: {message}")


def _same_quantization(ex, a, b):
    qa, qb = ex.quantization(a), ex.quantization(b)
    if qa is None or qb is None:
        return qa is None and qb is None
    return np.array_equal(qa["scale"], qb["scale"]) and np.array_equal(qa["zero_point"], qb["zero_point"])


# ----- activations ---------------------------------------------------------------------------------

def _takes_activation(op):
    table = op["options_table"]
    return table is not None and any(f == "fused_activation_function"
                                     for f, _, _ in schema.OPTIONS[schema.OPTIONS_MEMBER[table]][1])


def activation(ex, x, out, code):
    """`out` = activation `code` of `x`: the fused activation of x's producer when x has no other reader
    and the producer has none yet (the clamp is then part of its requantization, as TFLite's converter
    writes it), else a RELU / RELU_N1_TO_1 / RELU6 operator."""
    layout = ex.layout(x)
    index = ex.tensors[x][layout]
    producer = ex.producers.get(index)
    if (producer is not None and ex.only_reader(x) and len(ex.tensors[x]) == 1 and _takes_activation(producer)
            and not producer["options"].get("fused_activation_function") and _same_quantization(ex, x, out)):
        producer["options"]["fused_activation_function"] = code
        ex.alias(out, x)
        return
    ex.op(_ACTIVATION_OPS[code], [index], [ex.new(out, layout)])


def _unary(op_name, options=None, **fields):
    def convert(ex, node):
        x, out = node["inputs"][0], node["outputs"][0]
        layout = ex.layout(x)
        ex.op(op_name, [ex.tensors[x][layout]], [ex.new(out, layout)], options, **fields)
    return convert


def _fixed_activation(code):
    def convert(ex, node):
        activation(ex, node["inputs"][0], node["outputs"][0], code)
    return convert


def _clip(ex, node, low, high):
    x, out = node["inputs"][0], node["outputs"][0]
    code = {(0.0, math.inf): RELU, (0.0, 6.0): RELU6, (-1.0, 1.0): RELU_N1_TO_1}.get((float(low), float(high)))
    if code is not None:
        return activation(ex, x, out, code)
    layout = ex.layout(x)
    value = ex.tensors[x][layout]
    for bound, op_name in ((low, "MAXIMUM"), (high, "MINIMUM")):
        if math.isinf(bound):
            continue
        target = ex.w.tensor(f"{out}/{op_name.lower()}", ex.w.tensors[value]["shape"], np.float32)
        ex.op(op_name, [value, ex.constant(f"{out}/{op_name.lower()}_bound", np.array([bound], np.float32))],
              [target])
        value = target
    ex.tensors[out] = {layout: value}


def leaky_relu_layer(ex, node):
    _unary("LEAKY_RELU", "LeakyReluOptions", alpha=float(_layer(ex, node).negative_slope))(ex, node)


def clip_node(ex, node):
    """ONNX Clip: min / max as inputs (opset 11+) or attributes (before)."""
    attrs, ins = node.get("attrs", {}), node["inputs"]

    def bound(k, attr, default):
        if len(ins) > k and ins[k]:
            return float(np.asarray(ex.env[ins[k]].data).reshape(()))
        return float(attrs.get(attr, default))
    _clip(ex, node, bound(1, "min", -math.inf), bound(2, "max", math.inf))


# ----- convolution and fully-connected layers -------------------------------------------------------

def _window_input(ex, node, x, pads, kernel, strides, dilations, allow_pad=True, allow_same=True):
    """(NHWC input tensor, padding code): SAME when torch's pads [top, left, bottom, right] are SAME's split
    (and allow_same: TF's SAME leaves the padding out of a pool's window), VALID when zero, else a PAD (zeros,
    or int8 codes at the zero point: real zero) before VALID."""
    n, c, h, w = ex.shape(x)
    src = ex.nhwc(x)
    if not any(pads):
        return src, VALID
    if allow_same and window_pads([h, w], kernel, strides, dilations, None, "SAME_UPPER") == list(pads):
        return src, SAME
    if not allow_pad:
        _fail(node, f"padding {pads} is not TF's SAME split for this window, and padding before it would change "
                    "the result (a max pool pads -inf; an average that leaves the padding out)")
    top, left, bottom, right = pads
    q = ex.quantization(x)
    padded = ex.w.tensor(f"{node['outputs'][0]}/pad", [n, h + top + bottom, w + left + right, c], ex.dtype(x), q)
    paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
    ex.op("PAD", [src, ex.constant(f"{node['outputs'][0]}/paddings", paddings)], [padded], "PadOptions")
    return padded, VALID


def _conv(ex, node, x, out, weight, bias, conv, code, weight_quant=None, bias_quant=None):
    """CONV_2D or DEPTHWISE_CONV_2D from an OIHW weight (float, or int8 codes with their quantization)."""
    _, c, _, _ = ex.shape(x)
    o, _, kh, kw = weight.shape
    groups = int(conv.groups)
    strides, dilations = _pairs(conv.stride), _pairs(conv.dilation)
    if isinstance(conv.padding, str):
        _fail(node, f"padding={conv.padding!r}: give the padding as numbers")
    p = _pairs(conv.padding)
    src, padding = _window_input(ex, node, x, p + p, [kh, kw], strides, dilations)
    common = {"padding": padding, "stride_h": strides[0], "stride_w": strides[1], "dilation_h_factor": dilations[0],
              "dilation_w_factor": dilations[1], "fused_activation_function": code}
    if groups == 1:
        name, options, filters, axis = "CONV_2D", "Conv2DOptions", weight.transpose(0, 2, 3, 1), 0
    elif groups == c and o % c == 0:
        name, options, filters, axis = "DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions", weight.transpose(1, 2, 3, 0), 3
        common["depth_multiplier"] = o // c
    else:
        _fail(node, f"groups={groups} on {c} channels: TFLite has CONV_2D (groups 1) and DEPTHWISE_CONV_2D "
                    "(groups = in_channels)")
    if weight_quant is not None:
        weight_quant = dict(weight_quant, quantized_dimension=axis)
    ins = [src, ex.constant(f"{out}/filter", np.ascontiguousarray(filters), weight_quant),
           ex.constant(f"{out}/bias", bias, bias_quant)]
    ex.op(name, ins, [ex.new(out, "nhwc")], options, **common)


def _conv_parts(layer):
    """(conv, batch norm or None, fused activation code) of a Conv2d or a fused conv run."""
    if isinstance(layer, nn.Conv2d):
        return layer, None, 0
    conv, bn, code = layer[0], None, 0
    for part in list(layer)[1:]:
        if isinstance(part, nn.BatchNorm2d):
            bn = part
        elif isinstance(part, nn.ReLU):
            code = RELU
    return conv, bn, code


def _bn_arrays(bn):
    if bn.running_mean is None:
        raise TFLiteExportError("a BatchNorm without running statistics cannot be folded")
    return (bn.running_mean.data, bn.running_var.data, bn.eps, None if bn.weight is None else bn.weight.data,
            None if bn.bias is None else bn.bias.data)


def float_conv(ex, node):
    conv, bn, code = _conv_parts(_layer(ex, node))
    bn = bn or ex.fold_bn.get(node["name"])
    weight = np.asarray(conv.weight.data, np.float32)
    bias = np.zeros(weight.shape[0], np.float32) if conv.bias is None else np.asarray(conv.bias.data, np.float32)
    if bn is not None:
        weight, bias = fused.fuse_conv_bn_weights(weight, bias, *_bn_arrays(bn))
    _conv(ex, node, node["inputs"][0], node["outputs"][0], weight, bias, conv, code)


def float_linear(ex, node):
    layer = _layer(ex, node)
    linear, code = (layer[0], RELU) if isinstance(layer, fused.LinearReLU) else (layer, 0)
    weight = np.asarray(linear.weight.data, np.float32)
    bias = np.zeros(weight.shape[0], np.float32) if linear.bias is None else np.asarray(linear.bias.data, np.float32)
    _fully_connected(ex, node, weight, bias, code)


def _fully_connected(ex, node, weight, bias, code, weight_quant=None, bias_quant=None):
    x, out = node["inputs"][0], node["outputs"][0]
    ins = [ex.plain(x), ex.constant(f"{out}/weights", weight, weight_quant), ex.constant(f"{out}/bias", bias, bias_quant)]
    ex.op("FULLY_CONNECTED", ins, [ex.new(out, "plain")], "FullyConnectedOptions", fused_activation_function=code,
          keep_num_dims=len(ex.shape(x)) > 2)


def _int8_weight(node, weight, channels):
    """(codes, {"scale", "zero_point"} per output channel) of a qint8 weight QTensor in TFLite's spec."""
    codes = np.asarray(weight.int_repr(), np.int8)
    if weight.is_per_channel():
        if weight.q_per_channel_axis() != 0:
            _fail(node, f"weights quantized along axis {weight.q_per_channel_axis()}; TFLite's are per output channel")
        scales, zero_points = weight.q_per_channel_scales(), weight.q_per_channel_zero_points()
    else:
        scales, zero_points = np.full(channels, weight.q_scale()), np.full(channels, weight.q_zero_point())
    if np.any(zero_points != 0) or (codes.size and codes.min() < -127):
        _fail(node, "TFLite's int8 weights are symmetric (zero point 0, codes in [-127, 127]); quantize with "
                    "quant.get_default_qconfig('tflite')")
    scales = np.asarray(scales, np.float32)
    return codes, {"scale": scales, "zero_point": np.zeros(channels, np.int64)}


def _int32_bias(ex, node, layer, w_scales, channels):
    x_scale = ex.env[node["inputs"][0]].q_scale()
    bias = np.zeros(channels, np.float32) if layer.bias is None else layer.bias
    codes = quantize_bias(bias, x_scale, w_scales)
    return codes, {"scale": np.float32(x_scale) * w_scales, "zero_point": np.zeros(channels, np.int64)}


def int8_conv(ex, node):
    layer = _layer(ex, node)
    codes, wq = _int8_weight(node, layer.weight(), layer.out_channels)
    bias, bq = _int32_bias(ex, node, layer, wq["scale"], layer.out_channels)
    _conv(ex, node, node["inputs"][0], node["outputs"][0], codes, bias, layer, RELU if layer._relu else 0, wq, bq)


def int8_linear(ex, node):
    layer = _layer(ex, node)
    codes, wq = _int8_weight(node, layer.weight(), layer.out_features)
    bias, bq = _int32_bias(ex, node, layer, wq["scale"], layer.out_features)
    _fully_connected(ex, node, codes, bias, RELU if layer._relu else 0, wq, bq)


def batch_norm(ex, node):
    """A batch norm folded into the convolution before it (`plan_batch_norm_folding`), else MUL and ADD by
    gamma / sqrt(var + eps) and beta - mean * that, per channel."""
    x, out = node["inputs"][0], node["outputs"][0]
    if node["name"] in ex.folded:
        return ex.alias(out, x)
    mean, var, eps, gamma, beta = _bn_arrays(_layer(ex, node))
    scale, shift = fused.fuse_conv_bn_weights(np.ones((mean.size, 1), np.float32), None, mean, var, eps, gamma, beta)
    scale = scale.reshape(-1)
    rank = len(ex.shape(x))
    layout = "nhwc" if rank == 4 else "plain"
    shape = (-1,) if layout == "nhwc" or rank == 2 else (-1, 1)
    mid = ex.w.tensor(f"{out}/scaled", ex.w.tensors[ex.get(x, layout)]["shape"], np.float32)
    ex.op("MUL", [ex.get(x, layout), ex.constant(f"{out}/scale", scale.reshape(shape))], [mid], "MulOptions")
    ex.op("ADD", [mid, ex.constant(f"{out}/shift", shift.reshape(shape))], [ex.new(out, layout)], "AddOptions")


def plan_batch_norm_folding(ex, plan):
    """ex.fold_bn {conv node: BatchNorm2d} and ex.folded {BN node}: an eval-mode BatchNorm2d that is the
    only reader of a plain Conv2d's output is folded into its weights."""
    made_by = {node["outputs"][0]: node for node, _ in plan if node["outputs"]}
    for node, _ in plan:
        if node["kind"] != "module" or not isinstance(_layer(ex, node), nn.BatchNorm2d):
            continue
        producer = made_by.get(node["inputs"][0])
        if (producer is not None and producer["kind"] == "module" and type(_layer(ex, producer)) is nn.Conv2d
                and ex.only_reader(node["inputs"][0]) and _layer(ex, node).running_mean is not None):
            ex.fold_bn[producer["name"]] = _layer(ex, node)
            ex.folded.add(node["name"])


# ----- elementwise -----------------------------------------------------------------------------------

def _operand(ex, value, layout, hint):
    """A binary operand in `layout`: a constant of the graph as a constant tensor (permuted to NHWC when
    broadcast against a feature map), else the value's tensor."""
    if value in ex.tensors:
        return ex.get(value, layout)
    array = np.asarray(ex.env[value].data, np.float32)
    if layout == "nhwc":
        array = array.reshape((1,) * (4 - array.ndim) + array.shape).transpose(TO_NHWC)
    return ex.constant(hint, np.ascontiguousarray(array))


def _binary(op_name, options):
    def convert(ex, node):
        a, b = node["inputs"][:2]
        out = node["outputs"][0]
        computed = [v for v in (a, b) if v in ex.tensors]
        four_d = all(len(ex.shape(v)) == 4 for v in (a, b) if v in ex.tensors)
        layout = "nhwc" if four_d and len(ex.shape(out)) == 4 and any(ex.layout(v) == "nhwc" for v in computed) \
            else "plain"
        ins = [_operand(ex, v, layout, f"{out}/operand{k}") for k, v in enumerate((a, b))]
        ex.op(op_name, ins, [ex.new(out, layout)], options)
    return convert


# ----- pools and reductions ----------------------------------------------------------------------------

def _pool(ex, node, kind, kernel, strides, pads, ceil_mode=False, count_include_pad=False, dilations=(1, 1)):
    if ceil_mode:
        _fail(node, "ceil_mode=True has no TFLite form (TF's windows are SAME or VALID)")
    if list(dilations) != [1, 1]:
        _fail(node, f"a pooling dilation of {list(dilations)} has no TFLite form")
    x, out = node["inputs"][0], node["outputs"][0]
    if kind == "AVERAGE_POOL_2D" and count_include_pad:      # the padding counts: zeros, then a VALID window
        src, padding = _window_input(ex, node, x, pads, kernel, strides, [1, 1], allow_same=False)
    else:
        src, padding = _window_input(ex, node, x, pads, kernel, strides, [1, 1], allow_pad=False)
    ex.op(kind, [src], [ex.new(out, "nhwc")], "Pool2DOptions", padding=padding, stride_h=strides[0],
          stride_w=strides[1], filter_height=kernel[0], filter_width=kernel[1])


def max_pool_layer(ex, node):
    layer = _layer(ex, node)
    p = _pairs(layer.padding)
    _pool(ex, node, "MAX_POOL_2D", _pairs(layer.kernel_size), _pairs(layer.stride or layer.kernel_size), p + p,
          layer.ceil_mode, dilations=_pairs(layer.dilation))


def avg_pool_layer(ex, node):
    layer = _layer(ex, node)
    if layer.divisor_override:
        _fail(node, "AvgPool2d's divisor_override has no TFLite form")
    p = _pairs(layer.padding)
    _pool(ex, node, "AVERAGE_POOL_2D", _pairs(layer.kernel_size), _pairs(layer.stride or layer.kernel_size), p + p,
          layer.ceil_mode, layer.count_include_pad)


def _pool_node(kind):
    def convert(ex, node):
        a = node.get("attrs", {})
        kernel = list(a["kernel_shape"])
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
            _fail(node, f"auto_pad={a['auto_pad']!r}: export the graph with explicit pads")
        pads = list(a.get("pads") or [0, 0, 0, 0])
        _pool(ex, node, kind, kernel, list(a.get("strides") or [1, 1]), pads, a.get("ceil_mode", 0),
              a.get("count_include_pad", 0), a.get("dilations") or [1, 1])
    return convert


def global_mean(ex, node):
    """MEAN over H and W of the NHWC map, keep_dims (the (N, C, 1, 1) of AdaptiveAvgPool2d(1))."""
    layer = _layer(ex, node) if node["kind"] == "module" else None
    if layer is not None and _pairs(layer.output_size) != [1, 1]:
        _fail(node, f"AdaptiveAvgPool2d({layer.output_size}): only output size 1 (a global mean) has a TFLite form")
    x, out = node["inputs"][0], node["outputs"][0]
    ex.op("MEAN", [ex.nhwc(x), ex.constant(f"{out}/axes", np.array([1, 2], np.int32))], [ex.new(out, "nhwc")],
          "ReducerOptions", keep_dims=True)


# ----- shapes -----------------------------------------------------------------------------------------

def reshape(ex, node):
    """RESHAPE to the output's shape. An NHWC map whose bytes are already in the model's order (one channel,
    or H = W = 1) is reshaped as it is; otherwise a TRANSPOSE back to NCHW comes first, so the order of the
    elements is the model's."""
    x, out = node["inputs"][0], node["outputs"][0]
    shape = ex.shape(x)
    same_order = ex.layout(x) == "nhwc" and (shape[1] == 1 or shape[2] * shape[3] == 1)
    src = ex.tensors[x]["nhwc"] if same_order and "plain" not in ex.tensors[x] else ex.plain(x)
    target = np.array(ex.shape(out), np.int32)
    ex.op("RESHAPE", [src, ex.constant(f"{out}/shape", target)], [ex.new(out, "plain")], "ReshapeOptions",
          new_shape=[int(d) for d in target])


def _softmax_axis(ex, node, dim):
    x, out = node["inputs"][0], node["outputs"][0]
    rank = len(ex.shape(x))
    dim = (0 if rank in (0, 1, 3) else 1) if dim is None else int(dim) % rank
    if rank == 4 and dim == 1 and ex.layout(x) == "nhwc":
        src, layout = ex.nhwc(x), "nhwc"         # over the channels: the last axis of NHWC
    elif dim == rank - 1:
        src, layout = ex.plain(x), "plain"
    else:
        _fail(node, f"softmax over axis {dim} of a rank-{rank} value: TFLite's SOFTMAX is over the last axis")
    ex.op("SOFTMAX", [src], [ex.new(out, layout)], "SoftmaxOptions", beta=1.0)


def softmax_layer(ex, node):
    _softmax_axis(ex, node, _layer(ex, node).dim)


def softmax_node(ex, node):
    axis = node.get("attrs", {}).get("axis", -1 if node["version"] >= 13 else 1)
    if node["version"] < 13 and int(axis) % len(ex.shape(node["inputs"][0])) != len(ex.shape(node["inputs"][0])) - 1:
        _fail(node, "Softmax before opset 13 flattens at its axis; only the last axis is exported")
    _softmax_axis(ex, node, axis)


def _concatenate(ex, node, axis):
    values, out = [v for v in node["inputs"] if v], node["outputs"][0]
    rank = len(ex.shape(out))
    axis = int(axis) % rank
    layout = "nhwc" if rank == 4 and any(ex.layout(v) == "nhwc" for v in values) else "plain"
    if ex.is_quantized(out) and not all(_same_quantization(ex, v, out) for v in values):
        _fail(node, "int8 CONCATENATION here needs every input in the output's scale and zero point")
    ins = [_operand(ex, v, layout, f"{out}/input{k}") for k, v in enumerate(values)]
    ex.op("CONCATENATION", ins, [ex.new(out, layout)], "ConcatenationOptions",
          axis=TO_NHWC.index(axis) if layout == "nhwc" else axis)


def concat_node(ex, node):
    _concatenate(ex, node, node["attrs"]["axis"])


def quantized_concat(ex, node):
    _concatenate(ex, node, _layer(ex, node).axis)


def identity(ex, node):
    ex.alias(node["outputs"][0], node["inputs"][0])


# ----- the int8 boundary ------------------------------------------------------------------------------

def quantize(ex, node):
    """The model's Quantize: with int8 inputs, the file's input is its int8 output; else QUANTIZE."""
    x, out = node["inputs"][0], node["outputs"][0]
    inputs = {spec["name"] for spec in ex.graph.inputs}
    if ex.io_dtype == "int8":
        if x not in inputs or x in ex.input_tensors:
            _fail(node, "with io_dtype='int8' a Quantize layer must be the only reader of a model input")
        ex.input_tensors[x] = ex.new(out, "plain")
        ex.tensors[x] = ex.tensors[out]
        return
    layout = ex.layout(x)
    ex.op("QUANTIZE", [ex.get(x, layout)], [ex.new(out, layout)], "QuantizeOptions")


def dequantize(ex, node):
    """The model's DeQuantize: with int8 outputs the value stays int8 (the file returns the codes), else
    DEQUANTIZE."""
    x, out = node["inputs"][0], node["outputs"][0]
    if ex.io_dtype == "int8":
        if out not in ex.outputs:
            _fail(node, "with io_dtype='int8' a DeQuantize layer must give a model output")
        return ex.alias(out, x)
    layout = ex.layout(x)
    ex.op("DEQUANTIZE", [ex.get(x, layout)], [ex.new(out, layout)], "DequantizeOptions")


# ----- the tables ---------------------------------------------------------------------------------------

_SHARED = {nn.ReLU: _fixed_activation(RELU), nn.ReLU6: _fixed_activation(RELU6), nn.MaxPool2d: max_pool_layer,
           nn.AvgPool2d: avg_pool_layer, nn.AdaptiveAvgPool2d: global_mean, nn.Flatten: reshape}
FLOAT_LAYERS = {**_SHARED,
    nn.Conv2d: float_conv, fused.ConvReLU2d: float_conv, fused.ConvBn2d: float_conv, fused.ConvBnReLU2d: float_conv,
    nn.Linear: float_linear, fused.LinearReLU: float_linear, nn.BatchNorm2d: batch_norm, nn.BatchNorm1d: batch_norm,
    nn.Sigmoid: _unary("LOGISTIC"), nn.Tanh: _unary("TANH"), nn.LeakyReLU: leaky_relu_layer,
    nn.Softmax: softmax_layer, nn.Add: _binary("ADD", "AddOptions")}
INT8_LAYERS = {
    nnq.Quantize: quantize, nnq.DeQuantize: dequantize, nnq.Conv2d: int8_conv, nnq.ConvReLU2d: int8_conv,
    nnq.Linear: int8_linear, nnq.LinearReLU: int8_linear, nnq.QuantizedAdd: _binary("ADD", "AddOptions"),
    nnq.QuantizedConcat: quantized_concat, nnq.ReLU: _fixed_activation(RELU), nnq.ReLU6: _fixed_activation(RELU6),
    nnq.MaxPool2d: max_pool_layer, nnq.AvgPool2d: avg_pool_layer, nnq.AdaptiveAvgPool2d: global_mean,
    nnq.Flatten: reshape, nnq.Reshape: reshape, nnq.Dropout: identity}
OPERATORS = {
    "Relu": _fixed_activation(RELU), "Clip": clip_node, "Sigmoid": _unary("LOGISTIC"), "Tanh": _unary("TANH"),
    "HardSwish": _unary("HARD_SWISH", "HardSwishOptions"),
    "Add": _binary("ADD", "AddOptions"), "Mul": _binary("MUL", "MulOptions"), "Sub": _binary("SUB", "SubOptions"),
    "Div": _binary("DIV", "DivOptions"), "MaxPool": _pool_node("MAX_POOL_2D"),
    "AveragePool": _pool_node("AVERAGE_POOL_2D"), "GlobalAveragePool": global_mean, "Flatten": reshape,
    "Reshape": reshape, "Softmax": softmax_node, "Concat": concat_node, "Identity": identity}


def _is_identity_layer(layer):
    return type(layer).__name__ in IDENTITY_LAYERS and type(layer).__module__.startswith("minicompress.")


def for_layer(layer, quantized):
    """The converter of `layer` in a float or an int8 model (None: no TFLite form here)."""
    if _is_identity_layer(layer):
        return identity
    return (INT8_LAYERS if quantized else FLOAT_LAYERS).get(type(layer))


def supported(quantized):
    names = sorted(k.__name__ for k in (INT8_LAYERS if quantized else FLOAT_LAYERS))
    names += sorted(IDENTITY_LAYERS)
    if not quantized:
        names += [f"operator nodes {', '.join(sorted(OPERATORS))}"]
    return ", ".join(names)
