"""The teacher: a plain, wide CNN for the 8x8 digits, the model a MobileClassifier student
learns from.

    stem    conv3x3(in -> 64)   BN ReLU      8 x 8
    layer1  conv3x3(64 -> 64)   BN ReLU      8 x 8
    downsample  max pool 2x2                 4 x 4
    layer2  conv3x3(64 -> 128)  BN ReLU      4 x 4
            conv3x3(128 -> 128) BN ReLU      4 x 4
    global average pool, Linear(128 -> 256) ReLU Linear(256 -> classes)

About 295k parameters against the mobile classifier's 10k: the gap distillation tries to close.
Its feature maps line up with the student's for feature distillation: `layer1` with
`blocks.1` (8 x 8) and `layer2` with `blocks.3` (4 x 4). Each conv-BN-ReLU triple is a
Sequential of its own, ready for quantization's module fusion.
"""
from ..nn.activation import AdaptiveAvgPool2d, MaxPool2d, ReLU
from ..nn.containers import Sequential
from ..nn.layers import BatchNorm2d, Conv2d, Flatten, Linear
from ..nn.mobilenet import make_divisible
from ..nn.module import Module
from ..nn.stubs import DeQuantStub, QuantStub


def conv_bn_relu(in_channels, out_channels):
    """3x3 convolution (padding 1, no bias: batch norm supplies it), batch norm, ReLU."""
    return Sequential(Conv2d(in_channels, out_channels, 3, 1, 1, bias=False), BatchNorm2d(out_channels), ReLU())


class TeacherClassifier(Module):
    """conv stem -> conv -> max pool -> 2 convs -> global average pool -> 2-layer MLP, between
    quant stubs; see the module docstring for the shapes."""

    def __init__(self, num_classes=10, in_channels=1, width_mult=1.0):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        c1, c2, hidden = (make_divisible(c * width_mult) for c in (64, 128, 256))
        self.quant = QuantStub()
        self.stem = conv_bn_relu(in_channels, c1)
        self.layer1 = conv_bn_relu(c1, c1)
        self.downsample = MaxPool2d(2)
        self.layer2 = Sequential(conv_bn_relu(c1, c2), conv_bn_relu(c2, c2))
        self.pool = AdaptiveAvgPool2d(1)
        self.flatten = Flatten()
        self.classifier = Sequential(Linear(c2, hidden), ReLU(), Linear(hidden, num_classes))
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.downsample(self.layer1(self.stem(x)))
        x = self.flatten(self.pool(self.layer2(x)))
        return self.dequant(self.classifier(x))


def create_teacher_classifier(num_classes=10, in_channels=1, width_mult=1.0):
    """The teacher CNN for small images (the digits are 1 x 8 x 8); `width_mult` scales every width."""
    return TeacherClassifier(num_classes, in_channels, width_mult)
