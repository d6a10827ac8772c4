""".tflite files in `minicompress inspect`, `check`, `bench` and `predict`: the file is read with
`minicompress.tflite.load` (a GraphModule) and

- inspect: described: schema version, inputs and outputs (NHWC as stored), operator counts by TFLite name,
  constant bytes by tensor type (sparse ones counted apart), and the node listing of the loaded graph;
- check: compared operator by operator with LiteRT's reference kernels, beside LiteRT's default kernels'
  own spread (`tflite.check`);
- bench: timed beside LiteRT's interpreter with its default kernels (XNNPACK), both on the same inputs and
  `--threads N` threads (default 1: LiteRT's own default);
- predict: run on a .npy batch, its first output read as class logits (an integer output dequantized by
  its scale and zero point), as `predict` reads an .onnx file's.

Every problem with the file (not TFLite, an operator minicompress does not implement, the flatbuffers or
ai-edge-litert package missing) is a `CommandError` raised before any work starts.
"""
from __future__ import annotations

import os

import numpy as np

from .common import CommandError


def is_tflite_path(path):
    return os.fspath(path).lower().endswith(".tflite")


def require_litert(command):
    """CommandError unless LiteRT's interpreter (ai-edge-litert, the [tflite] extra) imports."""
    from ..tflite.check import litert_interpreter
    try:
        litert_interpreter()
    except ImportError as exc:
        raise CommandError(f"{command} MODEL.tflite: {exc}")


def load_tflite_file(path):
    """(GraphModule, the file's tables) of the .tflite file at `path`, or CommandError naming the problem."""
    if not os.path.isfile(path):
        raise CommandError(f"no such TFLite file: {path}")
    try:
        from ..graph.registry import UnsupportedOperatorError
        from ..tflite import TFLiteFormatError, load, read
    except ImportError as exc:
        raise CommandError(f"reading .tflite files needs the flatbuffers package: pip install 'minicompress[tflite]' "
                           f"({exc})")
    try:
        tables, _ = read(path)
        model = load(path)
    except TFLiteFormatError as exc:
        raise CommandError(str(exc))
    except UnsupportedOperatorError as exc:
        raise CommandError(f"unsupported by minicompress: {exc}")
    return model, tables


def describe_tflite(model, tables, path):
    from ..tflite import schema
    sub = tables["subgraphs"][0]
    lines = [f"TFLite model {path}: schema version {tables['version']}, {len(tables['subgraphs'])} subgraph(s)"
             + (f", {tables['description']!r}" if tables["description"] else "")]
    for kind, specs in (("input", model.inputs), ("output", [{"name": n} for n in model.outputs])):
        for spec in specs:
            lines.append(f"{kind}: {spec['name']}" + (f" {spec['dtype']} {spec['shape']}" if "shape" in spec else ""))
    counts = {}
    for op in sub["operators"]:
        code = tables["opcodes"][op["opcode_index"]]
        name = code["custom_code"] if code["code"] == schema.CUSTOM else schema.operator_name(code["code"])
        counts[name] = counts.get(name, 0) + 1
    lines.append(f"operators: {len(sub['operators'])} (" + ", ".join(
        f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) + ")")
    by_type, sparse = {}, 0
    for tensor in sub["tensors"]:
        b = tensor["buffer"]
        if 0 < b < len(tables["buffers"]) and tables["buffers"][b].size:
            name = schema.TENSOR_TYPE_NAMES[tensor["type"]].lower() if tensor["type"] < len(
                schema.TENSOR_TYPE_NAMES) else str(tensor["type"])
            by_type[name] = by_type.get(name, 0) + int(tables["buffers"][b].size)
            sparse += tensor["sparsity"] is not None
    total = sum(by_type.values())
    lines.append(f"constants: {total:,} bytes" + (" (" + ", ".join(f"{d} {n:,}" for d, n in sorted(by_type.items()))
                                                   + ")" if total else "")
                 + (f", {sparse} stored sparse" if sparse else ""))
    lines.append(str(model.graph))
    return "\n".join(lines)



# ----- check -------------------------------------------------------------------------------------------------

def cmd_check_tflite(args):
    if args.arithmetic != "exact":
        raise CommandError(f"--arithmetic {args.arithmetic}: it applies to .onnx files (onnxruntime's uint8 x int8 "
                           "sums); a .tflite file is compared with LiteRT's kernels as they are")
    model, _ = load_tflite_file(args.model)
    require_litert("check")
    from ..tflite.check import check_command
    try:
        return check_command(args, model)
    except RuntimeError as exc:        # LiteRT refuses a file minicompress reads, or fails while running it
        raise CommandError(f"{args.model}: LiteRT cannot run it ({exc})")


# ----- bench -------------------------------------------------------------------------------------------------

class _Runner:
    """One forward call of minicompress's graph or LiteRT's interpreter on the inputs it holds (several, of
    the file's dtypes), behind the two methods `latency.measure_latency` calls; the example that
    measure_latency passes is ignored."""

    def __init__(self, call):
        self.call = call

    def eval(self):
        return self

    def __call__(self, _example):
        return self.call()


def litert_runner(data, inputs, threads):
    """A call that sets the inputs, invokes LiteRT's interpreter (default kernels, `threads` threads) and
    copies its outputs out, as an application does."""
    from ..tflite.check import litert_interpreter, quiet_stderr
    Interpreter, _ = litert_interpreter()
    with quiet_stderr():
        interpreter = Interpreter(model_content=data, num_threads=threads)
        interpreter.allocate_tensors()
    ins = [d["index"] for d in interpreter.get_input_details()]
    outs = [d["index"] for d in interpreter.get_output_details()]

    def call():
        for index, x in zip(ins, inputs):
            interpreter.set_tensor(index, x)
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in outs]
    return call


def output_agreement(ours, theirs):
    """One line: how far minicompress's outputs are from LiteRT's (so that both sides are seen to do the same
    work): the largest difference relative to the output's max |value|, integer outputs in steps."""
    from ..tflite.check import difference
    parts = []
    for k, (a, b) in enumerate(zip(ours, theirs)):
        a = a.numpy()
        if a.shape != b.shape:
            parts.append(f"output {k}: shape {list(a.shape)} != LiteRT's {list(b.shape)}")
            continue
        max_abs, scale = difference(a, b)
        parts.append(f"output {k}: {int(max_abs)} steps" if b.dtype.kind in "iu" else
                     f"output {k}: max rel {max_abs / scale if scale else max_abs:.2e}")
    return "outputs beside LiteRT's default kernels: " + ", ".join(parts)


def bench_tflite(args, threads):
    """Print minicompress's (the compiled plan, `minicompress.compile`) and LiteRT's median latency per call on
    the file's input shapes, and the ratio."""
    import minicompress as mc

    from ..kernels.threads import thread_count
    from ..tflite.check import example_inputs
    from ..training.latency import measure_latency
    model, _ = load_tflite_file(args.model)
    shapes = ", ".join(f"{s['name']} {s['dtype']} {s['shape']}" for s in model.inputs)
    if args.batch_sizes is not None or args.input_shape is not None:
        raise CommandError(f"--batch-sizes / --input-shape: a .tflite file is timed at the input shapes it stores "
                           f"({shapes})")
    require_litert("bench")
    with open(args.model, "rb") as f:
        data = f.read()
    inputs = example_inputs(model)
    try:
        theirs = litert_runner(data, inputs, threads)
    except (RuntimeError, ValueError) as exc:
        raise CommandError(f"{args.model}: LiteRT cannot run it ({exc})")

    try:
        plan = mc.compile(model, inputs)          # the runtime path: one compiled plan for the stored shapes
    except Exception as exc:       # a crafted file can hold a model that loads but cannot run
        raise CommandError(f"the model in {args.model} failed on its inputs ({type(exc).__name__}: {exc})")

    def ours():
        with mc.no_grad():
            return plan(*inputs)
    print(f"threads: {threads} each (minicompress: Numba, OpenBLAS 1; LiteRT: Interpreter(num_threads={threads}), "
          "its default kernels (XNNPACK))")
    print(f"inputs: {shapes} (float N(0, 1), integer codes uniform)")
    try:
        with thread_count(threads):
            got = ours()
            mine = measure_latency(_Runner(ours), np.zeros(1))
    except Exception as exc:       # a crafted file can hold a model that loads but cannot run
        raise CommandError(f"the model in {args.model} failed on its inputs ({type(exc).__name__}: {exc})")
    print(output_agreement(got if isinstance(got, tuple) else (got,), theirs()))
    litert = measure_latency(_Runner(theirs), np.zeros(1))
    print(f"minicompress {mine * 1e3:.4f} ms, LiteRT {litert * 1e3:.4f} ms, minicompress / LiteRT {mine / litert:.2f}x")
    return 0


# ----- predict -----------------------------------------------------------------------------------------------

def predict_shape(model, path):
    """(one sample's shape, the batch the file stores) of the model's one input."""
    if len(model.inputs) != 1:
        raise CommandError(f"{path}: predict reads models of one input; this one takes {len(model.inputs)} "
                           f"({[s['name'] for s in model.inputs]})")
    shape = model.inputs[0]["shape"]
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise CommandError(f"{path}: input {model.inputs[0]['name']!r} has shape {shape}, not fixed dims")
    return tuple(shape[1:]), shape[0]


def predict_logits(model, tables, x):
    """The first output of `model` on the samples `x` (float32, (N, *sample)), run the file's batch at a time,
    as float32 logits: an integer input takes `x` as its codes (integers in its type's range), an integer
    output is dequantized, scale * (q - zero_point)."""
    import minicompress as mc
    spec = model.inputs[0]
    dtype = np.dtype(spec["dtype"])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not np.array_equal(x, np.round(x)) or x.min() < info.min or x.max() > info.max:
            raise CommandError(f"input {spec['name']!r} takes {dtype} codes: give integers in [{info.min}, "
                               f"{info.max}], got values in [{x.min():g}, {x.max():g}]")
    batch = spec["shape"][0]
    if len(x) % batch:
        raise CommandError(f"input {spec['name']!r} takes batches of {batch} samples; got {len(x)}")
    outputs = []
    with mc.no_grad():
        for start in range(0, len(x), batch):
            y = model(x[start:start + batch].astype(dtype))
            outputs.append((y[0] if isinstance(y, tuple) else y).numpy())
    y = np.concatenate(outputs)
    if y.dtype.kind in "iu":
        sub = tables["subgraphs"][0]
        q = sub["tensors"][sub["outputs"][0]]["quantization"]
        if q is None or q["scale"].size != 1:
            raise CommandError(f"the model's first output is {y.dtype} without one scale and zero point to read it by")
        y = (np.float64(q["scale"][0]) * (y.astype(np.int64) - int(q["zero_point"][0]))).astype(np.float32)
    return y
