"""MobileNet-style building blocks and the small classifier used throughout minicompress.

A depthwise separable convolution (Howard et al., 2017) factors a k x k convolution into a
per-channel k x k "depthwise" convolution and a 1 x 1 "pointwise" one: C*k*k + C*O weights
instead of C*O*k*k. The residual addition is an `Add` module, so quantization can observe it
and swap it for an integer add without the model being rewritten.
"""
from .stubs import DeQuantStub, QuantStub
from .activation import AdaptiveAvgPool2d, ReLU
from .containers import Sequential
from .fused import fused_conv_forward
from .layers import Add, BatchNorm2d, Conv2d, Dropout, Flatten, Linear
from .module import Module


def make_divisible(value, divisor=8, min_value=None):
    """Round channel counts to a multiple of `divisor`, never more than 10% below `value`
    (the rule of torchvision's MobileNet)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn_relu(conv, bn, relu, x):
    """relu(bn(conv(x))). In evaluation without grad, when the layers allow it (`nn.fused.fusable`), one
    convolution kernel applies bn and relu in the pass that writes its output (`nn.fused`): the same
    arithmetic and the same bits as the layers one by one, minus two full-size passes and allocations."""
    fused = fused_conv_forward(conv, bn, relu, x)
    return relu(bn(conv(x))) if fused is None else fused


class DepthwiseSeparableConv2d(Module):
    """depthwise 3x3 + BN + ReLU, then pointwise 1x1 + BN + ReLU."""

    def __init__(self, in_channels, out_channels, stride=1, kernel_size=3):
        super().__init__()
        self.depthwise = Conv2d(in_channels, in_channels, kernel_size, stride, kernel_size // 2,
                                groups=in_channels, bias=False)
        self.bn1 = BatchNorm2d(in_channels)
        self.relu1 = ReLU()
        self.pointwise = Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = BatchNorm2d(out_channels)
        self.relu2 = ReLU()

    def forward(self, x):
        x = conv_bn_relu(self.depthwise, self.bn1, self.relu1, x)
        return conv_bn_relu(self.pointwise, self.bn2, self.relu2, x)


class MobileNetBlock(Module):
    """A depthwise separable convolution with a residual connection when the stride is 1 and the
    channel count is unchanged."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv = DepthwiseSeparableConv2d(in_channels, out_channels, stride)
        self.use_residual = stride == 1 and in_channels == out_channels
        if self.use_residual:
            self.skip_add = Add()

    def forward(self, x):
        out = self.conv(x)
        return self.skip_add(out, x) if self.use_residual else out

    def extra_repr(self):
        return f"residual={self.use_residual}"


class MobileClassifier(Module):
    """stem conv -> MobileNet blocks -> global average pool -> linear, between quant stubs."""

    def __init__(self, num_classes=10, in_channels=1, width_mult=1.0, dropout=0.0):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        c1, c2, c3 = (make_divisible(c * width_mult) for c in (16, 32, 64))
        self.quant = QuantStub()
        self.stem = Sequential(Conv2d(in_channels, c1, 3, 1, 1, bias=False), BatchNorm2d(c1), ReLU())
        self.blocks = Sequential(
            MobileNetBlock(c1, c2, 1),
            MobileNetBlock(c2, c2, 1),
            MobileNetBlock(c2, c3, 2),
            MobileNetBlock(c3, c3, 1),
        )
        self.pool = AdaptiveAvgPool2d(1)
        self.flatten = Flatten()
        self.dropout = Dropout(dropout)
        self.classifier = Linear(c3, num_classes)
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        stem = self.stem
        if type(stem) is Sequential and len(stem) == 3 and not stem._forward_hooks and not stem._forward_pre_hooks:
            x = conv_bn_relu(*stem, x)              # the same layers, bn and relu in one pass when they can be
        else:
            x = stem(x)
        x = self.blocks(x)
        x = self.dropout(self.flatten(self.pool(x)))
        return self.dequant(self.classifier(x))


def create_mobile_classifier(num_classes=10, in_channels=1, width_mult=1.0):
    """The MobileNet-style classifier for small images (the digits are 1 x 8 x 8)."""
    return MobileClassifier(num_classes, in_channels, width_mult)
