"""FCOS training targets and post-processing: from ground-truth boxes to dense per-location targets,
and from the detector's dense outputs back to scored boxes.

Assignment (Tian et al., 2019, with centre sampling): a location (x, y) of stride s is a positive of
a ground-truth box when it lies inside the box, within CENTER_RADIUS * s of the box centre, and its
largest distance to the box sides falls in the level's size range; when several boxes qualify, the
one of smallest area wins. Every other location is background (class -1).
"""
import numpy as np

from ..models.detector import CENTER_RADIUS, SIZE_RANGES, STRIDES
from .boxes import as_boxes
from .nms import batched_nms


def fcos_targets(boxes, labels, points, strides, size_ranges=SIZE_RANGES, level_strides=STRIDES):
    """(classes (L,) int64, -1 for background; boxes (L, 4) float32, the assigned xyxy box, 0 on
    background) for one image."""
    boxes = as_boxes(boxes).astype(np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n_loc = len(points)
    classes = np.full(n_loc, -1, dtype=np.int64)
    assigned = np.zeros((n_loc, 4), dtype=np.float32)
    if len(boxes) == 0:
        return classes, assigned
    x, y = points[:, 0:1].astype(np.float64), points[:, 1:2].astype(np.float64)
    ltrb = np.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], axis=2)  # (L, G, 4)
    inside = ltrb.min(axis=2) > 0
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    radius = CENTER_RADIUS * strides[:, None]
    central = (np.abs(x - cx) <= radius) & (np.abs(y - cy) <= radius)
    low = np.zeros(n_loc)
    high = np.zeros(n_loc)
    for s, (lo, hi) in zip(level_strides, size_ranges):
        low[strides == s], high[strides == s] = lo, hi
    largest = ltrb.max(axis=2)
    in_range = (largest > low[:, None]) & (largest <= high[:, None])
    ok = inside & central & in_range
    area = np.where(ok, ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None, :], np.inf)
    best = area.argmin(axis=1)
    positive = np.isfinite(area[np.arange(n_loc), best])
    classes[positive] = labels[best[positive]]
    assigned[positive] = boxes[best[positive]]
    return classes, assigned


def postprocess(outputs, points, strides, image_size, score_threshold=0.05, iou_threshold=0.5, max_detections=100,
                pre_nms_top_k=200):
    """Detections per image from raw outputs (N, L, K + 4) (a NumPy array or Tensor): sigmoid class
    scores, every (location, class) with score > score_threshold (the pre_nms_top_k best), boxes
    decoded (point -/+ stride * exp(r)) and clipped to the image, per-class NMS at iou_threshold,
    the max_detections best kept. Returns dicts {'boxes', 'scores', 'labels'} for `mean_average_precision`."""
    outputs = np.asarray(getattr(outputs, "data", outputs), dtype=np.float64)
    k = outputs.shape[2] - 4
    results = []
    for out in outputs:
        scores = 1.0 / (1.0 + np.exp(-out[:, :k]))
        loc, cls = np.nonzero(scores > score_threshold)
        s = scores[loc, cls]
        top = np.argsort(-s, kind="stable")[:pre_nms_top_k]
        loc, cls, s = loc[top], cls[top], s[top]
        d = np.exp(np.minimum(out[loc, k:], 8.0)) * strides[loc, None]
        p = points[loc].astype(np.float64)
        boxes = np.clip(np.stack([p[:, 0] - d[:, 0], p[:, 1] - d[:, 1], p[:, 0] + d[:, 2], p[:, 1] + d[:, 3]], 1),
                        0, image_size)
        keep = batched_nms(boxes, s, cls, iou_threshold)[:max_detections]
        results.append({"boxes": boxes[keep].astype(np.float32), "scores": s[keep].astype(np.float32),
                        "labels": cls[keep].astype(np.int64)})
    return results
