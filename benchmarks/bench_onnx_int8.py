"""The int8 mobile classifier out through ONNX (QDQ) and back, against onnxruntime, on one thread.

    PYTHONPATH=. python benchmarks/bench_onnx_int8.py [--size 8|32]

The digits-sized classifier (`nn.create_mobile_classifier`, 1 x SIZE x SIZE input), statically quantized
(x86 qconfig, BN folded), is exported with `minicompress.onnx.export`. Timed at batch 1 and 64, one
intra-op thread each:
    minicompress int8 model         the converted model itself
    minicompress load (as written)  `onnx.load` of the file: DequantizeLinear -> float op -> QuantizeLinear
    minicompress fold_qdq           the loaded graph folded back onto integer layers
    onnxruntime                     ORT_ENABLE_ALL (QLinearConv / QGemm / QLinearAdd after its QDQ fusion)
The ratio is minicompress / onnxruntime (below 1: minicompress is faster). Also prints how many output
elements agree with the int8 model exactly / within one output step.
"""
import argparse
import os

os.environ["BENCH_THREADS"] = "1"
from timing import median_seconds, print_table, set_threads  # noqa: E402  (first: it sets thread environment)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import minicompress as mc  # noqa: E402
import minicompress.onnx as mco  # noqa: E402
from minicompress import nn, quant  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=8)
    args = parser.parse_args()
    set_threads(1)
    mc.manual_seed(0)
    rng = np.random.default_rng(0)
    shape = (1, args.size, args.size)
    model = nn.create_mobile_classifier(10, 1).eval()
    fused = quant.fuse_mobile_classifier(model)
    fused.qconfig = quant.get_default_qconfig("x86")
    prepared = quant.prepare(fused)
    quant.static.calibrate(prepared, [mc.tensor(rng.random((16,) + shape, dtype=np.float32)) for _ in range(2)])
    int8 = quant.convert(prepared)
    data = mco.export(int8, mc.tensor(np.zeros((1,) + shape, np.float32))).SerializeToString()
    loaded = mco.load(data)
    folded = mco.fold_qdq(loaded)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    step = int8.classifier.scale
    rows = []
    for batch in (1, 64):
        x = rng.random((batch,) + shape, dtype=np.float32)
        theirs = median_seconds(lambda: session.run(None, {"input": x}), repeat=30)
        with mc.no_grad():
            reference = int8(mc.tensor(x)).numpy()
            for name, m in (("minicompress int8 model", int8), ("minicompress load (as written)", loaded),
                            ("minicompress fold_qdq", folded)):
                ours = median_seconds(lambda: m(mc.tensor(x)), repeat=30)
                steps = np.rint(np.abs(m(mc.tensor(x)).numpy() - reference) / step)
                rows.append([f"{name}, batch {batch}", f"{(steps == 0).mean():.4f} / {(steps <= 1).mean():.4f}",
                             f"{ours * 1e3:.3f}", f"{theirs * 1e3:.3f}", f"{ours / theirs:.2f}"])
        steps = np.rint(np.abs(session.run(None, {"input": x})[0] - reference) / step)
        rows.append([f"onnxruntime, batch {batch}", f"{(steps == 0).mean():.4f} / {(steps <= 1).mean():.4f}",
                     "", f"{theirs * 1e3:.3f}", "1.00"])
    print_table(rows, [f"int8 classifier {'x'.join(map(str, shape))}, 1 thread", "exact / within 1 step",
                       "minicompress ms", "onnxruntime ms", "ratio"])


if __name__ == "__main__":
    main()
