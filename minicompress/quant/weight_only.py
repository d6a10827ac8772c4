"""Weight-only int4 quantization: `Int4Linear`, a Linear whose weight is stored as packed int4 groups
(onnxruntime's MatMulNBits layout, `quant.int4`) and multiplied with float32 activations by a kernel that
unpacks the nibbles inside the GEMM (`kernels.int4`); and `quantize_int4_weights`, which swaps every Linear
of a model for one, rounding each weight to nearest or with GPTQ (`quant.gptq`).

    model = quantize_int4_weights(model, group_size=64, method="gptq", calibrate=lambda m: m.encode(texts))

y = x dequantize(W)^T + b, where dequantize(W) is `quant.int4.dequantize_int4`: the same float32 product
torch computes from the dequantized weight, up to float32 summation order. The arrays are buffers (saved
by `minicompress.io` as they are, counted by `quant.model_size_bytes`): `weight_packed` (N, n_groups,
group_size / 2) uint8, `weight_scales` (N, n_groups) float32, `weight_zero_points` (N, ceil(n_groups / 2))
uint8 (absent for symmetric weights: zero point 8), and the float32 `bias`.

The per-layer precisions of `quant.mixed_precision` need the same for convolutions and at 8 bits:

    Int4Conv2d             a Conv2d weight (O, C / groups, kh, kw) seen as the (O, C / groups * kh * kw)
                           matrix a convolution multiplies by (im2col's), in int4 groups along that input
                           dimension exactly as Int4Linear's; dequantized, then a float convolution
    Int8WeightOnlyLinear,  the weight per output channel symmetric int8, with torch's default per-channel
    Int8WeightOnlyConv2d   weight observer's qparams (`quant.qconfig.default_per_channel_weight_observer`:
                           s = max|w| / 127.5 over the channel, zero point 0, levels -128..127); stored as
                           int8 levels `weight_int8` and float32 `weight_scales` (O,), dequantized as
                           torch's `.dequantize()` does, then a float linear / convolution

Activations stay float32 in all of them: only the bytes of the weights change.
"""
import copy
import warnings

import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..kernels.int4 import int4_linear
from ..kernels.threads import threads_for
from ..nn import layers as nn_layers
from ..nn.module import Module
from ..tensor import Tensor
from . import affine
from .gptq import gptq_quantize
from .gptq import hessian as gptq_hessian
from .int4 import check_group_size, check_packed, dequantize_int4, n_groups, quantize_int4, unpack_zero_points
from .qconfig import default_per_channel_weight_observer

METHODS = ("rtn", "gptq")


class Int4Linear(Module):
    """y = x W^T + b with W (out_features, in_features) in int4 groups of `group_size` along in_features,
    symmetric (zero point 8) or asymmetric (a zero point per group). Build with `from_float`."""

    def __init__(self, in_features, out_features, bias=True, group_size=64, symmetric=True):
        super().__init__()
        self.in_features = nn_layers._validate_positive_int(in_features, "in_features")
        self.out_features = nn_layers._validate_positive_int(out_features, "out_features")
        self.group_size = check_group_size(group_size)
        self.symmetric = bool(symmetric)
        groups = n_groups(in_features, group_size)
        self.register_buffer("weight_packed", Tensor(np.full((out_features, groups, group_size // 2), 0x88, np.uint8)))
        self.register_buffer("weight_scales", Tensor(np.zeros((out_features, groups), np.float32)))
        self.register_buffer("weight_zero_points", None if symmetric else
                             Tensor(np.full((out_features, (groups + 1) // 2), 0x88, np.uint8)))
        self.register_buffer("bias", Tensor(np.zeros(out_features, np.float32)) if bias else None)

    @classmethod
    def from_float(cls, linear, group_size=64, symmetric=True, method="rtn", inputs=None, hessian=None, *,
                   mse=False, **gptq_options):
        """An Int4Linear computing what float `linear` does, its weight rounded by `method`: "rtn" (round
        to nearest) or "gptq" with the layer's calibration `inputs` (*, in_features) or their `hessian`
        (`quant.gptq.hessian`, (in_features, in_features)). `mse` clips each group's range where its
        rounding error is least (either method); `gptq_options` (act_order, static_groups, damp,
        block_size) go to `quant.gptq.gptq_quantize`."""
        if not isinstance(linear, nn_layers.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        weight = np.asarray(linear.weight.data, np.float32)
        if method == "gptq":
            if (inputs is None) == (hessian is None):
                raise ValueError("method='gptq' needs exactly one of inputs (calibration rows) and hessian")
            arrays = gptq_quantize(weight, gptq_hessian(inputs) if hessian is None else hessian, group_size, symmetric,
                                   mse=mse, **gptq_options)
        else:
            arrays = quantize_int4(weight, group_size, symmetric, mse)
        bias = None if linear.bias is None else np.asarray(linear.bias.data, np.float32)
        return cls.from_packed(*arrays, linear.in_features, group_size, bias)

    @classmethod
    def from_packed(cls, packed, scales, zero_points, in_features, group_size, bias=None):
        """An Int4Linear holding MatMulNBits' arrays as they are (checked: `quant.int4.check_packed`)."""
        out_features = np.shape(packed)[0]
        module = cls(in_features, out_features, bias is not None, group_size, zero_points is None)
        check_packed(packed, scales, zero_points, in_features, out_features, module.group_size, "Int4Linear")
        module.weight_packed.data = np.ascontiguousarray(packed)
        module.weight_scales.data = np.ascontiguousarray(scales)
        if zero_points is not None:
            module.weight_zero_points.data = np.ascontiguousarray(zero_points)
        if bias is not None:
            bias = np.asarray(bias, np.float32)
            if bias.shape != (out_features,):
                raise ValueError(f"bias must have shape ({out_features},), got {bias.shape}")
            module.bias.data = bias.copy()
        return module

    def zero_points(self):
        """Per-group zero points uint8 (N, n_groups) (8 everywhere for symmetric weights)."""
        packed = None if self.weight_zero_points is None else self.weight_zero_points.data
        return unpack_zero_points(packed, self.weight_scales.shape[1], self.out_features)

    def dequantized_weight(self):
        """float32 (out_features, in_features): (q - z) * s, the weight the layer multiplies by."""
        packed = None if self.weight_zero_points is None else self.weight_zero_points.data
        return dequantize_int4(self.weight_packed.data, self.weight_scales.data, packed, self.in_features)

    def forward(self, x):
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        if data.dtype != np.float32 or data.ndim == 0 or data.shape[-1] != self.in_features:
            raise ValueError(f"Int4Linear: input must be float32 (*, {self.in_features}), got {data.dtype} "
                             f"of shape {data.shape}")
        rows = np.ascontiguousarray(data.reshape(-1, self.in_features))
        bias = self.bias.data if self.bias is not None else np.zeros(0, np.float32)
        with threads_for(rows.shape[0] * self.in_features * self.out_features):
            out = int4_linear(rows, self.weight_packed.data, self.weight_scales.data, self.zero_points(), bias)
        return Tensor(out.reshape(*data.shape[:-1], self.out_features))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"group_size={self.group_size}, symmetric={self.symmetric}")


CONV_ATTRIBUTES = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")


def _check_float_layer(layer, kinds, name):
    if type(layer) not in kinds:
        raise TypeError(f"{name} must be one of {[k.__name__ for k in kinds]}, got {type(layer).__name__}")
    if layer.weight is None or not np.isfinite(layer.weight.data).all():
        raise ValueError(f"{name}: the weight must be finite: NaN or infinite values have no integer level")


def _float_bias(layer):
    return None if layer.bias is None else Tensor(np.array(layer.bias.data, np.float32))


class Int4Conv2d(Module):
    """A float Conv2d whose weight is stored in int4 groups along its input dimension C / groups * kh * kw
    (the module docstring). Build with `from_float`; `dequantized_weight()` is the (O, C / groups, kh, kw)
    float32 weight the convolution runs with."""

    def __init__(self, conv, group_size=64, symmetric=True):
        """Empty (all-zero) int4 weights in the shape of float Conv2d `conv`."""
        super().__init__()
        for key in CONV_ATTRIBUTES:
            setattr(self, key, getattr(conv, key))
        self.group_size = check_group_size(group_size)
        self.symmetric = bool(symmetric)
        self.in_features = int(np.prod(conv.weight.shape[1:]))
        groups = n_groups(self.in_features, group_size)
        self.register_buffer("weight_packed", Tensor(np.full((self.out_channels, groups, group_size // 2), 0x88,
                                                             np.uint8)))
        self.register_buffer("weight_scales", Tensor(np.zeros((self.out_channels, groups), np.float32)))
        self.register_buffer("weight_zero_points", None if symmetric else
                             Tensor(np.full((self.out_channels, (groups + 1) // 2), 0x88, np.uint8)))
        self.register_buffer("bias", _float_bias(conv))

    @classmethod
    def from_float(cls, conv, group_size=64, symmetric=True):
        """An Int4Conv2d computing what float `conv` does, its weight rounded to nearest (`quantize_int4`
        of the weight reshaped to (O, C / groups * kh * kw))."""
        _check_float_layer(conv, (nn_layers.Conv2d,), "conv")
        module = cls(conv, group_size, symmetric)
        weight = np.asarray(conv.weight.data, np.float32).reshape(conv.out_channels, -1)
        packed, scales, zero_points = quantize_int4(weight, module.group_size, symmetric)
        module.weight_packed.data, module.weight_scales.data = packed, scales
        if zero_points is not None:
            module.weight_zero_points.data = zero_points
        return module

    def dequantized_weight(self):
        """float32 (O, C / groups, kh, kw): (q - z) * s, reshaped back to the convolution's weight."""
        packed = None if self.weight_zero_points is None else self.weight_zero_points.data
        w = dequantize_int4(self.weight_packed.data, self.weight_scales.data, packed, self.in_features)
        return w.reshape((self.out_channels, self.in_channels // self.groups) + tuple(self.kernel_size))

    def forward(self, x):
        return F.conv2d(x, Tensor(self.dequantized_weight()), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, group_size={self.group_size}, symmetric={self.symmetric}")


def _int8_per_channel(weight):
    """(int8 levels, float32 scales (O,)) of a float32 weight with output channels along axis 0:
    torch's default per-channel weight observer's qparams, then `quantize_per_channel` (zero points 0)."""
    observer = default_per_channel_weight_observer()
    observer(Tensor(weight))
    scales, zero_points = observer.calculate_qparams()
    levels = affine.quantize_per_channel(weight, scales, zero_points, 0, observer.dtype)
    return levels.astype(np.int8), np.asarray(scales, np.float32)


class _Int8WeightOnly(Module):
    """The int8 weight of an Int8WeightOnlyLinear / Int8WeightOnlyConv2d and its dequantization."""

    def _store(self, layer):
        levels, scales = _int8_per_channel(np.asarray(layer.weight.data, np.float32))
        self.register_buffer("weight_int8", Tensor(levels))
        self.register_buffer("weight_scales", Tensor(scales))
        self.register_buffer("bias", _float_bias(layer))

    def dequantized_weight(self):
        """float32 scales[o] * levels[o, ...], as torch's `.dequantize()` of the per-channel weight."""
        levels = self.weight_int8.data
        return affine.dequantize_per_channel(levels, self.weight_scales.data, np.zeros(levels.shape[0], np.int64), 0)


class Int8WeightOnlyLinear(_Int8WeightOnly):
    """y = x dequantize(W)^T + b with W per output channel symmetric int8 (the module docstring)."""

    def __init__(self, linear):
        super().__init__()
        _check_float_layer(linear, (nn_layers.Linear,), "linear")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._store(linear)

    @classmethod
    def from_float(cls, linear):
        return cls(linear)

    def forward(self, x):
        return F.linear(x, Tensor(self.dequantized_weight()), self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8WeightOnlyConv2d(_Int8WeightOnly):
    """A float convolution with dequantize(W), W per output channel symmetric int8 (the module docstring)."""

    def __init__(self, conv):
        super().__init__()
        _check_float_layer(conv, (nn_layers.Conv2d,), "conv")
        for key in CONV_ATTRIBUTES:
            setattr(self, key, getattr(conv, key))
        self._store(conv)

    @classmethod
    def from_float(cls, conv):
        return cls(conv)

    def forward(self, x):
        return F.conv2d(x, Tensor(self.dequantized_weight()), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}")


def _linears(model):
    return [(name, m) for name, m in model.named_modules() if type(m) is nn_layers.Linear]


def _replace(model, name, new):
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def quantize_int4_weights(model, group_size=64, symmetric=False, method="rtn", calibrate=None, inplace=False, *,
                          mse=True, act_order=True, static_groups=True, damp=0.1, sequential=True):
    """`model` with every nn.Linear replaced by an Int4Linear (weights rounded by `method`; `mse`,
    `act_order`, `static_groups`, `damp` as `Int4Linear.from_float` and `quant.gptq.gptq_quantize` take them).

    The defaults are what measured best on all-MiniLM-L6-v2 (benchmarks/RESULTS.md, bench_int4.py): a zero
    point per group (onnxruntime's `MatMulNBitsQuantizer` default too), each group's range clipped where its
    rounding error is least, and for GPTQ act_order with static groups and damp 0.1. The layer-level
    functions keep the paper's reference defaults (no act_order, damp 0.01) and onnxruntime's rounding.

    method="gptq" needs `calibrate`, a function that runs calibration data through the model it is given
    (e.g. `lambda m: m.encode(sentences)`). With `sequential` (the default) the layers are quantized one at
    a time in the order the model lists them; each one's Hessian comes from its inputs in the model where
    the layers before it are already int4 (as the reference quantizes a transformer block after the ones
    before it, its `true_sequential` taken to single layers), so each layer's rounding also absorbs what the
    earlier layers' rounding changed: one calibration pass per layer. Without it, every Hessian comes from
    one pass of the float model. A Linear that calibration never reaches (a BERT pooler under mean
    pooling) has no Hessian: it is rounded to nearest, with a warning naming it.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_group_size(group_size)
    if method == "gptq" and not callable(calibrate):
        raise ValueError("method='gptq' needs calibrate, a function running calibration data through the model")
    if act_order and not static_groups:
        raise ValueError("act_order=True needs static_groups=True (groups of the permuted order need g_idx)")
    gptq_options = {"act_order": act_order, "static_groups": static_groups, "damp": damp} if method == "gptq" else {}
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    linears = _linears(model)
    hessians = [None] * len(linears)
    if method == "gptq" and not sequential:
        hessians = _accumulate_hessians(model, [linear for _, linear in linears], calibrate)
    for index, (name, linear) in enumerate(linears):
        H = hessians[index]
        if method == "gptq" and sequential:
            H = _accumulate_hessians(model, [linear], calibrate)[0]
        if method == "gptq" and H is None:
            warnings.warn(f"quantize_int4_weights: layer {name!r} received no inputs while calibrate ran; "
                          f"it is rounded to nearest")
        _replace(model, name, Int4Linear.from_float(linear, group_size, symmetric, "rtn" if H is None else method,
                                                    hessian=H, mse=mse, **(gptq_options if H is not None else {})))
    return model


def _accumulate_hessians(model, linears, calibrate):
    """[H = 2 / n X^T X] of the rows each of `linears` receives while `calibrate(model)` runs (float64,
    summed as it goes, so no inputs are kept); None for a layer that received none."""
    states = [{"xtx": np.zeros((m.in_features, m.in_features)), "rows": 0} for m in linears]

    def recorder(state, k):
        def record(module, args, output):
            x = np.asarray(args[0].data if isinstance(args[0], Tensor) else args[0], np.float64).reshape(-1, k)
            state["xtx"] += x.T @ x
            state["rows"] += x.shape[0]
        return record

    handles = [m.register_forward_hook(recorder(state, m.in_features)) for m, state in zip(linears, states)]
    try:
        with no_grad():
            calibrate(model)
    finally:
        for handle in handles:
            handle.remove()
    return [None if state["rows"] == 0 else 2.0 / state["rows"] * state["xtx"] for state in states]
