"""`minicompress quantize MODEL.onnx --calibration data.npy --out model.int8.onnx`: static int8, QDQ format.

Writes the graph onnxruntime's `quantize_static(MODEL, OUT, reader, quant_format=QDQ, per_channel=True,
activation_type=QUInt8, weight_type=QInt8, calibrate_method=...)` writes (`onnx.qdq_quantize`): the same
tensors quantized under the float graph's names, the same scales and zero points (uint8 activations,
int8 weights symmetric per channel in [-127, 127]), calibrated by minicompress on the same samples in the
same batches with onnxruntime's calibrator `--method` (`quant.ort_calibrate`):

    minmax        (default) the min and max over all samples
    entropy       KL search over a histogram (--num-bins 128, --num-quantized-bins 128: onnxruntime's
                  defaults, at which the search has a single candidate and gives exactly MinMax's range)
    percentile    |x| histogram of --num-bins 2048, symmetric range at --percentile 99.999
    distribution  [-max|x|, max|x|] (a histogram of --num-bins >= 512, default 2048)

The model is quantized as given: onnxruntime advises `quant_pre_process` first (it folds BatchNormalization
into Conv); run it and pass its output to quantize the folded graph. Then the same data goes through
onnxruntime's quantize_static, and the output says, tensor by tensor, how the two files differ (scales and
zero points of every activation, the int8 weights, the int32 biases, the nodes) and how both agree with the
float model as onnxruntime runs it on the calibration samples (top-1 agreement where the output is 2-D,
max |diff|, cosine, bytes). If onnxruntime cannot quantize or run the model (its shape inference, an
operator), the comparison is skipped with the reason and the model is still written.

`--reduce-range` quantizes the weights to 7 bits ([-64, 63]) on both sides (onnxruntime's `reduce_range=True`):
onnxruntime's uint8 x int8 kernels on x86 CPUs with AVX2 but no VNNI add byte pairs into a saturating int16,
exact only while |x0 w0 + x1 w1| < 2**15, which 7-bit weights guarantee (2 * 255 * 64 = 32640); onnxruntime
recommends it for such CPUs. Without it an 8-bit model can give other results there than the ones printed.

Every check (the model file, one float32 input, the calibration array's shape against the input's, a
writable --out, --method and its options) happens before any work; failures are `CommandError`s (one
line, exit 2), and no output file is left.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile

import numpy as np

from .common import CommandError


def _calibration(path, spec, CommandError):
    """The calibration array (N, *sample) as float32, checked against the graph input `spec`."""
    if not os.path.isfile(path):
        raise CommandError(f"no calibration file at {path!r}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise CommandError(f"--calibration {path!r} is not a .npy array ({type(exc).__name__}: {exc})")
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "fiu":
        raise CommandError(f"--calibration {path!r} must hold real numbers, got dtype {getattr(data, 'dtype', '?')}")
    dims = spec.get("shape")
    if dims is not None:                     # some exporters write -1 for a free dimension
        dims = [d if not isinstance(d, int) or d > 0 else None for d in dims]
    shown = "[" + ", ".join("?" if not isinstance(d, int) else str(d) for d in dims) + "]" if dims else "?"
    if dims is not None:
        fixed = all(isinstance(d, int) for d in dims[1:])
        if fixed and data.ndim == len(dims) - 1 and list(data.shape) == list(dims[1:]):
            data = data[None]                                # one sample
        if data.ndim != len(dims) or any(isinstance(d, int) and d != n for d, n in zip(dims, data.shape)):
            raise CommandError(f"--calibration {path!r} has shape {list(data.shape)}; the model's input "
                               f"{spec['name']!r} is {shown} (give a batch of samples)")
    if data.shape[0] == 0:
        raise CommandError(f"--calibration {path!r} holds no samples")
    if not np.isfinite(data).all():
        raise CommandError(f"--calibration {path!r} holds NaN or infinite values")
    return np.ascontiguousarray(data, np.float32)


def _check_out(out, CommandError):
    folder = os.path.dirname(os.path.abspath(out)) or "."
    if os.path.isdir(out):
        raise CommandError(f"--out {out!r} is a folder; give a file name (e.g. model.int8.onnx)")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise CommandError(f"--out {out!r}: the folder {folder!r} does not exist or is not writable")
    return folder


def minmax_per_channel_qconfig(reduce_range=False):
    """MinMax observers in the scheme of onnxruntime's quantize_static(MinMax, QUInt8 activations, per-channel
    QInt8 weights; reduce_range: 7-bit weights in [-64, 63]), with torch's arithmetic (weight scale
    max|w| / 127.5); for graph-mode quantize_fx. The quantize command itself writes onnxruntime's numbers
    (onnx.qdq_quantize)."""
    from ..quant import dtypes as qd
    from ..quant.observer import MinMaxObserver, PerChannelMinMaxObserver
    from ..quant.qconfig import QConfig
    return QConfig(activation=MinMaxObserver.with_args(dtype=qd.quint8, quant_min=0, quant_max=255),
                   weight=PerChannelMinMaxObserver.with_args(dtype=qd.qint8, qscheme=qd.per_channel_symmetric,
                                                             reduce_range=reduce_range))


def _agreement(out, ref):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    top1 = float(np.mean(out.argmax(1) == ref.argmax(1))) if out.ndim == 2 and out.shape[1] > 1 else None
    cosine = float(out.ravel() @ ref.ravel() / max(np.linalg.norm(out) * np.linalg.norm(ref), 1e-30))
    return top1, float(np.abs(out - ref).max()), cosine


class _Reader:
    """onnxruntime's CalibrationDataReader over the given batches."""

    def __init__(self, name, batches):
        self.items = [{name: x} for x in batches]

    def get_next(self):
        return self.items.pop(0) if self.items else None


def _method_options(args, CommandError):
    """(method, {num_bins, num_quantized_bins, percentile}) from the arguments, refused by name."""
    from ..quant.ort_calibrate import METHODS, check_calibration_args
    if args.method not in METHODS:
        raise CommandError(f"--method {args.method!r}: expected one of {', '.join(METHODS)}")
    flags = {"percentile": "--percentile", "num_bins": "--num-bins", "num_quantized_bins": "--num-quantized-bins"}
    options = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    try:
        check_calibration_args(args.method, **options)
    except ValueError as exc:
        text = re.sub(r"(?<![\w'-])(percentile|num_bins|num_quantized_bins)(=| )",
                      lambda m: flags[m.group(1)] + " ", str(exc))
        raise CommandError(text) from None
    return args.method, options


def quantize_command(args, CommandError):
    from .onnx import load_onnx
    method, options = _method_options(args, CommandError)
    model, proto = load_onnx(args.model, CommandError)
    if len(model.inputs) != 1 or (model.inputs[0].get("dtype") or "float32") != "float32":
        raise CommandError(f"{args.model}: quantize takes models with one float32 input, got "
                           f"{[(s['name'], s.get('dtype')) for s in model.inputs]}")
    spec = model.inputs[0]
    data = _calibration(args.calibration, spec, CommandError)
    folder = _check_out(args.out, CommandError)
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be a positive int, got {args.batch_size}")

    from ..onnx.qdq_quantize import quantize_qdq
    batches = [data[i:i + args.batch_size] for i in range(0, len(data), args.batch_size)]
    try:
        ours = quantize_qdq(proto, batches, method, per_channel=not args.per_tensor,
                            reduce_range=args.reduce_range, **options)
    except (NotImplementedError, ValueError, TypeError, IndexError) as exc:   # the graph, not the command
        raise CommandError(f"{args.model}: cannot quantize it: {exc}") from exc
    onnx = _onnx_module()
    handle, tmp = tempfile.mkstemp(suffix=".onnx", dir=folder)
    os.close(handle)
    try:                               # --out appears only once everything has worked
        onnx.save(ours, tmp)
        print(f"static int8 (QDQ, {'per tensor' if args.per_tensor else 'per channel'}, {method}"
              f"{''.join(f', {k}={v}' for k, v in options.items())}), {len(data)} calibration samples in "
              f"batches of {args.batch_size}")
        if args.no_compare:
            print("comparison with onnxruntime skipped: --no-compare")
        else:
            _compare(args, proto, spec, data, batches, ours, method, options)
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {args.out}")
    return 0


def _onnx_module():
    from ..onnx.importer import _onnx
    return _onnx()


def qdq_differences(ours, theirs):
    """What differs between two QDQ ModelProtos, tensor by tensor: a dict of
    activations (count, max relative scale difference, equal zero points), weights and biases (count,
    identical), missing / extra initializers and nodes (op type, inputs, outputs)."""
    from onnx import numpy_helper
    a = {t.name: numpy_helper.to_array(t) for t in ours.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in theirs.graph.initializer}
    quantized_activations = {n.input[1] for n in theirs.graph.node if n.op_type == "QuantizeLinear"}
    out = {"activations": 0, "scale_rel_diff": 0.0, "zero_points_equal": 0, "weights": 0, "weights_identical": 0,
           "weight_scale_rel_diff": 0.0, "biases": 0, "biases_identical": 0}
    for name in sorted(set(a) & set(b)):
        x, y = a[name], b[name]
        same = x.dtype == y.dtype and x.shape == y.shape
        if name.endswith("_scale") and same:
            rel = float(np.max(np.abs(x.astype(np.float64) - y) / np.maximum(np.abs(y), 1e-30))) if y.size else 0.0
            key = "scale_rel_diff" if name in quantized_activations else "weight_scale_rel_diff"
            if rel > out[key]:
                out[key] = rel
                if name in quantized_activations:
                    out["worst_scale"] = (name, float(np.ravel(x)[0]), float(np.ravel(y)[0]))
            if name in quantized_activations:
                out["activations"] += 1
                zp = name[:-len("_scale")] + "_zero_point"
                out["zero_points_equal"] += int(zp in a and zp in b and np.array_equal(a[zp], b[zp]))
        elif name.endswith("_quantized"):
            kind = "biases" if y.dtype == np.int32 else "weights"
            out[kind] += 1
            out[kind + "_identical"] += int(same and np.array_equal(x, y))
    out["initializers_only_ours"] = sorted(set(a) - set(b))
    out["initializers_only_theirs"] = sorted(set(b) - set(a))
    nodes = lambda m: {(n.op_type, tuple(n.input), tuple(n.output)) for n in m.graph.node}  # noqa: E731
    out["nodes_only_ours"] = sorted(nodes(ours) - nodes(theirs))
    out["nodes_only_theirs"] = sorted(nodes(theirs) - nodes(ours))
    return out


def _compare(args, proto, spec, data, batches, ours, method, options):
    """onnxruntime's quantize_static on the same batches; the differences and the agreement table."""
    from .onnx import _ort_session
    import numba
    threads = numba.get_num_threads()
    try:
        theirs_bytes = _ort_quantize_static(args.model, spec["name"], batches, method, options,
                                            per_channel=not args.per_tensor, reduce_range=args.reduce_range)
    except Exception as exc:  # noqa: BLE001  (any failure of the oracle only skips the comparison)
        print(f"comparison with onnxruntime skipped: its quantize_static failed on this model "
              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        return
    theirs = _onnx_from(theirs_bytes)
    d = qdq_differences(ours, theirs)
    print("against onnxruntime's quantize_static on the same samples and batches, tensor by tensor:")
    print(f"  activations  {d['activations']} quantized; scales within {d['scale_rel_diff']:.2g} (relative); "
          f"zero points equal on {d['zero_points_equal']}/{d['activations']}")
    if d["scale_rel_diff"] > 1e-5:
        name, here, there = d["worst_scale"]
        print(f"               largest difference: {name!r}, {here:.6g} here, {there:.6g} in onnxruntime's (the "
              "float graph's values differ between the two runtimes there)")
    print(f"  weights      {d['weights_identical']}/{d['weights']} int8 tensors identical; scales within "
          f"{d['weight_scale_rel_diff']:.2g}")
    print(f"  biases       {d['biases_identical']}/{d['biases']} int32 tensors identical")
    same_graph = not (d["nodes_only_ours"] or d["nodes_only_theirs"] or d["initializers_only_ours"]
                      or d["initializers_only_theirs"])
    if same_graph:
        print("  graph        the same nodes and initializers, by name")
    else:
        print(f"  graph        nodes only here {d['nodes_only_ours'][:3]}, only in onnxruntime's "
              f"{d['nodes_only_theirs'][:3]}; initializers only here {d['initializers_only_ours'][:3]}, "
              f"only in onnxruntime's {d['initializers_only_theirs'][:3]}")
    from ..training import measure_latency
    from .onnx import _SessionModel
    one = data[:1]
    try:
        float_session = _ort_session(proto, threads)
        reference = np.concatenate([float_session.run(None, {spec["name"]: x})[0] for x in batches])
        rows = [("float (onnxruntime)", (1.0 if reference.ndim == 2 and reference.shape[1] > 1 else None, 0.0, 1.0),
                 len(proto.SerializeToString()), measure_latency(_SessionModel(float_session), one))]
        for name, model, size in (("minicompress's file, onnxruntime", ours, len(ours.SerializeToString())),
                                  ("onnxruntime's file, onnxruntime", theirs, len(theirs_bytes))):
            session = _ort_session(model, threads)
            out = np.concatenate([session.run(None, {spec["name"]: x})[0] for x in batches])
            rows.append((name, _agreement(out, reference), size, measure_latency(_SessionModel(session), one)))
    except Exception as exc:  # noqa: BLE001
        print(f"agreement table skipped: onnxruntime cannot run these models ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''})")
        return
    try:                       # the same file on minicompress's integer layers (onnx.fold_qdq)
        from ..autograd import no_grad
        from ..onnx import fold_qdq, load
        folded = fold_qdq(load(ours))
        with no_grad():
            out = np.concatenate([np.asarray(_first(folded(x)).numpy()) for x in batches])
            seconds = measure_latency(folded, one)
        rows.insert(1, ("minicompress's file, minicompress", _agreement(out, reference), rows[1][2], seconds))
    except Exception as exc:  # noqa: BLE001  (a row of the report, not the result: say why and go on)
        print(f"minicompress's run of its file skipped ({type(exc).__name__}: {exc})")
    print(f"agreement with the float model on the calibration samples ({threads} thread(s); latency: median "
          "of one sample)")
    print(f"{'model':34s} {'top-1 agree':>11s} {'max |diff|':>11s} {'cosine':>9s} {'bytes':>11s} {'latency b1':>12s}")
    for name, (top1, diff, cosine), size, seconds in rows:
        agree = "-" if top1 is None else f"{top1:.4f}"
        print(f"{name:34s} {agree:>11s} {diff:11.4g} {cosine:9.6f} {size:11,d} {seconds * 1e3:9.3f} ms")


def _first(out):
    return out[0] if isinstance(out, tuple) else out


ORT_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile", "distribution": "Distribution"}


def _ort_quantize_static(path, input_name, batches, method="minmax", options=None, per_channel=True,
                         reduce_range=False):
    """The bytes of onnxruntime's QDQ int8 model of the file at `path` (as given, no pre-processing), calibrated
    on `batches` in that order with CalibrationMethod[method] and its extra options."""
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    extra = {"CalibPercentile": options["percentile"]} if options and "percentile" in options else {}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)            # its advice to pre-process
    try:
        with tempfile.TemporaryDirectory() as work, contextlib.redirect_stdout(io.StringIO()):
            out = os.path.join(work, "int8.onnx")
            reader = _Reader(input_name, list(batches))
            kwargs = {}
            if options and ("num_bins" in options or "num_quantized_bins" in options):
                # quantize_static passes no bin counts to its calibrator: run that calibrator (create_calibrator,
                # as quantize_static does) with them and hand its ranges over as a calibration cache
                from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
                from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
                from pathlib import Path
                calibrator = create_calibrator(Path(path), list(set(QLinearOpsRegistry) | set(QDQRegistry)),
                                               os.path.join(work, "augmented.onnx"),
                                               CalibrationMethod[ORT_METHODS[method]], extra_options=dict(options))
                calibrator.collect_data(reader)
                kwargs["calibration_cache_path"] = os.path.join(work, "ranges.json")
                save_tensors_data(calibrator.compute_data(), kwargs["calibration_cache_path"])
                reader = None
            quantize_static(path, out, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod[ORT_METHODS[method]],
                            extra_options=extra, **kwargs)
            with open(out, "rb") as f:
                return f.read()
    finally:
        root.setLevel(level)


def _opset(proto):
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)


def _onnx_from(data):
    from ..onnx.importer import _onnx
    return _onnx().load_from_string(data)


def add_parsers(sub):
    qua = sub.add_parser("quantize", help="static int8 (QDQ, per channel) of an ONNX model as onnxruntime's "
                                          "quantize_static writes it, compared tensor by tensor with it")
    qua.add_argument("model", help="a float .onnx file with one float32 input")
    qua.add_argument("--calibration", required=True, help=".npy array of calibration samples (batch, *input shape)")
    qua.add_argument("--out", required=True, help="the int8 model to write (QDQ .onnx)")
    qua.add_argument("--method", default="minmax",
                     help="onnxruntime's calibrator: minmax (default), entropy, percentile, distribution. "
                          "entropy at its default bins (128 bins, 128 quantized bins) has a single candidate "
                          "and gives exactly minmax's range; give --num-bins larger than --num-quantized-bins "
                          "for a search")
    qua.add_argument("--percentile", type=float, default=None,
                     help="percentile method: the percentile in [0, 100] (default 99.999)")
    qua.add_argument("--num-bins", type=int, default=None,
                     help="histogram bins (entropy 128, percentile 2048, distribution 2048 and at least 512)")
    qua.add_argument("--num-quantized-bins", type=int, default=None,
                     help="entropy: bins of the quantized distribution (default 128)")
    qua.add_argument("--batch-size", type=int, default=32,
                     help="calibration batch size (default 32); onnxruntime's histogram methods need batches of "
                          "one size (a smaller last batch makes its quantize_static fail, and the comparison "
                          "is skipped); minicompress pools any")
    qua.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor (default: per channel)")
    qua.add_argument("--reduce-range", action="store_true", help="7-bit weights ([-64, 64]), onnxruntime's reduce_range")
    qua.add_argument("--no-compare", action="store_true", help="do not run onnxruntime's quantize_static")
    qua.set_defaults(run=cmd_quantize)


def cmd_quantize(args):
    from .onnx import is_onnx_path
    if not is_onnx_path(args.model):
        raise CommandError(f"quantize takes an .onnx file, got {args.model!r}")
    if not os.path.isfile(args.model):
        raise CommandError(f"no ONNX file at {args.model!r}")
    try:
        return quantize_command(args, CommandError)
    except NotImplementedError as exc:     # an operator minicompress does not implement
        raise CommandError(str(exc)) from exc
