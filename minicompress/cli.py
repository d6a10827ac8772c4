"""The `minicompress` command.

    minicompress optimize [--out DIR] [--prune 0.3] [--unstructured] [--quantize static] [--epochs 15] [--seed 0]
    minicompress inspect MODEL
    minicompress bench MODEL [--batch-sizes 1,64]
    minicompress predict MODEL INPUT.npy
    minicompress check MODEL.onnx [--input x.npy ...] [--rtol 1e-4] [--atol 1e-5]

Bad input (a missing or non-model file, an input of the wrong shape, an unknown option value)
prints one line to stderr and exits with status 2; no traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

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


def cmd_optimize(args):
    import minicompress as mc
    from minicompress import io
    from minicompress.models import create_teacher_classifier
    from minicompress.nn import create_mobile_classifier
    from minicompress.pipeline import optimize
    from minicompress.training import digits_loaders

    if not 0.0 <= args.prune < 1.0:
        raise CommandError(f"--prune must be in [0, 1), got {args.prune}")
    if args.epochs < 1:
        raise CommandError(f"--epochs must be a positive integer, got {args.epochs}")
    os.makedirs(args.out, exist_ok=True)
    mc.manual_seed(args.seed)
    train_loader, test_loader = digits_loaders(batch_size=64, seed=args.seed)
    student = create_mobile_classifier(num_classes=10, in_channels=1)
    teacher = create_teacher_classifier(num_classes=10, in_channels=1)
    report = optimize(student, teacher, train_loader, test_loader, prune=args.prune,
                      structured=not args.unstructured, quantize=args.quantize, epochs=args.epochs,
                      teacher_epochs=args.teacher_epochs, progress=not args.no_progress, log=print)
    final = report.models[report.rows[-1].stage]
    final.input_shape = (1, 8, 8)
    io.save(final, os.path.join(args.out, "model.npz"))
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report.to_dict(), f, indent=2)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(report.to_markdown() + "\n")
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
    model.eval()
    with mc.no_grad():
        logits = model(mc.tensor(x.astype(np.float32)))
        logits = logits if isinstance(logits, mc.Tensor) else logits.dequantize()
        probs = F.softmax(logits, dim=1).numpy()
    np.set_printoptions(precision=4, suppress=True)
    for i, p in enumerate(probs):
        print(f"sample {i}: class {int(p.argmax())}  probabilities {p}")
    return 0


# ----- check (ONNX) ------------------------------------------------------------------------------

def cmd_check(args):
    if not os.path.isfile(args.model):
        raise CommandError(f"no ONNX file at {args.model!r}")
    try:
        from .onnx.check import check_command
    except ImportError as exc:
        raise CommandError(f"check needs onnx and onnxruntime: pip install 'minicompress[onnx]' ({exc})") from exc
    try:
        return check_command(args)
    except NotImplementedError as exc:     # an operator minicompress does not implement
        raise CommandError(str(exc)) from exc


def _add_check(sub):
    chk = sub.add_parser("check", help="run an ONNX model in minicompress and onnxruntime, compare node by node")
    chk.add_argument("model")
    chk.add_argument("--input", action="append", default=None,
                     help=".npy file of a graph input, repeated in the graph's input order (default: random)")
    chk.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (of each value's max |x|)")
    chk.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance")
    chk.set_defaults(run=cmd_check)


# ----- entry point -------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(prog="minicompress", description="Make a model small and fast: distill, "
                                     "prune, quantize, and compare accuracy, bytes and latency.")
    sub = parser.add_subparsers(dest="command", required=True)
    opt = sub.add_parser("optimize", help="run distill -> prune -> quantize on the bundled digits")
    opt.add_argument("--out", default="minicompress-out", help="output folder (default: minicompress-out)")
    opt.add_argument("--prune", type=float, default=0.3, help="fraction to prune (default 0.3)")
    opt.add_argument("--unstructured", action="store_true", help="global L1 pruning instead of L2 channel pruning")
    opt.add_argument("--quantize", choices=["static", "dynamic", "qat", "none"], default="static")
    opt.add_argument("--epochs", type=int, default=15, help="training epochs of each stage (default 15)")
    opt.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (default: --epochs)")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--no-progress", action="store_true", help="no progress bars")
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
    _add_check(sub)
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
