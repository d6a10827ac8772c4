"""The detection job: the classifier job's stages (`classify.py`, `stages.py`) for the FCOS detector on digit
scenes, measured in COCO mAP instead of accuracy.

    report = optimize_detector(student, teacher, train_scenes, test_scenes, prune=0.2)
    print(report.to_markdown())

Stages (one row each):

    teacher     the wide detector, trained on the scenes
    student     the small detector trained alone
    distilled   the small detector trained with `DetectionDistillation` (class-map KD, neck
                imitation, box imitation)
    pruned      distilled, magnitude-pruned (`stages.prune_model`: one global L1 threshold over
                every conv weight, the design's 20% by default), fine-tuned with the masks in place,
                masks made permanent
    channel-pruned  (structured=True) distilled, L2 channel pruning of the same fraction of every
                conv-bn unit's output channels (convs tied by an addition or by the shared head rank
                together), fine-tuned, `shrink`-ed to smaller dense layers, fine-tuned again
    channel-pruned KD  (structured=True with a `ChannelFinetune`) the same pruning, both fine-tunes
                under the distillation loss instead (the row replaces "channel-pruned")
    int8        pruned, statically quantized: conv-bn-relu fused, observers calibrated on training
                scenes, converted to integer kernels (nearest upsampling maps int8 levels to levels)
    channel-pruned int8  (structured=True) the channel-pruned model, quantized the same way
                ("channel-pruned KD int8" after the distillation fine-tune)
    dynamic int8  (dynamic=True) pruned under `quantize_dynamic` with torch's default mapping, which
                quantizes Linear and recurrent layers only: a conv-only detector stays float, as it
                does in torch (the row shows that dynamic quantization is no route for this model)

Training scenes are `train_scenes` (fixed) or, with `resample=draw`, a fresh `draw(k)` every epoch
(`data.digit_scene_sampler`; the teacher, the student, the distillation and the fine-tunes each run
through their own sequence of draws, all from the same training digits).

Each row holds mAP@0.5 and mAP@[.5:.95] on the test scenes, parameters, bytes, latency per image at
batch 1 and 64, and ratios against the teacher and the float student: a `report.Report` with mAP in the accuracy
column's place.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

from .. import nn
from ..detect.training import evaluate_detector, fit_detector, resampled_scene_loader, scene_loader
from ..kernels.threads import blas_threads
from ..models.detector import QuantizedUpsample
from .report import BATCH_LATENCIES, COST_COLUMNS, Report, stage_row
from .stages import prune_model, stage_costs

DETECT_QUANTIZE_MODES = ("static", "none")


# One stage's row of the detection job's table: stage, mAP@0.5, mAP, then the cost fields every job shares.
DetectionStageResult = stage_row("DetectionStageResult", [("map_50", float), ("map", float)], __name__)


class DetectionReport(Report):
    """The detection job's stage table (`DetectionStageResult` rows)."""

    COLUMNS = (("stage", "stage", "{}"), ("mAP@0.5", "map_50", "{:.4f}"), ("mAP", "map", "{:.4f}")) + COST_COLUMNS
    QUALITY = ("map_50", "test mAP@0.5 (%)", 100)
    LATENCIES = BATCH_LATENCIES


@dataclass(frozen=True)
class ChannelFinetune:
    """How the job fine-tunes the channel-pruned student: `before` epochs with the channel masks in place,
    `after` epochs once `shrink` has removed them, both under the distillation loss (the teacher's
    class-map KD with the job's `distill` weights, as the distillation stage), Adam at `lr_factor` times
    the job's lr with a cosine decay per fine-tune. `amount`: the fraction of channels pruned, None for
    the job's `prune`."""

    before: int = 2
    after: int = 20
    lr_factor: float = 1 / 3
    amount: float | None = None

    def __post_init__(self):
        for name in ("before", "after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ChannelFinetune {name} must be an int >= 0, got {value!r}")
        if isinstance(self.lr_factor, bool) or not isinstance(self.lr_factor, (int, float)) or not self.lr_factor > 0:
            raise ValueError(f"ChannelFinetune lr_factor must be a number > 0, got {self.lr_factor!r}")
        amount = self.amount
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, (int, float))
                                   or not 0.0 < amount < 1.0):
            raise ValueError(f"ChannelFinetune amount must be None or a fraction in (0, 1), got {amount!r}")


def quantize_detector(model, calibration_images, batch_size=32, qconfig=None):
    """Static int8 copy of a `Detector`: fuse every conv-bn(-relu), `qconfig` (torch's x86 default when
    None; a weight observer with fewer levels gives 4-bit weights in int8 storage), calibrate on
    `calibration_images` (N, 1, S, S), convert (nearest upsampling included)."""
    from .. import quant as Q
    from ..autograd import no_grad
    from ..tensor import Tensor

    fused = Q.fuse_mobile_classifier(copy.deepcopy(model).eval(), inplace=True)
    fused.qconfig = qconfig or Q.get_default_qconfig("x86")
    prepared = Q.prepare(fused, inplace=True)
    with no_grad():
        for start in range(0, len(calibration_images), batch_size):
            prepared(Tensor(calibration_images[start:start + batch_size]))
    mapping = dict(Q.DEFAULT_STATIC_QUANT_MODULE_MAPPINGS)
    mapping[nn.Upsample] = QuantizedUpsample
    return Q.convert(prepared, mapping=mapping, inplace=True)


def optimize_detector(student, teacher, train_scenes, test_scenes, prune=0.2, structured=False, quantize="static",
                      epochs=10, teacher_epochs=None, finetune_epochs=2, lr=3e-3, batch_size=8,
                      calibration_images=128, distill=None, progress=True, log=print, latency_repeat=10, seed=0,
                      resample=None, dynamic=False, channel_finetune=None):
    """Run the detection job on copies of `student` and `teacher`; returns a `DetectionReport`.

    `distill` holds `DetectionDistillation`'s keyword arguments (temperature, kd_weight,
    feature_weight, box_weight, kd_weighting); `teacher_epochs` defaults to `epochs`, 0 takes the
    teacher as trained. `resample`: None, or draw(k) -> DigitScenes for fresh training scenes each
    epoch (then `train_scenes` serves calibration only). `structured` adds the channel-pruned row,
    `dynamic` the dynamic-int8 row. `channel_finetune` (structured only): None fine-tunes the
    channel-pruned model as the magnitude-pruned one (`finetune_epochs` twice, plain FCOS loss, lr / 10);
    a `ChannelFinetune` fine-tunes it under the distillation loss instead (the "channel-pruned KD" rows).
    Training batches hold `batch_size` scenes: 8 by default, since at a
    fixed number of epochs these detectors gain more from more steps than from larger batches.
    """
    if not isinstance(prune, (int, float)) or not 0.0 <= prune < 1.0:
        raise ValueError(f"prune must be a fraction in [0, 1), got {prune!r}")
    quantize = "none" if quantize is None else quantize
    if quantize not in DETECT_QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {DETECT_QUANTIZE_MODES} for a detector, got {quantize!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if resample is not None and not callable(resample):
        raise ValueError(f"resample must be None or a function draw(k) -> DigitScenes, got {resample!r}")
    if channel_finetune is not None and not isinstance(channel_finetune, ChannelFinetune):
        raise ValueError(f"channel_finetune must be None or a ChannelFinetune, got {channel_finetune!r}")
    # One OpenBLAS thread: the detector's 1x1 convs are many small GEMMs, which two threads on a shared
    # 2-core machine ran 9-12x slower in CPU time (kernels.threads.blas_threads); Numba's kernels keep theirs.
    with blas_threads(1):
        return _run_job(student, teacher, train_scenes, test_scenes, prune, structured, quantize, epochs,
                        teacher_epochs, finetune_epochs, lr, batch_size, calibration_images, distill, progress, log,
                        latency_repeat, seed, resample, dynamic, channel_finetune)


def _run_job(student, teacher, train_scenes, test_scenes, prune, structured, quantize, epochs, teacher_epochs,
             finetune_epochs, lr, batch_size, calibration_images, distill, progress, log, latency_repeat, seed,
             resample, dynamic, channel_finetune):
    from ..distill.detection import train_detector_with_distillation

    say = log or (lambda *_: None)
    teacher_epochs = epochs if teacher_epochs is None else teacher_epochs
    distill = dict(distill or {})
    draws = [0]

    def new_loader():
        """A loader for one training run; with `resample`, its own sequence of draws (k = 1000 * run + epoch)."""
        if resample is None:
            return scene_loader(student, train_scenes, batch_size=batch_size, shuffle=True, seed=seed)
        draws[0] += 1
        offset = 1000 * draws[0]
        return resampled_scene_loader(student, lambda k: resample(offset + k), batch_size=batch_size, seed=seed + offset)

    sample_shape = test_scenes.images.shape[1:]
    report = DetectionReport(settings=dict(prune=prune, structured=structured, quantize=quantize, epochs=epochs,
                                           teacher_epochs=teacher_epochs, finetune_epochs=finetune_epochs, lr=lr,
                                           distill=distill, train_images=len(train_scenes.images),
                                           test_images=len(test_scenes.images), seed=seed,
                                           resampled=resample is not None,
                                           channel_finetune=None if channel_finetune is None else
                                           asdict(channel_finetune)))

    def train(model, n_epochs, name, rate=lr):
        fit_detector(model, new_loader(), n_epochs, lr=rate, progress=progress, desc=name)

    def record(stage, model):
        metric = evaluate_detector(model, test_scenes)
        row = DetectionStageResult(stage, metric["map_50"], metric["map"],
                                   *stage_costs(model, sample_shape, latency_repeat))
        report.rows.append(row)
        report.models[stage] = model
        say(f"[{stage}] mAP@0.5 {row.map_50:.4f}  mAP {row.map:.4f}  parameters {row.parameters:,}  "
            f"bytes {row.bytes:,}  {row.latency_b1_ms:.3f} ms/image at batch 1")

    teacher = copy.deepcopy(teacher)
    if teacher_epochs:
        say(f"training the teacher for {teacher_epochs} epochs")
        train(teacher, teacher_epochs, "teacher")
    record("teacher", teacher)

    say(f"training the student alone for {epochs} epochs")
    alone = copy.deepcopy(student)
    train(alone, epochs, "student")
    record("student", alone)

    say(f"distilling the student for {epochs} epochs ({distill or 'default weights'})")
    distilled = copy.deepcopy(student)
    train_detector_with_distillation(teacher, distilled, new_loader(), epochs, lr=lr, progress=progress, **distill)
    record("distilled", distilled)

    current = distilled
    channel_stage = "channel-pruned" if channel_finetune is None else "channel-pruned KD"
    finetune = lambda m, n: train(m, n, "fine-tune", lr / 10)   # noqa: E731
    if prune > 0:
        say(f"pruning {prune:.0%} (global L1 magnitude) and fine-tuning for {finetune_epochs} epochs")
        current = prune_model(copy.deepcopy(distilled), prune, False, None, finetune_epochs, lr / 10,
                              finetune=finetune)
        record("pruned", current)
        if structured and channel_finetune is None:
            say(f"pruning {prune:.0%} of the channels (L2) + shrink, fine-tuning {finetune_epochs} epochs twice")
            channels = prune_model(copy.deepcopy(distilled), prune, True, None, finetune_epochs, lr / 10,
                                   finetune=finetune)
            record(channel_stage, channels)
        elif structured:
            plan = channel_finetune
            say(f"pruning {plan.amount or prune:.0%} of the channels (L2) + shrink, distillation fine-tune "
                f"{plan.before} + {plan.after} epochs at lr {lr * plan.lr_factor:g}")
            distil = lambda m, n: train_detector_with_distillation(   # noqa: E731
                teacher, m, new_loader(), n, lr=lr * plan.lr_factor, progress=progress, **distill)
            channels = prune_model(copy.deepcopy(distilled), plan.amount or prune, True, None,
                                   (plan.before, plan.after), lr, finetune=distil)
            record(channel_stage, channels)
    float_final = current
    calibration = train_scenes.images[:calibration_images]
    if quantize == "static":
        say("quantizing to int8 (static)")
        current = quantize_detector(float_final, calibration)
        record("int8", current)
        if prune > 0 and structured:
            say("quantizing the channel-pruned model to int8 (static)")
            record(f"{channel_stage} int8", quantize_detector(channels, calibration))
    if dynamic:
        from .. import quant as Q
        say("quantize_dynamic (torch's default mapping: Linear and recurrent layers)")
        record("dynamic int8", Q.quantize_dynamic(copy.deepcopy(float_final).eval(), dtype=Q.qint8))

    report.set_ratios()
    return report
