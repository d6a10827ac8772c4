"""The detector's losses, written from Tensor ops as torchvision writes them, so their gradients are
autograd's:

`sigmoid_focal_loss` (Lin et al., 2017, "Focal Loss for Dense Object Detection"; torchvision.ops.
sigmoid_focal_loss), per element, with p = sigmoid(x) and t in {0, 1}:

    ce    = -t log p - (1 - t) log(1 - p) = max(x, 0) - x t + log(1 + exp(-|x|))
    p_t   = p t + (1 - p)(1 - t)
    loss  = alpha_t (1 - p_t)^gamma ce,   alpha_t = alpha t + (1 - alpha)(1 - t)  (alpha < 0: no weighting)

The (1 - p_t)^gamma factor turns down the many easy background locations.

`generalized_box_iou_loss` (Rezatofighi et al., 2019; torchvision.ops.generalized_box_iou_loss),
per pair of xyxy boxes, with C the smallest box enclosing both:

    loss = 1 - (IoU - (|C| - |A ∪ B|) / |C|),   IoU = |A ∩ B| / (|A ∪ B| + eps)

It is in [0, 2] and, unlike 1 - IoU, still has a gradient when the boxes do not overlap.

`fcos_loss` combines them as FCOS does: focal loss summed over every location and class, divided by
the number of positive locations, plus the GIoU loss averaged over the positive locations.
"""
import numpy as np

from ..autograd import Function
from ..tensor import Tensor, maximum, minimum

REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss, reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return loss if reduction == "none" else loss.mean() if reduction == "mean" else loss.sum()


class BinaryCrossEntropyWithLogits(Function):
    """ce(x, t) = max(x, 0) - x t + log(1 + exp(-|x|)), elementwise;  d/dx = sigmoid(x) - t,
    d/dt = -x. As `F.binary_cross_entropy_with_logits(reduction='none')`. One op rather than a
    composition of relu and abs, whose kinks at x = 0 would give a gradient of -t there instead of
    1/2 - t."""

    @staticmethod
    def forward(ctx, x, t):
        ctx.save_for_backward(x, t)
        return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved
        e = np.exp(-np.abs(x))
        sigmoid = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        return (g * (sigmoid - t) if ctx.needs_input_grad[0] else None,
                -g * x if ctx.needs_input_grad[1] else None)


def binary_cross_entropy_with_logits(inputs, targets):
    """Elementwise ce(x, t) of `BinaryCrossEntropyWithLogits` (no reduction)."""
    return BinaryCrossEntropyWithLogits.apply(inputs, targets)


def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """Focal loss of logits `inputs` against same-shape 0/1 (or soft) `targets`; see the module docstring."""
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise TypeError("inputs and targets must be Tensors")
    if inputs.shape != targets.shape:
        raise ValueError(f"targets shape {targets.shape} must equal inputs shape {inputs.shape}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    p = inputs.sigmoid()
    ce = binary_cross_entropy_with_logits(inputs, targets)
    p_t = p * targets + (1.0 - p) * (1.0 - targets)
    loss = ce * (1.0 - p_t) ** gamma if gamma else ce
    if alpha >= 0:
        loss = (targets * alpha + (1.0 - targets) * (1.0 - alpha)) * loss
    return _reduce(loss, reduction)


def generalized_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """GIoU loss of (..., 4) xyxy box Tensors, pair by pair; see the module docstring."""
    if not isinstance(boxes1, Tensor) or not isinstance(boxes2, Tensor):
        raise TypeError("boxes1 and boxes2 must be Tensors")
    if boxes1.shape != boxes2.shape or boxes1.shape[-1] != 4:
        raise ValueError(f"boxes1 {boxes1.shape} and boxes2 {boxes2.shape} must have the same shape (..., 4)")
    x1, y1, x2, y2 = (boxes1[..., i] for i in range(4))
    x1g, y1g, x2g, y2g = (boxes2[..., i] for i in range(4))
    inter_w = (minimum(x2, x2g) - maximum(x1, x1g)).clamp(min=0.0)
    inter_h = (minimum(y2, y2g) - maximum(y1, y1g)).clamp(min=0.0)
    inter = inter_w * inter_h
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    enclosing = (maximum(x2, x2g) - minimum(x1, x1g)) * (maximum(y2, y2g) - minimum(y1, y1g))
    giou = iou - (enclosing - union) / (enclosing + eps)
    return _reduce(1.0 - giou, reduction)


def decode_outputs(box_outputs, points, strides):
    """xyxy boxes (N, L, 4) Tensor from raw box outputs r (N, L, 4): point -/+ stride * exp(r).
    `points` (L, 2) and `strides` (L,) as `feature_locations` gives them."""
    distances = box_outputs.clamp(max=8.0).exp() * strides[None, :, None].astype(np.float32)
    px = Tensor(np.concatenate([points, points], axis=1)[None].astype(np.float32))
    sign = Tensor(np.array([-1, -1, 1, 1], dtype=np.float32))
    return px + distances * sign


def fcos_loss(outputs, cls_targets, box_targets, points, strides, alpha=0.25, gamma=2.0):
    """(total, classification, box) losses of detector `outputs` (N, L, K + 4) against the dense
    targets of `fcos_targets`: `cls_targets` (N, L) int (class, or -1 for background) and
    `box_targets` (N, L, 4) xyxy boxes of the positives."""
    cls_targets = np.asarray(cls_targets.data if isinstance(cls_targets, Tensor) else cls_targets)
    box_targets = np.asarray(box_targets.data if isinstance(box_targets, Tensor) else box_targets)
    n, n_loc, width = outputs.shape
    k = width - 4
    positive = cls_targets >= 0
    one_hot = np.zeros((n, n_loc, k), dtype=np.float32)
    one_hot[positive, cls_targets[positive]] = 1.0
    n_pos = max(1.0, float(positive.sum()))
    cls_loss = sigmoid_focal_loss(outputs[..., :k], Tensor(one_hot), alpha, gamma, reduction="sum") / n_pos
    if not positive.any():
        box_loss = outputs[..., k:].sum() * 0.0
    else:
        boxes = decode_outputs(outputs[..., k:], points, strides)
        index = np.nonzero(positive)
        box_loss = generalized_box_iou_loss(boxes[index], Tensor(box_targets[index].astype(np.float32)),
                                            reduction="mean")
    return cls_loss + box_loss, cls_loss, box_loss
