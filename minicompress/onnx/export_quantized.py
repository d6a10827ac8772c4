"""Quantized layers -> ONNX in onnxruntime's QDQ format, and dynamic Linear as onnxruntime's
`quantize_dynamic` writes it.

In QDQ form every quantized tensor of the model is the output of a DequantizeLinear, and every layer is
its float ONNX operator between them, so the file says exactly which integers the model holds while any
ONNX runtime can run it in float. onnxruntime's graph optimizer (ORT_ENABLE_EXTENDED and up; BASIC leaves
the groups alone) finds the DQ -> op -> Q groups and runs them as its integer kernels: on the mobile
classifier (tests/test_onnx_export_quantized.py) every Conv becomes QLinearConv, the Gemm QGemm, the adds
QLinearAdd, the global pool QLinearGlobalAveragePool, and the Reshape runs on the uint8 codes. The layout
is the one `onnxruntime.quantization.quantize_static(quant_format=QuantFormat.QDQ)` produces:

    Quantize (QuantStub)   x -> QuantizeLinear(s, zp) -> DequantizeLinear(s, zp)
    Conv2d / ConvReLU2d    DQ(x), DQ(W int8, w_scale, w_zp[, axis=0 per channel]),
                           DQ(bias int32 = round(bias / (x_scale * w_scale)), x_scale * w_scale, 0[, axis=0])
                           -> Conv [-> Relu] -> QuantizeLinear(out_s, out_zp) -> DequantizeLinear
    Linear / LinearReLU    the same with Gemm(transB=1) on 2-D input; MatMul on W^T (axis=1) then Add
                           of the dequantized bias on other ranks
    QuantizedAdd           Add(DQ(a), DQ(b)) -> Q -> DQ in the add's qparams
    QuantizedConcat        Concat(DQ(a), DQ(b), ...) -> Q -> DQ in the concat's qparams
    ReLU, ReLU6, pools, Flatten, Reshape    the float op on DQ(x) -> Q -> DQ in the input's qparams (these layers
                           keep them)
    DeQuantize             Identity: the value is already the DequantizeLinear's float output

A fused ReLU is written as a Relu before the output QuantizeLinear (onnxruntime's ReluQuantFusion drops it
when the zero point is the bottom of the range, as it is after a ReLU observer). The integers written are the
module's own: the int8 weight codes, and the int32 bias from `kernels.qlinear.quantize_bias` with the
input's scale, so both ends round the bias identically. Activations that minicompress rounds with
x * (1 / scale) onnxruntime rounds with x / scale: the two can differ by one step at a tie.

`Int4Linear` (weight-only int4, float in and out) becomes one com.microsoft `MatMulNBits` node (bits=4,
block_size = its group size, K, N): its packed bytes as B, its scales flattened to [N * n_groups], its
packed zero points flattened (absent for symmetric weights: MatMulNBits' default zero point 8), its bias
as MatMulNBits' bias input. These are the arrays the layer holds, byte for byte (quant.int4 packs them as
onnxruntime does), and onnxruntime's CPU kernel dequantizes them to the same float32 weight.

`DynamicQuantizedLinear` becomes DynamicQuantizeLinear -> MatMulInteger (W^T int8) -> Cast -> Mul by
x_scale * w_scale -> Add bias, onnxruntime's dynamic form. DynamicQuantizeLinear always uses the full
uint8 range, so this equals the module's arithmetic when it was built with reduce_range=False
(`full_range_dynamic_qconfig`); with torch's default 7-bit inputs the two differ by their input rounding.
"""
import numpy as np

from ..quant import dtypes as qd
from ..quant import modules as nnq
from ..quant.dynamic import DynamicQuantizedLinear
from ..quant.weight_only import Int4Linear
from ..qtensor import QTensor
from .errors import ExportError
from ..kernels.qlinear import quantize_bias


def _pairs(value):
    return [int(v) for v in ((value, value) if isinstance(value, (int, np.integer)) else value)]


_QUANTIZED_MODULES = {"minicompress.quant.modules", "minicompress.quant.dynamic", "minicompress.quant.dynamic_rnn",
                      "minicompress.quant.embedding", "minicompress.quant.weight_only"}


def is_quantized_layer(layer):
    """Whether `layer` is one of minicompress's integer modules (written here, or refused here by name)."""
    return type(layer).__module__ in _QUANTIZED_MODULES


def _fail(message):
    raise ExportError(message)


def _qdq(b, x, out, name, scale, zero_point, storage):
    """QuantizeLinear -> DequantizeLinear of float `x` into `out`, per tensor."""
    s = b.constant(f"{name}.scale", np.float32(scale))
    zp = b.constant(f"{name}.zero_point", np.asarray(zero_point, dtype=storage))
    q = b.name(f"{name}_QuantizeLinear_Output")
    b.node("QuantizeLinear", [x, s, zp], [q], f"{name}_QuantizeLinear")
    b.node("DequantizeLinear", [q, s, zp], [out], f"{name}_DequantizeLinear")


def _dequantized_weight(b, name, weight, transpose=False):
    """DequantizeLinear of an int8 weight initializer (per channel along its axis, or per tensor)."""
    codes = np.asarray(weight.int_repr(), np.int8)
    attrs = {}
    if weight.is_per_channel():
        if b.opset < 13:
            _fail(f"layer {name!r}: a per-channel weight needs DequantizeLinear's axis, "
                              "opset_version >= 13")
        axis = weight.q_per_channel_axis()
        scale = weight.q_per_channel_scales().astype(np.float32)
        zero_point = weight.q_per_channel_zero_points().astype(np.int8)
        if transpose:
            axis = 1 - axis
        attrs["axis"] = int(axis)
    else:
        scale, zero_point = np.float32(weight.q_scale()), np.int8(weight.q_zero_point())
    if transpose:
        codes = codes.T.copy()
    ins = [b.constant(f"{name}.weight_quantized", codes), b.constant(f"{name}.weight_scale", scale),
           b.constant(f"{name}.weight_zero_point", zero_point)]
    out = b.name(f"{name}.weight_DequantizeLinear_Output")
    b.node("DequantizeLinear", ins, [out], f"{name}.weight_DequantizeLinear", **attrs)
    return out


def _weight_scales(weight):
    if weight.is_per_channel():
        return weight.q_per_channel_scales()
    return np.full(weight.shape[0], weight.q_scale())


def _dequantized_bias(b, name, layer, x_scale):
    """DequantizeLinear of the int32 bias in the accumulator's scale x_scale * w_scale, zero point 0."""
    weight = layer.weight()
    w_scales = _weight_scales(weight)
    codes = quantize_bias(layer.bias, x_scale, w_scales)
    scale = np.float32(x_scale) * w_scales.astype(np.float32)       # as requantize_multiplier's product
    per_channel = weight.is_per_channel()
    zero_point = np.zeros(codes.shape, np.int32) if per_channel else np.int32(0)
    ins = [b.constant(f"{name}.bias_quantized", codes),
           b.constant(f"{name}.bias_quantized_scale", scale if per_channel else scale[0]),
           b.constant(f"{name}.bias_quantized_zero_point", zero_point)]
    out = b.name(f"{name}.bias")
    b.node("DequantizeLinear", ins, [out], f"{name}.bias_DequantizeLinear", **({"axis": 0} if per_channel else {}))
    return out


def _input_qtensor(layer, name, value, index=0):
    if not isinstance(value, QTensor):
        _fail(f"layer {name!r} ({type(layer).__name__}): input {index} is a "
                          f"{type(value).__name__}, expected a QTensor (is a Quantize layer missing before it?)")
    if value.is_per_channel():
        _fail(f"layer {name!r} ({type(layer).__name__}): input {index} is quantized per channel; "
                          "only per-tensor activations export")
    return value


def check_supported(layer, name):
    """Raise ExportError naming `layer` when it is a quantized layer with no ONNX form here."""
    if type(layer) not in _STATIC and type(layer) not in _PASS_THROUGH:
        _fail(f"layer {name!r} ({type(layer).__name__}) is a quantized layer with no ONNX export here (supported: "
              f"{', '.join(sorted(k.__name__ for k in _STATIC | _PASS_THROUGH))})")


def emit_quantized(b, layer, name, in_names, in_values, out):
    """ONNX nodes computing `out` (an ONNX tensor name) from `in_names` for one quantized layer.

    `in_values` are the layer's inputs as they were while the example ran (QTensors carry the input scale
    that the int32 bias is quantized with). Raises ExportError naming the layer for a quantized layer with
    no QDQ form here.
    """
    check_supported(layer, name)
    kind = type(layer)
    x = in_names[0]
    if kind is nnq.Quantize:
        storage = np.uint8 if layer.dtype is qd.quint8 else np.int8 if layer.dtype is qd.qint8 else None
        if storage is None:
            _fail(f"layer {name!r} (Quantize): dtype {layer.dtype!r} has no QuantizeLinear form "
                              "(quint8 or qint8)")
        _qdq(b, x, out, name, layer.scale, layer.zero_point, storage)
        return
    if kind is nnq.DeQuantize or kind is nnq.Dropout:
        b.node("Identity", [x], [out], name)
        return
    if kind is DynamicQuantizedLinear:
        _emit_dynamic_linear(b, layer, name, x, out, in_values[0].ndim)
        return
    if kind is Int4Linear:
        _emit_int4_linear(b, layer, name, x, out)
        return
    qx = _input_qtensor(layer, name, in_values[0])
    storage = qx.int_repr().dtype.type
    if kind is nnq.QuantizedAdd:
        _input_qtensor(layer, name, in_values[1], 1)
        mid = b.name(f"{name}_Add_Output")
        b.node("Add", [x, in_names[1]], [mid], name)
        _qdq(b, mid, out, name, layer.scale, layer.zero_point, storage)
        return
    if kind is nnq.QuantizedConcat:
        for i, value in enumerate(in_values[1:], 1):
            _input_qtensor(layer, name, value, i)
        mid = b.name(f"{name}_Concat_Output")
        b.node("Concat", list(in_names), [mid], name, axis=layer.axis)
        _qdq(b, mid, out, name, layer.scale, layer.zero_point, storage)
        return
    mid = b.name(f"{name}_QuantizeLinear_Input")
    if kind in (nnq.Conv2d, nnq.ConvReLU2d):
        ins = [x, _dequantized_weight(b, name, layer.weight())]
        if layer.bias is not None:
            ins.append(_dequantized_bias(b, name, layer, qx.q_scale()))
        p = _pairs(layer.padding)
        conv = b.name(f"{name}_Conv_Output") if layer._relu else mid
        b.node("Conv", ins, [conv], name, kernel_shape=[int(k) for k in layer.kernel_size],
               strides=_pairs(layer.stride), pads=p + p, dilations=_pairs(layer.dilation), group=int(layer.groups))
        if layer._relu:
            b.node("Relu", [conv], [mid], f"{name}_Relu")
        scale, zero_point = layer.scale, layer.zero_point
    elif kind in (nnq.Linear, nnq.LinearReLU):
        product = b.name(f"{name}_Gemm_Output") if layer._relu else mid
        if qx.ndim == 2:
            ins = [x, _dequantized_weight(b, name, layer.weight())]
            if layer.bias is not None:
                ins.append(_dequantized_bias(b, name, layer, qx.q_scale()))
            b.node("Gemm", ins, [product], name, transB=1)
        else:
            w = _dequantized_weight(b, name, layer.weight(), transpose=True)
            if layer.bias is None:
                b.node("MatMul", [x, w], [product], name)
            else:
                matmul = b.name(f"{name}_MatMul_Output")
                b.node("MatMul", [x, w], [matmul], name)
                b.node("Add", [matmul, _dequantized_bias(b, name, layer, qx.q_scale())], [product], f"{name}_bias")
        if layer._relu:
            b.node("Relu", [product], [mid], f"{name}_Relu")
        scale, zero_point = layer.scale, layer.zero_point
    else:
        _SAME_QPARAMS[kind](b, layer, name, x, mid, qx)
        scale, zero_point = qx.q_scale(), qx.q_zero_point()
    _qdq(b, mid, out, name, scale, zero_point, storage)


# ----- layers that keep their input's qparams: the float op, then Q -> DQ with the input's (s, zp) -------

def _relu(b, layer, name, x, out, qx):
    b.node("Relu", [x], [out], name)


def _relu6(b, layer, name, x, out, qx):
    if b.opset < 11:
        b.node("Clip", [x], [out], name, min=0.0, max=6.0)
    else:
        b.node("Clip", [x, b.constant(f"{name}.min", np.float32(0)), b.constant(f"{name}.max", np.float32(6))],
               [out], name)


def _max_pool(b, layer, name, x, out, qx):
    p = _pairs(layer.padding)
    b.node("MaxPool", [x], [out], name, kernel_shape=_pairs(layer.kernel_size),
           strides=_pairs(layer.stride if layer.stride is not None else layer.kernel_size), pads=p + p,
           dilations=_pairs(layer.dilation), ceil_mode=int(layer.ceil_mode))


def _avg_pool(b, layer, name, x, out, qx):
    if layer.divisor_override:
        _fail(f"layer {name!r}: AvgPool2d's divisor_override has no ONNX form")
    p = _pairs(layer.padding)
    b.node("AveragePool", [x], [out], name, kernel_shape=_pairs(layer.kernel_size),
           strides=_pairs(layer.stride if layer.stride is not None else layer.kernel_size), pads=p + p,
           ceil_mode=int(layer.ceil_mode), count_include_pad=int(layer.count_include_pad))


def _adaptive_avg_pool(b, layer, name, x, out, qx):
    if _pairs(layer.output_size) != [1, 1]:
        _fail(f"layer {name!r}: only AdaptiveAvgPool2d(1) has an ONNX form (GlobalAveragePool)")
    b.node("GlobalAveragePool", [x], [out], name)


def _flatten(b, layer, name, x, out, qx):
    rank = qx.ndim
    if layer.end_dim not in (-1, rank - 1):
        _fail(f"layer {name!r}: Flatten with end_dim={layer.end_dim} is not supported")
    start = layer.start_dim % rank
    shape = b.constant(f"{name}.shape", np.array([0] * start + [-1], np.int64))
    b.node("Reshape", [x, shape], [out], name)


def _reshape(b, layer, name, x, out, qx):
    b.node("Reshape", [x, b.constant(f"{name}.shape", np.array(layer.shape, np.int64))], [out], name)


_SAME_QPARAMS = {nnq.ReLU: _relu, nnq.ReLU6: _relu6, nnq.MaxPool2d: _max_pool, nnq.AvgPool2d: _avg_pool,
                 nnq.AdaptiveAvgPool2d: _adaptive_avg_pool, nnq.Flatten: _flatten, nnq.Reshape: _reshape}
_STATIC = set(_SAME_QPARAMS) | {nnq.Conv2d, nnq.ConvReLU2d, nnq.Linear, nnq.LinearReLU, nnq.QuantizedAdd,
                                nnq.QuantizedConcat}
_PASS_THROUGH = {nnq.Quantize, nnq.DeQuantize, nnq.Dropout, DynamicQuantizedLinear, Int4Linear}


# ----- dynamic Linear ----------------------------------------------------------------------------

def _emit_dynamic_linear(b, layer, name, x, out, rank):
    """DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul -> Add, as onnxruntime's quantize_dynamic."""
    weight = layer.weight()
    codes = np.asarray(weight.int_repr(), np.int8).T.copy()            # (in, out): MatMul's B
    if weight.is_per_channel():
        w_scale = weight.q_per_channel_scales().astype(np.float32)
        w_zp = weight.q_per_channel_zero_points().astype(np.int8)
    else:
        w_scale, w_zp = np.float32(weight.q_scale()), np.int8(weight.q_zero_point())
    xq, xs, xzp = (b.name(f"{x}_quantized"), b.name(f"{x}_scale"), b.name(f"{x}_zero_point"))
    b.node("DynamicQuantizeLinear", [x], [xq, xs, xzp], f"{name}_DynamicQuantizeLinear")
    scales = b.name(f"{name}_MatMul_quant_scales")
    b.node("Mul", [xs, b.constant(f"{name}.weight_scale", w_scale)], [scales], f"{name}_quant_scales_mul")
    acc = b.name(f"{name}_MatMul_output_quantized")
    b.node("MatMulInteger", [xq, b.constant(f"{name}.weight_quantized", codes), xzp,
                             b.constant(f"{name}.weight_zero_point", w_zp)], [acc], f"{name}_MatMulInteger")
    cast = b.name(f"{name}_MatMul_output_quantized_cast_output")
    b.node("Cast", [acc], [cast], f"{name}_Cast", to=1)
    bias = layer.bias()
    product = out if bias is None else b.name(f"{name}_MatMul")
    b.node("Mul", [cast, scales], [product], f"{name}_Mul")
    if bias is not None:
        b.node("Add", [product, b.constant(f"{name}.bias", np.asarray(bias, np.float32))], [out], f"{name}_Add")


# ----- weight-only int4 Linear ------------------------------------------------------------------------

def _emit_int4_linear(b, layer, name, x, out):
    """MatMulNBits(A, B, scales[, zero_points], g_idx="", bias), com.microsoft, as onnxruntime's
    `MatMulNBitsQuantizer` writes it (its `DefaultWeightOnlyQuantizer`, QOperator format)."""
    ins = [x, b.constant(f"{name}.weight_Q4", layer.weight_packed.data),
           b.constant(f"{name}.weight_scales", layer.weight_scales.data.reshape(-1))]
    ins.append("" if layer.weight_zero_points is None else
               b.constant(f"{name}.weight_zero_points", layer.weight_zero_points.data.reshape(-1)))
    if layer.bias is not None:
        ins += ["", b.constant(f"{name}.bias", layer.bias.data)]
    while ins[-1] == "":
        ins.pop()
    b.node("MatMulNBits", ins, [out], name, domain="com.microsoft", K=int(layer.in_features),
           N=int(layer.out_features), bits=4, block_size=int(layer.group_size))
