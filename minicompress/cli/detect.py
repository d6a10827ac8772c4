"""The detection side of the `minicompress` command: `optimize --task detect` and `predict` on a
detector file. `optimize.py` and `files.py` dispatch here; `main.py` reports the errors.

    minicompress optimize --task detect [--out DIR] [--prune 0.2] [--epochs 20] [--seed 0]

runs `pipelines.detect.optimize_detector` on digit scenes of DETECT_IMAGE_SIZE pixels with up to
DETECT_MAX_OBJECTS digits: DETECT_TEST_SCENES held-out test scenes (of the test digits), and a fresh
draw of DETECT_SCENES_PER_EPOCH training scenes every epoch (`digit_scene_sampler`). The design's
scenes are 64 x 64 with up to 4 digits; 48 x 48 with up to 3 keeps every digit at 9-18 pixels (at
least its 8 x 8 source, so no digit loses detail) at about half the cost per scene, which is what
lets the whole job fit in ten minutes on two cores. Every training run takes batches of
DETECT_BATCH_SIZE scenes; the teacher trains DETECT_TEACHER_EPOCHS epochs unless --teacher-epochs
says otherwise. Beside the report it writes model.npz (the int8 model of the channel-pruned student:
the smallest; the last float stage with --quantize none). The channel-pruned student is fine-tuned
under the distillation loss (DETECT_CHANNEL_FINETUNE), since the plain fine-tune left it 3.8 mAP@0.5
points below the distilled student) and, where matplotlib is installed,
detections.png (test scenes with true boxes in green, predicted in red).
"""
import time

import numpy as np

DETECT_IMAGE_SIZE = 48
DETECT_MAX_OBJECTS = 3
DETECT_TEST_SCENES = 400
DETECT_SCENES_PER_EPOCH = 1200
DETECT_EPOCHS = 20
DETECT_TEACHER_EPOCHS = 60
DETECT_PRUNE = 0.2
DETECT_LR = 1e-2
# Batches of 8 scenes: at the same number of epochs (the same compute) four times the Adam steps of
# batches of 32, which is what the detectors lack (benchmarks/RESULTS.md, 'Detection job').
DETECT_BATCH_SIZE = 8
# The distillation the ablation in benchmarks/RESULTS.md chose (see bench_detect_distill.py).
DETECT_DISTILL = dict(kd_weight=1.0, kd_weighting="confidence", feature_weight=0.0, box_weight=0.0)
# The channel-pruned student's fine-tune: epochs before and after `shrink`, under the same distillation,
# at DETECT_LR * lr_factor (benchmarks/RESULTS.md, 'Detection job', bench_detect_int8.py).
DETECT_CHANNEL_FINETUNE = dict(before=2, after=20, lr_factor=1 / 3)


def _write_detections_png(model, scenes, path, count=6):
    """Test scenes with true (green) and predicted (red, score > 0.3) boxes; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from ..detect.training import predict_detections

    count = min(count, len(scenes.images))
    detections = predict_detections(model, scenes.images[:count])
    fig, axes = plt.subplots(1, count, figsize=(2.2 * count, 2.4))
    for ax, image, boxes, labels, det in zip(np.atleast_1d(axes), scenes.images, scenes.boxes, scenes.labels,
                                            detections):
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
        for (x1, y1, x2, y2), label in zip(boxes, labels):
            ax.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, color="lime", lw=1))
        for (x1, y1, x2, y2), label, score in zip(det["boxes"], det["labels"], det["scores"]):
            if score > 0.3:
                ax.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, color="red", lw=1))
                ax.text(x1, y1, f"{label} {score:.2f}", color="red", fontsize=6)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def optimize_detect(args, folder):
    """`minicompress optimize --task detect`: the detection job, its files written into `folder` (an
    `OutputFolder`); returns (report, files written, notes to print)."""
    import minicompress as mc
    from minicompress import io
    from minicompress.data import digit_scene_sampler, load_digit_scenes
    from minicompress.models import create_detector, create_teacher_detector
    from minicompress.pipelines.detect import ChannelFinetune, optimize_detector

    started, cpu_started = time.time(), time.process_time()
    mc.manual_seed(args.seed)
    scene_args = dict(image_size=DETECT_IMAGE_SIZE, max_objects=DETECT_MAX_OBJECTS, seed=args.seed)
    # 5 * DETECT_TEST_SCENES scenes at test_fraction 0.2: DETECT_TEST_SCENES test scenes; the training
    # scenes of this call only calibrate int8, the training epochs draw their own.
    train, test = load_digit_scenes(5 * DETECT_TEST_SCENES, **scene_args)
    draw = digit_scene_sampler(DETECT_SCENES_PER_EPOCH, **scene_args)
    student = create_detector(image_size=DETECT_IMAGE_SIZE)
    teacher = create_teacher_detector(image_size=DETECT_IMAGE_SIZE)
    quantize = args.quantize        # static or none, checked by `optimize.py`
    teacher_epochs = DETECT_TEACHER_EPOCHS if args.teacher_epochs is None else args.teacher_epochs
    report = optimize_detector(student, teacher, train, test, prune=args.prune, structured=True, quantize=quantize,
                               epochs=args.epochs, teacher_epochs=teacher_epochs, lr=DETECT_LR,
                               batch_size=DETECT_BATCH_SIZE,
                               distill=DETECT_DISTILL, progress=not args.no_progress, log=print, seed=args.seed,
                               resample=draw, dynamic=True,
                               channel_finetune=ChannelFinetune(**DETECT_CHANNEL_FINETUNE))
    final_stage = next(s for s in ("channel-pruned KD int8", "channel-pruned int8", "int8", "channel-pruned KD",
                                   "channel-pruned", "pruned", "distilled") if s in report.models)
    final = report.models[final_stage]
    final.input_shape = (1, DETECT_IMAGE_SIZE, DETECT_IMAGE_SIZE)
    io.save(final, folder.path("model.npz"))
    png = _write_detections_png(final, test, folder.path("detections.png"))
    report.settings.update(final_stage=final_stage, wall_seconds=round(time.time() - started, 1),
                           cpu_seconds=round(time.process_time() - cpu_started, 1))
    note = f"job: {report.settings['wall_seconds']} s wall clock, {report.settings['cpu_seconds']} s of CPU"
    return report, ["model.npz"] + (["detections.png"] if png else []), [note]


def print_detections(model, x, score_threshold=0.3):
    """`minicompress predict` on a detector: one block per image, a line per box above the threshold."""
    from ..detect.training import predict_detections

    for i, det in enumerate(predict_detections(model, x.astype(np.float32), score_threshold=score_threshold)):
        print(f"image {i}: {len(det['labels'])} boxes")
        for (x1, y1, x2, y2), label, score in zip(det["boxes"], det["labels"], det["scores"]):
            print(f"  label {int(label)}  score {float(score):.4f}  box [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    return 0
