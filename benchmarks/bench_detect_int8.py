"""What closes the gap between the detection job's saved int8 model (the channel-pruned student) and the
distilled float student, one stage at a time from a saved distilled student.

    PYTHONPATH=. python benchmarks/bench_detect_int8.py prepare --seed S --dir DIR
    PYTHONPATH=. python benchmarks/bench_detect_int8.py run --seed S --dir DIR --variants V ...

`prepare` runs the job's first three stages exactly as `minicompress optimize --task detect --seed S`
does (`optimize_detector` with pruning and quantization off: the same seed, draws and epochs) and saves
the teacher and the distilled student in DIR/seedS/. `run` loads them and, per variant, prunes the
channels, fine-tunes, quantizes static int8 and prints mAP@0.5 / mAP of the float and int8 models.

    PYTHONPATH=. python benchmarks/bench_detect_int8.py rounding --seed S --dir DIR [--iterations N] [--lr LR]
                                                     [--schemes channel tensor] [--weight-range minmax|mse]
                                                     [--calibration IMAGES]

`rounding` takes the distilled student itself (no pruning) to 4-bit weights with 8-bit activations, round
to nearest against AdaRound (`quant.adaround`, per channel and per tensor), beside the job's int8: the
AdaRound target on the detector. The head's convs are shared by the two pyramid levels, so AdaRound
learns each of them on the inputs of both (12 x 12 and 6 x 6). `--weight-range mse` puts the 4-bit grid of
each channel (or the tensor) where its rounding error is least (`quant.PerChannelMSEObserver` / `MSEObserver`)
instead of at its min / max.
"""
import argparse
import copy
import json
import os
import time

import minicompress as mc
from minicompress import io
from minicompress.cli import detect as D
from minicompress.data import digit_scene_sampler, load_digit_scenes
from minicompress.kernels.threads import blas_threads
from minicompress.models import create_detector, create_teacher_detector


def job_data(seed):
    """The job's scenes for `seed` (`cli.detect.optimize_detect`): calibration/test scenes and the draw."""
    mc.manual_seed(seed)
    scene_args = dict(image_size=D.DETECT_IMAGE_SIZE, max_objects=D.DETECT_MAX_OBJECTS, seed=seed)
    train, test = load_digit_scenes(5 * D.DETECT_TEST_SCENES, **scene_args)
    draw = digit_scene_sampler(D.DETECT_SCENES_PER_EPOCH, **scene_args)
    return train, test, draw


def prepare(seed, folder):
    from minicompress.pipelines.detect import optimize_detector

    train, test, draw = job_data(seed)
    student = create_detector(image_size=D.DETECT_IMAGE_SIZE)
    teacher = create_teacher_detector(image_size=D.DETECT_IMAGE_SIZE)
    start = time.process_time()
    report = optimize_detector(student, teacher, train, test, prune=0.0, quantize="none", epochs=D.DETECT_EPOCHS,
                               teacher_epochs=D.DETECT_TEACHER_EPOCHS, lr=D.DETECT_LR,
                               batch_size=D.DETECT_BATCH_SIZE, distill=D.DETECT_DISTILL, progress=False,
                               seed=seed, resample=draw, latency_repeat=2)
    os.makedirs(folder, exist_ok=True)
    for stage in ("teacher", "distilled"):
        io.save(report.models[stage], os.path.join(folder, f"{stage}.npz"))
    with open(os.path.join(folder, "prepare.json"), "w") as f:
        json.dump({r.stage: [r.map_50, r.map] for r in report.rows} | {"cpu_s": time.process_time() - start}, f)


# name -> (fine-tune: 'plain' or 'kd', epochs before shrink, epochs after, lr as a fraction of the job's,
#          channel fraction, rounding: 'nearest', 'adaround' or 'qat')
VARIANTS = {
    "plain 2+2": ("plain", 2, 2, 0.1, 0.2, "nearest"),
    "kd 2+2": ("kd", 2, 2, 0.1, 0.2, "nearest"),
    "kd 2+6": ("kd", 2, 6, 0.1, 0.2, "nearest"),
    "kd 2+6 lr/3": ("kd", 2, 6, 1 / 3, 0.2, "nearest"),
    "kd 4+8": ("kd", 4, 8, 0.1, 0.2, "nearest"),
    "plain 2+6": ("plain", 2, 6, 0.1, 0.2, "nearest"),
    "kd 2+2 qat 2": ("kd", 2, 2, 0.1, 0.2, "qat"),
    "kd 2+6 at 10%": ("kd", 2, 6, 0.1, 0.1, "nearest"),
    "kd 2+10 lr/3": ("kd", 2, 10, 1 / 3, 0.2, "nearest"),
    "kd 2+16 lr/3": ("kd", 2, 16, 1 / 3, 0.2, "nearest"),
    "kd 0+12 lr/3": ("kd", 0, 12, 1 / 3, 0.2, "nearest"),
    "kd 2+10 lr": ("kd", 2, 10, 1.0, 0.2, "nearest"),
    "plain 2+10 lr/3": ("plain", 2, 10, 1 / 3, 0.2, "nearest"),
    "kd 2+10 lr/3 at 10%": ("kd", 2, 10, 1 / 3, 0.1, "nearest"),
    "kd 2+20 lr/3": ("kd", 2, 20, 1 / 3, 0.2, "nearest"),
    "kd 2+20 lr": ("kd", 2, 20, 1.0, 0.2, "nearest"),
    "kd 2+20 lr/3 at 10%": ("kd", 2, 20, 1 / 3, 0.1, "nearest"),
}


def quantize(model, rounding, calibration, teacher, loader, lr):
    """Static int8 as the job does (`quantize_detector`), with AdaRound'ed weights or after a KD QAT fine-tune."""
    from minicompress import quant as Q
    from minicompress.pipelines.detect import quantize_detector

    if rounding == "nearest":
        return quantize_detector(model, calibration)
    if rounding == "adaround":
        fused = Q.fuse_mobile_classifier(copy.deepcopy(model).eval(), inplace=True)
        Q.adaround(fused, [calibration[i:i + 32] for i in range(0, len(calibration), 32)],
                   Q.get_default_qconfig("x86"), iterations=500)
        return quantize_detector(fused, calibration)
    return qat_detector(model, teacher, loader, 2, lr)


def qat_detector(model, teacher, loader, epochs, lr):
    """Fake-quantized KD fine-tune (x86 QAT qconfig, conv-bn folded on the fly), then convert."""
    from minicompress import nn
    from minicompress import quant as Q
    from minicompress.distill.detection import train_detector_with_distillation
    from minicompress.models.detector import QuantizedUpsample

    prepared = Q.fuse_mobile_classifier(copy.deepcopy(model).train(), inplace=True, is_qat=True)
    prepared.qconfig = Q.get_default_qat_qconfig("x86")
    prepared = Q.prepare_qat(prepared, inplace=True)
    train_detector_with_distillation(teacher, prepared, loader, epochs, lr=lr, **D.DETECT_DISTILL)
    mapping = dict(Q.DEFAULT_STATIC_QUANT_MODULE_MAPPINGS)
    mapping[nn.Upsample] = QuantizedUpsample
    return Q.convert(prepared.eval(), mapping=mapping, inplace=True)


def four_bit_qconfig(per_channel, weight_range="minmax"):
    """4-bit symmetric weights ([-7, 7]) per channel or per tensor, 8-bit activations: bench_dfq.py's; the
    weight range each channel's (tensor's) min / max, or with "mse" shrunk where the rounding error is least."""
    from minicompress import quant as Q
    kinds = {("minmax", True): Q.PerChannelMinMaxObserver, ("minmax", False): Q.MinMaxObserver,
             ("mse", True): Q.PerChannelMSEObserver, ("mse", False): Q.MSEObserver}
    kind = kinds[weight_range, per_channel]
    scheme = Q.per_channel_symmetric if per_channel else Q.per_tensor_symmetric
    return Q.QConfig(activation=Q.HistogramObserver.with_args(reduce_range=False),
                     weight=kind.with_args(dtype=Q.qint8, qscheme=scheme, quant_min=-7, quant_max=7))


def rounding(seed, folder, iterations, lr=1e-3, schemes=("channel", "tensor"), weight_range="minmax",
             calibration_images=128):
    """The distilled student at 4-bit weights: round to nearest and AdaRound, per channel and per tensor."""
    from minicompress import quant as Q
    from minicompress.detect.training import evaluate_detector
    from minicompress.pipelines.detect import quantize_detector

    train, test, _ = job_data(seed)
    distilled = io.load(os.path.join(folder, "distilled.npz"))
    calibration = train.images[:calibration_images]
    batches = [calibration[i:i + 32] for i in range(0, len(calibration), 32)]
    results = {"float": evaluate_detector(distilled, test)}
    models = {"int8 (the job's, x86 qconfig)": lambda: quantize_detector(distilled, calibration)}
    for scheme, per_channel in (("per channel", True), ("per tensor", False)):
        if scheme.split()[1] not in schemes:
            continue
        qconfig = four_bit_qconfig(per_channel, weight_range)

        def nearest(qconfig=qconfig):
            return quantize_detector(distilled, calibration, qconfig=qconfig)

        def learned(qconfig=qconfig):
            fused = Q.fuse_mobile_classifier(copy.deepcopy(distilled).eval(), inplace=True)
            Q.adaround(fused, batches, qconfig, iterations=iterations, lr=lr)
            return quantize_detector(fused, calibration, qconfig=qconfig)

        models[f"4-bit {scheme}, round to nearest"] = nearest
        models[f"4-bit {scheme}, AdaRound"] = learned
    print(f"seed {seed} float: {results['float']['map_50']:.4f} / {results['float']['map']:.4f}; AdaRound "
          f"{iterations} iterations per layer at lr {lr}, {weight_range} weight ranges, {len(calibration)} "
          f"calibration images", flush=True)
    for name, make in models.items():
        start = time.process_time()
        model = make()
        cpu = time.process_time() - start
        results[name] = evaluate_detector(model, test) | {"cpu_s": cpu}
        print(f"seed {seed} {name}: {results[name]['map_50']:.4f} / {results[name]['map']:.4f}  "
              f"cpu {cpu:.0f} s", flush=True)
    with open(os.path.join(folder, f"rounding-{int(time.time())}.json"), "w") as f:
        json.dump({"iterations": iterations, "lr": lr, "weight_range": weight_range,
                   "calibration_images": len(calibration)} | results, f, indent=1)


def run(seed, folder, names):
    from minicompress.detect.training import evaluate_detector, fit_detector, resampled_scene_loader
    from minicompress.distill.detection import train_detector_with_distillation
    from minicompress.pipelines.stages import prune_model
    from minicompress.quant import model_size_bytes

    train, test, draw = job_data(seed)
    teacher, distilled = (io.load(os.path.join(folder, f"{s}.npz")) for s in ("teacher", "distilled"))
    calibration = train.images[:128]
    results = {}
    for name in names or list(VARIANTS):
        kind, before, after, rate, fraction, rounding = VARIANTS[name]
        lr = D.DETECT_LR * rate
        runs = iter(range(6, 100))      # the job's channel-pruned fine-tunes take draws 6 and 7

        def loader(runs=runs):
            offset = 1000 * next(runs)
            return resampled_scene_loader(distilled, lambda k: draw(offset + k), batch_size=D.DETECT_BATCH_SIZE,
                                          seed=seed + offset)

        def finetune(m, n, kind=kind, lr=lr, loader=loader):
            if kind == "kd":
                train_detector_with_distillation(teacher, m, loader(), n, lr=lr, **D.DETECT_DISTILL)
            else:
                fit_detector(m, loader(), n, lr=lr)

        start = time.process_time()
        pruned = prune_model(copy.deepcopy(distilled), fraction, True, None, (before, after), lr, finetune=finetune)
        tuned = time.process_time()
        int8 = quantize(pruned, rounding, calibration, teacher, loader(), lr)
        done = time.process_time()
        row = {"float": evaluate_detector(pruned, test), "int8": evaluate_detector(int8, test),
               "bytes": model_size_bytes(int8), "float_bytes": model_size_bytes(pruned),
               "finetune_cpu_s": tuned - start, "quantize_cpu_s": done - tuned}
        results[name] = row
        print(f"seed {seed} {name}: float {row['float']['map_50']:.4f} / {row['float']['map']:.4f}  "
              f"int8 {row['int8']['map_50']:.4f} / {row['int8']['map']:.4f}  bytes {row['bytes']:,}  "
              f"cpu {tuned - start:.0f} + {done - tuned:.0f} s", flush=True)
    with open(os.path.join(folder, f"run-{int(time.time())}.json"), "w") as f:
        json.dump(results, f, indent=1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["prepare", "run", "rounding"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default="bench-detect-int8")
    parser.add_argument("--variants", nargs="+", default=None)
    parser.add_argument("--iterations", type=int, default=500, help="AdaRound's per layer (rounding)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdaRound's Adam learning rate (rounding)")
    parser.add_argument("--schemes", nargs="+", choices=["channel", "tensor"], default=["channel", "tensor"],
                        help="4-bit weights per channel and / or per tensor (rounding)")
    parser.add_argument("--weight-range", choices=["minmax", "mse"], default="minmax",
                        help="4-bit weight grid: min / max, or shrunk to the least rounding error (rounding)")
    parser.add_argument("--calibration", type=int, default=128,
                        help="training images that calibrate the activations and AdaRound (rounding)")
    args = parser.parse_args()
    folder = os.path.join(args.dir, f"seed{args.seed}")
    with blas_threads(1):
        if args.command == "prepare":
            prepare(args.seed, folder)
        elif args.command == "rounding":
            rounding(args.seed, folder, args.iterations, args.lr, args.schemes, args.weight_range,
                     args.calibration)
        else:
            run(args.seed, folder, args.variants)


if __name__ == "__main__":
    main()
