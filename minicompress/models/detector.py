"""A small anchor-free detector for the digit scenes: MobileNet backbone, feature-pyramid neck, FCOS head.

    input 1 x 64 x 64
    backbone  stem conv3x3 s2 + BN + ReLU                       32 x 32
              MobileNetBlock s2 (+ `depth` - 1 blocks s1)  -> C3  16 x 16  (stride 4)
              MobileNetBlock s2 (+ ...)                    -> C4   8 x 8   (stride 8)
              MobileNetBlock s2 (+ ...)                    -> C5   4 x 4   (stride 16)
    neck (FPN, Lin et al., 2017): 1x1 laterals to `neck_channels`, top-down nearest x2 upsampling and
              addition, a depthwise separable 3x3 on each output:  P3 = smooth(L3 + up(L4 + up(L5))),
              P4 = smooth(L4 + up(L5))
    head (FCOS, Tian et al., 2019), shared by P3 and P4: a depthwise separable 3x3 tower, then a 1x1
              conv to `num_classes` class logits and a 1x1 conv to 4 box distances per location.

`forward(x)` returns one (N, L, num_classes + 4) Tensor, L = 16*16 + 8*8 locations (P3's row-major, then
P4's): columns [:num_classes] are class logits, [num_classes:] the raw box outputs r, whose distances
to the box sides are exp(r) in units of the level's stride (FCOS's exp). `locations()` gives each
location's (x, y) centre and stride. `postprocess` (sigmoid, decode, per-class NMS) turns outputs into
boxes. Everything between QuantStub and the per-level DeQuantStub is conv, batch norm, ReLU,
addition and upsampling, so static int8 quantization covers the whole network.

The teacher is the same design, wider and deeper (`create_teacher_detector`); the neck outputs P3
and P4 line up spatially between the two for feature imitation.
"""
import numpy as np

from ..nn.activation import ReLU
from ..nn.containers import ModuleList, Sequential
from ..nn.layers import Add, BatchNorm2d, Conv2d
from ..nn.mobilenet import DepthwiseSeparableConv2d, MobileNetBlock, make_divisible
from ..nn.module import Module
from ..nn.upsample import Upsample
from ..quant.modules import _SameQParams
from ..nn.stubs import DeQuantStub, QuantStub
from ..tensor import cat

STRIDES = (4, 8)
# FCOS's scale ranges: a location regresses a box on P3 when its largest side distance is <= 8 px
# (boxes up to ~16 px), on P4 otherwise. Digits in the scenes are 5-24 px.
SIZE_RANGES = ((0.0, 8.0), (8.0, float("inf")))
CENTER_RADIUS = 1.5      # positives lie within 1.5 strides of the box centre (FCOS's centre sampling)
PRIOR_PROBABILITY = 0.01  # class bias initialised to -log((1 - p) / p) (RetinaNet), so focal loss starts calm


def _stage(in_channels, out_channels, depth):
    blocks = [MobileNetBlock(in_channels, out_channels, 2)]
    blocks += [MobileNetBlock(out_channels, out_channels, 1) for _ in range(depth - 1)]
    return Sequential(*blocks)


class FPN(Module):
    """Laterals, top-down pathway and smoothing over (C3, C4, C5); returns [P3, P4]."""

    def __init__(self, in_channels, channels):
        super().__init__()
        self.lateral = ModuleList(Conv2d(c, channels, 1) for c in in_channels)
        self.up5, self.up4 = Upsample(2), Upsample(2)
        self.add4, self.add3 = Add(), Add()
        self.smooth = ModuleList(DepthwiseSeparableConv2d(channels, channels) for _ in range(2))

    def forward(self, c3, c4, c5):
        l3, l4, l5 = (lateral(c) for lateral, c in zip(self.lateral, (c3, c4, c5)))
        t4 = self.add4(l4, self.up5(l5))
        t3 = self.add3(l3, self.up4(t4))
        return [self.smooth[0](t3), self.smooth[1](t4)]


class FCOSHead(Module):
    """The shared head: tower, class logits, box outputs, for one pyramid level at a time."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.tower = DepthwiseSeparableConv2d(channels, channels)
        # 1x1 predictors after the 3x3 depthwise tower: a dense 3x3 here would cost more than the
        # rest of the network (its weight gradient is the slowest conv kernel at these sizes).
        self.cls_logits = Conv2d(channels, num_classes, 1)
        self.bbox_pred = Conv2d(channels, 4, 1)
        self.cls_logits.bias.data[:] = -np.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        self.bbox_pred.bias.data[:] = np.log(2.0)  # boxes start ~2 strides from each side

    def forward(self, x):
        x = self.tower(x)
        return self.cls_logits(x), self.bbox_pred(x)


class Detector(Module):
    """Backbone -> FPN -> FCOS head; see the module docstring."""

    def __init__(self, num_classes=10, in_channels=1, image_size=64, width_mult=1.0, depth=1, neck_channels=None):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size!r}")
        c0, c3, c4, c5 = (make_divisible(c * width_mult) for c in (16, 24, 48, 64))
        neck = neck_channels or make_divisible(32 * width_mult)
        self.num_classes, self.image_size = num_classes, image_size
        self.input_shape = (in_channels, image_size, image_size)   # what `shrink` traces and `predict` expects
        self.quant = QuantStub()
        self.stem = Sequential(Conv2d(in_channels, c0, 3, 2, 1, bias=False), BatchNorm2d(c0), ReLU())
        self.stage3 = _stage(c0, c3, depth)
        self.stage4 = _stage(c3, c4, depth)
        self.stage5 = _stage(c4, c5, depth)
        self.neck = FPN((c3, c4, c5), neck)
        self.head = FCOSHead(neck, num_classes)
        self.dequant = DeQuantStub()

    def features(self, x):
        """[P3, P4], the neck's outputs (still quantized in an int8 model)."""
        c3 = self.stage3(self.stem(self.quant(x)))
        c4 = self.stage4(c3)
        return self.neck(c3, c4, self.stage5(c4))

    def forward(self, x):
        levels = []
        for p in self.features(x):
            logits, boxes = (self.dequant(t) for t in self.head(p))
            n, _, h, w = logits.shape
            both = cat([logits, boxes], dim=1)
            levels.append(both.permute(0, 2, 3, 1).reshape(n, h * w, self.num_classes + 4))
        return cat(levels, dim=1)

    def locations(self):
        """(points (L, 2) float32 pixel centres (x, y), strides (L,) float32), in `forward`'s order."""
        return feature_locations(self.image_size)


class QuantizedUpsample(_SameQParams):
    """Nearest upsampling of a QTensor, the int8 twin of `nn.Upsample`: levels repeat, qparams stay.
    (Defined here, beside the model that needs it, so model files that hold it load.)"""

    def __init__(self, mod):
        super().__init__()
        self.scale_factor = mod.scale_factor

    def _levels(self, x):
        s = self.scale_factor
        return x.int_repr().repeat(s, axis=2).repeat(s, axis=3)


def feature_locations(image_size, strides=STRIDES):
    """FCOS's locations: the centre (s/2 + s*j, s/2 + s*i) of every cell of each level, row-major."""
    points, level_strides = [], []
    for s in strides:
        n = image_size // s
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()], 1) * s + s / 2)
        level_strides.append(np.full(n * n, s))
    return np.concatenate(points).astype(np.float32), np.concatenate(level_strides).astype(np.float32)


def create_detector(num_classes=10, in_channels=1, image_size=64):
    """The student: about 30k parameters."""
    return Detector(num_classes, in_channels, image_size, width_mult=1.0, depth=1)


def create_teacher_detector(num_classes=10, in_channels=1, image_size=64):
    """The teacher: twice as wide, two blocks per stage."""
    return Detector(num_classes, in_channels, image_size, width_mult=2.0, depth=2)
