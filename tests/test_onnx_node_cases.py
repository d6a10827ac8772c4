"""onnx's node test cases, regenerated for every listed operator (benchmarks/onnx_node_cases.py), against
onnxruntime, or against the case's recorded outputs where onnxruntime cannot run it: each case agrees or
is refused with a NotImplementedError naming what is missing (a dtype, an attribute, a rank), never a wrong
answer. Against onnxruntime (float32 on both sides) the tolerance is rtol 1e-5, atol 1e-6: summation
order differs between the two. Against a recorded output (onnx's NumPy formula, often in float64) it is the
case's own (rtol 1e-3, atol 1e-7 by default), with atol at least 1e-6."""
import os
import sys

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from onnx_node_cases import collect, run_case  # noqa: E402

CASES = collect()


def test_every_listed_operator_has_cases():
    ops = {n.op_type for case in CASES for n in case.model.graph.node}
    assert len(CASES) > 600 and len(ops) >= 70


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case_agrees_or_is_refused(case):
    status, anchor = run_case(case)
    assert status == "agree" or status.startswith("refused: NotImplementedError") \
        or status.startswith("refused: UnsupportedOperatorError"), f"{case.name}: {status} (against {anchor})"
