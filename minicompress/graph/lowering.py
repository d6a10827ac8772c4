"""Lowering: the step a compiled plan runs for one graph node, or None to run it interpreted.

Each lowering keeps the formula and the order of float operations of the operator or layer it stands
for (the interpreter's `graph/ops/elementwise.py` and the layers' functions), so a lowered node gives the
interpreter's bits; it only writes into a buffer it is given instead of a new array:

    Add, Sub, Mul (any dtype), Div (floats)   np.add(a, b, out=acc) ...   (inputs of the output's dtype)
    Relu                                      np.maximum(x, 0, out=acc)
    Clip (attribute or constant bounds)       np.maximum(x, lo), then np.minimum(acc, hi)
    Sigmoid                                   0.5 tanh(0.5 x) + 0.5, one ufunc at a time into acc
    HardSigmoid, HardSwish                    alpha x + beta, clip to [0, 1] (then x * that)
    nn.Conv2d (plain float, 4-D input)        the convolution kernel with its bias in the epilogue (`ConvKernel`)
    nn.Linear (float)                         x W^T into the buffer, then the bias added in place
    ConvTranspose, kernel == stride, no pads  the patch kernel the interpreter's ConvTranspose runs
                                              (`kernels.conv.patch_conv2d_backward_input`), bias in its pass
    nn.BatchNorm2d (eval)                     the one-pass kernel the layer runs (`kernels.norm`), into the buffer
    GlobalAveragePool                         the mean in float64, rounded into the buffer
    Concat                                    np.concatenate into the buffer
    PRelu (a slope per channel, or one)       x where x >= 0, else x * slope (`kernels.fused_elementwise.prelu`)
    Pad, constant, pads >= 0                  the buffer filled with the value, x copied inside
    Resize / Upsample, nearest                a copy: every output element is one input element, found
                                              when compiling by running the operator once on a probe whose
                                              values are their own indices; integer factors on the last two
                                              axes are one pass (`kernels.fused_elementwise.repeat_upsample`), anything else one np.take
"""
from __future__ import annotations

import math

import numpy as np

from .. import nn
from ..kernels import conv as conv_kernels
from ..nn.fused import batch_norm_affine, fusable
from .steps import ACC, Call, Const, Expression

BINARY_UFUNCS = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


def _array(values, name):
    value = values.get(name) if isinstance(name, str) else None
    return value if isinstance(value, np.ndarray) else None


def lower_node(graph_module, node, values, constants):
    """The lowered step of `node` (module docstring), or None when the node runs interpreted."""
    outputs = [v for v in node["outputs"] if v]
    if len(node["outputs"]) != 1 or len(outputs) != 1:
        return None
    out = _array(values, outputs[0])
    ins = [_array(values, v) for v in node["inputs"] if v]
    if out is None or any(a is None for a in ins):
        return None
    if node["kind"] == "module":
        layer = graph_module.get_submodule(node["target"])
        if type(layer) is nn.Conv2d:
            return conv_step(graph_module, [node], layer, None, None, values)
        if type(layer) is nn.Linear and not layer._forward_hooks and not layer._forward_pre_hooks:
            return _linear_step(node, layer, values)
        if type(layer) is nn.BatchNorm2d and not layer._forward_hooks and not layer._forward_pre_hooks \
                and not layer.training:
            return _batch_norm_step(node, layer, values)
        if type(layer) is nn.ConvTranspose2d and not layer._forward_hooks and not layer._forward_pre_hooks \
                and not layer.training and tuple(layer.padding) == (0, 0):
            return _patch_transpose_call(node, values, layer.weight.data,
                                         None if layer.bias is None else layer.bias.data, layer.stride,
                                         layer.dilation, layer.groups, (0, 0))
        return None
    if node.get("domain", "") != "":
        return None
    if node["op_type"] == "ConvTranspose":
        return conv_transpose_step(node, values, constants)
    if node["op_type"] in ("Resize", "Upsample"):
        return nearest_resize_step(node, values, constants)
    if node["op_type"] == "PRelu" and node["version"] >= 7:
        return prelu_step(node, values, constants)
    if node["op_type"] == "Pad":
        return pad_step(node, values, constants)
    if node["op_type"] == "GlobalAveragePool" and _one_float_input(ins):
        return Call("GlobalAveragePool", [node["name"]], global_average_pool, [node["inputs"][0]], node["outputs"],
                    writes_out=True)
    if node["op_type"] == "Concat" and all(a.dtype == out.dtype for a in ins) and node["version"] >= 4:
        axis = node.get("attrs", {}).get("axis")
        if axis is None:
            return None
        return Call("Concat", [node["name"]], Concatenate(axis), list(node["inputs"]), node["outputs"], writes_out=True)
    calls = elementwise_calls(graph_module, node, values, constants)
    if calls is None:
        return None
    inputs = [node["inputs"][0]] + ([node["inputs"][1]] if node["op_type"] in BINARY_UFUNCS else [])
    return Expression(node["op_type"], [node["name"]], calls, inputs, node["outputs"], in_place=_in_place(calls, inputs))


def _in_place(calls, inputs):
    """Input positions read only by the first call (the output may then share their memory)."""
    later = {operand for _, operands in calls[1:] for operand in operands if isinstance(operand, int)}
    return tuple(p for p in range(len(inputs)) if p not in later)


def elementwise_calls(graph_module, node, values, constants):
    """The ufunc calls of an elementwise operator node (operand 0 its input, 1 its second), or None."""
    op_type, version = node["op_type"], node["version"]
    x = _array(values, node["inputs"][0])
    out = _array(values, node["outputs"][0])
    if x is None or out is None or x.dtype != out.dtype:
        return None
    t = x.dtype.type
    if op_type in BINARY_UFUNCS:
        b = _array(values, node["inputs"][1])
        if version < 7 or b is None or b.dtype != out.dtype or (op_type == "Div" and out.dtype.kind != "f"):
            return None
        return [(BINARY_UFUNCS[op_type], [0, 1])]
    if x.shape != out.shape:
        return None
    if op_type == "Relu":
        return [(np.maximum, [0, Const(t(0))])]
    if op_type == "Clip":
        if version >= 11 and any(v and v not in constants for v in node["inputs"][1:3]):
            return None
        if version >= 11:
            lo, hi = (None if not v else constants[v].astype(x.dtype).reshape(()) for v in (node["inputs"] + ["", ""])[1:3])
        else:          # Clip-6 clamps to its attributes, float32's range by default (-inf becomes -max)
            attrs = node.get("attrs", {})
            lo, hi = t(attrs.get("min", -3.4028234663852886e38)), t(attrs.get("max", 3.4028234663852886e38))
        calls, source = [], 0
        for ufunc, bound in ((np.maximum, lo), (np.minimum, hi)):
            if bound is not None:
                calls.append((ufunc, [source, Const(bound)]))
                source = ACC
        return calls or [(np.positive, [0])]
    if x.dtype.kind != "f":
        return None
    if op_type == "Sigmoid":
        half = Const(t(0.5))
        return [(np.multiply, [half, 0]), (np.tanh, [ACC]), (np.multiply, [half, ACC]), (np.add, [ACC, half])]
    if op_type == "HardSigmoid":
        attrs = node.get("attrs", {})
        return [(np.multiply, [Const(t(attrs.get("alpha", 0.2))), 0]), (np.add, [ACC, Const(t(attrs.get("beta", 0.5)))]),
                (np.clip, [ACC, Const(t(0)), Const(t(1))])]
    if op_type == "HardSwish":
        return [(np.multiply, [0, Const(t(1 / 6))]), (np.add, [ACC, Const(t(0.5))]),
                (np.clip, [ACC, Const(t(0)), Const(t(1))]), (np.multiply, [0, ACC])]
    return None


class ConvKernel:
    """clamp(bn(conv(x) + bias)) into `out`: `kernels.conv.conv2d_forward_arrays` with the epilogue's
    arrays and the direct kernel's weight blocks built once, when compiling."""

    def __init__(self, conv, norm, clip, x_shape):
        self.conv, self.norm, self.clip, self.x_shape = conv, norm, clip, x_shape
        self.weight = np.ascontiguousarray(conv.weight.data)
        self.stride, self.padding, self.dilation = conv_kernels._int_pairs(conv.stride, conv.padding, conv.dilation)
        self.groups = int(conv.groups)
        epilogue = conv_kernels.Epilogue(None if conv.bias is None else conv.bias.data, norm, clip)
        self.epilogue = None if epilogue.is_identity() else epilogue.arrays(self.weight.shape[0], self.weight.dtype)
        direct = (conv_kernels.uses_direct(self.weight.shape, self.groups)
                  and not conv_kernels.is_pointwise(self.weight.shape, self.stride, self.padding, self.groups)
                  and not conv_kernels.is_depthwise(x_shape[1], self.weight.shape, self.groups))
        self.taps = conv_kernels.weight_blocks(self.weight, self.groups) if direct else None

    def __call__(self, x, out=None):
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        return conv_kernels.conv2d_forward_arrays(x, self.weight, self.stride, self.padding, self.dilation,
                                                  self.groups, self.epilogue, out, self.taps)


def conv_step(graph_module, nodes, conv, bn, clip, values):
    """The `Call` of conv (-> eval bn) (-> clamp `clip`) over the first node's input, or None when the
    layers cannot run as the fused kernel (`nn.fused.fusable`: hooks, a replaced or training layer, a
    dtype the parameters do not share, an input that is not 4-D)."""
    x = _array(values, nodes[0]["inputs"][0])
    if x is None or x.ndim != 4 or conv._forward_pre_hooks or not fusable(conv, bn):
        return None
    if conv.weight.data.dtype != x.dtype or (conv.bias is not None and conv.bias.data.dtype != x.dtype):
        return None
    norm = None
    if bn is not None:
        norm = batch_norm_affine(bn, x.dtype)
        if norm is None:
            return None
    label = "+".join(["Conv"] + (["BatchNormalization"] if bn is not None else [])
                     + ([_clip_name(clip)] if clip is not None else []))
    return Call(label, [n["name"] for n in nodes], ConvKernel(conv, norm, clip, x.shape), [nodes[0]["inputs"][0]],
                nodes[-1]["outputs"], writes_out=True)


def _clip_name(clip):
    return "Relu" if tuple(clip) == (0.0, math.inf) else "Clip"


class LinearKernel:
    """x W^T (+ b) into `out`, as ops.matmul.Linear: one 2-D GEMM over the flattened leading dims, then
    the bias added in place."""

    def __init__(self, linear):
        self.weight_t = linear.weight.data.T
        self.bias = None if linear.bias is None else linear.bias.data

    def __call__(self, x, out=None):
        rows = x.reshape(-1, x.shape[-1])
        if out is None:
            out = np.empty(x.shape[:-1] + (self.weight_t.shape[1],), x.dtype)
        np.matmul(rows, self.weight_t, out=out.reshape(rows.shape[0], self.weight_t.shape[1]))
        if self.bias is not None:
            out += self.bias
        return out


def _linear_step(node, linear, values):
    x = _array(values, node["inputs"][0])
    if x.ndim == 0 or x.dtype != linear.weight.data.dtype or (linear.bias is not None and linear.bias.data.dtype != x.dtype):
        return None
    return Call("Gemm", [node["name"]], LinearKernel(linear), [node["inputs"][0]], node["outputs"], writes_out=True)


class PatchConvTransposeKernel:
    """A transposed convolution whose kernel equals its stride (no pads, one group, no dilation) into
    `out`: one GEMM per sample and the patches written with the bias, as the interpreter computes it."""

    def __init__(self, weight, bias):
        self.weight = np.ascontiguousarray(weight)
        self.bias = None if bias is None else np.ascontiguousarray(bias)

    def __call__(self, x, out=None):
        n, _, h, w = x.shape
        kh, kw = self.weight.shape[2:]
        shape = (n, self.weight.shape[1], h * kh, w * kw)
        return conv_kernels.patch_conv2d_backward_input(np.ascontiguousarray(x), self.weight, shape, self.bias, out)


def conv_transpose_step(node, values, constants):
    """The patch kernel's `Call` for a ConvTranspose node with constant weight and bias (see
    `_patch_transpose_call`), or None."""
    from .ops.nn import transpose_window
    x = _array(values, node["inputs"][0])
    inputs = node["inputs"] + [""] * (3 - len(node["inputs"]))
    weight, bias = constants.get(inputs[1]), constants.get(inputs[2]) if inputs[2] else None
    if x is None or x.ndim != 4 or weight is None or weight.ndim != 4 or (inputs[2] and bias is None):
        return None
    attrs = node.get("attrs", {})
    kernel = list(weight.shape[2:])
    strides, dilations = list(attrs.get("strides") or [1, 1]), list(attrs.get("dilations") or [1, 1])
    begin, _ = transpose_window(x.shape[2:], kernel, strides, dilations, attrs.get("pads"),
                                attrs.get("auto_pad", "NOTSET"), attrs.get("output_padding"), attrs.get("output_shape"))
    return _patch_transpose_call(node, values, weight, bias, strides, dilations, attrs.get("group", 1), begin)


def _patch_transpose_call(node, values, weight, bias, strides, dilations, groups, begin):
    """The `Call` of a 2-D transposed convolution whose windows tile its output (kernel == stride,
    dilation 1, one group, the output the tiled size from the origin), or None."""
    x, out = _array(values, node["inputs"][0]), _array(values, node["outputs"][0])
    if x is None or out is None or x.ndim != 4 or x.dtype.kind != "f" or weight.dtype != x.dtype \
            or (bias is not None and bias.dtype != x.dtype):
        return None
    kernel = tuple(weight.shape[2:])
    if groups != 1 or tuple(strides) != kernel or tuple(dilations) != (1, 1) or tuple(begin) != (0, 0) \
            or out.shape != (x.shape[0], weight.shape[1], x.shape[2] * kernel[0], x.shape[3] * kernel[1]):
        return None
    return Call("ConvTranspose", [node["name"]], PatchConvTransposeKernel(weight, bias), [node["inputs"][0]],
                node["outputs"], writes_out=True)


class RepeatKernel:
    """out[..., i, j] = x[..., i // fh, j // fw] into `out`: nearest upsampling by integer factors."""

    def __init__(self, factors):
        self.fh, self.fw = factors

    def __call__(self, x, out=None):
        from ..kernels.fused_elementwise import repeat_upsample
        return repeat_upsample(x, self.fh, self.fw, out)


class GatherKernel:
    """out.flat[k] = x.flat[index.flat[k]] into `out`: any nearest resize, its indices found when compiling."""

    def __init__(self, index):
        self.shape, self.flat_index = index.shape, np.ascontiguousarray(index.reshape(-1))

    def __call__(self, x, out=None):
        if out is None:
            out = np.empty(self.shape, x.dtype)
        np.take(x.reshape(-1), self.flat_index, out=out.reshape(-1))
        return out


def nearest_resize_step(node, values, constants):
    """The copy a nearest Resize / Upsample makes (module docstring), with every input but x constant;
    None for another mode."""
    from ..kernels.fused_elementwise import repeat_upsample_reference
    from .steps import InterpretedOp
    x, out = _array(values, node["inputs"][0]), _array(values, node["outputs"][0])
    if x is None or out is None or x.dtype != out.dtype or x.size == 0 or x.size >= 2**53:
        return None
    attrs = node.get("attrs", {})
    if attrs.get("mode", "nearest") != "nearest" or attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        return None                       # (crop-and-resize writes extrapolation_value, which is no index)
    rest = node["inputs"][1:]
    if any(v and v not in constants for v in rest):
        return None
    probe = np.arange(x.size, dtype=np.float64).reshape(x.shape)
    index = InterpretedOp(node, 1, False)(probe, *[constants[v] if v else None for v in rest])
    if not isinstance(index, np.ndarray) or index.shape != out.shape or index.size == 0 \
            or index.min() < 0 or index.max() >= x.size or not np.array_equal(index, np.floor(index)):
        return None
    index = index.astype(np.int64)
    if out.ndim >= 2 and out.shape[:-2] == x.shape[:-2] and out.shape[-2] % x.shape[-2] == 0 \
            and out.shape[-1] % x.shape[-1] == 0:
        factors = (out.shape[-2] // x.shape[-2], out.shape[-1] // x.shape[-1])
        if np.array_equal(index, repeat_upsample_reference(probe.astype(np.int64), *factors)):
            return Call("Resize", [node["name"]], RepeatKernel(factors), [node["inputs"][0]], node["outputs"],
                        writes_out=True)
    return Call("Resize", [node["name"]], GatherKernel(index), [node["inputs"][0]], node["outputs"], writes_out=True)


def _one_float_input(ins):
    """One float input of rank 3 or more (a pooling's)."""
    return len(ins) == 1 and ins[0].dtype.kind == "f" and ins[0].ndim >= 3


def global_average_pool(x, out=None):
    """The mean over every axis after the first two, summed in float64 (as the interpreter's operator),
    rounded into `out`."""
    mean = x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float64)
    if out is None:
        return mean.astype(x.dtype)
    out[...] = mean
    return out


class Concatenate:
    """np.concatenate(xs, axis) into `out`."""

    def __init__(self, axis):
        self.axis = axis

    def __call__(self, *xs, out=None):
        return np.concatenate(xs, axis=self.axis, out=out)


class BatchNormKernel:
    """An eval BatchNorm2d into `out`: the one-pass kernel with the operands the layer computes."""

    def __init__(self, bn, dtype):
        from ..ops.norm import eval_affine
        self.arrays = eval_affine(bn.running_mean.data, bn.running_var.data,
                                  None if bn.weight is None else bn.weight.data,
                                  None if bn.bias is None else bn.bias.data, bn.eps, dtype)

    def __call__(self, x, out=None):
        from ..kernels.norm import batch_norm_inference
        return batch_norm_inference(np.ascontiguousarray(x), *self.arrays, relu=False, out=out)


def _batch_norm_step(node, bn, values):
    """The `Call` of an eval BatchNorm2d that runs the one-pass kernel in the interpreter too (float input
    and statistics of its dtype, running statistics present), or None."""
    x = _array(values, node["inputs"][0])
    if x is None or x.ndim != 4 or bn.running_mean is None or bn.running_var is None \
            or batch_norm_affine(bn, x.dtype) is None or bn.running_mean.data.dtype != x.dtype:
        return None
    return Call("BatchNormalization", [node["name"]], BatchNormKernel(bn, x.dtype), [node["inputs"][0]],
                node["outputs"], writes_out=True)


class PReluKernel:
    """x where x >= 0, else x * slope[c], into `out` (N, C, ...): the kernel of `fused_elementwise.prelu`."""

    def __init__(self, slope):
        self.slope = np.ascontiguousarray(slope)

    def __call__(self, x, out=None):
        from ..kernels.fused_elementwise import prelu
        return prelu(x, self.slope, out)


def prelu_step(node, values, constants):
    """The `Call` of a PRelu whose slope is a constant of x's dtype with one value per channel (axis 1) or
    one in all, or None."""
    x, out = _array(values, node["inputs"][0]), _array(values, node["outputs"][0])
    slope = constants.get(node["inputs"][1])
    if x is None or out is None or slope is None or x.dtype.kind != "f" or slope.dtype != x.dtype or x.ndim < 2 \
            or out.shape != x.shape:
        return None
    if slope.size == 1:
        per_channel = np.full(x.shape[1], slope.reshape(-1)[0], x.dtype)
    elif slope.ndim >= x.ndim - 1 and slope.size == x.shape[1] and slope.shape[-(x.ndim - 1)] == x.shape[1]:
        per_channel = slope.reshape(-1)
    else:
        return None
    return Call("PRelu", [node["name"]], PReluKernel(per_channel), [node["inputs"][0]], node["outputs"],
                writes_out=True)


class ConstantPad:
    """x inside a border of `value` into `out` (of `shape`; new when None): filled, then x copied to its place."""

    def __init__(self, inside, value, shape):
        self.inside, self.value, self.shape = inside, value, shape

    def __call__(self, x, out=None):
        if out is None:
            out = np.empty(self.shape, x.dtype)
        out.fill(self.value)
        out[self.inside] = x
        return out


def pad_step(node, values, constants):
    """The `Call` of a constant-mode Pad with non-negative constant pads over every axis, or None."""
    x, out = _array(values, node["inputs"][0]), _array(values, node["outputs"][0])
    attrs = node.get("attrs", {})
    if x is None or out is None or attrs.get("mode", "constant") != "constant" or out.dtype != x.dtype:
        return None
    if node["version"] < 11:
        pads, value = attrs.get("pads"), attrs.get("value", 0.0)
    else:
        inputs = node["inputs"] + ["", "", ""]
        if inputs[3] or inputs[1] not in constants or (inputs[2] and inputs[2] not in constants):
            return None
        pads = constants[inputs[1]].astype(np.int64).tolist()
        value = constants[inputs[2]].reshape(-1)[0] if inputs[2] and constants[inputs[2]].size else 0
    if pads is None or len(pads) != 2 * x.ndim or min(pads) < 0:
        return None
    inside = tuple(slice(b, b + size) for b, size in zip(pads[:x.ndim], x.shape))
    return Call("Pad", [node["name"]], ConstantPad(inside, x.dtype.type(value), out.shape), [node["inputs"][0]], node["outputs"],
                writes_out=True)
