"""int8 operators of a TFLite file as the graph's "tflite" domain nodes (`graph/ops/litert.py`), with the
multipliers TFLite's kernels compute when they prepare (the `Prepare` of each kernel in LiteRT's
tflite/kernels/; s are the tensors' float scales, "float" where the kernel computes in float):

    CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED   M[c] = double(s_in) double(s_w[c]) / double(s_out)
    ADD / SUB  twice = 2 max(s_a, s_b); M_a = s_a / twice, M_b = s_b / twice, M_out = twice / (2^20 s_out)
    MUL        M = s_a s_b / s_out (float)
    RELU RELU6 RELU_N1_TO_1   M = s_in / s_out (float), the activation's clamp
    LEAKY_RELU M = s_in / s_out and s_in alpha / s_out (float); PRELU s_in / s_out and s_in s_alpha / s_out
    MEAN       M = double(s_in) / double(s_out) (1 / count folded in when it runs)
    HARD_SWISH M = (s_in / 128) / s_out and (s_in / 128) / (3 / 2^15) (float), down-scaled to int16
    SOFTMAX    beta s_in 2^26 (PreprocessSoftmaxScaling), diff_min (CalculateInputRadius)
    LOGISTIC / TANH   a 256-entry table (LUTPopulate)
    MAX / AVERAGE_POOL_2D, PAD, PADV2, CONCATENATION, RESIZE_BILINEAR   on the codes (same scale and zero point)
    QUANTIZE (float -> int8 / uint8 / int16)          AffineQuantize

and the fused activation as the clamp [act_min, act_max] of CalculateActivationRangeQuantized:
zp + round_half_away(bound / s_out) for bound 0 (RELU), 0 and 6 (RELU6), -1 and 1 (RELU_N1_TO_1).

Requantization rounds as LiteRT 2.3's reference kernels do (measured against them on hypothesis-drawn
models, tests/test_tflite_int8.py and tests/test_tflite_int8_ops.py, where each op's tests fail with the
other rounding): once (TFLITE_SINGLE_ROUNDING's formula) in FULLY_CONNECTED, twice (gemmlowp's
SaturatingRoundingDoublingHighMul then RoundingDivideByPOT) everywhere else.
"""
import math

import numpy as np

from ..graph import registry
from ..graph.ops.litert import (DOMAIN, downscale_multiplier_to_int16, logistic_float, lookup_table,
                                quantize_multiplier, softmax_input_scaling, tanh_float)
from ..graph.ops.nn import window_pads


def _quant(b, index, op, what):
    q = b.tensors[index]["quantization"]
    if q is None:
        raise registry.UnsupportedOperatorError(f"{op.label}: its {what} has no quantization parameters")
    return q


def _round(v):
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def activation_range(code, scale, zero_point, dtype, op):
    info = np.iinfo(dtype)
    low, high = int(info.min), int(info.max)

    def quantize(f):
        return zero_point + _round(float(np.float32(f) / np.float32(scale)))
    if code == 1:
        return max(low, quantize(0.0)), high
    if code == 3:
        return max(low, quantize(0.0)), min(high, quantize(6.0))
    if code == 2:
        return max(low, quantize(-1.0)), min(high, quantize(1.0))
    if code != 0:
        raise registry.UnsupportedOperatorError(f"{op.label}: fused activation {code} on an integer operator")
    return low, high


def _multipliers(real):
    pairs = [quantize_multiplier(float(m)) for m in real]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _output(b, op):
    out = op.outputs[0]
    q = _quant(b, out, op, "output")
    return out, float(q["scale"][0]), int(q["zero_point"][0])


def conv(b, op, depthwise):
    o = op.options
    x, out = op.inputs[0], op.outputs[0]
    w, bias = b.weights(op, "filter")
    if w.dtype != np.int8 or (bias is not None and bias.dtype != np.int32):
        raise registry.UnsupportedOperatorError(f"{op.label}: int8 filters and int32 biases are supported, got "
                                                f"{w.dtype} and {None if bias is None else bias.dtype}")
    s_in, zp_in = float(_quant(b, x, op, "input")["scale"][0]), int(_quant(b, x, op, "input")["zero_point"][0])
    s_w = _quant(b, op.inputs[1], op, "filter")["scale"]
    _, s_out, zp_out = _output(b, op)
    channels = w.shape[3] if depthwise else w.shape[0]
    s_w = np.broadcast_to(s_w.astype(np.float64), (channels,))
    multipliers, shifts = _multipliers(np.float64(s_in) * s_w / np.float64(s_out))
    n, h, wd, c = b.shape(x)
    strides, dilations = [o["stride_h"], o["stride_w"]], [o["dilation_h_factor"], o["dilation_w_factor"]]
    kernel = list(w.shape[1:3])
    same = o["padding"] == 0
    pads = window_pads([h, wd], kernel, strides, dilations, None, "SAME_UPPER" if same else "VALID")
    size = [-(-i // s) if same else (i - d * (k - 1) - 1) // s + 1
            for i, k, s, d in zip((h, wd), kernel, strides, dilations)]
    low, high = activation_range(o["fused_activation_function"], s_out, zp_out, np.int8, op)
    name = b.names[out]
    ins = [b.value(x), b.const(w, name + "/filter")] + ([b.const(bias, name + "/bias")] if bias is not None else [])
    y = b.op("Conv2D", ins, {"strides": strides, "dilations": dilations, "pads": pads[:2], "out_size": size,
                             "input_zero_point": zp_in, "multipliers": multipliers, "shifts": shifts,
                             "output_zero_point": zp_out, "activation_min": low, "activation_max": high,
                             "depthwise": int(depthwise), "rounding": "double"}, name=name, domain=DOMAIN)
    b.set(out, y)


def fully_connected(b, op):
    o = op.options
    x, out = op.inputs[0], op.outputs[0]
    w, bias = b.weights(op, "weights")
    if w.dtype != np.int8 or (bias is not None and bias.dtype != np.int32):
        raise registry.UnsupportedOperatorError(f"{op.label}: int8 weights and int32 biases are supported")
    qx, qw = _quant(b, x, op, "input"), _quant(b, op.inputs[1], op, "weights")
    _, s_out, zp_out = _output(b, op)
    s_w = np.broadcast_to(qw["scale"].astype(np.float64), (w.shape[0],) if qw["scale"].size > 1 else (1,))
    multipliers, shifts = _multipliers(np.float64(qx["scale"][0]) * s_w / np.float64(s_out))
    low, high = activation_range(o["fused_activation_function"], s_out, zp_out, np.int8, op)
    name = b.names[out]
    xv = b.value(x)
    if not o["keep_num_dims"] and (len(b.shape(x)) != 2 or b.shape(x)[-1] != w.shape[1]):
        xv = b.op("Reshape", [xv, b.const(np.array([-1, w.shape[1]], np.int64), name + "/shape")], name=name + "/flat")
    ins = [xv, b.const(w, name + "/weights")] + ([b.const(bias, name + "/bias")] if bias is not None else [])
    y = b.op("FullyConnected", ins, {"input_zero_point": int(qx["zero_point"][0]),
                                     "weight_zero_point": int(qw["zero_point"][0]) if qw["scale"].size == 1 else 0,
                                     "multipliers": multipliers if len(multipliers) > 1 else multipliers[0],
                                     "shifts": shifts if len(shifts) > 1 else shifts[0], "output_zero_point": zp_out,
                                     "activation_min": low, "activation_max": high, "rounding": "single"},
             name=name, domain=DOMAIN)
    b.set(out, y)


def add(b, op, op_type="Add"):
    a_i, b_i = op.inputs
    qa, qb = _quant(b, a_i, op, "first input"), _quant(b, b_i, op, "second input")
    out, s_out, zp_out = _output(b, op)
    sa, sb = np.float32(qa["scale"][0]), np.float32(qb["scale"][0])
    twice = float(np.float32(2) * max(sa, sb))                       # 2 * max(float, float): a float
    real = [float(sa) / twice, float(sb) / twice, twice / float(np.float32(1 << 20) * np.float32(s_out))]
    multipliers, shifts = _multipliers(real)
    low, high = activation_range(op.options["fused_activation_function"], s_out, zp_out, np.int8, op)
    zero_points = [int(qa["zero_point"][0]), int(qb["zero_point"][0])]
    y = b.op(op_type, [b.value(a_i), b.value(b_i)], {"zero_points": zero_points,
                                                  "multipliers": multipliers, "shifts": shifts,
                                                  "output_zero_point": zp_out, "activation_min": low,
                                                  "activation_max": high, "rounding": "double"},
             name=b.names[out], domain=DOMAIN)
    b.set(out, y)


def quantize(b, op):
    x, out = op.inputs[0], op.outputs[0]
    if b.dtype(x) != np.float32:
        raise registry.UnsupportedOperatorError(f"{op.label}: only float32 -> integer quantization is supported")
    q = _quant(b, out, op, "output")
    if q["scale"].size != 1:
        raise registry.UnsupportedOperatorError(f"{op.label}: per-channel QUANTIZE of a computed tensor")
    y = b.op("Quantize", [b.value(x)], {"scale": float(q["scale"][0]), "zero_point": int(q["zero_point"][0]),
                                        "dtype": np.dtype(b.dtype(out)).name}, name=b.names[out], domain=DOMAIN)
    b.set(out, y)


def _f32(value):
    """A multiplier LiteRT computes in float (its scales are floats): float32 arithmetic, then to double."""
    return float(np.float32(value))


def _scale_zp(b, index, op, what):
    q = _quant(b, index, op, what)
    if q["scale"].size != 1:
        raise registry.UnsupportedOperatorError(f"{op.label}: its {what} is quantized per channel; per-tensor "
                                                "quantization is needed")
    return np.float32(q["scale"][0]), int(q["zero_point"][0])


def _int8(b, op, *indices):
    for i in indices:
        if b.dtype(i) != np.int8:
            raise registry.UnsupportedOperatorError(f"{op.label}: int8 inputs and outputs are supported, tensor "
                                                    f"{b.tensor_name(i)!r} is {np.dtype(b.dtype(i)).name}")


def sub(b, op):
    """SUB as ADD's arithmetic (Prepare of sub.cc: left_shift 20, the same three multipliers)."""
    add(b, op, "Sub")


def mul(b, op):
    """MUL: M = s_a s_b / s_y, in float as mul.cc computes it."""
    a_i, b_i = op.inputs
    _int8(b, op, a_i, b_i, op.outputs[0])
    (sa, zpa), (sb, zpb) = _scale_zp(b, a_i, op, "first input"), _scale_zp(b, b_i, op, "second input")
    out, s_out, zp_out = _output(b, op)
    q, shift = quantize_multiplier(_f32(sa * sb / np.float32(s_out)))
    low, high = activation_range(op.options["fused_activation_function"], s_out, zp_out, np.int8, op)
    y = b.op("Mul", [b.value(a_i), b.value(b_i)], {"zero_points": [zpa, zpb], "multiplier": q, "shift": shift,
                                                  "output_zero_point": zp_out, "activation_min": low,
                                                  "activation_max": high, "rounding": "double"},
             name=b.names[out], domain=DOMAIN)
    b.set(out, y)


def relu(code):
    """RELU (code 1), RELU_N1_TO_1 (2), RELU6 (3): M = s_x / s_y (float), the activation's clamp."""
    def convert(b, op):
        x = op.inputs[0]
        _int8(b, op, x, op.outputs[0])
        s_in, zp_in = _scale_zp(b, x, op, "input")
        out, s_out, zp_out = _output(b, op)
        q, shift = quantize_multiplier(_f32(s_in / np.float32(s_out)))
        low, high = activation_range(code, s_out, zp_out, np.int8, op)
        y = b.op("ReluX", [b.value(x)], {"input_zero_point": zp_in, "multiplier": q, "shift": shift,
                                         "output_zero_point": zp_out, "activation_min": low, "activation_max": high,
                                         "rounding": "double"}, name=b.names[out], domain=DOMAIN)
        b.set(out, y)
    return convert


def leaky_relu(b, op):
    """LEAKY_RELU: M_identity = s_x / s_y and M_alpha = s_x alpha / s_y, in float as LeakyReluPrepare does."""
    x = op.inputs[0]
    _int8(b, op, x, op.outputs[0])
    s_in, zp_in = _scale_zp(b, x, op, "input")
    out, s_out, zp_out = _output(b, op)
    multipliers, shifts = _multipliers([_f32(s_in / np.float32(s_out)),
                                        _f32(s_in * np.float32(op.options["alpha"]) / np.float32(s_out))])
    y = b.op("LeakyRelu", [b.value(x)], {"input_zero_point": zp_in, "multipliers": multipliers, "shifts": shifts,
                                         "output_zero_point": zp_out, "rounding": "double"},
             name=b.names[out], domain=DOMAIN)
    b.set(out, y)


def prelu(b, op):
    """PRELU: M_1 = s_x / s_y where x >= 0, M_2 = s_x s_alpha / s_y elsewhere (float, PreluPrepare)."""
    x, alpha = op.inputs
    _int8(b, op, x, alpha, op.outputs[0])
    (s_in, zp_in), (s_alpha, zp_alpha) = _scale_zp(b, x, op, "input"), _scale_zp(b, alpha, op, "alpha")
    out, s_out, zp_out = _output(b, op)
    multipliers, shifts = _multipliers([_f32(s_in / np.float32(s_out)), _f32(s_in * s_alpha / np.float32(s_out))])
    y = b.op("PRelu", [b.value(x), b.value(alpha)], {"zero_points": [zp_in, zp_alpha], "multipliers": multipliers,
                                                     "shifts": shifts, "output_zero_point": zp_out,
                                                     "rounding": "double"}, name=b.names[out], domain=DOMAIN)
    b.set(out, y)


def _same_quantization(b, op, indices, what):
    """TFLite's int8 pooling, padding and concatenation move codes: input and output must share scale and zero
    point (LiteRT's Prepare checks it too)."""
    out = _scale_zp(b, op.outputs[0], op, "output")
    for i in indices:
        if _scale_zp(b, i, op, what) != out:
            raise registry.UnsupportedOperatorError(
                f"{op.label}: int8 tensor {b.tensor_name(i)!r} has scale and zero point {_scale_zp(b, i, op, what)}, "
                f"the output {out}; LiteRT's int8 kernel needs them equal (it does not requantize)")
    return out


def pool(mode):
    """MAX_POOL_2D / AVERAGE_POOL_2D on the codes, TF's SAME / VALID padding, the fused activation's clamp."""
    def convert(b, op):
        o = op.options
        x, out = op.inputs[0], op.outputs[0]
        _int8(b, op, x, out)
        s_out, zp_out = _same_quantization(b, op, [x], "input")
        _, h, w, _ = b.shape(x)
        kernel, strides = [o["filter_height"], o["filter_width"]], [o["stride_h"], o["stride_w"]]
        same = o["padding"] == 0
        pads = window_pads([h, w], kernel, strides, [1, 1], None, "SAME_UPPER" if same else "VALID")
        size = [-(-i // s) if same else (i - k) // s + 1 for i, k, s in zip((h, w), kernel, strides)]
        low, high = activation_range(o["fused_activation_function"], float(s_out), zp_out, np.int8, op)
        y = b.op("Pool2D", [b.value(x)], {"mode": mode, "kernel": kernel, "strides": strides, "pads": pads[:2],
                                          "out_size": size, "activation_min": low, "activation_max": high},
                 name=b.names[out], domain=DOMAIN)
        b.set(out, y)
    return convert


def mean(b, op):
    """MEAN: M = double(s_x) / double(s_y) (PrepareMeanOrSum); the 1 / count is folded in when it runs."""
    x, out = op.inputs[0], op.outputs[0]
    _int8(b, op, x, out)
    s_in, zp_in = _scale_zp(b, x, op, "input")
    _, s_out, zp_out = _output(b, op)
    rank = len(b.shape(x))
    axes = sorted({int(a) % rank for a in b.array(op.inputs[1], op, "axes").reshape(-1)})
    q, shift = quantize_multiplier(float(s_in) / float(np.float32(s_out)))
    y = b.op("Mean", [b.value(x)], {"axes": axes, "keepdims": int(op.options["keep_dims"]), "input_zero_point": zp_in,
                                    "multiplier": q, "shift": shift, "output_zero_point": zp_out,
                                    "rounding": "double"}, name=b.names[out], domain=DOMAIN)
    b.set(out, y)


def pad(b, op):
    """PAD / PADV2 on the codes: the padding is the output's zero point (PAD, i.e. real 0) or PADV2's constant
    value, whose zero point must be the output's."""
    x, out = op.inputs[0], op.outputs[0]
    _int8(b, op, x, out)
    _same_quantization(b, op, [x], "input")
    name = b.names[out]
    paddings = b.array(op.inputs[1], op, "paddings").reshape(-1, 2).astype(np.int64)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        value = b.array(op.inputs[2], op, "constant value")
        if _scale_zp(b, op.inputs[2], op, "constant value")[1] != _scale_zp(b, out, op, "output")[1]:
            raise registry.UnsupportedOperatorError(f"{op.label}: the constant value's zero point is not the "
                                                    "output's (LiteRT requires it)")
        value = value.reshape(()).astype(np.int8)
    else:
        value = np.array(_scale_zp(b, out, op, "output")[1], np.int8)
    y = b.op("Pad", [b.value(x), b.const(np.concatenate([paddings[:, 0], paddings[:, 1]]), name + "/pads"),
                     b.const(value, name + "/value")], name=name)
    b.set(out, y)


def concatenation(b, op):
    """CONCATENATION on the codes. LiteRT's int8 kernel does not requantize: its Prepare refuses inputs whose
    scale or zero point differ from the output's (only uint8 rescales), and so does this."""
    out = op.outputs[0]
    _int8(b, op, *op.inputs, out)
    if op.options["fused_activation_function"]:
        raise registry.UnsupportedOperatorError(f"{op.label}: a fused activation on a concatenation (LiteRT "
                                                "ignores it on int8)")
    _same_quantization(b, op, op.inputs, "input")
    axis = op.options["axis"] % len(b.shape(op.inputs[0]))
    b.set(out, b.op("Concat", [b.value(i) for i in op.inputs], {"axis": axis}, name=b.names[out]))


CONVERTERS = {"SUB": sub, "MUL": mul, "RELU": relu(1), "RELU_N1_TO_1": relu(2), "RELU6": relu(3),
              "LEAKY_RELU": leaky_relu, "PRELU": prelu, "MAX_POOL_2D": pool("max"),
              "AVERAGE_POOL_2D": pool("average"), "MEAN": mean, "PAD": pad, "PADV2": pad,
              "CONCATENATION": concatenation}


def table(function):
    """LOGISTIC / TANH: LiteRT's reference (and default) kernels look int8 codes up in a table
    (SigmoidPrepare / TanhPrepare: LUTPopulate of 1 / (1 + exp(-x)) or tanh(x))."""
    def convert(b, op):
        x, out = op.inputs[0], op.outputs[0]
        _int8(b, op, x, out)
        s_in, zp_in = _scale_zp(b, x, op, "input")
        s_out, zp_out = _scale_zp(b, out, op, "output")
        values = lookup_table(function, s_in, zp_in, s_out, zp_out, "int8")
        b.set(out, b.op("LookupTable", [b.value(x)], {"table": [int(v) for v in values]}, name=b.names[out],
                        domain=DOMAIN))
    return convert


CONVERTERS.update({"LOGISTIC": table(logistic_float), "TANH": table(tanh_float)})


def hard_swish(b, op):
    """HARD_SWISH (HardSwishPrepare, in float): hires = s_x / 128, M_out = hires / s_y, M_relu = hires / (3 /
    32768), each quantized to int32 then down-scaled to int16."""
    x, out = op.inputs[0], op.outputs[0]
    _int8(b, op, x, out)
    s_in, zp_in = _scale_zp(b, x, op, "input")
    s_out, zp_out = _scale_zp(b, out, op, "output")
    hires = np.float32(1.0 / 128.0) * s_in
    q_out, e_out = quantize_multiplier(_f32(hires / s_out))
    q_relu, e_relu = quantize_multiplier(_f32(hires / np.float32(3.0 / 32768.0)))
    if e_out > 0:
        raise registry.UnsupportedOperatorError(f"{op.label}: output scale {s_out} is below the input's / 128 "
                                                "(LiteRT refuses it too)")
    y = b.op("HardSwish", [b.value(x)], {"input_zero_point": zp_in, "output_zero_point": zp_out,
                                         "output_multiplier": downscale_multiplier_to_int16(q_out),
                                         "output_exponent": e_out,
                                         "relu_multiplier": downscale_multiplier_to_int16(q_relu),
                                         "relu_exponent": e_relu}, name=b.names[out], domain=DOMAIN)
    b.set(out, y)


CONVERTERS["HARD_SWISH"] = hard_swish


def resize_bilinear(b, op):
    """RESIZE_BILINEAR on the codes (no requantization: LiteRT interpolates int8 codes as they are)."""
    o = op.options
    x, out = op.inputs[0], op.outputs[0]
    _int8(b, op, x, out)
    if o["align_corners"] and o["half_pixel_centers"]:
        raise registry.UnsupportedOperatorError(f"{op.label}: align_corners with half_pixel_centers (LiteRT "
                                                "refuses it too)")
    size = [int(v) for v in b.array(op.inputs[1], op, "size").reshape(-1)]
    y = b.op("ResizeBilinear", [b.value(x)], {"size": size, "align_corners": int(o["align_corners"]),
                                              "half_pixel_centers": int(o["half_pixel_centers"]),
                                              "rounding": "double"}, name=b.names[out], domain=DOMAIN)
    b.set(out, y)


CONVERTERS["RESIZE_BILINEAR"] = resize_bilinear


def softmax(b, op):
    """SOFTMAX int8 -> int8: LiteRT's reference kernel is gemmlowp's fixed-point exp and reciprocal (its
    optimized one a float table, not bit-exact with it); the output must be scale 1/256, zero point -128."""
    x, out = op.inputs[0], op.outputs[0]
    _int8(b, op, x, out)
    s_in, _ = _scale_zp(b, x, op, "input")
    s_out, zp_out = _scale_zp(b, out, op, "output")
    if zp_out != -128 or abs(float(s_out) - 1 / 256) > 0.001 / 256:
        raise registry.UnsupportedOperatorError(f"{op.label}: an int8 output of scale 1/256 and zero point -128 "
                                                f"is needed (LiteRT requires it), got {float(s_out)} and {zp_out}")
    q, shift, diff_min = softmax_input_scaling(np.float32(op.options["beta"]), s_in)
    y = b.op("Softmax", [b.value(x)], {"multiplier": q, "shift": shift, "diff_min": diff_min},
             name=b.names[out], domain=DOMAIN)
    b.set(out, y)


CONVERTERS["SOFTMAX"] = softmax
