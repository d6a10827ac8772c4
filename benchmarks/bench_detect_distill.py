"""Which parts of the detection distillation help: the detection job's settings (`cli.detect`),
one teacher per seed, then the student trained alone and under each distillation variant, all on
the same resampled scenes and epochs. Prints mAP@0.5 / mAP on the held-out test scenes per seed.

    PYTHONPATH=. python benchmarks/bench_detect_distill.py --seeds 0 1 2

Variants: alone; class-map KD (uniform over locations, the original loss); class-map KD weighted by
the teacher's confidence; neck imitation alone (weight 1, and 0.1); box distillation alone; all
three at weight 1 (the original default).
"""
import argparse
import copy
import json
import time

import minicompress as mc
from minicompress.cli import detect as D
from minicompress.data import digit_scene_sampler, load_digit_scenes
from minicompress.detect.training import evaluate_detector, fit_detector, resampled_scene_loader
from minicompress.distill.detection import train_detector_with_distillation
from minicompress.kernels.threads import blas_threads
from minicompress.models import create_detector, create_teacher_detector

OFF = dict(kd_weight=0.0, feature_weight=0.0, box_weight=0.0)
VARIANTS = {
    "alone": None,
    "kd uniform": dict(OFF, kd_weight=1.0, kd_weighting="uniform"),
    "kd confidence": dict(OFF, kd_weight=1.0, kd_weighting="confidence"),
    "neck 1.0": dict(OFF, feature_weight=1.0),
    "neck 0.1": dict(OFF, feature_weight=0.1),
    "box": dict(OFF, box_weight=1.0),
    "all at 1 (uniform)": dict(kd_weight=1.0, feature_weight=1.0, box_weight=1.0),
}


def run(seed, variants, epochs, teacher_epochs):
    scene_args = dict(image_size=D.DETECT_IMAGE_SIZE, max_objects=D.DETECT_MAX_OBJECTS, seed=seed)
    _, test = load_digit_scenes(5 * D.DETECT_TEST_SCENES, **scene_args)
    draw = digit_scene_sampler(D.DETECT_SCENES_PER_EPOCH, **scene_args)
    mc.manual_seed(seed)
    student0 = create_detector(image_size=D.DETECT_IMAGE_SIZE)
    teacher = create_teacher_detector(image_size=D.DETECT_IMAGE_SIZE)

    def loader(run_index):
        offset = 1000 * run_index
        return resampled_scene_loader(student0, lambda k: draw(offset + k), seed=seed + offset)

    start = time.time()
    fit_detector(teacher, loader(1), teacher_epochs, lr=D.DETECT_LR)
    result = {"teacher": evaluate_detector(teacher, test)}
    print(f"seed {seed} teacher {result['teacher']['map_50']:.4f} ({time.time() - start:.0f} s)", flush=True)
    for name in variants:
        student, weights, start = copy.deepcopy(student0), VARIANTS[name], time.time()
        # Every variant sees the same draws (run 2), as the student and distilled stages of the job do not.
        if weights is None:
            fit_detector(student, loader(2), epochs, lr=D.DETECT_LR)
        else:
            train_detector_with_distillation(teacher, student, loader(2), epochs, lr=D.DETECT_LR, **weights)
        result[name] = evaluate_detector(student, test)
        print(f"seed {seed} {name}: mAP@0.5 {result[name]['map_50']:.4f} mAP {result[name]['map']:.4f} "
              f"({time.time() - start:.0f} s)", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=D.DETECT_EPOCHS)
    parser.add_argument("--teacher-epochs", type=int, default=D.DETECT_TEACHER_EPOCHS)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    with blas_threads(1):   # as optimize_detector runs the job
        results = {seed: run(seed, args.variants, args.epochs, args.teacher_epochs) for seed in args.seeds}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print("| variant | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean mAP@0.5 | mean mAP |")
    print("|---|" + "---|" * (len(args.seeds) + 2))
    for name in ["teacher"] + args.variants:
        cells = [f"{results[s][name]['map_50']:.4f} / {results[s][name]['map']:.4f}" for s in args.seeds]
        m50 = sum(results[s][name]["map_50"] for s in args.seeds) / len(args.seeds)
        m = sum(results[s][name]["map"] for s in args.seeds) / len(args.seeds)
        print(f"| {name} | " + " | ".join(cells) + f" | {m50:.4f} | {m:.4f} |")


if __name__ == "__main__":
    main()
