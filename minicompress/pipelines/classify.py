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
    mixed       with max_drop (accuracy points) or max_bytes: pruned, batch norms folded into the convs,
                each layer's weights float32, int8 or int4 as `quant.mixed_precision.search_precisions`
                chooses to meet the target, the drop measured against the folded pruned model; the report also holds the Pareto table of the
                candidates (`report.pareto`, `stages.mixed_precision_stage`). The search evaluates on
                the test data, so the chosen model's test accuracy is the one the search saw.

Each row holds test accuracy, parameter count, bytes (`quant.model_size_bytes`), latency per image
at batch 1 and batch 64 (median of repeated runs), and ratios against the teacher and the float student.
"""
from __future__ import annotations

import copy
import math

from ..training import accuracy, fit
from ..optim import Adam
from . import report
from .stages import mixed_precision_stage, prune_model, quantize_model, stage_costs

QUANTIZE_MODES = ("static", "dynamic", "qat", "none")


# One stage's row of the digits job's table: stage, accuracy, then the cost fields every job shares.
StageResult = report.stage_row("StageResult", [("accuracy", float)], __name__)


class Report(report.Report):
    """The digits job's stage table (`StageResult` rows)."""

    COLUMNS = (("stage", "stage", "{}"), ("test accuracy", "accuracy", "{:.4f}")) + report.COST_COLUMNS
    QUALITY = ("accuracy", "test accuracy (%)", 100)
    LATENCIES = report.BATCH_LATENCIES


def check_mixed_target(max_drop, max_bytes, names=("max_drop", "max_bytes")):
    """At most one of max_drop (accuracy points, finite, >= 0) and max_bytes (a positive int); raises
    ValueError naming the argument (`names`: what the caller calls them) otherwise."""
    if max_drop is not None and max_bytes is not None:
        raise ValueError(f"{names[0]} and {names[1]} are alternatives; give one of them")
    if max_drop is not None and (isinstance(max_drop, bool) or not isinstance(max_drop, (int, float))
                                 or not math.isfinite(max_drop) or max_drop < 0):
        raise ValueError(f"{names[0]} must be a finite number of accuracy points >= 0, got {max_drop!r}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
        raise ValueError(f"{names[1]} must be a positive number of bytes, got {max_bytes!r}")


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


def optimize(student, teacher, train_loader, test_loader, prune=0.3, structured=True, quantize="static",
             epochs=15, teacher_epochs=None, finetune_epochs=5, temperature=4.0, alpha=0.7, lr=1e-2,
             calibration_batches=8, qat_epochs=2, progress=True, log=print, latency_repeat=20, max_drop=None,
             max_bytes=None):
    """Run the whole job on copies of `student` and `teacher` and return a `Report`.

    `teacher_epochs` defaults to `epochs`; 0 takes the teacher as already trained. `max_drop` (accuracy
    points: 1.0 is one point) or `max_bytes` (of the whole model) adds the 'mixed' stage.
    """
    from ..distill import train_with_distillation

    quantize = _validate(prune, structured, quantize, epochs, teacher_epochs=teacher_epochs,
                         finetune_epochs=finetune_epochs, qat_epochs=qat_epochs)
    check_mixed_target(max_drop, max_bytes)
    say = log or (lambda *_: None)
    teacher_epochs = epochs if teacher_epochs is None else teacher_epochs
    from ..training.loops import _check_not_empty
    _check_not_empty(train_loader, "train_loader")
    _check_not_empty(test_loader, "test_loader")
    first = next(iter(test_loader), None)
    if first is None:
        raise ValueError("test_loader yielded no batch; the job needs test data to measure each stage")
    sample_shape = first[0].shape[1:]
    report = Report(settings=dict(prune=prune, structured=structured, quantize=quantize, epochs=epochs,
                                  teacher_epochs=teacher_epochs, finetune_epochs=finetune_epochs,
                                  temperature=temperature, alpha=alpha, lr=lr, max_drop=max_drop,
                                  max_bytes=max_bytes))

    def record(stage, model):
        row = StageResult(stage, accuracy(model, test_loader), *stage_costs(model, sample_shape, latency_repeat))
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
    float_model = current
    if quantize != "none":
        say(f"quantizing to int8 ({quantize})")
        current = quantize_model(current, quantize, train_loader, calibration_batches, qat_epochs, lr / 100)
        record("int8", current)
    if max_drop is not None or max_bytes is not None:
        target = f"at most {max_drop} points lost" if max_drop is not None else f"at most {max_bytes:,} bytes"
        say(f"choosing float32 / int8 / int4 weights per layer: {target}")
        result, report.pareto = mixed_precision_stage(
            float_model, lambda m: accuracy(m, test_loader), sample_shape,
            max_drop=None if max_drop is None else max_drop / 100, max_bytes=max_bytes,
            latency_repeat=latency_repeat, log=say)
        record("mixed", result.model)

    report.set_ratios()
    return report
