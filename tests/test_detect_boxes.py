"""Box operations and NMS against plain written references (loops over pairs, the greedy algorithm
as torchvision documents it) and torch's own ops where torch has them. torchvision itself cannot be
installed beside torch 2.13 here, so its documented semantics are written out below."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minicompress.detect import batched_nms, box_area, box_iou, decode_ltrb, encode_ltrb, nms


# ----- references ---------------------------------------------------------------------------------

def iou_reference(a, b):
    """One pair at a time, in Python floats: |a ∩ b| / (|a| + |b| - |a ∩ b|)."""
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = w * h
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union if union else float("nan")
    return out


def nms_reference(boxes, scores, threshold):
    """torchvision.ops.nms as documented: discard every box whose IoU with a kept, higher-scoring box
    is > threshold; indices by decreasing score."""
    remaining = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep = []
    while remaining:
        best = remaining.pop(0)
        keep.append(best)
        remaining = [i for i in remaining if not iou_reference(boxes[[best]], boxes[[i]])[0, 0] > threshold]
    return keep


def batched_nms_reference(boxes, scores, idxs, threshold):
    """torchvision's coordinate trick: shift each category's boxes past every other's, then one NMS."""
    if len(boxes) == 0:
        return []
    offsets = idxs[:, None] * (boxes.max() + 1.0)
    return nms_reference(boxes + offsets, scores, threshold)


@st.composite
def box_sets(draw, min_n=0, max_n=12, side=32):
    """Boxes with coordinates on a 1/4 grid (exact in float32, so IoU ties are decided the same way by
    every implementation), some of zero width or height, and distinct scores."""
    n = draw(st.integers(min_n, max_n))
    corner = st.integers(0, 4 * side)
    rows = []
    for _ in range(n):
        x1, y1 = draw(corner), draw(corner)
        w, h = draw(st.integers(0, 4 * side)), draw(st.integers(0, 4 * side))
        rows.append([x1, y1, x1 + w, y1 + h])
    boxes = np.array(rows, dtype=np.float32).reshape(n, 4) / 4
    scores = np.array(draw(st.lists(st.integers(0, 10 ** 6), min_size=n, max_size=n, unique=True)),
                      dtype=np.float32) / 10 ** 6
    return boxes, scores


# ----- box_iou, box_area --------------------------------------------------------------------------

@given(box_sets(), box_sets())
def test_box_iou_equals_the_pairwise_reference(first, second):
    a, b = first[0], second[0]
    got = box_iou(a, b)
    assert got.shape == (len(a), len(b)) and got.dtype == np.float32
    # float32 division of exact float32 areas: one rounding, so 1 ulp of the reference.
    np.testing.assert_allclose(got, iou_reference(a.astype(np.float64), b.astype(np.float64)), rtol=1.2e-7, atol=0)


@given(box_sets(min_n=1))
def test_box_area_equals_torch_product_of_sides(drawn):
    boxes = torch.from_numpy(drawn[0])
    expected = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).numpy()
    np.testing.assert_array_equal(box_area(drawn[0]), expected)


def test_box_iou_known_values_and_degenerate_boxes():
    np.testing.assert_allclose(box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2], [4, 4, 5, 5], [0, 0, 2, 2]]),
                               [[1 / 3, 0.0, 1.0]])
    # Two coinciding zero-area boxes: 0 / 0, NaN, as torchvision gives.
    assert np.isnan(box_iou([[1, 1, 1, 1]], [[1, 1, 1, 1]])[0, 0])
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 5)), r"boxes1 must have shape \(N, 4\)"),
    (np.zeros(4), r"boxes1 must have shape \(N, 4\)"),
    ([[0, 0, 1, np.nan]], "boxes1 must not hold NaN"),
    ([[2, 0, 1, 1]], r"boxes1 must have x1 <= x2"),
    ([[0, 2, 1, 1]], r"boxes1 must have x1 <= x2 and y1 <= y2; row 0"),
])
def test_box_iou_rejects_bad_boxes_naming_the_argument(bad, message):
    with pytest.raises(ValueError, match=message):
        box_iou(bad, [[0, 0, 1, 1]])


# ----- nms, batched_nms ---------------------------------------------------------------------------

@given(box_sets(), st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_nms_equals_the_greedy_reference(drawn, threshold):
    boxes, scores = drawn
    keep = nms(boxes, scores, threshold)
    assert keep.dtype == np.int64
    assert keep.tolist() == nms_reference(boxes.astype(np.float64), scores, threshold)


@given(box_sets(), st.data(), st.sampled_from([0.2, 0.5, 0.8]))
def test_batched_nms_equals_one_nms_over_shifted_boxes(drawn, data, threshold):
    boxes, scores = drawn
    idxs = np.array(data.draw(st.lists(st.integers(0, 3), min_size=len(boxes), max_size=len(boxes))), dtype=np.int64)
    keep = batched_nms(boxes, scores, idxs, threshold)
    assert keep.tolist() == batched_nms_reference(boxes.astype(np.float64), scores, idxs, threshold)


def test_nms_threshold_is_strict_and_scores_order_the_result():
    boxes = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [10, 10, 11, 11]], dtype=np.float32)  # IoU(0, 1) = 1/3
    scores = np.array([0.5, 0.9, 0.7], dtype=np.float32)
    assert nms(boxes, scores, 1 / 3).tolist() == [1, 2, 0]   # IoU equal to the threshold: kept
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    assert batched_nms(boxes, scores, np.array([0, 1, 0]), 0.3).tolist() == [1, 2, 0]  # other class survives


@pytest.mark.parametrize("call, message", [
    (lambda: nms([[0, 0, 1, 1]], [0.5, 0.4], 0.5), "one entry per box: 1 boxes but 2 scores"),
    (lambda: nms([[0, 0, 1, 1]], [0.5], 1.5), r"iou_threshold must be a number in \[0, 1\], got 1.5"),
    (lambda: nms([[0, 0, 1, 1]], [0.5], -0.1), "iou_threshold"),
    (lambda: nms([[0, 0, 1, 1]], [np.nan], 0.5), "scores must not hold NaN"),
    (lambda: nms([[0, 0, 1]], [0.5], 0.5), r"boxes must have shape \(N, 4\)"),
    (lambda: batched_nms([[0, 0, 1, 1]], [0.5], [0.5], 0.5), "idxs must be a 1-D integer array"),
])
def test_nms_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----- encoding ------------------------------------------------------------------------------------

@given(box_sets(min_n=1), st.sampled_from([1, 4, 8]))
def test_ltrb_decoding_inverts_encoding_for_points_inside_the_box(drawn, stride):
    boxes = drawn[0].astype(np.float64)
    points = (boxes[:, :2] + boxes[:, 2:]) / 2
    distances = encode_ltrb(points, boxes, stride)
    # Written out from FCOS's definition, in torch.
    p, b = torch.from_numpy(points), torch.from_numpy(boxes)
    expected = torch.stack([p[:, 0] - b[:, 0], p[:, 1] - b[:, 1], b[:, 2] - p[:, 0], b[:, 3] - p[:, 1]], 1) / stride
    np.testing.assert_array_equal(distances, expected.numpy())
    np.testing.assert_allclose(decode_ltrb(points, distances, stride), boxes, rtol=0, atol=1e-12)


def test_decode_rejects_negative_distances():
    with pytest.raises(ValueError, match="distances must be non-negative"):
        decode_ltrb([[0.0, 0.0]], [[-1.0, 0, 0, 0]])
    with pytest.raises(ValueError, match="stride must be a number > 0"):
        encode_ltrb([[0.0, 0.0]], [[0, 0, 1, 1]], stride=0)
