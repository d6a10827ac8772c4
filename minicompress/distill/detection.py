"""Distillation for the FCOS detector: the student learns from a frozen teacher detector's class maps,
neck features and boxes, on top of its own detection loss.

    total = task + kd_weight * class_kd + feature_weight * feature + box_weight * box_kd

task      the FCOS loss against the ground truth (`detect.fcos_loss`).
class_kd  temperature-scaled KD on the class maps. The head's classes are independent sigmoids, so
          the softened teacher target of every (location, class) is q = sigmoid(t / T), and the term
          is the Bernoulli KL divergence to the softened student p = sigmoid(s / T), times T^2 (the
          factor of Hinton et al. that keeps the gradient's scale as T grows):
              class_kd = T^2 * sum over locations and classes of KL(q || p) / (N * L)
              KL(q || p) = ce(s / T, q) - ce(t / T, q),   ce(x, q) = BCE with logits, soft target q
          (the subtracted entropy of q makes the term 0 when the maps agree; it has no gradient).
          With kd_weighting='confidence' each location's KL (summed over classes) is weighted by the
          teacher's confidence there, w = max_c sigmoid(t_c), and the sum divided by sum(w) instead
          of N * L: the thousands of background locations, where both maps say "nothing" and the
          KL only pulls the student towards the teacher's noise, stop drowning the few objects
          (the foreground weighting of detection KD, e.g. Zheng et al., 2022, LD; Yang et al., 2022).
feature   FitNets-style imitation of the neck outputs (P3, P4) through `FeatureDistillation`'s
          1x1 adapters: sum over levels of mse(adapter(student P_l), teacher P_l).
box_kd    the student's decoded boxes imitate the teacher's (GIoU loss, `generalized_box_iou_loss`)
          where the teacher is confident: locations whose highest teacher class score is above
          `box_score_threshold`; zero when there are none.
"""
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from ..autograd import no_grad
from ..detect.losses import (binary_cross_entropy_with_logits, decode_outputs, fcos_loss,
                             generalized_box_iou_loss)
from ..nn.module import Module
from ..optim import Adam, CosineAnnealingLR
from ..tensor import Tensor
from .feature import FeatureDistillation
from .losses import _validate_temperature, attach_teacher_and_student

NECK_PAIRS = (("neck.smooth.0", "neck.smooth.0"), ("neck.smooth.1", "neck.smooth.1"))


class DetectionDistillationLosses(NamedTuple):
    total: Tensor
    task: Tensor
    class_kd: Tensor
    feature: Tensor
    box_kd: Tensor


KD_WEIGHTINGS = ("uniform", "confidence")


def class_map_distillation(student_logits, teacher_logits, temperature=2.0, weighting="uniform"):
    """T^2 * mean over (N, L) of the summed Bernoulli KL(sigmoid(t/T) || sigmoid(s/T)) over classes;
    logits (N, L, K) Tensors, the teacher's without a graph. weighting='confidence' takes the mean
    with weights max_c sigmoid(t) per location (module docstring)."""
    temperature = _validate_temperature(temperature)
    if weighting not in KD_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {KD_WEIGHTINGS}, got {weighting!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits {student_logits.shape} and teacher_logits {teacher_logits.shape} "
                         f"must have the same shape")
    t = teacher_logits.data / temperature
    q = Tensor((1.0 / (1.0 + np.exp(-t))).astype(student_logits.dtype))
    entropy = binary_cross_entropy_with_logits(Tensor(t.astype(student_logits.dtype)), q)
    kl = binary_cross_entropy_with_logits(student_logits / temperature, q) - entropy
    if weighting == "confidence":
        w = 1.0 / (1.0 + np.exp(-teacher_logits.data.max(axis=-1, keepdims=True).astype(np.float64)))
        return (kl * Tensor((w * (temperature ** 2 / w.sum())).astype(student_logits.dtype))).sum()
    n, n_loc = student_logits.shape[:2]
    return kl.sum() * (temperature ** 2 / (n * n_loc))


class DetectionDistillation(Module):
    """A frozen teacher detector and a trainable student detector under the loss of the module docstring.

    `forward(x, classes, boxes)` returns `DetectionDistillationLosses(total, task, class_kd, feature,
    box_kd)`. With `feature_weight > 0` the neck features are paired by `FeatureDistillation` (its
    adapters are submodules here: `parameters()` yields the student's, then the adapters').
    Pass `sample_input` so the adapters exist before the optimizer is made.
    """

    def __init__(self, teacher, student, temperature=2.0, kd_weight=1.0, feature_weight=1.0, box_weight=1.0,
                 box_score_threshold=0.5, kd_weighting="uniform", sample_input=None):
        super().__init__()
        attach_teacher_and_student(self, teacher, student)
        self.temperature = _validate_temperature(temperature)
        for name, value in (("kd_weight", kd_weight), ("feature_weight", feature_weight), ("box_weight", box_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        self.kd_weight, self.feature_weight, self.box_weight = float(kd_weight), float(feature_weight), float(box_weight)
        self.box_score_threshold = float(box_score_threshold)
        if kd_weighting not in KD_WEIGHTINGS:
            raise ValueError(f"kd_weighting must be one of {KD_WEIGHTINGS}, got {kd_weighting!r}")
        self.kd_weighting = kd_weighting
        self.features = (FeatureDistillation(teacher, student, list(NECK_PAIRS), sample_input=sample_input)
                         if feature_weight > 0 else None)

    def _outputs(self, x):
        if self.features is not None:
            return self.features(x)
        self.teacher.eval()
        with no_grad():
            teacher_output = self.teacher(x)
        zero = Tensor(np.zeros((), np.float32))
        return zero, self.student(x), teacher_output

    def forward(self, x, classes, boxes):
        feature, student_out, teacher_out = self._outputs(x)
        points, strides = self.student.locations()
        k = self.student.num_classes
        task, _, _ = fcos_loss(student_out, classes, boxes, points, strides)
        zero = student_out.sum() * 0.0
        class_kd = (class_map_distillation(student_out[..., :k], teacher_out[..., :k].detach(), self.temperature,
                                           self.kd_weighting)
                    if self.kd_weight else zero)
        box_kd = zero
        if self.box_weight:
            confident = np.nonzero(1.0 / (1.0 + np.exp(-teacher_out.data[..., :k].max(-1))) > self.box_score_threshold)
            if len(confident[0]):
                teacher_boxes = decode_outputs(teacher_out[..., k:].detach(), points, strides).data[confident]
                student_boxes = decode_outputs(student_out[..., k:], points, strides)[confident]
                box_kd = generalized_box_iou_loss(student_boxes, Tensor(teacher_boxes), reduction="mean")
        feature = feature if self.features is not None else zero
        total = task + class_kd * self.kd_weight + feature * self.feature_weight + box_kd * self.box_weight
        return DetectionDistillationLosses(total, task, class_kd, feature, box_kd)

    def extra_repr(self):
        return (f"temperature={self.temperature}, kd_weight={self.kd_weight}, feature_weight={self.feature_weight}, "
                f"box_weight={self.box_weight}, kd_weighting={self.kd_weighting!r}")


def train_detector_with_distillation(teacher, student, loader, epochs, lr=3e-3, progress=False, log=None, **weights):
    """Train `student` for `epochs` passes of a `detect.scene_loader` under `DetectionDistillation(teacher,
    student, **weights)`, Adam with a cosine schedule; returns per-epoch mean losses."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    sample = next(iter(loader))[0]
    kd = DetectionDistillation(teacher, student, sample_input=sample, **weights)
    optimizer = Adam(kd.parameters(), lr=lr)
    schedule = CosineAnnealingLR(optimizer, T_max=epochs)
    history = []
    for epoch in range(1, epochs + 1):
        kd.train()
        sums = dict.fromkeys(DetectionDistillationLosses._fields, 0.0)
        seen = 0
        for x, classes, boxes in tqdm(loader, desc=f"distill {epoch}/{epochs}", disable=not progress, leave=False):
            optimizer.zero_grad()
            losses = kd(x, classes, boxes)
            losses.total.backward()
            optimizer.step()
            for key, value in losses._asdict().items():
                sums[key] += value.item() * len(x)
            seen += len(x)
        schedule.step()
        history.append({"epoch": epoch, **{k: v / seen for k, v in sums.items()}})
        if log is not None:
            log("epoch {epoch:3d}  total {total:.4f}  task {task:.4f}  class_kd {class_kd:.4f}  feature {feature:.4f}  "
                "box_kd {box_kd:.4f}".format(**history[-1]))
    return history
