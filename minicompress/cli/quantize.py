"""`minicompress quantize MODEL.onnx --calibration data.npy --out model.int8.onnx`: static int8, per channel.

The float graph is imported (`onnx.load`), quantized by the graph passes (`quant.quantize_fx`: Conv+BN+ReLU
fused in the graph, observers at node outputs, the project's integer layers after convert) with MinMax
observers -- quint8 activations over the full [0, 255] range, qint8 weights per output channel, symmetric --
and written as QDQ ONNX through `onnx.export`. The same calibration data goes through onnxruntime's
`quantize_static(QuantFormat.QDQ, per_channel=True, activation_type=QUInt8, weight_type=QInt8, MinMax)`, the
same scheme, and the table compares both with the float model as onnxruntime runs it, on the calibration
samples:

    top-1 agreement   fraction of samples whose argmax matches the float model's (2-D outputs of >1 class)
    max |diff|        largest absolute difference from the float output
    cosine            cosine similarity of the flattened outputs to the float output
    bytes             size of the ONNX file
    latency b1        median ms of one forward at batch 1 (minicompress's int8 layers in minicompress,
                      onnxruntime's model in onnxruntime, with as many threads)

Every check (the model file, one float32 input, the calibration array's shape against the input's, a
writable --out) happens before any work; failures are `CommandError`s (one line, exit 2).
"""
from __future__ import annotations

import os
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


def minmax_per_channel_qconfig():
    """MinMax observers as onnxruntime's quantize_static(MinMax, QUInt8 activations, per-channel QInt8 weights)."""
    from ..quant import dtypes as qd
    from ..quant.observer import MinMaxObserver, PerChannelMinMaxObserver
    from ..quant.qconfig import QConfig
    return QConfig(activation=MinMaxObserver.with_args(dtype=qd.quint8, quant_min=0, quant_max=255),
                   weight=PerChannelMinMaxObserver.with_args(dtype=qd.qint8, qscheme=qd.per_channel_symmetric))


def _agreement(out, ref):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    top1 = float(np.mean(out.argmax(1) == ref.argmax(1))) if out.ndim == 2 and out.shape[1] > 1 else None
    cosine = float(out.ravel() @ ref.ravel() / max(np.linalg.norm(out) * np.linalg.norm(ref), 1e-30))
    return top1, float(np.abs(out - ref).max()), cosine


class _Reader:
    def __init__(self, name, data, batch):
        self.items = [{name: data[i:i + batch]} for i in range(0, len(data), batch)]

    def get_next(self):
        return self.items.pop(0) if self.items else None


def quantize_command(args, CommandError):
    from .onnx import load_onnx
    model, proto = load_onnx(args.model, CommandError)
    if len(model.inputs) != 1 or (model.inputs[0].get("dtype") or "float32") != "float32":
        raise CommandError(f"{args.model}: quantize takes models with one float32 input, got "
                           f"{[(s['name'], s.get('dtype')) for s in model.inputs]}")
    spec = model.inputs[0]
    data = _calibration(args.calibration, spec, CommandError)
    folder = _check_out(args.out, CommandError)
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be a positive int, got {args.batch_size}")
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        raise CommandError(f"quantize compares with onnxruntime: pip install 'minicompress[onnx]' ({exc})")

    import numba

    from ..autograd import no_grad
    from ..quant.quantize_fx import convert_fx, prepare_fx
    from ..onnx.exporter import export
    threads = numba.get_num_threads()
    batches = [data[i:i + args.batch_size] for i in range(0, len(data), args.batch_size)]

    prepared = prepare_fx(model, minmax_per_channel_qconfig())
    with no_grad():
        for x in batches:
            prepared(x)
    quantized = convert_fx(prepared)
    handle, tmp = tempfile.mkstemp(suffix=".onnx", dir=folder)
    os.close(handle)
    try:                               # --out appears only once everything has worked
        export(quantized, data[:1], tmp, opset_version=max(13, _opset(proto)))
        _compare(args, proto, spec, data, batches, quantized, os.path.getsize(tmp), threads)
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {args.out}")
    return 0


def _compare(args, proto, spec, data, batches, quantized, our_bytes, threads):
    """Run onnxruntime's quantize_static on the same data and print the table (see the module docstring)."""
    from ..autograd import no_grad
    from ..training import measure_latency
    from .onnx import _SessionModel, _ort_session
    theirs_bytes = _ort_quantize_static(args.model, spec["name"], data, args.batch_size)
    float_session = _ort_session(proto, threads)
    theirs_session = _ort_session(_onnx_from(theirs_bytes), threads)
    reference = np.concatenate([float_session.run(None, {spec["name"]: x})[0] for x in batches])
    with no_grad():
        ours = np.concatenate([np.asarray(quantized(x).numpy()) for x in batches])
    theirs = np.concatenate([theirs_session.run(None, {spec["name"]: x})[0] for x in batches])
    one = data[:1]
    rows = [("float (onnxruntime)", (1.0 if reference.ndim == 2 and reference.shape[1] > 1 else None, 0.0, 1.0),
             len(proto.SerializeToString()), measure_latency(_SessionModel(float_session), one)),
            ("minicompress int8", _agreement(ours, reference), our_bytes,
             measure_latency(quantized, one)),
            ("onnxruntime quantize_static", _agreement(theirs, reference), len(theirs_bytes),
             measure_latency(_SessionModel(theirs_session), one))]
    print(f"static int8, per channel (MinMax, quint8 activations, qint8 weights), {len(data)} calibration "
          f"samples, {threads} thread(s); agreement with the float model on the calibration samples")
    print(f"{'model':30s} {'top-1 agree':>11s} {'max |diff|':>11s} {'cosine':>9s} {'bytes':>11s} {'latency b1':>12s}")
    for name, (top1, diff, cosine), size, seconds in rows:
        agree = "-" if top1 is None else f"{top1:.4f}"
        print(f"{name:30s} {agree:>11s} {diff:11.4g} {cosine:9.6f} {size:11,d} {seconds * 1e3:9.3f} ms")


def _ort_quantize_static(path, input_name, data, batch):
    """The bytes of onnxruntime's QDQ int8 model of the file at `path`, after its recommended pre-processing
    (`quant_pre_process`: shape inference and the graph optimizer, which folds BatchNormalization into Conv)."""
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)            # its advice to pre-process, which is done here
    try:
        with tempfile.TemporaryDirectory() as work:
            prepared, out = os.path.join(work, "pre.onnx"), os.path.join(work, "int8.onnx")
            quant_pre_process(path, prepared)
            quantize_static(prepared, out, _Reader(input_name, data, batch), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
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
    qua = sub.add_parser("quantize", help="static int8 (per channel) of an ONNX model, compared with onnxruntime's "
                                          "quantize_static on the same calibration data")
    qua.add_argument("model", help="a float .onnx file with one float32 input")
    qua.add_argument("--calibration", required=True, help=".npy array of calibration samples (batch, *input shape)")
    qua.add_argument("--out", required=True, help="the int8 model to write (QDQ .onnx)")
    qua.add_argument("--batch-size", type=int, default=32, help="calibration batch size (default 32)")
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
