"""The float conv kernels on a real mobile model: the PP-OCRv4 text detector (the det .onnx shipped in
the rapidocr-onnxruntime wheel), at one thread.

    python benchmarks/bench_conv_kernels.py [--repeat 20] [--size 320] [--keep-freed-memory]

1. Every distinct non-1x1 convolution the detector runs on a 1x3xSxS input (the shapes are read from one
   forward pass), timed as minicompress's `kernels.conv.conv2d_forward` (the path it dispatches to:
   direct, depthwise or im2col + BLAS) against torch.nn.functional.conv2d on the same arrays; the dense
   and grouped ones also through the im2col + BLAS path (`grouped_conv2d_forward`) the direct kernel replaced.
2. The whole detector: minicompress's GraphModule (under no_grad) against onnxruntime (one intra-op
   thread), and minicompress with the direct kernel switched off (every dense conv on im2col + BLAS);
   the three are called in turn, so that a change in the machine's load falls on each alike.

Ratios are minicompress / other: below 1 minicompress is faster. The thread policy (one thread for Numba,
BLAS, torch and onnxruntime; OMP_WAIT_POLICY=PASSIVE) is set by `timing.py` before torch is imported.
"""
import os
import sys

os.environ["BENCH_THREADS"] = "1"
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
from timing import keep_freed_memory, median_seconds, print_table, set_threads  # noqa: E402  (first: threads)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from unittest import mock  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import minicompress as mc  # noqa: E402
import minicompress.onnx as mco  # noqa: E402
from minicompress.kernels import conv as K  # noqa: E402

DETECTOR = "models/ch_PP-OCRv4_det_infer.onnx"


def detector_path():
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        sys.exit("the detector comes from the rapidocr-onnxruntime wheel: "
                 "pip install --no-deps rapidocr-onnxruntime==1.4.4")
    return pathlib.Path(spec.origin).parent / DETECTOR


def conv_calls(model, x):
    """Counter of (x shape, weight shape, stride, padding, dilation, groups) over one forward pass."""
    calls = Counter()
    original = K.conv2d_forward

    def spy(x, weight, stride, padding, dilation, groups, epilogue=None):
        calls[(x.shape, weight.shape, tuple(stride), tuple(padding), tuple(dilation), int(groups))] += 1
        return original(x, weight, stride, padding, dilation, groups, epilogue)

    with mock.patch.object(K, "conv2d_forward", spy), mc.no_grad():
        model(x)
    return calls


def path_of(x_shape, w_shape, stride, padding, groups):
    if K.is_pointwise(w_shape, stride, padding, groups):
        return "1x1 GEMM"
    if K.is_depthwise(x_shape[1], w_shape, groups):
        return "depthwise"
    return "direct" if K.uses_direct(w_shape, groups) else "im2col"


def bench_shapes(calls, repeat):
    rows = []
    rng = np.random.default_rng(0)
    for (x_shape, w_shape, stride, padding, dilation, groups), count in calls.items():
        if tuple(w_shape[2:]) == (1, 1):
            continue
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        args = (stride, padding, dilation, groups)
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        ours = median_seconds(lambda: K.conv2d_forward(x, w, *args), repeat=repeat)
        theirs = median_seconds(lambda: F.conv2d(xt, wt, None, *args), repeat=repeat)
        path = path_of(x_shape, w_shape, stride, padding, groups)
        im2col = ""
        if path == "direct":
            t = median_seconds(lambda: K.grouped_conv2d_forward(x, w, *args), repeat=repeat)
            im2col = f"{t * 1e3:.3f} ({t / theirs:.2f}x)"
        name = f"{'x'.join(map(str, x_shape))} * {'x'.join(map(str, w_shape))} s{stride[0]} g{groups}"
        rows.append([name, count, path, f"{ours * 1e3:.3f}", f"{theirs * 1e3:.3f}", f"{ours / theirs:.2f}", im2col])
    print_table(rows, ["conv (x * weight, stride, groups)", "calls", "path", "minicompress ms", "torch ms", "ratio",
                       "im2col path ms (ratio)"])
    print()


def interleaved_medians(fns, patches, repeat, warmup=3):
    """Median seconds of each fn (under its patch, if any), the calls taken in turn (fn 0, fn 1, ..., fn 0,
    ...) so that a change in the machine's load falls on all of them alike."""
    times = [[] for _ in fns]
    with mc.no_grad():
        for k in range(warmup + repeat):
            for fn, patch, record in zip(fns, patches, times):
                with patch if patch is not None else contextlib.nullcontext():
                    start = time.perf_counter()
                    fn()
                    if k >= warmup:
                        record.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def bench_model(path, size, repeat):
    model = mco.load(str(path)).eval()
    x = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    expected = session.run(None, {name: x})[0]
    with mc.no_grad():
        diff = float(np.abs(model(x).numpy() - expected).max())
    ours, im2col, theirs = interleaved_medians([lambda: model(x), lambda: model(x),
                                                lambda: session.run(None, {name: x})],
                                               [None, mock.patch.object(K, "uses_direct", lambda shape, groups: False),
                                                None], repeat)
    rows = [[f"PP-OCRv4 det 1x3x{size}x{size} (max |diff| {diff:.1e})", f"{ours * 1e3:.2f}", f"{theirs * 1e3:.2f}",
             f"{ours / theirs:.2f}"],
            ["  same, direct kernel off (dense convs on im2col)", f"{im2col * 1e3:.2f}", f"{theirs * 1e3:.2f}",
             f"{im2col / theirs:.2f}"]]
    print_table(rows, ["model, 1 thread", "minicompress ms", "onnxruntime ms", "ratio"])
    return model, x


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per measurement (median)")
    parser.add_argument("--size", type=int, default=320, help="input height and width")
    parser.add_argument("--keep-freed-memory", action="store_true", help="glibc keeps freed memory for reuse")
    args = parser.parse_args()
    if args.keep_freed_memory:
        print(f"glibc keeps freed memory: {keep_freed_memory()}")
    set_threads(1)
    path = detector_path()
    model = mco.load(str(path)).eval()
    x = np.zeros((1, 3, args.size, args.size), np.float32)
    bench_shapes(conv_calls(model, x), args.repeat)
    bench_model(path, args.size, args.repeat)


if __name__ == "__main__":
    main()
