"""Shared timing helpers for the benchmark scripts: median wall time of repeated calls, and a
table printer. Both frameworks get the same thread count."""
import os
import statistics
import time
from collections import defaultdict

import numpy as np

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
# Idle OpenMP threads (torch's) spin by default and steal the two cores from BLAS and Numba threads
# between calls, which made torch's and our timings swing by 10x; passive waiting removes that.
# It must be set before torch is imported: import this module first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(THREADS))


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the system: large
    blocks (above a few MB, every 224x224 activation) are otherwise mapped fresh at each allocation and
    unmapped at free, so every forward pass pays the page faults of zero-filling them again (measured
    ~5.6 ms of a 15 ms mobile-classifier forward). onnxruntime keeps its own arena; this is the nearest
    process-wide setting. Returns False where glibc's mallopt is not available. It changes the allocator
    of the whole process, so scripts opt in (bench_onnx.py --keep-freed-memory)."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 31 - 1))


def set_threads(threads=THREADS):
    import numba
    import torch
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)


def median_seconds(fn, repeat=20, warmup=3, min_time=0.0):
    """Median wall time of `fn()` over `repeat` calls, after `warmup` calls (JIT compilation)."""
    for _ in range(warmup):
        fn()
    times = []
    start_all = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start_all < min_time:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = " | ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print("| " + line + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")


def node_profile(model, x, repeat):
    """ms per node kind (op_type, or the submodule's class), summed over one call, median over `repeat`;
    a fused conv chain counts as its conv (depthwise, 1x1 or kh x kw). `model` is a GraphModule."""
    import minicompress.graph.module as graph_module
    from minicompress import nn
    per_call = []
    original = model._run_node

    def timed(node, args):
        start = time.perf_counter()
        out = original(node, args)
        layer = None if node["kind"] == "op" else model.get_submodule(node["target"])
        kind = node["op_type"] if layer is None else type(layer).__name__
        if isinstance(layer, nn.Conv2d):
            kind += " " + conv_kind(layer)
        totals[kind] += time.perf_counter() - start
        return out
    fused_original = graph_module.fused_conv_clip_forward

    def timed_fused(conv, bn, clip, x):
        start = time.perf_counter()
        out = fused_original(conv, bn, clip, x)
        totals[f"Conv2d {conv_kind(conv)} (fused chain)"] += time.perf_counter() - start
        return out
    model._run_node = timed
    graph_module.fused_conv_clip_forward = timed_fused
    try:
        for _ in range(repeat):
            totals = defaultdict(float)
            start = time.perf_counter()
            model(x)
            totals["(whole call)"] = time.perf_counter() - start
            per_call.append(totals)
    finally:
        del model._run_node
        graph_module.fused_conv_clip_forward = fused_original
    kinds = sorted({k for t in per_call for k in t}, key=lambda k: -per_call[0].get(k, 0))
    return {k: float(np.median([t.get(k, 0.0) for t in per_call])) * 1e3 for k in kinds}


def conv_kind(conv):
    if conv.groups > 1 and conv.groups == conv.in_channels:
        return "depthwise"
    if conv.groups > 1:
        return f"grouped {conv.kernel_size[0]}x{conv.kernel_size[1]}"
    return "1x1" if conv.kernel_size == (1, 1) else f"{conv.kernel_size[0]}x{conv.kernel_size[1]}"
