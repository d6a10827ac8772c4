"""What the two detector fixes buy, measured in one process on the same input, alternating the variants
call by call: PP-OCRv4's detector (1 x 3 x 480 x 480 page) at 1 thread through InferenceSession, with
large samples unfolded whole or in bands of rows (kernels/conv.py BAND_COLS_ELEMENTS) and with only
Relu / Add in place or the elementwise chains too (graph/inference.py).

    python benchmarks/bench_runtime_ab.py [--repeat 10]
"""
from timing import print_table  # first: it sets the thread environment

import argparse
import statistics
import time

import minicompress.onnx as mco
from bench_runtime import MODELS
from minicompress.kernels import conv


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    title, make, shapes, inputs = MODELS["det"]
    options = mco.SessionOptions()
    options.intra_op_num_threads = 1
    session = mco.InferenceSession(make(), options)
    feed = {"x": inputs(shapes[0])}
    plan = session.graph_module.inference_plan()
    chains = dict(plan.inplace)
    relu_add = {i: p for i, p in chains.items() if session.graph_module.nodes[i]["op_type"] in ("Relu", "Add")}
    band = conv.BAND_COLS_ELEMENTS
    variants = {"whole cols, Relu/Add in place": (1 << 62, relu_add), "bands, Relu/Add in place": (band, relu_add),
                "whole cols, chains in place": (1 << 62, chains), "bands, chains in place": (band, chains)}
    times = {name: [] for name in variants}
    for call in range(args.repeat + 1):
        for name, (elements, in_place) in variants.items():
            conv.BAND_COLS_ELEMENTS, plan.inplace = elements, in_place
            start = time.perf_counter()
            session.run(None, feed)
            if call:                      # the first round warms up
                times[name].append(time.perf_counter() - start)
    conv.BAND_COLS_ELEMENTS, plan.inplace = band, chains
    base = statistics.median(times["whole cols, Relu/Add in place"])
    print_table([[name, f"{statistics.median(t) * 1e3:.1f}", f"{min(t) * 1e3:.1f}", f"{statistics.median(t) / base:.2f}"]
                 for name, t in times.items()], [f"{title} 480x480, 1 thread", "median ms", "min ms", "vs first"])


if __name__ == "__main__":
    main()
