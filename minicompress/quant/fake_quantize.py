"""Fake quantization: quantize-dequantize in float during training, with the straight-through gradient,
as `torch.fake_quantize_per_tensor_affine`, `torch.fake_quantize_per_channel_affine` and
`torch.ao.quantization.FakeQuantize`.

    forward:   out = scale * (clamp(round(x / scale) + zero_point, quant_min, quant_max) - zero_point)
    backward:  d out / d x = 1 where round(x / scale) + zero_point lies in [quant_min, quant_max], else 0

The values are those an int8 model will compute, so the network trains against its own rounding
error; the gradient ignores the rounding (it is zero almost everywhere) and stops only where the value
is clipped. The arithmetic is `affine.fake_quantize_*` (torch's kernels bit for bit).

FakeQuantize is a module: an observer (a moving-average min / max by default) updates (scale,
zero_point) on every training batch, then the input is fake-quantized with them. Both steps can be
switched off (`disable_observer`, `disable_fake_quant`), as torch's QAT recipes do late in training.
"""
from functools import partial

import numpy as np

from ..autograd import Function
from ..nn.module import Module
from ..tensor import Tensor
from . import affine
from . import dtypes as qd
from .observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver, _PartialWrapper


class FakeQuantizePerTensorAffine(Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, quant_min, quant_max):
        out, mask = affine.fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max)
        ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved
        return (grad * mask,)


class FakeQuantizePerChannelAffine(Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, axis, quant_min, quant_max):
        out, mask = affine.fake_quantize_per_channel_affine(x, scale, zero_point, axis, quant_min, quant_max)
        ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved
        return (grad * mask,)


def _as_number(value):
    value = value.data if isinstance(value, Tensor) else value
    return np.asarray(value).reshape(()) if np.size(value) == 1 else np.asarray(value)


def fake_quantize_per_tensor_affine(input, scale, zero_point, quant_min, quant_max):
    """`torch.fake_quantize_per_tensor_affine` on a Tensor; the gradient flows to `input` only.

    scale, zero_point: numbers or 1-element arrays / Tensors. Raises ValueError for scale <= 0 or a zero
    point outside [quant_min, quant_max].
    """
    return FakeQuantizePerTensorAffine.apply(input, _as_number(scale), _as_number(zero_point), quant_min, quant_max)


def fake_quantize_per_channel_affine(input, scale, zero_point, axis, quant_min, quant_max):
    """`torch.fake_quantize_per_channel_affine` on a Tensor: one (scale, zero_point) per slice along `axis`."""
    scale = np.atleast_1d(scale.data if isinstance(scale, Tensor) else np.asarray(scale))
    zero_point = np.atleast_1d(zero_point.data if isinstance(zero_point, Tensor) else np.asarray(zero_point))
    return FakeQuantizePerChannelAffine.apply(input, scale, zero_point, axis, quant_min, quant_max)


class FakeQuantize(Module):
    """Observe, then fake-quantize (torch's `FakeQuantize`).

    Args:
        observer: an observer class or `with_args` factory (MovingAverageMinMaxObserver by default).
        quant_min, quant_max: the integer range, passed to the observer (which may halve it with
            reduce_range); the range used is the observer's `quant_min` / `quant_max`.
        **observer_kwargs: dtype, qscheme, reduce_range, ch_axis, averaging_constant, ...
    Buffers: `scale` (float32), `zero_point` (int64), `fake_quant_enabled`, `observer_enabled` (uint8 flags).
    """

    def __init__(self, observer=MovingAverageMinMaxObserver, quant_min=None, quant_max=None, is_dynamic=False,
                 **observer_kwargs):
        super().__init__()
        if quant_min is not None and quant_max is not None:
            if quant_min > quant_max:
                raise ValueError(f"quant_min={quant_min} must not exceed quant_max={quant_max}")
            observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        self.activation_post_process = observer(is_dynamic=is_dynamic, **observer_kwargs)
        obs = self.activation_post_process
        self.quant_min, self.quant_max = obs.quant_min, obs.quant_max
        self.dtype, self.qscheme = obs.dtype, obs.qscheme
        self.ch_axis = getattr(obs, "ch_axis", -1)
        self.is_per_channel = obs.qscheme.per_channel
        self.is_dynamic = is_dynamic
        self.register_buffer("fake_quant_enabled", Tensor(np.array([1], np.uint8)))
        self.register_buffer("observer_enabled", Tensor(np.array([1], np.uint8)))
        self.register_buffer("scale", Tensor(np.array([1.0], np.float32)))
        self.register_buffer("zero_point", Tensor(np.array([0], np.int64)))

    @classmethod
    def with_args(cls, **kwargs):
        return _PartialWrapper(partial(cls, **kwargs))

    @property
    def observed(self):
        return self.activation_post_process.observed

    def enable_fake_quant(self, enabled=True):
        self.fake_quant_enabled.data[0] = int(enabled)
        return self

    def disable_fake_quant(self):
        return self.enable_fake_quant(False)

    def enable_observer(self, enabled=True):
        self.observer_enabled.data[0] = int(enabled)
        return self

    def disable_observer(self):
        return self.enable_observer(False)

    def calculate_qparams(self):
        return self.activation_post_process.calculate_qparams()

    def forward(self, x):
        if self.observer_enabled.data[0]:
            self.activation_post_process(x.detach() if isinstance(x, Tensor) else x)
            scale, zero_point = self.calculate_qparams()
            self.scale.data, self.zero_point.data = scale.astype(np.float32), zero_point.astype(np.int64)
        if self.fake_quant_enabled.data[0]:
            if self.is_per_channel:
                x = fake_quantize_per_channel_affine(x, self.scale.data, self.zero_point.data, self.ch_axis,
                                                     self.quant_min, self.quant_max)
            else:
                x = fake_quantize_per_tensor_affine(x, self.scale.data, self.zero_point.data, self.quant_min,
                                                    self.quant_max)
        return x

    def extra_repr(self):
        return (f"fake_quant_enabled={int(self.fake_quant_enabled.data[0])}, "
                f"observer_enabled={int(self.observer_enabled.data[0])}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, dtype={self.dtype!r}, qscheme={self.qscheme!r}, ch_axis={self.ch_axis}")


def disable_observer(module):
    """`module.apply(disable_observer)`: freeze the qparams of every FakeQuantize."""
    if isinstance(module, FakeQuantize):
        module.disable_observer()


def enable_observer(module):
    if isinstance(module, FakeQuantize):
        module.enable_observer()


def disable_fake_quant(module):
    if isinstance(module, FakeQuantize):
        module.disable_fake_quant()


def enable_fake_quant(module):
    if isinstance(module, FakeQuantize):
        module.enable_fake_quant()


default_fake_quant = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                            dtype=qd.quint8, qscheme=qd.per_tensor_affine, reduce_range=True)
default_weight_fake_quant = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-128,
                                                   quant_max=127, dtype=qd.qint8, qscheme=qd.per_tensor_symmetric,
                                                   reduce_range=False)
default_per_channel_weight_fake_quant = FakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=qd.qint8,
    qscheme=qd.per_channel_symmetric, reduce_range=False, ch_axis=0)
