"""The `minicompress` command.

    minicompress optimize [--out DIR] [--prune 0.3] [--unstructured] [--quantize static] [--epochs 15] [--seed 0] [--task detect]
    minicompress optimize --task embed --model DIR [--prune-heads 6]
    minicompress inspect MODEL | MODEL.onnx
    minicompress bench MODEL | MODEL.onnx [--batch-sizes 1,64]      (.onnx: onnxruntime timed too)
    minicompress predict MODEL | MODEL.onnx INPUT.npy [--raw]       (or --input INPUT.npy)
    minicompress check MODEL.onnx [--input x.npy ...] [--rtol 1e-4] [--atol 1e-5]
    minicompress quantize MODEL.onnx --calibration data.npy --out model.int8.onnx

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
    """Every numeric option of `optimize`, before anything is printed or created. --prune and --epochs
    left out take the task's defaults (the digits job's 0.3 and 15, the detection job's own)."""
    if args.task == "detect":
        from minicompress.detect_cli import DETECT_EPOCHS, DETECT_PRUNE
        defaults = (DETECT_PRUNE, DETECT_EPOCHS)
    else:
        defaults = (0.3, 15)
    args.prune = defaults[0] if args.prune is None else args.prune
    args.epochs = defaults[1] if args.epochs is None else args.epochs
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
    from minicompress.data.digits import input_preprocessing
    from minicompress.training import digits_loaders

    if args.task == "detect":
        from minicompress.detect_cli import optimize_detect
        return optimize_detect(args)
    if args.task == "embed":
        from minicompress.pipelines.embed_cli import run_embed
        return run_embed(args, CommandError)
    mc.manual_seed(args.seed)
    train_loader, test_loader = digits_loaders(batch_size=64, seed=args.seed)
    student = create_mobile_classifier(num_classes=10, in_channels=1)
    teacher = create_teacher_classifier(num_classes=10, in_channels=1)
    report = optimize(student, teacher, train_loader, test_loader, prune=args.prune,
                      structured=not args.unstructured, quantize=args.quantize, epochs=args.epochs,
                      teacher_epochs=args.teacher_epochs, progress=not args.no_progress, log=print)
    final = report.models[report.rows[-1].stage]
    final.input_shape = (1, 8, 8)
    io.save(final, os.path.join(args.out, "model.npz"), metadata={"input": input_preprocessing()})
    written.append(os.path.join(args.out, "model.npz"))      # all or nothing: a temporary file, then a rename
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
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _input_spec(path):
    """The input preprocessing the model file records (its metadata's "input", written by `optimize`;
    see `data.digits.input_preprocessing`), checked; None for a file that records none."""
    from minicompress import io
    try:
        spec = io.load_metadata(path).get("input")
    except (OSError, io.ModelFileError) as exc:
        raise CommandError(str(exc))
    if spec is None:
        return None
    problem = None
    if not isinstance(spec, dict):
        problem = "it is not a JSON object"
    elif not (isinstance(spec.get("shape"), list) and spec["shape"]
              and all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 1 << 16 for n in spec["shape"])):
        problem = f"shape {spec.get('shape')!r} is not a list of positive integers"
    else:
        for key in ("range", "raw_range"):
            r = spec.get(key)
            if r is not None and not (isinstance(r, list) and len(r) == 2 and all(map(_number, r)) and r[0] < r[1]):
                problem = f"{key} {r!r} is not [low, high]"
        scale = spec.get("scale")
        if scale is not None and not (_number(scale) and scale > 0):
            problem = f"scale {scale!r} is not a positive number"
    if problem:
        raise CommandError(f"{path}: the model file's input preprocessing is malformed: {problem}")
    return spec


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


def _load_onnx(path):
    from minicompress.onnx_cli import load_onnx
    return load_onnx(path, CommandError)


def cmd_inspect(args):
    from minicompress.summary import describe_model
    from minicompress.onnx_cli import describe_onnx, is_onnx_path
    if is_onnx_path(args.model):
        model, proto = _load_onnx(args.model)
        print(describe_onnx(model, proto, args.model))
        return 0
    model = _load(args.model)
    spec = _input_spec(args.model)
    try:
        text = describe_model(model)
    except Exception as exc:  # a crafted file can hold a model that loads but cannot be described
        raise CommandError(f"{args.model}: the model cannot be described ({type(exc).__name__}: {exc})")
    print(text)
    if spec is not None:
        print(f"input: {_describe_spec(spec)}")
    return 0


def _describe_spec(spec):
    text = f"shape {tuple(spec['shape'])} {spec.get('dtype', 'float32')}"
    if spec.get("range"):
        text += f", values in [{spec['range'][0]:g}, {spec['range'][1]:g}]"
    if spec.get("scale") and spec.get("raw_range"):
        text += (f" (raw values in [{spec['raw_range'][0]:g}, {spec['raw_range'][1]:g}] times {spec['scale']:g}: "
                 f"pass --raw to predict)")
    return text + (f"; {spec['description']}" if isinstance(spec.get("description"), str) else "")


def _batch_sizes(text):
    try:
        batches = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise CommandError(f"--batch-sizes must be comma-separated integers, got {text!r}")
    if min(batches) < 1:
        raise CommandError("--batch-sizes must be positive")
    return batches


def cmd_bench(args):
    from minicompress.latency import latency_per_image
    from minicompress.onnx_cli import bench_onnx, is_onnx_path, sample_shape
    batches = _batch_sizes(args.batch_sizes)
    if is_onnx_path(args.model):
        model, proto = _load_onnx(args.model)
        return bench_onnx(model, proto, sample_shape(model, args.model, args.input_shape, CommandError), batches,
                          CommandError)
    model = _load(args.model)
    shape = _input_shape(model, args.input_shape)
    from minicompress.kernels.qgemm import QGEMM_ROUTE
    print(f"int8 GEMM route: {QGEMM_ROUTE} (MINICOMPRESS_QGEMM overrides it)")
    for batch, seconds in latency_per_image(model, shape, batches).items():
        print(f"batch {batch:4d}: {seconds * 1e3:.4f} ms/image, {seconds * batch * 1e3:.3f} ms/batch")
    return 0


def _batch(x, shape):
    """`x` as a (batch, *shape) array: one sample of `shape`, a batch of them, or rows of prod(shape)
    values (flattened images)."""
    if shape is None:
        if x.ndim < 2:
            raise CommandError(f"input has shape {x.shape}; expected (batch, ...): the model file records no "
                               f"input shape")
        return x
    size = int(np.prod(shape))
    if x.shape == shape:
        return x[None]
    if x.ndim == len(shape) + 1 and x.shape[1:] == shape:
        return x
    if x.ndim in (1, 2) and x.shape[-1] == size and size > 1:
        return x.reshape((-1,) + shape)
    raise CommandError(f"input has shape {x.shape}; expected {shape}, (batch, {', '.join(map(str, shape))}) "
                       f"or (batch, {size})")


def _preprocess(x, spec, raw):
    """Apply (--raw) or check the scaling the model was trained with."""
    lo, hi = float(x.min()), float(x.max())
    if raw:
        if spec is None or spec.get("scale") is None or spec.get("raw_range") is None:
            raise CommandError("--raw: the model file records no input scaling; give the values the model expects")
        r_lo, r_hi = spec["raw_range"]
        if lo < r_lo or hi > r_hi:
            raise CommandError(f"--raw: input values span [{lo:g}, {hi:g}], outside the raw range [{r_lo:g}, {r_hi:g}]")
        return x * np.float32(spec["scale"])
    if spec is None or spec.get("range") is None:
        return x
    m_lo, m_hi = spec["range"]
    slack = 1e-6 * (m_hi - m_lo)
    if lo < m_lo - slack or hi > m_hi + slack:
        message = (f"input values span [{lo:g}, {hi:g}], outside [{m_lo:g}, {m_hi:g}], the range the model was "
                   f"trained on")
        raw_range = spec.get("raw_range")
        if raw_range and spec.get("scale") and raw_range[0] <= lo and hi <= raw_range[1]:
            message += (f"; they look like raw values in [{raw_range[0]:g}, {raw_range[1]:g}]: pass --raw to "
                        f"multiply them by {spec['scale']:g}")
        raise CommandError(message)
    return x


def cmd_predict(args):
    import minicompress as mc
    import minicompress.functional as F
    from minicompress.onnx_cli import is_onnx_path, sample_shape
    if args.input is not None and args.input_option is not None:
        raise CommandError("give the input once: INPUT or --input INPUT, not both")
    args.input = args.input if args.input is not None else args.input_option
    if args.input is None:
        raise CommandError("predict needs an input: INPUT.npy or --input INPUT.npy")
    if is_onnx_path(args.model):
        model, _ = _load_onnx(args.model)
        spec, shape = None, sample_shape(model, args.model, None, CommandError)
    else:
        model = _load(args.model)
        spec = _input_spec(args.model)
        shape = tuple(spec["shape"]) if spec is not None else getattr(model, "input_shape", None)
    if shape is not None:
        if not (isinstance(shape, tuple) and shape and all(isinstance(n, int) and n > 0 for n in shape)):
            raise CommandError(f"{args.model}: the model file's input_shape {shape!r} is not a tuple of positive ints")
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CommandError(f"cannot read {args.input} as a .npy array: {exc}")
    if not isinstance(x, np.ndarray):  # an .npz archive
        x.close()
        raise CommandError(f"{args.input} is a .npz archive; expected one .npy array (np.save)")
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise CommandError(f"input must hold real numbers, got dtype {x.dtype}")
    x = _batch(x, shape)
    if x.shape[0] == 0:
        raise CommandError(f"{args.input} holds no samples (an empty batch of shape {x.shape})")
    if not np.isfinite(x).all():
        raise CommandError("input must hold finite numbers (it has NaN or infinity)")
    x = _preprocess(x.astype(np.float32), spec, args.raw)
    if type(model).__name__ == "Detector":
        from minicompress.detect_cli import print_detections
        return print_detections(model, x)
    model.eval()
    try:
        with mc.no_grad():
            logits = model(mc.tensor(x))
            logits = logits[0] if isinstance(logits, tuple) else logits       # an ONNX graph's first output
            logits = logits if isinstance(logits, mc.Tensor) else logits.dequantize()
    except Exception as exc:  # a crafted file can hold a model that loads but cannot run
        raise CommandError(f"the model in {args.model} failed on this input ({type(exc).__name__}: {exc})")
    if logits.ndim != 2:
        raise CommandError(f"the model's output has shape {logits.shape}; predict reads (batch, classes) logits")
    with mc.no_grad():
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


def cmd_quantize(args):
    from .onnx_cli import is_onnx_path
    if not is_onnx_path(args.model):
        raise CommandError(f"quantize takes an .onnx file, got {args.model!r}")
    if not os.path.isfile(args.model):
        raise CommandError(f"no ONNX file at {args.model!r}")
    from .onnx.quantize_command import quantize_command
    try:
        return quantize_command(args, CommandError)
    except NotImplementedError as exc:     # an operator minicompress does not implement
        raise CommandError(str(exc)) from exc


def _add_quantize(sub):
    qua = sub.add_parser("quantize", help="static int8 (per channel) of an ONNX model, compared with onnxruntime's "
                                          "quantize_static on the same calibration data")
    qua.add_argument("model", help="a float .onnx file with one float32 input")
    qua.add_argument("--calibration", required=True, help=".npy array of calibration samples (batch, *input shape)")
    qua.add_argument("--out", required=True, help="the int8 model to write (QDQ .onnx)")
    qua.add_argument("--batch-size", type=int, default=32, help="calibration batch size (default 32)")
    qua.set_defaults(run=cmd_quantize)


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
    opt.add_argument("--prune", type=float, default=None,
                     help="fraction to prune (default 0.3; --task detect: 0.2)")
    opt.add_argument("--unstructured", action="store_true", help="global L1 pruning instead of L2 channel pruning")
    opt.add_argument("--quantize", choices=["static", "dynamic", "qat", "none"], default="static",
                     help="int8 quantization of the pruned model: static (fuse, calibrate, convert), dynamic "
                          "(Linear layers, activations quantized at run time), qat (fake-quant fine-tuning, "
                          "then convert) or none (default: static)")
    opt.add_argument("--epochs", type=int, default=None,
                     help="training epochs of each stage (default 15; --task detect: see detect_cli.DETECT_EPOCHS)")
    opt.add_argument("--teacher-epochs", type=int, default=None,
                     help="teacher epochs, 0 for none (default: --epochs)")
    opt.add_argument("--seed", type=int, default=0,
                     help="non-negative seed of the initialisation, data split and shuffling (default 0)")
    opt.add_argument("--no-progress", action="store_true", help="no progress bars")
    opt.add_argument("--task", choices=["classify", "detect", "embed"], default="classify",
                     help="classify: the digits job (default); detect: the detector on digit scenes; "
                          "embed: compress a pretrained sentence encoder (needs --model)")
    opt.add_argument("--model", default=None, help="--task embed: the sentence encoder's directory")
    opt.add_argument("--prune-heads", type=int, default=6, help="--task embed: attention heads to remove (default 6)")
    opt.set_defaults(run=cmd_optimize)
    ins = sub.add_parser("inspect", help="layers, shapes, dtypes, sparsity and bytes of a model file")
    ins.add_argument("model", help="a model file written by minicompress, or an .onnx file")
    ins.set_defaults(run=cmd_inspect)
    ben = sub.add_parser("bench", help="latency of a model file at batch 1 and 64 (an .onnx file: onnxruntime's too)")
    ben.add_argument("model", help="a model file written by minicompress, or an .onnx file")
    ben.add_argument("--batch-sizes", default="1,64")
    ben.add_argument("--input-shape", default=None, help="C,H,W when the model file records none")
    ben.set_defaults(run=cmd_bench)
    pre = sub.add_parser(
        "predict", help="class probabilities for the samples in a .npy file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Class probabilities for the samples in INPUT, a .npy array (np.save) of real numbers.\n\n"
                    "INPUT holds one sample of the model's input shape, a batch (batch, *shape), or rows of\n"
                    "prod(shape) values. A model written by `minicompress optimize` records the input it was\n"
                    "trained on (`minicompress inspect` shows it): shape (1, 8, 8), float32 values in [0, 1],\n"
                    "the UCI digits' pixel counts 0..16 divided by 16. Values outside that range are refused;\n"
                    "give raw pixel counts with --raw and they are scaled as in training. An empty batch is an\n"
                    "error.")
    pre.add_argument("model", help="a model file written by minicompress (optimize, or minicompress.io.save), or "
                                    "an .onnx file (its input shape is the graph's, without the batch dimension)")
    pre.add_argument("input", nargs="?", default=None, help="a .npy array of samples (see above)")
    pre.add_argument("--input", dest="input_option", default=None, metavar="INPUT", help="the same as INPUT")
    pre.add_argument("--raw", action="store_true",
                     help="INPUT holds raw values (digits: pixel counts 0..16); apply the model file's scaling")
    pre.set_defaults(run=cmd_predict)
    _add_check(sub)
    _add_quantize(sub)
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
