"""Node-by-node comparison of minicompress and onnxruntime on one ONNX model (`minicompress check`).

onnxruntime is asked for every intermediate value by adding each node output to the graph's outputs;
minicompress keeps every value of its interpreter loop. The two are compared in node order:

    max_abs = max |mc - ort|,   max_rel = max_abs / max |ort|  (relative to the tensor's scale)
    a value diverges when max_abs > atol + rtol * max |ort|

The first node whose output diverges is where to look: every later disagreement may only inherit it.

Integer nodes get a diagnosis. On x86 CPUs with AVX2 but no VNNI, onnxruntime's uint8 x int8 kernels
(MatMulInteger, QLinearMatMul, QGemm, QLinearConv, DynamicQuantizeMatMul, DynamicQuantizeLSTM) add byte
pairs into a saturating int16 (`kernels.saturating`), so they can be many output steps from the exact
result minicompress computes. When such a node diverges, the model is run again in that arithmetic
(`load(..., arithmetic="u8s8-saturating")`) and the report says how many steps each arithmetic is from
onnxruntime; where the saturating one reproduces it, it says so, with the remedies: 7-bit weights
(`quantize --reduce-range`, onnxruntime's reduce_range) or uint8 weights (U8U8), which never saturate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ValueDiff:
    node: str
    op_type: str
    value: str
    max_abs: float
    max_rel: float
    diverged: bool
    note: str = ""


def example_inputs(model, seed=0):
    """One array per graph input: N(0, 1) floats, zeros for integers, True for booleans; dynamic dims are 1."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in model.inputs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in (spec.get("shape") or [])]
        dtype = np.dtype(spec.get("dtype") or "float32")
        if dtype.kind == "f":
            arrays.append(rng.standard_normal(shape).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(np.ones(shape, dtype))
        else:
            arrays.append(np.zeros(shape, dtype))
    return arrays


SATURATING = "u8s8-saturating"


def _values(model, inputs):
    """Every value of one run of `model` on `inputs`."""
    from ..autograd import no_grad
    with no_grad():
        _, values = model.run(*inputs, keep="all")
    return values


def _uses_arithmetic(proto, node):
    """Whether the operator class that runs `node` sums integer products in a chosen arithmetic."""
    from ..graph.registry import UnsupportedOperatorError, normalise_domain, resolve
    opsets = {normalise_domain(o.domain): o.version for o in proto.opset_import}
    domain = normalise_domain(node.domain)
    try:
        return resolve(domain, node.op_type, opsets.get(domain, 1)).uses_arithmetic
    except UnsupportedOperatorError:
        return False


def _steps(got, expected):
    """(max |got - expected|, fraction equal) of two integer arrays of one shape, in output steps."""
    diff = np.abs(got.astype(np.int64) - expected.astype(np.int64))
    return int(diff.max(initial=0)), float(np.mean(diff == 0)) if diff.size else 1.0


def _diagnose(diffs, proto, reference, values, saturating_values):
    """Say, for each diverging integer node whose sums depend on the arithmetic, how far the exact and the
    saturating arithmetic are from onnxruntime, and which one it computes."""
    nodes = {(node.name or f"{node.op_type}_{index}"): node for index, node in enumerate(proto.graph.node)}
    for d in diffs:
        node = nodes.get(d.node)
        expected = np.asarray(reference.get(d.value))
        if not d.diverged or node is None or expected.dtype.kind not in "iu" or d.value not in saturating_values \
                or not _uses_arithmetic(proto, node):
            continue
        exact_steps, _ = _steps(values[d.value].data, expected)
        steps, equal = _steps(saturating_values[d.value].data, expected)
        if steps == 0 or (steps <= 1 and equal >= 0.999):
            d.note = (f"exact arithmetic {exact_steps} steps from onnxruntime; its saturating uint8 x int8 "
                      f"arithmetic (int16 pair sums, AVX2 without VNNI) {steps} ({equal:.2%} equal): onnxruntime "
                      f"saturates on this CPU (check --arithmetic {SATURATING} reproduces it); remedy: 7-bit "
                      f"weights (quantize --reduce-range) or uint8 weights (U8U8)")
        else:
            d.note = (f"exact arithmetic {exact_steps} steps from onnxruntime, the saturating one {steps}: "
                      f"neither explains it")


def compare(source, inputs=None, rtol=1e-4, atol=1e-5, seed=0, arithmetic="exact"):
    """[ValueDiff] for every node output, in node order, between minicompress (in `arithmetic`, as
    `onnx.load`) and onnxruntime; diverging integer nodes carry a diagnosis (module docstring)."""
    import onnx
    import onnxruntime as ort

    from .importer import load, read_model
    from .session import InferenceSession
    proto = read_model(source)
    session = InferenceSession(proto)
    model = session.graph_module
    if inputs is None:
        inputs = example_inputs(model, seed)
    else:                       # checked as session.run checks a feed: names, dtypes, ranks, fixed dims
        names = [spec["name"] for spec in model.inputs]
        if len(inputs) != len(names):
            raise ValueError(f"the model takes {len(names)} input(s) {names}, got {len(inputs)}")
        inputs = session._feeds(dict(zip(names, inputs)))
    values = _values(model if arithmetic == "exact" else load(proto, arithmetic), inputs)

    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    present = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if name and name not in present:
                exposed.graph.output.append(onnx.ValueInfoProto(name=name))
                present.add(name)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = {spec["name"]: x for spec, x in zip(model.inputs, inputs)}
    reference = dict(zip(names, session.run(names, feeds)))

    diffs, nodes_by_name = [], {}
    for index, node in enumerate(proto.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        nodes_by_name[name] = node
        for value in node.output:
            if not value or value not in reference:
                continue
            expected = np.asarray(reference[value])
            if value not in values:        # folded at import (a Constant) or an optional output not computed
                continue
            got = values[value].data
            if got.shape != expected.shape:
                diffs.append(ValueDiff(name, node.op_type, value, np.inf, np.inf, True,
                                       f"shape {got.shape} != onnxruntime {expected.shape}"))
                continue
            if expected.size == 0:
                diffs.append(ValueDiff(name, node.op_type, value, 0.0, 0.0, False))
                continue
            a, b = got.astype(np.float64), expected.astype(np.float64)
            both_nan = np.isnan(a) & np.isnan(b)
            err = np.where(both_nan, 0.0, np.abs(a - b))
            err = np.where(np.isnan(err), np.inf, err)
            scale = float(np.nanmax(np.abs(b))) if np.isfinite(b).any() else 0.0
            max_abs = float(err.max())
            diffs.append(ValueDiff(name, node.op_type, value, max_abs, max_abs / scale if scale else max_abs,
                                   max_abs > atol + rtol * scale))
    if arithmetic == "exact" and any(d.diverged and _uses_arithmetic(proto, nodes_by_name[d.node]) for d in diffs):
        from .importer import load
        saturating_values = _values(load(proto, SATURATING), inputs)
        _diagnose(diffs, proto, reference, values, saturating_values)
    return diffs


def format_report(diffs, rtol, atol):
    width = max([len(d.node) for d in diffs] + [4])
    lines = [f"{'node':<{width}}  {'op':<20} {'max abs':>11} {'max rel':>11}"]
    for d in diffs:
        flag = "  <-- diverges" if d.diverged else ""
        lines.append(f"{d.node:<{width}}  {d.op_type:<20} {d.max_abs:>11.3e} {d.max_rel:>11.3e}{flag}"
                     + (f"  ({d.note})" if d.note else ""))
    first = next((d for d in diffs if d.diverged), None)
    if first is None:
        lines.append(f"all {len(diffs)} node outputs agree with onnxruntime (rtol={rtol:g}, atol={atol:g})")
    else:
        lines.append(f"first divergence: node {first.node!r} ({first.op_type}), output {first.value!r}: "
                     f"max abs error {first.max_abs:.3e}, max rel error {first.max_rel:.3e}")
    return "\n".join(lines), first


def check_command(args):
    """`minicompress check MODEL.onnx [--input x.npy ...] [--rtol R] [--atol A] [--arithmetic A]`: exit 0
    when every node agrees, 1 at the first divergence."""
    import os
    inputs = None
    if args.input:
        for path in args.input:
            if not os.path.isfile(path):
                raise ValueError(f"--input {path!r}: no such file")
        inputs = [np.load(path, allow_pickle=False) for path in args.input]
    diffs = compare(args.model, inputs, args.rtol, args.atol, arithmetic=getattr(args, "arithmetic", "exact"))
    text, first = format_report(diffs, args.rtol, args.atol)
    print(text)
    return 0 if first is None else 1
