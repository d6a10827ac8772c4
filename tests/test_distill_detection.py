"""Detection distillation: the class-map KD term against its torch formula, and the combined loss's parts."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from harness import check_op
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays

import minicompress as mc
from minicompress.data import load_digit_scenes
from minicompress.detect import scene_loader
from minicompress.distill import DetectionDistillation, class_map_distillation
from minicompress.models import Detector


def torch_class_map_distillation(s, t, temperature):
    q = torch.sigmoid(t / temperature)
    kl = (TF.binary_cross_entropy_with_logits(s / temperature, q, reduction="none")
          - TF.binary_cross_entropy_with_logits(t / temperature, q, reduction="none"))
    return kl.sum() * temperature ** 2 / (s.shape[0] * s.shape[1])


def torch_confidence_weighted_distillation(s, t, temperature):
    q = torch.sigmoid(t / temperature)
    kl = (TF.binary_cross_entropy_with_logits(s / temperature, q, reduction="none")
          - TF.binary_cross_entropy_with_logits(t / temperature, q, reduction="none")).sum(-1)
    w = torch.sigmoid(t).amax(-1)
    return (w * kl).sum() / w.sum() * temperature ** 2


@given(arrays((2, 5, 3), np.float64, -5, 5), arrays((2, 5, 3), np.float64, -5, 5), st.sampled_from([1.0, 2.0, 4.0]))
def test_class_map_distillation_equals_the_torch_formula(student, teacher, temperature):
    check_op(lambda s, t: class_map_distillation(s, t, temperature),
             lambda s, t: torch_class_map_distillation(s, t, temperature), [student, teacher], nondiff=(1,))


@given(arrays((2, 5, 3), np.float64, -5, 5), arrays((2, 5, 3), np.float64, -5, 5), st.sampled_from([1.0, 2.0, 4.0]))
def test_confidence_weighted_class_map_distillation_equals_the_torch_formula(student, teacher, temperature):
    check_op(lambda s, t: class_map_distillation(s, t, temperature, weighting="confidence"),
             lambda s, t: torch_confidence_weighted_distillation(s, t, temperature), [student, teacher], nondiff=(1,))


def test_class_map_distillation_rejects_an_unknown_weighting():
    logits = mc.tensor(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="weighting"):
        class_map_distillation(logits, logits, 2.0, weighting="foreground")


def test_class_map_distillation_is_zero_when_the_maps_agree():
    logits = mc.tensor(np.random.default_rng(0).normal(size=(2, 7, 4)))
    assert abs(class_map_distillation(logits, logits, 3.0).item()) < 1e-12


def test_every_part_of_the_detection_distillation_loss_reaches_the_student():
    mc.manual_seed(0)
    train, _ = load_digit_scenes(8, image_size=32, seed=0, test_fraction=0.25)
    teacher, student = Detector(image_size=32, width_mult=2.0), Detector(image_size=32)
    x, classes, boxes = next(iter(scene_loader(student, train, batch_size=6)))
    # box_score_threshold 0: every location counts as confident, so the box term is exercised.
    kd = DetectionDistillation(teacher, student, box_score_threshold=0.0, sample_input=x)
    losses = kd(x, classes, boxes)
    assert all(np.isfinite(v.item()) and v.item() > 0 for v in losses)
    expected = losses.task.item() + losses.class_kd.item() + losses.feature.item() + losses.box_kd.item()
    assert abs(losses.total.item() - expected) < 1e-5 * expected
    losses.total.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is not None for p in kd.features.adapters.parameters())
    assert len(list(kd.parameters())) == len(list(student.parameters())) + len(list(kd.features.adapters.parameters()))
