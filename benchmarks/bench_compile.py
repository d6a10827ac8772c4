"""What compiling a graph buys beyond the kernels: the per-node overhead of a compiled plan against the
interpreter, the page faults of one call, and the time `minicompress.compile` takes.

    python benchmarks/bench_compile.py [--repeat 50] [--nodes 300]

- per-node overhead: a graph of `--nodes` tiny nodes on a 1-element float32 tensor, alternating Add (a
  constant) and Relu, in two wirings: a chain (each value read once: the plan merges it into one
  elementwise step) and a ladder (Sub of the value two nodes back instead of the constant, so that the
  Adds' outputs have two readers and the plan has a step per two nodes). Overhead per node = (time of one call - time of the same
  ufunc calls, with out=, in a plain loop over prepared arguments) / nodes.
- page faults: minor page faults per call (resource.getrusage) of the compiled plan and of the
  interpreter, on the 224x224 mobile classifier at batch 1 and 8 and the PP-OCRv4 detector at 1x3x480x480
  (when rapidocr-onnxruntime is installed), each after warm-up calls; 1 thread.
- compile time of each of those models (of which the one interpreted run of shape propagation).
"""
from timing import print_table  # first: it sets the thread environment

import argparse
import io
import os
import resource
import statistics
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

import minicompress as mc
import minicompress.onnx as mco
from bench_runtime import MODELS, cpu_name, mobile_classifier, rapidocr_model, text_page
from minicompress.kernels.threads import thread_count


def tiny_graph(n_nodes, ladder):
    """x -> (Add c -> Relu) repeated, n_nodes nodes on shape [1]; a ladder subtracts the value two back."""
    nodes, inits = [], [helper.make_tensor("c", TensorProto.FLOAT, [1], [0.25])]
    values = ["x", "x"]
    for k in range(n_nodes):
        out = f"t{k}"
        if k % 2 == 0:
            nodes.append(helper.make_node("Sub", [values[-1], values[-2]], [out]) if ladder else
                         helper.make_node("Add", [values[-1], "c"], [out]))
        else:
            nodes.append(helper.make_node("Relu", [values[-1]], [out]))
        values.append(out)
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(values[-1], TensorProto.FLOAT, [1])], inits)
    buffer = io.BytesIO()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), buffer)
    return buffer.getvalue()


def median_call(fn, repeat, warmup=5):
    for _ in range(warmup):
        fn()
    spent = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent)


def per_node_overhead(n_nodes, repeat):
    rows = []
    x = np.array([0.5], np.float32)
    for ladder in (False, True):
        graph = mco.load(tiny_graph(n_nodes, ladder))
        compiled = mc.compile(graph, (x,))
        plan = next(iter(compiled.plans.values()))
        c, zero = np.float32(0.25), np.float32(0)
        bufs = [np.empty(1, np.float32) for _ in range(n_nodes)]
        binary = np.subtract if ladder else np.add
        calls = [(binary, x, c, bufs[k]) if k % 2 == 0 else (np.maximum, x, zero, bufs[k]) for k in range(n_nodes)]

        def kernels():
            for f, a, b, o in calls:
                f(a, b, out=o)

        def interpreted():
            with mc.no_grad():
                graph.run(x)
        t_kernels = median_call(kernels, repeat)
        t_plan = median_call(lambda: plan(x), repeat)
        t_session = median_call(lambda: compiled.run(x), repeat)
        t_interp = median_call(interpreted, repeat)
        rows.append(["ladder" if ladder else "chain", n_nodes, len(plan.steps), f"{t_kernels * 1e3:.3f}",
                     f"{t_plan * 1e3:.3f}", f"{(t_plan - t_kernels) / n_nodes * 1e6:.2f}",
                     f"{(t_session - t_kernels) / n_nodes * 1e6:.2f}", f"{t_interp * 1e3:.3f}",
                     f"{(t_interp - t_kernels) / n_nodes * 1e6:.2f}"])
    print_table(rows, ["wiring", "nodes", "plan steps", "ufunc loop ms", "plan ms", "plan overhead us/node",
                       "plan + input checks us/node", "interpreted ms", "interpreted overhead us/node"])


def faults_per_call(fn, calls):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def page_faults_and_compile_time(repeat):
    cases = [("mobile classifier", mobile_classifier(1000, 3, 224), (1, 3, 224, 224)),
             ("mobile classifier", None, (8, 3, 224, 224))]
    try:
        cases.append(("PP-OCRv4 det", rapidocr_model("ch_PP-OCRv4_det_infer.onnx"), (1, 3, 480, 480)))
    except SystemExit as exc:
        print(exc)
    rows, data = [], None
    for title, model_bytes, shape in cases:
        data = model_bytes or data
        graph = mco.load(data).eval()
        x = (text_page if "det" in title else MODELS["mobile"][3])(shape)
        with thread_count(1):
            start = time.perf_counter()
            compiled = mc.compile(graph, (x,))
            seconds = time.perf_counter() - start
            plan = next(iter(compiled.plans.values()))

            def interpreted():
                with mc.no_grad():
                    graph.run(x)
            for _ in range(3):
                plan(x)
                interpreted()
            ours = faults_per_call(lambda: plan(x), repeat)
            theirs = faults_per_call(interpreted, repeat)
        rows.append([title, "x".join(map(str, shape)), len(graph.nodes), len(plan.steps),
                     f"{seconds * 1e3:.0f}", f"{plan.propagate_seconds * 1e3:.0f}",
                     f"{plan.memory.total_bytes / 2**20:.1f}", f"{ours:.1f}", f"{theirs:.1f}"])
    print_table(rows, ["model", "input", "nodes", "plan steps", "compile ms", "of which propagate ms",
                       "arena MiB", "compiled faults/call", "interpreted faults/call"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=300)
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; load average {os.getloadavg()[0]:.1f}")
    with thread_count(1):
        per_node_overhead(args.nodes, args.repeat)
    page_faults_and_compile_time(max(5, args.repeat // 5))


if __name__ == "__main__":
    main()
