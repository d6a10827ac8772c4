"""The knowledge-distillation loss of Hinton, Vinyals and Dean (2015), "Distilling the Knowledge in
a Neural Network", and the module that applies it to a frozen teacher and a trainable student.

A teacher's logits soften into a distribution over classes at temperature T:

    p_T(z) = softmax(z / T)

A high T spreads the probability mass, so the student also learns how the teacher ranks the wrong
classes ("a 7 looks more like a 1 than like a 0"), which hard labels cannot tell it. The student
matches those soft targets by KL divergence, mixed with ordinary cross-entropy on the labels:

    distillation = KL(p_T(teacher) || p_T(student)) * T^2
    total        = alpha * distillation + (1 - alpha) * cross_entropy(student, labels)

The T^2 factor keeps the gradient of the soft term on the scale of the hard one: d/dz of the KL
term shrinks as 1/T^2 (Hinton et al., section 2), so without it raising T would silently turn
the distillation term down.

Written from the ops of `functional.py` exactly as one writes it in torch,

    F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1), reduction="batchmean") * T**2

so its value and gradients equal torch's composition of the same ops (the tests check both).
"""
import math
from typing import NamedTuple, Optional

import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..nn.module import Module
from ..tensor import Tensor


class DistillationLosses(NamedTuple):
    """The three losses of one distillation step: `total` is what to call `backward()` on; the
    other two are its parts, for logging. `student` is None when no labels were given."""

    total: Tensor
    distillation: Tensor
    student: Optional[Tensor]


def _validate_temperature(temperature):
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating)) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def _validate_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
            or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def _validate_logits(student_logits, teacher_logits, labels):
    for name, value in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(value).__name__}")
    if student_logits.ndim != 2:
        raise ValueError(f"student_logits must have shape (batch, classes), got {student_logits.shape}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits shape {teacher_logits.shape} must equal student_logits shape "
                         f"{student_logits.shape}")
    if labels is None:
        return
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a Tensor or None, got {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(f"labels shape {labels.shape} must be (batch,) = {student_logits.shape[:1]}")


def soft_target_loss(student_logits, teacher_logits, temperature=3.0):
    """KL(softmax(t / T) || softmax(s / T)) * T^2, averaged over the batch ('batchmean').

    Args:
        student_logits: (N, C) Tensor.
        teacher_logits: (N, C) Tensor; normally computed under `no_grad`, but if it carries a
            graph the gradient flows into it too, as it would in torch.
        temperature: T > 0.
    """
    temperature = _validate_temperature(temperature)
    _validate_logits(student_logits, teacher_logits, None)
    return _soft_target_loss(student_logits, teacher_logits, temperature)


def _soft_target_loss(student_logits, teacher_logits, temperature):
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature ** 2


def distillation_losses(student_logits, teacher_logits, labels=None, temperature=3.0, alpha=0.7):
    """The total distillation loss and its two parts, as `DistillationLosses(total, distillation,
    student)`. See `distillation_loss` for the formula and arguments."""
    temperature, alpha = _validate_temperature(temperature), _validate_alpha(alpha)
    _validate_logits(student_logits, teacher_logits, labels)
    distillation = _soft_target_loss(student_logits, teacher_logits, temperature)
    if labels is None:
        return DistillationLosses(distillation, distillation, None)
    student = F.cross_entropy(student_logits, labels)
    return DistillationLosses(distillation * alpha + student * (1.0 - alpha), distillation, student)


def distillation_loss(student_logits, teacher_logits, labels=None, temperature=3.0, alpha=0.7):
    """Hinton et al.'s distillation loss:

        alpha * KL(softmax(t / T) || softmax(s / T)) * T^2 + (1 - alpha) * cross_entropy(s, labels)

    With `labels=None` only the distillation term is returned (alpha is then unused).

    Args:
        student_logits: (N, C) float Tensor.
        teacher_logits: (N, C) float Tensor, same shape.
        labels: (N,) integer class indices, or None.
        temperature: T > 0; T = 1 is the plain softmax, larger T softer targets.
        alpha: weight of the distillation term, in [0, 1].

    Returns:
        A scalar Tensor.

    Raises:
        ValueError: temperature <= 0, alpha outside [0, 1], or mismatched shapes.
        TypeError: a non-Tensor argument or non-integer labels.

    Example:
        >>> loss = distillation_loss(student(x), teacher_logits, y, temperature=4.0, alpha=0.9)
        >>> loss.backward()
    """
    return distillation_losses(student_logits, teacher_logits, labels, temperature, alpha).total


def attach_teacher_and_student(module, teacher, student):
    """Set module.teacher and module.student, both checked to be Modules. The student is a submodule (it
    trains, it is saved); the teacher is a plain attribute, outside parameters(), state_dict() and
    train()/eval(), so the optimizer never sees it and switching the wrapper's mode leaves it alone."""
    for name, value in (("teacher", teacher), ("student", student)):
        if not isinstance(value, Module):
            raise TypeError(f"{name} must be a Module, got {type(value).__name__}")
    object.__setattr__(module, "teacher", teacher)
    module.student = student


class KnowledgeDistillation(Module):
    """A frozen teacher and a trainable student under `distillation_loss`.

    `forward(x, labels=None)` returns `DistillationLosses(total, distillation, student)`. The
    teacher runs in eval mode (batch norm uses its running statistics, dropout is off) under
    `no_grad`, so its parameters never receive a gradient and never change.

    The teacher is held but not registered as a submodule: `parameters()`, `state_dict()` and
    `train()` of this module concern the student alone, so `Adam(kd.parameters())` trains exactly
    the student.

    Example:
        >>> kd = KnowledgeDistillation(teacher, student, temperature=4.0, alpha=0.9)
        >>> optimizer = Adam(kd.parameters(), lr=1e-3)
        >>> total, distillation, student_loss = kd(x, y)
        >>> total.backward(); optimizer.step()
    """

    def __init__(self, teacher, student, temperature=3.0, alpha=0.7):
        super().__init__()
        attach_teacher_and_student(self, teacher, student)
        self.temperature = _validate_temperature(temperature)
        self.alpha = _validate_alpha(alpha)

    def teacher_logits(self, x):
        """The teacher's output on `x`: eval mode, no graph."""
        self.teacher.eval()
        with no_grad():
            return self.teacher(x)

    def loss(self, student_logits, teacher_logits, labels=None):
        return distillation_losses(student_logits, teacher_logits, labels, self.temperature, self.alpha)

    def forward(self, x, labels=None):
        return self.loss(self.student(x), self.teacher_logits(x), labels)

    def extra_repr(self):
        return f"temperature={self.temperature}, alpha={self.alpha}, teacher={type(self.teacher).__name__}"
