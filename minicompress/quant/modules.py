"""Quantized modules: what `convert` puts in place of float layers, as `torch.ao.nn.quantized`.

Each takes and returns QTensors and runs on integers (the kernels in `minicompress.kernels`):
activations are quint8 per tensor, weights qint8 (per output channel by default), the bias is
quantized to int32 in the accumulator's scale x_scale * w_scale[c] at call time (the input's scale is
the previous layer's output scale, fixed after convert), and the int32 accumulator is requantized to
the layer's own output (scale, zero_point), which its observer chose during calibration.

    Quantize                        float Tensor -> quint8 QTensor (replaces QuantStub)
    DeQuantize                      QTensor -> float Tensor (replaces DeQuantStub)
    Linear, LinearReLU              kernels.qgemm.qgemm_requant (the weight packed once, see Linear)
    Conv2d, ConvReLU2d              kernels.qconv.qconv2d_nhwc (the weight prepared once, see _ConvPlan)
    QuantizedAdd                    kernels.qnhwc.add_flat on two inputs of one layout, else
                                    kernels.qelementwise.quantized_add (replaces nn.Add)
    ReLU, ReLU6, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout
                                    keep the input's (scale, zero_point) and work on the levels directly

4-D activations travel channels-last between these modules (kernels/qnhwc.py): Quantize writes
(N, H, W, C) bytes, every Conv2d reads and writes them, and the add, ReLU and global average pool keep
them; the QTensor's shape stays torch's (N, C, H, W), its levels a transposed view, as torch's
`channels_last`. What depends only on the layer (checked geometry and qparams, the prepared weight) or
on its one input scale (int32 bias, multipliers) is computed on the first call and kept on the module,
never saved (io.TRANSIENT_ATTRIBUTES).

`from_float(mod)` builds each from a prepared (observed) float or QAT module: the output qparams from
`mod.activation_post_process`, the weight qparams from a weight observer run over the (BN-folded) weight.
"""
import numpy as np

from .. import functional as F
from ..kernels.qconv import check_conv_geometry, check_conv_input, prepare_qconv2d, qconv2d_nhwc
from ..kernels.qelementwise import (QUINT8_MAX, QUINT8_MIN, check_accumulator_range, check_output_range, check_scale,
                                    check_weight_qparams, check_zero_point, quantize_value, quantized_add,
                                    requantize_multiplier)
from ..kernels.qgemm import pack_weight, qgemm_requant_unchecked
from ..kernels.qlinear import quantize_bias
from ..kernels.qnhwc import add_flat, channels_last, global_avg_pool_nhwc, quantize_nhwc
from ..kernels.threads import threads_for
from ..nn.module import Module
from ..tensor import Tensor
from . import dtypes as qd
from ..nn import fused
from . import qat
from ..qtensor import QTensor, _dense, quantize_per_channel, quantize_per_tensor


def _output_qparams(mod):
    """(scale, zero_point) of the observer on `mod`'s output, as Python numbers."""
    observer = getattr(mod, "activation_post_process", None)
    if observer is None:
        raise ValueError(f"{type(mod).__name__} has no activation_post_process; run prepare() and calibrate first")
    scale, zero_point = observer.calculate_qparams()
    return float(scale[0]), int(zero_point[0])


def _expected_input_max(mod):
    """The largest activation code `mod`'s qconfig quantizes to (its output observer's quant_max: 127 for
    torch's x86 qconfig, whose reduce_range keeps activations to 7 bits; the layer's input comes from a
    layer observed the same way). It steers the GEMM route (kernels.qgemm.choose_route); a larger code at
    run time is still exact there."""
    observer = getattr(mod, "activation_post_process", None)
    return int(getattr(observer, "quant_max", QUINT8_MAX) or QUINT8_MAX)


def quantize_weight(weight, observer):
    """The qint8 QTensor of float32 `weight` with the qparams of `observer` (which has already seen it):
    per channel along the observer's ch_axis, or per tensor."""
    scale, zero_point = observer.calculate_qparams()
    if observer.dtype is not qd.qint8:
        raise ValueError(f"weights must be observed as qint8 (the integer kernels' weight type); the qconfig's "
                         f"weight observer uses {observer.dtype!r}")
    if observer.qscheme.per_channel:
        return quantize_per_channel(weight, scale.astype(np.float64), zero_point, observer.ch_axis, qd.qint8)
    return quantize_per_tensor(weight, float(scale[0]), int(zero_point[0]), qd.qint8)


def _check_input(x, name):
    if not isinstance(x, QTensor):
        raise TypeError(f"{name} expects a QTensor (quantize the input first, e.g. with Quantize); got "
                        f"{type(x).__name__}")
    if x.dtype is not qd.quint8 or x.is_per_channel():
        raise ValueError(f"{name} expects a per-tensor quint8 QTensor; got {x!r}")
    return x


def _bias_q(module, x_scale, w_scales):
    """module.bias in accumulator units (`quantize_bias`), remembered for the last input scale, weight and
    bias: a converted model sees one input scale per layer, so the bias is rounded once, not on every call.
    The memo is not saved with the model (io.TRANSIENT_ATTRIBUTES). Replace the bias or weight to change
    them; a change made in place to the same array is not seen."""
    if module.bias is None:
        return None
    memo = module.__dict__.get("_bias_q_memo")
    if memo is None or memo[0] != x_scale or memo[1] is not module.bias or memo[2] is not module._weight:
        memo = (x_scale, module.bias, module._weight, quantize_bias(module.bias, x_scale, w_scales))
        module.__dict__["_bias_q_memo"] = memo
    return memo[3]


def _weight_qparams(weight):
    if weight.is_per_channel():
        return weight.q_per_channel_scales(), weight.q_per_channel_zero_points()
    return np.array([weight.q_scale()]), np.array([weight.q_zero_point()])


class QuantizedModule(Module):
    """Base of the modules below: output `scale` and `zero_point` as plain attributes."""

    def extra_repr(self):
        return f"scale={getattr(self, 'scale', None)}, zero_point={getattr(self, 'zero_point', None)}"


class Quantize(QuantizedModule):
    """float32 Tensor -> QTensor with fixed (scale, zero_point) (torch.ao.nn.quantized.Quantize)."""

    def __init__(self, scale, zero_point, dtype=qd.quint8):
        super().__init__()
        self.scale, self.zero_point, self.dtype = float(scale), int(zero_point), qd.check_dtype(dtype)

    def forward(self, x):
        data = x.data if isinstance(x, Tensor) else x
        if (self.dtype is qd.quint8 and isinstance(data, np.ndarray) and data.ndim == 4 and data.dtype == np.float32
                and data.size):
            # An image batch goes straight to channels-last codes, the layout the integer convolutions use.
            self._check_qparams()
            with threads_for(data.size):
                levels = quantize_nhwc(data, self.scale, self.zero_point).transpose(0, 3, 1, 2)
            return QTensor(levels, qd.per_tensor_affine, self.scale, self.zero_point)
        return quantize_per_tensor(x, self.scale, self.zero_point, self.dtype)

    def _check_qparams(self):
        """The qparams, checked on the first call (and again after load or a change of them)."""
        if self.__dict__.get("_checked") != (self.scale, self.zero_point):
            check_scale("scale", self.scale)
            check_zero_point("zero_point", self.zero_point, QUINT8_MIN, QUINT8_MAX)
            self.__dict__["_checked"] = (self.scale, self.zero_point)

    @classmethod
    def from_float(cls, mod):
        scale, zero_point = _output_qparams(mod)
        return cls(scale, zero_point, mod.activation_post_process.dtype)


class DeQuantize(QuantizedModule):
    """QTensor -> float32 Tensor (torch.ao.nn.quantized.DeQuantize)."""

    def forward(self, x):
        return x.dequantize()

    @classmethod
    def from_float(cls, mod):
        return cls()

    def extra_repr(self):
        return ""


class Linear(QuantizedModule):
    """y = requantize(sum_k (x - x_zp)(W - w_zp) + bias_q) on quint8 x and qint8 W (torch.ao.nn.quantized.Linear).

    Everything about the weight is prepared once: its qparams are checked and the int8 codes packed for
    the CPU's GEMM route (`kernels.qgemm.pack_weight`) when the layer is built, or on the first call after
    `load` (model files hold the plain codes). The int32 bias and the requantization multipliers depend on
    the input's scale too, the previous layer's fixed output scale, so they are computed on the first call
    and kept while that scale stays the same. Neither is saved (io.TRANSIENT_ATTRIBUTES). Replace the
    weight or bias to change them; a change made in place to the same array is not seen.
    """

    _relu = False

    def __init__(self, weight, bias, scale, zero_point, input_code_max=QUINT8_MAX):
        super().__init__()
        if not isinstance(weight, QTensor) or weight.dtype is not qd.qint8 or weight.ndim != 2:
            raise TypeError(f"weight must be a 2-D qint8 QTensor, got {weight!r}")
        self._weight, self.bias = weight, None if bias is None else np.asarray(bias, np.float32)
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.input_code_max = check_zero_point("input_code_max", input_code_max, QUINT8_MIN, QUINT8_MAX)
        self.out_features, self.in_features = weight.shape
        self._packed()

    def weight(self):
        return self._weight

    def _packed(self):
        """(w_scales float32, PackedWeight) for the current weight, checked and packed once."""
        memo = self.__dict__.get("_packed_weight")
        if memo is None or memo[0] is not self._weight:
            check_scale("scale", self.scale)
            check_zero_point("zero_point", self.zero_point, 0, 255)
            w_scales, w_zps = check_weight_qparams(*_weight_qparams(self._weight), self.out_features)
            memo = (self._weight, w_scales, pack_weight(self._weight.int_repr(), w_zps,
                                                        x_max=getattr(self, "input_code_max", QUINT8_MAX)))
            self.__dict__["_packed_weight"] = memo
        return memo[1], memo[2]

    def _plan(self, x_scale):
        """(packed, bias_q, multiplier, qmin, qmax) for inputs of scale `x_scale`, computed once per scale."""
        plan = self.__dict__.get("_requant_plan")
        if plan is None or plan[0] != x_scale or plan[1] is not self._weight or plan[2] is not self.bias:
            w_scales, packed = self._packed()
            bias_q = None if self.bias is None else quantize_bias(self.bias, x_scale, w_scales)
            check_accumulator_range(self.in_features, bias_q)
            qmin, qmax = check_output_range(self.zero_point, self._relu)
            plan = (x_scale, self._weight, self.bias,
                    (packed, bias_q, requantize_multiplier(x_scale, w_scales, self.scale), qmin, qmax))
            self.__dict__["_requant_plan"] = plan
        return plan[3]

    def forward(self, x):
        x = _check_input(x, type(self).__name__)
        levels = x._levels
        if levels.ndim < 1 or levels.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__} expects input of shape (*, {self.in_features}), got {levels.shape}")
        packed, bias_q, multiplier, qmin, qmax = self._plan(x._scale)
        out = qgemm_requant_unchecked(levels.reshape(-1, self.in_features), x._zero_point, packed, bias_q,
                                      multiplier, self.zero_point, qmin, qmax)
        return QTensor(out.reshape(*levels.shape[:-1], self.out_features), qd.per_tensor_affine, self.scale,
                       self.zero_point)

    @classmethod
    def from_float(cls, mod):
        scale, zero_point = _output_qparams(mod)
        if isinstance(mod, qat.Linear):
            weight_observer, linear = mod.weight_fake_quant, mod
        else:
            weight_observer = mod.qconfig.weight()
            linear = mod[0] if isinstance(mod, fused.LinearReLU) else mod
        weight_observer(linear.weight.detach())
        bias = None if linear.bias is None else linear.bias.data
        return cls(quantize_weight(linear.weight.data, weight_observer), bias, scale, zero_point,
                   _expected_input_max(mod))

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, " + super().extra_repr()


class LinearReLU(Linear):
    """Linear with the ReLU folded into the requantization clamp (torch.ao.nn.intrinsic.quantized.LinearReLU)."""

    _relu = True


class Conv2d(QuantizedModule):
    """Integer 2-D convolution, depthwise when groups == in_channels (torch.ao.nn.quantized.Conv2d)."""

    _relu = False

    def __init__(self, weight, bias, scale, zero_point, stride=1, padding=0, dilation=1, groups=1,
                 input_code_max=QUINT8_MAX):
        super().__init__()
        if not isinstance(weight, QTensor) or weight.dtype is not qd.qint8 or weight.ndim != 4:
            raise TypeError(f"weight must be a 4-D qint8 QTensor, got {weight!r}")
        self._weight, self.bias = weight, None if bias is None else np.asarray(bias, np.float32)
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.input_code_max = check_zero_point("input_code_max", input_code_max, QUINT8_MIN, QUINT8_MAX)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.out_channels = weight.shape[0]
        self.in_channels = weight.shape[1] * groups
        self.kernel_size = weight.shape[2:]

    def weight(self):
        return self._weight

    def forward(self, x):
        x = _check_input(x, type(self).__name__)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            got = f"has {x.shape[1]} channels" if x.ndim == 4 else f"has shape {tuple(x.shape)}, not (N, C, H, W)"
            raise ValueError(f"the input {got}; the quantized convolution expects {self.in_channels} "
                             f"(weight {tuple(self._weight.shape)}, groups={self.groups})")
        plan = _ConvPlan.of(self, x.q_scale())
        levels = x.int_repr()
        out_h, out_w = check_conv_input(levels.shape, plan.conv)
        if levels.shape[0] == 0:
            out = np.empty((0, out_h, out_w, self.out_channels), dtype=np.uint8)
        else:
            out = qconv2d_nhwc(channels_last(levels), x.q_zero_point(), plan.conv, plan.bias_q, plan.multiplier,
                               self.zero_point, plan.qmin, plan.qmax)
        return QTensor(out.transpose(0, 3, 1, 2), qd.per_tensor_affine, self.scale, self.zero_point)

    @classmethod
    def from_float(cls, mod):
        scale, zero_point = _output_qparams(mod)
        if isinstance(mod, qat.ConvBn2d):
            weight, bias = mod.folded_weight_bias()
            weight_observer, conv = mod.weight_fake_quant, mod
        elif isinstance(mod, qat.Conv2d):
            weight_observer, conv = mod.weight_fake_quant, mod
            weight, bias = mod.weight.data, None if mod.bias is None else mod.bias.data
        else:
            weight_observer = mod.qconfig.weight()
            conv = mod[0] if isinstance(mod, fused.ConvReLU2d) else mod
            weight, bias = conv.weight.data, None if conv.bias is None else conv.bias.data
        weight_observer(Tensor(weight))
        return cls(quantize_weight(weight, weight_observer), bias, scale, zero_point, conv.stride, conv.padding,
                   conv.dilation, conv.groups, _expected_input_max(mod))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, " + super().extra_repr())


class _ConvPlan:
    """What a quantized Conv2d computes once instead of on every call, kept on the module as `_conv_plan`
    (not saved with the model: io.TRANSIENT_ATTRIBUTES; rebuilt on the first call after load): the
    checked geometry and weight qparams and the weight prepared for its kernel route (`prepare_qconv2d`),
    then, for the input scale (one per layer in a converted model), the int32 bias, the requantization
    multipliers and the clamp. Replacing the weight, the bias or the output qparams, or feeding another
    input scale, rebuilds what depends on it; a change made in place to the same array is not seen."""

    __slots__ = ("weight", "conv", "w_scales", "key", "bias_q", "multiplier", "qmin", "qmax")

    def __init__(self, module):
        self.weight, self.key = module._weight, None
        self.w_scales, w_zps = check_weight_qparams(*_weight_qparams(module._weight), module.out_channels)
        geometry = check_conv_geometry(module._weight.shape, module.stride, module.padding, module.dilation,
                                       module.groups)
        self.conv = prepare_qconv2d(module._weight.int_repr(), w_zps, *geometry,
                                    x_max=getattr(module, "input_code_max", QUINT8_MAX))

    @staticmethod
    def of(module, x_scale):
        plan = module.__dict__.get("_conv_plan")
        if plan is None or plan.weight is not module._weight:
            plan = module.__dict__["_conv_plan"] = _ConvPlan(module)
        key = plan.key
        if (key is None or key[0] != x_scale or key[1] is not module.bias
                or key[2:] != (module.scale, module.zero_point, module._relu)):
            plan._requantization(module, x_scale)
        return plan

    def _requantization(self, module, x_scale):
        out_scale = check_scale("scale", module.scale)
        out_zp = check_zero_point("zero_point", module.zero_point, QUINT8_MIN, QUINT8_MAX)
        self.bias_q = (np.zeros(module.out_channels, np.int32) if module.bias is None
                       else quantize_bias(module.bias, x_scale, self.w_scales))
        check_accumulator_range(self.conv.depth, self.bias_q)
        self.multiplier = requantize_multiplier(x_scale, self.w_scales, out_scale)
        self.qmin, self.qmax = (out_zp if module._relu else QUINT8_MIN), QUINT8_MAX
        self.key = (x_scale, module.bias, module.scale, module.zero_point, module._relu)


class ConvReLU2d(Conv2d):
    """Conv2d with the ReLU folded into the requantization clamp (torch.ao.nn.intrinsic.quantized.ConvReLU2d)."""

    _relu = True


class QuantizedAdd(QuantizedModule):
    """a + b on QTensors, requantized to the add's observed (scale, zero_point); replaces `nn.Add`
    (torch's `QFunctional.add`)."""

    def __init__(self, scale, zero_point):
        super().__init__()
        self.scale, self.zero_point = float(scale), int(zero_point)

    def forward(self, a, b):
        a, b = _check_input(a, "QuantizedAdd"), _check_input(b, "QuantizedAdd")
        la, lb = a.int_repr(), b.int_repr()
        if la.shape == lb.shape and la.strides == lb.strides and _dense(la):
            # Same shape and layout (a residual connection): add the bytes in memory order, no copies.
            if self.__dict__.get("_checked") != (self.scale, self.zero_point):
                check_scale("scale", self.scale)
                check_zero_point("zero_point", self.zero_point, QUINT8_MIN, QUINT8_MAX)
                self.__dict__["_checked"] = (self.scale, self.zero_point)
            order = (0, 2, 3, 1) if not la.flags.c_contiguous else tuple(range(la.ndim))
            memory_a, memory_b = la.transpose(order), lb.transpose(order)
            with threads_for(la.size):
                flat = add_flat(memory_a.reshape(-1), np.float32(a.q_scale()), a.q_zero_point(), memory_b.reshape(-1),
                            np.float32(b.q_scale()), b.q_zero_point(), np.float32(1.0 / self.scale),
                            self.zero_point, QUINT8_MIN, QUINT8_MAX)
            levels = flat.reshape(memory_a.shape).transpose(np.argsort(order))
        else:
            levels = quantized_add(la, a.q_scale(), a.q_zero_point(), lb, b.q_scale(), b.q_zero_point(), self.scale,
                                   self.zero_point)
        return QTensor(levels, qd.per_tensor_affine, self.scale, self.zero_point)

    @classmethod
    def from_float(cls, mod):
        return cls(*_output_qparams(mod))


class _SameQParams(Module):
    """A layer whose output keeps the input's (scale, zero_point): it maps levels to levels."""

    def forward(self, x):
        x = _check_input(x, type(self).__name__)
        return QTensor(self._levels(x), qd.per_tensor_affine, x.q_scale(), x.q_zero_point())

    @classmethod
    def from_float(cls, mod):
        return cls(mod)


class ReLU(_SameQParams):
    """max(q, zero_point): the quantized max(x, 0)."""

    def __init__(self, mod=None):
        super().__init__()

    def _levels(self, x):
        return np.maximum(x.int_repr(), np.uint8(x.q_zero_point()))          # keeps the input's memory layout


class ReLU6(_SameQParams):
    """clamp(q, zero_point, q(6.0)) (torch.ao.nn.quantized.ReLU6)."""

    def __init__(self, mod=None):
        super().__init__()

    def _levels(self, x):
        six = quantize_value(6.0, x.q_scale(), x.q_zero_point())
        return np.clip(x.int_repr(), np.uint8(x.q_zero_point()), np.uint8(six))  # quantized_relu6, layout kept


def _pooled_levels(x, pool):
    """Run a float pooling function on the centred levels (q - zero_point) and round back:
    max pooling is exact; averages round half to even, which can differ from torch's float32
    requantization by one step at an exact tie."""
    centred = Tensor._wrap(x.int_repr().astype(np.float32, order="C") - np.float32(x.q_zero_point()))
    pooled = pool(centred).data
    return np.clip(np.rint(pooled) + x.q_zero_point(), 0, 255).astype(np.uint8)


class MaxPool2d(_SameQParams):
    def __init__(self, mod):
        super().__init__()
        self.kernel_size, self.stride, self.padding = mod.kernel_size, mod.stride, mod.padding
        self.dilation, self.ceil_mode = mod.dilation, mod.ceil_mode

    def _levels(self, x):
        return _pooled_levels(x, lambda t: F.max_pool2d(t, self.kernel_size, self.stride, self.padding,
                                                        self.dilation, self.ceil_mode))


class AvgPool2d(_SameQParams):
    def __init__(self, mod):
        super().__init__()
        self.kernel_size, self.stride, self.padding = mod.kernel_size, mod.stride, mod.padding
        self.ceil_mode, self.count_include_pad = mod.ceil_mode, mod.count_include_pad
        self.divisor_override = mod.divisor_override

    def _levels(self, x):
        return _pooled_levels(x, lambda t: F.avg_pool2d(t, self.kernel_size, self.stride, self.padding,
                                                        self.ceil_mode, self.count_include_pad,
                                                        self.divisor_override))


class AdaptiveAvgPool2d(_SameQParams):
    def __init__(self, mod):
        super().__init__()
        self.output_size = mod.output_size

    def _levels(self, x):
        levels = x.int_repr()
        if levels.ndim == 4 and self.output_size in (1, (1, 1), [1, 1]) and levels.shape[2] * levels.shape[3]:
            # Global pooling (the classifier's): one pass over channels-last bytes, the same arithmetic.
            with threads_for(levels.size):
                pooled = global_avg_pool_nhwc(channels_last(levels), x.q_zero_point())
            return pooled.reshape(*pooled.shape, 1, 1)
        return _pooled_levels(x, lambda t: F.adaptive_avg_pool2d(t, self.output_size))


class Flatten(Module):
    def __init__(self, mod):
        super().__init__()
        self.start_dim, self.end_dim = mod.start_dim, mod.end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    @classmethod
    def from_float(cls, mod):
        return cls(mod)


class Dropout(Module):
    """Identity: dropout does nothing at inference."""

    def forward(self, x):
        return x

    @classmethod
    def from_float(cls, mod):
        return cls()


class Reshape(Module):
    """A reshape of the levels to a fixed `shape` (ONNX Reshape semantics: 0 copies the input's dimension,
    -1 is inferred); the qparams stay. Made by `convert_fx` for a Reshape node with a constant shape."""

    def __init__(self, shape):
        super().__init__()
        self.shape = [int(d) for d in shape]

    def forward(self, x):
        x = _check_input(x, "Reshape")
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)]
        return x.reshape(tuple(shape))


class QuantizedConcat(QuantizedModule):
    """Concatenation along `axis` requantized to one (scale, zero_point), the concat's observed qparams
    (torch's `QFunctional.cat`): each input's levels are dequantized and requantized with round half to
    even, so an input already in the output's qparams passes unchanged."""

    def __init__(self, scale, zero_point, axis=1):
        super().__init__()
        self.scale, self.zero_point, self.axis = float(scale), int(zero_point), int(axis)

    def forward(self, *xs):
        parts = [_check_input(x, "QuantizedConcat").dequantize().data for x in xs]
        return quantize_per_tensor(Tensor._wrap(np.concatenate(parts, axis=self.axis)), self.scale, self.zero_point,
                                   qd.quint8)


def kernel_routes(model):
    """{kernel: number of layers} for the integer layers of `model` that have prepared their weights (at
    construction, or on their first call): which GEMM route (kernels.qgemm) each Linear packed for, and
    which conv route and GEMM each Conv2d took. What `minicompress bench` and the benchmarks print."""
    from ..kernels.qgemm import PackedWeight
    counts = {}

    def count(name):
        counts[name] = counts.get(name, 0) + 1

    def packed_in(value):
        if isinstance(value, PackedWeight):
            yield value
        elif isinstance(value, (tuple, list)):
            for item in value:
                yield from packed_in(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from packed_in(item)

    for module in model.modules():
        plan = module.__dict__.get("_conv_plan")
        if plan is not None:
            conv = plan.conv
            gemm = ("vnni512 zmm conv GEMM" if conv.gemm16 else f"{conv.gemm8} ymm conv GEMM" if conv.gemm8
                    else "direct loop" if conv.route == "depthwise" else f"qgemm {conv.packed[0].route}")
            count(f"conv {conv.route}: {gemm}")
        for packed in packed_in(module.__dict__.get("_packed_weight")):
            count(f"{'dynamic ' if type(module).__name__.startswith('Dynamic') else ''}linear: qgemm {packed.route}")
    return counts

