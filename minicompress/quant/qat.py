"""Quantization-aware training layers: float layers whose weight is fake-quantized on every forward, as
`torch.ao.nn.qat` and `torch.ao.nn.intrinsic.qat`.

    Linear, Conv2d                 y = layer(x, fake_quant(W), b)
    LinearReLU, ConvReLU2d         the same, then ReLU
    ConvBn2d, ConvBnReLU2d         conv with batch norm folded on the fly (below), then ReLU for the latter

The weight's fake quantizer is `qconfig.weight()` (a FakeQuantize); the output's is attached by `prepare`
as for every other layer. Parameters are shared with the float layer they were built from (`from_float`),
as torch does: training the QAT model trains those tensors.

ConvBn2d follows torch's `_ConvBnNd._forward_approximate`. The integer model will run the conv with BN
folded into its weight, W * gamma / sigma (sigma = sqrt(running_var + eps)), so that is the weight to
fake-quantize; but in training BN must still normalise with the batch's statistics. So:

    s      = gamma / sqrt(running_var + eps)                           per output channel
    y      = conv(x, fake_quant(W * s)) / s  (+ b)                     the conv with the folded, quantized weight,
                                                                       its scaling undone
    out    = batch_norm(y) with batch statistics (running statistics once `freeze_bn_stats` is applied)

When training ends the running statistics stop moving (`freeze_bn_stats`), BN normalises with them,
and the forward is exactly the folded conv the integer model will run.
"""
import numpy as np

from .. import functional as F
from ..nn.layers import BatchNorm2d
from ..nn.layers import Conv2d as FloatConv2d
from ..nn.layers import Linear as FloatLinear
from ..nn import fused


def _check_qconfig(mod, cls):
    qconfig = getattr(mod, "qconfig", None)
    if qconfig is None:
        raise ValueError(f"{cls.__name__}.from_float needs a module with a qconfig; {type(mod).__name__} has none "
                         f"(set model.qconfig before prepare_qat)")
    return qconfig


class Linear(FloatLinear):
    """nn.Linear with a fake-quantized weight (torch.ao.nn.qat.Linear)."""

    _relu = False

    def __init__(self, in_features, out_features, bias=True, qconfig=None):
        super().__init__(in_features, out_features, bias)
        if qconfig is None:
            raise ValueError("qconfig is required for a QAT layer")
        self.qconfig = qconfig
        self.weight_fake_quant = qconfig.weight()

    def forward(self, x):
        out = F.linear(x, self.weight_fake_quant(self.weight), self.bias)
        return F.relu(out) if self._relu else out

    @classmethod
    def from_float(cls, mod):
        qconfig = _check_qconfig(mod, cls)
        linear = mod[0] if isinstance(mod, fused.LinearReLU) else mod
        qat = cls(linear.in_features, linear.out_features, linear.bias is not None, qconfig)
        qat.weight, qat.bias = linear.weight, linear.bias
        return qat.train(mod.training)


class LinearReLU(Linear):
    _relu = True


class Conv2d(FloatConv2d):
    """nn.Conv2d with a fake-quantized weight (torch.ao.nn.qat.Conv2d)."""

    _relu = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 qconfig=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        if qconfig is None:
            raise ValueError("qconfig is required for a QAT layer")
        self.qconfig = qconfig
        self.weight_fake_quant = qconfig.weight()

    def _conv(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x):
        out = self._conv(x, self.weight_fake_quant(self.weight), self.bias)
        return F.relu(out) if self._relu else out

    @classmethod
    def _from_conv(cls, conv, qconfig, training):
        qat = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  conv.groups, conv.bias is not None, qconfig)
        qat.weight, qat.bias = conv.weight, conv.bias
        return qat.train(training)

    @classmethod
    def from_float(cls, mod):
        qconfig = _check_qconfig(mod, cls)
        conv = mod[0] if isinstance(mod, fused.ConvReLU2d) else mod
        return cls._from_conv(conv, qconfig, mod.training)


class ConvReLU2d(Conv2d):
    _relu = True


class ConvBn2d(Conv2d):
    """Conv2d + BatchNorm2d trained with the BN folded into the fake-quantized weight; see the module docstring.

    `bn` is a BatchNorm2d child (its state_dict keys stay `bn.*`); `freeze_bn` switches it to running statistics.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=None,
                 eps=1e-5, momentum=0.1, freeze_bn=False, qconfig=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bool(bias), qconfig)
        self.bn = BatchNorm2d(out_channels, eps, momentum)
        self.freeze_bn = freeze_bn

    def _bn_scale(self):
        """gamma / sqrt(running_var + eps) as a Tensor (differentiable in gamma, as torch's)."""
        running_std = np.sqrt(self.bn.running_var.data + np.float32(self.bn.eps)).astype(np.float32)
        return self.bn.weight / running_std

    def forward(self, x):
        scale = self._bn_scale()
        scaled_weight = self.weight_fake_quant(self.weight * scale.reshape(-1, 1, 1, 1))
        out = self._conv(x, scaled_weight, None) / scale.reshape(1, -1, 1, 1)
        if self.bias is not None:
            out = out + self.bias.reshape(1, -1, 1, 1)
        bn = self.bn
        if self.freeze_bn:
            out = F.batch_norm(out, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            out = bn(out)
        return F.relu(out) if self._relu else out

    def folded_weight_bias(self):
        """(W', b') arrays: the BN folded into the conv with the running statistics, for convert."""
        bn = self.bn
        return fused.fuse_conv_bn_weights(self.weight.data, None if self.bias is None else self.bias.data,
                                         bn.running_mean.data, bn.running_var.data, bn.eps, bn.weight.data,
                                         bn.bias.data)

    def freeze_bn_stats(self):
        self.freeze_bn = True
        return self

    def update_bn_stats(self):
        self.freeze_bn = False
        return self

    @classmethod
    def from_float(cls, mod):
        qconfig = _check_qconfig(mod, cls)
        conv, bn = mod[0], mod[1]
        qat = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  conv.groups, conv.bias is not None, bn.eps, bn.momentum, False, qconfig)
        qat.weight, qat.bias = conv.weight, conv.bias
        qat.bn = bn
        return qat.train(mod.training)


class ConvBnReLU2d(ConvBn2d):
    _relu = True


def freeze_bn_stats(module):
    """`model.apply(freeze_bn_stats)`: ConvBn layers normalise with (and stop updating) running statistics."""
    if isinstance(module, ConvBn2d):
        module.freeze_bn_stats()


def update_bn_stats(module):
    if isinstance(module, ConvBn2d):
        module.update_bn_stats()
