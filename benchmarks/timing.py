"""Shared timing helpers for the benchmark scripts: median wall time of repeated calls, and a
table printer. Both frameworks get the same thread count."""
import os
import statistics
import time

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
# Idle OpenMP threads (torch's) spin by default and steal the two cores from BLAS and Numba threads
# between calls, which made torch's and our timings swing by 10x; passive waiting removes that.
# It must be set before torch is imported: import this module first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(THREADS))


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
