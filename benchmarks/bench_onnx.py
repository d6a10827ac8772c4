"""Import + run of the mobile classifier exported from torch, against onnxruntime, on one thread.

    python benchmarks/bench_onnx.py

Exports the torch twin of the mobile classifier (tests/torch_twins.py) with torch.onnx.export, then times
`minicompress.onnx.load` (import) and a forward pass at batch 1 and 64 for minicompress and onnxruntime
(one intra-op thread each), and onnx's ReferenceEvaluator at batch 1 as the pure-NumPy anchor. Prints a
Markdown table; the ratio is minicompress / onnxruntime (below 1: minicompress is faster).
"""
import os
import sys

os.environ["BENCH_THREADS"] = "1"
from timing import median_seconds, print_table, set_threads  # noqa: E402  (first: it sets thread environment)

import io  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from torch_twins import MobileClassifier  # noqa: E402

import minicompress as mc  # noqa: E402
import minicompress.onnx as mco  # noqa: E402


def main():
    set_threads(1)
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.onnx.export(MobileClassifier().eval(), (torch.zeros(1, 1, 8, 8),), buffer, opset_version=17, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    data = buffer.getvalue()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    model = mco.load(data)
    rows = []
    t_import = median_seconds(lambda: mco.load(data), repeat=10)
    t_session = median_seconds(lambda: ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]),
                               repeat=10)
    rows.append(["import (load / InferenceSession)", f"{t_import * 1e3:.2f}", f"{t_session * 1e3:.2f}",
                 f"{t_import / t_session:.2f}"])
    for batch in (1, 64):
        x = np.random.default_rng(batch).standard_normal((batch, 1, 8, 8)).astype(np.float32)
        with mc.no_grad():
            ours = median_seconds(lambda: model(x), repeat=30)
            diff = float(np.abs(model(x).numpy() - session.run(None, {"x": x})[0]).max())
        theirs = median_seconds(lambda: session.run(None, {"x": x}), repeat=30)
        rows.append([f"forward batch {batch} (max |diff| {diff:.1e})", f"{ours * 1e3:.3f}", f"{theirs * 1e3:.3f}",
                     f"{ours / theirs:.2f}"])
    x = np.zeros((1, 1, 8, 8), np.float32)
    reference = ReferenceEvaluator(data)
    t_ref = median_seconds(lambda: reference.run(None, {"x": x}), repeat=5, warmup=1)
    with mc.no_grad():
        ours = median_seconds(lambda: model(x), repeat=30)
    rows.append(["ReferenceEvaluator batch 1 (its ms / ours)", f"{ours * 1e3:.3f}", f"{t_ref * 1e3:.3f}",
                 f"{ours / t_ref:.2f}"])
    print_table(rows, ["mobile classifier, 1 thread", "minicompress ms", "other ms", "ratio"])


if __name__ == "__main__":
    main()
