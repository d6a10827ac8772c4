"""Each TFLite builtin operator as the graph's nodes: `CONVERTERS[name](builder, op)`.

    CONV_2D, DEPTHWISE_CONV_2D   -> nn.Conv2d (NCHW; filter OHWI -> OIHW, depthwise 1HW(C*M) -> (C*M)1HW, groups C)
    TRANSPOSE_CONV               -> nn.ConvTranspose2d, or a ConvTranspose node when TF's crop is asymmetric
    FULLY_CONNECTED              -> nn.Linear (weights (O, I) as stored), after a Reshape to (-1, I)
    ADD SUB MUL DIV              -> Add Sub Mul Div (NumPy broadcasting, as TFLite's)
    MAX_POOL_2D AVERAGE_POOL_2D  -> MaxPool, AveragePool (NCHW; TF's average excludes the padding)
    PAD PADV2 MEAN RESHAPE CONCATENATION SPLIT SPLIT_V STRIDED_SLICE TRANSPOSE -> Pad ReduceMean Reshape Concat
                                    Split Slice(+Reshape) Transpose
    DEPTH_TO_SPACE               -> Reshape, Transpose, Reshape (TF's DCR order)
    RESIZE_BILINEAR / _NEAREST_NEIGHBOR -> Resize (align_corners / half_pixel_centers as coordinate modes)
    LOGISTIC TANH RELU RELU6 RELU_N1_TO_1 LEAKY_RELU HARD_SWISH PRELU SOFTMAX -> Sigmoid Tanh Relu Clip LeakyRelu
                                    HardSwish PRelu Softmax (beta: a Mul before)
    DEQUANTIZE DENSIFY           -> folded into constants (float16 and int8 weights, sparse weights); a
                                    computed float16 input becomes a Cast, a computed int8 one DequantizeLinear

TF's padding: SAME pads total = max((ceil(in / s) - 1) s + d (k - 1) + 1 - in, 0), total // 2 before and the
rest after, which is ONNX's SAME_UPPER; VALID pads nothing. Each op's fused activation (RELU, RELU6,
RELU_N1_TO_1, TANH) is a node after it.
"""
import numpy as np

from ..graph import registry
from ..graph.ops.nn import window_pads
from ..onnx.lower import lower
from . import integer, schema
from .errors import TFLiteFormatError
from .sparsity import densify

TO_NCHW = [0, 3, 1, 2]


def _optional(op, k):
    return op.inputs[k] if len(op.inputs) > k and op.inputs[k] >= 0 else None


def _float_weights(b, op, *arrays):
    for a in arrays:
        if a is not None and a.dtype != np.float32:
            raise registry.UnsupportedOperatorError(
                f"{op.label}: {a.dtype} weights are not supported (float32, or float16 / int8 through DEQUANTIZE)")


def _positive(op, **values):
    """Strides, dilations and window sizes must be at least 1."""
    bad = {k: v for k, v in values.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise TFLiteFormatError(f"{op.label}: {bad} must be at least 1")


def _padding(op):
    code = op.options.get("padding", 0)
    if code not in (0, 1):
        raise registry.UnsupportedOperatorError(f"{op.label}: padding {code} (expected SAME or VALID)")
    return "SAME_UPPER" if code == 0 else "VALID"


def _out(op, k=0):
    return op.outputs[k]


def _spatial(b, index):
    shape = b.shape(index)
    if len(shape) != 4 or any(d <= 0 for d in shape[1:]):
        raise registry.UnsupportedOperatorError(f"operator on tensor {b.tensor_name(index)!r}: a 4-D NHWC input of "
                                                f"known height, width and channels is needed, got shape {shape}")
    return shape


# ----- layers --------------------------------------------------------------------------------------

def _conv_layer(b, op, weight, bias, group):
    """Conv2d (OIHW weight) on the NCHW input through the ONNX importer's lowering."""
    o = op.options
    _positive(op, stride_h=o["stride_h"], stride_w=o["stride_w"], dilation_h=o["dilation_h_factor"],
              dilation_w=o["dilation_w_factor"])
    x = op.inputs[0]
    _, h, w, _ = _spatial(b, x)
    attrs = {"strides": [o["stride_h"], o["stride_w"]], "dilations": [o["dilation_h_factor"], o["dilation_w_factor"]],
             "auto_pad": _padding(op), "group": group}
    values = {"w": weight, "b": bias}
    lowered = lower("Conv", 11, attrs, ["x", "w", "b" if bias is not None else ""], ["y"], values.get,
                    lambda v: 4, lambda v: [h, w])
    if lowered is None:
        raise registry.UnsupportedOperatorError(f"{op.label}: this filter cannot run as a convolution layer")
    layer, pre = lowered
    src = b.nchw(x)
    for op_type, version, op_attrs in pre:
        src = b.op(op_type, [src], op_attrs, version=version, name=b.names[_out(op)] + "/pad")
    y = b.layer(layer, src, b.names[_out(op)], "Conv")
    b.set(_out(op), b.activation(y, o["fused_activation_function"], op, b.names[_out(op)]), "nchw")


def _conv(depthwise):
    def convert(b, op):
        if b.dtype(op.inputs[0]) == np.int8:
            return integer.conv(b, op, depthwise)
        w, bias = b.weights(op, "filter")
        _float_weights(b, op, w, bias)
        channels = _spatial(b, op.inputs[0])[3]
        if w.ndim != 4 or (w.shape[0] != 1 or w.shape[3] % channels if depthwise else channels % w.shape[3]):
            raise registry.UnsupportedOperatorError(f"{op.label}: filter shape {list(w.shape)} for {channels} "
                                                    "channels")
        if depthwise:
            _conv_layer(b, op, w.transpose(3, 0, 1, 2), bias, channels)
        else:
            _conv_layer(b, op, w.transpose(0, 3, 1, 2), bias, channels // w.shape[3])
    convert.__doc__ = ("DEPTHWISE_CONV_2D: out[..., c * M + m] = sum_k x[..., c] w[0, k, c * M + m], a grouped "
                       "convolution with C groups" if depthwise else
                       "CONV_2D: filter (O, KH, KW, I) as OIHW, groups = C / I")
    return convert


def transpose_conv(b, op):
    """out[oy] += x[iy] w[ky] at oy = iy * s - pad_top + ky, for oy in [0, OH): TF computes the padding as for
    a convolution from the output size OH (given) to the input's, and crops the full result there."""
    shape = [int(v) for v in b.array(op.inputs[0], op, "output shape").reshape(-1)]
    w, bias = b.weights(op, "filter", 1, 3)                          # (O, KH, KW, I)
    x = op.inputs[2]
    _float_weights(b, op, w, bias)
    _, h, wd, c = _spatial(b, x)
    o = op.options
    _positive(op, stride_h=o["stride_h"], stride_w=o["stride_w"])
    strides, kernel = [o["stride_h"], o["stride_w"]], list(w.shape[1:3])
    auto_pad = _padding(op)
    pads = window_pads(shape[1:3], kernel, strides, [1, 1], None, auto_pad)
    full = [s * (i - 1) + k for s, i, k in zip(strides, (h, wd), kernel)]
    begin = pads[:2]
    end = [f - p - n for f, p, n in zip(full, begin, shape[1:3])]    # negative: zeros past the full result
    weight = np.ascontiguousarray(w.transpose(3, 0, 1, 2))          # ONNX (C_in, C_out, KH, KW)
    extra = [p - e for p, e in zip(begin, end)]
    attrs = {"strides": strides, "pads": begin + begin, "output_padding": extra}
    values = {"w": weight, "b": bias}
    lowered = None
    if all(0 <= e < s for e, s in zip(extra, strides)):
        lowered = lower("ConvTranspose", 11, attrs, ["x", "w", "b" if bias is not None else ""], ["y"], values.get,
                        lambda v: 4, lambda v: [h, wd])
    name = b.names[_out(op)]
    if lowered is not None:
        y = b.layer(lowered[0], b.nchw(x), name, "ConvTranspose")
    else:
        ins = [b.nchw(x), b.const(weight, name + "/weight")] + ([b.const(bias, name + "/bias")] if bias is not None
                                                               else [])
        y = b.op("ConvTranspose", ins, {"strides": strides, "pads": begin + end}, name=name + "/conv_transpose")
    b.set(_out(op), b.activation(y, o.get("fused_activation_function", 0), op, name), "nchw")


def fully_connected(b, op):
    """y = x' W^T + bias with W (O, I) as stored; x' is x reshaped to (-1, I) unless keep_num_dims."""
    o = op.options
    if b.dtype(op.inputs[0]) == np.int8 and o["weights_format"] == 0:
        return integer.fully_connected(b, op)
    if o["weights_format"] != 0:
        raise registry.UnsupportedOperatorError(f"{op.label}: shuffled weights (weights_format "
                                                f"{o['weights_format']}) are not supported")
    if o["fused_activation_function"] not in (0, 1, 2, 3):
        raise registry.UnsupportedOperatorError(f"{op.label}: fused activation "
                                                f"{schema.ACTIVATIONS[o['fused_activation_function']]} (LiteRT "
                                                "refuses it too: NONE, RELU, RELU_N1_TO_1 or RELU6)")
    w, bias = b.weights(op, "weights")
    _float_weights(b, op, w, bias)
    values = {"w": w, "b": bias}
    lowered = lower("Gemm", 11, {"transB": 1}, ["x", "w", "b" if bias is not None else ""], ["y"], values.get,
                    lambda v: 2, lambda v: None)
    if lowered is None:
        raise registry.UnsupportedOperatorError(f"{op.label}: weights {list(w.shape)} and bias do not form a layer")
    x, name = b.value(op.inputs[0]), b.names[_out(op)]
    shape = b.shape(op.inputs[0])
    if not o["keep_num_dims"] and (len(shape) != 2 or shape[-1] != w.shape[1]):
        x = b.op("Reshape", [x, b.const(np.array([-1, w.shape[1]], np.int64), name + "/shape")], name=name + "/flatten")
    y = b.layer(lowered[0], x, name, "Gemm")
    b.set(_out(op), b.activation(y, o["fused_activation_function"], op, name))


# ----- elementwise ---------------------------------------------------------------------------------

def _nchw_constant(b, index, hint):
    """A constant broadcast against an NHWC 4-D tensor, as the constant to broadcast against its NCHW twin."""
    a = b.arrays.get(index)
    if not isinstance(a, np.ndarray) or a.ndim > 4:
        return None                     # a sparse constant (read by DENSIFY only), or not 4-D broadcastable
    return b.const(np.ascontiguousarray(a.reshape((1,) * (4 - a.ndim) + a.shape).transpose(TO_NCHW)), hint)


def _operands(b, op):
    """The operands and layout of an elementwise op: NCHW when its 4-D operands only exist in NCHW."""
    ins = op.inputs
    if any(b.has_nchw_only(i) for i in ins) and all(b.has_nchw_only(i) or b.arrays.get(i) is not None for i in ins):
        values = [b.nchw_names[i] if b.has_nchw_only(i) else _nchw_constant(b, i, b.names[i] + "/nchw") for i in ins]
        if all(v is not None for v in values):
            return values, "nchw"
    return [b.value(i) for i in ins], "nhwc"


def _binary(onnx_type):
    def convert(b, op):
        if onnx_type == "Add" and all(b.dtype(i) == np.int8 for i in op.inputs):
            return integer.add(b, op)
        values, layout = _operands(b, op)
        name = b.names[_out(op)]
        y = b.op(onnx_type, values, name=name)
        b.set(_out(op), b.activation(y, op.options.get("fused_activation_function", 0), op, name), layout)
    convert.__doc__ = f"{onnx_type} with NumPy broadcasting, then the fused activation."
    return convert


def _unary(onnx_type, attrs=None, extra=None):
    def convert(b, op):
        values, layout = _operands(b, op)
        name = b.names[_out(op)]
        consts = [b.const(np.array(v, np.float32), f"{name}/{k}") for k, v in (extra or [])]
        given = attrs(op) if callable(attrs) else (attrs or {})
        b.set(_out(op), b.op(onnx_type, values[:1] + consts, given, name=name), layout)
    return convert


def prelu(b, op):
    """x if x >= 0 else alpha x, alpha broadcast against x."""
    values, layout = _operands(b, op)
    b.set(_out(op), b.op("PRelu", values, name=b.names[_out(op)]), layout)


def softmax(b, op):
    """softmax(beta x) over the last axis."""
    x, name = b.value(op.inputs[0]), b.names[_out(op)]
    beta = float(op.options["beta"])
    if beta != 1.0:
        x = b.op("Mul", [x, b.const(np.array(beta, np.float32), name + "/beta")], name=name + "/beta")
    b.set(_out(op), b.op("Softmax", [x], {"axis": -1}, name=name))


# ----- pooling and reductions ----------------------------------------------------------------------

def _pool(onnx_type):
    def convert(b, op):
        o = op.options
        _positive(op, stride_h=o["stride_h"], stride_w=o["stride_w"], filter_height=o["filter_height"],
                  filter_width=o["filter_width"])
        _spatial(b, op.inputs[0])
        name = b.names[_out(op)]
        attrs = {"kernel_shape": [o["filter_height"], o["filter_width"]], "strides": [o["stride_h"], o["stride_w"]],
                 "auto_pad": _padding(op)}
        y = b.op(onnx_type, [b.nchw(op.inputs[0])], attrs, name=name)
        b.set(_out(op), b.activation(y, o["fused_activation_function"], op, name), "nchw")
    return convert


def mean(b, op):
    """ReduceMean over the axes given (keep_dims as ReducerOptions say); a 4-D NCHW value reduces there when
    the remaining axes keep their order."""
    axes = sorted({int(a) % max(len(b.shape(op.inputs[0])), 1)
                   for a in b.array(op.inputs[1], op, "axes").reshape(-1)})
    keep = int(op.options["keep_dims"])
    name = b.names[_out(op)]
    if b.has_nchw_only(op.inputs[0]):
        positions = sorted(TO_NCHW.index(a) for a in axes)
        rest = [a for a in range(4) if a not in axes]
        if keep or [TO_NCHW[p] for p in range(4) if p not in positions] == rest:
            y = b.op("ReduceMean", [b.nchw_names[op.inputs[0]], b.const(np.array(positions, np.int64), name + "/axes")],
                     {"keepdims": keep}, name=name)
            b.set(_out(op), y, "nchw" if keep else "nhwc")
            return
    y = b.op("ReduceMean", [b.value(op.inputs[0]), b.const(np.array(axes, np.int64), name + "/axes")],
             {"keepdims": keep}, name=name)
    b.set(_out(op), y)


# ----- shapes --------------------------------------------------------------------------------------

def reshape(b, op):
    """The new shape from the shape input, else the options, else the output tensor's shape (0 is a zero
    size in TFLite, so allowzero=1)."""
    shape = None
    if _optional(op, 1) is not None and b.arrays.get(op.inputs[1]) is not None:
        shape = b.arrays[op.inputs[1]].reshape(-1)
    elif op.options.get("new_shape"):
        shape = np.array(op.options["new_shape"])
    else:
        shape = np.array(b.shape(_out(op)))
    name = b.names[_out(op)]
    b.set(_out(op), b.op("Reshape", [b.value(op.inputs[0]), b.const(shape.astype(np.int64), name + "/shape")],
                         {"allowzero": 1}, name=name))


def pad(b, op):
    """paddings (rank, 2) -> ONNX pads [begin..., end...]; PADV2's third input is the constant value."""
    paddings = b.array(op.inputs[1], op, "paddings").reshape(-1, 2).astype(np.int64)
    name = b.names[_out(op)]
    extra = [b.value(op.inputs[2])] if _optional(op, 2) is not None else []
    if b.has_nchw_only(op.inputs[0]) and paddings.shape[0] == 4 and not extra:
        paddings = paddings[TO_NCHW]
        x, layout = b.nchw_names[op.inputs[0]], "nchw"
    else:
        x, layout = b.value(op.inputs[0]), "nhwc"
    pads = b.const(np.concatenate([paddings[:, 0], paddings[:, 1]]), name + "/pads")
    if extra:
        extra = [b.op("Reshape", [extra[0], b.const(np.array([], np.int64), name + "/scalar")], name=name + "/value")]
    b.set(_out(op), b.op("Pad", [x, pads] + extra, name=name), layout)


def concatenation(b, op):
    o = op.options
    if o["fused_activation_function"]:
        raise registry.UnsupportedOperatorError(f"{op.label}: a fused activation on a float concatenation (LiteRT "
                                                "refuses it too)")
    rank = len(b.shape(op.inputs[0]))
    axis = o["axis"] % rank
    name = b.names[_out(op)]
    if rank == 4 and all(b.has_nchw_only(i) for i in op.inputs):
        y = b.op("Concat", [b.nchw_names[i] for i in op.inputs], {"axis": TO_NCHW.index(axis)}, name=name)
        layout = "nchw"
    else:
        y = b.op("Concat", [b.value(i) for i in op.inputs], {"axis": axis}, name=name)
        layout = "nhwc"
    b.set(_out(op), y, layout)


def _split_into(b, op, x_index, axis, sizes):
    name = b.names[_out(op)]
    outs = [b.fresh(b.names[o] + "/split") for o in op.outputs]
    b.op("Split", [b.value(x_index), b.const(np.array(sizes, np.int64), name + "/split")], {"axis": axis},
         out=outs, name=name + "/split")
    for index, value in zip(op.outputs, outs):
        b.set(index, value)


def split(b, op):
    """SPLIT: inputs (axis, x), num_splits equal parts."""
    x = op.inputs[1]
    rank = len(b.shape(x))
    axis = int(b.array(op.inputs[0], op, "axis").reshape(-1)[0]) % rank
    size, n = b.shape(x)[axis], op.options["num_splits"]
    if n <= 0 or size % n:
        raise registry.UnsupportedOperatorError(f"{op.label}: {size} does not split into {n} equal parts")
    _split_into(b, op, x, axis, [size // n] * n)


def split_v(b, op):
    """SPLIT_V: inputs (x, size_splits, axis); one size may be -1 (the rest)."""
    x = op.inputs[0]
    rank = len(b.shape(x))
    axis = int(b.array(op.inputs[2], op, "axis").reshape(-1)[0]) % rank
    sizes = [int(s) for s in b.array(op.inputs[1], op, "size_splits").reshape(-1)]
    if -1 in sizes:
        sizes[sizes.index(-1)] = b.shape(x)[axis] - (sum(sizes) + 1)
    _split_into(b, op, x, axis, sizes)


def transpose(b, op):
    perm = [int(p) for p in b.array(op.inputs[1], op, "permutation").reshape(-1)]
    b.set(_out(op), b.op("Transpose", [b.value(op.inputs[0])], {"perm": perm}, name=b.names[_out(op)]))


def _clamp(v, low, high):
    return min(max(v, low), high)


def strided_slice(b, op):
    """TF's strided slice as LiteRT resolves it (`StartForAxis` / `StopForAxis`): a masked begin or end is
    the far end for the stride's direction, negative indices count from the end, then begin and end clamp
    to [0, dim] (positive stride) or [-1, dim - 1] (negative); `offset` makes end relative to begin; a shrunk
    axis takes the one element at begin and is dropped (a Reshape after the Slice). The resolved ranges go
    into a Slice node with explicit bounds. Ellipsis and new-axis masks are not supported."""
    o = op.options
    if o["ellipsis_mask"] or o["new_axis_mask"]:
        raise registry.UnsupportedOperatorError(f"{op.label}: ellipsis_mask / new_axis_mask are not supported")
    shape = b.shape(op.inputs[0])
    begin = [int(v) for v in b.array(op.inputs[1], op, "begin").reshape(-1)]
    end = [int(v) for v in b.array(op.inputs[2], op, "end").reshape(-1)]
    strides = [int(v) for v in b.array(op.inputs[3], op, "strides").reshape(-1)] if _optional(op, 3) is not None \
        else [1] * len(begin)
    low, high = -2 ** 31, 2 ** 31 - 1
    spans, out_shape = [], []
    for axis, dim in enumerate(shape):
        if axis >= len(begin):
            spans.append(range(dim))
            out_shape.append(dim)
            continue
        step = strides[axis]
        if step == 0:
            raise registry.UnsupportedOperatorError(f"{op.label}: stride 0 on axis {axis}")
        first = (low if step > 0 else high) if o["begin_mask"] >> axis & 1 else begin[axis]
        first = first + dim if first < 0 else first
        first = _clamp(first, 0, dim) if step > 0 else _clamp(first, -1, dim - 1)
        if o["shrink_axis_mask"] >> axis & 1:
            spans.append(range(first, first + 1))
            continue
        stop = begin[axis] + end[axis] if o["offset"] else end[axis]
        stop = (high if step > 0 else low) if o["end_mask"] >> axis & 1 else stop
        stop = stop + dim if stop < 0 else stop
        stop = _clamp(stop, 0, dim) if step > 0 else _clamp(stop, -1, dim - 1)
        spans.append(range(first, stop, step))
        out_shape.append(len(spans[-1]))
    # each range as Slice bounds: an empty one as 0:0, a stop before index 0 as -dim - 1 (Slice's "past the start")
    starts = [span[0] if len(span) else 0 for span in spans]
    ends = [(span[-1] + (1 if span.step > 0 else -1)) if len(span) else 0 for span in spans]
    ends = [e if e >= 0 else -dim - 1 for e, dim in zip(ends, shape)]
    steps = [span.step if len(span) else 1 for span in spans]
    name = b.names[_out(op)]
    y = b.op("Slice", [b.value(op.inputs[0]), b.const(np.array(starts, np.int64), name + "/starts"),
                       b.const(np.array(ends, np.int64), name + "/ends"),
                       b.const(np.arange(len(shape), dtype=np.int64), name + "/axes"),
                       b.const(np.array(steps, np.int64), name + "/steps")], name=name + "/slice")
    if o["shrink_axis_mask"]:
        y = b.op("Reshape", [y, b.const(np.array(out_shape, np.int64), name + "/shape")], {"allowzero": 1}, name=name)
    b.set(_out(op), y)


def depth_to_space(b, op):
    """out[n, h * bs + i, w * bs + j, c] = x[n, h, w, (i * bs + j) * C' + c] (TF's NHWC DepthToSpace)."""
    bs = op.options["block_size"]
    n, h, w, c = _spatial(b, op.inputs[0])
    if bs <= 0 or c % (bs * bs):
        raise registry.UnsupportedOperatorError(f"{op.label}: block size {bs} for {c} channels")
    name = b.names[_out(op)]
    y = b.op("Reshape", [b.value(op.inputs[0]), b.const(np.array([n, h, w, bs, bs, c // bs // bs], np.int64),
                                                        name + "/blocks")], name=name + "/blocks")
    y = b.op("Transpose", [y], {"perm": [0, 1, 3, 2, 4, 5]}, name=name + "/interleave")
    y = b.op("Reshape", [y, b.const(np.array([n, h * bs, w * bs, c // bs // bs], np.int64), name + "/shape")],
             name=name)
    b.set(_out(op), y)


def _resize(mode):
    def convert(b, op):
        """TF's coordinates: align_corners maps corner to corner, half_pixel_centers samples at pixel centres
        ((y + 0.5) in / out - 0.5, clamped), neither at y in / out; nearest rounds down, with align_corners
        half away from zero."""
        o = op.options
        n, h, w, c = _spatial(b, op.inputs[0])
        size = [int(v) for v in b.array(op.inputs[1], op, "size").reshape(-1)]
        align, half = o["align_corners"], o["half_pixel_centers"]
        if align and half:
            raise registry.UnsupportedOperatorError(f"{op.label}: align_corners with half_pixel_centers")
        coordinate = "align_corners" if align else "half_pixel" if half else "asymmetric"
        nearest = "round_prefer_ceil" if align or half else "floor"
        name = b.names[_out(op)]
        if b.has_nchw_only(op.inputs[0]):
            x, sizes, layout = b.nchw_names[op.inputs[0]], [n, c] + size, "nchw"
        else:
            x, sizes, layout = b.value(op.inputs[0]), [n] + size + [c], "nhwc"
        attrs = {"mode": mode, "coordinate_transformation_mode": coordinate}
        if mode == "nearest":
            attrs["nearest_mode"] = nearest
        y = b.op("Resize", [x, "", "", b.const(np.array(sizes, np.int64), name + "/sizes")], attrs, name=name)
        b.set(_out(op), y, layout)
    return convert


# ----- constants and types -------------------------------------------------------------------------

def _dequantized(array, quant, op):
    """float32(scale * (q - zero_point)), per channel along quantized_dimension (TFLite's Dequantize)."""
    if quant is None:
        raise registry.UnsupportedOperatorError(f"{op.label}: an integer input without quantization parameters")
    scale, zp, axis = quant["scale"], quant["zero_point"], quant["quantized_dimension"]
    if scale.size > 1:
        shape = [1] * array.ndim
        shape[axis] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (scale.astype(np.float64) * (array.astype(np.int64) - zp)).astype(np.float32)


def dequantize(b, op):
    """float16 -> float32 (exact), or int8 / uint8 / int16 -> float32 by the tensor's scale and zero point."""
    x, out = op.inputs[0], _out(op)
    quant = b.tensors[x]["quantization"]
    array = b.arrays.get(x)
    if array is not None and not hasattr(array, "sparsity"):
        b.arrays[out] = array.astype(np.float32) if array.dtype == np.float16 else _dequantized(array, quant, op)
        return
    if array is not None:
        raise registry.UnsupportedOperatorError(f"{op.label}: a sparse input needs DENSIFY first")
    name = b.names[out]
    if b.dtype(x) == np.float16:
        b.set(out, b.op("Cast", [b.value(x)], {"to": 1}, name=name))
        return
    if quant is None or quant["scale"].size != 1:
        raise registry.UnsupportedOperatorError(f"{op.label}: a computed input needs per-tensor quantization")
    zp = np.array(quant["zero_point"][0], b.dtype(x))
    b.set(out, b.op("DequantizeLinear", [b.value(x), b.const(quant["scale"][:1].reshape(()), name + "/scale"),
                                         b.const(zp, name + "/zero_point")], name=name))


def densify_op(b, op):
    """A sparse constant as its dense array (folded: DENSIFY's input is always a constant)."""
    array = b.arrays.get(op.inputs[0])
    if not hasattr(array, "sparsity"):
        raise registry.UnsupportedOperatorError(f"{op.label}: its input must be a sparse constant tensor")
    try:
        b.arrays[_out(op)] = densify(array.values, array.shape, array.sparsity)
    except ValueError as exc:
        raise registry.UnsupportedOperatorError(f"{op.label}: tensor {b.tensor_name(op.inputs[0])!r}: {exc}") \
            from None


# Operators that read or write quantized integer tensors correctly: the integer arithmetic of integer.py, and
# the movement ops, which move int8 codes unchanged (TFLite requires their input and output to share scale and
# zero point).
INTEGER_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "QUANTIZE", "DEQUANTIZE", "RESHAPE",
               "TRANSPOSE", "SPLIT", "SPLIT_V", "STRIDED_SLICE", "DEPTH_TO_SPACE", "RESIZE_NEAREST_NEIGHBOR"} \
    | set(integer.CONVERTERS)
_INTEGER_TYPES = (3, 7, 9)       # UINT8, INT16, INT8


def check_integer_support(b, op):
    """UnsupportedOperatorError for an operator on quantized integer tensors that is not implemented as
    TFLite's integer arithmetic (its float formula on the codes would be wrong)."""
    quantized = [i for i in op.inputs + op.outputs if i >= 0 and b.tensors[i]["type"] in _INTEGER_TYPES
                 and b.arrays.get(i) is None]
    if not quantized:
        return
    if op.name not in INTEGER_OPS:
        t = b.tensors[quantized[0]]
        raise registry.UnsupportedOperatorError(
            f"{op.label}: reads or writes the quantized tensor {t['name']!r} "
            f"({schema.TENSOR_TYPE_NAMES[t['type']]}); integer arithmetic is implemented for "
            f"{', '.join(sorted(INTEGER_OPS))}")


def _integer_or(name, convert):
    integer_convert = integer.CONVERTERS[name]

    def dispatch(b, op):
        dtype = b.dtype(op.inputs[0])
        if dtype == np.int8:
            return integer_convert(b, op)
        if np.issubdtype(dtype, np.integer) and b.tensors[op.inputs[0]]["quantization"] is not None:
            raise registry.UnsupportedOperatorError(f"{op.label}: quantized {np.dtype(dtype).name} tensors (int8 "
                                                    "is implemented)")
        return convert(b, op)
    dispatch.__doc__ = f"int8: {integer_convert.__doc__}\nelse: {convert.__doc__}"
    return dispatch


CONVERTERS = {
    "CONV_2D": _conv(depthwise=False), "DEPTHWISE_CONV_2D": _conv(depthwise=True), "TRANSPOSE_CONV": transpose_conv,
    "FULLY_CONNECTED": fully_connected,
    "ADD": _binary("Add"), "SUB": _binary("Sub"), "MUL": _binary("Mul"), "DIV": _binary("Div"),
    "PAD": pad, "PADV2": pad, "MAX_POOL_2D": _pool("MaxPool"), "AVERAGE_POOL_2D": _pool("AveragePool"),
    "MEAN": mean, "RESHAPE": reshape, "CONCATENATION": concatenation, "SPLIT": split, "SPLIT_V": split_v,
    "STRIDED_SLICE": strided_slice, "TRANSPOSE": transpose, "DEPTH_TO_SPACE": depth_to_space,
    "RESIZE_BILINEAR": _resize("linear"), "RESIZE_NEAREST_NEIGHBOR": _resize("nearest"),
    "LOGISTIC": _unary("Sigmoid"), "TANH": _unary("Tanh"), "RELU": _unary("Relu"),
    "RELU6": _unary("Clip", extra=[("min", 0.0), ("max", 6.0)]),
    "RELU_N1_TO_1": _unary("Clip", extra=[("min", -1.0), ("max", 1.0)]),
    "LEAKY_RELU": _unary("LeakyRelu", lambda op: {"alpha": float(op.options["alpha"])}),
    "HARD_SWISH": _unary("HardSwish"), "PRELU": prelu, "SOFTMAX": softmax,
    "DEQUANTIZE": dequantize, "DENSIFY": densify_op, "QUANTIZE": integer.quantize,
}
CONVERTERS.update({name: _integer_or(name, CONVERTERS[name]) for name in integer.CONVERTERS})
assert all(name in schema.BUILTIN_OPERATORS for name in CONVERTERS)
