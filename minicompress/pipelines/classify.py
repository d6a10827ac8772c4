"""The end-to-end job: distill -> prune -> quantize, and a report of what each stage cost and saved.

    report = optimize(student, teacher, train_loader, test_loader, prune=0.3, structured=True, quantize="static")
    print(report.to_markdown())

Stages (one report row each):

    teacher     the large float32 model (trained here unless teacher_epochs=0)
    student     the small model trained alone on the labels
    distilled   the small model trained on the teacher's soft labels and the labels
    pruned      distilled, pruned (L2 channel pruning + shrink when structured, global L1 otherwise),
                fine-tuned with the masks in place, masks made permanent
    int8        pruned, then quantized: 'static' (fuse, calibrate, convert), 'dynamic' (Linear
                layers only) or 'qat' (fake-quant fine-tuning, then convert)

Each row holds test accuracy, parameter count, bytes (`quant.model_size_bytes`), latency per image
at batch 1 and batch 64 (median of repeated runs), and ratios against the teacher and the float student.
"""
from __future__ import annotations

import copy
import itertools
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from . import nn
from .latency import latency_per_image
from .optim import Adam
from .training import accuracy, fit, parameter_count

QUANTIZE_MODES = ("static", "dynamic", "qat", "none")


@dataclass
class StageResult:
    stage: str
    accuracy: float
    parameters: int
    bytes: int
    latency_b1_ms: float
    latency_b64_ms: float
    size_vs_teacher: float = 0.0
    size_vs_student: float = 0.0
    speedup_vs_teacher_b1: float = 0.0
    speedup_vs_student_b1: float = 0.0


@dataclass
class Report:
    """The stage table, plus the models of every stage (not serialised)."""

    rows: list = field(default_factory=list)
    models: dict = field(default_factory=dict, repr=False)
    settings: dict = field(default_factory=dict)

    def row(self, stage):
        return next(r for r in self.rows if r.stage == stage)

    def to_dict(self):
        return {"settings": self.settings, "stages": [asdict(r) for r in self.rows]}

    def to_markdown(self):
        head = ("| stage | test accuracy | parameters | bytes | x smaller than teacher | x smaller than student "
                "| ms/image (batch 1) | ms/image (batch 64) | x faster than student (batch 1) |")
        lines = [head, "|" + "---|" * 9]
        for r in self.rows:
            lines.append(f"| {r.stage} | {r.accuracy:.4f} | {r.parameters:,} | {r.bytes:,} | {r.size_vs_teacher:.1f} "
                         f"| {r.size_vs_student:.2f} | {r.latency_b1_ms:.3f} | {r.latency_b64_ms:.4f} "
                         f"| {r.speedup_vs_student_b1:.2f} |")
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()


def _validate(prune, structured, quantize, epochs, **epoch_counts):
    if not isinstance(prune, (int, float)) or not 0.0 <= prune < 1.0:
        raise ValueError(f"prune must be a fraction in [0, 1), got {prune!r}")
    if quantize is None:
        quantize = "none"
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    for name, value in epoch_counts.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return quantize


def conv_bn_pairs(model):
    """(conv, batch norm) pairs where a BatchNorm2d directly follows a non-depthwise Conv2d over the same
    channels in the module tree's order (the conv-bn-relu units of the models here)."""
    modules = [m for _, m in model.named_modules()]
    return [(a, b) for a, b in zip(modules, modules[1:])
            if isinstance(a, nn.Conv2d) and a.groups == 1 and isinstance(b, nn.BatchNorm2d)
            and b.num_features == a.out_channels]


def prune_model(model, amount, structured, train_loader, finetune_epochs, lr, log=None, finetune=None):
    """Prune `model` in place, fine-tune with the masks in place, make the masks permanent, and for
    structured pruning `shrink` to smaller dense layers and fine-tune once more. Returns the model.

    `finetune(model, epochs)` trains in place; by default `fit` on `train_loader` with Adam(lr) and
    cross-entropy (a detector passes its own loop).

    Structured: L2 (n=2) channel pruning along dim 0 of every conv-bn unit, one shared ranking for the
    convs whose outputs a residual addition ties (`tied_output_groups`); the batch norm's weight
    and bias get the same channel mask, so a pruned channel is exactly zero after it (otherwise the
    batch norm turns it into a constant that `shrink` cannot remove). The depthwise conv that reads
    a pruned channel loses it through `shrink`; its own batch norm's constant for that channel is
    what the fine-tune after shrinking absorbs. Unstructured: one global L1 threshold over every
    conv and linear weight.
    """
    from . import prune as P

    if finetune is None:
        def finetune(m, epochs):
            fit(m, train_loader, epochs, lr=lr, log=log)
    if amount == 0:
        return model
    if structured:
        batch_norm_after = {id(conv): bn for conv, bn in conv_bn_pairs(model)}
        for tied in P.tied_output_groups(model):
            convs = [conv for conv in tied if id(conv) in batch_norm_after]
            if not convs:
                continue
            # Convs whose outputs a residual add sums rank their channels together (summed squared L2
            # norms), so they prune the same channels and `shrink` can remove all of them.
            joint = sum((conv.weight.data.reshape(conv.out_channels, -1).astype(np.float64) ** 2).sum(1)
                        for conv in convs)
            for conv in convs:
                scores = np.broadcast_to(joint.reshape((-1,) + (1,) * (conv.weight.ndim - 1)), conv.weight.shape)
                P.ln_structured(conv, "weight", amount=amount, n=2, dim=0, importance_scores=scores)
                keep = conv.weight_mask.data.reshape(conv.out_channels, -1).any(axis=1).astype(np.float32)
                bn = batch_norm_after[id(conv)]
                P.custom_from_mask(bn, "weight", keep)
                P.custom_from_mask(bn, "bias", keep)
    else:
        targets = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        P.global_unstructured(targets, pruning_method=P.L1Unstructured, amount=amount)
    if finetune_epochs:
        finetune(model, finetune_epochs)
    P.strip_pruning(model)
    if not structured:
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the depthwise batch-norm constants, absorbed just below
        model = P.shrink(model)
    if finetune_epochs:
        finetune(model, finetune_epochs)
    return model


def quantize_model(model, mode, train_loader, calibration_batches=8, qat_epochs=2, lr=1e-3, log=None):
    """A quantized copy of `model`: 'static' (fuse, calibrate on `calibration_batches` training batches,
    convert), 'dynamic' (Linear layers) or 'qat' (fake-quant fine-tuning for `qat_epochs`, then convert)."""
    from . import quant as Q

    if mode == "dynamic":
        return Q.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=Q.qint8)
    if mode == "static":
        from .quant.size import quantize_static
        return quantize_static(model, itertools.islice(train_loader, calibration_batches))
    if mode == "qat":
        model = copy.deepcopy(model).train()
        model = Q.fuse_mobile_classifier(model, inplace=True, is_qat=True)
        model.qconfig = Q.get_default_qat_qconfig("x86")
        prepared = Q.prepare_qat(model, inplace=True)
        fit(prepared, train_loader, qat_epochs, lr=lr, log=log)
        return Q.convert(prepared.eval(), inplace=True)
    raise ValueError(f"unknown quantization mode {mode!r}")


def optimize(student, teacher, train_loader, test_loader, prune=0.3, structured=True, quantize="static",
             epochs=15, teacher_epochs=None, finetune_epochs=5, temperature=4.0, alpha=0.7, lr=1e-2,
             calibration_batches=8, qat_epochs=2, progress=True, log=print, latency_repeat=20):
    """Run the whole job on copies of `student` and `teacher` and return a `Report`.

    `teacher_epochs` defaults to `epochs`; 0 takes the teacher as already trained.
    """
    from .distill import train_with_distillation
    from .quant import model_size_bytes

    quantize = _validate(prune, structured, quantize, epochs, teacher_epochs=teacher_epochs,
                         finetune_epochs=finetune_epochs, qat_epochs=qat_epochs)
    say = log or (lambda *_: None)
    teacher_epochs = epochs if teacher_epochs is None else teacher_epochs
    from .training import _check_not_empty
    _check_not_empty(train_loader, "train_loader")
    _check_not_empty(test_loader, "test_loader")
    first = next(iter(test_loader), None)
    if first is None:
        raise ValueError("test_loader yielded no batch; the job needs test data to measure each stage")
    sample_shape = first[0].shape[1:]
    report = Report(settings=dict(prune=prune, structured=structured, quantize=quantize, epochs=epochs,
                                  teacher_epochs=teacher_epochs, finetune_epochs=finetune_epochs,
                                  temperature=temperature, alpha=alpha, lr=lr))

    def record(stage, model):
        latency = latency_per_image(model, sample_shape, repeat=latency_repeat)
        row = StageResult(stage, accuracy(model, test_loader), parameter_count(model), model_size_bytes(model),
                          latency[1] * 1e3, latency[64] * 1e3)
        report.rows.append(row)
        report.models[stage] = model
        say(f"[{stage}] accuracy {row.accuracy:.4f}  parameters {row.parameters:,}  bytes {row.bytes:,}  "
            f"{row.latency_b1_ms:.3f} ms/image at batch 1")

    teacher = copy.deepcopy(teacher)
    if teacher_epochs:
        say(f"training the teacher for {teacher_epochs} epochs")
        fit(teacher, train_loader, teacher_epochs, lr=lr)
    record("teacher", teacher)

    say(f"training the student alone for {epochs} epochs")
    alone = copy.deepcopy(student)
    fit(alone, train_loader, epochs, lr=lr)
    record("student", alone)

    say(f"distilling the student for {epochs} epochs (T={temperature}, alpha={alpha})")
    distilled = copy.deepcopy(student)
    train_with_distillation(teacher, distilled, train_loader, epochs, temperature, alpha,
                            optimizer=Adam(distilled.parameters(), lr=lr), progress=progress, log=None)
    record("distilled", distilled)

    current = distilled
    if prune > 0:
        kind = "L2 channel" if structured else "global L1"
        say(f"pruning {prune:.0%} ({kind}) and fine-tuning for {finetune_epochs} epochs")
        current = prune_model(copy.deepcopy(distilled), prune, structured, train_loader, finetune_epochs, lr / 10)
        record("pruned", current)
    if quantize != "none":
        say(f"quantizing to int8 ({quantize})")
        current = quantize_model(current, quantize, train_loader, calibration_batches, qat_epochs, lr / 100)
        record("int8", current)

    base_teacher, base_student = report.row("teacher"), report.row("student")
    for r in report.rows:
        r.size_vs_teacher = base_teacher.bytes / r.bytes
        r.size_vs_student = base_student.bytes / r.bytes
        r.speedup_vs_teacher_b1 = base_teacher.latency_b1_ms / r.latency_b1_ms
        r.speedup_vs_student_b1 = base_student.latency_b1_ms / r.latency_b1_ms
    return report
