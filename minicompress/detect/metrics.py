"""COCO mean average precision, computed as pycocotools' `COCOeval` computes it (bounding boxes, area
range 'all', at most 100 detections per image and category), with torchmetrics' input format.

    preds   = [{"boxes": (D, 4) xyxy, "scores": (D,), "labels": (D,) int}, ...]   one dict per image
    targets = [{"boxes": (G, 4) xyxy, "labels": (G,) int}, ...]                    same images, same order
    mean_average_precision(preds, targets)  ->  {"map": ..., "map_50": ..., "map_75": ...}

For each IoU threshold t and each class c (Lin et al., 2014, and `COCOeval.evaluateImg` / `accumulate`):

1. Match, image by image: detections of class c by decreasing score (ties in input order, at most
   100) each take the still unmatched ground-truth box of class c with the highest IoU, if that IoU
   is >= t (a later box of equal IoU wins, as in COCOeval's loop).
2. Pool the detections of all images, sort by decreasing score (stable, images in order), and take
   the cumulative precision p_k = TP_k / (TP_k + FP_k + eps) and recall r_k = TP_k / G_c, with G_c
   the class's ground-truth count.
3. Make precision non-increasing from the right (p_k = max over j >= k of p_j) and read it at the 101
   recall points 0, 0.01, ..., 1: the first k with r_k >= r, or 0 when recall never reaches r.

AP(t, c) is the mean of the 101 values; classes without ground truth are left out (COCOeval keeps
them at -1 and averages only values > -1). 'map' averages over t in 0.50:0.05:0.95 and c, 'map_50'
and 'map_75' over c at that one threshold; a value with nothing to average is -1, as in COCOeval.

IoU is computed as pycocotools' C code does (from x, y, w, h in float64, 0 when the boxes do not
overlap), so a detection exactly at a threshold is matched or not exactly as there. Ground-truth and
detections of area > 1e10 fall outside COCO's 'all' range and are ignored, as there.
"""
import numpy as np

from .boxes import as_boxes
from .nms import _validate_threshold

MAX_DETECTIONS = 100
AREA_RANGE_ALL = (0.0, 1e5 ** 2)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
# The same expression as COCOeval's Params, so 0.75 (and every other threshold) is the same float.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)


# ----- input -------------------------------------------------------------------------------------

def _labels(value, n, name):
    labels = np.asarray(value)
    if labels.ndim == 0 or (labels.ndim == 1 and labels.size == 0):
        labels = labels.reshape(-1)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"{name} must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    if len(labels) != n:
        raise ValueError(f"{name} must have one entry per box: {n} boxes but {len(labels)} labels")
    return labels.astype(np.int64)


def _validate_images(preds, targets):
    """Checked copies: lists of (boxes float64, scores, labels) and (boxes, labels)."""
    for name, value in (("preds", preds), ("targets", targets)):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be a list with one dict per image, got {type(value).__name__}")
    if len(preds) != len(targets):
        raise ValueError(f"preds and targets must describe the same images: {len(preds)} preds, "
                         f"{len(targets)} targets")
    checked_preds, checked_targets = [], []
    for i, (pred, target) in enumerate(zip(preds, targets)):
        for name, value, keys in ((f"preds[{i}]", pred, ("boxes", "scores", "labels")),
                                  (f"targets[{i}]", target, ("boxes", "labels"))):
            if not isinstance(value, dict) or any(k not in value for k in keys):
                raise ValueError(f"{name} must be a dict with keys {keys}, got "
                                 f"{sorted(value) if isinstance(value, dict) else type(value).__name__}")
        boxes = as_boxes(pred["boxes"], f"preds[{i}]['boxes']").astype(np.float64)
        scores = np.asarray(pred["scores"]).reshape(-1) if np.ndim(pred["scores"]) == 0 else np.asarray(pred["scores"])
        if scores.ndim != 1 or len(scores) != len(boxes) or (scores.size and scores.dtype.kind not in "fiu"):
            raise ValueError(f"preds[{i}]['scores'] must be a 1-D numeric array with one score per box: "
                             f"{len(boxes)} boxes, scores of shape {scores.shape}")
        if np.isnan(scores.astype(np.float64)).any():
            raise ValueError(f"preds[{i}]['scores'] must not hold NaN")
        labels = _labels(pred["labels"], len(boxes), f"preds[{i}]['labels']")
        checked_preds.append((boxes, scores.astype(np.float64), labels))
        boxes = as_boxes(target["boxes"], f"targets[{i}]['boxes']").astype(np.float64)
        checked_targets.append((boxes, _labels(target["labels"], len(boxes), f"targets[{i}]['labels']")))
    return checked_preds, checked_targets


def _validate_iou_thresholds(iou_thresholds):
    if iou_thresholds is None:
        return COCO_IOU_THRESHOLDS
    values = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("iou_thresholds must hold at least one threshold")
    for value in values:
        _validate_threshold(float(value), "iou_thresholds")
    return values


# ----- one image, one class ----------------------------------------------------------------------

def coco_iou(detections, ground_truth):
    """(D, G) IoU as pycocotools' `bbIou` computes it from (x, y, w, h): 0 without overlap."""
    d = np.concatenate([detections[:, :2], detections[:, 2:] - detections[:, :2]], axis=1)
    g = np.concatenate([ground_truth[:, :2], ground_truth[:, 2:] - ground_truth[:, :2]], axis=1)
    w = np.minimum(d[:, None, 2] + d[:, None, 0], g[None, :, 2] + g[None, :, 0]) - np.maximum(d[:, None, 0], g[None, :, 0])
    h = np.minimum(d[:, None, 3] + d[:, None, 1], g[None, :, 3] + g[None, :, 1]) - np.maximum(d[:, None, 1], g[None, :, 1])
    overlap = (w > 0) & (h > 0)
    inter = np.where(overlap, w * h, 0.0)
    union = (d[:, 2] * d[:, 3])[:, None] + (g[:, 2] * g[:, 3])[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def _xywh_area(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _match(det_boxes, gt_boxes, thresholds):
    """COCOeval.evaluateImg for one image and class, detections already sorted and truncated.
    Returns (matched (T, D) bool, ignored (T, D) bool, gt_ignored (G,) bool)."""
    low, high = AREA_RANGE_ALL
    gt_area = _xywh_area(gt_boxes)
    gt_ignored = (gt_area < low) | (gt_area > high)
    order = np.argsort(gt_ignored, kind="mergesort")  # ignored ground truth last
    gt_boxes, gt_ignored = gt_boxes[order], gt_ignored[order]
    n_t, n_d, n_g = len(thresholds), len(det_boxes), len(gt_boxes)
    matched = np.zeros((n_t, n_d), dtype=bool)
    ignored = np.zeros((n_t, n_d), dtype=bool)
    if n_d and n_g:
        ious = coco_iou(det_boxes, gt_boxes)
        for ti, t in enumerate(thresholds):
            taken = np.zeros(n_g, dtype=bool)
            for di in range(n_d):
                best, m = min(t, 1 - 1e-10), -1
                for gi in range(n_g):
                    if taken[gi]:
                        continue
                    if m > -1 and not gt_ignored[m] and gt_ignored[gi]:
                        break
                    if ious[di, gi] < best:
                        continue
                    best, m = ious[di, gi], gi
                if m > -1:
                    matched[ti, di], ignored[ti, di], taken[m] = True, gt_ignored[m], True
    det_area = _xywh_area(det_boxes)
    outside = (det_area < low) | (det_area > high)
    ignored |= ~matched & outside[None, :]
    return matched, ignored, gt_ignored


# ----- the metric --------------------------------------------------------------------------------

def _precision_at_recalls(matched, ignored, n_gt):
    """COCOeval.accumulate for one threshold: 101 interpolated precisions."""
    tp = np.cumsum(matched & ~ignored).astype(float)
    fp = np.cumsum(~matched & ~ignored).astype(float)
    recall = tp / n_gt
    precision = tp / (fp + tp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    at = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    reached = at < len(precision)
    out = np.zeros(len(RECALL_THRESHOLDS))
    out[reached] = precision[at[reached]]
    return out


def average_precision_table(preds, targets, iou_thresholds=None):
    """(classes, precision) with precision of shape (T, 101, K): COCOeval's `eval['precision']` for
    area 'all' and 100 detections, -1 for classes without ground truth. Same arguments as
    `mean_average_precision`."""
    thresholds = _validate_iou_thresholds(iou_thresholds)
    preds, targets = _validate_images(preds, targets)
    classes = np.unique(np.concatenate([labels for _, labels in targets] + [np.zeros(0, np.int64)]))
    precision = -np.ones((len(thresholds), len(RECALL_THRESHOLDS), len(classes)))
    for k, c in enumerate(classes):
        scores, matched, ignored, n_gt = [], [], [], 0
        for (boxes, det_scores, det_labels), (gt_boxes, gt_labels) in zip(preds, targets):
            det = np.flatnonzero(det_labels == c)
            det = det[np.argsort(-det_scores[det], kind="mergesort")][:MAX_DETECTIONS]
            gt = gt_boxes[gt_labels == c]
            if len(det) == 0 and len(gt) == 0:
                continue
            m, ig, gt_ignored = _match(boxes[det], gt, thresholds)
            scores.append(det_scores[det])
            matched.append(m)
            ignored.append(ig)
            n_gt += int((~gt_ignored).sum())
        if n_gt == 0:
            continue
        order = np.argsort(-np.concatenate(scores), kind="mergesort")
        matched = np.concatenate(matched, axis=1)[:, order]
        ignored = np.concatenate(ignored, axis=1)[:, order]
        for ti in range(len(thresholds)):
            precision[ti, :, k] = _precision_at_recalls(matched[ti], ignored[ti], n_gt)
    return classes, precision


def _mean_valid(values):
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def mean_average_precision(preds, targets, iou_thresholds=None):
    """COCO mAP of box detections: {'map', 'map_50', 'map_75'} as floats, equal to pycocotools'
    COCOeval (stats[0], stats[1], stats[2]) on the same data; see the module docstring.

    Args:
        preds: one dict per image with 'boxes' (D, 4) xyxy, 'scores' (D,), 'labels' (D,) integers.
        targets: one dict per image with 'boxes' (G, 4) xyxy and 'labels' (G,) integers.
        iou_thresholds: the thresholds 'map' averages over, each in [0, 1]; default COCO's
            0.50:0.05:0.95. 'map_50' / 'map_75' are -1 when 0.5 / 0.75 is not among them.

    Raises:
        TypeError: preds or targets is not a list.
        ValueError: lists of different lengths, a missing key, boxes not (N, 4), NaN coordinates,
            x2 < x1 or y2 < y1, scores or labels of another length than the boxes, non-integer
            labels, or a threshold outside [0, 1]. The message names the image and the field.

    Example:
        >>> result = mean_average_precision([{"boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [3]}],
        ...                                 [{"boxes": [[0, 0, 10, 10]], "labels": [3]}])
        >>> round(result["map"], 6)   # 1 - 2e-16: COCOeval's precision tp / (tp + fp + eps)
        1.0
    """
    thresholds = _validate_iou_thresholds(iou_thresholds)
    _, precision = average_precision_table(preds, targets, thresholds)
    result = {"map": _mean_valid(precision)}
    for key, t in (("map_50", 0.5), ("map_75", 0.75)):
        result[key] = _mean_valid(precision[np.where(t == thresholds)[0]])
    return result
