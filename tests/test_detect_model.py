"""The detector, its losses and its targets: forward and every gradient against torch twins
(tests/torch_detector_twin.py: the model with the same state_dict keys, and torchvision's
sigmoid_focal_loss and generalized_box_iou_loss written out line for line)."""
import numpy as np
import pytest
import torch
from harness import check_op, to_torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays
from torch_detector_twin import Detector as TorchDetector
from torch_detector_twin import generalized_box_iou_loss as torch_giou
from torch_detector_twin import sigmoid_focal_loss as torch_focal
from torch_twins import load_into

import minicompress as mc
from minicompress.detect import (encode_ltrb, fcos_loss, fcos_targets, generalized_box_iou_loss,
                                 postprocess, sigmoid_focal_loss)
from minicompress.models import create_detector, feature_locations
from minicompress.nn import Upsample


@given(arrays((3, 5), np.float64, -6, 6), st.integers(0, 2 ** 15 - 1), st.sampled_from([0.0, 1.0, 2.0]),
       st.sampled_from([0.25, -1.0]), st.sampled_from(["none", "sum", "mean"]))
def test_sigmoid_focal_loss_equals_torchvision(logits, bits, gamma, alpha, reduction):
    targets = np.array([(bits >> i) & 1 for i in range(15)], dtype=np.float64).reshape(3, 5)
    check_op(lambda x, t: sigmoid_focal_loss(x, t, alpha, gamma, reduction),
             lambda x, t: torch_focal(x, t, alpha, gamma, reduction), [logits, targets], nondiff=(1,))


@st.composite
def box_pairs(draw, n=6):
    """float64 boxes with continuous corners, so no two coordinates tie (at a tie min/max split the
    gradient differently in the two frameworks' formulations)."""
    corners = draw(arrays((2, n, 2), np.float64, 0, 20))
    sides = draw(arrays((2, n, 2), np.float64, 0.5, 15))
    boxes = np.concatenate([corners, corners + sides], axis=2)
    return boxes[0], boxes[1]


@given(box_pairs(), st.sampled_from(["none", "mean"]))
def test_generalized_box_iou_loss_equals_torchvision(pair, reduction):
    check_op(lambda a, b: generalized_box_iou_loss(a, b, reduction), lambda a, b: torch_giou(a, b, reduction),
             list(pair))


def test_giou_loss_known_values():
    a = mc.tensor(np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1]], dtype=np.float64))
    b = mc.tensor(np.array([[0, 0, 2, 2], [1, 0, 3, 2], [2, 0, 3, 1]], dtype=np.float64))
    # identical: 0; IoU 1/3 inside an enclosing box equal to the union: 2/3; apart, enclosing 3 vs union 2: 1 + 1/3
    np.testing.assert_allclose(generalized_box_iou_loss(a, b).data, [0, 2 / 3, 4 / 3], rtol=1e-6, atol=1e-7)  # eps=1e-7


@given(arrays((2, 3, 4, 4), np.float64))
def test_upsample_equals_torch_interpolate_nearest(x):
    check_op(lambda t: Upsample(2)(t), lambda t: torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest"),
             [x])


@pytest.fixture(scope="module")
def twins():
    torch.manual_seed(0)
    reference = TorchDetector().double()
    for m in reference.modules():   # non-trivial batch-norm statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model = create_detector(image_size=32)
    # The comparison runs in float64 (parameters and batch-norm statistics): the point is the computation.
    for _, value in list(model.named_parameters()) + list(model.named_buffers()):
        if value.data.dtype == np.float32:
            value.data = value.data.astype(np.float64)
    load_into(model, reference)
    return model, reference


@pytest.mark.parametrize("training", [False, True])
def test_detector_forward_and_gradients_equal_the_torch_twin(twins, training):
    model, reference = twins
    model.train(training)
    reference.train(training)
    x = np.random.default_rng(1).random((2, 1, 32, 32))
    params = dict(model.named_parameters())
    out = model(mc.tensor(x))
    expected = reference(to_torch(x))
    assert out.shape == (2, 8 * 8 + 4 * 4, 14)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-9, atol=1e-10)
    upstream = np.random.default_rng(2).standard_normal(out.shape)
    model.zero_grad()
    out.backward(upstream)
    reference.zero_grad()
    expected.backward(torch.from_numpy(upstream))
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(params[name].grad.data, p.grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=name)


def test_fcos_targets_assign_central_locations_to_the_smaller_box():
    points, strides = feature_locations(32)
    boxes = np.array([[0, 0, 12, 12], [2, 2, 8, 8], [16, 16, 32, 32]], dtype=np.float32)
    classes, assigned = fcos_targets(boxes, [1, 2, 3], points, strides)
    p3 = strides == 4
    # (6, 6) lies in boxes 0 and 1: the smaller (class 2) wins; its largest side distance 2 <= 8 -> P3
    at = np.flatnonzero(p3 & (points[:, 0] == 6) & (points[:, 1] == 6))[0]
    assert classes[at] == 2 and assigned[at].tolist() == [2, 2, 8, 8]
    # the 16-px box has side distances up to 12 > 8 at its centre: assigned on P4 only
    assert set(classes[~p3].tolist()) >= {3} and 3 not in classes[p3].tolist()
    assert (classes == -1).sum() > 0 and (assigned[classes == -1] == 0).all()


def test_fcos_loss_of_perfect_outputs_is_small_and_postprocess_recovers_the_boxes():
    points, strides = feature_locations(32)
    boxes = np.array([[2, 2, 14, 14], [16, 12, 30, 30]], dtype=np.float32)
    classes, assigned = fcos_targets(boxes, [4, 7], points, strides)
    outputs = np.full((1, len(points), 14), -9.0, dtype=np.float32)
    positive = classes >= 0
    outputs[0, positive, classes[positive]] = 9.0
    distances = encode_ltrb(points[positive], assigned[positive], 1.0) / strides[positive, None]
    outputs[0, positive, 10:] = np.log(distances)
    total, cls_loss, box_loss = fcos_loss(mc.tensor(outputs), classes[None], assigned[None], points, strides)
    assert cls_loss.item() < 1e-4 and box_loss.item() < 1e-5
    detections = postprocess(outputs, points, strides, 32)[0]
    assert sorted(detections["labels"].tolist()) == [4, 7]
    np.testing.assert_allclose(np.sort(detections["boxes"], axis=0), np.sort(boxes, axis=0), atol=1e-4)
