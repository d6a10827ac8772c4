"""The torch version of `models.detector.Detector`, with the same module names (a state_dict moves
between the two unchanged), and the losses written as torchvision.ops writes them."""
import torch
import torch.nn.functional as F
from torch import nn
from torch_twins import DepthwiseSeparableConv2d, MobileNetBlock


def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss, line for line."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def generalized_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """torchvision.ops.generalized_box_iou_loss, line for line."""
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xkis1, ykis1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xkis2, ykis2 = torch.min(x2, x2g), torch.min(y2, y2g)
    intsctk = torch.zeros_like(x1)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsctk[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
    unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk
    iouk = intsctk / (unionk + eps)
    xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)
    xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    miouk = iouk - ((area_c - unionk) / (area_c + eps))
    loss = 1 - miouk
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def _stage(cin, cout, depth):
    return nn.Sequential(MobileNetBlock(cin, cout, 2), *[MobileNetBlock(cout, cout) for _ in range(depth - 1)])


class FPN(nn.Module):
    def __init__(self, in_channels, channels):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(DepthwiseSeparableConv2d(channels, channels) for _ in range(2))

    def forward(self, c3, c4, c5):
        l3, l4, l5 = (lateral(c) for lateral, c in zip(self.lateral, (c3, c4, c5)))
        t4 = l4 + F.interpolate(l5, scale_factor=2, mode="nearest")
        t3 = l3 + F.interpolate(t4, scale_factor=2, mode="nearest")
        return [self.smooth[0](t3), self.smooth[1](t4)]


class Head(nn.Module):
    def __init__(self, channels, num_classes):
        super().__init__()
        self.tower = DepthwiseSeparableConv2d(channels, channels)
        self.cls_logits = nn.Conv2d(channels, num_classes, 1)
        self.bbox_pred = nn.Conv2d(channels, 4, 1)

    def forward(self, x):
        x = self.tower(x)
        return self.cls_logits(x), self.bbox_pred(x)


class Detector(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, channels=(16, 24, 48, 64), neck=32, depth=1):
        super().__init__()
        c0, c3, c4, c5 = channels
        self.num_classes = num_classes
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU())
        self.stage3, self.stage4, self.stage5 = _stage(c0, c3, depth), _stage(c3, c4, depth), _stage(c4, c5, depth)
        self.neck = FPN((c3, c4, c5), neck)
        self.head = Head(neck, num_classes)

    def forward(self, x):
        c3 = self.stage3(self.stem(x))
        c4 = self.stage4(c3)
        levels = []
        for p in self.neck(c3, c4, self.stage5(c4)):
            logits, boxes = self.head(p)
            both = torch.cat([logits, boxes], 1)
            levels.append(both.permute(0, 2, 3, 1).reshape(len(x), -1, self.num_classes + 4))
        return torch.cat(levels, 1)
