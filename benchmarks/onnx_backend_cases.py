"""Run onnx's shipped backend test models (pytorch-converted, pytorch-operator, simple) through
minicompress.onnx and compare with the recorded outputs (rtol 1e-4, atol 1e-5 of each output's scale).

    python benchmarks/onnx_backend_cases.py [--verbose]

Prints the counts per folder: agree / unsupported (an UnsupportedOperatorError: never a wrong answer) /
disagree / error, and the unsupported operators.
"""
import collections
import glob
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

import minicompress as mc
import minicompress.onnx as mco
from minicompress.graph import UnsupportedOperatorError

ROOT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def read(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def run_case(folder):
    model = onnx.load(os.path.join(folder, "model.onnx"))
    graph = mco.load(model)
    results = []
    for data_set in sorted(glob.glob(os.path.join(folder, "test_data_set_*"))):
        inputs = [read(p) for p in sorted(glob.glob(os.path.join(data_set, "input_*.pb")),
                                          key=lambda p: int(p.rsplit("_", 1)[1][:-3]))]
        outputs = [read(p) for p in sorted(glob.glob(os.path.join(data_set, "output_*.pb")),
                                           key=lambda p: int(p.rsplit("_", 1)[1][:-3]))]
        with mc.no_grad():
            got = graph(*inputs)
        got = got if isinstance(got, tuple) else (got,)
        for g, e in zip(got, outputs):
            finite = np.abs(e[np.isfinite(e)]) if e.dtype.kind == "f" else np.abs(e)
            scale = float(finite.max()) if finite.size else 1.0
            ok = g.shape == e.shape and np.allclose(g.data, e, rtol=1e-4, atol=1e-5 * max(scale, 1.0),
                                                    equal_nan=True)
            results.append(ok)
    return all(results)


def main(verbose="--verbose" in sys.argv):
    for kind in ("pytorch-converted", "pytorch-operator", "simple"):
        counts, missing = collections.Counter(), collections.Counter()
        for folder in sorted(glob.glob(os.path.join(ROOT, kind, "*"))):
            name = os.path.basename(folder)
            try:
                status = "agree" if run_case(folder) else "disagree"
            except UnsupportedOperatorError as exc:
                status = "unsupported"
                missing[str(exc).split("'")[1]] += 1
            except Exception as exc:  # noqa: BLE001  (a survey: every failure is counted and shown)
                status = "error"
                if verbose:
                    print(f"  {name}: {type(exc).__name__}: {str(exc)[:200]}")
            if verbose and status == "disagree":
                print(f"  {name}: disagree")
            counts[status] += 1
        print(f"{kind}: {sum(counts.values())} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
              + (f"; unsupported ops {dict(missing)}" if missing else ""))


if __name__ == "__main__":
    main()
