"""Greedy non-maximum suppression, as `torchvision.ops.nms` and `batched_nms`.

Walk the boxes from the highest score down; keep a box unless its IoU with a box already kept is
greater than `iou_threshold` (strictly: a box at exactly the threshold survives). The result holds
the indices of the kept boxes, int64, sorted by decreasing score. Equal scores keep their input order
(a stable sort; torchvision leaves the order of ties unspecified).

`batched_nms` runs the same suppression within each category `idxs` separately: boxes of different
categories never suppress each other. torchvision does it with one NMS over boxes shifted apart
per category; the loop over categories here gives the same set and, sorted by score, the same order.
"""
import numpy as np

from .boxes import _iou, as_boxes


def _validate_threshold(iou_threshold, name="iou_threshold"):
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float, np.integer, np.floating)) \
            or not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {iou_threshold!r}")
    return float(iou_threshold)


def _validate_scores(scores, n, name="scores"):
    scores = np.asarray(scores)
    if scores.ndim != 1 or scores.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a 1-D numeric array, got shape {scores.shape} dtype {scores.dtype}")
    if len(scores) != n:
        raise ValueError(f"{name} must have one entry per box: {n} boxes but {len(scores)} {name}")
    if np.isnan(scores).any():
        raise ValueError(f"{name} must not hold NaN")
    return scores


def _order(scores):
    """Indices by decreasing score, ties in input order."""
    return np.argsort(-scores.astype(np.float64), kind="stable")


def _nms(boxes, scores, iou_threshold):
    """Greedy NMS over checked inputs; kept indices, decreasing score."""
    order = _order(scores)
    iou = _iou(boxes[order], boxes[order])
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        # NaN (two coinciding zero-area boxes) compares False: no suppression, as in torchvision.
        suppressed[i + 1:] |= iou[i, i + 1:] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def nms(boxes, scores, iou_threshold):
    """Indices of the boxes kept by greedy NMS, by decreasing score.

    Args:
        boxes: (N, 4) xyxy boxes, x1 <= x2, y1 <= y2, no NaN.
        scores: (N,) scores, no NaN.
        iou_threshold: in [0, 1]; a box whose IoU with a kept, higher-scoring box is greater than
            this is discarded.

    Returns:
        int64 array of kept indices.

    Raises:
        ValueError: bad boxes, scores of another length, or a threshold outside [0, 1].

    Example:
        >>> nms([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], [0.9, 0.8, 0.7], 0.5)
        array([0, 2])
    """
    boxes = as_boxes(boxes)
    scores = _validate_scores(scores, len(boxes))
    return _nms(boxes, scores, _validate_threshold(iou_threshold))


def batched_nms(boxes, scores, idxs, iou_threshold):
    """NMS within each category: `idxs` (N,) integer category of each box. Kept indices, by decreasing
    score over all categories."""
    boxes = as_boxes(boxes)
    scores = _validate_scores(scores, len(boxes))
    idxs = np.asarray(idxs)
    if idxs.ndim != 1 or idxs.dtype.kind not in "iub" or len(idxs) != len(boxes):
        raise ValueError(f"idxs must be a 1-D integer array with one entry per box ({len(boxes)}), "
                         f"got shape {idxs.shape} dtype {idxs.dtype}")
    iou_threshold = _validate_threshold(iou_threshold)
    keep = [members[_nms(boxes[members], scores[members], iou_threshold)]
            for members in (np.flatnonzero(idxs == c) for c in np.unique(idxs))]
    keep = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    return keep[_order(scores[keep])].astype(np.int64)
