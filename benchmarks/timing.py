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
