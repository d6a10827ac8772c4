"""Feature distillation ("hints", Romero et al., 2015, FitNets): the student also imitates the
teacher's intermediate activations, not only its outputs.

For each pair (teacher layer, student layer) the two layers' outputs are captured with forward
hooks; a small learned adapter maps the student's feature to the teacher's width, and the pair
contributes the mean squared error between them:

    loss = sum over pairs of  mse_loss(adapter(student_feature), teacher_feature)

The adapter is a 1x1 convolution for (N, C, H, W) features (it mixes channels, position by
position) and a linear map over the last dimension otherwise, e.g. (N, D) or (N, L, D). It cannot
resample space, so paired layers must have the same spatial size: pick layers after the same
number of downsamplings. Adapter sizes are read off the captured shapes.
"""
import contextlib
from typing import NamedTuple

from .. import functional as F
from ..autograd import no_grad
from ..nn.containers import ModuleList
from ..nn.layers import Conv2d, Linear
from ..nn.module import Module
from ..tensor import Tensor
from .losses import attach_teacher_and_student


@contextlib.contextmanager
def capture_features(model, names):
    """Within the block, record the output of each named submodule of `model` (dotted names as in
    `named_modules()`; "" is the model itself) into the yielded dict. The hooks are removed when
    the block exits, also on an exception. A module called twice keeps its last output.

        >>> with capture_features(model, ["blocks.1"]) as features:
        ...     model(x)
        >>> features["blocks.1"].shape
    """
    features, handles = {}, []

    def recorder(name):
        def hook(module, args, output):
            features[name] = output
        return hook

    try:
        for name in names:
            handles.append(model.get_submodule(name).register_forward_hook(recorder(name)))
        yield features
    finally:
        for handle in handles:
            handle.remove()


class FeatureDistillationOutput(NamedTuple):
    """`loss` is the summed feature MSE; the two outputs are the models' own results on the batch
    (the teacher's without a graph), so a logit loss can be added without a second forward."""

    loss: Tensor
    student_output: Tensor
    teacher_output: Tensor


def _validate_pairs(pairs, teacher, student):
    items = list(pairs.items()) if isinstance(pairs, dict) else list(pairs)
    if not items:
        raise ValueError("pairs must name at least one (teacher_layer, student_layer) pair, got none")
    teacher_names, student_names = dict(teacher.named_modules()), dict(student.named_modules())
    checked = []
    for pair in items:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(n, str) for n in pair)):
            raise ValueError(f"each pair must be (teacher_layer, student_layer) names, got {pair!r}")
        for role, name, known in (("teacher", pair[0], teacher_names), ("student", pair[1], student_names)):
            if name not in known:
                raise ValueError(f"pair {tuple(pair)}: the {role} has no layer {name!r}; "
                                 f"its layers are {sorted(n for n in known if n)}")
        checked.append(tuple(pair))
    return checked


def _spatial(shape):
    """Every dimension but the channels: (N, H, W) of (N, C, H, W), all but the last otherwise."""
    return shape[:1] + shape[2:] if len(shape) == 4 else shape[:-1]


def _check_features(pair, teacher_feature, student_feature):
    """Both features are tensors of the same rank, batch and spatial size."""
    for role, name, feature in (("teacher", pair[0], teacher_feature), ("student", pair[1], student_feature)):
        if feature is None:
            raise ValueError(f"pair {pair}: the {role} layer {name!r} did not run during forward")
        if not isinstance(feature, Tensor) or feature.ndim < 2:
            got = feature.shape if isinstance(feature, Tensor) else type(feature).__name__
            raise ValueError(f"pair {pair}: the {role} layer {name!r} must output a Tensor with at least "
                             f"2 dimensions, got {got}")
    t, s = teacher_feature.shape, student_feature.shape
    if len(t) != len(s) or _spatial(t) != _spatial(s):
        raise ValueError(f"pair {pair}: teacher feature {t} and student feature {s} must match in every "
                         f"dimension but the channels (spatial sizes must be equal); pair layers of the "
                         f"same resolution")


def _adapter(student_feature, teacher_feature):
    if student_feature.ndim == 4:
        return Conv2d(student_feature.shape[1], teacher_feature.shape[1], kernel_size=1)
    return Linear(student_feature.shape[-1], teacher_feature.shape[-1])


class FeatureDistillation(Module):
    """Match a student's intermediate features to a frozen teacher's through learned adapters.

    Args:
        teacher: the frozen model; run in eval mode under `no_grad`, never registered as a
            submodule (its parameters are not in `parameters()` or `state_dict()`).
        student: the model being trained.
        pairs: (teacher_layer, student_layer) name pairs, or a dict teacher_layer -> student_layer,
            with dotted names as in `named_modules()`.
        sample_input: if given, a dry run on it (both models in eval mode, no graph, modes restored
            afterwards) builds the adapters now. Otherwise they are built lazily from the first
            batch given to `forward`. Build them before creating the optimizer, or the adapters
            will not be in its parameter list: pass `sample_input`, or call `build_adapters(x)`.

    `forward(x)` returns `FeatureDistillationOutput(loss, student_output, teacher_output)`.
    Hooks live only for the duration of a forward: none is left on either model afterwards.
    `parameters()` yields the student's parameters and then the adapters' (`self.adapters`, a
    ModuleList aligned with `self.pairs`).

    Example:
        >>> fd = FeatureDistillation(teacher, student, [("layer2", "blocks.3")], sample_input=x0)
        >>> optimizer = Adam(fd.parameters(), lr=1e-3)
        >>> feature_loss, logits, teacher_logits = fd(x)
        >>> (distillation_loss(logits, teacher_logits, y) + beta * feature_loss).backward()
    """

    def __init__(self, teacher, student, pairs, sample_input=None):
        super().__init__()
        attach_teacher_and_student(self, teacher, student)
        self.pairs = _validate_pairs(pairs, teacher, student)
        self.adapters = ModuleList()
        if sample_input is not None:
            self.build_adapters(sample_input)

    def _run(self, x):
        """Both models on `x`, capturing the paired features; returns (teacher_output,
        student_output, teacher_features, student_features)."""
        self.teacher.eval()
        with no_grad(), capture_features(self.teacher, [t for t, _ in self.pairs]) as teacher_features:
            teacher_output = self.teacher(x)
        with capture_features(self.student, [s for _, s in self.pairs]) as student_features:
            student_output = self.student(x)
        for pair in self.pairs:
            _check_features(pair, teacher_features.get(pair[0]), student_features.get(pair[1]))
        return teacher_output, student_output, teacher_features, student_features

    def build_adapters(self, sample_input):
        """Dry run on `sample_input` and create one adapter per pair from the captured shapes."""
        modes = [(m, m.training) for m in self.student.modules()]
        self.student.eval()
        try:
            with no_grad():
                _, _, teacher_features, student_features = self._run(sample_input)
        finally:
            for module, training in modes:
                object.__setattr__(module, "training", training)
        self._create_adapters(teacher_features, student_features)
        return self

    def _create_adapters(self, teacher_features, student_features):
        self.adapters = ModuleList(_adapter(student_features[s], teacher_features[t]) for t, s in self.pairs)
        self.adapters.train(self.training)

    def forward(self, x):
        teacher_output, student_output, teacher_features, student_features = self._run(x)
        if len(self.adapters) == 0:
            self._create_adapters(teacher_features, student_features)
        loss = sum(F.mse_loss(adapter(student_features[s]), teacher_features[t])
                   for (t, s), adapter in zip(self.pairs, self.adapters))
        return FeatureDistillationOutput(loss, student_output, teacher_output)

    def extra_repr(self):
        return f"pairs={self.pairs}, teacher={type(self.teacher).__name__}"
