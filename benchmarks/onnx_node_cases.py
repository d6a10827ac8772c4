"""Regenerate onnx's node test cases for the operators minicompress lists, run each through
minicompress.onnx, and compare with onnxruntime (or, where onnxruntime cannot run the case, with the output
the case recorded: onnx's own NumPy formula).

    python benchmarks/onnx_node_cases.py [--verbose]

onnx builds these cases in `onnx.backend.test.case.node`: each module's `export*` functions build a
one-node (or function-expanded) model and its expected outputs when the module is imported, so importing
only the modules of the listed operators regenerates their cases in seconds. A case is counted when every
node of its graph is a listed operator (the `_expanded` variants of functions included).

Prints, per operator, how many cases agree / are refused (a NotImplementedError naming what is not
implemented: a dtype such as bfloat16 or float8, a rank, an attribute; never a wrong answer) / disagree /
raise another error, and the totals.
"""
from __future__ import annotations

import collections
import importlib
import sys
import warnings

import numpy as np

import minicompress as mc

# the operators the ONNX issue lists (float), then the quantized ones
LISTED = (
    "Conv ConvTranspose Gemm MatMul BatchNormalization InstanceNormalization LayerNormalization Relu Clip "
    "LeakyRelu PRelu Sigmoid HardSigmoid HardSwish Tanh Erf Gelu Softmax LogSoftmax MaxPool AveragePool "
    "GlobalAveragePool GlobalMaxPool LRN Dropout Add Sub Mul Div Pow Sqrt Exp Log Neg Abs Sum Max Min "
    "ReduceMean ReduceSum ReduceMax Concat Split Slice Gather Reshape Flatten Transpose Squeeze Unsqueeze "
    "Shape Size Constant ConstantOfShape Identity Cast Pad Resize Upsample Where Equal Greater Less Not "
    "Expand Tile Range ArgMax TopK LSTM GRU "
    "QuantizeLinear DequantizeLinear QLinearConv QLinearMatMul ConvInteger MatMulInteger DynamicQuantizeLinear"
).split()

# onnx.backend.test.case.node module of each operator where it is not the lowercased name
_MODULES = {"BatchNormalization": "batch_normalization", "InstanceNormalization": "instance_normalization",
            "Not": "not_", "Range": "rangeop"}


def collect(ops=LISTED):
    """The node test cases (onnx's TestCase objects) whose graphs use only `ops`."""
    import onnx.backend.test.case.node as node_cases
    node_cases._TargetOpType = None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for op in ops:
            importlib.import_module("onnx.backend.test.case.node." + _MODULES.get(op, op.lower()))
    allowed = set(ops)
    seen, cases = set(), []
    for case in node_cases._NodeTestCases:
        if case.name in seen:
            continue
        if all(n.op_type in allowed and n.domain in ("", "ai.onnx") for n in case.model.graph.node):
            seen.add(case.name)
            cases.append(case)
    return cases


def main_op(case):
    """The operator a case is about: its single node, or the function an `_expanded` case unrolls."""
    types = [n.op_type for n in case.model.graph.node]
    for op in LISTED:
        if op.lower() in case.name.replace("_", "").lower().replace("test", "", 1)[:len(op) + 8] and op in types:
            return op
    return types[0] if len(types) == 1 else max(set(types), key=types.count)


def _onnxruntime_outputs(case, inputs):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 4
    session = ort.InferenceSession(case.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {i.name: x for i, x in zip(session.get_inputs(), inputs)}
    return session.run(None, feed)


def _close(got, expected, rtol, atol):
    got = np.asarray(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        return False
    if expected.dtype.kind in "fc" or got.dtype.kind in "fc":
        return bool(np.allclose(got.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol,
                                equal_nan=True))
    return bool(np.array_equal(got, expected))


def run_case(case):
    """'agree', 'disagree' or 'refused: <reason>' (a NotImplementedError) for one case, against onnxruntime
    where it runs the case, else against the recorded outputs. Returns (status, anchor); any other
    exception propagates (a bug, not a refusal)."""
    import minicompress.onnx as mco
    try:
        model = mco.load(case.model)
    except NotImplementedError as exc:
        return f"refused: {type(exc).__name__}: {str(exc)[:120]}", "-"
    from onnx import numpy_helper
    anchor = "onnxruntime"
    for inputs, recorded in case.data_sets:
        # cases of types NumPy lacks (bfloat16, float8, int4) hold TensorProtos
        inputs = [numpy_helper.to_array(x) if hasattr(x, "SerializeToString") else x for x in inputs]
        recorded = [numpy_helper.to_array(x) if hasattr(x, "SerializeToString") else x for x in recorded]
        try:
            expected = _onnxruntime_outputs(case, inputs)
        except Exception:  # noqa: BLE001  (onnxruntime lacks the opset or the type: use the recorded outputs)
            expected, anchor = recorded, "recorded"
        try:
            with mc.no_grad(), np.errstate(all="ignore"):
                got = model(*inputs)
        except NotImplementedError as exc:
            return f"refused: {type(exc).__name__}: {str(exc)[:120]}", anchor
        got = got if isinstance(got, tuple) else (got,)
        # against onnxruntime (float32 both sides): rtol 1e-5; against the recorded outputs, the case's own
        rtol, atol = (1e-5, 1e-6) if anchor == "onnxruntime" else (case.rtol, max(case.atol, 1e-6))
        if len(got) < len(expected) or not all(
                _close(g.numpy() if hasattr(g, "numpy") else g, e, rtol, atol) for g, e in zip(got, expected)):
            return "disagree", anchor
    return "agree", anchor


def main(verbose="--verbose" in sys.argv):
    cases = collect()
    by_op = collections.defaultdict(collections.Counter)
    anchors = collections.Counter()
    for case in cases:
        try:
            status, anchor = run_case(case)
        except Exception as exc:  # noqa: BLE001  (a survey: a crash is counted and shown, not hidden)
            status, anchor = f"error: {type(exc).__name__}: {str(exc)[:120]}", "-"
        kind = status.split(":")[0]
        by_op[main_op(case)][kind] += 1
        if kind == "agree":
            anchors[anchor] += 1
        if verbose and kind != "agree":
            print(f"  {case.name}: {status}")
    total = collections.Counter()
    print("| operator | cases | agree | refused | disagree | error |")
    print("|---|---|---|---|---|---|")
    for op in sorted(by_op):
        c = by_op[op]
        total.update(c)
        print(f"| {op} | {sum(c.values())} | {c['agree']} | {c['refused']} | {c['disagree']} | {c['error']} |")
    print(f"| all | {sum(total.values())} | {total['agree']} | {total['refused']} | {total['disagree']} "
          f"| {total['error']} |")
    print(f"agreeing cases checked against onnxruntime: {anchors['onnxruntime']}, "
          f"against the recorded outputs (onnxruntime could not run them): {anchors['recorded']}")


if __name__ == "__main__":
    main()
