"""Latency and size of pruned weights stored as CSR against the same weights used dense.

    python benchmarks/bench_prune_sparse.py

Two layers, weights pruned by L1Unstructured at each sparsity, same inputs for every contender:
    Linear 1024 -> 1024, batch 64:   sparse.linear  vs  x @ W.T (NumPy/BLAS)  vs  torch F.linear
    Conv2d 64 -> 64, 3x3, pad 1, 1x64x56x56:
                                     sparse.conv2d (im2col + CSR kernel)  vs  im2col + W @ cols (BLAS)
                                     vs  torch F.conv2d
The contenders are timed interleaved (one call of each per round, median over the rounds), so a
change in machine load affects all of them alike. Ratios are sparse / dense (below 1 means the sparse
layer is faster). The break-even sparsity, above which sparse stays faster, is interpolated
linearly between the two measured sparsities where the ratio last crosses 1.

On a shared, loaded machine the median absorbs time the process spent descheduled;
BENCH_ESTIMATOR=min reports the fastest round instead (the uncontended cost, as timeit advises).
"""
import os
import statistics
import time

from timing import THREADS, print_table, set_threads  # first: it sets thread environment

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as TF  # noqa: E402

from minicompress.kernels.conv import im2col  # noqa: E402
from minicompress.prune import sparse  # noqa: E402
from minicompress.prune.methods import L1Unstructured  # noqa: E402

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
ESTIMATOR = os.environ.get("BENCH_ESTIMATOR", "median")


def prune(w, sparsity):
    return w * L1Unstructured(sparsity).compute_mask(w, np.ones_like(w))


def linear_case(rng):
    x = rng.standard_normal((64, 1024)).astype(np.float32)
    w = rng.standard_normal((1024, 1024)).astype(np.float32)
    for s in SPARSITIES:
        pruned = prune(w, s)
        csr = sparse.CSRMatrix.from_dense(pruned)
        x_t, w_t = torch.from_numpy(x), torch.from_numpy(pruned)
        yield s, pruned, csr, {
            "sparse": lambda: sparse.linear(x, csr),
            "numpy": lambda: x @ pruned.T,
            "torch": lambda: TF.linear(x_t, w_t),
        }


def conv_case(rng):
    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    for s in SPARSITIES:
        pruned = prune(w, s)
        csr = sparse.CSRMatrix.from_dense(pruned)
        matrix = pruned.reshape(64, -1)
        x_t, w_t = torch.from_numpy(x), torch.from_numpy(pruned)
        yield s, pruned, csr, {
            "sparse": lambda: sparse.conv2d(x, csr, padding=1),
            "numpy": lambda: (matrix @ im2col(x, (3, 3), (1, 1), (1, 1), (1, 1))).reshape(1, 64, 56, 56),
            "torch": lambda: TF.conv2d(x_t, w_t, padding=1),
        }


def interleaved_ms(fns, rounds, warmup=3):
    """Milliseconds per call (median or min over rounds) of every function in `fns`, each called once per
    round in turn."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    estimate = min if ESTIMATOR == "min" else statistics.median
    return {k: estimate(v) * 1e3 for k, v in times.items()}


def break_even(sparsities, ratios):
    """Sparsity above which sparse / dense stays below 1, interpolated between the two measured
    sparsities around the last crossing."""
    if ratios[-1] > 1:
        return f"> {sparsities[-1]} (sparse never faster)"
    for i in range(len(ratios) - 1, 0, -1):
        (s0, r0), (s1, r1) = (sparsities[i - 1], ratios[i - 1]), (sparsities[i], ratios[i])
        if r0 > 1:
            return f"{s0 + (r0 - 1) / (r0 - r1) * (s1 - s0):.3f}"
    return f"<= {sparsities[0]}"


def run(name, cases, rounds):
    rows, ratios = [], {"numpy": [], "torch": []}
    for s, pruned, csr, fns in cases:
        np.testing.assert_allclose(fns["sparse"](), fns["numpy"](), rtol=1e-3, atol=1e-3)
        ms = interleaved_ms(fns, rounds)
        for k in ratios:
            ratios[k].append(ms["sparse"] / ms[k])
        rows.append([s, csr.nnz, f"{ms['sparse']:.3f}", f"{ms['numpy']:.3f}", f"{ms['torch']:.3f}",
                     f"{ratios['numpy'][-1]:.2f}x", f"{ratios['torch'][-1]:.2f}x",
                     pruned.nbytes, csr.nbytes, f"{csr.nbytes / pruned.nbytes:.3f}"])
    print(f"\n{name}")
    print_table(rows, ["sparsity", "nnz", "sparse ms", "numpy dense ms", "torch dense ms", "sparse/numpy",
                       "sparse/torch", "dense bytes", "CSR bytes", "CSR/dense bytes"])
    for k, label in (("numpy", "NumPy/BLAS dense"), ("torch", "torch dense")):
        print(f"break-even sparsity vs {label}: {break_even(SPARSITIES, ratios[k])}")


def main():
    set_threads()
    rng = np.random.default_rng(0)
    print(f"{THREADS} threads, {ESTIMATOR} of interleaved calls; float32 CSR costs 8 bytes per nonzero "
          "(value + int32 column), so it is smaller than dense above 50% sparsity")
    with torch.no_grad():
        run("Linear 1024 -> 1024, batch 64", linear_case(rng), rounds=100)
        run("Conv2d 64 -> 64, 3x3, padding 1, input 1x64x56x56", conv_case(rng), rounds=60)


if __name__ == "__main__":
    main()
