"""Box operations in the (x1, y1, x2, y2) convention of `torchvision.ops`: areas, pairwise IoU, and the
encoding of a box as distances from a point, which the anchor-free head regresses.

    box_area(b)         = (x2 - x1) * (y2 - y1)
    box_iou(a, b)[i, j] = |a_i ∩ b_j| / (area(a_i) + area(b_j) - |a_i ∩ b_j|)

as `torchvision.ops.box_area` / `box_iou`: two boxes of zero area that coincide have a union of 0 and an
IoU of 0/0 = NaN there too. Boxes are NumPy arrays (or anything `np.asarray` reads, Tensors included)
of shape (N, 4) with x1 <= x2 and y1 <= y2; integer boxes are computed in float64.

FCOS encoding (Tian et al., 2019, "FCOS: Fully Convolutional One-Stage Object Detection"): a point
(px, py) inside a box on a feature level of stride s regresses its distances to the four sides,

    encode:  (l, t, r, b) = (px - x1, py - y1, x2 - px, y2 - py) / s
    decode:  (x1, y1, x2, y2) = (px - s l, py - s t, px + s r, py + s b)

so decode(encode(box)) == box up to rounding, and any non-negative distances decode to a valid box.
"""
import numpy as np


def as_boxes(boxes, name="boxes"):
    """`boxes` as a float array of shape (N, 4), checked: no NaN, x1 <= x2 and y1 <= y2.

    Float32 and float64 keep their dtype; other numbers become float64.

    Raises:
        ValueError: not (N, 4), a NaN coordinate, or x2 < x1 / y2 < y1 (the message names `name`,
            the first bad row and its values).
    """
    array = np.asarray(boxes)
    if array.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold numbers, got dtype {array.dtype}")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) (x1, y1, x2, y2), got {array.shape}")
    nan = np.isnan(array).any(axis=1)
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        raise ValueError(f"{name} must not hold NaN coordinates; row {i} is {array[i].tolist()}")
    flipped = (array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1])
    if flipped.any():
        i = int(np.flatnonzero(flipped)[0])
        raise ValueError(f"{name} must have x1 <= x2 and y1 <= y2; row {i} is {array[i].tolist()}")
    return array


def box_area(boxes):
    """(N,) areas of (N, 4) xyxy boxes, as `torchvision.ops.box_area`."""
    boxes = as_boxes(boxes)
    return _area(boxes)


def _area(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1, boxes2):
    """(N, M) pairwise intersection over union of (N, 4) and (M, 4) xyxy boxes, as
    `torchvision.ops.box_iou`; float64 if either side is, float32 otherwise.

    Example:
        >>> box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2], [4, 4, 5, 5]])
        array([[0.33333333, 0.        ]])
    """
    a, b = as_boxes(boxes1, "boxes1"), as_boxes(boxes2, "boxes2")
    return _iou(a, b)


def _iou(a, b):
    """box_iou of checked boxes: the kernel the NMS and the head share."""
    dtype = np.result_type(a.dtype, b.dtype)
    a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def encode_ltrb(points, boxes, stride=1.0):
    """FCOS regression targets: (N, 4) distances (l, t, r, b) / stride from (N, 2) points (x, y) to
    the sides of their (N, 4) xyxy boxes. A point outside its box gets a negative distance."""
    points, boxes = _points(points), as_boxes(boxes)
    _check_same_length(points, boxes, "points", "boxes")
    stride = _stride(stride)
    px, py = points[:, 0], points[:, 1]
    return np.stack([px - boxes[:, 0], py - boxes[:, 1], boxes[:, 2] - px, boxes[:, 3] - py], axis=1) / stride


def decode_ltrb(points, distances, stride=1.0):
    """The inverse of `encode_ltrb`: (N, 4) xyxy boxes from (N, 2) points and (N, 4) distances
    (l, t, r, b) in units of `stride`. Distances must be >= 0 (the head's outputs are)."""
    points = _points(points)
    distances = np.asarray(distances)
    if distances.ndim != 2 or distances.shape[1] != 4:
        raise ValueError(f"distances must have shape (N, 4) (l, t, r, b), got {distances.shape}")
    _check_same_length(points, distances, "points", "distances")
    if np.isnan(distances).any() or (distances < 0).any():
        raise ValueError("distances must be non-negative numbers (no NaN)")
    stride = _stride(stride)
    d = distances * stride
    px, py = points[:, 0], points[:, 1]
    return np.stack([px - d[:, 0], py - d[:, 1], px + d[:, 2], py + d[:, 3]], axis=1)


def _points(points):
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2 or points.dtype.kind not in "fiu":
        raise ValueError(f"points must be a numeric array of shape (N, 2) (x, y), got {points.shape} {points.dtype}")
    return points


def _check_same_length(a, b, name_a, name_b):
    if len(a) != len(b):
        raise ValueError(f"{name_a} and {name_b} must have the same length, got {len(a)} and {len(b)}")


def _stride(stride):
    if isinstance(stride, bool) or not isinstance(stride, (int, float, np.integer, np.floating)) or not stride > 0:
        raise ValueError(f"stride must be a number > 0, got {stride!r}")
    return float(stride)
