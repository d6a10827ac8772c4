"""Forward latency of minicompress ops against torch (same inputs, same thread count, one run).

    python benchmarks/bench_ops.py

Prints a Markdown table with the ratio minicompress / torch (below 1 means minicompress is faster).
"""
from timing import THREADS, median_seconds, print_table, set_threads  # first: it sets thread environment

import numpy as np
import torch
import torch.nn.functional as TF

import minicompress as mc
import minicompress.functional as F


def cases():
    rng = np.random.default_rng(0)

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x, w = arr(1, 64, 56, 56), arr(64, 64, 3, 3)
    yield "conv2d 3x3 1x64x56x56 -> 64", (lambda a, b: F.conv2d(a, b, padding=1)), \
        (lambda a, b: TF.conv2d(a, b, padding=1)), [x, w]
    x, w = arr(1, 128, 56, 56), arr(128, 1, 3, 3)
    yield "depthwise 3x3 1x128x56x56", (lambda a, b: F.conv2d(a, b, padding=1, groups=128)), \
        (lambda a, b: TF.conv2d(a, b, padding=1, groups=128)), [x, w]
    x, w, b = arr(64, 512), arr(512, 512), arr(512)
    yield "linear 64x512 -> 512", F.linear, TF.linear, [x, w, b]
    for shape in ((32, 32, 24, 24), (8, 64, 56, 56)):    # a detector batch; a larger feature map
        x, w, b = arr(*shape), arr(shape[1]), arr(shape[1])
        yield f"batch_norm training {'x'.join(map(str, shape))}", \
            (lambda a, g, h: F.batch_norm(a, None, None, g, h, training=True)), \
            (lambda a, g, h: TF.batch_norm(a, None, None, g, h, training=True)), [x, w, b]
    q, k, v = arr(1, 8, 1024, 64), arr(1, 8, 1024, 64), arr(1, 8, 1024, 64)
    yield "attention B=1 H=8 N=1024 d=64", F.scaled_dot_product_attention, TF.scaled_dot_product_attention, [q, k, v]
    for n in (1024, 4096, 16384):
        q, k, v = arr(1, 8, n, 64), arr(1, 8, n, 64), arr(1, 8, n, 64)

        def torch_linear_attention(q, k, v):
            pq, pk = TF.elu(q) + 1, TF.elu(k) + 1
            kv = pk.transpose(-1, -2) @ v
            return (pq @ kv) / (pq @ pk.sum(-2, keepdim=True).transpose(-1, -2))
        yield f"linear attention N={n}", F.linear_attention, torch_linear_attention, [q, k, v]


def main():
    set_threads()
    rows = []
    with torch.no_grad(), mc.no_grad():
        for name, mine, theirs, arrays in cases():
            mine_in = [mc.tensor(a) for a in arrays]
            theirs_in = [torch.from_numpy(a) for a in arrays]
            t_mc = median_seconds(lambda: mine(*mine_in), repeat=10)
            t_th = median_seconds(lambda: theirs(*theirs_in), repeat=10)
            rows.append([name, f"{t_mc * 1e3:.3f}", f"{t_th * 1e3:.3f}", f"{t_mc / t_th:.2f}x"])
    print(f"forward latency, {THREADS} threads, median of 10 runs")
    print_table(rows, ["op", "minicompress ms", "torch ms", "ratio"])


if __name__ == "__main__":
    main()
