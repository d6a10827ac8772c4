"""The `minicompress` command.

    minicompress optimize [--out DIR] [--prune 0.3] [--unstructured] [--quantize static] [--epochs 15] [--seed 0] [--task detect]
    minicompress inspect MODEL
    minicompress bench MODEL [--batch-sizes 1,64]
    minicompress predict MODEL INPUT.npy

Bad input (a missing or non-model file, an input of the wrong shape, an unknown option value)
prints one line to stderr and exits with status 2; no traceback. `optimize` checks every option,
and that `--out` is a folder it can write, before any work starts; a run that fails removes the
files it wrote and the folders it created.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

EXIT_USAGE = 2


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# ----- optimize ----------------------------------------------------------------------------------

def _write_charts(report, out):
    """Accuracy-vs-size and latency charts, when matplotlib is installed (the `[plot]` extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = report.rows
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r.bytes / 1024 for r in rows], [100 * r.accuracy for r in rows])
    for r in rows:
        ax.annotate(r.stage, (r.bytes / 1024, 100 * r.accuracy), textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set(xlabel="model size (KiB, log scale)", ylabel="test accuracy (%)", title="accuracy vs size")
    fig.tight_layout()
    paths.append(os.path.join(out, "accuracy_vs_size.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r.latency_b1_ms for r in rows], 0.4, label="batch 1")
    ax.bar(xs + 0.2, [r.latency_b64_ms for r in rows], 0.4, label="batch 64")
    ax.set_xticks(xs, [r.stage for r in rows])
    ax.set(ylabel="ms per image", title="latency per image")
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out, "latency.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def _check_optimize_options(args):
    """Every numeric option of `optimize`, before anything is printed or created."""
    if not 0.0 <= args.prune < 1.0:
        raise CommandError(f"--prune must be in [0, 1), got {args.prune}")
    if args.epochs < 1:
        raise CommandError(f"--epochs must be a positive integer, got {args.epochs}")
    if args.teacher_epochs is not None and args.teacher_epochs < 0:
        raise CommandError(f"--teacher-epochs must be a non-negative integer, got {args.teacher_epochs}")
    if args.seed < 0:
        raise CommandError(f"--seed must be a non-negative integer, got {args.seed}")


def _make_output_folder(out):
    """Create `out` (and any missing parents) and prove it writable by writing and removing a probe
    file; returns the folders created here, outermost first, so a failed job can remove them.

    A probe rather than `os.access`: as root, `access` reports /proc and read-only mounts writable.
    """
    if not out:
        raise CommandError("--out must name a folder, got ''")
    if os.path.exists(out) and not os.path.isdir(out):
        raise CommandError(f"--out {out!r} exists and is not a folder")
    missing, parent = [], os.path.abspath(out)
    while not os.path.isdir(parent):
        missing.insert(0, parent)
        parent = os.path.dirname(parent)
    created = []
    try:
        for folder in missing:
            os.mkdir(folder)
            created.append(folder)
        fd, probe = tempfile.mkstemp(prefix=".minicompress-probe-", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        _remove_folders(created)
        raise CommandError(f"cannot write to --out {out!r}: {exc.strerror or exc}")
    return created


def _remove_folders(created):
    """Remove the folders this run created, innermost first, where they are empty."""
    for folder in reversed(created):
        try:
            os.rmdir(folder)
        except OSError:
            return


def cmd_optimize(args):
    _check_optimize_options(args)
    created = _make_output_folder(args.out)
    written = []
    try:
        return _optimize_into(args, written)
    except BaseException:
        for path in written:  # a half-written output folder is not a result
            if os.path.exists(path):
                os.remove(path)
        _remove_folders(created)
        raise


def _optimize_into(args, written):
    import minicompress as mc
    from minicompress import io
    from minicompress.models import create_teacher_classifier
    from minicompress.nn import create_mobile_classifier
    from minicompress.pipeline import optimize
    from minicompress.training import digits_loaders

    if args.task == "detect":
        from minicompress.detect_cli import optimize_detect
        return optimize_detect(args)
    mc.manual_seed(args.seed)
    train_loader, test_loader = digits_loaders(batch_size=64, seed=args.seed)
    student = create_mobile_classifier(num_classes=10, in_channels=1)
    teacher = create_teacher_classifier(num_classes=10, in_channels=1)
    report = optimize(student, teacher, train_loader, test_loader, prune=args.prune,
                      structured=not args.unstructured, quantize=args.quantize, epochs=args.epochs,
                      teacher_epochs=args.teacher_epochs, progress=not args.no_progress, log=print)
    final = report.models[report.rows[-1].stage]
    final.input_shape = (1, 8, 8)
    io.save(final, os.path.join(args.out, "model.npz"))  # all or nothing: a temporary file, then a rename
    written.append(os.path.join(args.out, "model.npz"))
    written.append(os.path.join(args.out, "report.json"))
    with open(written[-1], "w") as f:
        json.dump(report.to_dict(), f, indent=2)
    written.append(os.path.join(args.out, "report.md"))
    with open(written[-1], "w") as f:
        f.write(report.to_markdown() + "\n")
    written.extend(os.path.join(args.out, name) for name in ("accuracy_vs_size.png", "latency.png"))
    charts = _write_charts(report, args.out)
    print()
    print(report.to_markdown())
    print(f"\nwrote {args.out}/report.json, report.md, model.npz" + "".join(f", {os.path.basename(p)}" for p in charts))
    return 0


# ----- inspect, bench, predict -------------------------------------------------------------------

def _load(path):
    from minicompress import io
    try:
        return io.load(path)
    except FileNotFoundError:
        raise CommandError(f"no such model file: {path}")
    except io.ModelFileError as exc:
        raise CommandError(str(exc))


def _input_shape(model, given):
    if given:
        try:
            return tuple(int(v) for v in given.split(","))
        except ValueError:
            raise CommandError(f"--input-shape must be comma-separated integers, got {given!r}")
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise CommandError("the model file records no input shape; pass --input-shape C,H,W")
    return tuple(shape)


def cmd_inspect(args):
    from minicompress.summary import describe_model
    model = _load(args.model)
    print(describe_model(model))
    return 0


def cmd_bench(args):
    from minicompress.latency import latency_per_image
    model = _load(args.model)
    shape = _input_shape(model, args.input_shape)
    try:
        batches = tuple(int(b) for b in args.batch_sizes.split(","))
    except ValueError:
        raise CommandError(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if min(batches) < 1:
        raise CommandError("--batch-sizes must be positive")
    from minicompress.kernels.qgemm import QGEMM_ROUTE
    print(f"int8 GEMM route: {QGEMM_ROUTE} (MINICOMPRESS_QGEMM overrides it)")
    for batch, seconds in latency_per_image(model, shape, batches).items():
        print(f"batch {batch:4d}: {seconds * 1e3:.4f} ms/image, {seconds * batch * 1e3:.3f} ms/batch")
    return 0


def cmd_predict(args):
    import minicompress as mc
    import minicompress.functional as F
    model = _load(args.model)
    shape = _input_shape(model, None) if getattr(model, "input_shape", None) is not None else None
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read {args.input} as a .npy array: {exc}")
    if shape is not None:
        if x.shape == shape:
            x = x[None]
        if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
            raise CommandError(f"input has shape {x.shape}; expected {shape} or (batch, {', '.join(map(str, shape))})")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise CommandError("input must hold finite numbers")
    if type(model).__name__ == "Detector":
        from minicompress.detect_cli import print_detections
        return print_detections(model, x)
    model.eval()
    with mc.no_grad():
        logits = model(mc.tensor(x.astype(np.float32)))
        logits = logits if isinstance(logits, mc.Tensor) else logits.dequantize()
        probs = F.softmax(logits, dim=1).numpy()
    np.set_printoptions(precision=4, suppress=True)
    for i, p in enumerate(probs):
        print(f"sample {i}: class {int(p.argmax())}  probabilities {p}")
    return 0


# ----- entry point -------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(prog="minicompress", description="Make a model small and fast: distill, "
                                     "prune, quantize, and compare accuracy, bytes and latency.")
    sub = parser.add_subparsers(dest="command", required=True)
    opt = sub.add_parser("optimize", help="run distill -> prune -> quantize on the bundled digits")
    opt.add_argument("--out", default="minicompress-out", help="output folder (default: minicompress-out)")
    opt.add_argument("--prune", type=float, default=0.3, help="fraction to prune (default 0.3)")
    opt.add_argument("--unstructured", action="store_true", help="global L1 pruning instead of L2 channel pruning")
    opt.add_argument("--quantize", choices=["static", "dynamic", "qat", "none"], default="static",
                     help="int8 quantization of the pruned model: static (fuse, calibrate, convert), dynamic "
                          "(Linear layers, activations quantized at run time), qat (fake-quant fine-tuning, "
                          "then convert) or none (default: static)")
    opt.add_argument("--epochs", type=int, default=15, help="training epochs of each stage (default 15)")
    opt.add_argument("--teacher-epochs", type=int, default=None,
                     help="teacher epochs, 0 for none (default: --epochs)")
    opt.add_argument("--seed", type=int, default=0,
                     help="non-negative seed of the initialisation, data split and shuffling (default 0)")
    opt.add_argument("--no-progress", action="store_true", help="no progress bars")
    opt.add_argument("--task", choices=["classify", "detect"], default="classify",
                     help="classify: the digit classifier; detect: the detector on digit scenes")
    opt.set_defaults(run=cmd_optimize)
    ins = sub.add_parser("inspect", help="layers, shapes, dtypes, sparsity and bytes of a model file")
    ins.add_argument("model")
    ins.set_defaults(run=cmd_inspect)
    ben = sub.add_parser("bench", help="latency of a model file at batch 1 and 64")
    ben.add_argument("model")
    ben.add_argument("--batch-sizes", default="1,64")
    ben.add_argument("--input-shape", default=None, help="C,H,W when the model file records none")
    ben.set_defaults(run=cmd_bench)
    pre = sub.add_parser("predict", help="class probabilities for the samples in a .npy file")
    pre.add_argument("model")
    pre.add_argument("input")
    pre.set_defaults(run=cmd_predict)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except CommandError as exc:
        print(f"minicompress: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError) as exc:
        print(f"minicompress: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("minicompress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
