"""`minicompress check MODEL.onnx`, and .onnx files in `minicompress inspect`, `bench` and `predict`: the file is
opened as a `minicompress.onnx.InferenceSession` (a GraphModule behind onnxruntime's API) and described, timed
or run; `bench` also times onnxruntime's session on the same inputs, when it is installed, with the same
number of threads (`--threads`, default: Numba's current count; onnxruntime's idle threads told not to spin),
both through `session.run`, and prints the ratio. A QDQ file is timed twice in minicompress: as written
(float operators between Q / DQ) and folded onto its integer layers (`onnx.fold_qdq`), as onnxruntime runs it.

Every problem with the file (not ONNX, an operator minicompress does not implement, more than one input, an
input that is not float32) is a `CommandError` raised before any work starts.

    minicompress check MODEL.onnx [--input x.npy ...] [--rtol 1e-4] [--atol 1e-5] [--arithmetic exact]

(`check MODEL.tflite` is `cli/tflite.py`'s.)
"""
from __future__ import annotations

import os

import numpy as np

from .common import CommandError, given_sample_shape, shape_forms


def is_onnx_path(path):
    return os.fspath(path).lower().endswith(".onnx")


def load_onnx_session(path, CommandError, threads=0):
    """(minicompress.onnx.InferenceSession, ModelProto) of the file at `path` (its runs on `threads`
    threads; 0: as the process is set), or CommandError naming the problem."""
    if not os.path.isfile(path):
        raise CommandError(f"no such ONNX file: {path}")
    try:
        from ..graph.registry import UnsupportedOperatorError
        from ..onnx.importer import read_model
        from ..onnx.session import InferenceSession, SessionOptions
    except ImportError as exc:
        raise CommandError(f"reading .onnx files needs the onnx package: pip install 'minicompress[onnx]' ({exc})")
    try:
        proto = read_model(path)
    except Exception as exc:            # protobuf's DecodeError and friends: the bytes are not an ONNX model
        raise CommandError(f"{path} is not an ONNX model ({type(exc).__name__}: {exc})")
    options = SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = InferenceSession(proto, options)
    except UnsupportedOperatorError as exc:
        raise CommandError(f"{path}: unsupported by minicompress: {exc}")
    except Exception as exc:            # a malformed graph: the importer names the node
        raise CommandError(f"{path}: cannot load the ONNX graph ({type(exc).__name__}: {exc})")
    return session, proto


def load_onnx(path, CommandError):
    """(GraphModule, ModelProto) of the file at `path`, or CommandError naming the problem."""
    session, proto = load_onnx_session(path, CommandError)
    return session.graph_module, proto


def load_onnx_file(path):
    return load_onnx(path, CommandError)


def sample_shape(model, path, given, CommandError, required=True):
    """The shape of one sample of the graph's single float32 input: --input-shape (one sample's dims or the
    input's full shape, `common.given_sample_shape`), or the declared input shape without its first (batch)
    dimension; for a declared shape with dynamic dims, None when not `required` (predict: the input's own
    shape is checked by the graph)."""
    if len(model.inputs) != 1:
        raise CommandError(f"{path} has {len(model.inputs)} inputs {[s['name'] for s in model.inputs]}; "
                           "bench and predict run models with one input")
    spec = model.inputs[0]
    if (spec.get("dtype") or "float32") != "float32":
        raise CommandError(f"{path}: input {spec['name']!r} is {spec['dtype']}; bench and predict feed float32")
    dims = spec.get("shape")
    if given:
        return given_sample_shape(given, dims, repr(spec["name"]))
    if not dims or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        if not required:
            return None
        raise CommandError(f"{path}: input {spec['name']!r} has shape {dims}, not (batch, fixed dims...); "
                           + (shape_forms(len(dims)) if dims else "give --input-shape as one sample's dims"))
    return tuple(dims[1:])


def describe_onnx(model, proto, path):
    """The file's header, inputs and outputs, operator counts, initializer bytes by dtype, and the node
    listing of the loaded graph."""
    from ..onnx.importer import _onnx
    numpy_helper = _onnx().numpy_helper
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)
    lines = [f"ONNX model {path}: ir_version {proto.ir_version}, opset {opsets}, "
             f"producer {proto.producer_name or '?'} {proto.producer_version}".rstrip()]
    for kind, specs in (("input", model.inputs), ("output", [{"name": n} for n in model.outputs])):
        for spec in specs:
            shape = spec.get("shape")
            lines.append(f"{kind}: {spec['name']}" + (f" {spec.get('dtype')} {shape}" if "shape" in spec else ""))
    counts = {}
    for node in proto.graph.node:
        key = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        counts[key] = counts.get(key, 0) + 1
    lines.append(f"nodes: {len(proto.graph.node)} (" + ", ".join(f"{k} {v}" for k, v in
                                                               sorted(counts.items(), key=lambda kv: -kv[1])) + ")")
    by_dtype = {}
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        by_dtype[str(array.dtype)] = by_dtype.get(str(array.dtype), 0) + array.nbytes
    total = sum(by_dtype.values())
    lines.append(f"initializers: {total:,} bytes" + (" (" + ", ".join(f"{d} {n:,}" for d, n in
                                                                     sorted(by_dtype.items())) + ")" if total else ""))
    if counts.get("QuantizeLinear") and counts.get("DequantizeLinear"):
        lines.append("quantized: QDQ format (QuantizeLinear / DequantizeLinear around float operators)")
    lines.append(str(model.graph))
    return "\n".join(lines)


def _ort_session(proto, threads):
    """onnxruntime's session of `proto` on `threads` intra-op threads whose idle threads do not spin
    (`session.intra_op.allow_spinning` 0: spinning threads would take the cores from the other side's
    runs between calls, as OpenMP's active waiting does; minicompress's wait passively)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3          # errors only: not its notes on unused initializers
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def thread_policy(threads):
    """The line `bench` prints: how many threads each side runs and how its idle threads wait."""
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    return (f"threads: {threads} each (minicompress: Numba, OMP_WAIT_POLICY={policy}, OpenBLAS 1; onnxruntime: "
            f"intra_op_num_threads={threads}, session.intra_op.allow_spinning=0: idle threads do not spin)")


def bench_onnx(session, proto, shape, batches, threads, CommandError):
    """Print minicompress's (and onnxruntime's) median latency per image at each batch size, both run
    through an InferenceSession on `threads` threads."""
    from ..kernels.threads import thread_count
    from ..training.latency import measure_latency
    try:
        theirs_session = _ort_session(proto, threads)
    except ImportError:
        theirs_session = None
        print("onnxruntime is not installed: timing minicompress only")
    except Exception as exc:          # onnxruntime refuses a graph minicompress runs: time minicompress alone
        theirs_session = None
        print(f"onnxruntime cannot run this model ({type(exc).__name__}): timing minicompress only")
    print(thread_policy(threads) if theirs_session is not None else f"threads: {threads} (minicompress)")
    folded = _folded(session.graph_module)
    if folded is not None:
        print("QDQ units folded onto minicompress's integer layers (onnx.fold_qdq): timed as 'int8 layers'")
    rng = np.random.default_rng(0)
    for batch in batches:
        x = rng.random((batch,) + tuple(shape), dtype=np.float32)
        try:
            ours = measure_latency(_SessionModel(session), x) / batch
            if folded is not None:
                with thread_count(threads):
                    ours_folded = measure_latency(folded, x) / batch
        except Exception as exc:      # the graph cannot run on this input shape
            raise CommandError(f"the model failed on an input of shape {x.shape} ({type(exc).__name__}: {exc})")
        line = f"batch {batch:4d}: minicompress {ours * 1e3:.4f} ms/image"
        if folded is not None:
            line += f", minicompress int8 layers {ours_folded * 1e3:.4f} ms/image"
        if theirs_session is not None:
            theirs = measure_latency(_SessionModel(theirs_session), x) / batch
            line += f", onnxruntime {theirs * 1e3:.4f} ms/image, minicompress / onnxruntime {ours / theirs:.2f}x"
            if folded is not None:
                line += f" (int8 layers {ours_folded / theirs:.2f}x)"
        print(line)
    return 0


def _folded(model):
    """`fold_qdq(model)` when it turned QDQ units into integer layers, else None."""
    from ..onnx.qdq_fold import fold_qdq
    folded = fold_qdq(model)
    return folded if any(n["kind"] == "module" and n["op_type"] == "Quantize" for n in folded.nodes) else None


class _SessionModel:
    """An InferenceSession (minicompress's or onnxruntime's) behind the two methods `latency.measure_latency`
    calls, so that both are timed alike."""

    def __init__(self, session):
        self.session, self.name = session, session.get_inputs()[0].name

    def eval(self):
        return self

    def __call__(self, x):
        return self.session.run(None, {self.name: x.data})



def add_parsers(sub):
    chk = sub.add_parser("check", help="run an ONNX model in minicompress and onnxruntime (a .tflite one in LiteRT), "
                                       "compare node by node")
    chk.add_argument("model", help="an .onnx file, or a .tflite file (compared with LiteRT's reference kernels, "
                                   "beside LiteRT's own optimized-vs-reference spread)")
    chk.add_argument("--input", action="append", default=None,
                     help=".npy file of a graph input, repeated in the graph's input order (default: random)")
    chk.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (of each value's max |x|)")
    chk.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance")
    chk.add_argument("--arithmetic", choices=("exact", "u8s8-saturating"), default="exact",
                     help="how minicompress sums uint8 x int8 products (u8s8-saturating: onnxruntime's int16 pair "
                          "saturation on x86 CPUs with AVX2 and no VNNI); a diverging integer node is diagnosed in both")
    chk.set_defaults(run=cmd_check)



def cmd_check(args):
    from .tflite import cmd_check_tflite, is_tflite_path
    if is_tflite_path(args.model):
        return cmd_check_tflite(args)
    if not os.path.isfile(args.model):
        raise CommandError(f"no ONNX file at {args.model!r}")
    try:
        from ..onnx.check import check_command
    except ImportError as exc:
        raise CommandError(f"check needs onnx and onnxruntime: pip install 'minicompress[onnx]' ({exc})") from exc
    try:
        return check_command(args)
    except NotImplementedError as exc:     # an operator minicompress does not implement
        raise CommandError(str(exc)) from exc
